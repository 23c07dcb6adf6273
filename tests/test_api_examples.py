"""Every example on the API page (book/api.md) runs as written and prints what the page says: a
reader who copies one gets the lines shown under its prints, and an API change that breaks an
example, or changes what it prints, fails here, not in a reader's hands."""

import re

import pytest
from conftest import BOOK

pytestmark = pytest.mark.usefixtures("one_thread")

PAGE = (BOOK / "api.md").read_text()
# the one section that is not a module's: the table of modules and chapters
WITHOUT_EXAMPLE = {"Which module, which chapter"}
SECTIONS = re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", PAGE, re.M | re.S)
EXAMPLES = [(title, re.search(r"^```python\n(.*?)^```", body, re.M | re.S))
            for title, body in SECTIONS if title not in WITHOUT_EXAMPLE]
EXAMPLES = [(title, match.group(1) if match else "") for title, match in EXAMPLES]
# a line that prints: print(...) or a deqlib check (check.close, check.at_most, ...)
PRINTS = re.compile(r"^\s*(print\(|check\.\w+\()")


def expected_output(code: str) -> list[str]:
    """The comment lines directly under a line that prints: what it prints, verbatim."""
    lines, expected = code.splitlines(), []
    for i, line in enumerate(lines):
        if not PRINTS.match(line):
            continue
        for following in lines[i + 1:]:
            if not following.startswith("# "):
                break
            expected.append(following[2:])
    return expected


def test_every_module_section_of_the_api_page_has_an_example():
    missing = [title for title, code in EXAMPLES if not code]
    assert not missing, f"sections of api.md without a ```python example: {missing}"
    assert WITHOUT_EXAMPLE <= {title for title, _ in SECTIONS}


def test_the_page_shows_output_under_prints():
    """Most examples show what they print; the parser must find those lines."""
    shown = [title for title, code in EXAMPLES if expected_output(code)]
    assert len(shown) >= len(EXAMPLES) // 2, shown


def test_the_output_parser_reads_only_comment_lines_under_prints():
    code = 'x = 1\n# a remark\nprint(x)   # trailing\n# 1\n# 2\ny = 2\n# not output\n'
    assert expected_output(code) == ["1", "2"]


