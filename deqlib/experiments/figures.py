"""Figures from stored records, each on its own Figure, with no global matplotlib state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.ticker
import torch

from .. import plot, validate
from ..train import LOSSES
from .catalog import MODEL_LABELS, MODELS
from .store import _finished

_STYLES = {
    "delm": {"color": plot.PALETTE["delm"]},
    "delm_low_rank": {"color": plot.PALETTE["delm"], "linestyle": "--"},
    "linear": {"color": plot.PALETTE["linear"]},
    "linear_low_rank": {"color": plot.PALETTE["linear"], "linestyle": "--"},
    "deep2": {"color": plot.PALETTE["deep2"]},
    "deep3": {"color": plot.PALETTE["deep3"]},
}


def _band(ax, xs, curves, style, label, spread: str) -> None:
    t = torch.tensor(curves, dtype=torch.float64)
    mean = t.mean(0)
    if spread == "std" and len(curves) > 1:
        lo, hi = mean - t.std(0), mean + t.std(0)
    else:
        lo, hi = t.min(0).values, t.max(0).values
    seeds = f"{len(curves)} seed" + ("s" if len(curves) != 1 else "")
    ax.plot(xs, mean.tolist(), label=f"{label} ({seeds})", **style)
    if len(curves) > 1:
        ax.fill_between(xs, lo.tolist(), hi.tolist(), color=style.get("color"), alpha=0.18,
                        linewidth=0)


def plot_curves(records: Iterable[dict], *, metric: str = "test_acc",
                models: Sequence[str] | None = None, spread: str = "range",
                title: str | None = None):
    """``metric`` per epoch for every model, one panel per loss: the mean over seeds as a line,
    the seed spread as a band (``spread="range"``: min to max; ``"std"``: ± one std).

    Args:
        records: runs from :func:`run_experiment` or :func:`load_runs` (diverged runs are
            left out and counted in the legend).
        metric: a history column: ``test_acc``, ``test_loss``, ``train_loss``, ``train_acc``.
        models: the models to draw (those with runs in ``records``), in this order;
            ``None``: every model of ``MODELS`` with runs.
        spread: the band around the mean, ``"range"`` (min to max over the seeds) or
            ``"std"`` (± one standard deviation).
        title: every panel's title; ``None``: the dataset and the panel's loss.

    Returns:
        A :class:`deqlib.plot.BookFigure`.
    """
    spread = validate.choice("spread", spread, ("range", "std"))
    records = list(records)
    losses = [loss for loss in LOSSES if any(r["loss"] == loss for r in records)]
    if not losses:
        raise ValueError("plot_curves needs at least one run record; got none")
    names = [m for m in (models or MODELS) if any(r["model"] == m for r in records)]
    labels = {"test_acc": "test accuracy", "train_acc": "training accuracy",
              "test_loss": "test loss (mean)", "train_loss": "training loss (mean)"}
    fig, axes = plot.subplots(1, len(losses), squeeze=False)
    with plot.style():
        for ax, loss in zip(axes[0], losses):
            for name in names:
                runs = [r for r in records if r["loss"] == loss and r["model"] == name]
                ok = _finished(runs)
                if runs and not ok:              # nothing to draw: say so in the legend
                    ax.plot([], [], label=f"{MODEL_LABELS[name]}, all {len(runs)} diverged",
                            **_STYLES[name])
                    continue
                label = MODEL_LABELS[name] + (f", {len(runs) - len(ok)} diverged"
                                              if len(ok) < len(runs) else "")
                curves = [[row[metric] for row in r["history"]] for r in ok]
                _band(ax, list(range(len(curves[0]))), curves, _STYLES[name], label, spread)
            if metric.endswith("loss"):
                ax.set_yscale("log")
            dataset = records[0].get("dataset", "")
            ax.set(xlabel="epoch", ylabel=labels.get(metric, metric),
                   title=title or f"{dataset}, {loss.replace('_', '-')} loss")
            ax.legend()
    return fig


def plot_S_norm(records: Iterable[dict], *, spread: str = "range", relative: bool = False):
    """‖S_t‖₂ per epoch for the DELM runs (each start, each loss), with γ dotted.

    A line per (start, loss): the mean over seeds, the seed spread as a band. With
    ``relative=True`` each run's drift ‖S_t‖₂/‖S₀‖₂ − 1 instead, on a linear axis in per cent,
    where a drift of a fraction of a per cent shows (on the log axis both starts look flat).

    Args:
        records: runs from :func:`run_experiment` or :func:`load_runs` (runs of other models
            are ignored).
        spread: the band, ``"range"`` or ``"std"``, as in :func:`plot_curves`.
        relative: draw each run's drift ‖S_t‖₂/‖S₀‖₂ − 1 in per cent instead of ‖S_t‖₂.

    Returns:
        A :class:`deqlib.plot.BookFigure`.
    """
    relative = validate.boolean("relative", relative)
    records = [r for r in _finished(records) if r["model"] in ("delm", "delm_low_rank")]
    if not records:
        raise ValueError("plot_S_norm needs DELM runs (model 'delm' or 'delm_low_rank'); got none")
    fig, ax = plot.subplots()
    colors = {"delm": plot.PALETTE["delm"], "delm_low_rank": "#CC79A7"}
    with plot.style():
        for name in ("delm", "delm_low_rank"):
            for loss, dash, marker in zip(LOSSES, ("-", ":"), ("o", "s")):
                ok = [r for r in records if r["model"] == name and r["loss"] == loss]
                if not ok:
                    continue
                curves = [[row["S_norm"] for row in r["history"]] for r in ok]
                if relative:
                    curves = [[100 * (v / c[0] - 1) for v in c] for c in curves]
                style = {"color": colors[name], "linestyle": dash, "marker": marker,
                         "markersize": 3}
                _band(ax, list(range(len(curves[0]))), curves, style,
                      f"{MODEL_LABELS[name]}, {loss.replace('_', '-')}", spread)
        if relative:
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set(xlabel="epoch", ylabel=r"$\|S_t\|_2/\|S_0\|_2 - 1$ (%)",
                   title=f"{records[0].get('dataset', '')}: " + r"drift of $\|S_t\|_2$")
            ax.legend(fontsize=8)
            return fig
        for g in sorted({r["gamma"] for r in records}):
            ax.axhline(g, color="grey", linestyle="--", linewidth=1.0, label=f"γ = {g:g}")
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0) if low <= t <= high]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(xlabel="epoch", ylabel=r"$\|S_t\|_2$ (log scale)",
               title=f"{records[0].get('dataset', '')}: " + r"$\|S_t\|_2$ along training")
        ax.legend(fontsize=8)
    return fig


def plot_gd_gap(records: Iterable[dict]):
    """Full-batch GD from the same W₀ (:func:`gd_loss_gap` records), one column per loss.

    Top: the mean training loss of the DELM and of the linear model per step (minus the
    optimum for the square loss, where it is known). Bottom: the gap ℒ_linear − ℒ_DELM
    (above zero: the DELM is ahead), one line per start.

    Args:
        records: records of :func:`gd_loss_gap` or :func:`run_gd_gaps`.

    Returns:
        A :class:`deqlib.plot.BookFigure`.
    """
    records = list(records)
    losses = [loss for loss in LOSSES if any(r["loss"] == loss for r in records)]
    if not losses:
        raise ValueError("plot_gd_gap needs at least one gd_loss_gap record; got none")
    fig, axes = plot.subplots(2, len(losses), squeeze=False, sharex=True)
    with plot.style():
        for col, loss in enumerate(losses):
            top, bottom = axes[0][col], axes[1][col]
            for r in (r for r in records if r["loss"] == loss):
                dash = "--" if r["init"] == "low_rank" else "-"
                opt = r["optimum"] or 0.0
                start = "low-rank A₀" if r["init"] == "low_rank" else "Gaussian A₀"
                for name, key in (("delm", "delm_loss"), ("linear", "linear_loss")):
                    label = f"{'DELM' if name == 'delm' else 'linear'} ({start})"
                    top.plot(r["step"], [v - opt for v in r[key]], linestyle=dash,
                             color=plot.PALETTE[name], label=label)
                gap = [lin - d for lin, d in zip(r["linear_loss"], r["delm_loss"])]
                bottom.plot(r["step"], gap, linestyle=dash, color=plot.PALETTE["delm"],
                            label=start)
            rates = ", ".join(sorted({f"{r['lr']:g}" for r in records if r["loss"] == loss}))
            top.set(yscale="log", title=f"{loss.replace('_', '-')} loss, lr = {rates}",
                    ylabel=r"$\mathcal{L}/n - \mathcal{L}^\star/n$" if loss == "square"
                    else r"$\mathcal{L}/n$")
            bottom.axhline(0, color="grey", linewidth=1)
            bottom.set(xlabel="full-batch GD step",
                       ylabel=r"$(\mathcal{L}_{\mathrm{linear}} - \mathcal{L}_{\mathrm{DELM}})/n$")
            top.legend(fontsize=8)
            bottom.legend(fontsize=8)
    return fig


