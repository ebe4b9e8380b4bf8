"""The whole homework in one run, and the variational bounds of Section 2.

    python VI.py                    # every problem: numbers, figures and LaTeX macros in plots/
    python VI.py --appendix         # also more seeds, every EBM training route, every tau
    python VI.py --quick            # small settings, a smoke run in seconds
    python VI.py --no-figures       # numbers only

Where each problem is answered: 1.1-1.2 gmm_em.py (sample, em, em_starts); 1.3 kde.py
(tune_sigma); 1.4-1.7 ebm.py (Energy, log_partition, grad_log_partition, train; fit_route and
examine beyond the homework); 2.1-2.4 this file (elbo, bounds, kl_experiment,
ring_log_density, limit_experiment). main() reads as the homework: data, EM, KDE, EBM, the
fitted densities compared, the bounds, figures, outputs.

Needs Python >= 3.10, torch >= 2.13, numpy >= 1.26, scipy >= 1.11, matplotlib >= 3.7 (the
oldest versions tested). Same seed, same bytes of plots/results.json on every x86-64 CPU with
the pinned versions of requirements.txt: see pin_numerics.
"""
import sys

if sys.version_info < (3, 10):  # noqa: UP036  (the check itself: before what 3.9 cannot run)
    sys.stderr.write(f"VI.py: error: needs Python 3.10 or newer, not {sys.version.split()[0]}\n")
    sys.exit(2)

from tools.pins import pin_numerics  # noqa: E402  (after the version check)

if __name__ == "__main__":
    pin_numerics(sys.argv[1:])

import argparse
import functools
import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import i0e
from scipy.stats import multivariate_normal, norm, sem

import ebm
import gmm_em
import kde
from theory import figures, macros
from tools import cli, limits, outputs
from tools.processes import fork_map

# ---- the configuration: every setting, with its meaning; check() holds its rules ----------------


def setting(default, doc):
    return field(default=default, metadata=dict(doc=doc))


@dataclass(frozen=True)
class Config:
    seed: int = setting(0, "the seed every random stream derives from (>= 0)")
    # data (problem 1.1)
    n: int = setting(1000, "points in each of the train / validation / test splits")
    K: int = setting(10, "mixture components")
    R: float = setting(10.0, "ring radius of the main experiment (>= 0)")
    R_small: float = setting(1.0, "the overlapping contrast of problem 1.2 (>= 0)")
    # EM (1.2)
    em_restarts: int = setting(5, "k-means++ starts, each on its own stream")
    em_random_starts: int = setting(3, "starts at random data points; as many in the data's box")
    em_tol: float = setting(1e-8, "stop once an EM step moves no parameter by more")
    em_max_maps: int = setting(20000, "cap on the EM iterations of one start (>= 2)")
    # KDE (1.3): the variance sigma is searched on a log grid, then refined
    sigma_min: float = setting(1e-2, "smallest kernel variance searched")
    sigma_max: float = setting(1e1, "largest kernel variance searched")
    sigma_num: int = setting(61, "log-spaced variances searched")
    # EBM (1.4-1.7)
    M: int = setting(5000, "training proposal sample, drawn once (problem 1.6)")
    M_val: int = setting(20000, "held-out proposal sample scoring the validation set")
    M_fresh: int = setting(250_000, "independent proposal sample for A")
    ebm_taus: tuple = setting((0.5, 1.0, 2.0, 4.0, 8.0), "confinement scales searched")
    ebm_widths: tuple = setting((16, 32, 64), "hidden units searched")
    ebm_rungs: tuple = setting((40, 120, 400), "L-BFGS budgets of the successive-halving rounds "
                               "(increasing)")
    ebm_keep: int = setting(3, "after each round but the last, the best 1/keep go on")
    ebm_restarts: int = setting(5, "starts of each chosen model, trained to the end (>= 2)")
    ebm_max_iter: int = setting(5000, "cap on the L-BFGS iterations of a restart")
    ebm_memory: int = setting(20, "L-BFGS history length")
    eval_every: int = setting(20, "L-BFGS iterations between validation scores")
    ebm_patience: int = setting(300, "least iterations without gain before a stop")
    ebm_checkpoints: tuple = setting((0, 20, 60, 160), "iterations where the IS gradient is "
                                     "measured (increasing, >= 0)")
    grad_samples: int = setting(20, "fresh samples of size M at each checkpoint (>= 2)")
    grid_half_width: float = setting(20.0, "first quadrature box [-h, h]^2 (it grows)")
    grid_step: float = setting(0.1, "quadrature cell side")
    mala_chains: int = setting(2000, "Langevin chains, all started at one point (>= 2)")
    mala_jump: float = setting(0.2, "chance of a jump from the fitted Gaussian (in (0, 1))")
    mala_adapt: int = setting(100, "steps that tune the step size, then frozen (>= 0)")
    mala_steps: int = setting(200, "steps after the adaptation")
    mala_target: float = setting(0.574, "acceptance rate the adaptation aims at (in (0, 1))")
    # variational bounds (Section 2)
    kl_p_weights: tuple = setting((0.5, 0.3, 0.2), "weights of the p of 2.2")
    kl_p_means: tuple = setting((-6.0, 0.0, 6.0), "its means (any)")
    kl_p_sds: tuple = setting((1.0, 0.7, 0.8), "its standard deviations")
    kl_q: tuple = setting((-6.0, 0.6), "(mean, sd) of the narrow q")
    kl_grid: tuple = setting((-30.0, 30.0, 0.01), "(lo, hi, step) of the quadrature")
    kl_starts: tuple = setting((-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0), "starting means of the "
                               "reverse-KL fits (any)")
    K_max: int = setting(10000, "largest K of problem 2.4 (>= 2)")
    limit_num_K: int = setting(30, "log-spaced K of 2.4 (before rounding)")
    limit_points: int = setting(250, "test points of the K sweep")
    iwae_k_max: int = setting(1024, "largest number of importance samples k")
    iwae_points: int = setting(100, "test points of each radius")
    iwae_reps: int = setting(400, "Monte Carlo replicates per point and k (>= 2)")
    # the appendix (python VI.py --appendix)
    appendix_seeds: int = setting(8, "seeds of the robustness sweep, seed 0 included")


