"""Mean-field maps: exact kernels, fixed points, depth scales, properties, bad input."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import special

import qmf_lite as qmf

C_GRID = np.linspace(-1, 1, 41)


@pytest.mark.parametrize("activation", ["sign", qmf.QuantizedActivation(2, scale=3.0)])
@pytest.mark.parametrize("sigma_w", [0.5, 1.0, 2.7])
def test_sign_gives_the_arcsine_kernel_exactly(activation, sigma_w):
    assert qmf.correlation_map(C_GRID, activation, sigma_w, 0.0) == pytest.approx(
        2 / np.pi * np.arcsin(C_GRID), abs=2e-15)
    inner = C_GRID[1:-1]
    assert qmf.chi(inner, activation, sigma_w, 0.0) == pytest.approx(
        2 / np.pi / np.sqrt(1 - inner**2), rel=1e-13)


def test_erf_and_relu_maps_have_their_closed_forms():
    q_star = qmf.fixed_point_q("erf", 1.5, 0.1)
    expected = (1.5**2 * 2 / np.pi * np.arcsin(2 * q_star * C_GRID / (1 + 2 * q_star)) + 0.01) / q_star
    assert qmf.correlation_map(C_GRID, "erf", 1.5, 0.1) == pytest.approx(expected, abs=1e-14)
    # ReLU with sigma_w^2 < 2: q* = sigma_b^2 / (1 - sigma_w^2 / 2)
    assert qmf.fixed_point_q("relu", 1.2, 0.3) == pytest.approx(0.09 / (1 - 0.72), rel=1e-12)


def test_variance_map_reference_values_for_16_levels():
    """q* moves fast with sigma_w near the optimum (N = 16: 0.014, 0.16, 0.28 at sigma_w = 0.95, 1.006, 1.05)."""
    phi = qmf.QuantizedActivation(16)
    assert qmf.fixed_point_q(phi, 0.95, 0.0) == pytest.approx(0.0137, abs=5e-4)
    assert qmf.fixed_point_q(phi, 1.006, 0.0) == pytest.approx(0.159, abs=2e-3)
    assert qmf.fixed_point_q(phi, 1.05, 0.0) == pytest.approx(0.277, abs=2e-3)
    q = qmf.fixed_point_q(phi, 1.006, 0.0)
    assert qmf.variance_map(q, phi, 1.006, 0.0) == pytest.approx(q, rel=1e-12)
    # the variance map's own slope there is about 0.9
    assert 0.85 < qmf.variance_map_slope(q, phi, 1.006, 0.0) < 0.95
    # and the slope is that of the map: compare with an independent difference of E[phi^2]
    h = 1e-4 * q
    fd = 1.006**2 * (phi.second_moment(q + h) - phi.second_moment(q - h)) / (2 * h)
    assert qmf.variance_map_slope(q, phi, 1.006, 0.0) == pytest.approx(fd, rel=1e-6)


def test_variance_map_broadcasts():
    out = qmf.variance_map(np.array([[0.5], [1.0]]), "tanh", np.array([1.0, 2.0]), 0.1)
    assert out.shape == (2, 2)
    assert out[1, 1] == pytest.approx(qmf.variance_map(1.0, "tanh", 2.0, 0.1))


def test_fixed_point_q_limits():
    assert qmf.fixed_point_q("linear", 1.5, 0.0) == np.inf
    assert qmf.fixed_point_q(qmf.QuantizedActivation(3), 0.2, 0.0) == 0.0  # q decays: odd N, zero level
    assert qmf.fixed_point_q("linear", 0.5, 1.0) == pytest.approx(1 / (1 - 0.25), rel=1e-12)


def test_tanh_fixed_points_in_both_phases():
    assert qmf.fixed_point_c("tanh", 0.8, 0.05) == 1.0  # ordered
    c_star = qmf.fixed_point_c("tanh", 2.5, 0.3)          # chaotic
    assert 0 < c_star < 1
    assert qmf.correlation_map(c_star, "tanh", 2.5, 0.3) == pytest.approx(c_star, abs=1e-12)
    assert qmf.chi(c_star, "tanh", 2.5, 0.3) < 1


@pytest.mark.parametrize("levels", [3, 4, 16])
def test_quantized_fixed_point_with_bias(levels):
    phi = qmf.QuantizedActivation(levels)
    c_star = qmf.fixed_point_c(phi, 1.2, 0.2)
    assert 0 < c_star < 1
    assert qmf.correlation_map(c_star, phi, 1.2, 0.2) == pytest.approx(c_star, abs=1e-12)
    assert qmf.chi(c_star, phi, 1.2, 0.2) < 1
    assert qmf.chi(1.0, phi, 1.2, 0.2) == np.inf


def test_depth_scale_of_sign_and_zero_bias():
    assert qmf.depth_scale("sign", 1.3, 0.0) == pytest.approx(-1 / math.log(2 / math.pi), rel=1e-13)
    phi = qmf.QuantizedActivation(8)
    assert qmf.fixed_point_c(phi, 1.1, 0.0) == 0.0
    assert qmf.depth_scale(phi, 1.1, 0.0) == pytest.approx(-1 / math.log(qmf.chi(0.0, phi, 1.1, 0.0)), rel=1e-14)


def test_chi_is_the_derivative_of_the_correlation_map():
    phi = qmf.QuantizedActivation(5)
    c = np.array([-0.7, -0.1, 0.3, 0.8])
    h = 1e-6
    fd = (qmf.correlation_map(c + h, phi, 1.3, 0.1) - qmf.correlation_map(c - h, phi, 1.3, 0.1)) / (2 * h)
    assert qmf.chi(c, phi, 1.3, 0.1) == pytest.approx(fd, rel=1e-7)


quantized = st.builds(qmf.QuantizedActivation, st.integers(2, 24),
                      st.one_of(st.none(), st.floats(0.05, 1.5)), st.floats(0.5, 2.0))
sigma_w_st = st.floats(0.6, 3.0)
sigma_b_st = st.one_of(st.just(0.0), st.floats(1e-3, 1.0))  # below 1e-3, q* ~ sigma_b^2 reaches 1e-290 and round-off


@settings(max_examples=40, deadline=None)
@given(quantized, sigma_w_st, sigma_b_st)
def test_map_properties(phi, sigma_w, sigma_b):
    assume(0 < qmf.fixed_point_q(phi, sigma_w, sigma_b) < np.inf)  # else the map is undefined (tested below)
    c = np.linspace(-1, 1, 21)
    out = qmf.correlation_map(c, phi, sigma_w, sigma_b)
    assert np.all(out >= -1 - 1e-12) and np.all(out <= 1 + 1e-12)    # a correlation
    assert out[-1] == pytest.approx(1.0, abs=1e-12)                   # c = 1 is fixed
    assert np.all(np.diff(out) > -1e-12)                               # monotone in c
    assert np.all(qmf.chi(c[1:-1], phi, sigma_w, sigma_b) >= 0)


@settings(max_examples=40, deadline=None)
@given(quantized, sigma_w_st)
def test_chi_at_zero_is_at_most_one_without_bias(phi, sigma_w):
    """chi(0) is a squared correlation (Cauchy-Schwarz) and, for quantized phi, strictly below 1."""
    q = qmf.fixed_point_q(phi, sigma_w, 0.0)
    assume(0 < q < np.inf)  # odd N: the variance can die out, q* = 0
    x = qmf.chi(0.0, phi, sigma_w, 0.0)
    assert 0 < x < 1
    d = phi.spacing / math.sqrt(q)
    assert x == pytest.approx(qmf.chi_zero(phi.levels, d), rel=1e-10)   # depends on D/sqrt(q*) alone


BAD = [
    (lambda: qmf.QuantizedActivation(1), "levels"),
    (lambda: qmf.QuantizedActivation(2.5), "levels"),
    (lambda: qmf.QuantizedActivation("3"), "levels"),
    (lambda: qmf.QuantizedActivation(float("nan")), "levels"),
    (lambda: qmf.QuantizedActivation(4, spacing=0.0), "spacing"),
    (lambda: qmf.QuantizedActivation(4, spacing=-1.0), "spacing"),
    (lambda: qmf.QuantizedActivation(4, spacing=float("nan")), "spacing"),
    (lambda: qmf.QuantizedActivation(4, scale=0.0), "scale"),
    (lambda: qmf.variance_map(1.0, "tanh", 0.0, 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1.0, "tanh", -1.0, 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1.0, "tanh", float("nan"), 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1.0, "tanh", 1.0, -0.1), "sigma_b"),
    (lambda: qmf.variance_map(float("nan"), "tanh", 1.0, 0.0), "q"),
    (lambda: qmf.variance_map(-1.0, "tanh", 1.0, 0.0), "q"),
    (lambda: qmf.correlation_map(1.5, "tanh", 1.0, 0.0), "c"),
    (lambda: qmf.correlation_map([0.0, -1.01], "tanh", 1.0, 0.0), "c"),
    (lambda: qmf.correlation_map(float("nan"), "tanh", 1.0, 0.0), "c"),
    (lambda: qmf.chi(2.0, "sign", 1.0, 0.0), "c"),
    (lambda: qmf.chi(0.0, "sign", -1.0, 0.0), "sigma_w"),
    (lambda: qmf.fixed_point_q("tanh", 0.0, 0.0), "sigma_w"),
    (lambda: qmf.fixed_point_c("tanh", 1.0, -1.0), "sigma_b"),
    (lambda: qmf.depth_scale("tanh", float("nan"), 0.0), "sigma_w"),
    (lambda: qmf.chi_max(1), "levels"),
    (lambda: qmf.chi_max(3.5), "levels"),
    (lambda: qmf.max_depth(True), "levels"),
    (lambda: qmf.optimal_init(4, spacing=-0.1), "spacing"),
    (lambda: qmf.chi_zero(4, 0.0), "normalized_spacing"),
    (lambda: qmf.simulate_correlations("tanh", 1.0, 0.0, depth=2, width=8, c0=1.2), "c0"),
    (lambda: qmf.simulate_correlations("tanh", 1.0, 0.0, depth=-1, width=8, c0=0.2), "depth"),
]


@pytest.mark.parametrize("call,name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_correlation_map_without_fixed_point_is_an_error():
    with pytest.raises(ValueError, match="fixed point"):
        qmf.correlation_map(0.5, "linear", 2.0, 0.0)


def test_fixed_point_c_close_to_one():
    """With a bias a 16-level net's c* sits within 1e-2 of 1: the scan must find it there."""
    phi = qmf.QuantizedActivation(16)
    c_star = qmf.fixed_point_c(phi, 1.0, 0.5)
    assert 0.99 < c_star < 1
    assert qmf.correlation_map(c_star, phi, 1.0, 0.5) == pytest.approx(c_star, abs=1e-12)
    assert qmf.chi(c_star, phi, 1.0, 0.5) < 1


