"""Driver of the whole homework, and the variational bounds of Section 2.

    python VI.py                  # every part: numbers, figures and LaTeX macros into plots/
    python VI.py --quick          # small settings, a smoke run in seconds
    python VI.py --no-figures     # numbers only
    python VI.py --parts kde,ebm  # only some parts (the others keep their earlier results)

Section 1 (gmm_em.py, kde.py, ebm.py): the ring mixture and EM at two radii, the
validation-tuned KDE, and the shallow-network EBM trained with an importance-sampled gradient,
its confinement and width chosen on validation data. Section 2 (this file): the evidence lower
bound L(q, theta) = E_q log(p(x, z | theta) / q(z)) of the same mixture,
log p(x | theta) = L(q, theta) + KL(q || p(z | x, theta)).

main() reads as the homework: data, EM, KDE, EBM, variational bounds, then figures, then the
outputs. Each part's runner returns its numbers and touches nothing else; figures are drawn from
those numbers; every file is written in one place at the end, under a temporary name first, so
an interrupted run leaves the previous outputs intact.
"""
import os

# numpy's OpenBLAS keeps its worker threads spinning after each call, and on two cores they
# take the second core from torch: one BLAS thread makes this run's EBM training 4x faster.
# The setting only takes effect if made before numpy is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import asdict, dataclass, fields, replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import i0e  # noqa: E402

import ebm  # noqa: E402
import gmm_em  # noqa: E402
import kde  # noqa: E402

PARTS = ("gmm", "kde", "ebm", "vi")


@dataclass(frozen=True)
class Config:
    seed: int = 0
    # data (problem 1.1)
    n: int = 1000  # points in each of the train / validation / test splits
    K: int = 10  # mixture components
    R: float = 10.0  # ring radius of the main experiment
    R_small: float = 1.0  # the overlapping contrast of problem 1.2
    # EM (1.2)
    em_restarts: int = 5
    em_tol: float = 1e-6  # stop when the mean log-likelihood moves less than this
    em_max_iter: int = 1000
    # KDE (1.3): the variance sigma is searched on a log grid, then refined
    sigma_min: float = 1e-2
    sigma_max: float = 1e1
    sigma_num: int = 61
    # EBM (1.4-1.7)
    M: int = 5000  # training proposal sample, drawn once (problem 1.6)
    M_val: int = 20000  # held-out proposal sample that scores the validation set
    M_fresh: int = 250_000  # independent proposal sample for the honest A estimate
    ebm_taus: tuple = (0.5, 1.0, 2.0, 4.0, 8.0)  # confinement scales searched
    ebm_widths: tuple = (16, 32, 64)  # hidden units searched
    ebm_rungs: tuple = (50, 150, 500)  # L-BFGS iterations of each successive-halving round
    ebm_keep: int = 3  # after each round but the last, the best 1/ebm_keep go on
    ebm_memory: int = 20  # L-BFGS history length
    eval_every: int = 10  # iterations between validation scores
    ebm_patience: int = 100  # stop a model whose validation score has not improved for this long
    ebm_checkpoints: tuple = (0, 10, 50, 150)  # iterations where the IS gradient is measured
    grad_samples: int = 20  # fresh proposal samples of size M at each checkpoint
    grid_half_width: float = 20.0  # quadrature box [-h, h]^2 for A and grad A
    grid_step: float = 0.1
    mala_chains: int = 2000
    mala_start_sd: float = 6.0  # chains start from N(0, sd^2 I), far from the ring in radius
    mala_adapt: int = 100  # steps that tune the step size, then frozen
    mala_steps: int = 200
    mala_target: float = 0.574  # acceptance rate of the adaptation (MALA's optimal, Roberts & Rosenthal 1998)
    # variational bounds (Section 2)
    kl_p_weights: tuple = (0.5, 0.3, 0.2)  # the trimodal p of 2.2
    kl_p_means: tuple = (-6.0, 0.0, 6.0)
    kl_p_sds: tuple = (1.0, 0.7, 0.8)
    kl_q: tuple = (-6.0, 0.6)  # (mean, sd) of the narrow q on p's heaviest mode
    kl_grid: tuple = (-30.0, 30.0, 0.01)  # quadrature box and step, wide enough for every fit
    kl_starts: tuple = (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0)  # reverse-KL starts (mean; sd = 1)
    K_max: int = 10000  # largest K of problem 2.4
    limit_num_K: int = 30  # log-spaced K of 2.4 (before rounding to unique integers)
    limit_points: int = 250  # the first test points used by the K sweep (cost ~ points * sum K)
    iwae_k_max: int = 1024  # largest number of importance samples k (k = 1, 2, 4, ...)
    iwae_points: int = 100  # the first test points of each radius
    iwae_reps: int = 400  # Monte Carlo replicates of the bound per point and k
    parts: str = ",".join(PARTS)


QUICK = dict(n=200, em_restarts=2, sigma_num=15, M=1000, M_val=2000, M_fresh=20000,
             ebm_taus=(1.0, 4.0), ebm_widths=(8, 16), ebm_rungs=(20, 60), ebm_checkpoints=(0, 10),
             grad_samples=4, grid_step=0.25, mala_chains=200, mala_adapt=40, mala_steps=40,
             kl_grid=(-30.0, 30.0, 0.02), K_max=1000, limit_points=60, iwae_k_max=64,
             iwae_points=30, iwae_reps=100)

# The settings each part's numbers depend on. A part kept from an earlier run (--parts runs
# only some) must have been computed with the same values, or the merge is refused.
DATA = ("seed", "n", "K", "R", "R_small")
KDE_SETTINGS = DATA + ("sigma_min", "sigma_max", "sigma_num")
SETTINGS = {
    "gmm": DATA + ("em_restarts", "em_tol", "em_max_iter"),
    "kde": KDE_SETTINGS,
    "ebm": KDE_SETTINGS + ("M", "M_val", "M_fresh", "ebm_taus", "ebm_widths", "ebm_rungs",
                           "ebm_keep", "ebm_memory", "eval_every", "ebm_patience", "ebm_checkpoints", "grad_samples",
                           "grid_half_width", "grid_step", "mala_chains", "mala_start_sd", "mala_adapt", "mala_steps",
                           "mala_target"),
    "vi": DATA + ("kl_p_weights", "kl_p_means", "kl_p_sds", "kl_q", "kl_grid", "kl_starts", "K_max",
                  "limit_num_K", "limit_points", "iwae_k_max", "iwae_points", "iwae_reps"),
}


def check_config(cfg):
    """Raise ValueError with a one-line reason if cfg cannot be run."""
    rules = [(cfg.n > 0, f"n must be positive (got {cfg.n})"),
             (cfg.K >= 1, f"K must be at least 1 (got {cfg.K})"),
             (cfg.K <= cfg.n, f"K={cfg.K} components need at least K points (n={cfg.n})"),
             (cfg.R >= 0 and cfg.R_small >= 0, "R and R_small must be non-negative"),
             (cfg.M > 0 and cfg.M_val > 0 and cfg.M_fresh > 0, "M, M_val, M_fresh must be positive"),
             (cfg.sigma_num > 0, f"the sigma grid is empty (sigma_num={cfg.sigma_num})"),
             (0 < cfg.sigma_min <= cfg.sigma_max, "the sigma grid must satisfy 0 < sigma_min <= sigma_max"),
             (cfg.em_restarts >= 1 and cfg.em_max_iter >= 1 and cfg.em_tol > 0,
              "EM needs restarts >= 1, max_iter >= 1, tol > 0"),
             (len(cfg.ebm_taus) > 0 and min(cfg.ebm_taus) > 0, "ebm_taus must be positive confinement scales"),
             (len(cfg.ebm_widths) > 0 and min(cfg.ebm_widths) >= 1, "ebm_widths must be positive integers"),
             (len(cfg.ebm_rungs) > 0 and list(cfg.ebm_rungs) == sorted(set(cfg.ebm_rungs)) and cfg.ebm_rungs[0] >= 1,
              "ebm_rungs must be increasing positive iteration counts"),
             (cfg.ebm_keep >= 1 and cfg.ebm_memory >= 1 and cfg.eval_every >= 1 and cfg.ebm_patience >= 1,
              "ebm_keep, ebm_memory, eval_every and ebm_patience must be at least 1"),
             (min(cfg.ebm_checkpoints, default=0) >= 0 and max(cfg.ebm_checkpoints, default=0) < cfg.ebm_rungs[-1],
              "ebm_checkpoints must lie before the last rung"),
             (cfg.grad_samples >= 2, "grad_samples must be at least 2 (a spread needs two samples)"),
             (cfg.grid_half_width > 0 and 0 < cfg.grid_step < cfg.grid_half_width,
              "the quadrature grid needs 0 < grid_step < grid_half_width"),
             (cfg.mala_chains >= 2 and cfg.mala_adapt >= 0 and cfg.mala_steps >= 1 and cfg.mala_start_sd > 0
              and 0 < cfg.mala_target < 1, "MALA needs chains >= 2, steps >= 1, start_sd > 0, 0 < target < 1"),
             (len(cfg.kl_p_weights) == len(cfg.kl_p_means) == len(cfg.kl_p_sds) > 0
              and min(cfg.kl_p_sds) > 0 and min(cfg.kl_p_weights) > 0, "the p of 2.2 needs matching positive weights, means, sds"),
             (len(cfg.kl_q) == 2 and cfg.kl_q[1] > 0, "kl_q is (mean, sd) with sd > 0"),
             (len(cfg.kl_grid) == 3 and cfg.kl_grid[0] < cfg.kl_grid[1] and cfg.kl_grid[2] > 0, "kl_grid is (lo, hi, step)"),
             (cfg.K_max >= 2 and cfg.limit_num_K >= 1 and cfg.limit_points >= 1, f"K_max must be at least 2 (got {cfg.K_max})"),
             (cfg.iwae_k_max >= 1 and cfg.iwae_points >= 1 and cfg.iwae_reps >= 2, "IWAE needs k_max, points >= 1, reps >= 2")]
    for ok, reason in rules:
        if not ok:
            raise ValueError(reason)
    unknown = set(parts_of(cfg)) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part {sorted(unknown)[0]!r}; choose from {', '.join(PARTS)}")


