"""The user's own data from an array file: vectors (N x D) or images (N x C x H x W, or N x H x W).

`data.file` names a .npy, .npz, .csv or .parquet file. A .npz may hold arrays named train, val and test;
a single array is split in file order, 80% / 10% / 10%. A .csv holds one example per row of numbers (a
header row of names is skipped). A .parquet file (read with pyarrow: `pip install 'aezoo[parquet]'`)
holds one example per row: numeric columns are the example's values, or a single column of equal-length
(nested) lists holds the whole example (lists of lists for sequences or images). Images stored as uint8
are read as pixels (0..255); other values are kept as they are, and the model's likelihood is chosen
to fit them (`ModelConfig.fit_to_data`).

Every file is decoded inside `files.reading`, so a damaged one ends in one line. A .npy file (and each
member of a .npz, which is a zip of .npy files) is read header first: an array of Python objects (a
pickle) is refused without being loaded, and so is a shape that declares more bytes than the file (or
member) holds, before anything is allocated; the data are then read in chunks, so memory follows the
bytes that are really there. Loading never executes code.

Data larger than memory (`data.memmap`): a .npy file, and each uncompressed member of a .npz (np.savez
stores them so), holding uint8 or float32 in C order is memory-mapped instead of read, after the same
header checks, when it holds MEMMAP_AUTO_BYTES or more (`auto`) or always (`on`). The mapping is
copy-on-write, so nothing ever writes to the user's file; the operating system reads the pages a batch
gathers and drops them again under memory pressure. uint8 pixels stay uint8 on disk and are scaled per
batch (`base.prepare`), float32 stays float32; other types (float64, integers), Fortran order, .csv,
.parquet and compressed members are read into memory (`on` refuses them with the reason).
"""

from __future__ import annotations

import math
import mmap
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from ..config import DataConfig
from ..errors import AezooError
from ..files import Chunked, Unreadable, read_at_most, reading
from .base import SPLITS, Dataset, register_dataset

MEMMAP_AUTO_BYTES = 256 << 20  # data.memmap=auto maps an array of this many bytes or more
MAPPABLE = (np.dtype(np.uint8), np.dtype(np.float32))  # stored as training reads them: no conversion per batch
CHECK_BYTES = 64 << 20  # arrays are checked for NaN a chunk at a time, so a mapped array is never read whole


