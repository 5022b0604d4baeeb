"""The fused SGD step (qmf_lite.fused) against torch.optim.SGD.

On a machine without CUDA the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` is set
for each test here, and the kernels are defined on first use, so it takes effect); with CUDA they
run compiled on the GPU. The whole file skips when Triton is not importable, and the tests that run
a kernel skip, saying why, where the installed interpreter cannot run them (Triton before 3.2, or
before 3.7 with NumPy 2.4: ``qmf_lite.fused._interpreter_defect``).

Tolerances are rounding bounds, not fitted numbers. With ``u = 2^-24`` and
``gamma_k = k u / (1 - k u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1),
a float32 sum of ``R`` products ``a_r g_r`` in any order, with or without fused multiply-adds,
lies within ``gamma_R S`` of the exact value, ``S = sum_r |a_r g_r|``. One momentum step from
float32 ``v`` and ``p`` then gives

* ``v' = m v + D`` (``D`` the exact gradient) within ``Bv = gamma_{R+2} (|m v| + S)`` (first
  step or no momentum: ``gamma_R S``): one rounding of ``m v``, one of the sum;
* ``p' = p - lr v'`` within ``Bp = lr Bv (1 + gamma_3) + gamma_3 (|p| + lr (|v'| + Bv))``: the
  rounding of ``lr`` to float32, of the product and of the difference.

Each path (fused, torch) lies within these bounds of the exact update of the same inputs, so the
two differ by at most twice the bound, element by element.

The matmul kernel (``precision="tf32x3"``) computes ``c = a @ b + bias``. In float32 (the
interpreter) ``c`` lies within ``gamma_{K+1} (|a| |b| + |bias|)`` of the exact value. With 3xTF32 on
a GPU each float32 factor is split as ``a = a_h + a_l`` with ``a_h`` its TF32 rounding
(``|a_l| <= 2^-11 |a|``) and ``a_l`` rounded to TF32 in turn (an error of at most ``2^-22 |a|``);
the product ``a_h b_h + a_h b_l + a_l b_h`` misses ``a_l b_l`` and the two rounding errors, each at
most ``2^-22 (1 + 2^-10) |a b|``: under ``2^-20 |a b|`` together. Its ``3K`` terms are summed in
float32 on the tensor cores, which may truncate instead of rounding (unit ``2^-23``): within
``(2^-20 + gamma'_{3K+1}) (|a| |b| + |bias|)``, ``gamma'`` taken with ``u = 2^-23``.
"""
from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="the fused step's kernels need Triton (pip install triton)")

from qmf_lite import data as qdata  # noqa: E402
from qmf_lite.fused import FusedSGD, _interpreter_defect, _rank_update  # noqa: E402
from qmf_lite.training import NetSpec, QuantizedMLPBatch, _data_order, train  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
U = 2.0 ** -24
#: why this machine's Triton interpreter cannot run the kernels (None: it can, or they run compiled)
DEFECT = None if CUDA else _interpreter_defect()
#: the tests that run a kernel
kernels = pytest.mark.skipif(DEFECT is not None, reason=f"the kernels cannot run here: {DEFECT}")


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def gamma(k):
    return k * U / (1 - k * U)


def bounds(p, v_old, a, g, lr, momentum, first):
    """(exact v', exact p', Bv, Bp) in float64 for one step from ``p``, ``v_old`` (module docstring)."""
    a64, g64 = a.double(), g.double()
    D = a64.transpose(1, 2) @ g64
    S = a64.abs().transpose(1, 2) @ g64.abs()
    R = a.shape[1]
    if momentum and not first:
        mv = momentum * v_old.double()
        v = mv + D
        bv = gamma(R + 2) * (mv.abs() + S)
    else:
        v, bv = D, gamma(R) * S
    p64 = p.double()
    bp = lr * bv * (1 + gamma(3)) + gamma(3) * (p64.abs() + lr * (v.abs() + bv))
    return v, p64 - lr * v, bv, bp


def _within(x, y, bound, what):
    gap = (x.double() - y.double()).abs()
    worst = (gap / bound.clamp_min(1e-300)).max().item()
    assert worst <= 1.0, f"{what}: {worst:.3g} times the rounding bound"
    return worst


