"""A device-agnostic training loop with a per-epoch history.

The data moves to the device once, before the first epoch; mini-batches are index
slices of device-resident tensors, so no batch is ever copied from the host. Every option is
checked before the first step, so a bad value fails at once with its name rather than deep
inside torch (or, worse, silently).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validate
from .data import Dataset
from .functional import LOSSES

__all__ = ["fit", "History", "resolve_device", "seed_everything", "LOSSES", "loss_fn"]

OPTIMIZERS = ("sgd", "adam")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices).

    Args:
        seed: a non-negative integer.
    """
    seed = validate.integer("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device="auto") -> torch.device:
    """``"auto"``: CUDA, then Apple's MPS, then the CPU; anything else goes to torch.device.

    Args:
        device: ``"auto"``, or anything ``torch.device`` accepts (``"cpu"``, ``"cuda:1"``, a
            ``torch.device``).

    Returns:
        The ``torch.device``.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def loss_fn(name: str, *, num_classes: int, reduction: str = "mean"
            ) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss ℓ(f(x), y) for integer labels y, summed or averaged over the batch.

    ``"square"``: ℓ = ‖f(x) − onehot(y)‖² per sample; ``"cross_entropy"``: softmax
    cross-entropy. ``reduction="sum"`` gives the sum over samples, ℒ = Σ_i ℓ_i, that the
    convergence theory uses; ``"mean"`` gives ℒ / n, with the same minimisers (a step η on
    the mean is a step η / n on the sum).

    Args:
        name: ``"square"`` or ``"cross_entropy"``.
        num_classes: the number of classes, the length of onehot(y) (and of the model's
            output).
        reduction: ``"mean"`` (ℒ / n, what :func:`fit` trains on) or ``"sum"`` (ℒ, the
            theory's convention).

    Returns:
        The loss, a function ``loss(out, y)`` of the outputs ``(batch, num_classes)`` and the
        integer labels ``(batch,)`` that returns a 0-dimensional tensor.
    """
    name = validate.choice("loss", name, LOSSES)
    reduction = validate.choice("reduction", reduction, ("mean", "sum"))
    num_classes = validate.positive_integer("num_classes", num_classes)
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, reduction=reduction)

    def square(out: Tensor, y: Tensor) -> Tensor:
        per_sample = (out - F.one_hot(y, num_classes).to(out.dtype)).pow(2).sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    return square


@dataclass
class History:
    """Per-epoch record of a run: ``rows[i]`` is a dict for epoch i (0: before training).

    Attributes:
        rows: one dict per recorded epoch, from ``{name: number}`` (see :func:`fit` for the
            names); ``history[name]`` reads one column, ``history.last`` the last row.
    """

    rows: list[dict] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        """The column ``key`` over epochs, e.g. ``history["test_acc"]``. A column no row has
        raises KeyError naming the ones there are (a misspelt key used to give Nones).

        Args:
            key: the column's name, e.g. ``"test_acc"``.

        Returns:
            One value per row (``None`` in a row without it).
        """
        if self.rows and not any(key in row for row in self.rows):
            columns = sorted({k for row in self.rows for k in row})
            raise KeyError(f"no column {key!r} in this history; it has {columns}")
        return [row.get(key) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last(self) -> dict:
        """The last row (the last epoch recorded)."""
        if not self.rows:
            raise IndexError("this History has no rows yet: fit records epoch 0 before the "
                             "first step, so an empty history was not made by fit")
        return self.rows[-1]

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        last = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.last.items() if k != "time")
        return f"History({len(self.rows)} rows; last: {last})"


