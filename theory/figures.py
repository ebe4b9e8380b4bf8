"""Every figure of theory.pdf. Each is drawn at the size the PDF prints it (the text is
TEXT_WIDTH inches wide), so the fonts set once in STYLE are the printed sizes; each draw function
has its LAYOUT beside it and gets what it shows as arguments (figure_specs gathers them).
Okabe-Ito colours, safe for colour-blind readers. render_figures saves each as PDF and PNG."""

import os

import numpy as np
import torch

import ebm
import gmm_em
import kde

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



def density_maps(cfg, data, kde_sigma, energy, A, num=128):
    """log-densities of the true mixture, the KDE and the EBM on the square plotting grid."""
    axis = np.linspace(-(cfg.R + 4), cfg.R + 4, num)
    pts = np.stack([g.ravel() for g in np.meshgrid(axis, axis)], 1)
    return dict(axis=axis, true=gmm_em.log_prob(pts, *gmm_em.ring(cfg.K, cfg.R)),
                kde=kde.log_density(pts, data["train"], kde_sigma),
                ebm=ebm.energies(energy, torch.as_tensor(pts, dtype=torch.float32)).numpy() - A)


NAMES = ("em", "kde", "ebm_training", "ebm_density", "ebm_selection", "ebm_samples", "kl",
         "elbo_points", "elbo_K", "iwae")  # figure_specs' keys: the files a run promises


def figure_specs(cfg, data, results, models, per_point, *, log_p, log_normal, unif_bound):
    """{name: (layout, draw, args)} of every figure, with what little it needs computed here;
    log_p, log_normal and unif_bound are VI.py's densities of Section 2 (see draw_kl and
    draw_elbo_points), passed in as functions a worker can unpickle."""
    e, vi, truth = results["ebm"], results["vi"], gmm_em.ring(cfg.K, cfg.R)
    lines = {k: float(gmm_em.log_prob(data[k], *truth).mean()) for k in ("train", "val")}
    maps = density_maps(cfg, data, results["kde"]["sigma"], models["truth"]["energy"],
                        e["truth"]["restarts"][0]["A"])
    samples = (data["train"], models["samples"]["mala"], models["samples"]["exact"],
               e["model"]["samples"])
    return dict(
        em=(EM_LAYOUT, draw_em,
            (results["gmm"], (data["train"], data["train_small"]), cfg.K)),
        kde=(KDE_LAYOUT, draw_kde, (results["kde"],)),
        ebm_training=(TRAINING_LAYOUT, draw_training, (e["model"], e["truth"], lines)),
        ebm_density=(DENSITY_LAYOUT, draw_density, (maps,)),
        ebm_selection=(SELECTION_LAYOUT, draw_selection, (e["truth"],)),
        ebm_samples=(SAMPLES_LAYOUT, draw_samples, samples),
        kl=(KL_LAYOUT, draw_kl, (vi["kl"], log_p, log_normal, cfg.kl_q)),
        elbo_points=(ELBO_POINTS_LAYOUT, draw_elbo_points,
                     (data, (cfg.R, cfg.R_small), per_point, unif_bound)),
        elbo_K=(ELBO_K_LAYOUT, draw_elbo_K, (vi["limit"],)),
        iwae=(IWAE_LAYOUT, draw_iwae, (vi["iwae"],)))


def render_figure(job):
    """Draw one figure from its spec; save it as vector PDF (for theory.pdf) and PNG."""
    import matplotlib.pyplot as plt
    out, name, spec = job
    fig = draw_figure(*spec)
    for ext, options in (("pdf", {}), ("png", {"pil_kwargs": {"compress_level": 1}})):
        fig.savefig(os.path.join(out, f"{name}.{ext}"), format=ext, dpi=150, **options)
    plt.close(fig)


def check_matplotlib(drawing=True):
    """Raise ValueError (one line) if the figures will be drawn and matplotlib cannot load, as
    when MPLBACKEND names no backend (the figures use Agg whatever it names)."""
    if not drawing:
        return
    try:
        import matplotlib  # noqa: F401
    except ValueError as e:
        raise ValueError(f"matplotlib cannot load: {e}; unset MPLBACKEND (the figures use Agg) "
                         "or run with --no-figures") from None


