r"""Quantized MLPs trained with SGD, many at once, and a cached, memory-budgeted grid runner.

A batch of ``B`` networks of equal depth and width is stored as stacked weight tensors and run
with batched matrix products, so a grid over levels, weight scales and seeds costs one forward
pass per depth and chunk. Each network has its own activation, straight-through slope
(:mod:`qmf_lite.ste`), initialization seed and order of minibatches; a network computes the same
numbers whether it trains alone or beside others.

Two layouts (``layout=``):

``"book"`` (default): ``depth`` counts the hidden pre-activations :math:`h^1..h^L`,

.. math:: h^1 = W^{\rm in} x,\quad h^{l+1} = W^{l+1}\phi(h^l) + b^{l+1},\quad
          f(x) = W^{\rm out}\phi(h^L) + b^{\rm out},

with :math:`W^{\rm in}_{ij}\sim\mathcal N(0, q^*/n_{\rm in})` (inputs standardised, so that
:math:`h^1` starts at the fixed point), :math:`W^{l}_{ij}\sim\mathcal N(0,\sigma_w^2/n)`, biases
:math:`\mathcal N(0,\sigma_b^2)`, and an unquantized readout :math:`\mathcal N(0, 1/n)`.

``"bgs19"``: the network of Blumenfeld, Gilboa & Soudry (2019) as in their public code
(``src/mnist.py``): ``depth`` counts the linear layers, :math:`784\to n`, ``depth - 2`` times
:math:`n\to n`, :math:`n\to 10`, every weight :math:`\mathcal N(0,\sigma_w^2/\text{fan-in})`,
every bias :math:`\mathcal N(0,\sigma_b^2)`, the mean-field convention of the book (their code
divides the bias's standard deviation by :math:`\sqrt{\text{fan-in}}` too; the two agree at
:math:`\sigma_b = 0`, the setting of their Fig. 3), and the quantized
activation after every layer *including the last*: the logits themselves are quantized before
the softmax,

.. math:: h^1 = W^1 x + b^1,\quad h^{l+1} = W^{l+1}\phi(h^l) + b^{l+1}\ (l < L),\quad f(x) = \phi(h^L).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch

from . import _cache
from ._common import limit_threads
from ._progress import progress as _progress
from ._validate import (MAX_LR, check_bool, check_callable, check_choice, check_int, check_int_range,
                        check_int_sequence, check_momentum,
                        check_levels, check_nonnegative, check_positive, check_real_array, check_real_in, check_seed,
                        check_sequence, check_sigmas)
from .activations import MAX_STORED_LEVELS, QuantizedActivation
from .maps import fixed_point_q
from .simulate import default_device
from .ste import _check_slope, _table_tensors, staircase_tables, ste_clip, ste_lookup, ste_slope
from .tradeoff import optimal_init

__all__ = ["NetSpec", "QuantizedMLPBatch", "train", "TrainRecord", "run_grid", "GridResult", "halfway_depth",
           "bgs19_lr", "learning_rate", "training_memory", "training_flops", "memory_budget", "LAYOUTS",
           "PRECISIONS", "SEEDINGS", "UPDATES"]

#: network layouts of :class:`QuantizedMLPBatch`
LAYOUTS = ("book", "bgs19")
#: matmul precisions of :func:`qmf_lite.train`: full fp32, TF32 tensor cores (CUDA only), bf16 autocast,
#: and 3xTF32 (about fp32's accuracy on tensor cores; ``update="fused"`` only, CUDA only)
PRECISIONS = ("fp32", "tf32", "bf16", "tf32x3")
#: the SGD updates of :func:`qmf_lite.train` and :func:`qmf_lite.run_grid` (their ``update``): ``torch.optim.SGD``,
#: or :class:`~qmf_lite.FusedSGD`
UPDATES = ("torch", "fused")
#: rows per forward pass when accuracy is evaluated
EVAL_BATCH = 2048
#: version of the cached grid entries (4: one entry per network)
_SCHEMA = 4
#: the most layers, units per layer, input features or outputs, recorded SGD steps and threads of a
#: network or a grid (far beyond any use; they keep allocations and loops finite)
MAX_DEPTH, MAX_WIDTH, MAX_FEATURES, MAX_STEPS, MAX_WORKERS = 10**5, 2**20, 2**24, 10**9, 1024


def _check_layer_sizes(depth, width, n_in, n_out, layout):
    layout = check_choice(layout, "layout", LAYOUTS)
    depth = check_int_range(depth, "depth", 2 if layout == "bgs19" else 1, MAX_DEPTH)
    width = check_int_range(width, "width", 1, MAX_WIDTH)
    n_in = check_int_range(n_in, "n_in", 1, MAX_FEATURES)
    n_out = check_int_range(n_out, "n_out", 1, MAX_FEATURES)
    return depth, width, n_in, n_out, layout


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """One network of a batch: its activation, initialization and seed (``slope=None``: chi_1 = 1).

    ``levels`` is an integer in [2, 2^22]; ``sigma_w`` in [1e-100, 1e100] and ``sigma_b`` in
    [0, 1e100]; ``seed`` an integer in [0, 2^63 - 1]; ``slope`` ``None`` or in [0, min(1e150, 1e150 / sigma_w)];
    ``spacing`` the raw threshold spacing ``D`` in [1e-100, 1e100] (``None``:
    ``2 scale / (levels - 1)``); ``scale`` in [1e-100, 1e100]. The values are stored in one form,
    integers as ``int`` and the rest as ``float`` (``None`` stays ``None``), because they enter the cache
    key and the seeds of the data order: ``NetSpec(4.0, 1)`` and ``NetSpec(np.int64(4), 1.0)`` are
    ``NetSpec(4, 1.0)``, the same network with the same seeds.

    >>> NetSpec(4.0, 1) == NetSpec(4, 1.0)
    True
    """

    levels: int
    sigma_w: float
    sigma_b: float = 0.0
    seed: int = 0
    slope: float | None = None
    spacing: float | None = None
    scale: float = 1.0

    def __post_init__(self):
        levels = check_levels(self.levels, maximum=MAX_STORED_LEVELS)
        sigma_w, sigma_b = (float(v) for v in check_sigmas(self.sigma_w, self.sigma_b, allow_array=False))
        seed = check_seed(self.seed)
        slope = spacing = None
        if self.slope is not None:   # 0 is allowed: the true derivative of the steps, almost everywhere
            slope = _check_slope(self.slope, sigma_w)
        if self.spacing is not None:
            spacing = float(check_positive(self.spacing, "spacing", allow_array=False))
        scale = QuantizedActivation(levels, spacing, self.scale).scale   # spacing and scale in range, together
        _store(self, levels, sigma_w, sigma_b, seed, slope, spacing, scale)

    @classmethod
    def optimal(cls, levels, seed=0, **kw):
        """The network initialised by :func:`qmf_lite.optimal_init` for its own ``spacing`` and ``scale``.

        >>> round(NetSpec.optimal(4, spacing=0.3).sigma_w, 3)
        0.479
        """
        init = optimal_init(levels, scale=kw.get("scale", 1.0), spacing=kw.get("spacing"))
        return cls(levels, init.sigma_w, 0.0, seed, **kw)


def _store(spec, levels, sigma_w, sigma_b, seed, slope, spacing, scale):
    """Set the fields of ``spec`` to checked values in their one form: ``int`` levels and seed, ``float`` for the
    rest (``None`` stays ``None``)."""
    maybe = (lambda v: None if v is None else float(v))
    for name, value in (("levels", int(levels)), ("sigma_w", float(sigma_w)), ("sigma_b", float(sigma_b)),
                        ("seed", int(seed)), ("slope", maybe(slope)), ("spacing", maybe(spacing)),
                        ("scale", float(scale))):
        object.__setattr__(spec, name, value)
    return spec


def _spec(levels, sigma_w, sigma_b=0.0, seed=0, slope=None, spacing=None, scale=1.0):
    """A :class:`NetSpec` of values checked at the door, built without checking them again (in its one form)."""
    return _store(object.__new__(NetSpec), levels, sigma_w, sigma_b, seed, slope, spacing, scale)


def _optimal_spec(levels, seed):
    """``NetSpec.optimal(levels, seed)`` for checked ``levels`` and ``seed``."""
    return _spec(levels, optimal_init(levels, scale=1.0, spacing=None).sigma_w, 0.0, seed)


def bgs19_lr(depth):
    """The paper's learning rate: ``1e-3`` below 100 layers, ``5e-4`` from 100 (``pick_lr`` in its code).

    ``depth`` is an integer >= 1.

    >>> bgs19_lr(10), bgs19_lr(110)
    (0.001, 0.0005)
    """
    return 1e-3 if check_int(depth, "depth", 1) < 100 else 5e-4


_LR_RULES = {"bgs19": bgs19_lr}


def learning_rate(lr, depth):
    """The learning rate at ``depth``: ``lr`` itself (a number), a named rule (``"bgs19"``), or ``lr(depth)``.

    The rate must be finite, > 0 and at most ``MAX_LR`` (float32's largest number, 3.4e38);
    ``depth`` is an integer >= 1.

    >>> learning_rate("bgs19", 120), learning_rate(0.1, 3)
    (0.0005, 0.1)
    """
    return _learning_rate(lr, check_int(depth, "depth", 1))


def _learning_rate(lr, depth):
    """:func:`learning_rate` at a checked ``depth`` (the rate itself is checked here: a rule may give any value)."""
    if isinstance(lr, str):
        if lr not in _LR_RULES:
            raise ValueError(f"lr must be a number, a callable of the depth or one of {sorted(_LR_RULES)}, got {lr!r}")
        lr = _LR_RULES[lr]
    value = lr(depth) if callable(lr) else lr
    value = float(check_positive(value, "lr", allow_array=False))
    if value > MAX_LR:
        raise ValueError(f"lr must be at most {MAX_LR:.4g} (float32's largest number), got {value!r}")
    return value


class QuantizedMLPBatch(torch.nn.Module):
    """``len(specs)`` quantized MLPs of the same depth and width, evaluated together.

    ``forward(x)`` takes ``x`` of shape ``(batch, features)`` (shared) or
    ``(B, batch, features)`` (one minibatch per network) and returns logits ``(B, batch, n_out)``.

    Parameters
    ----------
    specs : sequence of NetSpec
        At least one; each network's values (``sigma_w``, ``slope``, ``q*``, ...) must fit ``dtype``.
    n_in, n_out : int in [1, 2^24]
    depth : int
        ``layout="book"``: hidden layers (in [1, 10^5]); ``layout="bgs19"``: linear layers (in [2, 10^5]).
    width : int in [1, 2^20]
    device, dtype
        Where and in which floating-point type (a floating-point ``torch.dtype``; ``None``: torch's
        default) the parameters live.
    layout : ``"book"`` or ``"bgs19"``
        See the module docstring.

    Each network draws its parameters from its own generator, seeded with ``spec.seed``, on
    ``device``, in a fixed order (input layer, hidden weights, hidden biases, output layer), so
    that its initialization does not depend on the other networks of the batch.
    """

    def __init__(self, specs, n_in, n_out, depth, width, device=None, dtype=torch.float32, layout="book"):
        super().__init__()
        depth, width, n_in, n_out, layout = _check_layer_sizes(depth, width, n_in, n_out, layout)
        specs = check_sequence(specs, "specs")
        for i, spec in enumerate(specs):
            if not isinstance(spec, NetSpec):
                raise ValueError(f"specs must be a sequence of NetSpec, got {spec!r} at index {i}")
        if dtype is None:
            dtype = torch.get_default_dtype()
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch dtype (torch.float32, torch.float64, ...) or "
                             f"None, got {dtype!r}")
        self._build(specs, n_in, n_out, depth, width, default_device(device), dtype, layout)

    @classmethod
    def _unchecked(cls, specs, n_in, n_out, depth, width, device, dtype, layout):
        """The batch of checked arguments (a list of NetSpec, a ``torch.device``): what the package builds."""
        model = cls.__new__(cls)
        torch.nn.Module.__init__(model)
        model._build(specs, n_in, n_out, depth, width, device, dtype, layout)
        return model

    def _build(self, specs, n_in, n_out, depth, width, dev, dtype, layout):
        """Store the networks' activation tables and draw their parameters (arguments checked)."""
        self.layout, self.specs, self.depth, self.width = layout, specs, depth, width
        q_star = self._register_activations(dev, dtype)
        self._draw_parameters(q_star, n_in, n_out, dev, dtype)

    def _register_activations(self, dev, dtype):
        """Each network's activation, STE slope and clip, weight scales and q* as ``(B, 1, 1)`` buffers, and the
        staircases' thresholds and values; a ValueError when one of them does not fit ``dtype``. Returns q*."""
        B = len(self.specs)
        acts = [QuantizedActivation(s.levels, s.spacing, s.scale) for s in self.specs]
        q_star = [float(fixed_point_q(a, s.sigma_w, s.sigma_b)) for a, s in zip(acts, self.specs)]
        slopes = [ste_slope(a, s.sigma_w, s.sigma_b) if s.slope is None else s.slope for a, s in zip(acts, self.specs)]
        fmax = torch.finfo(dtype).max
        for name, vals in (("sigma_w", [s.sigma_w for s in self.specs]), ("sigma_b", [s.sigma_b for s in self.specs]),
                           ("scale", [a.scale for a in acts]), ("slope", slopes), ("q*", q_star),
                           ("clip", [ste_clip(a) for a in acts])):
            for b, v in enumerate(vals):
                if not abs(float(v)) <= fmax:
                    what = "its sigma_w and sigma_b must give a q*" if name == "q*" else f"its {name} must be"
                    raise ValueError(f"specs[{b}]: {what} at most {fmax!r} to be stored in {dtype}, got "
                                     f"{name} = {float(v)!r}")
        col = lambda v: torch.tensor(v, dtype=dtype, device=dev).view(B, 1, 1)  # noqa: E731
        for name, v in (("levels", [a.levels for a in acts]), ("spacing", [a.spacing for a in acts]),
                        ("scale", [a.scale for a in acts]), ("slope", slopes), ("clip", [ste_clip(a) for a in acts]),
                        ("sigma_w", [s.sigma_w for s in self.specs]), ("sigma_b", [s.sigma_b for s in self.specs]),
                        ("q_star", q_star)):
            self.register_buffer(name, col(v))
        g, v = _table_tensors(*staircase_tables([a.levels for a in acts], [a.spacing for a in acts],
                                                [a.scale for a in acts]), dtype, dev)
        self.register_buffer("thresholds", g)
        self.register_buffer("values", v)
        return q_star

    def _draw_parameters(self, q_star, n_in, n_out, dev, dtype):
        """Each network's weights and biases from its own generator (seeded with ``spec.seed``), in a fixed
        order: input layer, hidden weights, hidden biases, output layer (see the class docstring)."""
        bgs, B, width = self.layout == "bgs19", len(self.specs), self.width
        n_hidden = self.depth - 2 if bgs else self.depth - 1
        sw = [s.sigma_w for s in self.specs]
        std_in = [w / math.sqrt(n_in) for w in sw] if bgs else [math.sqrt(q / n_in) for q in q_star]
        std_out = [w / math.sqrt(width) for w in sw] if bgs else [1 / math.sqrt(width)] * B
        empty = lambda *shape: torch.empty(B, *shape, device=dev, dtype=dtype)  # noqa: E731
        w_in = empty(n_in, width)
        b_in = empty(1, width) if bgs else None
        weights = [empty(width, width) for _ in range(n_hidden)]
        biases = [empty(1, width) for _ in range(n_hidden)]
        w_out, b_out = empty(width, n_out), empty(1, n_out)
        for b, spec in enumerate(self.specs):
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(spec.seed))
            draw = lambda t, std: t[b].normal_(0.0, 1.0, generator=gen).mul_(std)  # noqa: E731
            draw(w_in, std_in[b])
            for w in weights:
                draw(w, spec.sigma_w / math.sqrt(width))
            for bias in biases:
                draw(bias, spec.sigma_b)
            draw(w_out, std_out[b])
            if bgs:
                draw(b_in, spec.sigma_b)
                draw(b_out, spec.sigma_b)
            else:
                b_out[b].zero_()
        P = torch.nn.Parameter
        self.w_in = P(w_in)
        self.b_in = P(b_in) if bgs else None
        self.weights = torch.nn.ParameterList([P(w) for w in weights])
        self.biases = torch.nn.ParameterList([P(bias) for bias in biases])
        self.w_out = P(w_out)
        self.b_out = P(b_out)

    def phi(self, h):
        """The quantized activation of each network (STE backward), ``h`` of shape ``(B, ...)``."""
        return ste_lookup(h, self.thresholds, self.values, self.slope, self.clip)

    def _first(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(self.specs), -1, -1)
        return torch.bmm(x, self.w_in) if self.b_in is None else torch.baddbmm(self.b_in, x, self.w_in)

    def preactivations(self, x):
        """The list ``[h^1, ..., h^L]``, each of shape ``(B, batch, width)`` (``bgs19``: the last ``(B, batch, n_out)``)."""
        hs = [self._first(x)]
        for w, b in zip(self.weights, self.biases):
            hs.append(torch.baddbmm(b, self.phi(hs[-1]), w))
        if self.layout == "bgs19":
            hs.append(torch.baddbmm(self.b_out, self.phi(hs[-1]), self.w_out))
        return hs

    def readout(self, h_last):
        r"""Logits from the last pre-activations, ``(B, batch, n_out)``.

        ``book``: :math:`\phi(h^L) W^{\rm out} + b^{\rm out}`; ``bgs19``: :math:`\phi(h^L)`.
        """
        if self.layout == "bgs19":
            return self.phi(h_last)
        return torch.baddbmm(self.b_out, self.phi(h_last), self.w_out)

    def forward(self, x):
        h = self._first(x)                     # the same as readout(preactivations(x)[-1]),
        for w, b in zip(self.weights, self.biases):  # without holding every layer
            h = torch.baddbmm(b, self.phi(h), w)
        if self.layout == "bgs19":
            h = torch.baddbmm(self.b_out, self.phi(h), self.w_out)
        return self.readout(h)

    def _check_output(self, output, allow_none=False):
        """``output`` as an index of a logit, in [0, n_out - 1] (or None when allowed)."""
        if output is None and allow_none:
            return None
        return check_int(output, "output", 0, self.w_out.shape[-1] - 1)

    def preactivation_grads(self, x, output=None):
        r"""Pre-activations :math:`h^l` and the gradients :math:`\partial f/\partial h^l`, through the STE.

        ``f`` is the sum over the inputs of logit ``output`` (of all logits if ``None``). Inputs do
        not interact, so row ``k`` of each gradient is input ``k``'s own gradient
        :math:`\partial f(x_k)/\partial h^l(x_k)`. The parameters' ``.grad`` are left untouched.

        Returns
        -------
        hs, grads : lists of ``depth`` tensors of shape ``(B, batch, width)`` (detached)
        """
        output = self._check_output(output, allow_none=True)
        hs = self.preactivations(x)
        out = self.readout(hs[-1])
        f = out.sum() if output is None else out[..., output].sum()
        grads = torch.autograd.grad(f, hs)
        return [h.detach() for h in hs], [g.detach() for g in grads]

    def gradient_norms(self, x, output=None):
        r""":math:`\|\partial f/\partial h^l\|` for each network and layer ``l = 1..L``: an array ``(B, depth)``.

        See :meth:`preactivation_grads` for ``f``. Through ``L`` layers the squared norm changes on
        average by :math:`\chi_1^L` (chapter on gradients).
        """
        _, grads = self.preactivation_grads(x, output)
        return torch.stack([g.norm(dim=(1, 2)) for g in grads], dim=1).cpu().numpy()


