"""The ring Gaussian mixture of the homework, and EM for its weights and means.

Model (problem 1.1), d = 2, Sigma_k = I_2 for every k:

    p(x) = sum_k pi_k N(x; mu_k, I_2)
         = sum_k pi_k (2 pi)^{-1} exp(-||x - mu_k||^2 / 2),
    pi_k = 1/K,   mu_k = R (cos(2 pi k / K), sin(2 pi k / K)),   k = 1..K.

EM with the covariances held at I_2 (problem 1.2):

    E-step  log r_ik = log pi_k + log N(x_i; mu_k, I) - log p(x_i)
    M-step  pi_k = (1/n) sum_i r_ik,   mu_k = sum_i r_ik x_i / sum_i r_ik.

This module is the one place the mixture's density and posterior live; kde.py, ebm.py and
VI.py import them. Everything is in log space; randomness comes from an explicit
``numpy.random.Generator``.
"""
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment, minimize

LOG_2PI = np.log(2.0 * np.pi)


def logsumexp(a, axis=-1, keepdims=False):
    """log sum exp(a) along axis, the largest term factored out. Same values as
    scipy.special.logsumexp for finite inputs and a few times faster on small arrays, which
    matters inside EM's loop; a slice that is all -inf gives -inf."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def ring_means(K, R):
    """Centres mu_k = R (cos(2 pi k/K), sin(2 pi k/K)), k = 1..K, of shape (K, 2)."""
    angles = 2.0 * np.pi * np.arange(1, K + 1) / K
    return R * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def uniform_weights(K):
    return np.full(K, 1.0 / K)


def ring(K, R):
    """The homework's mixture: (means (K, 2), weights (K,)) of K equal components on a circle."""
    return ring_means(K, R), uniform_weights(K)


def sample(n, means, weights, rng):
    """Draw n points and their component labels; returns x (n, 2), z (n,)."""
    z = rng.choice(len(weights), size=n, p=weights)
    x = means[z] + rng.standard_normal((n, means.shape[1]))
    return x, z


def log_joint(x, means, weights):
    """log p(x_i, z_i = k) = log pi_k + log N(x_i; mu_k, I), shape (n, K).

    ||x - mu||^2 is expanded into a matrix product; its round-off, about 1e-16 (||x||^2 +
    ||mu||^2), is below 1e-12 nats for every point and radius used here. The array is laid
    out component by component (Fortran order), which makes the reductions over k that
    follow (logsumexp, responsibilities) several times faster for K << n."""
    sq = (means * means).sum(1)[:, None] - 2.0 * means @ x.T + (x * x).sum(1)[None, :]  # (K, n)
    d = x.shape[1]
    with np.errstate(divide="ignore"):  # pi_k = 0 is a legal weight: log 0 = -inf
        return (np.log(weights)[:, None] - 0.5 * d * LOG_2PI - 0.5 * np.maximum(sq, 0.0)).T


def posterior(log_joint_xk):
    """From log p(x_i, k), shape (n, K): the evidence log p(x_i), shape (n,), and the posterior
    log p(z = k | x_i) = log p(x_i, k) - log p(x_i), shape (n, K), whose rows sum to one."""
    log_p = logsumexp(log_joint_xk, axis=1)
    return log_p, log_joint_xk - log_p[:, None]


def log_prob(x, means, weights):
    """Mixture log-density log p(x_i), shape (n,)."""
    return posterior(log_joint(x, means, weights))[0]


def log_responsibilities(x, means, weights):
    """Posterior log p(z = k | x_i), shape (n, K)."""
    return posterior(log_joint(x, means, weights))[1]


def e_step(x, means, weights):
    """Returns (mean log-likelihood at the current parameters, log responsibilities (n, K))."""
    log_p, log_resp = posterior(log_joint(x, means, weights))
    return log_p.mean(), log_resp


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
    history: list = field(default_factory=list)  # mean log-likelihood of each accepted iterate
    maps: list = field(default_factory=list)  # EM iterations (maps) spent to reach each of them
    converged: bool = False
    restart: int = 0  # which start of its kind won
    kind: str = "k-means++"  # the kind of start (INITS)
    init: object = None  # the start's means (K, 2)

    @property
    def n_iter(self):
        return self.maps[-1] if self.maps else 0


def em_map(x, means, weights):
    """One EM iteration: (mean log-likelihood at the input, the M-step's means and weights)."""
    ll, log_resp = e_step(x, means, weights)
    return (ll, *m_step(x, log_resp))


