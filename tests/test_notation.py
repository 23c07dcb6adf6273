"""The notation page is a symbol index: every symbol links to where the book introduces it.

These tests keep the index from rotting without building the book: every cross-reference on
book/notation.md ({ref}, {numref}, {prf:ref}, {eq}, {doc}) must name a label or a page that
exists in the book's sources, and every row of the index must carry such a link. The full
-W -n build (tests/test_book_build.py) checks the same, slowly; this runs in a second. And every
letter of the chapters' mathematics (and of the answers they include) must appear somewhere on
the page: a letter no table, list or exception mentions is a symbol the index forgot. (Whether
each use has the meaning the page gives is for a reader to check: a letter's meaning is not
machine-readable.)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTATION = BOOK / "notation.md"
SOLUTIONS = ROOT / "deqlib" / "solutions"

#: The roles a link on the notation page may use, and what each must point to.
ROLE = re.compile(r"\{(ref|numref|prf:ref|eq|doc)\}`([^`]*)`")
#: Where the book defines labels: a MyST target line, a directive's :label: or :name:, a
#: labelled equation, and a glued figure's name in a code cell's metadata.
TARGET = re.compile(r"^\((?P<target>[\w-]+)\)=\s*$", re.M)
OPTION = re.compile(r"^:(?:label|name):\s*(?P<option>[\w-]+)\s*$", re.M)
EQUATION = re.compile(r"\$\$\s*\((?P<equation>[\w-]+)\)\s*$", re.M)


def _markdown_sources() -> dict[str, str]:
    """Each page's markdown (notebook markdown cells joined), by page name (``book/...``)."""
    pages = {}
    for path in sorted(BOOK.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        pages[path.stem] = "\n".join("".join(c["source"]) for c in cells
                                     if c["cell_type"] == "markdown")
    for path in sorted(BOOK.glob("*.md")):
        pages[path.stem] = path.read_text()
    return pages


def _figure_names() -> list[str]:
    names = []
    for path in sorted(BOOK.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
            if "name" in figure:
                names.append(figure["name"])
    return names


def book_labels() -> list[str]:
    """Every label the book defines (with repeats, so that duplicates can be found)."""
    labels = _figure_names()
    for text in _markdown_sources().values():
        for pattern in (TARGET, OPTION, EQUATION):
            labels += [m.group(1) for m in pattern.finditer(text)]
    return labels


def links(text: str) -> list[tuple[str, str]]:
    """The (role, target) pairs of a page: the target is the part in <…> when a title is given."""
    found = []
    for role, body in ROLE.findall(text):
        titled = re.fullmatch(r"(?s).*<([^<>]+)>\s*", body)
        found.append((role, (titled.group(1) if titled else body).strip()))
    return found


def unresolved(text: str, labels: set[str], pages: set[str]) -> list[str]:
    """The links of ``text`` that point nowhere, as ``{role}`target``` strings."""
    bad = []
    for role, target in links(text):
        if role == "doc":
            ok = target.removeprefix("book/").removesuffix(".md").removesuffix(".ipynb") in pages
        else:
            ok = target in labels
        if not ok:
            bad.append(f"{{{role}}}`{target}`")
    return bad


#: Inline ($…$) and display ($$…$$) math, outside code.
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)
#: Code: a fenced block that is not a directive (```python, not ```{prf:theorem}, whose statement
#: is mathematics), and inline `code`.
FENCE = re.compile(r"^(`{3,})(\{[^}\n]*\})?[^\n]*\n.*?^\1[ \t]*$|`[^`\n]*`", re.M | re.S)
#: Words inside math that are not symbols: \text{…}, \operatorname{…}, environment names.
WORDS = re.compile(r"\\(?:text|textrm|mathrm|operatorname|mbox|label|tag|begin|end)\s*\{[^{}]*\}")
GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu "
         "nu xi pi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta "
         "Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega").split()
#: \ell (the loss of a sample) is a letter too, though not a Greek one.
GREEK.append("ell")
#: A symbol letter: a calligraphic/blackboard letter, a Greek letter, or a lone Latin letter
#: (any other command, such as \log or \lVert, is consumed whole and yields nothing).
LETTER = re.compile(r"\\(mathcal|mathbb|mathfrak|mathscr)\s*\{?\s*([A-Za-z])"
                    r"|\\(" + "|".join(GREEK) + r")(?![A-Za-z])|\\[A-Za-z]+|([A-Za-z])")


