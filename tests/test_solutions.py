"""The exercises' solutions live in deqlib.solutions, never in a notebook.

A reader on Colab or in Jupyter must meet each exercise without its answer, and "Run all" must
never overwrite an attempt; the site shows each solution in a dropdown that includes it from
deqlib/solutions. These tests check that every such include resolves, that no notebook defines
a solution itself, and that each prose answer's claims hold on a run of the code behind it.
The runs whose numbers the answers quote are deqlib.solutions.record's: each is run once here
(the ``runs`` fixture), its claims asserted, and its table compared with the stored output
that the answer shows on the site (deqlib/solutions/outputs). The code solutions are checked
by the notebook tests: ``check.exercise(…, solution=…)`` runs the book's solution through the
exercise's check and raises if it fails.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
from nbval_numbers import compare_text  # tests/ is on sys.path, as for test_nbval_numbers

import deqlib
from deqlib import check
from deqlib.solutions import record

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "deqlib" / "solutions"
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
INCLUDE = re.compile(
    r"```\{(literalinclude|include)\}\s+\.\./deqlib/solutions/(\S+)\n((?::.*\n)*)")
STUB = re.compile(r"def (\w+)\(.*\n(?:.*\n)*?\s+raise NotImplementedError")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _includes():
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell["cell_type"] == "markdown":
                for kind, name, options in INCLUDE.findall(_source(cell) + "\n"):
                    yield path.name, kind, name, dict(
                        re.match(r":([\w-]+):\s*(.*)", line).groups()
                        for line in options.splitlines())


@pytest.mark.parametrize("notebook, kind, name, options", list(_includes()))
def test_every_solution_a_chapter_includes_exists(notebook, kind, name, options):
    target = SOLUTIONS / name
    assert target.is_file(), f"{notebook} includes {target}, which does not exist"
    text = target.read_text()
    if "pyobject" in options:
        defined = {node.name for node in ast.parse(text).body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert options["pyobject"] in defined, f"{notebook}: {name} has no {options['pyobject']}"
    for marker in ("start-after", "end-before"):
        if marker in options:
            assert options[marker] in text, f"{notebook}: {name} lacks {options[marker]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_holds_a_solution(path):
    """A stub's function is defined once (the stub); dropdowns only include their answers."""
    cells = [c for c in _cells(path)]
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    for name in {m.group(1) for src in code for m in STUB.finditer(src)}:
        defs = [src for src in code if re.search(rf"^def {name}\(", src, re.M)]
        assert len(defs) == 1, f"{path.name} defines {name} again after its stub: a solution"
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for block in re.findall(r":::\{dropdown\}([^\n]*)\n(.*?)\n:::", _source(cell), re.S):
            title, body = block
            if re.search(r"solution|answer", title, re.I):
                rest = INCLUDE.sub("", body + "\n").replace("```", "").strip()
                assert not rest, (f"{path.name}: the dropdown {title.strip()!r} holds text of its "
                                  f"own; move it to deqlib/solutions: {rest[:80]!r}")


def test_every_solution_module_is_imported_by_name():
    for path in sorted(SOLUTIONS.glob("ch*.py")):
        module = importlib.import_module(f"deqlib.solutions.{path.stem}")
        assert module.__doc__, f"{path.name} needs a docstring naming its chapter"


def test_book_solution_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="no chapter 'ch99'"):
        check.book_solution("ch99", "f")
    with pytest.raises(ValueError, match="no solution named 'nope'"):
        check.book_solution("ch01", "nope")
    with pytest.raises(TypeError):
        check.book_solution(1, "f")


def test_exercise_returns_the_books_solution_only_while_the_readers_is_a_stub(capsys):
    def banach_depth(q, eps):
        raise NotImplementedError("your code here")

    used = check.exercise(banach_depth, 0.95, 1e-8, expected=360, solution="ch01")
    assert used is check.book_solution("ch01", "banach_depth")
    assert "the book's solution ✓" in capsys.readouterr().out

    def banach_depth(q, eps):  # noqa: F811 - the reader's (wrong) attempt
        return 1

    assert check.exercise(banach_depth, 0.95, 1e-8, expected=360, solution="ch01") is banach_depth
    assert "✗" in capsys.readouterr().out


def test_a_book_solution_that_fails_its_check_raises():
    def banach_depth(q, eps):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="fails its own check"):
        check.exercise(banach_depth, 0.95, 1e-8, expected=361, solution="ch01")


# ------------------------------------------------------------------ the prose answers' claims


@pytest.fixture(scope="module")
def runs():
    """``runs(record.run_…)``: the record's run, once for this module (claims and tables)."""
    done = {}

    def get(run):
        if run not in done:
            done[run] = run()
        return done[run]

    return get