def parts_of(cfg):
    return [p.strip() for p in cfg.parts.split(",") if p.strip()]


def settings_of(cfg, part):
    """The values of the settings a part depends on, as results.json stores them."""
    return json.loads(json.dumps({k: getattr(cfg, k) for k in SETTINGS[part]}))


# ---------------------------------------------------------------------------------------------
# Randomness and data. Each use draws from its own stream, keyed by name: adding a stream,
# running some of the parts or changing one size never changes another stream's draws.
# ---------------------------------------------------------------------------------------------

def stream(seed, name):
    """The numpy Generator of the stream called name: the seed's SeedSequence with a spawn key
    made from the name (as SeedSequence.spawn makes one from an index)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def torch_generator(seed, name):
    return torch.Generator().manual_seed(int(stream(seed, name).integers(2**62)))


def make_data(cfg):
    big, small = gmm_em.ring(cfg.K, cfg.R), gmm_em.ring(cfg.K, cfg.R_small)
    draw = lambda mixture, size, name: gmm_em.sample(size, *mixture, stream(cfg.seed, name))[0]
    return dict(train=draw(big, cfg.n, "train"), val=draw(big, cfg.n, "val"), test=draw(big, cfg.n, "test"),
                train_small=draw(small, cfg.n, "train_small"), test_small=draw(small, cfg.n, "test_small"),
                proposal=draw(big, cfg.M, "proposal"), val_proposal=draw(big, cfg.M_val, "val_proposal"))


def mean_se(values):
    """Mean of per-point values and its standard error over the points."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


# =============================== Section 1: generative models ================================

def run_em(x_train, x_test, R, cfg, rng):
    """Problem 1.2 at radius R: EM for (pi, mu) with Sigma = I, its errors against the truth
    and its log-likelihoods; and what the stopping rule left, measured against the maximum
    that L-BFGS reaches from EM's endpoint (the gain in log-likelihood, the move of the means)."""
    means, weights = gmm_em.ring(cfg.K, R)
    fit = gmm_em.fit_em(x_train, cfg.K, rng, cfg.em_restarts, cfg.em_tol, cfg.em_max_iter)
    ref_means, _, ref_ll = gmm_em.maximise_likelihood(x_train, fit.means, fit.weights)
    return dict(R=R, tol=cfg.em_tol, **gmm_em.parameter_errors(fit, means, weights), iterations=fit.n_iter,
                converged=fit.converged, restart=fit.restart,
                train_ll=float(gmm_em.log_prob(x_train, fit.means, fit.weights).mean()),
                train_ll_true=float(gmm_em.log_prob(x_train, means, weights).mean()),
                test_ll=float(gmm_em.log_prob(x_test, fit.means, fit.weights).mean()),
                test_ll_true=float(gmm_em.log_prob(x_test, means, weights).mean()),
                neighbour_spacing=float(2 * R * np.sin(np.pi / cfg.K)) if cfg.K > 1 else 0.0,
                means=fit.means.tolist(), weights=fit.weights.tolist(), history=fit.history,
                ll_left=float(ref_ll - fit.history[-1]),
                means_left=float(np.linalg.norm(ref_means - fit.means, axis=1).max()))


def run_kde(x_train, x_val, x_test, cfg):
    """Problem 1.3: sigma (a variance) by validation log-likelihood, then the test score."""
    grid = kde.sigma_grid(cfg.sigma_min, cfg.sigma_max, cfg.sigma_num)
    sigma, val_ll, val_curve = kde.tune_sigma(x_train, x_val, grid)
    test_ll, test_se = mean_se(kde.log_density(x_test, x_train, sigma))
    res = dict(sigma=sigma, bandwidth=float(np.sqrt(sigma)), val_ll=val_ll, test_ll=test_ll, test_ll_se=test_se,
               grid=grid.tolist(), val_curve=val_curve.tolist(),
               test_curve=kde.log_likelihood_curve(x_test, x_train, grid).tolist(),
               interior=bool(grid[0] < sigma < grid[-1]))
    for rule in ("scott", "silverman"):
        s = kde.rule_of_thumb_sigma(x_train, rule)
        res[f"{rule}_sigma"], res[f"{rule}_test_ll"] = s, kde.mean_log_likelihood(x_test, x_train, s)
    return res


# ---- problems 1.4-1.7: the EBM ---------------------------------------------------------------

def candidate_name(tau, hidden):
    return f"tau={tau:g},H={hidden}"


def select_energy(cfg, objective, score):
    """(tau, H) by validation log-likelihood over the grid ebm_taus x ebm_widths, by successive
    halving: every candidate gets ebm_rungs[0] L-BFGS iterations, the best 1/ebm_keep go on to
    ebm_rungs[1], and so on; the last round is the full length. A candidate is scored by its
    best validation log-likelihood so far. Every width starts from one initialisation (its own
    named stream), so candidates that differ only in tau start alike. Returns the runs by name
    and the name of the chosen one."""
    runs = {candidate_name(tau, h): ebm.Run(ebm.Energy(h, tau, torch_generator(cfg.seed, f"ebm init H={h}")))
            for h in cfg.ebm_widths for tau in cfg.ebm_taus}
    alive = list(runs)
    for r, until in enumerate(cfg.ebm_rungs):
        for name in alive:
            ebm.train(runs[name], objective, score, until, cfg.eval_every, cfg.ebm_memory, cfg.ebm_checkpoints,
                      cfg.ebm_patience)
        alive.sort(key=lambda name: -runs[name].best_val)  # stable: ties keep the grid's order
        if r < len(cfg.ebm_rungs) - 1:
            alive = alive[:math.ceil(len(alive) / cfg.ebm_keep)]
    return runs, alive[0]


