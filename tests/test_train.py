"""deqlib.train: fit lowers the loss on the digits, reproducibly, on any device."""

import pytest
import torch

from deqlib import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel, TanhDEQ, data
from deqlib.train import fit, loss_fn, resolve_device


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", train_size=600, test_size=200)


@pytest.mark.parametrize("make", [
    lambda g: DeepEquilibriumLinear(64, 10, generator=g),
    lambda g: LinearModel(64, 10, generator=g),
    lambda g: DeepLinearNetwork(64, 10, depth=2, generator=g),
    lambda g: TanhDEQ(64, 16, 10, generator=g, tol=1e-4),
], ids=["delm", "linear", "deep_linear", "tanh_deq"])
@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
def test_fit_lowers_the_loss_on_digits(digits, make, loss):
    model = make(torch.Generator().manual_seed(0))
    history = fit(model, digits, loss=loss, lr=0.05 if loss == "square" else 0.5, epochs=4, batch_size=32,
                  progress=False)
    assert len(history) == 5 and history["epoch"] == [0, 1, 2, 3, 4]
    assert history.last["train_loss"] < 0.8 * history.rows[0]["train_loss"], history["train_loss"]
    assert history.last["test_acc"] > 0.5


def test_full_batch_adam_and_callback(digits):
    model = DeepEquilibriumLinear(64, 10, generator=torch.Generator().manual_seed(1))
    history = fit(model, digits, optimizer="adam", lr=1e-2, epochs=3, batch_size=None, progress=False,
                  callback=lambda m: {"S_norm": torch.linalg.matrix_norm(m.S(), ord=2).item()})
    assert all(0 < s < model.gamma for s in history["S_norm"])
    assert history.last["train_loss"] < history.rows[0]["train_loss"]
    assert history.last["time"] > 0


def test_fit_is_reproducible_with_a_seed(digits):
    def run(seed):
        model = DeepEquilibriumLinear(64, 10, generator=torch.Generator().manual_seed(0))
        return fit(model, digits, epochs=2, batch_size=32, seed=seed, progress=False)["train_loss"]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_bad_arguments_are_rejected(digits):
    model = LinearModel(64, 10)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(model, digits, loss="mse")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit(model, digits, optimizer="lbfgs")
    with pytest.raises(ValueError, match="batch_size must be"):
        fit(model, digits, batch_size=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        fit(model, digits, lr=-1.0)
    with pytest.raises(TypeError, match="deqlib.data.Dataset"):
        fit(model, (digits.X_train, digits.y_train))


def test_divergence_is_reported(digits):
    model = LinearModel(64, 10)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(model, digits, loss="square", lr=50.0, epochs=40, progress=False)


def test_square_loss_uses_one_hot_targets():
    out = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    assert loss_fn("square", num_classes=2, reduction="sum")(out, y).item() == 1.0
    assert loss_fn("square", num_classes=2)(out, y).item() == 0.5


def test_auto_device_is_a_real_device():
    dev = resolve_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
