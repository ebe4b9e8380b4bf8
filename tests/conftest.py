import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

import pytest  # noqa: E402

from tools import pins  # noqa: E402

# One thread per library, as python VI.py has (pin_numerics): set before numpy and torch load,
# else each small matrix product of an in-process run wakes a pool of threads that spin.
os.environ.update(pins.THREADS)

import VI  # noqa: E402

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
def pipeline():
    """One run of every problem at the quick settings, in this process: (cfg, results, made),
    shared by every test that needs a trained model or its numbers."""
    cfg, _ = VI.parse_args(["--quick"])
    results, made = VI.run(cfg, 1, {}, say=lambda _: None)
    results["quick"] = True
    return cfg, results, made


@pytest.fixture(scope="session")
def quick(pipeline, tmp_path_factory):
    """That run's outputs, written as `python VI.py --quick` writes them (figures included)."""
    out = tmp_path_factory.mktemp("quick")
    VI.publish(str(out), *pipeline, {}, say=lambda _: None)
    return out


ARGS = ["--quick", "--no-figures"]
NO_FORK = (  # a platform without fork (Windows), simulated
    "import os, runpy, sys; del os.fork; sys.argv[0] = 'VI.py'; "
    "runpy.run_path('VI.py', run_name='__main__')"
)
PROCESSES = {  # name: (arguments of python, environment changes)
    # two forked workers, and any warning is an error
    "dev": (["-X", "dev", "-W", "error", "VI.py", *ARGS, "--workers", "2"], {}),
    # fork removed, so one process does all the work, and MKL restricted to the AVX2 kernels
    # another CPU would get (a choice the pins do not name)
    "no fork": (["-c", NO_FORK, *ARGS, "--workers", "2"], {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    # without the pins: each library's own kernels
    "native": (["VI.py", *ARGS, "--native-numerics"], {}),
}


@pytest.fixture(scope="session")
def processes(tmp_path_factory):
    """python VI.py as a user runs it, each in a process of its own, two at a time, in an
    environment without the pins (as a user's shell has it). {name: (process, its --out folder)}"""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("processes")
    pinned = set(pins.PINS) | set(pins.THREADS) | {"MKL_ENABLE_INSTRUCTIONS"}
    clean = {k: v for k, v in os.environ.items() if k not in pinned}

    def one(name):
        args, env = PROCESSES[name]
        out = base / name.replace(" ", "_")
        proc = subprocess.run(
            [sys.executable, *args, "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**clean, **env},
        )
        return proc, out

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(PROCESSES, pool.map(one, PROCESSES), strict=True))


def results_bytes(run):
    """results.json of a (process, folder) of `processes`, b"" if the run failed."""
    proc, out = run
    return (out / "results.json").read_bytes() if proc.returncode == 0 else b""
