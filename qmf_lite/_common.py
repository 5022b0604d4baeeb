"""Private helpers that several modules share, each defined once.

* :func:`is_torch`: whether a value is a torch object (without importing torch);
* :func:`check_seed_or_generator`: the one rule for a ``seed``/``rng`` argument: ``None`` (fresh
  entropy, where allowed), an integer in [0, 2**63 - 1], or a numpy or torch ``Generator``;
* :func:`numpy_generator` and :func:`torch_generator`: the generator such an argument stands for.

Nothing here is public: the public functions check their arguments with these (or with
:mod:`qmf_lite._validate`) once, at the door.
"""
from __future__ import annotations

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
