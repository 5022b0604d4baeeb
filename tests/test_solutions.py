"""Every exercise solution of every chapter is well formed: its code compiles and its checks parse.

Each ``{solution}`` directive's ```` ```python ```` blocks are extracted; the ``# check:`` lines at
the top of a block declare its graded answer variables and how a student's value is compared
(``rtol=<r>``, ``atol=<a>``, ``exact`` or ``sympy``). Executing the solutions, in each chapter's
namespace after its code, is done once per chapter by the assignment build in the slow test
``tests/test_assignments.py::test_chapter_assignment_builds_and_passes_its_self_check``, which
asserts that every solution ran and that each graded variable can be graded.
"""
from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT, chapter_notebooks  # noqa: F401  (ROOT: for readers extending these tests)

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
def test_every_solution_parses_and_declares_its_checks(nb_path):
    """Every python block of every solution compiles, and its ``# check:`` lines are well formed.

    Running them is the assignment build's job: the slow test
    ``tests/test_assignments.py::test_chapter_assignment_builds_and_passes_its_self_check`` runs
    each chapter's code and then every solution block, graded or not, with deprecated calls as
    errors, and asserts that all ran (one execution of each chapter serves both purposes).
    """
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for label, blocks in solutions("".join(cell["source"])):
            for b, block in enumerate(blocks):
                where = f"{nb_path.stem}: solution of {label} (block {b + 1})"
                try:
                    declared = checks(block)
                    compile(_python(block), f"<{where}>", "exec")
                except (ValueError, SyntaxError) as exc:
                    pytest.fail(f"{where}: {exc}")
                for name, _ in declared:
                    body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#"))
                    assert re.search(rf"\b{name}\b", body), f"{where}: the check names {name!r}, which the block never uses"

