"""Course assignments (assignments/): parsing, checks, student notebooks, autograder, grading.

The grader must not be fooled: the solutions score full marks, empty answers score zero, one
wrong answer loses exactly its question's points, no solution text reaches a student notebook,
and the student notebooks run top to bottom with empty answers. The machinery is tested end to
end (build, ``otter run``, the grade report) on a small toy book (tests/fixtures/toy_book); every
real chapter with exercises is built and self-checked once, in the slow test at the end.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import pathlib
import re
import shutil

import nbformat
import numpy as np
import pytest
import sympy as sp
import yaml
from conftest import ROOT

from assignments import checks
from assignments.build import build, render_test_file
from assignments.notebooks import (META, find_leaks, label_index, site_url, solution_notebook,
                                   student_notebook)
from assignments.source import (SourceError, chapter_numbers, chapters_in_toc, directives,
                                parse_check, parse_manual, read_chapter)

TOY = ROOT / "tests" / "fixtures" / "toy_book"

# otter-grader 7.0 declares a traitlets trait with types instead of instances; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances:DeprecationWarning")


def _real_chapters():
    return [read_chapter(p) for p in chapters_in_toc(ROOT)]


def _role(nb, role, label=None):
    return [c for c in nb.cells if c.metadata.get(META, {}).get("role") == role
            and (label is None or c.metadata[META].get("label") == label)]


# ---------------------------------------------------------------------------------------------
# the source: # check: lines and directives

def test_check_lines_parse_every_form():
    c = parse_check("# check: floor_sr rtol=1e-6")
    assert (c.var, c.kind, c.rtol, c.atol, c.points) == ("floor_sr", "numeric", 1e-6, 0.0, 1.0)
    c = parse_check("   #check: ratio atol=0.05 rtol=1e-3 points=2")
    assert (c.kind, c.rtol, c.atol, c.points) == ("numeric", 1e-3, 0.05, 2.0)
    assert parse_check("# check: n exact").spec() == {"kind": "exact"}
    assert parse_check("# check: expr sympy").spec() == {"kind": "sympy"}
    assert parse_check("x = 1  # not a check line") is None


@pytest.mark.parametrize("line, message", [
    ("# check:", "empty"),
    ("# check: 1x rtol=1e-6", "variable name"),
    ("# check: x", "needs rtol=, atol=, exact or sympy"),
    ("# check: x rtol=abc", "not a number"),
    ("# check: x rtol=-1", ">= 0"),
    ("# check: x rtol=0", "both zero"),
    ("# check: x exact sympy", "two comparisons"),
    ("# check: x sympy rtol=1e-3", "mixes"),
    ("# check: x tol=1e-3", "unknown option"),
    ("# check: x exact points=0", "positive"),
])
def test_bad_check_lines_are_refused_with_the_reason(line, message):
    with pytest.raises(SourceError, match=re.escape(message)):
        parse_check(line, where="ch.ipynb, ex-1")


def test_manual_lines_parse_and_bad_ones_are_refused():
    m = parse_manual("# manual: why points=2 Which one moves, and why?", "ex-a")
    assert (m.name, m.points, m.prompt) == ("ex-a-why", 2.0, "Which one moves, and why?")
    m = parse_manual("% manual: short", "ex-b")  # the MyST comment form, default points, no wording
    assert (m.name, m.points, m.prompt) == ("ex-b-short", 1.0, "")
    assert parse_manual("# check: x exact", "ex-a") is None
    for line, message in [("# manual:", "empty"), ("# manual: 2why", "short name"),
                          ("# manual: why points=0 Why?", "positive"), ("# manual: why points=x", "not a number"),
                          ("# manual: why pts=2 Why?", "unknown option")]:
        with pytest.raises(SourceError, match=re.escape(message)):
            parse_manual(line, "ex-a", where="ch.ipynb, ex-a")


def test_directives_with_nested_fences_and_options():
    text = ("Intro\n\n````{exercise} A title\n:label: ex-a\n\nText with math:\n```{math}\nx^2\n```\n"
            "and code:\n```python\nx = ...\n```\n````\n\n````{solution} ex-a\n:class: dropdown\n\n```python\n"
            "# check: x rtol=1e-9\nx = 2\n```\n````\n")
    found = directives(text)
    assert [(n, a, o) for n, a, o, _ in found] == [("exercise", "A title", {"label": "ex-a"}),
                                                    ("solution", "ex-a", {"class": "dropdown"})]
    assert found[0][3].endswith("```python\nx = ...\n```")


def test_toy_chapter_reads_as_written():
    ch = read_chapter(TOY / "book" / "toy.ipynb")
    assert (ch.name, ch.label, ch.title) == ("toy", "ch-toy", "A toy chapter")
    assert "import qmf_lite" in ch.setup_cell and len(ch.code_cells) == 1
    assert [e.label for e in ch.exercises] == ["ex-toy-num", "ex-toy-sym", "ex-toy-exact", "ex-toy-essay"]
    assert [e.label for e in ch.graded] == ["ex-toy-num", "ex-toy-sym", "ex-toy-exact"]
    sym = ch.exercises[1]
    assert sym.starter == ["f = x ** 3\nderiv = ...   # the derivative of f"]
    assert [(c.var, c.kind, c.points) for c in sym.checks] == [("deriv", "sympy", 2.0)]
    assert ch.points == 6 and ch.targets["eq-toy"] == "equation"
    # questions answered in words: a '# manual:' line in the code, a '% manual:' comment in prose
    assert [(m.name, m.points) for e in ch.exercises for m in e.manual] == [
        ("ex-toy-sym-rule", 1.5), ("ex-toy-essay-why", 1.0)]
    assert ch.manual_points == 2.5
    assert ch.number == 1 and [e.number for e in ch.exercises] == ["1.1", "1.2", "1.3", "1.4"]


def test_chapters_and_exercises_are_numbered_as_in_the_book():
    """Numbered parts number their chapters on from part to part; the root page is unnumbered."""
    numbers = {p.stem: n for p, n in chapter_numbers(ROOT).items()}
    assert numbers["intro"] is None and numbers["signal_propagation"] == 1
    assert numbers["fixed_points"] == 3 and numbers["quantization_regimes"] == 12
    ch = read_chapter(ROOT / "book" / "fixed_points.ipynb")
    assert [e.number for e in ch.exercises][:2] == ["3.1", "3.2"]
    assert [e.number for e in read_chapter(ROOT / "book" / "intro.ipynb").exercises] == ["1", "2"]


def test_a_chapter_may_not_grade_one_variable_twice(tmp_path):
    nb = json.loads((TOY / "book" / "toy.ipynb").read_text())
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]).replace("# check: n_levels exact", "# check: double exact")
    path = tmp_path / "dup.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(SourceError, match="`?double.*ex-toy-num and ex-toy-exact|double' is declared by ex-toy-num and ex-toy-exact"):
        read_chapter(path)


# ---------------------------------------------------------------------------------------------
# the checks

def _record(value, **spec):
    kind = "numeric" if ("rtol" in spec or "atol" in spec) else spec.pop("kind")
    spec = {"kind": kind, **spec}
    return checks.encode(value, spec, "v"), spec


def test_numeric_checks_follow_the_tolerance():
    rec, spec = _record(2.0, rtol=1e-6)
    assert checks.compare(2.0 * (1 + 0.9e-6), rec, spec, "v") is None
    assert "within rtol=1e-06" in checks.compare(2.0 * (1 + 1.1e-6), rec, spec, "v")
    assert checks.compare(np.float32(2.0), rec, spec, "v") is None
    rec, spec = _record(np.array([0.0, 1.0]), atol=0.05)
    assert checks.compare([0.04, 0.96], rec, spec, "v") is None
    assert "1 of 2 entries" in checks.compare([0.06, 1.0], rec, spec, "v")
    assert "shape (3,)" in checks.compare([0.0, 1.0, 2.0], rec, spec, "v")
    assert "a single number" in checks.compare(np.array([0.0, 1.0]), _record(1.0, atol=1)[0], spec, "v")


@pytest.mark.parametrize("value, words", [
    (Ellipsis, "not answered"), (checks.MISSING, "not answered"), (None, "None"),
    (True, "boolean"), ("0.5", "string"), (float("nan"), "NaN"), (1 + 2j, "complex"),
    (sp.Symbol("q") + 1, "free symbols"), (object(), "cannot be read"),
])
def test_numeric_checks_refuse_what_is_not_a_number(value, words):
    rec, spec = _record(0.5, rtol=1e-6)
    assert words in checks.compare(value, rec, spec, "v")
    assert words in checks.sanity(value, checks.public(rec), "v")


def test_exact_checks_compare_values_and_kinds():
    rec, spec = _record((4, 2), kind="exact")
    assert checks.compare([4, 2], rec, spec) is None and checks.compare(np.array([4, 2]), rec, spec) is None
    assert "not the expected value" in checks.compare((4, 3), rec, spec)
    rec, spec = _record(True, kind="exact")
    assert checks.compare(np.bool_(True), rec, spec) is None
    assert "boolean" in checks.compare(1, rec, spec)
    rec, spec = _record(7, kind="exact")
    assert checks.compare(7.0, rec, spec) is None and "not the expected" in checks.compare(8, rec, spec)
    assert "whole number" in checks.compare(7.5, rec, spec)
    with pytest.raises(checks.CheckError, match="exact check takes"):
        checks.encode(object(), {"kind": "exact"}, "v")


def test_sympy_checks_are_symbolic():
    x = sp.Symbol("x", positive=True)
    rec, spec = _record(sp.sin(x) ** 2, kind="sympy")
    assert checks.compare(1 - sp.cos(x) ** 2, rec, spec) is None
    assert checks.compare(1 - sp.cos(sp.Symbol("x")) ** 2, rec, spec) is None  # same name, no assumptions
    assert "not symbolically equal" in checks.compare(sp.cos(x) ** 2, rec, spec)
    assert "string" in checks.compare("sin(x)**2", rec, spec)
    eps = sp.Symbol("epsilon", positive=True)
    series = sp.series(1 - 2 / sp.pi * sp.asin(1 - eps), eps, 0, 2)
    rec, spec = _record(series, kind="sympy")
    assert checks.compare(sp.series(1 - 2 / sp.pi * sp.asin(1 - eps), eps, 0, 2), rec, spec) is None
    assert "order term" in checks.compare(sp.series(1 - 2 / sp.pi * sp.asin(1 - eps), eps, 0, 3), rec, spec)
    m_rec, m_spec = _record(sp.Matrix([[x, 1], [0, x]]), kind="sympy")
    assert checks.compare(sp.Matrix([[x, 1], [0, x]]), m_rec, m_spec) is None
    assert "shape" in checks.compare(x, m_rec, m_spec)
    with pytest.raises(checks.CheckError, match="not a SymPy expression"):
        checks.encode(0.5, {"kind": "sympy"}, "v")


@pytest.mark.parametrize("value, spec", [
    (3.0, {"kind": "numeric", "rtol": 1e-6, "atol": 0.0}),
    (np.array([[0.0, -2.0], [1e-9, 5.0]]), {"kind": "numeric", "rtol": 0.0, "atol": 0.5}),
    (17, {"kind": "exact"}), (False, {"kind": "exact"}), ("sign", {"kind": "exact"}),
    ([1, 2, 3], {"kind": "exact"}), (sp.Symbol("d") ** 2 / 3, {"kind": "sympy"}),
])
def test_wrong_values_fail_and_public_records_hold_no_value(value, spec):
    rec = checks.encode(value, spec, "v")
    assert checks.compare(value, rec, spec) is None
    assert checks.compare(checks.wrong_value(rec, spec), rec, spec) is not None
    pub = json.dumps(checks.public(rec))
    assert not {"data", "value", "srepr"} & set(checks.public(rec))
    if spec["kind"] == "numeric":
        assert all(repr(float(v)) not in pub for v in np.ravel(value) if v not in (0, 1))


def test_student_check_prints_what_is_wrong_without_the_value(capsys):
    rec, _ = _record(np.array([0.25, 0.5]), atol=1e-3)
    answers = {"arr": checks.public(rec), "n": checks.public(checks.encode(3, {"kind": "exact"}, "n"))}
    assert checks.report("q", answers, {"arr": np.array([9.0, 9.0]), "n": Ellipsis}) is False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("\u2713 arr: the type and shape look right")  # 9.0 is wrong, but the shape is right
    assert out[1] == "\u2026 n: not answered yet (the variable is still `...` or not defined)"
    assert checks.report("q", answers, {"arr": [1.0], "n": "3"}) is False
    out = capsys.readouterr().out
    assert "\u2717 `arr` is an array of shape (1,); expected an array of shape (2,)" in out
    assert "\u2717 `n` is a string; expected an integer" in out
    assert "0.25" not in out and "3" not in out.replace("(1,)", "").replace("(2,)", "")


def test_a_slow_comparison_is_stopped_not_hung(monkeypatch):
    import time

    x = sp.Symbol("x")
    rec, spec = _record(sp.sin(x), kind="sympy")
    monkeypatch.setattr(sp, "simplify", lambda e: time.sleep(5) or e)
    t0 = time.perf_counter()
    assert "longer than 1 s" in checks.compare(sp.cos(x), rec, spec, "v", time_limit=1)
    assert time.perf_counter() - t0 < 3


def test_hidden_test_file_is_otter_format_and_hides_values(tmp_path):
    from otter.test_files import ExceptionTestFile

    ch = read_chapter(TOY / "book" / "toy.ipynb")
    ex = ch.exercises[0]
    records = {"double": checks.encode(6.0, ex.checks[0].spec(), "double"),
               "powers": checks.encode(np.array([3.0, 9.0]), ex.checks[1].spec(), "powers")}
    path = tmp_path / "ex-toy-num.py"
    path.write_text(render_test_file(ch, ex, records))
    tf = ExceptionTestFile.from_file(str(path))
    assert tf.name == "ex-toy-num" and tf.possible == 2 and all(tc.hidden for tc in tf.test_cases)
    tf.run({"double": 6.0, "powers": [3.0, 9.0]})
    assert tf.score == 2
    tf.run({"double": 6.5, "powers": [3.0, 9.0]})
    assert tf.score == 1
    message = next(r.message for r in tf.test_case_results if not r.passed)
    assert "`double` is not within rtol=1e-09" in message and "6.0" not in message


# ---------------------------------------------------------------------------------------------
# student notebooks of the real chapters (no execution)

def _assert_no_answer_data(nb):
    """The student notebook carries no solution data: the check helper holds checks.py (verbatim)
    and, per answer, only its kind, shape, finiteness, type and length; no other cell has more."""
    (helper,) = _role(nb, "helper")
    library = pathlib.Path(checks.__file__).read_text()
    assert library in helper.source
    answers = json.loads(re.search(r"_QMF_ANSWERS = _json.loads\(r'''(.*?)'''\)", helper.source, re.S).group(1))
    for question in answers.values():
        for record in question.values():
            assert set(record) <= {"kind", "shape", "finite", "type", "len"}, record
    rest = json.dumps([c for c in nb.cells if c is not helper]) + helper.source.replace(library, "")
    for marker in ("# check:", "SOLUTION", "srepr", '"data"', "_EXPECTED"):
        assert marker not in rest, marker


def _with_exercises():
    return [c for c in _real_chapters() if c.exercises]


@pytest.mark.parametrize("chapter", _with_exercises(), ids=lambda c: c.name)
def test_student_notebook_of_every_chapter_holds_no_solution(chapter):
    """Search the student notebook for each solution's code and text lines (type/shape data only)."""
    chapters = _real_chapters()
    index = label_index(chapters, ROOT)
    public = {e.label: {c.var: {"kind": "numeric", "shape": [], "finite": True} for c in e.checks}
              for e in chapter.graded}
    nb = student_notebook(chapter, public, index, ROOT)
    nbformat.validate(nb)
    assert find_leaks(nb, chapter) == []
    _assert_no_answer_data(nb)
    # the detector finds a leak when there is one: the solution notebook is full of them
    if any(e.solution_code for e in chapter.exercises):
        assert find_leaks(solution_notebook(chapter, public, index, ROOT), chapter)
    # each graded variable is in its answer cell, with `...` unless the starter computes it
    for ex in chapter.graded:
        (answer,) = _role(nb, "answer", ex.label)
        for c in ex.checks:
            assert re.search(rf"^\s*{c.var}\s*=", answer.source, re.M), (ex.label, c.var)
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert f"git+{url}" in first.source and "except ImportError" in first.source
    assert len(_role(nb, "setup")) == len(chapter.code_cells)
    assert all(c.metadata["cellView"] == "form" for c in _role(nb, "setup"))
    for cell in nb.cells:  # MyST that Colab cannot render is converted
        if cell.cell_type == "markdown":
            assert not re.search(r"\{(ref|eq|prf:ref|cite|cite:t|numref)\}`", cell.source), cell.source


