"""The shape of the package, guarded: no import cycle, short functions, each private helper once,
arguments checked once at the door, and the package's table of modules in step with the book.

These tests read the source (``ast``) and the book's ``_toc.yml``; only the check count runs code.
"""
from __future__ import annotations

import ast
import collections
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qmf_lite"

#: the most lines of code a function or method may have, its docstring aside
MAX_FUNCTION_LINES = 60

#: functions allowed over MAX_FUNCTION_LINES, as "path:qualified name" -> the reason. Every entry is
#: a debt to pay: split the function into named steps and delete its line. Keep it empty.
LONG_FUNCTION_ALLOWED: dict[str, str] = {}


# --- helpers ----------------------------------------------------------------------------------

def _package_modules():
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}


def _imported_modules(path, modules):
    """The modules of the package that ``path`` imports, anywhere in the file (inside functions too).

    ``from . import x`` and ``from .x import y`` (or their ``qmf_lite`` spellings) import the module
    ``x``; ``from . import name`` of a name that is no module imports the package's ``__init__``.
    Imports made by ``importlib`` with a computed name (the lazy names of ``__init__``) are not seen.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1 or (node.level == 0 and not (node.module or "").startswith("qmf_lite")):
                continue
            parts = (node.module or "").split(".")
            if node.level == 0:
                parts = parts[1:]          # qmf_lite.x -> x
            if parts and parts[0]:
                found.add(parts[0] if parts[0] in modules else "__init__")
            else:                          # from . import a, b
                found.update(a.name if a.name in modules else "__init__" for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "qmf_lite":
                    found.add(parts[1] if len(parts) > 1 and parts[1] in modules else "__init__")
    found.discard(path.stem)
    return found


def _import_graph():
    modules = _package_modules()
    return {name: _imported_modules(path, modules) for name, path in modules.items()}


def _cycles(graph):
    """Every elementary cycle's strongly connected component (Tarjan), as a list of module names."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _a_cycle_through(component, graph):
    """One cycle inside a strongly connected component, as 'a -> b -> ... -> a'."""
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in component)
        back = [w for w in nxt if w in seen]
        if back:
            cut = path.index(back[0])
            return " -> ".join(path[cut:] + [back[0]])
        path.append(nxt[0])
        seen.add(nxt[0])


def _docstring_lines(node):
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def _function_lengths(path):
    """(qualified name, first line, lines of code) of every function and method in ``path``."""
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out.append((name, child.lineno, child.end_lineno - child.lineno + 1 - _docstring_lines(child)))
                walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), filename=str(path)), "")
    return out


def _source_files():
    for folder in ("qmf_lite", "assignments", "scripts"):
        yield from sorted((ROOT / folder).rglob("*.py"))


# --- the tests --------------------------------------------------------------------------------

def test_the_import_graph_is_read_from_the_source():
    """The graph sees imports at the top and inside functions (a guard that cannot see is no guard)."""
    graph = _import_graph()
    assert {"gaussian", "_validate", "_common"} <= graph["activations"]
    assert "training" in graph["ntk"]            # imported inside empirical_ntk
    assert "__init__" in graph["fig3"]           # `from . import __version__` inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_modules():
    """No module of qmf_lite imports, directly or through others, a module that imports it back.

    The graph has an edge ``a -> b`` for every ``import``/``from ... import`` of ``b`` anywhere in
    ``qmf_lite/a.py``, inside functions included (a function-level import hides a cycle from the
    interpreter, not from the reader).
    """
    graph = _import_graph()
    cycles = [_a_cycle_through(component, graph) for component in _cycles(graph)]
    assert not cycles, "import cycles among qmf_lite modules:\n  " + "\n  ".join(cycles)


def test_functions_are_short():
    """No function or method of qmf_lite/, assignments/ or scripts/ has more than 60 lines of code.

    How it counts: from the ``def`` line to the function's last line (``end_lineno - lineno + 1``
    from the AST, so decorators are not counted and blank lines and comments inside are), minus the
    lines of its docstring (the first statement, when it is a string). A nested function counts in
    its own right and within the function that holds it. Exceptions go in LONG_FUNCTION_ALLOWED,
    with the reason, and should not exist.
    """
    offenders, stale = [], set(LONG_FUNCTION_ALLOWED)
    for path in _source_files():
        rel = path.relative_to(ROOT).as_posix()
        for name, line, length in _function_lengths(path):
            key = f"{rel}:{name}"
            stale.discard(key)
            if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTION_ALLOWED:
                offenders.append(f"{rel}:{line} {name}: {length} lines of code")
    print("\n".join(["functions over the limit:"] + offenders) if offenders else "no function over the limit")
    assert not offenders, (f"{len(offenders)} functions over {MAX_FUNCTION_LINES} lines of code (docstring "
                           f"excluded); split them into named steps:\n  " + "\n  ".join(offenders))
    assert not stale, f"LONG_FUNCTION_ALLOWED names functions that no longer exist: {sorted(stale)}"


