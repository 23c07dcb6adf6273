"""deqlib.layers: TanhDEQ, ConvDEQ and the pinned reference problem."""

import copy

import pytest
import torch
import torch.nn.functional as nnf
from torch.testing import assert_close

import deqlib
from deqlib import Anderson, ConvDEQ, Picard, SolverStats, TanhDEQ
from deqlib.layers import ReferenceProblem, reference_tanh_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def digits_subset(n=256, seed=0):
    data = deqlib.data.load("digits")
    idx = torch.randperm(len(data.X_train), generator=torch.Generator().manual_seed(seed))[:n]
    return data.X_train[idx], data.y_train[idx], data.image_shape


def tiny_conv(backward="implicit", **kwargs):
    """A float64 ConvDEQ on 1 × 4 × 4 images with 2 channels: small enough for gradcheck."""
    options = dict(
        channels=2,
        pool=2,
        solver=Picard(tol=1e-13, max_iter=300),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        backward=backward,
    )
    options.update(kwargs)
    model = ConvDEQ((4, 4), 3, **options)
    with torch.no_grad():  # a K large enough that the bound is active and the map matters
        model.K.mul_(5)
    return model


def tiny_images(batch=2):
    return torch.rand(batch, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ----------------------------------------------------------------------------- TanhDEQ


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_deq_trains_in_both_dtypes(dtype):
    torch.manual_seed(0)
    model = TanhDEQ(
        6,
        8,
        2,
        dtype=dtype,
        solver=Picard(tol=1e-5 if dtype == torch.float32 else 1e-10),
        generator=torch.Generator().manual_seed(0),
    )
    x, y = torch.randn(16, 6, dtype=dtype), torch.randn(16, 2, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        out, info = model(x, return_info=True)
        loss = (out - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    assert info.forward.z.dtype == dtype and info.backward.converged


def test_tanh_deq_keeps_w_z_within_its_bound():
    model = TanhDEQ(3, 10, max_norm=0.7)
    with torch.no_grad():
        model.W_z.mul_(50)
    norm = torch.linalg.matrix_norm(model.effective_W_z(), ord=2).item()
    assert norm <= 0.7 + 1e-5, f"‖W_z‖₂ = {norm:.6f} > 0.7"
    # the rescaling, not any matrix within the bound (zeros would pass the line above)
    raw = model.W_z.detach()
    expected = raw * (0.7 / torch.linalg.matrix_norm(raw, ord=2))
    torch.testing.assert_close(model.effective_W_z().detach(), expected, rtol=1e-5, atol=1e-6)


def test_tanh_deq_gradient_passes_gradcheck():
    model = TanhDEQ(
        3,
        4,
        2,
        solver=Picard(tol=1e-13, max_iter=300),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    params = dict(model.named_parameters())

    def fn(x, *values):
        return torch.func.functional_call(model, dict(zip(params, values)), (x,))

    assert torch.autograd.gradcheck(
        fn, (x, *params.values()), atol=1e-7, rtol=1e-6, fast_mode=True
    )


def test_tanh_deq_reports_its_solves():
    stats = SolverStats()
    model = TanhDEQ(3, 4, 2, callback=stats, dtype=torch.float64, solver=Anderson(tol=1e-8))
    out, info = model(torch.randn(5, 3, dtype=torch.float64), return_info=True)
    out.sum().backward()
    assert stats.steps["forward"] == [info.forward.steps]
    assert stats.steps["backward"] == [info.backward.steps]


def test_tanh_deq_rejects_bad_input_and_options():
    model = TanhDEQ(3, 4)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 3\)"):
        model(torch.randn(2, 5))
    with pytest.raises(TypeError, match="convert the input with x.to"):
        model(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        model([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="max_norm must lie in"):
        TanhDEQ(3, 10, max_norm=1.0)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        TanhDEQ(3, 0)
    with pytest.raises(TypeError, match="computes in float32 or float64"):
        TanhDEQ(3, 4, dtype=torch.float16)
    with pytest.raises(TypeError, match="unknown option"):
        TanhDEQ(3, 4, solver=Picard(memory=5))


@pytest.mark.parametrize("make", [lambda: TanhDEQ(64, 8, 10), lambda: ConvDEQ((8, 8), 10)])
def test_layers_are_plain_modules(make):
    """.double(), state_dict and deepcopy work as on any nn.Module, before and after a call."""
    model = make()
    x = torch.rand(3, 64)
    out = model(x)
    model = model.double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    twin = make().double()
    twin.load_state_dict(model.state_dict())
    copied = copy.deepcopy(model)
    x = x.double()
    assert_close(twin(x), model(x), atol=0, rtol=0)
    assert_close(copied(x), model(x), atol=0, rtol=0)
    assert_close(model(x).float(), out, atol=1e-4, rtol=1e-4)


def test_a_generator_alone_decides_the_initial_weights():
    """Same generator seed, same weights (readout included); torch's global RNG is not drawn."""
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    for make in (
        lambda g: TanhDEQ(4, 5, 3, generator=g),
        lambda g: ConvDEQ((8, 8), 3, generator=g),
    ):
        a, b = (make(torch.Generator().manual_seed(7)) for _ in range(2))
        assert_close(dict(a.state_dict()), dict(b.state_dict()), atol=0, rtol=0)
    assert torch.equal(torch.rand(1), before), "building a layer drew from the global RNG"


# ----------------------------------------------------------------------------- ConvDEQ


def test_conv_deq_gradient_passes_gradcheck():
    """With respect to the image and the equilibrium's weights (the readout is a plain layer)."""
    model = tiny_conv()
    x = tiny_images().requires_grad_()
    params = {name: p for name, p in model.named_parameters() if name in ("K", "V", "b")}

    def fn(x, *values):
        return torch.func.functional_call(model, dict(zip(params, values)), (x,))

    assert torch.autograd.gradcheck(
        fn, (x, *params.values()), atol=1e-7, rtol=1e-6, fast_mode=True
    )


def test_conv_deq_implicit_gradient_matches_unrolled():
    x = tiny_images(3)
    grads = {}
    for backward in ("implicit", "unrolled"):
        model = tiny_conv(backward)
        loss = model(x).logsumexp(dim=1).sum()
        grads[backward] = torch.autograd.grad(loss, list(model.parameters()))
    assert_close(grads["implicit"], grads["unrolled"], atol=1e-10, rtol=1e-9)


def test_conv_deq_map_is_a_contraction_within_its_bound():
    """The bound k‖K_mat‖₂ on the convolution's norm is an upper bound (checked against power
    iteration on the operator), and the map contracts by at most max_norm."""
    model = ConvDEQ(
        (6, 6),
        3,
        channels=4,
        max_norm=0.8,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        model.K.mul_(20)
    K = model.effective_K().detach()
    v = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    for _ in range(200):  # power iteration on KᵀK, K the convolution operator
        v = nnf.conv_transpose2d(nnf.conv2d(v, K, padding=1), K, padding=1)
        v = v / v.norm()
    operator_norm = nnf.conv2d(v, K, padding=1).norm().item()
    bound = model.lipschitz_bound(K).item()
    assert operator_norm <= bound + 1e-9, f"‖K⋆‖₂ = {operator_norm:.4f} > bound {bound:.4f}"
    assert bound <= 0.8 + 1e-9, f"bound {bound:.4f} above max_norm 0.8"
    f = model.map(torch.rand(5, 36, dtype=torch.float64))
    a, b = torch.randn(2, 5, 4, 6, 6, dtype=torch.float64)
    ratio = ((f(a) - f(b)).norm() / (a - b).norm()).item()
    assert ratio <= 0.8, f"‖f(a) − f(b)‖/‖a − b‖ = {ratio:.4f} > 0.8"


def test_conv_deq_trains_on_digits():
    x, y, shape = digits_subset(256)
    stats = SolverStats(training_only=True)
    model = ConvDEQ(
        shape, 10, channels=4, callback=stats, generator=torch.Generator().manual_seed(0)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    with torch.no_grad():
        before = nnf.cross_entropy(model(x), y).item()
    for step in range(24):
        idx = torch.arange(step * 64, step * 64 + 64) % len(x)
        opt.zero_grad()
        nnf.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        after = nnf.cross_entropy(model(x), y).item()
    summary = stats.pop()
    assert after < 0.5 * before, f"loss {before:.3f} -> {after:.3f}"
    assert summary["forward_solves"] == 24 and summary["backward_solves"] == 24
    assert summary["forward_unconverged"] == 0 and summary["backward_unconverged"] == 0


def test_conv_deq_shapes_and_return_info():
    model = ConvDEQ((3, 5, 6), 7, channels=2, pool=3)
    out, info = model(torch.rand(4, 90), return_info=True)
    assert out.shape == (4, 7)
    assert info.forward.z.shape == (4, 2, 5, 6) and info.forward.converged
    assert sum(p.numel() for p in model.parameters()) == 2 * 2 * 9 + 2 * 3 * 9 + 2 + 2 * 9 * 7 + 7


def test_conv_deq_rejects_bad_shapes_and_options():
    cases = [
        (ValueError, "image_shape must be", dict(image_shape=(8,))),
        (ValueError, "image_shape must be", dict(image_shape=(1, 0, 8))),
        (ValueError, "image_shape must be", dict(image_shape=64)),
        (ValueError, "kernel_size must be odd", dict(kernel_size=2)),
        (ValueError, "pool must be at most", dict(pool=9)),
        (ValueError, "channels must be a positive integer", dict(channels=0)),
        (ValueError, "num_classes must be a positive integer", dict(num_classes=0)),
        (ValueError, "max_norm must lie in", dict(max_norm=1.5)),
        (TypeError, "computes in float32 or float64", dict(dtype=torch.bfloat16)),
        (
            TypeError,
            "solver_options= moved into the solver object",
            dict(solver_options={"memory": 5}),
        ),
        (ValueError, "backward must be Implicit", dict(backward="implict")),
    ]
    for error, message, kwargs in cases:
        options = {"image_shape": (8, 8), "num_classes": 10, **kwargs}
        with pytest.raises(error, match=message):
            ConvDEQ(options.pop("image_shape"), options.pop("num_classes"), **options)
    model = ConvDEQ((8, 8), 10)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 64\)"):
        model(torch.rand(2, 8, 8))
    with pytest.raises(TypeError, match="convert the input"):
        model(torch.randint(0, 16, (2, 64)))


# ------------------------------------------------------------------------- the reference problem


def test_reference_problem_is_pinned_and_checked():
    p = reference_tanh_problem(0.9)
    assert isinstance(p, ReferenceProblem) and p.x.shape == (64, 256)
    radius = torch.linalg.eigvals(p.W_z).abs().max().item()
    assert abs(radius - 0.9) < 1e-12, f"spectral radius {radius!r}, expected 0.9"
    assert torch.equal(p.W_x, reference_tanh_problem(0.99).W_x)  # same draw for every ρ
    assert (
        reference_tanh_problem(0.9, dtype=torch.float32).f(p.z0().float()).dtype == torch.float32
    )
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            reference_tanh_problem(bad)


@pytest.mark.parametrize("transform", ["vmap", "grad"])
@pytest.mark.parametrize("build", [lambda: (deqlib.TanhDEQ(3, 8, 2), 3),
                                   lambda: (deqlib.ConvDEQ((4, 4), 3, pool=2), 16)],
                         ids=["TanhDEQ", "ConvDEQ"])
def test_torch_func_over_the_layers_gives_deqlibs_message(transform, build):
    # the input check (NaN/Inf, before the solve) would otherwise fail first inside torch
    layer, n = build()
    run = {"vmap": lambda: torch.func.vmap(layer)(torch.randn(4, 1, n)),
           "grad": lambda: torch.func.grad(lambda x: layer(x).sum())(torch.randn(2, n))}
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__} cannot run inside a "
                                           r"torch\.func transform"):
        run[transform]()
