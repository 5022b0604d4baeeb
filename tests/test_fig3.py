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
        "precision": "fp32", "seeding": "cell"}


def test_paper_profile_is_the_papers_setting():
    """The authors' src/mnist.py: run_part_lin(10, ..., 25, [3..16], reports=[100..1600], N=2048),
    pick_lr, batch 32, momentum 0.5, Normalize((0.1307,), (0.3081,)), gen_model's layout."""
    p = fig3.profile_config("paper")
    assert p["levels"] == list(range(3, 17)) and p["width"] == 2048
    assert p["depths"][0] == 10 and set(np.diff(p["depths"])) == {25}
    assert p["steps"] == [100, 200, 400, 800, 1600]
    assert (p["lr"], p["momentum"], p["batch_size"]) == ("bgs19", 0.5, 32)
    assert (p["dataset"], p["normalize"], p["layout"], p["precision"]) == ("mnist", "bgs19", "bgs19", "fp32")
    assert p["seeding"] == "cell"                      # independent draws per cell, as the authors' were
    # the authors' notebook as published: depths 10..135 in steps of 25; 260 is our choice
    a = fig3.AUTHORS_NOTEBOOK_DEPTHS
    assert (a["first_layer"], a["last_layer"], a["layers_skip"]) == (10, 135, 25)
    assert set(range(a["first_layer"], a["last_layer"] + 1, a["layers_skip"])) < set(p["depths"])
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
    grid_nets = {(n, d, s) for n in cfg["levels"] for d in cfg["depths"] for s in cfg["seeds"]}
    done = {tuple(t) for t in meta.get("done", [[n, d, s] for n, d, s in grid_nets])}
    missing = {tuple(t) for t in meta.get("missing", [])}
    assert done | missing == grid_nets and not done & missing         # a partial file lists what is missing
    assert {(r["levels"], r["depth"], r["seed"]) for r in grid.rows} == done
    assert len(grid.rows) == len(done) * len(cfg["steps"])
    assert sorted((m[0], m[3], m[2]) for m in grid.missing) == sorted(missing)
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
    assert meta2["wall_seconds"] >= 0 and meta2["device"].startswith("cpu") and meta2["update"] == "torch"
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


def test_a_modified_grid_never_writes_a_profiles_data_file(tmp_path, monkeypatch):
    """Without --out, the paper profile's own settings write book/data/fig3_paper.json, and any other settings
    a file named by their hash, so that the README's digits command cannot overwrite the MNIST run's file."""
    assert fig3.default_data_file("paper") == fig3.DATA_FILE == "book/data/fig3_paper.json"
    assert fig3.default_data_file("fast", fig3.profile_config("fast")) == "book/data/fig3_fast.json"
    digits = {**fig3.profile_config("paper"), "dataset": "digits"}
    assert fig3.default_data_file("paper", digits) == f"book/data/fig3_paper_{fig3.config_hash(digits)}.json"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    buf = io.StringIO()
    assert main(["fig3", "--dataset", "digits", "--width", "8", "--levels", "4", "--depths", "2", "--steps", "1",
                 "--device", "cpu", "--deadline", "0", "--quiet"], out=buf) == 0
    written = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "book" / "data").iterdir()]
    assert len(written) == 1 and written[0].startswith("book/data/fig3_paper_") and written[0] != fig3.DATA_FILE
    assert f"wrote {written[0]}" in buf.getvalue()


#: what the shipped width-2048 digits run changes in the paper profile (the rest is the paper's setting)
#: and "seeding": that run (before the option existed) initialised every network from its replicate seed; the
#: key was added to its configuration, and its hash recomputed, when the option appeared (rows unchanged)
DIGITS_RUN_CHANGES = {"dataset", "normalize", "levels", "steps", "seeding"}


