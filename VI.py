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
# another order; L-BFGS with early stopping turns those last bits into another model. Each
# library reads its setting once, when it loads: so here, before numpy and torch are imported.
NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's kernels: AVX2, also on AVX-512 machines
    "MKL_CBWR": "COMPATIBLE",  # torch's matrix products (MKL): one code path on every CPU vendor
    "OPENBLAS_CORETYPE": "Nehalem",  # numpy's matrix products: SSE4.2 kernels, as numpy requires
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's loops: no AVX-512
    "OMP_NUM_THREADS": "1",  # one thread per model: a parallel sum's order follows the thread
    "MKL_NUM_THREADS": "1",  # count, so the cores train independent models instead (fork_map)
    "OPENBLAS_NUM_THREADS": "1",
}
NATIVE = "--native-numerics"  # frees the kernels only: fork_map's workers stay single-threaded,
os.environ.update({k: v for k, v in NUMERICS.items()  # as a fork after OpenMP started can hang
                   if NATIVE not in sys.argv[1:] or k.endswith("_NUM_THREADS")})

import argparse
import contextlib
import ctypes
import gc
import json
import math
import multiprocessing
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import i0e
from scipy.stats import multivariate_normal

import ebm
import gmm_em
import kde

# ---- settings, each with the rule its values obey (checked by check(), not on creation) --------

POSITIVE, NON_NEGATIVE = (lambda v: v > 0, "positive"), (lambda v: v >= 0, "non-negative")
ANY, FRACTION = (lambda v: True, ""), (lambda v: 0 < v < 1, "between 0 and 1")


def at_least(k):
    return lambda v: v >= k, f"at least {k}"


def each(rule, length=None, increasing=False):
    """A rule for a list: non-empty (or of the given length), every value satisfying `rule`."""
    test, words = rule

    def check(values):
        ok = len(values) == length if length else len(values) > 0
        ordered = not increasing or list(values) == sorted(set(values))
        return ok and ordered and all(map(test, values))
    size = f"a list of {length}" if length else "a non-empty list of"
    return check, " ".join(filter(None, (size, "increasing" * increasing, words, "values")))


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
    em_restarts: int = setting(5, POSITIVE, "k-means++ starts, each on its own stream")
    em_tol: float = setting(1e-8, POSITIVE, "stop once an EM step moves no parameter by more")
    em_max_maps: int = setting(20000, POSITIVE, "cap on the EM iterations of one start")
    # KDE (1.3): the variance sigma is searched on a log grid, then refined
    sigma_min: float = setting(1e-2, POSITIVE, "smallest kernel variance searched")
    sigma_max: float = setting(1e1, POSITIVE, "largest kernel variance searched")
    sigma_num: int = setting(61, POSITIVE, "log-spaced variances searched")
    # EBM (1.4-1.7)
    M: int = setting(5000, POSITIVE, "training proposal sample, drawn once (problem 1.6)")
    M_val: int = setting(20000, POSITIVE, "held-out proposal sample scoring the validation set")
    M_fresh: int = setting(250_000, POSITIVE, "independent proposal sample for A")
    ebm_taus: tuple = setting((0.5, 1.0, 2.0, 4.0, 8.0), each(POSITIVE), "confinement scales")
    ebm_widths: tuple = setting((16, 32, 64), each(POSITIVE), "hidden units searched")
    ebm_rungs: tuple = setting((40, 120, 400), each(POSITIVE, increasing=True),
                               "L-BFGS budgets of the successive-halving rounds")
    ebm_keep: int = setting(3, POSITIVE, "after each round but the last, the best 1/keep go on")
    ebm_restarts: int = setting(5, at_least(2), "starts of each chosen model, trained to the end")
    ebm_max_iter: int = setting(5000, POSITIVE, "cap on the L-BFGS iterations of a restart")
    ebm_memory: int = setting(20, POSITIVE, "L-BFGS history length")
    eval_every: int = setting(20, POSITIVE, "iterations between validation scores")
    ebm_patience: int = setting(300, POSITIVE, "least iterations without gain before a stop")
    ebm_checkpoints: tuple = setting((0, 10, 50, 150), each(NON_NEGATIVE, increasing=True),
                                     "iterations where the IS gradient is measured")
    grad_samples: int = setting(20, at_least(2), "fresh samples of size M at each checkpoint")
    grid_half_width: float = setting(20.0, POSITIVE, "first quadrature box [-h, h]^2 (it grows)")
    grid_step: float = setting(0.1, POSITIVE, "quadrature cell side")
    mala_chains: int = setting(2000, at_least(2), "Langevin chains, all started at one point")
    mala_jump: float = setting(0.2, FRACTION, "chance of a jump from the fitted Gaussian")
    mala_adapt: int = setting(100, NON_NEGATIVE, "steps that tune the step size, then frozen")
    mala_steps: int = setting(200, POSITIVE, "steps after the adaptation")
    mala_target: float = setting(0.574, FRACTION, "acceptance rate the adaptation aims at")
    # variational bounds (Section 2)
    kl_p_weights: tuple = setting((0.5, 0.3, 0.2), each(POSITIVE), "weights of the p of 2.2")
    kl_p_means: tuple = setting((-6.0, 0.0, 6.0), each(ANY), "its means")
    kl_p_sds: tuple = setting((1.0, 0.7, 0.8), each(POSITIVE), "its standard deviations")
    kl_q: tuple = setting((-6.0, 0.6), each(ANY, 2), "(mean, sd) of the narrow q")
    kl_grid: tuple = setting((-30.0, 30.0, 0.01), each(ANY, 3), "(lo, hi, step) of quadrature")
    kl_starts: tuple = setting((-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0), each(ANY),
                               "starting means of the reverse-KL fits")
    K_max: int = setting(10000, at_least(2), "largest K of problem 2.4")
    limit_num_K: int = setting(30, POSITIVE, "log-spaced K of 2.4 (before rounding)")
    limit_points: int = setting(250, POSITIVE, "test points of the K sweep")
    iwae_k_max: int = setting(1024, POSITIVE, "largest number of importance samples k")
    iwae_points: int = setting(100, POSITIVE, "test points of each radius")
    iwae_reps: int = setting(400, at_least(2), "Monte Carlo replicates per point and k")


