"""deqlib.implicit: the DEQ layer's gradients, its statistics, its memory, and every bad option."""

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import deqlib
from deqlib import DEQ, Anderson, Broyden, Implicit, OneStep, Picard, SolverStats, Unrolled
from deqlib.functional import tanh_map
from deqlib.implicit import _vjp, fixed_point_vjp
from deqlib.memory import saved_tensor_bytes
from deqlib.solvers import ConvergenceWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def f_tanh(z, context):
    """The DEQ map z ↦ tanh(W z + injection), with context = (W, injection)."""
    return tanh_map(z, *context)


def problem(seed=0, batch=3, width=5, norm=0.8):
    """A float64 tanh map with ‖W‖₂ = norm (a contraction) and a random injection."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    W = (norm * W / torch.linalg.matrix_norm(W, ord=2)).requires_grad_()
    inj = torch.randn(batch, width, generator=g, dtype=torch.float64).requires_grad_()
    return W, inj


def weights_like(t, seed=100):
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=t.dtype)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("solver", [Picard, Anderson, Broyden])
def test_implicit_gradient_passes_gradcheck(solver):
    W, inj = problem(batch=2, width=4)
    deq = DEQ(f_tanh, solver=solver(tol=1e-13, max_iter=500))
    z0 = torch.zeros_like(inj)
    # fast mode compares vᵀ(∂z*/∂θ)u for random u, v with central differences: two solves per
    # input instead of two per entry (the full check is the picard case)
    assert torch.autograd.gradcheck(
        lambda W, inj: deq((W, inj), z0),
        (W, inj),
        atol=1e-7,
        rtol=1e-6,
        fast_mode=solver is not Picard,
    )


@pytest.mark.parametrize("solver", [Picard, Anderson, Broyden])
def test_implicit_gradient_matches_unrolled_through_the_same_solver(solver):
    W, inj = problem(seed=3, norm=0.9)
    z0 = torch.zeros_like(inj)
    weights = weights_like(inj)

    def grads(backward):
        deq = DEQ(f_tanh, solver=solver(tol=1e-13, max_iter=1000), backward=backward)
        z, info = deq((W, inj), z0, return_info=True)
        assert info.forward.method == solver.method  # unrolled runs this solver, not Picard
        return torch.autograd.grad((z * weights).sum(), (W, inj))

    implicit, unrolled = grads("implicit"), grads("unrolled")
    assert_close(implicit, unrolled, atol=1e-10, rtol=1e-9)


def test_implicit_gradient_is_the_closed_form_of_a_linear_map():
    """f(z) = Az + x: z* = (I − A)⁻¹x, so ∂ℓ/∂x = (I − A)⁻ᵀ g, exactly."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = 0.7 * A / torch.linalg.matrix_norm(A, ord=2)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    deq = DEQ(lambda z, x: z @ A.T + x, solver=Anderson(tol=1e-14, max_iter=300))
    weights = weights_like(x)
    (grad_x,) = torch.autograd.grad((deq(x) * weights).sum(), x)
    expected = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - A.T, weights.T).T
    assert_close(grad_x, expected, atol=1e-12, rtol=1e-11)


