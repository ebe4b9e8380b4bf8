"""The figures as printed: each is drawn at the size theory.pdf prints it (no scaling in LaTeX),
so its fonts are the printed sizes. Every text is at least 8 pt (against the 10 pt body) and
lies inside the figure, so nothing is clipped when saved."""

import re

import pytest
from conftest import FIGURES, ROOT

import VI
from theory import figures as figures_module

FLOOR = 8.0  # points


@pytest.fixture(scope="module")
def figures(pipeline):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, results, made = pipeline
    specs = VI.figure_specs(cfg, made["data"], results, made["models"], made["per_point"])
    drawn = {name: figures_module.draw_figure(*spec) for name, spec in specs.items()}
    for fig in drawn.values():
        fig.canvas.draw()  # lays the labels out where saving puts them
    yield drawn
    for fig in drawn.values():
        plt.close(fig)


def texts(fig):
    """Every text the figure shows: tick labels only of ticks inside the axis' view (matplotlib
    also keeps labels for the locator's ticks beyond the limits, and does not draw them)."""
    from matplotlib.text import Text

    hidden = set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lo, hi), max(lo, hi)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                    hidden.update(map(id, (tick.label1, tick.label2)))
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]


def test_every_figure_of_the_write_up_is_drawn(figures):
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "theory").glob("*.tex"))
    included = set(re.findall(r"\\includegraphics(?:\[[^]]*\])?\{(\w+)\}", source))
    assert included == set(figures)


def test_the_write_up_prints_every_figure_at_its_own_size(figures):
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "theory").glob("*.tex"))
    assert not re.search(r"\\includegraphics\[", source), (
        "a figure scaled by LaTeX changes its font sizes"
    )
    for name, fig in figures.items():
        assert fig.get_figwidth() <= figures_module.TEXT_WIDTH + 1e-9, name


FIGURE_NAMES = FIGURES  # every figure of the write-up (conftest)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_every_text_is_at_least_8_points_and_everything_inside_the_figure(figures, name):
    fig = figures[name]
    for t in texts(fig):
        assert t.get_fontsize() >= FLOOR, (name, t.get_text(), t.get_fontsize())
    drawn = fig.get_tightbbox(
        fig.canvas.get_renderer()
    )  # inches, what was drawn: nothing may stick out
    tolerance = 0.02
    assert drawn.x0 >= -tolerance and drawn.y0 >= -tolerance, (name, drawn)
    assert (
        drawn.x1 <= fig.get_figwidth() + tolerance and drawn.y1 <= fig.get_figheight() + tolerance
    ), (name, drawn)


