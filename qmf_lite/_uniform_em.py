r"""chi(0) of a uniform N-level quantizer in O(1): Euler-Maclaurin with the leading terms cancelled.

Private helper of :mod:`qmf_lite.tradeoff` (the public entry points are ``chi_max``,
``quantization_error`` and ``chi_zero`` there). Notation: :math:`D = \tilde D` is the normalized
spacing, :math:`\varphi, \Phi` the standard normal density and distribution,
:math:`\mathrm{He}_n` the probabilists' Hermite polynomials, :math:`z\sim N(0,1)`.

The quantizer
-------------
The :math:`N-1` thresholds are :math:`t_i = D(i - \tfrac{N-2}{2})`, :math:`|t_i|\le T`,
:math:`T = D\tfrac{N-2}{2}`. Scaled by :math:`D`, the centred level count is the mid-rise
quantizer :math:`Q = D(\psi - \mathbb E\psi)`: inside :math:`[-T, T]` it maps a cell of width
:math:`D` to its midpoint, beyond :math:`\pm T` it is :math:`\pm(T + D/2)`. Then

.. math:: \chi(0) = \frac{S^2}{V} = \frac{\mathbb E[zQ]^2}{\mathbb E[Q^2]}, \qquad
          \mathbb E[zQ] = D\sum_i\varphi(t_i) = 1 - \alpha, \qquad
          \mathbb E[Q^2] = 1 - 2\alpha + e,

with the two small numbers (``E[z Q] = D S`` is Stein's lemma,
``E[Q^2] = E[(z - (z - Q))^2]``)

.. math:: \alpha = \mathbb E[z(z - Q)] = 1 - D\sum_i\varphi(t_i), \qquad
          e = \mathbb E[(z - Q)^2].

Hence, with no difference of numbers near 1 left anywhere,

.. math:: 1 - \chi(0) = \frac{e - \alpha^2}{1 + e - 2\alpha}, \qquad
          \chi(0) = \frac{(1-\alpha)^2}{1 + e - 2\alpha}.

Moreover :math:`\tilde D_{\rm opt}` solves :math:`e = \alpha` (``E[Q (z - Q)] = 0``): with
:math:`Q_D(z) = D f(z/D)`, :math:`\partial_D Q_D = (Q - X)/D` where the jump term ``X`` gives the
same :math:`\sum_i t_i^2\varphi(t_i)` in :math:`\mathbb E[z\,\partial_D Q]` and in
:math:`\mathbb E[Q\,\partial_D Q]` (``Q`` jumps symmetrically about ``t_i``), so
:math:`\partial_D\ln\chi = 0 \iff \mathbb E[zQ] = \mathbb E[Q^2]`. The root of ``e - alpha``
is a simple zero (of ``ln(e / alpha)``, see :func:`stationarity`), located to ~1e-15 relative,
where maximising ``chi`` itself locates the flat maximum only to ~1e-8.

alpha by Euler-Maclaurin (trapezoid form)
-----------------------------------------
The thresholds are the nodes of the trapezoid rule on :math:`[-T, T]` plus half the end values.
With :math:`\int_{-T}^{T}\varphi = 1 - 2\Phi(-T)` the leading 1 cancels exactly and

.. math:: \alpha = 2\Phi(-T) - D\varphi(T)
          + 2\varphi(T)\sum_{k\ge1}\frac{B_{2k}}{(2k)!}D^{2k}\mathrm{He}_{2k-1}(T)
          - 2\sum_{k\ge1}\sigma^k e^{-2\pi^2k^2/D^2},

(:math:`\varphi^{(2k-1)}(T) = -\mathrm{He}_{2k-1}(T)\varphi(T)`). The last sum is the Poisson
(aliasing) term of the whole lattice, :math:`D\sum_{n\in\mathbb Z}\varphi(x_0 + nD)
= 1 + 2\sum_k\sigma^k e^{-2\pi^2k^2/D^2}`, :math:`\sigma = +1` for even N (a threshold at 0)
and :math:`-1` for odd N; it is zero in float64 for :math:`D < 0.15` (and skipped there) and
matters only for :math:`D \gtrsim 0.5`.

e by Euler-Maclaurin (midpoint form) and the tails in closed form
-----------------------------------------------------------------
Granular part: the :math:`N-2` interior cells have midpoints :math:`m` on the midpoint rule of
:math:`[-T, T]`; with :math:`g(x) = \int_{-D/2}^{D/2} u^2\varphi(x+u)\,du`,
:math:`\int_{-T}^{T} g = D^3/12 - 2\int_{-D/2}^{D/2}u^2\Phi(u - T)\,du` and
:math:`B_{2k}(\tfrac12) = (2^{1-2k} - 1)B_{2k}`,

.. math:: e_{\rm gran} = \frac{D^2}{12} - \frac{2}{D}\int_{-D/2}^{D/2} u^2\Bigl[\Phi(u - T)
          + \varphi(T+u)\sum_{k\ge1}\frac{B_{2k}(\frac12)}{(2k)!}D^{2k}\mathrm{He}_{2k-1}(T+u)\Bigr]du
          + \frac{D^2}{\pi^2}\sum_{k\ge1}\frac{\sigma^k}{k^2}e^{-2\pi^2k^2/D^2},

the Sheppard term :math:`D^2/12` exact and the rest of the size of the tail mass; the last sum
is again the aliasing term (Fourier series of the squared sawtooth). The integral over one cell
width is done by Gauss-Legendre (the integrand varies on the scale :math:`1/T \gg D`).
Overload part, :math:`z = T + s`:

.. math:: e_{\rm over} = 2\int_0^\infty (s - D/2)^2\varphi(T + s)\,ds
          = 2\Phi(-T)\,\bigl[r_1(r_2 - D) + D^2/4\bigr],

with :math:`r_n = J_n/J_{n-1}`, :math:`J_n = \int_0^\infty s^n e^{-Ts - s^2/2}ds`, from the
recurrence :math:`T J_n + J_{n+1} = n J_{n-1}`, i.e. the continued fraction
:math:`r_n = n/(T + r_{n+1})` evaluated backwards (``1 - T R`` would cancel for large T).

All thresholds near 0
---------------------
Where :math:`E[Q^2] = 1 + e - 2\alpha` is small (:math:`T \lesssim 1`) that combination
cancels; there :func:`gap_chi` uses :math:`\chi = \mathbb E[zQ]^2/\mathbb E[Q^2]` with
:math:`\mathbb E[zQ] = \operatorname{erf}(T/\sqrt2) + D\varphi(T) - \dots` (the series of alpha
without its leading 1) and :math:`\mathbb E[Q^2]` from :func:`second_moment`, both sums of
positive leading terms; ``chi`` is then far from 1 (at most 0.8), so ``1 - chi`` is well
conditioned.

Accuracy
--------
The Euler-Maclaurin series in :math:`D` are asymptotic: their terms fall like
:math:`(DT/2\pi)^{2k}` while :math:`k \lesssim T^2` and eventually grow. The number of terms
comes from an envelope of the terms (``|He_n(x)| <= (|x| + sqrt n)^n`` and Cramer's
inequality ``|He_n(x)| <= 1.0865 sqrt(n!) exp(x^2/4)``): stop when the next
term is below 1e-18 of :math:`D^2/12` or where the envelope turns (at most ``MAX_TERMS``), and
take that next term, plus the first omitted aliasing term and a bound on the cross term between
aliasing and tails (:math:`\sim e^{-2\pi^2/D^2}\Phi(-T)`), as the truncation error; the
estimate returned by :func:`gap_chi` adds the rounding of the final combination. At the
optimal spacing :math:`DT` falls from 1 (N = 8) to 1.4e-7 (N = 1e9): one term suffices at
large N. Measured against 30-digit sums (tests/test_tradeoff.py), the gap at the optimal
spacing is right to 3e-16 from N = 6 on; over :math:`\tilde D_{\rm opt}/1.3 ..
1.3\tilde D_{\rm opt}` to 9e-16 from N = 9 on, and the estimate is below 6e-16 there from
N = 10 on, where ``chi_max`` switches to this module. For N >= 10 and any :math:`D < 0.15` the
estimate stays below 5e-15 (largest at T ~ 0.6); against independent sums the worst measured
error over N = 10 .. 1001 and D = 1e-6 .. 50 is 4e-15.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import special

SQRT2PI = math.sqrt(2.0 * math.pi)

#: most Euler-Maclaurin terms used (the series is asymptotic)
MAX_TERMS = 24


def _bernoulli(n):
    """B_0 .. B_n as exact fractions (Akiyama-Tanigawa; scipy's floats are off by up to 2e-12)."""
    out, row = [], []
    for m in range(n + 1):
        row.append(Fraction(1, m + 1))
        for j in range(m, 0, -1):
            row[j - 1] = j * (row[j - 1] - row[j])
        out.append(row[0])
    out[1] = -out[1]                                  # the convention B_1 = -1/2
    return out


_B = _bernoulli(2 * MAX_TERMS + 2)
#: B_2k / (2k)!  (trapezoid rule) and B_2k(1/2) / (2k)! = (2^(1-2k) - 1) B_2k / (2k)!  (midpoint
#: rule), k = 1..MAX_TERMS, rounded once from exact fractions
_TRAP = np.array([float(_B[2 * k] / math.factorial(2 * k)) for k in range(1, MAX_TERMS + 1)])
_LOG_TRAP = np.log(np.abs([float(_B[2 * k] / math.factorial(2 * k)) for k in range(1, MAX_TERMS + 2)]))
_MID = np.array([float((Fraction(1, 2 ** (2 * k - 1)) - 1) * _B[2 * k] / math.factorial(2 * k))
                 for k in range(1, MAX_TERMS + 1)])
_K = np.arange(MAX_TERMS + 1)
_N_ODD = 2.0 * _K + 1.0
_SQRT_N_ODD = np.sqrt(_N_ODD)
#: log of Cramer's bound |He_n(x)| <= 1.086435 sqrt(n!) exp(x^2/4) without the exp, n = 2k + 1
_LOG_CRAMER = math.log(1.086435) + 0.5 * special.gammaln(_N_ODD + 1.0)
#: Gauss-Legendre rules for the cell-width integrals, by D * T
_GL = {m: np.polynomial.legendre.leggauss(m) for m in (4, 8, 16)}
#: terms below this fraction of D^2 / 12 are dropped
_NEGLIGIBLE = 1e-18


def _gl_rule(dt):
    return _GL[4] if dt < 1e-3 else (_GL[8] if dt < 1.0 else _GL[16])


def _mills_ratios(t):
    """r1 = J1/J0 and r2 = J2/J1 for J_n = int_0^inf s^n exp(-t s - s^2/2) ds, t >= 0."""
    if t < 1.0:
        # small t: the closed forms are accurate (measured 2e-16 for t <= 1, but 2e-15 at t = 1.2
        # and 4e-15 at t = 1.5, where 1 - t J0 and J0 - t J1 cancel: hence the switch at 1)
        j0 = math.sqrt(math.pi / 2.0) * float(special.erfcx(t / math.sqrt(2.0)))
        j1 = 1.0 - t * j0
        j2 = j0 - t * j1
        return j1 / j0, j2 / j1
    # backward continued fraction r_n = n / (t + r_{n+1}); depth from measured convergence to
    # 2e-16 (t = 1: 400 levels, t = 1.2: 400, t = 1.5: 200, t = 1.76: 200, t = 4: 40)
    r2 = 0.0
    for n in range(60 + int(600.0 / (t * t)), 2, -1):
        r2 = n / (t + r2)
    r2 = 2.0 / (t + r2)
    return 1.0 / (t + r2), r2


def parts(levels, spacing):
    """(alpha, 1 - alpha, e, error_estimate) for ``levels`` >= 3 at normalized spacing ``spacing``.

    ``1 - alpha = E[z Q] = D S`` is summed separately (``erf(T / sqrt 2)`` in place of
    ``1 - 2 Phi(-T)``), accurate where alpha is near 1. ``error_estimate`` bounds the truncation
    of the asymptotic series and of the aliasing sums, in the units of ``e``.
    """
    d = float(spacing)
    t = d * (levels - 2) / 2.0
    d2 = d * d
    sigma = 1.0 if levels % 2 == 0 else -1.0
    x, w = _gl_rule(d * max(t, 1.0))
    u = 0.5 * d * x
    # nodes: T itself (for alpha) and T + u (for the granular integral)
    nodes = np.concatenate(([t], t + u))
    dens = np.exp(-0.5 * nodes * nodes) / SQRT2PI
    wu2 = w * u * u                                   # sum(wu2 * f(u)) = (2/D) int u^2 f(u) du
    scale = d2 / 12.0
    p_t = float(dens[0])
    n_terms, err_em = _endpoint_terms(d, t, p_t, scale)
    herm = _odd_hermite(nodes, n_terms)
    d_pow = d2 ** np.arange(1, n_terms + 1)
    em_alpha = 2.0 * p_t * float(np.dot(_TRAP[:n_terms] * d_pow, herm[0]))
    em_gran = -float(np.dot(_MID[:n_terms] * d_pow, (wu2 * dens[1:]) @ herm[1:]))
    alias_alpha, alias_gran, err_alias = _aliasing(d, t, sigma, scale)
    tail = float(special.ndtr(-t))                    # Phi(-T)
    alpha = 2.0 * tail - d * p_t + em_alpha + alias_alpha
    # the same sum without the leading 1 removed, for small T where alpha is near 1
    ezq = float(special.erf(t / math.sqrt(2.0))) + d * p_t - em_alpha - alias_alpha
    gran = scale - float(np.dot(wu2, special.ndtr(u - t))) + em_gran + alias_gran
    r1, r2 = _mills_ratios(t)
    over = 2.0 * tail * (r1 * (r2 - d) + 0.25 * d2)
    return alpha, ezq, gran + over, err_em + err_alias


def _endpoint_terms(d, t, p_t, scale):
    """(n_terms, truncation error) of the endpoint (Euler-Maclaurin) series of :func:`parts`.

    An envelope of the k-th terms (k = 0 is the D^2 term) of both series from
    |He_n(x)| <= min((|x| + sqrt(n))^n, 1.0865 sqrt(n!) e^{x^2/4}) (the second is Cramer's
    inequality), in logs; stop when the next term is negligible or where the asymptotic
    series turns, and take that next term as the truncation error.
    """
    d2 = d * d
    weight = 2.0 * p_t + d2 / 6.0 * math.exp(-0.5 * max(t - 0.5 * d, 0.0) ** 2) / SQRT2PI
    if not weight > 0.0:                              # phi(T) underflows: no endpoint terms
        return 1, 0.0
    x_max = t + 0.5 * d
    log_he = np.minimum(_N_ODD * np.log(x_max + _SQRT_N_ODD), _LOG_CRAMER + 0.25 * x_max * x_max)
    log_env = _LOG_TRAP + (_K + 1.0) * math.log(d2) + log_he + math.log(weight)
    env = np.exp(log_env)
    stop = (env[1:] <= _NEGLIGIBLE * scale) | (env[1:] >= env[:-1])
    n_terms = int(np.argmax(stop)) + 1 if stop.any() else MAX_TERMS
    return n_terms, float(env[n_terms])


def _odd_hermite(nodes, n_terms):
    """He_1, He_3, .. He_{2K-1} at the nodes (one row per node), by He_i = x He_{i-1} - (i - 1) He_{i-2}."""
    herm = np.empty((2 * n_terms, nodes.size))
    herm[0] = 1.0
    herm[1] = nodes
    for i in range(2, 2 * n_terms):
        herm[i] = nodes * herm[i - 1] - (i - 1) * herm[i - 2]
    return herm[1::2].T


def _aliasing(d, t, sigma, scale):
    """(alpha term, granular term, error bound) of the aliasing (Poisson) terms of the whole lattice,
    e^{-2 pi^2 k^2 / D^2}, with ``sigma`` = +1 (even N) or -1 (odd N)."""
    d2 = d * d
    alias_alpha = 0.0
    alias_gran = 0.0
    err_alias = 0.0
    if d > 0.15:  # below, exp(-2 pi^2 / D^2) < 1e-380: zero in float64
        for k in range(1, 64):
            a = math.exp(-2.0 * math.pi ** 2 * k * k / d2) * sigma ** k
            if abs(a) <= _NEGLIGIBLE * scale * 1e-3:
                break
            alias_alpha -= 2.0 * a
            alias_gran += d2 / (math.pi ** 2 * k * k) * a
        else:
            err_alias = math.inf
        # cross term between aliasing and the tails
        err_alias += 4.0 * math.exp(-2.0 * math.pi ** 2 / d2) * float(special.ndtr(-t))
    return alias_alpha, alias_gran, err_alias


def second_moment(levels, spacing):
    r"""(E[Q^2], error bound) by Euler-Maclaurin on the summation-by-parts form (for small T).

    :math:`\mathbb E[Q^2] = \tfrac{D^2}{4}[N\text{ even}] + 4D\sum_{t_i>0} t_i\Phi(-t_i)`, a
    trapezoid (even N, nodes D, 2D, .., T) or midpoint (odd N, nodes D/2, .., T; cells up to
    :math:`x = T + D/2`) sum of :math:`f(t) = t\Phi(-t)` on :math:`[0, x]`. With
    :math:`\int_0^x f = \tfrac{x^2}{2}\Phi(-x) + \tfrac14 P(\tfrac32, \tfrac{x^2}{2})`
    (``P`` the regularized incomplete gamma function), the lower endpoint giving exactly the
    Sheppard term (``f'(0) = 1/2``, higher odd derivatives 0 there),

    .. math:: \mathbb E[Q^2] = \frac{D^2}{12} + P(\tfrac32, \tfrac{x^2}{2}) + 2x^2\Phi(-x)
              + 2Dx\Phi(-x)[N\text{ even}] + 4\sum_{k\ge1} b_k D^{2k} f^{(2k-1)}(x),

    :math:`b_k = B_{2k}/(2k)!` (even) or :math:`B_{2k}(\frac12)/(2k)!` (odd),
    :math:`f' = \Phi(-x) - x\varphi(x)`,
    :math:`f^{(2k-1)} = \varphi(x)\,[(2k-1)\mathrm{He}_{2k-3}(x) - x\,\mathrm{He}_{2k-2}(x)]`.
    Every leading term is positive: no cancellation when all thresholds sit near 0, where
    ``1 + e - 2 alpha`` would cancel. No aliasing terms: for ``spacing >= 0.15`` the bound is inf.
    """
    d = float(spacing)
    even = levels % 2 == 0
    x = d * (levels - 2) / 2.0 + (0.0 if even else 0.5 * d)
    coef = _TRAP if even else _MID
    p_x = math.exp(-0.5 * x * x) / SQRT2PI
    q_x = float(special.ndtr(-x))
    total = d * d / 12.0 + float(special.gammainc(1.5, 0.5 * x * x)) + 2.0 * x * x * q_x
    if even:
        total += 2.0 * d * x * q_x
    series = coef[0] * d * d * (q_x - x * p_x)
    err = math.inf if d >= 0.15 else 0.0
    h_prev, h = 1.0, x                                 # He_{n-1}, He_n at x, n = 1
    d_pow = d * d
    for k in range(2, MAX_TERMS + 1):
        # He_{2k-3} and He_{2k-2}: advance the recurrence to n = 2k - 2
        h_prev, h = h, x * h - (2 * k - 3) * h_prev
        d_pow *= d * d
        term = 4.0 * coef[k - 1] * d_pow * p_x * ((2 * k - 1) * h_prev - x * h)
        series += term / 4.0
        bound = 4.0 * abs(coef[k - 1]) * d_pow * p_x * (2 * k + x) * (x + math.sqrt(2 * k)) ** (2 * k - 2)
        if bound <= _NEGLIGIBLE * total:
            err += bound
            break
        # advance to the next even order: He_{2k-1}, He_{2k}
        h_prev, h = h, x * h - (2 * k - 2) * h_prev
    else:
        err = math.inf
    return total + 4.0 * series, err


def gap_chi(levels, spacing):
    """(1 - chi(0), chi(0), error estimate relative to the gap) from :func:`parts`.

    The estimate adds to the truncation bound the rounding of the final combination, which
    cancels where ``E[Q^2] = 1 + e - 2 alpha`` is small: all thresholds within a fraction of a
    standard deviation (then, for spacing < 0.15, ``chi = E[zQ]^2 / E[Q^2]`` from
    :func:`second_moment` is used instead, well conditioned there as ``chi`` is far from 1), or
    an odd N with a dead zone of many standard deviations (left to the direct sums).
    """
    alpha, ezq, e, err = parts(levels, spacing)
    denom = 1.0 + e - 2.0 * alpha                     # E[Q^2]
    numer = e - alpha * alpha
    eps = np.finfo(float).eps
    if denom > 0.0 and numer > 0.0:
        gap = numer / denom
        rounding = eps * ((e + alpha * alpha) / numer + (1.0 + e + 2.0 * abs(alpha)) / denom)
        estimate = err / gap + rounding
    else:                                             # cancelled away entirely
        gap, estimate = math.nan, math.inf
    if estimate > 1e-15 and spacing < 0.15:
        eqq, err_q = second_moment(levels, spacing)
        if eqq > 0.0 and ezq > 0.0:
            chi = ezq * ezq / eqq
            gap_alt = 1.0 - chi
            # a few roundings in E[zQ] and E[Q^2] (each a sum of positive leading terms)
            estimate_alt = (err_q / eqq + 2.0 * err / ezq + 5.0 * eps) * chi / gap_alt
            if estimate_alt < estimate:
                return gap_alt, chi, estimate_alt
    return gap, 1.0 - gap, estimate


def stationarity(levels, spacing):
    """``ln(e / alpha)``: negative below the optimal spacing, zero at it, positive above.

    The logarithm is nearly linear in the spacing near the root (``ln e ~ 2 ln D``, ``ln alpha``
    ~ the log tail mass ~ ``-T^2/2``), so Brent's method needs about 8 evaluations from a 3%
    bracket; ``e - alpha`` itself, steep on one side, needs 11 to 14.
    """
    alpha, _, e, _ = parts(levels, spacing)
    return math.log(e / alpha) if alpha > 0.0 else math.inf