def test_ch01_exercise_4_nonnormal_weight_converges_without_a_contraction():
    """The answer's claims: ‖W‖₂ = 3, ρ = 0.5; most starts grow at step 1, by up to about 3;
    starts need steps on both sides of log ε / log ρ ≈ 33; diag(1, 10) gives the factor 2/3."""
    from deqlib.solutions import ch01

    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)  # as in the chapter
        try:
            W4, W = ch01.nonnormal_weight(0.5, 3.0, 4), ch01.nonnormal_weight(0.5, 3.0, 2)
        finally:
            torch.set_default_dtype(torch.float32)
    check.close(torch.linalg.matrix_norm(W4, ord=2), 3.0, tol=1e-12)
    check.close(torch.linalg.eigvals(W4).abs().max(), 0.5, tol=1e-12)
    scale = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    check.close(torch.linalg.matrix_norm(scale @ W @ scale.inverse(), ord=2), 2 / 3, tol=1e-12)
    b = torch.ones(2, dtype=torch.float64)
    z_fix = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - W, b)
    z = 10 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    e_0, err = (z - z_fix).norm(dim=1), []
    for _ in range(100):
        z = z @ W.T + b
        err.append((z - z_fix).norm(dim=1) / e_0)
    err = torch.stack(err)
    steps = (err <= 1e-10).int().argmax(dim=0) + 1
    assert (err[-1] <= 1e-10).all()  # converged from every start
    assert (err[0] > 1).sum() > 500  # "most of the random starts grew"
    assert 2.9 < err[0].max() <= 3.0 + 1e-12  # "close to that factor", never above ‖W‖₂
    assert steps.min() < 33 < 34 < steps.max()  # both sides of log ε / log ρ ≈ 33


def test_ch01_exercise_5_certified_error_is_within_its_factor_and_settles_near_12():
    """The answer's claims: the bound over the error lies in [1, (1 + q)/(1 - q)] at every depth,
    λ₁ (largest modulus) of J is a complex pair, and |1 - λ₁|/(1 - q) is about 12, near which the
    printed ratios settle."""
    from deqlib.solutions import ch01

    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)  # as in the chapter
        try:
            layer = deqlib.TanhDEQ(8, 32, max_norm=0.9, generator=torch.Generator().manual_seed(0))
            W_z = layer.effective_W_z().detach()
            f = layer.map(torch.randn(1, 8, generator=torch.Generator().manual_seed(1)))
            z_ref = deqlib.solve(f, torch.zeros(1, 32), method="picard", tol=1e-15,
                                 max_iter=500).z
            q = torch.linalg.matrix_norm(W_z, ord=2).item()
            z, ratios = torch.randn(1, 32, generator=torch.Generator().manual_seed(2)), []
            for _ in range(31):
                ratios.append((ch01.certified_error(f, z, q) / (z - z_ref).norm()).item())
                z = f(z)
            eig = torch.linalg.eigvals((1 - z_ref[0] ** 2)[:, None] * W_z)
        finally:
            torch.set_default_dtype(torch.float32)
    lam = eig[eig.abs().argmax()]
    settle = (1 - lam).abs().item() / (1 - q)
    assert all(1 <= r <= (1 + q) / (1 - q) for r in ratios), ratios
    assert abs(lam.imag) > 0.1  # "a complex pair"
    assert round(settle) == 12, settle  # "about 12 on this layer"
    assert all(abs(r / settle - 1) < 0.1 for r in ratios[10:]), ratios  # "settles near"


@pytest.mark.parametrize("name", list(record.RECORDS))
def test_a_records_stored_output_is_what_a_fresh_run_prints(name, runs):
    """Numbers as numbers, to one unit in their last printed digit (the notebook tests' rule);
    runs of spaces count as one, so a number one digit longer may shift a column."""
    rec = record.RECORDS[name]
    assert rec.path.is_file(), (f"{rec.path} is missing: write it with "
                                f"`python -m deqlib.solutions.record {name}` and commit it")
    stored, fresh = (re.sub(r" +", " ", text) for text in (rec.path.read_text(),
                                                           rec.text(runs(rec.run))))
    mismatches = compare_text(stored, fresh)
    assert not mismatches, (
        f"{rec.path.name} is not what {name} prints now:\n" + "\n".join(map(str, mismatches))
        + f"\nif the change is intended, rewrite it (`python -m deqlib.solutions.record {name}`)"
        " and check that the answer's prose still quotes the printed numbers")


SHOWN = re.compile(r"```\{literalinclude\} /deqlib/solutions/outputs/(\S+)\n:language: text\n```")


