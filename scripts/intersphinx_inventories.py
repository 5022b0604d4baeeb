"""Write the small intersphinx inventories the API reference links through.

The book is built without network access (CI), so Sphinx cannot download the objects.inv of
Python, NumPy, SciPy and PyTorch. These files list, in the same format, only the names our
docstrings refer to, with their addresses in each project's documentation. When a docstring
starts to mention a new external name, add it below and run ``python scripts/intersphinx_inventories.py``.
"""
from __future__ import annotations

import pathlib
import zlib

OUT = pathlib.Path(__file__).resolve().parents[1] / "book" / "_intersphinx"

#: project -> (base URL, [(name, domain:role, uri)]); the base URL is in _config.yml
INVENTORIES = {
    "python": ("Python", "3", [
        ("int", "py:class", "library/functions.html#int"),
        ("float", "py:class", "library/functions.html#float"),
        ("bool", "py:class", "library/functions.html#bool"),
        ("str", "py:class", "library/stdtypes.html#str"),
        ("dict", "py:class", "library/stdtypes.html#dict"),
        ("list", "py:class", "library/stdtypes.html#list"),
        ("tuple", "py:class", "library/stdtypes.html#tuple"),
        ("callable", "py:function", "library/functions.html#callable"),
        ("types.SimpleNamespace", "py:class", "library/types.html#types.SimpleNamespace"),
        ("pathlib.Path", "py:class", "library/pathlib.html#pathlib.Path"),
        ("fractions.Fraction", "py:class", "library/fractions.html#fractions.Fraction"),
        ("ValueError", "py:exception", "library/exceptions.html#ValueError"),
        ("UserWarning", "py:exception", "library/exceptions.html#UserWarning"),
        ("RuntimeWarning", "py:exception", "library/exceptions.html#RuntimeWarning"),
        ("DeprecationWarning", "py:exception", "library/exceptions.html#DeprecationWarning"),
    ]),
    "numpy": ("NumPy", "2", [
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
        ("numpy.random.Generator", "py:class", "reference/random/generator.html#numpy.random.Generator"),
        ("numpy.dtype", "py:class", "reference/generated/numpy.dtype.html#numpy.dtype"),
        ("array_like", "std:term", "glossary.html#term-array_like"),
    ]),
    "scipy": ("SciPy", "1", [
        ("scipy.sparse.csr_array", "py:class", "reference/generated/scipy.sparse.csr_array.html#scipy.sparse.csr_array"),
        ("scipy.sparse.csr_matrix", "py:class", "reference/generated/scipy.sparse.csr_matrix.html#scipy.sparse.csr_matrix"),
        ("scipy.optimize.brentq", "py:function", "reference/generated/scipy.optimize.brentq.html#scipy.optimize.brentq"),
        ("scipy.special.ndtr", "py:data", "reference/generated/scipy.special.ndtr.html#scipy.special.ndtr"),
    ]),
    "torch": ("PyTorch", "2", [
        ("torch.Tensor", "py:class", "tensors.html#torch.Tensor"),
        ("torch.dtype", "py:class", "tensor_attributes.html#torch.dtype"),
        ("torch.device", "py:class", "tensor_attributes.html#torch.device"),
        ("torch.Generator", "py:class", "generated/torch.Generator.html#torch.Generator"),
        ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("torch.nn.Sequential", "py:class", "generated/torch.nn.Sequential.html#torch.nn.Sequential"),
        ("torch.nn.Linear", "py:class", "generated/torch.nn.Linear.html#torch.nn.Linear"),
        ("torch.nn.ReLU", "py:class", "generated/torch.nn.ReLU.html#torch.nn.ReLU"),
        ("torch.nn.Parameter", "py:class", "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter"),
        ("torch.optim.Optimizer", "py:class", "optim.html#torch.optim.Optimizer"),
        ("torch.optim.SGD", "py:class", "generated/torch.optim.SGD.html#torch.optim.SGD"),
        ("torch.autograd.Function", "py:class", "autograd.html#torch.autograd.Function"),
    ]),
}


def inventory_bytes(project, version, entries):
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries).encode()
    return header + zlib.compress(body, 9)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for key, (project, version, entries) in INVENTORIES.items():
        (OUT / f"{key}.inv").write_bytes(inventory_bytes(project, version, entries))
        print(f"{OUT / key}.inv: {len(entries)} names")


if __name__ == "__main__":
    main()