def densified(points, box, spacing=1.0):
    """The points of a polyline (display space) that lie in `box`, one every `spacing` pixels
    along each segment: each segment is first clipped to the box, so a segment that leaves the
    axes by far (a log axis' floor) is still sampled densely where it is drawn."""
    import numpy as np

    points = np.asarray(points, dtype=float)
    if len(points) < 2:
        return points
    a, d = points[:-1], points[1:] - points[:-1]
    lo, hi = np.zeros(len(a)), np.ones(len(a))
    for k, (b0, b1) in enumerate(((box.x0, box.x1), (box.y0, box.y1))):
        flat, within = d[:, k] == 0, (b0 <= a[:, k]) & (a[:, k] <= b1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (b0 - a[:, k]) / d[:, k], (b1 - a[:, k]) / d[:, k]
        lo = np.maximum(lo, np.where(flat, np.where(within, -np.inf, np.inf), np.minimum(t0, t1)))
        hi = np.minimum(hi, np.where(flat, np.where(within, np.inf, -np.inf), np.maximum(t0, t1)))
    keep = lo <= hi
    a, d, lo, hi = a[keep], d[keep], lo[keep], hi[keep]
    n = np.ceil(np.hypot(d[:, 0], d[:, 1]) * (hi - lo) / spacing).astype(int) + 1
    seg, first = np.repeat(np.arange(len(a)), n), np.repeat(np.cumsum(n) - n, n)
    frac = (np.arange(n.sum()) - first) / np.maximum(n[seg] - 1, 1)
    return a[seg] + (lo[seg] + frac * (hi - lo)[seg])[:, None] * d[seg]


def pieces(xy):
    """The runs of a polyline between its non-finite points, where matplotlib breaks it."""
    import numpy as np

    split = np.split(xy, np.flatnonzero(~np.isfinite(xy).all(1)))
    return [p[np.isfinite(p).all(1)] for p in split]


def drawn_points(ax):
    """Every plotted point of an axes that it shows, in display coordinates: points along each
    drawn line segment (one a pixel, the line broken where matplotlib breaks it), each marker's
    centre and the middles of its sides (lines' markers and scatter offsets), and the outlines of
    bars, histograms and filled areas."""
    import numpy as np

    box, px = ax.get_window_extent(), ax.figure.dpi / 72  # pixels per point
    out = []

    def markers(xy, sizes):  # sizes: the markers' widths in pixels
        half = np.broadcast_to(np.asarray(sizes, dtype=float), len(xy))[:, None] / 2
        out.extend([xy] + [xy + half * step for step in ([1, 0], [-1, 0], [0, 1], [0, -1])])

    for line in ax.lines:
        if not line.get_visible():
            continue
        data = np.column_stack([np.asarray(v, dtype=float) for v in line.get_data()])
        xy = line.get_transform().transform(data)
        if line.get_linestyle() not in ("None", "", " ") and line.get_linewidth() > 0:
            out.extend(densified(p, box) for p in pieces(xy))
        if line.get_marker() not in (None, "None", "", " "):
            markers(xy[np.isfinite(xy).all(1)], line.get_markersize() * px)
    for c in ax.collections:
        if not c.get_visible():
            continue
        offsets = np.asarray(c.get_offsets(), dtype=float)
        if len(offsets) and not (len(offsets) == 1 and np.allclose(offsets, 0)):
            # markers at offsets (scatter): the paths are the marker's shape, not data
            sizes = c.get_sizes() if len(c.get_sizes()) else [0]
            markers(c.get_offset_transform().transform(offsets), np.sqrt(sizes) * px)
            continue
        for path in c.get_paths():
            out.extend(densified(p, box) for p in path.to_polygons(c.get_transform(), 0, 0, False))
    for patch in ax.patches:
        if patch.get_visible():
            polygons = patch.get_path().to_polygons(patch.get_transform(), 0, 0, False)
            out.extend(densified(p, box) for p in polygons)
    points = np.concatenate(out) if out else np.zeros((0, 2))
    return points[inside(points, box, pad=0)]  # the rest is clipped away


def inside(points, box, pad=0.5):
    return (
        (points[:, 0] > box.x0 + pad)
        & (points[:, 0] < box.x1 - pad)
        & (points[:, 1] > box.y0 + pad)
        & (points[:, 1] < box.y1 - pad)
    )


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_no_legend_covers_a_plotted_point(figures, name):
    for ax in figures[name].axes:
        legend = ax.get_legend()
        if legend is None or not legend.get_visible():
            continue
        hidden = inside(drawn_points(ax), legend.get_window_extent())
        assert not hidden.any(), (name, ax.get_title(), int(hidden.sum()))


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_no_text_overlaps_another(figures, name):
    fig = figures[name]
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts(fig)]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            overlap = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 0.5 and (
                min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 0.5
            )
            assert not overlap, (name, a, b)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_no_annotation_sits_on_a_plotted_line(figures, name):
    for ax in figures[name].axes:
        points = drawn_points(ax)
        for t in ax.texts:
            if t.get_visible() and t.get_text().strip():
                assert not inside(points, t.get_window_extent()).any(), (name, t.get_text())


LINE_WORDS = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dotted"}


def figure_environments():
    """{figure name: the text of the write-up's figure environment that includes it}."""
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "theory").glob("*.tex"))
    environments = re.findall(r"\\begin\{figure\}(.*?)\\end\{figure\}", source, re.S)
    return {re.search(r"\\includegraphics\{(\w+)\}", e).group(1): e for e in environments}


def line_styles(artists):
    """(line style, RGBA colour) of every visible drawn line among artists (markers alone and
    invisible lines have no line style to name)."""
    from matplotlib.colors import to_rgba

    return {
        (line.get_linestyle(), to_rgba(line.get_color()))
        for line in artists
        if line.get_visible() and line.get_linestyle() in LINE_WORDS and line.get_linewidth() > 0
    }


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_every_line_style_is_named_in_a_legend_or_the_caption(figures, name):
    """A drawn line is named by a legend entry of its style and colour anywhere in the figure, by
    an entry of its style in its own axes' legend (one entry standing for lines of several
    colours), or by its style's word (dashed, dotted, ...) in its axes' title or the caption."""
    from matplotlib.lines import Line2D

    fig, caption = figures[name], figure_environments()[name]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    in_legends = {s for legend in legends for s in line_styles(legend.findobj(Line2D))}
    for ax in fig.axes:
        own = ax.get_legend()
        own_styles = {ls for ls, _ in line_styles(own.findobj(Line2D))} if own else set()
        for ls, colour in line_styles(ax.lines):
            word = LINE_WORDS[ls]
            named = (ls, colour) in in_legends or ls in own_styles
            assert named or word in ax.get_title() or word in caption, (name, ax.get_title(), word)
