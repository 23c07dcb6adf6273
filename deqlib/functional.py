r"""The functional home of the book's formulas: the deep equilibrium linear model and the tanh map.

Modules are thin shells over these functions, as ``nn.Linear.forward`` is ``F.linear``:
:class:`~deqlib.models.DeepEquilibriumLinear`, the nonlinear DEQ layers, :mod:`deqlib.theory`,
the tests, the benchmarks and the chapters all call them, so each formula is written once.

The deep equilibrium linear model (DELM), on features φ(x) ∈ ℝᵐ (m is the width), with
parameters A ∈ ℝ^{m×m}, B ∈ ℝ^{m_y×m} and constants γ ∈ (0, 1), δ > 0:

.. math::

    \sigma(A) = \frac{A^\top A}{\lVert A^\top A\rVert_F + \delta}, \qquad
    S = \gamma\,\sigma(A), \qquad U = (I - S)^{-1}, \qquad W = B U,

so that the equilibrium of z = Sz + φ(x) is z* = Uφ(x) and the model computes Wφ(x).
This exact form of σ(A) is the book's reconstruction: only the title, the abstract and the
first paragraph of the paper could be read, and they say that the nonlinearity sits on the
weight, not which one. S is symmetric positive semi-definite with ‖S‖₂ < γ, so I − S is
symmetric positive definite: every solve below is a Cholesky solve.

Gradients. For a loss L(A, B) = ℒ(BU) and G = ∇ℒ(W) ∈ ℝ^{m_y×m}, with C = AᵀA, N = ‖C‖_F:

.. math::

    \frac{\partial L}{\partial B} = G U^\top, \qquad
    \frac{\partial L}{\partial A} = A (K + K^\top), \qquad
    K = \frac{M}{N + \delta} - \frac{\langle M, C\rangle}{N (N + \delta)^2}\, C, \qquad
    M = \gamma U^\top B^\top G U^\top.

M = ∂L/∂σ(A) is the adjoint of the equilibrium. With V = UBᵀ and P = UGᵀ (two Cholesky
solves with m_y right-hand sides each) M = γVPᵀ has rank ≤ m_y and is never formed. At A = 0
the second term of K is 0/0 times C = 0 and is taken as 0, so ∂L/∂A = 0 there: A = 0 is a
stationary point.

Functions here accept float32 and float64 tensors. Half precision (float16, bfloat16) and
integer tensors are refused with a clear error: the Cholesky factorisation has no
half-precision kernel, and an integer A has no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import validate

__all__ = [
    "LOSSES",
    "tanh_map",
    "sigma",
    "equilibrium_weight",
    "equilibrium_matrix",
    "end_to_end",
    "delm_map",
    "delm_gradients",
    "deep_equilibrium_linear",
]

#: The losses of the shallow objective ℒ(W) = Σ_i ℓ(W φ(x_i), y_i).
LOSSES = ("square", "cross_entropy")

#: The dtypes the DELM's functions compute in.
DTYPES = (torch.float32, torch.float64)


# --- the tanh map


def tanh_map(z: Tensor, W_z: Tensor, injection: Tensor) -> Tensor:
    r"""The nonlinear DEQ map z ↦ tanh(W_z z + injection), on rows.

    .. math::

        f(z) = \tanh(z W_z^\top + \text{injection})

    tanh is 1-Lipschitz, so ‖W_z‖₂ < 1 makes this a contraction in z.

    Args:
        z: ``(batch, width)`` (or ``(width,)``).
        W_z: ``(width, width)``.
        injection: the input's contribution, e.g. ``x @ W_x.T + b``; broadcastable to z.

    Returns:
        A tensor of z's shape.
    """
    return (z @ W_z.T + injection).tanh()


# --- checks


def _check_gamma(gamma) -> float:
    return validate.interval("gamma", gamma, 0, 1, "so that the equilibrium exists",
                             closed=(False, False))


def _check_delta(delta) -> float:
    return validate.positive_real("delta", delta, "it keeps σ(A) finite at A = 0")


def check_constants(gamma, delta) -> tuple[float, float]:
    """Validate γ ∈ (0, 1) and δ > 0 (finite); return them as floats.

    Numpy scalars such as ``np.float32(0.8)`` are accepted.
    """
    return _check_gamma(gamma), _check_delta(delta)


def _check_dtype(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype not in DTYPES:
        advice = (
            "the Cholesky factorisation has no half-precision kernel; "
            if t.dtype in (torch.float16, torch.bfloat16)
            else ""
        )
        raise TypeError(
            f"{name} has dtype {t.dtype}; the deep equilibrium linear model computes in "
            f"float32 or float64 ({advice}convert with .float() or .double())"
        )


def check_parameters(A: Tensor, B: Tensor | None = None, G: Tensor | None = None) -> None:
    """Check that A is (m, m), B is (m_y, m) and G is (..., m_y, m), all float32/float64 alike."""
    _check_dtype("A", A)
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix (m, m); got shape {tuple(A.shape)}")
    m = A.shape[0]
    for name, t in (("B", B), ("G", G)):
        if t is None:
            continue
        _check_dtype(name, t)
        if t.dtype != A.dtype or t.device != A.device:
            raise TypeError(
                f"{name} is {t.dtype} on {t.device} but A is {A.dtype} on {A.device}; "
                f"put them on one dtype and device"
            )
        if t.dim() < 2 or (name == "B" and t.dim() != 2) or t.shape[-1] != m:
            want = "(m_y, m)" if name == "B" else "(..., m_y, m)"
            raise ValueError(
                f"{name} must have shape {want} = {want.replace('m)', f'{m})')} to fit "
                f"A {tuple(A.shape)}; got {tuple(t.shape)}"
            )
    if B is not None and G is not None and G.shape[-2] != B.shape[0]:
        raise ValueError(
            f"G must have shape (..., m_y, m) = (..., {B.shape[0]}, {m}) to fit "
            f"B {tuple(B.shape)}; got {tuple(G.shape)}"
        )


# --- σ, S, U, W


def _gram(A: Tensor) -> tuple[Tensor, Tensor]:
    """C = AᵀA and N = ‖C‖_F.

    N is computed as s‖C/s‖_F with s = max|C_ij| (not differentiated: N is homogeneous in
    C), since the squares in ‖C‖_F underflow in float32 once A is below about 1e-10, and
    overflow once it is above about 1e5; N = 0 there would make the gradient's
    ⟨M, C⟩/N term wrong by orders of magnitude.
    """
    C = A.mT @ A
    s = C.detach().abs().amax().clamp_min(torch.finfo(C.dtype).tiny)
    return C, s * torch.linalg.matrix_norm(C / s)


def _sigma(C: Tensor, N: Tensor, delta: float) -> Tensor:
    return C / (N + delta)  # divide first: at A = 0 this is 0/δ = 0 even for a tiny δ


def _factor(A: Tensor, gamma: float, delta: float) -> tuple[Tensor, Tensor, Tensor]:
    """C = AᵀA, N = ‖C‖_F and the Cholesky factor L of I − S = LLᵀ."""
    if A.dtype == torch.float32 and not delta >= torch.finfo(torch.float32).tiny:
        raise ValueError(
            f"delta={delta!r} is 0 in float32 (σ(0) would be 0/0); use "
            f"delta >= {torch.finfo(torch.float32).tiny:.1e} or float64"
        )
    C, N = _gram(A)
    I_minus_S = torch.eye(A.shape[0], dtype=A.dtype, device=A.device) - gamma * _sigma(C, N, delta)
    L, info = torch.linalg.cholesky_ex(I_minus_S)
    if bool((info != 0) | ~torch.isfinite(N)):   # one host sync for both checks
        # I − S is positive definite for every finite A: A itself is not finite.
        raise FloatingPointError(
            "deep equilibrium linear model: I − γσ(A) could not be factorised because A holds "
            "NaN or Inf, or is so large that AᵀA overflows (if training diverged, lower the "
            "learning rate)"
        )
    return C, N, L


def sigma(A: Tensor, delta: float) -> Tensor:
    """σ(A) = AᵀA / (‖AᵀA‖_F + δ): the weight nonlinearity, shape (m, m).

    Symmetric positive semi-definite, with ‖σ(A)‖₂ < 1 and σ(cA) ≈ σ(A) (scale-invariant
    up to δ). Its exact form is the book's reconstruction (see the module docstring).

    Args:
        A: the DELM's parameter A, ``(m, m)``, float32 or float64 (m is the width).
        delta: δ > 0, added to ‖AᵀA‖_F so that σ(0) = 0 is defined; small (the book uses
            1e-6), so that σ(A) is close to the scale-invariant AᵀA/‖AᵀA‖_F.

    Returns:
        σ(A), ``(m, m)``, A's dtype and device; differentiable in A.
    """
    _check_dtype("A", A)
    return _sigma(*_gram(A), _check_delta(delta))


def equilibrium_weight(A: Tensor, gamma: float, delta: float) -> Tensor:
    """S = γσ(A), the weight of the equilibrium map z ↦ Sz + φ(x): symmetric PSD, ‖S‖₂ < γ.

    Args:
        A: the DELM's parameter A, ``(m, m)``, float32 or float64.
        gamma: γ ∈ (0, 1), the bound on ‖S‖₂ that makes I − S invertible (the equilibrium
            exists and is unique).
        delta: δ > 0, as in :func:`sigma`.

    Returns:
        S, ``(m, m)``, A's dtype and device; differentiable in A.
    """
    gamma, delta = check_constants(gamma, delta)
    return gamma * sigma(A, delta)


def equilibrium_matrix(A: Tensor, gamma: float, delta: float) -> Tensor:
    """U = (I − γσ(A))⁻¹, the map from φ(x) to the equilibrium z* = Uφ(x), shape (m, m).

    Symmetric with eigenvalues in [1, 1/(1 − γ)), so s_min(U) ≥ 1 for every A. Formed from
    the Cholesky factor of I − S (differentiable).

    Args:
        A: the DELM's parameter A, ``(m, m)``, float32 or float64.
        gamma: γ ∈ (0, 1), as in :func:`equilibrium_weight`.
        delta: δ > 0, as in :func:`sigma`.

    Returns:
        U, ``(m, m)``, A's dtype and device.

    Raises:
        FloatingPointError: A holds NaN or Inf, or is so large that AᵀA overflows (I − S
            cannot be factorised).
    """
    gamma, delta = check_constants(gamma, delta)
    check_parameters(A)
    return torch.cholesky_inverse(_factor(A, gamma, delta)[2])


def end_to_end(A: Tensor, B: Tensor, gamma: float, delta: float) -> Tensor:
    """W = BU = B(I − γσ(A))⁻¹, shape (m_y, m): the model is the linear map φ(x) ↦ Wφ(x).

    One Cholesky factorisation and m_y right-hand sides (U is symmetric: W = (UBᵀ)ᵀ); plain
    autograd differentiates it, which makes it the reference for :func:`delm_gradients`.

    Args:
        A: the DELM's parameter A, ``(m, m)``, float32 or float64 (m is the width, the size
            of the features φ(x)).
        B: the DELM's output parameter B, ``(m_y, m)`` (m_y outputs), A's dtype and device.
        gamma: γ ∈ (0, 1), the bound on ‖S‖₂ (see :func:`equilibrium_weight`).
        delta: δ > 0, the constant in σ(A) (see :func:`sigma`).

    Returns:
        W, ``(m_y, m)``, A's dtype and device; differentiable in A and B.

    Raises:
        FloatingPointError: A holds NaN or Inf, or is so large that AᵀA overflows (I − S
            cannot be factorised).
    """
    gamma, delta = check_constants(gamma, delta)
    check_parameters(A, B)
    return torch.cholesky_solve(B.mT, _factor(A, gamma, delta)[2]).mT


def delm_map(z: Tensor, S: Tensor, features: Tensor) -> Tensor:
    """The DELM's equilibrium map on rows, z ↦ Sz + φ(x) (S is symmetric, so zS = (Sz)ᵀ).

    Args:
        z: the state, ``(batch, m)``.
        S: ``(m, m)``, from :func:`equilibrium_weight`.
        features: φ(x), ``(batch, m)``.

    Returns:
        Sz + φ(x), ``(batch, m)``.
    """
    return z @ S + features


# --- gradients


def _grad_A(
    A: Tensor, C: Tensor, N: Tensor, V: Tensor, P: Tensor, gamma: float, delta: float
) -> Tensor:
    """∂L/∂A = A(K + Kᵀ) with M = γVPᵀ, never formed; batched over P's leading dimensions.

    A(M + Mᵀ) = γ[(AV)Pᵀ + (AP)Vᵀ] and ⟨M, C⟩ = γ Σ (CV) ∘ P (C is symmetric), so the only
    m×m×m product is A C. The coefficient ⟨M, C⟩/(N(N + δ)²) is computed as
    (⟨M, C⟩/N)/(N + δ)/(N + δ): |⟨M, C⟩|/N ≤ ‖M‖_F, so nothing underflows to 0/0 at A = 0
    in float32 (there ⟨M, C⟩ = 0 and the term is exactly 0).
    """
    AV, AP = A @ V, A @ P
    inner = gamma * ((C @ V) * P).sum(dim=(-2, -1))  # ⟨M, C⟩, shape (...)
    coef = inner / N.clamp_min(torch.finfo(N.dtype).tiny) / (N + delta) / (N + delta)
    first = gamma * (AV @ P.mT + AP @ V.mT) / (N + delta)  # A(M + Mᵀ)/(N + δ)
    return first - (2 * coef)[..., None, None] * (A @ C)


def delm_gradients(
    A: Tensor, B: Tensor, G: Tensor, gamma: float, delta: float
) -> tuple[Tensor, Tensor]:
    r"""∂L/∂A and ∂L/∂B of L(A, B) = ℒ(BU), given G = ∇ℒ(W) at W = BU.

    .. math::

        \frac{\partial L}{\partial B} = G U^\top, \qquad
        \frac{\partial L}{\partial A} = A (K + K^\top), \qquad
        K = \frac{M}{N + \delta} - \frac{\langle M, C\rangle}{N (N + \delta)^2} C,

    with M = γUᵀBᵀGUᵀ, C = AᵀA, N = ‖C‖_F (see the module docstring). At A = 0,
    ∂L/∂A = 0 exactly.

    Batched: G may carry leading dimensions, ``(..., m_y, m)``; the answers then do too.
    With G the unit matrices E_k this gives every row of the Jacobian ∂vec(W)/∂(A, B) at
    once (see :func:`deqlib.theory.preconditioner`).

    Args:
        A: (m, m).
        B: (m_y, m).
        G: ∇ℒ(W) at W = BU, (..., m_y, m).
        gamma: γ ∈ (0, 1).
        delta: δ > 0.
    Returns:
        (∂L/∂A of shape (..., m, m), ∂L/∂B of shape (..., m_y, m)).
    """
    gamma, delta = check_constants(gamma, delta)
    check_parameters(A, B, G)
    C, N, L = _factor(A, gamma, delta)
    V = torch.cholesky_solve(B.mT, L)  # (m, m_y) = U Bᵀ
    P = torch.cholesky_solve(G.mT, L)  # (..., m, m_y) = U Gᵀ
    return _grad_A(A, C, N, V, P, gamma, delta), P.mT


# --- the model, closed form


class _DELMClosedForm(torch.autograd.Function):
    """out = Φ U Bᵀ by one Cholesky factorisation, with a backward from the gradient formulas.

    Forward: I − S = LLᵀ, V = UBᵀ (m_y right-hand sides), out = ΦV, shape (batch, m_y).
    Backward, with Ĝ = ∂ℓ/∂out and G = ĜᵀΦ = ∇ℒ(W): ∂Φ = ĜVᵀ, P = UGᵀ (one more solve),
    ∂B = Pᵀ = GUᵀ, ∂A = :func:`_grad_A` (the one further m×m×m product is A C).
    """

    generate_vmap_rule = True     # torch.func.vmap (and jacfwd, hessian) batch the formulas

    @staticmethod
    def forward(Phi, A, B, gamma, delta):
        C, N, L = _factor(A, gamma, delta)
        V = torch.cholesky_solve(B.mT, L)  # (m, m_y) = U Bᵀ
        return Phi @ V, C, N, L, V    # factors as outputs: setup_context saves them

    @staticmethod
    def setup_context(ctx, inputs, output):
        Phi, A, B, gamma, delta = inputs
        _, C, N, L, V = output
        ctx.mark_non_differentiable(C, N, L, V)
        ctx.save_for_backward(Phi, A, B, C, N, L, V)
        ctx.gamma, ctx.delta = gamma, delta

    @staticmethod
    def backward(ctx, grad_out, *_):
        Phi, A, B, C, N, L, V = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (a gradient penalty, a Hessian) or a torch.func transform: the
            # saved factors carry no graph back to A and B, so recompute them here in
            # differentiable operations; the formulas below are then differentiated as written
            C, N, L = _factor(A, ctx.gamma, ctx.delta)
            V = torch.cholesky_solve(B.mT, L)
        grad_Phi = grad_out @ V.mT if ctx.needs_input_grad[0] else None
        grad_A = grad_B = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            G = grad_out.mT @ Phi  # (m_y, m) = ∇ℒ(W)
            P = torch.cholesky_solve(G.mT, L)  # (m, m_y) = U Gᵀ
            grad_B = P.mT if ctx.needs_input_grad[2] else None
            if ctx.needs_input_grad[1]:
                grad_A = _grad_A(A, C, N, V, P, ctx.gamma, ctx.delta)
        return grad_Phi, grad_A, grad_B, None, None


def check_finite_features(features: Tensor, owner: str = "") -> None:
    """Raise ValueError when the input holds NaN or Inf, naming the first bad sample (and
    ``owner``, the model or layer, when given). One fused check when the input is finite."""
    if bool(torch.isfinite(features).all()):
        return
    bad = ~torch.isfinite(features)
    row = int(bad.reshape(len(bad), -1).any(dim=1).nonzero()[0, 0]) if bad.dim() > 1 else 0
    first = features.reshape(len(features), -1)[row] if features.dim() > 1 else features
    kind = "NaN" if bool(first.isnan().any()) else "Inf"
    raise ValueError(
        f"{owner + ': ' if owner else ''}the input holds NaN or Inf ({int(bad.sum())} "
        f"entries, the first in sample {row}), {kind} in that sample: clean or impute the "
        "data before calling the model (the solver would only see its effect)"
    )


def check_finite_output(out: Tensor, features: Tensor, A: Tensor, B: Tensor) -> None:
    """Raise a clear error when the output holds NaN or Inf, naming the cause.

    Checking the (batch, m_y) output costs little; the (batch, m) input is inspected only
    when the output is bad, to say whether the input or the parameters are at fault.
    """
    if bool(torch.isfinite(out).all()):
        return
    check_finite_features(features)
    if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(B).all())):
        raise FloatingPointError(
            "the parameters A or B hold NaN or Inf (if training diverged, lower the learning rate)"
        )
    raise FloatingPointError(
        "the output overflowed although input and parameters are finite: "
        "rescale the input or compute in float64"
    )


def deep_equilibrium_linear(
    features: Tensor, A: Tensor, B: Tensor, gamma: float, delta: float
) -> Tensor:
    """The DELM's output Wφ(x) = BUφ(x) for a batch of features, by the closed form.

    One Cholesky factorisation of I − S and m_y right-hand sides serve the whole batch; the
    backward is written from :func:`delm_gradients`' formulas (it never differentiates
    through the factorisation). Differentiable once.

    Args:
        features: φ(x), ``(batch, m)``.
        A: ``(m, m)``.
        B: ``(m_y, m)``.
        gamma: γ ∈ (0, 1).
        delta: δ > 0.

    Returns:
        ``(batch, m_y)``.

    Raises:
        ValueError: NaN or Inf in the input, or shapes that do not fit.
        FloatingPointError: NaN or Inf in A or B (a diverged training run).
        TypeError: a dtype other than float32/float64, or mixed dtypes.
    """
    gamma, delta = check_constants(gamma, delta)
    check_parameters(A, B)
    _check_dtype("features", features)
    if features.dtype != A.dtype:
        raise TypeError(
            f"the input is {features.dtype} but the parameters are {A.dtype}: "
            f"convert the input with .to({A.dtype})"
        )
    if features.dim() != 2 or features.shape[1] != A.shape[0]:
        raise ValueError(
            f"features must have shape (batch, m) = (batch, {A.shape[0]}); "
            f"got {tuple(features.shape)}"
        )
    out = _DELMClosedForm.apply(features, A, B, gamma, delta)[0]
    check_finite_output(out, features, A, B)
    return out


def _gaussian(shape, std: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, std²) numbers of ``like``'s dtype, drawn on the CPU from ``generator`` and then
    moved to ``like``'s device, so that a seed gives the same initial weights on every device
    (the models' and layers' initialisation)."""
    out = torch.randn(shape, generator=generator, dtype=like.dtype)
    return (out * std).to(like.device)
