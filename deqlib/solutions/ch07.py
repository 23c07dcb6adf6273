"""Chapter 7, the trust-region Newton relation: the book's solutions."""

from __future__ import annotations

import torch

from deqlib import theory


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
