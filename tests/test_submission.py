"""The hand-in zip: exactly theory.pdf and a VI.py that runs alone and reproduces the repo."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import FIGURES, ROOT

BUNDLE = ROOT / "tools" / "bundle.py"


def bundle(*args):
    return subprocess.run([sys.executable, str(BUNDLE), *args], capture_output=True, text=True)


def alone():
    """The environment of a run that must not see the repository: no PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def vi_only(folder):
    """python tools/bundle.py --vi-only folder/OUT.py, in a folder that then holds only it."""
    out = folder / "OUT.py"
    proc = bundle("--vi-only", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in folder.iterdir()] == ["OUT.py"]  # none of the repository's modules
    return out


def same_bytes(a, b):
    """Whether files a and b are equal, as a bool (a failing `==` of two long texts would make
    pytest diff them for minutes), with the first differing line for the message."""
    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        return True, ""
    la, lb = x.splitlines(), y.splitlines()
    i = next((i for i, (u, v) in enumerate(zip(la, lb)) if u != v), min(len(la), len(lb)))
    return False, f"{a} and {b} differ from line {i + 1}: {la[i : i + 1]} vs {lb[i : i + 1]}"


def test_zip_holds_exactly_the_two_files(zip_path):
    assert sorted(zipfile.ZipFile(zip_path).namelist()) == ["VI.py", "theory.pdf"]


def test_the_zips_vi_is_the_bundle_of_the_repository(zip_path, tmp_path):
    assert zipfile.ZipFile(zip_path).read("VI.py") == vi_only(tmp_path).read_bytes()


def test_the_zips_vi_alone_under_dev_mode_writes_every_figure_and_the_repositorys_results(
    processes,
):
    """The zip's VI.py in a folder of its own, under -X dev -W error (a warning of the bundle,
    or of what it runs, is an error), figures included (conftest's "hand-in" run); results.json
    does not depend on them, so the repository's run without figures ("no fork") is the
    reference. results.tex is written only if `from theory import macros` works: it proves
    theory.macros is embedded."""
    proc, out = processes["hand-in"]
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (out.parent / "hand-in").iterdir()] == ["VI.py"]  # nothing beside it
    for name in FIGURES:
        assert (out / f"{name}.pdf").exists() and (out / f"{name}.png").exists(), name
    for name in ("results.json", "results.tex"):
        same, why = same_bytes(out / name, processes["no fork"][1] / name)
        assert same, why


FAIL_IN_EBM = """
import json, runpy, sys, traceback
runpy.run_path("OUT.py", run_name="bundled")  # not __main__: defines everything, runs nothing
try:
    sys.modules["ebm"].log_partition(None, None)  # fails inside ebm: None has no .x
except Exception:
    frame = traceback.extract_tb(sys.exc_info()[2])[-1]
    print(json.dumps(dict(text=traceback.format_exc(), file=frame.filename, line=frame.lineno)))
"""


def test_a_failure_in_an_embedded_module_shows_its_source_line(tmp_path):
    vi_only(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_IN_EBM],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=alone(),
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    failure = json.loads(proc.stdout.splitlines()[-1])
    assert failure["file"] == "<bundled ebm.py>", failure["text"]
    # the bundle carries ebm.py verbatim, so its line numbers are ebm.py's own
    line = (ROOT / "ebm.py").read_text(encoding="utf-8").splitlines()[failure["line"] - 1].strip()
    assert "sample.x" in line, line  # the line that failed is the one that reads None.x
    shown = f'File "<bundled ebm.py>", line {failure["line"]}, in log_partition\n    {line}\n'
    assert shown in failure["text"], failure["text"]


@pytest.mark.parametrize("netid", ["", "ab-12", "../x", "ab 12"])
def test_a_bad_netid_is_refused_and_nothing_is_written(tmp_path, netid):
    proc = bundle("--netid", netid, "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "netid" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_submission_refuses_a_missing_netid_before_building():
    before = sorted(p.name for p in ROOT.iterdir())
    proc = subprocess.run(
        ["make", "submission", "NETID="], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode != 0 and "netid" in proc.stderr
    assert "latexmk" not in proc.stdout and "VI.py" not in proc.stdout  # nothing was built
    assert sorted(p.name for p in ROOT.iterdir()) == before
