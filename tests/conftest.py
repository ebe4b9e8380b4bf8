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


NO_FORK = (  # a platform without fork (Windows), simulated
    "import os, runpy, sys; del os.fork; sys.argv[0] = 'VI.py'; "
    "runpy.run_path('VI.py', run_name='__main__')"
)
DEV = ["-X", "dev", "-W", "error"]  # any warning is an error


def make_zip(folder):
    """The hand-in zip as `make submission` writes it, into folder, with a stand-in PDF (the
    zip's content is tested, not the PDF's)."""
    import subprocess

    pdf = folder / "stand-in.pdf"
    pdf.write_bytes(b"%PDF-1.4 stand-in")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bundle.py"), "--netid", "ab1234", "--pdf",
         str(pdf), "--out-dir", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return folder / "ab1234.zip"


def start_processes(base):
    """python VI.py as a user runs it, two processes started at once, in an environment
    without the pins (as a user's shell has it), both under -X dev -W error. {name: (process,
    its --out folder)}:
    - "no fork": the repository's VI.py --quick --no-figures with fork removed, so that one
      process does all the work, with MKL restricted to the AVX2 kernels another CPU would get
      (a choice the pins do not name), writing to a pipe whose reader has gone (as
      `python VI.py | true`; not on Windows, whose pipes report it in another way);
    - "hand-in": the zip's VI.py --quick alone in a folder, figures drawn, by two forked
      workers."""
    import subprocess
    import zipfile

    pinned = set(pins.PINS) | set(pins.THREADS) | {"MKL_ENABLE_INSTRUCTIONS"}
    clean = {k: v for k, v in os.environ.items() if k not in pinned and k != "PYTHONPATH"}
    alone = base / "hand-in"
    alone.mkdir()
    zipfile.ZipFile(make_zip(base)).extract("VI.py", alone)
    runs = {
        "no fork": ([*DEV, "-c", NO_FORK, "--quick", "--no-figures", "--workers", "2"], ROOT,
                    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
        "hand-in": ([*DEV, "VI.py", "--quick", "--workers", "2"], alone, {}),
    }
    started = {}
    for name, (args, cwd, env) in runs.items():
        out = base / f"{name.replace(' ', '_')}_out"
        started[name] = (subprocess.Popen(
            [sys.executable, *args, "--out", str(out)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=cwd, env={**clean, **env}), out)
    if sys.platform != "win32":
        started["no fork"][0].stdout.close()  # before its first line
    return started


STARTED = pytest.StashKey[dict]()


def pytest_collection_modifyitems(items):
    """The tests that wait for `processes` run last, when the runs have had the most time."""
    items.sort(key=lambda item: "processes" in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session):
    """Start the runs of `processes` now if a collected test needs them: they work on the
    other core while the tests in this process run."""
    import tempfile

    if any("processes" in getattr(item, "fixturenames", ()) for item in session.items):
        base = Path(tempfile.mkdtemp(prefix="vi-processes-"))
        session.config.stash[STARTED] = (base, start_processes(base))


def pytest_sessionfinish(session):
    """Nothing left running or on disk, however the session ended."""
    import shutil

    base, started = session.config.stash.get(STARTED, (None, {}))
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def zip_path(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp("zip"))


@pytest.fixture(scope="session")
def processes(request):
    """The runs of start_processes, finished: {name: (completed process, its --out folder)}."""
    import subprocess

    _, started = request.config.stash[STARTED]
    done = {}
    for name, (proc, out) in started.items():
        stdout, err = proc.communicate(timeout=600)
        done[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, err), out)
    return done


def results_bytes(run):
    """results.json of a (process, folder) of `processes`, b"" if the run failed."""
    proc, out = run
    return (out / "results.json").read_bytes() if proc.returncode == 0 else b""
