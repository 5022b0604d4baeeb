"""Fault-tolerant files: atomic writes, validated reads, and a fingerprint of the code.

Every file the package writes for later reuse (grid results, downloads, the Fig. 3 data file)
goes through :func:`atomic_write_bytes`: the content is written to a temporary file in the same
folder, flushed to disk, and moved over the target with :func:`os.replace`, which is atomic on
POSIX and Windows. A run killed mid-write leaves at most a stray ``.*.tmp`` file, never a
truncated entry; two processes writing the same key both succeed and the last one wins, and
since both computed the same deterministic content the entry is valid either way.

:func:`read_json` never crashes on a bad entry: a parse error, a wrong schema or a key mismatch
is reported with a :class:`CacheWarning` naming the file, and the caller recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import warnings

__all__ = ["CacheWarning", "atomic_write_bytes", "atomic_write_json", "read_json", "code_fingerprint",
           "RESULT_MODULES"]

#: the modules whose source decides the numbers that training produces (the cache key hashes them)
RESULT_MODULES = ("activations", "gaussian", "maps", "tradeoff", "ste", "training", "data")


class CacheWarning(UserWarning):
    """A cached entry could not be used (corrupt, wrong schema or key) and is being recomputed."""


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path, obj, indent=None):
    """``json.dumps(obj)`` written atomically to ``path``."""
    return atomic_write_bytes(path, json.dumps(obj, indent=indent, sort_keys=True).encode())


def read_json(path, schema=None, key=None, validate=None):
    """The JSON object stored at ``path``, or ``None`` if it is missing or unusable.

    An entry that does not parse, whose ``"schema"`` differs from ``schema``, whose ``"key"``
    differs from ``key``, or that ``validate(entry)`` rejects (by returning an error message or
    raising) is reported with a :class:`CacheWarning` naming the file, and ``None`` is returned
    so that the caller recomputes it. The bad file is left in place; the next write replaces it.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    reason = None
    try:
        entry = json.loads(text)
    except ValueError as exc:
        reason = f"it does not parse as JSON ({exc})"
    else:
        if not isinstance(entry, dict):
            reason = "it is not a JSON object"
        elif schema is not None and entry.get("schema") != schema:
            reason = f"its schema is {entry.get('schema')!r}, expected {schema!r}"
        elif key is not None and entry.get("key") != key:
            reason = f"its key {entry.get('key')!r} does not match the file's expected key {key!r}"
        elif validate is not None:
            try:
                reason = validate(entry)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                reason = f"its content is malformed ({type(exc).__name__}: {exc})"
    if reason is not None:
        warnings.warn(f"ignoring the cache entry {path}: {reason}; recomputing it", CacheWarning, stacklevel=3)
        return None
    return entry


_FINGERPRINTS = {}


def code_fingerprint(modules=RESULT_MODULES):
    """A short hash of the source files of ``modules`` (names inside ``qmf_lite``).

    Part of every cache key, so that editing the code that produces a result invalidates the
    stored result instead of silently reusing it.
    """
    modules = tuple(modules)
    if modules not in _FINGERPRINTS:
        root = pathlib.Path(__file__).resolve().parent
        h = hashlib.sha256()
        for name in modules:
            h.update(name.encode() + b"\0" + (root / f"{name}.py").read_bytes() + b"\0")
        _FINGERPRINTS[modules] = h.hexdigest()[:16]
    return _FINGERPRINTS[modules]
