"""The solvers at the precision floor: a sample at round-off never breaks the batch, a tolerance
below what the dtype resolves is reported in words that name the precision, and the defaults
converge on every contraction of a scan (issue 16).

The scan itself lives in benchmarks/scan_solvers.py, which prints its figures; these tests run it.
"""

import json
import warnings

import pytest
import torch
from conftest import ROOT, load_script

import deqlib
from deqlib.solvers import ConvergenceWarning

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("picard", "anderson", "broyden")


def test_the_issues_reproduction_converges_with_the_defaults():
    # TanhDEQ(3, 6, 2) is a contraction (Picard converges in 17 steps); the default Anderson
    # raised FloatingPointError at step 13 once sample 0 reached float32 round-off.
    layer = deqlib.TanhDEQ(3, 6, 2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    out, info = layer(x, return_info=True)
    assert info.forward.converged and torch.isfinite(out).all()
    assert bool(info.forward.sample_converged.all())


@pytest.mark.parametrize("width", range(2, 13))
def test_default_tanh_deq_converges_for_every_seed_and_batch_size(width):
    # before: 15 of 40 seed/shape settings at widths 4 and 8 raised
    for seed in range(5):
        layer = deqlib.TanhDEQ(8, width, 2, generator=torch.Generator().manual_seed(seed))
        for batch in (1, 2, 5, 64, 512):
            x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(seed))
            out, info = layer(x, return_info=True)
            assert info.forward.converged, (width, seed, batch, info.forward)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("method", METHODS)
def test_scan_of_contractions_has_no_failure(method, dtype):
    failures = load_script("benchmarks/scan_solvers.py").run(method, dtype)
    assert not failures, failures[:5]


def test_anderson_survives_the_recorded_round_off_residuals_on_any_cpu():
    """Replay the residuals that broke the old solver: f(z) = z + G[k] rebuilds the same Gram
    matrices whatever the CPU (sample 0 at round-off, entries 0 and ±2⁻²⁴, beside a sample still
    above tol). The old code raised FloatingPointError at step 13."""
    data = json.loads((ROOT / "tests" / "data" / "anderson_roundoff.json").read_text())
    G = torch.tensor(data["residuals"], dtype=torch.float32)        # (12, 2, 6)
    calls = []

    def f(z):
        calls.append(1)
        return z + G[min(len(calls), len(G)) - 1]

    with pytest.warns(ConvergenceWarning, match="max_iter=13"):
        r = deqlib.solve(f, torch.zeros(2, 6), method="anderson", max_iter=13)
    assert torch.isfinite(r.z).all() and not r.converged
    assert r.sample_converged.tolist() == [True, False]


@pytest.mark.parametrize("method", METHODS)
def test_a_converged_sample_is_not_moved_while_the_others_iterate(method):
    # sample 0 starts at its fixed point; sample 1 needs many steps
    d = 16
    A = torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A *= 0.97 / torch.linalg.matrix_norm(A, 2)
    star = torch.tanh(torch.ones(d, dtype=torch.float64))

    def f(z):
        return torch.stack((torch.tanh(torch.ones(d, dtype=z.dtype) + 0 * z[0]),
                            torch.tanh(A @ z[1] + 1)))

    z0 = torch.stack((star, torch.zeros(d, dtype=torch.float64)))
    r = deqlib.solve(f, z0, method=method, tol=1e-12, max_iter=2000)
    assert r.converged and r.steps > 5
    assert torch.equal(r.z[0], star)


def test_a_tolerance_below_float64_round_off_stops_early_and_says_so():
    # chapter 1 asked for 1e-15 at q = 0.99 and burned 50,000 steps at the floor
    W = torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W *= 0.99 / torch.linalg.matrix_norm(W, 2)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match=r"round-off of float64.*tol >= 1e-1[56]"):
        r = deqlib.solve(lambda z: torch.tanh(z @ W.T + x), torch.zeros(4, 16, dtype=W.dtype),
                         method="picard", tol=1e-17, max_iter=50_000)
    assert r.stalled and not r.converged and r.steps < 500
    assert "stalled=True" in repr(r)


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_autocast_below_its_floor_is_reported_once_naming_bfloat16(method):
    # (at q = 0.9 Anderson can land on an exact fixed point of the bfloat16-rounded map, a
    # residual of exactly 0, which is converged; at q = 0.99 none of the three does)
    W = torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W = (W * 0.99 / torch.linalg.matrix_norm(W, 2)).float()
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            r = deqlib.solve(lambda z: torch.tanh(z @ W.T + x), torch.zeros(4, 16),
                             method=method, tol=1e-6, max_iter=1000)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1, messages
    assert "bfloat16" in messages[0] and "autocast" in messages[0]
    assert r.stalled and r.steps < 200 and torch.isfinite(r.z).all()


