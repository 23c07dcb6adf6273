"""deqlib.train: fit lowers the loss on the digits, reproducibly, and answers bad input early."""

import numpy as np
import pytest
import torch
from torch import nn

from deqlib import (
    Anderson,
    DeepEquilibriumLinear,
    DeepLinearNetwork,
    LinearModel,
    data,
    functional,
    train,
)
from deqlib.data import Dataset
from deqlib.train import fit, loss_fn, resolve_device


def _linear(seed: int = 0) -> LinearModel:
    """A seeded linear model: results must not depend on the order the tests run in."""
    return LinearModel(64, 10, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", train_size=600, test_size=200)


def _tanh_deq(g):
    from deqlib import TanhDEQ
    return TanhDEQ(64, 16, 10, generator=g, solver=Anderson(tol=1e-4))


_MODELS = {
    "delm": lambda g: DeepEquilibriumLinear(64, 10, generator=g),
    "linear": lambda g: LinearModel(64, 10, generator=g),
    "deep_linear": lambda g: DeepLinearNetwork(64, 10, depth=2, generator=g),
    "tanh_deq": _tanh_deq,
}


# the tanh DEQ trains on one loss and fewer digits only: its solves would dominate the time
@pytest.mark.parametrize("name,loss", [(name, loss) for name in _MODELS
                                       for loss in functional.LOSSES
                                       if (name, loss) != ("tanh_deq", "square")])
def test_fit_lowers_the_loss_on_digits(digits, name, loss):
    model = _MODELS[name](torch.Generator().manual_seed(0))
    few = name == "tanh_deq"
    train_on = data.load("digits", train_size=200, test_size=100) if few else digits
    history = fit(model, train_on, loss=loss, lr=0.05 if loss == "square" else 0.5, epochs=3,
                  batch_size=20 if few else 32, progress=False)
    assert len(history) == 4 and history["epoch"] == [0, 1, 2, 3]
    first, last = history.rows[0]["train_loss"], history.last["train_loss"]
    assert last < 0.8 * first, f"train loss {first:.4f} -> {last:.4f}: not lowered by 20%"
    assert history.last["test_acc"] > 0.5, history["test_acc"]


def test_full_batch_adam_and_callback(digits):
    model = DeepEquilibriumLinear(64, 10, generator=torch.Generator().manual_seed(1))
    history = fit(model, digits, optimizer="adam", lr=1e-2, epochs=3, batch_size=None,
                  progress=False,
                  callback=lambda m: {"S_norm": torch.linalg.matrix_norm(m.S(), ord=2).item()})
    assert all(0 < s < model.gamma for s in history["S_norm"]), history["S_norm"]
    assert history.last["train_loss"] < history.rows[0]["train_loss"], history["train_loss"]
    assert history.last["time"] > 0


def test_fit_is_reproducible_with_a_seed(digits):
    def run(seed):
        model = DeepEquilibriumLinear(64, 10, generator=torch.Generator().manual_seed(0))
        return fit(model, digits, epochs=2, batch_size=32, seed=seed, progress=False)["train_loss"]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_losses_have_one_definition():
    assert train.LOSSES is functional.LOSSES


def test_numpy_scalars_are_accepted(digits):
    model = LinearModel(64, 10, generator=torch.Generator().manual_seed(0))
    history = fit(model, digits, lr=np.float32(0.5), epochs=np.int64(1), batch_size=np.int64(64),
                  seed=np.int32(3), momentum=np.float64(0.5), eval_batch_size=np.int64(100),
                  progress=False)
    assert len(history) == 2


@pytest.mark.parametrize("options,error,message", [
    (dict(loss="mse"), ValueError, "loss must be one of"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(loss=["square"]), TypeError, "loss must be one of"),
    (dict(batch_size=0), ValueError, r"batch_size must be an integer >= 1 \(or None for full"),
    (dict(batch_size=2.5), TypeError, r"batch_size must be an integer \(or None for full"),
    (dict(lr=-1.0), ValueError, r"lr must be a positive finite number \(the step size\); got"),
    (dict(lr=float("nan")), ValueError, r"lr must be a positive finite number .*; got lr=nan"),
    (dict(lr=True), TypeError, r"lr must be a positive finite number"),
    (dict(lr="0.1"), TypeError, r"lr must be a positive finite number .* of type str"),
    (dict(epochs=2.0), TypeError, r"epochs must be an integer .*got epochs=2.0 .*write 2"),
    (dict(epochs=-1), ValueError, r"epochs must be an integer >= 0"),
    (dict(seed=1.7), TypeError, r"seed must be an integer"),
    (dict(eval_batch_size=0), ValueError, r"eval_batch_size must be an integer >= 1"),
    (dict(eval_batch_size=-5), ValueError, r"eval_batch_size must be an integer >= 1"),
    (dict(momentum=-0.1), ValueError, r"momentum must lie in \[0, inf\)"),
    (dict(momentum="0.9"), TypeError, r"momentum must be a real number"),
    (dict(weight_decay=float("inf")), ValueError, r"weight_decay must lie in \[0, inf\)"),
    (dict(progress="no"), TypeError, r"progress must be True or False"),
    (dict(optimizer="adam", momentum=0.9), ValueError, "momentum=0.9 applies to SGD only"),
    (dict(callback=42), TypeError, "callback must be callable"),
    (dict(callback=lambda m: 1.0), TypeError,
     "must return a dict of numbers to record; it returned float"),
])
def test_bad_options_are_rejected_by_name(digits, options, error, message):
    with pytest.raises(error, match=message):
        fit(_linear(), digits, **{"epochs": 1, "progress": False, **options})


def test_data_must_be_a_dataset(digits):
    with pytest.raises(TypeError, match="deqlib.data.Dataset"):
        fit(_linear(), (digits.X_train, digits.y_train))


@pytest.mark.parametrize("outputs", [5, 12])
def test_a_model_whose_outputs_do_not_match_the_classes_is_refused(digits, outputs):
    # cross-entropy would silently accept 12 outputs for 10 classes
    with pytest.raises(ValueError, match=f"gives {outputs} outputs per example but the data "
                                         "have 10 classes: build it with out_features=10"):
        fit(LinearModel(64, outputs), digits, loss="cross_entropy", progress=False)


def test_a_model_without_parameters_or_with_nan_outputs_is_refused(digits):
    with pytest.raises(ValueError, match="Identity has no parameters"):
        fit(nn.Identity(), digits, progress=False)
    model = _linear()
    with torch.no_grad():
        model.W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="returns NaN or Inf before any training"):
        fit(model, digits, progress=False)


