"""deqlib.models: the paper's model against its closed forms, its peers, and bad input."""

import math

import pytest
import torch

from deqlib import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel, TanhDEQ
from deqlib.models import _DELMClosedForm
from deqlib.theory import delm_gradients, equilibrium_matrix

F64 = torch.float64


def delm(m=6, m_y=4, seed=0, **kw):
    return DeepEquilibriumLinear(m, m_y, generator=torch.Generator().manual_seed(seed), dtype=F64, **kw)


def test_closed_form_backward_passes_gradcheck():
    model = delm(5, 7)
    X = torch.randn(9, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X, A, B: _DELMClosedForm.apply(X, A, B, 0.8, 1e-6),
                                    (X, model.A, model.B))


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
@pytest.mark.parametrize("seed", range(3))
def test_gradients_match_the_closed_forms(loss, seed):
    """∂L/∂A = A(K + Kᵀ), ∂L/∂B = G Uᵀ (MATH.md §2), width m = 3 < m_y = 5 < n = 12."""
    model = delm(3, 5, seed)
    g = torch.Generator().manual_seed(seed + 10)
    X = torch.randn(12, 3, generator=g, dtype=F64)
    y = torch.randint(0, 5, (12,), generator=g)
    Y = torch.nn.functional.one_hot(y, 5).to(F64)
    out = model(X)
    L = (out - Y).pow(2).sum() if loss == "square" else torch.nn.functional.cross_entropy(out, y, reduction="sum")
    gA, gB = torch.autograd.grad(L, (model.A, model.B))
    # G = ∇ℒ(W) = R Φᵀ with R = ∂ℓ/∂q per sample (columns); here rows: G = Rᵀ X.
    R = 2 * (out - Y) if loss == "square" else torch.softmax(out, dim=1) - Y
    fA, fB = delm_gradients(model.A.detach(), model.B.detach(), R.detach().T @ X, 0.8, 1e-6)
    assert torch.allclose(gA, fA, rtol=1e-9, atol=1e-12), f"{(gA - fA).abs().max():.3e}"
    assert torch.allclose(gB, fB, rtol=1e-9, atol=1e-12), f"{(gB - fB).abs().max():.3e}"


def test_closed_form_backward_matches_autograd_through_the_inverse():
    model = delm(8, 3)
    X = torch.randn(20, 8, dtype=F64)
    w = torch.randn(20, 3, dtype=F64)
    gA, gB = torch.autograd.grad((model(X) * w).sum(), (model.A, model.B))
    rA, rB = torch.autograd.grad((X @ model.end_to_end().T * w).sum(), (model.A, model.B))
    assert torch.allclose(gA, rA, rtol=1e-9, atol=1e-12) and torch.allclose(gB, rB, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_iterative_and_closed_form_forwards_agree(solver):
    closed = delm(6, 4)
    iterative = delm(6, 4, solver=solver, solver_options={"tol": 1e-13, "max_iter": 500})
    iterative.load_state_dict(closed.state_dict())
    X = torch.randn(10, 6, dtype=F64)
    assert torch.allclose(closed(X), iterative(X), atol=1e-11)
    w = torch.randn(10, 4, dtype=F64)
    g1 = torch.autograd.grad((closed(X) * w).sum(), closed.A)[0]
    g2 = torch.autograd.grad((iterative(X) * w).sum(), iterative.A)[0]
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-11), f"{(g1 - g2).abs().max():.3e}"


def test_equilibrium_is_well_posed_for_any_a():
    for seed in range(5):
        model = delm(7, 2, seed)
        with torch.no_grad():
            model.A.mul_(10.0 ** (seed - 2))     # σ is scale-invariant: any scale is fine
        S = model.S().detach()
        assert torch.allclose(S, S.T)
        eig_S = torch.linalg.eigvalsh(S)
        assert eig_S.min() >= -1e-12 and eig_S.max() < model.gamma
        eig_U = torch.linalg.eigvalsh(model.U().detach())
        assert eig_U.min() >= 1 - 1e-12 and eig_U.max() < 1 / (1 - model.gamma)


