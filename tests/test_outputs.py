"""A run replaces its outputs whole or not at all. Each test starts from a folder holding a
previous run's files, makes the run fail in one way (a figure that raises, Ctrl-C during the
figures, a full disk, a second run), and requires one line on stderr, a non-zero exit status
and every file of the folder byte-identical, with nothing added (no staging folder, no lock)."""

import errno
import os
import signal

import pytest
from conftest import main

import VI
from theory import figures
from tools import outputs


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in folder.rglob("*")}


@pytest.fixture
def previous(quick, tmp_path, monkeypatch, pipeline):
    """A folder with a previous run's outputs; VI.run answers with the shared pipeline's run,
    so that each test exercises what follows the numbers: figures, files, moving them in."""
    for f in quick.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    _, results, made = pipeline
    monkeypatch.setattr(VI, "run", lambda cfg, workers, seconds, say: (results, made))
    return tmp_path, snapshot(tmp_path)


def fails_in_one_line(status, err, code):
    return status == code and err.count("\n") == 1 and err.startswith("VI.py: ")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_figure_that_raises_ends_the_run_and_leaves_the_previous_files(previous, monkeypatch,
                                                                        workers):
    # StopIteration is the worst case: a process pool's map took it for the end of its results
    out, before = previous

    def broken(*args):
        raise StopIteration("a figure with a bug")
    monkeypatch.setattr(figures, "draw_kde", broken)
    status, err = main("--quick", "--workers", workers, "--out", out)
    assert fails_in_one_line(status, err, 1) and "figures failed" in err, err
    assert snapshot(out) == before


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="no SIGINT")
def test_ctrl_c_during_the_figures_leaves_the_previous_files(previous, monkeypatch):
    out, before = previous
    draw = figures.draw_kl

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C reaches this process
        return draw(*args)
    monkeypatch.setattr(figures, "draw_kl", interrupted)
    # Python's own handler, as a foreground process has it: a background job (pytest &) starts
    # with SIGINT ignored, and Python keeps that
    default = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status, err = main("--quick", "--workers", "1", "--out", out)
    finally:
        signal.signal(signal.SIGINT, default)
    assert fails_in_one_line(status, err, 130) and "interrupted" in err, err
    assert snapshot(out) == before


def test_a_full_disk_while_writing_leaves_the_previous_files(previous, monkeypatch):
    out, before = previous

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(outputs, "write_text", full)
    status, err = main("--quick", "--no-figures", "--workers", "1", "--out", out)
    assert fails_in_one_line(status, err, 1) and "writing the files failed" in err, err
    assert snapshot(out) == before


def test_a_move_that_fails_half_way_puts_every_previous_file_back(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "out" / ".staging-x"
    staging.mkdir(parents=True)
    names = ["a", "b", "c"]
    for n in names:
        (out / n).write_text("old " + n, encoding="utf-8")
        (staging / n).write_text("new " + n, encoding="utf-8")
    replace, calls = os.replace, []

    def fails_third(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # a, b moved in; c set aside, then its move in fails
            raise PermissionError(errno.EACCES, "made read-only", str(dst))
        return replace(src, dst)
    monkeypatch.setattr(outputs.os, "replace", fails_third)
    with pytest.raises(PermissionError):
        outputs.move_in(str(staging), str(out), names)
    monkeypatch.setattr(outputs.os, "replace", replace)
    assert {n: (out / n).read_text(encoding="utf-8") for n in names} == \
        {n: "old " + n for n in names}
    assert sorted(p.name for p in out.iterdir()) == [".staging-x", *names]  # nothing aside left


def test_a_second_run_into_a_folder_being_written_is_refused_before_any_work(tmp_path):
    held = outputs.lock(str(tmp_path))
    try:
        status, err = main("--quick", "--out", tmp_path)
    finally:
        outputs.unlock(held)
    assert fails_in_one_line(status, err, 2) and "another run is writing" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_ends_leaves_no_lock_and_no_staging_folder(previous):
    out, before = previous
    status, err = main("--quick", "--no-figures", "--workers", "1", "--out", out)
    assert status == 0, err
    assert set(snapshot(out)) == set(before)  # the same files, renewed; no hidden ones added


def test_an_output_name_taken_by_a_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "results.json").mkdir()
    status, err = main("--quick", "--out", tmp_path)
    assert fails_in_one_line(status, err, 2) and "is not a file" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
