"""Driver of the whole homework, and the variational bounds of Section 2.

    python VI.py                  # every part, figures and numbers into plots/
    python VI.py --quick          # small settings, a smoke run in seconds
    python VI.py --parts gmm,kde  # only some parts (others keep their earlier results)

Section 1 (gmm_em.py, kde.py, ebm.py): the ring mixture and EM at R = 10 and R = 1, the
validation-tuned KDE, and the shallow-network EBM trained with an importance-sampled gradient.
Section 2 (this file): the evidence lower bound L(q, theta) = E_q log(p(x, z | theta) / q(z))
of the same mixture, log p(x | theta) = L(q, theta) + KL(q || p(z | x, theta)).

Every number goes to results.json and, formatted for print, to results.tex as one LaTeX macro
each; every figure goes out as PDF (for theory.pdf) and PNG. Files are replaced atomically at
the end of the run, so an interrupted run leaves the previous outputs intact.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.optimize import minimize
from scipy.special import i0e, logsumexp

import gmm_em
import kde

PARTS = ("gmm", "kde", "ebm", "vi")
STREAMS = ("train", "val", "test", "train_small", "test_small", "proposal", "val_proposal",
           "fresh_proposal", "em", "em_small", "torch_init", "vi")


@dataclass
class Config:
    seed: int = 0
    n: int = 1000  # points in each of the train / validation / test splits
    K: int = 10  # mixture components
    R: float = 10.0  # ring radius of the main experiment
    R_small: float = 1.0  # the overlapping contrast of problem 1.2
    em_restarts: int = 5
    em_tol: float = 1e-6  # stop when the mean log-likelihood moves less than this
    em_max_iter: int = 1000
    sigma_min: float = 1e-2  # KDE variance grid (log spaced)
    sigma_max: float = 1e1
    sigma_num: int = 61
    M: int = 5000  # training proposal sample, drawn once (problem 1.6)
    M_val: int = 20000  # held-out proposal sample that scores the validation set
    M_fresh: int = 1_000_000  # independent proposal sample for the honest A estimate
    hidden: int = 32  # hidden units of the energy network
    tau: float = 1.0  # confinement -||x||^2 / (2 tau^2) of the energy
    steps: int = 3000  # Adam steps, full batch
    lr: float = 2e-2
    eval_every: int = 50
    grid_half_width: float = 20.0  # quadrature box [-h, h]^2 for A
    grid_step: float = 0.05
    K_max: int = 10000  # largest K of problem 2.4
    parts: str = ",".join(PARTS)


QUICK = dict(n=200, em_restarts=2, sigma_num=15, M=1000, M_val=2000, M_fresh=20000,
             hidden=16, steps=300, grid_step=0.2, K_max=1000)


def check_config(cfg):
    """Raise ValueError with a one-line reason if cfg cannot be run."""
    rules = [(cfg.n > 0, f"n must be positive (got {cfg.n})"),
             (cfg.K >= 1, f"K must be at least 1 (got {cfg.K})"),
             (cfg.K <= cfg.n, f"K={cfg.K} components need at least K points (n={cfg.n})"),
             (cfg.R >= 0 and cfg.R_small >= 0, "R and R_small must be non-negative"),
             (cfg.M > 0 and cfg.M_val > 0 and cfg.M_fresh > 0, "M, M_val, M_fresh must be positive"),
             (cfg.sigma_num > 0, f"the sigma grid is empty (sigma_num={cfg.sigma_num})"),
             (0 < cfg.sigma_min <= cfg.sigma_max, "the sigma grid must satisfy 0 < sigma_min <= sigma_max"),
             (cfg.em_restarts >= 1 and cfg.em_max_iter >= 1 and cfg.em_tol > 0, "EM needs restarts >= 1, max_iter >= 1, tol > 0"),
             (cfg.hidden >= 1 and cfg.steps >= 0 and cfg.lr > 0 and cfg.eval_every >= 1, "EBM needs hidden >= 1, steps >= 0, lr > 0, eval_every >= 1"),
             (cfg.tau > 0, f"tau must be positive (got {cfg.tau})"),
             (cfg.grid_half_width > 0 and 0 < cfg.grid_step < cfg.grid_half_width, "the quadrature grid needs 0 < grid_step < grid_half_width"),
             (cfg.K_max >= 2, f"K_max must be at least 2 (got {cfg.K_max})")]
    for ok, reason in rules:
        if not ok:
            raise ValueError(reason)
    unknown = set(parts_of(cfg)) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part {sorted(unknown)[0]!r}; choose from {', '.join(PARTS)}")


def parts_of(cfg):
    return [p.strip() for p in cfg.parts.split(",") if p.strip()]


# ---------------------------------------------------------------------------------------------
# Data: one seed, one independent stream per use, so running a subset of the parts or changing
# one size never changes the other draws.
# ---------------------------------------------------------------------------------------------

def make_rngs(seed):
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children)}


def make_data(cfg, rngs):
    big = gmm_em.ring_means(cfg.K, cfg.R), gmm_em.uniform_weights(cfg.K)
    small = gmm_em.ring_means(cfg.K, cfg.R_small), gmm_em.uniform_weights(cfg.K)
    draw = lambda params, size, stream: gmm_em.sample(size, *params, rngs[stream])[0]
    data = {name: draw(big, cfg.n, name) for name in ("train", "val", "test")}
    data.update(train_small=draw(small, cfg.n, "train_small"),
                test_small=draw(small, cfg.n, "test_small"),
                proposal=draw(big, cfg.M, "proposal"),
                val_proposal=draw(big, cfg.M_val, "val_proposal"))
    return data


# ---------------------------------------------------------------------------------------------
# Output: figures, results.json and results.tex, all written to a temporary name first.
# ---------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call write(tmp_path), then rename over path: readers see the old file or the new one."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_figure(fig, out, name):
    import matplotlib.pyplot as plt
    fig.canvas.draw()  # lay out once (constrained layout), then freeze it for both formats
    fig.set_layout_engine("none")
    for ext in ("pdf", "png"):
        atomic_write(os.path.join(out, f"{name}.{ext}"),
                     lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight"))
    plt.close(fig)


def fmt(x, digits=2):
    """A number as LaTeX prints it: fixed decimals, siunitx-friendly."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}f}"


