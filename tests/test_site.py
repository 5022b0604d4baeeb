"""The built book (the site): its table of contents, its notebooks as committed, and the HTML."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import ROOT, chapter_notebooks, toc_files

pytestmark = pytest.mark.book


def test_toc_entries_exist():
    missing = [f for f in toc_files() if not any((ROOT / f"{f}{s}").exists() for s in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"
    assert len(chapter_notebooks()) >= 1


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(nb_path):
    nb = json.loads(nb_path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{nb_path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_colab_setup_cell_uses_configured_repository(nb_path):
    """Each chapter's first code cell installs qmf_lite from _config.yml's repository.url, and only on ImportError."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    nb = json.loads(nb_path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = "".join(first["source"])
    assert "except ImportError" in src and "import qmf_lite" in src
    assert f"git+{url}" in src, f"{nb_path.name}: set-up cell does not install from {url}; run python scripts/sync_colab_url.py"


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_html_has_figures_and_no_errors(built_book, nb_path):
    page = built_book / nb_path.relative_to(ROOT).with_suffix(".html")
    assert page.exists(), f"{page} was not built"
    html = page.read_text()
    nb = json.loads(nb_path.read_text())
    n_plots = sum("plt.show()" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    local = [s for s in images if "_images/" in s]
    assert len(local) >= n_plots, f"{page.name}: {n_plots} figures drawn but {len(local)} images in the HTML"
    for src in local:
        f = (page.parent / src).resolve()
        assert f.exists() and f.stat().st_size > 1000, f"{page.name}: image {src} missing or empty"
    assert "Traceback (most recent call last)" not in html
    assert 'class="output error' not in html and "output traceback" not in html
    assert "colab.research.google.com" in html


def test_references_page_lists_the_spine_paper(built_book):
    html = (built_book / "book" / "references.html").read_text()
    assert "Blumenfeld" in html and "quantization-depth trade-off" in html.lower()
