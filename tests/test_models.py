"""deqlib.models: the deep equilibrium linear model (both paths, the width option, bad input)
and its explicit peers. The formulas themselves are tested in test_functional.py."""

import io
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from deqlib import (
    Anderson,
    Broyden,
    DeepEquilibriumLinear,
    DeepLinearNetwork,
    LinearModel,
    Picard,
    theory,
)
from deqlib import functional as F

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def delm(m=6, m_y=4, seed=0, **kw):
    return DeepEquilibriumLinear(
        m, m_y, generator=torch.Generator().manual_seed(seed), dtype=F64, **kw
    )


def test_forward_is_the_end_to_end_matrix_and_any_w_is_reachable():
    model = delm(4, 6)  # width below the output dimension: still no rank bottleneck
    X = torch.randn(5, 4, dtype=F64)
    assert_close(model(X), X @ model.end_to_end().T, rtol=1e-13, atol=1e-13)
    W_target = torch.randn(6, 4, dtype=F64)
    with torch.no_grad():
        model.B.copy_(W_target @ (torch.eye(4, dtype=F64) - model.S()))  # B = W(I − S)
    assert_close(model.end_to_end(), W_target, rtol=1e-12, atol=1e-12)


def test_module_gradients_are_the_functional_ones():
    model = delm(5, 3)
    X = torch.randn(7, 5, dtype=F64)
    w = torch.randn(7, 3, dtype=F64)
    gA, gB = torch.autograd.grad((model(X) * w).sum(), (model.A, model.B))
    G = w.T @ X  # ∇ℒ(W) of ⟨w, XWᵀ⟩
    fA, fB = F.delm_gradients(model.A.detach(), model.B.detach(), G, model.gamma, model.delta)
    assert_close(gA, fA, rtol=1e-12, atol=1e-14)
    assert_close(gB, fB, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("solver", [Picard, Anderson, Broyden])
def test_iterative_and_closed_form_forwards_agree(solver):
    closed = delm(6, 4)
    iterative = delm(6, 4, solver=solver(tol=1e-13, max_iter=500))
    iterative.load_state_dict(closed.state_dict())
    X = torch.randn(10, 6, dtype=F64)
    assert_close(iterative(X), closed(X), rtol=0, atol=1e-11)
    w = torch.randn(10, 4, dtype=F64)
    g1 = torch.autograd.grad((closed(X) * w).sum(), closed.A)[0]
    g2 = torch.autograd.grad((iterative(X) * w).sum(), iterative.A)[0]
    assert_close(g2, g1, rtol=1e-8, atol=1e-11)


def test_solver_options_are_the_solvers_own():
    """A solver object reaches the iterative path whole; nothing is ignored."""
    closed = delm(6, 4)
    solver = Anderson(tol=1e-12, max_iter=200, memory=2)
    model = delm(6, 4, solver=solver)
    assert model.deq.solver is solver and model.solver is solver
    model.load_state_dict(closed.state_dict())
    X = torch.randn(3, 6, dtype=F64)
    assert_close(model(X), closed(X), rtol=0, atol=1e-10)
    assert delm(6, 4, solver="broyden").deq.solver == Broyden()
    with pytest.raises(TypeError, match=r"tol= moved into the solver object: solver=Anderson"):
        delm(6, 4, solver="anderson", tol=1e-8)
    with pytest.raises(TypeError, match=r"tol= moved into the solver object: solver=Picard"):
        delm(6, 4, solver=Picard(), tol=1e-8)
    for kw in (
        {"backward": "implicit"},
        {"callback": print},
    ):
        with pytest.raises(TypeError, match="solver='cholesky' never iterates"):
            delm(6, 4, **kw)


def test_equilibrium_is_well_posed_for_any_scale_of_a():
    for seed in range(5):
        model = delm(7, 2, seed)
        with torch.no_grad():
            model.A.mul_(10.0 ** (3 * seed - 6))  # σ is scale-invariant: any scale is fine
        S = model.S().detach()
        assert_close(S, S.T, rtol=0, atol=0)
        eig_S = torch.linalg.eigvalsh(S)
        assert eig_S.min() >= -1e-12 and eig_S.max() < model.gamma, (eig_S.min(), eig_S.max())
        eig_U = torch.linalg.eigvalsh(model.U().detach())
        assert eig_U.min() >= 1 - 1e-12 and eig_U.max() < 1 / (1 - model.gamma), eig_U


def _norm_drift(eta: float, T: float = 0.2) -> float:
    """Relative change of ‖A‖_F after time T of gradient descent with step eta, δ = 1e-12."""
    model = delm(4, 3, seed=7, delta=1e-12)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(10, 4, generator=g, dtype=F64)
    Y = torch.randn(10, 3, generator=g, dtype=F64)
    a0 = model.A.detach().norm().item()
    for _ in range(round(T / eta)):
        loss = (model(X) - Y).pow(2).sum()
        gA, gB = torch.autograd.grad(loss, (model.A, model.B))
        with torch.no_grad():
            model.A.sub_(eta * gA)
            model.B.sub_(eta * gB)
    return abs(model.A.detach().norm().item() - a0) / a0


def test_norm_of_a_is_conserved_up_to_order_eta():
    """With δ → 0, σ(cA) = σ(A) so ⟨∇_A L, A⟩ = 0: ‖A‖_F drifts only by the O(η) of a step."""
    d1, d2 = _norm_drift(5e-4), _norm_drift(2.5e-4)
    assert d1 < 0.01, d1
    assert 1.6 < d1 / d2 < 2.6, (
        f"drift {d1:.3e} at η, {d2:.3e} at η/2: ratio {d1 / d2:.2f}, not ≈ 2"
    )


# --- the width option


def test_features_are_a_fixed_gaussian_projection():
    model = delm(12, 10, width=5)
    X = torch.randn(8, 12, dtype=F64)
    assert model.R.shape == (5, 12) and not model.R.requires_grad
    assert model.A.shape == (5, 5) and model.B.shape == (10, 5)
    assert model.features(X).shape == (8, 5)
    assert_close(model.features(X), X @ model.R.T, rtol=0, atol=0)
    assert_close(model(X), model.features(X) @ model.end_to_end().T, rtol=1e-13, atol=1e-13)
    assert "R" not in dict(model.named_parameters())
    identity = delm(12, 10)
    assert identity.R is None and "R" not in identity.state_dict()
    assert identity.features(X) is X and identity.width == 12


def test_features_entries_have_the_variance_one_over_in_features():
    """N(0, 1/in_features): 400·784 draws put the sample variance within 1% (±5 s.d.)."""
    model = DeepEquilibriumLinear(
        784, 10, width=400, generator=torch.Generator().manual_seed(0), dtype=F64
    )
    var, target = model.R.var().item(), 1 / 784
    sd = target * math.sqrt(2 / model.R.numel())
    assert abs(var - target) < 5 * sd, f"var(R) = {var:.4e}, expected {target:.4e} ± {5 * sd:.1e}"


def test_features_are_not_trained_and_survive_a_state_dict_round_trip():
    model = delm(12, 10, width=5)
    R0 = model.R.clone()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    X, Y = torch.randn(20, 12, dtype=F64), torch.randn(20, 10, dtype=F64)
    (model(X) - Y).pow(2).sum().backward()
    opt.step()
    assert model.R.grad is None and torch.equal(model.R, R0)
    assert all(p is not model.R for p in model.parameters())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = delm(12, 10, width=5, seed=99)  # a different R and A, B
    assert not torch.equal(other.R, R0)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other.R, R0)
    assert_close(other(X), model(X), rtol=0, atol=0)


