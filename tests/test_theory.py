"""deqlib.theory: the convergence theorem's inequalities on real runs, the trust-region
Newton relation against an independent solver, and the quantities they use."""

import math

import numpy as np
import pytest
import torch

from deqlib import theory as T

F64 = torch.float64


def instance(m, m_y, n, seed, loss="square"):
    g = torch.Generator().manual_seed(seed)
    Phi = torch.randn(m, n, generator=g, dtype=F64)
    if loss == "square":
        Y = torch.randn(m_y, n, generator=g, dtype=F64)
    else:  # labels drawn independently of Φ: overlapping classes, not separable for n ≫ m
        Y = torch.nn.functional.one_hot(torch.randint(0, m_y, (n,), generator=g), m_y).T.to(F64)
    A = torch.randn(m, m, generator=g, dtype=F64) / math.sqrt(m)
    B = torch.randn(m_y, m, generator=g, dtype=F64) / math.sqrt(m)
    return A, B, Phi, Y


# widths below and above the output dimension and the number of samples
SHAPES = [(3, 5, 40), (4, 2, 30), (8, 3, 6)]


@pytest.mark.parametrize("m,m_y,n", SHAPES)
@pytest.mark.parametrize("seed", range(2))
def test_linear_rate_bound_holds_at_every_checkpoint(m, m_y, n, seed):
    """L_t − ℒ* ≤ (L_0 − ℒ*) exp(−2μ ∫λ_min(P)) ≤ … exp(−2μ ∫σ_min(U)²) ≤ … exp(−2μt)."""
    A, B, Phi, Y = instance(m, m_y, n, seed)
    mu = T.pl_constant_square(Phi).item()
    eta = 2e-3 / torch.linalg.eigvalsh(Phi @ Phi.T)[-1].item()   # small against the curvature
    rec = T.gradient_flow(A, B, Phi, Y, eta=eta, steps=800, record_every=20)
    checked = 0
    for t, gap, b, bs, b1 in zip(rec.t, rec.gap, rec.bound, rec.bound_sigma, rec.bound_one):
        if gap < 1e-10:   # float64 floor of L − ℒ*
            continue
        assert gap <= b * (1 + 1e-12), f"t={t:.4f}: L − ℒ* = {gap:.6e} above the bound {b:.6e}"
        assert b <= bs * (1 + 1e-12) <= b1 * (1 + 1e-12) + 1e-300
        checked += 1
    assert checked >= 5
    assert rec.gap[-1] < 0.5 * rec.gap[0]
    assert min(rec.lam_min_P) >= 1 - 1e-12 and min(rec.sigma_min_U_sq) >= 1 - 1e-12


def test_delm_decays_at_least_as_fast_as_the_linear_model_here():
    """An observation on this instance (P_t ⪰ I acts like a larger step), not a theorem."""
    A, B, Phi, Y = instance(3, 5, 40, 0)
    rec = T.gradient_flow(A, B, Phi, Y, eta=1e-4, steps=400, record_every=100)
    _, linear = T.linear_gradient_flow(T.end_to_end(A, B, 0.8, 1e-6), Phi, Y, eta=1e-4, steps=400,
                                       record_every=100)
    for gap, lin in zip(rec.gap[1:], linear[1:]):
        assert gap <= lin - rec.optimum


@pytest.mark.parametrize("seed", range(4))
def test_preconditioner_is_jjt_and_dominates_identity(seed):
    A, B, _, _ = instance(3, 4, 5, seed)
    JA, JB = torch.func.jacrev(T.end_to_end, argnums=(0, 1))(A, B, 0.8, 1e-6)
    J = torch.cat([JA.reshape(12, -1), JB.reshape(12, -1)], dim=1)
    P = T.preconditioner(A, B, 0.8, 1e-6)
    assert torch.allclose(P, J @ J.T, atol=1e-12)
    U = T.equilibrium_matrix(A, 0.8, 1e-6)
    lower = torch.kron(torch.eye(4, dtype=F64), U.T @ U)
    assert torch.linalg.eigvalsh(P - lower)[0] >= -1e-12          # P ⪰ I ⊗ UᵀU
    assert torch.linalg.eigvalsh(P)[0] >= 1 - 1e-12               # ⪰ I


def test_induced_dynamics_of_w_is_preconditioned_gradient_flow():
    A, B, Phi, Y = instance(3, 5, 20, 1)
    W = T.end_to_end(A, B, 0.8, 1e-6)
    G = T.shallow_gradient(W, Phi, Y)
    gA, gB = T.delm_gradients(A, B, G, 0.8, 1e-6)
    predicted = -(T.preconditioner(A, B, 0.8, 1e-6) @ G.reshape(-1))
    errors = []
    for eta in (1e-5, 5e-6):
        moved = (T.end_to_end(A - eta * gA, B - eta * gB, 0.8, 1e-6) - W).reshape(-1) / eta
        errors.append(((moved - predicted).norm() / predicted.norm()).item())
    assert errors[0] < 1e-2 and 1.6 < errors[0] / errors[1] < 2.4, errors   # O(η): a derivative


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
@pytest.mark.parametrize("seed", range(3))
def test_model_step_solves_the_trust_region_subproblem(loss, seed):
    A, B, Phi, Y = instance(3, 4, 30, seed, loss)
    check = T.trust_region_check(A, B, Phi, Y, loss=loss)
    assert check.q_min_eig > 0, "Q must be positive definite"
    assert check.kkt_residual < 1e-10
    assert abs(check.multiplier - 1) < 1e-8, check.multiplier
    assert check.relative_difference < 1e-8, check.relative_difference


