r"""The solvers written plainly: out of place, so that autograd can run through every step.

A solver object runs these when a graph through the iterations is needed (grad enabled and
an f whose output requires grad: unrolled backprop), and its in-place iteration otherwise.
Both compute the same iterates, bit for bit (``tests/test_solvers.py``): the fast paths are
implementations of these, with buffers allocated once and fused operations, not other
algorithms. Each function takes the solver object (its options), f as the solvers call it
(``f(z, step)``, checked), the stopping rule, the flat start ``z`` of shape (batch, n),
``fz = f(z)`` and its residual ρ, and returns ``(z, f(z), ρ, steps, status)``.

Picard's step writes nothing in place, so :class:`~deqlib.solvers.Picard` has one loop for
both; it is z ← f(z).
"""

from __future__ import annotations

import math

import torch

norm, vecdot = torch.linalg.vector_norm, torch.linalg.vecdot


def anderson(solver, f, rule, z, fz, rho):
    """Anderson acceleration (:class:`~deqlib.solvers.Anderson`), mixing every ``every``
    steps: weights α with Σα = 1 minimising ‖Σ α_i g_i‖², from a bordered system."""
    p, every, beta, lam = solver.memory, solver.every, solver.beta, solver.lam
    (b, d), rel = z.shape, solver.stop == "rel"
    F = z.new_zeros(b, p, d)                      # slot i holds f(z_i) ...
    G = z.new_zeros(b, p, d)                      # ... and g_i = f(z_i) − z_i
    eye = torch.eye(p, dtype=z.dtype, device=z.device)
    H = eye.expand(b, p, p)                       # unused slots: H = I, border 0, so α = 0
    floor = math.sqrt(torch.finfo(z.dtype).tiny)  # keeps H regular when a residual is 0
    rhs = z.new_zeros(p + 1, 1)
    rhs[p] = 1                                    # [H 1; 1ᵀ 0] [α; μ] = [0; 1]
    k = 1
    while True:
        slot = (k - 1) % p
        F, G = F.clone(), G.clone()               # out of place: the graph keeps the old
        F[:, slot], G[:, slot] = fz, fz - z
        if k > 1:
            a, r = norm(torch.stack((F[:, slot], G[:, slot])).detach(), dim=2)
            rho = rule.value(r, a if rel else None)
        status = rule.check(rho, k)
        if status or k == solver.max_iter:
            return z, fz, rho, k, status
        if k % every:                             # a fixed-point step
            z = fz
        else:                                     # a mixing step
            # Gram rows of the residuals stored since the last mixing step, scaled by 1/r₀²,
            # each diagonal entry by (1 + λ): the regularisation relative to its own size
            new = torch.tensor([(k - every + t) % p for t in range(every)], device=z.device)
            scale = (1 / rule.r0 ** 2).view(b, 1, 1) * (1 + lam * eye[new])
            rows = torch.addcmul(floor * eye[new], torch.bmm(G[:, new], G.mT), scale)
            H = H.index_copy(1, new, rows).index_copy(2, new, rows.mT)
            # H divided by its largest diagonal entry, per sample: α does not change (the
            # constraint row is homogeneous), but a sample whose residuals have fallen to
            # round-off (H ~ 1e-16) no longer mixes entries of that size with the border's
            # 1s in one LU, which lost every digit in float32 and made the system singular.
            Hn = H / H.diagonal(dim1=1, dim2=2).amax(1).view(b, 1, 1)
            border = (torch.arange(p, device=z.device) < min(k, p)).to(z.dtype).expand(b, 1, p)
            K = torch.cat((torch.cat((Hn, border.mT), 2),
                           torch.cat((border, z.new_zeros(b, 1, 1)), 2)), 1)
            alpha = torch.linalg.solve_ex(K, rhs)[0][:, :p].mT           # (b, 1, p)
            mixed = torch.bmm(alpha, F).view(b, d)
            if beta < 1:   # β Σα f_i + (1 − β) Σα z_i, with z_i = f_i − g_i
                mixed = torch.baddbmm(mixed.unsqueeze(1), alpha, G, alpha=beta - 1).view(b, d)
            # The safeguard: a sample that has met the tolerance is not mixed (its residuals
            # are at round-off, so its system says nothing), and a sample whose weights are
            # not finite takes a fixed-point step instead; neither stops the others.
            keep = torch.isfinite(mixed).all(1, keepdim=True) & (rho > solver.tol).unsqueeze(1)
            z = torch.where(keep, mixed, fz)
        k += 1
        fz = f(z, k)


def broyden(solver, f, rule, z, fz, rho):
    """Broyden's good method (:class:`~deqlib.solvers.Broyden`): H ≈ (∂g/∂z)⁻¹ stored as
    −I + Σ u_i v_iᵀ, rows v_0, −u_0, v_1, −u_1, ... of W; restarted after ``memory`` pairs."""
    m, b, rel = solver.memory, len(z), solver.stop == "rel"
    W = z.new_zeros(b, 0, z.shape[1])
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=z.dtype, device=z.device).view(2, 1, 2)
    g = fz - z
    dz = g                                        # the first step: H = −I, Δz = −H g = g
    k, status = 1, rule.check(rho, 1)
    while not status and k < solver.max_iter:
        z, k = z + dz, k + 1
        fz = f(z, k)
        g_old, g = g, fz - z
        rho = rule.value(norm(g.detach(), dim=1), norm(fz.detach(), dim=1) if rel else None)
        status = rule.check(rho, k)
        if status or k == solver.max_iter:
            break
        if W.shape[1] == 2 * m:                   # restart from H = −I
            W = W[:, :0]
        if W.shape[1] == 0:   # H = −I: H g = −g, v = Hᵀ Δz = −Δz, Δz − H Δg = Δz + Δg
            Hg, v, dg = -g, -dz, g - g_old
            num, den = dz + dg, vecdot(v, dg)
        else:
            # [H g, Hᵀ Δz] = −[g, Δz] − Q W, where Q holds ⟨g, v_i⟩ and ⟨Δz, −u_i⟩ swapped
            T = torch.stack((g, dz), dim=1)
            n = W.shape[1] // 2
            Q = (torch.bmm(T, W.mT).view(b, 2, n, 2).flip(-1) * swap).view(b, 2, 2 * n)
            HT = torch.baddbmm(T, Q, W, beta=-1, alpha=-1)
            Hg, v = HT[:, 0], HT[:, 1]
            # Δz = −H_k g_k, so Δz − H_k Δg = −H_k g and Δzᵀ H_k Δg = ⟨Δz, H_k g⟩ + ‖Δz‖²
            num, den = -Hg, vecdot(dz, Hg) + vecdot(dz, dz)
        # u = (Δz − H Δg) / (Δzᵀ H Δg), and no update (u = 0) where that is 0; a where
        # that keeps 1/0 out of the graph, whose gradient would be NaN
        zero_den = den == 0
        u = num * torch.where(zero_den, 0.0, 1 / torch.where(zero_den, 1.0, den)).unsqueeze(1)
        W = torch.cat((W, torch.stack((v, -u), dim=1)), dim=1)
        dz = -torch.addcmul(Hg, u, vecdot(v, g).unsqueeze(1))   # −H_new g, H_new g = H g + u⟨v, g⟩
        # The safeguard: a sample that has met the tolerance stops moving (its residuals are
        # at round-off, where a secant update divides noise by noise). Its Δz = 0 then gives
        # Δg = 0 and a zero denominator: no update.
        dz = torch.where((rho > solver.tol).unsqueeze(1), dz, 0.0)
    return z, fz, rho, k, status
