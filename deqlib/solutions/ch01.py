"""Chapter 1, implicit layers: the book's solutions."""

from __future__ import annotations

import math

import torch

import deqlib


def banach_depth(q, eps):
    """The smallest l with q**l <= eps: l >= log(eps) / log(q), rounded up."""
    return math.ceil(math.log(eps) / math.log(q))


def tanh_jacobian(z, W_z):
    """∂f/∂z at a fixed point z of f(z) = tanh(W_z z + injection); shape (width, width)."""
    return (1 - z**2)[:, None] * W_z  # row i of W_z times tanh'(·)_i = 1 - z_i²


def exercise_3(layer, x):
    """‖W_z‖₂ scaled to 1.5: solve from z = 0 and z = 3·1; return the result and ρ(J) there.

    In the chapter: ``big, rho = exercise_3(layer, x)``, then print ``big``, the distance
    between ``big.z[0]`` and ``big.z[1]``, and ``rho``.
    """
    W_z = layer.effective_W_z().detach()
    W_big = W_z * 1.5 / torch.linalg.matrix_norm(W_z, ord=2)
    injection = (x @ layer.W_x.T + layer.b).detach()
    f_big = lambda z: deqlib.functional.tanh_map(z, W_big, injection)
    width = W_z.shape[0]
    two = torch.cat([torch.zeros(1, width), 3 * torch.ones(1, width)])  # two starts, one batch
    big = deqlib.solve(f_big, two, method="picard", tol=1e-12, max_iter=2000)
    J_big = (1 - big.z[0] ** 2)[:, None] * W_big
    return big, torch.linalg.eigvals(J_big).abs().max().item()


def nonnormal_weight(rho, norm, d):
    """rho·I (d × d) plus w ≥ 0 in the top-right corner, with w such that ‖W‖₂ = ``norm``.

    Only coordinates 1 and d interact, through the block [[rho, w], [0, rho]]; the others are
    scaled by rho. The block's singular values σ₁ ≥ σ₂ have σ₁σ₂ = |det| = rho² and
    σ₁² + σ₂² = 2 rho² + w² (its squared entries): with σ₁ = norm, σ₂ = rho²/norm and
    w = norm − rho²/norm.
    """
    W = rho * torch.eye(d)
    W[0, d - 1] = norm - rho**2 / norm
    return W


def certified_error(f, z, q):
    """The a-posteriori bound ‖f(z) − z‖ / (1 − q) on ‖z − z*‖, one per row of z (q < 1)."""
    return (f(z) - z).norm(dim=1) / (1 - q)
