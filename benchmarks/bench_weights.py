"""Speed of qmf_lite.weights: the stationary solve, the chain simulations, the torch optimizer.

Run: python benchmarks/bench_weights.py. Each line prints a time and its ratio to a baseline run
in the same process. Targets (2 CPU cores): the stationary distribution of a 20001-point SR chain
< 0.2 s (a dense eigensolve of a 1001-point chain is the baseline); run_rule with 4000 chains
< 0.5 ms per step; QuantizedSGD.step within 5x of torch.optim.SGD.step on a 64-256-10 MLP.
"""
from __future__ import annotations


import numpy as np
import torch

from qmf_lite import weights as qw

from _timing import best_of  # benchmarks/ is on sys.path when a benchmark runs as a script



def row(name, seconds, baseline_name, baseline):
    print(f"{name:55s} {seconds * 1e3:10.2f} ms   {seconds / baseline:7.3f} x {baseline_name}")


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    grad = lambda w: w - 0.37  # noqa: E731

    # --- the stationary distribution: sparse banded solve against a dense eigensolve ---------------
    small = qw.Grid.symmetric(4e-3, 500)                   # 1001 points
    big = qw.Grid.symmetric(2e-4, 10_000)                  # 20001 points
    P_small = qw.sr_transition_matrix(small, grad, qw.neighbour_lr(small, grad))
    P_big = qw.sr_transition_matrix(big, grad, qw.neighbour_lr(big, grad))

    def dense_eig():
        vals, vecs = np.linalg.eig(P_small.toarray().T)
        v = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
        return v / v.sum()

    t_dense = best_of(dense_eig, 1)
    row("dense eig, 1001 points (baseline)", t_dense, "dense", t_dense)
    row("stationary_distribution, 1001 points", best_of(lambda: qw.stationary_distribution(P_small)), "dense", t_dense)
    row("stationary_distribution, 20001 points", best_of(lambda: qw.stationary_distribution(P_big)), "dense", t_dense)
    row("sr_transition_matrix, 20001 points",
        best_of(lambda: qw.sr_transition_matrix(big, grad, qw.neighbour_lr(big, grad))), "dense", t_dense)

    # --- vectorised chains ------------------------------------------------------------------
    grid = qw.Grid.symmetric(1 / 16, 32)
    noisy = lambda w, rng: (w - 0.37) + (2.0 * (rng.random(w.shape) < 0.5) - 1.0)  # noqa: E731
    w0 = np.zeros(4000)
    steps = 500
    t_sgd = best_of(lambda: qw.run_rule("sgd", noisy, w0, lr=0.01, steps=steps)) / steps
    row("run_rule sgd, 4000 chains, per step (baseline)", t_sgd, "sgd", t_sgd)
    for rule in ("r", "sr", "bc"):
        t = best_of(lambda: qw.run_rule(rule, noisy, w0, lr=0.01, steps=steps, grid=grid)) / steps
        row(f"run_rule {rule}, 4000 chains, per step", t, "sgd", t_sgd)

    # --- the torch optimizer ----------------------------------------------------------------
    x = torch.randn(32, 64)
    y = torch.randint(0, 10, (32,))

    def steps_with(make_opt, n=200):
        model = qw.binary_mlp((64, 256, 10), seed=0)
        opt = make_opt(model)

        def run():
            for _ in range(n):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        return best_of(run) / n

    t_torch = steps_with(lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    row("torch.optim.SGD, forward + backward + step (baseline)", t_torch, "torch SGD", t_torch)
    for rule in ("sgd", "r", "sr", "bc"):
        t = steps_with(lambda m: qw.QuantizedSGD(qw.weight_groups(m, rule, 0.1), lr=0.1, seed=0)
                       if rule != "sgd" else qw.QuantizedSGD(m.parameters(), lr=0.1))
        row(f"QuantizedSGD {rule}, forward + backward + step", t, "torch SGD", t_torch)


if __name__ == "__main__":
    main()