def _layer_shapes(layout, depth, width, n_in, n_out):
    """(fan-in, fan-out, has bias) of each linear layer, input to output."""
    if layout == "bgs19":
        return [(n_in, width, True)] + [(width, width, True)] * (depth - 2) + [(width, n_out, True)]
    return [(n_in, width, False)] + [(width, width, True)] * (depth - 1) + [(width, n_out, True)]


def training_flops(depth, width, n_in, n_out, batch_size, layout="book"):
    """Floating-point operations of one SGD step of one network, and of one evaluated input.

    Counts the matrix products (2 per multiply-add): forward, backward to the activations (none
    below the first layer) and backward to the weights. Elementwise work is left out.

    ``depth``, ``width``, ``n_in``, ``n_out`` and ``layout`` as for :class:`QuantizedMLPBatch`;
    ``batch_size`` an integer in [1, 10^9].

    Returns
    -------
    step_flops, eval_flops_per_input : float

    Examples
    --------
    >>> training_flops(3, 10, 4, 2, 1, layout="bgs19")
    (880.0, 320.0)
    """
    depth, width, n_in, n_out, layout = _check_layer_sizes(depth, width, n_in, n_out, layout)
    batch_size = check_int_range(batch_size, "batch_size", 1, MAX_STEPS)
    return _flops(_layer_shapes(layout, depth, width, n_in, n_out), n_in, width, batch_size)


