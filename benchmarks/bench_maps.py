"""Speed of the maps, the trade-off and the torch simulation: prints figures and ratios.

Run: python benchmarks/bench_maps.py. Targets (2 CPU cores): correlation_map over 1e4 values of
c for N = 16 < 50 ms; chi over the same < 10 ms; simulate_correlations at width 1024, depth 50,
16 nets < 10 s; the Fig. 2 data set (qmf.FIG2_LEVELS, 69 values of N) < 0.1 s; chi_max(N) < 10 ms for any N up to
10**9 (the O(1) Euler-Maclaurin path), printed against the O(N) direct sums (maximised by Brent,
as chi_max did for every N before) with the ratio and the relative difference of 1 - chi_max.
"""
from __future__ import annotations

import time

import numpy as np
import torch

import qmf_lite as qmf
from qmf_lite import tradeoff

from _timing import best_of  # benchmarks/ is on sys.path when a benchmark runs as a script


def row(name, seconds, target):
    print(f"{name:58s} {seconds * 1e3:10.2f} ms   target {target * 1e3:8.0f} ms   ({seconds / target:5.2f} of target)")


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    phi = qmf.QuantizedActivation(16)
    c = np.linspace(-1, 1, 10_000)

    def cmap_cold():
        phi._integrals.clear()  # include the Chebyshev fit of the arcsine integral
        qmf.correlation_map(c, phi, 1.0, 0.0)

    row("correlation_map, N = 16, 1e4 values of c (cold)", best_of(cmap_cold, repeat=5), 0.050)
    row("correlation_map, N = 16, 1e4 values of c (fit cached)",
        best_of(lambda: qmf.correlation_map(c, phi, 1.0, 0.0), repeat=5), 0.050)
    row("chi, N = 16, 1e4 values of c", best_of(lambda: qmf.chi(c, phi, 1.0, 0.0), repeat=5), 0.010)

    fig2 = list(qmf.FIG2_LEVELS)

    def fig2_cold():
        tradeoff._chi_max_cached.cache_clear()
        for n in fig2:
            qmf.chi_max(n)

    row(f"chi_max for the Fig. 2 set ({len(fig2)} values of N), cold", best_of(fig2_cold, repeat=5), 0.100)
    row("  the same by the direct sums for every N (as before)",
        best_of(lambda: [tradeoff._chi_max_direct(n) for n in fig2], repeat=5), 0.100)

    def cold(n):
        tradeoff._chi_max_cached.cache_clear()
        return qmf.chi_max(n, complement=True)

    print("chi_max(N), cold: the O(N) direct sums (Brent maximiser, the path below 10 levels and,\n"
          "before, for every N) against the O(1) Euler-Maclaurin path; accuracy as the relative\n"
          "difference of 1 - chi_max from the direct cell sum at the same spacing ('same D') and from\n"
          "the direct maximiser's value ('maximiser'), and of the two optimal spacings")
    print(f"{'N':>12s} {'direct':>12s} {'O(1)':>10s} {'ratio':>7s}  {'1 - chi_max':>22s} {'same D':>8s}"
          f" {'maximiser':>9s} {'D_opt':>8s}")
    for n in (10**3, 10**6, 10**9):
        t_fast = best_of(lambda: cold(n), 5)
        gap, d = cold(n)
        if n <= 10**6:
            t_direct = best_of(lambda: tradeoff._chi_max_direct(n), 3 if n < 10**6 else 1)
            _, gap_direct, d_direct = tradeoff._chi_max_direct(n)
            same_d = tradeoff._quantization_error_scalar(n, d)
            print(f"{n:12d} {t_direct * 1e3:9.2f} ms {t_fast * 1e3:7.2f} ms {t_direct / t_fast:7.0f}  {gap:22.15e}"
                  f" {abs(gap / same_d - 1):8.1e} {abs(gap / gap_direct - 1):9.1e} {abs(d / d_direct - 1):8.1e}")
        else:
            print(f"{n:12d} {'(too slow)':>12s} {t_fast * 1e3:7.2f} ms {'':>7s}  {gap:22.15e}"
                  f" {'2.2e-16*':>8s}")
    print("* at 1e9 against chunked O(N) sums in tests/test_tradeoff.py (about 4 minutes; not rerun here).\n"
          "  The direct maximiser of 1 - S^2/V is noisy for N <= 4096 (its gap up to ~4e-12 too high,\n"
          "  its D_opt up to ~5e-7 off); the O(1) optimum is the root of E[Q (z - Q)] = 0 (~1e-15).")
    for n in (10**3, 10**6, 10**9):
        row(f"chi_max({n:.0e}), O(1) path, cold", best_of(lambda: cold(n), 5), 0.010)
    tradeoff._chi_max_cached.cache_clear()
    t = time.perf_counter()
    qmf.levels_for_depth(1e12)
    row("levels_for_depth(1e12), cold cache", time.perf_counter() - t, 0.050)

    # the published approach for comparison: a float32 grid scan over 2000 spacings
    def grid_scan(n):
        d = np.linspace(0.001, 2.0, 2000, dtype=np.float32)
        j = (np.arange(n - 1) - (n - 2) / 2).astype(np.float32)
        t = d[:, None] * j[None, :]
        s = np.exp(-0.5 * t * t).sum(1) / np.float32(np.sqrt(2 * np.pi))
        from scipy.special import ndtr
        lo = ndtr(t).astype(np.float32)
        up = (1 - lo).astype(np.float32)
        before = np.cumsum(lo, 1) - lo
        v = (up * (lo + 2 * before)).sum(1)
        return float((s * s / v).max())

    t = time.perf_counter()
    chi_scan = grid_scan(1025)
    t_scan = time.perf_counter() - t
    gap_scan, gap = 1 - chi_scan, qmf.chi_max(1025, complement=True)[0]
    print(f"grid scan (2000 spacings, float32) at N = 1025: {t_scan * 1e3:.0f} ms, "
          f"1 - chi off by {abs(gap_scan - gap) / gap:.1%} (ours {gap:.6e}, scan {gap_scan:.6e})")

    t = time.perf_counter()
    qmf.simulate_correlations(phi, 1.0, 0.0, depth=50, width=1024, c0=0.5, n_nets=16, seed=0)
    row("simulate_correlations, width 1024, depth 50, 16 nets", time.perf_counter() - t, 10.0)


if __name__ == "__main__":
    main()
