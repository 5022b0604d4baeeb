"""The Colab notebooks (scripts/build_notebooks.py): each chapter as the book shows it, runnable.

Built from the HTML build's doctrees; every check here compares a notebook with its source chapter
and with the built HTML page, so that what a Colab reader sees is what a reader of the site sees.
"""
from __future__ import annotations

import html as html_lib
import re
import sys

import nbformat
import pytest
import yaml
from conftest import ROOT, chapter_notebooks

sys.path.insert(0, str(ROOT / "scripts"))
import build_notebooks  # noqa: E402

pytestmark = pytest.mark.book
CHAPTERS = chapter_notebooks()
SITE = build_notebooks.site_url()


def _doc(nb_path):
    return nb_path.relative_to(ROOT).with_suffix("").as_posix()


def _load(built_notebooks, nb_path):
    path = built_notebooks / f"{_doc(nb_path)}.ipynb"
    assert path.exists(), f"no Colab notebook for {_doc(nb_path)}"
    return nbformat.read(path, as_version=4), nbformat.read(nb_path, as_version=4)


def _markdown(nb):
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_chapter_has_a_notebook_here_and_on_the_site(built_notebooks, built_book):
    assert {p.relative_to(built_notebooks).as_posix() for p in built_notebooks.rglob("*.ipynb")} == \
        {f"{_doc(p)}.ipynb" for p in CHAPTERS}
    assert {p.name for p in (built_book / "notebooks").glob("*.ipynb")} == {p.name for p in CHAPTERS}
    for name in ("binder/requirements.txt", "binder/runtime.txt", "README.md"):
        assert (built_notebooks / name).exists(), name
    assert {p.name for p in (built_notebooks / "book" / "data").glob("*")} == \
        {p.name for p in (ROOT / "book" / "data").glob("*")}


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_no_myst_left_and_code_cells_are_the_chapters(built_notebooks, nb_path):
    nb, source = _load(built_notebooks, nb_path)
    nbformat.validate(nb)
    assert build_notebooks.problems(nb, source) == []
    # the same, spelled out: every code cell of the chapter, in order, unchanged, without outputs
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [c.source for c in source.cells if c.cell_type == "code"]
    text = _markdown(nb)
    for pattern in (r"\{glue", r"\{cite", r"\{ref\}", r"\{eq\}", r"\{py:", r"\{prf:", r"```\{", r":::\{",
                    r"^:class:", r"^\([\w.:-]+\)=$", r"\]\(#"):
        assert not re.search(pattern, text, re.M), pattern
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # one title: the chapter's (an admonition's title is not a level-1 heading)
    headings = [l for c in nb.cells if c.cell_type == "markdown" for l in re.sub(r"```.*?```", "", c.source, flags=re.S).splitlines()
                if l.startswith("# ")]
    assert len(headings) == 1 and nb.cells[0].source == headings[0], headings


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_glued_values_are_written_in_as_the_html_shows_them(built_notebooks, built_book, nb_path):
    nb, source = _load(built_notebooks, nb_path)
    n_glue = sum(c.source.count("{glue:text}") for c in source.cells if c.cell_type == "markdown")
    page = (built_book / f"{_doc(nb_path)}.html").read_text()
    values = [html_lib.unescape(v) for v in re.findall(r'<span class="pasted-text">([^<]*)</span>', page)]
    assert len(values) >= n_glue
    text = _markdown(nb)
    missing = [v for v in values if v not in text]
    assert not missing, f"glued values of the HTML missing from the notebook: {missing[:10]}"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_links_lead_to_pages_and_anchors_of_the_published_site(built_notebooks, built_book, nb_path):
    """Cross-references, citations and API roles are links to the site, each to an anchor that exists."""
    nb, source = _load(built_notebooks, nb_path)
    src = "\n".join(c.source for c in source.cells if c.cell_type == "markdown")
    text = _markdown(nb)
    links = re.findall(r"\]\((https?://[^)\s]+)\)", text)
    internal = [u for u in links if u.startswith(SITE)]
    pages = {}
    for url in internal:
        path, _, anchor = url[len(SITE):].partition("#")
        page = built_book / path
        assert page.exists(), f"{url}: no such page in the built site"
        if anchor:
            html = pages.setdefault(path, page.read_text())
            assert f'id="{anchor}"' in html, f"{url}: no such anchor in {path}"
    # every citation of the source is an author-year link to the reference list
    n_cites = len(re.findall(r"\{cite(:t)?\}`([^`]*)`", src))
    refs = [u for u in internal if u.startswith(f"{SITE}book/references.html#")]
    assert len(refs) >= n_cites
    if n_cites:
        assert re.search(r"\[[^\]]*\b(19|20)\d\d\]?\]\(" + re.escape(SITE) + "book/references.html#", text)
    n_api = len(re.findall(r"\{py:(func|class|data|meth|mod)\}`", src))
    api = [u for u in internal if "/api/" in u]
    assert len(api) >= n_api


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_and_equations_are_numbered_as_in_the_html(built_notebooks, built_book, nb_path):
    nb, source = _load(built_notebooks, nb_path)
    page = (built_book / f"{_doc(nb_path)}.html").read_text()
    text = _markdown(nb)
    html_exercises = re.findall(r'<span class="caption-number">(Exercise [\d.]+) </span>', page)
    assert re.findall(r"^#+ (Exercise [\d.]+)\s*$", text, re.M) == html_exercises
    solutions = re.findall(r"<summary>Solution to (Exercise [\d.]+)", text)
    n_solutions = sum(c.source.count("{solution}") for c in source.cells if c.cell_type == "markdown")
    assert len(solutions) == n_solutions and set(solutions) <= set(html_exercises)
    assert "Solution to" not in re.sub(r"<summary>Solution to", "", text)  # every solution folded
    tags = re.findall(r"\\tag\{([^}]*)\}", text)
    assert sorted(tags) == sorted(re.findall(r'<span class="eqno">\(([^)]+)\)', page))


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_figures_are_captioned_and_numbered_references_are_links(built_notebooks, built_book, nb_path):
    """Colab ignores a figure's caption (cell metadata): each figure's code cell is followed by its number and
    caption; every "Fig. n.m" / "Exercise n.m" that the page links is a link here too."""
    nb, source = _load(built_notebooks, nb_path)
    refs, figures = build_notebooks.page_references(built_book / f"{_doc(nb_path)}.html")
    for k, cell in enumerate(nb.cells):
        figure = (cell.metadata.get("mystnb") or {}).get("figure") if cell.cell_type == "code" else None
        if figure:
            assert nb.cells[k + 1].source == f"**{figures[figure['name']]}.** {figure['caption']}"
    n_figures = sum(1 for c in source.cells if (c.metadata.get("mystnb") or {}).get("figure"))
    assert len(figures) == n_figures
    text = _markdown(nb)
    for ref, href in refs.items():
        assert f"[{ref}]({build_notebooks._absolute(href, _doc(nb_path), SITE)})" in text, ref
    assert not build_notebooks.FORBIDDEN["paragraph glued to a table"].search(text)


