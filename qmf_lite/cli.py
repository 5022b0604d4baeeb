"""Command line.

``python -m qmf_lite init --levels 16`` or ``python -m qmf_lite init --depth 500``: the optimal
initialization, or the fewest levels for a depth.

``python -m qmf_lite fig3 --profile paper``: run the experiment of the paper's Fig. 3 (on a GPU
when there is one) and write its data file (default ``book/data/fig3_paper.json``, relative to
the current folder: run it from the repository root). ``--mnist DIR`` reads MNIST from a folder
(default ``$QMF_LITE_CACHE/mnist``); ``--deadline SECONDS`` stops before a chunk that would end
after that many seconds from the start and writes what it has; ``--bundle FILE`` carries the
finished networks between machines; ``--shard I/K`` runs the I-th of K shares;
``--merge FILE...`` puts bundles together and writes the data file without training.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time

import numpy as np


#: the clock of ``--deadline`` (a seam for the tests)
_clock = time.monotonic


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        # "argument --x: --x must be ..." (a flag's own check names the flag): say it once
        message = re.sub(r"^argument (--[\w-]+): (?=\1 )", "", message)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _init(args, out):
    from .tradeoff import levels_for_depth, max_depth, optimal_init

    if args.depth is not None:
        if args.scale != 1.0 or args.spacing is not None:    # levels_for_depth assumes the optimal spacing
            raise ValueError("--scale and --spacing apply to --levels only: --depth finds the fewest levels at "
                             "their optimal initialization")
        levels, bits = levels_for_depth(args.depth, args.multiple)
        out.write(f"target depth      {args.depth:g} layers (L_max = {args.multiple:g} xi)\n")
        out.write(f"fewest levels     N = {levels} ({bits} bit{'s' if bits > 1 else ''}), L_max = {max_depth(levels, args.multiple):.1f}\n")
        if levels > 2:
            out.write(f"with N - 1 = {levels - 1}: L_max = {max_depth(levels - 1, args.multiple):.1f} < {args.depth:g}\n")
        return
    init = optimal_init(args.levels, scale=args.scale, spacing=args.spacing)
    if not 0 < args.multiple * init.depth_scale < float("inf"):   # checked before anything is printed
        raise ValueError(f"--multiple must be > 0 and keep L_max = multiple * xi finite (xi = {init.depth_scale:.4g}), "
                         f"got {args.multiple!r}")
    act = init.activation
    with np.printoptions(precision=6, suppress=True, linewidth=88, threshold=40):
        bits = init.bits
        out.write(f"levels            N = {init.levels} ({bits} bit{'s' if bits > 1 else ''})\n")
        out.write(f"sigma_w           {init.sigma_w:.6f}\n")
        out.write(f"sigma_b           {init.sigma_b:.1f}\n")
        out.write(f"scale             A = {act.scale:g}\n")
        out.write(f"spacing           D = {act.spacing:.6f} (normalised D/sqrt(q*) = {init.normalized_spacing:.6f})\n")
        out.write(f"q*                {init.q_star:.6f}\n")
        out.write(f"thresholds        {act.thresholds}\n")
        out.write(f"chi               {init.chi:.6f} (1 - chi = {1 - init.chi:.6g})\n")
        out.write(f"xi                {init.depth_scale:.3f} layers\n")
        label = f"L_max = {args.multiple:g} xi"
        out.write(f"{label:<17} {args.multiple * init.depth_scale:.1f} layers\n")      # in the column above


def _parse_memory(text):
    """``auto``, ``none``, a number of bytes, or a number with a unit (``16GB``, ``512MiB``)."""
    text = text.strip()
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    low = text.lower().rstrip("b")
    for suffix in sorted(units, key=len, reverse=True):
        if low.endswith(suffix):
            return int(float(low[:-len(suffix)]) * units[suffix])
    return int(float(low))


def _memory_flag(text):
    """:func:`_parse_memory` for argparse: a clear error for what it cannot read."""
    try:
        value = _parse_memory(text)
    except (ValueError, OverflowError):     # not a number, or one beyond float64 (inf, 1e400)
        value = float("nan")
    if value is None or value == "auto" or 0 < value < float("inf"):
        return text
    raise argparse.ArgumentTypeError(f"--max-memory must be auto, none, or a number of bytes > 0 such as 16GB, "
                                     f"got {text!r}")


def _device_flag(text):
    """A device name that torch reads (``cpu``, ``cuda``, ``cuda:1``, ...); whether it is present is
    checked later, by :func:`qmf_lite.default_device`."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"--device must be a device name such as cpu, cuda or cuda:1, "
                                         f"got {text!r}") from None
    return text


