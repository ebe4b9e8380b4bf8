"""Driver of the whole homework, and the variational bounds of Section 2.

    python VI.py                    # every part: numbers, figures and LaTeX macros into plots/
    python VI.py --quick            # small settings, a smoke run in seconds
    python VI.py --no-figures       # numbers only
    python VI.py --native-numerics  # each library's own CPU kernels (see NUMERICS below)

Section 1 (gmm_em.py, kde.py, ebm.py): the ring mixture and EM at two radii, the
validation-tuned KDE, and the shallow-network EBM trained with an importance-sampled gradient,
its confinement and width chosen on validation data, every comparison held over restarts.
Section 2 (this file): the evidence lower bound L(q, theta) = E_q log(p(x, z | theta) / q(z)) of
the same mixture, log p(x | theta) = L(q, theta) + KL(q || p(z | x, theta)).

main() reads as the homework: data, EM, KDE, EBM, the comparisons of the fitted densities,
variational bounds, then figures, then the outputs. Each runner returns its numbers and touches
nothing else; every file is written in one place at the end, under a temporary name first, so
an interrupted run leaves the previous outputs intact.
"""
import os
import sys

# Same seed, same bytes on every x86-64 CPU with AVX2 and FMA. Each numerical library picks
# kernels for the CPU it finds, and kernels of another vector width or thread count add in
# another order; L-BFGS with early stopping turns those last bits into another model. Read once
# when each library loads, so set here, before numpy and torch are imported.
NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels: the AVX2 build on AVX-512 machines too
    "MKL_CBWR": "COMPATIBLE",  # torch's matrix products (MKL): one code path on every vendor's CPU
    "OPENBLAS_CORETYPE": "Nehalem",  # numpy's matrix products: SSE4.2 kernels, which numpy needs anyway
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's own loops: no AVX-512 variants
    "OMP_NUM_THREADS": "1",  # one thread per model: a parallel sum's order follows the thread
    "MKL_NUM_THREADS": "1",  # count, so the cores train independent models instead (fork_map)
    "OPENBLAS_NUM_THREADS": "1",
}
NATIVE = "--native-numerics"
if NATIVE not in sys.argv[1:]:
    os.environ.update(NUMERICS)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import asdict, dataclass, field, fields, replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import i0e  # noqa: E402
from scipy.stats import multivariate_normal  # noqa: E402

import ebm  # noqa: E402
import gmm_em  # noqa: E402
import kde  # noqa: E402

# ---- settings: each with the rule its values must satisfy (checked by check(), not on creation) ----

POSITIVE, NON_NEGATIVE, ANY = (lambda v: v > 0, "positive"), (lambda v: v >= 0, "non-negative"), (lambda v: True, "")
FRACTION = (lambda v: 0 < v < 1, "between 0 and 1")


def at_least(k):
    return lambda v: v >= k, f"at least {k}"


def each(rule, length=None, increasing=False):
    """A rule for a list: non-empty (or of the given length), every value satisfying `rule`."""
    test, words = rule

    def check(values):
        ok = len(values) == length if length else len(values) > 0
        return ok and all(test(v) for v in values) and (not increasing or list(values) == sorted(set(values)))
    size = f"{length}" if length else "a non-empty list of"
    return check, f"{size} {'increasing ' if increasing else ''}{words} values".replace("  ", " ")


def setting(default, rule, doc):
    return field(default=default, metadata=dict(rule=rule, doc=doc))


@dataclass(frozen=True)
class Config:
    seed: int = setting(0, NON_NEGATIVE, "the seed every random stream derives from")
    # data (problem 1.1)
    n: int = setting(1000, POSITIVE, "points in each of the train / validation / test splits")
    K: int = setting(10, POSITIVE, "mixture components")
    R: float = setting(10.0, NON_NEGATIVE, "ring radius of the main experiment")
    R_small: float = setting(1.0, NON_NEGATIVE, "the overlapping contrast of problem 1.2")
    # EM (1.2)
    em_restarts: int = setting(5, POSITIVE, "k-means++ initialisations, each on its own stream")
    em_tol: float = setting(1e-8, POSITIVE, "stop once one EM iteration moves no parameter by more")
    em_max_maps: int = setting(20000, POSITIVE, "cap on EM iterations per initialisation")
    # KDE (1.3): the variance sigma is searched on a log grid, then refined
    sigma_min: float = setting(1e-2, POSITIVE, "smallest kernel variance searched")
    sigma_max: float = setting(1e1, POSITIVE, "largest kernel variance searched")
    sigma_num: int = setting(61, POSITIVE, "log-spaced variances searched")
    # EBM (1.4-1.7)
    M: int = setting(5000, POSITIVE, "training proposal sample, drawn once (problem 1.6)")
    M_val: int = setting(20000, POSITIVE, "held-out proposal sample that scores the validation set")
    M_fresh: int = setting(250_000, POSITIVE, "independent proposal sample for an honest A estimate")
    ebm_taus: tuple = setting((0.5, 1.0, 2.0, 4.0, 8.0), each(POSITIVE), "confinement scales searched")
    ebm_widths: tuple = setting((16, 32, 64), each(POSITIVE), "hidden units searched")
    ebm_rungs: tuple = setting((50, 150, 500), each(POSITIVE, increasing=True),
                               "L-BFGS budgets of the successive-halving rounds")
    ebm_keep: int = setting(3, POSITIVE, "after each round but the last, the best 1/ebm_keep go on")
    ebm_restarts: int = setting(5, at_least(2), "initialisations of each chosen model, trained to convergence")
    ebm_max_iter: int = setting(5000, POSITIVE, "cap on the L-BFGS iterations of a restart")
    ebm_memory: int = setting(20, POSITIVE, "L-BFGS history length")
    eval_every: int = setting(10, POSITIVE, "iterations between validation scores")
    ebm_patience: int = setting(100, POSITIVE, "least number of iterations without gain before a stop")
    ebm_checkpoints: tuple = setting((0, 10, 50, 150), each(NON_NEGATIVE, increasing=True),
                                     "iterations where the IS gradient is measured")
    grad_samples: int = setting(20, at_least(2), "fresh proposal samples of size M at each checkpoint")
    grid_half_width: float = setting(20.0, POSITIVE, "starting quadrature box [-h, h]^2 (it grows as needed)")
    grid_step: float = setting(0.1, POSITIVE, "quadrature cell side")
    mala_chains: int = setting(2000, at_least(2), "Langevin chains sampling the learned EBM, all from one point")
    mala_jump: float = setting(0.2, FRACTION, "chance of a jump from the Gaussian fitted to the data per step")
    mala_adapt: int = setting(100, NON_NEGATIVE, "steps that tune the step size, then frozen")
    mala_steps: int = setting(200, POSITIVE, "steps after the adaptation")
    mala_target: float = setting(0.574, FRACTION, "acceptance rate of the adaptation (Roberts & Rosenthal 1998)")
    # variational bounds (Section 2)
    kl_p_weights: tuple = setting((0.5, 0.3, 0.2), each(POSITIVE), "weights of the multimodal p of 2.2")
    kl_p_means: tuple = setting((-6.0, 0.0, 6.0), each(ANY), "its means")
    kl_p_sds: tuple = setting((1.0, 0.7, 0.8), each(POSITIVE), "its standard deviations")
    kl_q: tuple = setting((-6.0, 0.6), each(ANY, 2), "(mean, sd) of the narrow q on p's heaviest mode")
    kl_grid: tuple = setting((-30.0, 30.0, 0.01), each(ANY, 3), "(lo, hi, step) of the quadrature line")
    kl_starts: tuple = setting((-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0), each(ANY), "reverse-KL starting means")
    K_max: int = setting(10000, at_least(2), "largest K of problem 2.4")
    limit_num_K: int = setting(30, POSITIVE, "log-spaced K of 2.4 (before rounding to unique integers)")
    limit_points: int = setting(250, POSITIVE, "test points of the K sweep (cost ~ points * sum K)")
    iwae_k_max: int = setting(1024, POSITIVE, "largest number of importance samples k (k = 1, 2, 4, ...)")
    iwae_points: int = setting(100, POSITIVE, "test points of each radius")
    iwae_reps: int = setting(400, at_least(2), "Monte Carlo replicates of the bound per point and k")


RELATIONS = [  # rules that tie settings together
    (lambda c: c.K <= c.n, "--K cannot exceed --n: each component needs a point"),
    (lambda c: c.sigma_min <= c.sigma_max, "--sigma-min cannot exceed --sigma-max"),
    (lambda c: c.grid_step < c.grid_half_width, "--grid-step must be smaller than --grid-half-width"),
    (lambda c: len(c.kl_p_weights) == len(c.kl_p_means) == len(c.kl_p_sds),
     "--kl-p-weights, --kl-p-means and --kl-p-sds need one value per mode each"),
    (lambda c: c.kl_q[1] > 0, "--kl-q is (mean, sd) with a positive sd"),
    (lambda c: c.kl_grid[0] < c.kl_grid[1] and c.kl_grid[2] > 0, "--kl-grid is (lo, hi, step) with lo < hi, step > 0"),
]

