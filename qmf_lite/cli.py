"""Command line: ``python -m qmf_lite init --levels 16`` or ``python -m qmf_lite init --depth 500``."""
from __future__ import annotations

import argparse
import sys

import numpy as np


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _init(args, out):
    from .tradeoff import levels_for_depth, max_depth, optimal_init

    if args.depth is not None:
        levels, bits = levels_for_depth(args.depth, args.multiple)
        out.write(f"target depth      {args.depth:g} layers (L_max = {args.multiple:g} xi)\n")
        out.write(f"fewest levels     N = {levels} ({bits} bit{'s' if bits > 1 else ''}), L_max = {max_depth(levels, args.multiple):.1f}\n")
        if levels > 2:
            out.write(f"with N - 1 = {levels - 1}: L_max = {max_depth(levels - 1, args.multiple):.1f} < {args.depth:g}\n")
        return
    init = optimal_init(args.levels, scale=args.scale, spacing=args.spacing)
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
        out.write(f"L_max = {args.multiple:g} xi      {args.multiple * init.depth_scale:.1f} layers\n")


def main(argv=None, out=None):
    out = out or sys.stdout
    parser = _Parser(prog="qmf_lite", description="Mean-field initialization of quantized networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("init", help="optimal initialization for N levels, or the fewest levels for a depth")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--levels", type=int, help="number of activation levels N >= 2")
    g.add_argument("--depth", type=float, help="target trainable depth (layers) > 0")
    p.add_argument("--scale", type=float, default=1.0, help="output range A > 0 (default 1)")
    p.add_argument("--spacing", type=float, default=None, help="threshold spacing D > 0 (default 2A/(N-1))")
    p.add_argument("--multiple", type=float, default=6.0, help="L_max = multiple * xi (default 6)")
    args = parser.parse_args(argv)
    try:
        _init(args, out)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
