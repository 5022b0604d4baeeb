r"""How many bits a weight needs: exact ReLU networks with dyadic weights (chapter 12).

The chapter is a numerical companion to Ou, Schenkel & Bölcskei, *Three quantization regimes for
ReLU networks* (2024). Everything in this module is **our own construction**, written for the book;
none of it reproduces the paper's constructions, constants or proofs (whose full text we could not
consult). It provides:

* :class:`DyadicNet`, a ReLU network whose weights and biases are integers scaled by a power of two
  per layer, :math:`W_l = A_l\,2^{-e_l}`, evaluated exactly (Python integers) or in float64, and
  converted from and to a torch ``nn.Sequential`` of ``Linear``/``ReLU`` layers;
* the quantizers :func:`round_to_grid` and :func:`sigma_delta` (error feedback: the running sum of
  the rounding errors stays within half a grid step), both rounding ties up (towards +inf, the one
  rule of the package), and the fixed-point step :func:`fixed_point_step`;
* :class:`ShallowReLU`, the one-hidden-layer interpolant
  :math:`f_N(x) = f(0) + \sum_k s_k\,\mathrm{ReLU}(x - k/N)` and its quantized versions;
* :class:`PiecewiseLinear` and :func:`sup_error`, the sup-norm distance of two piecewise-linear
  functions computed exactly at the union of their breakpoints (a certified bracket for a
  Lipschitz target that is not piecewise linear);
* :func:`to_low_precision`, an exact depth-precision conversion of a network with B-bit weights
  into a deeper one whose weights take :math:`2^b` values (signed-digit Horner expansion);
* :func:`bit_extractor` (classical and deep forms) and :func:`codec`, which stores the slopes of a
  fine piecewise-linear approximant in a few high-precision weights and decodes them with a deep
  network of small weights;
* :func:`lower_bounds`, the precision, counting and VC lower bounds as the chapter derives them.

Weight format used throughout (our convention): a weight has **b bits** when it is one of the
:math:`2^b` nonzero values :math:`\pm k\,s`, :math:`k = 1,\dots,2^{b-1}` (a sign and b - 1 bits of
magnitude), where the power of two :math:`s` is the scale of its layer; a zero weight is an absent
connection and costs nothing. With zero that is :math:`2^b + 1` levels, the level set of
``qmf_lite.ptq.alphabet_for(W, bits=b)`` (the book's table of bits). ``DyadicNet.memory_bits`` counts
:math:`1 + \lceil\log_2 k\rceil` bits per nonzero parameter: a heuristic bit count, not a code length.

Everything here imports without torch; only :meth:`DyadicNet.from_torch` and
:meth:`DyadicNet.to_torch` import it.
"""
from __future__ import annotations

import collections
import collections.abc
import dataclasses
import math
import numbers
from fractions import Fraction

import numpy as np

from ._common import round_half_up
from ._validate import (check_bool, check_choice, check_int, check_int_range, check_nonnegative, check_positive,
                        check_real, check_real_array, renamed)

__all__ = [
    "DyadicNet",
    "PiecewiseLinear",
    "SupError",
    "ShallowReLU",
    "Codec",
    "fixed_point_step",
    "round_to_grid",
    "sigma_delta",
    "lacunary_target",
    "sup_error",
    "quantize_net",
    "in_alphabet",
    "to_low_precision",
    "bit_extractor",
    "codec",
    "lower_bounds",
]

_INT64_SAFE = 1 << 62

# Upper bounds of the arguments (each documented where it is used): without them a huge integer asks
# for a loop, an allocation or an exponent without end (``bits = 10**30`` ran past any time limit).
#: the widest weight format, in bits (float64 carries 53; exact integers could carry more, uselessly)
_MAX_BITS = 64
#: the largest |value| the float64 quantizers take: the saturation level of a b-bit format covering
#: it, about 2 max|v|, stays finite
_MAX_VALUE = 2.0**1000
#: the smallest positive float64, 2**-1074: no fixed-point step is finer
_MIN_STEP_EXPONENT = -1074
#: the largest |exponent| e of a layer's scale 2**-e
_MAX_EXPONENT = 2**16
#: bit_extractor: the most bits
_MAX_EXTRACT = 64
#: ShallowReLU.interpolant: the most pieces
_MAX_PIECES = 2**24
#: codec: the most cells, bits per word and pieces 2 * cells * word_bits (the greedy walk is a Python loop)
_MAX_CELLS, _MAX_WORD_BITS, _MAX_CODEC_PIECES = 2**16, 2**10, 2**22
#: lacunary_target: the most terms and knots
_MAX_TERMS, _MAX_KNOTS = 64, 2**20
#: sup_error: the most grid points
_MAX_GRID = 2**22
#: the largest Lipschitz constant taken (slopes and brackets stay finite in float64)
_MAX_LIPSCHITZ = 1e300


def _check_bits(bits):
    return check_int_range(bits, "bits", 1, _MAX_BITS, " (the widest weight format here)")


def _check_lipschitz(value, *, zero_ok):
    """A finite scalar Lipschitz constant, > 0 (or >= 0 when ``zero_ok``) and at most 1e300."""
    arr = (check_nonnegative if zero_ok else check_positive)(value, "lipschitz")
    if arr.ndim:
        raise ValueError(f"lipschitz must be a single number, got an array of shape {arr.shape}")
    if float(arr) > _MAX_LIPSCHITZ:
        raise ValueError(f"lipschitz must be at most {_MAX_LIPSCHITZ:g} (slopes must stay finite in float64), "
                         f"got {value!r}")
    return float(arr)


def _integer_array(value, name):
    """``value`` as an object array of Python ints, refusing anything that is not an integer."""
    try:
        arr = np.asarray(value, dtype=object)
    except (TypeError, ValueError) as exc:   # ragged nesting
        raise ValueError(f"{name} must be an array of integers (numerators), got {value!r:.80}") from exc
    flat = arr.ravel().tolist()
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in flat):
        raise ValueError(f"{name} must hold integers (numerators), got {value!r:.80}")
    return np.array([int(v) for v in flat] or np.zeros(0), dtype=object).reshape(arr.shape)

# --------------------------------------------------------------------------------------------
# exact dyadic numbers


def _fraction(value, name):
    """``value`` as an exact Fraction; ValueError for bools, strings, NaN, inf."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (numbers.Integral, np.integer)):
        return Fraction(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return Fraction(float(value))
    if isinstance(value, numbers.Rational):
        return Fraction(value.numerator, value.denominator)
    raise ValueError(f"{name} must be a real number, got {value!r}")


def _log2_denominator(fr, name):
    d = fr.denominator
    if d & (d - 1):
        raise ValueError(f"{name} must be dyadic (an integer times a power of 2) for exact arithmetic, got {fr}")
    return d.bit_length() - 1


def _normalize(num, exp):
    """Strip the common factors of 2 of the numerators, keeping the exponent >= 0 (canonical form)."""
    if exp < 0:
        return _shift_left(num, -exp)
    if num.size == 0 or exp == 0:
        return num, exp
    acc = int(np.bitwise_or.reduce(num.ravel()))
    if acc == 0:
        return num, 0
    tz = (acc & -acc).bit_length() - 1
    shift = min(tz, exp)
    if shift:
        num = num >> shift
    return num, exp - shift


def _shift_left(num, k):
    if num.dtype == object:
        return num * (1 << k), 0
    return (num.astype(object) * (1 << k)), 0


def _dyadic_array(values, name):
    """Exact (numerators, exponent) of an array of dyadic numbers: values = numerators * 2**-exponent.

    Numerators are Python ints in an object array; the exponent is >= 0 and minimal.
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "iu":
        num = np.array(arr.tolist(), dtype=object).reshape(arr.shape) if arr.size else arr.astype(object)
        return num, 0
    if arr.dtype.kind == "f":
        a = arr.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite")
        mant, ex = np.frexp(a)
        m = (mant * 2.0**53).astype(np.int64)            # exact: |mant| in [0.5, 1)
        e = 53 - ex.astype(np.int64)                      # value = m * 2**-e
        nz = m != 0
        if not nz.any():
            return np.zeros(a.shape, dtype=object), 0
        exp = max(int(e[nz].max()), 0)
        shifts = np.where(nz, exp - e, 0)
        num = np.array([int(mi) << int(si) if si >= 0 else int(mi) >> int(-si)
                        for mi, si in zip(m.ravel().tolist(), shifts.ravel().tolist())],
                       dtype=object).reshape(a.shape)
        return _normalize(num, exp)
    if arr.dtype.kind in "bUSV" or arr.dtype.kind == "M":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    flat = [_fraction(v, name) for v in arr.ravel().tolist()]
    exps = [_log2_denominator(f, name) for f in flat]
    exp = max(exps, default=0)
    num = np.array([f.numerator << (exp - k) for f, k in zip(flat, exps)], dtype=object).reshape(arr.shape)
    return _normalize(num, exp)


def _canonical_layer(a, c, e):
    """A layer's numerators and exponent with the common factors of 2 stripped (:func:`_normalize`)."""
    both, e = _normalize(np.concatenate([a.ravel(), c]), e)
    return both[:a.size].reshape(a.shape), both[a.size:], e


def _to_float(num, exp):
    return np.ldexp(np.array(num, dtype=np.float64), -exp)


def _maybe_int64(num):
    """The same numerators as int64 when every one fits comfortably, else unchanged."""
    if num.dtype != object or num.size == 0:
        return num
    lo, hi = min(num.ravel().tolist()), max(num.ravel().tolist())
    if -_INT64_SAFE < lo and hi < _INT64_SAFE:
        return num.astype(np.int64)
    return num


def _max_abs_numerator(num):
    if num.size == 0:
        return 0
    if num.dtype == object:
        return max(abs(v) for v in num.ravel().tolist())
    return int(np.abs(num).max())


# --------------------------------------------------------------------------------------------
# the exact network


