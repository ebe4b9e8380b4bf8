"""The figures as printed: each is drawn at the size theory.pdf prints it (no scaling in LaTeX),
so its fonts are the printed sizes. Every text is at least 8 pt (against the 10 pt body) and
lies inside the figure, so nothing is clipped when saved."""

import re

import pytest
from conftest import ROOT

import VI

FLOOR = 8.0  # points


@pytest.fixture(scope="module")
def figures(pipeline):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, results, made = pipeline
    specs = VI.figure_specs(cfg, made["data"], results, made["models"], made["per_point"])
    drawn = {name: VI.draw_figure(*spec) for name, spec in specs.items()}
    for fig in drawn.values():
        fig.canvas.draw()  # lays the labels out where saving puts them
    yield drawn
    for fig in drawn.values():
        plt.close(fig)


def texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_every_figure_of_the_write_up_is_drawn(figures):
    source = "".join(p.read_text() for p in (ROOT / "theory").glob("*.tex"))
    included = set(re.findall(r"\\includegraphics(?:\[[^]]*\])?\{(\w+)\}", source))
    assert included == set(figures)


def test_the_write_up_prints_every_figure_at_its_own_size(figures):
    source = "".join(p.read_text() for p in (ROOT / "theory").glob("*.tex"))
    assert not re.search(r"\\includegraphics\[", source), (
        "a figure scaled by LaTeX changes its font sizes"
    )
    for name, fig in figures.items():
        assert fig.get_figwidth() <= VI.TEXT_WIDTH + 1e-9, name


@pytest.mark.parametrize(
    "name",
    [
        "em",
        "kde",
        "ebm_training",
        "ebm_density",
        "ebm_selection",
        "ebm_samples",
        "kl",
        "elbo_points",
        "elbo_K",
        "iwae",
    ],
)
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
