"""deqlib.validate: one kind of error per mistake, numpy scalars accepted."""

import math

import numpy as np
import pytest
import torch

from deqlib import validate as V


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), np.float64(3.0), np.int64(4)])
def test_positive_real_accepts_python_and_numpy_numbers(value):
    assert V.positive_real("eta", value) == float(value)
    assert type(V.positive_real("eta", value)) is float


@pytest.mark.parametrize("value", ["0.1", None, True, torch.tensor(0.1), 1j])
def test_a_non_number_is_a_type_error_that_names_the_argument(value):
    with pytest.raises(TypeError, match="eta"):
        V.positive_real("eta", value)
    with pytest.raises(TypeError, match="eta"):
        V.real("eta", value)


def test_a_tensor_gets_the_item_hint():
    with pytest.raises(TypeError, match=r"\.item\(\)"):
        V.real("lr", torch.tensor(0.1))


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
def test_positive_real_refuses_bad_values(value):
    with pytest.raises(ValueError, match="positive finite"):
        V.positive_real("tol", value)


def test_real_refuses_nan_and_inf_unless_told():
    with pytest.raises(ValueError):
        V.real("x", math.nan)
    with pytest.raises(ValueError):
        V.real("x", math.inf)
    assert V.real("x", math.inf, finite=False) == math.inf
    with pytest.raises(ValueError):
        V.real("x", math.nan, finite=False)


def test_interval_ends():
    assert V.interval("beta", 1.0, 0, 1, closed=(False, True)) == 1.0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        V.interval("beta", 0.0, 0, 1, closed=(False, True))
    with pytest.raises(ValueError, match=r"\[0, inf\)"):
        V.nonnegative_real("lam", -1e-9)
    with pytest.raises(ValueError):
        V.nonnegative_real("lam", math.inf)
    assert V.nonnegative_real("lam", 0) == 0.0


def test_interval_names_itself_for_nan():
    with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\).*got gamma=nan"):
        V.interval("gamma", math.nan, 0, 1, closed=(False, False))
    with pytest.raises(TypeError, match="gamma must be a real number"):
        V.interval("gamma", "0.5", 0, 1)


@pytest.mark.parametrize("value", [10.0, np.float64(3.0), 2.5, "3", True, None])
def test_integer_refuses_everything_but_integers(value):
    with pytest.raises(TypeError, match="max_iter must be an integer"):
        V.integer("max_iter", value)


def test_a_whole_float_is_told_how_to_write_it():
    with pytest.raises(TypeError, match="write 10 "):
        V.positive_integer("max_iter", 10.0)


def test_integer_bounds_and_numpy_integers():
    assert V.integer("k", np.int32(3), minimum=1) == 3
    assert type(V.integer("k", np.int32(3))) is int
    with pytest.raises(ValueError, match=">= 1"):
        V.positive_integer("epochs", 0)
    with pytest.raises(ValueError, match="in 1..5"):
        V.integer("k", 6, minimum=1, maximum=5)
    with pytest.raises(ValueError, match="<= 5"):
        V.integer("k", 6, maximum=5)


def test_boolean_refuses_truthy_values():
    assert V.boolean("strict", np.bool_(True)) is True
    assert V.boolean("strict", False) is False
    for value in (1, "False", None, torch.tensor(True)):
        with pytest.raises(TypeError, match="True or False"):
            V.boolean("strict", value)


def test_choice():
    assert V.choice("stop", np.str_("rel"), ("rel", "abs")) == "rel"
    with pytest.raises(ValueError, match="'rel', 'abs'"):
        V.choice("stop", "relative", ("rel", "abs"))
    with pytest.raises(TypeError):
        V.choice("stop", 1, ("rel", "abs"))


def test_floating_dtype():
    assert V.floating_dtype("dtype", torch.float64) is torch.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        V.floating_dtype("dtype", torch.float16)
    with pytest.raises(TypeError, match="torch dtype"):
        V.floating_dtype("dtype", "float32")


def test_tensor():
    x = torch.zeros(3, 4)
    assert V.tensor("x", x, shape=(None, 4)) is x
    with pytest.raises(ValueError, match=r"shape \(any, 5\); got \(3, 4\)"):
        V.tensor("x", x, shape=(None, 5))
    with pytest.raises(ValueError, match="3 dimensions"):
        V.tensor("x", x, ndim=3)
    with pytest.raises(TypeError, match="floating-point"):
        V.tensor("x", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        V.tensor("x", torch.tensor([1.0, math.nan]))
    assert V.tensor("x", torch.tensor([math.inf]), finite=False).isinf().all()
    with pytest.raises(TypeError, match="torch.Tensor"):
        V.tensor("x", [1.0])


def test_function():
    assert V.function("f", abs) is abs
    with pytest.raises(TypeError, match=r"f must be callable as f\(z\); got int"):
        V.function("f", 3, "f(z)")


def test_choices_takes_one_string_as_one_choice():
    assert V.choices("models", "linear", ("linear", "delm")) == ["linear"]
    assert V.choices("models", np.str_("delm"), ("linear", "delm")) == ["delm"]
    assert V.choices("models", ("delm", "linear"), ("linear", "delm")) == ["delm", "linear"]
    with pytest.raises(ValueError, match=r"models\[1\] must be one of 'linear', 'delm'; got"):
        V.choices("models", ["delm", "lin"], ("linear", "delm"))
    with pytest.raises(TypeError, match="models must be one of .* or a list of them"):
        V.choices("models", 3, ("linear", "delm"))
    with pytest.raises(TypeError, match=r"models\[0\] must be one of"):
        V.choices("models", [None], ("linear", "delm"))


def test_integers_refuse_a_string_and_take_one_integer():
    assert V.integers("seeds", (0, np.int64(2))) == [0, 2]
    assert V.integers("seeds", np.int32(4)) == [4]
    for bad in ("01", b"01", 1.0, {0, 1}):
        with pytest.raises(TypeError, match="seeds must be an integer or a list of integers"):
            V.integers("seeds", bad)
    with pytest.raises(TypeError, match=r"seeds\[1\] must be an integer"):
        V.integers("seeds", [0, 1.5])
    with pytest.raises(ValueError, match=r"seeds\[0\] must be an integer >= 0"):
        V.integers("seeds", [-1], minimum=0)


def test_string_accepts_numpy_strings_only_as_strings():
    assert V.string("dataset", np.str_("digits")) == "digits"
    assert type(V.string("dataset", np.str_("digits"))) is str
    with pytest.raises(TypeError, match="dataset must be a string .*of type bytes"):
        V.string("dataset", b"digits", "a name from data.DATASETS")