class DyadicNet:
    r"""A ReLU network with dyadic weights, evaluated exactly or in float64.

    Layer :math:`l` computes :math:`h_l = \mathrm{ReLU}(W_l h_{l-1} + c_l)` (no ReLU on the last
    layer), with :math:`W_l = A_l\,2^{-e_l}` and :math:`c_l = C_l\,2^{-e_l}`, :math:`A_l, C_l`
    integer (Python ints, any size) and :math:`e_l \ge 0` minimal.

    Build one with :meth:`from_arrays` (floats, ints or Fractions; floats are dyadic, so they are
    taken exactly; a non-dyadic Fraction is a ValueError) or :meth:`from_torch`.

    Parameters
    ----------
    layers : sequence of triples
        One triple ``(A, C, e)`` per layer, at least one: ``A`` a 2-D array of integers (out, in), ``C`` a 1-D array
        of integers (out,), ``e`` an integer exponent in ``[-2**16, 2**16]``; each layer takes as many
        inputs as the previous one has outputs.

    Examples
    --------
    >>> net = DyadicNet.from_arrays([[[1.0], [1.0]], [[1.0, -2.0]]], [[0.0, -0.5], [0.25]])
    >>> net.exact([[Fraction(3, 4)]])[0, 0]     # ReLU(3/4) - 2 ReLU(1/4) + 1/4
    Fraction(1, 2)
    >>> float(net([[0.75]])[0, 0]), net.depth, net.n_params, net.layer_bits()
    (0.5, 2, 6, [2, 4])
    """

    def __init__(self, layers):
        if isinstance(layers, (str, bytes)) or not isinstance(layers, collections.abc.Sequence):
            raise ValueError("layers must be a sequence of (A, C, e) triples (integer weight and bias numerators, "
                             f"exponent), got {type(layers).__name__}")
        self._layers = []
        n_prev = None
        for l, layer in enumerate(layers):
            if isinstance(layer, (str, bytes)) or not isinstance(layer, collections.abc.Sequence) or len(layer) != 3:
                raise ValueError(f"layers[{l}] must be a triple (A, C, e), got {layer!r:.80}")
            a, c, e = layer
            a = _integer_array(a, f"layers[{l}] weights A")
            c = _integer_array(c, f"layers[{l}] biases C")
            if a.ndim != 2 or c.shape != (a.shape[0],):
                raise ValueError(f"layer {l}: weights must be 2-D (out, in) and biases 1-D (out,), "
                                 f"got {a.shape} and {c.shape}")
            if n_prev is not None and a.shape[1] != n_prev:
                raise ValueError(f"layer {l} takes {a.shape[1]} inputs but layer {l - 1} has {n_prev} outputs")
            e = check_int_range(e, f"layers[{l}] exponent e", -_MAX_EXPONENT, _MAX_EXPONENT)
            self._layers.append(_canonical_layer(a, c, e))
            n_prev = a.shape[0]
        if not self._layers:
            raise ValueError("layers must hold at least one layer")
        self._cache = {}

    @classmethod
    def _from_floats(cls, weights, biases):
        """From float64 weight matrices (out, in) and bias vectors that chain (finite; taken exactly)."""
        layers = []
        for l, (w, b) in enumerate(zip(weights, biases)):
            both, e = _dyadic_array(np.concatenate([w.ravel(), b]), f"weights[{l}] and biases[{l}]")
            layers.append((both[:w.size].reshape(w.shape), both[w.size:], e))
        return cls._trusted(layers)

    @classmethod
    def _trusted(cls, layers):
        """From ``(A, C, e)`` triples known to be valid (object arrays of Python ints that chain, an int
        exponent): the package's own constructions skip the checks of ``__init__``."""
        net = cls.__new__(cls)
        net._layers = [_canonical_layer(a, c, e) for a, c, e in layers]
        net._cache = {}
        return net

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, weights, biases):
        """From per-layer weight matrices (out, in) and bias vectors, taken exactly.

        Parameters
        ----------
        weights, biases : sequences of array_like
            Lists or tuples of finite floats (exact), ints or Fractions (dyadic); one weight matrix
            (out, in) and one bias vector per layer.
        """
        for name, seq in (("weights", weights), ("biases", biases)):
            if isinstance(seq, (str, bytes, np.ndarray)) or not isinstance(seq, collections.abc.Sequence):
                raise ValueError(f"{name} must be a list or tuple with one array per layer, got {type(seq).__name__}")
        if len(weights) != len(biases):
            raise ValueError(f"weights and biases must have one entry per layer, got {len(weights)} and {len(biases)}")
        layers = []
        for l, (w, b) in enumerate(zip(weights, biases)):
            try:
                w = np.asarray(w, dtype=object if _has_fraction(w) else None)
                b = np.asarray(b, dtype=object if _has_fraction(b) else None)
            except (TypeError, ValueError) as exc:   # ragged nesting
                raise ValueError(f"weights[{l}] and biases[{l}] must be arrays of real numbers") from exc
            if w.ndim != 2:
                raise ValueError(f"weights[{l}] must be a 2-D array (out, in), got shape {w.shape}")
            b = b.reshape(-1)
            both, e = _dyadic_array(np.concatenate([w.astype(object).ravel(), b.astype(object)])
                                    if (w.dtype == object or b.dtype == object or w.dtype != b.dtype)
                                    else np.concatenate([w.ravel(), b]), f"weights[{l}] and biases[{l}]")
            layers.append((both[:w.size].reshape(w.shape), both[w.size:], e))
        return cls(layers)

    @classmethod
    def from_torch(cls, model, bits=None):
        """From a torch ``nn.Sequential`` of ``Linear`` layers with ``ReLU`` between them.

        Parameters
        ----------
        model : torch.nn.Sequential
            ``Linear, ReLU, Linear, ..., Linear`` (a single ``Linear`` is allowed).
        bits : int in [1, 64], optional
            Round each layer's weights and biases to the b-bit format of that layer
            (:func:`quantize_net`); by default the float weights are taken exactly.
        """
        import torch

        bits = None if bits is None else _check_bits(bits)

        mods = list(model) if isinstance(model, torch.nn.Sequential) else [model]
        weights, biases = [], []
        expect_linear = True
        for i, m in enumerate(mods):
            if expect_linear:
                if not isinstance(m, torch.nn.Linear):
                    raise ValueError(f"model[{i}] must be torch.nn.Linear, got {type(m).__name__}")
                w = m.weight.detach().cpu().double().numpy()
                b = (m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(w.shape[0]))
                weights.append(w)
                biases.append(b)
            elif not isinstance(m, torch.nn.ReLU):
                raise ValueError(f"model[{i}] must be torch.nn.ReLU, got {type(m).__name__}")
            expect_linear = not expect_linear
        if expect_linear:
            raise ValueError("model must end with a torch.nn.Linear layer")
        net = cls._from_floats(weights, biases)
        return net if bits is None else _quantize_net(net, bits)

    def to_torch(self, dtype=None):
        """The same network as a torch ``nn.Sequential`` (float64 by default).

        Weights with more than 53 significant bits are rounded to float64 (``dtype``: None for float64,
        or a torch floating dtype).
        """
        import torch

        dtype = torch.float64 if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be None or a torch floating dtype (e.g. torch.float64), got {dtype!r}")
        mods = []
        for l, (w, b) in enumerate(zip(self.weights(), self.biases())):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.as_tensor(w, dtype=dtype))
                lin.bias.copy_(torch.as_tensor(b, dtype=dtype))
            mods.append(lin)
            if l < self.depth - 1:
                mods.append(torch.nn.ReLU())
        return torch.nn.Sequential(*mods)

    # -- structure -----------------------------------------------------------------------------
    @property
    def layers(self):
        """Tuple of ``(A, C, e)``: integer weight numerators, bias numerators and exponent."""
        return tuple(self._layers)

    @property
    def depth(self):
        """Number of affine layers (hidden layers + 1)."""
        return len(self._layers)

    @property
    def widths(self):
        """Neurons per layer, input first: ``(n_in, n_1, ..., n_out)``."""
        return (self._layers[0][0].shape[1],) + tuple(a.shape[0] for a, _, _ in self._layers)

    @property
    def width(self):
        """The largest hidden width (the input width for a network without hidden layers)."""
        hidden = self.widths[1:-1]
        return max(hidden) if hidden else self.widths[0]

    @property
    def n_params(self):
        """Number of nonzero weights and biases."""
        return sum(int(np.count_nonzero(a != 0)) + int(np.count_nonzero(c != 0)) for a, c, _ in self._layers)

    def weights(self):
        """Weight matrices as float64 (exact when a numerator has at most 53 significant bits)."""
        return [_to_float(a, e) for a, _, e in self._layers]

    def biases(self):
        """Bias vectors as float64."""
        return [_to_float(c, e) for _, c, e in self._layers]

    def param_bits(self, model="param"):
        r"""Bits to store the nonzero parameters, layer by layer.

        Each layer is stored in one fixed-point format, a power-of-two scale :math:`s_l` (the
        largest one that makes every parameter an integer multiple :math:`k s_l`). With
        ``model="param"`` a parameter costs :math:`1 + \lceil\log_2 |k|\rceil` bits (sign and the
        magnitude code it needs); with ``model="layer"`` every nonzero parameter of the layer costs
        what the largest one costs (a uniform b-bit format per layer).

        Returns
        -------
        list of int
        """
        return self._param_bits(check_choice(model, "model", ("param", "layer")))

    def _param_bits(self, model):
        out = []
        for ks in self._layer_multiples():
            if not ks:
                out.append(0)
            elif model == "layer":
                out.append(len(ks) * (1 + (max(ks) - 1).bit_length()))
            else:
                out.append(sum(1 + (k - 1).bit_length() for k in ks))
        return out

    def layer_bits(self):
        """Per layer, the bits b of its format: every nonzero parameter is one of the 2**b values +-k s,
        k = 1..2**(b-1); with zero (an absent connection) that is 2**b + 1 levels, the convention of the
        book's table of bits, the same level set as ``qmf_lite.ptq.alphabet_for(W, bits=b)``."""
        return [1 + (max(ks) - 1).bit_length() if ks else 0 for ks in self._layer_multiples()]

    def _layer_multiples(self):
        """Per layer, the nonzero |parameters| as multiples k of the layer's step s (the largest
        power of two dividing them all): a list of ints, empty for an all-zero layer."""
        out = []
        for a, c, _ in self._layers:
            vals = [abs(v) for v in np.concatenate([a.ravel(), c]).tolist() if v != 0]
            acc = 0
            for v in vals:
                acc |= v
            tz = (acc & -acc).bit_length() - 1
            out.append([v >> tz for v in vals])
        return out

    def memory_bits(self, model="param"):
        """Total bits of the nonzero parameters (see :meth:`param_bits`).

        A *bit count*, not the length of a code: the field widths, the positions of the nonzero
        parameters and the power-of-two scale of each layer are not counted, and zeros are free, so
        far more than :math:`2^M` networks have ``memory_bits() == M`` (every scale gives another
        one). Comparisons with counting bounds, which need a code of M bits, are heuristics.
        """
        return int(sum(self._param_bits(check_choice(model, "model", ("param", "layer")))))

    def summary(self):
        """Depth, largest hidden width, nonzero parameters and bits (both memory models)."""
        return {"depth": self.depth, "width": self.width, "params": self.n_params,
                "bits": int(sum(self._param_bits("param"))), "bits_layer_format": int(sum(self._param_bits("layer")))}

    # -- evaluation ----------------------------------------------------------------------------
    def _float_layers(self):
        if "float" not in self._cache:
            self._cache["float"] = list(zip(self.weights(), self.biases()))
        return self._cache["float"]

    def __call__(self, x):
        """Float64 forward pass; ``x`` of shape (n, n_in) or (n_in,), finite real numbers."""
        h = check_real_array(x, "x")
        single = h.ndim == 1
        h = np.atleast_2d(h)
        if h.shape[1] != self.widths[0]:
            raise ValueError(f"x must have {self.widths[0]} features, got shape {np.shape(x)}")
        layers = self._float_layers()
        for l, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if l < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return h[0] if single else h

    def _sparse(self, l):
        key = ("sparse", l)
        if key not in self._cache:
            a = self._layers[l][0]
            rows = []
            for r in range(a.shape[0]):
                cols = np.flatnonzero(a[r] != 0)
                rows.append((cols, a[r, cols].reshape(-1, 1)))
            l1 = max((sum(abs(v) for v in a[r].tolist()) for r in range(a.shape[0])), default=0)
            csr = abs_csr = None
            if l1 < _INT64_SAFE and a.size:
                from scipy import sparse
                csr = sparse.csr_matrix(a.astype(np.int64))
                abs_csr = abs(csr).astype(np.float64)
            self._cache[key] = (rows, l1, csr, abs_csr)
        return self._cache[key]

    def exact_numerators(self, x):
        """Exact outputs as ``(numerators, exponent)``: outputs = numerators * 2**-exponent.

        The pair is canonical (common factors of 2 stripped), so two arrays of outputs are equal
        exactly when their pairs are. Layers run in int64 (scipy.sparse) when a bound on every
        partial sum shows that they fit, otherwise with Python integers.
        """
        num, exp = _dyadic_array(np.atleast_2d(np.asarray(x) if not _has_fraction(x) else np.asarray(x, dtype=object)),
                                 "x")
        if num.shape[1] != self.widths[0]:
            raise ValueError(f"x must have {self.widths[0]} features, got {num.shape[1]}")
        xt = np.ascontiguousarray(_maybe_int64(num).T)          # features x batch
        for l, (a, c, e) in enumerate(self._layers):
            rows, l1, csr, abs_csr = self._sparse(l)
            bias = c * (1 << exp)
            fits = False
            if xt.dtype != object and csr is not None and xt.size:
                bmax = _max_abs_numerator(bias)
                xmax = np.abs(xt).max(axis=1)
                if int(xmax.max()) * l1 + bmax < _INT64_SAFE:
                    fits = True
                elif bmax < _INT64_SAFE // 2:
                    # every partial sum of row r is at most sum_j |a_rj| max|x_j|; bounded in float64
                    # with a margin far above its rounding
                    fits = 1.001 * float((abs_csr @ xmax.astype(np.float64)).max()) + bmax < _INT64_SAFE
            if fits:
                z = np.asarray(csr @ xt, dtype=np.int64) + np.asarray(bias.tolist(), dtype=np.int64)[:, None]
            else:
                xo = xt.astype(object)
                z = np.empty((a.shape[0], xt.shape[1]), dtype=object)
                for r, (cols, vals) in enumerate(rows):
                    z[r] = (vals * xo[cols]).sum(axis=0) + bias[r] if cols.size else bias[r]
            exp = exp + e
            if l < len(self._layers) - 1:
                z = np.maximum(z, 0)
            z, exp = _normalize(z, exp)
            xt = _maybe_int64(z)
        out = np.ascontiguousarray(xt.T)
        return (out.astype(object) if out.dtype != object else out), exp

    def exact(self, x):
        """Exact outputs as an object array of Fractions; ``x`` must be dyadic (floats are)."""
        num, exp = self.exact_numerators(x)
        den = 1 << exp
        return np.array([Fraction(int(v), den) for v in num.ravel().tolist()], dtype=object).reshape(num.shape)

    def piecewise_linear(self, interval=(0.0, 1.0), exact=False):
        """The network on an interval as a :class:`PiecewiseLinear` (one input, one output).

        Breakpoints are found layer by layer: between two consecutive breakpoints found so far
        every pre-activation is affine, so a sign change of a neuron adds one breakpoint where it
        crosses zero. With ``exact=True`` the computation is in Fractions (slower; for small nets).
        ``interval`` is a pair ``lo < hi`` of finite real numbers, ``exact`` True or False.
        """
        exact = check_bool(exact, "exact")
        self._check_scalar_function()
        lo, hi = _interval(interval)
        return self._piecewise_linear(lo, hi, exact)

    def _check_scalar_function(self):
        if self.widths[0] != 1 or self.widths[-1] != 1:
            raise ValueError(f"piecewise_linear needs one input and one output, the network has widths {self.widths}")

    def _piecewise_linear(self, lo, hi, exact):
        """:meth:`piecewise_linear` on [lo, hi] (checked Fractions), for a network with one input and output."""
        if exact:
            knots = np.array([Fraction(lo), Fraction(hi)], dtype=object)
            layers = [(a.astype(object) * Fraction(1, 1 << e), c.astype(object) * Fraction(1, 1 << e))
                      for a, c, e in self._layers]
            h = knots.reshape(-1, 1)
        else:
            knots = np.array([float(lo), float(hi)], dtype=np.float64)
            layers = self._float_layers()
            h = knots.reshape(-1, 1)
        for l, (w, b) in enumerate(layers):
            p = h.dot(w.T) + b
            if l == len(layers) - 1:
                return PiecewiseLinear(knots, p[:, 0])
            knots, p = _add_crossings(knots, p)
            h = np.maximum(p, 0) if not exact else np.where(p > 0, p, Fraction(0))
        raise AssertionError("unreachable")  # pragma: no cover


