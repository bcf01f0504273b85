"""CIFAR-10 (Krizhevsky 2009) from a local `cifar-10-batches-py` folder (the "python version").

The folder holds six pickles, `data_batch_1` ... `data_batch_5` (50,000 training images) and
`test_batch` (10,000), each a dict with `data`, a uint8 array (N, 3072) of the red, green and blue
32x32 planes row by row, and `labels`, a list of N classes in 0..9. They are read with an unpickler
that admits numpy arrays and nothing else (plain dicts, lists, strings and bytes need no admission,
except Python 3's protocol-2 spellings of bytes, `_codecs.encode(text, "latin1")` and `bytes()`), so a
file naming any other global is refused. Splits: the first 45,000 training images train, the
last 5,000 (a tenth) validate, the 10,000 test images test. Pixels stay uint8 (N, 3, 32, 32).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from ..files import reading
from .base import Dataset, register_dataset
from .mnist import _NumpyOnlyUnpickler

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FOLDER = "cifar-10-batches-py"


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3's pickle protocol 2 writes for bytes: `_codecs.encode(text, "latin1")`; no other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """What Python 3's pickle protocol 2 writes for b"": `bytes()`, called with nothing."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


class _CifarUnpickler(_NumpyOnlyUnpickler):
    """Numpy arrays (the MNIST reader's rule), plus bytes as a protocol-2 pickle made by Python 3 spells them."""

    ALLOWED = {**_NumpyOnlyUnpickler.ALLOWED, ("_codecs", "encode"): _latin1_bytes,
               ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}


def find_folder(cfg: DataConfig) -> Path:
    """data.dir itself, or its `cifar-10-batches-py` subfolder."""
    if not cfg.dir:
        raise AezooError(f"cifar10: set data.dir to a {FOLDER} folder (the python version of CIFAR-10)")
    base = Path(cfg.dir).expanduser()
    for folder in (base, base / FOLDER):
        if (folder / TEST_FILE).is_file():
            return folder
    if not base.is_dir():
        raise AezooError(f"data.dir: no such folder: {base}")
    raise AezooError(f"data.dir={base}: no {TEST_FILE} here or in {base / FOLDER}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one pickle, checked."""
    if not path.is_file():
        raise AezooError(f"{path}: missing (CIFAR-10 has data_batch_1..5 and test_batch)")
    with reading(path, "not a readable CIFAR-10 batch"), open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise AezooError(f"{path}: expected a dict with data and labels")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise AezooError(f"{path}: 'data' must be a uint8 array (N, 3072)")
    # a flat list (or array) of one int per image: a list of lists, which a pickle can share
    # over and over at the cost of a few bytes, is never expanded
    flat = isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu"
    flat = flat or (isinstance(labels, list) and all(type(v) is int for v in labels))
    if not flat or len(labels) != len(data):
        raise AezooError(f"{path}: need a list of one integer label per image ({len(data)} images)")
    labels = np.array([min(max(int(v), -1), 10) for v in labels], dtype=np.int64)  # clamped: no int overflows
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise AezooError(f"{path}: need one label in 0..9 per image ({len(data)} images)")
    return data.reshape(len(data), 3, 32, 32), labels


def where(cfg: DataConfig) -> str:
    return f"{FOLDER} pickles in {cfg.dir}" if cfg.dir else f"nowhere: set data.dir to a {FOLDER} folder"


@register_dataset("cifar10", "32x32 colour images in 10 classes, 45k/5k/10k, labels (local folder)", where)
def load_cifar10(cfg: DataConfig) -> Dataset:
    folder = find_folder(cfg)
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_images, test_labels = read_batch(folder / TEST_FILE)
    cut = len(images) - len(images) // 10
    if cut == 0 or cut == len(images):
        raise AezooError(f"{folder}: {len(images)} training images are too few to hold out a tenth for validation")
    x = {"train": images[:cut], "val": images[cut:], "test": test_images}
    y = {"train": labels[:cut], "val": labels[cut:], "test": test_labels}
    return Dataset(
        name="cifar10",
        x={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()},
        labels={k: torch.from_numpy(v) for k, v in y.items()},
        scale=255.0,
    )