QUICK = dict(n=200, em_restarts=2, sigma_num=15, M=1000, M_val=2000, M_fresh=20000, ebm_taus=(1.0, 4.0),
             ebm_widths=(8, 16), ebm_rungs=(20, 60), ebm_restarts=2, ebm_max_iter=200,
             ebm_checkpoints=(0, 10), grad_samples=4, grid_step=0.25, mala_chains=200, mala_adapt=40,
             mala_steps=40, kl_grid=(-30.0, 30.0, 0.02), K_max=1000, limit_points=60, iwae_k_max=64,
             iwae_points=30, iwae_reps=100)


def option(name):
    return "--" + name.replace("_", "-")


def check(cfg):
    """Raise ValueError, naming the option, if cfg cannot be run."""
    for f in fields(cfg):
        test, words = f.metadata["rule"]
        value = getattr(cfg, f.name)
        if not test(value):
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise ValueError(f"{option(f.name)} must be {words} (got {shown!r})")
    for test, words in RELATIONS:
        if not test(cfg):
            raise ValueError(words)


# ---- randomness and data: each use draws from its own stream, keyed by name, so changing one
# ---- size never changes another stream's draws ---------------------------------------------------

def stream(seed, name):
    """The numpy Generator of the stream called name: the seed's SeedSequence with a spawn key
    made from the name (as SeedSequence.spawn makes one from an index)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def torch_generator(seed, name):
    return torch.Generator().manual_seed(int(stream(seed, name).integers(2**62)))


def fitted_gaussian(x):
    """The broad Gaussian a practitioner can fit to the training data alone: its mean and
    covariance (for the ring, about (1 + R^2 / 2) I, wider than any component)."""
    return x.mean(0), np.cov(x.T)


def make_data(cfg):
    """Every random draw of a run, each from its own stream: the splits of both radii, the
    proposal samples of the two importance-sampling routes (the true mixture, and the Gaussian
    fitted to the training split), the gradient probes and the samplers' starting points."""
    big, small = gmm_em.ring(cfg.K, cfg.R), gmm_em.ring(cfg.K, cfg.R_small)
    draw = lambda mixture, size, name: gmm_em.sample(size, *mixture, stream(cfg.seed, name))[0]  # noqa: E731
    data = dict(train=draw(big, cfg.n, "train"), val=draw(big, cfg.n, "val"), test=draw(big, cfg.n, "test"),
                train_small=draw(small, cfg.n, "train_small"), test_small=draw(small, cfg.n, "test_small"),
                proposal=draw(big, cfg.M, "proposal"), val_proposal=draw(big, cfg.M_val, "val_proposal"),
                fresh_proposal=draw(big, cfg.M_fresh, "fresh proposal"),
                probes=draw(big, cfg.grad_samples * cfg.M, "gradient probes").reshape(cfg.grad_samples, cfg.M, 2))
    mean, cov = fitted_gaussian(data["train"])
    root = np.linalg.cholesky(cov)
    for key, size in (("fitted_proposal", cfg.M), ("fitted_val_proposal", cfg.M_val)):
        data[key] = mean + stream(cfg.seed, key.replace("_", " ")).normal(size=(size, 2)) @ root.T
    return data


def mean_se(values):
    """Mean of per-point values and its standard error over the points."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def tensor(a):
    return torch.as_tensor(a, dtype=torch.float32)


def fork_map(fn, items, workers):
    """[fn(item) for item in items], in `workers` forked processes when there are several
    items. fn may be a closure: the children inherit it (and every array it holds) by fork;
    items and results travel by pickle. Each item is computed by one single-threaded process,
    so the results are the same bytes whatever the number of workers."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    global _JOB
    _JOB = fn
    gc.freeze()  # the children's collector then leaves the parent's objects (and their pages) alone
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(items))) as pool:
            return pool.map(_run_job, items, chunksize=1)
    finally:
        gc.unfreeze()
        _JOB = None


_JOB = None


def _run_job(item):
    return _JOB(item)


# =============================== Section 1: generative models ================================

def labelled_error(K, n):
    """Mean length of the error of a mean of n/K labelled unit-variance 2-D points: the error is
    N(0, (K/n) I), its length Rayleigh with mean sqrt(pi K / (2 n)). EM cannot beat knowing the
    labels; a fit within twice this counts as recovering the means."""
    return math.sqrt(math.pi * K / (2 * n))


def run_em(x_train, x_test, R, cfg, name, plain_iterations=1000):
    """Problem 1.2 at radius R: EM for (pi, mu) with Sigma = I, run to convergence (gmm_em.em)
    from em_restarts k-means++ starts; its errors against the truth, its log-likelihoods; plain
    EM's progress from the winning start; and the distance to the maximum that L-BFGS reaches
    from EM's end point (a check that EM's end point is that maximum)."""
    means, weights = gmm_em.ring(cfg.K, R)
    starts = [stream(cfg.seed, f"{name} restart {r}") for r in range(cfg.em_restarts)]
    fit = gmm_em.fit_em(x_train, cfg.K, starts, cfg.em_tol, cfg.em_max_maps)
    start = gmm_em.kmeans_pp_init(x_train, cfg.K, stream(cfg.seed, f"{name} restart {fit.restart}"))
    plain = gmm_em.em(x_train, start, 0.0, plain_iterations, accelerate=False).history
    ref_means, _, ref_ll = gmm_em.maximise_likelihood(x_train, fit.means, fit.weights)
    log_lik = lambda x, m, w: float(gmm_em.log_prob(x, m, w).mean())  # noqa: E731
    return dict(R=R, **gmm_em.parameter_errors(fit, means, weights), iterations=fit.n_iter,
                converged=fit.converged, restart=fit.restart, history=fit.history, maps=fit.maps, plain=plain,
                train_ll=log_lik(x_train, fit.means, fit.weights), train_ll_true=log_lik(x_train, means, weights),
                test_ll=log_lik(x_test, fit.means, fit.weights), test_ll_true=log_lik(x_test, means, weights),
                neighbour_spacing=float(2 * R * np.sin(np.pi / cfg.K)) if cfg.K > 1 else 0.0,
                labelled_error=labelled_error(cfg.K, cfg.n), means=fit.means.tolist(), weights=fit.weights.tolist(),
                ll_left=float(ref_ll - fit.history[-1]),
                means_left=float(np.linalg.norm(ref_means - fit.means, axis=1).max()))


def run_kde(x_train, x_val, x_test, grid):
    """Problem 1.3: sigma (a variance) by validation log-likelihood, then the test score."""
    sigma, val_ll, val_curve = kde.tune_sigma(x_train, x_val, grid)
    res = dict(sigma=sigma, bandwidth=float(np.sqrt(sigma)), val_ll=val_ll, grid=grid.tolist(),
               val_curve=val_curve.tolist(), test_curve=kde.log_likelihood_curve(x_test, x_train, grid).tolist(),
               interior=bool(grid[0] < sigma < grid[-1]))
    for rule in ("scott", "silverman"):
        s = kde.rule_of_thumb_sigma(x_train, rule)
        res[f"{rule}_sigma"], res[f"{rule}_test_ll"] = s, kde.mean_log_likelihood(x_test, x_train, s)
    return res


# ---- problems 1.4-1.7: the EBM -----------------------------------------------------------------

def proposal_samples(data, cfg):
    """{route: (training sample, validation sample)} of the two importance-sampling routes: the
    homework's q, the true mixture (an oracle), and a Gaussian fitted to the training split."""
    truth = lambda x: ebm.Sample(tensor(x), tensor(gmm_em.log_prob(x, *gmm_em.ring(cfg.K, cfg.R))))  # noqa: E731
    fitted = multivariate_normal(*fitted_gaussian(data["train"]))
    gauss = lambda x: ebm.Sample(tensor(x), tensor(fitted.logpdf(x)))  # noqa: E731
    return dict(truth=(truth(data["proposal"]), truth(data["val_proposal"])),
                fitted=(gauss(data["fitted_proposal"]), gauss(data["fitted_val_proposal"])))


def init_energy(seed):
    """init(H, tau, r): the r-th initialisation of a network of width H, from its own stream; every
    tau and every route starts restart r alike, so their comparisons are paired by initialisation."""
    return lambda h, tau, r: ebm.Energy(h, tau, torch_generator(seed, f"ebm init H={h} restart {r}"))