def test_every_record_is_shown_by_its_answer_and_every_output_has_a_record():
    files = {rec.path.name: rec for rec in record.RECORDS.values()}
    shown = {}
    for md in sorted(SOLUTIONS.glob("ch*.md")):
        for section in re.findall(r"<!-- (.*?) -->\n(.*?)<!-- end -->", md.read_text(), re.S):
            for name in SHOWN.findall(section[1]):
                shown[name] = (md.stem, section[0])
    for name, rec in files.items():
        number = re.fullmatch(r"exercise_(\d+)", rec.function)
        where = (rec.chapter, f"exercise {number.group(1)}") if number else None
        assert name in shown, (f"{rec.chapter}.md does not show {name}: add ```{{literalinclude}}"
                               f" /deqlib/solutions/outputs/{name} with :language: text to the "
                               f"answer that quotes {rec.name}'s numbers")
        assert where is None or shown[name] == where, f"{name} is shown in {shown[name]}"
    stale = sorted(set(shown) - set(files))
    assert not stale, f"the answers show {stale}, which no record in record.RECORDS writes"
    unused = sorted(p.name for p in record.OUTPUTS.glob("*.txt") if p.name not in files)
    assert not unused, f"{unused} in {record.OUTPUTS} belong to no record: delete them"


def test_ch01_exercise_3_both_starts_reach_one_point_where_rho_J_is_below_one(runs):
    out = runs(record.run_ch01_exercise_3)
    assert out["converged"]
    assert out["gap"] < 1e-9  # "a relative difference below 1e-9"
    assert 0.625 <= out["rho"] < 0.635, out  # "about 0.63"


def test_performance_exercise_1_picard_beats_the_spectral_radius_prediction():
    """performance.md, exercise 1: the numbers its answer quotes, on the reference problem."""
    from deqlib.functional import tanh_map
    from deqlib.monitor import predicted_picard_steps, spectral_radius

    p = deqlib.reference_tanh_problem(0.99, batch=64, dtype=torch.float32)
    injection = p.x @ p.W_x.T
    f = lambda z: tanh_map(z, p.W_z, injection)  # noqa: E731
    r = deqlib.solve(f, p.z0(), method="picard", tol=1e-4, max_iter=2000)
    res, radius = r.residuals, spectral_radius(f, r.z).max().item()   # res[k - 1]: after step k
    assert r.steps == 169 and 0.9605 <= radius < 0.9615, (r.steps, radius)
    assert round(predicted_picard_steps(0.96, 1e-4)) == 226  # "226 with the rounded 0.96"
    assert round(predicted_picard_steps(radius, 1e-4)) == 234  # "234 with the unrounded"
    assert 0.995 <= res[0] <= 1.005, res[0]  # "from 1 after the first step"
    assert 0.00245 <= res[59] < 0.00255, res[59]  # "to 0.0025 after step 60"
    assert 0.895 <= (res[59] / res[0]) ** (1 / 59) < 0.905  # "about 0.90 per step" (1-60)
    slow = (res[-1] / res[-61]) ** (1 / 60)
    assert 0.9705 <= slow < 0.9715, slow  # "0.971 per step" over the last 60
    assert 0.0125 <= res[-1] / slow ** (r.steps - 1) < 0.0135  # "about 1.3 %" at the first step
    assert 105 <= math.log(res[59] / 1e-4) / -math.log(slow) < 115  # "about 110 at 0.971"


def test_performance_exercise_2_the_backward_that_fits_a_memory_budget():
    """performance.md, exercise 2: the stored backward sweep's numbers its answer quotes."""
    from deqlib.functional import tanh_map

    stored = json.loads((ROOT / "benchmarks" / "results" / "backward.json").read_text())
    rows = {r["iterations"]: r for r in stored["rows"]}
    W_z = 256 * 256 * 4  # the printed activations leave out W_z (implicit and unrolled keep it)
    for k, kib, ratio in ((25, 1664, 13.0), (100, 6464, 50.5)):  # "(k + 1) · 64 KiB"
        saved = {m: b - (0 if m == "one_step" else W_z)
                 for m, b in rows[k]["memory_bytes"].items()}
        assert saved["unrolled"] == kib * 1024 == (k + 1) * 64 * 1024, (k, saved)
        assert saved["implicit"] == saved["one_step"] == 128 * 1024, saved  # "128 KiB"
        assert round(saved["unrolled"] / saved["implicit"], 1) == ratio
    assert (31 + 1) * 64 <= 2048 < (32 + 1) * 64  # "up to k = 31"
    time = {k: {m: s / r["seconds"]["implicit"] for m, s in r["seconds"].items()}
            for k, r in rows.items()}
    assert [round(time[25]["unrolled"], 2), round(time[25]["one_step"], 2)] == [0.51, 0.25]
    assert [round(time[100]["unrolled"], 2), round(time[100]["one_step"], 2)] == [1.38, 0.57]
    error = {k: r["error"] for k, r in rows.items()}
    assert f"{error[25]['unrolled']:.1e} {error[25]['implicit']:.1e}" == "4.6e-02 1.7e-02"
    assert round(error[25]["unrolled"] / error[25]["implicit"], 1) == 2.6  # "2.6× larger"
    assert f"{error[100]['implicit']:.1e}" == "1.6e-06"
    assert all(round(error[k]["one_step"], 2) == 0.84 for k in (25, 100))
    p = deqlib.reference_tanh_problem(0.9, batch=64, dtype=torch.float32)  # the forward, live
    injection = p.x @ p.W_x.T
    with pytest.warns(deqlib.ConvergenceWarning):  # exactly 25 steps, on purpose
        forward = deqlib.solve(lambda z: tanh_map(z, p.W_z, injection), p.z0(),
                               method="picard", tol=1e-30, max_iter=25, stall=None)
    assert 7.85e-3 <= forward.residuals[-1] < 7.95e-3, forward.residuals[-1]  # "7.9e-3"


