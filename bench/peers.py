"""This project's KDE tuning, EM and EBM against the tools people would use instead, on the same
data, with wall times (median of --repeats runs) and ratios measured in the same run.

    python -m pip install -r requirements-dev.txt
    python VI.py                      # the EBM row is read from its plots/results.json
    python bench/peers.py [--seed 0] [--repeats 5] [--no-flow]

Peers: scikit-learn's KernelDensity + GridSearchCV over the same sigma grid on the same
train/validation split (PredefinedSplit; sklearn's bandwidth is a standard deviation, the
homework's sigma a variance, so bandwidth = sqrt(sigma)); scipy.stats.gaussian_kde with its
default (Scott) rule; scikit-learn's GaussianMixture (spherical covariances, since it cannot
hold them at I; as many inits as our restarts); and, for density estimation with exact
likelihoods, what a practitioner would reach for: a neural spline flow (zuko's NSF) trained by
maximum likelihood, its depth, width and number of Adam steps chosen on the validation split.
The true mixture is the ceiling for all.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import VI  # noqa: E402  (first: it sets the BLAS threads before numpy loads)
import gmm_em  # noqa: E402
import kde  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

FLOW_DEPTHS = (2, 4)  # spline transforms
FLOW_WIDTHS = (32, 64)  # hidden units in each of the two layers of every conditioner
FLOW_MAX_STEPS, FLOW_EVAL_EVERY, FLOW_PATIENCE = 4000, 50, 500


def timed(fn, repeats):
    """(result of the last call, median wall time over repeats)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def kde_rows(cfg, data, repeats):
    from scipy.stats import gaussian_kde
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neighbors import KernelDensity

    grid = kde.sigma_grid(cfg.sigma_min, cfg.sigma_max, cfg.sigma_num)
    train, val, test = data["train"], data["val"], data["test"]
    (sigma, _, scores), t_ours = timed(lambda: kde.tune_sigma(train, val, grid), repeats)
    sigma_grid = grid[int(np.argmax(scores))]

    both = np.concatenate([train, val])
    split = PredefinedSplit(np.r_[-np.ones(len(train)), np.zeros(len(val))])

    def sklearn_search():
        search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": np.sqrt(grid)}, cv=split, refit=False)
        return search.fit(both).best_params_["bandwidth"] ** 2

    sigma_sk, t_sk = timed(sklearn_search, repeats)
    fit = KernelDensity(bandwidth=np.sqrt(sigma_sk)).fit(train)
    scipy_kde, t_scipy = timed(lambda: gaussian_kde(train.T), repeats)
    return [
        ("KDE, this project (grid + refinement)", kde.mean_log_likelihood(test, train, sigma), t_ours,
         f"sigma {sigma:.4f} (grid choice {sigma_grid:.4f})"),
        ("KDE, sklearn GridSearchCV, same grid", float(fit.score_samples(test).mean()), t_sk,
         f"sigma {sigma_sk:.4f}; same grid choice: {np.isclose(sigma_sk, sigma_grid)}; "
         f"time sklearn / ours = {t_sk / t_ours:.1f}"),
        ("KDE, scipy gaussian_kde (Scott)", float(np.log(scipy_kde(test.T)).mean()), t_scipy,
         f"sigma {kde.rule_of_thumb_sigma(train):.3f} (no tuning)"),
    ]


