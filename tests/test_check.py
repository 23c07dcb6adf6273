"""deqlib.check: margins printed, failures raised with both numbers, exercises never raise."""

import math
import re

import numpy as np
import pytest
import torch

from deqlib import check


def printed(capsys) -> str:
    return capsys.readouterr().out.strip()


def test_close_prints_the_relative_difference_against_the_tolerance(capsys):
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5
    actual = expected + torch.tensor([0.0, 5e-10], dtype=torch.float64)
    check.close(actual, expected, tol=1e-9, what="grad")
    assert printed(capsys) == "grad: relative difference 1.0e-10 (tolerance 1e-09)"


def test_close_raises_with_both_numbers_when_over_tolerance(capsys):
    with pytest.raises(
        AssertionError,
        match=r"relative difference 2\.000e-01 exceeds the "
        r"tolerance 0\.01",
    ):
        check.close(torch.tensor([1.2]), torch.tensor([1.0]), tol=0.01, what="x")
    assert printed(capsys) == "x: relative difference 2.0e-01 (tolerance 0.01)"


def test_close_falls_back_to_the_absolute_difference_at_zero(capsys):
    check.close(torch.tensor([1e-11, 0.0]), torch.zeros(2), tol=1e-10)
    assert printed(capsys) == "absolute difference 1.0e-11 (tolerance 1e-10)"
    with pytest.raises(AssertionError, match="absolute difference"):
        check.close(0.5, 0.0, tol=0.1)


def test_close_accepts_floats_numpy_grad_tensors_and_tuples(capsys):
    check.close(np.array([1.0, 2.0]), [1.0, 2.0], tol=0.0)
    w = torch.ones(2, requires_grad=True) * 2
    check.close(w, torch.full((2,), 2.0, dtype=torch.float64), tol=0.0)
    check.close((torch.ones(2), torch.zeros(1)), (torch.ones(2), torch.zeros(1)), tol=0.0)
    check.close(1.0 + 1e-7, 1.0, tol=1e-6)
    lines = printed(capsys).splitlines()
    assert lines[:3] == ["relative difference 0.0e+00 (tolerance 0)"] * 3
    assert re.fullmatch(r"relative difference 1\.0e-07 \(tolerance 1e-06\)", lines[3])


def test_close_refuses_nan_shape_mismatch_and_bad_tolerance():
    with pytest.raises(AssertionError, match="nan"):
        check.close(torch.tensor([math.nan]), torch.tensor([1.0]), tol=1.0)
    with pytest.raises(AssertionError, match="inf"):
        check.close(torch.tensor([math.inf]), torch.tensor([1.0]), tol=1.0)
    with pytest.raises(ValueError, match=r"actual \(2,\) vs expected \(3,\)"):
        check.close(torch.zeros(2), torch.zeros(3), tol=1.0)
    with pytest.raises(ValueError, match=r"actual \[\(2,\)\] vs expected \[\(3,\)\]"):
        check.close((torch.zeros(2),), (torch.zeros(3),), tol=1.0)
    with pytest.raises(ValueError, match="tol=-1"):
        check.close(1.0, 1.0, tol=-1)
    with pytest.raises(TypeError, match="tol must be a real number .* of type str"):
        check.close(1.0, 1.0, tol="small")
    with pytest.raises(TypeError, match="tol must be a real number"):
        check.close(1.0, 1.0, tol="1e-6")     # float("1e-6") used to accept it
    with pytest.raises(TypeError):
        check.close(1.0, 1.0, 1e-9)  # tol is keyword-only


def test_at_most_prints_the_ratio_and_raises_when_violated(capsys):
    check.at_most(0.25, 1.0, what="‖S‖")
    assert printed(capsys) == "‖S‖: 0.25 ≤ 1 (ratio 0.25)"
    with pytest.raises(AssertionError, match=r"1\.5 is not ≤ 1\.0"):
        check.at_most(1.5, 1.0)
    check.at_most(1.0 + 1e-15, 1.0, rtol=1e-12)  # equality up to rounding
    check.at_most(-3.0, -1.0)
    assert printed(capsys).splitlines()[-1] == "-3 ≤ -1 (margin 2)"


