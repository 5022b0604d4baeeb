"""Batched quantized MLPs, SGD with momentum, memory-budgeted chunks and the fault-tolerant grid cache."""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp

import numpy as np
import pytest
import torch

import qmf_lite as qmf
from qmf_lite import _cache
from qmf_lite import data as qdata
from qmf_lite.training import (GridResult, NetSpec, QuantizedMLPBatch, _data_order, _stable_seed, bgs19_lr,
                               learning_rate, memory_budget, run_grid, train, training_memory)

DIGITS = qdata.load_digits()


def gradient_norms(spec, depth=60, width=512, n_inputs=64, seed=0):
    torch.manual_seed(seed)
    model = QuantizedMLPBatch([spec], 32, 1, depth, width, device="cpu")
    x = torch.randn(n_inputs, 32)
    return model.gradient_norms(x)[0]


def test_gradient_norms_neither_explode_nor_vanish_with_the_default_slope():
    spec = NetSpec.optimal(4, seed=1)
    norms = gradient_norms(spec)
    assert 1 / 3 < norms[0] / norms[-1] < 3
    # while a slope 25% too large makes them explode: chi_1 = 1.5625 per layer
    s = qmf.ste_slope(qmf.QuantizedActivation(4), spec.sigma_w)
    big = gradient_norms(NetSpec(4, spec.sigma_w, 0.0, 1, slope=1.25 * s))
    assert big[0] / big[-1] > 1e4


def test_netspec_optimal_uses_its_spacing():
    assert NetSpec.optimal(4, spacing=0.3).sigma_w == pytest.approx(qmf.optimal_init(4, spacing=0.3).sigma_w, rel=1e-15)
    assert NetSpec.optimal(4, spacing=0.3).sigma_w == pytest.approx(0.479, abs=5e-4)
    assert NetSpec.optimal(4).sigma_w == pytest.approx(1.065, abs=5e-4)
    assert NetSpec.optimal(5, scale=2.0).sigma_w == pytest.approx(qmf.optimal_init(5, scale=2.0).sigma_w, rel=1e-15)


@pytest.mark.parametrize("layout", ["book", "bgs19"])
def test_batched_networks_are_independent(layout):
    """A net trained inside a batch follows the same trajectory as alone: same initial weights, same
    data order, same losses at every step, bit for bit (CPU)."""
    specs = [NetSpec.optimal(3, seed=0), NetSpec(5, 1.3, 0.1, seed=4), NetSpec.optimal(4, seed=2)]
    kw = dict(lr=0.05, batch_size=16, seed=2, momentum=0.5)
    both = QuantizedMLPBatch(specs, DIGITS.n_features, 10, 4, 16, device="cpu", layout=layout)
    alone = [QuantizedMLPBatch([s], DIGITS.n_features, 10, 4, 16, device="cpu", layout=layout) for s in specs]
    for b, m in enumerate(alone):
        for (name, p), (_, q) in zip(both.named_parameters(), m.named_parameters()):
            assert torch.equal(p[b], q[0]), f"initial {name} of net {b}"
    r_both = train(both, DIGITS, [5, 10], **kw)
    for b, m in enumerate(alone):
        r = train(m, DIGITS, [5, 10], **kw)
        assert np.array_equal(r_both.losses[b], r.losses[0])
        assert r_both[10][1][b] == r[10][1][0] and r_both[5][0][b] == r[5][0][0]
        for (name, p), (_, q) in zip(both.named_parameters(), m.named_parameters()):
            assert torch.equal(p[b], q[0]), f"trained {name} of net {b}"


def test_each_network_has_its_own_data_order():
    specs = [NetSpec.optimal(3, seed=0), NetSpec.optimal(4, seed=0), NetSpec.optimal(3, seed=1)]
    order = _data_order(specs, 100, 30, 10, seed=0, depth=5)              # 3 epochs of 100
    assert order.shape == (3, 30, 10)
    for b in range(3):
        for epoch in range(3):                                          # each epoch is a permutation
            assert sorted(order[b, 10 * epoch:10 * epoch + 10].reshape(-1).tolist()) == list(range(100))
    assert not torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert torch.equal(order[1], _data_order(specs[1:2], 100, 30, 10, seed=0, depth=5)[0])
    assert not torch.equal(order[0], _data_order(specs[:1], 100, 30, 10, seed=0, depth=6)[0])


