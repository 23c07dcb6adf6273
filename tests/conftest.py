"""Shared fixtures: the repository root, the book's notebooks, the built site (built once per
session with the Makefile's own target) and a Chromium for the browser tests."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
#: Every notebook of the book, and the numbered chapters (01_…, 02_…) among them.
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTERS = [p for p in NOTEBOOKS if p.name[:2].isdigit()]
#: The one line length of code and notebooks, set in pyproject.toml for ruff.
LINE_LENGTH = int(
    re.search(r"(?m)^line-length\s*=\s*(\d+)", (ROOT / "pyproject.toml").read_text()).group(1)
)


def load_notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def load_script(relative: str):
    """A script of the repository (e.g. "scripts/find_browser.py") imported as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored after): the library's tests use small
    tensors, for which a second thread gains nothing, and on a shared 2-core machine idle
    OpenMP threads spinning at barriers made them 10-15x slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site() -> tuple[Path, str]:
    """Run `make book` (-W -n: any warning fails) and return the HTML folder and the build log.

    The Makefile's target is the one definition of the build; `-o venv` keeps make from
    reinstalling the environment, and BIN points it at the Python running these tests.
    """
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        ["make", "-o", "venv", "book", f"BIN={bin_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`make book` failed:\n{log[-6000:]}"
    return ROOT / "_build" / "html", log


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """A Chromium to drive (scripts/find_browser.py). Without one the browser tests are skipped
    with a message saying how to get one, except in CI (CI set), where they fail."""
    finder = load_script("scripts/find_browser.py")
    path = finder.find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have a browser: {finder.HOW_TO_GET_ONE}")
        pytest.skip(finder.HOW_TO_GET_ONE)
    return path
