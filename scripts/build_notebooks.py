"""Build the Colab notebooks: each chapter as its readers meet it online, for running elsewhere.

    python scripts/build_notebooks.py             # after the book's HTML build (README quick start)
    python scripts/build_notebooks.py --no-build  # only redo the post-processing below

1. Sphinx's ``jupyter`` builder (sphinx-tojupyter) writes one notebook per page from the book's
   resolved doctrees. It shares ``_build/.doctrees`` with the HTML build, and the two builds have the
   same configuration, so after the HTML build it reads no source and executes no chapter: glued
   values, citations, cross-references and numbers are the HTML build's.
2. Each chapter's notebook is then finished here, on the converted Markdown (not on the MyST
   sources): links into the published site instead of ``.ipynb`` and in-page anchors, equation
   tags numbered as in the HTML, solutions folded in ``<details>`` with their code as text, no
   anchor lines; the code cells are exactly the chapter's code cells, in order, with their tags
   (cells that the HTML leaves out, such as ``remove-cell`` ones, are put back: the notebook must
   run top to bottom). A header cell says where the chapter comes from.
3. It writes ``_build/colab/`` (what the Pages workflow pushes to the ``colab`` branch, which the
   Colab and Binder buttons open: ``book/<chapter>.ipynb``, ``book/data/``, ``binder/``) and copies
   the notebooks to ``_build/html/notebooks/`` (published with the site).

``problems(nb, source)`` lists what must not be in a built notebook; the build fails on any, and
``tests/test_notebooks.py`` checks the same on every chapter.
"""
from __future__ import annotations

import argparse
import copy
import os
import pathlib
import posixpath
import re
import shutil
import subprocess
import sys
import time

import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
JUPYTER = ROOT / "_build" / "jupyter"
HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "colab"

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_ANCHOR_LINE = re.compile(r"^[ \t]*<a id='[^']*'></a>[ \t]*\n?", re.M)
_SOLUTION = re.compile(r"^#+ Solution to\s*\[\s*(.*?)\]\([^)]*\)\s*$", re.M)
_HEADING = re.compile(r"^#{1,6} ")
_EQNO = re.compile(r'id="(equation-[^"]+)">\s*<span class="eqno">\(([^)]+)\)')
_NUMREF = re.compile(r'<a class="reference internal" href="([^"]*)"><span class="std std-numref">([^<]+)</span>')
_FIGURE = re.compile(r'<figure[^>]*\bid="([^"]+)"[^>]*>(?:(?!</figure>).)*?<span class="caption-number">([^<]+?)\s*</span>',
                     re.S)
_TABLE_ROW = re.compile(r"^\s*\|")

#: what must not survive in a built notebook's Markdown: MyST roles, directive fences and options,
#: glue placeholders, label lines, anchors and links to sources
FORBIDDEN = {
    "MyST role": re.compile(r"\{[a-z]+(:[a-z-]+)*\}`"),
    "directive fence": re.compile(r"^\s*(```+|:::+)\s*\{", re.M),
    "directive option": re.compile(r"^\s*:(class|label|name|nonumber|enumerated|tags|width|align):", re.M),
    "glue placeholder": re.compile(r"\{glue|glue:text"),
    "label line": re.compile(r"^\s*\([\w.:-]+\)=\s*$", re.M),
    "anchor line": re.compile(r"<a id="),
    "link to a source file": re.compile(r"\]\((?!https?://)[^)]*\.(ipynb|md)\b"),
    "in-page link": re.compile(r"\]\(#"),
    "paragraph glued to a table": re.compile(r"^[ \t]*\|.*\|[ \t]*\n(?![ \t]*\||[ \t]*$)", re.M),
}


def site_url(root=ROOT):
    """The published site: ``html.baseurl``, else the GitHub Pages address of ``repository.url``."""
    config = yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())
    base = (config.get("html") or {}).get("baseurl")
    if base:
        return base.rstrip("/") + "/"
    owner, repo = config["repository"]["url"].rstrip("/").split("github.com/", 1)[1].split("/")[:2]
    return f"https://{owner.lower()}.github.io/{repo}/"


