"""The notebook tests' numeric comparison (tests/nbval_numbers.py), the machine record that
scripts/execute_notebooks.py stores in each notebook, and book/sanitize.cfg's masks.

The end-to-end test executes a small notebook with the script, edits its stored outputs, and
runs `make test-notebooks NB=...` on it: the Makefile's own command line, plugin included."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import nbformat
import pytest
from conftest import ROOT, load_script
from nbval.plugin import get_sanitize_patterns
from nbval_numbers import (
    DEFAULT,
    Tolerance,
    ToleranceError,
    compare_line,
    compare_text,
    format_provenance,
    last_digit_unit,
    split_numbers,
    tolerance_from_metadata,
)

# -- what is a number --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, numbers",
    [
        ("steps=140, converged=True, residual 8.79e-15", ["140", "8.79e-15"]),
        ("tol 1e-06, 1.2E+03 and -0.5, +3", ["1e-06", "1.2E+03", "-0.5", "+3"]),
        ("3,434 images, accuracy 96.2%", ["3,434", "96.2"]),
        ("tensor([[-0.0012,  1.2345e+00]])", ["-0.0012", "1.2345e+00"]),
        ("0.4123 ≤ 1.3 (ratio 0.317)", ["0.4123", "1.3", "0.317"]),
        # digits glued to words are text: identifiers, labels, dtypes, shapes, versions, units
        ("x1 fig-2 W_z2 float32 3x3 256-dim 2.5ms torch 2.14.1", []),
        ("inf, -inf, nan", []),
        ("step 5 of 10: x1=2", ["5", "10", "2"]),
    ],
)
def test_split_numbers(text, numbers):
    pieces, found = split_numbers(text)
    assert found == numbers
    assert len(pieces) == len(found) + 1
    assert "".join(p + n for p, n in zip(pieces, found + [""])) == text


@pytest.mark.parametrize(
    "number, unit",
    [("8.79e-15", "1E-17"), ("0.960", "0.001"), ("140", "1"), ("1.2E+03", "1E+2"), ("3,434", "1")],
)
def test_one_unit_in_the_last_printed_digit(number, unit):
    assert str(last_digit_unit(number)) == unit


@pytest.mark.parametrize(
    "stored, fresh, passes",
    [
        ("8.79e-15", "8.80e-15", True),
        ("3.6e-15", "4.7e-15", False),
        ("0.960", "0.961", True),
        ("0.960", "0.962", False),
        ("140", "141", True),
        ("140", "280", False),
        ("1.2E+03", "1.3E+03", True),
        ("1.2E+03", "1.4E+03", False),
        ("3,434", "3,435", True),
        ("3,434", "3,534", False),
        ("96.2%", "96.3%", True),
        ("96.2%", "96.4%", False),
        ("-0.0", "0.0", True),
        ("-1.5", "1.5", False),
        ("inf", "inf", True),
        ("inf", "nan", False),
        ("fig-2", "fig-3", False),
        ("float32", "float64", False),
    ],
)
def test_numbers_within_one_unit_of_the_last_digit(stored, fresh, passes):
    assert (compare_line(stored, fresh) == []) is passes


LINE = "steps=140, converged=True, residual 8.79e-15"


def test_a_last_digit_change_passes():
    assert compare_text(LINE + "\n", "steps=141, converged=True, residual 8.80e-15\n") == []


def test_a_doubled_number_fails_and_says_by_how_much_and_what_was_allowed():
    [mismatch] = compare_text(LINE, LINE.replace("140", "280"))
    assert mismatch.where == "line 1"
    assert mismatch.problems == ["140 -> 280: differs by 140, allowed 1"]
    assert "stored:   " + LINE in str(mismatch)


def test_a_flipped_verdict_fails():
    [mismatch] = compare_text(LINE, LINE.replace("True", "False"))
    assert mismatch.problems == ["the text differs: 'True' -> 'False'"]


def test_a_changed_word_fails():
    [mismatch] = compare_text(LINE, LINE.replace("residual", "residuum"))
    assert mismatch.problems == ["the text differs: 'residual' -> 'residuum'"]


def test_a_different_count_of_numbers_fails():
    [mismatch] = compare_text(LINE, LINE + " 3")
    assert mismatch.problems == ["the stored line has 2 numbers, this run's 3"]


def test_a_different_count_of_lines_fails_with_a_diff():
    [mismatch] = compare_text(f"{LINE}\nok\n", f"{LINE}\n")
    assert mismatch.where == "the whole output"
    assert "-ok" in mismatch.problems


def test_only_the_differing_lines_are_reported():
    stored = "a 1.00\nb 2.00\nc 3.00"
    fresh = "a 1.01\nb 2.10\nc 3.50"
    assert [m.where for m in compare_text(stored, fresh)] == ["line 2", "line 3"]


# -- a wider tolerance, declared in one cell -------------------------------------------------

WHY = "float32 training: accuracies differ across CPUs"


def test_a_declared_tolerance_is_honoured_and_the_default_is_not_widened():
    declared = tolerance_from_metadata({"nbval": {"rtol": 0.02, "atol": 0, "why": WHY}})
    assert declared == Tolerance(rtol=0.02, atol=0.0, why=WHY)
    assert compare_line("accuracy 0.960", "accuracy 0.970", declared) == []
    assert compare_line("accuracy 0.960", "accuracy 0.990", declared) != []
    assert compare_line("accuracy 0.960", "accuracy 0.970", DEFAULT) != []
    assert tolerance_from_metadata({"tags": ["hide-input"]}) is DEFAULT
    assert WHY in declared.describe()


def test_atol_alone_and_the_last_digit_still_apply():
    declared = tolerance_from_metadata({"nbval": {"atol": 0.005, "why": WHY}})
    assert compare_line("0.960", "0.965", declared) == []
    assert compare_line("0.960", "0.966", declared) != []
    # a declaration never narrows below one unit in the last printed digit
    assert compare_line("140", "141", declared) == []


@pytest.mark.parametrize(
    "declaration, complaint",
    [
        ({"rtol": 0.02}, "without a reason"),
        ({"rtol": 0.02, "why": "  "}, "without a reason"),
        ({"rtol": 0.02, "why": 3}, "without a reason"),
        ({"rtoll": 0.02, "why": WHY}, "unknown keys ['rtoll']"),
        ({"why": WHY}, "neither rtol nor atol"),
        ({"rtol": -0.1, "why": WHY}, "finite and >= 0"),
        ({"atol": float("inf"), "why": WHY}, "finite and >= 0"),
        ({"rtol": "0.02", "why": WHY}, "must be a number"),
        ({"rtol": True, "why": WHY}, "must be a number"),
        (0.02, "must be an object"),
    ],
)
def test_a_malformed_declaration_is_refused(declaration, complaint):
    with pytest.raises(ToleranceError, match=re.escape(complaint)):
        tolerance_from_metadata({"nbval": declaration})


# -- provenance and masks ------------------------------------------------------------------


def test_the_machine_record(monkeypatch):
    import numpy
    import torch

    script = load_script("scripts/execute_notebooks.py")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    record = script.machine()
    assert record["torch"] == torch.__version__ and record["numpy"] == numpy.__version__
    assert record["cpu"] == script.cpu_model() and record["cpu"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", record["date"])
    assert record["MKL_CBWR"] == "COMPATIBLE" and "ATEN_CPU_CAPABILITY" not in record
    assert all(isinstance(v, str) for v in record.values()), "short strings only"


def test_torch_blas_reads_torch_config():
    config = (
        "  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for ...\n"
        "  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl, USE_MKL=ON\n"
    )
    script = load_script("scripts/execute_notebooks.py")
    assert script.torch_blas(config) == "mkl 2024.2 (build 20240605), LAPACK mkl"
    assert script.torch_blas("Build settings: BLAS_INFO=open, ") == "open"


def test_the_provenance_report_names_the_differences():
    stored = {"date": "2026-12-01", "torch": "2.5.0", "cpu": "Intel Xeon"}
    current = {"date": "2026-12-07", "torch": "2.5.0", "cpu": "AMD EPYC"}
    lines = format_provenance(stored, current)
    assert (
        lines[0] == "stored outputs were recorded on: date 2026-12-01; torch 2.5.0; cpu Intel Xeon"
    )
    assert lines[1] == "this run: torch 2.5.0; cpu AMD EPYC"
    assert lines[2] == "differences: cpu"
    assert "unknown" in format_provenance(None, None)[0]


SANITIZE = ROOT / "book" / "sanitize.cfg"


def sanitize(text: str) -> str:
    """Apply book/sanitize.cfg exactly as nbval does (its own parser, rules in order)."""
    for regex, replacement in get_sanitize_patterns(SANITIZE.read_text()):
        text = re.sub(regex, replacement, text)
    return text


def test_nbval_reads_every_rule_of_sanitize_cfg():
    text = SANITIZE.read_text()
    assert len(get_sanitize_patterns(text)) == len(re.findall(r"(?m)^regex: ", text))


@pytest.mark.parametrize(
    "line",
    [
        # deqlib.check's margins are numbers: compared as numbers, never masked
        "grad: relative difference 3.1e-13 (tolerance 1e-09)",
        "yours: 9 expected: 9 ✓ (relative difference 1.1e-16, tolerance 1e-06)",
        "gap: 0.4123 ≤ 1.3 (ratio 0.317)",
        "x: -3 ≤ -1 (margin 2)",
        "steps=140, converged=True, residual 8.79e-15",
        "2 s_min, 8 epochs, 3 steps",
    ],
)
def test_sanitize_cfg_masks_no_computed_number(line):
    assert sanitize(line) == line


def test_sanitize_cfg_masks_addresses_times_and_rates():
    assert sanitize("<object at 0x7f3a> in 87.6 ms") == "<object at 0xADDRESS> in TIME"
    assert sanitize("50/50 [00:01<00:00, 35.21it/s]") == "50/50 [ELAPSED<REMAINING, RATE]"


# -- end to end: `make test-notebooks NB=...` on a small executed notebook -------------------

PRINT = f"print({LINE!r})"
#: (source, cell metadata, stored output edit (old, new) or None, expected outcome)
CELLS = [
    (PRINT, {}, None, "passed"),
    (
        PRINT,
        {},
        ("140, converged=True, residual 8.79", "141, converged=True, residual 8.80"),
        "passed",
    ),
    (PRINT, {}, ("steps=140", "steps=280"), "failed"),
    (PRINT, {}, ("converged=True", "converged=False"), "failed"),
    (PRINT, {}, ("residual", "residuum"), "failed"),
    (
        "print('accuracy 0.960')",
        {"nbval": {"rtol": 0.02, "why": WHY}},
        ("0.960", "0.970"),
        "passed",
    ),
    ("print('accuracy 0.960')", {}, ("0.960", "0.970"), "failed"),
    ("print('accuracy 0.960')", {"nbval": {"rtol": 0.02}}, None, "failed"),
    ("0.25 + 0.5", {}, ("0.75", "0.76"), "passed"),
    ("0.25 + 0.5", {}, ("0.75", "0.77"), "failed"),
    (
        "raise ValueError('residual 1.5e-06')",
        {"tags": ["raises-exception"]},
        ("1.5", "1.6"),
        "passed",
    ),
    (
        "raise ValueError('residual 1.5e-06')",
        {"tags": ["raises-exception"]},
        ("1.5", "3.0"),
        "failed",
    ),
    ("print(object())", {}, None, "passed"),
    (PRINT, {"tags": ["nbval-ignore-output"]}, ("140", "280"), "passed"),
    (PRINT, {"tags": ["nbval-skip"]}, None, "skipped"),
]


def edit_outputs(cell, old, new):
    for output in cell.outputs:
        if output.output_type == "stream":
            output.text = output.text.replace(old, new)
        elif output.output_type == "execute_result":
            output.data["text/plain"] = output.data["text/plain"].replace(old, new)
        elif output.output_type == "error":
            output.evalue = output.evalue.replace(old, new)


@pytest.fixture(scope="module")
def nbval_run(tmp_path_factory):
    """Execute the notebook with scripts/execute_notebooks.py, edit its stored outputs, run
    `make test-notebooks NB=...`, and return each cell's outcome, pytest's output and the
    stored machine record."""
    folder = tmp_path_factory.mktemp("nbval")
    path = folder / "numbers.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata=meta) for src, meta, _, _ in CELLS]
    nbformat.write(nb, path)
    load_script("scripts/execute_notebooks.py").execute(path)
    nb = nbformat.read(path, as_version=4)
    for cell, (_, _, edit, _) in zip(nb.cells, CELLS):
        if edit:
            edit_outputs(cell, *edit)
    nbformat.write(nb, path)
    report = folder / "report.xml"
    proc = subprocess.run(
        [
            "make",
            "-o",
            "venv",
            "test-notebooks",
            f"NB={path}",
            f"BIN={os.path.dirname(sys.executable)}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTEST_ADDOPTS": f"--junitxml={report}"},
        timeout=300,
    )
    assert report.exists(), proc.stdout + proc.stderr
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        number = int(case.get("name").removeprefix("Cell "))
        outcomes[number] = (
            "failed"
            if kinds & {"failure", "error"}
            else "skipped"
            if "skipped" in kinds
            else "passed"
        )
    return outcomes, proc.stdout, nb.metadata["deqlib"]["executed_on"]


@pytest.mark.slow
def test_make_test_notebooks_compares_numbers_as_numbers(nbval_run):
    outcomes, output, _ = nbval_run
    expected = {i: outcome for i, (_, _, _, outcome) in enumerate(CELLS)}
    assert outcomes == expected, output[-6000:]


@pytest.mark.slow
def test_a_failure_shows_the_cell_the_numbers_the_tolerance_and_the_recording_machine(nbval_run):
    _, output, recorded = nbval_run
    assert set(recorded) >= {
        "date",
        "python",
        "torch",
        "numpy",
        "cpu",
        "torch_cpu_capability",
        "torch_blas",
        "numpy_blas",
        "torch_threads",
    }
    assert PRINT in output
    assert "stdout, line 1:" in output
    assert "280 -> 140: differs by 140, allowed 1" in output
    assert "tolerance: one unit in the last printed digit of each stored number" in output
    assert f"stored outputs were recorded on: date {recorded['date']}" in output
    assert f"cpu {recorded['cpu']}" in output
    assert "without a reason" in output
    assert (
        "evalue, line 1:" in output
        and "3.0e-06 -> 1.5e-06: differs by 1.5e-06, allowed 1e-07" in output
    )