def test_fixed_point_vjp_is_the_theorem_as_a_function():
    """(∂f/∂θ)ᵀu with u = Jᵀu + g is the gradient through the DEQ; u solves its equation."""
    W, inj = problem(seed=2, norm=0.9)
    z0 = torch.zeros_like(inj)
    weights = weights_like(inj)
    deq = DEQ(f_tanh, solver=Picard(tol=1e-13, max_iter=500))
    expected = torch.autograd.grad((deq((W, inj), z0) * weights).sum(), (W, inj))
    with torch.no_grad():
        z_star = deq((W, inj), z0)
    z = z_star.requires_grad_()
    f_z = f_tanh(z, (W, inj))
    grads, result = fixed_point_vjp(
        f_z, z, weights, (W, inj), solver=Picard(tol=1e-13, max_iter=500)
    )
    assert_close(grads, expected, atol=1e-11, rtol=1e-10)
    (Jt_u,) = torch.autograd.grad(f_z, z, result.z)
    assert_close(result.z, Jt_u + weights, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_adjoint_maps_vjp_is_autograd_grad_bit_for_bit(dtype):
    """The adjoint solve's Jᵀu calls autograd's engine directly (its arguments checked once,
    not at every step); it must be exactly torch.autograd.grad's product, zeros where f does
    not depend on z, and the checked call where u could not be passed as it is."""
    W, inj = (t.detach().to(dtype) for t in problem(seed=3, batch=4, width=6))
    z = torch.rand(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0))
    z.requires_grad_()
    f_z = f_tanh(z, (W, inj))
    u = weights_like(z)
    (expected,) = torch.autograd.grad(f_z, z, u, retain_graph=True)
    assert torch.equal(_vjp(f_z, z, u)(u), expected)
    assert torch.equal(_vjp(f_z, z, u)(2 * u), 2 * expected)  # the graph is kept
    other = torch.zeros_like(z, requires_grad=True)  # f_z does not depend on it
    assert torch.equal(_vjp(f_z, other, u)(u), torch.zeros_like(z))
    u64 = u.double()  # for float32, a u of another dtype: torch.autograd.grad's own handling
    (expected,) = torch.autograd.grad(f_z, z, u64, retain_graph=True)
    assert torch.equal(_vjp(f_z, z, u64)(u64), expected)


def test_the_adjoint_maps_vjp_falls_back_if_the_engine_signature_changes(monkeypatch):
    """The engine call is a private torch function: if a torch changes its signature (a
    TypeError), the public torch.autograd.grad gives the same product."""
    import deqlib.implicit

    def changed(*args, **kwargs):
        raise TypeError("an unexpected signature")

    W, inj = (t.detach() for t in problem(seed=3, batch=4, width=6))
    z = torch.rand(4, 6, dtype=W.dtype, generator=torch.Generator().manual_seed(0))
    z.requires_grad_()
    f_z = f_tanh(z, (W, inj))
    u = weights_like(z)
    (expected,) = torch.autograd.grad(f_z, z, u, retain_graph=True)
    monkeypatch.setattr(deqlib.implicit, "_engine_run_backward", changed)
    assert torch.equal(_vjp(f_z, z, u)(u), expected)


def test_one_step_gradient_is_that_of_one_application_at_the_equilibrium():
    W, inj = problem(1, norm=0.9)
    z0 = torch.zeros_like(inj)
    z, info = DEQ(f_tanh, backward="one_step", solver=Anderson(tol=1e-13, max_iter=500))(
        (W, inj), z0, return_info=True
    )
    g_one = torch.autograd.grad(z.sum(), W)[0]
    g_ref = torch.autograd.grad(f_tanh(info.forward.z.detach(), (W, inj)).sum(), W)[0]
    assert_close(g_one, g_ref, atol=1e-14, rtol=0)
    exact = torch.autograd.grad(
        DEQ(f_tanh, solver=Anderson(tol=1e-13, max_iter=500))((W, inj), z0).sum(), W
    )[0]
    gap = ((g_one - exact).norm() / exact.norm()).item()
    assert gap > 1e-2, f"one-step should visibly differ from the exact gradient; gap {gap:.2e}"


def test_two_calls_before_one_backward_each_get_their_own_adjoint():
    """Weight sharing: the layer applied twice, one backward. Nothing is overwritten."""
    W, inj = problem(4, norm=0.9)
    deq = DEQ(f_tanh, solver=Picard(tol=1e-13, max_iter=500))
    unrolled = DEQ(f_tanh, solver=Picard(tol=1e-13, max_iter=500), backward="unrolled")

    def loss(layer):
        z1, info1 = layer((W, inj), torch.zeros_like(inj), return_info=True)
        z2, info2 = layer((W, 0.5 * inj + z1), torch.zeros_like(inj), return_info=True)
        return (z2 * weights_like(inj)).sum(), (info1, info2)

    value, (info1, info2) = loss(deq)
    grads = torch.autograd.grad(value, (W, inj))
    assert info1.backward is not None and info2.backward is not None
    assert info1.backward is not info2.backward
    assert_close(grads, torch.autograd.grad(loss(unrolled)[0], (W, inj)), atol=1e-10, rtol=1e-9)