QUICK = dict(n=200, em_restarts=2, em_random_starts=1, em_max_maps=2000, sigma_num=15, M=1000,
             M_val=2000, M_fresh=20000, ebm_taus=(1.0, 4.0), ebm_widths=(8, 16), ebm_rungs=(20, 60),
             ebm_restarts=2, ebm_max_iter=200, ebm_checkpoints=(0, 20), grad_samples=4,
             grid_step=0.25, mala_chains=200, mala_adapt=40, mala_steps=40,
             kl_grid=(-30.0, 30.0, 0.02), K_max=1000, limit_points=60, iwae_k_max=64,
             iwae_points=30, iwae_reps=100, appendix_seeds=2)
ANY = {"kl_p_means", "kl_q", "kl_grid", "kl_starts"}  # any finite value (kl_q, kl_grid below)
AT_LEAST = {"seed": 0, "R": 0, "R_small": 0, "mala_adapt": 0, "ebm_checkpoints": 0,
            "ebm_restarts": 2, "grad_samples": 2, "mala_chains": 2, "K_max": 2, "iwae_reps": 2,
            "em_max_maps": 2,  # plain EM's gain in log-likelihood needs two iterations
            "n": 3,  # the fitted Gaussian's covariance needs three points in the plane
            "M": 2, "M_val": 2, "M_fresh": 2}  # a standard error needs two draws
RELATIONS = [  # rules that tie settings together, with the message that names what to change
    (lambda c: c.K <= c.n, "--K cannot exceed --n: each component needs a point"),
    (lambda c: c.sigma_min <= c.sigma_max, "--sigma-min cannot exceed --sigma-max"),
    (lambda c: c.grid_step < c.grid_half_width, "--grid-step must be below --grid-half-width"),
    (lambda c: max(c.ebm_taus) < 1e154, "--ebm-taus must be below 1e154 (tau^2 must be a float)"),
    (lambda c: 0 < c.mala_jump < 1 and 0 < c.mala_target < 1,
     "--mala-jump and --mala-target must be between 0 and 1"),
    (lambda c: list(c.ebm_rungs) == sorted(set(c.ebm_rungs)), "--ebm-rungs must increase"),
    (lambda c: list(c.ebm_checkpoints) == sorted(set(c.ebm_checkpoints)),
     "--ebm-checkpoints must increase"),
    (lambda c: len(c.kl_p_weights) == len(c.kl_p_means) == len(c.kl_p_sds),
     "--kl-p-weights, --kl-p-means and --kl-p-sds need one value per mode each"),
    (lambda c: abs(sum(c.kl_p_weights) - 1) < 1e-9, "--kl-p-weights must sum to 1"),
    (lambda c: len(c.kl_q) == 2 and c.kl_q[1] > 0, "--kl-q is (mean, sd) with a positive sd"),
    (lambda c: len(c.kl_grid) == 3 and c.kl_grid[0] < c.kl_grid[1] and c.kl_grid[2] > 0,
     "--kl-grid is (lo, hi, step) with lo < hi and step > 0"),
    (lambda c: kl_grid_covers(c), "--kl-grid must reach 10 sd beyond every mode of p and q and "
     "have a step below a tenth of the smallest sd (else the KL integrals are wrong)"),
]
def kl_grid_covers(c):
    means, sds = (*c.kl_p_means, c.kl_q[0]), (*c.kl_p_sds, c.kl_q[1])
    lo, hi, step = c.kl_grid
    return (lo <= min(m - 10 * s for m, s in zip(means, sds)) and step <= min(sds) / 10
            and hi >= max(m + 10 * s for m, s in zip(means, sds)))


