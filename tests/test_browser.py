"""The built site in a real browser (Chromium driven by Playwright), with the network cut off:
figures load and match the notebooks' stored images, MathJax typesets, nothing overflows the
page at 1280 px, the widget renders and responds, theorem boxes and cross-references resolve,
and the Colab button opens the chapter's notebook.

The browser: see scripts/find_browser.py (a Chromium already on the machine, else Playwright's
own). Without one these tests are skipped, with a message saying how to get one, except in CI.
"""

import functools
import http.server
import os
import re
import threading

import pytest
from conftest import BOOK, LINE_LENGTH, NOTEBOOKS, load_notebook

pytestmark = pytest.mark.browser

CHAPTERS = [p.stem for p in NOTEBOOKS]
PAGES = CHAPTERS + sorted(p.stem for p in BOOK.glob("*.md"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1280


@pytest.fixture(scope="module")
def browser(chromium_path, built_site):
    from playwright.sync_api import Error, sync_playwright

    html, _ = built_site

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        except Error as err:
            message = f"Chromium at {chromium_path} did not start: {err}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        yield chromium, f"http://127.0.0.1:{server.server_address[1]}", html
        chromium.close()
    server.shutdown()


def open_offline(browser, path):
    """Open a page with every request outside the local server refused: no CDN can help."""
    chromium, base, _ = browser
    page = chromium.new_page(viewport={"width": WIDTH, "height": 900})
    outside = []

    def route(request_route):
        if request_route.request.url.startswith(base):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(f"{base}/{path}", wait_until="load")
    page.wait_for_function(
        "document.querySelectorAll('.math').length === 0"
        " || document.querySelectorAll('mjx-container').length > 0",
        timeout=20000,
    )
    page.wait_for_timeout(1000)
    return page, outside


def stored_images(notebook: dict) -> int:
    """Image outputs the page must show: every image/* output, except in cells whose output
    the page removes (remove-output, remove-cell) and in widget views (drawn by the widget)."""
    count = 0
    for cell in notebook["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        for output in cell["outputs"]:
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                continue
            count += any(mime.startswith("image/") for mime in data)
    return count


#: Everything the per-page tests need, measured in one visit of the page.
PROBE = """() => {
    const all = selector => Array.from(document.querySelectorAll(selector));
    const article = document.querySelector('article.bd-article');
    const right = article.getBoundingClientRect().right + 1;
    const over = e => e.scrollWidth > e.clientWidth + 1
                      || e.getBoundingClientRect().right > right;
    const longest = t => t.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '');
    const pre = article.querySelector('div.cell_input pre');
    let columns = null;
    if (pre) {
        const probe = document.createElement('span');
        probe.textContent = 'x'.repeat(100);
        pre.appendChild(probe);
        const char = probe.getBoundingClientRect().width / 100;
        probe.remove();
        const style = getComputedStyle(pre);
        const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
        columns = Math.floor((pre.clientWidth - padding) / char);
    }
    return {
        images: all('img').map(i => [i.src.slice(-40), i.complete, i.naturalWidth]),
        figures: all('.cell_output img')
            .filter(i => !i.closest('.jupyter-widgets') && !i.classList.contains('widget-image'))
            .map(i => [i.complete && i.naturalWidth > 0, (i.closest('figure') || {}).id || '']),
        untypeset: all('.math').filter(e => !e.querySelector('mjx-container'))
            .map(e => e.textContent.slice(0, 40)),
        text: document.querySelector('main').innerText,
        proofs: all('div.proof').length,
        refs: all('a.reference.internal').map(a => a.textContent),
        colab: all('a').map(a => a.href).filter(h => h.includes('colab')),
        wide_code: Array.from(article.querySelectorAll('pre')).filter(over)
            .map(e => longest(e.textContent).slice(0, 70)),
        wide_math: Array.from(article.querySelectorAll('div.math, mjx-container[display="true"]'))
            .filter(over).map(e => e.textContent.slice(0, 70)),
        columns: columns,
    };
}"""


@pytest.fixture(scope="module")
def visit(browser):
    """``visit(name)``: the probe of book/<name>.html (loaded once, offline, at 1280 px), with
    the requests that tried to leave the local server; a full-page screenshot is kept in
    _build/screenshots/ for review."""
    seen = {}

    def measure(name):
        if name not in seen:
            page, outside = open_offline(browser, f"book/{name}.html")
            seen[name] = {**page.evaluate(PROBE), "outside": outside}
            shots = browser[2].parent / "screenshots"
            shots.mkdir(exist_ok=True)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            page.close()
        return seen[name]

    return measure


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_offline(visit, chapter):
    page = visit(chapter)
    images = page["images"]
    assert images, "no figures on the page"
    assert all(done and width > 0 for _, done, width in images), (
        f"figures that did not load: {images}"
    )
    # MathJax turned every math element into typeset output: no raw TeX is left on the page.
    assert not page["untypeset"], f"math left as raw TeX: {page['untypeset'][:5]}"
    assert "\\lVert" not in page["text"]
    # Theorem boxes and their cross-references.
    source = (BOOK / f"{chapter}.ipynb").read_text()
    if re.search(r"```\{prf:(theorem|lemma|proposition|definition)\}", source):
        assert page["proofs"] > 0, "the chapter's theorem boxes did not render"
    assert not any("??" in r for r in page["refs"]), "unresolved cross-references"
    # The Colab button opens this chapter's notebook.
    colab = page["colab"]
    assert colab and all(h.endswith(f"/book/{chapter}.ipynb") for h in colab), colab
    assert not page["outside"], f"the page tried to reach the network: {page['outside'][:5]}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_figures_in_the_cell_outputs_match_the_notebooks_stored_images(visit, chapter):
    expected = stored_images(load_notebook(BOOK / f"{chapter}.ipynb"))
    shown = visit(chapter)["figures"]
    assert len(shown) == expected, (
        f"the page shows {len(shown)} figures in its cell outputs; the notebook stores "
        f"{expected} images"
    )
    assert all(loaded for loaded, _ in shown), f"figures that did not load: {shown}"


@pytest.mark.parametrize("name", PAGES)
def test_no_code_block_or_equation_overflows_at_1280px(visit, name):
    page = visit(name)
    assert not page["wide_code"], (
        f"code or output wider than the page at {WIDTH} px: {page['wide_code']}"
    )
    assert not page["wide_math"], (
        f"equations wider than the page at {WIDTH} px: {page['wide_math']}"
    )


def test_the_line_length_fits_the_page_at_1280px(visit):
    """The line length (pyproject.toml) fits the content column: book/_static/wide-code.css."""
    columns = visit(CHAPTERS[0])["columns"]
    assert columns >= LINE_LENGTH, (
        f"only {columns} columns of code fit at {WIDTH} px; the line length is {LINE_LENGTH}"
    )


def test_theorem_reference_resolves_to_the_theorem(browser):
    page, _ = open_offline(browser, "book/01_implicit_layers.html")
    link = page.locator("a.reference.internal", has_text="Theorem 1").first
    target = link.get_attribute("href").split("#")[1]
    assert page.locator(f"[id='{target}']").count() == 1
    assert "Banach" in page.locator(f"[id='{target}']").first.inner_text()
    page.close()


def test_contraction_widget_renders_and_responds(browser):
    page, _ = open_offline(browser, "book/01_implicit_layers.html")
    page.wait_for_selector(".widget-slider .noUi-handle", timeout=20000)
    readout = page.locator(".widget-slider .widget-readout").first
    picture = page.locator(".widget-vbox img.widget-image").first
    assert readout.inner_text() == "0.3"
    first_src = picture.get_attribute("src")
    assert picture.evaluate("i => i.naturalWidth") > 0
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    page.wait_for_timeout(500)
    assert readout.inner_text() == "0.9"
    picture = page.locator(".widget-vbox img.widget-image").first
    assert picture.get_attribute("src") != first_src, "moving the slider did not swap the plot"
    assert picture.evaluate("i => i.naturalWidth") > 0
    page.close()