# --- several fixed points of the variance map: odd N without bias is bistable --------------------

def _phi3_second_moment(q):
    """E[phi_3(sqrt(q) z)^2] for three levels {-1, 0, 1}, thresholds +-1/2: 2 Phi(-1/(2 sqrt q)), by hand."""
    from scipy.special import ndtr
    return 2.0 * ndtr(-0.5 / np.sqrt(q))


def _roots_by_hand(sigma_w):
    """The positive roots of sigma_w^2 E[phi_3^2] = q, from a fine scan and Brent (independent of qmf_lite)."""
    from scipy.optimize import brentq
    g = lambda q: sigma_w**2 * _phi3_second_moment(q) - q  # noqa: E731
    grid = np.geomspace(1e-4, 10.0, 20001)
    v = g(grid)
    return [brentq(g, grid[k], grid[k + 1], xtol=1e-15) for k in np.nonzero(np.diff(np.sign(v)))[0]]


def test_three_levels_at_the_optimum_have_two_stable_fixed_points():
    init = qmf.optimal_init(3)
    q, stable = qmf.variance_fixed_points(init.activation, init.sigma_w, 0.0)
    q_u, q_star = _roots_by_hand(init.sigma_w)
    assert q[0] == 0.0 and q[1:] == pytest.approx([q_u, q_star], rel=1e-10)
    assert stable.tolist() == [True, False, True]
    assert q_star == pytest.approx(init.q_star, rel=1e-10)
    assert qmf.basin_boundary_q(init.activation, init.sigma_w, 0.0) == pytest.approx(q_u, rel=1e-10)
    # the numbers of the chapter: from 0.05 one step goes to 0.031 and on to 0; from 0.1 to 0.14 and on to q*
    assert float(qmf.variance_map(0.05, init.activation, init.sigma_w, 0.0)) == pytest.approx(0.0313, abs=5e-5)
    assert float(qmf.variance_map(0.1, init.activation, init.sigma_w, 0.0)) == pytest.approx(0.1406, abs=5e-5)
    assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0, q0=0.05) == 0.0
    assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0, q0=0.1) == pytest.approx(q_star, rel=1e-10)
    assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0, q0=0.999 * q_u) == 0.0
    assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0, q0=1.001 * q_u) == pytest.approx(q_star, rel=1e-10)


