"""Plain fixed-point (Picard) iteration as a solver object."""

from __future__ import annotations

import dataclasses

import torch

from .base import Solver, _checked_options

__all__ = ["Picard"]


@_checked_options
@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Picard(Solver):
    """Find z = f(z) by plain fixed-point (Picard) iteration, z_{k+1} = f(z_k).

    If f is a contraction with factor q < 1 (‖f(a) − f(b)‖ ≤ q‖a − b‖), Banach's theorem
    gives a unique fixed point z* and ‖z_k − z*‖ ≤ q^k ‖z_0 − z*‖. One evaluation of f
    per step, no extra memory.

    Options (keyword only): ``tol``, ``max_iter``, ``stop``, ``strict``, ``check_every``,
    ``stall``, as in :class:`~deqlib.solvers.base.Solver`.

    Example::

        result = Picard(tol=1e-8)(f, z0)        # or deqlib.picard(f, z0, tol=1e-8)
    """

    method = "picard"

    def _fast(self, f, rule, z, fz, rho, graph=False):
        # Picard's step writes nothing in place: the same loop serves with a graph, where
        # only the residuals' norms are taken off it
        norm, rel, k = torch.linalg.vector_norm, self.stop == "rel", 1
        while True:
            status = rule.check(rho, k)
            if status or k == self.max_iter:
                return z, fz, rho, k, status
            z, k = fz, k + 1
            fz = f(z, k)
            g, fd = fz - z, fz
            if graph:
                g, fd = g.detach(), fz.detach()
            rho = rule.value(norm(g, dim=1), norm(fd, dim=1) if rel else None)

    def _reference(self, f, rule, z, fz, rho):
        return self._fast(f, rule, z, fz, rho, graph=True)
