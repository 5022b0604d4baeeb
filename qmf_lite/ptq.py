r"""Post-training quantization of a trained network's weights: MSQ, GPFQ and SPFQ.

A layer with weights :math:`W` (``(N_out, N_in)``, one row per neuron, the torch convention)
sees calibration inputs :math:`X` (``(m, N_in)``, one row per sample) in the full-precision
network and :math:`\tilde X` in the partly quantized one (the previous layers already
quantized). Each neuron :math:`w` (a row of :math:`W`) is quantized one input index at a time,
:math:`t = 1, \dots, N_{\rm in}`, steering every choice by the running output error
:math:`u_t\in\mathbb R^m`:

.. math::
   u_0 = 0,\qquad
   q_t = \mathcal Q\!\left(\frac{\langle \tilde X_t,\ u_{t-1} + w_t X_t\rangle}{\|\tilde X_t\|^2}\right),\qquad
   u_t = u_{t-1} + w_t X_t - q_t \tilde X_t,

so that :math:`u_{N_{\rm in}} = Xw - \tilde X q` is the neuron's output error on the calibration
data. With :math:`\mathcal Q` the nearest element of the alphabet this is GPFQ (greedy path-following
quantization, Lybrand & Saab 2021; Zhang, Zhou & Saab 2022); with the unbiased stochastic rounding
:math:`\mathcal Q_{\rm stoc}` it is SPFQ (Zhang & Saab 2023). MSQ rounds each weight to its nearest
element, ignoring the data.

Alphabets follow the authors' code: ``bits`` give the largest index ``K = 2**(bits - 1)``, that is
``2K + 1 = 2**bits + 1`` levels :math:`\{k\delta : |k|\le K\}`, with the step
:math:`\delta = C\,\overline{\max_j|W_{ij}|}/K` (the mean over neurons ``i`` of each neuron's largest
weight, ``C = 1.16`` by default); the infinite grid :math:`\{k\delta : k\in\mathbb Z\}` keeps the
step and drops the clipping. In the book's table of bits (chapter "initialization"), these
``bits`` are the authors' convention: ``2**bits + 1`` levels, which need ``bits + 1`` bits of a
fixed-width code (:attr:`Alphabet.storage_bits`) and carry ``log2(2**bits + 1)`` bits of information
(:attr:`Alphabet.log2_levels`).

Arrays: numpy arrays in, numpy (float64) out; torch tensors in, tensors out, on their device. The arithmetic is
written once, in the array namespace of the inputs (``array-api-compat``). Rounding to the nearest level rounds
ties up (:func:`nearest_index`), everywhere in this module. The functions leave the CPU thread settings alone
unless asked: :func:`cpu_threads` is the context to wrap around the calls.

The loop over ``t`` is sequential; every step is vectorised over the ``N_out`` neurons, and steps are
grouped in blocks: inside a block the error's projections :math:`\langle\tilde X_t, u_{t-1}\rangle` are
updated from the block's Gram matrices, and :math:`u` itself is updated once per block by two matrix
products. This is the same recursion, reordered; the cost is :math:`O(N_{\rm out}N_{\rm in}(m + b))`
for blocks of ``b`` steps, linear in the number of weights.

References
----------
E. Lybrand and R. Saab, "A greedy algorithm for quantizing neural networks", JMLR 22 (2021).
J. Zhang, Y. Zhou and R. Saab, "Post-training quantization for neural networks with provable
guarantees", arXiv:2201.11113 (2022).
J. Zhang and R. Saab, "SPFQ: a stochastic algorithm and its error analysis for neural network
quantization", arXiv:2309.10975 (2023). Code checked: github.com/jayzhang0727/Stochastic-Path-Following-Quantization
(``src/quan``) and github.com/YixuanSeanZhou/Quantized_Neural_Nets (``src/step_algorithm.py``).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings

import numpy as np
from array_api_compat import array_namespace, device, size

from ._common import (all_finite, check_seed_or_generator, is_torch, limit_threads, numpy_generator, round_half_up,
                      torch_generator)
from ._validate import (check_bool, check_choice, check_int, check_int_range, check_nonnegative, check_positive,
                        check_real_array, check_real_in)

__all__ = [
    "Alphabet",
    "max_index_for_bits",
    "alphabet_for",
    "nearest_index",
    "stochastic_index",
    "QuantizedLayer",
    "quantize_layer",
    "msq",
    "gpfq",
    "spfq",
    "quantize_mlp",
    "relative_error",
    "cpu_threads",
    "METHODS",
]

#: the three quantizers of this module
METHODS = ("msq", "gpfq", "spfq")

#: indices beyond this cannot be rounded exactly in float64 (a near-dead input blew the argument up)
_MAX_SAFE_INDEX = 2.0**52
#: the largest index of a finite alphabet: ``max_index_for_bits(62)`` (indices are stored as int64)
_MAX_INDEX = 2**61
#: the range of C: the alphabet's radius relative to the weights (far outside it the step is absurd,
#: and the weights in units of the step leave float64's comfortable range)
_C_MIN, _C_MAX = 1e-6, 1e6
#: the most CPU threads a call may ask for
_MAX_THREADS = 1024


def max_index_for_bits(bits):
    r"""The largest index ``K = 2**(bits - 1)`` of a ``bits``-bit alphabet (the authors' convention).

    The alphabet :math:`\{k\delta : |k| \le K\}` then has ``2K + 1 = 2**bits + 1`` levels: ``bits = 1``
    is the ternary alphabet :math:`\{0, \pm\delta\}`, ``bits = 2`` has five levels.

    Parameters
    ----------
    bits : int
        An integer in ``[1, 62]`` (indices are stored as int64).

    Examples
    --------
    >>> [max_index_for_bits(b) for b in (1, 2, 3, 4)]
    [1, 2, 4, 8]
    """
    bits = check_int_range(bits, "bits", 1, 62, " (indices are int64)")
    return 2 ** (bits - 1)


@dataclasses.dataclass(frozen=True)
class Alphabet:
    r"""A uniform, symmetric weight alphabet :math:`\{k\,\delta\}`.

    Finite (``max_index = K``): :math:`\{k\delta : k = -K, \dots, K\}`, ``n_levels = 2K + 1``.
    Infinite (``max_index = None``): the whole grid :math:`\delta\mathbb Z`.

    Parameters
    ----------
    step : float
        The step :math:`\delta > 0`, finite; for a finite alphabet ``(max_index + 1) * step`` must be
        finite too (so are its levels).
    max_index : int or None
        The largest index, an integer in ``[1, 2**61]`` (``2**61 = max_index_for_bits(62)``), or ``None``
        for the infinite grid.

    Examples
    --------
    >>> a = Alphabet(0.5, 2)
    >>> a.n_levels, a.radius, a.values().tolist()
    (5, 1.0, [-1.0, -0.5, 0.0, 0.5, 1.0])
    >>> round(a.log2_levels, 2), a.storage_bits
    (2.32, 3)
    >>> Alphabet(0.5).n_levels
    inf
    """

    step: float
    max_index: int | None = None

    def __post_init__(self):
        if isinstance(self.step, bool) or not isinstance(self.step, numbers.Real):
            raise ValueError(f"step must be a finite number > 0, got {self.step!r}")
        object.__setattr__(self, "step", float(check_positive(self.step, "step", allow_array=False)))
        if self.max_index is not None:
            K = check_int_range(self.max_index, "max_index", 1, _MAX_INDEX, " (max_index_for_bits(62))")
            object.__setattr__(self, "max_index", K)
            if not math.isfinite((K + 1) * self.step):
                raise ValueError(f"step must be at most {np.finfo(np.float64).max / (K + 1):.6g} for max_index = {K} "
                                 f"(the levels up to (max_index + 1) * step must be finite), got {self.step!r}")

    @property
    def finite(self):
        """True for :math:`\\{k\\delta : |k|\\le K\\}`, False for the infinite grid."""
        return self.max_index is not None

    @property
    def n_levels(self):
        """``2K + 1`` (``math.inf`` for the infinite grid)."""
        return math.inf if self.max_index is None else 2 * self.max_index + 1

    @property
    def radius(self):
        """The largest level ``K * step`` (``math.inf`` for the infinite grid)."""
        return math.inf if self.max_index is None else self.max_index * self.step

    @property
    def log2_levels(self):
        """``log2(n_levels)``, the information per weight in bits (``math.inf`` for the infinite grid).

        Not the authors' "bits": ``alphabet_for(W, bits=2)`` has 5 levels and ``log2_levels`` 2.32.
        """
        return math.log2(self.n_levels)

    @property
    def storage_bits(self):
        """``ceil(log2(n_levels))``, the bits of a fixed-width code for one level (``math.inf`` for the
        infinite grid): the book's table of bits. ``alphabet_for(W, bits=b)`` needs ``b + 1``."""
        return math.inf if self.max_index is None else (self.n_levels - 1).bit_length()

    @property
    def bits(self):
        """``log2(n_levels)``, deprecated in favour of :attr:`log2_levels`.

        "bits" means too many things (the authors' ``bits`` give ``2**bits + 1`` levels); use
        :attr:`log2_levels`, :attr:`storage_bits` or :attr:`n_levels`.
        """
        warnings.warn("Alphabet.bits is deprecated: it is log2(n_levels), now Alphabet.log2_levels "
                      "(see also Alphabet.storage_bits and Alphabet.n_levels)", DeprecationWarning, stacklevel=2)
        return self.log2_levels

    def values(self):
        """The levels, ``step * arange(-K, K + 1)`` (finite alphabets only)."""
        if self.max_index is None:
            raise ValueError("max_index is None: the infinite grid has no finite list of values")
        return self.step * np.arange(-self.max_index, self.max_index + 1, dtype=np.float64)

    def infinite(self):
        """The infinite grid with the same step."""
        return Alphabet(self.step, None)

    def with_max_index(self, max_index):
        """The same step with another largest index (``None``: the infinite grid)."""
        return Alphabet(self.step, max_index)


def _max_abs_rowwise_mean(weight):
    with np.errstate(over="ignore"):   # an overflowing mean is refused by the caller
        if is_torch(weight):   # the same float64 sum as numpy's, so that both give the same step to the last bit
            return float(np.mean(weight.detach().abs().amax(dim=1).double().cpu().numpy()))
        return float(np.abs(weight).max(axis=1).mean())


def alphabet_for(weight, bits, C=1.16, finite=True):
    r"""The authors' alphabet for a layer: ``K = 2**(bits-1)`` and :math:`\delta = C\,\overline{\max_j |W_{ij}|}/K`.

    .. math:: \delta = \frac{C}{K}\cdot\frac{1}{N_{\rm out}}\sum_{i=1}^{N_{\rm out}}\max_j |W_{ij}|

    (as in ``quantize_layer`` of Zhang & Saab's code with ``percentile = 1``).

    Parameters
    ----------
    weight : array_like or torch.Tensor, shape (N_out, N_in)
        The layer's weights: real, finite, not all zero, and such that the step is a positive finite
        float64.
    bits : int
        An integer in ``[1, 62]``: the largest index is ``K = 2**(bits - 1)``.
    C : float
        A real number in ``[1e-6, 1e6]``, the scale of the alphabet's radius relative to the weights
        (default 1.16).
    finite : bool
        ``True`` or ``False``; False keeps the step and returns the infinite grid.

    Examples
    --------
    >>> W = np.array([[0.5, -1.0], [0.25, 0.5]])
    >>> a = alphabet_for(W, bits=2, C=1.0)
    >>> a.max_index, a.step, a.n_levels
    (2, 0.375, 5)
    """
    K = max_index_for_bits(bits)
    C = check_real_in(C, "C", _C_MIN, _C_MAX)
    finite = check_bool(finite, "finite")
    return _alphabet_for(_check_weight(weight), K, C, finite)


def _alphabet_for(weight, K, C, finite):
    """:func:`alphabet_for` on checked arguments (``K`` the largest index); refuses a zero or non-finite step."""
    radius = _max_abs_rowwise_mean(weight)
    if not radius > 0:
        raise ValueError("weight must not be all zero: the alphabet's step would be 0")
    step = C * radius / K
    if not (math.isfinite(step) and step > 0 and math.isfinite((K + 1) * step)):
        raise ValueError(f"weight must have a mean largest |W_ij| per row ({radius:g}) that gives a positive, "
                         f"finite step C * mean / K in float64 (got {step!r} for C = {C:g}, K = {K})")
    return Alphabet(step, K if finite else None)


def nearest_index(x, alphabet):
    r"""Index of the nearest level: :math:`k = \operatorname{clip}(\lfloor x/\delta + 1/2\rfloor, -K, K)`.

    Ties round up (towards :math:`+\infty`), as ``msq`` in the authors' code: the package's one rounding
    convention, also used inside :func:`quantize_layer`. Works on numpy arrays and torch tensors.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Finite real numbers (no NaN, inf, bools, strings or complex numbers). On the infinite grid
        :math:`|x| \le 2^{52}\delta` (beyond, the index cannot be rounded exactly in float64); a finite
        alphabet takes any finite x (the index saturates at :math:`\pm K`).
    alphabet : Alphabet

    Returns
    -------
    int64 array (or torch long tensor) of the shape of ``x``

    Examples
    --------
    >>> nearest_index(np.array([-0.74, -0.2, 0.26, 3.0]), Alphabet(0.5, 2)).tolist()
    [-1, 0, 1, 2]
    >>> nearest_index(np.array([-0.75, -0.25, 0.25, 0.75]), Alphabet(0.5)).tolist()   # ties round up
    [-1, 0, 1, 2]
    """
    return _nearest_index(_check_index_input(x, alphabet, "x"), alphabet)


def stochastic_index(x, alphabet, seed=None):
    r"""Unbiased stochastic rounding :math:`\mathcal Q_{\rm stoc}`, as an index.

    With :math:`x/\delta = k + p`, :math:`k = \lfloor x/\delta\rfloor`, :math:`0 \le p < 1`:

    .. math:: \mathcal Q_{\rm stoc}(x) = \begin{cases}(k+1)\,\delta & \text{with probability } p,\\
              k\,\delta & \text{with probability } 1-p,\end{cases}
              \qquad \mathbb E\,\mathcal Q_{\rm stoc}(x) = x,\quad
              \operatorname{Var}\mathcal Q_{\rm stoc}(x) = \delta^2 p(1-p),

    then clipped to :math:`[-K, K]` for a finite alphabet (which biases values beyond the radius).

    Parameters
    ----------
    x : array_like or torch.Tensor
        Finite real numbers; on the infinite grid :math:`|x| \le 2^{52}\delta` (as in :func:`nearest_index`).
    alphabet : Alphabet
    seed : None, int, numpy.random.Generator or torch.Generator, optional
        An integer in ``[0, 2**63 - 1]``, or a generator of the kind of ``x`` (numpy for arrays, torch for
        tensors); None draws fresh entropy.

    Examples
    --------
    >>> k = stochastic_index(np.full(100_000, 0.3), Alphabet(1.0), seed=0)
    >>> sorted(set(k.tolist())), bool(abs(k.mean() - 0.3) < 0.01)
    ([0, 1], True)
    """
    check_seed_or_generator(seed)
    x = _check_index_input(x, alphabet, "x")
    return _stochastic_index(x, alphabet, _generator(seed, x))


# --- checks at the door -------------------------------------------------------------------------------------------

def _check_alphabet(alphabet):
    if not isinstance(alphabet, Alphabet):
        raise ValueError(f"alphabet must be an Alphabet (see alphabet_for), got {type(alphabet).__name__}")
    return alphabet


def _check_tensor(x, name):
    """A real torch tensor with finite entries (integer tensors are taken as they are)."""
    if x.is_complex() or x.dtype == _torch_bool():
        raise ValueError(f"{name} must be a tensor of real numbers, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(x.isfinite().all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def _torch_bool():
    import torch

    return torch.bool


def _check_within_grid(x, alphabet, name):
    """On the infinite grid, ``|x| <= 2**52 step``: beyond, an index cannot be rounded exactly in float64."""
    if alphabet.finite:
        return
    largest = _max_abs(x)
    if largest > _MAX_SAFE_INDEX * alphabet.step:
        raise ValueError(f"{name} must lie within 2**52 steps of 0 on the infinite grid (|{name}| <= 2**52 * "
                         f"alphabet.step = {_MAX_SAFE_INDEX * alphabet.step:g}), got largest |{name}| = {largest:g}: "
                         "beyond, its index cannot be rounded exactly in float64")


def _check_index_input(x, alphabet, name):
    """``x`` checked for the rounding functions: a float64 array (numpy) or the tensor as given."""
    _check_alphabet(alphabet)
    x = _check_tensor(x, name) if is_torch(x) else check_real_array(x, name)
    _check_within_grid(x, alphabet, name)
    return x


def _check_weight(weight):
    if is_torch(weight):
        if weight.ndim != 2 or weight.shape[0] < 1 or weight.shape[1] < 1:
            raise ValueError(f"weight must be a 2-D array of shape (N_out, N_in), got shape {tuple(weight.shape)}")
        return _check_tensor(weight, "weight")
    arr = check_real_array(weight, "weight")
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"weight must be a 2-D array of shape (N_out, N_in), got shape {arr.shape}")
    return arr


def _check_data(x, name, n_in, torch_mode):
    if x is None:
        raise ValueError(f"{name} is required for GPFQ and SPFQ: calibration inputs of shape (m, N_in)")
    if torch_mode != is_torch(x):
        raise ValueError(f"{name} must be a torch tensor when weight is one, and a numpy array otherwise")
    x = _check_tensor(x, name) if torch_mode else check_real_array(x, name)
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D, of shape (m, N_in) with m >= 1, got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"{name} must hold m >= 1 calibration samples, got m = {shape[0]}")
    if shape[1] != n_in:
        raise ValueError(f"{name} must have N_in = {n_in} columns (one per input of the layer), got shape {shape}")
    return x


