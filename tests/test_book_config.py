"""The book's configuration and notebooks: consistent, executed, with widget state and
the one repository URL used everywhere."""

import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import NOTEBOOKS
from conftest import load_notebook as load

# The notebooks' state (run with the book tests: `make test-book`, or `pytest -m book`).
pytestmark = pytest.mark.book


def config(root):
    return yaml.safe_load((root / "_config.yml").read_text())


def first_code_cell(nb):
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_chapter_is_in_the_table_of_contents_and_vice_versa(root):
    toc = (root / "_toc.yml").read_text()
    listed = set(re.findall(r"file:\s*(\S+)", toc))
    present = {f"book/{p.stem}" for p in (root / "book").glob("*.ipynb")} | {
        f"book/{p.stem}" for p in (root / "book").glob("*.md")
    }
    assert listed <= present, f"_toc.yml lists missing files: {listed - present}"
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_uses_the_configured_repository(root, path):
    url = config(root)["repository"]["url"]
    cell = first_code_cell(load(path))
    assert "google.colab" in cell, "the first code cell must install deqlib on Colab"
    assert re.findall(r"git\+(\S+?)\"", cell) == [url], (
        f"{path.name} installs from elsewhere than {url}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_executed_with_outputs_and_widget_state(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    never = [i for i, c in enumerate(code) if c["execution_count"] is None]
    assert not never, f"code cells never executed (0-based among code cells): {never}"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        "cells were not executed top to bottom in one run"
    )
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])
    assert re.search(
        r"^(import deqlib|from deqlib import)", "\n".join("".join(c["source"]) for c in code), re.M
    )
    views = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for c in code
        for o in c["outputs"]
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    if views:
        state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        assert all(v in state for v in views), (
            "a displayed widget has no saved state: it would vanish"
        )


def test_set_repository_url_rewrites_config_and_every_notebook(root, tmp_path):
    for item in ("_config.yml", "book", "scripts"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    new = "https://github.com/someone/fork-of-the-book"
    subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "set_repository_url.py"), new],
        check=True,
        capture_output=True,
    )
    assert config(tmp_path)["repository"]["url"] == new
    for path in sorted((tmp_path / "book").glob("*.ipynb")):
        assert re.findall(r"git\+(\S+?)\"", first_code_cell(load(path))) == [new]
    bad = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "set_repository_url.py"), "not a url"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "expected https://github.com/OWNER/REPO" in bad.stderr