def _shard(text):
    """``I/K`` with 1 <= I <= K: the I-th of K shares."""
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be I/K (integers, 1 <= I <= K), got {text!r}") from None
    if not 1 <= i <= k <= 10**4:
        raise argparse.ArgumentTypeError(f"--shard must be I/K with 1 <= I <= K <= 10000, got {text!r}")
    return i, k


def _seconds(text):
    """A number of seconds in [0, 10^9]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1e9:
        raise argparse.ArgumentTypeError(f"--deadline must be a number of seconds in [0, 1e9], got {text!r}")
    return value


def _fig3(args, out, started, argv):
    from . import fig3

    config = fig3.profile_config(args.profile)
    for name in ("width", "levels", "depths", "steps", "seeds", "dataset", "precision"):
        value = getattr(args, name)
        if value is not None:
            config[name] = value
    if args.dataset == "digits":
        config["normalize"] = "feature"
    target = args.out or fig3.default_data_file(args.profile, config)
    max_memory = _parse_memory(args.max_memory)
    if not args.merge:   # every setting checked before MNIST is read (or downloaded)
        fig3._config_grid_arguments(fig3._check_config(config), device=args.device, max_memory=max_memory,
                                    cache=not args.no_cache, progress=False, data=None, deadline=None,
                                    bundle=args.bundle, shard=args.shard, update=args.update)
    mnist = args.mnist
    if mnist is not None and not os.path.isdir(mnist):
        raise ValueError(f"--mnist must name an existing folder of the MNIST files, got {mnist!r}")
    out.write(f"fig3: profile {args.profile}, config hash {fig3.config_hash(config)}, writing {target}\n")
    if args.merge:
        path, grid, meta = fig3.merge(args.merge, args.profile, target, config=config, bundle=args.bundle)
        out.write(f"merged {len(args.merge)} bundle(s): {grid.n_nets} networks, {len(grid.missing)} missing\n")
    else:
        if config["dataset"] == "mnist":
            from .data import load_mnist

            data = load_mnist(mnist, download=mnist is None, normalize=config["normalize"], progress=not args.quiet)
        else:
            data = fig3._load_data(config, not args.quiet)
        from . import training  # noqa: F401 - torch is imported before the deadline's clock is read
        deadline = None
        if args.deadline is not None:
            deadline = max(0.0, args.deadline - (_clock() - started))
        path, grid, meta = fig3.produce(args.profile, target, config=config, device=args.device,
                                        max_memory=max_memory, cache=not args.no_cache,
                                        progress=not args.quiet, data=data, deadline=deadline, bundle=args.bundle,
                                        shard=args.shard, update=args.update)
        out.write(f"{grid.summary()}\n")
        tf = meta["tflops_per_second"]
        peak = meta["peak_memory_bytes"]
        out.write(f"device {meta['device']}, wall time {meta['wall_seconds']:.1f} s"
                  + (f", peak memory {peak / 2**30:.2f} GiB" if peak else "")
                  + (f", {tf:.2f} TFLOP/s in training" if tf else "") + "\n")
    if grid.rows:
        b = fig3.boundary(grid)
        out.write(f"after {max(config['steps'])} steps:   N      xi   L_1/2  L_1/2/xi\n")
        for n, xi, lh, r in zip(b["levels"], b["xi"], b["l_half"], b["ratio"]):
            out.write(f"                    {n:3d} {xi:7.2f} {lh:7.1f} {r:8.2f}\n")
    out.write(f"wrote {path}" + (f" and the bundle {args.bundle}" if args.bundle else "") + "\n")
    if grid.missing and not args.merge:
        out.write(f"partial: {len(grid.missing)} networks of the grid are missing"
                  + (" (other shares)" if args.shard else "") + "; continue with: python -m qmf_lite "
                  + shlex.join(argv) + "\n")


#: arguments of the package that a command-line flag of another name sets
_FLAG_OF = {"bundles": "merge"}


def _in_flags(message, dests):
    """``message`` of a ``ValueError`` from the package, in the words of the command line: an argument
    that is one of the command's flags (``dests``) is named as the flag, ``steps must ...`` as
    ``--steps must ...`` and ``update='fused'`` as ``--update fused``."""
    flag = (lambda name: "--" + _FLAG_OF.get(name, name).replace("_", "-"))
    head = re.match(r"(\w+)(?: '([^']*)')?(?= )", message)
    if head and _FLAG_OF.get(head.group(1), head.group(1)) in dests:
        message = flag(head.group(1)) + ("" if head.group(2) is None else f" {head.group(2)}") + message[head.end():]
    return re.sub(r"\b(\w+)='([^']*)'",
                  lambda m: f"{flag(m.group(1))} {m.group(2)}" if m.group(1) in dests else m.group(0), message)


def main(argv=None, out=None):
    started = _clock()
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="qmf_lite", description="Mean-field initialization of quantized networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("init", help="optimal initialization for N levels, or the fewest levels for a depth")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--levels", type=int, help="number of activation levels N >= 2")
    g.add_argument("--depth", type=float, help="target trainable depth (layers) > 0")
    p.add_argument("--scale", type=float, default=1.0, help="output range A > 0 (default 1)")
    p.add_argument("--spacing", type=float, default=None, help="threshold spacing D > 0 (default 2A/(N-1))")
    p.add_argument("--multiple", type=float, default=6.0, help="L_max = multiple * xi (default 6)")
    f = sub.add_parser("fig3", help="train the grid of the paper's Fig. 3 and write its data file")
    f.add_argument("--profile", choices=("fast", "paper"), default="paper", help="settings (default: paper)")
    f.add_argument("--out", default=None, help="data file to write (default book/data/fig3_<profile>.json for a "
                                               "profile's own settings, fig3_<profile>_<config hash>.json otherwise)")
    f.add_argument("--device", type=_device_flag, default=None, help="torch device (default: cuda when available)")
    f.add_argument("--max-memory", type=_memory_flag, default="auto", help="memory budget: auto (free device memory), none, or bytes "
                                                        "such as 16GB (default auto)")
    f.add_argument("--precision", choices=("fp32", "tf32", "bf16", "tf32x3"), default=None,
                   help="matmul precision (changes the configuration and its hash); tf32x3 needs --update fused")
    f.add_argument("--dataset", choices=("mnist", "digits"), default=None, help="override the profile's data set")
    f.add_argument("--update", choices=("torch", "fused"), default="torch",
                   help="SGD update: torch.optim.SGD (default) or the fused Triton update (qmf_lite.FusedSGD; "
                        "part of each network's cache key)")
    for name, typ in (("width", int), ("levels", int), ("depths", int), ("steps", int), ("seeds", int)):
        f.add_argument(f"--{name}", type=typ, nargs=None if name == "width" else "+", default=None,
                       help=f"override the profile's {name} (changes the configuration and its hash)")
    f.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    f.add_argument("--mnist", default=None, metavar="DIR",
                   help="an existing folder of the four MNIST files (.gz or uncompressed), which are never "
                        "downloaded (default $QMF_LITE_CACHE/mnist, downloaded there once if missing)")
    f.add_argument("--deadline", type=_seconds, default=None, metavar="SECONDS",
                   help="stop before a chunk that would end later than this many seconds after the start, and "
                        "write the data file with what is done")
    f.add_argument("--bundle", default=None, metavar="FILE",
                   help="restore finished networks from FILE at the start, rewrite it after every chunk")
    f.add_argument("--shard", type=_shard, default=None, metavar="I/K", help="run only the I-th of K shares")
    f.add_argument("--merge", nargs="+", default=None, metavar="BUNDLE",
                   help="merge these bundles (into --bundle if given) and write the data file; trains nothing")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.command == "fig3":
            _fig3(args, out, started, argv)
            return 0
        _init(args, out)
    except (ValueError, OSError) as exc:   # bad input, or MNIST cannot be downloaded
        dests = {a.dest for a in (f if args.command == "fig3" else p)._actions}
        parser.error(_in_flags(str(exc), dests).replace("\n", "; "))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
