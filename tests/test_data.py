"""Data loaders: digits offline, MNIST downloaded to a temporary name, verified, renamed (qmf_lite.data)."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading

import numpy as np
import pytest
import torch

from qmf_lite import data as qdata


def write_idx(path, array, code=0x08):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


def test_read_idx_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3)).astype(np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(qdata.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "plain").write_bytes(gzip.decompress((tmp_path / "a.gz").read_bytes()))   # uncompressed
    assert np.array_equal(qdata.read_idx(tmp_path / "plain"), arr)
    (tmp_path / "gz-named-plain.gz").write_bytes((tmp_path / "plain").read_bytes())      # by content, not name
    assert np.array_equal(qdata.read_idx(tmp_path / "gz-named-plain.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        qdata.read_idx(tmp_path / "bad")


def serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


@pytest.fixture
def mnist_server(tmp_path):
    """Small MNIST-format files served over HTTP on the loopback interface."""
    rng = np.random.default_rng(1)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 12),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5)}
    sums = {}
    for name, arr in arrays.items():
        write_idx(served / name, arr)
        sums[name] = hashlib.md5((served / name).read_bytes()).hexdigest()
    httpd, url = serve(served)
    yield url, sums, arrays, served
    httpd.shutdown()


def test_mnist_loader_downloads_verifies_and_caches(tmp_path, mnist_server):
    url, sums, arrays, _ = mnist_server
    root = tmp_path / "cache"
    ds = qdata.load_mnist(root, mirrors=("http://127.0.0.1:9/", url), checksums=sums, progress=False)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    assert np.array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte.gz"])
    # standardised per pixel with the training images' mean and standard deviation (constant pixels: 0)
    raw_train, raw_test = (arrays[f"{s}-images-idx3-ubyte.gz"].reshape(-1, 784).astype(np.float64) for s in ("train", "t10k"))
    mean, sd = raw_train.mean(0), raw_train.std(0)
    sd[sd == 0] = 1.0
    assert np.allclose(ds.x_train.numpy(), (raw_train - mean) / sd, atol=1e-5)
    assert np.allclose(ds.x_test.numpy(), (raw_test - mean) / sd, atol=1e-5)
    # cached: no server needed the second time
    again = qdata.load_mnist(root, download=False, checksums=sums)
    assert torch.equal(again.x_test, ds.x_test)
    assert sorted(p.name for p in root.iterdir()) == sorted(sums)    # no temporary files left


def test_mnist_loader_rejects_bad_checksums(tmp_path, mnist_server):
    url, sums, _, _ = mnist_server
    wrong = {k: "0" * 32 for k in sums}
    with pytest.raises(OSError, match="checksum mismatch"):
        qdata.load_mnist(tmp_path / "c2", mirrors=(url,), checksums=wrong, progress=False)


def test_corrupted_download_leaves_nothing_and_names_the_file(tmp_path, mnist_server):
    """A mirror serving a damaged file: a clear error naming the file, and no partial file a later run trusts."""
    url, sums, _, served = mnist_server
    name = "t10k-labels-idx1-ubyte.gz"
    data = (served / name).read_bytes()
    (served / name).write_bytes(data[: len(data) // 2])                 # truncated on the server
    root = tmp_path / "c3"
    with pytest.raises(OSError, match=rf"{name}.*checksum mismatch") as info:
        qdata.load_mnist(root, mirrors=(url,), checksums=sums, progress=False)
    assert str(root / name) in str(info.value)
    assert not (root / name).exists()
    assert not [p for p in root.iterdir() if name in p.name]            # no .part file either
    with pytest.raises(FileNotFoundError, match=name):
        qdata.load_mnist(root, download=False, checksums=sums)


def test_corrupted_cached_file_is_refused_or_replaced(tmp_path, mnist_server):
    url, sums, arrays, _ = mnist_server
    root = tmp_path / "c4"
    qdata.load_mnist(root, mirrors=(url,), checksums=sums, progress=False)
    name = "train-images-idx3-ubyte.gz"
    (root / name).write_bytes((root / name).read_bytes()[:100])         # a run killed mid-copy, say
    with pytest.raises(ValueError, match=f"{root / name}.*corrupt"):
        qdata.load_mnist(root, download=False, checksums=sums)
    with pytest.warns(qdata.CacheWarning, match=str(root / name)):
        ds = qdata.load_mnist(root, mirrors=(url,), checksums=sums, progress=False)
    assert ds.x_train.shape == (12, 784)
    assert hashlib.md5((root / name).read_bytes()).hexdigest() == sums[name]


def test_mnist_bgs19_normalization(tmp_path, mnist_server):
    url, sums, arrays, _ = mnist_server
    ds = qdata.load_mnist(tmp_path / "c5", mirrors=(url,), checksums=sums, progress=False, normalize="bgs19")
    raw = arrays["t10k-images-idx3-ubyte.gz"].reshape(5, -1)
    expected = ((raw / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    assert ds.normalization == "bgs19"
    assert np.array_equal(ds.x_test.numpy(), expected)
    with pytest.raises(ValueError, match="normalize"):
        qdata.load_mnist(tmp_path / "c5", download=False, checksums=sums, normalize="global")


def test_real_mnist_checksums_are_the_published_ones():
    assert qdata.MNIST_FILES["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert len(qdata.MNIST_FILES) == 4
    assert qdata.MNIST_SHA256["t10k-labels-idx1-ubyte"] == (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")
    assert {k + ".gz" for k in qdata.MNIST_SHA256} == set(qdata.MNIST_FILES)


def _idx_bytes(array):
    return (struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(">u1").tobytes())


def _offline_copies(folder, arrays, compress):
    """The four files written as a recompressed .gz (another compression level and a file name in the
    gzip header, so other bytes and another MD5 than the served ones) or uncompressed; returns their
    SHA-256s (of the IDX contents)."""
    folder.mkdir(parents=True, exist_ok=True)
    sha = {}
    for name, arr in arrays.items():
        blob = _idx_bytes(arr)
        base = name[:-3]
        sha[base] = hashlib.sha256(blob).hexdigest()
        if compress:
            with open(folder / name, "wb") as raw, gzip.GzipFile(base, "wb", 1, raw, mtime=12345) as f:
                f.write(blob)
        else:
            (folder / base).write_bytes(blob)
    return sha


@pytest.mark.parametrize("compress", [True, False])
def test_offline_copies_verify_by_the_sha256_of_their_contents(tmp_path, mnist_server, compress, monkeypatch):
    """Recompressed or uncompressed copies: their MD5s differ from the published .gz, the SHA-256 of the
    contents matches, and nothing is downloaded (the opener would fail the test)."""
    url, sums, arrays, _ = mnist_server
    root = tmp_path / "offline"
    sha = _offline_copies(root, arrays, compress)
    if compress:
        assert all(hashlib.md5((root / n).read_bytes()).hexdigest() != sums[n] for n in sums)

    def no_network(*args, **kwargs):
        raise AssertionError("load_mnist tried to download although verified files are present")

    monkeypatch.setattr(qdata.urllib.request, "urlopen", no_network)
    ds = qdata.load_mnist(root, download=True, mirrors=(url,), checksums=sums, sha256=sha, progress=False,
                          normalize="bgs19")
    raw = arrays["train-images-idx3-ubyte.gz"].reshape(12, -1)
    assert np.array_equal(ds.x_train.numpy(), ((raw / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    assert np.array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert sorted(p.name for p in root.iterdir()) == sorted(n if compress else n[:-3] for n in sums)
    # the published MD5s alone do not verify these copies, and the SHA-256s of other contents do not either
    with pytest.raises(ValueError, match="corrupt.*SHA-256 of its contents"):
        qdata.load_mnist(root, download=False, checksums=sums, sha256={k: "0" * 64 for k in sha})
    # one damaged uncompressed file: refused by name, then replaced by a download
    if not compress:
        name = "t10k-labels-idx1-ubyte"
        (root / name).write_bytes(_idx_bytes(np.array([1, 2, 3, 4, 9])))
        with pytest.raises(ValueError, match=f"{root / name} is corrupt"):
            qdata.load_mnist(root, download=False, checksums=sums, sha256=sha)
        monkeypatch.undo()
        with pytest.warns(qdata.CacheWarning, match=str(root / name)):
            again = qdata.load_mnist(root, mirrors=(url,), checksums=sums, sha256=sha, progress=False)
        assert np.array_equal(again.y_test.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
        assert (root / (name + ".gz")).exists()


def test_download_verifies_by_contents_too(tmp_path, mnist_server):
    """A mirror serving recompressed files: accepted by the SHA-256 of the contents (the download code
    runs against a local HTTP server)."""
    url, sums, arrays, served = mnist_server
    sha = _offline_copies(served, arrays, compress=True)              # the server now serves recompressed files
    ds = qdata.load_mnist(tmp_path / "dl", mirrors=(url,), checksums=sums, sha256=sha, progress=False)
    assert ds.x_test.shape == (5, 784)
    with pytest.raises(OSError, match="checksum mismatch"):
        qdata.load_mnist(tmp_path / "dl2", mirrors=(url,), checksums=sums, sha256={k: "1" * 64 for k in sha},
                         progress=False)


def test_digits_and_fingerprint():
    a, b = qdata.load_digits(), qdata.load_digits()
    assert a.x_train.shape == (1348, 64) and a.x_test.shape == (449, 64) and a.n_classes == 10
    assert abs(float(a.x_train.mean())) < 1e-6 and a.normalization == "feature"
    # per pixel: standard deviation 1 on the training split (0 for the pixels that are constant there)
    sd = a.x_train.double().std(0, unbiased=False).numpy()
    constant = np.isclose(sd, 0)
    assert constant.sum() < 8 and np.allclose(sd[~constant], 1.0, atol=1e-6)
    assert a.fingerprint() == b.fingerprint()
    assert qdata.load_digits(seed=1).fingerprint() != a.fingerprint()
    with pytest.raises(ValueError, match=r"^name must be one of \('digits', 'mnist'\)"):
        qdata.load_dataset("cifar")
    with pytest.raises(ValueError, match="test_fraction"):
        qdata.load_digits(test_fraction=1.5)


def test_bad_arguments_name_the_argument(tmp_path, mnist_server):
    _, sums, _, served = mnist_server
    cases = [
        (lambda: qdata.read_idx(3), r"^path must be a path \(a string or os.PathLike\)"),
        (lambda: qdata.read_idx(tmp_path), r"^path must name a file"),
        (lambda: qdata.read_idx(tmp_path / "none.gz"), r"^path must name an existing file"),
        (lambda: qdata.cache_dir("grid", 3), r"^parts must be strings or os.PathLike"),
        (lambda: qdata.cache_dir("a\x00b"), r"^parts must be relative paths without NUL characters"),
        (lambda: qdata.cache_dir("grid", "/etc"), r"^parts must be relative paths"),
        (lambda: qdata.load_digits(test_fraction="0.2"), r"^test_fraction must be a real number in \[0, 1\]"),
        (lambda: qdata.load_digits(test_fraction=1e-300), r"^test_fraction must leave at least one image"),
        (lambda: qdata.load_digits(seed=None), r"^seed must be an integer in \[0, "),
        (lambda: qdata.load_digits(seed=-1), r"^seed must be an integer in \[0, "),
        (lambda: qdata.load_dataset(np.array(["digits"])), r"^name must be one of"),
        (lambda: qdata.load_mnist(served, download=np.array([True])), r"^download must be True or False"),
        (lambda: qdata.load_mnist(served, download=False, checksums={}), r"^checksums must be a dict of the MD5"),
        (lambda: qdata.load_mnist(served, download=False, checksums=sums, sha256={"a": "0" * 64}),
         r"^sha256 must be a dict of the SHA-256"),
        (lambda: qdata.load_mnist(served, download=False, checksums=sums, mirrors="http://x/"),
         r"^mirrors must be a sequence"),
        (lambda: qdata.load_mnist(1.5, download=False, checksums=sums), r"^root must be a path"),
        (lambda: qdata.load_mnist(served / "train-labels-idx1-ubyte.gz", download=False, checksums=sums),
         r"^root must be a folder"),
        (lambda: qdata.load_mnist(served, download=False, checksums=sums, normalize=None),
         r"^normalize must be one of"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle):
            call()
    assert qdata.cache_dir("grid", "sub") == qdata.cache_dir() / "grid" / "sub"


def test_missing_files_are_value_and_file_not_found_errors(tmp_path):
    """A path that names no file: a ValueError naming the argument, still a FileNotFoundError; nothing created."""
    for call in (lambda: qdata.read_idx(tmp_path / "missing.gz"),
                 lambda: qdata.load_mnist(tmp_path / "nowhere", download=False)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert isinstance(info.value, ValueError)
    assert not (tmp_path / "nowhere").exists()
