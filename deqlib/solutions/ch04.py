"""Chapter 4, training a DEQ: the book's solutions."""

from __future__ import annotations

import math

import torch
from torch import nn

from deqlib.layers import TanhDEQ
from deqlib.monitor import EquilibriumMonitor
from deqlib.solvers import Anderson
from deqlib.train import fit


def tanh_jacobian(W_z, z):
    """J[i] = ∂f/∂z at the equilibrium z[i]; shape (batch, width, width)."""
    return (1 - z**2).unsqueeze(-1) * W_z  # row j of W_z times the slope 1 − z_j²


def contraction_factor(layer):
    """‖W_z‖₂ of the weight the layer's forward pass uses: Banach's factor q for its map."""
    return torch.linalg.matrix_norm(layer.effective_W_z(), ord=2).item()


def extra_picard_steps(radius):
    """More Picard steps for a relative tolerance of 1e-6 than for 1e-4, at rate `radius`."""
    return math.log(100) / math.log(1 / radius)  # radius**k = 1e-2 more shrinking


def mlp_parameters(depth, in_features=64, width=32, classes=10):
    """Parameters of the explicit MLP with `depth` hidden width×width layers (no bias)."""
    return width * in_features + width + depth * width * width + classes * width + classes


def _train(model, data, monitor=None, epochs=8):
    """The chapter's training: Adam, lr 1e-2, batches of 64, the same batch order."""
    return fit(model, data, optimizer="adam", lr=1e-2, epochs=epochs, batch_size=64, seed=0,
               progress=False, callback=None if monitor is None else monitor.epoch)


def _dense_deq(data, monitor, **options):
    return TanhDEQ(data.in_features, 32, data.num_classes, callback=monitor,
                   generator=torch.Generator().manual_seed(0), **options)


def exercise_2(data):
    """The dense DEQ trained without the bound (max_norm=None) and, for comparison, with it.

    Returns the two histories, with the monitor's columns (steps, ‖J‖₂, ρ(J), ‖W_z‖₂, …).
    """
    runs = {}
    for name, max_norm in (("bounded", 0.9), ("unbounded", None)):
        monitor = EquilibriumMonitor(data.X_test[:64])
        model = _dense_deq(data, monitor, solver=Anderson(tol=1e-4), max_norm=max_norm)
        runs[name] = _train(model, data, monitor)
    return runs


def exercise_3(data):
    """The dense DEQ trained at tol=1e-4 and at tol=1e-6; returns the two histories."""
    runs = {}
    for tol in (1e-4, 1e-6):
        monitor = EquilibriumMonitor(data.X_test[:64], tol=tol)
        runs[tol] = _train(_dense_deq(data, monitor, solver=Anderson(tol=tol)), data, monitor)
    return runs


def exercise_4(data, depth=3):
    """The explicit MLP with `depth` hidden 32×32 layers, trained as in the chapter.

    Returns its parameter count and its history.
    """
    torch.manual_seed(0)
    layers = [nn.Linear(data.in_features, 32), nn.Tanh()]
    for _ in range(depth):
        layers += [nn.Linear(32, 32, bias=False), nn.Tanh()]
    mlp = nn.Sequential(*layers, nn.Linear(32, data.num_classes))
    return sum(p.numel() for p in mlp.parameters()), _train(mlp, data)