def _check_threads(threads):
    return None if threads is None else check_int_range(threads, "threads", 1, _MAX_THREADS)


@dataclasses.dataclass(frozen=True)
class _Options:
    """The settings shared by quantize_layer and quantize_mlp, checked (``seed`` may be a generator)."""

    method: str
    seed: object
    dead_tol: float
    dead_fill: str
    block: int
    threads: int | None


def _check_options(method, seed, dead_tol, dead_fill, block, threads):
    """The settings shared by quantize_layer and quantize_mlp, validated."""
    method = check_choice(method, "method", METHODS)
    seed = check_seed_or_generator(seed)
    tol = check_nonnegative(dead_tol, "dead_tol")
    if tol.ndim:
        raise ValueError(f"dead_tol must be a single finite number >= 0, got an array of shape {tol.shape}")
    dead_fill = check_choice(dead_fill, "dead_fill", ("round", "zero"))
    block = check_int(block, "block", 1)
    return _Options(method, seed, float(tol), dead_fill, block, _check_threads(threads))


def _check_dtype(dtype, torch_mode):
    """The working precision: float32 or float64 of the array library in use (default float64)."""
    if torch_mode:
        import torch

        if dtype is None:
            return torch.float64
        if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be None, torch.float32 or torch.float64, got {dtype!r}")
        return dtype
    if dtype is None:
        return np.dtype(np.float64)
    try:
        ok = np.dtype(dtype) in (np.float32, np.float64)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"dtype must be None, numpy float32 or numpy float64, got {dtype!r}")
    return np.dtype(dtype)