# a question that an exercise asks and that a graded variable answers, not a text
ANSWERED_BY_A_VARIABLE = {"ex-weights-ragged": "Which batch sizes", "ex-regimes-convert": "How many such digits",
                          "ex-ptq-levels": "How many bits must a finite alphabet"}


@pytest.mark.parametrize("chapter", _with_exercises(), ids=lambda c: c.name)
def test_student_notebook_reads_like_the_book_and_every_question_has_an_answer_cell(chapter):
    """Exercise headings carry the book's numbers, {py:...} roles stay code (linked to the API
    reference), no exercise points at prose the notebook lacks, and every question asked in words
    has a '# manual:' line and an otter manually graded answer cell with its points."""
    from assignments.notebooks import OTTER_ANSWER_TAG, api_pages

    chapters = _real_chapters()
    nb = student_notebook(chapter, {}, label_index(chapters, ROOT), ROOT)
    api = api_pages(ROOT)
    for ex in chapter.exercises:
        (cell,) = _role(nb, "exercise", ex.label)
        assert cell.source.startswith(f"### Exercise {chapter.number}.{chapter.exercises.index(ex) + 1}"
                                      if chapter.number else f"### Exercise {chapter.exercises.index(ex) + 1}")
        for m in re.finditer(r"\{py:\w+\}`(?:[^`<]*<)?(?P<target>[^`>]+)>?`", ex.text):
            assert m.group("target") in api, m.group(0)  # the role links to its entry
            page, anchor = api[m.group("target")]
            assert re.search(r"\[`[^`]+`\]\(" + re.escape(f"{page}#{anchor}") + r"\)", cell.source), m.group(0)
        assert not re.search(r"\b(above|below|this chapter|as in the chapter|section)\b", ex.text), ex.label
        asked = [q for q in re.findall(r"[^.?]*\?", ex.text) if ANSWERED_BY_A_VARIABLE.get(ex.label, "@") not in q]
        if asked:
            assert ex.manual, (ex.label, asked)
        for manual in ex.manual:
            question, answer, end = _role(nb, "manual-question", manual.name) + _role(nb, "manual-answer", manual.name) \
                + _role(nb, "manual-end", manual.name)
            assert question.source.startswith("<!-- BEGIN QUESTION -->") and end.source == "<!-- END QUESTION -->"
            assert f"_Points:_ {manual.points:g}" in question.source and manual.prompt in question.source
            assert answer.cell_type == "markdown" and answer.metadata["tags"] == [OTTER_ANSWER_TAG]
            assert nb.cells.index(question) < nb.cells.index(answer) < nb.cells.index(end)


