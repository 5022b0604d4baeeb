"""The Fig. 3 experiment: profiles, the data file and its staleness check, the boundary fit, the command."""
from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest
from scipy import stats

import qmf_lite as qmf
from qmf_lite import fig3
from qmf_lite.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"dataset": "digits", "normalize": "feature", "width": 8, "levels": [2, 4], "depths": [2, 3], "seeds": [0],
        "steps": [2, 4], "lr": 0.05, "momentum": 0.5, "batch_size": 16, "layout": "bgs19", "eval_size": 100,
        "precision": "fp32"}


def test_paper_profile_is_the_papers_setting():
    """The authors' src/mnist.py: run_part_lin(10, ..., 25, [3..16], reports=[100..1600], N=2048),
    pick_lr, batch 32, momentum 0.5, Normalize((0.1307,), (0.3081,)), gen_model's layout."""
    p = fig3.profile_config("paper")
    assert p["levels"] == list(range(3, 17)) and p["width"] == 2048
    assert p["depths"][0] == 10 and set(np.diff(p["depths"])) == {25}
    assert p["steps"] == [100, 200, 400, 800, 1600]
    assert (p["lr"], p["momentum"], p["batch_size"]) == ("bgs19", 0.5, 32)
    assert (p["dataset"], p["normalize"], p["layout"], p["precision"]) == ("mnist", "bgs19", "bgs19", "fp32")
    assert set(fig3.PROFILES["fast"]) == set(p)
    assert p is not fig3.PROFILES["paper"]
    with pytest.raises(ValueError, match="profile"):
        fig3.profile_config("full")


def test_config_hash_is_canonical_and_sensitive():
    a = fig3.profile_config("paper")
    b = dict(reversed(list(a.items())))
    assert fig3.config_hash(a) == fig3.config_hash(b)
    for key, value in (("width", 1024), ("lr", 0.001), ("depths", a["depths"][:-1]), ("precision", "tf32")):
        assert fig3.config_hash({**a, key: value}) != fig3.config_hash(a)


def _check_data_file(path, profile):
    grid, meta = fig3.load(path)
    assert meta["config_hash"] == fig3.config_hash(meta["config"])
    for field in ("torch_version", "device", "wall_seconds", "peak_memory_bytes", "tflops_per_second",
                  "qmf_lite_version", "code_fingerprint", "created"):
        assert field in meta
    cfg = meta["config"]
    assert len(grid.rows) == len(cfg["levels"]) * len(cfg["seeds"]) * len(cfg["depths"]) * len(cfg["steps"])
    return grid, meta


def test_shipped_paper_data_file_matches_the_code():
    """Stale data: the shipped file's configuration must be the code's paper profile."""
    path = ROOT / fig3.DATA_FILE
    if not path.exists():
        pytest.skip(f"{fig3.DATA_FILE} has not been produced yet (needs a GPU: python -m qmf_lite fig3 --profile paper)")
    _, meta = _check_data_file(path, "paper")
    assert not fig3.is_stale(meta, "paper"), (
        f"{fig3.DATA_FILE} was produced with another configuration (hash {meta['config_hash']}) than the code's "
        f"paper profile ({fig3.config_hash(fig3.PROFILES['paper'])}): rerun python -m qmf_lite fig3 --profile paper")