def ebm_settings(cfg):
    """The EBM's settings, grouped as ebm.fit_route and ebm.examine take them."""
    return dict(search=dict(taus=cfg.ebm_taus, widths=cfg.ebm_widths, rungs=cfg.ebm_rungs, keep=cfg.ebm_keep,
                            restarts=cfg.ebm_restarts, max_iter=cfg.ebm_max_iter),
                settings=dict(eval_every=cfg.eval_every, memory=cfg.ebm_memory, patience=cfg.ebm_patience,
                              snapshot_at=cfg.ebm_checkpoints), grid=(cfg.grid_step, cfg.grid_half_width))


def run_ebm(data, cfg, pmap):
    """Problems 1.4-1.7: both importance-sampling routes fitted, and the homework route's first
    restart examined. Returns (numbers, models), models[route] holding the fitted energies and
    their per-point test log-densities for the comparisons."""
    x, samples, settings = {k: tensor(data[k]) for k in ("train", "val", "test")}, proposal_samples(data, cfg), ebm_settings(cfg)
    res, models = {}, {}
    for route, pair in samples.items():
        res[route], models[route] = ebm.fit_route(init_energy(cfg.seed), x, pair, pmap=pmap, **settings)
    truth = lambda p: ebm.Sample(tensor(p), tensor(gmm_em.log_prob(p, *gmm_em.ring(cfg.K, cfg.R))))  # noqa: E731
    start = tensor(np.repeat(data["train"][:1], cfg.mala_chains, 0))  # every chain at the first training point
    checks = dict(train=samples["truth"][0], fresh=truth(data["fresh_proposal"]), start=start,
                  probes=[truth(p) for p in data["probes"]])
    mala = dict(steps=cfg.mala_steps, adapt=cfg.mala_adapt, target=cfg.mala_target, jump=cfg.mala_jump,
                proposal=fitted_gaussian(data["train"]))
    res["model"], models["samples"] = ebm.examine(models["truth"]["runs"][0], models["truth"]["energies"][0], checks,
                                                  x["test"], cfg.K, settings["grid"], mala,
                                                  [torch_generator(cfg.seed, name) for name in ("mala", "grid draws")])
    return res, models


# ---- the fitted densities compared, point by point and over restarts -----------------------------

def test_log_densities(data, cfg, results, models):
    """log p(x) on the test points of every fitted density, shape (n,), or (restarts, n) for
    the EBMs: the truth, EM, the KDE, the EBM of each route (scikit-learn's score_samples)."""
    x, em = data["test"], results["gmm"]["big"]
    return dict(truth=gmm_em.log_prob(x, *gmm_em.ring(cfg.K, cfg.R)),
                em=gmm_em.log_prob(x, np.array(em["means"]), np.array(em["weights"])),
                kde=kde.log_density(x, data["train"], results["kde"]["sigma"]),
                ebm=models["truth"]["test"], ebm_fitted=models["fitted"]["test"])


COMPARISONS = {"ebm_minus_kde": ("ebm", "kde"), "truth_minus_ebm": ("truth", "ebm"),
               "fitted_minus_kde": ("ebm_fitted", "kde"), "ebm_minus_fitted": ("ebm", "ebm_fitted"),
               "truth_minus_kde": ("truth", "kde")}


def paired(a, b):
    """Mean of log p_a - log p_b over the test points, per restart (rows of (restarts, n) are
    paired by initialisation), with its standard error over the points; over restarts, the mean,
    the sd and a standard error that adds both noises. `holds` is +1 (or -1) if a beats b (or
    loses) on every restart by more than two of that restart's standard errors, or on average by
    more than two combined standard errors; else 0: no claim."""
    d = np.atleast_2d(a - b)  # (restarts, n)
    means, ses = d.mean(1), d.std(1, ddof=1) / math.sqrt(d.shape[1])
    sd = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    se = math.sqrt(sd**2 / len(means) + float(ses.mean()) ** 2)
    mean = float(means.mean())
    holds = next((sign for sign in (1, -1) if all(sign * means > 2 * ses) or sign * mean > 2 * se), 0)
    return dict(per_restart=means.tolist(), se_points=ses.tolist(), mean=mean, sd=sd, se=se, holds=holds,
                minimum=float(means.min()), maximum=float(means.max()))


def compare(log_densities):
    """Each density's test LL (its mean over the points; over restarts, their mean and sd) and
    the paired differences of COMPARISONS."""
    lls = {}
    for name, ld in log_densities.items():
        per = np.atleast_2d(ld).mean(1)
        lls[name] = dict(mean=float(per.mean()), sd=float(per.std(ddof=1)) if len(per) > 1 else 0.0,
                         se_points=float(np.mean([mean_se(row)[1] for row in np.atleast_2d(ld)])),
                         per_restart=per.tolist())
    return dict(test_ll=lls, **{name: paired(log_densities[a], log_densities[b]) for name, (a, b) in COMPARISONS.items()})
# =============================== Section 2: variational bounds ===============================
# (problems 2.1-2.4 and beyond; run_vi is the part's runner)
#
# For a categorical q over the K components of the mixture (Sigma_k = I, pi_k = 1/K):
#   L(q)    = sum_k q_k (log p(x, k) - log q_k),    log p(x) = L(q) + KL(q || p(z | x))   (2.1)
#   q = Unif:      L = -log 2 pi - (1/K) sum_k ||x - mu_k||^2 / 2
#                    = -log 2 pi - (||x||^2 + R^2) / 2   for K >= 2 (the ring centres sum to 0)
#   q = posterior: L = log p(x)
#   K -> inf:      log p_K(x) -> -log 2 pi - (||x||^2 + R^2) / 2 + log I_0(R ||x||)          (2.4)
#   IWAE:          L_k = E log (1/k) sum_j p(x, z_j) / q(z_j),  z_j ~ q iid;  L_1 = L(q) <= L_k <= log p

def kl_categorical(log_q, log_p):
    """KL(q || p) = sum_k q_k (log q_k - log p_k) along the last axis; terms with q_k = 0 are 0."""
    q = np.exp(log_q)
    with np.errstate(invalid="ignore"):  # 0 * (-inf - -inf) is NaN; the where sets it to 0
        return np.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)


def elbo(log_joint_xk, log_q):
    """L(q) = sum_k q_k (log p(x, k) - log q_k), shape (n,). With the unnormalised joint in
    place of p this is -KL(q || p(x, .)), so kl_categorical does the work (and the q_k = 0 care)."""
    return -kl_categorical(log_q, log_joint_xk)


def elbo_uniform_closed(x, means):
    """L(Unif) with Sigma = I, pi = 1/K: -log 2 pi - mean_k ||x - mu_k||^2 / 2, shape (n,).
    The log pi_k and -log q_k terms cancel, leaving the average component log-density."""
    return -gmm_em.LOG_2PI - 0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1).mean(1)


def elbo_uniform_ring(x, R):
    """The same bound for K >= 2 ring centres: sum_k mu_k = 0 removes the cross term, so it
    depends on neither K nor the angle of x: -log 2 pi - (||x||^2 + R^2) / 2."""
    return -gmm_em.LOG_2PI - 0.5 * ((x ** 2).sum(-1) + R ** 2)


def log_i0(z):
    """log I_0(z) for z >= 0 via the scaled i0e(z) = exp(-z) I_0(z); I_0 itself overflows at z ~ 713."""
    return np.log(i0e(z)) + z


def ring_log_density(x, R):
    """K -> inf limit of the ring mixture: the angle of the centre is uniform on the circle,
    p(x) = (2 pi)^-1 exp(-(||x||^2 + R^2)/2) I_0(R ||x||); log of it, shape (n,)."""
    return elbo_uniform_ring(x, R) + log_i0(R * np.sqrt((x ** 2).sum(-1)))


def iwae_samples(log_joint_xk, log_q, k, reps, rng):
    """reps draws of log (1/k) sum_{j<=k} p(x, z_j) / q(z_j), z_j ~ q iid, per point: (n, reps).

    The sum only depends on how often each component was drawn, so the k draws are replaced by
    their counts c ~ Multinomial(k, q): the same distribution at a cost independent of k.
    """
    n, K = log_joint_xk.shape
    counts = rng.multinomial(k, np.exp(log_q), size=(n, reps))  # (n, reps, K)
    with np.errstate(divide="ignore"):  # components never drawn: log 0 = -inf drops them
        log_c = np.log(counts)
    return gmm_em.logsumexp(log_c + (log_joint_xk - log_q)[:, None, :], axis=-1) - np.log(k)


def iwae_gap_coefficient(log_post, log_q):
    """c with log p - L_k ~ c / k for large k (delta method on the log of a mean of k weights):
    c = Var_q(w) / 2 with w = p(z | x) / q(z), E_q w = 1, so c = (sum_z p(z | x)^2 / q(z) - 1) / 2.
    Shape (n,)."""
    return 0.5 * np.expm1(gmm_em.logsumexp(2 * log_post - log_q, axis=-1))


def normal_log_pdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2.0 * np.pi)


