"""Small helpers the chapters share: gluing numbers into the prose, and one figure style.

Kept free of heavy imports so that a chapter's first cell stays fast.
"""
from __future__ import annotations

__all__ = ["glue", "use_style", "table", "COLORS"]

#: a colour-blind-safe cycle (Okabe-Ito)
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


def glue(name, value, display=False):
    """Store ``value`` under ``name`` for ``{glue:text}`` roles in the book (myst-nb).

    Where myst-nb is not installed (Colab) nothing is stored. Returns None, so that a glue
    call at the end of a cell adds no output.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalars print as np.float64(...), which {glue:text} cannot format
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
    """
    from html import escape

    from IPython.display import HTML

    formats = formats or [None] * len(headers)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v) if f is None else format(v, f))}</td>" for v, f in zip(r, formats)) + "</tr>"
        for r in rows)
    return HTML(f'<table class="table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
