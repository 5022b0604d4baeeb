"""The package's shape: one public surface, a torch-free core, the version from the metadata."""
from __future__ import annotations

import importlib
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import qmf_lite as qmf

PACKAGE = pathlib.Path(qmf.__file__).parent
CORE = ["activations", "gaussian", "maps", "tradeoff", "reference"]
TORCH_LAYER = sorted(qmf._LAZY)
#: modules that are neither exported name by name nor namespaces: the command line and the entry point
NOT_EXPORTED = {"cli", "__main__", "__init__"}


def test_every_public_name_resolves_and_is_listed_once():
    assert len(qmf.__all__) == len(set(qmf.__all__))
    for name in qmf.__all__:
        assert getattr(qmf, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        qmf.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", CORE + TORCH_LAYER)
def test_module_public_names_are_exported_at_the_top(module):
    mod = importlib.import_module(f"qmf_lite.{module}")
    missing = sorted(set(mod.__all__) - set(qmf.__all__))
    assert not missing, f"qmf_lite.{module} lists {missing} in __all__ but qmf_lite does not export them"
    for name in mod.__all__:
        assert getattr(qmf, name) is getattr(mod, name)


def test_every_module_has_a_place_in_the_layout():
    """Each module is core (imported eagerly), torch layer (lazy names), a namespace, or private."""
    doc = qmf.__doc__
    for path in sorted(PACKAGE.glob("*.py")):
        name = path.stem
        if name.startswith("_") or name in NOT_EXPORTED:
            continue
        placed = name in CORE or name in TORCH_LAYER or name in qmf._NAMESPACES
        assert placed, f"qmf_lite/{name}.py is not in the layout of qmf_lite/__init__.py"
        assert f"``{name}``" in doc, f"qmf_lite/{name}.py is missing from the table in the package docstring"


def test_core_imports_without_torch():
    """With torch made unimportable, the core works and a torch-layer name fails only when used."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        import qmf_lite as qmf
        chi, d = qmf.chi_max(16)
        assert round(1 - chi, 6) == 0.011543
        assert qmf.depth_scale("sign", 1.0, 0.0) > 2
        assert qmf.book.profile(fast={"n": 1}, paper={"n": 2}).n in (1, 2)
        try:
            qmf.QuantAct
        except ImportError:
            print("torch layer is lazy")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "torch layer is lazy" in proc.stdout


def test_importing_the_package_does_not_import_torch():
    code = "import sys, qmf_lite; qmf_lite.chi_max(4); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_version_comes_from_the_package_metadata():
    assert qmf.__version__ == importlib.metadata.version("qmf_lite")
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(qmf.__version__)}"', pyproject, re.M)


def test_every_document_the_package_names_is_in_the_repository():
    """The package is self-contained: a Markdown file its source names exists in the repository."""
    repo = PACKAGE.parent
    present = {p.name for p in repo.rglob("*.md")
               if not any(part.startswith((".", "_build")) for part in p.relative_to(repo).parts)}
    for path in PACKAGE.glob("*.py"):
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text()):
            assert pathlib.PurePath(name).name in present, f"{path.name} names {name}, which is not in the repository"


BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_imports(path, monkeypatch):
    """A benchmark is run by hand, never by the tests: at least its imports (of private names too) must
    still resolve after a change of the package, or the next person to measure finds it broken."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)          # module level only: each benchmark runs under __main__
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


def test_a_source_tree_reports_the_version_of_its_pyproject(tmp_path):
    """Run from a clone that is not installed (as on a borrowed GPU), qmf_lite reports pyproject.toml's
    version, as an install does, so that the training cache's keys (which hold it) agree between them;
    a tree without a readable pyproject.toml reports 0+unknown."""
    import shutil
    import subprocess
    import sys

    import tomllib

    tree = tmp_path / "clone"
    shutil.copytree(PACKAGE, tree / "qmf_lite", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import importlib.metadata as m\n"
            "def missing(name): raise m.PackageNotFoundError(name)\n"
            "m.version = missing\n"
            "import qmf_lite; print(qmf_lite.__version__)")

    def version():
        out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert version() == "0+unknown"
    shutil.copy(PACKAGE.parent / "pyproject.toml", tree / "pyproject.toml")
    expected = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["version"]
    assert version() == expected == qmf.__version__