def mixture_1d_log_pdf(x, weights, means, sds):
    """log sum_k w_k N(x; m_k, s_k^2) on a 1-D array x, shape x.shape."""
    parts = [np.log(w) + normal_log_pdf(x, m, s) for w, m, s in zip(weights, means, sds)]
    return gmm_em.logsumexp(np.stack(parts), axis=0)


def kl_grid(log_f, log_g, step):
    """KL(f || g) = int f log(f / g) dx as the discrete KL of the cell masses f(x_i) * step
    (the step cancels in the ratio). Spectrally accurate for smooth densities that vanish at
    the ends of the grid."""
    return float(kl_categorical(log_f + np.log(step), log_g + np.log(step)))


def kl_axis(lo, hi, step):
    return np.arange(lo, hi + step / 2, step)


def moment_match(weights, means, sds):
    """argmin over Gaussians q of KL(p || q): q has p's mean and variance."""
    w, m, s = map(np.asarray, (weights, means, sds))
    mean = float(w @ m)
    return mean, float(np.sqrt(w @ (s ** 2 + m ** 2) - mean ** 2))


def fit_gaussian_kl(log_p, t, step, start, reverse):
    """Gaussian (mu, sd) minimising KL(q || p) (reverse=True) or KL(p || q) on the grid t,
    from start = (mu, sd); optimised over (mu, log sd). Returns (mu, sd, KL)."""

    def kl(theta):
        log_q = normal_log_pdf(t, theta[0], np.exp(theta[1]))
        return kl_grid(log_q, log_p, step) if reverse else kl_grid(log_p, log_q, step)

    fit = minimize(kl, [start[0], np.log(start[1])], method="BFGS", options=dict(gtol=1e-9))
    return float(fit.x[0]), float(np.exp(fit.x[1])), float(fit.fun)


def kl_experiment(p, q, grid, starts):
    """Problem 2.2 for p = dict(weights, means, sds) and the narrow q = (mean, sd), on the
    quadrature line grid = (lo, hi, step): both divergences, the Gaussian fits in each direction
    (reverse ones from every start), and the change when the step is halved."""
    lo, hi, step = grid
    t = kl_axis(lo, hi, step)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    fwd_mu, fwd_sd = moment_match(**p)
    fwd_num = fit_gaussian_kl(log_p, t, step, (0.0, 1.0), reverse=False)
    rev = [fit_gaussian_kl(log_p, t, step, (m0, 1.0), reverse=True) for m0 in starts]
    optima = {}  # one entry per distinct local optimum
    for mu, sd, kl in rev:
        optima.setdefault(round(mu, 2), dict(mu=mu, sd=sd, kl=kl))
    optima = sorted(optima.values(), key=lambda o: o["mu"])
    t2 = kl_axis(lo, hi, step / 2)
    refined = [kl_grid(mixture_1d_log_pdf(t2, **p), normal_log_pdf(t2, *q), step / 2),
               kl_grid(normal_log_pdf(t2, *q), mixture_1d_log_pdf(t2, **p), step / 2)]
    res = dict(kl_pq=kl_grid(log_p, log_q, step), kl_qp=kl_grid(log_q, log_p, step))
    res.update(grid_delta=max(abs(refined[0] - res["kl_pq"]), abs(refined[1] - res["kl_qp"])),
               forward=dict(mu=fwd_mu, sd=fwd_sd, kl=kl_grid(log_p, normal_log_pdf(t, fwd_mu, fwd_sd), step),
                            numeric_mu=fwd_num[0], numeric_sd=fwd_num[1]),
               reverse_optima=optima, reverse_best=min(optima, key=lambda o: o["kl"]))
    return res


def bounds(x, means, checks=True):
    """Per-point log p and the uniform-q and posterior-q bounds, shape (n,) each; with checks,
    also the closed form of L(Unif), the gap log p - L(Unif) and KL(Unif || posterior)."""
    K = means.shape[0]
    lj = gmm_em.log_joint(x, means, gmm_em.uniform_weights(K))  # (n, K)
    log_p, log_post = gmm_em.posterior(lj)
    log_unif = np.full(K, -np.log(K))
    out = dict(log_p=log_p, unif=elbo(lj, log_unif), post=elbo(lj, log_post))
    if checks:
        out.update(closed=elbo_uniform_closed(x, means), gap=log_p - out["unif"],
                   kl_unif_post=kl_categorical(log_unif, log_post))
    return out


def expected_gap_quadrature(R, K, step=0.1):
    """E_p[log p(x) - L(Unif)(x)], the population value of the uniform-q gap, by the midpoint
    rule on a square that holds all but a negligible part of p (R + 12 standard deviations)."""
    half = R + 12.0
    axis = -half + step * (np.arange(int(round(2 * half / step))) + 0.5)
    gx, gy = np.meshgrid(axis, axis)
    g = np.stack([gx.ravel(), gy.ravel()], 1)
    means, weights = gmm_em.ring(K, R)
    log_p = gmm_em.log_prob(g, means, weights)
    return float((np.exp(log_p) * (log_p - elbo_uniform_closed(g, means))).sum() * step * step)


def summarise_bounds(b, R):
    mean = lambda a: float(np.mean(a))
    return dict(R=R, unif=mean(b["unif"]), post=mean(b["post"]), log_p=mean(b["log_p"]),
                gap=mean(b["gap"]), gap_se=mean_se(b["gap"])[1], gap_min=float(b["gap"].min()), gap_max=float(b["gap"].max()),
                gap_kl_err=float(np.abs(b["gap"] - b["kl_unif_post"]).max()),
                closed_err=float(np.abs(b["closed"] - b["unif"]).max()),
                post_err=float(np.abs(b["post"] - b["log_p"]).max()))


def limit_K_values(K_max, num):
    return np.unique(np.round(np.geomspace(2, K_max, num)).astype(int))


def bounds_vs_K(x, R, Ks, chunk_entries=2 ** 20):
    """For each K: the means over x of log p_K, L_K(Unif) and L_K(posterior), and the largest
    per-point distances of log p_K from the ring limit, of L_K(Unif) from its K >= 2 closed form
    and of L_K(posterior) from log p_K. Points go through in chunks so that no (n, K) array
    exceeds chunk_entries. Returns a dict of arrays of shape (len(Ks),)."""
    ring, unif_ring = ring_log_density(x, R), elbo_uniform_ring(x, R)
    rows = []
    for K in Ks:
        means = gmm_em.ring_means(K, R)
        size = max(1, chunk_entries // K)
        parts = [bounds(x[i:i + size], means, checks=False) for i in range(0, len(x), size)]
        b = {key: np.concatenate([p[key] for p in parts]) for key in ("log_p", "unif", "post")}
        rows.append((b["log_p"].mean(), b["unif"].mean(), b["post"].mean(),
                     np.abs(b["log_p"] - ring).max(), np.abs(b["unif"] - unif_ring).max(),
                     np.abs(b["post"] - b["log_p"]).max()))
    keys = ("log_p", "unif", "post", "ring_err", "unif_err", "post_err")
    return {key: np.array(col) for key, col in zip(keys, zip(*rows))}


def limit_experiment(x_big, x_small, R, R_small, Ks, points):
    """Problem 2.4. The sweep over K runs on the first `points` test points of each radius; the
    limits are closed forms, so they are also given on the whole big-radius test set, where they
    sit next to problem 2.3's numbers."""
    x = x_big[:points]
    big, small = bounds_vs_K(x, R, Ks), bounds_vs_K(x_small[:points], R_small, Ks)
    ring, unif = ring_log_density(x_big, R), elbo_uniform_ring(x_big, R)
    return dict(R=R, R_small=R_small, points=len(x), K=Ks.tolist(), **{key: v.tolist() for key, v in big.items()},
                ring_err_small=small["ring_err"].tolist(), sweep_ring_log_p=float(ring_log_density(x, R).mean()),
                sweep_unif_limit=float(elbo_uniform_ring(x, R).mean()), ring_log_p=float(ring.mean()),
                unif_limit=float(unif.mean()), gap_limit=float((ring - unif).mean()),
                unif_err_max=float(max(big["unif_err"].max(), small["unif_err"].max())),
                post_err_max=float(max(big["post_err"].max(), small["post_err"].max())))


def iwae_experiment(x, R, K, k_max, reps, rng):
    """The importance-weighted bound L_k of the uniform q for k = 1, 2, 4, ..., k_max on the
    points x, with its Monte Carlo standard error."""
    lj = gmm_em.log_joint(x, *gmm_em.ring(K, R))
    log_p, log_post = gmm_em.posterior(lj)
    log_q = np.full(K, -np.log(K))
    ks = 2 ** np.arange(int(np.log2(k_max)) + 1)
    mean, se = [], []
    for k in ks:
        s = iwae_samples(lj, log_q, int(k), reps, rng)  # (points, reps)
        mean.append(float(s.mean()))
        # the points are fixed, so the only noise is Monte Carlo: per-point variances add up
        se.append(float(np.sqrt(s.var(1, ddof=1).sum() / reps) / len(x)))
    return dict(R=R, points=len(x), reps=reps, k=ks.tolist(), L=mean, se=se,
                elbo=float(elbo_uniform_closed(x, gmm_em.ring_means(K, R)).mean()),
                log_p=float(log_p.mean()), gap_coef=float(iwae_gap_coefficient(log_post, log_q).mean()))


def run_vi(data, cfg):
    """Problems 2.2-2.4 and the importance-weighted bound. Returns (numbers, per-point bounds
    of both radii for the figures)."""
    radii = dict(big=(cfg.R, data["test"]), small=(cfg.R_small, data["test_small"]))
    per_point = {key: bounds(x, gmm_em.ring_means(cfg.K, R)) for key, (R, x) in radii.items()}
    elbo_res = {key: summarise_bounds(per_point[key], R) for key, (R, _) in radii.items()}
    for key, (R, _) in radii.items():  # the population values the sample means estimate
        elbo_res[key].update(expected_gap=expected_gap_quadrature(R, cfg.K),
                             expected_unif=float(-gmm_em.LOG_2PI - 1 - R ** 2))
    p = dict(weights=cfg.kl_p_weights, means=cfg.kl_p_means, sds=cfg.kl_p_sds)
    Ks = limit_K_values(cfg.K_max, cfg.limit_num_K)
    iwae = {key: iwae_experiment(x[:cfg.iwae_points], R, cfg.K, cfg.iwae_k_max, cfg.iwae_reps,
                                 stream(cfg.seed, f"iwae {key}")) for key, (R, x) in radii.items()}
    return dict(kl=kl_experiment(p, cfg.kl_q, cfg.kl_grid, cfg.kl_starts), elbo=elbo_res, iwae=iwae,
                limit=limit_experiment(data["test"], data["test_small"], cfg.R, cfg.R_small, Ks, cfg.limit_points)), \
        per_point


# ============================================ Figures ============================================
# Drawn from the results after every number exists, each at the size it is printed in theory.pdf
# (the text is TEXT_WIDTH inches wide), so the fonts set once in STYLE are the printed sizes.
# Okabe-Ito colours, safe for colour-blind readers; viridis for densities. figure_specs does the
# little computing the figures need; each fig_* function only draws.

TEXT_WIDTH = 6.75  # inches: US letter less two 2.2 cm margins (theory.tex's geometry)
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "legend.title_fontsize": 8, "legend.borderaxespad": 0.3, "legend.handlelength": 1.6,
         "lines.markersize": 4, "axes.titlepad": 4}
