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
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import numpy as np
from scipy import optimize, special

from ._validate import check_int, check_levels, check_positive
from .activations import QuantizedActivation, StepActivation
from .gaussian import SQRT2PI, step_variance

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


def _pdf(x):
    return np.exp(-0.5 * x * x) / SQRT2PI


def _naive_parts(levels, spacing):
    """S = sum_i pdf(t_i) and V = Var(psi) for unit steps, each a sum of positive terms."""
    j = np.arange(levels - 1) - (levels - 2) / 2.0
    t = np.multiply.outer(spacing, j)
    return np.sum(_pdf(t), axis=-1), step_variance(t, np.ones(levels - 1))


def _renamed(value, old_value, old, new, func):
    """``value`` or the deprecated keyword ``old`` (one release of grace, with a warning)."""
    if old_value is not None:
        if value is not None:
            raise ValueError(f"{func}: pass {new} only (not both {new} and the deprecated {old})")
        warnings.warn(f"{func}({old}=...) is deprecated: the argument is now called {new} "
                      f"(the spacing in units of sqrt(q*), not the raw spacing D)", DeprecationWarning, stacklevel=3)
        return old_value
    if value is None:
        raise ValueError(f"{func}: {new} is required")
    return value


def chi_zero(levels, normalized_spacing=None, *, spacing=None):
    r"""chi(0) at sigma_b = 0 as a function of the normalized spacing :math:`\tilde D = D/\sqrt{q^*}`.

    .. math:: \chi(0) = \Bigl(\sum_i\varphi(t_i)\Bigr)^2 \Big/
                        \sum_{ij}\Phi(\min(t_i,t_j))\,\Phi(-\max(t_i,t_j))

    Parameters
    ----------
    levels : int
        Number of levels ``N >= 2``.
    normalized_spacing : array_like
        Threshold spacing in units of the pre-activation standard deviation, ``D / sqrt(q*) > 0``.
        (Deprecated keyword: ``spacing``.)

    Examples
    --------
    >>> round(float(chi_zero(2, 1.0)), 12)  # sign: 2/pi whatever the spacing
    0.636619772368
    """
    levels = check_levels(levels)
    spacing = check_positive(_renamed(normalized_spacing, spacing, "spacing", "normalized_spacing", "chi_zero"),
                             "normalized_spacing")
    if levels > 4096:
        return 1.0 - quantization_error(levels, spacing)
    s, v = _naive_parts(levels, spacing)
    return s * s / v


@functools.lru_cache(maxsize=32)
def _gauss_legendre(m):
    return np.polynomial.legendre.leggauss(m)


