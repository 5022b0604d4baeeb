r"""Torch simulations of wide random networks, many at once, on the GPU when there is one.

A network of depth ``L`` and width ``n``: :math:`h^{l} = W^{l}\phi(h^{l-1}) + b^{l}` with
:math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/n)` and :math:`b_i\sim\mathcal N(0,\sigma_b^2)`, for
``l = 1..L``, started from pre-activations ``h^0`` that we draw (or are given). ``n_nets``
independent networks run together as one batched matrix product per layer.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._common import torch_generator
from ._progress import progress as _progress
from ._validate import (_as_float_array, check_bool, check_choice, check_correlation, check_int, check_positive, check_seed,
                        check_sigmas)
from .activations import get_activation
from .maps import fixed_point_q

__all__ = ["default_device", "SimulationResult", "simulate_correlations", "circle_inputs", "simulate_covariance", "WEIGHTS"]


def default_device(device=None):
    """``device`` as a ``torch.device``; ``None`` picks CUDA when it is available.

    ``device`` is ``None``, a ``torch.device`` or a device string such as ``"cpu"`` or
    ``"cuda:0"``; a CUDA device must be available.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be None, a torch.device or a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device must be None, a torch.device or a string such as 'cpu' or 'cuda:0', "
                         f"got {device!r} ({exc})") from None
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"device must be available: {dev} is not ({torch.cuda.device_count()} CUDA devices here)")
    return dev


#: the most layers, units and networks a simulation takes (far beyond any use; they keep loops finite)
MAX_DEPTH, MAX_WIDTH, MAX_NETS = 10**6, 2**20, 2**20


def _dtype(dtype):
    """``dtype`` (default float32), which must be a torch floating-point dtype."""
    import torch

    if dtype is None:
        return torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be None or a torch floating-point dtype such as torch.float64, got {dtype!r}")
    return dtype


def _check_variance(q0, dtype, name="q0"):
    """Require h^2 ~ q0 to stay clear of under- and overflow in ``dtype``."""
    import torch

    info = torch.finfo(dtype)
    lo, hi = 1e3 * info.tiny, 1e-3 * info.max
    if not lo <= q0 <= hi:
        raise ValueError(f"{name} must lie in [{lo:.3g}, {hi:.3g}] for {dtype} (squared pre-activations must "
                         f"neither underflow nor overflow), got {q0!r}")


def _overflowed(values, dtype, sigma_w, sigma_b, ratios=()):
    """A ValueError if the recorded statistics overflowed (pre-activations beyond ``dtype``). In
    ``ratios`` (correlations) only inf counts: NaN is 0/0, a net whose pre-activations all vanished."""
    if not np.all(np.isfinite(values)) or np.any(np.isinf(ratios)):
        raise ValueError(f"sigma_w={sigma_w} and sigma_b={sigma_b} must keep the pre-activations within the range "
                         f"of {dtype}: they overflowed (use torch.float64 or a smaller sigma_w)")


@dataclasses.dataclass
class SimulationResult:
    """Per-layer empirical statistics of :func:`simulate_correlations`.

    Attributes
    ----------
    q, c : ndarray, shape (depth + 1,)
        Pre-activation variance (mean over units, both inputs and nets) and correlation of the
        two inputs (mean over nets), layer 0 being the input pre-activations.
    q_sem, c_sem : ndarray, shape (depth + 1,)
        Standard errors of those means over the ``n_nets`` networks.
    q_nets, c_nets : ndarray, shape (n_nets, depth + 1)
        The per-network values.
    """

    q: np.ndarray
    c: np.ndarray
    q_sem: np.ndarray
    c_sem: np.ndarray
    q_nets: np.ndarray
    c_nets: np.ndarray


#: weight distributions of unit variance that the simulations can draw (scaled by sigma_w / sqrt(n))
WEIGHTS = ("gaussian", "binary", "uniform")


def _check_distribution(weights):
    """The name of a weight distribution, one of :data:`WEIGHTS`."""
    return check_choice(weights, "weights", WEIGHTS)


def _unit_weights(shape, weights, gen, device, dtype):
    """i.i.d. entries of mean 0 and variance 1: standard normal, +-1 with equal odds, or uniform on [-sqrt 3, sqrt 3]."""
    import torch

    if weights == "gaussian":
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)
    if weights == "binary":
        return torch.randint(0, 2, shape, generator=gen, device=device).to(dtype).mul_(2).sub_(1)
    return torch.rand(*shape, generator=gen, device=device, dtype=dtype).mul_(2).sub_(1).mul_(math.sqrt(3.0))