def test_leak_detector_flags_a_copied_solution_line():
    ch = read_chapter(TOY / "book" / "toy.ipynb")
    index = label_index([ch], TOY)
    nb = student_notebook(ch, {}, index, TOY)
    assert find_leaks(nb, ch) == []
    (answer,) = _role(nb, "answer", "ex-toy-sym")
    answer.source += "\nderiv = sp.diff(f, x)\n"
    assert find_leaks(nb, ch) == [("ex-toy-sym", "deriv = sp.diff(f, x)")]
    nb.cells.append(nbformat.v4.new_markdown_cell("The power rule gives three x squared."))
    assert ("ex-toy-sym", "The power rule gives three x squared.") in find_leaks(nb, ch)


def test_site_url_follows_the_repository_url(tmp_path):
    assert site_url(ROOT).startswith("https://") and site_url(ROOT).endswith("/")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/Some-Org/my-book\n")
    assert site_url(tmp_path) == "https://some-org.github.io/my-book/"
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/o/r\nhtml:\n  baseurl: https://x.org/b\n")
    assert site_url(tmp_path) == "https://x.org/b/"


# ---------------------------------------------------------------------------------------------
# the toy book, end to end: build (one kernel per chapter), student notebook run, grading

@pytest.fixture(scope="module")
def toy_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_assignments")
    reports = build(root=TOY, out=out, log=lambda *a: None)
    return out, {r["chapter"]: r for r in reports}