def test_ch02_exercise_3_gram_singular_lambda_fixes_it_and_damping_adds_steps(runs):
    out = runs(record.run_ch02_exercise_3)
    rank, alpha, mixed, steps = out["rank"], out["alpha"], out["mixed"], out["steps"]
    assert rank <= 3  # five residuals in R³: Γ is singular
    assert torch.isfinite(alpha).all()
    check.close(alpha.sum(), 1.0, tol=1e-9)
    assert mixed < 1e-3  # "the mixed residual is small"
    assert steps == {1.0: 134, 0.5: 139, 0.2: 145}, steps  # the counts the answer states


def test_ch02_exercise_4_restarts_send_the_ratio_back_towards_picards():
    """The answer's claims on the map of Fig. 2.3: the restarted runs' ratios per step, memory
    50's between 0.01 and 0.12, and its error at step 13 at the accuracy of z*."""
    from deqlib.solutions import ch02

    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            gen = torch.Generator().manual_seed(0)  # the chapter's map on R^6
            base = torch.randn(6, 6, generator=gen)
            base = base @ base.T
            W = 1.3 * base / torch.linalg.matrix_norm(base, ord=2)
            x = 0.5 * torch.randn(1, 6, generator=gen)
            f = lambda z: torch.tanh(z @ W.T + x)
            z_star = deqlib.picard(f, torch.zeros(1, 6), tol=1e-14, max_iter=500).z
            z_start = z_star + 0.1 * torch.randn(1, 6, generator=gen)
            ratio, error = {}, {}
            for memory in (5, 10, 50):
                e = torch.stack([(ch02.broyden_restarted(f, z_start, memory, k) - z_star).norm()
                                 for k in range(14)])
                ratio[memory], error[memory] = (e[1:] / e[:-1]).tolist(), e.tolist()
        finally:
            torch.set_default_dtype(torch.float32)
    step = lambda memory, k: round(ratio[memory][k - 1], 2)  # ‖e_k‖ / ‖e_{k-1}‖ as printed
    assert ratio[5][:6] == ratio[10][:6] == ratio[50][:6]  # steps 1-6 agree
    assert (step(5, 7), step(5, 12), step(10, 12)) == (0.01, 0.04, 0.01)  # good first steps
    assert (step(5, 8), step(5, 13), step(10, 13)) == (0.53, 0.65, 0.49)  # then back up
    assert [step(50, k) for k in range(7, 13)] == [0.04, 0.01, 0.05, 0.12, 0.10, 0.06]
    assert 5e-14 < error[50][13] < 7e-14  # "about 6e-14, the accuracy of z*"


def test_ch03_exercise_2_twenty_unrolled_steps_err_by_about_rho_to_the_20(runs):
    out = runs(record.run_ch03_exercise_2)
    error, rho_J = out["error"], out["rho_J"]
    assert round(rho_J, 3) == 0.887, rho_J  # "at most 0.887 over the 64 samples"
    assert rho_J**20 <= 0.091  # "ρ(J)^20 ≤ 0.091"
    assert round(error, 3) == 0.093, error  # "the measured relative error is 0.093"


def test_ch05_exercise_2_rank_one_gives_gamma_and_rank_two_less(runs):
    out = runs(record.run_ch05_exercise_2)
    S_one, ratio_one = out["rank one"]
    S_two, ratio_two = out["rank two"]
    check.close(S_one, 0.8, tol=1e-9)
    check.close(ratio_one, 1.0, tol=1e-12)
    assert ratio_two < 1 - 1e-3 and S_two < 0.8 * (1 - 1e-3)
    # the numbers the answer states
    assert f"{S_one:.4f}" == "0.8000" and abs(S_one - 0.8) < 1e-12, S_one
    assert f"{ratio_two:.3f}" == "0.771" and f"{S_two:.4f}" == "0.6169", (ratio_two, S_two)


def test_ch10_exercise_3_the_frozen_kernel_bound_breaks_at_width_8_only(runs):
    worst = runs(record.run_ch10_exercise_3)
    assert worst[8] > 1.5
    assert all(0.95 <= worst[m] <= 1.0 for m in (4, 16, 64)), worst


