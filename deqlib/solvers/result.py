"""What a solve returns (:class:`SolverResult`), how it fails, and where its warnings point."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["SolverResult", "ConvergenceWarning", "ConvergenceError", "warn_at_caller"]


class ConvergenceWarning(UserWarning):
    """A solver stopped (diverging, stalled at the round-off of its precision, or at
    ``max_iter``) before its residual reached ``tol``."""


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
        stop: ``"rel"`` or ``"abs"`` (see :mod:`deqlib.solvers` for ρ).
        tol: the tolerance asked for.
        method: the solver's name.
        diverged: True when the solve was stopped because a residual grew without bound.
        stalled: True when the solve was stopped because its residual stopped falling at the
            round-off of the precision ``f`` computes in, above ``tol``.
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


#: the folders of torch and of deqlib (this file's grandparent), whose frames are skipped
_INTERNAL = tuple(os.path.dirname(os.path.abspath(path)) + os.sep
                  for path in (torch.__file__, os.path.dirname(os.path.abspath(__file__))))


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn at the user's line: the first frame outside deqlib and torch.

    ``warnings.warn(..., stacklevel=2)`` points one frame up, which is deqlib itself when the
    warning comes through :func:`~deqlib.solvers.solve`, a DEQ layer, ``nn.Module.__call__``
    or a backward pass that torch's engine called. This walks up to the first frame that is
    neither, so the warning names the line the user wrote (and the ``"default"`` filter shows
    it once per line).
    """
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
