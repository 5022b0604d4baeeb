"""The command line: python -m qmf_lite init --levels N | --depth L."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

import qmf_lite as qmf
from qmf_lite.cli import main


def run_cli(*args):
    out = io.StringIO()
    main(list(args), out=out)
    return out.getvalue()


def test_cli_levels():
    text = run_cli("init", "--levels", "16")
    init = qmf.optimal_init(16)
    for key in ("sigma_w", "sigma_b", "spacing", "thresholds", "chi", "xi", "L_max"):
        assert key in text
    assert f"{init.sigma_w:.6f}" in text and f"{init.max_depth:.1f}" in text
    # every value starts in one column, the L_max line's too, whatever the multiple
    for multiple in ("6", "2.5", "1e-300"):
        lines = run_cli("init", "--levels", "16", "--multiple", multiple).splitlines()
        rows = [line for line in lines if line.startswith(("chi ", "xi ", "L_max"))]
        assert len(rows) == 3 and all(row[17] == " " != row[18] for row in rows), (multiple, rows)


def test_cli_depth():
    text = run_cli("init", "--depth", "500")
    assert "N = 16 (4 bits)" in text


@pytest.mark.parametrize("args,needle", [
    (["init", "--levels", "1"], "--levels must be an integer in [2, "),
    (["init", "--levels", "x"], "--levels"),
    (["init", "--depth", "-3"], "--depth must be finite and > 0"),
    (["init"], "required"),
    (["init", "--levels", "4", "--spacing", "0"], "--spacing must be finite and > 0"),
    (["init", "--depth", "1e308"], "--depth must be at most"),
    (["init", "--depth", "nan"], "--depth must not be NaN"),
    (["init", "--levels", "10000000000"], "--levels must be an integer in [2, "),  # a 1e10-long array of thresholds before
    (["fig3", "--shard", "3/2"], "--shard must be I/K with 1 <= I <= K"),
    (["fig3", "--shard", "one"], "--shard must be I/K"),
    (["fig3", "--deadline", "-5"], "--deadline must be a number of seconds"),
    (["fig3", "--deadline", "nan"], "--deadline must be a number of seconds"),
    (["fig3", "--merge", "no-such-bundle.json", "--out", "x.json"], "--merge must name an existing file"),
    (["init", "--levels", "16", "--multiple", "-2"], "--multiple must be > 0"),
    (["init", "--levels", "16", "--multiple", "1e308"], "--multiple must be > 0 and keep L_max"),
    (["fig3", "--device", "foo"], "fig3: error: --device must be a device name such as cpu, cuda or cuda:1, got 'foo'"),
    (["fig3", "--device", "cuda:99"], "--device must be available: cuda:99 is not"),
    (["fig3", "--max-memory", "lots"], "fig3: error: --max-memory must be auto, none, or a number of bytes"),
    (["fig3", "--max-memory", "1e400"], "fig3: error: --max-memory must be auto, none, or a number of bytes"),
    (["fig3", "--max-memory", "infGB"], "fig3: error: --max-memory must be auto, none, or a number of bytes"),
    (["fig3", "--mnist", "no/such/mnist/folder"], "--mnist must name an existing folder"),
    (["fig3", "--width", "0"], "--width must be an integer >= 1"),    # checked before MNIST is read or downloaded
    (["init", "--depth", "500", "--spacing", "0.3"], "--scale and --spacing apply to --levels only"),
    (["init", "--depth", "500", "--scale", "2"], "--scale and --spacing apply to --levels only"),
    # the package's messages in the words of the command line: flags, not Python arguments
    (["fig3", "--precision", "tf32x3"], "--precision tf32x3 needs --update fused (3xTF32 products run in its "
                                        "Triton kernels), got --update torch"),
    (["fig3", "--precision", "bf16", "--update", "fused"], "--precision must be one of ('fp32', 'tf32', 'tf32x3') "
                                                          "with --update fused, got 'bf16'"),
    (["fig3", "--steps", "0"], "error: --steps must be an integer >= 1"),
    (["fig3", "--levels", "4", "1"], "error: --levels must be an integer in [2, "),
])
def test_cli_errors_exit_2_with_one_line(args, needle):
    proc = subprocess.run([sys.executable, "-m", "qmf_lite", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "error" in lines[0]