@kernels
@pytest.mark.parametrize("momentum,first", [(0.0, True), (0.5, True), (0.5, False), (0.9, False)])
def test_rank_update_is_one_rounding_step_from_the_exact_update(momentum, first):
    """One kernel call against the exact update in float64, on shapes that are not tile multiples."""
    gen = torch.Generator().manual_seed(7)
    B, R, K, N = 2, 19, 40, 37     # R > 16, K, N > 32: two passes over the batch, 2 x 2 tiles (interpreter)
    p, v, a, g = (torch.randn(*s, generator=gen) for s in ((B, K, N), (B, K, N), (B, R, K), (B, R, N)))
    p, v, a, g = (t.to(DEVICE) for t in (p, v, a, g))
    lr = 0.3
    v_exact, p_exact, bv, bp = bounds(p, v, a, g, lr, momentum, first)
    p1, v1 = p.clone(), (v.clone() if momentum else None)
    _rank_update(p1, v1, a, g, lr, momentum, first, "fp32")
    _within(p1, p_exact, bp, "p")
    if momentum:
        _within(v1, v_exact, bv, "v")
    # a strided (transposed) factor is read through its strides
    p2, v2 = p.clone(), (v.clone() if momentum else None)
    _rank_update(p2, v2, a.transpose(1, 2).contiguous().transpose(1, 2), g, lr, momentum, first, "fp32")
    assert torch.equal(p2, p1)


def matmul_bound(a, b, bias):
    """(exact a @ b + bias in float64, the rounding bound of the matmul kernel) (module docstring)."""
    a64, b64 = a.double(), b.double()
    exact, size = a64 @ b64, a64.abs() @ b64.abs()
    if bias is not None:
        exact, size = exact + bias.double(), size + bias.double().abs()
    K = a.shape[2]
    if CUDA:      # 3xTF32 on the tensor cores
        u = 2.0 ** -23
        return exact, (2.0 ** -20 + (3 * K + 1) * u / (1 - (3 * K + 1) * u)) * size
    return exact, gamma(K + 1) * size


@kernels
def test_matmul_kernel_is_within_its_rounding_bound():
    """The forward product (an expanded input, a bias) and the backward one (a transposed weight) of
    shapes that are not tile multiples, against float64; the interpreter's float32 and, on a GPU,
    3xTF32. Reading the transposed weight as if it were contiguous is far outside the bound."""
    from qmf_lite.fused import _matmul

    gen = torch.Generator().manual_seed(11)
    B, M, K, N = 2, 19, 40, 37            # 2 x 2 x 3 tiles of (16, 32, 16) in the interpreter
    x = torch.randn(M, K, generator=gen).to(DEVICE).expand(B, M, K)    # stride 0 over the networks
    w = torch.randn(B, K, N, generator=gen).to(DEVICE)
    bias = torch.randn(B, 1, N, generator=gen).to(DEVICE)
    out = _matmul(x, w, bias, "tf32x3")
    exact, bound = matmul_bound(x, w, bias)
    _within(out, exact, bound, "x @ w + bias")
    delta = torch.randn(B, M, N, generator=gen).to(DEVICE)
    back = _matmul(delta, w.transpose(1, 2), None, "tf32x3")
    exact, bound = matmul_bound(delta, w.transpose(1, 2), None)
    _within(back, exact, bound, "delta @ w^T")
    wrong = delta.double() @ w.reshape(B, N, K).double()         # w's memory read as if contiguous (N, K)
    assert (back - wrong).abs().max() > 100 * bound.max()


