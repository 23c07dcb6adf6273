"""Find the Chromium that the browser tests drive, without installing anything.

    python scripts/find_browser.py      # prints its path, or explains and exits 1

In order: $CHROMIUM if set; a chromium already on the machine (Debian's /usr/bin/chromium,
or chromium-browser / google-chrome on the PATH); Playwright's own browser, which
`python -m playwright install chromium` downloads (the usual way on a laptop).
"""

from __future__ import annotations

import os
import shutil
import sys

HOW_TO_GET_ONE = (
    "no Chromium found for the browser tests. Get one with "
    "`.venv/bin/python -m playwright install chromium` (Playwright's own browser; needs its "
    "download site), or your system's package (Debian/Ubuntu: `apt-get install chromium`), "
    "or point CHROMIUM=/path/to/chromium at one."
)


def playwright_chromium() -> str | None:
    """The path of Playwright's own Chromium if it is installed, else None."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as pw:
            path = pw.chromium.executable_path
    except Exception:  # no driver, unsupported platform…: there is no Playwright browser
        return None
    return path if path and os.path.exists(path) else None


def find_chromium() -> str | None:
    """The first Chromium found (see the module docstring), or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return playwright_chromium()


if __name__ == "__main__":
    found = find_chromium()
    if found is None:
        sys.exit(f"find_browser.py: {HOW_TO_GET_ONE}")
    print(found)
