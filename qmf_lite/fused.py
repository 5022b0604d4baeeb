r"""An SGD step that forms each weight gradient inside the update (Triton), for :func:`qmf_lite.train`.

At batch size :math:`b` the gradient of a layer :math:`h = x W + \beta` (``x`` of shape
``(b, K)``, ``W`` of shape ``(K, N)``) is the rank-:math:`b` product

.. math:: \nabla W = x^\top \delta,\qquad \delta = \partial L/\partial h \ \text{of shape}\ (b, N).

The plain step writes :math:`\nabla W` to memory (``K N`` numbers), and SGD then reads it back
beside the parameter and its momentum buffer. :class:`FusedSGD` keeps the two factors ``x`` and
:math:`\delta` from the backward pass (``b (K + N)`` numbers) and runs one Triton kernel per weight
that, tile by tile, forms :math:`\nabla W` in registers and applies PyTorch's momentum SGD,

.. math:: v \leftarrow \nabla W\ \text{(first step)},\qquad v \leftarrow m\,v + \nabla W\ \text{(later)},
          \qquad W \leftarrow W - \eta\,v

(``torch.optim.SGD`` with no dampening, weight decay or Nesterov; at :math:`m = 0` there is no
buffer and :math:`W \leftarrow W - \eta\nabla W`). Per weight and step it reads :math:`W` and
:math:`v` and writes them back, and never stores :math:`\nabla W`: at width :math:`n` the weight
traffic of a step falls from :math:`8\cdot 4n^2` bytes (forward read, backward read, gradient
written, SGD reading parameter, gradient and buffer and writing parameter and buffer) to
:math:`6\cdot 4n^2`. The products are exact float32 by default (Triton's ``"ieee"`` dot, no TF32
rounding); TF32 and 3xTF32 are options that take effect on a CUDA device only. Biases, whose
gradients are small, are stepped by ``torch.optim.SGD`` as in the plain path.

With ``precision="tf32x3"`` the forward and backward products run in a Triton kernel too, each
float32 factor split as :math:`a = a_h + a_l` with :math:`a_h` its TF32 rounding and the product
taken as :math:`a_h b_h + a_h b_l + a_l b_h` on the tensor cores (Triton's ``"tf32x3"`` dot): the
dropped :math:`a_l b_l` and the TF32 rounding of :math:`a_l, b_l` are about :math:`2^{-22}` of
:math:`|a b|` each, against :math:`2^{-24}` for a float32 product and :math:`2^{-11}` for TF32. At
width 2048 and batch 32 the plain step ran at about 155 us per network-layer-step on an H200 in
float32 and about 72 us with TF32 (the same memory traffic; README), so its float32 products, not
its bytes, set its pace: 3xTF32 moves them onto the tensor cores at about float32's accuracy.

The quantized activation runs in one kernel as well (``staircase=True``): each element counts
the thresholds at or below it in registers and writes its level and an int8 mask
:math:`|h| \le T` (the same numbers as the plain lookup, bit for bit), and the STE's backward pass
multiplies by ``slope * mask`` instead of a stored float32 gain.

Triton is optional: the plain step stays the default of :func:`~qmf_lite.train`, and this module
imports Triton only when a step runs. The kernels need a CUDA device, or, on a CPU, Triton's
interpreter (``TRITON_INTERPRET=1`` set before the first step; it runs each kernel with numpy and
is slow: tests only). Older interpreters cannot run them, and a step there stops with a
``RuntimeError`` that says why: those of Triton 3.0 and 3.1 compute an ``"ieee"`` dot wrongly, and
those of Triton 3.2 to 3.6 convert scalar arguments in a way that NumPy 2.4 refuses
(triton-lang/triton#9171). Compiled kernels on a GPU do not go through the interpreter.
"""
from __future__ import annotations

import functools
import os
import re

import torch

from ._validate import MAX_LR, check_bool, check_choice, check_momentum, check_positive

#: what FusedSGD uses of a QuantizedMLPBatch
_MODEL_PARTS = ("w_in", "b_in", "weights", "w_out", "b_out", "specs", "phi")

__all__ = ["FusedSGD", "FUSED_PRECISIONS"]

#: products of the fused update: exact fp32, TF32 tensor cores, or three TF32 products (about fp32)
FUSED_PRECISIONS = ("fp32", "tf32", "tf32x3")
_DOT = {"fp32": "ieee", "tf32": "tf32", "tf32x3": "tf32x3"}
#: the most thresholds (levels - 1) the staircase kernel handles; more levels use the plain lookup
MAX_KERNEL_THRESHOLDS = 255
#: tile sizes (rows of W, columns of W, batch rows per dot): compiled kernel, interpreter
_TILES = {False: (64, 64, 32), True: (32, 32, 16)}
#: the matmul kernel's tiles (rows, columns, depth per dot, warps, pipeline stages) that the compiled
#: kernel times on its first call of each shape; training multiplies 32-row minibatches by n x n weights
_MATMUL_CONFIGS = ((32, 64, 32, 4, 4), (32, 128, 32, 4, 4), (32, 64, 64, 4, 3), (32, 128, 64, 4, 3),
                   (64, 64, 32, 4, 4), (16, 128, 64, 4, 4), (32, 256, 32, 8, 3))