def test_the_build_refuses_answers_that_score_without_the_exercise():
    """A check that 0 or 1 passes gives the point away (a difference that should vanish, a ratio the question says is
    1): the build reports it. Before, naive_diff ~ -5.6e-17 with atol=1e-12 gave a point for `naive_diff = 0`."""
    import types

    import sympy

    from assignments import checks
    from assignments.build import _free_answers

    cases = {"ex-a": ("naive_diff", {"kind": "numeric", "rtol": 0.0, "atol": 1e-12}, -5.551115123125783e-17),
             "ex-b": ("sw_ratio", {"kind": "numeric", "rtol": 1e-9, "atol": 0.0}, 0.9999999999999998),
             "ex-c": ("x1_limit", {"kind": "sympy"}, sympy.Integer(0)),
             "ex-d": ("q_ratio", {"kind": "numeric", "rtol": 1e-9, "atol": 0.0}, 9.000000000000002),
             "ex-e": ("x1", {"kind": "sympy"}, 4 * sympy.Symbol("L", positive=True) - 3),
             "ex-f": ("n_roots", {"kind": "exact"}, 1)}
    chapter = types.SimpleNamespace(graded=[types.SimpleNamespace(label=label, checks=[types.SimpleNamespace(
        var=var, spec=lambda spec=spec: spec)]) for label, (var, spec, _) in cases.items()])
    records = {label: {var: checks.encode(value, spec, var)} for label, (var, spec, value) in cases.items()}
    problems = _free_answers(chapter, records)
    assert [p.split("`")[1] for p in problems] == ["naive_diff", "sw_ratio", "x1_limit"], problems
    assert all("scores without the exercise" in p for p in problems)


def test_toy_build_self_checks(toy_build):
    out, reports = toy_build
    assert {n: r["problems"] for n, r in reports.items()} == {"toy": [], "toy_intro": []}
    sc = reports["toy"]["self_check"]
    assert {q: (r["score"], r["possible"]) for q, r in sc["solutions"].items()} == {
        "ex-toy-num": (2, 2), "ex-toy-sym": (2, 2), "ex-toy-exact": (2, 2)}
    assert all(r["score"] == 0 for r in sc["blank"].values())
    for wrong, results in sc["wrong"].items():
        assert {q: r["score"] for q, r in results.items()} == {
            q: (0 if q == wrong else r["possible"]) for q, r in results.items()}
    for name in ("toy", "toy_intro"):
        assert (out / "student" / f"{name}.ipynb").exists() and (out / "autograder" / f"{name}.zip").exists()
    # nothing of the autograder in the student folder, no value in the student notebook
    assert sorted(p.name for p in (out / "student").iterdir()) == ["toy.ipynb", "toy_intro.ipynb"]
    _assert_no_answer_data(nbformat.read(out / "student" / "toy.ipynb", as_version=4))
    assert "3*x**2" not in (out / "student" / "toy.ipynb").read_text()
    # the exercise text quotes the value the chapter glued, formatted as the book formats it
    (num,) = _role(nbformat.read(out / "student" / "toy.ipynb", as_version=4), "exercise", "ex-toy-num")
    assert "Here $a = $ 3.0 (as `a`" in num.source and "computed in the chapter" not in num.source


def test_parallel_build_gives_what_the_sequential_one_gives(toy_build, tmp_path):
    """``jobs=2`` builds the two toy chapters at once, each in its own worker and kernel: the same
    reports (timings aside), student notebooks and hidden tests as one after the other."""
    out, reports = toy_build
    timing = {"setup_s", "build_s"}
    parallel = build(root=TOY, out=tmp_path / "out", log=lambda *a: None, jobs=2)
    assert [r["chapter"] for r in parallel] == ["toy_intro", "toy"]      # the book's order
    for r in parallel:
        assert {k: v for k, v in r.items() if k not in timing} == {
            k: v for k, v in reports[r["chapter"]].items() if k not in timing}
        cells = [[(c.cell_type, c.source, c.metadata) for c in nbformat.read(d / "student" / f"{r['chapter']}.ipynb",
                                                                               as_version=4).cells]
                 for d in (out, tmp_path / "out")]
        assert cells[0] == cells[1]          # (the cell ids are drawn anew by each build)
    for test in (out / "autograder" / "toy" / "tests").iterdir():
        assert (tmp_path / "out" / "autograder" / "toy" / "tests" / test.name).read_text() == test.read_text()
    with pytest.raises(ValueError, match=r"jobs must be an integer in \[1, 64\]"):
        build(root=TOY, out=tmp_path / "bad", jobs=0)


