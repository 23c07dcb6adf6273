"""What the solution runs print: the numbers the prose answers quote, recorded for the site.

A prose answer (``chNN.md``) quotes numbers of a run of its solution function (``chNN.py``).
The notebooks must not run the solutions (a reader would see the answer), so the site shows
what the run printed when the book was built: each answer ``literalinclude``-s its record,
``outputs/<chNN>_<function>.txt``. Write them (``make notebooks`` does) with::

    python -m deqlib.solutions.record                    # every record
    python -m deqlib.solutions.record ch10.exercise_3    # some

A record is a :class:`Record`: ``run()`` builds the exercise's inputs exactly as the chapter
does and calls the solution; ``table(result)`` turns the result into a short plain-text table
(labelled columns, units). ``tests/test_solutions.py`` re-runs every record, compares the fresh
text with the stored file (numbers as numbers, to one unit in their last printed digit, as the
notebook tests do), and asserts the answers' claims on the same run.

**What is printed is what every machine reproduces** (see :mod:`deqlib.check`): float64
results with 3 or 4 significant digits, float32 training results with 2 or 3, and numbers at
rounding level as a bound (``< 1e-9``).

Adding a record: write its ``run`` (the chapter's inputs, the solution's call) and ``table``,
then add one line to :data:`RECORDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Where the records are stored (committed; included by the answers in ``chNN.md``).
OUTPUTS = Path(__file__).resolve().parent / "outputs"


# -- the chapters' inputs ---------------------------------------------------------------------


@contextlib.contextmanager
def float64():
    """The default dtype float64 (as chapters 1-3, 9 and 10 set it), restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def one_thread():
    """One torch thread (small tensors: idle threads on a shared machine cost 10x), restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def chapter_1_layer():
    """Chapter 1's layer and input (float64): ``TanhDEQ(8, 32, max_norm=0.9)``, seeds 0 and 1."""
    import deqlib

    with float64():
        layer = deqlib.TanhDEQ(8, 32, max_norm=0.9, generator=torch.Generator().manual_seed(0))
        x = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    return layer, x


def chapter_6_problem():
    """The problem of chapters 6 and 7: m = 3, m_y = 5, n = 40, float64, seed 0: A0, B0, Φ, Y."""
    g = torch.Generator().manual_seed(0)
    kw = {"generator": g, "dtype": torch.float64}
    Phi, Y = torch.randn(3, 40, **kw), torch.randn(5, 40, **kw)
    return torch.randn(3, 3, **kw) / 3**0.5, torch.randn(5, 3, **kw) / 3**0.5, Phi, Y


def chapter_9_toy(seed=0, m=20, n=8, m_y=3):
    """Chapter 9's realisable toy with m > n (its ``toy(seed)``, float64): Φ and Y."""
    g = torch.Generator().manual_seed(seed)
    kw = {"generator": g, "dtype": torch.float64}
    teacher = torch.randn(m_y, m, **kw)
    Phi = torch.randn(m, n, **kw)
    return Phi, teacher @ Phi


def linear_gd(W, Phi, Y, steps=4000):
    """Chapter 9's ``linear_gd``: gradient descent on ‖WΦ − Y‖², step 0.5 / λ_max(ΦΦᵀ)."""
    from deqlib import theory

    eta = 0.5 / torch.linalg.eigvalsh(Phi @ Phi.T)[-1].item()
    return theory.gradient_descent(W, Phi, Y, eta=eta, steps=steps, record_every=steps).W


