r"""Training with quantized weights: grids, rounding, the BC / SR / R update rules, the SR chain.

The grid is uniform with step :math:`\Delta` on a range :math:`[L, U]` that contains 0:
:math:`\mathcal G = \{L + k\Delta : k = 0, \dots, n-1\}`, :math:`U = L + (n-1)\Delta` (fixed point
with ``W`` bits of which ``F`` fractional; binary :math:`\{-a, a\}`). Two quantizers map a real
weight to it, after clipping to :math:`[L, U]`:

* deterministic rounding :math:`Q_d(w)`, the nearest grid point (halves round up);
* stochastic rounding :math:`Q_s(w)`: with :math:`\lfloor w\rfloor` and :math:`\lceil w\rceil` the
  grid points around ``w``, down with probability :math:`(\lceil w\rceil - w)/\Delta`, up otherwise,
  so that :math:`\mathbb E\,Q_s(w) = w` inside the range.

Three update rules for a stochastic gradient :math:`g`, the book's representatives (its choice) of
training with and without a full-precision buffer, the two families that Li et al. (2017) contrast:

.. math::
   \text{R: } w \leftarrow Q_d(w - \alpha g(w)),\qquad
   \text{SR: } w \leftarrow Q_s(w - \alpha g(w)),\qquad
   \text{BC: } w_b = Q(w_r),\ \ w_r \leftarrow w_r - \alpha g(w_b),

plus plain SGD for reference. SR is stochastic rounding (Gupta et al. 2015) and R deterministic
rounding. BC (BinaryConnect, Courbariaux et al. 2015) keeps a full-precision
buffer :math:`w_r` and evaluates the gradient at its quantized image :math:`w_b`; ``Q`` is
:math:`Q_d` (deterministic BC) or :math:`Q_s` (stochastic BC). SR and R keep nothing but the grid
point.

On a one-dimensional grid SR is a Markov chain. When every move is shorter than one step,
:math:`\alpha\max|g| \le \Delta`, it only jumps to neighbours, with probabilities proportional to
``alpha``: the transition matrix is :math:`P = I + \alpha A` with ``A`` independent of
:math:`\alpha`, so the stationary distribution (:math:`\pi A = 0`) does not depend on the step
size. :func:`sr_transition_matrix` builds ``P`` exactly (sparse, banded) for a mean gradient plus a
finite noise distribution, and :func:`stationary_distribution` solves for :math:`\pi` with a sparse
LU factorisation.

The module imports numpy and scipy only; functions that take torch tensors import torch when called,
and :class:`QuantizedSGD` (a plain class, not a ``torch.optim.Optimizer`` subclass) applies the rules
to any model's parameters.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable

import numpy as np
from scipy import optimize, sparse, special
from scipy.sparse import linalg as sparse_linalg

from ._common import all_finite, is_torch, numpy_generator, round_half_up, torch_generator
from ._validate import (_as_float_array, check_bool, check_broadcast, check_callable, check_choice, check_finite,
                        check_int, check_positive, check_probability, check_real, check_seed, renamed)

__all__ = [
    "Grid",
    "RULES",
    "sgd_update",
    "r_update",
    "sr_update",
    "bc_update",
    "run_rule",
    "RuleRun",
    "sr_transition_matrix",
    "neighbour_lr",
    "stationary_distribution",
    "detailed_balance_error",
    "sgd_stationary_variance",
    "sr_floor",
    "LogisticProblem",
    "QuantizedSGD",
    "weight_groups",
    "binary_mlp",
    "fit",
]

#: the update rules: full-precision SGD, deterministic rounding, stochastic rounding, BinaryConnect
RULES = ("sgd", "r", "sr", "bc")
# the two quantizers of a Grid (Grid.quantize; BC's forward rounding)
_ROUNDINGS = ("deterministic", "stochastic")

#: the largest number of steps :math:`(U - L)/\Delta` of a :class:`Grid` (2**53: every grid index is an
#: exact float64 integer) and the largest :math:`|L|, |U|` (so that :math:`U - L` cannot overflow)
MAX_GRID_STEPS, MAX_GRID_ABS = 2**53, 1e300
#: the largest grid size times number of noise values of the exact SR chain (:func:`sr_transition_matrix`,
#: :func:`neighbour_lr`): about 1.5 GiB of intermediate arrays; the book's largest chain has 40002
MAX_CHAIN_SIZE = 2**24
#: the most updates :func:`run_rule` and :func:`fit` take (a Python loop: 10**8 steps take hours)
MAX_STEPS = 10**8
#: the most entries of a data array :class:`LogisticProblem` builds (2**27 float64 = 1 GiB)
MAX_ENTRIES = 2**27
#: the most weights per layer of :func:`binary_mlp` (2**28 float32 = 1 GiB) and its widest layer
MAX_LAYER_WEIGHTS, MAX_WIDTH = 2**28, 2**24
#: the largest norm of the teacher in :meth:`LogisticProblem.make` (labels are deterministic long before)
MAX_TEACHER_SCALE = 1e100
#: the largest :math:`|x_{ij}|`, :math:`|w_j|` and ridge of a :class:`LogisticProblem`: margins
#: :math:`y\,x\cdot w` and the penalty stay far inside float64
MAX_LOGISTIC_ABS = 1e50


def _positive(value, name, scalar=True):
    """A finite positive float (``scalar``) or float64 array; bools and strings are rejected."""
    if scalar:
        value = check_real(value, name)
        if value <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        return value
    return check_positive(value, name)


def _check_weights(w, name="w"):
    """numpy float64 array or torch tensor (floating), without NaN."""
    if is_torch(w):
        import torch

        if not isinstance(w, torch.Tensor) or not torch.is_floating_point(w):
            raise ValueError(f"{name} must be a floating-point tensor, got {getattr(w, 'dtype', type(w))}")
        if torch.isnan(w).any():
            raise ValueError(f"{name} must not contain NaN")
        return w
    return _as_float_array(w, name)


def _check_finite_values(x, name):
    """A finite float64 array, or a floating-point torch tensor with finite entries."""
    if is_torch(x):
        import torch

        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise ValueError(f"{name} must be finite real numbers (a floating-point tensor), "
                             f"got {getattr(x, 'dtype', type(x))}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite real numbers (no NaN or inf)")
        return x
    return check_finite(x, name)


def _check_grid(grid, name="grid", optional=False):
    if not isinstance(grid, Grid) and not (optional and grid is None):
        allowed = "None or a Grid" if optional else "a Grid"
        raise ValueError(f"{name} must be {allowed} (qmf_lite.weights.Grid), got {grid!r}")
    return grid


@dataclasses.dataclass(frozen=True)
class Grid:
    r"""A uniform grid :math:`\{L + k\Delta\}_{k=0}^{n-1}` on :math:`[L, U]`, with :math:`L \le 0 \le U`.

    Parameters
    ----------
    delta : float
        The step :math:`\Delta > 0`, finite.
    low, high : float
        The range :math:`[L, U]`, finite, containing 0, with :math:`|L|, |U| \le 10^{300}`
        (``MAX_GRID_ABS``) and :math:`(U - L)/\Delta` a positive integer (to a relative 1e-9) of at
        most :math:`2^{53}` (``MAX_GRID_STEPS``: every grid index is then an exact float64 integer).

    Examples
    --------
    >>> g = Grid.fixed_point(4, 2)          # 4 bits, 2 of them fractional
    >>> g.delta, g.low, g.high, g.n_levels
    (0.25, -2.0, 1.75, 16)
    >>> g.round([0.1, 0.125, -3.0, 0.3])
    array([ 0.  ,  0.25, -2.  ,  0.25])
    >>> Grid.binary(0.5).points
    array([-0.5,  0.5])
    """

    delta: float
    low: float
    high: float

    def __post_init__(self):
        delta = _positive(self.delta, "delta")
        low, high = check_real(self.low, "low"), check_real(self.high, "high")
        if not low <= 0.0 <= high:
            raise ValueError(f"the range [low, high] must contain 0, got [{low}, {high}]")
        if not low < high:
            raise ValueError(f"low must be < high, got low = {low}, high = {high}")
        if max(-low, high) > MAX_GRID_ABS:
            raise ValueError(f"low and high must lie in [-{MAX_GRID_ABS:g}, {MAX_GRID_ABS:g}], got [{low}, {high}]")
        steps = (high - low) / delta
        if not 0.5 <= steps <= MAX_GRID_STEPS + 0.5 or abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ValueError(f"(high - low) / delta must be a positive integer of at most 2**53 (the number of grid "
                             f"steps), got ({high!r} - {low!r}) / {delta!r} = {steps!r}")
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    # --- constructors ----------------------------------------------------------------------
    @classmethod
    def fixed_point(cls, bits, frac_bits):
        r"""Two's-complement fixed point: ``bits`` in all, ``frac_bits`` after the binary point.

        :math:`\Delta = 2^{-F}`, :math:`L = -2^{W-1-F}`, :math:`U = 2^{W-1-F} - 2^{-F}`
        (``1 <= bits <= 53``, ``0 <= frac_bits <= 1022``: :math:`2^W` levels, each exact in float64).
        """
        bits = check_int(bits, "bits", 1, 53)
        frac_bits = check_int(frac_bits, "frac_bits", 0, 1022)
        delta = 2.0 ** -frac_bits
        half = 2.0 ** (bits - 1 - frac_bits)
        return cls(delta, -half, half - delta)

    @classmethod
    def binary(cls, a):
        """The two-point grid :math:`\\{-a, a\\}` (step ``2a``), as in BinaryConnect; ``0 < a <= 1e300``."""
        a = _positive(a, "a")
        if a > MAX_GRID_ABS:
            raise ValueError(f"a must lie in (0, {MAX_GRID_ABS:g}], got {a!r}")
        return cls(2.0 * a, -a, a)

    @classmethod
    def symmetric(cls, delta, half_levels):
        r"""The grid :math:`\{k\Delta : |k| \le K\}`, ``1 <= K = half_levels <= 2**52``, ``0 < delta``,
        :math:`K\Delta \le 10^{300}`."""
        half_levels = check_int(half_levels, "half_levels", 1, MAX_GRID_STEPS // 2)
        delta = _positive(delta, "delta")
        if half_levels * delta > MAX_GRID_ABS:
            raise ValueError(f"half_levels * delta must be at most {MAX_GRID_ABS:g}, got {half_levels} * {delta!r}")
        return cls(delta, -half_levels * delta, half_levels * delta)

    # --- properties ------------------------------------------------------------------------
    @property
    def n_levels(self):
        """Number of grid points ``n``."""
        return int(round((self.high - self.low) / self.delta)) + 1

    @property
    def points(self):
        """The grid points, an increasing float64 array of length ``n``."""
        return self.low + self.delta * np.arange(self.n_levels, dtype=np.float64)

    # --- quantizers: each public method checks ``w`` (and ``rng``) once and calls its unchecked step --------
    def clip(self, w):
        """``w`` clipped to ``[low, high]`` (numpy array or torch tensor, same type back)."""
        return self._clip(_check_weights(w))

    def _clip(self, w):
        if is_torch(w):
            import torch

            return torch.clamp(w, self.low, self.high)
        return np.clip(w, self.low, self.high)

    def _position(self, w):
        """Clipped position in units of the step, ``u = (clip(w) - L)/Delta`` in ``[0, n-1]``."""
        return (self._clip(w) - self.low) / self.delta

    def _from_index(self, k):
        """The grid points of the indices ``k``, clamped to ``[0, n-1]``."""
        if is_torch(k):
            import torch

            return self.low + torch.clamp(k, 0, self.n_levels - 1) * self.delta
        return self.low + np.clip(k, 0, self.n_levels - 1) * self.delta

    def round(self, w):
        r"""Deterministic rounding :math:`Q_d(w)`: the nearest grid point to the clipped ``w``.

        Halves round up (so that on :math:`\{-a, a\}` it is BinaryConnect's
        :math:`a\,\mathrm{sign}(w)` with :math:`\mathrm{sign}(0) = +1`). Idempotent on the grid.
        """
        return self._round(_check_weights(w))

    def _round(self, w):
        return self._from_index(round_half_up(self._position(w)))

    def stochastic_round(self, w, rng):
        r"""Stochastic rounding :math:`Q_s(w)` of the clipped ``w``, unbiased inside the range.

        .. math:: Q_s(w) = \begin{cases}\lfloor w\rfloor & \text{with probability }
                  (\lceil w\rceil - w)/\Delta\\ \lceil w\rceil & \text{otherwise}\end{cases}

        Parameters
        ----------
        w : array_like or torch.Tensor
            Real numbers (floating-point for a tensor), no NaN; ``inf`` is clipped like any value.
        rng : int, numpy.random.Generator or torch.Generator
            An integer in [0, 2**63 - 1] seeds a fresh generator (numpy for arrays, torch on ``w``'s
            device for tensors).

        Examples
        --------
        >>> g = Grid.symmetric(0.5, 4)
        >>> q = g.stochastic_round(np.full(100_000, 0.2), rng=0)
        >>> sorted(set(q.tolist())), round(float(q.mean()), 2)
        ([0.0, 0.5], 0.2)
        """
        w = _check_weights(w)
        return self._stochastic_round(w, _generator_like(w, rng))

    def _stochastic_round(self, w, gen):
        """:math:`Q_s(w)` with ``gen`` a numpy Generator (arrays) or a torch Generator on ``w``'s device."""
        u = self._position(w)
        if is_torch(u):
            import torch

            k0 = torch.floor(u)
            return self._from_index(k0 + (torch.rand(u.shape, generator=gen, device=u.device, dtype=u.dtype)
                                          < (u - k0)).to(u.dtype))
        k0 = np.floor(u)
        return self._from_index(k0 + (gen.random(np.shape(u)) < (u - k0)))

    def quantize(self, w, rounding="deterministic", rng=None):
        """:meth:`round` (``rounding="deterministic"``) or :meth:`stochastic_round` (``"stochastic"``)."""
        rounding = check_choice(rounding, "rounding", _ROUNDINGS)
        if rounding == "deterministic":
            return self.round(w)
        if rng is None:
            raise ValueError("rng must be given for rounding='stochastic' (a seed or a Generator)")
        return self.stochastic_round(w, rng)

    def _quantize(self, w, rounding, gen):
        return self._round(w) if rounding == "deterministic" else self._stochastic_round(w, gen)


