"""The DELM against its explicit peers on one dataset: a runner whose results can be trusted.

The comparison: the deep equilibrium linear model (DELM) with a Gaussian and with a low-rank
start, the linear model started from the DELM's own function W₀ = B₀U₀, and deep linear networks
of depth 2 and 3 (width m), on the square loss and the cross-entropy, over several seeds::

    python -m deqlib.experiments --out results/mnist10k --download
    python -m deqlib.experiments run --dataset digits --epochs 20 --out results/digits

The first runs :func:`paper_comparison` (mnist10k by default): every model with the SAME
learning rate (the controlled comparison), every model with its own tuned learning rate, and
full-batch gradient descent from the same W₀ for the DELM and the linear model. The second
runs one set of (loss, model, seed) runs (:func:`run_experiment`).

Every run is keyed by ALL of its settings (dataset, subset sizes, model, its initialisation,
width, loss, optimizer, learning rate, epochs, batch size, γ, δ, seed, dtype) and written to
``OUT/runs/<loss>__<model>__seed<k>__<key>.json`` as soon as it finishes, with the command,
device, date and wall time that produced it. A rerun finds a finished run only if every
setting matches; change any setting and it runs again (the old file stays, under its own key).
A corrupt or partial file is named in a :class:`CorruptRunWarning` and run again, and the
other runs still resume. So an interrupted comparison restarts where it stopped.

Protocol (our defaults; the paper's exact hyper-parameters were not available to us): images
flattened to [0, 1], φ(x) = x, γ = 0.8, δ = 1e-6, A, B ~ N(0, 1/m); SGD with a fixed step on the
MEAN loss over a mini-batch; train and test loss and accuracy every epoch, and for the DELM
‖S_t‖₂, s_min(U_t)² and ‖U_t‖₂. With a Gaussian A₀ at m = 784, ‖S₀‖₂ ≈ 0.08 and the DELM starts
almost as the linear model; the low-rank start puts ‖S₀‖₂ near γ.

The figures (:func:`plot_curves`, :func:`plot_S_norm`, :func:`plot_gd_gap`) and the table
(:func:`summary_table`) are drawn from the stored records, on their own Figures, with no
global matplotlib state.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.ticker
import torch

from . import plot
from .data import DATASETS, load
from .models import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel
from .train import LOSSES, fit, loss_fn, resolve_device

__all__ = [
    "MODELS", "MODEL_LABELS", "FULL_DATASETS", "CorruptRunWarning", "make_model", "delm_spectra",
    "run_settings", "run_key", "run_experiment", "load_runs", "tune_learning_rates",
    "gd_loss_gap", "run_gd_gaps", "paper_comparison", "run_full_datasets", "summary_table",
    "summary_text", "seed_spread", "write_summary", "plot_curves", "plot_S_norm", "plot_gd_gap",
    "main",
]

MODELS = ("delm", "delm_low_rank", "linear", "deep2", "deep3")
MODEL_LABELS = {
    "delm": "DELM, Gaussian A₀", "delm_low_rank": "DELM, low-rank A₀",
    "linear": "linear, same W₀", "deep2": "deep linear, depth 2", "deep3": "deep linear, depth 3",
}
_INITS = {"delm": "gaussian", "delm_low_rank": "low_rank", "linear": "W0 of the gaussian DELM",
          "deep2": "gaussian 1/fan_in", "deep3": "gaussian 1/fan_in"}
_STYLES = {
    "delm": {"color": plot.PALETTE["delm"]},
    "delm_low_rank": {"color": plot.PALETTE["delm"], "linestyle": "--"},
    "linear": {"color": plot.PALETTE["linear"]},
    "deep2": {"color": plot.PALETTE["deep2"]},
    "deep3": {"color": plot.PALETTE["deep3"]},
}
#: The datasets :func:`run_full_datasets` trains on (downloaded by torchvision).
FULL_DATASETS = ("mnist", "kmnist", "cifar10", "cifar100")
_ROW_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")


class CorruptRunWarning(UserWarning):
    """A stored run file could not be used (corrupt, partial or for other settings): rerun."""


# ----------------------------------------------------------------------------- models


def make_model(name: str, in_features: int, out_features: int, *, seed: int, gamma: float = 0.8,
               delta: float = 1e-6, width: int | None = None):
    """The model ``name`` with a seeded initialisation.

    ``"delm"`` / ``"delm_low_rank"``: a :class:`~deqlib.models.DeepEquilibriumLinear` with a
    Gaussian or a low-rank A₀; ``"linear"``: a linear model started at the Gaussian DELM's
    W₀ = B₀U₀ for the same seed (the same function); ``"deep2"``, ``"deep3"``: deep linear
    networks of that depth and hidden ``width`` (default ``in_features``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    g = torch.Generator().manual_seed(int(seed))
    if name in ("delm", "delm_low_rank", "linear"):
        delm = DeepEquilibriumLinear(in_features, out_features, gamma=gamma, delta=delta,
                                     generator=g,
                                     init="low_rank" if name == "delm_low_rank" else "gaussian")
        if name == "linear":
            with torch.no_grad():
                return LinearModel.from_matrix(delm.end_to_end().detach())
        return delm
    return DeepLinearNetwork(in_features, out_features, depth=int(name[-1]), width=width,
                             generator=g)


@torch.no_grad()
def delm_spectra(model) -> dict:
    """‖S‖₂, s_min(U)² and ‖U‖₂ of a DELM (from the eigenvalues of the symmetric S); {} else.

    S is symmetric PSD, so U = (I − S)⁻¹ has s_min(U) = 1 / (1 − λ_min(S)) and
    ‖U‖₂ = 1 / (1 − λ_max(S)).
    """
    if not isinstance(model, DeepEquilibriumLinear):
        return {}
    s = torch.linalg.eigvalsh(model.S().double())
    return {"S_norm": s[-1].item(), "s_min_U_sq": float(1 / (1 - s[0].item()) ** 2),
            "U_norm": float(1 / (1 - s[-1].item()))}


# ----------------------------------------------------------------------------- keyed run files


def run_settings(*, dataset: str, model: str, loss: str, seed: int, lr: float, epochs: int,
                 batch_size: int | None, train_size: int | None = None,
                 test_size: int | None = None, data_seed: int = 0, gamma: float = 0.8,
                 delta: float = 1e-6, width: int | None = None, optimizer: str = "sgd",
                 dtype: str = "float32") -> dict:
    """Every setting that can change a run's result, as plain JSON values (the run's key).

    ``width`` is the deep linear networks' hidden width (None: m); the DELM's width is m.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {MODELS}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    return {"dataset": dataset, "train_size": train_size, "test_size": test_size,
            "data_seed": int(data_seed), "model": model, "init": _INITS[model],
            "width": None if width is None else int(width), "loss": loss,
            "optimizer": optimizer, "lr": float(lr), "epochs": int(epochs),
            "batch_size": None if batch_size is None else int(batch_size),
            "gamma": float(gamma), "delta": float(delta), "seed": int(seed), "dtype": dtype}


def run_key(settings: Mapping) -> str:
    """12 hex digits of the SHA-256 of the settings (sorted, canonical JSON)."""
    blob = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _write_atomic(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)                    # an interrupted write never looks finished


def _problem(record, settings: Mapping, complete: Callable[[dict], str | None]) -> str | None:
    """Why a stored record cannot stand for ``settings`` (None: it can)."""
    if not isinstance(record, dict):
        return f"holds a {type(record).__name__}, not a run record"
    changed = [k for k in settings if record.get(k, "<missing>") != settings[k]]
    if changed:
        return ("was written for other settings (" + ", ".join(
            f"{k}={record.get(k, '<missing>')!r}, now {settings[k]!r}" for k in changed) + ")")
    return complete(record)


def _run_complete(record: dict) -> str | None:
    if record.get("diverged"):
        return None if isinstance(record.get("error"), str) else "is a diverged run without error"
    history = record.get("history")
    if not isinstance(history, list) or len(history) != record["epochs"] + 1:
        got = len(history) if isinstance(history, list) else "no"
        return f"is partial: {got} history rows for {record['epochs']} epochs (+1 for the start)"
    for row in history:
        if not (isinstance(row, dict) and all(isinstance(row.get(k), (int, float))
                                              for k in _ROW_KEYS)):
            return f"has a history row without the numbers {_ROW_KEYS}"
    return None


def _resume(path: Path, settings: dict, complete: Callable[[dict], str | None]) -> dict | None:
    """The stored record at ``path`` if it is whole and for exactly ``settings``; else None,
    with a :class:`CorruptRunWarning` naming the file when one was there."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        problem = _problem(record, settings, complete)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError) as err:
        problem = f"cannot be read ({type(err).__name__}: {err})"
    if problem is None:
        return record
    warnings.warn(f"run file {path} {problem}: running it again", CorruptRunWarning,
                  stacklevel=4)   # the caller of run_experiments / run_gd_gaps
    return None


def _stored_or_run(path: Path, settings: dict, key: str, complete: Callable[[dict], str | None],
                   run: Callable[[], dict], reused: Sequence[Path] = ()) -> dict:
    """The record stored at ``path`` for exactly ``settings``, else the first such record in
    ``reused`` (copied to ``path``), else ``run()``'s, keyed and written to ``path``."""
    record = _resume(path, settings, complete)
    for other in reused:
        if record is None and other.exists():
            record = _resume(other, settings, complete)
            if record is not None:
                _write_atomic(path, record)
    if record is None:
        record = run()
        record["key"] = key
        _write_atomic(path, record)
    return record


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or dev.type
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _code_version() -> str | None:
    """The git commit of the deqlib that ran, with "+dirty" if deqlib/ has uncommitted edits."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, timeout=10,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here,
                               timeout=10, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _provenance(dev: torch.device, command: str | None, start: float, load0) -> dict:
    return {"device": _device_name(dev), "torch": torch.__version__, "code": _code_version(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command, "wall_time_s": round(time.perf_counter() - start, 3),
            "load_average_1min": [load0, _load_average()]}


def _lr_for(lr, loss: str, model: str) -> float:
    """``lr`` is a number, or a mapping keyed by "loss/model" or by "loss"."""
    if not isinstance(lr, Mapping):
        return lr
    for key in (f"{loss}/{model}", loss):
        if key in lr:
            return lr[key]
    raise ValueError(f"no learning rate for loss={loss!r}, model={model!r}: the mapping lr has "
                     f"keys {sorted(lr)}; add '{loss}/{model}' or '{loss}'")


# ----------------------------------------------------------------------------- the runner


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

    Args:
        dataset, root, download, train_size, test_size, data_seed: what
            :func:`deqlib.data.load` gets (``data_seed`` draws the subsets).
        models: names from ``MODELS``; losses: from ``deqlib.functional.LOSSES``.
        seeds: the initialisation and shuffling seeds; one run per seed.
        epochs, batch_size: of SGD (``batch_size=None``: full batch).
        lr: one learning rate for all, or a mapping keyed by ``"loss/model"`` or ``"loss"``.
        gamma, delta: the DELM's γ and δ; width: the deep linear networks' hidden width.
        out: the folder; runs go to ``out/runs``.
        command: the command line to store with each run.
        reuse_from: other output folders whose stored runs (same key, so the same settings)
            are copied instead of trained again.
        summary: write ``out/summary.csv`` for these runs (see :func:`write_summary`), and
            with ``figure`` also ``out/summary.png``.
    Returns:
        The records of exactly the requested runs (stored or new), in the order
        loss, model, seed. Each is a dict of its settings (see :func:`run_settings`), ``key``,
        provenance (``device``, ``date``, ``command``, ``wall_time_s``…) and ``history``
        (one row per epoch, epoch 0 before training); a run whose loss became NaN or Inf is
        stored with ``diverged: True``, its ``error`` and an empty history.
    """
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    for loss in losses:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    every = [run_settings(dataset=dataset, model=name, loss=loss, seed=seed,
                          lr=_lr_for(lr, loss, name), epochs=epochs, batch_size=batch_size,
                          train_size=train_size, test_size=test_size, data_seed=data_seed,
                          gamma=gamma, delta=delta, width=width)
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


def load_runs(out: str | Path, **where) -> list[dict]:
    """Every readable run stored under ``out/runs`` whose settings equal ``where``.

    E.g. ``load_runs("book/results/mnist10k/same_lr", loss="square")``. A file that cannot be
    read is skipped with a :class:`CorruptRunWarning` naming it.
    """
    records = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise TypeError(f"holds a {type(record).__name__}")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            warnings.warn(f"run file {path} cannot be read ({err}): skipped", CorruptRunWarning,
                          stacklevel=2)
            continue
        if all(record.get(k) == v for k, v in where.items()):
            records.append(record)
    return records


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
        seeds: the seeds every candidate is scored on.
        options: passed to :func:`run_experiment` (dataset, epochs, batch_size, reuse_from…).
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


# ----------------------------------------------------------------------------- full-batch GD


def _gd_settings(*, dataset: str, loss: str, init: str, lr: float, steps: int, seed: int,
                 gamma: float, delta: float, train_size: int | None, data_seed: int,
                 record_every: int) -> dict:
    """The settings of one :func:`gd_loss_gap` (its key), checked."""
    if init not in ("gaussian", "low_rank"):
        raise ValueError(f"init must be 'gaussian' or 'low_rank'; got init={init!r}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0; got lr={lr!r}")
    return {"dataset": dataset, "train_size": train_size, "data_seed": int(data_seed),
            "loss": loss, "init": init, "lr": float(lr), "steps": int(steps), "seed": int(seed),
            "gamma": float(gamma), "delta": float(delta), "record_every": int(record_every)}


def gd_loss_gap(*, dataset: str = "mnist10k", loss: str = "square", init: str = "gaussian",
                lr: float = 0.01, steps: int = 200, seed: int = 0, gamma: float = 0.8,
                delta: float = 1e-6, train_size: int | None = None, data_seed: int = 0,
                record_every: int = 10, device="auto", root=None, download: bool = False,
                command: str | None = None) -> dict:
    """Full-batch gradient descent on the DELM and on the linear model from the same W₀.

    Both take ``steps`` steps θ ← θ − lr ∇ℒ/n on the mean training loss (a step lr on the
    mean is lr/n on the sum ℒ), the DELM on (A, B), the linear model on W, from the same
    function W₀ = B₀U₀ (the DELM drawn with ``init`` and ``seed``). In function space the DELM
    takes preconditioned steps, P_t ⪰ I; the gap ℒ_linear(t) − ℒ_DELM(t) shows what that does
    on this data.

    Returns:
        A record holding the settings, ``step`` (0 … steps), ``delm_loss`` and ``linear_loss`` (the
        mean training loss before each step, and after the last), ``S_step`` and ``S_norm``
        (‖S_t‖₂ every ``record_every`` steps), ``optimum`` (min_W ℒ(W)/n for the square loss,
        by least squares; None for the cross-entropy), and provenance.
    Raises:
        FloatingPointError: a loss became NaN or Inf (lower ``lr``).
    """
    settings = _gd_settings(dataset=dataset, loss=loss, init=init, lr=lr, steps=steps, seed=seed,
                            gamma=gamma, delta=delta, train_size=train_size,
                            data_seed=data_seed, record_every=record_every)
    start, load0 = time.perf_counter(), _load_average()
    dev = resolve_device(device)
    data = load(dataset, root=root, download=download, train_size=train_size, seed=data_seed)
    X, y = data.X_train.to(dev), data.y_train.to(dev)
    delm = make_model("delm_low_rank" if init == "low_rank" else "delm", data.in_features,
                      data.num_classes, seed=seed, gamma=gamma, delta=delta).to(dev)
    with torch.no_grad():
        linear = LinearModel.from_matrix(delm.end_to_end().detach())
    criterion = loss_fn(loss, num_classes=data.num_classes)
    curves, S_step, S_norm = {"delm": [], "linear": []}, [], []
    for name, model in (("delm", delm), ("linear", linear)):
        opt = torch.optim.SGD(model.parameters(), lr=float(lr))
        for step in range(steps + 1):
            if name == "delm" and (step % record_every == 0 or step == steps):
                S_step.append(step)
                S_norm.append(delm_spectra(model)["S_norm"])
            opt.zero_grad(set_to_none=True)
            value = criterion(model(X), y)
            curves[name].append(float(value.detach()))
            if not math.isfinite(curves[name][-1]):
                raise FloatingPointError(f"full-batch GD on the {name} model diverged at step "
                                         f"{step} with lr={lr}: lower the learning rate")
            if step < steps:
                value.backward()
                opt.step()
    optimum = None
    if loss == "square":
        Y = torch.nn.functional.one_hot(data.y_train, data.num_classes).double()
        Xd = data.X_train.double()
        W = torch.linalg.lstsq(Xd, Y, driver="gelsd").solution
        optimum = float(((Xd @ W - Y) ** 2).sum() / len(Xd))
    return {**settings, "train_examples": len(X), "step": list(range(steps + 1)),
            "delm_loss": curves["delm"], "linear_loss": curves["linear"], "S_step": S_step,
            "S_norm": S_norm, "optimum": optimum,
            **_provenance(dev, command, start, load0)}


def _gd_complete(record: dict) -> str | None:
    n = record["steps"] + 1
    if not all(len(record.get(k) or []) == n for k in ("delm_loss", "linear_loss")):
        return "is partial (loss curves shorter than steps + 1)"
    return None


def run_gd_gaps(out: str | Path, *, losses: Sequence[str] = LOSSES,
                inits: Sequence[str] = ("gaussian", "low_rank"),
                lr: float | Mapping[str, float] = 0.01, steps: int = 200, seed: int = 0,
                dataset: str = "mnist10k", train_size: int | None = None, data_seed: int = 0,
                gamma: float = 0.8, delta: float = 1e-6, record_every: int = 10,
                device="auto", root=None, download: bool = False, progress: bool = True,
                command: str | None = None) -> list[dict]:
    """:func:`gd_loss_gap` for every (loss, init) (``lr`` a number or a mapping by loss),
    stored as ``out/gd_<loss>__<init>__<key>.json`` and resumed like the runs: keyed by all
    settings, a corrupt file named in a :class:`CorruptRunWarning` and rerun."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(loss, init) for loss in losses for init in inits]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="full-batch GD")
    records = []
    for loss, init in todo:
        settings = _gd_settings(dataset=dataset, loss=loss, init=init,
                                lr=lr[loss] if isinstance(lr, Mapping) else lr, steps=steps,
                                seed=seed, gamma=gamma, delta=delta, train_size=train_size,
                                data_seed=data_seed, record_every=record_every)
        key = run_key(settings)
        path = out / f"gd_{loss}__{init}__{key}.json"
        records.append(_stored_or_run(
            path, settings, key, _gd_complete,
            functools.partial(gd_loss_gap, **settings, device=device, root=root,
                              download=download, command=command)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return records


# ----------------------------------------------------------------------------- the comparison

#: The defaults of :func:`paper_comparison` on mnist10k (8,000 training digits, m = 784).
#: Chosen so that the whole comparison fits in one sitting on 2 CPU cores: the DELM's step costs
#: O(m³) whatever the batch, so few large batches. The same rate for all models is the largest
#: of {0.003, 0.01, 0.03} (square) / {0.05, 0.1, 0.3, 1} (cross-entropy) at which no model
#: diverged in a 3-epoch probe on seed 0 (at 0.03 every model diverged, at 1 the depth-3
#: network did); the tuning grid brackets it.
PAPER_DEFAULTS = {
    "epochs": 10, "batch_size": 500,
    "lr": {"square": 0.01, "cross_entropy": 0.3},
    "lr_grid": {"square": [0.005, 0.01, 0.02], "cross_entropy": [0.1, 0.3, 0.6]},
    "gd_steps": 100, "gd_lr": {"square": 0.02, "cross_entropy": 0.3}, "gd_record_every": 20,
}


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

    Raises:
        RuntimeError: no CUDA device and ``allow_cpu=False``.
    """
    dev = resolve_device(device)
    if dev.type != "cuda" and not allow_cpu:
        raise RuntimeError(
            f"run_full_datasets trains {len(datasets)} datasets at m up to 3,072 and wants a GPU; "
            f"the device here is {dev.type!r}. On Colab: Runtime > Change runtime type > GPU. "
            "To run on this device anyway, pass allow_cpu=True (hours on a CPU).")
    for name in datasets:
        if name not in FULL_DATASETS:
            raise ValueError(f"unknown dataset {name!r}; choose from {FULL_DATASETS}")
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


# ----------------------------------------------------------------------------- tables


def _finished(records: Iterable[dict]) -> list[dict]:
    return [r for r in records if not r.get("diverged") and r.get("history")]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_table(records: Iterable[dict]) -> list[dict]:
    """One row per (loss, model): the last epoch's numbers as mean and std over the seeds.

    The std is the sample standard deviation over seeds (n − 1 in the denominator). Keys:
    ``loss``, ``model``, ``lr``, ``seeds``, ``diverged`` (how many seeds diverged),
    ``test_acc``, ``test_acc_std``, ``train_loss``, ``train_loss_std``, ``test_loss``,
    ``S0``, ``ST`` (‖S‖₂ at the start and the end, DELM only, else None) and ``epoch_time_s``
    (training time per epoch, evaluation excluded).
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
    epoch (left out by default: timings change from run to run)."""
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


def seed_spread(records: Iterable[dict], a: str, b: str, *, loss: str,
                metric: str = "test_acc") -> dict:
    """Does model ``a`` differ from model ``b`` by more than the seed-to-seed spread?

    Compares the last epoch's ``metric``, paired by seed (the same seed gives the DELM and the
    linear model the same W₀). ``exceeds`` is True when every paired difference has the same
    sign and the absolute mean difference is larger than the sum of the two models' std over seeds.
    """
    records = _finished(records)
    by_seed = {m: {r["seed"]: r["history"][-1][metric] for r in records
                   if r["model"] == m and r["loss"] == loss} for m in (a, b)}
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if not seeds:
        raise ValueError(f"no seed has finished runs of both {a!r} and {b!r} on loss={loss!r}")
    diffs = [by_seed[a][s] - by_seed[b][s] for s in seeds]
    mean_a, std_a = _mean_std([by_seed[a][s] for s in seeds])
    mean_b, std_b = _mean_std([by_seed[b][s] for s in seeds])
    mean = statistics.fmean(diffs)
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    return {"seeds": seeds, "differences": diffs, "mean_difference": mean,
            "std_a": std_a, "std_b": std_b,
            "exceeds": bool(same_sign and abs(mean) > std_a + std_b)}


def write_summary(records: list[dict], out: str | Path, *, figure: bool = True) -> None:
    """``out/summary.csv`` (the last epoch of every run) and, with ``figure``,
    ``out/summary.png`` (:func:`plot_curves` of the test accuracy), drawn on its own Figure."""
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


# ----------------------------------------------------------------------------- figures


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
    Returns:
        A :class:`deqlib.plot.BookFigure`.
    """
    if spread not in ("range", "std"):
        raise ValueError(f"spread must be 'range' or 'std'; got spread={spread!r}")
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
                if not ok:
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


def plot_S_norm(records: Iterable[dict], *, spread: str = "range"):
    """‖S_t‖₂ per epoch for the DELM runs (each start, each loss), with γ dotted.

    A line per (start, loss): the mean over seeds, the seed spread as a band.
    """
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
                style = {"color": colors[name], "linestyle": dash, "marker": marker,
                         "markersize": 3}
                _band(ax, list(range(len(curves[0]))), curves, style,
                      f"{MODEL_LABELS[name]}, {loss.replace('_', '-')}", spread)
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
                    ylabel=r"$\mathcal{L}/n$ − optimum" if loss == "square"
                    else r"$\mathcal{L}/n$")
            bottom.axhline(0, color="grey", linewidth=1)
            bottom.set(xlabel="full-batch GD step",
                       ylabel=r"$(\mathcal{L}_{\mathrm{linear}} - \mathcal{L}_{\mathrm{DELM}})/n$")
            top.legend(fontsize=8)
            bottom.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- command line


def _command(argv) -> str:
    return "python -m deqlib.experiments " + shlex.join(argv if argv is not None
                                                        else sys.argv[1:])


def _lr_arg(text: str):
    """``0.05`` or ``square=0.01,cross_entropy=0.05``."""
    if "=" not in text:
        return float(text)
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k: float(v) for k, v in pairs.items()}


def _grid_arg(text: str):
    """``0.01,0.1`` or ``square=0.003:0.01,cross_entropy=0.01:0.1``."""
    if "=" not in text:
        return [float(v) for v in text.split(",")]
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k: [float(v) for v in vs.split(":")] for k, vs in pairs.items()}


def main(argv: Sequence[str] | None = None) -> None:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0].startswith("-"):
        args_in = ["comparison", *args_in]
    parser = argparse.ArgumentParser(
        prog="python -m deqlib.experiments",
        description="The DELM against the linear model and deep linear networks.")
    sub = parser.add_subparsers(dest="what", required=True)

    def shared(p, dataset):
        p.add_argument("--dataset", default=dataset, choices=DATASETS)
        p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
        p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
        p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        p.add_argument("--batch-size", type=int, default=None, help="0 for full batch")
        p.add_argument("--train-size", type=int, default=None)
        p.add_argument("--test-size", type=int, default=None)
        p.add_argument("--gamma", type=float, default=0.8)
        p.add_argument("--delta", type=float, default=1e-6)
        p.add_argument("--device", default="auto")
        p.add_argument("--root", default=None, help="data folder (default $DEQLIB_DATA or "
                       "~/.deqlib/data)")
        p.add_argument("--download", action="store_true", help="fetch a missing dataset")
        p.add_argument("--out", default=None, help="output folder (default results/<dataset>)")
        p.add_argument("--no-progress", action="store_true")

    comp = sub.add_parser("comparison", help="the whole comparison (default)")
    shared(comp, "mnist10k")
    comp.add_argument("--epochs", type=int, default=PAPER_DEFAULTS["epochs"])
    comp.add_argument("--lr", type=_lr_arg, default=PAPER_DEFAULTS["lr"],
                      help="the same rate for all models, e.g. square=0.01,cross_entropy=0.05")
    comp.add_argument("--lr-grid", type=_grid_arg, default=PAPER_DEFAULTS["lr_grid"],
                      help="tuning candidates, e.g. square=0.003:0.01,cross_entropy=0.01:0.1")
    comp.add_argument("--gd-steps", type=int, default=PAPER_DEFAULTS["gd_steps"])
    comp.add_argument("--gd-lr", type=_lr_arg, default=PAPER_DEFAULTS["gd_lr"])

    one = sub.add_parser("run", help="one set of (loss, model, seed) runs")
    shared(one, "digits")
    one.add_argument("--epochs", type=int, default=20)
    one.add_argument("--lr", type=_lr_arg, default=0.05)

    args = parser.parse_args(args_in)
    out = Path(args.out or f"results/{args.dataset}")
    if args.batch_size is None:
        batch_size = PAPER_DEFAULTS["batch_size"] if args.what == "comparison" else 128
    else:
        batch_size = args.batch_size or None
    common = dict(dataset=args.dataset, models=args.models, losses=args.losses, seeds=args.seeds,
                  epochs=args.epochs, lr=args.lr, batch_size=batch_size,
                  train_size=args.train_size, test_size=args.test_size, gamma=args.gamma,
                  delta=args.delta, device=args.device, root=args.root, download=args.download,
                  progress=not args.no_progress, command=_command(argv))
    if args.what == "run":
        records = run_experiment(out=out, **common)
        print(f"{len(records)} runs in {out}; summary: {out / 'summary.csv'}")
        return
    result = paper_comparison(out, lr_grid=args.lr_grid, gd_steps=args.gd_steps,
                              gd_lr=args.gd_lr, **common)
    print(f"tuned learning rates: {result['tuned_lr']}")
    print(f"wall time: {result['wall_time_of_this_call_s']}; results in {out}")


if __name__ == "__main__":
    main()
