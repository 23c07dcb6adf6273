"""The book's figures: one visual style, no global side effects.

Every helper builds its own :class:`BookFigure` (a :class:`matplotlib.figure.Figure`) and
returns it. Nothing here imports :mod:`matplotlib.pyplot`, selects a backend or changes the
global ``matplotlib.rcParams``: the style is applied with :func:`matplotlib.rc_context` while a
figure is built, so a training script or a DDP worker that imports deqlib keeps its own
matplotlib state, and one chapter's figure cannot blank the next one's.

A notebook cell that *ends* with a :class:`BookFigure` shows it as a PNG, even in a kernel
where pyplot was never imported.

A chapter's cell stays short::

    from deqlib import plot
    plot.lines({"picard": res_p.residuals, "anderson": res_a.residuals}, yscale="log",
               xlabel="step", ylabel="relative residual", hlines={"tol": 1e-6})

To draw by hand in the book's style, take axes from :func:`subplots` and draw inside
:func:`style` (lines and legends read the style when they are created)::

    with plot.style():
        fig, ax = plot.subplots()
        ax.plot(x, y, color=plot.PALETTE["delm"], label="DELM")
        ax.legend()
    fig
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from . import validate

__all__ = [
    "PALETTE",
    "STYLE",
    "BookFigure",
    "style",
    "figure",
    "subplots",
    "lines",
    "semilogy",
    "residual_plot",
    "bars",
    "image_grid",
    "figure_png",
    "slider_of_images",
    "color",
]

#: One colour per method or model across the book (colour-blind-safe, Okabe–Ito).
PALETTE = {
    "picard": "#0072B2",
    "anderson": "#D55E00",
    "broyden": "#009E73",
    "implicit": "#D55E00",
    "unrolled": "#0072B2",
    "one_step": "#CC79A7",
    "delm": "#D55E00",
    "linear": "#0072B2",
    "deep_linear": "#009E73",
    "deep2": "#009E73",
    "deep3": "#56B4E9",
    "explicit": "#0072B2",
    "deq": "#D55E00",
    "bound": "#000000",
}
_CYCLE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000"]

#: The book's matplotlib settings. Applied only inside :func:`style` (never globally); a
#: reader who wants them for all of their own pyplot figures can run
#: ``matplotlib.rcParams.update(plot.STYLE)`` in their own code.
STYLE = {
    "figure.figsize": (6.4, 3.8),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "lines.linewidth": 1.8,
    "font.family": "DejaVu Sans",
    "axes.prop_cycle": matplotlib.cycler(color=_CYCLE),
}


class BookFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that a notebook shows as a PNG without pyplot.

    IPython calls ``_repr_png_`` on the object a cell ends with; matplotlib's own Figure only
    gets a PNG formatter once pyplot's inline backend is active, which the book never needs.

    Make one with :func:`figure` or :func:`subplots` (in the book's style); the constructor's
    arguments (``figsize``, ``dpi``, ``layout``, …) are those of matplotlib's Figure.
    """

    def _repr_png_(self) -> bytes:
        return figure_png(self, close=False)


def style() -> contextlib.AbstractContextManager:
    """A context in which matplotlib uses the book's style (:data:`STYLE`); restored on exit.

    Returns:
        The context manager (``with plot.style(): ...``).
    """
    return matplotlib.rc_context(STYLE)


def color(name: str) -> str | None:
    """The book's colour for a method or model name ("anderson", "DELM (gaussian)"…), or None.

    The first word, lower-cased, is looked up in :data:`PALETTE`, so "Anderson (p = 5)" is
    drawn in Anderson's colour.

    Args:
        name: a series' label, e.g. ``"picard"``, ``"Anderson (p = 5)"``, ``"delm"``.

    Returns:
        A matplotlib colour string, or ``None`` when the first word has no colour.
    """
    key = str(name).split()[0].lower() if str(name).split() else ""
    return PALETTE.get(key, PALETTE.get(key.replace("-", "_")))


