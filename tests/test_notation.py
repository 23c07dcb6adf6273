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

import functools
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


#: The tables whose links promise "the place that defines the symbol, which is its first use", and
#: those that name a letter's other uses (a use they name for a page does not count there).
INTRODUCING = ("notation-linear-algebra", "notation-part-i", "notation-part-ii",
               "notation-part-iii", "notation-part-iv")
ELSEWHERE = ("notation-local", "notation-reused")
#: The box that previews a chapter, where a symbol may be named before it is introduced.
PREVIEW = re.compile(r"^:::\{admonition\} What you will learn\n.*?^:::[ \t]*$", re.M | re.S)
HEADING = re.compile(r"^#{1,4} ", re.M)
FIGURE = re.compile(r"^\(figure (?P<figure>[\w-]+)\)$", re.M)
#: A token of LaTeX: a word (\\text{out}, \\operatorname{vec}), a calligraphic or blackboard
#: letter, a command, an escaped character, or one character (braces dropped).
TOKEN = re.compile(r"\\(?:text|textrm|mathrm|operatorname|mbox)\s*\{[^{}]*\}"
                   r"|\\math(?:cal|bb|frak|scr)\s*\{?\s*[A-Za-z]\}?|\\[A-Za-z]+|\\.|[^\s{}]")
#: Environment names, labels and tags: not math.
NOT_MATH = re.compile(r"\\(?:label|tag|begin|end)\s*\{[^{}]*\}")


@functools.cache
def _book_pages() -> dict[str, str]:
    """Each notebook's markdown in the book's order (_toc.yml), a glued figure as a
    ``(figure name)`` line where its cell stands, the preview boxes blanked."""
    pages = {}
    for name in re.findall(r"file:\s*book/([\w-]+)", (ROOT / "_toc.yml").read_text()):
        if (BOOK / f"{name}.ipynb").exists():
            parts = []
            for cell in json.loads((BOOK / f"{name}.ipynb").read_text())["cells"]:
                figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
                if cell["cell_type"] == "markdown":
                    parts.append("".join(cell["source"]))
                elif "name" in figure:
                    parts.append(f"(figure {figure['name']})")
            text = "\n\n".join(parts)
            pages[name] = PREVIEW.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    return pages


def _anchors(text: str) -> dict[str, int]:
    """Where each label of a page starts: its target line, its directive's opening fence, its
    equation's opening $$, its figure's cell."""
    found = {m.group("target"): m.start() for m in TARGET.finditer(text)}
    found |= {m.group("figure"): m.start() for m in FIGURE.finditer(text)}
    found |= {m.group("option"): max(text.rfind("```{", 0, m.start()),
                                     text.rfind(":::{", 0, m.start()))
              for m in OPTION.finditer(text)}
    found |= {m.group("equation"): text.rfind("$$", 0, m.start())
              for m in EQUATION.finditer(text)}
    return found


def _place(text: str, start: int, anchors: list[int]) -> tuple[int, int]:
    """The stretch a link to ``start`` shows a reader: from the label or heading before it (the
    sentence that leads into an equation or a statement) to the end of its section."""
    if start == 0:                                   # a {doc} link: the whole page
        return 0, len(text)
    before = [a for a in anchors if a < start]
    line_end = text.find("\n", start) + 1 or len(text)
    while HEADING.match(text, line_end):             # the heading a label stands on
        line_end = text.find("\n", line_end) + 1 or len(text)
    after = [m.start() for m in HEADING.finditer(text) if m.start() >= line_end]
    return (before[-1] if before else 0), (after[0] if after else len(text))


def _tokens(math: str) -> list[str]:
    """The tokens of some math, environment names left out, and a word or a calligraphic letter
    written one way (\\mathcal L is \\mathcal{L})."""
    return [re.sub(r"\s+", "", re.sub(r"\\(math\w+)\s*\{?\s*([A-Za-z])\}?", r"\\\1{\2}", token))
            for token in TOKEN.findall(NOT_MATH.sub(" ", math))]


def _math(text: str) -> list[tuple[int, list[str]]]:
    """A page's math, as (position, tokens) per $…$ or $$…$$."""
    return [(m.start(), _tokens(m.group(1) or m.group(2)))
            for m in MATH.finditer(without_code(text))]


def _symbol_key(cell: str, generic: bool = False) -> tuple[str | None, ...]:
    r"""The tokens to look for: a row's first symbol, up to its first "=", ",", "\in" or "\le",
    without a generic argument (X) and a closing parenthesis (g(z) is found in g(z, x)).
    ``generic``: the symbol's X and Y stand for any matrix (None: any token), as in the
    linear-algebra table's $\\langle X, Y\\rangle$."""
    symbol = re.split(r"=|,|\\in\b|\\le\b", re.search(r"\$([^$]+)\$", cell).group(1))[0]
    key = _tokens(symbol)
    if key[-3:] == ["(", "X", ")"]:
        key = key[:-3]
    key = key[:-1] if key[-1:] == [")"] else key
    return tuple(None if generic and token in "XY" else token for token in key)