def test_momentum_sgd_matches_a_direct_loop():
    """train(momentum=0.5) against v <- 0.5 v + g, p <- p - lr v written out, in float64."""
    spec = NetSpec.optimal(4, seed=3)
    ds = qdata.Dataset("d64", DIGITS.x_train.double(), DIGITS.y_train, DIGITS.x_test.double(), DIGITS.y_test, 10)
    model = QuantizedMLPBatch([spec], 64, 10, 3, 12, device="cpu", dtype=torch.float64, layout="bgs19")
    ref = QuantizedMLPBatch([spec], 64, 10, 3, 12, device="cpu", dtype=torch.float64, layout="bgs19")
    rec = train(model, ds, [4], lr=0.1, batch_size=8, seed=5, momentum=0.5)
    order = _data_order([spec], len(ds.y_train), 4, 8, seed=5, depth=3)
    params = list(ref.parameters())
    vel = [torch.zeros_like(p) for p in params]
    for step in range(4):
        idx = order[0, step]
        loss = torch.nn.functional.cross_entropy(ref(ds.x_train[idx])[0], ds.y_train[idx])
        assert loss.item() == pytest.approx(rec.losses[0, step], rel=1e-12)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v, g in zip(params, vel, grads):
                v.mul_(0.5).add_(g)
                p.sub_(0.1 * v)
    for p, q in zip(model.parameters(), params):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_book_layout_draws_every_layer_at_its_scale():
    """The book layout: W_in ~ N(0, q*/n_in), so that standardised inputs start h^1 at the fixed point q*; hidden
    weights N(0, sigma_w^2/n), biases N(0, sigma_b^2), readout N(0, 1/n). Each sample standard deviation lies within
    4 relative standard errors 1 / sqrt(2 m) of its value (m entries); h^1 of unit-variance inputs has mean square
    q* within 4 standard errors. Before: no test saw a 20% error in the first layer's variance."""
    init = qmf.optimal_init(4)
    sb = 0.3
    model = QuantizedMLPBatch([NetSpec(4, init.sigma_w, sb, seed=3)], 64, 10, 4, 300, device="cpu", dtype=torch.float64)
    q_star = float(qmf.fixed_point_q(init.activation, init.sigma_w, sb))
    assert model.b_in is None and len(model.weights) == len(model.biases) == 3
    layers = ([(model.w_in, math.sqrt(q_star / 64))] + [(w, init.sigma_w / math.sqrt(300)) for w in model.weights]
              + [(b, sb) for b in model.biases] + [(model.w_out, 1 / math.sqrt(300))])
    for t, want in layers:
        assert t[0].std().item() == pytest.approx(want, rel=4 / math.sqrt(2 * t[0].numel())), (tuple(t.shape), want)
    x = torch.randn(20000, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h1 = (x @ model.w_in[0]) ** 2                                  # 20000 inputs x 300 units
    per_unit = h1.mean(0)                                          # each unit's mean square: its column's |w|^2
    assert abs(per_unit.mean().item() - q_star) < 4 * per_unit.std().item() / math.sqrt(per_unit.numel())


def test_bgs19_layout_is_the_papers_network():
    """784 -> n, depth - 2 hidden, n -> 10, the quantized activation after every layer (logits too),
    weights N(0, sigma_w^2 / fan-in), zero biases: the same output as the layers composed one by one."""
    init = qmf.optimal_init(5)
    spec = NetSpec(5, init.sigma_w, 0.0, seed=7)
    model = QuantizedMLPBatch([spec], 64, 10, 6, 300, device="cpu", dtype=torch.float64, layout="bgs19")
    linears = [model.w_in] + list(model.weights) + [model.w_out]
    assert len(linears) == 6 and model.w_out.shape == (1, 300, 10)
    for w, fan_in in zip(linears, [64] + [300] * 5):
        # the sample standard deviation of m Gaussian entries has a relative standard error 1 / sqrt(2 m): 4 of them
        assert w[0].std().item() == pytest.approx(init.sigma_w / math.sqrt(fan_in), rel=4 / math.sqrt(2 * w[0].numel()))
    assert all(torch.count_nonzero(b) == 0 for b in [model.b_in, model.b_out, *model.biases])
    act = qmf.QuantAct(init.activation, init.sigma_w)
    x = torch.randn(9, 64, dtype=torch.float64)
    h = x
    for w, b in zip(linears, [model.b_in] + list(model.biases) + [model.b_out]):
        h = act(h @ w[0] + b[0])
    out = model(x)[0]
    assert torch.equal(out, h)
    assert set(out.unique().tolist()) <= set(init.activation.values.tolist())   # the logits are levels
    with pytest.raises(ValueError, match="depth"):
        QuantizedMLPBatch([spec], 64, 10, 1, 8, layout="bgs19")
    with pytest.raises(ValueError, match="layout"):
        QuantizedMLPBatch([spec], 64, 10, 3, 8, layout="paper")


def test_learning_rate_rules():
    assert bgs19_lr(10) == 1e-3 and bgs19_lr(99) == 1e-3 and bgs19_lr(100) == 5e-4 and bgs19_lr(285) == 5e-4
    assert learning_rate("bgs19", 135) == 5e-4
    assert learning_rate(lambda d: 0.1 / d, 4) == 0.025
    assert learning_rate(0.03, 1000) == 0.03
    for bad in ("fast", -0.1, float("nan"), lambda d: 0.0):
        with pytest.raises(ValueError, match="lr"):
            learning_rate(bad, 10)


def test_memory_estimate_covers_the_stored_tensors():
    """training_memory is an upper estimate of what training holds: parameters, gradients, momentum."""
    specs = [NetSpec.optimal(3, seed=0)] * 2
    model = QuantizedMLPBatch(specs, 64, 10, 5, 40, device="cpu", layout="bgs19")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    model(torch.randn(8, 64)).sum().backward()
    opt.step()
    held = sum(p.numel() + p.grad.numel() + opt.state[p]["momentum_buffer"].numel() for p in model.parameters()) * 4
    est = training_memory(5, 40, 64, 10, 8, layout="bgs19", momentum=0.5, eval_batch=0)
    assert held <= 2 * est <= 1.5 * held                                  # two networks
    assert memory_budget(None, "cpu") is None and memory_budget(1e9, "cpu") == 10**9
    assert memory_budget("auto", "cpu") > 0
    for bad in ("16GB", -1, float("inf")):
        with pytest.raises(ValueError, match="max_memory"):
            memory_budget(bad, "cpu")


GRID = dict(seeds=(0, 1), steps=(3, 6), width=12, lr=0.05, batch_size=16, momentum=0.5, layout="bgs19",
            progress=False, device="cpu", data=DIGITS)


def test_chunked_grid_equals_unchunked(tmp_path, monkeypatch):
    """A memory budget that fits one network at a time gives the same rows, bit for bit."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    whole = run_grid([2, 4], [3, 5], max_memory=None, cache=False, **GRID)
    one = training_memory(5, 12, 64, 10, 16, layout="bgs19", momentum=0.5)
    chunked = run_grid([2, 4], [3, 5], max_memory=int(1.2 * one / 0.9), cache=True, **GRID)
    assert len(list((tmp_path / "grid").glob("*.json"))) == 2 * 4           # 2 depths x 4 chunks of one
    assert chunked.rows == whole.rows
    with pytest.raises(ValueError, match="max_memory"):
        run_grid([2], [5], max_memory=one // 2, cache=False, **GRID)


def test_results_do_not_depend_on_global_random_state():
    kw = {**GRID, "seeds": (0,)}
    torch.manual_seed(1)
    a = run_grid([3], [3], cache=False, **kw)
    torch.manual_seed(2)
    torch.rand(5)
    b = run_grid([3], [3], cache=False, **kw)
    assert a.rows == b.rows


def test_tiny_grid_run_trains_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = dict(seeds=(0,), steps=(60,), width=32, lr=0.05, progress=False, device="cpu")
    res = run_grid([2, 6], [2, 64], **kw)
    levels, depths, acc = res.table()
    assert levels == [2, 6] and depths == [2, 64]
    assert acc[1, 0] > 0.5                     # a shallow 6-level net learns digits (chance: 0.1)
    assert acc[0, 1] < 0.3                     # a 64-layer sign net (6 xi = 13) does not
    assert len(list((tmp_path / "grid").glob("*.json"))) == 4           # one entry per network
    assert res.n_cached == 0 and "trained in" in res.summary()
    again = run_grid([2, 6], [2, 64], **kw)
    assert again.rows == res.rows and again.n_cached == 4                  # all four from the cache
    assert again.from_cache and again.compute_seconds == pytest.approx(res.compute_seconds)
    assert "loaded from the cache" in again.summary() and "computing them took" in again.summary()


def test_cache_key_covers_code_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = {**GRID, "seeds": (0,)}
    run_grid([3], [3], **kw)
    assert run_grid([3], [3], **kw).from_cache
    assert not run_grid([3], [3], **{**kw, "momentum": 0.0}).from_cache
    assert not run_grid([3], [3], **{**kw, "precision": "bf16"}).from_cache
    monkeypatch.setattr(_cache, "code_fingerprint", lambda modules=None: "edited-code")
    assert not run_grid([3], [3], **kw).from_cache                           # the code changed
    entry = json.loads(next((tmp_path / "grid").glob("*.json")).read_text())
    for field in ("code", "torch", "qmf_lite", "device", "dtype", "precision", "data", "spec", "depth", "lr", "momentum",
                  "layout", "seeding"):
        assert field in entry["config"]


@pytest.mark.parametrize("damage", ["truncate", "key", "schema", "rows"])
def test_corrupt_cache_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = {**GRID, "seeds": (0,)}
    good = run_grid([3], [3], **kw)
    (path,) = (tmp_path / "grid").glob("*.json")
    text = path.read_text()
    entry = json.loads(text)
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])                              # a run killed mid-write
    elif damage == "key":
        path.write_text(json.dumps({**entry, "key": "0" * 24}))
    elif damage == "schema":
        path.write_text(json.dumps({**entry, "schema": 1}))
    else:
        path.write_text(json.dumps({**entry, "rows": entry["rows"][:1]}))
    with pytest.warns(_cache.CacheWarning, match=str(path)):
        again = run_grid([3], [3], **kw)
    assert again.rows == good.rows and again.n_cached == 0
    rewritten = json.loads(path.read_text())                                  # rewritten, valid
    assert {k: rewritten[k] for k in ("schema", "key", "config", "rows")} == {
        k: entry[k] for k in ("schema", "key", "config", "rows")}


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_grid_resumes_and_says_so(tmp_path, monkeypatch, capsys, workers):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = {**GRID, "seeds": (0,), "workers": workers}

    class Stop(Exception):
        pass

    def stop_after_first(**info):
        raise Stop(info["depth"])

    with pytest.raises(Stop):
        run_grid([2, 3], [3, 4, 5], callback=stop_after_first, **kw)
    done = len(list((tmp_path / "grid").glob("*.json"))) // 2          # depths done (two networks each)
    assert done == 1 if workers == 1 else 1 <= done <= 3     # threads may finish chunks already started
    assert not list((tmp_path / "grid").glob(".*"))          # no temporary files left
    capsys.readouterr()
    seen = []
    resumed = run_grid([2, 3], [3, 4, 5], callback=lambda **info: seen.append(info["cached"]), **kw)
    assert seen[0] and seen.count(True) == done and len(seen) == 3
    assert resumed.n_cached == 2 * done
    assert f"resuming from the cache: {2 * done} of the grid's 6 networks" in capsys.readouterr().err
    fresh = run_grid([2, 3], [3, 4, 5], cache=False, **kw)
    assert resumed.rows == fresh.rows


def test_threads_do_not_change_results_or_global_state():
    kw = {**GRID, "seeds": (0, 1), "cache": False}
    threads = torch.get_num_threads()
    one = run_grid([2, 5], [3, 4, 6], workers=1, **kw)
    three = run_grid([2, 5], [3, 4, 6], workers=3, **kw)
    assert one.rows == three.rows and torch.get_num_threads() == threads


def _grid_worker(cache, barrier, queue):
    import os

    os.environ["QMF_LITE_CACHE"] = cache
    kw = {k: v for k, v in GRID.items() if k != "data"}
    barrier.wait()
    res = run_grid([3], [4], data=qdata.load_digits(), **{**kw, "seeds": (0,)})
    queue.put(res.rows)


def test_two_processes_writing_the_same_key(tmp_path):
    """Both finish, with the same rows, and the entry they leave is valid."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_grid_worker, args=(str(tmp_path), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    files = list((tmp_path / "grid").glob("*"))
    assert len(files) == 1 and not list((tmp_path / "grid").glob(".*"))
    assert _cache.read_json(files[0], schema=4)["rows"] == results[0]


def test_atomic_write_never_exposes_a_partial_file(tmp_path):
    path = tmp_path / "entry.json"
    _cache.atomic_write_json(path, {"a": list(range(1000))})

    class Boom(Exception):
        pass

    class Exploding:
        def __len__(self):
            raise Boom

    with pytest.raises(TypeError):
        _cache.atomic_write_json(path, {"a": Exploding()})                  # fails before writing
    assert json.loads(path.read_text()) == {"a": list(range(1000))}
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_atomic_write_gives_the_file_the_mode_open_would(tmp_path):
    """Not the owner-only mode of the temporary file: a data file or bundle must be readable as any file is."""
    import stat

    written, opened = tmp_path / "entry.json", tmp_path / "plain.json"
    _cache.atomic_write_json(written, {"a": 1})
    opened.write_text("{}")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(opened.stat().st_mode)


def test_eval_subset_and_bad_arguments():
    model = QuantizedMLPBatch([NetSpec.optimal(3, seed=0), NetSpec.optimal(4, seed=0)], 64, 10, 3, 8, device="cpu")
    rec = train(model, DIGITS, [0, 2], lr=0.05, batch_size=8, eval_size=100)
    for s in (0, 2):
        for acc in rec[s]:
            assert np.allclose(acc * 100, np.round(acc * 100))             # counts out of 100
    assert rec.losses.shape == (2, 2) and rec.flops > 0
    for kw, needle in ((dict(momentum=1.0), "momentum"), (dict(precision="fp8"), "precision"),
                       (dict(eval_size=0), "eval_size"), (dict(batch_size=0), "batch_size")):
        with pytest.raises(ValueError, match=needle):
            train(model, DIGITS, [1], **kw)
    with pytest.raises(ValueError, match="steps"):
        train(model, DIGITS, [0])


def test_bf16_autocast_runs_and_stays_close():
    """bf16 matmuls (autocast, fp32 parameters) train the same networks to similar losses on a CPU, and they
    do act: bf16's 8-bit significand moves the first loss (by about 1% here), which a run that ignored the
    setting would reproduce bit for bit."""
    specs = [NetSpec.optimal(4, seed=0)]
    kw = dict(lr=0.05, batch_size=32, momentum=0.5)
    r32 = train(QuantizedMLPBatch(specs, 64, 10, 3, 32, device="cpu", layout="bgs19"), DIGITS, [20], **kw)
    r16 = train(QuantizedMLPBatch(specs, 64, 10, 3, 32, device="cpu", layout="bgs19"), DIGITS, [20],
                precision="bf16", **kw)
    assert r16.losses[0, 0] == pytest.approx(r32.losses[0, 0], rel=0.03)   # 1.2% measured; bf16 rounds at 2^-8
    assert abs(r16.losses[0, 0] / r32.losses[0, 0] - 1) > 2.0**-12       # not fp32's numbers
    assert abs(r16[20][1][0] - r32[20][1][0]) < 0.2


def test_halfway_depth_interpolates_in_log_depth():
    from qmf_lite.training import halfway_depth

    # best 0.9 at depth 4; half-way between 0.9 and chance 0.1 is 0.5, crossed between 16 (0.7) and 64 (0.3)
    assert halfway_depth([4, 16, 64], [0.9, 0.7, 0.3], chance=0.1) == pytest.approx(32.0)
    assert np.isnan(halfway_depth([4, 16], [0.9, 0.8], chance=0.1))
    # nowhere above chance: no fall to measure (it divided 0 by 0 when two accuracies were equal)
    assert np.isnan(halfway_depth([4, 16, 64], [0.5, 0.5, 0.3], chance=1.0))
    assert np.isnan(halfway_depth([4, 16, 64], [0.1, 0.1, 0.05], chance=0.1))


def test_grid_table_by_sigma_w(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    res = run_grid([3], [2, 3], sigma_w=[1.3, 0.9], seeds=(0, 1), steps=(5,), width=8, progress=False, device="cpu")
    keys, depths, acc = res.table(by="sigma_w")
    assert keys == [0.9, 1.3] and depths == [2, 3] and acc.shape == (2, 2)
    mean = np.mean([r["test_acc"] for r in res.rows if r["sigma_w"] == 1.3 and r["depth"] == 3])
    assert acc[1, 1] == pytest.approx(mean)
    with pytest.raises(ValueError, match="by"):
        res.table(by="seed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(step=150), r"step must be None or one of the grid's recorded steps \[100, 200\], got 150"),
    (dict(step="100"), r"step must be .* got '100'"),
    (dict(step=True), r"step must be .* got True"),
    (dict(value="foo"), r"value must be 'test_acc' or 'train_acc', got 'foo'"),
])
def test_grid_table_refuses_a_step_not_recorded_and_an_unknown_value(kwargs, message):
    """Before: a step never recorded gave empty arrays without a word, and an unknown value a KeyError."""
    rows = [{"levels": 4, "sigma_w": 1.0, "seed": 0, "depth": d, "step": s, "train_acc": 0.5, "test_acc": 0.25 * d}
            for d in (2, 4) for s in (100, 200)]
    grid = GridResult(rows, {}, 1.0)
    assert grid.table(step=np.int64(100))[2].tolist() == [[0.5, 1.0]]
    with pytest.raises(ValueError, match=message):
        grid.table(**kwargs)
    with pytest.raises(ValueError, match="the grid has no rows"):
        GridResult([], {}, 1.0).table()


def _small_model(**kw):
    return QuantizedMLPBatch([NetSpec(4, 1.0)], 64, 10, 2, 8, device="cpu", **kw)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(levels=float("nan")), r"^levels must be an integer"),
    (dict(levels=True), r"^levels must be an integer"),
    (dict(sigma_w="1"), r"^sigma_w must be a real number"),
    (dict(sigma_w=float("inf")), r"^sigma_w must be finite and > 0"),
    (dict(sigma_b=None), r"^sigma_b must be a real number"),
    (dict(seed=2.5), r"^seed must be an integer in \[0, 9223372036854775807\]"),
    (dict(seed=-1), r"^seed must be an integer in \[0, "),
    (dict(slope=-1.0), r"^slope must be finite and >= 0"),
    (dict(spacing=1 + 1j), r"^spacing must be a real number"),
    (dict(scale=np.array([1.0, 2.0])), r"^scale must be"),
])
def test_netspec_checks_its_fields(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        NetSpec(**{"levels": 4, "sigma_w": 1.0, **kwargs})


def test_netspec_stores_one_form_of_each_value():
    """The fields enter the cache key and the seeds of the data order, so the same network given as
    ints, floats or numpy scalars is one spec, with one seed; and the seed of the usual form is the
    one it always had (175543882889619865, before the values were converted)."""
    forms = [NetSpec(4, 1.0, 0.0, 3), NetSpec(4.0, 1, 0, np.int64(3)),
             NetSpec(np.int32(4), np.float32(1.0), np.float64(0.0), np.uint8(3))]
    for spec in forms:
        assert [type(v) for v in dataclasses.astuple(spec)] == [int, float, float, int, type(None), type(None), float]
    assert forms[0] == forms[1] == forms[2] and len({hash(s) for s in forms}) == 1
    seeds = {_stable_seed("order", 0, 5, dataclasses.asdict(s)) for s in forms}
    assert seeds == {175543882889619865}
    with_options = NetSpec(4, 2, slope=np.float64(1), spacing=np.float32(0.5), scale=3)
    assert (type(with_options.slope), type(with_options.spacing), type(with_options.scale)) == (float, float, float)
    assert (with_options.slope, with_options.spacing, with_options.scale) == (1.0, 0.5, 3.0)
    orders = [_data_order([s], 100, 7, 4, 0, 5) for s in forms]
    assert all(torch.equal(orders[0], o) for o in orders[1:])


@pytest.mark.parametrize("kwargs, needle", [
    (dict(specs=[]), r"^specs must hold at least one entry"),
    (dict(specs="3"), r"^specs must be a sequence"),
    (dict(specs=[(4, 1.0)]), r"^specs must be a sequence of NetSpec"),
    (dict(n_in=0), r"^n_in must be an integer >= 1 and <= 16777216"),
    (dict(n_out=2.0), r"^n_out must be an integer"),
    (dict(depth=10**30), r"^depth must be an integer >= 1 and <= 100000"),
    (dict(depth=1, layout="bgs19"), r"^depth must be an integer >= 2"),
    (dict(width=10**30), r"^width must be an integer >= 1 and <= 1048576"),
    (dict(dtype=torch.int64), r"^dtype must be a floating-point torch dtype"),
    (dict(dtype="float32"), r"^dtype must be a floating-point torch dtype"),
    (dict(layout=np.array(["book"])), r"^layout must be one of"),
    (dict(specs=[NetSpec(4, 1e39)]), r"^specs\[0\]: its sigma_w must be at most 3\.40282346\d*e\+38 to be stored in "
                                     r"torch\.float32, got sigma_w = 1e\+39"),
    (dict(specs=[NetSpec(4, 1e20)]), r"^specs\[0\]: its sigma_w and sigma_b must give a q\* at most 3\.40282346\d*e\+38"),
    (dict(specs=[NetSpec(4, 1.0, scale=1e39)]), r"^specs\[0\]: its scale must be at most"),
])
def test_quantized_mlp_batch_checks_its_arguments(kwargs, needle):
    args = {"specs": [NetSpec(4, 1.0)], "n_in": 64, "n_out": 10, "depth": 2, "width": 8, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=needle):
        QuantizedMLPBatch(**args)


def test_quantized_mlp_batch_dtype_none_is_the_default_dtype():
    model = QuantizedMLPBatch([NetSpec(4, 1.0)], 8, 2, 2, 4, device="cpu", dtype=None)
    assert model.w_out.dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match=r"^output must be an integer in \[0, 1\]"):
        model.gradient_norms(torch.zeros(3, 8), output=2)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model=None), r"^model must be a QuantizedMLPBatch"),
    (dict(data=np.zeros((4, 64))), r"^data must be a qmf_lite.Dataset"),
    (dict(steps=3), r"^steps must be a sequence"),
    (dict(steps=["3"]), r"^steps must be an integer >= 0"),
    (dict(steps=[2.5]), r"^steps must be an integer >= 0"),
    (dict(steps=[10**30]), r"^steps must be an integer >= 0 and <= 1000000000"),
    (dict(lr=1e308), r"^lr must be at most 3\.403e\+38"),
    (dict(lr=True), r"^lr must be a real number"),
    (dict(batch_size=10**7), r"^batch_size must be an integer >= 1 and <= 1348 \(the training inputs\)"),
    (dict(seed=float("nan")), r"^seed must be an integer in \[0, "),
    (dict(progress=np.array([1, 0])), r"^progress must be True or False"),
    (dict(momentum=np.array([0.1, 0.2])), r"^momentum must be a real number in \[0, 1\]"),
    (dict(eval_batch=0), r"^eval_batch must be an integer >= 1"),
    (dict(precision=None), r"^precision must be one of"),
])
def test_train_checks_its_arguments(kwargs, needle):
    args = {"model": _small_model(), "data": DIGITS, "steps": [1], "lr": 0.01, "batch_size": 16, **kwargs}
    with pytest.raises(ValueError, match=needle):
        train(**args)