def test_problems_flags_myst_and_changed_code():
    """The check itself: a notebook with MyST left, or with its code changed, is reported."""
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\nx is 1.0"),
                                           nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    assert build_notebooks.problems(good, source) == []
    for text in ("x is {glue:text}`x:.1f`", "see {ref}`sec-a`", "(sec-a)=", "```{exercise}", ":class: dropdown",
                 "[a](fixed_points.ipynb#x)", "[a](#x)", "<a id='x'></a>", "{py:func}`qmf.chi`",
                 "|a|b|\n|---|---|\n|1|2|\nA paragraph that Markdown reads as a row"):
        bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text), *good.cells[1:]])
        assert build_notebooks.problems(bad, source), text
    changed = nbformat.v4.new_notebook(cells=[good.cells[0], nbformat.v4.new_code_cell("x = 2"), good.cells[2]])
    assert build_notebooks.problems(changed, source)
    dropped = nbformat.v4.new_notebook(cells=good.cells[:2])
    assert build_notebooks.problems(dropped, source)


def test_convert_puts_back_cells_the_html_leaves_out_and_folds_solutions():
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("glue('a', a)", metadata={"tags": ["remove-cell"]}),
        nbformat.v4.new_code_cell("b = 2")])
    built = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("<a id='ch-t'></a>"), nbformat.v4.new_markdown_cell("# T"),
        nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_code_cell("b = 2"),
        nbformat.v4.new_markdown_cell("## Exercise 1.2\n\nSee [Eq. 4](#equation-e) and [b](api/maps.ipynb#qmf_lite.chi)."),
        nbformat.v4.new_code_cell("x = ..."),
        nbformat.v4.new_markdown_cell("## Solution to[ Exercise 1.2](#ex-a)"), nbformat.v4.new_code_cell("x = 3"),
        nbformat.v4.new_markdown_cell("Because.")])
    nb = build_notebooks.convert(built, source, "book/t", "https://o.github.io/r/", {})
    assert build_notebooks.problems(nb, source) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ["a = 1", "glue('a', a)", "b = 2"]
    assert code[1].metadata["tags"] == ["remove-cell"]
    text = _markdown(nb)
    assert "[Eq. 4](https://o.github.io/r/book/t.html#equation-e)" in text
    assert "[b](https://o.github.io/r/book/api/maps.html#qmf_lite.chi)" in text
    assert "## Exercise 1.2" in text and "```python\nx = ...\n```" in text
    assert re.search(r"<details>\n<summary>Solution to Exercise 1\.2.*</summary>\n\n```python\nx = 3\n```\n\nBecause\.\n\n</details>",
                     text)


