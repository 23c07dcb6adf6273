"""The functional home of the book's formulas: the tanh map and the DELM's mathematics.

Modules wrap these functions (as ``nn.Linear.forward`` is ``F.linear``); the theory, the
tests, the benchmarks and the chapters call them, so each formula is written once.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["LOSSES", "tanh_map"]

#: The losses of the shallow objective ℒ(W) = Σ_i ℓ(W φ(x_i), y_i).
LOSSES = ("square", "cross_entropy")


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