def figure(*, figsize: tuple[float, float] | None = None) -> BookFigure:
    """An empty :class:`BookFigure` in the book's style (constrained layout).

    Args:
        figsize: ``(width, height)`` in inches; ``None``: the style's default size.

    Returns:
        The :class:`BookFigure`.
    """
    with style():
        return BookFigure(figsize=figsize, layout="constrained")


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    sharex: bool = False,
    sharey: bool = False,
    squeeze: bool = True,
):
    """``(fig, axes)`` like :func:`matplotlib.pyplot.subplots`, without pyplot.

    The default width grows with ``ncols`` (5.5 inches per column from two columns on) so that
    side-by-side panels stay legible at the page's width.

    Args:
        nrows: the number of rows of axes, ≥ 1.
        ncols: the number of columns of axes, ≥ 1.
        figsize: ``(width, height)`` in inches; ``None``: the style's size for one column,
            5.5 inches per column for more, and 0.8 of the style's height per row for more
            than one row.
        sharex: all axes share the x axis.
        sharey: all axes share the y axis.
        squeeze: as matplotlib's: one Axes for 1×1, a 1-d array for one row or column;
            ``False`` always gives a 2-d array.

    Returns:
        ``(fig, axes)``, a :class:`BookFigure` and its Axes (one, or a numpy array of them).
    """
    nrows = validate.positive_integer("nrows", nrows)    # numpy integers too
    ncols = validate.positive_integer("ncols", ncols)
    if figsize is None:
        width, height = STYLE["figure.figsize"]
        figsize = (
            width if ncols == 1 else 5.5 * ncols,
            height * (1 if nrows == 1 else 0.8 * nrows),
        )
    fig = figure(figsize=figsize)
    with style():
        axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze)
    return fig, axes


def _series(data, x) -> Iterator[tuple[str | None, Sequence[float], Sequence[float]]]:
    """Normalise ``data`` into (label, xs, ys) triples (see :func:`lines`)."""
    items = data.items() if isinstance(data, Mapping) else ((None, ys) for ys in data)
    for label, ys in items:
        if isinstance(ys, tuple) and len(ys) == 2:
            xs, ys = ys
        else:
            xs = x
        ys = _floats(ys, what=f"the values of {label!r}" if label is not None else "a series")
        if xs is None:
            xs = range(len(ys))
        xs = _floats(xs, what=f"the x values of {label!r}")
        if len(xs) != len(ys):
            raise ValueError(
                f"series {label!r} has {len(xs)} x values for {len(ys)} y values; "
                "pass x values of the same length"
            )
        yield label, xs, ys


def _floats(values, *, what: str) -> list[float]:
    """Plain floats from a list, numpy array or tensor (on any device, with or without grad)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().reshape(-1).tolist()
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be a sequence of numbers; got {type(values).__name__}: {err}"
        ) from None


def lines(
    data: Mapping[str, Any] | Sequence[Any],
    *,
    x: Sequence[float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    xscale: str = "linear",
    yscale: str = "linear",
    xlim=None,
    ylim=None,
    hlines: Mapping[str, float] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    marker: str | None = None,
    legend: bool | str = True,
    ax=None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Line plot of several series, d2l's ``plot`` without global state; returns the Figure.

    Args:
        data: ``{label: ys}`` or ``{label: (xs, ys)}`` (a list of ys for unlabelled lines).
            Values may be lists, numpy arrays or tensors. A label whose first word is a key of
            :data:`PALETTE` ("anderson", "delm"…) gets the book's colour for it.
        x: x values shared by every series given as ys alone (default 0, 1, 2, …).
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        title: the axes' title.
        xscale: the x axis' scale, "linear", "log" or "symlog".
        yscale: the y axis' scale, "linear", "log" or "symlog".
        xlim: ``(left, right)`` limits of the x axis; ``None``: matplotlib's.
        ylim: ``(bottom, top)`` limits of the y axis; ``None``: matplotlib's.
        hlines: horizontal reference lines ``{label: y}``, drawn dotted in grey.
        styles: extra matplotlib options per label, e.g. ``{"bound": {"linestyle": "--"}}``.
        marker: a marker for every series ("o"…), handy for a few points.
        legend: False for none, or a matplotlib location such as "upper right".
        ax: draw on these axes (of a figure from :func:`subplots`) instead of a new figure.
        figsize: ``(width, height)`` in inches of the new figure (ignored with ``ax``).

    Returns:
        The figure the axes belong to (a :class:`BookFigure` unless ``ax`` came from
        elsewhere); end a cell with it to show it.
    """
    styles = dict(styles or {})
    with style():
        if ax is None:
            fig, ax = subplots(figsize=figsize)
        drawn = False
        for label, xs, ys in _series(data, x):
            options = {"label": label, "marker": marker}
            if label is not None and color(label) is not None:
                options["color"] = color(label)
            options.update(styles.pop(label, {}) if label is not None else {})
            ax.plot(xs, ys, **options)
            drawn = True
        if styles:
            raise KeyError(
                f"styles names series that are not plotted: {sorted(styles)}; "
                f"the series are {list(data) if isinstance(data, Mapping) else []}"
            )
        for label, y in (hlines or {}).items():
            ax.axhline(float(y), color="grey", linestyle=":", linewidth=1.2, label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale=xscale, yscale=yscale)
        if xlim is not None:
            ax.set_xlim(xlim)
        if ylim is not None:
            ax.set_ylim(ylim)
        labelled = drawn and (isinstance(data, Mapping) or hlines)
        if legend and labelled:
            ax.legend(loc=legend if isinstance(legend, str) else "best")
    return ax.figure