def test_train_refuses_data_that_does_not_fit_the_model():
    with pytest.raises(ValueError, match=r"^data must have the model's n_in = 32 features, got 64"):
        train(QuantizedMLPBatch([NetSpec(4, 1.0)], 32, 10, 2, 8, device="cpu"), DIGITS, [1])
    with pytest.raises(ValueError, match=r"^data's labels must lie in \[0, 4\]"):
        train(QuantizedMLPBatch([NetSpec(4, 1.0)], 64, 5, 2, 8, device="cpu"), DIGITS, [1])


@pytest.mark.parametrize("kwargs, needle", [
    (dict(levels=4), r"^levels must be a sequence"),
    (dict(levels=[1]), r"^levels must be an integer in \[2, 4194304\]"),
    (dict(depths=["3"]), r"^depths must be an integer >= 1"),
    (dict(depths=[2.0]), r"^depths must be an integer >= 1"),
    (dict(depths=[1], layout="bgs19"), r"^depths must be an integer >= 2"),
    (dict(sigma_w=1.0), r"^sigma_w must be a sequence"),
    (dict(sigma_w=[0.0]), r"^sigma_w must be finite and > 0"),
    (dict(seeds=[-1]), r"^seeds must be an integer >= 0"),
    (dict(steps=""), r"^steps must be a sequence"),
    (dict(width=10**30), r"^width must be an integer >= 1 and <= 1048576"),
    (dict(batch_size=True), r"^batch_size must be an integer >= 1"),
    (dict(batch_size=5000), r"^batch_size must be at most the 1348 training inputs"),
    (dict(momentum=1.0), r"^momentum must lie in \[0, 1\)"),
    (dict(dataset="cifar"), r"^dataset must be one of \('digits', 'mnist'\)"),
    (dict(cache=np.array([True])), r"^cache must be True or False"),
    (dict(data="digits"), r"^data must be None or a qmf_lite.Dataset"),
    (dict(max_memory=2.5), r"^max_memory must be at least \d+ bytes"),
    (dict(max_memory=0.5), r"^max_memory must be a number of bytes >= 1"),
    (dict(callback=3), r"^callback must be callable"),
    (dict(workers=10**30), r"^workers must be an integer >= 1 and <= 1024"),
    (dict(seed=None), r"^seed must be an integer in \[0, "),
    (dict(eval_size=0.5), r"^eval_size must be an integer >= 1"),
])
def test_run_grid_checks_its_arguments_before_training(kwargs, needle):
    args = {"levels": [4], "depths": [2], "steps": [1], "width": 8, "batch_size": 16, "data": DIGITS, "device": "cpu",
            "cache": False, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=needle):
        run_grid(**args)