COLORS = {"true": "#000000", "fit": "#D55E00", "kde": "#0072B2", "ebm": "#009E73", "val": "#0072B2",
          "test": "#E69F00", "other": "#CC79A7", "grey": "#999999"}


def new_figure(ncols=1, width=TEXT_WIDTH, height=2.5, left=0.5, right=0.1, bottom=0.42, top=0.25, gap=0.55):
    """A row of ncols panels filling width x height inches, with fixed margins in inches around
    and between them (matplotlib's constrained layout measures every label before drawing and
    costs a third of the time of saving a figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    panel = (width - left - right - gap * (ncols - 1)) / ncols
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / panel)
    return fig, axes.ravel()


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(v, _pos=None):
    """A decade tick as plain text, 0.01 ... 1000 or 10⁻⁵: matplotlib's default $10^{-5}$ goes
    through its TeX-like parser, which costs more than the rest of a figure."""
    e = int(round(np.log10(v)))
    return f"{v:g}" if -2 <= e <= 3 else "10" + str(e).translate(SUPERSCRIPT)


def log_axis(ax, which="y", numticks=5):
    """A log scale with at most numticks labelled decades and no minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(numticks=numticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(decade_label))


def fig_em(data, gmm, K):
    """Problem 1.2: data, true and EM means at both radii; how fast EM reaches the maximum."""
    fig, axes = new_figure(3, height=2.45, left=0.42, gap=0.5)
    for ax, r, x in zip(axes[:2], (gmm["big"], gmm["small"]), (data["train"], data["train_small"])):
        ax.scatter(*x.T, s=2, c=COLORS["grey"], alpha=0.5, label="data", rasterized=True)
        ax.scatter(*gmm_em.ring_means(K, r["R"]).T, s=40, marker="x", c=COLORS["true"], label="true μₖ")
        ax.scatter(*np.array(r["means"]).T, s=40, marker="+", c=COLORS["fit"], label="EM")
        ax.set(title=f"R = {r['R']:g}: mean error {r['mean_dist']:.2f}", xlabel="x₁", aspect="equal")
    axes[0].set_ylabel("x₂")
    axes[0].legend(loc="center", handletextpad=0.2)
    ax = axes[2]
    for r, c, label in ((gmm["big"], COLORS["fit"], "R = {R:g}, EM"), (gmm["small"], COLORS["kde"], "R = {R:g}, EM")):
        gap = np.maximum(r["history"][-1] - np.array(r["plain"]), 1e-16)
        ax.plot(np.arange(1, gap.size + 1), gap, c=c, label=label.format(R=r["R"]))
    r = gmm["small"]
    ax.plot(np.array(r["maps"]) + 1, np.maximum(r["history"][-1] - np.array(r["history"]), 1e-16), "o", ms=2,
            c=COLORS["kde"], label=f"R = {r['R']:g}, accelerated")
    log_axis(ax)
    log_axis(ax, "x")
    ax.set(xlabel="EM iterations", ylabel="LL at the maximum − LL", title="distance to the maximum", ylim=(1e-16, 3))
    ax.legend(loc="lower left")
    return fig


def fig_kde(res):
    """Problem 1.3: validation and test log-likelihood against the kernel variance."""
    fig, (ax,) = new_figure(1, width=0.62 * TEXT_WIDTH, height=2.6, left=0.55)
    grid = np.array(res["grid"])
    ax.plot(grid, res["val_curve"], c=COLORS["val"], label="validation")
    ax.plot(grid, res["test_curve"], c=COLORS["test"], ls="--", label="test")
    ax.plot(res["sigma"], res["val_ll"], "o", c=COLORS["val"], label=f"chosen σ = {res['sigma']:.3f}")
    ax.axvline(res["scott_sigma"], c=COLORS["other"], ls=":", label=f"Scott's rule σ = {res['scott_sigma']:.2f}")
    log_axis(ax, "x")
    ax.set(ylim=(res["val_ll"] - 3.0, res["val_ll"] + 0.3), xlabel="σ (kernel variance)",
           ylabel="mean log-likelihood (nats)", title="choosing the kernel variance")
    ax.legend(loc="lower center")
    return fig


def candidate_name(tau, hidden, tex=False):
    """The one name of an EBM candidate: in figures (τ = 1, H = 32) or in LaTeX."""
    return f"$\\tau={tau:g}$, $H={hidden}$" if tex else f"τ = {tau:g}, H = {hidden}"


def fig_ebm_training(model, route, truth):
    """Problem 1.6: training of the examined model (left); the IS gradient measured (right)."""
    fig, axes = new_figure(2, height=2.6, left=0.55, gap=0.75)
    ax, h = axes[0], model["history"]
    ax.plot(h["steps"], h["objective"], c=COLORS["fit"], label="objective (training set)")
    ax.plot(h["steps"], h["val_ll"], c=COLORS["val"], label="validation LL")
    ax.axhline(truth["train"], c=COLORS["fit"], ls=":", label="true density, training set")
    ax.axhline(truth["val"], c=COLORS["val"], ls=":", label="true density, validation set")
    best = route["restarts"][0]["best_iteration"]
    ax.axvline(best, c=COLORS["grey"], lw=1, label=f"kept iterate {best}")
    top = max(max(h["objective"]), truth["train"], truth["val"])
    below = next(s for s, v in zip(h["steps"], h["val_ll"]) if v >= top - 0.8)
    ax.set(ylim=(top - 0.8, top + 0.05), xlabel="L-BFGS iteration", ylabel="mean log-likelihood (nats)",
           title=f"training ({candidate_name(route['tau'], route['hidden'])}); before {below}: below the axis")
    ax.legend(loc="lower right")
    ax, g = axes[1], model["gradient"]
    x = np.arange(len(g))
    ax.plot(x, [r["rel_err_train"] for r in g], "o-", c=COLORS["fit"], label="fixed training sample")
    ax.errorbar(x, [r["rel_err_fresh"] for r in g], yerr=[r["rel_err_fresh_sd"] for r in g], fmt="s--",
                c=COLORS["kde"], capsize=3, label="fresh samples (mean ± sd)")
    log_axis(ax)
    ax.set(xticks=x, xticklabels=[str(r["iteration"]) for r in g], xlabel="L-BFGS iteration (last: kept)",
           ylabel="‖F̂ − ∇A‖ / ‖∇A‖", title="the IS gradient against quadrature")
    ax.legend(loc="upper right")
    return fig