def write_results(out, results, macros, seconds):
    """results.json (deterministic for a seed), timings.json, and results.tex: the macros
    plus the measured times, which vary from run to run and so stay out of results.json."""
    dump = lambda obj: lambda tmp: open(tmp, "w").write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    atomic_write(os.path.join(out, "results.json"), dump(results))
    atomic_write(os.path.join(out, "timings.json"), dump(seconds))
    timing = {"ebmTrainTime": fmt(seconds["ebm_training"], 1)} if "ebm_training" in seconds else {}
    lines = ["% Generated by python VI.py; do not edit. One macro per number in theory.pdf."]
    lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted({**macros, **timing}.items())]
    atomic_write(os.path.join(out, "results.tex"), lambda tmp: open(tmp, "w").write("\n".join(lines) + "\n"))


def load_previous(out, name="results.json"):
    """A JSON file of an earlier run in out (kept for the parts not run now), or empty."""
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------
# Figures (Okabe-Ito colours, safe for colour-blind readers; viridis for densities)
# ---------------------------------------------------------------------------------------------

COLORS = {"true": "#000000", "fit": "#D55E00", "kde": "#0072B2", "ebm": "#009E73",
          "val": "#0072B2", "test": "#E69F00", "other": "#CC79A7", "grey": "#999999"}


def new_figure(ncols=1, width=4.2, height=3.4):
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42  # embed TrueType, not Type 3, fonts in the PDFs
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False,
                             layout="constrained")
    return fig, axes[0]


def density_grid(half_width, num=200):
    axis = np.linspace(-half_width, half_width, num)
    gx, gy = np.meshgrid(axis, axis)
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], 1)


def show_log_density(ax, gx, gy, log_p, title, vmin):
    im = ax.pcolormesh(gx, gy, np.maximum(log_p, vmin).reshape(gx.shape), cmap="viridis",
                       vmin=vmin, shading="auto", rasterized=True)
    ax.set(title=title, xlabel="$x_1$", aspect="equal")
    return im


