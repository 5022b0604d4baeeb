"""Student and solution notebooks from a parsed chapter, and the search for leaked solutions.

A student notebook has, in order: a header (what to do, how to hand in), the chapter's Colab
set-up cell (installs ``qmf_lite``), the chapter's code cells collapsed under "Set-up", the
``check(...)`` helper, then for each exercise its text (numbered as in the book), an answer cell
(the exercise's starter code, or ``var = ...`` lines), a ``check("<label>")`` cell, and for each
question answered in words (a ``# manual:`` line) otter's manually graded question: its wording
and points, a Markdown answer cell, between ``<!-- BEGIN QUESTION -->`` and ``<!-- END QUESTION -->``. It holds no solution code, no
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
    "site_url", "label_index", "api_pages", "glued_values", "myst_to_markdown", "student_notebook",
    "solution_notebook",
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
    """label -> (page address, kind, chapter title, number) for every label of the given chapters.

    ``number`` is the book's number of a chapter or an exercise ("3", "3.2"), else None.
    """
    site = site_url(root)
    index = {}
    for ch in chapters:
        page = site + ch.path.resolve().relative_to(pathlib.Path(root).resolve()).with_suffix(".html").as_posix()
        index[ch.label] = (page, "chapter", ch.title, None if ch.number is None else str(ch.number))
        for ex in ch.exercises:
            index.setdefault(ex.label, (page, "exercise", ch.title, ex.number))
        for label, kind in ch.targets.items():
            index.setdefault(label, (page, kind, ch.title, None))
    return index


def api_pages(root):
    """Full name of every object of the API reference (``book/api/*.md``) -> (page address, anchor).

    Read from the autodoc directives of the pages (``automodule``, ``currentmodule``,
    ``autofunction``, ``autoclass``, ``autodata``, ...), so that a ``{py:func}`` role of an
    exercise becomes a link to the object's entry in the published reference.
    """
    root = pathlib.Path(root)
    site = site_url(root)
    pages = {}
    for md in sorted((root / "book" / "api").glob("*.md")):
        page = site + md.relative_to(root).with_suffix(".html").as_posix()
        module = ""
        for m in re.finditer(r"^\s*\.\.\s+(?P<kind>auto\w+|currentmodule)::\s*(?P<name>\S+)", md.read_text(), re.M):
            kind, name = m.group("kind"), m.group("name")
            if kind in ("automodule", "currentmodule"):
                module = name
                pages.setdefault(name, (page, f"module-{name}"))
            elif kind.startswith("auto"):
                full = name if name.startswith(module + ".") or not module else f"{module}.{name}"
                pages.setdefault(full, (page, full))
    return pages


def _api_link(target, title, api):
    """``[`title`](page#anchor)`` for an object of the API reference, else ```title```.

    A method or attribute not listed on its own links to its class's (or module's) entry.
    """
    name = target.lstrip("~.")
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        found = api.get(".".join(parts[:k]))
        if found:
            page, anchor = found
            if k < len(parts) and not anchor.startswith("module-"):
                anchor = name  # a member documented in its class's entry
            return f"[`{title}`]({page}#{anchor})"
    return f"`{title}`"


_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")
_KIND_WORDS = {"equation": "Eq.", "prf:proposition": "Proposition", "prf:theorem": "Theorem",
               "prf:lemma": "Lemma", "prf:definition": "Definition", "exercise": "Exercise",
               "section": "Section", "prf:corollary": "Corollary"}


def _anchor(label, kind):
    return f"equation-{label}" if kind == "equation" else label


def myst_to_markdown(text, index, references_page=None, *, api=None, glued=None):
    """MyST roles and directives of an exercise as plain Markdown that Colab and Jupyter render.

    Cross-references become links into the published book (an exercise by its number, "Exercise
    3.2"); ``{py:...}`` roles stay code, linked to the API reference when ``api`` (from
    :func:`api_pages`) knows the object; ``{glue:text}`` becomes the value the chapter computed
    when ``glued`` (name -> ``text/plain`` value) has it; ``{cite}`` keys are kept as text.
    """
    api = api or {}
    glued = glued or {}

    def role(m):
        name, body = m.group("role"), m.group("text")
        explicit = re.match(r"^(?P<title>.*?)\s*<(?P<target>[^>]+)>$", body, re.S)
        title, target = (explicit.group("title"), explicit.group("target")) if explicit else (None, body)
        if name in ("ref", "numref", "eq", "prf:ref", "doc"):
            if target in index:
                page, kind, chapter_title, number = (tuple(index[target]) + (None,))[:4]
                if title is None:
                    if kind == "chapter":
                        title = f"the chapter *{chapter_title}*"
                    elif kind == "exercise" and number:
                        title = f"Exercise {number}"
                    else:
                        title = f"{_KIND_WORDS.get(kind, kind.split(':')[-1].title())} `{target}`"
                    if kind not in ("chapter", "exercise"):
                        title += f" (chapter *{chapter_title}*)"
                return f"[{title}]({page if kind == 'chapter' else page + '#' + _anchor(target, kind)})"
            return title or f"`{target}`"
        if name.startswith("py:"):
            if title is None:
                title = target.lstrip(".").split(".")[-1] if target.startswith("~") else target.lstrip(".")
                title = title.lstrip("~")
                if name in ("py:func", "py:meth"):
                    title += "()"
            return _api_link(target, title, api)
        if name.startswith("cite"):
            keys = ", ".join(k.strip() for k in target.split(","))
            return f"[{keys}]({references_page})" if references_page else f"[{keys}]"
        if name in ("glue:text", "glue"):
            key, _, spec = body.partition(":")
            if key in glued:
                return _format_glued(glued[key], spec)
            return "(a number computed in the chapter)"
        if name in ("math",):
            return f"${body}$"
        if name in ("code", "literal", "samp", "file", "command", "envvar", "kbd"):
            return f"`{title or body}`"
        return title or body

    return _ROLE.sub(role, _convert_directives(text))


def _format_glued(plain, spec):
    """A glued value as ``{glue:text}`` shows it: its ``text/plain`` form, formatted by ``spec``."""
    import ast

    try:
        value = ast.literal_eval(plain)
    except (ValueError, SyntaxError):
        value = plain
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    return str(value)


def glued_values(cells):
    """name -> ``text/plain`` of every value the executed ``cells`` glued (myst-nb's ``glue``)."""
    found = {}
    for cell in cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            key = meta.get("mime_prefix", "") + "text/plain"  # glue(..., display=False) prefixes the mime types
            if meta.get("name") and key in out.get("data", {}):
                found[meta["name"]] = out["data"][key]
    return found


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


OTTER_ANSWER_TAG = "otter_answer_cell"   # otter's tag for the answer cell of a manually graded question
MANUAL_PLACEHOLDER = "_Type your answer here, replacing this text._"   # otter's words


def manual_cells(manual, *, model_answer=None):
    """The cells of one question graded by hand, in otter's format for manually graded questions.

    Otter's PDF export (``otter export``, and Gradescope's manual grading through otter) keeps
    what stands between ``<!-- BEGIN QUESTION -->`` and ``<!-- END QUESTION -->``: the question
    with its points, then the answer cell (a Markdown cell tagged ``otter_answer_cell``), then the
    end marker in a cell of its own, so that a student who rewrites the answer cell cannot lose it.
    """
    prompt = manual.prompt or "Your answer to the question of this exercise."
    cells = [_md(f"<!-- BEGIN QUESTION -->\n\n**{prompt}** <small>({manual.name})</small>\n\n"
                 f"_Points:_ {manual.points:g}. Answer in words in the cell below; your instructor grades it.",
                 role="manual-question", label=manual.name)]
    answer = _md(model_answer if model_answer is not None else MANUAL_PLACEHOLDER, role="manual-answer",
                 label=manual.name)
    answer.metadata["tags"] = [OTTER_ANSWER_TAG]
    cells.append(answer)
    cells.append(_md("<!-- END QUESTION -->", role="manual-end", label=manual.name))
    return cells


def student_notebook(chapter, public_answers, index, root, *, solutions=False, glued=None):
    """The student notebook of ``chapter`` (with ``solutions=True``: the solution notebook).

    ``public_answers`` maps exercise label -> {variable: public record} (type and shape of each
    answer, from :func:`assignments.checks.public`); ``index`` is :func:`label_index`;
    ``glued`` the values the chapter glued (:func:`glued_values`), written into exercise texts.
    """
    site = site_url(root)
    api = api_pages(root)
    page = index.get(chapter.label, (site, "chapter", chapter.title))[0]
    refs = index.get("references", (site + "book/references.html",))[0] if "references" in index else site + "book/references.html"
    cells = [_header_cell(chapter, page)] + _setup_cells(chapter, page)
    cells.append(_md("## Exercises", role="exercises-header"))
    cells.append(_code(_helper_source(public_answers), tags=(HELPER_TAG, "hide-input"), hidden=True,
                       role="helper"))
    for ex in chapter.exercises:
        cells += _exercise_cells(chapter, ex, page, index, refs, api, glued, solutions)
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


def _header_cell(chapter, page):
    """The notebook's first cell: the title, the points and how to work and hand in."""
    total, by_hand = chapter.points, chapter.manual_points
    graded = [e for e in chapter.exercises if e.graded]
    numbered = f"{chapter.number}. " if chapter.number is not None else ""
    if graded:
        points = (f"**{total:g} points** are graded automatically ({len(graded)} of "
                  f"{len(chapter.exercises)} exercises)")
        points += (f" and **{by_hand:g} points** by your instructor, who reads the answers you write in words.\n\n"
                   if by_hand else "; your instructor reads the rest.\n\n")
    elif by_hand:
        points = f"**{by_hand:g} points**, graded by your instructor, who reads your answers.\n\n"
    else:
        points = "None of them is graded automatically: your instructor reads your answers.\n\n"
    return _md(
        f"# Assignment: {numbered}{chapter.title}\n\n"
        f"The exercises of the chapter [{numbered}{chapter.title}]({page}). " + points
        + "**How to work.** Run all cells once (*Runtime → Run all* in Colab): the first cell installs "
        "`qmf_lite`, the collapsed cells under *Set-up* are the chapter's own code and define the names "
        "the exercises use (this takes about a minute). Then, for each exercise, write your code in the cell "
        "marked `# YOUR ANSWER`, store each answer in the variable the exercise names (replace the `...`), "
        "and run the `check(...)` cell below it. `check` tells you whether an answer has the right type and "
        "shape, **not** whether it is right. Answer a question asked in words in the text cell that follows it "
        f"(replace *{MANUAL_PLACEHOLDER.strip('_')}*).\n\n"
        "**Handing in.** Keep the variable names and do not delete cells. Before you hand in, restart and "
        "run all (*Runtime → Restart session and run all*): your notebook is graded by running it from top to "
        "bottom in a fresh kernel, so an answer that needs a cell you ran by hand, or that raises, scores zero. "
        "Then *File → Download → Download .ipynb* and hand in that file.",
        role="header")


def _setup_cells(chapter, page):
    """The Colab set-up cell and the chapter's code cells, collapsed, under their heading."""
    cells = []
    n_setup = len(chapter.code_cells)
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
    return cells


def _exercise_notes(ex):
    """How an exercise is graded, one italic line each."""
    notes = []
    if ex.graded:
        answers = ", ".join(f"`{c.var}` ({c.points:g} pt, compared {c.describe()})" for c in ex.checks)
        notes.append(f"*Graded automatically, {ex.points:g} point{'s' if ex.points != 1 else ''}: {answers}.*")
    if ex.manual:
        asked = ", ".join(f"{m.points:g} pt" for m in ex.manual)
        notes.append(f"*Graded by your instructor: {len(ex.manual)} question{'s' if len(ex.manual) > 1 else ''} "
                     f"answered in words ({asked}), in the text cells below.*")
    if not ex.graded and not ex.manual:
        notes.append("*Not graded: answer in the text cell below the code cell; your instructor reads it.*")
    return notes


def _exercise_cells(chapter, ex, page, index, refs, api, glued, solutions):
    """One exercise's cells: its text, the answer cell (the solution in a solution notebook), the check, and
    the cells for answers in words."""
    number = ex.number or str(chapter.exercises.index(ex) + 1)
    title = f"### Exercise {number}" + (f": {ex.title}" if ex.title else "") + f" <small>({ex.label})</small>"
    text = myst_to_markdown(ex.text, index, refs, api=api, glued=glued)
    if ex.starter:
        text += "\n\nComplete the code in the answer cell below."
    where = f"[Exercise {number} in the book]({page}#{ex.label}), with the text before it"
    cells = [_md(f"{title}\n\n{text}\n\n" + "\n".join(_exercise_notes(ex)) + f"\n\n<small>{where}.</small>",
                 role="exercise", label=ex.label)]
    if solutions and ex.solution_code:
        source = f"# SOLUTION ({ex.label})\n" + "\n\n".join(b.strip("\n") for b in ex.solution_code) + "\n"
    else:
        source = answer_template(ex)
    cells.append(_code(source, tags=(ANSWER_TAG,), role="answer", label=ex.label))
    if ex.graded:
        cells.append(_code(f'check("{ex.label}")', tags=(CHECK_TAG,), role="check", label=ex.label))
    model = None
    if solutions:
        _, prose = code_blocks(ex.solution_text)
        prose = "\n".join(ln for ln in prose.split("\n") if not re.match(r"^\s*%", ln)).strip()
        model = "**Solution:** " + myst_to_markdown(prose, index, refs, api=api, glued=glued)
    for manual in ex.manual:
        cells += manual_cells(manual, model_answer=model)
    if not ex.graded and not ex.manual:
        cells.append(_md(model or "**Your answer:** (write here)", role="answer-text", label=ex.label))
    return cells


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
