"""qmf_lite.approx: exact dyadic networks, quantizers, the sup-norm error, conversion, bit extraction, codec."""
from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmf_lite import approx as A


def fraction_forward(weights, biases, x):
    """An independent exact forward pass: plain Python loops over Fractions."""
    h = [Fraction(v) for v in x]
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = [sum((Fraction(wij) * hj for wij, hj in zip(row, h)), Fraction(bi)) for row, bi in zip(w, b)]
        h = z if l == len(weights) - 1 else [max(v, Fraction(0)) for v in z]
    return h


def random_dyadic_net(rng, widths, int_bits, frac_bits):
    """Weights and biases k * 2**-frac_bits with |k| < 2**int_bits."""
    ws, bs = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        ws.append(rng.integers(-(2**int_bits) + 1, 2**int_bits, (n_out, n_in)) * 2.0**-frac_bits)
        bs.append(rng.integers(-(2**int_bits) + 1, 2**int_bits, n_out) * 2.0**-frac_bits)
    return ws, bs


# ---------------------------------------------------------------------------------------------
# the exact network


def test_module_imports_without_torch():
    code = "import sys, qmf_lite.approx; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exact_forward_matches_independent_fraction_loop():
    rng = np.random.default_rng(3)
    for _ in range(20):
        widths = list(rng.integers(1, 5, size=rng.integers(2, 5)))
        ws, bs = random_dyadic_net(rng, widths, 6, 40)        # 46-bit numerators: beyond float32
        net = A.DyadicNet.from_arrays(ws, bs)
        x = rng.integers(-1000, 1000, (5, widths[0])) * 2.0**-7
        got = net.exact(x)
        for row, xi in zip(got, x):
            assert list(row) == fraction_forward(ws, bs, xi)