def fig_gmm_data(cfg, data, res):
    fig, axes = new_figure(2, width=4.0, height=4.0)
    for ax, (key, r), x in zip(axes, res.items(), (data["train"], data["train_small"])):
        true = gmm_em.ring_means(cfg.K, r["R"])
        ax.scatter(*x.T, s=4, c=COLORS["grey"], alpha=0.5, label=f"data (n = {cfg.n})")
        ax.scatter(*true.T, s=60, marker="x", c=COLORS["true"], label="true $\\mu_k$")
        ax.scatter(*np.array(r["means"]).T, s=60, marker="+", c=COLORS["fit"], label="EM $\\hat\\mu_k$")
        ax.set(title=f"R = {r['R']:g}: mean error {r['mean_dist']:.2f}, max {r['max_dist']:.2f}",
               xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    axes[0].legend(loc="center", fontsize=8)
    return fig


def fig_em_history(res):
    fig, axes = new_figure(2)
    for ax, r in zip(axes, res.values()):
        h = np.array(r["history"])
        ax.semilogy(np.arange(1, h.size), h[-1] - h[:-1] + 1e-16, c=COLORS["fit"])
        ax.set(title=f"R = {r['R']:g}: {r['iterations']} iterations",
               xlabel="EM iteration t", ylabel="final LL $-$ LL$_t$ (nats per point)")
    fig.suptitle("EM convergence of the best restart (mean log-likelihood)", fontsize=10)
    return fig


def fig_kde_sigma(res):
    fig, (ax,) = new_figure(1, width=5.0)
    grid = np.array(res["grid"])
    ax.semilogx(grid, res["val_curve"], c=COLORS["val"], label="validation")
    ax.semilogx(grid, res["test_curve"], c=COLORS["test"], ls="--", label="test")
    ax.axvline(res["sigma"], c=COLORS["grey"], lw=1)
    ax.plot(res["sigma"], res["val_ll"], "o", c=COLORS["val"],
            label=f"chosen $\\sigma$ = {res['sigma']:.3f}")
    ax.axvline(res["scott_sigma"], c=COLORS["other"], ls=":", label=f"Scott/Silverman $\\sigma$ = {res['scott_sigma']:.2f}")
    lo = min(res["val_ll"], res["test_ll"]) - 3.0
    ax.set(ylim=(lo, max(res["val_ll"], res["test_ll"]) + 0.3), xlabel="$\\sigma$ (kernel variance)",
           ylabel="mean log-likelihood (nats)", title="KDE: choosing the kernel variance")
    ax.legend(fontsize=8)
    return fig


def fig_kde_density(cfg, data, sigma):
    half = cfg.R + 4
    gx, gy, pts = density_grid(half)
    true = gmm_em.log_prob(pts, gmm_em.ring_means(cfg.K, cfg.R), gmm_em.uniform_weights(cfg.K))
    fit = kde.log_density(pts, data["train"], sigma)
    vmin = true.max() - 12
    fig, axes = new_figure(2, width=4.0, height=3.8)
    show_log_density(axes[0], gx, gy, true, "true log-density", vmin)
    im = show_log_density(axes[1], gx, gy, fit, f"KDE, $\\sigma$ = {sigma:.3f}", vmin)
    axes[0].set_ylabel("$x_2$")
    fig.colorbar(im, ax=list(axes), label="log p(x)", shrink=0.8)
    return fig


def fig_ebm_training(res):
    h = res["history"]
    fig, (ax,) = new_figure(1, width=5.5)
    ax.plot(h["steps"], h["train_objective"], c=COLORS["fit"], label="train objective (training IS sample)")
    ax.plot(h["steps"], h["val_ll"], c=COLORS["val"], label="validation LL (held-out IS sample)")
    ax.axhline(res["oracle_train_ll"], c=COLORS["fit"], ls=":", label="true density on train")
    ax.axhline(res["oracle_val_ll"], c=COLORS["val"], ls=":", label="true density on validation")
    ax.axvline(res["best_step"], c=COLORS["grey"], lw=1, label=f"selected step {res['best_step']}")
    top = max(max(h["train_objective"]), res["oracle_train_ll"], res["oracle_val_ll"])
    ax.set(ylim=(top - 0.4, top + 0.05), xlabel="Adam step", ylabel="mean log-likelihood (nats)",
           title="EBM training")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def fig_ebm_density(cfg, data, sigma, energy, A):
    import torch
    half = cfg.R + 4
    gx, gy, pts = density_grid(half)
    true = gmm_em.log_prob(pts, gmm_em.ring_means(cfg.K, cfg.R), gmm_em.uniform_weights(cfg.K))
    fit = kde.log_density(pts, data["train"], sigma)
    with torch.no_grad():
        e = energy(torch.as_tensor(pts, dtype=torch.float32)).double().numpy()
    vmin = true.max() - 12
    fig, axes = new_figure(3, width=3.6, height=3.6)
    show_log_density(axes[0], gx, gy, true, "true mixture", vmin)
    show_log_density(axes[1], gx, gy, fit, "KDE", vmin)
    im = show_log_density(axes[2], gx, gy, e - A, "EBM (A by quadrature)", vmin)
    axes[0].set_ylabel("$x_2$")
    fig.colorbar(im, ax=list(axes), label="log p(x)", shrink=0.8)
    return fig


# ---------------------------------------------------------------------------------------------
# Parts. Each returns (results dict, macros dict, {figure name: Figure}).
# ---------------------------------------------------------------------------------------------

def run_gmm(cfg, data, rngs, ctx):
    res, macros, figs = {}, {}, {}
    for tag, R, train, test, stream in (("Ten", cfg.R, data["train"], data["test"], "em"),
                                        ("One", cfg.R_small, data["train_small"], data["test_small"], "em_small")):
        means, weights = gmm_em.ring_means(cfg.K, R), gmm_em.uniform_weights(cfg.K)
        fit = gmm_em.fit_em(train, cfg.K, rngs[stream], cfg.em_restarts, cfg.em_tol, cfg.em_max_iter)
        r = dict(R=R, **gmm_em.parameter_errors(fit, means, weights), iterations=fit.n_iter,
                 converged=fit.converged, restart=fit.restart,
                 train_ll=float(gmm_em.log_prob(train, fit.means, fit.weights).mean()),
                 train_ll_true=float(gmm_em.log_prob(train, means, weights).mean()),
                 test_ll=float(gmm_em.log_prob(test, fit.means, fit.weights).mean()),
                 test_ll_true=float(gmm_em.log_prob(test, means, weights).mean()),
                 neighbour_spacing=float(2 * R * np.sin(np.pi / cfg.K)) if cfg.K > 1 else 0.0,
                 means=fit.means.tolist(), weights=fit.weights.tolist(), history=fit.history)
        res[f"R{R:g}"] = r
        ctx[f"em_fit_{tag}"] = fit
        macros.update({f"em{tag}MeanDist": fmt(r["mean_dist"]), f"em{tag}MaxDist": fmt(r["max_dist"]),
                       f"em{tag}MaxPiErr": fmt(r["max_pi_err"], 3), f"em{tag}Iters": fmt(fit.n_iter),
                       f"em{tag}TrainLL": fmt(r["train_ll"], 3), f"em{tag}TrainLLTrue": fmt(r["train_ll_true"], 3),
                       f"em{tag}TestLL": fmt(r["test_ll"], 3), f"em{tag}TestLLTrue": fmt(r["test_ll_true"], 3),
                       f"ringSpacing{tag}": fmt(r["neighbour_spacing"])})
    figs["gmm_data"] = fig_gmm_data(cfg, data, res)
    figs["em_history"] = fig_em_history(res)
    return res, macros, figs


def run_kde(cfg, data, rngs, ctx):
    grid = np.logspace(np.log10(cfg.sigma_min), np.log10(cfg.sigma_max), cfg.sigma_num)
    sigma, val_ll, val_curve = kde.tune_sigma(data["train"], data["val"], grid)
    test_curve = kde.log_likelihood_curve(data["test"], data["train"], grid)
    rules = {rule: kde.rule_of_thumb_sigma(data["train"], rule) for rule in ("scott", "silverman")}
    res = dict(sigma=sigma, bandwidth=float(np.sqrt(sigma)), val_ll=val_ll,
               test_ll=kde.mean_log_likelihood(data["test"], data["train"], sigma),
               grid=grid.tolist(), val_curve=val_curve.tolist(), test_curve=test_curve.tolist(),
               interior=bool(grid[0] < sigma < grid[-1]))
    for rule, s in rules.items():
        res[f"{rule}_sigma"] = s
        res[f"{rule}_test_ll"] = kde.mean_log_likelihood(data["test"], data["train"], s)
    ctx["kde_sigma"] = sigma
    macros = {"kdeSigma": fmt(sigma, 3), "kdeBandwidth": fmt(res["bandwidth"], 3), "kdeValLL": fmt(val_ll, 3),
              "kdeTestLL": fmt(res["test_ll"], 3), "kdeScottSigma": fmt(rules["scott"]),
              "kdeScottTestLL": fmt(res["scott_test_ll"], 3), "kdeGridMin": fmt(cfg.sigma_min, 2),
              "kdeGridMax": fmt(cfg.sigma_max, 0), "kdeGridNum": fmt(cfg.sigma_num)}
    figs = {"kde_sigma": fig_kde_sigma(res), "kde_density": fig_kde_density(cfg, data, sigma)}
    return res, macros, figs


def run_ebm(cfg, data, rngs, ctx):
    import torch
    import ebm
    torch.manual_seed(int(rngs["torch_init"].integers(2**63)))
    means, weights = gmm_em.ring_means(cfg.K, cfg.R), gmm_em.uniform_weights(cfg.K)
    T = lambda a: torch.as_tensor(a, dtype=torch.float32)
    log_q = lambda x: gmm_em.log_prob(x, means, weights)
    energy = ebm.Energy(cfg.hidden, cfg.tau)
    print(f"EBM: {cfg.hidden} hidden units, {cfg.steps} Adam steps, M = {cfg.M} proposal points")
    hist = ebm.train(energy, T(data["train"]), T(data["proposal"]), T(log_q(data["proposal"])),
                     T(data["val"]), T(data["val_proposal"]), T(log_q(data["val_proposal"])),
                     steps=cfg.steps, lr=cfg.lr, eval_every=cfg.eval_every)
    rng = rngs["fresh_proposal"]

    def draw(m):
        x = gmm_em.sample(m, means, weights, rng)[0]
        return T(x), T(log_q(x))

    with torch.no_grad():
        e_test = float(energy(T(data["test"])).double().mean())
        lw_train = ebm.log_weights(energy, T(data["proposal"]), T(log_q(data["proposal"])))
        a_train = float(torch.logsumexp(lw_train.double(), 0) - np.log(cfg.M))
    a_fresh, ess_fresh, jensen = ebm.log_partition_is_stream(energy, draw, cfg.M_fresh)
    h, s = cfg.grid_half_width, cfg.grid_step
    a_grid = ebm.log_partition_grid(energy, h, s)
    a_checks = {"box x1.5": ebm.log_partition_grid(energy, 1.5 * h, s),
                "step /2": ebm.log_partition_grid(energy, h, s / 2)}
    ctx["seconds"]["ebm_training"] = hist.seconds
    res = dict(hidden=cfg.hidden, tau=cfg.tau, steps=cfg.steps, lr=cfg.lr, best_step=hist.best_step,
               A_train_is=a_train, A_fresh_is=a_fresh, A_grid=a_grid,
               A_grid_checks=a_checks, grid_delta=max(abs(v - a_grid) for v in a_checks.values()),
               ess_train=ebm.effective_sample_size(lw_train), ess_fresh=ess_fresh, jensen_bound=jensen,
               test_ll_train_is=e_test - a_train, test_ll_fresh_is=e_test - a_fresh,
               test_ll_grid=e_test - a_grid,
               oracle_test_ll=float(log_q(data["test"]).mean()),
               oracle_train_ll=float(log_q(data["train"]).mean()),
               oracle_val_ll=float(log_q(data["val"]).mean()),
               history=dict(steps=hist.steps, train_objective=hist.train_objective, val_ll=hist.val_ll))
    ctx["artifacts"]["ebm_energy.pt"] = lambda tmp: ebm.save_energy(energy, tmp)
    macros = {"ebmHidden": fmt(cfg.hidden), "ebmTau": fmt(cfg.tau, 1), "ebmSteps": fmt(cfg.steps),
              "ebmLR": fmt(cfg.lr, 2), "ebmBestStep": fmt(hist.best_step),
              "ebmMval": fmt(cfg.M_val), "ebmEvalEvery": fmt(cfg.eval_every),
              "ebmATrainIS": fmt(a_train, 3), "ebmAFreshIS": fmt(a_fresh, 3), "ebmAGrid": fmt(a_grid, 3),
              "ebmTestLLTrainIS": fmt(res["test_ll_train_is"], 3), "ebmTestLLFreshIS": fmt(res["test_ll_fresh_is"], 3),
              "ebmTestLLGrid": fmt(res["test_ll_grid"], 3), "ebmESS": fmt(res["ess_train"], 0),
              "ebmESSFresh": fmt(ess_fresh, 0), "ebmFreshM": fmt(cfg.M_fresh), "ebmGridBox": fmt(h, 0),
              "ebmGridStep": fmt(s, 2), "ebmGridDelta": f"{res['grid_delta']:.1e}",
              "ebmJensenBound": fmt(jensen, 3), "oracleTestLL": fmt(res["oracle_test_ll"], 3)}
    sigma = ctx.get("kde_sigma") or kde.tune_sigma(data["train"], data["val"], np.logspace(
        np.log10(cfg.sigma_min), np.log10(cfg.sigma_max), cfg.sigma_num))[0]
    figs = {"ebm_training": fig_ebm_training(res),
            "ebm_density": fig_ebm_density(cfg, data, sigma, energy, a_grid)}
    return res, macros, figs


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

VI_KL_P = dict(weights=(0.5, 0.3, 0.2), means=(-6.0, 0.0, 6.0), sds=(1.0, 0.7, 0.8))  # p of 2.2
VI_KL_Q = (-6.0, 0.6)  # (mean, sd) of the narrow q sitting on p's heaviest mode
VI_KL_GRID = (-30.0, 30.0, 0.01)  # quadrature box and step; wide enough for every fitted q
VI_KL_STARTS = (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0)  # reverse-KL starts (mean; sd = 1)
VI_LIMIT_NUM_K = 30  # log-spaced K of problem 2.4 (before rounding to unique integers)
VI_LIMIT_POINTS = 250  # the first test points, for the K sweep: its cost is points * sum(K)
VI_IWAE_K_MAX = 1024  # largest number of importance samples k (k = 1, 2, 4, ...)
VI_IWAE_POINTS = 100  # the first test points of each R
VI_IWAE_REPS = 400  # Monte Carlo replicates of the bound per point and k


def kl_categorical(log_q, log_p):
    """KL(q || p) = sum_k q_k (log q_k - log p_k) along the last axis; terms with q_k = 0 are 0."""
    q = np.exp(log_q)
    with np.errstate(invalid="ignore"):  # 0 * (-inf - -inf) is NaN; the where sets it to 0
        return np.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)


