"""nbval, comparing the numbers in a notebook's outputs as numbers.

How it is loaded: as a pytest plugin named on the command line, from the repository root,

    python -m pytest -p tests.nbval_numbers --nbval --nbval-current-env \\
        --nbval-sanitize-with book/sanitize.cfg -p no:cacheprovider book/

which is what `make test-notebooks` runs. `python -m` puts the working directory on sys.path,
so `tests.nbval_numbers` imports this file (tests/ has no __init__.py: a namespace package).
It has to be named with -p because pytest loads tests/conftest.py only for what it collects
under tests/, never for book/. nbval stays the runner: this plugin swaps nbval's notebook and
cell items for subclasses whose only change is how a stored output is compared with a fresh one.

The rule. Each text output (text/plain, the stdout and stderr streams, an error's name and
value) is split into numbers and the text between them. The text must be equal, the count of
numbers too, and each fresh number must be within the tolerance of the stored one: by default
ONE UNIT IN THE LAST PRINTED DIGIT of the stored number (pytest's doctest NUMBER rule, here
for integers as well): 8.79e-15 vs 8.80e-15 passes, 3.6e-15 vs 4.7e-15 fails, 0.960 vs 0.961
passes, 0.960 vs 0.962 fails, 140 vs 141 passes, 140 vs 280 fails.

What counts as a number: an optional sign, digits with optional thousands separators (3,434 is
one number), an optional fraction and exponent (1e-06, 8.79e-15, 1.2E+03), standing alone.
Digits glued to a word are text, compared exactly: x1, fig-2, float32, 3x3, 256-dim, 2.5ms,
version strings such as 2.14.1. inf and nan are words, so they must match as text; so must
True/False, and a percentage's % sign. Other outputs (HTML, JSON) are compared exactly, as nbval
does; images are not compared, as nbval does. book/sanitize.cfg's masks (addresses, rates) are
applied to both sides first, as nbval does.

A wider tolerance, for one cell only, is declared in that cell's metadata with a reason:

    {"nbval": {"rtol": 0.02, "atol": 0, "why": "float32 training: accuracies differ across CPUs"}}

A fresh number then passes when |fresh - stored| <= max(one unit in the last printed digit,
atol + rtol * |stored|). rtol and atol are non-negative numbers (at least one of them given);
"why" is required; any other key is refused. nbval's tags keep working: nbval-ignore-output,
nbval-skip, raises-exception.

A failing cell shows its source (nbval), each differing line with the numbers that differ and
the tolerance allowed, and where the stored outputs were recorded (the notebook's
metadata.deqlib.executed_on, written by scripts/execute_notebooks.py) beside this run's machine.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, _trim_base64, transform_streams_for_comparison

#: The cell metadata key holding a wider tolerance, and the keys it may hold.
METADATA_KEY = "nbval"
DECLARATION_KEYS = {"rtol", "atol", "why"}
#: The outputs compared number by number (after nbval's flattening: MIME types of display
#: data, stream names, an error's fields). Every other output is compared exactly.
NUMERIC_KEYS = {"text/plain", "stdout", "stderr", "ename", "evalue"}

_WORD = r"[^\W\d]\w*(?:-\w+)*"  # an identifier keeps its digits: x1, fig-2, W_z, float32
_NUMBER = r"""
    (?<![\w.])                              # not glued to a preceding word, digit or dot
    [-+]?
    (?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)     # 3,434 is one number
    (?:\.[0-9]*)?
    (?:[eE][-+]?[0-9]+)?
    (?!\w|\.[0-9]|-[^\W\d])                 # nor to a following word (256-dim), digit, dot
"""
_TOKEN = re.compile(rf"(?P<word>{_WORD})|(?P<number>{_NUMBER})", re.VERBOSE)


class ToleranceError(ValueError):
    """A cell's tolerance declaration is malformed (the message says how to fix it)."""