def test_backward_can_run_twice_with_retain_graph():
    W, inj = problem()
    z = DEQ(f_tanh, solver=Anderson(tol=1e-12))((W, inj), torch.zeros_like(inj))
    first = torch.autograd.grad(z.sum(), W, retain_graph=True)
    assert_close(torch.autograd.grad(z.sum(), W), first, atol=1e-12, rtol=0)


def test_autograd_functional_jacobian_is_the_implicit_function_theorem():
    """∂z*/∂x = (I − J)⁻¹ ∂f/∂x = (I − J)⁻¹ diag(1 − z*²) for one sample."""
    W, _ = problem(5, batch=1, width=4, norm=0.8)
    W = W.detach()
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    deq = DEQ(lambda z, x: f_tanh(z, (W, x)), solver=Anderson(tol=1e-14, max_iter=300))
    jac = torch.autograd.functional.jacobian(lambda x: deq(x), x).reshape(4, 4)
    z = deq(x).detach()[0]
    D = torch.diag(1 - z**2)
    expected = torch.linalg.solve(torch.eye(4, dtype=torch.float64) - D @ W, D)
    assert_close(jac, expected, atol=1e-11, rtol=1e-10)


# ----------------------------------------------------------------------------- higher order


def test_create_graph_through_the_implicit_backward_is_refused():
    W, inj = problem()
    z = DEQ(f_tanh, solver=Anderson(tol=1e-12))((W, inj), torch.zeros_like(inj))
    with pytest.raises(RuntimeError, match=r"higher-order gradients.*backward=Unrolled\(\)"):
        torch.autograd.grad(z.pow(2).sum(), W, create_graph=True)
    with pytest.raises(RuntimeError, match="higher-order gradients"):
        torch.autograd.gradgradcheck(
            lambda W: DEQ(f_tanh, solver=Anderson(tol=1e-12))((W, inj), torch.zeros_like(inj)),
            (W,),
        )