def _check_layer(weight, x, xq, alphabet, method, dtype):
    """quantize_layer's arrays checked: ``weight``, ``x`` and ``xq`` (``x`` may be None for MSQ only, and
    ``xq`` defaults to ``x``) and the working ``dtype``."""
    _check_alphabet(alphabet)
    weight = _check_weight(weight)
    torch_mode = is_torch(weight)
    dtype = _check_dtype(dtype, torch_mode)
    _check_within_grid(weight, alphabet, "weight")
    if x is None and method == "msq":
        return weight, None, None, dtype
    n_in = weight.shape[1]
    x = _check_data(x, "x", n_in, torch_mode)
    xq = x if xq is None else _check_data(xq, "xq", n_in, torch_mode)
    if xq.shape[0] != x.shape[0]:
        raise ValueError(f"xq must have the same m = {x.shape[0]} rows as x, got {xq.shape[0]}")
    return weight, x, xq, dtype


# --- arrays: one rule for numpy and torch ---------------------------------------------------------------------------
# The arithmetic runs in the namespace of the inputs, ``array_namespace(x)`` (array-api-compat: numpy for arrays,
# torch for tensors, on their device). Library-specific code is kept to what the array API leaves open: random
# numbers (_generator, _uniform), C-contiguous working copies and the dtypes of the results (_working_arrays,
# _layer_result: numpy in float64 out, a tensor keeps its own dtype).