@dataclass(frozen=True)
class Tolerance:
    """How far a fresh number may be from the stored one: at least one unit in the stored
    number's last printed digit, or atol + rtol * |stored| where a cell declares more."""

    rtol: float = 0.0
    atol: float = 0.0
    why: str | None = None

    def allowed(self, stored: str) -> Decimal:
        value = to_decimal(stored)
        declared = Decimal(repr(self.atol)) + Decimal(repr(self.rtol)) * abs(value)
        return max(last_digit_unit(stored), declared)

    def describe(self) -> str:
        if self.why is None:
            return "one unit in the last printed digit of each stored number"
        return (
            f"max(one unit in the last printed digit, atol + rtol * |stored|) with "
            f"rtol={self.rtol:g}, atol={self.atol:g}, declared in this cell's metadata "
            f"because: {self.why}"
        )


DEFAULT = Tolerance()


def to_decimal(number: str) -> Decimal:
    return Decimal(number.replace(",", ""))


def last_digit_unit(number: str) -> Decimal:
    """One unit in the last printed digit: 1e-17 for 8.79e-15, 0.001 for 0.960, 1 for 140,
    100 for 1.2E+03."""
    return Decimal(1).scaleb(to_decimal(number).as_tuple().exponent)


def split_numbers(text: str) -> tuple[list[str], list[str]]:
    """The text between numbers (one more piece than numbers) and the numbers, as printed."""
    pieces, numbers, start = [], [], 0
    for match in _TOKEN.finditer(text):
        if match.lastgroup == "number":
            pieces.append(text[start : match.start()])
            numbers.append(match.group())
            start = match.end()
    pieces.append(text[start:])
    return pieces, numbers


def tolerance_from_metadata(metadata: dict) -> Tolerance:
    """The cell's declared tolerance, or the default; ToleranceError if the declaration is
    malformed (unknown keys, no rtol/atol, a negative or non-numeric value, no reason)."""
    declaration = metadata.get(METADATA_KEY)
    if declaration is None:
        return DEFAULT
    example = '{"nbval": {"rtol": 0.02, "atol": 0, "why": "<what varies across machines>"}}'
    if not isinstance(declaration, dict):
        raise ToleranceError(
            f"cell metadata {METADATA_KEY!r} must be an object such as {example}, "
            f"not {declaration!r}"
        )
    unknown = sorted(set(declaration) - DECLARATION_KEYS)
    if unknown:
        raise ToleranceError(
            f"cell metadata {METADATA_KEY!r} has unknown keys {unknown}; the allowed keys "
            f"are {sorted(DECLARATION_KEYS)}, e.g. {example}"
        )
    if not {"rtol", "atol"} & set(declaration):
        raise ToleranceError(
            f"cell metadata {METADATA_KEY!r} declares neither rtol nor atol: {example}"
        )
    values = {}
    for key in ("rtol", "atol"):
        value = declaration.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ToleranceError(f"{METADATA_KEY}.{key} must be a number, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ToleranceError(f"{METADATA_KEY}.{key} must be finite and >= 0, not {value!r}")
        values[key] = float(value)
    why = declaration.get("why")
    if not isinstance(why, str) or not why.strip():
        raise ToleranceError(
            f"cell metadata {METADATA_KEY!r} widens the tolerance without a reason: add "
            f'"why": "<what varies across machines, and why that is acceptable>", e.g. {example}'
        )
    return Tolerance(rtol=values["rtol"], atol=values["atol"], why=why.strip())


@dataclass
class Mismatch:
    """One line (or, when the line counts differ, the whole text) that does not match."""

    where: str
    stored: str
    fresh: str
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(
            [
                f"{self.where}:",
                f"  stored:   {self.stored}",
                f"  this run: {self.fresh}",
                *(f"  {p}" for p in self.problems),
            ]
        )


def changes(stored: str, fresh: str) -> list[str]:
    """The changed words of a text, e.g. ["'True' -> 'False'"]."""
    words = re.compile(r"\w+|\s+|[^\w\s]")
    a, b = words.findall(stored), words.findall(fresh)
    return [
        f"{''.join(a[i1:i2])!r} -> {''.join(b[j1:j2])!r}"
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, False).get_opcodes()
        if tag != "equal"
    ]


