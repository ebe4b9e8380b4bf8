"""This project's KDE tuning, EM and EBM against the tools people would use instead, on the same
data, with wall times (median of --repeats runs) and ratios measured in the same run.

    python -m pip install -r requirements-dev.txt
    python VI.py                                   # the EBM rows come from its plots/
    python bench/peers.py [--repeats 5] [--record bench/flow_record.json]   # measure (minutes)
    python bench/peers.py --from-record bench/flow_record.json   # the flow against this EBM

Peers: scikit-learn's KernelDensity + GridSearchCV over the same sigma grid on the same
train/validation split (sklearn's bandwidth is a standard deviation, the homework's sigma a
variance); scipy.stats.gaussian_kde with its default (Scott) rule; scikit-learn's GaussianMixture
(spherical covariances, since it cannot hold them at I); and what a practitioner would reach for
to estimate a density with exact likelihoods: a neural spline flow (zuko's NSF) trained by
maximum likelihood, its depth and width chosen on the validation split, then restarted from
FLOW_RESTARTS initialisations.

The flow takes minutes, so its result is a committed record (bench/flow_record.json): the
per-point test log-densities of every restart and a fingerprint of the data it was made on.
--from-record compares that record with the current run's EBM point by point, so the comparison
survives a change of machine. The README reports it; theory.pdf does not (it quotes only what the
handed-in VI.py computes).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ebm  # noqa: E402
import gmm_em  # noqa: E402
import kde  # noqa: E402
import VI  # noqa: E402
from theory import macros  # noqa: E402
from tools import outputs  # noqa: E402
from tools.processes import fork_map  # noqa: E402

FLOW_DEPTHS = (2, 4)  # spline transforms
FLOW_WIDTHS = (32, 64)  # hidden units in each of the two layers of every conditioner
FLOW_MAX_STEPS, FLOW_EVAL_EVERY, FLOW_PATIENCE, FLOW_RESTARTS = 4000, 50, 500, 5


def timed(fn, repeats):
    """(result of the last call, median wall time over repeats)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def fingerprint(data):
    """sha256 of the splits a record was made on: a later run must hold the same bytes."""
    return hashlib.sha256(
        b"".join(np.ascontiguousarray(data[k]).tobytes() for k in ("train", "val", "test"))
    ).hexdigest()


def kde_rows(cfg, data, repeats):
    from scipy.stats import gaussian_kde
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neighbors import KernelDensity

    grid = kde.sigma_grid(cfg.sigma_min, cfg.sigma_max, cfg.sigma_num)
    train, val, test = data["train"], data["val"], data["test"]
    (sigma, _, scores), t_ours = timed(lambda: kde.tune_sigma(train, val, grid), repeats)
    sigma_grid = grid[int(np.argmax(scores))]
    split = PredefinedSplit(np.r_[-np.ones(len(train)), np.zeros(len(val))])
    search = lambda: (
        GridSearchCV(KernelDensity(), {"bandwidth": np.sqrt(grid)}, cv=split, refit=False)
        .fit(np.concatenate([train, val]))
        .best_params_["bandwidth"]
        ** 2
    )
    sigma_sk, t_sk = timed(search, repeats)
    fit = KernelDensity(bandwidth=np.sqrt(sigma_sk)).fit(train)
    scipy_kde, t_scipy = timed(lambda: gaussian_kde(train.T), repeats)
    return [
        (
            "KDE, this project (grid + refinement)",
            kde.mean_log_likelihood(test, train, sigma),
            t_ours,
            f"sigma {sigma:.4f} (grid choice {sigma_grid:.4f})",
        ),
        (
            "KDE, sklearn GridSearchCV, same grid",
            float(fit.score_samples(test).mean()),
            t_sk,
            f"sigma {sigma_sk:.4f}; same grid choice: {np.isclose(sigma_sk, sigma_grid)}; "
            f"time sklearn / ours = {t_sk / t_ours:.1f}",
        ),
        (
            "KDE, scipy gaussian_kde (Scott)",
            float(np.log(scipy_kde(test.T)).mean()),
            t_scipy,
            f"sigma {kde.rule_of_thumb_sigma(train):.3f} (no tuning)",
        ),
    ]


