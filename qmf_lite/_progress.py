"""Progress bars for long loops, imported only when asked for.

tqdm's notebook front end warns on import where ipywidgets is missing, so it is not imported
with the package, only when a bar is actually shown.
"""
from __future__ import annotations

import os


def progress(iterable, enabled, **kwargs):
    """``iterable`` wrapped in a tqdm bar when ``enabled`` (and ``$TQDM_DISABLE`` is not set), else unchanged."""
    # TQDM_DISABLE=1 (set by the book's build) turns bars off: tqdm's notebook bar ignores it itself
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