def energy_on(energy, x):
    """E_theta at the points x (numpy, (n, 2)) as float64 numpy, shape (n,)."""
    with torch.no_grad():
        return energy(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def gradient_errors(energy, snapshots, train_sample, fresh_samples, cfg):
    """Problem 1.6 measured: at each stored state, the IS estimate F_hat of grad A from the
    fixed training sample and from fresh samples of the same size, against grad A by
    quadrature. Relative error ||F_hat - grad A|| / ||grad A|| and cosine similarity."""

    def flat(grads):
        return torch.cat([g.reshape(-1).double() for g in grads])

    def compare(f_hat, exact):
        return float((f_hat - exact).norm() / exact.norm()), float(f_hat @ exact / (f_hat.norm() * exact.norm()))

    rows = []
    for it, state in snapshots.items():
        energy.load_state_dict(state)
        exact = flat(ebm.grad_log_partition_grid(energy, cfg.grid_half_width, cfg.grid_step)[1])
        rel, cos = compare(flat(ebm.grad_log_partition_is(energy, train_sample)), exact)
        fresh = np.array([compare(flat(ebm.grad_log_partition_is(energy, s)), exact) for s in fresh_samples])
        rows.append(dict(iteration=it, rel_err_train=rel, cos_train=cos,
                         rel_err_fresh=float(fresh[:, 0].mean()), rel_err_fresh_sd=float(fresh[:, 0].std(ddof=1)),
                         rel_err_fresh_min=float(fresh[:, 0].min()), rel_err_fresh_max=float(fresh[:, 0].max()),
                         cos_fresh=float(fresh[:, 1].mean()), grad_norm=float(exact.norm())))
    return rows


def sample_checks(energy, cfg):
    """Samples from the learned EBM by MALA, started far from the model (a broad Gaussian),
    against exact draws from the quadrature grid: KS distances of the radius and the angle, at
    the start and at the end of the chains."""
    start = torch.as_tensor(stream(cfg.seed, "mala start").normal(size=(cfg.mala_chains, 2)) * cfg.mala_start_sd,
                            dtype=torch.float32)
    x, rate, h = ebm.mala(energy, start, cfg.mala_steps, torch_generator(cfg.seed, "mala"), adapt=cfg.mala_adapt,
                          target=cfg.mala_target)
    exact = ebm.sample_grid(energy, cfg.grid_half_width, cfg.grid_step, cfg.mala_chains,
                            torch_generator(cfg.seed, "grid draws")).numpy()
    x, start = x.double().numpy(), start.double().numpy()
    radius = lambda a: np.linalg.norm(a, axis=1)
    angle = lambda a: np.arctan2(a[:, 1], a[:, 0])
    ks_r, p_r = ebm.ks_two_sample(radius(x), radius(exact))
    ks_a, p_a = ebm.ks_two_sample(angle(x), angle(exact))
    return dict(chains=cfg.mala_chains, adapt=cfg.mala_adapt, steps=cfg.mala_steps, target=cfg.mala_target,
                start_sd=cfg.mala_start_sd, acceptance=rate, step_size=h, ks_radius=ks_r, p_radius=p_r,
                ks_angle=ks_a, p_angle=p_a, ks_radius_start=ebm.ks_two_sample(radius(start), radius(exact))[0]), x, exact


def sweep_rows(runs, x_val, x_test, cfg):
    """One row per candidate of the selection: its training and best validation score, and,
    for the record only, its validation and test log-likelihoods with A by quadrature (on a
    grid twice as coarse) instead of importance sampling."""
    rows = []
    for name, r in runs.items():
        e = ebm.restore_best(r)
        a = ebm.log_partition_grid(e, cfg.grid_half_width, 2 * cfg.grid_step)
        rows.append(dict(name=name, tau=e.tau, hidden=e.hidden.out_features, iterations=r.iterations,
                         stopped=r.stopped, best_iteration=r.best_iteration, val_ll=r.best_val,
                         val_ll_grid=float(energy_on(e, x_val).mean() - a), test_ll=float(energy_on(e, x_test).mean() - a)))
    return rows


def partition_estimates(energy, train_sample, fresh_sample, cfg):
    """Problem 1.7: A from the training proposal sample and from a fresh one, each with its
    delta-method standard error and ESS; Jensen's lower bound E_q[E - log q] from the fresh
    sample; A by quadrature, with the change when the box is enlarged or the step halved."""
    with torch.no_grad():
        lw_train = ebm.log_weights(energy, train_sample).double()
        lw_fresh = torch.cat([ebm.log_weights(energy, s).double() for s in fresh_sample])
    a_train, se_train, ess_train = ebm.log_mean_exp_se(lw_train)
    a_fresh, se_fresh, ess_fresh = ebm.log_mean_exp_se(lw_fresh)
    jensen, jensen_se = ebm.jensen_bound_se(lw_fresh)
    h, s = cfg.grid_half_width, cfg.grid_step
    a_grid = ebm.log_partition_grid(energy, h, s)
    checks = {"box x1.5": ebm.log_partition_grid(energy, 1.5 * h, s), "step /2": ebm.log_partition_grid(energy, h, s / 2)}
    return dict(A_train_is=a_train, A_train_se=se_train, ess_train=ess_train,
                A_fresh_is=a_fresh, A_fresh_se=se_fresh, ess_fresh=ess_fresh, jensen_bound=jensen, jensen_se=jensen_se,
                A_grid=a_grid, A_grid_checks=checks, grid_delta=max(abs(v - a_grid) for v in checks.values()),
                A_grid_minus_train=a_grid - a_train, A_grid_minus_fresh=a_grid - a_fresh)


def run_ebm(data, cfg, kde_sigma):
    """Problems 1.4-1.7: the EBM trained on the IS objective with the training proposal
    sample, (tau, H) chosen on validation data; A by three estimators with standard errors;
    the IS gradient measured against quadrature; samples from the model; the comparison with
    the KDE of variance kde_sigma on the same test points, paired point by point.

    Returns (numbers, extras): extras holds the trained energy and what only figures need."""
    means, weights = gmm_em.ring(cfg.K, cfg.R)
    T = lambda a: torch.as_tensor(a, dtype=torch.float32)
    sample = lambda x: ebm.Sample(T(x), T(gmm_em.log_prob(x, means, weights)))
    train_sample, val_sample = sample(data["proposal"]), sample(data["val_proposal"])
    objective = ebm.is_objective(T(data["train"]), train_sample)
    score = ebm.is_score(T(data["val"]), val_sample)

    print(f"EBM: choosing (tau, H) among {len(cfg.ebm_taus) * len(cfg.ebm_widths)} candidates "
          f"by successive halving over {'/'.join(map(str, cfg.ebm_rungs))} L-BFGS iterations", flush=True)
    t0 = time.perf_counter()
    runs, chosen = select_energy(cfg, objective, score)
    # the deliberately uninformed confinement: the largest tau at the chosen width, full length
    uninformed = candidate_name(max(cfg.ebm_taus), runs[chosen].energy.hidden.out_features)
    ebm.train(runs[uninformed], objective, score, cfg.ebm_rungs[-1], cfg.eval_every, cfg.ebm_memory,
              patience=cfg.ebm_patience)
    training_seconds = time.perf_counter() - t0
    sweep = sweep_rows(runs, data["val"], data["test"], cfg)
    grid_ll = lambda e: energy_on(e, data["test"]) - ebm.log_partition_grid(e, cfg.grid_half_width, cfg.grid_step)
    uninformed_ll = grid_ll(ebm.restore_best(runs[uninformed]))  # per test point
    run = runs[chosen]
    energy = ebm.restore_best(run)

    rng = stream(cfg.seed, "fresh proposal")
    fresh = [sample(gmm_em.sample(m, means, weights, rng)[0]) for m in np.diff(np.r_[0:cfg.M_fresh:2**17, cfg.M_fresh])]
    res = dict(chosen=chosen, tau=energy.tau, hidden=energy.hidden.out_features, iterations=run.iterations,
               best_iteration=run.best_iteration, val_ll=run.best_val, candidates=len(runs), sweep=sweep, M=cfg.M,
               uninformed=uninformed, val_ll_uninformed=runs[uninformed].best_val,
               uninformed_best_iteration=runs[uninformed].best_iteration,
               uninformed_iterations=runs[uninformed].iterations,
               **partition_estimates(energy, train_sample, fresh, cfg))
    e_test, ll = energy_on(energy, data["test"]), grid_ll(energy)
    oracle, kde_ll = gmm_em.log_prob(data["test"], means, weights), kde.log_density(data["test"], data["train"], kde_sigma)
    res.update(test_ll_grid=float(ll.mean()), test_ll_grid_se=mean_se(ll)[1],
               test_ll_train_is=float(e_test.mean() - res["A_train_is"]),
               test_ll_fresh_is=float(e_test.mean() - res["A_fresh_is"]),
               test_ll_uninformed=float(uninformed_ll.mean()), kde_test_ll=float(kde_ll.mean()), kde_sigma=kde_sigma,
               oracle_test_ll=float(oracle.mean()),
               oracle_train_ll=float(gmm_em.log_prob(data["train"], means, weights).mean()),
               oracle_val_ll=float(gmm_em.log_prob(data["val"], means, weights).mean()))
    # differences paired over the test points, with their standard errors
    for key, (a, b) in dict(ebm_minus_kde=(ll, kde_ll), oracle_minus_ebm=(oracle, ll),  # the latter estimates KL(p || p_theta)
                            uninformed_minus_kde=(uninformed_ll, kde_ll), chosen_minus_uninformed=(ll, uninformed_ll)).items():
        res[key], res[f"{key}_se"] = mean_se(a - b)
    res["A_gap_train_ratio"] = res["A_grid_minus_train"] / res["A_train_se"]
    # the same KL(p || p_theta) from the Jensen gap, with q = p: A - E_p[E - log p]
    res["kl_from_jensen"], res["kl_from_jensen_se"] = res["A_grid"] - res["jensen_bound"], res["jensen_se"]

    snapshots = {**{it: st for it, st in run.snapshots.items() if it < run.best_iteration},
                 run.best_iteration: run.best_state}
    probes = [sample(gmm_em.sample(cfg.M, means, weights, rng)[0]) for _ in range(cfg.grad_samples)]
    res["gradient"] = gradient_errors(ebm.Energy(res["hidden"], res["tau"]), snapshots, train_sample, probes, cfg)
    res["samples"], mala_x, exact_x = sample_checks(energy, cfg)
    res.update(history=dict(steps=run.steps, objective=run.objective, val_ll=run.val_ll),
               uninformed_history=dict(steps=runs[uninformed].steps, val_ll=runs[uninformed].val_ll))
    extras = dict(energy=energy, training_seconds=training_seconds, mala=mala_x, exact=exact_x,
                  candidate_seconds={name: r.seconds for name, r in runs.items()})  # times vary: timings.json
    return res, extras


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


def kl_pair(cfg):
    """The trimodal p of problem 2.2 as (weights, means, sds), and the narrow q as (mean, sd)."""
    return dict(weights=cfg.kl_p_weights, means=cfg.kl_p_means, sds=cfg.kl_p_sds), tuple(cfg.kl_q)


def kl_experiment(cfg):
    """Problem 2.2 and its fits; every number comes from the same quadrature grid."""
    p, q = kl_pair(cfg)
    lo, hi, step = cfg.kl_grid
    t = kl_axis(lo, hi, step)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    fwd_mu, fwd_sd = moment_match(**p)
    fwd_num = fit_gaussian_kl(log_p, t, step, (0.0, 1.0), reverse=False)
    rev = [fit_gaussian_kl(log_p, t, step, (m0, 1.0), reverse=True) for m0 in cfg.kl_starts]
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
               reverse_optima=optima, reverse_best=min(optima, key=lambda o: o["kl"]),
               reverse_starts=[dict(start=m0, mu=mu, sd=sd, kl=kl) for m0, (mu, sd, kl) in zip(cfg.kl_starts, rev)])
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