def test_gamma_and_delta_travel_with_the_state_and_a_mismatch_is_refused():
    # hostile review L-sd-gamma: A and B compute another function under another gamma or delta
    model = delm(6, 4, gamma=0.5, delta=1e-4)
    state = model.state_dict()
    assert float(state["gamma"]) == 0.5 and float(state["delta"]) == 1e-4
    for name, other in (("gamma", delm(6, 4, seed=1, gamma=0.9, delta=1e-4)),
                        ("delta", delm(6, 4, seed=1, gamma=0.5, delta=1e-6))):
        with pytest.raises(RuntimeError, match=rf"saved from a model with {name}="):
            other.load_state_dict(state)
    # a state saved before they were stored (no such keys) still loads, strictly
    old = {k: v for k, v in state.items() if k not in ("gamma", "delta")}
    twin = delm(6, 4, seed=1, gamma=0.5, delta=1e-4)
    twin.load_state_dict(old)
    X = torch.randn(3, 6, dtype=F64)
    assert_close(twin(X), model(X), rtol=0, atol=0)


def test_gradient_descent_closes_the_gap_to_least_squares_on_the_features():
    """m = 3 < m_y = 5 < n = 30: the gap to ℒ* = min_W ‖WΦ − Y‖² on Φ = φ(X)ᵀ reaches float64's
    floor (|L − ℒ*| ≤ 1e-12 ℒ*; L ≥ ℒ* up to rounding, since ℒ* is the infimum)."""
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(30, 8, generator=g, dtype=F64), torch.randn(30, 5, generator=g, dtype=F64)
    model = delm(8, 5, seed=2, width=3)
    Phi = model.features(X).T
    optimum = theory.optimum_square_loss(Phi, Y.T).item()
    eta = 0.2 / torch.linalg.eigvalsh(Phi @ Phi.T)[-1].item()
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    gap0 = (model(X) - Y).pow(2).sum().item() - optimum
    for _ in range(400):
        opt.zero_grad()
        (model(X) - Y).pow(2).sum().backward()
        opt.step()
    gap = (model(X) - Y).pow(2).sum().item() - optimum
    assert gap0 > 1 and abs(gap) <= 1e-12 * optimum, f"L − ℒ* from {gap0:.3e} to {gap:.3e}"


