"""The shared argument checks of qmf_lite._validate: what counts as a number, ranges, flags, seeds."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from qmf_lite import _validate as v

NOT_NUMBERS = ["3", "", b"3", True, np.True_, None, 1 + 1j, np.array(["3"]), np.array([True, False]),
               np.array([1.0, "3"], dtype=object), [1.0, None], [[1.0], [2.0, 3.0]]]


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
@pytest.mark.parametrize("check", [v.check_positive, v.check_nonnegative, v.check_correlation])
def test_strings_bools_none_and_complex_are_not_numbers(check, value):
    """Before, np.asarray("3", float) silently made 3.0 of a string, and True counted as 1."""
    with pytest.raises(ValueError, match=r"\bx must be a real number"):
        check(value, "x")


def test_real_numbers_in_any_form_are_accepted():
    assert v.check_positive(Fraction(1, 4), "x") == 0.25
    assert v.check_positive(np.array([Fraction(1, 2), 2], dtype=object), "x").tolist() == [0.5, 2.0]
    assert v.check_nonnegative(np.int8(3), "x") == 3.0
    assert v.check_correlation([-1, 0.5], "c").dtype == np.float64


@pytest.mark.parametrize("value", [np.nan, [1.0, np.nan]])
def test_nan_is_refused(value):
    with pytest.raises(ValueError, match=r"\bx must not be NaN"):
        v.check_positive(value, "x")


def test_levels_and_int_ranges():
    assert v.check_levels(4.0) == 4
    assert v.check_levels(2**22, maximum=2**22) == 2**22
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 64\], got 65"):
        v.check_levels(65, maximum=64)
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 64\], got 1e\+308"):
        v.check_levels(1e308, maximum=64)
    with pytest.raises(ValueError, match=r"levels must be an integer >= 2, got True"):
        v.check_levels(True)
    assert v.check_int(np.int64(5), "n", 1, 5) == 5
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 5\], got 6"):
        v.check_int(6, "n", 1, 5)
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 2\.0"):
        v.check_int(2.0, "n", 1)


@pytest.mark.parametrize("seed", [np.nan, -1, 2.5, "3", True, None, 2**63, np.array([1])], ids=repr)
def test_seeds(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 9223372036854775807\]"):
        v.check_seed(seed)
    assert v.check_seed(np.uint32(7)) == 7


def test_flags_and_callables():
    assert v.check_bool(np.True_, "flag") is True
    for bad in (1, 0.0, "True", None, np.array([True, False])):
        with pytest.raises(ValueError, match="flag must be True or False"):
            v.check_bool(bad, "flag")
    assert v.check_callable(len, "f") is len
    with pytest.raises(ValueError, match="f must be callable"):
        v.check_callable(3.0, "f")


def test_sigma_ranges():
    sw, sb = v.check_sigmas([1e-100, 1e100], 0.0)
    assert sw.tolist() == [1e-100, 1e100] and sb == 0.0
    for bad in (1e-101, 1e101, 1e308):
        with pytest.raises(ValueError, match=r"sigma_w must lie in \[1e-100, 1e\+100\]"):
            v.check_sigmas(bad, 0.0)
    with pytest.raises(ValueError, match=r"sigma_b must be at most 1e\+100"):
        v.check_sigmas(1.0, 1e308)
    with pytest.raises(ValueError, match=r"sigma_b must be a scalar"):
        v.check_sigmas(1.0, [0.0, 0.1], allow_array=False)


@pytest.mark.parametrize("value", ["cifar", np.array(["digits"]), 1, None, ""])
def test_one_choice_check(value):
    """check_one_of and check_choice did the same job with two messages; one check is left, and its
    message lists the choices."""
    assert v.check_choice("mnist", "dataset", ("digits", "mnist")) == "mnist"
    with pytest.raises(ValueError, match=r"^dataset must be one of \('digits', 'mnist'\), got "):
        v.check_choice(value, "dataset", ("digits", "mnist"))
    assert not hasattr(v, "check_one_of")
