"""Chapter 1, implicit layers: the book's solutions."""

from __future__ import annotations

import math

import torch

from deqlib.functional import tanh_map
from deqlib.solvers import solve


def banach_depth(q, eps):
    """The smallest l with q**l <= eps: l >= log(eps) / log(q), rounded up."""
    return math.ceil(math.log(eps) / math.log(q))


def tanh_jacobian(z, W_z):
    """∂f/∂z at a fixed point z of f(z) = tanh(W_z z + injection); shape (width, width)."""
    return (1 - z**2)[:, None] * W_z  # row i of W_z times tanh'(·)_i = 1 - z_i²


def exercise_3(layer, x):
    """‖W_z‖₂ scaled to 1.5: solve from z = 0 and z = 3·1; return the result and ρ(J) there."""
    W_z = layer.effective_W_z().detach()
    W_big = W_z * 1.5 / torch.linalg.matrix_norm(W_z, ord=2)
    f_big = lambda z: tanh_map(z, W_big, (x @ layer.W_x.T + layer.b).detach())
    width = W_z.shape[0]
    two = torch.cat([torch.zeros(1, width), 3 * torch.ones(1, width)])
    big = solve(f_big, two, method="anderson", tol=1e-12, max_iter=2000)
    J_big = (1 - big.z[0] ** 2)[:, None] * W_big
    return big, torch.linalg.eigvals(J_big).abs().max().item()
