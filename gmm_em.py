"""The ring Gaussian mixture of the assignment, and EM for its weights and means.

Model (problem 1.1), d = 2, Sigma_k = I_2 for every k:

    p(x) = sum_k pi_k N(x; mu_k, I_2)
         = sum_k pi_k (2 pi)^{-1} exp(-||x - mu_k||^2 / 2),
    pi_k = 1/K,   mu_k = R (cos(2 pi k / K), sin(2 pi k / K)),   k = 1..K.

EM with the covariances held at I_2 (problem 1.2):

    E-step  log r_ik = log pi_k + log N(x_i; mu_k, I) - log p(x_i)
    M-step  pi_k = (1/n) sum_i r_ik,   mu_k = sum_i r_ik x_i / sum_i r_ik.

This module is the one place the mixture's density lives; kde.py, ebm.py and VI.py
import it. Everything is in log space; randomness comes from an explicit
``numpy.random.Generator``.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

LOG_2PI = np.log(2.0 * np.pi)


def ring_means(K, R):
    """Centres mu_k = R (cos(2 pi k/K), sin(2 pi k/K)), k = 1..K, of shape (K, 2)."""
    angles = 2.0 * np.pi * np.arange(1, K + 1) / K
    return R * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def uniform_weights(K):
    return np.full(K, 1.0 / K)


def sample(n, means, weights, rng):
    """Draw n points and their component labels; returns x (n, 2), z (n,)."""
    z = rng.choice(len(weights), size=n, p=weights)
    x = means[z] + rng.standard_normal((n, means.shape[1]))
    return x, z


def log_joint(x, means, weights):
    """log p(x_i, z_i = k) = log pi_k + log N(x_i; mu_k, I), shape (n, K)."""
    sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # (n, K), exact (no cancellation)
    d = x.shape[1]
    with np.errstate(divide="ignore"):  # pi_k = 0 is a legal weight: log 0 = -inf
        return np.log(weights)[None, :] - 0.5 * d * LOG_2PI - 0.5 * sq


def log_prob(x, means, weights):
    """Mixture log-density log p(x_i), shape (n,)."""
    return logsumexp(log_joint(x, means, weights), axis=1)


def log_responsibilities(x, means, weights):
    """Posterior log p(z = k | x_i), shape (n, K); rows sum to one in probability space."""
    lj = log_joint(x, means, weights)
    return lj - logsumexp(lj, axis=1, keepdims=True)


def e_step(x, means, weights):
    """Returns (mean log-likelihood at the current parameters, log responsibilities)."""
    lj = log_joint(x, means, weights)
    lp = logsumexp(lj, axis=1, keepdims=True)
    return lp.mean(), lj - lp


def m_step(x, log_resp):
    """Closed-form maximiser of the expected complete log-likelihood with Sigma_k = I."""
    resp = np.exp(log_resp)  # (n, K), safe: log_resp <= 0
    nk = resp.sum(0)  # (K,)
    weights = nk / x.shape[0]
    # A component that lost every point gets weight 0 and the data mean, not 0/0 = NaN.
    safe = np.maximum(nk, np.finfo(float).tiny)[:, None]
    means = np.where(nk[:, None] > 0, (resp.T @ x) / safe, x.mean(0))
    return means, weights


@dataclass
class EMFit:
    means: np.ndarray  # (K, 2)
    weights: np.ndarray  # (K,)
    history: list = field(default_factory=list)  # mean train log-likelihood per iteration
    n_iter: int = 0
    converged: bool = False
    restart: int = 0  # which restart won


def em_once(x, init_means, tol, max_iter):
    """EM from one initialisation; stops when the mean log-likelihood moves less than tol."""
    K = init_means.shape[0]
    means, weights = init_means.copy(), uniform_weights(K)
    history = []
    for it in range(1, max_iter + 1):
        ll, log_resp = e_step(x, means, weights)
        history.append(ll)
        means, weights = m_step(x, log_resp)
        if it > 1 and abs(history[-1] - history[-2]) < tol:
            return EMFit(means, weights, history, it, True)
    return EMFit(means, weights, history, max_iter, False)


def kmeans_pp_init(x, K, rng, trials=None):
    """Greedy k-means++ seeding (as in scikit-learn): each new centre is the best, by total
    squared distance to the nearest centre, of `trials` data points drawn with probability
    proportional to that squared distance. Spread-out starts matter here: with Sigma fixed at
    I, EM cannot move a spare centre across the empty gap between two separated clusters."""
    trials = trials or 2 + int(np.log(K))
    centres = [x[rng.integers(x.shape[0])]]
    d2 = ((x - centres[0]) ** 2).sum(1)  # (n,) squared distance to the nearest centre
    for _ in range(1, K):
        cand = x[rng.choice(x.shape[0], size=trials, p=d2 / d2.sum())]  # (trials, d)
        new_d2 = np.minimum(d2, ((x[None, :, :] - cand[:, None, :]) ** 2).sum(-1))  # (trials, n)
        best = int(np.argmin(new_d2.sum(1)))
        centres.append(cand[best])
        d2 = new_d2[best]
    return np.array(centres)


def fit_em(x, K, rng, n_init=5, tol=1e-6, max_iter=1000):
    """EM for (pi, mu) with Sigma_k = I; n_init greedy k-means++ restarts, the most likely kept.

    The reported history ends with the log-likelihood of the returned parameters.
    """
    if K > x.shape[0]:
        raise ValueError(f"K={K} components need at least K data points, got n={x.shape[0]}")
    best = None
    for r in range(n_init):
        init = kmeans_pp_init(x, K, rng)
        fit = em_once(x, init, tol, max_iter)
        fit.history.append(e_step(x, fit.means, fit.weights)[0])
        fit.restart = r
        if best is None or fit.history[-1] > best.history[-1]:
            best = fit
    if not best.converged:
        warnings.warn(f"EM hit max_iter={max_iter} before the log-likelihood change fell "
                      f"below tol={tol:g}; raise max_iter or tol", RuntimeWarning, stacklevel=2)
    return best


def match_components(est_means, true_means):
    """Permutation perm with est_means[perm[k]] matched to true_means[k] (Hungarian, L2 cost)."""
    cost = np.linalg.norm(true_means[:, None, :] - est_means[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def parameter_errors(fit, true_means, true_weights):
    """Mean/max distance of matched means and max |pi error| after Hungarian matching."""
    perm = match_components(fit.means, true_means)
    dist = np.linalg.norm(fit.means[perm] - true_means, axis=1)
    return {"mean_dist": float(dist.mean()), "max_dist": float(dist.max()),
            "max_pi_err": float(np.abs(fit.weights[perm] - true_weights).max())}
