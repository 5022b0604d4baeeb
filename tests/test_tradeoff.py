"""The trade-off: reference values, fitted slopes, the initialization, large N, Lloyd-Max."""
from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
from scipy import integrate, optimize, special

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
    """The fits of Fig. 2 on the exact values, to the 1e-4 that those values allow (slopes of ln against
    ln(N + 1) over the authors' 69 N): -1.8158 for the gap, the paper's 1.82 to two digits, and -0.8835
    for the spacing (the authors' -0.8790 is a fit to points of their grid of step 2/1999, test_reference)."""
    n = np.array(FIG2_N)
    gaps = np.array([qmf.chi_max(k, complement=True)[0] for k in FIG2_N])
    spacings = np.array([qmf.chi_max(k)[1] for k in FIG2_N])
    slope_chi = np.polyfit(np.log(n + 1), np.log(gaps), 1)[0]
    slope_d = np.polyfit(np.log(n + 1), np.log(spacings), 1)[0]
    assert slope_chi == pytest.approx(-1.8158, abs=1e-4) and round(-slope_chi, 2) == 1.82
    assert slope_d == pytest.approx(-0.8835, abs=1e-4)


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


# ---------------------------------------------------------------------------------------------
# chi_max in O(1): the Euler-Maclaurin path (qmf_lite._uniform_em) against independent sums
# ---------------------------------------------------------------------------------------------

def direct_gap_chunked(levels, spacing, chunk=1 << 19):
    """1 - chi(0) by O(N) sums over the right half, in chunks: an implementation independent of qmf_lite.

    With centred levels j, cells z = D j + s and the best gain beta = S / V,
    ``gap = A + 2 delta B + delta^2 C + 2 tail`` (delta = D - beta), with A = sum int s^2 pdf,
    B = sum j int s pdf, C = sum j^2 int pdf over the interior cells (4-point Gauss-Legendre, exact
    to (D T)^8, i.e. for large N only), and the outer cell by quad. V by summation by parts,
    ``1/4 [even N] + (4/D) sum_{t>0} t Phi(-t)``: positive terms, no differences of cell masses
    (which lose 1e-8 relative each at N = 1e9). Chunk sums are added with math.fsum.
    """
    d = float(spacing)
    even = levels % 2 == 0
    n_right = (levels - 2) // 2 + 1 if even else (levels - 1) // 2       # thresholds t >= 0
    x, w = np.polynomial.legendre.leggauss(4)
    s_nodes, s_w = 0.5 * d * x, 0.5 * d * w
    sums = {"S": [], "V": [], "A": [], "B": [], "C": []}
    for start in range(0, n_right, chunk):
        n = np.arange(start, min(start + chunk, n_right), dtype=np.float64)
        t = d * (n if even else n + 0.5)
        pos = t > 0
        sums["S"].append(2.0 * np.sum(np.exp(-0.5 * t[pos] ** 2)) / math.sqrt(2 * math.pi))
        sums["V"].append(4.0 / d * np.sum(t[pos] * special.ndtr(-t[pos])))
        # right-hand interior cells: even N midpoints (n + 1/2) D, n < n_right - 1; odd N n D (n = 0 once)
        j = (n[n < n_right - 1] + 0.5) if even else n
        z = d * j[:, None] + s_nodes[None, :]
        dens = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        factor = np.full(j.size, 2.0)
        if not even and start == 0:
            factor[0] = 1.0
        sums["A"].append(np.sum(factor * ((dens * s_nodes ** 2) @ s_w)))
        sums["B"].append(np.sum(factor * j * ((dens * s_nodes) @ s_w)))
        sums["C"].append(np.sum(factor * j * j * (dens @ s_w)))
    total = {k: math.fsum(v) for k, v in sums.items()}
    s_sum = total["S"] + (1.0 / math.sqrt(2 * math.pi) if even else 0.0)
    v_sum = total["V"] + (0.25 if even else 0.0)
    delta = d - s_sum / v_sum
    t_max = d * (levels - 2) / 2.0
    e = delta * (levels - 1) / 2.0 - 0.5 * d            # t_max - beta (N - 1) / 2, no cancellation
    tail = math.exp(-0.5 * t_max ** 2) / math.sqrt(2 * math.pi) * integrate.quad(
        lambda u: (u + e) ** 2 * math.exp(-t_max * u - 0.5 * u * u), 0, math.inf,
        epsabs=0, epsrel=1e-13, limit=200)[0]
    return total["A"] + 2.0 * delta * total["B"] + delta * delta * total["C"] + 2.0 * tail


