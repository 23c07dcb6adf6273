"""The chapters as a reader meets them, read statically from the stored notebooks (fast):
numbered figures whose images are stored, short code cells at the book's line length, prose
between code cells, margins instead of bare booleans, exercises the reader completes.

nbval cannot see a figure that is missing from both the stored and the fresh output (a figure
cell that drew nothing, or whose image went to a closed pyplot backend): these tests can.
"""

import re

import pytest
from conftest import BOOK, CHAPTERS, LINE_LENGTH, NOTEBOOKS, load_notebook, load_script

# Static checks of the stored JSON (fast): part of the library's tests, so `make test-lib` runs
# them. Only the test that starts a kernel is marked `book`.

SHORT, LONG, LONG_SHARE = 15, 25, 0.05
#: A cell whose last line is one of these shows a figure (or should).
FIGURE_CALL = re.compile(
    r"^(deqlib\.)?plot\.(lines|semilogy|residual_plot|bars|image_grid)\(|"
    r"^(deqlib\.)?diagrams\.\w+\(|^(deqlib\.)?experiments\.plot_\w+\(|^(fig|figure)$|"
    r"plt\.show\(\)"
)
WIDGET = "application/vnd.jupyter.widget-view+json"


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = cell["source"]
    return (text if isinstance(text, str) else "".join(text)).rstrip()


def images(cell: dict) -> int:
    return sum(
        any(m.startswith("image/") for m in o.get("data", {})) and WIDGET not in o.get("data", {})
        for o in cell.get("outputs", [])
    )


def figure_meta(cell: dict) -> dict | None:
    return cell.get("metadata", {}).get("mystnb", {}).get("figure")


def last_statement(cell: dict) -> str:
    """The cell's last logical line: for a call spanning lines, the line where it starts."""
    lines = [l for l in source(cell).splitlines() if l.strip() and not l.lstrip().startswith("#")]
    depth, start = 0, len(lines) - 1
    for i in range(len(lines) - 1, -1, -1):
        depth += sum(lines[i].count(c) for c in ")]}") - sum(lines[i].count(c) for c in "([{")
        if depth <= 0:
            start = i
            break
    return lines[start].strip() if lines else ""


def where(path, nb, cell) -> str:
    index = nb["cells"].index(cell)
    first = source(cell).splitlines()[0][:60] if source(cell) else ""
    return f"{path.name} cell {index} ({first!r})"