def test_convert_captions_figures_links_numbered_references_and_ends_tables():
    fig = {"mystnb": {"figure": {"name": "fig-a", "caption": "What the panels show, $x^2$."}}}
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"),
                                             nbformat.v4.new_code_cell("plot()", metadata=fig)])
    built = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("plot()"),
        nbformat.v4.new_markdown_cell("Fig. 1.1 shows it (Exercise 2.1, not Fig. 1.10).\n\n|a|b|\n|---|---|\n|1|2|\n"
                                      "Read the table.\n\n## Exercise 2.1\n\n[Fig. 1.1](#fig-a) again.")])
    refs = {"Fig. 1.1": "#fig-a", "Exercise 2.1": "other.html#ex-b"}
    nb = build_notebooks.convert(built, source, "book/t", "https://o.github.io/r/", {}, refs, {"fig-a": "Fig. 1.1"})
    assert build_notebooks.problems(nb, source) == []
    code = next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")
    assert nb.cells[code + 1].source == "**Fig. 1.1.** What the panels show, $x^2$."
    text = _markdown(nb)
    assert "[Fig. 1.1](https://o.github.io/r/book/t.html#fig-a) shows it" in text
    assert "([Exercise 2.1](https://o.github.io/r/book/other.html#ex-b), not Fig. 1.10)" in text
    assert "|1|2|\n\nRead the table." in text
    assert "## Exercise 2.1\n" in text and "[Fig. 1.1](#fig-a) again" not in text   # headings stay plain
    assert text.count("https://o.github.io/r/book/t.html#fig-a") == 2                 # an old link is not relinked


def test_colab_and_binder_buttons_open_the_built_notebooks_branch():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["branch"] == "colab"
    assert config["launch_buttons"]["colab_url"] and config["launch_buttons"]["binderhub_url"]
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    runs = [s.get("run", "") for s in wf["jobs"]["build"]["steps"]]
    book = next(i for i, r in enumerate(runs) if "jupyter-book build . --all" in r)
    notebooks = next(i for i, r in enumerate(runs) if "python scripts/build_notebooks.py" in r)
    assert notebooks > book
    colab = wf["jobs"]["colab"]
    assert colab["needs"] == "build" and colab["permissions"] == {"contents": "write"}
    script = "\n".join(s.get("run", "") for s in colab["steps"])
    assert "git push" in script and "HEAD:colab" in script
    upload = [s for s in wf["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["with"]["path"] == "_build/colab"
