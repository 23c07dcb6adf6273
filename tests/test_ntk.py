"""deqlib.ntk: the Gram matrix and the NTKs against autograd Jacobians, in float64."""

import math

import pytest
import torch
from torch.func import functional_call

from deqlib import ntk
from deqlib.solvers import ConvergenceError, Picard

pytestmark = pytest.mark.usefixtures("one_thread")

D, WIDTH, N = 5, 12, 6


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    model = ntk.WideTanhDEQ(D, WIDTH, generator=g, dtype=torch.float64)
    return model, X


def unrolled_output(model, params, X, steps=300):
    """f(X) by `steps` plain Picard iterations kept in the graph: a reference that does not
    use the DEQ's implicit backward."""
    W = model.sigma_w / math.sqrt(model.width) * params["W_hat"]
    U = model.sigma_u / math.sqrt(model.in_features) * params["U_hat"]
    z = torch.zeros(X.shape[0], model.width, dtype=X.dtype)
    for _ in range(steps):
        z = torch.tanh(z @ W.T + X @ U.T)
    return z @ params["a"] / math.sqrt(model.width)


def jacobian_ntk(fn, params):
    """Θ = J Jᵀ with J from torch.autograd.functional.jacobian over all parameter tensors."""
    names = list(params)
    jac = torch.autograd.functional.jacobian(
        lambda *ts: fn(dict(zip(names, ts))), tuple(params[k] for k in names)
    )
    J = torch.cat([j.reshape(j.shape[0], -1) for j in jac], dim=1)
    return J @ J.T


def assert_close(actual, expected, tol, what):
    rel = ((actual - expected).norm() / expected.norm()).item()
    assert rel <= tol, f"{what}: relative difference {rel:.3e} > {tol:g}"


