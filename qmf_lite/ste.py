r"""Straight-through estimators for quantized activations (torch).

The derivative of :math:`\phi_N` is zero almost everywhere, so back-propagation through it
gives no signal. A straight-through estimator (STE; Bengio et al. 2013) keeps the forward
pass and replaces the backward pass by a clipped identity,

.. math:: \frac{\partial\phi}{\partial x} \to s\,\mathbb 1\{|x|\le T\},
          \qquad T = \tfrac{N-1}{2}D,

the range over which the staircase follows the line of slope :math:`\delta/D`. Through a
layer of weights :math:`\mathcal N(0,\sigma_w^2/n)` the squared gradient norm is multiplied on
average by

.. math:: \chi_1 = \sigma_w^2 s^2\,P(|u|\le T) = \sigma_w^2 s^2\,\operatorname{erf}\!\bigl(T/\sqrt{2q^*}\bigr),

and the slope :math:`s = 1/(\sigma_w\sqrt{\operatorname{erf}(T/\sqrt{2q^*})})` makes it one, so
that gradients neither explode nor vanish with depth (Blumenfeld et al. 2019).
"""
from __future__ import annotations

import math

import torch
from scipy import special

import numbers

from ._validate import check_int_range, check_levels, check_nonnegative, check_sigmas, check_tensor
from .activations import QuantizedActivation, _check_quantized, get_activation
from .maps import _fixed_point_q_bounded

__all__ = ["QuantAct", "quantize", "ste_quantize", "staircase_tables", "ste_clip", "ste_slope", "ste_chi1"]

#: the most rows (networks) of :func:`staircase_tables`
MAX_ROWS = 2**20


def staircase_tables(levels, spacing=None, scale=1.0, rows=None):
    r"""Thresholds and output levels of uniform staircases, one row per network, in float64.

    Row ``b`` holds :math:`g_k = D_b\,(k - (N_b - 2)/2)` for ``k = 0..N_b - 2`` and the levels
    :math:`A_b(-1 + 2k/(N_b - 1))`, computed in the same order of operations as
    :class:`~qmf_lite.QuantizedActivation`, so that the thresholds are the same floating-point
    numbers. Rows with fewer levels than the largest are padded: thresholds with ``+inf``, levels
    with their top level.

    Parameters
    ----------
    levels, spacing, scale : scalar or sequence of length ``rows``
        Number of levels ``N >= 2``, raw threshold spacing ``D > 0`` (``None``: ``2A/(N-1)``) and
        output range ``A > 0``, per row.
    rows : int, optional
        Number of rows, in [1, 2^20]; default the length of the longest sequence argument (1 if all
        are scalars).

    Returns
    -------
    thresholds : ndarray, shape (rows, max(N) - 1)
    values : ndarray, shape (rows, max(N))

    Examples
    --------
    >>> g, v = staircase_tables([2, 4], None, 1.0)
    >>> g
    array([[ 0.        ,         inf,         inf],
           [-0.66666667,  0.        ,  0.66666667]])
    >>> v[0]
    array([-1.,  1.,  1.,  1.])
    """
    return _tables(*_rows(levels, spacing, scale, rows))


def _tables(levels, spacing, scale):
    """:func:`staircase_tables` of checked rows (lists, as :func:`_rows` returns them)."""
    import numpy as np

    n = len(levels)
    top = max(levels)
    g = np.full((n, top - 1), np.inf)
    v = np.empty((n, top))
    acts = {}
    for b, (m, d, a) in enumerate(zip(levels, spacing, scale)):
        if (m, d, a) not in acts:                   # the same floating-point thresholds and levels
            acts[m, d, a] = QuantizedActivation._checked(m, d, a)
        act = acts[m, d, a]
        g[b, :m - 1] = act.thresholds
        v[b, :m] = act.values
        v[b, m:] = act.values[-1]
    return g, v


