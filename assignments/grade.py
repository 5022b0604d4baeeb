"""Grade a folder of submitted notebooks offline with otter-grader: a CSV and feedback per student.

    python -m assignments grade SUBMISSIONS/ --chapter fixed_points

Each file of the folder is one student's submission (the student is the file name without its
suffix). Each is graded by ``otter run`` in a process of its own (``assignments.worker``) with a
time limit per cell and one for the whole notebook. Whatever a submission does (raise, loop,
crash the kernel, not be a notebook), it gets zero for what could not be graded and a message
saying why; the run goes on with the next one.

Written in the output folder, each file atomically (written aside, then renamed):

* ``results/<student>.json``: the full result of one student (written as soon as it is known);
* ``feedback/<student>.md``: what the student gets: each question, its points, the failing check;
* ``grades.csv``: one row per student, rebuilt from ``results/`` after every student, so that
  an interrupted run loses nothing; running again skips submissions already graded unchanged
  (same file, same autograder, same time limits: a changed ``--cell-timeout`` or ``--timeout``
  grades them again).

The files are readable by the group (mode 0666 less the umask, as any file the user writes).
"""
import csv
import datetime as _dt
import hashlib
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

from ._kernel import jupyter_path_env, write_kernelspec
from .worker import number_code_cells

MANUAL_PLACEHOLDER = "_Type your answer here, replacing this text._"  # as in notebooks.py (otter's words)

