"""deqlib.implicit: the DEQ layer's gradients against unrolled backprop, gradcheck, and its options."""

import pytest
import torch

from deqlib import DEQ, TanhDEQ
from deqlib.solvers import ConvergenceWarning


def tanh_map(z, ctx):
    W_z, inj = ctx
    return torch.tanh(z @ W_z.T + inj)


def problem(seed=0, batch=3, width=5, norm=0.8):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    W = (norm * W / torch.linalg.matrix_norm(W, ord=2)).requires_grad_()
    inj = torch.randn(batch, width, generator=g, dtype=torch.float64).requires_grad_()
    return W, inj


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_implicit_gradient_passes_gradcheck(solver):
    W, inj = problem()
    deq = DEQ(tanh_map, solver=solver, tol=1e-13, max_iter=500)
    z0 = torch.zeros_like(inj)
    assert torch.autograd.gradcheck(lambda W, inj: deq((W, inj), z0), (W, inj), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_implicit_gradient_matches_unrolled(seed):
    W, inj = problem(seed, norm=0.9)
    z0 = torch.zeros_like(inj)
    weights = torch.randn(inj.shape, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)

    def grads(backward):
        deq = DEQ(tanh_map, backward=backward, tol=1e-13, max_iter=1000)
        loss = (deq((W, inj), z0) * weights).sum()
        return torch.autograd.grad(loss, (W, inj))

    implicit, unrolled = grads("implicit"), grads("unrolled")
    for a, b in zip(implicit, unrolled):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-9), f"max diff {(a - b).abs().max():.3e}"


def test_one_step_gradient_is_the_jacobian_free_approximation():
    """one_step drops (I − J)⁻¹: its gradient is that of one application of f at z*."""
    W, inj = problem(1, norm=0.9)
    z0 = torch.zeros_like(inj)
    deq = DEQ(tanh_map, backward="one_step", tol=1e-13, max_iter=500)
    z = deq((W, inj), z0)
    g_one = torch.autograd.grad(z.sum(), W)[0]
    z_star = deq.last_forward.z.detach()
    g_ref = torch.autograd.grad(tanh_map(z_star, (W, inj)).sum(), W)[0]
    assert torch.allclose(g_one, g_ref, atol=1e-14)
    exact = torch.autograd.grad(DEQ(tanh_map, tol=1e-13, max_iter=500)((W, inj), z0).sum(), W)[0]
    assert not torch.allclose(g_one, exact, atol=1e-3)  # an approximation, visibly so here


def test_solver_results_of_last_forward_and_backward_are_kept():
    W, inj = problem()
    deq = DEQ(tanh_map, tol=1e-10, max_iter=200)
    z = deq((W, inj), torch.zeros_like(inj))
    assert deq.last_forward.converged and deq.last_backward is None
    z.sum().backward()
    assert deq.last_backward is not None and deq.last_backward.converged
    assert deq.last_backward.method == "anderson"


def test_backward_solver_can_differ_from_forward():
    W, inj = problem()
    deq = DEQ(tanh_map, solver="broyden", backward_solver="picard", tol=1e-10, max_iter=300,
              solver_options={"memory": 30})
    deq((W, inj), torch.zeros_like(inj)).sum().backward()
    assert deq.last_forward.method == "broyden" and deq.last_backward.method == "picard"


def test_unconverged_backward_is_warned():
    W, inj = problem(norm=0.95)
    deq = DEQ(tanh_map, solver="picard", tol=1e-12, max_iter=400, backward_max_iter=2)
    z = deq((W, inj), torch.zeros_like(inj))
    with pytest.warns(ConvergenceWarning):
        z.sum().backward()
    assert not deq.last_backward.converged


def test_bad_options_are_rejected_at_construction():
    with pytest.raises(ValueError, match="backward must be one of"):
        DEQ(tanh_map, backward="implict")
    with pytest.raises(TypeError, match="unknown option"):
        DEQ(tanh_map, solver="picard", solver_options={"memory": 5})
    with pytest.raises(TypeError, match="unknown option"):
        DEQ(tanh_map, backward_solver_options={"tolerance": 1e-3})
    with pytest.raises(ValueError, match="unknown solver"):
        DEQ(tanh_map, solver="newton")


def test_start_is_inferred_from_x_or_z_shape():
    lin = torch.nn.Linear(4, 4).double()
    deq = DEQ(lambda z, x: 0.5 * torch.tanh(lin(z)) + x, tol=1e-10)
    x = torch.randn(2, 4, dtype=torch.float64)
    z = deq(x)
    assert z.shape == (2, 4) and deq.last_forward.converged
    deq2 = DEQ(lambda z, x: 0.5 * torch.tanh(z) + x.sum(1, keepdim=True), z_shape=(3,), tol=1e-10)
    assert deq2(x).shape == (2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_deq_trains_in_both_dtypes(dtype):
    torch.manual_seed(0)
    model = TanhDEQ(6, 8, 2, dtype=dtype, tol=1e-5 if dtype == torch.float32 else 1e-10)
    x, y = torch.randn(16, 6, dtype=dtype), torch.randn(16, 2, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert model.deq.last_forward.z.dtype == dtype


def test_tanh_deq_keeps_w_z_within_its_bound():
    model = TanhDEQ(3, 10, max_norm=0.7)
    with torch.no_grad():
        model.W_z.mul_(50)
    assert torch.linalg.matrix_norm(model.effective_W_z(), ord=2) <= 0.7 + 1e-5
    with pytest.raises(ValueError, match="max_norm"):
        TanhDEQ(3, 10, max_norm=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deq_backward_on_cuda():
    model = TanhDEQ(6, 8, 2, device="cuda")
    model(torch.randn(4, 6, device="cuda")).sum().backward()
    assert model.W_z.grad.is_cuda and model.deq.last_backward.converged
