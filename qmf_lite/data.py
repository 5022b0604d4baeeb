"""Data for the training chapters: scikit-learn's digits offline, MNIST for readers online.

Both come back as a :class:`Dataset` of float32 tensors, by default standardised per feature
with the training set's statistics (so that the first layer sees inputs of unit variance);
``load_mnist(normalize="bgs19")`` uses the paper's global normalisation instead.

MNIST is downloaded once into :func:`qmf_lite.cache_dir` ``/ "mnist"``: each file goes to a temporary
name in that folder, its MD5 checksum is verified, and only then is it renamed into place, so
that an interrupted or corrupted download never leaves a file that a later run trusts.
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

from ._cache import CacheWarning
from ._validate import MissingFileError, check_bool, check_choice, check_path, check_real_in, check_seed, check_sequence

__all__ = ["Dataset", "load_digits", "load_mnist", "read_idx", "load_dataset", "cache_dir", "MNIST_FILES",
           "BGS19_NORMALIZATION", "CacheWarning"]

#: the four MNIST files (LeCun et al. 1998) and their MD5 checksums
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: the paper's MNIST normalisation: pixels scaled to [0, 1], then (x - 0.1307) / 0.3081 (torchvision's)
BGS19_NORMALIZATION = (0.1307, 0.3081)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def cache_dir(*parts):
    """``$QMF_LITE_CACHE`` or ``~/.cache/qmf_lite``, with ``parts`` appended (created).

    Each part must be a string or ``os.PathLike`` (a folder name or a relative path).
    """
    for part in parts:
        if isinstance(part, (bytes, bool)) or not isinstance(part, (str, os.PathLike)):
            raise ValueError(f"parts must be strings or os.PathLike (folder names), got {part!r}")
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
    """Parse an IDX file (optionally gzipped) into a numpy array: magic, dims, big-endian data.

    ``path`` must name an existing file (a string or ``os.PathLike``); a missing one raises a
    ``ValueError`` that is also a ``FileNotFoundError``, and a file that is not IDX a ``ValueError``.
    """
    path = check_path(path, "path", kind="file")
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
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


def _download(name, md5, root, mirrors, progress):
    """``root / name``, downloaded if missing or corrupt: fetched to a temporary file in ``root``,
    checked against ``md5``, then renamed into place."""
    target = root / name
    if target.exists():
        got = _md5(target)
        if got == md5:
            return target
        warnings.warn(f"{target} is corrupt (md5 {got}, expected {md5}); downloading it again", CacheWarning,
                      stacklevel=3)
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
            got = _md5(tmp)
            if got != md5:
                errors.append(f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download was discarded")
                continue
            os.replace(tmp, target)
            return target
        except OSError as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise OSError(f"could not download {name} into {target}:\n" + "\n".join(errors))


def load_mnist(root=None, download=True, mirrors=MNIST_MIRRORS, checksums=MNIST_FILES, progress=True,
               normalize="feature"):
    """MNIST (60000 + 10000 images of 28x28 pixels, flattened), downloaded once and cached.

    Parameters
    ----------
    root : path, optional
        Where the four ``.gz`` files live; default :func:`cache_dir` ``/ "mnist"``.
    download : bool
        Fetch missing (or corrupt) files from ``mirrors`` (tried in order); each download goes to
        a temporary file, is verified against ``checksums`` (MD5) and is then renamed into place.
        With ``download=False`` a missing file is a ``FileNotFoundError`` and a file whose
        checksum is wrong a ``ValueError``, both naming the file.
    mirrors : sequence of str
        Base URLs, tried in order.
    checksums : dict
        The MD5 (32 hexadecimal digits) of each of the four files of ``MNIST_FILES``, by name.
    progress : bool
    normalize : ``"feature"`` or ``"bgs19"``
        Standardise each pixel with the training set's statistics, or the paper's global
        ``(x / 255 - 0.1307) / 0.3081`` (:data:`qmf_lite.data.BGS19_NORMALIZATION`).
    """
    normalize = check_choice(normalize, "normalize", ("feature", "bgs19"))
    download = check_bool(download, "download")
    progress = check_bool(progress, "progress")
    mirrors = check_sequence(mirrors, "mirrors")
    if not all(isinstance(m, str) and m for m in mirrors):
        raise ValueError(f"mirrors must be a sequence of base URLs (non-empty strings), got {mirrors!r}")
    if not isinstance(checksums, dict) or set(checksums) != set(MNIST_FILES) or not all(
            isinstance(v, str) and len(v) == 32 and all(c in "0123456789abcdef" for c in v.lower())
            for v in checksums.values()):
        raise ValueError(f"checksums must be a dict of the MD5 (32 hexadecimal digits) of each of the files "
                         f"{sorted(MNIST_FILES)}, got {checksums!r:.200}")
    root = cache_dir("mnist") if root is None else check_path(root, "root")
    if root.exists() and not root.is_dir():
        raise ValueError(f"root must be a folder, got the file {str(root)!r}")
    if download:
        root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, md5 in checksums.items():
        path = root / name
        if download:
            path = _download(name, md5, root, mirrors, progress)
        elif not path.exists():
            raise MissingFileError(f"root {str(root)!r} must hold {name}: {path} is missing; call "
                                   "load_mnist(download=True)")
        elif _md5(path) != md5:
            raise ValueError(f"{path} is corrupt (md5 {_md5(path)}, expected {md5}); delete it or call "
                             "load_mnist(download=True)")
        paths[name] = path
    x_train = read_idx(paths["train-images-idx3-ubyte.gz"])
    y_train = read_idx(paths["train-labels-idx1-ubyte.gz"])
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])
    x_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    x_train = x_train.reshape(len(x_train), -1).astype(np.float64)
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
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