RELATIONS = [  # rules that tie settings together
    (lambda c: c.K <= c.n, "--K cannot exceed --n: each component needs a point"),
    (lambda c: c.sigma_min <= c.sigma_max, "--sigma-min cannot exceed --sigma-max"),
    (lambda c: c.grid_step < c.grid_half_width, "--grid-step must be below --grid-half-width"),
    (lambda c: len(c.kl_p_weights) == len(c.kl_p_means) == len(c.kl_p_sds),
     "--kl-p-weights, --kl-p-means and --kl-p-sds need one value per mode each"),
    (lambda c: c.kl_q[1] > 0, "--kl-q is (mean, sd) with a positive sd"),
    (lambda c: c.kl_grid[0] < c.kl_grid[1] and c.kl_grid[2] > 0,
     "--kl-grid is (lo, hi, step) with lo < hi and step > 0"),
]

QUICK = dict(n=200, em_restarts=2, sigma_num=15, M=1000, M_val=2000, M_fresh=20000,
             ebm_taus=(1.0, 4.0), ebm_widths=(8, 16), ebm_rungs=(20, 60), ebm_restarts=2,
             ebm_max_iter=200, ebm_checkpoints=(0, 10), grad_samples=4, grid_step=0.25,
             mala_chains=200, mala_adapt=40, mala_steps=40, kl_grid=(-30.0, 30.0, 0.02),
             K_max=1000, limit_points=60, iwae_k_max=64, iwae_points=30, iwae_reps=100)


def option(name):
    return "--" + name.replace("_", "-")


def check(cfg):
    """Raise ValueError, naming the option, if cfg cannot be run."""
    for f in fields(cfg):
        (test, words), value = f.metadata["rule"], getattr(cfg, f.name)
        if not test(value):
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise ValueError(f"{option(f.name)} must be {words} (got {shown!r})")
    for test, words in RELATIONS:
        if not test(cfg):
            raise ValueError(words)


# ---- randomness and data: each use draws from its own stream, keyed by name, so changing
# ---- one size never changes another stream's draws -----------------------------------------

def stream(seed, name):
    """The numpy Generator of the stream called name: the seed's SeedSequence with a spawn key
    made from the name (as SeedSequence.spawn makes one from an index)."""
    key = (zlib.crc32(name.encode()),)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def torch_generator(seed, name):
    return torch.Generator().manual_seed(int(stream(seed, name).integers(2**62)))


def fitted_gaussian(x):
    """The broad Gaussian a practitioner can fit to the training data alone: its mean and
    covariance (for the ring, about (1 + R^2 / 2) I, wider than any component)."""
    return x.mean(0), np.cov(x.T)


def make_data(cfg):
    """Every random draw of a run, each from its own stream: the splits of both radii, the proposal
    samples of the routes (the true mixture; the Gaussian fitted to the data), the probes."""
    big, small = gmm_em.ring(cfg.K, cfg.R), gmm_em.ring(cfg.K, cfg.R_small)
    draw = lambda mix, size, name: gmm_em.sample(size, *mix, stream(cfg.seed, name))[0]
    probes = draw(big, cfg.grad_samples * cfg.M, "gradient probes")
    data = dict(train=draw(big, cfg.n, "train"), val=draw(big, cfg.n, "val"),
                test=draw(big, cfg.n, "test"), train_small=draw(small, cfg.n, "train_small"),
                test_small=draw(small, cfg.n, "test_small"), proposal=draw(big, cfg.M, "proposal"),
                val_proposal=draw(big, cfg.M_val, "val_proposal"),
                fresh_proposal=draw(big, cfg.M_fresh, "fresh proposal"),
                probes=probes.reshape(cfg.grad_samples, cfg.M, 2))
    mean, cov = fitted_gaussian(data["train"])
    for key, size in (("fitted_proposal", cfg.M), ("fitted_val_proposal", cfg.M_val)):
        normal = stream(cfg.seed, key.replace("_", " ")).normal(size=(size, 2))
        data[key] = mean + normal @ np.linalg.cholesky(cov).T
    return data


def mean_se(values):
    """Mean of per-point values and its standard error over the points."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def tensor(a):
    return torch.as_tensor(a, dtype=torch.float32)


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Let glibc's malloc keep freed tensors for reuse. By default it hands large buffers back to
    the system and page-faults them in again at the next allocation of that size, thousands of
    times per model; with both thresholds fixed high, python VI.py spent 1.5-1.9 s in the
    kernel instead of 2.2-3.1 s and took 10.7 s instead of 11.3 (medians of 4). Arithmetic,
    and so every result, is untouched. A no-op where malloc has no mallopt."""
    try:  # the process's own symbols: glibc's on Linux; elsewhere no mallopt, or no such call
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):
        mallopt = None
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # a value beyond int is an error
        mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD: buffers below it come from the heap
        mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD: free heap kept up to this size


def fork_map(fn, items, workers):
    """[fn(item) for item in items] in `workers` forked processes. fn may be a closure (the
    children inherit it by fork); items and results travel by pickle. One single-threaded
    process computes each item, so the results are the same bytes for any number of workers."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    global _JOB
    _JOB = fn
    gc.freeze()  # the children's collector then leaves the parent's objects (and pages) alone
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(items))) as pool:
            return pool.map(_run_job, items, chunksize=1)
    finally:
        gc.unfreeze()
        _JOB = None


def _run_job(item):  # in a forked child: _JOB is fork_map's fn, inherited from the parent
    return _JOB(item)


# =============================== Section 1: generative models ================================

def labelled_error(K, n):
    """Mean length of the N(0, (K/n) I) error of a mean of n/K labelled points, sqrt(pi K / 2n):
    EM cannot beat knowing the labels; within twice this, it counts as recovering the means."""
    return math.sqrt(math.pi * K / (2 * n))


def run_em(x_train, x_test, R, cfg, name, plain_iterations=1000):
    """Problem 1.2 at radius R: EM for (pi, mu), Sigma = I, run to its maximum from em_restarts
    k-means++ starts; its errors and log-likelihoods; plain EM's progress from the same start and
    where a rule on the log-likelihood alone stops; how far L-BFGS moves from EM's end (a check)."""
    means, weights = gmm_em.ring(cfg.K, R)
    starts = [stream(cfg.seed, f"{name} restart {r}") for r in range(cfg.em_restarts)]
    fit = gmm_em.fit_em(x_train, cfg.K, starts, cfg.em_tol, cfg.em_max_maps)
    start = gmm_em.kmeans_pp_init(x_train, cfg.K, stream(cfg.seed, f"{name} restart {fit.restart}"))
    plain = gmm_em.em(x_train, start, 0.0, plain_iterations, accelerate=False).history
    stop = 1 + int(np.argmax(np.diff(plain) < 1e-6))  # where a rule on the LL gain stops
    early = gmm_em.em(x_train, start, 0.0, stop, accelerate=False).means  # same start: labels
    ref_means, _, ref_ll = gmm_em.maximise_likelihood(x_train, fit.means, fit.weights)
    ll = lambda x, m, w: float(gmm_em.log_prob(x, m, w).mean())
    apart = lambda a, b: float(np.linalg.norm(a - b, axis=1).max())
    fitted, true = (fit.means, fit.weights), (means, weights)
    return dict(R=R, **gmm_em.parameter_errors(fit, means, weights), iterations=fit.n_iter,
                converged=fit.converged, restart=fit.restart, history=fit.history, maps=fit.maps,
                plain=plain, train_ll=ll(x_train, *fitted), train_ll_true=ll(x_train, *true),
                test_ll=ll(x_test, *fitted), test_ll_true=ll(x_test, *true),
                neighbour_spacing=float(2 * R * np.sin(np.pi / cfg.K)) if cfg.K > 1 else 0.0,
                labelled_error=labelled_error(cfg.K, cfg.n),
                recover_threshold=2 * labelled_error(cfg.K, cfg.n),
                early_means_left=apart(early, fit.means), means=fit.means.tolist(),
                weights=fit.weights.tolist(), ll_left=float(ref_ll - fit.history[-1]),
                means_left=apart(ref_means, fit.means))


