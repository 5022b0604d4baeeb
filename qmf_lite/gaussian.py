r"""Gaussian expectations: quadrature for any activation, closed forms for step functions.

Two kinds of expectation appear in the mean-field maps, with ``z, z1, z2`` independent
standard normals and

.. math::  u = \sqrt{q}\, z,\qquad
           (u_1, u_2) = \sqrt{q}\,\bigl(z_1,\; c z_1 + \sqrt{1-c^2}\, z_2\bigr).

* one-dimensional, :math:`\mathbb E[f(u)]`, computed with Gauss-Legendre quadrature
  against the normal density;
* two-dimensional, :math:`\mathbb E[f(u_1) g(u_2)]`, with the tensor product of that rule.

For a step function :math:`\phi(x) = v_0 + \sum_i \Delta_i H(x - g_i)` the same expectations
are finite sums over thresholds (normalised thresholds :math:`a_i = g_i/\sqrt q`):

.. math::
   \mathbb E[\phi(u)] &= v_0 + \sum_i \Delta_i \Phi(-a_i), \\
   \operatorname{Var}\phi(u) &= \sum_{ij} \Delta_i\Delta_j\,
        \Phi(\min(a_i,a_j))\,\Phi(-\max(a_i,a_j)), \\
   \mathbb E[\phi'(u_1)\phi'(u_2)] &= \frac{1}{q}\sum_{ij}\Delta_i\Delta_j\, p_c(a_i, a_j), \\
   \mathbb E[\phi(u_1)\phi(u_2)] &= \mathbb E[\phi(u)^2] - \frac{1}{2\pi}\int_{\arcsin c}^{\pi/2}
        \sum_{ij}\Delta_i\Delta_j \exp\Bigl(-\frac{a_i^2+a_j^2-2a_ia_j\sin t}{2\cos^2 t}\Bigr)\,dt,

with :math:`p_c` the standard bivariate normal density of correlation :math:`c`. The last line
is Price's theorem integrated from :math:`c = 1`, where the kernel equals the second moment.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from numpy.polynomial import chebyshev as _cheb
from scipy import special

from ._validate import check_callable, check_correlation, check_int, check_nonnegative, check_real_in

__all__ = ["normal_rule", "expect", "expect_pair", "MonteCarloEstimate", "simultaneous_threshold"]

SQRT2PI = np.sqrt(2.0 * np.pi)


#: the Gaussian integrals are truncated to |z| <= Z_MAX, where the density is below 1e-22
Z_MAX = 10.0


@functools.lru_cache(maxsize=16)
def legendre_rule(n: int):
    """Gauss-Legendre nodes and weights on [-1, 1] (cached)."""
    return np.polynomial.legendre.leggauss(n)


def normal_rule(n: int):
    """Nodes and weights of an ``n``-point rule for the standard normal (``1 <= n <= 4096``; cached).

    Gauss-Legendre on ``[-Z_MAX, Z_MAX]`` with the density folded into the weights:
    ``sum(w * f(x)) ~= E[f(z)]``. Unlike Gauss-Hermite, whose nodes spread out as ``sqrt(n)``,
    its nodes stay dense near the origin, where activations like ``tanh(sqrt(q) z)`` with a
    large ``q`` change fastest; for a function analytic within a distance ``d`` of the real
    axis the error falls like ``(1 + d / Z_MAX)^(-2n)``.
    """
    return _normal_rule(check_int(n, "n", 1, MAX_NODES))


#: the most quadrature nodes per dimension (the pair rule holds n^2 values per correlation)
MAX_NODES = 4096


@functools.lru_cache(maxsize=8)
def _normal_rule(n):
    x, w = np.polynomial.legendre.leggauss(n)
    x = Z_MAX * x
    return x, Z_MAX * w * np.exp(-0.5 * x * x) / SQRT2PI


def expect(f, q, n: int = 400):
    r"""E[f(sqrt(q) z)] for z ~ N(0, 1), by the ``n``-point rule of :func:`normal_rule`.

    ``q`` may be an array; the result has its shape. Geometrically convergent for functions
    analytic near the real axis (tanh, erf): about 1e-14 for ``tanh`` at ``q <= 4``.

    Parameters
    ----------
    f : callable
        Vectorised over numpy arrays.
    q : array_like
        Variance(s), finite and ``>= 0``.
    n : int
        Nodes, ``1 <= n <= 4096``.
    """
    check_callable(f, "f")
    q = check_nonnegative(q, "q")
    return _expect(f, q, check_int(n, "n", 1, MAX_NODES))


def _expect(f, q, n):
    """:func:`expect` of checked arguments (``q`` a float64 array >= 0, ``1 <= n <= MAX_NODES``)."""
    x, w = _normal_rule(n)
    vals = f(np.sqrt(q)[..., None] * x)
    return np.sum(vals * w, axis=-1)


def expect_pair(f, g, q, c, n: int = 240, chunk: int = 32):
    r"""E[f(u1) g(u2)] for (u1, u2) ~ N(0, q [[1, c], [c, 1]]) by a tensor product of :func:`normal_rule`.

    ``q`` (finite, ``>= 0``) and ``c`` (in [-1, 1]) broadcast; ``n`` nodes per dimension
    (``1 <= n <= 4096``); the work is chunked, ``chunk >= 1`` correlations at a time, to keep
    memory small.
    """
    check_callable(f, "f")
    check_callable(g, "g")
    chunk = check_int(chunk, "chunk", 1)
    q, c = check_nonnegative(q, "q"), check_correlation(c, "c")
    return _expect_pair(f, g, q, c, check_int(n, "n", 1, MAX_NODES), chunk)


def _expect_pair(f, g, q, c, n, chunk):
    """:func:`expect_pair` of checked arguments (``q`` >= 0 and ``c`` in [-1, 1] float64 arrays)."""
    q, c = np.broadcast_arrays(q, c)
    out = np.empty(q.shape)
    x, w = _normal_rule(n)
    z1, z2 = x[:, None], x[None, :]
    ww = w[:, None] * w[None, :]
    qf, cf, of = q.ravel(), c.ravel(), out.reshape(-1)
    for start in range(0, qf.size, chunk):
        sl = slice(start, start + chunk)
        s = np.sqrt(qf[sl])[:, None, None]
        cc = cf[sl][:, None, None]
        u1 = s * z1
        u2 = s * (cc * z1 + np.sqrt(np.clip(1.0 - cc * cc, 0.0, None)) * z2)
        of[sl] = np.sum(f(u1) * g(u2) * ww, axis=(-2, -1))
    return out


# ---------------------------------------------------------------------------------------------
# Step functions: phi(x) = v0 + sum_i jumps_i * H(x - thresholds_i)
# ---------------------------------------------------------------------------------------------

def step_mean(a, jumps, v0):
    """E[phi(u)] for normalised thresholds ``a`` (last axis) and jump sizes ``jumps``."""
    return v0 + np.sum(jumps * special.ndtr(-a), axis=-1)


def step_second_moment(a, values):
    r"""E[phi(u)^2] = sum_k v_k^2 P(cell k), with each cell probability taken from the nearer tail.

    A sum of non-negative terms: it stays accurate when phi(u) is almost always 0 (an odd
    number of levels and a tiny ``q``), where ``Var + mean^2`` would be dominated by round-off.
    """
    lo = np.concatenate([np.full(a.shape[:-1] + (1,), -np.inf), a], axis=-1)
    hi = np.concatenate([a, np.full(a.shape[:-1] + (1,), np.inf)], axis=-1)
    # for cells right of 0 use upper tails, left of 0 lower tails: no difference of numbers near 1
    right = lo >= 0
    p = np.where(right, special.ndtr(-lo) - special.ndtr(-hi), special.ndtr(hi) - special.ndtr(lo))
    return np.sum(p * values * values, axis=-1)


def step_variance(a, jumps):
    r"""Var phi(u) = sum_ij D_i D_j Phi(min(a_i,a_j)) Phi(-max(a_i,a_j)), in O(N).

    With the thresholds sorted, the double sum is
    :math:`\sum_j \Delta_j\Phi(-a_j)\,[\Delta_j\Phi(a_j) + 2\sum_{i<j}\Delta_i\Phi(a_i)]`,
    a cumulative sum. Every term is non-negative, so there is no cancellation.
    """
    lower = jumps * special.ndtr(a)
    upper = jumps * special.ndtr(-a)
    before = np.cumsum(lower, axis=-1) - lower
    return np.sum(upper * (lower + 2.0 * before), axis=-1)


def _rotated_exponents(x, rho, plus):
    """x^2 / (4 (1 +- rho)) with the 0/0 limit at rho = -+1 taken as 0 for x = 0."""
    denom = 4.0 * (1.0 + rho) if plus else 4.0 * (1.0 - rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(x == 0.0, 0.0, x * x / denom)
    return e


def step_density_sum(a, jumps, rho):
    r"""S(rho) = sum_ij D_i D_j exp(-(a_i^2 + a_j^2 - 2 rho a_i a_j) / (2 (1 - rho^2))).

    ``a`` and ``jumps`` are 1-d; ``rho`` any shape in [-1, 1]. Written in rotated coordinates,
    :math:`\frac{(a_i+a_j)^2}{4(1+\rho)} + \frac{(a_i-a_j)^2}{4(1-\rho)}`, which has finite
    limits at ``rho = +-1``. Direct O(N^2) sum; see :func:`uniform_density_sum` for O(N).
    """
    rho = np.asarray(rho, np.float64)[..., None, None]
    s = a[:, None] + a[None, :]
    r = a[:, None] - a[None, :]
    expo = _rotated_exponents(s, rho, True) + _rotated_exponents(r, rho, False)
    return np.sum(np.exp(-expo) * (jumps[:, None] * jumps[None, :]), axis=(-2, -1))


def uniform_density_sum(d, m, rho):
    r"""S(rho) for ``m`` unit jumps at uniformly spaced, centred thresholds ``a_i = d (i - (m-1)/2)``.

    With ``s = i + j - (m - 1)`` and ``r = i - j`` the summand factorises,
    :math:`e^{-d^2 s^2/(4(1+\rho))}\, e^{-d^2 r^2/(4(1-\rho))}`, and for each ``r`` the ``s`` run
    over ``-k, -k+2, ..., k`` with ``k = m - 1 - |r|``: a cumulative sum over every other index.
    O(m) exponentials instead of O(m^2).
    """
    rho = np.asarray(rho, np.float64)
    k2 = np.arange(1, m, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", over="ignore"):     # inf (also for a tiny q, d huge): exp(-inf) = 0
        alpha = d * d / (4.0 * (1.0 + rho))                 # inf at rho = -1: only s = 0 survives
        beta = d * d / (4.0 * (1.0 - rho))                  # inf at rho = +1: only r = 0 survives
    es = np.ones(rho.shape + (m,))
    er = np.ones(rho.shape + (m,))
    np.exp(-np.multiply.outer(alpha, k2), out=es[..., 1:])  # E_s, s = 0..m-1
    np.exp(-np.multiply.outer(beta, k2), out=er[..., 1:])   # E_r, r = 0..m-1
    # T(k) = sum_{s=-k,-k+2,..,k} E_|s|
    doubled = 2.0 * es
    doubled[..., 0] = es[..., 0]
    t = np.empty_like(es)
    t[..., 0::2] = np.cumsum(doubled[..., 0::2], axis=-1)
    t[..., 1::2] = np.cumsum(doubled[..., 1::2], axis=-1)
    tr = t[..., ::-1]                                       # T(m - 1 - r), r = 0..m-1
    return er[..., 0] * tr[..., 0] + 2.0 * np.sum(er[..., 1:] * tr[..., 1:], axis=-1)


class ArcsineIntegral:
    r"""The function :math:`G(\theta) = \int_\theta^{\pi/2} S(\sin t)\,dt` on [-pi/2, pi/2].

    ``S`` is a callable of rho. It is smooth (indeed flat at the end points, where the
    off-diagonal terms vanish like ``exp(-C / cos^2 t)``), so a Chebyshev interpolant in
    ``x = 2 theta / pi`` converges fast; the degree is doubled until the trailing
    coefficients fall below ``tol`` relative to the largest. The antiderivative is then exact
    for the interpolant, and one fit serves any number of correlations.

    Where ``S`` varies on a much finer scale near :math:`t = \pm\pi/2` than elsewhere (a step
    function at a variance far above its threshold spacing: the terms
    :math:`e^{-(a_i-a_j)^2/(4(1-\sin t))}` switch on within :math:`|a_i - a_j|` of :math:`\pi/2`) the
    fit would need tens of thousands of coefficients. Given that scale, ``layer``, the integral
    is instead summed on Gauss-Legendre panels graded geometrically (ratio 2) from
    ``layer / 64`` towards both end points, beyond ``PANEL_SWITCH_DEGREE`` coefficients.
    """

    #: the Chebyshev degree beyond which graded panels take over (when ``layer`` is given)
    PANEL_SWITCH_DEGREE = 2048
    #: Gauss-Legendre nodes per panel
    PANEL_NODES = 24

    def __init__(self, density_sum, tol: float = 1e-13, max_degree: int = 1 << 14, layer=None):
        deg = 32
        limit = max_degree if layer is None else min(max_degree, self.PANEL_SWITCH_DEGREE)
        while True:
            coef = _cheb.chebinterpolate(lambda x: density_sum(np.sin(0.5 * np.pi * x)), deg)
            scale = np.max(np.abs(coef))
            tail = np.max(np.abs(coef[-max(4, deg // 16):]))
            if tail <= tol * scale or deg >= limit:
                break
            deg *= 2
        self.degree = deg
        self._panels = None
        if scale > 0 and tail > tol * scale and layer is not None and layer > 0:
            self._panels = self._graded_panels(density_sum, float(layer))
            return
        if scale > 0 and tail > tol * scale:
            import warnings

            warnings.warn(f"the Chebyshev interpolant of the arcsine integrand did not converge at degree "
                          f"{deg} (trailing coefficients {tail / scale:.1e} of the largest; kernel values may "
                          f"be off by about as much)", RuntimeWarning, stacklevel=2)
        # G(theta) = (pi/2) * (P(1) - P(x)), with P the antiderivative of the interpolant.
        self._anti = _cheb.chebint(coef)
        self._top = _cheb.chebval(1.0, self._anti)

    def _graded_panels(self, density_sum, layer):
        """Breakpoints, G at each breakpoint, and the rule for partial panels."""
        half = 0.5 * np.pi
        start = min(layer, 1.0) / 64.0
        offsets = start * 2.0 ** np.arange(0, int(np.ceil(np.log2(half / start))))
        breaks = np.unique(np.concatenate([[-half, half], half - offsets, offsets - half, np.linspace(-half, half, 13)]))
        x, w = legendre_rule(self.PANEL_NODES)
        lo, hi = breaks[:-1, None], breaks[1:, None]
        vals = density_sum(np.sin(0.5 * (hi - lo) * (x + 1.0) + lo))
        pieces = np.sum(0.5 * (hi - lo) * w * vals, axis=-1)
        g_at = np.append(np.cumsum(pieces[::-1])[::-1], 0.0)   # G(breaks[k]) = sum of the panels above
        return breaks, g_at, density_sum

    def __call__(self, theta):
        if self._panels is not None:
            breaks, g_at, density_sum = self._panels
            th = np.clip(np.asarray(theta, np.float64), breaks[0], breaks[-1])
            k = np.clip(np.searchsorted(breaks, th, side="right") - 1, 0, breaks.size - 2)
            x, w = legendre_rule(self.PANEL_NODES)
            lo, hi = th[..., None], breaks[k + 1][..., None]   # from theta to the top of its panel
            part = np.sum(0.5 * (hi - lo) * w * density_sum(np.sin(0.5 * (hi - lo) * (x + 1.0) + lo)), axis=-1)
            return g_at[k + 1] + part
        x = np.asarray(theta, np.float64) * (2.0 / np.pi)
        return 0.5 * np.pi * (self._top - _cheb.chebval(x, self._anti))


@dataclasses.dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte Carlo mean and its standard error (arrays of the same shape)."""

    mean: np.ndarray
    sem: np.ndarray

    def z_score(self, exact):
        """``(mean - exact) / sem``: how many standard errors an exact value lies from the estimate.

        Where the samples do not vary (``sem = 0``, e.g. ``sign`` at ``c = +-1``, where every product is
        ``+-1``) it is 0 if the estimate equals ``exact`` and ``+-inf`` otherwise.
        """
        diff = np.asarray(self.mean - np.asarray(exact, np.float64))
        sem = np.broadcast_to(np.asarray(self.sem, np.float64), diff.shape)
        exact_z = np.where(diff == 0, 0.0, np.copysign(np.inf, diff))
        return np.divide(diff, sem, out=exact_z, where=sem > 0)[()]


