"""deqlib.stability: the Hutchinson Jacobian penalty and the monotone parameterisation."""

import math

import pytest
import torch

import deqlib
from deqlib.functional import tanh_map
from deqlib.stability import MonotoneLinear, jacobian_penalty

pytestmark = pytest.mark.usefixtures("one_thread")


def small_tanh(batch=3, width=5, seed=0):
    """A float64 tanh map z ↦ tanh(Wz + inj) with W requiring grad, and a point z."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(width, width, generator=g, dtype=torch.float64) / 2).requires_grad_()
    inj = torch.randn(batch, width, generator=g, dtype=torch.float64)
    z = torch.randn(batch, width, generator=g, dtype=torch.float64)
    return W, inj, z


def exact_frobenius(f, z):
    """‖∂f(z)_i/∂z_i‖_F² per sample, from the full Jacobian of autograd."""
    flat = lambda u: f(u.reshape(z.shape)).reshape(len(z), -1)  # noqa: E731
    J = torch.autograd.functional.jacobian(flat, z.reshape(len(z), -1))  # (batch, d, batch, d)
    blocks = torch.diagonal(J, dim1=0, dim2=2).permute(2, 0, 1)  # (batch, d, d)
    return blocks.pow(2).sum(dim=(1, 2))


def closed_form(W, inj, z):
    """‖diag(1 − tanh(Wz + inj)²) W‖_F² per sample: the tanh map's Jacobian, by hand."""
    slope = 1 - torch.tanh(z @ W.T + inj) ** 2
    return (slope.pow(2) @ W.pow(2)).sum(dim=1)


