r"""How much a kernel between test and training points still reflects the inputs: its alignment, and the noise floor.

For a kernel block :math:`K` (test points x training points) and a similarity :math:`S` of the same
shape (e.g. the cosine of the inputs), the **input alignment** is the Pearson correlation between
each test point's row of ``K`` and its row of ``S``, averaged over test points:

.. math:: A(K, S) = \frac{1}{n_{\rm test}}\sum_i
          \frac{\sum_j (K_{ij} - \bar K_i)(S_{ij} - \bar S_i)}
               {\sqrt{\sum_j (K_{ij} - \bar K_i)^2\,\sum_j (S_{ij} - \bar S_i)^2}} .

A kernel that no longer depends on where the test point is has :math:`A \approx 0`, up to noise.
The size of that noise is the **floor**: the standard deviation of :math:`A` when the training
points are relabelled at random (the columns of ``K`` permuted, the same permutation for every
row), which keeps everything about ``K`` except its relation to the inputs. For a kernel of
independent entries it is about :math:`1/\sqrt{n_{\rm test}\,n_{\rm train}}` (each row's correlation
has variance :math:`1/n_{\rm train}`, and the rows are averaged); rows that share structure make it
larger, up to about :math:`1/\sqrt{n_{\rm train}}`.

Used by the chapter on the NTK across depth (its alignment falls to this floor beyond a few depth scales).
"""
from __future__ import annotations

import numpy as np

from ._validate import _as_float_array, check_int, check_seed

__all__ = ["input_alignment", "alignment_floor"]


#: the largest number of relabellings alignment_floor draws
MAX_SHUFFLES = 10_000


def _check_pair(kernel, similarity):
    k = _as_float_array(kernel, "kernel")
    s = _as_float_array(similarity, "similarity")
    if k.ndim != 2 or k.shape[0] < 1 or k.shape[1] < 2:
        raise ValueError(f"kernel must be a 2-d array (test x train) with at least 2 columns, got shape {k.shape}")
    if s.shape != k.shape:
        raise ValueError(f"similarity must have the kernel's shape {k.shape}, got {s.shape}")
    for a, name in ((k, "kernel"), (s, "similarity")):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite")
    return _row_standardised(k, "kernel"), _row_standardised(s, "similarity")


def _row_standardised(a, name):
    """Rows centred and scaled to unit norm (each row divided by its largest magnitude first: no overflow)."""
    peak = np.max(np.abs(a), axis=-1, keepdims=True)
    a = a / np.where(peak > 0, peak, 1.0)
    a = a - a.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.sum(a * a, axis=-1, keepdims=True))
    if np.any(norm == 0):
        raise ValueError(f"every row of {name} must vary over the training points (a constant row has no "
                         "correlation)")
    return a / norm


def input_alignment(kernel, similarity):
    r"""Mean over test points of the correlation between a kernel row and the similarity row, :math:`A(K, S)`.

    Parameters
    ----------
    kernel, similarity : array_like, shape (n_test, n_train)
        Finite real numbers, at least two columns; no row may be constant.

    Returns
    -------
    float
        In [-1, 1]; 1 when every row of ``kernel`` is an increasing affine function of the same row of
        ``similarity``.

    Examples
    --------
    >>> s = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2]])
    >>> round(input_alignment(3 * s + 1, s), 12)
    1.0
    """
    ks, ss = _check_pair(kernel, similarity)
    return float(np.mean(np.sum(ks * ss, axis=1)))


def alignment_floor(kernel, similarity, n_shuffles=50, seed=0):
    r"""The noise floor of :func:`input_alignment`: its standard deviation over random relabellings of the training points.

    Each relabelling permutes the columns of ``kernel`` (one permutation for all rows), keeping the
    kernel's own structure while destroying its relation to ``similarity``.

    Parameters
    ----------
    kernel, similarity : array_like, shape (n_test, n_train)
        As in :func:`input_alignment`.
    n_shuffles : int
        Number of permutations, in ``[2, 10000]``; the floor's relative standard error is about
        :math:`1/\sqrt{2\,n_{\rm shuffles}}`.
    seed : int or numpy.random.Generator
        An integer in ``[0, 2**63 - 1]`` or a generator (which is advanced).

    Returns
    -------
    float

    Examples
    --------
    Independent random entries: about :math:`1/\sqrt{n_{\rm test} n_{\rm train}} = 0.0047` here.

    >>> rng = np.random.default_rng(0)
    >>> floor = alignment_floor(rng.standard_normal((150, 300)), rng.standard_normal((150, 300)), seed=1)
    >>> bool(0.0035 < floor < 0.006)
    True
    """
    ks, ss = _check_pair(kernel, similarity)
    n_shuffles = check_int(n_shuffles, "n_shuffles", 2, MAX_SHUFFLES)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
    values = [np.mean(np.sum(ks[:, rng.permutation(ks.shape[1])] * ss, axis=1)) for _ in range(n_shuffles)]
    return float(np.std(values, ddof=1))