def _generator_like(w, rng, name="rng"):
    """The generator that ``rng`` stands for: numpy for an array ``w``, torch on ``w``'s device for a tensor."""
    if is_torch(w):
        return torch_generator(rng, w.device, name, allow_none=False)
    return numpy_generator(rng, name, allow_none=False)


# --- update rules ----------------------------------------------------------------------------
def _update(rule, w, g, lr, grid, gen=None, clip_buffer=True):
    r"""One step of ``rule``, the one implementation of the rules (unchecked; numpy arrays or torch tensors).

    SGD :math:`w - \alpha g`; R :math:`Q_d(w - \alpha g)`; SR :math:`Q_s(w - \alpha g)` with the generator
    ``gen``; BC the buffer step :math:`w_r - \alpha g`, clipped to the grid's range with ``clip_buffer``
    (the caller evaluates ``g`` at the forward weights :math:`Q(w_r)`). :func:`run_rule`,
    :class:`QuantizedSGD` and the public ``*_update`` functions all step through here. A step that
    overflows is clipped to the range by R, SR and clipped BC; the caller rejects it otherwise.
    """
    new = w - lr * g
    if rule == "r":
        return grid._round(new)
    if rule == "sr":
        return grid._stochastic_round(new, gen)
    return grid._clip(new) if rule == "bc" and clip_buffer else new


def _check_lr(lr):
    lr = _positive(lr, "lr", scalar=False)
    return float(lr) if lr.ndim == 0 else lr


def _check_rule_grid(rule, grid):
    """``grid``: a Grid, or also None for the rule ``"sgd"`` (which ignores it)."""
    if rule == "sgd":
        return _check_grid(grid, optional=True)
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid for rule {rule!r}, got {grid!r}")
    return grid