@kernels
@pytest.mark.parametrize("layout", ["bgs19", "book"])
def test_tf32x3_step_runs_every_product_in_the_kernels(layout):
    """FusedSGD(precision="tf32x3"): the forward and backward products go through the matmul kernel
    (torch.bmm is never called), and one step gives the weights of a torch.optim.SGD step to twice
    the rounding bound of the update plus the products' bound carried through the gradient."""
    from qmf_lite import fused

    gen = torch.Generator().manual_seed(5)
    model, lr, momentum = _model(layout), 0.05, 0.5
    ref = copy.deepcopy(model)
    x = torch.randn(2, 7, 6, generator=gen).to(DEVICE)
    y = torch.randint(3, (2, 7), generator=gen).to(DEVICE)
    _loss(ref(x), y).backward()
    calls, torch_calls = [], []

    def counted(fn, into):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            into.append(fn.__name__)
            return fn(*args, **kwargs)
        return wrapper

    opt = FusedSGD(model, lr, momentum, precision="tf32x3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused, "_matmul", counted(fused._matmul, calls))
        for name in ("bmm", "baddbmm", "matmul"):
            patch.setattr(torch, name, counted(getattr(torch, name), torch_calls))
        logits = opt.forward(x)
        _loss(logits, y).backward()
    n_layers = len(opt.weights)
    assert len(calls) == 2 * n_layers - 1 and not torch_calls   # every product but the input's gradient
    with torch.no_grad():
        np.testing.assert_allclose(logits.cpu(), model(x).cpu(), rtol=1e-5, atol=1e-6)
    factors = {id(w): (a, d) for w, a, d in opt._factors}
    p0 = {id(w): w.detach().clone() for w in opt.weights}
    opt.step()
    for w, q in zip(opt.weights, [ref.w_in, *ref.weights, ref.w_out]):
        a, d = factors[id(w)]
        _, _, _, bp = bounds(p0[id(w)], None, a, d, lr, momentum, True)
        # the reference's gradient and the kernel's factors differ by the products' rounding: 1e-5 of
        # the gradient's scale (about 80 float32 ulps; the interpreter's gap is about 1e-7)
        scale = (a.double().abs().transpose(1, 2) @ d.double().abs())
        _within(w.detach(), p0[id(w)] - lr * q.grad, 2 * bp + lr * 1e-5 * scale, "weight after a tf32x3 step")


#: compiles every kernel ahead of time for sm_90 and sm_80 (in a fresh interpreter: Triton 3.3 to 3.5 leave
#: the interpreter's patches of ``tl`` in place after an interpreted kernel, and a compile after it fails)
#: and prints, as JSON, per target: each matmul tile's tensor-core instructions (mma) and TF32 splits
#: (cvt.rna.tf32) per dot precision, the rank update's mma per precision, whether the staircase compiled
_PTX_SCRIPT = textwrap.dedent("""
    import inspect, json, os, re, sys
    os.environ["TRITON_INTERPRET"] = "0"
    import triton
    from triton.compiler import ASTSource
    try:
        from triton.backends.compiler import GPUTarget
    except ImportError:
        sys.exit(print(json.dumps({"skip": "this Triton has no ahead-of-time GPUTarget"})))
    if "constexprs" not in inspect.signature(ASTSource).parameters:
        sys.exit(print(json.dumps({"skip": "this Triton's ASTSource predates 3.3 (no constexprs)"})))
    from qmf_lite import _fused_kernels as k
    from qmf_lite.fused import _MATMUL_CONFIGS, _TILES

    def ptx(fn, consts, target, num_warps=4, num_stages=3):
        # float32 pointers (int8 for mask_ptr), int32 sizes, float32 lr and momentum
        names = list(inspect.signature(fn).parameters)
        sig = {n: "constexpr" if n in consts else "*i8" if n == "mask_ptr" else "*fp32" if n.endswith("_ptr")
               else "fp32" if n in ("lr", "momentum") else "i32" for n in names}
        src = ASTSource(fn=triton.jit(fn), signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()})
        return triton.compile(src, target=target, options={"num_warps": num_warps, "num_stages": num_stages}).asm["ptx"]

    def stats(code):
        return {"mma": len(re.findall(r"\\bmma\\.sync|wgmma\\.mma_async", code)), "cvt": "cvt.rna.tf32" in code}

    out = {}
    for target in (GPUTarget("cuda", 90, 32), GPUTarget("cuda", 80, 32)):
        res = out[target.arch] = {"matmul": [], "rank_update": {}}
        for i, (bm, bn, bk, warps, stages) in enumerate(_MATMUL_CONFIGS[:1] if target.arch == 80 else _MATMUL_CONFIGS):
            tile = {"HAS_BIAS": True, "BM": bm, "BN": bn, "BK": bk}
            res["matmul"].append({dot: stats(ptx(k.matmul, {**tile, "DOT": dot}, target, warps, stages))
                                  for dot in (("ieee", "tf32", "tf32x3") if i == 0 else ("tf32x3",))})
        bk, bn, br = _TILES[False]
        for dot in ("ieee", "tf32", "tf32x3"):
            consts = {"HAS_V": True, "FIRST": False, "DOT": dot, "BK": bk, "BN": bn, "BR": br}
            res["rank_update"][dot] = stats(ptx(k.rank_update, consts, target))["mma"]
        res["staircase"] = ".entry staircase" in ptx(k.staircase, {"HAS_MASK": True, "BLOCK": 1024}, target)
    print(json.dumps(out))
""")


@pytest.mark.skipif(CUDA, reason="with a GPU the other tests run the kernels compiled")
def test_kernels_compile_for_the_gpu_without_one():
    """The compiled path, checked on any machine: every kernel compiles to PTX for an H100 (sm_90)
    and an A100 (sm_80) at the tiles it runs with, and the products are what the precision says.
    3xTF32 issues exactly three times the tensor-core instructions of TF32 and splits its float32
    factors with TF32 roundings (``cvt.rna.tf32``); "ieee" issues none."""
    import json

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert sorted(out) == ["80", "90"]
    for arch, res in out.items():
        first, *others = res["matmul"]
        for tile in res["matmul"]:
            assert tile["tf32x3"]["cvt"] and tile["tf32x3"]["mma"] > 0, arch
        assert first["ieee"]["mma"] == 0 < first["tf32"]["mma"], arch
        assert first["tf32x3"]["mma"] == 3 * first["tf32"]["mma"], arch
        assert not first["ieee"]["cvt"], arch
        assert res["rank_update"]["ieee"] == 0 < res["rank_update"]["tf32"] and res["rank_update"]["tf32x3"] > 0, arch
        assert res["staircase"], arch


@kernels
def test_staircase_kernel_equals_the_lookup_bit_for_bit():
    """At, and one ulp either side of, every threshold, at +-0, +-inf and NaN, for networks of
    different levels (padded tables); the STE gradient as well."""
    from qmf_lite.fused import _FusedSTE, _staircase
    from qmf_lite.ste import _lookup, ste_lookup

    model = QuantizedMLPBatch([NetSpec.optimal(2), NetSpec.optimal(5), NetSpec.optimal(16)], 4, 3, 3, 8,
                              device=DEVICE, layout="bgs19")
    g = model.thresholds[torch.isfinite(model.thresholds)].float().cpu()
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e30, -1e30])
    pts = torch.cat([g, torch.nextafter(g, g + 1), torch.nextafter(g, g - 1), special])
    gen = torch.Generator().manual_seed(3)
    h = torch.cat([pts, 3 * torch.randn(1100 - len(pts), generator=gen)])     # > 1024: two blocks
    h = h.repeat(3, 1).view(3, 2, 550).to(DEVICE)
    out, mask = _staircase(h, model.thresholds, model.values, model.clip, True)
    lookup = _lookup(h, model.thresholds, model.values)
    assert torch.equal(out.isnan(), h.isnan()) and torch.equal(lookup.isnan(), h.isnan())     # NaN in, NaN out
    assert torch.equal(out.nan_to_num(7.0), lookup.nan_to_num(7.0))
    assert torch.equal(mask.bool(), h.abs() <= model.clip)
    x1, x2 = h.nan_to_num(0.0).clone().requires_grad_(), h.nan_to_num(0.0).clone().requires_grad_()
    w = torch.randn(h.shape, generator=gen).to(DEVICE)
    (ste_lookup(x1, model.thresholds, model.values, model.slope, model.clip) * w).sum().backward()
    (_FusedSTE.apply(x2, model.thresholds, model.values, model.slope, model.clip) * w).sum().backward()
    assert torch.equal(x1.grad, x2.grad) and x1.grad.abs().sum() > 0