def elbo(log_joint_xk, log_q):
    """L(q) = sum_k q_k (log p(x, k) - log q_k), shape (n,). With the unnormalised joint in
    place of p this is -KL(q || p(x, .)), so kl_categorical does the work (and the q_k = 0 care)."""
    return -kl_categorical(log_q, log_joint_xk)


def log_evidence(log_joint_xk):
    """log p(x) = logsumexp_k log p(x, k), shape (n,)."""
    return logsumexp(log_joint_xk, axis=-1)


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
    r2 = (x ** 2).sum(-1)
    return elbo_uniform_ring(x, R) + log_i0(R * np.sqrt(r2))


def iwae_samples(log_joint_xk, log_q, k, reps, rng):
    """reps draws of log (1/k) sum_{j<=k} p(x, z_j) / q(z_j), z_j ~ q iid, per point: (n, reps).

    The sum only depends on how often each component was drawn, so the k draws are replaced by
    their counts c ~ Multinomial(k, q): the same distribution at a cost independent of k.
    """
    n, K = log_joint_xk.shape
    counts = rng.multinomial(k, np.exp(log_q), size=(n, reps))  # (n, reps, K)
    with np.errstate(divide="ignore"):  # components never drawn: log 0 = -inf drops them
        log_c = np.log(counts)
    return logsumexp(log_c + (log_joint_xk - log_q)[:, None, :], axis=-1) - np.log(k)