def _checked_update(rule, w, g, lr, grid, rng=None, clip_buffer=True, wname="w"):
    r"""The door of the public ``*_update`` functions: check ``w`` (named ``wname``), ``g``, ``lr`` (and
    ``rng`` for SR), then :func:`_update`. Where the result is not clipped to a grid (SGD, unclipped BC),
    :math:`w - \alpha g` must stay finite."""
    w = _check_finite_values(w, wname)
    g = _check_finite_values(g, "g")
    lr = _check_lr(lr)
    check_broadcast((wname, "g", "lr"), w, g, np.asarray(lr))
    if is_torch(w) or is_torch(g):  # a tensor and numbers: all become tensors like it
        import torch

        like = w if is_torch(w) else g
        w, g = (torch.as_tensor(x, dtype=like.dtype, device=like.device) for x in (w, g))
        if not isinstance(lr, float):
            lr = torch.as_tensor(lr, dtype=like.dtype, device=like.device)
    gen = _generator_like(w, rng) if rule == "sr" else None
    with np.errstate(over="ignore"):  # an overflowing step is clipped to the grid, or refused below
        new = _update(rule, w, g, lr, grid, gen, clip_buffer)
    if (rule == "sgd" or not clip_buffer) and not all_finite(new):
        raise ValueError(f"lr * g must keep {wname} - lr * g finite; it overflowed with lr = {lr!r}")
    return new


def sgd_update(w, g, lr):
    r"""Full-precision SGD, :math:`w - \alpha g`.

    ``w`` and ``g`` are finite real numbers (arrays, or floating-point tensors), ``lr > 0`` a scalar or
    an array; the three broadcast together, and :math:`w - \alpha g` must stay finite.
    """
    return _checked_update("sgd", w, g, lr, None)


def r_update(w, g, lr, grid):
    r"""Rule R, deterministic rounding of the step: :math:`Q_d(w - \alpha g)`.

    From a grid point it moves only if :math:`\alpha|g| \ge \Delta/2`: with smaller steps R stalls.
    ``w``, ``g`` finite, ``lr > 0`` (scalar or array), broadcasting together; ``grid`` a :class:`Grid`.

    Examples
    --------
    >>> g = Grid.symmetric(0.25, 8)
    >>> float(r_update(0.5, 1.0, 0.1, g)), float(r_update(0.5, 2.0, 0.1, g))   # 0.1 < 0.125: stuck
    (0.5, 0.25)
    """
    return _checked_update("r", w, g, lr, _check_grid(grid))


def sr_update(w, g, lr, grid, rng):
    r"""Rule SR, stochastic rounding of the step: :math:`Q_s(w - \alpha g)`.

    ``w``, ``g`` finite, ``lr > 0`` (scalar or array), broadcasting together; ``grid`` a :class:`Grid`;
    ``rng`` as in :meth:`Grid.stochastic_round`.
    """
    return _checked_update("sr", w, g, lr, _check_grid(grid), rng)


def bc_update(buffer, g, lr, grid, clip_buffer=True, *, clip=None):
    r"""Rule BC on the buffer: :math:`w_r - \alpha g` (``g`` evaluated at :math:`w_b = Q(w_r)`).

    With ``clip_buffer`` (default) the buffer is clipped to the grid's range, so that it cannot
    drift beyond the point where its quantized image could change back (our default; it keeps the
    buffer of a binary weight in :math:`[-a, a]`). ``buffer``, ``g`` finite, ``lr > 0`` (scalar or
    array), broadcasting together; ``grid`` a :class:`Grid`; ``clip_buffer`` True or False (without
    clipping the new buffer must stay finite), as in :func:`run_rule` and :class:`QuantizedSGD`.
    ``clip`` is its deprecated former name (a ``DeprecationWarning``): elsewhere in the package
    ``clip`` is the straight-through estimator's clipping point.
    """
    clip_buffer, name = renamed("bc_update", "clip_buffer", clip_buffer, "clip", clip, default=True,
                                note=", as in run_rule")
    grid = _check_grid(grid)
    clip_buffer = check_bool(clip_buffer, name)
    return _checked_update("bc", buffer, g, lr, grid, clip_buffer=clip_buffer, wname="buffer")


@dataclasses.dataclass
class RuleRun:
    """The end state and the recorded statistics of :func:`run_rule`.

    Attributes
    ----------
    deployed : ndarray
        The weights a device would use: the iterate for SGD, R and SR; :math:`Q_d(w_r)` for BC.
    buffer : ndarray
        The full-precision buffer :math:`w_r` for BC, the iterate itself otherwise.
    trace : ndarray or None
        ``observe(deployed, buffer)`` stacked over the recorded steps (first axis).
    steps : ndarray
        The step numbers at which ``trace`` was recorded.
    """

    deployed: np.ndarray
    buffer: np.ndarray
    trace: object
    steps: np.ndarray


def run_rule(rule, grad, w0, *, lr, steps, grid=None, seed=0, bc_rounding="stochastic", clip_buffer=True,
             observe=None, every=1):
    r"""Run one update rule on many independent chains at once (numpy, vectorised).

    Parameters
    ----------
    rule : {"sgd", "r", "sr", "bc"}
    grad : callable
        ``grad(w, rng)`` returns a stochastic gradient of the shape of ``w`` (fresh noise per entry
        or per chain, drawn from the numpy Generator ``rng``): finite real numbers broadcasting to
        the shape of ``w``, else a ``ValueError`` names the step.
    w0 : array_like
        Initial weights, finite, e.g. of shape ``(chains,)`` or ``(chains, d)``; R and SR start from
        :math:`Q_d(w_0)`, BC's buffer from ``w0``.
    lr : float or array_like
        Step size(s) > 0, finite, broadcasting with ``w0`` (one per chain, for instance). Any size is
        allowed where the result is clipped to the grid (R, SR, BC with ``clip_buffer``); for SGD and
        unclipped BC an iterate that overflows float64 is a ``ValueError``.
    steps : int
        Number of updates, in [0, 10**8] (``MAX_STEPS``).
    grid : Grid
        Required for R, SR and BC (``None`` or a :class:`Grid` for SGD, which ignores it).
    seed : int or numpy.random.Generator
        Seed in [0, 2**63 - 1] of the numpy Generator used for the gradient noise and the rounding
        (or the Generator itself).
    bc_rounding : {"stochastic", "deterministic"}
        The quantizer of BC's forward weights :math:`w_b`. The default, stochastic, gives on a
        quadratic loss an unbiased gradient of the buffer's loss, which the one-dimensional problems
        of chapter 10 use; :class:`QuantizedSGD`, for networks, defaults to BinaryConnect's
        deterministic rounding instead.
    clip_buffer : bool
        Clip BC's buffer to the grid's range after each step (True or False).
    observe : callable, optional
        ``observe(deployed, buffer)`` is recorded every ``every`` steps (and at step 0).
    every : int
        Recording interval, >= 1.

    Returns
    -------
    RuleRun

    Examples
    --------
    >>> grid = Grid.symmetric(0.25, 8)
    >>> noisy = lambda w, rng: (w - 0.3) + rng.choice([-1.0, 1.0], size=w.shape)
    >>> run = run_rule("r", noisy, np.full(4, -1.0), lr=0.05, steps=100, grid=grid)
    >>> run.deployed                     # 0.05 |g| < Delta/2 everywhere on the way: R never moves
    array([-1., -1., -1., -1.])
    """
    rule = check_choice(rule, "rule", RULES)
    grad = check_callable(grad, "grad")
    grid = _check_rule_grid(rule, grid)
    bc_rounding = check_choice(bc_rounding, "bc_rounding", _ROUNDINGS)
    clip_buffer = check_bool(clip_buffer, "clip_buffer")
    if observe is not None and not callable(observe):
        raise ValueError(f"observe must be None or a callable, got {observe!r}")
    lr = _check_lr(lr)
    steps = check_int(steps, "steps", 0, MAX_STEPS)
    every = check_int(every, "every", 1)
    rng = numpy_generator(seed, "seed", allow_none=False)
    w0 = check_finite(w0, "w0")
    check_broadcast(("lr", "w0"), np.asarray(lr), w0)
    return _run_rule(rule, grad, w0, lr, steps, grid, rng, bc_rounding, clip_buffer, observe, every)