def limit_experiment(x_big, x_small, cfg):
    """Problem 2.4. The sweep over K runs on the first limit_points test points of each
    radius; the limits are closed forms, so they are also given on the whole big-radius test
    set, where they sit next to problem 2.3's numbers."""
    Ks = limit_K_values(cfg.K_max, cfg.limit_num_K)
    x = x_big[:cfg.limit_points]
    big = bounds_vs_K(x, cfg.R, Ks)
    small = bounds_vs_K(x_small[:cfg.limit_points], cfg.R_small, Ks)
    ring, unif = ring_log_density(x_big, cfg.R), elbo_uniform_ring(x_big, cfg.R)
    return dict(R=cfg.R, R_small=cfg.R_small, points=len(x), K=Ks.tolist(),
                **{key: v.tolist() for key, v in big.items()},
                ring_err_small=small["ring_err"].tolist(),
                sweep_ring_log_p=float(ring_log_density(x, cfg.R).mean()),
                sweep_unif_limit=float(elbo_uniform_ring(x, cfg.R).mean()),
                ring_log_p=float(ring.mean()), unif_limit=float(unif.mean()),
                gap_limit=float((ring - unif).mean()),
                unif_err_max=float(max(big["unif_err"].max(), small["unif_err"].max())),
                post_err_max=float(max(big["post_err"].max(), small["post_err"].max())))


