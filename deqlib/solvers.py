"""Fixed-point solvers: find z with z = f(z), batched over a leading dimension.

Every solver here treats ``z`` of shape ``(batch, ...)`` as ``batch`` independent
systems: residuals, stopping and Anderson's mixing weights are per sample. The
iteration stops when the largest residual in the batch is at most ``tol``:

* ``stop="rel"``: ‖f(z) − z‖ / ‖f(z)‖ per sample (the default),
* ``stop="abs"``: ‖f(z) − z‖ per sample.

Every solver returns a :class:`SolverResult` whose ``z`` is the last evaluated
``f(z)``. A solve that does not reach ``tol`` within ``max_iter`` evaluations of
``f`` is flagged (``converged=False``) and warned with :class:`ConvergenceWarning`,
or raised as :class:`ConvergenceError` with ``strict=True``. A NaN or Inf produced
by ``f`` raises :class:`FloatingPointError` at once. Contraction is not checked:
many useful maps converge without being contractions.

The solvers run under whatever autograd mode the caller chose: under
``torch.no_grad()`` they keep no graph (the DEQ forward), with grad enabled the
graph of every iteration is kept (unrolled backprop).
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "SolverResult",
    "ConvergenceWarning",
    "ConvergenceError",
    "picard",
    "anderson",
    "broyden",
    "solve",
    "SOLVERS",
]


class ConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` before its residual reached ``tol``."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`ConvergenceWarning` when a solver is called with ``strict=True``."""


@dataclass
class SolverResult:
    """What a solve produced, and how it got there.

    Attributes:
        z: the solution, shape ``(batch, ...)``; the last evaluated ``f(z)``.
        converged: ``True`` when the largest residual in the batch reached ``tol``.
        steps: number of evaluations of ``f``.
        residuals: the largest residual in the batch after each evaluation of ``f``
            (a list of floats, one per step).
        final_residual: the residual of each sample at the end, shape ``(batch,)``.
        stop: which residual was measured, ``"rel"`` or ``"abs"``.
        tol: the tolerance asked for.
        method: the solver's name.
    """

    z: Tensor
    converged: bool
    steps: int
    residuals: list[float] = field(repr=False)
    final_residual: Tensor = field(repr=False)
    stop: str
    tol: float
    method: str

    def __repr__(self) -> str:  # short: a result is printed in notebooks
        last = self.residuals[-1] if self.residuals else float("nan")
        return (
            f"SolverResult(method={self.method!r}, converged={self.converged}, "
            f"steps={self.steps}, residual={last:.2e} ({self.stop}), tol={self.tol:.0e})"
        )


# ----------------------------------------------------------------------------- helpers


