"""Speed of the torch side: the Fig. 1 simulation and batched training of quantized MLPs.

Run: python benchmarks/bench_training.py [--device cuda] [--max-memory auto|16GB] [--precision tf32] [--fused]
     [--profile-step] [--compare] [--accuracy] [--mnist DIR] [--width N] [--depths 10,110] [--nets 14]
     [--steps 20] [--skip-fig1] [--skip-batching]

Prints, for the paper's training setting (layout bgs19, SGD with momentum 0.5, batch 32; width
2048 on a GPU, smaller on a CPU): network-steps per second, the achieved TFLOP/s of the matrix
products next to the device's nominal peak, the weight traffic of one step against the memory
bandwidth (training at batch 32 is bound by reading and updating the weights, not by arithmetic),
and the time the paper profile of ``qmf_lite.fig3`` would take at the measured rate. Networks are
trained in chunks that fit the memory budget, so the benchmark does not run out of memory.
Also: batched against one-at-a-time training, and the Fig. 1 simulation.

``--fused`` trains with ``update="fused"`` (:class:`qmf_lite.FusedSGD`, Triton: a CUDA device, or
``TRITON_INTERPRET=1`` on a CPU, slow) and prints the time per network-layer-step next to the
card's memory-bandwidth floor (:func:`floor_bytes`); ``--precision tf32x3`` (with ``--fused``)
also runs the forward and backward products in Triton, as three TF32 products each.
``--profile-step`` prints a per-kernel profile (torch.profiler) of one training step of the
first depth. ``--compare`` measures every update and precision (:data:`VARIANTS`) in this one
process and prints each against the plain fp32 step and the floor. ``--accuracy`` trains a few
cells of Fig. 3 (:data:`ACCURACY_CELLS`, width 2048, the paper's settings; MNIST with ``--mnist``,
else the digits) once per variant, from the same draws and data order, and prints each cell's
test accuracy next to the plain fp32 step's: what TF32 and 3xTF32 change in the numbers.

The check of the fused step on a GPU is ``benchmarks/gpu_check.sh`` (the tests with the kernels
compiled, then ``--compare``, ``--profile-step`` and ``--accuracy``; a few minutes on an H100).
"""
from __future__ import annotations

import argparse
import time

import torch

import qmf_lite as qmf
from qmf_lite import fig3
from qmf_lite.cli import _device_flag, _memory_flag, _parse_memory, _Parser
from qmf_lite.data import load_digits
from qmf_lite.training import NetSpec, QuantizedMLPBatch, memory_budget, train, training_flops, training_memory

#: nominal dense peaks from the vendors' data sheets: fp32, tf32, bf16 (TFLOP/s), memory bandwidth (TB/s)
PEAKS = {"H200": (67, 495, 990, 4.8), "H100 PCIe": (51, 378, 756, 2.0), "H100": (67, 495, 990, 3.35),
         "A100": (19.5, 156, 312, 2.0), "L40S": (91.6, 183, 362, 0.86), "L4": (30, 60, 121, 0.3),
         "V100": (15.7, 15.7, 125, 0.9), "T4": (8.1, 8.1, 65, 0.32)}


#: (update, precision) pairs that ``--compare`` and ``--accuracy`` measure, the plain fp32 step first
VARIANTS = (("torch", "fp32"), ("fused", "fp32"), ("fused", "tf32x3"), ("torch", "tf32"), ("fused", "tf32"))
#: Fig. 3 cells (levels, depth) that ``--accuracy`` trains, at the paper's settings, for 400 steps
ACCURACY_CELLS = ((3, 10), (3, 60), (16, 10), (16, 60), (16, 110))


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
                  batch_size=32, momentum=0.5, update="torch"):
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
    kw = dict(lr=1e-3, batch_size=batch_size, momentum=momentum, precision=precision, eval_size=256, update=update)
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
        opt = qmf.FusedSGD(model, 1e-3, momentum, precision)
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


