r"""The quantities of the convergence theory of deep equilibrium linear models.

Conventions (used by every function here):

* Features as COLUMNS: Φ = [φ(x_1) … φ(x_n)] ∈ ℝ^{m×n} and targets Y ∈ ℝ^{m_y×n}. The
  library's tensors hold samples as rows, so for a model ``Phi = model.features(X).T``
  (with a ``width``, Φ = φ(X)ᵀ = RXᵀ; without one, Φ = Xᵀ) and ``Y = Y_rows.T``.
* The loss is a SUM over samples: L(A, B) = ℒ(BU) with ℒ(W) = Σ_i ℓ(Wφ(x_i), y_i)
  (torch's default mean would rescale the PL constant and time by n).
* vec is ROW-MAJOR: vec(W) stacks the rows of W (``W.reshape(-1)``), so
  vec(XYZ) = (X ⊗ Zᵀ) vec(Y). In this convention the B-channel of the preconditioner is
  I_{m_y} ⊗ UᵀU and the Hessian of the square loss is 2 I_{m_y} ⊗ ΦΦᵀ.
* Singular values are written s_min(·), s_max(·); σ(A) is the weight nonlinearity.

σ(A), S, U = (I − S)⁻¹, W = BU and the gradients ∂L/∂A, ∂L/∂B are the formulas of
:mod:`deqlib.functional`; they can also be reached from here (``theory.end_to_end`` is
``functional.end_to_end``), so that a chapter imports one module.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .functional import (
    LOSSES,
    check_constants,
    check_parameters,
    delm_gradients,
    end_to_end,
    equilibrium_matrix,
    sigma,
)
from .validate import positive_real

__all__ = [
    "shallow_loss",
    "shallow_gradient",
    "shallow_hessian",
    "square_loss",
    "optimum_square_loss",
    "optimum_cross_entropy",
    "pl_constant_square",
    "s_min_U_squared",
    "jacobian",
    "preconditioner",
    "FlowRecord",
    "gradient_flow",
    "linear_gradient_flow",
    "delm_gradient_descent",
    "solve_trust_region",
    "TrustRegionCheck",
    "trust_region_check",
]

# re-exported from deqlib.functional (documented there): a chapter needs only `theory`
_FROM_FUNCTIONAL = (LOSSES, sigma, equilibrium_matrix, end_to_end, delm_gradients)


def _check_finite(name: str, t: Tensor) -> None:
    bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or Inf value(s); the quantities of the "
                         "theorems are defined for finite data only: clean or drop them")


def _check_data(Phi: Tensor, Y: Tensor, *, m: int | None = None, m_y: int | None = None) -> None:
    """Φ (m, n) and Y (m_y, n), features and targets as columns."""
    for name, t in (("Phi", Phi), ("Y", Y)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a matrix with one column per sample; got {got}")
    for name, t in (("Phi", Phi), ("Y", Y)):
        _check_finite(name, t)
    if Phi.shape[1] != Y.shape[1]:
        raise ValueError(
            f"Phi (m×n) and Y (m_y×n) must have one column per sample each; got "
            f"Phi {tuple(Phi.shape)} and Y {tuple(Y.shape)} (rows as samples? "
            f"pass the transposes)"
        )
    if m is not None and Phi.shape[0] != m:
        raise ValueError(
            f"Phi must have m = {m} rows (one per feature) to fit the weights; got "
            f"Phi {tuple(Phi.shape)} (rows as samples? pass Phi = features.T)"
        )
    if m_y is not None and Y.shape[0] != m_y:
        raise ValueError(
            f"Y must have m_y = {m_y} rows to fit the weights; got Y {tuple(Y.shape)}"
        )


def _check_step(eta, steps, record_every) -> tuple[float, int, int]:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 < eta < math.inf:
        raise ValueError(
            f"eta, the step of gradient descent, must be a positive number "
            f"(a negative step climbs the loss); got eta={eta!r}"
        )
    for name, value, low in (("steps", steps, 0), ("record_every", record_every, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {name}={value!r}")
    return float(eta), int(steps), int(record_every)


def s_min_U_squared(A: Tensor, gamma: float, delta: float) -> Tensor:
    """s_min(U)², U's smallest singular value squared: ≥ 1 for every A.

    U is symmetric with eigenvalues in [1, 1/(1 − γ)), so s_min(U) = λ_min(U) ≥ 1.
    """
    return torch.linalg.svdvals(equilibrium_matrix(A, gamma, delta)).min() ** 2


def square_loss(W: Tensor, Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ(W) = ‖WΦ − Y‖_F² (a sum over samples)."""
    return shallow_loss(W, Phi, Y, "square")


