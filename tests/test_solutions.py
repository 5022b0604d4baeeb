"""Every exercise solution of every chapter runs, in its chapter's namespace, and defines its graded answers.

For each chapter of ``_toc.yml``: execute the notebook's code cells in order in a fresh namespace
(the Colab set-up cell's ``%pip`` line is skipped; figures are closed instead of shown), then
extract every ```` ```python ```` block inside each ``{solution}`` directive and execute it in that
namespace, in the order of the chapter. A failure names the chapter and the exercise label.

The ``# check:`` lines at the top of a solution block declare its graded answer variables and how a
student's value is compared (``rtol=<r>``, ``atol=<a>``, ``exact`` or ``sympy``): each must parse
and name a variable that exists after the solution ran.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings

import pytest
from conftest import ROOT, chapter_notebooks

os.environ.setdefault("MPLBACKEND", "Agg")

pytestmark = pytest.mark.slow

#: a solution should run in seconds; this bound only catches one that trains for minutes
SOLUTION_SECONDS = 60.0

FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<kind>exercise|solution)\}\s*(?P<arg>\S*)\s*$")
CHECK = re.compile(r"^#\s*check:\s*(?P<name>[A-Za-z_]\w*)\s+(?P<how>rtol=\S+|atol=\S+|exact|sympy)\s*$")
MAGIC = re.compile(r"^(?P<indent>\s*)[%!]")


def _python(source):
    """A cell's source with IPython magics and shell escapes (``%pip ...``, ``!ls``) replaced by ``pass``."""
    return "\n".join(MAGIC.sub(lambda m: m["indent"] + "pass  # ", line, count=1) if MAGIC.match(line) else line
                     for line in source.splitlines())


def solutions(markdown):
    """``[(label, [python source, ...]), ...]`` for the ``{solution}`` directives of a markdown text."""
    out, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or m["kind"] != "solution":
            i += 1
            continue
        end = lines.index(m["fence"], i + 1) if m["fence"] in lines[i + 1:] else len(lines)
        body, blocks, j = lines[i + 1:end], [], 0
        while j < len(body):
            if body[j].strip() in ("```python", "```{code-cell} python", "```{code-cell} ipython3"):
                k = next(k for k in range(j + 1, len(body)) if body[k].strip() == "```")
                blocks.append("\n".join(body[j + 1:k]))
                j = k
            j += 1
        out.append((m["arg"], blocks))
        i = end + 1
    return out


def checks(block):
    """The ``# check:`` lines at the top of a solution block, as ``[(name, how), ...]``; malformed ones raise."""
    found = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("# check"):
            break
        m = CHECK.match(line.strip())
        if m is None:
            raise ValueError(f"malformed check line {line!r}: use '# check: <name> rtol=<r>|atol=<a>|exact|sympy'")
        how = m["how"]
        if "=" in how:
            float(how.split("=", 1)[1])
        found.append((m["name"], how))
    return found


def test_solution_parser_finds_blocks_labels_and_checks():
    text = "\n".join([
        "````{exercise}", ":label: ex-a", "", "Store it in `x`.", "````", "",
        "````{solution} ex-a", ":class: dropdown", "", "```python", "# check: x rtol=1e-6", "# check: ok exact",
        "x = 1.0", "ok = True", "```", "Because.", "````", "",
        "````{solution} ex-b", ":class: dropdown", "No code here.", "````"])
    found = solutions(text)
    assert [label for label, _ in found] == ["ex-a", "ex-b"]
    assert checks(found[0][1][0]) == [("x", "rtol=1e-6"), ("ok", "exact")] and found[1][1] == []
    with pytest.raises(ValueError, match="malformed"):
        checks("# check: x within 5%\nx = 1")
    assert _python("try:\n    import a\nexcept ImportError:\n    %pip install a\n") == \
        "try:\n    import a\nexcept ImportError:\n    pass  # pip install a"


@pytest.mark.parametrize("nb_path", chapter_notebooks(), ids=lambda p: p.stem)
def test_every_solution_runs_after_its_chapter(nb_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.display import display

    monkeypatch.chdir(ROOT / "book")
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    nb = json.loads(nb_path.read_text())
    chapter = nb_path.stem
    namespace = {"__name__": "__main__", "display": display}
    with warnings.catch_warnings():
        # what the build would print: deprecated calls made by the chapter's own code
        warnings.filterwarnings("error", category=DeprecationWarning, module="__main__")
        warnings.filterwarnings("error", category=FutureWarning, module="__main__")
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            code = compile(_python("".join(cell["source"])), f"<{chapter} cell {i}>", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                pytest.fail(f"{chapter}: code cell {i} failed: {type(exc).__name__}: {exc}")
            finally:
                plt.close("all")
        labels = []
        for cell in nb["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for label, blocks in solutions("".join(cell["source"])):
                labels.append(label)
                for b, block in enumerate(blocks):
                    where = f"{chapter}: solution of {label} (block {b + 1})"
                    try:
                        declared = checks(block)
                    except ValueError as exc:
                        pytest.fail(f"{where}: {exc}")
                    t0 = time.perf_counter()
                    try:
                        exec(compile(block, f"<{chapter} {label}>", "exec"), namespace)
                    except Exception as exc:
                        pytest.fail(f"{where} failed: {type(exc).__name__}: {exc}")
                    finally:
                        plt.close("all")
                    seconds = time.perf_counter() - t0
                    assert seconds < SOLUTION_SECONDS, f"{where} took {seconds:.0f} s: a solution must run in seconds"
                    missing = [name for name, _ in declared if name not in namespace]
                    assert not missing, f"{where}: graded variables {missing} are not defined after the solution ran"
    assert labels or chapter in ("intro", "references"), f"{chapter}: no solutions found"
