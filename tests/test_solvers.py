"""deqlib.solvers: the stopping rule's verdicts, bad input, warnings at the caller, options."""

import dataclasses
import math
import os
import warnings

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import deqlib
from deqlib.solvers import (
    Anderson,
    Broyden,
    ConvergenceError,
    ConvergenceWarning,
    Picard,
    solve,
    warn_at_caller,
)

METHODS = ["anderson", "broyden", "picard"]


def affine_contraction(seed: int, *, batch=3, dim=6, q=0.8, dtype=torch.float64):
    """f(z) = z Mᵀ + c with ‖M‖₂ = q < 1 (per sample c); fixed point z* = c (I − M)⁻ᵀ."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(dim, dim, generator=g, dtype=dtype)
    M = q * M / torch.linalg.matrix_norm(M, ord=2)
    c = torch.randn(batch, dim, generator=g, dtype=dtype)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=dtype) - M, c.T).T
    return (lambda z: z @ M.T + c), z_star


def tanh_problem(rho=0.99, dtype=torch.float64, *, batch=64, width=256):
    p = deqlib.reference_tanh_problem(rho, dtype=dtype, batch=batch, width=width)
    injection = p.x @ p.W_x.T
    return (lambda z: deqlib.functional.tanh_map(z, p.W_z, injection)), p.z0()


def rule(f, z, z0, tol):
    """The module docstring's relative ρ per sample, written out independently."""
    n = lambda t: t.reshape(len(t), -1).norm(dim=1)  # noqa: E731
    s0 = torch.maximum(n(z0), n(f(z0)))
    r0 = torch.maximum(n(f(z0) - z0), tol * s0)
    r = n(f(z) - z)
    scale = torch.minimum(torch.maximum(n(f(z)), s0), s0 * r0 / r)
    return r / scale


