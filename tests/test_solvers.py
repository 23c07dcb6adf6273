"""deqlib.solvers: convergence, statistics, non-convergence flagged, bad input rejected."""

import math

import pytest
import torch

import deqlib
from deqlib.solvers import ConvergenceError, ConvergenceWarning, SOLVERS, solve

METHODS = sorted(SOLVERS)


def affine_contraction(seed: int, *, batch=3, dim=6, q=0.8, dtype=torch.float64):
    """f(z) = z Mᵀ + c with ‖M‖₂ = q < 1 (per sample c); fixed point z* = c (I − M)⁻ᵀ."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(dim, dim, generator=g, dtype=dtype)
    M = q * M / torch.linalg.matrix_norm(M, ord=2)
    c = torch.randn(batch, dim, generator=g, dtype=dtype)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=dtype) - M, c.T).T
    return (lambda z: z @ M.T + c), z_star


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(12))
def test_solver_finds_fixed_point_of_random_contraction(method, seed):
    f, z_star = affine_contraction(seed, q=0.5 + 0.04 * seed)
    q = 0.5 + 0.04 * seed
    tol = 1e-10
    res = solve(f, torch.zeros_like(z_star), method=method, tol=tol, max_iter=500, stop="abs")
    assert res.converged
    # ‖z − z*‖ ≤ ‖f(z) − z‖ / (1 − q) for a q-contraction; z is f(z_last), closer still.
    err = (res.z - z_star).norm(dim=1).max().item()
    assert err <= tol / (1 - q), f"{method}: error {err:.3e} > bound {tol / (1 - q):.3e}"


@pytest.mark.parametrize("method", METHODS)
def test_nonlinear_contraction_converges_in_every_sample(method):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(16, 16, generator=g, dtype=torch.float64)
    W = 0.9 * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(8, 16, generator=g, dtype=torch.float64)
    f = lambda z: torch.tanh(z @ W.T + x)  # noqa: E731
    res = solve(f, torch.zeros_like(x), method=method, tol=1e-12, max_iter=500)
    assert res.converged
    assert (f(res.z) - res.z).norm(dim=1).max() < 1e-10
    assert res.final_residual.shape == (8,)
    assert res.final_residual.max() <= 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_result_records_trace_steps_and_residual_kind(method):
    f, z_star = affine_contraction(0)
    res = solve(f, torch.zeros_like(z_star), method=method, tol=1e-8, max_iter=200, stop="rel")
    assert res.steps == len(res.residuals)
    assert res.residuals[-1] <= 1e-8 < res.residuals[0]
    assert res.stop == "rel" and res.method == method and res.tol == 1e-8
    assert "converged=True" in repr(res)


def test_batch_samples_are_independent_systems():
    """Anderson mixes per sample: solving a batch gives each sample's own solution."""
    f_batch, z_star = affine_contraction(3, batch=4)
    res = solve(f_batch, torch.zeros_like(z_star), method="anderson", tol=1e-12, max_iter=300, stop="abs")
    for i in range(4):
        single = solve(lambda z: f_batch(z.expand(4, -1))[i:i + 1], torch.zeros_like(z_star[i:i + 1]),
                       method="anderson", tol=1e-12, max_iter=300, stop="abs")
        assert torch.allclose(res.z[i], single.z[0], atol=1e-9), (res.z[i], single.z[0])


def test_reference_problem_anderson_and_broyden_need_half_of_picards_steps():
    """The pinned tanh DEQ of DESIGN.md at ρ = 0.99, float64, relative tolerance 1e-6."""
    p = deqlib.reference_tanh_problem(0.99, dtype=torch.float64)
    steps = {m: solve(p.f, p.z0(), method=m, tol=1e-6, max_iter=2000).steps for m in METHODS}
    assert steps["anderson"] <= steps["picard"] / 2, steps
    assert steps["broyden"] <= steps["picard"] / 2, steps
    assert 250 <= steps["picard"] <= 400, steps  # measured 326 (DESIGN.md: 332 in another convention)


