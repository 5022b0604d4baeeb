"""Student and solution notebooks from a parsed chapter, and the search for leaked solutions.

A student notebook has, in order: a header (what to do, how to hand in), the chapter's Colab
set-up cell (installs ``qmf_lite``), the chapter's code cells collapsed under "Set-up", the
``check(...)`` helper, then for each exercise its text, an answer cell (the exercise's starter
code, or ``var = ...`` lines) and a ``check("<label>")`` cell. It holds no solution code, no
solution text and no solution value: ``check`` knows only each answer's type and shape.
The solution notebook is the same notebook with the solutions in the answer cells.
"""
import copy
import pathlib
import re

import nbformat
import yaml

from . import checks as _checks_module
from .source import code_blocks, directive_spans, without_directives

__all__ = [
    "site_url", "label_index", "myst_to_markdown", "student_notebook", "solution_notebook",
    "find_leaks", "ANSWER_TAG", "CHECK_TAG", "SETUP_TAG", "HELPER_TAG",
]

ANSWER_TAG, CHECK_TAG, SETUP_TAG, HELPER_TAG = "answer", "check", "setup", "checks-helper"
META = "qmf_assignment"


def site_url(root):
    """The book's published address: ``html.baseurl`` of ``_config.yml``, else the GitHub Pages
    address of ``repository.url`` (``https://github.com/o/r`` -> ``https://o.github.io/r/``)."""
    config = yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())
    base = (config.get("html") or {}).get("baseurl")
    if base:
        return base.rstrip("/") + "/"
    url = config["repository"]["url"].rstrip("/")
    m = re.match(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?$", url)
    if not m:
        return url + "/"
    owner, repo = m.groups()
    if repo.lower() == f"{owner.lower()}.github.io":
        return f"https://{owner.lower()}.github.io/"
    return f"https://{owner.lower()}.github.io/{repo}/"


def repository_url(root):
    return yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())["repository"]["url"]


def label_index(chapters, root):
    """label -> (page address, kind, chapter title) for every label of the given chapters."""
    site = site_url(root)
    index = {}
    for ch in chapters:
        page = site + ch.path.resolve().relative_to(pathlib.Path(root).resolve()).with_suffix(".html").as_posix()
        index[ch.label] = (page, "chapter", ch.title)
        for label, kind in ch.targets.items():
            index.setdefault(label, (page, kind, ch.title))
    return index


_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")
_KIND_WORDS = {"equation": "Eq.", "prf:proposition": "Proposition", "prf:theorem": "Theorem",
               "prf:lemma": "Lemma", "prf:definition": "Definition", "exercise": "Exercise",
               "section": "Section", "prf:corollary": "Corollary"}


def _anchor(label, kind):
    return f"equation-{label}" if kind == "equation" else label


def myst_to_markdown(text, index, references_page=None):
    """MyST roles and directives of an exercise as plain Markdown that Colab and Jupyter render.

    Cross-references become links into the published book; ``{cite}`` keys are kept as text.
    """
    def role(m):
        name, body = m.group("role"), m.group("text")
        explicit = re.match(r"^(?P<title>.*?)\s*<(?P<target>[^>]+)>$", body, re.S)
        title, target = (explicit.group("title"), explicit.group("target")) if explicit else (None, body)
        if name in ("ref", "numref", "eq", "prf:ref", "doc"):
            if target in index:
                page, kind, chapter_title = index[target]
                if title is None:
                    title = (f"the chapter *{chapter_title}*" if kind == "chapter"
                             else f"{_KIND_WORDS.get(kind, kind.split(':')[-1].title())} `{target}`")
                    if kind != "chapter":
                        title += f" (chapter *{chapter_title}*)"
                return f"[{title}]({page if kind == 'chapter' else page + '#' + _anchor(target, kind)})"
            return title or f"`{target}`"
        if name.startswith("cite"):
            keys = ", ".join(k.strip() for k in target.split(","))
            return f"[{keys}]({references_page})" if references_page else f"[{keys}]"
        if name == "glue:text" or name == "glue":
            return "(a number computed in the chapter)"
        if name in ("math",):
            return f"${body}$"
        return title or body

    return _ROLE.sub(role, _convert_directives(text))


_ADMONITIONS = ("admonition", "note", "tip", "hint", "warning", "important", "caution", "attention", "seealso")


def _convert_directives(text):
    """``{math}`` -> ``$$``, admonitions -> a quoted block with a bold title, others -> their body."""
    lines = text.split("\n")
    for first, last, name, arg, options, body in reversed(directive_spans(text)):
        body = _convert_directives(body)
        if name == "math":
            new = ["$$", body.strip(), "$$"]
        elif name in _ADMONITIONS or name.startswith("prf:"):
            head = arg or name.split(":")[-1].title()
            new = [f"> **{head}.**", ">"] + [f"> {line}" if line else ">" for line in body.split("\n")]
        else:
            new = body.split("\n")
        lines[first:last + 1] = new
    return "\n".join(lines)


