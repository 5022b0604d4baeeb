"""Rewrite every chapter's Colab set-up cell to install from ``repository.url`` of ``_config.yml``.

The URL is configured once, in ``_config.yml``; run this after changing it
(``python scripts/sync_colab_url.py``). ``tests/test_book.py`` checks that the two agree.
"""
from __future__ import annotations

import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    pattern = re.compile(r'"qmf_lite @ git\+[^"]*"')
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        changed = False
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            new = pattern.sub(f'"qmf_lite @ git+{url}"', src)
            if new != src:
                cell["source"] = new.splitlines(keepends=True)
                changed = True
            break  # only the first code cell is the set-up cell
        if changed:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
