r"""The experiment of Fig. 3 of Blumenfeld, Gilboa & Soudry (2019): its settings, the command that
runs it at the paper's scale, the data file the book ships, and the analysis of the boundary.

Networks at the optimal initialization of each number of levels :math:`N` are trained over a grid
of depths; the trainable region should end near a multiple of the depth scale :math:`\xi(N)`.
Two profiles (:data:`PROFILES`):

``"paper"``
    The authors' setting as in their public code (``src/mnist.py``, ``run_part_lin``): MNIST with
    the global normalisation ``(0.1307, 0.3081)`` (``transforms.Normalize`` after ``ToTensor``),
    width 2048, :math:`N = 3..16`, depths from 10 in steps of 25, SGD with momentum 0.5, batch 32,
    learning rate :math:`10^{-3}` below 100 layers and :math:`5\cdot10^{-4}` from 100, accuracy
    after 100, 200, 400, 800 and 1600 steps, the ``bgs19`` network layout (depth counts linear
    layers; the logits are quantized), one network per cell with its own random draws
    (``seeding="cell"``; the authors' networks draw from torch's global generator one after
    another, so theirs are independent too). The depths run up to 260: the authors' notebook
    (``jupyter-examples/mnist_heatmap.ipynb``) as published sets ``first_layer = 10,
    last_layer = 135, layers_skip = 25`` for the call it marks as the paper's
    (:data:`AUTHORS_NOTEBOOK_DEPTHS`); going on to 260 is our choice: it puts :math:`6\xi(N)`
    inside the grid for :math:`N = 3..10` (135 does so for :math:`N \le 7`), and one network of
    depth 260 with its gradients and momentum buffers (12.4 GiB) still fits a 16 GB GPU. One
    difference, for speed: the training accuracy is measured on a fixed subset of 10000 training
    images (the authors use all 60000); the test accuracy on the whole test set. One difference of
    theory: :math:`\sigma_w` and the STE slope come from the exact optimum
    (:func:`qmf_lite.optimal_init`), where the authors' code reads the optimal spacing off their
    power-law fit (about 1% apart in :math:`\sigma_w` at :math:`N = 3`, less for larger
    :math:`N`; chapter 7 lists these differences).

    Ties: the quantized logits take only :math:`N` values, so at small :math:`N` several classes
    often share the largest logit. The predicted class is the first of them (``torch.argmax``,
    which returns the first maximal index); the authors' code takes ``argmax`` of the log-softmax
    of the same quantized logits, whose equal entries stay exactly equal, so it breaks ties the
    same way on a torch that returns the first maximal index, as current torch documents (which
    index the 2019 torch of the authors returned on a GPU we could not check).
``"fast"``
    What the book runs on two CPU cores: scikit-learn's digits, width 64, :math:`N = 2..6`, two
    seeds, the same layout and optimizer with a larger learning rate (0.015) for the narrower
    network.

``python -m qmf_lite fig3 --profile paper`` runs a profile (on a GPU when there is one) and
writes its accuracy grid, with the configuration, its hash, the versions, the device, the wall
time, the peak memory and the achieved TFLOP/s, to ``book/data/fig3_paper.json``; chapter 7
draws that file when it is present. The run can be cut into pieces (``--deadline``), carried
between machines (``--bundle``), split over several machines (``--shard``) and put together
again (``--merge``, :func:`merge`); a data file written before the grid is complete lists the
networks done and those missing, and chapter 7 draws the missing cells as missing.

Importing this module does not import torch; :func:`run` and :func:`produce` do.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math

import numpy as np

from ._validate import check_path, check_positive, check_real_in

__all__ = ["PROFILES", "DATA_FILE", "SCHEMA", "profile_config", "config_hash", "run", "produce", "write", "load",
           "merge", "is_stale", "boundary", "fit_exponent", "FIG3_CHANCE", "AUTHORS_NOTEBOOK_DEPTHS",
           "DATA_FILES", "DATA_URL", "fetch_data", "default_data_file"]

#: where ``python -m qmf_lite fig3 --profile paper`` writes by default (relative to the repository root)
DATA_FILE = "book/data/fig3_paper.json"
#: the Fig. 3 data files the book ships in ``book/data`` (the paper-scale one once it has been produced)
DATA_FILES = ("fig3_paper.json", "fig3_paper_digits.json")
#: where :func:`fetch_data` finds them: ``book/data`` of the book's repository (``repository.url`` in
#: ``_config.yml``) at the git tag of this package's version, the one the chapters' Colab set-up installs
DATA_URL = "https://github.com/qmf-book/quantized-mean-field/raw/v{version}/book/data"
#: version of the data file's layout
SCHEMA = 1
#: chance accuracy of the ten-class tasks
FIG3_CHANCE = 0.1
#: the depth grid of the call that the authors' notebook (github.com/yanivbl6/quantized_meanfield,
#: ``jupyter-examples/mnist_heatmap.ipynb``) marks as the one that generates the paper's figure, as published
AUTHORS_NOTEBOOK_DEPTHS = {"first_layer": 10, "last_layer": 135, "layers_skip": 25}

#: the two named settings of the Fig. 3 grid: ``"fast"`` (scikit-learn digits, width 64, a 2-core
#: CPU in about a minute) and ``"paper"`` (MNIST, width 2048, the paper's optimizer and grid)
PROFILES = {
    "fast": {
        "dataset": "digits", "normalize": "feature", "width": 64, "levels": [2, 3, 4, 5, 6],
        "depths": [4, 8, 12, 16, 24, 32, 48, 64, 96], "seeds": [0, 1], "steps": [100, 200, 400],
        "lr": 0.015, "momentum": 0.5, "batch_size": 32, "layout": "bgs19", "eval_size": None, "precision": "fp32",
        "seeding": "cell",
    },
    "paper": {
        "dataset": "mnist", "normalize": "bgs19", "width": 2048, "levels": list(range(3, 17)),
        "depths": list(range(10, 261, 25)), "seeds": [0], "steps": [100, 200, 400, 800, 1600],
        "lr": "bgs19", "momentum": 0.5, "batch_size": 32, "layout": "bgs19", "eval_size": 10000, "precision": "fp32",
        "seeding": "cell",
    },
}


def _check_profile(name, arg):
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"{arg} must be one of {sorted(PROFILES)} (the name of a profile), got {name!r}")
    return name


def _check_config(config, arg="config"):
    """A profile-like dict: every key of :data:`PROFILES`, a known dataset and normalisation (the other
    values are checked by :func:`~qmf_lite.run_grid`)."""
    keys = set(PROFILES["fast"])
    if not isinstance(config, dict) or not keys <= set(config):
        raise ValueError(f"{arg} must be a dict with the keys {sorted(keys)} (see PROFILES), got {config!r:.200}")
    if config["dataset"] not in ("mnist", "digits"):
        raise ValueError(f"{arg}['dataset'] must be 'mnist' or 'digits', got {config['dataset']!r}")
    if config["normalize"] not in ("feature", "bgs19"):
        raise ValueError(f"{arg}['normalize'] must be 'feature' or 'bgs19', got {config['normalize']!r}")
    return config


def profile_config(name):
    """A copy of the settings of profile ``name`` (``"fast"`` or ``"paper"``)."""
    return copy.deepcopy(PROFILES[_check_profile(name, "name")])


def default_data_file(profile, config=None):
    """Where a run of ``profile`` with the settings ``config`` writes its data file by default.

    :data:`DATA_FILE` (``book/data/fig3_paper.json``) for the paper profile's own settings,
    ``book/data/fig3_fast.json`` for the fast profile's, and ``book/data/fig3_<profile>_<hash>.json``
    (:func:`config_hash` of ``config``, a dict with every key of a profile, as for :func:`run`) for any
    other settings, so that a modified grid never overwrites the file of a profile.

    >>> default_data_file("paper")
    'book/data/fig3_paper.json'
    >>> default_data_file("paper", {**profile_config("paper"), "dataset": "digits"}).startswith("book/data/fig3_paper_")
    True
    """
    _check_profile(profile, "profile")
    if config is not None:
        _check_config(config)
    if config is None or config == PROFILES[profile]:
        return DATA_FILE if profile == "paper" else f"book/data/fig3_{profile}.json"
    return f"book/data/fig3_{profile}_{config_hash(config)}.json"


def config_hash(config):
    """A short hash of a configuration (canonical JSON: sorted keys, no spaces).

    ``config`` must be JSON data: dicts with string keys, lists, strings, finite numbers, booleans
    and ``None``.

    >>> config_hash({"a": 1, "b": [2, 3]}) == config_hash({"b": [2, 3], "a": 1})
    True
    """
    try:
        blob = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must be JSON data (dicts with string keys, lists, strings, finite numbers, "
                         f"booleans, None), got {config!r:.200} ({exc})") from None
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


def run(config, *, device=None, max_memory="auto", cache=True, progress=True, data=None, deadline=None, bundle=None,
        shard=None, update="torch"):
    """Train the grid of ``config`` (a profile's settings, see :data:`PROFILES`): a ``GridResult``.

    ``config`` is a dict with every key of a profile; its values, and the other arguments, are
    checked by :func:`~qmf_lite.run_grid` (``data``: ``None``, to load ``config["dataset"]``, or a
    :class:`~qmf_lite.Dataset`; ``deadline``, ``bundle`` and ``shard`` as there: they decide what
    is trained in this call, not the numbers; ``update``: the SGD update, ``"torch"`` or
    ``"fused"``, see :func:`~qmf_lite.train`).
    """
    _check_config(config)
    return _run(config, _config_grid_arguments(config, device=device, max_memory=max_memory, cache=cache, progress=progress,
                                        data=data, deadline=deadline, bundle=bundle, shard=shard, update=update), data)


def _config_grid_arguments(config, **kw):
    """The checked arguments of the grid of ``config`` (:func:`qmf_lite.run_grid`'s door), with ``kw``."""
    from .training import _grid_arguments

    return _grid_arguments(levels=config["levels"], depths=config["depths"], sigma_w=None, seeds=config["seeds"],
                           steps=config["steps"], width=config["width"], lr=config["lr"],
                           batch_size=config["batch_size"], dataset="digits", momentum=config["momentum"],
                           layout=config["layout"], eval_size=config["eval_size"], precision=config["precision"],
                           seed=0, callback=None, workers=None, seeding=config["seeding"], **kw)


def _run(config, args, data):
    """:func:`run` on a checked ``config`` and grid arguments ``args``: load the data, train the grid."""
    from .training import _clock, _run_grid

    data = _load_data(config, args.progress) if data is None else data
    return _run_grid(args, data, _clock())


def write(path, grid, config, meta=None):
    """Write a grid's accuracy table with ``config``, its hash and ``meta`` to ``path`` (atomically).

    ``path`` names a file (not a folder); ``grid`` is a :class:`~qmf_lite.GridResult`; ``config``
    and ``meta`` (``None`` or a dict, without the keys ``schema``, ``config``, ``config_hash``,
    ``done``, ``missing`` and ``rows``) must be JSON data (see :func:`config_hash`). The file lists
    the networks done (``done``: ``[levels, depth, seed]`` each) and those of the grid still
    missing (``missing``, from ``grid.missing``; empty when the grid is complete).
    """
    from .training import GridResult

    path = check_path(path, "path", kind="not_dir")
    if not isinstance(grid, GridResult):
        raise ValueError(f"grid must be a GridResult, got {type(grid).__name__}")
    _check_config(config)
    config_hash(config)
    if meta is not None:
        if not isinstance(meta, dict) or set(meta) & {"schema", "config", "config_hash", "rows"}:
            raise ValueError(f"meta must be None or a dict without the keys schema, config, config_hash and rows, "
                             f"got {meta!r:.200}")
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON data (finite numbers), got {meta!r:.200} ({exc})") from None
    if meta is not None and set(meta) & {"done", "missing"}:
        raise ValueError("meta must be None or a dict without the keys done and missing (write() lists them)")
    return _write(path, grid, config, meta)


def _write(path, grid, config, meta):
    """:func:`write` on checked arguments."""
    from . import _cache

    rows = [{k: (round(v, 5) if k.endswith("_acc") else v) for k, v in r.items()} for r in grid.rows]
    done = sorted({(r["levels"], r["depth"], r["seed"]) for r in grid.rows})
    missing = sorted({(m[0], m[3], m[2]) for m in grid.missing})
    doc = {"schema": SCHEMA, "config": config, "config_hash": config_hash(config), **(meta or {}),
           "done": [list(d) for d in done], "missing": [list(m) for m in missing], "rows": rows}
    return _cache.atomic_write_json(path, doc, indent=1)


def produce(profile="paper", out=None, *, config=None, device=None, max_memory="auto", cache=True, progress=True,
            data=None, deadline=None, bundle=None, shard=None, update="torch"):
    """Run a profile (or ``config``) and write its data file; returns ``(path, grid, meta)``.

    The file holds the configuration and its hash, the versions of qmf_lite and torch, a
    fingerprint of the code, the device, the SGD update (``"torch"`` or ``"fused"``: the same
    update, so not part of the configuration), the wall time, the peak device memory, the matrix-product
    operations and the achieved TFLOP/s of the training done in this call, and the networks done
    and missing (a run stopped by ``deadline``, or one ``shard``, writes what it has).

    ``profile`` is ``"fast"`` or ``"paper"``; ``out`` a file path (default :func:`default_data_file`);
    ``config`` ``None`` (the profile's settings) or a dict as for :func:`run`, which checks the
    other arguments.
    """
    import platform

    import torch

    from . import __version__, _cache
    from .simulate import default_device

    _check_profile(profile, "profile")
    config = copy.deepcopy(PROFILES[profile] if config is None else _check_config(config))
    out = check_path(default_data_file(profile, config) if out is None else out, "out", kind="not_dir")
    dev = default_device(device)
    grid = _run(config, _config_grid_arguments(config, device=dev, max_memory=max_memory, cache=cache, progress=progress,
                                        data=data, deadline=deadline, bundle=bundle, shard=shard, update=update), data)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    meta = {
        "profile": profile if config == PROFILES.get(profile) else "custom",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "qmf_lite_version": __version__, "torch_version": torch.__version__,
        "code_fingerprint": _cache.code_fingerprint(), "device": f"{dev.type}: {name}", "update": update,
        "wall_seconds": round(grid.seconds, 2), "compute_seconds": round(grid.compute_seconds, 2),
        "networks": grid.n_nets, "networks_from_cache": grid.n_cached, "networks_missing": len(grid.missing),
        "peak_memory_bytes": grid.peak_memory, "train_flops": grid.flops,
        "tflops_per_second": round(grid.flops / grid.train_seconds / 1e12, 3) if grid.train_seconds else None,
    }
    _write(out, grid, config, meta)
    return out, grid, meta


def load(path):
    """Read a data file written by :func:`write`: ``(GridResult, meta)``.

    Raises ``ValueError`` naming the file when it is not a Fig. 3 data file of this schema, or
    when its stored hash does not match its own configuration (an edited or damaged file); a
    missing file is a ``ValueError`` that is also a ``FileNotFoundError``. The grid's ``missing``
    lists the networks the file marks as missing (``(levels, None, seed, depth)``; empty for a
    complete file and for files written before the list existed).
    """
    return _load(check_path(path, "path", kind="file"))


def _load(path):
    """:func:`load` of a checked ``path`` (a ``pathlib.Path``)."""
    from .training import GridResult

    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"path {str(path)!r} must be a Fig. 3 data file: {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "config" not in doc or "rows" not in doc:
        raise ValueError(f"path {str(path)!r} must be a Fig. 3 data file of schema {SCHEMA}: {path} is not")
    try:
        stored = config_hash(doc["config"])
    except ValueError as exc:
        raise ValueError(f"path {str(path)!r}: {path} must hold a JSON configuration ({exc})") from None
    if doc.get("config_hash") != stored:
        raise ValueError(f"path {str(path)!r}: {path}: its config_hash {doc.get('config_hash')!r} must match its "
                         f"configuration ({stored!r}); the file was edited or damaged")
    meta = {k: v for k, v in doc.items() if k != "rows"}
    cfg = doc["config"]
    missing = [(int(n), None, int(s), int(d)) for n, d, s in doc.get("missing") or []]
    grid = GridResult(doc["rows"], {**cfg, "sigma_w": None}, float(doc.get("wall_seconds") or 0.0),
                      n_cached=0, compute_seconds=float(doc.get("compute_seconds") or 0.0), missing=missing)
    return grid, meta


def merge(bundles, profile="paper", out=None, *, config=None, bundle=None):
    """Put together the bundles of runs of one grid (pieces, shares, machines) and write its data file.

    Reads every bundle file (``run_grid(bundle=...)``, ``python -m qmf_lite fig3 --bundle``),
    keeps one entry per network (the first, when bundles overlap), checks that all of them were
    computed with the same settings, code, torch version and device type, and writes the data
    file of ``config`` from them, with the networks still missing listed; nothing is trained and
    no cache or data set is needed, so any machine can merge. Returns ``(path, grid, meta)``.

    Parameters
    ----------
    bundles : sequence of paths
        At least one existing bundle file.
    profile : ``"fast"`` or ``"paper"``
    out : path, optional
        The data file (default :func:`default_data_file` of ``profile`` and ``config``).
    config : dict, optional
        The grid (default: the profile's settings); the bundles' networks must have its settings.
    bundle : path, optional
        Where to write the merged bundle (atomically), to carry on from it.
    """
    config, out, paths, bundle = _merge_arguments(bundles, profile, out, config, bundle)
    entries = _read_bundles(paths)
    base = _bundle_settings(entries, config)
    grid, devices = _merged_grid(entries, base, config)
    if bundle is not None:
        from .training import _write_bundle

        _write_bundle(bundle, entries.values())
    seconds, flops = grid.compute_seconds, grid.flops
    meta = {
        "profile": profile if config == PROFILES.get(profile) else "custom",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "qmf_lite_version": base.get("qmf_lite"), "torch_version": base["torch"], "code_fingerprint": base["code"],
        "device": " + ".join(sorted(devices)) or base["device"], "update": base.get("update", "torch"),
        "wall_seconds": round(seconds, 2),
        "compute_seconds": round(seconds, 2), "networks": grid.n_nets, "networks_from_cache": grid.n_nets,
        "networks_missing": len(grid.missing), "merged_bundles": len(paths), "peak_memory_bytes": None,
        "train_flops": flops, "tflops_per_second": round(flops / seconds / 1e12, 3) if seconds else None,
    }
    unused = len(entries) - grid.n_nets
    if unused:
        meta["bundle_networks_outside_the_grid"] = unused
    _write(out, grid, config, meta)
    return out, grid, meta


def _merge_arguments(bundles, profile, out, config, bundle):
    """The door of :func:`merge`: ``(config, out, paths of the bundles, bundle)``, checked."""
    _check_profile(profile, "profile")
    config = copy.deepcopy(PROFILES[profile] if config is None else _check_config(config))
    out = check_path(default_data_file(profile, config) if out is None else out, "out", kind="not_dir")
    if isinstance(bundles, (str, bytes)) or not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"bundles must be a non-empty list of bundle files, got {bundles!r:.200}")
    paths = [check_path(b, "bundles", kind="file") for b in bundles]
    if bundle is not None:
        bundle = check_path(bundle, "bundle", kind="not_dir")
    return config, out, paths, bundle


def _read_bundles(paths):
    """``{key: entry}`` of the bundle files ``paths`` (the first entry of each network); at least one."""
    from .training import _read_bundle

    entries = {}
    for path in paths:
        for e in _read_bundle(path):
            entries.setdefault(e["key"], e)
    if not entries:
        raise ValueError(f"bundles must hold at least one finished network, got {len(paths)} empty bundle(s)")
    return entries


def _bundle_settings(entries, config):
    """The run settings that every entry shares (its cache key's content but depth, rate and spec); a
    ValueError naming the difference when they differ, or differ from ``config``'s grid."""
    settings = lambda c: {k: v for k, v in c.items() if k not in ("depth", "lr", "spec")}  # noqa: E731
    base = settings(next(iter(entries.values()))["config"])
    for e in entries.values():
        other = settings(e["config"])
        if other != base:
            diff = ", ".join(f"{k}: {base.get(k)!r} and {other.get(k)!r}" for k in sorted(set(base) | set(other))
                             if base.get(k) != other.get(k))
            raise ValueError(f"bundles must come from runs of one grid with the same settings, code and torch "
                             f"version; they differ in {diff}")
    want = {"width": config["width"], "layout": config["layout"], "steps": sorted(set(config["steps"])),
            "batch_size": config["batch_size"], "momentum": float(config["momentum"]),
            "eval_size": config["eval_size"], "precision": config["precision"], "seeding": config["seeding"],
            "dataset": config["dataset"]}
    diff = [f"{k}: {base.get(k)!r} in the bundles, {v!r} in the configuration" for k, v in want.items()
            if base.get(k) != v]
    if diff:
        raise ValueError("bundles must hold networks of config's grid: " + "; ".join(diff))
    return base


def _merged_grid(entries, base, config):
    """The :class:`~qmf_lite.GridResult` of ``config``'s grid from the bundles' ``entries`` (the networks they
    lack listed as missing) and the names of the devices that computed them."""
    from .training import GridResult, NetSpec, _entry_config, _key, learning_rate

    specs = [NetSpec.optimal(n, sd) for n in config["levels"] for sd in config["seeds"]]
    rows, missing, seconds, flops, devices = [], [], 0.0, 0.0, set()
    for depth in sorted(config["depths"]):
        lr = learning_rate(config["lr"], depth)
        for spec in specs:
            e = entries.get(_key(_entry_config(base, depth, lr, spec)))
            if e is None:
                missing.append((spec.levels, spec.sigma_w, spec.seed, depth))
                continue
            rows.extend(e["rows"])
            seconds += float(e["seconds"])
            flops += float(e.get("flops") or 0.0)
            devices.add(e.get("device_name") or base["device"])
    order = {(s.levels, s.seed): i for i, s in enumerate(specs)}
    rows.sort(key=lambda r: (r["depth"], r["step"], order[(r["levels"], r["seed"])]))
    grid = GridResult(rows, {**config, "sigma_w": None}, seconds, n_cached=len(rows) // len(base["steps"]),
                      compute_seconds=seconds, flops=flops, train_seconds=seconds, missing=missing)
    return grid, devices


def is_stale(meta, profile="paper"):
    """True when a data file's configuration hash differs from the code's ``profile``.

    ``meta`` is the dict :func:`load` returns; ``profile`` ``"fast"`` or ``"paper"``.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict (the metadata load() returns), got {meta!r:.200}")
    _check_profile(profile, "profile")
    return meta.get("config_hash") != config_hash(PROFILES[profile])


def boundary(grid, step=None, chance=FIG3_CHANCE):
    """The halfway depth :math:`L_{1/2}(N)` of each ``N`` and its ratio to :math:`\\xi(N)`.

    Parameters
    ----------
    grid : qmf_lite.GridResult
        With ``levels``, ``depth``, ``step`` and ``test_acc`` in [0, 1] in every row.
    step : int, optional
        One of the grid's recorded steps; default the last.
    chance : float in [0, 1]

    Returns
    -------
    dict of arrays: ``levels``, ``xi``, ``l_half`` (NaN where the accuracy never falls halfway
    to chance within the grid, where it is nowhere above chance, or where the grid lacks a depth
    of that ``N``) and ``ratio`` = ``l_half / xi``.
    """
    from .tradeoff import optimal_depth_scale
    from .training import GridResult, _halfway_depth

    if not isinstance(grid, GridResult) or not grid.rows:
        raise ValueError(f"grid must be a GridResult with at least one row, got {grid!r:.200}")
    chance = check_real_in(chance, "chance", 0.0, 1.0)
    levels, depths, acc = grid.table("test_acc", step=step)      # a ValueError for a step not recorded
    depths = np.asarray(depths, float)
    finite = np.isfinite(acc)
    if (depths <= 0).any() or (finite & ((acc < 0) | (acc > 1))).any():
        raise ValueError(f"grid must hold depths > 0 and test_acc in [0, 1] (halfway_depth's ranges), got depths "
                         f"{depths} and accuracies {acc[finite]}")
    xi = np.array([optimal_depth_scale(n) for n in levels])
    l_half = np.array([_halfway_depth(depths, a, chance) if np.isfinite(a).all() else np.nan for a in acc])
    return {"levels": np.array(levels), "xi": xi, "l_half": l_half, "ratio": l_half / xi}


def fit_exponent(xi, l_half):
    r"""Least-squares fit of :math:`\log L_{1/2} = \log a + \beta\log\xi`, with the standard error of :math:`\beta`.

    ``xi`` holds finite values > 0; ``l_half`` the same number of halfway depths, each > 0 and
    finite or NaN. NaN entries are dropped; at least 3 must remain, with at least two distinct
    ``xi``. The standard error is the usual one of an ordinary least-squares
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
    l_half = _check_halfway_depths(l_half)
    if xi.shape != l_half.shape:
        raise ValueError(f"xi and l_half must have the same length, got {xi.size} and {l_half.size}")
    keep = np.isfinite(l_half) & (l_half > 0)
    if keep.sum() < 3:
        raise ValueError(f"l_half must hold at least 3 finite positive values to fit a power law, got {int(keep.sum())}")
    x, y = np.log(xi[keep]), np.log(l_half[keep])
    xm = x - x.mean()
    if not (xm ** 2).sum() > 0:
        raise ValueError("xi must hold at least two distinct values where l_half is finite (the fit needs a spread)")
    beta = float((xm * (y - y.mean())).sum() / (xm ** 2).sum())
    intercept = float(y.mean() - beta * x.mean())
    resid = y - intercept - beta * x
    se = float(math.sqrt(max((resid ** 2).sum(), 0.0) / (keep.sum() - 2) / (xm ** 2).sum()))
    if not (math.isfinite(beta) and math.isfinite(se) and intercept < 709.0):
        raise ValueError("xi and l_half must give a fit within float64: the slope or the prefactor "
                         f"exp({intercept:.4g}) overflows; spread xi further")
    return beta, se, float(math.exp(intercept))


def _check_halfway_depths(l_half):
    """``l_half`` as a flat float64 array: real numbers, each > 0 and finite, or NaN."""
    if isinstance(l_half, (str, bytes, bool, np.bool_)) or l_half is None:
        raise ValueError(f"l_half must be real numbers (> 0, or NaN), got {l_half!r}")
    raw = np.asarray(l_half)
    if raw.dtype.kind not in "iuf" and not (raw.dtype.kind == "O" and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            for v in raw.ravel())):
        raise ValueError(f"l_half must be real numbers (> 0, or NaN), got {l_half!r}")
    arr = raw.astype(np.float64).ravel()
    bad = ~np.isnan(arr) & ~((arr > 0) & np.isfinite(arr))
    if bad.any():
        raise ValueError(f"l_half must be finite and > 0, or NaN, got {arr[bad][:3]}")
    return arr