def test_ch10_exercise_6_at_n_16_the_hypothesis_holds_from_width_8(runs):
    out = runs(record.run_ch10_exercise_6)
    assert out[4]["hypothesis"] < 0.5 <= min(out[m]["hypothesis"] for m in (8, 16, 64)), out
    # the numbers the answer states
    assert [f"{out[m]['hypothesis']:.2f}" for m in (4, 8, 16, 64)] == [
        "0.15", "0.79", "0.81", "0.97"], out
    assert f"{max(r['loss_ratio'] for r in out.values()):.1e}" == "3.1e-02", out
    assert f"{max(r['factor'] for r in out.values()):.2f}" == "0.90", out


def test_ch10_exercise_5_relu_expectations_are_the_arc_cosine_kernels():
    # The answer's two closed forms, against Gauss-Hermite quadrature in 2-D (u, v correlated).
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(200)   # for the weight exp(-x^2/2)
    weights = weights / weights.sum()
    x1, x2 = np.meshgrid(nodes, nodes, indexing="ij")
    w = np.outer(weights, weights)
    for s_ii, s_jj, s_ij in [(1.0, 1.0, 0.3), (2.0, 0.5, -0.6), (1.5, 1.2, 1.2)]:
        u = np.sqrt(s_ii) * x1
        v = s_ij / np.sqrt(s_ii) * x1 + np.sqrt(s_jj - s_ij**2 / s_ii) * x2
        phi = np.arccos(s_ij / np.sqrt(s_ii * s_jj))
        degree_1 = np.sqrt(s_ii * s_jj) / (2 * np.pi) * (np.sin(phi) + (np.pi - phi) * np.cos(phi))
        degree_0 = (np.pi - phi) / (2 * np.pi)
        assert abs((w * np.maximum(u, 0) * np.maximum(v, 0)).sum() - degree_1) < 2e-3
        # kinks slow the quadrature down; a wrong formula errs by more than 0.05 here
        assert abs((w * (u > 0) * (v > 0)).sum() - degree_0) < 2e-2


def test_ch11_exercise_3_with_the_bound_on_the_penalty_still_shortens_the_solves(runs):
    out = runs(record.run_ch11_exercise_3)
    bound, free = out["bound"], out["free"]

    def steps(rows):  # mean forward steps over the last three epochs
        return sum(row["forward_steps"] for row in rows[-3:]) / 3

    # the numbers the answer states, to the digits it states them
    assert [round(steps(bound[tau])) for tau in (0.0, 0.1, 1.0)] == [17, 7, 4], bound
    assert [round(steps(free[tau])) for tau in (0.0, 0.1)] == [43, 16], free
    assert f"{steps(bound[0.1]) / steps(bound[0.0]):.2f}" == "0.42"
    assert f"{steps(free[0.1]) / steps(free[0.0]):.2f}" == "0.36"
    assert [f"{bound[tau][-1]['test_acc']:.2f}" for tau in (0.0, 0.1, 1.0)] == [
        "0.96", "0.95", "0.89"]
    assert [f"{bound[tau][-1]['jacobian']:.2g}" for tau in (0.0, 0.1)] == ["1.7", "0.16"]
    assert f"{free[0.0][-1]['jacobian']:.2g}" == "3.8"
    assert steps(bound[0.1]) < steps(free[0.1])  # "the two together: the shortest solves"


def test_ch11_exercise_4_anderson_reaches_the_one_solution_from_every_start(runs):
    out = runs(record.run_ch11_exercise_4)
    assert all(out["converged"]) and all(out["converged_tight"])
    assert max(out["gap"]) < 1e-4
    assert max(out["gap_tight"]) < 1e-8


def test_ch05_exercise_4_the_sqrt_m_law_predicts_m_3072_from_m_1024(runs):
    from deqlib.solutions import ch05

    out = runs(record.run_ch05_gaussian_S_norm)
    prediction, value = out["prediction"], out["measured"]
    assert f"{out['at_1024']:.4f}" == "0.0701", out
    # the numbers the answer states, to the digits it states them
    assert f"{prediction:.4f}" == "0.0405" and f"{out['constant']:.4f}" == "0.0408"
    assert f"{value:.4f}" == "0.0406" and round(value * 3072**0.5, 2) == 2.25, value
    assert abs(value / prediction - 1) < 0.003  # "within 0.3%"
    g = torch.Generator().manual_seed(0)  # the power iteration against eigvalsh at m = 1024
    A = torch.randn(1024, 1024, generator=g, dtype=torch.float64) / 32
    C = A.T @ A
    exact = 0.8 * torch.linalg.eigvalsh(C)[-1].item() / (torch.linalg.matrix_norm(C).item() + 1e-6)
    assert 0 <= 1 - ch05.gaussian_S_norm(1024) / exact < 1e-3