def _max_abs(a):
    """The largest ``|a_i|`` as a float (0 for an empty array; NaN if ``a`` holds a NaN)."""
    xp = array_namespace(a)
    return float(xp.max(xp.abs(a))) if size(a) else 0.0


def _generator(seed, like):
    """The generator that ``seed`` stands for, of the library of ``like`` (numpy or torch, on its device)."""
    return torch_generator(seed, like.device) if is_torch(like) else numpy_generator(seed)


def _uniform(gen, shape, like):
    """Uniform numbers in [0, 1) of ``like``'s dtype (and device), drawn from ``gen``."""
    if is_torch(like):
        import torch

        return torch.rand(shape, generator=gen, dtype=like.dtype, device=like.device)
    return gen.random(shape, dtype=like.dtype)


# --- rounding: one implementation ---------------------------------------------------------------------------------

def _scaled(x, alphabet):
    """``x / step``; on a finite alphabet ``x`` is first clipped to ``±(K + 1) step`` (its index saturates at
    ``±K`` there anyway), so that the division cannot overflow."""
    if alphabet.finite:
        edge = (alphabet.max_index + 1) * alphabet.step
        if _max_abs(x) > edge:
            x = array_namespace(x).clip(x, -edge, edge)
    return x / alphabet.step


def _round_nearest(v, K):
    """``round_half_up(v)`` (ties up), clipped to ``[-K, K]`` (``K = None``: not clipped), as floats."""
    k = round_half_up(v)
    return k if K is None else array_namespace(k).clip(k, -K, K)


