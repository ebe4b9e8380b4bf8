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
             hidden=16, steps=100, grid_step=0.2, K_max=1000)


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


def load_previous(out):
    """Results of an earlier run in out (kept for the parts not run now), or empty."""
    try:
        with open(os.path.join(out, "results.json")) as f:
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
    ax.set(ylim=(top - 1.5, top + 0.1), xlabel="Adam step", ylabel="mean log-likelihood (nats)",
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

def run_vi(cfg, data, rngs, ctx):
    return {}, {}, {}

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
    seconds = {}
    ctx = {"artifacts": {}, "seconds": seconds}
    figs = {}
    for part in parts_of(cfg):
        t = time.perf_counter()
        res, mac, fig = RUNNERS[part](cfg, data, rngs, ctx)
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
