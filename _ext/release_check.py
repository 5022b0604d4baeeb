"""Sphinx extension: the build says so, loudly, while ``repository.url`` is the placeholder.

The launch buttons, every chapter's set-up cell and the Colab notebooks point at
``repository.url`` of ``_config.yml``. While it is still the placeholder this repository ships
with, a published book would send its readers nowhere. So:

- on GitHub Actions (``GITHUB_ACTIONS=true``: the Pages workflow, which publishes) it is a Sphinx
  warning, which fails the build under ``-W``;
- everywhere else (a local build, ``.ci/run``) a banner is printed at the start and the end of the
  build, and the build goes on;
- ``QMF_BOOK_ALLOW_PLACEHOLDER=1`` turns the warning into the banner on GitHub Actions too (a fork's
  test run, say).
"""
from __future__ import annotations

import os
import sys

from sphinx.util import logging

PLACEHOLDER = "https://github.com/qmf-book/quantized-mean-field"

logger = logging.getLogger(__name__)


def message(url):
    return (f"repository.url in _config.yml is still the placeholder {url}: the Colab, Binder and "
            "repository buttons, the chapters' set-up cells and the Colab notebooks point to a repository "
            "that does not exist. Set it to your repository and run python scripts/sync_colab_url.py "
            "(README, 'Publishing the book').")


def is_placeholder(url):
    return (url or "").rstrip("/").lower() == PLACEHOLDER


def must_fail(environ=os.environ):
    """True where the placeholder is an error: a GitHub Actions build not told otherwise."""
    return environ.get("GITHUB_ACTIONS") == "true" and environ.get("QMF_BOOK_ALLOW_PLACEHOLDER") != "1"


def _banner(url):
    line = "!" * 100
    sys.stderr.write(f"\n{line}\n!! PLACEHOLDER: {message(url)}\n{line}\n\n")


def _check(app):
    url = app.config.html_theme_options.get("repository_url", "")
    if not is_placeholder(url):
        return
    if must_fail():
        logger.warning(message(url), type="qmf", subtype="placeholder")
    else:
        _banner(url)
        app.connect("build-finished", lambda app, exc: _banner(url))


def setup(app):
    app.connect("builder-inited", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
