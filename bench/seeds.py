"""Robustness across seeds: the whole pipeline (numbers only) for several seeds, the spread of
every headline number, which (tau, H) each seed's EBM selection picks, and on how many seeds
each claim of the write-up holds.

    python bench/seeds.py [--seeds 10] [--jobs 2] [--quick] [--json F] [--tex plots/seeds.tex]
                          [--reuse plots/results.json]

Seeds run two at a time by default (one process per seed, one torch thread each). --reuse
takes an existing results.json for its seed instead of recomputing it, if it was computed
with the same settings. --tex writes LaTeX macros that theory.pdf quotes (`make pdf` runs
this). Exit status 1 if a number is NaN or infinite, or, with --strict, if a claim fails on
some seed. Claims that hold on only some seeds are reported with the seeds where they fail.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

HEADLINES = {  # name: path into results.json
    "EM R=10 mean |mu error|": "gmm.big.mean_dist",
    "EM R=1 mean |mu error|": "gmm.small.mean_dist",
    "KDE sigma": "kde.sigma",
    "KDE test LL": "kde.test_ll",
    "EBM test LL (grid A)": "ebm.test_ll_grid",
    "EBM minus KDE (paired)": "ebm.ebm_minus_kde",
    "truth minus EBM (paired)": "ebm.oracle_minus_ebm",
    "EBM uninformed tau minus KDE": "ebm.uninformed_minus_kde",
    "A: grid minus training IS": "ebm.A_grid_minus_train",
    "A: grid minus fresh IS": "ebm.A_grid_minus_fresh",
    "IS gradient rel. error at the kept iterate": None,
    "MALA radius KS distance": "ebm.samples.ks_radius",
    "uniform-q gap, R=10": "vi.elbo.big.gap",
}


def get(results, path):
    for key in path.split("."):
        results = results[key]
    return results


def headline_values(r):
    out = {name: float(get(r, path)) for name, path in HEADLINES.items() if path}
    out["IS gradient rel. error at the kept iterate"] = r["ebm"]["gradient"][-1]["rel_err_train"]
    return out


CLAIMS = {  # what theory.pdf says, as a test of one seed's results (descriptions in LaTeX)
    "chosen": ("validation picks seed 0's $\\tau$", lambda r, first: r["ebm"]["tau"] == first["ebm"]["tau"]),
    "selectionByQuadrature": ("validation with $A$ by quadrature would pick the same",
                              lambda r: max(r["ebm"]["sweep"], key=lambda c: c["val_ll_grid"])["name"] == r["ebm"]["chosen"]),
    "beatsKde": ("the EBM's test LL beats the KDE's", lambda r: r["ebm"]["ebm_minus_kde"] > 0),
    "beatsKdeTwoSE": ("\\quad by more than 2 paired s.e.",
                      lambda r: r["ebm"]["ebm_minus_kde"] > 2 * r["ebm"]["ebm_minus_kde_se"]),
    "uninformedLoses": ("the largest $\\tau$ loses to the KDE", lambda r: r["ebm"]["uninformed_minus_kde"] < 0),
    "freshAgrees": ("fresh-sample IS $A$ within 3 s.e.\\ of quadrature",
                    lambda r: abs(r["ebm"]["A_grid_minus_fresh"]) < 3 * r["ebm"]["A_fresh_se"]),
    "trainOptimistic": ("training-sample IS overstates the test LL",
                        lambda r: r["ebm"]["test_ll_train_is"] > r["ebm"]["test_ll_grid"]),
    "gradAccurate": ("IS gradient within 5\\% of quadrature at the kept iterate",
                     lambda r: r["ebm"]["gradient"][-1]["rel_err_train"] < 0.05),
    "malaAgrees": ("MALA radii pass KS against exact draws ($p>0.01$)",
                   lambda r: r["ebm"]["samples"]["p_radius"] > 0.01),
    "emBig": ("EM at the large radius: mean error $<0.25$", lambda r: r["gmm"]["big"]["mean_dist"] < 0.25),
    "emSmall": ("EM at the small radius: mean error $>0.2$", lambda r: r["gmm"]["small"]["mean_dist"] > 0.2),
    "emSmallLL": ("\\quad yet test LL within $0.02$ of the truth's",
                  lambda r: abs(r["gmm"]["small"]["test_ll"] - r["gmm"]["small"]["test_ll_true"]) < 0.02),
    "kdeBeatsScott": ("the tuned KDE beats Scott's rule", lambda r: r["kde"]["test_ll"] > r["kde"]["scott_test_ll"]),
    "boundsOrdered": ("$\\mathcal L_{\\mathrm{unif}}<\\mathcal L_{\\mathrm{post}}$ at both radii", lambda r: all(
        r["vi"]["elbo"][k]["unif"] < r["vi"]["elbo"][k]["post"] for k in ("big", "small"))),
}


def run_seed(seed, quick, reuse):
    """results.json of one seed: reused if reuse holds this seed's results at the same settings."""
    args = ["--seed", str(seed)] + (["--quick"] if quick else [])
    if reuse and Path(reuse).exists():
        old = json.loads(Path(reuse).read_text())
        sys.path.insert(0, str(ROOT))
        import VI
        cfg, _ = VI.parse_args(args)
        if all(part in old and old[part].get("settings") == VI.settings_of(cfg, part) for part in VI.PARTS):
            return old
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two seeds at a time, one core each
        subprocess.run([sys.executable, str(ROOT / "VI.py"), *args, "--no-figures", "--out", out],
                       check=True, capture_output=True, cwd=ROOT, env=env)
        return json.loads((Path(out) / "results.json").read_text())


