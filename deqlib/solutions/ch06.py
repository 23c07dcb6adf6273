"""Chapter 6, global convergence at a linear rate: the book's solutions."""

from __future__ import annotations

import torch

from deqlib import functional, theory


def worst_direction_quotient(A, B, gamma, delta):
    """vec(V)ᵀ P vec(V) / ‖vec(V)‖² for V = v uᵀ, Bᵀv = 0, u the bottom eigenvector of U."""
    v = torch.linalg.svd(B).U[:, -1]  # Bᵀv = 0, since rank B < m_y
    u = torch.linalg.eigh(functional.equilibrium_matrix(A, gamma, delta)).eigenvectors[:, 0]
    V = torch.outer(v, u).reshape(-1)  # vec(v uᵀ), row-major
    return V @ theory.preconditioner(A, B, gamma, delta) @ V / (V @ V)


def exercise_2(A0, B0, Phi, Y, gamma=0.95, eta=1e-4, steps=500):
    """The chapter's run at γ = 0.95: the ranges of s_min(U_t)², λ_min(P_t) and λ_max(U_t)."""
    hot = theory.gradient_flow(A0, B0, Phi, Y, gamma=gamma, eta=eta, steps=steps,
                               record_every=100)
    top = torch.linalg.eigvalsh(functional.equilibrium_matrix(hot.A, gamma, 1e-6))[-1].item()
    return {"s_min_U_sq": (min(hot.s_min_U_sq), max(hot.s_min_U_sq)),
            "lam_min_P": (min(hot.lam_min_P), max(hot.lam_min_P)),
            "lam_max_U_end": top}