def test_float64_evaluation_equals_exact_where_exact():
    """Few-bit weights and inputs: every intermediate value fits in 53 bits, so float64 is exact."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        widths = list(rng.integers(1, 6, size=rng.integers(2, 5)))
        ws, bs = random_dyadic_net(rng, widths, 3, 4)
        net = A.DyadicNet.from_arrays(ws, bs)
        x = rng.integers(-64, 64, (50, widths[0])) * 2.0**-3
        exact = net.exact(x)
        assert np.array_equal(net(x), np.array(exact, dtype=np.float64))
        assert all(Fraction(float(v)) == v for v in exact.ravel())   # exactly representable


def test_exact_numerators_are_canonical_and_big_numbers_stay_exact():
    # a weight of 2**-100 and an input of 2**90: the int64 path must not be taken silently
    net = A.DyadicNet.from_arrays([[[2.0**-100, 1.0]]], [[3.0]])
    num, exp = net.exact_numerators([[2.0**90, 2.0**-60]])
    assert Fraction(int(num[0, 0]), 2**exp) == Fraction(1, 2**10) + Fraction(1, 2**60) + 3
    assert int(num[0, 0]) % 2 == 1                 # no common factor of 2 left
    # float64 cannot hold the sum: it drops the 2**-60
    assert Fraction(float(net([[2.0**90, 2.0**-60]])[0, 0])) == Fraction(1, 2**10) + 3


def test_torch_round_trip_and_quantized_import():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)).double()
    net = A.DyadicNet.from_torch(model)
    x = torch.randn(20, 5, dtype=torch.float64)
    assert torch.equal(net.to_torch()(x), model(x))           # float weights are taken exactly
    q = A.DyadicNet.from_torch(model, bits=6)
    for (w, b), lin in zip(zip(q.weights(), q.biases()), [model[0], model[2]]):
        ref = np.concatenate([lin.weight.detach().numpy().ravel(), lin.bias.detach().numpy()])
        step = A.fixed_point_step(ref, 6)
        got = np.concatenate([w.ravel(), b])
        assert np.all(np.abs(got - ref) <= step / 2) and np.all(np.abs(got) <= 32 * step)
    with pytest.raises(ValueError, match="must end with a torch.nn.Linear"):
        A.DyadicNet.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    with pytest.raises(ValueError, match=r"model\[1\] must be torch.nn.ReLU"):
        A.DyadicNet.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)))


def test_memory_bits_of_a_known_layer():
    # weights 3/8, -1/8, 1/2 and bias 0: scale 1/8, k = 3, 1, 4 -> param model 3 + 1 + 3 bits
    net = A.DyadicNet.from_arrays([[[0.375, -0.125, 0.5]]], [[0.0]])
    assert net.param_bits("param") == [7] and net.param_bits("layer") == [9] and net.n_params == 3


def test_bad_input_to_the_network():
    with pytest.raises(ValueError, match="dyadic"):
        A.DyadicNet.from_arrays([[[Fraction(1, 3)]]], [[0]])
    with pytest.raises(ValueError, match="finite"):
        A.DyadicNet.from_arrays([[[np.nan]]], [[0.0]])
    with pytest.raises(ValueError, match="real number"):
        A.DyadicNet.from_arrays([[[True]]], [[0]])
    with pytest.raises(ValueError, match="real number"):
        A.DyadicNet.from_arrays([np.array([["a"]], dtype=object)], [[0]])
    net = A.DyadicNet.from_arrays([[[1.0]]], [[0.0]])
    with pytest.raises(ValueError, match="x must be dyadic"):
        net.exact([[Fraction(1, 3)]])
    with pytest.raises(ValueError, match="x must have 1 features"):
        net([[1.0, 2.0]])
    with pytest.raises(ValueError, match="layer 1 takes 2 inputs"):
        A.DyadicNet.from_arrays([[[1.0]], [[1.0, 1.0]]], [[0.0], [0.0]])
    with pytest.raises(ValueError, match=r"model must be one of \('param', 'layer'\)"):
        net.memory_bits("bits")


# ---------------------------------------------------------------------------------------------
# quantizers


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_error_feedback_keeps_partial_sums_within_half_a_step(bits):
    rng = np.random.default_rng(bits)
    v = rng.uniform(-2, 2, 2000)
    q = A.sigma_delta(v, bits)
    s = A.fixed_point_step(v, bits, headroom=True)
    ks = q / s
    assert np.array_equal(ks, np.rint(ks)) and np.abs(ks).max() <= 2 ** (bits - 1)
    partial = Fraction(0)
    worst = Fraction(0)
    for qi, vi in zip(q.tolist(), v.tolist()):               # exact running sum of the errors
        partial += Fraction(qi) - Fraction(vi)
        worst = max(worst, abs(partial))
    assert worst <= Fraction(s) / 2
    # plain rounding of the same values: the running error wanders far beyond one step
    naive = A.round_to_grid(v, bits, step=s)
    assert np.abs(np.cumsum(naive - v)).max() > 3 * s


def test_round_to_grid_is_nearest_and_saturates():
    s = A.fixed_point_step([1.7], 3)                          # 2**ceil(log2 1.7) / 4 = 0.5
    assert s == 0.5
    assert np.array_equal(A.round_to_grid([1.7, -0.2, 0.3, 5.0], 3, step=0.5), [1.5, -0.0, 0.5, 2.0])


def test_rounding_ties_go_up_in_every_quantizer():
    """The package's one rounding rule, floor(x + 1/2): an exact tie goes towards +inf, negative ones included."""
    s = 0.25
    k = np.arange(-7, 7)
    ties = (k + 0.5) * s                                      # exactly halfway between two multiples of s
    assert np.array_equal(A.round_to_grid(ties, 5, step=s), (k + 1) * s)
    # against exact rational rounding, on random halves and quarters of the step (ties and non-ties)
    rng = np.random.default_rng(21)
    v = rng.integers(-64, 65, 400) * (s / 4)
    want = [math.floor(Fraction(x) / Fraction(s) + Fraction(1, 2)) * s for x in v.tolist()]
    assert A.round_to_grid(v, 6, step=s).tolist() == want
    # a value just below a tie, and odd integers in [2**52, 2**53), where a literal x + 0.5 rounds first
    assert A.round_to_grid([0.49999999999999994, -0.5000000000000001], 2, step=1.0).tolist() == [0.0, -1.0]
    big = [2.0**52 + 1, -(2.0**52 + 1), 2.0**53 - 1]
    assert A.round_to_grid(big, 64, step=1.0).tolist() == big
    # error feedback rounds its running sums by the same rule: sums 1/2, 1, 3/2, ... and -1/2, -1, ...
    assert A.sigma_delta([0.5] * 6, 2, step=1.0).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert A.sigma_delta([-0.5] * 6, 2, step=1.0).tolist() == [0.0, -1.0, 0.0, -1.0, 0.0, -1.0]
    # the codec's walk starts at L h floor(f(0) / (L h) + 1/2): here f(0) / (L h) = 2.5 and -1.5 (h = 1/8)
    assert A.codec(lambda x: 0 * x + 2.5 / 8, cells=2, word_bits=2).approximant.values[0] == 3 / 8
    assert A.codec(lambda x: 0 * x - 1.5 / 8, cells=2, word_bits=2).approximant.values[0] == -1 / 8


