r"""Broyden's method as a solver object: its options and its in-place iteration."""

from __future__ import annotations

import dataclasses

import torch

from .. import validate
from .base import Solver, _checked_options

__all__ = ["Broyden"]


@_checked_options
@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Broyden(Solver):
    r"""Find z = f(z) by Broyden's ("good") quasi-Newton method (Broyden, 1965).

    Solve g(z) = f(z) − z = 0 with the inverse Ψ_k⁻¹ of an estimate Ψ_k of the Jacobian
    ∂g/∂z (chapter 2's letters), per sample, started at Ψ_0⁻¹ = −I (so the first step is a
    fixed-point step), and full steps z_{k+1} = z_k − Ψ_k⁻¹ g_k. After a step Δz with change
    Δg in the residual, the good Broyden update in its Sherman–Morrison form

    .. math::

        \Psi_{k+1}^{-1} = \Psi_k^{-1} + \frac{(\Delta z - \Psi_k^{-1} \Delta g)\,
                             \Delta z^\top \Psi_k^{-1}}{\Delta z^\top \Psi_k^{-1} \Delta g}

    makes Ψ_{k+1}⁻¹ Δg = Δz. Ψ_k⁻¹ is stored as −I + Σ u_i v_iᵀ, the u_i and v_i interleaved
    in one buffer, so that Ψ_k⁻¹ g and Ψ_k⁻ᵀ Δz come from two batched products. A sample with
    Δzᵀ Ψ_k⁻¹ Δg = 0 (e.g. g constant, as for z ↦ z + 1) skips the update. After ``memory``
    updates Ψ⁻¹ restarts from −I: a step costs O(memory · size), and dropping only the oldest
    pair is not a valid inverse update (the later pairs were computed against it).
    No line search.

    Default memory 10, the fastest Broyden setting overall by the performance page's score over
    the pinned reference problems (1.01), though not the fastest on every problem: a step costs
    two batched products with the stored pairs, so a longer memory costs more per step than it
    saves in steps (measurements: ``benchmarks/README.md``).

    The options every solver shares (``tol``, ``max_iter``, ``stop``, ``strict``,
    ``check_every``, ``stall``) are those of :class:`~deqlib.solvers.base.Solver`; its own:

    Args:
        memory: how many rank-one updates to keep before restarting.

    Example::

        result = Broyden(tol=1e-8)(f, z0)        # or deqlib.broyden(f, z0, tol=1e-8)
    """

    memory: int = 10

    method = "broyden"

    def __post_init__(self):
        super().__post_init__()
        self._set("memory", validate.positive_integer("memory", self.memory))

    def _reference(self, f, rule, z, fz, rho):
        from .reference import broyden
        return broyden(self, f, rule, z, fz, rho)

    def _fast(self, f, rule, z, fz, rho):
        """:func:`deqlib.solvers.reference.broyden`, in place, in fewer operations: the
        buffers allocated once, views into them made once, and after a restart the stored
        −u written as H g / (Δzᵀ H Δg), which saves two operations a step."""
        m, tol, rel = self.memory, self.tol, self.stop == "rel"
        norm, vecdot = torch.linalg.vector_norm, torch.linalg.vecdot
        b, d = z.shape

        # W holds v_0, w_0, v_1, w_1, ..., with H = −I − Σ w_i v_iᵀ (w_i = −u_i). With
        # T = [g, Δz], P = T Wᵀ holds ⟨g, v_i⟩ and ⟨Δz, w_i⟩; swapping each pair of
        # coefficients and masking gives Q with Q W = [Σ w_i ⟨v_i, g⟩, Σ v_i ⟨w_i, Δz⟩]:
        # [H g, Hᵀ Δz] = −T − Q W. Since Δz = −H_k g_k, the update needs no H Δg:
        # (Δz − H_k Δg) = −H_k g_{k+1}, and Δzᵀ H_k Δg = ⟨Δz, H_k g_{k+1}⟩ + ‖Δz‖².
        W = z.new_zeros(b, 2 * m, d)
        mask = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=z.dtype,
                            device=z.device).view(2, 1, 2)
        T = [z.new_empty(b, 2, d), z.new_empty(b, 2, d)]   # [g, Δz] of this step and the last
        # Views made once (each indexing of a tensor costs about a µs): g and Δz in T; the
        # stored pairs W[:, :2n], their transposes and the slots of pair n when first needed.
        Tg, Tdz = (T[0][:, 0], T[1][:, 0]), (T[0][:, 1], T[1][:, 1])
        views: list = [None] * m

        def pairs(n: int):
            if views[n] is None:
                Wn = W[:, :2 * n]
                views[n] = (Wn, Wn.mT, W[:, 2 * n], W[:, 2 * n + 1])
            return views[n]

        Tg[1].copy_(fz - z)
        dz = Tdz[0].copy_(Tg[1])                        # the first step: H = −I, Δz = g
        n, k = 0, 1                                     # pairs stored, steps
        zero = z.new_zeros(())
        status = rule.check(rho, k)
        while not status and k < self.max_iter:
            z = z + dz
            k += 1
            fz = f(z, k)
            Tk = T[k % 2]
            g = torch.sub(fz, z, out=Tg[k % 2])
            rho = rule.value(norm(g, dim=1), norm(fz, dim=1) if rel else None)
            status = rule.check(rho, k)
            if status or k == self.max_iter:
                break
            if n == m:                                  # restart from H = −I
                n = 0
            _, _, Wv, Ww = pairs(n)
            if n == 0:
                # H = −I: H g = −g, v = Hᵀ Δz = −Δz, and Δz − H Δg = Δz + Δg
                Hg, v = -g, -dz
                dg = g - Tg[(k - 1) % 2]
                den = vecdot(v, dg)
                inv = torch.nan_to_num(den.reciprocal(), posinf=0.0, neginf=0.0).unsqueeze(1)
                vg = vecdot(v, g).unsqueeze(1)
                u = (dz + dg) * inv
                Wv.copy_(v)
                torch.neg(u, out=Ww)
                dz = torch.neg(torch.addcmul(Hg, u, vg), out=Tdz[(k + 1) % 2])
            else:
                Wn, WnT, _, _ = pairs(n)
                P = torch.bmm(Tk, WnT).view(b, 2, n, 2)
                Q = (P.flip(-1) * mask).view(b, 2, 2 * n)
                Hg, v = torch.baddbmm(Tk, Q, Wn, beta=-1, alpha=-1).unbind(1)
                # vecdot(x, y) is (x * y).sum(-1); keepdim gives the (b, 1) column directly
                den = (dz * Hg).sum(-1, keepdim=True) + (dz * dz).sum(-1, keepdim=True)
                inv = torch.nan_to_num(den.reciprocal(), posinf=0.0, neginf=0.0)
                vg = (v * g).sum(-1, keepdim=True)
                # u = (−H g)·inv, so the stored −u is H g·inv exactly, and H g + u⟨v, g⟩ is
                # H g − (−u)⟨v, g⟩: the same numbers, two operations fewer
                w = torch.mul(Hg, inv, out=Ww)
                Wv.copy_(v)
                dz = torch.neg(torch.addcmul(Hg, w, vg, value=-1), out=Tdz[(k + 1) % 2])
            # the safeguard (see the reference): a converged sample stops moving
            active = (rho > tol).unsqueeze(1)
            dz = torch.where(active, dz, zero, out=Tdz[(k + 1) % 2])
            n += 1
        return z, fz, rho, k, status