def test_ch06_exercise_2_gamma_barely_moves_the_worst_direction(runs):
    out = runs(record.run_ch06_exercise_2)
    low, high = out["s_min_U_sq"]
    assert 1 <= low <= high < 1.05
    assert round(low, 3) == 1.016 and round(high, 3) == 1.035, (low, high)  # as the answer says
    check.close(torch.tensor(out["lam_min_P"]), torch.tensor(out["s_min_U_sq"]), tol=1e-10)
    assert out["lam_max_U_end"] < 1 / (1 - 0.95)
    assert round(out["lam_max_U_end"], 2) == 6.41, out["lam_max_U_end"]


def test_ch06_exercise_3_training_b_alone_loses_nothing_on_the_chapters_run(runs):
    out = runs(record.run_ch06_exercise_3)
    # the numbers the answer states, to the digits it states them
    assert f"{out['gap_B_only']:.1e}" == "5.1e-11" and f"{out['gap_both']:.1e}" == "1.2e-10", out
    assert round(out["rate_B_only"]) == 136 and round(out["rate_both"]) == 132, out
    start, end = out["s_min_U_sq_start_end"]
    assert round(start, 3) == 1.029 and round(end, 3) == 1.015, (start, end)
    assert out["gap_B_only"] < out["gap_both"]  # "nothing is lost" on this run


def test_ch06_exercise_4_the_step_can_be_five_times_the_gauss_newton_heuristic(runs):
    out = runs(record.run_ch06_stability_threshold)
    eta_c, omega0, top = out["eta_c"], out["omega0"], out["hessian_start"]
    # the numbers the answer states, to the digits it states them
    assert f"{eta_c:.1e}" == "1.3e-03" and round(eta_c * omega0, 1) == 5.5, eta_c
    assert round(omega0, -1) == 4270 and f"{2 / omega0:.1e}" == "4.7e-04"
    assert round(1e-4 * omega0, 2) == 0.43
    assert round(top, -2) == 4900 and f"{2 / top:.1e}" == "4.1e-04" and 2 / top < 2 / omega0
    assert round(out["hessian_end"], -2) == 1900
    assert round(eta_c / (2 / top)) == 3  # "steps up to about three times 2/λ_max"
    loss = out["loss_above"]  # just above η_c: a rise at the second step, then falls again
    rises = [k for k in range(10) if loss[k + 1] > loss[k]]
    assert rises == [1], rises
    assert loss[-1] < loss[1]

def test_ch07_exercise_3_step_scales_with_eps_and_multiplier_stays_one(runs):
    run = runs(record.run_ch07_exercise_3)
    out = run["runs"]
    (eps_1, radius_1, v_1, nu_1), (eps_9, radius_9, v_9, nu_9) = out[0.1], out[0.9]
    check.close(v_9 / v_1, 9.0, tol=1e-10)
    check.close(eps_9 / eps_1, 9.0, tol=1e-12)
    check.close(nu_1, 1.0, tol=1e-8)
    check.close(nu_9, 1.0, tol=1e-8)
    assert abs(radius_9 - radius_1) > 1e-3 * radius_1          # the radius changes ...
    assert abs(radius_9 / radius_1 - 9) > 1                     # ... not in proportion to ε
    # the closed form Δ² = ε gᵀPg − ε² gᵀPHPg (its pieces from theory, at the chapter's start)
    gPg, gPHPg, lam_max, r = run["gPg"], run["gPHPg"], run["lam_max"], run["r"]
    for eps, radius in ((eps_1, radius_1), (eps_9, radius_9)):
        check.close(radius**2, eps * gPg - eps**2 * gPHPg, tol=1e-9)
    check.close(eps_9, 0.9 / lam_max, tol=1e-12)                 # ε = f / λ_max
    # the numbers the answer states (the record prints them)
    assert round(r, 3) == 0.971, r
    assert round((radius_9 / radius_1) ** 2, 3) == 1.259, radius_9 / radius_1
    check.close((radius_9 / radius_1) ** 2, 9 * (1 - 0.9 * r) / (1 - 0.1 * r), tol=1e-9)
    assert f"{radius_1:.2f}" == "13.85" and f"{radius_9:.2f}" == "15.54", (radius_1, radius_9)
    # not monotone: Δ² ∝ f(1 − fr) peaks at f = 1/(2r) ≈ 0.515, where Δ ≈ 23.39
    assert run["f_peak"] == 1 / (2 * r) and round(run["f_peak"], 3) == 0.515, run["f_peak"]
    check.close(run["radius_peak"] ** 2, run["f_peak"] / lam_max * gPg * (1 - run["f_peak"] * r),
                tol=1e-12)
    assert f"{run['radius_peak']:.2f}" == "23.39", run["radius_peak"]
    assert run["radius_peak"] > max(radius_1, radius_9) + 5     # rises, then falls


