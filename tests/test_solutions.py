"""The exercises' solutions live in deqlib.solutions, never in a notebook.

A reader on Colab or in Jupyter must meet each exercise without its answer, and "Run all" must
never overwrite an attempt; the site shows each solution in a dropdown that includes it from
deqlib/solutions. These tests check that every such include resolves, that no notebook defines
a solution itself, and that each prose answer's claims hold on a run of the code behind it.
The code solutions are checked by the notebook tests: ``check.exercise(…, solution=…)`` runs the
book's solution through the exercise's check and raises if it fails.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest
import torch

import deqlib
from deqlib import check

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "deqlib" / "solutions"
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
INCLUDE = re.compile(r"```\{(literalinclude|include)\}\s+\.\./deqlib/solutions/(\S+)\n((?::.*\n)*)")
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


def test_ch01_exercise_3_both_starts_reach_one_point_where_rho_J_is_below_one():
    from deqlib.solutions import ch01

    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            layer = deqlib.TanhDEQ(8, 32, max_norm=0.9, generator=torch.Generator().manual_seed(0))
            x = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
            big, rho = ch01.exercise_3(layer, x)
        finally:
            torch.set_default_dtype(torch.float32)
    assert big.converged
    check.close(big.z[1], big.z[0], tol=1e-9)
    assert rho < 1


def test_ch08_exercise_2_depth_3_leads_the_linear_model_on_every_seed_at_the_rate_0_02():
    from deqlib import stats
    from deqlib.solutions import ch08

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = ch08.exercise_2()
    finally:
        torch.set_num_threads(threads)
    acc, loss = result["test_acc"], result["train_loss"]
    assert (acc["n"], acc["positive"], acc["verdict"]) == (5, 5, "a > b")     # higher accuracy
    assert (loss["n"], loss["negative"], loss["verdict"]) == (5, 5, "a < b")  # lower loss
    assert acc["sign_p"] == loss["sign_p"] == 0.0625 == stats.smallest_sign_p(5)


def test_ch09_exercise_2_from_zero_both_reach_the_minimum_norm_interpolant():
    from deqlib import theory
    from deqlib.solutions import ch09

    g = torch.Generator().manual_seed(0)
    Phi = torch.randn(20, 8, generator=g, dtype=torch.float64)
    Y = torch.randn(3, 20, generator=g, dtype=torch.float64) @ Phi

    def gradient_descent(W, Phi, Y, steps=4000):
        eta = 0.5 / torch.linalg.eigvalsh(Phi @ Phi.T)[-1]
        for _ in range(steps):
            W = W - eta * theory.shallow_gradient(W, Phi, Y)
        return W

    gd, limit, min_norm = ch09.exercise_2(Phi, Y, gradient_descent)
    check.close(gd, min_norm, tol=1e-8)
    check.close(limit, min_norm, tol=1e-12)


def test_ch09_exercise_4_counts_on_100_digits():
    from deqlib.solutions import ch09

    m, zero, inked, images = ch09.exercise_4("digits", train_size=100)
    assert (m, zero, inked) == (64, 8, 4)            # the numbers ch09.md states
    assert images >= 1