@pytest.mark.parametrize("args, needle", [
    (([2, 4], [0.9, 0.1], float("nan")), r"^chance must be a real number in \[0, 1\]"),
    (([2, 4], [0.9, 0.1], 2.0), r"^chance must be a real number in \[0, 1\]"),
    ((3, [0.9], 0.1), r"^depths must be a non-empty 1-d sequence"),
    (([4, 2], [0.9, 0.1], 0.1), r"^depths must be > 0 and strictly increasing"),
    (([0, 2], [0.9, 0.1], 0.1), r"^depths must be > 0 and strictly increasing"),
    (([2, 4], [0.9], 0.1), r"^depths and accuracy must have the same length"),
    (([2, 4], [0.9, float("nan")], 0.1), r"^accuracy must not be NaN"),
    (([2, 4], [90.0, 10.0], 0.1), r"^accuracy must lie in \[0, 1\]"),
    (([2, 4], ["0.9", "0.1"], 0.1), r"^accuracy must be a real number"),
])
def test_halfway_depth_checks_its_arguments(args, needle):
    from qmf_lite.training import halfway_depth

    with pytest.raises(ValueError, match=needle):
        halfway_depth(*args)


def test_sizing_helpers_check_their_arguments():
    from qmf_lite.training import TrainRecord, training_flops

    with pytest.raises(ValueError, match=r"^depth must be an integer >= 1"):
        bgs19_lr(float("nan"))
    with pytest.raises(ValueError, match=r"^depth must be an integer >= 1"):
        learning_rate("bgs19", "3")
    with pytest.raises(ValueError, match=r"^lr must be a number, a callable of the depth or one of"):
        learning_rate("3", 10)
    with pytest.raises(ValueError, match=r"^lr must be finite and > 0"):
        learning_rate(lambda d: -1.0, 10)
    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1 and <= 1000000000"):
        training_flops(2, 8, 4, 2, 10**30)
    with pytest.raises(ValueError, match=r"^momentum must lie in \[0, 1\)"):
        training_memory(2, 8, 4, 2, 4, momentum=1.0)
    with pytest.raises(ValueError, match=r"^bytes_per_value must be an integer >= 1 and <= 16"):
        training_memory(2, 8, 4, 2, 4, bytes_per_value=0)
    with pytest.raises(ValueError, match=r"^max_memory must be a number of bytes >= 1, 'auto' or None"):
        memory_budget(1e-300, "cpu")
    with pytest.raises(ValueError, match=r"^device must be"):
        memory_budget(1e9, 3)
    with pytest.raises(ValueError, match=r"^accuracy must be None or a dict"):
        TrainRecord(float("nan"))
    with pytest.raises(ValueError, match=r"^accuracy must map each step to a pair"):
        TrainRecord({1: 0.5})
    assert TrainRecord() == {} and TrainRecord({2: (0.1, 0.2)})[2] == (0.1, 0.2)


