"""Speed of qmf_lite.approx: exact evaluation, the conversion, the codec, the shallow sweep.

Run: python benchmarks/bench_approx.py. Targets (2 CPU cores): the exact check of a 1-bit conversion
of a 64-16-10 network with 24-bit weights on 449 float inputs < 3 s; the same on integer inputs
(the int64 path) several times faster; the codec with N = 4096 pieces checked at 2N + 1 points
< 1 s; one precision of the shallow sweep (N = 1024, quantize + two exact sup errors) < 20 ms.
"""
from __future__ import annotations


import numpy as np

from qmf_lite import approx as ap

from _timing import best_of  # benchmarks/ is on sys.path when a benchmark runs as a script



def row(name, seconds, target):
    print(f"{name:62s} {seconds * 1e3:10.1f} ms   target {target * 1e3:8.0f} ms   ({seconds / target:5.2f} of target)")


def main():
    rng = np.random.default_rng(0)
    ws = [rng.integers(-2**23, 2**23, (16, 64)) * 2.0**-23, rng.integers(-2**23, 2**23, (10, 16)) * 2.0**-22]
    bs = [rng.integers(-2**23, 2**23, 16) * 2.0**-23, rng.integers(-2**23, 2**23, 10) * 2.0**-22]
    net = ap.DyadicNet.from_arrays(ws, bs)
    x_float = rng.standard_normal((449, 64)).astype(np.float32).astype(np.float64)   # float32 values, exact
    x_int = rng.integers(0, 17, (449, 64)).astype(np.float64)

    t_build = best_of(lambda: ap.to_low_precision(net, 1))
    low = ap.to_low_precision(net, 1)
    row(f"to_low_precision(b = 1): depth {low.depth}, {low.n_params} params", t_build, 1.0)
    t_obj = best_of(lambda: low.exact_numerators(x_float), repeat=1)
    t_int = best_of(lambda: low.exact_numerators(x_int), repeat=1)
    t_ref = best_of(lambda: net.exact_numerators(x_float))
    row("exact check, 449 float32 inputs (Python integers)", t_obj, 3.0)
    row("exact check, 449 integer inputs (int64 where it fits)", t_int, 1.0)
    print(f"   ratio float/int inputs: {t_obj / t_int:.1f}; source network on float inputs: {t_ref * 1e3:.1f} ms")

    f = ap.lacunary_target()
    cd = ap.codec(f, 64, 32)
    xg = (np.arange(2 * cd.n_pieces + 1) / (2 * cd.n_pieces))[:, None]
    row(f"codec N = {cd.n_pieces}, depth {cd.net.depth}: exact at 2N + 1 points", best_of(lambda: cd.net.exact(xg)), 1.0)

    g = ap.ShallowReLU.interpolant(f, 1024)
    g_pl = g.piecewise_linear()

    def one_precision():
        q = g.quantized(12, "sigma_delta").piecewise_linear()
        ap.sup_error(q, f)
        ap.sup_error(q, g_pl)

    row("shallow sweep, one precision (N = 1024)", best_of(one_precision, repeat=5), 0.020)


if __name__ == "__main__":
    main()
