import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIGURES = ["gmm_data", "em_history", "kde_sigma", "kde_density", "ebm_training", "ebm_density",
           "kl_asymmetry", "kl_fits", "elbo_points", "elbo_K", "iwae"]


def run_vi(*args, script=ROOT / "VI.py", cwd=ROOT):
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """One `python VI.py --quick` run of the repository, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("quick")
    proc = run_vi("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out
