"""Checks of arguments, written once: TypeError for a wrong type, ValueError for a wrong value.

Each takes the argument's name (as the caller spells it) and, where it helps, what the value
means, so that the message says what was wrong and what to pass. Python and numpy numbers are
accepted alike; booleans are not numbers here (``True`` as a step size is a mistake).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["positive_real"]


def positive_real(name: str, value, meaning: str = "") -> float:
    """``value`` as a float, if it is a real number in (0, ∞).

    Raises:
        TypeError: not a real number (a string, a tensor, a bool, None, …).
        ValueError: zero, negative, infinite or NaN.
    """
    about = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive finite number{about}; got {name}={value!r} "
                        f"of type {type(value).__name__}")
    if not 0 < value < math.inf:   # NaN fails both comparisons
        raise ValueError(f"{name} must be a positive finite number{about}; got {name}={value!r}")
    return float(value)
