"""python VI.py as a user runs it: its outputs, its random streams, its independence from the
number of worker processes and from fork, a run clean of warnings, and its refusal of bad input."""

import json
import subprocess
import sys
from dataclasses import fields, replace

import numpy as np
import pytest
from conftest import FIGURES, ROOT, main, results_bytes

import VI
from theory import macros
from tools import cli


def test_quick_run_writes_every_promised_file(quick):
    for name in FIGURES:
        for ext in ("pdf", "png"):
            assert (quick / f"{name}.{ext}").stat().st_size > 1000, name
    for name in (
        "results.json",
        "results.tex",
        "timings.json",
        "data.npz",
        "log_densities.npz",
        "ebm_energy.pt",
    ):
        assert (quick / name).exists(), name
    assert not [p for p in quick.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_every_number_of_the_write_up_is_written_once(quick):
    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    lines = (quick / "results.tex").read_text(encoding="utf-8").splitlines()[1:]
    names = [line.split("}")[0].removeprefix("\\newcommand{\\") for line in lines]
    assert len(names) == len(set(names)) and set(macros.macros_of(results)) <= set(names)


def test_a_result_the_write_up_needs_cannot_silently_go_missing(quick):
    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    del results["kde"]["sigma"]
    with pytest.raises(KeyError, match="kdeSigma"):
        macros.macros_of(results)


def test_saved_data_and_energy_reproduce_the_reported_likelihood(quick):
    import torch

    import ebm

    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    energy, reported = (
        ebm.load_energy(quick / "ebm_energy.pt"),
        results["ebm"]["truth"]["restarts"][0],
    )
    a = ebm.log_partition_grid(
        energy, half_width=reported["half_width"], step=results["config"]["grid_step"]
    )
    with torch.no_grad():
        e = energy(
            torch.as_tensor(np.load(quick / "data.npz")["test"], dtype=torch.float32)
        ).double()
    assert a == reported["A"] and abs(float(e.mean()) - a - reported["test_ll"]) < 1e-12
    per_point = np.load(quick / "log_densities.npz")["ebm"][0]
    assert np.array_equal(per_point, e.numpy() - a)


def test_every_reported_model_has_a_quadrature_box_with_its_outside_mass_measured(quick):
    # every A quoted by quadrature comes with the mass outside its box, measured: at most 1e-6
    for path in (quick / "results.json", ROOT / "plots" / "results.json"):
        if path.exists():
            assert macros.max_mass_outside(json.loads(path.read_text(encoding="utf-8"))) <= 1e-6, (
                path
            )


def test_no_figures_writes_the_numbers_only(pipeline, tmp_path):
    VI.publish(str(tmp_path), *pipeline, {}, with_figures=False, say=lambda _: None)
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "results.json").exists()


@pytest.mark.parametrize("name", ["no fork", "hand-in"])
def test_a_run_as_a_user_runs_it_exits_cleanly(processes, name):
    proc, _ = processes[name]
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-3000:]


@pytest.mark.skipif(sys.platform == "win32", reason="a closed reader is another error there")
def test_a_reader_that_stops_reading_does_not_stop_the_run(processes):
    # the "no fork" run's output is read for one line only, as `python VI.py | head -1` does
    proc, out = processes["no fork"]
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-3000:]
    assert (out / "results.json").is_file()


def test_neither_the_workers_nor_fork_change_a_single_byte(processes):
    # every model is trained by one single-threaded process, whichever process that is: the
    # hand-in's two forked workers against one process without fork
    assert results_bytes(processes["no fork"]) == results_bytes(processes["hand-in"]) != b""


SIZES = ("n", "M", "M_val", "M_fresh", "grad_samples")


@pytest.mark.parametrize("size", SIZES)
def test_changing_one_size_changes_no_other_streams_draws(size):
    # each random use draws from its own stream, keyed by its name; the proposal fitted to the
    # training split changes with n by design (through its mean and covariance, not its draws)
    cfg = replace(VI.Config(), n=300, M=400, M_val=500, M_fresh=600, grad_samples=3)
    base, changed = VI.make_data(cfg), VI.make_data(replace(cfg, **{size: getattr(cfg, size) + 7}))
    uses = {
        "n": (
            "train",
            "val",
            "test",
            "train_small",
            "test_small",
            "fitted_proposal",
            "fitted_val_proposal",
        ),
        "M": ("proposal", "probes", "fitted_proposal"),
        "M_val": ("val_proposal", "fitted_val_proposal"),
        "M_fresh": ("fresh_proposal",),
        "grad_samples": ("probes",),
    }
    assert set(base) == set(changed)
    for key in base:
        if key not in uses[size]:
            assert np.array_equal(base[key], changed[key]), key
    assert any(
        base[k].shape != changed[k].shape for k in uses[size]
    )  # the size did change its own draws