def _check(array, path: Path, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
        raise AezooError(f"{path}: {what} must hold numbers, not {getattr(array, 'dtype', type(array))}")
    if array.ndim not in ndims:
        raise AezooError(
            f"{path}: {what} has shape {array.shape}; expected {' or '.join(f'{n} dimensions' for n in ndims)}"
        )
    if array.size == 0:
        raise AezooError(f"{path}: {what} is empty (shape {array.shape})")
    if array.dtype.kind == "f":
        rows = max(1, CHECK_BYTES // (array.nbytes // len(array) or 1))
        for i in range(0, len(array), rows):
            chunk = array[i : i + rows]
            if not np.isfinite(chunk).all():
                raise AezooError(f"{path}: {what} holds NaN or infinite values")
            if array.dtype.itemsize > 4 and np.abs(chunk).max() > np.finfo(np.float32).max:
                raise AezooError(f"{path}: {what} holds values beyond the range of float32, in which it is trained")
    return array


def _read_csv(path: Path) -> np.ndarray:
    with reading(path, "not a readable CSV file"):
        text = path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
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
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused by _check
        return np.asarray(rows, dtype=np.float32)


def _read_parquet(path: Path) -> np.ndarray:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise AezooError(f"{path}: reading .parquet files needs pyarrow: pip install 'aezoo[parquet]'") from None
    with reading(path, "not a readable Parquet file", also=(pa.ArrowException,)):
        return _parquet_array(path, pq.read_table(path))


def _parquet_array(path: Path, table) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if table.num_columns == 1 and any(is_list(table.schema.types[0]) for is_list in nested):
        column, shape = table.column(0).combine_chunks(), [table.num_rows]
        while any(is_list(column.type) for is_list in nested):  # peel one level of lists at a time
            lengths = pc.list_value_length(column)
            if lengths.null_count or len(set(lengths.to_pylist())) > 1:
                raise AezooError(
                    f"{path}: the lists in column '{table.column_names[0]}' differ in length or are missing"
                )
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
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused by _check
        if shape is not None:
            return columns[0].to_numpy(zero_copy_only=False).astype(np.float32).reshape(shape)
        return np.column_stack([c.to_numpy().astype(np.float32) for c in columns])


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip


def read_npy(f, size: int, label: str) -> np.ndarray:
    """The array of a .npy stream `f` of `size` bytes, header first: object dtypes (pickles), negative
    dimensions and shapes declaring more bytes than follow the header are refused (Unreadable) before
    anything is allocated; the data are read in chunks (`read_at_most`), so a stream that holds fewer
    bytes than `size` claims costs only what it holds."""
    shape, fortran, dtype = _npy_header(f, size, label)
    count, declared = math.prod(shape), math.prod(shape) * dtype.itemsize
    data = read_at_most(f, declared)
    if len(data) < declared:
        raise Unreadable(f"{label} ends after {len(data):,} of its {declared:,} bytes")
    array = np.frombuffer(data, dtype, count) if count else np.empty(0, dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _npy_header(f, size: int, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy stream `f` of `size` bytes, left at the first byte of
    the data; refuses (Unreadable) what `read_npy` refuses before it reads the data."""
    version = npy_format.read_magic(f)
    if version == (1, 0):  # numpy reads the length the header gives itself: Chunked, so a lie costs nothing
        shape, fortran, dtype = npy_format.read_array_header_1_0(Chunked(f))
    elif version == (2, 0):
        shape, fortran, dtype = npy_format.read_array_header_2_0(Chunked(f))
    else:  # 3.0 only spells structured dtypes with non-latin-1 field names, which hold no plain numbers
        raise Unreadable(f"{label} is in .npy format version {version[0]}.{version[1]}, which is not read here")
    if dtype.hasobject:
        raise Unreadable(f"{label} holds Python objects (a pickle), which are never loaded")
    if any(n < 0 for n in shape):
        raise Unreadable(f"{label} declares a negative dimension in shape {shape}")
    count = math.prod(shape)
    declared, there = count * dtype.itemsize, size - f.tell()
    if declared > there:
        raise Unreadable(
            f"{label} declares shape {shape} of {dtype} ({declared:,} bytes) "
            f"but {max(there, 0):,} bytes follow its header"
        )
    return shape, fortran, dtype


def _map_npy(path: Path, start: int, size: int, label: str, memmap: str) -> np.ndarray | None:
    """The .npy data at byte `start` of `path` (`size` bytes from there), memory-mapped copy-on-write,
    or None where `memmap` leaves it to be read (auto: under MEMMAP_AUTO_BYTES, or not mappable)."""
    with open(path, "rb") as f:
        f.seek(start)
        shape, fortran, dtype = _npy_header(f, start + size, label)  # it counts from the file's start
        offset = f.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if offset - start + nbytes != size:
        raise Unreadable(f"{label} has bytes after its data")
    why = (f"it holds {dtype}, not uint8 or float32" if dtype not in MAPPABLE or not dtype.isnative
           else "it is stored in Fortran order" if fortran and len(shape) > 1
           else "it is empty" if nbytes == 0 else None)
    if memmap == "on" and why:
        raise AezooError(f"{path}: data.memmap=on cannot map {label}: {why}")
    if why or (memmap == "auto" and nbytes < MEMMAP_AUTO_BYTES):
        return None
    array = np.memmap(path, dtype, mode="c", offset=offset, shape=shape)
    # Batches gather rows at random: the kernel's readahead would read pages no batch asked for and, on a
    # file larger than memory, evict the ones that will be asked for (bench/memmap.py measured the thrashing)
    array._mmap.madvise(mmap.MADV_RANDOM)  # np.memmap keeps its mmap.mmap there
    return array


def _stored_member_start(path: Path, info: zipfile.ZipInfo) -> int | None:
    """Where a .npz member's bytes begin in the file, if it is stored as they are (not compressed or
    encrypted), else None: after its local header, whose name and extra field lengths are its own."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise Unreadable(f"member {info.filename!r} has no local header at byte {info.header_offset:,}")
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _npz_members(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The members by array name (np.savez names them NAME.npy), each claiming no more compressed bytes
    than the archive has."""
    size = os.path.getsize(path)
    members = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        if info.compress_size > size:
            raise Unreadable(
                f"member {info.filename!r} claims {info.compress_size:,} bytes; the whole file has {size:,}"
            )
        members[info.filename.removesuffix(".npy")] = info
    return members


def _npz_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as member:
        array = read_npy(member, info.file_size, f"array {info.filename.removesuffix('.npy')!r}")
        if member.read(1):  # read to the member's end, where zipfile checks the CRC
            raise Unreadable(f"array {info.filename.removesuffix('.npy')!r} has bytes after its data")
    return array


def read_array_file(path: Path, names: tuple[str, ...] = SPLITS,
                    memmap: str = "off") -> dict[str, np.ndarray] | np.ndarray:
    """The contents of a .npy or .npz file (told apart by their first bytes, as numpy does): the array
    of a .npy, or of a .npz with one array; a .npz holding all of `names` gives those arrays. With
    `memmap` on or auto, arrays are memory-mapped (np.memmap) as the module docstring says."""
    with reading(path, "not a readable .npy/.npz array file"):
        with open(path, "rb") as f:
            head = f.read(6)
            if head == NPY_MAGIC:
                size = os.fstat(f.fileno()).st_size
                mapped = None if memmap == "off" else _map_npy(path, 0, size, "the array", memmap)
                if mapped is not None:
                    return mapped
                f.seek(0)
                array = read_npy(f, size, "the array")
                if f.read(1):
                    raise Unreadable("bytes follow the array's data")
                return array
        if head[:4] not in ZIP_MAGICS:
            kind = "a pickle, which is never loaded" if head[:1] == b"\x80" else f"it starts with {head!r}"
            raise Unreadable(f"neither a .npy nor a .npz file ({kind})")
        with zipfile.ZipFile(path) as zf:
            members = _npz_members(path, zf)
            if set(names) <= set(members):
                return {s: _npz_member(path, zf, members[s], memmap) for s in names}
            if len(members) != 1:
                raise AezooError(
                    f"{path}: expected arrays named {', '.join(names[:-1])} and {names[-1]}, "
                    f"or a single array; found {sorted(members)}"
                )
            return _npz_member(path, zf, next(iter(members.values())), memmap)


def _npz_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, memmap: str) -> np.ndarray:
    """A .npz member's array: mapped where `memmap` and the member allow (see `_map_npy`), else read."""
    label = f"array {info.filename.removesuffix('.npy')!r}"
    if memmap != "off":
        start = _stored_member_start(path, info)
        if start is None and memmap == "on":
            raise AezooError(f"{path}: data.memmap=on cannot map {label}: it is compressed (save with np.savez)")
        mapped = None if start is None else _map_npy(path, start, info.file_size, label, memmap)
        if mapped is not None:
            return mapped
    return _npz_array(zf, info)


def read_splits(path: Path, ndims: tuple[int, ...], what: str = "the array",
                memmap: str = "off") -> dict[str, np.ndarray | torch.Tensor]:
    """train/val/test arrays from a .npy, .npz, .csv or .parquet file, each with one of `ndims` dimensions.
    With `memmap` on or auto, large .npy/.npz arrays come mapped (np.memmap); a single mapped array is
    split as one tensor, so that its train and validation splits are neighbouring views of one storage."""
    if not path.is_file():
        raise AezooError(f"data.file: no such file: {path}")
    if path.suffix in (".csv", ".parquet"):
        if memmap == "on":
            raise AezooError(f"{path}: data.memmap=on maps .npy and .npz files; a {path.suffix} file is read whole")
        array = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
        return split_in_order(_check(array, path, what, ndims), path)
    loaded = read_array_file(path, memmap=memmap)
    if isinstance(loaded, dict):
        x = {s: _check(loaded[s], path, f"array '{s}'", ndims) for s in SPLITS}
        if len({v.shape[1:] for v in x.values()}) != 1:
            raise AezooError(
                f"{path}: train, val and test must have the same shape after N; got "
                + ", ".join(f"{s} {v.shape}" for s, v in x.items())
            )
        return x
    loaded = _check(loaded, path, what, ndims)
    return split_in_order(torch.from_numpy(loaded) if isinstance(loaded, np.memmap) else loaded, path)


def split_in_order(a: np.ndarray | torch.Tensor, path: Path) -> dict[str, np.ndarray | torch.Tensor]:
    """train / val / test: the first 80%, the next 10%, the last 10% (at least one example each)."""
    n = len(a)
    if n < 3:
        raise AezooError(f"{path}: {n} examples; at least 3 are needed for train, validation and test")
    n_val = n_test = max(1, n // 10)
    n_train = n - n_val - n_test
    return {"train": a[:n_train], "val": a[n_train : n_train + n_val], "test": a[n_train + n_val :]}


def where(cfg: DataConfig) -> str:
    return f"the array file {cfg.file}" if cfg.file else "nowhere: set data.file to a .npy, .npz, .csv or .parquet file"


@register_dataset(
    "arrays", "your own vectors (N x D) or images (N x [C x] H x W) from .npy/.npz/.csv/.parquet (data.file)", where
)
def load_arrays(cfg: DataConfig) -> Dataset:
    if not cfg.file:
        raise AezooError("dataset arrays reads a .npy, .npz, .csv or .parquet file: set data.file=PATH")
    path = Path(cfg.file).expanduser()
    splits = read_splits(path, (2, 3, 4), memmap=cfg.memmap)
    mapped = {k for k, v in splits.items() if isinstance(v, np.memmap | torch.Tensor)}  # uint8 or float32
    pixels = str(next(iter(splits.values())).dtype) in ("uint8", "torch.uint8")
    x = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(
        v if k in mapped else np.ascontiguousarray(v if pixels else v.astype(np.float32))) for k, v in splits.items()}
    ndim = next(iter(x.values())).ndim
    if ndim == 3:  # N x H x W grey images
        x = {k: v[:, None] for k, v in x.items()}
    return Dataset(name="arrays", x=x, scale=255.0 if pixels else 1.0, kind="vector" if ndim == 2 else "image",
                   mapped=mapped)
