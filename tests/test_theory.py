"""The built theory.pdf: its shape (answers on page 1, the main text within 12 pages, the whole
within 20), the run's numbers in its text, every macro it uses defined by a generated file, and
no broken references.

Built by `make pdf` (which CI runs before pytest). Without a PDF the tests skip locally, but
fail in CI, where a missing PDF means the build is broken.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "theory"
PDF, LOG, AUX = THEORY / "theory.pdf", THEORY / "theory.log", THEORY / "theory.aux"
GENERATED = [ROOT / "plots" / "results.tex", ROOT / "plots" / "seeds.tex", ROOT / "plots" / "twin.tex",
             ROOT / "bench" / "peers.tex"]
HEADLINES = ["emBigMeanDist", "emSmallTestLL", "emSmallTestLLTrue", "kdeSigma", "kdeTestLL",
             "ebmTestLLGrid", "ebmTestLLFreshIS", "ebmTestLLTrainIS", "oracleTestLL", "ebmMinusKde",
             "gradRelTrainEnd", "klPQ", "klQP", "viUnifBig", "viLogpBig", "viGapBig", "viExpGapSmall"]


def tex_macros(path):
    """{name: text} of the \\newcommand lines of a generated macro file."""
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}", path.read_text()))


def pdftotext(*args):
    return subprocess.run(["pdftotext", "-layout", *args, str(PDF), "-"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def built():
    if not PDF.exists() or shutil.which("pdftotext") is None:
        if os.environ.get("CI"):
            pytest.fail("theory/theory.pdf was not built (run `make pdf`)")
        pytest.skip("theory/theory.pdf not built; run `make pdf`")
    return pdftotext(), tex_macros(ROOT / "plots" / "results.tex")


def flat(text):
    return re.sub(r"\s+", "", text).replace("\u2212", "-")  # pdftotext prints a minus as U+2212


def test_the_main_text_fits_in_12_pages_and_the_whole_in_20(built):
    info = subprocess.run(["pdfinfo", str(PDF)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    main_end = int(re.search(r"\\newlabel\{mainend\}\{\{[^}]*\}\{(\d+)\}", AUX.read_text()).group(1))
    assert main_end <= 12 and pages <= 20, (main_end, pages)
    assert pages > main_end  # the appendix follows


def test_the_first_page_answers_every_problem(built):
    first = pdftotext("-f", "1", "-l", "1")
    assert "Answers at a glance" in first
    for problem in ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "2.1", "2.2", "2.3", "2.4"):
        assert problem in first, problem
    macros = tex_macros(ROOT / "plots" / "results.tex")
    for name in ("kdeTestLL", "ebmTestLLGrid", "oracleTestLL", "klPQ", "viExpGapBig"):
        assert macros[name] in flat(first), name


def test_pdf_quotes_the_headline_numbers_of_this_run(built):
    text, macros = built
    missing = [m for m in HEADLINES if macros[m].replace("\\,", "") not in flat(text)]
    assert not missing, f"numbers of results.tex not in theory.pdf: {missing}"


def test_every_macro_the_write_up_uses_is_generated():
    # a macro typed into the .tex that no generated file defines would be a number typed by hand
    # (or a LaTeX error); the generated files must exist for this check to mean anything
    if not all(path.exists() for path in GENERATED):
        if os.environ.get("CI"):
            pytest.fail("generated macro files are missing (run `make pdf`)")
        pytest.skip("generated macro files are missing; run `make pdf`")
    defined = set().union(*(tex_macros(path) for path in GENERATED))
    source = "".join(p.read_text() for p in THEORY.glob("*.tex"))
    own = set(re.findall(r"\\(?:newcommand|DeclareMathOperator\*?|renewcommand)\{\\(\w+)\}", source))
    used = set(re.findall(r"\\([a-z]+[A-Z]\w*)", source))  # camelCase: the generated macros' style
    latex_own = {"lVert", "rVert"}  # LaTeX's own camelCase commands that the write-up uses
    assert used - own - latex_own <= defined, sorted(used - own - latex_own - defined)


def test_the_recorded_flow_benchmark_was_made_on_this_run():
    # bench/peers.tex is a recorded benchmark (the flow takes minutes); it must describe the
    # current data and EBM, or it is stale and bench/peers.py must be rerun
    results = ROOT / "plots" / "results.json"
    if not results.exists():
        pytest.skip("no pipeline run in plots/")
    r, record = json.loads(results.read_text()), tex_macros(ROOT / "bench" / "peers.tex")
    if r["config"]["seed"] != 0 or r.get("quick"):
        pytest.skip("plots/ holds another configuration than the recorded one")
    assert abs(float(record["flowRecordOracleTestLL"]) - r["ebm"]["oracle_test_ll"]) < 1e-6
    assert abs(float(record["flowRecordEbmTestLL"]) - r["ebm"]["test_ll_grid"]) < 1e-6


def test_log_has_no_undefined_references_or_citations(built):
    log = LOG.read_text(errors="replace")
    assert not re.search(r"(Reference|Citation) .* undefined", log)
    assert "There were undefined references" not in log
