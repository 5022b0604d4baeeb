"""Speed of the torch side: the Fig. 1 simulation and batched training of quantized MLPs.

Run: python benchmarks/bench_training.py [--device cuda]. Prints wall-clock times, network-steps
per second for batched training (many networks per batched matrix product), and the ratio to
training the same networks one at a time.
"""
from __future__ import annotations

import argparse
import time

import torch

import qmf_lite as qmf
from qmf_lite.data import load_digits
from qmf_lite.training import NetSpec, QuantizedMLPBatch, train


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fig1(device, width=1000, n_points=256, depth=100):
    init = qmf.optimal_init(16)
    _, h0 = qmf.circle_inputs(n_points, width, q0=init.q_star)
    sync(device)
    t = time.perf_counter()
    for off in (-0.2, -0.1, 0.0, 0.1, 0.2):
        qmf.simulate_covariance(init.activation, init.sigma_w + off, 0.0, h0, layers=[0, 10, 30, depth], device=device)
    sync(device)
    return time.perf_counter() - t


def training_rate(device, n_nets, depth, width, steps=20, batch_size=128):
    data = load_digits()
    specs = [NetSpec.optimal(2 + i % 5, seed=i) for i in range(n_nets)]
    model = QuantizedMLPBatch(specs, data.n_features, 10, depth, width, device=device)
    train(model, data, [2], batch_size=batch_size)  # warm-up
    sync(device)
    t = time.perf_counter()
    train(model, data, [steps], batch_size=batch_size)
    sync(device)
    return n_nets * steps / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = qmf.default_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    t = fig1(device)
    print(f"Fig. 1 simulation (N = 16, width 1000, 256 inputs, depth 100, 5 sigma_w): {t:.1f} s  (target 60 s on 2 CPU cores)")
    for depth, width in ((32, 64), (128, 64)) if device.type == "cpu" else ((100, 2048), (250, 2048)):
        one = training_rate(device, 1, depth, width)
        many = training_rate(device, 20, depth, width)
        print(f"training depth {depth:3d}, width {width:4d}: {one:8.1f} net-steps/s alone, {many:8.1f} net-steps/s "
              f"in a batch of 20  (batching x{many / one:.1f})")


if __name__ == "__main__":
    main()