def test_the_second_stable_fixed_point_is_born_near_sigma_w_0_8685():
    # q* is born where sigma_w^2 = min_q q / E[phi_3^2] (a tangency), computed here by hand
    from scipy.optimize import minimize_scalar
    res = minimize_scalar(lambda lq: math.exp(lq) / _phi3_second_moment(math.exp(lq)), bounds=(-8, 4),
                          method="bounded", options={"xatol": 1e-12})
    sw_birth = math.sqrt(res.fun)
    assert sw_birth == pytest.approx(0.8685, abs=1e-4)
    phi3 = qmf.QuantizedActivation(3)
    assert qmf.variance_fixed_points(phi3, sw_birth - 0.002, 0.0)[0].tolist() == [0.0]
    q, stable = qmf.variance_fixed_points(phi3, sw_birth + 0.002, 0.0)
    assert len(q) == 3 and stable.tolist() == [True, False, True]
    assert np.isnan(qmf.basin_boundary_q(phi3, sw_birth - 0.002, 0.0))


def test_fixed_point_q_does_not_jump_over_a_close_pair_of_fixed_points():
    # at sigma_w = 0.87 the two positive fixed points are 0.161 and 0.194, within a factor 4 of each
    # other: iterating from q0 = 1 stops at 0.194 (a coarse factor-4 bracket search returned 0)
    phi3 = qmf.QuantizedActivation(3)
    q_u, q_star = _roots_by_hand(0.87)
    for q0 in (0.3, 0.5, 1.0, 2.0, 50.0):
        assert qmf.fixed_point_q(phi3, 0.87, 0.0, q0=q0) == pytest.approx(q_star, rel=1e-10)
    q = 1.0
    for _ in range(3000):                     # plain iteration reaches the same point
        q = float(qmf.variance_map(q, phi3, 0.87, 0.0))
    assert q == pytest.approx(q_star, rel=1e-6)
    assert qmf.fixed_point_q(phi3, 0.87, 0.0, q0=0.15) == 0.0   # below q_u = 0.161: dies