def test_shipped_digits_run_is_the_paper_setting_on_the_digits():
    """book/data/fig3_paper_digits.json: complete, self-consistent, and the paper profile except for the
    data, the levels and the steps; its networks train (N = 16 at depth 10 learns) and a shallow N = 3
    net beats a deep one."""
    path = ROOT / "book" / "data" / "fig3_paper_digits.json"
    grid, meta = _check_data_file(path, "custom")
    cfg, paper = meta["config"], fig3.PROFILES["paper"]
    assert {k for k in paper if cfg[k] != paper[k]} == DIGITS_RUN_CHANGES
    assert cfg["dataset"] == "digits" and set(cfg["levels"]) <= set(paper["levels"]) and cfg["seeding"] == "shared"
    assert not grid.missing and meta["missing"] == []
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
        (lambda: fig3.produce("fast", "a\x00b.json", config=cfg), r"^out must be a path .* without NUL characters"),
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


def _demo_args(out, *extra):
    return ["fig3", "--profile", "fast", "--dataset", "digits", "--width", "8", "--levels", "2", "3", "4",
            "--depths", "2", "3", "5", "--steps", "2", "4", "--seeds", "0", "--device", "cpu", "--quiet",
            "--out", str(out), *extra]


def _fake_training_clock(monkeypatch):
    """A fake clock for the grid and the command: it advances 0.01 s per network-layer-step trained."""
    from qmf_lite import cli, training

    clock = {"t": 0.0}
    real = training._train_networks

    def timed(specs, depth, **kw):
        clock["t"] += 0.01 * len(specs) * depth * max(kw["steps"])
        return real(specs, depth, **kw)

    monkeypatch.setattr(training, "_clock", lambda: clock["t"])
    monkeypatch.setattr(cli, "_clock", lambda: clock["t"])
    monkeypatch.setattr(training, "_train_networks", timed)


def test_run_in_pieces_resumes_and_shards_merge_to_the_same_file(tmp_path, monkeypatch):
    """The paper run's workflow on a tiny grid (digits, width 8, 4 steps), on the CPU: a run stopped by its
    deadline writes a partial data file and a bundle; on an empty cache ("another machine"), with another
    chunking, the bundle gives 100% hits and the rest is trained; two shares on two caches merge into the
    data file of one run."""
    _fake_training_clock(monkeypatch)
    monkeypatch.setattr(fig3, "datetime", _FixedDatetime)
    bundle, part = tmp_path / "carried.json", tmp_path / "part.json"
    # 1. cut by the deadline: the work order is depth 2, 5, then 3; 0.08 s for one depth-2 network, then the
    #    0.32 s left hold int(0.32 / (1.15 * 0.08)) = 3 more at depth 2 (2 are left); of the 0.16 s then left, a
    #    depth-5 network (0.2 s) would overrun, and int(0.16 / (1.15 * 0.12)) = 1 of depth 3 fits
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "machine1"))
    buf = io.StringIO()
    assert main(_demo_args(part, "--deadline", "0.4", "--bundle", str(bundle)), out=buf) == 0
    text = buf.getvalue()
    assert "partial: 5 networks of the grid are missing; continue with: python -m qmf_lite fig3" in text
    assert f"--deadline 0.4 --bundle {bundle}" in text
    grid, meta = _check_data_file(part, "fast")
    assert sorted(map(tuple, meta["done"])) == [(2, 2, 0), (2, 3, 0), (3, 2, 0), (4, 2, 0)]
    assert len(meta["missing"]) == 5 and len(json.loads(bundle.read_text())["entries"]) == 4
    # 2. another machine (empty cache), another chunking: every bundled network is found, the rest trained
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "machine2"))
    whole_out = tmp_path / "whole.json"
    buf = io.StringIO()
    assert main(_demo_args(whole_out, "--bundle", str(bundle), "--max-memory", "none"), out=buf) == 0
    assert "4 loaded from the cache, 5 trained now" in buf.getvalue() and "partial" not in buf.getvalue()
    whole, whole_meta = _check_data_file(whole_out, "fast")
    assert whole_meta["networks_from_cache"] == 4 and not whole.missing
    assert len(json.loads(bundle.read_text())["entries"]) == 9
    one_run = fig3.run({**fig3.profile_config("fast"), "width": 8, "levels": [2, 3, 4], "depths": [2, 3, 5],
                        "steps": [2, 4], "seeds": [0]}, device="cpu", cache=False, progress=False)
    assert whole.rows == _rounded(one_run.rows)
    # a bundle that does not fit this run is refused, saying why
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "machine3"))
    proc_err = io.StringIO()
    monkeypatch.setattr("sys.stderr", proc_err)
    with pytest.raises(SystemExit) as info:
        main(_demo_args(tmp_path / "x.json", "--bundle", str(bundle), "--steps", "2", "8"))
    assert info.value.code == 2 and "holds 9 finished networks, but this run finds only 0" in proc_err.getvalue()
    # 3. two shares on two machines, then merged: the same rows and the same list of what is done
    shares = []
    for i in (1, 2):
        monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / f"share{i}"))
        b = tmp_path / f"share{i}.json"
        assert main(_demo_args(tmp_path / f"s{i}.json", "--shard", f"{i}/2", "--bundle", str(b)), out=io.StringIO()) == 0
        shares.append(b)
    n1, n2 = (len(json.loads(b.read_text())["entries"]) for b in shares)
    assert n1 + n2 == 9 and min(n1, n2) >= 3
    merged_out, merged_bundle = tmp_path / "merged.json", tmp_path / "merged_bundle.json"
    buf = io.StringIO()
    assert main(_demo_args(merged_out, "--merge", *map(str, shares), "--bundle", str(merged_bundle)), out=buf) == 0
    assert "merged 2 bundle(s): 9 networks, 0 missing" in buf.getvalue()
    merged, merged_meta = _check_data_file(merged_out, "fast")
    assert merged.rows == whole.rows and merged_meta["done"] == whole_meta["done"]
    assert merged_meta["config_hash"] == whole_meta["config_hash"] and merged_meta["update"] == "torch"
    assert len(json.loads(merged_bundle.read_text())["entries"]) == 9
    # a merge of one share alone: a partial file that lists the other share's networks as missing
    assert main(_demo_args(tmp_path / "half.json", "--merge", str(shares[0])), out=io.StringIO()) == 0
    assert len(_check_data_file(tmp_path / "half.json", "fast")[1]["missing"]) == n2


