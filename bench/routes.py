"""The EBM of problems 1.6-1.7 trained by every route, each from the pipeline's initialisations,
and what the confinement tau buys: the comparisons that need runs too long for `python VI.py`.
`make pdf` runs it after the pipeline.

    python bench/routes.py [--results plots/results.json] [--json plots/routes.json]
                           [--tex plots/routes.tex] [--workers 2]

Routes, each with the pipeline's restarts (restart r starts from the pipeline's initialisation r,
so two routes at the same (tau, H) are paired by initialisation):
    exact   the gradient and A by quadrature: the reference, needs no knowledge of the truth;
    truth   importance sampling from the true mixture, the homework's proposal (an oracle);
    fitted  importance sampling from the Gaussian fitted to the training split;
    pcd     persistent contrastive divergence: the model's expectation from MALA chains.
The exact and truth routes run at the homework route's chosen (tau, H), the fitted and pcd ones
at the oracle-free route's choice. The two importance-sampling routes are retrained here from
their initialisations and must land on the pipeline's numbers to the last bit (a check that this
script measures the pipeline's models); every route is timed here, on the same machine.

The tau sweep: for every tau of the selection at the homework route's width, the restarts trained
to convergence with the homework's proposal: iterations to converge and converged test LL.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import VI  # noqa: E402  (first: it pins the numerical libraries before numpy and torch load)

# isort: split
import numpy as np  # noqa: E402

import ebm  # noqa: E402
import kde  # noqa: E402
from theory import macros  # noqa: E402

# quadrature cells of the exact route's objective (its models are certified at the fine step)
TRAIN_STEP = 0.25
NEEDS_TRUTH = {"exact": False, "truth": True, "fitted": False, "pcd": False}


def config_of(results):
    return VI.Config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()}
    )


def trainer(route, x, samples, cfg):
    """A function (tau, hidden, r) -> the r-th restart of the route at (tau, hidden), trained."""
    init, settings = VI.init_energy(cfg.seed), VI.ebm_settings(cfg)["settings"]
    if route == "pcd":
        return lambda tau, hidden, r: ebm.train_pcd(
            init(hidden, tau, r),
            x["train"],
            x["val"],
            VI.torch_generator(cfg.seed, f"pcd r={r}"),
            **PCD,
        )
    grid = ebm.grid_sample(cfg.grid_half_width, TRAIN_STEP)
    proposal, validation = (grid, grid) if route == "exact" else samples[route]
    objective, score = ebm.objective(x["train"], proposal), ebm.score(x["val"], validation)
    return lambda tau, hidden, r: ebm.train(
        ebm.Run(init(hidden, tau, r)), objective, score, cfg.ebm_max_iter, **settings
    )


def run_tasks(tasks, x, samples, cfg, workers):
    """Every (route, tau, hidden, restart) task, in `workers` processes at once: its row and
    its test log-densities (n,), by task."""
    trainers = {route: trainer(route, x, samples, cfg) for route in NEEDS_TRUTH}

    def one(task):
        route, tau, hidden, r = task
        run = trainers[route](tau, hidden, r)
        evaluations = run.energy.evaluations  # training's, before the test density adds its own
        _, cert, ll = ebm.fitted_density(run, x["test"], cfg.grid_step, cfg.grid_half_width)
        row = dict(
            restart=r,
            iterations=run.iterations,
            best_iteration=run.best_iteration,
            converged=run.converged,
            evaluations=evaluations,
            seconds=run.seconds,  # varies from run to run; the write-up quotes evaluations
            test_ll=float(ll.mean()),
            mass_outside=cert["mass_outside"],
        )
        return row, ll

    slow_first = sorted(tasks, key=lambda t: (t[0] != "pcd", t[0] != "exact", -t[1]))
    return dict(zip(slow_first, VI.fork_map(one, slow_first, workers), strict=True))


PCD = dict(chains=1000, steps=2, updates=3000)  # persistent contrastive divergence (ebm.train_pcd)
LABELS = {
    "exact": "exact gradient (quadrature)",
    "truth": "IS, $q$ the true mixture",
    "fitted": "IS, $q$ fitted to the data",
    "pcd": "persistent contrastive divergence",
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "plots" / "results.json"))
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--tex", help="write LaTeX macros of the tables here")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if not Path(args.results).is_file():
        sys.exit(f"routes.py: no {args.results}; run python VI.py first")
    VI.keep_freed_memory()
    raw = Path(args.results).read_bytes()
    results = json.loads(raw)
    cfg = config_of(results)
    data = VI.make_data(cfg)
    x = {k: VI.tensor(data[k]) for k in ("train", "val", "test")}
    chosen = {
        route: (results["ebm"][key]["tau"], results["ebm"][key]["hidden"])
        for route, key in (
            ("exact", "truth"),
            ("truth", "truth"),
            ("fitted", "fitted"),
            ("pcd", "fitted"),
        )
    }
    (tau, hidden), restarts = chosen["truth"], range(cfg.ebm_restarts)
    tasks = [(route, *chosen[route], r) for route in NEEDS_TRUTH for r in restarts]
    tasks += [("truth", t, hidden, r) for t in cfg.ebm_taus if t != tau for r in restarts]
    done = run_tasks(tasks, x, VI.proposal_samples(data, cfg), cfg, args.workers)
    rows = lambda route, t, h: [done[(route, t, h, r)][0] for r in restarts]
    lls = lambda route, t, h: np.stack([done[(route, t, h, r)][1] for r in restarts])
    kde_ll = kde.log_density(data["test"], data["train"], results["kde"]["sigma"])
    out = dict(results_sha256=hashlib.sha256(raw).hexdigest(), routes={})
    for route, (t, h) in chosen.items():
        out["routes"][route] = dict(
            tau=t,
            hidden=h,
            needs_truth=NEEDS_TRUTH[route],
            restarts=rows(route, t, h),
            minus_kde=VI.paired(lls(route, t, h), kde_ll),
        )
    pipeline = np.load(Path(args.results).parent / "log_densities.npz")
    for route, key in (("truth", "ebm"), ("fitted", "ebm_fitted")):  # the pipeline's own models?
        out["routes"][route]["reproduced"] = bool(
            np.array_equal(lls(route, *chosen[route]), pipeline[key])
        )
    out["routes"]["truth"]["minus_exact"] = VI.paired(
        lls("truth", tau, hidden), lls("exact", tau, hidden)
    )
    out["routes"]["pcd"]["minus_fitted"] = VI.paired(
        lls("pcd", *chosen["pcd"]), lls("fitted", *chosen["fitted"])
    )
    out["tau_sweep"] = [dict(tau=t, restarts=rows("truth", t, hidden)) for t in cfg.ebm_taus]
    uninformed = lls("truth", max(cfg.ebm_taus), hidden)
    out["uninformed"] = dict(
        tau=max(cfg.ebm_taus),
        chosen_minus=VI.paired(lls("truth", tau, hidden), uninformed),
        minus_kde=VI.paired(uninformed, kde_ll),
    )
    text = VI.dump(out)
    print(text)
    if args.json:
        VI.write_text(args.json, text)
    if args.tex:
        VI.write_text(args.tex, macros.macro_file(route_macros(out, results), "bench/routes.py"))
    return 0 if all(out["routes"][r]["reproduced"] for r in ("truth", "fitted")) else 1


def pm(mean, spread, digits=3):
    return f"\\pmse{{{mean:.{digits}f}}}{{{spread:.{digits}f}}}"


def spread(rows):
    ll = np.array([r["test_ll"] for r in rows])
    return ll.mean(), ll.std(ddof=1), ll.min(), ll.max()


def route_macros(out, results):
    """LaTeX macros of the routes table, the tau table and the sentences about them."""
    routes, tex = (
        out["routes"],
        {
            "routeTrainStep": f"{TRAIN_STEP:g}",
            "pcdChains": str(PCD["chains"]),
            "pcdSteps": str(PCD["steps"]),
            "pcdUpdates": str(PCD["updates"]),
        },
    )
    rows = []
    for route, r in routes.items():
        mean, sd, _, _ = spread(r["restarts"])
        evaluations = np.median([x["evaluations"] for x in r["restarts"]]) / 1e6
        rows.append(
            f"{LABELS[route]} & {'yes' if r['needs_truth'] else 'no'} & "
            f"{macros.candidate(r['tau'], r['hidden'])} & "
            f"{pm(mean, sd)} & {pm(r['minus_kde']['mean'], r['minus_kde']['se'])} & "
            f"{evaluations:.1f}\\\\"
        )
    tex["routeRows"] = " ".join(rows)
    mean, sd, _, _ = spread(routes["exact"]["restarts"])
    tex.update(routeExactTestLL=f"{mean:.3f}", routeExactTestLLSD=f"{sd:.3f}")
    for name, c, words in (
        (
            "TruthMinusExact",
            routes["truth"]["minus_exact"],
            (
                "the importance-sampled gradient fits better",
                "the exact gradient fits better",
                "no difference is detectable",
            ),
        ),
        (
            "PcdMinusFitted",
            routes["pcd"]["minus_fitted"],
            (
                "contrastive divergence fits better",
                "importance sampling fits better",
                "no difference is detectable",
            ),
        ),
    ):
        tex[f"route{name}"], tex[f"route{name}SE"] = f"{c['mean']:.3f}", f"{c['se']:.3f}"
        tex[f"route{name.replace('Minus', 'Versus')}"] = macros.verdict(c, *words)
    taus = []
    for t in out["tau_sweep"]:
        mean, sd, low, high = spread(t["restarts"])
        iterations = int(np.median([x["iterations"] for x in t["restarts"]]))
        taus.append(
            f"{t['tau']:g} & {iterations} & "
            f"{sum(x['converged'] for x in t['restarts'])} of {len(t['restarts'])} & "
            f"{pm(mean, sd)} & \\num{{{low:.3f}}} to \\num{{{high:.3f}}}\\\\"
        )
    u = out["uninformed"]
    tex.update(
        tauRows=" ".join(taus),
        tauMax=f"{u['tau']:g}",
        chosenMinusUninformed=f"{u['chosen_minus']['mean']:.3f}",
        chosenMinusUninformedSE=f"{u['chosen_minus']['se']:.3f}",
        uninformedVersusChosen=macros.verdict(
            u["chosen_minus"], "trails", "beats", "cannot be told apart from"
        ),
        uninformedMinusKde=f"{u['minus_kde']['mean']:.3f}",
        uninformedMinusKdeSE=f"{u['minus_kde']['se']:.3f}",
        uninformedVersusKde=macros.verdict(
            u["minus_kde"], "beats", "loses to", "cannot be told apart from"
        ),
    )
    return tex


if __name__ == "__main__":
    sys.exit(main())
