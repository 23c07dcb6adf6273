"""Checks that print their margin, and exercises a reader completes.

A chapter never prints a bare ``True``: it prints how close two numbers are and against which
tolerance, and fails loudly when they are not close::

    >>> check.close(grad_implicit, grad_unrolled, tol=1e-9, what="implicit vs unrolled")
    implicit vs unrolled: relative difference ≤ 1e-11 (tolerance 1e-09)

The relative difference is ‖actual − expected‖ / ‖expected‖ (Euclidean norm over all entries);
when the expected value is exactly zero it is the absolute difference ‖actual − expected‖ and
the line says "absolute difference". Over the tolerance, :func:`close` raises AssertionError
with both numbers; :func:`at_most` and :func:`at_least` do the same for inequalities, printing
the ratio value/bound.

An exercise is a stub the reader fills in, then a check cell::

    def adjoint_step(u, g):
        raise NotImplementedError("your code here")

    check.exercise(adjoint_step, u0, g, expected=u1, tol=1e-10)
    # not done yet (adjoint_step raises NotImplementedError); expected: [0.25, 0.5]

:func:`exercise` never raises for a stub or a wrong answer (so "Run all" passes); it prints
✓ or ✗ beside the reader's value and the expected one.

**What is printed is what every machine reproduces.** The book's notebook test compares
numbers as numbers, to one unit in their last printed digit (tests/nbval_numbers.py). A
difference at rounding level carries no meaning in its digits (3.1e-13 here, 8e-14 on another
CPU), so a difference of at most a hundredth of the tolerance is printed as that bound::

    implicit vs unrolled: relative difference ≤ 1e-11 (tolerance 1e-09)

and likewise a value ≥ 0 below a hundredth of its upper bound (in floating point and as printed
to 4 digits; :func:`at_most`) is printed as
``< bound/100``. Both are true statements on every machine; larger differences and values
print their digits (differences to 2 significant digits, values to 3 or 4), which a reader's
machine reproduces.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import torch

from . import validate

__all__ = ["close", "at_most", "at_least", "exercise", "book_solution", "relative_difference"]


def _is_tensor_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value)


def _items(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _tensor(value: Any, *, name: str) -> torch.Tensor:
    """``value`` (tensor, number, numpy array, or a nested sequence of them) as float64 on CPU."""
    if isinstance(value, complex) or (
            isinstance(value, torch.Tensor) and value.is_complex()) or (
            hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "c"):
        raise TypeError(f"{name} is complex; the checks compare real numbers: compare the real "
                        "and imaginary parts (or the absolute values) separately")
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    if _is_tensor_sequence(value):
        return torch.cat([_tensor(v, name=name).reshape(-1) for v in value])
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{name} must be a number, an array or a tensor; got {type(value).__name__} ({err})"
        ) from None


def relative_difference(actual: Any, expected: Any) -> tuple[float, str]:
    """``(difference, kind)``: ‖actual − expected‖ / ‖expected‖ and "relative", or, when
    ‖expected‖ = 0, ‖actual − expected‖ and "absolute". NaN anywhere gives NaN.

    Args:
        actual: a tensor (any device, with or without grad), a number, an array, or a tuple or
            list of tensors (compared as one vector of all their entries).
        expected: the reference value, of the same shape as ``actual``.

    Returns:
        ``(difference, kind)``, a float and ``"relative"`` or ``"absolute"``.

    Raises:
        ValueError: the shapes differ (for tuples of tensors: their lengths or the shape of
            any pair).
    """
    if _is_tensor_sequence(actual) or _is_tensor_sequence(expected):
        shapes = (
            [tuple(_tensor(v, name="actual").shape) for v in _items(actual)],
            [tuple(_tensor(v, name="expected").shape) for v in _items(expected)],
        )
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"shapes differ: actual {shapes[0]} vs expected {shapes[1]}; "
                "compare values of the same shapes"
            )
    a, e = _tensor(actual, name="actual"), _tensor(expected, name="expected")
    if a.shape != e.shape:
        raise ValueError(
            f"shapes differ: actual {tuple(a.shape)} vs expected {tuple(e.shape)}; "
            "compare values of the same shape"
        )
    if torch.isnan(a).any() or torch.isnan(e).any():
        return math.nan, "relative"
    # equal entries differ by 0, equal infinities included (inf − inf would be NaN)
    gap = torch.linalg.vector_norm(torch.where(a == e, 0.0, a - e).reshape(-1)).item()
    scale = torch.linalg.vector_norm(e.reshape(-1)).item()
    if scale == 0.0 or math.isinf(gap):
        return gap, "absolute" if scale == 0.0 else "relative"
    return gap / scale, "relative"


def _check_tol(tol: Any, name: str = "tol") -> float:
    return validate.nonnegative_real(name, tol, "the largest difference accepted")


def _prefix(what: str) -> str:
    return f"{what}: " if what else ""


#: A difference (or a value against its upper bound) this small relative to the tolerance is
#: printed as the bound tolerance × FLOOR: its own digits are rounding, different on every CPU.
FLOOR = 1e-2


def _difference(diff: float, kind: str, tol: float) -> str:
    """``"relative difference 2.0e-01"``, or ``"relative difference ≤ 1e-11"`` (tol 1e-9) when the
    difference is at most ``tol × FLOOR`` (see the module docstring)."""
    if tol > 0 and diff <= tol * FLOOR:
        return f"{kind} difference ≤ {tol * FLOOR:.3g}"
    return f"{kind} difference {diff:.1e}"


def close(actual: Any, expected: Any, *, tol: float, what: str = "") -> None:
    """Print how close ``actual`` is to ``expected``; raise AssertionError if not within ``tol``.

    Prints ``"<what>: relative difference 2.0e-04 (tolerance 0.001)"``, or, for a difference
    at most a hundredth of the tolerance, the bound: ``"relative difference ≤ 1e-11
    (tolerance 1e-09)"``. The difference is ‖actual − expected‖₂ / ‖expected‖₂ over all
    entries (absolute when ``expected`` is 0).

    Args:
        actual: a tensor (any device, with or without grad), a number or an array.
        expected: the reference value, of the same shape as ``actual``.
        tol: the largest difference accepted (keyword-only, so it is always visible).
        what: a few words naming the comparison, printed first (nothing when empty).

    Raises:
        AssertionError: the difference is above ``tol`` (or NaN).
    """
    tol = _check_tol(tol)
    diff, kind = relative_difference(actual, expected)
    line = f"{_prefix(what)}{_difference(diff, kind, tol)} (tolerance {tol:g})"
    print(line)
    if not diff <= tol:
        raise AssertionError(
            f"{line}: the {kind} difference {diff:.3e} exceeds the tolerance {tol:g}"
        )


def _margin(value: float, bound: float) -> str:
    if bound > 0 and value >= 0:
        return f"ratio {value / bound:.3g}"
    return f"margin {bound - value:.3g}"


def _inequality(value: Any, bound: Any, *, rtol: float, what: str, sign: int) -> None:
    v, b = _tensor(value, name="value"), _tensor(bound, name="bound")
    try:
        v, b = torch.broadcast_tensors(v, b)
    except RuntimeError:
        raise ValueError(
            f"value of shape {tuple(v.shape)} and bound of shape {tuple(b.shape)} "
            "do not broadcast; pass one bound or one per value"
        ) from None
    if torch.isnan(v).any() or torch.isnan(b).any():
        raise AssertionError(f"{_prefix(what)}NaN in the value or the bound")
    rtol = _check_tol(rtol, "rtol")
    if v.numel() == 0:
        raise ValueError(f"{_prefix(what)}the value is empty (shape {tuple(v.shape)}): there is "
                         "nothing to compare with the bound; pass at least one number")
    # The worst entry: the ratio value/bound closest to failing when it is defined (all
    # values ≥ 0, bounds > 0), else the largest value − bound (for ≤; mirrored for ≥).
    excess = sign * (v / b if bool((v >= 0).all() and (b > 0).all()) else v - b)
    worst = int(torch.argmax(excess.reshape(-1)))
    vw, bw = v.reshape(-1)[worst].item(), b.reshape(-1)[worst].item()
    op = "≤" if sign > 0 else "≥"
    # an infinite bound allows every finite value (0·∞ would make the slack NaN)
    allowed = bw + sign * rtol * abs(bw) if rtol and math.isfinite(bw) else bw
    holds = sign * (vw - allowed) <= 0
    if not holds:   # never print the inequality as if it held
        line = f"{_prefix(what)}{vw:.4g} {'>' if sign > 0 else '<'} {bw:.4g} ✗"
    elif sign > 0 and bw > 0 and 0 <= vw < min(bw * FLOOR, float(f"{bw * FLOOR:.4g}")):
        # rounding level: print its bound; below bound/100 both exactly and as printed, so that
        # "< bound/100" and "ratio < 0.01" are true as they read
        line = f"{_prefix(what)}< {bw * FLOOR:.4g} ≤ {bw:.4g} (ratio < {FLOOR:g})"
    else:
        line = f"{_prefix(what)}{vw:.4g} {op} {bw:.4g} ({_margin(vw, bw)})"
    print(line)
    if not holds:
        raise AssertionError(
            f"{line}: {vw!r} is not {op} {bw!r}"
            + (f" (relative tolerance {rtol:g})" if rtol else "")
        )


def at_most(value: Any, bound: Any, *, what: str = "", rtol: float = 0.0) -> None:
    """Print ``"<what>: 0.412 ≤ 1.3 (ratio 0.317)"``; raise AssertionError if value > bound.

    A value ≥ 0 below a hundredth of a positive bound (in floating point and as printed to 4
    digits) is printed as ``< bound/100``, e.g. a
    residual ``"< 1e-14 ≤ 1e-12 (ratio < 0.01)"``: its digits would be rounding (module
    docstring).

    Tensors are compared entry by entry (the bound broadcasts) and the worst entry is printed.
    ``rtol`` lets the value exceed the bound by ``rtol·|bound|`` (floating-point rounding of an
    inequality that holds with equality). The margin is value/bound when both are ≥ 0 (> 0 for
    the bound), else bound − value.

    Args:
        value: a number or a tensor (any device), the quantity to bound.
        bound: its upper bound: a number, or a tensor that broadcasts against ``value``.
        what: a few words naming the quantity, printed first (nothing when empty).
        rtol: the relative slack; 0 (the default) demands value ≤ bound exactly.

    Raises:
        AssertionError: an entry of ``value`` exceeds its bound (by more than
            ``rtol·|bound|``), or a NaN.
        ValueError: ``value`` is empty, or it and ``bound`` do not broadcast.
    """
    _inequality(value, bound, rtol=rtol, what=what, sign=1)


def at_least(value: Any, bound: Any, *, what: str = "", rtol: float = 0.0) -> None:
    """Print ``"<what>: 2.5 ≥ 1 (ratio 2.5)"``; raise AssertionError if value < bound.

    The mirror of :func:`at_most`: ``rtol`` lets the value fall short of the bound by
    ``rtol·|bound|``.

    Args:
        value: a number or a tensor (any device), the quantity to bound from below.
        bound: its lower bound: a number, or a tensor that broadcasts against ``value``.
        what: a few words naming the quantity, printed first (nothing when empty).
        rtol: the relative slack; 0 (the default) demands value ≥ bound exactly.

    Raises:
        AssertionError: an entry of ``value`` is below its bound (by more than
            ``rtol·|bound|``), or a NaN.
        ValueError: ``value`` is empty, or it and ``bound`` do not broadcast.
    """
    _inequality(value, bound, rtol=rtol, what=what, sign=-1)


def _show(value: Any) -> str:
    """A short, stable rendering: numbers to 4 significant digits (what a float32
    result reproduces on another CPU), small tensors in full."""
    if isinstance(value, (bool, int, str)) or value is None:
        return repr(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and not any(isinstance(v, torch.Tensor) for v in value):
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return repr(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if hasattr(value, "shape") and not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.numel() == 1:
            return f"{t.item():.4g}"
        if t.numel() <= 6:
            return "[" + ", ".join(f"{x:.4g}" for x in t.reshape(-1).tolist()) + "]"
        norm = torch.linalg.vector_norm(t.double().reshape(-1)).item()
        return f"tensor of shape {tuple(t.shape)} with norm {norm:.4g}"
    return repr(value)


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` for values that are not numbers (False when the comparison is not a bool)."""
    try:
        result = a == b
        return result if isinstance(result, bool) else False
    except Exception:  # a comparison that cannot be made is not a match
        return False


