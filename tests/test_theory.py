"""deqlib.theory: the convergence theorem's inequalities on real runs, the trust-region
Newton relation against an independent solver, and the quantities they use."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from deqlib import theory as T

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


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
    """L_t − ℒ* ≤ (L_0 − ℒ*) exp(−2μ ∫λ_min(P)) ≤ … exp(−2μ ∫s_min(U)²) ≤ … exp(−2μt)."""
    A, B, Phi, Y = instance(m, m_y, n, seed)
    eta = 2e-3 / torch.linalg.eigvalsh(Phi @ Phi.T)[-1].item()  # small against the curvature
    rec = T.gradient_flow(A, B, Phi, Y, eta=eta, steps=800, record_every=20)
    checked = 0
    for t, gap, b, bs, b1 in zip(rec.t, rec.gap, rec.bound, rec.bound_s_min, rec.bound_one):
        if gap < 1e-10:  # float64 floor of L − ℒ*
            continue
        assert gap <= b * (1 + 1e-12), f"t={t:.4f}: L − ℒ* = {gap:.6e} above the bound {b:.6e}"
        assert b <= bs * (1 + 1e-12) <= b1 * (1 + 1e-12) + 1e-300, (
            f"t={t:.4f}: bounds out of order: λ_min(P) {b:.6e}, s_min(U)² {bs:.6e}, 1 {b1:.6e}"
        )
        checked += 1
    assert checked >= 5, f"only {checked} checkpoints above the float64 floor"
    assert rec.gap[-1] < 0.5 * rec.gap[0], f"L − ℒ* from {rec.gap[0]:.3e} to {rec.gap[-1]:.3e}"
    lam, smin = min(rec.lam_min_P), min(rec.s_min_U_sq)
    assert lam >= 1 - 1e-12 and smin >= 1 - 1e-12, (
        f"min λ_min(P) {lam:.6f}, min s_min(U)² {smin:.6f}"
    )


def test_delm_decays_at_least_as_fast_as_the_linear_model_here():
    """An observation on this instance (P_t ⪰ I acts like a larger step), not a theorem."""
    A, B, Phi, Y = instance(3, 5, 40, 0)
    rec = T.gradient_flow(A, B, Phi, Y, eta=1e-4, steps=400, record_every=100)
    _, linear = T.linear_gradient_flow(
        T.end_to_end(A, B, 0.8, 1e-6), Phi, Y, eta=1e-4, steps=400, record_every=100
    )
    for gap, lin in zip(rec.gap[1:], linear[1:]):
        assert gap <= lin - rec.optimum, f"DELM gap {gap:.6e} > linear gap {lin - rec.optimum:.6e}"


@pytest.mark.parametrize("seed", range(4))
def test_preconditioner_is_jjt_and_dominates_identity(seed):
    A, B, _, _ = instance(3, 4, 5, seed)
    JA, JB = torch.func.jacrev(T.end_to_end, argnums=(0, 1))(A, B, 0.8, 1e-6)
    J = torch.cat([JA.reshape(12, -1), JB.reshape(12, -1)], dim=1)  # row-major vec
    assert_close(T.jacobian(A, B, 0.8, 1e-6), J, rtol=1e-10, atol=1e-12)
    P = T.preconditioner(A, B, 0.8, 1e-6)
    assert_close(P, J @ J.T, rtol=1e-10, atol=1e-12)
    U = T.equilibrium_matrix(A, 0.8, 1e-6)
    b_channel = torch.kron(torch.eye(4, dtype=F64), U.T @ U)  # I_{m_y} ⊗ UᵀU
    assert_close(JB.reshape(12, 12) @ JB.reshape(12, 12).T, b_channel, rtol=1e-12, atol=1e-12)
    gap = torch.linalg.eigvalsh(P - b_channel)[0].item()
    assert gap >= -1e-12, f"λ_min(P − I ⊗ UᵀU) = {gap:.3e} < 0"
    lam = torch.linalg.eigvalsh(P)[0].item()
    assert lam >= 1 - 1e-12, f"λ_min(P) = {lam:.6f} < 1"


def lam_min_P_minus_s_min_U_sq(m, m_y, seed):
    A, B, _, _ = instance(m, m_y, 1, seed)
    lam = torch.linalg.eigvalsh(T.preconditioner(A, B, 0.8, 1e-6))[0].item()
    return lam - T.s_min_U_squared(A, 0.8, 1e-6).item(), A, B


@pytest.mark.parametrize("m,m_y", [(3, 5), (2, 6), (1, 3), (4, 7)])
def test_lambda_min_of_p_is_s_min_of_u_squared_when_m_below_m_y(m, m_y):
    """m < m_y: Bᵀv = 0 for some v ≠ 0, and V = v u_minᵀ is an eigenvector of P with
    eigenvalue s_min(U)² (the A-channel vanishes on it), so λ_min(P) = s_min(U)² exactly."""
    for seed in range(10):
        diff, A, B = lam_min_P_minus_s_min_U_sq(m, m_y, seed)
        assert abs(diff) <= 1e-10, f"seed {seed}: λ_min(P) − s_min(U)² = {diff:.3e}"
        # the proof's eigenvector, checked directly
        v = torch.linalg.svd(B.T, full_matrices=True).Vh[-1]  # Bᵀv = 0
        evals, evecs = torch.linalg.eigh(T.equilibrium_matrix(A, 0.8, 1e-6))
        V = torch.outer(v, evecs[:, 0]).reshape(-1)
        PV = T.preconditioner(A, B, 0.8, 1e-6) @ V
        assert_close(PV, evals[0] ** 2 * V, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m,m_y", [(5, 3), (4, 4), (6, 2)])
def test_the_a_channel_lifts_lambda_min_when_m_is_at_least_m_y(m, m_y):
    """The identity needs m < m_y: here B has full row rank and λ_min(P) > s_min(U)²
    (measured from 4.7e-5 to 0.46 over these draws)."""
    diffs = [lam_min_P_minus_s_min_U_sq(m, m_y, seed)[0] for seed in range(10)]
    assert min(diffs) > 1e-6, (
        f"λ_min(P) − s_min(U)² over 10 draws: {min(diffs):.3e} … {max(diffs):.3e}"
    )


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
    assert errors[0] < 1e-2 and 1.6 < errors[0] / errors[1] < 2.4, errors  # O(η): a derivative


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
@pytest.mark.parametrize("seed", range(3))
def test_model_step_solves_the_trust_region_subproblem(loss, seed):
    A, B, Phi, Y = instance(3, 4, 30, seed, loss)
    check = T.trust_region_check(A, B, Phi, Y, loss=loss)
    assert check.q_min_eig > 0, f"Q must be positive definite; λ_min(Q) = {check.q_min_eig:.3e}"
    assert check.kkt_residual < 1e-10, f"KKT residual {check.kkt_residual:.3e}"
    assert abs(check.multiplier - 1) < 1e-8, check.multiplier
    assert check.relative_difference < 1e-8, check.relative_difference


def test_trust_region_solver_agrees_with_scipy_on_the_secular_equation():
    """An independent route: v(λ) = −(H + λQ)⁻¹g in the original coordinates, with λ found by
    scipy's brentq on vᵀQv = Δ² (no Cholesky transform, no eigendecomposition).
    (scipy's trust-constr took 7 s per problem here and agreed only to 6e-7.)"""
    from scipy.optimize import brentq

    rng = np.random.default_rng(0)
    for _ in range(3):
        d = 6
        H = rng.standard_normal((d, d))
        H = H @ H.T
        Q = rng.standard_normal((d, d))
        Q = Q @ Q.T + d * np.eye(d)
        g = rng.standard_normal(d)
        radius = 0.1
        v, lam = T.solve_trust_region(torch.tensor(g), torch.tensor(H), torch.tensor(Q), radius)

        def step(lam, H=H, Q=Q, g=g):
            return -np.linalg.solve(H + lam * Q, g)

        ref_lam = brentq(
            lambda lam, Q=Q, radius=radius: np.sqrt(step(lam) @ Q @ step(lam)) - radius,
            1e-12,
            1e6,
            xtol=1e-15,
            rtol=1e-15,
        )
        ref = step(ref_lam)
        rel = np.linalg.norm(v.numpy() - ref) / np.linalg.norm(ref)
        assert rel < 1e-10, f"ours vs scipy brentq: relative difference {rel:.3e}"
        assert abs(lam - ref_lam) < 1e-9 * ref_lam, f"multiplier {lam:.12e} vs {ref_lam:.12e}"
        on_boundary = abs(float(v @ torch.tensor(Q) @ v) - radius**2)
        assert lam > 0 and on_boundary < 1e-12, f"λ = {lam:.3e}, |‖v‖_Q² − Δ²| = {on_boundary:.3e}"


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
def test_closed_form_hessian_matches_autograd(loss):
    _, B, Phi, Y = instance(3, 4, 9, 2, loss)
    H = T.shallow_hessian(B, Phi, Y, loss)
    ref = torch.autograd.functional.hessian(
        lambda w: T.shallow_loss(w.reshape(B.shape), Phi, Y, loss), B.reshape(-1)
    )
    assert_close(H, ref, rtol=1e-12, atol=1e-12)
    G = T.shallow_gradient(B, Phi, Y, loss)
    ref_G = torch.autograd.functional.jacobian(lambda w: T.shallow_loss(w, Phi, Y, loss), B)
    assert_close(G, ref_G, rtol=1e-12, atol=1e-12)


def test_optimum_and_pl_inequality_of_the_square_loss():
    _, _, Phi, Y = instance(4, 3, 12, 0)
    opt = T.optimum_square_loss(Phi, Y)
    W_star = Y @ torch.linalg.pinv(Phi)
    assert_close(opt, T.shallow_loss(W_star, Phi, Y), rtol=1e-10, atol=0)
    mu = T.pl_constant_square(Phi)
    for seed in range(5):
        W = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
        grad_sq = T.shallow_gradient(W, Phi, Y).pow(2).sum()
        rhs = 2 * mu * (T.shallow_loss(W, Phi, Y) - opt)
        assert grad_sq >= rhs * (1 - 1e-10), f"‖∇ℒ‖² = {grad_sq:.6e} < 2μ(ℒ − ℒ*) = {rhs:.6e}"


def test_cross_entropy_optimum_on_overlapping_classes_and_error_on_separable_data():
    _, _, Phi, Y = instance(3, 3, 60, 0, "cross_entropy")
    opt = T.optimum_cross_entropy(Phi, Y)
    at_zero = T.shallow_loss(torch.zeros(3, 3, dtype=F64), Phi, Y, "cross_entropy")
    assert 0 < opt < at_zero, f"ℒ* = {opt:.6f}, ℒ(0) = {at_zero:.6f}"
    G = T.shallow_gradient(torch.zeros(3, 3, dtype=F64), Phi, Y, "cross_entropy")
    assert G.norm() > 1e-3, "the start is not already optimal"
    Phi_sep = torch.tensor([[1.0, 2.0, -1.0, -2.0], [1.0, 1.0, 1.0, 1.0]], dtype=F64)
    Y_sep = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="separable"):
        T.optimum_cross_entropy(Phi_sep, Y_sep)