def test_exact_mode_equals_the_frobenius_norm_of_the_jacobian():
    W, inj, z = small_tanh()
    f = lambda z: tanh_map(z, W, inj)  # noqa: E731
    expected = exact_frobenius(f, z)
    got = jacobian_penalty(f, z, exact=True, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(got, closed_form(W, inj, z), rtol=1e-12, atol=0)
    mean = jacobian_penalty(f, z, exact=True)
    total = jacobian_penalty(f, z, exact=True, reduction="sum")
    assert math.isclose(mean.item(), expected.mean().item(), rel_tol=1e-12), (mean, expected)
    assert math.isclose(total.item(), expected.sum().item(), rel_tol=1e-12), (total, expected)


def test_hutchinson_mean_over_many_probes_tends_to_the_exact_norm():
    W, inj, z = small_tanh(batch=4, width=6, seed=1)
    f = lambda z: tanh_map(z, W, inj)  # noqa: E731
    S = 20000
    estimate = jacobian_penalty(
        f, z, samples=S, generator=torch.Generator().manual_seed(0), reduction="none"
    )
    exact = exact_frobenius(f, z)
    # One Gaussian probe has variance 2‖JJᵀ‖_F², so the mean of S has standard deviation
    # √(2/S)‖JJᵀ‖_F: allow five of them.
    J = torch.diagonal(torch.autograd.functional.jacobian(f, z), dim1=0, dim2=2).permute(2, 0, 1)
    std = math.sqrt(2 / S) * torch.linalg.matrix_norm(J @ J.transpose(1, 2))
    gap = (estimate - exact).abs()
    assert bool((gap <= 5 * std).all()), f"estimate {estimate} vs exact {exact}, std {std}"
    assert bool((gap > 0).any()), "a random estimate equal to the exact value: probes unused?"


def test_one_probe_is_unbiased_on_average_and_reproducible():
    W, inj, z = small_tanh(seed=2)
    f = lambda z: tanh_map(z, W, inj)  # noqa: E731
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([jacobian_penalty(f, z, generator=g) for _ in range(4000)]).detach()
    exact = exact_frobenius(f, z).mean()
    assert abs(draws.mean() - exact) <= 5 * draws.std() / math.sqrt(len(draws)), (
        draws.mean(), exact)
    first = jacobian_penalty(f, z, samples=3, generator=torch.Generator().manual_seed(7))
    again = jacobian_penalty(f, z, samples=3, generator=torch.Generator().manual_seed(7))
    assert first.item() == again.item()


def test_penalty_gradient_matches_the_closed_form_gradient():
    W, inj, z = small_tanh(seed=4)
    f = lambda z: tanh_map(z, W, inj)  # noqa: E731
    (got,) = torch.autograd.grad(jacobian_penalty(f, z, exact=True), W)
    (expected,) = torch.autograd.grad(closed_form(W, inj, z).mean(), W)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the Hutchinson estimate is differentiable too, and its gradient is unbiased
    g = torch.Generator().manual_seed(5)
    (noisy,) = torch.autograd.grad(jacobian_penalty(f, z, samples=3000, generator=g), W)
    assert deqlib.check.relative_difference(noisy, expected)[0] < 0.1


def test_penalty_keeps_its_graph_under_no_grad():
    W, inj, z = small_tanh(seed=5)
    with torch.no_grad():  # e.g. computed inside an evaluation loop
        penalty = jacobian_penalty(lambda u: tanh_map(u, W, inj), z, exact=True)
    (grad,) = torch.autograd.grad(penalty, W)
    (expected,) = torch.autograd.grad(closed_form(W, inj, z).mean(), W)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_penalty_does_not_differentiate_through_z():
    W, inj, z = small_tanh(seed=6)
    z = z.requires_grad_()
    penalty = jacobian_penalty(lambda u: tanh_map(u, W, inj), z, exact=True)
    grad_z, grad_W = torch.autograd.grad(penalty, (z, W), allow_unused=True)
    assert grad_z is None and grad_W is not None


def test_penalty_works_on_images_and_float32():
    g = torch.Generator().manual_seed(0)
    layer = deqlib.ConvDEQ((4, 4), 3, channels=2, pool=2, generator=g)
    x = torch.rand(2, 16, generator=g)
    f = layer.map(x)
    z = torch.randn(2, 2, 4, 4, generator=g)
    got = jacobian_penalty(f, z, exact=True, reduction="none")
    torch.testing.assert_close(got, exact_frobenius(f, z), rtol=1e-5, atol=1e-6)
    assert got.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"samples": 0}, ValueError, r"samples must be an integer >= 1 \(random probes"),
        ({"samples": 1.5}, TypeError, "samples must be an integer"),
        ({"exact": 1}, TypeError, "exact must be True or False"),
        ({"reduction": ["mean"]}, TypeError, "reduction must be one of"),
        ({"reduction": "max"}, ValueError, "reduction must be one of"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_penalty_rejects_bad_options(kwargs, error, match):
    W, inj, z = small_tanh()
    with pytest.raises(error, match=match):
        jacobian_penalty(lambda u: tanh_map(u, W, inj), z, **kwargs)


def test_penalty_rejects_bad_maps_and_points():
    W, inj, z = small_tanh()
    f = lambda u: tanh_map(u, W, inj)  # noqa: E731
    with pytest.raises(TypeError, match="f must be callable"):
        jacobian_penalty("f", z)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        jacobian_penalty(f, z.tolist())
    with pytest.raises(TypeError, match="float32 or float64"):
        jacobian_penalty(f, z.long())
    with pytest.raises(ValueError, match="batch dimension"):
        jacobian_penalty(f, z[0])
    with pytest.raises(ValueError, match="same shape"):
        jacobian_penalty(lambda u: u.sum(dim=1), z)


# ----------------------------------------------------------------------------- monotone


@pytest.mark.parametrize("m", [0.01, 0.1, 1.0, 3.0])
@pytest.mark.parametrize("init_scale", [0.5, 3.0])
def test_symmetric_part_of_I_minus_W_is_at_least_m(m, init_scale):
    for seed in range(5):
        layer = MonotoneLinear(
            12, m=m, init_scale=init_scale, dtype=torch.float64,
            generator=torch.Generator().manual_seed(seed),
        )
        W = layer.weight()
        M = torch.eye(12, dtype=torch.float64) - W
        smallest = torch.linalg.eigvalsh((M + M.T) / 2).min().item()
        assert smallest >= m * (1 - 1e-10), f"seed {seed}: λ_min = {smallest} < m = {m}"
        assert math.isclose(layer.monotonicity(), smallest, rel_tol=1e-12)


def test_the_bound_survives_any_parameter_values():
    layer = MonotoneLinear(8, m=0.2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as an optimizer step could leave them: large and arbitrary
        layer.A.copy_(10 * torch.randn(8, 8, generator=g, dtype=torch.float64))
        layer.B.copy_(10 * torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert layer.monotonicity() >= 0.2 * (1 - 1e-9)


def test_weight_is_differentiable_and_forward_applies_it():
    layer = MonotoneLinear(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(layer(z), z @ layer.weight().T)
    layer(z).sum().backward()
    assert layer.A.grad is not None and layer.B.grad is not None
    assert layer.A.grad.abs().sum() > 0 and layer.B.grad.abs().sum() > 0


def monotone_problem(seed=0, width=16, batch=5, init_scale=1.0):
    layer = MonotoneLinear(
        width, m=0.1, init_scale=init_scale, dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed),
    )
    v = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 100),
                    dtype=torch.float64)
    return layer, v


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_splitting_reaches_one_fixed_point_from_any_start(method):
    layer, v = monotone_problem(init_scale=1.0)
    W = layer.weight().detach()
    assert torch.linalg.matrix_norm(W, ord=2) > 1, "the plain map should not be a contraction"
    F = layer.splitting_map(v)
    g = torch.Generator().manual_seed(0)
    solutions = []
    for _ in range(5):
        z0 = 10 * torch.randn(v.shape, generator=g, dtype=torch.float64)
        result = deqlib.solve(F, z0, method=method, tol=1e-12, max_iter=20000, stop="abs",
                              strict=True)
        solutions.append(result.z)
    for z in solutions[1:]:
        gap = (z - solutions[0]).abs().max().item()
        assert gap < 1e-9, f"two starts reached different points: largest gap {gap:.2e}"
    z = solutions[0]
    residual = (torch.relu(z @ W.T + v) - z).abs().max().item()
    assert residual < 1e-9, f"z = ReLU(Wz + v) fails by {residual:.2e}"


def test_splitting_map_is_a_contraction_at_the_default_step():
    layer, v = monotone_problem(seed=3, init_scale=2.0, batch=200)
    F = layer.splitting_map(v)
    M = torch.eye(16, dtype=torch.float64) - layer.weight().detach()
    L = torch.linalg.matrix_norm(M, ord=2).item()
    factor = math.sqrt(1 - (layer.m / L) ** 2)
    g = torch.Generator().manual_seed(0)
    a = 5 * torch.randn(200, 16, generator=g, dtype=torch.float64)
    b = 5 * torch.randn(200, 16, generator=g, dtype=torch.float64)
    ratio = ((F(a) - F(b)).norm(dim=1) / (a - b).norm(dim=1)).max().item()
    assert ratio <= factor * (1 + 1e-12), f"contraction factor {ratio} > bound {factor}"
    assert math.isclose(layer.step_size(), layer.m / L**2, rel_tol=1e-10)


def test_splitting_step_keeps_the_fixed_points_of_the_relu_equation():
    layer, v = monotone_problem(seed=4)
    z = deqlib.picard(layer.splitting_map(v), torch.zeros_like(v), tol=1e-13, max_iter=20000,
                      stop="abs", strict=True).z
    for alpha in (0.01, 0.05, 1.0, 7.0):  # any α > 0: the same fixed point
        gap = (layer.splitting_map(v, alpha)(z) - z).abs().max().item()
        assert gap < 1e-9 * max(1.0, alpha), f"alpha={alpha}: moved by {gap:.2e}"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width must be an integer >= 1"),
        ({"width": 4, "m": 0}, "m must be a positive finite number .*margin"),
        ({"width": 4, "m": -1.0}, "m must be a positive finite number .*margin"),
        ({"width": 4, "m": float("nan")}, "m must be a positive finite number .*margin"),
        ({"width": 4, "init_scale": -1.0}, r"init_scale must lie in \[0, inf\)"),
    ],
)
def test_monotone_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MonotoneLinear(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 4.0}, r"width must be an integer.*write 4"),
    ({"width": 4, "m": True}, "m must be a positive finite number .*of type bool"),
    ({"width": 4, "m": "0.1"}, "m must be a positive finite number .*of type str"),
    ({"width": 4, "init_scale": "0.5"}, "init_scale must be a real number"),
])
def test_monotone_refuses_wrong_types_with_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        MonotoneLinear(**kwargs)


def test_monotone_rejects_bad_dtypes_shapes_and_steps():
    with pytest.raises(TypeError, match="float32 or float64"):
        MonotoneLinear(4, dtype=torch.float16)
    layer = MonotoneLinear(4)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        layer(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"injection v must have shape \(batch, 4\)"):
        layer.splitting_map(torch.zeros(4))
    for alpha in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="alpha must be a positive finite number"):
            layer.splitting_map(torch.zeros(2, 4), alpha)


def test_exported_from_the_package():
    assert deqlib.MonotoneLinear is MonotoneLinear
    assert deqlib.jacobian_penalty is jacobian_penalty
    assert "stability" in deqlib.__all__


def test_a_splitting_step_that_is_not_a_number_is_a_type_error():
    layer = MonotoneLinear(4)
    for alpha in ("0.1", True, torch.tensor(0.1)):
        with pytest.raises(TypeError, match="alpha must be a positive finite number"):
            layer.splitting_map(torch.zeros(2, 4), alpha)