def test_trust_region_solver_agrees_with_scipy_trust_constr():
    from scipy.optimize import NonlinearConstraint, minimize

    rng = np.random.default_rng(0)
    for _ in range(3):
        d = 6
        H = rng.standard_normal((d, d)); H = H @ H.T
        Q = rng.standard_normal((d, d)); Q = Q @ Q.T + d * np.eye(d)
        g = rng.standard_normal(d)
        radius = 0.1
        v, lam = T.solve_trust_region(torch.tensor(g), torch.tensor(H), torch.tensor(Q), radius)
        ball = NonlinearConstraint(lambda v: v @ Q @ v, -np.inf, radius**2, jac=lambda v: 2 * Q @ v,
                                   hess=lambda v, lam: 2 * lam[0] * Q)
        ref = minimize(lambda v: g @ v + 0.5 * v @ H @ v, np.zeros(d), jac=lambda v: g + H @ v,
                       hess=lambda v: H, method="trust-constr", constraints=[ball],
                       options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000})
        assert np.linalg.norm(v.numpy() - ref.x) / np.linalg.norm(ref.x) < 1e-6
        assert lam > 0 and abs(float(v @ torch.tensor(Q) @ v) - radius**2) < 1e-12


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
def test_closed_form_hessian_matches_autograd(loss):
    _, B, Phi, Y = instance(3, 4, 9, 2, loss)
    H = T.shallow_hessian(B, Phi, Y, loss)
    ref = torch.autograd.functional.hessian(lambda w: T.shallow_loss(w.reshape(B.shape), Phi, Y, loss), B.reshape(-1))
    assert torch.allclose(H, ref, atol=1e-12)
    G = T.shallow_gradient(B, Phi, Y, loss)
    ref_G = torch.autograd.functional.jacobian(lambda w: T.shallow_loss(w, Phi, Y, loss), B)
    assert torch.allclose(G, ref_G, atol=1e-12)


def test_optimum_and_pl_inequality_of_the_square_loss():
    _, _, Phi, Y = instance(4, 3, 12, 0)
    opt = T.optimum_square_loss(Phi, Y)
    W_star = Y @ torch.linalg.pinv(Phi)
    assert torch.isclose(opt, T.shallow_loss(W_star, Phi, Y), rtol=1e-10)
    mu = T.pl_constant_square(Phi)
    for seed in range(5):
        W = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
        grad_sq = T.shallow_gradient(W, Phi, Y).pow(2).sum()
        assert grad_sq >= 2 * mu * (T.shallow_loss(W, Phi, Y) - opt) * (1 - 1e-10)


def test_cross_entropy_optimum_on_overlapping_classes_and_error_on_separable_data():
    _, _, Phi, Y = instance(3, 3, 60, 0, "cross_entropy")
    opt = T.optimum_cross_entropy(Phi, Y)
    assert 0 < opt < T.shallow_loss(torch.zeros(3, 3, dtype=F64), Phi, Y, "cross_entropy")
    Phi_sep = torch.tensor([[1.0, 2.0, -1.0, -2.0], [1.0, 1.0, 1.0, 1.0]], dtype=F64)
    Y_sep = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="separable"):
        T.optimum_cross_entropy(Phi_sep, Y_sep)


def test_cross_entropy_flow_stays_below_its_bound_with_a_measured_pl_constant():
    """On non-separable data: measure μ = min_t ‖∇ℒ‖²/(2(ℒ − ℒ*)) along the run; with that
    PL constant the theorem's bound must hold at every step."""
    A, B, Phi, Y = instance(3, 3, 60, 1, "cross_entropy")
    probe = T.gradient_flow(A, B, Phi, Y, loss="cross_entropy", mu=1.0, eta=2e-3, steps=300, record_every=1)
    mu = min(g / (2 * gap) for g, gap in zip(probe.grad_W_sq, probe.gap) if gap > 1e-10)
    assert mu > 0
    rec = T.gradient_flow(A, B, Phi, Y, loss="cross_entropy", mu=mu, optimum=probe.optimum, eta=2e-3,
                          steps=300, record_every=1)
    assert rec.gap[-1] < 0.5 * rec.gap[0]
    assert all(g <= b * (1 + 1e-12) for g, b in zip(rec.gap, rec.bound) if g > 1e-10)


def test_bad_input_is_rejected():
    A, B, Phi, Y = instance(3, 2, 10, 0)
    with pytest.raises(ValueError, match="float64"):
        T.gradient_flow(A.float(), B.float(), Phi.float(), Y.float())
    with pytest.raises(ValueError, match="pass mu"):
        T.gradient_flow(A, B, Phi, Y, loss="cross_entropy")
    with pytest.raises(ValueError, match="loss must be one of"):
        T.shallow_loss(B, Phi, Y, loss="hinge")
    with pytest.raises(ValueError, match="shapes do not fit"):
        T.shallow_loss(B.T, Phi, Y)
    with pytest.raises(ValueError, match="gamma must lie in"):
        T.preconditioner(A, B, 1.0, 1e-6)
    with pytest.raises(ValueError, match="eps_fraction"):
        T.trust_region_check(A, B, Phi, Y, eps_fraction=1.5)