def _add_crossings(knots, p):
    """Add a knot wherever a pre-activation (a column of ``p``, affine between knots) changes sign."""
    ii, jj = np.nonzero((p[:-1] * p[1:]) < 0)
    if ii.size:
        t = p[ii, jj] / (p[ii, jj] - p[ii + 1, jj])
        new_x = knots[ii] + t * (knots[ii + 1] - knots[ii])
        new_p = p[ii] + t[:, None] * (p[ii + 1] - p[ii])
        knots = np.concatenate([knots, new_x])
        p = np.concatenate([p, new_p])
        order = np.argsort(knots, kind="stable")
        knots, p = knots[order], p[order]
        keep = np.concatenate([[True], knots[1:] != knots[:-1]])
        knots, p = knots[keep], p[keep]
    return knots, p


def _has_fraction(x):
    try:
        arr = np.asarray(x, dtype=object)
    except (ValueError, TypeError):
        return False
    return any(isinstance(v, Fraction) for v in arr.ravel().tolist())


def _target_values(target, nodes):
    """``target(nodes)`` as float64, required finite and one value per node."""
    try:
        vals = check_real_array(target(nodes), "target(x)")
    except ValueError as exc:
        raise ValueError(f"target must return finite real values at the nodes ({exc})") from exc
    if vals.shape != nodes.shape:
        raise ValueError(f"target must return one value per node (vectorized), got shape {vals.shape} "
                         f"for {nodes.shape}")
    return vals


def _interval(interval):
    """``(lo, hi)`` as exact Fractions, lo < hi."""
    try:
        lo, hi = interval
    except (TypeError, ValueError) as exc:
        raise ValueError(f"interval must be a pair (lo, hi), got {interval!r}") from exc
    lo, hi = _fraction(lo, "interval"), _fraction(hi, "interval")
    if not lo < hi:
        raise ValueError(f"interval must have lo < hi, got {interval!r}")
    return lo, hi


# --------------------------------------------------------------------------------------------
# quantizers


def fixed_point_step(values, bits, headroom=False):
    r"""The power-of-two step :math:`s` of the b-bit format that covers ``values``.

    .. math:: s = 2^{\lceil\log_2 m\rceil - (b - 1)},\qquad m = \max_k |v_k|,

    so that every value rounds to one of :math:`\pm k s`, :math:`|k| \le 2^{b-1}`. With
    ``headroom=True`` the step is the smallest power of two with
    :math:`m \le (2^{b-1} - \tfrac12)\,s`, which error feedback (:func:`sigma_delta`) needs. The step
    is never below :math:`2^{-1074}`, the smallest positive float64 (it still covers the values).

    Parameters
    ----------
    values : array_like
        Finite real numbers with :math:`|v| \le 2^{1000}` (all zero gives :math:`s = 2^{1-b}`).
    bits : int
        An integer in ``[1, 64]``.
    headroom : bool
        ``True`` or ``False``.

    Examples
    --------
    >>> fixed_point_step([0.3, -1.7], 4), fixed_point_step([0.3, -1.7], 4, headroom=True)
    (0.25, 0.25)
    >>> fixed_point_step([2.0], 3), fixed_point_step([2.0], 3, headroom=True)
    (0.5, 1.0)
    """
    b = _check_bits(bits)
    headroom = check_bool(headroom, "headroom")
    return _fixed_point_step(_check_values(values), b, headroom)


def _fixed_point_step(v, b, headroom):
    m = float(np.abs(v).max()) if v.size else 0.0
    if m == 0.0:
        return 2.0 ** (1 - b)
    p = max(math.ceil(math.log2(m)) - (b - 1), _MIN_STEP_EXPONENT)
    s = 2.0 ** p
    if s * 2 ** (b - 1) < m:  # log2 rounding at exact powers of two
        s *= 2.0
    if headroom:
        while (2 ** (b - 1) - 0.5) * s < m:
            s *= 2.0
    return s


def _check_values(values):
    return check_real_array(values, "values", max_abs=_MAX_VALUE)


def round_to_grid(values, bits, step=None):
    r"""Round to the nearest multiple of ``step`` with at most :math:`2^{b-1}` steps (saturating).

    .. math:: q_k = s\,\mathrm{clip}\bigl(\lfloor v_k/s + \tfrac12\rfloor,\,-2^{b-1},\,2^{b-1}\bigr)

    A value halfway between two multiples goes to the upper one (ties towards :math:`+\infty`:
    :math:`\pm 0.5 s \mapsto s, 0` and :math:`-1.5 s \mapsto -s`), the one rounding rule of the package.

    Parameters
    ----------
    values : array_like
        Finite real numbers with :math:`|v| \le 2^{1000}`.
    bits : int
        An integer in ``[1, 64]``.
    step : float > 0, optional
        A power of two (finite); default :func:`fixed_point_step` ``(values, bits)``.

    Examples
    --------
    >>> round_to_grid([0.3, -1.7, 0.05], 3)
    array([ 0.5, -1.5,  0. ])
    >>> round_to_grid([0.25, -0.25, -0.75], 3, step=0.5)     # ties: up
    array([ 0.5,  0. , -0.5])
    """
    b = _check_bits(bits)
    v = _check_values(values)
    return _round_to_grid(v, b, None if step is None else _check_step(step))


def _round_to_grid(v, b, s=None):
    """:func:`round_to_grid` of a float64 array ``v`` (``s`` None: the step of the b-bit format)."""
    if s is None:
        s = _fixed_point_step(v, b, False)
    with np.errstate(over="ignore"):   # |v| / s beyond float64 saturates at 2**(b-1) all the same
        k = np.clip(round_half_up(v / s), -float(2 ** (b - 1)), float(2 ** (b - 1)))
    return k * s


def _check_step(step):
    s = float(check_positive(step, "step", allow_array=False))
    m, _ = math.frexp(s)
    if m != 0.5:
        raise ValueError(f"step must be a power of two, got {step}")
    return s


def sigma_delta(values, bits, step=None):
    r"""Error-feedback (first-order sigma-delta) rounding of a sequence, in exact arithmetic.

    Round the running sums instead of the values: with :math:`S_k = \sum_{j\le k} v_j` and
    :math:`Q_k = s\,\lfloor S_k/s + \tfrac12\rfloor` (ties up, as in :func:`round_to_grid`), return
    :math:`q_k = Q_k - Q_{k-1}`. Every :math:`q_k` is a
    multiple of :math:`s`, and the running sum of the errors stays within half a step,

    .. math:: \Bigl|\sum_{j\le k}(q_j - v_j)\Bigr| = |Q_k - S_k| \le s/2 \quad\text{for every } k,

    where plain rounding lets it wander like a random walk. The same as the recursion
    :math:`q_k = \mathrm{round}(v_k - u_{k-1})`, :math:`u_k = u_{k-1} + q_k - v_k`. The sums are
    formed and rounded exactly (floats are dyadic; the rounding is an integer shift), so the bound
    holds exactly.

    Parameters
    ----------
    values : array_like, 1-D
        Finite real numbers with :math:`|v| \le 2^{1000}`.
    bits : int
        An integer in ``[1, 64]``.
    step : float, optional
        A power of two with :math:`\max|v| \le (2^{b-1} - \frac12) s` (no overload); default
        :func:`fixed_point_step` ``(values, bits, headroom=True)``.

    Examples
    --------
    >>> q = sigma_delta([0.3, 0.3, 0.3, 0.3], 1)         # one bit: steps of 1
    >>> q, np.cumsum(q) - np.cumsum([0.3] * 4)
    (array([0., 1., 0., 0.]), array([-0.3,  0.4,  0.1, -0.2]))
    >>> round_to_grid([0.3, 0.3, 0.3, 0.3], 1, step=1.0)  # plain rounding drifts
    array([0., 0., 0., 0.])
    """
    b = _check_bits(bits)
    v = _check_values(values)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    s = _fixed_point_step(v, b, True) if step is None else _check_step(step)
    if v.size and float(np.abs(v).max()) > (2 ** (b - 1) - 0.5) * s:
        raise ValueError(f"step {s} is too small for bits={b}: error feedback would overload; "
                         f"use step >= fixed_point_step(values, bits, headroom=True)")
    return _sigma_delta(v, b, s)


def _sigma_delta(v, b, s):
    """:func:`sigma_delta` of a 1-D float64 array ``v`` with a step ``s`` that covers it with head room."""
    if v.size == 0:
        return v.copy()
    num, exp = _dyadic_array(v, "values")
    p = -int(round(math.log2(s)))                       # s = 2**-p
    sums = np.cumsum(num)                               # exact (object)
    shift = exp - p
    if shift > 0:                                       # floor(S/s + 1/2) in integers: ties up, exactly
        half = 1 << (shift - 1)
        q_int = np.array([(int(t) + half) >> shift for t in sums.tolist()], dtype=object)
    else:
        q_int = sums * (1 << (-shift))
    steps = np.diff(np.concatenate([[0], q_int]))
    return np.array(steps.tolist(), dtype=np.float64) * s


