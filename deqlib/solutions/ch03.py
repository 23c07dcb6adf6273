"""Chapter 3, implicit differentiation: the book's solutions."""

from __future__ import annotations

import warnings

import torch

import deqlib


def grad_x(S, g):
    """∂ℓ/∂x for the equilibrium of z = z Sᵀ + x, given g = ∂ℓ/∂z* of shape (batch, d)."""
    return torch.linalg.solve(torch.eye(len(S)) - S.T, g.T).T  # (I - Sᵀ) u = g, per row


def exercise_2(problem, weights, steps=20):
    """Relative error of ∂ℓ/∂W_z through ``steps`` unrolled Picard iterations, ℓ = Σ weights·z.

    The reference is the implicit gradient at the equilibrium (deqlib's adjoint solve). Also
    returns the largest ρ(J) over the samples' equilibria, to compare with ρ(J)**steps. In the
    chapter: ``error, rho_J = exercise_2(problem, weights)``, then print both.
    """
    W_z = problem.W_z.clone().requires_grad_()
    injection = (problem.x @ problem.W_x.T).requires_grad_()
    f = lambda z, x: deqlib.functional.tanh_map(z, *x)  # noqa: E731 - x = (W_z, injection)
    implicit = deqlib.DEQ(f, solver=deqlib.Anderson(tol=1e-12, max_iter=1000))
    z_star = implicit((W_z, injection), problem.z0())
    (exact,) = torch.autograd.grad((z_star * weights).sum(), W_z)
    unrolled = deqlib.DEQ(f, solver=deqlib.Picard(tol=1e-12, max_iter=steps),
                          backward="unrolled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", deqlib.ConvergenceWarning)  # 20 steps do not converge
        (cut,) = torch.autograd.grad((unrolled((W_z, injection), problem.z0()) * weights).sum(),
                                     W_z)
    J = (1 - z_star.detach() ** 2)[:, :, None] * problem.W_z  # one J per sample
    rho_J = torch.linalg.eigvals(J).abs().amax(dim=1).max().item()
    return ((cut - exact).norm() / exact.norm()).item(), rho_J


def neumann_adjoint(vjp, g, k):
    """Σ_{j<k} (Jᵀ)ʲ g for k ≥ 1, given vjp(u) = Jᵀu; g has shape (batch, width)."""
    u = g
    for _ in range(k - 1):  # Horner's rule: g + Jᵀ(g + Jᵀ(g + …)), k − 1 products
        u = g + vjp(u)
    return u