def _run_rule(rule, grad, w0, lr, steps, grid, rng, bc_rounding, clip_buffer, observe, every):
    """:func:`run_rule` on checked arguments: the loop of :func:`_update` steps, recording as it goes."""
    w = grid._round(w0) if rule in ("r", "sr") else w0.copy()
    unclipped = rule == "sgd" or (rule == "bc" and not clip_buffer)
    records, at = [], []

    def record(t):
        if observe is not None and t % every == 0:
            records.append(observe(*_deployed_and_buffer(rule, w, grid)))
            at.append(t)

    record(0)
    with np.errstate(over="ignore"):  # an overflowing step is clipped to the grid, or refused below
        for t in range(1, steps + 1):
            forward = grid._quantize(w, bc_rounding, rng) if rule == "bc" else w
            w = _update(rule, w, _checked_gradient(grad, forward, rng, t), lr, grid, rng, clip_buffer)
            if unclipped and not np.isfinite(w).all():
                raise ValueError(f"lr must keep the {rule} iterate within float64: it overflowed at step {t} "
                                 f"(lr = {lr!r})")
            record(t)
    deployed, buffer = _deployed_and_buffer(rule, w, grid)
    trace = np.asarray(records) if observe is not None else None
    return RuleRun(deployed, buffer.copy(), trace, np.asarray(at))


def _deployed_and_buffer(rule, w, grid):
    """The deployed weights and the buffer of a :func:`run_rule` iterate ``w``: :math:`(Q_d(w), w)` for BC."""
    return (grid._round(w), w) if rule == "bc" else (w, w)


def _checked_gradient(grad, at_w, rng, t):
    """``grad(at_w, rng)`` at step ``t`` of :func:`run_rule`, which must be finite and broadcast to ``at_w``."""
    g = np.asarray(grad(at_w, rng))
    if g.dtype.kind not in "iuf" or not np.isfinite(g).all():
        raise ValueError(f"grad must return finite real numbers; at step {t} grad(w, rng) gave {g!r}")
    try:
        fits = np.broadcast_shapes(g.shape, at_w.shape) == at_w.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"grad must return an array broadcasting to the shape {at_w.shape} of w; at step {t} "
                         f"it has shape {g.shape}")
    return g


# --- the exact SR chain on a one-dimensional grid ---------------------------------------------
def _noise_distribution(noise, probs):
    values = _as_float_array(noise, "noise").ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"noise must be a non-empty array of finite values, got {noise!r}")
    if probs is None:
        probs = np.full(values.size, 1.0 / values.size)
    else:
        probs = check_probability(probs, "probs").ravel()
        if probs.shape != values.shape:
            raise ValueError(f"probs must have one entry per noise value ({values.size}), got {probs.size}")
        if abs(probs.sum() - 1.0) > 1e-12:
            raise ValueError(f"probs must sum to 1, got {probs.sum()!r}")
    return values, probs


def _mean_gradient(grad, grid, n_noise):
    """The mean gradient at the points of ``grid`` (a Grid whose chain, with ``n_noise`` noise values, is not
    too large), from a callable or values; ``grid`` is checked by the caller."""
    if grid.n_levels * n_noise > MAX_CHAIN_SIZE:
        raise ValueError(f"grid and noise must give at most 2**24 pairs (grid points x noise values) for the exact "
                         f"chain, got {grid.n_levels} x {n_noise}")
    points = grid.points
    g = _as_float_array(grad(points) if callable(grad) else grad, "grad")
    if g.ndim == 0:
        g = np.full(points.shape, float(g))
    if g.shape != points.shape or not np.isfinite(g).all():
        raise ValueError(f"grad must give {points.size} finite values, one per grid point")
    return g


def neighbour_lr(grid, grad, noise=(-1.0, 1.0)):
    r"""The largest step size for which SR moves at most one grid step: :math:`\Delta/\max_{k,i}|g_i(w_k)|`.

    For ``lr`` up to this value the SR chain is a birth-death chain with :math:`P = I + \alpha A`.

    Parameters
    ----------
    grid : Grid
        At most 2**24 points times noise values (``MAX_CHAIN_SIZE``).
    grad : callable or array_like
        The mean gradient at the grid points, as in :func:`sr_transition_matrix`.
    noise : array_like
        The noise values :math:`\xi_i`, finite, at least one.

    Returns
    -------
    float
        :math:`\Delta/\max_{k,i}|\bar g(w_k) + \xi_i|`; ``inf`` when every gradient is 0 (SR never
        moves), 0 when the largest one overflows float64.

    Examples
    --------
    >>> round(neighbour_lr(Grid.symmetric(0.1, 10), lambda w: w, noise=[-0.5, 0.5]), 12)
    0.066666666667
    """
    _check_grid(grid)
    values, _ = _noise_distribution(noise, None)
    g = _mean_gradient(grad, grid, values.size)
    with np.errstate(over="ignore"):
        biggest = np.max(np.abs(g[:, None] + values[None, :]))
    return math.inf if biggest == 0 else float(grid.delta / biggest)


def sr_transition_matrix(grid, grad, lr, noise=(-1.0, 1.0), probs=None):
    r"""The exact transition matrix of SR, :math:`w \leftarrow Q_s(w - \alpha(\bar g(w) + \xi))`, on ``grid``.

    From grid point :math:`w_k` the step lands at :math:`x = w_k - \alpha(\bar g(w_k) + \xi_i)` with
    probability :math:`p_i`; :math:`Q_s` splits that mass between the two grid points around the
    clipped ``x`` in proportion to the distances (the hat function),

    .. math:: P_{kj} = \sum_i p_i \max\bigl(0,\,1 - |u_{ki} - j|\bigr),
              \qquad u_{ki} = \frac{\mathrm{clip}(x_{ki}) - L}{\Delta}.

    Parameters
    ----------
    grid : Grid
        At most 2**24 points times noise values (``MAX_CHAIN_SIZE``; memory).
    grad : callable or array_like
        The mean gradient :math:`\bar g` at the grid points (``grad(grid.points)``), or its values:
        finite, one per grid point (or a scalar).
    lr : float
        Step size :math:`\alpha > 0`, finite; steps beyond the range (even ones that overflow
        float64) are clipped to it.
    noise, probs : array_like
        A finite distribution of additive gradient noise: values :math:`\xi_i` (finite, at least
        one) and probabilities :math:`p_i` in [0, 1] summing to 1 (default: :math:`\pm 1` with
        probability 1/2 each).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n``, rows summing to 1; banded, with bandwidth :math:`\lceil\alpha\max|g|/\Delta\rceil`.

    Examples
    --------
    >>> grid = Grid.symmetric(0.5, 2)                  # points -1, -0.5, 0, 0.5, 1
    >>> P = sr_transition_matrix(grid, lambda w: w, lr=0.2, noise=[-1.0, 1.0])
    >>> P.toarray()[2].round(3)                        # from 0: +-0.2 -> up or down w.p. 0.2 each
    array([0. , 0.2, 0.6, 0.2, 0. ])
    """
    _check_grid(grid)
    lr = _positive(lr, "lr")
    values, probs = _noise_distribution(noise, probs)
    g = _mean_gradient(grad, grid, values.size)
    n = grid.n_levels
    with np.errstate(over="ignore"):  # a step past the float64 range is clipped like any step past the grid
        x = grid.points[:, None] - lr * (g[:, None] + values[None, :])
    u = grid._position(x)
    j0 = np.minimum(np.floor(u), n - 2).astype(np.int64)
    frac = u - j0
    rows = np.repeat(np.arange(n), values.size)
    weight = np.broadcast_to(probs, frac.shape)
    data = np.concatenate([((1.0 - frac) * weight).ravel(), (frac * weight).ravel()])
    cols = np.concatenate([j0.ravel(), j0.ravel() + 1])
    P = sparse.coo_matrix((data, (np.concatenate([rows, rows]), cols)), shape=(n, n)).tocsr()
    P.eliminate_zeros()
    return P


