"""Chapter 3, implicit differentiation: the book's solutions."""

from __future__ import annotations

import warnings

import torch

from deqlib.functional import tanh_map
from deqlib.implicit import DEQ
from deqlib.solvers import Anderson, ConvergenceWarning, Picard


def grad_x(S, g):
    """∂ℓ/∂x for the equilibrium of z = z Sᵀ + x, given g = ∂ℓ/∂z* of shape (batch, d)."""
    return torch.linalg.solve(torch.eye(len(S)) - S.T, g.T).T  # (I - Sᵀ) u = g, per row


def exercise_2(problem, weights, steps=20):
    """Relative error of ∂ℓ/∂W_z through ``steps`` unrolled Picard iterations, ℓ = Σ weights·z.

    The reference is the implicit gradient at the equilibrium (deqlib's adjoint solve).
    """
    W_z = problem.W_z.clone().requires_grad_()
    injection = (problem.x @ problem.W_x.T).requires_grad_()
    f = lambda z, x: tanh_map(z, *x)  # noqa: E731 - the chapter's map, x = (W_z, injection)
    implicit = DEQ(f, solver=Anderson(tol=1e-12, max_iter=1000))
    (exact,) = torch.autograd.grad((implicit((W_z, injection), problem.z0()) * weights).sum(),
                                   W_z)
    unrolled = DEQ(f, solver=Picard(tol=1e-12, max_iter=steps), backward="unrolled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 20 steps do not converge
        (cut,) = torch.autograd.grad((unrolled((W_z, injection), problem.z0()) * weights).sum(),
                                     W_z)
    return ((cut - exact).norm() / exact.norm()).item()
