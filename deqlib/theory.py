"""The quantities of the convergence theory of deep equilibrium linear models (MATH.md §1–§3).

Conventions of the theory (column-major, as in the paper): Φ ∈ R^{m×n} holds the
features as columns, Y ∈ R^{m_y×n} the targets; W = B U; the loss is the SUM over
samples, L(A, B) = ℒ(BU) with ℒ(W) = Σ_i ℓ(W φ(x_i), y_i). Rows-as-samples tensors
from :mod:`deqlib.data` are ``X = Φᵀ``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "sigma", "equilibrium_matrix", "delm_gradients", "square_loss", "optimum_square_loss",
    "pl_constant_square", "sigma_min_U_squared",
]


def _check_gamma_delta(gamma: float, delta: float) -> None:
    if not (0 < gamma < 1):
        raise ValueError(f"gamma must lie in (0, 1) so that the equilibrium exists; got gamma={gamma!r}")
    if not (delta > 0):
        raise ValueError(f"delta must be positive; got delta={delta!r}")


def sigma(A: Tensor, delta: float) -> Tensor:
    """σ(A) = AᵀA / (‖AᵀA‖_F + δ)."""
    C = A.T @ A
    return C / (torch.linalg.matrix_norm(C) + delta)


def equilibrium_matrix(A: Tensor, gamma: float, delta: float) -> Tensor:
    """U = (I − γσ(A))⁻¹, the map from φ(x) to the equilibrium z* = U φ(x)."""
    _check_gamma_delta(gamma, delta)
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.inv(eye - gamma * sigma(A, delta))


def sigma_min_U_squared(A: Tensor, gamma: float, delta: float) -> Tensor:
    """σ_min(U)², which is ≥ 1 for every A (U's eigenvalues lie in [1, 1/(1 − γ)))."""
    return torch.linalg.svdvals(equilibrium_matrix(A, gamma, delta)).min() ** 2


def square_loss(W: Tensor, Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ(W) = ‖WΦ − Y‖_F² (a sum over samples)."""
    return (W @ Phi - Y).pow(2).sum()


def optimum_square_loss(Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ* = min_W ‖WΦ − Y‖_F² = ‖Y(I − Π_Φ)‖_F², Π_Φ the projector on Φ's row space."""
    W_star = torch.linalg.lstsq(Phi.T, Y.T).solution.T
    return square_loss(W_star, Phi, Y)


def pl_constant_square(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    """μ = 2 λ⁺_min(ΦΦᵀ) for ℒ(W) = ‖WΦ − Y‖_F²: ‖∇ℒ‖² ≥ 2μ(ℒ − ℒ*).

    λ⁺_min is the smallest eigenvalue above ``rtol`` · λ_max (default: m · eps).
    """
    eig = torch.linalg.eigvalsh(Phi @ Phi.T)
    rtol = Phi.shape[0] * torch.finfo(Phi.dtype).eps if rtol is None else rtol
    return 2 * eig[eig > rtol * eig.max()].min()


def delm_gradients(A: Tensor, B: Tensor, G: Tensor, gamma: float, delta: float) -> tuple[Tensor, Tensor]:
    """∂L/∂A and ∂L/∂B of L(A, B) = ℒ(BU), given G = ∇ℒ(W) at W = BU (MATH.md §2).

        ∂L/∂B = G Uᵀ,
        M = γ Uᵀ Bᵀ G Uᵀ                       (= ∂L/∂σ: the adjoint of the equilibrium),
        ∂L/∂A = A (K + Kᵀ),   K = M/(N + δ) − ⟨M, C⟩/(N (N + δ)²) · C,

    with C = AᵀA and N = ‖C‖_F. At A = 0 both terms of K vanish (the second is 0/0
    and is taken as 0), so ∂L/∂A = 0 there.

    Args:
        A: (m, m); B: (m_y, m); G: (m_y, m).
    Returns:
        (∂L/∂A, ∂L/∂B).
    """
    _check_gamma_delta(gamma, delta)
    U = equilibrium_matrix(A, gamma, delta)
    grad_B = G @ U.T
    M = gamma * U.T @ B.T @ G @ U.T
    C = A.T @ A
    N = torch.linalg.matrix_norm(C)
    K = M / (N + delta)
    if N > 0:
        K = K - ((M * C).sum() / (N * (N + delta) ** 2)) * C
    return A @ (K + K.T), grad_B