def quantize_net(net, bits):
    """Round every layer of ``net`` to its own b-bit format (:func:`round_to_grid`, per layer).

    Parameters
    ----------
    net : DyadicNet
        Its float64 weights and biases must satisfy ``|w| <= 2**1000`` (as the values of :func:`round_to_grid`).
    bits : int
        An integer in ``[1, 64]``.

    Examples
    --------
    >>> net = DyadicNet.from_arrays([[[0.3, -0.7]]], [[0.1]])
    >>> quantize_net(net, 3).weights()[0], quantize_net(net, 3).biases()[0]
    (array([[ 0.25, -0.75]]), array([0.]))
    """
    b = _check_bits(bits)
    if not isinstance(net, DyadicNet):
        raise ValueError(f"net must be a DyadicNet, got {type(net).__name__}")
    return _quantize_net(net, b)


def _quantize_net(net, b):
    """:func:`quantize_net` with checked ``bits``; the float64 parameters are checked here."""
    weights, biases = [], []
    for w, c in zip(net.weights(), net.biases()):
        both = _check_values(np.concatenate([w.ravel(), c]))
        q = _round_to_grid(both, b)
        weights.append(q[:w.size].reshape(w.shape))
        biases.append(q[w.size:])
    return DyadicNet._from_floats(weights, biases)


def in_alphabet(net, bits, step=None, *, scale=None):
    r"""Whether every nonzero parameter of ``net`` is one of :math:`\pm k\,s`, :math:`1\le k\le 2^{b-1}`.

    ``step`` (:math:`s`) defaults to :math:`2^{-b}`, the alphabet of :func:`to_low_precision`.

    Parameters
    ----------
    net : DyadicNet
    bits : int
        An integer in ``[1, 64]``.
    step : float or Fraction > 0, optional
        The alphabet's step, as in :func:`round_to_grid`: a finite real number (taken exactly).
    scale : float or Fraction > 0, optional
        The former name of ``step``, deprecated (a ``DeprecationWarning``): ``scale`` is the
        amplitude of an activation everywhere else in the package.

    Returns
    -------
    bool
    """
    step, name = renamed("in_alphabet", "step", step, "scale", scale)
    if not isinstance(net, DyadicNet):
        raise ValueError(f"net must be a DyadicNet, got {type(net).__name__}")
    b = _check_bits(bits)
    s = Fraction(1, 1 << b) if step is None else _fraction(step, name)
    if s <= 0:
        raise ValueError(f"{name} must be > 0, got {step}")
    kmax = 1 << (b - 1)
    for a, c, e in net.layers:
        for v in np.concatenate([a.ravel(), c]).tolist():
            if v:
                k = Fraction(abs(v), 1 << e) / s
                if k.denominator != 1 or k > kmax:
                    return False
    return True


# --------------------------------------------------------------------------------------------
# piecewise-linear functions and the sup-norm error


class PiecewiseLinear:
    """A continuous piecewise-linear function on an interval, from its knots and values.

    ``knots`` strictly increasing; float64 arrays, or object arrays of Fractions (exact).

    Parameters
    ----------
    knots, values : array_like, 1-D, of the same length >= 2
        Finite real numbers (Fractions make the function exact); ``knots`` strictly increasing. In
        float64 the differences of the knots and of the values, and the slopes, must be finite.

    Examples
    --------
    >>> f = PiecewiseLinear([0.0, 0.5, 1.0], [0.0, 0.5, 0.0])
    >>> f([0.25, 0.75]), f.lipschitz()
    (array([0.25, 0.25]), 1.0)
    """

    def __init__(self, knots, values):
        exact = _has_fraction(knots) or _has_fraction(values)
        if exact:
            k, v = (np.asarray(a, dtype=object).reshape(-1) for a in (knots, values))
            k = np.array([_fraction(t, "knots") for t in k.tolist()], dtype=object)
            v = np.array([_fraction(t, "values") for t in v.tolist()], dtype=object)
        else:
            k = check_real_array(knots, "knots").reshape(-1)
            v = check_real_array(values, "values").reshape(-1)
        if k.size < 2 or k.shape != v.shape:
            raise ValueError(f"knots and values must have the same length >= 2, got {k.size} and {v.size}")
        increasing = (all(x < y for x, y in zip(k[:-1].tolist(), k[1:].tolist())) if exact
                      else bool(np.all(k[1:] > k[:-1])))
        if not increasing:
            raise ValueError("knots must be strictly increasing")
        if not exact:
            with np.errstate(over="ignore", invalid="ignore"):
                dk, dv = np.diff(k), np.diff(v)
                finite = np.isfinite(dk).all() and np.isfinite(dv).all() and np.isfinite(dv / dk).all()
            if not finite:
                raise ValueError("knots and values must have finite differences and slopes in float64 "
                                 "(|values[i+1] - values[i]| / (knots[i+1] - knots[i]) <= 1.8e308)")
        self.knots, self.values, self.exact = k, v, exact

    @classmethod
    def _trusted(cls, knots, values, exact=False):
        """From knots and values known to be valid (float64 arrays, or object arrays of Fractions when
        ``exact``): the package's own constructions skip the checks of ``__init__``."""
        out = cls.__new__(cls)
        out.knots, out.values, out.exact = knots, values, exact
        return out

    @property
    def interval(self):
        return self.knots[0], self.knots[-1]

    @property
    def slopes(self):
        return np.diff(self.values) / np.diff(self.knots)

    def lipschitz(self):
        """The largest absolute slope."""
        s = self.slopes
        return max(abs(t) for t in s.tolist()) if self.exact else float(np.abs(s).max())

    def to_exact(self):
        """The same function with Fraction knots and values (floats convert exactly)."""
        if self.exact:
            return self
        return PiecewiseLinear._trusted(np.array([Fraction(t) for t in self.knots.tolist()], dtype=object),
                                        np.array([Fraction(t) for t in self.values.tolist()], dtype=object), True)

    def __call__(self, x):
        """Values at ``x`` (finite real numbers; constant beyond the end knots)."""
        if not self.exact:
            return np.interp(check_real_array(x, "x"), self.knots, self.values)
        xs = np.asarray(x, dtype=object)
        return self._exact_at([_fraction(t, "x") for t in xs.ravel().tolist()], xs.shape)

    def _at(self, xs):
        """Values at checked points: a float64 array, or an object array of Fractions when exact."""
        if not self.exact:
            return np.interp(xs, self.knots, self.values)
        return self._exact_at(xs.ravel().tolist(), xs.shape)

    def _exact_at(self, flat, shape):
        idx = np.clip(np.searchsorted(self.knots, np.array(flat, dtype=object), side="right") - 1,
                      0, self.knots.size - 2)
        out = []
        for t, i in zip(flat, idx.tolist()):
            x0, x1, y0, y1 = self.knots[i], self.knots[i + 1], self.values[i], self.values[i + 1]
            t = min(max(t, self.knots[0]), self.knots[-1])
            out.append(y0 + (y1 - y0) * (t - x0) / (x1 - x0))
        return np.array(out, dtype=object).reshape(shape)

    def __repr__(self):
        return f"PiecewiseLinear({self.knots.size} knots on [{self.knots[0]}, {self.knots[-1]}], exact={self.exact})"


#: ``value`` the sup-norm error; ``lower`` <= sup <= ``upper`` (equal when exact); ``argmax`` where
SupError = collections.namedtuple("SupError", "value lower upper argmax")


def _as_piecewise(f, lo, hi, exact, name):
    """``f`` as a PiecewiseLinear on [lo, hi] (Fractions), or None for a plain callable."""
    if isinstance(f, PiecewiseLinear):
        return f.to_exact() if exact else f
    if isinstance(f, DyadicNet):
        f._check_scalar_function()
        return f._piecewise_linear(lo, hi, exact)
    if isinstance(f, ShallowReLU):
        return f.to_net()._piecewise_linear(lo, hi, True) if exact else f._piecewise_linear(float(lo), float(hi))
    if callable(f):
        return None
    raise ValueError(f"{name} must be a PiecewiseLinear, DyadicNet, ShallowReLU or callable, got {type(f).__name__}")


def sup_error(approx, target, interval=None, *, exact=False, lipschitz=None, n_grid=4097):
    r"""The sup-norm distance :math:`\sup_{x\in[a,b]}|g(x) - f(x)|`, exact at the breakpoints.

    If both ``approx`` (g) and ``target`` (f) are piecewise linear, so is :math:`g - f`, and its
    largest absolute value on :math:`[a, b]` is attained at one of the breakpoints of either: the
    maximum over the merged breakpoints is the supremum (in float64, or exactly in Fractions
    with ``exact=True``).

    A ``target`` that is only a (vectorized) callable must come with a Lipschitz constant
    :math:`L_f`. Then :math:`|g - f|` is evaluated at the breakpoints of g and on a uniform grid of
    ``n_grid`` points; on each gap :math:`[x_i, x_{i+1}]` the error is Lipschitz with constant
    :math:`\Lambda_i = L_f + |g'|`, so :math:`\sup \le (|e_i| + |e_{i+1}| + \Lambda_i(x_{i+1}-x_i))/2`
    there. The result is the bracket ``lower <= sup <= upper``.

    Parameters
    ----------
    approx : PiecewiseLinear, DyadicNet (one input, one output) or ShallowReLU
    target : PiecewiseLinear, DyadicNet, ShallowReLU or callable
    interval : (a, b), optional
        Default: the intersection of the intervals of the piecewise-linear arguments, else [0, 1].
    exact : bool
        ``True`` or ``False``: exact rational arithmetic (piecewise-linear targets only).
    lipschitz : float in [0, 1e300], optional
        Lipschitz constant of a callable target (required then; checked whenever given).
    n_grid : int
        An integer in ``[2, 2**22]``: the uniform grid for a callable target.

    Returns
    -------
    SupError
        ``(value, lower, upper, argmax)``.

    Examples
    --------
    >>> g = PiecewiseLinear([0.0, 1.0], [0.0, 1.0])
    >>> f = PiecewiseLinear([0.0, 0.3, 1.0], [0.0, 0.5, 1.0])
    >>> float(sup_error(g, f).value), float(sup_error(g, f).argmax)
    (0.2, 0.3)
    >>> r = sup_error(g, np.sin, lipschitz=1.0, n_grid=1001)
    >>> bool(r.lower <= 1 - np.sin(1.0) <= r.upper)
    True
    """
    n_grid = check_int_range(n_grid, "n_grid", 2, _MAX_GRID)
    exact = check_bool(exact, "exact")
    lip = None if lipschitz is None else _check_lipschitz(lipschitz, zero_ok=True)
    lo, hi = _interval(_default_interval(approx, target) if interval is None else interval)
    g, f = _pieces_on(approx, target, lo, hi, exact)
    if f is None:
        if exact:
            raise ValueError("exact=True needs a piecewise-linear target")
        if lip is None:
            raise ValueError("lipschitz (the target's Lipschitz constant, >= 0) is required for a callable target")
        xs = _merged_points([g.knots, np.linspace(float(lo), float(hi), n_grid)], lo, hi, exact)
        return _sup_bracket(g, target, xs, lip)
    return _sup_at_breakpoints(g, f, _merged_points([g.knots, f.knots], lo, hi, exact), exact)


def _default_interval(approx, target):
    """The intersection of the intervals of the piecewise-linear arguments, else [0, 1]."""
    spans = [f.interval for f in (approx, target) if isinstance(f, PiecewiseLinear)]
    return max([s[0] for s in spans], default=0.0), min([s[1] for s in spans], default=1.0)


