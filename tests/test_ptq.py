"""Post-training quantization (qmf_lite.ptq): MSQ, GPFQ, SPFQ against direct computations.

References used here: a plain loop over the input index with rank-1 updates of the error (the
recursion as the authors' code writes it), a scalar loop for one neuron, the authors' MSQ formula,
the exact mean and variance of stochastic rounding, and the 1/N law on Gaussian layers.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from qmf_lite import ptq


def direct_recursion(W, X, Xq, alphabet, method, seed=None):
    """The recursion step by step, all neurons at once: U += w_t X_t; q_t = Q(<U, Xq_t>/|Xq_t|^2); U -= q_t Xq_t."""
    rng = np.random.default_rng(seed)
    n_out, n_in = W.shape
    Q = np.zeros_like(W)
    U = np.zeros((n_out, X.shape[0]))
    for t in range(n_in):
        U += np.outer(W[:, t], X[:, t])
        v = U @ Xq[:, t] / (Xq[:, t] @ Xq[:, t]) / alphabet.step
        r = rng.random(n_out)  # one uniform vector per input index, used or not
        if method == "spfq":
            k = np.floor(v) + (r < v - np.floor(v))
        else:
            k = np.floor(v + 0.5)
        if alphabet.finite:
            k = np.clip(k, -alphabet.max_index, alphabet.max_index)
        Q[:, t] = alphabet.step * k
        U -= np.outer(Q[:, t], Xq[:, t])
    return Q, U.T


def greedy_one_neuron(w, X, step):
    """GPFQ for one neuron on the infinite grid, with scalars and python floats only."""
    m, n = X.shape
    u = [0.0] * m
    q = []
    for t in range(n):
        col = [float(X[i, t]) for i in range(m)]
        u = [u[i] + float(w[t]) * col[i] for i in range(m)]
        arg = sum(u[i] * col[i] for i in range(m)) / sum(c * c for c in col)
        qt = step * math.floor(arg / step + 0.5)
        q.append(qt)
        u = [u[i] - qt * col[i] for i in range(m)]
    return np.array(q), np.array(u)


@pytest.fixture
def layer():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((40, 200)) / np.sqrt(200)
    X = rng.standard_normal((24, 200))
    Xq = X + 0.2 * rng.standard_normal(X.shape)
    return W, X, Xq


# --- alphabets --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits, K", [(1, 1), (2, 2), (3, 4), (4, 8), (8, 128)])
def test_bits_to_levels_follow_the_authors_convention(bits, K):
    assert ptq.max_index_for_bits(bits) == K
    W = np.array([[0.3, -1.2, 0.1], [0.05, 0.4, -0.2]])
    a = ptq.alphabet_for(W, bits)
    assert a.max_index == K and a.n_levels == 2 ** bits + 1
    # delta = C * mean over neurons of max_j |W_ij| / K, C = 1.16
    assert a.step == pytest.approx(1.16 * (1.2 + 0.4) / 2 / K, rel=1e-15)
    assert a.radius == pytest.approx(1.16 * 0.8, rel=1e-14)
    np.testing.assert_allclose(a.values(), a.step * np.arange(-K, K + 1))


def test_infinite_alphabet_and_torch_weights():
    W = torch.tensor([[0.5, -1.0], [0.25, 0.5]], dtype=torch.float64)
    a = ptq.alphabet_for(W, 2, C=1.0, finite=False)
    assert a.step == pytest.approx(0.375) and a.max_index is None
    Wr = np.random.default_rng(0).standard_normal((300, 200))
    assert ptq.alphabet_for(torch.from_numpy(Wr), 3) == ptq.alphabet_for(Wr, 3)   # to the last bit
    assert a.n_levels == math.inf and a.radius == math.inf and not a.finite
    with pytest.raises(ValueError, match="max_index"):
        a.values()


# --- MSQ --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4])
def test_msq_is_nearest_rounding(layer, bits):
    W, X, _ = layer
    a = ptq.alphabet_for(W, bits)
    K, d = a.max_index, a.step
    # the authors' formula: sign(x) * delta * min(|floor(x / delta + 1/2)|, K)
    authors = np.sign(W) * d * np.minimum(np.abs(np.floor(W / d + 0.5)), K)
    q = ptq.msq(W, alphabet=a).weight
    np.testing.assert_array_equal(q, authors)
    # and it is the nearest level of the alphabet (ties have probability zero here)
    levels = a.values()
    nearest = levels[np.abs(W[..., None] - levels).argmin(-1)]
    np.testing.assert_array_equal(q, nearest)
    # with data: the same weights, and the residual of those weights
    r = ptq.quantize_layer(W, X, alphabet=a, method="msq")
    np.testing.assert_array_equal(r.weight, q)
    np.testing.assert_allclose(r.residual, X @ (W - q).T, atol=1e-12)


# --- GPFQ and SPFQ against direct computations --------------------------------------------------

def test_gpfq_one_neuron_infinite_alphabet_matches_direct_greedy():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(60) / np.sqrt(60)
    X = rng.standard_normal((10, 60))
    step = 0.07
    q_ref, u_ref = greedy_one_neuron(w, X, step)
    r = ptq.quantize_layer(w[None, :], X, alphabet=ptq.Alphabet(step), method="gpfq", dead_tol=0.0)
    np.testing.assert_array_equal(r.weight[0], q_ref)
    np.testing.assert_allclose(r.residual[:, 0], u_ref, atol=1e-12)
    np.testing.assert_allclose(r.residual[:, 0], X @ w - X @ q_ref, atol=1e-12)


@pytest.mark.parametrize("method", ["gpfq", "spfq"])
@pytest.mark.parametrize("finite", [True, False])
@pytest.mark.parametrize("block", [1, 5, 64, 1000])
def test_blocked_recursion_equals_direct_recursion(layer, method, finite, block):
    W, X, Xq = layer
    a = ptq.alphabet_for(W, 2, finite=finite)
    q_ref, u_ref = direct_recursion(W, X, Xq, a, method, seed=11)
    r = ptq.quantize_layer(W, X, Xq, alphabet=a, method=method, seed=11, block=block, dead_tol=0.0)
    np.testing.assert_array_equal(r.weight, q_ref)
    np.testing.assert_array_equal(r.index, np.rint(q_ref / a.step).astype(np.int64))
    np.testing.assert_allclose(r.residual, u_ref, atol=1e-12)
    np.testing.assert_allclose(r.residual, X @ W.T - Xq @ r.weight.T, atol=1e-12)
    assert r.relative_error == pytest.approx(np.sum(u_ref**2) / np.sum((X @ W.T) ** 2), rel=1e-10)
    if finite:
        assert r.max_abs_index <= a.max_index


def test_torch_path_equals_numpy_path(layer):
    W, X, Xq = layer
    a = ptq.alphabet_for(W, 2)
    ref = ptq.quantize_layer(W, X, Xq, alphabet=a, method="gpfq")
    t = ptq.quantize_layer(torch.from_numpy(W), torch.from_numpy(X), torch.from_numpy(Xq), alphabet=a, method="gpfq")
    assert isinstance(t.weight, torch.Tensor)
    np.testing.assert_array_equal(t.index.numpy(), ref.index)
    np.testing.assert_allclose(t.residual.numpy(), ref.residual, atol=1e-12)
    # SPFQ in torch: seeded, reproducible, independent of the blocking
    s1 = ptq.quantize_layer(torch.from_numpy(W), torch.from_numpy(X), alphabet=a, method="spfq", seed=5, block=7)
    s2 = ptq.quantize_layer(torch.from_numpy(W), torch.from_numpy(X), alphabet=a, method="spfq", seed=5, block=64)
    assert torch.equal(s1.index, s2.index)
    assert not torch.equal(s1.index, t.index)


def test_float32_agrees_with_float64(layer):
    W, X, Xq = layer
    a = ptq.alphabet_for(W, 3)
    r64 = ptq.quantize_layer(W, X, Xq, alphabet=a)
    r32 = ptq.quantize_layer(W, X, Xq, alphabet=a, dtype=np.float32)
    # a rare rounding decision may flip; the errors agree closely
    assert np.mean(r32.index != r64.index) < 0.01
    assert r32.relative_error == pytest.approx(r64.relative_error, rel=0.02)


# --- the stochastic quantizer --------------------------------------------------------------------

def test_stochastic_rounding_is_unbiased_with_variance_p_one_minus_p():
    n = 200_000
    step = 0.25
    a = ptq.Alphabet(step)
    for x in (-0.61, -0.1, 0.0, 0.03, 0.37, 1.2):
        k = ptq.stochastic_index(np.full(n, x), a, seed=1)
        p = x / step - math.floor(x / step)
        assert set(np.unique(k)) <= {math.floor(x / step), math.floor(x / step) + 1}
        se = math.sqrt(p * (1 - p) / n)
        assert abs(k.mean() - x / step) <= 4 * se + 1e-15
        # the sample variance of a Bernoulli(p) has standard error about sqrt(p(1-p)(1-2p)^2 ... ) <= sqrt(1/n)
        assert abs(k.var() - p * (1 - p)) <= 4 / math.sqrt(n)
    # torch as well
    kt = ptq.stochastic_index(torch.full((n,), 0.37, dtype=torch.float64), a, seed=2)
    p = 0.37 / step - 1
    assert abs(kt.double().mean().item() - 0.37 / step) <= 4 * math.sqrt(p * (1 - p) / n)


def test_stochastic_rounding_clips_to_a_finite_alphabet():
    k = ptq.stochastic_index(np.array([-10.0, 10.0, 0.49]), ptq.Alphabet(0.5, 2), seed=0)
    assert k[0] == -2 and k[1] == 2 and k[2] in (0, 1)


# --- the whole-network driver ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["msq", "gpfq", "spfq"])
def test_driver_equals_step_by_step_reference(method):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.ReLU(), torch.nn.Linear(20, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).double()
    x = torch.randn(9, 12, dtype=torch.float64)
    qmodel, layers = ptq.quantize_mlp(model, x, bits=2, method=method, seed=4, dead_tol=0.0)
    assert len(layers) == 3
    # reference: propagate by hand, quantize each layer with the direct recursion
    gen = torch.Generator().manual_seed(4)
    h = hq = x
    linears = [0, 2, 4]
    torch.set_grad_enabled(False)
    for i, mod in enumerate(model):
        if i in linears:
            W = mod.weight.detach()
            a = ptq.alphabet_for(W, 2)
            if method == "msq":
                q = ptq.msq(W.numpy(), alphabet=a).weight
            elif method == "gpfq":
                q, _ = direct_recursion(W.numpy(), h.numpy(), hq.numpy(), a, "gpfq")
            else:  # the torch path draws torch uniforms: compare with the layer call on the same generator
                q = ptq.quantize_layer(W, h, hq, alphabet=a, method="spfq", seed=gen, dead_tol=0.0).weight.numpy()
            got = qmodel[i].weight.detach().numpy()
            np.testing.assert_array_equal(got, q)
            assert torch.equal(qmodel[i].bias, mod.bias)  # biases are left alone
            h = h @ W.T + mod.bias
            hq = hq @ torch.from_numpy(q).T + mod.bias
        else:
            h, hq = mod(h), mod(hq)
    torch.set_grad_enabled(True)
    with torch.no_grad():
        np.testing.assert_allclose(qmodel(x).numpy(), hq.numpy(), atol=1e-12)
    assert model[0].weight.dtype == torch.float64 and not torch.equal(model[0].weight, qmodel[0].weight)


def test_driver_reduces_the_error_on_calibration_data():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    x = torch.randn(32, 64)
    err = {}
    for method in ptq.METHODS:
        qm, _ = ptq.quantize_mlp(model, x, bits=2, method=method, seed=0)
        with torch.no_grad():
            err[method] = ptq.relative_error(model(x), qm(x))
    assert err["gpfq"] < err["spfq"] < err["msq"]


# --- the 1/N law ------------------------------------------------------------------------------------

def _slopes(method, n_seeds=6, m=16, widths=(64, 128, 256, 512)):
    widths = np.array(widths)
    out = []
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        errs = []
        for n in widths:
            W = rng.standard_normal((64, n)) / np.sqrt(n)
            X = rng.standard_normal((m, n))
            # a fixed step in units of the weights' standard deviation: the law without the log factor
            r = ptq.quantize_layer(W, X, alphabet=ptq.Alphabet(1 / np.sqrt(n)), method=method, seed=seed)
            errs.append(r.relative_error)
        out.append(np.polyfit(np.log(widths), np.log(errs), 1)[0])
    out = np.array(out)
    return out.mean(), out.std(ddof=1) / np.sqrt(len(out))


def test_error_decreases_like_one_over_n_on_gaussian_layers():
    m, widths = 16, np.array([64, 128, 256, 512])
    # E|u_N|^2 = s m^2 (1 - (1 - 1/m)^N) for isotropic Gaussian inputs; relative to m N sigma^2
    predicted = np.polyfit(np.log(widths), np.log(m / widths * (1 - (1 - 1 / m) ** widths)), 1)[0]
    slope_s, se_s = _slopes("spfq")
    assert abs(slope_s - predicted) < 4 * se_s
    slope_g, se_g = _slopes("gpfq")
    assert slope_g < -0.9 and abs(slope_g - slope_s) < 4 * math.hypot(se_g, se_s)
    slope_m, se_m = _slopes("msq")
    assert abs(slope_m) < 4 * se_m  # MSQ: flat in N at a fixed step


# --- the dead-input guard ---------------------------------------------------------------------------

def test_dead_input_guard():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((30, 80)) / np.sqrt(80)
    X = rng.standard_normal((20, 80))
    X[:, 17] *= 1e-7          # a near-dead input
    X[:, 40] = 0.0            # a dead one
    a = ptq.alphabet_for(W, 2, finite=False)
    bare = ptq.quantize_layer(W, X, alphabet=a, dead_tol=0.0)        # exact zeros only
    assert bare.n_dead == 1 and np.all(np.isfinite(bare.weight))
    assert np.abs(bare.index[:, 17]).max() > 1e4                   # the argument blew up
    guarded = ptq.quantize_layer(W, X, alphabet=a)                  # default guard
    assert guarded.n_dead == 2
    np.testing.assert_array_equal(guarded.index[:, [17, 40]], ptq.nearest_index(W[:, [17, 40]], a))
    assert guarded.max_abs_index < 10
    zero = ptq.quantize_layer(W, X, alphabet=a, dead_fill="zero")
    assert np.all(zero.index[:, [17, 40]] == 0)
    # fresh inputs where column 17 is alive: the unguarded weights are useless there
    Xf = rng.standard_normal((500, 80))
    assert ptq.relative_error(Xf @ W.T, Xf @ bare.weight.T) > 1e6
    assert ptq.relative_error(Xf @ W.T, Xf @ guarded.weight.T) < 1.0
    # a finite alphabet clips the argument instead
    clipped = ptq.quantize_layer(W, X, alphabet=a.with_max_index(2), dead_tol=0.0)
    assert clipped.max_abs_index <= 2
    # past 2**52 steps the index cannot be represented: an error, not garbage
    X[:, 17] *= 1e-143      # |X_t|^2 ~ 1e-299: representable, and the argument ~ 1e150 steps
    with pytest.raises(ValueError, match="dead_tol"):
        ptq.quantize_layer(W, X, alphabet=a, dead_tol=0.0)


# --- bad input ----------------------------------------------------------------------------------------

def test_bad_input(layer):
    W, X, Xq = layer
    a = ptq.alphabet_for(W, 2)
    cases = [
        (lambda: ptq.max_index_for_bits(0), r"^bits must be an integer >= 1 and <= 62"),
        (lambda: ptq.max_index_for_bits(2.0), r"^bits must be an integer >= 1 and <= 62"),
        (lambda: ptq.max_index_for_bits(True), r"^bits must be an integer >= 1 and <= 62"),
        (lambda: ptq.alphabet_for(W, 0), r"^bits must be an integer >= 1 and <= 62"),
        (lambda: ptq.alphabet_for(W, 2, C=0.0), r"^C must be a real number in \[1e-06, 1e\+06\]"),
        (lambda: ptq.alphabet_for(W, 2, C=-1.0), r"^C must be a real number in \[1e-06, 1e\+06\]"),
        (lambda: ptq.alphabet_for(W, 2, C=float("nan")), r"^C must be a real number in \[1e-06, 1e\+06\]"),
        (lambda: ptq.alphabet_for(W, 2, C=True), r"^C must be a real number in \[1e-06, 1e\+06\]"),
        (lambda: ptq.alphabet_for(np.zeros((2, 3)), 2), r"^weight must not be all zero"),
        (lambda: ptq.alphabet_for(W[0], 2), r"^weight must be a 2-D array"),
        (lambda: ptq.Alphabet(0.0), r"^step must be finite and > 0"),
        (lambda: ptq.Alphabet(float("inf")), r"^step must be finite and > 0"),
        (lambda: ptq.Alphabet("1"), r"^step must be a finite number > 0"),
        (lambda: ptq.Alphabet(0.1, 0), r"^max_index must be an integer >= 1 and <= 2305843009213693952"),
        (lambda: ptq.Alphabet(0.1, 1.5), r"^max_index must be an integer >= 1"),
        (lambda: ptq.quantize_layer(W, X, alphabet=2), r"^alphabet must be an Alphabet"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, method="adaround"), 
            r"^method must be one of \('msq', 'gpfq', 'spfq'\)"),
        (lambda: ptq.quantize_layer(W, None, alphabet=a), r"^x is required for GPFQ and SPFQ"),
        (lambda: ptq.quantize_layer(W, X[:, :10], alphabet=a), r"^x must have N_in = 200 columns"),
        (lambda: ptq.quantize_layer(W, X[:0], alphabet=a), r"^x must hold m >= 1 calibration samples"),
        (lambda: ptq.quantize_layer(W, X[0], alphabet=a), r"^x must be 2-D, of shape \(m, N_in\)"),
        (lambda: ptq.quantize_layer(W, X, Xq[:5], alphabet=a), r"^xq must have the same m = 24 rows as x"),
        (lambda: ptq.quantize_layer(W, np.full_like(X, np.nan), alphabet=a), r"^x must not be NaN"),
        (lambda: ptq.quantize_layer(W * np.inf, X, alphabet=a), r"^weight must be finite"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, dead_tol=-1.0), r"^dead_tol must be finite and >= 0"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, dead_fill="drop"), 
            r"^dead_fill must be one of \('round', 'zero'\)"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, block=0), r"^block must be an integer >= 1"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, threads=0), r"^threads must be an integer >= 1 and <= 1024"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, dtype=np.int32), 
            r"^dtype must be None, numpy float32 or numpy float64"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, method="spfq", seed=-1), 
            r"^seed must be None, an integer in \[0, 2\*\*63 - 1\]"),
        (lambda: ptq.quantize_layer(W, X, alphabet=a, method="spfq", seed=1.5), 
            r"^seed must be None, an integer in \[0, 2\*\*63 - 1\]"),
        (lambda: ptq.quantize_layer(torch.from_numpy(W), X, alphabet=a), 
            r"^x must be a torch tensor when weight is one"),
        (lambda: ptq.quantize_mlp(torch.nn.Linear(3, 2), torch.zeros(4, 3), bits=2), 
            r"^model must be a torch.nn.Sequential"),
        (lambda: ptq.quantize_mlp(torch.nn.Sequential(torch.nn.ReLU()), torch.zeros(4, 3), bits=2), 
            r"^model has no torch.nn.Linear layer"),
        (lambda: ptq.quantize_mlp(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.zeros(0, 3), bits=2), 
            r"^x must be a torch tensor of shape \(m, features\) with m >= 1"),
        (lambda: ptq.quantize_mlp(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.zeros(4, 3), bits=0), 
            r"^bits must be an integer >= 1 and <= 62"),
        (lambda: ptq.quantize_mlp(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.zeros(4, 3), bits=2, C=0), 
            r"^C must be a real number in \[1e-06, 1e\+06\]"),
        (lambda: ptq.relative_error(np.zeros(3), np.ones(3)), r"^reference must not be all zero"),
        (lambda: ptq.relative_error(np.ones(3), np.ones(4)), r"^reference and approx must have the same shape"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


_W = np.random.default_rng(0).standard_normal((4, 8)) / 4
_X = np.random.default_rng(1).standard_normal((5, 8))
_A = ptq.Alphabet(0.25, 2)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()


def _layer(**kw):
    return ptq.quantize_layer(_W, _X, **{"alphabet": _A, **kw})


def _net(**kw):
    return ptq.quantize_mlp(_mlp(), torch.randn(5, 8, dtype=torch.float64), **{"bits": 2, **kw})


# (call, the argument the message must name, a phrase of the allowed range)
BAD_ARGUMENTS = [
    (lambda: ptq.max_index_for_bits(63), "bits", r"<= 62"),
    (lambda: ptq.max_index_for_bits(10**30), "bits", r">= 1 and <= 62"),
    (lambda: ptq.Alphabet(0.5, 2**61 + 1), "max_index", r"<= 2305843009213693952"),
    (lambda: ptq.Alphabet(1e308, 2), "step", r"at most 5\.99\d*e\+307 for max_index = 2"),
    (lambda: ptq.alphabet_for(_W, 2, finite=np.array([1.0, 2.0])), "finite", "True or False"),
    (lambda: ptq.alphabet_for(_W, 2, C=1e-300), "C", r"in \[1e-06, 1e\+06\]"),
    (lambda: ptq.alphabet_for(_W, 2, C=1e7), "C", r"in \[1e-06, 1e\+06\]"),
    (lambda: ptq.alphabet_for(_W, 2, C="1"), "C", r"in \[1e-06, 1e\+06\]"),
    (lambda: ptq.alphabet_for(np.full((2, 2), 1e308), 2), "weight", "positive, finite step"),
    (lambda: ptq.alphabet_for(np.array([[1 + 1j]]), 2), "weight", "real number"),
    (lambda: ptq.nearest_index(np.array([0.1, np.nan]), _A), "x", "must not be NaN"),
    (lambda: ptq.nearest_index(np.inf, _A), "x", "must be finite"),
    (lambda: ptq.nearest_index("3", _A), "x", "real number"),
    (lambda: ptq.nearest_index(True, _A), "x", "real number"),
    (lambda: ptq.nearest_index(1e308, ptq.Alphabet(0.25)), "x", r"within 2\*\*52 steps"),
    (lambda: ptq.nearest_index(torch.tensor([1.0, float("inf")]), _A), "x", "must be finite"),
    (lambda: ptq.nearest_index(torch.tensor([True]), _A), "x", "real numbers"),
    (lambda: ptq.nearest_index(np.zeros(3), 0.25), "alphabet", "must be an Alphabet"),
    (lambda: ptq.stochastic_index(np.array([0.3, -np.inf]), _A, seed=0), "x", "must be finite"),
    (lambda: ptq.stochastic_index(np.zeros(3), None, seed=0), "alphabet", "must be an Alphabet"),
    (lambda: ptq.stochastic_index(np.zeros(3), _A, seed="3"), "seed", r"\[0, 2\*\*63 - 1\]"),
    (lambda: ptq.stochastic_index(np.zeros(3), _A, seed=2**63), "seed", r"\[0, 2\*\*63 - 1\]"),
    (lambda: _layer(method=np.array([1.0, 2.0])), "method", "one of"),
    (lambda: _layer(seed=True), "seed", r"\[0, 2\*\*63 - 1\]"),     # checked for every method
    (lambda: _layer(seed=1 + 1j), "seed", r"\[0, 2\*\*63 - 1\]"),
    (lambda: _layer(dead_tol=np.array([0.5, 2.0])), "dead_tol", "single finite number >= 0"),
    (lambda: _layer(dead_tol=True), "dead_tol", "real number"),
    (lambda: _layer(dead_fill=np.array([0.5, 2.0])), "dead_fill", r"one of \('round', 'zero'\)"),
    (lambda: _layer(dtype="3"), "dtype", "None, numpy float32 or numpy float64"),
    (lambda: _layer(dtype=2.5), "dtype", "None, numpy float32 or numpy float64"),
    (lambda: ptq.quantize_layer(torch.from_numpy(_W), torch.from_numpy(_X), alphabet=_A, dtype=np.float32),
     "dtype", "None, torch.float32 or torch.float64"),
    (lambda: _layer(threads=10**30), "threads", r">= 1 and <= 1024"),
    (lambda: _layer(threads="2"), "threads", r">= 1 and <= 1024"),
    (lambda: ptq.quantize_layer(_W, _X, alphabet=ptq.Alphabet(2.0**-60)), "weight", r"within 2\*\*52 steps"),
    (lambda: ptq.quantize_layer(np.full((2, 3), 1e200), np.full((4, 3), 1e200), alphabet=ptq.Alphabet(1e100, 2)),
     "weight and x", "small enough"),
    (lambda: ptq.quantize_layer(_W, _X > 0, alphabet=_A), "x", "real number"),          # bools are no numbers
    (lambda: ptq.quantize_layer(_W, _X.astype(complex), alphabet=_A), "x", "real number"),
    (lambda: _net(C=1e-300), "C", r"in \[1e-06, 1e\+06\]"),
    (lambda: _net(finite=np.array([1.0, 2.0])), "finite", "True or False"),
    (lambda: _net(method=np.array([1.0, 2.0])), "method", "one of"),
    (lambda: _net(seed="3"), "seed", r"\[0, 2\*\*63 - 1\]"),
    (lambda: _net(dead_tol=np.array([0.5, 2.0])), "dead_tol", "single finite number >= 0"),
    (lambda: _net(dead_fill=np.array([0.5, 2.0])), "dead_fill", r"one of \('round', 'zero'\)"),
    (lambda: _net(dtype=0), "dtype", "None, torch.float32 or torch.float64"),
    (lambda: _net(dtype=np.array([0.5, 2.0])), "dtype", "None, torch.float32 or torch.float64"),
    (lambda: _net(threads=10**30), "threads", r">= 1 and <= 1024"),
    (lambda: ptq.quantize_mlp(_mlp(), torch.randn(5, 7, dtype=torch.float64), bits=2), "x", "N_in = 8"),
    (lambda: ptq.quantize_mlp(_mlp(), torch.full((5, 8), float("nan")), bits=2), "x", "must be finite"),
    (lambda: ptq.quantize_mlp(_mlp(), torch.randn(5, 8, dtype=torch.float32), bits=2), "x", "must fit the model"),
    (lambda: ptq.relative_error("", np.ones(1)), "reference", "real number"),
    (lambda: ptq.relative_error(np.ones(2), np.array([1.0, np.nan])), "approx", "must not be NaN"),
    (lambda: ptq.relative_error(np.ones(2), np.array([1 + 1j, 0])), "approx", "real number"),
    (lambda: ptq.relative_error(np.array([1e-160, 0.0]), np.array([3.0, 3.0])), "reference", "must not be so small"),
    (lambda: ptq.relative_error(torch.ones(2), np.array([1.0, np.inf])), "approx", "must be finite"),
]


@pytest.mark.parametrize("call, name, allowed", BAD_ARGUMENTS,
                         ids=[f"{i}-{name}" for i, (_, name, _) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_name_the_argument_and_its_range(call, name, allowed):
    with pytest.raises(ValueError, match=allowed) as info:
        call()
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", str(info.value)), str(info.value)


def test_new_checks_keep_valid_calls():
    """What the checks let through: their edges, and the documented None of threads."""
    assert ptq.max_index_for_bits(62) == 2**61 and ptq.Alphabet(0.5, 2**61).max_index == 2**61
    assert ptq.alphabet_for(_W, 2, C=1e-6).step > 0 and ptq.alphabet_for(_W, 2, C=1e6).step > 0
    # a finite alphabet saturates: any finite x, however large, gets +-K (no overflow in x / step)
    assert ptq.nearest_index(np.array([1e308, -1e308]), _A).tolist() == [2, -2]
    assert ptq.stochastic_index(np.array([1e308, -1e308]), _A, seed=0).tolist() == [2, -2]
    assert ptq.nearest_index(2.0**52 * 0.25, ptq.Alphabet(0.25)) == 2**52       # the edge of the infinite grid
    ref = _layer()
    for kw in (dict(threads=None), dict(threads=1024), dict(dtype="float64"), dict(seed=2**63 - 1),
               dict(seed=np.random.default_rng(0))):
        np.testing.assert_array_equal(_layer(**kw).index, ref.index)
    # the power-of-two scaling of relative_error is exact: the plain formula, and no overflow at 1e300
    a, b = np.array([3.0, 4.0, -1e-3]), np.array([3.0, 3.0, 2e-3])
    assert ptq.relative_error(a, b) == np.sum((a - b) ** 2) / np.sum(a * a)
    assert ptq.relative_error(1e300 * a, 1e300 * b) == pytest.approx(ptq.relative_error(a, b), rel=1e-15)
    assert ptq.relative_error(torch.from_numpy(a), b) == ptq.relative_error(a, b)


def test_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import qmf_lite.ptq as p; import numpy as np; " \
           "print(p.quantize_layer(np.eye(3), np.eye(3), alphabet=p.Alphabet(0.5)).max_abs_index)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


def test_alphabet_names_its_levels_and_bits_and_deprecates_the_ambiguous_name():
    """The authors' b bits are 2**b + 1 levels: log2_levels = log2(2**b + 1), storage_bits = b + 1;
    the old ``bits`` (log2 of the levels) still works, with a DeprecationWarning."""
    W = np.random.default_rng(0).standard_normal((4, 8))
    for b in (1, 2, 3, 8):
        a = ptq.alphabet_for(W, bits=b)
        assert a.n_levels == 2**b + 1 and a.storage_bits == b + 1
        assert math.isclose(a.log2_levels, math.log2(2**b + 1), rel_tol=1e-15)
    a2 = ptq.alphabet_for(W, bits=2)
    assert round(a2.log2_levels, 2) == 2.32
    with pytest.warns(DeprecationWarning, match="log2_levels"):
        assert a2.bits == a2.log2_levels
    assert ptq.Alphabet(0.5).storage_bits == math.inf and ptq.Alphabet(0.5).log2_levels == math.inf
    assert ptq.Alphabet(0.5, 1).storage_bits == 2          # ternary {0, +-delta}: 3 levels in 2 bits


# --- issue 22: one rounding convention, one signature, threads as a context --------------------------------

def test_ties_round_up_in_the_rounding_functions_and_inside_the_quantizers():
    """Ties (x exactly halfway between two levels) go up, towards +inf, for numpy and torch alike, and the
    quantizers' own rounding (MSQ, and GPFQ's steering step) is the same as nearest_index's."""
    from qmf_lite._common import round_half_up

    a = ptq.Alphabet(0.5)
    ties = np.array([-2.25, -1.75, -0.75, -0.25, 0.25, 0.75, 1.75])   # (k + 1/2) steps: exact in binary
    up = [-4, -3, -1, 0, 1, 2, 4]
    assert ptq.nearest_index(ties, a).tolist() == up
    assert ptq.nearest_index(torch.from_numpy(ties), a).tolist() == up
    assert ptq.nearest_index(torch.from_numpy(ties).float(), a).tolist() == up
    assert round_half_up(ties / 0.5).tolist() == up
    W = ties[None, :]
    assert ptq.msq(W, alphabet=a).index[0].tolist() == up
    assert ptq.msq(torch.from_numpy(W), alphabet=a).index[0].tolist() == up
    # GPFQ on a layer with one input: the steering argument is <X, w X>/|X|^2 = w exactly (m = 4)
    for w in ties:
        res = ptq.gpfq(np.array([[w]]), np.ones((4, 1)), alphabet=a, dead_tol=0.0)
        assert res.index.item() == ptq.nearest_index(np.array([w]), a).item() == math.floor(w / 0.5 + 0.5)
    # the same in float32: the rounding happens in the working precision
    x32 = np.array([0.49999997], dtype=np.float32)
    assert round_half_up(x32).dtype == np.float32 and round_half_up(x32).item() == 0.0   # exact: x + 1/2 is never rounded first


