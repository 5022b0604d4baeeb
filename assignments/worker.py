"""Grade one submission with ``otter run`` (no Docker), in a process of its own.

    python -m assignments.worker AUTOGRADER.zip SUBMISSION.ipynb RESULT.json CELL_TIMEOUT

``assignments.grade`` starts one such process per submission, with a wall-clock limit, so that a
submission that crashes the kernel, the grader or the process, or never ends, costs only its
own result. Otter executes the notebook with errors allowed (a cell that raises does not stop
the run) and then runs the hidden tests in the notebook's namespace. Here each cell also gets a
time limit: a cell still running after CELL_TIMEOUT seconds is interrupted (KeyboardInterrupt)
and the run goes on, so one endless answer costs only the questions that need it.
"""
import json
import os
import re
import sys

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _limit_cells(seconds):
    """Make otter's executor (nbconvert's ExecutePreprocessor) interrupt a cell after ``seconds``."""
    import nbconvert.preprocessors as pp
    from traitlets import Bool, Integer

    class TimedExecutePreprocessor(pp.ExecutePreprocessor):
        timeout = Integer(seconds, allow_none=True).tag(config=True)
        interrupt_on_timeout = Bool(True).tag(config=True)

    pp.ExecutePreprocessor = TimedExecutePreprocessor  # otter imports it from here when grading


def failure_text(message):
    """The useful line of an otter test-case message: the check's own words."""
    message = _ANSI.sub("", message or "").strip()
    last = message.splitlines()[-1] if message else ""
    m = re.match(r"^(AssertionError|TimeoutError):\s*(.*)$", last)
    if m:
        return m.group(2)
    return last or "failed"


CELL_NUMBER = "qmf_cell_number"


def number_code_cells(nb):
    """Stamp each code cell of a submission with its number as the student sees it.

    The n-th code cell from the top is "code cell n" (and shows ``[n]`` after *Restart and run
    all*). Otter runs a copy with cells of its own inserted (its set-up at the top, the tests at
    the end), so positions in the executed copy are not the student's; the stamp, kept in the
    cells' metadata through otter's run, is. Returns ``nb``, changed in place.
    """
    number = 0
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            number += 1
            cell.setdefault("metadata", {})[CELL_NUMBER] = number
    return nb


def cell_problems(executed, cell_timeout):
    """Errors raised by the cells of the executed notebook, with the exercise they belong to.

    Each problem names the cell by its number in the student's notebook (see
    :func:`number_code_cells`); a cell that otter added has no number (``None``).
    """
    problems = []
    for cell in executed.cells:
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("qmf_assignment", {})
        number = cell.get("metadata", {}).get(CELL_NUMBER)
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            ename, evalue = out.get("ename", "Error"), _ANSI.sub("", str(out.get("evalue", "")))
            if ename == "KeyboardInterrupt":
                text = f"was stopped after the time limit of {cell_timeout} s per cell"
            else:
                text = f"raised {ename}: {evalue}"[:500]
            where = meta.get("label") or meta.get("role") or ""
            role = meta.get("role", "unknown") if number is not None else "grader"
            problems.append({"cell": number, "role": role, "label": where, "text": text})
    return problems


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    autograder, submission, result_path, cell_timeout = argv[0], argv[1], argv[2], int(argv[3])
    _limit_cells(cell_timeout)
    from otter.run import main as otter_run

    results = otter_run(submission, autograder=autograder, output_dir=None, no_logo=True)
    out = {"questions": {}, "cells": [], "catastrophic": None}
    if results.has_catastrophic_failure():
        out["catastrophic"] = str(results._catastrophic_error)
    for name, tf in results.results.items():
        out["questions"][name] = {
            "score": tf.score, "possible": tf.possible,
            "cases": [{"name": r.test_case.name, "passed": r.passed,
                       "points": r.test_case.points,
                       "message": None if r.passed else failure_text(r.message)}
                      for r in tf.test_case_results],
        }
    if results.notebook is not None:
        out["cells"] = cell_problems(results.notebook, cell_timeout)
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, result_path)


if __name__ == "__main__":
    main()
