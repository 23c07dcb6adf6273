"""The deep equilibrium (DEQ) layer and its backward passes.

The implicit function theorem, once. Let z* = f(z*, x; θ) and let J = ∂f/∂z at z*.
If I − J is invertible, z* is locally a differentiable function of (x, θ) and

    ∂z*/∂θ = (I − J)⁻¹ ∂f/∂θ.

For a loss ℓ(z*) with g = ∂ℓ/∂z*, the vector-Jacobian product we need is therefore

    ∂ℓ/∂θ = (∂f/∂θ)ᵀ u,   where u solves the adjoint fixed point   u = Jᵀ u + g.

Jᵀ u is one vector-Jacobian product of f at z*, so u is found by the same
fixed-point solvers as z*, and no iteration of the forward solve is ever stored:
memory is constant in the number of forward iterations.

Backward modes of :class:`DEQ`:

* ``"implicit"``  the adjoint fixed point above (exact up to the solver tolerance);
* ``"unrolled"``  backprop through Picard iterations run with the graph kept (memory
  grows linearly with the number of iterations; for comparison);
* ``"one_step"``  Jacobian-free backprop (Fung et al., 2022): replace (I − J)⁻¹ by I,
  i.e. differentiate one application of f at the detached equilibrium.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .solvers import SolverResult, check_options, solve

__all__ = ["DEQ", "BACKWARD_MODES"]

BACKWARD_MODES = ("implicit", "unrolled", "one_step")


class DEQ(nn.Module):
    r"""An implicit layer: the output is the equilibrium z* = f(z*, x).

    Forward: solve z = f(z, x) without building a graph, then apply f once more at the
    (detached) equilibrium with the graph on, so that gradients reach f's parameters
    and x. Backward: see ``backward`` below and the module docstring.

    Args:
        f: an ``nn.Module`` (or callable) mapping ``(z, x)`` to a tensor of z's shape.
        solver: forward solver, ``"picard"``, ``"anderson"`` or ``"broyden"``.
        backward: ``"implicit"`` (default), ``"unrolled"`` or ``"one_step"``.
        tol, max_iter: forward stopping rule (relative residual by default).
        solver_options: further options for the forward solver (e.g. ``{"memory": 5}``);
            unknown options raise TypeError.
        backward_solver, backward_tol, backward_max_iter, backward_solver_options:
            the same for the adjoint solve; default to the forward's.
        unroll_steps: the number of Picard steps kept in the graph for
            ``backward="unrolled"`` (default ``max_iter``; it stops earlier when converged).

    Shape:
        x: anything ``f`` accepts; ``z0`` (optional start) and the output: ``(batch, ...)``,
        the shape of ``f``'s output. Without ``z0`` the solve starts at zeros of the shape
        of ``f(0, x)``, which requires ``z_shape`` when that cannot be inferred from x;
        pass ``z_shape`` (without batch) to :class:`DEQ` or ``z0`` to ``forward``.

    Attributes:
        last_forward: :class:`~deqlib.solvers.SolverResult` of the last forward solve.
        last_backward: :class:`~deqlib.solvers.SolverResult` of the last adjoint solve
            (``None`` for the other backward modes).
    """

    def __init__(self, f: Callable[[Tensor, Tensor], Tensor], *, solver: str = "anderson",
                 backward: str = "implicit", tol: float = 1e-6, max_iter: int = 100,
                 solver_options: dict | None = None, backward_solver: str | None = None,
                 backward_tol: float | None = None, backward_max_iter: int | None = None,
                 backward_solver_options: dict | None = None, unroll_steps: int | None = None,
                 z_shape: tuple[int, ...] | None = None):
        super().__init__()
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}; got backward={backward!r}")
        self.f = f
        self.solver = solver
        self.backward_mode = backward
        self.forward_options = dict(solver_options or {}, tol=tol, max_iter=max_iter)
        check_options(solver, self.forward_options)
        self.backward_solver = backward_solver or solver
        if backward_solver_options is not None:
            bopts = dict(backward_solver_options)
        elif self.backward_solver == solver:  # same solver: same options by default
            bopts = dict(solver_options or {})
        else:
            bopts = {}
        bopts.update(tol=backward_tol if backward_tol is not None else tol,
                     max_iter=backward_max_iter if backward_max_iter is not None else max_iter)
        check_options(self.backward_solver, bopts)
        self.backward_options = bopts
        if unroll_steps is not None and not (isinstance(unroll_steps, int) and unroll_steps >= 1):
            raise ValueError(f"unroll_steps must be an integer >= 1; got {unroll_steps!r}")
        self.unroll_steps = unroll_steps or max_iter
        self.z_shape = tuple(z_shape) if z_shape is not None else None
        self.last_forward: SolverResult | None = None
        self.last_backward: SolverResult | None = None

    def extra_repr(self) -> str:
        o = self.forward_options
        return (f"solver={self.solver!r}, backward={self.backward_mode!r}, "
                f"tol={o['tol']:g}, max_iter={o['max_iter']}")

    def _start(self, x: Tensor) -> Tensor:
        if self.z_shape is not None:
            return x.new_zeros((x.shape[0], *self.z_shape))
        with torch.no_grad():  # infer the shape of z from one application at z = 0
            try:
                return torch.zeros_like(self.f(torch.zeros_like(x), x))
            except Exception as err:  # noqa: BLE001 - re-raised with advice
                raise ValueError(
                    "DEQ could not infer the shape of z from x (f(0, x) failed); pass "
                    "z_shape=... to DEQ or z0=... to forward") from err

    def forward(self, x: Tensor, z0: Tensor | None = None) -> Tensor:
        z0 = self._start(x) if z0 is None else z0
        self.last_backward = None
        if self.backward_mode == "unrolled":
            return self._forward_unrolled(x, z0)

        with torch.no_grad():
            result = solve(lambda z: self.f(z, x), z0, method=self.solver, **self.forward_options)
        self.last_forward = result
        z_star = result.z.detach()
        # One differentiable application of f at the equilibrium: the gradient of
        # this call with respect to θ and x is (∂f/∂θ)ᵀ(·), as the theorem needs.
        z = self.f(z_star, x)
        if self.backward_mode == "implicit" and z.requires_grad:
            z_in = z_star.clone().requires_grad_()
            f_in = self.f(z_in, x)

            def adjoint(grad: Tensor | None) -> Tensor | None:
                if grad is None:  # no gradient flows into z: nothing to solve
                    return None
                # u = Jᵀ u + g, with Jᵀu a vector-Jacobian product of f at z*.
                def vjp_map(u: Tensor) -> Tensor:
                    return torch.autograd.grad(f_in, z_in, u, retain_graph=True)[0] + grad
                back = solve(vjp_map, grad, method=self.backward_solver, **self.backward_options)
                self.last_backward = back
                return back.z

            z.register_hook(adjoint)
        return z

    def _forward_unrolled(self, x: Tensor, z0: Tensor) -> Tensor:
        opts = dict(self.forward_options)
        opts["max_iter"] = self.unroll_steps
        opts = {k: v for k, v in opts.items() if k in ("tol", "stop", "strict", "max_iter")}
        result = solve(lambda z: self.f(z, x), z0, method="picard", **opts)
        self.last_forward = result
        return result.z