def optimum_square_loss(Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ* = min_W ‖WΦ − Y‖_F² = ‖Y(I − Π_Φ)‖_F², Π_Φ the projector on Φ's row space.

    With Φ = φ(X)ᵀ this is the least-squares optimum on the features (any width).
    """
    _check_data(Phi, Y)
    W_star = torch.linalg.lstsq(Phi.T, Y.T).solution.T
    return square_loss(W_star, Phi, Y)


def pl_constant_square(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    """μ = 2 λ⁺_min(ΦΦᵀ) for ℒ(W) = ‖WΦ − Y‖_F²: ‖∇ℒ‖² ≥ 2μ(ℒ − ℒ*).

    λ⁺_min is the smallest eigenvalue above ``rtol`` · λ_max (default: m · eps).
    """
    if not isinstance(Phi, Tensor) or Phi.dim() != 2 or Phi.numel() == 0:
        got = tuple(Phi.shape) if isinstance(Phi, Tensor) else type(Phi).__name__
        raise ValueError(f"Phi must be a non-empty matrix, features as columns; got {got}")
    _check_finite("Phi", Phi)
    eig = torch.linalg.eigvalsh(Phi @ Phi.T)
    rtol = Phi.shape[0] * torch.finfo(Phi.dtype).eps if rtol is None else rtol
    positive = eig[eig > rtol * eig.max()]
    if positive.numel() == 0:
        raise ValueError("Phi is zero (to rounding): ΦΦᵀ has no positive eigenvalue, so no PL "
                         "constant exists (every W gives the same loss)")
    return 2 * positive.min()


# --- the shallow objective


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got loss={loss!r}")


def _check_shallow(W: Tensor, Phi: Tensor, Y: Tensor, loss: str) -> None:
    _check_loss(loss)
    _check_data(Phi, Y)
    if not isinstance(W, Tensor) or W.dim() != 2 or W.shape != (Y.shape[0], Phi.shape[0]):
        got = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise ValueError(
            f"shapes do not fit: W must be (m_y, m) = ({Y.shape[0]}, {Phi.shape[0]}) "
            f"for Φ {tuple(Phi.shape)} (m×n) and Y {tuple(Y.shape)} (m_y×n); "
            f"got W {got}"
        )


def shallow_loss(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """ℒ(W) = Σ_i ℓ(Wφ(x_i), y_i): ‖WΦ − Y‖_F² or softmax cross-entropy (Y one-hot columns)."""
    _check_shallow(W, Phi, Y, loss)
    Q = W @ Phi
    if loss == "square":
        return (Q - Y).pow(2).sum()
    return -(Y * torch.log_softmax(Q, dim=0)).sum()


def shallow_gradient(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """G = ∇ℒ(W) = RΦᵀ, R = 2(WΦ − Y) (square) or softmax(WΦ) − Y (cross-entropy)."""
    _check_shallow(W, Phi, Y, loss)
    Q = W @ Phi
    R = 2 * (Q - Y) if loss == "square" else torch.softmax(Q, dim=0) - Y
    return R @ Phi.T


def shallow_hessian(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """∇²ℒ(W) as a dense (m_y·m)×(m_y·m) matrix in the row-major vec of W.

    Square loss: the constant 2 (I_{m_y} ⊗ ΦΦᵀ). Cross-entropy:
    Σ_j (diag(p_j) − p_j p_jᵀ) ⊗ φ_j φ_jᵀ with p_j = softmax(Wφ_j).
    """
    _check_shallow(W, Phi, Y, loss)
    m_y, m = W.shape
    if loss == "square":
        return torch.kron(torch.eye(m_y, dtype=W.dtype, device=W.device), 2 * Phi @ Phi.T)
    p = torch.softmax(W @ Phi, dim=0).T  # (n, m_y)
    D = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, m_y, m_y)
    return torch.einsum("jab,ij,kj->aibk", D, Phi, Phi).reshape(m_y * m, m_y * m)


def optimum_cross_entropy(
    Phi: Tensor, Y: Tensor, *, tol: float = 1e-12, max_iter: int = 200
) -> Tensor:
    """ℒ* = min_W Σ_i CE(Wφ(x_i), y_i), by Newton's method with a line search (float64).

    The minimum is attained only on non-separable data; on (linearly) separable data the
    infimum 0 is approached as ‖W‖ → ∞ and this raises ValueError.
    """
    _check_data(Phi, Y)
    m_y, m = Y.shape[0], Phi.shape[0]
    W = torch.zeros(m_y, m, dtype=Phi.dtype, device=Phi.device)
    value = shallow_loss(W, Phi, Y, "cross_entropy")
    for _ in range(max_iter):
        g = shallow_gradient(W, Phi, Y, "cross_entropy").reshape(-1)
        if value.item() < 1e-6 * Phi.shape[1]:
            break  # ℒ > 0 for every finite W: a value near 0 means ‖W‖ runs off to infinity
        if g.norm() <= tol * max(1.0, value.item()):
            return value
        H = shallow_hessian(W, Phi, Y, "cross_entropy")
        step = -(torch.linalg.pinv(H, hermitian=True) @ g)  # H is singular: softmax's shift
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
    raise ValueError(
        "cross-entropy did not reach a minimiser: the data look linearly separable, "
        "where the infimum is not attained (use overlapping classes or label noise)"
    )


# --- the induced dynamics of W


def jacobian(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """J = ∂vec(W)/∂(vec A, vec B), dense (m_y·m) × (m² + m_y·m), row-major vec.

    Row k is the gradient of W's k-th entry, i.e. :func:`~deqlib.functional.delm_gradients`
    with G = E_k (the k-th unit matrix), for all k at once. For small m and m_y only.
    """
    check_parameters(A, B)
    m_y, m = B.shape
    E = torch.eye(m_y * m, dtype=A.dtype, device=A.device).reshape(-1, m_y, m)
    J_A, J_B = delm_gradients(A, B, E, gamma, delta)
    return torch.cat([J_A.reshape(m_y * m, -1), J_B.reshape(m_y * m, -1)], dim=1)


def preconditioner(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """P = JJᵀ with J = ∂vec(W)/∂(vec A, vec B) (:func:`jacobian`), dense (m_y·m)×(m_y·m).

    Gradient flow on (A, B) moves W by d vec(W)/dt = −P vec(∇ℒ(W)). The B-channel of P is
    I_{m_y} ⊗ UᵀU ⪰ I (row-major vec), the A-channel J_A J_Aᵀ is PSD, so P ⪰ I: the
    implicit model runs preconditioned gradient flow on the shallow objective.

    When m < m_y, λ_min(P) = s_min(U)² exactly: rank B ≤ m < m_y gives v ≠ 0 with Bᵀv = 0;
    with u the bottom eigenvector of U, V = vuᵀ makes M = γUᵀBᵀVUᵀ = 0, so the A-channel
    vanishes on vec(V) while the B-channel maps it to s_min(U)² vec(V).
    """
    J = jacobian(A, B, gamma, delta)
    return J @ J.T


@dataclass
class FlowRecord:
    """A gradient-flow run, recorded at ``t`` (lists of floats, one entry per record).

    ``gap`` is L − ℒ*; ``grad_W_sq`` is ‖∇ℒ(W_t)‖² (so ``grad_W_sq / (2 gap)`` measures the
    PL constant along the run); ``bound`` is (L_0 − ℒ*)·exp(−2μ ∫₀ᵗ λ_min(P_s) ds);
    ``bound_s_min`` uses s_min(U_s)² ≤ λ_min(P_s) instead; ``bound_one`` uses 1 ≤ s_min(U)².
    """

    t: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    gap: list = field(default_factory=list)
    lam_min_P: list = field(default_factory=list)
    s_min_U_sq: list = field(default_factory=list)
    grad_A_sq: list = field(default_factory=list)
    grad_B_sq: list = field(default_factory=list)
    grad_W_sq: list = field(default_factory=list)
    bound: list = field(default_factory=list)
    bound_s_min: list = field(default_factory=list)
    bound_one: list = field(default_factory=list)
    optimum: float = float("nan")
    mu: float = float("nan")
    A: Tensor | None = None
    B: Tensor | None = None


def _check_run(A0: Tensor, B0: Tensor, Phi: Tensor, Y: Tensor, gamma, delta, loss: str):
    gamma, delta = check_constants(gamma, delta)
    _check_loss(loss)
    check_parameters(A0, B0)
    _check_data(Phi, Y, m=A0.shape[0], m_y=B0.shape[0])
    if Phi.dtype != A0.dtype or Y.dtype != A0.dtype:
        raise TypeError(
            f"A0, B0, Phi and Y must share one dtype; got A0 {A0.dtype}, "
            f"Phi {Phi.dtype}, Y {Y.dtype}"
        )
    return gamma, delta


def gradient_flow(
    A0: Tensor,
    B0: Tensor,
    Phi: Tensor,
    Y: Tensor,
    *,
    gamma: float = 0.8,
    delta: float = 1e-6,
    eta: float = 1e-3,
    steps: int = 1000,
    loss: str = "square",
    optimum: float | None = None,
    mu: float | None = None,
    record_every: int = 10,
) -> FlowRecord:
    """Gradient flow on L(A, B) = ℒ(BU), approximated by gradient descent with a small step.

    Time t = η·k after k steps; ∫λ_min(P_t) dt is the left Riemann sum η Σ_j λ_min(P_{t_j}),
    with P computed densely at every step (small m, m_y only). Use float64: the bound
    holds with margins as thin as 0.9987, which float32 cannot resolve.

    Args:
        A0, B0: the start (m×m, m_y×m).
        Phi: m×n features as columns (``model.features(X).T``); Y: m_y×n targets (one-hot
            for cross-entropy).
        eta: the step η > 0; steps: the number of steps (≥ 0).
        optimum: ℒ*; default: :func:`optimum_square_loss` or :func:`optimum_cross_entropy`.
        mu: the PL constant; default :func:`pl_constant_square` for the square loss (for
            cross-entropy it must be given: it is an assumption there).
        record_every: keep every k-th step (the integral uses all of them).
    Returns:
        :class:`FlowRecord`, with the final A and B.
    """
    gamma, delta = _check_run(A0, B0, Phi, Y, gamma, delta, loss)
    eta, steps, record_every = _check_step(eta, steps, record_every)
    if Phi.dtype != torch.float64:
        raise ValueError(
            f"gradient_flow needs float64 (the bound's margins are below float32's "
            f"resolution); got {Phi.dtype}"
        )
    if mu is None:
        if loss != "square":
            raise ValueError("for cross-entropy the PL constant mu is an assumption: pass mu=...")
        mu = pl_constant_square(Phi).item()
    if optimum is None:
        optimum = (
            optimum_square_loss(Phi, Y) if loss == "square" else optimum_cross_entropy(Phi, Y)
        ).item()
    A, B = A0.detach().clone(), B0.detach().clone()
    rec = FlowRecord(optimum=optimum, mu=mu)
    integral = integral_s_min = 0.0
    gap0 = None
    for k in range(steps + 1):
        W = end_to_end(A, B, gamma, delta)
        L = shallow_loss(W, Phi, Y, loss)
        # the gradient lemma's closed forms (tested against autograd), cheaper than autograd
        G = shallow_gradient(W, Phi, Y, loss)
        gA, gB = delm_gradients(A, B, G, gamma, delta)
        lam = torch.linalg.eigvalsh(preconditioner(A, B, gamma, delta))[0].item()
        smin = s_min_U_squared(A, gamma, delta).item()
        gap = L.item() - optimum
        if not math.isfinite(gap):
            raise FloatingPointError(
                f"the loss became {L.item()} at step {k} (t = {eta * k:g}) with eta={eta:g}: the "
                "step is above gradient descent's stability limit, so the steps do not follow "
                "the gradient flow; take a smaller eta")
        gap0 = gap if gap0 is None else gap0
        if k % record_every == 0 or k == steps:
            t = eta * k
            rec.t.append(t)
            rec.loss.append(L.item())
            rec.gap.append(gap)
            rec.lam_min_P.append(lam)
            rec.s_min_U_sq.append(smin)
            rec.grad_A_sq.append(gA.pow(2).sum().item())
            rec.grad_B_sq.append(gB.pow(2).sum().item())
            rec.grad_W_sq.append(G.pow(2).sum().item())
            rec.bound.append(gap0 * math.exp(-2 * mu * integral))
            rec.bound_s_min.append(gap0 * math.exp(-2 * mu * integral_s_min))
            rec.bound_one.append(gap0 * math.exp(-2 * mu * t))
        if k == steps:
            break
        integral += eta * lam
        integral_s_min += eta * smin
        A = A - eta * gA
        B = B - eta * gB
    rec.A, rec.B = A, B
    if max(rec.loss) > rec.loss[0] + 1e-3 * abs(rec.loss[0]):
        # gradient flow never increases the loss; steps that do are not following it
        warnings.warn(
            f"the loss rose from {rec.loss[0]:.4g} to {max(rec.loss):.4g} along the run with "
            f"eta={eta:g}: the step is too large for gradient descent to follow the gradient "
            "flow, and the flow's bound does not describe these steps; take a smaller eta",
            RuntimeWarning, stacklevel=2)
    return rec


def linear_gradient_flow(
    W0: Tensor,
    Phi: Tensor,
    Y: Tensor,
    *,
    eta: float = 1e-3,
    steps: int = 1000,
    loss: str = "square",
    record_every: int = 10,
) -> tuple[list, list]:
    """Gradient descent with step η on the linear model's ℒ(W) from W0: (times, losses)."""
    _check_shallow(W0, Phi, Y, loss)
    eta, steps, record_every = _check_step(eta, steps, record_every)
    W = W0.clone()
    times, losses = [], []
    for k in range(steps + 1):
        if k % record_every == 0 or k == steps:
            times.append(eta * k)
            losses.append(shallow_loss(W, Phi, Y, loss).item())
        W = W - eta * shallow_gradient(W, Phi, Y, loss)
    return times, losses


def delm_gradient_descent(
    A0: Tensor,
    B0: Tensor,
    Phi: Tensor,
    Y: Tensor,
    *,
    gamma: float = 0.8,
    delta: float = 1e-6,
    eta: float = 1e-3,
    steps: int = 1000,
    loss: str = "square",
    record_every: int = 10,
) -> tuple[Tensor, Tensor, list, list]:
    """Plain gradient descent on L(A, B) = ℒ(BU) with the closed-form gradients (any size).

    Phi holds the features as columns (``model.features(X).T``). No P_t is formed.

    Returns:
        The final A and B, and the recorded times η·k and losses.
    """
    gamma, delta = _check_run(A0, B0, Phi, Y, gamma, delta, loss)
    eta, steps, record_every = _check_step(eta, steps, record_every)
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


# --- the trust-region Newton relation


def solve_trust_region(
    g: Tensor, H: Tensor, Q: Tensor, radius: float, *, iters: int = 200
) -> tuple[Tensor, float]:
    """Solve min_v ⟨g, v⟩ + ½vᵀHv subject to ‖v‖_Q = √(vᵀQv) ≤ radius, from scratch.

    Independent of the DEQ: with Q = LLᵀ and w = Lᵀv it becomes a Euclidean trust-region
    problem with H̃ = L⁻¹HL⁻ᵀ, g̃ = L⁻¹g. Its solution is w(λ) = −(H̃ + λI)⁻¹g̃ with the
    multiplier λ ≥ max(0, −λ_min(H̃)) found by bisection on ‖w(λ)‖ = radius (or λ = 0 when
    the Newton step lies inside). The "hard case" is not handled (it has measure zero).

    Args:
        g: (d,); H: (d, d) symmetric; Q: (d, d) symmetric positive definite.
        radius: Δ > 0.
        iters: bisection steps (≥ 1).
    Returns:
        A tuple of the minimiser v and its KKT multiplier λ.
    """
    radius = positive_real("radius", radius, "the trust region is the ellipsoid ‖v‖_Q ≤ radius")
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1; got iters={iters!r}")
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
    if lo == 0.0 and evals[0] > 0 and norm_w(0.0) <= radius:
        lam = 0.0
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
    """The model's step against the trust-region Newton step of the shallow model."""

    model_step: Tensor  # ε · d vec(W)/dt = −ε P ∇ℒ
    trust_region_step: Tensor
    multiplier: float  # the KKT multiplier found by the independent solve (theory: 1)
    eps: float
    radius: float
    q_min_eig: float  # λ_min(Q): Q must be positive definite
    kkt_residual: float  # ‖(H + Q) v + ∇ℒ‖ / ‖∇ℒ‖ at the model's step

    @property
    def relative_difference(self) -> float:
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
    """
    if not (isinstance(eps_fraction, numbers.Real) and 0 < eps_fraction < 1):
        raise ValueError(
            f"eps_fraction must lie in (0, 1) so that Q is positive definite; got {eps_fraction!r}"
        )
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