def run_kde(x_train, x_val, x_test, grid):
    """Problem 1.3: sigma (a variance) by validation log-likelihood, then the test score."""
    sigma, val_ll, val_curve = kde.tune_sigma(x_train, x_val, grid)
    res = dict(sigma=sigma, bandwidth=float(np.sqrt(sigma)), val_ll=val_ll, grid=grid.tolist(),
               val_curve=val_curve.tolist(), interior=bool(grid[0] < sigma < grid[-1]),
               test_curve=kde.log_likelihood_curve(x_test, x_train, grid).tolist())
    for rule in ("scott", "silverman"):
        s = kde.rule_of_thumb_sigma(x_train, rule)
        res[f"{rule}_sigma"] = s
        res[f"{rule}_test_ll"] = kde.mean_log_likelihood(x_test, x_train, s)
    return res


# ---- problems 1.4-1.7: the EBM -----------------------------------------------------------------

def proposal_samples(data, cfg):
    """{route: (training sample, validation sample)} of the two importance-sampling routes: the
    homework's q, the true mixture (an oracle), and a Gaussian fitted to the training split."""
    truth = lambda x: gmm_em.log_prob(x, *gmm_em.ring(cfg.K, cfg.R))
    fitted = multivariate_normal(*fitted_gaussian(data["train"])).logpdf
    sample = lambda x, log_q: ebm.Sample(tensor(x), tensor(log_q(x)))
    return dict(truth=(sample(data["proposal"], truth), sample(data["val_proposal"], truth)),
                fitted=(sample(data["fitted_proposal"], fitted),
                        sample(data["fitted_val_proposal"], fitted)))


def init_energy(seed):
    """init(H, tau, r): the r-th initialisation of a network of width H, from its own stream.
    Every tau and route starts restart r alike: their comparisons are paired by initialisation."""
    def init(h, tau, r):
        return ebm.Energy(h, tau, torch_generator(seed, f"ebm init H={h} restart {r}"))
    return init


def ebm_settings(cfg):
    """The EBM's settings, grouped as ebm.fit_route takes them."""
    search = dict(taus=cfg.ebm_taus, widths=cfg.ebm_widths, rungs=cfg.ebm_rungs, keep=cfg.ebm_keep,
                  restarts=cfg.ebm_restarts, max_iter=cfg.ebm_max_iter)
    train = dict(eval_every=cfg.eval_every, memory=cfg.ebm_memory, patience=cfg.ebm_patience,
                 snapshot_at=cfg.ebm_checkpoints)
    return dict(search=search, settings=train, grid=(cfg.grid_step, cfg.grid_half_width))


def run_ebm(data, cfg, pmap):
    """Problems 1.4-1.7: both importance-sampling routes fitted, the homework route's first restart
    examined. Returns (numbers, models: each route's energies and test log-densities)."""
    x, samples = {k: tensor(data[k]) for k in ("train", "val", "test")}, proposal_samples(data, cfg)
    res, models, settings = {}, {}, ebm_settings(cfg)
    for route, pair in samples.items():
        res[route], models[route] = ebm.fit_route(init_energy(cfg.seed), x, pair, pmap=pmap,
                                                  **settings)
    truth = lambda p: ebm.Sample(tensor(p), tensor(gmm_em.log_prob(p, *gmm_em.ring(cfg.K, cfg.R))))
    start = tensor(np.repeat(data["train"][:1], cfg.mala_chains, 0))  # all at one training point
    checks = dict(train=samples["truth"][0], fresh=truth(data["fresh_proposal"]), start=start,
                  probes=[truth(p) for p in data["probes"]])
    mala = dict(steps=cfg.mala_steps, adapt=cfg.mala_adapt, target=cfg.mala_target,
                jump=cfg.mala_jump, proposal=fitted_gaussian(data["train"]))
    generators = [torch_generator(cfg.seed, name) for name in ("mala", "grid draws")]
    first = models["truth"]
    res["model"], models["samples"] = ebm.examine(first["runs"][0], first["energies"][0], checks,
                                                  x["test"], cfg.K, settings["grid"], mala,
                                                  generators)
    return res, models


# ---- the fitted densities compared, point by point and over restarts ----------------------------

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
    """Mean of log p_a - log p_b over the test points per restart (rows of (restarts, n), paired
    by initialisation) with its standard error; over restarts, mean, sd and a standard error that
    adds both noises. `holds` is +1 (-1) if a beats b (loses) on every restart by two of its
    standard errors, or on average by two combined ones; else 0: no claim."""
    d = np.atleast_2d(a - b)  # (restarts, n)
    means, ses = d.mean(1), d.std(1, ddof=1) / math.sqrt(d.shape[1])
    sd = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    se, mean = math.sqrt(sd**2 / len(means) + float(ses.mean()) ** 2), float(means.mean())
    holds = next((s for s in (1, -1) if all(s * means > 2 * ses) or s * mean > 2 * se), 0)
    return dict(per_restart=means.tolist(), se_points=ses.tolist(), mean=mean, sd=sd, se=se,
                holds=holds, minimum=float(means.min()), maximum=float(means.max()))


def compare(log_densities):
    """Each density's test LL (its mean over the points; over restarts, their mean and sd) and
    the paired differences of COMPARISONS."""
    lls = {}
    for name, ld in log_densities.items():
        rows = np.atleast_2d(ld)
        per = rows.mean(1)
        lls[name] = dict(mean=float(per.mean()), sd=float(per.std(ddof=1)) if len(per) > 1 else 0.0,
                         se_points=float(np.mean([mean_se(row)[1] for row in rows])),
                         per_restart=per.tolist())
    pairs = {key: paired(log_densities[a], log_densities[b]) for key, (a, b) in COMPARISONS.items()}
    return dict(test_ll=lls, **pairs)


