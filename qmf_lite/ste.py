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

from ._validate import check_levels, check_nonnegative, check_positive
from .activations import QuantizedActivation, get_activation
from .maps import fixed_point_q

__all__ = ["QuantAct", "quantize", "ste_quantize", "staircase_tables", "ste_clip", "ste_slope", "ste_chi1"]


def staircase_tables(levels, spacing, scale, rows=None):
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
        Number of rows; default the length of the longest sequence argument (1 if all are scalars).

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
    import numpy as np

    def column(value):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if value is None or np.ndim(value) == 0:
            return [value]
        return list(np.asarray(value, dtype=object).reshape(-1))

    cols = {"levels": column(levels), "spacing": column(spacing), "scale": column(scale)}
    n = rows if rows is not None else max(len(c) for c in cols.values())
    for name, c in cols.items():
        if len(c) not in (1, n):
            raise ValueError(f"{name} must be a scalar or have {n} entries (one per row), got {len(c)}")
        cols[name] = c * n if len(c) == 1 else c
    levels = [check_levels(v) for v in cols["levels"]]
    scale = [float(check_positive(v, "scale", allow_array=False)) for v in cols["scale"]]
    spacing = [2.0 * a / (m - 1) if d is None else float(check_positive(d, "spacing", allow_array=False))
               for d, a, m in zip(cols["spacing"], scale, levels)]
    top = max(levels)
    g = np.full((n, top - 1), np.inf)
    v = np.empty((n, top))
    for b, (m, d, a) in enumerate(zip(levels, spacing, scale)):
        act = QuantizedActivation(m, d, a)          # the same floating-point thresholds and levels
        g[b, :m - 1] = act.thresholds
        v[b, :m] = act.values
        v[b, m:] = act.values[-1]
    return g, v


def _lookup(x, thresholds, values):
    """``values[b, #{k: thresholds[b, k] <= x}]`` for each row ``b`` (x of shape (rows, ...))."""
    import torch

    rows = thresholds.shape[0]
    flat = x.reshape(rows, -1)
    if flat.dtype != thresholds.dtype:
        flat = flat.to(thresholds.dtype)
    # right=True counts the thresholds <= x, like QuantizedActivation (searchsorted side="right")
    count = torch.searchsorted(thresholds, flat.contiguous(), right=True)
    return torch.gather(values, 1, count).reshape(x.shape).to(x.dtype)


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


def _tables_for(x, levels, spacing, scale):
    per_row = any(_per_row(v) for v in (levels, spacing, scale))
    if per_row and x.dim() == 0:
        raise ValueError("x must have a leading network dimension when the parameters differ per network")
    g, v = staircase_tables(levels, spacing, scale, rows=x.shape[0] if per_row else 1)
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return torch.as_tensor(g, dtype=dtype, device=x.device), torch.as_tensor(v, dtype=dtype, device=x.device)


def quantize(x, levels, spacing, scale):
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
        Inputs; with per-network parameters, ``x.shape[0]`` indexes the networks.
    levels, spacing, scale : scalar, or one value per network (length ``x.shape[0]``)
        ``N >= 2``, raw spacing ``D > 0`` (``None``: ``2A/(N-1)``), output range ``A > 0``.

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


def ste_quantize(x, levels, spacing, scale, slope, clip):
    """Forward the staircase, backward ``slope * 1{|x| <= clip}``; parameters broadcast with ``x``."""
    as_t = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
    g, v = _tables_for(x, levels, spacing, scale)
    slope, clip = as_t(slope), as_t(clip)
    if g.shape[0] > 1:
        shape = (g.shape[0],) + (1,) * (x.dim() - 1)
        slope = slope.reshape(shape) if slope.numel() > 1 else slope
        clip = clip.reshape(shape) if clip.numel() > 1 else clip
    return _STE.apply(x, g, v, slope, clip)


def ste_clip(activation):
    """The clipping point ``T = (N - 1) D / 2`` of the STE for a uniform quantized activation."""
    return (activation.levels - 1) * activation.spacing / 2.0


def _as_quantized(activation):
    act = get_activation(activation) if not isinstance(activation, int) else QuantizedActivation(activation)
    if not isinstance(act, QuantizedActivation):
        raise ValueError(f"activation must be a QuantizedActivation (or a number of levels), got {act!r}")
    return act


def ste_slope(activation, sigma_w, sigma_b=0.0):
    r"""The STE slope that makes :math:`\chi_1 = \sigma_w^2 s^2\operatorname{erf}(T/\sqrt{2q^*}) = 1`."""
    act = _as_quantized(activation)
    sigma_w = float(check_positive(sigma_w, "sigma_w", allow_array=False))
    sigma_b = float(check_nonnegative(sigma_b, "sigma_b"))
    q_star = float(fixed_point_q(act, sigma_w, sigma_b))
    if not 0 < q_star < math.inf:
        raise ValueError(f"no finite positive fixed point q* at sigma_w={sigma_w}, sigma_b={sigma_b}")
    return 1.0 / (sigma_w * math.sqrt(special.erf(ste_clip(act) / math.sqrt(2 * q_star))))


def ste_chi1(activation, sigma_w, sigma_b=0.0, slope=1.0):
    r""":math:`\chi_1 = \sigma_w^2 s^2 P(|u| \le T)` at the fixed point ``q*``."""
    act = _as_quantized(activation)
    q_star = float(fixed_point_q(act, sigma_w, sigma_b))
    return sigma_w**2 * slope**2 * special.erf(ste_clip(act) / math.sqrt(2 * q_star))


class QuantAct(torch.nn.Module):
    r"""Quantized activation with a straight-through estimator.

    Parameters
    ----------
    activation : QuantizedActivation or int
        The forward function (an int ``N`` means ``QuantizedActivation(N)``).
    sigma_w, sigma_b : float
        The initialization of the layers it follows; they set ``q*`` and so the default slope.
    slope : float, optional
        STE slope ``s``; by default the one that makes :math:`\chi_1 = 1`.

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
        self.sigma_w = float(check_positive(sigma_w, "sigma_w", allow_array=False))
        self.sigma_b = float(check_nonnegative(sigma_b, "sigma_b"))
        self.clip = ste_clip(self.activation)
        self.slope = ste_slope(self.activation, self.sigma_w, self.sigma_b) if slope is None else float(
            check_positive(slope, "slope", allow_array=False))
        self._tables = {}

    @property
    def chi1(self):
        return ste_chi1(self.activation, self.sigma_w, self.sigma_b, self.slope)

    def forward(self, x):
        key = (x.device, x.dtype)
        if key not in self._tables:
            g, v = staircase_tables(self.activation.levels, self.activation.spacing, self.activation.scale)
            self._tables[key] = (torch.as_tensor(g, dtype=x.dtype, device=x.device),
                                 torch.as_tensor(v, dtype=x.dtype, device=x.device))
        g, v = self._tables[key]
        return _STE.apply(x, g, v, torch.as_tensor(self.slope, dtype=x.dtype, device=x.device),
                          torch.as_tensor(self.clip, dtype=x.dtype, device=x.device))

    def extra_repr(self):
        a = self.activation
        return f"levels={a.levels}, spacing={a.spacing:.4g}, scale={a.scale:g}, slope={self.slope:.4g}, clip={self.clip:.4g}"