def without_code(text: str) -> str:
    """``text`` with its code blanked, character for character (so positions keep): a
    directive's fences stay, and the code inside it is blanked too."""
    def blank(m: re.Match) -> str:
        if m.group(2):
            head, body = m.group(0).split("\n", 1)
            return head + "\n" + without_code(body)
        return re.sub(r"[^\n]", " ", m.group(0))
    return FENCE.sub(blank, text)


def math_letters(text: str) -> set[str]:
    """The letters of a page's mathematics: ``x``, ``\\kappa``, ``\\mathcal{L}``, …"""
    found = set()
    for inline, display in (pair[::-1] for pair in MATH.findall(without_code(text))):
        for m in LETTER.finditer(WORDS.sub(" ", inline or display)):
            if m.group(1):
                found.add(f"\\{m.group(1)}{{{m.group(2)}}}")
            elif m.group(3):
                found.add("\\" + m.group(3))
            elif m.group(4):
                found.add(m.group(4))
    return found


def chapter_letters() -> dict[str, set[str]]:
    """Each letter of the chapters' and appendix notebooks' math (answers included), with the
    pages that use it."""
    texts = {name: text for name, text in _markdown_sources().items()
             if (BOOK / f"{name}.ipynb").exists()}
    texts |= {f"deqlib/solutions/{path.name}": path.read_text()
              for path in sorted(SOLUTIONS.glob("ch*.md"))}
    where: dict[str, set[str]] = {}
    for name, text in texts.items():
        for letter in math_letters(text):
            where.setdefault(letter, set()).add(name)
    return where


def index_rows(text: str) -> list[str]:
    """The rows of the symbol tables: table lines whose first cell is a symbol ($…$ or `…`)."""
    return [line for line in text.splitlines()
            if re.match(r"\|\s*(\$|`|\(no symbol\))", line)]


def test_every_link_on_the_notation_page_resolves():
    text = NOTATION.read_text()
    found = links(text)
    assert len(found) >= 50, f"the notation page has only {len(found)} links; is it an index?"
    bad = unresolved(text, set(book_labels()), set(_markdown_sources()))
    assert not bad, ("the notation page links to labels that no page defines (add the label "
                     "where the symbol is introduced, or fix the link): " + ", ".join(bad))


#: The page's symbol tables, by label, with the name the letter list gives each.
SECTIONS = {"notation-linear-algebra": "linear algebra", "notation-part-i": "Part I",
            "notation-part-ii": "Part II", "notation-part-iii": "Part III",
            "notation-part-iv": "Part IV", "notation-docstrings": "docstrings",
            "notation-reused": "reused"}
LETTER_LIST = "notation-letters"
#: A sub- or superscript (its letters are indices, not the symbol): _k, ^{-1}, _{\min}.
SCRIPT = re.compile(r"[_^](\{[^{}]*\}|\\[A-Za-z]+|[^{\\])")
GREEK_ORDER = {name: i for i, name in enumerate(
    "alpha beta gamma Gamma delta Delta epsilon varepsilon zeta eta theta vartheta Theta iota "
    "kappa lambda Lambda mu nu xi Xi pi Pi rho varrho sigma varsigma Sigma tau upsilon Upsilon "
    "phi varphi Phi chi psi Psi omega Omega".split())}


def _letter_order(letter: str) -> tuple:
    """Latin (a, A, b, B, …, with ℓ after l and L), then Greek in its alphabet's order, then
    calligraphic, the rest."""
    if len(letter) == 1:
        return (0, letter.lower(), letter.isupper())
    name = letter.lstrip("\\")
    if name == "ell":                   # ℓ after l and L
        return (0, "l", 2)
    if name in GREEK_ORDER:
        return (1, GREEK_ORDER[name])
    return (2, name)