def _half_parts(levels, spacing):
    """S and V as in :func:`_naive_parts`, from the thresholds t >= 0 alone (symmetry)."""
    j = np.arange((levels - 1) // 2 if levels % 2 else levels // 2 - 1, levels - 1) - (levels - 2) / 2.0
    t = spacing * j                                      # thresholds >= 0, increasing
    pdf = _pdf(t)
    s = 2.0 * pdf.sum() - (pdf[0] if t[0] == 0.0 else 0.0)
    upper = special.ndtr(-t)                             # P(z > t_i)
    # right-half cells between consecutive thresholds, and the outer cell; psi - E psi there:
    mass = np.append(upper[:-1] - upper[1:], upper[-1])
    centred = np.arange(mass.size) + (0.5 if t[0] == 0.0 else 1.0)
    v = 2.0 * np.sum(mass * centred * centred)         # odd N: the central cell adds 0
    return s, v


def _quantization_error_scalar(levels, spacing):
    s, v = _half_parts(levels, spacing)
    beta = float(s / v)  # best gain: reconstruction y_k = beta (k - (N-1)/2)
    n_cells = levels
    half = n_cells // 2
    # symmetric quantizer: cells k and N-1-k mirror each other; sum over k >= (N-1)/2 and double
    t_max = spacing * (levels - 2) / 2.0
    # outer cell [t_max, inf): reconstruction y = beta (N-1)/2; exact tail moments via the
    # Mills ratio R = Phi(-t)/pdf(t)
    y = beta * (levels - 1) / 2.0
    pt = float(_pdf(t_max))
    mills = math.sqrt(math.pi / 2.0) * special.erfcx(t_max / math.sqrt(2.0))
    e = t_max - y
    # int_t^inf (z - y)^2 pdf = pdf(t) [ (1 + e^2) R + (t - y) + ... ] written with z = t + s
    # int (s + e)^2 pdf(t + s) ds = I2 + 2 e I1 + e^2 I0, I0 = pdf R, I1 = pdf (1 - t R), I2 = pdf ((1 + t^2) R - t)
    i0 = pt * mills
    i1 = pt * (1.0 - t_max * mills)
    i2 = pt * ((1.0 + t_max * t_max) * mills - t_max)
    tail = i2 + 2.0 * e * i1 + e * e * i0
    # interior cells k = half .. N-2 (cells between thresholds); cell k spans
    # [spacing (k - 1 - (N-2)/2), spacing (k - (N-2)/2)], midpoint spacing (k - (N-1)/2)
    k = np.arange(half, n_cells - 1, dtype=np.float64)
    jm = k - (levels - 1) / 2.0
    mid = spacing * jm
    if mid.size:
        w = spacing
        width_scale = w * (1.0 + abs(t_max))
        m = 3 if width_scale < 1e-3 else (6 if width_scale < 0.1 else 16)
        x, wts = _gauss_legendre(m)
        sgrid = 0.5 * w * x                               # nodes in [-w/2, w/2]
        off = (spacing - beta) * jm                        # midpoint - reconstruction, no cancellation
        vals = (sgrid[None, :] + off[:, None]) ** 2 * _pdf(mid[:, None] + sgrid[None, :])
        cell = 0.5 * w * (vals @ wts)
        if levels % 2 == 1:
            # odd N: the central cell (k = (N-1)/2, output 0) is its own mirror image
            interior = 2.0 * cell[1:].sum() + cell[0]
        else:
            interior = 2.0 * cell.sum()
    else:
        interior = 0.0
    return interior + 2.0 * tail


def quantization_error(levels, normalized_spacing=None, *, spacing=None):
    r"""``1 - chi(0)``, the relative mean-squared quantization error, with full relative precision.

    .. math:: 1 - \chi(0) = \min_\beta \mathbb E\bigl[(z - \beta(\psi(z) - \mathbb E\psi))^2\bigr]
              = \sum_{\text{cells}} \int_{\text{cell}} (z - y_k)^2\,\varphi(z)\,dz

    Interior cells are integrated by Gauss-Legendre around their midpoints and the two outer
    cells in closed form, so every term is non-negative and small errors stay small.

    Parameters
    ----------
    levels : int
        Number of levels ``N >= 2``.
    normalized_spacing : array_like
        ``D / sqrt(q*) > 0`` (deprecated keyword: ``spacing``).

    Examples
    --------
    >>> round(float(quantization_error(16, 0.3352)), 6)
    0.011543
    """
    levels = check_levels(levels)
    spacing = check_positive(_renamed(normalized_spacing, spacing, "spacing", "normalized_spacing",
                                      "quantization_error"), "normalized_spacing")
    out = np.vectorize(lambda d: _quantization_error_scalar(levels, float(d)), otypes=[float])(spacing)
    return out[()] if out.ndim == 0 else out


@functools.lru_cache(maxsize=4096)
def _chi_max_cached(levels):
    if levels == 2:
        return 2.0 / math.pi, 1.0 - 2.0 / math.pi, math.nan
    # a first guess within ~25% (the outer threshold near sqrt(2 ln N)), refined by Brent
    guess = 2.4 * math.sqrt(2.0 * math.log(levels)) / levels
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


def chi_max(levels, complement=False):
    r"""Maximum over the normalised spacing of chi(0), and the maximiser.

    Parameters
    ----------
    levels : int
        Number of levels ``N >= 2``.

    complement : bool
        If true, return ``1 - chi_max`` in place of ``chi_max``, computed without cancellation
        (at N = 10^6 it is 1.6e-11, of which ``1 - chi_max(N)[0]`` keeps only five digits).

    Returns
    -------
    chi : float
        :math:`\chi_{\max}(N) = \max_{\tilde D}\chi(0)` (or ``1 - chi_max`` with ``complement``).
    normalized_spacing : float
        :math:`\tilde D_{\rm opt}`, the optimal spacing in units of :math:`\sqrt{q^*}`. For
        ``N = 2`` the single threshold sits at 0, every spacing is optimal, and this is NaN.

    Examples
    --------
    >>> chi, d = chi_max(16)
    >>> round(1 - chi, 6), round(d, 4)
    (0.011543, 0.3352)
    """
    chi, gap, spacing = _chi_max_cached(check_levels(levels))
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
    gap, _ = chi_max(levels, complement=True)
    return -1.0 / math.log1p(-gap)


def max_depth(levels, multiple=6.0):
    r"""Trainable depth :math:`L_{\max} = \text{multiple}\times\xi(N)`, with :math:`\xi(N)` of :func:`optimal_depth_scale`.

    ``multiple = 6`` is the empirical rule of Schoenholz et al. (2017) that Blumenfeld et al. (2019)
    adopt; ``max_depth(N, 1.0)`` is :math:`\xi(N)` itself (prefer :func:`optimal_depth_scale`).

    Examples
    --------
    >>> round(max_depth(16), 1)
    516.8
    """
    multiple = float(check_positive(multiple, "multiple", allow_array=False))
    return multiple * optimal_depth_scale(levels)


def bits(levels):
    r"""Bits needed to store one of ``levels`` values, :math:`\lceil\log_2 N\rceil`.

    Examples
    --------
    >>> bits(2), bits(3), bits(16), bits(17)
    (1, 2, 4, 5)
    """
    levels = check_levels(levels)
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
        return bits(self.levels)


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
    if isinstance(levels, StepActivation) and not isinstance(levels, QuantizedActivation):
        if scale != 1.0 or spacing is not None:
            raise ValueError("scale and spacing apply to a number of levels, not to a given step activation")
        return _optimal_init_step(levels)
    if isinstance(levels, QuantizedActivation):
        if scale != 1.0 or spacing is not None:
            raise ValueError("scale and spacing apply to a number of levels, not to a given activation")
        act = levels
    else:
        act = QuantizedActivation(check_levels(levels), spacing, scale)
    levels = act.levels
    c, d_opt = chi_max(levels)
    gap, _ = chi_max(levels, complement=True)
    if levels == 2:
        q_star = 1.0
        d_opt = act.spacing
    else:
        q_star = (act.spacing / d_opt) ** 2
    sigma_w = math.sqrt(q_star / float(act.second_moment(q_star)))
    xi = -1.0 / math.log1p(-gap)
    return InitScheme(levels, sigma_w, 0.0, act, q_star, act.spacing / math.sqrt(q_star), c, xi, 6.0 * xi, gap)


def levels_for_depth(depth, multiple=6.0):
    """The fewest levels ``N`` whose ``max_depth(N, multiple)`` reaches ``depth``, and its bits.

    Returns
    -------
    levels : int
    bits : int
        ``ceil(log2(levels))``, the bits needed to store one activation.
    """
    depth = float(check_positive(depth, "depth", allow_array=False))
    multiple = float(check_positive(multiple, "multiple", allow_array=False))
    if max_depth(2, multiple) >= depth:
        return 2, 1
    lo, hi = 2, 4
    while max_depth(hi, multiple) < depth:
        lo, hi = hi, hi * 2
        if hi > 1 << 40:
            raise ValueError(f"depth {depth} is beyond reach of any practical number of levels")
    while hi - lo > 1:  # L_max grows with N: bisection on integers
        mid = (lo + hi) // 2
        if max_depth(mid, multiple) >= depth:
            hi = mid
        else:
            lo = mid
    return hi, bits(hi)


def lloyd_max(levels, tol=1e-13, max_iter=200_000):
    r"""The Lloyd-Max (minimum mean-squared error) quantizer of a standard normal.

    Alternates the two optimality conditions: thresholds midway between levels, and each level
    the centroid :math:`(\varphi(t_{k-1}) - \varphi(t_k))/(\Phi(t_k) - \Phi(t_{k-1}))` of its cell
    (Lloyd 1957/1982; Max 1960), starting from the Panter-Dite compander.

    Returns
    -------
    thresholds : ndarray, shape (N - 1,)
    values : ndarray, shape (N,)
    distortion : float
        :math:`\mathbb E[(z - Q(z))^2]`, which equals ``1 - chi(0)`` of the activation ``Q``.
    """
    levels = check_levels(levels)
    check_int(max_iter, "max_iter", 1)
    tol = float(check_positive(tol, "tol", allow_array=False))
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
                      f"still moving by {change:.1e} (tol={tol:g}): raise max_iter", RuntimeWarning, stacklevel=2)
    edges = np.concatenate(([-np.inf], t, [np.inf]))
    mass = special.ndtr(edges[1:]) - special.ndtr(edges[:-1])
    y = (_pdf(edges[:-1]) - _pdf(edges[1:])) / mass
    # distortion = E[z^2] - E[Q^2] for a centroid quantizer
    distortion = 1.0 - float(np.sum(mass * y * y))
    return t, y, distortion


def lloyd_max_activation(levels, q_star=1.0):
    """A :class:`StepActivation` whose thresholds and levels are Lloyd-Max optimal at ``q*``."""
    q_star = float(check_positive(q_star, "q_star", allow_array=False))
    t, y, _ = lloyd_max(levels)
    return StepActivation(t * math.sqrt(q_star), y * math.sqrt(q_star))