def iwae_experiment(x, R, cfg, rng):
    """The importance-weighted bound L_k of the uniform q for k = 1, 2, 4, ..., iwae_k_max on
    the first iwae_points points, with its Monte Carlo standard error."""
    x = x[:cfg.iwae_points]
    lj = gmm_em.log_joint(x, *gmm_em.ring(cfg.K, R))
    log_p, log_post = gmm_em.posterior(lj)
    log_q = np.full(cfg.K, -np.log(cfg.K))
    ks = 2 ** np.arange(int(np.log2(cfg.iwae_k_max)) + 1)
    mean, se = [], []
    for k in ks:
        s = iwae_samples(lj, log_q, int(k), cfg.iwae_reps, rng)  # (points, reps)
        mean.append(float(s.mean()))
        # the points are fixed, so the only noise is Monte Carlo: per-point variances add up
        se.append(float(np.sqrt(s.var(1, ddof=1).sum() / cfg.iwae_reps) / len(x)))
    return dict(R=R, points=len(x), reps=cfg.iwae_reps, k=ks.tolist(), L=mean, se=se,
                elbo=float(elbo_uniform_closed(x, gmm_em.ring_means(cfg.K, R)).mean()),
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
    res = dict(kl=kl_experiment(cfg), elbo=elbo_res,
               limit=limit_experiment(data["test"], data["test_small"], cfg),
               iwae={key: iwae_experiment(x, R, cfg, stream(cfg.seed, f"iwae {key}")) for key, (R, x) in radii.items()})
    return res, per_point


# ============================================ Figures ============================================
# Drawn from the results after every number exists (Okabe-Ito colours, safe for colour-blind
# readers; viridis for densities). figure_specs does the little computing the figures need
# (density maps on a plotting grid) once; each fig_* function only draws. Dense layers are
# rasterised inside the vector PDFs.

COLORS = {"true": "#000000", "fit": "#D55E00", "kde": "#0072B2", "ebm": "#009E73",
          "val": "#0072B2", "test": "#E69F00", "other": "#CC79A7", "grey": "#999999"}


def new_figure(ncols=1, width=4.2, height=3.4, left=0.75, right=0.2, bottom=0.55, top=0.4, gap=0.8):
    """A row of ncols panels, each width x height inches, with fixed margins in inches around
    and between them. Fixed margins instead of matplotlib's constrained layout, which measures
    every label before drawing and costs a third of the time of saving a figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w, h = width * ncols, height
    fig, axes = plt.subplots(1, ncols, figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=gap / (width - (left + right + gap * (ncols - 1)) / ncols))
    return fig, axes.ravel()


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(v, _pos=None):
    """A decade tick as plain text, 0.01 ... 1000 or 10⁻⁵: matplotlib's default $10^{-5}$ goes
    through its TeX-like parser, which costs more than the rest of a figure."""
    e = int(round(np.log10(v)))
    return f"{v:g}" if -2 <= e <= 3 else "10" + str(e).translate(SUPERSCRIPT)


def log_axis(ax, which="y", numticks=6):
    """A log scale with at most numticks labelled decades and no minor ticks (a long log axis
    otherwise carries a hundred tick objects)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(numticks=numticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(decade_label))


def plot_grid(cfg, num=128):
    """The square on which density maps are drawn: axis (num,) and points (num^2, 2)."""
    axis = np.linspace(-(cfg.R + 4), cfg.R + 4, num)
    gx, gy = np.meshgrid(axis, axis)
    return axis, np.stack([gx.ravel(), gy.ravel()], 1)


def density_maps(cfg, data, kde_sigma, energy, A):
    """log-densities on the plotting grid: the true mixture, the KDE and the EBM."""
    axis, pts = plot_grid(cfg)
    return dict(axis=axis, true=gmm_em.log_prob(pts, *gmm_em.ring(cfg.K, cfg.R)),
                kde=kde.log_density(pts, data["train"], kde_sigma), ebm=energy_on(energy, pts) - A)


def show_log_density(ax, axis, log_p, title, vmin):
    """A log-density on the square grid as one image (cheaper to draw and store than a mesh)."""
    half = (axis[1] - axis[0]) / 2
    im = ax.imshow(np.maximum(log_p, vmin).reshape(axis.size, axis.size), cmap="viridis", vmin=vmin,
                   origin="lower", extent=(axis[0] - half, axis[-1] + half) * 2, interpolation="bilinear")
    ax.set(title=title, xlabel="x₁")
    return im


def fig_em(cfg, data, gmm):
    """Problem 1.2: data, true and EM means at both radii; EM's progress at both."""
    fig, axes = new_figure(3, width=3.5, height=3.6)
    for ax, r, x in zip(axes[:2], (gmm["big"], gmm["small"]), (data["train"], data["train_small"])):
        ax.scatter(*x.T, s=3, c=COLORS["grey"], alpha=0.5, label=f"data (n = {cfg.n})", rasterized=True)
        ax.scatter(*gmm_em.ring_means(cfg.K, r["R"]).T, s=60, marker="x", c=COLORS["true"], label="true μₖ")
        ax.scatter(*np.array(r["means"]).T, s=60, marker="+", c=COLORS["fit"], label="EM estimates")
        ax.set(title=f"R = {r['R']:g}: mean error {r['mean_dist']:.2f}, max {r['max_dist']:.2f}",
               xlabel="x₁", ylabel="x₂", aspect="equal")
    axes[0].legend(loc="center", fontsize=7)
    ax = axes[2]
    for r, c, m in ((gmm["big"], COLORS["fit"], "o"), (gmm["small"], COLORS["kde"], "s")):
        h = np.array(r["history"])
        ax.plot(np.arange(1, h.size), np.maximum(np.diff(h), 1e-16), "-", marker=m, ms=2, c=c,
                label=f"R = {r['R']:g}: {r['iterations']} iterations")
    ax.axhline(gmm["big"]["tol"], c=COLORS["grey"], ls="--", lw=1, label=f"stopping tolerance {gmm['big']['tol']:g}")
    log_axis(ax)
    log_axis(ax, "x")
    ax.set(xlabel="EM iteration t", ylabel="LLₜ − LLₜ₋₁ (nats per point)", title="EM's increase per iteration")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def fig_kde(res):
    """Problem 1.3: validation and test log-likelihood against the kernel variance."""
    fig, (ax,) = new_figure(1, width=4.6, height=3.2)
    grid = np.array(res["grid"])
    ax.plot(grid, res["val_curve"], c=COLORS["val"], label="validation")
    ax.plot(grid, res["test_curve"], c=COLORS["test"], ls="--", label="test")
    ax.plot(res["sigma"], res["val_ll"], "o", c=COLORS["val"], label=f"chosen σ = {res['sigma']:.3f}")
    ax.axvline(res["scott_sigma"], c=COLORS["other"], ls=":", label=f"Scott's rule σ = {res['scott_sigma']:.2f}")
    log_axis(ax, "x")
    ax.set(ylim=(min(res["val_ll"], res["test_ll"]) - 3.0, max(res["val_ll"], res["test_ll"]) + 0.3),
           xlabel="σ (kernel variance)", ylabel="mean log-likelihood (nats)", title="KDE: choosing the kernel variance")
    ax.legend(fontsize=7, loc="lower center")
    return fig


def shown_name(candidate):
    """'tau=1,H=32' as matplotlib's mathtext shows it."""
    return candidate.replace("tau", "τ").replace(",", ", ")


def fig_ebm_training(res):
    """Problem 1.6: training of the chosen model (left); the IS gradient measured (right)."""
    fig, axes = new_figure(2, width=4.5, height=3.6)
    ax, h = axes[0], res["history"]
    ax.plot(h["steps"], h["objective"], c=COLORS["fit"], label="training objective (training IS sample)")
    ax.plot(h["steps"], h["val_ll"], c=COLORS["val"], label="validation LL (held-out IS sample)")
    ax.axhline(res["oracle_val_ll"], c=COLORS["val"], ls=":", label="true density on validation")
    ax.axvline(res["best_iteration"], c=COLORS["grey"], lw=1, label=f"kept iterate {res['best_iteration']}")
    top = max(max(h["objective"]), res["oracle_train_ll"], res["oracle_val_ll"])
    ax.set(ylim=(top - 0.8, top + 0.05), xlabel="L-BFGS iteration", ylabel="mean log-likelihood (nats)",
           title=f"training ({shown_name(res['chosen'])})")
    ax.legend(fontsize=6.5, loc="lower right")
    ax, g = axes[1], res["gradient"]
    x = np.arange(len(g))
    ax.plot(x, [r["rel_err_train"] for r in g], "o-", c=COLORS["fit"], label="fixed training sample")
    ax.errorbar(x, [r["rel_err_fresh"] for r in g], yerr=[r["rel_err_fresh_sd"] for r in g], fmt="s--",
                c=COLORS["kde"], ms=4, capsize=3, label="fresh samples (mean ± sd)")
    log_axis(ax)
    ax.set(xticks=x, xticklabels=[str(r["iteration"]) for r in g], xlabel="L-BFGS iteration (last: kept iterate)",
           ylabel="‖F̂ − ∇A‖ / ‖∇A‖", title=f"IS gradient against quadrature, M = {res['M']}")
    ax.legend(fontsize=7)
    return fig


def fig_ebm_density(maps):
    """Problem 1.7: the three log-densities on one colour scale."""
    vmin = maps["true"].max() - 12
    fig, axes = new_figure(3, width=3.4, height=3.0, top=0.3, bottom=0.45)
    show_log_density(axes[0], maps["axis"], maps["true"], "true mixture", vmin)
    show_log_density(axes[1], maps["axis"], maps["kde"], "KDE", vmin)
    im = show_log_density(axes[2], maps["axis"], maps["ebm"], "EBM (A by quadrature)", vmin)
    axes[0].set_ylabel("x₂")
    fig.colorbar(im, ax=list(axes), label="log p(x)", shrink=0.8)
    return fig


def fig_ebm_selection(res):
    """The (tau, H) sweep: best validation log-likelihood of every candidate."""
    fig, (ax,) = new_figure(1, width=5.0, height=3.5)
    longest = max(r["iterations"] for r in res["sweep"])
    for h, c, m in zip(sorted({r["hidden"] for r in res["sweep"]}), (COLORS["kde"], COLORS["fit"], COLORS["ebm"], COLORS["other"]), "osD^"):
        rows = sorted((r for r in res["sweep"] if r["hidden"] == h), key=lambda r: r["tau"])
        ax.plot([r["tau"] for r in rows], [r["val_ll"] for r in rows], "-", c=c, lw=1, label=f"H = {h}")
        for r in rows:
            full = r["iterations"] >= longest or r["stopped"]
            ax.plot(r["tau"], r["val_ll"], m, c=c, mfc=c if full else "white", ms=5)
    ax.plot(res["tau"], res["val_ll"], "*", ms=15, mfc="none", c=COLORS["true"], label="chosen")
    taus = sorted({r["tau"] for r in res["sweep"]})
    ax.set_xscale("log")
    ax.set_xticks(taus, [f"{t:g}" for t in taus], minor=False)
    ax.minorticks_off()
    ax.set(xlabel="confinement scale τ", ylabel="best validation log-likelihood (nats)",
           title="EBM selection (hollow: cut before full length)")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def fig_ebm_samples(train, mala_x, exact_x, samples):
    """Beyond the homework: samples drawn from the learned EBM beside the training data, and
    their radius against exact draws."""
    fig, axes = new_figure(2, width=3.6, height=3.4)
    ax = axes[0]
    ax.scatter(*train.T, s=2, c=COLORS["grey"], alpha=0.6, label="training data", rasterized=True)
    ax.scatter(*mala_x.T, s=2, c=COLORS["ebm"], alpha=0.4, label=f"MALA ({samples['chains']} chains)", rasterized=True)
    ax.set(title="samples from the EBM", xlabel="x₁", ylabel="x₂", aspect="equal")
    ax.legend(fontsize=7, loc="center", markerscale=4)
    ax, r_exact = axes[1], np.linalg.norm(exact_x, axis=1)
    bins = np.linspace(0, r_exact.max(), 40)
    ax.hist(r_exact, bins, density=True, color=COLORS["grey"], alpha=0.6, label="exact draws (grid)")
    ax.hist(np.linalg.norm(mala_x, axis=1), bins, density=True, histtype="step", color=COLORS["ebm"], lw=1.5, label="MALA")
    ax.set(xlabel="‖x‖", ylabel="density", title=f"radius: KS distance {samples['ks_radius']:.3f}")
    ax.legend(fontsize=7)
    return fig


def fig_kl(res, cfg):
    """Problem 2.2: p and a narrow q (left), the two KL integrands (middle), Gaussian fits (right)."""
    p, q = kl_pair(cfg)
    t = np.linspace(-11, 11, 1101)
    log_p, log_q = mixture_1d_log_pdf(t, **p), normal_log_pdf(t, *q)
    fig, axes = new_figure(3, width=3.5, height=3.4)
    axes[0].plot(t, np.exp(log_p), c=COLORS["true"], label=f"p ({len(p['means'])} modes)")
    axes[0].plot(t, np.exp(log_q), c=COLORS["fit"], label=f"q = N({q[0]:g}, {q[1]:g}²)")
    axes[0].set(xlabel="x", ylabel="density", title=f"KL(p||q) = {res['kl_pq']:.2f}, KL(q||p) = {res['kl_qp']:.2f}")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, np.exp(log_p) * (log_p - log_q), c=COLORS["kde"], label="p log(p/q)")
    axes[1].plot(t, np.exp(log_q) * (log_q - log_p), c=COLORS["ebm"], ls="--", label="q log(q/p)")
    axes[1].set(xlabel="x", ylabel="integrand (nats per unit x)", title="KL(p||q) is paid where q is absent")
    axes[1].legend(fontsize=7, loc="upper left")
    ax, f = axes[2], res["forward"]
    ax.fill_between(t, np.exp(log_p), color=COLORS["grey"], alpha=0.4, label="p")
    ax.plot(t, np.exp(normal_log_pdf(t, f["mu"], f["sd"])), c=COLORS["kde"], lw=2, label="argmin KL(p||q)")
    for o in res["reverse_optima"]:
        best = o == res["reverse_best"]
        ax.plot(t, np.exp(normal_log_pdf(t, o["mu"], o["sd"])), c=COLORS["fit"], ls="-" if best else "--",
                label=f"KL(q||p) = {o['kl']:.2f}" + (" (best)" if best else ""))
    ax.set(xlabel="x", ylabel="density", ylim=(0, 0.95), title="Gaussian fits to p")
    ax.legend(fontsize=6.5, loc="upper right")
    return fig