def test_ch07_exercise_4_any_positive_definite_p_gives_a_trust_region_step():
    from deqlib.solutions import ch07

    for seed in range(3):
        step, v, multiplier, lam_min = ch07.exercise_4(*record.chapter_6_problem(), seed=seed)
        assert lam_min < 0.2, lam_min                          # P is not ⪰ I
        check.close(step, v, tol=1e-10)
        check.close(multiplier, 1.0, tol=1e-8)


@pytest.fixture(scope="module")
def ch04_runs(runs):
    """Chapter 4's exercise runs, once for all the claims and the records (about 15 s)."""
    return runs(record.chapter_4_runs)


def test_ch04_exercise_2_without_the_bound_the_solves_cost_more(ch04_runs):
    bounded, free = ch04_runs[2]["bounded"], ch04_runs[2]["unbounded"]
    assert free["W_norm"][0] > 1 and min(free["W_norm"][1:]) > 1.5
    assert max(free["J_norm"][1:]) > 0.95 and max(bounded["J_norm"]) <= 0.9
    assert max(free["J_radius_max"]) < 1
    from deqlib.monitor import predicted_picard_steps
    assert deqlib.Anderson().max_iter == 100  # "100 steps by default"
    # Picard passes the limit "as soon as ρ(J) > 0.912"; "0.96 … ≈ 226 steps, more than twice the
    # limit"; "after epoch 5 it is 0.92, 110 steps" (the radii themselves: the record's table)
    assert predicted_picard_steps(0.912, 1e-4) < 100 < predicted_picard_steps(0.9121, 1e-4)
    assert round(predicted_picard_steps(0.96, 1e-4)) == 226 > 2 * deqlib.Anderson().max_iter
    assert round(predicted_picard_steps(0.92, 1e-4)) == 110
    radii = free["J_radius_max"]
    assert round(max(radii), 2) == 0.96 and round(radii[5], 2) == 0.92
    assert sum(free["forward_solves"][1:]) == 176  # "5 of the 176 forward solves"
    assert 2 * sum(free["forward_unconverged"]) < sum(free["forward_solves"][1:])  # "most"
    for a, b in zip(free["forward_steps"][1:], bounded["forward_steps"][1:]):
        assert a >= 1.3 * b, (a, b)
    # "5 of the 176 … (4 in epoch 2, 1 in epoch 6)" is said of the recorded run only, whose
    # table shows the counts: whether a solve hits the limit is chaotic (float32 training
    # without a contraction), so only "every adjoint solve converged" is asserted here.
    assert sum(free["backward_unconverged"]) == 0
    assert sum(bounded["forward_unconverged"]) + sum(bounded["backward_unconverged"]) == 0
    assert free.last["test_acc"] <= bounded.last["test_acc"]


def test_ch04_exercise_3_a_tighter_tolerance_costs_a_few_steps_and_no_accuracy(ch04_runs):
    from deqlib.monitor import predicted_picard_steps
    from deqlib.solutions import ch04

    loose, tight = ch04_runs[3][1e-4], ch04_runs[3][1e-6]
    for phase, (low, high) in (("forward", (2, 6)), ("backward", (1.5, 3.5))):   # adjoint "2 to 3"
        for a, b in zip(tight[f"{phase}_steps"][1:], loose[f"{phase}_steps"][1:]):
            assert low <= a - b <= high, (phase, a, b)
        assert sum(tight[f"{phase}_unconverged"]) == 0
    for a, b in zip(tight["test_acc"], loose["test_acc"]):
        assert abs(a - b) <= 0.005
    # "the forward solve takes about a third more steps (about 17 instead of 13 …), the adjoint
    # about a fifth more (about 14 instead of 12, 2 to 3 more steps in every epoch)"
    for phase, counts, (low, high) in (("forward", (17, 13), (1.25, 1.42)),
                                       ("backward", (14, 12), (1.15, 1.25))):
        mean = [sum(h[f"{phase}_steps"][1:]) / 8 for h in (tight, loose)]
        assert [round(m) for m in mean] == list(counts) and low <= mean[0] / mean[1] <= high
    assert round(ch04.extra_picard_steps(0.5), 1) == 6.6
    # "9 to 13 at ρ = 0.6 to 0.7", where the largest ρ(J) lies: "between 0.55 and 0.75"
    assert round(ch04.extra_picard_steps(0.6)) == 9 and round(ch04.extra_picard_steps(0.7)) == 13
    radii = loose["J_radius_max"][1:]
    assert 0.55 <= min(radii) and max(radii) <= 0.75
    assert ch04.extra_picard_steps(0.5) == pytest.approx(
        predicted_picard_steps(0.5, 1e-6) - predicted_picard_steps(0.5, 1e-4))