# ---- problem 2.2: KL(p || q) against KL(q || p) for one-dimensional densities, by quadrature --

def normal_log_pdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2.0 * np.pi)


def mixture_1d_log_pdf(x, weights, means, sds):
    """log sum_k w_k N(x; m_k, s_k^2) on a 1-D array x, shape x.shape."""
    parts = [np.log(w) + normal_log_pdf(x, m, s) for w, m, s in zip(weights, means, sds)]
    return logsumexp(np.stack(parts), axis=0)


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


def kl_experiment():
    """Problem 2.2 and its fits; every number comes from the same quadrature grid."""
    t = kl_axis(*VI_KL_GRID)
    step = VI_KL_GRID[2]
    log_p = mixture_1d_log_pdf(t, **VI_KL_P)
    log_q = normal_log_pdf(t, *VI_KL_Q)
    fwd_mu, fwd_sd = moment_match(**VI_KL_P)
    fwd_num = fit_gaussian_kl(log_p, t, step, (0.0, 1.0), reverse=False)
    rev = [fit_gaussian_kl(log_p, t, step, (m0, 1.0), reverse=True) for m0 in VI_KL_STARTS]
    optima = {}  # one entry per distinct local optimum
    for mu, sd, kl in rev:
        optima.setdefault(round(mu, 2), dict(mu=mu, sd=sd, kl=kl))
    optima = sorted(optima.values(), key=lambda o: o["mu"])
    best = min(optima, key=lambda o: o["kl"])
    t2 = kl_axis(VI_KL_GRID[0], VI_KL_GRID[1], step / 2)
    refined = [kl_grid(mixture_1d_log_pdf(t2, **VI_KL_P), normal_log_pdf(t2, *VI_KL_Q), step / 2),
               kl_grid(normal_log_pdf(t2, *VI_KL_Q), mixture_1d_log_pdf(t2, **VI_KL_P), step / 2)]
    res = dict(p=VI_KL_P, q=dict(mu=VI_KL_Q[0], sd=VI_KL_Q[1]), grid=list(VI_KL_GRID),
               kl_pq=kl_grid(log_p, log_q, step), kl_qp=kl_grid(log_q, log_p, step))
    res.update(grid_delta=max(abs(refined[0] - res["kl_pq"]), abs(refined[1] - res["kl_qp"])),
               forward=dict(mu=fwd_mu, sd=fwd_sd,
                            kl=kl_grid(log_p, normal_log_pdf(t, fwd_mu, fwd_sd), step),
                            numeric_mu=fwd_num[0], numeric_sd=fwd_num[1]),
               reverse_optima=optima, reverse_best=best,
               reverse_starts=[dict(start=m0, mu=mu, sd=sd, kl=kl) for m0, (mu, sd, kl) in zip(VI_KL_STARTS, rev)])
    return res


def fig_kl_asymmetry(res):
    t = np.linspace(-10, 10, 2001)
    log_p, log_q = mixture_1d_log_pdf(t, **VI_KL_P), normal_log_pdf(t, *VI_KL_Q)
    p, q = np.exp(log_p), np.exp(log_q)
    fig, axes = new_figure(2, width=4.4)
    axes[0].plot(t, p, c=COLORS["true"], label="p (3 modes)")
    axes[0].plot(t, q, c=COLORS["fit"], label=f"q = N({VI_KL_Q[0]:g}, {VI_KL_Q[1]:g}$^2$)")
    axes[0].set(xlabel="x", ylabel="density", title=f"KL(p||q) = {res['kl_pq']:.2f} nats, "
                f"KL(q||p) = {res['kl_qp']:.2f} nats")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, p * (log_p - log_q), c=COLORS["kde"], label="p log(p/q): integrand of KL(p||q)")
    axes[1].plot(t, q * (log_q - log_p), c=COLORS["ebm"], ls="--", label="q log(q/p): integrand of KL(q||p)")
    axes[1].set(xlabel="x", ylabel="integrand (nats per unit x)",
                title="KL(p||q) is paid where p has mass and q has none")
    axes[1].legend(fontsize=7, loc="upper left")
    return fig


