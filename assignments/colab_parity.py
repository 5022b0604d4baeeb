"""Colab parity: the chapters and the student notebooks in an environment built like Colab's.

    python assignments/colab_parity.py                 # before each release; ~2x the book's run time
    python assignments/colab_parity.py --chapters fixed_points --students fixed_points
    python assignments/colab_parity.py --otter-probe   # what `pip install otter-grader` does there

What it does:

1. builds a virtual environment (``_build/colab-parity/venv``) whose packages are pinned to
   Colab's published list (``assignments/colab/pip-freeze.txt`` as a pip constraints file): the
   scientific stack and the Jupyter kernel stack a chapter touches (numpy 2.1.3, scipy, sympy,
   matplotlib, IPython 7.34, ipykernel 6.17, ipywidgets 7.7.1, ...). torch is installed
   separately, as Colab ships it preinstalled: by default ``torch==2.13.0``; qmf_lite is NOT
   installed;
2. runs every chapter of ``_toc.yml`` in a fresh kernel of that environment, in an empty folder
   and with an empty result cache, as a student opening it in Colab would: its first cell finds
   no qmf_lite and installs it with ``%pip install "qmf_lite @ git+<url>"``, the URL pointing
   at this repository's committed HEAD (``git+file://...@<sha>``) instead of GitHub;
3. builds the assignments (``python -m assignments build``, in the current environment) and
   runs, in the Colab-like environment, each student notebook with its answer cells filled in
   with the solutions: no cell may fail and every ``check(...)`` must pass;
4. fails if installing qmf_lite changed the version of any package Colab pins.

It writes ``_build/colab-parity/report.md`` and exits non-zero when anything failed.

Known differences from Colab, stated in the report: Python (Colab: 3.13; here the interpreter
given by ``--python``, default ``python3.11``, because this project's offline package index has
a torch wheel only for 3.11) and torch (Colab: 2.11.0+cpu; here ``--torch``). No GPU, no
``google.colab`` module (the chapters do not use it), and the browser front end is not tested.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python assignments/colab_parity.py`
    sys.path.insert(0, str(ROOT))

COLAB = ROOT / "assignments" / "colab"
FREEZE = COLAB / "pip-freeze.txt"
WORK = ROOT / "_build" / "colab-parity"

#: what a chapter imports in Colab, directly or through its kernel; versions come from Colab's list
RUNTIME = ["numpy", "scipy", "sympy", "matplotlib", "tqdm", "pandas", "scikit-learn", "ipython",
           "ipykernel", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "jupyter_client",
           "jupyter_core", "traitlets", "pyzmq", "tornado", "nbformat", "nbclient", "pillow",
           "matplotlib-inline", "ipython-genutils", "debugpy", "psutil", "packaging", "threadpoolctl"]
#: packages of Colab's list near the ones otter-grader's requirements move (ipywidgets, wrapt)
PROBE = ["ipython", "ipykernel", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "wrapt",
         "nbconvert", "nbformat", "nbclient", "jupytext", "pandas", "numpy", "jinja2", "requests", "pyyaml",
         "click", "dill", "tqdm", "bqplot", "ipyleaflet", "ipyevents", "ipyfilechooser", "anywidget",
         "smart_open", "notebook", "traitlets"]
_NOT_PINNED = ("torch", "torchvision", "torchaudio", "torchcodec", "pip", "setuptools", "wheel")
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_constraints(path=FREEZE):
    """Colab's ``pip freeze`` as constraints: ``name==version`` lines, without torch & co., URLs,
    local paths and the packaging tools (pip, setuptools, wheel)."""
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")) or "@" in line or "://" in line or "==" not in line:
            continue
        name = _canonical(line.split("==")[0])
        if name in _NOT_PINNED:
            continue
        out.append(line)
    return out


def colab_versions(path=FREEZE):
    return {_canonical(line.split("==")[0]): line.split("==")[1] for line in colab_constraints(path)}


def _run(cmd, log, **kw):
    log.write(f"\n$ {' '.join(map(str, cmd))}\n")
    log.flush()
    return subprocess.run(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT, **kw)


def _freeze(python):
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            versions[_canonical(name)] = version
        elif " @ " in line:
            versions[_canonical(line.split(" @ ")[0])] = line.split(" @ ", 1)[1]
    return versions


def make_env(venv, python, torch, pip_args, packages, log, with_torch=True):
    """A fresh virtual environment with ``packages`` pinned to Colab's versions (and torch)."""
    if venv.exists():
        shutil.rmtree(venv)
    if _run([python, "-m", "venv", venv], log).returncode:
        raise SystemExit(f"could not create a virtual environment with {python}")
    py = venv / "bin" / "python"
    pip_pin = re.search(r"^pip==(\S+)$", FREEZE.read_text(), re.M)
    if pip_pin:  # Colab's pip: the one that runs the set-up cell's %pip install
        _run([py, "-m", "pip", "install", "-q", *pip_args, f"pip=={pip_pin.group(1)}"], log)
    constraints = venv / "colab-constraints.txt"
    constraints.write_text("\n".join(colab_constraints()) + "\n")
    if with_torch and _run([py, "-m", "pip", "install", "-q", *pip_args, torch], log).returncode:
        raise SystemExit(f"could not install {torch}; see {log.name}")
    if _run([py, "-m", "pip", "install", "-q", *pip_args, "-c", constraints, *packages], log).returncode:
        raise SystemExit(f"could not install Colab's versions of {packages}; see {log.name}")
    return py


