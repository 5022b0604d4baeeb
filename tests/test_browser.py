"""The built book in a real browser: typeset math, loaded figures, no error shown, legible
figures on a desktop and on a phone, no JavaScript error and nothing loaded from another host.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``);
without them the test is skipped with the reason (and fails in CI, which installs them).
"""
from __future__ import annotations

import functools
import http.server
import json
import pathlib
import shutil
import tempfile
import threading

import pytest
from conftest import ROOT, chapter_notebooks, toc_files

from qmf_lite.book import MIN_TEXT_PX, png_text

pytestmark = [pytest.mark.book, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def browser(in_ci):
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if in_ci:
            pytest.fail(reason)
        pytest.skip(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="qmf-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(built_book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const ready = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
    ? MathJax.startup.promise.then(() => done(true)) : done(false);
if (document.readyState === 'complete') ready(); else window.addEventListener('load', ready);
"""

PAGE_REPORT = """
const article = document.querySelector('article') || document.body;
const imgs = Array.from(article.querySelectorAll('img'));
return {
  mathjax: document.querySelectorAll('mjx-container').length,
  rawMath: /\\\\\\(|\\\\\\[|\\$\\$/.test(article.innerText),
  images: imgs.length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  errors: article.querySelectorAll('.output.error, .output.traceback').length
          + (article.innerText.includes('Traceback (most recent call last)') ? 1 : 0),
  colab: document.querySelectorAll('a[href*="colab.research.google.com"]').length,
  exercises: article.querySelectorAll('.exercise').length,
};
"""


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_renders_in_browser(browser, server, nb_path):
    rel = nb_path.relative_to(ROOT).with_suffix(".html").as_posix()
    browser.get(f"{server}/{rel}")
    assert browser.execute_async_script(WAIT_FOR_MATHJAX), "MathJax did not load (offline copy missing?)"
    report = browser.execute_script(PAGE_REPORT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{nb_path.stem}.png"))
    assert report["mathjax"] > 0, "no typeset math on the page"
    assert not report["rawMath"], "raw TeX delimiters left in the text: math was not typeset"
    assert report["images"] > 0 and not report["broken"], f"figures not loaded: {report['broken']}"
    assert report["errors"] == 0, "an error output is shown on the page"
    assert report["colab"] > 0, "no Colab launch button"
    assert report["exercises"] > 0, "no exercise on the page"


# The two screens of the issue: a desktop window (the content column is about 690 px wide) and a
# 390 px phone, emulated by the browser itself (CSS pixels, a device scale of 1).
VIEWPORTS = {"desktop": (1280, 1000, False), "phone": (390, 844, True)}

FIGURE_REPORT = """
const article = document.querySelector('article') || document.body;
const refs = new Set(Array.from(article.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href').slice(1)));
const imgs = Array.from(article.querySelectorAll('.cell_output img'));
return {
  width: document.documentElement.scrollWidth,   // (a phone's layout viewport grows with the page: compare with the screen)
  column: article.clientWidth,
  figures: imgs.map(img => {
    const fig = img.closest('figure');
    return {src: img.getAttribute('src'), shown: img.getBoundingClientRect().width, natural: img.naturalWidth,
            id: fig ? fig.id : null,
            number: fig && fig.querySelector('figcaption .caption-number')
                    ? fig.querySelector('figcaption .caption-number').innerText.trim() : null,
            referenced: !!(fig && refs.has(fig.id))};
  }),
};
"""


def _set_viewport(browser, name):
    width, height, mobile = VIEWPORTS[name]
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def _smallest_text_px(built_book, page_rel, fig):
    """The smallest text of a figure, in CSS pixels, as the page shows it (from the PNG's record)."""
    png = (built_book / page_rel).parent.joinpath(fig["src"]).resolve()
    meta = png_text(png.read_bytes())
    assert "qmf:min_font_pt" in meta, f"{png.name} was not drawn by qmf_lite.book.figure_png (no font record)"
    pt, dpi = float(meta["qmf:min_font_pt"]), float(meta["qmf:dpi"])
    return pt * dpi / 72.0 * fig["shown"] / fig["natural"], pt, float(meta["qmf:width_in"])


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_figures_are_numbered_referenced_and_legible(browser, server, built_book, nb_path, viewport):
    """Every figure is numbered, captioned and referred to by the text, and no text in it is smaller
    than MIN_TEXT_PX at the width the page shows it; the page itself does not scroll sideways."""
    rel = nb_path.relative_to(ROOT).with_suffix(".html").as_posix()
    _set_viewport(browser, viewport)
    try:
        browser.get(f"{server}/{rel}")
        browser.execute_async_script(WAIT_FOR_MATHJAX)
        report = browser.execute_script(FIGURE_REPORT)
        if viewport == "phone":
            SHOTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(SHOTS / f"{nb_path.stem}-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    rows, problems = [], []
    for fig in report["figures"]:
        px, pt, width_in = _smallest_text_px(built_book, rel, fig)
        rows.append({"figure": fig["id"], "number": fig["number"], "smallest_text_px": round(px, 2),
                     "font_pt": pt, "width_in": width_in, "shown_px": round(fig["shown"], 1)})
        if not fig["id"] or not fig["number"]:
            problems.append(f"{fig['src']}: not a numbered, captioned figure")
        elif not fig["referenced"]:
            problems.append(f"{fig['id']}: the text does not refer to it")
        if px < MIN_TEXT_PX - 0.05:
            problems.append(f"{fig['id'] or fig['src']}: smallest text {px:.1f} px ({pt} pt, {width_in} in, "
                            f"shown {fig['shown']:.0f} of {fig['natural']} px)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / f"{nb_path.stem}-{viewport}.json").write_text(
        json.dumps({"column_px": report["column"], "figures": rows}, indent=1))
    assert report["figures"], "no figure on the page"
    overflow = report["width"] - VIEWPORTS[viewport][0]
    assert overflow <= 1, f"the page is {overflow} px wider than the {viewport} screen"
    assert not problems, "; ".join(problems)


WIDEST = """
const W = arguments[0];
const scrolls = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement)
  if (getComputedStyle(a).overflowX !== 'visible') return true; return false; };
const wide = Array.from(document.querySelectorAll('article *'))
  .filter(el => el.getBoundingClientRect().right > W + 1 && !scrolls(el))
  .map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (typeof el.className === 'string' && el.className
       ? '.' + el.className.trim().split(/\\s+/).join('.') : '') + ' ' + JSON.stringify((el.textContent || '').trim().slice(0, 40)));
return {width: document.documentElement.scrollWidth, wide: wide.slice(0, 5)};
"""


@pytest.mark.parametrize("page", [f for f in toc_files() if f.startswith("book/api/")], ids=lambda f: f.replace("/", "-"))
def test_api_page_does_not_scroll_sideways_on_a_phone(browser, server, page):
    """An API page (long signatures, parameter lists, code, tables, equations) fits a 390 px phone:
    what is wider than the column scrolls in its own box, the page itself does not."""
    _set_viewport(browser, "phone")
    try:
        browser.get(f"{server}/{page}.html")
        browser.execute_async_script(WAIT_FOR_MATHJAX)
        report = browser.execute_script(WIDEST, VIEWPORTS["phone"][0])
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    overflow = report["width"] - VIEWPORTS["phone"][0]
    assert overflow <= 1, f"the page is {overflow} px wider than the phone screen; wider than it: {report['wide']}"


PAGE_LOAD_REPORT = """
const here = location.origin;
const external = u => { try { const x = new URL(u, location.href);
  return (x.protocol === 'http:' || x.protocol === 'https:') && x.origin !== here; } catch (e) { return false; } };
return {
  scripts: Array.from(document.querySelectorAll('script[src]')).map(s => s.src).filter(external),
  styles: Array.from(document.querySelectorAll('link[rel~="stylesheet"][href], link[rel~="preload"][href]'))
            .map(l => l.href).filter(external),
  loaded: performance.getEntriesByType('resource').map(r => r.name).filter(external),
  widgets: document.querySelectorAll('script[type*="jupyter-widget"], .jupyter-widgets').length,
};
"""


@pytest.mark.parametrize("page", toc_files(), ids=lambda f: f.replace("/", "-"))
def test_page_has_no_console_error_and_nothing_from_another_host(browser, server, page):
    browser.get_log("browser")                                  # empty the log of earlier pages
    browser.get(f"{server}/{page}.html")
    browser.execute_async_script(WAIT_FOR_MATHJAX)
    report = browser.execute_script(PAGE_LOAD_REPORT)
    errors = [e["message"] for e in browser.get_log("browser")     # (the test server has no favicon)
              if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert not errors, f"JavaScript console errors: {errors}"
    assert not (report["scripts"] or report["styles"] or report["loaded"]), f"loaded from another host: {report}"
    assert report["widgets"] == 0, "a Jupyter widget is embedded in the page"