def _model(layout, seed=0):
    specs = [NetSpec.optimal(3, seed=seed), NetSpec.optimal(5, seed=seed + 1)]
    return QuantizedMLPBatch(specs, 6, 3, 3, 36, device=DEVICE, layout=layout)   # 36 > 32: 2 x 2 tiles


def _loss(logits, y):
    B, b = y.shape
    per_net = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                reduction="none")
    return per_net.view(B, b).mean(1).sum()


@kernels
@pytest.mark.parametrize("layout,momentum,staircase", [("bgs19", 0.5, True), ("book", 0.9, True),
                                                        ("bgs19", 0.0, False)])
def test_fused_steps_equal_torch_sgd_step_by_step(layout, momentum, staircase):
    """Four steps; before each, a copy of the fused run's state (momentum buffers included) takes
    one torch.optim.SGD step on the same minibatch; every parameter and buffer agree to twice the
    rounding bound of that step (module docstring), and the recorded factors are the gradient."""
    gen = torch.Generator().manual_seed(1)
    model = _model(layout)
    lr = 0.05
    opt = FusedSGD(model, lr, momentum, staircase=staircase)
    for step in range(4):
        x = torch.randn(2, 7, 6, generator=gen).to(DEVICE)
        y = torch.randint(3, (2, 7), generator=gen).to(DEVICE)
        ref = copy.deepcopy(model)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum)
        for (p, q) in zip(model.parameters(), ref.parameters()):   # carry the momentum state over
            buf = opt.buffers.get(id(p)) if any(p is w for w in opt.weights) else \
                opt._others.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                ref_opt.state[q]["momentum_buffer"] = buf.clone()
        before = {id(p): (p.detach().clone(), opt.buffers.get(id(p))) for p in opt.weights}
        before = {k: (p, None if v is None else v.clone()) for k, (p, v) in before.items()}
        _loss(ref(x), y).backward()
        ref_opt.step()
        opt.zero_grad()
        with torch.no_grad():
            plain_logits = model(x)
        logits = opt.forward(x)
        assert torch.equal(logits, plain_logits)               # the same forward pass, bit for bit
        _loss(logits, y).backward()
        factors = {id(w): (x_, d) for w, x_, d in opt._factors}
        assert len(factors) == len(opt.weights) and all(w.grad is None for w in opt.weights)  # dW never formed
        refs = dict(zip([id(p) for p in model.parameters()], ref.parameters()))
        opt.step()
        for w in opt.weights:
            a, d = factors[id(w)]
            p0, v0 = before[id(w)]
            v_exact, p_exact, bv, bp = bounds(p0, v0, a, d, lr, momentum, step == 0)
            q = refs[id(w)]
            # the factors' product is the gradient autograd gave the reference: gamma_R S each side
            S = a.double().abs().transpose(1, 2) @ d.double().abs()
            D = a.double().transpose(1, 2) @ d.double()
            _within(q.grad, D, gamma(a.shape[1]) * S, f"step {step + 1}: gradient")
            _within(w.detach(), q.detach(), 2 * bp, f"step {step + 1}: weight")
            if momentum:
                _within(opt.buffers[id(w)], ref_opt.state[q]["momentum_buffer"], 2 * bv,
                        f"step {step + 1}: momentum buffer")
        for p, q in zip(model.parameters(), ref.parameters()):
            if not any(p is w for w in opt.weights):              # biases: torch's SGD on both sides
                assert torch.allclose(p, q, rtol=16 * U, atol=0), "bias"


