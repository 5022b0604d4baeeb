"""qmf_lite: mean-field theory of quantized deep networks, numerics and torch simulations.

>>> import qmf_lite as qmf
>>> chi, d_opt = qmf.chi_max(16)
>>> round(1 - chi, 6), round(d_opt, 4)
(0.011543, 0.3352)

What is public, and where it lives
----------------------------------
Everything a reader calls is reachable from this one namespace; the submodules organise the
code, one concept each, and imports flow one way, from the mathematics towards torch:

========================  ==========================================================  =========
module                    concept                                                     needs
========================  ==========================================================  =========
``activations``           activations, their closed-form Gaussian kernels, MC check   numpy
``gaussian``              Gaussian expectations: quadrature, step-function sums, MC   numpy
``maps``                  variance and correlation maps, fixed points, depth scales   numpy
``tradeoff``              chi_max(N), the optimal initialization, L_max, Lloyd-Max    numpy
``reference``             reference data (the paper's levels of Fig. 2, ...)          numpy
``simulate``              wide random networks in torch (Fig. 1)                      torch
``ste``                   the straight-through estimator and its slope rule           torch
``training``              batched quantized MLPs, SGD, the cached grid runner         torch
``fused``                 an SGD step that never stores the weight gradient (Triton)  torch
``ntk``                   the empirical NTK (torch); its infinite-width STE theory    torch
``data``                  digits (offline) and MNIST (checksummed download)           torch
``fig3``                  the paper's Fig. 3: profiles, the data file, its analysis   numpy
``book``                  chapter helpers: the scale switch, glue, tables, style      numpy
``weights``               weight training: rounding, R/SR/BC, the SR chain (ch. 10)   numpy
``ptq``                   post-training weight quantization, MSQ to SPFQ (ch. 11)     numpy
``approx``                exact dyadic ReLU nets, weight quantizers, bits (ch. 12)    numpy
``alignment``             kernel alignment with the inputs, its noise floor (ch. 8)   numpy
========================  ==========================================================  =========

* The **core** (numpy/scipy rows) is imported with the package and never imports torch, so
  ``import qmf_lite`` works without torch. Its public names are flat: ``qmf.chi_max``.
* The **torch layer** (torch rows) is flat too (``qmf.QuantAct``, ``qmf.run_grid``) but is
  imported on first use of one of its names.
* Each **companion topic** of the book is a namespace of its own, imported on first use and
  called as ``qmf.<namespace>.<name>``: ``qmf.book`` (chapter helpers: the scale switch, glue,
  figure style), ``qmf.fig3`` (the paper-scale trainability experiment), ``qmf.weights``
  (training with quantized weights), ``qmf.ptq`` (post-training weight quantization) and
  ``qmf.approx`` (ReLU networks with quantized weights) and ``qmf.alignment`` (how much a
  kernel still reflects its inputs, and the noise floor of that measure).
* A name is public when it is listed in its module's ``__all__``; the table ``_LAZY`` below and
  the import block say where each top-level name comes from. Names starting with ``_`` and the
  modules ``_validate`` and ``_progress`` are private.

To add a function: write it in the module of its concept (with a numpy-style docstring stating
its formula and the range of its arguments, and argument checks from ``_validate``), list it in
that module's ``__all__``, and add it to the import block (core) or to ``_LAZY`` (torch layer)
below; ``tests/test_package.py`` fails until the two agree. A public function checks its arguments
once, at the door, and hands them to a private ``_name`` that checks nothing; code inside the
package calls the private one. ``tests/test_shape.py`` keeps the shape: no import cycle, no
function over 60 lines of code, no private helper defined twice.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _version

from .activations import (
    Activation,
    CallableActivation,
    Erf,
    HardTanh,
    Linear,
    QuadratureWarning,
    QuantizedActivation,
    ReLU,
    StepActivation,
    Tanh,
    get_activation,
    monte_carlo_kernel,
)
from .gaussian import MonteCarloEstimate, expect, expect_pair, normal_rule, simultaneous_threshold
from .maps import (
    chi,
    correlation_map,
    covariance_map,
    depth_scale,
    fixed_point_c,
    basin_boundary_q,
    fixed_point_q,
    iterate_maps,
    phase_diagram,
    variance_fixed_points,
    variance_map,
    variance_map_slope,
)
from .reference import (
    AUTHORS_FIG2_FITS,
    AUTHORS_FIG2_VALUES,
    AUTHORS_GRID_STEP,
    AUTHORS_SOURCE,
    FIG2_LEVELS,
    PAPER_DEPTH_EXPONENT,
)
from .tradeoff import (
    InitScheme,
    bits,
    chi_max,
    chi_zero,
    levels_for_depth,
    lloyd_max,
    lloyd_max_activation,
    max_depth,
    optimal_depth_scale,
    optimal_init,
    quantization_error,
)


def _source_version():
    """The version in the ``pyproject.toml`` beside this package, for a source tree that is not installed
    (``python -m qmf_lite`` from a clone, as on a borrowed GPU): the same string an install reports,
    so that the training cache's keys agree between the two; ``"0+unknown"`` where it cannot be read."""
    import pathlib

    try:
        import tomllib

        pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
        project = tomllib.loads(pyproject.read_text())["project"]
        return str(project["version"]) if project.get("name") == "qmf-lite" else "0+unknown"
    except (ImportError, OSError, KeyError, TypeError, ValueError):
        return "0+unknown"


