"""How an answer is compared with the solution's value: the one implementation of the checks.

This file is self-contained on purpose (standard library at module level; numpy and sympy are
imported inside the functions that need them): the build copies its source, unchanged,

* into every hidden test of the autograder, where ``grade`` compares a student's value with the
  solution's value stored beside it (``compare``), and
* into the student notebook, where ``check(...)`` looks at type, shape and finiteness only
  (``sanity``): it never sees, and so cannot reveal, the solution's value.

An expected value is stored as a JSON-able record made by ``encode`` from the solution's value:

* ``numeric`` (a check line with rtol= and/or atol=): the shape and the flattened values;
* ``exact``: the value normalised to JSON (numpy scalars and arrays to Python numbers and lists,
  tuples to lists) and its type;
* ``sympy``: the expression as SymPy's ``srepr`` text (symbols keep their assumptions).

``compare`` and ``sanity`` return ``None`` when the answer passes, else a message for the student
that states what is wrong without stating the expected value.
"""
import json
import math
import signal

NOT_ANSWERED = "not answered yet (the variable is still `...` or not defined)"


class CheckError(ValueError):
    """A solution's value does not fit its check line (raised when building)."""


class _Missing:
    def __repr__(self):
        return "<missing>"


MISSING = _Missing()


# --------------------------------------------------------------------------------------------
# conversions

def _is_sympy(value):
    return type(value).__module__.split(".")[0] == "sympy"


def _is_torch(value):
    return type(value).__module__.split(".")[0] == "torch"


def _real_array(value, name):
    """``value`` as a float64 numpy array, or a message saying why it is not a real number/array."""
    import numpy as np

    if value is Ellipsis or value is MISSING:
        return None, NOT_ANSWERED
    if value is None:
        return None, f"`{name}` is None; store a number (or an array of numbers) in it"
    if isinstance(value, (bool, np.bool_)):
        return None, f"`{name}` is a boolean; a number was expected"
    if isinstance(value, (str, bytes)):
        return None, f"`{name}` is a string; a number was expected, not its text"
    if _is_torch(value):
        value = value.detach().cpu().numpy()
    if _is_sympy(value):
        import sympy

        if isinstance(value, sympy.MatrixBase):
            if value.free_symbols:
                return None, f"`{name}` is a SymPy matrix with free symbols {sorted(map(str, value.free_symbols))}; substitute numbers"
            value = [[complex(sympy.N(v)) for v in row] for row in value.tolist()]
        elif getattr(value, "free_symbols", None):
            return None, f"`{name}` is a SymPy expression with free symbols {sorted(map(str, value.free_symbols))}; a number was expected"
        else:
            try:
                value = complex(sympy.N(value))
            except (TypeError, ValueError):
                return None, f"`{name}` is a SymPy object that is not a number"
    try:
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = np.asarray(value, dtype=complex)
        if arr.dtype.kind == "b":
            return None, f"`{name}` holds booleans; numbers were expected"
        if arr.dtype.kind not in "iufc":
            return None, f"`{name}` is a {type(value).__name__} that cannot be read as numbers"
    except (TypeError, ValueError):
        return None, f"`{name}` is a {type(value).__name__} that cannot be read as numbers"
    if arr.dtype.kind == "c":
        if np.any(arr.imag != 0):
            return None, f"`{name}` is complex; a real number was expected"
        arr = arr.real
    return arr.astype(float), None


def _shape_words(shape):
    return "a single number" if tuple(shape) == () else f"an array of shape {tuple(shape)}"


def _norm(value):
    """A value for an ``exact`` comparison, normalised to JSON types."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    mod = type(value).__module__.split(".")[0]
    if mod == "numpy":
        return _norm(value.tolist() if hasattr(value, "tolist") else value.item())
    if _is_torch(value):
        return _norm(value.tolist())
    if _is_sympy(value):
        if getattr(value, "is_Integer", False):
            return int(value)
        if getattr(value, "is_Boolean", False) and value in (True, False):
            return bool(value)
        raise TypeError("a SymPy object (use `sympy` in the check line)")
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _norm(v) for k, v in value.items()}
    raise TypeError(f"a {type(value).__name__}")


def _type_name(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "dict"


_TYPE_WORDS = {"none": "None", "bool": "a boolean (True or False)", "int": "an integer",
               "float": "a number", "str": "a string", "list": "a list or tuple", "dict": "a dict"}


def _sympy_namespace():
    import sympy

    namespace = {}
    exec("from sympy import *", namespace)
    namespace["sympy"] = sympy
    return namespace


# --------------------------------------------------------------------------------------------
# building: the solution's value -> a record

def encode(value, spec, name="answer"):
    """The record of a solution's ``value`` for a check ``spec`` (raises :class:`CheckError`)."""
    kind = spec["kind"]
    if kind == "numeric":
        arr, problem = _real_array(value, name)
        if problem:
            raise CheckError(f"the solution's `{name}` is not numeric: {problem}")
        return {"kind": "numeric", "shape": list(arr.shape),
                "data": [float(v) for v in arr.ravel()]}
    if kind == "exact":
        try:
            normed = _norm(value)
        except TypeError as exc:
            raise CheckError(f"the solution's `{name}` is {exc}: an exact check takes numbers, "
                             "booleans, strings and lists of them") from None
        if value is Ellipsis:
            raise CheckError(f"the solution's `{name}` is `...`")
        json.dumps(normed)
        return {"kind": "exact", "type": _type_name(normed), "value": normed}
    if kind == "sympy":
        import sympy

        if not isinstance(value, (sympy.Basic, sympy.MatrixBase)):
            raise CheckError(f"the solution's `{name}` is a {type(value).__name__}, not a SymPy "
                             "expression; a sympy check needs one")
        text = sympy.srepr(value)
        if _restore_sympy(text) != value:
            raise CheckError(f"the solution's `{name}` does not survive sympy.srepr")
        shape = list(value.shape) if isinstance(value, sympy.MatrixBase) else None
        return {"kind": "sympy", "srepr": text, "shape": shape}
    raise CheckError(f"unknown check kind {kind!r}")