def direct_stationarity(levels, spacing):
    """e - alpha = -E[Q (z - Q)] by O(N) cell sums: zero at the optimal spacing (independent of qmf_lite)."""
    d = float(spacing)
    even = levels % 2 == 0
    t = d * (levels - 2) / 2.0
    j = np.arange(levels // 2 - 1 if even else (levels - 1) // 2) + (0.5 if even else 0.0)
    m = d * j
    x, w = np.polynomial.legendre.leggauss(8)
    s = 0.5 * d * x
    dens = np.exp(-0.5 * (m[:, None] + s) ** 2) / math.sqrt(2 * math.pi)
    interior = 2.0 * np.sum(m * ((dens * s) @ (0.5 * d * w)))     # each term < 0
    outer = 2.0 * (t + 0.5 * d) * math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) * integrate.quad(
        lambda u: (u - 0.5 * d) * math.exp(-t * u - 0.5 * u * u), 0, math.inf,
        epsabs=0, epsrel=1e-13, limit=200)[0]
    return -(interior + outer)


def em_gap_multiprecision(levels, spacing, terms=30, digits=40):
    """The expansion of qmf_lite._uniform_em at 40 digits, with 30 terms and adaptive quadrature.

    Checks the float64 implementation (truncation, Gauss-Legendre, continued fraction, rounding),
    not the derivation (which the direct sums check). No aliasing terms: 0 for D < 0.15.
    """
    mpmath.mp.dps = digits
    d = mpmath.mpf(spacing)
    t = d * (levels - 2) / 2

    def he_odd(x):  # He_1, He_3, ..., He_{2 terms - 1}
        out, h0, h1 = [], mpmath.mpf(1), x
        for n in range(1, 2 * terms):
            if n % 2:
                out.append(h1)
            h0, h1 = h1, x * h1 - n * h0
        return out

    trap = [mpmath.bernoulli(2 * k) / mpmath.factorial(2 * k) for k in range(1, terms + 1)]
    mid = [(mpmath.mpf(2) ** (1 - 2 * k) - 1) * trap[k - 1] for k in range(1, terms + 1)]
    p = mpmath.npdf(t)
    alpha = 2 * mpmath.ncdf(-t) - d * p + 2 * p * mpmath.fsum(
        a * d ** (2 * k + 2) * h for k, (a, h) in enumerate(zip(trap, he_odd(t))))

    def integrand(u):
        em = mpmath.fsum(c * d ** (2 * k + 2) * h for k, (c, h) in enumerate(zip(mid, he_odd(t + u))))
        return u * u * (mpmath.ncdf(u - t) + mpmath.npdf(t + u) * em)

    gran = d ** 2 / 12 - 2 / d * mpmath.quad(integrand, [-d / 2, 0, d / 2])
    over = 2 * mpmath.quad(lambda u: (u - d / 2) ** 2 * mpmath.npdf(t + u), [0, 1, mpmath.inf])
    e = gran + over
    return float((e - alpha ** 2) / (1 + e - 2 * alpha))


