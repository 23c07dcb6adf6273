"""Chapter 8, reproducing the experiments: the book's solutions."""

from __future__ import annotations

import tempfile

import torch

from deqlib import experiments, stats


def function_space_gain(model, G):
    """vec(G)ᵀ P vec(G) / ‖G‖²_F = ‖Jᵀ vec(G)‖² / ‖G‖²_F, with Jᵀ vec(G) by one backward pass."""
    W = model.end_to_end()
    JtG = torch.autograd.grad((W * G).sum(), list(model.parameters()))   # Jᵀ vec(G), per tensor
    return sum(part.pow(2).sum() for part in JtG) / G.pow(2).sum()


def exercise_2(seeds=(0, 1, 2, 3, 4), lr=0.02):
    """The depth-3 network against the linear model on the digits, square loss, 20 epochs at
    ``lr``: the paired differences (depth 3 − linear) of the test accuracy and of the final
    training loss, as :func:`deqlib.stats.paired_runs` gives them."""
    runs = experiments.run_experiment(
        dataset="digits", models=("linear", "deep3"), losses=("square",), epochs=20, lr=lr,
        batch_size=128, seeds=seeds, out=tempfile.mkdtemp(), progress=False, figure=False)
    return {metric: stats.paired_runs(runs, "deep3", "linear", loss="square", metric=metric)
            for metric in ("test_acc", "train_loss")}