def _round_stochastic(v, r, K):
    """Unbiased stochastic rounding with the uniforms ``r``: ``floor(v) + 1`` with probability ``v - floor(v)``,
    clipped to ``[-K, K]`` (``K = None``: not clipped), as floats."""
    xp = array_namespace(v)
    k = xp.floor(v)
    k = k + xp.astype(r < v - k, v.dtype)
    return k if K is None else xp.clip(k, -K, K)


def _as_index(k):
    xp = array_namespace(k)
    return xp.astype(k, xp.int64)


def _nearest_index(x, alphabet):
    return _as_index(_round_nearest(_scaled(x, alphabet), alphabet.max_index))


def _stochastic_index(x, alphabet, gen):
    v = _scaled(x, alphabet)
    return _as_index(_round_stochastic(v, _uniform(gen, v.shape, v), alphabet.max_index))


@dataclasses.dataclass
class QuantizedLayer:
    r"""The result of :func:`quantize_layer`.

    Attributes
    ----------
    weight : ndarray or torch.Tensor, shape (N_out, N_in)
        The quantized weights :math:`Q = \delta\,k`.
    index : integer array, shape (N_out, N_in)
        The indices :math:`k` (within ``[-K, K]`` for a finite alphabet).
    alphabet : Alphabet
    method : str
    residual : ndarray or torch.Tensor, shape (m, N_out), or None
        :math:`XW^\top - \tilde XQ^\top`, the output error on the calibration data (``None`` for
        MSQ called without data).
    reference_sq_norm : float
        :math:`\|XW^\top\|_F^2` (``nan`` without data).
    n_dead : int
        Input columns skipped by the dead-input guard.
    """

    weight: object
    index: object
    alphabet: Alphabet
    method: str
    residual: object = None
    reference_sq_norm: float = math.nan
    n_dead: int = 0

    @property
    def relative_error(self):
        r"""Relative square error on the calibration data, :math:`\|XW^\top - \tilde XQ^\top\|_F^2/\|XW^\top\|_F^2`."""
        if self.residual is None:
            raise ValueError("this layer was quantized without calibration data (residual is None)")
        xp = array_namespace(self.residual)
        r = xp.astype(self.residual, xp.float64)
        return float(xp.sum(r**2)) / self.reference_sq_norm

    @property
    def max_abs_index(self):
        """The largest :math:`|k|` used: the alphabet a finite grid would need to hold these weights."""
        xp = array_namespace(self.index)
        return int(xp.max(xp.abs(self.index)))


def cpu_threads(threads):
    """A context in which torch and numpy's BLAS use at most ``threads`` CPU threads, restored on leaving.

    The quantizers' loop over the inputs is sequential and each of its steps is a small product, so
    extra threads lose more to synchronisation than they gain, badly so on shared cores (see the
    benchmark): wrap the calls in ``with qmf.ptq.cpu_threads(1):``. The functions of this module leave
    the thread settings alone unless asked (``threads=`` of :func:`quantize_layer` and
    :func:`quantize_mlp` is the same context around one call).

    Parameters
    ----------
    threads : int
        An integer in ``[1, 1024]``.

    Examples
    --------
    >>> W = np.array([[0.5, -1.0], [0.25, 0.5]])
    >>> with cpu_threads(1):
    ...     msq(W, alphabet=Alphabet(0.25)).index.tolist()
    [[2, -4], [1, 2]]
    """
    return limit_threads(check_int_range(threads, "threads", 1, _MAX_THREADS))


# --- one layer ----------------------------------------------------------------------------------------------------

def _path_following(wt, x, xq, K, gen, dead, fill, block):
    """The GPFQ/SPFQ recursion in units of the step, blocked over the input index.

    ``wt``: (N_in, N_out) weights / step; ``x``, ``xq``: (m, N_in); ``K``: the largest index (None: the
    infinite grid); ``gen``: SPFQ's generator (None: GPFQ); ``dead``: booleans per input column (python
    list); ``fill``: the indices of dead columns. Returns the indices as a float array (N_in, N_out) and the
    final error ``U = X W^T - Xq Q^T`` / step, shape (m, N_out).
    """
    xp = array_namespace(wt)
    n_in, n_out = wt.shape
    qt = xp.zeros((n_in, n_out), dtype=wt.dtype, device=device(wt))
    u = xp.zeros((x.shape[0], n_out), dtype=wt.dtype, device=device(wt))
    for s in range(0, n_in, block):
        e = min(s + block, n_in)
        xb, xqb, wb, qb = x[:, s:e], xq[:, s:e], wt[s:e], qt[s:e]   # qb: a view, written in place
        gram = xqb.T @ xqb                   # gram[j, i] = <Xq_j, Xq_i>
        r = None if gen is None else _uniform(gen, (e - s, n_out), wt)
        _steer_block(wb, qb, xqb.T @ u, xqb.T @ xb, gram, r, K, dead[s:e], fill[s:e])
        if K is None:
            _check_block(qb, gram, s)
        u += xb @ wb - xqb @ qb
    return qt, u