# the driver runs inside the Colab-like environment: it executes one notebook with nbclient
_DRIVER = r'''
import json, sys, time, nbformat
from nbclient import NotebookClient
src, dst, summary, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
nb = nbformat.read(src, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import json as _j, sys as _s, importlib.metadata as _m, qmf_lite as _q\n"
    "print('@@ENV@@' + _j.dumps({'python': _s.version.split()[0], 'qmf_lite': _q.__file__,"
    " 'versions': {p: _m.version(p) for p in ('numpy', 'scipy', 'sympy', 'matplotlib', 'torch', 'ipython', 'ipykernel', 'ipywidgets')}}))"))
t0 = time.time()
error = None
try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True).execute()
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"[:2000]
errors, checks, env = [], [], None
for i, cell in enumerate(nb.cells):
    meta = cell.get("metadata", {}).get("qmf_assignment", {})
    text = ""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            errors.append({"cell": i, "error": f"{out.get('ename')}: {out.get('evalue')}"[:500],
                           "source": cell.source[:200]})
        text += out.get("text", "") if out.get("output_type") == "stream" else ""
    if "@@ENV@@" in text:
        env = json.loads(text.split("@@ENV@@", 1)[1].splitlines()[0])
    if meta.get("role") == "check":
        checks.append({"label": meta.get("label"), "output": text})
nb.cells.pop()
nbformat.write(nb, dst)
json.dump({"seconds": round(time.time() - t0, 1), "error": error, "errors": errors, "checks": checks,
           "env": env}, open(summary, "w"), indent=1)
'''

_PATTERN = re.compile(r'"qmf_lite @ git\+[^"]*"')


def localize(nb_json, url):
    """The notebook with its Colab set-up cell installing qmf_lite from ``url`` (a git+file URL)."""
    nb = json.loads(nb_json)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = "".join(first["source"])
    if not _PATTERN.search(src):
        raise ValueError("the first code cell does not install qmf_lite from a git URL")
    first["source"] = _PATTERN.sub(f'"qmf_lite @ git+{url}"', src)
    return json.dumps(nb)