def semilogy(data, **options) -> Figure:
    """:func:`lines` with a logarithmic y axis (residuals, losses, gaps).

    Args:
        data: the series, as in :func:`lines`.
        **options: any other keyword of :func:`lines` (``x``, ``xlabel``, ``title``,
            ``hlines``, ``ax``, …) except ``yscale``, which is ``"log"``.

    Returns:
        The figure, as :func:`lines` returns it.
    """
    return lines(data, yscale="log", **options)


def residual_plot(
    traces: Mapping[str, Sequence[float]],
    *,
    tol: float | None = None,
    ax=None,
    title: str = "Residual per step",
    ylabel: str = "relative residual",
) -> Figure:
    """Semilog plot of solver residual traces (``SolverResult.residuals``), one line per name.

    Step k of a trace is drawn at x = k (the k-th evaluation of f); the legend gives each
    solver's step count, and ``tol`` is drawn as a dotted line.

    Args:
        traces: ``{name: residuals}``, one trace per solver, e.g.
            ``{"anderson": result.residuals}``; a name's first word picks its colour
            (:func:`color`).
        tol: the tolerance, drawn as a horizontal dotted line; ``None``: no line.
        ax: draw on these axes instead of a new figure.
        title: the axes' title.
        ylabel: the y axis' label.

    Returns:
        The figure, as :func:`lines` returns it.
    """
    data = {
        f"{name} ({len(trace)} steps)": (range(1, len(trace) + 1), trace)
        for name, trace in traces.items()
    }
    return semilogy(
        data,
        xlabel="step (evaluations of f)",
        ylabel=ylabel,
        title=title,
        hlines=None if tol is None else {f"tol = {tol:g}": tol},
        ax=ax,
    )