@kernels
def test_train_fused_equals_train_torch():
    """train(update="fused") against train(update="torch"): the same data order, losses and accuracy.

    Step 1 starts from the same weights, so its loss is bit-identical and the weights after it
    agree to twice the one-step bound. Over later steps the rounding differences pass through
    the network; over 3 steps at lr = 0.01 they stay at the float32 level (measured on a CPU: the
    losses bit-identical, the weights within 3e-8 while training moved them by 4e-3 to 1e-2), checked
    against 1e-5 relative (about 80 ulps) and 1e-6 absolute: some 30 times the measured gap,
    and far below what a wrong update order or data order changes."""
    digits = qdata.load_digits()
    data = qdata.Dataset("d", digits.x_train[:64], digits.y_train[:64], digits.x_test[:16], digits.y_test[:16], 10)
    specs = [NetSpec.optimal(4, seed=2), NetSpec.optimal(6, seed=3)]
    make = lambda: QuantizedMLPBatch(specs, 64, 10, 3, 16, device=DEVICE, layout="bgs19")  # noqa: E731
    kw = dict(lr=0.01, batch_size=8, seed=4, momentum=0.5)
    plain, fused = make(), make()
    r_plain = train(plain, data, [0, 3], **kw)
    r_fused = train(fused, data, [0, 3], update="fused", **kw)
    assert r_fused.losses[:, 0].tolist() == r_plain.losses[:, 0].tolist()
    np.testing.assert_allclose(r_fused.losses, r_plain.losses, rtol=1e-5)
    for s in (0, 3):
        for split in (0, 1):
            np.testing.assert_array_equal(r_fused[s][split], r_plain[s][split])
    assert not np.allclose(r_plain.losses[:, 0], r_plain.losses[:, -1], rtol=1e-5)   # training moved the loss
    for p, q in zip(fused.parameters(), plain.parameters()):
        np.testing.assert_allclose(p.detach().cpu(), q.detach().cpu(), rtol=1e-5, atol=1e-6)
    # one step: the weights agree to twice the rounding bound of that step
    plain1, fused1 = make(), make()
    train(plain1, data, [1], **kw)
    opt = FusedSGD(make(), kw["lr"], kw["momentum"])
    idx = _data_order(specs, 64, 1, 8, seed=4, depth=3)[:, 0].to(DEVICE)
    x, y = data.x_train.to(DEVICE)[idx], data.y_train.to(DEVICE)[idx]
    _loss(opt.forward(x), y).backward()
    factors = {id(w): (a, d) for w, a, d in opt._factors}
    p0 = {id(w): w.detach().clone() for w in opt.weights}
    train(fused1, data, [1], update="fused", **kw)
    for w, q, r in zip(opt.weights, [fused1.w_in, *fused1.weights, fused1.w_out],
                       [plain1.w_in, *plain1.weights, plain1.w_out]):
        _, _, _, bp = bounds(p0[id(w)], None, *factors[id(w)], kw["lr"], kw["momentum"], True)
        _within(q.detach(), r.detach(), 2 * bp, "weight after one step")