def test_toy_autograder_installs_the_code_that_computed_its_values(toy_build):
    """The Gradescope environment pins qmf_lite to this checkout's commit and takes a CPU torch."""
    import subprocess
    import sys
    import zipfile

    import torch

    out, _ = toy_build
    env = yaml.safe_load(zipfile.ZipFile(out / "autograder" / "toy.zip").read("environment.yml"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    url = yaml.safe_load((TOY / "_config.yml").read_text())["repository"]["url"]
    assert f"qmf_lite @ git+{url}@{commit}" in pip or any(re.fullmatch(r"qmf-lite==\S+", d) for d in pip)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
    assert f"torch=={torch.__version__.split('+')[0]}+cpu" in pip
    assert f"python={sys.version_info.major}.{sys.version_info.minor}" in env["dependencies"]


def test_grading_requirements_pin_a_release_at_its_tag_and_warn_about_uncommitted_code(tmp_path):
    import subprocess

    from assignments.build import grading_requirements

    repo = tmp_path / "repo"
    (repo / "qmf_lite").mkdir(parents=True)
    (repo / "qmf_lite" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text('[project]\nname = "qmf_lite"\nversion = "1.2.3"\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(git + args, check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines, warnings = grading_requirements(TOY, package_dir=repo / "qmf_lite")
    assert f"qmf_lite @ git+https://github.com/qmf-book/quantized-mean-field@{commit}" in lines and not warnings
    subprocess.run(git + ["tag", "v1.2.3"], check=True)
    lines, _ = grading_requirements(TOY, package_dir=repo / "qmf_lite")
    assert "qmf-lite==1.2.3" in lines
    (repo / "qmf_lite" / "__init__.py").write_text("x = 1\n")
    _, warnings = grading_requirements(TOY, package_dir=repo / "qmf_lite")
    assert len(warnings) == 1 and "uncommitted changes" in warnings[0]


def test_toy_student_notebook_runs_top_to_bottom_with_empty_answers(toy_build):
    from nbclient import NotebookClient

    from assignments._kernel import pinned_python3_kernel

    out, _ = toy_build
    nb = nbformat.read(out / "student" / "toy.ipynb", as_version=4)
    with pinned_python3_kernel():
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False).execute()
    printed = {c.metadata[META]["label"]: "".join(o.get("text", "") for o in c.outputs) for c in _role(nb, "check")}
    assert set(printed) == {"ex-toy-num", "ex-toy-sym", "ex-toy-exact"}
    assert all("not answered yet" in t for t in printed.values())


def test_notebook_kernels_run_this_python_even_if_the_user_installed_another(tmp_path, monkeypatch):
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from assignments._kernel import pinned_python3_kernel

    decoy = tmp_path / "user" / "kernels" / "python3"
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({"argv": ["/some/other/python", "-m", "ipykernel_launcher",
                                                            "-f", "{connection_file}"], "display_name": "x",
                                                   "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user"))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")  # as outside a virtual environment
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/some/other/python"
    with pinned_python3_kernel():
        assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    assert "JUPYTER_PATH" not in __import__("os").environ


def _submission(out, answers):
    """The toy student notebook with some answer cells replaced: {label: source} (code answers
    by exercise label, answers in words by question name)."""
    nb = nbformat.read(out / "student" / "toy.ipynb", as_version=4)
    for label, source in answers.items():
        (cell,) = _role(nb, "answer", label) or _role(nb, "manual-answer", label)
        cell.source = source
    return nb


def _solutions(out):
    sol = nbformat.read(out / "autograder" / "toy" / "solutions.ipynb", as_version=4)
    return {c.metadata[META]["label"]: c.source for c in _role(sol, "answer")}


def _fooling_submissions(out, subs):
    """Six submissions of the toy assignment in ``subs``: right, empty, one answer wrong, raising and looping,
    a PDF, a truncated notebook (and a stray hidden file)."""
    subs.mkdir()
    right = _solutions(out)
    right_with_words = {**right, "ex-toy-essay-why": "It tests the tools."}
    nbformat.write(_submission(out, right_with_words), subs / "alice.ipynb")             # all right
    nbformat.write(_submission(out, {}), subs / "bob.ipynb")                             # empty answers
    nbformat.write(_submission(out, {**right, "ex-toy-num": "double = 2 * a + 1e-6\npowers = np.array([a, a**2])"}),
                   subs / "carol.ipynb")                                                  # one wrong
    nbformat.write(_submission(out, {**right, "ex-toy-sym": "deriv = 1 / 0",
                                     "ex-toy-exact": "import time\nwhile True:\n    time.sleep(0.1)"}),
                   subs / "dave.ipynb")                                                   # raises, loops
    (subs / "erin.pdf").write_bytes(b"%PDF-1.4 a scan of a notebook")                     # not a notebook
    (subs / "frank.ipynb").write_text('{"cells": [{"cell_type": "code", "sou')             # truncated
    (subs / ".DS_Store").write_bytes(b"\0")                                                # ignored


def test_grading_a_folder_cannot_be_fooled(toy_build, tmp_path):
    from assignments.grade import grade

    out, _ = toy_build
    subs = tmp_path / "submissions"
    _fooling_submissions(out, subs)
    # (a cell limit that the toy's set-up cell, numpy and SymPy imports, keeps on a loaded machine)
    results = grade(subs, out / "autograder" / "toy.zip", tmp_path / "grades", cell_timeout=20, timeout=300,
                    jobs=2, log=lambda *a: None)
    by = {r["student"]: r for r in results}
    scores = {s: {q: r["score"] for q, r in by[s]["questions"].items() if r["graded"]} for s in by}
    assert scores == {
        "alice": {"ex-toy-num": 2, "ex-toy-sym": 2, "ex-toy-exact": 2},
        "bob": {"ex-toy-num": 0, "ex-toy-sym": 0, "ex-toy-exact": 0},
        "carol": {"ex-toy-num": 1, "ex-toy-sym": 2, "ex-toy-exact": 2},   # `double` wrong: its 1 point only
        "dave": {"ex-toy-num": 2, "ex-toy-sym": 0, "ex-toy-exact": 0},
        "erin": {"ex-toy-num": 0, "ex-toy-sym": 0, "ex-toy-exact": 0},
        "frank": {"ex-toy-num": 0, "ex-toy-sym": 0, "ex-toy-exact": 0},
    }
    assert by["erin"]["status"] == by["frank"]["status"] == "not a notebook"
    assert "not a Jupyter notebook" in by["erin"]["message"]
    dave_cells = {c["label"]: c["text"] for c in by["dave"]["cells"]}
    assert "ZeroDivisionError" in dave_cells["ex-toy-sym"]
    assert "time limit of 20 s" in dave_cells["ex-toy-exact"]

    rows = list(csv.DictReader((tmp_path / "grades" / "grades.csv").open()))
    assert [(r["student"], r["score"], r["possible"]) for r in rows] == [
        ("alice", "6", "6"), ("bob", "0", "6"), ("carol", "5", "6"), ("dave", "2", "6"),
        ("erin", "0", "6"), ("frank", "0", "6")]
    feedback = (tmp_path / "grades" / "feedback" / "carol.md").read_text()
    assert "**Score: 5 / 6**" in feedback
    assert "| ex-toy-num | 1 / 2 | `double` is not within rtol=1e-09 of the expected value |" in feedback
    assert "| ex-toy-essay | - | not graded automatically" in feedback
    dave = (tmp_path / "grades" / "feedback" / "dave.md").read_text()
    assert "raised ZeroDivisionError" in dave and "was stopped after the time limit" in dave
    assert "6.0" not in feedback  # the expected value is not revealed
    # the feedback numbers a cell as the student counts it: its place among the code cells of
    # the submitted notebook (otter's executed copy has cells of its own in front)
    dave_nb = nbformat.read(subs / "dave.ipynb", as_version=4)
    code = [c for c in dave_nb.cells if c.cell_type == "code"]
    number = 1 + code.index(_role(dave_nb, "answer", "ex-toy-sym")[0])
    assert {c["label"]: c["cell"] for c in by["dave"]["cells"]}["ex-toy-sym"] == number
    assert f"- Code cell {number} (your answer to ex-toy-sym) raised ZeroDivisionError" in dave
    # questions answered in words: points to grade by hand, the answers collected for the lecturer
    assert by["alice"]["questions"]["ex-toy-essay-why"] == {
        "score": None, "possible": 1.0, "graded": False, "manual": True, "failures": [],
        "answer": "It tests the tools."}
    assert by["bob"]["questions"]["ex-toy-sym-rule"]["answer"] == ""
    assert by["alice"]["manual_possible"] == 2.5
    assert "| ex-toy-sym-rule | - / 1.5 | no answer; graded by your instructor |" in feedback
    assert "your answers in words, worth 2.5 more points, are graded by your instructor" in feedback
    header = next(csv.reader((tmp_path / "grades" / "grades.csv").open()))
    assert "ex-toy-sym-rule (by hand, /1.5)" in header and "ex-toy-essay-why (by hand, /1)" in header
    assert all(r["ex-toy-essay-why (by hand, /1)"] == "" for r in rows)
    manual = (tmp_path / "grades" / "manual_answers.md").read_text()
    assert "## ex-toy-essay-why (1 point)" in manual and "### alice\n\n> It tests the tools." in manual


def test_grade_files_are_readable_by_the_group(toy_build, tmp_path):
    """Results, feedback, CSV: mode 0666 less the umask (0664 under umask 002), not mkstemp's 0600."""
    import os
    import stat

    from assignments.grade import grade

    out, _ = toy_build
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "ann.txt").write_text("not a notebook")
    old = os.umask(0o002)
    try:
        grade(subs, out / "autograder" / "toy.zip", tmp_path / "g", log=lambda *a: None)
    finally:
        os.umask(old)
    files = [tmp_path / "g" / "grades.csv", tmp_path / "g" / "results" / "ann.json",
             tmp_path / "g" / "feedback" / "ann.md", tmp_path / "g" / "manual_answers.md"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o664" for f in files}


def test_grading_survives_a_notebook_that_never_ends_and_keeps_earlier_results(toy_build, tmp_path):
    from assignments.grade import grade

    out, _ = toy_build
    subs, grades = tmp_path / "subs", tmp_path / "grades"
    subs.mkdir()
    nbformat.write(_submission(out, _solutions(out)), subs / "alice.ipynb")
    grade(subs, out / "autograder" / "toy.zip", grades, log=lambda *a: None)
    (subs / "alice.ipynb").rename(tmp_path / "alice.ipynb")  # alice's file gone: her result stays
    nb = _submission(out, {})
    nb.cells.insert(2, nbformat.v4.new_code_cell("import time\ntime.sleep(600)"))
    nbformat.write(nb, subs / "zoe.ipynb")
    seen = []
    (zoe,) = grade(subs, out / "autograder" / "toy.zip", grades, cell_timeout=600, timeout=5, log=seen.append)
    assert zoe["status"] == "time limit" and zoe["total"] == 0
    rows = {r["student"]: r for r in csv.DictReader((grades / "grades.csv").open())}
    assert rows["alice"]["score"] == "6" and rows["zoe"]["status"] == "time limit"
    # her row says that her file has gone (before: the CSV went on as if she were still submitted), and the log too
    assert rows["alice"]["status"] == "not submitted now" and "no longer in the submissions" in rows["alice"]["message"]
    assert any(s.startswith("alice: graded before but no longer in") for s in seen)
    assert "### alice" not in (grades / "manual_answers.md").read_text()
    assert "time limit for a whole notebook" in (grades / "feedback" / "zoe.md").read_text()
    # an unchanged submission graded with the same settings is not graded again; one graded with
    # another time limit is (alice was graded with the default --timeout, zoe with 5 s)
    shutil.move(tmp_path / "alice.ipynb", subs / "alice.ipynb")
    seen = []
    grade(subs, out / "autograder" / "toy.zip", grades, cell_timeout=600, timeout=5, log=seen.append)
    assert any("zoe: unchanged" in s for s in seen) and not any("alice: unchanged" in s for s in seen)
    rows = {r["student"]: r for r in csv.DictReader((grades / "grades.csv").open())}
    assert rows["alice"]["status"] != "not submitted now"                  # back in the folder, back in the grades
    seen = []  # another --cell-timeout: nothing is kept
    grade(subs, out / "autograder" / "toy.zip", grades, cell_timeout=300, timeout=5, log=seen.append)
    assert not any("unchanged" in s for s in seen) and any(s.startswith("zoe: 0/6 (time limit") for s in seen)


def test_grade_command_line(toy_build, tmp_path, capsys):
    from assignments.__main__ import main

    out, _ = toy_build
    with pytest.raises(SystemExit):
        main(["grade", str(tmp_path), "--autograder", str(tmp_path / "missing.zip")])
    assert "no autograder" in capsys.readouterr().err
    with pytest.raises(SystemExit):        # a build with --out: the message says how to find its autograder
        main(["grade", str(tmp_path), "--chapter", "no_such_chapter"])
    assert "pass --autograder OUT/autograder/<chapter>.zip" in capsys.readouterr().err
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "ann.txt").write_text("my answers are 6 and 9")
    assert main(["grade", str(subs), "--autograder", str(out / "autograder" / "toy.zip"),
                 "--out", str(tmp_path / "g")]) == 0
    rows = list(csv.DictReader((tmp_path / "g" / "grades.csv").open()))
    assert [(r["student"], r["score"], r["status"]) for r in rows] == [("ann", "0", "not a notebook")]


@pytest.mark.parametrize("args, needle", [
    (["build", "--jobs", "0"], "argument --jobs: must be an integer in [1, 64], got '0'"),
    (["build", "--jobs", "x"], "argument --jobs: must be an integer in [1, 64], got 'x'"),
    (["build", "no_such_chapter"], "error: no chapter called ['no_such_chapter'] in _toc.yml"),
    (["build", "--out", "FILE", "intro"], "argument --out: must name a folder, got the file"),
    (["classroom", "--out", "FILE"], "argument --out: must name a folder, got the file"),
    (["grade", ".", "--chapter", "intro", "--timeout", "-5"], "argument --timeout: must be an integer >= 1"),
    (["grade", ".", "--chapter", "intro", "--cell-timeout", "0"], "argument --cell-timeout: must be an integer >= 1"),
    (["grade", ".", "--chapter", "intro", "--jobs", "0"], "argument --jobs: must be an integer >= 1"),
])
def test_command_line_errors_are_one_line_not_a_traceback(args, needle, tmp_path, capsys):
    """Bad input to the lecturer's commands: exit code 2 and one line that says what is allowed (a
    ValueError, FileExistsError or BuildError traceback before)."""
    from assignments.__main__ import main

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as stop:
        main([str(a_file) if a == "FILE" else a for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and needle in err[-1] and "Traceback" not in "\n".join(err)


def test_build_reports_a_broken_solution(tmp_path):
    root = tmp_path / "book_root"
    shutil.copytree(TOY, root)
    path = root / "book" / "toy.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        cell["source"] = src.replace("double = 2 * a\n", "double = 2 * undefined_name\n")
    path.write_text(json.dumps(nb))
    (report,) = build(root=root, out=tmp_path / "out", names=["toy"], log=lambda *a: None)
    assert not report["ok"]
    text = "\n".join(report["problems"])
    assert report["problems"] == [p for p in report["problems"] if "ex-toy-num" in p]
    assert "the solution of ex-toy-num failed: NameError: name 'undefined_name' is not defined" in text
    assert len(report["problems"]) == 1
    assert not (tmp_path / "out" / "autograder" / "toy.zip").exists()


def _toy_with_essay_code(tmp_path, code):
    """A copy of the toy book whose ungraded essay solution carries a python block."""
    root = tmp_path / "book_root"
    shutil.copytree(TOY, root)
    path = root / "book" / "toy.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]).replace(
            "Because it exists for the tests of the assignment tooling only.\n",
            f"Because it exists for the tests of the assignment tooling only.\n\n```python\n{code}\n```\n")
    path.write_text(json.dumps(nb))
    return root


def test_build_runs_ungraded_solutions_and_reports_their_failures(tmp_path):
    root = _toy_with_essay_code(tmp_path, "short = len(undefined_essay_name)")
    (report,) = build(root=root, out=tmp_path / "out", names=["toy"], log=lambda *a: None)
    assert not report["ok"]
    (problem,) = report["problems"]
    assert problem.startswith("the solution of ex-toy-essay failed: NameError: "
                              "name 'undefined_essay_name' is not defined")
    ok_root = _toy_with_essay_code(tmp_path / "ok", "short = 1")
    (ok,) = build(root=ok_root, out=tmp_path / "ok_out", names=["toy"], log=lambda *a: None)
    assert ok["ok"] and "ex-toy-essay" in ok["solutions_run"]


def test_strict_warnings_turn_a_deprecated_call_into_a_problem(tmp_path):
    root = _toy_with_essay_code(tmp_path, 'import warnings\nwarnings.warn("old call", DeprecationWarning)')
    (lenient,) = build(root=root, out=tmp_path / "a", names=["toy"], log=lambda *a: None)
    assert lenient["ok"]
    (strict,) = build(root=root, out=tmp_path / "b", names=["toy"], log=lambda *a: None, strict_warnings=True)
    (problem,) = strict["problems"]
    assert problem.startswith("the solution of ex-toy-essay failed: DeprecationWarning: old call")


def test_build_reports_a_starter_that_raises(tmp_path):
    root = tmp_path / "book_root"
    shutil.copytree(TOY, root)
    path = root / "book" / "toy.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]).replace(
            "deriv = ...   # the derivative of f", "deriv = ...\nslope = deriv.subs(x, 1)")
    path.write_text(json.dumps(nb))
    (report,) = build(root=root, out=tmp_path / "out", names=["toy"], log=lambda *a: None)
    assert len(report["problems"]) == 1
    assert "raises with empty answers (answer cell of ex-toy-sym)" in report["problems"][0]
    assert "AttributeError" in report["problems"][0]
    assert not (tmp_path / "out" / "student" / "toy.ipynb").exists()


# ---------------------------------------------------------------------------------------------
# publishing and Colab

def test_pages_workflow_builds_with_the_readme_command_and_deploys():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"]
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build_steps, deploy_steps = wf["jobs"]["build"]["steps"], wf["jobs"]["deploy"]["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in build_steps]
    for action in ("actions/checkout", "actions/setup-python", "actions/configure-pages",
                   "actions/upload-pages-artifact"):
        assert action in uses, action
    assert all("@v" in s["uses"] for s in build_steps + deploy_steps if "uses" in s)
    upload = next(s for s in build_steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert [s["uses"].split("@")[0] for s in deploy_steps] == ["actions/deploy-pages"]
    assert wf["jobs"]["deploy"]["needs"] == "build"
    assert wf["jobs"]["deploy"]["environment"]["name"] == "github-pages"
    runs = [s.get("run", "") for s in build_steps]
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```bash\n(pip install -r requirements\.txt && jupyter-book build[^\n]*)\n", readme).group(1)
    assert any(command in r for r in runs), "the workflow must run the README's build command"
    torch_step = next(i for i, r in enumerate(runs) if "pip install" in r and "torch" in r)
    assert torch_step < next(i for i, r in enumerate(runs) if command in r), "torch (CPU) is installed first"
    python = next(s for s in build_steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(python["with"]["python-version"]) == "3.11"


@pytest.mark.book
def test_launch_and_repository_buttons_follow_the_configured_repository(built_book):
    """The book's Colab and repository buttons, like the set-up cells, use repository.url."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_name = repo["url"].split("github.com/", 1)[1].strip("/")
    for chapter in _with_exercises()[:3]:
        page = built_book / chapter.path.relative_to(ROOT).with_suffix(".html")
        html = page.read_text()
        nb_path = chapter.path.relative_to(ROOT).as_posix()
        assert f"colab.research.google.com/github/{owner_name}/blob/{repo['branch']}/{nb_path}" in html
        assert f'href="{repo["url"]}"' in html


def test_colab_package_list_is_copied_with_its_attribution():
    colab = ROOT / "assignments" / "colab"
    readme = (colab / "README.md").read_text()
    assert "googlecolab/backend-info" in readme and "Apache-2.0" in readme
    freeze = (colab / "pip-freeze.txt").read_text()
    assert "ipywidgets==7.7.1" in freeze and "numpy==2.1.3" in freeze
    from assignments.colab_parity import colab_constraints

    constraints = colab_constraints()
    assert "numpy==2.1.3" in constraints and "ipython==7.34.0" in constraints
    names = {re.split(r"[=<>]", line)[0].lower() for line in constraints}
    assert not names & {"torch", "torchvision", "torchaudio", "pip", "setuptools"}
    assert not any("@" in line or "://" in line for line in constraints)


def test_readme_tells_teachers_the_commands():
    readme = (ROOT / "README.md").read_text()
    lines, fenced = [], False
    for line in readme.split("## Teaching with this book", 1)[1].splitlines()[1:]:
        fenced ^= line.startswith("```")
        if line.startswith("## ") and not fenced:
            break
        lines.append(line)
    section = "\n".join(lines)
    for command in ("python -m assignments build", "python -m assignments grade", "python -m assignments classroom",
                    "_config.classroom.yml", "hide_solutions", "# manual:", "manual_answers.md",
                    "python assignments/colab_parity.py", "repository.url", "scripts/sync_colab_url.py",
                    "colab.research.google.com/github/"):
        assert command in section, command
    assert not re.search(r"SAMPLE_FEEDBACK|OTTER_PROBE|PARITY_RESULT", section)
    assert "**Score:" in section  # the sample feedback file


# ---------------------------------------------------------------------------------------------
# every real chapter, once: the slow test

@pytest.fixture(scope="session")
def real_build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("assignments")


@pytest.fixture(scope="session")
def real_builds(real_build_dir, request):
    """The assignments of the chapters this session tests, built once, as many chapters at once as there
    are cores (at most 4)."""
    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_chapter_assignment_builds_and_passes_its_self_check"]
    jobs = max(1, min(4, os.cpu_count() or 1, len(names)))
    reports = build(root=ROOT, out=real_build_dir, names=names, log=lambda *a: None, strict_warnings=True, jobs=jobs)
    return {r["chapter"]: r for r in reports}


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in _with_exercises()])
def test_chapter_assignment_builds_and_passes_its_self_check(name, real_builds, real_build_dir):
    """Runs the chapter once: its code (deprecated calls are errors), every solution, its student
    notebook with empty answers, and the hidden tests against the solutions (full marks), the empty answers (zero) and each
    question answered wrong (exactly that question's points lost)."""
    report = real_builds[name]
    assert report["problems"] == []
    # every solution of the chapter ran, graded or not (tests/test_solutions.py relies on this)
    chapter = read_chapter(ROOT / "book" / f"{name}.ipynb")
    assert sorted(report["solutions_run"]) == sorted(e.label for e in chapter.exercises if e.solution_code)
    student = nbformat.read(real_build_dir / "student" / f"{name}.ipynb", as_version=4)
    assert find_leaks(student, read_chapter(ROOT / "book" / f"{name}.ipynb")) == []
    if not report["graded"]:
        pytest.skip(f"{name} has no '# check:' line yet: nothing is graded automatically")
    sc = report["self_check"]
    assert all(r["score"] == r["possible"] > 0 for r in sc["solutions"].values())
    assert all(r["score"] == 0 for r in sc["blank"].values())
    for wrong, results in sc["wrong"].items():
        for q, r in results.items():
            assert r["score"] == (0 if q == wrong else r["possible"]), (wrong, q)


# ---------------------------------------------------------------------------------------------
# the classroom edition: the book without solutions

def test_classroom_overlay_merges_over_the_book_config(tmp_path):
    from assignments.classroom import classroom_config, merge

    assert merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "e": 3}) == {"a": {"b": 1, "c": [2]}, "d": 1, "e": 3}
    config = classroom_config(ROOT)
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert config["sphinx"]["config"]["html_copy_source"] is False
    assert config["launch_buttons"]["colab_url"] == "" and config["launch_buttons"]["binderhub_url"] == ""
    # everything else is the book's own configuration
    assert config["sphinx"]["extra_extensions"] == book["sphinx"]["extra_extensions"]
    assert config["sphinx"]["config"]["intersphinx_mapping"] == book["sphinx"]["config"]["intersphinx_mapping"]
    assert config["execute"] == book["execute"] and config["repository"] == book["repository"]
    # what Sphinx gets: the book's own configuration but for the overlay's keys
    from jupyter_book.config import get_final_config

    merged = tmp_path / "_config.yml"
    merged.write_text(yaml.safe_dump(config, sort_keys=False))   # as assignments.classroom writes it
    final = {name: get_final_config(user_yaml=path, cli_config={"latex_individualpages": False}, sourcedir=ROOT)[0]
             for name, path in (("book", ROOT / "_config.yml"), ("classroom", merged))}
    changed = {k for k in set(final["book"]) | set(final["classroom"]) if final["book"].get(k) != final["classroom"].get(k)}
    assert changed == {"hide_solutions", "html_copy_source", "html_show_sourcelink", "html_theme_options"}
    options = final["classroom"]["html_theme_options"]
    assert options["use_download_button"] is False
    assert options["launch_buttons"]["colab_url"] == options["launch_buttons"]["binderhub_url"] == ""
    assert {k: v for k, v in options.items() if k not in ("use_download_button", "launch_buttons")} == {
        k: v for k, v in final["book"]["html_theme_options"].items() if k not in ("use_download_button", "launch_buttons")}