def test_cross_entropy_flow_stays_below_its_bound_with_a_measured_pl_constant():
    """On non-separable data: measure μ = min_t ‖∇ℒ‖²/(2(ℒ − ℒ*)) along the run; with that
    PL constant the theorem's bound must hold at every step."""
    A, B, Phi, Y = instance(3, 3, 60, 1, "cross_entropy")
    probe = T.gradient_flow(
        A, B, Phi, Y, loss="cross_entropy", mu=1.0, eta=2e-3, steps=300, record_every=1
    )
    mu = min(g / (2 * gap) for g, gap in zip(probe.grad_W_sq, probe.gap) if gap > 1e-10)
    assert mu > 0, f"measured PL constant {mu:.3e}"
    rec = T.gradient_flow(
        A,
        B,
        Phi,
        Y,
        loss="cross_entropy",
        mu=mu,
        optimum=probe.optimum,
        eta=2e-3,
        steps=300,
        record_every=1,
    )
    assert rec.gap[-1] < 0.5 * rec.gap[0], f"L − ℒ* from {rec.gap[0]:.3e} to {rec.gap[-1]:.3e}"
    over = [
        (t, g, b)
        for t, g, b in zip(rec.t, rec.gap, rec.bound)
        if g > 1e-10 and g > b * (1 + 1e-12)
    ]
    assert not over, f"above the bound at (t, L − ℒ*, bound) = {over[:3]}"