def test_bad_settings_are_refused():
    model = QuantizedMLPBatch([NetSpec(4, 1.0)], 64, 10, 3, 8, device=DEVICE, layout="bgs19")
    with pytest.raises(ValueError, match="precision"):
        train(model, qdata.load_digits(), [1], update="fused", precision="bf16")
    with pytest.raises(ValueError, match=r"^update must be one of \('torch', 'fused'\)"):
        train(model, qdata.load_digits(), [1], update="triton")
    with pytest.raises(ValueError, match="float32"):
        FusedSGD(QuantizedMLPBatch([NetSpec(4, 1.0)], 6, 3, 3, 8, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="momentum"):
        FusedSGD(model, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="precision"):
        FusedSGD(model, 0.1, precision="bf16")
    with pytest.raises(ValueError, match="'tf32x3' needs update='fused'"):
        train(model, qdata.load_digits(), [1], precision="tf32x3")
    from qmf_lite import run_grid
    with pytest.raises(ValueError, match="'tf32x3' needs update='fused'"):
        run_grid([4], [3], precision="tf32x3", dataset="digits", width=8, steps=[1], cache=False)


@pytest.mark.skipif(CUDA, reason="on a CUDA machine the kernels run compiled")
def test_cpu_without_the_interpreter_says_what_it_needs(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    p = torch.zeros(1, 2, 2)
    with pytest.raises(RuntimeError, match="CUDA device, or Triton's interpreter"):
        _rank_update(p, None, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 0.1, 0.0, True, "fp32")


@pytest.mark.parametrize("triton_version,numpy_version,expected", [
    ("3.0.0", "1.26.4", "Triton >= 3.2"), ("3.1.0", "2.4.0", "Triton >= 3.2"), ("3.6.0", "2.4.6", "#9171"),
    ("3.2.0", "2.4.0rc1", "#9171"), ("3.6.0", "2.3.5", None), ("3.7.0", "2.4.6", None), ("3.10.0+git1a2b", "2.10.1", None)])
def test_interpreters_that_cannot_run_the_kernels_are_named(triton_version, numpy_version, expected):
    """The releases measured to fail (module docstring of qmf_lite.fused), and those that do not."""
    defect = _interpreter_defect(triton_version, numpy_version)
    assert defect is None if expected is None else (expected in defect and triton_version in defect)


@pytest.mark.skipif(CUDA, reason="on a CUDA machine the kernels run compiled")
def test_a_step_in_such_an_interpreter_says_why(monkeypatch):
    from qmf_lite import fused

    monkeypatch.setattr(fused, "_interpreter_defect", lambda: "Triton 0.1's interpreter cannot")
    fused._kernel.cache_clear()                 # the check runs where the kernels are wrapped, once per mode
    p = torch.zeros(1, 2, 2)
    try:
        with pytest.raises(RuntimeError, match="Triton 0.1's interpreter cannot"):
            _rank_update(p, None, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 0.1, 0.0, True, "fp32")
    finally:
        fused._kernel.cache_clear()


def test_the_plain_path_never_imports_triton():
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None          # any `import triton` now raises ImportError
        import qmf_lite as qmf
        m = qmf.QuantizedMLPBatch([qmf.NetSpec(4, 1.0)], 64, 10, 3, 8, device="cpu", layout="bgs19")
        r = qmf.train(m, qmf.load_digits(), [1], lr=0.01, batch_size=8, momentum=0.5)
        opt = qmf.FusedSGD(m, 0.01, 0.5)       # constructing one needs no Triton either
        assert r.losses.shape == (1, 1)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_many_levels_use_the_plain_lookup(monkeypatch):
    from qmf_lite import fused

    model = _model("book")
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    monkeypatch.setattr(fused, "MAX_KERNEL_THRESHOLDS", 1)      # 3 and 5 levels: 2 and 4 thresholds
    monkeypatch.setattr(fused, "_FusedSTE", None)                 # the kernel's path would fail
    with torch.no_grad():
        assert torch.equal(FusedSGD(model, 0.1).forward(x), model(x))


@kernels
def test_run_grid_passes_the_update_on_and_keys_its_cache_by_it(tmp_path, monkeypatch):
    """run_grid(update="fused") trains with FusedSGD: the same accuracies as the torch step on a tiny grid
    (3 steps, as in the test above), and its networks are cached under their own keys, so neither
    update is ever served the other's results; "update" appears in the configuration only when fused."""
    from qmf_lite import run_grid

    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    digits = qdata.load_digits()
    data = qdata.Dataset("d", digits.x_train[:64], digits.y_train[:64], digits.x_test[:16], digits.y_test[:16], 10)
    kw = dict(seeds=[0], steps=[3], width=16, lr=0.01, batch_size=8, momentum=0.5, device=DEVICE, data=data,
              progress=False, layout="bgs19", max_memory=None)
    plain = run_grid([4], [3], **kw)
    fused = run_grid([4], [3], update="fused", **kw)
    assert fused.n_cached == 0 and fused.rows == plain.rows
    assert fused.config["update"] == "fused" and "update" not in plain.config
    again = run_grid([4], [3], update="fused", **kw)
    assert again.n_cached == 1 and again.rows == fused.rows
    x3 = run_grid([4], [3], update="fused", **{**kw, "precision": "tf32x3"})   # products in the matmul kernel
    assert x3.n_cached == 0 and x3.config["precision"] == "tf32x3"
    if not CUDA:                                    # float32 in the interpreter: the same accuracies
        assert x3.rows == plain.rows
    with pytest.raises(ValueError, match=r"^update must be one of \('torch', 'fused'\)"):
        run_grid([4], [3], update="triton", **kw)


@kernels
def test_a_fused_fig3_file_records_its_update_and_is_current(tmp_path, monkeypatch):
    """fig3.produce(update="fused") writes the profile's configuration (the fused step is the same update,
    so the stale-data check accepts the file) and says in its metadata which step produced it; its
    rows equal the torch step's (3 steps of float32, as above)."""
    from qmf_lite import fig3

    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    tiny = {"dataset": "digits", "normalize": "feature", "width": 8, "levels": [4], "depths": [3], "seeds": [0],
            "steps": [3], "lr": 0.01, "momentum": 0.5, "batch_size": 8, "layout": "bgs19", "eval_size": 50,
            "precision": "fp32", "seeding": "cell"}
    monkeypatch.setitem(fig3.PROFILES, "fast", tiny)
    _, plain, _ = fig3.produce("fast", tmp_path / "plain.json", device=DEVICE, progress=False)
    _, grid, _ = fig3.produce("fast", tmp_path / "fused.json", device=DEVICE, progress=False, update="fused")
    (_, meta), (_, meta_plain) = fig3.load(tmp_path / "fused.json"), fig3.load(tmp_path / "plain.json")
    assert meta["update"] == "fused" and meta_plain["update"] == "torch" and meta["profile"] == "fast"
    assert not fig3.is_stale(meta, "fast") and meta["config_hash"] == meta_plain["config_hash"]
    assert grid.rows == plain.rows
    bundle = tmp_path / "fused.bundle"             # a fused run's bundle merges into a file that says so too
    fig3.produce("fast", tmp_path / "again.json", device=DEVICE, progress=False, update="fused", bundle=bundle)
    _, _, merged = fig3.merge([bundle], "fast", tmp_path / "merged.json")
    assert merged["update"] == "fused"