def test_expansion_building_blocks_with_sympy():
    """The identities the expansion of qmf_lite._uniform_em rests on, checked symbolically."""
    import sympy as sp

    x, u, s_, t_, d, alpha, e = sp.symbols("x u s t D alpha e", real=True)
    n = sp.Symbol("n", positive=True, integer=True)
    pdf = sp.exp(-x ** 2 / 2) / sp.sqrt(2 * sp.pi)
    # phi^(m) = (-1)^m He_m phi with He from its recurrence, by induction: (He_m phi)' = -He_{m+1} phi,
    # i.e. He_m' - x He_m = -He_{m+1}
    he = [sp.Integer(1), x]
    for m in range(1, 24):
        he.append(sp.expand(x * he[m] - m * he[m - 1]))
    for m in range(0, 24):
        assert sp.expand(sp.diff(he[m], x) - x * he[m] + he[m + 1]) == 0
    # midpoint-rule coefficients B_2k(1/2) = (2^(1-2k) - 1) B_2k; the module's tables
    from qmf_lite import _uniform_em

    for k in range(1, 13):
        assert sp.bernoulli(2 * k, sp.Rational(1, 2)) == (sp.Integer(2) ** (1 - 2 * k) - 1) * sp.bernoulli(2 * k)
    for k in range(1, _uniform_em.MAX_TERMS + 1):
        trap = sp.bernoulli(2 * k) / sp.factorial(2 * k)
        assert _uniform_em._TRAP[k - 1] == pytest.approx(float(trap), rel=2e-16)
        assert _uniform_em._MID[k - 1] == pytest.approx(float(sp.bernoulli(2 * k, sp.Rational(1, 2)) / sp.factorial(2 * k)), rel=2e-16)
    # 1 - chi = (e - alpha^2) / (1 + e - 2 alpha) from E[zQ] = 1 - alpha, E[Q^2] = 1 - 2 alpha + e
    assert sp.simplify(1 - (1 - alpha) ** 2 / (1 - 2 * alpha + e) - (e - alpha ** 2) / (1 + e - 2 * alpha)) == 0
    # int_0^x t Phi(-t) dt = x^2 Phi(-x) / 2 + P(3/2, x^2/2) / 4, and P(3/2, x^2/2) = int_{-x}^x z^2 phi
    x = sp.Symbol("x", positive=True)                  # the endpoint x = T (or T + D/2) > 0
    tail = sp.erfc(x / sp.sqrt(2)) / 2
    p32 = sp.lowergamma(sp.Rational(3, 2), x ** 2 / 2) / sp.gamma(sp.Rational(3, 2))
    antiderivative = x ** 2 * tail / 2 + p32 / 4
    assert sp.simplify(sp.diff(antiderivative, x) - x * tail) == 0 and sp.limit(antiderivative, x, 0) == 0
    assert sp.simplify(sp.diff(p32, x) - 2 * x ** 2 * pdf.subs(sp.Symbol("x", real=True), x)) == 0
    # the lower endpoint of the summation-by-parts sum gives exactly the Sheppard term D^2/12
    # (f = t Phi(-t): f'(0) = 1/2, higher odd derivatives 0): trapezoid (even N) and midpoint (odd N)
    # f^(2k-1) = x Phi(-x)^(2k-1) + (2k-1) Phi(-x)^(2k-2), Phi(-x)^(m) = (-1)^m He_{m-1} phi: at 0 that
    # is (2k-1) He_{2k-3}(0) phi(0) = 0 for k >= 2 (odd Hermite polynomials vanish at 0)
    f = x * tail
    assert sp.diff(f, x).subs(x, 0) == sp.Rational(1, 2)
    xr = sp.Symbol("x", real=True)
    assert sp.simplify(sp.diff(tail, x, 3) + (he[2] * pdf).subs(xr, x)) == 0
    assert all(he[2 * k - 3].subs(sp.Symbol("x", real=True), 0) == 0 for k in range(2, 13))
    assert d ** 2 / 4 - 4 * sp.bernoulli(2) / 2 * d ** 2 * sp.Rational(1, 2) == d ** 2 / 12
    assert -4 * sp.bernoulli(2, sp.Rational(1, 2)) / 2 * d ** 2 * sp.Rational(1, 2) == d ** 2 / 12
    # J_n = int_0^inf s^n exp(-T s - s^2/2): T J_n + J_{n+1} = n J_{n-1} (the integrand's derivative)
    g = s_ ** n * sp.exp(-t_ * s_ - s_ ** 2 / 2)
    assert sp.simplify(sp.diff(-g, s_) - ((t_ + s_) * g - n * s_ ** (n - 1) * sp.exp(-t_ * s_ - s_ ** 2 / 2))) == 0
    # int_{-T}^{T} g(x) dx for g(x) = int_{-D/2}^{D/2} u^2 phi(x + u) du: numerically
    for t_val, d_val in ((2.0, 0.3), (5.0, 0.01)):
        lhs = integrate.dblquad(lambda uu, xx: uu * uu * math.exp(-0.5 * (xx + uu) ** 2) / math.sqrt(2 * math.pi),
                                -t_val, t_val, -d_val / 2, d_val / 2, epsabs=0, epsrel=1e-12)[0]
        rhs = d_val ** 3 / 12 - 2 * integrate.quad(lambda uu: uu * uu * special.ndtr(uu - t_val),
                                                   -d_val / 2, d_val / 2, epsabs=0, epsrel=1e-13)[0]
        assert lhs == pytest.approx(rhs, rel=1e-10)