def _check_outputs(model: nn.Module, X: Tensor, num_classes: int) -> None:
    """One forward on one example: the model must give num_classes finite outputs."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(X[:1])
    model.train(was_training)
    name = type(model).__name__
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1:
        raise ValueError(f"{name} must map (batch, m) features to (batch, num_classes) outputs; "
                         f"on a batch of one example it returned {getattr(out, 'shape', out)!r}")
    if out.shape[1] != num_classes:
        raise ValueError(f"{name} gives {out.shape[1]} outputs per example but the data have "
                         f"{num_classes} classes: build it with out_features={num_classes}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} returns NaN or Inf before any training (its parameters are "
                         "not finite?): re-initialise the model")


def fit(model: nn.Module, data: Dataset, *, loss: str = "cross_entropy", optimizer: str = "sgd",
        lr: float = 0.1, epochs: int = 10, batch_size: int | None = None, seed: int = 0,
        device="auto", momentum: float = 0.0, weight_decay: float = 0.0, progress: bool = True,
        callback: Callable[[nn.Module], dict] | None = None, eval_batch_size: int = 8192
        ) -> History:
    """Train ``model`` on ``data`` and record a history.

    Each epoch shuffles the training set (by ``seed``) and takes ⌈n / batch_size⌉ steps of
    the optimizer on the batch loss, the MEAN over the batch.

    Args:
        model: maps ``(batch, m)`` features to ``(batch, num_classes)`` outputs.
        data: a :class:`~deqlib.data.Dataset` (train and test tensors, checked finite and
            labelled in range when it was built).
        loss: ``"square"`` (against one-hot labels) or ``"cross_entropy"``.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``, with learning rate ``lr``.
        lr: the step size, > 0 (Python or numpy numbers alike).
        epochs: passes over the training set (0 only records the start).
        batch_size: mini-batch size; None trains full batch (one step per epoch).
        seed: seeds the shuffling (training with the same seed is reproducible).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device.
        momentum: SGD's momentum, >= 0. Adam has none (it has betas): a non-zero momentum
            with ``optimizer="adam"`` is an error rather than silently ignored.
        weight_decay: L2 penalty of the optimizer, >= 0.
        progress: show a tqdm progress bar over epochs.
        callback: called as ``callback(model)`` after every epoch (and before the first); the
            dict it returns is added to that epoch's row (e.g. ‖S_t‖₂ of a DELM, or a DEQ's
            solver statistics).
        eval_batch_size: rows per forward when the loss and accuracy are evaluated, >= 1.

    Returns:
        :class:`History` with, per epoch, ``epoch``, ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc`` (losses are means over the set) and ``time``
        (seconds of training so far, evaluation excluded).

    Raises:
        ValueError: a bad option (named), or a model whose outputs do not match the classes.
        FloatingPointError: the training loss became NaN or Inf (the step is too large).
    """
    loss = validate.choice("loss", loss, LOSSES)
    optimizer = validate.choice("optimizer", optimizer, OPTIMIZERS)
    if not isinstance(data, Dataset):
        raise TypeError("data must be a deqlib.data.Dataset (see deqlib.data.load); got "
                        f"{type(data).__name__}")
    epochs = validate.integer("epochs", epochs, "passes over the training set", minimum=0)
    seed = validate.integer("seed", seed, "it seeds the shuffling", minimum=0)
    eval_batch_size = validate.positive_integer("eval_batch_size", eval_batch_size)
    if batch_size is not None:
        batch_size = validate.positive_integer("batch_size", batch_size,
                                               "or None for full batch")
    lr = validate.positive_real("lr", lr, "the step size")
    momentum = validate.nonnegative_real("momentum", momentum)
    weight_decay = validate.nonnegative_real("weight_decay", weight_decay)
    progress = validate.boolean("progress", progress)
    if optimizer == "adam" and momentum != 0:
        raise ValueError(f"momentum={momentum} applies to SGD only; Adam's momentum is its betas. "
                         "Use optimizer='sgd', or drop momentum")
    if callback is not None:
        validate.function("callback", callback, "callback(model) -> dict")
    params = list(model.parameters())
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    if not any(p.requires_grad for p in params):
        raise ValueError(f"none of {type(model).__name__}'s parameters requires grad (all are "
                         "frozen), so there is nothing to train: unfreeze some with "
                         "p.requires_grad_(True)")

    dev = resolve_device(device)
    model.to(dev)
    data = data.to(dev, dtype=params[0].dtype)      # the one host-to-device copy
    _check_outputs(model, data.X_train, data.num_classes)
    n = len(data.X_train)
    bs = n if batch_size is None else min(batch_size, n)
    criterion = loss_fn(loss, num_classes=data.num_classes, reduction="mean")
    opt = (torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
           if optimizer == "sgd" else torch.optim.Adam(params, lr=lr, weight_decay=weight_decay))
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    history = History()
    elapsed = 0.0

    def record(epoch: int) -> None:
        model.eval()
        try:   # an interrupt or an error during evaluation must not leave the model in eval()
            tr_loss, tr_acc = _evaluate_mean(model, data.X_train, data.y_train, criterion,
                                             eval_batch_size)
            te_loss, te_acc = _evaluate_mean(model, data.X_test, data.y_test, criterion,
                                             eval_batch_size)
            row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc,
                   "test_loss": te_loss, "test_acc": te_acc, "time": elapsed}
            if callback is not None:
                extra = callback(model)
                if not isinstance(extra, dict):
                    raise TypeError(f"callback(model) must return a dict of numbers to record; "
                                    f"it returned {type(extra).__name__}")
                taken = sorted(set(extra) & set(row))
                if taken:
                    raise ValueError(f"callback(model) returned {taken}, which fit records "
                                     "itself; give the callback's values other names")
                row.update(extra)
        finally:
            model.train()
        if epoch and not (math.isfinite(tr_loss) and math.isfinite(te_loss)):
            raise FloatingPointError(
                f"the training loss became {tr_loss} (test loss {te_loss}) after epoch {epoch} "
                f"with lr={lr}. The data were checked finite before training, so the steps are "
                "too large: lower the learning rate")
        history.rows.append(row)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc=type(model).__name__, leave=False)
    record(0)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle).to(dev) if bs < n else None
        for i in range(0, n, bs):
            if perm is None:
                xb, yb = data.X_train, data.y_train
            else:
                idx = perm[i:i + bs]
                xb, yb = data.X_train[idx], data.y_train[idx]
            opt.zero_grad(set_to_none=True)
            batch_loss = criterion(model(xb), yb)
            batch_loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed += time.perf_counter() - start
        batch_loss = batch_loss.detach()
        if not torch.isfinite(batch_loss):
            raise FloatingPointError(
                f"the training loss became {float(batch_loss)} at epoch {epoch} with lr={lr}. The "
                "data were checked finite before training, so the steps are too large: lower "
                "the learning rate")
        record(epoch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_loss=f"{history.last['train_loss']:.4f}",
                            test_acc=f"{history.last['test_acc']:.3f}")
    if bar is not None:
        bar.close()
    return history


@torch.no_grad()
def _evaluate_mean(model, X, y, criterion, chunk) -> tuple[float, float]:
    """Mean loss and accuracy over (X, y), in chunks of ``chunk`` rows."""
    total, correct = 0.0, 0
    for i in range(0, len(X), chunk):
        out = model(X[i:i + chunk])
        total += float(criterion(out, y[i:i + chunk])) * len(out)
        correct += int((out.argmax(dim=1) == y[i:i + chunk]).sum())
    return total / len(X), correct / len(X)