def fig_elbo_points(data, cfg, per_point):
    fig, axes = new_figure(2, width=4.4, height=3.5)
    for ax, R, x, b in zip(axes, (cfg.R, cfg.R_small), (data["test"], data["test_small"]),
                           (per_point["big"], per_point["small"])):
        r = np.linalg.norm(x, axis=1)
        grid = np.linspace(0, r.max() * 1.02, 200)
        ax.scatter(r, b["log_p"], s=4, c=COLORS["true"], label="log p(x) (exact)", rasterized=True)
        ax.scatter(r, b["post"], s=14, marker="+", lw=0.6, c=COLORS["kde"], label="L(posterior)", rasterized=True)
        ax.scatter(r, b["unif"], s=4, c=COLORS["fit"], label="L(Unif)", rasterized=True)
        ax.plot(grid, -gmm_em.LOG_2PI - 0.5 * (grid ** 2 + R ** 2), c=COLORS["grey"], lw=1,
                label="−log 2π − (‖x‖² + R²)/2")
        ax.set(xlabel="‖x‖ (distance from the ring's centre)", ylabel="nats",
               title=f"R = {R:g}: mean gap of L(Unif) {np.mean(b['gap']):.2f} nats")
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


def fig_elbo_K(res):
    """Problem 2.4: the bounds against K on fixed points (left), the ring limit reached (right)."""
    K = np.array(res["K"])
    fig, axes = new_figure(2, width=4.4, height=3.5)
    ax = axes[0]
    ax.plot(K, res["log_p"], "o", ms=5, mfc="none", c=COLORS["true"], label="log p_K(x)")
    ax.plot(K, res["post"], "+", ms=5, c=COLORS["kde"], label="L(posterior)")
    ax.plot(K, res["unif"], "s", ms=3, c=COLORS["fit"], label="L(Unif)")
    ax.axhline(res["sweep_ring_log_p"], c=COLORS["kde"], ls=":", lw=1.2, label="K = ∞: ring density")
    ax.axhline(res["sweep_unif_limit"], c=COLORS["fit"], ls=":", lw=1.2, label="−log 2π − (‖x‖² + R²)/2")
    log_axis(ax, "x")
    ax.set(xlabel="K (components on the ring)", ylabel=f"mean over {res['points']} test points (nats)",
           title=f"R = {res['R']:g}: L(Unif) is flat in K")
    ax.legend(fontsize=7, loc="center right")
    ax = axes[1]
    floor = 1e-17  # exact zeros (log p_K equal to the limit in floating point) drawn at the floor
    ax.plot(K, np.maximum(res["ring_err"], floor), "o-", ms=3, c=COLORS["true"], label=f"R = {res['R']:g}")
    ax.plot(K, np.maximum(res["ring_err_small"], floor), "s--", ms=3, c=COLORS["other"], label=f"R = {res['R_small']:g}")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set(xlabel="K (components on the ring)", ylabel="maxᵢ |log p_K(xᵢ) − ring limit| (nats)",
           title="log p_K reaches the ring limit")
    ax.legend(fontsize=7)
    return fig


def fig_iwae(res):
    fig, axes = new_figure(2, width=4.4, height=3.5)
    r, ax = res["big"], axes[0]
    ax.errorbar(r["k"], r["L"], yerr=2 * np.array(r["se"]), fmt="o-", ms=3, c=COLORS["fit"], label="Lₖ (± 2 MC s.e.)")
    ax.axhline(r["log_p"], c=COLORS["true"], ls=":", label="log p(x)")
    ax.plot([1], [r["elbo"]], "x", ms=9, c=COLORS["kde"], label="L(Unif), closed form")
    log_axis(ax, "x")
    ax.set(xlabel="k (importance samples from Unif)", ylabel=f"mean over {r['points']} test points (nats)",
           title=f"R = {r['R']:g}: L₁ = L(Unif) ≤ Lₖ ↑ log p")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    for r, c, m in zip((res["big"], res["small"]), (COLORS["fit"], COLORS["other"]), ("o", "s")):
        k, gap = np.array(r["k"]), r["log_p"] - np.array(r["L"])
        ok = gap > 0  # a Monte Carlo estimate can cross log p once the gap is below its noise
        ax.errorbar(k[ok], gap[ok], yerr=2 * np.array(r["se"])[ok], fmt=m, ms=3, c=c, label=f"R = {r['R']:g}: log p − Lₖ")
        ax.plot(k, r["gap_coef"] / k, c=c, lw=1, ls="--", label=f"R = {r['R']:g}: Var(w) / (2k p²)")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set(xlabel="k (importance samples from Unif)", ylabel="mean gap (nats)", title="the gap closes like Var(w) / (2k p²)")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def figure_specs(cfg, data, results, extras, ran):
    """{name: (fig_function, args)} for every figure of the parts that ran."""
    specs = {}
    if "gmm" in ran:
        specs["em"] = (fig_em, (cfg, data, results["gmm"]))
    if "kde" in ran:
        specs["kde"] = (fig_kde, (results["kde"],))
    if "ebm" in ran:
        r, e = results["ebm"], extras["ebm"]
        maps = density_maps(cfg, data, results["kde"]["sigma"], e["energy"], r["A_grid"])
        specs.update(ebm_training=(fig_ebm_training, (r,)), ebm_density=(fig_ebm_density, (maps,)),
                     ebm_selection=(fig_ebm_selection, (r,)),
                     ebm_samples=(fig_ebm_samples, (data["train"], e["mala"], e["exact"], r["samples"])))
    if "vi" in ran:
        v = results["vi"]
        specs.update(kl=(fig_kl, (v["kl"], cfg)), elbo_points=(fig_elbo_points, (data, cfg, extras["vi"])),
                     elbo_K=(fig_elbo_K, (v["limit"],)), iwae=(fig_iwae, (v["iwae"],)))
    return specs


# ============================================ Outputs ============================================