def fig_kl_fits(res):
    t = np.linspace(-12, 12, 2001)
    fig, (ax,) = new_figure(1, width=6.4, height=3.6)
    ax.fill_between(t, np.exp(mixture_1d_log_pdf(t, **VI_KL_P)), color=COLORS["grey"], alpha=0.4, label="p")
    f = res["forward"]
    ax.plot(t, np.exp(normal_log_pdf(t, f["mu"], f["sd"])), c=COLORS["kde"], lw=2,
            label=f"argmin KL(p||q): mean {f['mu']:.2f}, sd {f['sd']:.2f}")
    for o in res["reverse_optima"]:
        best = o == res["reverse_best"]
        ax.plot(t, np.exp(normal_log_pdf(t, o["mu"], o["sd"])), c=COLORS["fit"], ls="-" if best else "--",
                label=f"local min of KL(q||p) = {o['kl']:.2f} nats" + (" (best)" if best else ""))
    ax.set(xlabel="x", ylabel="density",
           title="KL(p||q) spreads q over every mode; KL(q||p) has one optimum per mode")
    ax.set_ylim(0, 0.95)  # headroom for the legend above the peaks
    ax.legend(fontsize=7, loc="upper right")
    return fig


# ---- problems 2.3 and 2.4: the two bounds on the ring mixture ---------------------------------

def bounds(x, means):
    """Per-point log p, the uniform-q and posterior-q bounds and the checks of 2.1, shape (n,) each."""
    K = means.shape[0]
    lj = gmm_em.log_joint(x, means, gmm_em.uniform_weights(K))  # (n, K)
    log_p = log_evidence(lj)
    log_unif = np.full(K, -np.log(K))
    log_post = lj - log_p[:, None]
    unif = elbo(lj, log_unif)
    return dict(log_p=log_p, unif=unif, post=elbo(lj, log_post), closed=elbo_uniform_closed(x, means),
                gap=log_p - unif, kl_unif_post=kl_categorical(log_unif, log_post))


def summarise_bounds(b, R):
    mean = lambda a: float(np.mean(a))
    return dict(R=R, unif=mean(b["unif"]), post=mean(b["post"]), log_p=mean(b["log_p"]),
                gap=mean(b["gap"]), gap_min=float(b["gap"].min()), gap_max=float(b["gap"].max()),
                gap_kl_err=float(np.abs(b["gap"] - b["kl_unif_post"]).max()),
                closed_err=float(np.abs(b["closed"] - b["unif"]).max()),
                post_err=float(np.abs(b["post"] - b["log_p"]).max()))


def limit_K_values(K_max, num=VI_LIMIT_NUM_K):
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
        parts = [bounds(x[i:i + size], means) for i in range(0, len(x), size)]
        b = {key: np.concatenate([p[key] for p in parts]) for key in ("log_p", "unif", "post")}
        rows.append((b["log_p"].mean(), b["unif"].mean(), b["post"].mean(),
                     np.abs(b["log_p"] - ring).max(), np.abs(b["unif"] - unif_ring).max(),
                     np.abs(b["post"] - b["log_p"]).max()))
    keys = ("log_p", "unif", "post", "ring_err", "unif_err", "post_err")
    return {key: np.array(col) for key, col in zip(keys, zip(*rows))}


def limit_experiment(cfg, data):
    """Problem 2.4. The sweep over K runs on the first VI_LIMIT_POINTS test points of each R;
    the limits are closed forms, so they are also given on the whole R = 10 test set, where they
    sit next to problem 2.3's numbers."""
    Ks = limit_K_values(cfg.K_max)
    x = data["test"][:VI_LIMIT_POINTS]
    big = bounds_vs_K(x, cfg.R, Ks)
    small = bounds_vs_K(data["test_small"][:VI_LIMIT_POINTS], cfg.R_small, Ks)
    ring, unif = ring_log_density(data["test"], cfg.R), elbo_uniform_ring(data["test"], cfg.R)
    return dict(R=cfg.R, R_small=cfg.R_small, points=len(x), K=Ks.tolist(),
                **{key: v.tolist() for key, v in big.items()},
                ring_err_small=small["ring_err"].tolist(),
                sweep_ring_log_p=float(ring_log_density(x, cfg.R).mean()),
                sweep_unif_limit=float(elbo_uniform_ring(x, cfg.R).mean()),
                ring_log_p=float(ring.mean()), unif_limit=float(unif.mean()),
                gap_limit=float((ring - unif).mean()),
                unif_err_max=float(max(big["unif_err"].max(), small["unif_err"].max())),
                post_err_max=float(max(big["post_err"].max(), small["post_err"].max())))


