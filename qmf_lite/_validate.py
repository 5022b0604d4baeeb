"""Argument checks shared by the package.

Every public function validates its inputs here so that bad input fails loudly with a
``ValueError`` that names the argument and its allowed range, instead of returning NaN.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np


def _as_float_array(value, name):
    """``value`` as a float64 array, refusing what is not a real number: strings (even "3"),
    bools, None, complex numbers, and arrays of those."""
    what = f"{name} must be a real number or array of real numbers, got {value!r}"
    if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        raise ValueError(what)
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise ValueError(what) from exc
    if raw.dtype.kind == "O":
        if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in raw.ravel()):
            raise ValueError(what)
    elif raw.dtype.kind not in "iuf":  # strings, bools, complex, datetimes
        raise ValueError(what)
    try:
        arr = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(what) from exc
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not be NaN")
    return arr


def check_levels(levels, name="levels", maximum=None):
    """Return ``levels`` as an int, requiring an integer >= 2 (and <= ``maximum`` when given)."""
    allowed = "an integer >= 2" if maximum is None else f"an integer in [2, {maximum}]"
    if isinstance(levels, (bool, np.bool_)) or not isinstance(levels, (numbers.Integral, float, np.floating)):
        raise ValueError(f"{name} must be {allowed}, got {levels!r}")
    if isinstance(levels, (float, np.floating)):
        if not np.isfinite(levels) or levels != int(levels):
            raise ValueError(f"{name} must be {allowed}, got {levels!r}")
    as_int = int(levels)
    if as_int < 2 or (maximum is not None and as_int > maximum):
        raise ValueError(f"{name} must be {allowed}, got {levels!r}")
    return as_int


def check_positive(value, name, *, allow_array=True):
    """Return ``value`` as float64 (array), requiring every entry finite and > 0."""
    arr = _as_float_array(value, name)
    if not allow_array and arr.ndim:
        raise ValueError(f"{name} must be a scalar > 0, got an array of shape {arr.shape}")
    if (arr <= 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


def check_nonnegative(value, name, allow_array=True):
    """Return ``value`` as float64 (array), requiring every entry finite and >= 0 (a single
    number when ``allow_array`` is false)."""
    arr = _as_float_array(value, name)
    if not allow_array and arr.ndim:
        raise ValueError(f"{name} must be a single number >= 0, got an array of shape {arr.shape}")
    if (arr < 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return arr


def check_correlation(value, name="c", *, allow_array=True):
    """Return ``value`` as float64 (array), requiring every entry in [-1, 1] (a single number when
    ``allow_array`` is false)."""
    arr = _as_float_array(value, name)
    if not allow_array and arr.ndim:
        raise ValueError(f"{name} must be a single number in [-1, 1], got an array of shape {arr.shape}")
    if (np.abs(arr) > 1).any():
        raise ValueError(f"{name} must lie in [-1, 1], got {value!r}")
    return arr


def check_int(value, name, minimum, maximum=None):
    """Return ``value`` as int, requiring an integer >= minimum (and <= ``maximum`` when given)."""
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def check_seed(seed, name="seed"):
    """Return ``seed`` as int, requiring an integer in [0, 2**63 - 1] (numpy and torch generators both take it)."""
    return check_int(seed, name, 0, 2**63 - 1)


def check_bool(value, name):
    """Return ``value`` as bool, requiring ``True`` or ``False`` (a flag, not a number or an array)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_callable(value, name):
    """Return ``value``, requiring a callable."""
    if not callable(value):
        raise ValueError(f"{name} must be callable, got {value!r}")
    return value


def check_int_range(value, name, minimum, maximum, why=""):
    """Return ``value`` as int, requiring an integer in [minimum, maximum].

    The message reads ``"<name> must be an integer >= <minimum> and <= <maximum><why>"``, so that it
    also matches what :func:`check_int` says about the lower bound; ``why`` (e.g. ``" (a float64
    limit)"``) gives the reason for the upper one.
    """
    allowed = f"an integer >= {minimum} and <= {maximum}{why}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum or value > maximum:
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def check_real_array(value, name, *, max_abs=None):
    """Return ``value`` as a float64 array of finite real numbers (|entries| <= ``max_abs`` when given).

    Strings, bools, None and complex numbers are refused, as by every check here.
    """
    arr = _as_float_array(value, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)" + (f", got {value!r}" if arr.ndim == 0 else ""))
    if max_abs is not None and arr.size and float(np.abs(arr).max()) > max_abs:
        raise ValueError(f"{name} must lie in [-{max_abs:g}, {max_abs:g}], got largest |entry| "
                         f"{float(np.abs(arr).max()):g}")
    return arr


def check_real_in(value, name, low, high):
    """Return ``value`` as a Python float, requiring a real scalar in [low, high] (no bools, strings, arrays)."""
    allowed = f"a real number in [{low:g}, {high:g}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    try:
        out = float(value)
    except OverflowError as exc:  # an int beyond float64
        raise ValueError(f"{name} must be {allowed}, got {value!r}") from exc
    if not low <= out <= high:  # also refuses NaN
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return out


#: the range of weight scales accepted (and the largest bias scale): their squares, and q*, stay
#: far inside float64, neither overflowing nor underflowing to 0
SIGMA_MIN, SIGMA_MAX = 1e-100, 1e100