def em(x, init_means, tol=1e-8, max_maps=20000, init_weights=None, accelerate=True):
    """EM from one initialisation until one EM iteration moves no parameter by more than tol.

    A rule on the log-likelihood alone stops early where the likelihood is flat: EM's steps
    shrink by its rate, the fraction of the information that the unseen labels would carry,
    close to one there (about 0.999 at R = 1), so tiny steps can leave the means far from the
    maximum. A step below tol leaves about tol / (1 - rate) to go. To get there in hundreds
    instead of tens of thousands of iterations, accelerate=True extrapolates pairs of EM steps by
    SQUAREM (Varadhan & Roland 2008, scheme S3), keeping the extrapolation only if it does not
    lower the likelihood (else the plain pair of steps): the fixed points and the monotone
    likelihood are EM's own."""
    K, d = init_means.shape
    unpack = lambda v: (v[:K * d].reshape(K, d), v[K * d:])
    start = uniform_weights(K) if init_weights is None else init_weights
    theta = np.concatenate([init_means.ravel(), start])
    fit, maps, made = EMFit(*unpack(theta)), 0, None  # made: theta's E-step, if already made
    while maps < max_maps:
        ll, log_resp = made or e_step(x, *unpack(theta))
        means, weights = m_step(x, log_resp)
        fit.history.append(ll), fit.maps.append(maps)
        t1, maps = np.concatenate([means.ravel(), weights]), maps + 1
        if np.abs(t1 - theta).max() < tol:  # theta is reported: one EM step moves it by < tol
            fit.converged = True
            break
        if accelerate:  # two more EM maps: the second step and the one after the extrapolation
            (theta, made), maps = _squarem_step(x, theta, t1, ll, unpack), maps + 2
        else:
            theta = t1
    fit.means, fit.weights = unpack(theta)
    return fit


def _squarem_step(x, theta, t1, ll, unpack):
    """From theta and its EM image t1 = theta + r: the SQUAREM point (S3 step length, one EM
    step after it) and its E-step if it is a valid mixture at least as likely as theta, else
    two EM steps (and None: their E-step is still to make)."""
    _, *t2 = em_map(x, *unpack(t1))
    t2 = np.concatenate([t2[0].ravel(), t2[1]])
    r, v = t1 - theta, t2 - 2 * t1 + theta
    alpha = min(-np.sqrt((r @ r) / (v @ v)), -1.0) if v @ v > 0 else -1.0
    m3, w3 = unpack(theta - 2 * alpha * r + alpha ** 2 * v)
    if np.all(w3 > 0):
        _, m4, w4 = em_map(x, m3, w3 / w3.sum())
        made = e_step(x, m4, w4)
        if made[0] >= ll:
            return np.concatenate([m4.ravel(), w4]), made
    return t2, None


def mean_log_likelihood_and_grad(x, means, logits):
    """The mean log-likelihood (1/n) sum_i log p(x_i) with pi = softmax(logits), Sigma = I, and
    its gradient: d/d mu_k = (1/n) sum_i r_ik (x_i - mu_k), d/d logit_k = mean_i r_ik - pi_k."""
    weights = np.exp(logits - logsumexp(logits))
    log_p, log_resp = posterior(log_joint(x, means, weights))
    resp = np.exp(log_resp)  # (n, K)
    n = x.shape[0]
    d_means = (resp.T @ x - resp.sum(0)[:, None] * means) / n
    return log_p.mean(), d_means, resp.mean(0) - weights


def maximise_likelihood(x, means, weights, gtol=1e-10):
    """The nearest maximum of the mean log-likelihood from (means, weights), found by L-BFGS
    on (means, logits of pi) instead of EM. From EM's endpoint this is a converged reference:
    it shows what EM's stopping rule left, where EM itself would need thousands of iterations
    (its rate is slow when the components overlap). Returns (means, weights, mean LL)."""
    K, d = means.shape
    with np.errstate(divide="ignore"):
        logits = np.log(weights)

    def negative(v):
        ll, d_means, d_logits = mean_log_likelihood_and_grad(x, v[:K * d].reshape(K, d), v[K * d:])
        return -ll, -np.concatenate([d_means.ravel(), d_logits])

    fit = minimize(negative, np.concatenate([means.ravel(), logits]), jac=True, method="L-BFGS-B",
                   options=dict(gtol=gtol, ftol=0.0, maxiter=10000))
    logits = fit.x[K * d:]
    return fit.x[:K * d].reshape(K, d), np.exp(logits - logsumexp(logits)), -fit.fun


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


def random_points_init(x, K, rng):
    """K distinct training points drawn uniformly: starts that may put several means in one
    cluster and none in another."""
    return x[rng.choice(x.shape[0], size=K, replace=False)]


def random_box_init(x, K, rng):
    """K means drawn uniformly in the training data's bounding box, some far from every point."""
    return rng.uniform(x.min(0), x.max(0), size=(K, x.shape[1]))


INITS = {"k-means++": kmeans_pp_init, "data point": random_points_init, "box": random_box_init}


