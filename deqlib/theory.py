"""The quantities of the convergence theory of deep equilibrium linear models (MATH.md §1–§3).

Conventions of the theory (column-major, as in the paper): Φ ∈ R^{m×n} holds the
features as columns, Y ∈ R^{m_y×n} the targets; W = B U; the loss is the SUM over
samples, L(A, B) = ℒ(BU) with ℒ(W) = Σ_i ℓ(W φ(x_i), y_i). Rows-as-samples tensors
from :mod:`deqlib.data` are ``X = Φᵀ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "sigma", "equilibrium_matrix", "end_to_end", "delm_gradients", "shallow_loss", "shallow_gradient",
    "shallow_hessian", "square_loss", "optimum_square_loss", "optimum_cross_entropy",
    "pl_constant_square", "sigma_min_U_squared", "preconditioner", "FlowRecord", "gradient_flow",
    "linear_gradient_flow", "delm_gradient_descent", "solve_trust_region", "TrustRegionCheck", "trust_region_check",
]

LOSSES = ("square", "cross_entropy")


def _check_gamma_delta(gamma: float, delta: float) -> None:
    if not (0 < gamma < 1):
        raise ValueError(f"gamma must lie in (0, 1) so that the equilibrium exists; got gamma={gamma!r}")
    if not (delta > 0):
        raise ValueError(f"delta must be positive; got delta={delta!r}")


def sigma(A: Tensor, delta: float) -> Tensor:
    """σ(A) = AᵀA / (‖AᵀA‖_F + δ)."""
    C = A.T @ A
    return C / (torch.linalg.matrix_norm(C) + delta)


def equilibrium_matrix(A: Tensor, gamma: float, delta: float) -> Tensor:
    """U = (I − γσ(A))⁻¹, the map from φ(x) to the equilibrium z* = U φ(x)."""
    _check_gamma_delta(gamma, delta)
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.inv(eye - gamma * sigma(A, delta))


def sigma_min_U_squared(A: Tensor, gamma: float, delta: float) -> Tensor:
    """σ_min(U)², which is ≥ 1 for every A (U's eigenvalues lie in [1, 1/(1 − γ)))."""
    return torch.linalg.svdvals(equilibrium_matrix(A, gamma, delta)).min() ** 2


def square_loss(W: Tensor, Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ(W) = ‖WΦ − Y‖_F² (a sum over samples)."""
    return (W @ Phi - Y).pow(2).sum()


def optimum_square_loss(Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ* = min_W ‖WΦ − Y‖_F² = ‖Y(I − Π_Φ)‖_F², Π_Φ the projector on Φ's row space."""
    W_star = torch.linalg.lstsq(Phi.T, Y.T).solution.T
    return square_loss(W_star, Phi, Y)


def pl_constant_square(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    """μ = 2 λ⁺_min(ΦΦᵀ) for ℒ(W) = ‖WΦ − Y‖_F²: ‖∇ℒ‖² ≥ 2μ(ℒ − ℒ*).

    λ⁺_min is the smallest eigenvalue above ``rtol`` · λ_max (default: m · eps).
    """
    eig = torch.linalg.eigvalsh(Phi @ Phi.T)
    rtol = Phi.shape[0] * torch.finfo(Phi.dtype).eps if rtol is None else rtol
    return 2 * eig[eig > rtol * eig.max()].min()


def delm_gradients(A: Tensor, B: Tensor, G: Tensor, gamma: float, delta: float) -> tuple[Tensor, Tensor]:
    """∂L/∂A and ∂L/∂B of L(A, B) = ℒ(BU), given G = ∇ℒ(W) at W = BU (MATH.md §2).

        ∂L/∂B = G Uᵀ,
        M = γ Uᵀ Bᵀ G Uᵀ                       (= ∂L/∂σ: the adjoint of the equilibrium),
        ∂L/∂A = A (K + Kᵀ),   K = M/(N + δ) − ⟨M, C⟩/(N (N + δ)²) · C,

    with C = AᵀA and N = ‖C‖_F. At A = 0 both terms of K vanish (the second is 0/0
    and is taken as 0), so ∂L/∂A = 0 there.

    Args:
        A: (m, m); B: (m_y, m); G: (m_y, m).
    Returns:
        (∂L/∂A, ∂L/∂B).
    """
    _check_gamma_delta(gamma, delta)
    U = equilibrium_matrix(A, gamma, delta)
    grad_B = G @ U.T
    M = gamma * U.T @ B.T @ G @ U.T
    C = A.T @ A
    N = torch.linalg.matrix_norm(C)
    K = M / (N + delta)
    if N > 0:
        K = K - ((M * C).sum() / (N * (N + delta) ** 2)) * C
    return A @ (K + K.T), grad_B


# ----------------------------------------------------------------------------- the shallow objective


def end_to_end(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """W = B U = B (I − γσ(A))⁻¹, differentiable in A and B (a solve, no explicit inverse)."""
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye - gamma * sigma(A, delta), B.T).T    # U symmetric: (U Bᵀ)ᵀ


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got loss={loss!r}")


def shallow_loss(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """ℒ(W) = Σ_i ℓ(W φ(x_i), y_i): ‖WΦ − Y‖_F² or softmax cross-entropy (Y one-hot columns)."""
    _check_loss(loss)
    if W.shape[1] != Phi.shape[0] or W.shape[0] != Y.shape[0] or Phi.shape[1] != Y.shape[1]:
        raise ValueError(f"shapes do not fit: W {tuple(W.shape)}, Φ {tuple(Phi.shape)} (m×n), "
                         f"Y {tuple(Y.shape)} (m_y×n)")
    Q = W @ Phi
    if loss == "square":
        return (Q - Y).pow(2).sum()
    return -(Y * torch.log_softmax(Q, dim=0)).sum()


def shallow_gradient(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """G = ∇ℒ(W) = R Φᵀ, R = 2(WΦ − Y) (square) or softmax(WΦ) − Y (cross-entropy)."""
    _check_loss(loss)
    Q = W @ Phi
    R = 2 * (Q - Y) if loss == "square" else torch.softmax(Q, dim=0) - Y
    return R @ Phi.T


def shallow_hessian(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """∇²ℒ(W) as a dense (m_y·m)×(m_y·m) matrix in the row-major vec of W.

    Square loss: the constant 2 (I_{m_y} ⊗ ΦΦᵀ). Cross-entropy:
    Σ_j (diag(p_j) − p_j p_jᵀ) ⊗ φ_j φ_jᵀ with p_j = softmax(W φ_j).
    """
    _check_loss(loss)
    m_y, m = W.shape
    if loss == "square":
        return torch.kron(torch.eye(m_y, dtype=W.dtype, device=W.device), 2 * Phi @ Phi.T)
    # Σ_j (diag(p_j) − p_j p_jᵀ) ⊗ φ_j φ_jᵀ with p_j = softmax(W φ_j)
    p = torch.softmax(W @ Phi, dim=0).T                                   # (n, m_y)
    D = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]               # (n, m_y, m_y)
    return torch.einsum("jab,ij,kj->aibk", D, Phi, Phi).reshape(m_y * m, m_y * m)


def optimum_cross_entropy(Phi: Tensor, Y: Tensor, *, tol: float = 1e-12, max_iter: int = 200) -> Tensor:
    """ℒ* = min_W Σ_i CE(W φ(x_i), y_i), by Newton's method with a line search (float64).

    The minimum is attained only on non-separable data; on (linearly) separable data the
    infimum 0 is approached as ‖W‖ → ∞ and this raises ValueError.
    """
    m_y, m = Y.shape[0], Phi.shape[0]
    W = torch.zeros(m_y, m, dtype=Phi.dtype, device=Phi.device)
    value = shallow_loss(W, Phi, Y, "cross_entropy")
    for _ in range(max_iter):
        g = shallow_gradient(W, Phi, Y, "cross_entropy").reshape(-1)
        if value.item() < 1e-6 * Phi.shape[1]:
            break   # ℒ > 0 for every finite W: a value near 0 means ‖W‖ is running off to infinity
        if g.norm() <= tol * max(1.0, value.item()):
            return value
        H = shallow_hessian(W, Phi, Y, "cross_entropy")
        step = -(torch.linalg.pinv(H, hermitian=True) @ g)   # H is singular: softmax's shift invariance
        t = 1.0
        while True:
            trial = W + t * step.reshape(W.shape)
            new = shallow_loss(trial, Phi, Y, "cross_entropy")
            if new <= value + 1e-4 * t * (g @ step) or t < 1e-12:
                break
            t /= 2
        W, value = trial, new
        if W.norm() > 1e6:
            break
    raise ValueError("cross-entropy did not reach a minimiser: the data look linearly separable, "
                     "where the infimum is not attained (use overlapping classes or label noise)")


# ----------------------------------------------------------------------------- the induced dynamics of W


def preconditioner(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """P = J Jᵀ, J = ∂vec(W)/∂(vec A, vec B), dense (m_y·m)×(m_y·m), row-major vec.

    Gradient flow on (A, B) moves W by d vec(W)/dt = −P vec(∇ℒ(W)). The B-part of P is
    I_{m_y} ⊗ UᵀU ⪰ I (row-major), so P ⪰ I: the implicit model runs preconditioned
    gradient flow on the shallow objective. For small m and m_y only.
    """
    _check_gamma_delta(gamma, delta)
    m_y, m = B.shape
    U = equilibrium_matrix(A, gamma, delta)
    UtU = U.T @ U
    P_B = torch.kron(torch.eye(m_y, dtype=A.dtype, device=A.device), UtU)
    # Row k of J_A is ∂W_k/∂A, i.e. delm_gradients with G = E_k (the k-th unit matrix),
    # computed for all k at once: M_k = γ Uᵀ Bᵀ E_k Uᵀ, ∂W_k/∂A = A(K_k + K_kᵀ).
    E = torch.eye(m_y * m, dtype=A.dtype, device=A.device).reshape(-1, m_y, m)
    M = gamma * U.T @ B.T @ E @ U.T                                  # (k, m, m)
    C = A.T @ A
    N = torch.linalg.matrix_norm(C)
    K = M / (N + delta)
    if N > 0:
        K = K - ((M * C).sum(dim=(1, 2)) / (N * (N + delta) ** 2))[:, None, None] * C
    J_A = (A @ (K + K.transpose(1, 2))).reshape(m_y * m, m * m)
    return P_B + J_A @ J_A.T


@dataclass
class FlowRecord:
    """A gradient-flow run, recorded at ``t`` (lists of floats, one entry per record).

    ``gap`` is L − ℒ*; ``grad_W_sq`` is ‖∇ℒ(W_t)‖² (so ``grad_W_sq / (2 gap)`` measures
    the PL constant along the run); ``bound`` is (L_0 − ℒ*)·exp(−2μ ∫₀ᵗ λ_min(P_s) ds); ``bound_sigma``
    uses σ_min(U_s)² ≤ λ_min(P_s) instead; ``bound_one`` uses 1 ≤ σ_min(U)².
    """

    t: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    gap: list = field(default_factory=list)
    lam_min_P: list = field(default_factory=list)
    sigma_min_U_sq: list = field(default_factory=list)
    grad_A_sq: list = field(default_factory=list)
    grad_B_sq: list = field(default_factory=list)
    grad_W_sq: list = field(default_factory=list)
    bound: list = field(default_factory=list)
    bound_sigma: list = field(default_factory=list)
    bound_one: list = field(default_factory=list)
    optimum: float = float("nan")
    mu: float = float("nan")
    A: Tensor | None = None
    B: Tensor | None = None


def gradient_flow(A0: Tensor, B0: Tensor, Phi: Tensor, Y: Tensor, *, gamma: float = 0.8, delta: float = 1e-6,
                  eta: float = 1e-3, steps: int = 1000, loss: str = "square", optimum: float | None = None,
                  mu: float | None = None, record_every: int = 10) -> FlowRecord:
    """Gradient flow on L(A, B) = ℒ(BU), approximated by gradient descent with a small step.

    Time t = η·k after k steps; ∫λ_min(P_t) dt is the left Riemann sum η Σ_j λ_min(P_{t_j}),
    with P computed densely at every step (small m, m_y only). Use float64: the bound
    holds with margins as thin as 0.9987, which float32 cannot resolve.

    Args:
        A0, B0: the start (m×m, m_y×m); Phi: m×n features; Y: m_y×n targets (one-hot for CE).
        optimum: ℒ*; default: :func:`optimum_square_loss` or :func:`optimum_cross_entropy`.
        mu: the PL constant; default :func:`pl_constant_square` for the square loss (for
            cross-entropy it must be given: it is an assumption there).
        record_every: keep every k-th step (the integral uses all of them).
    Returns:
        :class:`FlowRecord`, with the final A and B.
    """
    _check_gamma_delta(gamma, delta)
    _check_loss(loss)
    if Phi.dtype != torch.float64:
        raise ValueError(f"gradient_flow needs float64 (the bound's margins are below float32's "
                         f"resolution); got {Phi.dtype}")
    if mu is None:
        if loss != "square":
            raise ValueError("for cross-entropy the PL constant mu is an assumption: pass mu=...")
        mu = pl_constant_square(Phi).item()
    if optimum is None:
        optimum = (optimum_square_loss(Phi, Y) if loss == "square" else optimum_cross_entropy(Phi, Y)).item()
    A, B = A0.detach().clone(), B0.detach().clone()
    rec = FlowRecord(optimum=optimum, mu=mu)
    integral = integral_sigma = 0.0
    gap0 = None
    for k in range(steps + 1):
        W = end_to_end(A, B, gamma, delta)
        L = shallow_loss(W, Phi, Y, loss)
        # the gradient lemma's closed forms (tested against autograd), cheaper than autograd here
        G = shallow_gradient(W, Phi, Y, loss)
        gA, gB = delm_gradients(A, B, G, gamma, delta)
        lam = torch.linalg.eigvalsh(preconditioner(A, B, gamma, delta))[0].item()
        smin = sigma_min_U_squared(A, gamma, delta).item()
        gap = L.item() - optimum
        gap0 = gap if gap0 is None else gap0
        if k % record_every == 0 or k == steps:
            t = eta * k
            rec.t.append(t)
            rec.loss.append(L.item())
            rec.gap.append(gap)
            rec.lam_min_P.append(lam)
            rec.sigma_min_U_sq.append(smin)
            rec.grad_A_sq.append(gA.pow(2).sum().item())
            rec.grad_B_sq.append(gB.pow(2).sum().item())
            rec.grad_W_sq.append(G.pow(2).sum().item())
            rec.bound.append(gap0 * math.exp(-2 * mu * integral))
            rec.bound_sigma.append(gap0 * math.exp(-2 * mu * integral_sigma))
            rec.bound_one.append(gap0 * math.exp(-2 * mu * t))
        if k == steps:
            break
        integral += eta * lam
        integral_sigma += eta * smin
        A = A - eta * gA
        B = B - eta * gB
    rec.A, rec.B = A, B
    return rec


def linear_gradient_flow(W0: Tensor, Phi: Tensor, Y: Tensor, *, eta: float = 1e-3, steps: int = 1000,
                         loss: str = "square", record_every: int = 10) -> tuple[list, list]:
    """Gradient descent with step η on the linear model's ℒ(W) from W0: (times, losses)."""
    W = W0.clone()
    times, losses = [], []
    for k in range(steps + 1):
        if k % record_every == 0 or k == steps:
            times.append(eta * k)
            losses.append(shallow_loss(W, Phi, Y, loss).item())
        W = W - eta * shallow_gradient(W, Phi, Y, loss)
    return times, losses


def delm_gradient_descent(A0: Tensor, B0: Tensor, Phi: Tensor, Y: Tensor, *, gamma: float = 0.8,
                          delta: float = 1e-6, eta: float = 1e-3, steps: int = 1000, loss: str = "square",
                          record_every: int = 10) -> tuple[Tensor, Tensor, list, list]:
    """Plain gradient descent on L(A, B) = ℒ(BU) with the closed-form gradients (no P_t, so any size).

    Returns:
        The final A and B, and the recorded times η·k and losses.
    """
    _check_gamma_delta(gamma, delta)
    _check_loss(loss)
    A, B = A0.detach().clone(), B0.detach().clone()
    times, losses = [], []
    for k in range(steps + 1):
        W = end_to_end(A, B, gamma, delta)
        if k % record_every == 0 or k == steps:
            times.append(eta * k)
            losses.append(shallow_loss(W, Phi, Y, loss).item())
        if k == steps:
            break
        gA, gB = delm_gradients(A, B, shallow_gradient(W, Phi, Y, loss), gamma, delta)
        A, B = A - eta * gA, B - eta * gB
    return A, B, times, losses


# ----------------------------------------------------------------------------- the trust-region Newton relation


def solve_trust_region(g: Tensor, H: Tensor, Q: Tensor, radius: float, *, iters: int = 200) -> tuple[Tensor, float]:
    """Solve min_v ⟨g, v⟩ + ½ vᵀHv subject to ‖v‖_Q = √(vᵀQv) ≤ radius, from scratch.

    Independent of the DEQ: with Q = LLᵀ and w = Lᵀv it becomes a Euclidean trust-region
    problem with H̃ = L⁻¹HL⁻ᵀ, g̃ = L⁻¹g. Its solution is w(λ) = −(H̃ + λI)⁻¹g̃ with the
    multiplier λ ≥ max(0, −λ_min(H̃)) found by bisection on ‖w(λ)‖ = radius (or λ = 0 when
    the Newton step lies inside). The "hard case" is not handled (it has measure zero).

    Returns:
        A tuple of the minimiser v and its KKT multiplier λ.
    """
    L = torch.linalg.cholesky(Q)
    Ht = torch.linalg.solve_triangular(L, torch.linalg.solve_triangular(L, H, upper=False).T, upper=False).T
    gt = torch.linalg.solve_triangular(L, g.reshape(-1, 1), upper=False).reshape(-1)
    evals, V = torch.linalg.eigh((Ht + Ht.T) / 2)
    a = V.T @ gt

    def norm_w(lam: float) -> float:
        return (a / (evals + lam)).norm().item()

    lo = max(0.0, -evals[0].item())
    if lo == 0.0 and evals[0] > 0 and norm_w(0.0) <= radius:
        lam = 0.0
    else:
        lo = lo + 1e-300
        hi = max(1.0, lo * 2)
        while norm_w(hi) > radius:
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
    """The model's step against the trust-region Newton step of the shallow model."""

    model_step: Tensor       # ε · d vec(W)/dt = −ε P ∇ℒ
    trust_region_step: Tensor
    multiplier: float        # the KKT multiplier found by the independent solve (theory: 1)
    eps: float
    radius: float
    q_min_eig: float         # λ_min(Q): Q must be positive definite
    kkt_residual: float      # ‖(H + Q) v + ∇ℒ‖ / ‖∇ℒ‖ at the model's step

    @property
    def relative_difference(self) -> float:
        return ((self.model_step - self.trust_region_step).norm() / self.model_step.norm()).item()


def trust_region_check(A: Tensor, B: Tensor, Phi: Tensor, Y: Tensor, *, gamma: float = 0.8,
                       delta: float = 1e-6, loss: str = "square", eps_fraction: float = 0.5) -> TrustRegionCheck:
    """Check that the DELM's step is a trust-region Newton step of the shallow model (MATH.md §4).

    With P = JJᵀ, H = ∇²ℒ(W), ε = eps_fraction / λ_max(P^{1/2} H P^{1/2}),
    Q = ε⁻¹P⁻¹ − H ≻ 0 and radius Δ = ‖ε d vec(W)/dt‖_Q, the minimiser of
    ⟨∇ℒ, v⟩ + ½vᵀHv over ‖v‖_Q ≤ Δ equals ε d vec(W)/dt = −εP∇ℒ (KKT with multiplier 1).
    The minimiser is computed independently by :func:`solve_trust_region`.
    """
    if not (0 < eps_fraction < 1):
        raise ValueError(f"eps_fraction must lie in (0, 1) so that Q is positive definite; got {eps_fraction!r}")
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
    return TrustRegionCheck(v_model, v_tr, lam, eps, radius, torch.linalg.eigvalsh(Q)[0].item(), kkt.item())
