r"""Fixed-point solvers: find z with z = f(z), batched over a leading dimension.

Every solver here treats ``z`` of shape ``(batch, ...)`` as ``batch`` independent systems:
residuals, the stopping rule and Anderson's mixing weights are per sample. One evaluation of
``f`` is one *step*; ``max_iter`` bounds the steps.

**The stopping rule.** For an iterate z of one sample let r = ‖f(z) − z‖ be its residual.
At the first step the solver records the size of the start, s₀ = max(‖z₀‖, ‖f(z₀)‖), and its
first residual, floored at the tolerance: r₀ = max(‖f(z₀) − z₀‖, tol·s₀). Then

* ``stop="abs"``: the sample's residual is ρ = r;
* ``stop="rel"`` (the default): ρ = r / s with the scale

  .. math::

      s = \min\bigl(\max(\lVert f(z)\rVert,\ s_0),\ s_0 r_0 / r\bigr).

The solve has *converged* when ρ ≤ ``tol`` in every sample; ``z`` is then that iterate.
Normally s = ‖f(z)‖ and ρ is the usual relative residual (torchdeq's ``stop_mode='rel'``).
The floor s₀ lets a fixed point at the origin be reached: for z ↦ z/2 the plain relative
residual ‖f(z) − z‖/‖f(z)‖ is 1 at every step, while here the residual must fall to
``tol`` times the size of the start. The cap s₀r₀/r lets the scale grow only as much as the
residual has shrunk: an iterate that runs away with a residual that does not shrink is never
accepted (for z ↦ z + 1 the plain relative residual falls like 1/k, although there is no
fixed point; here ρ stays 1). Near convergence on a problem whose fixed point is not far
larger than its start (‖z*‖² < s₀r₀/tol, e.g. ‖z*‖ < 1000 s₀ at tol 1e-6 from z₀ = 0) the
rule *is* the plain relative residual, so the verdict is the usual one; early on, while a
residual is still above its first value, ρ is larger than the plain relative residual.

*Diverging*: in relative mode, when ρ exceeds 10⁸ in some sample, i.e. when its residual
exceeds 10⁴·√(s₀r₀) (e.g. z ↦ 2z + 1); in absolute mode, when the largest residual exceeds
10⁴ times the largest s₀. The solve stops there.

*Stalled*: a residual cannot fall below the round-off of the dtype ``f`` computes in (about
its machine epsilon times the map's amplification). When the largest ρ has made no new
minimum in ``stall`` steps (default 30; ``stall=None`` turns this off, e.g. to run exactly
``max_iter`` steps) while that minimum is at most √eps of that dtype, the solve stops and
says which precision limits it and what tol it can meet (``stalled=True``). That dtype is
z's, or under ``torch.autocast`` the autocast dtype (bfloat16: eps 7.8e-3), since f's output
may be float32 after a bfloat16 product. A tol below the floor is thus reported once, in
words that name the precision, after about 30 wasted steps instead of ``max_iter``; it is
never met by quietly loosening it. A slow but steady solve makes a new minimum every step
and is never stopped by this test.

*Per sample*: the samples are independent systems. A sample that has met the tolerance is
no longer moved by Anderson's mixing or Broyden's secant steps (at round-off its residuals
are noise, and a system built from them is singular), and a sample whose Anderson weights
are not finite takes a fixed-point step instead: one sample never breaks the batch.
``SolverResult.sample_converged`` says which samples meet the rule.

A solve that did not converge (it diverged, stalled, or reached ``max_iter``) is flagged in
its result (``converged=False``, ``diverged``, ``stalled``) and warned with
:class:`ConvergenceWarning`, or raised as :class:`ConvergenceError` with ``strict=True``;
never silent. NaN or Inf from ``f`` raises :class:`FloatingPointError` at once, naming the
step, the samples and whether it came from a finite start (then f's other inputs are to
blame); finite values too large for a norm in the iterate's dtype (float32 squares overflow
above about 1.8e19) raise a FloatingPointError that says so. Contraction is not checked:
many useful maps converge without being contractions.

**dtypes.** The solvers iterate in float32 or float64. A float16, bfloat16, integer or
complex ``z0`` is refused with an error that says what to pass instead; ``f`` may compute in
half precision inside (e.g. under ``torch.autocast``): its output is cast to z0's dtype.
Options (``tol``, ``beta``, ``lam``, ...) accept Python and numpy numbers.

**Autograd.** The solvers run under the caller's autograd mode: under ``torch.no_grad()``
they keep no graph (the DEQ forward); with grad enabled and an ``f`` whose output requires
grad they keep the graph of every step (unrolled backprop) and write their histories out of
place.

**Warnings** point at the user's line, also through :func:`solve`, a DEQ layer or a
backward pass: ``warn_at_caller`` skips every frame inside deqlib and torch.

**Cost.** A step is one evaluation of f plus the solver's own work. On a CPU that work is
dominated by the fixed cost of each small tensor operation (a few µs each, against tens to
hundreds of µs for f), not by arithmetic, so the steps are written with few operations:
histories preallocated and written in place; Anderson mixes only every few steps (on the
reference problems this takes about as many steps), and then adds the new Gram rows with one
batched product, solves all samples' small systems with one LU call and mixes with one more
product; Broyden's two low-rank products with its stored pairs are fused into two batched
products. The host reads one number per step (the stopping test); ``check_every=k`` reads
it every k steps instead, which pays on accelerators, where a read waits for the device.
``torch.compile`` of the small operations did not pay on a CPU (25 s to compile, and 17 µs
per call against 5.5 µs eager for the stopping test). ``benchmarks/bench_solvers.py``
measures the cost of a step in units of one evaluation of f.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

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
    "solver_options",
]


class ConvergenceWarning(UserWarning):
    """A solver stopped (diverging, or at ``max_iter``) before its residual reached ``tol``."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`ConvergenceWarning` when a solver is called with strict=True."""


