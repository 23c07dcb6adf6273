"""Learning rates chosen on the training loss, and the whole comparison of the book."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..data import load
from ..train import LOSSES, resolve_device
from .catalog import MODELS, PAPER_DEFAULTS
from .gd_gap import run_gd_gaps
from .provenance import _device_name, _load_average
from .runner import run_experiment


def tune_learning_rates(*, lr_grid: Sequence[float] | Mapping[str, Sequence[float]],
                        models: Sequence[str] = MODELS, losses: Sequence[str] = LOSSES,
                        seeds: Sequence[int] = (0,), out: str | Path, **options) -> dict:
    """Each (loss, model)'s learning rate from ``lr_grid``: the lowest mean final training loss.

    Every grid value is run on every seed (stored in ``out/runs`` like any run, so the chosen
    rate's runs are reused when :func:`run_experiment` later asks for them). A rate's score is
    the mean over the seeds of the training loss after the last epoch, +∞ if ANY seed
    diverged: a rate chosen on one lucky seed can diverge on the next. The test set plays no
    part in the choice.

    Args:
        lr_grid: the candidates, or a mapping loss → candidates.
        models: names from ``ALL_MODELS``.
        losses: names from ``deqlib.functional.LOSSES``.
        seeds: the seeds every candidate is scored on.
        out: the folder of the tuning runs and of ``learning_rates.json``.
        **options: passed to :func:`run_experiment` (dataset, epochs, batch_size,
            reuse_from…).

    Returns:
        A dict with the keys ``chosen`` (``"loss/model"`` → lr), ``scores`` (``"loss/model"``
        → {lr → score}), ``seeds`` and ``criterion``, also written to
        ``out/learning_rates.json``; and ``runs``, the records of every tuning run (not
        written there).
    """
    chosen, scores, runs = {}, {}, []
    for loss in losses:
        grid = lr_grid[loss] if isinstance(lr_grid, Mapping) else lr_grid
        for name in models:
            table = {}
            for lr in grid:
                records = run_experiment(models=[name], losses=[loss], seeds=seeds, lr=lr,
                                         out=out, progress=False, summary=False, **options)
                runs.extend(records)
                finals = [math.inf if r["diverged"] else r["history"][-1]["train_loss"]
                          for r in records]
                score = statistics.fmean(finals) if all(map(math.isfinite, finals)) else math.inf
                table[float(lr)] = score
            chosen[f"{loss}/{name}"] = min(table, key=table.get)
            scores[f"{loss}/{name}"] = {f"{lr:g}": v for lr, v in table.items()}
    result = {"chosen": chosen, "scores": scores, "seeds": list(seeds),
              "criterion": "lowest mean training loss after the last epoch over the seeds; "
                           "a rate at which any seed diverged scores inf"}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "learning_rates.json").write_text(json.dumps(result, indent=1) + "\n")
    return {**result, "runs": runs}



def paper_comparison(out: str | Path = "results/mnist10k", *, dataset: str = "mnist10k",
                     seeds: Sequence[int] = (0, 1, 2), models: Sequence[str] = MODELS,
                     losses: Sequence[str] = LOSSES, epochs: int = PAPER_DEFAULTS["epochs"],
                     batch_size: int | None = PAPER_DEFAULTS["batch_size"],
                     lr: Mapping[str, float] | float = PAPER_DEFAULTS["lr"],
                     lr_grid=PAPER_DEFAULTS["lr_grid"], gd_steps: int = PAPER_DEFAULTS["gd_steps"],
                     gd_lr: Mapping[str, float] | float = PAPER_DEFAULTS["gd_lr"],
                     gd_record_every: int = PAPER_DEFAULTS["gd_record_every"],
                     train_size: int | None = None, test_size: int | None = None,
                     gamma: float = 0.8, delta: float = 1e-6, device="auto", root=None,
                     download: bool = False, progress: bool = True,
                     command: str | None = None) -> dict:
    """The whole comparison, resumable, in three folders under ``out``:

    * ``same_lr/``: every model with the same learning rate (per loss: ``lr``), all seeds;
    * ``tuned/``: every (loss, model)'s rate chosen from ``lr_grid`` by
      :func:`tune_learning_rates` (every rate on every seed; the runs at the chosen rate are
      the tuned runs; ``tuned/summary.csv`` lists those);
    * ``gd_gap/``: :func:`run_gd_gaps` (``gd_steps`` full-batch steps of ``gd_lr``).

    Writes ``out/comparison.json`` (settings, learning rates, wall time of each part, the load
    average seen, the device) and returns it with the records under ``"same_lr_runs"``,
    ``"tuned_runs"`` and ``"gd_gap_runs"``.

    Args:
        out: the parent folder of the three.
        dataset, seeds, models, losses, epochs, batch_size: as in :func:`run_experiment`.
        train_size, test_size, gamma, delta: as in :func:`run_experiment`.
        device, root, download, progress, command: as in :func:`run_experiment`.
        lr: the same-rate part's learning rate, one for all or a mapping loss → rate.
        lr_grid: the tuned part's candidates, as in :func:`tune_learning_rates`.
        gd_steps: the full-batch gradient-descent steps of the ``gd_gap`` part.
        gd_lr: their step, one for both losses or a mapping loss → step.
        gd_record_every: record ‖S_t‖₂ every this many of those steps.

    Returns:
        The dict written to ``out/comparison.json``, with the three parts' records.
    """
    out = Path(out)
    common = dict(dataset=dataset, epochs=epochs, batch_size=batch_size, device=device,
                  root=root, download=download, train_size=train_size, test_size=test_size,
                  gamma=gamma, delta=delta, command=command)
    load(dataset, root=root, download=download)          # fetch once, fail early
    timing, loads = {}, [_load_average()]
    start = time.perf_counter()
    same = run_experiment(models=models, losses=losses, seeds=seeds, lr=lr,
                          out=out / "same_lr", progress=progress, figure=False, **common)
    timing["same_lr_s"], loads = time.perf_counter() - start, loads + [_load_average()]
    mark = time.perf_counter()
    tuning = tune_learning_rates(lr_grid=lr_grid, models=models, losses=losses, seeds=seeds,
                                 out=out / "tuned", reuse_from=[out / "same_lr"], **common)
    tuned = run_experiment(models=models, losses=losses, seeds=seeds, lr=tuning["chosen"],
                           out=out / "tuned", progress=progress, figure=False,
                           reuse_from=[out / "same_lr"], **common)
    timing["tuned_s"], loads = time.perf_counter() - mark, loads + [_load_average()]
    mark = time.perf_counter()
    gaps = run_gd_gaps(out / "gd_gap", losses=losses, lr=gd_lr, steps=gd_steps, seed=seeds[0],
                       dataset=dataset, train_size=train_size, gamma=gamma, delta=delta,
                       record_every=gd_record_every, device=device, root=root,
                       download=download, progress=progress, command=command)
    timing["gd_gap_s"], loads = time.perf_counter() - mark, loads + [_load_average()]
    timing["total_s"] = time.perf_counter() - start
    unique = {r["key"]: r for r in [*same, *tuning["runs"], *tuned, *gaps]}   # each once
    summary = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": _device_name(resolve_device(device)), "torch": torch.__version__,
        "dataset": dataset, "seeds": list(seeds), "models": list(models), "losses": list(losses),
        "epochs": epochs, "batch_size": batch_size, "gamma": gamma, "delta": delta,
        "same_lr": lr, "lr_grid": lr_grid, "tuned_lr": tuning["chosen"],
        "tuning_scores": tuning["scores"], "gd_steps": gd_steps, "gd_lr": gd_lr,
        "wall_time_of_this_call_s": {k: round(v, 1) for k, v in timing.items()},
        "distinct_runs": len(unique),
        "compute_time_of_all_runs_s": round(sum(r["wall_time_s"] for r in unique.values()), 1),
        "load_average_1min_seen": [x for x in loads if x is not None],
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    (out / "comparison.json").write_text(json.dumps(summary, indent=1) + "\n")
    return {**summary, "same_lr_runs": same, "tuned_runs": tuned, "gd_gap_runs": gaps}