def _restore_sympy(text):
    return eval(text, _sympy_namespace())


def public(record):
    """What a student's notebook may know of a record: type and shape, never the value."""
    if record["kind"] == "numeric":
        finite = all(math.isfinite(v) for v in record["data"])
        return {"kind": "numeric", "shape": record["shape"], "finite": finite}
    if record["kind"] == "exact":
        out = {"kind": "exact", "type": record["type"]}
        if record["type"] == "list":
            out["len"] = len(record["value"])
        return out
    return {"kind": "sympy", "shape": record.get("shape")}


# --------------------------------------------------------------------------------------------
# student side: type, shape, finiteness

def sanity(value, pub, name="answer"):
    """``None`` if ``value`` has the type and shape of the answer, else what is wrong (never raises)."""
    try:
        return _sanity(value, pub, name)
    except Exception as exc:  # a check must never crash a student's notebook
        return f"`{name}` could not be checked ({type(exc).__name__}: {exc})"


def _sanity(value, pub, name):
    if value is Ellipsis or value is MISSING:
        return NOT_ANSWERED
    kind = pub["kind"]
    if kind == "numeric":
        arr, problem = _real_array(value, name)
        if problem:
            return problem
        if list(arr.shape) != list(pub["shape"]):
            return f"`{name}` is {_shape_words(arr.shape)}; expected {_shape_words(pub['shape'])}"
        if pub.get("finite", True):
            import numpy as np

            if not np.all(np.isfinite(arr)):
                return f"`{name}` contains NaN or infinity"
        return None
    if kind == "exact":
        try:
            normed = _norm(value)
        except TypeError as exc:
            return f"`{name}` is {exc}; expected {_TYPE_WORDS[pub['type']]}"
        got, want = _type_name(normed), pub["type"]
        numeric = {"int", "float"}
        if got != want and not (got in numeric and want in numeric and want != "bool"):
            return f"`{name}` is {_TYPE_WORDS[got]}; expected {_TYPE_WORDS[want]}"
        if want == "int" and got == "float" and not float(normed).is_integer():
            return f"`{name}` is not a whole number; expected {_TYPE_WORDS[want]}"
        if want == "list" and "len" in pub and len(normed) != pub["len"]:
            return f"`{name}` has {len(normed)} entries; expected {pub['len']}"
        return None
    if kind == "sympy":
        import sympy

        if isinstance(value, (str, bytes)):
            return f"`{name}` is a string; build a SymPy expression (e.g. with sp.Symbol) instead"
        if not isinstance(value, (sympy.Basic, sympy.MatrixBase, int, float)):
            return f"`{name}` is a {type(value).__name__}; a SymPy expression was expected"
        shape = pub.get("shape")
        got_shape = list(value.shape) if isinstance(value, sympy.MatrixBase) else None
        if shape != got_shape:
            want = "a matrix of shape " + str(tuple(shape)) if shape else "a scalar expression"
            return f"`{name}` has the wrong shape; expected {want}"
        return None
    return f"unknown check kind {kind!r}"


# --------------------------------------------------------------------------------------------
# grading: compare with the stored solution value

class _TimeLimit:
    """Raise TimeoutError after ``seconds`` (Unix main thread only; elsewhere no limit)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.armed = False

    def _expire(self, signum, frame):
        raise TimeoutError(f"the comparison took longer than {self.seconds} s")

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGALRM, self._expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self.armed = True
        except (AttributeError, ValueError):  # no SIGALRM (Windows) or not the main thread
            pass
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


def compare(value, record, spec, name="answer", time_limit=30):
    """``None`` if ``value`` equals the solution's record under ``spec``, else a message."""
    try:
        with _TimeLimit(time_limit):
            return _compare(value, record, spec, name)
    except Exception as exc:
        return f"`{name}` could not be compared ({type(exc).__name__}: {exc})"


