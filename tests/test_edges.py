"""Numerics at the edges and faults: finite numbers or a clear error, never a silent NaN,
and an interrupted run that leaves the previous outputs intact."""

import math
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import ebm
import gmm_em
import kde


def test_em_at_radius_zero_and_with_one_component():
    rng = np.random.default_rng(0)
    w = gmm_em.uniform_weights(10)
    x, _ = gmm_em.sample(300, gmm_em.ring_means(10, 0.0), w, rng)  # ten identical centres
    fit = gmm_em.fit_em(x, 10, [rng])
    assert np.isfinite(fit.means).all() and np.isfinite(fit.history).all()
    assert np.isclose(fit.weights.sum(), 1.0)
    one = gmm_em.fit_em(x, 1, [rng])  # K = 1: the MLE is the sample mean, weight 1
    assert np.allclose(one.means[0], x.mean(0), atol=1e-12) and one.weights[0] == 1.0


def test_kde_at_extreme_variances():
    rng = np.random.default_rng(1)
    train, query = rng.normal(size=(200, 2)), rng.normal(size=(50, 2)) * 5
    tiny = kde.log_density(query, train, 1e-6)  # every kernel underflows but the nearest
    huge = kde.log_density(query, train, 1e3)  # every kernel nearly flat
    assert np.isfinite(tiny).all() and np.isfinite(huge).all()
    # at sigma = 1e3 every kernel is nearly flat: log p ~= log N's constant minus the mean
    # squared distance / (2 sigma), up to the variance of that term (< 1e-3 here)
    sq = ((query[:, None, :] - train[None, :, :]) ** 2).sum(-1).mean(1)
    assert np.allclose(huge, -np.log(2 * np.pi * 1e3) - sq / 2e3, atol=1e-3)


def ring_problem(seed, n_train=200, M=1000):
    """A training set, a proposal sample and a held-out one from the ring, in float32."""
    means, w = gmm_em.ring(10, 10.0)
    rng = np.random.default_rng(seed)
    draw = lambda n: torch.as_tensor(gmm_em.sample(n, means, w, rng)[0], dtype=torch.float32)
    sample = lambda x: ebm.Sample(
        x, torch.as_tensor(gmm_em.log_prob(x.double().numpy(), means, w), dtype=torch.float32)
    )
    return draw(n_train), sample(draw(M)), sample(draw(M))


def test_a_badly_scaled_energy_gives_finite_estimates_and_training():
    energy = ebm.Energy(16, 1.0, torch.Generator().manual_seed(2))
    with torch.no_grad():
        for p in energy.parameters():
            p.mul_(100.0)  # outputs in the thousands: exp(E) overflows float32 without logs
    data, prop, vprop = ring_problem(2)
    with torch.no_grad():
        assert math.isfinite(float(ebm.log_partition(energy, prop)))
    assert math.isfinite(ebm.log_partition_grid(energy, half_width=20.0, step=0.1))
    run = ebm.train(ebm.new_run(energy, eval_every=10), data, prop, ebm.score(data, vprop), 50)
    assert np.isfinite(run.val_ll).all() and run.val_ll[-1] > run.val_ll[0]


def nan_energy(seed):
    energy = ebm.Energy(4, 1.0, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        energy.net[2].bias.fill_(float("nan"))
    return energy


def test_a_diverged_training_stops_and_says_why():
    data, prop, vprop = ring_problem(3, n_train=10, M=10)
    run = ebm.train(ebm.new_run(nan_energy(3)), data, prop, ebm.score(data, vprop), 5)
    assert run.failed.startswith("diverged at iteration 0") and run.converged
    assert run.iterations == 0 and run.best_state is None


def test_a_diverged_candidate_is_ranked_last_and_never_chosen():
    # the selection goes on without it; a good candidate that scores worse still wins
    data, prop, vprop = ring_problem(3, n_train=10, M=10)
    runs = {"nan": ebm.new_run(nan_energy(3)),
            "fine": ebm.new_run(ebm.Energy(4, 1.0, torch.Generator().manual_seed(4)))}
    train_to = lambda run, until: ebm.train(run, data, prop, ebm.score(data, vprop), until)
    assert ebm.successive_halving(runs, train_to, rungs=(5, 10), keep=2) == ["fine", "nan"]
    assert runs["nan"].failed and not runs["fine"].failed


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child on Windows")
def test_sigint_during_ebm_training_leaves_the_previous_outputs_intact(quick, tmp_path):
    for f in quick.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-u",
            str(ROOT / "VI.py"),
            "--quick",
            "--seed",
            "7",
            "--workers",
            "1",
            "--ebm-rungs",
            "5,100000",
            "--ebm-patience",
            "100000",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # a shell's background job starts with SIGINT ignored, and Python keeps
        # an inherited SIG_IGN: give the child the default so Ctrl-C can reach it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:  # wait until the parts have started: the EBM's training first
        if line.startswith("running "):
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    after = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temporary left behind
