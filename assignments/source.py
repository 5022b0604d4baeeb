"""Read a chapter's exercises, solutions and ``# check:`` lines: the single source of an assignment.

A chapter (``book/<name>.ipynb``) states its exercises with the MyST directives of
sphinx-exercise, as the project's brief prescribes::

    ````{exercise}
    :label: ex-<chapter>-<short>

    Text, naming the variable(s) the answer is stored in.
    ```python
    starter = ...          # optional starter code the student completes
    ```
    ````

    ````{solution} ex-<chapter>-<short>
    :class: dropdown

    ```python
    # check: floor_sr rtol=1e-6
    # check: ratio atol=0.05
    floor_sr = ...
    ```
    One or two sentences of explanation.
    ````

A ``# check: <var> <how>`` line declares a graded answer and how a student's value is compared
with the solution's: ``rtol=<r>`` and/or ``atol=<a>`` (numbers and arrays), ``exact`` (``==``:
ints, bools, strings, lists), ``sympy`` (``sympy.simplify(student - solution) == 0``).
``points=<n>`` (default 1) is an optional extra.

A ``# manual: <name> points=<n> <question>`` line declares a question answered in words, read
and graded by the lecturer (an otter manually graded question): ``<name>`` is a short word
(the question is called ``<exercise label>-<name>``), ``points=<n>`` its points (default 1) and
the rest of the line the question as the student's answer cell repeats it, e.g.
``# manual: why points=2 Which one moves, and why?``. It stands among the ``# check:`` lines of
the solution's code, or, in a solution without code, as a MyST comment line ``% manual: ...``
(not shown in the book). This module only parses; it runs nothing.
"""
import json
import pathlib
import re
from dataclasses import dataclass, field

__all__ = [
    "Check", "Manual", "Exercise", "Chapter", "SourceError", "parse_check", "parse_manual", "read_chapter",
    "directives", "directive_spans", "without_directives", "code_blocks", "chapters_in_toc",
    "chapter_numbers",
]


class SourceError(ValueError):
    """A chapter's exercises do not follow the convention (the message says where and how)."""


@dataclass(frozen=True)
class Check:
    """One graded answer: the variable, how it is compared, and its points."""

    var: str
    kind: str  # "numeric", "exact" or "sympy"
    rtol: float = 0.0
    atol: float = 0.0
    points: float = 1.0

    def spec(self):
        """The comparison as a JSON-able dict (what the hidden tests and the checks read)."""
        if self.kind == "numeric":
            return {"kind": "numeric", "rtol": self.rtol, "atol": self.atol}
        return {"kind": self.kind}

    def describe(self):
        """How the answer is compared, in words ("within rtol=1e-06", "exactly", ...)."""
        if self.kind == "numeric":
            parts = [f"rtol={self.rtol:g}"] if self.rtol else []
            parts += [f"atol={self.atol:g}"] if self.atol else []
            return "within " + " and ".join(parts)
        return {"exact": "exactly", "sympy": "symbolically"}[self.kind]


@dataclass(frozen=True)
class Manual:
    """One question answered in words and graded by hand: its name, points and wording."""

    name: str          # the question's full name: "<exercise label>-<short name>"
    points: float = 1.0
    prompt: str = ""   # the question as the answer cell repeats it ("" : the exercise's question)


@dataclass
class Exercise:
    """An exercise directive and its solution directive (if any)."""

    label: str
    title: str
    text: str                      # the exercise's body (MyST), without its options
    starter: list                  # ```python blocks inside the exercise: code the student completes
    solution_code: list = field(default_factory=list)   # ```python blocks of the solution, in order
    solution_text: str = ""        # the solution's body, code blocks included
    checks: list = field(default_factory=list)           # Check objects, from the solution's code
    cell: int = -1                 # index of the markdown cell holding the exercise
    manual: list = field(default_factory=list)           # Manual objects: questions graded by hand
    number: str = ""               # as the book numbers it: "3.2" (chapter 3), "2" (unnumbered chapter)

    @property
    def graded(self):
        return bool(self.checks)

    @property
    def points(self):
        """The points graded automatically (the ``# check:`` lines)."""
        return sum(c.points for c in self.checks)

    @property
    def manual_points(self):
        """The points the lecturer grades (the ``# manual:`` lines)."""
        return sum(m.points for m in self.manual)