def quiet(**options):
    """solve() with ConvergenceWarning recorded rather than printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve(**options)
    return result, [w for w in caught if issubclass(w.category, ConvergenceWarning)]


# ----------------------------------------------------------------------------- converging


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(8))
def test_solver_finds_fixed_point_of_random_contraction(method, seed):
    q = 0.5 + 0.06 * seed
    f, z_star = affine_contraction(seed, q=q)
    tol = 1e-10
    res = solve(f, torch.zeros_like(z_star), method=method, tol=tol, max_iter=500, stop="abs")
    assert res.converged and not res.diverged
    # ‖z − z*‖ ≤ ‖f(z) − z‖ / (1 − q) for a q-contraction
    err = (res.z - z_star).norm(dim=1).max().item()
    assert err <= tol / (1 - q), f"{method}: error {err:.3e} > bound {tol / (1 - q):.3e}"


@pytest.mark.parametrize("method", METHODS)
def test_converged_means_the_returned_iterate_satisfies_the_rule(method):
    f, z0 = tanh_problem(0.9, batch=16, width=64)
    res = solve(f, z0, method=method, tol=1e-8, max_iter=1000)
    assert res.converged
    rho = rule(f, res.z, z0, 1e-8)
    assert_close(res.final_residual, rho, rtol=1e-6, atol=0)
    assert rho.max() <= 1e-8, f"{method}: ρ of the returned z is {rho.max():.3e} > 1e-8"
    assert res.residuals[-1] == pytest.approx(rho.max().item(), rel=1e-6)


def test_on_the_reference_problem_the_rule_ends_as_the_plain_relative_residual():
    """Once the residual has shrunk, s = ‖f(z)‖: the verdict is torchdeq's 'rel' verdict.

    Early on the residual of this non-normal map first grows (‖W_z‖₂ ≈ 1.9ρ), and while it
    is above its first value the cap makes ρ larger than the plain relative residual.
    """
    f, z0 = tanh_problem(0.99)
    res = solve(f, z0, method="picard", tol=1e-6, max_iter=1000)
    z, plain = z0, []
    for _ in range(res.steps):
        fz = f(z)
        plain.append(((fz - z).norm(dim=1) / fz.norm(dim=1)).max().item())
        z = fz
    ours, plain = torch.tensor(res.residuals[1:]), torch.tensor(plain[1:])
    assert torch.all(ours >= plain * (1 - 1e-12)), "ρ is never below the plain residual"
    assert_close(ours[-300:], plain[-300:], rtol=1e-9, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_nonlinear_contraction_converges_in_every_sample(method):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(16, 16, generator=g, dtype=torch.float64)
    W = 0.9 * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(8, 16, generator=g, dtype=torch.float64)
    f = lambda z: deqlib.functional.tanh_map(z, W, x)  # noqa: E731
    res = solve(f, torch.zeros_like(x), method=method, tol=1e-12, max_iter=500)
    assert res.converged and res.final_residual.shape == (8,)
    assert_close(f(res.z), res.z, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_result_records_trace_steps_and_residual_kind(method):
    f, z_star = affine_contraction(0)
    res = solve(f, torch.zeros_like(z_star), method=method, tol=1e-8, max_iter=200)
    assert res.steps == len(res.residuals)
    assert res.residuals[-1] <= 1e-8 < res.residuals[0]
    assert (res.stop, res.method, res.tol, res.diverged) == ("rel", method, 1e-8, False)
    assert "converged=True" in repr(res)


@pytest.mark.parametrize("mix_every", [1, 2, 5])
def test_anderson_mixes_per_sample(mix_every):
    """A batch is solved as independent systems: each sample gets its own solution."""
    f_batch, z_star = affine_contraction(3, batch=4, q=0.95)
    options = dict(method="anderson", tol=1e-12, max_iter=300, stop="abs", memory=6,
                   mix_every=mix_every)
    res = solve(f_batch, torch.zeros_like(z_star), **options)
    for i in range(4):
        single = solve(lambda z, i=i: f_batch(z.expand(4, -1))[i:i + 1],
                       torch.zeros_like(z_star[i:i + 1]), **options)
        assert_close(res.z[i], single.z[0], rtol=0, atol=1e-10)
        assert_close(res.z[i], z_star[i], rtol=0, atol=1e-10)


def test_reference_problem_anderson_and_broyden_save_picards_steps():
    """The pinned tanh DEQ at ρ = 0.99, float64, relative tolerance 1e-6.

    Broyden's default memory (10, the fastest) restarts often; with memory 30 it needs half.
    """
    f, z0 = tanh_problem(0.99)
    steps = {m: solve(f, z0, method=m, tol=1e-6, max_iter=2000).steps for m in METHODS}
    steps["broyden 30"] = solve(f, z0, method="broyden", memory=30, tol=1e-6, max_iter=2000).steps
    assert steps["anderson"] <= steps["picard"] / 2, steps
    assert steps["broyden"] <= steps["picard"] * 0.6, steps
    assert steps["broyden 30"] <= steps["picard"] / 2, steps
    assert 300 <= steps["picard"] <= 350, steps   # measured 326


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(5,), (4, 3, 2)], ids=["scalar-per-sample", "3d"])
def test_any_trailing_shape_is_solved_per_sample(method, shape):
    c = torch.linspace(-1, 1, math.prod(shape), dtype=torch.float64).reshape(shape)
    f = lambda z: 0.5 * torch.cos(z) + c  # noqa: E731
    res = solve(f, torch.zeros(shape, dtype=torch.float64), method=method, tol=1e-12,
                max_iter=200)
    assert res.converged and res.z.shape == shape
    assert_close(res.z, f(res.z), rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
def test_check_every_reads_the_rule_less_often_and_still_verifies_it(method):
    f, z0 = tanh_problem(0.9, batch=16, width=64)
    every = solve(f, z0, method=method, tol=1e-8, max_iter=500)
    sparse = solve(f, z0, method=method, tol=1e-8, max_iter=500, check_every=10)
    assert sparse.converged and sparse.steps % 10 == 0
    assert every.steps <= sparse.steps < every.steps + 10
    assert len(sparse.residuals) == sparse.steps
    assert rule(f, sparse.z, z0, 1e-8).max() <= 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_unrolled_backprop_through_the_solver_gives_the_implicit_gradient(method):
    """With grad enabled the solver keeps every step's graph (histories out of place)."""
    g = torch.Generator().manual_seed(2)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    M = 0.5 * M / torch.linalg.matrix_norm(M, ord=2)
    c = torch.randn(3, 6, generator=g, dtype=torch.float64)
    theta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    res = solve(lambda z: theta * (z @ M.T + c), torch.zeros_like(c), method=method,
                tol=1e-13, max_iter=300)
    (grad,) = torch.autograd.grad(res.z.sum(), theta)

    def exact(t):   # z*(θ) = θ c (I − θM)⁻ᵀ
        return torch.linalg.solve(torch.eye(6, dtype=torch.float64) - t * M, t * c.T).sum()
    h = 1e-6
    fd = (exact(1.3 + h) - exact(1.3 - h)) / (2 * h)
    assert_close(grad, fd, rtol=1e-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method, options", [
    ("picard", {}),
    ("anderson", {}),                              # mixing blocks of consecutive slots
    ("anderson", {"memory": 7, "mix_every": 3}),   # a block that wraps around the history
    ("anderson", {"memory": 5, "beta": 0.5}),
    ("broyden", {}),
    ("broyden", {"memory": 3}),                    # several restarts
])
def test_the_in_place_steps_are_the_graph_keeping_steps_bit_for_bit(method, options, dtype,
                                                                   monkeypatch):
    """Without a graph the solvers run their in-place iteration (``_fast``: views made once,
    fused operations); with one, the plain out-of-place iteration of
    deqlib.solvers.reference. Both must be the same iterates exactly: the fast path is an
    implementation of the reference, not a different iteration. (The calls are recorded, so
    that the test fails if both runs took the same path.)"""
    cls = {"picard": Picard, "anderson": Anderson, "broyden": Broyden}[method]
    calls = []
    def recorder(name):
        original = getattr(cls, name)

        def record(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)
        return record
    for name in ("_fast", "_reference"):
        monkeypatch.setattr(cls, name, recorder(name))
    p = deqlib.reference_tanh_problem(0.9, dtype=dtype, batch=8, width=32)
    injection = p.x @ p.W_x.T
    with torch.no_grad():
        fast = solve(lambda z: deqlib.functional.tanh_map(z, p.W_z, injection), p.z0(),
                     method=method, tol=1e-5, max_iter=300, **options)
    assert calls == ["_fast"]
    calls.clear()
    W = p.W_z.clone().requires_grad_()
    kept = solve(lambda z: deqlib.functional.tanh_map(z, W, injection), p.z0(),
                 method=method, tol=1e-5, max_iter=300, **options)
    assert calls[0] == "_reference"   # (Picard's reference is its loop, with graph=True)
    assert kept.z.requires_grad and fast.converged
    assert (fast.steps, fast.residuals) == (kept.steps, kept.residuals)
    assert torch.equal(fast.z, kept.z.detach()), (fast.z - kept.z).abs().max()


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("method", METHODS)
def test_z_plus_one_is_never_converged_although_its_relative_residual_falls(method):
    """z ↦ z + 1 has no fixed point; ‖f(z) − z‖/‖f(z)‖ = 1/(k+1) falls below 1e-2."""
    res, caught = quiet(f=lambda z: z + 1, z0=torch.zeros(2, 3), method=method, tol=1e-2,
                        max_iter=300)
    assert not res.converged and not res.diverged and res.steps == 300
    assert min(res.residuals) == pytest.approx(1.0, rel=1e-4)   # ρ stays 1: r never shrinks
    assert len(caught) == 1 and "did not shrink" in str(caught[0].message)
    with pytest.raises(ConvergenceError, match="did not converge"):
        solve(lambda z: z + 1, torch.zeros(2, 3), method=method, tol=1e-2, max_iter=300,
              strict=True)