def start_counts(kmeans_pp, random):
    """{kind of start: how many}: kmeans_pp greedy k-means++ starts, `random` of each other kind."""
    return {"k-means++": kmeans_pp, "data point": random, "box": random}


def em_starts(x, K, rng_of, counts, tol=1e-8, max_maps=20000):
    """EM to its stopping rule from counts[kind] starts of each kind of INITS, start i of a kind
    drawn by the generator rng_of(kind, i): every fit, with its kind, index and start means."""
    if K > x.shape[0]:
        raise ValueError(f"K={K} components need at least K data points, got n={x.shape[0]}")
    fits = []
    for kind, count in counts.items():
        for r in range(count):
            start = INITS[kind](x, K, rng_of(kind, r))
            fit = em(x, start, tol, max_maps)
            fit.kind, fit.restart, fit.init = kind, r, start
            fits.append(fit)
    return fits


def most_likely(fits, tol, max_maps):
    """The fit of highest training log-likelihood (the first among equals); a warning if it
    stopped at the cap of max_maps EM iterations before its steps fell below tol."""
    best = max(fits, key=lambda f: f.history[-1])
    if not best.converged:
        warnings.warn(f"EM used max_maps={max_maps} EM iterations before its steps fell below "
                      f"tol={tol:g}; raise max_maps or tol", RuntimeWarning, stacklevel=3)
    return best


def fit_em(x, K, rngs, tol=1e-8, max_maps=20000):
    """EM for (pi, mu) with Sigma_k = I from one greedy k-means++ start per generator in rngs
    (its own stream each, so the restarts are independent); the most likely fit is kept."""
    rngs = list(rngs)
    fits = em_starts(x, K, lambda _, r: rngs[r], {"k-means++": len(rngs)}, tol, max_maps)
    return most_likely(fits, tol, max_maps)


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


MERGE_TOL = 1e-3  # component sds: a hundredth of the s.e. of a mean of n/K = 100 points


def merge_components(means, weights, tol=MERGE_TOL):
    """Components whose means are within tol of each other (single linkage) as one location:
    dict(means (L, 2) the weighted average of each location's means, weights (L,) their summed
    weights, counts (L,), members: each location's component indices), most components first,
    then heaviest. Where components coincide only the summed weight is identified: the density
    is the same for any split of it."""
    K = len(weights)
    labels = fcluster(linkage(means, "single"), tol, "distance") if K > 1 else np.ones(1, int)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    groups.sort(key=lambda g: (-len(g), -weights[g].sum()))
    w = np.array([weights[g].sum() for g in groups])
    centre = lambda g: np.average(means[g], axis=0, weights=weights[g] if w.all() else None)
    return dict(means=np.array([centre(g) for g in groups]), weights=w,
                counts=np.array([len(g) for g in groups]), members=[g.tolist() for g in groups])


def location_spacing(means, locations):
    """(largest distance between two components merged into one location, smallest distance
    between two locations): how clearly the tolerance separates the two."""
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    within = max([d[np.ix_(g, g)].max() for g in locations["members"]], default=0.0)
    m = locations["means"]
    apart = np.linalg.norm(m[:, None] - m[None], axis=-1)[np.triu_indices(len(m), 1)]
    return float(within), float(apart.min()) if apart.size else math.inf


def maxima_distance(a, b):
    """How far apart two merged fits (merge_components) are: after matching locations, the
    largest distance between matched locations or difference of their summed weights; inf if
    they have different numbers of locations."""
    if len(a["weights"]) != len(b["weights"]):
        return math.inf
    perm = match_components(b["means"], a["means"])
    return float(max(np.linalg.norm(a["means"] - b["means"][perm], axis=1).max(),
                     np.abs(a["weights"] - b["weights"][perm]).max()))


def distinct_maxima(fits, tol=MERGE_TOL):
    """The maxima the fits reached: a fit joins the first maximum (most likely first) whose most
    likely fit is within tol of it by maxima_distance, else starts a new one. Returns one dict
    per maximum: its training LL, its fits' LL spread, number of locations, the starts (kind, i)
    that reached it, the largest distance of a fit from its maximum's best, and the best's
    merge_components."""
    maxima = []
    for fit in sorted(fits, key=lambda f: -f.history[-1]):
        merged = merge_components(fit.means, fit.weights)
        home = next((m for m in maxima if maxima_distance(m["merged"], merged) <= tol), None)
        if home is None:
            maxima.append(dict(merged=merged, train_ll=fit.history[-1], starts=[], spread=0.0,
                               locations=len(merged["weights"]), apart=0.0))
            home = maxima[-1]
        home["starts"].append([fit.kind, fit.restart])
        home["spread"] = home["train_ll"] - fit.history[-1]
        home["apart"] = max(home["apart"], maxima_distance(home["merged"], merged))
    return maxima