def test_width_works_with_the_iterative_path():
    closed = delm(8, 3, width=4)
    iterative = delm(8, 3, width=4, seed=5, solver=Picard(tol=1e-13, max_iter=500))
    iterative.load_state_dict(closed.state_dict())
    X = torch.randn(6, 8, dtype=F64)
    assert_close(iterative(X), closed(X), rtol=0, atol=1e-11)


# --- bad input


@pytest.mark.parametrize("gamma", [0, 1, 1.5, -0.2, float("nan")])
def test_gamma_outside_the_unit_interval_is_rejected(gamma):
    with pytest.raises(ValueError, match="gamma must lie in"):
        DeepEquilibriumLinear(4, 2, gamma=gamma)


@pytest.mark.parametrize("delta", [0, -1e-3, float("inf")])
def test_nonpositive_delta_is_rejected(delta):
    with pytest.raises(ValueError, match="delta must be a positive"):
        DeepEquilibriumLinear(4, 2, delta=delta)


def test_numpy_scalars_are_accepted():
    model = DeepEquilibriumLinear(
        np.int64(4), np.int32(2), width=np.int64(3), gamma=np.float32(0.8), delta=np.float64(1e-6)
    )
    assert isinstance(model.gamma, float) and model.gamma == float(np.float32(0.8))
    assert model(torch.randn(2, 4)).shape == (2, 2)


@pytest.mark.parametrize("Model", [DeepEquilibriumLinear, LinearModel, DeepLinearNetwork])
def test_wrong_shapes_are_rejected(Model):
    model = Model(4, 2)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4\); got \(3, 5\)"):
        model(torch.randn(3, 5))
    with pytest.raises(ValueError, match="expects input of shape"):
        model(torch.randn(4))
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        Model(0, 2)


def test_unknown_solver_and_bad_width_are_rejected():
    with pytest.raises(ValueError, match="solver must be 'cholesky'.*got solver='lu'"):
        DeepEquilibriumLinear(4, 2, solver="lu")
    for width in (0, 2.5, True):
        with pytest.raises(
            ValueError, match=f"width must be a positive integer; got width={width}"
        ):
            DeepEquilibriumLinear(4, 2, width=width)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32])
