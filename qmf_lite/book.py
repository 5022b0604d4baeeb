"""Small helpers the chapters share: the book-wide scale switch, gluing numbers into the prose,
tables, and one figure style.

Kept free of heavy imports (numpy and matplotlib are imported inside the functions that use them),
so that a chapter's first cell stays fast.

The scale switch
----------------
Every chapter runs in about a minute on a 2-core CPU at its default (``fast``) settings. The
environment variable ``QMF_LITE_SCALE`` switches the whole book to the papers' scale::

    QMF_LITE_SCALE=paper jupyter-book build . --all      # or, in Colab: %env QMF_LITE_SCALE=paper

A chapter states both settings in one place, ``P = profile(fast={...}, paper={...})``, and reads
``P.width``, ``P.n_nets``, ... everywhere else.
"""
from __future__ import annotations

import cmath
import numbers
import os
import types

__all__ = ["scale", "profile", "SCALES", "glue", "use_style", "table", "COLORS"]

#: the values ``QMF_LITE_SCALE`` may take
SCALES = ("fast", "paper")


def scale():
    """The book-wide scale, ``"fast"`` (default) or ``"paper"``, read from ``$QMF_LITE_SCALE``.

    Read at every call, so that setting the variable in a running kernel (``%env``) takes effect.
    """
    value = os.environ.get("QMF_LITE_SCALE", "fast").strip().lower() or "fast"
    if value not in SCALES:
        raise ValueError(f"QMF_LITE_SCALE must be one of {SCALES}, got {value!r}")
    return value


def profile(fast, paper):
    """The settings of the current :func:`scale`, as attributes.

    Parameters
    ----------
    fast, paper : dict
        The same keys in both: what the chapter runs by default and at the papers' scale.

    Returns
    -------
    types.SimpleNamespace
        The chosen settings, plus ``scale`` (``"fast"`` or ``"paper"``).

    Examples
    --------
    >>> P = profile(fast={"width": 512}, paper={"width": 2048})
    >>> P.width if P.scale == "fast" else 512
    512
    """
    for name, value in (("fast", fast), ("paper", paper)):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must be a dict of settings with string keys, got {value!r}")
    if set(fast) != set(paper):
        raise ValueError(f"fast and paper must set the same keys; they differ in {sorted(set(fast) ^ set(paper))}")
    if "scale" in fast:
        raise ValueError("'scale' is reserved: it is added to the profile")
    chosen = paper if scale() == "paper" else fast
    return types.SimpleNamespace(scale=scale(), **chosen)

#: a colour-blind-safe cycle (Okabe-Ito)
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


def glue(name, value, display=False):
    """Store ``value`` under ``name`` for ``{glue:text}`` roles in the book (myst-nb).

    Where myst-nb is not installed (Colab) nothing is stored. Returns None, so that a glue
    call at the end of a cell adds no output. ``name`` must be a non-empty string and
    ``display`` True or False; a number glued into the prose must be finite (a NaN in the text
    is a bug upstream).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(display, bool):
        raise ValueError(f"display must be True or False, got {display!r}")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalars print as np.float64(...), which {glue:text} cannot format
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and not cmath.isfinite(value):
        raise ValueError(f"value must be finite to be glued as {name!r}, got {value!r}")
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab
        return None
    _glue(name, value, display=display)
    return None


def use_style():
    """The book's matplotlib style: readable fonts, light grid, colour-blind-safe colours."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update({
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=COLORS),
        "legend.frameon": False,
        "font.size": 11,
    })


def table(rows, headers, formats=None):
    """A rendered HTML table of ``rows`` (sequences) under ``headers``, for display in a chapter.

    ``formats`` holds one format spec per column (``".4f"``, ``"d"``, ``".3e"``; ``None`` for str()).
    ``rows`` must be a sequence of sequences as long as ``headers`` (strings), and each value
    must suit its column's format.
    """
    from html import escape

    from IPython.display import HTML

    if isinstance(headers, (str, bytes)) or not isinstance(headers, (list, tuple)) \
            or not all(isinstance(h, str) for h in headers):
        raise ValueError(f"headers must be a list of strings, got {headers!r}")
    if formats is None:
        formats = [None] * len(headers)
    if isinstance(formats, (str, bytes)) or not isinstance(formats, (list, tuple)) or len(formats) != len(headers) \
            or not all(f is None or isinstance(f, str) for f in formats):
        raise ValueError(f"formats must be None or a list of {len(headers)} format specs (str or None), got {formats!r}")
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise ValueError(f"rows must be a sequence of rows, each a sequence of {len(headers)} values, got {rows!r}")
    rows = [list(r) if hasattr(r, "__iter__") and not isinstance(r, (str, bytes)) else r for r in rows]
    for r in rows:
        if not isinstance(r, list) or len(r) != len(headers):
            raise ValueError(f"rows must be a sequence of rows, each a sequence of {len(headers)} values, got the row {r!r}")
        for v, f in zip(r, formats):
            if f is not None:
                try:
                    format(v, f)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"rows must hold values that suit the formats: {v!r} with {f!r}: {exc}") from None
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v) if f is None else format(v, f))}</td>" for v, f in zip(r, formats)) + "</tr>"
        for r in rows)
    return HTML(f'<table class="table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
