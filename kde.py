"""Gaussian kernel density estimator with its variance tuned on a validation set (problem 1.3).

    p_hat(x) = (1/n) sum_i phi_sigma(x - x_i),
    phi_sigma(u) = (2 pi sigma)^{-d/2} exp(-||u||^2 / (2 sigma)),

so sigma is a *variance*, as in the assignment; the bandwidth (a standard deviation) is
sqrt(sigma). log p_hat is a logsumexp over training points, evaluated in blocks of queries so
that memory stays bounded (about ``max_elems`` doubles per block) however large both sets are.
sigma is chosen by maximising the mean validation log-likelihood over a log grid, then refined
by a bounded scalar search on log sigma between the best grid point's neighbours.
"""
import numpy as np
import torch
from scipy.optimize import minimize_scalar

from gmm_em import LOG_2PI


def sigma_grid(sigma_min, sigma_max, num):
    """The log-spaced grid of kernel variances searched by tune_sigma, shape (num,)."""
    return np.logspace(np.log10(sigma_min), np.log10(sigma_max), num)


def _shifted_sq_dists(x, train):
    """Squared distances (m, n) minus each row's minimum, and that minimum (m,), as float64
    torch tensors (torch's exp is several times faster than numpy's on large arrays).
    ||x - t||^2 is expanded into a matrix product, three times faster than the difference
    tensor; its round-off, about 1e-16 (||x||^2 + ||t||^2), is far below any kernel variance
    searched here."""
    x, train = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(train, dtype=torch.float64)
    sq = (x * x).sum(1)[:, None] + (train * train).sum(1)[None, :] - 2.0 * x @ train.T
    sq = sq.clamp_min(0.0)
    sq_min = sq.min(dim=1).values
    return sq - sq_min[:, None], sq_min


def _log_density_from_sq(shifted, sq_min, sigma, n, d):
    # logsumexp with the max term factored out by hand: the nearest training point gives
    # exp(0) = 1, so the sum is >= 1 and its log is finite even for a tiny sigma.
    lse = -0.5 * sq_min / sigma + torch.log(torch.exp(shifted * (-0.5 / sigma)).sum(dim=1))
    return (lse - np.log(n) - 0.5 * d * (LOG_2PI + np.log(sigma))).numpy()


def log_density(x, train, sigma, max_elems=2**22):
    """log p_hat(x) for queries x of shape (m, d) given train of shape (n, d); returns (m,).

    Each block holds at most max_elems query-train pairs (a few arrays of that size in
    flight, about 100 MB at the default), so 1e5 x 1e5 runs in bounded memory.
    """
    if not sigma > 0:
        raise ValueError(f"sigma is a variance and must be positive, got {sigma}")
    n, d = train.shape
    block = max(1, max_elems // n)
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], block):
        shifted, sq_min = _shifted_sq_dists(x[s:s + block], train)
        out[s:s + block] = _log_density_from_sq(shifted, sq_min, sigma, n, d)
    return out


def mean_log_likelihood(x, train, sigma):
    return float(log_density(x, train, sigma).mean())


def rule_of_thumb_sigma(train, rule="scott"):
    """Scott's / Silverman's variance: (factor * s)^2, s^2 the mean per-coordinate variance.

    factor = n^(-1/(d+4)) (Scott) or (n (d+2)/4)^(-1/(d+4)) (Silverman); equal when d = 2.
    """
    n, d = train.shape
    if rule == "scott":
        factor = n ** (-1.0 / (d + 4))
    elif rule == "silverman":
        factor = (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    else:
        raise ValueError(f"unknown rule {rule!r}; use 'scott' or 'silverman'")
    return float(factor**2 * train.var(axis=0, ddof=1).mean())


def likelihood_scorer(x, train):
    """A function sigma -> mean log p_hat(x), for searches over sigma. The distances are
    computed and sorted once when the pairs fit in one block; otherwise each call streams
    log_density's blocks."""
    n, d = train.shape
    if x.shape[0] * n > 2**22:
        return lambda s: mean_log_likelihood(x, train, s)
    shifted, sq_min = _shifted_sq_dists(x, train)
    shifted = shifted.sort(dim=1).values  # nearest kernel first in every row

    def score(sigma):
        # A kernel whose shifted squared distance exceeds 80 sigma weighs < e^-40 against the
        # nearest one's exp(0) = 1: all n of them move the sum by < 1e-14 relative, i.e.
        # round-off, while exp's underflow path is slow. Keep only the columns that count.
        cut = torch.full((shifted.shape[0], 1), 80.0 * sigma, dtype=shifted.dtype)
        keep = max(1, int(torch.searchsorted(shifted, cut).max()))
        return float(_log_density_from_sq(shifted[:, :keep], sq_min, sigma, n, d).mean())

    return score


def log_likelihood_curve(x, train, sigmas):
    """Mean log p_hat(x) for each sigma in sigmas, shape (len(sigmas),)."""
    score = likelihood_scorer(x, train)
    return np.array([score(s) for s in sigmas])


def tune_sigma(train, val, grid):
    """Grid search of the validation log-likelihood over sigma, then a bounded refinement
    of log sigma between the best grid point's neighbours.

    Returns (sigma*, validation LL at sigma*, validation LL on the grid).
    """
    grid = np.asarray(grid, dtype=float)
    if grid.size == 0 or not np.all(grid > 0):
        raise ValueError("the sigma grid must be non-empty and positive")
    score = likelihood_scorer(val, train)
    scores = np.array([score(s) for s in grid])
    i = int(np.argmax(scores))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, grid.size - 1)])
    if lo == hi:
        return float(grid[i]), float(scores[i]), scores
    res = minimize_scalar(lambda t: -score(np.exp(t)),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    if -res.fun < scores[i]:  # the refinement may only improve on the grid
        return float(grid[i]), float(scores[i]), scores
    return float(np.exp(res.x)), float(-res.fun), scores


def kde_experiment(x_train, x_val, x_test, grid):
    """Problem 1.3: sigma (a variance) by validation log-likelihood, then the test score."""
    sigma, val_ll, val_curve = tune_sigma(x_train, x_val, grid)
    res = dict(sigma=sigma, bandwidth=float(np.sqrt(sigma)), val_ll=val_ll, grid=grid.tolist(),
               val_curve=val_curve.tolist(), interior=bool(grid[0] < sigma < grid[-1]),
               test_curve=log_likelihood_curve(x_test, x_train, grid).tolist())
    for rule in ("scott", "silverman"):
        s = rule_of_thumb_sigma(x_train, rule)
        res[f"{rule}_sigma"] = s
        res[f"{rule}_test_ll"] = mean_log_likelihood(x_test, x_train, s)
    return res
