r"""The initialization scheme and the quantization-depth trade-off (Blumenfeld et al. 2019).

With :math:`\sigma_b = 0` and a symmetric N-level activation the stable correlation is
:math:`c^* = 0`, and its slope there is a squared correlation between a Gaussian and its
quantized image,

.. math:: \chi(0) = \frac{\mathbb E[z\,\psi(z)]^2}{\operatorname{Var}\psi(z)}
                  = \frac{\bigl(\sum_i \varphi(t_i)\bigr)^2}
                         {\sum_{ij}\Phi(\min(t_i,t_j))\,\Phi(-\max(t_i,t_j))},
          \qquad t_i = \tilde D\,\bigl(i - \tfrac{N-2}{2}\bigr),

a function of the normalised spacing :math:`\tilde D = D/\sqrt{q^*}` alone (``psi`` counts the
thresholds below ``z``). Its maximum :math:`\chi_{\max}(N)` sets the depth scale
:math:`\xi = -1/\ln\chi_{\max}` and the trainable depth :math:`L_{\max} = 6\xi`.

``1 - chi(0)`` is the mean-squared error of the best linear reconstruction of ``z`` from the
quantized value. It is computed here cell by cell, as an integral of a non-negative integrand,
so that it keeps its relative precision when it is tiny (about 1.6e-11 at N = 10^6), where
``1 - S^2/V`` would cancel away most of its digits.

From ``FAST_MIN_LEVELS`` levels on, the O(N) sums are replaced by their Euler-Maclaurin
expansions about the outer thresholds (``qmf_lite._uniform_em``), with the leading terms
cancelled analytically: ``chi_max(N)`` then costs O(1), about a millisecond at any N.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import numpy as np
from scipy import optimize, special

from . import _uniform_em
from ._validate import SIGMA_MAX, SIGMA_MIN, check_bool, check_int, check_levels, check_positive, renamed
from .activations import QuantizedActivation, StepActivation, _check_quantized
from .gaussian import SQRT2PI, legendre_rule, step_variance

__all__ = [
    "chi_zero",
    "quantization_error",
    "chi_max",
    "optimal_depth_scale",
    "max_depth",
    "bits",
    "optimal_init",
    "InitScheme",
    "levels_for_depth",
    "lloyd_max",
    "lloyd_max_activation",
]


#: the most levels the trade-off functions take: the range over which the O(1) chi_max's first
#: guess is fitted (N = 10 .. 1e12); beyond it nothing is checked
MAX_LEVELS = 10**12


def _pdf(x):
    with np.errstate(over="ignore"):  # |x| > 1e154: x * x = inf, exp(-inf) = 0 as it should be
        return np.exp(-0.5 * x * x) / SQRT2PI


def _naive_parts(levels, spacing):
    """S = sum_i pdf(t_i) and V = Var(psi) for unit steps, each a sum of positive terms."""
    j = np.arange(levels - 1) - (levels - 2) / 2.0
    with np.errstate(over="ignore"):  # spacing near 1e308: thresholds at +-inf, beyond reach as they should be
        t = np.multiply.outer(spacing, j)
    return np.sum(_pdf(t), axis=-1), step_variance(t, np.ones(levels - 1))


def _normalized_spacing(func, normalized_spacing, spacing):
    """The required ``normalized_spacing`` of ``func``, or its deprecated keyword ``spacing`` (checked, > 0)."""
    value, name = renamed(func, "normalized_spacing", normalized_spacing, "spacing", spacing,
                          note=" (the spacing in units of sqrt(q*), not the raw spacing D)", stacklevel=4)
    if value is None:
        raise ValueError(f"{func}: normalized_spacing must be given (a number > 0)")
    return check_positive(value, name)


def chi_zero(levels, normalized_spacing=None, *, spacing=None):
    r"""chi(0) at sigma_b = 0 as a function of the normalized spacing :math:`\tilde D = D/\sqrt{q^*}`.

    .. math:: \chi(0) = \Bigl(\sum_i\varphi(t_i)\Bigr)^2 \Big/
                        \sum_{ij}\Phi(\min(t_i,t_j))\,\Phi(-\max(t_i,t_j))

    Parameters
    ----------
    levels : int
        Number of levels, ``2 <= N <= 10**12``.
    normalized_spacing : array_like
        Threshold spacing in units of the pre-activation standard deviation, ``D / sqrt(q*) > 0``.
        (Deprecated keyword: ``spacing``.)

    Examples
    --------
    >>> round(float(chi_zero(2, 1.0)), 12)  # sign: 2/pi whatever the spacing
    0.636619772368
    """
    levels = check_levels(levels, maximum=MAX_LEVELS)
    spacing = _normalized_spacing("chi_zero", normalized_spacing, spacing)
    if levels > 4096:
        return 1.0 - _quantization_error(levels, spacing)
    s, v = _naive_parts(levels, spacing)
    # V underflows to 0 only for odd N with spacing / 2 > 38 (psi constant but with probability
    # < 1e-300), where chi(0) < 1e-300: 0
    out = np.divide(s * s, v, out=np.zeros(np.shape(v)), where=v > 0)
    return out[()] if out.ndim == 0 else out


#: the direct sums stop at thresholds beyond Z_CUT: there phi(t) and Phi(-t) are 0 in float64
#: (phi(38.6) < 1e-323), so nothing is lost, and the cost is O(min(N, 2 Z_CUT / D))
Z_CUT = 40.0

#: chi_max uses the O(1) Euler-Maclaurin evaluation from this many levels on (the direct sums
#: below). Measured against 30-digit sums of S and V (tests/test_tradeoff.py), over
#: D_opt / 1.3 .. 1.3 D_opt: error <= 2e-15 from N = 8 on, <= 9e-16 from N = 9 (3e-13 at N = 5,
#: 1e-10 at N = 6 and 2e-14 at N = 7, at 1.3 D_opt, where D T ~ 1 and the endpoint series
#: stops converging); the expansion's own error bound is <= 6e-16 there from N = 10 on.
FAST_MIN_LEVELS = 10

#: the relative error estimate (truncation + rounding) below which quantization_error uses the
#: expansion, about what the O(N) direct sums carry themselves. For N >= 10 and spacing < 0.15
#: the estimate is at most 5e-15 (at T ~ 0.6), so only spacings >= 0.15 can fall back, to at
#: most 2 Z_CUT / 0.15 ~ 530 cells
_FAST_TOLERANCE = 1e-14


def _first_threshold_index(levels):
    """Index of the first threshold t_i >= 0 (t_i = D (i - (N-2)/2))."""
    return (levels - 1) // 2 if levels % 2 else levels // 2 - 1


def _kept_count(levels, spacing):
    """How many thresholds t >= 0 the direct sums keep: those up to Z_CUT (at least one)."""
    first = _first_threshold_index(levels)
    total = levels - 1 - first
    offset = first - (levels - 2) / 2.0          # 0 (even N) or 1/2 (odd N)
    keep = math.floor(Z_CUT / spacing - offset) + 1 if spacing * (total - 1 + offset) > Z_CUT else total
    return max(1, min(total, keep))


#: the direct sums run over chunks of this many thresholds (bounded memory at any N)
_CHUNK = 1 << 18


def _half_parts(levels, spacing):
    r"""S and V as in :func:`_naive_parts`, from the thresholds t >= 0 alone (symmetry).

    ``V`` by summation by parts, :math:`\tfrac14[N\text{ even}] + 4\sum_{t_i>0}(t_i/D)\Phi(-t_i)`
    (``psi - E psi`` squared jumps by ``2 t_i / D`` at ``t_i``): positive terms only, no
    differences of neighbouring cell masses. Thresholds beyond ``Z_CUT`` are dropped (their
    terms are 0), and the sums run in chunks.
    """
    first = _first_threshold_index(levels)
    offset = first - (levels - 2) / 2.0              # t_i / D of the first threshold >= 0: 0 or 1/2
    count = _kept_count(levels, spacing)
    s_parts, v_parts = [], []
    for start in range(0, count, _CHUNK):
        ratio = np.arange(start, min(start + _CHUNK, count)) + offset   # t / D >= 0
        t = spacing * ratio
        s_parts.append(2.0 * float(_pdf(t).sum()))
        v_parts.append(4.0 * float(np.sum(ratio * special.ndtr(-t))))
    s = math.fsum(s_parts) - (float(_pdf(0.0)) if offset == 0.0 else 0.0)   # t = 0 counted once
    v = math.fsum(v_parts) + (0.25 if offset == 0.0 else 0.0)
    return s, v


def _tail_second_moment(x, e):
    """int_x^inf (z - x + e)^2 pdf(z) dz for x >= 0 (``e = x - y`` for the moment about ``y``).

    ``Phi(-x) (J2 + 2 e J1 + e^2 J0) / J0`` with the ratios of
    ``J_n = int_0^inf s^n exp(-x s - s^2/2) ds`` from their continued fraction: no cancellation.
    """
    if x > Z_CUT:
        return 0.0
    r1, r2 = _uniform_em._mills_ratios(x)
    return float(special.ndtr(-x)) * (r1 * r2 + 2.0 * e * r1 + e * e)


def _quantization_error_scalar(levels, spacing):
    """1 - chi(0) by the direct sum over cells: O(min(N, 2 Z_CUT / D)), in chunks."""
    s, v = _half_parts(levels, spacing)
    if v == 0.0:
        # odd N and spacing / 2 > 38: psi equals its mean but with probability < 1e-300, chi = 0
        return 1.0
    beta = s / v  # best gain: reconstruction y_k = beta (k - (N-1)/2)
    n_cells = levels
    half = n_cells // 2
    # symmetric quantizer: cells k and N-1-k mirror each other; sum over k >= (N-1)/2 and double
    t_max = spacing * (levels - 2) / 2.0
    # outer cell [t_max, inf): reconstruction y = beta (N-1)/2, written with
    # t_max - y = (spacing - beta) (N-1)/2 - spacing/2 (no cancellation)
    tail = 0.0
    if t_max <= Z_CUT:
        tail = _tail_second_moment(t_max, (spacing - beta) * (levels - 1) / 2.0 - 0.5 * spacing)
    # interior cells k = half .. N-2 (cells between thresholds); cell k spans
    # [spacing (k - 1 - (N-2)/2), spacing (k - (N-2)/2)], midpoint spacing (k - (N-1)/2);
    # cells beyond Z_CUT carry no mass in float64 and are dropped
    last = min(n_cells - 1, half + _kept_count(levels, spacing) + 1)
    w = spacing
    parts = []
    for start in range(half, last, _CHUNK):
        k = np.arange(start, min(start + _CHUNK, last), dtype=np.float64)
        jm = k - (levels - 1) / 2.0
        if spacing > 2.0:
            # wide cells: Gauss-Legendre would need many nodes; the difference of two tail
            # integrals (the upper one smaller by e^{-2} at least) is accurate here
            # (edges and reconstruction apart by ~D / 2 or more: no cancellation in a - beta j);
            # an edge beyond 1e308 is inf, where the tail integral is 0
            with np.errstate(over="ignore"):
                lower = np.maximum(spacing * (jm - 0.5), 0.0)
                upper = spacing * (jm + 0.5)
            y = beta * jm
            cell = np.array([_tail_second_moment(a, a - b) - _tail_second_moment(c, c - b)
                             for a, c, b in zip(lower, upper, y)])
            if start == half and levels % 2 == 1:   # the central cell [-w/2, w/2], output 0
                cell[0] *= 2.0
        else:
            mid = spacing * jm
            width_scale = w * (1.0 + min(t_max, Z_CUT))
            m = 3 if width_scale < 1e-3 else (6 if width_scale < 0.1 else 16)
            x, wts = legendre_rule(m)
            sgrid = 0.5 * w * x                               # nodes in [-w/2, w/2]
            off = (spacing - beta) * jm                        # midpoint - reconstruction, no cancellation
            vals = (sgrid[None, :] + off[:, None]) ** 2 * _pdf(mid[:, None] + sgrid[None, :])
            cell = 0.5 * w * (vals @ wts)
        if start == half and levels % 2 == 1:
            # odd N: the central cell (k = (N-1)/2, output 0) is its own mirror image
            parts.append(2.0 * float(cell[1:].sum()) + float(cell[0]))
        else:
            parts.append(2.0 * float(cell.sum()))
    return math.fsum(parts) + 2.0 * tail


def quantization_error(levels, normalized_spacing=None, *, spacing=None):
    r"""``1 - chi(0)``, the relative mean-squared quantization error, with full relative precision.

    .. math:: 1 - \chi(0) = \min_\beta \mathbb E\bigl[(z - \beta(\psi(z) - \mathbb E\psi))^2\bigr]
              = \sum_{\text{cells}} \int_{\text{cell}} (z - y_k)^2\,\varphi(z)\,dz

    Interior cells are integrated by Gauss-Legendre around their midpoints and the two outer
    cells in closed form, so every term is non-negative and small errors stay small (cells
    wider than 2 as differences of two tail integrals). From ``FAST_MIN_LEVELS`` (10) levels
    on, wherever its error estimate is below 1e-14 (always for ``D < 0.15``), the O(1)
    Euler-Maclaurin form of ``qmf_lite._uniform_em`` replaces the sum over cells:
    :math:`1 - \chi(0) = (e - \alpha^2)/(1 + e - 2\alpha)` with
    :math:`\alpha = \mathbb E[z(z-Q)]` and :math:`e = \mathbb E[(z-Q)^2]` for the mid-rise
    quantizer :math:`Q` of step ``D``, each expanded about the outer thresholds
    (:math:`e = D^2/12 +` tail terms), or, when all thresholds lie within about one standard
    deviation, :math:`1 - \mathbb E[zQ]^2/\mathbb E[Q^2]` with both moments expanded. The
    direct sums skip thresholds beyond ``Z_CUT``, where the density is 0 in float64, so no
    evaluation costs more than O(min(N, 80/D)) and for ``N >= 10`` at most ~530 cells.

    Parameters
    ----------
    levels : int
        Number of levels, ``2 <= N <= 10**12``.
    normalized_spacing : array_like
        ``D / sqrt(q*) > 0`` (deprecated keyword: ``spacing``).

    Examples
    --------
    >>> round(float(quantization_error(16, 0.3352)), 6)
    0.011543
    """
    levels = check_levels(levels, maximum=MAX_LEVELS)
    spacing = _normalized_spacing("quantization_error", normalized_spacing, spacing)
    return _quantization_error(levels, spacing)


def _quantization_error(levels, spacing):
    """:func:`quantization_error` of a checked ``levels`` and float64 array ``spacing`` (every entry > 0)."""
    out = np.vectorize(lambda d: _quantization_error_auto(levels, float(d)), otypes=[float])(spacing)
    return out[()] if out.ndim == 0 else out


def _quantization_error_auto(levels, spacing):
    """The O(1) expansion where its error bound allows it, else the direct sum over cells."""
    if spacing * levels < 1e-100:
        # every threshold within 1e-100 of 0: the sign function up to O(N D), 1 - 2/pi
        return 1.0 - 2.0 / math.pi
    if levels >= FAST_MIN_LEVELS and 1e-100 < spacing < 1e100 and spacing * levels < 1e300:
        gap, _, err = _uniform_em.gap_chi(levels, spacing)
        if err <= _FAST_TOLERANCE:
            return gap
    return _quantization_error_scalar(levels, spacing)


def _spacing_guess(levels):
    """A first guess of the optimal spacing, within ~10% for N >= 3 (outer threshold ~ sqrt(2 ln N))."""
    return 2.4 * math.sqrt(2.0 * math.log(levels)) / levels


@functools.lru_cache(maxsize=4096)
def _chi_max_cached(levels):
    if levels == 2:
        return 2.0 / math.pi, 1.0 - 2.0 / math.pi, math.nan
    if levels >= FAST_MIN_LEVELS:
        return _chi_max_fast(levels)
    return _chi_max_direct(levels)


def _chi_max_direct(levels):
    """Maximise the direct sums over log D by Brent (the flat maximum: ~1e-8 in log D)."""
    guess = _spacing_guess(levels)
    if levels <= 4096:
        def objective(logd):
            s, v = _naive_parts(levels, math.exp(logd))
            return -s * s / v
    else:
        def objective(logd):
            return _quantization_error_scalar(levels, math.exp(logd))
    lo, hi = math.log(guess / 1.3), math.log(guess * 1.3)
    # the objective is flat at its maximum: 1e-8 in log D moves chi by ~1e-16 relative
    res = optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-8})
    d_opt = math.exp(res.x)
    gap = _quantization_error_scalar(levels, d_opt)
    return float(1.0 - gap), float(gap), d_opt


def _chi_max_fast(levels):
    """The optimal spacing as the simple root of e = alpha (see ``qmf_lite._uniform_em``), in O(1).

    ``E[Q (z - Q)] = 0`` at the optimum: the sign change of ``ln(e / alpha)``, located to
    ~1e-15 relative by Brent's root finder from a 3% bracket (about 8 evaluations of the
    expansion, each ~0.1 ms).
    """
    memo = {}

    def f(d):
        if d not in memo:
            memo[d] = _uniform_em.stationarity(levels, d)
        return memo[d]

    # the guess refined by a cubic fit of D_opt / guess in x = ln ln N (within 0.4%, N = 10 .. 1e12)
    x = math.log(math.log(levels))
    guess = _spacing_guess(levels) * (1.0362 + x * (-0.2046 + x * (0.1376 - 0.0209 * x)))
    lo, hi = guess / 1.03, guess * 1.03
    for _ in range(40):  # the bracket holds for N = 10 .. 1e15; widen it should it not
        if f(lo) < 0.0 < f(hi):
            break
        if f(lo) >= 0.0:
            lo, hi = lo / 1.3, lo
        else:
            lo, hi = hi, hi * 1.3
    d_opt = optimize.brentq(f, lo, hi, xtol=1e-300, rtol=4.0 * np.finfo(float).eps)
    gap = _uniform_em.gap_chi(levels, d_opt)[0]
    return float(1.0 - gap), float(gap), d_opt


def chi_max(levels, complement=False):
    r"""Maximum over the normalised spacing of chi(0), and the maximiser.

    Parameters
    ----------
    levels : int
        Number of levels, ``2 <= N <= 10**12`` (``MAX_LEVELS``).

    complement : bool
        If true, return ``1 - chi_max`` in place of ``chi_max``, computed without cancellation
        (at N = 10^6 it is 1.6e-11, of which ``1 - chi_max(N)[0]`` keeps only five digits; at
        N = 10^9 it is 1e-17 and ``chi_max(N)[0]`` rounds to 1.0).

    Returns
    -------
    chi : float
        :math:`\chi_{\max}(N) = \max_{\tilde D}\chi(0)` (or ``1 - chi_max`` with ``complement``).
    normalized_spacing : float
        :math:`\tilde D_{\rm opt}`, the optimal spacing in units of :math:`\sqrt{q^*}`. For
        ``N = 2`` the single threshold sits at 0, every spacing is optimal, and this is NaN.

    Notes
    -----
    Cost and accuracy. Below ``FAST_MIN_LEVELS`` (10) levels the O(N) direct sums are
    maximised over :math:`\ln\tilde D` by Brent's method (tolerance 1e-8 in
    :math:`\ln\tilde D`, which moves ``chi`` by ~1e-16). From 10 levels on both are O(1):
    with the mid-rise quantizer :math:`Q = \tilde D(\psi - \mathbb E\psi)`,
    :math:`\alpha = \mathbb E[z(z - Q)]` and :math:`e = \mathbb E[(z - Q)^2]`,

    .. math:: 1 - \chi(0) = \frac{e - \alpha^2}{1 + e - 2\alpha},

    and :math:`\alpha` and :math:`e` are Euler-Maclaurin expansions of the sums over thresholds
    and cells about the outer thresholds :math:`\pm T`, :math:`T = \tilde D(N-2)/2`, in which the
    leading 1 of :math:`\tilde D\sum_i\varphi(t_i)` and the Sheppard term
    :math:`\tilde D^2/12` of :math:`e` are exact, so that nothing cancels; the optimum is the
    root of :math:`e = \alpha` (:math:`\mathbb E[Q(z - Q)] = 0`), found to ~1e-15 relative.
    The derivation is in ``qmf_lite._uniform_em``. Measured against 30-40-digit direct sums
    (N = 10 .. 3000) and float64 direct sums (N up to 10^7, and 10^8 .. 10^9 in chunks), the
    gap agrees to a few 1e-16 relative (the direct float64 sums themselves carry ~1e-14); a call
    takes ~1-3 ms at any N (10^9 included) against ~1 s for the direct sums at N = 10^6.

    Examples
    --------
    >>> chi, d = chi_max(16)
    >>> round(1 - chi, 6), round(d, 4)
    (0.011543, 0.3352)
    >>> gap, d = chi_max(10**9, complement=True)   # O(1): ~1 ms
    >>> print(f"{gap:.6e} {d:.6e}")
    2.455442e-17 1.693986e-08
    """
    complement = check_bool(complement, "complement")
    chi, gap, spacing = _chi_max_cached(check_levels(levels, maximum=MAX_LEVELS))
    return (gap if complement else chi), spacing


def optimal_depth_scale(levels):
    r"""The depth scale at the optimal initialization, :math:`\xi(N) = -1/\ln\chi_{\max}(N)`.

    The longest correlation depth scale an N-level uniform activation allows (at
    :func:`optimal_init`); computed from ``1 - chi_max`` with ``log1p``, so it keeps its relative
    precision for large ``N``.

    Examples
    --------
    >>> round(optimal_depth_scale(16), 2)
    86.13
    """
    return _optimal_depth_scale(check_levels(levels, maximum=MAX_LEVELS))


def _optimal_depth_scale(levels):
    """:func:`optimal_depth_scale` of a checked ``levels``."""
    return -1.0 / math.log1p(-_chi_max_cached(levels)[1])


def max_depth(levels, multiple=6.0):
    r"""Trainable depth :math:`L_{\max} = \text{multiple}\times\xi(N)`, with :math:`\xi(N)` of :func:`optimal_depth_scale`.

    ``multiple = 6`` is the empirical rule of Schoenholz et al. (2017), which the book uses for
    quantized networks (the public code of Blumenfeld et al. (2019) draws :math:`4\xi`, :math:`6\xi`
    and :math:`9\xi` over its trainability map); ``max_depth(N, 1.0)`` is :math:`\xi(N)` itself
    (prefer :func:`optimal_depth_scale`).

    Examples
    --------
    >>> round(max_depth(16), 1)
    516.8
    """
    multiple = float(check_positive(multiple, "multiple", allow_array=False))
    xi = _optimal_depth_scale(check_levels(levels, maximum=MAX_LEVELS))
    if multiple * xi > np.finfo(float).max:
        raise ValueError(f"multiple must be at most {np.finfo(float).max / xi:.3g} for N = {levels} "
                         f"(L_max = multiple * {xi:.4g} overflows), got {multiple!r}")
    return multiple * xi


def bits(levels):
    r"""Bits needed to store one of ``levels`` values, :math:`\lceil\log_2 N\rceil`.

    Examples
    --------
    >>> bits(2), bits(3), bits(16), bits(17)
    (1, 2, 4, 5)
    """
    return _bits(check_levels(levels))


def _bits(levels):
    """:func:`bits` of a checked ``levels``."""
    return (levels - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class InitScheme:
    """The initialization of :func:`optimal_init`.

    Attributes
    ----------
    levels : int
        Number of output levels ``N``.
    sigma_w, sigma_b : float
        The weight and bias scales (``sigma_b`` is 0).
    activation : StepActivation
        The activation (a :class:`QuantizedActivation` for a number of levels).
    q_star : float
        Pre-activation variance at the fixed point.
    normalized_spacing : float
        ``activation.spacing / sqrt(q_star)``, equal to :math:`\\tilde D_{\\rm opt}` (NaN for a
        non-uniform step activation, which has no single spacing).
    chi, depth_scale, max_depth : float
        :math:`\\chi(0)` at the optimum, :math:`\\xi = -1/\\ln\\chi` and :math:`6\\xi`.
    gap : float
        :math:`1 - \\chi` at the optimum, computed without cancellation (the relative
        mean-squared quantization error of a Gaussian).
    """

    levels: int
    sigma_w: float
    sigma_b: float
    activation: StepActivation
    q_star: float
    normalized_spacing: float
    chi: float
    depth_scale: float
    max_depth: float
    gap: float

    @property
    def bits(self):
        """Bits per activation, :math:`\\lceil\\log_2 N\\rceil` (see :func:`bits`)."""
        return _bits(self.levels)


def _step_chi_zero(act, q):
    """chi(0) of an odd step activation at sigma_b = 0 and fixed point ``q``: (sum D_i pdf(a_i))^2 / E[phi^2]."""
    a = act.thresholds / math.sqrt(q)
    s = float(np.sum(act.jumps * _pdf(a)))
    m2 = float(act.second_moment(q))
    return s * s / m2 if m2 > 0 else 0.0   # m2 = 0: the zero level holds all the mass, no signal


def _optimal_init_step(act):
    if not act.odd:
        raise ValueError("activation must be odd (thresholds and levels symmetric about 0) for optimal_init: "
                         "only then is c* = 0 at sigma_b = 0")
    # chi(0) depends on q* alone (sigma_w follows from the fixed point): maximise over log q*
    g = np.abs(act.thresholds)
    g = g[g > 0]
    if g.size == 0:
        raise ValueError("activation must have a threshold away from 0 for optimal_init (a sign function "
                         "propagates equally at every sigma_w)")
    # sqrt(q*) from well below the smallest threshold to well above the largest
    grid = np.linspace(math.log(g.min()) - 4.0, math.log(g.max()) + 4.0, 241)
    vals = np.array([_step_chi_zero(act, math.exp(2 * x)) for x in grid])
    k = int(np.argmax(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(lambda x: -_step_chi_zero(act, math.exp(2 * x)), bounds=(lo, hi),
                                   method="bounded", options={"xatol": 1e-10})
    q_star = math.exp(2 * res.x)
    chi = _step_chi_zero(act, q_star)
    sigma_w = math.sqrt(q_star / float(act.second_moment(q_star)))
    xi = -1.0 / math.log(chi)
    return InitScheme(act.values.size, sigma_w, 0.0, act, q_star, math.nan, chi, xi, 6.0 * xi, 1.0 - chi)


def optimal_init(levels, scale=1.0, spacing=None):
    r"""The weight scale that maximises signal propagation for a given quantized activation.

    With :math:`\sigma_b = 0` choose :math:`\sigma_w` so that the fixed point puts the normalized
    spacing at its optimum, :math:`D/\sqrt{q^*} = \tilde D_{\rm opt}`. Since
    :math:`\mathbb E[\phi^2]` depends on :math:`\tilde D` alone,

    .. math:: \sigma_w^{\rm opt} = \frac{D}{\tilde D_{\rm opt}\sqrt{\mathbb E[\phi^2]\,|_{\tilde D_{\rm opt}}}}.

    For ``N = 2`` (sign) chi(0) = 2/pi for every sigma_w; the scheme picks ``q* = 1``.

    Parameters
    ----------
    levels : int or StepActivation
        The number of levels ``N >= 2`` of a uniform :class:`QuantizedActivation`, or any odd
        step activation (for instance :func:`lloyd_max_activation`). For a step activation the
        optimum is found by maximising :math:`\chi(0) = (\sum_i\Delta_i\varphi(g_i/\sqrt{q^*}))^2/\mathbb E[\phi^2]`
        over :math:`q^*` numerically (``scale`` and ``spacing`` must then be left at their defaults).
    scale, spacing : float
        Output range ``A`` and raw threshold spacing ``D`` of the uniform activation (default
        ``2A/(N-1)``).

    Examples
    --------
    >>> init = optimal_init(16)
    >>> round(init.sigma_w, 4), init.sigma_b, init.bits
    (1.0058, 0.0, 4)
    """
    if isinstance(levels, StepActivation):
        _check_defaults(scale, spacing)
        if not isinstance(levels, QuantizedActivation):
            return _optimal_init_step(levels)
        return _optimal_init_uniform(levels)
    return _optimal_init_uniform(QuantizedActivation._checked(*_check_quantized(levels, spacing, scale)))


def _check_defaults(scale, spacing):
    """Refuse a scale or spacing other than the defaults: they apply to a number of levels only."""
    at_default = (isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, (bool, np.bool_))
                  and scale == 1.0 and spacing is None)
    if not at_default:
        raise ValueError(f"scale and spacing must be left at their defaults (1.0, None) for a given activation "
                         f"(they apply to a number of levels), got scale={scale!r}, spacing={spacing!r}")


def _optimal_init_uniform(act):
    """:func:`optimal_init` of a :class:`QuantizedActivation` (its levels within ``MAX_STORED_LEVELS``)."""
    levels = act.levels
    c, gap, d_opt = _chi_max_cached(levels)
    if levels == 2:
        q_star = 1.0
        d_opt = act.spacing
    else:
        q_star = (act.spacing / d_opt) ** 2
    sigma_w = math.sqrt(q_star) / math.sqrt(float(act.second_moment(q_star)))    # no underflow of the ratio
    if not SIGMA_MIN <= sigma_w <= SIGMA_MAX:
        raise ValueError(f"scale and spacing must keep sigma_w = sqrt(q* / E[phi^2]) in [{SIGMA_MIN:g}, {SIGMA_MAX:g}] "
                         f"(every map refuses others), got sigma_w = {sigma_w:.3g} from scale={act.scale!r}, "
                         f"spacing={act.spacing!r}")
    xi = -1.0 / math.log1p(-gap)
    return InitScheme(levels, sigma_w, 0.0, act, q_star, act.spacing / math.sqrt(q_star), c, xi, 6.0 * xi, gap)


#: levels_for_depth searches N up to this many levels (the range in which chi_max is checked
#: against independent evaluations); a deeper target is refused
LEVELS_LIMIT = 10**9


def levels_for_depth(depth, multiple=6.0):
    r"""The fewest levels ``N`` whose ``max_depth(N, multiple)`` reaches ``depth``, and its bits.

    :math:`L_{\max}(N)` grows with ``N`` (about as :math:`N^2/\ln N`), so the answer is the
    integer root of :math:`\ln L_{\max}(N) = \ln\text{depth}`, found by interpolation in
    :math:`\ln N` safeguarded by bisection (O(log log) steps in practice, O(log) at worst), each
    step an O(1) :func:`chi_max`: a few milliseconds for any reachable depth.

    Parameters
    ----------
    depth : float
        Target trainable depth, ``0 < depth <= max_depth(10**9, multiple)`` (about 2.4e17 layers
        for ``multiple = 6``; see ``LEVELS_LIMIT``).
    multiple : float
        ``L_max = multiple * xi``, ``> 0`` (default 6).

    Returns
    -------
    levels : int
    bits : int
        ``ceil(log2(levels))``, the bits needed to store one activation.

    Raises
    ------
    ValueError
        For a depth beyond ``max_depth(10**9, multiple)`` (or a bad argument).

    Examples
    --------
    >>> levels_for_depth(500)
    (16, 4)
    >>> levels_for_depth(1e12)
    (1653591, 21)
    """
    depth = float(check_positive(depth, "depth", allow_array=False))
    multiple = float(check_positive(multiple, "multiple", allow_array=False))
    log_target = math.log(depth) - math.log(multiple)   # compare ln xi(N) with it: no overflow

    def excess(n):  # ln L_max(N) - ln depth, increasing in N
        return math.log(_optimal_depth_scale(n)) - log_target

    f_lo = excess(2)
    if f_lo >= 0.0:
        return 2, 1
    f_hi = excess(LEVELS_LIMIT)
    if f_hi < 0.0:
        reach = multiple * _optimal_depth_scale(LEVELS_LIMIT)
        raise ValueError(f"depth must be at most max_depth(10**9, multiple={multiple:g}) = {reach:.6g} layers "
                         f"(levels_for_depth searches N <= 10**9), got {depth!r}")
    levels = _integer_root(excess, 2, LEVELS_LIMIT, f_lo, f_hi)
    return levels, _bits(levels)


def _u_of(n):
    """u = 2 ln N - ln ln N: L_max ~ N^2 / ln N, so ln L_max is nearly linear in u (increasing for N >= 2)."""
    return 2.0 * math.log(n) - math.log(math.log(n))


def _n_of(u):
    """The inverse of :func:`_u_of`, by fixed-point iteration on ln N (a contraction for N >= 3)."""
    log_n = 0.5 * u
    for _ in range(40):
        log_n = 0.5 * (u + math.log(max(log_n, 0.5)))
    return math.exp(log_n)


def _integer_root(excess, lo, hi, f_lo, f_hi):
    """The least integer ``n`` in (lo, hi] with ``excess(n) >= 0``, for an increasing ``excess`` with
    ``excess(lo) = f_lo < 0 <= excess(hi) = f_hi``.

    Each step probes by regula falsi in ``u = _u_of(n)`` and then the probe's neighbour (which
    closes the bracket when the probe lands next to the root), or bisects in ln N whenever the
    last interpolation failed to halve the bracket.
    """
    interpolate = True
    while hi - lo > 1:
        width = math.log(hi / lo)
        mid = _interpolated_probe(lo, hi, f_lo, f_hi) if interpolate else _bisection_probe(lo, hi)
        f_mid = excess(mid)
        if f_mid >= 0.0:
            hi, f_hi = mid, f_mid
        else:
            lo, f_lo = mid, f_mid
        if interpolate:
            lo, hi, f_lo, f_hi = _probe_neighbour(excess, lo, hi, f_lo, f_hi, above=f_mid >= 0.0)
        # bisect next whenever interpolation failed to halve the bracket (in ln N)
        interpolate = hi - lo <= 1 or math.log(hi / lo) <= 0.5 * width
    return hi


def _interpolated_probe(lo, hi, f_lo, f_hi):
    """Regula falsi in u between ``lo`` and ``hi``, as an integer strictly inside the bracket."""
    u_lo, u_hi = _u_of(lo), _u_of(hi)
    x = u_lo + (u_hi - u_lo) * (-f_lo) / (f_hi - f_lo)
    return min(max(int(round(_n_of(x))), lo + 1), hi - 1)


def _bisection_probe(lo, hi):
    """The midpoint (in N for a narrow bracket, in ln N for a wide one) strictly inside the bracket."""
    mid = (lo + hi) // 2 if hi - lo < lo else int(round(math.sqrt(lo * hi)))
    return min(max(mid, lo + 1), hi - 1)


def _probe_neighbour(excess, lo, hi, f_lo, f_hi, above):
    """After a probe that became ``hi`` (``above``) or ``lo``, evaluate its inner neighbour: the
    bracket closes to width 1 when the root lies between them, else shrinks by one."""
    if above and hi - 1 > lo:
        f_nb = excess(hi - 1)
        if f_nb < 0.0:
            lo, f_lo = hi - 1, f_nb
        else:
            hi, f_hi = hi - 1, f_nb
    elif not above and lo + 1 < hi:
        f_nb = excess(lo + 1)
        if f_nb >= 0.0:
            hi, f_hi = lo + 1, f_nb
        else:
            lo, f_lo = lo + 1, f_nb
    return lo, hi, f_lo, f_hi


#: the most levels lloyd_max takes
LLOYD_MAX_LEVELS = 1024


def lloyd_max(levels, tol=1e-13, max_iter=200_000):
    r"""The Lloyd-Max (minimum mean-squared error) quantizer of a standard normal.

    Alternates the two optimality conditions: thresholds midway between levels, and each level
    the centroid :math:`(\varphi(t_{k-1}) - \varphi(t_k))/(\Phi(t_k) - \Phi(t_{k-1}))` of its cell
    (Lloyd 1957/1982; Max 1960), starting from the Panter-Dite compander.

    Parameters
    ----------
    levels : int
        Number of levels, ``2 <= N <= 1024`` (the iteration needs ever more steps as N grows:
        already at 256 levels it has not met ``tol = 1e-13`` after 200000).
    tol : float
        Stop when no threshold moves by more than ``tol`` (``> 0``).
    max_iter : int
        The most iterations, ``>= 1``.

    Returns
    -------
    thresholds : ndarray, shape (N - 1,)
    values : ndarray, shape (N,)
    distortion : float
        :math:`\mathbb E[(z - Q(z))^2]`, which equals ``1 - chi(0)`` of the activation ``Q``.

    Warns
    -----
    RuntimeWarning
        When the thresholds still move by more than ``tol`` after ``max_iter`` iterations ("raise
        max_iter"); the quantizer returned is the last iterate.
    """
    return _lloyd_max(*_check_lloyd(levels, tol, max_iter))


def _check_lloyd(levels, tol, max_iter):
    """``(levels, tol, max_iter)`` of :func:`lloyd_max`, checked."""
    levels = check_levels(levels, maximum=LLOYD_MAX_LEVELS)
    return levels, float(check_positive(tol, "tol", allow_array=False)), check_int(max_iter, "max_iter", 1)


def _lloyd_max(levels, tol, max_iter):
    """:func:`lloyd_max` of checked arguments (its warning points at the caller of the public function)."""
    p = (np.arange(1, levels) / levels)
    t = np.sqrt(3.0) * special.ndtri(p)   # compander: equiprobable cells of N(0, 3)
    for _ in range(max_iter):
        edges = np.concatenate(([-np.inf], t, [np.inf]))
        mass = special.ndtr(edges[1:]) - special.ndtr(edges[:-1])
        y = (_pdf(edges[:-1]) - _pdf(edges[1:])) / mass
        t_new = 0.5 * (y[1:] + y[:-1])
        change = np.max(np.abs(t_new - t))
        t = t_new
        if change < tol:
            break
    else:
        warnings.warn(f"lloyd_max({levels}) stopped after max_iter={max_iter} iterations with the thresholds "
                      f"still moving by {change:.1e} (tol={tol:g}): raise max_iter", RuntimeWarning, stacklevel=3)
    edges = np.concatenate(([-np.inf], t, [np.inf]))
    mass = special.ndtr(edges[1:]) - special.ndtr(edges[:-1])
    y = (_pdf(edges[:-1]) - _pdf(edges[1:])) / mass
    # distortion = E[z^2] - E[Q^2] for a centroid quantizer
    distortion = 1.0 - float(np.sum(mass * y * y))
    return t, y, distortion


def lloyd_max_activation(levels, q_star=1.0, tol=1e-13, max_iter=200_000):
    """A :class:`StepActivation` whose thresholds and levels are Lloyd-Max optimal at ``q*``.

    ``levels``, ``tol`` and ``max_iter`` as in :func:`lloyd_max`; ``q_star`` in [1e-100, 1e100] (the
    thresholds and levels scale with its square root).

    Warns
    -----
    RuntimeWarning
        As :func:`lloyd_max`, when the thresholds still move by more than ``tol`` after ``max_iter``
        iterations ("raise max_iter"; from about 256 levels at the defaults).
    """
    q_star = float(check_positive(q_star, "q_star", allow_array=False))
    if not 1e-100 <= q_star <= 1e100:
        raise ValueError(f"q_star must lie in [1e-100, 1e100], got {q_star!r}")
    t, y, _ = _lloyd_max(*_check_lloyd(levels, tol, max_iter))
    return StepActivation(t * math.sqrt(q_star), y * math.sqrt(q_star))