def _uses(key: tuple[str | None, ...], tokens: list[str]) -> bool:
    """``key`` occurs in ``tokens`` (None matches any token), not as a subscript (the k of s_k
    is not k) and, unless it is a lone letter (the d of R^d is d), not as a superscript."""
    n = len(key)
    return any(all(k is None or k == t for k, t in zip(key, tokens[i:i + n]))
               and (i == 0 or tokens[i - 1] not in ("_" if n == 1 else "_^"))
               for i in range(len(tokens) - n + 1))


def first_use_errors(text: str) -> list[str]:
    """For each row of the tables in INTRODUCING, what is wrong with its first link: it goes
    nowhere a notebook defines; the place it shows (``_place``) never uses the symbol; or the
    chapters use the symbol before that place. Uses on a page that the tables in ELSEWHERE
    name for the symbol's letter (a local or a second meaning) do not count. The last check
    skips a lone letter ($x$, $\\lambda$): one section may use it for something else without
    the page listing it (a local letter that no indexed symbol shares), so its first use in the
    text says nothing."""
    pages = _book_pages()
    anchors = {name: _anchors(page) for name, page in pages.items()}
    math = {name: _math(page) for name, page in pages.items()}
    order = list(pages)

    def locate(role: str, target: str) -> tuple[str, int] | None:
        if role == "doc":
            name = target.removeprefix("book/")
            return (name, 0) if name in pages else None
        return next(((name, found[target]) for name, found in anchors.items()
                     if target in found), None)

    rows, elsewhere, label = [], {}, None
    for line in text.splitlines():
        if TARGET.match(line):
            label = TARGET.match(line).group("target")
        elif index_rows(line) and label in INTRODUCING:
            rows.append((line, label == "notation-linear-algebra"))
        elif index_rows(line) and label in ELSEWHERE:
            cells = line.split("|")
            places = {place[0] for place in (locate(*link) for link in links(cells[3])) if place}
            for letter in math_letters(cells[1]):
                elsewhere.setdefault(letter, set()).update(places)
    errors = []
    for row, generic in rows:
        cells = row.split("|")
        key, found = _symbol_key(cells[1], generic), links(cells[3])
        where = locate(*found[0]) if found else None
        if where is None:
            errors.append(f"{cells[1].strip()}: its first link {found[:1]} is to no notebook")
            continue
        page, position = where
        start, end = _place(pages[page], position, sorted(anchors[page].values()))
        if not any(start <= at < end and _uses(key, tokens) for at, tokens in math[page]):
            errors.append(f"{cells[1].strip()}: the place its link shows ({page}, "
                          f"{found[0][1]}) does not use {''.join(k or 'X' for k in key)}")
        if len(key) == 1:       # a lone letter: too often a local letter elsewhere to search for
            continue
        letter = math_letters(f"${key[0] or ''}$")          # the symbol's letter: y of y_i
        skip = set().union(*(elsewhere.get(each, set()) for each in letter))
        first = next(((name, at) for name in order if name not in skip
                      for at, tokens in math[name] if _uses(key, tokens)), None)
        if first and (order.index(first[0]), first[1]) < (order.index(page), start):
            context = pages[first[0]][first[1]:first[1] + 70].replace("\n", " ")
            errors.append(f"{cells[1].strip()}: linked to ({page}, {found[0][1]}), but "
                          f"{first[0]} uses {''.join(k or 'X' for k in key)} earlier: {context!r}")
    return errors


def test_each_link_goes_to_the_first_use_of_its_symbol():
    """The page's promise "Each link goes to the place that defines the symbol, which is its
    first use in the chapters", checked on the text: the linked place uses the symbol, and no
    chapter uses it before (outside the preview boxes and the local and reused meanings)."""
    errors = first_use_errors(NOTATION.read_text())
    assert not errors, "links that miss the symbol's first use:\n" + "\n".join(errors)


@pytest.mark.parametrize("row, fails", [
    ("| $g(z)$ | the residual | ch. 1, {ref}`ch01-fixed-points` |", False),
    ("| $g(z)$ | the residual | ch. 2, {eq}`eq-anderson-weights` |", True),       # ch. 1 first
    ("| $W_z$ | the weight | ch. 1, {eq}`eq-tanh-layer` |", False),
    ("| $W_z$ | the weight | ch. 5, {prf:ref}`def-delm` |", True),                 # not there
    (r"| $\mathcal{L}(W)$ | the objective | ch. 5, {ref}`ch05-objective` |", False),
    (r"| $\mathcal{L}(W)$ | the objective | ch. 5, {prf:ref}`lem-delm-gradients` |", True),
])
def test_the_first_use_check(row, fails):
    """The check itself: a link past the first use, or to a place without the symbol, fails."""
    text = f"(notation-part-i)=\n## T\n\n| symbol | meaning | introduced |\n|---|---|---|\n{row}\n"
    assert bool(first_use_errors(text)) == fails


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
