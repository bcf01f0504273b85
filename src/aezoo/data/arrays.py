"""The user's own data from an array file: vectors (N x D) or images (N x C x H x W, or N x H x W).

`data.file` names a .npy, .npz, .csv or .parquet file. A .npz may hold arrays named train, val and test;
a single array is split in file order, 80% / 10% / 10%. A .csv holds one example per row of numbers (a
header row of names is skipped). A .parquet file (read with pyarrow: `pip install 'aezoo[parquet]'`)
holds one example per row: numeric columns are the example's values, or a single column of equal-length
(nested) lists holds the whole example (lists of lists for sequences or images). Images stored as uint8 are read as pixels (0..255); floats must lie in [0, 1]
for the Bernoulli likelihoods, which is checked by the models that need it, not here. Files are read
with `allow_pickle=False`: loading never executes code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from .base import SPLITS, Dataset, register_dataset


def _check(array, path: Path, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
        raise AezooError(f"{path}: {what} must hold numbers, not {getattr(array, 'dtype', type(array))}")
    if array.ndim not in ndims:
        raise AezooError(f"{path}: {what} has shape {array.shape}; expected {' or '.join(f'{n} dimensions' for n in ndims)}")
    if array.size == 0:
        raise AezooError(f"{path}: {what} is empty (shape {array.shape})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise AezooError(f"{path}: {what} holds NaN or infinite values")
    return array


def _read_csv(path: Path) -> np.ndarray:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append([float(v) for v in line.split(",")])
        except ValueError:
            if i == 0:
                continue  # a header of column names
            raise AezooError(f"{path}: line {i + 1} is not a list of numbers: {line[:60]!r}") from None
    if len({len(r) for r in rows}) > 1:
        raise AezooError(f"{path}: rows have different numbers of columns")
    return np.asarray(rows, dtype=np.float32)


def _read_parquet(path: Path) -> np.ndarray:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise AezooError(f"{path}: reading .parquet files needs pyarrow: pip install 'aezoo[parquet]'") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise AezooError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if table.num_columns == 1 and any(is_list(table.schema.types[0]) for is_list in nested):
        column, shape = table.column(0).combine_chunks(), [table.num_rows]
        while any(is_list(column.type) for is_list in nested):  # peel one level of lists at a time
            lengths = pc.list_value_length(column)
            if lengths.null_count or len(set(lengths.to_pylist())) > 1:
                raise AezooError(f"{path}: the lists in column '{table.column_names[0]}' differ in length or are missing")
            shape.append(lengths[0].as_py() if len(lengths) else 0)
            column = column.flatten()
        columns = [column]
    else:
        columns, shape = [table.column(i) for i in range(table.num_columns)], None
    for name, column in zip(table.column_names, columns):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise AezooError(f"{path}: column '{name}' holds {column.type}, not numbers")
        if column.null_count:
            raise AezooError(f"{path}: column '{name}' has missing values")
    if shape is not None:
        return columns[0].to_numpy(zero_copy_only=False).astype(np.float32).reshape(shape)
    return np.column_stack([c.to_numpy().astype(np.float32) for c in columns])


def read_splits(path: Path, ndims: tuple[int, ...], what: str = "the array") -> dict[str, np.ndarray]:
    """train/val/test arrays from a .npy, .npz, .csv or .parquet file, each with one of `ndims` dimensions."""
    if not path.is_file():
        raise AezooError(f"data.file: no such file: {path}")
    if path.suffix in (".csv", ".parquet"):
        array = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
        return split_in_order(_check(array, path, what, ndims), path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise AezooError(f"{path}: not a readable .npy/.npz array file: {str(e).splitlines()[0]}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = set(loaded.files)
            if set(SPLITS) <= names:
                x = {s: _check(loaded[s], path, f"array '{s}'", ndims) for s in SPLITS}
                if len({v.shape[1:] for v in x.values()}) != 1:
                    raise AezooError(f"{path}: train, val and test must have the same shape after N; got "
                                     + ", ".join(f"{s} {v.shape}" for s, v in x.items()))
                return x
            if len(names) != 1:
                raise AezooError(f"{path}: expected arrays named train, val and test, or a single array; found {sorted(names)}")
            loaded = loaded[names.pop()]
    return split_in_order(_check(loaded, path, what, ndims), path)


def split_in_order(a: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    """train / val / test: the first 80%, the next 10%, the last 10% (at least one example each)."""
    n = len(a)
    if n < 3:
        raise AezooError(f"{path}: {n} examples; at least 3 are needed for train, validation and test")
    n_val = n_test = max(1, n // 10)
    n_train = n - n_val - n_test
    return {"train": a[:n_train], "val": a[n_train : n_train + n_val], "test": a[n_train + n_val :]}


def where(cfg: DataConfig) -> str:
    return f"the array file {cfg.file}" if cfg.file else "nowhere: set data.file to a .npy, .npz, .csv or .parquet file"


@register_dataset("arrays", "your own vectors (N x D) or images (N x [C x] H x W) from .npy/.npz/.csv/.parquet (data.file)", where)
def load_arrays(cfg: DataConfig) -> Dataset:
    if not cfg.file:
        raise AezooError("dataset arrays reads a .npy, .npz, .csv or .parquet file: set data.file=PATH")
    path = Path(cfg.file).expanduser()
    splits = read_splits(path, (2, 3, 4))
    ndim = next(iter(splits.values())).ndim
    if ndim == 3:  # N x H x W grey images
        splits = {k: v[:, None] for k, v in splits.items()}
    pixels = next(iter(splits.values())).dtype == np.uint8
    x = {k: torch.from_numpy(np.ascontiguousarray(v if pixels else v.astype(np.float32))) for k, v in splits.items()}
    return Dataset(name="arrays", x=x, scale=255.0 if pixels else 1.0,
                   kind="vector" if ndim == 2 else "image")