def _check_transition(P, name="P"):
    """``P`` as a float64 CSR matrix, requiring a square, row-stochastic real matrix (a scipy sparse matrix or
    a 2-d array_like) with entries in [0, 1] and rows summing to 1 (to 1e-10)."""
    if sparse.issparse(P):
        if P.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be a real matrix (probabilities), got dtype {P.dtype}")
        P = sparse.csr_matrix(P, dtype=np.float64)
    else:
        arr = _as_float_array(P, name)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a square matrix (2-d), got {P!r}")
        P = sparse.csr_matrix(arr)
    n, m = P.shape
    if n != m or n < 1:
        raise ValueError(f"{name} must be a square matrix, got shape {P.shape}")
    if P.nnz and (not np.isfinite(P.data).all() or P.data.min() < 0 or P.data.max() > 1 + 1e-12):
        raise ValueError(f"{name} must have entries (probabilities) in [0, 1]")
    rows = np.asarray(P.sum(axis=1)).ravel()
    if np.max(np.abs(rows - 1.0)) > 1e-10:
        raise ValueError(f"{name} must have rows summing to 1; the worst row sums to "
                         f"{rows[np.argmax(np.abs(rows - 1))]!r}")
    return P


def stationary_distribution(P):
    r"""The stationary distribution :math:`\pi = \pi P`, :math:`\sum_k\pi_k = 1`, by a sparse LU solve.

    Solves :math:`(P^\top - I)\pi = 0` with its last equation replaced by the normalisation (the
    chain must have a single recurrent class), by a sparse LU factorisation in the natural order:
    for a banded ``P`` it costs O(n) (20001 grid points: milliseconds), not a dense eigensolve.

    Parameters
    ----------
    P : scipy.sparse matrix or array_like
        Square, real and row-stochastic: entries in [0, 1], rows summing to 1 (to 1e-10).

    Returns
    -------
    ndarray
        :math:`\pi`, non-negative, summing to 1 (round-off below 1e-12 is set to 0).

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.3, 0.7]])
    >>> stationary_distribution(P).round(12)
    array([0.75, 0.25])
    """
    P = _check_transition(P)
    n = P.shape[0]
    if n == 1:
        return np.ones(1)
    # (P^T - I) pi = 0, its last (redundant) equation replaced by sum(pi) = 1. In the natural order
    # and without pivoting the LU of this banded matrix plus one dense last row stays banded (O(n));
    # it is stable because I - P^T is a column diagonally dominant (M-)matrix. A pivoted sparse
    # solve is the fall-back (e.g. for absorbing states, where a zero pivot appears).
    balance = (P.T - sparse.identity(n, format="csr")).tocsr()[: n - 1]
    A = sparse.vstack([balance, sparse.csr_matrix(np.ones((1, n)))], format="csc")
    b = np.zeros(n)
    b[-1] = 1.0

    def residual(x):
        return np.max(np.abs(P.T @ x - x)) if np.isfinite(x).all() else np.inf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sparse_linalg.MatrixRankWarning)
        try:
            pi = sparse_linalg.splu(A, permc_spec="NATURAL", diag_pivot_thresh=0.0).solve(b)
        except RuntimeError:  # a zero pivot
            pi = np.full(n, np.nan)
        if residual(pi) > 1e-12:
            try:
                pi = sparse_linalg.spsolve(A, b)
            except RuntimeError:  # exactly singular
                pi = np.full(n, np.nan)
    if residual(pi) > 1e-10 or pi.min() < -1e-12:
        raise ValueError("P has no unique stationary distribution (several recurrent classes?)")
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def detailed_balance_error(P, pi):
    r"""The largest violation of detailed balance, :math:`\max_{kj}|\pi_k P_{kj} - \pi_j P_{jk}|`.

    Zero (to round-off) for a reversible chain: every birth-death chain, so SR for
    ``lr <=`` :func:`neighbour_lr`.

    Parameters
    ----------
    P : scipy.sparse matrix or array_like
        An ``n x n`` transition matrix, as in :func:`stationary_distribution`.
    pi : array_like
        A distribution on the ``n`` states: shape ``(n,)``, entries in [0, 1].
    """
    P = _check_transition(P)
    pi = check_probability(pi, "pi")
    if pi.shape != (P.shape[0],):
        raise ValueError(f"pi must have shape ({P.shape[0]},), one entry per state of P, got {pi.shape}")
    flow = sparse.diags(pi) @ P
    diff = abs(flow - flow.T)
    return float(diff.max()) if diff.nnz else 0.0


# --- closed forms -----------------------------------------------------------------------------
def sgd_stationary_variance(lr, curvature, noise_var):
    r"""Stationary variance of SGD on :math:`\tfrac\lambda2(w-w^*)^2` with gradient noise of variance :math:`s^2`.

    .. math:: v = \frac{\alpha s^2}{\lambda(2 - \alpha\lambda)},\qquad 0 < \alpha\lambda < 2 .

    ``lr`` (:math:`\alpha`), ``curvature`` (:math:`\lambda`) and ``noise_var`` (:math:`s^2`) are finite and
    > 0 (scalars or arrays that broadcast), with :math:`\alpha\lambda < 2`; a variance that would
    overflow float64 is a ``ValueError``.

    Examples
    --------
    >>> round(float(sgd_stationary_variance(0.1, 1.0, 1.0)), 12)     # 0.1 / 1.9
    0.052631578947
    """
    lr = _positive(lr, "lr", scalar=False)
    lam = _positive(curvature, "curvature", scalar=False)
    s2 = _positive(noise_var, "noise_var", scalar=False)
    check_broadcast(("lr", "curvature", "noise_var"), lr, lam, s2)
    with np.errstate(over="ignore", under="ignore"):
        prod = lr * lam
        if (prod >= 2).any():
            raise ValueError(f"lr * curvature must be < 2 for a stationary state, got {prod!r}")
        v = lr * s2 / (lam * (2 - prod))
    if not np.isfinite(v).all():
        raise ValueError(f"lr, curvature and noise_var must give a variance lr * noise_var / (curvature (2 - lr "
                         f"curvature)) within float64; it overflowed for lr = {lr!r}, curvature = {curvature!r}, "
                         f"noise_var = {noise_var!r}")
    return v


def sr_floor(delta, mean_abs_grad):
    r"""SR's floor on a quadratic loss: :math:`\mathbb E_\pi[f] - f^* = \frac\Delta4\sum_j\mathbb E_\pi|g_j|`.

    For a quadratic loss and steps that move at most one grid point (the limit of small ``lr``),
    the generator identity :math:`\mathbb E_\pi[A\,\tfrac12\|w-w^*\|^2] = 0` gives this exactly,
    with :math:`\mathbb E_\pi|g_j|` the mean absolute stochastic gradient of coordinate ``j`` under
    the stationary distribution. When the noise dominates the mean gradient,
    :math:`\mathbb E|g_j|\approx\mathbb E|\xi_j|` and the floor is linear in :math:`\Delta`, independent
    of the step size, and grows with the number of coordinates. (Our derivation; see the chapter.)

    Parameters
    ----------
    delta : float or array_like
        Grid step > 0, finite.
    mean_abs_grad : array_like
        :math:`\mathbb E|g_j|` per coordinate (finite, >= 0); summed over the last axis. A floor that
        would overflow float64 is a ``ValueError``.
    """
    delta = _positive(delta, "delta", scalar=False)
    m = _as_float_array(mean_abs_grad, "mean_abs_grad")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError(f"mean_abs_grad must be finite and >= 0, got {mean_abs_grad!r}")
    check_broadcast(("delta", "mean_abs_grad (summed over its last axis)"), delta, np.empty(m.shape[:-1]))
    with np.errstate(over="ignore"):
        floor = delta / 4.0 * (m.sum(axis=-1) if m.ndim else m)
    if not np.isfinite(floor).all():
        raise ValueError(f"delta and mean_abs_grad must give a floor delta / 4 * sum(mean_abs_grad) within float64; "
                         f"it overflowed for delta = {delta!r}")
    return floor