def _flops(shapes, n_in, width, batch_size):
    """:func:`training_flops` of the layers ``shapes`` (:func:`_layer_shapes`), arguments checked."""
    fwd = sum(2.0 * i * o for i, o, _ in shapes)
    return 3 * fwd * batch_size - 2.0 * n_in * width * batch_size, fwd


def training_memory(depth, width, n_in, n_out, batch_size, *, layout="book", momentum=0.0, eval_batch=EVAL_BATCH,
                    bytes_per_value=4):
    """Bytes that training one network takes on its device (an upper estimate).

    Parameters, their gradients and (with momentum) SGD's momentum buffers; the activations that
    back-propagation keeps (four tensors of ``batch x width`` per layer: the pre-activation, the
    quantized activation, the STE's gain and a temporary); and the forward pass of an evaluation
    batch of ``eval_batch`` inputs (an input, an output and the int64 index of the quantizer's
    look-up, each ``eval_batch x width``).

    ``depth``, ``width``, ``n_in``, ``n_out`` and ``layout`` as for :class:`QuantizedMLPBatch`;
    ``batch_size`` an integer in [1, 10^9], ``eval_batch`` in [0, 10^9] (0: no evaluation);
    ``momentum`` in [0, 1);
    ``bytes_per_value`` an integer in [1, 16].

    >>> training_memory(2, 8, 4, 3, 5, layout="bgs19", momentum=0.5, eval_batch=10)
    4004
    """
    depth, width, n_in, n_out, layout = _check_layer_sizes(depth, width, n_in, n_out, layout)
    batch_size = check_int_range(batch_size, "batch_size", 1, MAX_STEPS)
    eval_batch = check_int_range(eval_batch, "eval_batch", 0, MAX_STEPS)
    momentum = check_momentum(momentum)
    bytes_per_value = check_int_range(bytes_per_value, "bytes_per_value", 1, 16)
    return _memory(_layer_shapes(layout, depth, width, n_in, n_out), width, n_out, batch_size, momentum, eval_batch,
                   bytes_per_value)


def _memory(shapes, width, n_out, batch_size, momentum, eval_batch, bytes_per_value):
    """:func:`training_memory` of the layers ``shapes`` (:func:`_layer_shapes`), arguments checked."""
    n_params = sum(i * o + (o if bias else 0) for i, o, bias in shapes)
    states = 3 if momentum else 2
    acts = 4 * batch_size * width * len(shapes)
    evals = 6 * eval_batch * max(width, n_out)    # input, output and the int64 level index
    return int(bytes_per_value * (states * n_params + acts + evals))


def memory_budget(max_memory, device):
    """Bytes available for training on ``device``: ``max_memory`` itself (a number >= 1, truncated to
    an int), or with ``"auto"`` the device's free memory (``torch.cuda.mem_get_info``; on a CPU the
    available RAM), or ``None`` (no limit).

    >>> memory_budget(2.5e9, "cpu")
    2500000000
    """
    device = default_device(device)
    return _memory_budget(_check_max_memory(max_memory), device)


def _check_max_memory(max_memory):
    """``max_memory`` as ``None``, ``"auto"`` or an int >= 1 (a number of bytes, truncated)."""
    if max_memory is None:
        return None
    if isinstance(max_memory, str):
        if max_memory != "auto":
            raise ValueError(f"max_memory must be a number of bytes > 0, 'auto' or None, got {max_memory!r}")
        return max_memory
    value = float(check_positive(max_memory, "max_memory", allow_array=False))
    if value < 1:
        raise ValueError(f"max_memory must be a number of bytes >= 1, 'auto' or None, got {max_memory!r}")
    return int(value)


def _memory_budget(max_memory, device):
    """:func:`memory_budget` of a checked ``max_memory`` on a ``torch.device``."""
    if max_memory != "auto":
        return max_memory
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _fp32_flags():
    """The objects that hold torch's per-backend float32 precision (``fp32_precision``, torch >= 2.9)."""
    b = torch.backends
    found = []
    for owner, names in ((getattr(b, "cuda", None), ("matmul",)), (getattr(b, "cudnn", None), ("conv", "rnn")),
                         (getattr(b, "mkldnn", None), ("matmul", "conv", "rnn"))):
        for name in names:
            obj = getattr(owner, name, None) if owner is not None else None
            if obj is not None and hasattr(obj, "fp32_precision"):
                found.append(obj)
    return found


@contextlib.contextmanager
def _matmul_precision(mode):
    """Float32 matrix products in ``mode`` (``"ieee"``: exact fp32, ``"tf32"``: TF32 tensor cores) inside,
    whatever was set before (``torch.set_float32_matmul_precision`` included); the settings are restored
    on exit.

    With torch >= 2.9 this sets the per-backend ``fp32_precision`` of cuBLAS matmuls, cuDNN convolutions
    and RNNs and oneDNN (CPU) kernels, which take precedence over the global setting; with older torch
    ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` (and the global
    matmul precision, ``"highest"`` for ieee).
    """
    flags = _fp32_flags()
    if flags:
        old = [f.fp32_precision for f in flags]
        try:
            for f in flags:
                f.fp32_precision = mode
            yield
        finally:
            for f, value in zip(flags, old):
                f.fp32_precision = value
        return
    old = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,  # pragma: no cover
           torch.backends.cudnn.allow_tf32)
    try:                                                                                   # pragma: no cover
        torch.set_float32_matmul_precision("highest" if mode == "ieee" else "high")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
        yield
    finally:                                                                               # pragma: no cover
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[1], old[2]