def compare_line(stored: str, fresh: str, tolerance: Tolerance = DEFAULT) -> list[str]:
    """What differs between two lines (empty: they match)."""
    stored_text, stored_numbers = split_numbers(stored)
    fresh_text, fresh_numbers = split_numbers(fresh)
    if len(stored_numbers) != len(fresh_numbers):
        return [
            f"the stored line has {len(stored_numbers)} numbers, this run's {len(fresh_numbers)}"
        ]
    if stored_text != fresh_text:
        changed = [
            change for a, b in zip(stored_text, fresh_text) if a != b for change in changes(a, b)
        ]
        return [f"the text differs: {', '.join(changed)}"]
    problems = []
    for a, b in zip(stored_numbers, fresh_numbers):
        difference = abs(to_decimal(a) - to_decimal(b))
        allowed = tolerance.allowed(a)
        if difference > allowed:
            problems.append(
                f"{a} -> {b}: differs by {float(difference):.3g}, allowed {float(allowed):.3g}"
            )
    return problems


def compare_text(stored: str, fresh: str, tolerance: Tolerance = DEFAULT) -> list[Mismatch]:
    """Compare a stored text output with a fresh one, line by line (empty: they match)."""
    stored_lines, fresh_lines = stored.split("\n"), fresh.split("\n")
    if len(stored_lines) != len(fresh_lines):
        diff = list(difflib.unified_diff(stored_lines, fresh_lines, "stored", "this run", n=0))
        return [
            Mismatch(
                "the whole output",
                f"{len(stored_lines)} lines",
                f"{len(fresh_lines)} lines",
                ["line diff (numbers included):", *diff[2:40]],
            )
        ]
    mismatches = []
    for number, (a, b) in enumerate(zip(stored_lines, fresh_lines), start=1):
        if a != b:
            problems = compare_line(a, b, tolerance)
            if problems:
                mismatches.append(Mismatch(f"line {number}", a, b, problems))
    return mismatches


# -- provenance -------------------------------------------------------------------------------


def stored_provenance(nb) -> dict | None:
    return nb.metadata.get("deqlib", {}).get("executed_on")


@functools.cache
def this_machine() -> dict | None:
    """This run's machine, described as scripts/execute_notebooks.py records it (None if that
    script cannot be loaded or fails: the report then shows only the stored record)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "execute_notebooks.py"
    try:
        spec = importlib.util.spec_from_file_location("_execute_notebooks", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.machine()
    except Exception:  # the report is still useful without it
        return None


#: The order in which a machine record is shown (nbformat stores its keys sorted).
PROVENANCE_ORDER = [
    "date", "python", "torch", "numpy", "cpu", "torch_cpu_capability", "torch_blas",
    "numpy_blas", "torch_threads", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
]  # fmt: skip


def format_provenance(stored: dict | None, current: dict | None) -> list[str]:
    """The report's lines: the stored record, this run's, and the keys whose values differ."""

    def line(record: dict) -> str:
        def rank(key):
            return (
                PROVENANCE_ORDER.index(key) if key in PROVENANCE_ORDER else len(PROVENANCE_ORDER)
            )

        return "; ".join(f"{k} {record[k]}" for k in sorted(record, key=rank))

    if stored is None:
        lines = [
            "stored outputs were recorded on: unknown (the notebook has no "
            "metadata.deqlib.executed_on; `make notebooks` records it)"
        ]
    else:
        lines = [f"stored outputs were recorded on: {line(stored)}"]
    if current is not None:
        lines.append(f"this run: {line({k: v for k, v in current.items() if k != 'date'})}")
        if stored is not None:
            keys = [k for k in {**stored, **current} if k != "date"]
            differ = [k for k in keys if stored.get(k) != current.get(k)]
            lines.append(
                f"differences: {', '.join(differ)}"
                if differ
                else "differences: none recorded (same versions, CPU, BLAS and code path: the "
                "change comes from the chapter, the library, or a run-to-run nondeterminism)"
            )
    return lines


# -- the pytest items -------------------------------------------------------------------------


class NumbersNbFile(IPyNbFile):
    """nbval's notebook collector, yielding NumbersNbCell items."""

    def collect(self):
        for cell in super().collect():
            yield NumbersNbCell.from_parent(
                self, name=cell.name, cell_num=cell.cell_num, cell=cell.cell, options=cell.options
            )