def em_rows(cfg, data, repeats):
    from sklearn.mixture import GaussianMixture

    train, test = data["train"], data["test"]
    seed = int(np.random.SeedSequence(cfg.seed).generate_state(1)[0])  # for sklearn's inits
    starts = lambda: [
        VI.stream(cfg.seed, f"em restart {r}") for r in range(cfg.em_restarts)
    ]  # the driver's streams
    fit, t_ours = timed(
        lambda: gmm_em.fit_em(train, cfg.K, starts(), cfg.em_tol, cfg.em_max_maps), repeats
    )
    gm, t_sk = timed(
        lambda: GaussianMixture(
            cfg.K,
            covariance_type="spherical",
            n_init=cfg.em_restarts,
            tol=1e-6,
            max_iter=1000,
            random_state=seed,
        ).fit(train),
        repeats,
    )
    return [
        (
            "EM, this project (Sigma = I fixed, run to its maximum)",
            float(gmm_em.log_prob(test, fit.means, fit.weights).mean()),
            t_ours,
            f"{fit.n_iter} EM iterations",
        ),
        (
            "EM, sklearn GaussianMixture (spherical)",
            float(gm.score(test)),
            t_sk,
            f"variances {gm.covariances_.min():.2f}..{gm.covariances_.max():.2f}; "
            f"time sklearn / ours = {t_sk / t_ours:.1f}",
        ),
    ]


def train_flow(depth, width, train, val, seed):
    """A neural spline flow fitted by maximum likelihood (full-batch Adam) on standardised
    data; the step count is chosen by the validation log-likelihood, scored every
    FLOW_EVAL_EVERY steps, with early stopping after FLOW_PATIENCE steps without progress.
    Returns (log-density function on numpy points, best validation LL, best step, seconds)."""
    import zuko

    torch.manual_seed(seed)
    shift, scale = train.mean(0), train.std(0)  # from the training split only
    z = lambda x: torch.as_tensor((x - shift) / scale, dtype=torch.float32)
    log_jac = -np.log(scale).sum()  # log |d z / d x|
    flow = zuko.flows.NSF(features=2, transforms=depth, hidden_features=(width, width))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    x_train, x_val = z(train), z(val)
    best, best_step, best_state, start = -np.inf, 0, None, time.perf_counter()
    for step in range(FLOW_MAX_STEPS + 1):
        if step % FLOW_EVAL_EVERY == 0:
            with torch.no_grad():
                v = float(flow().log_prob(x_val).mean()) + log_jac
            if v > best:
                best, best_step, best_state = (
                    v,
                    step,
                    {k: t.clone() for k, t in flow.state_dict().items()},
                )
            elif step - best_step >= FLOW_PATIENCE:
                break
        opt.zero_grad()
        (-flow().log_prob(x_train).mean()).backward()
        opt.step()
    seconds = time.perf_counter() - start
    flow.load_state_dict(best_state)

    @torch.no_grad()
    def log_density(x):
        return flow().log_prob(z(x)).double().numpy() + log_jac

    return log_density, best, best_step, seconds


def flow_record(cfg, data, timings, workers):
    """Choose (depth, width) on validation, restart the choice FLOW_RESTARTS times (seeds r),
    and return the record: per-point test log-densities of each restart, steps, seconds, and the
    EBM's training time measured by the pipeline on the same machine."""
    configs = [(d, w) for d in FLOW_DEPTHS for w in FLOW_WIDTHS]
    search = fork_map(
        lambda c: train_flow(*c, data["train"], data["val"], cfg.seed)[1:], configs, workers
    )
    depth, width = configs[int(np.argmax([s[0] for s in search]))]
    fits = fork_map(
        lambda r: (lambda f: (f[0](data["test"]).tolist(), *f[1:]))(
            train_flow(depth, width, data["train"], data["val"], r)
        ),
        range(FLOW_RESTARTS),
        workers,
    )
    return dict(
        data_sha256=fingerprint(data),
        depth=depth,
        width=width,
        depths=FLOW_DEPTHS,
        widths=FLOW_WIDTHS,
        search_val_ll={f"{d}x{w}": s[0] for (d, w), s in zip(configs, search, strict=True)},
        search_seconds=sum(s[2] for s in search),
        per_point=[f[0] for f in fits],
        steps=[f[2] for f in fits],
        seconds=[f[3] for f in fits],
        ebm_seconds=timings["ebm_truth"],
        machine=f"{os.cpu_count()}-core {platform.machine()}",
        date=str(datetime.date.today()),
    )


