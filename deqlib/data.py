"""Datasets as tensors: the embedded digits (offline) and the paper's four image datasets.

``load(name)`` returns a :class:`Dataset` whose images are flattened and scaled to
[0, 1] (φ(x) = x, so m = the number of pixels) with integer class labels.

* ``"digits"``: scikit-learn's bundled 8×8 handwritten digits (1,797 real images, m = 64),
  the embedded default: no network, ever. Split 1,347 / 450 by a fixed permutation.
* ``"mnist"``, ``"kmnist"`` (m = 784), ``"cifar10"``, ``"cifar100"`` (m = 3,072), with
  their standard train/test splits. The files are read from ``root`` in the datasets'
  own on-disk formats (IDX for MNIST/KMNIST, the pickled "python version" batches for
  CIFAR); torchvision is used only to download them when ``download=True``. A dataset
  that is not on disk raises :class:`DatasetNotFoundError` saying where it looked and
  how to get it.

``root`` defaults to ``$DEQLIB_DATA`` or ``~/.deqlib/data``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["Dataset", "DatasetNotFoundError", "load", "DATASETS", "default_root"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not (or was not asked to) be downloaded."""


@dataclass
class Dataset:
    """A dataset as tensors.

    Attributes:
        X_train, X_test: features, shape ``(n, m)``, float, in [0, 1].
        y_train, y_test: class labels, shape ``(n,)``, int64.
        num_classes: m_y.
        name: the dataset's name.
        image_shape: the shape of one image before flattening.
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    image_shape: tuple[int, ...]

    @property
    def in_features(self) -> int:
        return self.X_train.shape[1]

    def to(self, device=None, dtype=None) -> "Dataset":
        """The same data on ``device`` (features also cast to ``dtype``), moved once."""
        return Dataset(self.X_train.to(device=device, dtype=dtype), self.y_train.to(device),
                       self.X_test.to(device=device, dtype=dtype), self.y_test.to(device),
                       self.num_classes, self.name, self.image_shape)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.X_train.shape)}, "
                f"test={tuple(self.X_test.shape)}, classes={self.num_classes})")


def default_root() -> Path:
    return Path(os.environ.get("DEQLIB_DATA", Path.home() / ".deqlib" / "data")).expanduser()


# ----------------------------------------------------------------------------- readers of the on-disk formats


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says shape {dims} but the file holds {arr.size} bytes")
    return arr.reshape(dims)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def _load_idx_dataset(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    out = {}
    for split, (images, labels) in _IDX_FILES.items():
        ip, lp = _find(folder, images), _find(folder, labels)
        if ip is None or lp is None:
            return None
        out[split] = (_read_idx(ip), _read_idx(lp))
    return out


def _load_cifar(folder: Path, fine: bool) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    key = b"fine_labels" if fine else b"labels"
    parts = {"train": ["train"], "test": ["test"]} if fine else {
        "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, names in parts.items():
        xs, ys = [], []
        for name in names:
            path = folder / name
            if not path.exists():
                return None
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[key], dtype=np.int64))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


# name: (folder under root, reader, torchvision class, classes, image shape)
_REMOTE = {
    "mnist": ("MNIST/raw", lambda f: _load_idx_dataset(f), "MNIST", 10, (28, 28)),
    "kmnist": ("KMNIST/raw", lambda f: _load_idx_dataset(f), "KMNIST", 10, (28, 28)),
    "cifar10": ("cifar-10-batches-py", lambda f: _load_cifar(f, fine=False), "CIFAR10", 10, (3, 32, 32)),
    "cifar100": ("cifar-100-python", lambda f: _load_cifar(f, fine=True), "CIFAR100", 100, (3, 32, 32)),
}

DATASETS = ("digits",) + tuple(_REMOTE)


def _download(name: str, root: Path) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError as err:  # pragma: no cover - torchvision is in requirements.txt
        raise DatasetNotFoundError(
            f"dataset {name!r} is not in {root} and torchvision, which downloads it, is not "
            "installed: pip install torchvision") from err
    cls = getattr(tvd, _REMOTE[name][2])
    for train in (True, False):
        cls(str(root), train=train, download=True)


# ----------------------------------------------------------------------------- the entry point


def _subset(X: Tensor, y: Tensor, size: int | None, generator: torch.Generator, what: str):
    if size is None:
        return X, y
    if not (isinstance(size, int) and 1 <= size):
        raise ValueError(f"{what} must be a positive integer or None; got {what}={size!r}")
    if size > len(X):
        raise ValueError(f"{what}={size} exceeds the {len(X)} examples available")
    idx = torch.randperm(len(X), generator=generator)[:size]
    return X[idx], y[idx]


def load(name: str = "digits", *, root: str | Path | None = None, download: bool = False,
         train_size: int | None = None, test_size: int | None = None, seed: int = 0,
         dtype: torch.dtype = torch.float32) -> Dataset:
    """Load a dataset as flattened tensors in [0, 1].

    Args:
        name: one of ``"digits"`` (embedded, offline), ``"mnist"``, ``"kmnist"``,
            ``"cifar10"``, ``"cifar100"``.
        root: where the torchvision datasets live (default ``$DEQLIB_DATA`` or
            ``~/.deqlib/data``), in torchvision's layout (e.g. ``root/MNIST/raw``).
        download: fetch a missing dataset with torchvision (needs the network).
        train_size, test_size: take a random subset of this many examples (None: all).
        seed: seed of the subset draw (and of the digits' split).
        dtype: floating dtype of the features.
    Returns:
        :class:`Dataset`.
    Raises:
        DatasetNotFoundError: the dataset is not under ``root`` and was not downloaded.
    """
    key = name.lower().replace("-", "").replace("_", "") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    g = torch.Generator().manual_seed(seed)
    if key == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X = torch.tensor(bunch.data, dtype=dtype) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.int64)
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
        train, test = perm[:1347], perm[1347:]
        X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test]
        classes, shape = 10, (8, 8)
    else:
        folder_name, reader, _, classes, shape = _REMOTE[key]
        root = Path(root).expanduser() if root is not None else default_root()
        folder = root / folder_name
        arrays = reader(folder) if folder.exists() else None
        if arrays is None and download:
            try:
                _download(key, root)
            except DatasetNotFoundError:
                raise
            except Exception as err:  # noqa: BLE001 - any network failure gets the same advice
                raise DatasetNotFoundError(
                    f"dataset {name!r} is not in {folder} and downloading it failed ({err}). "
                    f"Download it on a connected machine with torchvision.datasets."
                    f"{_REMOTE[key][2]}(root, download=True) and copy {folder_name} into {root}, "
                    "or set DEQLIB_DATA to the folder that holds it.") from err
            arrays = reader(folder)
        if arrays is None:
            raise DatasetNotFoundError(
                f"dataset {name!r} was not found in {folder} (looked for its files in "
                f"torchvision's layout). Pass download=True where there is a network, or download "
                f"it with torchvision.datasets.{_REMOTE[key][2]}(root, download=True) and pass "
                f"root=... or set DEQLIB_DATA. Offline, use load('digits').")
        (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
        flat = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32)).to(dtype) / 255.0  # noqa: E731
        X_train, X_test = flat(xtr), flat(xte)
        y_train = torch.from_numpy(np.asarray(ytr, dtype=np.int64))
        y_test = torch.from_numpy(np.asarray(yte, dtype=np.int64))
    X_train, y_train = _subset(X_train, y_train, train_size, g, "train_size")
    X_test, y_test = _subset(X_test, y_test, test_size, g, "test_size")
    return Dataset(X_train, y_train, X_test, y_test, classes, key, shape)