def _check_common(f, z0: Tensor, tol: float, max_iter: int, stop: str) -> None:
    if not callable(f):
        raise TypeError(f"f must be callable (a map from z to a tensor of z's shape); got {type(f).__name__}")
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a torch.Tensor of shape (batch, ...); got {type(z0).__name__}")
    if z0.dim() < 1:
        raise ValueError("z0 must have a leading batch dimension, shape (batch, ...); got a 0-d tensor")
    if not torch.isfinite(z0).all():
        raise ValueError("z0 contains NaN or Inf; start the iteration from a finite point")
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive finite number; got tol={tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1; got max_iter={max_iter!r}")
    if stop not in ("rel", "abs"):
        raise ValueError(f"stop must be 'rel' (relative residual) or 'abs' (absolute); got stop={stop!r}")


def _apply(f, z: Tensor, step: int, method: str) -> Tensor:
    fz = f(z)
    if not isinstance(fz, Tensor) or fz.shape != z.shape:
        got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
        raise ValueError(f"{method}: f must return a tensor of z's shape {tuple(z.shape)}; got {got}")
    return fz


def _residual(fz: Tensor, z: Tensor, stop: str) -> Tensor:
    """Per-sample residual, shape (batch,), computed without a graph."""
    with torch.no_grad():
        diff = (fz - z).reshape(len(z), -1).norm(dim=1)
        if stop == "abs":
            return diff
        # tiny keeps 0/0 away from a fixed point at the origin (then diff is 0 too)
        return diff / fz.reshape(len(z), -1).norm(dim=1).clamp_min(torch.finfo(fz.dtype).tiny)


def _record(res: Tensor, trace: list[float], step: int, method: str) -> float:
    # One host synchronisation per step: the stopping test needs the number.
    worst = res.max().item()
    if not math.isfinite(worst):
        raise FloatingPointError(
            f"{method}: the residual became {worst} at step {step}: f produced NaN or Inf "
            "(the iteration diverged). Check that the map has a fixed point near z0, "
            "or use a smaller step / a better-conditioned map."
        )
    trace.append(worst)
    return worst


def _finish(z, fz_res, trace, steps, tol, stop, method, strict) -> SolverResult:
    converged = bool(trace) and trace[-1] <= tol
    if not converged:
        msg = (
            f"{method} did not converge: residual {trace[-1]:.3e} ({stop}) > tol={tol:.1e} "
            f"after max_iter={steps} steps. The map may have no fixed point, or needs "
            "more iterations (raise max_iter) or a different solver."
        )
        if strict:
            raise ConvergenceError(msg)
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return SolverResult(z=z, converged=converged, steps=steps, residuals=trace,
                        final_residual=fz_res, stop=stop, tol=tol, method=method)


# ----------------------------------------------------------------------------- solvers


def picard(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6, max_iter: int = 100,
           stop: str = "rel", strict: bool = False) -> SolverResult:
    """Find z = f(z) by plain fixed-point (Picard) iteration, z_{k+1} = f(z_k).

    If f is a contraction with factor q < 1 (‖f(a) − f(b)‖ ≤ q‖a − b‖), Banach's theorem
    gives a unique fixed point z* and ‖z_k − z*‖ ≤ q^k ‖z_0 − z*‖. One evaluation of f
    per step, no extra memory.

    Args:
        f: map from a ``(batch, ...)`` tensor to one of the same shape.
        z0: starting point, shape ``(batch, ...)``.
        tol: stop when the largest per-sample residual is at most ``tol``.
        max_iter: the most evaluations of ``f``.
        stop: ``"rel"`` (‖f(z) − z‖/‖f(z)‖) or ``"abs"`` (‖f(z) − z‖).
        strict: raise :class:`ConvergenceError` instead of warning when not converged.
    Returns:
        :class:`SolverResult`.
    """
    _check_common(f, z0, tol, max_iter, stop)
    z, trace = z0, []
    for k in range(1, max_iter + 1):
        fz = _apply(f, z, k, "picard")
        res = _residual(fz, z, stop)
        z = fz
        if _record(res, trace, k, "picard") <= tol:
            break
    return _finish(z, res, trace, k, tol, stop, "picard", strict)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6, max_iter: int = 100,
             stop: str = "rel", strict: bool = False, memory: int = 20, beta: float = 1.0,
             lam: float = 1e-10) -> SolverResult:
    """Find z = f(z) by Anderson acceleration (Anderson, 1965; Walker & Ni, 2011).

    Keep the last ``memory`` iterates z_i, their images f(z_i) and residuals
    g_i = f(z_i) − z_i. Each step chooses, per sample, weights α with Σα_i = 1 that
    minimise ‖Σ α_i g_i‖², then mixes

        z_{k+1} = β Σ α_i f(z_i) + (1 − β) Σ α_i z_i.

    With H the Gram matrix of the g_i, the minimiser is α = y / Σy where
    (H + λI) y = 1: a small symmetric positive definite system, solved by Cholesky for
    the whole batch at once. H is updated by one row per step rather than recomputed,
    so a step costs one evaluation of f plus O(memory · size). The history holds
    2 × memory × batch × size numbers: for very large batches of a cheap, strongly
    contracting map, Picard iteration may be the better choice.

    Args:
        f, z0, tol, max_iter, stop, strict: as in :func:`picard`.
        memory: how many past iterates to mix (≥ 1; 1 is Picard with damping β).
        beta: mixing (damping) parameter in (0, 1].
        lam: Tikhonov regularisation, relative to the Gram matrix's largest diagonal
            entry (at least 10 × the dtype's epsilon). A sample whose system is singular
            even so takes a Picard step.
    Returns:
        :class:`SolverResult`.
    """
    _check_common(f, z0, tol, max_iter, stop)
    if not (isinstance(memory, int) and memory >= 1):
        raise ValueError(f"memory must be an integer >= 1; got memory={memory!r}")
    if not (0 < beta <= 1):
        raise ValueError(f"beta must lie in (0, 1]; got beta={beta!r}")
    if not (lam >= 0):
        raise ValueError(f"lam must be >= 0; got lam={lam!r}")

    bsz, shape = z0.shape[0], z0.shape
    d = z0[0].numel()
    # λ below the dtype's resolution would not regularise at all (1 + 1e-10 == 1 in float32)
    reg = max(lam, 10 * torch.finfo(z0.dtype).eps)
    F = z0.new_zeros(bsz, memory, d)                  # images f(z_i)
    Gt = z0.new_zeros(bsz, d, memory)                 # residuals g_i, as columns (see below)
    X = z0.new_zeros(bsz, memory, d) if beta < 1 else None   # iterates, only needed when damping
    H = z0.new_zeros(bsz, memory, memory)             # Gram matrix ⟨g_i, g_j⟩
    eye = torch.eye(memory, dtype=z0.dtype, device=z0.device)
    reg_eye = reg * eye
    ones = z0.new_ones(bsz, memory, 1)
    tiny = torch.finfo(z0.dtype).tiny
    trace: list[float] = []
    z = z0.reshape(bsz, d)
    for k in range(1, max_iter + 1):
        fz = _apply(f, z.reshape(shape), k, "anderson").reshape(bsz, d)
        g = fz - z
        res = g.detach().norm(dim=1)
        if stop == "rel":
            res = res / fz.detach().norm(dim=1).clamp_min(tiny)
        if _record(res, trace, k, "anderson") <= tol:
            break
        slot = (k - 1) % memory
        n = min(k, memory)
        if fz.requires_grad:  # unrolled backprop: in-place writes would break the graph
            F, Gt, H = F.clone(), Gt.clone(), H.clone()
            X = X.clone() if X is not None else None
        F[:, slot] = fz
        Gt[:, :, slot] = g
        if X is not None:
            X[:, slot] = z
        # (bsz, n): ⟨g_new, g_i⟩. Residuals are stored as columns because a batched
        # vector-times-matrix bmm is several times faster on CPUs than matrix-times-vector.
        row = torch.bmm(g.unsqueeze(1), Gt[:, :, :n]).squeeze(1)
        H[:, slot, :n] = row
        H[:, :n, slot] = row
        Hn = H[:, :n, :n]
        scale = Hn.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(tiny)
        # normalised by its largest diagonal entry, so that y stays O(1/reg) and never overflows
        L, info = torch.linalg.cholesky_ex(Hn / scale[:, None, None] + reg_eye[:n, :n])
        y = torch.cholesky_solve(ones[:, :n], L).squeeze(2)
        alpha = y / y.sum(dim=1, keepdim=True)
        # A sample whose system is still singular (collinear residuals) takes a plain
        # Picard step instead; decided on the device, without a host sync.
        alpha = torch.where((info == 0).unsqueeze(1), alpha, eye[slot, :n])
        z = torch.bmm(alpha.unsqueeze(1), F[:, :n]).squeeze(1)
        if X is not None:
            z = beta * z + (1 - beta) * torch.bmm(alpha.unsqueeze(1), X[:, :n]).squeeze(1)
    return _finish(fz.reshape(shape), res, trace, k, tol, stop, "anderson", strict)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6, max_iter: int = 100,
            stop: str = "rel", strict: bool = False, memory: int = 100) -> SolverResult:
    """Find z = f(z) by Broyden's ("good") quasi-Newton method (Broyden, 1965).

    Solve g(z) = f(z) − z = 0 with an approximation B ≈ (∂g/∂z)⁻¹, started at −I
    (so the first step is a Picard step), per sample. After a step Δz with change
    Δg in the residual, the rank-one update

        B ← B + (Δz − B Δg) Δzᵀ B / (Δzᵀ B Δg)

    makes B Δg = Δz. B is stored as −I + Σ u_i v_iᵀ; after ``memory`` updates it
    restarts from −I. No line search: the full step z ← z − B g.

    Args:
        f, z0, tol, max_iter, stop, strict: as in :func:`picard`.
        memory: how many rank-one updates to keep before restarting.
    Returns:
        :class:`SolverResult`.
    """
    _check_common(f, z0, tol, max_iter, stop)
    if not (isinstance(memory, int) and memory >= 1):
        raise ValueError(f"memory must be an integer >= 1; got memory={memory!r}")
    bsz, shape = z0.shape[0], z0.shape
    d = z0[0].numel()
    # B = −I + Σ_i u_i v_iᵀ, stored as rows: Us[:, i] = u_i, Vs[:, i] = v_i, each (bsz, memory, d)
    Us = z0.new_zeros(bsz, memory, d)
    Vs = z0.new_zeros(bsz, memory, d)
    n = 0  # pairs stored

    def low_rank(left, right, x):  # Σ_i left_i ⟨right_i, x⟩, per sample
        coef = (right[:, :n] * x.unsqueeze(1)).sum(dim=2)      # (bsz, n)
        return torch.bmm(coef.unsqueeze(1), left[:, :n]).squeeze(1)

    trace: list[float] = []
    z = z0.reshape(bsz, d)
    fz = _apply(f, z0, 1, "broyden").reshape(bsz, d)
    g = fz - z
    res = _residual(fz, z, stop)
    Bg = -g                      # B g with B = −I
    k = 1
    while _record(res, trace, k, "broyden") > tol and k < max_iter:
        k += 1
        dz = -Bg
        z = z + dz
        fz = _apply(f, z.reshape(shape), k, "broyden").reshape(bsz, d)
        g_new = fz - z
        res = _residual(fz, z, stop)
        dg = g_new - g
        g = g_new
        Bg_new = -g if n == 0 else -g + low_rank(Us, Vs, g)    # B g_new (old B)
        Bdg = Bg_new - Bg                                      # B Δg, by linearity
        vt = -dz if n == 0 else -dz + low_rank(Vs, Us, dz)     # Bᵀ Δz, i.e. Δzᵀ B
        denom = (vt * dg).sum(dim=1, keepdim=True)             # Δzᵀ B Δg
        # A (near-)zero denominator (e.g. g constant, as for z ↦ z + 1) carries no
        # curvature information: skip that sample's update rather than divide by 0.
        ok = denom.abs() > 1e-30 * (vt.norm(dim=1, keepdim=True) * dg.norm(dim=1, keepdim=True)).clamp_min(1e-300)
        safe = torch.where(ok, denom, torch.ones_like(denom))
        u = torch.where(ok, (dz - Bdg) / safe, torch.zeros_like(dz))
        if n == memory:
            # Restart from B = −I. (Dropping only the oldest pair is not a valid
            # inverse update: the later pairs were computed against it. It diverged.)
            n = 0
            Bg_new = -g
        if fz.requires_grad:  # unrolled backprop: in-place writes would break the graph
            Us, Vs = Us.clone(), Vs.clone()
        Us[:, n] = u
        Vs[:, n] = vt
        n += 1
        Bg = Bg_new + u * (vt * g).sum(dim=1, keepdim=True)   # B_new g = B g + u (vᵀ g)
    return _finish(fz.reshape(shape), res, trace, k, tol, stop, "broyden", strict)


SOLVERS: dict[str, Callable[..., SolverResult]] = {
    "picard": picard,
    "anderson": anderson,
    "broyden": broyden,
}


def solver_options(method: str) -> set[str]:
    """The keyword options that solver ``method`` accepts."""
    if method not in SOLVERS:
        raise ValueError(f"unknown solver method={method!r}; choose one of {sorted(SOLVERS)}")
    params = inspect.signature(SOLVERS[method]).parameters
    return {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(method: str, options: dict) -> None:
    """Raise TypeError for an option that ``method`` does not know (never ignore it silently)."""
    allowed = solver_options(method)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"solver {method!r} got unknown option(s) {unknown}; it accepts {sorted(allowed)}"
        )


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, *, method: str = "anderson", **options) -> SolverResult:
    """Find z = f(z) with the solver named by ``method`` ("picard", "anderson", "broyden").

    ``options`` are passed to that solver (``tol``, ``max_iter``, ``stop``, ``strict``,
    and the solver's own, such as Anderson's ``memory``). An option the solver does
    not accept raises TypeError: a misspelt option is never silently ignored.
    """
    check_options(method, options)
    return SOLVERS[method](f, z0, **options)
