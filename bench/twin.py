"""The gold standard for problem 1.6: the chosen EBM trained again from the same initialisation
with the exact gradient, A and E_p grad E by quadrature, in place of the importance-sampled
one; same optimiser, iteration budget and early stopping (the twin's validation score uses the
exact A too). The test log-likelihoods of the two, side by side.

    python bench/twin.py [--results plots/results.json] [--tex plots/twin.tex] [--json F]

It reads the configuration and the chosen (tau, H) from a pipeline run's results.json, and
first retrains the IS model itself, which must reproduce that run's number (a check that the
twin really starts where the pipeline's model started). About half a minute; `make pdf` runs it.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import VI  # noqa: E402  (first: it sets the BLAS threads before numpy loads)
import ebm  # noqa: E402
import gmm_em  # noqa: E402
import torch  # noqa: E402

TRAIN_STEP = 0.2  # quadrature step of the twin's training objective (checked below at the fine step)


def config_of(results):
    return VI.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})


def train(cfg, energy, objective, score):
    run = ebm.train(ebm.Run(energy), objective, score, cfg.ebm_rungs[-1], cfg.eval_every, cfg.ebm_memory,
                    patience=cfg.ebm_patience)
    return run, ebm.restore_best(run)


def verdict(diff, se):
    """What the exact-gradient twin's difference says, in words."""
    if abs(diff) < 2 * se:
        return "a difference within two standard errors, so no advantage of the exact gradient is detectable here"
    if diff > 0:
        return "a difference of more than two standard errors: the exact gradient fits better"
    return "a difference of more than two standard errors in favour of the importance-sampled gradient"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "plots" / "results.json"))
    p.add_argument("--tex", help="write LaTeX macros of the comparison here")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)
    VI.keep_freed_memory()
    results = json.loads(Path(args.results).read_text())
    cfg, chosen = config_of(results), results["ebm"]
    data = VI.make_data(cfg)
    means, weights = gmm_em.ring(cfg.K, cfg.R)
    T = lambda a: torch.as_tensor(a, dtype=torch.float32)
    sample = lambda x: ebm.Sample(T(x), T(gmm_em.log_prob(x, means, weights)))
    init = lambda: ebm.Energy(chosen["hidden"], chosen["tau"], VI.torch_generator(cfg.seed, f"ebm init H={chosen['hidden']}"))
    h = cfg.grid_half_width
    test_ll = lambda e: VI.energy_on(e, data["test"]) - ebm.log_partition_grid(e, h, cfg.grid_step)  # per point

    t = time.perf_counter()
    is_run, is_energy = train(cfg, init(), ebm.is_objective(T(data["train"]), sample(data["proposal"])),
                              ebm.is_score(T(data["val"]), sample(data["val_proposal"])))
    is_seconds = time.perf_counter() - t
    t = time.perf_counter()
    exact_run, exact_energy = train(cfg, init(), ebm.grid_objective(T(data["train"]), h, TRAIN_STEP),
                                    ebm.grid_score(T(data["val"]), h, TRAIN_STEP))
    exact_seconds = time.perf_counter() - t
    is_ll, exact_ll = test_ll(is_energy), test_ll(exact_energy)
    diff, diff_se = VI.mean_se(exact_ll - is_ll)
    out = dict(chosen=chosen["chosen"], train_step=TRAIN_STEP,
               is_reproduced=float(is_ll.mean() - chosen["test_ll_grid"]),
               is_test_ll=float(is_ll.mean()), is_iterations=is_run.iterations, is_best_iteration=is_run.best_iteration,
               exact_test_ll=float(exact_ll.mean()), exact_iterations=exact_run.iterations,
               exact_best_iteration=exact_run.best_iteration, exact_minus_is=diff, exact_minus_is_se=diff_se,
               exact_grid_check=ebm.log_partition_grid(exact_energy, h, TRAIN_STEP) - ebm.log_partition_grid(exact_energy, h, cfg.grid_step),
               is_seconds=is_seconds, exact_seconds=exact_seconds, oracle_test_ll=chosen["oracle_test_ll"])
    print(json.dumps(out, indent=1))
    if abs(out["is_reproduced"]) > 1e-6:
        print("twin.py: the IS model did not reproduce results.json's test LL; rerun python VI.py", file=sys.stderr)
        return 1
    if args.json:
        VI.atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=1) + "\n"))
    if args.tex:
        macros = {"twinTestLL": f"{out['exact_test_ll']:.3f}", "twinISTestLL": f"{out['is_test_ll']:.3f}",
                  "twinMinusIS": f"{diff:.3f}", "twinMinusISSE": f"{diff_se:.3f}",
                  "twinIters": str(exact_run.iterations), "twinBestIter": str(exact_run.best_iteration),
                  "twinSeconds": f"{exact_seconds:.0f}", "twinISSeconds": f"{is_seconds:.1f}",
                  "twinTrainStep": f"{TRAIN_STEP:g}", "twinGridCheck": f"{abs(out['exact_grid_check']):.0e}",
                  "twinOracleMinus": f"{out['oracle_test_ll'] - out['exact_test_ll']:.3f}",
                  "twinVerdict": verdict(diff, diff_se)}
        lines = ["% Generated by bench/twin.py; do not edit."] + [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in macros.items()]
        VI.atomic_write(args.tex, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
