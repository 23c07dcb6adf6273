"""Shared fixtures: the repository root, and the built site (built once per session)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site() -> tuple[Path, str]:
    """Build the book exactly as `make book` does (-W -n: any warning fails) and return
    the HTML folder and the build log."""
    jb = Path(sys.executable).parent / "jupyter-book"
    vendor = ROOT / "_static_vendor" / ".complete"
    if not vendor.exists():
        subprocess.run([str(ROOT / "scripts" / "vendor_js.sh")], check=True)
    proc = subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the book build failed:\n{log[-6000:]}"
    return ROOT / "_build" / "html", log