# =============================== Section 2: variational bounds ===============================
# For a categorical q over the K components of the mixture (Sigma_k = I, pi_k = 1/K):
#   L(q) = sum_k q_k (log p(x, k) - log q_k),    log p(x) = L(q) + KL(q || p(z | x))      (2.1)
#   q = Unif:      L = -log 2 pi - (1/K) sum_k ||x - mu_k||^2 / 2
#                    = -log 2 pi - (||x||^2 + R^2) / 2   for K >= 2 (the centres sum to 0)
#   q = posterior: L = log p(x)
#   K -> inf:      log p_K(x) -> -log 2 pi - (||x||^2 + R^2) / 2 + log I_0(R ||x||)     (2.4)
#   IWAE:          L_k = E log (1/k) sum_j p(x, z_j) / q(z_j), z_j ~ q iid; L(q) <= L_k <= log p

def kl_categorical(log_q, log_p):
    """KL(q || p) = sum_k q_k (log q_k - log p_k) along the last axis; terms with q_k = 0 are 0."""
    q = np.exp(log_q)
    with np.errstate(invalid="ignore"):  # 0 * (-inf - -inf) is NaN; the where sets it to 0
        return np.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)


def elbo(log_joint_xk, log_q):
    """L(q) = sum_k q_k (log p(x, k) - log q_k), shape (n,): with the unnormalised joint in
    place of p this is -KL(q || p(x, .)), so kl_categorical does the work (and the q_k = 0 care)."""
    return -kl_categorical(log_q, log_joint_xk)


def elbo_uniform_closed(x, means):
    """L(Unif) with Sigma = I, pi = 1/K: -log 2 pi - mean_k ||x - mu_k||^2 / 2, shape (n,).
    The log pi_k and -log q_k terms cancel, leaving the average component log-density."""
    return -gmm_em.LOG_2PI - 0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1).mean(1)


def elbo_uniform_ring(x, R):
    """The same bound for K >= 2 ring centres: sum_k mu_k = 0 removes the cross term, so it
    depends on neither K nor the angle of x: -log 2 pi - (||x||^2 + R^2) / 2."""
    return -gmm_em.LOG_2PI - 0.5 * ((x**2).sum(-1) + R**2)


def log_i0(z):
    """log I_0(z) for z >= 0 via the scaled i0e(z) = exp(-z) I_0(z) (I_0 overflows at z ~ 713)."""
    return np.log(i0e(z)) + z


def ring_log_density(x, R):
    """K -> inf limit of the ring mixture: the angle of the centre is uniform on the circle,
    p(x) = (2 pi)^-1 exp(-(||x||^2 + R^2)/2) I_0(R ||x||); its log, shape (n,)."""
    return elbo_uniform_ring(x, R) + log_i0(R * np.sqrt((x**2).sum(-1)))


def iwae_samples(log_joint_xk, log_q, k, reps, rng):
    """reps draws of log (1/k) sum_{j<=k} p(x, z_j) / q(z_j), z_j ~ q iid, per point: (n, reps),
    from the counts c ~ Multinomial(k, q) of the draws: the same law at a cost free of k."""
    n, K = log_joint_xk.shape
    counts = rng.multinomial(k, np.exp(log_q), size=(n, reps))  # (n, reps, K)
    with np.errstate(divide="ignore"):  # components never drawn: log 0 = -inf drops them
        log_c = np.log(counts)
    return gmm_em.logsumexp(log_c + (log_joint_xk - log_q)[:, None, :], axis=-1) - np.log(k)


def iwae_gap_coefficient(log_post, log_q):
    """c with log p - L_k ~ c / k for large k (delta method on the log of a mean of k weights):
    c = Var_q(w) / 2, w = p(z | x) / q(z), E_q w = 1: c = (sum_z p(z | x)^2 / q(z) - 1) / 2."""
    return 0.5 * np.expm1(gmm_em.logsumexp(2 * log_post - log_q, axis=-1))


def normal_log_pdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2.0 * np.pi)


def mixture_1d_log_pdf(x, weights, means, sds):
    """log sum_k w_k N(x; m_k, s_k^2) on a 1-D array x, shape x.shape."""
    parts = [np.log(w) + normal_log_pdf(x, m, s) for w, m, s in zip(weights, means, sds)]
    return gmm_em.logsumexp(np.stack(parts), axis=0)


def kl_grid(log_f, log_g, step):
    """KL(f || g) = int f log(f / g) dx as the discrete KL of the cell masses f(x_i) * step
    (spectrally accurate for smooth densities that vanish at the ends of the grid)."""
    return float(kl_categorical(log_f + np.log(step), log_g + np.log(step)))


def kl_axis(lo, hi, step):
    return np.arange(lo, hi + step / 2, step)


def moment_match(weights, means, sds):
    """argmin over Gaussians q of KL(p || q): q has p's mean and variance."""
    w, m, s = map(np.asarray, (weights, means, sds))
    mean = float(w @ m)
    return mean, float(np.sqrt(w @ (s**2 + m**2) - mean**2))


def fit_gaussian_kl(log_p, t, step, start, reverse):
    """Gaussian (mu, sd) minimising KL(q || p) (reverse=True) or KL(p || q) on the grid t,
    from start = (mu, sd), over (mu, log sd). Returns (mu, sd, KL)."""

    def kl(theta):
        log_q = normal_log_pdf(t, theta[0], np.exp(theta[1]))
        return kl_grid(log_q, log_p, step) if reverse else kl_grid(log_p, log_q, step)

    fit = minimize(kl, [start[0], np.log(start[1])], method="BFGS", options=dict(gtol=1e-9))
    return float(fit.x[0]), float(np.exp(fit.x[1])), float(fit.fun)


