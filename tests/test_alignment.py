"""Input alignment of a kernel and its noise floor under relabelling of the training points."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qmf_lite.alignment import alignment_floor, input_alignment


def _direct(kernel, similarity):
    """The definition, one row at a time with numpy's corrcoef."""
    return float(np.mean([np.corrcoef(k, s)[0, 1] for k, s in zip(kernel, similarity)]))


def test_alignment_is_the_mean_row_correlation():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((20, 40))
    k = 0.5 * s + rng.standard_normal((20, 40))
    assert input_alignment(k, s) == pytest.approx(_direct(k, s), rel=1e-12)
    assert input_alignment(2 * k + 7, s) == pytest.approx(input_alignment(k, s), rel=1e-12)   # per-row affine
    assert input_alignment(-k, s) == pytest.approx(-input_alignment(k, s), rel=1e-12)


def test_floor_of_independent_entries_is_one_over_sqrt_n_test_n_train():
    """The standard deviation of A for kernels of i.i.d. entries, measured directly over 400 draws,
    against 1/sqrt(n_test n_train) and against alignment_floor (which shuffles one kernel)."""
    n_test, n_train = 150, 300
    rng = np.random.default_rng(0)
    s = rng.standard_normal((n_test, n_train))
    draws = np.array([input_alignment(rng.standard_normal((n_test, n_train)), s) for _ in range(400)])
    expected = 1 / math.sqrt(n_test * n_train)
    rel_se = 1 / math.sqrt(2 * (len(draws) - 1))            # relative standard error of a standard deviation
    assert abs(draws.mean()) < 4 * expected / math.sqrt(len(draws))
    assert draws.std(ddof=1) == pytest.approx(expected, rel=4 * rel_se)
    floor = alignment_floor(rng.standard_normal((n_test, n_train)), s, n_shuffles=400, seed=1)
    assert floor == pytest.approx(expected, rel=4 * rel_se)


def test_rows_that_share_structure_raise_the_floor():
    """A kernel whose rows are all the same random vector: the rows' correlations no longer average
    out; the floor is about |mean standardised similarity row| / sqrt(n_train), far above 1/sqrt(n n)."""
    n_test, n_train = 150, 300
    rng = np.random.default_rng(2)
    common = rng.standard_normal(n_train)
    s = rng.standard_normal(n_train) + 0.3 * rng.standard_normal((n_test, n_train))   # similar rows
    k = np.tile(common, (n_test, 1))
    floor = alignment_floor(k, s, n_shuffles=400, seed=3)
    ss = (s - s.mean(1, keepdims=True)) / np.linalg.norm(s - s.mean(1, keepdims=True), axis=1, keepdims=True)
    # A = <pi(v), mean row>, pi(v) a random unit vector (of mean 0): sd |mean row| / sqrt(n_train - 1)
    expected = np.linalg.norm(ss.mean(0)) / math.sqrt(n_train - 1)
    assert floor == pytest.approx(expected, rel=4 / math.sqrt(2 * 399))
    assert floor > 10 / math.sqrt(n_test * n_train)


@pytest.mark.parametrize("call,name", [
    (lambda: input_alignment(np.ones((3, 4)), np.eye(3, 4)), "row"),
    (lambda: input_alignment(np.eye(3, 4), np.eye(4, 3)), "similarity"),
    (lambda: input_alignment(np.ones(4), np.ones(4)), "kernel"),
    (lambda: input_alignment(np.eye(3, 4) * np.nan, np.eye(3, 4)), "kernel must not be NaN"),
    (lambda: input_alignment(np.eye(3, 4), np.full((3, 4), np.inf)), "similarity must be finite"),
    (lambda: input_alignment("3", np.eye(3, 4)), "kernel must be a real number"),
    (lambda: input_alignment(np.eye(3, 4), np.eye(3, 4) + 1j), "similarity must be a real number"),
    (lambda: alignment_floor(np.eye(3, 4), np.eye(3, 4), n_shuffles=1), "n_shuffles"),
    (lambda: alignment_floor(np.eye(3, 4), np.eye(3, 4), n_shuffles=10**30), r"n_shuffles must be an integer in"),
    (lambda: alignment_floor(np.eye(3, 4), np.eye(3, 4), seed=float("nan")), "seed"),
    (lambda: alignment_floor(np.eye(3, 4), np.eye(3, 4), seed=-1), "seed"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_huge_and_tiny_entries_do_not_overflow():
    """Each row is scaled by its largest magnitude first: rows near 1e308 or 1e-300 give the same alignment."""
    import warnings

    rng = np.random.default_rng(3)
    s = rng.standard_normal((4, 9))
    k = 2 * s + rng.standard_normal((4, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = input_alignment(k, s)
        assert input_alignment(k * 1e307, s * 1e-300) == pytest.approx(base, rel=1e-12)
        gen = np.random.default_rng(1)
        assert alignment_floor(k * 1e307, s, seed=np.random.default_rng(1)) == pytest.approx(
            alignment_floor(k, s, seed=gen), rel=1e-12)