def _layer(h, act, sigma_w, sigma_b, gen, weights="gaussian"):
    """One random layer for a batch of nets: h has shape (n_nets, width, n_inputs)."""
    import torch

    n_nets, width, _ = h.shape
    w = _unit_weights((n_nets, width, width), weights, gen, h.device, h.dtype)
    out = torch.bmm(w, act(h)).mul_(sigma_w / math.sqrt(width))
    if sigma_b > 0:
        out += sigma_b * torch.randn(n_nets, width, 1, generator=gen, device=h.device, dtype=h.dtype)
    return out


def simulate_correlations(activation, sigma_w, sigma_b, *, depth, width, c0, q0=None, n_nets=16,
                          seed=0, device=None, dtype=None, progress=False, weights="gaussian"):
    r"""Propagate two inputs of correlation ``c0`` through ``n_nets`` random networks.

    Parameters
    ----------
    activation : str, Activation or callable
    sigma_w, sigma_b : float
    depth, width : int
        Number of random layers and their width.
    c0 : float
        Correlation of the two input pre-activations, in [-1, 1].
    q0 : float, optional
        Their variance; by default the fixed point :math:`q^*` so that only ``c`` evolves.
    n_nets : int
        Independent networks, simulated together.
    seed : int
        Seed of the torch generator: equal seeds give equal results on the same device.
    device : str or torch.device, optional
        ``None`` uses CUDA when available.
    dtype : torch.dtype, optional
        ``torch.float32`` by default (float64 when you need more than ~1e-6).
    weights : {"gaussian", "binary", "uniform"}
        Distribution of the weights :math:`W_{ij} = \sigma_w\,\xi_{ij}/\sqrt n`, with i.i.d.
        :math:`\xi_{ij}` of mean 0 and variance 1: standard normal (default), :math:`\pm 1` with
        equal odds, or uniform on :math:`[-\sqrt3, \sqrt3]`. The mean-field maps depend on the
        weights only through their variance (the central limit theorem needs no more), so all
        three follow the same maps as the width grows. Biases are Gaussian. Binary weights are those
        a BinaryConnect network deploys at initialization (the signs of a Gaussian buffer, at the same
        variance; :mod:`qmf_lite.weights`). At finite width the law shows: with a quantized activation
        binary weights put the pre-activations on a lattice and shift :math:`q^l` by a correction of
        order :math:`n^{-1/2}` (a few percent at width 1024 for a 4-level activation), which Gaussian
        weights do not. Compare ``q`` as well as ``c``.

    Returns
    -------
    SimulationResult
        Compare with :func:`qmf_lite.iterate_maps` (``q0``, ``c0``): at width ``n`` the empirical
        values scatter around it by ``O(1/sqrt(n))`` per net. A net whose pre-activations all
        vanish (the signal died) has ``c`` NaN from that layer on. Pre-activations that overflow
        ``dtype`` are a ``ValueError``, and so is a ``q0`` whose square would under- or overflow it.
    """
    import torch

    act = get_activation(activation)
    sigma_w, sigma_b = map(float, check_sigmas(sigma_w, sigma_b, allow_array=False))
    given_q0 = q0 is not None
    depth = check_int(depth, "depth", 0, MAX_DEPTH)
    width = check_int(width, "width", 1, MAX_WIDTH)
    n_nets = check_int(n_nets, "n_nets", 1, MAX_NETS)
    c0 = float(check_correlation(c0, "c0", allow_array=False))
    weights = _check_distribution(weights)
    q0 = float(fixed_point_q(act, sigma_w, sigma_b)) if q0 is None else float(check_positive(q0, "q0", allow_array=False))
    if not (0 < q0 < np.inf):
        raise ValueError(f"q0 must be finite and > 0; the fixed point here is q* = {q0}, pass q0 explicitly")
    dev = default_device(device)
    dtype = _dtype(dtype)
    _check_variance(q0, dtype, "q0" if given_q0 else f"q0 (here q* of sigma_w={sigma_w:g}, sigma_b={sigma_b:g})")
    progress = check_bool(progress, "progress")
    gen = torch_generator(check_seed(seed), dev, allow_none=False)
    z = torch.randn(n_nets, width, 2, generator=gen, device=dev, dtype=dtype)
    h = torch.empty_like(z)
    h[..., 0] = z[..., 0]
    h[..., 1] = c0 * z[..., 0] + math.sqrt(max(0.0, 1 - c0 * c0)) * z[..., 1]
    h *= math.sqrt(q0)
    qs, cs = [], []

    def record(h):
        sq = (h * h).mean(dim=1)                                   # (n_nets, 2)
        qs.append(sq.mean(dim=1))
        cs.append((h[..., 0] * h[..., 1]).mean(dim=1) / (sq[:, 0].sqrt() * sq[:, 1].sqrt()))  # no q^2: no overflow

    layers = _progress(range(depth), progress, desc="layers")
    with torch.no_grad():
        record(h)
        for _ in layers:
            h = _layer(h, act, sigma_w, sigma_b, gen, weights)
            record(h)
    q_nets = torch.stack(qs, dim=1).double().cpu().numpy()
    c_nets = torch.stack(cs, dim=1).double().cpu().numpy()
    _overflowed(q_nets, dtype, sigma_w, sigma_b, c_nets)
    sem = lambda x: x.std(axis=0, ddof=1) / math.sqrt(n_nets) if n_nets > 1 else np.full(x.shape[1], np.nan)  # noqa: E731
    return SimulationResult(q_nets.mean(0), c_nets.mean(0), sem(q_nets), sem(c_nets), q_nets, c_nets)


