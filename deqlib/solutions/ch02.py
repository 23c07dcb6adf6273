"""Chapter 2, root-finding: the book's solutions."""

from __future__ import annotations

import torch

import deqlib


def broyden_update(Psi_inv, dz, dg):
    """Ψ_{k+1}⁻¹ from Ψ_k⁻¹ by the Sherman–Morrison update derived above."""
    dzP = dz @ Psi_inv  # the row Δzᵀ Ψ_k⁻¹
    return Psi_inv + torch.outer(dz - Psi_inv @ dg, dzP) / (dzP @ dg)


def anderson_weights(G):
    """α minimising ‖Σ α_i g_i‖ subject to Σ α_i = 1, for residuals g_i = rows of G."""
    y = torch.linalg.solve(G @ G.T, torch.ones(len(G)))  # Γ y = 1
    return y / y.sum()


def exercise_3(problem, lam=1e-4, betas=(1.0, 0.5, 0.2)):
    """Five residuals in R³: the Gram matrix's rank, and the weights with λ; then damping.

    Returns the rank of the 5×5 Gram matrix Γ, the weights α found with λ, the mixed residual
    ‖Σ α_i g_i‖, and deqlib's Anderson steps to 1e-6 on ``problem`` for each β in ``betas``.
    In the chapter: ``rank, alpha, mixed, steps = exercise_3(p)``, then print them.
    """
    G5 = torch.randn(5, 3, generator=torch.Generator().manual_seed(6))
    Gamma = G5 @ G5.T
    rank = torch.linalg.matrix_rank(Gamma).item()
    y = torch.linalg.solve(Gamma + lam * torch.diag(Gamma.diagonal()), torch.ones(5))
    alpha = y / y.sum()
    steps = {beta: deqlib.solve(problem.f, problem.z0(), method="anderson", beta=beta, tol=1e-6,
                         max_iter=2000).steps for beta in betas}
    return rank, alpha, (alpha @ G5).norm().item(), steps


def broyden_restarted(f, z, memory, steps):
    """The chapter's ``broyden`` for a fixed number of steps, restarting after ``memory`` updates.

    Before the update that would be the (memory + 1)-th, Ψ⁻¹ restarts from −I, as in
    ``deqlib.broyden``; that update is then made on −I. Returns z after ``steps`` steps.
    """
    minus_eye = -torch.eye(z.shape[1]).repeat(len(z), 1, 1)
    Psi_inv, g, n = minus_eye, f(z) - z, 0  # n: updates since the last (re)start
    for _ in range(steps):
        dz = -(Psi_inv @ g[..., None])
        z = z + dz[..., 0]
        g_new = f(z) - z
        dg, g = (g_new - g)[..., None], g_new
        if n == memory:  # restart: forget every stored update
            Psi_inv, n = minus_eye, 0
        dzP = dz.transpose(1, 2) @ Psi_inv
        Psi_inv = Psi_inv + (dz - Psi_inv @ dg) @ (dzP / (dzP @ dg))
        n += 1
    return z