DIRECT_SAMPLE = list(range(3, 201)) + sorted(set(np.round(np.logspace(np.log10(250), 6, 16)).astype(int).tolist()))


def test_chi_max_agrees_with_the_direct_sum():
    """N = 3..200 all, then 16 log-spaced N to 1e6: the gap at D_opt against the O(N) cell sum.

    Measured: at most 1.5e-14 relative (the O(N) float64 sum itself carries ~1e-14, 1e-15 at
    the small N); below ``FAST_MIN_LEVELS`` chi_max is that sum, so there the gap is checked against
    the independent 30-digit sum instead.
    """
    for levels in DIRECT_SAMPLE:
        gap, d = qmf.chi_max(levels, complement=True)
        if levels < qmf.tradeoff.FAST_MIN_LEVELS:
            direct = float(independent_gap(levels, d, 30))
        else:
            direct = qmf.tradeoff._quantization_error_scalar(levels, d)
        assert gap == pytest.approx(direct, rel=1e-13, abs=0), levels
        assert qmf.chi_max(levels)[0] == 1.0 - gap


@pytest.mark.parametrize("levels", [10, 11, 24, 1000, 1001, 30001])
def test_optimal_spacing_is_the_root_of_the_direct_stationarity(levels):
    """D_opt against the root of -E[Q (z - Q)] by direct sums: measured agreement 2e-16 .. 2e-14.

    (The Brent maximiser of the direct 1 - S^2/V used below 10 levels, and before for all N,
    lands 1e-9 .. 5e-7 away from it: the maximum is flat and S^2/V noisy at 1e-16.)
    """
    d = qmf.chi_max(levels)[1]
    root = optimize.brentq(lambda x: direct_stationarity(levels, x), 0.9 * d, 1.1 * d, xtol=1e-300, rtol=1e-15)
    assert d == pytest.approx(root, rel=1e-12)
    # and it is the minimum of the direct gap: 0.1% off moves the gap by ~1e-6 of itself
    gap = qmf.tradeoff._quantization_error_scalar(levels, d)
    for f in (0.999, 1.001):
        assert qmf.tradeoff._quantization_error_scalar(levels, f * d) > gap * (1 + 1e-8)


@pytest.mark.parametrize("levels", [10, 11, 24, 31, 64, 1000, 3000])
def test_expansion_against_multiprecision_sums(levels):
    """The expansion at D_opt, 0.77 D_opt and 1.3 D_opt against 30-digit sums: measured <= 6e-16."""
    from qmf_lite import _uniform_em

    d = qmf.chi_max(levels)[1]
    for f in (1 / 1.3, 1.0, 1.3):
        gap, chi, err = _uniform_em.gap_chi(levels, f * d)
        assert err < 1e-15                                 # its own a-priori bound
        assert gap == pytest.approx(independent_gap(levels, f * d, 30), rel=4e-15)
        assert chi == pytest.approx(1 - gap, rel=1e-15)