def _fetch_arguments(names, url, folder, timeout):
    """The checked arguments of :func:`fetch_data`: names, url, folder and timeout."""
    from . import __version__

    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise ValueError(f"names must be a sequence of file names, got {names!r}")
    names = list(names)
    if not names:
        raise ValueError("names must hold at least one file name, got an empty sequence")
    for name in names:
        if (not isinstance(name, str) or not name.endswith(".json") or name in (".json",)
                or "/" in name or "\\" in name or name.startswith(".")):
            raise ValueError(f"names must be plain file names ending in .json (no folder part), got {name!r}")
    if url is None:
        url = DATA_URL.format(version=__version__)
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"url must be an http://, https:// or file:// URL (a string), got {url!r}")
    timeout = float(check_positive(timeout, "timeout", allow_array=False))
    if folder is None:
        from .data import cache_dir
        folder = cache_dir("fig3", f"v{__version__}")
    folder = check_path(folder, "folder")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder must be a folder, got the file {str(folder)!r}")
    return names, url, folder, timeout


def fetch_data(names=DATA_FILES, *, url=None, folder=None, timeout=30.0):
    """Fetch the book's Fig. 3 data files for a chapter run outside the repository (Colab).

    In the repository the data files lie beside chapter 7 (``book/data``) and nothing is fetched.
    Elsewhere this copies each of ``names`` from ``url + "/" + name`` into ``folder``, unless the
    folder has it already, and returns the folder and one line that says what it did. A file is
    checked with :func:`load` before it is moved into place (written atomically, so a broken
    download leaves no file behind).

    Parameters
    ----------
    names : sequence of str
        File names (no folder part, ending in ``.json``), at least one; default :data:`DATA_FILES`.
        A name the repository does not hold at that version (HTTP 404: the paper-scale file before
        it is produced) is skipped and named in the message.
    url : str, optional
        The folder to fetch from, an ``http://``, ``https://`` or ``file://`` URL; default
        :data:`DATA_URL` at this package's version (``qmf_lite.__version__``).
    folder : path, optional
        Where the files go; default :func:`qmf_lite.cache_dir` ``("fig3", "v" + version)``.
    timeout : float
        Seconds to wait for each file, finite and > 0.

    Returns
    -------
    folder : pathlib.Path or None
        The folder, when it holds at least one of ``names`` (fetched now or before); else None.
    message : str
        One line: what was fetched or found, or why nothing could be (offline, a bad file).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> src, dst = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
    >>> got, msg = fetch_data(["fig3_x.json"], url=src.as_uri(), folder=dst)
    >>> got is None, msg.startswith("no Fig. 3 data file")
    (True, True)
    """
    names, url, folder, timeout = _fetch_arguments(names, url, folder, timeout)
    folder.mkdir(parents=True, exist_ok=True)
    cached = _usable_copies(names, folder)       # copies fetched before count even when offline now
    fetched, absent, bad = [], [], []
    failure = None
    for name in names:
        if name in cached:
            continue
        outcome = _fetch_one(name, url, folder, timeout)
        if outcome == "fetched":
            fetched.append(name)
        elif outcome == "absent":
            absent.append(name)
        elif outcome == "bad":
            bad.append(name)
        else:
            failure = outcome
            break
    held = fetched + cached
    return (folder if held else None), _fetch_message(url, folder, fetched, cached, absent, bad, failure)


