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

import numpy as np
from scipy import optimize, special

from ._validate import check_int, check_levels, check_positive
from .activations import QuantizedActivation, StepActivation
from .gaussian import SQRT2PI, step_variance
from .maps import depth_scale as _depth_scale

__all__ = [
    "chi_zero",
    "quantization_error",
    "chi_max",
    "max_depth",
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


def chi_zero(levels, spacing):
    r"""chi(0) at sigma_b = 0 as a function of the normalised spacing :math:`\tilde D`.

    .. math:: \chi(0) = \Bigl(\sum_i\varphi(t_i)\Bigr)^2 \Big/
                        \sum_{ij}\Phi(\min(t_i,t_j))\,\Phi(-\max(t_i,t_j))

    Parameters
    ----------
    levels : int
        Number of levels ``N >= 2``.
    spacing : array_like
        Normalised threshold spacing ``D / sqrt(q*) > 0``.

    Examples
    --------
    >>> round(float(chi_zero(2, 1.0)), 12)  # sign: 2/pi whatever the spacing
    0.636619772368
    """
    levels = check_levels(levels)
    spacing = check_positive(spacing, "spacing")
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


def quantization_error(levels, spacing):
    r"""``1 - chi(0)``, the relative mean-squared quantization error, with full relative precision.

    .. math:: 1 - \chi(0) = \min_\beta \mathbb E\bigl[(z - \beta(\psi(z) - \mathbb E\psi))^2\bigr]
              = \sum_{\text{cells}} \int_{\text{cell}} (z - y_k)^2\,\varphi(z)\,dz

    Interior cells are integrated by Gauss-Legendre around their midpoints and the two outer
    cells in closed form, so every term is non-negative and small errors stay small.
    """
    levels = check_levels(levels)
    spacing = check_positive(spacing, "spacing")
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
    spacing : float
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


def max_depth(levels, multiple=6.0):
    r"""Trainable depth :math:`L_{\max} = \text{multiple}\times\xi(N)`, :math:`\xi = -1/\ln\chi_{\max}(N)`."""
    multiple = float(check_positive(multiple, "multiple", allow_array=False))
    gap, _ = chi_max(levels, complement=True)
    return multiple * (-1.0 / math.log1p(-gap))


@dataclasses.dataclass(frozen=True)
class InitScheme:
    """The initialization of :func:`optimal_init`.

    Attributes
    ----------
    levels, sigma_w, sigma_b, activation
        The network's parameters (``sigma_b`` is 0).
    q_star : float
        Pre-activation variance at the fixed point.
    normalized_spacing : float
        ``activation.spacing / sqrt(q_star)``, equal to :math:`\\tilde D_{\\rm opt}`.
    chi, depth_scale, max_depth : float
        :math:`\\chi_{\\max}`, :math:`\\xi = -1/\\ln\\chi_{\\max}` and :math:`6\\xi`.
    """

    levels: int
    sigma_w: float
    sigma_b: float
    activation: QuantizedActivation
    q_star: float
    normalized_spacing: float
    chi: float
    depth_scale: float
    max_depth: float


def optimal_init(levels, scale=1.0, spacing=None):
    r"""The weight scale that maximises signal propagation for a given quantized activation.

    With :math:`\sigma_b = 0` choose :math:`\sigma_w` so that the fixed point puts the normalised
    spacing at its optimum, :math:`D/\sqrt{q^*} = \tilde D_{\rm opt}`. Since
    :math:`\mathbb E[\phi^2]` depends on :math:`\tilde D` alone,

    .. math:: \sigma_w^{\rm opt} = \frac{D}{\tilde D_{\rm opt}\sqrt{\mathbb E[\phi^2]\,|_{\tilde D_{\rm opt}}}}.

    For ``N = 2`` (sign) chi(0) = 2/pi for every sigma_w; the scheme picks ``q* = 1``.

    Examples
    --------
    >>> init = optimal_init(16)
    >>> round(init.sigma_w, 4), init.sigma_b
    (1.0058, 0.0)
    """
    levels = check_levels(levels)
    act = QuantizedActivation(levels, spacing, scale)
    c, d_opt = chi_max(levels)
    gap, _ = chi_max(levels, complement=True)
    if levels == 2:
        q_star = 1.0
        d_opt = act.spacing
    else:
        q_star = (act.spacing / d_opt) ** 2
    sigma_w = math.sqrt(q_star / float(act.second_moment(q_star)))
    xi = -1.0 / math.log1p(-gap)
    return InitScheme(levels, sigma_w, 0.0, act, q_star, act.spacing / math.sqrt(q_star), c, xi, 6.0 * xi)


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
    return hi, int(math.ceil(math.log2(hi)))


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
    p = (np.arange(1, levels) / levels)
    t = np.sqrt(3.0) * special.ndtri(p)   # compander: equiprobable cells of N(0, 3)
    for _ in range(max_iter):
        edges = np.concatenate(([-np.inf], t, [np.inf]))
        mass = special.ndtr(edges[1:]) - special.ndtr(edges[:-1])
        y = (_pdf(edges[:-1]) - _pdf(edges[1:])) / mass
        t_new = 0.5 * (y[1:] + y[:-1])
        if np.max(np.abs(t_new - t)) < tol:
            t = t_new
            break
        t = t_new
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