def fig_elbo_points(data, R_pairs, per_point):
    fig, axes = new_figure(2, width=4.6, height=3.6)
    for ax, (key, R), x in zip(axes, R_pairs, (data["test"], data["test_small"])):
        b = per_point[key]
        r = np.linalg.norm(x, axis=1)
        grid = np.linspace(0, r.max() * 1.02, 200)
        ax.scatter(r, b["log_p"], s=4, c=COLORS["true"], label="log p(x) (exact)")
        ax.scatter(r, b["post"], s=14, marker="+", lw=0.6, c=COLORS["kde"], label="L(posterior)")
        ax.scatter(r, b["unif"], s=4, c=COLORS["fit"], label="L(Unif)")
        ax.plot(grid, -gmm_em.LOG_2PI - 0.5 * (grid ** 2 + R ** 2), c=COLORS["grey"], lw=1,
                label="$-\\log 2\\pi - (\\|x\\|^2 + R^2)/2$")
        ax.set(xlabel="$\\|x\\|$ (distance from the ring's centre)", ylabel="nats",
               title=f"R = {R:g}: mean gap of L(Unif) {np.mean(b['gap']):.2f} nats")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("L(Unif) is largest at the ring's centre, where there are no data; "
                 "L(posterior) = log p", fontsize=9)
    return fig


def fig_elbo_K(res):
    K = np.array(res["K"])
    fig, axes = new_figure(2, width=4.6, height=3.6)
    ax = axes[0]
    ax.semilogx(K, res["log_p"], "o", ms=5, mfc="none", c=COLORS["true"], label="log $p_K(x)$")
    ax.semilogx(K, res["post"], "+", ms=5, c=COLORS["kde"], label="L(posterior)")
    ax.semilogx(K, res["unif"], "s", ms=3, c=COLORS["fit"], label="L(Unif)")
    ax.axhline(res["sweep_ring_log_p"], c=COLORS["kde"], ls=":", lw=1.2,
               label="K = $\\infty$: ring density (log $I_0$ form)")
    ax.axhline(res["sweep_unif_limit"], c=COLORS["fit"], ls=":", lw=1.2,
               label="$-\\log 2\\pi - (\\|x\\|^2+R^2)/2$")
    ax.set(xlabel="K (components on the ring)",
           ylabel=f"mean over {res['points']} test points (nats)",
           title=f"R = {res['R']:g}: L(Unif) is flat in K, the gap stays")
    ax.legend(fontsize=7, loc="center right")
    ax = axes[1]
    floor = 1e-17  # exact zeros (log p_K equal to the limit in floating point) drawn at the floor
    ax.loglog(K, np.maximum(res["ring_err"], floor), "o-", ms=3, c=COLORS["true"], label=f"R = {res['R']:g}")
    ax.loglog(K, np.maximum(res["ring_err_small"], floor), "s--", ms=3, c=COLORS["other"],
              label=f"R = {res['R_small']:g}")
    ax.set(xlabel="K (components on the ring)", ylabel="max$_i$ |log $p_K(x_i)$ $-$ ring limit| (nats)",
           title="L(posterior) = log $p_K$ reaches the ring limit")
    ax.legend(fontsize=8)
    return fig


# ---- beyond: the importance-weighted bound L_k between L(Unif) and log p ------------------------

def iwae_gap_coefficient(log_post, log_q):
    """c with log p - L_k ~ c / k for large k (delta method on the log of a mean of k weights):
    c = Var_q(w) / 2 with w = p(z | x) / q(z), E_q w = 1, so c = (sum_z p(z | x)^2 / q(z) - 1) / 2.
    Shape (n,)."""
    return 0.5 * np.expm1(logsumexp(2 * log_post - log_q, axis=-1))


def iwae_experiment(x, R, K, rng):
    x = x[:VI_IWAE_POINTS]
    lj = gmm_em.log_joint(x, gmm_em.ring_means(K, R), gmm_em.uniform_weights(K))
    log_q = np.full(K, -np.log(K))
    ks = 2 ** np.arange(int(np.log2(VI_IWAE_K_MAX)) + 1)
    mean, se = [], []
    for k in ks:
        s = iwae_samples(lj, log_q, int(k), VI_IWAE_REPS, rng)  # (points, reps)
        mean.append(float(s.mean()))
        # the points are fixed, so the only noise is Monte Carlo: per-point variances add up
        se.append(float(np.sqrt(s.var(1, ddof=1).sum() / VI_IWAE_REPS) / len(x)))
    return dict(R=R, points=len(x), reps=VI_IWAE_REPS, k=ks.tolist(), L=mean, se=se,
                elbo=float(elbo_uniform_closed(x, gmm_em.ring_means(K, R)).mean()),
                log_p=float(log_evidence(lj).mean()),
                gap_coef=float(iwae_gap_coefficient(lj - log_evidence(lj)[:, None], log_q).mean()))


