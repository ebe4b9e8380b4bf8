"""python VI.py as a user runs it, called in this process: outputs, partial runs, random
streams, and refusal of bad input."""
import json
import shutil

import numpy as np
import pytest
from conftest import FIGURES, ROOT, main

import VI


def test_quick_run_writes_every_promised_file(quick):
    for name in FIGURES:
        for ext in ("pdf", "png"):
            assert (quick / f"{name}.{ext}").stat().st_size > 1000, name
    for name in ("results.json", "results.tex", "timings.json", "data.npz", "ebm_energy.pt"):
        assert (quick / name).exists(), name
    assert not [p for p in quick.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_every_macro_of_the_table_is_written_once(quick):
    results = json.loads((quick / "results.json").read_text())
    assert {"gmm", "kde", "ebm", "vi", "config"} <= results.keys()
    lines = (quick / "results.tex").read_text().splitlines()[1:]
    names = [line.split("}")[0].removeprefix("\\newcommand{\\") for line in lines]
    assert len(names) == len(set(names))
    assert set(VI.MACROS) | set(VI.STATEMENTS) <= set(names)  # a full run fills every entry


def test_saved_data_and_energy_reproduce_the_reported_likelihood(quick):
    import torch

    import ebm
    results = json.loads((quick / "results.json").read_text())
    data = np.load(quick / "data.npz")
    energy = ebm.load_energy(quick / "ebm_energy.pt")
    cfg = results["config"]
    a = ebm.log_partition_grid(energy, cfg["grid_half_width"], cfg["grid_step"])
    with torch.no_grad():
        e = float(energy(torch.as_tensor(data["test"], dtype=torch.float32)).double().mean())
    assert abs((e - a) - results["ebm"]["test_ll_grid"]) < 1e-9


def test_no_figures_writes_the_numbers_only(tmp_path):
    status, err = main("--quick", "--parts", "gmm", "--no-figures", "--out", tmp_path)
    assert status == 0, err
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "results.json").exists()


def test_a_subset_of_parts_keeps_the_other_results(quick, tmp_path):
    for name in ("results.json", "timings.json"):
        shutil.copy(quick / name, tmp_path / name)
    status, err = main("--quick", "--parts", "kde", "--out", tmp_path)
    assert status == 0, err
    new, old = (json.loads((d / "results.json").read_text()) for d in (tmp_path, quick))
    assert new.pop("config")["parts"] == "kde" and old.pop("config")
    assert new == old  # the KDE is deterministic, and the other parts were kept as they were
    assert (tmp_path / "kde.pdf").exists() and not (tmp_path / "ebm_training.pdf").exists()


def test_a_merge_that_would_mix_settings_is_refused(quick, tmp_path):
    shutil.copy(quick / "results.json", tmp_path / "results.json")
    before = (tmp_path / "results.json").read_text()
    # every part depends on n: rerunning only the KDE with another n would mix two data sets
    status, err = main("--quick", "--parts", "kde", "--n", "150", "--out", tmp_path)
    assert status == 2 and "'gmm'" in err and "n=200" in err and err.count("\n") == 1
    # the EBM's figure and comparison use the KDE: a KDE with another grid cannot stay beside it
    status, err = main("--quick", "--parts", "kde", "--sigma-num", "9", "--out", tmp_path)
    assert status == 2 and "'ebm'" in err and "sigma_num" in err
    assert (tmp_path / "results.json").read_text() == before and len(list(tmp_path.iterdir())) == 1
    # rerunning every part that depends on the changed setting is fine
    status, err = main("--quick", "--parts", "kde,ebm", "--sigma-num", "9", "--no-figures", "--out", tmp_path)
    assert status == 0, err
    assert json.loads((tmp_path / "results.json").read_text())["ebm"]["settings"]["sigma_num"] == 9


def test_the_ebm_alone_needs_a_kde_result(tmp_path):
    status, err = main("--quick", "--parts", "ebm", "--out", tmp_path / "new")
    assert status == 2 and "add kde to --parts" in err and not (tmp_path / "new").exists()


def test_streams_are_keyed_by_name():
    a, b = VI.stream(3, "train").normal(size=5), VI.stream(3, "train").normal(size=5)
    assert np.array_equal(a, b) and not np.array_equal(a, VI.stream(3, "val").normal(size=5))
    assert not np.array_equal(a, VI.stream(4, "train").normal(size=5))
    # changing one size (the proposal's M) leaves every other draw as it was
    small, large = VI.make_data(VI.Config(M=100)), VI.make_data(VI.Config(M=200))
    for key in small:
        if key != "proposal":
            assert np.array_equal(small[key], large[key]), key


def test_list_settings_parse_from_the_command_line(tmp_path):
    cfg, _ = VI.parse_args(["--ebm-taus", "1,2.5", "--ebm-widths", "4,8"])
    assert cfg.ebm_taus == (1.0, 2.5) and cfg.ebm_widths == (4, 8)
    status, err = main("--ebm-widths", "4,x", "--out", tmp_path / "never")
    assert status == 2 and "comma-separated int" in err


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], "n must be positive"), (["--K", "0"], "K must be at least 1"),
    (["--R", "-1"], "non-negative"), (["--M", "0"], "must be positive"),
    (["--sigma-num", "0"], "sigma grid is empty"), (["--sigma-min", "-1"], "sigma grid"),
    (["--parts", "gmm,nope"], "unknown part 'nope'"), (["--n", "abc"], "invalid int value"),
    (["--ebm-taus", "1,-2"], "positive confinement"), (["--ebm-rungs", "50,20"], "increasing"),
    (["--kl-q", "0"], "kl_q is (mean, sd)"),
])
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, args, words):
    out = tmp_path / "never"
    status, err = main(*args, "--out", out)
    assert status == 2
    assert words in err and err.strip().count("\n") == 0
    assert not out.exists()


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, err = main("--quick", "--out", blocker / "sub")
    assert status == 2 and err.startswith("VI.py: error:") and err.count("\n") == 1


def test_the_exact_gradient_twin_starts_from_the_pipelines_model(quick, tmp_path):
    # bench/twin.py first retrains the importance-sampled model from the named streams alone and
    # must land on the pipeline's test LL to the last digit (initialisation, data and resumable
    # training all reproduce), then trains the same network with the quadrature gradient
    import importlib.util
    spec = importlib.util.spec_from_file_location("twin", ROOT / "bench" / "twin.py")
    twin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twin)
    status = twin.main(["--results", str(quick / "results.json"), "--json", str(tmp_path / "twin.json")])
    record = json.loads((tmp_path / "twin.json").read_text())
    assert status == 0 and record["is_reproduced"] == 0.0
    assert np.isfinite(record["exact_test_ll"]) and record["exact_iterations"] > 0