def test_bad_input_to_the_quantizers():
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        A.round_to_grid([0.1], 0)
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        A.sigma_delta([0.1], 1.5)
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        A.fixed_point_step([0.1], True)
    with pytest.raises(ValueError, match="step must be a power of two"):
        A.round_to_grid([0.1], 3, step=0.3)
    with pytest.raises(ValueError, match="step 0.125 is too small"):
        A.sigma_delta([1.0, 0.2], 3, step=0.125)
    with pytest.raises(ValueError, match="values must be finite"):
        A.sigma_delta([np.inf], 3)
    with pytest.raises(ValueError, match="values must be 1-D"):
        A.sigma_delta([[0.1]], 3)


# ---------------------------------------------------------------------------------------------
# piecewise-linear functions and the sup-norm error


def test_sup_error_against_a_dense_grid():
    f = A.lacunary_target(n_terms=6, ratio=2.7, seed=1)
    for n in (8, 33, 128):
        g = A.ShallowReLU.interpolant(f, n)
        r = A.sup_error(g, f)
        xs = np.linspace(0, 1, 200_001)
        dense = np.abs(g(xs) - f(xs)).max()
        # the exact value is a maximum over all x: no grid exceeds it, a fine grid comes close
        # (|g - f| is (L_f + max|g'|)-Lipschitz, and the grid spacing is 5e-6)
        lip = 1.0 + np.abs(g.piecewise_linear().slopes).max()
        assert dense <= r.value + 1e-15
        assert r.value - dense <= lip * 0.5 / 200_000 + 1e-15
        # the maximum is attained at a breakpoint of g or f
        assert np.isclose(abs(g(r.argmax) - f(r.argmax)), r.value, rtol=0, atol=1e-15)
        assert r.argmax in set(f.knots) | set(g.piecewise_linear().knots)


def test_sup_error_exact_mode_agrees_with_float():
    f = A.lacunary_target(n_terms=4, ratio=3.3, seed=2)
    g = A.ShallowReLU.interpolant(f, 16).quantized(6, "sigma_delta")
    exact = A.sup_error(g, f, exact=True)
    assert isinstance(exact.value, Fraction)
    assert abs(float(exact.value) - A.sup_error(g, f).value) <= 1e-15