def device_name(device):
    return f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def measure(device, data, width, depths, args, budget, peak, update, precision):
    """Print the training rate of ``update`` at ``precision`` at each depth next to the floor; returns
    ``[(depth, seconds per layer-equivalent, seconds per network-layer-step), ...]``."""
    fused = update == "fused"
    nbytes, formula = floor_bytes(width, 32, fused)
    print(f"\ntraining as in the paper profile (bgs19 layout, momentum 0.5, batch 32, 784 inputs), width {width}, "
          f"{update} SGD step, {precision}:\n  {formula}" + (
              f" = {nbytes / 1e6:.1f} MB / {peak[1][3]} TB/s = {nbytes / peak[1][3] / 1e6:.1f} us on this card"
              if peak else f" = {nbytes / 1e6:.1f} MB (bandwidth of this device unknown)"))
    per_layer = []
    for depth in depths:
        r = training_rate(device, data, args.nets, depth, width, budget, steps=args.steps, precision=precision,
                          update=update)
        if r is None:
            print(f"  depth {depth:3d}: one network does not fit the memory budget")
            continue
        per_layer.append((depth, r["seconds_per_layer_equivalent"], r["seconds_per_net_layer_step"]))
        print(rate_line(r, depth, width, peak, nbytes, fused, precision))
    return per_layer


def rate_line(r, depth, width, peak, nbytes, fused, precision):
    """One depth's line of :func:`measure`: rate, TFLOP/s against the peak of its precision, weight traffic
    against the bandwidth, memory, and us per network-layer-step against the floor."""
    # weight traffic of one step: forward and backward read W, backward writes dW, SGD with
    # momentum reads W, dW, v and writes W, v: 8 passes over 4-byte weights (fused: 6, no dW)
    traffic = (6 if fused else 8) * 4 * (depth - 2) * width * width * r["nets"]
    line = (f"  depth {depth:3d}, {r['nets']:2d} nets per chunk: {r['net_steps_per_s']:8.1f} net-steps/s, "
            f"{r['tflops']:.3g} TFLOP/s")
    if peak:
        # 3xTF32: three tensor-core products per float32 product, a third of the TF32 peak
        top = {"fp32": peak[1][0], "tf32": peak[1][1], "bf16": peak[1][2], "tf32x3": peak[1][1] / 3}[precision]
        line += f" ({100 * r['tflops'] / top:.0f}% of the {precision} peak)"
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
    return line


def accuracy_cells(device, mnist=None, width=2048, steps=400):
    """Train :data:`ACCURACY_CELLS` once per variant of :data:`VARIANTS` (the paper's settings at ``width``;
    MNIST from the folder ``mnist`` with the paper's normalisation, else the digits) and print each
    cell's test accuracy with its difference from the plain fp32 step's (each variant's line as soon as
    it is done, the table at the end). Every variant starts from the same draws and data order, so the
    differences are what the products' rounding changes."""
    from qmf_lite.data import load_mnist

    data = load_mnist(mnist, normalize="bgs19", download=False) if mnist else load_digits()
    cfg = fig3.profile_config("paper")
    acc = {}
    for update, precision in VARIANTS:
        t = time.perf_counter()
        for depth in sorted({d for _, d in ACCURACY_CELLS}):
            levels = [n for n, d in ACCURACY_CELLS if d == depth]
            grid = qmf.run_grid(levels, [depth], steps=[steps], width=width, lr=cfg["lr"],
                                batch_size=cfg["batch_size"], momentum=cfg["momentum"], layout=cfg["layout"],
                                eval_size=cfg["eval_size"], seeding=cfg["seeding"], data=data,
                                precision=precision, update=update, device=device, cache=False, progress=False)
            for row in grid.rows:
                acc[(update, precision, row["levels"], depth)] = row["test_acc"]
        print(f"  {update} {precision} ({time.perf_counter() - t:.0f} s): " + ", ".join(   # as it goes: a cut run
            f"({n}, {d}) {acc[(update, precision, n, d)]:.4f}" for n, d in ACCURACY_CELLS), flush=True)
    print(f"\ntest accuracy after {steps} steps ({data.name}, width {width}, {device_name(device)}); "
          f"in brackets the difference from the plain fp32 step:")
    print("  (N, depth)  " + "  ".join(f"{s} {p}".rjust(18) for s, p in VARIANTS))
    for n, d in ACCURACY_CELLS:
        base = acc[("torch", "fp32", n, d)]
        print(f"  ({n:2d}, {d:3d})   " + "  ".join(
            f"{acc[(s, p, n, d)]:.4f} ({acc[(s, p, n, d)] - base:+.4f})".rjust(18) for s, p in VARIANTS))


