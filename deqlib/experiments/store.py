"""Run files: every run keyed by all its settings, written atomically, resumed only when whole."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ..train import LOSSES
from .catalog import _INITS, MODELS

_ROW_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")


class CorruptRunWarning(UserWarning):
    """A stored run file could not be used (corrupt, partial or for other settings): rerun."""



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


def _finished(records: Iterable[dict]) -> list[dict]:
    return [r for r in records if not r.get("diverged") and r.get("history")]
