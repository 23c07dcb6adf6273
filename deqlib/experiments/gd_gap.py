"""Full-batch gradient descent on the DELM and on the linear model from the same W₀."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import validate
from ..data import load
from ..functional import check_constants, equilibrium_weight
from ..solvers import warn_at_caller
from ..theory import gradient_descent
from ..train import LOSSES, resolve_device
from .catalog import make_model
from .provenance import _load_average, _provenance
from .store import _finite, _short, _stored_or_run, run_key


def _gd_settings(*, dataset: str, loss: str, init: str, lr: float, steps: int, seed: int,
                 gamma: float, delta: float, train_size: int | None, data_seed: int,
                 record_every: int) -> dict:
    """The settings of one :func:`gd_loss_gap` (its key), checked."""
    gamma, delta = check_constants(gamma, delta)
    return {"dataset": validate.string("dataset", dataset),
            "train_size": (None if train_size is None
                           else validate.positive_integer("train_size", train_size)),
            "data_seed": validate.integer("data_seed", data_seed, minimum=0),
            "loss": validate.choice("loss", loss, LOSSES),
            "init": validate.choice("init", init, ("gaussian", "low_rank")),
            "lr": validate.positive_real("lr", lr, "the step on the mean training loss"),
            "steps": validate.positive_integer("steps", steps),
            "seed": validate.integer("seed", seed, minimum=0),
            "gamma": gamma, "delta": delta,
            "record_every": validate.positive_integer("record_every", record_every)}


def gd_loss_gap(*, dataset: str = "mnist10k", loss: str = "square", init: str = "gaussian",
                lr: float = 0.01, steps: int = 200, seed: int = 0, gamma: float = 0.8,
                delta: float = 1e-6, train_size: int | None = None, data_seed: int = 0,
                record_every: int = 10, device="auto", root=None, download: bool = False,
                command: str | None = None) -> dict:
    """Full-batch gradient descent on the DELM and on the linear model from the same W₀.

    Both take ``steps`` steps θ ← θ − lr ∇ℒ/n on the mean training loss (a step lr on the
    mean is lr/n on the sum ℒ), the DELM on (A, B), the linear model on W, from the same
    function W₀ = B₀U₀ (the DELM drawn with ``init`` and ``seed``): two runs of
    :func:`deqlib.theory.gradient_descent` with η = lr/n, in torch's default dtype. In
    function space the DELM takes preconditioned steps, P_t ⪰ I; the gap ℒ_linear(t) −
    ℒ_DELM(t) shows what that does on this data.

    Args:
        dataset: the dataset's name, as in :func:`deqlib.data.load`.
        loss: ``"square"`` or ``"cross_entropy"``.
        init: the DELM's start, ``"gaussian"`` or ``"low_rank"`` (see
            :meth:`~deqlib.models.DeepEquilibriumLinear.reset_parameters`).
        lr: the step on the mean training loss.
        steps: the number of steps.
        seed: seeds the DELM's initialisation.
        gamma: the DELM's γ.
        delta: the DELM's δ.
        train_size: the training subset's size, as in :func:`deqlib.data.load` (``None``: all).
        data_seed: the seed that draws the subset.
        record_every: record ‖S_t‖₂ every this many steps.
        device: as in :func:`deqlib.train.fit`.
        root: where the datasets live, as in :func:`deqlib.data.load`.
        download: fetch a missing dataset.
        command: the command line to store with the record.

    Returns:
        A record holding the settings, ``step`` (0 … steps), ``delm_loss`` and ``linear_loss`` (the
        mean training loss before each step, and after the last), ``S_step`` and ``S_norm``
        (‖S_t‖₂ every ``record_every`` steps), ``optimum`` (min_W ℒ(W)/n for the square loss,
        by least squares; None for the cross-entropy), and provenance.

    Raises:
        FloatingPointError: a loss became NaN or Inf (lower ``lr``).

    Warns:
        RuntimeWarning: ``lr`` is above gradient descent's stability limit, or the loss rose
            (from :func:`~deqlib.theory.gradient_descent`, with lr in place of η = lr/n).
    """
    settings = _gd_settings(dataset=dataset, loss=loss, init=init, lr=lr, steps=steps, seed=seed,
                            gamma=gamma, delta=delta, train_size=train_size,
                            data_seed=data_seed, record_every=record_every)
    lr, steps, record_every = settings["lr"], settings["steps"], settings["record_every"]
    gamma, delta = settings["gamma"], settings["delta"]
    start, load0 = time.perf_counter(), _load_average()
    dev = resolve_device(device)
    data = load(dataset, root=root, download=download, train_size=train_size, seed=data_seed,
                dtype=torch.get_default_dtype())          # the models' dtype
    X, y = data.X_train.to(dev), data.y_train.to(dev)
    delm = make_model("delm_low_rank" if init == "low_rank" else "delm", data.in_features,
                      data.num_classes, seed=seed, gamma=gamma, delta=delta).to(dev)
    with torch.no_grad():
        A0, B0 = delm.A.detach(), delm.B.detach()
        Phi = delm.features(X).T                            # features as columns
        Y = torch.nn.functional.one_hot(y, data.num_classes).T.to(Phi.dtype)
        W0 = delm.end_to_end().detach()
    n = len(X)

    def spectra(s):                                       # ‖S_t‖₂ = λ_max(γσ(A_t))
        if s.k % record_every == 0 or s.k == steps:
            S = equilibrium_weight(s.params[0], gamma, delta).double()
            return {"S_step": s.k, "S_norm": torch.linalg.eigvalsh(S)[-1].item()}
        return None

    runs = {}
    for name, theta0 in (("delm", (A0, B0)), ("linear", W0)):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs[name] = gradient_descent(theta0, Phi, Y, eta=lr / n, steps=steps, loss=loss,
                                              gamma=gamma, delta=delta,
                                              record=spectra if name == "delm" else None)
        except FloatingPointError as err:
            raise FloatingPointError(f"full-batch GD on the {name} model diverged with lr={lr} "
                                     f"(eta = lr/n on the summed loss): {err}") from None
        for w in caught:          # said again at the caller's line, naming the model and lr
            warn_at_caller(f"full-batch GD on the {name} model with lr={lr} (eta = lr/n = "
                           f"{lr / n:.3g} on the summed loss): {w.message}", w.category)
    curves = {name: [v / n for v in run.loss] for name, run in runs.items()}
    S_step, S_norm = runs["delm"].records["S_step"], runs["delm"].records["S_norm"]
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
    settings, a corrupt file named in a :class:`CorruptRunWarning` and rerun.

    Args:
        out: the folder of the records.
        losses: names from ``deqlib.functional.LOSSES``.
        inits: the DELM's starts, ``"gaussian"`` and/or ``"low_rank"``.
        lr: the step, one for all or a mapping loss → step.
        progress: show a progress bar.
        steps, seed, dataset, train_size, data_seed: as in :func:`gd_loss_gap`.
        gamma, delta, record_every, device, root, download, command: as in :func:`gd_loss_gap`.

    Returns:
        The records, as :func:`gd_loss_gap` returns them, in the order loss, init.
    """
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