def _steer_block(wb, qb, proj, cross, gram, r, K, dead, fill):
    """Quantize one block's input indices in order, writing their indices into ``qb``.

    ``proj[j] = <Xq_j, u>`` with ``u`` the error at the block's start, ``cross[j, i] = <Xq_j, X_i>`` (row ``j``
    contiguous), ``gram[j, i] = <Xq_j, Xq_i>``; ``r``: SPFQ's uniforms for the block (None: GPFQ).
    """
    for j in range(wb.shape[0]):
        if dead[j]:
            qb[j] = fill[j]
            continue
        a = proj[j] + cross[j, j] * wb[j]
        if j:
            a = a + cross[j, :j] @ wb[:j] - gram[j, :j] @ qb[:j]
        v = a / gram[j, j]
        qb[j] = _round_nearest(v, K) if r is None else _round_stochastic(v, r[j], K)


def _check_block(qb, gram, s):
    """On the infinite grid, every index of the block must stay below 2**52 (this also catches inf and NaN)."""
    if _max_abs(qb) < _MAX_SAFE_INDEX:
        return
    bad = next(j for j in range(qb.shape[0]) if not _max_abs(qb[j]) < _MAX_SAFE_INDEX)
    raise ValueError(
        f"input column {s + bad} has |Xq_t|^2 = {float(gram[bad, bad]):.3e}, so small that the "
        "argument of the quantizer blew up past 2**52 steps; raise dead_tol or use a finite alphabet")


def _dead_columns(xq, wt, K, dead_tol, dead_fill):
    """The dead-input guard: which columns of ``xq`` do not steer (a python list of bools), and the indices
    (N_in, N_out) that their weights get instead."""
    xp = array_namespace(xq)
    norms = xp.sum(xq * xq, axis=0)
    mean = float(xp.mean(norms))
    dead = [bool(d) for d in ((norms <= dead_tol * mean) | (norms == 0)).tolist()]
    if dead_fill == "zero":
        return dead, xp.zeros(wt.shape, dtype=wt.dtype, device=device(wt))
    return dead, _round_nearest(wt, K)


def _working_arrays(weight, x, xq, step, dtype):
    """``W^T / step`` (N_in, N_out), ``X`` and ``Xq`` as C-contiguous arrays of the working dtype.

    Numpy divides in float64 and rounds once to the working dtype; a tensor is cast to the working dtype
    (on the weight's device) first, and divided in it.
    """
    if is_torch(weight):
        def work(a):
            return a.detach().to(device=weight.device, dtype=dtype).contiguous()

        return work(weight.T) / step, work(x), work(xq)
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in (weight.T / step, x, xq))


def _quantize_indices(wt, x, xq, K, gen, opts):
    """The indices (N_in, N_out), the error / step (m, N_out) and the number of dead columns."""
    if opts.method == "msq":
        qt = _round_nearest(wt, K)
        return qt, x @ wt - xq @ qt, 0
    dead, fill = _dead_columns(xq, wt, K, opts.dead_tol, opts.dead_fill)
    qt, u = _path_following(wt, x, xq, K, gen, dead, fill, opts.block)
    return qt, u, sum(dead)


def _layer_result(weight, qt, residual, ref_sq, n_dead, alphabet, method, dtype):
    """The QuantizedLayer: for numpy, float64 weights and residual; for a tensor, the weights in its own
    dtype (the working dtype for an integer tensor) and the residual in the working dtype."""
    index = _as_index(qt.T)
    if is_torch(weight):
        q = (alphabet.step * qt.T).to(weight.dtype if weight.dtype.is_floating_point else dtype)
    else:
        q = alphabet.step * index.astype(np.float64)
        residual = residual.astype(np.float64)
    return QuantizedLayer(q, index, alphabet, method, residual, ref_sq, int(n_dead))


def _quantize_layer(weight, x, xq, alphabet, opts, dtype):
    """:func:`quantize_layer` on checked arguments (``x`` None: MSQ without data)."""
    if x is None:
        k = _nearest_index(weight, alphabet)
        return QuantizedLayer(alphabet.step * array_namespace(k).astype(k, weight.dtype), k, alphabet, "msq")
    gen = _generator(opts.seed, weight) if opts.method == "spfq" else None
    step = alphabet.step
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # an overflow is checked, not warned
        wt, x, xq = _working_arrays(weight, x, xq, step, dtype)
        qt, u, n_dead = _quantize_indices(wt, x, xq, alphabet.max_index, gen, opts)
        ref = x @ wt
        ref_sq = float(array_namespace(ref).sum(ref * ref)) * step * step
        residual = u * step
        ok = all_finite(qt) and all_finite(residual) and math.isfinite(ref_sq)
    if not ok:   # an overflow in float64 (or float32): checked here rather than warned about
        raise ValueError("weight and x must be small enough, relative to alphabet.step, that the products X W^T / step, "
                         f"the output error and |X W^T|^2 stay finite in {dtype}; rescale them or use a larger step")
    return _layer_result(weight, qt, residual, ref_sq, n_dead, alphabet, opts.method, dtype)