@pytest.mark.parametrize("title, code", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_the_example_runs_and_prints_what_the_page_shows(title, code, capsys):
    exec(compile(code, f"api.md: {title}", "exec"), {"__name__": "api_example"})
    captured = capsys.readouterr()
    assert "Error" not in captured.err
    printed = captured.out.splitlines()
    position = 0
    for line in expected_output(code):     # in order, each among the lines printed
        while position < len(printed) and printed[position].rstrip() != line.rstrip():
            position += 1
        assert position < len(printed), (
            f"api.md, {title}: the page shows {line!r} under a print, but the example "
            f"printed:\n{captured.out}")
        position += 1


# exported for deqlib's own modules, not for readers: warn_at_caller makes warnings point at
# the caller; refuse_moved writes the error for a removed keyword; Solver is documented once,
# under deqlib.solvers.base, where the solvers' docstrings link it
INTERNAL = {"deqlib.solvers.warn_at_caller", "deqlib.backward.refuse_moved",
            "deqlib.solvers.Solver"}
DIRECTIVE = re.compile(r"^\.\. automodule:: (\S+)\n((?:   .*\n|\s{13}.*\n)*)", re.M)


def test_every_export_of_a_documented_module_is_on_the_page_or_named_internal():
    """A name a module exports is documented with its module, or in the infrastructure
    section, or listed in INTERNAL: dropping one from the page is a decision, not an accident."""
    import importlib

    single = set(re.findall(r"^\.\. auto(?:function|exception|data|class):: (\S+)$", PAGE, re.M))
    missing = []
    for module_name, options in DIRECTIVE.findall(PAGE):
        module = importlib.import_module(module_name)
        exported = set(getattr(module, "__all__", ()))
        listed = re.search(r":members:(.*?)(?=\n\s*:|\Z)", options, re.S)
        explicit = {n for n in re.split(r"[,\s]+", listed.group(1)) if n} if listed else set()
        excluded = re.search(r":exclude-members:(.*)", options)
        excluded = {n for n in re.split(r"[,\s]+", excluded.group(1)) if n} if excluded else set()
        shown = (explicit or exported) - excluded
        for name in sorted(exported - shown):
            if f"{module_name}.{name}" not in single | INTERNAL:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"exported but on no part of api.md: {missing}"


# --- every entry on the page documents its parameters

# a Google-style section that names parameters (napoleon renders them as a list)
SECTION = re.compile(r"^([ \t]*)(Args|Attributes):[ \t]*\n((?:\1[ \t]+\S.*\n|[ \t]*\n)*)", re.M)
ENTRY = re.compile(r"^\s+(\*{0,2}\w+(?:, \*{0,2}\w+)*)\s*(?:\(.*?\))?:")
SOLVER_LINK = ":class:`~deqlib.solvers.base.Solver`"


def documented_names(doc: str) -> set[str]:
    """The parameter names listed in a docstring's Args: and Attributes: sections (one entry
    may name several, "W, Phi, Y, loss: as in ...")."""
    names = set()
    for section in SECTION.finditer(doc + "\n"):
        for line in section.group(3).splitlines():
            entry = ENTRY.match(line)
            if entry and len(line) - len(line.lstrip()) == len(section.group(1)) + 4:
                names |= {n.strip().lstrip("*") for n in entry.group(1).split(",")}
    return names


def test_documented_names_reads_google_style_sections():
    doc = ("Summary.\n\nArgs:\n    x: the input, ``(batch, m)``.\n    W, Phi: as in f.\n"
           "        y: not an entry (a continuation line).\n    **options: more.\n\n"
           "Returns:\n    z: not a parameter.\n")
    assert documented_names(doc) == {"x", "W", "Phi", "options"}


def page_objects() -> list[tuple[str, object]]:
    """(name, object) of every function, class and method the page's directives document, as
    autodoc picks them: the listed members (or ``__all__``) less the excluded ones (the
    directive's ``:exclude-members:`` also applies to its classes' members), what has a
    docstring of its own, and a class's own public methods that have one."""
    import importlib
    import inspect

    found = []                                      # (name, object, names excluded)
    for name in re.findall(r"^\.\. auto(?:function|exception|class):: (\S+)$", PAGE, re.M):
        module, _, attr = name.rpartition(".")
        found.append((name, getattr(importlib.import_module(module), attr), set()))
    for module_name, options in DIRECTIVE.findall(PAGE):
        module = importlib.import_module(module_name)
        listed = re.search(r":members:(.*?)(?=\n\s*:|\Z)", options, re.S)
        explicit = [n for n in re.split(r"[,\s]+", listed.group(1)) if n] if listed else []
        excluded = re.search(r":exclude-members:(.*)", options)
        excluded = {n for n in re.split(r"[,\s]+", excluded.group(1)) if n} if excluded else set()
        for attr in explicit or getattr(module, "__all__", ()):
            if attr not in excluded:
                found.append((f"{module_name}.{attr}", getattr(module, attr), excluded))
    objects = []
    for name, obj, excluded in found:
        # data (PALETTE, LOSSES, ...) and what has no docstring of its own are not rendered
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__doc__:
            continue
        objects.append((name, obj))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                member = getattr(member, "__func__", member)      # static and class methods
                # autodoc_inherit_docstrings is off: a forward without its own is not shown
                if (not attr.startswith("_") and attr not in excluded
                        and inspect.isfunction(member) and member.__doc__):
                    objects.append((f"{name}.{attr}", member))
    return objects


def undocumented_parameters(obj) -> list[str]:
    import inspect

    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        init = getattr(obj, "__init__", None)
        if not getattr(init, "__module__", "").startswith("deqlib"):
            return []                 # a constructor of torch's or matplotlib's (BookFigure)
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    documented = documented_names(doc)
    if SOLVER_LINK in doc:            # a solver's shared options, documented once, in Solver
        from deqlib.solvers.base import Solver
        documented |= documented_names(inspect.getdoc(Solver))
    return [p for p in params if p not in documented]


def test_every_entry_on_the_page_documents_each_of_its_parameters():
    """The page is rendered from the docstrings: a parameter missing from its function's
    Args: (or its record's Attributes:) is a parameter the reader cannot look up."""
    objects = page_objects()
    assert len(objects) > 150, f"the page's entries were not found: {len(objects)}"
    missing = {name: params for name, obj in objects if (params := undocumented_parameters(obj))}
    assert not missing, ("parameters without an entry in Args: (napoleon), by function: "
                         f"{missing}")