try:
    __version__ = _version("qmf_lite")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = _source_version()

#: torch-layer names -> the module that defines them (imported on first access)
_LAZY = {
    "simulate": ["SimulationResult", "circle_inputs", "default_device", "simulate_correlations",
                 "simulate_covariance", "WEIGHTS"],
    "ste": ["QuantAct", "quantize", "ste_quantize", "staircase_tables", "ste_clip", "ste_slope", "ste_chi1"],
    "training": ["NetSpec", "QuantizedMLPBatch", "train", "TrainRecord", "run_grid", "GridResult", "halfway_depth",
                 "bgs19_lr", "learning_rate", "training_memory", "training_flops", "memory_budget", "LAYOUTS",
                 "PRECISIONS", "SEEDINGS", "UPDATES"],
    "fused": ["FusedSGD", "FUSED_PRECISIONS"],
    "ntk": ["empirical_ntk", "ste_derivative_kernel", "backward_rate", "backward_depth_scale", "ste_ntk", "SteNTK"],
    "data": ["Dataset", "load_digits", "load_mnist", "load_dataset", "read_idx", "cache_dir", "MNIST_FILES",
             "MNIST_SHA256", "BGS19_NORMALIZATION", "CacheWarning"],
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}
#: namespaces (submodules used as ``qmf.<name>.<function>``), imported on first access
_NAMESPACES = ("book", "fig3", "weights", "ptq", "approx", "alignment")

__all__ = [
    # activations
    "Activation", "StepActivation", "QuantizedActivation", "Linear", "ReLU", "Erf", "Tanh", "HardTanh",
    "CallableActivation", "QuadratureWarning", "get_activation", "monte_carlo_kernel",
    # gaussian
    "normal_rule", "expect", "expect_pair", "MonteCarloEstimate", "simultaneous_threshold",
    # maps
    "variance_map", "variance_map_slope", "fixed_point_q", "variance_fixed_points", "basin_boundary_q",
    "covariance_map", "correlation_map", "chi",
    "fixed_point_c", "depth_scale", "phase_diagram", "iterate_maps",
    # tradeoff
    "InitScheme", "chi_max", "chi_zero", "optimal_depth_scale", "max_depth", "bits", "levels_for_depth",
    "lloyd_max", "lloyd_max_activation", "optimal_init", "quantization_error",
    # reference
    "FIG2_LEVELS", "PAPER_DEPTH_EXPONENT", "AUTHORS_SOURCE", "AUTHORS_GRID_STEP", "AUTHORS_FIG2_VALUES",
    "AUTHORS_FIG2_FITS",
    # torch layer
    *_LAZY_NAMES,
    # namespaces
    *_NAMESPACES,
]


def __getattr__(name):
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _NAMESPACES or name in _LAZY:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