#: Lines longer than this are split, so that no printed check is wider than the book's page.
WIDTH = 99


def _emit(*parts: str) -> None:
    """Print ``parts`` on one line, or one part per line when that line would be too wide."""
    line = " ".join(parts)
    print(line if len(line) <= WIDTH else "\n".join(parts))


def book_solution(chapter: str, name: str) -> Callable:
    """The book's solution ``name`` to an exercise of ``chapter``, from ``deqlib.solutions``.

    The solutions live in the library, not in the notebooks, so that a reader on Colab or in
    Jupyter sees the exercise and not its answer, and "Run all" never overwrites an attempt;
    the book's site shows each one in a dropdown (a ``literalinclude`` of the same file).

    Args:
        chapter: the module of ``deqlib.solutions``, e.g. ``"ch04"``.
        name: the function's name in it, e.g. ``"tanh_jacobian"``.

    Returns:
        The solution function.

    Raises:
        ValueError: no such chapter module, or no such function in it.
    """
    if not isinstance(chapter, str) or not isinstance(name, str):
        raise TypeError(f"chapter and name must be strings such as 'ch04' and 'tanh_jacobian'; "
                        f"got {chapter!r} and {name!r}")
    try:
        module = importlib.import_module(f"deqlib.solutions.{chapter}")
    except ModuleNotFoundError as err:
        raise ValueError(f"deqlib.solutions has no chapter {chapter!r} (the modules are "
                         f"ch01, ch02, …); check the solution= argument") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"deqlib.solutions.{chapter} has no solution named {name!r}; "
                         f"check the exercise's function name")
    return fn