def test_expanding_map_is_flagged_diverging_not_converged():
    """z ↦ 2z + 1 from 0: Picard runs away (once reported converged with residual 0)."""
    res, caught = quiet(f=lambda z: 2 * z + 1, z0=torch.zeros(2, 3), method="picard")
    assert res.diverged and not res.converged and res.steps < 30
    assert res.residuals[-1] > 1e8 and math.isfinite(res.residuals[-1])
    assert len(caught) == 1 and "diverging" in str(caught[0].message)
    with pytest.raises(ConvergenceError, match="diverging"):
        solve(lambda z: 2 * z + 1, torch.zeros(2, 3), method="picard", strict=True)
    res, _ = quiet(f=lambda z: 2 * z + 1, z0=torch.zeros(2, 3), method="picard", stop="abs")
    assert res.diverged and not res.converged


@pytest.mark.parametrize("method", ["anderson", "broyden"])
def test_root_finders_find_the_repelling_fixed_point_of_an_expanding_map(method):
    res = solve(lambda z: 2 * z + 1, torch.zeros(2, 3, dtype=torch.float64), method=method,
                strict=True)
    assert_close(res.z, torch.full((2, 3), -1.0, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_contraction_to_the_origin_converges(method):
    """z ↦ z/2: ‖f(z) − z‖/‖f(z)‖ = 1 at every step, yet z → 0: the floor s₀ accepts it."""
    res = solve(lambda z: 0.5 * z, torch.ones(2, 3, dtype=torch.float64), method=method,
                strict=True)
    assert res.converged and res.z.abs().max() <= 2e-6
    res = solve(lambda z: 0.5 * z, torch.zeros(2, 3), method=method, strict=True)
    assert res.converged and res.steps == 1 and torch.all(res.z == 0)


@pytest.mark.parametrize("method", METHODS)
def test_a_sample_already_at_its_fixed_point_does_not_disturb_the_others(method):
    """Sample 0 starts exactly at its fixed point (residual 0: a singular Gram matrix)."""
    c = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], dtype=torch.float64)
    f = lambda z: 0.5 * torch.tanh(z) + c  # noqa: E731
    res = solve(f, torch.zeros(2, 3, dtype=torch.float64), method=method, tol=1e-12,
                max_iter=200, strict=True)
    assert torch.all(res.z[0] == 0)
    assert_close(res.z, f(res.z), rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
def test_too_few_iterations_is_flagged_and_warned(method):
    f, z_star = affine_contraction(5, q=0.95)
    res, caught = quiet(f=f, z0=torch.zeros_like(z_star), method=method, tol=1e-12,
                        max_iter=3)
    assert not res.converged and res.steps == 3
    assert len(caught) == 1 and "raise max_iter" in str(caught[0].message)


def test_large_finite_values_are_not_reported_as_nan():
    """Values of 1e30 are finite: float32 norms of them overflow, and the error says so."""
    z0 = torch.full((2, 3), 1e30)
    with pytest.raises(FloatingPointError, match="finite, but the norm") as error:
        solve(lambda z: 0.5 * z, z0)
    assert "NaN" not in str(error.value)
    res = solve(lambda z: 0.5 * z, z0.double(), strict=True)   # float64 has the range
    assert res.converged and res.z.abs().max() <= 1e30 * 2e-6


@pytest.mark.parametrize("method", METHODS)
def test_nan_from_the_map_raises_instead_of_returning_nan(method):
    with pytest.raises(FloatingPointError, match="f returned NaN or Inf at step 1"):
        solve(lambda z: z * float("nan"), torch.ones(2, 3), method=method)
    calls = []

    def late_nan(z):
        calls.append(1)
        return 0.5 * torch.cos(z) + (float("nan") if len(calls) == 3 else 1.0)
    with pytest.raises(FloatingPointError, match="f returned NaN or Inf at step 3"):
        solve(late_nan, torch.ones(2, 3), method=method)


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch_is_trivially_converged(method):
    res = solve(lambda z: 0.5 * z, torch.zeros(0, 4), method=method)
    assert res.converged and res.steps == 0 and res.z.shape == (0, 4)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_start_is_refused_with_what_to_do(method, dtype):
    with pytest.raises(TypeError, match=r"float32 or float64.*z0\.float\(\)"):
        solve(lambda z: 0.5 * z, torch.ones(2, 3, dtype=dtype), method=method)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_integer_and_complex_start_is_refused_with_what_to_do(dtype):
    with pytest.raises(TypeError, match=r"z0\.float\(\).*z0\.double\(\)"):
        solve(lambda z: z, torch.ones(2, 3, dtype=dtype))


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_map_output_is_cast_to_the_iterate_dtype(method):
    """As under torch.autocast: f computes in float16, the solver iterates in float32."""
    f, z_star = affine_contraction(1, dtype=torch.float32)
    res = solve(lambda z: f(z).half(), torch.zeros_like(z_star), method=method, tol=1e-3)
    assert res.converged and res.z.dtype == torch.float32
    assert_close(res.z, z_star, rtol=0, atol=2e-2)


def test_map_returning_integers_or_a_wrong_shape_is_refused():
    with pytest.raises(TypeError, match="floating-point tensor"):
        solve(lambda z: torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"shape \(2, 3\); got \(2,\) at step 1"):
        solve(lambda z: z.sum(dim=1), torch.ones(2, 3))


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("method", METHODS)
def test_numpy_scalars_are_accepted_as_options(method):
    f, z_star = affine_contraction(0)
    extra = {"anderson": dict(memory=np.int64(4), mix_every=np.int32(2),
                              beta=np.float64(0.9), lam=np.float32(1e-6)),
             "broyden": dict(memory=np.int64(8)), "picard": {}}[method]
    res = solve(f, torch.zeros_like(z_star), method=method, tol=np.float32(1e-8),
                max_iter=np.int64(300), check_every=np.int16(1), **extra)
    assert res.converged and isinstance(res.tol, float)


@pytest.mark.parametrize("bad, error, message", [
    (dict(max_iters=10), TypeError, r"unknown option\(s\) \['max_iters'\].*'max_iter'"),
    (dict(method="picard", memory=5), TypeError, r"'picard' got unknown option.*memory"),
    (dict(method="broyden", beta=0.5), TypeError, r"'broyden' got unknown option.*beta"),
    (dict(method="broyden", mix_every=2), TypeError, r"unknown option.*mix_every"),
    (dict(method="newton"), ValueError, "unknown solver method='newton'"),
    (dict(tol=0), ValueError, "tol must be a positive finite number; got tol=0"),
    (dict(tol=float("nan")), ValueError, "tol must be a positive finite number"),
    (dict(tol=torch.tensor(1e-6)), TypeError, r"tol must be a positive.*\.item\(\)"),
    (dict(tol=True), TypeError, "tol must be a positive finite number"),
    (dict(max_iter=0), ValueError, "max_iter must be an integer >= 1; got max_iter=0"),
    (dict(max_iter=10.0), TypeError, "max_iter must be an integer"),
    (dict(stop="relative"), ValueError, "stop must be one of 'rel', 'abs'.*got stop='relative'"),
    (dict(strict="yes"), TypeError, "strict must be True or False"),
    (dict(check_every=0), ValueError, "check_every must be an integer >= 1"),
    (dict(memory=0), ValueError, "memory must be an integer >= 1; got memory=0"),
    (dict(memory=4, mix_every=5), ValueError, "mix_every must be at most memory=4"),
    (dict(beta=1.5), ValueError, r"beta must lie in \(0, 1\]; got beta=1.5"),
    (dict(lam=-1), ValueError, r"lam must lie in \[0, inf\); got lam=-1.0"),
    (dict(method="broyden", memory=-2), ValueError, "memory must be an integer >= 1"),
])
def test_bad_options_are_refused_naming_the_value(bad, error, message):
    options = dict(method="anderson") | bad
    with pytest.raises(error, match=message):
        solve(lambda z: 0.5 * z, torch.ones(2, 3), **options)


def test_bad_maps_and_starts_are_refused():
    with pytest.raises(ValueError, match="NaN or Inf"):
        solve(lambda z: z, torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="batch dimension"):
        solve(lambda z: z, torch.tensor(1.0))
    with pytest.raises(TypeError, match="callable"):
        solve(3, torch.ones(2, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        solve(lambda z: z, [[1.0, 2.0]])


def test_each_solver_lists_its_options_and_shares_the_common_ones():
    assert Picard.options() == {"tol", "max_iter", "stop", "strict", "check_every", "stall"}
    assert Anderson.options() - Picard.options() == {"memory", "mix_every", "beta", "lam"}
    assert Broyden.options() - Picard.options() == {"memory"}
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['memroy'\].*'memory'"):
        Anderson(memroy=3)
    with pytest.raises(TypeError, match="keyword options only"):
        Anderson(1e-4)


def test_solver_objects_are_immutable_checked_and_printed_short():
    solver = Anderson(tol=np.float32(1e-4), memory=np.int64(5))
    assert type(solver.tol) is float and type(solver.memory) is int
    assert repr(solver) == "Anderson(tol=0.0001, memory=5)" and repr(Picard()) == "Picard()"
    with pytest.raises(dataclasses.FrozenInstanceError):
        solver.tol = 1e-8
    assert dataclasses.replace(solver, tol=1e-8) == Anderson(tol=1e-8, memory=5)
    with pytest.raises(ValueError, match="mix_every must be at most memory=5"):
        dataclasses.replace(solver, mix_every=6)   # replace checks again
    same = Anderson(memory=5, tol=1e-4)
    assert same == Anderson(tol=1e-4, memory=5) and hash(same) == hash(Anderson(tol=1e-4,
                                                                             memory=5))


@pytest.mark.parametrize("method, cls", [("picard", Picard), ("anderson", Anderson),
                                         ("broyden", Broyden)])
def test_the_functions_are_shorthand_for_the_objects(method, cls):
    f, z_star = affine_contraction(4)
    z0 = torch.zeros_like(z_star)
    by_object = cls(tol=1e-9, max_iter=200)(f, z0)
    for result in (solve(f, z0, method=method, tol=1e-9, max_iter=200),
                   getattr(deqlib, method)(f, z0, tol=1e-9, max_iter=200)):
        assert result.steps == by_object.steps and torch.equal(result.z, by_object.z)


# ----------------------------------------------------------------------------- warnings


def test_convergence_warning_points_at_the_callers_line():
    with pytest.warns(ConvergenceWarning) as caught:
        solve(lambda z: z + 1, torch.zeros(2, 3), max_iter=2)   # the line warned about
    (w,) = caught
    assert (w.filename, w.lineno) == (__file__, _line_of("max_iter=2)   # the line warned"))


def test_warn_at_caller_skips_every_frame_inside_deqlib():
    """A helper compiled as if it lived in deqlib/ warns at this file's line, not its own."""
    inside = os.path.join(os.path.dirname(deqlib.__file__), "_pretend_module.py")
    namespace = {"warn_at_caller": warn_at_caller}
    exec(compile("def layer(message):\n    return deeper(message)\n"
                 "def deeper(message):\n    warn_at_caller(message, UserWarning)\n",
                 inside, "exec"), namespace)
    with pytest.warns(UserWarning, match="from inside") as caught:
        namespace["layer"]("from inside")   # the line warned about
    assert (caught[0].filename, caught[0].lineno) == (
        __file__, _line_of('namespace["layer"]("from inside")'))


def test_convergence_warning_of_a_deq_layer_points_at_the_callers_line():
    deq = deqlib.DEQ(lambda z, x: z + x, solver=deqlib.Anderson(max_iter=3))
    x = torch.ones(2, 3)
    with pytest.warns(ConvergenceWarning) as caught:
        deq(x)   # the DEQ call warned about
    assert (caught[0].filename, caught[0].lineno) == (__file__, _line_of("deq(x)   # the DEQ"))


def _line_of(text: str) -> int:
    with open(__file__) as source:
        for number, line in enumerate(source, 1):
            if text in line and "_line_of" not in line:
                return number
    raise AssertionError(f"{text!r} not in {__file__}")


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("check_every", [1, 10])
def test_solvers_run_on_cuda(method, check_every):
    f, z0 = tanh_problem(0.9, dtype=torch.float32)
    p = deqlib.reference_tanh_problem(0.9, dtype=torch.float32, device="cuda")
    injection = p.x @ p.W_x.T
    res = solve(lambda z: deqlib.functional.tanh_map(z, p.W_z, injection), p.z0(),
                method=method, tol=1e-4, max_iter=500, check_every=check_every)
    assert res.converged and res.z.is_cuda
    cpu = solve(f, z0, method=method, tol=1e-4, max_iter=500)
    assert_close(res.z.cpu(), cpu.z, rtol=0, atol=1e-3)