def test_bad_input_is_rejected():
    A, B, Phi, Y = instance(3, 2, 10, 0)
    with pytest.raises(ValueError, match="float64"):
        T.gradient_flow(A.float(), B.float(), Phi.float(), Y.float())
    with pytest.raises(ValueError, match="pass mu"):
        T.gradient_flow(A, B, Phi, Y, loss="cross_entropy")
    with pytest.raises(ValueError, match="loss must be one of"):
        T.shallow_loss(B, Phi, Y, loss="hinge")
    with pytest.raises(ValueError, match=r"shapes do not fit: W must be \(m_y, m\) = \(2, 3\)"):
        T.shallow_loss(B.T, Phi, Y)
    with pytest.raises(ValueError, match="gamma must lie in"):
        T.preconditioner(A, B, 1.0, 1e-6)
    with pytest.raises(ValueError, match="eps_fraction"):
        T.trust_region_check(A, B, Phi, Y, eps_fraction=1.5)


@pytest.mark.parametrize("run", [T.gradient_flow, T.delm_gradient_descent])
def test_negative_or_zero_steps_and_mismatched_data_are_rejected(run):
    A, B, Phi, Y = instance(3, 2, 10, 0)
    for eta in (-1e-3, 0.0, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=f"eta must be a positive finite number .*step of gradient descent.*"
                              f"eta={eta}"
        ):
            run(A, B, Phi, Y, eta=eta, steps=1)
    with pytest.raises(TypeError, match=r"steps must be an integer; got steps=1.0 .*write 1"):
        run(A, B, Phi, Y, steps=1.0)            # was a ValueError
    with pytest.raises(TypeError, match=r"eta must be a positive finite number .* of type str"):
        run(A, B, Phi, Y, eta="0.1", steps=1)
    run(A, B, Phi, Y, eta=np.float32(1e-3), steps=np.int64(2))     # numpy scalars accepted
    with pytest.raises(
        ValueError, match="record_every must be an integer >= 1; got record_every=0"
    ):
        run(A, B, Phi, Y, steps=1, record_every=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 0; got steps=-1"):
        run(A, B, Phi, Y, steps=-1)
    with pytest.raises(
        ValueError, match=r"one column per sample each.*rows as samples\? pass the transposes"
    ):
        run(A, B, Phi, Y.T, steps=1)
    with pytest.raises(ValueError, match=r"Phi must have m = 3 rows.*pass Phi = features.T"):
        run(A, B, Phi[:2], Y, steps=1)
    with pytest.raises(ValueError, match=r"Y must have m_y = 2 rows"):
        run(A, B, Phi, torch.cat([Y, Y]), steps=1)
    with pytest.raises(ValueError, match=r"B must have shape \(m_y, m\)"):
        run(A, B[:, :2], Phi, Y, steps=1)


def test_linear_gradient_flow_rejects_a_negative_step():
    _, B, Phi, Y = instance(3, 2, 10, 0)
    with pytest.raises(ValueError, match="a negative one climbs the loss"):
        T.linear_gradient_flow(B, Phi, Y, eta=-1e-3, steps=1)


@pytest.mark.parametrize("radius", [-0.1, 0.0, float("nan"), float("inf")])
def test_trust_region_solver_rejects_a_radius_that_is_not_positive(radius):
    """A negative radius used to loop forever in the bisection."""
    g, H, Q = torch.ones(3, dtype=F64), torch.eye(3, dtype=F64), torch.eye(3, dtype=F64)
    with pytest.raises(
        ValueError, match=f"radius must be a positive finite number.*radius={radius}"
    ):
        T.solve_trust_region(g, H, Q, radius)


def test_trust_region_solver_rejects_bad_shapes_and_an_indefinite_norm():
    g, H, Q = torch.ones(3, dtype=F64), torch.eye(3, dtype=F64), torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match=r"H and Q must be \(d, d\) = \(3, 3\)"):
        T.solve_trust_region(g, H[:2, :2], Q, 1.0)
    with pytest.raises(ValueError, match="Q must be symmetric positive definite"):
        T.solve_trust_region(g, H, -Q, 1.0)


