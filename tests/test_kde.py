"""The KDE against a naive loop, its normalisation, its blocking, and the sigma search."""

import numpy as np
import pytest
from scipy.stats import gaussian_kde, multivariate_normal

import gmm_em
import kde


@pytest.fixture
def ring():
    rng = np.random.default_rng(10)
    mu, w = gmm_em.ring_means(10, 10.0), gmm_em.uniform_weights(10)
    return [gmm_em.sample(300, mu, w, rng)[0] for _ in range(3)]


def test_matches_a_naive_loop_over_kernels(ring):
    train, queries = ring[0][:40], ring[1][:15]
    sigma = 0.7  # a variance: the kernel covariance is sigma * I
    naive = [
        np.log(np.mean([multivariate_normal(xi, sigma * np.eye(2)).pdf(q) for xi in train]))
        for q in queries
    ]
    assert np.allclose(kde.log_density(queries, train, sigma), naive, atol=1e-12)


def test_blocked_equals_unblocked(ring):
    full = kde.log_density(ring[1], ring[0], 0.3)
    assert np.allclose(kde.log_density(ring[1], ring[0], 0.3, max_elems=7 * 300), full, atol=1e-13)
    assert np.allclose(kde.log_density(ring[1], ring[0], 0.3, max_elems=1), full, atol=1e-13)


def test_integrates_to_one_on_a_grid(ring):
    train, h = ring[0][:50], 0.05
    axis = np.arange(-16, 16, h) + h / 2
    g = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    assert np.isclose(np.exp(kde.log_density(g, train, 0.5)).sum() * h * h, 1.0, atol=1e-6)


def test_finite_and_exact_for_a_tiny_variance(ring):
    train, sigma = ring[0], 1e-6
    q = train[:5] + 1e-4  # near a training point; every other kernel underflows
    lp = kde.log_density(q, train, sigma)
    nearest = -np.log(len(train)) - np.log(2 * np.pi * sigma) - 0.5 * 2e-8 / sigma
    assert np.isfinite(lp).all() and np.allclose(lp, nearest, atol=1e-6)
    assert np.isfinite(kde.log_density(ring[1], train, sigma)).all()


def test_rejects_a_non_positive_variance(ring):
    with pytest.raises(ValueError, match="positive"):
        kde.log_density(ring[1], ring[0], 0.0)
    with pytest.raises(ValueError, match="grid"):
        kde.tune_sigma(ring[0], ring[1], [])


def test_rules_of_thumb_agree_with_scipy_and_coincide_in_2d(ring):
    train = ring[0]
    scott = kde.rule_of_thumb_sigma(train, "scott")
    assert np.isclose(scott, kde.rule_of_thumb_sigma(train, "silverman"), rtol=1e-12)
    ref = gaussian_kde(train.T)  # covariance = factor^2 * data covariance
    assert np.isclose(scott, np.trace(ref.covariance) / 2, rtol=1e-12)


def test_tuned_sigma_is_a_local_maximum_inside_the_grid(ring):
    train, val = ring[0], ring[1]
    grid = np.logspace(-2, 1, 31)
    sigma, best, scores = kde.tune_sigma(train, val, grid)
    assert grid[0] < sigma < grid[-1] and best >= scores.max()
    for s in (sigma * 0.98, sigma * 1.02):
        assert kde.mean_log_likelihood(val, train, s) <= best + 1e-9
    assert np.isclose(best, kde.mean_log_likelihood(val, train, sigma), atol=1e-12)


def test_the_search_scorer_equals_the_plain_density_at_every_scale(ring):
    # the scorer sorts distances and drops kernels below e^-40 of the nearest: round-off only
    score = kde.likelihood_scorer(ring[1], ring[0])
    for sigma in (1e-6, 1e-2, 0.3, 10.0, 1e3):
        assert np.isclose(
            score(sigma), kde.mean_log_likelihood(ring[1], ring[0], sigma), rtol=0, atol=1e-12
        )