def _pieces_on(approx, target, lo, hi, exact):
    """``approx`` and ``target`` as PiecewiseLinear covering [lo, hi] (``target`` None when only callable)."""
    g = _as_piecewise(approx, lo, hi, exact, "approx")
    if g is None:
        raise ValueError("approx must be piecewise linear (PiecewiseLinear, DyadicNet or ShallowReLU)")
    f = _as_piecewise(target, lo, hi, exact, "target")
    for h, name in ((g, "approx"), (f, "target")):
        if h is not None and (h.knots[0] > lo or h.knots[-1] < hi):
            raise ValueError(f"{name} is defined on [{h.knots[0]}, {h.knots[-1]}], which does not cover "
                             f"the interval [{lo}, {hi}]")
    return g, f


def _merged_points(pts, lo, hi, exact):
    """The sorted union of the point sets and the ends, within [lo, hi] (Fractions when ``exact``)."""
    if exact:
        lo_f, hi_f = Fraction(lo), Fraction(hi)
        xs = sorted({t for p in pts for t in p.tolist() if lo_f <= t <= hi_f} | {lo_f, hi_f})
        return np.array(xs, dtype=object)
    xs = np.unique(np.concatenate([np.asarray(p, dtype=np.float64) for p in pts] + [[float(lo), float(hi)]]))
    return xs[(xs >= float(lo)) & (xs <= float(hi))]


