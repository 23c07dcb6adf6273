"""Checks of arguments, written once: TypeError for a wrong type, ValueError for a wrong value.

Every public function of deqlib checks its arguments with these, so that one mistake gets one
kind of error everywhere (``solve(max_iter=10.0)`` and ``fit(epochs=2.0)`` both raise
TypeError; ``fit(epochs=0)`` and ``solve(tol=-1)`` both raise ValueError). Each takes the
argument's name as the caller spells it and, where it helps, what the value means, so that the
message says what was wrong and what to pass.

Python and numpy numbers are accepted alike (``np.float32(0.5)``, ``np.int64(3)``); booleans
are not numbers here (``True`` as a step size is a mistake), and neither are tensors (pass
``.item()``). An integer argument refuses a float even when it is whole (``10.0``): a count
written as a float is usually a computed value that was meant to be rounded one way or the
other, and the caller should say which.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "real",
    "positive_real",
    "nonnegative_real",
    "interval",
    "integer",
    "positive_integer",
    "boolean",
    "string",
    "choice",
    "choices",
    "integers",
    "floating_dtype",
    "tensor",
    "function",
]


def _about(meaning: str) -> str:
    return f" ({meaning})" if meaning else ""


def _hint(value) -> str:
    return " (use .item() for a one-element tensor)" if isinstance(value, Tensor) else ""


def real(name: str, value, meaning: str = "", *, finite: bool = True) -> float:
    """``value`` as a float, if it is a real number (finite unless ``finite=False``).

    Raises:
        TypeError: not a real number (a string, a tensor, a bool, None, a complex number, …).
        ValueError: NaN, or infinite when ``finite`` (the default).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{_about(meaning)}; got {name}={value!r} "
                        f"of type {type(value).__name__}{_hint(value)}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite real number{_about(meaning)}; "
                         f"got {name}={value!r}")
    return value


def interval(name: str, value, low: float, high: float, meaning: str = "", *,
             closed: tuple[bool, bool] = (True, True)) -> float:
    """``value`` as a float, if it is a real number in the interval from ``low`` to ``high``.

    ``closed`` says whether each end belongs to the interval: ``(False, True)`` is (low, high].
    An infinite end is always open, so ``interval("x", v, 0, math.inf)`` accepts every v ≥ 0
    that is finite.

    Raises:
        TypeError: not a real number.
        ValueError: NaN, or outside the interval (the message names the interval either way).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        real(name, value, meaning)                   # raises the TypeError
    value = float(value)                             # NaN fails both comparisons below
    left = (value >= low) if closed[0] else (value > low)
    right = (value <= high) if closed[1] else (value < high)
    if not (left and right) or math.isinf(value):
        brackets = ("[" if closed[0] and math.isfinite(low) else "(",
                    "]" if closed[1] and math.isfinite(high) else ")")
        span = f"{brackets[0]}{low:g}, {high:g}{brackets[1]}"
        raise ValueError(f"{name} must lie in {span}{_about(meaning)}; got {name}={value!r}")
    return value


def positive_real(name: str, value, meaning: str = "") -> float:
    """``value`` as a float, if it is a real number in (0, ∞).

    Raises:
        TypeError: not a real number (a string, a tensor, a bool, None, …).
        ValueError: zero, negative, infinite or NaN.
    """
    about = _about(meaning)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive finite number{about}; got {name}={value!r} "
                        f"of type {type(value).__name__}{_hint(value)}")
    if not 0 < value < math.inf:   # NaN fails both comparisons
        raise ValueError(f"{name} must be a positive finite number{about}; got {name}={value!r}")
    return float(value)


def nonnegative_real(name: str, value, meaning: str = "") -> float:
    """``value`` as a float, if it is a real number in [0, ∞)."""
    return interval(name, value, 0.0, math.inf, meaning)


def integer(name: str, value, meaning: str = "", *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """``value`` as an int, if it is a Python or numpy integer within [minimum, maximum].

    Raises:
        TypeError: not an integer (a float, even a whole one such as ``10.0``; a bool; …).
        ValueError: below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        whole = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                 and math.isfinite(value) and float(value).is_integer())
        hint = f" (write {int(value)} for a whole number)" if whole else _hint(value)
        raise TypeError(f"{name} must be an integer{_about(meaning)}; got {name}={value!r} "
                        f"of type {type(value).__name__}{hint}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            span = f">= {minimum}"
        elif minimum is None:
            span = f"<= {maximum}"
        else:
            span = f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {span}{_about(meaning)}; "
                         f"got {name}={value!r}")
    return value