@pytest.mark.parametrize("levels", [5, 7, 15, 63])
def test_every_odd_level_count_is_bistable_at_its_optimum(levels):
    init = qmf.optimal_init(levels)
    q, stable = qmf.variance_fixed_points(init.activation, init.sigma_w, 0.0)
    assert stable.tolist() == [True, False, True]
    assert q[0] == 0.0 and 0 < q[1] < q[2] and q[2] == pytest.approx(init.q_star, rel=1e-9)
    for q0, end in ((0.99 * q[1], 0.0), (1.01 * q[1], q[2])):
        assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0, q0=q0) == pytest.approx(end, rel=1e-9)


def test_fixed_points_of_smooth_and_even_activations():
    q, stable = qmf.variance_fixed_points("tanh", 1.5, 0.0)      # chaotic tanh: 0 repels
    assert q[0] == 0.0 and stable.tolist() == [False, True]
    assert q[1] == pytest.approx(qmf.fixed_point_q("tanh", 1.5, 0.0), rel=1e-10)
    assert qmf.variance_fixed_points("tanh", 0.9, 0.0)[0].tolist() == [0.0]
    q, stable = qmf.variance_fixed_points("relu", 1.0, 0.5)      # sigma_b^2 / (1 - sigma_w^2 / 2)
    assert q == pytest.approx([0.5], rel=1e-12) and stable.tolist() == [True]
    phi4 = qmf.QuantizedActivation(4)                                    # even N: phi(0+) != 0, no zero fixed point
    q, stable = qmf.variance_fixed_points(phi4, 1.0, 0.0)
    assert len(q) == 1 and q[0] > 0 and stable.tolist() == [True]
    assert np.isnan(qmf.basin_boundary_q(phi4, 1.0, 0.0))
    assert qmf.basin_boundary_q(qmf.QuantizedActivation(3), [0.5, 1.1112], 0.0).shape == (2,)


