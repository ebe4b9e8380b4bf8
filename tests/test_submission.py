"""The hand-in zip: exactly theory.pdf and a VI.py that runs alone and reproduces the repo."""

import subprocess
import sys
import zipfile

import pytest
from conftest import FIGURES, ROOT, run_vi

BUNDLE = ROOT / "tools" / "bundle.py"


def bundle(*args):
    return subprocess.run([sys.executable, str(BUNDLE), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zip")
    pdf = folder / "stand-in.pdf"
    pdf.write_bytes(b"%PDF-1.4 stand-in")  # the zip's content is tested, not the PDF's
    proc = bundle("--netid", "ab1234", "--pdf", str(pdf), "--out-dir", str(folder))
    assert proc.returncode == 0, proc.stderr
    return folder / "ab1234.zip"


def test_zip_holds_exactly_the_two_files(zip_path):
    assert sorted(zipfile.ZipFile(zip_path).namelist()) == ["VI.py", "theory.pdf"]


def test_bundled_vi_runs_alone_and_reproduces_the_repository(zip_path, quick, tmp_path):
    zipfile.ZipFile(zip_path).extract("VI.py", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["VI.py"]
    proc = run_vi("--quick", script=tmp_path / "VI.py", cwd=tmp_path)  # default out: ./plots
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "plots"
    for name in FIGURES:
        assert (out / f"{name}.pdf").exists() and (out / f"{name}.png").exists(), name
    assert (out / "results.json").read_text() == (quick / "results.json").read_text()


@pytest.mark.parametrize("netid", ["", "ab-12", "../x", "ab 12"])
def test_a_bad_netid_is_refused_and_nothing_is_written(tmp_path, netid):
    proc = bundle("--netid", netid, "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "netid" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    subprocess.run(["which", "make"], capture_output=True).returncode != 0,
    reason="make is not installed",
)
def test_make_submission_refuses_a_missing_netid_before_building():
    before = sorted(p.name for p in ROOT.iterdir())
    proc = subprocess.run(
        ["make", "submission", "NETID="], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode != 0 and "netid" in proc.stderr
    assert "latexmk" not in proc.stdout and "VI.py" not in proc.stdout  # nothing was built
    assert sorted(p.name for p in ROOT.iterdir()) == before
