"""Chapter 4, training a DEQ: the book's solutions.

Each function uses only what the chapter's first cell imports (math, torch, nn, deqlib,
EquilibriumMonitor), so a reader can paste it into the notebook and run it as it is, on the
digits or on MNIST (``data`` is the chapter's dataset; ``epochs``, ``batch_size`` and ``device``
its settings).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import deqlib
from deqlib.monitor import EquilibriumMonitor


def tanh_jacobian(W_z, z):
    """J[i] = ∂f/∂z at the equilibrium z[i]; shape (batch, width, width)."""
    return (1 - z**2).unsqueeze(-1) * W_z  # row j of W_z times the slope 1 − z_j²


def power_radius(J, steps=200):
    """ρ(J[i]) for each matrix of the batch J, shape (batch, n, n), by power iteration."""
    v = torch.randn(J.shape[:2], generator=torch.Generator().manual_seed(0)).to(J)
    log_growth = torch.zeros(len(J), dtype=torch.float64, device=J.device)
    for k in range(steps):
        v = (J @ v.unsqueeze(-1)).squeeze(-1)  # after k products, ‖Jᵏv‖ grows like ρ(J)ᵏ
        norm = v.norm(dim=1)
        if k >= steps // 2:  # the second half only: past the transient
            log_growth += norm.double().log()
        v = v / norm.unsqueeze(-1)  # renormalise: no overflow, no underflow
    return (log_growth / (steps - steps // 2)).exp().to(J.dtype)  # geometric mean growth


def contraction_factor(layer):
    """‖W_z‖₂ of the weight the layer's forward pass uses: Banach's factor q for its map."""
    return torch.linalg.matrix_norm(layer.effective_W_z(), ord=2).item()


def extra_picard_steps(radius):
    """More Picard steps for a relative tolerance of 1e-6 than for 1e-4, at rate `radius`."""
    return math.log(100) / math.log(1 / radius)  # radius**k = 1e-2 more shrinking


def mlp_parameters(depth, in_features, classes, width=32):
    """Parameters of the explicit MLP with `depth` hidden width×width layers (no bias)."""
    first, readout = width * in_features + width, classes * width + classes
    return first + depth * width * width + readout


def exercise_2(data, epochs=8, batch_size=64, device="cpu"):
    """The dense DEQ trained without the bound (max_norm=None) and, for comparison, with it.

    Trained as in the chapter (Adam, lr 1e-2, the same start and batch order); returns the two
    histories, with the monitor's columns (steps, ‖J‖₂, ρ(J), ‖W_z‖₂, …).
    """
    runs = {}
    for name, max_norm in (("bounded", 0.9), ("unbounded", None)):
        monitor = EquilibriumMonitor(data.X_test[:64])
        model = deqlib.TanhDEQ(data.in_features, 32, data.num_classes,
                               solver=deqlib.Anderson(tol=1e-4), max_norm=max_norm,
                               callback=monitor,
                               generator=torch.Generator().manual_seed(0))
        runs[name] = deqlib.train.fit(model, data, optimizer="adam", lr=1e-2, epochs=epochs,
                                      batch_size=batch_size, seed=0, device=device,
                                      progress=False, callback=monitor.epoch)
    return runs


def exercise_3(data, epochs=8, batch_size=64, device="cpu"):
    """The dense DEQ trained at tol=1e-4 and at tol=1e-6, as in the chapter; two histories."""
    runs = {}
    for tol in (1e-4, 1e-6):
        monitor = EquilibriumMonitor(data.X_test[:64], tol=tol)
        model = deqlib.TanhDEQ(data.in_features, 32, data.num_classes,
                               solver=deqlib.Anderson(tol=tol), callback=monitor,
                               generator=torch.Generator().manual_seed(0))
        runs[tol] = deqlib.train.fit(model, data, optimizer="adam", lr=1e-2, epochs=epochs,
                                     batch_size=batch_size, seed=0, device=device,
                                     progress=False, callback=monitor.epoch)
    return runs


def exercise_4(data, depth=3, epochs=8, batch_size=64, device="cpu"):
    """The explicit MLP with `depth` hidden 32×32 layers, trained as in the chapter.

    Returns its parameter count and its history.
    """
    torch.manual_seed(0)
    layers = [nn.Linear(data.in_features, 32), nn.Tanh()]
    for _ in range(depth):
        layers += [nn.Linear(32, 32, bias=False), nn.Tanh()]
    mlp = nn.Sequential(*layers, nn.Linear(32, data.num_classes))
    history = deqlib.train.fit(mlp, data, optimizer="adam", lr=1e-2, epochs=epochs,
                               batch_size=batch_size, seed=0, device=device, progress=False)
    return sum(p.numel() for p in mlp.parameters()), history