# -- formatting -------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[Any]]) -> str:
    """Columns left-aligned under their labels, two spaces apart."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells) + "\n"


def below(value: float, bound: float, digits: int = 2) -> str:
    """``< bound`` (e.g. ``< 1e-9``) when value is below it; else the value's digits, so that a
    record whose value is no longer at rounding level shows it (and its test fails)."""
    if value < bound:
        mantissa, exponent = f"{bound:.0e}".split("e")
        return f"< {mantissa}e{int(exponent)}"
    return f"{value:.{digits - 1}e}"


# -- the records: run() and table(result) -----------------------------------------------------


def run_ch01_exercise_3():
    from deqlib.solutions import ch01

    layer, x = chapter_1_layer()
    with float64():
        big, rho = ch01.exercise_3(layer, x)
    gap = ((big.z[1] - big.z[0]).norm() / big.z[0].norm()).item()
    return {"converged": big.converged, "steps": big.steps, "gap": gap, "rho": rho}


def table_ch01_exercise_3(r):
    return table(["‖W_z‖₂ = 1.5, Picard from z = 0 and z = 3·1 (tol 1e-12)", "value"], [
        ["converged", r["converged"]],
        ["steps", r["steps"]],
        ["relative difference of the two solutions", below(r["gap"], 1e-9)],
        ["spectral radius ρ(J) at the fixed point", f"{r['rho']:.3f}"],
    ])


def run_ch02_exercise_3():
    import deqlib
    from deqlib.solutions import ch02

    with float64():
        problem = deqlib.reference_tanh_problem(0.99)
        rank, alpha, mixed, steps = ch02.exercise_3(problem)
    return {"rank": rank, "alpha": alpha, "mixed": mixed, "steps": steps}


def table_ch02_exercise_3(r):
    weights = ", ".join(f"{a:.3g}" for a in r["alpha"].tolist())
    return (table(["five residuals g_i in R³, λ = 1e-4", "value"], [
        ["rank of the 5×5 Gram matrix Γ", r["rank"]],
        ["weights α_i", weights],
        ["|Σ α_i − 1|", below(abs(r["alpha"].sum().item() - 1), 1e-9)],
        ["mixed residual ‖Σ α_i g_i‖", f"{r['mixed']:.2e}"],
    ]) + "\n" + table(["damping β", "Anderson steps to 1e-6 (ρ(W_z) = 0.99)"],
                      [[f"{beta:g}", n] for beta, n in r["steps"].items()]))


def run_ch03_exercise_2():
    import deqlib
    from deqlib.solutions import ch03

    with float64():
        problem = deqlib.reference_tanh_problem(0.9)
        weights = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
        error, rho_J = ch03.exercise_2(problem, weights)
    return {"error": error, "rho_J": rho_J}


def table_ch03_exercise_2(r):
    return table(["20 unrolled Picard steps, ρ(W_z) = 0.9, 64 samples", "value"], [
        ["largest ρ(J) over the samples' equilibria", f"{r['rho_J']:.3f}"],
        ["ρ(J)^20", f"{r['rho_J'] ** 20:.3f}"],
        ["relative error of ∂ℓ/∂W_z", f"{r['error']:.3f}"],
    ])


def chapter_4_runs():
    """Chapter 4's exercise runs on the digits (float32, 8 epochs), one thread: exercises 2, 3
    and 4, and the one-hidden-layer MLP of exercise 4's comparison (about 15 s in all)."""
    import deqlib
    from deqlib.solutions import ch04

    data = deqlib.data.load("digits")
    deq = deqlib.TanhDEQ(data.in_features, 32, data.num_classes)  # the chapter's dense DEQ
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", deqlib.ConvergenceWarning)  # exercise 2 has some
        return {"data": data, 2: ch04.exercise_2(data), 3: ch04.exercise_3(data),
                4: ch04.exercise_4(data), "mlp1": ch04.exercise_4(data, depth=1),
                "deq_parameters": sum(p.numel() for p in deq.parameters())}


def table_ch04_exercise_2(runs):
    b, u = runs[2]["bounded"], runs[2]["unbounded"]
    rows = [[epoch, f"{b['W_norm'][epoch]:.2f}", f"{u['W_norm'][epoch]:.2f}",
             f"{b['J_norm'][epoch]:.2f}", f"{u['J_norm'][epoch]:.2f}",
             f"{u['J_radius_max'][epoch]:.2f}",
             f"{u['forward_steps'][epoch] / b['forward_steps'][epoch]:.1f}" if epoch else "",
             f"{u['forward_unconverged'][epoch]}/{u['forward_solves'][epoch]}" if epoch else "",
             f"{b['test_acc'][epoch]:.2f}", f"{u['test_acc'][epoch]:.2f}"]
            for epoch in range(len(b))]
    missed = {name: sum(h["forward_unconverged"]) + sum(h["backward_unconverged"])
              for name, h in (("b", b), ("u", u))}
    return ("b: bounded (max_norm=0.9), u: unbounded (max_norm=None); ‖J‖₂ and ρ(J) at the\n"
            "probe's 64 equilibria; steps u/b: forward steps, unbounded / bounded; unconv. u:\n"
            "forward solves of the epoch that stopped at max_iter = 100 unconverged; acc: test\n"
            f"accuracy; unconverged training solves in all (forward and adjoint): "
            f"b {missed['b']}, u {missed['u']}\n\n"
            + table(["epoch", "‖W_z‖₂ b", "‖W_z‖₂ u", "‖J‖₂ b", "‖J‖₂ u", "max ρ(J) u",
                     "steps u/b", "unconv. u", "acc b", "acc u"], rows))


