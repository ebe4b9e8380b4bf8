import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import VI  # noqa: E402,F401  (first: it pins the numerical libraries before numpy and torch load)

# isort: split
import pytest  # noqa: E402

FIGURES = [
    "em",
    "kde",
    "ebm_training",
    "ebm_density",
    "ebm_selection",
    "ebm_samples",
    "kl",
    "elbo_points",
    "elbo_K",
    "iwae",
]


def run_vi(*args, script=ROOT / "VI.py", cwd=ROOT, env=None):
    """python VI.py in a process of its own: for the tests where the process is the point."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=env,
    )


def main(*args):
    """VI.main in this process: (exit status, stderr). argparse refusals raise SystemExit."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = VI.main(list(map(str, args)))
        except SystemExit as e:
            status = e.code
    return status, err.getvalue()


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """One `python VI.py --quick` run (figures included), shared by every test that only
    reads its outputs."""
    out = tmp_path_factory.mktemp("quick")
    status, err = main("--quick", "--out", out)
    assert status == 0, err
    return out
