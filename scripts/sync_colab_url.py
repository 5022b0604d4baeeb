"""Rewrite every chapter's Colab set-up cell to install the qmf_lite this book is built with.

The cell installs ``qmf-lite==<version>`` from PyPI once that version is published there
(``release.on_pypi: true`` in ``_config.yml``), and before that the same version from the git tag
``v<version>`` of ``repository.url`` (``qmf_lite @ git+<url>@v<version>``). The version is the one
in ``pyproject.toml``. Run this after changing any of the three
(``python scripts/sync_colab_url.py``); ``tests/test_site.py`` checks that the cells agree.
It also writes Binder's environment, ``binder/requirements.txt``, with the same pin.

If the install fails (no internet, a version not published), the cell raises with a message that
says what to do, instead of letting ``%pip`` fail quietly and the next import fail later.
"""
from __future__ import annotations

import json
import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = "# Colab set-up:"


def package_version(root=ROOT):
    return tomllib.loads((pathlib.Path(root) / "pyproject.toml").read_text())["project"]["version"]


def install_spec(root=ROOT):
    """What the set-up cell installs: the PyPI release, or the git tag of the same version."""
    config = yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())
    version = package_version(root)
    if (config.get("release") or {}).get("on_pypi"):
        return f"qmf-lite=={version}"
    url = config["repository"]["url"].rstrip("/")
    return f"qmf_lite @ git+{url}@v{version}"


def setup_cell_source(root=ROOT):
    spec = install_spec(root)
    url = yaml.safe_load((pathlib.Path(root) / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    return (
        "# Colab set-up: install qmf_lite, the version this book was built with, when it is not importable.\n"
        "# Locally and in CI qmf_lite is installed already, and this cell does nothing.\n"
        "try:\n"
        "    import qmf_lite\n"
        "except ImportError:\n"
        f'    QMF_LITE = "{spec}"\n'
        '    %pip install -q "{QMF_LITE}"\n'
        "    import importlib\n"
        "    importlib.invalidate_caches()\n"
        "    try:\n"
        "        import qmf_lite\n"
        "    except ImportError:\n"
        "        raise RuntimeError(\n"
        '            f"Installing {QMF_LITE} failed; pip says why, above. Check that the runtime is online "\n'
        "            \"and run this cell again. If pip found no such version, install the repository's current \"\n"
        f"            \"code instead: %pip install 'qmf_lite @ git+{url}'\"\n"
        "        ) from None"
    )


def binder_requirements(root=ROOT):
    """Binder's environment: what the chapters import, a CPU torch, nothing to build or test."""
    return (
        "# Binder (mybinder.org) environment, written by scripts/sync_colab_url.py: the chapters' needs only.\n"
        "# A CPU build of torch (no CUDA download); qmf_lite as the chapters' set-up cell installs it.\n"
        "--extra-index-url https://download.pytorch.org/whl/cpu\n"
        "torch>=2.1\n"
        f"{install_spec(root)}\n"
        "scikit-learn>=1.2\n"
    )


def main():
    binder = ROOT / "binder" / "requirements.txt"
    if not binder.exists() or binder.read_text() != binder_requirements():
        binder.parent.mkdir(exist_ok=True)
        binder.write_text(binder_requirements())
        print(f"updated {binder.relative_to(ROOT)}")
    new = setup_cell_source()
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        first = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
        if first is None or not "".join(first["source"]).startswith(MARKER):
            continue
        if "".join(first["source"]) != new:
            first["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
