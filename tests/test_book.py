"""qmf_lite.book: the book-wide scale switch, glue, tables and the figure style."""
from __future__ import annotations

import pytest

from qmf_lite import book


def test_scale_defaults_to_fast_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("QMF_LITE_SCALE", raising=False)
    assert book.scale() == "fast"
    monkeypatch.setenv("QMF_LITE_SCALE", " Paper ")
    assert book.scale() == "paper"
    monkeypatch.setenv("QMF_LITE_SCALE", "huge")
    with pytest.raises(ValueError, match="QMF_LITE_SCALE"):
        book.scale()


def test_profile_picks_one_set_of_settings(monkeypatch):
    monkeypatch.setenv("QMF_LITE_SCALE", "fast")
    P = book.profile(fast={"width": 512, "n": 2}, paper={"width": 2048, "n": 8})
    assert (P.scale, P.width, P.n) == ("fast", 512, 2)
    monkeypatch.setenv("QMF_LITE_SCALE", "paper")
    P = book.profile(fast={"width": 512, "n": 2}, paper={"width": 2048, "n": 8})
    assert (P.scale, P.width, P.n) == ("paper", 2048, 8)
    with pytest.raises(ValueError, match="same keys"):
        book.profile(fast={"width": 512}, paper={"depth": 3})
    with pytest.raises(ValueError, match="reserved"):
        book.profile(fast={"scale": 1}, paper={"scale": 2})


def test_glue_returns_none_and_unwraps_numpy_scalars(monkeypatch):
    import numpy as np

    stored = {}
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: stored.update({name: value}))
    assert book.glue("x", np.float64(1.5)) is None
    assert type(stored["x"]) is float and stored["x"] == 1.5


def test_table_renders_formatted_html():
    html = book.table([(3, 0.123456, "a<b")], ["N", "value", "note"], ["d", ".3f", None]).data
    assert "<td>3</td>" in html and "<td>0.123</td>" in html and "a&lt;b" in html


def test_use_style_sets_the_colour_cycle():
    import matplotlib as mpl

    book.use_style()
    assert mpl.rcParams["axes.prop_cycle"].by_key()["color"][:2] == book.COLORS[:2]