@contextlib.contextmanager
def _precision(precision, device_type):
    """Set the matmul precision for a training run; yields the context to wrap each forward pass in.

    ``"fp32"`` forces exact float32 products (no TF32, even after
    ``torch.set_float32_matmul_precision("high")`` elsewhere), ``"tf32"`` allows TF32 tensor cores
    (:func:`_matmul_precision`); both restore the previous settings on exit. bf16 autocast must wrap
    each forward pass on its own: autocast caches the bf16 copies of the parameters until its
    context exits, so one context around many steps would keep using the initial weights (the
    products outside autocast stay exact fp32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with _matmul_precision("tf32" if precision == "tf32" else "ieee"):
        if precision == "bf16":
            yield lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        else:
            yield contextlib.nullcontext


#: on a CPU, networks up to this width train on one thread (see :func:`train`)
SMALL_WIDTH = 256


def _stable_seed(*parts):
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


def _data_order(specs, n_train, n_steps, batch_size, seed, depth):
    """Minibatch indices ``(B, n_steps, batch_size)``: each network walks through its own random
    permutations of the training set (one per epoch), seeded from its spec, ``seed`` and ``depth``."""
    n_epochs = -(-n_steps * batch_size // n_train)
    order = torch.empty(len(specs), n_steps * batch_size, dtype=torch.int64)
    for b, spec in enumerate(specs):
        gen = torch.Generator().manual_seed(_stable_seed("order", seed, depth, dataclasses.asdict(spec)))
        order[b] = torch.cat([torch.randperm(n_train, generator=gen) for _ in range(n_epochs)])[:n_steps * batch_size]
    return order.view(len(specs), n_steps, batch_size)


def _eval_sets(data, eval_size, seed, device):
    """The evaluation inputs: the whole splits, or a fixed random subset of ``eval_size`` of each."""
    out = []
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        if eval_size is not None and eval_size < len(y):
            gen = torch.Generator().manual_seed(_stable_seed("eval", seed, len(y)))
            idx = torch.randperm(len(y), generator=gen)[:eval_size].sort().values
            x, y = x[idx.to(x.device)], y[idx.to(y.device)]
        out.append((x.to(device), y.to(device)))
    return out


def _accuracy(model, x, y, eval_batch, amp=contextlib.nullcontext):
    with torch.no_grad():
        correct = torch.zeros(len(model.specs), device=x.device)
        for s in range(0, len(y), eval_batch):
            with amp():
                logits = model(x[s:s + eval_batch])
            correct += (logits.argmax(-1) == y[s:s + eval_batch]).sum(-1)
    return correct / len(y)


def _sgd(params, lr, momentum, device):
    params = list(params)
    if device.type == "cuda" and "fused" in torch.optim.SGD.__init__.__code__.co_varnames:
        try:   # one kernel for every parameter: reads p, grad, buffer; writes p, buffer
            return torch.optim.SGD(params, lr=lr, momentum=momentum, fused=True)
        except (RuntimeError, ValueError, TypeError):  # pragma: no cover - an older or partial CUDA build
            pass
    return torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)


class TrainRecord(dict):
    """``{step: (train_acc, test_acc)}`` (arrays over networks), with the training history.

    Attributes
    ----------
    losses : ndarray, shape (B, steps)
        Each network's minibatch loss at every step.
    seconds : float
        Wall time (device synchronised).
    flops : float
        Matrix-product operations done, training and evaluation (:func:`training_flops`).
    """

    losses = None
    seconds = 0.0
    flops = 0.0

    def __init__(self, accuracy=None):
        """``accuracy``: ``None`` (empty) or a dict ``{step: (train_acc, test_acc)}`` (steps integers >= 0)."""
        accuracy = {} if accuracy is None else accuracy
        if not isinstance(accuracy, dict):
            raise ValueError(f"accuracy must be None or a dict {{step: (train_acc, test_acc)}}, got {accuracy!r}")
        for step, pair in accuracy.items():
            check_int(step, "accuracy", 0)
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError(f"accuracy must map each step to a pair (train_acc, test_acc), got {pair!r}")
        super().__init__(accuracy)


def train(model, data, steps, lr=0.01, batch_size=128, seed=0, progress=False, *, momentum=0.0, eval_size=None,
          eval_batch=EVAL_BATCH, precision="fp32", update="torch"):
    """Train every network of ``model`` with SGD on cross-entropy, in lockstep.

    The loss is the sum over networks of each network's mean minibatch loss, so each network
    receives exactly its own gradient. Network ``b`` draws its minibatches from its own random
    permutations of the training set (epoch after epoch), seeded from its spec, ``seed`` and the
    depth; the indices are drawn before training and live on the device, so the step loop makes
    no host-device copies.

    Parameters
    ----------
    model : QuantizedMLPBatch
    data : qmf_lite.Dataset
        With ``model``'s ``n_in`` features and labels in [0, n_out - 1].
    steps : sequence of int
        Step counts in [0, 10^9] at which train and test accuracy are recorded (0: before
        training); at least one >= 1.
    lr : float, str or callable
        Learning rate: a number, ``"bgs19"`` (:func:`bgs19_lr`) or a function of ``model.depth``
        (see :func:`learning_rate` for the range).
    batch_size : int
        In [1, number of training inputs].
    seed : int
        Base seed of the data orders and of the evaluation subset, in [0, 2^63 - 1].
    progress : bool
    momentum : float in [0, 1)
        SGD momentum (PyTorch's: ``v <- momentum v + g``, ``p <- p - lr v``).
    eval_size : int >= 1, optional
        Evaluate on a fixed random subset of this many training and test inputs (the same for
        every network); default the whole splits.
    eval_batch : int in [1, 10^9]
        Inputs per forward pass when accuracy is evaluated.
    precision : ``"fp32"``, ``"tf32"``, ``"bf16"`` or ``"tf32x3"``
        Matrix-product precision: fp32; TF32 tensor cores (CUDA; a no-op on a CPU); bf16
        autocast (parameters stay fp32); or 3xTF32, three TF32 products per float32 product on
        the tensor cores, about fp32's accuracy (``update="fused"`` only; float32 on a CPU).
    update : ``"torch"`` or ``"fused"``
        ``"torch"``: ``torch.optim.SGD``; ``"fused"``: :class:`~qmf_lite.FusedSGD`, the same update
        with each weight gradient formed inside it (Triton; precision ``"fp32"``, ``"tf32"`` or
        ``"tf32x3"``).

    Returns
    -------
    TrainRecord

    Notes
    -----
    On a CPU, networks of width up to ``SMALL_WIDTH`` (256) train on one thread: their matrix
    products are too small to gain from more, and idle threads waiting on each other cost much
    more than they save on a machine shared with other work.
        """
    run = _train_arguments(model, data, steps, lr, batch_size, seed, progress, momentum, eval_size, eval_batch,
                           precision, update)
    return _train(model, data, run)


@dataclasses.dataclass(frozen=True)
class _TrainRun:
    """The checked settings of one :func:`train` call (``lr``: the rate itself)."""

    steps: list
    lr: float
    batch_size: int
    seed: int
    progress: bool
    momentum: float
    eval_size: int | None
    eval_batch: int
    precision: str
    update: str = "torch"          # "torch" or "fused"


def _check_model_and_data(model, data):
    """``model`` a QuantizedMLPBatch, ``data`` a Dataset with its features and labels."""
    from .data import Dataset

    if not isinstance(model, QuantizedMLPBatch):
        raise ValueError(f"model must be a QuantizedMLPBatch, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a qmf_lite.Dataset, got {type(data).__name__}")
    n_in, n_out = model.w_in.shape[1], model.w_out.shape[-1]
    if data.n_features != n_in or data.x_test.shape[1] != n_in:
        raise ValueError(f"data must have the model's n_in = {n_in} features, got {data.n_features}")
    for y in (data.y_train, data.y_test):
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < n_out:
            raise ValueError(f"data's labels must lie in [0, {n_out - 1}] (the model's n_out = {n_out} classes), "
                             f"got [{int(y.min())}, {int(y.max())}]")
    if len(data.y_train) < 1:
        raise ValueError("data must hold at least one training input")


def _train_arguments(model, data, steps, lr, batch_size, seed, progress, momentum, eval_size, eval_batch, precision,
                     update="torch"):
    """The door of :func:`train`: every argument checked once, as a :class:`_TrainRun`."""
    _check_model_and_data(model, data)
    steps = sorted(set(check_int_sequence(steps, "steps", 0, MAX_STEPS)))
    if steps[-1] < 1:
        raise ValueError(f"steps must contain a step count >= 1, got {steps}")
    batch_size = check_int_range(batch_size, "batch_size", 1, len(data.y_train), " (the training inputs)")
    seed = check_seed(seed)
    progress = check_bool(progress, "progress")
    momentum = check_momentum(momentum)
    if eval_size is not None:
        eval_size = check_int(eval_size, "eval_size", 1)
    eval_batch = check_int_range(eval_batch, "eval_batch", 1, MAX_STEPS)
    precision = check_choice(precision, "precision", PRECISIONS)
    update = check_choice(update, "update", UPDATES)
    _check_precision_and_update(precision, update)
    lr_value = learning_rate(lr, model.depth)
    return _TrainRun(steps, lr_value, batch_size, seed, progress, momentum, eval_size, eval_batch, precision, update)


def _check_precision_and_update(precision, update):
    """The products each update can take: 3xTF32 only in the fused update's kernels, bf16 only in torch's."""
    from .fused import FUSED_PRECISIONS     # (no Triton: that is imported when a fused update runs)

    if precision == "tf32x3" and update != "fused":
        raise ValueError("precision 'tf32x3' needs update='fused' (3xTF32 products run in its Triton kernels), "
                         f"got update={update!r}")
    if update == "fused" and precision not in FUSED_PRECISIONS:
        raise ValueError(f"precision must be one of {FUSED_PRECISIONS} with update='fused', got {precision!r}")


def _one_thread_if_small(device, width):
    """One CPU thread (:func:`qmf_lite._common.limit_threads`) for networks up to ``SMALL_WIDTH`` on a CPU,
    whose matrix products are too small to gain from more; no change otherwise."""
    return limit_threads(1) if device.type == "cpu" and width <= SMALL_WIDTH else contextlib.nullcontext()


def _cross_entropy_step(model, forward, opt, x, y, losses, step, amp):
    """One SGD step of every network on its minibatch ``x, y`` (``(B, batch, ...)``); the losses into column
    ``step - 1`` of ``losses``. The loss is summed over networks, so each gets exactly its own gradient.
    ``forward``: the model itself, or the fused optimizer's forward pass (which keeps what its update needs)."""
    with amp():
        logits = forward(x)
    logits = logits.to(model.w_out.dtype)                     # bf16 autocast: the loss in fp32
    B, batch_size = y.shape
    per_net = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
    ).view(B, batch_size).mean(1)
    losses[:, step - 1] = per_net.detach()
    opt.zero_grad(set_to_none=True)
    per_net.sum().backward()
    opt.step()