# --- issue 19: per-network cache entries, code fingerprint, seeds per cell, fp32, deadline, bundle, shard -----
SMALL = {**GRID, "seeds": (0,), "steps": (2, 4), "width": 8}


def test_any_chunking_reuses_every_cached_network(tmp_path, monkeypatch):
    """One cache entry per network: a run with another memory budget (one network per chunk, then all at
    once) finds every network, with the same rows; so does a grid that holds only some of them."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    one = training_memory(5, 8, 64, 10, 16, layout="bgs19", momentum=0.5)
    first = run_grid([2, 3, 4], [3, 5], max_memory=int(1.5 * one / 0.9), **SMALL)     # chunks of one network
    assert first.n_cached == 0 and len(list((tmp_path / "grid").glob("*.json"))) == 6
    again = run_grid([2, 3, 4], [3, 5], max_memory=None, **SMALL)                     # one chunk per depth
    assert again.from_cache and again.n_cached == 6 and again.rows == first.rows
    part = run_grid([4, 2], [5], max_memory=int(2.5 * one / 0.9), **SMALL)            # another grid, same networks
    by_levels = lambda rows: sorted(rows, key=lambda r: (r["step"], r["levels"]))  # noqa: E731
    assert part.from_cache and by_levels(part.rows) == by_levels(
        [r for r in first.rows if r["depth"] == 5 and r["levels"] in (2, 4)])


def test_code_fingerprint_ignores_comments_and_docstrings(tmp_path, monkeypatch):
    """A comment, a docstring, a reformatting or an edit of the grid runner keeps every cached network; a
    change to the training code misses."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    real = _cache._read_source
    original = real("training")

    def edited(text):
        monkeypatch.setattr(_cache, "_read_source", lambda name: text if name == "training" else real(name))
        monkeypatch.setattr(_cache, "_FINGERPRINTS", {})

    first = run_grid([3], [3], **SMALL)
    cosmetic = original.replace('    """Train every network of ``model`` with SGD on cross-entropy, in lockstep.',
                                '    # a comment\n    """Train the networks of ``model`` (a reworded docstring).')
    cosmetic = cosmetic.replace("    The work order: depths", "    The order of the work: depths")     # run_grid's docstring
    cosmetic = cosmetic.replace("def _work_order(depths):", "def _work_order(depths):\n    depths = list(depths)")
    assert cosmetic.count("a comment") == 1 and "list(depths)" in cosmetic and "The order of the work" in cosmetic
    edited(cosmetic)
    assert _cache.code_fingerprint() != "" and run_grid([3], [3], **SMALL).from_cache
    real_change = original.replace("return 1e-3 if check_int(depth", "return 1.01e-3 if check_int(depth")
    assert real_change != original
    edited(real_change)
    assert not run_grid([3], [3], **SMALL).from_cache
    source = "def f(x):\n    '''doc'''\n    return x + 1  # one\n"
    assert _cache.source_fingerprint(source) == _cache.source_fingerprint('def f(x):\n    """other"""\n\n    return (x+1)\n')
    assert _cache.source_fingerprint(source) != _cache.source_fingerprint("def f(x):\n    return x + 2\n")
    assert _cache.source_fingerprint(source + "def g():\n    pass\n", exclude=("g",)) == _cache.source_fingerprint(source)