def exercise(fn: Callable, *args: Any, expected: Any, tol: float = 1e-6,
             solution: str | None = None, **kwargs: Any) -> Callable:
    """Run the reader's ``fn(*args, **kwargs)``, print it beside ``expected``, return what to use.

    Prints:

    * ``not done yet (fn raises NotImplementedError); expected: …`` for a stub;
    * ``yours: … expected: … ✓ (relative difference ≤ 1e-08, tolerance 1e-06)`` when the
      relative difference (see :func:`close`) is within ``tol``, ✗ otherwise (or when the shapes
      differ).

    With ``solution="ch04"`` and a stub, the book's solution of the same name
    (:func:`book_solution`) is run through the same check and returned, so the cells below run
    before the exercise is done; it must pass (AssertionError otherwise: a bug in the book, not
    the reader's). Its value is not printed, only its verdict. Once ``fn`` is done, right or
    wrong, ``fn`` is returned: the reader's attempt is never replaced.

    A line wider than 99 characters is split, one part per line. It never raises for a stub or
    a wrong answer, so a notebook runs top to bottom before the exercises are done; any other
    exception from ``fn`` is the reader's bug and propagates. Non-numeric results (strings, …)
    are compared with ``==``.

    Args:
        fn: the reader's function (a stub raises NotImplementedError).
        *args: the positional arguments ``fn`` is called with.
        expected: the right answer: a number, a tensor, an array, or a tuple of tensors
            (keyword-only).
        tol: the largest relative difference (absolute when ``expected`` is 0) accepted as
            right, see :func:`relative_difference`.
        solution: the chapter module of the book's solution, e.g. ``"ch04"``
            (:func:`book_solution` finds the function of ``fn``'s name there); ``None``: no
            fallback, a stub is returned as it is.
        **kwargs: the keyword arguments ``fn`` is called with.

    Returns:
        ``fn``, or the book's solution while ``fn`` is a stub and ``solution`` is given.
    """
    tol = _check_tol(tol)
    name = getattr(fn, "__name__", "your function")
    book = book_solution(solution, name) if solution is not None else None
    try:
        yours = fn(*args, **kwargs)
    except NotImplementedError:
        _emit(f"not done yet ({name} raises NotImplementedError);", f"expected: {_show(expected)}")
        return fn if book is None else _run_book_solution(book, args, kwargs, expected, tol)
    verdict, detail = _verdict(yours, expected, tol)
    parts = [f"yours: {_show(yours)}", f"expected: {_show(expected)}", verdict]
    if detail:
        parts[-1] += f" ({detail})"
    _emit(*parts)
    return fn


def _run_book_solution(book: Callable, args, kwargs, expected: Any, tol: float) -> Callable:
    """Check the book's solution as the reader's would be; it must pass."""
    verdict, detail = _verdict(book(*args, **kwargs), expected, tol)
    if verdict != "✓":
        raise AssertionError(f"the book's solution {book.__module__}.{book.__name__} fails its "
                             f"own check: {detail}")
    _emit(f"the book's solution {verdict} ({detail});",
          "the cells below use it until yours is done")
    return book


def _verdict(value: Any, expected: Any, tol: float) -> tuple[str, str]:
    """("✓" or "✗", what was compared) for ``value`` against ``expected``."""
    try:
        diff, kind = relative_difference(value, expected)
    except ValueError as err:
        return "✗", str(err)
    except TypeError:
        return ("✓" if _equal(value, expected) else "✗"), ""
    verdict = "✓" if diff <= tol else "✗"
    return verdict, f"{_difference(diff, kind, tol)}, tolerance {tol:g}"