def _compare(value, record, spec, name):
    problem = _sanity(value, public(record), name)
    if problem == NOT_ANSWERED:
        return f"`{name}` is {NOT_ANSWERED}"
    if record["kind"] == "numeric":
        import numpy as np

        if problem:
            return problem
        arr, _ = _real_array(value, name)
        want = np.asarray(record["data"], dtype=float).reshape(record["shape"])
        rtol, atol = float(spec.get("rtol", 0.0)), float(spec.get("atol", 0.0))
        with np.errstate(invalid="ignore"):
            ok = np.isclose(arr, want, rtol=rtol, atol=atol, equal_nan=True)
        if np.all(ok):
            return None
        tol = " and ".join(f"{k}={v:g}" for k, v in (("rtol", rtol), ("atol", atol)) if v)
        if want.ndim == 0:
            return f"`{name}` is not within {tol} of the expected value"
        return f"`{name}`: {int(np.size(ok) - np.count_nonzero(ok))} of {np.size(ok)} entries are not within {tol} of the expected values"
    if record["kind"] == "exact":
        if problem:
            return problem
        if _norm(value) == record["value"]:
            return None
        return f"`{name}` is not the expected value"
    if record["kind"] == "sympy":
        import sympy

        if problem:
            return problem
        want = _restore_sympy(record["srepr"])
        got = sympy.sympify(value)
        by_name = {s.name: s for s in want.free_symbols if hasattr(s, "name")}
        renames = {s: by_name[s.name] for s in got.free_symbols
                   if hasattr(s, "name") and s.name in by_name and s != by_name[s.name]}
        if renames:  # the same symbol created with other assumptions
            got = got.xreplace(renames)
        if isinstance(want, sympy.MatrixBase):
            diff = (got - want).applyfunc(sympy.simplify)
            return None if diff.is_zero_matrix else f"`{name}` differs from the expected matrix"
        want_order, got_order = want.getO(), got.getO() if isinstance(got, sympy.Expr) else None
        if want_order is not None or got_order is not None:
            if want_order != got_order:
                return f"`{name}` has the wrong order term ({got_order}); compare the order of your expansion with the question"
            want, got = want.removeO(), got.removeO()
        diff = sympy.simplify(got - want)
        if diff == 0 or diff.equals(0) is True:
            return None
        return f"`{name}` is not symbolically equal to the expected expression (the simplified difference is not zero)"
    return f"unknown check kind {record['kind']!r}"


def trivial_values(record):
    """Answers a student can give without doing the exercise: 0 and 1 (of the answer's shape) for a numeric or a
    SymPy answer (an exact one, a count or a list, is left out). The build refuses a check that accepts one."""
    if record["kind"] == "numeric":
        import numpy as np

        shape = tuple(record["shape"])
        return [float(v) if not shape else np.full(shape, float(v)) for v in (0, 1)]
    if record["kind"] == "sympy" and record.get("shape") is None:
        import sympy

        return [sympy.Integer(0), sympy.Integer(1)]
    return []


def wrong_value(record, spec):
    """A value that must fail ``compare`` (the build's self-check uses it)."""
    if record["kind"] == "numeric":
        import numpy as np

        want = np.asarray(record["data"], dtype=float).reshape(record["shape"])
        bump = 1.0 + 10 * float(spec.get("atol", 0.0))
        wrong = np.where(np.isfinite(want), want + bump + np.abs(want), 0.0)
        return float(wrong) if wrong.ndim == 0 else wrong
    if record["kind"] == "exact":
        v = record["value"]
        return {"bool": lambda: not v, "int": lambda: v + 1, "float": lambda: v + 1.0,
                "str": lambda: v + "?", "list": lambda: v + [None], "none": lambda: 0,
                "dict": lambda: {**v, "?": None}}[record["type"]]()
    want = _restore_sympy(record["srepr"])
    import sympy

    if isinstance(want, sympy.MatrixBase):
        return want + sympy.ones(*want.shape)
    return want + sympy.Symbol("wrong_answer")


# --------------------------------------------------------------------------------------------
# the student notebook's check()

def report(question, answers, namespace, stream=None):
    """Print, for each answer of a question, whether its type and shape look right.

    ``answers`` maps variable name -> public record. Returns True when every answer passes.
    """
    import sys

    stream = stream or sys.stdout
    all_ok = True
    for name, pub in answers.items():
        problem = sanity(namespace.get(name, MISSING), pub, name)
        if problem is None:
            print(f"\u2713 {name}: the type and shape look right (its value is graded after you hand in)", file=stream)
        else:
            all_ok = False
            mark = "\u2026" if problem == NOT_ANSWERED else "\u2717"
            text = problem if problem != NOT_ANSWERED else f"{name}: {NOT_ANSWERED}"
            print(f"{mark} {text}", file=stream)
    return all_ok
