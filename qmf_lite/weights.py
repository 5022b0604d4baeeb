r"""Training with quantized weights: grids, rounding, the BC / SR / R update rules, the SR chain.

The grid is uniform with step :math:`\Delta` on a range :math:`[L, U]` that contains 0:
:math:`\mathcal G = \{L + k\Delta : k = 0, \dots, n-1\}`, :math:`U = L + (n-1)\Delta` (fixed point
with ``W`` bits of which ``F`` fractional; binary :math:`\{-a, a\}`). Two quantizers map a real
weight to it, after clipping to :math:`[L, U]`:

* deterministic rounding :math:`Q_d(w)`, the nearest grid point (halves round up);
* stochastic rounding :math:`Q_s(w)`: with :math:`\lfloor w\rfloor` and :math:`\lceil w\rceil` the
  grid points around ``w``, down with probability :math:`(\lceil w\rceil - w)/\Delta`, up otherwise,
  so that :math:`\mathbb E\,Q_s(w) = w` inside the range.

The update rules of Li et al. (2017), for a stochastic gradient :math:`g`:

.. math::
   \text{R: } w \leftarrow Q_d(w - \alpha g(w)),\qquad
   \text{SR: } w \leftarrow Q_s(w - \alpha g(w)),\qquad
   \text{BC: } w_b = Q(w_r),\ \ w_r \leftarrow w_r - \alpha g(w_b),

plus plain SGD for reference. BC (BinaryConnect, Courbariaux et al. 2015) keeps a full-precision
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
import numbers
import warnings

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from ._validate import _as_float_array, check_int, check_positive, check_probability, check_real

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
    "simulate_weight_correlations",
]

#: the update rules: full-precision SGD, deterministic rounding, stochastic rounding, BinaryConnect
RULES = ("sgd", "r", "sr", "bc")


def _positive(value, name, scalar=True):
    """A finite positive float (``scalar``) or float64 array; bools and strings are rejected."""
    if scalar:
        value = check_real(value, name)
        if value <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        return value
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return check_positive(value, name)


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _numpy_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        raise ValueError(f"rng must be an integer seed or a numpy Generator, got {rng!r}")
    return np.random.default_rng(int(rng))


def _torch_generator(rng, device):
    import torch

    if isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        raise ValueError(f"rng must be an integer seed or a torch.Generator, got {rng!r}")
    return torch.Generator(device=device).manual_seed(int(rng))


def _check_weights(w, name="w"):
    """numpy float64 array or torch tensor (floating), without NaN."""
    if _is_torch(w):
        import torch

        if not torch.is_floating_point(w):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {w.dtype}")
        if torch.isnan(w).any():
            raise ValueError(f"{name} must not contain NaN")
        return w
    return _as_float_array(w, name)


@dataclasses.dataclass(frozen=True)
class Grid:
    r"""A uniform grid :math:`\{L + k\Delta\}_{k=0}^{n-1}` on :math:`[L, U]`, with :math:`L \le 0 \le U`.

    Parameters
    ----------
    delta : float
        The step :math:`\Delta > 0`.
    low, high : float
        The range :math:`[L, U]`, finite, containing 0, with :math:`(U - L)/\Delta` a positive
        integer (to a relative 1e-9).

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
        steps = (high - low) / delta
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1:
            raise ValueError(f"(high - low) / delta must be a positive integer, got {steps!r}")
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    # --- constructors ----------------------------------------------------------------------
    @classmethod
    def fixed_point(cls, bits, frac_bits):
        r"""Two's-complement fixed point: ``bits`` in all, ``frac_bits`` after the binary point.

        :math:`\Delta = 2^{-F}`, :math:`L = -2^{W-1-F}`, :math:`U = 2^{W-1-F} - 2^{-F}`
        (``1 <= bits``, ``0 <= frac_bits``).
        """
        bits = check_int(bits, "bits", 1)
        frac_bits = check_int(frac_bits, "frac_bits", 0)
        delta = 2.0 ** -frac_bits
        half = 2.0 ** (bits - 1 - frac_bits)
        return cls(delta, -half, half - delta)

    @classmethod
    def binary(cls, a):
        """The two-point grid :math:`\\{-a, a\\}` (step ``2a``), as in BinaryConnect; ``a > 0``."""
        a = _positive(a, "a")
        return cls(2.0 * a, -a, a)

    @classmethod
    def symmetric(cls, delta, half_levels):
        r"""The grid :math:`\{k\Delta : |k| \le K\}`, ``K = half_levels >= 1``."""
        half_levels = check_int(half_levels, "half_levels", 1)
        delta = _positive(delta, "delta")
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

    # --- quantizers --------------------------------------------------------------------------
    def clip(self, w):
        """``w`` clipped to ``[low, high]`` (numpy array or torch tensor, same type back)."""
        w = _check_weights(w)
        if _is_torch(w):
            import torch

            return torch.clamp(w, self.low, self.high)
        return np.clip(w, self.low, self.high)

    def _position(self, w):
        """Clipped position in units of the step, ``u = (clip(w) - L)/Delta`` in ``[0, n-1]``."""
        return (self.clip(w) - self.low) / self.delta

    def _from_index(self, k):
        return self.low + k * self.delta

    def round(self, w):
        r"""Deterministic rounding :math:`Q_d(w)`: the nearest grid point to the clipped ``w``.

        Halves round up (so that on :math:`\{-a, a\}` it is BinaryConnect's
        :math:`a\,\mathrm{sign}(w)` with :math:`\mathrm{sign}(0) = +1`). Idempotent on the grid.
        """
        u = self._position(w)
        if _is_torch(u):
            import torch

            k = torch.clamp(torch.floor(u + 0.5), 0, self.n_levels - 1)
        else:
            k = np.clip(np.floor(u + 0.5), 0, self.n_levels - 1)
        return self._from_index(k)

    def stochastic_round(self, w, rng):
        r"""Stochastic rounding :math:`Q_s(w)` of the clipped ``w``, unbiased inside the range.

        .. math:: Q_s(w) = \begin{cases}\lfloor w\rfloor & \text{with probability }
                  (\lceil w\rceil - w)/\Delta\\ \lceil w\rceil & \text{otherwise}\end{cases}

        Parameters
        ----------
        w : array_like or torch.Tensor
        rng : int, numpy.random.Generator or torch.Generator
            An integer seeds a fresh generator (numpy for arrays, torch on ``w``'s device for tensors).

        Examples
        --------
        >>> g = Grid.symmetric(0.5, 4)
        >>> q = g.stochastic_round(np.full(100_000, 0.2), rng=0)
        >>> sorted(set(q.tolist())), round(float(q.mean()), 2)
        ([0.0, 0.5], 0.2)
        """
        u = self._position(w)
        if _is_torch(u):
            import torch

            gen = _torch_generator(rng, u.device)
            k0 = torch.floor(u)
            up = torch.rand(u.shape, generator=gen, device=u.device, dtype=u.dtype) < (u - k0)
            k = torch.clamp(k0 + up.to(u.dtype), 0, self.n_levels - 1)
        else:
            rng = _numpy_rng(rng)
            k0 = np.floor(u)
            k = np.clip(k0 + (rng.random(np.shape(u)) < (u - k0)), 0, self.n_levels - 1)
        return self._from_index(k)

    def quantize(self, w, rounding="deterministic", rng=None):
        """:meth:`round` (``rounding="deterministic"``) or :meth:`stochastic_round` (``"stochastic"``)."""
        if rounding == "deterministic":
            return self.round(w)
        if rounding == "stochastic":
            if rng is None:
                raise ValueError("rng must be given for rounding='stochastic' (a seed or a Generator)")
            return self.stochastic_round(w, rng)
        raise ValueError(f"rounding must be 'deterministic' or 'stochastic', got {rounding!r}")