def check(c):
    """Raise ValueError, naming the option to change, if c cannot be run: a rule above broken,
    or more memory or work asked for than tools/limits.py allows."""
    cli.check(c, AT_LEAST, ANY, RELATIONS)
    limits.check(c, default=Config())


def parse_args(argv):
    """(Config, the run's own options) from the command line; every Config field is an option."""
    p = cli.OneLineParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="plots", help="output folder (default: plots)")
    p.add_argument("--quick", action="store_true", help="small settings: a smoke run in seconds")
    p.add_argument("--no-figures", action="store_true", help="numbers only")
    p.add_argument("--appendix", action="store_true", help="also the seed sweep, every training "
                   "route of the EBM and every tau to convergence (theory.pdf's appendix)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for independent models (Linux only; the results do not vary)")
    p.add_argument("--native-numerics", action="store_true", help="leave each library's CPU "
                   "kernels and threads to itself (then not bit-identical across machines)")
    cli.add_fields(p, Config)
    args = p.parse_args(cli.negative_values_joined(argv))
    if args.workers < 1:
        p.error(f"--workers must be positive (got {args.workers})")
    return replace(Config(**(QUICK if args.quick else {})), **cli.given_fields(args, Config)), args


# ---- randomness: each use draws from its own stream, keyed by name, so changing one size never
# ---- changes another stream's draws --------------------------------------------------------------

def stream(seed, name):
    """The numpy Generator of the stream called name: the seed's SeedSequence with a spawn key
    made from the name (as SeedSequence.spawn makes one from an index)."""
    key = (zlib.crc32(name.encode()),)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def torch_generator(seed, name):
    return torch.Generator().manual_seed(int(stream(seed, name).integers(2**62)))


def fitted_gaussian(x):
    """The Gaussian fitted to the training data alone (for the ring, about (1 + R^2 / 2) I)."""
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


def tensor(a):
    return torch.as_tensor(a, dtype=torch.float32)


# =============================== Section 1: generative models ================================

def truth_sample(x, cfg):
    """Draws of the true mixture with their log-densities: a proposal sample of the homework's q."""
    return ebm.Sample(tensor(x), tensor(gmm_em.log_prob(x, *gmm_em.ring(cfg.K, cfg.R))))


def proposal_samples(data, cfg):
    """{route: (training sample, validation sample)} of the two importance-sampling routes: the
    homework's q, the true mixture (an oracle), and a Gaussian fitted to the training split."""
    fitted = multivariate_normal(*fitted_gaussian(data["train"])).logpdf
    sample = lambda x: ebm.Sample(tensor(x), tensor(fitted(x)))
    truth = lambda x: truth_sample(x, cfg)
    return dict(truth=(truth(data["proposal"]), truth(data["val_proposal"])),
                fitted=(sample(data["fitted_proposal"]), sample(data["fitted_val_proposal"])))


def init_energy(seed):
    """init(H, tau, r): the r-th initialisation of a network of width H, from its own stream.
    Every tau and route starts restart r alike: their comparisons are paired by initialisation."""
    def init(h, tau, r):
        return ebm.Energy(h, tau, torch_generator(seed, f"ebm init H={h} restart {r}"))
    return init