def positive_integer(name: str, value, meaning: str = "") -> int:
    """``value`` as an int, if it is an integer ≥ 1."""
    return integer(name, value, meaning, minimum=1)


def boolean(name: str, value) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy booleans too); a TypeError otherwise.

    Truthy values (1, "yes", a tensor) are refused: ``strict="False"`` would be true.
    """
    if value is True or value is False:
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{name} must be True or False; got {name}={value!r} "
                    f"of type {type(value).__name__}")


def string(name: str, value, meaning: str = "") -> str:
    """``value`` as a str, if it is one (numpy strings too); a TypeError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string{_about(meaning)}; got {name}={value!r} "
                        f"of type {type(value).__name__}")
    return str(value)


def choice(name: str, value, options: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``options`` (numpy strings accepted).

    Raises:
        TypeError: not a string.
        ValueError: a string that is not one of ``options``.
    """
    listed = ", ".join(repr(o) for o in options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {listed}; got {name}={value!r} "
                        f"of type {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {listed}; got {name}={value!r}")
    return str(value)


def choices(name: str, value, options: Sequence[str]) -> list[str]:
    """``value`` as a list of strings from ``options``: one string (numpy strings too) is one
    choice, not a sequence of letters (``models="linear"`` is ``["linear"]``).

    Raises:
        TypeError: neither a string nor a sequence of strings.
        ValueError: a string that is not one of ``options``.
    """
    if isinstance(value, str):
        return [choice(name, value, options)]
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be one of {', '.join(repr(o) for o in options)} or a list "
                        f"of them; got {name}={value!r} of type {type(value).__name__}")
    return [choice(f"{name}[{i}]", v, options) for i, v in enumerate(value)]


def integers(name: str, value, meaning: str = "", *, minimum: int | None = None) -> list[int]:
    """``value`` as a list of ints: one integer is a list of one; a string is refused
    (``seeds="01"`` is not seeds 0 and 1).

    Raises:
        TypeError: not an integer or a sequence of integers (a string; a float inside).
        ValueError: an entry below ``minimum``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [integer(name, value, meaning, minimum=minimum)]
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be an integer or a list of integers{_about(meaning)}; got "
                        f"{name}={value!r} of type {type(value).__name__}")
    return [integer(f"{name}[{i}]", v, meaning, minimum=minimum) for i, v in enumerate(value)]


def floating_dtype(name: str, value, allowed: Sequence[torch.dtype] = (torch.float32,
                                                                       torch.float64)):
    """``value`` if it is one of the torch dtypes ``allowed`` (float32 and float64 by default).

    Raises:
        TypeError: not a torch.dtype, or a dtype that is not allowed (the message names the
        ones that are).
    """
    listed = " or ".join(str(d).removeprefix("torch.") for d in allowed)
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch dtype ({listed}); got {name}={value!r} "
                        f"of type {type(value).__name__}")
    if value not in allowed:
        raise TypeError(f"{name} must be {listed}; got {name}={value}")
    return value


def tensor(name: str, value, *, shape: Sequence[int | None] | None = None,
           ndim: int | None = None, floating: bool = True, finite: bool = True) -> Tensor:
    """``value`` if it is a tensor of the given shape (``None`` entries match any size).

    Args:
        shape: the expected shape; e.g. ``(None, 784)`` for a batch of 784-vectors.
        ndim: the expected number of dimensions, when the sizes are free.
        floating: require a real floating-point dtype (float16 to float64).
        finite: refuse NaN and Inf (one pass over the tensor).

    Raises:
        TypeError: not a tensor, or not floating point when ``floating``.
        ValueError: a wrong shape or number of dimensions, or NaN/Inf when ``finite``.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__} "
                        f"(convert it with torch.as_tensor)")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor; got dtype {value.dtype} "
                        f"(convert it with .float() or .double())")
    if shape is not None:
        shape = tuple(shape)
        if value.dim() != len(shape) or any(s is not None and s != n
                                            for s, n in zip(shape, value.shape)):
            wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {wanted}; got {tuple(value.shape)}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(value.shape)}")
    if finite and value.numel() and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or Inf; pass finite values")
    return value


def function(name: str, value, how: str = "") -> Callable:
    """``value`` if it is callable (``how`` says how it is called, e.g. ``"f(z)"``)."""
    if not callable(value):
        called = f" as {how}" if how else ""
        raise TypeError(f"{name} must be callable{called}; got {type(value).__name__}")
    return value
