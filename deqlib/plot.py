"""The few plotting helpers the chapters share, so that every figure has one visual style."""

from __future__ import annotations

import io
from typing import Iterable, Sequence

import matplotlib
import matplotlib.pyplot as plt

__all__ = ["use_style", "residual_plot", "figure_png", "slider_of_images", "PALETTE"]

# colour-blind-safe (Okabe–Ito), one colour per method/model across the book
PALETTE = {
    "picard": "#0072B2", "anderson": "#D55E00", "broyden": "#009E73",
    "implicit": "#D55E00", "unrolled": "#0072B2", "one_step": "#CC79A7",
    "delm": "#D55E00", "linear": "#0072B2", "deep_linear": "#009E73", "deep2": "#009E73",
    "deep3": "#56B4E9", "bound": "#000000",
}


def use_style() -> None:
    """Set the book's matplotlib style (call once at the top of a chapter)."""
    matplotlib.rcParams.update({
        "figure.figsize": (6.4, 3.8), "figure.dpi": 100, "savefig.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9, "legend.frameon": False,
        "lines.linewidth": 1.8, "font.family": "DejaVu Sans",
    })


def residual_plot(traces: dict[str, Sequence[float]], *, tol: float | None = None, ax=None,
                  title: str = "Residual per step", ylabel: str = "max relative residual"):
    """Semilog plot of residual traces (e.g. ``SolverResult.residuals``), one line per name."""
    if ax is None:
        _, ax = plt.subplots()
    for name, trace in traces.items():
        ax.semilogy(range(1, len(trace) + 1), trace, label=f"{name} ({len(trace)} steps)",
                    color=PALETTE.get(name.split()[0].lower()))
    if tol is not None:
        ax.axhline(tol, color="grey", linestyle=":", linewidth=1, label=f"tol = {tol:g}")
    ax.set(xlabel="step (evaluations of f)", ylabel=ylabel, title=title)
    ax.legend()
    return ax


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (then closed), e.g. for an ``ipywidgets.Image``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def slider_of_images(images: Iterable[bytes], labels: Sequence, *, description: str = "value"):
    """A slider that flips through pre-rendered images, and works in the static page.

    The slider's ``index`` is jslinked (in the browser, no kernel needed) to the
    ``selected_index`` of a ``Stack`` of ``Image`` widgets, so moving it on the rendered
    site swaps the picture exactly as it does in a live notebook.
    """
    import ipywidgets as w

    pictures = [w.Image(value=png, format="png") for png in images]
    if len(pictures) != len(labels):
        raise ValueError(f"got {len(pictures)} images for {len(labels)} labels")
    stack = w.Stack(pictures, selected_index=0)
    slider = w.SelectionSlider(options=[str(v) for v in labels], index=0, description=description,
                               continuous_update=True, style={"description_width": "initial"})
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])