# Every number theory.pdf quotes: macro name -> (path into results.json, format).
MACROS = {
    "seedValue": ("config.seed", "d"), "nPoints": ("config.n", "d"), "Kcomp": ("config.K", "d"),
    "Rbig": ("config.R", ".0f"), "Rsmall": ("config.R_small", ".0f"), "Mprop": ("config.M", "d"),
    "emRestarts": ("config.em_restarts", "d"), "emTol": ("config.em_tol", ".0e"),
    "emMaxIter": ("config.em_max_iter", "d"),
    **{f"em{tag}{name}": (f"gmm.{key}.{field}", spec)
       for tag, key in (("Big", "big"), ("Small", "small"))
       for name, field, spec in (("MeanDist", "mean_dist", ".2f"), ("MaxDist", "max_dist", ".2f"),
                                 ("MaxPiErr", "max_pi_err", ".3f"), ("Iters", "iterations", "d"),
                                 ("TrainLL", "train_ll", ".3f"), ("TrainLLTrue", "train_ll_true", ".3f"),
                                 ("TestLL", "test_ll", ".3f"), ("TestLLTrue", "test_ll_true", ".3f"),
                                 ("Spacing", "neighbour_spacing", ".2f"), ("LLLeft", "ll_left", ".1e"),
                                 ("MeansLeft", "means_left", ".2f"))},
    "kdeSigma": ("kde.sigma", ".3f"), "kdeBandwidth": ("kde.bandwidth", ".3f"), "kdeValLL": ("kde.val_ll", ".3f"),
    "kdeTestLL": ("kde.test_ll", ".3f"), "kdeTestLLSE": ("kde.test_ll_se", ".3f"),
    "kdeScottSigma": ("kde.scott_sigma", ".2f"), "kdeScottTestLL": ("kde.scott_test_ll", ".3f"),
    "kdeGridMin": ("config.sigma_min", ".2f"), "kdeGridMax": ("config.sigma_max", ".0f"),
    "kdeGridNum": ("config.sigma_num", "d"),
    "ebmChosen": ("ebm.chosen", "s"), "ebmTau": ("ebm.tau", "g"), "ebmHidden": ("ebm.hidden", "d"),
    "ebmCandidates": ("ebm.candidates", "d"), "ebmIters": ("ebm.iterations", "d"),
    "ebmBestIter": ("ebm.best_iteration", "d"), "ebmValLL": ("ebm.val_ll", ".3f"),
    "ebmTestLLUninformed": ("ebm.test_ll_uninformed", ".3f"),
    "ebmUninformedMinusKde": ("ebm.uninformed_minus_kde", ".3f"),
    "ebmChosenMinusUninformed": ("ebm.chosen_minus_uninformed", ".3f"),
    "ebmMval": ("config.M_val", "d"), "ebmEvalEvery": ("config.eval_every", "d"),
    "ebmMemory": ("config.ebm_memory", "d"), "ebmKeep": ("config.ebm_keep", "d"),
    "ebmATrainIS": ("ebm.A_train_is", ".3f"), "ebmATrainSE": ("ebm.A_train_se", ".3f"),
    "ebmAFreshIS": ("ebm.A_fresh_is", ".3f"), "ebmAFreshSE": ("ebm.A_fresh_se", ".1e"),
    "ebmAGrid": ("ebm.A_grid", ".3f"), "ebmAGapTrain": ("ebm.A_grid_minus_train", ".4f"),
    "ebmAGapFresh": ("ebm.A_grid_minus_fresh", ".1e"),
    "ebmTestLLTrainIS": ("ebm.test_ll_train_is", ".3f"), "ebmTestLLFreshIS": ("ebm.test_ll_fresh_is", ".3f"),
    "ebmTestLLGrid": ("ebm.test_ll_grid", ".3f"), "ebmESS": ("ebm.ess_train", ".0f"),
    "ebmESSFresh": ("ebm.ess_fresh", ".0f"), "ebmFreshM": ("config.M_fresh", "d"),
    "ebmGridBox": ("config.grid_half_width", ".0f"), "ebmGridStep": ("config.grid_step", ".2f"),
    "ebmGridDelta": ("ebm.grid_delta", ".1e"), "ebmJensenBound": ("ebm.jensen_bound", ".3f"),
    "ebmJensenSE": ("ebm.jensen_se", ".4f"), "ebmAGapTrainRatio": ("ebm.A_gap_train_ratio", ".1f"),
    "ebmUninformedBestIter": ("ebm.uninformed_best_iteration", "d"), "ebmUninformedIters": ("ebm.uninformed_iterations", "d"),
    "ebmMinusKde": ("ebm.ebm_minus_kde", ".3f"), "ebmMinusKdeSE": ("ebm.ebm_minus_kde_se", ".3f"),
    "oracleMinusEbm": ("ebm.oracle_minus_ebm", ".3f"), "oracleMinusEbmSE": ("ebm.oracle_minus_ebm_se", ".3f"),
    "klFromJensen": ("ebm.kl_from_jensen", ".4f"), "klFromJensenSE": ("ebm.kl_from_jensen_se", ".4f"),
    "oracleTestLL": ("ebm.oracle_test_ll", ".3f"),
    "malaChains": ("ebm.samples.chains", "d"), "malaSteps": ("ebm.samples.steps", "d"),
    "malaAdapt": ("ebm.samples.adapt", "d"), "malaAcceptance": ("ebm.samples.acceptance", ".2f"),
    "malaTarget": ("ebm.samples.target", ".3f"), "malaStartSD": ("ebm.samples.start_sd", "g"),
    "malaKSRadiusStart": ("ebm.samples.ks_radius_start", ".2f"),
    "malaStepSize": ("ebm.samples.step_size", ".2f"), "malaKSRadius": ("ebm.samples.ks_radius", ".3f"),
    "malaPRadius": ("ebm.samples.p_radius", ".2f"), "malaKSAngle": ("ebm.samples.ks_angle", ".3f"),
    "malaPAngle": ("ebm.samples.p_angle", ".2f"),
    "gradSamples": ("config.grad_samples", "d"), "gradCheckpoints": ("config.ebm_checkpoints", "list"),
    "gradRelTrainStart": ("ebm.gradient.0.rel_err_train", ".2f"), "gradRelFreshStart": ("ebm.gradient.0.rel_err_fresh", ".2f"),
    "gradRelTrainEnd": ("ebm.gradient.-1.rel_err_train", ".3f"), "gradRelFreshEnd": ("ebm.gradient.-1.rel_err_fresh", ".3f"),
    "gradRelFreshEndSD": ("ebm.gradient.-1.rel_err_fresh_sd", ".3f"), "gradCosEnd": ("ebm.gradient.-1.cos_train", ".4f"),
    "gradRelTrainTen": ("ebm.gradient.1.rel_err_train", ".2f"),
    "ebmTaus": ("config.ebm_taus", "list"), "ebmWidths": ("config.ebm_widths", "list"),
    "ebmRungs": ("config.ebm_rungs", "list"), "ebmPatience": ("config.ebm_patience", "d"),
    "ebmChosenTeX": ("ebm.chosen", "candidate"), "ebmUninformedTeX": ("ebm.uninformed", "candidate"),
    "ebmTestLLGridSE": ("ebm.test_ll_grid_se", ".3f"), "ebmValLLUninformed": ("ebm.val_ll_uninformed", ".3f"),
    "ebmUninformedMinusKdeSE": ("ebm.uninformed_minus_kde_se", ".3f"),
    "ebmChosenMinusUninformedSE": ("ebm.chosen_minus_uninformed_se", ".3f"),
    "oracleValLL": ("ebm.oracle_val_ll", ".3f"), "kdeTestLLEbm": ("ebm.kde_test_ll", ".3f"),
    "klPTeX": ("config", "mixture_1d"), "klQTeX": ("config.kl_q", "normal"),
    "klGridTeX": ("config.kl_grid", "grid"), "klStartsCount": ("config.kl_starts", "count"),
    "klPQ": ("vi.kl.kl_pq", ".2f"), "klQP": ("vi.kl.kl_qp", ".2f"), "klGridDelta": ("vi.kl.grid_delta", ".0e"),
    "fwdMu": ("vi.kl.forward.mu", ".2f"), "fwdSd": ("vi.kl.forward.sd", ".2f"),
    "revMu": ("vi.kl.reverse_best.mu", ".2f"), "revSd": ("vi.kl.reverse_best.sd", ".2f"),
    "revKL": ("vi.kl.reverse_best.kl", ".2f"),
    "viKmax": ("config.K_max", "d"), "viRingLogp": ("vi.limit.ring_log_p", ".3f"),
    "viUnifLimit": ("vi.limit.unif_limit", ".3f"), "viGapLimit": ("vi.limit.gap_limit", ".3f"),
    "viLimitPoints": ("vi.limit.points", "d"),
    "iwaeKmax": ("config.iwae_k_max", "d"), "iwaePoints": ("vi.iwae.big.points", "d"),
    "iwaeReps": ("config.iwae_reps", "d"),
    **{f"vi{name}{tag}": (f"vi.elbo.{key}.{field}", ".3f")
       for tag, key in (("Big", "big"), ("Small", "small"))
       for name, field in (("Unif", "unif"), ("Post", "post"), ("Logp", "log_p"), ("Gap", "gap"),
                           ("ExpGap", "expected_gap"), ("ExpUnif", "expected_unif"), ("GapMin", "gap_min"),
                           ("GapSE", "gap_se"),
                           ("GapMax", "gap_max"))},
}


def lookup(results, path):
    for key in path.split("."):
        results = results[int(key)] if isinstance(results, list) else results[key]
    return results


def format_macro(value, spec):
    """A value as LaTeX prints it: a format spec, or 'list' (comma-separated) or 'candidate'
    ('tau=1,H=32' as $\\tau=1$, $H=32$)."""
    if spec == "list":
        return ", ".join(f"{v:g}" for v in value)
    if spec == "candidate":
        return ", ".join(f"${part}$" for part in value.replace("tau", "\\tau").split(","))
    if spec == "count":
        return str(len(value))
    if spec == "grid":  # (lo, hi, step)
        return f"$[{value[0]:g},{value[1]:g}]$ with step ${value[2]:g}$"
    if spec == "normal":  # (mean, sd)
        return f"$\\N({value[0]:g},{value[1]:g}^2)$"
    if spec == "mixture_1d":  # the whole config: the p of problem 2.2
        terms = zip(value["kl_p_weights"], value["kl_p_means"], value["kl_p_sds"])
        return "$" + "+".join(f"{w:g}\\,\\N({m:g},{s:g}^2)" for w, m, s in terms) + "$"
    return format(int(value) if spec == "d" else value, spec)


