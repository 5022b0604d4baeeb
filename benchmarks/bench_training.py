"""Speed of the torch side: the Fig. 1 simulation and batched training of quantized MLPs.

Run: python benchmarks/bench_training.py [--device cuda] [--max-memory auto|16GB] [--precision tf32] [--fused]
     [--profile-step] [--width N] [--depths 10,110] [--nets 14] [--steps 20] [--skip-fig1] [--skip-batching]

Prints, for the paper's training setting (layout bgs19, SGD with momentum 0.5, batch 32; width
2048 on a GPU, smaller on a CPU): network-steps per second, the achieved TFLOP/s of the matrix
products next to the device's nominal peak, the weight traffic of one step against the memory
bandwidth (training at batch 32 is bound by reading and updating the weights, not by arithmetic),
and the time the paper profile of ``qmf_lite.fig3`` would take at the measured rate. Networks are
trained in chunks that fit the memory budget, so the benchmark does not run out of memory.
Also: batched against one-at-a-time training, and the Fig. 1 simulation.

``--fused`` trains with ``step="fused"`` (:class:`qmf_lite.FusedSGD`, Triton: a CUDA device, or
``TRITON_INTERPRET=1`` on a CPU, slow) and prints the time per network-layer-step next to the
card's memory-bandwidth floor (:func:`floor_bytes`). ``--profile-step`` prints a per-kernel
profile (torch.profiler) of one training step of the first depth.

The check of the fused step on a GPU (about 3 minutes on an H100; the tests run the kernels
compiled when CUDA is at hand, in the interpreter otherwise)::

    export PYTHONPATH=$PWD
    python -m pytest -q -p no:cacheprovider tests/test_fused.py
    B="python benchmarks/bench_training.py --device cuda --skip-fig1 --skip-batching"
    $B --depths 10,110 --profile-step            # the plain step, for comparison on the same card
    $B --depths 10,110 --fused --profile-step    # the fused step next to the card's floor
    $B --depths 110 --fused --precision tf32
"""
from __future__ import annotations

import argparse
import time

import torch

import qmf_lite as qmf
from qmf_lite import fig3
from qmf_lite.cli import _parse_memory
from qmf_lite.data import load_digits
from qmf_lite.training import NetSpec, QuantizedMLPBatch, memory_budget, train, training_flops, training_memory

#: nominal dense peaks from the vendors' data sheets: fp32, tf32, bf16 (TFLOP/s), memory bandwidth (TB/s)
PEAKS = {"H200": (67, 495, 990, 4.8), "H100 PCIe": (51, 378, 756, 2.0), "H100": (67, 495, 990, 3.35),
         "A100": (19.5, 156, 312, 2.0), "L40S": (91.6, 183, 362, 0.86), "L4": (30, 60, 121, 0.3),
         "V100": (15.7, 15.7, 125, 0.9), "T4": (8.1, 8.1, 65, 0.32)}