__all__ = ["grade", "read_manifest", "feedback_markdown"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
MANIFEST = "qmf_assignment.json"
_IGNORED = re.compile(r"^(\.|__MACOSX$|Thumbs\.db$|desktop\.ini$)")


def read_manifest(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as z:
        return json.loads(z.read(MANIFEST))


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file renamed into place.

    The file gets the mode an ordinary ``open(path, "w")`` would (0666 less the umask: 0644 or,
    with a group umask of 002, 0664), so that a course's staff can read the grades; the
    temporary name is unique per process and thread (grading runs threads).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _student_id(path):
    stem = path.name[:-len("".join(path.suffixes))] if path.suffixes else path.name
    return re.sub(r"[^\w.@+-]+", "_", stem).strip("._") or "submission"


def _read_notebook(path):
    """The notebook, or a message saying why the file is not one."""
    import nbformat

    if path.is_dir():
        return None, "a folder, not a notebook file"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"the file cannot be read ({exc})"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "not a Jupyter notebook (the file is not notebook JSON): hand in the .ipynb file (File > Download > Download .ipynb)"
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:
        return None, f"not a valid Jupyter notebook ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    if not any(c.cell_type == "code" for c in nb.cells):
        return None, "the notebook has no code cells"
    return nb, None


def _zero(manifest, why, nb=None):
    return {q["name"]: _manual(q, nb) if q.get("manual") else
            {"score": 0, "possible": q["points"], "graded": q["graded"], "failures": [why] if q["graded"] else []}
            for q in manifest["questions"]}


def _manual(question, nb):
    """A question graded by hand: no score yet, its points, and the student's answer (text)."""
    answer = None
    if nb is not None:
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("qmf_assignment", {})
            if meta.get("role") == "manual-answer" and meta.get("label") == question["name"]:
                answer = cell.source.strip()
        if answer is not None and (not answer or answer == MANUAL_PLACEHOLDER):
            answer = ""
    return {"score": None, "possible": question["points"], "graded": False, "manual": True,
            "failures": [], "answer": answer}


def _totals(questions):
    """(score, possible) of the automatically graded questions."""
    auto = [q for q in questions.values() if q.get("graded")]
    return sum(q["score"] for q in auto), sum(q["possible"] for q in auto)


def _manual_possible(questions):
    return sum(q["possible"] for q in questions.values() if q.get("manual"))


def _grade_one(path, autograder, manifest, out, cell_timeout, timeout, kernels):
    """Grade one submission; returns its result dict (never raises for the submission's faults)."""
    student = _student_id(path)
    result = {"student": student, "file": path.name, "chapter": manifest["chapter"],
              "graded_at": _dt.datetime.now().isoformat(timespec="seconds"),
              "status": "graded", "message": "", "notes": [], "cells": []}
    nb, problem = _read_notebook(path)
    if problem:
        result.update(status="not a notebook", message=problem, questions=_zero(manifest, problem))
        return result
    result["sha256"] = _sha256(path)
    chapter = nb.metadata.get("qmf_assignment", {}).get("chapter")
    if chapter is None:
        result["notes"].append("the notebook is not one of the generated student notebooks (its metadata "
                               "names no assignment); it was graded all the same")
    elif chapter != manifest["chapter"]:
        result["notes"].append(f"this notebook is the assignment of chapter '{chapter}', not '{manifest['chapter']}'")
    if nb.metadata.get("qmf_assignment", {}).get("solutions"):
        result["notes"].append("this notebook is marked as a solution notebook")

    logs = pathlib.Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="grade-") as work:
        # otter grades the one .ipynb it finds in the submission folder: give it a clean name
        # (each code cell stamped with its number in the student's notebook, for the feedback)
        import nbformat

        sub = pathlib.Path(work) / "submission.ipynb"
        nbformat.write(number_code_cells(nb), str(sub))
        res_path = pathlib.Path(work) / "result.json"
        cmd = [sys.executable, "-m", "assignments.worker", str(autograder), str(sub), str(res_path), str(cell_timeout)]
        env = jupyter_path_env(kernels)  # the notebook's python3 kernel runs this interpreter
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(logs / f"{student}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                why = (f"grading was stopped after {timeout} s (the time limit for a whole notebook): "
                       "the notebook runs far too long or never ends")
                result.update(status="time limit", message=why, questions=_zero(manifest, why, nb))
                return result
        if rc != 0 or not res_path.exists():
            tail = (logs / f"{student}.log").read_text(errors="replace").strip().splitlines()[-3:]
            why = "the grader could not run this notebook" + (f" ({' / '.join(tail)[:400]})" if tail else "")
            result.update(status="error", message=why, questions=_zero(manifest, why, nb))
            return result
        raw = json.loads(res_path.read_text())
    result["cells"] = raw["cells"]
    if raw.get("catastrophic"):
        why = f"the notebook could not be graded: {raw['catastrophic'][:400]}"
        result.update(status="error", message=why, questions=_zero(manifest, why, nb))
        return result
    result["questions"] = _questions(manifest, raw, nb)
    return result


def _questions(manifest, raw, nb):
    """Each question's score, possible points and failed cases, from the worker's ``raw`` results (manual
    questions from the notebook ``nb``, ungraded ones worth nothing)."""
    questions = {}
    for q in manifest["questions"]:
        got = raw["questions"].get(q["name"])
        if q.get("manual"):
            questions[q["name"]] = _manual(q, nb)
        elif not q["graded"]:
            questions[q["name"]] = {"score": 0, "possible": 0, "graded": False, "failures": []}
        elif got is None:
            questions[q["name"]] = {"score": 0, "possible": q["points"], "graded": True,
                                    "failures": ["its test did not run"]}
        else:
            questions[q["name"]] = {"score": got["score"], "possible": got["possible"], "graded": True,
                                    "failures": [c["message"] for c in got["cases"] if not c["passed"]]}
    return questions


def _kill_group(proc):
    """Kill the worker and everything it started (the kernel) by their process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def feedback_markdown(result, manifest):
    """The feedback a student reads: score, each question with its points and failing check."""
    total, possible = _totals(result["questions"])
    by_hand = _manual_possible(result["questions"])
    lines = [f"# {manifest['title']}: feedback for {result['student']}", "",
             f"Submission `{result['file']}`, graded {result['graded_at']}.", "",
             f"**Score: {total:g} / {possible:g}**" + (
                 f" (graded automatically; your answers in words, worth {by_hand:g} more "
                 f"point{'s' if by_hand != 1 else ''}, are graded by your instructor)" if by_hand else ""), ""]
    if result["message"]:
        lines += [f"**Your notebook could not be graded:** {result['message']}", ""]
    lines += ["| exercise | points | result |", "|---|---|---|"]
    for q in manifest["questions"]:
        r = result["questions"][q["name"]]
        if r.get("manual"):
            said = "no answer" if not r.get("answer") else "answered"
            lines.append(f"| {q['name']} | - / {r['possible']:g} | {said}; graded by your instructor |")
            continue
        if not r["graded"]:
            lines.append(f"| {q['name']} | - | not graded automatically: your instructor reads this answer |")
            continue
        text = "passed" if not r["failures"] else "<br>".join(_md_cell(f) for f in r["failures"])
        lines.append(f"| {q['name']} | {r['score']:g} / {r['possible']:g} | {text} |")
    problems = result.get("cells", [])
    if problems or result["notes"]:
        lines += ["", "## While running your notebook", ""]
        for c in problems:
            if c["cell"] is None:
                lines.append(f"- The grader's own code {_md_cell(c['text'])}.")
                continue
            where = {"answer": f"your answer to {c['label']}", "check": f"the check of {c['label']}",
                     "setup": "a set-up cell (the chapter's code)", "colab-setup": "the set-up cell",
                     "helper": "the check helper"}.get(c["role"], "a cell")
            lines.append(f"- Code cell {c['cell']} ({where}) {_md_cell(c['text'])}.")
        for note in result["notes"]:
            lines.append(f"- Note: {note}.")
    lines += ["", "Each answer is compared with the value the solution computes: numbers within the "
              "tolerance shown in the exercise, SymPy expressions symbolically, the rest exactly.", ""]
    return "\n".join(lines)


#: the status of a student whose submission has left the folder since it was graded
_GONE = "not submitted now"


def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _write_csv(out, manifest, current=None):
    """``grades.csv`` (and ``manual_answers.md``) from every result in ``out/results``; a student not in ``current``
    (the ids of the submissions being graded) keeps the row, marked as no longer submitted, but leaves
    the answers to grade by hand."""
    results = []
    for p in sorted((pathlib.Path(out) / "results").glob("*.json")):
        try:
            results.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue
    graded = [q["name"] for q in manifest["questions"] if q["graded"]]
    manual = [q for q in manifest["questions"] if q.get("manual")]
    buf = io.StringIO()
    w = csv.writer(buf)
    # the columns of the questions graded by hand stay empty: the lecturer fills them in
    w.writerow(["student", "file", "score", "possible", *graded,
                *[f"{q['name']} (by hand, /{q['points']:g})" for q in manual], "status", "message"])
    gone = set() if current is None else {r["student"] for r in results} - set(current)
    for r in results:
        qs = r["questions"]
        total, possible = _totals(qs)
        status, message = ((_GONE, f"{r['file']} is no longer in the submissions folder; its result is kept in "
                                    f"results/{r['student']}.json") if r["student"] in gone else (r["status"], r["message"]))
        w.writerow([r["student"], r["file"], f"{total:g}", f"{possible:g}",
                    *[f"{qs[n]['score']:g}" if n in qs else "" for n in graded], *["" for _ in manual],
                    status, message])
    _write_atomic(pathlib.Path(out) / "grades.csv", buf.getvalue())
    if manual:
        _write_atomic(pathlib.Path(out) / "manual_answers.md",
                      _manual_answers([r for r in results if r["student"] not in gone], manual, manifest))
    return sorted(gone)


def _manual_answers(results, manual, manifest):
    """Every student's answer to each question graded by hand, question by question."""
    lines = [f"# {manifest['title']}: answers to grade by hand", "",
             "Each question, then each student's answer as written in the notebook's answer cell. "
             "Enter the points in the question's column of `grades.csv`.", ""]
    for q in manual:
        prompt = q.get("prompt") or "(the question of the exercise)"
        lines += [f"## {q['name']} ({q['points']:g} point{'s' if q['points'] != 1 else ''})", "",
                  f"Exercise {q.get('number') or q['exercise']}: {prompt}", ""]
        for r in results:
            answer = r["questions"].get(q["name"], {}).get("answer")
            text = "*(no answer)*" if not answer else "\n".join("> " + ln for ln in answer.split("\n"))
            lines += [f"### {r['student']}", "", text, ""]
    return "\n".join(lines)


def grade(submissions, autograder, out, *, cell_timeout=600, timeout=3600, jobs=1, regrade=False, log=print):
    """Grade every file in the folder ``submissions``; returns the results (also written to ``out``)."""
    submissions, out, autograder = pathlib.Path(submissions), pathlib.Path(out), pathlib.Path(autograder)
    manifest = read_manifest(autograder)
    ag_hash = _sha256(autograder)
    # what a result depends on besides the submission: a kept result must have been graded with
    # the same autograder and the same settings, or the submission is graded again
    settings = {"autograder": ag_hash, "cell_timeout": cell_timeout, "timeout": timeout}
    files = sorted(p for p in submissions.iterdir() if not _IGNORED.match(p.name))
    ids = {}
    for p in files:
        sid = _student_id(p)
        if sid in ids:
            raise ValueError(f"{p.name} and {ids[sid].name} would both be graded as student '{sid}': rename one")
        ids[sid] = p
    (out / "results").mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    results = []
    kernels_dir = tempfile.TemporaryDirectory(prefix="qmf-kernel-")
    kernels = write_kernelspec(kernels_dir.name)

    def one(path):
        sid = _student_id(path)
        res_file = out / "results" / f"{sid}.json"
        if res_file.exists() and not regrade:
            try:
                old = json.loads(res_file.read_text())
                if old.get("sha256") == _sha256(path) and old.get("settings") == settings:
                    log(f"{sid}: unchanged since it was graded, kept ({old['total']:g}/{old['possible']:g})")
                    return old
            except (json.JSONDecodeError, KeyError, OSError):
                pass
        try:
            r = _grade_one(path, autograder, manifest, out, cell_timeout, timeout, kernels)
        except Exception as exc:  # a fault of ours: still record the student, and go on
            why = f"the grader failed on this submission ({type(exc).__name__}: {exc})"
            r = {"student": sid, "file": path.name, "chapter": manifest["chapter"], "status": "error",
                 "message": why, "notes": [], "cells": [], "questions": _zero(manifest, why),
                 "graded_at": _dt.datetime.now().isoformat(timespec="seconds")}
        r["autograder"] = ag_hash
        r["settings"] = settings
        r["total"], r["possible"] = _totals(r["questions"])
        r["manual_possible"] = _manual_possible(r["questions"])
        _write_atomic(res_file, json.dumps(r, indent=1))
        _write_atomic(out / "feedback" / f"{sid}.md", feedback_markdown(r, manifest))
        with lock:
            _write_csv(out, manifest, ids)
        log(f"{sid}: {r['total']:g}/{r['possible']:g} ({r['status']}{': ' + r['message'] if r['message'] else ''})")
        return r

    try:
        if jobs > 1:
            with ThreadPoolExecutor(jobs) as pool:
                results = list(pool.map(one, files))
        else:
            results = [one(p) for p in files]
    finally:
        kernels_dir.cleanup()
    _final_csv(out, manifest, ids, submissions, log)
    return results


def _final_csv(out, manifest, ids, submissions, log):
    """The CSV once every submission is graded, and a line for each student graded before whose file has left."""
    for sid in _write_csv(out, manifest, ids):
        log(f"{sid}: graded before but no longer in {submissions}: marked '{_GONE}' in grades.csv (delete "
            f"results/{sid}.json to drop the row)")