def quantize_layer(weight, x=None, xq=None, *, alphabet, method="gpfq", seed=None, dead_tol=1e-2,
                   dead_fill="round", block=64, dtype=None, threads=None):
    r"""Quantize one layer with MSQ, GPFQ or SPFQ, all neurons at once.

    .. math::
       q_t = \mathcal Q\!\left(\frac{\langle \tilde X_t,\ u_{t-1} + w_t X_t\rangle}{\|\tilde X_t\|^2}\right),
       \qquad u_t = u_{t-1} + w_t X_t - q_t \tilde X_t,\qquad u_0 = 0,

    for every neuron ``w`` (row of ``weight``), with :math:`\mathcal Q` nearest rounding (GPFQ, ties up as in
    :func:`nearest_index`) or unbiased stochastic rounding (SPFQ, as in :func:`stochastic_index`) onto
    ``alphabet``; MSQ rounds each weight to its nearest level.

    Parameters
    ----------
    weight : ndarray or torch.Tensor, shape (N_out, N_in)
        The layer's weights (rows are neurons): finite real numbers, within :math:`2^{52}` steps of 0 on
        the infinite grid.
    x : ndarray or torch.Tensor, shape (m, N_in), m >= 1
        The layer's inputs on ``m`` calibration samples in the full-precision network, finite real numbers
        (optional for MSQ: then no residual is computed); a tensor exactly when ``weight`` is one.
    xq : same shape as ``x``, optional
        The same samples' inputs in the partly quantized network (default: ``x``, the first layer).
        ``weight``, ``x`` and ``xq`` must be small enough, relative to the step, that the products, the
        error and :math:`\|XW^\top\|_F^2` are finite in the working precision (else a ValueError).
    alphabet : Alphabet
        For example :func:`alphabet_for` ``(weight, bits)``.
    method : {"msq", "gpfq", "spfq"}
    seed : None, int, numpy.random.Generator or torch.Generator, optional
        Randomness of SPFQ: one uniform vector over the neurons is drawn per input index ``t``. An integer
        in ``[0, 2**63 - 1]`` or a generator of the kind of ``weight`` (checked for every method, used by
        SPFQ only).
    dead_tol : float, >= 0
        Dead-input guard (our choice of rule): a column with :math:`\|\tilde X_t\|^2 \le` ``dead_tol`` times
        the mean of :math:`\|\tilde X_s\|^2` over the columns, or exactly zero, is not used to steer; its
        weights get ``dead_fill``. Steering by a column of small norm divides by it: the argument grows like
        :math:`1/\|\tilde X_t\|`, without bound on the infinite grid. The default ``1e-2`` bounds that growth
        to about ten times its typical size; ``0`` guards exact zeros only, as the authors' code does.
    dead_fill : {"round", "zero"}
        Dead columns get the nearest level of :math:`w_t` (``"round"``, our default) or 0 (``"zero"``, the
        authors' choice for exactly zero columns).
    block : int, >= 1
        Input indices per block (a speed setting; the result does not depend on it beyond round-off).
    dtype : numpy or torch float dtype, optional
        Working precision: None (float64, the default), float32 or float64 of numpy for arrays and of torch
        for tensors (float32 is faster; see the benchmark).
    threads : int in [1, 1024] or None
        ``None`` (the default) leaves the CPU threads as they are; an integer is shorthand for running the
        call inside :func:`cpu_threads` ``(threads)``, the context that a caller wraps around several calls.

    Returns
    -------
    QuantizedLayer

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.standard_normal((64, 256)) / 16, rng.standard_normal((32, 256))
    >>> a = alphabet_for(W, bits=2)
    >>> [round(quantize_layer(W, X, alphabet=a, method=m, seed=0).relative_error, 3)
    ...  for m in ("msq", "gpfq", "spfq")]
    [0.252, 0.033, 0.061]
    """
    opts = _check_options(method, seed, dead_tol, dead_fill, block, threads)
    weight, x, xq, dtype = _check_layer(weight, x, xq, alphabet, opts.method, dtype)
    with limit_threads(opts.threads):
        return _quantize_layer(weight, x, xq, alphabet, opts, dtype)


def msq(weight, x=None, xq=None, *, alphabet):
    """Nearest rounding of every weight (memoryless scalar quantization); see :func:`quantize_layer`."""
    return quantize_layer(weight, x, xq, alphabet=alphabet, method="msq")


def gpfq(weight, x, xq=None, *, alphabet, **kwargs):
    """Greedy path-following quantization; see :func:`quantize_layer`."""
    return quantize_layer(weight, x, xq, alphabet=alphabet, method="gpfq", **kwargs)


def spfq(weight, x, xq=None, *, alphabet, seed=None, **kwargs):
    """Stochastic path-following quantization; see :func:`quantize_layer`."""
    return quantize_layer(weight, x, xq, alphabet=alphabet, method="spfq", seed=seed, **kwargs)


# --- a network ----------------------------------------------------------------------------------------------------

