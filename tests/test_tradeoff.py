"""The trade-off: reference values, fitted slopes, the initialization, large N, Lloyd-Max."""
from __future__ import annotations

import math
import time
import warnings

import mpmath
import numpy as np
import pytest

import qmf_lite as qmf

REFERENCE = {3: (0.190174, 1.2240), 4: (0.118846, 0.9957), 16: (0.011543, 0.3352)}
FIG2_N = list(range(3, 65)) + [125, 128, 255, 256, 512, 515, 1024, 1025]


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
    assert len(qmf.FIG2_LEVELS) == 70 and qmf.FIG2_LEVELS[:2] == (3, 4) and 64 in qmf.FIG2_LEVELS


@pytest.mark.parametrize("call", [
    lambda n: qmf.chi_max(n), lambda n: qmf.chi_zero(n, 0.3), lambda n: qmf.quantization_error(n, 0.3),
    lambda n: qmf.optimal_depth_scale(n), lambda n: qmf.max_depth(n), lambda n: qmf.optimal_init(n),
])
@pytest.mark.parametrize("levels", [2**20 + 1, 1e7, 1e308, "16", True])
def test_levels_beyond_the_direct_sums_are_refused(call, levels):
    """1e308 asked numpy for a 1e308-long array ('Maximum allowed size exceeded', naming nothing),
    1e7 ran for tens of seconds; the O(N) sums take levels up to 2**20 (MAX_LEVELS)."""
    with pytest.raises(ValueError, match=r"\blevels must be an integer"):
        call(levels)


def test_chi_max_complement_must_be_a_bool():
    with pytest.raises(ValueError, match=r"\bcomplement must be True or False"):
        qmf.chi_max(16, complement=np.array([1.0, np.nan]))


@pytest.mark.parametrize("call", [lambda d: qmf.chi_zero(16, d), lambda d: qmf.quantization_error(16, d)])
@pytest.mark.parametrize("spacing", [1e308, 1e-300, None, "0.3"])
def test_normalized_spacing_range(call, spacing):
    """1e308 overflowed the thresholds (a leaked RuntimeWarning); None said only 'is required'."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"\bnormalized_spacing must"):
            call(spacing)


def test_chi_zero_with_every_threshold_in_the_far_tail():
    """Odd N, D/2 > 38: S and V both underflow to 0 (0/0 gave NaN and a RuntimeWarning); chi(0) < 1e-300."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert qmf.chi_zero(3, [100.0, 1e100]).tolist() == [0.0, 0.0]
        assert 0 < qmf.chi_zero(3, 20.0) < 1e-20


def test_max_depth_overflow_is_refused():
    with pytest.raises(ValueError, match=r"\bmultiple must be at most"):
        qmf.max_depth(16, 1e308)


@pytest.mark.parametrize("depth,multiple", [(1e308, 6.0), (1e12, 6.0), (500.0, 1e-300)])
def test_levels_for_depth_beyond_reach_is_a_clear_error(depth, multiple):
    """levels_for_depth(1e308) never returned (its memory grew past 19 GB); 1e12 took 22 s."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"\bdepth must be at most max_depth\(65536, multiple="):
        qmf.levels_for_depth(depth, multiple)
    assert time.perf_counter() - start < 30   # about 1 s (the doubling to 2**16), generous for shared CPUs
    reach = qmf.max_depth(2**16, 6.0)
    assert qmf.levels_for_depth(reach)[0] == 2**16


def test_lloyd_max_ranges():
    with pytest.raises(ValueError, match=r"\blevels must be an integer in \[2, 1024\]"):
        qmf.lloyd_max(1e7)
    with pytest.raises(ValueError, match=r"\bq_star must lie in \[1e-100, 1e100\]"):
        qmf.lloyd_max_activation(8, q_star=1e308)


@pytest.mark.parametrize("kwargs", [dict(scale=True), dict(scale=np.array([1.0, 2.0])), dict(scale="1"),
                                    dict(spacing=0.5)])
def test_optimal_init_of_an_activation_takes_no_scale_or_spacing(kwargs):
    """scale=True passed as 1.0; an array raised numpy's 'truth value is ambiguous'."""
    with pytest.raises(ValueError, match=r"scale and spacing must be left at their defaults"):
        qmf.optimal_init(qmf.lloyd_max_activation(4), **kwargs)
    with pytest.raises(ValueError, match=r"scale and spacing must be left at their defaults"):
        qmf.optimal_init(qmf.QuantizedActivation(4), **kwargs)


@pytest.mark.parametrize("kwargs,name", [(dict(spacing=1e-300), "spacing"), (dict(scale=1e308), "scale")])
def test_optimal_init_scale_and_spacing_ranges(kwargs, name):
    """spacing = 1e-300 made q* underflow to 0 (ZeroDivisionError); scale = 1e308 overflowed."""
    with pytest.raises(ValueError, match=rf"\b{name} must lie in"):
        qmf.optimal_init(16, **kwargs)
