"""The induced dynamics of W = BU: J, the preconditioner P_t, and one gradient-descent driver
(with the flow, the DELM and the linear model as its special cases)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import validate
from ..functional import (
    check_constants,
    check_parameters,
    delm_gradients,
    end_to_end,
    equilibrium_matrix,
)
from ..solvers import warn_at_caller
from ..validate import positive_real
from .objective import (
    _check_data,
    _check_loss,
    _check_shallow,
    optimum_cross_entropy,
    optimum_square_loss,
    pl_constant_square,
    s_min_U_squared,
)

# --- the induced dynamics of W


def jacobian(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """J = ∂vec(W)/∂(vec A, vec B), dense (m_y·m) × (m² + m_y·m), row-major vec.

    Row k is the gradient of W's k-th entry, i.e. :func:`~deqlib.functional.delm_gradients`
    with G = E_k (the k-th unit matrix), for all k at once. For small m and m_y only.

    Args:
        A: the DELM's parameter A, ``(m, m)``.
        B: the DELM's parameter B, ``(m_y, m)``, A's dtype and device.
        gamma: γ ∈ (0, 1), the bound on ‖S‖₂ (see :func:`~deqlib.functional.equilibrium_weight`).
        delta: δ > 0, the constant in σ(A) (see :func:`~deqlib.functional.sigma`).

    Returns:
        J, ``(m_y·m, m² + m_y·m)``, the columns of vec A first, then those of vec B.
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

    Args:
        A: the DELM's parameter A, ``(m, m)``.
        B: the DELM's parameter B, ``(m_y, m)``, A's dtype and device.
        gamma: γ ∈ (0, 1), the bound on ‖S‖₂ (see :func:`~deqlib.functional.equilibrium_weight`).
        delta: δ > 0, the constant in σ(A) (see :func:`~deqlib.functional.sigma`).

    Returns:
        P, ``(m_y·m, m_y·m)``, symmetric with P ⪰ I.
    """
    J = jacobian(A, B, gamma, delta)
    return J @ J.T


@dataclass
class FlowRecord:
    """A gradient-flow run, recorded at ``t`` (lists of floats, one entry per record).

    ``gap`` is L − ℒ*; ``grad_W_sq`` is ‖∇ℒ(W_t)‖² (so ``grad_W_sq / (2 gap)`` measures the
    PL constant along the run); ``bound`` is (L_0 − ℒ*)·exp(−2μ ∫₀ᵗ λ_min(P_s) ds);
    ``bound_s_min`` uses s_min(U_s)² ≤ λ_min(P_s) instead; ``bound_one`` uses 1 ≤ s_min(U)².

    Attributes:
        t: the recorded times η·k.
        loss: L(A_t, B_t) = ℒ(W_t), summed over samples.
        gap: L(A_t, B_t) − ℒ*.
        lam_min_P: λ_min(P_t), the smallest eigenvalue of the preconditioner
            (:func:`preconditioner`).
        s_min_U_sq: s_min(U_t)² (:func:`~deqlib.theory.s_min_U_squared`).
        grad_A_sq: ‖∂L/∂A‖_F² at t.
        grad_B_sq: ‖∂L/∂B‖_F² at t.
        grad_W_sq: ‖∇ℒ(W_t)‖_F² at t.
        bound: (L_0 − ℒ*)·exp(−2μ ∫₀ᵗ λ_min(P_s) ds), the theorem's bound on ``gap``.
        bound_s_min: the same with s_min(U_s)² in place of λ_min(P_s) (weaker).
        bound_one: the same with 1 in place of λ_min(P_s), i.e. (L_0 − ℒ*)·e^{−2μt} (weakest).
        optimum: ℒ*, the value the gaps are measured from.
        mu: μ, the PL constant the bounds use.
        A: the final A (after the last step).
        B: the final B.
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

    Attributes:
        params: the final parameters: ``(A, B)`` for the DELM, ``(W,)`` for the linear model.
        W: the final end-to-end matrix, ``(m_y, m)``.
        step: the recorded step numbers k.
        t: the recorded times η·k.
        loss: ℒ at the recorded steps (floats, summed over samples).
        records: ``{name: [value per recorded step]}``, from ``record``.
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

    Attributes:
        k: the step number (0 at the start).
        t: the time η·k.
        W: the end-to-end matrix, ``(m_y, m)``.
        loss: ℒ(W), a 0-dimensional tensor.
        G: ∇ℒ(W), ``(m_y, m)``.
        params: ``(A, B)`` or ``(W,)``.
        grads: ``(∂L/∂A, ∂L/∂B)`` or ``(G,)``.
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
            warning is never a false alarm); or the loss rose by more than 0.1% of its start
            along the run. Either way the steps do not follow the gradient flow.
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
    with P computed densely at every step (small m, m_y only). It needs float64 (float32 is
    refused): not because one number's rounding (6e-8 in float32) is large, but because the
    gap L − ℒ* is a difference of nearly equal losses, whose relative error is the losses'
    rounding times L/(L − ℒ*), unbounded as L approaches ℒ*, and because rounding accumulates
    over thousands of steps; where the gap comes close to the bound, float32 could not tell
    whether the bound holds. The steps are :func:`gradient_descent`'s (with its warnings).

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

    Args:
        W0: the start, ``(m_y, m)``.
        Phi: the features Φ, ``(m, n)``, as columns (``model.features(X).T``).
        Y: the targets, ``(m_y, n)`` (one-hot for cross-entropy).
        eta: the step η > 0, on the loss summed over samples.
        steps: the number of steps (≥ 0).
        loss: ``"square"`` or ``"cross_entropy"``.
        record_every: record every k-th step (and the last).

    Returns:
        Two lists of floats, the recorded times η·k and ℒ(W) at them.
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

    No P_t is formed; this is :func:`gradient_descent` on (A0, B0).

    Args:
        A0: the start's A, ``(m, m)``.
        B0: the start's B, ``(m_y, m)``.
        Phi: the features Φ, ``(m, n)``, as columns (``model.features(X).T``).
        Y: the targets, ``(m_y, n)`` (one-hot for cross-entropy).
        gamma: the DELM's γ ∈ (0, 1).
        delta: the DELM's δ > 0.
        eta: the step η > 0, on the loss summed over samples.
        steps: the number of steps (≥ 0).
        loss: ``"square"`` or ``"cross_entropy"``.
        record_every: record every k-th step (and the last).

    Returns:
        A tuple ``(A, B, times, losses)`` of the final A and B, and the recorded times η·k
        and losses L(A, B) (lists of floats).
    """
    run = gradient_descent((A0, B0), Phi, Y, eta=eta, steps=steps, loss=loss, gamma=gamma,
                           delta=delta, record_every=record_every)
    return *run.params, run.t, run.loss
