"""Link the first mention of each qmf_lite name in a chapter's prose to its API reference entry.

Usage (after a build, which writes the inventory)::

    python scripts/link_api.py book/trainability.ipynb [...] [--inventory _build/html/objects.inv]

In markdown cells, an inline literal such as ```qmf.run_grid``` or ```qw.fit``` (``qw`` standing for
a namespace the chapter imports, e.g. ``from qmf_lite import weights as qw``) whose name is in the
inventory becomes ``{py:func}`qmf.run_grid <qmf_lite.run_grid>```: the text the reader sees is
unchanged, and the nitpicky build checks the target. Only the first mention in each chapter is
linked; literals that are calls with arguments, or names not in the inventory, are left alone.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import posixpath
import re

from sphinx.util.inventory import InventoryFile

ROLE = {"py:function": "func", "py:class": "class", "py:module": "mod", "py:data": "data",
        "py:method": "meth", "py:attribute": "attr", "py:property": "attr", "py:exception": "exc",
        "py:classmethod": "meth", "py:staticmethod": "meth"}
LITERAL = re.compile(r"(?<![`}>])`(?P<alias>qmf_lite|qmf|\w+)\.(?P<name>[A-Za-z_][\w.]*)(?P<call>\(\))?`(?!`)")


def aliases(nb):
    """Namespace aliases a chapter imports: ``from qmf_lite import weights as qw`` gives qw -> qmf_lite.weights."""
    out = {"qmf": "qmf_lite", "qmf_lite": "qmf_lite"}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            for m in re.finditer(r"from qmf_lite import (\w+) as (\w+)", src):
                out[m[2]] = f"qmf_lite.{m[1]}"
            for m in re.finditer(r"import qmf_lite\.(\w+) as (\w+)", src):
                out[m[2]] = f"qmf_lite.{m[1]}"
    return out


def link(path, names):
    nb = json.loads(path.read_text())
    alias, seen, count = aliases(nb), set(), 0

    def sub(m):
        nonlocal count
        prefix = alias.get(m["alias"])
        target = f"{prefix}.{m['name']}" if prefix else None
        if target is None or target not in names or target in seen:
            return m[0]
        seen.add(target)
        count += 1
        text = f"{m['alias']}.{m['name']}{m['call'] or ''}"
        return f"{{py:{ROLE[names[target]]}}}`{text if text == target else f'{text} <{target}>'}`"

    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            src = "".join(cell["source"])
            # skip fenced code blocks inside markdown (exercise starters and solutions)
            parts = re.split(r"(^```[^\n]*\n.*?^```\s*$)", src, flags=re.S | re.M)
            new = "".join(p if p.startswith("```") else LITERAL.sub(sub, p) for p in parts)
            cell["source"] = new.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=pathlib.Path)
    ap.add_argument("--inventory", default="_build/html/objects.inv")
    args = ap.parse_args(argv)
    with open(args.inventory, "rb") as f:
        inv = InventoryFile.load(f, "", posixpath.join)
    names = {k: t for t, d in inv.items() if t in ROLE for k in d if k.startswith("qmf_lite")}
    for nb in args.notebooks:
        print(f"{nb}: {link(nb, names)} links")


if __name__ == "__main__":
    main()
