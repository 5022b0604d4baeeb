"""The trade-off: reference values, fitted slopes, the initialization, large N, Lloyd-Max."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import qmf_lite as qmf

#: exact values, rounded (the authors' printed ones, with their source, are in qmf_lite.reference)
REFERENCE = {3: (0.190174, 1.2240), 4: (0.118846, 0.9957), 16: (0.011543, 0.3352)}
FIG2_N = list(qmf.FIG2_LEVELS)


@pytest.mark.parametrize("levels", sorted(REFERENCE))
def test_reference_values(levels):
    gap, spacing = REFERENCE[levels]
    chi, d = qmf.chi_max(levels)
    assert round(1 - chi, 6) == gap
    assert round(d, 4) == spacing


def test_chi_max_is_a_maximum():
    chi, d = qmf.chi_max(7)
    grid = d * np.linspace(0.5, 1.5, 2001)
    assert qmf.chi_zero(7, grid).max() <= chi + 1e-15
    assert qmf.chi_zero(7, d) == pytest.approx(chi, abs=1e-15)


def test_fitted_slopes_of_figure_2():
    n = np.array(FIG2_N)
    gaps = np.array([qmf.chi_max(k, complement=True)[0] for k in FIG2_N])
    spacings = np.array([qmf.chi_max(k)[1] for k in FIG2_N])
    slope_chi = np.polyfit(np.log(n + 1), np.log(gaps), 1)[0]
    slope_d = np.polyfit(np.log(n + 1), np.log(spacings), 1)[0]
    assert slope_chi == pytest.approx(-1.82, abs=0.01)
    assert slope_d == pytest.approx(-0.88, abs=0.01)


@pytest.mark.parametrize("levels", [3, 4, 9, 16])
def test_optimal_init_reaches_chi_max(levels):
    init = qmf.optimal_init(levels)
    assert init.sigma_b == 0.0
    assert qmf.fixed_point_q(init.activation, init.sigma_w, 0.0) == pytest.approx(init.q_star, rel=1e-9)
    assert init.normalized_spacing == pytest.approx(qmf.chi_max(levels)[1], rel=1e-12)
    xi = qmf.depth_scale(init.activation, init.sigma_w, 0.0)
    assert xi == pytest.approx(-1 / math.log(qmf.chi_max(levels)[0]), rel=1e-8)
    assert init.max_depth == pytest.approx(6 * xi, rel=1e-8) == pytest.approx(qmf.max_depth(levels), rel=1e-8)
    # moving sigma_w away from the optimum lowers chi(0)
    for factor in (0.9, 1.1):
        assert qmf.chi(0.0, init.activation, factor * init.sigma_w, 0.0) < init.chi


def test_optimal_init_with_other_scale_and_spacing():
    a = qmf.optimal_init(6)
    b = qmf.optimal_init(6, scale=2.0, spacing=0.5)
    assert b.chi == a.chi and b.normalized_spacing == pytest.approx(a.normalized_spacing)
    assert b.activation.spacing == 0.5 and b.activation.scale == 2.0
    # sigma_w = D / (D_opt sqrt(E[phi^2])); E[phi^2] scales with A^2
    assert b.sigma_w == pytest.approx(a.sigma_w * (0.5 / a.activation.spacing) / 2.0, rel=1e-12)


def test_sign_has_no_optimal_spacing():
    chi, d = qmf.chi_max(2)
    assert chi == pytest.approx(2 / math.pi) and math.isnan(d)
    init = qmf.optimal_init(2)
    assert init.q_star == 1.0 and init.sigma_w == pytest.approx(1.0)


def independent_gap(levels, spacing, digits=40):
    """1 - S^2/V in multiprecision: no cancellation problem at 40 digits."""
    mpmath.mp.dps = digits
    d = mpmath.mpf(spacing)
    t = [d * (mpmath.mpf(i) - mpmath.mpf(levels - 2) / 2) for i in range(levels - 1)]
    # thresholds are symmetric: S = 2 sum over t > 0 (+ pdf(0) for even N)
    pos = [x for x in t if x > 0]
    s = 2 * sum(mpmath.npdf(x) for x in pos) + (mpmath.npdf(0) if levels % 2 == 0 else 0)
    upper = [mpmath.ncdf(-x) for x in t]
    lower = [1 - u for u in upper]
    acc, before = mpmath.mpf(0), mpmath.mpf(0)
    for lo, up in zip(lower, upper):
        acc += up * (lo + 2 * before)
        before += lo
    return float(1 - s * s / acc)


@pytest.mark.parametrize("levels", [5, 64, 3000])
def test_quantization_error_against_multiprecision(levels):
    d = qmf.chi_max(levels)[1]
    for spacing in (d, 1.3 * d):
        assert qmf.quantization_error(levels, spacing) == pytest.approx(independent_gap(levels, spacing), rel=1e-12)


def test_large_n_without_cancellation():
    levels = 20_000
    gap, d = qmf.chi_max(levels, complement=True)
    assert gap == pytest.approx(independent_gap(levels, d), rel=1e-10)
    naive = 1 - qmf.tradeoff._naive_parts(levels, d)[0] ** 2 / qmf.tradeoff._naive_parts(levels, d)[1]
    assert abs(naive - gap) / gap > 1e-10  # what the cancellation-free path avoids


def test_million_levels():
    gap, d = qmf.chi_max(10**6, complement=True)
    assert 1.5e-11 < gap < 1.65e-11
    # uniform-quantizer asymptotics: the granular error dominates, gap ~ D^2 / 12
    assert gap == pytest.approx(d * d / 12, rel=0.01)


def test_levels_for_depth():
    assert qmf.levels_for_depth(500) == (16, 4)
    n, bits = qmf.levels_for_depth(2000)
    assert qmf.max_depth(n) >= 2000 > qmf.max_depth(n - 1)
    assert bits == math.ceil(math.log2(n))
    assert qmf.levels_for_depth(5) == (2, 1)


def test_lloyd_max_known_values():
    # Max (1960): N = 2 distortion 1 - 2/pi; N = 4: 0.1175
    assert qmf.lloyd_max(2)[2] == pytest.approx(1 - 2 / math.pi, rel=1e-10)
    t, y, dist = qmf.lloyd_max(4)
    assert dist == pytest.approx(0.11748, abs=1e-5)
    assert t == pytest.approx([-0.9816, 0, 0.9816], abs=1e-4)


@pytest.mark.parametrize("levels", [3, 8])
def test_lloyd_max_activation_chi_is_one_minus_distortion(levels):
    act = qmf.lloyd_max_activation(levels, q_star=1.0)
    sigma_w = 1.0 / math.sqrt(float(act.second_moment(1.0)))  # puts q* at 1
    assert qmf.fixed_point_q(act, sigma_w, 0.0) == pytest.approx(1.0, rel=1e-9)
    assert qmf.chi(0.0, act, sigma_w, 0.0) == pytest.approx(1 - qmf.lloyd_max(levels)[2], rel=1e-9)
    assert 1 - qmf.lloyd_max(levels)[2] > qmf.chi_max(levels)[0]  # non-uniform beats uniform


def test_optimal_depth_scale_bits_and_gap():
    for n in (2, 3, 16, 100):
        init = qmf.optimal_init(n)
        gap, _ = qmf.chi_max(n, complement=True)
        assert qmf.optimal_depth_scale(n) == -1 / math.log1p(-gap) == init.depth_scale
        assert qmf.max_depth(n, 6.0) == pytest.approx(6 * qmf.optimal_depth_scale(n), rel=1e-15)
        assert init.gap == gap and init.bits == qmf.bits(n) == math.ceil(math.log2(n))
    assert [qmf.bits(n) for n in (2, 3, 4, 5, 255, 256, 257)] == [1, 2, 2, 3, 8, 8, 9]


def test_deprecated_spacing_keyword():
    with pytest.warns(DeprecationWarning, match="normalized_spacing"):
        old = qmf.chi_zero(4, spacing=0.9)
    assert old == qmf.chi_zero(4, normalized_spacing=0.9) == qmf.chi_zero(4, 0.9)
    with pytest.warns(DeprecationWarning):
        assert qmf.quantization_error(4, spacing=0.9) == qmf.quantization_error(4, 0.9)
    with pytest.raises(ValueError, match="not both"):
        qmf.chi_zero(4, 0.9, spacing=0.9)


def test_optimal_init_of_a_step_activation():
    """Lloyd-Max levels designed for N(0, 1): the optimum is at q* = 1, with chi = 1 - distortion."""
    for n in (3, 8):
        act = qmf.lloyd_max_activation(n)
        init = qmf.optimal_init(act)
        distortion = qmf.lloyd_max(n)[2]
        assert init.q_star == pytest.approx(1.0, rel=1e-6)
        assert init.chi == pytest.approx(1 - distortion, rel=1e-12)
        # the fixed point of the variance map at sigma_w is q*, and chi(0) there is init.chi
        assert qmf.fixed_point_q(act, init.sigma_w, 0.0) == pytest.approx(init.q_star, rel=1e-10)
        assert qmf.chi(0.0, act, init.sigma_w, 0.0) == pytest.approx(init.chi, rel=1e-9)
        assert init.chi > qmf.chi_max(n)[0]                                  # better than uniform
    # a uniform activation passed as such gives the same scheme as its number of levels
    assert qmf.optimal_init(qmf.QuantizedActivation(6)).sigma_w == qmf.optimal_init(6).sigma_w
    with pytest.raises(ValueError, match="odd"):
        qmf.optimal_init(qmf.StepActivation([-0.3, 0.5], [-1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="scale and spacing"):
        qmf.optimal_init(qmf.lloyd_max_activation(4), spacing=0.3)


def test_lloyd_max_warns_when_not_converged():
    with pytest.warns(RuntimeWarning, match="max_iter"):
        qmf.lloyd_max(16, max_iter=3)


def test_fig2_levels():
    # the list of the authors' Fig. 2 notebook: 3..63 (no 64) and eight larger N (see test_reference.py)
    assert len(qmf.FIG2_LEVELS) == 69 and qmf.FIG2_LEVELS[:2] == (3, 4) and 64 not in qmf.FIG2_LEVELS


def test_outermost_threshold_grows_like_sqrt_4_ln_n():
    """T_opt / sqrt(2 ln N) = 1.14, 1.24, 1.28 at N = 1e2, 1e4, 1e6 and rising; T_opt / sqrt(4 ln N) climbs to 1."""
    pinned = {2: (1.1401, 0.8062), 4: (1.2407, 0.8773), 6: (1.2823, 0.9067)}
    previous = 0.0
    for e, (r2, r4) in pinned.items():
        n = 10**e
        t_opt = qmf.chi_max(n)[1] * (n - 2) / 2
        assert t_opt / math.sqrt(2 * math.log(n)) == pytest.approx(r2, abs=2e-4)
        assert t_opt / math.sqrt(4 * math.log(n)) == pytest.approx(r4, abs=2e-4)
        assert previous < r4 < 1
        previous = r4
        # the two-term model (granular T^2/(3N^2) + clipping 4 phi(T)/T^3) puts T within 4%
        g = lambda t: 2 * t / (3 * n * n) - 4 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi) * (1 / t**2 + 3 / t**4)  # noqa: E731
        from scipy.optimize import brentq
        assert brentq(g, 2.0, 10.0, xtol=1e-12) == pytest.approx(t_opt, rel=0.04)


def test_optimal_spacing_at_100_levels_by_a_scan():
    """An independent maximisation (a dense scan of the cancellation-free error) agrees with chi_max(100)."""
    d_lib = qmf.chi_max(100)[1]
    grid = d_lib * np.linspace(0.9, 1.1, 4001)
    errors = qmf.quantization_error(100, grid)
    assert grid[np.argmin(errors)] == pytest.approx(d_lib, abs=2 * (grid[1] - grid[0]))


def test_naive_difference_loses_digits_at_a_million_levels():
    # the chapter's claim: 1 - S^2/V is off by a relative ~3e-4 at N = 1e6, the cell sum is not
    gap, d = qmf.chi_max(10**6, complement=True)
    s, v = qmf.tradeoff._naive_parts(10**6, d)
    assert 1e-4 < abs((1 - s * s / v) - gap) / gap < 1e-3