def run_notebook(py, nb_json, name, url, out_dir, timeout, reuse_cache, log):
    """Run one notebook as a fresh Colab runtime would; returns the driver's summary."""
    subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "qmf_lite"], capture_output=True)
    with tempfile.TemporaryDirectory(prefix="colab-content-") as content:
        src = pathlib.Path(content) / f"{name}.ipynb"
        src.write_text(localize(nb_json, url))
        from assignments._kernel import jupyter_path_env, write_kernelspec

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND")}
        env = jupyter_path_env(write_kernelspec(pathlib.Path(content) / "jupyter", py), env)
        env["PATH"] = f"{py.parent}{os.pathsep}{env.get('PATH', '')}"
        if not reuse_cache:
            env["QMF_LITE_CACHE"] = str(pathlib.Path(content) / "cache")
        summary = out_dir / f"{name}.json"
        summary.unlink(missing_ok=True)  # no stale result from an earlier run
        driver = out_dir / "_driver.py"
        driver.write_text(_DRIVER)
        try:
            _run([py, driver, src, out_dir / f"{name}.ipynb", summary, timeout], log, cwd=content, env=env,
                 timeout=timeout * 4 + 600)
        except subprocess.TimeoutExpired:
            summary.unlink(missing_ok=True)
        result = (json.loads(summary.read_text()) if summary.exists()
                  else {"error": f"the notebook runner failed (see {log.name})", "errors": [], "checks": []})
    installed = (result.get("env") or {}).get("qmf_lite") or ""
    result["installed_by_setup_cell"] = str(py.parent.parent) in installed
    return result