def _usable_copies(names, folder):
    """The names of ``names`` that ``folder`` holds as readable data files; a damaged copy is deleted."""
    cached = []
    for name in names:
        if (folder / name).is_file():
            try:
                _load(folder / name)
                cached.append(name)
            except ValueError:                  # a damaged copy: fetch it again
                (folder / name).unlink()
    return cached


def _fetch_one(name, url, folder, timeout):
    """Fetch ``url/name`` into ``folder``: ``"fetched"``, ``"absent"`` (not there), ``"bad"`` (not a data
    file, discarded) or, when fetching failed, the reason."""
    import urllib.error
    import urllib.request

    from ._cache import atomic_write_bytes

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/{name}", timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        return "absent" if exc.code == 404 else f"HTTP {exc.code} for {name}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError):
            return "absent"                     # (a file:// folder without that file)
        return str(getattr(exc, "reason", exc))
    part = folder / (name + ".download")
    atomic_write_bytes(part, body)
    try:
        _load(part)
    except ValueError:
        part.unlink()
        return "bad"
    part.replace(folder / name)                 # (atomic: the same folder)
    return "fetched"


def _fetch_message(url, folder, fetched, cached, absent, bad, failure):
    """The one line :func:`fetch_data` returns: what was fetched or found, and what not and why."""
    notes = []
    if absent:
        notes.append(f"not in the repository at that version: {', '.join(absent)}")
    if bad:
        notes.append(f"not a Fig. 3 data file, discarded: {', '.join(bad)}")
    if failure is not None:
        notes.append(f"fetching failed ({failure}); offline? run the chapter again once online")
    tail = "; " + "; ".join(notes) if notes else ""
    if fetched:
        msg = f"fetched the Fig. 3 data file(s) {', '.join(fetched)} from {url} into {folder}"
        if cached:
            msg += f" (already there: {', '.join(cached)})"
    elif cached:
        msg = f"using the Fig. 3 data file(s) {', '.join(cached)} fetched before into {folder}"
    else:
        msg = f"no Fig. 3 data file could be fetched from {url}"
    return msg + tail