def test_cells_draw_independent_initializations():
    """seeding="cell": network (N, depth, replicate s) starts from seed int(sha256(json(["init", s, N, depth]))[:15], 16),
    so no two cells share their draws; "shared" keeps the replicate seed everywhere."""
    import hashlib

    from qmf_lite.training import _cell_seed

    assert _cell_seed(0, 3, 10) == int(hashlib.sha256(json.dumps(["init", 0, 3, 10]).encode()).hexdigest()[:15], 16)
    assert len({_cell_seed(s, n, d) for s in (0, 1) for n in (3, 4) for d in (10, 35)}) == 8
    kw = {**SMALL, "cache": False}
    for seeding, spec_seed in (("cell", _cell_seed(0, 3, 3)), ("shared", 0)):
        rows = run_grid([3], [3], seeding=seeding, **kw).rows
        model = QuantizedMLPBatch([NetSpec.optimal(3, spec_seed)], 64, 10, 3, 8, device="cpu", layout="bgs19")
        rec = train(model, DIGITS, (2, 4), lr=0.05, batch_size=16, momentum=0.5)
        assert [r["test_acc"] for r in rows] == [float(rec[s][1][0]) for s in (2, 4)]
        assert {r["seed"] for r in rows} == {0}                          # rows name the replicate
    a = QuantizedMLPBatch([NetSpec.optimal(3, _cell_seed(0, 3, 10))], 64, 10, 10, 8, layout="bgs19")
    b = QuantizedMLPBatch([NetSpec.optimal(3, _cell_seed(0, 3, 35))], 64, 10, 35, 8, layout="bgs19")
    assert not torch.equal(a.w_in, b.w_in)                             # no shared first layer across depths


