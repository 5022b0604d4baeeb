"""Command line: ``python -m assignments build|grade`` (see ``python -m assignments -h``)."""
import argparse
import pathlib
import sys

from .build import DEFAULT_OUT, ROOT, BuildError


def _count(most=None):
    """An argparse type: an integer >= 1 (and <= ``most``); argparse names the flag in its error."""
    allowed = "an integer >= 1" if most is None else f"an integer in [1, {most}]"

    def read(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1 or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value
    return read


def _folder(text):
    """An argparse type: a folder to write into (it may not exist yet), not a file."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"must name a folder, got the file {text!r}")
    return path


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m assignments",
        description="Course assignments from the book's exercises: build the student notebooks and the "
                    "otter-grader autograders, and grade submitted notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="student notebooks and autograders for the chapters with exercises",
                       description="Runs each chapter once (its code and its solutions), writes "
                                   "OUT/student/<chapter>.ipynb (hand these out) and OUT/autograder/<chapter>.zip "
                                   "(keep these private: they hold the answers), and self-checks them: the solutions "
                                   "score full marks, empty answers zero, a wrong answer loses only its question.")
    b.add_argument("chapters", nargs="*", help="chapter names (file stems, e.g. fixed_points); default: all")
    b.add_argument("--out", type=_folder, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    b.add_argument("--root", type=pathlib.Path, default=ROOT, help="the book's root (with _toc.yml)")
    b.add_argument("--jobs", type=_count(64), default=1,
                   help="chapters built at once, each in its own kernel (default 1)")

    g = sub.add_parser("grade", help="grade a folder of submitted notebooks",
                       description="Grades every file in SUBMISSIONS (one per student, named after the student) "
                                   "with otter run, without Docker. Writes OUT/grades.csv, OUT/feedback/<student>.md "
                                   "and OUT/results/<student>.json.")
    g.add_argument("submissions", type=pathlib.Path)
    which = g.add_mutually_exclusive_group(required=True)
    which.add_argument("--chapter", help="the chapter: uses the autograder of the last build")
    which.add_argument("--autograder", type=pathlib.Path, help="an autograder zip made by build")
    g.add_argument("--out", type=_folder, help="results folder (default: _build/assignments/grades/<chapter>)")
    g.add_argument("--cell-timeout", type=_count(), default=600, help="seconds a cell may run (default 600)")
    g.add_argument("--timeout", type=_count(), default=3600, help="seconds a whole notebook may take (default 3600)")
    g.add_argument("--jobs", type=_count(), default=1, help="submissions graded at once (default 1)")
    g.add_argument("--regrade", action="store_true", help="grade again submissions already graded unchanged")

    c = sub.add_parser("classroom", help="build the book without the exercises' solutions (for a course's site)",
                       description="Builds the classroom edition of the book: _config.yml with _config.classroom.yml "
                                   "merged in (sphinx-exercise's hide_solutions, no page sources, no Colab or Binder "
                                   "buttons) into OUT/_build/html, with jupyter-book build --all -W -n --keep-going.")
    c.add_argument("--out", type=_folder, default=ROOT / "_build" / "classroom",
                   help="output folder (default _build/classroom)")
    c.add_argument("--root", type=pathlib.Path, default=ROOT, help="the book's root (with _toc.yml)")

    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "classroom":
            return _classroom(args)
        if args.command == "build":
            return _build(args)
        return _grade(args, parser)
    except (ValueError, BuildError) as exc:     # what was asked cannot be done: one line, exit code 2
        parser.error(str(exc))


def _classroom(args):
    """``python -m assignments classroom``: the book without the solutions."""
    from .classroom import build_classroom

    html, rc = build_classroom(args.root, args.out, extra_args=("-W", "-n", "--keep-going"), check=False)
    index = html / "index.html"
    if rc != 0 or not index.exists():
        print("the classroom edition failed to build (see the messages above)", file=sys.stderr)
        return 1
    print(f"\nclassroom edition (no solutions): {index}")
    return 0


def _build(args):
    """``python -m assignments build``: student notebooks and autograders."""
    from .build import build

    reports = build(root=args.root, out=args.out, names=args.chapters or None, jobs=args.jobs)
    failed = [r["chapter"] for r in reports if not r["ok"]]
    print(f"\nstudent notebooks: {args.out / 'student'}\nautograders (private): {args.out / 'autograder'}\n"
          f"summary: {args.out / 'summary.md'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _grade(args, parser):
    """``python -m assignments grade``: a folder of submissions."""
    from .grade import grade

    autograder = args.autograder or DEFAULT_OUT / "autograder" / f"{args.chapter}.zip"
    if not autograder.exists():
        parser.error(f"no autograder at {autograder}: run `python -m assignments build {args.chapter or ''}` first, "
                     "or, if you built with --out OUT, pass --autograder OUT/autograder/<chapter>.zip")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    from .grade import read_manifest

    chapter = read_manifest(autograder)["chapter"]
    out = args.out or DEFAULT_OUT / "grades" / chapter
    results = grade(args.submissions, autograder, out, cell_timeout=args.cell_timeout, timeout=args.timeout,
                    jobs=args.jobs, regrade=args.regrade)
    print(f"\n{len(results)} submissions graded: {out / 'grades.csv'}, feedback in {out / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
