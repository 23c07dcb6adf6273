"""The shallow objective ℒ(W), its optimum and its PL constant; checks of Φ and Y."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import validate
from ..functional import (
    LOSSES,
    delm_gradients,
    end_to_end,
    equilibrium_matrix,
    sigma,
)

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

    Args:
        A: the DELM's parameter A, ``(m, m)``.
        gamma: γ ∈ (0, 1), the bound on ‖S‖₂ (see :func:`~deqlib.functional.equilibrium_weight`).
        delta: δ > 0, the constant in σ(A) (see :func:`~deqlib.functional.sigma`).

    Returns:
        s_min(U)², a 0-dimensional tensor.
    """
    return torch.linalg.svdvals(equilibrium_matrix(A, gamma, delta)).min() ** 2


def square_loss(W: Tensor, Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ(W) = ‖WΦ − Y‖_F² (a sum over samples): :func:`shallow_loss` with ``loss="square"``.

    Args:
        W: the end-to-end weight, ``(m_y, m)``.
        Phi: the features Φ, ``(m, n)``: one column φ(x_i) per sample (m features, n samples).
        Y: the targets, ``(m_y, n)``: one column per sample (one-hot for cross-entropy).

    Returns:
        ℒ(W), a 0-dimensional tensor.
    """
    return shallow_loss(W, Phi, Y, "square")


def optimum_square_loss(Phi: Tensor, Y: Tensor) -> Tensor:
    """ℒ* = min_W ‖WΦ − Y‖_F² = ‖Y(I − Π_Φ)‖_F², Π_Φ the projector on Φ's row space.

    With Φ = φ(X)ᵀ this is the least-squares optimum on the features (any width).

    Args:
        Phi: the features Φ, ``(m, n)``: one column φ(x_i) per sample (m features, n samples).
        Y: the targets, ``(m_y, n)``: one column per sample (one-hot for cross-entropy).

    Returns:
        ℒ*, a 0-dimensional tensor (0 when Y is in the row space of Φ, e.g. when m ≥ n and Φ
        has full column rank).
    """
    _check_data(Phi, Y)
    W_star = torch.linalg.lstsq(Phi.T, Y.T).solution.T
    return square_loss(W_star, Phi, Y)


def pl_constant_square(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    """μ = 2 λ⁺_min(ΦΦᵀ) for ℒ(W) = ‖WΦ − Y‖_F²: ‖∇ℒ‖² ≥ 2μ(ℒ − ℒ*).

    λ⁺_min is the smallest eigenvalue above ``rtol`` · λ_max (default: m · eps).

    Args:
        Phi: the features Φ, ``(m, n)``, one column per sample.
        rtol: eigenvalues of ΦΦᵀ at most ``rtol`` · λ_max count as zero (round-off of a rank
            deficient ΦΦᵀ); ``None``: m times the machine epsilon of Φ's dtype.

    Returns:
        μ, a 0-dimensional tensor.

    Raises:
        ValueError: Φ is zero to rounding (no positive eigenvalue, no PL constant).
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
    """ℒ(W) = Σ_i ℓ(Wφ(x_i), y_i): ‖WΦ − Y‖_F² or softmax cross-entropy (Y one-hot columns).

    Args:
        W: the end-to-end weight, ``(m_y, m)``.
        Phi: the features Φ, ``(m, n)``: one column φ(x_i) per sample (m features, n samples).
        Y: the targets, ``(m_y, n)``: one column per sample (one-hot for cross-entropy).
        loss: ``"square"`` (‖WΦ − Y‖_F²) or ``"cross_entropy"`` (softmax over each column of
            WΦ; Y one-hot).

    Returns:
        ℒ(W), a 0-dimensional tensor, summed over the n samples (not a mean).
    """
    _check_shallow(W, Phi, Y, loss)
    Q = W @ Phi
    if loss == "square":
        return (Q - Y).pow(2).sum()
    return -(Y * torch.log_softmax(Q, dim=0)).sum()


def shallow_gradient(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """G = ∇ℒ(W) = RΦᵀ, R = 2(WΦ − Y) (square) or softmax(WΦ) − Y (cross-entropy).

    Args:
        W, Phi, Y, loss: as in :func:`shallow_loss`.

    Returns:
        G, ``(m_y, m)``, W's shape.
    """
    _check_shallow(W, Phi, Y, loss)
    Q = W @ Phi
    R = 2 * (Q - Y) if loss == "square" else torch.softmax(Q, dim=0) - Y
    return R @ Phi.T


def shallow_hessian(W: Tensor, Phi: Tensor, Y: Tensor, loss: str = "square") -> Tensor:
    """∇²ℒ(W) as a dense (m_y·m)×(m_y·m) matrix in the row-major vec of W.

    Square loss: the constant 2 (I_{m_y} ⊗ ΦΦᵀ). Cross-entropy:
    Σ_j (diag(p_j) − p_j p_jᵀ) ⊗ φ_j φ_jᵀ with p_j = softmax(Wφ_j). The square loss's
    Hessian depends on neither W nor Y.

    Args:
        W, Phi, Y, loss: as in :func:`shallow_loss`.

    Returns:
        ∇²ℒ(W), ``(m_y·m, m_y·m)``.
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

    Args:
        Phi: the features Φ, ``(m, n)``, one column per sample.
        Y: the one-hot targets, ``(m_y, n)``.
        tol: Newton stops when ‖∇ℒ(W)‖ ≤ ``tol`` · max(1, ℒ(W)).
        max_iter: the most Newton steps.

    Returns:
        ℒ*, a 0-dimensional tensor in Φ's dtype (computed in float64).

    Raises:
        ValueError: the data look linearly separable (no minimiser), or Newton did not reach
            ``tol`` in ``max_iter`` steps.
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
