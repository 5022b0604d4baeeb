"""Speed of post-training quantization (qmf_lite.ptq): prints timings and ratios to a plain matmul.

Run: python benchmarks/bench_ptq.py [--quick] [--cuda]. Target (2 CPU cores): GPFQ on one 2048 x 2048 layer
with m = 128 calibration samples in under 2 s. Also printed: float64 against float32, the block size,
one thread against two, the direct recursion (rank-1 updates of the error, as the authors' code
writes it) for comparison, SPFQ and the torch path, and the time against N at fixed m, whose slope
against the number of weights N^2 should be 1 (linear cost).

Every figure is the best of a few repeats; on shared cores timings are inflated and noisy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from qmf_lite import ptq

from _timing import best_of  # benchmarks/ is on sys.path when a benchmark runs as a script



def direct_recursion(W, X, alphabet):
    """GPFQ with a rank-1 update of the (N_out, m) error per input index: the recursion as written."""
    n_out, n_in = W.shape
    U = np.zeros((n_out, X.shape[0]))
    Q = np.empty_like(W)
    Wc, Xc = np.asfortranarray(W), np.asfortranarray(X)
    norms = np.einsum("ij,ij->j", X, X)
    for t in range(n_in):
        U += np.outer(Wc[:, t], Xc[:, t])
        k = np.clip(np.floor(U @ Xc[:, t] / (norms[t] * alphabet.step) + 0.5), -alphabet.max_index, alphabet.max_index)
        Q[:, t] = alphabet.step * k
        U -= np.outer(Q[:, t], Xc[:, t])
    return Q


def cuda_rows(W, X, a, ref, t_mm, repeat):
    """The torch path on the GPU: the same indices as numpy in float64, and its speed."""
    dev = torch.device("cuda")
    Wc, Xc = torch.from_numpy(W).to(dev), torch.from_numpy(X).to(dev)

    def run(dtype):
        out = ptq.quantize_layer(Wc.to(dtype), Xc.to(dtype), alphabet=a, dtype=dtype)
        torch.cuda.synchronize()
        return out

    r = run(torch.float64)
    print(f"    GPU float64 indices equal to numpy's: {torch.equal(r.index.cpu(), torch.from_numpy(ref.index))}")
    for dtype in (torch.float64, torch.float32):
        run(dtype)  # warm-up
        row(f"GPFQ, torch path on {torch.cuda.get_device_name()} ({str(dtype)[6:]})", best_of(lambda: run(dtype), repeat),
            t_mm)
    s1 = ptq.quantize_layer(Wc, Xc, alphabet=a, method="spfq", seed=3)
    s2 = ptq.quantize_layer(Wc, Xc, alphabet=a, method="spfq", seed=3, block=16)
    print(f"    GPU SPFQ reproducible across block sizes: {torch.equal(s1.index, s2.index)}")


def row(name, seconds, matmul, target=None):
    extra = f"   target {target:5.2f} s ({seconds / target:4.2f} of it)" if target else ""
    print(f"{name:62s} {seconds:8.3f} s   {seconds / matmul:7.1f} x matmul{extra}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repeat, N up to 2048 in the scaling sweep")
    parser.add_argument("--cuda", action="store_true", help="also run the torch path on the GPU (same weights, timings)")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    print(f"numpy {np.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    n, m = 2048, 128
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    X = rng.standard_normal((m, n))
    a = ptq.alphabet_for(W, 4)
    t_mm = best_of(lambda: X @ W.T, 10)
    print(f"plain matmul X W^T, ({m} x {n}) by ({n} x {n}), float64: {t_mm * 1e3:.2f} ms (the unit below)\n")

    with ptq.cpu_threads(1):   # one CPU thread for the BLAS and torch: the setting of the rows below
        ref = ptq.quantize_layer(W, X, alphabet=a)
        row("GPFQ 2048 x 2048, m = 128, float64 (one thread)", best_of(lambda: ptq.quantize_layer(W, X, alphabet=a), repeat),
            t_mm, 2.0)
        row("GPFQ, float32", best_of(lambda: ptq.quantize_layer(W, X, alphabet=a, dtype=np.float32), repeat), t_mm, 2.0)
        r32 = ptq.quantize_layer(W, X, alphabet=a, dtype=np.float32)
        print(f"    float32 vs float64: {np.mean(r32.index != ref.index):.2e} of the indices differ, relative error "
              f"{r32.relative_error:.6e} vs {ref.relative_error:.6e}")
        for block in (16, 32, 128, 256):
            row(f"GPFQ, block = {block} (default 64)",
                best_of(lambda: ptq.quantize_layer(W, X, alphabet=a, block=block), repeat), t_mm)
        row("SPFQ, float64", best_of(lambda: ptq.quantize_layer(W, X, alphabet=a, method="spfq", seed=0), repeat), t_mm)
        Wt, Xt = torch.from_numpy(W), torch.from_numpy(X)
        row("GPFQ, torch path (CPU, float64)", best_of(lambda: ptq.quantize_layer(Wt, Xt, alphabet=a), repeat), t_mm)
        row("GPFQ, torch path (CPU, float32)",
            best_of(lambda: ptq.quantize_layer(Wt.float(), Xt.float(), alphabet=a, dtype=torch.float32), repeat), t_mm)
    row("GPFQ, CPU threads left as they are (no cpu_threads around the call, the default)",
        best_of(lambda: ptq.quantize_layer(W, X, alphabet=a), repeat), t_mm)

    if args.cuda:
        cuda_rows(W, X, a, ref, t_mm, repeat)

    t = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        q_direct = direct_recursion(W, X, a)
    t_direct = time.perf_counter() - t
    row("direct recursion, rank-1 updates of U (one run, 1 thread)", t_direct, t_mm)
    print(f"    same weights as the blocked recursion: {np.array_equal(q_direct, ref.weight)}")

    print("\ntime against N at m = 128 (GPFQ, N x N layers, float64): linear in the number of weights N^2 once")
    print("the per-step python overhead (a constant per input index, so ~N) is amortised")
    widths = [256, 512, 1024, 2048] + ([] if args.quick else [4096])
    times = []
    for w in widths:
        Ww = rng.standard_normal((w, w)) / np.sqrt(w)
        Xw = rng.standard_normal((m, w))
        aw = ptq.alphabet_for(Ww, 4)
        t_w = best_of(lambda: ptq.quantize_layer(Ww, Xw, alphabet=aw), repeat)
        t_mw = best_of(lambda: Xw @ Ww.T, 5)
        times.append(t_w)
        print(f"  N = {w:5d}: {t_w:8.3f} s  = {t_w / w**2 * 1e9:6.1f} ns per weight, {t_w / w * 1e6:7.1f} us per input "
              f"index  ({t_w / t_mw:6.1f} x matmul)")
    n2 = np.array(widths, float) ** 2
    big = np.array(widths) >= 1024
    print(f"  fitted exponent of time against N^2: {np.polyfit(np.log(n2), np.log(times), 1)[0]:.2f} over all N, "
          f"{np.polyfit(np.log(n2[big]), np.log(np.array(times)[big]), 1)[0]:.2f} for N >= 1024")


if __name__ == "__main__":
    main()
