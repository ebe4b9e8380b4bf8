"""python VI.py as a user runs it: outputs, determinism, and refusal of bad input."""
import json

import numpy as np
import pytest
from conftest import FIGURES, run_vi as run


def test_quick_run_writes_every_promised_file(quick):
    for name in FIGURES:
        for ext in ("pdf", "png"):
            assert (quick / f"{name}.{ext}").stat().st_size > 1000, name
    for name in ("results.json", "results.tex", "timings.json", "data.npz", "ebm_energy.pt"):
        assert (quick / name).exists(), name
    assert not [p for p in quick.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_results_hold_every_part_and_every_macro_is_defined_once(quick):
    results = json.loads((quick / "results.json").read_text())
    assert {"gmm", "kde", "ebm", "vi", "config", "macros"} <= results.keys()
    tex = (quick / "results.tex").read_text().splitlines()[1:]
    names = [line.split("}")[0].removeprefix("\\newcommand{\\") for line in tex]
    assert len(names) == len(set(names)) and set(results["macros"]) <= set(names)


def test_saved_data_and_energy_reproduce_the_reported_likelihood(quick):
    import torch

    import ebm
    results = json.loads((quick / "results.json").read_text())["ebm"]
    data = np.load(quick / "data.npz")
    energy = ebm.load_energy(quick / "ebm_energy.pt")
    cfg = json.loads((quick / "results.json").read_text())["config"]
    a = ebm.log_partition_grid(energy, cfg["grid_half_width"], cfg["grid_step"])
    with torch.no_grad():
        e = float(energy(torch.as_tensor(data["test"], dtype=torch.float32)).double().mean())
    assert abs((e - a) - results["test_ll_grid"]) < 1e-9


def test_same_seed_gives_the_same_results(quick, tmp_path):
    proc = run("--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.json").read_text() == (quick / "results.json").read_text()


def test_a_subset_of_parts_keeps_the_other_results(quick, tmp_path):
    for name in ("results.json",):
        (tmp_path / name).write_text((quick / name).read_text())
    proc = run("--quick", "--parts", "kde", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    new, old = (json.loads((d / "results.json").read_text()) for d in (tmp_path, quick))
    assert new.pop("config")["parts"] == "kde" and old.pop("config")
    assert new == old
    assert (tmp_path / "kde_sigma.pdf").exists() and not (tmp_path / "ebm_training.pdf").exists()


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], "n must be positive"), (["--K", "0"], "K must be at least 1"),
    (["--R", "-1"], "non-negative"), (["--M", "0"], "must be positive"),
    (["--sigma-num", "0"], "sigma grid is empty"), (["--sigma-min", "-1"], "sigma grid"),
    (["--parts", "gmm,nope"], "unknown part 'nope'"), (["--n", "abc"], "invalid int value"),
])
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, args, words):
    out = tmp_path / "never"
    proc = run(*args, "--out", str(out))
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.strip().count("\n") <= 1
    assert not out.exists()


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run("--quick", "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "VI.py: error:" in proc.stderr and proc.stderr.count("\n") == 1
