"""The built site in a real browser (Debian's Chromium driven by Playwright), with the
network cut off: figures load, MathJax typesets, the widget renders and responds, theorem
boxes and cross-references resolve, and the Colab button opens the chapter's notebook."""

import functools
import http.server
import os
import re
import shutil
import threading

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BOOK = __import__("pathlib").Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(p.stem for p in BOOK.glob("*.ipynb"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(built_site):
    if not os.path.exists(CHROMIUM):
        message = "Debian's chromium is not installed (make test-browser installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    html, _ = built_site

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium, f"http://127.0.0.1:{server.server_address[1]}", html
        chromium.close()
    server.shutdown()


def open_offline(browser, path):
    """Open a page with every request outside the local server refused: no CDN can help."""
    chromium, base, _ = browser
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    outside = []

    def route(request_route):
        if request_route.request.url.startswith(base):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(f"{base}/{path}", wait_until="load")
    page.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=20000)
    page.wait_for_timeout(1000)
    return page, outside


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_offline(browser, chapter):
    page, outside = open_offline(browser, f"book/{chapter}.html")
    images = page.evaluate("Array.from(document.images).map(i => [i.src.slice(-40), i.complete, i.naturalWidth])")
    assert images, "no figures on the page"
    assert all(done and width > 0 for _, done, width in images), f"figures that did not load: {images}"
    # MathJax turned every math element into typeset output: no raw TeX is left on the page.
    untypeset = page.evaluate("""Array.from(document.querySelectorAll('.math'))
        .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 40))""")
    assert not untypeset, f"math left as raw TeX: {untypeset[:5]}"
    assert "\\lVert" not in page.inner_text("main")
    # Theorem boxes and their cross-references.
    boxes = page.evaluate("document.querySelectorAll('div.proof').length")
    if re.search(r"```\{prf:(theorem|lemma|proposition|definition)\}", (BOOK / f"{chapter}.ipynb").read_text()):
        assert boxes > 0, "the chapter's theorem boxes did not render"
    refs = page.evaluate("Array.from(document.querySelectorAll('a.reference.internal')).map(a => a.textContent)")
    assert not any("??" in r for r in refs)
    # The Colab button opens this chapter's notebook.
    colab = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h.includes('colab'))")
    assert colab and all(h.endswith(f"/book/{chapter}.ipynb") for h in colab), colab
    assert not outside, f"the page tried to reach the network: {outside[:5]}"
    _, _, html = browser
    shots = html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{chapter}.png"), full_page=True)
    page.close()


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