def test_fp32_is_forced_and_restored():
    """After torch.set_float32_matmul_precision("high") (TF32 allowed), a fp32 run uses IEEE float32 products;
    the setting comes back afterwards; "tf32" allows TF32 inside."""
    from qmf_lite.training import _fp32_flags, _precision

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        before = [f.fp32_precision for f in _fp32_flags()]
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        with _precision("fp32", "cpu"):
            assert {f.fp32_precision for f in _fp32_flags()} == {"ieee"}
        assert [f.fp32_precision for f in _fp32_flags()] == before
        assert torch.get_float32_matmul_precision() == "high"
        with _precision("tf32", "cuda"):
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        with _precision("bf16", "cpu"):
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert [f.fp32_precision for f in _fp32_flags()] == before
    finally:
        torch.set_float32_matmul_precision(old)


class FakeClock:
    """Seconds that pass only while networks train: 0.01 s per network-layer-step."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _fake_time(monkeypatch):
    from qmf_lite import training

    clock = FakeClock()
    real = training._train_networks

    def timed(specs, depth, **kw):
        clock.t += 0.01 * len(specs) * depth * max(kw["steps"])
        return real(specs, depth, **kw)

    monkeypatch.setattr(training, "_clock", clock)
    monkeypatch.setattr(training, "_train_networks", timed)
    return clock


def test_deadline_stops_before_a_chunk_that_would_overrun(tmp_path, monkeypatch):
    """With a fake clock (0.01 s per network-layer-step, 4 steps): the first chunk is one network (0.12 s at
    depth 3), then chunks sized by the measured rate (x 1.15) until the next would overrun; 0 trains nothing."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    _fake_time(monkeypatch)
    sizes = []
    res = run_grid([2, 3, 4, 5], [3, 5], deadline=0.6, callback=lambda **i: sizes.append((i["depth"], len(i["rows"]) // 2)),
                   **SMALL)
    # 0.12 s for one depth-3 network; then 0.48 s left: int(0.48 / (1.15 * 0.12)) = 3 networks (0.36 s); 0.12 s
    # left: depth 5 (0.2 s a network) would overrun, and depth 3 has nothing left
    assert sizes == [(3, 1), (3, 3)]
    assert res.n_nets == 4 and {(r["levels"], r["depth"]) for r in res.rows} == {(n, 3) for n in (2, 3, 4, 5)}
    assert sorted((m[0], m[3]) for m in res.missing) == [(2, 5), (3, 5), (4, 5), (5, 5)]
    assert not res.complete and "4 networks of the grid are missing" in res.summary()
    nothing = run_grid([2, 3, 4, 5], [3, 5], deadline=0, **SMALL)
    assert nothing.n_cached == 4 and len(nothing.missing) == 4 and nothing.rows == res.rows
    rest = run_grid([2, 3, 4, 5], [3, 5], **SMALL)
    whole = run_grid([2, 3, 4, 5], [3, 5], cache=False, **SMALL)
    assert rest.complete and rest.n_cached == 4 and rest.rows == whole.rows


def test_bundle_restores_and_refuses_what_it_cannot_use(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "machine1"))
    bundle = tmp_path / "carried.json"
    first = run_grid([2, 3], [3, 4], bundle=bundle, **SMALL)
    doc = json.loads(bundle.read_text())
    assert len(doc["entries"]) == 4 and not list(tmp_path.glob(".*"))
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "machine2"))                   # an empty cache
    again = run_grid([2, 3], [3, 4], bundle=bundle, max_memory=None, **SMALL)
    assert again.from_cache and again.n_cached == 4 and again.rows == first.rows
    with pytest.raises(ValueError, match=r"holds 4 finished networks, but this run finds only 0 .*steps: \[2, 4\] in "
                                         r"the bundle, \[2, 8\] now"):
        run_grid([2, 3], [3, 4], bundle=bundle, **{**SMALL, "steps": (2, 8)})
    monkeypatch.setattr(_cache, "code_fingerprint", lambda modules=None: "edited-code")
    with pytest.raises(ValueError, match="the code that produces the numbers"):
        run_grid([2, 3], [3, 4], bundle=bundle, **SMALL)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bundle must be a bundle file"):
        run_grid([2], [3], bundle=tmp_path / "bad.json", **SMALL)
    with pytest.raises(ValueError, match="bundle must be None when cache=False"):
        run_grid([2], [3], bundle=bundle, cache=False, **{k: v for k, v in SMALL.items() if k != "cache"})


