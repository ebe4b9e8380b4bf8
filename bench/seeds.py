"""Robustness across seeds: run the whole pipeline for several seeds, summarise every headline
number (mean, standard deviation, min, max) and check the claims the write-up makes.

    python bench/seeds.py [--seeds 10] [--quick] [--json seeds.json]

Exit status 1 if any number is NaN or infinite or any claim fails for some seed, so the
write-up can be corrected (or must report the spread).
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
    "EM at R=10 recovers the means (mean error < 0.2)": lambda r: r["gmm"]["R10"]["mean_dist"] < 0.2,
    "EM at R=1 does not (mean error > 0.2)": lambda r: r["gmm"]["R1"]["mean_dist"] > 0.2,
    "EM at R=1 about as likely as the truth (|test LL diff| < 0.02)":
        lambda r: abs(r["gmm"]["R1"]["test_ll"] - r["gmm"]["R1"]["test_ll_true"]) < 0.02,
    "training-sample IS makes the EBM look better than it is":
        lambda r: r["ebm"]["test_ll_train_is"] > r["ebm"]["test_ll_grid"],
    "KDE's tuned sigma beats Scott's rule": lambda r: r["kde"]["test_ll"] > r["kde"]["scott_test_ll"],
    "uniform-q bound below the posterior bound, R=10 and R=1": lambda r: all(
        r["vi"]["elbo"][R]["unif"] < r["vi"]["elbo"][R]["post"] for R in ("R10", "R1")),
}


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
    args = p.parse_args(argv)
    per_seed, passes, ok = [], {c: [] for c in CLAIMS}, True
    for seed in range(args.seeds):
        r = run_seed(seed, args.quick)
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
        ok &= all(hits)
        failed = [s for s, h in enumerate(hits) if not h]
        print(f"| {claim} | {sum(hits)}/{len(hits)}" + (f" (fails for seeds {failed})" if failed else "") + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"per_seed": per_seed, "claims": passes}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