def kl_experiment(p, q, grid, starts):
    """Problem 2.2 for p = dict(weights, means, sds), q = (mean, sd), on grid = (lo, hi, step):
    both divergences, Gaussian fits each way (reverse from every start), the step halved."""
    lo, hi, step = grid
    t, t2 = kl_axis(lo, hi, step), kl_axis(lo, hi, step / 2)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    fwd_mu, fwd_sd = moment_match(**p)
    fwd_num = fit_gaussian_kl(log_p, t, step, (0.0, 1.0), reverse=False)
    optima = {}  # one entry per distinct local optimum
    for m0 in starts:
        mu, sd, kl = fit_gaussian_kl(log_p, t, step, (m0, 1.0), reverse=True)
        optima.setdefault(round(mu, 2), dict(mu=mu, sd=sd, kl=kl))
    optima = sorted(optima.values(), key=lambda o: o["mu"])
    fine_p, fine_q = mixture_1d_log_pdf(t2, **p), normal_log_pdf(t2, *q)
    res = dict(kl_pq=kl_grid(log_p, log_q, step), kl_qp=kl_grid(log_q, log_p, step))
    res.update(grid_delta=max(abs(kl_grid(fine_p, fine_q, step / 2) - res["kl_pq"]),
                              abs(kl_grid(fine_q, fine_p, step / 2) - res["kl_qp"])),
               forward=dict(mu=fwd_mu, sd=fwd_sd, numeric_mu=fwd_num[0], numeric_sd=fwd_num[1],
                            kl=kl_grid(log_p, normal_log_pdf(t, fwd_mu, fwd_sd), step)),
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
    g = np.stack([a.ravel() for a in np.meshgrid(axis, axis)], 1)
    means, weights = gmm_em.ring(K, R)
    log_p = gmm_em.log_prob(g, means, weights)
    return float((np.exp(log_p) * (log_p - elbo_uniform_closed(g, means))).sum() * step * step)


def summarise_bounds(b, R):
    worst = lambda a, c: float(np.abs(b[a] - b[c]).max())
    return dict(R=R, unif=float(np.mean(b["unif"])), post=float(np.mean(b["post"])),
                log_p=float(np.mean(b["log_p"])), gap=float(np.mean(b["gap"])),
                gap_se=mean_se(b["gap"])[1], gap_min=float(b["gap"].min()),
                gap_max=float(b["gap"].max()), gap_kl_err=worst("gap", "kl_unif_post"),
                closed_err=worst("closed", "unif"), post_err=worst("post", "log_p"))


def limit_K_values(K_max, num):
    return np.unique(np.round(np.geomspace(2, K_max, num)).astype(int))


def bounds_vs_K(x, R, Ks, chunk_entries=2**20):
    """For each K, arrays (len(Ks),): the means over x of log p_K, L_K(Unif), L_K(posterior), and
    the largest distances of log p_K from the ring limit, of L_K(Unif) from its closed form and of
    L_K(posterior) from log p_K; the points in chunks of at most chunk_entries (n, K) entries."""
    ring, unif_ring = ring_log_density(x, R), elbo_uniform_ring(x, R)
    rows = []
    for K in Ks:
        means, size = gmm_em.ring_means(K, R), max(1, chunk_entries // K)
        parts = [bounds(x[i:i + size], means, checks=False) for i in range(0, len(x), size)]
        b = {key: np.concatenate([p[key] for p in parts]) for key in ("log_p", "unif", "post")}
        rows.append((b["log_p"].mean(), b["unif"].mean(), b["post"].mean(),
                     np.abs(b["log_p"] - ring).max(), np.abs(b["unif"] - unif_ring).max(),
                     np.abs(b["post"] - b["log_p"]).max()))
    keys = ("log_p", "unif", "post", "ring_err", "unif_err", "post_err")
    return {key: np.array(col) for key, col in zip(keys, zip(*rows, strict=True), strict=True)}


def limit_experiment(x_big, x_small, R, R_small, Ks, points):
    """Problem 2.4. The sweep over K runs on the first `points` test points of each radius; the
    limits are closed forms, so they are also given on the whole big-radius test set."""
    x = x_big[:points]
    big, small = bounds_vs_K(x, R, Ks), bounds_vs_K(x_small[:points], R_small, Ks)
    ring, unif = ring_log_density(x_big, R), elbo_uniform_ring(x_big, R)
    worst = lambda key: float(max(big[key].max(), small[key].max()))
    mean, lists = lambda a: float(np.mean(a)), {k: v.tolist() for k, v in big.items()}
    return dict(R=R, R_small=R_small, points=len(x), K=Ks.tolist(), **lists, ring_log_p=mean(ring),
                ring_err_small=small["ring_err"].tolist(), unif_limit=mean(unif),
                gap_limit=mean(ring - unif), sweep_ring_log_p=mean(ring_log_density(x, R)),
                sweep_unif_limit=mean(elbo_uniform_ring(x, R)),
                unif_err_max=worst("unif_err"), post_err_max=worst("post_err"))


def iwae_experiment(x, R, K, k_max, reps, rng):
    """The importance-weighted bound L_k of the uniform q, k = 1, 2, 4, ..., k_max, on the points
    x; its Monte Carlo standard error adds the per-point variances (the points are fixed)."""
    lj = gmm_em.log_joint(x, *gmm_em.ring(K, R))
    log_p, log_post = gmm_em.posterior(lj)
    log_q, ks = np.full(K, -np.log(K)), 2 ** np.arange(int(np.log2(k_max)) + 1)
    draws = [iwae_samples(lj, log_q, int(k), reps, rng) for k in ks]  # (points, reps) each
    unif = elbo_uniform_closed(x, gmm_em.ring_means(K, R))
    return dict(R=R, points=len(x), reps=reps, k=ks.tolist(), L=[float(s.mean()) for s in draws],
                se=[float(np.sqrt(s.var(1, ddof=1).sum() / reps) / len(x)) for s in draws],
                log_p=float(log_p.mean()), elbo=float(unif.mean()),
                gap_coef=float(iwae_gap_coefficient(log_post, log_q).mean()))


def run_vi(data, cfg):
    """Problems 2.2-2.4 and the importance-weighted bound. Returns (numbers, per-point bounds
    of both radii for the figures)."""
    radii = dict(big=(cfg.R, data["test"]), small=(cfg.R_small, data["test_small"]))
    per_point = {key: bounds(x, gmm_em.ring_means(cfg.K, R)) for key, (R, x) in radii.items()}
    elbo_res = {key: summarise_bounds(per_point[key], R) for key, (R, _) in radii.items()}
    for key, (R, _) in radii.items():  # the population values the sample means estimate
        elbo_res[key].update(expected_gap=expected_gap_quadrature(R, cfg.K),
                             expected_unif=float(-gmm_em.LOG_2PI - 1 - R**2))
    p = dict(weights=cfg.kl_p_weights, means=cfg.kl_p_means, sds=cfg.kl_p_sds)
    Ks = limit_K_values(cfg.K_max, cfg.limit_num_K)
    iwae = {key: iwae_experiment(x[:cfg.iwae_points], R, cfg.K, cfg.iwae_k_max, cfg.iwae_reps,
                                 stream(cfg.seed, f"iwae {key}")) for key, (R, x) in radii.items()}
    limit = limit_experiment(data["test"], data["test_small"], cfg.R, cfg.R_small, Ks,
                             cfg.limit_points)
    res = dict(kl=kl_experiment(p, cfg.kl_q, cfg.kl_grid, cfg.kl_starts), elbo=elbo_res,
               iwae=iwae, limit=limit)
    return res, per_point


# ============================================ Figures ============================================
# Each figure is drawn at the size theory.pdf prints it (the text is TEXT_WIDTH inches wide), so
# the fonts set once in STYLE are the printed sizes. figure_specs lays each out and hands its
# axes to a draw function: the parts' own (gmm_em, kde, ebm) or Section 2's below. Okabe-Ito
# colours, safe for colour-blind readers; viridis for densities.

TEXT_WIDTH = 6.75  # inches: US letter less two 2.2 cm margins (theory.tex's geometry)
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8, "legend.borderaxespad": 0.3,
         "legend.handlelength": 1.6, "lines.markersize": 4, "axes.titlepad": 4}
COLORS = {"true": "#000000", "fit": "#D55E00", "kde": "#0072B2", "ebm": "#009E73", "val": "#0072B2",
          "test": "#E69F00", "other": "#CC79A7", "grey": "#999999"}
MARGINS = dict(left=0.7, right=0.1, bottom=0.42, top=0.25, gap=0.75)  # inches
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(v, _pos=None):
    """A decade tick as plain text, 0.01 ... 1000 or 10⁻⁵: matplotlib's default $10^{-5}$ goes
    through its TeX-like parser, which costs more than the rest of a figure."""
    e = int(round(np.log10(v)))
    return f"{v:g}" if -2 <= e <= 3 else "10" + str(e).translate(SUPERSCRIPT)


def draw_figure(layout, draw, args):
    """A row of panels (layout: height, width, relative widths, MARGINS; inches) drawn on by
    draw(axes, *args, COLORS), each log axis with five plain-text decades at most."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    plt.rcParams.update(STYLE)
    m, w, h = {**MARGINS, **layout}, layout.get("width", TEXT_WIDTH), layout["height"]
    widths = layout.get("widths", [1])
    fig, axes = plt.subplots(1, len(widths), figsize=(w, h), squeeze=False, width_ratios=widths)
    panel = (w - m["left"] - m["right"] - m["gap"] * (len(widths) - 1)) / len(widths)
    fig.subplots_adjust(left=m["left"] / w, right=1 - m["right"] / w, bottom=m["bottom"] / h,
                        top=1 - m["top"] / h, wspace=m["gap"] / panel)  # constrained layout: slow
    draw(axes.ravel(), *args, COLORS)
    for axis in (a for ax in axes.ravel() for a in (ax.xaxis, ax.yaxis) if a.get_scale() == "log"):
        axis.set_major_locator(LogLocator(numticks=5)), axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(decade_label))
    return fig


def draw_kl(axes, res, p, q, colors):
    """Problem 2.2: p and a narrow q (left), the two KL integrands (middle), Gaussian fits."""
    t = np.linspace(-11, 11, 1101)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    axes[0].plot(t, np.exp(log_p), c=colors["true"], label="p")
    axes[0].plot(t, np.exp(log_q), c=colors["fit"], label=f"q = N({q[0]:g}, {q[1]:g}²)")
    axes[0].set(xlabel="x", ylabel="density", ylim=(0, 0.8),
                title=f"KL(p‖q) = {res['kl_pq']:.1f}, KL(q‖p) = {res['kl_qp']:.2f}")
    axes[1].plot(t, np.exp(log_p) * (log_p - log_q), c=colors["kde"], label="p log(p/q)")
    axes[1].plot(t, np.exp(log_q) * (log_q - log_p), c=colors["ebm"], ls="--", label="q log(q/p)")
    axes[1].set(xlabel="x", ylabel="integrand (nats per unit x)", title="paid where q is absent")
    gaussian = lambda fit: np.exp(normal_log_pdf(t, fit["mu"], fit["sd"]))
    axes[2].fill_between(t, np.exp(log_p), color=colors["grey"], alpha=0.4, label="p")
    axes[2].plot(t, gaussian(res["forward"]), c=colors["kde"], lw=2, label="argmin KL(p‖q)")
    for o in res["reverse_optima"]:
        best = o == res["reverse_best"]
        axes[2].plot(t, gaussian(o), c=colors["fit"], ls="-" if best else "--",
                     label="argmin KL(q‖p)" if best else None)
    axes[2].set(xlabel="x", ylabel="density", ylim=(0, 0.8), title="Gaussian fits to p")
    for ax, where in zip(axes, ("upper right", "upper left", "upper left"), strict=True):
        ax.legend(loc=where)


def draw_elbo_points(axes, data, radii, per_point, colors):
    """Problem 2.3: per test point, log p and both bounds against the distance from the centre."""
    for ax, R, x, b in zip(axes, radii, (data["test"], data["test_small"]),
                           (per_point["big"], per_point["small"]), strict=True):
        r = np.linalg.norm(x, axis=1)
        grid = np.linspace(0, r.max() * 1.02, 200)
        ax.scatter(r, b["log_p"], s=3, c=colors["true"], label="log p(x)", rasterized=True)
        ax.scatter(r, b["post"], s=12, marker="+", lw=0.6, c=colors["kde"], label="L(posterior)",
                   rasterized=True)
        ax.scatter(r, b["unif"], s=3, c=colors["fit"], label="L(Unif)", rasterized=True)
        ax.plot(grid, elbo_uniform_ring(np.c_[grid, 0 * grid], R), c=colors["grey"], lw=1,
                label="−log 2π − (‖x‖² + R²)/2")
        ax.set(xlabel="‖x‖ (distance from the centre)", ylabel="nats",
               title=f"R = {R:g}: mean gap of L(Unif) {np.mean(b['gap']):.2f}")
    axes[0].legend(loc="lower left")


def draw_elbo_K(axes, res, colors):
    """Problem 2.4: the bounds against K on fixed points (left), the ring limit reached (right)."""
    K, ax = np.array(res["K"]), axes[0]
    ax.plot(K, res["log_p"], "o", mfc="none", c=colors["true"], label="log p_K(x)")
    ax.plot(K, res["post"], "+", c=colors["kde"], label="L(posterior)")
    ax.plot(K, res["unif"], "s", ms=3, c=colors["fit"], label="L(Unif)")
    ax.axhline(res["sweep_ring_log_p"], c=colors["kde"], ls=":", label="K = ∞: ring density")
    ax.axhline(res["sweep_unif_limit"], c=colors["fit"], ls=":", label="−log 2π − (‖x‖² + R²)/2")
    ax.set(xscale="log", xlabel="K (components on the ring)",
           ylabel=f"mean over {res['points']} points (nats)",
           title=f"R = {res['R']:g}: L(Unif) is flat in K")
    ax.legend(loc="center right")
    for err, c, style, R in ((res["ring_err"], colors["true"], "o-", res["R"]),
                             (res["ring_err_small"], colors["other"], "s--", res["R_small"])):
        # exact zeros (log p_K equal to the limit in floating point) drawn at the floor 1e-17
        axes[1].plot(K, np.maximum(err, 1e-17), style, ms=3, c=c, label=f"R = {R:g}")
    axes[1].set(xscale="log", yscale="log", xlabel="K (components on the ring)",
                ylabel="maxᵢ |log p_K(xᵢ) − limit| (nats)", title="log p_K reaches the ring limit")
    axes[1].legend(loc="upper right")


def draw_iwae(axes, res, colors):
    """Beyond the homework: the importance-weighted bound of the uniform q against k."""
    r, ax = res["big"], axes[0]
    ax.errorbar(r["k"], r["L"], yerr=2 * np.array(r["se"]), fmt="o-", ms=3, c=colors["fit"],
                label="Lₖ (± 2 s.e.)")
    ax.axhline(r["log_p"], c=colors["true"], ls=":", label="log p(x)")
    ax.plot([1], [r["elbo"]], "x", ms=8, c=colors["kde"], label="L(Unif), closed form")
    ax.set(xscale="log", xlabel="k (importance samples)",
           ylabel=f"mean over {r['points']} points (nats)",
           title=f"R = {r['R']:g}: L₁ = L(Unif) ≤ Lₖ ↑ log p")
    ax.legend(loc="lower right")
    for r, c, m in ((res["big"], colors["fit"], "o"), (res["small"], colors["other"], "s")):
        k, gap, se = np.array(r["k"]), r["log_p"] - np.array(r["L"]), 2 * np.array(r["se"])
        ok = gap > 0  # a Monte Carlo estimate can cross log p once the gap is below its noise
        axes[1].errorbar(k[ok], gap[ok], yerr=se[ok], fmt=m, ms=3, c=c, label=f"R = {r['R']:g}")
        axes[1].plot(k, r["gap_coef"] / k, c=c, lw=1, ls="--")
    axes[1].set(xscale="log", yscale="log", xlabel="k (importance samples)",
                ylabel="log p − Lₖ (nats)", title="gap; dashed: Var(w)/(2k p²), for large k")
    axes[1].legend(loc="lower left")


def density_maps(cfg, data, kde_sigma, energy, A, num=128):
    """log-densities of the true mixture, the KDE and the EBM on the square plotting grid."""
    axis = np.linspace(-(cfg.R + 4), cfg.R + 4, num)
    pts = np.stack([g.ravel() for g in np.meshgrid(axis, axis)], 1)
    return dict(axis=axis, true=gmm_em.log_prob(pts, *gmm_em.ring(cfg.K, cfg.R)),
                kde=kde.log_density(pts, data["train"], kde_sigma),
                ebm=ebm.energies(energy, tensor(pts)).numpy() - A)


def figure_specs(cfg, data, results, models, per_point):
    """{name: (layout, draw, args)} of every figure, with what little it needs computed here."""
    e, vi, truth = results["ebm"], results["vi"], gmm_em.ring(cfg.K, cfg.R)
    lines = {k: float(gmm_em.log_prob(data[k], *truth).mean()) for k in ("train", "val")}
    maps = density_maps(cfg, data, results["kde"]["sigma"], models["truth"]["energies"][0],
                        e["truth"]["restarts"][0]["A"])
    p = dict(weights=cfg.kl_p_weights, means=cfg.kl_p_means, sds=cfg.kl_p_sds)
    two, three = dict(height=2.3, widths=[1, 1]), dict(height=2.25, widths=[1, 1, 1])
    samples = (data["train"], models["samples"]["mala"], models["samples"]["exact"],
               e["model"]["samples"])
    return dict(
        em=(dict(height=2.15, left=0.52, right=0.08, gap=0.62, widths=[1.45, 1.45, 2.15]),
            gmm_em.draw_em, (results["gmm"], (data["train"], data["train_small"]), cfg.K)),
        kde=(dict(width=0.55 * TEXT_WIDTH, height=2.2, left=0.55), kde.draw_kde, (results["kde"],)),
        ebm_training=(dict(two, gap=0.8), ebm.draw_training, (e["model"], e["truth"], lines)),
        ebm_density=(dict(height=2.05, left=0.55, right=0.62, top=0.22, bottom=0.38, gap=0.2,
                          widths=[1, 1, 1, 0.06]), ebm.draw_density, (maps,)),
        ebm_selection=(dict(width=0.8 * TEXT_WIDTH, height=2.3, left=0.68, right=1.45),
                       ebm.draw_selection, (e["truth"],)),
        ebm_samples=(dict(three, left=0.5, gap=0.7), ebm.draw_samples, samples),
        kl=(dict(three, left=0.52, gap=0.6), draw_kl, (vi["kl"], p, cfg.kl_q)),
        elbo_points=(dict(two, left=0.62, gap=0.7), draw_elbo_points,
                     (data, (cfg.R, cfg.R_small), per_point)),
        elbo_K=(dict(two, gap=0.8), draw_elbo_K, (vi["limit"],)),
        iwae=(dict(two, left=0.6), draw_iwae, (vi["iwae"],)))


def render_figure(job):
    """Draw one figure from its spec; save it as vector PDF (for theory.pdf) and PNG."""
    import matplotlib.pyplot as plt
    out, name, spec = job
    fig = draw_figure(*spec)
    for ext, options in (("pdf", {}), ("png", {"pil_kwargs": {"compress_level": 1}})):
        save = lambda tmp, ext=ext, kw=options: fig.savefig(tmp, format=ext, dpi=150, **kw)
        atomic_write(os.path.join(out, f"{name}.{ext}"), save)
    plt.close(fig)


def render_figures(out, specs, workers):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (loaded once, before the fork)
    panels = lambda name: -len(specs[name][0].get("widths", [1]))  # the slow figures first
    fork_map(render_figure, [(out, key, specs[key]) for key in sorted(specs, key=panels)], workers)


# ============================================ Claims and outputs =================================
# Every run-dependent claim of the write-up, as a test of one run's results: the driver records
# whether it holds (results.json) and the text states it in words (theory/macros.py);
# bench/seeds.py counts the seeds where it holds.

def _model(r, key):
    return r["ebm"]["model"][key]


CLAIMS = {  # name: (the claim as the seed sweep's table prints it (LaTeX), test)
    "emRecovers": ("EM recovers the means at the large radius (error $<2\\times$ a labelled fit's)",
                   lambda r: r["gmm"]["big"]["mean_dist"] < r["gmm"]["big"]["recover_threshold"]),
    "emMisses": ("\\quad and misses them at the small radius",
                 lambda r: r["gmm"]["small"]["mean_dist"]
                 >= r["gmm"]["small"]["recover_threshold"]),
    "kdeBeatsScott": ("the tuned KDE beats Scott's rule",
                      lambda r: r["compare"]["test_ll"]["kde"]["mean"] > r["kde"]["scott_test_ll"]),
    "ebmBeatsKde": ("the EBM beats the KDE (every restart, or beyond 2 s.e.)",
                    lambda r: r["compare"]["ebm_minus_kde"]["holds"] == 1),
    "fittedBeatsKde": ("\\quad so does the EBM of the oracle-free proposal",
                       lambda r: r["compare"]["fitted_minus_kde"]["holds"] == 1),
    "selectionByQuadrature": ("validation with $A$ by quadrature picks the same $(\\tau,H)$",
                              lambda r: same_choice_by_quadrature(r["ebm"]["truth"])),
    "restartsConverged": ("every restart stops by the convergence rule",
                          lambda r: all(x["converged"] for k in ("truth", "fitted")
                                        for x in r["ebm"][k]["restarts"])),
    "boxCertified": ("every quadrature box holds all but $10^{-6}$ of its model's mass",
                     lambda r: max_mass_outside(r) <= 1e-6),
    "freshAgrees": ("fresh-sample IS $A$ within 3 s.e.\\ of quadrature",
                    lambda r: abs(_model(r, "A_grid_minus_fresh")) < 3 * _model(r, "A_fresh_se")),
    "trainOptimistic": ("training-sample IS overstates the test LL",
                        lambda r: _model(r, "test_ll_train_is") > _model(r, "test_ll_grid")),
    "gradAccurate": ("IS gradient within 5\\% of quadrature at the kept iterate",
                     lambda r: _model(r, "gradient")[-1]["rel_err_train"] < 0.05),
    "malaAgrees": ("MALA passes the mode-mass and KS tests ($p>0.01$)",
                   lambda r: min(_model(r, "samples")[f"p_{k}"]
                                 for k in ("modes", "radius", "angle")) > 0.01),
    "boundsOrdered": ("$\\mathcal L_{\\mathrm{unif}}<\\mathcal L_{\\mathrm{post}}$ at both radii",
                      lambda r: all(r["vi"]["elbo"][k]["unif"] < r["vi"]["elbo"][k]["post"]
                                    for k in ("big", "small"))),
}


def same_choice_by_quadrature(route):
    return max(route["candidates"], key=lambda c: c["val_ll_grid"])["rank"] == 0


def max_mass_outside(r):
    """The largest mass outside its certified quadrature box of any model whose A is reported."""
    e = r["ebm"]
    rows = [x for k in ("truth", "fitted") for x in e[k]["restarts"] + e[k]["candidates"]]
    return max([x["mass_outside"] for x in rows] + [e["model"]["mass_outside"]])


def atomic_write(path, write):
    """Call write(tmp_path), then rename over path: readers see the old file or the new one."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.",
                               suffix=os.path.splitext(name)[1])
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
    """results.json (the same bytes for a seed), timings.json, the arrays ({file: {name: array}})
    and the examined energy; results.tex too, if the write-up is beside this VI.py."""
    for name, content in arrays.items():
        atomic_write(os.path.join(out, name), lambda tmp, c=content: np.savez(open(tmp, "wb"), **c))
    atomic_write(os.path.join(out, "ebm_energy.pt"), lambda tmp: ebm.save_energy(energy, tmp))
    write_text(os.path.join(out, "results.json"), dump(results))
    write_text(os.path.join(out, "timings.json"), dump(seconds))
    try:
        from theory import macros
    except ImportError:
        return
    text = macros.macro_file(macros.macros_of(results), "python VI.py")
    write_text(os.path.join(out, "results.tex"), text)


