"""Run files: every run keyed by all its settings, written atomically, resumed only when whole.

A stored record stands for a run only if it is a JSON object whose settings equal the
requested ones (type for type: ``true`` is not ``1``), whose ``key`` is the hash of those
settings, and whose results are whole: for a finished run ``epochs + 1`` history rows of
finite numbers (the DELM's with its spectra), for a diverged one its error. Anything else
(unreadable, nested past Python's recursion limit, an integer past its digit limit, a folder
named ``*.json``, ``{}``, wrong types, NaN) is named in a :class:`CorruptRunWarning` and run
again, or skipped by :func:`load_runs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from .. import validate
from ..data import DATASETS
from ..functional import check_constants
from ..train import LOSSES
from .catalog import _INITS, ALL_MODELS

_ROW_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")
_SPECTRA = ("S_norm", "s_min_U_sq", "U_norm")          # a DELM's rows hold these too
_MISSING = "<missing>"
_PACKAGE = os.path.dirname(os.path.realpath(__file__))


class CorruptRunWarning(UserWarning):
    """A stored run file could not be used (corrupt, partial or for other settings): rerun."""


def run_settings(*, dataset: str, model: str, loss: str, seed: int, lr: float, epochs: int,
                 batch_size: int | None, train_size: int | None = None,
                 test_size: int | None = None, data_seed: int = 0, gamma: float = 0.8,
                 delta: float = 1e-6, width: int | None = None, optimizer: str = "sgd",
                 dtype: str | torch.dtype | None = None) -> dict:
    """Every setting that can change a run's result, as plain JSON values (the run's key).

    ``width`` is the deep linear networks' hidden width (None: m); the DELM's width is m.
    ``dtype`` is the floating dtype the run trains in, e.g. ``"float32"`` (None: torch's
    default dtype now, which is what :func:`~deqlib.experiments.run_experiment` trains in).

    Args:
        dataset, loss, seed, epochs, batch_size: as in :func:`~deqlib.experiments.run_experiment`.
        train_size, test_size, data_seed: as in :func:`~deqlib.experiments.run_experiment`.
        gamma, delta, width: as in :func:`~deqlib.experiments.run_experiment`.
        lr: this run's learning rate.
        model: the model's name, one of ``ALL_MODELS``.
        optimizer: ``"sgd"`` or ``"adam"``, as in :func:`deqlib.train.fit`.
        dtype: a floating dtype or its name; ``None``: torch's default dtype.

    Returns:
        The settings, a dict of JSON values (the model's initialisation included).
    """
    dtype = _dtype_name(dtype)
    model = validate.choice("model", model, ALL_MODELS)
    loss = validate.choice("loss", loss, LOSSES)
    optimizer = validate.choice("optimizer", optimizer, ("sgd", "adam"))

    def optional_count(name, value):
        return None if value is None else validate.positive_integer(name, value)

    return {"dataset": validate.string("dataset", dataset, f"one of {DATASETS}"),
            "train_size": optional_count("train_size", train_size),
            "test_size": optional_count("test_size", test_size),
            "data_seed": validate.integer("data_seed", data_seed, minimum=0),
            "model": model, "init": _INITS[model], "width": optional_count("width", width),
            "loss": loss, "optimizer": optimizer, "lr": validate.positive_real("lr", lr),
            "epochs": validate.integer("epochs", epochs, minimum=0),
            "batch_size": optional_count("batch_size", batch_size),
            **dict(zip(("gamma", "delta"), check_constants(gamma, delta))),
            "seed": validate.integer("seed", seed, minimum=0), "dtype": dtype}


def run_key(settings: Mapping) -> str:
    """12 hex digits of the SHA-256 of the settings (sorted, canonical JSON).

    Args:
        settings: a mapping from :func:`run_settings`.

    Returns:
        The key, a str of 12 hexadecimal digits.
    """
    blob = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _dtype_name(dtype) -> str:
    """``"float32"`` for torch.float32 or "float32"; torch's default dtype for None."""
    if dtype is None:
        dtype = torch.get_default_dtype()
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        dtype = getattr(torch, dtype)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype or its name, such as 'float32'; "
                         f"got dtype={dtype!r}")
    return str(dtype).removeprefix("torch.")


