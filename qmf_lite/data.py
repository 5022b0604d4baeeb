"""Data for the training chapters: scikit-learn's digits offline, MNIST for readers online.

Both come back as a :class:`Dataset` of float32 tensors, by default standardised per feature
with the training set's statistics (so that the first layer sees inputs of unit variance);
``load_mnist(normalize="bgs19")`` uses the paper's global normalisation instead.

MNIST is read from a folder (default :func:`qmf_lite.cache_dir` ``/ "mnist"``), published ``.gz``,
recompressed or uncompressed, each file verified by the MD5 of the published ``.gz`` or by the
SHA-256 of its decompressed contents; a missing file is downloaded once into that folder: it
goes to a temporary name, is verified, and only then is renamed into place, so that an
interrupted or corrupted download never leaves a file that a later run trusts.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import struct
import tempfile
import urllib.request
import warnings

import numpy as np

from . import _cache
from ._cache import CacheWarning
from ._validate import MissingFileError, check_bool, check_choice, check_path, check_real_in, check_seed, check_sequence

__all__ = ["Dataset", "load_digits", "load_mnist", "read_idx", "load_dataset", "cache_dir", "MNIST_FILES",
           "MNIST_SHA256", "BGS19_NORMALIZATION", "CacheWarning"]

#: the four MNIST files (LeCun et al. 1998) as published, and the MD5 checksums of the published ``.gz`` files
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: SHA-256 of the decompressed contents of the four MNIST files (the IDX bytes), by uncompressed name: they
#: verify any copy, recompressed or not (the MD5s above hold only for the published ``.gz`` bytes)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
#: the paper's MNIST normalisation: pixels scaled to [0, 1], then (x - 0.1307) / 0.3081 (torchvision's)
BGS19_NORMALIZATION = (0.1307, 0.3081)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def cache_dir(*parts):
    """``$QMF_LITE_CACHE`` or ``~/.cache/qmf_lite``, with ``parts`` appended (created).

    Each part must be a string or ``os.PathLike``: a folder name or a relative path (an absolute
    one would leave the cache).
    """
    for part in parts:
        if isinstance(part, (bytes, bool)) or not isinstance(part, (str, os.PathLike)):
            raise ValueError(f"parts must be strings or os.PathLike (folder names), got {part!r}")
        text = os.fspath(part)
        if isinstance(text, bytes) or "\x00" in text or pathlib.Path(text).is_absolute():
            raise ValueError(f"parts must be relative paths without NUL characters (folder names), got {part!r}")
    root = pathlib.Path(os.environ.get("QMF_LITE_CACHE", pathlib.Path.home() / ".cache" / "qmf_lite"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclasses.dataclass
class Dataset:
    """Train and test splits as torch tensors: ``x`` float32 (n, features), ``y`` int64 (n,).

    ``normalization`` says how the inputs were scaled: ``"feature"`` (each feature standardised
    with the training set's mean and standard deviation) or ``"bgs19"`` (MNIST's global
    ``(x / 255 - 0.1307) / 0.3081``).
    """

    name: str
    x_train: "torch.Tensor"  # noqa: F821
    y_train: "torch.Tensor"  # noqa: F821
    x_test: "torch.Tensor"  # noqa: F821
    y_test: "torch.Tensor"  # noqa: F821
    n_classes: int
    normalization: str = "feature"

    @property
    def n_features(self):
        return self.x_train.shape[1]

    def to(self, device):
        """A copy with the four tensors on ``device`` (a ``torch.device`` or its name)."""
        import torch

        device = torch.device(device)
        moved = dataclasses.replace(
            self, **{k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")})
        if getattr(self, "_fingerprint", None) is not None:
            moved._fingerprint = self._fingerprint  # same values, same key
        return moved

    def fingerprint(self):
        """A short hash of the four tensors (part of the training cache's key); computed once."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.blake2b(digest_size=10)
            h.update(f"{self.name}|{self.n_classes}|{self.normalization}".encode())
            for t in (self.x_train, self.y_train, self.x_test, self.y_test):
                arr = t.detach().cpu().contiguous().numpy()
                h.update(f"{arr.dtype}{arr.shape}".encode())
                h.update(arr.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def _standardised(name, x_train, y_train, x_test, y_test, n_classes):
    import torch

    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels stay 0
    f = lambda x: torch.as_tensor(((x - mean) / std).astype(np.float32))  # noqa: E731
    return Dataset(name, f(x_train), torch.as_tensor(y_train.astype(np.int64)), f(x_test),
                   torch.as_tensor(y_test.astype(np.int64)), n_classes)


def load_digits(test_fraction=0.25, seed=0):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), split at random; no download.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Share of the images in the test split; each split must keep at least one image
        (``round(test_fraction * 1797)`` in [1, 1796]).
    seed : int in [0, 2^63 - 1]
        Seed of the random split.
    """
    from sklearn.datasets import load_digits as _load

    test_fraction = check_real_in(test_fraction, "test_fraction", 0.0, 1.0)
    seed = check_seed(seed)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    bunch = _load()
    x, y = bunch.data.astype(np.float64), bunch.target
    n_test = int(round(test_fraction * len(y)))
    if not 1 <= n_test <= len(y) - 1:
        raise ValueError(f"test_fraction must leave at least one image in each split: it must lie in "
                         f"[{0.5 / len(y):.3g}, {1 - 0.5 / len(y):.6g}), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:n_test], perm[n_test:]
    return _standardised("digits", x[train], y[train], x[test], y[test], 10)


def read_idx(path):
    """Parse an IDX file (gzipped or not: recognised by gzip's magic bytes) into a numpy array: magic,
    dims, big-endian data.

    ``path`` must name an existing file (a string or ``os.PathLike``); a missing one raises a
    ``ValueError`` that is also a ``FileNotFoundError``, and a file that is not IDX a ``ValueError``.
    """
    return _read_idx(check_path(path, "path", kind="file"))


def _read_idx(path):
    """:func:`read_idx` of a ``pathlib.Path`` that names an existing file."""
    try:
        with _open_maybe_gzip(path) as f:
            data = f.read()
    except (OSError, EOFError) as exc:   # a damaged gzip stream
        raise ValueError(f"path {str(path)!r} must be a readable IDX file ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"path {str(path)!r} is not an IDX file (it must start with two zero bytes)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise ValueError(f"path {str(path)!r}: unknown IDX data type 0x{code:02x} (it must be one of "
                         f"{sorted(hex(c) for c in dtypes)})")
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"path {str(path)!r}: the header must hold {ndim} dimensions, the file is too short")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    itemsize = np.dtype(dtypes[code]).itemsize
    if (len(data) - 4 - 4 * ndim) % itemsize:
        raise ValueError(f"path {str(path)!r}: the data must be a whole number of {itemsize}-byte values")
    arr = np.frombuffer(data, dtype=dtypes[code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"path {str(path)!r}: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape).astype(dtypes[code].replace(">", "="))


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _contents_sha256(path):
    """SHA-256 of the file's contents, decompressed first when it is a gzip stream (``None``: a damaged stream)."""
    h = hashlib.sha256()
    try:
        with _open_maybe_gzip(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError):
        return None
    return h.hexdigest()


def _open_maybe_gzip(path):
    """``path`` opened for reading, through gzip when it starts with gzip's magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _verify(path, md5, sha256):
    """``None`` when ``path`` holds the expected file, else the reason it does not.

    Accepted: the file's own MD5 is ``md5`` (the published ``.gz``), or the SHA-256 of its
    decompressed contents (of the file itself when it is not gzipped) is ``sha256``.
    """
    got_md5 = _md5(path)
    if got_md5 == md5:
        return None
    got_sha = _contents_sha256(path)
    if got_sha == sha256:
        return None
    return (f"md5 {got_md5}, expected {md5}; SHA-256 of its contents "
            f"{got_sha if got_sha else '(a damaged gzip stream)'}, expected {sha256}")


def _download(name, md5, sha256, root, mirrors, progress):
    """``root / name``, downloaded: fetched to a temporary file in ``root``, verified (:func:`_verify`),
    then renamed into place."""
    target = root / name
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
        tmp = pathlib.Path(tmp)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0)
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=name)
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
                if bar is not None:
                    bar.close()
                out.flush()
                os.fsync(out.fileno())
            reason = _verify(tmp, md5, sha256)
            if reason is not None:
                errors.append(f"{url}: checksum mismatch ({reason}); the download was discarded")
                continue
            os.chmod(tmp, _cache.FILE_MODE)
            os.replace(tmp, target)
            return target
        except (OSError, ValueError) as exc:     # ValueError: a malformed URL
            errors.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise OSError(f"could not download {name} into {target}:\n" + "\n".join(errors))


def _check_hex_dict(value, name, length, what):
    keys = MNIST_FILES if length == 32 else MNIST_SHA256
    if not isinstance(value, dict) or set(value) != set(keys) or not all(
            isinstance(v, str) and len(v) == length and all(c in "0123456789abcdef" for c in v.lower())
            for v in value.values()):
        raise ValueError(f"{name} must be a dict of the {what} ({length} hexadecimal digits) of each of the files "
                         f"{sorted(keys)}, got {value!r:.200}")
    return {k: v.lower() for k, v in value.items()}


def load_mnist(root=None, download=True, mirrors=MNIST_MIRRORS, checksums=MNIST_FILES, progress=True,
               normalize="feature", sha256=MNIST_SHA256):
    """MNIST (60000 + 10000 images of 28x28 pixels, flattened), from a folder or downloaded once.

    Each of the four files may be the published ``.gz`` (``train-images-idx3-ubyte.gz``, ...), a
    recompressed ``.gz`` or the uncompressed IDX file (``train-images-idx3-ubyte``, ...). A file is
    accepted when its MD5 is the published ``.gz``'s (``checksums``) or when the SHA-256 of its
    decompressed contents is the published one (``sha256``), so copies made without internet
    verify too. Nothing is downloaded when every file is present and verified.

    Parameters
    ----------
    root : path, optional
        The folder of the files; default :func:`cache_dir` ``/ "mnist"`` (``$QMF_LITE_CACHE/mnist``).
    download : bool
        Fetch a file that is missing (or fails verification) from ``mirrors`` (tried in order);
        each download goes to a temporary file, is verified, and is then renamed into place.
        With ``download=False`` a missing file is a ``FileNotFoundError`` and a file that fails
        verification a ``ValueError``, both naming the file.
    mirrors : sequence of str
        Base URLs, tried in order.
    checksums : dict
        The MD5 (32 hexadecimal digits) of each published ``.gz`` of ``MNIST_FILES``, by name.
    progress : bool
    normalize : ``"feature"`` or ``"bgs19"``
        Standardise each pixel with the training set's statistics, or the paper's global
        ``(x / 255 - 0.1307) / 0.3081`` (:data:`qmf_lite.data.BGS19_NORMALIZATION`).
    sha256 : dict
        The SHA-256 (64 hexadecimal digits) of the decompressed contents of each file, by the
        uncompressed name (:data:`qmf_lite.data.MNIST_SHA256`).
    """
    normalize = check_choice(normalize, "normalize", ("feature", "bgs19"))
    download = check_bool(download, "download")
    progress = check_bool(progress, "progress")
    mirrors = check_sequence(mirrors, "mirrors")
    if not all(isinstance(m, str) and m for m in mirrors):
        raise ValueError(f"mirrors must be a sequence of base URLs (non-empty strings), got {mirrors!r}")
    checksums = _check_hex_dict(checksums, "checksums", 32, "MD5")
    sha256 = _check_hex_dict(sha256, "sha256", 64, "SHA-256 of the decompressed contents")
    root = cache_dir("mnist") if root is None else check_path(root, "root")
    if root.exists() and not root.is_dir():
        raise ValueError(f"root must be a folder, got the file {str(root)!r}")
    paths = {}
    for gz_name, md5 in checksums.items():
        name = gz_name[:-3]
        found, bad = None, []
        for path in (root / gz_name, root / name):
            if path.is_file():
                reason = _verify(path, md5, sha256[name])
                if reason is None:
                    found = path
                    break
                bad.append((path, reason))
        if found is None and not download:
            if bad:
                path, reason = bad[0]
                raise ValueError(f"{path} is corrupt ({reason}); delete it or call load_mnist(download=True)")
            raise MissingFileError(f"root {str(root)!r} must hold {gz_name} (or the uncompressed {name}): "
                                   f"{root / gz_name} is missing; call load_mnist(download=True)")
        if found is None:
            for path, reason in bad:
                warnings.warn(f"{path} is corrupt ({reason}); downloading {gz_name} again", CacheWarning,
                              stacklevel=2)
            root.mkdir(parents=True, exist_ok=True)
            found = _download(gz_name, md5, sha256[name], root, mirrors, progress)
        paths[name] = found
    x_train = _read_idx(paths["train-images-idx3-ubyte"])
    y_train = _read_idx(paths["train-labels-idx1-ubyte"])
    x_test = _read_idx(paths["t10k-images-idx3-ubyte"])
    x_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    x_train = x_train.reshape(len(x_train), -1).astype(np.float64)
    y_test = _read_idx(paths["t10k-labels-idx1-ubyte"])
    if normalize == "feature":
        return _standardised("mnist", x_train, y_train, x_test, y_test, 10)
    import torch

    mean, std = BGS19_NORMALIZATION
    f = lambda x: torch.as_tensor(((x / 255.0 - mean) / std).astype(np.float32))  # noqa: E731
    return Dataset("mnist", f(x_train), torch.as_tensor(y_train.astype(np.int64)), f(x_test),
                   torch.as_tensor(y_test.astype(np.int64)), 10, "bgs19")


def load_dataset(name, **kwargs):
    """``"digits"`` (offline) or ``"mnist"`` (downloads once); ``kwargs`` go to :func:`load_digits` or
    :func:`load_mnist`."""
    loaders = {"digits": load_digits, "mnist": load_mnist}
    name = check_choice(name, "name", tuple(sorted(loaders)))
    return loaders[name](**kwargs)