def _rounded(rows):
    return [{k: (round(v, 5) if k.endswith("_acc") else v) for k, v in r.items()} for r in rows]


class _FixedDatetime:
    """datetime with a fixed now(), so that two data files can be compared field by field."""

    datetime = type("D", (), {"now": staticmethod(lambda tz=None: __import__("datetime").datetime(2026, 1, 1,
                                                                                                 tzinfo=tz))})
    timezone = __import__("datetime").timezone


def test_a_partial_file_of_the_paper_profile_is_current(tmp_path):
    """What the stale-data test accepts: a file of the code's paper profile that lists the networks still
    missing (here the priority depths done for N = 3, 4, and nothing else)."""
    from qmf_lite.training import GridResult

    cfg = fig3.profile_config("paper")
    done = [(n, d) for n in (3, 4) for d in cfg["depths"][::2]]
    rows = [{"levels": n, "sigma_w": 1.0, "seed": 0, "depth": d, "step": s, "train_acc": 0.5, "test_acc": 0.5}
            for n, d in done for s in cfg["steps"]]
    missing = [(n, 1.0, 0, d) for d in cfg["depths"] for n in cfg["levels"] if (n, d) not in done]
    out = tmp_path / "fig3_paper.json"
    fig3.write(out, GridResult(rows, {}, 1.0, missing=missing), cfg, {
        "torch_version": "x", "device": "cuda: X", "wall_seconds": 1.0, "peak_memory_bytes": None,
        "tflops_per_second": None, "qmf_lite_version": "x", "code_fingerprint": "x", "created": "x"})
    grid, meta = _check_data_file(out, "paper")
    assert not fig3.is_stale(meta, "paper") and len(meta["done"]) == 12 and len(grid.missing) == 14 * 11 - 12
    with pytest.raises(ValueError, match="meta must be None or a dict without the keys done and missing"):
        fig3.write(out, grid, cfg, {"done": []})


