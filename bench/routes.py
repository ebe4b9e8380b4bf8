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
import ebm  # noqa: E402
import kde  # noqa: E402
import numpy as np  # noqa: E402

TRAIN_STEP = 0.25  # quadrature cells of the exact route's objective (its models are certified at the fine step)
NEEDS_TRUTH = {"exact": False, "truth": True, "fitted": False, "pcd": False}


def config_of(results):
    return VI.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})


def route_runs(route, tau, hidden, x, samples, cfg, pmap):
    """The restarts of one route at (tau, hidden), each a fitted density: rows and per-point
    test log-densities (restarts, n)."""
    init, settings, grid = VI.init_energy(cfg.seed), VI.ebm_settings(cfg)["settings"], (cfg.grid_step, cfg.grid_half_width)
    if route == "pcd":
        train = lambda r: ebm.train_pcd(init(hidden, tau, r), x["train"], x["val"], VI.torch_generator(cfg.seed, f"pcd r={r}"),
                                        **PCD)
    else:
        proposal, validation = samples[route] if route != "exact" else (ebm.grid_sample(cfg.grid_half_width, TRAIN_STEP),) * 2
        objective, score = ebm.objective(x["train"], proposal), ebm.score(x["val"], validation)
        train = lambda r: ebm.train(ebm.Run(init(hidden, tau, r)), objective, score, cfg.ebm_max_iter, **settings)
    fits = pmap(train, range(cfg.ebm_restarts))
    models = pmap(lambda run: ebm.fitted_density(run, x["test"], *grid), fits)
    rows = [dict(restart=r, iterations=run.iterations, best_iteration=run.best_iteration, converged=run.converged,
                 seconds=run.seconds, test_ll=float(ll.mean()), mass_outside=cert["mass_outside"])
            for r, (run, (_, cert, ll)) in enumerate(zip(fits, models, strict=True))]
    return rows, np.stack([m[2] for m in models])


PCD = dict(chains=1000, steps=2, updates=3000)  # persistent contrastive divergence (ebm.train_pcd)
LABELS = {"exact": "exact gradient (quadrature)", "truth": "IS, $q$ the true mixture", "fitted": "IS, $q$ fitted to the data",
          "pcd": "persistent contrastive divergence"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "plots" / "results.json"))
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--tex", help="write LaTeX macros of the tables here")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    
    raw = Path(args.results).read_bytes()
    results = json.loads(raw)
    cfg = config_of(results)
    data = VI.make_data(cfg)
    x = {k: VI.tensor(data[k]) for k in ("train", "val", "test")}
    samples, pmap = VI.proposal_samples(data, cfg), lambda fn, items: VI.fork_map(fn, items, args.workers)
    pipeline = np.load(Path(args.results).parent / "log_densities.npz")
    kde_ll = kde.log_density(data["test"], data["train"], results["kde"]["sigma"])
    chosen = {route: (results["ebm"][key]["tau"], results["ebm"][key]["hidden"])
              for route, key in (("exact", "truth"), ("truth", "truth"), ("fitted", "fitted"), ("pcd", "fitted"))}
    out, per_point = dict(results_sha256=hashlib.sha256(raw).hexdigest(), routes={}), {}
    for route in NEEDS_TRUTH:
        tau, hidden = chosen[route]
        rows, per_point[route] = route_runs(route, tau, hidden, x, samples, cfg, pmap)
        out["routes"][route] = dict(tau=tau, hidden=hidden, needs_truth=NEEDS_TRUTH[route], restarts=rows,
                                    minus_kde=VI.paired(per_point[route], kde_ll))
    for route, key in (("truth", "ebm"), ("fitted", "ebm_fitted")):  # the pipeline's own models?
        out["routes"][route]["reproduced"] = bool(np.array_equal(per_point[route], pipeline[key]))
    out["routes"]["truth"]["minus_exact"] = VI.paired(per_point["truth"], per_point["exact"])
    out["routes"]["pcd"]["minus_fitted"] = VI.paired(per_point["pcd"], per_point["fitted"])
    tau, hidden = chosen["truth"]
    sweep = {t: route_runs("truth", t, hidden, x, samples, cfg, pmap) for t in cfg.ebm_taus}
    out["tau_sweep"] = [dict(tau=t, restarts=rows) for t, (rows, _) in sweep.items()]
    uninformed = sweep[max(cfg.ebm_taus)][1]
    out["uninformed"] = dict(tau=max(cfg.ebm_taus), chosen_minus=VI.paired(sweep[tau][1], uninformed),
                             minus_kde=VI.paired(uninformed, kde_ll))
    text = VI.dump(out)
    print(text)
    if args.json:
        VI.write_text(args.json, text)
    if args.tex:
        VI.write_macros(args.tex, route_macros(out, results), "bench/routes.py")
    return 0 if all(out["routes"][r]["reproduced"] for r in ("truth", "fitted")) else 1


