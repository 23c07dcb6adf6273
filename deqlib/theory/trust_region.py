"""The trust-region Newton relation: the subproblem's solver and the check of the relation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import validate
from ..functional import (
    end_to_end,
)
from ..validate import positive_real
from .dynamics import _check_run, preconditioner
from .objective import _check_finite, shallow_gradient, shallow_hessian

# --- the trust-region Newton relation


def solve_trust_region(
    g: Tensor, H: Tensor, Q: Tensor, radius: float, *, iters: int = 200
) -> tuple[Tensor, float]:
    """Solve min_v ⟨g, v⟩ + ½vᵀHv subject to ‖v‖_Q = √(vᵀQv) ≤ radius, from scratch.

    Independent of the DEQ: with Q = LLᵀ and w = Lᵀv it becomes a Euclidean trust-region
    problem with H̃ = L⁻¹HL⁻ᵀ, g̃ = L⁻¹g. Its solution is w(λ) = −(H̃ + λI)⁻¹g̃ with the
    multiplier λ ≥ max(0, −λ_min(H̃)) found by bisection on ‖w(λ)‖ = radius (or λ = 0 when
    the Newton step lies inside). In the "hard case" (g̃ orthogonal to the eigenvectors of
    λ_min(H̃) ≤ 0, with ‖w(−λ_min)‖ ≤ radius) λ = −λ_min and the step is completed to the
    boundary along a bottom eigenvector (one of the minimisers).

    Args:
        g: the gradient, (d,).
        H: the Hessian, (d, d), symmetric.
        Q: the norm's matrix, (d, d), symmetric positive definite.
        radius: Δ > 0.
        iters: bisection steps (≥ 1).
    Returns:
        A tuple of the minimiser v and its KKT multiplier λ.
    """
    radius = positive_real("radius", radius, "the trust region is the ellipsoid ‖v‖_Q ≤ radius")
    iters = validate.positive_integer("iters", iters, "bisection steps")
    d = g.numel()
    if H.shape != (d, d) or Q.shape != (d, d):
        raise ValueError(
            f"H and Q must be (d, d) = ({d}, {d}) for g of {d} entries; got "
            f"H {tuple(H.shape)}, Q {tuple(Q.shape)}"
        )
    radius = float(radius)
    for name, t in (("g", g), ("H", H), ("Q", Q)):
        _check_finite(name, t)
    L, info = torch.linalg.cholesky_ex(Q)
    if info.item() != 0:
        raise ValueError(
            "Q must be symmetric positive definite (it defines the norm ‖v‖_Q); "
            f"its Cholesky factorisation failed at column {info.item()}"
        )
    Ht = torch.linalg.solve_triangular(
        L, torch.linalg.solve_triangular(L, H, upper=False).T, upper=False
    ).T
    gt = torch.linalg.solve_triangular(L, g.reshape(-1, 1), upper=False).reshape(-1)
    evals, V = torch.linalg.eigh((Ht + Ht.T) / 2)
    a = V.T @ gt

    def norm_w(lam: float) -> float:
        return (a / (evals + lam)).norm().item()

    lo = max(0.0, -evals[0].item())
    scale = max(evals.abs().max().item(), 1e-300)
    bottom = evals - evals[0] <= 1e-12 * scale      # the eigenspace of λ_min(H̃)
    rest = ~bottom
    if lo == 0.0 and evals[0] > 0 and norm_w(0.0) <= radius:
        lam = 0.0
    elif (evals[0] <= 0 and a[bottom].norm() <= 1e-12 * max(a.norm().item(), 1e-300)
          and (a[rest] / (evals[rest] + lo)).norm() <= radius):
        # the hard case: g̃ has no component along the bottom eigenvectors, so ‖w(λ)‖ stays
        # below the radius as λ → −λ_min; the minimiser is w(−λ_min) plus a multiple of a
        # bottom eigenvector that reaches the boundary (it used to come out as 0/0 = NaN)
        lam = lo
        coef = torch.zeros_like(a)
        coef[rest] = -a[rest] / (evals[rest] + lam)
        first = int(bottom.nonzero()[0, 0])
        coef[first] = math.sqrt(max(radius**2 - coef.pow(2).sum().item(), 0.0))
        w = V @ coef
        v = torch.linalg.solve_triangular(L.T, w.reshape(-1, 1), upper=True).reshape(-1)
        return v, lam
    else:
        lo = lo + 1e-300
        hi = max(1.0, lo * 2)
        while norm_w(hi) > radius:  # ‖w(λ)‖ falls like ‖g̃‖/λ: this ends
            hi *= 2
        for _ in range(iters):
            mid = (lo + hi) / 2
            if norm_w(mid) > radius:
                lo = mid
            else:
                hi = mid
        lam = (lo + hi) / 2
    w = -V @ (a / (evals + lam))
    v = torch.linalg.solve_triangular(L.T, w.reshape(-1, 1), upper=True).reshape(-1)
    return v, lam


@dataclass
class TrustRegionCheck:
    """The model's step against the trust-region Newton step of the shallow model.

    Attributes:
        model_step: the DELM's step ε · d vec(W)/dt = −εP vec(∇ℒ(W)), ``(m_y·m,)``.
        trust_region_step: the minimiser of the trust-region subproblem, found independently
            by :func:`solve_trust_region`, ``(m_y·m,)``.
        multiplier: the KKT multiplier that solve found (the theory says 1).
        eps: ε, the scale of the step (see :func:`trust_region_check`).
        radius: Δ = ‖model_step‖_Q, the trust region's radius.
        q_min_eig: λ_min(Q): Q must be positive definite.
        kkt_residual: ‖(H + Q)v + ∇ℒ‖ / ‖∇ℒ‖ at v = ``model_step`` (0 when the model's step
            satisfies the KKT conditions with multiplier 1).
    """

    model_step: Tensor  # ε · d vec(W)/dt = −ε P ∇ℒ
    trust_region_step: Tensor
    multiplier: float  # the KKT multiplier found by the independent solve (theory: 1)
    eps: float
    radius: float
    q_min_eig: float  # λ_min(Q): Q must be positive definite
    kkt_residual: float  # ‖(H + Q) v + ∇ℒ‖ / ‖∇ℒ‖ at the model's step

    @property
    def relative_difference(self) -> float:
        """‖model_step − trust_region_step‖ / ‖model_step‖ (0 when the two steps agree)."""
        return ((self.model_step - self.trust_region_step).norm() / self.model_step.norm()).item()


def trust_region_check(
    A: Tensor,
    B: Tensor,
    Phi: Tensor,
    Y: Tensor,
    *,
    gamma: float = 0.8,
    delta: float = 1e-6,
    loss: str = "square",
    eps_fraction: float = 0.5,
) -> TrustRegionCheck:
    """Check that the DELM's step is a trust-region Newton step of the shallow model.

    With P = JJᵀ, H = ∇²ℒ(W), ε = eps_fraction / λ_max(P^{1/2} H P^{1/2}),
    Q = ε⁻¹P⁻¹ − H ≻ 0 and radius Δ = ‖ε d vec(W)/dt‖_Q, the minimiser of
    ⟨∇ℒ, v⟩ + ½vᵀHv over ‖v‖_Q ≤ Δ equals ε d vec(W)/dt = −εP∇ℒ (KKT with multiplier 1).
    The minimiser is computed independently by :func:`solve_trust_region`.

    Args:
        A: the DELM's parameter A, ``(m, m)``.
        B: the DELM's parameter B, ``(m_y, m)``.
        Phi: the features Φ, ``(m, n)``, as columns.
        Y: the targets, ``(m_y, n)`` (one-hot for cross-entropy).
        gamma: the DELM's γ ∈ (0, 1).
        delta: the DELM's δ > 0.
        loss: ``"square"`` or ``"cross_entropy"``.
        eps_fraction: ε as a fraction of its largest admissible value 1/λ_max(P^{1/2}HP^{1/2}),
            in (0, 1): below 1, Q = ε⁻¹P⁻¹ − H is positive definite.

    Returns:
        :class:`TrustRegionCheck`, with the two steps, ε, Δ, λ_min(Q) and the KKT residual.
    """
    eps_fraction = validate.interval("eps_fraction", eps_fraction, 0, 1,
                                     "so that Q is positive definite", closed=(False, False))
    gamma, delta = _check_run(A, B, Phi, Y, gamma, delta, loss)
    W = end_to_end(A, B, gamma, delta)
    g = shallow_gradient(W, Phi, Y, loss).reshape(-1)
    H = shallow_hessian(W, Phi, Y, loss)
    P = preconditioner(A, B, gamma, delta)
    evals, V = torch.linalg.eigh(P)
    P_half = V @ torch.diag(evals.sqrt()) @ V.T
    eps = eps_fraction / torch.linalg.eigvalsh(P_half @ H @ P_half)[-1].item()
    Q = torch.linalg.inv(P) / eps - H
    Q = (Q + Q.T) / 2
    v_model = -eps * (P @ g)
    radius = torch.sqrt(v_model @ Q @ v_model).item()
    v_tr, lam = solve_trust_region(g, H, Q, radius)
    kkt = ((H + Q) @ v_model + g).norm() / g.norm()
    return TrustRegionCheck(
        v_model, v_tr, lam, eps, radius, torch.linalg.eigvalsh(Q)[0].item(), kkt.item()
    )
