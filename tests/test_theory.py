"""The built theory.pdf: it exists, quotes the run's numbers, and has no broken references.

Built by `make pdf` (which CI runs before pytest). Without a PDF the tests skip locally,
but fail in CI, where a missing PDF means the build is broken.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PDF, LOG = ROOT / "theory" / "theory.pdf", ROOT / "theory" / "theory.log"
HEADLINES = ["emBigMeanDist", "emSmallTestLL", "emSmallTestLLTrue", "kdeSigma", "kdeTestLL",
             "ebmTestLLGrid", "ebmTestLLFreshIS", "ebmTestLLTrainIS", "oracleTestLL",
             "klPQ", "klQP", "viUnifBig", "viLogpBig", "viGapBig"]


def tex_macros(path):
    """{name: text} of the \\newcommand lines of a generated macro file."""
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}", path.read_text()))


@pytest.fixture(scope="module")
def built():
    if not PDF.exists() or shutil.which("pdftotext") is None:
        if os.environ.get("CI"):
            pytest.fail("theory/theory.pdf was not built (run `make pdf`)")
        pytest.skip("theory/theory.pdf not built; run `make pdf`")
    text = subprocess.run(["pdftotext", "-layout", str(PDF), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text, tex_macros(ROOT / "plots" / "results.tex")


def test_pdf_has_pages(built):
    info = subprocess.run(["pdfinfo", str(PDF)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= 5


def test_pdf_quotes_the_headline_numbers_of_this_run(built):
    text, macros = built
    flat = re.sub(r"\s+", "", text).replace("\u2212", "-")  # pdftotext prints a minus as U+2212
    missing = [m for m in HEADLINES if macros[m].replace("\\,", "") not in flat]
    assert not missing, f"numbers of results.json not in theory.pdf: {missing}"


def test_log_has_no_undefined_references_or_citations(built):
    log = LOG.read_text(errors="replace")
    assert not re.search(r"(Reference|Citation) .* undefined", log)
    assert "There were undefined references" not in log