def _train(model, data, run):
    """:func:`train` on checked arguments (``run``, a :class:`_TrainRun`)."""
    dev = model.w_out.device
    t0 = time.perf_counter()
    x_tr, y_tr = data.x_train.to(dev), data.y_train.to(dev)
    (x_tre, y_tre), (x_tee, y_tee) = _eval_sets(data, run.eval_size, run.seed, dev)
    last, B = run.steps[-1], len(model.specs)
    order = _data_order(model.specs, len(y_tr), last, run.batch_size, run.seed, model.depth).to(dev)
    if run.update == "fused":                   # opt-in; Triton is imported only here (qmf_lite.fused)
        from .fused import FusedSGD
        opt = FusedSGD(model, run.lr, run.momentum, run.precision)
        forward = opt.forward
    else:
        opt, forward = _sgd(model.parameters(), run.lr, run.momentum, dev), model
    losses = torch.empty(B, last, device=dev, dtype=model.w_out.dtype)
    acc = {}
    record_at = set(run.steps)
    with _precision(run.precision, dev.type) as amp, _one_thread_if_small(dev, model.width):
        evaluate = lambda: (_accuracy(model, x_tre, y_tre, run.eval_batch, amp),  # noqa: E731
                            _accuracy(model, x_tee, y_tee, run.eval_batch, amp))
        if 0 in record_at:
            acc[0] = evaluate()
        for step in _progress(range(1, last + 1), run.progress, desc=f"depth {model.depth}", leave=False):
            idx = order[:, step - 1]                                   # (B, batch), on the device
            _cross_entropy_step(model, forward, opt, x_tr[idx], y_tr[idx], losses, step, amp)
            if step in record_at:
                acc[step] = evaluate()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    record = TrainRecord()
    record.update({s: (tr.cpu().numpy(), te.cpu().numpy()) for s, (tr, te) in sorted(acc.items())})
    record.losses = losses.cpu().numpy()
    record.seconds = time.perf_counter() - t0
    step_flops, eval_flops = _flops(_layer_shapes(model.layout, model.depth, model.width, x_tr.shape[-1],
                                                  model.w_out.shape[-1]), x_tr.shape[-1], model.width, run.batch_size)
    record.flops = B * (last * step_flops + len(acc) * (len(y_tre) + len(y_tee)) * eval_flops)
    return record


@dataclasses.dataclass
class GridResult:
    """Rows of a grid run: one dict per (levels, sigma_w, seed, depth, step).

    Attributes
    ----------
    rows : list of dict
        Keys ``levels, sigma_w, seed, depth, step, train_acc, test_acc``.
    config : dict
        The grid's settings.
    seconds : float
        Wall time of this call.
    n_cached : int
        Networks whose results were loaded from the cache.
    compute_seconds : float
        Time spent training every network of the grid, in this call or in the earlier calls
        whose results the cache held.
    flops : float
        Matrix-product operations of the networks trained in this call.
    train_seconds : float
        Time spent training in this call.
    peak_memory : int or None
        Peak device memory allocated (bytes; CUDA only).
    missing : list of tuple
        ``(levels, sigma_w, seed, depth)`` of each network of the grid that has no rows: not
        trained before a deadline, or left to another share (``shard``). Empty when complete.
    """

    rows: list
    config: dict
    seconds: float
    n_cached: int = 0
    compute_seconds: float = 0.0
    flops: float = 0.0
    train_seconds: float = 0.0
    peak_memory: int | None = None
    missing: list = dataclasses.field(default_factory=list)

    @property
    def complete(self):
        """True when every network of the grid has its rows."""
        return not self.missing

    @property
    def n_nets(self):
        """Networks in the grid (one per spec and depth)."""
        return len({(r["levels"], r["sigma_w"], r["seed"], r["depth"]) for r in self.rows})

    @property
    def from_cache(self):
        """True when every network was loaded from the cache."""
        return self.n_cached == self.n_nets

    def summary(self):
        """One sentence: how many networks, trained now or loaded from the cache, and how long it took."""
        n, k = self.n_nets, self.n_cached
        tail = (f"; {len(self.missing)} networks of the grid are missing (not trained yet)" if self.missing else "")
        if k == 0:
            return f"{n} networks trained in {self.seconds:.0f} s" + tail
        if k == n:
            return (f"{n} networks loaded from the cache in {self.seconds:.1f} s "
                    f"(computing them took {self.compute_seconds:.0f} s)" + tail)
        return (f"{n} networks: {k} loaded from the cache, {n - k} trained now; this call took {self.seconds:.0f} s, "
                f"computing all of them {self.compute_seconds:.0f} s" + tail)

    def table(self, value="test_acc", step=None, by="levels"):
        """``(keys, depths, array[keys, depths])`` of ``value`` at ``step``, averaged over the other
        grid axes (seeds, and ``sigma_w`` or ``levels``); ``value`` is ``"test_acc"`` or
        ``"train_acc"``, ``step`` one of the recorded step counts (default the last), ``by`` is
        ``"levels"`` or ``"sigma_w"``."""
        if value not in ("test_acc", "train_acc"):
            raise ValueError(f"value must be 'test_acc' or 'train_acc', got {value!r:.200}")
        if by not in ("levels", "sigma_w"):
            raise ValueError(f"by must be 'levels' or 'sigma_w', got {by!r}")
        recorded = sorted({r["step"] for r in self.rows})
        if not recorded:
            raise ValueError("the grid has no rows: there is nothing to tabulate")
        if step is None:
            step = recorded[-1]
        elif isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step not in recorded:
            raise ValueError(f"step must be None or one of the grid's recorded steps {recorded}, got {step!r:.200}")
        rows = [r for r in self.rows if r["step"] == step]
        keys = sorted({r[by] for r in rows})
        depths = sorted({r["depth"] for r in rows})
        grid = np.full((len(keys), len(depths)), np.nan)
        for i, k in enumerate(keys):
            for j, d in enumerate(depths):
                vals = [r[value] for r in rows if r[by] == k and r["depth"] == d]
                if vals:
                    grid[i, j] = float(np.mean(vals))
        return keys, depths, grid


def halfway_depth(depths, accuracy, chance):
    r"""The depth at which accuracy falls halfway from its best value to ``chance``.

    Beyond the best depth, the first depth whose accuracy is below
    :math:`\text{chance} + (\max - \text{chance})/2` and the one before it bracket the crossing,
    interpolated linearly in :math:`\log L`. NaN if the accuracy never falls that low. NaN too if
    it is nowhere above ``chance``: then it has no fall to measure.

    Parameters
    ----------
    depths : sequence of float
        Finite, > 0 and strictly increasing.
    accuracy : sequence of float
        One accuracy in [0, 1] per depth.
    chance : float in [0, 1]

    >>> halfway_depth([2, 4, 8, 16], [0.9, 0.8, 0.4, 0.1], 0.1)
    6.727171322029715
    """
    depths = check_real_array(depths, "depths")
    accuracy = check_real_array(accuracy, "accuracy")
    chance = check_real_in(chance, "chance", 0.0, 1.0)
    if depths.ndim != 1 or not depths.size:
        raise ValueError(f"depths must be a non-empty 1-d sequence, got shape {depths.shape}")
    if (depths <= 0).any() or (np.diff(depths) <= 0).any():
        raise ValueError(f"depths must be > 0 and strictly increasing, got {depths}")
    if accuracy.shape != depths.shape:
        raise ValueError(f"depths and accuracy must have the same length (one accuracy per depth), got shapes "
                         f"{depths.shape} and {accuracy.shape}")
    if ((accuracy < 0) | (accuracy > 1)).any():
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
    return _halfway_depth(depths, accuracy, chance)


def _halfway_depth(depths, accuracy, chance):
    """:func:`halfway_depth` of checked float arrays ``depths`` and ``accuracy`` and a float ``chance``."""
    if not accuracy.max() > chance:        # no fall from above chance (and the interpolation would divide by 0)
        return float("nan")
    half = chance + 0.5 * (accuracy.max() - chance)
    best = int(np.argmax(accuracy))
    below = [j for j in range(best + 1, len(depths)) if accuracy[j] < half]
    if not below:
        return float("nan")
    j = below[0]
    t = (accuracy[j - 1] - half) / (accuracy[j - 1] - accuracy[j])
    return float(np.exp(np.log(depths[j - 1]) + t * (np.log(depths[j]) - np.log(depths[j - 1]))))


_ROW_KEYS = ("levels", "sigma_w", "seed", "depth", "step", "train_acc", "test_acc")
#: seeding rules of :func:`qmf_lite.run_grid`
SEEDINGS = ("cell", "shared")
#: version of the bundle files of :func:`run_grid` (``bundle=``)
BUNDLE_SCHEMA = "qmf_lite-bundle-1"
#: an estimate of a chunk's time is the measured seconds per network-layer-step times this margin
_RATE_MARGIN = 1.15
#: ... or, before this call has measured anything, the rate recorded with the cached networks times this
_PRIOR_MARGIN = 1.5
#: the clock of ``deadline`` (a seam for the tests)
_clock = time.perf_counter


def _cell_seed(seed, levels, depth):
    """The initialization seed of one network under ``seeding="cell"``: a hash of the replicate
    ``seed``, the number of levels and the depth, ``int(sha256(json.dumps(["init", seed, levels,
    depth])).hexdigest()[:15], 16)`` (60 bits)."""
    return _stable_seed("init", int(seed), int(levels), int(depth))


def _train_networks(specs, depth, *, data, width, layout, device, steps, lr, batch_size, seed, momentum, eval_size,
                    precision, seeding, update="torch"):
    """Train the networks ``specs`` (replicate seeds) of one depth together; ``(rows of each network, record)``.

    Under ``seeding="cell"`` network ``b`` is initialised (and orders its minibatches) with
    ``_cell_seed(spec.seed, spec.levels, depth)``; under ``"shared"`` with ``spec.seed`` itself. The
    rows name the replicate seed.
    """
    init = [_spec(**{**dataclasses.asdict(s), "seed": _cell_seed(s.seed, s.levels, depth)}) for s in specs] \
        if seeding == "cell" else list(specs)
    model = QuantizedMLPBatch._unchecked(init, data.n_features, data.n_classes, depth, width, device, torch.float32,
                                         layout)
    rec = _train(model, data, _TrainRun(steps, lr, batch_size, seed, False, momentum, eval_size, EVAL_BATCH,
                                        precision, update))
    del model
    if device.type == "cuda":   # hand the chunk's blocks back: chunks of another depth fragment the cache
        torch.cuda.empty_cache()
    rows = [[{"levels": s.levels, "sigma_w": s.sigma_w, "seed": s.seed, "depth": depth, "step": step,
              "train_acc": float(tr[b]), "test_acc": float(te[b])} for step, (tr, te) in rec.items()]
            for b, s in enumerate(specs)]
    return rows, rec