def pm(mean, spread, digits=3):
    return f"\\pmse{{{mean:.{digits}f}}}{{{spread:.{digits}f}}}"


def spread(rows):
    ll = np.array([r["test_ll"] for r in rows])
    return ll.mean(), ll.std(ddof=1), ll.min(), ll.max()


def route_macros(out, results):
    """LaTeX macros of the routes table, the tau table and the sentences about them."""
    routes, macros = out["routes"], {"routeTrainStep": f"{TRAIN_STEP:g}", "pcdChains": str(PCD["chains"]),
                                     "pcdSteps": str(PCD["steps"]), "pcdUpdates": str(PCD["updates"])}
    rows = []
    for route, r in routes.items():
        mean, sd, _, _ = spread(r["restarts"])
        seconds = np.median([x["seconds"] for x in r["restarts"]])
        rows.append(f"{LABELS[route]} & {'yes' if r['needs_truth'] else 'no'} & {ebm.candidate_name(r['tau'], r['hidden'], tex=True)} & "
                    f"{pm(mean, sd)} & {pm(r['minus_kde']['mean'], r['minus_kde']['se'])} & {seconds:.1f}\\\\")
    macros["routeRows"] = " ".join(rows)
    mean, sd, _, _ = spread(routes["exact"]["restarts"])
    macros.update(routeExactTestLL=f"{mean:.3f}", routeExactTestLLSD=f"{sd:.3f}")
    for name, c, words in (("TruthMinusExact", routes["truth"]["minus_exact"], ("the importance-sampled gradient fits better",
                                                                                "the exact gradient fits better", "no difference is detectable")),
                           ("PcdMinusFitted", routes["pcd"]["minus_fitted"], ("contrastive divergence fits better",
                                                                               "importance sampling fits better", "no difference is detectable"))):
        macros[f"route{name}"], macros[f"route{name}SE"] = f"{c['mean']:.3f}", f"{c['se']:.3f}"
        macros[f"route{name.replace('Minus', 'Versus')}"] = VI.verdict(c, *words)
    taus = []
    for t in out["tau_sweep"]:
        mean, sd, low, high = spread(t["restarts"])
        iterations = int(np.median([x["iterations"] for x in t["restarts"]]))
        taus.append(f"{t['tau']:g} & {iterations} & {sum(x['converged'] for x in t['restarts'])} of {len(t['restarts'])} & "
                    f"{pm(mean, sd)} & \\num{{{low:.3f}}} to \\num{{{high:.3f}}}\\\\")
    u = out["uninformed"]
    macros.update(tauRows=" ".join(taus), tauMax=f"{u['tau']:g}",
                  chosenMinusUninformed=f"{u['chosen_minus']['mean']:.3f}", chosenMinusUninformedSE=f"{u['chosen_minus']['se']:.3f}",
                  uninformedVersusChosen=VI.verdict(u["chosen_minus"], "trails", "beats", "cannot be told apart from"),
                  uninformedMinusKde=f"{u['minus_kde']['mean']:.3f}", uninformedMinusKdeSE=f"{u['minus_kde']['se']:.3f}",
                  uninformedVersusKde=VI.verdict(u["minus_kde"], "beats", "loses to", "cannot be told apart from"))
    return macros


if __name__ == "__main__":
    sys.exit(main())