def quantize_mlp(model, x, *, bits, method="gpfq", C=1.16, finite=True, seed=None, dead_tol=1e-2,
                 dead_fill="round", dtype=None, block=64, threads=None):
    r"""Quantize the ``nn.Linear`` layers of a torch ``nn.Sequential`` in order, feeding :math:`\tilde X` forward.

    For layer :math:`\ell` the calibration batch ``x`` is propagated through the full-precision model
    (giving :math:`X^{(\ell)}`) and through the model whose layers before :math:`\ell` are already
    quantized (giving :math:`\tilde X^{(\ell)}`); the layer is quantized by :func:`quantize_layer` with
    the alphabet :func:`alphabet_for` ``(W, bits, C)`` of its own weights. Biases and every other module
    are left as they are.

    Parameters
    ----------
    model : torch.nn.Sequential
        Linear layers and element-wise modules (activations), applied in order; at least one Linear.
    x : torch.Tensor, shape (m, features)
        Calibration inputs, m >= 1, finite real numbers that the model accepts.
    bits : int
        An integer in ``[1, 62]`` (``K = 2**(bits - 1)``).
    method : {"msq", "gpfq", "spfq"}
    C : float
        A real number in ``[1e-6, 1e6]`` (as in :func:`alphabet_for`).
    finite : bool
        ``True`` or ``False``; False: the infinite grid with the same step.
    seed : None, int or torch.Generator, optional
        For SPFQ: one generator, used by the layers in order (an integer in ``[0, 2**63 - 1]`` seeds it).
    dead_tol, dead_fill, block, threads
        As in :func:`quantize_layer`.
    dtype : torch dtype, optional
        Working precision of the quantization: None (float64, the default), ``torch.float32`` or
        ``torch.float64``.

    Returns
    -------
    qmodel : torch.nn.Sequential
        A copy of ``model`` with quantized weights.
    layers : list of QuantizedLayer
        One per linear layer, in order.
    """
    import torch

    _check_model_input(model, x)
    opts = _check_options(method, seed, dead_tol, dead_fill, block, threads)
    K = max_index_for_bits(bits)
    C = check_real_in(C, "C", _C_MIN, _C_MAX)
    finite = check_bool(finite, "finite")
    dtype = _check_dtype(dtype, True)
    if opts.method == "spfq":   # one generator for all the layers, in order
        opts = dataclasses.replace(opts, seed=torch_generator(opts.seed, x.device))
    with limit_threads(opts.threads), torch.no_grad():
        return _quantize_mlp(model, x, K, C, finite, opts, dtype)


def _check_model_input(model, x):
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise ValueError(f"model must be a torch.nn.Sequential, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a torch tensor of shape (m, features) with m >= 1, got {shape}")
    _check_tensor(x, "x")


def _quantize_mlp(model, x, K, C, finite, opts, dtype):
    """:func:`quantize_mlp` on checked arguments: each Linear in turn, the batch propagated through both models."""
    import copy

    import torch

    qmodel = copy.deepcopy(model)
    results = []
    h, hq = x, x
    for mod, qmod in zip(model, qmodel):
        if isinstance(mod, torch.nn.Linear):
            res = _quantize_linear(mod.weight.detach(), h, hq, K, C, finite, opts, dtype)
            qmod.weight.copy_(res.weight.to(qmod.weight.dtype))
            results.append(res)
        try:
            h, hq = mod(h), qmod(hq)
        except RuntimeError as exc:   # a shape or dtype the model does not take
            raise ValueError(f"x must fit the model: {type(mod).__name__} could not take the calibration "
                             f"batch ({exc})") from exc
    if not results:
        raise ValueError("model has no torch.nn.Linear layer to quantize")
    return qmodel, results


def _quantize_linear(w, h, hq, K, C, finite, opts, dtype):
    """One Linear layer of quantize_mlp. Its weights and inputs come from the model, not from the caller, so
    they are checked here: the alphabet from the weights, then the layer quantized in the working dtype."""
    alphabet = _alphabet_for(_check_weight(w), K, C, finite)
    weight, h, hq, dtype = _check_layer(w.to(dtype), h.to(dtype), hq.to(dtype), alphabet, opts.method, dtype)
    return _quantize_layer(weight, h, hq, alphabet, opts, dtype)


def relative_error(reference, approx):
    r"""Relative square error :math:`\|A - B\|_F^2 / \|A\|_F^2` of ``approx`` (B) against ``reference`` (A).

    Both are scaled by the same power of two before squaring (exact, so the result is that of the plain
    formula), so that no square overflows.

    Parameters
    ----------
    reference : array_like or torch.Tensor
        A: finite real numbers, not all zero.
    approx : array_like or torch.Tensor
        B: finite real numbers of the shape of ``reference`` (one of the two may be a numpy array when the
        other is a tensor). The ratio must be finite in float64 (a ValueError when ``reference`` is so
        small against ``approx`` that it is not).

    Examples
    --------
    >>> relative_error(np.array([3.0, 4.0]), np.array([3.0, 3.0]))
    0.04
    """
    a, b = _check_reference_and_approx(reference, approx)
    ref_max = _max_abs(a)
    if not ref_max > 0:
        raise ValueError("reference must not be all zero")
    e = -math.frexp(max(ref_max, _max_abs(b)))[1]
    a, b = _ldexp(a, e), _ldexp(b, e)
    xp = array_namespace(a)
    den = float(xp.sum(a * a))
    num = float(xp.sum((a - b) ** 2))
    ratio = num / den if den > 0 else math.inf
    if not math.isfinite(ratio):
        raise ValueError("reference must not be so small against approx that the relative error exceeds the float64 "
                         f"range (largest |reference| {ref_max:g})")
    return ratio


def _check_reference_and_approx(reference, approx):
    """relative_error's arguments as two float64 arrays of one shape: tensors on the device of the tensor given
    (a numpy array beside a tensor joins it there), or numpy arrays."""
    if not (is_torch(reference) or is_torch(approx)):
        a, b = check_real_array(reference, "reference"), check_real_array(approx, "approx")
    else:
        import torch

        device = (reference if is_torch(reference) else approx).device
        a, b = (_check_tensor(v, name).detach().double() if is_torch(v)
                else torch.as_tensor(check_real_array(v, name), device=device)
                for v, name in ((reference, "reference"), (approx, "approx")))
    if a.shape != b.shape:
        raise ValueError(f"reference and approx must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def _ldexp(a, e):
    """``a * 2**e``, exactly (the array API has no ldexp)."""
    if is_torch(a):
        import torch

        return torch.ldexp(a, torch.tensor(e, device=a.device))
    return np.ldexp(a, e)