def render_figures(out, specs, pmap):
    """Every figure of specs saved to out, shared among workers by pmap (VI.fork_map)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (loaded once, before any fork)
    panels = lambda name: -len(specs[name][0].get("widths", [1]))  # the slow figures first
    pmap(render_figure, [(out, key, specs[key]) for key in sorted(specs, key=panels)])



# ---- problem 1.2 ------------------------------------------------------------------------------

EM_LAYOUT = dict(height=1.95, left=0.52, right=0.08, gap=0.62, widths=[1.45, 1.45, 2.15])


def draw_em_means(ax, r, x, K, colors):
    """Training data, true means (x) and EM's means (+) at one radius; where several of EM's
    components sit at one point (gmm_em.merge_components) the width of its + counts them."""
    loc = r["locations"]
    ax.scatter(*x.T, s=2, c=colors["grey"], alpha=0.5, rasterized=True)
    ax.scatter(*gmm_em.ring_means(K, r["R"]).T, s=40, marker="x", c=colors["true"])
    ax.scatter(*np.array(loc["means"]).T, s=40 * np.array(loc["counts"]) ** 2, marker="+",
               c=colors["fit"], linewidths=1.5)
    title = (f"R = {r['R']:g}: mean error {r['mean_dist']:.2f}" if r["n_locations"] == K
             else f"R = {r['R']:g}: means at {r['n_locations']} points")
    ax.set(title=title, xlabel="x₁", ylabel="x₂", aspect="equal")  # the markers: in the caption


def draw_em(axes, fits, data, K, colors):
    """Problem 1.2's figure on three axes: training data, true and EM means at both radii
    (fits = {"big": ..., "small": ...} as gmm_em.em_experiment returns them, data the two
    training sets), and how far below its maximum the mean log-likelihood per point is after
    each EM iteration."""
    for ax, r, x in zip(axes[:2], (fits["big"], fits["small"]), data, strict=True):
        draw_em_means(ax, r, x, K, colors)
    ax, big, small = axes[2], fits["big"], fits["small"]
    below = lambda r, lls: np.maximum(r["history"][-1] - np.asarray(lls), 1e-16)
    for r, c in ((big, colors["fit"]), (small, colors["kde"])):
        ax.plot(np.arange(1, len(r["plain"]) + 1), below(r, r["plain"]), c=c,
                label=f"R = {r['R']:g}")
    ax.plot(np.array(small["maps"]) + 1, below(small, small["history"]), "o", ms=2, c=colors["kde"],
            label="accelerated")
    stop = 1 + int(np.argmax(np.diff(small["plain"]) < 1e-6))  # where a rule on the LL gain stops
    left = below(small, small["plain"][stop])
    ax.plot(stop + 1, left, "s", ms=6, mfc="none", c=colors["true"], label="LL gain < 10⁻⁶")
    # the curves start below 10 and fall: the legend sits in the head-room above them
    ax.set(xscale="log", yscale="log", xlabel="EM iterations", ylabel="nats per point",
           title="mean LL below its maximum", ylim=(1e-16, 1e9))
    ax.legend(loc="upper right", ncol=2, handlelength=1.0, handletextpad=0.4, columnspacing=0.8)


# ---- problem 1.3 ------------------------------------------------------------------------------

KDE_LAYOUT = dict(width=0.8 * TEXT_WIDTH, height=1.85, left=0.55, right=1.72)  # legend on the right


def draw_kde(axes, res, colors):
    """Problem 1.3's figure: validation and test log-likelihood against the kernel variance
    (res as kde_experiment returns it)."""
    ax, grid = axes[0], np.array(res["grid"])
    ax.plot(grid, res["val_curve"], c=colors["val"], label="validation")
    ax.plot(grid, res["test_curve"], c=colors["test"], ls="--", label="test")
    chosen = f"chosen σ = {res['sigma']:.3f}"
    ax.plot(res["sigma"], res["val_ll"], "o", c=colors["val"], label=chosen)
    ax.axvline(res["scott_sigma"], c=colors["other"], ls=":",
               label=f"Scott's rule σ = {res['scott_sigma']:.2f}")
    ax.set(xscale="log", ylim=(res["val_ll"] - 3.0, res["val_ll"] + 0.3),
           xlabel="σ (kernel variance)",
           ylabel="mean log-likelihood (nats)", title="choosing the kernel variance")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: the curves fill the axes


# ---- problems 1.6-1.7 and beyond -------------------------------------------------------------

def candidate_name(tau, hidden):
    """The one name of an EBM candidate in figures: τ = 1, H = 32."""
    return f"τ = {tau:g}, H = {hidden}"


TRAINING_LAYOUT = dict(height=2.3, widths=[1, 1], gap=0.8)


def draw_training(axes, model, route, truth, colors):
    """Problem 1.6: training of the examined model (left), the IS gradient measured (right)."""
    ax, h = axes[0], model["history"]
    ax.plot(h["steps"], h["objective"], c=colors["fit"], label="objective")
    ax.plot(h["steps"], h["val_ll"], c=colors["val"], label="validation LL")
    ax.axhline(truth["train"], c=colors["fit"], ls=":")
    ax.axhline(truth["val"], c=colors["val"], ls=":")
    best = route["restarts"][0]["best_iteration"]
    at_best = [np.interp(best, h["steps"], h[key]) for key in ("objective", "val_ll")]
    ax.plot([best, best], at_best, "o", ms=5, mfc="none", c=colors["true"],
            label=f"kept iterate {best}")
    ax.plot([], [], ls=":", c=colors["grey"], label="true density")  # the dotted lines' entry
    top = max(max(h["objective"]), truth["train"], truth["val"])
    # from the kept iterate on, both curves on the axis; 0.8 nats below the top at least
    late = [v for s, v in zip(h["steps"], h["val_ll"]) if s >= best]
    low = min(top - 0.8, min(late, default=top) - 0.05)
    below = next((s for s, v in zip(h["steps"], h["val_ll"]) if v >= low), h["steps"][-1])
    name = candidate_name(route["tau"], route["hidden"])
    # head-room above every curve holds the legend
    cut = f" (< {below}: below the axis)" if below > h["steps"][0] else ""
    ax.set(ylim=(low, top + 0.4 * (top - low)), xlabel=f"L-BFGS iteration{cut}",
           ylabel="mean log-likelihood (nats)", title=f"training ({name})")
    ax.legend(loc="upper center", ncol=2, handlelength=1.2, columnspacing=0.8)
    ax, g = axes[1], model["gradient"]
    x = np.arange(len(g))
    column = lambda key: [r[key] for r in g]
    ax.plot(x, column("rel_err_train"), "o-", c=colors["fit"], label="fixed training sample")
    ax.errorbar(x, column("rel_err_fresh"), yerr=column("rel_err_fresh_sd"), fmt="s--",
                c=colors["kde"], capsize=3, label="fresh samples (mean ± sd)")
    ax.set(yscale="log", xticks=x, xticklabels=[str(i) for i in column("iteration")],
           xlabel="L-BFGS iteration (last: kept)", ylabel="‖F̂ − ∇A‖ / ‖∇A‖",
           title="the IS gradient against quadrature")
    ax.legend(loc="upper right")


DENSITY_LAYOUT = dict(height=2.05, left=0.55, right=0.62, top=0.22, bottom=0.38, gap=0.2,
                      widths=[1, 1, 1, 0.06])


def draw_density(axes, maps, colors):
    """Problem 1.7: the true, KDE and EBM log-densities on one colour scale cut below at
    vmin; the fourth axes holds the colour bar."""
    vmin, half = maps["true"].max() - 12, (maps["axis"][1] - maps["axis"][0]) / 2
    extent = (maps["axis"][0] - half, maps["axis"][-1] + half) * 2
    titles = ("true mixture", "KDE", "EBM (A by quadrature)")
    for ax, key, title in zip(axes, ("true", "kde", "ebm"), titles):
        im = ax.imshow(np.maximum(maps[key], vmin).reshape(maps["axis"].size, -1), cmap="viridis",
                       vmin=vmin, origin="lower", extent=extent, interpolation="bilinear")
        ax.set(title=title, xlabel="x₁")
    axes[0].set_ylabel("x₂"), axes[1].set_yticks([]), axes[2].set_yticks([])
    axes[0].figure.colorbar(im, cax=axes[3], label=f"log p(x), cut at {vmin:.1f}")


SELECTION_LAYOUT = dict(width=0.8 * TEXT_WIDTH, height=2.3, left=0.68, right=1.45)


def draw_selection(axes, route, colors):
    """The (tau, H) selection: each candidate's best validation LL on its budget, with A from the
    held-out proposal sample (circles) and by quadrature (dashes); widths side by side."""
    from matplotlib.lines import Line2D
    ax, rows = axes[0], route["candidates"]
    widths, taus = sorted({r["hidden"] for r in rows}), sorted({r["tau"] for r in rows})
    shade = dict(zip(widths, (colors["kde"], colors["fit"], colors["ebm"], colors["other"])))
    last = max(r["iterations"] for r in rows)
    for r in rows:
        x = taus.index(r["tau"]) + 0.18 * (widths.index(r["hidden"]) - (len(widths) - 1) / 2)
        full = r["iterations"] >= last or r["converged"]
        colour = shade.get(r["hidden"], colors["grey"])
        ax.plot(x, r["val_ll"], "o", c=colour, mfc=colour if full else "white", ms=5)
        ax.plot(x, r["val_ll_grid"], "_", c=colour, ms=9, mew=1.5)
        if (r["tau"], r["hidden"]) == (route["tau"], route["hidden"]):
            ax.plot(x, r["val_ll"], "*", ms=14, mfc="none", c=colors["true"])
    handles = [Line2D([], [], ls="", marker="o", c=shade.get(h, colors["grey"]), label=f"H = {h}")
               for h in widths]
    handles += [Line2D([], [], ls="", marker="o", c="k", mfc="white", label="cut early"),
                Line2D([], [], ls="", marker="_", c="k", ms=9, mew=1.5, label="A by quadrature"),
                Line2D([], [], ls="", marker="*", c="k", mfc="none", ms=10, label="chosen")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set(xticks=range(len(taus)), xticklabels=[f"{t:g}" for t in taus],
           xlabel="confinement scale τ", ylabel="best validation LL (nats)",
           title="EBM selection (markers: A by importance sampling)")


SAMPLES_LAYOUT = dict(height=2.25, widths=[1, 1, 1], left=0.5, gap=0.7)


def draw_samples(axes, train, mala_x, exact_x, samples, colors):
    """Beyond the homework: samples from the learned EBM over the training data; the chains'
    share of each mode against the model's mass; their radius against exact draws."""
    ax = axes[0]
    ax.scatter(*train.T, s=2, c=colors["grey"], alpha=0.6, label="data", rasterized=True)
    ax.scatter(*mala_x.T, s=2, c=colors["ebm"], alpha=0.4, label="MALA", rasterized=True)
    # no legend: the points fill the panel; the caption names the colours (as the other panels')
    ax.set(title="samples from the EBM", xlabel="x₁", ylabel="x₂", aspect="equal")
    ax, k = axes[1], np.arange(len(samples["masses"]))
    expected = np.array(samples["masses"]) * samples["chains"]
    ax.bar(k, expected, color=colors["grey"], alpha=0.6, label="model")
    ax.plot(k, samples["counts"], "o", c=colors["ebm"], label="MALA")
    ax.set(xlabel="mode k (sector at angle 2πk/K)", ylabel="chains",
           title=f"modes: χ² p = {samples['p_modes']:.2f}", ylim=(0, 1.5 * max(samples["counts"])))
    ax.legend(loc="upper right")
    ax, r_exact = axes[2], np.linalg.norm(exact_x, axis=1)
    bins = np.linspace(0, r_exact.max(), 40)
    exact_h, _, _ = ax.hist(r_exact, bins, density=True, color=colors["grey"], alpha=0.6,
                            label="exact draws")
    mala_h, _, _ = ax.hist(np.linalg.norm(mala_x, axis=1), bins, density=True, histtype="step",
                           color=colors["ebm"], lw=1.5, label="MALA")
    top = max(exact_h.max(), mala_h.max())
    ax.set(xlabel="‖x‖", ylabel="density", title=f"radius: KS p = {samples['p_radius']:.2f}",
           ylim=(0, 1.45 * top))  # head-room above the bars holds the legend
    ax.legend(loc="best")


