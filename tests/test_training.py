"""Straight-through estimator, batched quantized MLPs, the grid runner and the data loaders."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import math
import struct
import threading

import numpy as np
import pytest
import torch

import qmf_lite as qmf
from qmf_lite import data as qdata
from qmf_lite.training import NetSpec, QuantizedMLPBatch, run_grid, train


@pytest.mark.parametrize("levels,spacing,scale", [(2, None, 1.0), (4, None, 1.0), (5, 0.3, 2.0), (16, None, 0.5)])
def test_quantact_forward_equals_quantized_activation(levels, spacing, scale):
    phi = qmf.QuantizedActivation(levels, spacing, scale)
    act = qmf.QuantAct(phi, sigma_w=1.2)
    x = torch.randn(20000, dtype=torch.float64) * 2 * scale
    assert torch.equal(act(x), phi(x))


def test_quantact_gradient_is_the_clipped_slope():
    act = qmf.QuantAct(4, sigma_w=1.0, slope=0.7)
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.99, 1.01, 3.0], requires_grad=True)
    act(x).sum().backward()
    assert act.clip == pytest.approx(1.0)
    expected = torch.tensor([0.0, 0.7, 0.7, 0.7, 0.7, 0.0, 0.0])
    assert torch.allclose(x.grad, expected)


@pytest.mark.parametrize("levels", [2, 4, 16])
def test_default_slope_makes_chi1_one(levels):
    init = qmf.optimal_init(levels)
    act = qmf.QuantAct(init.activation, init.sigma_w)
    assert act.chi1 == pytest.approx(1.0, rel=1e-12)
    # against a Monte Carlo estimate of sigma_w^2 s^2 P(|u| <= T)
    u = math.sqrt(init.q_star) * np.random.default_rng(0).standard_normal(1_000_000)
    p = np.mean(np.abs(u) <= act.clip)
    se = math.sqrt(p * (1 - p) / u.size)
    assert abs(init.sigma_w**2 * act.slope**2 * p - 1) < 4 * init.sigma_w**2 * act.slope**2 * se


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


def test_batched_networks_are_independent():
    """A net trained inside a batch follows the same trajectory as alone."""
    data = qdata.load_digits()
    specs = [NetSpec.optimal(3, seed=0), NetSpec(5, 1.3, 0.0, seed=4)]
    both = QuantizedMLPBatch(specs, data.n_features, 10, 3, 16, device="cpu")
    alone = QuantizedMLPBatch(specs[1:], data.n_features, 10, 3, 16, device="cpu")
    r_both = train(both, data, [5], lr=0.05, batch_size=32, seed=2)
    r_alone = train(alone, data, [5], lr=0.05, batch_size=32, seed=2)
    assert r_both[5][1][1] == pytest.approx(r_alone[5][1][0], abs=1e-6)
    assert torch.allclose(both.w_out[1], alone.w_out[0], atol=1e-5)


def test_tiny_grid_run_trains_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    kw = dict(seeds=(0,), steps=(60,), width=32, lr=0.05, progress=False, device="cpu")
    res = run_grid([2, 6], [2, 64], **kw)
    levels, depths, acc = res.table()
    assert levels == [2, 6] and depths == [2, 64]
    assert acc[1, 0] > 0.5                     # a shallow 6-level net learns digits (chance: 0.1)
    assert acc[0, 1] < 0.3                     # a 64-layer sign net (6 xi = 13) does not
    assert len(list((tmp_path / "grid").glob("*.json"))) == 2
    again = run_grid([2, 6], [2, 64], **kw)
    assert again.rows == res.rows and again.seconds < res.seconds


def write_idx(path, array, code=0x08):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


def test_read_idx_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3)).astype(np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(qdata.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        qdata.read_idx(tmp_path / "bad")


@pytest.fixture
def mnist_server(tmp_path):
    """Small MNIST-format files served over HTTP on the loopback interface."""
    rng = np.random.default_rng(1)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 12),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5)}
    sums = {}
    for name, arr in arrays.items():
        write_idx(served / name, arr)
        sums[name] = hashlib.md5((served / name).read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", sums, arrays
    httpd.shutdown()


def test_mnist_loader_downloads_verifies_and_caches(tmp_path, mnist_server):
    url, sums, arrays = mnist_server
    root = tmp_path / "cache"
    ds = qdata.load_mnist(root, mirrors=("http://127.0.0.1:9/", url), checksums=sums, progress=False)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    assert np.array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte.gz"])
    assert abs(float(ds.x_train.mean())) < 1e-5                      # standardised
    # cached: no server needed the second time
    again = qdata.load_mnist(root, download=False, checksums=sums)
    assert torch.equal(again.x_test, ds.x_test)


def test_mnist_loader_rejects_bad_checksums(tmp_path, mnist_server):
    url, sums, _ = mnist_server
    wrong = {k: "0" * 32 for k in sums}
    with pytest.raises(OSError, match="checksum mismatch"):
        qdata.load_mnist(tmp_path / "c2", mirrors=(url,), checksums=wrong, progress=False)


def test_real_mnist_checksums_are_the_published_ones():
    assert qdata.MNIST_FILES["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert len(qdata.MNIST_FILES) == 4


def test_empirical_ntk_equals_per_example_gradients():
    from qmf_lite.ntk import empirical_ntk

    torch.manual_seed(0)
    specs = [NetSpec(3, 1.2, 0.1, seed=0), NetSpec(5, 0.9, 0.0, seed=1)]
    model = QuantizedMLPBatch(specs, 6, 3, 4, 16, device="cpu", dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    theta = empirical_ntk(model, x, output=1)
    for b in range(2):
        grads = []
        for i in range(5):
            model.zero_grad()
            model(x[i:i + 1])[b, 0, 1].backward()
            grads.append(torch.cat([p.grad[b].reshape(-1) for p in model.parameters()]))
        g = torch.stack(grads)
        assert torch.allclose(theta[b], g @ g.T, rtol=1e-10, atol=1e-10)


def test_halfway_depth_interpolates_in_log_depth():
    from qmf_lite.training import halfway_depth

    # best 0.9 at depth 4; half-way between 0.9 and chance 0.1 is 0.5, crossed between 16 (0.7) and 64 (0.3)
    assert halfway_depth([4, 16, 64], [0.9, 0.7, 0.3], chance=0.1) == pytest.approx(32.0)
    assert np.isnan(halfway_depth([4, 16], [0.9, 0.8], chance=0.1))


def test_grid_table_by_sigma_w(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path))
    res = run_grid([3], [2, 3], sigma_w=[1.3, 0.9], seeds=(0, 1), steps=(5,), width=8, progress=False, device="cpu")
    keys, depths, acc = res.table(by="sigma_w")
    assert keys == [0.9, 1.3] and depths == [2, 3] and acc.shape == (2, 2)
    mean = np.mean([r["test_acc"] for r in res.rows if r["sigma_w"] == 1.3 and r["depth"] == 3])
    assert acc[1, 1] == pytest.approx(mean)
    with pytest.raises(ValueError, match="by"):
        res.table(by="seed")
