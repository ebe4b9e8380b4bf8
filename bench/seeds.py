"""Robustness across seeds: the whole pipeline (numbers only) for several seeds, the spread of
the headline numbers, which (tau, H) each route's selection picks, and on how many seeds each
claim of the write-up holds (VI.CLAIMS, the table the driver itself states them from).

    python bench/seeds.py [--seeds 8] [--jobs 2] [--quick] [--json F] [--tex plots/seeds.tex]
                          [--reuse plots/results.json]

Seeds run `jobs` at a time, one single-threaded process each. --reuse takes an existing
results.json for its seed instead of recomputing it, if it was computed with the same
configuration. --tex writes the LaTeX macros theory.pdf quotes (`make pdf` runs this). Exit
status 1 if a number is not finite, or, with --strict, if a claim fails on some seed.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import VI  # noqa: E402  (first: it pins the numerical libraries before numpy and torch load)

# isort: split
import numpy as np  # noqa: E402

import ebm  # noqa: E402
from theory import macros  # noqa: E402

HEADLINES = {  # name: path into results.json
    "EM R=10 mean |mu error|": "gmm.big.mean_dist",
    "EM R=1 mean |mu error| (converged)": "gmm.small.mean_dist",
    "KDE sigma": "kde.sigma",
    "KDE test LL": "compare.test_ll.kde.mean",
    "EBM test LL (mean of restarts)": "compare.test_ll.ebm.mean",
    "EBM restarts' sd": "compare.test_ll.ebm.sd",
    "EBM minus KDE": "compare.ebm_minus_kde.mean",
    "oracle-free EBM minus KDE": "compare.fitted_minus_kde.mean",
    "truth minus EBM": "compare.truth_minus_ebm.mean",
    "A: grid minus training IS": "ebm.model.A_grid_minus_train",
    "IS gradient rel. error at the kept iterate": "ebm.model.gradient.-1.rel_err_train",
    "MALA mode-mass chi-square p": "ebm.model.samples.p_modes",
    "uniform-q gap, R=10": "vi.elbo.big.gap",
}


def run_seed(seed, quick, reuse):
    """results.json of one seed: reused if `reuse` holds this seed at the same settings."""
    args = ["--seed", str(seed)] + (["--quick"] if quick else [])
    cfg, _ = VI.parse_args(args)
    if reuse and Path(reuse).exists():
        old = json.loads(Path(reuse).read_text())
        if old.get("config") == json.loads(json.dumps(VI.asdict(cfg))):
            return old
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "VI.py"),
                *args,
                "--no-figures",
                "--workers",
                "1",
                "--out",
                out,
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        return json.loads((Path(out) / "results.json").read_text())


def by_count(picks):
    """(pick, count) from the most frequent down, ties in the order the seeds first made them: a
    set's order would follow Python's per-process string hashing, and the PDF's text with it."""
    return sorted(((p, picks.count(p)) for p in dict.fromkeys(picks)), key=lambda pc: -pc[1])


def seed_macros(runs, passes):
    """LaTeX macros (name -> text) summarising the runs, for theory.pdf."""
    col = lambda path: np.array([float(macros.lookup(r, path)) for r in runs])
    picks = [macros.candidate(r["ebm"]["truth"]["tau"], r["ebm"]["truth"]["hidden"]) for r in runs]
    kde_lead = col("compare.ebm_minus_kde.mean")
    out = {
        "seedsN": str(len(runs)),
        "seedsClaims": str(len(passes)),
        "seedsClaimsHeld": str(sum(all(h) for h in passes.values())),
        "seedsEbmOverKdeMin": f"{kde_lead.min():.3f}",
        "seedsEbmOverKdeMax": f"{kde_lead.max():.3f}",
        "seedsEbmGapMean": f"{col('compare.truth_minus_ebm.mean').mean():.3f}",
        "seedsEmBigMeanDistMax": f"{col('gmm.big.mean_dist').max():.2f}",
        "seedsEmSmallMeanDistMin": f"{col('gmm.small.mean_dist').min():.2f}",
        "seedsPicks": "; ".join(f"{p} on {n}" for p, n in by_count(picks)),
        "seedsClaimRows": " ".join(
            f"{VI.CLAIMS[key][0]} & {sum(hits)}\\\\" for key, hits in passes.items()
        ),
    }
    out.update(
        {f"seedsHeld{key[0].upper()}{key[1:]}": str(sum(hits)) for key, hits in passes.items()}
    )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2, help="seeds run at the same time (default 2)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reuse", help="a results.json to reuse for its seed when its settings match")
    p.add_argument("--json", help="also write the per-seed values here")
    p.add_argument("--tex", help="also write LaTeX macros of the summary here")
    p.add_argument("--strict", action="store_true", help="exit 1 if any claim fails for any seed")
    args = p.parse_args(argv)
    with ThreadPoolExecutor(args.jobs) as pool:  # threads that wait on one process each
        runs = list(pool.map(lambda s: run_seed(s, args.quick, args.reuse), range(args.seeds)))
    passes = {key: [r["claims"][key] for r in runs] for key in VI.CLAIMS}
    ok = True
    print(f"{args.seeds} seeds{' (quick settings)' if args.quick else ''}\n")
    print("| number | mean | sd | min | max |\n|---|---|---|---|---|")
    for name, path in HEADLINES.items():
        v = np.array([float(macros.lookup(r, path)) for r in runs])
        ok &= bool(np.isfinite(v).all())
        sd = v.std(ddof=1) if len(v) > 1 else math.nan
        print(f"| {name} | {v.mean():.4f} | {sd:.4f} | {v.min():.4f} | {v.max():.4f} |")
    print("\n| seed | homework route's (tau, H) | oracle-free route's (tau, H) |\n|---|---|---|")
    for s, r in enumerate(runs):
        print(
            f"| {s} | "
            + " | ".join(
                ebm.candidate_name(r["ebm"][k]["tau"], r["ebm"][k]["hidden"])
                for k in ("truth", "fitted")
            )
            + " |"
        )
    print("\n| claim | seeds where it holds |\n|---|---|")
    for key, hits in passes.items():
        ok &= all(hits) or not args.strict
        failed = [s for s, h in enumerate(hits) if not h]
        print(
            f"| {key} | {sum(hits)}/{len(hits)}"
            + (f" (fails for seeds {failed})" if failed else "")
            + " |"
        )
    if args.json:
        VI.write_text(
            args.json,
            VI.dump(
                {
                    "claims": passes,
                    "headlines": {
                        name: [float(macros.lookup(r, path)) for r in runs]
                        for name, path in HEADLINES.items()
                    },
                }
            ),
        )
    if args.tex:
        VI.write_text(
            args.tex,
            macros.macro_file(seed_macros(runs, passes), f"bench/seeds.py over {args.seeds} seeds"),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