# --- update rules ----------------------------------------------------------------------------
def _check_lr(lr):
    lr = _positive(lr, "lr", scalar=False)
    return float(lr) if lr.ndim == 0 else lr


def sgd_update(w, g, lr):
    r"""Full-precision SGD, :math:`w - \alpha g` (``lr`` > 0, a scalar or an array broadcasting with ``w``)."""
    return w - _check_lr(lr) * g


def r_update(w, g, lr, grid):
    r"""Rule R, deterministic rounding of the step: :math:`Q_d(w - \alpha g)`.

    From a grid point it moves only if :math:`\alpha|g| \ge \Delta/2`: with smaller steps R stalls.

    Examples
    --------
    >>> g = Grid.symmetric(0.25, 8)
    >>> float(r_update(0.5, 1.0, 0.1, g)), float(r_update(0.5, 2.0, 0.1, g))   # 0.1 < 0.125: stuck
    (0.5, 0.25)
    """
    return grid.round(w - _check_lr(lr) * g)


def sr_update(w, g, lr, grid, rng):
    r"""Rule SR, stochastic rounding of the step: :math:`Q_s(w - \alpha g)`."""
    return grid.stochastic_round(w - _check_lr(lr) * g, rng)


def bc_update(buffer, g, lr, grid, clip=True):
    r"""Rule BC on the buffer: :math:`w_r - \alpha g` (``g`` evaluated at :math:`w_b = Q(w_r)`).

    With ``clip`` (default) the buffer is clipped to the grid's range, so that it cannot drift
    beyond the point where its quantized image could change back (our default; it keeps the buffer
    of a binary weight in :math:`[-a, a]`).
    """
    new = buffer - _check_lr(lr) * g
    return grid.clip(new) if clip else new


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
        or per chain, drawn from the numpy Generator ``rng``).
    w0 : array_like
        Initial weights, e.g. of shape ``(chains,)`` or ``(chains, d)``; R and SR start from
        :math:`Q_d(w_0)`, BC's buffer from ``w0``.
    lr : float or array_like
        Step size(s) > 0, broadcasting with ``w0`` (one per chain, for instance).
    steps : int
        Number of updates (>= 0).
    grid : Grid
        Required for R, SR and BC.
    seed : int
        Seed of the numpy Generator used for the gradient noise and the rounding.
    bc_rounding : {"stochastic", "deterministic"}
        The quantizer of BC's forward weights :math:`w_b`. The default, stochastic, gives on a
        quadratic loss an unbiased gradient of the buffer's loss.
    observe : callable, optional
        ``observe(deployed, buffer)`` is recorded every ``every`` steps (and at step 0).

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
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule != "sgd" and not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid for rule {rule!r}, got {grid!r}")
    if bc_rounding not in ("stochastic", "deterministic"):
        raise ValueError(f"bc_rounding must be 'stochastic' or 'deterministic', got {bc_rounding!r}")
    lr = _check_lr(lr)
    steps = check_int(steps, "steps", 0)
    every = check_int(every, "every", 1)
    rng = _numpy_rng(seed)
    w = _as_float_array(w0, "w0").copy()
    if rule in ("r", "sr"):
        w = grid.round(w)
    records, at = [], []

    def deployed_and_buffer():
        return (grid.round(w), w) if rule == "bc" else (w, w)

    if observe is not None:
        records.append(observe(*deployed_and_buffer()))
        at.append(0)
    for t in range(1, steps + 1):
        if rule == "bc":
            wb = grid.quantize(w, bc_rounding, rng)
            w = bc_update(w, grad(wb, rng), lr, grid, clip_buffer)
        elif rule == "sgd":
            w = w - lr * grad(w, rng)
        elif rule == "r":
            w = grid.round(w - lr * grad(w, rng))
        else:
            w = grid.stochastic_round(w - lr * grad(w, rng), rng)
        if observe is not None and t % every == 0:
            records.append(observe(*deployed_and_buffer()))
            at.append(t)
    deployed, buffer = deployed_and_buffer()
    trace = np.asarray(records) if observe is not None else None
    return RuleRun(deployed, buffer.copy(), trace, np.asarray(at))


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