def _rows(levels, spacing, scale, rows):
    """The checked ``(levels, spacing, scale)`` of each row, as lists (spacing ``None`` resolved)."""
    import numpy as np

    def column(value):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if value is None or np.ndim(value) == 0:
            return [value]
        return list(np.asarray(value, dtype=object).reshape(-1))

    if rows is not None:
        rows = check_int_range(rows, "rows", 1, MAX_ROWS, " (networks in a batch)")
    cols = {"levels": column(levels), "spacing": column(spacing), "scale": column(scale)}
    n = rows if rows is not None else max(len(c) for c in cols.values())
    if n > MAX_ROWS:
        raise ValueError(f"levels, spacing and scale must have at most {MAX_ROWS} entries (networks in a batch), "
                         f"got {n}")
    for name, c in cols.items():
        if len(c) not in (1, n):
            lengths = ", ".join(f"{k} {len(v)}" for k, v in cols.items())
            raise ValueError(f"{name} must be a scalar or have {n} entries (one per row; levels, spacing and scale "
                             f"must agree), got {len(c)} (lengths: {lengths})")
        cols[name] = c * n if len(c) == 1 else c
    checked = [_check_quantized(m, d, a) for m, d, a in zip(cols["levels"], cols["spacing"], cols["scale"])]
    levels, spacing, scale = (list(column) for column in zip(*checked))
    return levels, spacing, scale


def _lookup(x, thresholds, values):
    """``values[b, #{k: thresholds[b, k] <= x}]`` for each row ``b`` (x of shape (rows, ...))."""
    import torch

    rows = thresholds.shape[0]
    flat = x.reshape(rows, -1)
    if flat.dtype != thresholds.dtype:
        flat = flat.to(thresholds.dtype)
    # right=True counts the thresholds <= x, like QuantizedActivation (searchsorted side="right"); NaN in, NaN out
    count = torch.searchsorted(thresholds, flat.contiguous(), right=True)
    out = torch.where(torch.isnan(flat), flat, torch.gather(values, 1, count)).reshape(x.shape)
    return out.to(x.dtype) if x.is_floating_point() else out


class _Staircase(torch.autograd.Function):
    """The staircase, with the true derivative: zero (almost everywhere)."""

    @staticmethod
    def forward(ctx, x, thresholds, values):
        return _lookup(x, thresholds, values)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad), None, None


def _per_row(value):
    import numpy as np

    if hasattr(value, "detach"):
        return value.numel() > 1
    return value is not None and np.ndim(value) > 0 and np.size(value) > 1


def _table_tensors(g, v, dtype, device):
    """The tables ``(g, v)`` of :func:`staircase_tables` as tensors of ``dtype``; a ValueError when a
    level or a threshold does not fit ``dtype`` (a float32 staircase with ``scale = 1e39`` would hold inf)."""
    import numpy as np

    big = torch.finfo(dtype).max
    worst = max(float(np.abs(v).max()), float(np.abs(g[np.isfinite(g)]).max(initial=0.0)))
    if worst > big:
        raise ValueError(f"scale and spacing must keep every level and threshold of the staircase within {dtype} "
                         f"(magnitude at most {big!r}), got {worst!r}")
    return torch.as_tensor(g, dtype=dtype, device=device), torch.as_tensor(v, dtype=dtype, device=device)


def _tables_for(x, levels, spacing, scale):
    check_tensor(x, "x", finite=False)
    per_row = any(_per_row(v) for v in (levels, spacing, scale))
    if per_row and x.dim() == 0:
        raise ValueError("x must have a leading network dimension when the parameters differ per network")
    g, v = _tables(*_rows(levels, spacing, scale, x.shape[0] if per_row else 1))
    return _table_tensors(g, v, x.dtype if x.is_floating_point() else torch.get_default_dtype(), x.device)


