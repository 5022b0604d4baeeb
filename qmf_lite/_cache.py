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

import ast
import hashlib
import json
import os
import pathlib
import tempfile
import warnings

__all__ = ["CacheWarning", "atomic_write_bytes", "atomic_write_json", "read_json", "code_fingerprint",
           "source_fingerprint", "RESULT_MODULES", "FINGERPRINT_EXCLUDE"]

#: the modules whose code decides the numbers that training produces (the cache key hashes them; the data
#: enter the key through a hash of the tensors themselves, so the loaders of ``data`` are not among them)
RESULT_MODULES = ("activations", "gaussian", "maps", "tradeoff", "ste", "training")
#: top-level definitions left out of :func:`code_fingerprint`, by module: they decide which networks train
#: when and where the results go, not the numbers of a network (those come from ``_train_networks``,
#: ``train``, ``QuantizedMLPBatch`` and the seeds, which are covered)
FINGERPRINT_EXCLUDE = {"training": (
    # the grid runner: its door, plan, cache and bundle bookkeeping, chunking, deadline and result
    "run_grid", "_GridArgs", "_grid_arguments", "_check_shard", "_check_bundle", "_GridPlan", "_grid_plan",
    "_restore_bundle", "_cached_networks", "_GridState", "_device_name", "_memory_budget_for_grid", "_chunk_sizes",
    "_deadline_size", "_store_chunk", "_train_depth", "_train_pending", "_grid_result", "_run_grid", "GridResult",
    "_chunk_fit", "_key", "_validator", "_work_order", "_shares", "_read_bundle", "_write_bundle", "_bundle_mismatch",
    "_entry_config",
    # estimates and analysis that no network's numbers depend on
    "halfway_depth", "_halfway_depth", "memory_budget", "_check_max_memory", "_memory_budget", "training_memory", "_memory",
    "training_flops", "_flops")}


class CacheWarning(UserWarning):
    """A cached entry could not be used (corrupt, wrong schema or key) and is being recomputed."""


def _read_umask():
    """The process's umask (read by setting it and putting it back: once, at import, before any thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the mode of the files written here: what ``open`` gives a new file under the umask at import
FILE_MODE = 0o666 & ~_read_umask()


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The file gets the permissions that ``open(path, "wb")`` would give it (``0o666`` less the
    umask), not the owner-only mode of the temporary file.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
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


def _read_source(name):
    """The source text of ``qmf_lite/<name>.py`` (a seam for the tests)."""
    return (pathlib.Path(__file__).resolve().parent / f"{name}.py").read_text(encoding="utf-8")


def _strip_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def source_fingerprint(source, exclude=()):
    """A short hash of Python ``source`` that only a change of its code can change.

    The source is parsed, its docstrings (module, class and function) and the top-level
    definitions named in ``exclude`` are removed, and what remains is hashed as
    :func:`ast.unparse` writes it back. Comments, docstrings, blank lines, line breaks,
    indentation style and quoting do not count; any change to a statement, a name or a constant
    does. (Python's own version does not enter, but ``ast.unparse`` may spell a rare construct
    differently in another Python version.)
    """
    tree = _strip_docstrings(ast.parse(source))
    tree.body = [node for node in tree.body
                 if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in exclude)]
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()[:16]


def code_fingerprint(modules=RESULT_MODULES):
    """A short hash of the code of ``modules`` (names inside ``qmf_lite``) that decides the numbers.

    Part of every training-cache key, so that editing the code that produces a result
    invalidates the stored result instead of silently reusing it. What it covers: the syntax
    tree of each module's source (:func:`source_fingerprint`), without docstrings and without the
    top-level definitions listed in :data:`FINGERPRINT_EXCLUDE`, which only decide which networks
    train when and where their results are stored (the grid runner, its cache and bundle
    bookkeeping, the memory and cost estimates), never the numbers of one network. So a comment,
    a docstring, a reformatting or an edit of the grid runner keeps every cached network; an
    edit of the networks, the activations, the initialization, the training loop or the seeds
    does not.
    """
    modules = tuple(modules)
    if modules not in _FINGERPRINTS:
        h = hashlib.sha256()
        for name in modules:
            h.update(name.encode() + b"\0" + source_fingerprint(_read_source(name),
                                                                 FINGERPRINT_EXCLUDE.get(name, ())).encode() + b"\0")
        _FINGERPRINTS[modules] = h.hexdigest()[:16]
    return _FINGERPRINTS[modules]
