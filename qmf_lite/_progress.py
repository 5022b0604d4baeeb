"""Progress bars for long loops, imported only when asked for.

tqdm's notebook front end warns on import where ipywidgets is missing, so it is not imported
with the package, only when a bar is actually shown.
"""
from __future__ import annotations


def progress(iterable, enabled, **kwargs):
    """``iterable`` wrapped in a tqdm bar when ``enabled``, else unchanged."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