def fig_iwae(res):
    fig, axes = new_figure(2, width=4.6, height=3.6)
    r = res["R10"]
    ax = axes[0]
    ax.errorbar(r["k"], r["L"], yerr=2 * np.array(r["se"]), fmt="o-", ms=3, c=COLORS["fit"],
                label="$L_k$ ($\\pm$ 2 MC s.e.)")
    ax.axhline(r["log_p"], c=COLORS["true"], ls=":", label="log p(x)")
    ax.plot([1], [r["elbo"]], "x", ms=9, c=COLORS["kde"], label="L(Unif), closed form")
    ax.set(xscale="log", xlabel="k (importance samples from Unif)",
           ylabel=f"mean over {r['points']} test points (nats)",
           title=f"R = {r['R']:g}: $L_1$ = L(Unif) $\\leq L_k \\uparrow$ log p")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    for (key, r), c, m in zip(res.items(), (COLORS["fit"], COLORS["other"]), ("o", "s")):
        k, gap = np.array(r["k"]), r["log_p"] - np.array(r["L"])
        ok = gap > 0  # a Monte Carlo estimate can cross log p once the gap is below its noise
        ax.errorbar(k[ok], gap[ok], yerr=2 * np.array(r["se"])[ok], fmt=m, ms=3, c=c,
                    label=f"R = {r['R']:g}: log p $-$ $L_k$")
        ax.plot(k, r["gap_coef"] / k, c=c, lw=1, ls="--", label=f"R = {r['R']:g}: Var(w) / 2k")
    ax.set(xscale="log", yscale="log", xlabel="k (importance samples from Unif)",
           ylabel="mean gap (nats)", title="For large k the gap closes like Var(w) / 2k")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def run_vi(cfg, data, rngs, ctx):
    rng = rngs["vi"]
    kl = kl_experiment()
    pairs = (("R10", cfg.R), ("R1", cfg.R_small))
    per_point = {key: bounds(x, gmm_em.ring_means(cfg.K, R))
                 for (key, R), x in zip(pairs, (data["test"], data["test_small"]))}
    elbo_res = {key: summarise_bounds(per_point[key], R) for key, R in pairs}
    limit = limit_experiment(cfg, data)
    iwae = {key: iwae_experiment(x, R, cfg.K, rng)
            for (key, R), x in zip(pairs, (data["test"], data["test_small"]))}
    res = dict(kl=kl, elbo=elbo_res, limit=limit, iwae=iwae)
    best = kl["reverse_best"]
    macros = {"klPQ": fmt(kl["kl_pq"]), "klQP": fmt(kl["kl_qp"]), "klGridDelta": f"{kl['grid_delta']:.0e}",
              "fwdMu": fmt(kl["forward"]["mu"]), "fwdSd": fmt(kl["forward"]["sd"]), "revMu": fmt(best["mu"]), "revSd": fmt(best["sd"]),
              "revKL": fmt(best["kl"]), "viKmax": fmt(int(limit["K"][-1])),
              "viRingLogp": fmt(limit["ring_log_p"], 3), "viUnifLimit": fmt(limit["unif_limit"], 3),
              "viGapLimit": fmt(limit["gap_limit"], 3), "viLimitPoints": fmt(limit["points"]),
              "iwaeKmax": fmt(int(iwae["R10"]["k"][-1])), "iwaePoints": fmt(iwae["R10"]["points"]),
              "iwaeReps": fmt(iwae["R10"]["reps"])}
    for tag, key in (("Ten", "R10"), ("One", "R1")):
        e = elbo_res[key]
        macros.update({f"viUnif{tag}": fmt(e["unif"], 3), f"viPost{tag}": fmt(e["post"], 3),
                       f"viLogp{tag}": fmt(e["log_p"], 3), f"viGap{tag}": fmt(e["gap"], 3)})
    figs = {"kl_asymmetry": fig_kl_asymmetry(kl), "kl_fits": fig_kl_fits(kl),
            "elbo_points": fig_elbo_points(data, pairs, per_point), "elbo_K": fig_elbo_K(limit),
            "iwae": fig_iwae(iwae)}
    return res, macros, figs

# ============================= end of Section 2: variational bounds ============================


RUNNERS = {"gmm": run_gmm, "kde": run_kde, "ebm": run_ebm, "vi": run_vi}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other refusal here
        self.exit(2, f"VI.py: error: {message}\n")


def parse_args(argv):
    p = OneLineParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="plots", help="output folder (default: plots)")
    p.add_argument("--quick", action="store_true", help="small settings: a smoke run in seconds")
    for f in fields(Config):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                       help=f"default {f.default}" + (" (comma-separated)" if f.name == "parts" else ""))
    args = p.parse_args(argv)
    cfg = Config(**(QUICK if args.quick else {}))
    cfg = Config(**{**asdict(cfg), **{f.name: getattr(args, f.name) for f in fields(Config)
                                      if getattr(args, f.name) is not None}})
    return cfg, args.out, args.quick


def prepare_out(out):
    """Create out if needed and prove it is writable before any work is done."""
    os.makedirs(out, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.")
    probe.close()


def main(argv=None):
    cfg, out, quick = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_config(cfg)
        prepare_out(out)
    except (ValueError, OSError) as e:
        print(f"VI.py: error: {e}", file=sys.stderr)
        return 2
    print("configuration:", json.dumps(asdict(cfg)))
    start = time.perf_counter()
    rngs = make_rngs(cfg.seed)
    data = make_data(cfg, rngs)
    results = load_previous(out)
    macros = results.pop("macros", {})
    seconds = load_previous(out, "timings.json")
    ctx = {"artifacts": {}, "seconds": seconds}
    figs = {}
    for part in parts_of(cfg):
        t = time.perf_counter()
        try:
            res, mac, fig = RUNNERS[part](cfg, data, rngs, ctx)
        except FloatingPointError as e:  # nothing has been written yet
            print(f"VI.py: error: {e}", file=sys.stderr)
            return 1
        results[part] = res
        macros.update(mac)
        figs.update(fig)
        seconds[part] = time.perf_counter() - t
        print(f"{part}: done in {seconds[part]:.1f} s")
    macros.update(seedValue=fmt(cfg.seed), nPoints=fmt(cfg.n), Kcomp=fmt(cfg.K), Rbig=fmt(cfg.R, 0),
                  Rsmall=fmt(cfg.R_small, 0), Mprop=fmt(cfg.M), emRestarts=fmt(cfg.em_restarts),
                  emTol=f"{cfg.em_tol:.0e}")
    for name, fig in figs.items():
        save_figure(fig, out, name)
    ctx["artifacts"]["data.npz"] = lambda tmp: np.savez(open(tmp, "wb"), **data)
    for name, write in ctx["artifacts"].items():
        atomic_write(os.path.join(out, name), write)
    results.update(config=asdict(cfg), quick=quick, macros=macros)
    seconds["total"] = time.perf_counter() - start
    write_results(out, results, macros, seconds)
    print(f"wrote {len(figs)} figures, results.json and results.tex to {out}/ "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
