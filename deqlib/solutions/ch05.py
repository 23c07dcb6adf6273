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


def rank_one_S_norm(u, v, gamma, delta):
    """‖S‖₂ for the rank-one A = u vᵀ."""
    S = functional.equilibrium_weight(torch.outer(u, v), gamma, delta)
    return torch.linalg.matrix_norm(S, ord=2)


def gaussian_S_norm(m, seed=0, gamma=0.8, delta=1e-6, iters=300):
    """‖S‖₂ = γ‖C‖₂/(‖C‖_F + δ) for C = AᵀA, A with N(0, 1/m) entries; ‖C‖₂ by power iteration."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, m, generator=g, dtype=torch.float64) / m**0.5
    C = A.T @ A
    v = torch.randn(m, generator=g, dtype=torch.float64)
    for _ in range(iters):  # v tends to C's top eigenvector
        v = C @ v
        v = v / v.norm()
    top = v @ C @ v  # the Rayleigh quotient: ‖C‖₂ from below
    return (gamma * top / (torch.linalg.matrix_norm(C) + delta)).item()
