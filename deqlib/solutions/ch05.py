"""Chapter 5, the deep equilibrium linear model: the book's solutions."""

from __future__ import annotations

import torch

from deqlib import functional


def my_delm_gradients(A, B, G, gamma, delta):
    """Return (∂L/∂A, ∂L/∂B) for L(A, B) = ℒ(BU), given G = ∇ℒ(W) at W = BU."""
    C = A.T @ A
    N = torch.linalg.matrix_norm(C)  # ‖C‖_F
    U = torch.linalg.inv(torch.eye(A.shape[0], dtype=A.dtype) - gamma * C / (N + delta))
    M = gamma * U.T @ B.T @ G @ U.T  # ∂L/∂σ
    K = M / (N + delta) - (M * C).sum() / (N * (N + delta) ** 2) * C
    return A @ (K + K.T), G @ U.T


def exercise_2(gamma=0.8, delta=1e-12, seed=0):
    """‖S‖₂ for a rank-one and a rank-two 5×5 matrix A, and the ratio ‖AᵀA‖₂/‖AᵀA‖_F of each."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(5, 2, generator=g, dtype=torch.float64).unbind(1)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    out = {}
    for name, A in (("rank one", torch.outer(u, v)), ("rank two", w @ w.T)):
        C = A.T @ A
        S = functional.equilibrium_weight(A, gamma, delta)
        out[name] = (torch.linalg.matrix_norm(S, ord=2).item(),
                     (torch.linalg.matrix_norm(C, ord=2) / torch.linalg.matrix_norm(C)).item())
    return out
