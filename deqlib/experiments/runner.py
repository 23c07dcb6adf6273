"""The runner: every (loss, model, seed) trained once and stored, on one dataset or the four
full ones."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import validate
from ..data import load
from ..train import LOSSES, fit, resolve_device
from .catalog import ALL_MODELS, FULL_DATASETS, MODELS, PAPER_DEFAULTS, delm_spectra, make_model
from .provenance import _load_average, _provenance
from .reports import write_summary
from .store import _dtype_name, _run_complete, _stored_or_run, run_key, run_settings


def _lr_for(lr, loss: str, model: str) -> float:
    """``lr`` is a number, or a mapping keyed by "loss/model" or by "loss"."""
    if not isinstance(lr, Mapping):
        return lr
    for key in (f"{loss}/{model}", loss):
        if key in lr:
            return lr[key]
    raise ValueError(f"no learning rate for loss={loss!r}, model={model!r}: the mapping lr has "
                     f"keys {sorted(lr)}; add '{loss}/{model}' or '{loss}'")



def run_experiment(*, dataset: str = "digits", models: Sequence[str] = MODELS,
                   losses: Sequence[str] = LOSSES, seeds: Sequence[int] = (0, 1, 2),
                   epochs: int = 20, lr: float | Mapping[str, float] = 0.05,
                   batch_size: int | None = 128, out: str | Path = "results/digits",
                   device="auto", root=None, download: bool = False,
                   train_size: int | None = None, test_size: int | None = None,
                   data_seed: int = 0, gamma: float = 0.8, delta: float = 1e-6,
                   width: int | None = None, progress: bool = True, command: str | None = None,
                   summary: bool = True, figure: bool = True,
                   reuse_from: Sequence[str | Path] = ()) -> list[dict]:
    """Train every (loss, model, seed) not already stored in ``out`` with these settings.

    The runs train in torch's default dtype at the call (``torch.get_default_dtype()``), and
    their key records it (``"dtype"``): a float64 run is never reused for a float32 call.

    Args:
        dataset: the dataset's name, as in :func:`deqlib.data.load`.
        models: names from ``MODELS`` (or ``catalog.EXTRA_MODELS``, run on request).
        losses: names from ``deqlib.functional.LOSSES``.
        seeds: the initialisation and shuffling seeds; one run per seed.
        epochs: the passes of SGD over the training set.
        lr: one learning rate for all, or a mapping keyed by ``"loss/model"`` or ``"loss"``.
        batch_size: SGD's mini-batch size (``None``: full batch).
        device: as in :func:`deqlib.train.fit`.
        root: where the datasets live, as in :func:`deqlib.data.load`.
        download: fetch a missing dataset, as in :func:`deqlib.data.load`.
        train_size: the training subset's size, as in :func:`deqlib.data.load`.
        test_size: the test subset's size, as in :func:`deqlib.data.load`.
        data_seed: the seed that draws the subsets (``seed`` of :func:`deqlib.data.load`).
        gamma: the DELM's γ.
        delta: the DELM's δ.
        width: the deep linear networks' hidden width.
        progress: show progress bars.
        out: the folder; runs go to ``out/runs``.
        command: the command line to store with each run.
        reuse_from: other output folders whose stored runs (same key, so the same settings)
            are copied instead of trained again.
        summary: write ``out/summary.csv`` for these runs (see :func:`write_summary`), and
            with ``figure`` also ``out/summary.png``.
        figure: with ``summary``, also draw ``out/summary.png``.

    Returns:
        The records of exactly the requested runs (stored or new), in the order
        loss, model, seed. Each is a dict of its settings (see :func:`run_settings`), ``key``,
        provenance (``device``, ``date``, ``command``, ``wall_time_s``…) and ``history``
        (one row per epoch, epoch 0 before training); a run whose loss became NaN or Inf is
        stored with ``diverged: True``, its ``error`` and an empty history.
    """
    models = validate.choices("models", models, ALL_MODELS)    # "linear" is one model
    losses = validate.choices("losses", losses, LOSSES)
    seeds = validate.integers("seeds", seeds, minimum=0)   # "01" refused
    progress = validate.boolean("progress", progress)
    summary, figure = validate.boolean("summary", summary), validate.boolean("figure", figure)
    dtype = _dtype_name(None)            # what the models will be made in: torch's default now
    every = [run_settings(dataset=dataset, model=name, loss=loss, seed=seed,
                          lr=_lr_for(lr, loss, name), epochs=epochs, batch_size=batch_size,
                          train_size=train_size, test_size=test_size, data_seed=data_seed,
                          gamma=gamma, delta=delta, width=width, dtype=dtype)
             for loss in losses for name in models for seed in seeds]     # all checked first
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    data = load(dataset, root=root, download=download, train_size=train_size,
                test_size=test_size, seed=data_seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(every), desc=f"{dataset} runs")
    records = []
    for settings in every:
        loss, name, seed = settings["loss"], settings["model"], settings["seed"]
        key = run_key(settings)
        path = out / "runs" / f"{loss}__{name}__seed{seed}__{key}.json"
        reused = [Path(folder) / "runs" / path.name for folder in reuse_from]
        records.append(_stored_or_run(path, settings, key, _run_complete,
                                      functools.partial(_train_one, settings, data, dev, command),
                                      reused))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if summary:
        write_summary(records, out, figure=figure)
    return records


def _train_one(settings: dict, data, dev: torch.device, command: str | None) -> dict:
    start, load0 = time.perf_counter(), _load_average()
    model = make_model(settings["model"], data.in_features, data.num_classes,
                       seed=settings["seed"], gamma=settings["gamma"], delta=settings["delta"],
                       width=settings["width"])
    made = _dtype_name(next(model.parameters()).dtype)
    if made != settings["dtype"]:
        raise RuntimeError(f"the run's key says dtype {settings['dtype']} but its model was made "
                           f"in {made}: torch's default dtype changed while run_experiment ran; "
                           "set it before the call and leave it until the call returns")
    try:
        history = fit(model, data, loss=settings["loss"], optimizer=settings["optimizer"],
                      lr=settings["lr"], epochs=settings["epochs"],
                      batch_size=settings["batch_size"], seed=settings["seed"], device=dev,
                      progress=False, callback=delm_spectra).rows
        outcome = {"diverged": False, "history": history}
    except FloatingPointError as err:
        outcome = {"diverged": True, "error": str(err), "history": []}
    return {**settings, "train_examples": len(data.X_train), "test_examples": len(data.X_test),
            "in_features": data.in_features, **_provenance(dev, command, start, load0),
            **outcome}



def run_full_datasets(out: str | Path = "results", *, datasets: Sequence[str] = FULL_DATASETS,
                      device="auto", allow_cpu: bool = False, root=None, download: bool = True,
                      models: Sequence[str] = MODELS, losses: Sequence[str] = LOSSES,
                      seeds: Sequence[int] = (0, 1, 2), epochs: int = 20,
                      lr: float | Mapping[str, float] = PAPER_DEFAULTS["lr"],
                      batch_size: int | None = 128, train_size: int | None = None,
                      test_size: int | None = None, progress: bool = True,
                      command: str | None = None) -> dict[str, list[dict]]:
    """The comparison on MNIST, KMNIST, CIFAR-10 and CIFAR-100 (torchvision), opt-in.

    Meant for a GPU (Colab): the DELM's step costs O(m³) with m = 3,072 on CIFAR. Each dataset
    is downloaded by torchvision into ``root`` the first time (``download=True``) and its runs
    go to ``out/<dataset>``, keyed and resumable as in :func:`run_experiment`, under a
    progress bar. A chapter calls this only behind an explicit flag (``FULL_DATASETS = True``),
    so "Run all" never starts a download by itself.

    Args:
        out: the parent folder; each dataset's runs go to ``out/<dataset>``.
        datasets: names from ``FULL_DATASETS``.
        device: as in :func:`deqlib.train.fit`.
        allow_cpu: run even without CUDA (slow: the DELM's step costs O(m³)).
        root: where torchvision keeps the datasets, as in :func:`deqlib.data.load`.
        download: let torchvision download a missing dataset.
        models, losses, seeds, epochs, lr, batch_size: as in :func:`run_experiment`.
        train_size, test_size, progress, command: as in :func:`run_experiment`.

    Returns:
        ``{dataset: records}``, the records as :func:`run_experiment` returns them.

    Raises:
        RuntimeError: no CUDA device and ``allow_cpu=False``.
    """
    datasets = validate.choices("datasets", datasets, FULL_DATASETS)     # "mnist" is one
    dev = resolve_device(device)
    if dev.type != "cuda" and not allow_cpu:
        raise RuntimeError(
            f"run_full_datasets trains {len(datasets)} datasets at m up to 3,072 and wants a GPU; "
            f"the device here is {dev.type!r}. On Colab: Runtime > Change runtime type > GPU. "
            "To run on this device anyway, pass allow_cpu=True (hours on a CPU).")
    results = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(datasets), desc="datasets")
    for name in datasets:
        if bar is not None:
            bar.set_postfix(dataset=name)
        results[name] = run_experiment(dataset=name, models=models, losses=losses, seeds=seeds,
                                       epochs=epochs, lr=lr, batch_size=batch_size,
                                       out=Path(out) / name, device=dev, root=root,
                                       download=download, train_size=train_size,
                                       test_size=test_size, progress=progress, command=command)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