def test_expansion_needs_the_fallback_below_10_levels():
    """Why the switch sits at 10: the endpoint series loses accuracy as D T grows towards 1.

    Measured relative errors (and the expansion's own bound) at D_opt and 1.3 D_opt: N = 5
    2.6e-13 (1.7e-11), 3.3e-8 (1.1e-6); N = 6 3e-16, 1.3e-10 (4.9e-9); N = 8 2e-16, 2.0e-15
    (6.8e-14); N = 9 0, 4.4e-16 (1.06e-15); N = 10 2e-16, 2e-16 (4.6e-16).
    """
    from qmf_lite import _uniform_em

    d5 = qmf.chi_max(5)[1]
    assert abs(_uniform_em.gap_chi(5, d5)[0] / independent_gap(5, d5, 30) - 1) > 1e-13
    assert _uniform_em.gap_chi(5, d5)[2] > 1e-13                          # and its bound says so
    for levels in (9, 10):
        d = qmf.chi_max(levels)[1]
        bound = max(_uniform_em.gap_chi(levels, f * d)[2] for f in (1 / 1.3, 1.0, 1.3))
        assert (bound <= 1e-15) == (levels >= qmf.tradeoff.FAST_MIN_LEVELS)


@pytest.mark.parametrize("levels", [10**7, 3 * 10**6 + 1])
def test_large_levels_against_chunked_direct_sums(levels):
    """N = 1e7 (and an odd N): the O(1) gap against the O(N) sums of direct_gap_chunked.

    Measured relative differences: 7e-16 (N = 1e7), and in the slow test 2e-16 (1e8), 4e-16
    (1e8 + 1). One evaluation at 1e7 takes ~1 s.
    """
    gap, d = qmf.chi_max(levels, complement=True)
    assert gap == pytest.approx(direct_gap_chunked(levels, d), rel=5e-15)


@pytest.mark.slow
@pytest.mark.parametrize("levels", [10**8, 10**8 + 1])
def test_largest_levels_against_chunked_direct_sums(levels):
    """As above at 1e8 (~15 s each): measured 2.2e-16 and 4.4e-16 relative.

    At 1e9 the same comparison (``direct_gap_chunked(10**9, d)``, ~4 min on a shared core, not
    run here) measured 2.2e-16 (N = 1e9) and 4.4e-16 (N = 1e9 - 1).
    """
    gap, d = qmf.chi_max(levels, complement=True)
    assert gap == pytest.approx(direct_gap_chunked(levels, d), rel=5e-15)


@pytest.mark.parametrize("levels", [10**7, 10**8 + 1, 10**9])
def test_large_levels_against_multiprecision_expansion(levels):
    """The float64 expansion against 40 digits and 30 terms: measured <= 2.2e-16 relative."""
    gap, d = qmf.chi_max(levels, complement=True)
    assert gap == pytest.approx(em_gap_multiprecision(levels, d), rel=2e-15)


def test_chi_max_is_constant_time(monkeypatch):
    """From 10 levels on no O(N) sum is touched: chi_max(1e9) works with the direct sums disabled."""
    def refuse(*args):
        raise AssertionError("O(N) path used")

    monkeypatch.setattr(qmf.tradeoff, "_quantization_error_scalar", refuse)
    monkeypatch.setattr(qmf.tradeoff, "_naive_parts", refuse)
    monkeypatch.setattr(qmf.tradeoff, "_half_parts", refuse)
    qmf.tradeoff._chi_max_cached.cache_clear()
    try:
        gap, d = qmf.chi_max(10**9, complement=True)
        chi, _ = qmf.chi_max(10**9 - 1)
        # any spacing: all thresholds near 0 (D N ~ 1e-11 .. 6), near the optimum, wide cells
        spacings = [1e-20, 1e-9, 3e-9, 6e-9, 0.5 * d, d, 2 * d, 0.1, 1.0, 10.0]
        gaps = qmf.quantization_error(10**9, spacings)
        assert np.all((gaps > 0) & (gaps < 1))
    finally:
        qmf.tradeoff._chi_max_cached.cache_clear()
    # the uniform-quantizer asymptotics: granular error D^2/12 dominates, plus the overload tails
    assert 2.4e-17 < gap < 2.5e-17 and d * d / 12 < gap < 1.1 * d * d / 12
    assert chi == 1.0                                        # 1 - 2.5e-17 rounds to 1: use complement