def test_sup_error_bracket_for_a_smooth_target():
    f = lambda x: np.sin(7 * x)  # noqa: E731  (7-Lipschitz)
    g = A.ShallowReLU.interpolant(f, 20)
    r = A.sup_error(g, f, lipschitz=7.0, n_grid=8193)
    xs = np.linspace(0, 1, 2_000_001)
    dense = np.abs(g(xs) - f(xs)).max()
    assert r.lower <= dense <= r.upper
    assert r.upper - r.lower < 0.2 * r.lower                  # the bracket is informative
    with pytest.raises(ValueError, match="lipschitz .* is required"):
        A.sup_error(g, f)
    with pytest.raises(ValueError, match="exact=True needs a piecewise-linear target"):
        A.sup_error(g, f, exact=True, lipschitz=7.0)


def test_network_breakpoints_exact_and_float():
    rng = np.random.default_rng(5)
    ws, bs = random_dyadic_net(rng, [1, 6, 5, 1], 4, 3)
    net = A.DyadicNet.from_arrays(ws, bs)
    pl_exact = net.piecewise_linear((-2, 2), exact=True)
    pl = net.piecewise_linear((-2, 2))
    assert np.allclose(np.array(pl_exact.knots, dtype=float), pl.knots, rtol=0, atol=1e-12)
    xs = np.linspace(-2, 2, 10_001)
    assert np.allclose(pl(xs), net(xs[:, None])[:, 0], rtol=0, atol=1e-10)
    # at every breakpoint the exact representation matches the exact network (rational knots)
    dyadic = [k for k in pl_exact.knots if k.denominator & (k.denominator - 1) == 0]
    assert dyadic and all(net.exact([[k]])[0, 0] == v for k, v in zip(pl_exact.knots, pl_exact.values) if k in dyadic)


def test_lacunary_target_is_lipschitz_and_matches_its_formula():
    f = A.lacunary_target(n_terms=5, ratio=3.1, seed=7, lipschitz=2.0)
    assert f.lipschitz() <= 2.0 + 1e-9
    phases = np.random.default_rng(7).random(5)
    x = np.random.default_rng(0).random(1000)
    t = np.multiply.outer(x, 3.1 ** np.arange(5)) + phases
    ref = (np.abs(t - np.round(t)) / 3.1 ** np.arange(5)).sum(axis=1) * 2.0 / 5
    assert np.allclose(f(x), ref, rtol=0, atol=1e-12)


def test_bad_input_to_piecewise_and_sup_error():
    with pytest.raises(ValueError, match="strictly increasing"):
        A.PiecewiseLinear([0.0, 0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        A.PiecewiseLinear([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="interval must have lo < hi"):
        A.sup_error(A.PiecewiseLinear([0.0, 1.0], [0.0, 1.0]), A.PiecewiseLinear([0.0, 1.0], [0.0, 0.0]),
                    interval=(1.0, 0.0))
    with pytest.raises(ValueError, match="does not cover"):
        A.sup_error(A.PiecewiseLinear([0.0, 0.5], [0.0, 1.0]), A.PiecewiseLinear([0.0, 1.0], [0.0, 0.0]),
                    interval=(0.0, 1.0))
    with pytest.raises(ValueError, match="ratio must be > 1"):
        A.lacunary_target(ratio=1.0)


# ---------------------------------------------------------------------------------------------
# the shallow interpolant


def test_interpolant_hits_the_nodes_and_error_feedback_bounds_the_slope_error():
    f = A.lacunary_target(seed=3)
    n = 256
    g = A.ShallowReLU.interpolant(f, n)
    nodes = np.arange(n + 1) / n
    assert np.allclose(g(nodes), f(nodes), rtol=0, atol=1e-12)
    for bits in (10, 14):
        q = g.quantized(bits, "sigma_delta")
        assert np.array_equal(q.offset, g.offset)             # k/256 is exact with >= 10 bits
        step = A.fixed_point_step(np.concatenate([g.outer, [g.bias]]), bits, headroom=True)
        slope_err = np.cumsum(q.outer) - np.cumsum(g.outer)     # slope error on each piece
        assert np.abs(slope_err).max() <= step / 2 * (1 + 1e-9)
        # value error <= half a step (integral of the slope error) plus the rounded bias
        assert A.sup_error(q, g.piecewise_linear()).value <= step * (1 + 1e-9)


def test_quantized_interpolant_float_matches_exact_network():
    f = A.lacunary_target(n_terms=5, seed=1)
    q = A.ShallowReLU.interpolant(f, 32).quantized(12, "nearest")
    net = q.to_net()
    x = np.arange(0, 257) / 256
    assert np.array_equal(net.exact(x[:, None])[:, 0].astype(float), q(x))


# ---------------------------------------------------------------------------------------------
# the exact depth-precision conversion


@st.composite
def nets_and_inputs(draw):
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 3)) for _ in range(depth + 1)]
    big = draw(st.integers(2, 12))                            # B-bit source weights
    ws, bs = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        e = draw(st.integers(-big - 3, 3))
        ks = st.integers(-(2 ** (big - 1)), 2 ** (big - 1))
        ws.append([[draw(ks) * 2.0**e for _ in range(n_in)] for _ in range(n_out)])
        bs.append([draw(ks) * 2.0**e for _ in range(n_out)])
    xs = [[draw(st.integers(-300, 300)) * 2.0 ** -draw(st.integers(0, 8)) for _ in range(widths[0])]
          for _ in range(4)]
    return ws, bs, xs, draw(st.integers(1, 5))