def check_sigmas(sigma_w, sigma_b, *, allow_array=True):
    """Return (sigma_w, sigma_b) as float64 (arrays): SIGMA_MIN <= sigma_w <= SIGMA_MAX, 0 <= sigma_b <= SIGMA_MAX."""
    sw = check_positive(sigma_w, "sigma_w", allow_array=allow_array)
    sb = check_nonnegative(sigma_b, "sigma_b")
    if not allow_array and sb.ndim:
        raise ValueError(f"sigma_b must be a scalar >= 0, got an array of shape {sb.shape}")
    if (sw > SIGMA_MAX).any() or (sw < SIGMA_MIN).any():
        raise ValueError(f"sigma_w must lie in [{SIGMA_MIN:g}, {SIGMA_MAX:g}] (its square enters the variance), "
                         f"got {sigma_w!r}")
    if (sb > SIGMA_MAX).any():
        raise ValueError(f"sigma_b must be at most {SIGMA_MAX:g} (its square enters the variance), got {sigma_b!r}")
    check_broadcast(("sigma_w", "sigma_b"), sw, sb)
    return sw, sb


def renamed(func, new, value, old, old_value, *, default=None, note="", stacklevel=3):
    """An argument that was renamed: ``(value, name)``, where ``value`` is the new argument's, or the deprecated
    former one's (with a ``DeprecationWarning`` at the caller of ``func``: ``stacklevel`` 3 when ``func`` calls
    this directly), and ``name`` the name the caller used, for the error messages of later checks. Both given
    (the new one not ``default``): a ValueError."""
    if old_value is None:
        return value, new
    if value is not default:
        raise ValueError(f"{func}: pass {new} only (not both {new} and the deprecated {old})")
    warnings.warn(f"{func}({old}=...) is deprecated: the argument is now called {new}{note}", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value, old


def check_broadcast(names, *arrays):
    """The broadcast shape of ``arrays`` (numpy arrays or tensors), a ValueError naming them if they do not."""
    try:
        return np.broadcast_shapes(*(tuple(a.shape) for a in arrays))
    except ValueError:
        shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays))
        raise ValueError(f"{' and '.join(names)} must broadcast together, got shapes {shapes}") from None


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


def check_finite(value, name):
    """Return ``value`` as float64 (array), requiring every entry a finite real number (no NaN, no inf)."""
    arr = _as_float_array(value, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite real numbers (no inf), got {value!r}")
    return arr


def check_choice(value, name, choices):
    """Return ``value``, requiring one of the strings ``choices`` (a string, not an array or a number)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_sequence(value, name, *, allow_empty=False):
    """Return ``value`` as a list, requiring a list, tuple, range or 1-d array (not a string, a number or a
    mapping), non-empty unless ``allow_empty``."""
    ok = isinstance(value, (list, tuple, range)) or (isinstance(value, np.ndarray) and value.ndim == 1)
    if not ok:
        raise ValueError(f"{name} must be a sequence (a list, tuple or 1-d array), got {value!r}")
    out = list(value)
    if not out and not allow_empty:
        raise ValueError(f"{name} must hold at least one entry, got {value!r}")
    return out


def check_int_sequence(value, name, minimum, maximum):
    """Return ``value`` as a list of ints, requiring a non-empty sequence of integers in [minimum, maximum]
    (floats such as 2.0, strings and bools refused)."""
    return [check_int_range(v, name, minimum, maximum) for v in check_sequence(value, name)]


class MissingFileError(FileNotFoundError, ValueError):
    """A path argument that names no file: both a ``FileNotFoundError`` and a ``ValueError``."""


def check_path(value, name, *, kind=None):
    """Return ``value`` as a ``pathlib.Path``, requiring a string or ``os.PathLike``.

    ``kind="file"``: it must name an existing file (a missing one raises :class:`MissingFileError`,
    a ``ValueError`` that is also a ``FileNotFoundError``); ``kind="not_dir"``: it must not name an
    existing folder (a file to be written).
    """
    import os
    import pathlib

    if isinstance(value, (bytes, bool)) or not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (a string or os.PathLike), got {value!r}")
    text = os.fspath(value)
    if isinstance(text, bytes) or "\x00" in text:
        raise ValueError(f"{name} must be a path (a string or os.PathLike) without NUL characters, got {value!r}")
    path = pathlib.Path(value)
    if kind == "file":
        if path.is_dir():
            raise ValueError(f"{name} must name a file, got the folder {str(path)!r}")
        if not path.is_file():
            raise MissingFileError(f"{name} must name an existing file: {str(path)!r} does not exist")
    elif kind == "not_dir" and path.is_dir():
        raise ValueError(f"{name} must name a file to write, got the folder {str(path)!r}")
    return path


def check_tensor(value, name, *, ndim=None, finite=True):
    """Return ``value``, requiring a real (floating-point or integer) torch tensor on any device, with
    ``ndim`` dimensions when given (an int or a tuple of allowed ones) and, if ``finite``, no NaN or inf.

    The finiteness check reads the tensor once (one device synchronisation): call it at entry, not in
    a loop.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(value).__name__} {value!r:.60}")
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must be a real (floating-point or integer) tensor, got dtype {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            what = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have {what} dimensions, got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and value.numel() and not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return value


#: the largest learning rate of the torch training code (float32's largest number)
MAX_LR = float(np.finfo(np.float32).max)


def check_momentum(momentum, name="momentum"):
    """Return ``momentum`` as float, requiring a real number in [0, 1) (SGD's momentum)."""
    momentum = check_real_in(momentum, name, 0.0, 1.0)
    if momentum >= 1:
        raise ValueError(f"{name} must lie in [0, 1), got {momentum}")
    return momentum