def test_local_exponent_at_a_billion_levels():
    """d ln(1 - chi_max) / d ln N tends to -2 (+ 1/ln N from L_max ~ N^2 / ln N) at large N."""
    n = np.array([10**8, 10**9])
    gaps = np.array([qmf.chi_max(int(k), complement=True)[0] for k in n])
    slope = np.diff(np.log(gaps))[0] / np.diff(np.log(n))[0]
    assert -2.0 < slope < -2.0 + 1.5 / math.log(10**8.5)


def test_quantization_error_at_any_spacing_for_many_levels():
    """Once the outer thresholds pass |t| = 40 nothing depends on N but its parity: N = 1e9 (O(1)
    expansion with its aliasing terms) equals N = 1e5 (O(80/D) direct cell sums), any spacing."""
    spacings = np.array([0.3, 0.5, 1.0, 2.0, 3.0])
    for big, small in ((10**9, 10**5), (10**9 + 1, 10**5 + 1)):
        fast = qmf.quantization_error(big, spacings)
        direct = np.array([qmf.tradeoff._quantization_error_scalar(small, float(s)) for s in spacings])
        assert fast == pytest.approx(direct, rel=1e-13)
        assert np.all((fast > 0) & (fast < 1))


@pytest.mark.parametrize("levels", [10, 25, 10**5, 10**5 + 1])
def test_quantization_error_with_all_thresholds_near_zero(levels):
    """T = D (N - 2) / 2 from 1e-4 to 3: where 1 + e - 2 alpha = E[Q^2] is small the expansion
    switches to E[zQ]^2 / E[Q^2] with both moments expanded; against the direct O(N) sums
    (measured <= 4e-15) and, for N = 10, 25, 30-digit sums."""
    for t in (1e-4, 0.05, 0.3, 0.6, 1.0, 3.0):
        spacing = 2 * t / (levels - 2)
        gap = qmf.quantization_error(levels, spacing)
        assert gap == pytest.approx(qmf.tradeoff._quantization_error_scalar(levels, spacing), rel=1e-14)
        if levels < 100:
            assert gap == pytest.approx(independent_gap(levels, spacing, 30), rel=1e-14)