def test_end_to_end_matrix_is_the_model_and_any_w_is_reachable():
    model = delm(4, 6)  # width below the output dimension: still no rank bottleneck
    X = torch.randn(5, 4, dtype=F64)
    assert torch.allclose(model(X), X @ model.end_to_end().T, atol=1e-13)
    W_target = torch.randn(6, 4, dtype=F64)
    U = equilibrium_matrix(model.A.detach(), model.gamma, model.delta)
    with torch.no_grad():
        model.B.copy_(W_target @ torch.linalg.inv(U))   # B = W(I − S)
    assert torch.allclose(model.end_to_end(), W_target, atol=1e-12)


def test_gradient_at_a_zero_is_exactly_zero_not_nan():
    model = delm(5, 3)
    with torch.no_grad():
        model.A.zero_()
    X = torch.randn(8, 5, dtype=F64)
    (model(X) ** 2).sum().backward()
    assert torch.equal(model.A.grad, torch.zeros_like(model.A))
    assert torch.isfinite(model.B.grad).all() and model.B.grad.abs().max() > 0
    G = torch.randn(3, 5, dtype=F64)
    assert torch.equal(delm_gradients(model.A.detach(), model.B.detach(), G, 0.8, 1e-6)[0],
                       torch.zeros(5, 5, dtype=F64))


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
    """With δ → 0, σ(cA) = σ(A) so ⟨∇_A L, A⟩ = 0: ‖A‖_F drifts only by the O(η) of a discrete step."""
    d1, d2 = _norm_drift(5e-4), _norm_drift(2.5e-4)
    assert d1 < 0.01, d1
    assert 1.6 < d1 / d2 < 2.6, f"drift {d1:.3e} at η, {d2:.3e} at η/2: ratio {d1 / d2:.2f}, expected ≈ 2"


@pytest.mark.parametrize("gamma", [0, 1, 1.5, -0.2, float("nan")])
def test_gamma_outside_the_unit_interval_is_rejected(gamma):
    with pytest.raises(ValueError, match="gamma must lie in"):
        DeepEquilibriumLinear(4, 2, gamma=gamma)


@pytest.mark.parametrize("delta", [0, -1e-3, float("inf")])
def test_nonpositive_delta_is_rejected(delta):
    with pytest.raises(ValueError, match="delta must be a positive"):
        DeepEquilibriumLinear(4, 2, delta=delta)


@pytest.mark.parametrize("Model", [DeepEquilibriumLinear, LinearModel, DeepLinearNetwork])
def test_wrong_shapes_are_rejected(Model):
    model = Model(4, 2)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4\); got \(3, 5\)"):
        model(torch.randn(3, 5))
    with pytest.raises(ValueError, match="expects input of shape"):
        model(torch.randn(4))
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        Model(0, 2)


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="solver must be 'cholesky'"):
        DeepEquilibriumLinear(4, 2, solver="lu")


def test_diverged_parameters_give_a_clear_error():
    model = DeepEquilibriumLinear(4, 2)
    with torch.no_grad():
        model.A[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        model(torch.randn(3, 4))


def test_explicit_peers_compute_their_end_to_end_matrix():
    x = torch.randn(6, 5, dtype=F64)
    deep = DeepLinearNetwork(5, 3, depth=3, width=2, dtype=F64)
    assert torch.allclose(deep(x), x @ deep.end_to_end().T)
    assert torch.linalg.matrix_rank(deep.end_to_end()) <= 2       # the width caps the rank
    W0 = delm(5, 3).end_to_end().detach()
    lin = LinearModel.from_matrix(W0)
    assert torch.equal(lin.end_to_end().detach(), W0)
    assert "depth=3, width=2" in repr(deep) and "gamma=0.8" in repr(delm())


def test_initialisation_is_reproducible_with_a_generator():
    a, b = delm(seed=4), delm(seed=4)
    assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B)
    assert math.isclose(a.A.var().item(), 1 / 6, rel_tol=0.6)


def test_tanh_deq_readout_shapes():
    model = TanhDEQ(5, 7, 3)
    assert model(torch.randn(2, 5)).shape == (2, 3)
    assert TanhDEQ(5, 7)(torch.randn(2, 5)).shape == (2, 7)