def test_empirical_ntk_matches_jacobian_of_an_mlp():
    g = torch.Generator().manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(D, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    mlp = mlp.double()
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    params = {k: v.detach() for k, v in mlp.named_parameters()}
    expected = jacobian_ntk(lambda p: functional_call(mlp, p, (X,)).reshape(-1), params)
    assert_close(ntk.empirical_ntk(mlp, X), expected, 1e-12, "empirical NTK vs jacobian")


def test_empirical_and_implicit_ntk_of_the_deq_match_the_unrolled_jacobian(data):
    model, X = data
    params = {k: v.detach() for k, v in model.named_parameters()}
    expected = jacobian_ntk(lambda p: unrolled_output(model, p, X), params)
    assert_close(ntk.empirical_ntk(model, X), expected, 1e-10, "empirical NTK (implicit)")
    assert_close(ntk.implicit_ntk(model, X), expected, 1e-10, "closed-form implicit NTK")


def test_equilibrium_gram_is_the_gram_of_fixed_points(data):
    model, X = data
    Z = model.features(X).detach()
    W, U = (w.detach() for w in model.weights())
    residual = (Z - torch.tanh(Z @ W.T + X @ U.T)).abs().max().item()
    assert residual <= 1e-11, f"equilibrium residual {residual:.2e}"
    H = ntk.equilibrium_gram(model.features, X)
    assert_close(H, Z @ Z.T / WIDTH, 1e-14, "Gram vs ZZᵀ/m")
    assert torch.linalg.eigvalsh(H)[0] >= -1e-12, "the Gram matrix is not PSD"


def test_gram_is_the_output_weight_part_of_the_ntk(data):
    model, X = data
    H = ntk.equilibrium_gram(model.features, X)
    part = ntk.empirical_ntk(model, X, params=[model.a])
    assert_close(part, H, 1e-12, "NTK over a alone vs the equilibrium Gram")


def test_gaussian_expectation_matches_a_one_dimensional_integral():
    S = torch.tensor([[1.7, 1.7], [1.7, 1.7]], dtype=torch.float64)     # u = v ~ N(0, 1.7)
    quad = ntk._gaussian_expectation(torch.tanh, S, 96)[0, 1].item()
    t = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    density = torch.exp(-(t**2) / (2 * 1.7)) / math.sqrt(2 * math.pi * 1.7)
    riemann = (torch.tanh(t) ** 2 * density).sum().item() * (t[1] - t[0]).item()
    assert abs(quad - riemann) <= 1e-7, f"quadrature {quad} vs integral {riemann}"


def test_infinite_width_kernels_solve_their_fixed_point():
    X = torch.randn(4, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    k = ntk.infinite_width_ntk(X, sigma_w=0.4)
    again = 0.16 * ntk._gaussian_expectation(torch.tanh, k.nngp, 96) + X @ X.T / D
    assert_close(again, k.nngp, 1e-11, "Σ* is a fixed point")
    assert torch.linalg.eigvalsh(k.ntk)[0] > 0, "the limit NTK should be positive definite"


def test_wide_deq_ntk_approaches_the_infinite_width_limit():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(4, D, generator=g, dtype=torch.float64)
    limit = ntk.infinite_width_ntk(X).ntk
    errors = []
    for m in (25, 1600):
        model = ntk.WideTanhDEQ(D, m, generator=g, dtype=torch.float64)
        K = ntk.implicit_ntk(model, X)
        errors.append(((K - limit).norm() / limit.norm()).item())
    assert errors[1] < 0.1 and errors[1] < errors[0] / 2, f"errors at m = 25, 1600: {errors}"


def test_bad_inputs_raise_clear_errors(data):
    model, X = data
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        ntk.equilibrium_gram(model.features, X[0])
    with pytest.raises(ValueError, match="5 columns"):
        ntk.implicit_ntk(model, X[:, :3])
    with pytest.raises(TypeError, match="floating point"):
        ntk.infinite_width_ntk(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="one output per input"):
        ntk.empirical_ntk(lambda x: x, X, params=[model.a])
    with pytest.raises(TypeError, match="pass params"):
        ntk.empirical_ntk(lambda x: x.sum(1), X)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ntk.infinite_width_ntk(X, sigma_w=1.0)
    with pytest.raises(TypeError, match="sigma_w must be a real number"):
        ntk.infinite_width_ntk(X, sigma_w="0.4")
    with pytest.raises(TypeError, match="nodes must be an integer"):
        ntk.infinite_width_ntk(X, nodes=96.0)
    with pytest.raises(ValueError, match="tol must be a positive finite number"):
        ntk.infinite_width_ntk(X, tol=-1.0)
    with pytest.raises(TypeError, match="width must be an integer.*write 4"):
        ntk.WideTanhDEQ(3, 4.0)
    with pytest.raises(ValueError, match="nonzero norm"):
        ntk.infinite_width_ntk(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        ntk.WideTanhDEQ(3, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        ntk.WideTanhDEQ(3, 4, dtype=torch.float16)
    with pytest.raises(TypeError, match="WideTanhDEQ"):
        ntk.implicit_ntk(torch.nn.Linear(D, 1), X)
    # the solve's keywords moved into the solver object, as for the other layers
    with pytest.raises(TypeError, match=r"WideTanhDEQ: tol=, max_iter= moved into the solver "
                                        r"object: solver=Picard\(tol=1e-10, max_iter=50\)"):
        ntk.WideTanhDEQ(3, 4, tol=1e-10, max_iter=50)
    with pytest.raises(ValueError, match=r"\(n, m\)"):
        ntk.equilibrium_gram(lambda x: x.sum(1), X)


def test_a_non_contracting_deq_raises_instead_of_returning_a_wrong_kernel():
    X = torch.randn(3, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    model = ntk.WideTanhDEQ(D, 8, sigma_w=5.0, dtype=torch.float64,
                            solver=Picard(tol=1e-12, max_iter=50, strict=True),
                            generator=torch.Generator().manual_seed(4))
    with pytest.raises(ConvergenceError):
        ntk.implicit_ntk(model, X)
