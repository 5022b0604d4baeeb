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


@pytest.mark.parametrize("kwargs,name", [
    (dict(fast=None), "fast"), (dict(paper=[("n", 2)]), "paper"), (dict(fast={1: 1}, paper={1: 2}), "fast"),
])
def test_profile_needs_dicts_of_settings(kwargs, name):
    """A number or list gave TypeError ('not iterable'), an array numpy's UFuncTypeError."""
    args = dict(fast={"n": 1}, paper={"n": 2}) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name} must be a dict"):
        book.profile(**args)


@pytest.mark.parametrize("kwargs,name", [
    (dict(name=3.0), "name"), (dict(name=""), "name"), (dict(value=float("nan")), "value"),
    (dict(value=float("inf")), "value"), (dict(display=1), "display"),
])
def test_glue_refuses_bad_names_flags_and_non_finite_numbers(kwargs, name):
    """A NaN glued into the prose reads 'nan' in the book: refused at the source."""
    args = dict(name="x", value=1.5, display=False) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name} must"):
        book.glue(**args)


@pytest.mark.parametrize("kwargs,name", [
    (dict(rows=3.0), "rows"), (dict(rows=[(1,)]), "rows"), (dict(rows=[("3", 1.0)]), "rows"),
    (dict(headers="N"), "headers"), (dict(headers=[1, 2]), "headers"), (dict(formats=["d"]), "formats"),
    (dict(formats=3), "formats"),
])
def test_table_checks_rows_headers_and_formats(kwargs, name):
    """Before: TypeError 'not iterable', or format()'s 'Unknown format code' naming no argument."""
    args = dict(rows=[(1, 2.5)], headers=["n", "x"], formats=["d", ".2f"]) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name} must"):
        book.table(**args)