def test_shards_are_disjoint_and_cover_the_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = {**SMALL, "cache": False}
    whole = run_grid([2, 3, 4], [2, 3, 5], **kw)
    parts = [run_grid([2, 3, 4], [2, 3, 5], shard=(i, 3), **kw) for i in (1, 2, 3)]
    nets = [{(r["levels"], r["depth"]) for r in p.rows} for p in parts]
    assert sum(map(len, nets)) == 9 and set().union(*nets) == {(r["levels"], r["depth"]) for r in whole.rows}
    costs = [sum(d for _, d in n) for n in nets]
    assert max(costs) - min(costs) <= 5                                       # balanced by depth
    assert sorted(parts[0].rows + parts[1].rows + parts[2].rows, key=lambda r: (r["depth"], r["step"], r["levels"])) \
        == sorted(whole.rows, key=lambda r: (r["depth"], r["step"], r["levels"]))
    with pytest.raises(ValueError, match=r"^shard must be None or a pair"):
        run_grid([2], [3], shard=(3, 2), **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (TF32 exists only there)")
def test_fp32_products_are_ieee_on_cuda():
    """On a GPU: inside a fp32 run a float32 matmul has float32 accuracy even after
    set_float32_matmul_precision("high"), which lets TF32 (10-bit mantissa) in outside it."""
    from qmf_lite.training import _precision

    g = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn(1024, 1024, device="cuda", generator=g) for _ in range(2))
    exact = a.double() @ b.double()
    err = lambda: float(((a @ b).double() - exact).abs().max() / exact.abs().max())  # noqa: E731
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with _precision("fp32", "cuda"):
            fp32 = err()
        with _precision("tf32", "cuda"):
            tf32 = err()
    finally:
        torch.set_float32_matmul_precision(old)
    assert fp32 < 1e-5                            # float32: about 1e-6 here
    if torch.cuda.get_device_capability()[0] >= 8:
        assert tf32 > 10 * fp32                   # TF32 (Ampere and later): about 1e-3


def test_ties_of_quantized_logits_go_to_the_first_class():
    """bgs19 logits are quantized (N = 2: every logit is +-1, so ties are the rule): the predicted class is the
    first maximal one, as numpy's argmax (documented: the first occurrence) takes it."""
    from qmf_lite.training import _accuracy

    model = QuantizedMLPBatch([NetSpec.optimal(2, seed=3)], 64, 10, 3, 16, device="cpu", layout="bgs19")
    x, y = DIGITS.x_test[:200], DIGITS.y_test[:200]
    with torch.no_grad():
        logits = model(x)[0].numpy()
    assert (np.sort(logits, -1)[:, -1] == np.sort(logits, -1)[:, -2]).mean() > 0.5       # mostly ties
    expected = float((np.argmax(logits, -1) == y.numpy()).mean())
    assert float(_accuracy(model, x, y, 64)[0]) == pytest.approx(expected, abs=1e-7)


def test_fingerprint_exclusions_name_top_level_definitions_of_their_module():
    """A renamed or split bookkeeping function must be renamed in FINGERPRINT_EXCLUDE too: every excluded name is a
    top-level definition of its module, and the definitions that decide a network's numbers are not excluded."""
    import ast

    for module, names in _cache.FINGERPRINT_EXCLUDE.items():
        tree = ast.parse(_cache._read_source(module))
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert set(names) <= defined, sorted(set(names) - defined)
    covered = {"train", "_train", "_train_networks", "QuantizedMLPBatch", "NetSpec", "_spec", "_data_order",
               "_cell_seed", "_stable_seed", "_sgd", "learning_rate", "_learning_rate", "_one_thread_if_small"}
    assert not covered & set(_cache.FINGERPRINT_EXCLUDE["training"])
