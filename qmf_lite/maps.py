r"""Mean-field maps of a wide random network (pre-activation convention).

Layer :math:`h^l = W^l \phi(h^{l-1}) + b^l` with :math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/n)` and
:math:`b_i\sim\mathcal N(0,\sigma_b^2)`. As the width ``n`` grows, the pre-activations of two
inputs become jointly Gaussian with a variance ``q`` and a correlation ``c`` that evolve by

.. math::
   q^{l+1} &= \sigma_w^2\,\mathbb E[\phi(\sqrt{q^l} z)^2] + \sigma_b^2, \\
   c^{l+1} &= \bigl(\sigma_w^2\,\mathbb E[\phi(u_1)\phi(u_2)] + \sigma_b^2\bigr)/q^*, \\
   \chi(c) &= \frac{\partial c^{l+1}}{\partial c^l} = \sigma_w^2\,\mathbb E[\phi'(u_1)\phi'(u_2)],

the last by Price's theorem, with :math:`(u_1, u_2)` of variance :math:`q^*` and correlation ``c``
(Poole et al. 2016; Schoenholz et al. 2017).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy import optimize

from ._validate import check_correlation, check_int, check_positive, check_real_in, check_sigmas
from .activations import QuantizedActivation, get_activation  # noqa: F401 (QuantizedActivation: doctests)

__all__ = [
    "variance_map",
    "variance_map_slope",
    "fixed_point_q",
    "variance_fixed_points",
    "basin_boundary_q",
    "covariance_map",
    "correlation_map",
    "chi",
    "fixed_point_c",
    "depth_scale",
    "phase_diagram",
    "iterate_maps",
]


def _params(sigma_w, sigma_b):
    return check_sigmas(sigma_w, sigma_b)


#: q* must stay below this (far inside float64, so that the maps' arithmetic cannot overflow)
Q_STAR_MAX = 1e300


def _fixed_point_q_bounded(act, sw, sb, q0):
    """:func:`_fixed_point_q_scalar` with its search bounded by what q* can reach.

    For a bounded activation :math:`q^* \\le \\sigma_w^2 \\sup\\phi^2 + \\sigma_b^2`: the search stops past
    that (and parameters that put it beyond ``Q_STAR_MAX`` are refused); otherwise the search
    stops at ``max(1e12, 1e12 sigma_b^2)`` and returns inf (linear and ReLU nets: a finite q* is
    ``sigma_b^2 / (1 - slope)``, far below that unless the slope is within 1e-12 of 1).
    """
    bound = float(getattr(act, "bound", np.inf))
    if np.isfinite(bound):
        top = sw * sw * bound * bound + sb * sb
        if not top <= Q_STAR_MAX:
            raise ValueError(f"sigma_w and sigma_b must keep q* <= sigma_w^2 max|phi|^2 + sigma_b^2 below "
                             f"{Q_STAR_MAX:g}; at sigma_w={sw}, sigma_b={sb} that bound is {top:.3g}")
        q_max = max(1e12, 16.0 * top)
    else:
        q_max = min(Q_STAR_MAX, max(1e12, 1e12 * sb * sb))
    with np.errstate(over="ignore"):  # sigma_w^2 E[phi^2] beyond float64: the map raises q without bound
        return _fixed_point_q_scalar(act, sw, sb, q0, q_max)


def _finite(out, **args):
    """``out``, or a ValueError naming ``args`` when sigma_w^2 E[...] + sigma_b^2 overflowed."""
    if not np.all(np.isfinite(out)):
        names = ", ".join(args)
        values = ", ".join(f"{k}={np.max(v):g}" if np.ndim(v) else f"{k}={float(v):g}" for k, v in args.items())
        raise ValueError(f"{names} must keep sigma_w^2 E[...] + sigma_b^2 within float64; it overflows at {values} "
                         f"(largest values shown)")
    return out


def _over_params(fn, sigma_w, sigma_b):
    """``fn(sw, sb)`` (scalars) over the broadcast of ``sigma_w`` and ``sigma_b``."""
    sw, sb = np.broadcast_arrays(sigma_w, sigma_b)
    out = np.array([fn(float(a), float(b)) for a, b in zip(sw.ravel(), sb.ravel())], dtype=float).reshape(sw.shape)
    return out[()] if out.ndim == 0 else out


def variance_map(q, activation, sigma_w, sigma_b):
    r"""One layer of the variance map, :math:`\sigma_w^2\,\mathbb E[\phi(\sqrt q z)^2] + \sigma_b^2`.

    Parameters
    ----------
    q : array_like
        Pre-activation variance(s), ``q > 0``.
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Weight and bias standard deviations, ``sigma_w`` in [1e-100, 1e100], ``sigma_b`` in [0, 1e100];
        they broadcast with each other and with ``q``.

    Examples
    --------
    >>> float(variance_map(2.0, "relu", 1.0, 0.5))
    1.25
    """
    q = check_positive(q, "q")
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    return _variance_map(q, get_activation(activation), sigma_w, sigma_b)


def _variance_map(q, act, sigma_w, sigma_b):
    """:func:`variance_map` of checked float64 arrays and an :class:`Activation`."""
    q, sw, sb = np.broadcast_arrays(q, sigma_w, sigma_b)
    with np.errstate(over="ignore"):
        out = _finite(sw * sw * act.second_moment(q) + sb * sb, q=q, sigma_w=sigma_w, sigma_b=sigma_b)
    return out[()] if out.ndim == 0 else out


def variance_map_slope(q, activation, sigma_w, sigma_b):
    r"""Slope :math:`\partial q^{l+1}/\partial q^l` of the variance map, by a central difference.

    At a fixed point it decides stability (below 1: attracting) and speed: ``q^l`` approaches
    ``q*`` like ``slope^l``, so a slope near 1 means tens of layers. The relative step is 1e-5,
    accurate to about 1e-9 for the smooth dependence of :math:`\mathbb E[\phi^2]` on ``q``.

    Parameters
    ----------
    q : array_like
        Pre-activation variance(s), ``q > 0``.
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Weight and bias standard deviations, ``sigma_w`` in [1e-100, 1e100], ``sigma_b`` in [0, 1e100];
        they broadcast with each other and with ``q``.

    Examples
    --------
    >>> round(float(variance_map_slope(1.0, "relu", 1.2, 0.3)), 9)  # sigma_w^2 / 2
    0.72
    """
    q = check_positive(q, "q")
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    act = get_activation(activation)
    h = 1e-5 * q
    return (_variance_map(q + h, act, sigma_w, sigma_b) - _variance_map(q - h, act, sigma_w, sigma_b)) / (2 * h)


#: each factor-4 step of the bracket search is examined at 16 points (a factor 4^(1/16) ~ 1.09 apart)
_SUBSTEPS = 4.0 ** (np.arange(1, 17) / 16.0)


#: without bias, g(q) = sigma_w^2 E[phi^2] - q within this fraction of q carries no sign: at sigma_w = 1 hard-tanh's
#: E[phi^2] = q minus tails below float64's resolution, and tanh's quadrature rounds at ~1e-14 of q
_CRITICAL_NOISE = 1e-12


def _fixed_point_q_scalar(act, sw, sb, q0, q_max=1e12):
    """The fixed point that iterating the (increasing) variance map from ``q0`` reaches.

    The map is increasing in ``q`` (``phi^2`` grows with ``|x|``), so the iterates move
    monotonically from ``q0`` and stop at the first fixed point in the direction they move: the
    largest one below ``q0`` if the map lowers ``q0``, the smallest one above it if it raises it.
    The search walks in factor-4 steps, each examined at 16 points, so two fixed points closer
    than a factor 1.09 (only near the ``sigma_w`` where such a pair is born) can be missed.
    """
    def f(q):
        return sw * sw * act.second_moment(q) + sb * sb - q

    def noise(q):   # without bias, |f| below this is rounding of E[phi^2] ~ q (hard-tanh's tails, tanh's quadrature)
        return _CRITICAL_NOISE * q

    f0 = float(f(q0))
    if f0 == 0.0:
        return q0
    edge = q0
    while True:
        if f0 < 0:  # the map lowers q: walk down to the first q with f >= 0 (maybe none: q -> 0)
            qs = edge / _SUBSTEPS
            qs = qs[qs >= 1e-300]
            if qs.size == 0:
                return 0.0
            fs = f(qs)
            hit = np.nonzero((fs >= 0) & (sb > 0) | (fs > noise(qs)))[0]
        else:  # the map raises q: walk up to the first q with f <= 0 (maybe none: q diverges)
            qs = edge * _SUBSTEPS
            qs = qs[qs <= q_max]
            if qs.size == 0:
                return np.inf
            hit = np.nonzero(f(qs) <= 0)[0]
        if hit.size:
            k = hit[0]
            a, b = qs[k], (edge if k == 0 else qs[k - 1])
            break
        if qs.size < _SUBSTEPS.size:  # reached 1e-300 or q_max without meeting a fixed point
            return 0.0 if f0 < 0 else np.inf
        edge = qs[-1]
    lo, hi = min(a, b), max(a, b)
    if float(f(a)) == 0.0:
        return float(a)
    if np.sign(f(lo)) == np.sign(f(hi)):   # sign information within rounding only: no fixed point above 0
        return 0.0 if f0 < 0 else np.inf
    # relative tolerance only: q* can be as small as sigma_b^2, far below any absolute tolerance
    return optimize.brentq(lambda q: float(f(q)), lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def fixed_point_q(activation, sigma_w, sigma_b, *, q0=1.0):
    r"""The fixed point :math:`q^* = \sigma_w^2\,\mathbb E[\phi(\sqrt{q^*}z)^2] + \sigma_b^2` reached from ``q0``.

    Found with a root finder, not by iterating the map (which can converge over tens of
    layers when its slope is close to 1). The variance map is increasing in ``q``, so its
    iterates move monotonically from ``q0`` and stop at the first fixed point in the direction
    they move. That is the root returned: the largest fixed point below ``q0`` when the map
    lowers ``q0``, the smallest one above ``q0`` when it raises it; ``0.0`` if ``q`` decays to
    zero, ``inf`` if it grows without bound (linear or ReLU nets in their unbounded phase).

    When the map has several stable fixed points the answer therefore depends on ``q0``: an
    odd number of levels with ``sigma_b = 0`` has the stable fixed point ``q = 0`` (the zero
    level swallows small signals) besides :math:`q^*`, separated by the unstable fixed point of
    :func:`basin_boundary_q`; :func:`variance_fixed_points` lists them all.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        ``sigma_w > 0``, ``sigma_b >= 0``; broadcast together.
    q0 : float
        Starting variance, ``q0 > 0`` (keyword; default 1).

    Examples
    --------
    >>> round(float(fixed_point_q("relu", 1.0, 0.5)), 12)
    0.5

    Three levels at their optimal ``sigma_w`` (1.1112): small inputs die, larger ones reach ``q*``.

    >>> phi3 = QuantizedActivation(3)
    >>> float(fixed_point_q(phi3, 1.1112, 0.0, q0=0.05)), round(float(fixed_point_q(phi3, 1.1112, 0.0, q0=0.1)), 4)
    (0.0, 0.6674)
    """
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    q0 = float(check_positive(q0, "q0", allow_array=False))
    act = get_activation(activation)
    return _over_params(lambda a, b: _fixed_point_q_bounded(act, a, b, q0), sigma_w, sigma_b)


def _zero_is_fixed(act, sw, sb):
    """Whether q = 0 is a fixed point (no bias and E[phi^2] -> 0 as q -> 0), and whether it attracts."""
    if sb != 0.0:
        return False, False
    q_tiny = 1e-200
    m = float(act.second_moment(q_tiny))
    if not m < 1e-100:  # phi(0+) != 0 (an even number of levels, sign): q = 0 maps to a positive value
        return False, False
    return True, sw * sw * m < q_tiny


#: the largest grid of variance_fixed_points and basin_boundary_q (about 0.1 s for a step activation)
MAX_GRID = 100_000


def _check_search(q_min, q_max, n_grid):
    """The search range and grid of variance_fixed_points and basin_boundary_q."""
    q_min = check_real_in(q_min, "q_min", 1e-300, Q_STAR_MAX)
    q_max = check_real_in(q_max, "q_max", 1e-300, Q_STAR_MAX)
    if not q_min < q_max:
        raise ValueError(f"q_min must be below q_max, got q_min={q_min}, q_max={q_max}")
    return q_min, q_max, check_int(n_grid, "n_grid", 2, MAX_GRID)


def _variance_fixed_points_scalar(act, sw, sb, q_min, q_max, n_grid):
    grid = np.geomspace(q_min, q_max, n_grid)
    with np.errstate(over="ignore", invalid="ignore"):
        g = sw * sw * act.second_moment(grid) + sb * sb - grid
    if not np.all(np.isfinite(g)):
        raise ValueError(f"sigma_w and q_max must keep the variance map finite on [q_min, q_max] (it overflows "
                         f"float64 at sigma_w={sw:g}, q_max={q_max:g}); lower q_max")
    roots, stable = [], []
    zero, zero_stable = _zero_is_fixed(act, sw, sb)
    if zero:
        roots.append(0.0)
        stable.append(bool(zero_stable))
    f = lambda q: float(sw * sw * act.second_moment(q) + sb * sb - q)  # noqa: E731
    if sb == 0:     # without bias, |g| below _CRITICAL_NOISE q is rounding: no sign, and no root
        g = np.where(np.abs(g) <= _CRITICAL_NOISE * grid, 0.0, g)
        signed = np.flatnonzero(g)
        for i, j in zip(signed[:-1], signed[1:]):
            if (g[i] < 0) != (g[j] < 0):      # (a product of two values near 1e300 would overflow)
                roots.append(optimize.brentq(f, grid[i], grid[j], xtol=1e-300, rtol=4 * np.finfo(float).eps,
                                             maxiter=500))
                stable.append(bool(g[i] > 0))
    else:
        for k in np.nonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)[0]:
            roots.append(optimize.brentq(f, grid[k], grid[k + 1], xtol=1e-300, rtol=4 * np.finfo(float).eps,
                                         maxiter=500))
            stable.append(bool(g[k] > 0))  # the map crosses the diagonal from above: it attracts
        for k in np.nonzero(g == 0)[0]:  # a grid point that is itself a fixed point
            roots.append(float(grid[k]))
            stable.append(bool(k + 1 < g.size and g[k + 1] < 0))
    order = np.argsort(roots, kind="stable")
    return np.asarray(roots, dtype=float)[order], np.asarray(stable, dtype=bool)[order]


def variance_fixed_points(activation, sigma_w, sigma_b, *, q_min=1e-10, q_max=1e4, n_grid=600):
    r"""Every fixed point of the variance map in :math:`\{0\}\cup[q_{\min}, q_{\max}]`, with its stability.

    The fixed points are the roots of

    .. math:: g(q) = \sigma_w^2\,\mathbb E[\phi(\sqrt q z)^2] + \sigma_b^2 - q .

    ``q = 0`` is one when :math:`\sigma_b = 0` and :math:`\mathbb E[\phi^2]\to 0` as
    :math:`q\to 0` (tanh, ReLU, an odd number of levels, whose zero level covers the origin).
    The positive ones are bracketed by the sign changes of ``g`` on a geometric grid of
    ``n_grid`` points and refined by Brent's method. A fixed point attracts when the map crosses
    the diagonal from above (``g`` changes from positive to negative; then its slope is below 1);
    ``q = 0`` attracts when ``g < 0`` just above it.

    Parameters
    ----------
    activation : str, qmf_lite.Activation or callable
    sigma_w, sigma_b : float
        Scalars, ``sigma_w > 0``, ``sigma_b >= 0``.
    q_min, q_max : float
        The range searched for positive fixed points, ``1e-300 <= q_min < q_max <= 1e300``.
    n_grid : int
        Grid points, in ``[2, 100000]``. Two fixed points in one grid cell (closer than a factor
        ``(q_max/q_min)^(1/(n_grid-1))``, about 1.05 by default), or one where ``g`` touches zero
        without changing sign, are missed.

    Returns
    -------
    q : ndarray
        The fixed points, ascending.
    stable : ndarray of bool
        Whether each attracts the iterates of the map.

    :func:`fixed_point_q` returns the one fixed point that iterating from a given ``q0`` reaches, and
    :func:`basin_boundary_q` the unstable fixed point below the largest stable one.

    Examples
    --------
    Three levels at their optimal ``sigma_w``: ``q = 0`` and ``q*`` attract, the fixed point
    between them repels.

    >>> q, stable = variance_fixed_points(QuantizedActivation(3), 1.1112, 0.0)
    >>> np.round(q, 4), stable
    (array([0.    , 0.0679, 0.6674]), array([ True, False,  True]))
    """
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    if sigma_w.ndim or sigma_b.ndim:
        raise ValueError("sigma_w and sigma_b must be scalars in variance_fixed_points")
    q_min, q_max, n_grid = _check_search(q_min, q_max, n_grid)
    act = get_activation(activation)
    return _variance_fixed_points_scalar(act, float(sigma_w), float(sigma_b), q_min, q_max, n_grid)


def basin_boundary_q(activation, sigma_w, sigma_b, *, q_min=1e-10, q_max=1e4, n_grid=600):
    r"""The unstable fixed point below the largest stable one: inputs with a smaller variance die.

    With several stable fixed points (an odd number of levels and :math:`\sigma_b = 0`: ``q = 0``
    and :math:`q^*`) the unstable fixed point :math:`q_u` between them divides the inputs: for
    :math:`q^0 > q_u` the variance converges to :math:`q^*`, for :math:`q^0 < q_u` it falls to the
    lower attractor (``0``: the signal dies). Here :math:`q^*` is the largest stable fixed point
    of :func:`variance_fixed_points` and :math:`q_u` the largest unstable one below it.

    Parameters
    ----------
    activation : str, qmf_lite.Activation or callable
    sigma_w, sigma_b : array_like
        Broadcast together, ``sigma_w > 0``, ``sigma_b >= 0``.
    q_min, q_max, n_grid
        As in :func:`variance_fixed_points`.

    Returns
    -------
    float or ndarray
        :math:`q_u`; NaN where there is none (every positive input reaches :math:`q^*`, or there
        is no positive stable fixed point at all).

    Examples
    --------
    >>> round(float(basin_boundary_q(QuantizedActivation(3), 1.1112, 0.0)), 4)
    0.0679
    >>> float(basin_boundary_q(QuantizedActivation(4), 1.0, 0.0))  # even N: no zero level, no boundary
    nan
    """
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    q_min, q_max, n_grid = _check_search(q_min, q_max, n_grid)
    act = get_activation(activation)

    def one(a, b):
        q, stable = _variance_fixed_points_scalar(act, a, b, q_min, q_max, n_grid)
        top = np.nonzero(stable & (q > 0))[0]
        if top.size == 0:
            return np.nan
        below = np.nonzero(~stable[:top[-1]])[0]
        return float(q[below[-1]]) if below.size else np.nan

    return _over_params(one, sigma_w, sigma_b)


def covariance_map(q, c, activation, sigma_w, sigma_b):
    r"""The next layer's covariance :math:`\sigma_w^2\,\mathbb E[\phi(u_1)\phi(u_2)] + \sigma_b^2`.

    ``(u1, u2)`` have variance ``q`` each and correlation ``c``; valid at any ``q``, not only at
    the fixed point.

    Parameters
    ----------
    q : array_like
        Pre-activation variance(s), ``q > 0``.
    c : array_like
        Correlation(s) in [-1, 1]; broadcast with ``q``.
    activation : str, Activation or callable
    sigma_w, sigma_b : float
        Scalars, ``sigma_w`` in [1e-100, 1e100], ``sigma_b`` in [0, 1e100].
    """
    q = check_positive(q, "q")
    c = check_correlation(c)
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    if sigma_w.ndim or sigma_b.ndim:
        raise ValueError("sigma_w and sigma_b must be scalars in covariance_map")
    act = get_activation(activation)
    with np.errstate(over="ignore"):
        out = _finite(sigma_w**2 * act.kernel(q, c) + sigma_b**2, q=q, sigma_w=sigma_w, sigma_b=sigma_b)
    return out[()] if np.ndim(out) == 0 else out


def _q_star_checked(act, sw, sb):
    q_star = _fixed_point_q_bounded(act, float(sw), float(sb), 1.0)
    if not (0 < q_star < np.inf):
        raise ValueError(
            f"sigma_w and sigma_b must give the variance map a finite positive fixed point; at sigma_w={float(sw)}, "
            f"sigma_b={float(sb)} it has none (q* = {q_star}), and the correlation map is undefined there")
    return q_star


def _per_parameter(c, activation, sigma_w, sigma_b, fn):
    """Evaluate ``fn(act, c_array, sw, sb, q_star)`` once for each distinct (sigma_w, sigma_b)."""
    c = check_correlation(c)
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    act = get_activation(activation)
    if sigma_w.ndim == 0 and sigma_b.ndim == 0:  # the common case: one network, many c
        out = np.asarray(fn(act, c, float(sigma_w), float(sigma_b), _q_star_checked(act, sigma_w, sigma_b)))
        return out[()] if out.ndim == 0 else out
    c, sw, sb = np.broadcast_arrays(c, sigma_w, sigma_b)
    out = np.empty(c.shape)
    pairs = np.stack([sw.ravel(), sb.ravel()], axis=1)
    for a, b in np.unique(pairs, axis=0):
        sel = (sw == a) & (sb == b)
        out[sel] = fn(act, c[sel], a, b, _q_star_checked(act, a, b))
    return out[()] if out.ndim == 0 else out


def correlation_map(c, activation, sigma_w, sigma_b):
    r"""One layer of the correlation map at the variance fixed point :math:`q^*`.

    .. math:: c^{l+1} = \bigl(\sigma_w^2\,\mathbb E[\phi(u_1)\phi(u_2)] + \sigma_b^2\bigr) / q^*

    Parameters
    ----------
    c : array_like
        Correlations in [-1, 1].
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Broadcast with ``c``.

    Examples
    --------
    For ``sign`` with ``sigma_b = 0`` this is the arcsine kernel, ``(2/pi) arcsin c``:

    >>> round(float(correlation_map(0.5, "sign", 1.0, 0.0)), 12)
    0.333333333333
    """
    def fn(act, c, sw, sb, q_star):
        return (sw * sw * act.kernel(q_star, c) + sb * sb) / q_star

    return _per_parameter(c, activation, sigma_w, sigma_b, fn)


def chi(c, activation, sigma_w, sigma_b):
    r"""Slope of the correlation map, :math:`\chi(c) = \sigma_w^2\,\mathbb E[\phi'(u_1)\phi'(u_2)]` at :math:`q^*`.

    For step (quantized) activations :math:`\phi'` is a sum of Dirac masses and
    :math:`\chi(c)\to\infty` as ``c -> 1``; ``chi(1)`` returns ``inf``, and so does ``chi(-1)`` for a
    symmetric staircase (its thresholds come in pairs :math:`\pm g`, whose masses meet when
    :math:`u_2 = -u_1`).

    Parameters
    ----------
    c : array_like
        Correlation(s) in [-1, 1].
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Weight and bias standard deviations, ``sigma_w`` in [1e-100, 1e100], ``sigma_b`` in [0, 1e100];
        they broadcast with each other and with ``c``.

    Returns
    -------
    ndarray or float
        :math:`\chi(c)` at the fixed point :math:`q^*` of each ``(sigma_w, sigma_b)``, which must exist
        and be positive (a ``ValueError`` otherwise).

    Examples
    --------
    >>> round(float(chi(0.0, "sign", 1.0, 0.0)), 12)  # 2/pi
    0.636619772368
    """
    def fn(act, c, sw, sb, q_star):
        return sw * sw * act.derivative_kernel(q_star, c)

    return _per_parameter(c, activation, sigma_w, sigma_b, fn)


def _fixed_point_c_scalar(act, sw, sb, q_star):
    c_of = lambda c: (sw * sw * act.kernel(q_star, c) + sb * sb) / q_star  # noqa: E731
    chi1 = sw * sw * float(act.derivative_kernel(q_star, 1.0))
    if np.isfinite(chi1) and chi1 <= 1.0:
        return 1.0  # ordered phase: c = 1 attracts
    if sb == 0.0 and act.odd:
        return 0.0  # the map is odd in c, so c = 0 is a fixed point, and it is the stable one
    # scan for the crossing nearest to 1 where c_next - c goes from >= 0 to < 0; the cusp of a
    # quantized map can put it within 1e-3 of 1, so the grid also approaches 1 geometrically
    grid = np.concatenate([np.linspace(-1.0, 0.99, 200), 1.0 - np.logspace(-2.2, -13, 40)])
    g = c_of(grid) - grid
    cross = np.nonzero((g[:-1] >= 0) & (g[1:] < 0))[0]
    if cross.size == 0:
        return 1.0 if g[-1] >= 0 else -1.0  # within 1e-13 of an end point
    k = cross[-1]
    return optimize.brentq(lambda c: float(c_of(c)) - c, grid[k], grid[k + 1], xtol=1e-15,
                           rtol=4 * np.finfo(float).eps)


def fixed_point_c(activation, sigma_w, sigma_b):
    r"""The stable fixed point :math:`c^*` of the correlation map.

    ``c = 1`` is always a fixed point; it is the stable one when :math:`\chi(1)\le 1` (the
    ordered phase). Otherwise (the chaotic phase, and always for quantized activations, whose
    :math:`\chi(1)` is infinite) the stable fixed point lies below 1; with ``sigma_b = 0`` and an
    odd activation it is exactly 0.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Weight and bias standard deviations, ``sigma_w`` in [1e-100, 1e100], ``sigma_b`` in [0, 1e100];
        they broadcast with each other.

    Returns
    -------
    ndarray or float
        :math:`c^*` in [-1, 1], at the fixed point :math:`q^*`, which must exist and be positive (a
        ``ValueError`` otherwise).

    Examples
    --------
    >>> float(fixed_point_c("sign", 1.0, 0.0))
    0.0
    """
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    act = get_activation(activation)
    return _over_params(lambda a, b: _fixed_point_c_scalar(act, a, b, _q_star_checked(act, a, b)), sigma_w, sigma_b)


def depth_scale(activation, sigma_w, sigma_b, *, dead="raise"):
    r"""Correlation depth scale :math:`\xi_c = -1/\ln\chi(c^*)`.

    Deviations of ``c`` from ``c*`` shrink like :math:`e^{-l/\xi_c}`; ``inf`` at criticality
    (:math:`\chi(c^*) = 1`). Schoenholz et al. (2017) found nets trainable to about
    :math:`6\xi_c` layers.

    For a step activation with a bias that dominates (small ``sigma_w``) the stable :math:`c^*`
    lies within 1e-13 of 1 and rounds to 1 in float64, where :math:`\chi = \infty`. There the
    square-root cusp of the correlation map, :math:`1 - c^{l+1} \approx \alpha\sqrt{1 - c^l}`,
    puts the fixed point at :math:`1 - c^* = \alpha^2` with :math:`\chi(c^*) = 1/2` (to
    :math:`O(\alpha)`), and the value returned is :math:`\xi_c = 1/\ln 2`.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        Weight and bias scales (broadcast).
    dead : {"raise", "nan"}
        Where the variance map has no finite positive fixed point (``q* = 0``: the signal dies,
        as for an odd number of levels at small ``sigma_w``; or ``q* = inf``) the correlation is
        undefined: raise a ``ValueError`` (default) or return NaN there, for curves over
        ``sigma_w`` that cross such a region.

    Examples
    --------
    >>> round(float(depth_scale("sign", 1.0, 0.0)), 6)  # -1/ln(2/pi)
    2.214434
    >>> float(depth_scale(QuantizedActivation(3), 0.5, 0.0, dead="nan"))  # the zero level swallows the signal
    nan
    """
    if not isinstance(dead, str) or dead not in ("raise", "nan"):
        raise ValueError(f"dead must be 'raise' or 'nan', got {dead!r}")
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    act = get_activation(activation)

    def one(a, b):
        if dead == "nan":
            q_star = _fixed_point_q_bounded(act, a, b, 1.0)
            if not 0 < q_star < np.inf:
                return np.nan
        else:
            q_star = _q_star_checked(act, a, b)
        c_star = _fixed_point_c_scalar(act, a, b, q_star)
        x = a * a * float(act.derivative_kernel(q_star, c_star))
        if c_star == 1.0 and x == np.inf:
            # a step activation whose stable c* lies within 1e-13 of 1 (the bias dominates): there the
            # square-root cusp, 1 - c' = alpha sqrt(1 - c), puts c* at 1 - alpha^2 and chi(c*) at 1/2
            x = 0.5
        if x == 0.0:
            return 0.0  # chi(c*) = 0 (sigma_w^2 underflows): deviations from c* vanish at once
        return np.inf if x == 1.0 else -1.0 / np.log(x)

    return _over_params(one, sigma_w, sigma_b)


def _xi_of(x):
    """-1/ln x for a contraction factor x in [0, inf]: 0 at x = 0, inf at x >= 1 (no contraction)."""
    if x == 0.0:
        return 0.0
    return np.inf if x >= 1.0 else -1.0 / np.log(x)


def phase_diagram(activation, sigma_w, sigma_b, *, q0=1.0):
    r"""Everything the two maps say about one network, over a grid of :math:`(\sigma_w, \sigma_b)`.

    At each point, with :math:`q^*` the fixed point that the variance map reaches from ``q0``
    (:func:`fixed_point_q`) and :math:`c^*` the stable fixed point of the correlation map
    (:func:`fixed_point_c`):

    .. math::
       \xi_c = -\frac{1}{\ln\chi(c^*)},\qquad
       \xi_q = -\frac{1}{\ln s},\quad s = \frac{\partial q^{l+1}}{\partial q^l}\Big|_{q^*},\qquad
       \chi_1 = \sigma_w^2\,\mathbb E[\phi'(\sqrt{q^*}z)^2] .

    :math:`\xi_c` is the correlation depth scale (:func:`depth_scale`), :math:`\xi_q` the depth
    scale on which :math:`q^l` settles (the variance depth scale), and :math:`\chi_1` decides
    order (:math:`\chi_1 < 1`, :math:`c^* = 1`) from chaos; it is infinite for every step
    activation (the square-root cusp of the correlation map at :math:`c = 1`). Two further
    structures are flagged. ``dead``: the variance map takes ``q0`` to :math:`q^* = 0` (an odd
    number of levels without bias, below the :math:`\sigma_w` where a positive :math:`q^*` is born;
    tanh or hard-tanh without bias at :math:`\sigma_w \le 1`);
    there :math:`c^*`, :math:`\chi_1`, :math:`\xi_c` and :math:`\xi_q` are NaN. ``antipodal``:
    :math:`c = -1` is an exact fixed point of the correlation map, which happens for an odd
    activation without bias (:math:`\phi(-h) = -\phi(h)`, so an input and its negative stay
    opposite at every layer); with a bias the map sends :math:`c = -1` to
    :math:`-1 + 2\sigma_b^2/q^*`.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : array_like
        ``sigma_w > 0``, ``sigma_b >= 0``; broadcast together (e.g. from ``np.meshgrid``).
    q0 : float
        Input variance from which :math:`q^*` is reached, ``q0 > 0`` (keyword; default 1).

    Returns
    -------
    dict of ndarray
        Keys ``q_star``, ``c_star``, ``chi1``, ``xi_c``, ``xi_q`` (float) and ``dead``,
        ``antipodal`` (bool), each with the broadcast shape of ``sigma_w`` and ``sigma_b``.
        ``xi_c`` and ``xi_q`` are ``inf`` where the contraction factor is 1 (criticality) and
        NaN where the network is dead; ``chi1`` is ``inf`` for step activations; ``q_star`` is
        ``inf`` where the variance grows without bound (linear or ReLU nets in their unbounded
        phase), and the other entries are NaN there.

    Examples
    --------
    Three levels without bias: dead below :math:`\sigma_w \approx 0.87`, alive above, and
    :math:`c = -1` an exact fixed point on the whole line :math:`\sigma_b = 0`.

    >>> pd = phase_diagram(QuantizedActivation(3), [0.8, 1.2], 0.0)
    >>> pd["dead"].tolist(), pd["antipodal"].tolist(), pd["c_star"][1], round(float(pd["xi_c"][1]), 4)
    ([True, False], [True, True], np.float64(0.0), 4.6767)

    Hard-tanh has both phases: chaotic (:math:`\chi_1 > 1`, :math:`c^* < 1`) at a small bias,
    ordered (:math:`\chi_1 < 1`, :math:`c^* = 1`) at a large one.

    >>> pd = phase_diagram("hardtanh", 1.2, [0.05, 0.5])
    >>> pd["chi1"].round(4).tolist(), pd["c_star"].round(4).tolist()
    ([1.1646, 0.9865], [0.0738, 1.0])
    """
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    q0 = float(check_positive(q0, "q0", allow_array=False))
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(sigma_w, sigma_b)
    keys = ("q_star", "c_star", "chi1", "xi_c", "xi_q")
    out = {k: np.full(sw.shape, np.nan) for k in keys}
    out["dead"] = np.zeros(sw.shape, bool)
    out["antipodal"] = np.zeros(sw.shape, bool)
    for idx in np.ndindex(sw.shape):
        a, b = float(sw[idx]), float(sb[idx])
        out["antipodal"][idx] = b == 0.0 and bool(act.odd)
        q_star = _fixed_point_q_bounded(act, a, b, q0)
        out["q_star"][idx] = q_star
        if q_star == 0.0:
            out["dead"][idx] = True
            continue
        if not np.isfinite(q_star):
            continue
        with np.errstate(over="ignore"):  # e.g. cosh of a huge tanh pre-activation: its derivative is 0
            out["chi1"][idx] = a * a * float(act.derivative_kernel(q_star, 1.0))
            c_star = _fixed_point_c_scalar(act, a, b, q_star)
            x = a * a * float(act.derivative_kernel(q_star, c_star))
        if c_star == 1.0 and x == np.inf:
            x = 0.5  # c* within 1e-13 of 1 behind the cusp (see depth_scale)
        out["c_star"][idx] = c_star
        out["xi_c"][idx] = _xi_of(x)
        h = 1e-5 * q_star
        slope = a * a * float(act.second_moment(q_star + h) - act.second_moment(q_star - h)) / (2 * h)
        out["xi_q"][idx] = _xi_of(abs(slope))
    return {k: (v[()] if v.ndim == 0 else v) for k, v in out.items()}


def iterate_maps(activation, sigma_w, sigma_b, *args, depth=None, q0=None, c0=None):
    r"""Iterate the joint (q, c) maps from a pair of inputs of variance ``q0`` and correlation ``c0``.

    Unlike :func:`correlation_map`, which sits at :math:`q^*`, this follows ``q`` as well:
    :math:`q^{l+1}` from the variance map and
    :math:`c^{l+1} = (\sigma_w^2 \mathbb E[\phi(u_1)\phi(u_2)]_{q^l, c^l} + \sigma_b^2)/q^{l+1}`.
    It is the infinite-width prediction that a torch simulation
    (:func:`~qmf_lite.simulate_correlations`, same argument order) should match layer by layer.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : float
        Weight and bias scales, ``sigma_w > 0``, ``sigma_b >= 0``.
    depth : int
        Number of layers, ``0 <= depth <= 10**6`` (keyword).
    q0 : array_like, optional
        Input variance(s) ``> 0``; default the fixed point :math:`q^*` (keyword).
    c0 : array_like
        Input correlation(s) in [-1, 1] (keyword); broadcast with ``q0``.

    Returns
    -------
    q, c : ndarray, shape (depth + 1,) + broadcast shape of (q0, c0)
        ``c`` is NaN from the layer at which ``q`` reaches exactly 0 on (an odd ``N`` without bias below
        the collapse threshold: every pre-activation is 0 and the correlation is undefined; see
        :func:`phase_diagram`'s ``dead``).

    Examples
    --------
    >>> q, c = iterate_maps("sign", 1.0, 0.0, depth=2, q0=1.0, c0=0.5)
    >>> np.round(c, 6)
    array([0.5     , 0.333333, 0.216347])

    The order ``iterate_maps(q0, c0, activation, sigma_w, sigma_b, depth)`` of earlier releases
    still works, with a ``DeprecationWarning``.
    """
    if isinstance(activation, (numbers.Real, np.ndarray)) and not isinstance(activation, bool) \
            and len(args) == 3 and depth is None and q0 is None and c0 is None:
        warnings.warn("iterate_maps(q0, c0, activation, sigma_w, sigma_b, depth) is deprecated; use "
                      "iterate_maps(activation, sigma_w, sigma_b, depth=..., q0=..., c0=...)",
                      DeprecationWarning, stacklevel=2)
        q0, c0, activation, sigma_w, sigma_b, depth = activation, sigma_w, sigma_b, *args
    elif args:
        raise ValueError("iterate_maps takes depth, q0 and c0 as keywords: "
                         "iterate_maps(activation, sigma_w, sigma_b, depth=..., q0=..., c0=...)")
    if depth is None or c0 is None:
        raise ValueError("iterate_maps needs depth (an integer >= 0) and c0 (in [-1, 1])")
    depth = check_int(depth, "depth", 0, 10**6)
    sigma_w, sigma_b = _params(sigma_w, sigma_b)
    if sigma_w.ndim or sigma_b.ndim:
        raise ValueError("sigma_w and sigma_b must be scalars in iterate_maps")
    act = get_activation(activation)
    if q0 is None:
        q0 = _q_star_checked(act, sigma_w, sigma_b)
    q0 = check_positive(q0, "q0")
    c0 = check_correlation(c0, "c0")
    q, c = np.broadcast_arrays(q0, c0)
    qs, cs = [q.astype(float)], [c.astype(float)]
    for _ in range(depth):
        with np.errstate(over="ignore"):
            q_next = _finite(sigma_w**2 * act.second_moment(qs[-1]) + sigma_b**2, q0=q0, sigma_w=sigma_w,
                             sigma_b=sigma_b)
        cov = sigma_w**2 * act.kernel(qs[-1], cs[-1]) + sigma_b**2
        qs.append(q_next)
        with np.errstate(invalid="ignore", divide="ignore"):     # q = 0: the signal died, c is NaN (documented)
            cs.append(np.clip(cov / q_next, -1.0, 1.0))
    return np.array(qs), np.array(cs)