def chapters(root=ROOT):
    """The notebooks of the table of contents, as paths relative to the root without suffix."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from assignments.source import chapters_in_toc

    root = pathlib.Path(root)
    return [path.relative_to(root).with_suffix("").as_posix() for path in chapters_in_toc(root)]


def run_builder(root=ROOT):
    """The ``jupyter`` builder over the book (incremental: it reuses the HTML build's doctrees)."""
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--builder", "custom",
           "--custom-builder", "jupyter", "-W", "-n", "--keep-going"]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)


def read_sources(log):
    """The documents a Sphinx log says it read (and so executed), from 'updating environment'."""
    m = re.search(r"updating environment: .*?(\d+) added, (\d+) changed", log)
    return 0 if m is None else int(m.group(1)) + int(m.group(2))


def equation_numbers(page):
    """{equation id: number} as the HTML page shows them."""
    return dict(_EQNO.findall(page.read_text())) if page.exists() else {}


def page_references(page):
    """What the HTML page shows: ``({numbered reference's text: href}, {figure id: "Fig. n.m"})``, e.g.
    ``{"Fig. 7.1": "#fig-ch7-grid", "Exercise 9.1": "limits.html#ex-limits-derive"}``."""
    if not page.exists():
        return {}, {}
    html = page.read_text()
    return ({" ".join(text.split()): href for href, text in _NUMREF.findall(html)},
            {name: " ".join(number.split()) for name, number in _FIGURE.findall(html)})


def _absolute(href, doc, site):
    """A relative link of ``doc`` (``#a``, ``page.ipynb#a``, ``page.html#a``, ``api/maps.md``) as a link into the
    published site."""
    path, _, anchor = href.partition("#")
    if path:
        path = re.sub(r"\.(ipynb|md|html)$", "", posixpath.normpath(posixpath.join(posixpath.dirname(doc), path)))
    else:
        path = doc
    return f"{site}{path}.html" + (f"#{anchor}" if anchor else "")


def _link_numrefs(text, refs, doc, site):
    """Each "Fig. n.m" / "Exercise n.m" that the HTML page shows as a link (tojupyter writes plain text) as the
    same link into the site; headings and text already in a link are left alone."""
    if not refs:
        return text
    pattern = re.compile(r"(?<![\[\w])(" + "|".join(re.escape(t) for t in sorted(refs, key=len, reverse=True))
                         + r")(?![\w]|\.\d)(?!\]\()")
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if not line.startswith("#"):
            lines[k] = pattern.sub(lambda m: f"[{m.group(1)}]({_absolute(refs[m.group(1)], doc, site)})", line)
    return "\n".join(lines)


def _separate_tables(text):
    """A blank line after every Markdown table: tojupyter writes the next paragraph right under its last row,
    and Markdown then reads that paragraph as more rows. Fenced code is left alone."""
    out, fenced, lines = [], False, text.split("\n")
    for k, line in enumerate(lines):
        out.append(line)
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif (not fenced and _TABLE_ROW.match(line) and k + 1 < len(lines) and lines[k + 1].strip()
              and not _TABLE_ROW.match(lines[k + 1])):
            out.append("")
    return "\n".join(out)


def _fix_links(text, doc, site):
    """Relative Markdown links as links into the published site; links with a scheme are left as they are."""
    def repl(m):
        return m.group(0) if re.match(r"[a-z]+:", m.group(1)) else f"]({_absolute(m.group(1), doc, site)})"
    return _LINK.sub(repl, text)


def _fix_equation_tags(text, numbers):
    """tojupyter numbers equations per notebook; the HTML (and every "Eq. n" link) per its own rule."""
    def repl(m):
        label = m.group(1)
        body = m.group(2)
        if label in numbers:
            body = re.sub(r"\\tag\{[^}]*\}", lambda _: "\\tag{%s}" % numbers[label], body, count=1)
        return m.group(0)[: m.start(2) - m.start(0)] + body
    return re.sub(r"<a id='(equation-[^']+)'></a>(.*?\$\$.*?\$\$)", repl, text, flags=re.S)


