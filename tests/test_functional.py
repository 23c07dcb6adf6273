"""deqlib.functional: each formula against autograd, finite differences or its defining property,
once, in float64."""

import math

import pytest
import torch
from torch.testing import assert_close

from deqlib import functional as F

F64 = torch.float64
GAMMA, DELTA = 0.8, 1e-6
pytestmark = pytest.mark.usefixtures("one_thread")


def draw(m, m_y, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, m, generator=g, dtype=dtype) / math.sqrt(m)
    B = torch.randn(m_y, m, generator=g, dtype=dtype) / math.sqrt(m)
    return A, B, g


def test_tanh_map_inverts_to_its_affine_argument():
    g = torch.Generator().manual_seed(0)
    z, inj = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    W_z = torch.randn(4, 4, generator=g, dtype=F64) / 4
    out = F.tanh_map(z, W_z, inj)
    assert out.shape == z.shape and out.abs().max() < 1
    assert_close(out.atanh(), torch.einsum("ij,bj->bi", W_z, z) + inj, rtol=1e-12, atol=1e-12)


def test_sigma_is_the_normalised_gram_matrix():
    A, _, _ = draw(5, 1)
    s = F.sigma(A, DELTA)
    C = torch.einsum("ki,kj->ij", A, A)  # AᵀA, entrywise
    ratio = s / C
    assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()), rtol=1e-12, atol=0)
    N = torch.linalg.matrix_norm(C)
    assert_close(torch.linalg.matrix_norm(s), N / (N + DELTA), rtol=1e-12, atol=0)
    assert_close(F.sigma(1e3 * A, DELTA), s, rtol=1e-6, atol=1e-9)  # scale-invariant up to δ
    assert_close(F.equilibrium_weight(A, GAMMA, DELTA), GAMMA * s, rtol=1e-15, atol=0)


def test_u_inverts_i_minus_s_and_w_is_b_times_u():
    A, B, _ = draw(6, 4)
    S = F.equilibrium_weight(A, GAMMA, DELTA)
    U = F.equilibrium_matrix(A, GAMMA, DELTA)
    eye = torch.eye(6, dtype=F64)
    assert_close((eye - S) @ U, eye, rtol=0, atol=1e-13)
    W = F.end_to_end(A, B, GAMMA, DELTA)
    assert_close(W @ (eye - S), B, rtol=0, atol=1e-13)


def test_the_equilibrium_map_iterates_to_u_phi():
    A, B, g = draw(6, 4)
    Phi = torch.randn(3, 6, generator=g, dtype=F64)
    S = F.equilibrium_weight(A, GAMMA, DELTA)
    z = torch.zeros_like(Phi)
    for _ in range(300):  # error ≤ γ^300 ‖z*‖
        z = F.delm_map(z, S, Phi)
    assert_close(z, Phi @ F.equilibrium_matrix(A, GAMMA, DELTA), rtol=1e-12, atol=1e-12)


def test_end_to_end_passes_gradcheck():
    A, B, _ = draw(4, 3)
    assert torch.autograd.gradcheck(
        lambda A, B: F.end_to_end(A, B, GAMMA, DELTA), (A.requires_grad_(), B.requires_grad_())
    )


@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
@pytest.mark.parametrize("m,m_y", [(3, 5), (6, 2)])
def test_gradient_formulas_match_autograd(loss, m, m_y):
    """∂L/∂A = A(K + Kᵀ), ∂L/∂B = GUᵀ against autograd through the Cholesky factorisation."""
    A, B, g = draw(m, m_y, seed=m)
    Phi = torch.randn(12, m, generator=g, dtype=F64)
    y = torch.randint(0, m_y, (12,), generator=g)
    A.requires_grad_(), B.requires_grad_()
    W = F.end_to_end(A, B, GAMMA, DELTA)
    out = Phi @ W.T
    if loss == "square":
        L = (out - torch.nn.functional.one_hot(y, m_y)).pow(2).sum()
    else:
        L = torch.nn.functional.cross_entropy(out, y, reduction="sum")
    G, gA, gB = torch.autograd.grad(L, (W, A, B))
    fA, fB = F.delm_gradients(A.detach(), B.detach(), G, GAMMA, DELTA)
    assert_close(fA, gA, rtol=1e-10, atol=1e-12)
    assert_close(fB, gB, rtol=1e-10, atol=1e-12)