def table_ch04_exercise_3(runs):
    loose, tight = runs[3][1e-4], runs[3][1e-6]
    rows = [[epoch, f"{loose['J_radius_max'][epoch]:.2f}",
             f"{tight['forward_steps'][epoch] - loose['forward_steps'][epoch]:+.0f}",
             f"{tight['backward_steps'][epoch] - loose['backward_steps'][epoch]:+.0f}",
             tight["forward_unconverged"][epoch] + tight["backward_unconverged"][epoch],
             f"{loose['test_acc'][epoch]:.2f}", f"{tight['test_acc'][epoch]:.2f}"]
            for epoch in range(1, len(loose))]
    return ("steps: per-epoch mean Anderson steps at tol 1e-6 minus those at 1e-4; unconv. 1e-6:\n"
            "training solves at 1e-6 (forward and adjoint) that stopped at max_iter = 100\n"
            "unconverged; acc: test accuracy\n\n"
            + table(["epoch", "max ρ(J) at 1e-4", "forward steps", "adjoint steps",
                     "unconv. 1e-6", "acc 1e-4", "acc 1e-6"], rows))


def table_ch04_exercise_4(runs):
    from deqlib.solutions import ch04

    deq, (count, mlp3), (count1, mlp1) = runs[2]["bounded"], runs[4], runs["mlp1"]
    steps = sum(deq["forward_steps"][1:]) / (len(deq) - 1)       # mean over the epochs
    return table(["model (digits, 8 epochs)", "parameters", "test acc"], [
        ["DEQ, width 32 (max_norm=0.9)", f"{runs['deq_parameters']:,}",
         f"{deq.last['test_acc']:.2f}"],
        ["MLP, 1 hidden layer", f"{count1:,}", f"{mlp1.last['test_acc']:.2f}"],
        ["MLP, 3 hidden 32×32 layers", f"{count:,}", f"{mlp3.last['test_acc']:.2f}"],
        [f"MLP as deep as the DEQ's mean solve ({steps:.0f} steps), not trained",
         f"{ch04.mlp_parameters(round(steps), 64, 10):,}", ""],
    ])


def run_ch05_exercise_2():
    from deqlib.solutions import ch05

    return ch05.exercise_2()


def table_ch05_exercise_2(out):
    (S_one, ratio_one), (S_two, ratio_two) = out["rank one"], out["rank two"]
    return table(["5×5 matrix A, γ = 0.8, δ = 1e-12", "‖S‖₂", "|‖S‖₂ − γ|",
                  "‖AᵀA‖₂ / ‖AᵀA‖_F"], [
        ["rank one", f"{S_one:.4f}", below(abs(S_one - 0.8), 1e-12), f"{ratio_one:.3f}"],
        ["rank two", f"{S_two:.4f}", "", f"{ratio_two:.3f}"],
    ])


def run_ch05_gaussian_S_norm():
    """Chapter 5's m = 1024 draw (the law's cell: seed 2, m = 64, 256, 1024), the prediction
    for m = 3072 by the 1/√m law, and the solution's measurement there."""
    from deqlib.solutions import ch05

    gm = torch.Generator().manual_seed(2)  # the draws of the law's cell in chapter 5
    for m in (64, 256, 1024):
        A = torch.randn(m, m, generator=gm, dtype=torch.float64) / m**0.5
    C = A.T @ A
    at_1024 = (0.8 * torch.linalg.eigvalsh(C)[-1] / (torch.linalg.matrix_norm(C) + 1e-6)).item()
    prediction = round(at_1024, 4) / 3**0.5
    return {"at_1024": at_1024, "prediction": prediction, "constant": 2 * 2**0.5 * 0.8 / 3072**0.5,
            "measured": ch05.gaussian_S_norm(3072)}


