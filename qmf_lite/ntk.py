r"""The empirical neural tangent kernel of a batch of quantized MLPs, with the STE.

For a scalar output :math:`f(x)` the NTK is
:math:`\Theta(x, x') = \sum_\theta \partial_\theta f(x)\,\partial_\theta f(x')`. In an MLP the gradient
with respect to a weight matrix is an outer product, :math:`\partial f/\partial W^{l} = a^{l-1}\otimes\delta^{l}`
(activations of the layer below, back-propagated error at layer ``l``), so

.. math:: \Theta(x, x') = \sum_l \bigl(\langle a^{l-1}(x), a^{l-1}(x')\rangle + [\text{bias}]\bigr)\,
          \langle\delta^l(x), \delta^l(x')\rangle + \langle a^L(x), a^L(x')\rangle + 1,

where the last two terms are the readout's. One forward and one backward pass over the whole
batch of inputs give every :math:`a^l` and :math:`\delta^l`, and the kernel follows from Gram matrices,
without ever forming per-example gradients. The backward pass uses the straight-through estimator.

At infinite width (:func:`~qmf_lite.ste_ntk`) the same sum becomes a recursion over layers: the forward
kernels of chapter 1, and backward kernels :math:`\Delta^l(x, x') = \lim\,\langle\delta^l(x),
\delta^l(x')\rangle` obeying :math:`\Delta^l = \sigma_w^2\,\dot K^l\,\Delta^{l+1}`, where the STE's
derivative kernel :math:`\dot K = s^2 P(|u_1|\le T, |u_2|\le T)` is a bivariate-normal rectangle
probability (:func:`~qmf_lite.ste_derivative_kernel`). The functions of this theory need numpy and scipy only;
:func:`~qmf_lite.empirical_ntk` imports torch when it is called.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import special

from ._validate import (check_broadcast, check_correlation, check_int_range, check_nonnegative, check_positive,
                        check_sigmas)
from .activations import QuantizedActivation

__all__ = ["empirical_ntk", "ste_derivative_kernel", "backward_rate", "backward_depth_scale", "ste_ntk", "SteNTK"]


def empirical_ntk(model, x, output=0):
    """The NTK of output ``output`` of every network in ``model`` on the inputs ``x``.

    Parameters
    ----------
    model : :class:`qmf_lite.training.QuantizedMLPBatch`
        In the ``"book"`` layout (no first-layer bias, an unquantized linear readout), which the
        formula above assumes.
    x : tensor, shape (n, features)
        Finite inputs with the model's ``n_in`` features, on any device and of any real dtype
        (moved to the model's device and converted to its dtype).
    output : int
        Which output (logit) is ``f``, in [0, n_out - 1].

    Returns
    -------
    tensor, shape (B, n, n)
    """
    import torch

    from ._validate import check_tensor
    from .training import QuantizedMLPBatch

    if not isinstance(model, QuantizedMLPBatch):
        raise ValueError(f"model must be a QuantizedMLPBatch, got {type(model).__name__}")
    if model.layout != "book":
        raise ValueError(f"model must use layout='book' (the readout term above assumes it), got {model.layout!r}")
    check_tensor(x, "x", ndim=2)
    n_in = model.w_in.shape[1]
    if x.shape[1] != n_in or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n, {n_in}) with n >= 1 (the model's n_in features), got "
                         f"{tuple(x.shape)}")
    output = model._check_output(output)
    x = x.to(device=model.w_out.device, dtype=model.w_out.dtype)
    hs, grads = model.preactivation_grads(x, output)
    with torch.no_grad():
        acts = [model.phi(h) for h in hs]
        gram = lambda a: torch.bmm(a, a.transpose(1, 2))  # noqa: E731
        xb = x.unsqueeze(0).expand(len(model.specs), -1, -1)
        theta = gram(xb) * gram(grads[0])                         # first layer: no bias
        for l in range(1, len(hs)):
            theta += (gram(acts[l - 1]) + 1.0) * gram(grads[l])    # weights and biases of layer l
        theta += gram(acts[-1]) + 1.0                              # readout weights and bias
    return theta


# --- the NTK with the STE at infinite width (numpy/scipy) ---------------------------------------

#: the largest depth of :func:`ste_ntk`
MAX_DEPTH = 100_000


def _rectangle(a, c):
    r""":math:`P(|z_1|\le a, |z_2|\le a)` for standard normals of correlation ``c`` (arrays, ``a >= 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt((1.0 - c) / (1.0 + c))            # inf at c = -1
        r_inv = np.sqrt((1.0 + c) / (1.0 - c))        # inf at c = +1
    p = 1.0 - 4.0 * (special.owens_t(a, r) + special.owens_t(a, r_inv))
    return np.clip(p, 0.0, 1.0)


def _clip_of(act):
    """The STE's clipping point T = (N - 1) D / 2 of a uniform quantized activation (as :func:`qmf_lite.ste_clip`)."""
    return (act.levels - 1) * act.spacing / 2.0


def ste_derivative_kernel(q, c, clip, slope=1.0):
    r"""The derivative kernel of the STE, :math:`\dot K = s^2\,P(|u_1|\le T,\ |u_2|\le T)`.

    ``(u_1, u_2)`` are centred normals of variance ``q`` each and correlation ``c``. With
    :math:`a = T/\sqrt q` and :math:`r = \sqrt{(1-c)/(1+c)}` the rectangle probability has the
    closed form (Owen's :math:`T` function, ``scipy.special.owens_t``)

    .. math:: P(|u_1|\le T, |u_2|\le T) = 1 - 4\,\bigl[T_{\rm Owen}(a, r) + T_{\rm Owen}(a, 1/r)\bigr],

    which is :math:`\operatorname{erf}(a/\sqrt2)^2` at ``c = 0`` (the two masks independent) and
    :math:`\operatorname{erf}(a/\sqrt2)` at ``c = ±1``. Its slope in ``c`` vanishes at ``c = 0``:
    the kernel depends on the correlation only at second order there.

    Parameters
    ----------
    q : array_like, > 0
        Pre-activation variance, in [1e-300, 1e300].
    c : array_like, in [-1, 1]
        Correlation (broadcast with ``q``).
    clip : float >= 0
        The clipping point ``T``.
    slope : float >= 0
        The STE slope ``s``.

    Returns
    -------
    ndarray or float
        :math:`\dot K`, with an absolute error of about 1e-15 times :math:`s^2`.

    Examples
    --------
    >>> from scipy.special import erf
    >>> bool(abs(ste_derivative_kernel(0.5, 0.0, 1.0) - erf(1.0) ** 2) < 1e-14)
    True
    >>> round(float(ste_derivative_kernel(0.5, 1.0, 1.0)), 12) == round(float(erf(1.0)), 12)
    True
    """
    q = check_positive(q, "q")
    if (q < 1e-300).any() or (q > 1e300).any():
        raise ValueError(f"q must lie in [1e-300, 1e300], got {q!r}")
    c = check_correlation(c, "c")
    check_broadcast(("q", "c"), q, c)
    clip = float(check_nonnegative(clip, "clip", allow_array=False))
    slope = float(check_nonnegative(slope, "slope", allow_array=False))
    if slope > 1e150:
        raise ValueError(f"slope must be at most 1e150 (its square stays within float64), got {slope!r}")
    return _ste_derivative_kernel(q, c, clip, slope)


def _ste_derivative_kernel(q, c, clip, slope):
    """:func:`ste_derivative_kernel` of checked arguments (``q`` in [1e-300, 1e300], ``c`` a float64 array)."""
    q, c = np.broadcast_arrays(q, c)
    with np.errstate(over="ignore"):     # T / sqrt(q) beyond float64: inf, the rectangle is the whole plane
        a = clip / np.sqrt(q)
    out = slope * slope * _rectangle(a, c)
    return out[()] if out.ndim == 0 else out


def _as_quantized_activation(activation):
    act = activation
    if not isinstance(act, QuantizedActivation):
        if isinstance(activation, (int, np.integer)) and not isinstance(activation, (bool, np.bool_)):
            levels = _check_levels(activation)
            act = QuantizedActivation._checked(levels, 2.0 * 1.0 / (levels - 1), 1.0)   # QuantizedActivation(levels)
        else:
            raise ValueError(f"activation must be a QuantizedActivation or a number of levels (an integer >= 2), "
                             f"got {activation!r}")
    return act


def _check_levels(levels):
    from ._validate import check_levels
    from .activations import MAX_STORED_LEVELS

    return check_levels(levels, "activation", maximum=MAX_STORED_LEVELS)


def _backward_rate_scalar(act, sw, sb):
    from .maps import _fixed_point_c_scalar, _q_star_checked

    q_star = _q_star_checked(act, sw, sb)
    c_star = _fixed_point_c_scalar(act, sw, sb, q_star)
    a = _clip_of(act) / math.sqrt(q_star)
    p_in = float(special.erf(a / math.sqrt(2.0)))
    if p_in == 0.0:
        return 0.0
    return float(_rectangle(np.float64(a), np.float64(c_star))) / p_in


def backward_rate(activation, sigma_w, sigma_b=0.0):
    r"""Factor per layer by which the STE shrinks the backward correlation of two distinct inputs.

    Deep in the network the forward correlation of two distinct inputs sits at :math:`c^*`, and
    their back-propagated errors :math:`\delta^l` have the correlation
    :math:`\rho_\delta^l = \Delta^l(x, x')/\Delta^l(x, x)` (see :func:`ste_ntk`), which shrinks each
    layer by

    .. math:: r_\delta = \frac{\dot K(q^*, c^*)}{\dot K(q^*, 1)}
              = \frac{P(|u_1|\le T, |u_2|\le T)}{P(|u|\le T)}
              \;\overset{c^*=0}{=}\; P(|u|\le T) = \operatorname{erf}\!\Bigl(\frac{T}{\sqrt{2q^*}}\Bigr),

    the STE's gates of two inputs being independent at :math:`c^* = 0`. The slope ``s`` cancels.

    Parameters
    ----------
    activation : QuantizedActivation or int
        The forward function (an int ``N`` in [2, 2^22] means ``QuantizedActivation(N)``); the
        STE clips at :math:`T = (N-1)D/2`.
    sigma_w : array_like, in [1e-100, 1e100]
    sigma_b : array_like, in [0, 1e100]
        Broadcast with ``sigma_w``. Where the variance map has no finite positive fixed point
        (an odd ``N`` at small ``sigma_w`` and ``sigma_b = 0``) a ``ValueError`` is raised.

    Examples
    --------
    >>> from scipy.special import erf
    >>> from qmf_lite import fixed_point_q
    >>> r = backward_rate(4, 1.0)
    >>> bool(abs(r - erf(1 / (2 * fixed_point_q(QuantizedActivation(4), 1.0, 0.0)) ** 0.5)) < 1e-12)
    True
    """
    act = _as_quantized_activation(activation)
    sigma_w, sigma_b = check_sigmas(sigma_w, sigma_b)
    sw, sb = np.broadcast_arrays(sigma_w, sigma_b)
    out = np.array([_backward_rate_scalar(act, float(a), float(b)) for a, b in zip(sw.ravel(), sb.ravel())],
                   dtype=float).reshape(sw.shape)
    return out[()] if out.ndim == 0 else out


def backward_depth_scale(activation, sigma_w, sigma_b=0.0):
    r"""The backward depth scale :math:`\xi_\delta = -1/\ln r_\delta` of the STE network.

    The backward correlation of two distinct inputs falls like :math:`e^{-(L-l)/\xi_\delta}` with
    the distance :math:`L - l` from the output (:func:`backward_rate`); at :math:`\sigma_b = 0`,
    :math:`\xi_\delta = -1/\ln\operatorname{erf}(T/\sqrt{2q^*})`. It is long where few
    pre-activations reach the clipping point (small ``sigma_w``) and short where many do. ``inf``
    where :math:`r_\delta = 1`, 0 where it is 0. Arguments as for :func:`backward_rate`.

    Examples
    --------
    >>> import numpy as np
    >>> xi = backward_depth_scale(4, 1.0)
    >>> bool(np.isclose(xi, -1 / np.log(backward_rate(4, 1.0))))
    True
    """
    rate = np.asarray(backward_rate(activation, sigma_w, sigma_b), dtype=float)
    with np.errstate(divide="ignore"):
        out = np.where(rate >= 1.0, np.inf, np.where(rate <= 0.0, 0.0, -1.0 / np.log(np.clip(rate, 1e-300, 1.0))))
    return out[()] if out.ndim == 0 else out


def _forward_layers(act, sw, sb, q1, c0, depth, clip, slope):
    """Per layer: q^l, c^l, the kernels K(x, x') and K(x, x), and the STE derivative kernels (off, diag)."""
    qs, cs, k_off, k_diag, kd_off, kd_diag = [], [], [], [], [], []
    q, c = q1, np.array(c0, dtype=float)
    for layer in range(depth):
        if not 1e-300 <= q <= 1e300:   # the variance decayed to 0 (an odd N without bias, q1 small)
            raise ValueError(f"q must lie in [1e-300, 1e300] at every layer, got {q!r} at layer {layer + 1}")
        qs.append(q)
        cs.append(c)
        k_diag.append(float(act.second_moment(q)))
        k_off.append(np.asarray(act.kernel(q, c), dtype=float) if c.ndim else float(act.kernel(q, c)))
        kd_diag.append(float(_ste_derivative_kernel(q, np.array(1.0), clip, slope)))
        kd_off.append(_ste_derivative_kernel(q, c, clip, slope))
        q_next = sw * sw * k_diag[-1] + sb * sb
        c = np.clip((sw * sw * k_off[-1] + sb * sb) / q_next, -1.0, 1.0)
        q = q_next
    return qs, cs, k_off, k_diag, kd_off, kd_diag


@dataclasses.dataclass(frozen=True)
class SteNTK:
    r"""The infinite-width NTK of an STE network for pairs of inputs, layer by layer (:func:`ste_ntk`).

    Arrays indexed by the hidden layer ``l = 1..L`` (first axis, position ``l - 1``); a trailing
    shape is that of ``c0``. ``q``: the pre-activation variance :math:`q^l`; ``c``: the forward
    correlation :math:`c^l` of the pair; ``grad_diag``, ``grad_off``: :math:`\Delta^l(x, x)` and
    :math:`\Delta^l(x, x')`; ``grad_corr``: their ratio, the backward correlation
    :math:`\rho_\delta^l` (NaN where no gradient reaches layer ``l``, :math:`\Delta^l(x, x) = 0`: a
    slope of 0, or a product that underflows); ``theta_diag``, ``theta_off``: :math:`\Theta(x, x)/n` and
    :math:`\Theta(x, x')/n` (scalars / the shape of ``c0``).
    """

    q: np.ndarray
    c: np.ndarray
    grad_diag: np.ndarray
    grad_off: np.ndarray
    grad_corr: np.ndarray
    theta_diag: float
    theta_off: np.ndarray


def ste_ntk(activation, sigma_w, depth, c0, *, sigma_b=0.0, q1=None, slope=None, width=None, n_in=None):
    r"""The NTK of a deep STE network at infinite width, for pairs of inputs of cosine ``c0``.

    The network is :class:`~qmf_lite.QuantizedMLPBatch` in the ``"book"`` layout:
    :math:`h^1 = W^{\rm in}x` with :math:`W^{\rm in}_{ij}\sim\mathcal N(0, q^1/n_{\rm in})`,
    :math:`h^{l+1} = W^{l+1}\phi(h^l) + b^{l+1}`, readout :math:`f = W^{\rm out}\phi(h^L) + b^{\rm out}`
    with weights :math:`\mathcal N(0, 1/n)`, and the STE :math:`\phi' \to s\,\mathbb 1\{|h|\le T\}`.
    The inputs have :math:`\|x\|^2 = n_{\rm in}` (standardised) and cosine :math:`c^0`, so
    :math:`h^1` has variance :math:`q^1` and correlation :math:`c^0`. Forward, as in chapter 1,
    :math:`q^{l+1} = \sigma_w^2\,\mathbb E[\phi^2] + \sigma_b^2` and
    :math:`c^{l+1} q^{l+1} = \sigma_w^2 K^l + \sigma_b^2` with :math:`K^l = \mathbb E[\phi(u_1)\phi(u_2)]`.
    Backward (gradient independence, Schoenholz et al. 2017),

    .. math:: \Delta^L = \dot K^L,\qquad \Delta^l = \sigma_w^2\,\dot K^l\,\Delta^{l+1},

    with :math:`\dot K^l` from :func:`ste_derivative_kernel` at :math:`(q^l, c^l)`. The NTK of the
    empirical kernel (:func:`empirical_ntk`) divided by the width ``n`` tends to

    .. math:: \frac{\Theta(x, x')}{n} = \sum_{l=2}^{L}\Bigl(K^{l-1} + \tfrac1n\Bigr)\Delta^l
              + K^L + \tfrac1n + \frac{n_{\rm in}}{n}\,c^0\,\Delta^1,

    the terms of the hidden weights, the biases, the readout and the first layer; with
    ``width=None`` only the terms that survive :math:`n\to\infty` are kept (the first sum without
    ``1/n``, and :math:`K^L`).

    Parameters
    ----------
    activation : QuantizedActivation or int
        ``N`` in [2, 2^22] means ``QuantizedActivation(N)``.
    sigma_w : float in [1e-100, 1e100]
    depth : int in [1, 100000]
        Hidden layers ``L``.
    c0 : array_like in [-1, 1]
        Cosines of the input pairs; ``c0 = 1`` gives the diagonal.
    sigma_b : float in [0, 1e100]
    q1 : float > 0, optional
        Variance of :math:`h^1` (default :math:`q^*`, as the book layout draws :math:`W^{\rm in}`).
    slope : float >= 0, optional
        STE slope; default :math:`s^* = 1/(\sigma_w\sqrt{\operatorname{erf}(T/\sqrt{2q^*})})`.
    width, n_in : int >= 1, optional
        Both or neither: the finite-width terms above (they are deterministic; the fluctuations
        of a finite network, of order :math:`1/\sqrt n`, are not modelled).

    Returns
    -------
    SteNTK
        Its ``grad_corr`` is NaN where no gradient reaches layer ``l``, :math:`\Delta^l(x, x) = 0`.

    Examples
    --------
    >>> k = ste_ntk(4, 1.0, 3, [0.0, 1.0])
    >>> bool(abs(k.theta_off[1] - k.theta_diag) < 1e-12)   # c0 = 1 is the diagonal
    True
    """
    from .maps import _q_star_checked

    act = _as_quantized_activation(activation)
    sw, sb = check_sigmas(sigma_w, sigma_b, allow_array=False)
    sw, sb = float(sw), float(sb)
    depth = check_int_range(depth, "depth", 1, MAX_DEPTH, " (hidden layers)")
    c0 = check_correlation(c0, "c0")
    if (width is None) != (n_in is None):
        raise ValueError(f"width and n_in must be given together (both or neither), got width={width!r}, n_in={n_in!r}")
    if width is not None:
        width = check_int_range(width, "width", 1, 10**9, " (units per hidden layer)")
        n_in = check_int_range(n_in, "n_in", 1, 10**9, " (input features)")
    q_star = _q_star_checked(act, sw, sb)
    clip = _clip_of(act)
    q1 = q_star if q1 is None else float(check_positive(q1, "q1", allow_array=False))
    if not 1e-300 <= q1 <= 1e300:
        raise ValueError(f"q1 must lie in [1e-300, 1e300], got {q1!r}")
    if slope is None:   # finite and > 0: clip / sqrt(2 q*) >= 1e-250, far from erf's underflow
        slope = 1.0 / (sw * math.sqrt(float(special.erf(clip / math.sqrt(2.0 * q_star)))))
    else:
        slope = float(check_nonnegative(slope, "slope", allow_array=False))
    if slope > 1e150 or sw * slope > 1e150:
        raise ValueError(f"slope must be at most 1e150 / max(1, sigma_w) (chi_1 stays within float64), got {slope!r}")

    qs, cs, k_off, k_diag, kd_off, kd_diag = _forward_layers(act, sw, sb, q1, c0, depth, clip, slope)
    grad_diag = np.empty(depth)
    grad_off = np.empty((depth,) + c0.shape)
    grad_diag[-1], grad_off[-1] = kd_diag[-1], kd_off[-1]
    extra = 0.0 if width is None else 1.0 / width
    # the backward product grows like chi_1^depth: overflow is checked once, below, not warned about
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(depth - 2, -1, -1):
            grad_diag[l] = sw * sw * kd_diag[l] * grad_diag[l + 1]
            grad_off[l] = sw * sw * kd_off[l] * grad_off[l + 1]
        theta_diag = sum((k_diag[l - 1] + extra) * grad_diag[l] for l in range(1, depth)) + k_diag[-1] + extra
        theta_off = sum((k_off[l - 1] + extra) * grad_off[l] for l in range(1, depth)) + k_off[-1] + extra
        if width is not None:
            theta_diag = theta_diag + n_in / width * grad_diag[0]
            theta_off = theta_off + n_in / width * c0 * grad_off[0]
    if not (np.isfinite(grad_diag).all() and np.isfinite(grad_off).all() and np.isfinite(theta_diag)
            and np.isfinite(theta_off).all()):
        raise ValueError(f"slope, sigma_w and depth must keep the gradient product chi_1^l and the kernel within "
                         f"float64; they overflow at slope={slope!r}, sigma_w={sw!r}, depth={depth} "
                         f"(lower slope or depth)")
    with np.errstate(invalid="ignore", divide="ignore"):
        grad_corr = grad_off / grad_diag.reshape((depth,) + (1,) * c0.ndim)
    theta_off = np.asarray(theta_off, dtype=float)
    return SteNTK(np.array(qs), np.array(cs), grad_diag, grad_off, grad_corr, float(theta_diag),
                  theta_off[()] if theta_off.ndim == 0 else theta_off)
