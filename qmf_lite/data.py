"""Data for the training chapters: scikit-learn's digits offline, MNIST for readers online.

Both come back as a :class:`Dataset` of float32 tensors, standardised per feature with the
training set's statistics (so that the first layer sees inputs of unit variance).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import struct
import urllib.request

import numpy as np

__all__ = ["Dataset", "load_digits", "load_mnist", "read_idx", "load_dataset", "cache_dir", "MNIST_FILES"]

#: the four MNIST files (LeCun et al. 1998) and their MD5 checksums
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def cache_dir(*parts):
    """``$QMF_LITE_CACHE`` or ``~/.cache/qmf_lite``, with ``parts`` appended (created)."""
    root = pathlib.Path(os.environ.get("QMF_LITE_CACHE", pathlib.Path.home() / ".cache" / "qmf_lite"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclasses.dataclass
class Dataset:
    """Train and test splits as torch tensors: ``x`` float32 (n, features), ``y`` int64 (n,)."""

    name: str
    x_train: "torch.Tensor"  # noqa: F821
    y_train: "torch.Tensor"  # noqa: F821
    x_test: "torch.Tensor"  # noqa: F821
    y_test: "torch.Tensor"  # noqa: F821
    n_classes: int

    @property
    def n_features(self):
        return self.x_train.shape[1]

    def to(self, device):
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")})


def _standardised(name, x_train, y_train, x_test, y_test, n_classes):
    import torch

    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels stay 0
    f = lambda x: torch.as_tensor(((x - mean) / std).astype(np.float32))  # noqa: E731
    return Dataset(name, f(x_train), torch.as_tensor(y_train.astype(np.int64)), f(x_test),
                   torch.as_tensor(y_test.astype(np.int64)), n_classes)


def load_digits(test_fraction=0.25, seed=0):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), split at random; no download."""
    from sklearn.datasets import load_digits as _load

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    bunch = _load()
    x, y = bunch.data.astype(np.float64), bunch.target
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return _standardised("digits", x[train], y[train], x[test], y[test], 10)


def read_idx(path):
    """Parse an IDX file (optionally gzipped) into a numpy array: magic, dims, big-endian data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape).astype(dtypes[code].replace(">", "="))


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(name, md5, root, mirrors, progress):
    target = root / name
    if target.exists() and _md5(target) == md5:
        return target
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
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
        except OSError as exc:
            errors.append(f"{url}: {exc}")
            continue
        if _md5(tmp) != md5:
            errors.append(f"{url}: checksum mismatch")
            tmp.unlink()
            continue
        shutil.move(tmp, target)
        return target
    raise OSError(f"could not download {name}:\n" + "\n".join(errors))


def load_mnist(root=None, download=True, mirrors=MNIST_MIRRORS, checksums=MNIST_FILES, progress=True):
    """MNIST (60000 + 10000 images of 28x28 pixels, flattened), downloaded once and cached.

    Parameters
    ----------
    root : path, optional
        Where the four ``.gz`` files live; default :func:`cache_dir` ``/ "mnist"``.
    download : bool
        Fetch missing files from ``mirrors`` (tried in order), each verified against ``checksums``.
    """
    root = cache_dir("mnist") if root is None else pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, md5 in checksums.items():
        path = root / name
        if download:
            path = _download(name, md5, root, mirrors, progress)
        elif not path.exists():
            raise FileNotFoundError(f"{path} is missing; call load_mnist(download=True)")
        paths[name] = path
    x_train = read_idx(paths["train-images-idx3-ubyte.gz"])
    y_train = read_idx(paths["train-labels-idx1-ubyte.gz"])
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])
    x_test = x_test.reshape(len(x_test), -1)
    x_train = x_train.reshape(len(x_train), -1)
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
    return _standardised("mnist", x_train.astype(np.float64), y_train, x_test.astype(np.float64), y_test, 10)


def load_dataset(name, **kwargs):
    """``"digits"`` (offline) or ``"mnist"`` (downloads once)."""
    loaders = {"digits": load_digits, "mnist": load_mnist}
    if name not in loaders:
        raise ValueError(f"dataset must be one of {sorted(loaders)}, got {name!r}")
    return loaders[name](**kwargs)
