"""The book builds with -W -n (every warning is an error) and links each chapter to Colab."""

import re

import pytest

pytestmark = pytest.mark.book


def test_book_builds_without_warnings(built_site):
    html, log = built_site
    assert "warning" not in log.lower().replace("warnings=", ""), log[-3000:]
    assert (html / "index.html").exists()


def test_every_chapter_page_links_to_its_own_notebook_on_colab(built_site, root):
    html, _ = built_site
    import yaml

    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
    repo = url.removeprefix("https://github.com/")
    for nb in sorted((root / "book").glob("*.ipynb")):
        page = (html / "book" / f"{nb.stem}.html").read_text()
        links = set(re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page))
        assert links == {
            f"https://colab.research.google.com/github/{repo}/blob/main/book/{nb.name}"
        }, links


def test_site_serves_mathjax_and_the_widget_manager_itself(built_site):
    html, _ = built_site
    page = (html / "book" / "01_implicit_layers.html").read_text()
    scripts = [s.split("?")[0] for s in re.findall(r'<script[^>]+src="([^"]+)"', page)]
    assert any(s.endswith("mathjax/tex-chtml-full.js") for s in scripts), scripts
    assert any("html-manager/embed-amd.js" in s for s in scripts), scripts
    assert not any(s.startswith("http") for s in scripts), f"scripts from the network: {scripts}"
    assert (html / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    assert (html / "_static" / "html-manager" / "embed-amd.js").exists()
