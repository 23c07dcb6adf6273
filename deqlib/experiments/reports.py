"""Tables from stored records: mean and spread over seeds, the paired seed test, summary.csv."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..train import LOSSES
from .catalog import MODEL_LABELS, MODELS
from .figures import plot_curves
from .store import _finished


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_table(records: Iterable[dict]) -> list[dict]:
    """One row per (loss, model): the last epoch's numbers as mean and std over the seeds.

    Only the models of ``MODELS`` get rows: runs of the models run only on request
    (``linear_low_rank``, in ``ALL_MODELS``) are left out, as from the stored summaries.

    The std is the sample standard deviation over seeds (n − 1 in the denominator). Keys:
    ``loss``, ``model``, ``lr``, ``seeds``, ``diverged`` (how many seeds diverged),
    ``test_acc``, ``test_acc_std``, ``train_loss``, ``train_loss_std``, ``test_loss``,
    ``S0``, ``ST`` (‖S‖₂ at the start and the end, DELM only, else None) and ``epoch_time_s``
    (training time per epoch, evaluation excluded).

    Args:
        records: runs from :func:`run_experiment` or :func:`load_runs`.

    Returns:
        The rows, dicts with those keys, in the order loss, model.
    """
    records = list(records)
    rows = []
    for loss in LOSSES:
        for name in MODELS:
            runs = [r for r in records if r["loss"] == loss and r["model"] == name]
            if not runs:
                continue
            ok = _finished(runs)
            last = [r["history"][-1] for r in ok]
            acc, acc_std = _mean_std([row["test_acc"] for row in last])
            tl, tl_std = _mean_std([row["train_loss"] for row in last])
            s0 = [r["history"][0].get("S_norm") for r in ok]
            sT = [row.get("S_norm") for row in last]
            rows.append({
                "loss": loss, "model": name, "lr": sorted({r["lr"] for r in runs}),
                "seeds": len(runs), "diverged": len(runs) - len(ok),
                "test_acc": acc, "test_acc_std": acc_std, "train_loss": tl,
                "train_loss_std": tl_std,
                "test_loss": _mean_std([row["test_loss"] for row in last])[0],
                "S0": _mean_std(s0)[0] if ok and None not in s0 else None,
                "ST": _mean_std(sT)[0] if ok and None not in sT else None,
                "epoch_time_s": _mean_std([r["history"][-1]["time"] / max(r["epochs"], 1)
                                           for r in ok])[0],
            })
    return rows


def summary_text(records: Iterable[dict], *, times: bool = False) -> str:
    """:func:`summary_table` as aligned text: test accuracy (%) mean ± std over the seeds, the
    final training loss, ‖S₀‖₂ → ‖S_T‖₂ for the DELM, and with ``times`` the training time per
    epoch (left out by default: timings change from run to run).

    Args:
        records: runs from :func:`run_experiment` or :func:`load_runs`.
        times: add the column of training time per epoch.

    Returns:
        The table, a str of lines.
    """
    head = (f"{'loss':14}{'model':23}{'lr':>7}{'test acc (%)':>16}{'train loss':>12}"
            f"{'‖S₀‖₂ → ‖S_T‖₂':>19}" + (f"{'s/epoch':>9}" if times else ""))
    lines = [head]
    for row in summary_table(records):
        lr = ",".join(f"{v:g}" for v in row["lr"])
        acc = (f"{100 * row['test_acc']:.1f} ± {100 * row['test_acc_std']:.1f}"
               if row["seeds"] > row["diverged"] else "diverged")
        spectra = f"{row['S0']:.4f} → {row['ST']:.4f}" if row["S0"] is not None else ""
        line = (f"{row['loss']:14}{MODEL_LABELS[row['model']]:23}{lr:>7}{acc:>16}"
                f"{row['train_loss']:>12.4f}{spectra:>19}")
        if row["diverged"] and row["seeds"] > row["diverged"]:
            line += f"  ({row['diverged']} of {row['seeds']} seeds diverged)"
        if times:
            line += f"{row['epoch_time_s']:>9.2f}"
        lines.append(line)
    return "\n".join(lines)


def write_summary(records: list[dict], out: str | Path, *, figure: bool = True) -> None:
    """``out/summary.csv`` (the last epoch of every run) and, with ``figure``,
    ``out/summary.png`` (:func:`plot_curves` of the test accuracy), drawn on its own Figure.

    Args:
        records: runs from :func:`run_experiment` or :func:`load_runs`.
        out: the folder to write to.
        figure: also write ``summary.png``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "loss", "model", "seed", "lr", "epochs", "batch_size", "diverged",
              "train_loss", "train_acc", "test_loss", "test_acc", "S_norm", "time", "key"]
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in records:
            last = r["history"][-1] if r.get("history") else {}
            writer.writerow({**{k: r.get(k, "") for k in fields[:8]},
                             **{k: last.get(k, "") for k in fields[8:14]}, "key": r.get("key")})
    if figure and _finished(records):
        fig = plot_curves(records)
        fig.savefig(out / "summary.png", bbox_inches="tight")