def _key(config):
    blob = json.dumps(config, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _entry_config(base, depth, lr, spec):
    """The cache key's content for one network: the run's settings, its depth and learning rate, its spec."""
    return {**base, "depth": depth, "lr": lr, "spec": dataclasses.asdict(spec)}


def _validator(n_rows):
    def validate(entry):
        rows = entry["rows"]
        if not isinstance(rows, list) or len(rows) != n_rows:
            return f"it holds {len(rows) if isinstance(rows, list) else 'no'} rows, expected {n_rows}"
        for r in rows:
            if set(r) != set(_ROW_KEYS) or not all(0.0 <= float(r[k]) <= 1.0 for k in ("train_acc", "test_acc")):
                return f"a row is malformed: {r!r}"
        if not float(entry["seconds"]) >= 0:
            return "its compute time is missing"
        return None
    return validate


def _work_order(depths):
    """Depths in the order the grid trains them: every other depth first (``depths[::2]``, in increasing
    order), then the rest (``depths[1::2]``), so that a run stopped half-way already spans the whole range.

    >>> _work_order([10, 35, 60, 85, 110, 135, 160, 185, 210, 235, 260])
    [10, 60, 110, 160, 210, 260, 35, 85, 135, 185, 235]
    """
    depths = sorted(depths)
    return depths[::2] + depths[1::2]


def _shares(costs, count):
    """The share (0..count-1) of each item: longest first, each to the share with the least total cost so
    far (the lowest index on ties). Deterministic, so every share computes the same split.

    >>> _shares([10, 10, 60, 35], 2)
    [1, 1, 0, 1]
    """
    load = [0.0] * count
    out = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(count), key=lambda k: (load[k], k))
        out[i] = k
        load[k] += costs[i]
    return out


def _chunk_fit(per_net, budget, depth, width):
    """How many networks of ``per_net`` bytes fit 90% of ``budget`` (all of them when ``budget`` is None)."""
    if budget is None:
        return MAX_STEPS
    fit = int(0.9 * budget) // per_net
    if fit < 1:
        raise ValueError(f"max_memory must be at least {math.ceil(per_net / 0.9)} bytes (90% usable) to hold one "
                         f"network of depth {depth} and width {width}, which needs about {per_net} bytes; got "
                         f"{budget} bytes available: raise max_memory or reduce depth/width")
    return fit


def _read_bundle(path):
    """The entries of a bundle file (``[]`` when it does not exist); a ValueError naming it when unusable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("schema") != BUNDLE_SCHEMA or not isinstance(doc.get("entries"), list):
            raise ValueError(f"its schema is not {BUNDLE_SCHEMA!r}")
        for e in doc["entries"]:
            if not (isinstance(e, dict) and e.get("schema") == _SCHEMA and e.get("key") == _key(e["config"])):
                raise ValueError("an entry is malformed or its key does not match its configuration")
            reason = _validator(len(e["config"]["steps"]))(e)
            if reason:
                raise ValueError(f"an entry is malformed: {reason}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"bundle must be a bundle file written by run_grid: {path} is not usable ({exc})") from None
    return doc["entries"]


def _write_bundle(path, entries):
    """Write ``entries`` (cache entries, one per network) to the bundle ``path`` atomically."""
    entries = sorted(entries, key=lambda e: e["key"])
    _cache.atomic_write_json(path, {"schema": BUNDLE_SCHEMA, "entries": entries})


def _bundle_mismatch(entry, expected):
    """Why a bundle's entry is not a network of this run: the fields in which its settings differ."""
    cfg = entry["config"]
    spec = cfg.get("spec", {})
    other = expected.get((cfg.get("depth"), json.dumps(spec, sort_keys=True)))
    if other is None:
        return (f"its network (N = {spec.get('levels')}, sigma_w = {spec.get('sigma_w')}, seed = {spec.get('seed')}, "
                f"depth {cfg.get('depth')}) is not part of this grid")
    names = {"code": "the code that produces the numbers (its fingerprint)", "torch": "the torch version",
             "qmf_lite": "the qmf_lite version", "device": "the device type", "data": "the data (a hash of its tensors)"}
    diffs = [f"{names.get(k, k)}: {cfg.get(k)!r} in the bundle, {other.get(k)!r} now"
             for k in sorted(set(cfg) | set(other)) if cfg.get(k) != other.get(k)]
    return "; ".join(diffs) if diffs else "its entry could not be stored in the cache"


def run_grid(levels, depths, *, sigma_w=None, seeds=(0,), steps=(100, 200), width=64, lr=0.01, batch_size=128,
             dataset="digits", device=None, cache=True, progress=True, data=None, momentum=0.0, layout="book",
             max_memory="auto", eval_size=None, precision="fp32", seed=0, callback=None, workers=None,
             seeding="cell", deadline=None, bundle=None, shard=None, update="torch"):
    """Train quantized MLPs over a grid of levels x depths (x sigma_w x seeds) and record accuracy.

    Parameters
    ----------
    levels, depths : sequences of int
        ``levels`` in [2, 2^22]; ``depths`` as for :class:`QuantizedMLPBatch`.
    sigma_w : None or sequence of float
        ``None``: each ``N`` at its optimal initialization (:func:`qmf_lite.optimal_init`);
        otherwise every value (in [1e-100, 1e100]) for every ``N``.
    seeds : sequence of int
        Replicates per cell, in [0, 2^63 - 1].
    steps : sequence of int
        Step counts in [1, 10^9] at which train and test accuracy are recorded.
    width : int in [1, 2^20]
    lr, batch_size, momentum, eval_size, precision, seed
        Passed to :func:`qmf_lite.train`; ``lr`` may be ``"bgs19"`` or a function of the depth.
        ``precision="fp32"`` forces exact float32 products for the whole call (no TF32, whatever
        ``torch.set_float32_matmul_precision`` says); ``"tf32"`` allows TF32 tensor cores;
        ``"tf32x3"`` (with ``update="fused"``) takes every product as three TF32 products.
    update : ``"torch"`` or ``"fused"``
        The SGD update, as in :func:`qmf_lite.train`; ``"fused"`` is part of each network's
        cache key and of the result's configuration (``"torch"``, the default, is in neither).
    layout : ``"book"`` or ``"bgs19"``
        See :class:`QuantizedMLPBatch`.
    dataset : {"digits", "mnist"}
        Which data to load; ``data`` may pass a loaded :class:`~qmf_lite.Dataset` instead. MNIST
        is loaded from :func:`qmf_lite.cache_dir` ``/ "mnist"``, with the paper's normalisation
        (``normalize="bgs19"``) for the ``"bgs19"`` layout and per-feature standardisation for
        ``"book"``.
    device : torch device, optional (default: CUDA when available)
    max_memory : int, ``"auto"`` or None
        Memory budget in bytes for the networks of one depth: they train in consecutive chunks
        that each fit 90% of it (:func:`training_memory`). ``"auto"``: the device's free memory
        (:func:`memory_budget`); ``None``: all networks of a depth at once. The results do not
        depend on it.
    cache : bool
        Store each network's results under :func:`qmf_lite.cache_dir` ``/ "grid"`` and reuse
        them, whatever the chunking or the card. The key of a network hashes every input that
        changes its numbers: its spec (levels, sigma_w, replicate seed, ...), depth and learning
        rate, and the run's settings (width, layout, steps, momentum, batch size, base seed,
        seeding, evaluation subset, precision), the data (a hash of its tensors), the device
        type (CPU and CUDA draw different random numbers) and dtype, the torch and qmf_lite
        versions and the fingerprint of the code that produces the numbers
        (``qmf_lite._cache.code_fingerprint``: comments, docstrings and the grid runner's
        bookkeeping do not count). Not in the key: the GPU model, the number of CPU threads and
        the chunking, which can change the last bits of a matrix product. Entries are written
        atomically as soon as their chunk is done; a corrupt one is recomputed with a
        :class:`~qmf_lite.CacheWarning`; whenever some networks are found, the call says so on
        stderr and trains only the others.
    callback : callable, optional
        None, or called as ``callback(depth=..., chunk=..., rows=..., cached=...)`` after each
        chunk (``cached=True``: the networks of a depth found in the cache, reported together),
        in the order of the work.
    workers : int in [1, 1024], optional
        Chunks trained at the same time, in threads. Default: on a CPU, for networks of width up
        to ``SMALL_WIDTH`` (256), one per core that torch uses (each chunk on one thread); otherwise
        one; always one with a ``deadline``. The results do not depend on it.
    seeding : ``"cell"`` or ``"shared"``
        ``"cell"``: independent draws in every cell: a network's initialization and minibatch
        order are seeded with a hash of its replicate seed, ``N`` and depth (``_cell_seed``:
        ``int(sha256(json.dumps(["init", seed, N, depth])).hexdigest()[:15], 16)``); networks that
        differ only in ``sigma_w`` share their standard normal draws. ``"shared"``: every network
        is initialised from its replicate seed, the same draws in every cell (the rule before
        this option; deeper networks then share their first layers with shallower ones).
    deadline : float in [0, 10^9], optional
        Seconds from the start of the call. The work is cut into chunks no larger than the time
        left allows, estimated from the seconds per network-layer-step measured in this call
        (times 1.15; before the first chunk, from the networks in the cache times 1.5, and the
        first chunk holds one network); a chunk that would overrun is not started, and the call
        returns what it has (``GridResult.missing`` lists the rest). ``0`` trains nothing.
    bundle : path, optional
        A file that carries finished networks between machines: at the start its entries are
        restored into the cache, and it is rewritten atomically (every network of this grid
        found in the cache) at the start and after every chunk. If this run finds fewer of its
        networks in the cache than the bundle holds (other settings, code, torch version or
        device type), it stops with a ``ValueError`` that names the difference. Needs ``cache``.
    shard : (int, int), optional
        ``(i, k)``, 1 <= i <= k <= 10^4: train only the i-th of k disjoint shares of the grid's
        networks (balanced by cost: longest first, each to the lightest share), so k machines
        can run the grid at once and their bundles merge (:func:`qmf_lite.fig3.merge`). Networks
        of other shares found in the cache are returned too.

    Returns
    -------
    GridResult
        Rows of every network done, sorted by depth, step and spec; ``missing`` lists the others.

    Notes
    -----
    The work order: depths ``depths[::2]`` first (for the paper's 10, 35, ..., 260: 10, 60, 110, 160,
    210, 260), then the others, each depth's networks in the order of ``levels x sigma_w x seeds``.
        """
    from .data import load_dataset

    args = _grid_arguments(levels=levels, depths=depths, sigma_w=sigma_w, seeds=seeds, steps=steps, width=width,
                           lr=lr, batch_size=batch_size, dataset=dataset, device=device, cache=cache,
                           progress=progress, data=data, momentum=momentum, layout=layout, max_memory=max_memory,
                           eval_size=eval_size, precision=precision, seed=seed, callback=callback, workers=workers,
                           seeding=seeding, deadline=deadline, bundle=bundle, shard=shard, update=update)
    t0 = _clock()
    if data is None:
        data = load_dataset(dataset, **({"normalize": "bgs19"} if dataset == "mnist" and args.layout == "bgs19" else {}))
    return _run_grid(args, data, t0)