def _mean_gradient(grad, grid):
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

    Examples
    --------
    >>> round(neighbour_lr(Grid.symmetric(0.1, 10), lambda w: w, noise=[-0.5, 0.5]), 12)
    0.066666666667
    """
    g = _mean_gradient(grad, grid)
    values, _ = _noise_distribution(noise, None)
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
    grad : callable or array_like
        The mean gradient :math:`\bar g` at the grid points (``grad(grid.points)``), or its values.
    lr : float
        Step size :math:`\alpha > 0`.
    noise, probs : array_like
        A finite distribution of additive gradient noise: values :math:`\xi_i` and probabilities
        :math:`p_i` in [0, 1] summing to 1 (default: :math:`\pm 1` with probability 1/2 each).

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
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid, got {grid!r}")
    lr = _positive(lr, "lr")
    values, probs = _noise_distribution(noise, probs)
    g = _mean_gradient(grad, grid)
    n = grid.n_levels
    x = grid.points[:, None] - lr * (g[:, None] + values[None, :])
    u = (np.clip(x, grid.low, grid.high) - grid.low) / grid.delta
    j0 = np.minimum(np.floor(u), n - 2).astype(np.int64)
    frac = u - j0
    rows = np.repeat(np.arange(n), values.size)
    weight = np.broadcast_to(probs, frac.shape)
    data = np.concatenate([((1.0 - frac) * weight).ravel(), (frac * weight).ravel()])
    cols = np.concatenate([j0.ravel(), j0.ravel() + 1])
    P = sparse.coo_matrix((data, (np.concatenate([rows, rows]), cols)), shape=(n, n)).tocsr()
    P.eliminate_zeros()
    return P


def stationary_distribution(P):
    r"""The stationary distribution :math:`\pi = \pi P`, :math:`\sum_k\pi_k = 1`, by a sparse LU solve.

    Solves :math:`(P^\top - I)\pi = 0` with its last equation replaced by the normalisation (the
    chain must have a single recurrent class), by a sparse LU factorisation in the natural order:
    for a banded ``P`` it costs O(n) (20001 grid points: milliseconds), not a dense eigensolve.

    Parameters
    ----------
    P : scipy.sparse matrix or ndarray
        Row-stochastic: non-negative entries, rows summing to 1 (to 1e-10).

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
    P = sparse.csr_matrix(P, dtype=np.float64)
    n, m = P.shape
    if n != m or n < 1:
        raise ValueError(f"P must be a square matrix, got shape {P.shape}")
    if P.nnz and (not np.isfinite(P.data).all() or P.data.min() < 0 or P.data.max() > 1 + 1e-12):
        raise ValueError("P must have entries (probabilities) in [0, 1]")
    rows = np.asarray(P.sum(axis=1)).ravel()
    if np.max(np.abs(rows - 1.0)) > 1e-10:
        raise ValueError(f"P must have rows summing to 1; the worst row sums to {rows[np.argmax(np.abs(rows - 1))]!r}")
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
    """
    P = sparse.csr_matrix(P, dtype=np.float64)
    pi = _as_float_array(pi, "pi")
    if pi.shape != (P.shape[0],):
        raise ValueError(f"pi must have shape ({P.shape[0]},), got {pi.shape}")
    flow = sparse.diags(pi) @ P
    diff = abs(flow - flow.T)
    return float(diff.max()) if diff.nnz else 0.0


# --- closed forms -----------------------------------------------------------------------------
def sgd_stationary_variance(lr, curvature, noise_var):
    r"""Stationary variance of SGD on :math:`\tfrac\lambda2(w-w^*)^2` with gradient noise of variance :math:`s^2`.

    .. math:: v = \frac{\alpha s^2}{\lambda(2 - \alpha\lambda)},\qquad 0 < \alpha\lambda < 2 .

    Examples
    --------
    >>> round(float(sgd_stationary_variance(0.1, 1.0, 1.0)), 12)     # 0.1 / 1.9
    0.052631578947
    """
    lr = _positive(lr, "lr", scalar=False)
    lam = _positive(curvature, "curvature", scalar=False)
    s2 = _positive(noise_var, "noise_var", scalar=False)
    if (lr * lam >= 2).any():
        raise ValueError(f"lr * curvature must be < 2 for a stationary state, got {lr * lam!r}")
    return lr * s2 / (lam * (2 - lr * lam))


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
    delta : float
        Grid step > 0.
    mean_abs_grad : array_like
        :math:`\mathbb E|g_j|` per coordinate (>= 0); summed over the last axis.
    """
    delta = _positive(delta, "delta", scalar=False)
    m = _as_float_array(mean_abs_grad, "mean_abs_grad")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError(f"mean_abs_grad must be finite and >= 0, got {mean_abs_grad!r}")
    return delta / 4.0 * (m.sum(axis=-1) if m.ndim else m)


