"""Private helpers that several modules share, each defined once.

* :func:`is_torch`: whether a value is a torch object (without importing torch);
* :func:`check_seed_or_generator`: the one rule for a ``seed``/``rng`` argument: ``None`` (fresh
  entropy, where allowed), an integer in [0, 2**63 - 1], or a numpy or torch ``Generator``;
* :func:`numpy_generator` and :func:`torch_generator`: the generator such an argument stands for.

Nothing here is public: the public functions check their arguments with these (or with
:mod:`qmf_lite._validate`) once, at the door.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np

#: the largest integer seed (numpy and torch generators both take it)
MAX_SEED = 2**63 - 1


def is_torch(x) -> bool:
    """True for a torch tensor, generator or device: anything defined in the ``torch`` package."""
    return type(x).__module__.split(".")[0] == "torch"


def _is_integer_seed(seed) -> bool:
    return (not isinstance(seed, (bool, np.bool_)) and isinstance(seed, numbers.Integral)
            and 0 <= seed <= MAX_SEED)


def check_seed_or_generator(seed, name="seed", *, allow_none=True):
    """Return ``seed`` (an ``int`` for an integer seed), requiring ``None`` (when ``allow_none``), an
    integer in [0, 2**63 - 1], or a numpy or torch ``Generator`` (which kind fits is checked on use)."""
    if (seed is None and allow_none) or isinstance(seed, np.random.Generator) or (
            type(seed).__name__ == "Generator" and is_torch(seed)):
        return seed
    if not _is_integer_seed(seed):
        allowed = "None, " if allow_none else ""
        raise ValueError(f"{name} must be {allowed}an integer in [0, 2**63 - 1] or a numpy or torch Generator, "
                         f"got {seed!r}")
    return int(seed)


def numpy_generator(seed, name="seed", *, allow_none=True):
    """The numpy ``Generator`` that ``seed`` stands for: itself, or a new one seeded by it."""
    if isinstance(seed, np.random.Generator):
        return seed
    if not ((seed is None and allow_none) or _is_integer_seed(seed)):
        allowed = "None, " if allow_none else ""
        raise ValueError(f"{name} must be {allowed}an integer in [0, 2**63 - 1] or a numpy Generator, got {seed!r}")
    return np.random.default_rng(None if seed is None else int(seed))


def torch_generator(seed, device, name="seed", *, allow_none=True):
    """The torch ``Generator`` on ``device`` that ``seed`` stands for: itself, or a new one seeded by it
    (``None``: seeded from fresh entropy)."""
    import torch

    if isinstance(seed, torch.Generator):
        return seed
    if not ((seed is None and allow_none) or _is_integer_seed(seed)):
        allowed = "None, " if allow_none else ""
        raise ValueError(f"{name} must be {allowed}an integer in [0, 2**63 - 1] or a torch Generator, got {seed!r}")
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def all_finite(x) -> bool:
    """True when every entry of the numpy array or torch tensor ``x`` is finite (no NaN, no inf)."""
    if is_torch(x):
        import torch

        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def round_half_up(x):
    """The nearest integer to ``x``, ties rounded up (towards +inf): ``floor(x + 1/2)``.

    The one rounding convention of the package (``Grid.round``, the post-training quantizers, the
    sigma-delta and low-precision codes). A numpy array (a float array keeps its dtype, anything else
    becomes float64) or a torch tensor (its dtype) in, the same kind out, rounded in that dtype;
    ``round_half_up(-0.5) == 0`` and ``round_half_up(0.5) == 1``.

    Computed as ``floor(x)`` plus one where the fraction ``x - floor(x)`` (exact in floating point) is
    at least 1/2: the literal ``x + 0.5`` would round first, taking 0.49999999999999994 to 1 and an
    odd integer in [2**52, 2**53) to the next one.
    """
    if is_torch(x):
        import torch

        k = torch.floor(x)
        return k + (x - k >= 0.5).to(k.dtype)
    x = np.asarray(x)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    k = np.floor(x)
    with np.errstate(invalid="ignore"):   # inf - inf: NaN, compared False, and floor(inf) stays
        return k + (x - k >= 0.5)


@contextlib.contextmanager
def limit_threads(threads):
    """Run the block with at most ``threads`` CPU threads in torch and in the BLAS that numpy uses,
    restoring both afterwards (``None``: change nothing). Torch is only touched if already imported."""
    if threads is None:
        yield
        return
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None and before != threads:
        torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            yield
        else:
            with threadpool_limits(limits=threads):
                yield
    finally:
        if torch is not None and before != threads:
            torch.set_num_threads(before)