# ---- Section 2 --------------------------------------------------------------------------------

KL_LAYOUT = dict(height=2.25, widths=[1, 1, 1], left=0.52, gap=0.6)


def draw_kl(axes, res, log_p, log_normal, q, colors):
    """Problem 2.2: p and a narrow q (left), the two KL integrands (middle), Gaussian fits
    (log_p(t) and log_normal(t, mean, sd) the log-densities VI.py computes with)."""
    t = np.linspace(-11, 11, 1101)
    log_p, log_q = log_p(t), log_normal(t, *q)
    axes[0].plot(t, np.exp(log_p), c=colors["true"], label="p")
    axes[0].plot(t, np.exp(log_q), c=colors["fit"], label=f"q = N({q[0]:g}, {q[1]:g}²)")
    axes[0].set(xlabel="x", ylabel="density", ylim=(0, 0.8), title="p and a narrow q")
    # the two divergences under the legend, where p is low (its modes are under 0.3)
    axes[0].text(0.97, 0.7, f"KL(p‖q) = {res['kl_pq']:.1f}\nKL(q‖p) = {res['kl_qp']:.2f}",
                 transform=axes[0].transAxes, ha="right", va="top")
    axes[1].plot(t, np.exp(log_p) * (log_p - log_q), c=colors["kde"], label="p log(p/q)")
    axes[1].plot(t, np.exp(log_q) * (log_q - log_p), c=colors["ebm"], ls="--", label="q log(q/p)")
    axes[1].set(xlabel="x", ylabel="integrand (nats per unit x)", title="paid where q is absent")
    gaussian = lambda fit: np.exp(log_normal(t, fit["mu"], fit["sd"]))
    axes[2].fill_between(t, np.exp(log_p), color=colors["grey"], alpha=0.4)  # named in the title
    axes[2].plot(t, gaussian(res["forward"]), c=colors["kde"], lw=2, label="argmin KL(p‖q)")
    others = [o for o in res["reverse_optima"] if o != res["reverse_best"]]
    axes[2].plot(t, gaussian(res["reverse_best"]), c=colors["fit"], label="argmin KL(q‖p)")
    for i, o in enumerate(others):
        axes[2].plot(t, gaussian(o), c=colors["fit"], ls="--",
                     label="other local optima\nof KL(q‖p)" if i == 0 else None)
    # head-room above the densities holds the legend (the fits' peaks at half the axis)
    peak = max(gaussian(o).max() for o in res["reverse_optima"])
    axes[2].set(xlabel="x", ylabel="density", ylim=(0, peak / 0.5),
                title="Gaussian fits to p (grey)")
    for ax, where in zip(axes, ("upper right", "upper left", "upper center"), strict=True):
        ax.legend(loc=where)