def quantize(x, levels, spacing=None, scale=1.0):
    r"""The uniform N-level staircase, equal to :class:`~qmf_lite.QuantizedActivation` bit for bit.

    The thresholds :math:`g_k = D\,(k - (N-2)/2)` and the levels :math:`A(-1 + 2k/(N-1))` are
    computed exactly as :class:`~qmf_lite.QuantizedActivation` computes them (in float64, then
    rounded to ``x``'s dtype), and the output is the level indexed by the number of thresholds
    ``<= x`` (a binary search): at, and within an ulp of, every threshold the two agree, in
    float64 and in float32. (A closed form such as ``floor(x / D + N / 2)`` does not: at
    ``x = -6e-17`` it rounds to the upper level for ``N = 2``.) Unlike
    :class:`~qmf_lite.QuantizedActivation`, the parameters may differ from network to network
    in a batch, and autograd differentiates it, to zero (see :class:`QuantAct` for a useful
    backward pass).

    Parameters
    ----------
    x : tensor
        Inputs, a real torch tensor on any device; with per-network parameters, ``x.shape[0]``
        indexes the networks.
    levels, spacing, scale : scalar, or one value per network (length ``x.shape[0]``)
        ``N`` an integer in [2, 2^22], raw spacing ``D`` in [1e-100, 1e100] (``None``:
        ``2A/(N-1)``), output range ``A`` in [1e-100, 1e100].

    Examples
    --------
    >>> import torch
    >>> quantize(torch.tensor([-6e-17, 0.0, 0.5], dtype=torch.float64), 2, None, 1.0)
    tensor([-1.,  1.,  1.], dtype=torch.float64)
    """
    g, v = _tables_for(x, levels, spacing, scale)
    return _Staircase.apply(x, g, v)


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, thresholds, values, slope, clip):
        if ctx.needs_input_grad[0]:                      # evaluation under no_grad skips the gain
            ctx.save_for_backward((x.abs() <= clip) * slope)
        return _lookup(x, thresholds, values)

    @staticmethod
    def backward(ctx, grad):
        (gain,) = ctx.saved_tensors
        return grad * gain, None, None, None, None


def ste_lookup(x, thresholds, values, slope, clip):
    """Forward the staircase given by ``(thresholds, values)`` tables (:func:`staircase_tables`,
    as tensors), backward ``slope * 1{|x| <= clip}``; ``slope`` and ``clip`` broadcast with ``x``."""
    return _STE.apply(x, thresholds, values, slope, clip)