def _warn(message: str) -> None:
    """A :class:`CorruptRunWarning` attributed to the first caller outside this package
    (whether it called run_experiment, tune_learning_rates, paper_comparison or load_runs)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.dirname(
            os.path.realpath(frame.f_code.co_filename)) == _PACKAGE:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CorruptRunWarning, stacklevel=level)


def _write_atomic(path: Path, record: dict) -> None:
    """Write ``record`` to ``path`` through a temporary file of a unique name in the same
    folder, then rename it: an interrupted write never looks finished, and two writers of the
    same run never share (and steal) one temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
        os.chmod(tmp, 0o644)                 # mkstemp's 0600 would hide runs from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: Path):
    """(the JSON value stored at ``path``, None), or (None, why it cannot be read)."""
    if path.is_dir():
        return None, "is a folder, not a run file"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError: bad JSON, or an integer past Python's digit limit; RecursionError: JSON
        # nested deeper than the recursion limit
        text = str(err)
        return None, (f"cannot be read ({type(err).__name__}: "
                      f"{text[:200] + '…' if len(text) > 200 else text})")


def _short(value) -> str:
    """repr(value), cut to 60 characters (a hand-edited file may hold a 4,000-digit number)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _same(a, b) -> bool:
    """Equal and of the same type: JSON's true is not the setting 1, "0.05" not 0.05."""
    return type(a) is type(b) and a == b