@pytest.mark.parametrize("call,name", [
    (lambda: qmf.variance_fixed_points("tanh", [1.0, 2.0], 0.0), "sigma_w"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, -0.1), "sigma_b"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, q_min=0.0), "q_min"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, q_min=2.0, q_max=1.0), "q_min"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, q_max=float("inf")), "q_max"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, n_grid=1), "n_grid"),
    (lambda: qmf.basin_boundary_q("tanh", 0.0, 0.0), "sigma_w"),
    (lambda: qmf.basin_boundary_q("tanh", 1.0, 0.0, n_grid=2.5), "n_grid"),
    (lambda: qmf.basin_boundary_q("tanh", 1.0, 0.0, n_grid=10**30), "n_grid"),     # a 1e30-point grid
    (lambda: qmf.basin_boundary_q("tanh", 1.0, 0.0, q_max=1e308), "q_max"),          # beyond Q_STAR_MAX
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, q_min="1e-3"), "q_min"),
    (lambda: qmf.variance_fixed_points("tanh", 1.0, 0.0, q_max=True), "q_max"),
    # ReLU at sigma_w = 1e100 maps q = 1e300 to 5e499: an overflow, refused rather than a RuntimeWarning
    (lambda: qmf.variance_fixed_points("relu", 1e100, 0.0, q_max=1e300), "q_max"),
    (lambda: qmf.basin_boundary_q("relu", 1e100, 0.0, q_max=1e300), "sigma_w"),
    (lambda: qmf.fixed_point_q("tanh", 1.0, 0.0, q0=0.0), "q0"),
])
def test_fixed_point_search_rejects_bad_input(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_depth_scale_where_the_signal_dies():
    """Odd N at small sigma_w: q* = 0, no correlation to speak of; NaN on request, an error by default."""
    phi = qmf.QuantizedActivation(3)
    assert qmf.fixed_point_q(phi, 0.5, 0.0) == 0.0
    with pytest.raises(ValueError, match="fixed point"):
        qmf.depth_scale(phi, 0.5, 0.0)
    xi = qmf.depth_scale(phi, [0.5, 1.3], 0.0, dead="nan")
    assert np.isnan(xi[0])
    # where the signal lives, the same value as without the option, and -1/ln chi_zero(D / sqrt(q*))
    q_star = qmf.fixed_point_q(phi, 1.3, 0.0)
    assert xi[1] == qmf.depth_scale(phi, 1.3, 0.0)
    assert xi[1] == pytest.approx(-1 / np.log(qmf.chi_zero(3, phi.spacing / np.sqrt(q_star))), rel=1e-12)
    with pytest.raises(ValueError, match="dead"):
        qmf.depth_scale(phi, 1.3, 0.0, dead="zero")


def test_iterate_maps_argument_order_and_deprecated_order():
    new = qmf.iterate_maps("tanh", 1.5, 0.1, depth=4, q0=0.7, c0=0.2)
    with pytest.warns(DeprecationWarning, match="iterate_maps"):
        old = qmf.iterate_maps(0.7, 0.2, "tanh", 1.5, 0.1, 4)
    assert np.array_equal(new[0], old[0]) and np.array_equal(new[1], old[1])
    # q0 defaults to the fixed point, where q stays put
    q, _ = qmf.iterate_maps("tanh", 1.5, 0.1, depth=3, c0=0.5)
    assert q == pytest.approx(np.full(4, qmf.fixed_point_q("tanh", 1.5, 0.1)), rel=1e-12)
    with pytest.raises(ValueError, match="keywords"):
        qmf.iterate_maps("tanh", 1.5, 0.1, 4)
    with pytest.raises(ValueError, match="depth"):
        qmf.iterate_maps("tanh", 1.5, 0.1, c0=0.5)


def test_covariance_map_at_the_fixed_point_is_q_star_times_the_correlation_map():
    phi = qmf.QuantizedActivation(5)
    sw, sb = 1.2, 0.3
    q_star = qmf.fixed_point_q(phi, sw, sb)
    c = np.array([-0.4, 0.1, 0.8])
    assert qmf.covariance_map(q_star, c, phi, sw, sb) == pytest.approx(q_star * qmf.correlation_map(c, phi, sw, sb),
                                                                       rel=1e-13)
    # away from the fixed point: sigma_w^2 E[phi phi] + sigma_b^2 against a Monte Carlo mean
    est = qmf.monte_carlo_kernel(phi, 2.0, c, n_samples=200_000, seed=3)
    assert np.all(np.abs(est.z_score((qmf.covariance_map(2.0, c, phi, sw, sb) - sb**2) / sw**2)) < 4)
    with pytest.raises(ValueError, match="scalars"):
        qmf.covariance_map(1.0, 0.5, phi, [1.0, 2.0], 0.0)


@pytest.mark.parametrize("activation", ["sign", qmf.QuantizedActivation(3), "tanh", "erf", "hardtanh"])
@pytest.mark.parametrize("sigma_w", [1e7, 1e50, 1e100])
def test_fixed_point_q_of_a_bounded_activation_is_finite_at_any_sigma_w(activation, sigma_w):
    """q* <= sigma_w^2 sup phi^2 + sigma_b^2: before, the search stopped at 1e12 and returned inf."""
    act = qmf.get_activation(activation)
    q = qmf.fixed_point_q(act, sigma_w, 0.1)
    assert 0 < q < np.inf
    assert q == pytest.approx(sigma_w**2 * act.second_moment(q) + 0.01, rel=1e-12)   # a fixed point
    if activation == "sign":
        assert q == pytest.approx(sigma_w**2 + 0.01, rel=4e-16)


def test_fixed_point_q_of_relu_with_a_large_bias():
    """ReLU below criticality: q* = sigma_b^2 / (1 - sigma_w^2 / 2), beyond the old 1e12 search limit."""
    assert qmf.fixed_point_q("relu", 1.2, 1e7) == pytest.approx(1e14 / (1 - 0.72), rel=1e-12)
    assert qmf.fixed_point_q("relu", 1.2, 1e100) == pytest.approx(1e200 / (1 - 0.72), rel=1e-12)
    assert qmf.fixed_point_q("relu", 1e7, 0.1) == np.inf        # above criticality: q grows without bound
    assert qmf.fixed_point_q("linear", 1.5, 0.1, q0=1e308) == np.inf


def test_fixed_point_q_refuses_a_q_star_beyond_float64():
    big = qmf.StepActivation([0.0], [-1e100, 1e100])
    with pytest.raises(ValueError, match=r"sigma_w and sigma_b must keep q\*"):
        qmf.fixed_point_q(big, 1e100, 0.0)
    assert qmf.fixed_point_q(big, 1e49, 0.0) == pytest.approx(1e298, rel=1e-12)


@pytest.mark.parametrize("call,name", [
    (lambda: qmf.variance_map(1.0, "tanh", 1e308, 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1.0, "tanh", 1.0, 1e308), "sigma_b"),
    (lambda: qmf.variance_map(1.0, "tanh", 1e-300, 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1e300, "linear", 1e10, 0.0), "q"),
    (lambda: qmf.covariance_map(1e300, 0.5, "linear", 1e10, 0.0), "q"),
    (lambda: qmf.variance_map("3", "tanh", 1.0, 0.0), "q"),
    (lambda: qmf.variance_map(1.0, "tanh", "3", 0.0), "sigma_w"),
    (lambda: qmf.variance_map(1.0, "tanh", 1.0, True), "sigma_b"),
    (lambda: qmf.chi("0.5", "sign", 1.0, 0.0), "c"),
    (lambda: qmf.chi(True, "sign", 1.0, 0.0), "c"),
    (lambda: qmf.fixed_point_q("tanh", 1e308, 0.0), "sigma_w"),
    (lambda: qmf.correlation_map(0.3, "tanh", 1.0, 1e308), "sigma_b"),
    (lambda: qmf.depth_scale("tanh", 1.2, 0.1, dead=np.array([1.0, np.nan])), "dead"),
    (lambda: qmf.iterate_maps("tanh", 1.2, 0.1, depth=10**7, q0=1.0, c0=0.3), "depth"),
    (lambda: qmf.iterate_maps("relu", 1e100, 0.1, depth=4, q0=1.0, c0=0.3), "sigma_w"),
])
def test_overflow_and_non_numbers_are_refused(call, name):
    """1e308 overflowed sigma_w^2 (a leaked RuntimeWarning and inf); "3" and True were taken as numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            call()


def test_no_fixed_point_message_states_what_is_needed():
    with pytest.raises(ValueError, match=r"sigma_w and sigma_b must give the variance map a finite positive fixed point"):
        qmf.chi(0.3, "relu", 1.2, 0.0)


def test_depth_scale_when_the_bias_dominates_a_step_activation():
    """Small sigma_w with a bias puts c* within 1e-13 of 1, where chi of a step function is inf.

    Before, depth_scale returned -1/ln(inf) = -0.0 there (sigma_w <= 0.03 for N = 3), and NaN at
    sigma_w = 1e-300. The square-root cusp 1 - c' = alpha sqrt(1 - c) gives chi(c*) = 1/2 in the
    limit: at sigma_w = 0.5, where c* is still resolved, xi agrees with 1/ln 2 to 4e-8.
    """
    phi = qmf.QuantizedActivation(3)
    resolved = qmf.depth_scale(phi, 0.5, 0.1)
    assert qmf.fixed_point_c(phi, 0.5, 0.1) < 1.0
    assert resolved == pytest.approx(1 / math.log(2), rel=1e-7)
    xi = qmf.depth_scale(phi, [0.03, 1e-5, 1e-100], 0.1)
    assert np.all(xi == 1 / math.log(2))


def test_step_maps_far_above_the_thresholds():
    """sigma_w = 1e7 drives q to 1e14: before, the kernel's Chebyshev fit asked for a 2 GiB matrix."""
    phi = qmf.QuantizedActivation(3)
    q, c = qmf.iterate_maps(phi, 1e7, 0.1, depth=3, q0=1.0, c0=0.3)
    assert q[1] == pytest.approx(1e14 * phi.second_moment(1.0) + 0.01, rel=1e-14)
    assert np.all(np.abs(c) <= 1) and np.all(np.diff(c) < 0)   # decorrelating: the sign-like regime
    # at q* ~ 1e14 the map is the arcsine law of sign (thresholds 0.5 are 5e-8 standard deviations)
    assert qmf.correlation_map(0.3, phi, 1e7, 0.0) == pytest.approx(2 / np.pi * np.arcsin(0.3), rel=1e-6)


def test_phase_diagram_agrees_with_the_single_functions():
    """Every entry equals what the function of that quantity computes on its own (alive points)."""
    phi = qmf.QuantizedActivation(4)
    sw, sb = np.array([0.9, 1.2, 2.0]), np.array([0.0, 0.1, 0.4])
    pd = qmf.phase_diagram(phi, sw, sb)
    np.testing.assert_allclose(pd["q_star"], qmf.fixed_point_q(phi, sw, sb), rtol=1e-14)
    np.testing.assert_allclose(pd["c_star"], qmf.fixed_point_c(phi, sw, sb), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(pd["xi_c"], qmf.depth_scale(phi, sw, sb), rtol=1e-12)
    slope = qmf.variance_map_slope(pd["q_star"], phi, sw, sb)
    np.testing.assert_allclose(pd["xi_q"], -1 / np.log(slope), rtol=1e-9)
    assert np.all(pd["chi1"] == np.inf) and not pd["dead"].any()
    assert pd["antipodal"].tolist() == [True, False, False]


def test_phase_diagram_hardtanh_edge_of_chaos():
    """Hard-tanh: chi1 = sigma_w^2 P(|u| < 1) crosses 1 between the phases; c* = 1 in the ordered one."""
    sw, sb = 1.2, np.array([0.05, 0.5])
    pd = qmf.phase_diagram("hardtanh", sw, sb)
    q = pd["q_star"]
    np.testing.assert_allclose(pd["chi1"], sw**2 * special.erf(1 / np.sqrt(2 * q)), rtol=1e-10)
    assert pd["chi1"][0] == pytest.approx(1.1645967, abs=1e-6) and pd["chi1"][1] < 1
    assert pd["c_star"][0] == pytest.approx(0.0737740, abs=1e-6) and pd["c_star"][1] == 1.0
    np.testing.assert_allclose(pd["xi_c"][1], -1 / np.log(pd["chi1"][1]), rtol=1e-12)


def test_phase_diagram_dead_phase_and_antipodal_point_of_odd_levels():
    """N = 3 without bias: dead below sigma_w = 0.8685 (where q* is born), alive above; c = -1 is an
    exact fixed point only without bias, and a bias sends it to -1 + 2 sigma_b^2 / q*."""
    phi = qmf.QuantizedActivation(3)
    pd = qmf.phase_diagram(phi, [0.86, 0.88, 1.2], 0.0)
    assert pd["dead"].tolist() == [True, False, False] and np.isnan(pd["xi_c"][0]) and np.isnan(pd["c_star"][0])
    assert pd["antipodal"].all() and pd["c_star"][2] == 0.0
    assert pd["xi_c"][2] == pytest.approx(4.676741, abs=1e-6)
    assert float(qmf.correlation_map(-1.0, phi, 1.2, 0.0)) == pytest.approx(-1.0, abs=1e-14)
    sb = 0.1
    q_b = float(qmf.fixed_point_q(phi, 1.2, sb))
    assert float(qmf.correlation_map(-1.0, phi, 1.2, sb)) == pytest.approx(-1 + 2 * sb**2 / q_b, rel=1e-12)
    assert not qmf.phase_diagram(phi, 1.2, sb)["antipodal"]


@pytest.mark.parametrize("kwargs,name", [(dict(sigma_w=0.0), "sigma_w"), (dict(sigma_b=-0.1), "sigma_b"),
                                         (dict(q0=0.0), "q0")])
def test_phase_diagram_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        qmf.phase_diagram(**(dict(activation="tanh", sigma_w=1.2, sigma_b=0.1) | kwargs))


def test_a_signal_that_dies_gives_nan_correlations_without_warnings():
    """N = 3 without bias below the collapse threshold: q reaches exactly 0 (every pre-activation on the zero
    level) within a few layers; from there c is NaN, as documented, and q stays 0, with no RuntimeWarning
    (the package's warnings are errors in the tests)."""
    q, c = qmf.iterate_maps(qmf.QuantizedActivation(3), 0.5, 0.0, depth=30, q0=1.0, c0=[0.5, 0.9])
    dead = np.flatnonzero(q[:, 0] == 0)
    assert dead.size and np.array_equal(dead, np.arange(dead[0], 31))
    assert np.all(np.isnan(c[dead])) and np.all(np.isfinite(c[:dead[0]]))
    assert bool(qmf.phase_diagram(qmf.QuantizedActivation(3), 0.5, 0.0)["dead"])


@pytest.mark.parametrize("levels", [3, 4, 5, 6])
def test_expectations_at_zero_variance_are_phi_of_zero(levels):
    """At q = 0 every pre-activation is exactly 0: the mean is phi(0), the second moment and the kernel
    phi(0)^2 (for even N, 0 lies on a threshold and the lookup gives the level above it)."""
    phi = qmf.QuantizedActivation(levels)
    at0 = float(phi(0.0))
    assert at0 == (0.0 if levels % 2 else phi.values[levels // 2])
    assert phi.mean(0.0) == at0 and phi.second_moment(0.0) == at0**2
    assert np.all(phi.kernel(0.0, np.array([-0.5, 0.0, 0.7])) == at0**2)
    assert phi.second_moment(np.array([0.0, 1.0]))[1] == phi.second_moment(1.0)


@pytest.mark.parametrize("activation", ["hardtanh", "tanh"])
def test_the_critical_point_without_bias_is_dead(activation):
    """At sigma_w = 1, sigma_b = 0, E[phi^2] < q for every q > 0 (hard-tanh: E[min(u^2, 1)]; tanh: q - 2q^2 + ...),
    so q = 0 is the only fixed point, as at 0.999. Rounding made g = E[phi^2] - q read 0 or positive at small q:
    hard-tanh reported q* = 0.0131 and 385 fixed points, tanh q* = 1.3e-14 and xi_c = 4e13."""
    for sw in (0.999, 1.0):
        assert qmf.fixed_point_q(activation, sw, 0.0) == 0.0
        roots, _ = qmf.variance_fixed_points(activation, sw, 0.0)
        assert list(roots) == [0.0]
        assert bool(qmf.phase_diagram(activation, sw, 0.0)["dead"])
    q_star = qmf.fixed_point_q(activation, 1.01, 0.0)          # just above: alive, with a small q*
    assert 0 < q_star < 0.2 and list(qmf.variance_fixed_points(activation, 1.01, 0.0)[0]) == pytest.approx([0.0, q_star])


def test_a_variance_at_the_bottom_of_float64_is_no_overflow():
    """q0 = the smallest normal float64 (a long fuzz hunt's find): the thresholds over sqrt(q) overflow the
    joint-density sum's exponents to inf, which means exp(-inf) = 0 there, not a warning. Both inputs then
    sit on the middle level 0 of N = 3, so layer 1 sees only the bias: c^1 = 1, and q^1 = sigma_b^2."""
    q, c = qmf.iterate_maps(qmf.QuantizedActivation(3, 1.0, 1.0), 1.2, 0.1, depth=3,
                            q0=2.2250738585072014e-308, c0=0.3)
    assert c[0] == 0.3 and np.array_equal(c[1:], [1.0, 1.0, 1.0])
    assert q[1] == pytest.approx(0.01, rel=1e-12)