def table_ch05_gaussian_S_norm(r):
    return table(["Gaussian A, γ = 0.8", "‖S‖₂", "√m ‖S‖₂"], [
        ["m = 1024, measured in the chapter", f"{r['at_1024']:.4f}",
         f"{r['at_1024'] * 1024**0.5:.2f}"],
        ["m = 3072, predicted: 0.0701 / √3", f"{r['prediction']:.4f}", ""],
        ["m = 3072, the large-m constant 2√2γ/√m", f"{r['constant']:.4f}", ""],
        ["m = 3072, gaussian_S_norm(3072)", f"{r['measured']:.4f}",
         f"{r['measured'] * 3072**0.5:.2f}"],
    ]) + f"\nmeasured / predicted − 1 = {r['measured'] / r['prediction'] - 1:+.4f}\n"


def run_ch06_stability_threshold():
    """The threshold step η_c on chapter 6's main run, ω_0 = 2 λ_max(ΦΦᵀ) λ_max(P_0), the full
    Hessian's largest eigenvalue at the start and after the main run, and the losses just above
    η_c (first ten steps)."""
    from deqlib import functional, theory
    from deqlib.solutions import ch06

    A0, B0, Phi, Y = chapter_6_problem()
    eta_c = ch06.stability_threshold(A0, B0, Phi, Y)
    P0 = theory.preconditioner(A0, B0, 0.8, 1e-6)
    omega0 = (2 * torch.linalg.eigvalsh(Phi @ Phi.T)[-1] * torch.linalg.eigvalsh(P0)[-1]).item()

    def hessian_top(A, B):
        def loss(theta):
            W = functional.end_to_end(theta[:9].reshape(3, 3), theta[9:].reshape(5, 3), 0.8, 1e-6)
            return theory.shallow_loss(W, Phi, Y)
        theta = torch.cat([A.reshape(-1), B.reshape(-1)])
        return torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))[-1].item()

    end = theory.gradient_flow(A0, B0, Phi, Y, eta=1e-4, steps=2000, record_every=2000)
    with warnings.catch_warnings(action="ignore"):  # just above η_c the loss may rise
        *_, loss = theory.delm_gradient_descent(A0, B0, Phi, Y, eta=1.01 * eta_c, steps=10,
                                                record_every=1)
    return {"eta_c": eta_c, "omega0": omega0, "hessian_start": hessian_top(A0, B0),
            "hessian_end": hessian_top(end.A, end.B), "loss_above": [float(v) for v in loss]}


def table_ch06_stability_threshold(r):
    w = r["omega0"]
    rises = [k + 1 for k in range(len(r["loss_above"]) - 1)
             if r["loss_above"][k + 1] > r["loss_above"][k]]
    return (table(["step η", "value", "× ω_0"], [
        ["η_c, the smallest step at which the loss rises", f"{r['eta_c']:.1e}",
         f"{r['eta_c'] * w:.1f}"],
        ["2/ω_0 (a quadratic's stability limit)", f"{2 / w:.1e}", "2.0"],
        ["2/λ_max(Hessian) at the start", f"{2 / r['hessian_start']:.1e}",
         f"{2 / r['hessian_start'] * w:.2f}"],
        ["the main run's η", "1.0e-04", f"{1e-4 * w:.2f}"],
    ]) + f"\nω_0 = 2 λ_max(ΦΦᵀ) λ_max(P_0) = {w:.0f}\n"
         f"the full Hessian's λ_max: {r['hessian_start']:.2g} at the start, "
         f"{r['hessian_end']:.2g} after the main run\n"
         f"at η = 1.01 η_c, over the first 10 of the 300 steps, the loss rises at step(s) "
         f"{rises};\nafter step 10 it is below its value after step 1: "
         f"{r['loss_above'][-1] < r['loss_above'][1]}\n")


def run_ch06_exercise_2():
    from deqlib.solutions import ch06

    return ch06.exercise_2(*chapter_6_problem())


