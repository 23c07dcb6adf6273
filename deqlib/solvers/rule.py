"""The stopping rule of a solve (:class:`_Rule`), f as the solvers call it (:class:`_Map`),
and the checks of f and z0 that every solver makes. The rule itself is specified in the
docstring of :mod:`deqlib.solvers`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import validate
from .result import ConvergenceError, ConvergenceWarning, SolverResult, warn_at_caller


def running_transforms() -> list[str] | None:
    """The torch.func transforms running now, outermost first (``["vmap", "grad"]``), read
    from torch's (private) interpreter stack; None where this torch has no such function."""
    stack = getattr(getattr(torch._C, "_functorch", None), "get_interpreter_stack", None)
    if stack is None:
        return None
    return [level.key().name.lower() for level in (stack() or ())]


def torch_func_error(owner: str, transform: str, cause: str = "") -> RuntimeError:
    """The error of ``owner`` run inside the torch.func ``transform`` it cannot follow,
    written once for the solvers, the DEQ layers and the DELM. ``cause`` names the
    data-dependent decision (default: the solvers' stopping test)."""
    cause = cause or ("the solve stops when a residual is small, a data-dependent decision "
                      "(read on the host)")
    return RuntimeError(
        f"{owner} cannot run inside {transform}: {cause}, which torch.func transforms cannot "
        "trace. Use torch.autograd.grad or .backward() for gradients (and "
        "torch.autograd.functional.jacobian for Jacobians), and instead of vmap pass the "
        "batch as the leading dimension: deqlib batches it already (every sample is solved "
        "as its own system).")


def check_start(f, z0) -> None:
    """Refuse an f that is not callable and a z0 the solvers cannot iterate from."""
    validate.function("f", f, "f(z), a map from z to a tensor of z's shape")
    if not isinstance(z0, Tensor):
        raise TypeError("z0 must be a torch.Tensor of shape (batch, ...); "
                        f"got {type(z0).__name__}")
    if z0.dim() < 1:
        raise ValueError("z0 must have a leading batch dimension, shape (batch, ...); "
                         "got a 0-d tensor (use z0.reshape(1) for one scalar system)")
    if z0.device.type == "meta":
        raise ValueError(
            "z0 is on the meta device: it has a shape but no values, and a solve reads the "
            "residual's value at every step. Create z0 on a real device (torch.zeros(shape, "
            "device='cpu' or 'cuda')), e.g. after model.to_empty(device=...) and "
            "initialising the parameters of a model built on 'meta'.")
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
    if z0.numel() and not torch.isfinite(z0).all():
        raise ValueError("z0 contains NaN or Inf; start the iteration from a finite point")


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
            if fz.device.type == "meta":
                raise TypeError(
                    f"{self.method}: f returned a tensor on the meta device (shape only, no "
                    f"values) for z on {self.device} at step {step}: f holds parameters or "
                    "buffers on 'meta'. Materialise them first (module.to_empty(device=...) "
                    "and initialise them, or load a state_dict with assign=True).")
            if not fz.is_floating_point() or fz.device != self.device:
                raise TypeError(
                    f"{self.method}: f returned a {fz.dtype} tensor on {fz.device} for a "
                    f"{self.dtype} z on {self.device}; f must return a floating-point tensor "
                    "on z's device")
            if torch.finfo(fz.dtype).eps > torch.finfo(self.computes_in).eps:
                self.computes_in = fz.dtype
            fz = fz.to(self.dtype)
        return fz if self.flat else fz.reshape(len(fz), -1)


_CONTINUE, _CONVERGED, _DIVERGED, _NONFINITE, _STALLED = 0, 1, 2, 3, 4
#: stalled: no new smallest residual in this many steps, while at the round-off floor of f's
#: precision (:func:`stall_floor`)
_STALL_STEPS = 30
#: the floor is min(√eps, _FLOOR_EPS · eps): round-off residuals of the tanh maps of the scan
#: and the reference problem sit at 0.03-6 eps in float64, float32 and bfloat16, so 1000 eps
#: leaves a margin of about 100; √eps alone (1.5e-8 in float64) stopped Broyden on a
#: non-monotone stretch at 6e-9 of a solve that converges to 1e-10 (tests/test_solvers_precision)
_FLOOR_EPS = 1e3


def stall_floor(dtype: torch.dtype) -> float:
    """The largest residual the stall test treats as round-off of ``dtype``: min(√eps, 1000 eps)
    (float64 2.2e-13, float32 1.2e-4, bfloat16 and float16 √eps: 8.8e-2 and 3.1e-2)."""
    eps = torch.finfo(dtype).eps
    return min(math.sqrt(eps), _FLOOR_EPS * eps)
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

        A residual cannot fall below what the dtype f computes in resolves (a few times its
        eps): there the solver can only shuffle round-off. The floor (:func:`stall_floor`) is
        1000 eps in float32 and float64, not √eps: Anderson and Broyden are not monotone, and
        above the floor a stretch of 30 steps without a new minimum is progress still to come.
        Only the "no new minimum" test is made against the trace, so a slow but steady solve
        (Picard at a factor 0.999 makes a new minimum every step) is never stopped by it.
        """
        trace, start = self.trace, len(self.trace) - self.check_every
        for i in range(max(start, 0), len(trace)):
            if trace[i] < self.best:
                self.best, self.best_step = trace[i], i + 1
        if self.stall_steps is None or len(trace) - self.best_step < self.stall_steps:
            return False
        computes_in = self.fmap.computes_in if self.fmap is not None else torch.float64
        return self.best <= stall_floor(computes_in)

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