def fig_ebm_density(maps):
    """Problem 1.7: the three log-densities on one colour scale, cut below at vmin."""
    fig, axes = new_figure(3, height=2.25, left=0.4, right=0.85, top=0.22, bottom=0.38, gap=0.2)
    vmin = maps["true"].max() - 12
    half = (maps["axis"][1] - maps["axis"][0]) / 2
    for ax, key, title in zip(axes, ("true", "kde", "ebm"), ("true mixture", "KDE", "EBM (A by quadrature)")):
        im = ax.imshow(np.maximum(maps[key], vmin).reshape(maps["axis"].size, -1), cmap="viridis", vmin=vmin,
                       origin="lower", extent=(maps["axis"][0] - half, maps["axis"][-1] + half) * 2,
                       interpolation="bilinear")
        ax.set(title=title, xlabel="x₁")
    axes[0].set_ylabel("x₂")
    axes[1].set_yticks([]), axes[2].set_yticks([])
    cax = fig.add_axes([1 - 0.75 / TEXT_WIDTH, 0.38 / 2.25, 0.1 / TEXT_WIDTH, 1 - 0.6 / 2.25])
    fig.colorbar(im, cax=cax, label=f"log p(x), cut at {vmin:.1f}")
    return fig


def fig_ebm_selection(route):
    """The (tau, H) selection of the homework route: each candidate's best validation LL, with A
    from the held-out proposal sample (markers) and by quadrature (dashes)."""
    from matplotlib.lines import Line2D
    fig, (ax,) = new_figure(1, width=0.8 * TEXT_WIDTH, height=2.7, left=0.55, right=1.75)
    rows, widths = route["candidates"], sorted({r["hidden"] for r in route["candidates"]})
    taus = sorted({r["tau"] for r in rows})
    colours = dict(zip(widths, (COLORS["kde"], COLORS["fit"], COLORS["ebm"], COLORS["other"])))
    last = max(r["iterations"] for r in rows)
    for r in rows:
        x = taus.index(r["tau"]) + 0.18 * (widths.index(r["hidden"]) - (len(widths) - 1) / 2)
        full = r["iterations"] >= last or r["converged"]
        ax.plot(x, r["val_ll"], "o", c=colours[r["hidden"]], mfc=colours[r["hidden"]] if full else "white", ms=5)
        ax.plot(x, r["val_ll_grid"], "_", c=colours[r["hidden"]], ms=9, mew=1.5)
        if (r["tau"], r["hidden"]) == (route["tau"], route["hidden"]):
            ax.plot(x, r["val_ll"], "*", ms=14, mfc="none", c=COLORS["true"])
    handles = [Line2D([], [], ls="", marker="o", c=colours[h], label=f"H = {h}") for h in widths]
    handles += [Line2D([], [], ls="", marker="o", c="k", mfc="white", label="cut before the last round"),
                Line2D([], [], ls="", marker="_", c="k", ms=9, mew=1.5, label="A by quadrature"),
                Line2D([], [], ls="", marker="*", c="k", mfc="none", ms=10, label="chosen")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set(xticks=range(len(taus)), xticklabels=[f"{t:g}" for t in taus], xlabel="confinement scale τ",
           ylabel="best validation LL (nats)", title="EBM selection (markers: A by importance sampling)")
    return fig


def fig_ebm_samples(train, mala_x, exact_x, samples):
    """Beyond the homework: samples drawn from the learned EBM beside the training data, and
    their radius against exact draws."""
    fig, axes = new_figure(2, width=0.8 * TEXT_WIDTH, height=2.6, left=0.5, gap=0.6)
    ax = axes[0]
    ax.scatter(*train.T, s=2, c=COLORS["grey"], alpha=0.6, label="training data", rasterized=True)
    ax.scatter(*mala_x.T, s=2, c=COLORS["ebm"], alpha=0.4, label="MALA", rasterized=True)
    ax.set(title="samples from the EBM", xlabel="x₁", ylabel="x₂", aspect="equal")
    ax.legend(loc="center", markerscale=4)
    ax, r_exact = axes[1], np.linalg.norm(exact_x, axis=1)
    bins = np.linspace(0, r_exact.max(), 40)
    ax.hist(r_exact, bins, density=True, color=COLORS["grey"], alpha=0.6, label="exact draws")
    ax.hist(np.linalg.norm(mala_x, axis=1), bins, density=True, histtype="step", color=COLORS["ebm"], lw=1.5,
            label="MALA")
    ax.set(xlabel="‖x‖", ylabel="density", title=f"radius: KS distance {samples['ks_radius']:.3f}")
    ax.legend(loc="upper left")
    return fig


def fig_kl(res, p, q):
    """Problem 2.2: p and a narrow q (left), the two KL integrands (middle), Gaussian fits (right)."""
    t = np.linspace(-11, 11, 1101)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    fig, axes = new_figure(3, height=2.45, left=0.45, gap=0.55)
    axes[0].plot(t, np.exp(log_p), c=COLORS["true"], label="p")
    axes[0].plot(t, np.exp(log_q), c=COLORS["fit"], label=f"q = N({q[0]:g}, {q[1]:g}²)")
    axes[0].set(xlabel="x", ylabel="density", ylim=(0, 0.8), title=f"KL(p‖q) = {res['kl_pq']:.1f}, KL(q‖p) = {res['kl_qp']:.2f}")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, np.exp(log_p) * (log_p - log_q), c=COLORS["kde"], label="p log(p/q)")
    axes[1].plot(t, np.exp(log_q) * (log_q - log_p), c=COLORS["ebm"], ls="--", label="q log(q/p)")
    axes[1].set(xlabel="x", ylabel="integrand (nats per unit x)", title="paid where q is absent")
    axes[1].legend(loc="upper left")
    ax, f = axes[2], res["forward"]
    ax.fill_between(t, np.exp(log_p), color=COLORS["grey"], alpha=0.4, label="p")
    ax.plot(t, np.exp(normal_log_pdf(t, f["mu"], f["sd"])), c=COLORS["kde"], lw=2, label="argmin KL(p‖q)")
    for o in res["reverse_optima"]:
        best = o == res["reverse_best"]
        ax.plot(t, np.exp(normal_log_pdf(t, o["mu"], o["sd"])), c=COLORS["fit"], ls="-" if best else "--",
                label="argmin KL(q‖p)" if best else None)
    ax.set(xlabel="x", ylabel="density", ylim=(0, 0.8), title="Gaussian fits to p")
    ax.legend(loc="upper left")
    return fig


def fig_elbo_points(data, cfg, per_point):
    """Problem 2.3: per test point, log p and both bounds against the distance from the centre."""
    fig, axes = new_figure(2, height=2.6, left=0.55, gap=0.65)
    for ax, R, x, b in zip(axes, (cfg.R, cfg.R_small), (data["test"], data["test_small"]),
                           (per_point["big"], per_point["small"])):
        r = np.linalg.norm(x, axis=1)
        grid = np.linspace(0, r.max() * 1.02, 200)
        ax.scatter(r, b["log_p"], s=3, c=COLORS["true"], label="log p(x)", rasterized=True)
        ax.scatter(r, b["post"], s=12, marker="+", lw=0.6, c=COLORS["kde"], label="L(posterior)", rasterized=True)
        ax.scatter(r, b["unif"], s=3, c=COLORS["fit"], label="L(Unif)", rasterized=True)
        ax.plot(grid, elbo_uniform_ring(np.c_[grid, np.zeros_like(grid)], R), c=COLORS["grey"], lw=1,
                label="−log 2π − (‖x‖² + R²)/2")
        ax.set(xlabel="‖x‖ (distance from the centre)", ylabel="nats",
               title=f"R = {R:g}: mean gap of L(Unif) {np.mean(b['gap']):.2f}")
    axes[0].legend(loc="lower left")
    return fig