ELBO_POINTS_LAYOUT = dict(height=2.3, widths=[1, 1], left=0.62, gap=0.7)


def draw_elbo_points(axes, data, radii, per_point, unif_bound, colors):
    """Problem 2.3: per test point, log p and both bounds against the distance from the centre
    (unif_bound(x, R) the closed form of L(Unif) on a ring)."""
    for ax, R, x, b in zip(axes, radii, (data["test"], data["test_small"]),
                           (per_point["big"], per_point["small"]), strict=True):
        r = np.linalg.norm(x, axis=1)
        grid = np.linspace(0, r.max() * 1.02, 200)
        ax.scatter(r, b["log_p"], s=3, c=colors["true"], label="log p(x)", rasterized=True)
        ax.scatter(r, b["post"], s=12, marker="+", lw=0.6, c=colors["kde"], label="L(posterior)",
                   rasterized=True)
        ax.scatter(r, b["unif"], s=3, c=colors["fit"], label="L(Unif)", rasterized=True)
        ax.plot(grid, unif_bound(np.c_[grid, 0 * grid], R), c=colors["grey"], lw=1,
                label="−log 2π − (‖x‖² + R²)/2")
        ax.set(xlabel="‖x‖ (distance from the centre)", ylabel="nats",
               title=f"R = {R:g}: mean gap of L(Unif) {np.mean(b['gap']):.2f}")
    lo, hi = axes[1].get_ylim()  # head-room below the points at R = 1 holds the legend: the
    axes[1].set_ylim(lo - 0.12 * (hi - lo), hi)  # points at R = 10 leave no corner free
    axes[1].legend(loc="best")


ELBO_K_LAYOUT = dict(height=2.3, widths=[1, 1], gap=0.8)


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


IWAE_LAYOUT = dict(height=2.3, widths=[1, 1], left=0.6)


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