#: the matmul kernel's tiles in the interpreter (rows, columns, depth)
_MATMUL_TILES_INTERPRETED = (16, 32, 16)


def _interpreting():
    """Whether Triton's interpreter is on (``TRITON_INTERPRET``), read as Triton reads it."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.lru_cache(maxsize=2)
def _kernel(interpret):
    """The Triton kernels of :mod:`qmf_lite._fused_kernels`, wrapped on first use so that ``TRITON_INTERPRET``
    is read then (one set per mode): ``(triton, rank_update, staircase, matmul)``. Compiled, the
    matmul times the tile shapes of ``_MATMUL_CONFIGS`` on its first call of each shape. An
    interpreter that cannot run them (``_interpreter_defect``) raises a ``RuntimeError``."""
    try:
        import triton

        from . import _fused_kernels as kernels
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError("the fused SGD step needs Triton (`pip install triton`; torch's CUDA builds "
                           f"ship it): {err}") from err
    defect = _interpreter_defect() if interpret else None
    if defect:
        raise RuntimeError(defect)
    matmul = triton.jit(kernels.matmul)
    if not interpret:
        matmul = triton.autotune(configs=[triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
                                          for bm, bn, bk, w, s in _MATMUL_CONFIGS],
                                 key=["M", "N", "K", "DOT"])(matmul)
    return triton, triton.jit(kernels.rank_update), triton.jit(kernels.staircase), matmul


def _release(version):
    """The leading ``(major, minor)`` of a version string (``"3.6.0+git1"``: ``(3, 6)``)."""
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)


def _interpreter_defect(triton_version=None, numpy_version=None):
    """Why Triton's interpreter cannot run these kernels with these releases, or None where it can.

    Measured with the tests of the fused step (the interpreter's numbers against float64 and
    against ``torch.optim.SGD``): Triton 3.0 and 3.1 return wrong products from an ``"ieee"``
    ``tl.dot`` (errors of 10 and far more on 16 x 16 products of standard normals); Triton 3.2 to
    3.6 take ``int()`` of one-element arrays for scalar arguments, which NumPy 2.4 refuses with a
    ``TypeError`` (triton-lang/triton#9171, fixed in Triton 3.7). Defaults: the installed releases.
    """
    if triton_version is None:
        import triton
        triton_version = triton.__version__
    if numpy_version is None:
        import numpy
        numpy_version = numpy.__version__
    triton_release, numpy_release = _release(triton_version), _release(numpy_version)
    if triton_release < (3, 2):
        return (f"Triton {triton_version}'s interpreter computes the kernels' float32 products wrongly; "
                "the fused step on a CPU needs Triton >= 3.2")
    if triton_release < (3, 7) and numpy_release >= (2, 4):
        return (f"Triton {triton_version}'s interpreter fails with NumPy {numpy_version} (it converts arrays "
                "to scalars, which NumPy 2.4 refuses; triton-lang/triton#9171): use Triton >= 3.7 or "
                "NumPy < 2.4 for the fused step on a CPU")
    return None


def _triton(device):
    """(triton, rank_update, staircase, matmul) for tensors on ``device``, or a clear error where they cannot run."""
    interpret = _interpreting()
    if device.type != "cuda" and not interpret:
        raise RuntimeError(f"the fused SGD step runs Triton kernels: it needs a CUDA device, or Triton's "
                           f"interpreter (TRITON_INTERPRET=1) for tensors on {device.type}")
    return _kernel(interpret)


def _rank_update(p, v, a, g, lr, momentum, first, precision):
    r"""``p -= lr * v`` with ``v = a^T g`` (first step or no momentum) or ``v = momentum v + a^T g``, in place.

    ``p``, ``v``: ``(B, K, N)`` float32, contiguous, on one device (``v`` None at ``momentum = 0``);
    ``a``: ``(B, R, K)``, ``g``: ``(B, R, N)`` float32 (any strides).
    """
    triton, kernel, _, _ = _triton(p.device)
    B, K, N = p.shape
    R = a.shape[1]
    bk, bn, br = _TILES[_interpreting()]
    has_v = v is not None
    dot = _DOT[precision] if p.device.type == "cuda" else "ieee"
    grid = (triton.cdiv(K, bk), triton.cdiv(N, bn), B)
    with torch.profiler.record_function("fused_sgd_rank_update"):
        kernel[grid](p, v if has_v else p, a, g, K, N, R, float(lr), float(momentum),
                     *p.stride(), *a.stride(), *g.stride(),
                     HAS_V=has_v, FIRST=bool(first), DOT=dot, BK=bk, BN=bn, BR=br)


def _matmul(a, b, bias, precision):
    """``a @ b`` (``+ bias``) of each network in one Triton kernel, with ``precision``'s products (CUDA; exact
    float32 in the interpreter): ``a`` ``(B, M, K)``, ``b`` ``(B, K, N)`` float32 with any strides (a
    transposed or expanded view is read in place), ``bias`` broadcastable to ``(B, 1, N)`` or None."""
    triton, _, _, kernel = _triton(a.device)
    B, M, K = a.shape
    N = b.shape[2]
    c = torch.empty(B, M, N, device=a.device, dtype=torch.float32)
    dot = _DOT[precision] if a.device.type == "cuda" else "ieee"
    s_bias = bias.expand(B, 1, N).stride() if bias is not None else (0, 0, 0)
    args = (a, b, c if bias is None else bias, c, M, N, K, *a.stride(), *b.stride(), *c.stride(),
            s_bias[0], s_bias[2])
    with torch.profiler.record_function("fused_matmul"):
        if _interpreting():
            bm, bn, bk = _MATMUL_TILES_INTERPRETED
            kernel[(triton.cdiv(M, bm), triton.cdiv(N, bn), B)](*args, HAS_BIAS=bias is not None, DOT=dot,
                                                                BM=bm, BN=bn, BK=bk)
        else:
            grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]), B)  # noqa: E731
            kernel[grid](*args, HAS_BIAS=bias is not None, DOT=dot)
    return c


def _staircase(h, thresholds, values, clip, with_mask):
    """The staircase of each network (``h`` of shape ``(B, ...)``, tables as in :func:`~qmf_lite.staircase_tables`)
    in one kernel, equal to ``qmf_lite.ste``'s lookup bit for bit; and the int8 mask ``|h| <= clip`` (or None)."""
    triton, _, kernel, _ = _triton(h.device)
    h = h.contiguous()
    B, T = thresholds.shape
    M = h.numel() // B
    out = torch.empty_like(h)
    mask = torch.empty(h.shape, dtype=torch.int8, device=h.device) if with_mask else None
    block = 1024
    with torch.profiler.record_function("fused_staircase"):
        kernel[(triton.cdiv(M, block), B)](h, out, mask if with_mask else out, thresholds.contiguous(),
                                           values.contiguous(), clip.reshape(B).contiguous(), M, T,
                                           HAS_MASK=with_mask, BLOCK=block)
    return out, mask