@dataclass
class Chapter:
    """What an assignment needs from a chapter notebook."""

    name: str                  # file stem, e.g. "fixed_points"
    path: pathlib.Path
    label: str                 # "(ch-fixed)=" -> "ch-fixed"
    title: str                 # the "# ..." heading of the first cell (MyST math kept)
    setup_cell: str            # the Colab set-up cell (first code cell) source
    code_cells: list           # the other code cells, in order: the set-up the exercises need
    exercises: list            # Exercise objects, in the order of the book
    targets: dict              # label -> kind ("chapter", "equation", "section", ...) found in this chapter
    number: int = None         # the chapter's number in the book (None: unnumbered)

    @property
    def graded(self):
        return [e for e in self.exercises if e.graded]

    @property
    def points(self):
        """The points graded automatically."""
        return sum(e.points for e in self.exercises)

    @property
    def manual_points(self):
        """The points of the questions the lecturer grades."""
        return sum(e.manual_points for e in self.exercises)


_CHECK = re.compile(r"^\s*#\s*check:\s*(?P<body>.*?)\s*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_check(line, where="?"):
    """Parse one ``# check:`` line into a :class:`Check`; ``None`` if the line is not one.

    >>> parse_check("# check: floor_sr rtol=1e-6")
    Check(var='floor_sr', kind='numeric', rtol=1e-06, atol=0.0, points=1.0)
    >>> parse_check("# check: expansion sympy points=2").kind
    'sympy'
    """
    m = _CHECK.match(line)
    if not m:
        return None
    words = m.group("body").split()
    if not words:
        raise SourceError(f"{where}: empty '# check:' line")
    var, opts = words[0], words[1:]
    if not _IDENT.match(var):
        raise SourceError(f"{where}: '# check: {var}': the first word must be a variable name")
    kind, rtol, atol, points = None, 0.0, 0.0, 1.0
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key in ("exact", "sympy") and not eq:
            if kind is not None:
                raise SourceError(f"{where}: '# check: {var}' names two comparisons")
            kind = key
        elif key in ("rtol", "atol", "points") and eq:
            try:
                number = float(value)
            except ValueError:
                raise SourceError(f"{where}: '# check: {var}': {key}={value!r} is not a number") from None
            if not (number >= 0 and number < float("inf")):
                raise SourceError(f"{where}: '# check: {var}': {key} must be finite and >= 0, got {value}")
            if key == "points":
                points = number
            else:
                if kind not in (None, "numeric"):
                    raise SourceError(f"{where}: '# check: {var}' mixes {kind} with {key}")
                kind = "numeric"
                rtol, atol = (number, atol) if key == "rtol" else (rtol, number)
        else:
            raise SourceError(
                f"{where}: '# check: {var}': unknown option {opt!r} "
                "(allowed: rtol=<r>, atol=<a>, exact, sympy, points=<n>)")
    if kind is None:
        raise SourceError(f"{where}: '# check: {var}' needs rtol=, atol=, exact or sympy")
    if kind == "numeric" and rtol == 0 and atol == 0:
        raise SourceError(f"{where}: '# check: {var}': rtol and atol are both zero; use 'exact' for ==")
    if points <= 0:
        raise SourceError(f"{where}: '# check: {var}': points must be positive")
    return Check(var, kind, rtol, atol, points)


_MANUAL = re.compile(r"^\s*[#%]\s*manual:\s*(?P<body>.*?)\s*$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_manual(line, label, where="?"):
    """Parse one ``# manual:`` (or ``% manual:``) line into a :class:`Manual`; ``None`` if it is not one.

    >>> parse_manual("# manual: why points=2 Which one moves, and why?", "ex-a")
    Manual(name='ex-a-why', points=2.0, prompt='Which one moves, and why?')
    """
    m = _MANUAL.match(line)
    if not m:
        return None
    words = m.group("body").split(None, 1)
    if not words:
        raise SourceError(f"{where}: empty '# manual:' line")
    name, rest = words[0], (words[1] if len(words) > 1 else "")
    if not _NAME.match(name):
        raise SourceError(f"{where}: '# manual: {name}': the first word must be a short name "
                          "(letters, digits, _), e.g. '# manual: why points=1 Why?'")
    points = 1.0
    opt = re.match(r"^points=(?P<value>\S+)\s*", rest)
    if opt:
        try:
            points = float(opt.group("value"))
        except ValueError:
            raise SourceError(f"{where}: '# manual: {name}': points={opt.group('value')!r} is not a number") from None
        if not (0 < points < float("inf")):
            raise SourceError(f"{where}: '# manual: {name}': points must be positive and finite")
        rest = rest[opt.end():]
    elif re.match(r"^\w+=", rest):
        raise SourceError(f"{where}: '# manual: {name}': unknown option {rest.split()[0]!r} (allowed: points=<n>)")
    return Manual(f"{label}-{name}", points, rest.strip())


_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*?)\s*$")
_CODE_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")


def _block_end(lines, start, fence):
    """Index of the line closing the directive opened at ``start`` (nested code fences skipped)."""
    char, n = fence[0], len(fence)
    inner = None  # the fence of an open nested code block
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if inner is not None:
            if stripped and set(stripped) == {inner[0]} and len(stripped) >= len(inner):
                inner = None
            continue
        if stripped and set(stripped) == {char} and len(stripped) >= n:
            return i
        nested = _OPEN.match(lines[i]) or _CODE_OPEN.match(lines[i])
        if nested:
            # a nested code block or directive: its closing fence does not close this directive
            inner = nested.group("fence")
    return None


def directive_spans(markdown):
    """Every top-level MyST directive of a markdown text, with where it is.

    Returns a list of ``(first_line, last_line, name, argument, options, body)``; lines are
    indices into ``markdown.split("\n")``, the last being the closing fence.
    """
    lines = markdown.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        end = _block_end(lines, i, m.group("fence"))
        if end is None:
            raise SourceError(f"unclosed {m.group('fence')}{{{m.group('name')}}} directive")
        body = lines[i + 1:end]
        options = {}
        while body and re.match(r"^\s*:[\w-]+:", body[0]):
            key, _, value = body.pop(0).strip()[1:].partition(":")
            options[key.strip()] = value.strip()
        out.append((i, end, m.group("name"), m.group("arg"), options, "\n".join(body).strip("\n")))
        i = end + 1
    return out


def directives(markdown):
    """Every top-level MyST directive of a markdown text: ``(name, argument, options, body)``."""
    return [span[2:] for span in directive_spans(markdown)]


def without_directives(markdown, names):
    """``markdown`` with the top-level directives called one of ``names`` removed."""
    lines = markdown.split("\n")
    for first, last, name, *_ in reversed(directive_spans(markdown)):
        if name in names:
            del lines[first:last + 1]
    return "\n".join(lines)


def code_blocks(markdown, languages=("python", "python3", "ipython", "ipython3", "py")):
    """The ``` fenced code blocks of a markdown text in the given languages, and the text without them.

    Returns ``(blocks, rest)``: the blocks' contents and the markdown with those blocks removed.
    """
    lines = markdown.split("\n")
    blocks, rest, i = [], [], 0
    while i < len(lines):
        m = _CODE_OPEN.match(lines[i])
        if m and m.group("info").split()[:1] and m.group("info").split()[0].lower() in languages:
            fence = m.group("fence")
            j = i + 1
            while j < len(lines):
                s = lines[j].strip()
                if s and set(s) == {fence[0]} and len(s) >= len(fence):
                    break
                j += 1
            blocks.append("\n".join(lines[i + 1:j]))
            i = j + 1
            continue
        rest.append(lines[i])
        i += 1
    return blocks, "\n".join(rest)


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _targets(cells):
    """Labels defined in the chapter: ``(label)=`` targets, ``:label:`` options, equation labels."""
    found = {}
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        text = _source(cell)
        for m in re.finditer(r"^\((?P<label>[\w:.-]+)\)=\s*$", text, re.M):
            found.setdefault(m.group("label"), "section")
        for m in re.finditer(r"^\s*[`:]{3,}\{(?P<name>[\w:-]+)\}[^\n]*\n(?:\s*:[\w-]+:[^\n]*\n)*?\s*:label:\s*(?P<label>\S+)",
                             text, re.M):
            kind = "equation" if m.group("name") == "math" else m.group("name")
            found.setdefault(m.group("label"), kind)
    return found


_FROM_TOC = object()


def read_chapter(path, number=_FROM_TOC):
    """Parse a chapter notebook into a :class:`Chapter` (raises :class:`SourceError` on a bad exercise).

    ``number`` is the chapter's number in the book, which numbers its exercises ("Exercise 3.2");
    by default it is read from the ``_toc.yml`` of the nearest folder above ``path`` that has one
    (see :func:`chapter_numbers`).
    """
    path = pathlib.Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    first = _source(cells[0]) if cells else ""
    label_m = re.search(r"^\((?P<label>[\w:.-]+)\)=\s*$", first, re.M)
    title_m = re.search(r"^#\s+(?P<title>.+?)\s*$", first, re.M)
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    setup = code[0] if code and "import qmf_lite" in code[0] and "ImportError" in code[0] else None
    exercises, solutions, order = _exercise_directives(cells, path)
    for label, body in solutions.items():
        if label not in exercises:
            raise SourceError(f"{path.name}: a solution for {label!r}, which is no exercise label")
        _attach_solution(exercises[label], body, path)
    owner = {}
    for label in order:
        for check in exercises[label].checks:
            if check.var in owner:
                raise SourceError(
                    f"{path.name}: '# check: {check.var}' is declared by {owner[check.var]} and {label}; "
                    "a chapter's answer variables must have distinct names (the grader reads them "
                    "from one namespace)")
            owner[check.var] = label
    if number is _FROM_TOC:
        number = _number_from_toc(path)
    for k, label in enumerate(order, 1):
        exercises[label].number = f"{number}.{k}" if number is not None else f"{k}"
    return Chapter(
        number=number,
        name=path.stem, path=path,
        label=label_m.group("label") if label_m else path.stem,
        title=title_m.group("title") if title_m else path.stem,
        setup_cell=setup,
        code_cells=code[1:] if setup is not None else code,
        exercises=[exercises[label] for label in order],
        targets=_targets(cells),
    )


def _exercise_directives(cells, path):
    """The chapter's exercises (``{label: Exercise}``), solutions (``{label: body}``) and the exercises'
    labels in the book's order, from the ``exercise`` and ``solution`` directives of its markdown cells."""
    exercises, solutions = {}, {}
    order = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        try:
            found = directives(_source(cell))
        except SourceError as exc:
            raise SourceError(f"{path.name}, cell {index}: {exc}") from None
        for name, arg, options, body in found:
            if name == "exercise":
                label = options.get("label")
                if not label:
                    raise SourceError(f"{path.name}, cell {index}: an exercise without :label:")
                if label in exercises:
                    raise SourceError(f"{path.name}: two exercises labelled {label}")
                starter, text = code_blocks(body)
                exercises[label] = Exercise(label, arg, text.strip("\n"), starter, cell=index)
                order.append(label)
            elif name == "solution":
                target = arg.strip() or options.get("label", "")
                if target in solutions:
                    raise SourceError(f"{path.name}: two solutions for {target}")
                solutions[target] = body
    return exercises, solutions, order


def _attach_solution(ex, body, path):
    """Give exercise ``ex`` its solution ``body``: its code blocks, its text, its ``# manual:`` questions and its
    ``# check:`` lines (one per variable)."""
    label = ex.label
    blocks, _ = code_blocks(body)
    ex.solution_code, ex.solution_text = blocks, body
    seen = set()
    for line in body.split("\n"):  # manual lines: in the code blocks (#) or the prose (%)
        manual = parse_manual(line, label, where=f"{path.name}, {label}")
        if manual is None:
            continue
        if any(m.name == manual.name for m in ex.manual):
            raise SourceError(f"{path.name}, {label}: two '# manual:' lines called {manual.name}")
        ex.manual.append(manual)
    for block in blocks:
        for line in block.split("\n"):
            check = parse_check(line, where=f"{path.name}, {label}")
            if check is None:
                continue
            if check.var in seen:
                raise SourceError(f"{path.name}, {label}: two '# check:' lines for {check.var}")
            seen.add(check.var)
            ex.checks.append(check)


def toc_files(root):
    """Every file named in ``root/_toc.yml``, in the book's order: paths relative to ``root``, without suffix."""
    import yaml

    toc = yaml.safe_load((pathlib.Path(root) / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def chapters_in_toc(root):
    """The notebooks named in ``_toc.yml``, in the book's order (only those that exist)."""
    root = pathlib.Path(root)
    return [root / f"{f}.ipynb" for f in toc_files(root) if (root / f"{f}.ipynb").exists()]


def chapter_numbers(root):
    """The number the book gives each notebook of ``_toc.yml``: path -> int, or None if unnumbered.

    Chapters of the parts marked ``numbered`` are numbered on from part to part (Jupyter Book's
    default, ``use_multitoc_numbering``); the root page and unnumbered parts get None.
    """
    import yaml

    root = pathlib.Path(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    numbers = {(root / f"{toc['root']}.ipynb").resolve(): None}
    count = 0
    parts = toc.get("parts") or [{"chapters": toc.get("chapters"), "numbered": toc.get("numbered")}]
    for part in parts:
        for entry in part.get("chapters") or []:
            if "file" not in entry:
                continue
            number = None
            if part.get("numbered"):
                count += 1
                number = count
            numbers[(root / f"{entry['file']}.ipynb").resolve()] = number
    return numbers


def _number_from_toc(path):
    path = pathlib.Path(path).resolve()
    for folder in path.parents:
        if (folder / "_toc.yml").exists():
            return chapter_numbers(folder).get(path)
    return None