def test_classroom_config_finds_the_books_local_extensions(tmp_path, monkeypatch):
    """jupyter-book looks for local extensions beside the configuration file, which the classroom edition writes
    under _build: their folders are written as absolute paths (before: "Could not import extension
    parallel_execute", and the edition never built)."""
    import subprocess

    from assignments import classroom

    calls = []
    monkeypatch.setattr(classroom.subprocess, "run", lambda cmd, check: calls.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    html, status = classroom.build_classroom(ROOT, tmp_path / "classroom")
    assert status == 0 and calls and calls[0][calls[0].index("--config") + 1] == str(tmp_path / "classroom" / "_config.yml")
    written = yaml.safe_load((tmp_path / "classroom" / "_config.yml").read_text())
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    extensions = written["sphinx"]["local_extensions"]
    assert set(extensions) == set(book["sphinx"]["local_extensions"]) and extensions
    for name, folder in extensions.items():
        assert pathlib.Path(folder).is_absolute() and (pathlib.Path(folder) / f"{name}.py").is_file(), (name, folder)


def test_classroom_edition_of_a_toy_book_has_no_solution(tmp_path):
    """A one-page book built the way `python -m assignments classroom` builds the real one: the
    exercise is on the page, its solution nowhere in the output (pages, search index, sources),
    and no button opens or downloads the source notebook."""
    from assignments.classroom import build_classroom

    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text(
        "title: A classroom toy\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n"
        "repository:\n  url: https://github.com/o/r\nlaunch_buttons:\n  colab_url: https://colab.research.google.com\n"
        "html:\n  use_download_button: true\n  use_repository_button: true\nsphinx:\n  extra_extensions:\n    - sphinx_exercise\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(
        "# A page with an exercise\n\nProse that both editions keep.\n\n"
        "````{exercise}\n:label: ex-toy-classroom\n\nWhat is the answer?\n````\n\n"
        "````{solution} ex-toy-classroom\n:class: dropdown\n\nForty-two, by a secret argument.\n````\n")
    html, rc = build_classroom(book, tmp_path / "out", extra_args=("-W", "-n", "--keep-going", "-q"))
    assert rc == 0
    page = (html / "index.html").read_text()
    assert "What is the answer?" in page and "Prose that both editions keep." in page
    everything = "\n".join(p.read_text(errors="replace") for p in html.rglob("*") if p.is_file())
    assert "secret argument" not in everything and "Forty-two" not in everything
    assert not (html / "_sources").exists()
    assert "colab.research.google.com" not in page
    assert "download-source-button" not in page and "download-notebook-button" not in page