def circle_inputs(n_points, width, q0=1.0, seed=0):
    r"""Input pre-activations on a circle: :math:`h^0(\theta) = \sqrt{q_0}(\cos\theta\, g_1 + \sin\theta\, g_2)`.

    ``g1, g2`` are orthonormalised Gaussian vectors scaled to norm ``sqrt(width)``, so that each
    input has variance exactly ``q0`` and two inputs at angle :math:`\Delta\theta` have
    correlation exactly :math:`\cos\Delta\theta`.

    Returns
    -------
    theta : ndarray, shape (n_points,)
    h0 : ndarray, shape (width, n_points)
    """
    n_points = check_int(n_points, "n_points", 1, MAX_WIDTH)
    width = check_int(width, "width", 2, MAX_WIDTH)
    q0 = float(check_positive(q0, "q0", allow_array=False))
    rng = np.random.default_rng(check_seed(seed))
    g, _ = np.linalg.qr(rng.standard_normal((width, 2)))
    g *= math.sqrt(width)
    theta = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    h0 = math.sqrt(q0) * (np.outer(g[:, 0], np.cos(theta)) + np.outer(g[:, 1], np.sin(theta)))
    return theta, h0


def simulate_covariance(activation, sigma_w, sigma_b, h0, *, layers, n_nets=1, seed=0, device=None,
                        dtype=None, progress=False, post_activation=False, weights="gaussian"):
    r"""Empirical covariance :math:`h^{l\top} h^{l} / n` of many inputs at the chosen layers.

    Parameters
    ----------
    h0 : array_like, shape (width, n_inputs)
        Input pre-activations (e.g. from :func:`circle_inputs`).
    layers : sequence of int
        Layers at which to record; the deepest sets the depth.
    post_activation : bool
        Record the covariance of the activations, :math:`\phi(h^l)^\top\phi(h^l)/n` (whose
        mean-field value is the kernel :math:`K(q^l, c^l)`), in place of the pre-activations'.
        At layer 0 this is :math:`\phi(h^0)`.
    weights : {"gaussian", "binary", "uniform"}
        The weight distribution, as in :func:`simulate_correlations`.

    Returns
    -------
    dict
        ``{layer: ndarray (n_inputs, n_inputs)}``, averaged over ``n_nets`` networks.
    """
    import torch

    act = get_activation(activation)
    sigma_w, sigma_b = map(float, check_sigmas(sigma_w, sigma_b, allow_array=False))
    n_nets = check_int(n_nets, "n_nets", 1, MAX_NETS)
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ValueError(f"layers must be a non-empty sequence of integers in [0, {MAX_DEPTH}], got {layers!r}")
    layers = sorted({check_int(l, "layers", 0, MAX_DEPTH) for l in layers})
    if not layers:
        raise ValueError(f"layers must be a non-empty sequence of integers in [0, {MAX_DEPTH}], got none")
    h0 = _as_float_array(h0, "h0")
    if h0.ndim != 2 or h0.shape[0] < 1 or h0.shape[1] < 1 or not np.all(np.isfinite(h0)):
        raise ValueError(f"h0 must be a finite 2-d array of shape (width, n_inputs), got shape {h0.shape}")
    weights = _check_distribution(weights)
    dev = default_device(device)
    dtype = _dtype(dtype)
    peak = float(np.abs(h0).max())
    _check_variance(peak * peak if peak > 0 else 1.0, dtype, "h0**2")
    progress = check_bool(progress, "progress")
    post_activation = check_bool(post_activation, "post_activation")
    gen = torch_generator(check_seed(seed), dev, allow_none=False)
    h = torch.as_tensor(np.asarray(h0), dtype=dtype, device=dev).expand(n_nets, -1, -1).contiguous()
    width = h.shape[1]
    out = {}

    def record(l, h):
        if l in layers:
            a = act(h) if post_activation else h
            out[l] = (a.transpose(1, 2) @ a / width).mean(0).double().cpu().numpy()

    steps = _progress(range(1, layers[-1] + 1), progress, desc="layers")
    with torch.no_grad():
        record(0, h)
        for l in steps:
            h = _layer(h, act, sigma_w, sigma_b, gen, weights)
            record(l, h)
    _overflowed(np.concatenate([c.ravel() for c in out.values()]), dtype, sigma_w, sigma_b)
    return out
