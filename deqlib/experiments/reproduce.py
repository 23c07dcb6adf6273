"""Does today's code compute what the stored runs hold? Stored runs trained again, and a
fingerprint of the training path on the embedded digits.

Stored runs record the git commit of the deqlib that made them (``code``, ``+dirty`` when
``deqlib/`` had uncommitted edits, whose state cannot be recovered). :func:`reproduce_run`
trains a stored run again, with today's code, and measures how far the new history is from the
stored one. :func:`training_fingerprint` is a few seconds of the same training path (models,
initialisations, data split, SGD, losses, the DELM's spectra) on the embedded digits: stored
next to the reproductions, it lets a test check, without the stored runs' dataset, that the
training code still computes what it computed when the runs were reproduced.
"""

from __future__ import annotations

import math
import tempfile

import torch

from ..train import resolve_device
from .runner import _train_one, run_experiment

#: The history entries compared: the losses and the DELM's ‖S_t‖₂ (relative), the accuracy
#: (absolute: one test image more or less is 1/n_test).
_RELATIVE = ("train_loss", "test_loss", "S_norm")
#: The small run whose histories make the fingerprint (every model, both losses, seed 0).
FINGERPRINT_SETTINGS = dict(dataset="digits", train_size=200, test_size=100, epochs=2, lr=0.05,
                            batch_size=50, seeds=(0,))


def history_difference(new: list[dict], stored: list[dict]) -> dict:
    """The largest relative difference of the losses and ‖S_t‖₂, and the largest absolute
    difference of the test accuracy, over every epoch (``inf`` if the histories differ in
    length or in which entries they hold)."""
    if len(new) != len(stored):
        return {"relative": math.inf, "test_acc": math.inf}
    relative = accuracy = 0.0
    for a, b in zip(new, stored):
        for key in _RELATIVE:
            if (key in a) != (key in b):
                return {"relative": math.inf, "test_acc": math.inf}
            if key in a:
                relative = max(relative, abs(a[key] - b[key]) / max(abs(b[key]), 1e-30))
        accuracy = max(accuracy, abs(a["test_acc"] - b["test_acc"]))
    return {"relative": relative, "test_acc": accuracy}


def reproduce_run(record: dict, data) -> dict:
    """Train the stored run ``record`` again on ``data`` (the dataset it names, loaded as it
    was) with today's code, on the CPU, in torch's default dtype, which must be the run's.

    Returns the run's file settings that identify it, the ``code`` that made it, the
    difference of the new history from the stored one (:func:`history_difference`) and the
    wall time of the new run.
    """
    if str(torch.get_default_dtype()).removeprefix("torch.") != record["dtype"]:
        raise ValueError(f"the stored run trained in {record['dtype']}; torch's default dtype "
                         f"is {torch.get_default_dtype()}: set it to the run's before the call")
    new = _train_one(record, data, resolve_device("cpu"), "reproduce_run")
    if new["diverged"] or record["diverged"]:
        same = new["diverged"] == record["diverged"]
        difference = {"relative": 0.0 if same else math.inf, "test_acc": 0.0 if same else math.inf}
    else:
        difference = history_difference(new["history"], record["history"])
    return {**{k: record[k] for k in ("key", "model", "loss", "lr", "seed", "code")},
            **difference, "wall_time_s": new["wall_time_s"]}


def training_fingerprint() -> dict[str, list[list[float]]]:
    """Per ``"loss/model"``: each epoch's training loss, test loss, test accuracy (and the
    DELM's ‖S_t‖₂) of a two-epoch run of every model on 200 embedded digits
    (:data:`FINGERPRINT_SETTINGS`), in torch's default dtype. A few seconds on a CPU."""
    with tempfile.TemporaryDirectory() as out:
        runs = run_experiment(**FINGERPRINT_SETTINGS, out=out, progress=False, summary=False)
    keys = ("train_loss", "test_loss", "test_acc", "S_norm")
    return {f"{r['loss']}/{r['model']}": [[row[k] for k in keys if k in row]
                                          for row in r["history"]] for r in runs}
