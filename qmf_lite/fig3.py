r"""The experiment of Fig. 3 of Blumenfeld, Gilboa & Soudry (2019): its settings, the command that
runs it at the paper's scale, the data file the book ships, and the analysis of the boundary.

Networks at the optimal initialization of each number of levels :math:`N` are trained over a grid
of depths; the trainable region should end near a multiple of the depth scale :math:`\xi(N)`.
Two profiles (:data:`PROFILES`):

``"paper"``
    The authors' setting as in their public code (``src/mnist.py``, ``run_part_lin``): MNIST with
    the global normalisation ``(0.1307, 0.3081)``, width 2048, :math:`N = 3..16`, depths from 10
    in steps of 25 (here up to 260: one network of that depth, with its gradients and momentum
    buffers, needs 12.4 GiB and fits a 16 GB GPU), SGD with momentum 0.5, batch 32,
    learning rate :math:`10^{-3}` below 100 layers and :math:`5\cdot10^{-4}` from 100, accuracy
    after 100, 200, 400, 800 and 1600 steps, the ``bgs19`` network layout (depth counts linear
    layers; the logits are quantized). Two differences, both for speed: accuracy is measured on a
    fixed subset of 10000 training images (the authors use all 60000) and on the whole test set;
    and one seed per cell.
``"fast"``
    What the book runs on two CPU cores: scikit-learn's digits, width 64, :math:`N = 2..6`, two
    seeds, the same layout and optimizer with a larger learning rate (0.015) for the narrower
    network.

``python -m qmf_lite fig3 --profile paper`` runs a profile (on a GPU when there is one) and
writes its accuracy grid, with the configuration, its hash, the versions, the device, the wall
time, the peak memory and the achieved TFLOP/s, to ``book/data/fig3_paper.json``; chapter 7
draws that file when it is present.

Importing this module does not import torch; :func:`run` and :func:`produce` do.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
import pathlib

import numpy as np

from ._validate import check_positive

__all__ = ["PROFILES", "DATA_FILE", "SCHEMA", "profile_config", "config_hash", "run", "produce", "write", "load",
           "is_stale", "boundary", "fit_exponent", "FIG3_CHANCE"]

#: where ``python -m qmf_lite fig3 --profile paper`` writes by default (relative to the repository root)
DATA_FILE = "book/data/fig3_paper.json"
#: version of the data file's layout
SCHEMA = 1
#: chance accuracy of the ten-class tasks
FIG3_CHANCE = 0.1

#: the two named settings of the Fig. 3 grid: ``"fast"`` (scikit-learn digits, width 64, a 2-core
#: CPU in about a minute) and ``"paper"`` (MNIST, width 2048, the paper's optimizer and grid)
PROFILES = {
    "fast": {
        "dataset": "digits", "normalize": "feature", "width": 64, "levels": [2, 3, 4, 5, 6],
        "depths": [4, 8, 12, 16, 24, 32, 48, 64, 96], "seeds": [0, 1], "steps": [100, 200, 400],
        "lr": 0.015, "momentum": 0.5, "batch_size": 32, "layout": "bgs19", "eval_size": None, "precision": "fp32",
    },
    "paper": {
        "dataset": "mnist", "normalize": "bgs19", "width": 2048, "levels": list(range(3, 17)),
        "depths": list(range(10, 261, 25)), "seeds": [0], "steps": [100, 200, 400, 800, 1600],
        "lr": "bgs19", "momentum": 0.5, "batch_size": 32, "layout": "bgs19", "eval_size": 10000, "precision": "fp32",
    },
}


def profile_config(name):
    """A copy of the settings of profile ``name`` (``"fast"`` or ``"paper"``)."""
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}")
    return copy.deepcopy(PROFILES[name])


def config_hash(config):
    """A short hash of a configuration (canonical JSON: sorted keys, no spaces).

    >>> config_hash({"a": 1, "b": [2, 3]}) == config_hash({"b": [2, 3], "a": 1})
    True
    """
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_data(config, progress):
    from .data import load_digits, load_mnist

    if config["dataset"] == "mnist":
        return load_mnist(normalize=config["normalize"], progress=progress)
    if config["dataset"] == "digits":
        if config["normalize"] != "feature":
            raise ValueError("the digits set is standardised per feature: normalize must be 'feature'")
        return load_digits()
    raise ValueError(f"dataset must be 'mnist' or 'digits', got {config['dataset']!r}")


def run(config, *, device=None, max_memory="auto", cache=True, progress=True, data=None):
    """Train the grid of ``config`` (a profile's settings, see :data:`PROFILES`): a ``GridResult``."""
    from .training import run_grid

    data = _load_data(config, progress) if data is None else data
    return run_grid(config["levels"], config["depths"], seeds=config["seeds"], steps=config["steps"],
                    width=config["width"], lr=config["lr"], batch_size=config["batch_size"],
                    momentum=config["momentum"], layout=config["layout"], eval_size=config["eval_size"],
                    precision=config["precision"], data=data, device=device, max_memory=max_memory, cache=cache,
                    progress=progress)


def write(path, grid, config, meta=None):
    """Write a grid's accuracy table with ``config``, its hash and ``meta`` to ``path`` (atomically)."""
    from . import _cache

    rows = [{k: (round(v, 5) if k.endswith("_acc") else v) for k, v in r.items()} for r in grid.rows]
    doc = {"schema": SCHEMA, "config": config, "config_hash": config_hash(config), **(meta or {}), "rows": rows}
    return _cache.atomic_write_json(path, doc, indent=1)


def produce(profile="paper", out=None, *, config=None, device=None, max_memory="auto", cache=True, progress=True,
            data=None):
    """Run a profile (or ``config``) and write its data file; returns ``(path, grid, meta)``.

    The file holds the configuration and its hash, the versions of qmf_lite and torch, a
    fingerprint of the code, the device, the wall time, the peak device memory, the matrix-product
    operations and the achieved TFLOP/s of the training done in this call.
    """
    import platform

    import torch

    from . import __version__, _cache
    from .simulate import default_device

    config = profile_config(profile) if config is None else copy.deepcopy(config)
    out = pathlib.Path(DATA_FILE if out is None else out)
    dev = default_device(device)
    grid = run(config, device=dev, max_memory=max_memory, cache=cache, progress=progress, data=data)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    meta = {
        "profile": profile if config == PROFILES.get(profile) else "custom",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "qmf_lite_version": __version__, "torch_version": torch.__version__,
        "code_fingerprint": _cache.code_fingerprint(), "device": f"{dev.type}: {name}",
        "wall_seconds": round(grid.seconds, 2), "compute_seconds": round(grid.compute_seconds, 2),
        "networks": grid.n_nets, "networks_from_cache": grid.n_cached,
        "peak_memory_bytes": grid.peak_memory, "train_flops": grid.flops,
        "tflops_per_second": round(grid.flops / grid.train_seconds / 1e12, 3) if grid.train_seconds else None,
    }
    write(out, grid, config, meta)
    return out, grid, meta


def load(path):
    """Read a data file written by :func:`write`: ``(GridResult, meta)``.

    Raises ``ValueError`` naming the file when it is not a Fig. 3 data file of this schema, or
    when its stored hash does not match its own configuration (an edited or damaged file).
    """
    from .training import GridResult

    path = pathlib.Path(path)
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid Fig. 3 data file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "config" not in doc or "rows" not in doc:
        raise ValueError(f"{path} is not a Fig. 3 data file of schema {SCHEMA}")
    if doc.get("config_hash") != config_hash(doc["config"]):
        raise ValueError(f"{path}: its config_hash {doc.get('config_hash')!r} does not match its configuration "
                         f"({config_hash(doc['config'])!r}); the file was edited or damaged")
    meta = {k: v for k, v in doc.items() if k != "rows"}
    cfg = doc["config"]
    grid = GridResult(doc["rows"], {**cfg, "sigma_w": None}, float(doc.get("wall_seconds") or 0.0),
                      n_cached=0, compute_seconds=float(doc.get("compute_seconds") or 0.0))
    return grid, meta


def is_stale(meta, profile="paper"):
    """True when a data file's configuration hash differs from the code's ``profile``."""
    return meta.get("config_hash") != config_hash(profile_config(profile))


def boundary(grid, step=None, chance=FIG3_CHANCE):
    """The halfway depth :math:`L_{1/2}(N)` of each ``N`` and its ratio to :math:`\\xi(N)`.

    Returns
    -------
    dict of arrays: ``levels``, ``xi``, ``l_half`` (NaN where the accuracy never falls halfway
    to chance within the grid) and ``ratio`` = ``l_half / xi``.
    """
    from .tradeoff import optimal_depth_scale
    from .training import halfway_depth

    levels, depths, acc = grid.table("test_acc", step=step)
    xi = np.array([optimal_depth_scale(n) for n in levels])
    l_half = np.array([halfway_depth(depths, a, chance) for a in acc])
    return {"levels": np.array(levels), "xi": xi, "l_half": l_half, "ratio": l_half / xi}


def fit_exponent(xi, l_half):
    r"""Least-squares fit of :math:`\log L_{1/2} = \log a + \beta\log\xi`, with the standard error of :math:`\beta`.

    NaN entries are dropped. The standard error is the usual one of an ordinary least-squares
    slope, :math:`s/\sqrt{\sum(\log\xi - \overline{\log\xi})^2}` with the residual standard
    deviation :math:`s` on ``n - 2`` degrees of freedom: it measures the scatter of the points
    about the power law, not the training noise of each point.

    Returns
    -------
    beta, se, a : float

    Examples
    --------
    >>> beta, se, a = fit_exponent([1, 2, 4, 8], [3, 6, 12, 24])
    >>> round(beta, 6), round(se, 6), round(a, 6)
    (1.0, 0.0, 3.0)
    """
    xi = np.asarray(check_positive(xi, "xi"), float).ravel()
    l_half = np.asarray(l_half, float).ravel()
    if xi.shape != l_half.shape:
        raise ValueError(f"xi and l_half must have the same length, got {xi.size} and {l_half.size}")
    keep = np.isfinite(l_half) & (l_half > 0)
    if keep.sum() < 3:
        raise ValueError(f"l_half must hold at least 3 finite positive values to fit a power law, got {int(keep.sum())}")
    x, y = np.log(xi[keep]), np.log(l_half[keep])
    xm = x - x.mean()
    beta = float((xm * (y - y.mean())).sum() / (xm ** 2).sum())
    intercept = float(y.mean() - beta * x.mean())
    resid = y - intercept - beta * x
    se = float(math.sqrt(max((resid ** 2).sum(), 0.0) / (keep.sum() - 2) / (xm ** 2).sum()))
    return beta, se, float(math.exp(intercept))