def nearest_location_errors(locations, true_means, true_weights):
    """What is identified even where components merge: the distance from each true mean to the
    nearest EM location (mean, largest), and the largest difference between a location's summed
    weight and the summed true weight of the true means nearest to it."""
    d = np.linalg.norm(true_means[:, None] - locations["means"][None], axis=-1)  # (K, L)
    nearest = d.argmin(1)
    covered = np.bincount(nearest, weights=true_weights, minlength=len(locations["weights"]))
    return dict(nearest_mean_dist=float(d.min(1).mean()), nearest_max_dist=float(d.min(1).max()),
                location_weight_err=float(np.abs(locations["weights"] - covered).max()))


def labelled_error(K, n):
    """Mean length of the N(0, (K/n) I) error of a mean of n/K labelled points, sqrt(pi K / 2n):
    EM cannot beat knowing the labels; within twice this, it counts as recovering the means."""
    return math.sqrt(math.pi * K / (2 * n))


def identified(fit, true_means, true_weights):
    """fit's errors: per component after Hungarian matching (meaningful where the components
    are separated), and per location (merge_components), which stay defined where they merge."""
    locations = merge_components(fit.means, fit.weights)
    within, between = location_spacing(fit.means, locations)
    return dict(**parameter_errors(fit, true_means, true_weights),
                **nearest_location_errors(locations, true_means, true_weights),
                matched=match_components(fit.means, true_means).tolist(),
                n_locations=len(locations["weights"]), merge_tol=MERGE_TOL,
                within_location=within, between_locations=between,
                locations={k: np.asarray(v).tolist() if k != "members" else v
                           for k, v in locations.items()})


def search_summary(fits):
    """What the starts found: each start's end, and the distinct maxima (distinct_maxima)."""
    maxima = distinct_maxima(fits)
    ends = [dict(kind=f.kind, restart=f.restart, train_ll=f.history[-1], converged=f.converged,
                 iterations=f.n_iter) for f in fits]
    return dict(n_starts=len(fits), n_maxima=len(maxima),
                within_maximum=max(m["apart"] for m in maxima),
                ll_spread=max(m["spread"] for m in maxima), starts=ends,
                all_converged=all(f.converged for f in fits),
                maxima=[{k: v for k, v in m.items() if k != "merged"} for m in maxima])


def em_experiment(x_train, x_test, R, K, rng_of, counts, tol, max_maps, plain_iterations=1000):
    """Problem 1.2 at radius R: EM for (pi, mu), Sigma = I, run to its maximum from counts[kind]
    starts of each kind (rng_of(kind, i) the generator of start i); the most likely fit, its
    errors and log-likelihoods, the maxima the starts reached; plain EM's progress from the
    winning start and where a rule on the log-likelihood alone stops; how far L-BFGS moves from
    EM's end (a check). Plain EM runs plain_iterations maps, at most max_maps."""
    means, weights = ring(K, R)
    fits = em_starts(x_train, K, rng_of, counts, tol, max_maps)
    fit = most_likely(fits, tol, max_maps)
    plain = em(x_train, fit.init, 0.0, min(plain_iterations, max_maps), accelerate=False).history
    stop = 1 + int(np.argmax(np.diff(plain) < 1e-6))  # where a rule on the LL gain stops
    early = em(x_train, fit.init, 0.0, stop, accelerate=False).means  # same start: labels
    ref_means, _, ref_ll = maximise_likelihood(x_train, fit.means, fit.weights)
    ll = lambda x, m, w: float(log_prob(x, m, w).mean())
    gap = log_prob(x_test, means, weights) - log_prob(x_test, fit.means, fit.weights)  # (n,)
    apart = lambda a, b: float(np.linalg.norm(a - b, axis=1).max())
    fitted, true = (fit.means, fit.weights), (means, weights)
    return dict(R=R, **identified(fit, means, weights), **search_summary(fits),
                iterations=fit.n_iter, converged=fit.converged, kind=fit.kind,
                restart=fit.restart, history=fit.history, maps=fit.maps, plain=plain,
                train_ll=ll(x_train, *fitted), train_ll_true=ll(x_train, *true),
                test_ll=ll(x_test, *fitted), test_ll_true=ll(x_test, *true),
                test_gap=float(gap.mean()), test_gap_se=float(gap.std(ddof=1) / np.sqrt(gap.size)),
                neighbour_spacing=float(2 * R * np.sin(np.pi / K)) if K > 1 else 0.0,
                labelled_error=labelled_error(K, len(x_train)),
                recover_threshold=2 * labelled_error(K, len(x_train)),
                early_means_left=apart(early, fit.means), means=fit.means.tolist(),
                true_means=means.tolist(), true_weights=weights.tolist(),
                weights=fit.weights.tolist(), ll_left=float(ref_ll - fit.history[-1]),
                means_left=apart(ref_means, fit.means))