def test_unrolled_backward_gives_correct_second_derivatives():
    """A Hessian-vector product through the unrolled solve against central differences of the
    (exact) implicit gradient."""
    W, inj = problem(7, norm=0.7)
    z0 = torch.zeros_like(inj)
    weights = weights_like(inj)
    direction = weights_like(W, seed=8)

    def grad_W(W, backward, create_graph=False):
        deq = DEQ(f_tanh, solver=Picard(tol=1e-14, max_iter=500), backward=backward)
        z = deq((W, inj), z0)
        return torch.autograd.grad((z.pow(2) * weights).sum(), W, create_graph=create_graph)[0]

    hvp = torch.autograd.grad((grad_W(W, "unrolled", True) * direction).sum(), W)[0]
    eps = 1e-5
    plus = grad_W((W + eps * direction).detach().requires_grad_(), "implicit")
    minus = grad_W((W - eps * direction).detach().requires_grad_(), "implicit")
    assert_close(hvp, (plus - minus) / (2 * eps), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backward", ["implicit", "unrolled", "one_step"])
@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev", "vmap"])
def test_torch_func_transforms_are_refused_clearly(transform, backward):
    W, inj = problem()
    deq = DEQ(f_tanh, backward=backward, solver=Anderson(tol=1e-10))
    z0 = torch.zeros_like(inj)
    W = W.detach()
    calls = {
        "grad": lambda: torch.func.grad(lambda W: deq((W, inj), z0).sum())(W),
        "vjp": lambda: torch.func.vjp(lambda W: deq((W, inj), z0), W),
        "jacrev": lambda: torch.func.jacrev(lambda W: deq((W, inj), z0))(W),
        "vmap": lambda: torch.func.vmap(lambda i: deq((W, i[None]), z0[:1]))(inj.detach()),
    }
    with pytest.raises(RuntimeError, match="torch.func transform"):
        calls[transform]()


# ----------------------------------------------------------------------------- statistics


def test_info_holds_the_forward_result_and_the_backward_after_it_runs():
    W, inj = problem()
    z, info = DEQ(f_tanh, solver=Anderson(tol=1e-10, max_iter=200))(
        (W, inj), torch.zeros_like(inj), return_info=True
    )
    assert info.forward.converged and info.forward.method == "anderson"
    assert info.backward is None
    z.sum().backward()
    assert info.backward is not None and info.backward.converged
    assert info.backward.method == "anderson" and info.backward.tol == 1e-10


def test_backward_solver_and_its_options_can_differ_from_the_forward():
    W, inj = problem()
    deq = DEQ(
        f_tanh,
        solver=Broyden(tol=1e-10, max_iter=300, memory=30),
        backward=Implicit(solver=Picard(tol=1e-8, max_iter=300, stop="abs")),
    )
    z, info = deq((W, inj), torch.zeros_like(inj), return_info=True)
    z.sum().backward()
    assert (info.forward.method, info.backward.method) == ("broyden", "picard")
    assert (info.backward.tol, info.backward.stop) == (1e-8, "abs")


def test_callback_sees_each_solve_in_order_and_solver_stats_summarises_them():
    W, inj = problem()
    seen = []
    deq = DEQ(
        f_tanh,
        callback=lambda result, phase: seen.append((phase, result)),
        solver=Anderson(tol=1e-10),
    )
    z, info = deq((W, inj), torch.zeros_like(inj), return_info=True)
    z.sum().backward()
    assert [p for p, _ in seen] == ["forward", "backward"]
    assert seen[0][1] is info.forward and seen[1][1] is info.backward

    stats = SolverStats()
    deq = DEQ(f_tanh, callback=stats, solver=Anderson(tol=1e-10))
    infos = []
    for _ in range(2):
        z, info = deq((W, inj), torch.zeros_like(inj), return_info=True)
        z.sum().backward()
        infos.append(info)
    summary = stats.pop()
    assert summary["forward_solves"] == 2 and summary["backward_solves"] == 2
    assert summary["backward_steps"] == sum(i.backward.steps for i in infos) / 2
    assert summary["forward_residual_max"] == max(
        float(i.forward.final_residual.max()) for i in infos
    )
    assert summary["forward_unconverged"] == 0
    assert stats.summary()["forward_solves"] == 0 and np.isnan(stats.summary()["forward_steps"])


def test_solver_stats_can_skip_evaluation_solves():
    W, inj = problem()
    stats = SolverStats(training_only=True)
    deq = DEQ(f_tanh, callback=stats, solver=Anderson(tol=1e-10))
    with torch.no_grad():
        deq((W, inj), torch.zeros_like(inj))
    deq((W, inj), torch.zeros_like(inj)).sum().backward()
    assert stats.steps["forward"] and len(stats.steps["forward"]) == 1
    assert len(stats.steps["backward"]) == 1
    with pytest.raises(ValueError, match="phase must be one of"):
        stats(None, "adjoint")


def test_the_layer_keeps_no_state_and_deepcopies_after_any_forward():
    W, inj = problem()
    for backward in ("implicit", "unrolled", "one_step"):
        deq = DEQ(f_tanh, backward=backward, solver=Anderson(tol=1e-10))
        before = dict(vars(deq))
        z = deq((W, inj), torch.zeros_like(inj))
        assert dict(vars(deq)).keys() == before.keys()
        clone = copy.deepcopy(deq)
        assert_close(clone((W, inj), torch.zeros_like(inj)), z, atol=0, rtol=0)


# ----------------------------------------------------------------------------- memory


def test_memory_kept_for_backward_is_one_application_of_f():
    """Width 512, batch 32, float32: the DEQ keeps at most 1.1× what one application keeps."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(512, 512, generator=g)
    W = (0.5 * W / torch.linalg.matrix_norm(W, ord=2)).requires_grad_()
    inj = torch.randn(32, 512, generator=g).requires_grad_()
    z0 = torch.zeros(32, 512)
    one = saved_tensor_bytes(lambda: f_tanh(z0.clone().requires_grad_(), (W, inj)))
    kept = saved_tensor_bytes(lambda: DEQ(f_tanh, solver=Anderson(tol=1e-5))((W, inj), z0))
    assert kept <= 1.1 * one, f"DEQ keeps {kept} bytes, one application {one}: {kept / one:.3f}x"
    # and it does not grow with the number of forward iterations
    coarse = saved_tensor_bytes(lambda: DEQ(f_tanh, solver=Picard(tol=1e-2))((W, inj), z0))
    assert coarse == kept, f"{coarse} bytes after a coarse solve, {kept} after a fine one"


def test_no_graph_is_kept_when_nothing_needs_a_gradient():
    W, inj = problem()
    z = DEQ(f_tanh, solver=Anderson(tol=1e-10))((W.detach(), inj.detach()), torch.zeros_like(inj))
    assert not z.requires_grad
    with torch.no_grad():
        z2 = DEQ(f_tanh, solver=Anderson(tol=1e-10))((W, inj), torch.zeros_like(inj))
    assert not z2.requires_grad
    assert_close(z, z2, atol=0, rtol=0)


# ----------------------------------------------------------------------------- torch.compile


def _compiled_matches_eager(backend):
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 6).double()

    class Map(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, z, x):
            return torch.tanh(0.5 * self.lin(z) + x)

    f = Map()
    x = torch.randn(3, 6, dtype=torch.float64)
    grads = []
    for layer in (
        DEQ(torch.compile(f, backend=backend), solver=Anderson(tol=1e-12)),
        DEQ(f, solver=Anderson(tol=1e-12)),
    ):
        f.zero_grad()
        z, info = layer(x, return_info=True)
        (z * weights_like(z)).sum().backward()
        assert info.backward.converged
        grads.append([p.grad.clone() for p in f.parameters()])
    assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-11)


def test_deq_of_a_torch_compiled_map():
    """torch.compile(f) with the aot_eager backend: dynamo captures f and AOTAutograd builds
    its backward graph, which the adjoint solve differentiates many times (retain_graph).
    Inductor's code generation is left out here: it took 77 s on the 2-core test machine;
    set DEQLIB_TEST_INDUCTOR=1 to run it too (test below)."""
    _compiled_matches_eager("aot_eager")


@pytest.mark.skipif(
    os.environ.get("DEQLIB_TEST_INDUCTOR") != "1",
    reason="inductor compiles for over a minute on 2 CPU cores; "
    "set DEQLIB_TEST_INDUCTOR=1 to run it",
)
def test_deq_of_an_inductor_compiled_map():
    _compiled_matches_eager("inductor")


# ----------------------------------------------------------------------------- warnings


def test_unconverged_adjoint_solve_is_warned_at_the_callers_line():
    W, inj = problem(norm=0.95)
    deq = DEQ(
        f_tanh,
        solver=Picard(tol=1e-12, max_iter=400),
        backward=Implicit(solver=Picard(tol=1e-12, max_iter=2)),
    )
    z, info = deq((W, inj), torch.zeros_like(inj), return_info=True)
    with pytest.warns(ConvergenceWarning, match="did not converge") as record:
        z.sum().backward()
    assert not info.backward.converged
    assert record[0].filename == __file__, record[0].filename


def test_unconverged_forward_solve_is_warned_at_the_callers_line():
    W, inj = problem(norm=0.95)
    deq = DEQ(f_tanh, solver=Picard(tol=1e-12, max_iter=3))
    with pytest.warns(ConvergenceWarning) as record:
        deq((W, inj), torch.zeros_like(inj))
    assert record[0].filename == __file__, record[0].filename


# ----------------------------------------------------------------------------- bad input


def test_bad_options_are_rejected_at_construction():
    cases = [
        (ValueError, "backward must be Implicit", lambda: DEQ(f_tanh, backward="implict")),
        (ValueError, "backward must be Implicit", lambda: DEQ(f_tanh, backward=Picard())),
        (ValueError, "unknown solver", lambda: DEQ(f_tanh, solver="newton")),
        (TypeError, "solver must be a solver object", lambda: DEQ(f_tanh, solver=3)),
        (ValueError, "unknown solver", lambda: Implicit(solver="newton")),
        (
            TypeError,
            r"Implicit\(solver=...\) must be a solver object",
            lambda: Implicit(solver={"tol": 1e-3}),
        ),
        (TypeError, "callback must be callable", lambda: DEQ(f_tanh, callback="stats")),
        (ValueError, "z_shape must be positive integers", lambda: DEQ(f_tanh, z_shape=(0, 3))),
        (
            TypeError,
            "unexpected keyword argument.*'tolerance'",
            lambda: DEQ(f_tanh, tolerance=1e-3),
        ),
        (TypeError, "f must be callable", lambda: DEQ("tanh")),
    ]
    for error, message, make in cases:
        with pytest.raises(error, match=message):
            make()


@pytest.mark.parametrize(
    "removed, advice",
    [
        (dict(tol=1e-4), r"tol= moved into the solver object: solver=Anderson\(tol=0.0001\)"),
        (
            dict(solver="picard", max_iter=3, solver_options={"stop": "abs"}),
            r"max_iter=, solver_options= moved into the solver object: "
            r"solver=Picard\(max_iter=3, stop='abs'\)",
        ),
        (
            dict(backward_solver="picard", backward_tol=1e-8),
            r"backward_solver=, backward_tol= moved into the backward object: "
            r"backward=Implicit\(solver=Picard\(tol=1e-08\)\)",
        ),
    ],
)
@pytest.mark.parametrize("owner", ["DEQ", "TanhDEQ", "ConvDEQ", "DeepEquilibriumLinear"])
def test_a_removed_keyword_says_what_to_write_instead(owner, removed, advice):
    make = {
        "DEQ": lambda **kw: DEQ(f_tanh, **kw),
        "TanhDEQ": lambda **kw: deqlib.TanhDEQ(3, 4, **kw),
        "ConvDEQ": lambda **kw: deqlib.ConvDEQ((4, 4), 2, **kw),
        "DeepEquilibriumLinear": lambda **kw: deqlib.DeepEquilibriumLinear(3, 2, **kw),
    }
    with pytest.raises(TypeError, match=f"^{owner}: {advice}"):
        make[owner](**removed)


def test_solver_and_backward_names_are_the_default_objects():
    deq = DEQ(f_tanh, solver="picard", backward="unrolled")
    assert deq.solver == Picard() and deq.backward == Unrolled()
    assert DEQ(f_tanh, backward="one_step").backward == OneStep()
    assert repr(DEQ(f_tanh, solver=Picard(tol=1e-8))) == (
        "DEQ(solver=Picard(tol=1e-08), backward=Implicit())"
    )


def test_numpy_scalars_are_accepted_as_tol_and_max_iter():
    deq = DEQ(f_tanh, solver=Anderson(tol=np.float32(1e-6), max_iter=np.int64(50)))
    assert isinstance(deq.solver.tol, float) and deq.solver.max_iter == 50


def test_half_precision_and_integer_starts_are_refused_early():
    W, inj = problem()
    for dtype in (torch.float16, torch.bfloat16, torch.int64):
        with pytest.raises(TypeError, match=f"got z of dtype {dtype}"):
            DEQ(f_tanh)((W, inj), torch.zeros(3, 5, dtype=dtype))
    with pytest.raises(ValueError, match="cannot infer the shape of z"):
        DEQ(lambda z, x: z)(torch.ones(3, 5, dtype=torch.int64))


def test_f_may_compute_in_half_precision_under_autocast():
    """Under CPU autocast f's matmul runs in bfloat16; z, the output and the solves stay
    float32, and the gradient is the float32 one to bfloat16's precision."""
    W, inj = problem(norm=0.5)
    W32, inj32 = W.detach().float().requires_grad_(), inj.detach().float().requires_grad_()
    deq = DEQ(f_tanh, solver=Anderson(tol=1e-2), backward=Implicit(solver=Anderson(tol=1e-2)))
    z0 = torch.zeros(3, 5)
    exact = torch.autograd.grad(
        DEQ(f_tanh, solver=Anderson(tol=1e-6))((W32, inj32), z0).sum(), W32
    )[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, info = deq((W32, inj32), z0, return_info=True)
    assert z.dtype == torch.float32 and info.forward.converged
    (grad,) = torch.autograd.grad(z.sum(), W32)
    assert grad.dtype == torch.float32 and info.backward.converged
    assert_close(grad, exact, atol=0.05, rtol=0.05)
    # a map that returns another dtype is cast back to z's, as the solvers do
    z = DEQ(lambda z, x: (0.5 * z + x).float())(
        torch.ones(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    )
    assert z.dtype == torch.float64


def test_start_is_inferred_from_x_or_z_shape():
    lin = torch.nn.Linear(4, 4).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    z, info = DEQ(lambda z, x: 0.5 * torch.tanh(lin(z)) + x, solver=Anderson(tol=1e-10))(
        x, return_info=True
    )
    assert z.shape == (2, 4) and info.forward.converged
    deq = DEQ(
        lambda z, x: 0.5 * torch.tanh(z) + x.sum(1, keepdim=True),
        z_shape=(3,),
        solver=Anderson(tol=1e-10),
    )
    assert deq(x).shape == (2, 3)
    with pytest.raises(ValueError, match="could not infer the shape of z"):
        DEQ(lambda z, x: z @ torch.ones(3, 3, dtype=torch.float64))(x)


def test_a_map_that_returns_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match="must return a tensor of z's shape"):
        DEQ(lambda z, x: x[:, :2])(
            torch.randn(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
        )


def test_no_warning_is_left_behind_by_a_converged_solve():
    W, inj = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DEQ(f_tanh, solver=Anderson(tol=1e-10))((W, inj), torch.zeros_like(inj)).sum().backward()


def test_saved_bytes_count_only_what_the_returned_graph_keeps():
    # a branch whose graph is freed inside fn saved a tensor that nobody keeps for backward;
    # counting storages by address made the total depend on where the allocator reused it
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)

    def fn():
        (x * 2).sin()  # sin saves its input, 8000 bytes, freed with the branch
        return x.exp()  # exp saves its output, 8000 bytes, kept

    assert [saved_tensor_bytes(fn) for _ in range(3)] == [8000] * 3
    assert saved_tensor_bytes(lambda: None) == 0


def test_z_shape_takes_numpy_integers_and_one_integer_and_refuses_nonsense():
    import numpy as np

    f = lambda z, x: torch.tanh(0.5 * z + x.sum(1, keepdim=True))
    assert DEQ(f, z_shape=(np.int64(4),)).z_shape == (4,)
    assert DEQ(f, z_shape=4).z_shape == (4,)
    for bad, error in (
        ((0,), ValueError),
        ((2.0,), ValueError),
        ("4", TypeError),
        ((True,), ValueError),
    ):
        with pytest.raises(error, match="z_shape"):
            DEQ(f, z_shape=bad)


def test_without_torchs_interpreter_stack_the_functorch_guard_says_it_is_off(monkeypatch):
    # a private torch function: where it is gone, the guard cannot work, and deqlib says so once
    import deqlib.implicit as implicit

    monkeypatch.delattr(torch._C._functorch, "peek_interpreter_stack")
    implicit._no_functorch_guard.cache_clear()
    W, inj = problem(1, norm=0.9)
    deq = DEQ(f_tanh, solver=Anderson(tol=1e-10, max_iter=200))
    with pytest.warns(RuntimeWarning, match="cannot tell whether a torch.func transform"):
        deq((W, inj), torch.zeros_like(inj))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deq((W, inj), torch.zeros_like(inj))  # said once, not at every call
    implicit._no_functorch_guard.cache_clear()