def find_python(version):
    """An interpreter of ``version`` ("3.13") that runs: on PATH, else one pyenv installed."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(pathlib.Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"), reverse=True)
    for c in candidates:
        if c and subprocess.run([str(c), "--version"], capture_output=True).returncode == 0:
            return str(c)
    return None


def answered(student, solutions):
    """The student notebook with the solutions in the answer cells of the graded exercises
    (those with a check cell); the others stay empty, as a student may leave them."""
    stu, sol = json.loads(pathlib.Path(student).read_text()), json.loads(pathlib.Path(solutions).read_text())

    def meta(c):
        return c.get("metadata", {}).get("qmf_assignment", {})

    graded = {meta(c).get("label") for c in stu["cells"] if meta(c).get("role") == "check"}
    code = {meta(c)["label"]: c["source"] for c in sol["cells"] if meta(c).get("role") == "answer"}
    for c in stu["cells"]:
        if meta(c).get("role") == "answer" and meta(c).get("label") in graded:
            c["source"] = code[meta(c)["label"]]
    return json.dumps(stu)


def otter_probe(args, log):
    """What installing otter-grader does to a Colab-like environment (no torch needed)."""
    python = args.probe_python or find_python("3.13") or args.python
    venv = WORK / "otter-probe-venv"
    py = make_env(venv, python, None, args.pip_arg, PROBE, log, with_torch=False)
    before = _freeze(py)
    proc = subprocess.run([str(py), "-m", "pip", "install", *args.pip_arg, "otter-grader"],
                          capture_output=True, text=True)
    log.write(proc.stdout + proc.stderr)
    after = _freeze(py)
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    imp = subprocess.run([str(py), "-c", "import otter, IPython, ipywidgets; print(otter.__version__, IPython.__version__, ipywidgets.__version__)"],
                         capture_output=True, text=True)
    colab = colab_versions()
    changed = sorted((n, before[n], after.get(n)) for n in before if before[n] != after.get(n))
    added = sorted(n for n in after if n not in before)
    # packages Colab has but this probe had not installed: there pip would keep Colab's version if it fits
    differs = sorted((n, colab[n], after[n]) for n in added if n in colab and colab[n] != after[n])
    conflicts = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "requires" in ln and "but you have" in ln]
    lines = [f"# What `pip install otter-grader` does in a Colab-like environment",
             "", f"Python {subprocess.run([str(py), '-c', 'import sys; print(sys.version.split()[0])'], capture_output=True, text=True).stdout.strip()}; "
             f"packages pinned to Colab's list: {', '.join(PROBE)}.", "",
             f"pip exit status: {proc.returncode}", "", "## Colab packages whose version changed", ""]
    lines += [f"- {n}: {b} -> {a}" for n, b, a in changed] or ["- none"]
    lines += ["", "## Packages added", "", ", ".join(added) or "none", "",
              "Of these, Colab has (at another version; there pip keeps Colab's when it satisfies otter): "
              + (", ".join(f"{n} {c} (here {a})" for n, c, a in differs) or "none"), "",
              "## pip's resolver warnings", ""] + ([f"- {c}" for c in conflicts] or ["- none"])
    lines += ["", "## pip check after the install", "", "```", (check.stdout + check.stderr).strip() or "ok", "```",
              "", "## import otter", "", "```", (imp.stdout + imp.stderr).strip()[-2000:], "```", ""]
    report = WORK / "otter-probe.md"
    report.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"report: {report}")
    return 0


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="python3.11", help="interpreter of the environment (default python3.11)")
    parser.add_argument("--torch", default="torch==2.13.0", help="pip requirement for torch (default torch==2.13.0)")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra pip argument (repeatable), e.g. --pip-arg=--index-url=...")
    parser.add_argument("--chapters", nargs="*", help="chapters to run (default: all in _toc.yml)")
    parser.add_argument("--students", nargs="*", help="student notebooks to run (default: every chapter with graded exercises)")
    parser.add_argument("--assignments", type=pathlib.Path, help="an existing build of the assignments (default: build them)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run (default 900)")
    parser.add_argument("--reuse-cache", action="store_true", help="use the training cache instead of an empty one")
    parser.add_argument("--keep-env", action="store_true", help="reuse _build/colab-parity/venv if it exists")
    parser.add_argument("--otter-probe", action="store_true", help="only report what installing otter-grader does")
    parser.add_argument("--probe-python", help="interpreter for --otter-probe (default python3.13 if present)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    log = open(WORK / "log.txt", "w")
    if args.otter_probe:
        return otter_probe(args, log)

    from assignments.source import chapters_in_toc, read_chapter

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "qmf_lite", "pyproject.toml", "book", "assignments"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    url = f"file://localhost{ROOT}@{sha}"  # file:///... is refused by older pips as "a path"
    t0 = time.time()
    venv = WORK / "venv"
    py = venv / "bin" / "python"
    if not (args.keep_env and py.exists()):
        print(f"building the Colab-like environment in {venv} ...", flush=True)
        make_env(venv, args.python, args.torch, args.pip_arg, RUNTIME, log)
    before = _freeze(py)
    colab = colab_versions()
    chapters = [read_chapter(p) for p in chapters_in_toc(ROOT)]
    rows, env_info = _run_chapters(py, chapters, url, args, log)
    rows += _run_students(py, chapters, url, args, log)
    after = _freeze(py)
    drift = sorted((n, before.get(n), after.get(n)) for n in colab if n in before and before.get(n) != after.get(n))
    failed = bool(drift) or not all(ok for _, _, ok, _ in rows)
    lines = _report(sha, dirty, t0, args, url, env_info, rows, drift, failed)
    (WORK / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"report: {WORK / 'report.md'}; executed notebooks in {WORK}; log: {WORK / 'log.txt'}")
    return 1 if failed else 0


def _run_chapters(py, chapters, url, args, log):
    """Run the chapters (``--chapters``, default all) in the environment ``py``: the report's rows
    ``("chapter", name, ok, result)`` and what the kernel said about itself."""
    names = args.chapters if args.chapters is not None else [c.name for c in chapters]
    out_dir = WORK / "chapters"
    out_dir.mkdir(exist_ok=True)
    rows, env_info = [], None
    for ch in chapters:
        if ch.name not in names or ch.setup_cell is None:
            continue
        print(f"chapter {ch.name} ...", end=" ", flush=True)
        r = run_notebook(py, ch.path.read_text(), ch.name, url, out_dir, args.timeout, args.reuse_cache, log)
        env_info = r.get("env") or env_info
        ok = not r["errors"] and not r.get("error") and r["installed_by_setup_cell"]
        rows.append(("chapter", ch.name, ok, r))
        print(f"{'ok' if ok else 'FAILED'} ({r.get('seconds', '?')} s)", flush=True)
    return rows, env_info


def _run_students(py, chapters, url, args, log):
    """Build the assignments (unless ``--assignments`` names a build) and run each student notebook with the
    solutions' answers filled in; the report's rows ``("student", name, ok, result)``."""
    students = args.students
    if students is None:
        students = [c.name for c in chapters if c.graded]
    rows = []
    if not students:
        return rows
    build_dir = args.assignments or WORK / "assignments"
    if args.assignments is None:
        print("building the assignments ...", flush=True)
        from assignments.build import build

        reports = build(root=ROOT, out=build_dir, names=students, log=lambda *a: None)
        for r in reports:
            if not r["ok"]:
                rows.append(("student", r["chapter"], False, {"error": "build failed: " + "; ".join(r["problems"])[:1000], "errors": []}))
    s_dir = WORK / "students"
    s_dir.mkdir(exist_ok=True)
    for name in students:
        sol = build_dir / "autograder" / name / "solutions.ipynb"
        if not (build_dir / "student" / f"{name}.ipynb").exists() or not sol.exists():
            continue
        print(f"student notebook {name} (answers filled in) ...", end=" ", flush=True)
        filled = answered(build_dir / "student" / f"{name}.ipynb", sol)
        r = run_notebook(py, filled, name, url, s_dir, args.timeout, args.reuse_cache, log)
        bad_checks = [c["label"] for c in r.get("checks", []) if "\u2717" in c["output"] or "\u2026" in c["output"]
                      or "\u2713" not in c["output"]]
        r["failed_checks"] = bad_checks
        ok = not r["errors"] and not r.get("error") and not bad_checks and r["installed_by_setup_cell"]
        rows.append(("student", name, ok, r))
        print(f"{'ok' if ok else 'FAILED'} ({r.get('seconds', '?')} s)", flush=True)
    return rows


def _report(sha, dirty, t0, args, url, env_info, rows, drift, failed):
    """The lines of ``report.md``: the commit and environment, one table row per notebook, the drift."""
    lines = ["# Colab parity", "",
             f"Commit {sha[:12]}{' (uncommitted changes are NOT tested: ' + dirty.replace(chr(10), ', ') + ')' if dirty else ''}; "
             f"{time.strftime('%Y-%m-%d %H:%M')}; {round(time.time() - t0)} s in all.", "",
             "Environment: packages pinned to Colab's list (assignments/colab/pip-freeze.txt); "
             f"{args.torch} installed separately; qmf_lite installed by each notebook's set-up cell from `git+{url}`.",
             ""]
    if env_info:
        lines += [f"In the kernel: Python {env_info['python']}; " + ", ".join(f"{k} {v}" for k, v in env_info["versions"].items()), ""]
    lines += ["Differences from Colab: Python 3.13 and torch 2.11.0+cpu there; no GPU, no google.colab module, no browser.", "",
              "| notebook | result | time (s) | problems |", "|---|---|---|---|"]
    for kind, name, ok, r in rows:
        problems = [f"cell {e['cell']}: {e['error']}" for e in r.get("errors", [])]
        if r.get("error"):
            problems.insert(0, r["error"])
        if r.get("failed_checks"):
            problems.append("checks not passed: " + ", ".join(r["failed_checks"]))
        if not r.get("installed_by_setup_cell", True) and not problems:  # it ran through, yet no install
            problems.append("qmf_lite was not installed by the set-up cell")
        label = f"{'chapter' if kind == 'chapter' else 'student notebook'} `{name}`"
        lines.append(f"| {label} | {'passed' if ok else 'FAILED'} | {r.get('seconds', '')} | "
                     f"{'<br>'.join(p.replace('|', '/').replace(chr(10), ' ')[:300] for p in problems)} |")
    lines += ["", "Colab-pinned packages changed by installing qmf_lite: "
              + (", ".join(f"{n} {b} -> {a}" for n, b, a in drift) or "none") + ".", "",
              f"Result: {'FAILED' if failed else 'passed'}.", ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())