def fit_ebm_route(route, data, cfg):
    """Problem 1.6 by one importance-sampling route: (tau, H) selected, restarts trained. For the
    homework's route the first restart is also examined (problem 1.7). Returns numbers and
    arrays only, as a worker process sends them back."""
    x = {k: tensor(data[k]) for k in ("train", "val", "test")}
    samples = proposal_samples(data, cfg)
    res, models = ebm.fit_route(
        init_energy(cfg.seed), x, samples[route], taus=cfg.ebm_taus, widths=cfg.ebm_widths,
        rungs=cfg.ebm_rungs, keep=cfg.ebm_keep, restarts=cfg.ebm_restarts,
        max_iter=cfg.ebm_max_iter, eval_every=cfg.eval_every, memory=cfg.ebm_memory,
        patience=cfg.ebm_patience, snapshot_at=cfg.ebm_checkpoints,
        half_width=cfg.grid_half_width, step=cfg.grid_step,
        fresh=truth_sample(data["fresh_proposal"], cfg) if route == "truth" else None)
    out = dict(numbers=res, test=models["test"], by_is=models["by_is"], seconds=models["seconds"],
               energy=ebm.state_as_arrays(models["energies"][0]))
    if route == "truth":
        out["model"], out["points"] = examine_first(models, samples, data, cfg)
    return out


def examine_first(models, samples, data, cfg):
    """Problem 1.6's checks on the homework route's first restart (MALA from one data point)."""
    checks = dict(train=samples["truth"][0], probes=[truth_sample(p, cfg) for p in data["probes"]],
                  start=tensor(np.repeat(data["train"][:1], cfg.mala_chains, 0)))
    truth_ll = {k: float(gmm_em.log_prob(data[k], *gmm_em.ring(cfg.K, cfg.R)).mean())
                for k in ("train", "val")}
    mala = dict(steps=cfg.mala_steps, adapt=cfg.mala_adapt, target=cfg.mala_target,
                jump=cfg.mala_jump, proposal=fitted_gaussian(data["train"]))
    return ebm.examine(models["runs"][0], models["energies"][0], checks, truth_ll, K=cfg.K,
                       half_width=cfg.grid_half_width, step=cfg.grid_step, mala_settings=mala,
                       generators=[torch_generator(cfg.seed, n) for n in ("mala", "grid draws")])


def ebm_results(fits):
    """Problems 1.4-1.7 from both routes ({route: fit_ebm_route's output}). Returns (numbers,
    models: each route's first energy and test log-densities (restarts, n), MALA points)."""
    res = {route: f["numbers"] for route, f in fits.items()} | dict(model=fits["truth"]["model"])
    models = {route: dict(f, energy=ebm.energy_from_arrays(*f["energy"]))
              for route, f in fits.items()}
    return res, models | dict(samples=fits["truth"]["points"])


# ---- the fitted densities compared, point by point and over restarts ----------------------------

def test_log_densities(data, cfg, results, models):
    """log p(x) on the test points of every fitted density, shape (n,), or (restarts, n) for
    the EBMs: the truth, EM, the KDE, the EBM of each route with A by quadrature, the homework's
    EBM with A by importance sampling (1.7: fresh, training sample); and those A's s.e."""
    x, em, by_is = data["test"], results["gmm"]["big"], models["truth"]["by_is"]
    return dict(truth=gmm_em.log_prob(x, *gmm_em.ring(cfg.K, cfg.R)),
                em=gmm_em.log_prob(x, np.array(em["means"]), np.array(em["weights"])),
                kde=kde.log_density(x, data["train"], results["kde"]["sigma"]),
                ebm=models["truth"]["test"], ebm_fitted=models["fitted"]["test"],
                ebm_is=by_is["fresh"][0], ebm_is_train=by_is["train"][0]), \
        dict(ebm_is=by_is["fresh"][1], ebm_is_train=by_is["train"][1])


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


def mixture_1d_log_pdf(x, weights, means, sds):
    """log sum_k w_k N(x; m_k, s_k^2) on a 1-D array x, shape x.shape."""
    parts = [np.log(w) + norm.logpdf(x, m, s) for w, m, s in zip(weights, means, sds)]
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