# --- a convex test problem: ridge-regularised logistic regression ------------------------------
@dataclasses.dataclass
class LogisticProblem:
    r"""Ridge logistic regression :math:`F(w) = \frac1n\sum_i \log(1 + e^{-y_i x_i\cdot w}) + \frac\mu2\|w\|^2`.

    Built by :meth:`make`: ``n`` Gaussian inputs in ``d`` dimensions, labels from a random teacher
    with logistic label noise. Every method takes weights of shape ``(..., d)`` (many chains at once),
    finite with :math:`|w_j| \le 10^{50}` (``MAX_LOGISTIC_ABS``: no margin or penalty can overflow).

    Parameters
    ----------
    x : array_like
        Inputs, shape ``(n, d)`` with ``n, d >= 1``, finite, :math:`|x_{ij}| \le 10^{50}`.
    y : array_like
        Labels, shape ``(n,)``, each -1 or +1.
    ridge : float
        :math:`\mu`, in :math:`(0, 10^{50}]`.
    """

    x: np.ndarray
    y: np.ndarray
    ridge: float

    def __post_init__(self):
        x = check_finite(self.x, "x")
        if x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"x must be a 2-d array of shape (n, d) with n, d >= 1, got shape {x.shape}")
        if np.abs(x).max() > MAX_LOGISTIC_ABS:
            raise ValueError(f"x must have entries in [-{MAX_LOGISTIC_ABS:g}, {MAX_LOGISTIC_ABS:g}], "
                             f"got {np.abs(x).max():g}")
        y = check_finite(self.y, "y")
        if y.shape != x.shape[:1]:
            raise ValueError(f"y must have shape ({x.shape[0]},), one label per row of x, got {y.shape}")
        if not np.all(np.abs(y) == 1):
            raise ValueError(f"y must hold labels -1 or +1, got {np.unique(y)[:5]!r}")
        ridge = _positive(self.ridge, "ridge")
        if ridge > MAX_LOGISTIC_ABS:
            raise ValueError(f"ridge must lie in (0, {MAX_LOGISTIC_ABS:g}], got {ridge!r}")
        self.x, self.y, self.ridge = x, y, ridge

    @classmethod
    def make(cls, d, n=512, ridge=0.1, teacher_scale=2.0, seed=0):
        r"""A random problem: ``x ~ N(0, I_d)``, ``P(y = 1) = sigmoid(x . w_t)``, ``|w_t| = teacher_scale``.

        Parameters
        ----------
        d : int
            Dimension, >= 1.
        n : int
            Number of samples, >= 2, with ``n * d <= 2**27`` (``MAX_ENTRIES``: 1 GiB of inputs).
        ridge : float
            The ridge strength :math:`\mu`, in :math:`(0, 10^{50}]` (it makes F strongly convex).
        teacher_scale : float
            Norm of the teacher's weights, in :math:`(0, 10^{100}]` (``MAX_TEACHER_SCALE``; the labels
            are deterministic long before).
        seed : int or numpy.random.Generator
            An integer in [0, 2**63 - 1], or a Generator.

        Examples
        --------
        >>> prob = LogisticProblem.make(3, n=100, seed=0)
        >>> w_star = prob.solve()
        >>> bool(np.max(np.abs(prob.grad(w_star))) < 1e-12)
        True
        """
        d = check_int(d, "d", 1, MAX_ENTRIES // 2)
        n = check_int(n, "n", 2, MAX_ENTRIES)
        if n * d > MAX_ENTRIES:
            raise ValueError(f"n * d must be at most 2**27 (1 GiB of inputs), got n = {n}, d = {d}")
        ridge = _positive(ridge, "ridge")
        if ridge > MAX_LOGISTIC_ABS:
            raise ValueError(f"ridge must lie in (0, {MAX_LOGISTIC_ABS:g}], got {ridge!r}")
        teacher_scale = _positive(teacher_scale, "teacher_scale")
        if teacher_scale > MAX_TEACHER_SCALE:
            raise ValueError(f"teacher_scale must lie in (0, {MAX_TEACHER_SCALE:g}], got {teacher_scale!r}")
        rng = numpy_generator(seed, "seed", allow_none=False)
        x = rng.standard_normal((n, d))
        teacher = rng.standard_normal(d)
        teacher *= teacher_scale / np.linalg.norm(teacher)
        y = np.where(rng.random(n) < special.expit(x @ teacher), 1.0, -1.0)
        return cls._from_checked(x, y, ridge)

    @classmethod
    def _from_checked(cls, x, y, ridge):
        """A problem from data already known to be valid (no second check in ``__post_init__``)."""
        problem = object.__new__(cls)
        problem.x, problem.y, problem.ridge = x, y, ridge
        return problem

    @property
    def d(self):
        """The dimension ``d``."""
        return self.x.shape[1]

    def _weights(self, w, single=False):
        """``w`` as float64, shape ``(..., d)`` (``(d,)`` if ``single``), finite, entries within MAX_LOGISTIC_ABS."""
        w = _as_float_array(w, "w")
        if w.shape[-1:] != (self.d,) or (single and w.ndim != 1):
            shape = f"({self.d},)" if single else f"(..., {self.d})"
            raise ValueError(f"w must have shape {shape}, got {w.shape}")
        if not np.isfinite(w).all() or np.abs(w).max() > MAX_LOGISTIC_ABS:
            raise ValueError(f"w must be finite with entries in [-{MAX_LOGISTIC_ABS:g}, {MAX_LOGISTIC_ABS:g}]")
        return w

    # each public method checks ``w`` (and its other arguments) once, then calls its unchecked twin
    def loss(self, w):
        r""":math:`F(w)`, over the last axis of ``w``; :math:`\log(1 + e^{-m}) = -\log\mathrm{expit}(m)`."""
        return self._loss(self._weights(w))

    def _loss(self, w):
        margins = self.y * (w @ self.x.T)
        return -np.mean(special.log_expit(margins), axis=-1) + 0.5 * self.ridge * np.sum(w ** 2, axis=-1)

    def _residual(self, w, idx=None):
        """:math:`\\partial_m\\log(1 + e^{-m}) = -\\mathrm{expit}(-m)` at the margins, times ``y``; with the inputs."""
        x = self.x if idx is None else self.x[idx]
        y = self.y if idx is None else self.y[idx]
        margins = y * np.einsum("...bd,...d->...b", x, w) if idx is not None else y * (w @ self.x.T)
        return -y * special.expit(-margins), x

    def grad(self, w):
        """The full gradient :math:`\\nabla F(w)`."""
        return self._grad(self._weights(w))

    def _grad(self, w):
        r, x = self._residual(w)
        return r @ x / len(self.y) + self.ridge * w

    def minibatch_grad(self, w, rng, batch):
        """A stochastic gradient from ``batch`` samples drawn with replacement, independently per chain.

        ``rng`` a numpy Generator (or a seed in [0, 2**63 - 1]); ``batch >= 1``, with at most 2**27
        (``MAX_ENTRIES``) sampled inputs in all (chains x ``batch`` x ``d``).
        """
        w = self._weights(w)
        rng = numpy_generator(rng, "rng", allow_none=False)
        batch = check_int(batch, "batch", 1, MAX_ENTRIES)
        if math.prod(w.shape) * batch > MAX_ENTRIES:
            raise ValueError(f"batch must keep chains x batch x d at most 2**27 (1 GiB), got shape {w.shape} "
                             f"and batch = {batch}")
        return self._minibatch_grad(w, rng, batch)

    def _minibatch_grad(self, w, rng, batch):
        idx = rng.integers(0, len(self.y), size=w.shape[:-1] + (batch,))
        r, x = self._residual(w, idx)
        return np.einsum("...b,...bd->...d", r, x) / batch + self.ridge * w

    def hessian(self, w):
        """The Hessian :math:`\\nabla^2 F(w)` (``d x d``) at one weight vector ``w`` of shape ``(d,)``."""
        return self._hessian(self._weights(w, single=True))

    def _hessian(self, w):
        s = special.expit(-(self.x @ w))
        return (self.x.T * (s * (1 - s))) @ self.x / len(self.y) + self.ridge * np.eye(self.d)

    def solve(self, tol=1e-13, max_iter=100):
        r"""The minimiser :math:`w^*`: the root of :math:`\nabla F` (F is strongly convex), found from
        :math:`w = 0` by ``scipy.optimize.root`` (MINPACK's hybrid Powell method, relative
        tolerance ``tol``) with the exact Hessian as Jacobian.

        Returns ``w`` once its Newton step :math:`\nabla^2F(w)^{-1}\nabla F(w)` is below ``tol > 0`` in
        every coordinate (a ``RuntimeError`` if not); at most ``max_iter`` gradient evaluations,
        ``1 <= max_iter <= 10**4``.
        """
        tol = _positive(tol, "tol")
        max_iter = check_int(max_iter, "max_iter", 1, 10**4)
        root = optimize.root(self._grad, np.zeros(self.d), jac=self._hessian, method="hybr",
                             options={"xtol": tol, "maxfev": max_iter})
        w = root.x  # MINPACK may report "no further improvement" at round-off: the Newton step decides
        if np.max(np.abs(np.linalg.solve(self._hessian(w), self._grad(w)))) >= tol:
            raise RuntimeError(f"the root of grad F was not found to tol = {tol!r}: {root.message}")
        return w

    def noise_mean_abs(self, w, batch, n_draws=20000, seed=0):
        r"""Monte Carlo :math:`\mathbb E|\xi_j|`, per coordinate, of the minibatch noise
        :math:`\xi = g_B(w) - \nabla F(w)`.

        ``w`` of shape ``(d,)``; ``batch >= 1`` samples per minibatch, ``n_draws >= 1`` minibatches,
        with ``n_draws * batch * d <= 2**27`` (``MAX_ENTRIES``), seeded by ``seed`` (in [0, 2**63 - 1]).
        """
        w = self._weights(w, single=True)
        batch = check_int(batch, "batch", 1, MAX_ENTRIES)
        n_draws = check_int(n_draws, "n_draws", 1, MAX_ENTRIES)
        if n_draws * batch * self.d > MAX_ENTRIES:
            raise ValueError(f"n_draws * batch * d must be at most 2**27 (1 GiB), got {n_draws} * {batch} * {self.d}")
        rng = numpy_generator(seed, "seed", allow_none=False)
        g = self._minibatch_grad(np.broadcast_to(w, (n_draws, self.d)), rng, batch)
        return np.mean(np.abs(g - self._grad(w)), axis=0)


# --- torch: the rules on a model's parameters --------------------------------------------------
class QuantizedSGD:
    r"""SGD, R, SR or BC on any model's parameters, one rule and grid per parameter group.

    A plain class with ``zero_grad()`` and ``step()`` (not a ``torch.optim.Optimizer``: torch's
    learning-rate schedulers do not apply; set ``param_groups[i]["lr"]`` instead). On construction
    each quantized parameter is put on its grid with :math:`Q_d`; for BC a copy of its initial
    value becomes the full-precision buffer :math:`w_r` and the parameter holds :math:`Q(w_r)`, the
    weights the forward pass uses.

    Parameters
    ----------
    params : iterable of tensors or of dicts
        Either parameters (one group: floating-point tensors with finite values, at least one) or
        dicts with ``"params"`` and optional ``"rule"``, ``"grid"``, ``"lr"``, overriding the
        defaults below. ``grid=None`` means full precision (rule ``"sgd"``), e.g. for biases.
    lr : float
        Step size > 0, finite. Its ``step()`` refuses a gradient with NaN or inf (a ``ValueError``), so
        that weights that overflowed with a huge ``lr`` stop training at the next step.
    rule : {"sgd", "r", "sr", "bc"}
    grid : Grid or None
        Required for ``"r"``, ``"sr"`` and ``"bc"``; ignored by ``"sgd"``.
    seed : int
        Seeds the torch generator(s) of stochastic rounding, in [0, 2**63 - 1].
    bc_rounding : {"deterministic", "stochastic"}
        How BC quantizes its buffer for the forward pass. The default is BinaryConnect's own
        (deterministic: the sign, for binary weights); :func:`run_rule`, for the one-dimensional
        problems, defaults to stochastic rounding, which keeps a quadratic's gradient unbiased.
    clip_buffer : bool
        Clip BC's buffer to the grid's range after each step (True or False).

    Attributes
    ----------
    param_groups : list of dict

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([0.3, -0.1]))
    >>> opt = QuantizedSGD([w], lr=0.5, rule="bc", grid=Grid.binary(1.0))
    >>> w.data, opt.buffer(w)
    (tensor([ 1., -1.]), tensor([ 0.3000, -0.1000]))
    >>> w.grad = torch.tensor([1.0, 1.0]); opt.step()
    >>> w.data, opt.buffer(w)            # the buffer moved by -0.5; only the first sign flipped
    (tensor([-1., -1.]), tensor([-0.2000, -0.6000]))
    """

    def __init__(self, params, lr, rule="sgd", grid=None, seed=0, bc_rounding="deterministic", clip_buffer=True):
        import torch

        self.param_groups = _check_param_groups(params, lr, rule, grid)
        self.bc_rounding = check_choice(bc_rounding, "bc_rounding", _ROUNDINGS)
        self.seed = check_seed(seed)
        self.clip_buffer = check_bool(clip_buffer, "clip_buffer")
        self._buffers = {}
        self._generators = {}
        with torch.no_grad():  # put every quantized parameter on its grid; BC keeps its buffer
            for g in self.param_groups:
                for p in g["params"]:
                    if g["rule"] == "bc":
                        self._buffers[p] = p.detach().clone()
                        p.copy_(self._forward(g["grid"], self._buffers[p]))
                    elif g["rule"] in ("r", "sr"):
                        p.copy_(g["grid"]._round(p.detach()))

    def _generator(self, device):
        """The generator of stochastic rounding on ``device``, seeded by ``seed`` when first used there."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch_generator(self.seed, device)
        return self._generators[key]

    def _forward(self, grid, buffer):
        """BC's forward weights :math:`Q(w_r)`, rounded as ``bc_rounding`` says."""
        gen = self._generator(buffer.device) if self.bc_rounding == "stochastic" else None
        return grid._quantize(buffer, self.bc_rounding, gen)

    def zero_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def buffer(self, p):
        """BC's full-precision buffer :math:`w_r` of parameter ``p`` (the parameter itself for other rules)."""
        return self._buffers.get(p, p.detach())

    def deployed(self, p):
        """The weights to deploy: :math:`Q_d(w_r)` for BC, the parameter itself otherwise."""
        for g in self.param_groups:
            if any(q is p for q in g["params"]):
                return g["grid"]._round(self._buffers[p]) if g["rule"] == "bc" else p.detach()
        raise ValueError("p is not a parameter of this optimizer")

    def use_deployed(self):
        """Load the deployed weights into the parameters (BC with stochastic forward rounding: :math:`Q_d(w_r)`)."""
        import torch

        with torch.no_grad():
            for g in self.param_groups:
                if g["rule"] == "bc":
                    for p in g["params"]:
                        p.copy_(g["grid"]._round(self._buffers[p]))

    def step(self):
        """One update of every parameter that has a gradient (BC: of its buffer, then :math:`p = Q(w_r)`),
        by the same private step as :func:`run_rule`; a gradient with NaN or inf is a ``ValueError``."""
        import torch

        with torch.no_grad():
            for g in self.param_groups:
                rule, lr, grid = g["rule"], g["lr"], g["grid"]
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    if not bool(torch.isfinite(p.grad).all()):
                        raise ValueError("every p.grad must be finite: a gradient contains NaN or inf (a loss "
                                         "that overflowed, or an lr so large that the weights did?)")
                    gen = self._generator(p.device) if rule == "sr" else None
                    if rule == "bc":
                        buf = self._buffers[p]
                        buf.copy_(_update(rule, buf, p.grad, lr, grid, gen, self.clip_buffer))
                        p.copy_(self._forward(grid, buf))
                    else:
                        p.copy_(_update(rule, p, p.grad, lr, grid, gen))


def _check_param_groups(params, lr, rule, grid):
    """The parameter groups of :class:`QuantizedSGD`: ``params`` (tensors, or dicts with ``"params"``),
    each group with its checked ``lr``, ``rule`` and ``grid`` (the defaults where a dict does not set them)."""
    import torch

    what = "params must be an iterable of floating-point torch tensors (parameters) or of dicts with a 'params' key"
    if isinstance(params, (str, bytes, dict, torch.Tensor)) or not isinstance(params, Iterable):
        raise ValueError(f"{what}, got {params!r}")
    params = list(params)
    if not params:
        raise ValueError("params must not be empty")
    groups = []
    for group in params if isinstance(params[0], dict) else [{"params": params}]:
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{what}, got an entry {group!r}")
        g = {"lr": lr, "rule": rule, "grid": grid, **group}
        ps = g["params"]
        ps = [ps] if isinstance(ps, torch.Tensor) else ps
        if isinstance(ps, (str, bytes, dict)) or not isinstance(ps, Iterable):
            raise ValueError(f"{what}, got {ps!r}")
        g["params"] = list(ps)
        for p in g["params"]:
            if not isinstance(p, torch.Tensor) or not torch.is_floating_point(p):
                raise ValueError(f"{what}, got an entry {p!r}")
            if not bool(torch.isfinite(p).all()):
                raise ValueError("params must hold finite values (no NaN or inf)")
        g["lr"] = _positive(g["lr"], "lr")
        g["rule"] = check_choice(g["rule"], "rule", RULES)
        g["grid"] = _check_rule_grid(g["rule"], g["grid"])
        groups.append(g)
    return groups


def _check_model(model, name="model"):
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module, got {model!r}")
    return model


def weight_groups(model, rule, lr, bias_lr=None):
    r"""Parameter groups for :class:`QuantizedSGD`: every weight matrix on the binary grid
    :math:`\pm 1/\sqrt{\text{fan-in}}` with ``rule``, every bias (1-d parameter) in full precision.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters of two or more dimensions are weights, with fan-in ``p.shape[1] >= 1``.
    rule : {"sgd", "r", "sr", "bc"}
        The rule of the weights.
    lr : float
        Step size of the weights, finite and > 0.
    bias_lr : float, optional
        Step size of the biases, finite and > 0 (default: ``lr``).
    """
    model = _check_model(model)
    rule = check_choice(rule, "rule", RULES)
    lr = _positive(lr, "lr")
    bias_lr = lr if bias_lr is None else _positive(bias_lr, "bias_lr")
    weights, biases = [], []
    for p in model.parameters():
        (weights if p.dim() >= 2 else biases).append(p)
    if any(p.shape[1] == 0 for p in weights):
        raise ValueError("model must have weights with fan-in p.shape[1] >= 1")
    groups = [{"params": [p], "rule": rule, "grid": Grid.binary(1.0 / math.sqrt(p.shape[1])), "lr": lr}
              for p in weights]
    if biases:
        groups.append({"params": biases, "rule": "sgd", "grid": None, "lr": bias_lr})
    return groups


def binary_mlp(sizes, seed=0, activation="relu"):
    r"""A ``torch.nn.Sequential`` MLP with layer widths ``sizes`` (e.g. ``(64, 256, 10)``).

    Weights :math:`\mathcal N(0, 1/\text{fan-in})`, biases 0: the variance of the binary weights
    :math:`\pm1/\sqrt{\text{fan-in}}` that :func:`weight_groups` puts them on. ``activation`` is
    ``"relu"`` or ``"tanh"`` between layers.

    Parameters
    ----------
    sizes : sequence of int
        At least two widths, each in [1, 2**24] (``MAX_WIDTH``), with at most 2**28 weights per layer
        (``MAX_LAYER_WEIGHTS``: 1 GiB in float32).
    seed : int
        Seed of the torch generator of the initial weights, in [0, 2**63 - 1].
    activation : {"relu", "tanh"}
    """
    import torch

    if isinstance(sizes, (str, bytes, dict)) or not isinstance(sizes, Iterable):
        raise ValueError(f"sizes must be a sequence of at least two integer widths, got {sizes!r}")
    sizes = [check_int(s, "sizes", 1, MAX_WIDTH) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes must have at least two entries, got {sizes}")
    for a, b in zip(sizes[:-1], sizes[1:]):
        if a * b > MAX_LAYER_WEIGHTS:
            raise ValueError(f"sizes must give at most 2**28 weights per layer (1 GiB), got {a} x {b}")
    seed = check_seed(seed)
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    activation = check_choice(activation, "activation", tuple(acts))
    gen = torch_generator(seed, "cpu")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen) / math.sqrt(a))
            lin.bias.zero_()
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
    return torch.nn.Sequential(*layers)


