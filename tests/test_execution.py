"""The book's execution: chapters run several at once (``_ext/parallel_execute.py``), and what a
build reads is always executed by that build, never taken from an older build's cache."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import nbformat
import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "_ext"))
import parallel_execute  # noqa: E402


def test_jobs_default_to_one_per_core_at_most_four():
    assert [parallel_execute.jobs_for(None, cpu_count=n) for n in (1, 2, 3, 16)] == [1, 2, 3, 4]
    assert parallel_execute.jobs_for(3, cpu_count=2) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="qmf_execution_jobs must be None or an integer >= 1"):
            parallel_execute.jobs_for(bad)


def test_the_book_uses_the_cache_only_with_the_extension_that_refreshes_it():
    """Cache mode alone would show an older build's outputs after a change to qmf_lite."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["cache"].startswith("_build/")
    assert config["sphinx"]["local_extensions"]["parallel_execute"] == "_ext"
    assert config["execute"]["allow_errors"] is False


def _toy_book(root, jobs):
    (root / "_ext").mkdir(parents=True)
    (root / "_ext" / "parallel_execute.py").write_text((ROOT / "_ext" / "parallel_execute.py").read_text())
    for i in range(2):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(f"# Page {i}\n\nThe value is {{glue:text}}`v{i}`."),
                    nbformat.v4.new_code_cell(
                        "import os, pathlib\nfrom myst_nb import glue\n"
                        f"glue('v{i}', pathlib.Path('value.txt').read_text().strip() + '-{i}', display=False)\n"
                        "print('threads', os.environ.get('OMP_NUM_THREADS'))")]
        nbformat.write(nb, root / f"p{i}.ipynb")
    (root / "_toc.yml").write_text("format: jb-book\nroot: p0\nchapters:\n  - file: p1\n")
    (root / "_config.yml").write_text(
        "title: toy\nexecute:\n  execute_notebooks: cache\n  cache: _build/.jupyter_cache\n  timeout: 120\n"
        "  allow_errors: false\n  raise_on_error: true\nsphinx:\n  local_extensions:\n    parallel_execute: _ext\n"
        f"  config:\n    qmf_execution_jobs: {jobs}\n")


def _build(root):
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(exe), "build", str(root), "--all", "-W", "-n", "--keep-going"], cwd=root,
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [2, 1])
def test_a_rebuild_executes_again_and_never_shows_older_outputs(tmp_path, jobs):
    """Same code, new data: the second build shows the new value (both with the workers and without);
    a notebook that now fails fails the build instead of showing the outputs of the last good run."""
    _toy_book(tmp_path, jobs)
    (tmp_path / "value.txt").write_text("first")
    rc, log = _build(tmp_path)
    assert rc == 0, log[-3000:]
    assert ("executing 2 notebooks, 2 at once" in log) == (jobs == 2)
    assert "first-1" in (tmp_path / "_build" / "html" / "p1.html").read_text()
    (tmp_path / "value.txt").write_text("second")
    rc, log = _build(tmp_path)
    assert rc == 0, log[-3000:]
    page = (tmp_path / "_build" / "html" / "p1.html").read_text()
    assert "second-1" in page and "first-1" not in page
    if jobs == 2:      # each of the two kernels got one of the two cores (or of however many there are)
        assert f"threads {max(1, (os.cpu_count() or 1) // 2)}" in page
    (tmp_path / "value.txt").unlink()                # the code now fails: no stale page may be built
    rc, log = _build(tmp_path)
    assert rc != 0 and "FileNotFoundError" in log
