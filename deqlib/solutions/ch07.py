"""Chapter 7, the trust-region Newton relation: the book's solutions."""

from __future__ import annotations

import torch

from deqlib import functional, theory


def trust_region_radius(P, H, grad, eps):
    """Δ = ‖v‖_Q with Q = ε⁻¹P⁻¹ − H and the model's step v = −εP grad."""
    Q = torch.linalg.inv(P) / eps - H  # the time-dependent norm Q_t
    v = -eps * P @ grad  # ε · d vec(W)/dt
    return torch.sqrt(v @ Q @ v)


def exercise_3(A0, B0, Phi, Y, fractions=(0.1, 0.9)):
    """For each eps_fraction: (ε, radius Δ, ‖v‖, KKT multiplier) of trust_region_check."""
    out = {}
    for fraction in fractions:
        tr = theory.trust_region_check(A0, B0, Phi, Y, eps_fraction=fraction)
        out[fraction] = (tr.eps, tr.radius, tr.model_step.norm().item(), tr.multiplier)
    return out


def exercise_4(A0, B0, Phi, Y, seed=0, fraction=0.5):
    """A random positive definite P, not the DELM's: is −εPg again the trust-region step?

    Returns (the solver's step, the preconditioned step −εPg, the KKT multiplier, λ_min(P)).
    """
    W0 = functional.end_to_end(A0, B0, 0.8, 1e-6)
    g = theory.shallow_gradient(W0, Phi, Y).reshape(-1)
    H = theory.shallow_hessian(W0, Phi, Y)
    d = len(g)
    Z = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=g.dtype)
    P = Z @ Z.T / d + 0.1 * torch.eye(d, dtype=g.dtype)  # positive definite, not ⪰ I
    lam, vecs = torch.linalg.eigh(P)
    P_half = vecs @ torch.diag(lam.sqrt()) @ vecs.T
    eps = fraction / torch.linalg.eigvalsh(P_half @ H @ P_half)[-1].item()
    Q = torch.linalg.inv(P) / eps - H  # the same recipe as for P_t
    v = -eps * P @ g
    radius = torch.sqrt(v @ Q @ v).item()
    step, multiplier = theory.solve_trust_region(g, H, Q, radius)
    return step, v, multiplier, lam[0].item()
