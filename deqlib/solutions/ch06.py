"""Chapter 6, global convergence at a linear rate: the book's solutions."""

from __future__ import annotations

import math
import warnings

import torch

from deqlib import functional, theory


def worst_direction_quotient(A, B, gamma, delta):
    """vec(V)ᵀ P vec(V) / ‖vec(V)‖² for V = v uᵀ, Bᵀv = 0, u the bottom eigenvector of U."""
    v = torch.linalg.svd(B).U[:, -1]  # Bᵀv = 0, since rank B < m_y
    u = torch.linalg.eigh(functional.equilibrium_matrix(A, gamma, delta)).eigenvectors[:, 0]
    V = torch.outer(v, u).reshape(-1)  # vec(v uᵀ), row-major
    return V @ theory.preconditioner(A, B, gamma, delta) @ V / (V @ V)


def exercise_2(A0, B0, Phi, Y, gamma=0.95, eta=2.5e-5, steps=2000):
    """The chapter's run at γ = 0.95: the ranges of s_min(U_t)², λ_min(P_t) and λ_max(U_t)."""
    # η = 1e-4 is unstable at γ = 0.95: the loss rose from 7067 to 1.7e6 between records
    hot = theory.gradient_flow(A0, B0, Phi, Y, gamma=gamma, eta=eta, steps=steps,
                               record_every=400)
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


def stability_threshold(A0, B0, Phi, Y, steps=300, gamma=0.8, lo=1e-4, hi=3e-3, rel=0.01):
    """The smallest η at which gradient descent's loss rises at some step of the first `steps`.

    A rise counts when it exceeds 1e-9·L_0 (rounding near the optimum does not); a run that
    blows up counts as rising. Bisection on a log scale between lo (no rise) and hi (a rise),
    to a relative width `rel`; returns the upper end.
    """
    def rises(eta):
        with warnings.catch_warnings(action="ignore"):  # above its own limit the library warns
            try:
                *_, loss = theory.delm_gradient_descent(A0, B0, Phi, Y, gamma=gamma, eta=eta,
                                                        steps=steps, record_every=1)
            except FloatingPointError:  # the parameters or the loss overflowed
                return True
        return any(b > a + 1e-9 * loss[0] for a, b in zip(loss, loss[1:]))

    assert not rises(lo) and rises(hi), "the threshold is not between lo and hi"
    while hi / lo > 1 + rel:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if rises(mid) else (mid, hi)
    return hi