def _sup_at_breakpoints(g, f, xs, exact):
    """max |g - f| over the merged breakpoints ``xs``: the supremum of two piecewise-linear functions."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = g._at(xs) - f._at(xs)
    if not exact and not np.isfinite(e).all():
        raise ValueError("approx and target must differ by finite amounts in float64 (their values overflow)")
    absd = np.array([abs(t) for t in e.tolist()], dtype=object) if exact else np.abs(e)
    i = int(np.argmax(absd)) if not exact else max(range(len(absd)), key=lambda j: absd[j])
    v = absd[i]
    return SupError(v, v, v, xs[i])


def _sup_bracket(g, target, xs, lip):
    """The bracket of sup |g - f| for a callable L-Lipschitz f from its values at ``xs``."""
    try:
        fx = check_real_array(target(xs), "target(x)")
    except ValueError as exc:
        raise ValueError(f"target must return finite real values ({exc})") from exc
    if fx.shape != xs.shape:
        raise ValueError(f"target must return one value per point (vectorized), got shape {fx.shape} for {xs.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        gx = g._at(xs)
        e = gx - fx
        absd = np.abs(e)
        i = int(np.argmax(absd))
        dx = np.diff(xs)
        slope = np.abs(np.diff(gx) / dx)
        upper = float(np.max((absd[:-1] + absd[1:] + (lip + slope) * dx) / 2)) if dx.size else float(absd[i])
    if not (np.isfinite(absd).all() and math.isfinite(upper)):
        raise ValueError("lipschitz times the interval's length, and the target's values, must keep the error "
                         "bracket finite in float64")
    return SupError(float(absd[i]), float(absd[i]), max(upper, float(absd[i])), float(xs[i]))


def lacunary_target(n_terms=9, ratio=1 + 5 ** 0.5, seed=0, lipschitz=1.0):
    r"""A rough Lipschitz function on [0, 1]: a lacunary sum of triangle waves at every scale.

    .. math:: f(x) = \frac{L}{J}\sum_{j=0}^{J-1} \lambda^{-j}\,\tau(\lambda^j x + \varphi_j),
              \qquad \tau(t) = |t - \mathrm{round}(t)|,

    with random phases :math:`\varphi_j` (seeded). Each term has slopes :math:`\pm L/J`, so f is
    L-Lipschitz; it oscillates at the scales :math:`\lambda^{-j}`, and with the irrational default
    ratio its breakpoints avoid every dyadic grid. f is returned exactly as the piecewise-linear
    function it is (about :math:`2\lambda^J/(\lambda - 1)` knots). Our construction.

    Parameters
    ----------
    n_terms : int
        J, an integer in ``[1, 64]``.
    ratio : float > 1
        :math:`\lambda`, finite; with ``n_terms`` it must give at most :math:`2^{20}` knots,
        :math:`\sum_{j<J}(2\lambda^j + 1) \le 2^{20}`.
    seed : int >= 0
    lipschitz : float
        L, in ``(0, 1e300]``.

    Examples
    --------
    >>> f = lacunary_target(n_terms=3, ratio=3.0, seed=0)
    >>> f.lipschitz() <= 1.0 + 1e-12, f.knots.size
    (True, 28)
    """
    J = check_int_range(n_terms, "n_terms", 1, _MAX_TERMS)
    lam = float(check_positive(ratio, "ratio", allow_array=False))
    if lam <= 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    # knots: about 2 lam**j + 1 per term (bounded in logs first: lam**j may overflow)
    if (J - 1) * math.log2(lam) > 20 or sum(2 * lam**j + 1 for j in range(J)) > _MAX_KNOTS:
        raise ValueError(f"ratio and n_terms must give at most 2**20 knots (sum over j < n_terms of 2 ratio**j + 1),"
                         f" got ratio = {ratio!r}, n_terms = {J}")
    L = _check_lipschitz(lipschitz, zero_ok=False)
    seed = check_int(seed, "seed", 0)
    phases = np.random.default_rng(seed).random(J)
    knots = [np.array([0.0, 1.0])]
    for j in range(J):
        scale = lam ** j
        k = np.arange(math.ceil(2 * phases[j]), math.floor(2 * (scale + phases[j])) + 1)
        knots.append((k / 2 - phases[j]) / scale)
    x = np.unique(np.clip(np.concatenate(knots), 0.0, 1.0))
    values = np.zeros_like(x)
    for j in range(J):
        t = lam ** j * x + phases[j]
        values += np.abs(t - round_half_up(t)) / lam ** j
    return PiecewiseLinear(x, values * (L / J))


# --------------------------------------------------------------------------------------------
# the shallow interpolant


@dataclasses.dataclass(frozen=True)
class ShallowReLU:
    r"""A one-hidden-layer ReLU network on [0, 1]:
    :math:`g(x) = \beta + \sum_k c_k\,\mathrm{ReLU}(w_k x + a_k)`.

    Attributes
    ----------
    inner, offset, outer : ndarray
        :math:`w_k`, :math:`a_k`, :math:`c_k`: 1-D arrays of finite real numbers, all of the same length
        (stored as float64).
    bias : float
        :math:`\beta`, a finite real number.
    """

    inner: np.ndarray
    offset: np.ndarray
    outer: np.ndarray
    bias: float

    def __post_init__(self):
        arrays = {}
        for name in ("inner", "offset", "outer"):
            arr = check_real_array(getattr(self, name), name)
            if arr.ndim != 1:
                raise ValueError(f"{name} must be a 1-D array (one entry per hidden neuron), got shape {arr.shape}")
            arrays[name] = arr
        n = arrays["inner"].size
        for name in ("offset", "outer"):
            if arrays[name].size != n:
                raise ValueError(f"{name} must have the length of inner ({n}), got {arrays[name].size}")
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "bias", check_real(self.bias, "bias"))

    @classmethod
    def _trusted(cls, inner, offset, outer, bias):
        """From 1-D float64 arrays of one length and a float, known to be finite (no checks)."""
        out = object.__new__(cls)
        for name, value in (("inner", inner), ("offset", offset), ("outer", outer), ("bias", bias)):
            object.__setattr__(out, name, value)
        return out

    @classmethod
    def interpolant(cls, target, n_pieces):
        r"""The piecewise-linear interpolant of ``target`` at :math:`k/N`, as a shallow network.

        .. math:: f_N(x) = f(0) + \sum_{k=0}^{N-1} c_k\,\mathrm{ReLU}(x - k/N),\qquad
                  c_k = \sigma_k - \sigma_{k-1},\quad \sigma_k = N\bigl(f(\tfrac{k+1}{N}) - f(\tfrac kN)\bigr),

        with :math:`\sigma_{-1} = 0`: the outer weights are the changes of slope.

        Parameters
        ----------
        target : PiecewiseLinear or vectorized callable on [0, 1]
            Its values at the nodes must be finite real numbers.
        n_pieces : int
            N, an integer in ``[1, 2**24]``.
        """
        n = check_int_range(n_pieces, "n_pieces", 1, _MAX_PIECES)
        if not callable(target):
            raise ValueError(f"target must be callable or a PiecewiseLinear, got {type(target).__name__}")
        nodes = np.arange(n + 1) / n
        vals = _target_values(target, nodes)
        slopes = n * np.diff(vals)
        outer = np.diff(np.concatenate([[0.0], slopes]))
        return cls(np.ones(n), -nodes[:-1], outer, float(vals[0]))

    def quantized(self, bits, method="nearest"):
        """The same network with b-bit parameters, one fixed-point format per layer.

        Layer 1 (``inner``, ``offset``) is rounded to nearest. Layer 2 (``outer``, ``bias``) is
        rounded to nearest (``method="nearest"``) or, for ``outer``, by error feedback in the order
        of the breakpoints (``method="sigma_delta"``, with the head-room step of
        :func:`fixed_point_step`); then the slope error on every piece is at most half a step.
        ``bits``: an integer in ``[1, 64]``; ``method``: ``"nearest"`` or ``"sigma_delta"``.
        """
        b = _check_bits(bits)
        method = check_choice(method, "method", ("nearest", "sigma_delta"))
        q1 = _round_to_grid(_check_values(np.concatenate([self.inner, self.offset])), b)
        n = self.inner.size
        l2 = _check_values(np.concatenate([self.outer, [self.bias]]))
        if method == "nearest":
            q2 = _round_to_grid(l2, b)
            outer, bias = q2[:n], float(q2[n])
        else:
            step = _fixed_point_step(l2, b, True)
            outer = _sigma_delta(l2[:n], b, step)
            bias = float(_round_to_grid(l2[n:], b, step)[0])
        return ShallowReLU._trusted(q1[:n], q1[n:], outer, bias)

    def __call__(self, x):
        """Float64 values, in O((N + n) log N): sums of ramps from sorted breakpoints and prefix sums.

        ``x``: finite real numbers.
        """
        return self._values(check_real_array(x, "x"))

    def _values(self, x):
        w, a, c = self.inner, self.offset, self.outer
        out = np.full(x.shape, self.bias + float(c[w == 0] @ np.maximum(a[w == 0], 0.0)))
        for sign in (1, -1):
            sel = sign * w > 0
            if not sel.any():
                continue
            t = -a[sel] / w[sel]
            alpha = c[sel] * np.abs(w[sel])             # slope added beyond the breakpoint
            order = np.argsort(t)
            t, alpha = t[order], alpha[order]
            ca = np.concatenate([[0.0], np.cumsum(alpha)])
            cb = np.concatenate([[0.0], np.cumsum(alpha * t)])
            if sign > 0:                                 # sum over t < x of alpha (x - t)
                i = np.searchsorted(t, x, side="left")
                out = out + x * ca[i] - cb[i]
            else:                                        # sum over t > x of alpha (t - x)
                i = np.searchsorted(t, x, side="right")
                out = out + (cb[-1] - cb[i]) - x * (ca[-1] - ca[i])
        return out

    def piecewise_linear(self, interval=(0.0, 1.0)):
        """Exact breakpoints :math:`-a_k/w_k` inside the interval, values in float64."""
        lo, hi = (float(t) for t in _interval(interval))
        return self._piecewise_linear(lo, hi)

    def _piecewise_linear(self, lo, hi):
        nz = self.inner != 0
        t = -self.offset[nz] / self.inner[nz]
        knots = np.unique(np.concatenate([[lo, hi], t[(t > lo) & (t < hi)]]))
        return PiecewiseLinear(knots, self._values(knots))

    def to_net(self):
        """As a :class:`DyadicNet` (exact)."""
        return DyadicNet._from_floats([self.inner.reshape(-1, 1), self.outer.reshape(1, -1)],
                                      [self.offset, [self.bias]])


# --------------------------------------------------------------------------------------------
# building networks row by row


class _Lin:
    """A linear form over the neurons of the last built layer: sum_j terms[j] * n_j + const."""

    __slots__ = ("terms", "const")

    def __init__(self, terms=None, const=0):
        self.terms = dict(terms or {})
        self.const = Fraction(const)

    def _combine(self, other, sign):
        if isinstance(other, _Lin):
            out = _Lin(self.terms, self.const + sign * other.const)
            for j, v in other.terms.items():
                out.terms[j] = out.terms.get(j, 0) + sign * v
            return out
        return _Lin(self.terms, self.const + sign * Fraction(other))

    def __add__(self, other):
        return self._combine(other, 1)

    __radd__ = __add__

    def __sub__(self, other):
        return self._combine(other, -1)

    def __rsub__(self, other):
        return (-self) + other

    def __neg__(self):
        return self * -1

    def __mul__(self, k):
        k = Fraction(k)
        return _Lin({j: v * k for j, v in self.terms.items()}, self.const * k)

    __rmul__ = __mul__


class _Builder:
    """Assemble a DyadicNet one layer at a time from linear forms over the previous layer."""

    def __init__(self, n_inputs):
        self.width = n_inputs
        self.rows = []

    def inputs(self):
        return [_Lin({i: 1}) for i in range(self.width)]

    def layer(self, exprs):
        """A layer computing ``exprs`` (then ReLU, except on the last layer); returns its neurons."""
        exprs = [e if isinstance(e, _Lin) else _Lin({}, e) for e in exprs]
        for e in exprs:
            if any(j >= self.width for j in e.terms):
                raise AssertionError("a linear form refers to a neuron of an older layer")  # pragma: no cover
        self.rows.append((exprs, self.width))
        self.width = len(exprs)
        return [_Lin({j: 1}) for j in range(len(exprs))]

    def net(self):
        layers = []
        for exprs, n_in in self.rows:
            vals = [v for e in exprs for v in list(e.terms.values()) + [e.const]]
            exp = max((_log2_denominator(v, "weight") for v in vals), default=0)
            a = np.zeros((len(exprs), n_in), dtype=object)
            c = np.zeros(len(exprs), dtype=object)
            for r, e in enumerate(exprs):
                for j, v in e.terms.items():
                    a[r, j] = (v * (1 << exp)).numerator
                c[r] = (e.const * (1 << exp)).numerator
            layers.append((a, c, exp))
        return DyadicNet._trusted(layers)


# --------------------------------------------------------------------------------------------
# the exact depth-precision conversion


def _digits(n, b):
    """Balanced base-2**b digits of the integer n, least significant first, |d| <= 2**(b-1).

    Base 2 uses the non-adjacent form (digits -1, 0, 1, no two adjacent nonzero).
    """
    r = 1 << b
    out = []
    while n:
        if b == 1:
            d = 0 if n % 2 == 0 else 2 - (n % 4)
        else:
            d = n % r
            if d > r // 2:
                d -= r
        out.append(d)
        n = (n - d) >> b
    return out or [0]


def to_low_precision(net, bits, nonnegative_inputs=False):
    r"""A deeper network with b-bit weights that computes exactly the same function as ``net``.

    Every weight and bias of the result is one of the :math:`2^b` values :math:`\pm k\,2^{-b}`,
    :math:`k = 1,\dots,2^{b-1}` (:func:`in_alphabet`). Our construction, layer by layer: write the
    layer as :math:`y = 2^{-G}(M\hat x + C)` with integers M, C and the (rescaled) layer input
    :math:`\hat x`; expand :math:`M` and :math:`C` in balanced base-:math:`R = 2^b` digits,
    :math:`M = \sum_j D_j R^j`; and run Horner's rule from the least significant digit,

    .. math:: a_0 = \tfrac{1}{R}(D_0\hat x + E_0),\qquad
              a_j = \tfrac{1}{R}\,a_{j-1} + \tfrac{1}{R}(D_j\hat x + E_j),\qquad
              a_{J-1} = R^{-J}(M\hat x + C),

    one ReLU layer per digit: a signed accumulator travels as the pair
    :math:`(\mathrm{ReLU}(a), \mathrm{ReLU}(-a))`, and :math:`\hat x` travels in two copies, each
    passed on with weight 1/2. A hidden layer ends with :math:`\mathrm{ReLU}(a_{J-1})`, which is the
    true activation times a known power of two (absorbed into the next layer's integers, since
    ReLU is positively homogeneous); the output is rescaled exactly at the end (layers of up to
    8 copies, each multiplying by up to 4, or a last weight :math:`2^{-t}`).

    Parameters
    ----------
    net : DyadicNet
    bits : int
        An integer in ``[1, 64]``.
    nonnegative_inputs : bool
        ``True`` or ``False``: promise that every input is >= 0 (saves the negative parts of the first
        layer's inputs); the result is then exact only on such inputs.

    Returns
    -------
    DyadicNet
        Depth grows like :math:`\lceil B/b\rceil` per layer for B-bit weights.

    Examples
    --------
    >>> net = DyadicNet.from_arrays([[[0.8125, -1.5]], [[3.0]]], [[0.25], [-1.0]])
    >>> low = to_low_precision(net, 2)
    >>> in_alphabet(low, 2), low.depth
    (True, 16)
    >>> x = [[0.5, -0.25], [Fraction(-3, 8), 1]]
    >>> bool((low.exact(x) == net.exact(x)).all())
    True
    """
    b = _check_bits(bits)
    if not isinstance(net, DyadicNet):
        raise ValueError(f"net must be a DyadicNet, got {type(net).__name__}")
    nonnegative_inputs = check_bool(nonnegative_inputs, "nonnegative_inputs")
    return _to_low_precision(net, b, nonnegative_inputs)


def _to_low_precision(net, b, nonnegative_inputs):
    """:func:`to_low_precision` on checked arguments: per layer a copy layer, then the Horner layers."""
    layers = []          # (A, C) numerators at scale 2**-b
    # the source of the current block: list of (linear form over the current layer, signed?)
    n_cur = net.widths[0]
    src = [({i: 1}, not nonnegative_inputs) for i in range(n_cur)]
    t = 0                                 # source = 2**-t * true input
    for l, (A, C, e) in enumerate(net.layers):
        last = l == net.depth - 1
        rows, parts = _copy_rows(src, b)
        n_cur = _emit(layers, rows, n_cur, b)
        t += 1
        dig_m, dig_c, G = _layer_digits(A, C, e, t, b)
        acc, n_cur, J = _horner_layers(layers, n_cur, parts, dig_m, dig_c, b, last)
        T = b * J - G                        # y = 2**T * a_{J-1}
        if last:
            _rescale_output(layers, n_cur, acc, T, b)
        else:
            src = [({pos: 1}, False) for pos, _ in acc]
            t = T
    return DyadicNet._trusted(layers)


def _emit(layers, rows, n_in, b):
    """Append the layer with these rows (linear form as {input: numerator}, bias numerator), all at
    scale 2**-b; return its width."""
    a = np.zeros((len(rows), n_in), dtype=object)
    c = np.zeros(len(rows), dtype=object)
    for r, (terms, const) in enumerate(rows):
        for j, v in terms.items():
            a[r, j] += v
        c[r] = const
    layers.append((a, c, b))
    return len(rows)


def _copy_rows(src, b):
    """The copy layer: two copies of src/2 (and of -src/2 for signed signals); ``parts[i][sign][copy]``
    is the row of a copy."""
    half = 1 << (b - 1)
    rows, parts = [], []
    for form, signed in src:
        idx = []
        for sign in ((1, -1) if signed else (1,)):
            pair = []
            for _ in range(2):
                pair.append(len(rows))
                rows.append(({j: sign * half * v for j, v in form.items()}, 0))
            idx.append(pair)
        parts.append(idx)
    return rows, parts


def _layer_digits(A, C, e, t, b):
    """The layer as y = 2**-G (M xhat + C') with integers M, C' (W = A 2**-e, xhat = 2**-t z), and the
    balanced base-2**b digits of M and C'; returns ``(digits of M, digits of C', G)``."""
    G = max(e, e - t)
    M = A * (1 << (t + G - e))                      # t + G - e = max(t, 0) >= 0
    Cp = C * (1 << (G - e))
    dig_m = [[_digits(int(v), b) for v in row] for row in M.tolist()]
    dig_c = [_digits(int(v), b) for v in Cp.tolist()]
    J = max([len(d) for row in dig_m for d in row] + [len(d) for d in dig_c])
    # shift the integers up while they still fit in J digits: every bit of shift is one
    # doubling less at the end (y = 2**(bJ - G) a)
    for s in range(b - 1, 0, -1):
        dm = [[_digits(int(v) << s, b) for v in row] for row in M.tolist()]
        dc = [_digits(int(v) << s, b) for v in Cp.tolist()]
        if max([len(d) for row in dm for d in row] + [len(d) for d in dc]) <= J:
            return dm, dc, G + s
    return dig_m, dig_c, G


def _horner_layers(layers, n_cur, parts, dig_m, dig_c, b, last):
    """One layer per digit j: carry the input copies (except in the final one) and update the
    accumulators a_j; returns their rows ``(pos, neg)`` per output, the width and the digit count J."""
    J = max([len(d) for row in dig_m for d in row] + [len(d) for d in dig_c])
    acc = None                           # indices (pos, neg) of the accumulators in the current layer
    for j in range(J):
        final = j == J - 1
        rows = []
        carry = [] if final else _carry_rows(parts, rows, b)
        acc = [_accumulator_rows(rows, None if acc is None else acc[o], parts, dig_m[o], dig_c[o], j,
                                 signed=not (final and not last))
               for o in range(len(dig_m))]
        n_cur = _emit(layers, rows, n_cur, b)
        parts = carry
    return acc, n_cur, J


def _carry_rows(parts, rows, b):
    """Pass every copy of the input on as two copies of (copy + copy)/2; returns the new ``parts``."""
    half = 1 << (b - 1)
    carry = []
    for idx in parts:
        cidx = []
        for pair in idx:
            new = []
            for _ in range(2):
                new.append(len(rows))
                rows.append(({pair[0]: half, pair[1]: half}, 0))
            cidx.append(new)
        carry.append(cidx)
    return carry


def _accumulator_rows(rows, prev, parts, dig_row, dig_c, j, signed):
    """The rows of a_j = a_{j-1}/R + (D_j xhat + E_j)/R for one output (pos, and neg when ``signed``)."""
    terms = {}
    if prev is not None:
        terms[prev[0]] = terms.get(prev[0], 0) + 1
        if prev[1] is not None:
            terms[prev[1]] = terms.get(prev[1], 0) - 1
    for i, idx in enumerate(parts):
        d = dig_row[i][j] if j < len(dig_row[i]) else 0
        if d:
            terms[idx[0][0]] = terms.get(idx[0][0], 0) + d
            if len(idx) > 1:
                terms[idx[1][0]] = terms.get(idx[1][0], 0) - d
    bias = dig_c[j] if j < len(dig_c) else 0
    terms = {k: v for k, v in terms.items() if v}
    pos = len(rows)
    rows.append((terms, bias))
    neg = None
    if signed:
        neg = len(rows)
        rows.append(({k: -v for k, v in terms.items()}, -bias))
    return pos, neg


def _rescale_output(layers, n_cur, acc, T, b):
    """The output layers: multiply each accumulator pair (pos, neg) by 2**T exactly."""
    pairs = [[(pos, neg)] for pos, neg in acc]     # per output: copies of (pos, neg)
    while T < -b:                                  # weights +-2**-b: each such layer multiplies by 2**-b
        rows, new = [], []
        for copies in pairs:
            p0, n0 = copies[0]
            new.append([(len(rows), len(rows) + 1)])
            rows += [({p0: 1, n0: -1}, 0), ({p0: -1, n0: 1}, 0)]
        n_cur, pairs, T = _emit(layers, rows, n_cur, b), new, T + b
    if T >= 0:
        n_cur, rows = _double_output(layers, n_cur, pairs, T, b)
    else:
        k = 1 << (b + T)
        rows = [({copies[0][0]: k, copies[0][1]: -k}, 0) for copies in pairs]
    _emit(layers, rows, n_cur, b)


def _double_output(layers, n_cur, pairs, T, b):
    """Fan out into P copies of a/2, then each layer multiplies by up to P/2 = 4; returns the width and
    the rows of the last layer (still to emit)."""
    half = 1 << (b - 1)
    T += 1
    P = 1 << min(T + 1, 3)
    rows, new = [], []
    for copies in pairs:
        p0, n0 = copies[0]
        cp = []
        for _ in range(P):
            cp.append((len(rows), len(rows) + 1))
            rows += [({p0: half}, 0), ({n0: half}, 0)]
        new.append(cp)
    n_cur, pairs = _emit(layers, rows, n_cur, b), new
    while T > 2:
        k = min(T - 2, 2)
        rows, new = [], []
        for copies in pairs:
            cp = []
            for _ in range(P):
                cp.append((len(rows), len(rows) + 1))
                rows += [({p: half for p, _ in copies[: 1 << (k + 1)]}, 0),
                         ({n: half for _, n in copies[: 1 << (k + 1)]}, 0)]
            new.append(cp)
        n_cur, pairs, T = _emit(layers, rows, n_cur, b), new, T - k
    rows = []
    for copies in pairs:
        terms = {}
        for p, n in copies[: 1 << (T + 1)]:
            terms[p] = half
            terms[n] = -half
        rows.append((terms, 0))
    return n_cur, rows


# --------------------------------------------------------------------------------------------
# bit extraction


def bit_extractor(m, form="deep"):
    r"""A ReLU network whose outputs are the m bits of every input :math:`x = \sum_{i=1}^m \beta_i 2^{-i}`.

    Exact on the :math:`2^m` dyadic inputs of :math:`[0, 1)` with m bits (between them it
    interpolates). Our constructions:

    ``form="classical"``: :math:`\beta_k = \mathrm{ReLU}(2^{m-k+1}x_k - 2^{m-k} + 1) -
    \mathrm{ReLU}(2^{m-k+1}x_k - 2^{m-k})` and :math:`x_{k+1} = 2x_k - \beta_k`: depth m + 1, one
    weight of size up to :math:`2^m` per step (weights need about m bits).

    ``form="deep"``: all weights in :math:`\{\pm1, \pm2\}`, biases in {0, 1}. First
    :math:`Y = 2^m x` by m doublings (and the constant :math:`C = 2^{m-1}` likewise); then m folds
    :math:`Y \mapsto 2\,t(Y)` with :math:`t(Y) = Y - \mathrm{ReLU}(Y - C) - \mathrm{ReLU}(Y - C + 1)`,
    each reading one Gray-code bit :math:`g_k = \mathrm{ReLU}(Y - C + 1) - \mathrm{ReLU}(Y - C)`; the
    bits follow as :math:`\beta_k = |\beta_{k-1} - g_k|` (exclusive or). Depth 2m + 2.

    Parameters
    ----------
    m : int
        An integer in ``[1, 64]``.
    form : {"deep", "classical"}

    Returns
    -------
    DyadicNet
        One input, m outputs (most significant bit first).

    Examples
    --------
    >>> x = [[Fraction(k, 8)] for k in range(8)]
    >>> bit_extractor(3, "deep").exact(x)[5].tolist(), bit_extractor(3, "classical").exact(x)[5].tolist()
    ([Fraction(1, 1), Fraction(0, 1), Fraction(1, 1)], [Fraction(1, 1), Fraction(0, 1), Fraction(1, 1)])
    """
    m = check_int_range(m, "m", 1, _MAX_EXTRACT)
    form = check_choice(form, "form", ("deep", "classical"))
    return _classical_extractor(m) if form == "classical" else _deep_extractor(m)


def _classical_extractor(m):
    """``bit_extractor(m, "classical")``: one step x_{k+1} = 2 x_k - beta_k per layer."""
    bld = _Builder(1)
    (xk,) = bld.inputs()
    bits = []                                           # linear forms of the bits found so far
    for k in range(1, m + 1):
        scale = 1 << (m - k + 1)
        exprs = [scale * xk - (scale // 2), scale * xk - (scale // 2) + 1]
        if k < m:
            exprs.append(xk)                            # x_k >= 0, carried
        exprs += bits
        out = bld.layer(exprs)
        beta = out[1] - out[0]                          # q - p, the k-th bit
        if k < m:
            xk = 2 * out[2] - beta                      # x_{k+1} = 2 x_k - beta_k
        bits = [*out[3 if k < m else 2:], beta]
    bld.layer(bits)
    return bld.net()


def _deep_extractor(m):
    """``bit_extractor(m, "deep")``: m doublings, then m Gray-code folds with exclusive ors."""
    bld = _Builder(1)
    (x,) = bld.inputs()
    y, c0, C = _doublings(bld, x, m)
    bits = _gray_folds(bld, y, c0, C, m)
    bld.layer(bits)
    return bld.net()


def _doublings(bld, x, m):
    """Y = 2**m x and the constants 1 and C = 2**(m-1), by doubling in m layers."""
    y, c0, cbig = x, None, None
    for j in range(m):
        exprs = [2 * y, _Lin({}, 1)] if j == 0 else [2 * y, c0, 2 * (cbig if cbig is not None else c0)]
        out = bld.layer(exprs)
        y, c0, cbig = out[0], out[1], (out[2] if j else None)
    return y, c0, (cbig if cbig is not None else c0)


def _gray_folds(bld, y, c0, C, m):
    """The folds: layer S_k reads the Gray bit g_k and turns g_{k-1}, beta_{k-2} into beta_{k-1}; returns
    the linear forms of the m bits (the last one still a sum of two neurons)."""
    beta, g, done = None, None, []
    for k in range(1, m + 2):
        exprs, n_fold = [], 0
        if k <= m:
            exprs += [y - C, y - C + c0, y, C, c0]
            n_fold = 5
        if k == 2:
            exprs.append(g)                                  # beta_1 = g_1
        elif k > 2:
            exprs += [beta - g, g - beta]                    # |beta_{k-2} - g_{k-1}|
        n_xor = len(exprs) - n_fold
        if k > 2:
            done = [*done, beta]                             # beta_{k-2}, finished
        out = bld.layer(exprs + done)
        xor = out[n_fold:n_fold + n_xor]
        done = out[n_fold + n_xor:]
        if k <= m:
            p, q, ycar, C, c0 = out[:5]
            g = q - p
            y = 2 * ycar - 2 * p - 2 * q
        if xor:
            beta = xor[0] + xor[1] if len(xor) == 2 else xor[0]
    return [*done, beta]


# --------------------------------------------------------------------------------------------
# a codec: fine slopes stored in a few high-precision weights, decoded by a deep network


@dataclasses.dataclass(frozen=True)
class Codec:
    """The result of :func:`codec`.

    Attributes
    ----------
    net : DyadicNet
        One input, one output; computes ``approximant`` exactly on [0, 1].
    approximant : PiecewiseLinear
        The fine approximant: slopes :math:`\\pm L` on :math:`N` pieces of width :math:`1/N`.
    words : tuple of int
        The stored words, one M-bit integer per half-cell.
    cells, word_bits, n_pieces : int
    """

    net: DyadicNet
    approximant: PiecewiseLinear
    words: tuple
    cells: int
    word_bits: int
    n_pieces: int


def _power_of_two(v, name, maximum):
    v = check_int_range(v, name, 1, maximum, ", a power of two")
    if v & (v - 1):
        raise ValueError(f"{name} must be a power of two, got {v}")
    return v


def codec(target, cells, word_bits, lipschitz=1.0):
    r"""Store the slopes of a fine approximant of ``target`` in 2K words of M bits; decode them deeply.

    Our construction. Split [0, 1] into :math:`2K` half-cells of :math:`M` pieces each,
    :math:`N = 2KM` pieces of width :math:`h = 1/N`. A greedy walk with slopes :math:`\pm L`,

    .. math:: \hat g_{j+1} = \hat g_j + L h\,(2\beta_j - 1),\qquad
              \beta_j = [\hat g_j \le f(x_{j+1})],\qquad \hat g_0 = Lh\,\lfloor f(0)/Lh + \tfrac12\rfloor,

    stays within :math:`Lh` of f at the nodes (f L-Lipschitz), hence within :math:`2Lh` everywhere.
    Its N bits are the information; the network stores the M bits of each half-cell in one
    integer weight (the *word*) and computes

    .. math:: \hat g(x) = P(x) + 2Lh\sum_{D\in\{A,B\}}\sum_{i=1}^{M}
              \bigl[\pi(\rho_i(u_D), s_i) - \pi(u_D, s_i)\bigr],\qquad \pi(r, s) = \mathrm{ReLU}(r + s - 1) = rs,

    where P is the chord through the half-cell ends (a shallow layer), :math:`u_A, u_B` are two
    continuous coordinates that sweep the even (A) and odd (B) half-cells alternately up and down
    and stay at 0 or 1 on the others, :math:`\rho_i(u) = \mathrm{clip}(Mu - i + 1, 0, 1)`, and
    :math:`s_i` are the bits of the word the selector :math:`Y_D(x)` delivers there. Each decoder
    is a deep, narrow network with weights in :math:`\{\pm 1, \pm 2\}`: the Gray-code folds of
    :func:`bit_extractor` with a constant threshold :math:`2^{M-1}`, three layers per bit. The
    selector of A switches words only where :math:`u_A \in \{0, 1\}`; there
    :math:`\rho_i(u_A) = u_A` and A's sum vanishes whatever the bits, so the switching is exact.

    Parameters
    ----------
    target : PiecewiseLinear or vectorized callable on [0, 1]
        Its values at the nodes must be finite real numbers.
    cells : int, a power of two
        K (the words number 2K), in ``[1, 2**16]``.
    word_bits : int, a power of two
        M, bits per word, in ``[1, 2**10]``; the pieces :math:`N = 2KM` must number at most
        :math:`2^{22}` (the greedy walk is a Python loop over them).
    lipschitz : float
        L, in ``(0, 1e300]``; at least the Lipschitz constant of ``target`` for the error bound 2Lh.

    Returns
    -------
    Codec

    Examples
    --------
    >>> cd = codec(lacunary_target(n_terms=4, ratio=3.0), cells=2, word_bits=4)
    >>> cd.n_pieces, len(cd.words), cd.net.depth
    (16, 4, 17)
    >>> x = [[Fraction(k, 64)] for k in range(65)]
    >>> bool((cd.net.exact(x)[:, 0] == cd.approximant.to_exact()(np.array(x, dtype=object)[:, 0])).all())
    True
    """
    K = _power_of_two(cells, "cells", _MAX_CELLS)
    M = _power_of_two(word_bits, "word_bits", _MAX_WORD_BITS)
    if 2 * K * M > _MAX_CODEC_PIECES:
        raise ValueError(f"cells and word_bits must give at most 2**22 pieces (2 * cells * word_bits), got "
                         f"cells = {K}, word_bits = {M}")
    L = _check_lipschitz(lipschitz, zero_ok=False)
    if not callable(target):
        raise ValueError(f"target must be callable or a PiecewiseLinear, got {type(target).__name__}")
    return _codec(target, K, M, L)


def _codec(target, K, M, L):
    """:func:`codec` on checked arguments: the greedy walk, the words, the network."""
    N = 2 * K * M
    h = 1.0 / N
    nodes = np.arange(N + 1) * h
    G, beta = _greedy_walk(_target_values(target, nodes), L, h)
    approx = PiecewiseLinear._trusted(nodes, np.array(G, dtype=np.float64) * (L * h))
    words = _codec_words(beta, K, M)
    return Codec(_codec_net(G, words, K, M, L), approx, tuple(words), K, M, N)


def _greedy_walk(f, L, h):
    """The walk with slopes +-L through the node values ``f``, in units of L h (exact integers), and its bits."""
    G = [int(round_half_up(f[0] / (L * h)))]
    beta = []
    for j in range(len(f) - 1):
        up = G[-1] * L * h <= f[j + 1]
        beta.append(int(up))
        G.append(G[-1] + (1 if up else -1))
    return G, beta


def _codec_sweeps(R):
    """Knot values of the coordinates u_A and u_B on the R + 1 half-cell ends."""
    uA = [1 if r % 4 in (1, 2) else 0 for r in range(R + 1)]
    uB = [1 if r % 4 in (2, 3) else 0 for r in range(R + 1)]
    return uA, uB


def _codec_words(beta, K, M):
    """One M-bit word per half-cell: its bits in the order in which its decoder's coordinate sweeps it."""
    R = 2 * K
    uA, uB = _codec_sweeps(R)
    words = []
    for r in range(R):
        bits = beta[r * M:(r + 1) * M]
        u = uA if r % 2 == 0 else uB
        rising = u[r] == 0
        s = bits if rising else [1 - bits[M - 1 - i] for i in range(M)]
        words.append(sum(si << (M - 1 - i) for i, si in enumerate(s)))
    return words


def _codec_net(G, words, K, M, L):
    """The network of :func:`codec`: half-cell ramps, selectors and chord, two deep decoders, the sum."""
    R = 2 * K
    N = R * M
    uA, uB = _codec_sweeps(R)
    # knot values of the selectors: the word of the decoder's current (or next) half-cell
    YA = [words[r if r % 2 == 0 else r - 1] if r < R else words[R - 2] for r in range(R + 1)]
    YB = [words[1] if r == 0 else words[r if r % 2 == 1 else r - 1] for r in range(R + 1)]
    Ptil = [G[r * M] for r in range(R + 1)]                  # chord values in units of L h

    bld = _Builder(1)
    (x,) = bld.inputs()
    n = bld.layer([R * x - r for r in range(R + 1)])          # n_r = ReLU(2K x - r)
    ramps = bld.layer([n[r] - n[r + 1] for r in range(R)])   # s_r = clip(2K x - r, 0, 1)
    ptil = _pl_form(Ptil, ramps)
    sig = bld.layer([_pl_form(YA, ramps), _pl_form(YB, ramps), M * _pl_form(uA, ramps), M * _pl_form(uB, ramps),
                     _pl_form(uA, ramps), _pl_form(uB, ramps), ptil, -ptil, _Lin({}, 1 << (M - 1))])
    dec = _CodecDecoders(bld, sig)
    for _ in range(M):
        dec.next_bit()
    fin = bld.layer(dec.sums())
    c = Fraction(2) * Fraction(L) / N
    bld.layer([Fraction(L) / N * (fin[4] - fin[5]) + c * (fin[0] - fin[1] + fin[2] - fin[3])])
    return bld.net()


def _pl_form(vals, ramps):
    """The piecewise-linear function with these knot values, as a linear form of the half-cell ramps."""
    return sum(((vals[r + 1] - vals[r]) * ramps[r] for r in range(len(ramps)) if vals[r + 1] != vals[r]),
               _Lin({}, vals[0]))


class _CodecDecoders:
    """The two decoders (A, B) of :func:`codec`, advanced one bit (three layers) at a time.

    Registers per decoder d: the selected word Y, the position ramp w (a pair once it is split into
    positive and negative parts), the coordinate u, the accumulator (pair), the last products and
    bit. The constant threshold C and the chord P (a pair) ride along in every layer.
    """

    def __init__(self, bld, sig):
        self.bld = bld
        self.Y = {"A": sig[0], "B": sig[1]}
        self.w = {"A": (sig[2], None), "B": (sig[3], None)}
        self.u = {"A": sig[4], "B": sig[5]}
        self.P = (sig[6], sig[7])
        self.C = sig[8]
        self.acc = {"A": None, "B": None}
        self.pis = {"A": None, "B": None}
        self.betas = {"A": None, "B": None}
        self.ex, self.names = [], []

    def _wform(self, d):
        pos, neg = self.w[d]
        return pos - neg if neg is not None else pos

    def _put(self, name, e):
        self.names.append(name)
        self.ex.append(e)

    def _carry(self, d):                                   # a chain's registers, passed on unchanged
        self._put(d + "u", self.u[d])
        self._put(d + "w+", self.w[d][0])
        self._put(d + "w-", self.w[d][1])
        if self.acc[d]:
            self._put(d + "a+", self.acc[d][0])
            self._put(d + "a-", self.acc[d][1])

    def _take(self, d, out):                               # ... and read back after the layer
        self.u[d], self.w[d] = out[d + "u"], (out[d + "w+"], out[d + "w-"])
        if self.acc[d]:
            self.acc[d] = (out[d + "a+"], out[d + "a-"])

    def _layer(self):                                      # C and P ride along; build the layer
        self._put("C", self.C)
        self._put("P+", self.P[0])
        self._put("P-", self.P[1])
        out = dict(zip(self.names, self.bld.layer(self.ex)))
        self.ex, self.names = [], []
        self.C, self.P = out["C"], (out["P+"], out["P-"])
        return out

    def next_bit(self):
        out = self._thresholds()
        out = self._xor_and_ramp(out)
        self._products(out)

    def _thresholds(self):
        """Layer a: thresholds, position ramps, carries; accumulate the previous bit's products."""
        for d in "AB":
            Y, wf = self.Y[d], self._wform(d)
            self._put(d + "p", Y - self.C)
            self._put(d + "q", Y - self.C + 1)
            self._put(d + "y", Y)
            self._put(d + "ra", wf)
            self._put(d + "rb", wf - 1)                    # also the positive part of w - 1
            self._put(d + "wn", 1 - wf)
            self._put(d + "u", self.u[d])
            if self.betas[d] is not None:
                self._put(d + "bc", self.betas[d])
            if self.pis[d] is not None:
                self._put(d + "a+", (self.acc[d][0] if self.acc[d] else 0) + self.pis[d][0])
                self._put(d + "a-", (self.acc[d][1] if self.acc[d] else 0) + self.pis[d][1])
        out = self._layer()
        for d in "AB":
            self.u[d] = out[d + "u"]
            self.w[d] = (out[d + "rb"], out[d + "wn"])
            if d + "a+" in out:
                self.acc[d] = (out[d + "a+"], out[d + "a-"])
        return out

    def _xor_and_ramp(self, out):
        """Layer b: the Gray bit into the binary bit (exclusive or), the next fold, the ramp rho."""
        for d in "AB":
            g = out[d + "q"] - out[d + "p"]
            if d + "bc" in out:
                self._put(d + "x1", out[d + "bc"] - g)
                self._put(d + "x2", g - out[d + "bc"])
            else:
                self._put(d + "x1", g)
            self._put(d + "y", 2 * out[d + "y"] - 2 * out[d + "p"] - 2 * out[d + "q"])
            self._put(d + "rho", out[d + "ra"] - out[d + "rb"])
            self._carry(d)
        out = self._layer()
        for d in "AB":
            self._take(d, out)
        return out

    def _products(self, out):
        """Layer c: the products pi(rho_i, s_i) and pi(u, s_i)."""
        for d in "AB":
            bit = out[d + "x1"] + (out[d + "x2"] if d + "x2" in out else 0)
            self._put(d + "pi1", out[d + "rho"] + bit - 1)
            self._put(d + "pi2", self.u[d] + bit - 1)
            self._put(d + "b", bit)
            self._put(d + "Y", out[d + "y"])
            self._carry(d)
        out = self._layer()
        for d in "AB":
            self._take(d, out)
            self.Y[d] = out[d + "Y"]
            self.betas[d] = out[d + "b"]
            self.pis[d] = (out[d + "pi1"], out[d + "pi2"])

    def sums(self):
        """The last accumulations (positive and negative parts per decoder), then the chord pair."""
        ex = []
        for d in "AB":
            ex += [(self.acc[d][0] if self.acc[d] else 0) + self.pis[d][0],
                   (self.acc[d][1] if self.acc[d] else 0) + self.pis[d][1]]
        return ex + [self.P[0], self.P[1]]


# --------------------------------------------------------------------------------------------
# lower bounds (our derivation, for the schematic)


def lower_bounds(bits, n_params, depth, vc_constant=1.0):
    r"""Three lower bounds on the minimax sup-norm error over 1-Lipschitz functions on [0, 1].

    Our derivation (see the chapter), for the class of networks with a fixed architecture of
    ``n_params`` (W) parameters in ``depth`` (L) affine layers, each parameter one of at most
    :math:`2^b + 1` multiples of :math:`2^{-b}` (a fixed step: networks with a free per-layer scale
    or a free sparsity pattern form a larger class, for which the precision and counting bounds do
    not hold as stated):

    * precision: the output at :math:`x = 0` is a multiple of :math:`2^{-bL}`, so the constant
      target :math:`2^{-bL-1}` is missed by at least :math:`2^{-bL-1}`;
    * counting (memory): :math:`n` bumps of height :math:`1/(2n)` give :math:`2^n` targets; if every
      one is approximated within less than :math:`1/(2n)`, the networks of the class shatter n
      points. For a *fixed* architecture whose every parameter takes one of at most :math:`2^b + 1`
      values (the b-bit convention of this package: :math:`\{ks : |k| \le 2^{b-1}\}` with a fixed
      step s) there are at most :math:`(2^b + 1)^W` networks, so :math:`n \le W\log_2(2^b + 1)` and
      the error is at least :math:`1/(2(W\log_2(2^b + 1) + 1))`;
    * VC: the same shattering argument with :math:`n \le \mathrm{VCdim} \le c\,WL\log_2 W`
      (the order of the bound of Bartlett et al. 2019; the constant c is not known here and is
      ``vc_constant``): at least :math:`1/(2(cWL\log_2 W + 1))`.

    Parameters
    ----------
    bits : float or array_like
        b, finite and > 0 (the mean bits per parameter need not be an integer).
    n_params : float
        W, finite and > 0.
    depth : float
        L, finite and > 0.
    vc_constant : float
        c, finite and > 0.

    Returns
    -------
    dict
        ``precision``, ``counting``, ``vc`` and their maximum ``bound``; arrays if ``bits`` is. Each is
        computed in float64: a bound below the smallest positive float64 comes out as 0 (the precision
        bound once :math:`bL > 1074`; every bound when b, W or L approach the float64 range).

    Examples
    --------
    >>> lb = lower_bounds(8, 1000, 2)
    >>> round(lb["counting"], 10), lb["bound"] == lb["counting"]
    (6.24483e-05, True)
    """
    b = check_positive(bits, "bits")
    W = float(check_positive(n_params, "n_params", allow_array=False))
    L = float(check_positive(depth, "depth", allow_array=False))
    c = float(check_positive(vc_constant, "vc_constant", allow_array=False))
    with np.errstate(over="ignore"):   # a product past float64 is inf, and its bound 0: the float64 value
        precision = 2.0 ** (-b * L - 1)
        counting = 1.0 / (2 * (W * np.logaddexp2(b, 0.0) + 1))     # log2(2**b + 1) without overflow
        vc = 1.0 / (2 * (c * W * L * max(math.log2(W), 1.0) + 1))
    precision, counting, vc = np.broadcast_arrays(precision, counting, vc)   # vc does not depend on b
    bound = np.maximum(np.maximum(precision, counting), vc)
    out = {"precision": precision, "counting": counting, "vc": vc, "bound": bound}
    return {k: (v.item() if np.ndim(v) == 0 else np.array(v)) for k, v in out.items()}