def fig_elbo_K(res):
    """Problem 2.4: the bounds against K on fixed points (left), the ring limit reached (right)."""
    K = np.array(res["K"])
    fig, axes = new_figure(2, height=2.6, left=0.55, gap=0.75)
    ax = axes[0]
    ax.plot(K, res["log_p"], "o", mfc="none", c=COLORS["true"], label="log p_K(x)")
    ax.plot(K, res["post"], "+", c=COLORS["kde"], label="L(posterior)")
    ax.plot(K, res["unif"], "s", ms=3, c=COLORS["fit"], label="L(Unif)")
    ax.axhline(res["sweep_ring_log_p"], c=COLORS["kde"], ls=":", lw=1.2, label="K = ∞: ring density")
    ax.axhline(res["sweep_unif_limit"], c=COLORS["fit"], ls=":", lw=1.2, label="−log 2π − (‖x‖² + R²)/2")
    log_axis(ax, "x")
    ax.set(xlabel="K (components on the ring)", ylabel=f"mean over {res['points']} points (nats)",
           title=f"R = {res['R']:g}: L(Unif) is flat in K")
    ax.legend(loc="center right")
    ax = axes[1]
    floor = 1e-17  # exact zeros (log p_K equal to the limit in floating point) drawn at the floor
    ax.plot(K, np.maximum(res["ring_err"], floor), "o-", ms=3, c=COLORS["true"], label=f"R = {res['R']:g}")
    ax.plot(K, np.maximum(res["ring_err_small"], floor), "s--", ms=3, c=COLORS["other"], label=f"R = {res['R_small']:g}")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set(xlabel="K (components on the ring)", ylabel="maxᵢ |log p_K(xᵢ) − limit| (nats)",
           title="log p_K reaches the ring limit")
    ax.legend(loc="upper right")
    return fig


def fig_iwae(res):
    """Beyond the homework: the importance-weighted bound of the uniform q against k."""
    fig, axes = new_figure(2, height=2.6, left=0.6, gap=0.75)
    r, ax = res["big"], axes[0]
    ax.errorbar(r["k"], r["L"], yerr=2 * np.array(r["se"]), fmt="o-", ms=3, c=COLORS["fit"], label="Lₖ (± 2 s.e.)")
    ax.axhline(r["log_p"], c=COLORS["true"], ls=":", label="log p(x)")
    ax.plot([1], [r["elbo"]], "x", ms=8, c=COLORS["kde"], label="L(Unif), closed form")
    log_axis(ax, "x")
    ax.set(xlabel="k (importance samples)", ylabel=f"mean over {r['points']} points (nats)",
           title=f"R = {r['R']:g}: L₁ = L(Unif) ≤ Lₖ ↑ log p")
    ax.legend(loc="lower right")
    ax = axes[1]
    for r, c, m in zip((res["big"], res["small"]), (COLORS["fit"], COLORS["other"]), ("o", "s")):
        k, gap = np.array(r["k"]), r["log_p"] - np.array(r["L"])
        ok = gap > 0  # a Monte Carlo estimate can cross log p once the gap is below its noise
        ax.errorbar(k[ok], gap[ok], yerr=2 * np.array(r["se"])[ok], fmt=m, ms=3, c=c, label=f"R = {r['R']:g}")
        ax.plot(k, r["gap_coef"] / k, c=c, lw=1, ls="--")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set(xlabel="k (importance samples)", ylabel="log p − Lₖ (nats)",
           title="gap; dashed: Var(w)/(2k p²), for large k")
    ax.legend(loc="lower left")
    return fig


def density_maps(cfg, data, kde_sigma, energy, A, num=128):
    """log-densities of the true mixture, the KDE and the EBM on the square plotting grid."""
    axis = np.linspace(-(cfg.R + 4), cfg.R + 4, num)
    pts = np.stack([g.ravel() for g in np.meshgrid(axis, axis)], 1)
    return dict(axis=axis, true=gmm_em.log_prob(pts, *gmm_em.ring(cfg.K, cfg.R)),
                kde=kde.log_density(pts, data["train"], kde_sigma), ebm=ebm.energies(energy, tensor(pts)).numpy() - A)


def figure_specs(cfg, data, results, models, per_point):
    """{name: (fig_function, args)}: every figure, with what little it needs computed here."""
    e, truth = results["ebm"], results["compare"]["test_ll"]["truth"]
    lines = dict(train=float(gmm_em.log_prob(data["train"], *gmm_em.ring(cfg.K, cfg.R)).mean()),
                 val=float(gmm_em.log_prob(data["val"], *gmm_em.ring(cfg.K, cfg.R)).mean()), test=truth["mean"])
    maps = density_maps(cfg, data, results["kde"]["sigma"], models["truth"]["energies"][0],
                        e["truth"]["restarts"][0]["A"])
    p = dict(weights=cfg.kl_p_weights, means=cfg.kl_p_means, sds=cfg.kl_p_sds)
    return dict(em=(fig_em, (data, results["gmm"], cfg.K)), kde=(fig_kde, (results["kde"],)),
                ebm_training=(fig_ebm_training, (e["model"], e["truth"], lines)),
                ebm_density=(fig_ebm_density, (maps,)), ebm_selection=(fig_ebm_selection, (e["truth"],)),
                ebm_samples=(fig_ebm_samples, (data["train"], models["samples"]["mala"], models["samples"]["exact"],
                                               e["model"]["samples"])),
                kl=(fig_kl, (results["vi"]["kl"], p, cfg.kl_q)), elbo_points=(fig_elbo_points, (data, cfg, per_point)),
                elbo_K=(fig_elbo_K, (results["vi"]["limit"],)), iwae=(fig_iwae, (results["vi"]["iwae"],)))


def render_figure(job):
    """Draw one figure from its spec; save it as vector PDF (for theory.pdf) and PNG."""
    import matplotlib.pyplot as plt
    out, name, (draw, args) = job
    fig = draw(*args)
    for ext in ("pdf", "png"):
        atomic_write(os.path.join(out, f"{name}.{ext}"), lambda tmp, ext=ext: fig.savefig(
            tmp, format=ext, dpi=150, **({"pil_kwargs": {"compress_level": 1}} if ext == "png" else {})))
    plt.close(fig)


# Relative drawing costs (panels, points), to hand out the slow figures first.
FIGURE_WEIGHT = {"em": 4, "kl": 4, "ebm_density": 3, "elbo_points": 3, "iwae": 3, "elbo_K": 3, "ebm_samples": 2}


def render_figures(out, specs, workers):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (loaded once, before the fork)
    jobs = [(out, name, specs[name]) for name in sorted(specs, key=lambda name: -FIGURE_WEIGHT.get(name, 1))]
    fork_map(render_figure, jobs, workers)


# ============================================ Claims and outputs =================================
# Every claim of the write-up that depends on the run, as a test of one run's results: the
# driver states it in words, and bench/seeds.py counts the seeds where it holds.

def _ebm(r, *path):
    return lookup(r["ebm"], ".".join(path))


CLAIMS = {  # name: (the claim in the seed sweep's table (LaTeX), test)
    "emRecovers": ("EM recovers the means at the large radius (mean error $<2\\times$ a labelled fit's)",
                   lambda r: r["gmm"]["big"]["mean_dist"] < 2 * r["gmm"]["big"]["labelled_error"]),
    "emMisses": ("\\quad and misses them at the small radius",
                 lambda r: r["gmm"]["small"]["mean_dist"] >= 2 * r["gmm"]["small"]["labelled_error"]),
    "kdeBeatsScott": ("the tuned KDE beats Scott's rule", lambda r: r["kde"]["val_ll"] > r["kde"]["scott_test_ll"]),
    "ebmBeatsKde": ("the EBM beats the KDE (every restart, or beyond 2 s.e.)",
                    lambda r: r["compare"]["ebm_minus_kde"]["holds"] == 1),
    "fittedBeatsKde": ("\\quad so does the EBM of the oracle-free proposal",
                       lambda r: r["compare"]["fitted_minus_kde"]["holds"] == 1),
    "selectionByQuadrature": ("validation with $A$ by quadrature picks the same $(\\tau,H)$",
                              lambda r: same_choice_by_quadrature(r["ebm"]["truth"])),
    "restartsConverged": ("every restart stops by the convergence rule",
                          lambda r: all(x["converged"] for k in ("truth", "fitted") for x in r["ebm"][k]["restarts"])),
    "boxCertified": ("every quadrature box holds all but $10^{-6}$ of its model's mass", lambda r: max_mass_outside(r) <= 1e-6),
    "freshAgrees": ("fresh-sample IS $A$ within 3 s.e.\\ of quadrature",
                    lambda r: abs(_ebm(r, "model.A_grid") - _ebm(r, "model.A_fresh_is")) < 3 * _ebm(r, "model.A_fresh_se")),
    "trainOptimistic": ("training-sample IS overstates the test LL",
                        lambda r: _ebm(r, "model.test_ll_train_is") > _ebm(r, "model.test_ll_grid")),
    "gradAccurate": ("IS gradient within 5\\% of quadrature at the kept iterate",
                     lambda r: r["ebm"]["model"]["gradient"][-1]["rel_err_train"] < 0.05),
    "malaAgrees": ("MALA passes the mode-mass and KS tests against the model ($p>0.01$)",
                   lambda r: min(_ebm(r, f"model.samples.p_{k}") for k in ("modes", "radius", "angle")) > 0.01),
    "boundsOrdered": ("$\\mathcal L_{\\mathrm{unif}}<\\mathcal L_{\\mathrm{post}}$ at both radii",
                      lambda r: all(r["vi"]["elbo"][k]["unif"] < r["vi"]["elbo"][k]["post"] for k in ("big", "small"))),
}