def test_msq_gpfq_spfq_share_one_signature():
    """(weight, x, xq, *, alphabet): the alphabet by keyword in all three, x and xq at the same places."""
    import inspect

    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((6, 20)) / 4, rng.standard_normal((8, 20))
    a = ptq.alphabet_for(W, 2)
    for f in (ptq.msq, ptq.gpfq, ptq.spfq):
        params = inspect.signature(f).parameters
        assert list(params)[:4] == ["weight", "x", "xq", "alphabet"], f.__name__
        assert params["alphabet"].kind is inspect.Parameter.KEYWORD_ONLY, f.__name__
        with pytest.raises(TypeError):
            f(W, X, None, a)
    for name in ("msq", "gpfq", "spfq"):
        got = getattr(ptq, name)(W, X, alphabet=a, **({"seed": 4} if name == "spfq" else {}))
        want = ptq.quantize_layer(W, X, alphabet=a, method=name, seed=4)
        np.testing.assert_array_equal(got.weight, want.weight)
        np.testing.assert_array_equal(got.residual, want.residual)
    np.testing.assert_array_equal(ptq.msq(W, alphabet=a).index, ptq.msq(W, X, alphabet=a).index)


def test_threads_are_a_context_the_caller_chooses(monkeypatch):
    """By default the quantizers leave the thread settings alone; cpu_threads(n) limits torch and the BLAS
    inside the block and restores both after; threads=n is the same context around one call."""
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(5)
    W, X = rng.standard_normal((5, 12)), rng.standard_normal((7, 12))
    a = ptq.alphabet_for(W, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls = []
        real = torch.set_num_threads
        monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
        ref = ptq.quantize_layer(W, X, alphabet=a)
        ptq.quantize_mlp(torch.nn.Sequential(torch.nn.Linear(4, 3)).double(), torch.ones(2, 4, dtype=torch.float64),
                         bits=2)
        assert calls == [] and torch.get_num_threads() == 2          # the default touches nothing
        with ptq.cpu_threads(1):
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
            inside = ptq.quantize_layer(W, X, alphabet=a)
        assert torch.get_num_threads() == 2 and calls == [1, 2]
        np.testing.assert_array_equal(inside.index, ref.index)
        calls.clear()
        np.testing.assert_array_equal(ptq.quantize_layer(W, X, alphabet=a, threads=1).index, ref.index)
        assert calls == [1, 2] and torch.get_num_threads() == 2      # threads=1: the same context, one call
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    for bad in (0, 1025, None, 2.5, True):
        with pytest.raises(ValueError, match="threads"):
            ptq.cpu_threads(bad)
