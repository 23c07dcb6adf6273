"""deqlib.data: the embedded digits, and the torchvision datasets read offline from files
this test writes in the datasets' own on-disk formats."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from deqlib import data
from deqlib.data import DatasetNotFoundError


def test_digits_are_embedded_flattened_and_scaled():
    d = data.load("digits")
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.num_classes == 10 and d.image_shape == (8, 8) and d.in_features == 64
    assert 0 <= d.X_train.min() and d.X_train.max() <= 1 and d.X_train.max() == 1
    assert set(d.y_train.tolist()) == set(range(10))
    assert torch.equal(d.X_train, data.load("digits").X_train)  # a fixed split


def test_subsets_and_dtype():
    d = data.load("digits", train_size=100, test_size=20, dtype=torch.float64)
    assert d.X_train.shape == (100, 64) and d.X_test.shape == (20, 64) and d.X_train.dtype == torch.float64
    with pytest.raises(ValueError, match="exceeds the 1347"):
        data.load("digits", train_size=5000)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet")


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx_dataset(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            blob = _idx(arr)
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as fh:
                    fh.write(blob)
            else:
                (folder / name).write_bytes(blob)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST/raw", False), ("kmnist", "KMNIST/raw", True)])
def test_mnist_format_is_read_offline(tmp_path, name, folder, gz):
    arrays = _write_idx_dataset(tmp_path / folder, gz=gz)
    d = data.load(name, root=tmp_path)
    images, labels = arrays["train"]
    assert d.X_train.shape == (12, 784) and d.X_test.shape == (5, 784) and d.image_shape == (28, 28)
    assert torch.allclose(d.X_train, torch.tensor(images.reshape(12, -1) / 255.0, dtype=torch.float32))
    assert torch.equal(d.y_train, torch.tensor(labels, dtype=torch.int64))


@pytest.mark.parametrize("name,fine", [("cifar10", False), ("cifar100", True)])
def test_cifar_format_is_read_offline(tmp_path, name, fine):
    rng = np.random.default_rng(1)
    folder = tmp_path / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir()
    files = {"train": 4, "test": 3} if fine else {**{f"data_batch_{i}": 2 for i in range(1, 6)}, "test_batch": 3}
    written = {}
    for fname, n in files.items():
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100 if fine else 10, size=n).tolist()
        key = b"fine_labels" if fine else b"labels"
        with open(folder / fname, "wb") as fh:
            pickle.dump({b"data": x, key: y}, fh)
        written[fname] = (x, y)
    d = data.load(name, root=tmp_path)
    assert d.X_train.shape == ((4 if fine else 10), 3072) and d.X_test.shape == (3, 3072)
    assert d.num_classes == (100 if fine else 10) and d.image_shape == (3, 32, 32)
    x_test, y_test = written["test" if fine else "test_batch"]
    assert torch.allclose(d.X_test, torch.tensor(x_test / 255.0, dtype=torch.float32))
    assert d.y_test.tolist() == y_test


def test_missing_dataset_says_what_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("mnist", root=tmp_path)
    msg = str(err.value)
    assert "'mnist'" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "download=True" in msg and "digits" in msg


def test_failed_download_is_reported_not_hidden(tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading it failed.*name resolution"):
        data.load("cifar10", root=tmp_path, download=True)


def test_corrupt_file_is_an_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_dataset(folder)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load("mnist", root=tmp_path)