def all_markdown() -> str:
    texts = []
    for path in NOTEBOOKS:
        texts += [source(c) for c in load_notebook(path)["cells"] if c["cell_type"] == "markdown"]
    return "\n".join(texts + [p.read_text() for p in BOOK.glob("*.md")])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_stores_an_image_and_has_a_numbered_figure(path):
    nb = load_notebook(path)
    cells = code_cells(nb)
    assert sum(images(c) for c in cells) >= 1, f"{path.name} stores no image"
    named = [figure_meta(c)["name"] for c in cells if figure_meta(c)]
    assert named, (
        f"{path.name} has no numbered figure: give the cell that draws one the "
        'metadata {"mystnb": {"figure": {"name": "fig-…", "caption": "…"}}}'
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_cell_stored_exactly_one_image(path):
    nb = load_notebook(path)
    missing = []
    for cell in code_cells(nb):
        meta = figure_meta(cell)
        if meta is not None:
            if images(cell) != 1:
                missing.append(
                    f"{where(path, nb, cell)}: figure {meta.get('name')!r} has "
                    f"{images(cell)} image outputs, needs exactly 1"
                )
        elif FIGURE_CALL.search(last_statement(cell)) and images(cell) == 0:
            missing.append(
                f"{where(path, nb, cell)} ends with {last_statement(cell)!r} but stored no image"
            )
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_image_is_a_numbered_captioned_figure(path):
    nb = load_notebook(path)
    bad = []
    for cell in code_cells(nb):
        meta = figure_meta(cell)
        if images(cell) and meta is None:
            bad.append(f"{where(path, nb, cell)}: an image without figure metadata")
        if meta is not None:
            name, caption = meta.get("name", ""), meta.get("caption", "")
            if not re.fullmatch(r"fig-[a-z0-9-]+", name):
                bad.append(f"{where(path, nb, cell)}: figure name {name!r} is not fig-<lowercase>")
            if len(caption.split()) < 3:
                bad.append(
                    f"{where(path, nb, cell)}: figure {name!r} has no real caption ({caption!r})"
                )
    assert not bad, "\n".join(bad)


def test_figure_names_are_unique_and_every_figure_is_referred_to():
    names = [
        figure_meta(c)["name"]
        for p in NOTEBOOKS
        for c in code_cells(load_notebook(p))
        if figure_meta(c) and "name" in figure_meta(c)
    ]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"figure names used twice: {duplicates}"
    prose = all_markdown()
    unreferenced = [
        n for n in names if not re.search(r"\{numref\}`([^`<]*<)?" + re.escape(n) + r">?`", prose)
    ]
    assert not unreferenced, f"figures the prose never refers to with {{numref}}: {unreferenced}"


def test_code_cells_are_short():
    lengths = {}
    for path in NOTEBOOKS:
        nb = load_notebook(path)
        for cell in code_cells(nb):
            lengths[where(path, nb, cell)] = len(source(cell).splitlines())
    too_long = {k: n for k, n in lengths.items() if n > LONG}
    assert not too_long, f"code cells over {LONG} lines: {too_long}"
    long = {k: n for k, n in lengths.items() if n > SHORT}
    allowed = int(LONG_SHARE * len(lengths))
    assert len(long) <= allowed, (
        f"{len(long)} of {len(lengths)} code cells are over {SHORT} lines; at most "
        f"{allowed} ({LONG_SHARE:.0%}) may be: {long}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_two_code_cells_in_a_row(path):
    nb = load_notebook(path)
    cells = nb["cells"]
    pairs = [
        where(path, nb, b)
        for a, b in zip(cells, cells[1:])
        if a["cell_type"] == b["cell_type"] == "code"
    ]
    assert not pairs, f"code cells that follow a code cell with no prose between: {pairs}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_line_over_the_line_length(path):
    nb = load_notebook(path)
    long = [
        f"{where(path, nb, c)} line {i + 1}: {len(line)} columns"
        for c in code_cells(nb)
        for i, line in enumerate(source(c).splitlines())
        if len(line) > LINE_LENGTH
    ]
    assert not long, f"lines over {LINE_LENGTH} columns (pyproject.toml): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checks_print_margins_not_bare_booleans(path):
    nb = load_notebook(path)
    bare = []
    for cell in code_cells(nb):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            text = text if isinstance(text, str) else "".join(text)
            if text.strip() in {"True", "False", "tensor(True)", "tensor(False)"}:
                bare.append(where(path, nb, cell))
    assert not bare, f"outputs that are a bare boolean (print the margin: deqlib.check): {bare}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_an_exercise_the_reader_completes(path):
    nb = load_notebook(path)
    cells = code_cells(nb)
    stubs = [c for c in cells if "raise NotImplementedError" in source(c)]
    checks = [c for c in cells if "check.exercise(" in source(c)]
    assert stubs, f"{path.name}: no exercise stub (a cell that raises NotImplementedError)"
    assert checks, f"{path.name}: no check cell calling check.exercise(...)"
    printed = "".join("".join(o.get("text", "")) for c in checks for o in c["outputs"])
    assert "not done yet" in printed, (
        f"{path.name}: no check cell printed 'not done yet' for the stub"
    )
    # The book's solution lives in deqlib.solutions (tests/test_solutions.py): the check runs it
    # while the reader's function is a stub, and the site shows it in a dropdown.
    assert "the book's solution ✓" in printed, (
        f"{path.name}: no check cell ran the book's solution (check.exercise(..., solution=...))"
    )
    shown = [c for c in nb["cells"] if c["cell_type"] == "markdown"
             and "../deqlib/solutions/" in source(c) and "dropdown" in source(c)]
    assert shown, f"{path.name}: no dropdown shows a solution from deqlib/solutions on the site"


@pytest.mark.book
def test_a_cell_ending_with_a_deqlib_figure_stores_one_png_in_a_fresh_kernel(tmp_path):
    """The display path the figure convention relies on: executed as scripts/execute_notebooks.py
    executes the chapters, a cell that ends with a deqlib Figure stores exactly one PNG, with
    matplotlib.pyplot never imported in the kernel."""
    import nbformat

    runner = load_script("scripts/execute_notebooks.py")
    cells = [
        "import sys\nfrom deqlib import diagrams, plot",
        "plot.lines({'anderson': [1.0, 0.1, 0.01]}, yscale='log')",
        "diagrams.forward_and_adjoint()",
        "with plot.style():\n    fig, ax = plot.subplots()\n    ax.plot([1, 2, 3])\nfig",
        "print('matplotlib.pyplot' in sys.modules)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "figures.ipynb"
    nbformat.write(nb, path)
    runner.execute(path)
    done = load_notebook(path)["cells"]
    assert [images(c) for c in done] == [0, 1, 1, 1, 0]
    assert [o["data"].keys() >= {"image/png"} for c in done[1:4] for o in c["outputs"]] == [
        True
    ] * 3
    assert "".join(done[4]["outputs"][0]["text"]).strip() == "False", "pyplot was imported"