# Facts of a run that the write-up states in words: macro name -> function of the results.
STATEMENTS = {
    "emStopped": lambda r: ("both kept fits stopped by the tolerance rule"
                            if r["gmm"]["big"]["converged"] and r["gmm"]["small"]["converged"]
                            else "a kept fit reached the iteration cap before the tolerance"),
    "ebmBeatsKde": lambda r: "higher" if r["ebm"]["ebm_minus_kde"] > 0 else "lower",
    "ebmBeatsKdeSignificance": lambda r: (
        "more than two" if abs(r["ebm"]["ebm_minus_kde"]) > 2 * r["ebm"]["ebm_minus_kde_se"] else "less than two"),
    "ebmUninformedVerdict": lambda r: (
        f"{'loses to' if r['ebm']['uninformed_minus_kde'] < 0 else 'beats'} the KDE by "
        f"{abs(r['ebm']['uninformed_minus_kde']):.3f}"),
    "ebmAFreshVerdict": lambda r: sigma_verdict(r["ebm"]["A_grid_minus_fresh"], r["ebm"]["A_fresh_se"]),
    "ebmATrainVerdict": lambda r: (
        "on one seed that cannot be told apart from noise"
        if abs(r["ebm"]["A_grid_minus_train"]) < 2 * r["ebm"]["A_train_se"]
        else "more than noise alone would give, even on one seed"),
    "ebmTauCovered": lambda r: ("the chosen model satisfies it" if r["ebm"]["tau"] ** 2 < 2 else
                                "the chosen model does not, so its importance weights have infinite variance"),
    "ebmSelectionByQuadrature": lambda r: (
        "the same choice" if max(r["ebm"]["sweep"], key=lambda c: c["val_ll_grid"])["name"] == r["ebm"]["chosen"]
        else "a different choice, " + format_macro(max(r["ebm"]["sweep"], key=lambda c: c["val_ll_grid"])["name"], "candidate")),
    "ebmUninformedBudget": lambda r: (
        "its validation LL was still rising at the end of its budget, so part of the gap may be optimisation"
        if r["ebm"]["uninformed_best_iteration"] >= r["config"]["ebm_rungs"][-1] - 2 * r["config"]["eval_every"]
        else "its validation LL had stopped rising well before the end of its budget"),
    "malaVerdict": lambda r: (
        "no difference from exact draws is detectable at this sample size"
        if min(r["ebm"]["samples"]["p_radius"], r["ebm"]["samples"]["p_angle"]) > 0.01
        else "the chains still differ detectably from exact draws"),
    "gradFixedVersusFresh": lambda r: (
        "within two standard deviations of" if abs(r["ebm"]["gradient"][-1]["rel_err_train"] - r["ebm"]["gradient"][-1]["rel_err_fresh"])
        < 2 * r["ebm"]["gradient"][-1]["rel_err_fresh_sd"] else "outside two standard deviations of"),
}


def sigma_verdict(difference, se):
    """Where a difference lies against its standard error, in words."""
    ratio = abs(difference) / se
    return ("inside its standard error" if ratio < 1 else
            "within two standard errors" if ratio < 2 else "more than two standard errors away")


def macros_of(results):
    """{macro: text} for every macro of MACROS and STATEMENTS that results can fill."""
    out = {}
    for name, (path, spec) in MACROS.items():
        try:
            out[name] = format_macro(lookup(results, path), spec)
        except (KeyError, TypeError, IndexError):
            continue  # a part that has not run yet
    for name, statement in STATEMENTS.items():
        try:
            out[name] = statement(results)
        except (KeyError, TypeError):
            continue
    return out


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


def render_figure(out, name, spec):
    """Draw one figure from its spec; save it as vector PDF (for theory.pdf) and PNG."""
    import matplotlib.pyplot as plt
    draw, args = spec
    fig = draw(*args)
    for ext in ("pdf", "png"):
        atomic_write(os.path.join(out, f"{name}.{ext}"), lambda tmp, ext=ext: fig.savefig(
            tmp, format=ext, dpi=110, **({"pil_kwargs": {"compress_level": 1}} if ext == "png" else {})))
    plt.close(fig)


# Relative drawing costs (panels, text), to hand out the slow figures first.
FIGURE_WEIGHT = {"em": 4, "kl": 4, "ebm_density": 3, "elbo_points": 3, "iwae": 3, "elbo_K": 3, "ebm_samples": 2,
                 "ebm_training": 2}


def render_figures(out, specs, workers=2):
    """Every figure, in `workers` forked processes: the figures are independent and drawing
    is single-threaded, and on two cores it is otherwise the run's largest cost."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (loaded once, before the fork)
    heavy_first = sorted(specs, key=lambda name: -FIGURE_WEIGHT.get(name, 1))  # fewer idle workers at the end
    jobs = [(out, name, specs[name]) for name in heavy_first]
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            render_figure(*job)
        return
    import gc
    import multiprocessing
    gc.freeze()  # the workers' collector then leaves the parent's objects (and their pages) alone
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs):
                pass
    finally:
        gc.unfreeze()


def _render_job(job):
    return render_figure(*job)


def write_outputs(out, results, seconds, files):
    """results.json (deterministic for a seed), timings.json, results.tex (one macro per
    number, plus the measured times, which vary from run to run) and the data files of
    files = {name: writer(tmp_path)}."""
    for name, write in files.items():
        atomic_write(os.path.join(out, name), write)
    dump = lambda obj: json.dumps(obj, indent=1, sort_keys=True) + "\n"
    write_text(os.path.join(out, "results.json"), dump(results))
    write_text(os.path.join(out, "timings.json"), dump(seconds))
    macros = macros_of(results)
    if "ebm_training" in seconds:
        macros["ebmTrainTime"] = f"{seconds['ebm_training']:.1f}"
    lines = ["% Generated by python VI.py; do not edit. One macro per number in theory.pdf."]
    lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted(macros.items())]
    write_text(os.path.join(out, "results.tex"), "\n".join(lines) + "\n")


def load_json(out, name):
    """A JSON file of an earlier run in out, or empty."""
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def kept_parts(previous, cfg, running, out):
    """The parts of an earlier results.json that this run keeps (those it does not rerun).
    Refuses, with a ValueError naming the setting, a part computed with other values of the
    settings it depends on, and an EBM run without the KDE result it compares against."""
    kept = {}
    for part in PARTS:
        if part in running or part not in previous:
            continue
        stored, now = previous[part].get("settings", {}), settings_of(cfg, part)
        for key in now:
            if stored.get(key) != now[key]:
                raise ValueError(f"{out}/results.json holds part {part!r} computed with {key}={stored.get(key)!r}, "
                                 f"but this run has {key}={now[key]!r}; rerun that part too (--parts) or use another --out")
        kept[part] = previous[part]
    if "ebm" in running and "kde" not in running and "kde" not in kept:
        raise ValueError("part 'ebm' needs the KDE's sigma: add kde to --parts")
    return kept


# ========================================= Command line =========================================

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other refusal here
        self.exit(2, f"VI.py: error: {message}\n")


def tuple_of(kind):
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
    for f in fields(Config):
        kind = tuple_of(type(f.default[0])) if isinstance(f.default, tuple) else type(f.default)
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f"default {shown}")
    args = p.parse_args(argv)
    cfg = Config(**(QUICK if args.quick else {}))
    cfg = replace(cfg, **{f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None})
    return cfg, args


def prepare_out(out):
    """Create out if needed and prove it is writable before any work is done."""
    os.makedirs(out, exist_ok=True)
    tempfile.NamedTemporaryFile(dir=out, prefix=".probe.").close()


def keep_freed_memory():
    """Ask glibc to keep freed memory in the process. By default it hands blocks above
    128 kB back to the system and maps them again at the next allocation, so every training
    step's megabyte-sized temporaries paid page faults: keeping them halves the EBM's time."""
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


def main(argv=None):
    keep_freed_memory()
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    out, running = args.out, parts_of(cfg)
    try:
        check_config(cfg)
        results = kept_parts(load_json(out, "results.json"), cfg, running, out)
        prepare_out(out)
    except (ValueError, OSError) as e:
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    print("configuration:", json.dumps(asdict(cfg)))
    seconds = {k: v for k, v in load_json(out, "timings.json").items() if k.split("_")[0] in results}
    start, extras = time.perf_counter(), {}

    data = make_data(cfg)
    try:
        if "gmm" in running:  # problems 1.1-1.2: EM at both radii
            with clock(seconds, "gmm"):
                results["gmm"] = {
                    "big": run_em(data["train"], data["test"], cfg.R, cfg, stream(cfg.seed, "em")),
                    "small": run_em(data["train_small"], data["test_small"], cfg.R_small, cfg, stream(cfg.seed, "em small"))}
        if "kde" in running:  # problem 1.3
            with clock(seconds, "kde"):
                results["kde"] = run_kde(data["train"], data["val"], data["test"], cfg)
        if "ebm" in running:  # problems 1.4-1.7, compared with the KDE on the same test points
            with clock(seconds, "ebm"):
                results["ebm"], extras["ebm"] = run_ebm(data, cfg, results["kde"]["sigma"])
            seconds.update(ebm_training=extras["ebm"]["training_seconds"],
                           ebm_candidates=extras["ebm"]["candidate_seconds"])
        if "vi" in running:  # problems 2.1-2.4
            with clock(seconds, "vi"):
                results["vi"], extras["vi"] = run_vi(data, cfg)
    except FloatingPointError as e:  # nothing has been written yet
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 1
    for part in running:
        results[part]["settings"] = settings_of(cfg, part)
    results.update(config=json.loads(json.dumps(asdict(cfg))), quick=args.quick)

    if not args.no_figures:  # figures, drawn from the numbers above
        with clock(seconds, "figures"):
            render_figures(out, figure_specs(cfg, data, results, extras, running))
    files = {"data.npz": lambda tmp: np.savez(open(tmp, "wb"), **data)}
    if "ebm" in running:
        files["ebm_energy.pt"] = lambda tmp: ebm.save_energy(extras["ebm"]["energy"], tmp)
    seconds["total"] = time.perf_counter() - start
    write_outputs(out, results, seconds, files)
    print(f"wrote results.json, results.tex and the data files to {out}/ in {seconds['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