def _check_gain(value, name, rows):
    """``slope`` or ``clip`` of :func:`ste_quantize`: a finite number >= 0, or one per network (a
    sequence, array or tensor of length ``rows``)."""
    if hasattr(value, "detach"):
        check_tensor(value, name)
        arr = value.detach().to("cpu", torch.float64).numpy()
    else:
        arr = check_nonnegative(value, name)
    if (arr < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if arr.size not in (1, rows):
        raise ValueError(f"{name} must be a scalar or have {rows} entries (one per network), got {arr.size}")
    return value


def ste_quantize(x, levels, spacing=None, scale=1.0, slope=1.0, clip=None):
    r"""Forward the staircase (:func:`quantize`), backward ``slope * 1{|x| <= clip}``.

    Parameters
    ----------
    x : tensor
        Inputs, a real torch tensor on any device (see :func:`quantize`).
    levels, spacing, scale
        The staircase, as for :func:`quantize`.
    slope, clip : float >= 0, or one value per network
        The straight-through gain ``s`` (default 1) and clipping point ``T`` (default ``None``:
        each staircase's own :math:`T = (N-1)D/2`, as :func:`ste_clip`): finite numbers >= 0, or
        a sequence, array or tensor with one per network; they broadcast with ``x``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([-2.0, 0.2], requires_grad=True)
    >>> ste_quantize(x, 4, None, 1.0, 1.5, 1.0).sum().backward()
    >>> x.grad
    tensor([0.0000, 1.5000])
    """
    as_t = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
    g, v = _tables_for(x, levels, spacing, scale)
    _check_gain(slope, "slope", g.shape[0])
    if clip is None:
        m, d, _ = _rows(levels, spacing, scale, g.shape[0])
        clip = [(n - 1) * dn / 2.0 for n, dn in zip(m, d)]
        clip = clip[0] if len(clip) == 1 else clip
    _check_gain(clip, "clip", g.shape[0])
    slope, clip = as_t(slope), as_t(clip)
    if g.shape[0] > 1:
        shape = (g.shape[0],) + (1,) * (x.dim() - 1)
        slope = slope.reshape(shape) if slope.numel() > 1 else slope
        clip = clip.reshape(shape) if clip.numel() > 1 else clip
    return _STE.apply(x, g, v, slope, clip)


def ste_clip(activation):
    """The clipping point ``T = (N - 1) D / 2`` of the STE for a uniform quantized activation.

    ``activation`` is a :class:`~qmf_lite.QuantizedActivation` or its number of levels ``N``
    (an integer in [2, 2^22]: ``QuantizedActivation(N)``).

    >>> ste_clip(4)
    1.0
    """
    return _ste_clip(_as_quantized(activation))


def _ste_clip(act):
    """:func:`ste_clip` of a :class:`QuantizedActivation`."""
    return (act.levels - 1) * act.spacing / 2.0


def _as_quantized(activation):
    """A QuantizedActivation, or an int N (QuantizedActivation(N)); the error names ``activation``."""
    if isinstance(activation, QuantizedActivation):
        return activation
    if isinstance(activation, numbers.Integral) and not isinstance(activation, bool):
        from .activations import MAX_STORED_LEVELS

        levels = check_levels(activation, "activation", maximum=MAX_STORED_LEVELS)
        return QuantizedActivation._checked(levels, 2.0 * 1.0 / (levels - 1), 1.0)   # QuantizedActivation(levels)
    try:
        act = get_activation(activation)
    except ValueError:
        act = None
    if not isinstance(act, QuantizedActivation):
        raise ValueError(f"activation must be a QuantizedActivation or a number of levels (an integer >= 2), "
                         f"got {activation!r}")
    return act


def _scalar_sigmas(sigma_w, sigma_b):
    sw, sb = check_sigmas(sigma_w, sigma_b, allow_array=False)
    return float(sw), float(sb)


def _p_inside(act, q_star):
    """P(|u| <= T) for u ~ N(0, q*): erf(T / sqrt(2 q*)), and 1 at q* = 0 (every u is 0)."""
    return 1.0 if q_star == 0 else float(special.erf(_ste_clip(act) / math.sqrt(2 * q_star)))


def _fixed_point_q(act, sigma_w, sigma_b):
    """q* of :func:`~qmf_lite.fixed_point_q` from q0 = 1, for checked scalar sigmas."""
    return float(_fixed_point_q_bounded(act, sigma_w, sigma_b, 1.0))


def ste_slope(activation, sigma_w, sigma_b=0.0):
    r"""The STE slope that makes :math:`\chi_1 = \sigma_w^2 s^2\operatorname{erf}(T/\sqrt{2q^*}) = 1`.

    Parameters
    ----------
    activation : QuantizedActivation or int
        The forward function (an int ``N`` in [2, 2^22] means ``QuantizedActivation(N)``).
    sigma_w : float in [1e-100, 1e100]
    sigma_b : float in [0, 1e100]

    Returns
    -------
    float
        :math:`s = 1/(\sigma_w\sqrt{\operatorname{erf}(T/\sqrt{2q^*})})`; :math:`1/\sigma_w` where
        :math:`q^* = 0` (an odd ``N`` with :math:`\sigma_b = 0` whose fixed point collapses onto the
        zero level: every pre-activation lies inside the clipping range).

    >>> round(ste_slope(4, 1.0), 6)
    1.043285
    """
    act = _as_quantized(activation)
    return _ste_slope(act, *_scalar_sigmas(sigma_w, sigma_b))


def _ste_slope(act, sigma_w, sigma_b):
    """:func:`ste_slope` of a :class:`QuantizedActivation` and checked scalar sigmas."""
    q_star = _fixed_point_q(act, sigma_w, sigma_b)
    return 1.0 / (sigma_w * math.sqrt(_p_inside(act, q_star)))


#: the largest ``sigma_w * slope`` of :func:`ste_chi1` (its square, chi_1, stays within float64)
MAX_GAIN = 1e150


def _check_slope(slope, sigma_w):
    """``slope`` as a float: a scalar >= 0 (0: the true derivative of the steps, almost everywhere) and at
    most ``min(MAX_GAIN, MAX_GAIN / sigma_w)``, so that chi_1 and the gradients stay within float64."""
    s = check_nonnegative(slope, "slope")
    if s.ndim:
        raise ValueError(f"slope must be a scalar >= 0, got an array of shape {s.shape}")
    limit = min(MAX_GAIN, MAX_GAIN / sigma_w)
    if float(s) > limit:
        raise ValueError(f"slope must be at most {limit:.3g} (min(1e150, 1e150 / sigma_w): chi_1 = "
                         f"sigma_w^2 slope^2 P(|u| <= T) must stay within float64), got {slope!r}")
    return float(s)


def ste_chi1(activation, sigma_w, sigma_b=0.0, slope=1.0):
    r""":math:`\chi_1 = \sigma_w^2 s^2 P(|u| \le T)` at the fixed point ``q*``.

    Parameters
    ----------
    activation : QuantizedActivation or int
        The forward function (an int ``N`` in [2, 2^22] means ``QuantizedActivation(N)``).
    sigma_w : float in [1e-100, 1e100]
    sigma_b : float in [0, 1e100]
    slope : float >= 0
        The STE slope ``s``, at most ``MAX_GAIN`` (1e150) and with ``sigma_w * slope`` at most
        ``MAX_GAIN``.

    Returns
    -------
    float
        :math:`\chi_1`. Where :math:`q^* = 0` (an odd ``N`` at :math:`\sigma_b = 0` below the
        collapse threshold, every pre-activation 0) :math:`P(|u| \le T) = 1` and
        :math:`\chi_1 = \sigma_w^2 s^2`.

    >>> round(ste_chi1(4, 1.0, slope=ste_slope(4, 1.0)), 12)
    1.0
    >>> ste_chi1(3, 0.5, 0.0, slope=1.0)
    0.25
    """
    act = _as_quantized(activation)
    sigma_w, sigma_b = _scalar_sigmas(sigma_w, sigma_b)
    slope = _check_slope(slope, sigma_w)
    q_star = _fixed_point_q(act, sigma_w, sigma_b)
    return sigma_w**2 * slope**2 * _p_inside(act, q_star)


class QuantAct(torch.nn.Module):
    r"""Quantized activation with a straight-through estimator.

    Parameters
    ----------
    activation : QuantizedActivation or int
        The forward function (an int ``N`` means ``QuantizedActivation(N)``).
    sigma_w, sigma_b : float
        The initialization of the layers it follows; they set ``q*`` and so the default slope.
    slope : float, optional
        STE slope ``s`` in [0, min(1e150, 1e150 / sigma_w)] (0: the true derivative of the steps, almost
        everywhere); by default the one that makes :math:`\chi_1 = 1`.

    Examples
    --------
    >>> import torch
    >>> act = QuantAct(4, sigma_w=1.0)
    >>> x = torch.tensor([-2.0, -0.2, 0.5], requires_grad=True)
    >>> act(x)
    tensor([-1.0000, -0.3333,  0.3333], grad_fn=<_STEBackward>)
    """

    def __init__(self, activation, sigma_w, sigma_b=0.0, slope=None):
        super().__init__()
        self.activation = _as_quantized(activation)
        self.sigma_w, self.sigma_b = _scalar_sigmas(sigma_w, sigma_b)
        self.clip = _ste_clip(self.activation)
        self.slope = _ste_slope(self.activation, self.sigma_w, self.sigma_b) if slope is None else \
            _check_slope(slope, self.sigma_w)   # 0: the true derivative a.e.
        self._tables = {}

    @property
    def chi1(self):
        return ste_chi1(self.activation, self.sigma_w, self.sigma_b, self.slope)

    def forward(self, x):
        check_tensor(x, "x", finite=False)
        if not x.is_floating_point():    # an integer tensor: the levels are fractions, so float out
            x = x.to(torch.get_default_dtype())
        key = (x.device, x.dtype)
        if key not in self._tables:
            a = self.activation
            self._tables[key] = _table_tensors(*_tables([a.levels], [a.spacing], [a.scale]), x.dtype, x.device)
        g, v = self._tables[key]
        return _STE.apply(x, g, v, torch.as_tensor(self.slope, dtype=x.dtype, device=x.device),
                          torch.as_tensor(self.clip, dtype=x.dtype, device=x.device))

    def extra_repr(self):
        a = self.activation
        return f"levels={a.levels}, spacing={a.spacing:.4g}, scale={a.scale:g}, slope={self.slope:.4g}, clip={self.clip:.4g}"
