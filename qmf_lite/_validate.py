"""Argument checks shared by the package.

Every public function validates its inputs here so that bad input fails loudly with a
``ValueError`` that names the argument and its allowed range, instead of returning NaN.
"""
from __future__ import annotations

import numbers

import numpy as np


def _as_float_array(value, name):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number or array of real numbers, got {value!r}") from exc
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not be NaN")
    return arr


def check_levels(levels, name="levels"):
    """Return ``levels`` as an int, requiring an integer >= 2."""
    if isinstance(levels, bool) or not isinstance(levels, (numbers.Integral, float, np.floating)):
        raise ValueError(f"{name} must be an integer >= 2, got {levels!r}")
    if isinstance(levels, (float, np.floating)):
        if not np.isfinite(levels) or levels != int(levels):
            raise ValueError(f"{name} must be an integer >= 2, got {levels!r}")
    levels = int(levels)
    if levels < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {levels}")
    return levels


def check_positive(value, name, *, allow_array=True):
    """Return ``value`` as float64 (array), requiring every entry finite and > 0."""
    arr = _as_float_array(value, name)
    if not allow_array and arr.ndim:
        raise ValueError(f"{name} must be a scalar > 0, got an array of shape {arr.shape}")
    if (arr <= 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


def check_nonnegative(value, name):
    """Return ``value`` as float64 (array), requiring every entry finite and >= 0."""
    arr = _as_float_array(value, name)
    if (arr < 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return arr


def check_correlation(value, name="c"):
    """Return ``value`` as float64 (array), requiring every entry in [-1, 1]."""
    arr = _as_float_array(value, name)
    if (np.abs(arr) > 1).any():
        raise ValueError(f"{name} must lie in [-1, 1], got {value!r}")
    return arr


def check_int(value, name, minimum):
    """Return ``value`` as int, requiring an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real(value, name):
    """Return ``value`` as a finite Python float, rejecting bools, strings, NaN and inf."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return value


def check_probability(value, name):
    """Return ``value`` as float64 (array), requiring every entry in [0, 1]."""
    arr = _as_float_array(value, name)
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return arr