def table_ch06_exercise_2(out):
    (lo, hi), (plo, phi) = out["s_min_U_sq"], out["lam_min_P"]
    return table(["γ = 0.95, η = 2.5e-5, 2000 steps (t = 0.05)", "smallest", "largest"], [
        ["s_min(U_t)² along the run", f"{lo:.3f}", f"{hi:.3f}"],
        ["λ_min(P_t) along the run", f"{plo:.3f}", f"{phi:.3f}"],
        ["λ_max(U_t) at the end", "", f"{out['lam_max_U_end']:.2f}"],
    ])


def run_ch06_exercise_3():
    from deqlib.solutions import ch06

    return ch06.exercise_3(*chapter_6_problem())


def table_ch06_exercise_3(out):
    start, end = out["s_min_U_sq_start_end"]
    return ("γ = 0.8, η = 1e-4, 2000 steps; gap: L_t − ℒ* at t = 0.2; rate: the gap's decay rate\n"
            "over the last three quarters of the run\n\n"
            + table(["trained", "gap", "rate", "s_min(U_t)² start → end"], [
                ["B alone (U frozen at U_0)", f"{out['gap_B_only']:.1e}",
                 f"{out['rate_B_only']:.0f}", f"{start:.3f} (frozen)"],
                ["both A and B", f"{out['gap_both']:.1e}", f"{out['rate_both']:.0f}",
                 f"{start:.3f} → {end:.3f}"],
            ]))


def run_ch07_exercise_3():
    """The solution's runs, and the closed form Δ² = ε gᵀPg − ε² gᵀPHPg's pieces at the start."""
    import deqlib
    from deqlib.solutions import ch07

    A0, B0, Phi, Y = chapter_6_problem()
    out = ch07.exercise_3(A0, B0, Phi, Y)
    W0 = deqlib.functional.end_to_end(A0, B0, 0.8, 1e-6)
    g = deqlib.theory.shallow_gradient(W0, Phi, Y).reshape(-1)
    P = deqlib.theory.preconditioner(A0, B0, 0.8, 1e-6)
    H = deqlib.theory.shallow_hessian(W0, Phi, Y)
    (eps_1, *_), fraction_1 = out[0.1], 0.1
    lam_max = fraction_1 / eps_1                                 # ε = f / λ_max
    gPg, gPHPg = (g @ P @ g).item(), (g @ P @ H @ P @ g).item()
    r = gPHPg / (lam_max * gPg)
    f_peak = 1 / (2 * r)                                         # Δ² ∝ f(1 − fr) peaks here
    return {"runs": out, "gPg": gPg, "gPHPg": gPHPg, "lam_max": lam_max, "r": r,
            "f_peak": f_peak,
            "radius_peak": math.sqrt(f_peak / lam_max * gPg * (1 - f_peak * r))}


def table_ch07_exercise_3(r):
    runs = r["runs"]
    rows = [[f"{f:g}", f"{eps:.3e}", f"{radius:.2f}", f"{step:.4g}", f"{nu:.4f}"]
            for f, (eps, radius, step, nu) in runs.items()]
    (_, r1, v1, _), (_, r9, v9, _) = runs[0.1], runs[0.9]
    return (table(["eps_fraction f", "ε", "radius Δ", "step ‖v‖", "KKT multiplier"], rows)
            + "\n" + table(["derived", "value"], [
                ["‖v‖ at f = 0.9 / at f = 0.1", f"{v9 / v1:.4f}"],
                ["Δ² at f = 0.9 / at f = 0.1", f"{(r9 / r1) ** 2:.3f}"],
                ["r = gᵀPHPg / (λ_max gᵀPg)", f"{r['r']:.3f}"],
                ["f = 1/(2r), where Δ peaks", f"{r['f_peak']:.3f}"],
                ["Δ at the peak", f"{r['radius_peak']:.2f}"],
            ]))


def run_ch08_exercise_2():
    from deqlib.solutions import ch08

    with one_thread():
        return ch08.exercise_2()


