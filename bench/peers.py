"""This project's KDE tuning and EM against the tools people would use instead, on the same
data, with wall times (median of --repeats runs) and ratios measured in the same run.

    python -m pip install -r requirements-dev.txt
    python bench/peers.py [--seed 0] [--repeats 5] [--pipeline-runs 3]

Peers: scikit-learn's KernelDensity + GridSearchCV over the same sigma grid on the same
train/validation split (PredefinedSplit; sklearn's bandwidth is a standard deviation, the
assignment's sigma a variance, so bandwidth = sqrt(sigma)); scipy.stats.gaussian_kde with its
default (Scott) rule; scikit-learn's GaussianMixture (spherical covariances, since it cannot
hold them at I; as many inits as our restarts). The true mixture is the ceiling for all.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gmm_em  # noqa: E402
import kde  # noqa: E402
from VI import Config, make_data, make_rngs  # noqa: E402


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

    grid = np.logspace(np.log10(cfg.sigma_min), np.log10(cfg.sigma_max), cfg.sigma_num)
    train, val, test = data["train"], data["val"], data["test"]
    (sigma, _, scores), t_ours = timed(lambda: kde.tune_sigma(train, val, grid), repeats)
    sigma_grid = grid[int(np.argmax(scores))]

    both = np.concatenate([train, val])
    split = PredefinedSplit(np.r_[-np.ones(len(train)), np.zeros(len(val))])

    def sklearn_search():
        search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": np.sqrt(grid)},
                              cv=split, refit=False)
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
    rng_seed = np.random.SeedSequence(cfg.seed).generate_state(1)[0]  # for sklearn's inits
    # the driver's own EM stream, fresh each repeat, so the fit is the one in results.json
    fit, t_ours = timed(lambda: gmm_em.fit_em(train, cfg.K, make_rngs(cfg.seed)["em"], cfg.em_restarts,
                                              cfg.em_tol, cfg.em_max_iter), repeats)
    gm, t_sk = timed(lambda: GaussianMixture(cfg.K, covariance_type="spherical", n_init=cfg.em_restarts,
                                             tol=cfg.em_tol, max_iter=cfg.em_max_iter,
                                             random_state=int(rng_seed)).fit(train), repeats)
    return [
        ("EM, this project (Sigma = I fixed)", float(gmm_em.log_prob(test, fit.means, fit.weights).mean()),
         t_ours, f"{fit.n_iter} iterations"),
        ("EM, sklearn GaussianMixture (spherical)", float(gm.score(test)), t_sk,
         f"variances {gm.covariances_.min():.2f}..{gm.covariances_.max():.2f}; "
         f"time sklearn / ours = {t_sk / t_ours:.1f}"),
    ]


def pipeline_runs(runs, seed):
    """Wall times of `python VI.py`, and the results.json and timings.json of the last run."""
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "VI.py"), "--seed", str(seed), "--out", out],
                           check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - t)
        read = lambda name: json.loads((Path(out) / name).read_text())
        return times, read("results.json"), read("timings.json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pipeline-runs", type=int, default=3, help="0 skips timing python VI.py")
    args = p.parse_args(argv)
    cfg = Config(seed=args.seed)
    data = make_data(cfg, make_rngs(cfg.seed))
    means, weights = gmm_em.ring_means(cfg.K, cfg.R), gmm_em.uniform_weights(cfg.K)
    oracle = float(gmm_em.log_prob(data["test"], means, weights).mean())
    rows = kde_rows(cfg, data, args.repeats) + em_rows(cfg, data, args.repeats)
    if args.pipeline_runs:
        times, results, seconds = pipeline_runs(args.pipeline_runs, cfg.seed)
        e = results["ebm"]
        rows.append(("EBM, this project (A by quadrature)", e["test_ll_grid"],
                     seconds["ebm_training"],
                     f"fresh-IS A gives {e['test_ll_fresh_is']:.4f}; time = training only"))
    print(f"seed {cfg.seed}, n = {cfg.n} per split, K = {cfg.K}, R = {cfg.R:g}; "
          f"median of {args.repeats} runs\n")
    print(f"| method | test LL (nats) | gap to truth | time (s) | notes |\n|---|---|---|---|---|")
    print(f"| true mixture (ceiling) | {oracle:.4f} | 0 | - | |")
    for name, ll, t, note in rows:
        print(f"| {name} | {ll:.4f} | {oracle - ll:.4f} | {t:.4f} | {note} |")
    if args.pipeline_runs:
        print(f"\npython VI.py end to end: median {statistics.median(times):.1f} s over {len(times)} runs "
              f"(min {min(times):.1f}, max {max(times):.1f}); target <= 30 s")


if __name__ == "__main__":
    main()
