"""A device-agnostic training loop with a per-epoch history.

The data moves to the device once, before the first epoch; mini-batches are index
slices of device-resident tensors, so no batch is ever copied from the host.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Dataset

__all__ = ["fit", "History", "resolve_device", "seed_everything", "LOSSES", "loss_fn"]

LOSSES = ("cross_entropy", "square")
OPTIMIZERS = ("sgd", "adam")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is passed to torch.device."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def loss_fn(name: str, *, num_classes: int, reduction: str = "mean") -> Callable[[Tensor, Tensor], Tensor]:
    """The loss ℓ(f(x), y) for integer labels y.

    ``"square"``: ‖f(x) − onehot(y)‖² per sample; ``"cross_entropy"``: softmax
    cross-entropy. ``reduction="sum"`` gives the SUM over samples that the theory uses
    (MATH.md §2), ``"mean"`` its average (the same minimisers; the step size scales by n).
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got loss={name!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got reduction={reduction!r}")
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, reduction=reduction)

    def square(out: Tensor, y: Tensor) -> Tensor:
        per_sample = (out - F.one_hot(y, num_classes).to(out.dtype)).pow(2).sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    return square


@dataclass
class History:
    """Per-epoch record of a run. ``rows[i]`` is a dict for epoch i (epoch 0 is before training)."""

    rows: list[dict] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        """The column ``key`` over epochs, e.g. ``history["test_acc"]``."""
        return [row.get(key) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last(self) -> dict:
        return self.rows[-1]

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        last = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.last.items()
                         if k != "time")
        return f"History({len(self.rows)} rows; last: {last})"


def fit(model: nn.Module, data: Dataset, *, loss: str = "cross_entropy", optimizer: str = "sgd",
        lr: float = 0.1, epochs: int = 10, batch_size: int | None = None, seed: int = 0,
        device="auto", momentum: float = 0.0, weight_decay: float = 0.0, progress: bool = True,
        callback: Callable[[nn.Module], dict] | None = None, eval_batch_size: int = 8192) -> History:
    """Train ``model`` on ``data`` and record a history.

    Args:
        model: maps ``(batch, m)`` features to ``(batch, num_classes)`` outputs.
        data: a :class:`~deqlib.data.Dataset` (train and test tensors).
        loss: ``"cross_entropy"`` or ``"square"`` (against one-hot labels); mean over the batch.
        optimizer: ``"sgd"`` or ``"adam"``, with learning rate ``lr``.
        epochs: passes over the training set.
        batch_size: mini-batch size; None trains full batch (one step per epoch).
        seed: seeds the shuffling (training with the same seed is reproducible).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device.
        progress: show a tqdm progress bar over epochs.
        callback: called as ``callback(model)`` after every epoch (and before the first);
            the dict it returns is added to that epoch's row (e.g. ‖S_t‖₂ of a DELM).
    Returns:
        :class:`History` with, per epoch, ``epoch``, ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc`` (losses are means over the set) and ``time``
        (seconds of training so far, evaluation excluded).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got loss={loss!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got optimizer={optimizer!r}")
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be a non-negative integer; got epochs={epochs!r}")
    if not (lr > 0):
        raise ValueError(f"lr must be positive; got lr={lr!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or None (full batch); got {batch_size!r}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a deqlib.data.Dataset (see deqlib.data.load); got {type(data).__name__}")

    dev = resolve_device(device)
    param = next(model.parameters())
    model.to(dev)
    data = data.to(dev, dtype=param.dtype)      # the one host-to-device copy
    n = len(data.X_train)
    bs = n if batch_size is None else min(batch_size, n)
    criterion = loss_fn(loss, num_classes=data.num_classes, reduction="mean")
    opt = (torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
           if optimizer == "sgd" else torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay))
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    history = History()
    elapsed = 0.0

    def record(epoch: int) -> None:
        model.eval()
        chunk = min(eval_batch_size, max(len(data.X_train), len(data.X_test)))
        tr_loss, tr_acc = _evaluate_mean(model, data.X_train, data.y_train, criterion, chunk)
        te_loss, te_acc = _evaluate_mean(model, data.X_test, data.y_test, criterion, chunk)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc,
               "test_loss": te_loss, "test_acc": te_acc, "time": elapsed}
        if callback is not None:
            row.update(callback(model))
        history.rows.append(row)
        model.train()

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
                f"the training loss became {float(batch_loss)} at epoch {epoch}: lower the learning "
                f"rate (lr={lr})")
        record(epoch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_loss=f"{history.last['train_loss']:.4f}", test_acc=f"{history.last['test_acc']:.3f}")
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