def table_ch08_exercise_2(out):
    from deqlib import stats

    acc, loss = out["test_acc"], out["train_loss"]
    return ("depth 3 − linear, digits, square loss, lr 0.02, 20 epochs; paired over seeds "
            f"{', '.join(map(str, acc['seeds']))}\n"
            "(mean difference [95 % t-interval]  seeds with each sign  sign test's p  verdict)\n\n"
            + table(["metric", "difference"], [
                ["test accuracy (points)", stats.format_paired(acc, scale=100, fmt="+.1f")],
                ["final training loss", stats.format_paired(loss, fmt="+.2f")],
            ]))


def run_ch09_exercise_2():
    from deqlib.solutions import ch09

    with float64():
        Phi, Y = chapter_9_toy(0)
        gd, limit, min_norm = ch09.exercise_2(Phi, Y, linear_gd)
    return {"gd": gd, "limit": limit, "min_norm": min_norm}


def table_ch09_exercise_2(r):
    def rel(W):
        return ((W - r["min_norm"]).norm() / r["min_norm"].norm()).item()

    return table(["from W_0 = 0 on toy(0) (m = 20 > n = 8)", "‖W − YΦ⁺‖_F / ‖YΦ⁺‖_F"], [
        ["linear_gd (4000 steps)", below(rel(r["gd"]), 1e-8)],
        ["linear_gd_limit (closed form)", below(rel(r["limit"]), 1e-12)],
    ])


def run_ch09_exercise_4():
    from deqlib.solutions import ch09

    return ch09.exercise_4("digits", train_size=100)


def table_ch09_exercise_4(out):
    m, zero, inked, images, rank = out
    return table(["digits, a random 100 training images (seed 0)", "count"], [
        ["pixels m", m],
        ["pixels zero in every training image", zero],
        ["of those, with ink in some test image", inked],
        ["test images with ink on such a pixel", images],
        [f"rank of Φ on the other {m - zero} pixels", rank],
    ])


def run_ch10_exercise_3():
    from deqlib.solutions import ch10

    return ch10.exercise_3()


def table_ch10_exercise_3(worst):
    return ("largest L_t / (e^(−2λ_0 t) L_0) over the records and seeds 0, 1, 2\n"
            "(at most 1: the frozen-kernel bound held)\n\n"
            + table(["width m", "worst ratio"], [[m, f"{ratio:.3f}"]
                                                 for m, ratio in worst.items()]))


def run_ch10_exercise_6():
    from deqlib.solutions import ch10

    return ch10.exercise_6()


def table_ch10_exercise_6(out):
    return ("the chapter's sweep with n = 16 inputs (d = 16), seeds 0, 1, 2; "
            "worst over the seeds\n"
            "of min_t λ_min(Θ_t)/λ_0 at the records (the hypothesis asks for ≥ 1/2), "
            "of L_60/L_0,\n"
            "and of σ_w‖Ŵ‖₂/√m at a record\n\n"
            + table(["width m", "min_t λ_min(Θ_t)/λ_0", "L_60/L_0", "σ_w‖Ŵ‖₂/√m"],
                    [[m, f"{r['hypothesis']:.2f}", f"{r['loss_ratio']:.1e}", f"{r['factor']:.2f}"]
                     for m, r in out.items()]))


def run_ch11_exercise_3():
    """The solution with the bound on (τ = 0, 0.1, 1) and without it (the chapter's τ = 0, 0.1)."""
    from deqlib.solutions import ch11

    with one_thread():
        return {"bound": ch11.exercise_3(taus=(0.0, 0.1, 1.0)),
                "free": ch11.exercise_3(taus=(0.0, 0.1), max_norm=None)}


def mean_steps(rows):
    """Mean forward Picard steps over the last three epochs of one run."""
    return sum(row["forward_steps"] for row in rows[-3:]) / 3


def table_ch11_exercise_3(r):
    rows = []
    for label, runs in (("‖W_z‖₂ ≤ 0.9", r["bound"]), ("no bound", r["free"])):
        base = mean_steps(runs[0.0])
        for tau, run in runs.items():
            rows.append([label, tau, f"{mean_steps(run):.0f}", f"{mean_steps(run) / base:.2f}",
                         f"{run[-1]['test_acc']:.2f}", f"{run[-1]['jacobian']:.2g}"])
    return ("one run per setting, seed 0; steps: mean forward Picard steps over the last three\n"
            "epochs; ‖J‖_F² at the test images' equilibria after the last epoch\n\n"
            + table(["W_z", "τ", "steps", "steps / τ=0's", "test accuracy", "‖J‖_F²"], rows))