@settings(max_examples=40, deadline=None)
@given(nets_and_inputs())
def test_conversion_is_exact_on_random_networks(case):
    ws, bs, xs, bits = case
    net = A.DyadicNet.from_arrays(ws, bs)
    low = A.to_low_precision(net, bits)
    assert A.in_alphabet(low, bits)
    got = low.exact_numerators(xs)
    ref = net.exact_numerators(xs)
    assert got[1] == ref[1] and np.array_equal(got[0], ref[0])


def test_conversion_with_nonnegative_inputs_and_its_cost():
    rng = np.random.default_rng(11)
    ws = [rng.integers(-2**11, 2**11, (6, 8)) * 2.0**-11, rng.integers(-2**11, 2**11, (3, 6)) * 2.0**-11]
    bs = [rng.integers(-2**11, 2**11, 6) * 2.0**-11, rng.integers(-2**11, 2**11, 3) * 2.0**-11]
    net = A.DyadicNet.from_arrays(ws, bs)
    x = rng.integers(0, 17, (30, 8)) * 1.0
    depths = []
    for bits in (1, 2, 4, 8):
        low = A.to_low_precision(net, bits, nonnegative_inputs=True)
        assert A.in_alphabet(low, bits) and (low.exact(x) == net.exact(x)).all()
        depths.append(low.depth)
    assert depths == sorted(depths, reverse=True) and depths[0] > 2 * depths[-1]


def test_bad_input_to_the_conversion():
    net = A.DyadicNet.from_arrays([[[0.5]]], [[0.0]])
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        A.to_low_precision(net, 0)
    with pytest.raises(ValueError, match="net must be a DyadicNet"):
        A.to_low_precision([[0.5]], 2)
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        A.in_alphabet(net, -1)


def test_in_alphabet_takes_the_step_and_the_old_name_scale_with_a_warning():
    """The alphabet's step is ``step``, as in round_to_grid; ``scale`` (an activation's amplitude elsewhere) is
    its deprecated former name."""
    net = A.DyadicNet.from_arrays([[[0.75, -0.25]]], [[0.5]])          # multiples of 1/4 up to 3/4
    assert A.in_alphabet(net, 3, step=0.25) and not A.in_alphabet(net, 3)   # the default s = 1/8: 0.75 is k = 6 > 4
    assert not A.in_alphabet(net, 3, step=0.5) and not A.in_alphabet(net, 2, step=0.25)   # 0.75 / 0.25 = 3 > 2
    with pytest.warns(DeprecationWarning, match="now called step"):
        assert A.in_alphabet(net, 3, scale=0.25)
    with pytest.raises(ValueError, match="pass step only"):
        A.in_alphabet(net, 3, step=0.25, scale=0.25)
    with pytest.raises(ValueError, match="step must be > 0"):
        A.in_alphabet(net, 3, step=-0.25)