def em_rows(cfg, data, repeats):
    from sklearn.mixture import GaussianMixture

    train, test = data["train"], data["test"]
    seed = int(np.random.SeedSequence(cfg.seed).generate_state(1)[0])  # for sklearn's inits
    # the driver's own EM stream, fresh each repeat, so the fit is the one in results.json
    fit, t_ours = timed(lambda: gmm_em.fit_em(train, cfg.K, VI.stream(cfg.seed, "em"), cfg.em_restarts,
                                              cfg.em_tol, cfg.em_max_iter), repeats)
    gm, t_sk = timed(lambda: GaussianMixture(cfg.K, covariance_type="spherical", n_init=cfg.em_restarts,
                                             tol=cfg.em_tol, max_iter=cfg.em_max_iter, random_state=seed).fit(train),
                     repeats)
    return [
        ("EM, this project (Sigma = I fixed)", float(gmm_em.log_prob(test, fit.means, fit.weights).mean()),
         t_ours, f"{fit.n_iter} iterations"),
        ("EM, sklearn GaussianMixture (spherical)", float(gm.score(test)), t_sk,
         f"variances {gm.covariances_.min():.2f}..{gm.covariances_.max():.2f}; time sklearn / ours = {t_sk / t_ours:.1f}"),
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
                best, best_step, best_state = v, step, {k: t.clone() for k, t in flow.state_dict().items()}
            elif step - best_step >= FLOW_PATIENCE:
                break
        opt.zero_grad()
        (-flow().log_prob(x_train).mean()).backward()
        opt.step()
    seconds = time.perf_counter() - start
    flow.load_state_dict(best_state)

    def log_density(x):
        with torch.no_grad():
            return flow().log_prob(z(x)).double().numpy() + log_jac

    return log_density, best, best_step, seconds


def flow_rows(cfg, data):
    """The flow whose (depth, width) gives the best validation log-likelihood, scored on test.
    Returns (rows, the chosen flow's record)."""
    fits = {(d, w): train_flow(d, w, data["train"], data["val"], cfg.seed) for d in FLOW_DEPTHS for w in FLOW_WIDTHS}
    (depth, width), (log_density, val, step, seconds) = max(fits.items(), key=lambda kv: kv[1][1])
    search = sum(f[3] for f in fits.values())
    tried = ", ".join(f"{d}x{w}: {f[1]:.3f}" for (d, w), f in fits.items())
    per_point = log_density(data["test"])
    record = dict(depth=depth, width=width, steps=step, seconds=seconds, search=search, per_point=per_point)
    return [("neural spline flow (zuko NSF), chosen on validation", float(per_point.mean()), seconds,
             f"{depth} transforms, width {width}, {step} Adam steps; validation LL by depth x width: {tried}; "
             f"whole search {search:.0f} s")], record


def flow_macros(flow, results, timings, data):
    """LaTeX macros of the flow's row for theory.pdf, compared with the pipeline's EBM point by point."""
    import datetime
    import platform

    import ebm
    cfg = results["config"]
    energy = ebm.load_energy(ROOT / "plots" / "ebm_energy.pt")
    ebm_ll = VI.energy_on(energy, data["test"]) - ebm.log_partition_grid(energy, cfg["grid_half_width"], cfg["grid_step"])
    lead, se = VI.mean_se(ebm_ll - flow["per_point"])
    verdict = ("The EBM wins" if lead > 2 * se else "The flow wins" if lead < -2 * se else "Neither wins")
    verdict += f", by {abs(lead):.3f}\\,$\\pm$\\,{se:.3f} nats per point (paired)" if abs(lead) > 2 * se else \
        f": the difference, {lead:.3f}\\,$\\pm$\\,{se:.3f} (paired), is within two standard errors"
    return {"flowTestLL": f"{flow['per_point'].mean():.3f}", "flowSeconds": f"{flow['seconds']:.0f}",
            "flowSearchSeconds": f"{flow['search']:.0f}", "flowDepth": str(flow["depth"]), "flowWidth": str(flow["width"]),
            "flowSteps": str(flow["steps"]), "flowDepths": ", ".join(map(str, FLOW_DEPTHS)),
            "flowWidths": ", ".join(map(str, FLOW_WIDTHS)), "flowVerdict": verdict,
            "flowEbmSeconds": f"{timings['ebm_training']:.1f}", "flowDate": str(datetime.date.today()), "flowMachine": f"{os.cpu_count()}-core {platform.machine()}".replace("_", "\\_"),
            # what the record was made against: a test compares them with the current run
            "flowRecordEbmTestLL": f"{ebm_ll.mean():.6f}", "flowRecordOracleTestLL": f"{results['ebm']['oracle_test_ll']:.6f}"}


def ebm_rows(results, timings):
    e = results["ebm"]
    return [("EBM, this project (A by quadrature)", e["test_ll_grid"], timings["ebm_training"],
             f"{e['chosen']}; fresh-IS A gives {e['test_ll_fresh_is']:.4f}; time = selection of "
             f"{e['candidates']} candidates and training")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--results", default=str(ROOT / "plots" / "results.json"), help="the EBM row's pipeline run")
    p.add_argument("--no-flow", action="store_true", help="skip the normalising flow (minutes)")
    p.add_argument("--tex", help="write the flow's LaTeX macros here (bench/peers.tex: theory.pdf reads it)")
    args = p.parse_args(argv)
    VI.keep_freed_memory()
    cfg = VI.Config(seed=args.seed)
    data = VI.make_data(cfg)
    oracle = float(gmm_em.log_prob(data["test"], *gmm_em.ring(cfg.K, cfg.R)).mean())
    rows = kde_rows(cfg, data, args.repeats) + em_rows(cfg, data, args.repeats)
    flow = None
    if not args.no_flow:
        flow_row, flow = flow_rows(cfg, data)
        rows += flow_row
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("config", {}).get("seed") == args.seed and "ebm" in results:
        timings = json.loads((results_path.parent / "timings.json").read_text())
        rows += ebm_rows(results, timings)
        if flow and args.tex:
            lines = ["% Generated by bench/peers.py (a recorded benchmark: rerun it when the data or the EBM change)."]
            lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in flow_macros(flow, results, timings, data).items()]
            VI.atomic_write(args.tex, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print(f"seed {cfg.seed}, n = {cfg.n} per split, K = {cfg.K}, R = {cfg.R:g}; median of {args.repeats} runs\n")
    print("| method | test LL (nats) | gap to truth | time (s) | notes |\n|---|---|---|---|---|")
    print(f"| true mixture (ceiling) | {oracle:.4f} | 0 | - | |")
    for name, ll, t, note in rows:
        print(f"| {name} | {ll:.4f} | {oracle - ll:.4f} | {t:.4f} | {note} |")


if __name__ == "__main__":
    main()