def _cell_source_lines(cell):
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _code(source, tags=(), hidden=False, **meta):
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    if hidden:
        cell.metadata["cellView"] = "form"                    # Colab: code collapsed under its title
        cell.metadata["jupyter"] = {"source_hidden": True}    # JupyterLab / Notebook 7
    if meta:
        cell.metadata[META] = meta
    return cell


def _md(source, **meta):
    cell = nbformat.v4.new_markdown_cell(source)
    if meta:
        cell.metadata[META] = meta
    return cell


def _assigns(code, var):
    return re.search(rf"^\s*{re.escape(var)}\s*(?::[^=]*)?=(?!=)", code, re.M) is not None


def answer_template(exercise):
    """The answer cell a student starts from: the exercise's starter code plus ``var = ...`` lines."""
    lines = [f"# YOUR ANSWER ({exercise.label})"]
    starter = "\n\n".join(b.strip("\n") for b in exercise.starter).strip("\n")
    if starter:
        lines.append(starter)
    missing = [c.var for c in exercise.checks if not _assigns(starter, c.var)]
    for var in missing:
        lines.append(f"{var} = ...")
    if not exercise.checks and not starter:
        lines.append("# (not autograded: use this cell for any code you need)")
    return "\n".join(lines) + "\n"


def _helper_source(public_answers):
    import json

    src = pathlib.Path(_checks_module.__file__).read_text()
    if "'''" in src or src.rstrip().endswith("\\"):
        raise RuntimeError("assignments/checks.py must not contain ''' (it is embedded in a string)")
    answers = json.dumps(public_answers, indent=1, sort_keys=True)
    return (
        "# @title The `check(...)` helper: run this cell (no need to read it)\n"
        "# It looks at the type and shape of your answers, never at their values: a passing check\n"
        "# does not mean that an answer is right. Grading compares the values after you hand in.\n"
        "import json as _json, types as _types\n"
        "_qmf_checks = _types.ModuleType(\"qmf_assignment_checks\")\n"
        f"exec(r'''{src}''', _qmf_checks.__dict__)\n"
        f"_QMF_ANSWERS = _json.loads(r'''{answers}''')\n\n\n"
        "def check(question):\n"
        "    \"\"\"Print whether each answer of `question` has the expected type and shape.\"\"\"\n"
        "    if question not in _QMF_ANSWERS:\n"
        "        print(f\"unknown question {question!r}; the questions are {sorted(_QMF_ANSWERS)}\")\n"
        "        return\n"
        "    _qmf_checks.report(question, _QMF_ANSWERS[question], globals())\n"
    )


