"""Make the notebook kernel called ``python3`` run a given interpreter.

Jupyter looks up the kernel ``python3`` in ``$JUPYTER_PATH`` first, then in the user's folder
(``~/.local/share/jupyter/kernels``), then in the environment's. A ``python3`` kernel a user
installed once (``ipykernel install --user``) would otherwise run the chapters, the grading and
the Colab-parity notebooks in another Python than the one that asked.
"""
import contextlib
import json
import os
import pathlib
import sys
import tempfile


def write_kernelspec(folder, python=sys.executable):
    """Write ``folder/kernels/python3/kernel.json`` for ``python``; returns ``folder``."""
    spec = pathlib.Path(folder) / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    return str(folder)


def jupyter_path_env(folder, env=None):
    """``env`` (default: ``os.environ``) with ``folder`` first on ``JUPYTER_PATH``."""
    env = dict(os.environ if env is None else env)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(folder), env.get("JUPYTER_PATH")) if p)
    return env


@contextlib.contextmanager
def pinned_python3_kernel(python=sys.executable):
    """Within the block, kernels named ``python3`` started from this process run ``python``."""
    old = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="qmf-kernel-") as folder:
        os.environ["JUPYTER_PATH"] = jupyter_path_env(write_kernelspec(folder, python))["JUPYTER_PATH"]
        try:
            yield folder
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old