# ---------------------------------------------------------------------------------------------
# bit extraction and the codec


@pytest.mark.parametrize("form", ["classical", "deep"])
@pytest.mark.parametrize("m", [1, 2, 3, 6, 10])
def test_bit_extraction_on_every_m_bit_input(form, m):
    net = A.bit_extractor(m, form)
    k = np.arange(2**m)
    x = (k / 2**m).reshape(-1, 1)                             # exact dyadic floats
    bits = (k[:, None] >> np.arange(m - 1, -1, -1)) & 1
    assert np.array_equal(np.array(net.exact(x), dtype=np.int64), bits)
    assert np.array_equal(net(x), bits)                       # float64 is exact here too
    w = np.concatenate([a.ravel() for a in net.weights()])
    b = np.concatenate(net.biases())
    if form == "deep":
        assert set(np.unique(w[w != 0])) <= {-2.0, -1.0, 1.0, 2.0} and set(np.unique(b)) <= {0.0, 1.0}
        assert net.depth == 2 * m + 2
    else:
        assert np.abs(w).max() == 2.0**m and net.depth == m + 1


def test_codec_network_computes_its_approximant_exactly():
    f = A.lacunary_target(n_terms=6, ratio=2.9, seed=4)
    cd = A.codec(f, cells=2, word_bits=4)
    # the full exact piecewise-linear form of the network, breakpoints found from the network
    pl = cd.net.piecewise_linear((0, 1), exact=True)
    ref = cd.approximant.to_exact()
    assert all(ref(np.array([k], dtype=object))[0] == v for k, v in zip(pl.knots, pl.values))
    assert set(ref.knots) <= set(pl.knots)
    # the greedy walk stays within L h of f at the nodes, hence within 2 L h everywhere
    h = Fraction(1, cd.n_pieces)
    assert A.sup_error(cd.approximant, f, exact=True).value <= 2 * h
    nodes = np.arange(cd.n_pieces + 1) / cd.n_pieces
    assert np.abs(cd.approximant(nodes) - f(nodes)).max() <= float(h) + 1e-15


def test_codec_words_hold_all_the_slope_bits():
    f = A.lacunary_target(seed=5)
    cd = A.codec(f, cells=8, word_bits=8)
    assert len(cd.words) == 16 and all(0 <= w < 2**8 for w in cd.words)
    x = np.arange(4 * cd.n_pieces + 1) / (4 * cd.n_pieces)
    assert np.array_equal(np.array(cd.net.exact(x[:, None])[:, 0], dtype=float), cd.approximant(x))
    with pytest.raises(ValueError, match="cells must be a power of two"):
        A.codec(f, cells=3, word_bits=4)
    with pytest.raises(ValueError, match="word_bits must be an integer >= 1"):
        A.codec(f, cells=2, word_bits=0)


# ---------------------------------------------------------------------------------------------
# lower bounds


def test_precision_lower_bound_holds_for_networks_on_the_grid():
    """Parameters in 2**-b Z and depth L: the output at x = 0 is a multiple of 2**-(b L)."""
    rng = np.random.default_rng(8)
    for b, widths in ((1, [1, 3, 1]), (3, [1, 4, 4, 1]), (5, [1, 2, 2, 2, 1])):
        for _ in range(10):
            ws, bs = random_dyadic_net(rng, widths, b + 1, b)
            net = A.DyadicNet.from_arrays(ws, bs)
            _, exp = net.exact_numerators([[0.0]])
            assert exp <= b * net.depth
    lb = A.lower_bounds(np.arange(1, 25), 768, 2)
    assert lb["precision"][0] == 2.0**-3 and np.all(lb["bound"] >= lb["counting"])
    assert math.isclose(lb["counting"][9], 1 / (2 * (768 * math.log2(2**10 + 1) + 1)), rel_tol=1e-14)   # (2^b + 1)^W networks
    assert math.isclose(lb["vc"][0], 1 / (2 * (768 * 2 * math.log2(768) + 1)))
    with pytest.raises(ValueError, match="n_params must be finite and > 0"):
        A.lower_bounds(4, 0, 2)