def test_no_private_helper_is_defined_in_two_modules():
    """A module-level ``_name`` function lives in one module of qmf_lite; modules that share it import it
    (from ``qmf_lite/_common.py`` or from the module of its concept)."""
    where = collections.defaultdict(list)
    for name, path in _package_modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("_") \
                    and not node.name.startswith("__"):
                where[node.name].append(name)
    twice = {helper: modules for helper, modules in where.items() if len(modules) > 1}
    assert not twice, "private helpers defined in more than one module: " + "; ".join(
        f"{helper} in {', '.join(modules)}" for helper, modules in sorted(twice.items()))


def _validate_calls(call):
    """The calls into ``qmf_lite._validate`` that ``call()`` makes from outside it: (function, argument
    name) -> count. A check that calls another check (``check_positive`` -> ``_as_float_array``)
    counts once, as the outer one."""
    from qmf_lite import _validate

    counts = collections.Counter()
    target = _validate.__file__

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == target and frame.f_back is not None \
                and frame.f_back.f_code.co_filename != target:
            counts[frame.f_code.co_name, frame.f_locals.get("name")] += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return counts


def test_optimal_init_checks_each_argument_once():
    """``optimal_init(16)`` checks ``levels`` and ``scale`` once each at its door; what it calls inside
    the package (the activation, chi_max's cached core) checks nothing again. Before issue 22 it
    checked ``levels`` four times and chi_max's ``complement`` twice."""
    import qmf_lite as qmf

    qmf.tradeoff._chi_max_cached.cache_clear()     # the cold path, which does the most work
    counts = _validate_calls(lambda: qmf.optimal_init(16))
    assert counts, "the profile saw no call into qmf_lite._validate"
    repeated = {key: n for key, n in counts.items() if n != 1}
    assert not repeated, f"arguments checked more than once by optimal_init(16): {repeated} (all: {dict(counts)})"
    assert {name for _, name in counts} == {"levels", "scale"}, dict(counts)


def _toc_chapter_numbers():
    """``book/<file>`` -> its chapter number: the chapters of the parts marked ``numbered``, numbered
    on from part to part (Jupyter Book's default, ``use_multitoc_numbering``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text()) or {}
    continuous = (config.get("html") or {}).get("use_multitoc_numbering", True)
    numbers, count = {}, 0
    for part in toc.get("parts") or []:
        if not continuous:
            count = 0
        for entry in part.get("chapters") or []:
            if part.get("numbered") and "file" in entry:
                count += 1
                numbers[entry["file"]] = count
    return numbers


def _uses(notebook, module):
    text = (ROOT / f"{notebook}.ipynb").read_text()
    return re.search(rf"\bqmf(?:_lite)?\.{module}\b|from qmf_lite import [\w ,]*\b{module}\b", text) is not None


def test_the_package_table_numbers_chapters_as_the_book_does():
    """Each ``(ch. N)`` in the module table of qmf_lite/__init__.py names the chapter that _toc.yml numbers
    N, and that chapter uses the module (the table said 9-11 for the chapters the book numbers 10-12)."""
    import qmf_lite as qmf

    numbers = _toc_chapter_numbers()
    by_number = {n: f for f, n in numbers.items()}
    rows = re.findall(r"^``(\w+)``\s.*\(ch\. (\d+)\)", qmf.__doc__, re.M)
    assert len(rows) >= 4, "the table's chapter references were not found"
    wrong = []
    for module, number in rows:
        chapter = by_number.get(int(number))
        users = sorted(f"{f} (ch. {n})" for f, n in numbers.items() if _uses(f, module))
        if chapter is None or not _uses(chapter, module):
            wrong.append(f"{module}: the table says ch. {number} ({chapter or 'no such chapter'}); "
                         f"chapters that use it: {', '.join(users) or 'none'}")
    assert not wrong, "the table of qmf_lite/__init__.py disagrees with _toc.yml:\n  " + "\n  ".join(wrong)