def same_choice_by_quadrature(route):
    return max(route["candidates"], key=lambda c: c["val_ll_grid"])["rank"] == 0


def max_mass_outside(r):
    boxes = [x["mass_outside"] for k in ("truth", "fitted") for x in r["ebm"][k]["restarts"] + r["ebm"][k]["candidates"]]
    return max(boxes + [r["ebm"]["model"]["mass_outside"]])


def lookup(results, path):
    """results["a"]["b"][0]... for the path "a.b.0"."""
    for key in path.split("."):
        results = results[int(key)] if isinstance(results, list) else results[key]
    return results


def format_macro(value, spec):
    """A value as LaTeX prints it: a format spec, or 'list' (comma-separated), 'count', 'normal'
    ((mean, sd) as N(mean, sd^2)) or 'mixture' (the config, for the p of problem 2.2)."""
    if spec == "list":
        return ", ".join(f"{v:g}" for v in value)
    if spec == "count":
        return str(len(value))
    if spec == "normal":
        return f"$\\N({value[0]:g},{value[1]:g}^2)$"
    if spec == "mixture":
        terms = zip(value["kl_p_weights"], value["kl_p_means"], value["kl_p_sds"])
        return "$" + "+".join(f"{w:g}\\,\\N({m:g},{s:g}^2)" for w, m, s in terms) + "$"
    return format(int(value) if spec == "d" else value, spec)


def verdict(comparison, wins, loses, ties):
    """One of three phrases, by the sign of a paired comparison's `holds`."""
    return {1: wins, -1: loses, 0: ties}[comparison["holds"]]


def statements(r):
    """Facts of a run that the write-up states in words: {macro: text}."""
    c, e = r["compare"], r["ebm"]
    chosen = lambda route: candidate_name(e[route]["tau"], e[route]["hidden"], tex=True)  # noqa: E731
    return {"ebmChosenTeX": chosen("truth"), "ebmFittedChosenTeX": chosen("fitted"),
            "ebmVersusKde": verdict(c["ebm_minus_kde"], "beats", "loses to", "cannot be told apart from"),
            "fittedVersusKde": verdict(c["fitted_minus_kde"], "beats", "loses to", "cannot be told apart from"),
            "ebmVersusFitted": verdict(c["ebm_minus_fitted"], "is ahead of", "is behind", "cannot be told apart from"),
            **{f"claim{name[0].upper()}{name[1:]}": "holds" if r["claims"][name] else "fails" for name in CLAIMS}}


def write_macros(path, macros, source):
    """A LaTeX file of \\newcommand lines, one per macro, written atomically."""
    lines = [f"% Generated by {source}; do not edit."] + [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in macros.items()]
    write_text(path, "\n".join(lines) + "\n")


def macros_of(results, table=os.path.join(os.path.dirname(os.path.abspath(__file__)), "theory", "numbers.tsv")):
    """{macro: text} for every number theory.pdf quotes (the table theory/numbers.tsv: macro,
    path into results.json, format) and every statement. A path the results do not hold is an
    error, so a renamed key cannot silently drop a number from the PDF."""
    out = {}
    with open(table) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, path, spec = line.split()
                try:
                    out[name] = format_macro(lookup(results, path), spec)
                except (KeyError, IndexError, TypeError) as e:
                    raise KeyError(f"{table}: {name} reads {path}, which results.json lacks ({e!r})") from None
    return {**out, **statements(results)}


def atomic_write(path, write):
    """Call write(tmp_path), then rename over path: readers see the old file or the new one."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's private 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text(path, text):
    atomic_write(path, lambda tmp: open(tmp, "w").write(text))


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def write_outputs(out, results, seconds, arrays, energy):
    """results.json (the same bytes for a seed), timings.json, results.tex (one macro per number
    the write-up quotes, when its table is at hand: the hand-in VI.py runs without it), the
    arrays ({file: {name: array}}, .npz) and the examined energy."""
    for name, content in arrays.items():
        atomic_write(os.path.join(out, name), lambda tmp, content=content: np.savez(open(tmp, "wb"), **content))
    atomic_write(os.path.join(out, "ebm_energy.pt"), lambda tmp: ebm.save_energy(energy, tmp))
    write_text(os.path.join(out, "results.json"), dump(results))
    write_text(os.path.join(out, "timings.json"), dump(seconds))
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "theory", "numbers.tsv")):
        macros = macros_of(results)
        macros["ebmTrainTime"] = f"{seconds['ebm_truth']:.1f}"
        write_macros(os.path.join(out, "results.tex"), macros, "python VI.py")


# ========================================= Command line =========================================

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other refusal here
        self.exit(2, f"VI.py: error: {message}\n")


def list_of(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}")
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def parse_args(argv):
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="plots", help="output folder (default: plots)")
    p.add_argument("--quick", action="store_true", help="small settings: a smoke run in seconds")
    p.add_argument("--no-figures", action="store_true", help="numbers only: skip drawing the figures")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for independent models and figures (results do not depend on it)")
    p.add_argument(NATIVE, action="store_true", help="leave each library's CPU kernels to itself (faster on some "
                   "machines; the numbers then match other machines only within the restarts' spread)")
    for f in fields(Config):
        kind = list_of(type(f.default[0])) if isinstance(f.default, tuple) else type(f.default)
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        p.add_argument(option(f.name), type=kind, default=None, help=f"{f.metadata['doc']} (default {shown})")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be positive (got {args.workers})")
    cfg = Config(**(QUICK if args.quick else {}))
    return replace(cfg, **{f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None}), args


def prepare_out(out):
    """Create out if needed and prove it is writable before any work is done."""
    os.makedirs(out, exist_ok=True)
    tempfile.NamedTemporaryFile(dir=out, prefix=".probe.").close()


def keep_freed_memory():
    """Ask glibc to keep freed memory in the process: by default it hands blocks above 128 kB
    back to the system and maps them again at the next allocation, so every training step's
    megabyte-sized temporaries paid page faults."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve large blocks from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: do not give the heap back
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


@contextlib.contextmanager
def clock(seconds, name):
    """Time the block into seconds[name] and say when it is done."""
    t = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t
    print(f"{name}: done in {seconds[name]:.1f} s", flush=True)


def run(cfg, workers, seconds):
    """Every part, in the homework's order. Returns (results, what the figures and files need)."""
    data, pmap = make_data(cfg), lambda fn, items: fork_map(fn, items, workers)
    results = {}
    with clock(seconds, "gmm"):  # problems 1.1-1.2: EM at both radii
        results["gmm"] = dict(big=run_em(data["train"], data["test"], cfg.R, cfg, "em"),
                              small=run_em(data["train_small"], data["test_small"], cfg.R_small, cfg, "em small"))
    with clock(seconds, "kde"):  # problem 1.3
        results["kde"] = run_kde(data["train"], data["val"], data["test"],
                                 kde.sigma_grid(cfg.sigma_min, cfg.sigma_max, cfg.sigma_num))
    with clock(seconds, "ebm"):  # problems 1.4-1.7
        results["ebm"], models = run_ebm(data, cfg, pmap)
    seconds.update({f"ebm_{route}": models[route]["seconds"] for route in ("truth", "fitted")})
    log_densities = test_log_densities(data, cfg, results, models)
    results["compare"] = compare(log_densities)  # the fitted densities, point by point
    with clock(seconds, "vi"):  # problems 2.2-2.4
        results["vi"], per_point = run_vi(data, cfg)
    return results, dict(data=data, models=models, per_point=per_point, log_densities=log_densities)


def main(argv=None):
    keep_freed_memory()
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check(cfg)
        prepare_out(args.out)
    except (ValueError, OSError) as e:
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    print("configuration:", json.dumps(asdict(cfg)), flush=True)
    seconds, start = {}, time.perf_counter()
    try:
        results, made = run(cfg, args.workers, seconds)
    except FloatingPointError as e:  # nothing has been written yet
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 1
    results.update(config=json.loads(json.dumps(asdict(cfg))), quick=args.quick)
    results["claims"] = {name: bool(test(results)) for name, (_, test) in CLAIMS.items()}
    if not args.no_figures:
        with clock(seconds, "figures"):
            render_figures(args.out, figure_specs(cfg, made["data"], results, made["models"], made["per_point"]),
                           args.workers)
    seconds["total"] = time.perf_counter() - start
    arrays = {"data.npz": made["data"], "log_densities.npz": made["log_densities"]}
    write_outputs(args.out, results, seconds, arrays, made["models"]["truth"]["energies"][0])
    print(f"wrote results.json, results.tex and the data files to {args.out}/ in {seconds['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