def fit(model, data, opt, steps, batch_size, *, seed=0, drop_last=True, eval_every=None):
    r"""Train ``model`` on ``data`` (a :class:`qmf_lite.Dataset`) with ``opt`` for ``steps`` updates.

    Minibatches come from a fresh random permutation of the training set each epoch; with
    ``drop_last`` the ragged last batch of each epoch (``n_train % batch_size`` samples) is
    skipped. Cross-entropy, averaged over the batch.

    Parameters
    ----------
    model : torch.nn.Module
        With at least one parameter (its device is used).
    data : qmf_lite.Dataset
    opt : QuantizedSGD or torch.optim.Optimizer
        Anything with ``zero_grad()`` and ``step()``.
    steps : int
        Number of updates, in [1, 10**8] (``MAX_STEPS``).
    batch_size : int
        In [1, number of training samples].
    seed : int
        Seed of the batch order, in [0, 2**63 - 1].
    drop_last : bool
        True or False.
    eval_every : int, optional
        Evaluate every so many steps (>= 1); default: only at the end.

    Returns
    -------
    dict
        ``"step"``, ``"test_acc"``, ``"train_loss"`` (arrays, every ``eval_every`` steps and at the
        end), ``"batch_sizes"`` (the size of every batch used), with the deployed weights of BC
        evaluated (:meth:`QuantizedSGD.deployed`).
    """
    from .data import Dataset

    model = _check_model(model)
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ValueError("model must have at least one parameter")
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a qmf_lite Dataset (e.g. qmf_lite.load_digits()), got {data!r}")
    if not (callable(getattr(opt, "zero_grad", None)) and callable(getattr(opt, "step", None))):
        raise ValueError(f"opt must be an optimizer with zero_grad() and step() (a QuantizedSGD or a "
                         f"torch.optim.Optimizer), got {opt!r}")
    steps = check_int(steps, "steps", 1, MAX_STEPS)
    batch_size = check_int(batch_size, "batch_size", 1)
    eval_every = steps if eval_every is None else check_int(eval_every, "eval_every", 1)
    seed = check_seed(seed)
    drop_last = check_bool(drop_last, "drop_last")
    if batch_size > len(data.y_train):
        raise ValueError(f"batch_size must be <= the training set size {len(data.y_train)}, got {batch_size}")
    return _fit(model, data, opt, steps, batch_size, seed, drop_last, eval_every, first.device)