def test_at_most_on_tensors_reports_the_worst_entry(capsys):
    check.at_most(torch.tensor([0.1, 0.9, 0.3]), torch.tensor([1.0, 1.0, 0.4]))
    assert printed(capsys) == "0.9 ≤ 1 (ratio 0.9)"
    with pytest.raises(AssertionError, match="0.5 is not ≤ 0.4"):
        check.at_most(torch.tensor([0.1, 0.5]), torch.tensor([1.0, 0.4]))
    with pytest.raises(AssertionError, match="NaN"):
        check.at_most(torch.tensor([math.nan]), 1.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        check.at_most(torch.zeros(2), torch.zeros(3))


def test_at_least_mirrors_at_most(capsys):
    check.at_least(2.5, 1.0, what="decrease")
    assert printed(capsys) == "decrease: 2.5 ≥ 1 (ratio 2.5)"
    with pytest.raises(AssertionError, match="is not ≥"):
        check.at_least(0.5, 1.0)


def stub(x):
    raise NotImplementedError("your code here")


def square(x):
    return x * x


def test_exercise_with_a_stub_says_not_done_yet_and_does_not_raise(capsys):
    check.exercise(stub, torch.tensor(3.0), expected=torch.tensor(9.0))
    assert printed(capsys) == "not done yet (stub raises NotImplementedError); expected: 9"


def test_exercise_marks_right_and_wrong_answers(capsys):
    check.exercise(square, torch.tensor([1.0, 2.0]), expected=torch.tensor([1.0, 4.0]))
    assert printed(capsys) == (
        "yours: [1, 4] expected: [1, 4] ✓ (relative difference ≤ 1e-08, tolerance 1e-06)"
    )
    check.exercise(square, 3.0, expected=10.0, tol=1e-3)
    assert printed(capsys) == (
        "yours: 9 expected: 10 ✗ (relative difference 1.0e-01, tolerance 0.001)"
    )
    check.exercise(square, torch.ones(3), expected=torch.ones(2))
    assert "✗ (shapes differ: actual (3,) vs expected (2,)" in printed(capsys)
    check.exercise(lambda: "anderson", expected="anderson")
    assert printed(capsys) == "yours: 'anderson' expected: 'anderson' ✓"
    check.exercise(lambda: None, expected=torch.ones(8))
    assert printed(capsys) == "yours: None expected: tensor of shape (8,) with norm 2.828 ✗"


def test_exercise_splits_a_line_wider_than_the_page(capsys):
    pair = (torch.arange(6.0), torch.ones(7))
    check.exercise(lambda: pair, expected=pair)
    lines = printed(capsys).splitlines()
    assert lines == [
        "yours: ([0, 1, 2, 3, 4, 5], tensor of shape (7,) with norm 2.646)",
        "expected: ([0, 1, 2, 3, 4, 5], tensor of shape (7,) with norm 2.646)",
        "✓ (relative difference ≤ 1e-08, tolerance 1e-06)",
    ]
    assert all(len(line) <= check.WIDTH for line in lines)


def test_exercise_lets_the_readers_other_bugs_through():
    with pytest.raises(ZeroDivisionError):
        check.exercise(lambda: 1 / 0, expected=1.0)


def test_a_rounding_level_difference_prints_as_a_bound_every_machine_reproduces(capsys):
    # 3e-13 here, 8e-14 on another CPU: both print the same true bound, tol/100
    one = torch.tensor([1.0], dtype=torch.float64)
    for gap in (3e-13, 8e-14, 0.0):
        check.close(one + gap, one, tol=1e-9, what="g")
        assert printed(capsys) == "g: relative difference ≤ 1e-11 (tolerance 1e-09)"
    # above a hundredth of the tolerance the digits carry meaning and are printed
    check.close(one + 2e-10, one, tol=1e-9, what="g")
    assert printed(capsys) == "g: relative difference 2.0e-10 (tolerance 1e-09)"
    with pytest.raises(AssertionError, match="exceeds"):
        check.close(torch.tensor([1.1]), torch.tensor([1.0]), tol=1e-9)


def test_at_most_prints_a_rounding_level_value_as_its_bound(capsys):
    check.at_most(8.79e-15, 1e-12, what="residual")
    assert printed(capsys) == "residual: < 1e-14 ≤ 1e-12 (ratio < 0.01)"
    check.at_most(2e-13, 1e-12, what="residual")
    assert printed(capsys) == "residual: 2e-13 ≤ 1e-12 (ratio 0.2)"
    check.at_most(0.01, 1.0, what="at the floor")   # exactly bound/100: "<" would be false
    assert printed(capsys) == "at the floor: 0.01 ≤ 1 (ratio 0.01)"
    check.at_most(0.012342, 1.23444)   # above the printed bound/100, 0.01234: digits, not "<"
    assert printed(capsys) == "0.01234 ≤ 1.234 (ratio 0.01)"
    check.at_most(0.012349, 1.2348)   # below the printed 0.01235 but above bound/100: digits
    assert printed(capsys) == "0.01235 ≤ 1.235 (ratio 0.01)"
    with pytest.raises(AssertionError):
        check.at_most(2e-12, 1e-12)


def test_infinite_bounds_and_values_give_the_true_verdict(capsys):
    check.at_most(1.0, float("inf"))          # used to raise: 0·∞ made the slack NaN
    check.at_least(1.0, float("-inf"))
    check.at_most(1.0, float("inf"), rtol=1e-3)
    check.close(torch.tensor([float("inf"), 1.0]), torch.tensor([float("inf"), 1.0]), tol=1e-9)
    assert "relative difference ≤" in printed(capsys).splitlines()[-1]
    with pytest.raises(AssertionError, match="exceeds"):
        check.close(torch.tensor([float("inf")]), torch.tensor([1.0]), tol=1e-9)
    with pytest.raises(AssertionError, match="exceeds"):
        check.close(torch.tensor([1.0]), torch.tensor([float("inf")]), tol=1e-9)


def test_complex_values_are_refused_not_cast():
    # torch.tensor(1+5j) against 1+0j used to pass, the imaginary part silently dropped
    with pytest.raises(TypeError, match="complex"):
        check.close(torch.tensor(1 + 5j), torch.tensor(1 + 0j), tol=1e-6)
    with pytest.raises(TypeError, match="complex"):
        check.at_most(1 + 1j, 2.0)
    with pytest.raises(TypeError, match="complex"):
        check.close(np.array([1 + 1j]), np.array([1.0]), tol=1e-6)


def test_at_most_names_rtol_and_refuses_an_empty_value():
    with pytest.raises(ValueError, match=r"rtol must lie in \[0, inf\).*got rtol=-0.1"):
        check.at_most(1.0, 2.0, rtol=-0.1)        # the message named tol
    with pytest.raises(ValueError, match="the value is empty"):
        check.at_most(torch.tensor([]), 1.0)     # torch's argmax IndexError


def test_a_failing_inequality_is_never_printed_as_if_it_held(capsys):
    with pytest.raises(AssertionError, match="1.2 is not ≤ 1"):
        check.at_most(1.2, 1.0, what="‖S‖₂")
    assert capsys.readouterr().out == "‖S‖₂: 1.2 > 1 ✗\n"
    with pytest.raises(AssertionError):
        check.at_least(0.5, 1.0, what="ratio")
    assert capsys.readouterr().out == "ratio: 0.5 < 1 ✗\n"