def gaussian_kl(theta, log_p, t, step, reverse):
    """KL(q || p) (reverse) or KL(p || q) on the grid t for q = N(mu, sd^2), theta = (mu, log sd),
    and its gradient in theta. With z = (t - mu) / sd, d log q / d mu = z / sd and
    d log q / d log sd = z^2 - 1; d KL(q || p) = sum_i q_i (log q_i - log p_i + 1) d log q_i and
    d KL(p || q) = -sum_i p_i d log q_i, q_i and p_i the cell masses of kl_grid."""
    mu, sd = theta[0], np.exp(theta[1])
    z, log_q = (t - mu) / sd, norm.logpdf(t, mu, sd)
    d_log_q = np.stack([z / sd, z * z - 1])  # (2, grid)
    if reverse:
        return kl_grid(log_q, log_p, step), d_log_q @ (np.exp(log_q) * step * (log_q - log_p + 1))
    return kl_grid(log_p, log_q, step), -d_log_q @ (np.exp(log_p) * step)


def fit_gaussian_kl(log_p, t, step, start, reverse):
    """Gaussian (mu, sd) minimising KL(q || p) (reverse=True) or KL(p || q) on the grid t,
    from start = (mu, sd), by BFGS over (mu, log sd) with gaussian_kl's gradient. Returns (mu,
    sd, KL)."""
    fit = minimize(gaussian_kl, [start[0], np.log(start[1])], args=(log_p, t, step, reverse),
                   jac=True, method="BFGS", options=dict(gtol=1e-9))
    return float(fit.x[0]), float(np.exp(fit.x[1])), float(fit.fun)