def test_ch04_exercise_4_a_deeper_mlp_has_more_parameters_and_no_better_accuracy(ch04_runs):
    from deqlib.solutions import ch04

    count, history = ch04_runs[4]
    assert count == 5482 == ch04.mlp_parameters(3, 64, 10)
    assert ch04.mlp_parameters(0, 64, 10) == 64 * 32 + 32 + 10 * 32 + 10
    assert ch04.mlp_parameters(13, 64, 10) == 15722
    assert round(100 * (5482 / 3434 - 1)) == 60  # "60 % more parameters"
    deq = ch04_runs[2]["bounded"]
    assert history.last["test_acc"] < deq.last["test_acc"]
    assert history.last["test_acc"] < ch04_runs["mlp1"][1].last["test_acc"]
    assert ch04_runs["mlp1"][0] == 3434
    assert round(sum(deq["forward_steps"][1:]) / 8) == 13


def test_ch04_exercise_4_the_solution_passes_the_check_on_mnist_too():
    """USE_MNIST=True: the check counts a 13-layer MLP on 784 pixels (no download needed)."""
    from torch import nn

    from deqlib.solutions import ch04

    for in_features, classes in ((64, 10), (784, 10), (3 * 32 * 32, 100)):
        hidden = [m for _ in range(13) for m in (nn.Linear(32, 32, bias=False), nn.Tanh())]
        deep = nn.Sequential(nn.Linear(in_features, 32), nn.Tanh(), *hidden,
                             nn.Linear(32, classes))
        count = sum(p.numel() for p in deep.parameters())
        assert ch04.mlp_parameters(13, in_features, classes) == count, (in_features, classes)


def test_ch04_solutions_use_only_what_the_chapter_defines():
    """A reader pastes a solution into the notebook and runs it: every global name it reads
    must be bound by the chapter's code cells too (no private helper of the solutions module)."""
    import builtins
    import inspect

    from deqlib.solutions import ch04

    bound = set()
    for cell in _cells(ROOT / "book" / "04_training_a_deq.ipynb"):
        if cell["cell_type"] == "code":
            code = "\n".join(re.sub(r"^(\s*)%.*", r"\1pass", line)  # IPython magics
                             for line in _source(cell).splitlines())
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    bound.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    bound.add(node.id)
    for name, fn in inspect.getmembers(ch04, inspect.isfunction):
        if fn.__module__ == ch04.__name__:
            missing = {used for used in fn.__code__.co_names
                       if used in vars(ch04) and not hasattr(builtins, used)} - bound
            assert not missing, f"ch04.{name} uses {sorted(missing)}, which the chapter lacks"


def test_ch04_self_check_2_the_dense_deq_norm_falls_while_its_radius_rises(ch04_runs):
    h = ch04_runs[2]["bounded"]
    assert h["J_norm"][-1] < h["J_norm"][0] and h["J_radius"][-1] > h["J_radius"][0]
    assert h["W_radius"][-1] > h["W_radius"][0] and h["slope"][-1] < h["slope"][0]
    assert h["picard_steps"][-1] > h["picard_steps"][0]
    assert all(0.88 <= w <= 0.9 for w in h["W_norm"])


def test_ch08_exercise_2_depth_3_leads_the_linear_model_on_every_seed_at_the_rate_0_02(runs):
    from deqlib import stats

    result = runs(record.run_ch08_exercise_2)
    acc, loss = result["test_acc"], result["train_loss"]
    assert (acc["n"], acc["positive"], acc["verdict"]) == (5, 5, "a > b")     # higher accuracy
    assert (loss["n"], loss["negative"], loss["verdict"]) == (5, 5, "a < b")  # lower loss
    assert acc["sign_p"] == loss["sign_p"] == 0.0625 == stats.smallest_sign_p(5)
    # the magnitudes ch08.md states: about 4.7 points [1.7, 7.7], training loss about 0.1 lower
    assert 4.2 < 100 * acc["mean"] < 5.2, acc
    assert 1.2 < 100 * acc["interval"][0] < 2.2 and 7.2 < 100 * acc["interval"][1] < 8.2, acc
    assert -0.12 < loss["mean"] < -0.08, loss


def test_ch09_exercise_2_from_zero_both_reach_the_minimum_norm_interpolant(runs):
    out = runs(record.run_ch09_exercise_2)  # the chapter's toy(0) and linear_gd
    gd, limit, min_norm = out["gd"], out["limit"], out["min_norm"]
    check.close(gd, min_norm, tol=1e-8)
    check.close(limit, min_norm, tol=1e-12)
    # the toy interpolates exactly (Y = teacher·Φ) and W_0 = 0 is not already there
    check.close(min_norm @ record.chapter_9_toy(0)[0], record.chapter_9_toy(0)[1], tol=1e-10)
    assert min_norm.norm() > 1


def test_ch09_exercise_4_counts_on_100_digits(runs):
    m, zero, inked, images, rank = runs(record.run_ch09_exercise_4)
    assert (m, zero, inked, rank) == (64, 8, 4, 55)   # the numbers ch09.md states
    assert images >= 1