def seed_macros(runs, passes):
    """LaTeX macros (name -> text) summarising the runs, for theory.pdf."""
    col = lambda path: np.array([float(get(r, path)) for r in runs])
    f = lambda x, d=3: f"{x:.{d}f}"
    over_kde, over_se = col("ebm.ebm_minus_kde"), col("ebm.ebm_minus_kde_se")
    picks = [r["ebm"]["chosen"] for r in runs]
    common = max(set(picks), key=picks.count)
    tex = lambda name: name.replace("tau=", "$\\tau$=").replace(",", ", ")
    out = {"seedsN": str(len(runs)), "seedsClaims": str(len(passes)),
           "seedsClaimsHeld": str(sum(all(h) for h in passes.values())),
           "seedsEbmOverKdeMin": f(over_kde.min()), "seedsEbmOverKdeMax": f(over_kde.max()),
           "seedsEbmOverKdeMean": f(over_kde.mean()), "seedsEbmOverKdeSEMax": f(over_se.max()),
           "seedsEbmGapMean": f(col("ebm.oracle_minus_ebm").mean()), "seedsEbmGapMax": f(col("ebm.oracle_minus_ebm").max()),
           "seedsUninformedOverKdeMax": f(col("ebm.uninformed_minus_kde").max()),
           "seedsOptimismMean": f(col("ebm.A_grid_minus_train").mean(), 4),
           "seedsFreshGridMax": f"{np.abs(col('ebm.A_grid_minus_fresh')).max():.1e}",
           "seedsGradErrMax": f(max(r["ebm"]["gradient"][-1]["rel_err_train"] for r in runs)),
           "seedsEmBigMeanDistMax": f(col("gmm.big.mean_dist").max(), 2),
           "seedsEmSmallMeanDistMin": f(col("gmm.small.mean_dist").min(), 2),
           "seedsEmSmallLLDiffMax": f(np.abs(col("gmm.small.test_ll") - col("gmm.small.test_ll_true")).max()),
           "seedsCommonPick": tex(common), "seedsCommonPickCount": str(picks.count(common)),
           "seedsPicks": "; ".join(f"{tex(p)} on {picks.count(p)}" for p in sorted(set(picks), key=lambda p: -picks.count(p)))}
    for key, hits in passes.items():
        out[f"seedsHeld{key[0].upper()}{key[1:]}"] = str(sum(hits))
    out["seedsClaimRows"] = " ".join(f"{CLAIMS[key][0]} & {sum(hits)}\\\\" for key, hits in passes.items())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="seeds run at the same time (default 2)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reuse", help="a results.json to reuse for its seed when its settings match")
    p.add_argument("--json", help="also write the per-seed values here")
    p.add_argument("--tex", help="also write LaTeX macros of the summary here")
    p.add_argument("--strict", action="store_true", help="exit 1 if any claim fails for any seed")
    args = p.parse_args(argv)
    with ThreadPoolExecutor(args.jobs) as pool:  # threads that wait on one process each
        runs = list(pool.map(lambda s: run_seed(s, args.quick, args.reuse), range(args.seeds)))
    per_seed = [headline_values(r) for r in runs]
    passes = {key: [bool(check(r, runs[0]) if key == "chosen" else check(r)) for r in runs]
              for key, (_, check) in CLAIMS.items()}
    ok = True
    print(f"{args.seeds} seeds{' (quick settings)' if args.quick else ''}\n")
    print("| number | mean | sd | min | max |\n|---|---|---|---|---|")
    for name in per_seed[0]:
        v = np.array([s[name] for s in per_seed])
        ok &= bool(np.isfinite(v).all())
        sd = v.std(ddof=1) if len(v) > 1 else math.nan
        print(f"| {name} | {v.mean():.4f} | {sd:.4f} | {v.min():.4f} | {v.max():.4f} |")
    print("\n| seed | chosen (tau, H) | EBM - KDE (s.e.) |\n|---|---|---|")
    for s, r in enumerate(runs):
        print(f"| {s} | {r['ebm']['chosen']} | {r['ebm']['ebm_minus_kde']:.4f} ({r['ebm']['ebm_minus_kde_se']:.4f}) |")
    print("\n| claim | seeds where it holds |\n|---|---|")
    for key, hits in passes.items():
        ok &= all(hits) or not args.strict
        failed = [s for s, h in enumerate(hits) if not h]
        plain = CLAIMS[key][0].replace("\\", "")
        print(f"| {plain} | {sum(hits)}/{len(hits)}" + (f" (fails for seeds {failed})" if failed else "") + " |")
    sys.path.insert(0, str(ROOT))
    from VI import atomic_write
    if args.json:
        text = json.dumps({"per_seed": per_seed, "claims": passes,
                           "chosen": [r["ebm"]["chosen"] for r in runs]}, indent=1)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    if args.tex:
        lines = [f"% Generated by bench/seeds.py over {args.seeds} seeds; do not edit."]
        lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in seed_macros(runs, passes).items()]
        atomic_write(args.tex, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))  # never half a file
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
