"""What the built pages load, and what they do not (a local Sphinx extension of the book).

* Progress bars are off while the book is built: the chapters run in kernels started by this
  process, and a tqdm bar in a built page would be a widget that loads require.js and a widget
  manager from public CDNs. ``TQDM_DISABLE=1`` turns every tqdm bar off (set it to 0 to keep them).
* The book has no Thebe (live code) button, but sphinx-thebe, which Jupyter Book always loads,
  writes its configuration script into every page, and writes it twice (its set-up is attached to
  an event that fires twice in Jupyter Book's build), so that every page failed with "Identifier
  'THEBE_JS_URL' has already been declared". Its scripts are left out of the pages.
* The theme's light/dark switch starts in "auto" mode; without a default the theme logged
  "Got invalid theme mode" as an error on a reader's first visit.
* ``_static/qmf.css``: figures and display math on narrow screens.
"""
from __future__ import annotations

import os


def _drop_thebe(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    scripts = context.get("script_files")
    if not scripts:
        return
    keep = []
    for js in scripts:
        name = getattr(js, "filename", js) or ""
        body = getattr(js, "attributes", {}).get("body", "") if hasattr(js, "attributes") else ""
        if "thebe" in str(name) or "THEBE_JS_URL" in body or "thebe_selector" in body:
            continue
        keep.append(js)
    context["script_files"] = keep


def setup(app):
    os.environ.setdefault("TQDM_DISABLE", "1")
    app.add_css_file("qmf.css")
    app.connect("html-page-context", _drop_thebe, priority=900)   # after the theme's own handlers
    return {"parallel_read_safe": True, "parallel_write_safe": True}
