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
def test_colab_setup_cell_pins_the_book_version(nb_path):
    """Each chapter's first code cell installs, only on ImportError, the qmf_lite version of
    pyproject.toml: from PyPI once released (release.on_pypi), else from the matching git tag of
    _config.yml's repository.url; a failed install raises."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_colab_url

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    version = sync_colab_url.package_version()
    nb = json.loads(nb_path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = "".join(first["source"])
    assert src == sync_colab_url.setup_cell_source(), f"{nb_path.name}: run python scripts/sync_colab_url.py"
    assert "except ImportError" in src and "raise RuntimeError" in src
    if config["release"]["on_pypi"]:
        assert f'"qmf-lite=={version}"' in src
    else:
        assert f'"qmf_lite @ git+{config["repository"]["url"]}@v{version}"' in src


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


def _public_names():
    """(target, name) for every public name: qmf_lite.<name> for the flat surface,
    qmf_lite.<ns>.<name> in the namespaces; data constants under their defining module."""
    import qmf_lite as qmf

    targets = set()
    for name in qmf.__all__:
        if name in qmf._NAMESPACES:
            ns = getattr(qmf, name)
            targets |= {f"qmf_lite.{name}.{n}" for n in ns.__all__}
            continue
        obj = getattr(qmf, name)
        if callable(obj):
            targets.add(f"qmf_lite.{name}")
        else:  # a constant: documented where its #: comment lives
            targets.add(f"{_defining_module(name)}.{name}")
    return targets


def _defining_module(name):
    import qmf_lite as qmf

    for module, names in qmf._LAZY.items():
        if name in names:
            return f"qmf_lite.{module}"
    import importlib

    for module in ("activations", "gaussian", "maps", "tradeoff", "reference"):
        if name in importlib.import_module(f"qmf_lite.{module}").__all__:
            return f"qmf_lite.{module}"
    raise AssertionError(name)


def _documented_in_sources():
    documented = set()
    for page in (ROOT / "book" / "api").glob("*.md"):
        current = "qmf_lite"
        for line in page.read_text().splitlines():
            m = re.match(r"\.\. currentmodule:: (\S+)", line)
            if m:
                current = m.group(1)
            m = re.match(r"\.\. auto(?:function|class|exception|data):: (\S+)", line)
            if m:
                target = m.group(1)
                documented.add(target if target.startswith("qmf_lite.") else f"{current}.{target}")
    return documented


def test_api_reference_lists_every_public_name():
    missing = sorted(_public_names() - _documented_in_sources())
    assert not missing, f"public names without an entry in book/api/*.md: {missing}"
    toc = (ROOT / "_toc.yml").read_text()
    for page in (ROOT / "book" / "api").glob("*.md"):
        assert f"book/api/{page.stem}" in toc, f"{page.name} is not in _toc.yml"


def test_api_reference_is_built_with_every_entry(built_book):
    html = "".join(p.read_text() for p in (built_book / "book" / "api").glob("*.html"))
    missing = sorted(t for t in _public_names() if f'id="{t}"' not in html)
    assert not missing, f"API entries missing from the built reference: {missing}"
    # the formulas render through MathJax: the maps page carries display math from the docstrings
    maps = (built_book / "book" / "api" / "maps.html").read_text()
    assert "\\sigma_w^2" in maps and 'class="math' in maps


def _titles(built_book):
    """The title of every page of the table of contents, as its <title> shows it (without the book's)."""
    out = {}
    for f in toc_files():
        html = (built_book / f"{f}.html").read_text(encoding="utf-8")
        title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
        out[f] = re.split(r"\s+[—–-]\s+Quantized networks at initialization", title)[0].strip()
    return out


def test_page_titles_are_plain_text_and_unique(built_book):
    """Search results, the sidebar and the browser tab show titles as text: no TeX in them, and no
    two pages with one title."""
    titles = _titles(built_book)
    tex = {f: t for f, t in titles.items() if re.search(r"\\[(a-zA-Z]|\$", t)}
    assert not tex, f"TeX in page titles: {tex}"
    seen = {}
    for f, t in titles.items():
        seen.setdefault(t.lower(), []).append(f)
    assert not {t: fs for t, fs in seen.items() if len(fs) > 1}, f"pages share a title: {seen}"
    index = (built_book / "searchindex.js").read_text(encoding="utf-8")
    data = json.loads(index[index.index("(") + 1:index.rindex(")")])
    shown = list(data["titles"]) + list(data.get("alltitles", {}))
    assert not [t for t in shown if re.search(r"\\[(a-zA-Z]|\$", t)], "TeX in the search index's titles"
    sidebar = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    nav = sidebar[sidebar.index("bd-sidenav"):]
    nav = nav[:nav.index("</nav>")]
    assert "\\(" not in nav and "$" not in nav, "TeX in the sidebar"


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_has_no_bare_toggles_widgets_or_bookkeeping(built_book, nb_path):
    """Folded code says what it holds; no widget; no glue bookkeeping or timings shown."""
    html = (built_book / nb_path.relative_to(ROOT).with_suffix(".html")).read_text(encoding="utf-8")
    assert "Show code cell" not in html, "a folded cell with the bare 'Show code cell ...' toggle"
    assert "application/vnd.jupyter.widget" not in html and "require.min.js" not in html, "a widget in the page"
    heavy = 0
    for cell in html.split('<div class="cell ')[1:]:
        classes, code = cell[:cell.index('"')], cell.split('<div class="cell_output')[0]
        folded = any(f"tag_{t}" in classes for t in ("hide-input", "hide-cell", "remove-input", "remove-cell"))
        heavy += not folded and code.count(">glue</span>") >= 8
    assert not heavy, f"{heavy} unfolded code cells hold eight or more glue(...) lines of bookkeeping"
    outputs = re.findall(r'<div class="output stream highlight-myst-ansi notranslate">.*?<pre>(.*?)</pre>', html, re.S)
    timings = [o for o in outputs if re.fullmatch(r"\s*[\d.]+ s\s*", re.sub(r"<[^>]+>", "", o))]
    assert not timings, f"bare timing outputs shown: {timings}"