def test_nan_in_the_data_is_blamed_on_the_data_not_the_learning_rate(digits):
    X = digits.X_train.clone()
    X[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"X_train holds 1 NaN or Inf values \(the first in row "
                                         r"7\)") as err:
        fit(_linear(), Dataset(X, digits.y_train, digits.X_test, digits.y_test, 10,
                                         "digits", (8, 8)), progress=False)
    assert "learning rate" not in str(err.value)


def test_divergence_is_blamed_on_the_learning_rate(digits):
    model = _linear()
    with pytest.raises(FloatingPointError, match="with lr=50.0.*lower the learning rate"):
        fit(model, digits, loss="square", lr=50.0, epochs=40, progress=False)


def test_square_loss_uses_one_hot_targets():
    out = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    torch.testing.assert_close(loss_fn("square", num_classes=2, reduction="sum")(out, y),
                               torch.tensor(1.0))
    torch.testing.assert_close(loss_fn("square", num_classes=2)(out, y), torch.tensor(0.5))


def test_resolve_device_passes_explicit_devices_through():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = ("cuda" if torch.cuda.is_available() else
                "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected


def test_divergence_in_the_last_step_is_raised_not_recorded():
    # the last step's loss is only seen by the evaluation after it: lr=1e6 used to end in inf
    small = data.load("digits", train_size=200, test_size=50)
    with pytest.raises(FloatingPointError, match="after epoch .* lower the learning rate"):
        fit(_linear(), small, lr=1e6, loss="square", epochs=3, progress=False)


def test_an_interrupted_evaluation_leaves_the_model_in_training_mode(digits):
    model = nn.Sequential(nn.Linear(64, 10), nn.Dropout(0.5))

    def interrupt(m):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, digits, epochs=1, progress=False, callback=interrupt)
    assert model.training


def test_a_callback_may_not_overwrite_what_fit_records(digits):
    with pytest.raises(ValueError, match=r"\['epoch', 'train_loss'\].*other names"):
        fit(_linear(), digits, epochs=1, progress=False,
            callback=lambda m: {"train_loss": 0.0, "epoch": 99})


def test_the_recorded_metrics_are_those_of_the_right_sets(digits):
    """fit's test_* columns are an evaluation on X_test and train_* on X_train (a fit that
    evaluated the training set as "test" would pass a test that only checks the loss falls)."""
    model = LinearModel(64, 10, generator=torch.Generator().manual_seed(0))
    history = fit(model, digits, lr=0.5, epochs=2, batch_size=32, progress=False)
    criterion = loss_fn("cross_entropy", num_classes=10)
    with torch.no_grad():
        for split in ("train", "test"):
            X, y = getattr(digits, f"X_{split}"), getattr(digits, f"y_{split}")
            out = model(X)
            assert abs(history.last[f"{split}_loss"] - criterion(out, y).item()) < 1e-5
            assert history.last[f"{split}_acc"] == (out.argmax(1) == y).sum().item() / len(y)
    assert history.last["train_acc"] != history.last["test_acc"]


def test_a_misspelt_history_column_raises_naming_the_columns(digits):
    history = fit(_linear(), digits, epochs=1, progress=False)
    with pytest.raises(KeyError, match="no column 'test_accuracy'.*'test_acc'"):
        history["test_accuracy"]


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_frozen_model_is_refused_by_name(digits):
    model = _linear()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="none of LinearModel's parameters requires grad"):
        fit(model, digits, epochs=1, progress=False)


def test_empty_history_last_says_so():
    with pytest.raises(IndexError, match="no rows yet"):
        _ = train.History().last


def test_seed_everything_seeds_python_numpy_and_torch():
    import random

    draws = []
    for _ in range(2):
        train.seed_everything(np.int64(7))
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    train.seed_everything(8)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != draws[0]
    with pytest.raises(TypeError, match="seed must be an integer"):
        train.seed_everything(7.0)