def device_peak(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAKS, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return key, PEAKS[key]
    return None


#: elementwise traffic of a network-layer-step in units of 4 b n bytes (one float32 activation tensor):
#: about 6 MB at n = 2048, b = 32, the estimate of issue 19 (staircase, STE gain, biases, dgrad)
ELEMENTWISE_PASSES = 23


def floor_bytes(width, batch_size, fused):
    """Bytes one network-layer-step must move at least (float32, SGD with momentum), and the formula.

    Weights: the forward and the backward (dgrad) each read W; the plain step then writes dW and
    SGD reads p, dW, v and writes p, v (8 passes over 4 n^2 bytes); the fused step never stores
    dW (6 passes: W read twice, p and v read, p and v written). Plus the elementwise traffic,
    ``ELEMENTWISE_PASSES`` tensors of 4 b n bytes."""
    passes = 6 if fused else 8
    formula = (f"floor = ({passes} x 4 n^2 + {ELEMENTWISE_PASSES} x 4 b n) bytes / bandwidth, n = {width}, "
               f"b = {batch_size} ({passes} passes over the weights: W read forward and backward, "
               + ("p, v read and written; dW never stored)" if fused else "dW written, p, dW, v read, p, v written)"))
    return passes * 4 * width ** 2 + ELEMENTWISE_PASSES * 4 * batch_size * width, formula


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


def fake_mnist(n_train=8192, n_test=2048, seed=0):
    """MNIST-shaped random data (784 features, 10 classes): speed does not depend on the pixels."""
    from qmf_lite.data import Dataset

    g = torch.Generator().manual_seed(seed)
    return Dataset("random-784", torch.randn(n_train, 784, generator=g), torch.randint(10, (n_train,), generator=g),
                   torch.randn(n_test, 784, generator=g), torch.randint(10, (n_test,), generator=g), 10)


def training_rate(device, data, n_nets, depth, width, budget, steps=20, precision="fp32", layout="bgs19",
                  batch_size=32, momentum=0.5, step="torch"):
    """Net-steps/s and TFLOP/s of the training steps of one chunk of up to ``n_nets`` networks that fits
    ``budget``: two runs of 5 and 5 + ``steps`` steps, each ending with one evaluation, are timed (the
    fastest of three each) and their difference taken, so that neither the evaluation nor the
    warm-up counts."""
    per_net = training_memory(depth, width, data.n_features, 10, batch_size, layout=layout, momentum=momentum)
    fit = n_nets if budget is None else max(0, min(n_nets, int(0.9 * budget) // per_net))
    if fit == 0:
        return None
    specs = [NetSpec.optimal(3 + i % 14, seed=i) for i in range(fit)]
    model = QuantizedMLPBatch(specs, data.n_features, 10, depth, width, device=device, layout=layout)
    # a small evaluation subset: its cost is the same in both runs and cancels, but on a busy
    # machine a large one adds noise that can exceed the difference
    kw = dict(lr=1e-3, batch_size=batch_size, momentum=momentum, precision=precision, eval_size=256, step=step)
    train(model, data, [2], **kw)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {}
    for _ in range(3):              # the fastest of three, for each length
        for n in (5, 5 + steps):
            sync(device)
            t = time.perf_counter()
            train(model, data, [n], **kw)
            sync(device)
            times[n] = min(times.get(n, float("inf")), time.perf_counter() - t)
    dt = times[5 + steps] - times[5]
    if dt <= 0:
        raise RuntimeError(f"timing noise exceeds {steps} training steps ({times}); rerun on a quieter machine")
    step_flops, _ = training_flops(depth, width, data.n_features, 10, batch_size, layout)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del model
    if device.type == "cuda":   # the next depth's chunk must not meet a fragmented cache
        torch.cuda.empty_cache()
    # layer-equivalents of one step: its FLOPs over those of one n x n layer (6 b n^2), as issue 19 counts
    layers = step_flops / (6 * batch_size * width ** 2)
    return {"nets": fit, "net_steps_per_s": fit * steps / dt, "tflops": fit * steps * step_flops / dt / 1e12,
            "seconds_per_net_layer_step": dt / (fit * steps * depth), "peak": peak, "estimate": fit * per_net,
            "seconds_per_layer_equivalent": dt / (fit * steps * layers), "layer_equivalents": layers}


def profile_step(device, data, depth, width, n_nets, precision="fp32", fused=False, batch_size=32, momentum=0.5):
    """Print a per-kernel profile (torch.profiler) of one training step of ``n_nets`` networks, after
    three warm-up steps (which also compile the Triton kernel)."""
    from qmf_lite.training import _precision, _sgd

    specs = [NetSpec.optimal(3 + i % 14, seed=i) for i in range(n_nets)]
    model = QuantizedMLPBatch(specs, data.n_features, 10, depth, width, device=device, layout="bgs19")
    if fused:
        from qmf_lite.fused import _for_train
        opt = _for_train(model, 1e-3, momentum, precision)
    else:
        opt = _sgd(model.parameters(), 1e-3, momentum, device)
    forward = opt.forward if fused else model
    idx = torch.arange(n_nets * batch_size).view(n_nets, batch_size) % len(data.y_train)
    x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)

    def one():
        opt.zero_grad(set_to_none=True)
        logits = forward(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="none")
        loss.view(n_nets, batch_size).mean(1).sum().backward()
        opt.step()

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with _precision(precision, device.type):
        for _ in range(3):
            one()
        sync(device)
        with torch.profiler.profile(activities=activities) as prof:
            one()
            sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\none training step ({'fused' if fused else 'torch'} SGD, {precision}), {n_nets} nets, depth {depth}, "
          f"width {width}, batch {batch_size}, sorted by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-memory", default="auto", help="auto, none, or bytes such as 16GB")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    parser.add_argument("--skip-fig1", action="store_true")
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument("--fused", action="store_true", help="train with step='fused' (qmf_lite.FusedSGD, Triton)")
    parser.add_argument("--profile-step", action="store_true", help="per-kernel profile of one step")
    parser.add_argument("--width", type=int, default=None, help="default 2048 on a GPU, 256 on a CPU")
    parser.add_argument("--depths", default=None, help="comma-separated; default 10,110,285 (GPU), 10,40 (CPU)")
    parser.add_argument("--nets", type=int, default=14, help="networks per chunk at most")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (the difference of two runs)")
    args = parser.parse_args()
    device = qmf.default_device(args.device)
    budget = memory_budget(_parse_memory(args.max_memory), device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}, threads {torch.get_num_threads()}, precision {args.precision}, "
          f"memory budget {'none' if budget is None else f'{budget / 2**30:.1f} GiB'}")
    peak = device_peak(device)
    if peak:
        print(f"nominal peak ({peak[0]}): fp32 {peak[1][0]} TFLOP/s, tf32 {peak[1][1]}, bf16 {peak[1][2]}; "
              f"memory {peak[1][3]} TB/s")
    else:
        print("nominal peak of this device: unknown")
    if not args.skip_fig1:
        t = fig1(device)
        print(f"Fig. 1 simulation (N = 16, width 1000, 256 inputs, depth 100, 5 sigma_w): {t:.1f} s")

    data = fake_mnist()
    gpu = device.type == "cuda"
    width = args.width or (2048 if gpu else 256)
    depths = [int(d) for d in args.depths.split(",")] if args.depths else ([10, 110, 285] if gpu else [10, 40])
    cases = [(d, args.nets) for d in depths]
    step = "fused" if args.fused else "torch"
    if args.profile_step:
        profile_step(device, data, depths[0], width, min(args.nets, 4), args.precision, args.fused)
    nbytes, formula = floor_bytes(width, 32, args.fused)
    print(f"\ntraining as in the paper profile (bgs19 layout, momentum 0.5, batch 32, 784 inputs), width {width}, "
          f"{step} SGD step:\n  {formula}" + (f" = {nbytes / 1e6:.1f} MB / {peak[1][3]} TB/s = "
                                              f"{nbytes / peak[1][3] / 1e6:.1f} us on this card" if peak else
                                              f" = {nbytes / 1e6:.1f} MB (bandwidth of this device unknown)"))
    per_layer = []
    for depth, n in cases:
        r = training_rate(device, data, n, depth, width, budget, steps=args.steps, precision=args.precision,
                          step=step)
        if r is None:
            print(f"  depth {depth:3d}: one network does not fit the memory budget")
            continue
        per_layer.append((depth, r["seconds_per_net_layer_step"]))
        # weight traffic of one step: forward and backward read W, backward writes dW, SGD with
        # momentum reads W, dW, v and writes W, v: 8 passes over 4-byte weights (fused: 6, no dW)
        traffic = (6 if args.fused else 8) * 4 * (depth - 2) * width * width * r["nets"]
        line = (f"  depth {depth:3d}, {r['nets']:2d} nets per chunk: {r['net_steps_per_s']:8.1f} net-steps/s, "
                f"{r['tflops']:.3g} TFLOP/s")
        if peak:
            line += f" ({100 * r['tflops'] / peak[1][('fp32', 'tf32', 'bf16').index(args.precision)]:.0f}% of peak)"
            bw = traffic * r["net_steps_per_s"] / r["nets"] / 1e12
            line += f", weight traffic {bw:.2f} TB/s ({100 * bw / peak[1][3]:.0f}% of bandwidth)"
        if r["peak"]:
            line += f", peak memory {r['peak'] / 2**30:.2f} GiB (estimate {r['estimate'] / 2**30:.2f})"
        us = 1e6 * r["seconds_per_layer_equivalent"]
        line += f"\n    {us:.1f} us per network-layer-step ({r['layer_equivalents']:.1f} layer-equivalents per step)"
        if peak:
            floor_us = nbytes / peak[1][3] / 1e6
            plain_us = floor_bytes(width, 32, False)[0] / peak[1][3] / 1e6
            line += (f"; floor {floor_us:.1f} us: {us / floor_us:.2f}x the floor, {us / plain_us:.2f}x the plain "
                     f"step's floor of {plain_us:.1f} us (issue 19's goal in fp32: <= 1.5x that, "
                     f"{1.5 * plain_us:.0f} us)")
        print(line)

    cfg = fig3.profile_config("paper")
    if per_layer:
        sec = per_layer[-1][1] * (2048 / width) ** 2   # time per net-layer-step scales with width^2
        net_layer_steps = len(cfg["levels"]) * len(cfg["seeds"]) * sum(cfg["depths"]) * max(cfg["steps"])
        minutes = net_layer_steps * sec / 60
        when = f"{minutes:.0f} min" if minutes < 600 else f"{minutes / 60:.0f} h"
        print(f"\npaper profile: {net_layer_steps:.3g} net-layer-steps; at the rate measured at depth "
              f"{per_layer[-1][0]}{'' if gpu else ' (scaled from width %d to 2048)' % width}: about "
              f"{when} of training on this device (plus evaluation)")

    if args.skip_batching:
        return
    print("\nbatching (book layout, SGD, batch 128, digits):")
    digits = load_digits()
    for depth, w in ((32, 64), (128, 64)) if not gpu else ((100, 2048),):
        rates = []
        for n in (1, 20):
            specs = [NetSpec.optimal(2 + i % 5, seed=i) for i in range(n)]
            per_net = training_memory(depth, w, digits.n_features, 10, 128)
            if budget is not None and n * per_net > 0.9 * budget:
                n = max(1, int(0.9 * budget) // per_net)
                specs = specs[:n]
            model = QuantizedMLPBatch(specs, digits.n_features, 10, depth, w, device=device)
            train(model, digits, [2])
            sync(device)
            t = time.perf_counter()
            train(model, digits, [20])
            sync(device)
            rates.append((len(specs), len(specs) * 20 / (time.perf_counter() - t)))
        print(f"  depth {depth:3d}, width {w:4d}: {rates[0][1]:8.1f} net-steps/s alone, {rates[1][1]:8.1f} net-steps/s "
              f"in a batch of {rates[1][0]}  (batching x{rates[1][1] / rates[0][1]:.1f})")


if __name__ == "__main__":
    main()