def student_notebook(chapter, public_answers, index, root, *, solutions=False):
    """The student notebook of ``chapter`` (with ``solutions=True``: the solution notebook).

    ``public_answers`` maps exercise label -> {variable: public record} (type and shape of each
    answer, from :func:`assignments.checks.public`); ``index`` is :func:`label_index`.
    """
    site = site_url(root)
    page = index.get(chapter.label, (site, "chapter", chapter.title))[0]
    refs = index.get("references", (site + "book/references.html",))[0] if "references" in index else site + "book/references.html"
    total = chapter.points
    n_setup = len(chapter.code_cells)
    graded = [e for e in chapter.exercises if e.graded]
    cells = [_md(
        f"# Assignment: {chapter.title}\n\n"
        f"The exercises of the chapter [{chapter.title}]({page}). "
        + (f"**{total:g} points** are graded automatically ({len(graded)} of "
           f"{len(chapter.exercises)} exercises)"
           + ("; your instructor reads the others.\n\n" if len(graded) < len(chapter.exercises) else ".\n\n")
           if graded else "None of them is graded automatically: your instructor reads your answers.\n\n")
        + "**How to work.** Run all cells once (*Runtime → Run all* in Colab): the first cell installs "
        "`qmf_lite`, the collapsed cells under *Set-up* are the chapter's own code and define the names "
        "the exercises use (this takes about a minute). Then, for each exercise, write your code in the cell "
        "marked `# YOUR ANSWER`, store each answer in the variable the exercise names (replace the `...`), "
        "and run the `check(...)` cell below it. `check` tells you whether an answer has the right type and "
        "shape, **not** whether it is right.\n\n"
        "**Handing in.** Keep the variable names and do not delete cells. Before you hand in, restart and "
        "run all (*Runtime → Restart session and run all*): your notebook is graded by running it from top to "
        "bottom in a fresh kernel, so an answer that needs a cell you ran by hand, or that raises, scores zero. "
        "Then *File → Download → Download .ipynb* and hand in that file.",
        role="header")]
    if chapter.setup_cell:
        cells.append(_code(chapter.setup_cell, tags=("hide-cell",), role="colab-setup"))
    if n_setup:
        cells.append(_md(
            "## Set-up: the chapter's code\n\n"
            f"The {n_setup} collapsed cells below are the code of the chapter, unchanged: they define what the "
            f"exercises use and draw the chapter's figures. Run them; open them (or read [the chapter]({page})) "
            "to see what they do.", role="setup-header"))
        for k, src in enumerate(chapter.code_cells, 1):
            title = f"# @title Chapter code, cell {k} of {n_setup}\n"
            source = src if src.lstrip().startswith("%%") else title + src
            cells.append(_code(source, tags=(SETUP_TAG, "hide-input"), hidden=True, role="setup", index=k))
    cells.append(_md("## Exercises", role="exercises-header"))
    cells.append(_code(_helper_source(public_answers), tags=(HELPER_TAG, "hide-input"), hidden=True,
                       role="helper"))
    for k, ex in enumerate(chapter.exercises, 1):
        title = f"### Exercise {k}" + (f": {ex.title}" if ex.title else "") + f" <small>({ex.label})</small>"
        text = myst_to_markdown(ex.text, index, refs)
        if ex.starter:
            text += "\n\nComplete the code in the answer cell below."
        if ex.graded:
            answers = ", ".join(f"`{c.var}` ({c.points:g} pt, compared {c.describe()})" for c in ex.checks)
            note = f"*Graded automatically, {ex.points:g} point{'s' if ex.points != 1 else ''}: {answers}.*"
        else:
            note = "*Not graded automatically: answer in the text cell below the code cell; your instructor reads it.*"
        cells.append(_md(f"{title}\n\n{text}\n\n{note}", role="exercise", label=ex.label))
        if solutions and ex.solution_code:
            source = f"# SOLUTION ({ex.label})\n" + "\n\n".join(b.strip("\n") for b in ex.solution_code) + "\n"
        else:
            source = answer_template(ex)
        cells.append(_code(source, tags=(ANSWER_TAG,), role="answer", label=ex.label))
        if ex.graded:
            cells.append(_code(f'check("{ex.label}")', tags=(CHECK_TAG,), role="check", label=ex.label))
        else:
            body = "**Your answer:** (write here)"
            if solutions:
                _, prose = code_blocks(ex.solution_text)
                body = "**Solution:** " + myst_to_markdown(prose.strip(), index, refs)
            cells.append(_md(body, role="answer-text", label=ex.label))
    cells.append(_md(
        "## Hand in\n\nRestart and run all, check that every cell ran, then *File → Download → Download .ipynb* "
        "and hand in the downloaded file.", role="footer"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
        META: {"chapter": chapter.name, "title": chapter.title, "solutions": bool(solutions)},
    }
    return nb


def solution_notebook(chapter, public_answers, index, root):
    return student_notebook(chapter, public_answers, index, root, solutions=True)


# --------------------------------------------------------------------------------------------
# leaks

def _significant(line):
    s = line.strip()
    return s if len(s) >= 6 and not re.fullmatch(r"[\W_]*", s) else None


def find_leaks(student_nb, chapter):
    """Lines of the chapter's solutions that appear in a student notebook but nowhere else in the chapter.

    A solution line "leaks" when it is found in the student notebook (as a line, or inside a
    line when it is long) but not in the chapter outside its solution directives (exercise text,
    starter code, code cells, prose): those lines a student may see anyway. Every ``# check:``
    line counts as a leak. Returns a list of ``(exercise label, line)``.
    """
    text_lines = []
    for cell in student_nb.cells:
        text_lines += _cell_source_lines(cell).split("\n")
        for out in cell.get("outputs", []):
            text_lines += str(out.get("text", "")).split("\n")
    stripped = {s.strip() for s in text_lines}
    blob = "\n".join(text_lines)
    visible = set()
    import json

    nb = json.loads(pathlib.Path(chapter.path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        src = _cell_source_lines(cell)
        if cell["cell_type"] == "markdown":
            # drop solution directives, keep everything else (exercise text and starters included)
            src = without_directives(src, ("solution",))
        visible |= {s.strip() for s in src.split("\n")}
    visible_blob = "\n".join(visible)
    leaks = []
    for ex in chapter.exercises:
        for line in ex.solution_text.split("\n"):
            s = line.strip()
            if re.match(r"^#\s*check:", s):
                if s in stripped or s in blob:
                    leaks.append((ex.label, s))
                continue
            sig = _significant(s)
            if sig is None or sig in visible or sig in visible_blob or sig.startswith("```"):
                continue
            if sig in stripped or (len(sig) >= 25 and sig in blob):
                leaks.append((ex.label, sig))
    if re.search(r"^\s*#\s*check:", blob, re.M):
        leaks.append(("?", "a '# check:' line"))
    return leaks