def flow_macros(record, results, log_densities):
    """LaTeX macros of the flow's paragraph: the record's flow against the current run's EBM
    restarts, point by point. Every time quoted is the record's (flow and EBM timed together)."""
    flow = np.array(record["per_point"])
    lead = ebm.paired(log_densities["ebm"], flow)
    verdict = macros.verdict(
        lead, "the EBM beats the flow", "the flow beats the EBM", "neither beats the other"
    )
    per = flow.mean(1)
    return {
        "flowTestLL": f"{per.mean():.3f}",
        "flowTestLLSD": f"{per.std(ddof=1):.3f}",
        "flowRestarts": str(len(per)),
        "flowDepth": str(record["depth"]),
        "flowWidth": str(record["width"]),
        "flowDepths": ", ".join(map(str, record["depths"])),
        "flowWidths": ", ".join(map(str, record["widths"])),
        "flowSteps": f"{min(record['steps'])}--{max(record['steps'])}",
        "flowSeconds": f"{statistics.median(record['seconds']):.0f}",
        "flowSearchSeconds": f"{record['search_seconds']:.0f}",
        "flowEbmSeconds": f"{record['ebm_seconds']:.0f}",
        "flowVerdict": verdict,
        "flowLead": f"{lead['mean']:.3f}",
        "flowLeadSE": f"{lead['se']:.3f}",
        "flowLeadMin": f"{lead['minimum']:.3f}",
        "flowLeadMax": f"{lead['maximum']:.3f}",
    }


def print_table(cfg, data, rows):
    oracle = float(gmm_em.log_prob(data["test"], *gmm_em.ring(cfg.K, cfg.R)).mean())
    print(f"seed {cfg.seed}, n = {cfg.n} per split, K = {cfg.K}, R = {cfg.R:g}\n")
    print("| method | test LL (nats) | gap to truth | time (s) | notes |\n|---|---|---|---|---|")
    print(f"| true mixture (ceiling) | {oracle:.4f} | 0 | - | |")
    for name, ll, t, note in rows:
        print(f"| {name} | {ll:.4f} | {oracle - ll:.4f} | {t:.4f} | {note} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--plots", default=str(ROOT / "plots"), help="the pipeline run (seed 0) to compare with"
    )
    p.add_argument("--record", help="train the flow and write its record here")
    p.add_argument("--from-record", help="read the flow's record instead of training it")
    p.add_argument(
        "--tex", help="write the flow's LaTeX macros here (with --from-record or --record)"
    )
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    plots = Path(args.plots)
    if not (plots / "results.json").is_file():
        sys.exit(f"peers.py: no {plots / 'results.json'}; run python VI.py first")
    results = json.loads((plots / "results.json").read_text(encoding="utf-8"))
    cfg = VI.Config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()}
    )
    data = VI.make_data(cfg)
    if args.from_record:
        record = json.loads(Path(args.from_record).read_text(encoding="utf-8"))
        if record["data_sha256"] != fingerprint(data):
            sys.exit(
                f"peers.py: {args.from_record} was made on other data than {plots}; "
                "rerun: python bench/peers.py --record ..."
            )
    else:
        rows = kde_rows(cfg, data, args.repeats) + em_rows(cfg, data, args.repeats)
        record = flow_record(
            cfg,
            data,
            json.loads((plots / "timings.json").read_text(encoding="utf-8")),
            args.workers,
        )
        if args.record:
            outputs.write_text(args.record, json.dumps(record) + "\n")
        ebm_ll = np.load(plots / "log_densities.npz")["ebm"].mean(1)
        rows += [
            (
                f"neural spline flow (zuko NSF {record['depth']}x{record['width']}), "
                f"{FLOW_RESTARTS} restarts, mean",
                float(np.mean(record["per_point"])),
                statistics.median(record["seconds"]),
                f"search {record['search_seconds']:.0f} s",
            ),
            (
                f"EBM, this project, {len(ebm_ll)} restarts, mean (A by quadrature)",
                float(ebm_ll.mean()),
                record["ebm_seconds"],
                "time: selection and restarts of the homework route",
            ),
        ]
        print_table(cfg, data, rows)
    if args.tex:
        outputs.write_text(
            args.tex,
            macros.macro_file(
                flow_macros(record, results, np.load(plots / "log_densities.npz")), "bench/peers.py"
            ),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
