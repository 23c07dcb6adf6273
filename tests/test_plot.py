"""deqlib.plot: figures are returned, styled, shown as PNG; no global matplotlib state moves."""

import subprocess
import sys

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from deqlib import plot


def rc_snapshot() -> dict:
    # Reading rcParams["backend"] would resolve (and import) a backend: leave it out.
    return {
        k: repr(dict.__getitem__(matplotlib.rcParams, k))
        for k in matplotlib.rcParams
        if k != "backend"
    }


HELPERS = {
    "lines": lambda: plot.lines(
        {"anderson": [1.0, 0.1, 0.01], "mine": ([0, 2, 4], [3, 2, 1])},
        yscale="log",
        hlines={"tol": 1e-2},
        xlabel="step",
    ),
    "semilogy": lambda: plot.semilogy([torch.tensor([1.0, 1e-3])]),
    "residual_plot": lambda: plot.residual_plot({"picard": [1.0, 0.5, 0.25]}, tol=1e-3),
    "bars": lambda: plot.bars({"implicit": 0.91, "unrolled": 0.9}, ylabel="accuracy"),
    "image_grid": lambda: plot.image_grid(torch.rand(6, 64), labels=list(range(6)), ncols=3),
    "subplots": lambda: plot.subplots(1, 2)[0],
    "figure": lambda: plot.figure(),
}


def test_import_and_helpers_never_import_pyplot_or_choose_a_backend():
    """In a fresh interpreter: importing deqlib, then drawing and rendering with every helper,
    leaves pyplot unimported and matplotlib's backend unresolved."""
    code = """
import sys, matplotlib, deqlib, deqlib.plot, deqlib.check, deqlib.diagrams
def state():
    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    return "matplotlib.pyplot" in sys.modules, backend is matplotlib.rcsetup._auto_backend_sentinel
print(*state())
import torch
from deqlib import plot
figs = [plot.lines({"anderson": [1.0, 0.1]}, yscale="log"), plot.bars({"a": 1.0}),
        plot.image_grid(torch.rand(4, 16)), plot.residual_plot({"picard": [1.0, 0.5]}, tol=0.1)]
assert all(f._repr_png_().startswith(b"\\x89PNG") for f in figs)
print(*state())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr
    after_import, after_drawing = out.stdout.splitlines()
    assert after_import == "False True", (
        f"import deqlib (pyplot imported, backend unchosen): {after_import}"
    )
    assert after_drawing == "False True", (
        f"the helpers (pyplot imported, backend unchosen): {after_drawing}"
    )


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_helper_returns_a_book_figure_and_leaves_rcparams_alone(name):
    before = rc_snapshot()
    fig = HELPERS[name]()
    png = fig._repr_png_()
    after = rc_snapshot()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"plot.{name} changed global rcParams: {changed}"
    assert isinstance(fig, plot.BookFigure) and isinstance(fig, Figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_lines_draws_each_series_with_the_book_colour_and_the_reference_line():
    fig = HELPERS["lines"]()
    ax = fig.axes[0]
    drawn = {line.get_label(): line for line in ax.get_lines()}
    assert set(drawn) == {"anderson", "mine", "tol"}
    assert drawn["anderson"].get_color() == plot.PALETTE["anderson"]
    assert list(drawn["mine"].get_xdata()) == [0, 2, 4]
    assert list(drawn["tol"].get_ydata()) == [1e-2, 1e-2]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    assert ax.get_legend() is not None
    # the book's style reached the artists although the global rcParams were never touched
    assert drawn["anderson"].get_linewidth() == plot.STYLE["lines.linewidth"]
    assert not ax.spines["top"].get_visible()


def test_lines_draws_on_given_axes_and_returns_their_figure():
    fig, axes = plot.subplots(1, 2)
    assert plot.residual_plot({"anderson": [1, 0.1]}, ax=axes[1]) is fig
    assert len(axes[1].get_lines()) == 1 and len(axes[0].get_lines()) == 0


def test_tensors_with_grad_are_plotted():
    y = torch.tensor([1.0, 2.0], requires_grad=True) * 2
    line = plot.lines({"a": y}).axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [2.0, 4.0]


def test_bad_input_is_refused_with_the_value():
    with pytest.raises(ValueError, match="2 x values for 3 y values"):
        plot.lines({"a": ([1, 2], [1, 2, 3])})
    with pytest.raises(TypeError, match="values of 'a' must be a sequence of numbers"):
        plot.lines({"a": ["x", "y"]})
    with pytest.raises(KeyError, match="not plotted: \\['b'\\]"):
        plot.lines({"a": [1, 2]}, styles={"b": {"linestyle": "--"}})
    with pytest.raises(ValueError, match="square number of pixels; got 10"):
        plot.image_grid(torch.rand(2, 10))
    with pytest.raises(ValueError, match="ncols=0"):
        plot.subplots(1, 0)
    with pytest.raises(ValueError, match="empty"):
        plot.bars({})


def test_removed_global_style_setter_says_what_to_use_instead():
    with pytest.raises(AttributeError, match="with plot.style\\(\\)"):
        plot.use_style()


def test_style_context_restores_rcparams():
    before = rc_snapshot()
    with plot.style():
        assert matplotlib.rcParams["axes.spines.top"] is False
    assert rc_snapshot() == before


def test_figure_png_renders_any_figure_and_slider_pairs_images_with_labels():
    png = plot.figure_png(plot.lines({"a": [1, 2]}))
    assert png.startswith(b"\x89PNG")
    widget = plot.slider_of_images([png, png], [0.1, 0.2], description="q")
    slider, stack = widget.children
    assert list(slider.options) == ["0.1", "0.2"] and len(stack.children) == 2
    with pytest.raises(ValueError, match="got 2 images for 3 labels"):
        plot.slider_of_images([png, png], [1, 2, 3])


def test_color_reads_the_first_word_of_a_label():
    assert plot.color("Anderson (p = 5)") == plot.PALETTE["anderson"]
    assert plot.color("one-step backward") == plot.PALETTE["one_step"]
    assert plot.color("something else") is None


def test_subplots_take_numpy_integers_and_refuse_floats():
    import numpy as np

    fig, axes = plot.subplots(np.int64(1), np.int64(2))
    assert len(axes) == 2
    with pytest.raises(TypeError, match="nrows"):
        plot.subplots(1.5)
    with pytest.raises(ValueError, match="ncols"):
        plot.subplots(1, 0)


def test_bars_name_a_bad_height_and_take_one_element_tensors():
    with pytest.raises(TypeError, match=r"values\['a'\] must be a real number .*'x' of type str"):
        plot.bars({"a": "x"})                 # float('x') raised, naming no bar
    with pytest.raises(ValueError, match=r"values\['b'\] must be a finite"):
        plot.bars({"a": 1.0, "b": float("nan")})
    fig = plot.bars({"a": torch.tensor(0.5), "b": 2})
    assert [p.get_height() for p in fig.axes[0].patches] == [0.5, 2.0]
    with pytest.raises(TypeError, match="ncols must be an integer"):
        plot.image_grid(torch.rand(2, 4, 4), ncols=2.0)