def test_unsupported_dtypes_are_refused_at_construction(dtype):
    with pytest.raises(TypeError, match=f"float32 or float64.*got dtype={dtype}"):
        DeepEquilibriumLinear(4, 2, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_after_construction_is_refused_at_forward(dtype):
    model = DeepEquilibriumLinear(4, 2).to(dtype)
    with pytest.raises(TypeError, match="no half-precision kernel"):
        model(torch.randn(3, 4, dtype=dtype))


def test_input_of_another_dtype_is_refused_with_advice():
    model = delm(4, 2)
    with pytest.raises(
        TypeError, match=r"float64 parameters but the input is torch.float32.*x\.to"
    ):
        model(torch.randn(3, 4))
    with pytest.raises(TypeError, match="the input is torch.int64"):
        model(torch.ones(3, 4, dtype=torch.int64))


@pytest.mark.parametrize("solver", ["cholesky", "anderson"])
def test_nan_input_and_diverged_parameters_give_clear_errors(solver):
    kw = {} if solver == "cholesky" else {"solver": solver}
    model = delm(4, 2, **kw)
    X = torch.randn(5, 4, dtype=F64)
    X[2, 0] = float("nan")
    with pytest.raises(ValueError, match="the first in sample 2"):
        model(X)
    X[2, 0] = 0.0
    with torch.no_grad():
        model.A[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        model(X)


@pytest.mark.parametrize("solver", ["cholesky", "anderson"])
def test_empty_batch_is_answered(solver):
    model = delm(4, 2, solver=solver)
    out = model(torch.zeros(0, 4, dtype=F64))
    assert out.shape == (0, 2)
    out.sum().backward()
    assert torch.equal(model.B.grad, torch.zeros_like(model.B))


# --- the explicit peers


def test_explicit_peers_compute_their_end_to_end_matrix():
    x = torch.randn(6, 5, dtype=F64)
    deep = DeepLinearNetwork(5, 3, depth=3, width=2, dtype=F64)
    assert_close(deep(x), x @ deep.end_to_end().T, rtol=1e-13, atol=1e-13)
    assert torch.linalg.matrix_rank(deep.end_to_end()) <= 2  # the width caps the rank
    W0 = delm(5, 3).end_to_end().detach()
    lin = LinearModel.from_matrix(W0)
    assert torch.equal(lin.end_to_end().detach(), W0)
    assert "depth=3, width=2" in repr(deep) and "gamma=0.8" in repr(delm())
    assert "width=3" in repr(delm(5, 2, width=3)) and "width" not in repr(delm(5, 2))


def test_initialisation_is_reproducible_and_has_variance_one_over_m():
    a, b = delm(seed=4), delm(seed=4)
    assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B)
    big = DeepEquilibriumLinear(300, 200, generator=torch.Generator().manual_seed(0), dtype=F64)
    for name, p in (("A", big.A), ("B", big.B)):
        var, target = p.var().item(), 1 / 300
        sd = target * math.sqrt(2 / p.numel())
        assert abs(var - target) < 5 * sd, (
            f"var({name}) = {var:.4e}, expected {target:.4e} ± {5 * sd:.1e}"
        )


def test_closed_form_second_derivatives_match_finite_differences():
    """A gradient penalty or a Hessian through the closed form: its first-order backward is
    written by hand, and create_graph=True used to drop the second-order term silently
    (hessian returned zeros). gradgradcheck compares with finite differences in float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    A = (0.5 * torch.randn(4, 4, dtype=torch.float64, generator=g)).requires_grad_()
    B = torch.randn(2, 4, dtype=torch.float64, generator=g).requires_grad_()
    closed_form = lambda x, A, B: F.deep_equilibrium_linear(x, A, B, 0.8, 1e-6)
    assert torch.autograd.gradgradcheck(closed_form, (x, A, B))
    hessian = torch.autograd.functional.hessian(
        lambda x: closed_form(x, A, B).square().sum(), x.detach())
    assert hessian.abs().max() > 0