def test_a_step_above_the_stability_limit_is_refused_or_warned_never_silent():
    g = torch.Generator().manual_seed(0)
    Phi = torch.randn(3, 20, generator=g, dtype=torch.float64)
    Y = torch.randn(2, 20, generator=g, dtype=torch.float64)
    A0 = torch.randn(3, 3, generator=g, dtype=torch.float64) / 3
    B0 = torch.randn(2, 3, generator=g, dtype=torch.float64) / 3
    # eta=10 went from loss 112 to 1.5e138 with the bound "violated" and no word
    with pytest.warns(RuntimeWarning, match="loss rose .* eta=1: .* smaller eta"), \
            pytest.warns(RuntimeWarning, match="eta=1 is above .* stability limit"):
        T.gradient_flow(A0, B0, Phi, Y, eta=1.0, steps=3)
    with pytest.raises((FloatingPointError, ValueError), match="eta=10|learning rate"):
        with pytest.warns(RuntimeWarning, match="eta=10 is above .* stability limit"):
            T.gradient_flow(A0, B0, Phi, Y, eta=10.0, steps=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.gradient_flow(A0, B0, Phi, Y, eta=1e-3, steps=50)   # a small step: no warning


def test_theory_quantities_refuse_non_finite_and_zero_data():
    g, H, Q = torch.tensor([float("inf"), 1.0, 1.0]), torch.eye(3), torch.eye(3)
    with pytest.raises(ValueError, match="g holds 1 NaN or Inf"):
        T.solve_trust_region(g, H, Q, 1.0)
    with pytest.raises(ValueError, match="no PL constant"):
        T.pl_constant_square(torch.zeros(3, 5, dtype=torch.float64))
    Phi = torch.randn(3, 5, dtype=torch.float64)
    Phi[0, 0] = float("nan")
    with pytest.raises(ValueError, match="Phi holds 1 NaN"):
        T.pl_constant_square(Phi)
    with pytest.raises(ValueError, match="Phi holds 1 NaN"):
        T.optimum_square_loss(Phi, torch.zeros(2, 5, dtype=torch.float64))


# ----------------------------------------------------------------------------- the GD driver


def _hand_delm(A, B, Phi, Y, eta, steps, loss):
    """The loop chapter 9 and the old theory functions wrote out by hand."""
    losses = []
    for k in range(steps + 1):
        W = T.end_to_end(A, B, 0.8, 1e-6)
        losses.append(T.shallow_loss(W, Phi, Y, loss).item())
        if k < steps:
            gA, gB = T.delm_gradients(A, B, T.shallow_gradient(W, Phi, Y, loss), 0.8, 1e-6)
            A, B = A - eta * gA, B - eta * gB
    return A, B, losses


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
def test_the_driver_takes_the_hand_written_steps(loss):
    A, B, Phi, Y = instance(4, 3, 12, 1)
    if loss == "cross_entropy":
        Y = torch.nn.functional.one_hot(Y.argmax(0), 3).T.double()
    A_ref, B_ref, ref = _hand_delm(A, B, Phi, Y, 1e-3, 30, loss)
    run = T.gradient_descent((A, B), Phi, Y, eta=1e-3, steps=30, loss=loss, record_every=7)
    assert run.step == [0, 7, 14, 21, 28, 30]
    assert run.loss == [ref[k] for k in run.step]          # bit for bit: the same operations
    assert torch.equal(run.params[0], A_ref) and torch.equal(run.params[1], B_ref)
    assert torch.equal(run.W, T.end_to_end(A_ref, B_ref, 0.8, 1e-6))
    W = T.end_to_end(A, B, 0.8, 1e-6)
    lin = T.gradient_descent(W, Phi, Y, eta=1e-3, steps=5, loss=loss)
    for _ in range(5):
        W = W - 1e-3 * T.shallow_gradient(W, Phi, Y, loss)
    assert torch.equal(lin.W, W) and lin.params == (lin.W,)


def test_the_driver_records_what_it_is_asked_every_k_steps():
    A, B, Phi, Y = instance(3, 2, 10, 0)
    seen = []

    def record(s):
        seen.append(s.k)
        assert torch.equal(s.W, T.end_to_end(*s.params, 0.8, 1e-6))
        return {"P_min": torch.linalg.eigvalsh(T.preconditioner(*s.params, 0.8, 1e-6))[0].item(),
                "gA": s.grads[0].norm().item()}

    run = T.gradient_descent((A, B), Phi, Y, eta=1e-3, steps=10, record_every=4, record=record)
    assert seen == run.step == [0, 4, 8, 10]
    assert run.t == [0.0, 4e-3, 8e-3, 1e-2]
    assert sorted(run.records) == ["P_min", "gA"] and len(run.records["P_min"]) == 4
    assert min(run.records["P_min"]) >= 1 - 1e-12                # P ⪰ I
    with pytest.raises(TypeError, match="record must be callable"):
        T.gradient_descent((A, B), Phi, Y, eta=1e-3, steps=1, record=3)
    with pytest.raises(ValueError, match="start must be \\(A0, B0\\)"):
        T.gradient_descent((A, B, A), Phi, Y, eta=1e-3, steps=1)


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
def test_the_driver_warns_above_the_stability_limit_only(loss):
    _, B, Phi, Y = instance(3, 2, 10, 0)
    if loss == "cross_entropy":
        Y = torch.nn.functional.one_hot(Y.argmax(0), 2).T.double()
    W0 = torch.zeros_like(B)
    # the linear model's limit is exact: 2 / λ_max(∇²ℒ); for the square loss 1 / λ_max(ΦΦᵀ)
    lam = torch.linalg.eigvalsh(Phi @ Phi.T)[-1].item()
    if loss == "square":
        limit = 1 / lam
    else:     # at W = 0 softmax is uniform: ∇²ℒ = (I/2 − 11ᵀ/4) ⊗ ΦΦᵀ, λ_max = λ/2
        limit = 4 / lam
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.gradient_descent(W0, Phi, Y, eta=0.9 * limit, steps=2, loss=loss)
    with pytest.warns(RuntimeWarning, match="above gradient descent's stability limit, about "
                                            f"{limit:.4g}"):
        T.gradient_descent(W0, Phi, Y, eta=1.1 * limit, steps=1, loss=loss)


def test_the_driver_warns_when_the_loss_rises_and_raises_when_it_blows_up():
    A, B, Phi, Y = instance(3, 2, 10, 0)
    with pytest.warns(RuntimeWarning) as caught:
        run = T.gradient_descent((A, B), Phi, Y, eta=0.05, steps=3)
    assert any("loss rose" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert all(w.filename == __file__ for w in caught)            # at the caller's line
    assert max(run.loss) > run.loss[0]
    # the driver's own message, naming eta, whether the loss or the DELM's factorisation of
    # I − γσ(A) breaks first (hostile review, H-flow-eta-big)
    with pytest.raises(FloatingPointError, match=r"eta=1000 broke down at step \d+.* smaller eta"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            T.gradient_descent((A, B), Phi, Y, eta=1e3, steps=100)


def test_trust_region_hard_case_is_solved_not_nan():
    # g = 0 and H indefinite: the bisection used to return a NaN minimiser
    g = torch.zeros(3, dtype=F64)
    H = torch.diag(torch.tensor([-1.0, 1.0, 2.0], dtype=F64))
    Q = torch.eye(3, dtype=F64)
    v, lam = T.solve_trust_region(g, H, Q, 0.5)
    assert lam == 1.0 and torch.isfinite(v).all()
    assert_close(v.abs(), torch.tensor([0.5, 0.0, 0.0], dtype=F64))   # ±radius·e₁
    # g along the other eigenvectors only, with a Q that is not I: the KKT conditions hold
    g = torch.tensor([0.0, 0.3, -0.2], dtype=F64)
    Q = torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=F64))
    v, lam = T.solve_trust_region(g, H, Q, 1.0)
    assert torch.sqrt(v @ Q @ v).item() == pytest.approx(1.0, rel=1e-12)        # on the boundary
    assert_close((H + lam * Q) @ v, -g, rtol=0, atol=1e-12)                        # stationary
    assert torch.linalg.eigvalsh(H + lam * Q)[0] >= -1e-12                          # PSD
    value = g @ v + 0.5 * v @ H @ v
    for seed in range(20):                  # no feasible point does better
        u = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
        u = u / torch.sqrt(u @ Q @ u)
        assert value <= g @ u + 0.5 * u @ H @ u + 1e-12