def test_streams_are_keyed_by_name():
    a, b = VI.stream(3, "train").normal(size=5), VI.stream(3, "train").normal(size=5)
    assert np.array_equal(a, b) and not np.array_equal(a, VI.stream(3, "val").normal(size=5))
    assert not np.array_equal(a, VI.stream(4, "train").normal(size=5))


def test_list_settings_parse_from_the_command_line(tmp_path):
    cfg, _ = VI.parse_args(["--ebm-taus", "1,2.5", "--ebm-widths", "4,8"])
    assert cfg.ebm_taus == (1.0, 2.5) and cfg.ebm_widths == (4, 8)
    status, err = main("--ebm-widths", "4,x", "--out", tmp_path / "never")
    assert status == 2 and "comma-separated int" in err


OPTIONS = [cli.option(f.name) for f in fields(VI.Config)] + ["--workers"]


@pytest.mark.parametrize("value", ["", "0", "-1", "abc"])
def test_every_option_refuses_a_bad_value_in_one_line_before_anything_is_written(tmp_path, value):
    # for every option an empty, a zero, a negative and a non-numeric value: either the
    # configuration is valid, or the run ends with exit status 2, one line naming the option,
    # and nothing written; never a traceback
    for opt in OPTIONS:
        out = tmp_path / f"never{opt}"
        try:
            cfg, _ = VI.parse_args([opt, value])
            VI.check(cfg)
            continue  # a valid value (the seed 0, a radius 0, a negative mean ...)
        except (ValueError, SystemExit):
            pass
        status, err = main(opt, value, "--out", out)
        assert status == 2 and err.strip().count("\n") == 0 and err.startswith("VI.py: error:"), (
            opt,
            value,
            err,
        )
        assert opt in err or opt.lstrip("-").replace("-", "_") in err or "argument" in err, (
            opt,
            err,
        )
        assert not out.exists(), opt


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    status, err = main("--quick", "--out", blocker / "sub")
    assert status == 2 and err.startswith("VI.py: error:") and err.count("\n") == 1


def test_a_worker_that_raises_stop_iteration_fails_the_map_and_loses_no_result():
    # Pool.map takes a StopIteration from a job for the end of its results: [0, None, 2]
    from tools import processes

    if not processes.can_fork():
        pytest.skip("no fork here, or this process has threads")

    def job(i):
        if i == 1:
            raise StopIteration("job 1")
        return i

    with pytest.raises(RuntimeError, match="StopIteration"):
        processes.fork_map(job, [0, 1, 2], 2)


def test_a_bad_matplotlib_backend_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    # MPLBACKEND is read when matplotlib loads: loaded afresh here (the original comes back)
    monkeypatch.setenv("MPLBACKEND", "nonsense")
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    status, err = main("--quick", "--out", tmp_path / "never")
    assert status == 2 and err.count("\n") == 1 and err.startswith("VI.py: error:"), err
    assert "MPLBACKEND" in err and "nonsense" in err and not (tmp_path / "never").exists()


def python39():
    """A Python 3.9 interpreter if this machine has one (on PATH or under pyenv), else None."""
    import glob
    import os
    import shutil

    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which("python3.9"), *glob.glob(f"{root}/versions/3.9*/bin/python")]
    for exe in filter(None, candidates):
        try:
            probe = subprocess.run(
                [exe, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if probe.stdout.strip() == "(3, 9)":
            return exe
    return None


@pytest.mark.skipif(python39() is None, reason="no Python 3.9 interpreter here")
def test_an_old_python_is_refused_in_one_line_before_anything_is_imported(tmp_path):
    proc = subprocess.run(
        [python39(), str(ROOT / "VI.py"), "--out", str(tmp_path / "never")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "3.10" in proc.stderr
    assert not (tmp_path / "never").exists()