def run_ch11_exercise_4():
    from deqlib.solutions import ch11

    return ch11.exercise_4()


def table_ch11_exercise_4(out):
    rows = [[i + 1, out["converged"][i], below(out["gap"][i], 1e-4),
             out["converged_tight"][i], below(out["gap_tight"][i], 1e-8)]
            for i in range(len(out["gap"]))]
    return ("gap: largest entry of |z − z_split|, z_split the forward-backward solution\n\n"
            + table(["start", "converged (defaults)", "gap", "converged (tol 1e-10)", "gap"],
                    rows))


# -- the registry and the command line --------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One solution run as the site shows it: ``name`` is ``"chNN.function"``."""

    name: str
    run: Callable[[], Any]
    table: Callable[[Any], str]

    @property
    def chapter(self) -> str:
        return self.name.split(".")[0]

    @property
    def function(self) -> str:
        return self.name.split(".")[1]

    @property
    def path(self) -> Path:
        """``outputs/<chNN>_<function>.txt``."""
        return OUTPUTS / f"{self.chapter}_{self.function}.txt"

    def text(self, result: Any = None) -> str:
        """The table of ``result``, or of a fresh ``run()`` when none is given."""
        return self.table(self.run() if result is None else result)


#: Every record, by name. Runs shared by several records (chapter 4's) are one function.
RECORDS = {r.name: r for r in [
    Record("ch01.exercise_3", run_ch01_exercise_3, table_ch01_exercise_3),
    Record("ch02.exercise_3", run_ch02_exercise_3, table_ch02_exercise_3),
    Record("ch03.exercise_2", run_ch03_exercise_2, table_ch03_exercise_2),
    Record("ch04.exercise_2", chapter_4_runs, table_ch04_exercise_2),
    Record("ch04.exercise_3", chapter_4_runs, table_ch04_exercise_3),
    Record("ch04.exercise_4", chapter_4_runs, table_ch04_exercise_4),
    Record("ch05.exercise_2", run_ch05_exercise_2, table_ch05_exercise_2),
    Record("ch05.gaussian_S_norm", run_ch05_gaussian_S_norm, table_ch05_gaussian_S_norm),
    Record("ch06.exercise_2", run_ch06_exercise_2, table_ch06_exercise_2),
    Record("ch06.exercise_3", run_ch06_exercise_3, table_ch06_exercise_3),
    Record("ch06.stability_threshold", run_ch06_stability_threshold,
           table_ch06_stability_threshold),
    Record("ch07.exercise_3", run_ch07_exercise_3, table_ch07_exercise_3),
    Record("ch08.exercise_2", run_ch08_exercise_2, table_ch08_exercise_2),
    Record("ch09.exercise_2", run_ch09_exercise_2, table_ch09_exercise_2),
    Record("ch09.exercise_4", run_ch09_exercise_4, table_ch09_exercise_4),
    Record("ch10.exercise_3", run_ch10_exercise_3, table_ch10_exercise_3),
    Record("ch10.exercise_6", run_ch10_exercise_6, table_ch10_exercise_6),
    Record("ch11.exercise_3", run_ch11_exercise_3, table_ch11_exercise_3),
    Record("ch11.exercise_4", run_ch11_exercise_4, table_ch11_exercise_4),
]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deqlib.solutions.record",
        description="Run the solutions whose answers quote numbers; write outputs/*.txt.")
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"records to write (default: all): {', '.join(RECORDS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in RECORDS]
    if unknown:
        parser.error(f"no record named {', '.join(unknown)}; the records are "
                     f"{', '.join(RECORDS)} (add one to RECORDS in {Path(__file__).name})")
    OUTPUTS.mkdir(exist_ok=True)
    results: dict[Callable, Any] = {}                            # one run per run function
    for name in args.names or list(RECORDS):
        record = RECORDS[name]
        if record.run not in results:
            results[record.run] = record.run()
        record.path.write_text(record.text(results[record.run]))
        print(f"wrote {record.path.relative_to(OUTPUTS.parents[2])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
