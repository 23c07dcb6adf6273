"""Full-batch gradient descent on the DELM and on the linear model from the same W₀."""

from __future__ import annotations

import functools
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..data import load
from ..models import LinearModel
from ..train import LOSSES, loss_fn, resolve_device
from .catalog import delm_spectra, make_model
from .provenance import _load_average, _provenance
from .store import _finite, _short, _stored_or_run, run_key


def _gd_settings(*, dataset: str, loss: str, init: str, lr: float, steps: int, seed: int,
                 gamma: float, delta: float, train_size: int | None, data_seed: int,
                 record_every: int) -> dict:
    """The settings of one :func:`gd_loss_gap` (its key), checked."""
    if init not in ("gaussian", "low_rank"):
        raise ValueError(f"init must be 'gaussian' or 'low_rank'; got init={init!r}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
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
    """Why a record whose settings matched is not a whole GD run (None: it is)."""
    n = record["steps"] + 1
    curves = ("delm_loss", "linear_loss")
    if not all(isinstance(record.get(k), list) and len(record[k]) == n for k in curves):
        return "is partial (loss curves shorter than steps + 1)"
    if record.get("step") != list(range(n)):
        return f"has step={str(record.get('step', '<missing>'))[:80]}, not 0 … {n - 1}"
    s_step, s_norm = record.get("S_step"), record.get("S_norm")
    if not (isinstance(s_step, list) and isinstance(s_norm, list) and s_step
            and len(s_step) == len(s_norm) and all(map(_finite, s_step))):
        return "has no ‖S_t‖₂ record (S_step and S_norm of one length)"
    for k in (*curves, "S_norm"):
        for v in record[k]:
            if not _finite(v):
                return f"has {_short(v)} in {k}, not a finite number"
    optimum = record.get("optimum", "<missing>")
    if not (optimum is None or _finite(optimum)):
        return f"has optimum={_short(optimum)}, neither null nor a finite number"
    if not (_finite(record.get("wall_time_s")) and record["wall_time_s"] >= 0):
        return f"has wall_time_s={_short(record.get('wall_time_s', '<missing>'))}, not a time"
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