def _clean_markdown(text, doc, site, numbers, refs=None):
    text = _fix_equation_tags(text, numbers)
    text = _ANCHOR_LINE.sub("", text)
    text = re.sub(r"<a id='[^']*'></a>", "", text)
    text = text.replace("**Proof.**\n\nProof. ", "**Proof.** ")
    text = _fix_links(text, doc, site)
    text = _link_numrefs(text, refs, doc, site)
    return _separate_tables(text).strip("\n")


def convert(built, source, doc, site, numbers, refs=None, figures=None):
    """The Colab notebook of chapter ``doc`` from its tojupyter notebook and its source notebook; ``numbers``,
    ``refs`` and ``figures`` are what its HTML page shows (:func:`equation_numbers`, :func:`page_references`)."""
    cells = _cells(_interleave(built, source, doc, site, numbers, refs))
    cells = _caption_figures(cells, figures or {})
    first_h1 = next((k for k, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("# ")), -1)
    for k, c in enumerate(cells):
        if c.cell_type == "markdown" and k != first_h1:
            c.source = _demote_titles(c.source)

    title = source.metadata.get("title") or next(
        (c.source.lstrip("# ").splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.startswith("# ")),
        doc)
    page = f"{site}{doc}.html"
    header = nbformat.v4.new_markdown_cell(
        f"*This notebook is the chapter [{title}]({page}) of the book "
        f"[{_book_title()}]({site}), with the same text and code. Run its cells in order from the top; "
        "the first one installs `qmf_lite` where it is missing (in Colab). Figures are numbered and captioned "
        "as in the book, and links lead to its pages, references and API documentation. The numbers quoted in "
        "the text are those of the book's build (a CPU, the fast profile); a run here, on a GPU or with "
        "`QMF_LITE_SCALE=paper`, prints and draws its own.*")
    first_heading = next((k for k, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("# ")), -1)
    cells.insert(first_heading + 1, header)

    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
    }
    return nb


def _caption_figures(cells, figures):
    """After each figure's code cell, its number and caption as the book shows them (Colab ignores the
    cell's ``mystnb.figure`` metadata, where the caption is)."""
    out = []
    for cell in cells:
        out.append(cell)
        figure = (cell.metadata.get("mystnb") or {}).get("figure") if cell.cell_type == "code" else None
        if figure and figure.get("caption"):
            number = figures.get(figure.get("name"))
            out.append(nbformat.v4.new_markdown_cell(f"**{number}.** {figure['caption']}" if number
                                                     else f"*{figure['caption']}*"))
    return out


def _interleave(built, source, doc, site, numbers, refs=None):
    """The built notebook's cells in order, ``("md", text)`` or ``("code", source cell)``: each code cell is the
    source notebook's own (with any that the HTML left out); code shown in the prose becomes text."""
    src_code = [c for c in source.cells if c.cell_type == "code"]
    norm = lambda s: s.strip()  # noqa: E731
    items, ptr = [], 0  # items: ("md", text) | ("code", source cell)
    for cell in built.cells:
        text = cell.source
        if cell.cell_type != "code":
            items.append(("md", _clean_markdown(text, doc, site, numbers, refs)))
            continue
        match = next((j for j in range(ptr, len(src_code)) if norm(src_code[j].source) == norm(text)), None)
        if match is None:  # code shown in the prose (starter code, a solution): text, as in the book
            items.append(("md", f"```python\n{text.strip()}\n```"))
            continue
        items += [("code", c) for c in src_code[ptr:match + 1]]  # with any cell the HTML left out
        ptr = match + 1
    items += [("code", c) for c in src_code[ptr:]]
    return items


def _cells(items):
    """Notebook cells from :func:`_interleave`'s items: code without outputs, each solution folded in a
    ``<details>`` block, starter code kept with its exercise."""
    cells, i = [], 0
    while i < len(items):
        kind, value = items[i]
        if kind == "code":
            cell = copy.deepcopy(value)
            cell.outputs, cell.execution_count = [], None
            cells.append(nbformat.v4.new_code_cell(cell.source, metadata=dict(cell.metadata)))
            i += 1
            continue
        m = _SOLUTION.match(value)
        if m:  # a solution: everything up to the next heading or code cell, folded
            title = " ".join(m.group(1).split())
            body, i = [value[m.end():].strip("\n")], i + 1
            while i < len(items) and items[i][0] == "md" and not _HEADING.match(items[i][1]):
                body.append(items[i][1])
                i += 1
            inner = "\n\n".join(b for b in body if b.strip())
            cells.append(nbformat.v4.new_markdown_cell(
                f"<details>\n<summary>Solution to {title} (click to show)</summary>\n\n{inner}\n\n</details>"))
            continue
        if value.startswith("```python") and cells and cells[-1].cell_type == "markdown":
            cells[-1].source += "\n\n" + value  # starter code stays with its exercise
        elif value.strip():
            cells.append(nbformat.v4.new_markdown_cell(value))
        i += 1
    return cells