@dataclass
class SolverResult:
    """What a solve produced, and how it got there.

    Attributes:
        z: the last iterate whose residual was measured, shape ``(batch, ...)``: when
            ``converged`` is True, this z satisfies the stopping rule in every sample.
        converged: True when the largest residual in the batch reached ``tol``.
        steps: number of evaluations of ``f``.
        residuals: the largest residual ρ in the batch after each step (Python floats; with
            ``check_every > 1`` still one per step).
        final_residual: ρ of each sample for the returned z, shape ``(batch,)``.
        stop: ``"rel"`` or ``"abs"`` (see the module docstring for ρ).
        tol: the tolerance asked for.
        method: the solver's name.
        diverged: True when the solve was stopped because a residual grew without bound.
        stalled: True when the solve was stopped because its residual stopped falling at the
            round-off of the precision ``f`` computes in, above ``tol`` (module docstring).
    """

    z: Tensor
    converged: bool
    steps: int
    residuals: list[float] = field(repr=False)
    final_residual: Tensor = field(repr=False)
    stop: str
    tol: float
    method: str
    diverged: bool = False
    stalled: bool = False

    @property
    def sample_converged(self) -> Tensor:
        """Which samples meet the stopping rule at the returned z, shape ``(batch,)``, bool."""
        return self.final_residual <= self.tol

    def __repr__(self) -> str:  # short: a result is printed in notebooks
        last = self.residuals[-1] if self.residuals else float("nan")
        state = ", diverged=True" if self.diverged else ", stalled=True" if self.stalled else ""
        return (
            f"SolverResult(method={self.method!r}, converged={self.converged}{state}, "
            f"steps={self.steps}, residual={last:.2e} ({self.stop}), tol={self.tol:.0e})"
        )


# ----------------------------------------------------------------------------- warnings

_INTERNAL = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                  for m in (torch, sys.modules[__package__ or "deqlib"]))


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn at the user's line: the first frame outside deqlib and torch.

    ``warnings.warn(..., stacklevel=2)`` points one frame up, which is deqlib itself when the
    warning comes through :func:`solve`, a DEQ layer, ``nn.Module.__call__`` or a backward
    pass that torch's engine called. This walks up to the first frame that is neither, so the
    warning names the line the user wrote (and the ``"default"`` filter shows it once per line).
    """
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# ----------------------------------------------------------------------------- checks


def _real(name: str, value) -> float:
    """A Python or numpy real number as a float; bools and tensors are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = " (use .item() for a one-element tensor)" if isinstance(value, Tensor) else ""
        raise TypeError(f"{name} must be a real number; got {name}={value!r} "
                        f"of type {type(value).__name__}{hint}")
    return float(value)


