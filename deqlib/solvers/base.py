"""What every solver shares: its options, their checks, and the frame of a solve.

:class:`Solver` holds the options of the stopping rule, common to Picard, Anderson and
Broyden (so that an option added here is an option of all three), checks them once when the
object is made, and runs a solve: the checks of f and z0, the first step, then the solver's
iteration (in place when no graph is kept; out of place, in the short reference form, when
autograd must run through the iterations), and the verdict.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar

from torch import Tensor

from .. import validate
from .result import SolverResult
from .rule import (
    _STALL_STEPS,
    _empty,
    _Map,
    _Rule,
    check_start,
    running_transforms,
    torch_func_error,
)


def _checked_options(cls):
    """Let ``cls(...)`` refuse an unknown option by name, listing the valid ones (the
    dataclass's own message names only the first, and lists nothing)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **options):
        if args:
            raise TypeError(f"{cls.__name__} takes keyword options only, e.g. "
                            f"{cls.__name__}(tol=1e-4); got {len(args)} positional argument(s)")
        unknown = sorted(set(options) - cls.options())
        if unknown:
            raise TypeError(f"solver {cls.method!r} got unknown option(s) {unknown}; it "
                            f"accepts {sorted(cls.options())}")
        init(self, **options)

    cls.__init__ = __init__
    return cls


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Solver:
    """The options of every fixed-point solver, checked once; ``solver(f, z0)`` solves.

    Args:
        tol: stop when the largest per-sample residual ρ is at most ``tol``.
        max_iter: the most evaluations of ``f``.
        stop: ``"rel"`` or ``"abs"``: the residual ρ (see :mod:`deqlib.solvers`).
        strict: raise :class:`~deqlib.solvers.ConvergenceError` instead of warning when not
            converged.
        check_every: read the stopping test on the host every this many steps (1 on a CPU;
            more saves device synchronisations on an accelerator, at the price of up to
            ``check_every − 1`` extra steps).
        stall: stop (stalled, warned) when the residual, already at the round-off of the
            precision f computes in, has made no new minimum in this many steps; ``None``
            never stops early, e.g. to run exactly ``max_iter`` steps with an unreachable tol.

    The objects are immutable: ``dataclasses.replace(solver, tol=1e-8)`` makes a checked copy.
    """

    tol: float = 1e-6
    max_iter: int = 100
    stop: str = "rel"
    strict: bool = False
    check_every: int = 1
    stall: int | None = _STALL_STEPS

    #: the solver's name, as ``solve(method=...)`` and the results spell it
    method: ClassVar[str] = ""

    def __post_init__(self):
        self._set("tol", validate.positive_real("tol", self.tol))
        self._set("max_iter", validate.positive_integer("max_iter", self.max_iter))
        self._set("stop", validate.choice("stop", self.stop, ("rel", "abs")))
        self._set("strict", validate.boolean("strict", self.strict))
        self._set("check_every", validate.positive_integer("check_every", self.check_every))
        if self.stall is not None:
            self._set("stall", validate.positive_integer("stall", self.stall))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)   # a checked value, in the frozen instance

    @classmethod
    def options(cls) -> frozenset[str]:
        """The names of the options this solver takes."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    def __repr__(self) -> str:   # the options that differ from the defaults, floats short
        changed = ", ".join(
            f"{f.name}={value:g}" if isinstance(value, float) else f"{f.name}={value!r}"
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) != f.default)
        return f"{type(self).__name__}({changed})"

    def __call__(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> SolverResult:
        """Find z = f(z) from ``z0`` (shape ``(batch, ...)``, float32 or float64)."""
        if "vmap" in (running_transforms() or ()):   # torch.func.grad runs (unrolled)
            raise torch_func_error(f"deqlib's {self.method} solver", "torch.func.vmap")
        check_start(f, z0)
        if len(z0) == 0:   # an empty batch: nothing to solve
            return _empty(z0, self.tol, self.stop, self.method)
        fmap = _Map(f, z0, self.method)
        rule = _Rule(self.method, self.tol, self.stop, self.strict, self.check_every,
                     self.max_iter, fmap, self.stall)
        z = z0.reshape(len(z0), -1)
        fz = fmap(z, 1)
        rho = rule.start(z.detach(), fz.detach())
        # a graph through the iterations (unrolled backprop) needs the out-of-place steps
        run = self._reference if fz.requires_grad else self._fast
        z, fz, rho, steps, status = run(fmap, rule, z, fz, rho)
        return rule.finish(z, fz, rho, steps, status, z0.shape)

    def _fast(self, f: _Map, rule: _Rule, z: Tensor, fz: Tensor, rho: Tensor):
        """The iteration without a graph, from z (flat, (batch, n)) and fz = f(z) at step 1;
        returns ``(z, f(z), ρ, steps, status)``."""
        raise NotImplementedError

    def _reference(self, f: _Map, rule: _Rule, z: Tensor, fz: Tensor, rho: Tensor):
        """The same iteration, out of place, so that autograd can run through it."""
        raise NotImplementedError