def test_reference_problem_is_pinned():
    p = deqlib.reference_tanh_problem(0.9)
    assert p.x.shape == (64, 256) and p.W_z.dtype == torch.float64
    assert math.isclose(torch.linalg.eigvals(p.W_z).abs().max().item(), 0.9, rel_tol=1e-10)
    assert torch.linalg.matrix_norm(p.W_z, ord=2) > 1  # not a 2-norm contraction, yet it converges
    assert torch.equal(p.W_x, deqlib.reference_tanh_problem(0.99).W_x)


@pytest.mark.parametrize("method", METHODS)
def test_map_without_fixed_point_is_flagged_and_warned(method):
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = solve(lambda z: z + 1, z0, method=method, max_iter=50)
    assert not res.converged
    assert res.steps == 50
    with pytest.raises(ConvergenceError, match="did not converge"):
        solve(lambda z: z + 1, z0, method=method, max_iter=50, strict=True)


@pytest.mark.parametrize("method", METHODS)
def test_too_few_iterations_is_flagged(method):
    f, z_star = affine_contraction(5, q=0.95)
    with pytest.warns(ConvergenceWarning):
        res = solve(f, torch.zeros_like(z_star), method=method, tol=1e-12, max_iter=3)
    assert not res.converged and res.steps == 3


@pytest.mark.parametrize("method", METHODS)
def test_nan_from_the_map_raises_instead_of_returning_nan(method):
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        solve(lambda z: z * float("nan"), torch.ones(2, 3), method=method)
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        solve(lambda z: torch.exp(torch.exp(z + 10)), torch.ones(2, 3), method=method)


def test_bad_input_is_rejected_with_a_clear_message():
    f = lambda z: 0.5 * z  # noqa: E731
    z0 = torch.ones(2, 3)
    with pytest.raises(TypeError, match="unknown option.*max_iters"):
        solve(f, z0, method="anderson", max_iters=10)
    with pytest.raises(TypeError, match="unknown option.*memory"):
        solve(f, z0, method="picard", memory=5)
    with pytest.raises(ValueError, match="unknown solver"):
        solve(f, z0, method="newton")
    with pytest.raises(ValueError, match="tol must be"):
        solve(f, z0, tol=0)
    with pytest.raises(ValueError, match="max_iter must be"):
        solve(f, z0, max_iter=0)
    with pytest.raises(ValueError, match="stop must be"):
        solve(f, z0, stop="relative")
    with pytest.raises(ValueError, match="memory must be"):
        solve(f, z0, method="anderson", memory=0)
    with pytest.raises(ValueError, match="beta must"):
        solve(f, z0, method="anderson", beta=1.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        solve(f, torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="batch dimension"):
        solve(f, torch.tensor(1.0))
    with pytest.raises(ValueError, match="shape"):
        solve(lambda z: z.sum(dim=1), z0)
    with pytest.raises(TypeError, match="callable"):
        solve(3, z0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(5,), (4, 3, 2)], ids=["scalar-per-sample", "3d"])
def test_any_trailing_shape_is_solved_per_sample(method, shape):
    c = torch.linspace(-1, 1, math.prod(shape), dtype=torch.float64).reshape(shape)
    res = solve(lambda z: 0.5 * torch.cos(z) + c, torch.zeros(shape, dtype=torch.float64), method=method,
                tol=1e-12, max_iter=200)
    assert res.converged and res.z.shape == shape
    assert torch.allclose(res.z, 0.5 * torch.cos(res.z) + c, atol=1e-11)


def test_fixed_point_at_origin_is_not_a_division_by_zero():
    res = solve(lambda z: 0.5 * z, torch.zeros(2, 3), method="anderson")
    assert res.converged and res.steps == 1 and torch.all(res.z == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_solvers_run_on_cuda(method):
    p = deqlib.reference_tanh_problem(0.9, dtype=torch.float32, device="cuda")
    res = solve(p.f, p.z0(), method=method, tol=1e-4, max_iter=500)
    assert res.converged and res.z.is_cuda