def _count(name: str, value, minimum: int = 1) -> int:
    """A Python or numpy integer >= minimum, as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {name}={value!r} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {name}={value!r}")
    return int(value)


def _check_common(f, z0, tol, max_iter, stop, strict, check_every, stall):
    if not callable(f):
        raise TypeError("f must be callable (a map from z to a tensor of z's shape); "
                        f"got {type(f).__name__}")
    if not isinstance(z0, Tensor):
        raise TypeError("z0 must be a torch.Tensor of shape (batch, ...); "
                        f"got {type(z0).__name__}")
    if z0.dim() < 1:
        raise ValueError("z0 must have a leading batch dimension, shape (batch, ...); "
                         "got a 0-d tensor (use z0.reshape(1) for one scalar system)")
    if z0.dtype not in (torch.float32, torch.float64):
        if z0.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"z0 has dtype {z0.dtype}; the solvers iterate in float32 or float64 (their "
                "norms, Gram matrices and small linear solves need the range and precision). "
                "Pass z0.float(); f may still compute in half precision inside (e.g. under "
                "torch.autocast): its output is cast to z0's dtype.")
        raise TypeError(
            f"z0 has dtype {z0.dtype}; a fixed-point iterate is a real floating-point tensor: "
            "pass z0.float() (float32) or z0.double() (float64)")
    tol = _real("tol", tol)
    if not 0 < tol < math.inf:
        raise ValueError(f"tol must be a positive finite number; got tol={tol!r}")
    max_iter = _count("max_iter", max_iter)
    if stop not in ("rel", "abs"):
        raise ValueError(f"stop must be 'rel' (relative residual) or 'abs' (absolute); "
                         f"got stop={stop!r}")
    if strict not in (True, False):
        raise TypeError(f"strict must be True or False; got strict={strict!r}")
    check_every = _count("check_every", check_every)
    if stall is not None:
        _count("stall", stall)
    if z0.numel() and not torch.isfinite(z0).all():
        raise ValueError("z0 contains NaN or Inf; start the iteration from a finite point")
    return tol, max_iter, bool(strict), check_every


class _Map:
    """f on the solver's flat (batch, n) iterates, with f's output checked."""

    def __init__(self, f, z0: Tensor, method: str):
        self.f, self.shape, self.method = f, z0.shape, method
        self.flat = z0.dim() == 2
        self.dtype, self.device = z0.dtype, z0.device
        #: the least precise dtype f computes in: it sets how far a residual can fall. Under
        #: torch.autocast that is the autocast dtype (f's output may still be float32, after
        #: a bfloat16 product); else the least precise dtype f has returned.
        self.computes_in, self.autocast = z0.dtype, False
        device_type = z0.device.type
        if torch.is_autocast_enabled(device_type):
            low = torch.get_autocast_dtype(device_type)
            if torch.finfo(low).eps > torch.finfo(z0.dtype).eps:
                self.computes_in, self.autocast = low, True

    def __call__(self, z: Tensor, step: int) -> Tensor:
        # Tensor._version counts in-place writes (autograd's own check uses it); a map that
        # writes into its input would make the residual f(z) − z meaningless (0 for
        # z ↦ z.mul_(0.5).add_(1), "converged" at the wrong point). Where a torch lacks the
        # counter the check is skipped, never guessed.
        version = getattr(z, "_version", None)
        fz = self.f(z if self.flat else z.view(self.shape))
        if version is not None and z._version != version:
            raise ValueError(
                f"{self.method}: f modified its input in place at step {step} (e.g. z.mul_ or "
                "z += ...), so the residual f(z) − z means nothing; write f without in-place "
                "operations on z (z * 0.5 + 1, not z.mul_(0.5).add_(1))")
        if not isinstance(fz, Tensor) or fz.shape != self.shape:
            got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
            raise ValueError(f"{self.method}: f must return a tensor of z's shape "
                             f"{tuple(self.shape)}; got {got} at step {step}")
        if fz.dtype != self.dtype or fz.device != self.device:
            if not fz.is_floating_point() or fz.device != self.device:
                raise TypeError(
                    f"{self.method}: f returned a {fz.dtype} tensor on {fz.device} for a "
                    f"{self.dtype} z on {self.device}; f must return a floating-point tensor "
                    "on z's device")
            if torch.finfo(fz.dtype).eps > torch.finfo(self.computes_in).eps:
                self.computes_in = fz.dtype
            fz = fz.to(self.dtype)
        return fz if self.flat else fz.reshape(len(fz), -1)


# ----------------------------------------------------------------------------- the rule

_CONTINUE, _CONVERGED, _DIVERGED, _NONFINITE, _STALLED = 0, 1, 2, 3, 4
#: stalled: no new smallest residual in this many steps, while at most √eps of f's precision
_STALL_STEPS = 30
_RHO_DIVERGED = 1e8   # relative mode: ρ > 1e8 ⇔ r > 1e4·√(s₀r₀) (see the module docstring)
_ABS_GROWTH = 1e4     # absolute mode: the largest r beyond 1e4 × the largest s₀


class _Rule:
    """The stopping rule of one solve (module docstring): ρ per sample, the verdict, the trace."""

    def __init__(self, method, tol, stop, strict, check_every, max_iter, fmap=None,
                 stall: int | None = _STALL_STEPS):
        self.method, self.tol, self.stop, self.strict = method, tol, stop, strict
        self.stall_steps = stall
        self.check_every, self.max_iter = check_every, max_iter
        self.trace: list[float] = []
        self.pending: list[Tensor] = []
        self.fmap = fmap
        self.best, self.best_step = math.inf, 0   # the smallest largest-residual so far

    def stalled(self) -> bool:
        """No new smallest residual in ``stall`` steps, at round-off of f's precision.

        A residual cannot fall below what the dtype f computes in resolves (about its eps
        times the map's amplification): there the solver can only shuffle round-off. Only the
        "no new minimum" test is made against the trace, so a slow but steady solve (Picard at
        a factor 0.999 makes a new minimum every step) is never stopped by it.
        """
        trace, start = self.trace, len(self.trace) - self.check_every
        for i in range(max(start, 0), len(trace)):
            if trace[i] < self.best:
                self.best, self.best_step = trace[i], i + 1
        if self.stall_steps is None or len(trace) - self.best_step < self.stall_steps:
            return False
        computes_in = self.fmap.computes_in if self.fmap is not None else torch.float64
        return self.best <= math.sqrt(torch.finfo(computes_in).eps)

    def start(self, z0: Tensor, fz0: Tensor) -> Tensor:
        """Fix s₀ and r₀ from the first step (checking that norms do not overflow); its ρ."""
        with torch.no_grad():
            r0 = torch.linalg.vector_norm(fz0 - z0, dim=1)
            s0 = torch.maximum(torch.linalg.vector_norm(z0, dim=1),
                               torch.linalg.vector_norm(fz0, dim=1))
            if not bool(torch.isfinite(s0 + r0).all()):   # both finite (both are ≥ 0)
                self.nonfinite(1, z0, fz0)
            tiny = torch.finfo(z0.dtype).tiny
            floor = self.tol * s0 if self.stop == "rel" else torch.full_like(r0, self.tol)
            #: r₀ floored at the tolerance: the rule's r₀, and Anderson's Gram scale
            self.r0 = torch.maximum(r0, floor).clamp_min(math.sqrt(tiny))
            if self.stop == "abs":
                self.limit = _ABS_GROWTH * max(s0.max().item(), tiny)
                return r0
            self.limit = _RHO_DIVERGED
            self.s0 = s0.clamp_min(tiny)
            self.c = (self.s0 * self.r0).clamp_min(tiny)
            # At the first step s = min(max(‖f(z₀)‖, s₀), s₀r₀/r) = s₀.
            return r0 / self.s0

    def value(self, r: Tensor, a: Tensor | None) -> Tensor:
        """ρ per sample from r = ‖f(z) − z‖ and a = ‖f(z)‖ (unused when stop="abs")."""
        if a is None:
            return r
        return r / torch.clamp(a, self.s0, self.c / r)

    def check(self, rho: Tensor, step: int) -> int:
        """Read the largest ρ on the host (every ``check_every`` steps) and decide."""
        if self.check_every == 1:
            worst = rho.max().item()
            self.trace.append(worst)
        else:
            self.pending.append(rho.max())
            if step % self.check_every and step < self.max_iter:
                return _CONTINUE
            values = torch.stack(self.pending).tolist()
            self.pending.clear()
            self.trace.extend(values)
            if not all(math.isfinite(v) for v in values):
                return _NONFINITE
            worst = values[-1]
            if max(values) > self.limit:
                return _DIVERGED
        if worst <= self.tol:
            return _CONVERGED
        if not math.isfinite(worst):
            return _NONFINITE
        if worst > self.limit:
            return _DIVERGED
        return _STALLED if self.stalled() else _CONTINUE

    def nonfinite(self, step: int, z: Tensor, fz: Tensor):
        """Raise the FloatingPointError that says why a residual is not finite."""
        method, dtype = self.method, z.dtype
        first = next((i + 1 for i, v in enumerate(self.trace) if not math.isfinite(v)), step)
        if first < step:   # read with check_every > 1: the first step whose residual was not
            step = first   # finite is where f (or the solver) produced it
            if method == "picard" or not torch.isfinite(fz).all():
                raise FloatingPointError(
                    f"{method}: f returned NaN or Inf at step {step} (found at step "
                    f"{len(self.trace)}, check_every={self.check_every}): f is undefined or "
                    "overflows there. Check that the map has a fixed point near z0, or damp it.")
        if not torch.isfinite(z).all():   # the safeguards exist so that this never happens
            raise FloatingPointError(
                f"{method}: its own iterate became NaN or Inf at step {step}, although f's "
                "outputs were finite: a defect of the solver, please report it with the map. "
                "Meanwhile method='picard' avoids it.")
        if not torch.isfinite(fz).all():
            bad = (~torch.isfinite(fz).reshape(len(fz), -1).all(1)).nonzero().flatten()
            where = f"sample(s) {bad[:5].tolist()}{' …' if len(bad) > 5 else ''}"
            if step == 1:
                raise FloatingPointError(
                    f"{method}: f returned NaN or Inf at step 1, from a finite z0, in "
                    f"{where}: f itself produces it. Check f's other inputs (a layer's input "
                    "x, its parameters) for NaN or Inf.")
            largest = z.abs().max().item()
            raise FloatingPointError(
                f"{method}: f returned NaN or Inf at step {step}, from a finite iterate "
                f"(largest entry {largest:.3g}), in {where}: f is undefined or overflows "
                "there. Check that the map has a fixed point near z0, or damp the map.")
        largest = max(z.abs().max().item(), fz.abs().max().item())
        raise FloatingPointError(
            f"{method}: at step {step} the iterates reach {largest:.3g}: finite, but the norm "
            f"of such a vector overflows {dtype} (its squares exceed "
            f"{torch.finfo(dtype).max:.3g}). Rescale the problem, or use float64.")

    def finish(self, z: Tensor, fz: Tensor, rho: Tensor, steps: int, status: int,
               shape) -> SolverResult:
        if status == _NONFINITE:
            self.nonfinite(steps, z, fz)
        converged, diverged = status == _CONVERGED, status == _DIVERGED
        stalled = status == _STALLED
        if not converged:
            last, first = self.trace[-1], self.trace[0]
            if stalled:
                computes_in = self.fmap.computes_in
                precision = str(computes_in).replace("torch.", "")
                within = (" (f computes in it under torch.autocast)" if self.fmap.autocast
                          else "" if computes_in == z.dtype else " (f returns it)")
                why = (f"stopped at step {steps}: its residual stopped falling at "
                       f"{self.best:.1e} ({self.stop}), above tol={self.tol:.0e}, and has not "
                       f"fallen in {self.stall_steps} steps. That is the level of the round-off "
                       f"of {precision}{within}, whose machine epsilon is "
                       f"{torch.finfo(computes_in).eps:.1e}: a tol below it cannot be met. Use "
                       f"tol >= {10 ** math.ceil(math.log10(self.best)):.0e}, or compute f in "
                       "a more precise dtype (or, if f's own round-off is far below this "
                       "level, the solver has stagnated: try another method).")
            elif diverged:
                why = (f"diverging: the largest residual grew to {last:.3e} ({self.stop}) at "
                       f"step {steps}. The map is probably expanding near z0 (not a "
                       "contraction there); check f, start nearer a fixed point, or damp it.")
            else:
                trend = (f"it is still shrinking ({last / first:.1e} of the first step's): "
                         "raise max_iter, or use a faster solver"
                         if last < 0.5 * first else
                         "it did not shrink: the map may have no fixed point near z0")
                why = (f"did not converge: residual {last:.3e} ({self.stop}) > "
                       f"tol={self.tol:.1e} after max_iter={steps} steps; {trend}.")
            message = f"{self.method} {why}"
            if self.strict:
                raise ConvergenceError(message)
            warn_at_caller(message, ConvergenceWarning)
        return SolverResult(z=z.reshape(shape), converged=converged, steps=steps,
                            residuals=self.trace, final_residual=rho.detach(),
                            stop=self.stop, tol=self.tol, method=self.method,
                            diverged=diverged, stalled=stalled)


def _empty(z0: Tensor, tol: float, stop: str, method: str) -> SolverResult:
    """An empty batch: nothing to solve, and every (no) sample satisfies the rule."""
    return SolverResult(z=z0, converged=True, steps=0, residuals=[],
                        final_residual=z0.new_zeros(0), stop=stop, tol=tol, method=method)


# ----------------------------------------------------------------------------- solvers


def picard(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6,
           max_iter: int = 100, stop: str = "rel", strict: bool = False,
           check_every: int = 1, stall: int | None = 30) -> SolverResult:
    """Find z = f(z) by plain fixed-point (Picard) iteration, z_{k+1} = f(z_k).

    If f is a contraction with factor q < 1 (‖f(a) − f(b)‖ ≤ q‖a − b‖), Banach's theorem
    gives a unique fixed point z* and ‖z_k − z*‖ ≤ q^k ‖z_0 − z*‖. One evaluation of f
    per step, no extra memory.

    Args:
        f: map from a ``(batch, ...)`` tensor to one of the same shape.
        z0: starting point, shape ``(batch, ...)``, float32 or float64.
        tol: stop when the largest per-sample residual ρ is at most ``tol``.
        max_iter: the most evaluations of ``f``.
        stop: ``"rel"`` or ``"abs"``: the residual ρ of the module docstring.
        strict: raise :class:`ConvergenceError` instead of warning when not converged.
        check_every: read the stopping test on the host every this many steps (1 on a CPU;
            more saves device synchronisations on an accelerator, at the price of up to
            ``check_every − 1`` extra steps).
        stall: stop (stalled, warned) when the residual, already at the round-off of the
            precision f computes in, has made no new minimum in this many steps (module
            docstring); ``None`` never stops early, e.g. to run exactly ``max_iter`` steps
            with an unreachable tol.
    Returns:
        :class:`SolverResult`.
    """
    tol, max_iter, strict, check_every = _check_common(f, z0, tol, max_iter, stop, strict,
                                                       check_every, stall)
    if len(z0) == 0:
        return _empty(z0, tol, stop, "picard")
    fmap = _Map(f, z0, "picard")
    rule = _Rule("picard", tol, stop, strict, check_every, max_iter, fmap, stall)
    norm, rel = torch.linalg.vector_norm, stop == "rel"
    z = z0.reshape(len(z0), -1)
    fz = fmap(z, 1)
    rho = rule.start(z.detach(), fz.detach())
    track = fz.requires_grad
    k = 1
    while True:
        status = rule.check(rho, k)
        if status or k == max_iter:
            break
        z, k = fz, k + 1
        fz = fmap(z, k)
        g, fd = fz - z, fz
        if track:
            g, fd = g.detach(), fz.detach()
        rho = rule.value(norm(g, dim=1), norm(fd, dim=1) if rel else None)
    return rule.finish(z, fz, rho, k, status, z0.shape)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6,
             max_iter: int = 100, stop: str = "rel", strict: bool = False,
             check_every: int = 1, stall: int | None = 30, memory: int = 12,
             mix_every: int | None = None, beta: float = 1.0,
             lam: float = 1e-4) -> SolverResult:
    r"""Find z = f(z) by Anderson acceleration (Anderson, 1965; Walker & Ni, 2011), mixing
    every ``mix_every`` steps (periodic Pulay mixing: Banerjee, Suryanarayana & Pask, 2016).

    Keep the last p = ``memory`` images f(z_i) and residuals g_i = f(z_i) − z_i, from every
    step. On a mixing step choose, per sample, weights α with Σα_i = 1 that minimise
    ‖Σ α_i g_i‖², and mix

    .. math::

        z_{k+1} = \beta \sum_i \alpha_i f(z_i) + (1 - \beta) \sum_i \alpha_i z_i;

    the steps between are fixed-point steps z_{k+1} = f(z_k). ``mix_every=1`` is classical
    Anderson acceleration.

    The weights solve, for the whole batch at once (one LU solve of small systems),

    .. math::

        \begin{pmatrix} H + \lambda\,\mathrm{diag}(H) & 1 \\ 1^\top & 0 \end{pmatrix}
        \begin{pmatrix} \alpha \\ \mu \end{pmatrix} =
        \begin{pmatrix} 0 \\ 1 \end{pmatrix},

    with H the Gram matrix ⟨g_i, g_j⟩ / r₀² (r₀ the first residual, so that its entries are
    O(1)). The regularisation λ diag(H) is relative to each residual's own size (a tiny
    absolute floor keeps the system regular when a residual is exactly 0). A mixing step adds
    to H the rows of the residuals stored since the last mixing step (one batched product)
    and mixes (one more); the steps between only store f(z) and g. The histories hold
    2 × p × batch × size numbers.

    Defaults: p = 12, mixing every ⌈p/2⌉ = 6 steps, λ = 1e-4. On the pinned reference
    problems (batch 64 × width 256 and 32 × 512, ρ ∈ {0.9, 0.99}, tol ∈ {1e-4, 1e-6}) the
    grid p ∈ {5, 8, 10, 12, 16, 20} × mix_every ∈ {1, ⌈p/2⌉, p} was timed five times
    (``benchmarks/bench_solvers.py --sweep``, results/solvers_defaults.json; two sweeps before
    the steps were rewritten in place, three after). The score is the geometric-mean time
    relative to the fastest setting of each problem. p = 12 with mix_every = 6 scored 1.14,
    1.07, 1.09, 1.06 and 1.12: best in the first two, tied in the fourth, and within 7 % of
    the best otherwise (p = 10 with mix_every 5 at 1.04, p = 20 with mix_every 20 at 1.05).
    The leading settings differ by less than the noise between sweeps; p = 12 needs the
    fewest steps of them where the problem is hardest (135 at ρ = 0.99, tol 1e-6, width 256,
    against 150 and 149). Every classical setting (mix_every = 1) was slower
    (1.4–2.5): mixing every step costs a small solve and two passes over the histories per
    step, and saves few steps or none on these problems. λ between 0 and 1e-2 changed the
    steps by at most 5 %; 1e-4 is the largest value with no measurable effect, kept as a
    guard against nearly collinear residuals.

    Args:
        f, z0, tol, max_iter, stop, strict, check_every, stall: as in :func:`picard`.
        memory: p, how many past steps to mix (≥ 1; 1 is Picard with damping β).
        mix_every: mix every this many steps, 1 ≤ mix_every ≤ memory (default ⌈p/2⌉).
        beta: mixing (damping) parameter in (0, 1], applied on mixing steps.
        lam: λ ≥ 0, the Tikhonov regularisation relative to each diagonal entry of H.
    Returns:
        :class:`SolverResult`.
    """
    tol, max_iter, strict, check_every = _check_common(f, z0, tol, max_iter, stop, strict,
                                                       check_every, stall)
    p = _count("memory", memory)
    every = (p + 1) // 2 if mix_every is None else _count("mix_every", mix_every)
    if every > p:
        raise ValueError(f"mix_every must be at most memory={p} (a mixing step uses the "
                         f"residuals stored since the last one); got mix_every={every}")
    beta = _real("beta", beta)
    if not 0 < beta <= 1:
        raise ValueError(f"beta must lie in (0, 1]; got beta={beta!r}")
    lam = _real("lam", lam)
    if not 0 <= lam < math.inf:
        raise ValueError(f"lam must be a finite number >= 0; got lam={lam!r}")
    if len(z0) == 0:
        return _empty(z0, tol, stop, "anderson")
    fmap = _Map(f, z0, "anderson")
    rule = _Rule("anderson", tol, stop, strict, check_every, max_iter, fmap, stall)
    norm, rel = torch.linalg.vector_norm, stop == "rel"
    b = len(z0)
    z = z0.reshape(b, -1)
    d, dtype, device = z.shape[1], z.dtype, z.device
    fz = fmap(z, 1)
    rho = rule.start(z.detach(), fz.detach())
    track = fz.requires_grad

    # FG[0, :, i] = f(z_i) and FG[1, :, i] = g_i: one norm call gives ‖f(z)‖ and ‖g‖ of a slot,
    # and F = FG[0], G = FG[1] are each contiguous, (batch, p, size).
    FG = z.new_zeros(2, b, p, d)
    # The bordered system [[H, 1], [1ᵀ, 0]] [α; μ] = [0; 1] gives α with Σα = 1 directly.
    # Slots not yet used have H = I and border 0, so that their α is 0.
    K = z.new_zeros(b, p + 1, p + 1)
    K.diagonal(dim1=1, dim2=2)[:, :p] = 1   # (Tensor.repeat of an eye costs ~0.5 ms)
    rhs = z.new_zeros(p + 1, 1)
    rhs[p] = 1
    rhs_b, solution = rhs.expand(b, p + 1, 1), z.new_empty(b, p + 1, 1)
    eye = torch.eye(p, dtype=dtype, device=device)
    inv_r0 = (1 / rule.r0 ** 2).view(b, 1, 1)
    # A tiny absolute floor on the diagonal keeps the system regular when a residual is 0.
    floor = math.sqrt(torch.finfo(dtype).tiny)
    blocks = {}   # first slot of a mixing step's new residuals → what its update needs
    F, G = FG
    KH = K[:, :p, :p]
    Kn = torch.empty_like(K)     # K with H normalised, the matrix that is factored
    KnH = Kn[:, :p, :p]

    def block(first: int):
        if first not in blocks:
            if first + every <= p:   # consecutive slots: views, written in place
                sl = slice(first, first + every)
                index, rows, views = sl, eye[sl], (G[:, sl], KH[:, sl], KH[:, :, sl])
            else:
                slots = [(first + t) % p for t in range(every)]
                index, rows, views = torch.tensor(slots, device=device), eye[slots], (None,) * 3
            # each new row is scaled by 1/r₀², and its diagonal entry by (1 + λ)
            blocks[first] = (index, inv_r0 * (1 + lam * rows), floor * rows, *views)
        return blocks[first]

    Fs, Gs, pairs = F.unbind(1), G.unbind(1), FG.unbind(2)   # views per slot
    norms = z.new_empty(2, b)   # ‖f(z)‖ and ‖g‖ of the last step, written in place
    a, r = norms.unbind()
    bordered = 0   # slots that have entered the constraint Σα = 1 (the border of K)
    k = 1
    while True:
        slot = (k - 1) % p
        if track:   # unrolled backprop: the histories are written out of place
            FG = FG.clone()
            FG[0, :, slot], FG[1, :, slot] = fz, fz - z
            pair = FG[:, :, slot].detach()
        else:
            pair = pairs[slot]
            Fs[slot].copy_(fz)
            torch.sub(fz, z, out=Gs[slot])
        if k > 1:
            if track:
                a, r = norm(pair, dim=2).unbind()
            else:
                norm(pair, dim=2, out=norms)
            rho = rule.value(r, a if rel else None)
        status = rule.check(rho, k)
        if status or k == max_iter:
            break
        if k % every:
            z = fz                                   # a fixed-point step
        else:                                        # a mixing step
            index, scale, diag, new, K_rows, K_cols = block((k - every) % p)
            if track:
                F, G, K = FG[0], FG[1], K.clone()
                KH = K[:, :p, :p]
            if bordered < min(k, p):   # the slots used so far enter the constraint
                bordered = min(k, p)
                K[:, p, :bordered] = K[:, :bordered, p] = 1
            if isinstance(index, slice) and not track:
                rows = torch.addcmul(diag, torch.bmm(new, G.mT), scale)   # (b, every, p)
                K_rows.copy_(rows)
                K_cols.copy_(rows.mT)
            else:
                if isinstance(index, slice):
                    index = torch.arange(index.start, index.stop, device=device)
                rows = torch.addcmul(diag, torch.bmm(G.index_select(1, index), G.mT), scale)
                KH.index_copy_(1, index, rows).index_copy_(2, index, rows.mT)
            # H divided by its largest diagonal entry, per sample: α does not change (the
            # constraint row is homogeneous), but a sample whose residuals have fallen to
            # round-off (H ~ 1e-16) no longer mixes entries of that size with the border's 1s
            # in one LU, which lost every digit in float32 and made the system singular.
            if track:
                Kn = K.clone()
                Kn[:, :p, :p] = KH / KH.diagonal(dim1=1, dim2=2).amax(1).view(b, 1, 1)
                alpha = torch.linalg.solve_ex(Kn, rhs)[0][:, :p].mT         # (b, 1, p)
            else:   # solve_ex's two steps, into a solution allocated once
                Kn.copy_(K)
                KnH.div_(KH.diagonal(dim1=1, dim2=2).amax(1).view(b, 1, 1))
                LU, pivots, _ = torch.linalg.lu_factor_ex(Kn)
                alpha = torch.linalg.lu_solve(LU, pivots, rhs_b, out=solution)[:, :p].mT
            mixed = torch.bmm(alpha, F).view(b, d)
            if beta < 1:   # β Σα f_i + (1 − β) Σα z_i, with z_i = f_i − g_i
                mixed = torch.baddbmm(mixed.unsqueeze(1), alpha, G, alpha=beta - 1).view(b, d)
            # The safeguard: a sample that has met the tolerance is not mixed (its residuals
            # are at round-off, so its system says nothing), and a sample whose weights are
            # not finite takes a fixed-point step instead; neither stops the others.
            keep = torch.isfinite(mixed).all(1, keepdim=True) & (rho > tol).unsqueeze(1)
            z = torch.where(keep, mixed, fz)
        k += 1
        fz = fmap(z, k)
    return rule.finish(z, fz, rho, k, status, z0.shape)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, *, tol: float = 1e-6,
            max_iter: int = 100, stop: str = "rel", strict: bool = False,
            check_every: int = 1, stall: int | None = 30,
            memory: int = 10) -> SolverResult:
    r"""Find z = f(z) by Broyden's ("good") quasi-Newton method (Broyden, 1965).

    Solve g(z) = f(z) − z = 0 with an estimate H_k of the inverse Jacobian (∂g/∂z)⁻¹, per
    sample, started at −I (so the first step is a fixed-point step), and full steps
    z_{k+1} = z_k − H_k g_k. After a step Δz with change Δg in the residual, the rank-one
    update

    .. math::

        H_{k+1} = H_k + \frac{(\Delta z - H_k \Delta g)\, \Delta z^\top H_k}
                             {\Delta z^\top H_k \Delta g}

    makes H_{k+1} Δg = Δz. H_k is stored as −I + Σ u_i v_iᵀ, the u_i and v_i interleaved in
    one buffer, so that H_k g and H_kᵀ Δz come from two batched products. A sample with
    Δzᵀ H_k Δg = 0 (e.g. g constant, as for z ↦ z + 1) skips the update. After ``memory``
    updates H restarts from −I: a step costs O(memory · size), and dropping only the oldest
    pair is not a valid inverse update (the later pairs were computed against it).
    No line search.

    Default memory 10: on the pinned reference problems (see :func:`anderson`) memory 10 was
    the fastest of {10, 20, 30, 50} in all five timed sweeps (scores 1.04, 1.00, 1.02, 1.01,
    1.01; memory 20: 1.06, 1.11, 1.10, 1.09, 1.13), although 20 needs fewer steps where the
    problem is hard (147 against 188 at ρ = 0.99, tol 1e-6, width 256): a step costs two
    batched products with the stored pairs, so a longer memory costs more per step than it
    saves in steps.

    Args:
        f, z0, tol, max_iter, stop, strict, check_every, stall: as in :func:`picard`.
        memory: how many rank-one updates to keep before restarting.
    Returns:
        :class:`SolverResult`.
    """
    tol, max_iter, strict, check_every = _check_common(f, z0, tol, max_iter, stop, strict,
                                                       check_every, stall)
    m = _count("memory", memory)
    if len(z0) == 0:
        return _empty(z0, tol, stop, "broyden")
    fmap = _Map(f, z0, "broyden")
    rule = _Rule("broyden", tol, stop, strict, check_every, max_iter, fmap, stall)
    norm, rel, vecdot = torch.linalg.vector_norm, stop == "rel", torch.linalg.vecdot
    b = len(z0)
    z = z0.reshape(b, -1)
    d = z.shape[1]
    fz = fmap(z, 1)
    rho = rule.start(z.detach(), fz.detach())
    track = fz.requires_grad

    # W holds v_0, w_0, v_1, w_1, ..., with H = −I − Σ w_i v_iᵀ (w_i = −u_i). With
    # T = [g, Δz], P = T Wᵀ holds ⟨g, v_i⟩ and ⟨Δz, w_i⟩; swapping each pair of coefficients
    # and masking gives Q with Q W = [Σ w_i ⟨v_i, g⟩, Σ v_i ⟨w_i, Δz⟩]: [H g, Hᵀ Δz] = −T − Q W.
    # Since Δz = −H_k g_k, the update needs no H Δg: (Δz − H_k Δg) = −H_k g_{k+1}, and
    # Δzᵀ H_k Δg = ⟨Δz, H_k g_{k+1}⟩ + ‖Δz‖².
    W = z.new_zeros(b, 2 * m, d)
    mask = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=z.dtype, device=z.device).view(2, 1, 2)
    T = [z.new_empty(b, 2, d), z.new_empty(b, 2, d)]   # [g, Δz] of this step and the last
    # Views made once (each indexing of a tensor costs about a µs): g and Δz in T; the stored
    # pairs W[:, :2n], their transposes and the slots of pair n when first needed.
    Tg, Tdz = (T[0][:, 0], T[1][:, 0]), (T[0][:, 1], T[1][:, 1])
    views: list = [None] * m

    def pairs(n: int):
        if views[n] is None:
            Wn = W[:, :2 * n]
            views[n] = (Wn, Wn.mT, W[:, 2 * n], W[:, 2 * n + 1])
        return views[n]
    g = fz - z
    if track:
        dz = g                                          # the first step: H = −I, Δz = g
    else:
        Tg[1].copy_(g)
        dz = Tdz[0].copy_(g)
    n, k = 0, 1                                         # pairs stored, steps
    zero = z.new_zeros(())
    status = rule.check(rho, k)
    while not status and k < max_iter:
        z = z + dz
        k += 1
        fz = fmap(z, k)
        if track:
            g_old, g = g, fz - z
            Tk = torch.stack((g, dz), dim=1)
            gd, fd = g.detach(), fz.detach()
        else:
            Tk = T[k % 2]
            g = gd = torch.sub(fz, z, out=Tg[k % 2])
            fd = fz
        rho = rule.value(norm(gd, dim=1), norm(fd, dim=1) if rel else None)
        status = rule.check(rho, k)
        if status or k == max_iter:
            break
        if n == m:                                      # restart from H = −I
            n = 0
        if n == 0 or track:
            if n == 0:
                # H = −I: H g = −g, v = Hᵀ Δz = −Δz, and Δz − H Δg = Δz + Δg
                Hg, v = -g, -dz
                dg = g - (g_old if track else Tg[(k - 1) % 2])
                num = dz + dg
                den = vecdot(v, dg)
            else:
                Wn = W[:, :2 * n]
                P = torch.bmm(Tk, Wn.mT).view(b, 2, n, 2)
                Q = (P.flip(-1) * mask).view(b, 2, 2 * n)
                HT = torch.baddbmm(Tk, Q, Wn, beta=-1, alpha=-1)
                Hg, v = HT[:, 0], HT[:, 1]              # H g, and v = Hᵀ Δz (i.e. Δzᵀ H)
                num = torch.neg(Hg)
                den = vecdot(dz, Hg) + vecdot(dz, dz)
            # 1/(Δzᵀ H Δg), and 0 (no update) where that is 0
            if track:   # a where that keeps 1/0 out of the graph (its gradient would be NaN)
                zero_den = den == 0
                inv = torch.where(zero_den, 0.0, 1 / torch.where(zero_den, 1.0, den))
                inv = inv.unsqueeze(1)
            else:
                inv = torch.nan_to_num(den.reciprocal(), posinf=0.0, neginf=0.0).unsqueeze(1)
            # H_new g = H g + u ⟨v, g⟩ with u = num·inv; the next step is Δz = −H_new g.
            vg = vecdot(v, g).unsqueeze(1)
            u = num * inv
            if track:
                W = W.index_copy(1, torch.tensor([2 * n, 2 * n + 1], device=z.device),
                                 torch.stack((v, -u), dim=1))
                dz = -torch.addcmul(Hg, u, vg)
            else:
                _, _, Wv, Ww = pairs(n)
                Wv.copy_(v)
                torch.neg(u, out=Ww)
                dz = torch.neg(torch.addcmul(Hg, u, vg), out=Tdz[(k + 1) % 2])
        else:   # the same arithmetic as above, in fewer operations
            Wn, WnT, Wv, Ww = pairs(n)
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
        # The safeguard: a sample that has met the tolerance stops moving (its residuals are
        # at round-off, where a secant update divides noise by noise and sent such samples far
        # off while the others still iterated). Its Δz = 0 then gives Δg = 0 and a zero
        # denominator: no update. (A non-finite step needs a denominator of about 1e-30 that
        # this prevents; a per-step test for it cost 10 % of a step, so it is not made.)
        active = (rho > tol).unsqueeze(1)
        dz = torch.where(active, dz, zero, **({} if track else {"out": Tdz[(k + 1) % 2]}))
        n += 1
    return rule.finish(z, fz, rho, k, status, z0.shape)


SOLVERS: dict[str, Callable[..., SolverResult]] = {
    "picard": picard,
    "anderson": anderson,
    "broyden": broyden,
}


def solver_options(method: str) -> set[str]:
    """The keyword options that solver ``method`` accepts."""
    if method not in SOLVERS:
        raise ValueError(f"unknown solver method={method!r}; choose one of {sorted(SOLVERS)}")
    return set(_keywords(SOLVERS[method]))


@functools.cache
def _keywords(solver: Callable) -> frozenset[str]:
    # inspect.signature costs tens of µs: read it once per solver, not once per solve
    params = inspect.signature(solver).parameters
    return frozenset(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_options(method: str, options: dict) -> None:
    """Raise TypeError for an option that ``method`` does not know (never ignore it silently)."""
    allowed = solver_options(method)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"solver {method!r} got unknown option(s) {unknown}; it accepts {sorted(allowed)}"
        )


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, *, method: str = "anderson",
          **options) -> SolverResult:
    """Find z = f(z) with the solver named by ``method`` ("picard", "anderson", "broyden").

    ``options`` are passed to that solver (``tol``, ``max_iter``, ``stop``, ``strict``,
    ``check_every``, and the solver's own, such as Anderson's ``memory``). An option the
    solver does not accept raises TypeError naming it and listing the valid ones: a misspelt
    option is never silently ignored.
    """
    check_options(method, options)
    return SOLVERS[method](f, z0, **options)