# --- fetch_data: the chapter's data files outside the repository (a local server, never the network) ---
def _serve(folder):
    """An HTTP server on 127.0.0.1 serving ``folder``; returns (base URL, list of requested paths, server)."""
    import functools
    import http.server
    import threading

    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, *args):
            requested.append(self.path)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/data", requested, httpd


def _fetch_fixture(tmp_path):
    src = tmp_path / "repo" / "data"
    src.mkdir(parents=True)
    grid = qmf.GridResult([{"levels": 3, "sigma_w": 1.0, "seed": 0, "depth": 4, "step": 1, "train_acc": 0.5,
                            "test_acc": 0.75}], {}, 1.0)
    fig3.write(src / "fig3_paper_digits.json", grid, _tiny_config(), {"device": "cpu"})
    (src / "fig3_broken.json").write_text('{"schema": 1, "rows": []')       # cut off mid-download
    return src


def test_fetch_data_fetches_checks_and_reuses_files(tmp_path):
    src = _fetch_fixture(tmp_path)
    url, requested, httpd = _serve(src.parent)
    dest = tmp_path / "cache"
    try:
        folder, msg = fig3.fetch_data(["fig3_paper.json", "fig3_paper_digits.json", "fig3_broken.json"],
                                      url=url, folder=dest, timeout=10)
        assert folder == dest
        assert sorted(p.name for p in dest.iterdir()) == ["fig3_paper_digits.json"]   # no partial file left
        assert (dest / "fig3_paper_digits.json").read_bytes() == (src / "fig3_paper_digits.json").read_bytes()
        g, meta = fig3.load(dest / "fig3_paper_digits.json")
        assert g.rows[0]["test_acc"] == 0.75
        assert "\n" not in msg
        assert msg.startswith(f"fetched the Fig. 3 data file(s) fig3_paper_digits.json from {url} into {dest}")
        assert "not in the repository at that version: fig3_paper.json" in msg
        assert "not a Fig. 3 data file, discarded: fig3_broken.json" in msg
        assert len(requested) == 3
        # a second call finds the file and asks the server only for the two it does not hold
        folder, msg = fig3.fetch_data(["fig3_paper.json", "fig3_paper_digits.json"], url=url, folder=dest)
        assert folder == dest and msg.startswith("using the Fig. 3 data file(s) fig3_paper_digits.json fetched before")
        assert requested[3:] == ["/data/fig3_paper.json"]
        # a damaged cached copy is fetched again
        (dest / "fig3_paper_digits.json").write_text("{")
        folder, msg = fig3.fetch_data(["fig3_paper_digits.json"], url=url, folder=dest)
        assert msg.startswith("fetched") and fig3.load(dest / "fig3_paper_digits.json")[0].rows == g.rows
    finally:
        httpd.shutdown()
        httpd.server_close()
    # offline now: the copy fetched before is used, and the message says that the rest failed
    folder, msg = fig3.fetch_data(["fig3_paper.json", "fig3_paper_digits.json"], url=url, folder=dest, timeout=5)
    assert folder == dest and msg.startswith("using the Fig. 3 data file(s) fig3_paper_digits.json fetched before")
    assert "fetching failed (" in msg


def test_fetch_data_offline_says_so(tmp_path):
    import socket

    with socket.socket() as s:                  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data"
    folder, msg = fig3.fetch_data(url=url, folder=tmp_path / "cache", timeout=5)
    assert folder is None and list((tmp_path / "cache").iterdir()) == []
    assert msg.startswith(f"no Fig. 3 data file could be fetched from {url}") and "fetching failed (" in msg
    assert "offline?" in msg and "\n" not in msg


