"""The built book in a real browser: typeset math, loaded figures, no error shown.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``);
without them the test is skipped with the reason (and fails in CI, which installs them).
"""
from __future__ import annotations

import functools
import http.server
import pathlib
import shutil
import tempfile
import threading

import pytest
from conftest import ROOT, chapter_notebooks

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