def test_lower_bounds_broadcast_over_the_bits():
    b = np.array([[1.0, 2.0], [3.0, 40.0]])
    lb = A.lower_bounds(b, 100, 3)
    for key in ("precision", "counting", "vc", "bound"):       # full arrays of their own, not broadcast views
        assert lb[key].shape == b.shape and lb[key].flags.writeable and lb[key].flags.c_contiguous, key
    assert np.all(lb["vc"] == lb["vc"][0, 0])
    assert math.isclose(lb["vc"][0, 0], 1 / (2 * (100 * 3 * math.log2(100) + 1)), rel_tol=1e-15)
    assert np.array_equal(lb["bound"], np.maximum(np.maximum(lb["precision"], lb["counting"]), lb["vc"]))
    assert lb["precision"][1, 1] == 2.0**-121 and lb["bound"][1, 1] == lb["vc"][1, 1]
    assert all(isinstance(v, float) for v in A.lower_bounds(2.0, 100, 3).values())


# ---------------------------------------------------------------------------------------------
# checks at the door


def _validated_names(call):
    """The ``name`` argument of every call into qmf_lite._validate made while ``call()`` runs."""
    names = []

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.endswith("_validate.py") and not code.co_name.startswith("_"):
            names.append(frame.f_locals.get("name"))

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return names


def test_public_functions_check_each_argument_once():
    """A public function checks its arguments once and its inner steps check nothing again; what is
    still checked inside is data the function computes (the target's values, a network's weights)."""
    net = A.DyadicNet.from_arrays([[[0.8125, -1.5]], [[3.0]]], [[0.25], [-1.0]])
    f = A.lacunary_target(n_terms=4, ratio=3.0)
    g = A.ShallowReLU.interpolant(f, 16)

    def target(x):                                           # a plain callable: its values are checked once
        return np.interp(x, f.knots, f.values)

    cases = {
        "round_to_grid": (lambda: A.round_to_grid([0.3, -1.7], 3), ["bits", "values"]),
        "round_to_grid, step": (lambda: A.round_to_grid([0.3, -1.7], 3, step=0.5), ["bits", "values", "step"]),
        "sigma_delta": (lambda: A.sigma_delta([0.3] * 4, 1), ["bits", "values"]),
        "quantize_net": (lambda: A.quantize_net(net, 3), ["bits", "values", "values"]),   # each layer's weights
        "quantized, nearest": (lambda: g.quantized(4, "nearest"), ["bits", "method", "values", "values"]),
        "quantized, sigma_delta": (lambda: g.quantized(4, "sigma_delta"), ["bits", "method", "values", "values"]),
        "to_low_precision": (lambda: A.to_low_precision(net, 2), ["bits", "nonnegative_inputs"]),
        "bit_extractor": (lambda: A.bit_extractor(6), ["m", "form"]),
        "codec": (lambda: A.codec(target, 2, 4), ["cells", "word_bits", "lipschitz", "target(x)"]),
        "sup_error, exact": (lambda: A.sup_error(g, f, exact=True), ["n_grid", "exact"]),
        "sup_error, callable": (lambda: A.sup_error(f, np.sin, lipschitz=1.0), ["n_grid", "exact", "lipschitz",
                                                                                "target(x)"]),
        "summary": (lambda: net.summary(), []),
    }
    for what, (call, expected) in cases.items():
        assert _validated_names(call) == expected, what
