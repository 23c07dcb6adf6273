r"""Fixed-point solvers: find z with z = f(z), batched over a leading dimension.

A solver is a small immutable object holding its options, checked once when it is made, and
called as ``solver(f, z0) -> SolverResult``::

    solver = Anderson(tol=1e-8, memory=5)        # Picard(...), Broyden(...)
    result = solver(f, z0)
    looser = dataclasses.replace(solver, tol=1e-4)   # a checked copy

The functions :func:`picard`, :func:`anderson`, :func:`broyden` and :func:`solve` are
shorthand: ``anderson(f, z0, **options)`` is ``Anderson(**options)(f, z0)``. One module per
idea: ``result`` (:class:`SolverResult`, the warning and the error), ``rule`` (the stopping
rule and the checks of f and z0), ``base`` (the options every solver shares), ``picard``,
``anderson``, ``broyden`` (each solver's options and in-place iteration) and ``reference``
(the same iterations written plainly, out of place, run when a graph is kept).

Every solver here treats ``z`` of shape ``(batch, ...)`` as ``batch`` independent systems:
residuals, the stopping rule and Anderson's mixing weights are per sample. One evaluation of
``f`` is one *step*; ``max_iter`` bounds the steps.

**The stopping rule.** In practice ρ, the number compared with ``tol``, is the usual relative
residual ‖f(z) − z‖ / ‖f(z)‖ (torchdeq's ``stop_mode='rel'``); the exact rule below adds two
safeguards, for a fixed point at the origin and for an iterate that runs away.

For an iterate z of one sample let r = ‖f(z) − z‖ be its residual.
At the first step the solver records the size of the start, s₀ = max(‖z₀‖, ‖f(z₀)‖), and its
first residual, floored at the tolerance: r₀ = max(‖f(z₀) − z₀‖, tol·s₀). Then

* ``stop="abs"``: the sample's residual is ρ = r;
* ``stop="rel"`` (the default): ρ = r / s with the scale

  .. math::

      s = \min\bigl(\max(\lVert f(z)\rVert,\ s_0),\ s_0 r_0 / r\bigr).

The solve has *converged* when ρ ≤ ``tol`` in every sample; ``z`` is then that iterate.
Which term sets the scale s gives three regimes (at a tie two give the same ρ):

=======  ==============================  ===========  =========================================
regime   when                            ρ            example
=======  ==============================  ===========  =========================================
plain    s₀ ≤ ‖f(z)‖ ≤ s₀r₀/r            r/‖f(z)‖     near convergence, when ‖z*‖ ≥ s₀
floor    ‖f(z)‖ < s₀ and r ≤ r₀          r/s₀         z ↦ z/2; z ↦ z/2 + 0.5 from 100·1
cap      max(‖f(z)‖, s₀) > s₀r₀/r        r²/(s₀r₀)    every step with r > r₀; z ↦ z + 1 from 0
=======  ==============================  ===========  =========================================

Normally s = ‖f(z)‖ and ρ is the usual relative residual (torchdeq's ``stop_mode='rel'``).
The floor s₀ lets a fixed point at the origin be reached: for z ↦ z/2 the plain relative
residual ‖f(z) − z‖/‖f(z)‖ is 1 at every step, while here the residual must fall to
``tol`` times the size of the start. The cap s₀r₀/r lets the scale grow only as much as the
residual has shrunk: an iterate that runs away with a residual that does not shrink is never
accepted (for z ↦ z + 1 the plain relative residual falls like 1/k, although there is no
fixed point; here ρ stays at its first value, 1 from z₀ = 0). Near convergence the rule *is*
the plain relative residual, so the verdict is the usual one, when the fixed point is no
smaller than the start (‖z*‖ ≥ s₀) and not far larger (‖z*‖² < s₀r₀/tol, e.g.
‖z*‖ < 1000 s₀ at tol 1e-6 from z₀ = 0). A fixed point smaller than the start is judged
against s₀ instead, ρ = r/s₀, which is looser than the plain relative residual by the factor
s₀/‖z*‖: for z ↦ z/2 + 0.5 from z₀ = 100·1 at tol 1e-6 the solve converges while the plain
relative residual is still about 1e-4 (start at zero, or at a guess of the fixed point's
size, for the usual verdict). Early on, while a residual is still above its first value
(r > r₀), the cap decides: ρ = r²/(s₀r₀), which is larger than the plain relative residual
whenever ‖f(z)‖ > s₀r₀/r, so always while ‖f(z)‖ ≥ s₀ (an iterate much smaller than the start
can make it smaller).

*Diverging*: in relative mode, when ρ exceeds 10⁸ in some sample, i.e. when its residual
exceeds 10⁴·√(s₀r₀) (e.g. z ↦ 2z + 1); in absolute mode, when the largest residual exceeds
10⁴ times the largest s₀. The solve stops there.

*Stalled*: a residual cannot fall below the round-off of the dtype ``f`` computes in (a
few times its machine epsilon). When the largest ρ has made no new minimum in ``stall``
steps (default 30; ``stall=None`` turns this off, e.g. to run exactly ``max_iter`` steps)
while that minimum is at most min(√eps, 1000 eps) of that dtype (float64 2.2e-13, float32
1.2e-4, bfloat16 8.8e-2), the solve stops and
says which precision limits it and what tol it can meet (``stalled=True``). That dtype is
z's, or under ``torch.autocast`` the autocast dtype (bfloat16: eps 7.8e-3), since f's output
may be float32 after a bfloat16 product. A tol below the floor is thus reported once, in
words that name the precision, after about 30 wasted steps instead of ``max_iter``; it is
never met by quietly loosening it. A slow but steady solve makes a new minimum every step
and is never stopped by this test; nor is a non-monotone one (Anderson, Broyden) that pauses
above the floor (for that reason the floor is 1000 eps in float32 and float64, not √eps).

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
they keep no graph (the DEQ forward) and run their in-place iteration; with grad enabled and
an ``f`` whose output requires grad they keep the graph of every step (unrolled backprop),
running the out-of-place iteration of ``deqlib/solvers/reference.py``, which computes the same
iterates bit for bit.

**Warnings** point at the user's line, also through :func:`solve`, a DEQ layer or a
backward pass: they skip every frame inside deqlib and torch.

**Cost.** A step is one evaluation of f plus the solver's own work. On a CPU that work is
dominated by the fixed cost of each small tensor operation (a few µs each, against tens to
hundreds of µs for f), not by arithmetic, so the steps are written with few operations:
histories preallocated and written in place; Anderson mixes only every few steps (on the
reference problems this takes about as many steps), and then adds the new Gram rows with one
batched product, solves all samples' small systems with one LU call and mixes with one more
product; Broyden's two low-rank products with its stored pairs are fused into two batched
products. The host reads one number per step (the stopping test); ``check_every=4`` reads
it every fourth step instead (any period can be given), which pays on accelerators, where a
read waits for the device.
The measured costs (a step in units of one evaluation of f, and what did not pay, such as
``torch.compile``) are on the performance page and in ``benchmarks/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .anderson import Anderson
from .base import Solver
from .broyden import Broyden
from .picard import Picard
from .result import ConvergenceError, ConvergenceWarning, SolverResult, warn_at_caller

__all__ = [
    "Solver",
    "Picard",
    "Anderson",
    "Broyden",
    "SolverResult",
    "ConvergenceWarning",
    "ConvergenceError",
    "warn_at_caller",
    "picard",
    "anderson",
    "broyden",
    "solve",
    "as_solver",
]

#: the solvers by the name ``solve(method=...)`` and ``DEQ(solver=...)`` accept
_BY_NAME: dict[str, type[Solver]] = {cls.method: cls for cls in (Picard, Anderson, Broyden)}


def _solver_class(method) -> type[Solver]:
    if not isinstance(method, str) or method not in _BY_NAME:
        raise ValueError(f"unknown solver method={method!r}; choose one of {sorted(_BY_NAME)} "
                         "(or pass a solver object such as Anderson(tol=1e-4))")
    return _BY_NAME[method]


def as_solver(solver, name: str = "solver") -> Solver:
    """A solver object from an object or a name (``"picard"`` is ``Picard()``).

    Args:
        solver: a solver object (returned as it is), or ``"picard"``, ``"anderson"`` or
            ``"broyden"`` for that solver with its defaults.
        name: the argument's name, used in the error message (e.g.
            ``"Implicit(solver=...)"``).

    Returns:
        The solver object.

    Raises:
        TypeError: ``solver`` is neither a solver object nor a string.
        ValueError: an unknown name.
    """
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str):
        return _solver_class(solver)()
    raise TypeError(f"{name} must be a solver object (Picard(), Anderson(), Broyden(), with "
                    f"options such as Anderson(tol=1e-4)) or one's name {sorted(_BY_NAME)}; "
                    f"got {name}={solver!r} of type {type(solver).__name__}")


def picard(f: Callable[[Tensor], Tensor], z0: Tensor, **options) -> SolverResult:
    """``Picard(**options)(f, z0)``: plain fixed-point iteration (see :class:`Picard`).

    Args:
        f: the map, from z ``(batch, ...)`` to a tensor of z's shape.
        z0: the start, ``(batch, ...)``, float32 or float64.
        **options: the options of :class:`Picard` (keyword only): those every solver shares,
            as in :class:`~deqlib.solvers.base.Solver` (``tol``, ``max_iter``, ``stop``,
            ``strict``, ``check_every``, ``stall``).

    Returns:
        The :class:`SolverResult`.
    """
    return Picard(**options)(f, z0)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, **options) -> SolverResult:
    """``Anderson(**options)(f, z0)``: Anderson acceleration (see :class:`Anderson`).

    Args:
        f: the map, from z ``(batch, ...)`` to a tensor of z's shape.
        z0: the start, ``(batch, ...)``, float32 or float64.
        **options: the options of :class:`Anderson` (keyword only): those every solver shares,
            as in :class:`~deqlib.solvers.base.Solver` (``tol``, ``max_iter``, ``stop``,
            ``strict``, ``check_every``, ``stall``), and its own ``memory``, ``mix_every``,
            ``beta``, ``lam``.

    Returns:
        The :class:`SolverResult`.
    """
    return Anderson(**options)(f, z0)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, **options) -> SolverResult:
    """``Broyden(**options)(f, z0)``: Broyden's good method (see :class:`Broyden`).

    Args:
        f: the map, from z ``(batch, ...)`` to a tensor of z's shape.
        z0: the start, ``(batch, ...)``, float32 or float64.
        **options: the options of :class:`Broyden` (keyword only): those every solver shares,
            as in :class:`~deqlib.solvers.base.Solver` (``tol``, ``max_iter``, ``stop``,
            ``strict``, ``check_every``, ``stall``), and its own ``memory``.

    Returns:
        The :class:`SolverResult`.
    """
    return Broyden(**options)(f, z0)


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, *, method: str = "anderson",
          **options) -> SolverResult:
    """Find z = f(z) with the solver named by ``method`` ("picard", "anderson", "broyden").

    ``solve(f, z0, method="anderson", **options)`` is ``Anderson(**options)(f, z0)``. An
    option the solver does not accept raises TypeError naming it and listing the valid ones:
    a misspelt option is never silently ignored.

    Args:
        f: the map, from z ``(batch, ...)`` to a tensor of z's shape.
        z0: the start, ``(batch, ...)``, float32 or float64.
        method: the solver's name: ``"picard"`` (:class:`Picard`), ``"anderson"``
            (:class:`Anderson`) or ``"broyden"`` (:class:`Broyden`).
        **options: that solver's options (keyword only): those every solver shares, as in
            :class:`~deqlib.solvers.base.Solver`, and the solver's own.

    Returns:
        The :class:`SolverResult`.
    """
    return _solver_class(method)(**options)(f, z0)
