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



# --------------------------------------------------------------------------------------------
# tolerances that a plausible wrong answer does not pass

def _check_spec(chapter, label, var):
    """The ``# check:`` spec of ``var`` in the solution ``label`` of ``book/<chapter>.ipynb``, as the
    dict that ``assignments.checks.compare`` takes."""
    from assignments.source import parse_check

    nb = json.loads((ROOT / "book" / f"{chapter}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for found, blocks in solutions("".join(cell["source"])):
            if found != label:
                continue
            for block in blocks:
                for line in block.splitlines():
                    c = parse_check(line.strip())
                    if c is not None and c.var == var:
                        return {"kind": c.kind, "rtol": c.rtol, "atol": c.atol}
    raise LookupError(f"{chapter}: no check of {var} in {label}")


def _passes(value, correct, spec):
    from assignments import checks as ck

    return ck.compare(value, ck.encode(correct, spec), spec) is None


def test_ptq_gain_check_accepts_the_answer_and_rejects_plausible_wrong_ones():
    """ex-ptq-gain: the measured MSQ/SPFQ gain passes its own check (recomputed), while the two
    plausible mistakes fail it: the prediction without SPFQ's factor 2 (N/m = 16) and the gain of
    GPFQ instead of SPFQ on the same data."""
    import numpy as np

    from qmf_lite import ptq

    spec = _check_spec("post_training", "ex-ptq-gain", "gain_sim")
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 512)) / np.sqrt(512)
    X = rng.standard_normal((32, 512))
    grid = ptq.Alphabet(1 / 32)
    e_msq = ptq.quantize_layer(W, X, alphabet=grid, method="msq").relative_error
    correct = e_msq / ptq.quantize_layer(W, X, alphabet=grid, method="spfq", seed=0).relative_error
    gpfq = e_msq / ptq.quantize_layer(W, X, alphabet=grid, method="gpfq").relative_error
    assert _passes(correct, correct, spec)
    assert not _passes(512 / 32, correct, spec)             # no factor 2 for unbiased rounding
    assert not _passes(gpfq, correct, spec)
    assert abs(correct / 8.0 - 1) < 3 * spec["rtol"]          # and the model's N/(2m) = 8 is near it


def test_regimes_sup_gap_bound_check_rejects_a_missing_factor():
    """ex-regimes-sup: Lip(e) h / 2 with Lip(e) = 2; forgetting either factor fails the check."""
    spec = _check_spec("quantization_regimes", "ex-regimes-sup", "gap_bound")
    h = 1 / 1000
    assert _passes(2 * h / 2, h, spec)
    assert not _passes(h / 2, h, spec) and not _passes(2 * h, h, spec)


@pytest.mark.slow
def test_limits_lattice_check_rejects_the_four_level_answer():
    """ex-limits-lattice: the N = 5 binary-weight q^8 passes its check; a q^8 as far off the map as the chapter's
    N = 4 networks (the lattice effect, about -3%) is outside the tolerance of two standard errors, and so are
    the map's own q^8 and a q^8 0 or 1 (the check grades q^8, which the question does not give away)."""
    import qmf_lite as qmf

    spec = _check_spec("limits", "ex-limits-lattice", "q8_binary5")
    rel, q8, q_map = {}, {}, {}
    for levels in (4, 5):
        phi = qmf.QuantizedActivation(levels)
        q_th, _ = qmf.iterate_maps(phi, 1.1, 0.0, depth=8, q0=0.5, c0=0.6)
        sim = qmf.simulate_correlations(phi, 1.1, 0.0, depth=8, width=1024, c0=0.6, q0=0.5, n_nets=32, seed=11,
                                        weights="binary", device="cpu")
        rel[levels], q8[levels], q_map[levels] = float(sim.q[-1] / q_th[-1] - 1), float(sim.q[-1]), float(q_th[-1])
    assert rel[4] < -0.025 and abs(rel[5]) < 0.015
    assert _passes(q8[5], q8[5], spec)
    assert not _passes(q_map[5] * (1 + rel[4]), q8[5], spec)
    assert not any(_passes(v, q8[5], spec) for v in (0.0, 1.0))
