"""Robustness across seeds: run the whole pipeline for several seeds, summarise every headline
number (mean, standard deviation, min, max) and check the claims the write-up makes.

    python bench/seeds.py [--seeds 10] [--quick] [--json seeds.json] [--tex plots/seeds.tex]

--tex writes LaTeX macros of the spread and of how often each claim holds, which theory.pdf
quotes (`make pdf` runs this with 10 seeds).

Exit status 1 if any number is NaN or infinite (or, with --strict, if any claim fails for
some seed). Claims that hold only for most seeds are reported, and theory.pdf quotes the
counts rather than claiming more than the runs show.
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

HEADLINES = {  # name: path into results.json
    "EM R=10 mean |mu error|": ("gmm", "R10", "mean_dist"),
    "EM R=10 max |pi error|": ("gmm", "R10", "max_pi_err"),
    "EM R=1 mean |mu error|": ("gmm", "R1", "mean_dist"),
    "EM R=1 test LL fit - truth": None,
    "KDE sigma": ("kde", "sigma"),
    "KDE test LL": ("kde", "test_ll"),
    "EBM test LL (grid A)": ("ebm", "test_ll_grid"),
    "EBM test LL (fresh IS A)": ("ebm", "test_ll_fresh_is"),
    "EBM test LL (training IS A)": ("ebm", "test_ll_train_is"),
    "true mixture test LL": ("ebm", "oracle_test_ll"),
    "EBM best step": ("ebm", "best_step"),
    "uniform-q bound, R=10": ("vi", "elbo", "R10", "unif"),
    "posterior bound, R=10": ("vi", "elbo", "R10", "post"),
}


def get(results, path):
    for key in path:
        results = results[key]
    return float(results)


def headline_values(r):
    out = {}
    for name, path in HEADLINES.items():
        if path is not None:
            out[name] = get(r, path)
    out["EM R=1 test LL fit - truth"] = r["gmm"]["R1"]["test_ll"] - r["gmm"]["R1"]["test_ll_true"]
    return out


CLAIMS = {  # what theory.pdf says, as a test on one seed's results
    "EBM fresh-IS and grid A agree within 0.01": lambda r: abs(r["ebm"]["A_fresh_is"] - r["ebm"]["A_grid"]) < 0.01,
    "EBM beats the KDE on test LL": lambda r: r["ebm"]["test_ll_grid"] > r["kde"]["test_ll"],
    "EBM within 0.05 nats of the true mixture": lambda r: r["ebm"]["oracle_test_ll"] - r["ebm"]["test_ll_grid"] < 0.05,
    "EM at R=10 recovers the means (mean error < 0.25)": lambda r: r["gmm"]["R10"]["mean_dist"] < 0.25,
    "EM at R=1 does not (mean error > 0.2)": lambda r: r["gmm"]["R1"]["mean_dist"] > 0.2,
    "EM at R=1 about as likely as the truth (|test LL diff| < 0.02)":
        lambda r: abs(r["gmm"]["R1"]["test_ll"] - r["gmm"]["R1"]["test_ll_true"]) < 0.02,
    "training-sample IS makes the EBM look better than it is":
        lambda r: r["ebm"]["test_ll_train_is"] > r["ebm"]["test_ll_grid"],
    "KDE's tuned sigma beats Scott's rule": lambda r: r["kde"]["test_ll"] > r["kde"]["scott_test_ll"],
    "uniform-q bound below the posterior bound, R=10 and R=1": lambda r: all(
        r["vi"]["elbo"][R]["unif"] < r["vi"]["elbo"][R]["post"] for R in ("R10", "R1")),
}


def seed_macros(runs, passes):
    """LaTeX macros (name -> text) summarising the runs, for theory.pdf."""
    col = lambda f: np.array([f(r) for r in runs])
    ebm_gap = col(lambda r: r["ebm"]["oracle_test_ll"] - r["ebm"]["test_ll_grid"])
    kde_gap = col(lambda r: r["ebm"]["oracle_test_ll"] - r["kde"]["test_ll"])
    over_kde = col(lambda r: r["ebm"]["test_ll_grid"] - r["kde"]["test_ll"])
    fresh_grid = col(lambda r: abs(r["ebm"]["A_fresh_is"] - r["ebm"]["A_grid"]))
    optimism = col(lambda r: r["ebm"]["test_ll_train_is"] - r["ebm"]["test_ll_grid"])
    em_ten = col(lambda r: r["gmm"]["R10"]["mean_dist"])
    em_one = col(lambda r: r["gmm"]["R1"]["mean_dist"])
    em_one_ll = col(lambda r: abs(r["gmm"]["R1"]["test_ll"] - r["gmm"]["R1"]["test_ll_true"]))
    f = lambda x, d=3: f"{x:.{d}f}"
    return {"seedsN": str(len(runs)), "seedsEbmGapMean": f(ebm_gap.mean()), "seedsEbmGapMax": f(ebm_gap.max()),
            "seedsKdeGapMean": f(kde_gap.mean()), "seedsEbmOverKdeMin": f(over_kde.min()),
            "seedsEbmOverKdeMean": f(over_kde.mean()), "seedsFreshGridMax": f"{fresh_grid.max():.1e}",
            "seedsOptimismMean": f(optimism.mean(), 4), "seedsOptimismMin": f(optimism.min(), 4),
            "seedsOptimisticCount": str(int((optimism > 0).sum())),
            "seedsEmTenMeanDistMax": f(em_ten.max(), 2), "seedsEmOneMeanDistMin": f(em_one.min(), 2),
            "seedsEmOneLLDiffMax": f(em_one_ll.max()),
            "seedsClaimsHeld": str(sum(all(h) for h in passes.values())), "seedsClaims": str(len(passes))}


def run_seed(seed, quick):
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, str(ROOT / "VI.py"), "--seed", str(seed), "--out", out]
        subprocess.run(args + (["--quick"] if quick else []), check=True, capture_output=True, cwd=ROOT)
        return json.loads((Path(out) / "results.json").read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="also write the per-seed values here")
    p.add_argument("--tex", help="also write LaTeX macros of the summary here")
    p.add_argument("--strict", action="store_true", help="exit 1 if any claim fails for any seed")
    args = p.parse_args(argv)
    per_seed, runs, passes, ok = [], [], {c: [] for c in CLAIMS}, True
    for seed in range(args.seeds):
        r = run_seed(seed, args.quick)
        runs.append(r)
        per_seed.append(headline_values(r))
        for claim, check in CLAIMS.items():
            passes[claim].append(bool(check(r)))
        print(f"seed {seed}: done", file=sys.stderr)
    print(f"{args.seeds} seeds{' (quick settings)' if args.quick else ''}\n")
    print("| number | mean | sd | min | max |\n|---|---|---|---|---|")
    for name in per_seed[0]:
        v = np.array([s[name] for s in per_seed])
        ok &= bool(np.isfinite(v).all())
        print(f"| {name} | {v.mean():.4f} | {v.std(ddof=1) if len(v) > 1 else math.nan:.4f} | "
              f"{v.min():.4f} | {v.max():.4f} |")
    print("\n| claim | seeds where it holds |\n|---|---|")
    for claim, hits in passes.items():
        ok &= all(hits) or not args.strict
        failed = [s for s, h in enumerate(hits) if not h]
        print(f"| {claim} | {sum(hits)}/{len(hits)}" + (f" (fails for seeds {failed})" if failed else "") + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"per_seed": per_seed, "claims": passes}, indent=1))
    if args.tex:
        lines = [f"% Generated by bench/seeds.py over {args.seeds} seeds; do not edit."]
        lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in seed_macros(runs, passes).items()]
        tmp = Path(args.tex).with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(args.tex)  # atomic: theory.pdf never reads half a file
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
