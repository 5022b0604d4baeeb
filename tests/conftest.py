"""Shared fixtures: the repository root, the table of contents, and the built book."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples, so that a run is reproducible;
# locally each run explores new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = pathlib.Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


if str(ROOT) not in sys.path:        # the assignments package, as the tests of the tooling import it
    sys.path.insert(0, str(ROOT))
from assignments.source import chapters_in_toc, toc_files as _toc_files  # noqa: E402  (the one walk of _toc.yml)


def toc_files():
    """Every file named in _toc.yml, as paths relative to the root without suffix."""
    return _toc_files(ROOT)


def chapter_notebooks():
    return chapters_in_toc(ROOT)


def _jupyter_book():
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else shutil.which("jupyter-book")


@pytest.fixture(scope="session")
def built_book():
    """The HTML of the book, built with warnings as errors.

    Sphinx builds incrementally: after the README's build command this finds nothing to do
    and returns in seconds; on a fresh clone it builds (and executes) every chapter.
    """
    exe = _jupyter_book()
    if exe is None:
        pytest.fail("jupyter-book is not installed: pip install -r requirements.txt")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # the chapters choose their backend
    proc = subprocess.run([exe, "build", str(ROOT), "-W", "-n", "--keep-going"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)
    if "config changed" in proc.stdout:
        pytest.fail("the book build saw a changed configuration and re-read every chapter; a configuration value "
                    "that changes at run time makes every incremental build a full one:\n" + proc.stdout[-3000:])
    if proc.returncode != 0:
        pytest.fail("book build failed:\n" + (proc.stdout + proc.stderr)[-6000:])
    return HTML


@pytest.fixture(scope="session")
def built_notebooks(built_book):
    """The Colab notebooks (scripts/build_notebooks.py), built from the HTML build's doctrees.

    The jupyter builder must read (and so execute) no chapter: after ``built_book`` every source is
    current, and the two builders share one configuration and one environment.
    """
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_notebooks.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail("the notebook build failed:\n" + (proc.stdout + proc.stderr)[-6000:])
    if "0 source(s) read" not in proc.stdout:
        pytest.fail("the notebook build re-read (and re-executed) chapters after the HTML build:\n" + proc.stdout[-3000:])
    return ROOT / "_build" / "colab"


@pytest.fixture(scope="session")
def in_ci():
    return bool(os.environ.get("CI"))
