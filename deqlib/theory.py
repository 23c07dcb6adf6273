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
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import validate
from .functional import (
    LOSSES,
    check_constants,
    check_parameters,
    delm_gradients,
    end_to_end,
    equilibrium_matrix,
    sigma,
)
from .solvers import warn_at_caller
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
    "Descent",
    "DescentStep",
    "gradient_descent",
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
    rtol = (Phi.shape[0] * torch.finfo(Phi.dtype).eps if rtol is None
            else validate.nonnegative_real("rtol", rtol, "relative to λ_max"))
    positive = eig[eig > rtol * eig.max()]
    if positive.numel() == 0:
        raise ValueError("Phi is zero (to rounding): ΦΦᵀ has no positive eigenvalue, so no PL "
                         "constant exists (every W gives the same loss)")
    return 2 * positive.min()


# --- the shallow objective


def _check_loss(loss: str) -> None:
    validate.choice("loss", loss, LOSSES)


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
    tol = validate.positive_real("tol", tol, "Newton's stopping rule on ‖∇ℒ‖")
    max_iter = validate.positive_integer("max_iter", max_iter)
    dtype = Phi.dtype
    # in float64 whatever the input: float32's rounding stalls Newton above tol, which used to
    # be reported as separable data
    Phi, Y = Phi.double(), Y.double()
    m_y, m = Y.shape[0], Phi.shape[0]
    W = torch.zeros(m_y, m, dtype=Phi.dtype, device=Phi.device)
    value = shallow_loss(W, Phi, Y, "cross_entropy")
    separable = False
    for _ in range(max_iter):
        g = shallow_gradient(W, Phi, Y, "cross_entropy").reshape(-1)
        if value.item() < 1e-6 * Phi.shape[1]:
            separable = True  # ℒ > 0 for every finite W: a value near 0 means ‖W‖ → ∞
            break
        if g.norm() <= tol * max(1.0, value.item()):
            return value.to(dtype)
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
            separable = True
            break
    if separable:
        raise ValueError(
            "cross-entropy did not reach a minimiser: the data look linearly separable, "
            "where the infimum is not attained (use overlapping classes or label noise)"
        )
    raise ValueError(
        f"Newton's method did not reach tol={tol:g} in max_iter={max_iter} steps (‖∇ℒ‖ = "
        f"{g.norm().item():.3g} at ℒ = {value.item():.6g}, ‖W‖ = {W.norm().item():.3g}, so the "
        "data do not look separable): raise max_iter or tol"
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


@dataclass
class Descent:
    """A run of :func:`gradient_descent`: the final parameters and what was recorded.

    ``step``, ``t`` (= η·k) and ``loss`` (ℒ before step k, and after the last) have one entry
    per recorded step; ``records`` holds, by name, the values ``record`` returned there.
    """

    params: tuple
    W: Tensor
    step: list = field(default_factory=list)
    t: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    records: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DescentStep:
    """What :func:`gradient_descent` passes to ``record`` at step k (before the k-th update).

    ``params`` and ``grads`` are ``(A, B)`` and ``(∂L/∂A, ∂L/∂B)`` for the DELM, ``(W,)`` and
    ``(G,)`` for the linear model; ``W`` is the end-to-end matrix, ``G`` = ∇ℒ(W).
    """

    k: int
    t: float
    W: Tensor
    loss: Tensor
    G: Tensor
    params: tuple
    grads: tuple


def _loss_and_gradient(W: Tensor, Phi: Tensor, Y: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """ℒ(W) and ∇ℒ(W) from one product WΦ (unchecked: the driver checked once)."""
    Q = W @ Phi
    if loss == "square":
        R = Q - Y
        return R.pow(2).sum(), (2 * R) @ Phi.T
    return -(Y * torch.log_softmax(Q, dim=0)).sum(), (torch.softmax(Q, dim=0) - Y) @ Phi.T


def _largest_curvature(M: Tensor, W: Tensor, loss: str, iters: int = 30) -> float:
    """λ_max of the Hessian of V ↦ ℒ(VM) at V = W (M: m×n): exactly for the square loss
    (2 s_max(M)²), from below by power iteration for cross-entropy."""
    if loss == "square":
        return 2 * torch.linalg.eigvalsh(M @ M.T)[-1].item()
    P = torch.softmax(W @ M, dim=0)                           # (m_y, n)
    V = torch.randn(W.shape, generator=torch.Generator().manual_seed(0), dtype=W.dtype)
    V, lam = V.to(W.device), 0.0                               # a fixed start: reproducible
    for _ in range(iters):                                    # Rayleigh quotients ≤ λ_max
        V = V / V.norm()
        Z = V @ M
        HV = (P * Z - P * (P * Z).sum(0, keepdim=True)) @ M.T
        lam, V = (V * HV).sum().item(), HV
        if V.norm() == 0:
            break
    return lam


def gradient_descent(
    start,
    Phi: Tensor,
    Y: Tensor,
    *,
    eta: float,
    steps: int,
    loss: str = "square",
    gamma: float = 0.8,
    delta: float = 1e-6,
    record_every: int = 1,
    record=None,
) -> Descent:
    r"""Gradient descent with step η on the DELM's (A, B), or on the linear model's W.

    The one driver behind :func:`gradient_flow`, :func:`delm_gradient_descent`,
    :func:`linear_gradient_flow` and :func:`deqlib.experiments.gd_loss_gap`. Each step is
    θ ← θ − η ∇_θ L with the closed-form gradients (:func:`~deqlib.functional.delm_gradients`
    for the DELM), on the loss summed over samples: for a step ``lr`` on the mean loss pass
    ``eta = lr / n``.

    Args:
        start: ``(A0, B0)`` (m×m, m_y×m) for the DELM, or the m_y×m matrix ``W0`` for the
            linear model W ↦ ℒ(W).
        Phi: m×n features as columns (``model.features(X).T``).
        Y: m_y×n targets (one-hot for cross-entropy).
        eta: the step η > 0.
        steps: the number of steps (≥ 0).
        loss: ``"square"`` or ``"cross_entropy"``.
        gamma: the DELM's γ.
        delta: the DELM's δ.
        record_every: record every k-th step (and the last).
        record: ``record(s)`` with a :class:`DescentStep` at each recorded step; the dict it
            returns is appended to ``Descent.records`` name by name (None: nothing).

    Returns:
        :class:`Descent`.

    Raises:
        FloatingPointError: the loss became NaN or Inf (the step is far too large).

    Warns:
        RuntimeWarning: η is above gradient descent's stability limit 2/λ at the start, λ the
        largest curvature of the loss (for the DELM, along B alone: a lower bound, so the
        warning is never a false alarm); or the loss rose by more than 0.1% of its start along
        the run. Either way the steps do not follow the gradient flow.
    """
    delm = isinstance(start, (tuple, list))
    if delm:
        if len(start) != 2:
            raise ValueError(f"start must be (A0, B0) for the DELM or W0 for the linear model; "
                             f"got a sequence of {len(start)}")
        gamma, delta = _check_run(start[0], start[1], Phi, Y, gamma, delta, loss)
        params = tuple(t.detach().clone() for t in start)
    else:
        _check_shallow(start, Phi, Y, loss)
        if Phi.dtype != start.dtype or Y.dtype != start.dtype:
            raise TypeError(f"W0, Phi and Y must share one dtype; got W0 {start.dtype}, "
                            f"Phi {Phi.dtype}, Y {Y.dtype}")
        params = (start.detach().clone(),)
    eta = positive_real("eta", eta,
                        "the step of gradient descent; a negative one climbs the loss")
    steps = validate.integer("steps", steps, minimum=0)
    record_every = validate.positive_integer("record_every", record_every)
    if record is not None:
        validate.function("record", record, "record(step) -> dict")
    run = Descent(params=params, W=params[-1])
    first = peak = None
    limit = math.inf

    def blown_up(k: int, what: str) -> FloatingPointError:
        start = f" (about {limit:.3g} at the start)" if math.isfinite(limit) else ""
        return FloatingPointError(
            f"gradient descent with eta={eta:g} broke down at step {k} (t = {eta * k:g}): "
            f"{what}. The step is above gradient descent's stability limit{start}, so the "
            "steps do not follow the gradient flow; take a smaller eta")

    for k in range(steps + 1):
        try:   # the parameters overflow (and the DELM's I − γσ(A) cannot be factorised)
            W = end_to_end(*params, gamma, delta) if delm else params[0]
        except FloatingPointError as err:   # before the loss does: say it is the step's fault
            if k == 0:
                raise
            raise blown_up(k, "the parameters overflowed (A or B holds NaN or Inf)") from err
        L, G = _loss_and_gradient(W, Phi, Y, loss)
        value = L.item()
        if not math.isfinite(value):
            raise blown_up(k, f"the loss became {value}")
        if k == 0:
            first = peak = value
            M = equilibrium_matrix(params[0], gamma, delta) @ Phi if delm else Phi
            curvature = _largest_curvature(M, params[1] if delm else W, loss)
            limit = 2 / curvature if curvature > 0 else math.inf
            if eta > limit:
                warn_at_caller(
                    f"eta={eta:.4g} is above gradient descent's stability limit, about "
                    f"{limit:.4g} at the start (2 over the loss's largest curvature"
                    f"{' along B' if delm else ''}): the steps oscillate or diverge instead of "
                    f"following the gradient flow; take eta below {limit:.3g}", RuntimeWarning)
        peak = max(peak, value)
        grads = delm_gradients(*params, G, gamma, delta) if delm else (G,)
        if k % record_every == 0 or k == steps:
            run.step.append(k)
            run.t.append(eta * k)
            run.loss.append(value)
            if record is not None:
                extra = record(DescentStep(k, eta * k, W, L, G, params, grads))
                for name, v in (extra or {}).items():
                    run.records.setdefault(name, []).append(v)
        if k == steps:
            break
        params = tuple(p - eta * g for p, g in zip(params, grads))
    run.params, run.W = params, W
    if peak > first + 1e-3 * abs(first):
        # gradient flow never increases the loss; steps that do are not following it
        warn_at_caller(
            f"the loss rose from {first:.4g} to {peak:.4g} along the run with eta={eta:g}: the "
            "step is too large for gradient descent to follow the gradient flow, and the "
            "flow's bound does not describe these steps; take a smaller eta", RuntimeWarning)
    return run


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
    holds with margins as thin as 0.9987, which float32 cannot resolve. The steps are
    :func:`gradient_descent`'s (with its warnings).

    Args:
        A0: the start's A, m×m.
        B0: the start's B, m_y×m.
        Phi: m×n features as columns (``model.features(X).T``).
        Y: m_y×n targets (one-hot for cross-entropy).
        gamma: the DELM's γ.
        delta: the DELM's δ.
        eta: the step η > 0.
        steps: the number of steps (≥ 0).
        loss: ``"square"`` or ``"cross_entropy"``.
        optimum: ℒ*; default: :func:`optimum_square_loss` or :func:`optimum_cross_entropy`.
        mu: the PL constant; default :func:`pl_constant_square` for the square loss (for
            cross-entropy it must be given: it is an assumption there).
        record_every: keep every k-th step (the integral uses all of them).
    Returns:
        :class:`FlowRecord`, with the final A and B.
    """
    gamma, delta = _check_run(A0, B0, Phi, Y, gamma, delta, loss)
    eta_ = positive_real("eta", eta,
                         "the step of gradient descent; a negative one climbs the loss")
    last = validate.integer("steps", steps, minimum=0)
    record_every = validate.positive_integer("record_every", record_every)
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
    rec = FlowRecord(optimum=optimum, mu=mu)
    acc = {"integral": 0.0, "integral_s_min": 0.0, "gap0": None}
    # the integral needs λ_min(P) at every step, so the driver records every step and this
    # keeps every record_every-th (and the last)

    def observe(s: DescentStep) -> None:
        A, B = s.params
        lam = torch.linalg.eigvalsh(preconditioner(A, B, gamma, delta))[0].item()
        smin = s_min_U_squared(A, gamma, delta).item()
        gap = s.loss.item() - optimum
        acc["gap0"] = gap if acc["gap0"] is None else acc["gap0"]
        if s.k % record_every == 0 or s.k == last:
            gap0 = acc["gap0"]
            rec.t.append(s.t)
            rec.loss.append(s.loss.item())
            rec.gap.append(gap)
            rec.lam_min_P.append(lam)
            rec.s_min_U_sq.append(smin)
            rec.grad_A_sq.append(s.grads[0].pow(2).sum().item())
            rec.grad_B_sq.append(s.grads[1].pow(2).sum().item())
            rec.grad_W_sq.append(s.G.pow(2).sum().item())
            rec.bound.append(gap0 * math.exp(-2 * mu * acc["integral"]))
            rec.bound_s_min.append(gap0 * math.exp(-2 * mu * acc["integral_s_min"]))
            rec.bound_one.append(gap0 * math.exp(-2 * mu * s.t))
        acc["integral"] += eta_ * lam
        acc["integral_s_min"] += eta_ * smin

    run = gradient_descent((A0, B0), Phi, Y, eta=eta, steps=steps, loss=loss, gamma=gamma,
                           delta=delta, record_every=1, record=observe)
    rec.A, rec.B = run.params
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
    """Gradient descent with step η on the linear model's ℒ(W) from W0: (times, losses).

    :func:`gradient_descent` on W0.
    """
    run = gradient_descent(W0, Phi, Y, eta=eta, steps=steps, loss=loss,
                           record_every=record_every)
    return run.t, run.loss


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

    Phi holds the features as columns (``model.features(X).T``). No P_t is formed; this is
    :func:`gradient_descent` on (A0, B0).

    Returns:
        The final A and B, and the recorded times η·k and losses.
    """
    run = gradient_descent((A0, B0), Phi, Y, eta=eta, steps=steps, loss=loss, gamma=gamma,
                           delta=delta, record_every=record_every)
    return *run.params, run.t, run.loss


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