def _monte_carlo_kernel(act, q, c, n_samples, seed):
    """The sampling behind :func:`qmf_lite.monte_carlo_kernel` (in ``activations``, which resolves
    the activation): ``act`` a callable on float64 arrays, the other arguments already checked
    (``q`` a float, ``c`` a float64 array, ``n_samples`` and ``seed`` ints)."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((2, n_samples))
    u1 = np.sqrt(q) * z1
    f1 = act(u1)
    mean, sem = np.empty(c.shape), np.empty(c.shape)
    for idx, cv in np.ndenumerate(c):
        prod = f1 * act(np.sqrt(q) * (cv * z1 + np.sqrt(1.0 - cv * cv) * z2))
        mean[idx] = prod.mean()
        sem[idx] = prod.std(ddof=1) / np.sqrt(n_samples)
    return MonteCarloEstimate(mean[()], sem[()])


def simultaneous_threshold(n_comparisons, dof=None, alpha=0.01):
    r"""The bound that ``n_comparisons`` standardised errors :math:`|z_k|` all stay below, with probability ``1 - alpha``.

    A check "every estimate lies within :math:`t` standard errors of the theory" over :math:`m`
    comparisons must correct for their number, and for standard errors estimated from few samples.
    The Šidák correction gives each comparison the two-sided tail
    :math:`p = 1 - (1 - \alpha)^{1/m}`, so

    .. math:: t = F^{-1}\bigl(1 - p/2\bigr),

    with :math:`F` the standard normal distribution (``dof=None``: standard errors from large
    samples) or Student's t with ``dof`` degrees of freedom (a mean and its standard error from
    ``dof + 1`` independent samples, e.g. networks). For independent comparisons
    :math:`P(\max_k |z_k| < t) = 1 - \alpha` exactly; for jointly Gaussian ones with any
    correlation it is at least that (Šidák's inequality), so correlated comparisons (the layers of
    the same networks) make the check conservative, never too strict.

    Parameters
    ----------
    n_comparisons : int
        Number of comparisons :math:`m`, ``1 <= m <= 10**12``.
    dof : int or None
        Degrees of freedom of the t distribution, ``1 <= dof <= 10**9``; ``None`` for the normal.
    alpha : float
        Probability that the check fails by chance alone, in ``[1e-12, 0.5]``.

    Returns
    -------
    float
        The threshold :math:`t`.

    Examples
    --------
    >>> round(simultaneous_threshold(1, alpha=0.05), 4)        # the familiar 1.96
    1.96
    >>> round(simultaneous_threshold(36), 2), round(simultaneous_threshold(120, dof=7), 2)
    (3.63, 8.11)
    """
    from scipy import stats

    m = check_int(n_comparisons, "n_comparisons", 1, 10**12)
    if dof is not None:
        dof = check_int(dof, "dof", 1, 10**9)
    alpha = check_real_in(alpha, "alpha", 1e-12, 0.5)
    tail = -np.expm1(np.log1p(-alpha) / m)              # 1 - (1 - alpha)^(1/m) without cancellation
    dist = stats.norm if dof is None else stats.t(dof)
    return float(dist.isf(tail / 2))