def bars(
    values: Mapping[str, float],
    *,
    ylabel: str = "",
    title: str = "",
    yscale: str = "linear",
    fmt: str = "{:.3g}",
    ax=None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Bar chart of one number per name (accuracy, time, memory…), each bar labelled with it.

    Args:
        values: ``{name: height}``, in the order to draw; heights are finite real numbers (or
            one-element tensors). A name's first word picks its colour (:func:`color`).
        ylabel: the y axis' label.
        title: the axes' title.
        yscale: the y axis' scale, "linear" or "log".
        fmt: the format of the label on each bar, a ``str.format`` pattern such as
            ``"{:.3g}"`` or ``"{:.1%}"``.
        ax: draw on these axes instead of a new figure.
        figsize: ``(width, height)`` in inches of the new figure; ``None``: 1.1 inches per
            bar plus 1.5 (at least 3) by 3.4.

    Returns:
        The figure the axes belong to.
    """
    if not values:
        raise ValueError("bars needs at least one value; got an empty mapping")
    names = list(values)
    heights = [_height(n, values[n]) for n in names]    # checked before a figure is made
    with style():
        if ax is None:
            fig, ax = subplots(figsize=figsize or (max(3.0, 1.1 * len(values) + 1.5), 3.4))
        colors = [color(n) or _CYCLE[i % len(_CYCLE)] for i, n in enumerate(names)]
        drawn = ax.bar(names, heights, color=colors)
        ax.bar_label(drawn, labels=[fmt.format(h) for h in heights], fontsize=9)
        ax.set(ylabel=ylabel, title=title, yscale=yscale)
        ax.grid(axis="x", visible=False)
    return ax.figure


def _height(name, value) -> float:
    """One bar's height: a real number (a one-element tensor too), finite."""
    if hasattr(value, "detach") and value.numel() == 1:
        value = value.detach().cpu().item()
    return validate.real(f"values[{name!r}]", value, "the height of its bar")


def image_grid(
    images,
    *,
    labels: Sequence | None = None,
    ncols: int = 10,
    cmap: str = "gray_r",
    size: float = 0.9,
) -> Figure:
    """A grid of grayscale images (e.g. digits), shape (n, h, w) or (n, h·w) with h = w.

    Args:
        images: ``(n, h, w)``, or ``(n, h·w)`` for square images; a tensor or an array.
        labels: one label per image, written above it; ``None``: no labels.
        ncols: the number of images per row (at most n).
        cmap: a matplotlib colour map; ``"gray_r"`` draws ink dark on white.
        size: inches per image.

    Returns:
        The :class:`BookFigure`.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    import numpy as np

    images = np.asarray(images, dtype=float)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(
                f"flat images need a square number of pixels; got {images.shape[1]}"
                " per image: pass shape (n, h, w)"
            )
        images = images.reshape(-1, side, side)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"image_grid needs shape (n, h, w) with n >= 1; got {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    ncols = min(validate.positive_integer("ncols", ncols), len(images))
    size = validate.positive_real("size", size, "inches per image")
    nrows = math.ceil(len(images) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    with style():
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i < len(images):
                ax.imshow(images[i], cmap=cmap, interpolation="nearest")
                if labels is not None:
                    ax.set_title(str(labels[i]), fontsize=9)
    return fig


def figure_png(fig: Figure, *, close: bool = True) -> bytes:
    """The figure as PNG bytes, e.g. for an ``ipywidgets.Image``.

    ``close=True`` also releases a figure that pyplot manages (if pyplot is in use at all), so
    that it is not shown a second time at the end of the cell.

    Args:
        fig: the figure to render.
        close: also close it in pyplot (when pyplot manages it).

    Returns:
        The PNG file's bytes.
    """
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if close and pyplot is not None:
        pyplot.close(fig)
    return buf.getvalue()


def slider_of_images(images: Iterable[bytes], labels: Sequence, *, description: str = "value"):
    """A slider that flips through pre-rendered images, and works in the static page.

    The slider's ``index`` is jslinked (in the browser, no kernel needed) to the
    ``selected_index`` of a ``Stack`` of ``Image`` widgets, so moving it on the rendered
    site swaps the picture exactly as it does in a live notebook.

    Args:
        images: PNG bytes, one per slider position (e.g. from :func:`figure_png`).
        labels: the slider's value at each position, one per image (shown as text).
        description: the slider's caption.

    Returns:
        An ``ipywidgets.VBox`` holding the slider above the pictures.
    """
    import ipywidgets as w

    pictures = [w.Image(value=png, format="png") for png in images]
    if len(pictures) != len(labels):
        raise ValueError(f"got {len(pictures)} images for {len(labels)} labels")
    stack = w.Stack(pictures, selected_index=0)
    slider = w.SelectionSlider(
        options=[str(v) for v in labels],
        index=0,
        description=description,
        continuous_update=True,
        style={"description_width": "initial"},
    )
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])


def __getattr__(name: str):
    if name == "use_style":
        raise AttributeError(
            "deqlib.plot.use_style() was removed: it changed matplotlib's global rcParams. "
            "deqlib.plot's helpers style their own figures; for a figure drawn by hand use "
            "`with plot.style(): fig, ax = plot.subplots(); ...` and end the cell with `fig`."
        )
    raise AttributeError(f"module 'deqlib.plot' has no attribute {name!r}")