@dataclasses.dataclass
class _GridArgs:
    """The checked arguments of :func:`run_grid` (``lrs``: the learning rate of each depth; ``device`` a
    ``torch.device``; ``lr`` as given, for the result's configuration)."""

    levels: list
    depths: list
    sigma_w: list | None
    seeds: list
    steps: list
    width: int
    lr: object
    lrs: dict
    batch_size: int
    device: object
    cache: bool
    progress: bool
    momentum: float
    layout: str
    max_memory: object
    eval_size: int | None
    precision: str
    seed: int
    callback: object
    workers: int | None
    seeding: str
    deadline: float | None
    bundle: object
    shard: tuple | None
    update: str = "torch"


def _check_shard(shard):
    """``shard`` as ``None`` or a pair ``(i, k)``, 1 <= i <= k <= 10^4."""
    if shard is None:
        return None
    ok = isinstance(shard, (tuple, list)) and len(shard) == 2
    if ok:
        i = check_int_range(shard[0], "shard", 1, 10**4)
        k = check_int_range(shard[1], "shard", 1, 10**4)
        ok = i <= k
    if not ok:
        raise ValueError(f"shard must be None or a pair (i, k) of integers with 1 <= i <= k <= 10000 (the i-th "
                         f"of k shares), got {shard!r}")
    return (i, k)


def _check_bundle(bundle, cache):
    """``bundle`` as ``None`` or a path to a file (not a folder); it needs the cache."""
    if bundle is None:
        return None
    from ._validate import check_path

    bundle = check_path(bundle, "bundle", kind="not_dir")
    if not cache:
        raise ValueError("bundle must be None when cache=False (a bundle is carried through the cache)")
    return bundle


def _grid_arguments(*, levels, depths, sigma_w, seeds, steps, width, lr, batch_size, dataset, device, cache, progress,
                    data, momentum, layout, max_memory, eval_size, precision, seed, callback, workers, seeding,
                    deadline, bundle, shard, update="torch"):
    """The door of :func:`run_grid`: every argument checked once, in the order of the old checks."""
    from .data import Dataset

    layout = check_choice(layout, "layout", LAYOUTS)
    levels = [check_levels(n, "levels", maximum=MAX_STORED_LEVELS) for n in check_sequence(levels, "levels")]
    depths = check_int_sequence(depths, "depths", 2 if layout == "bgs19" else 1, MAX_DEPTH)
    steps = sorted(set(check_int_sequence(steps, "steps", 1, MAX_STEPS)))
    width = check_int_range(width, "width", 1, MAX_WIDTH)
    precision = check_choice(precision, "precision", PRECISIONS)
    lrs = {d: _learning_rate(lr, d) for d in depths}
    if sigma_w is not None:
        sigma_w = [float(check_sigmas(s, 0.0, allow_array=False)[0]) for s in check_sequence(sigma_w, "sigma_w")]
    seeds = check_int_sequence(seeds, "seeds", 0, 2**63 - 1)
    batch_size = check_int_range(batch_size, "batch_size", 1, MAX_STEPS)
    momentum = check_momentum(momentum)
    seed = check_seed(seed)
    check_choice(dataset, "dataset", ("digits", "mnist"))
    cache = check_bool(cache, "cache")
    progress = check_bool(progress, "progress")
    seeding = check_choice(seeding, "seeding", SEEDINGS)
    if eval_size is not None:
        eval_size = check_int(eval_size, "eval_size", 1)
    if callback is not None:
        check_callable(callback, "callback")
    if workers is not None:
        workers = check_int_range(workers, "workers", 1, MAX_WORKERS)
    if deadline is not None:
        deadline = check_real_in(deadline, "deadline", 0.0, 1e9)
    bundle = _check_bundle(bundle, cache)
    shard = _check_shard(shard)
    if data is not None and not isinstance(data, Dataset):
        raise ValueError(f"data must be None or a qmf_lite.Dataset, got {type(data).__name__}")
    max_memory = _check_max_memory(max_memory)
    update = check_choice(update, "update", UPDATES)
    _check_precision_and_update(precision, update)
    return _GridArgs(levels, depths, sigma_w, seeds, steps, width, lr, lrs, batch_size, default_device(device), cache,
                     progress, momentum, layout, max_memory, eval_size, precision, seed, callback, workers, seeding,
                     deadline, bundle, shard, update)


@dataclasses.dataclass
class _GridPlan:
    """What a grid trains: its specs, the networks ``(depth, index of the spec)`` in work order, the cache
    entry's configuration and key of each, this share's networks (``mine``) and the cache folder."""

    specs: list
    order: list
    nets: list
    configs: dict
    keys: dict
    mine: list
    folder: object
    device_name: str


def _grid_plan(a, data):
    """The :class:`_GridPlan` of the checked arguments ``a`` on ``data``."""
    from . import __version__
    from .data import cache_dir

    specs = [_optimal_spec(n, s) if a.sigma_w is None else _spec(n, sw, 0.0, s)
             for n in a.levels for sw in ([None] if a.sigma_w is None else a.sigma_w) for s in a.seeds]
    base = {"code": _cache.code_fingerprint(), "torch": torch.__version__, "qmf_lite": __version__,
            "device": a.device.type, "dtype": "float32", "precision": a.precision, "data": data.fingerprint(),
            "dataset": data.name, "width": a.width, "layout": a.layout, "steps": a.steps, "batch_size": a.batch_size,
            "momentum": float(a.momentum), "seed": a.seed, "seeding": a.seeding, "eval_size": a.eval_size,
            "eval_batch": EVAL_BATCH, **({"update": a.update} if a.update != "torch" else {})}
    order = _work_order(a.depths)
    nets = [(d, j) for d in order for j in range(len(specs))]          # the whole grid, in work order
    configs = {net: _entry_config(base, net[0], a.lrs[net[0]], specs[net[1]]) for net in nets}
    keys = {net: _key(c) for net, c in configs.items()}
    share = _shares([d for d, _ in nets], a.shard[1]) if a.shard is not None else None
    mine = [net for i, net in enumerate(nets) if share is None or share[i] == a.shard[0] - 1]
    return _GridPlan(specs, order, nets, configs, keys, mine, cache_dir("grid") if a.cache else None,
                     _device_name(a.device))


def _restore_bundle(a, plan):
    """Copy the entries of the bundle ``a.bundle`` that the cache lacks into it; returns the entries."""
    if a.bundle is None:
        return []
    bundled = _read_bundle(a.bundle)
    for e in bundled:
        path = plan.folder / f"{e['key']}.json"
        if _cache.read_json(path, _SCHEMA, e["key"], _validator(len(e["rows"]))) is None:
            _cache.atomic_write_json(path, e)
    return bundled


def _cached_networks(a, plan):
    """``{net: entry}`` of the grid's networks found in the cache (after restoring the bundle); a ValueError
    when the cache lacks a network of the bundle (it was computed with other settings)."""
    bundled = _restore_bundle(a, plan)
    found = {}
    if a.cache:
        for net in plan.nets:
            entry = _cache.read_json(plan.folder / f"{plan.keys[net]}.json", _SCHEMA, plan.keys[net],
                                     _validator(len(a.steps)))
            if entry is not None:
                found[net] = entry
    if bundled:
        found_keys = {plan.keys[net] for net in found}
        lost = [e for e in bundled if e["key"] not in found_keys]
        if lost:
            expected = {(d, json.dumps(dataclasses.asdict(plan.specs[j]), sort_keys=True)): plan.configs[(d, j)]
                        for d, j in plan.nets}
            raise ValueError(f"bundle {str(a.bundle)!r} holds {len(bundled)} finished networks, but this run finds "
                             f"only {len(bundled) - len(lost)} of them in the cache: "
                             f"{_bundle_mismatch(lost[0], expected)}. Nothing was trained; run with the settings, "
                             "code and torch version that produced the bundle, or without it to start afresh")
    if a.bundle is not None:
        _write_bundle(a.bundle, found.values())
    if found:
        n_mine = sum(net in found for net in plan.mine)
        print(f"run_grid: resuming from the cache: {len(found)} of the grid's {len(plan.nets)} networks were "
              f"computed earlier" + (f" ({len(bundled)} restored from {a.bundle})" if bundled else "")
              + (f"; {n_mine} of the {len(plan.mine)} of share {a.shard[0]}/{a.shard[1]}" if a.shard else "")
              + f"; training the {sum(net not in found for net in plan.mine)} others", file=sys.stderr)
    return found


