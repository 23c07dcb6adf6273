"""Every example on the API page (book/api.md) runs as written: a reader who copies one gets what
the page says, and an API change that breaks an example fails here, not in a reader's hands."""

import re

import pytest
from conftest import BOOK

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = re.compile(r"^## (.+?)\n\n```python\n(.*?)^```", re.M | re.S)
EXAMPLES = EXAMPLE.findall((BOOK / "api.md").read_text())


def test_every_section_of_the_api_page_has_an_example():
    sections = re.findall(r"^## (.+)$", (BOOK / "api.md").read_text(), re.M)
    assert [title for title, _ in EXAMPLES] == sections


@pytest.mark.parametrize("title, code", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_the_example_runs(title, code, capsys):
    exec(compile(code, f"api.md: {title}", "exec"), {"__name__": "api_example"})
    assert "Error" not in capsys.readouterr().err