@pytest.mark.parametrize("levels", [3, 4, 24, 25])
def test_quantization_error_for_wide_cells(levels):
    """Cells wider than 2 standard deviations (tail-integral differences, not Gauss-Legendre)."""
    for spacing in (2.5, 7.0, 60.0):
        exact = independent_gap(levels, spacing, 30)
        assert qmf.quantization_error(levels, spacing) == pytest.approx(exact, rel=1e-14)
        assert qmf.chi_zero(levels, spacing) == pytest.approx(1 - exact, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("spacing", [1e-300, 1e300, 1e308])
def test_extreme_spacings_give_the_limits(spacing):
    """All thresholds at 0 (tiny D) or all but the central ones beyond reach (huge D): for even N
    the sign function, 1 - chi = 1 - 2/pi; for odd N and huge D the output is constant, chi = 0."""
    sign_gap = 1 - 2 / math.pi
    for levels in (4, 10**9):
        assert qmf.quantization_error(levels, spacing) == pytest.approx(sign_gap, rel=1e-14)
    if spacing > 1:
        assert qmf.quantization_error(3, spacing) == 1.0 and qmf.chi_zero(3, spacing) == 0.0
        assert qmf.quantization_error(10**9 + 1, spacing) == 1.0


def test_levels_for_depth_is_the_fewest_levels():
    rng = np.random.default_rng(0)
    for depth in np.exp(rng.uniform(math.log(10.0), math.log(2e17), 12)):
        n, bits = qmf.levels_for_depth(depth)
        assert qmf.max_depth(n) >= depth and (n == 2 or depth > qmf.max_depth(n - 1))
        assert bits == (n - 1).bit_length()
    assert qmf.levels_for_depth(1e12) == (1653591, 21)
    assert qmf.levels_for_depth(1000, multiple=3) == qmf.levels_for_depth(2000)
    # the search reaches the end of its range exactly
    assert qmf.levels_for_depth(qmf.max_depth(10**9)) == (10**9, 30)


@pytest.mark.parametrize("depth,multiple", [(1e308, 6.0), (3e17, 6.0), (1e17, 1.0), (1e300, 1e-300)])
def test_levels_for_depth_refuses_an_unreachable_depth(depth, multiple):
    with pytest.raises(ValueError, match=r"depth must be at most max_depth\(10\*\*9"):
        qmf.levels_for_depth(depth, multiple)


@pytest.mark.parametrize("depth", [0, -1, math.nan, math.inf, "x", [5.0, 6.0]])
def test_levels_for_depth_bad_input(depth):
    with pytest.raises(ValueError, match="depth"):
        qmf.levels_for_depth(depth)


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


@pytest.mark.parametrize("call", [
    lambda n: qmf.chi_max(n), lambda n: qmf.chi_zero(n, 0.3), lambda n: qmf.quantization_error(n, 0.3),
    lambda n: qmf.optimal_depth_scale(n), lambda n: qmf.max_depth(n), lambda n: qmf.optimal_init(n),
])
@pytest.mark.parametrize("levels", [10**12 + 1, 1e308, "16", True])
def test_levels_beyond_the_checked_range_are_refused(call, levels):
    """1e308 gave a RuntimeWarning (a 1e308-long array before the O(1) chi_max); the trade-off
    functions take N up to 10**12 (MAX_LEVELS), the range its first guess is fitted over."""
    with pytest.raises(ValueError, match=r"\blevels must be an integer"):
        call(levels)


def test_chi_max_complement_must_be_a_bool():
    with pytest.raises(ValueError, match=r"\bcomplement must be True or False"):
        qmf.chi_max(16, complement=np.array([1.0, np.nan]))


@pytest.mark.parametrize("call", [lambda d: qmf.chi_zero(16, d), lambda d: qmf.quantization_error(16, d)])
@pytest.mark.parametrize("spacing", [1e308, 1e-300])
def test_extreme_normalized_spacings_without_overflow_warnings(call, spacing):
    """chi_zero(16, 1e308) overflowed its thresholds (a leaked RuntimeWarning); the limit is sign's."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert call(spacing) == pytest.approx(2 / math.pi if call(1.0) > 0.5 else 1 - 2 / math.pi, rel=1e-14)


@pytest.mark.parametrize("spacing", [None, "0.3", True, np.nan])
def test_normalized_spacing_must_be_a_number(spacing):
    """None said only 'is required'; "0.3" and True were taken as numbers."""
    with pytest.raises(ValueError, match=r"\bnormalized_spacing must"):
        qmf.chi_zero(16, spacing)


def test_max_depth_overflow_is_refused():
    with pytest.raises(ValueError, match=r"\bmultiple must be at most"):
        qmf.max_depth(16, 1e308)


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


@pytest.mark.parametrize("scale,spacing", [(1e100, 1e-100), (1e-100, 1e100)])
def test_optimal_init_refuses_a_weight_scale_outside_the_maps_range(scale, spacing):
    """Each in range, together they put sigma_w = sqrt(q*) / sqrt(E[phi^2]) near 1e-200 or 1e200: the ratio
    q* / E[phi^2] underflowed to sigma_w = 0 (or inf) before, which the maps then refused or mishandled."""
    with pytest.raises(ValueError, match=r"^scale and spacing must keep sigma_w = sqrt\(q\* / E\[phi\^2\]\) in \[1e-100"):
        qmf.optimal_init(4, scale=scale, spacing=spacing)
    init = qmf.optimal_init(4, scale=1e50, spacing=1e-30)                      # within range: still exact
    assert init.sigma_w == pytest.approx(math.sqrt(init.q_star / float(init.activation.second_moment(init.q_star))),
                                         rel=1e-14)