# --- a convex test problem: ridge-regularised logistic regression ------------------------------
@dataclasses.dataclass
class LogisticProblem:
    r"""Ridge logistic regression :math:`F(w) = \frac1n\sum_i \log(1 + e^{-y_i x_i\cdot w}) + \frac\mu2\|w\|^2`.

    Built by :meth:`make`: ``n`` Gaussian inputs in ``d`` dimensions, labels from a random teacher
    with logistic label noise. Every method takes weights of shape ``(..., d)`` (many chains at once).
    """

    x: np.ndarray
    y: np.ndarray
    ridge: float

    @classmethod
    def make(cls, d, n=512, ridge=0.1, teacher_scale=2.0, seed=0):
        r"""A random problem: ``x ~ N(0, I_d)``, ``P(y = 1) = sigmoid(x . w_t)``, ``|w_t| = teacher_scale``.

        Parameters
        ----------
        d : int
            Dimension, >= 1.
        n : int
            Number of samples, >= 2.
        ridge : float
            The ridge strength :math:`\mu > 0` (it makes F strongly convex).
        teacher_scale : float
            Norm of the teacher's weights, > 0.
        seed : int or numpy.random.Generator

        Examples
        --------
        >>> prob = LogisticProblem.make(3, n=100, seed=0)
        >>> w_star = prob.solve()
        >>> bool(np.max(np.abs(prob.grad(w_star))) < 1e-12)
        True
        """
        d = check_int(d, "d", 1)
        n = check_int(n, "n", 2)
        ridge = _positive(ridge, "ridge")
        teacher_scale = _positive(teacher_scale, "teacher_scale")
        rng = _numpy_rng(seed)
        x = rng.standard_normal((n, d))
        teacher = rng.standard_normal(d)
        teacher *= teacher_scale / np.linalg.norm(teacher)
        p = 0.5 * (1 + np.tanh(0.5 * (x @ teacher)))
        y = np.where(rng.random(n) < p, 1.0, -1.0)
        return cls(x, y, ridge)

    @property
    def d(self):
        """The dimension ``d``."""
        return self.x.shape[1]

    def loss(self, w):
        """:math:`F(w)`, over the last axis of ``w``."""
        margins = self.y * (np.asarray(w) @ self.x.T)
        return np.mean(np.logaddexp(0.0, -margins), axis=-1) + 0.5 * self.ridge * np.sum(np.asarray(w) ** 2, axis=-1)

    def _residual(self, w, idx=None):
        x = self.x if idx is None else self.x[idx]
        y = self.y if idx is None else self.y[idx]
        margins = y * np.einsum("...bd,...d->...b", x, w) if idx is not None else y * (w @ self.x.T)
        # d/dm log(1 + e^-m) = -sigmoid(-m), written with tanh to avoid overflow warnings
        return -y * 0.5 * (1 - np.tanh(0.5 * margins)), x

    def grad(self, w):
        """The full gradient :math:`\\nabla F(w)`."""
        w = np.asarray(w, dtype=np.float64)
        r, x = self._residual(w)
        return r @ x / len(self.y) + self.ridge * w

    def minibatch_grad(self, w, rng, batch):
        """A stochastic gradient from ``batch`` samples drawn with replacement, independently per chain."""
        w = np.asarray(w, dtype=np.float64)
        idx = rng.integers(0, len(self.y), size=w.shape[:-1] + (batch,))
        r, x = self._residual(w, idx)
        return np.einsum("...b,...bd->...d", r, x) / batch + self.ridge * w

    def hessian(self, w):
        """The Hessian :math:`\nabla^2 F(w)` (``d x d``) at one weight vector."""
        w = np.asarray(w, dtype=np.float64)
        s = 0.5 * (1 - np.tanh(0.5 * (self.x @ w)))
        curv = s * (1 - s)
        return (self.x.T * curv) @ self.x / len(self.y) + self.ridge * np.eye(self.d)

    def solve(self, tol=1e-13, max_iter=100):
        """The minimiser :math:`w^*` by Newton's method (F is strongly convex)."""
        w = np.zeros(self.d)
        for _ in range(max_iter):
            step = np.linalg.solve(self.hessian(w), self.grad(w))
            w = w - step
            if np.max(np.abs(step)) < tol:
                return w
        raise RuntimeError("Newton's method did not converge")  # pragma: no cover

    def noise_mean_abs(self, w, batch, n_draws=20000, seed=0):
        r"""Monte Carlo :math:`\mathbb E|\xi_j|`, per coordinate, of the minibatch noise
        :math:`\xi = g_B(w) - \nabla F(w)`.

        ``batch >= 1`` samples per minibatch, ``n_draws >= 1`` minibatches, seeded by ``seed``.
        """
        batch = check_int(batch, "batch", 1)
        n_draws = check_int(n_draws, "n_draws", 1)
        rng = _numpy_rng(seed)
        w = np.asarray(w, dtype=np.float64)
        g = self.minibatch_grad(np.broadcast_to(w, (n_draws, self.d)), rng, batch)
        return np.mean(np.abs(g - self.grad(w)), axis=0)


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
        Either parameters (one group) or dicts with ``"params"`` and optional ``"rule"``,
        ``"grid"``, ``"lr"``, overriding the defaults below. ``grid=None`` means full precision
        (rule ``"sgd"``), e.g. for biases.
    lr : float
        Step size > 0.
    rule : {"sgd", "r", "sr", "bc"}
    grid : Grid or None
    seed : int
        Seeds the torch generator(s) of stochastic rounding.
    bc_rounding : {"deterministic", "stochastic"}
        How BC quantizes its buffer for the forward pass (deterministic: BinaryConnect's sign).
    clip_buffer : bool
        Clip BC's buffer to the grid's range after each step.

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

        params = list(params)
        if not params:
            raise ValueError("params must not be empty")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        if bc_rounding not in ("stochastic", "deterministic"):
            raise ValueError(f"bc_rounding must be 'stochastic' or 'deterministic', got {bc_rounding!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed, self.bc_rounding, self.clip_buffer = int(seed), bc_rounding, bool(clip_buffer)
        self.param_groups = []
        self._buffers = {}
        self._generators = {}
        for group in groups:
            g = {"lr": lr, "rule": rule, "grid": grid, **group}
            g["params"] = list(g["params"])
            g["lr"] = _positive(g["lr"], "lr")
            if g["rule"] not in RULES:
                raise ValueError(f"rule must be one of {RULES}, got {g['rule']!r}")
            if g["rule"] != "sgd" and not isinstance(g["grid"], Grid):
                raise ValueError(f"grid must be a Grid for rule {g['rule']!r}, got {g['grid']!r}")
            with torch.no_grad():
                for p in g["params"]:
                    if g["rule"] == "bc":
                        self._buffers[p] = p.detach().clone()
                        p.copy_(self._forward(g["grid"], self._buffers[p]))
                    elif g["rule"] in ("r", "sr"):
                        p.copy_(g["grid"].round(p.detach()))
            self.param_groups.append(g)

    def _generator(self, device):
        import torch

        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _forward(self, grid, buffer):
        if self.bc_rounding == "deterministic":
            return grid.round(buffer)
        return grid.stochastic_round(buffer, self._generator(buffer.device))

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
                return g["grid"].round(self._buffers[p]) if g["rule"] == "bc" else p.detach()
        raise ValueError("p is not a parameter of this optimizer")

    def use_deployed(self):
        """Load the deployed weights into the parameters (BC with stochastic forward rounding: :math:`Q_d(w_r)`)."""
        import torch

        with torch.no_grad():
            for g in self.param_groups:
                if g["rule"] == "bc":
                    for p in g["params"]:
                        p.copy_(g["grid"].round(self._buffers[p]))

    def step(self):
        import torch

        with torch.no_grad():
            for g in self.param_groups:
                rule, lr, grid = g["rule"], g["lr"], g["grid"]
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    if torch.isnan(p.grad).any():
                        raise ValueError("a gradient contains NaN")
                    if rule == "sgd":
                        p.sub_(lr * p.grad)
                    elif rule == "r":
                        p.copy_(grid.round(p - lr * p.grad))
                    elif rule == "sr":
                        p.copy_(grid.stochastic_round(p - lr * p.grad, self._generator(p.device)))
                    else:
                        buf = self._buffers[p]
                        buf.sub_(lr * p.grad)
                        if self.clip_buffer:
                            buf.clamp_(grid.low, grid.high)
                        p.copy_(self._forward(grid, buf))


def weight_groups(model, rule, lr, bias_lr=None):
    r"""Parameter groups for :class:`QuantizedSGD`: every weight matrix on the binary grid
    :math:`\pm 1/\sqrt{\text{fan-in}}` with ``rule``, every bias (1-d parameter) in full precision.
    """
    weights, biases = [], []
    for p in model.parameters():
        (weights if p.dim() >= 2 else biases).append(p)
    groups = [{"params": [p], "rule": rule, "grid": Grid.binary(1.0 / math.sqrt(p.shape[1])), "lr": lr}
              for p in weights]
    if biases:
        groups.append({"params": biases, "rule": "sgd", "grid": None, "lr": lr if bias_lr is None else bias_lr})
    return groups


def binary_mlp(sizes, seed=0, activation="relu"):
    r"""A ``torch.nn.Sequential`` MLP with layer widths ``sizes`` (e.g. ``(64, 256, 10)``).

    Weights :math:`\mathcal N(0, 1/\text{fan-in})`, biases 0: the variance of the binary weights
    :math:`\pm1/\sqrt{\text{fan-in}}` that :func:`weight_groups` puts them on. ``activation`` is
    ``"relu"`` or ``"tanh"`` between layers.
    """
    import torch

    sizes = [check_int(s, "sizes", 1) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes must have at least two entries, got {sizes}")
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    gen = torch.Generator().manual_seed(int(seed))
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
    r"""Train ``model`` on ``data`` (a :class:`qmf_lite.data.Dataset`) with ``opt`` for ``steps`` updates.

    Minibatches come from a fresh random permutation of the training set each epoch; with
    ``drop_last`` the ragged last batch of each epoch (``n_train % batch_size`` samples) is
    skipped. Cross-entropy, averaged over the batch.

    Returns
    -------
    dict
        ``"step"``, ``"test_acc"``, ``"train_loss"`` (arrays, every ``eval_every`` steps and at the
        end), ``"batch_sizes"`` (the size of every batch used), with the deployed weights of BC
        evaluated (:meth:`QuantizedSGD.deployed`).
    """
    import torch

    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    eval_every = steps if eval_every is None else check_int(eval_every, "eval_every", 1)
    n = len(data.y_train)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the training set size {n}, got {batch_size}")
    gen = torch.Generator().manual_seed(int(seed))
    dev = next(model.parameters()).device
    x_tr, y_tr = data.x_train.to(dev), data.y_train.to(dev)
    x_te, y_te = data.x_test.to(dev), data.y_test.to(dev)
    history = {"step": [], "test_acc": [], "train_loss": []}
    sizes = []

    def evaluate(step):
        # BC: evaluate the deployed Q_d(w_r) (differs from the forward weights with stochastic rounding)
        saved = None
        if isinstance(opt, QuantizedSGD) and opt.bc_rounding == "stochastic":
            saved = [p.detach().clone() for p in model.parameters()]
            opt.use_deployed()
        with torch.no_grad():
            acc = (model(x_te).argmax(-1) == y_te).double().mean().item()
            loss = torch.nn.functional.cross_entropy(model(x_tr), y_tr).item()
        if saved is not None:
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
        history["step"].append(step)
        history["test_acc"].append(acc)
        history["train_loss"].append(loss)

    step, batches = 0, []
    while step < steps:
        if not batches:
            perm = torch.randperm(n, generator=gen).to(dev)
            batches = list(torch.split(perm, batch_size))
            if drop_last and len(batches[-1]) < batch_size:
                batches.pop()
        idx = batches.pop(0)
        sizes.append(len(idx))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
        opt.step()
        step += 1
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    out = {k: np.asarray(v) for k, v in history.items()}
    out["batch_sizes"] = np.asarray(sizes)
    return out


# --- torch: signal propagation with quantized weights -----------------------------------------
def simulate_weight_correlations(activation, sigma_w, sigma_b, *, depth, width, c0, q0, weights="binary",
                                 n_nets=16, seed=0, device=None, dtype=None):
    r"""Two inputs of correlation ``c0`` through random networks whose weights are Gaussian or binary.

    Like :func:`qmf_lite.simulate_correlations`, with the weight distribution as a choice:
    ``"gaussian"``, :math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/n)`, or ``"binary"``,
    :math:`W_{ij} = \pm\sigma_w/\sqrt n` with probability 1/2 each: the deployed weights
    :math:`Q_d(w_r)` of a BC network whose Gaussian buffer is binarised at the same variance.
    The mean-field maps see only the variance :math:`\sigma_w^2`, so both follow the same curves.

    Returns
    -------
    qmf_lite.simulate.SimulationResult
    """
    import torch

    from .activations import get_activation
    from .simulate import SimulationResult, default_device

    if weights not in ("gaussian", "binary"):
        raise ValueError(f"weights must be 'gaussian' or 'binary', got {weights!r}")
    act = get_activation(activation)
    sigma_w = _positive(sigma_w, "sigma_w")
    sigma_b = check_real(sigma_b, "sigma_b")
    if sigma_b < 0:
        raise ValueError(f"sigma_b must be >= 0, got {sigma_b}")
    depth = check_int(depth, "depth", 0)
    width = check_int(width, "width", 1)
    n_nets = check_int(n_nets, "n_nets", 2)
    c0 = check_real(c0, "c0")
    if abs(c0) > 1:
        raise ValueError(f"c0 must lie in [-1, 1], got {c0}")
    q0 = _positive(q0, "q0")
    dev = default_device(device)
    dtype = torch.float32 if dtype is None else dtype
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    z = torch.randn(n_nets, width, 2, generator=gen, device=dev, dtype=dtype)
    h = torch.stack([z[..., 0], c0 * z[..., 0] + math.sqrt(max(0.0, 1 - c0 * c0)) * z[..., 1]], dim=-1)
    h = h * math.sqrt(q0)
    qs, cs = [], []

    def record(h):
        sq = (h * h).mean(dim=1)
        qs.append(sq.mean(dim=1))
        cs.append((h[..., 0] * h[..., 1]).mean(dim=1) / torch.sqrt(sq[:, 0] * sq[:, 1]))

    with torch.no_grad():
        record(h)
        for _ in range(depth):
            w = torch.randn(n_nets, width, width, generator=gen, device=dev, dtype=dtype)
            if weights == "binary":
                w = torch.where(w >= 0, 1.0, -1.0).to(dtype)
            h = torch.bmm(w, act(h)) * (sigma_w / math.sqrt(width))
            if sigma_b > 0:
                h = h + sigma_b * torch.randn(n_nets, width, 1, generator=gen, device=dev, dtype=dtype)
            record(h)
    q_nets = torch.stack(qs, dim=1).double().cpu().numpy()
    c_nets = torch.stack(cs, dim=1).double().cpu().numpy()
    sem = lambda x: x.std(axis=0, ddof=1) / math.sqrt(n_nets)  # noqa: E731
    return SimulationResult(q_nets.mean(0), c_nets.mean(0), sem(q_nets), sem(c_nets), q_nets, c_nets)