def letter_list(text: str) -> list[str]:
    """The rows the page's letter list must hold: each letter of a table's symbol column (up to a
    "=" in that cell's math, without sub- and superscripts), with links to the tables it
    appears in, in the page's order."""
    sections: dict[str, list[str]] = {}
    label = None
    for line in text.splitlines():
        target = TARGET.match(line)
        if target:
            label = target.group("target")
        elif label in SECTIONS and index_rows(line):
            symbol_cell = line.split("|")[1]
            for math in re.findall(r"\$([^$]+)\$", symbol_cell):
                math = WORDS.sub(" ", math.split("=")[0])
                while SCRIPT.search(math):
                    math = SCRIPT.sub(" ", math)
                for letter in math_letters(f"${math}$"):
                    if label not in sections.setdefault(letter, []):
                        sections[letter].append(label)
    return [f"| ${letter}$ | " + ", ".join(f"{{ref}}`{SECTIONS[s]} <{s}>`" for s in where) + " |"
            for letter, where in sorted(sections.items(), key=lambda item: _letter_order(item[0]))]


def test_the_letter_list_matches_the_tables():
    """The list at the top of the page says, for each letter, which tables hold it; it is written
    from the tables, so an edit to a table must be copied there (the message gives the rows)."""
    text = NOTATION.read_text()
    block = re.search(rf"^\({LETTER_LIST}\)=\n(.*?)(?=^\(notation-)", text, re.M | re.S)
    assert block, f"the notation page has no ({LETTER_LIST})= section"
    shown = [line for line in block.group(1).splitlines() if index_rows(line)]
    expected = letter_list(text)
    assert len(expected) >= 60, f"only {len(expected)} letters in the tables"
    assert shown == expected, ("the letter list at the top of book/notation.md is out of date; "
                               "its rows should read:\n" + "\n".join(expected))


def test_every_symbol_of_the_index_links_to_where_it_is_introduced():
    rows = index_rows(NOTATION.read_text())
    assert len(rows) >= 60, f"only {len(rows)} symbol rows found on the notation page"
    bare = [row[:60] for row in rows if not ROLE.search(row)]
    assert not bare, f"index rows without a link to where the symbol is introduced: {bare}"


def test_every_letter_of_the_chapters_math_is_on_the_notation_page():
    where = chapter_letters()
    assert len(where) >= 60, f"only {len(where)} letters found in the chapters' math"
    on_page = math_letters(NOTATION.read_text())
    missing = {letter: sorted(pages) for letter, pages in where.items() if letter not in on_page}
    assert not missing, ("letters of the chapters' math that book/notation.md never mentions "
                         "(add a row, a reused letter or a local letter): " + str(missing))


@pytest.mark.parametrize("text, letters", [
    (r"$\kappa x_{\text{out}} + \mathcal{K}_k + \ell$",
     {r"\kappa", "x", r"\mathcal{K}", "k", r"\ell"}),
    (r"$\mathcal N(\mu, \Sigma)$ and $$\lVert v\rVert_2\le\log\varepsilon$$",
     {r"\mathcal{N}", r"\mu", r"\Sigma", "v", r"\varepsilon"}),
    (r"$\operatorname{vec}(X)$, `$q$ in code`, $\begin{pmatrix} a \end{pmatrix}$",
     {"X", "a"}),
    ("```python\nx = '$y$'\n```\nno math here", set()),
    ("```{prf:theorem} T\n$\\kappa$ and `$q$`\n```\n```python\n$p$\n```\n$b$", {r"\kappa", "b"}),
])
def test_the_letter_extraction(text, letters):
    """The extractor: commands and words are not letters, code is not math."""
    assert math_letters(text) == letters


def test_labels_are_unique_across_the_book():
    repeated = [label for label, n in Counter(book_labels()).items() if n > 1]
    assert not repeated, f"labels defined more than once (a link could not tell which): {repeated}"


@pytest.mark.parametrize("text, bad", [
    ("{prf:ref}`thm-banach`", []),
    ("see {ref}`the toolbox <toolbox-pl>`", []),
    ("{eq}`eq-no-such-equation`", ["{eq}`eq-no-such-equation`"]),
    ("{doc}`01_implicit_layers` and {doc}`99_missing`", ["{doc}`99_missing`"]),
    ("{numref}`Fig. %s <fig-not-there>`", ["{numref}`fig-not-there`"]),
])
def test_the_check_finds_broken_links(text, bad):
    """The resolver itself: a link to a missing label or page is reported, a good one is not."""
    assert unresolved(text, set(book_labels()), set(_markdown_sources())) == bad