def test_bfloat16_autocast_above_its_floor_converges():
    W = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    W *= 0.9 / torch.linalg.matrix_norm(W, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = deqlib.solve(lambda z: torch.tanh(z @ W.T + 1), torch.zeros(4, 16), tol=2e-2)
    assert r.converged


def test_a_slow_steady_solve_is_never_called_stalled():
    # Picard at factor 0.995 makes a new smallest residual every step; in 5000 steps its
    # relative residual falls to about 6e-14, far below the floor where the stall test applies
    # (2.2e-13 in float64), but still above round-off: it must run to max_iter
    f = lambda z: 0.995 * z + 1
    with pytest.warns(ConvergenceWarning, match="max_iter=5000"):
        r = deqlib.solve(f, torch.zeros(2, 3, dtype=torch.float64), method="picard",
                         tol=1e-30, max_iter=5000)
    assert not r.stalled and r.steps == 5000 and r.residuals[-1] < 1e-12


def test_broyden_pausing_above_float64_round_off_is_not_called_stalled():
    # on the pinned reference problem Broyden makes no new minimum for 57 steps after reaching
    # 5.9e-9 (below √eps of float64, 1.5e-8), then converges; the stall test, with a floor at
    # √eps, stopped it there as stalled=True at step 264
    p = deqlib.reference_tanh_problem(0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        r = deqlib.solve(p.f, p.z0(), method="broyden", tol=1e-10, max_iter=2000)
    assert r.converged and not r.stalled, r
    assert max(r.final_residual.tolist()) <= 1e-10
    plain = deqlib.solve(p.f, p.z0(), method="broyden", tol=1e-10, max_iter=2000, stall=None)
    assert r.steps == plain.steps          # the stall test changed nothing in this solve


@pytest.mark.parametrize("method", METHODS)
def test_float32_below_its_floor_still_stops_early_naming_float32(method):
    # the case the stall test exists for, in float32: tol 1e-10 is below its round-off
    p = deqlib.reference_tanh_problem(0.99, dtype=torch.float32)
    with pytest.warns(ConvergenceWarning, match=r"round-off of float32.*tol >= 1e-0[567]"):
        r = deqlib.solve(p.f, p.z0(), method=method, tol=1e-10, max_iter=5000)
    assert r.stalled and not r.converged and r.steps < 1000, r


def test_nan_from_f_at_the_first_step_is_blamed_on_f_and_its_inputs():
    x = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    match = r"step 1, from a finite z0, in sample\(s\) \[0\]"
    with pytest.raises(FloatingPointError, match=match):
        deqlib.solve(lambda z: torch.tanh(0.5 * z + x), torch.zeros(2, 2))


def test_stall_none_runs_exactly_max_iter_steps_and_a_bad_stall_is_refused():
    # a fixed count of steps with an unreachable tol (chapter 3 measures memory this way)
    W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W *= 0.5 / torch.linalg.matrix_norm(W, 2)
    f = lambda z: torch.tanh(z @ W.T + 1)
    z0 = torch.zeros(2, 8, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="max_iter=300"):
        r = deqlib.solve(f, z0, method="picard", tol=1e-30, max_iter=300, stall=None)
    assert r.steps == 300 and not r.stalled
    for bad, error in ((0, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="stall"):
            deqlib.solve(f, z0, stall=bad)


@pytest.mark.parametrize("method", METHODS)
def test_a_map_that_writes_into_its_input_is_refused(method):
    # it used to "converge" at step 1 with residual 0 at z = 1 (the fixed point is 2)
    with pytest.raises(ValueError, match="modified its input in place at step 1"):
        deqlib.solve(lambda z: z.mul_(0.5).add_(1), torch.zeros(3, 4), method=method)
    with pytest.raises(ValueError, match="in place"):
        deqlib.solve(lambda z: z.mul_(0.5) + 1, torch.zeros(3, 4, 2), method=method)


def test_nan_from_f_read_every_few_steps_names_f_and_the_first_step():
    # with check_every=10, a NaN from f at step 3 used to be reported at step 10 as the
    # solver's own mixing weights overflowing (Picard has none)
    calls = []

    def f(z):
        calls.append(1)
        return z * 0.5 + (float("nan") if len(calls) == 3 else 1.0)

    with pytest.raises(FloatingPointError, match=r"picard: f returned NaN or Inf at step 3 "
                                                 r"\(found at step 10, check_every=10\)"):
        deqlib.solve(f, torch.zeros(2, 3), method="picard", check_every=10, max_iter=50)


def test_a_map_returning_meta_tensors_is_named():
    # hostile review N-CU-solve-meta, the f side: parameters left on 'meta'
    b = torch.zeros(3, device="meta")
    with pytest.raises(TypeError, match=r"f returned a tensor on the meta device.*to_empty"):
        deqlib.solve(lambda z: torch.zeros_like(z, device="meta") + b, torch.zeros(2, 3))