def kl_experiment(p, q, grid, starts):
    """Problem 2.2 for p = dict(weights, means, sds), q = (mean, sd), on grid = (lo, hi, step):
    both divergences, Gaussian fits each way (reverse from every start), the step halved."""
    lo, hi, step = grid
    t, t2 = kl_axis(lo, hi, step), kl_axis(lo, hi, step / 2)
    log_p, log_q = mixture_1d_log_pdf(t, **p), norm.logpdf(t, *q)
    fwd_mu, fwd_sd = moment_match(**p)
    fwd_num = fit_gaussian_kl(log_p, t, step, (0.0, 1.0), reverse=False)
    optima = {}  # one entry per distinct local optimum
    for m0 in starts:
        mu, sd, kl = fit_gaussian_kl(log_p, t, step, (m0, 1.0), reverse=True)
        optima.setdefault(round(mu, 2), dict(mu=mu, sd=sd, kl=kl))
    optima = sorted(optima.values(), key=lambda o: o["mu"])
    fine_p, fine_q = mixture_1d_log_pdf(t2, **p), norm.logpdf(t2, *q)
    res = dict(kl_pq=kl_grid(log_p, log_q, step), kl_qp=kl_grid(log_q, log_p, step))
    res.update(grid_delta=max(abs(kl_grid(fine_p, fine_q, step / 2) - res["kl_pq"]),
                              abs(kl_grid(fine_q, fine_p, step / 2) - res["kl_qp"])),
               forward=dict(mu=fwd_mu, sd=fwd_sd, numeric_mu=fwd_num[0], numeric_sd=fwd_num[1],
                            kl=kl_grid(log_p, norm.logpdf(t, fwd_mu, fwd_sd), step)),
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
                gap_se=float(sem(b["gap"])), gap_min=float(b["gap"].min()),
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

def figure_specs(cfg, data, results, models, per_point):
    """{name: (layout, draw, args)} of every figure (theory/figures.py), with Section 2's
    densities."""
    log_p = functools.partial(mixture_1d_log_pdf, weights=cfg.kl_p_weights, means=cfg.kl_p_means,
                              sds=cfg.kl_p_sds)  # not a lambda: a worker unpickles it
    return figures.figure_specs(cfg, data, results, models, per_point, log_p=log_p,
                                log_normal=norm.logpdf, unif_bound=elbo_uniform_ring)


# ============================ The appendix: seeds, routes, every tau ==========================

def appendix_tasks(cfg, results):
    """The appendix's independent jobs, the longest first so that the cores finish together:
    ("seed", s) for the seed sweep (seed 0 is this run), then ("route", route, tau, H, restart)
    for the PCD and exact-gradient routes at their route's choice and the homework route at
    every other tau."""
    e, restarts = results["ebm"], range(cfg.ebm_restarts)
    tasks = [("seed", s) for s in range(1, cfg.appendix_seeds)]
    tasks += [("route", route, e[key]["tau"], e[key]["hidden"], r)
              for route, key in (("pcd", "fitted"), ("exact", "truth")) for r in restarts]
    return tasks + [("route", "truth", t, e["truth"]["hidden"], r) for t in cfg.ebm_taus
                    if t != e["truth"]["tau"] for r in restarts]


def appendix_job(task, cfg, data):
    """One appendix job, in a worker: a seed's numbers, or a route's (row, test log-densities)."""
    if task[0] == "seed":
        return run(replace(cfg, seed=task[1]), workers=1, seconds={}, say=lambda _: None)[0]
    _, route, tau, hidden, r = task
    x = {k: tensor(data[k]) for k in ("train", "val", "test")}
    return ebm.train_route(route, init_energy(cfg.seed), x, proposal_samples(data, cfg),
                           torch_generator(cfg.seed, f"pcd r={r}"), tau=tau, hidden=hidden, r=r,
                           max_iter=cfg.ebm_max_iter, eval_every=cfg.eval_every,
                           memory=cfg.ebm_memory, patience=cfg.ebm_patience,
                           half_width=cfg.grid_half_width, step=cfg.grid_step)


def run_appendix(cfg, results, log_densities, data, workers):
    """Beyond python VI.py's own run: the claims on more seeds, the EBM by every training route,
    and every tau trained to convergence. Returns the numbers theory.pdf's appendix reads."""
    tasks = appendix_tasks(cfg, results)
    done = dict(zip(tasks, fork_map(lambda t: appendix_job(t, cfg, data), tasks, workers)))
    seeds = [results] + [done[("seed", s)] for s in range(1, cfg.appendix_seeds)]
    return dict(seeds=[macros.seed_row(r) for r in seeds],
                **ebm.route_summary(results["ebm"], log_densities, done, taus=cfg.ebm_taus,
                                    restarts=cfg.ebm_restarts))


# ============================================ Outputs ============================================

def write_outputs(out, results, seconds, arrays, energy, appendix=None, say=print):
    """results.json (the same bytes for a seed), timings.json, the arrays ({file: {name: array}}),
    the examined energy, appendix.json with --appendix, and the LaTeX macros of them. Numbers
    these settings leave undefined are null in the JSON and n/a in the macros, and said."""
    results, undefined = outputs.nulled(results)
    missing = []
    tex = macros.macro_file(macros.macros_of(results, missing=missing), "python VI.py")
    for name, content in arrays.items():
        outputs.write_npz(os.path.join(out, name), content)
    ebm.save_energy(energy, os.path.join(out, "ebm_energy.pt"))
    outputs.write_text(os.path.join(out, "timings.json"), outputs.dump(seconds))
    outputs.write_text(os.path.join(out, "results.json"), outputs.dump(results))
    outputs.write_text(os.path.join(out, "results.tex"), tex)
    if appendix is not None:
        outputs.write_text(os.path.join(out, "appendix.json"), outputs.dump(appendix))
        tex = macros.appendix_macros(appendix, ebm.EXACT_STEP, ebm.PCD)
        outputs.write_text(os.path.join(out, "appendix.tex"),
                           macros.macro_file(tex, "python VI.py --appendix"))
    for what, names in (("undefined for these settings (null)", undefined),
                        ("of theory.pdf not computed for these settings (n/a)", missing)):
        if names:
            say(f"numbers {what}: {', '.join(names)}")


# ============================================ The run ============================================

def promised(args):
    """The files a run with these options writes (and replaces, all of them or none)."""
    names = ["data.npz", "log_densities.npz", "ebm_energy.pt", "timings.json", "results.json",
             "results.tex"] + ["appendix.json", "appendix.tex"] * args.appendix
    return names + [f"{f}.{ext}" for f in figures.NAMES for ext in ("pdf", "png")
                    if not args.no_figures]


def run_em(data, cfg, radius):
    """Problem 1.2 at one radius ("big": R, "small": R_small): EM from every start."""
    split, R, name = dict(big=("", cfg.R, "em"), small=("_small", cfg.R_small, "em small"))[radius]
    streams = lambda kind, r: stream(cfg.seed, f"{name} {kind} start {r}")
    starts = gmm_em.start_counts(cfg.em_restarts, cfg.em_random_starts)
    return gmm_em.em_experiment(data[f"train{split}"], data[f"test{split}"], R, cfg.K, streams,
                                starts, cfg.em_tol, cfg.em_max_maps)


def run(cfg, workers, seconds, say=print):
    """Every problem. Each part needs only the data, so the parts run side by side on the cores,
    the longest first (the same bytes for any number of workers). Returns (results, what the
    figures and files need)."""
    data = make_data(cfg)
    parts = {"ebm truth": lambda: fit_ebm_route("truth", data, cfg),  # problems 1.4-1.7
             "ebm fitted": lambda: fit_ebm_route("fitted", data, cfg),  # 1.7 without the oracle
             "em": lambda: run_em(data, cfg, "big"),  # problems 1.1-1.2
             "em small": lambda: run_em(data, cfg, "small"),
             "vi": lambda: run_vi(data, cfg),  # problems 2.2-2.4
             "kde": lambda: kde.kde_experiment(  # problem 1.3
                 data["train"], data["val"], data["test"],
                 kde.sigma_grid(cfg.sigma_min, cfg.sigma_max, cfg.sigma_num))}
    say(f"running {', '.join(parts)} side by side")
    with cli.clock(seconds, "all parts", say):
        done = cli.timed_parts(parts, lambda f, names: fork_map(f, names, workers), seconds, say)
    results = dict(gmm=dict(big=done["em"], small=done["em small"]), kde=done["kde"])
    results["ebm"], models = ebm_results({r: done[f"ebm {r}"] for r in ("truth", "fitted")})
    seconds.update({f"ebm_{route}": models[route]["seconds"] for route in ("truth", "fitted")})
    log_densities, shift_se = test_log_densities(data, cfg, results, models)
    results["compare"] = ebm.compare(log_densities, shift_se)  # point by point
    results["vi"], per_point = done["vi"]
    results["claims"] = macros.claims_of(results)
    results["config"] = json.loads(json.dumps(asdict(cfg)))
    return results, dict(data=data, models=models, per_point=per_point, log_densities=log_densities)


def main(argv=None):
    """Check the settings, lock --out, run into a staging folder, and move the files in whole."""
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    if hasattr(sys.stdout, "reconfigure"):  # any --out prints, whatever the encoding
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        check(cfg)
        figures.check_matplotlib(drawing=not args.no_figures)
        os.makedirs(args.out, exist_ok=True)
        held = outputs.lock(args.out)
    except (ValueError, OSError) as e:
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    try:
        staging = outputs.staging_folder(args.out, promised(args))
    except OSError as e:
        outputs.unlock(held)
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    try:
        with outputs.terminate_as_interrupt():
            seconds = run_and_publish(cfg, args, staging)
            outputs.move_in(staging, args.out, promised(args))
    except KeyboardInterrupt:
        print(f"VI.py: interrupted; {args.out}/ keeps its previous files", file=sys.stderr)
        return 130
    except (cli.PartFailed, OSError, RuntimeError) as e:
        print(f"VI.py: error: {e}; {args.out}/ keeps its previous files", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        outputs.unlock(held)
    cli.say(f"wrote the numbers, figures and data files to {args.out}/ in {seconds['total']:.1f} s")
    return 0


def run_and_publish(cfg, args, out):
    """The run, the appendix with --appendix, and every file written to out. Returns seconds."""
    say = cli.say
    say("configuration: " + json.dumps(asdict(cfg)))
    seconds, appendix = {}, None
    results, made = run(cfg, args.workers, seconds, say)
    if args.appendix:
        with cli.clock(seconds, "appendix", say):
            appendix = run_appendix(cfg, results, made["log_densities"], made["data"],
                                    args.workers)
    results["quick"] = args.quick
    publish(out, cfg, results, made, seconds, appendix, with_figures=not args.no_figures,
            workers=args.workers, say=cli.say)
    return seconds


def publish(out, cfg, results, made, seconds, appendix=None, with_figures=True, workers=1,
            say=print):
    """Figures, then every file: what main() does once the numbers are computed."""
    if with_figures:
        with cli.clock(seconds, "figures", say):
            specs = figure_specs(cfg, made["data"], results, made["models"], made["per_point"])
            figures.render_figures(out, specs, lambda f, items: fork_map(f, items, workers))
    seconds["total"] = sum(seconds.get(k, 0.0) for k in ("all parts", "appendix", "figures"))
    arrays = {"data.npz": made["data"], "log_densities.npz": made["log_densities"]}
    with cli.clock(seconds, "writing the files", lambda _: None):
        write_outputs(out, results, seconds, arrays, made["models"]["truth"]["energy"],
                      appendix, say)


if __name__ == "__main__":
    sys.exit(main())