@dataclasses.dataclass
class _GridState:
    """What a grid run has so far: ``results`` by ``(depth, step, levels, sigma_w, seed)``, the cache entries
    of the networks done, the totals, the measured seconds per network-layer-step and the callbacks made."""

    results: dict = dataclasses.field(default_factory=dict)
    done: dict = dataclasses.field(default_factory=dict)
    n_cached: int = 0
    compute_s: float = 0.0
    flops: float = 0.0
    train_s: float = 0.0
    rate: float | None = None
    calls: int = 0

    def add_rows(self, rows):
        for r in rows:
            self.results[(r["depth"], r["step"], r["levels"], r["sigma_w"], r["seed"])] = r


def _device_name(dev):
    """The device's name as the cache entries record it: ``"cuda: <card>"`` or ``"cpu: <processor>"``."""
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    import platform

    return f"{dev.type}: {platform.processor() or platform.machine()}"


def _memory_budget_for_grid(a, data):
    """The bytes for the networks of one depth: :func:`memory_budget`, less the data's copies on a GPU."""
    budget = _memory_budget(a.max_memory, a.device)
    if budget is not None and a.device.type == "cuda":
        budget -= 2 * sum(t.numel() * t.element_size() for t in (data.x_train, data.x_test))  # data and eval copies
    return budget


def _chunk_sizes(a, data, budget, pending, order):
    """How many networks of each depth with work left fit ``budget`` at once, and the worker threads."""
    n_in, n_out = data.n_features, data.n_classes
    fits = {d: _chunk_fit(_memory(_layer_shapes(a.layout, d, a.width, n_in, n_out), a.width, n_out, a.batch_size,
                                  a.momentum, EVAL_BATCH, 4), budget, d, a.width)
            for d in order if pending[d]}
    workers = a.workers
    if workers is None:
        small_cpu = a.device.type == "cpu" and a.width <= SMALL_WIDTH
        n_chunks = sum(-(-len(pending[d]) // fits[d]) for d in fits)
        workers = max(1, min(torch.get_num_threads(), n_chunks)) if small_cpu else 1
    if a.deadline is not None:
        workers = 1
    return fits, workers


def _deadline_size(a, size, depth, t0, rate, prior_rate):
    """``size`` cut to the networks of ``depth`` that the time left before ``a.deadline`` allows (0: none)."""
    left = a.deadline - (_clock() - t0)
    cost = depth * a.steps[-1]
    if rate is not None:
        return min(size, int(left // (_RATE_MARGIN * rate * cost)))
    # nothing measured yet in this call: one network, if the prior allows it
    return min(size, 1 if left > 0 and (prior_rate is None or left >= _PRIOR_MARGIN * prior_rate * cost) else 0)


def _store_chunk(a, plan, state, depth, chunk, rows_per, rec):
    """Record a trained chunk: its rows, totals and one cache entry per network (written at once, so that an
    interruption keeps it), and the bundle rewritten."""
    state.compute_s += rec.seconds
    state.train_s += rec.seconds
    state.flops += rec.flops
    for j, rows in zip(chunk, rows_per):
        net = (depth, j)
        entry = {"schema": _SCHEMA, "key": plan.keys[net], "config": plan.configs[net], "rows": rows,
                 "seconds": rec.seconds / len(chunk), "flops": rec.flops / len(chunk),
                 "chunk": len(chunk), "device_name": plan.device_name}
        if a.cache:
            _cache.atomic_write_json(plan.folder / f"{plan.keys[net]}.json", entry)
        state.done[net] = entry
        state.add_rows(rows)
    if a.bundle is not None:
        _write_bundle(a.bundle, state.done.values())


def _train_depth(a, plan, state, depth, todo, fit, run_chunk, t0, prior_rate, bar):
    """Train the networks ``todo`` of ``depth`` chunk by chunk (``run_chunk(depth, chunk)``), each chunk at
    most ``fit`` networks and, with a deadline, what the time left allows."""
    todo = list(todo)
    while todo:
        size = fit
        if a.deadline is not None:
            size = _deadline_size(a, size, depth, t0, state.rate, prior_rate)
            if size < 1:
                break      # this depth would overrun; a cheaper one may still fit
        chunk, todo = todo[:size], todo[size:]
        if a.progress and hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"depth {depth}, {len(chunk)} nets")
        c0 = _clock()
        rows_per, rec = run_chunk(depth, chunk)
        state.rate = (_clock() - c0) / (len(chunk) * depth * a.steps[-1])
        _store_chunk(a, plan, state, depth, chunk, rows_per, rec)
        if hasattr(bar, "update"):
            bar.update(len(chunk))
        if a.callback is not None:
            a.callback(depth=depth, chunk=state.calls, rows=[r for rows in rows_per for r in rows], cached=False)
            state.calls += 1


def _train_pending(a, plan, data, budget, state, found, pending, t0):
    """Train every network of ``pending`` (``{depth: [spec index]}``) in work order, in chunks, in worker
    threads when there are several; the cached networks of each depth are handed to the callback first."""
    last = a.steps[-1]
    prior = [float(e["seconds"]) / (e["config"]["depth"] * last) for e in found.values() if float(e["seconds"]) > 0]
    prior_rate = max(prior) if prior else None
    fits, workers = _chunk_sizes(a, data, budget, pending, plan.order)
    settings = dict(data=data, width=a.width, layout=a.layout, device=a.device, steps=a.steps,
                    batch_size=a.batch_size, seed=a.seed, momentum=a.momentum, eval_size=a.eval_size,
                    precision=a.precision, seeding=a.seeding, update=a.update)

    def compute(depth, chunk):
        return _train_networks([plan.specs[j] for j in chunk], depth, lr=a.lrs[depth], **settings)

    static = [(d, pending[d][i:i + fits[d]]) for d in plan.order if pending[d]
              for i in range(0, len(pending[d]), fits[d])]
    pool = concurrent.futures.ThreadPoolExecutor(workers) if workers > 1 and len(static) > 1 else None
    futures = []
    run_chunk = compute if pool is None else (lambda depth, chunk: futures.pop(0).result())
    threads = _one_thread_if_small(a.device, a.width) if pool is not None else contextlib.nullcontext()
    try:
        with _precision(a.precision, a.device.type), threads:
            if pool is not None:   # longest first (depth x networks), so that no thread is left with a long chunk
                by_cost = sorted(range(len(static)), key=lambda i: -static[i][0] * len(static[i][1]))
                submitted = {i: pool.submit(compute, *static[i]) for i in by_cost}
                futures.extend(submitted[i] for i in range(len(static)))
            bar = _progress(None, a.progress, total=sum(len(v) for v in pending.values()), desc="grid")
            for depth in plan.order:
                here = [j for j in range(len(plan.specs)) if (depth, j) in found]
                if here and a.callback is not None:
                    a.callback(depth=depth, chunk=state.calls, cached=True,
                               rows=[r for j in here for r in found[(depth, j)]["rows"]])
                    state.calls += 1
                _train_depth(a, plan, state, depth, pending[depth], fits.get(depth), run_chunk, t0, prior_rate, bar)
            if hasattr(bar, "close"):
                bar.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _grid_result(a, plan, state, data, t0):
    """The :class:`GridResult` of a run: the rows sorted by depth, step and spec, and the networks missing."""
    specs = plan.specs
    order_of = {(s.levels, s.sigma_w, s.seed): i for i, s in enumerate(specs)}
    rows = [state.results[k] for k in sorted(state.results, key=lambda k: (k[0], k[1], order_of[k[2:]]))]
    missing = [(specs[j].levels, specs[j].sigma_w, specs[j].seed, d) for d, j in sorted(plan.nets)
               if (d, j) not in state.done]
    dev = a.device
    peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None
    lr = a.lr if isinstance(a.lr, (str, int, float)) else a.lrs
    config = {"levels": a.levels, "depths": a.depths, "sigma_w": a.sigma_w, "seeds": a.seeds, "steps": a.steps,
              "width": a.width, "lr": lr, "momentum": float(a.momentum), "batch_size": a.batch_size,
              "layout": a.layout, "eval_size": a.eval_size, "precision": a.precision, "dataset": data.name,
              "normalization": getattr(data, "normalization", "feature"), "device": str(dev),
              "seeding": a.seeding, "shard": list(a.shard) if a.shard else None,
              **({"update": a.update} if a.update != "torch" else {})}
    return GridResult(rows, config, _clock() - t0, state.n_cached, state.compute_s, state.flops, state.train_s, peak,
                      missing)


def _run_grid(a, data, t0):
    """:func:`run_grid` on checked arguments ``a`` (a :class:`_GridArgs`) and loaded ``data``."""
    if a.batch_size > len(data.y_train):
        raise ValueError(f"batch_size must be at most the {len(data.y_train)} training inputs of the data, "
                         f"got {a.batch_size}")
    plan = _grid_plan(a, data)
    if a.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(a.device)
    budget = _memory_budget_for_grid(a, data)
    found = _cached_networks(a, plan)
    state = _GridState(done=dict(found))
    for entry in found.values():
        state.add_rows(entry["rows"])
        state.n_cached += 1
        state.compute_s += float(entry["seconds"])
    pending = {d: [j for dd, j in plan.mine if dd == d and (dd, j) not in found] for d in plan.order}
    _train_pending(a, plan, data, budget, state, found, pending, t0)
    return _grid_result(a, plan, state, data, t0)