# ========================================= Command line =========================================

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other refusal here
        self.exit(2, f"VI.py: error: {message}\n")


def list_of(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, "
                                             f"got {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def parse_args(argv):
    p = OneLineParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="plots", help="output folder (default: plots)")
    p.add_argument("--quick", action="store_true", help="small settings: a smoke run in seconds")
    p.add_argument("--no-figures", action="store_true", help="numbers only")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for independent models and figures (the results do not vary)")
    p.add_argument(NATIVE, action="store_true", help="leave each library's CPU kernels to itself "
                   "(faster on some machines, then not bit-identical across machines)")
    for f in fields(Config):
        listed = isinstance(f.default, tuple)
        shown = ",".join(map(str, f.default)) if listed else f.default
        kind = list_of(type(f.default[0])) if listed else type(f.default)
        p.add_argument(option(f.name), type=kind, help=f"{f.metadata['doc']} (default {shown})")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be positive (got {args.workers})")
    given = {f.name: v for f in fields(Config) if (v := getattr(args, f.name)) is not None}
    return replace(Config(**(QUICK if args.quick else {})), **given), args


def prepare_out(out):
    """Create out if needed and prove it is writable before any work is done."""
    os.makedirs(out, exist_ok=True)
    tempfile.NamedTemporaryFile(dir=out, prefix=".probe.").close()


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
                              small=run_em(data["train_small"], data["test_small"], cfg.R_small,
                                           cfg, "em small"))
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
    results["claims"] = {name: bool(test(results)) for name, (_, test) in CLAIMS.items()}
    return results, dict(data=data, models=models, per_point=per_point, log_densities=log_densities)


def main(argv=None):
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check(cfg)
        prepare_out(args.out)
    except (ValueError, OSError) as e:
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    print("configuration:", json.dumps(asdict(cfg)), flush=True)
    keep_freed_memory()
    seconds, start = {}, time.perf_counter()
    try:
        results, made = run(cfg, args.workers, seconds)
    except FloatingPointError as e:  # nothing has been written yet
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 1
    results.update(config=json.loads(json.dumps(asdict(cfg))), quick=args.quick)
    if not args.no_figures:
        with clock(seconds, "figures"):
            specs = figure_specs(cfg, made["data"], results, made["models"], made["per_point"])
            render_figures(args.out, specs, args.workers)
    seconds["total"] = time.perf_counter() - start
    arrays = {"data.npz": made["data"], "log_densities.npz": made["log_densities"]}
    write_outputs(args.out, results, seconds, arrays, made["models"]["truth"]["energies"][0])
    print(f"wrote the numbers, figures and data files to {args.out}/ in {seconds['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