def _fit(model, data, opt, steps, batch_size, seed, drop_last, eval_every, dev):
    """:func:`fit` on checked arguments: ``steps`` minibatch updates, evaluated every ``eval_every``."""
    import torch

    x_tr, y_tr = data.x_train.to(dev), data.y_train.to(dev)
    x_te, y_te = data.x_test.to(dev), data.y_test.to(dev)
    history = {"step": [], "test_acc": [], "train_loss": []}
    sizes = []
    batches = _epoch_batches(len(y_tr), batch_size, drop_last, torch_generator(seed, "cpu"), dev)
    for step in range(1, steps + 1):
        idx = next(batches)
        sizes.append(len(idx))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            acc, loss = _evaluate(model, opt, (x_tr, y_tr), (x_te, y_te))
            for key, value in zip(history, (step, acc, loss)):
                history[key].append(value)
    out = {k: np.asarray(v) for k, v in history.items()}
    out["batch_sizes"] = np.asarray(sizes)
    return out


def _epoch_batches(n, batch_size, drop_last, gen, dev):
    """Minibatch indices, endlessly: each epoch a fresh permutation of ``range(n)`` from ``gen`` cut into
    batches of ``batch_size``, the ragged last one dropped with ``drop_last``."""
    import torch

    while True:
        perm = torch.randperm(n, generator=gen).to(dev)
        batches = list(torch.split(perm, batch_size))
        if drop_last and len(batches[-1]) < batch_size:
            batches.pop()
        yield from batches


def _evaluate(model, opt, train, test):
    """Test accuracy and training loss of ``model``; for BC with stochastic forward rounding, of its
    deployed weights :math:`Q_d(w_r)` (which differ from the forward weights), restored afterwards."""
    import torch

    saved = None
    if isinstance(opt, QuantizedSGD) and opt.bc_rounding == "stochastic":
        saved = [p.detach().clone() for p in model.parameters()]
        opt.use_deployed()
    with torch.no_grad():
        acc = (model(test[0]).argmax(-1) == test[1]).double().mean().item()
        loss = torch.nn.functional.cross_entropy(model(train[0]), train[1]).item()
        if saved is not None:
            for p, s in zip(model.parameters(), saved):
                p.copy_(s)
    return acc, loss