def test_fetch_data_from_a_file_url_and_bad_arguments(tmp_path):
    src = _fetch_fixture(tmp_path)
    folder, msg = fig3.fetch_data(["fig3_paper_digits.json", "fig3_paper.json"], url=src.as_uri(),
                                  folder=tmp_path / "c")
    assert folder == tmp_path / "c" and "not in the repository at that version: fig3_paper.json" in msg
    for kwargs, match in ((dict(names="fig3_paper.json"), "names"), (dict(names=[]), "names"),
                          (dict(names=["../x.json"]), "names"), (dict(names=["x.txt"]), "names"),
                          (dict(url="ftp://host/data"), "url"), (dict(url=3), "url"),
                          (dict(timeout=0), "timeout"), (dict(timeout=float("nan")), "timeout"),
                          (dict(folder=src / "fig3_paper_digits.json"), "folder")):
        with pytest.raises(ValueError, match=match):
            fig3.fetch_data(**{"url": src.as_uri(), "folder": tmp_path / "d", **kwargs})


def test_fetch_data_default_source_is_the_books_repository_at_this_version():
    """DATA_URL is repository.url of _config.yml (the set-up cells' URL) and DATA_FILES every shipped file."""
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert fig3.DATA_URL == repo + "/raw/v{version}/book/data"
    shipped = {p.name for p in (ROOT / "book" / "data").glob("fig3_*.json")}
    assert shipped <= set(fig3.DATA_FILES) and pathlib.Path(fig3.DATA_FILE).name in fig3.DATA_FILES


def test_gpu_check_script_runs_fig3_first_and_keeps_to_its_budget(tmp_path):
    """benchmarks/gpu_check.sh with python3 and nvidia-smi replaced by stubs that print their arguments:
    the Fig. 3 piece comes first with a deadline that leaves the checks their time, every command has
    a timeout, the files come back under $OUT, a fused run gets a bundle of its own, and a call with no
    time left skips the rest instead of running without a limit."""
    import os
    import stat
    import subprocess

    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("python3", "nvidia-smi"):
        (stubs / name).write_text('#!/bin/bash\necho "STUB $*"\n')
        (stubs / name).chmod((stubs / name).stat().st_mode | stat.S_IEXEC)
    repo = tmp_path / "repo"
    (repo / "book" / "data").mkdir(parents=True)
    for name in ("fig3_paper.json", "fig3_paper.bundle"):
        (repo / "book" / "data" / name).write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "OUT": str(out)}
    script = str(ROOT / "benchmarks" / "gpu_check.sh")

    def call(*args):
        done = subprocess.run(["bash", script, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line[5:] for line in done.stdout.splitlines() if line.startswith("STUB ")]

    calls = call("/data/mnist")                                     # the default budget, 560 s
    bench = ["benchmarks/bench_training.py", "--device", "cuda"]
    assert [c.split()[:3] for c in calls[2:]] == [["-m", "qmf_lite", "fig3"], ["-m", "pytest", "-q"], bench, bench]
    fig3_call = calls[2].split()
    deadline = int(fig3_call[fig3_call.index("--deadline") + 1])
    assert 560 - 330 - 90 - 3 <= deadline <= 560 - 330 - 90          # the checks' time and a margin left over
    assert fig3_call[fig3_call.index("--bundle") + 1] == "book/data/fig3_paper.bundle"
    assert fig3_call[fig3_call.index("--out") + 1] == "book/data/fig3_paper.json"
    assert "--mnist /data/mnist" in calls[2] and "--compare" in calls[4] and "--accuracy" in calls[5]
    assert {p.name for p in out.iterdir()} == {"fig3_paper.json", "fig3_paper.bundle", "gpu_check.log"}
    (repo / "book" / "data" / "fig3_paper_fused_tf32x3.json").write_text("x")
    (repo / "book" / "data" / "fig3_paper_fused_tf32x3.bundle").write_text("x")
    fused = call("/data/mnist", "540", "fused", "tf32x3")[2]
    assert ("--bundle book/data/fig3_paper_fused_tf32x3.bundle --out book/data/fig3_paper_fused_tf32x3.json "
            "--update fused --precision tf32x3") in fused
    assert (out / "fig3_paper_fused_tf32x3.json").exists()
    assert len(call("/data/mnist", "20")) == 2                       # no time: nothing but the two version lines
