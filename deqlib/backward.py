"""How a :class:`~deqlib.implicit.DEQ` differentiates: its backward modes as small objects.

* :class:`Implicit`  the adjoint fixed point u = Jᵀu + g of the implicit function theorem,
  solved by its own solver object (by default the forward's);
* :class:`Unrolled`  backprop through the forward solver's iterations, run with the graph kept;
* :class:`OneStep`   Jacobian-free backprop (Fung et al., 2022): (I − J)⁻¹ replaced by I.

A name is shorthand for the default object (``backward="unrolled"`` is ``Unrolled()``). A
layer given one of its removed scalar keywords (``tol=``, ``backward_tol=``, …) raises a
TypeError that shows the solver or backward object to write instead.
"""

from __future__ import annotations

import dataclasses

from .solvers import _BY_NAME as _SOLVERS
from .solvers import Solver, as_solver

__all__ = ["Implicit", "Unrolled", "OneStep", "as_backward", "refuse_moved"]


@dataclasses.dataclass(frozen=True)
class Implicit:
    """The implicit backward: solve u = Jᵀu + g with ``solver`` (None: the forward solver).

    Example: ``DEQ(f, backward=Implicit(solver=Picard(tol=1e-8)))``.

    Args:
        solver: the solver of the adjoint equation u = Jᵀu + g, an object of
            :mod:`deqlib.solvers` or a name for its defaults (``"picard"`` is ``Picard()``);
            ``None``: the forward solver, with its options.
    """

    solver: Solver | None = None
    mode = "implicit"

    def __post_init__(self):
        if self.solver is not None:
            object.__setattr__(self, "solver", as_solver(self.solver, "Implicit(solver=...)"))

    def __repr__(self) -> str:
        return "Implicit()" if self.solver is None else f"Implicit(solver={self.solver!r})"


@dataclasses.dataclass(frozen=True)
class Unrolled:
    """Backprop through the forward solver's iterations (memory grows with the steps)."""

    mode = "unrolled"


@dataclasses.dataclass(frozen=True)
class OneStep:
    """Jacobian-free backprop: differentiate one application of f at the equilibrium."""

    mode = "one_step"


_BACKWARDS = {cls.mode: cls for cls in (Implicit, Unrolled, OneStep)}


def as_backward(backward) -> Implicit | Unrolled | OneStep:
    """A backward object from an object or a name (``"unrolled"`` is ``Unrolled()``).

    Args:
        backward: an :class:`Implicit`, :class:`Unrolled` or :class:`OneStep` object (returned
            as it is), or one of the names ``"implicit"``, ``"unrolled"``, ``"one_step"``.

    Returns:
        The backward object.

    Raises:
        ValueError: anything else.
    """
    if isinstance(backward, (Implicit, Unrolled, OneStep)):
        return backward
    if isinstance(backward, str) and backward in _BACKWARDS:
        return _BACKWARDS[backward]()
    names = ", ".join(repr(n) for n in _BACKWARDS)
    raise ValueError(f"backward must be Implicit(), Unrolled() or OneStep() (or a name: "
                     f"{names}); got backward={backward!r}")


#: the keywords the layers took before the solver objects, and where they went
_MOVED_TO_SOLVER = ("tol", "max_iter", "solver_options")
_MOVED_TO_BACKWARD = ("backward_solver", "backward_tol", "backward_max_iter",
                      "backward_solver_options")


def _example(solver, options: dict) -> str:
    """How to write a solver object with ``options``, e.g. ``Anderson(tol=0.0001)``."""
    if isinstance(solver, Solver):
        name = type(solver).__name__
    else:
        name = _SOLVERS[solver].__name__ if solver in _SOLVERS else "Anderson"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


def refuse_moved(owner: str, removed: dict, solver=None) -> None:
    """Raise the TypeError that says where a removed keyword of ``owner`` went.

    The layers (``DEQ``, ``TanhDEQ``, ``ConvDEQ``, ``WideTanhDEQ``, ``DeepEquilibriumLinear``)
    once took solver options as keywords; ``tol=``, ``max_iter=`` and ``solver_options=`` now
    belong to the solver object, ``backward_tol=`` and the other ``backward_*`` keywords to the
    backward object. A layer passes the keywords it did not know here, and the error shows the
    call to write instead: ``TanhDEQ(4, 4, 2, tol=1e-6, backward_tol=1e-8)`` raises
    "TanhDEQ: tol= moved into the solver object: solver=Anderson(tol=1e-06); backward_tol=
    moved into the backward object: backward=Implicit(solver=Anderson(tol=1e-08))". Any other
    unknown keyword raises the usual "unexpected keyword argument" TypeError.

    Args:
        owner: the layer's name, which starts the message.
        removed: the keyword arguments ``owner`` did not know (nothing is raised if empty).
        solver: the solver the layer was given (a name or an object), used to write the
            example.
    """
    if not removed:
        return
    unknown = sorted(set(removed) - set(_MOVED_TO_SOLVER) - set(_MOVED_TO_BACKWARD))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword argument(s) {unknown}")
    parts = []
    moved = [k for k in _MOVED_TO_SOLVER if k in removed]
    if moved:
        options = {k: removed[k] for k in moved if k != "solver_options"}
        options |= dict(removed.get("solver_options") or {})
        parts.append(f"{', '.join(k + '=' for k in moved)} moved into the solver object: "
                     f"solver={_example(solver, options)}")
    moved = [k for k in _MOVED_TO_BACKWARD if k in removed]
    if moved:
        options = {k.removeprefix("backward_"): removed[k] for k in moved
                   if k not in ("backward_solver", "backward_solver_options")}
        options |= dict(removed.get("backward_solver_options") or {})
        inner = _example(removed.get("backward_solver", solver), options)
        parts.append(f"{', '.join(k + '=' for k in moved)} moved into the backward object: "
                     f"backward=Implicit(solver={inner})")
    raise TypeError(f"{owner}: " + "; ".join(parts))