class _FusedSTE(torch.autograd.Function):
    """The staircase forward (one Triton kernel), the STE backward ``slope * 1{|h| <= clip}`` from an int8 mask."""

    @staticmethod
    def forward(ctx, h, thresholds, values, slope, clip):
        out, mask = _staircase(h, thresholds, values, clip, ctx.needs_input_grad[0])
        if mask is not None:
            ctx.save_for_backward(mask, slope)
        return out

    @staticmethod
    def backward(ctx, grad):
        mask, slope = ctx.saved_tensors
        return grad * (mask * slope), None, None, None, None   # as ste_lookup: the gain is slope or 0


class _Linear(torch.autograd.Function):
    """``bias + x @ w`` (batched); its backward gives ``x`` and ``bias`` their gradients and hands the
    factors ``(w, x, delta)`` of ``w``'s gradient to ``sink`` instead of forming it. ``gemm``: None
    for torch's products (cuBLAS), or the precision of :func:`_matmul`'s Triton kernel."""

    @staticmethod
    def forward(ctx, x, w, bias, sink, gemm):
        ctx.save_for_backward(x, w)
        ctx.sink, ctx.has_bias, ctx.gemm = sink, bias is not None, gemm
        if gemm is not None:
            return _matmul(x, w, bias, gemm)
        return torch.bmm(x, w) if bias is None else torch.baddbmm(bias, x, w)

    @staticmethod
    def backward(ctx, delta):
        x, w = ctx.saved_tensors
        ctx.sink.append((w, x, delta))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (torch.bmm(delta, w.transpose(1, 2)) if ctx.gemm is None
                      else _matmul(delta, w.transpose(1, 2), None, ctx.gemm))
        grad_bias = delta.sum(1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias, None, None


class FusedSGD:
    r"""Momentum SGD for a :class:`~qmf_lite.QuantizedMLPBatch` whose weight gradients are formed inside the update.

    Used by :func:`qmf_lite.train` with ``update="fused"``; the same interface as a torch optimizer
    (``zero_grad``, ``step``) plus :meth:`forward`, which runs the model so that the backward pass
    hands each weight's gradient factors to this optimizer instead of forming the gradient. The
    update of every weight :math:`W` with gradient :math:`x^\top\delta` is PyTorch's:
    :math:`v = x^\top\delta` on the first step, then :math:`v = m v + x^\top\delta`, and
    :math:`W \leftarrow W - \eta v` (module docstring); biases go through ``torch.optim.SGD``.

    Parameters
    ----------
    model : QuantizedMLPBatch
        With float32 parameters.
    lr : float
        Learning rate, > 0 and at most float32's largest number.
    momentum : float in [0, 1)
    precision : ``"fp32"``, ``"tf32"`` or ``"tf32x3"``
        Products of the weight update: exact float32 (default), TF32 tensor cores, or 3xTF32
        (three TF32 products, about float32 accuracy). With ``"tf32x3"`` the forward and backward
        products (``x W`` and :math:`\delta W^\top`) run in a Triton kernel with 3xTF32 as well;
        otherwise they are torch's, in whatever precision torch is set to (:func:`~qmf_lite.train`
        sets exact float32 or TF32). TF32 and 3xTF32 take effect on a CUDA device only (on a CPU,
        under Triton's interpreter, every product is float32).
    staircase : bool
        Run each quantized activation in one Triton kernel (the thresholds counted in registers,
        the output level and an int8 mask :math:`|h|\le T` written), equal bit for bit to the
        plain lookup, and keep the mask instead of a float32 gain for the STE's backward pass
        (networks of more than 256 levels use the plain lookup, a binary search).

    Notes
    -----
    Constructing one needs neither Triton nor a GPU; the first :meth:`step` imports Triton and
    needs a CUDA device or ``TRITON_INTERPRET=1`` (then it runs on the CPU, slowly).
    """

    def __init__(self, model, lr, momentum=0.0, precision="fp32", staircase=True):
        # (the model is checked by what it holds: qmf_lite.training imports this module, not the reverse)
        if not isinstance(model, torch.nn.Module) or not all(hasattr(model, a) for a in _MODEL_PARTS):
            raise ValueError(f"model must be a QuantizedMLPBatch, got {type(model).__name__}")
        if model.w_out.dtype != torch.float32:
            raise ValueError(f"model must have float32 parameters for the fused step, got {model.w_out.dtype}")
        lr = float(check_positive(lr, "lr", allow_array=False))
        if lr > MAX_LR:
            raise ValueError(f"lr must be at most {MAX_LR:.4g} (float32's largest number), got {lr!r}")
        self.model, self.lr = model, lr
        self.momentum = check_momentum(momentum)
        self.precision = check_choice(precision, "precision", FUSED_PRECISIONS)
        self.staircase = check_bool(staircase, "staircase")
        #: the forward and backward products: torch's (cuBLAS) or, for 3xTF32, :func:`_matmul`'s kernel
        self._gemm = "tf32x3" if self.precision == "tf32x3" else None
        self.weights = [model.w_in, *model.weights, model.w_out]
        ids = {id(w) for w in self.weights}
        others = [p for p in model.parameters() if id(p) not in ids]
        self._others = torch.optim.SGD(others, lr=lr, momentum=self.momentum) if others else None
        self._factors = []
        #: the momentum buffer of each weight (after its first step), keyed by ``id`` of the weight
        self.buffers = {}

    def forward(self, x):
        """The model's logits for ``x`` (as ``model(x)``), recording the weights' gradient factors on backward."""
        m, sink = self.model, self._factors
        phi = self._phi if self.staircase else m.phi
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(m.specs), -1, -1)
        gemm = self._gemm
        h = _Linear.apply(x, m.w_in, m.b_in, sink, gemm)
        for w, b in zip(m.weights, m.biases):
            h = _Linear.apply(phi(h), w, b, sink, gemm)
        if m.layout == "bgs19":
            return phi(_Linear.apply(phi(h), m.w_out, m.b_out, sink, gemm))
        return _Linear.apply(phi(h), m.w_out, m.b_out, sink, gemm)

    def _phi(self, h):
        m = self.model
        if m.thresholds.shape[1] > MAX_KERNEL_THRESHOLDS:      # the kernel counts thresholds one by one
            return m.phi(h)
        return _FusedSTE.apply(h, m.thresholds, m.values, m.slope, m.clip)

    __call__ = forward

    def zero_grad(self, set_to_none=True):
        """Forget the recorded factors and clear the biases' gradients."""
        self._factors.clear()
        if self._others is not None:
            self._others.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self):
        """Update every weight from its recorded factors (one kernel each) and the biases with torch's SGD."""
        for w, x, delta in self._factors:
            key = id(w)
            first = key not in self.buffers
            if self.momentum and first:
                self.buffers[key] = torch.empty_like(w)
            _rank_update(w, self.buffers.get(key), x, delta, self.lr, self.momentum, first, self.precision)
        self._factors.clear()
        if self._others is not None:
            self._others.step()
