"""The project's speed targets, measured as a user meets them: whole processes, several runs,
the median. Never asserted in tests: the machines are shared and noisy.

    python bench/timing.py [--runs 5] [--test-runs 3] [--pdf-runs 1] [--skip pytest,pdf]

| measure | target |
|---|---|
| `python VI.py`, whole process, wall | 20 s |
| of which drawing and saving figures (timings.json) | 4 s |
| `python VI.py --native-numerics` (each library's own kernels): what pinning them costs | - |
| `python -m pytest -q`, wall | 40 s |
| `make pdf` from scratch, in a fresh copy of the tracked files | 4 min |
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd, cwd, env=None):
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(
            f"timing.py: {' '.join(map(str, cmd))} failed:\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return time.perf_counter() - t


def pipeline(runs, extra=()):
    """Wall times of python VI.py and the figure stage's time from each run's timings.json."""
    walls, figures = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            walls.append(wall([sys.executable, "VI.py", "--out", out, *extra], ROOT))
            figures.append(
                json.loads((Path(out) / "timings.json").read_text(encoding="utf-8"))["figures"]
            )
    return walls, figures


def fresh_copy(folder):
    """The tracked files of the repository (as they are in the working tree) copied to folder."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)


def row(name, times, target):
    med = statistics.median(times)
    shown = ", ".join(f"{t:.1f}" for t in times)
    verdict = "" if target == "-" else "met" if med <= float(target.split()[0]) else "MISSED"
    return f"| {name} | {med:.1f} s | {shown} | {target} | {verdict} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs of python VI.py (each variant)")
    p.add_argument("--test-runs", type=int, default=3)
    p.add_argument("--pdf-runs", type=int, default=1)
    p.add_argument("--skip", default="", help="comma-separated: pytest, pdf")
    args = p.parse_args(argv)
    skip = set(args.skip.split(","))
    print(
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; "
        f"median of the runs listed\n"
    )
    print("| measure | median | runs | target | |\n|---|---|---|---|---|", flush=True)
    walls, figures = pipeline(args.runs)
    print(
        row("`python VI.py`, whole process", walls, "20 s"),
        row("  of which figures", figures, "4 s"),
        sep="\n",
        flush=True,
    )
    native, _ = pipeline(args.runs, ["--native-numerics"])
    print(row("`python VI.py --native-numerics`", native, "-"), flush=True)
    print(
        f"|   pinned / native | {statistics.median(walls) / statistics.median(native):.2f} | | | |",
        flush=True,
    )
    if "pytest" not in skip:
        times = [
            wall([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], ROOT)
            for _ in range(args.test_runs)
        ]
        print(row("`python -m pytest -q`", times, "40 s"), flush=True)
    if "pdf" not in skip:
        times = []
        for _ in range(args.pdf_runs):
            with tempfile.TemporaryDirectory() as tmp:
                fresh_copy(Path(tmp))
                times.append(wall(["make", "pdf"], tmp, env={**os.environ, "PY": sys.executable}))
        print(row("`make pdf` from scratch", times, "240 s"), flush=True)


if __name__ == "__main__":
    main()
