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

from ._validate import check_nonnegative, check_positive
from .activations import QuantizedActivation, get_activation
from .maps import fixed_point_q

__all__ = ["QuantAct", "quantize", "ste_clip", "ste_slope", "ste_chi1"]


def quantize(x, levels, spacing, scale):
    r"""The uniform N-level staircase in closed form, with parameters that broadcast with ``x``.

    ``count = clamp(floor(x / D + N / 2), 0, N - 1)`` thresholds lie at or below ``x``, and the
    output is ``A (2 count / (N - 1) - 1)``, in the same order of operations as
    :attr:`QuantizedActivation.values <qmf_lite.QuantizedActivation>`, so that in float64 the two
    agree bit for bit. Unlike :class:`~qmf_lite.QuantizedActivation` (a table look-up), the
    parameters may differ from network to network in a batch, and autograd differentiates it
    (to zero almost everywhere: see :class:`QuantAct` for a useful backward pass).
    """
    as_t = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
    levels, spacing, scale = as_t(levels), as_t(spacing), as_t(scale)
    count = torch.floor(x / spacing + levels / 2)
    count = torch.clamp(count, torch.zeros_like(levels), levels - 1)
    return (count * 2 / (levels - 1) - 1) * scale


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, levels, spacing, scale, slope, clip):
        ctx.save_for_backward((x.abs() <= clip) * slope)
        return quantize(x, levels, spacing, scale)

    @staticmethod
    def backward(ctx, grad):
        (gain,) = ctx.saved_tensors
        return grad * gain, None, None, None, None, None


def ste_quantize(x, levels, spacing, scale, slope, clip):
    """Forward the staircase, backward ``slope * 1{|x| <= clip}``; parameters broadcast with ``x``."""
    as_t = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
    return _STE.apply(x, as_t(levels), as_t(spacing), as_t(scale), as_t(slope), as_t(clip))


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

    @property
    def chi1(self):
        return ste_chi1(self.activation, self.sigma_w, self.sigma_b, self.slope)

    def forward(self, x):
        a = self.activation
        return ste_quantize(x, a.levels, a.spacing, a.scale, self.slope, self.clip)

    def extra_repr(self):
        a = self.activation
        return f"levels={a.levels}, spacing={a.spacing:.4g}, scale={a.scale:g}, slope={self.slope:.4g}, clip={self.clip:.4g}"