def _finite(x) -> bool:
    """A real number (not a bool) that is not NaN or ±Inf."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:                    # an int too large for a float
        return False


def _problem(record, settings: Mapping, complete: Callable[[dict], str | None]) -> str | None:
    """Why a stored record cannot stand for ``settings`` (None: it can)."""
    if not isinstance(record, dict):
        return f"holds a {type(record).__name__}, not a run record"
    changed = [k for k in settings if not _same(record.get(k, _MISSING), settings[k])]
    if changed:
        return ("was written for other settings (" + ", ".join(
            f"{k}={_short(record.get(k, _MISSING))}, now {settings[k]!r}" for k in changed) + ")")
    key = run_key(settings)
    if not _same(record.get("key"), key):
        return (f"holds key={_short(record.get('key', _MISSING))}, not the hash of its settings "
                f"{key!r}")
    return complete(record)


def _row_problem(row, i: int, model: str) -> str | None:
    if not isinstance(row, dict):
        return f"has a history row {i} that is a {type(row).__name__}, not an object"
    wanted = _ROW_KEYS + (_SPECTRA if model in ("delm", "delm_low_rank") else ())
    missing = [k for k in wanted if k not in row]
    if missing:
        return f"has a history row {i} without {missing} (wants the numbers {wanted})"
    for k, v in row.items():
        if not _finite(v):
            return f"has a history row {i} with {k}={_short(v)}, not a finite number"
    if not _same(row["epoch"], i):
        return f"has a history row {i} for epoch {_short(row['epoch'])}"
    return None


def _run_complete(record: dict) -> str | None:
    """Why a record whose settings matched is not a whole run (None: it is)."""
    diverged = record.get("diverged", _MISSING)
    if not isinstance(diverged, bool):
        return f"has diverged={_short(diverged)}, not true or false"
    if diverged:
        if not isinstance(record.get("error"), str):
            return "is a diverged run without error"
        return None if record.get("history") == [] else "is a diverged run with a history"
    history = record.get("history")
    if not isinstance(history, list) or len(history) != record["epochs"] + 1:
        got = len(history) if isinstance(history, list) else "no"
        return f"is partial: {got} history rows for {record['epochs']} epochs (+1 for the start)"
    for i, row in enumerate(history):
        problem = _row_problem(row, i, record["model"])
        if problem is not None:
            return problem
    for k in ("train_examples", "test_examples", "in_features"):
        if not (_finite(record.get(k)) and isinstance(record[k], int) and record[k] > 0):
            return f"has {k}={_short(record.get(k, _MISSING))}, not a positive integer"
    if not (_finite(record.get("wall_time_s")) and record["wall_time_s"] >= 0):
        return f"has wall_time_s={_short(record.get('wall_time_s', _MISSING))}, not a time"
    return None


def _resume(path: Path, settings: dict, complete: Callable[[dict], str | None]) -> dict | None:
    """The stored record at ``path`` if it is whole and for exactly ``settings``; else None,
    with a :class:`CorruptRunWarning` naming the file when one was there."""
    if not path.exists():
        return None
    record, problem = _read(path)
    if problem is None:
        problem = _problem(record, settings, complete)
    if problem is None:
        return record
    note = (" (the new result is returned but not stored until the folder is removed)"
            if path.is_dir() else "")
    _warn(f"run file {path} {problem}: running it again{note}")
    return None


def _stored_or_run(path: Path, settings: dict, key: str, complete: Callable[[dict], str | None],
                   run: Callable[[], dict], reused: Sequence[Path] = ()) -> dict:
    """The record stored at ``path`` for exactly ``settings``, else the first such record in
    ``reused`` (copied to ``path``), else ``run()``'s, keyed and written to ``path`` (unless a
    folder sits there: then the warning of :func:`_resume` said so)."""
    record = _resume(path, settings, complete)
    for other in reused:
        if record is None and other.exists():
            record = _resume(other, settings, complete)
            if record is not None and not path.is_dir():
                _write_atomic(path, record)
    if record is None:
        record = run()
        record["key"] = key
        if not path.is_dir():
            _write_atomic(path, record)
    return record


#: The arguments of run_settings, read back from a stored record by load_runs.
_SETTING_ARGS = ("dataset", "model", "loss", "seed", "lr", "epochs", "batch_size", "train_size",
                 "test_size", "data_seed", "gamma", "delta", "width", "optimizer", "dtype")


def _stored_run_problem(record) -> str | None:
    """Why a stored record is not a whole run of its own settings (None: it is)."""
    if not isinstance(record, dict):
        return f"holds a {type(record).__name__}, not a run record"
    missing = [k for k in _SETTING_ARGS if k not in record]
    if missing:
        return f"lacks the settings {missing}"
    try:
        settings = run_settings(**{k: record[k] for k in _SETTING_ARGS})
    except (TypeError, ValueError, OverflowError) as err:
        return f"has a setting that is not one ({type(err).__name__}: {str(err)[:200]})"
    return _problem(record, settings, _run_complete)


def load_runs(out: str | Path, **where) -> list[dict]:
    """Every whole run stored under ``out/runs`` whose settings equal ``where``.

    E.g. ``load_runs("book/results/mnist10k/same_lr", loss="square")``. A file that is not a
    whole run of its own settings (unreadable, a folder, wrong types, NaN, partial, a key that
    is not the hash of its settings) is skipped with a :class:`CorruptRunWarning` naming it.

    Args:
        out: the output folder of :func:`~deqlib.experiments.run_experiment` (the runs are in
            ``out/runs``).
        **where: settings to match, e.g. ``loss="square"``, ``model="delm"``; none: every run.

    Returns:
        The records, as :func:`~deqlib.experiments.run_experiment` returns them.
    """
    records = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        record, problem = _read(path)
        if problem is None:
            problem = _stored_run_problem(record)
        if problem is not None:
            _warn(f"run file {path} {problem}: skipped")
            continue
        if all(record.get(k) == v for k, v in where.items()):
            records.append(record)
    return records


def _finished(records: Iterable[dict]) -> list[dict]:
    return [r for r in records if not r.get("diverged") and r.get("history")]
