"""Chapter 6, global convergence at a linear rate: the book's solutions."""

from __future__ import annotations

import math

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


def exercise_3(A0, B0, Phi, Y, gamma=0.8, delta=1e-6, eta=1e-4, steps=2000):
    """Train both (A, B), then B alone with U frozen at U_0, from the chapter's start.

    Returns the gaps L_t − ℒ* at t = η·steps and the late decay rates over the last three
    quarters of the run, for both trainings.
    """
    both = theory.gradient_flow(A0, B0, Phi, Y, gamma=gamma, delta=delta, eta=eta,
                                steps=steps, record_every=steps // 4)
    U0 = functional.equilibrium_matrix(A0, gamma, delta)
    B, gaps = B0.clone(), []
    for k in range(steps + 1):  # gradient descent on B: ∂L/∂B = G U_0ᵀ
        G = theory.shallow_gradient(B @ U0, Phi, Y)
        if k % (steps // 4) == 0:
            gaps.append(theory.shallow_loss(B @ U0, Phi, Y).item() - both.optimum)
        B = B - eta * G @ U0.T
    span = 3 * eta * steps / 4
    return {"gap_both": both.gap[-1], "gap_B_only": gaps[-1],
            "rate_both": math.log(both.gap[1] / both.gap[-1]) / span,
            "rate_B_only": math.log(gaps[1] / gaps[-1]) / span,
            "s_min_U_sq_start_end": (both.s_min_U_sq[0], both.s_min_U_sq[-1])}