class NumbersNbCell(IPyNbCell):
    """nbval's cell item; compare_outputs compares numbers as numbers (see the module)."""

    tolerance, declaration_error = DEFAULT, None

    def runtest(self):
        # A malformed declaration fails the cell, after it ran (later cells need its state)
        # and was compared with the default tolerance.
        try:
            self.tolerance = tolerance_from_metadata(self.cell.metadata)
        except ToleranceError as error:
            self.declaration_error = str(error)
        super().runtest()
        if self.declaration_error:
            self.raise_cell_error("Invalid tolerance declaration", self.declaration_error)

    def _flatten(self, outputs, skip_compare) -> dict[str, list]:
        # As nbval does: every key except the skipped ones, display data's MIME types
        # flattened, streams keyed by name; each value sanitized with book/sanitize.cfg.
        flat = defaultdict(list)
        for output in transform_streams_for_comparison(outputs):
            for key, value in output.items():
                if key in skip_compare:
                    continue
                if key == "data":
                    for mime, data in value.items():
                        if mime not in skip_compare:
                            flat[mime].append(self.sanitize(data))
                else:
                    flat[key].append(self.sanitize(value))
        return flat

    def compare_outputs(self, test, ref, skip_compare=None):
        skip_compare = skip_compare or self.parent.skip_compare
        tolerance = self.tolerance
        fresh, stored = self._flatten(test, skip_compare), self._flatten(ref, skip_compare)
        report = []
        if set(stored) != set(fresh):
            missing, unexpected = (
                sorted(set(stored) - set(fresh)),
                sorted(set(fresh) - set(stored)),
            )
            report.append(
                f"the outputs differ in kind: missing {missing}, unexpected {unexpected}"
            )
            for key in missing + unexpected:
                values = stored.get(key) or fresh.get(key)
                side = "stored" if key in stored else "this run"
                report += [f"{side} {key}:", *(str(_trim_base64(v)) for v in values)]
        for key in sorted(set(stored) & set(fresh)):
            if len(stored[key]) != len(fresh[key]):
                report.append(
                    f"{key}: {len(stored[key])} stored outputs, {len(fresh[key])} in this run"
                )
                continue
            for i, (a, b) in enumerate(zip(stored[key], fresh[key])):
                name = key if len(stored[key]) == 1 else f"{key} #{i + 1}"
                if key in NUMERIC_KEYS and isinstance(a, str) and isinstance(b, str):
                    report += [f"{name}, {m}" for m in compare_text(a, b, tolerance)]
                elif a != b:
                    report += [
                        f"{name} differs (compared exactly):",
                        f"  stored:   {_trim_base64(a)!s}",
                        f"  this run: {_trim_base64(b)!s}",
                    ]
        if report:
            if self.declaration_error:
                report.append(f"invalid tolerance declaration: {self.declaration_error}")
            report.append(f"tolerance: {tolerance.describe()}")
            report += format_provenance(stored_provenance(self.parent.nb), this_machine())
        self.comparison_traceback = report
        return not report


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path, parent):
    """Replace nbval's collector of a notebook with NumbersNbFile."""
    outcome = yield
    result = outcome.get_result()
    if any(type(node) is IPyNbFile for node in result):
        outcome.force_result(
            [
                NumbersNbFile.from_parent(parent, path=file_path)
                if type(node) is IPyNbFile
                else node
                for node in result
            ]
        )