def test_data_file_round_trip_and_staleness(tmp_path, monkeypatch):
    """The same checks on a small file produced here: written, loaded, flagged stale against a changed profile."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fig3_tiny.json"
    path, grid, meta = fig3.produce("fast", out, config=TINY, device="cpu", progress=False)
    assert path == out and meta["profile"] == "custom"
    loaded, meta2 = _check_data_file(out, "fast")
    assert [r["test_acc"] for r in loaded.rows] == pytest.approx([r["test_acc"] for r in grid.rows], abs=1e-5)
    assert meta2["wall_seconds"] >= 0 and meta2["device"].startswith("cpu")
    monkeypatch.setitem(fig3.PROFILES, "fast", TINY)
    assert not fig3.is_stale(meta2, "fast")
    monkeypatch.setitem(fig3.PROFILES, "fast", {**TINY, "steps": [2, 4, 8]})
    assert fig3.is_stale(meta2, "fast")
    # an edited file (configuration changed, hash not) is refused, naming the file
    doc = json.loads(out.read_text())
    doc["config"]["width"] = 16
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=f"{out}.*config_hash"):
        fig3.load(out)
    out.write_text("{")
    with pytest.raises(ValueError, match=str(out)):
        fig3.load(out)


def test_fit_exponent_against_scipy():
    rng = np.random.default_rng(0)
    xi = np.array([2.2, 4.7, 7.9, 11.7, 16.0])
    lh = 5 * xi ** 0.8 * np.exp(0.05 * rng.standard_normal(5))
    beta, se, a = fit_res = fig3.fit_exponent(xi, lh)
    ref = stats.linregress(np.log(xi), np.log(lh))
    assert beta == pytest.approx(ref.slope, rel=1e-12) and se == pytest.approx(ref.stderr, rel=1e-10)
    assert a == pytest.approx(np.exp(ref.intercept), rel=1e-12)
    assert fig3.fit_exponent(np.append(xi, 20.0), np.append(lh, np.nan)) == pytest.approx(fit_res)
    with pytest.raises(ValueError, match="l_half"):
        fig3.fit_exponent([1, 2, 3], [1, np.nan, 3])
    with pytest.raises(ValueError, match="xi"):
        fig3.fit_exponent([1, -2, 3], [1, 2, 3])


def test_boundary_uses_xi_of_n():
    from qmf_lite.training import GridResult

    rows = [{"levels": n, "sigma_w": 1.0, "seed": 0, "depth": d, "step": 5, "train_acc": 0.0,
             "test_acc": 0.9 if d < 6 * qmf.optimal_depth_scale(n) else 0.1} for n in (3, 5) for d in (4, 16, 64, 256)]
    b = fig3.boundary(GridResult(rows, {}, 0.0))
    assert list(b["levels"]) == [3, 5]
    assert b["xi"] == pytest.approx([qmf.optimal_depth_scale(3), qmf.optimal_depth_scale(5)])
    assert b["l_half"] == pytest.approx([np.sqrt(16 * 64), np.sqrt(64 * 256)])    # halfway in log depth
    assert b["ratio"] == pytest.approx(b["l_half"] / b["xi"])


def test_fig3_command_writes_the_data_file(tmp_path, monkeypatch):
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "f.json"
    buf = io.StringIO()
    args = ["fig3", "--profile", "fast", "--dataset", "digits", "--width", "8", "--levels", "2", "4", "--depths",
            "2", "3", "--steps", "2", "4", "--seeds", "0", "--device", "cpu", "--max-memory", "1GB", "--quiet",
            "--out", str(out)]
    assert main(args, out=buf) == 0
    text = buf.getvalue()
    assert "config hash" in text and "L_1/2" in text and f"wrote {out}" in text
    grid, meta = fig3.load(out)
    assert meta["config"]["width"] == 8 and meta["config"]["levels"] == [2, 4] and meta["profile"] == "custom"
    buf2 = io.StringIO()
    assert main(args, out=buf2) == 0
    assert "loaded from the cache" in buf2.getvalue()


#: what the shipped width-2048 digits run changes in the paper profile (the rest is the paper's setting)
DIGITS_RUN_CHANGES = {"dataset", "normalize", "levels", "steps"}


def test_shipped_digits_run_is_the_paper_setting_on_the_digits():
    """book/data/fig3_paper_digits.json: complete, self-consistent, and the paper profile except for the
    data, the levels and the steps; its networks train (N = 16 at depth 10 learns) and a shallow N = 3
    net beats a deep one."""
    path = ROOT / "book" / "data" / "fig3_paper_digits.json"
    grid, meta = _check_data_file(path, "custom")
    cfg, paper = meta["config"], fig3.PROFILES["paper"]
    assert {k for k in paper if cfg[k] != paper[k]} == DIGITS_RUN_CHANGES
    assert cfg["dataset"] == "digits" and set(cfg["levels"]) <= set(paper["levels"])
    assert set(cfg["steps"]) <= set(paper["steps"])
    assert meta["device"].startswith("cuda")
    levels, depths, acc = grid.table("test_acc", step=cfg["steps"][-1])
    assert acc[levels.index(16), depths.index(10)] > 0.9
    assert acc[levels.index(3), depths.index(10)] > acc[levels.index(3), depths.index(260)] + 0.3


def _tiny_config():
    return {**fig3.profile_config("fast"), "levels": [4], "depths": [2], "seeds": [0], "steps": [1], "width": 8,
            "batch_size": 16}


def test_bad_arguments_name_the_argument(tmp_path):
    from qmf_lite.training import GridResult

    rows = [{"levels": 3, "sigma_w": 1.0, "seed": 0, "depth": d, "step": 5, "train_acc": 0.5, "test_acc": a}
            for d, a in ((4, 0.9), (16, 0.1))]
    grid = GridResult(rows, {}, 0.0)
    cfg = _tiny_config()
    cases = [
        (lambda: fig3.profile_config(["fast"]), r"^name must be one of \['fast', 'paper'\]"),
        (lambda: fig3.config_hash({"a": float("nan")}), r"^config must be JSON data"),
        (lambda: fig3.config_hash(np.zeros(2)), r"^config must be JSON data"),
        (lambda: fig3.run({"width": 8}), r"^config must be a dict with the keys"),
        (lambda: fig3.run({**cfg, "dataset": "cifar"}), r"^config\['dataset'\] must be 'mnist' or 'digits'"),
        (lambda: fig3.run(cfg, progress=None), r"^progress must be True or False"),
        (lambda: fig3.produce(np.nan, tmp_path / "a.json", config=cfg), r"^profile must be one of"),
        (lambda: fig3.produce("fast", tmp_path, config=cfg), r"^out must name a file to write"),
        (lambda: fig3.produce("fast", 3, config=cfg), r"^out must be a path"),
        (lambda: fig3.write(tmp_path / "w.json", rows, cfg), r"^grid must be a GridResult"),
        (lambda: fig3.write(tmp_path / "w.json", grid, cfg, meta={"rows": []}), r"^meta must be None or a dict"),
        (lambda: fig3.write(tmp_path / "w.json", grid, cfg, meta={"t": float("inf")}), r"^meta must be JSON data"),
        (lambda: fig3.load(tmp_path / "none.json"), r"^path must name an existing file"),
        (lambda: fig3.load(None), r"^path must be a path"),
        (lambda: fig3.is_stale(None), r"^meta must be a dict"),
        (lambda: fig3.is_stale({}, "full"), r"^profile must be one of"),
        (lambda: fig3.boundary(rows), r"^grid must be a GridResult"),
        (lambda: fig3.boundary(grid, step=4), r"^step must be None or one of the grid's recorded steps \[5\]"),
        (lambda: fig3.boundary(grid, step=True), r"^step must be None or one of"),
        (lambda: fig3.boundary(grid, chance=-0.1), r"^chance must be a real number in \[0, 1\]"),
        (lambda: fig3.fit_exponent([1, 2, 4], ["3", "6", "12"]), r"^l_half must be real numbers"),
        (lambda: fig3.fit_exponent([1, 2, 4], [3, -6, 12]), r"^l_half must be finite and > 0, or NaN"),
        (lambda: fig3.fit_exponent([2, 2, 2], [3, 6, 12]), r"^xi must hold at least two distinct values"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle):
            call()
    assert not (tmp_path / "w.json").exists()


def test_boundary_is_nan_for_a_level_with_a_missing_depth():
    """An unfinished grid (a cell missing) gives NaN for that N, as before the argument checks, not an error."""
    from qmf_lite.training import GridResult

    rows = [{"levels": n, "sigma_w": 1.0, "seed": 0, "depth": d, "step": 5, "train_acc": 0.5, "test_acc": a}
            for n in (3, 5) for d, a in ((4, 0.9), (16, 0.5), (64, 0.1)) if (n, d) != (5, 64)]
    b = fig3.boundary(GridResult(rows, {}, 0.0))
    assert np.isfinite(b["l_half"][0]) and np.isnan(b["l_half"][1])