def _count(text):
    """An argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _depths(text):
    """An argparse type: comma-separated depths, each an integer >= 2 (the paper's layout)."""
    try:
        depths = [int(d) for d in text.split(",")]
    except ValueError:
        depths = []
    if not depths or min(depths) < 2:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 2 such as 10,110, got {text!r}")
    return depths


def main():
    parser = _Parser(prog="bench_training.py")   # (a flag check that names its flag is printed once)
    parser.add_argument("--device", type=_device_flag, default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--max-memory", type=_memory_flag, default="auto", help="auto, none, or bytes such as 16GB")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16", "tf32x3"),
                        help="tf32x3 needs --fused")
    parser.add_argument("--compare", action="store_true", help="every update and precision of VARIANTS, one process")
    parser.add_argument("--accuracy", action="store_true", help="a few Fig. 3 cells per variant (width 2048)")
    parser.add_argument("--mnist", default=None, metavar="DIR", help="MNIST files for --accuracy (default: digits)")
    parser.add_argument("--accuracy-steps", type=_count, default=400, help="training steps of --accuracy's cells")
    parser.add_argument("--skip-fig1", action="store_true")
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument("--fused", action="store_true", help="train with update='fused' (qmf_lite.FusedSGD, Triton)")
    parser.add_argument("--profile-step", action="store_true", help="per-kernel profile of one step")
    parser.add_argument("--width", type=_count, default=None, help="default 2048 on a GPU, 256 on a CPU")
    parser.add_argument("--depths", type=_depths, default=None, help="comma-separated; default 10,110,285 (GPU), 10,40 (CPU)")
    parser.add_argument("--nets", type=_count, default=14, help="networks per chunk at most")
    parser.add_argument("--steps", type=_count, default=20, help="timed steps (the difference of two runs)")
    args = parser.parse_args()
    device = qmf.default_device(args.device)
    budget = memory_budget(_parse_memory(args.max_memory), device)
    print(f"device {device_name(device)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}, memory budget {'none' if budget is None else f'{budget / 2**30:.1f} GiB'}")
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
    depths = args.depths or ([10, 110, 285] if gpu else [10, 40])
    update = "fused" if args.fused else "torch"
    if args.profile_step:
        for st, precision in (VARIANTS[:3] if args.compare else ((update, args.precision),)):
            profile_step(device, data, depths[0], width, min(args.nets, 4), precision, st == "fused")
    if args.compare:
        summary = {v: measure(device, data, width, depths, args, budget, peak, *v) for v in VARIANTS}
        print(f"\nus per network-layer-step (ratio to the plain fp32 step), {device_name(device)}:")
        base = {d: t for d, t, _ in summary[VARIANTS[0]]}           # a depth may not fit every variant
        for (st, precision), per_layer in summary.items():
            cells = [f"depth {d}: {1e6 * t:7.1f}" + (f" ({t / base[d]:.2f}x)" if d in base else "")
                     for d, t, _ in per_layer]
            print(f"  {st:5s} {precision:6s}  " + ",  ".join(cells))
        per_layer = summary[VARIANTS[0]]
    else:
        per_layer = measure(device, data, width, depths, args, budget, peak, update, args.precision)
    if args.accuracy:
        accuracy_cells(device, args.mnist, args.width or 2048, args.accuracy_steps)

    cfg = fig3.profile_config("paper")
    if per_layer:
        sec = per_layer[-1][2] * (2048 / width) ** 2   # time per net-layer-step scales with width^2
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
