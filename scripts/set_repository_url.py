"""Set the repository's public URL in the one place it lives, and everywhere it is used.

    python scripts/set_repository_url.py https://github.com/OWNER/REPO

Rewrites ``repository.url`` in _config.yml (the Colab launch buttons read it) and the
``git+URL`` of every chapter's install cell. tests/test_book_config.py checks they agree.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL_IN_CONFIG = re.compile(r"(^repository:\s*\n\s+url:\s*)(\S+)", re.M)
URL_IN_CELL = re.compile(r"git\+(https://[^\s\"']+)")


def config_url(text: str) -> str:
    match = URL_IN_CONFIG.search(text)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(2)


def main(url: str) -> None:
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"expected https://github.com/OWNER/REPO; got {url!r}")
    config = ROOT / "_config.yml"
    config.write_text(URL_IN_CONFIG.sub(lambda m: m.group(1) + url, config.read_text()))
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["source"] = [URL_IN_CELL.sub("git+" + url, line) for line in cell["source"]]
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"repository URL set to {url} in _config.yml and every chapter")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
