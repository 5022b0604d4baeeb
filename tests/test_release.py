"""The release: qmf-lite builds into a wheel and an sdist that twine accepts, the release workflow
publishes them by trusted publishing, and the chapters' set-up cells and Binder pin the same version."""
from __future__ import annotations

import email
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import sync_colab_url  # noqa: E402

sys.path.insert(0, str(ROOT / "_ext"))
import release_check  # noqa: E402

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The wheel and the sdist, built offline (no build isolation) from a copy of what the release
    workflow's checkout holds for them, so that the build leaves nothing in the repository."""
    out, src = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "qmf_lite", src / "qmf_lite", ignore=shutil.ignore_patterns("__pycache__"))
    for args in (["--wheel"], ["--sdist"]):
        proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", *args, "--outdir", str(out), str(src)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_distribution_is_qmf_lite_with_the_import_name_qmf_lite():
    assert PROJECT["name"] == "qmf-lite"
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"] == ["qmf_lite"]


@pytest.mark.slow
def test_wheel_and_sdist_build_and_pass_twine_check(dist):
    wheel, sdist = dist
    assert wheel.name == f"qmf_lite-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"qmf_lite-{VERSION}.tar.gz"
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("PASSED") == 2, proc.stdout + proc.stderr
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(f"qmf_lite-{VERSION}.dist-info/METADATA"))
    assert meta["Name"] == "qmf-lite" and meta["Version"] == VERSION
    requires = {re.split(r"[<>=; \[]", r)[0] for r in meta.get_all("Requires-Dist")}
    assert {"numpy", "scipy", "sympy", "matplotlib", "torch", "tqdm"} <= requires
    # the package and nothing else: no tests, chapters, assignments or scripts in the wheel
    modules = {n for n in names if not n.startswith(f"qmf_lite-{VERSION}.dist-info/")}
    source = {f"qmf_lite/{p.name}" for p in (ROOT / "qmf_lite").glob("*.py")}
    assert modules == source, modules ^ source
    with tarfile.open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "LICENSE", "qmf_lite/__init__.py"} <= members
    assert source <= members


@pytest.mark.slow
def test_installed_wheel_reports_its_version(dist, tmp_path):
    """Installed from the wheel alone (no source tree on the path), qmf_lite knows its version."""
    wheel, _ = dist
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = "import qmf_lite, sys; print(qmf_lite.__version__, qmf_lite.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    version, path = out.stdout.split()
    assert version == VERSION and pathlib.Path(path).is_relative_to(target)


def test_release_workflow_publishes_on_tags_by_trusted_publishing():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    on = wf.get("on", wf.get(True))
    assert on["push"]["tags"] == ["v*"] and "branches" not in on["push"]
    assert wf["permissions"] == {"contents": "read"}
    build, publish = wf["jobs"]["build"], wf["jobs"]["publish"]
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert "python -m build" in runs and "twine check" in runs
    assert 'v${version}' in runs and "GITHUB_REF_NAME" in runs  # the tag must be the package's version
    assert publish["needs"] == "build" and publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    (step,) = [s for s in publish["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert "with" not in step or not {"password", "user"} & set(step["with"])  # no token: trusted publishing


def _config(tmp_path, url, on_pypi):
    (tmp_path / "_config.yml").write_text(yaml.safe_dump({"repository": {"url": url}, "release": {"on_pypi": on_pypi}}))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "qmf-lite"\nversion = "2.3.4"\n')
    return tmp_path


def test_install_spec_pins_the_release_or_the_matching_tag(tmp_path):
    root = _config(tmp_path, "https://github.com/o/r/", True)
    assert sync_colab_url.install_spec(root) == "qmf-lite==2.3.4"
    root = _config(tmp_path, "https://github.com/o/r/", False)
    assert sync_colab_url.install_spec(root) == "qmf_lite @ git+https://github.com/o/r@v2.3.4"
    assert "qmf_lite @ git+https://github.com/o/r@v2.3.4" in sync_colab_url.binder_requirements(root)


def _run_setup_cell(source):
    """Run the set-up cell with qmf_lite not importable and a %pip that installs nothing;
    return (the %pip calls with their variables expanded, the error raised)."""
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(source)
    calls = []
    namespace = {"get_ipython": lambda: Shell()}

    class Shell:
        def run_line_magic(self, name, line):
            calls.append((name, line.replace("{QMF_LITE}", namespace["QMF_LITE"])))

    blocker = type("Block", (), {"find_spec": staticmethod(
        lambda name, *a: (_ for _ in ()).throw(ImportError("blocked")) if name == "qmf_lite" else None)})
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "qmf_lite" or k.startswith("qmf_lite.")}
    sys.meta_path.insert(0, blocker)
    try:
        exec(compile(code, "setup-cell", "exec"), namespace)
        return calls, None
    except RuntimeError as e:
        return calls, e
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(saved)


def test_setup_cell_installs_the_pin_and_stops_with_a_message_when_the_install_fails():
    source = sync_colab_url.setup_cell_source()
    spec = sync_colab_url.install_spec()
    calls, error = _run_setup_cell(source)
    assert calls == [("pip", f'install -q "{spec}"')]
    assert error is not None, "a failed install must stop the notebook"
    assert spec in str(error) and "run this cell again" in str(error)
    assert "git+" in str(error)  # and what to install instead


def test_binder_environment_is_light_and_pinned():
    binder = ROOT / "binder" / "requirements.txt"
    assert binder.read_text() == sync_colab_url.binder_requirements(), "run python scripts/sync_colab_url.py"
    lines = [l for l in binder.read_text().splitlines() if l and not l.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    names = {re.split(r"[<>=@ ]", l)[0].lower() for l in lines if not l.startswith("-")}
    assert names - {"qmf_lite", "qmf-lite"} == {"torch", "scikit-learn"} and names & {"qmf_lite", "qmf-lite"}
    assert not names & {"pytest", "hypothesis", "selenium", "jupyter-book", "otter-grader", "build", "twine"}
    assert sync_colab_url.install_spec() in lines
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_placeholder_url_fails_a_publishing_build_and_warns_elsewhere():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert release_check.is_placeholder(release_check.PLACEHOLDER + "/")
    assert not release_check.is_placeholder("https://github.com/someone/quantized-mean-field")
    assert release_check.must_fail({"GITHUB_ACTIONS": "true"})
    assert not release_check.must_fail({"GITHUB_ACTIONS": "true", "QMF_BOOK_ALLOW_PLACEHOLDER": "1"})
    assert not release_check.must_fail({"CI": "true"}) and not release_check.must_fail({})
    assert "sync_colab_url.py" in release_check.message(url)