def test_batched_gradients_equal_one_at_a_time():
    A, B, g = draw(4, 3)
    G = torch.randn(5, 2, 3, 4, generator=g, dtype=F64)
    bA, bB = F.delm_gradients(A, B, G, GAMMA, DELTA)
    assert bA.shape == (5, 2, 4, 4) and bB.shape == (5, 2, 3, 4)
    for i in range(5):
        for j in range(2):
            oA, oB = F.delm_gradients(A, B, G[i, j], GAMMA, DELTA)
            assert_close(bA[i, j], oA, rtol=1e-13, atol=1e-15)
            assert_close(bB[i, j], oB, rtol=1e-13, atol=1e-15)


def test_closed_form_model_passes_gradcheck_and_matches_autograd():
    A, B, g = draw(5, 7)
    Phi = torch.randn(9, 5, generator=g, dtype=F64)
    args = (Phi.requires_grad_(), A.requires_grad_(), B.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda Phi, A, B: F.deep_equilibrium_linear(Phi, A, B, GAMMA, DELTA), args
    )
    w = torch.randn(9, 7, generator=g, dtype=F64)
    closed = torch.autograd.grad((F.deep_equilibrium_linear(*args, GAMMA, DELTA) * w).sum(), args)
    auto = torch.autograd.grad((Phi @ F.end_to_end(A, B, GAMMA, DELTA).T * w).sum(), args)
    for name, c, a in zip(("Φ", "A", "B"), closed, auto):
        assert_close(c, a, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"∂/∂{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gradient_at_a_zero_is_exactly_zero_not_nan(dtype):
    """At A = 0 the 0/0 term is taken as 0; float32 used to underflow N(N + δ)² to 0 here."""
    _, B, g = draw(5, 3, dtype=dtype)
    A = torch.zeros(5, 5, dtype=dtype, requires_grad=True)
    B.requires_grad_()
    Phi = torch.randn(8, 5, generator=g, dtype=dtype)
    F.deep_equilibrium_linear(Phi, A, B, GAMMA, DELTA).pow(2).sum().backward()
    assert torch.equal(A.grad, torch.zeros_like(A)), f"∂L/∂A at A = 0: {A.grad}"
    assert torch.isfinite(B.grad).all() and B.grad.abs().max() > 0
    G = torch.randn(3, 5, generator=g, dtype=dtype)
    gA, _ = F.delm_gradients(A.detach(), B.detach(), G, GAMMA, DELTA)
    assert torch.equal(gA, torch.zeros_like(gA)), f"delm_gradients at A = 0: {gA}"


def test_float32_gradient_near_a_zero_is_finite_and_close_to_float64():
    A, B, g = draw(5, 3)
    A = 1e-12 * A  # N ≈ 1e-24: tiny, not 0
    G = torch.randn(3, 5, generator=g, dtype=F64)
    ref, _ = F.delm_gradients(A, B, G, GAMMA, DELTA)
    got, _ = F.delm_gradients(A.float(), B.float(), G.float(), GAMMA, DELTA)
    assert torch.isfinite(got).all(), got
    assert_close(got.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_unsupported_dtypes_are_refused_early(dtype):
    A, B, _ = draw(3, 2)
    with pytest.raises(TypeError, match=f"A has dtype {dtype}.*float32 or float64"):
        F.end_to_end(A.to(dtype), B.to(dtype), GAMMA, DELTA)


def test_mixed_dtypes_and_shapes_are_refused():
    A, B, _ = draw(3, 2)
    with pytest.raises(TypeError, match="B is torch.float32 .* but A is torch.float64"):
        F.end_to_end(A, B.float(), GAMMA, DELTA)
    with pytest.raises(
        ValueError, match=r"B must have shape \(m_y, m\) = \(m_y, 3\).*got \(2, 4\)"
    ):
        F.end_to_end(A, torch.zeros(2, 4, dtype=F64), GAMMA, DELTA)
    with pytest.raises(ValueError, match=r"A must be a square matrix.*got shape \(3, 2\)"):
        F.equilibrium_matrix(A[:, :2], GAMMA, DELTA)
    with pytest.raises(ValueError, match=r"G must have shape .*\(\.\.\., 2, 3\)"):
        F.delm_gradients(A, B, torch.zeros(4, 3, dtype=F64), GAMMA, DELTA)
    with pytest.raises(TypeError, match="the input is torch.float32 but the parameters are"):
        F.deep_equilibrium_linear(torch.zeros(2, 3), A, B, GAMMA, DELTA)
    with pytest.raises(ValueError, match=r"features must have shape \(batch, m\) = \(batch, 3\)"):
        F.deep_equilibrium_linear(torch.zeros(2, 4, dtype=F64), A, B, GAMMA, DELTA)


def test_constants_accept_numpy_scalars_and_refuse_bad_values():
    np = pytest.importorskip("numpy")
    A, B, _ = draw(3, 2)
    assert_close(
        F.end_to_end(A, B, np.float32(0.8), np.float64(1e-6)),
        F.end_to_end(A, B, float(np.float32(0.8)), 1e-6),
        rtol=0,
        atol=0,
    )
    for gamma in (0, 1, -0.5, float("nan")):
        with pytest.raises(ValueError, match=f"gamma must lie in \\(0, 1\\).*got gamma={gamma}"):
            F.equilibrium_matrix(A, gamma, DELTA)
    for delta in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="delta must be a positive finite number"):
            F.sigma(A, delta)
    with pytest.raises(TypeError, match=r"gamma must be a real number.*\(use \.item\(\) for"):
        F.equilibrium_matrix(A, torch.tensor(0.8), DELTA)
    with pytest.raises(ValueError, match="delta=1e-50 is 0 in float32"):
        F.end_to_end(A.float(), B.float(), GAMMA, 1e-50)


def test_nan_or_inf_input_and_diverged_parameters_give_clear_errors():
    A, B, g = draw(4, 2)
    Phi = torch.randn(6, 4, generator=g, dtype=F64)
    Phi[3, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"input holds NaN or Inf \(1 entries, the first in sample 3\)"
    ):
        F.deep_equilibrium_linear(Phi, A, B, GAMMA, DELTA)
    Phi[3, 1] = float("inf")
    with pytest.raises(ValueError, match="input holds NaN or Inf"):
        F.deep_equilibrium_linear(Phi, A, B, GAMMA, DELTA)
    Phi[3, 1] = 0.0
    for bad in (float("nan"), float("inf"), 1e200):
        A_bad = A.clone()
        A_bad[0, 0] = bad
        with pytest.raises(FloatingPointError, match="lower the learning rate"):
            F.deep_equilibrium_linear(Phi, A_bad, B, GAMMA, DELTA)
    B_bad = B.clone()
    B_bad[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="A or B hold NaN or Inf"):
        F.deep_equilibrium_linear(Phi, A, B_bad, GAMMA, DELTA)


def test_empty_batch_gives_an_empty_output_and_zero_gradients():
    A, B, _ = draw(4, 2)
    A.requires_grad_()
    out = F.deep_equilibrium_linear(torch.zeros(0, 4, dtype=F64), A, B, GAMMA, DELTA)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert torch.equal(A.grad, torch.zeros_like(A))


def test_closed_form_delm_works_under_torch_func_grad_and_jacrev():
    # torch.func used to refuse the closed form ("must override the setup_context staticmethod")
    A, B, g = draw(5, 3)
    Phi = torch.randn(4, 5, generator=g, dtype=F64)

    def loss(A, B, Phi):
        return F.deep_equilibrium_linear(Phi, A, B, GAMMA, DELTA).square().sum()

    gA, gB = torch.func.grad(loss, argnums=(0, 1))(A, B, Phi)
    A_, B_ = A.clone().requires_grad_(), B.clone().requires_grad_()
    rA, rB = torch.autograd.grad(loss(A_, B_, Phi), (A_, B_))
    assert_close(gA, rA, rtol=1e-12, atol=1e-12)
    assert_close(gB, rB, rtol=1e-12, atol=1e-12)
    H = torch.func.jacrev(torch.func.jacrev(loss, argnums=2), argnums=2)(A, B, Phi[:1])
    W = F.end_to_end(A, B, GAMMA, DELTA)         # loss = ‖φW ᵀ‖², Hessian in φ: 2WᵀW
    assert_close(H.reshape(5, 5), 2 * W.T @ W, rtol=1e-10, atol=1e-12)