def _demote_titles(text):
    """tojupyter writes an admonition's title as a level-1 heading; the notebook has one title
    (the chapter's), so such a heading becomes a bold line. Fenced code is left alone."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("# "):
            line = f"**{line[2:].strip()}**"
        out.append(line)
    return "\n".join(out)


def _book_title(root=ROOT):
    return yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())["title"]


def problems(nb, source):
    """What is wrong with a built notebook: MyST left in its Markdown, or code cells that differ
    from the source chapter's (in number, order or text)."""
    found = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for what, pattern in FORBIDDEN.items():
            m = pattern.search(cell.source)
            if m:
                found.append(f"cell {k}: {what}: {cell.source[max(0, m.start() - 40):m.end() + 40]!r}")
    built = [c.source for c in nb.cells if c.cell_type == "code"]
    want = [c.source for c in source.cells if c.cell_type == "code"]
    if built != want:
        diff = next((j for j, (a, b) in enumerate(zip(built, want)) if a != b), min(len(built), len(want)))
        found.append(f"code cells differ from the chapter's ({len(built)} against {len(want)}), first at code cell {diff}")
    if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        found.append("code cells have outputs")
    return found


def assemble(root=ROOT):
    """Post-process every chapter; write _build/colab and _build/html/notebooks. Returns problems."""
    root = pathlib.Path(root)
    site = site_url(root)
    out = root / "_build" / "colab"
    if out.exists():
        shutil.rmtree(out)
    published = root / "_build" / "html" / "notebooks"
    all_problems = []
    for doc in chapters(root):
        built_path = root / "_build" / "jupyter" / f"{doc}.ipynb"
        if not built_path.exists():
            all_problems.append(f"{doc}: the jupyter builder wrote no notebook")
            continue
        built = nbformat.read(built_path, as_version=4)
        source = nbformat.read(root / f"{doc}.ipynb", as_version=4)
        page = root / "_build" / "html" / f"{doc}.html"
        nb = convert(built, source, doc, site, equation_numbers(page), *page_references(page))
        nbformat.validate(nb)
        all_problems += [f"{doc}: {p}" for p in problems(nb, source)]
        target = out / f"{doc}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        if (root / "_build" / "html").is_dir():
            published.mkdir(parents=True, exist_ok=True)
            shutil.copy(target, published / target.name)
    # what the notebooks need beside them on the colab branch (Binder) and in Jupyter
    if (root / "book" / "data").is_dir():
        shutil.copytree(root / "book" / "data", out / "book" / "data")
    shutil.copytree(root / "binder", out / "binder")
    (out / "README.md").write_text(
        f"# {_book_title(root)}: notebooks\n\nThe book's chapters as notebooks for Colab and Binder, built from "
        f"the book's sources by its Pages workflow ({site}). Do not edit them here: this branch is "
        "rewritten by every build.\n")
    return all_problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="only post-process _build/jupyter")
    args = parser.parse_args(argv)
    t0 = time.time()
    if not args.no_build:
        proc = run_builder()
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
            sys.exit("the jupyter builder failed")
        n = read_sources(proc.stdout)
        print(f"jupyter builder: {time.time() - t0:.0f} s, {n} source(s) read"
              + (" (and executed: the HTML build was not current)" if n else ", none executed"))
    found = assemble()
    for p in found:
        print("PROBLEM:", p, file=sys.stderr)
    print(f"{len(chapters())} notebooks in {OUT.relative_to(ROOT)} and _build/html/notebooks, {time.time() - t0:.0f} s in all")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
