"""deqlib.monitor: ‖J‖₂ and ρ(J) by power iteration against the exact values (float64), the
monitor as a layer callback and a fit callback, and its errors."""

import math

import pytest
import torch

import deqlib
from deqlib.monitor import (
    EquilibriumMonitor,
    linear_part,
    operator_norm,
    predicted_picard_steps,
    spectral_radius,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_layer(dtype=torch.float64):
    return deqlib.TanhDEQ(6, 8, 3, solver=deqlib.Anderson(tol=1e-10), dtype=dtype,
                          generator=torch.Generator().manual_seed(0))


def equilibria(layer, n=5):
    x = torch.randn(n, layer.in_features, generator=torch.Generator().manual_seed(1),
                    dtype=layer.W_z.dtype)
    with torch.no_grad():
        z = layer(x, return_info=True)[1].forward.z
    exact = (1 - z**2).unsqueeze(-1) * layer.effective_W_z().detach()   # J = diag(1 − z²) W_z
    return x, z, exact


def test_operator_norm_matches_the_exact_spectral_norm_in_float64():
    layer = small_layer()
    x, z, J = equilibria(layer)
    estimate = operator_norm(layer.map(x), z, iterations=200)
    exact = torch.linalg.matrix_norm(J, ord=2)
    assert estimate.shape == (5,) and estimate.dtype == torch.float64
    assert torch.allclose(estimate, exact, rtol=1e-10), (estimate, exact)


def test_operator_norm_approaches_from_below_and_is_close_after_20_steps():
    layer = small_layer()
    x, z, J = equilibria(layer)
    exact = torch.linalg.matrix_norm(J, ord=2)
    estimate = operator_norm(layer.map(x), z, iterations=20)
    assert (estimate <= exact * (1 + 1e-12)).all(), (estimate, exact)
    assert torch.allclose(estimate, exact, rtol=1e-3), (estimate, exact)


def test_spectral_radius_matches_the_largest_eigenvalue_modulus():
    layer = small_layer()
    x, z, J = equilibria(layer)
    exact = torch.linalg.eigvals(J).abs().max(dim=-1).values
    estimate = spectral_radius(layer.map(x), z, iterations=400)
    assert torch.allclose(estimate, exact, rtol=0.02), (estimate, exact)
    assert (exact < torch.linalg.matrix_norm(J, ord=2)).all()   # a case where ρ < ‖J‖₂


def test_spectral_radius_of_a_rotation_is_its_scale_although_one_step_ratios_oscillate():
    c, s = math.cos(0.7), math.sin(0.7)
    A = 0.5 * torch.tensor([[c, -s], [s, c]], dtype=torch.float64) @ torch.diag(
        torch.tensor([1.5, 1 / 1.5], dtype=torch.float64))
    z = torch.zeros(1, 2, dtype=torch.float64)
    exact = torch.linalg.eigvals(A).abs().max().item()
    estimate = spectral_radius(lambda z: z @ A.T, z, iterations=400).item()
    assert abs(estimate - exact) < 0.02 * exact, (estimate, exact)


def test_linear_part_gives_the_factors_of_the_jacobian():
    layer = small_layer()
    x, z, J = equilibria(layer)
    L = linear_part(layer)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=z.dtype)
    torch.testing.assert_close((1 - z**2) * L(v), torch.einsum("bij,bj->bi", J, v))
    conv = deqlib.ConvDEQ((6, 6), 3, channels=2, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    img = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(img, conv.effective_K().detach(), padding=1)
    torch.testing.assert_close(linear_part(conv)(img), expected)


def test_monitor_records_solves_and_measures_the_equilibria_during_fit():
    data = deqlib.data.load("digits")
    monitor = EquilibriumMonitor(data.X_test[:16])
    layer = deqlib.TanhDEQ(64, 16, 10, solver=deqlib.Anderson(tol=1e-4), callback=monitor,
                           generator=torch.Generator().manual_seed(0))
    small = deqlib.data.Dataset(data.X_train[:128], data.y_train[:128], data.X_test[:32],
                                data.y_test[:32], 10, "digits", data.image_shape)
    history = deqlib.train.fit(layer, small, optimizer="adam", lr=1e-2, epochs=2,
                               batch_size=64, progress=False, callback=monitor.epoch)
    rows = history.rows
    assert len(rows) == 3 and math.isnan(rows[0]["forward_steps"])
    batches = math.ceil(len(small.X_train) / 64)
    for row in rows[1:]:
        assert len(row["forward_per_batch"]) == batches == row["forward_solves"]
        assert len(row["backward_per_batch"]) == batches
        assert row["forward_unconverged"] == 0
    for row in rows:
        assert 0 < row["J_radius"] <= row["J_radius_max"] <= row["J_norm"] * 1.05
        assert row["J_norm"] <= row["W_norm"] * (1 + 1e-4) <= 0.9 * (1 + 1e-3)
        assert 0 < row["slope"] <= 1 and row["W_radius"] <= row["W_norm"] * 1.05
        assert row["picard_steps"] >= 1 and row["probe_steps"] >= 1


def test_monitor_measures_a_conv_layer():
    data = deqlib.data.load("digits")
    monitor = EquilibriumMonitor(data.X_test[:4])
    layer = deqlib.ConvDEQ(data.image_shape, 10, generator=torch.Generator().manual_seed(0))
    row = monitor.epoch(layer)
    assert row["forward_solves"] == 0 and math.isnan(row["forward_steps"])
    assert 0 < row["J_norm"] <= row["W_norm"] * (1 + 1e-4) and row["picard_steps"] >= 1


def test_predicted_picard_steps():
    assert predicted_picard_steps(0.1, 1e-4) == pytest.approx(4.0)
    assert predicted_picard_steps(0.5, 1e-4) == pytest.approx(math.log(1e4) / math.log(2))


@pytest.mark.parametrize("call, error, match", [
    (lambda: operator_norm("f", torch.zeros(2, 3)), TypeError, "f must be callable"),
    (lambda: operator_norm(lambda z: z, [1.0]), TypeError, "z must be a torch.Tensor"),
    (lambda: operator_norm(lambda z: z, torch.zeros(3)), ValueError, "batch"),
    (lambda: operator_norm(lambda z: z, torch.zeros(2, 3), iterations=0), ValueError,
     "iterations"),
    (lambda: operator_norm(lambda z: z, torch.zeros(2, 3), iterations=2.0), TypeError,
     "iterations"),
    (lambda: operator_norm(lambda z: z[:, :2], torch.zeros(2, 3)), ValueError, "z's shape"),
    (lambda: spectral_radius(lambda z: z, torch.zeros(2, 3), iterations=1), ValueError,
     "iterations"),
    (lambda: spectral_radius(lambda z: z.sum(1), torch.zeros(2, 3)), ValueError, "z's shape"),
    (lambda: spectral_radius(lambda z: z, torch.zeros(2, 3), seed=-1), ValueError, "seed"),
    (lambda: linear_part(torch.nn.Linear(2, 2)), TypeError, "TanhDEQ"),
    (lambda: EquilibriumMonitor(torch.zeros(3)), ValueError, "probe"),
    (lambda: EquilibriumMonitor([[0.0]]), TypeError, "probe"),
    (lambda: EquilibriumMonitor(torch.zeros(2, 3), tol=0), ValueError, "tol"),
    (lambda: EquilibriumMonitor(torch.zeros(2, 3), training_only=1), TypeError,
     "training_only"),
    (lambda: EquilibriumMonitor(torch.zeros(2, 3)).measure(torch.nn.Linear(3, 3)), TypeError,
     "map"),
    (lambda: predicted_picard_steps(1.0, 1e-4), ValueError, "radius"),
])
def test_bad_arguments_say_what_is_wrong(call, error, match):
    with pytest.raises(error, match=match):
        call()
