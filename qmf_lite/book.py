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

__all__ = ["scale", "profile", "SCALES", "glue", "use_style", "table", "COLORS", "figure_png", "png_text"]

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


#: the smallest text on a page, in CSS pixels, and the widths (CSS pixels) at which a figure must
#: keep it: a figure up to ``NARROW_INCHES`` wide fits a phone's column, a wider one fits the
#: desktop column and scrolls sideways on a phone (the book's CSS, ``_static/qmf.css``)
MIN_TEXT_PX = 9.0
PHONE_COLUMN_PX = 350
DESKTOP_COLUMN_PX = 680
NARROW_INCHES = 7.0


def use_style():
    """The book's matplotlib style: readable fonts, light grid, colour-blind-safe colours.

    In IPython (a chapter, Jupyter, Colab) it also makes :func:`figure_png` draw every figure, so
    that no text in a figure is smaller than ``MIN_TEXT_PX`` pixels at the width the book's page
    shows it.
    """
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
        # a light frame keeps legend text readable over lines and heat maps
        "legend.frameon": True,
        "legend.framealpha": 0.85,
        "legend.facecolor": "white",
        "legend.edgecolor": "0.8",
        "font.size": 12,
    })
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    # the first figure loads the backend, and IPython's inline backend then resets the PNG
    # formatter: load it now (pyplot does this on its first figure)
    getattr(plt, "_get_backend_mod", plt.get_backend)()
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def _shown_texts(fig):
    """Every text of ``fig`` that is drawn: titles, labels, legends, annotations, visible tick labels."""
    from matplotlib.text import Text

    axes = [(ax.xaxis, ax.yaxis) for ax in fig.axes]
    all_ticks = {id(t) for pair in axes for axis in pair
                 for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    shown = [t for pair in axes for axis in pair for t in axis.get_ticklabels(which="both")]
    shown += [t for t in fig.findobj(Text) if id(t) not in all_ticks]
    seen, out = set(), []
    for t in shown:
        if id(t) in seen or not t.get_visible() or not t.get_text().strip():
            continue
        seen.add(id(t))
        out.append(t)
    return out


def _png_chunk(kind, data):
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def figure_png(fig, base64=True):
    """The PNG of ``fig`` as the book shows it, with its smallest text and its width recorded.

    A figure up to ``NARROW_INCHES`` wide is meant to fit a phone's column (``PHONE_COLUMN_PX``
    CSS pixels), a wider one the desktop column (``DESKTOP_COLUMN_PX``; on a phone it scrolls
    sideways). Text that would be smaller than ``MIN_TEXT_PX`` at that width is enlarged to that
    size (and the layout redone), larger text is left alone. The PNG carries, as text chunks,
    ``qmf:min_font_pt`` (its smallest text, in points), ``qmf:width_in`` (its width in inches) and
    ``qmf:dpi``, which the book's browser test checks against the width the page gives it.

    Returns the PNG as base64 text (``base64=True``, what IPython's display expects) or bytes;
    None for a figure without axes.
    """
    import binascii
    import warnings

    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {fig!r}")
    if not isinstance(base64, bool):
        raise ValueError(f"base64 must be True or False, got {base64!r}")
    if not fig.axes:
        return None
    if not hasattr(fig.canvas, "get_renderer"):     # a Figure made without pyplot: draw with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    dpi = float(fig.dpi)
    column = PHONE_COLUMN_PX if fig.get_size_inches()[0] <= NARROW_INCHES else DESKTOP_COLUMN_PX
    for _ in range(3):
        fig.canvas.draw()
        texts = _shown_texts(fig)
        bbox = fig.get_tightbbox(fig.canvas.get_renderer())
        width_px = (bbox.width + 0.2) * dpi        # print_figure pads 0.1 in on each side
        shrink = min(1.0, column / width_px)
        need_pt = MIN_TEXT_PX * 1.02 / shrink * 72.0 / dpi
        small = [t for t in texts if t.get_fontsize() < need_pt]
        if not small:
            break
        for t in small:
            t.set_fontsize(need_pt)
        for ax in fig.axes:    # tick labels made later (zoom, new limits) take the new size too
            for axis in (ax.xaxis, ax.yaxis):
                ticks = axis.get_ticklabels(which="both")
                if ticks and min(t.get_fontsize() for t in ticks) >= need_pt:
                    axis.set_tick_params(which="both", labelsize=max(t.get_fontsize() for t in ticks))
        if fig.get_layout_engine() is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig.tight_layout()
    data = print_figure(fig, fmt="png", bbox_inches="tight")
    texts = _shown_texts(fig)
    min_pt = min((t.get_fontsize() for t in texts), default=0.0)
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.2
    chunks = b"".join(_png_chunk(b"tEXt", f"{key}\0{value}".encode("latin-1")) for key, value in (
        ("qmf:min_font_pt", f"{min_pt:.2f}"), ("qmf:width_in", f"{width_in:.3f}"), ("qmf:dpi", f"{dpi:g}")))
    end_of_header = 8 + 25                          # signature, then the IHDR chunk (13 bytes of data)
    data = data[:end_of_header] + chunks + data[end_of_header:]
    return binascii.b2a_base64(data, newline=False).decode("ascii") if base64 else data


def png_text(data):
    """The text chunks of a PNG file as a dict, e.g. ``{"qmf:min_font_pt": "9.5", ...}``.

    ``data`` must be the bytes of a PNG file (what :func:`figure_png` returns with ``base64=False``).

    Examples
    --------
    >>> png_text(b"\\x89PNG\\r\\n\\x1a\\n")
    {}
    """
    import struct

    if not isinstance(data, (bytes, bytearray)) or bytes(data[:8]) != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"data must be the bytes of a PNG file, got {type(data).__name__}")
    data = bytes(data)
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


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
