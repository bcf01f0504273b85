"""Every file aezoo reads, fuzzed (issue 20): one clean line for any bad file, never a traceback, never code run.

Each reader gets valid files of its format, then damaged ones: cut short, bytes flipped, overwritten,
inserted or appended, emptied; headers that declare other shapes, dtypes or huge sizes; Python
objects (pickles whose __reduce__ would create a marker file); a folder where a file is expected. A
case must load (and, undamaged, load exactly what was written) or be refused with an AezooError of
one line; any other exception fails the test, a marker file that appears fails it, and (measured
with tracemalloc where asked) a reader may not allocate much beyond the bytes it was given.

Most cases call the readers directly; `test_cli_*` take representative ones through `aezoo` (exit
status 2, one line on stderr, no run folder). The cases are functions of a seed (`case_<reader>`), so
that bench/fuzz_readers.py runs the same generators at length and tallies them (TALLY).
AEZOO_FUZZ_EXAMPLES sets the number of examples per property test, AEZOO_FUZZ_MEASURE=1 measures every
case's memory.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import io
import json
import os
import pickle
import random
import re
import struct
import tempfile
import tracemalloc
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aezoo import registry
from aezoo.config import DataConfig, read_config_file, run_tree
from aezoo.data import load_dataset
from aezoo.data.base import SPLITS
from aezoo.data.cifar10 import read_batch
from aezoo.data.mnist import read_bundled, read_idx
from aezoo.errors import AezooError
from aezoo.files import load_state, load_weights, save_weights
from aezoo.runfolder import read_metrics
from conftest import run_cli

EXAMPLES = int(os.environ.get("AEZOO_FUZZ_EXAMPLES", "40"))
MEASURE = os.environ.get("AEZOO_FUZZ_MEASURE") == "1"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,  # the same cases each run
               suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)

# reader -> Counter(tried, loaded, refused, other, ran_code, over_memory); and the largest memory growth seen
TALLY: dict[str, Counter] = defaultdict(Counter)
PEAK: dict[str, dict] = defaultdict(lambda: {"bytes": 0, "file_bytes": 0})
MEMORY_FLOOR = 2 << 20  # what any reader may allocate whatever the file: one chunk of `read_at_most` (1 MiB)
MEMORY_PER_BYTE = 64  # and per byte of the file: parsed text and pictures take several times their bytes


class Marker:
    """Pickles as a call that creates `path`: if a reader ever ran a pickle, the file would appear."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def file_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def attempt(reader: str, read, path: Path, marker: Path | None = None, measure: bool = MEASURE):
    """read() must return (loaded) or raise an AezooError of one line (refused); nothing else, nothing
    printed (the error is the one line), no code run (`marker` never appears) and, measured, no memory
    growth far beyond the bytes of `path`."""
    tally, printed = TALLY[reader], io.StringIO()
    size = file_bytes(path)
    if measure:
        started = tracemalloc.is_tracing()
        if not started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
            result, outcome = read(), "loaded"
    except AezooError as e:
        result, outcome = e, "refused"
    except BaseException:
        tally["tried"] += 1
        tally["other"] += 1
        raise
    finally:
        if measure:
            grown = tracemalloc.get_traced_memory()[1] - before
            if not started:
                tracemalloc.stop()
            if grown > PEAK[reader]["bytes"]:
                PEAK[reader].update(bytes=grown, file_bytes=size)
    tally["tried"] += 1
    tally[outcome] += 1
    if outcome == "refused":
        assert str(result) and "\n" not in str(result), repr(str(result))
    assert not printed.getvalue(), f"{reader} printed {printed.getvalue()!r}"
    if marker is not None and marker.exists():
        tally["ran_code"] += 1
        raise AssertionError(f"{reader}: reading ran the pickle's code ({marker} appeared)")
    if measure and grown > MEMORY_FLOOR + MEMORY_PER_BYTE * size:
        tally["over_memory"] += 1
        raise AssertionError(f"{reader}: {grown:,} bytes allocated for a file of {size:,}")
    return result


# --- damage -----------------------------------------------------------------------------------------
def mutate(data: bytes, rnd: random.Random) -> bytes:
    """One damage, or none: a cut, flipped bytes (often in the header), a slice overwritten, bytes
    inserted or appended, or nothing left."""
    kind = rnd.choice(("keep", "cut", "flip", "flip", "overwrite", "insert", "append", "empty"))
    n = len(data)
    if kind == "keep" or (n == 0 and kind not in ("insert", "append")):
        return data
    if kind == "cut":
        return data[: rnd.randrange(n)]
    where = lambda: rnd.randrange(min(n, 256)) if rnd.random() < 0.5 else rnd.randrange(n)  # noqa: E731
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            b[where()] ^= rnd.randint(1, 255)
        return bytes(b)
    if kind == "overwrite":
        i, k = where(), rnd.randint(1, 16)
        return data[:i] + rnd.randbytes(k) + data[i + k :]
    if kind == "insert":
        i = rnd.randint(0, n)
        return data[:i] + rnd.randbytes(rnd.randint(1, 32)) + data[i:]
    if kind == "append":
        return data + rnd.randbytes(rnd.randint(1, 64))
    return b""


def maybe_mutate(data: bytes, rnd: random.Random, p: float = 0.6) -> bytes:
    return mutate(data, rnd) if rnd.random() < p else data


def write(path: Path, data: bytes | None) -> Path:
    """The bytes at `path`, or a folder there when `data` is None (a folder where a file is expected)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    return path


HUGE_SHAPES = [(10**9, 10**4), (2**62, 2), (2**31, 2**31, 2**31), (10**6, 1000), (2**64,)]


# --- .npy and .npz -------------------------------------------------------------------------------------
def random_array(rnd: random.Random, ndims=(2, 3, 4), least=1) -> np.ndarray:
    """N x ... numbers of a random dtype and order, each size after N at least `least`."""
    ndim = rnd.choice(ndims)
    shape = (rnd.randint(3, 12), *(rnd.randint(least, 4) for _ in range(ndim - 1)))
    dtype = rnd.choice(["<f4", "<f8", ">f8", "<f2", "|u1", "<i4", "<u2"])
    g = np.random.default_rng(rnd.getrandbits(32))
    a = g.integers(0, 256, shape) if dtype in ("|u1", "<i4", "<u2") else g.random(shape)
    a = a.astype(dtype)
    return np.asfortranarray(a) if rnd.random() < 0.3 else a


def npy_header(descr: str, shape, fortran=False, version=(1, 0)) -> bytes:
    """A .npy header with `descr` spelled as Python source (e.g. "'<f4'" or "[('a', '|O')]")."""
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
    return npy_raw_header(text, version)


def npy_raw_header(text: str, version=(1, 0)) -> bytes:
    length = 4 if version == (1, 0) else 6
    pad = -(6 + 2 + length + len(text) + 1) % 64
    h = (text + " " * pad + "\n").encode("latin1")
    size = struct.pack("<H", len(h)) if version == (1, 0) else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes(version) + size + h


def npy_save(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, **kw)
    return buf.getvalue()


def npy_variant(rnd: random.Random, a: np.ndarray, marker: Path) -> tuple[str, bytes | None]:
    """(kind, bytes) of a .npy holding `a` ("valid") or a damaged or hostile one."""
    body = np.ascontiguousarray(a).tobytes()
    descr = repr(a.dtype.str)
    kind = rnd.choice(["valid", "valid", "valid2", "huge", "negative", "shape", "dtype", "objects", "pickle",
                       "version", "header", "code_in_header", "folder"])
    if kind == "valid":
        return kind, npy_save(a)
    if kind == "valid2":
        buf = io.BytesIO()
        np.lib.format.write_array(buf, a, version=(2, 0))
        return kind, buf.getvalue()
    if kind == "huge":
        return kind, npy_header(descr, rnd.choice(HUGE_SHAPES)) + body
    if kind == "negative":
        return kind, npy_header(descr, (-1, *a.shape[1:])) + body
    if kind == "shape":
        shape = list(a.shape)
        shape[rnd.randrange(len(shape))] += rnd.choice([-2, -1, 1, 5])
        return kind, npy_header(descr, [max(n, 0) for n in shape]) + body
    if kind == "dtype":
        other = rnd.choice(["'|O'", "'<U3'", "'|V8'", "'|b1'", "'<c8'", "'<M8[s]'", "[('a', '<f4')]",
                            "[('a', '|O'), ('b', '<f8')]", "'|S0'", "'<f16'", "'>u8'", "('<f4', (2,))", "'bogus'"])
        return kind, npy_header(other, a.shape, version=rnd.choice([(1, 0), (2, 0)])) + body
    if kind == "objects":
        objects = np.empty(len(a), dtype=object)
        objects[:] = [Marker(marker) for _ in range(len(a))]
        return kind, npy_save(objects, allow_pickle=True)
    if kind == "pickle":
        return kind, pickle.dumps([Marker(marker)], protocol=rnd.choice([2, 4, 5]))
    if kind == "version":
        return kind, npy_header(descr, a.shape, version=rnd.choice([(3, 0), (9, 9), (0, 0)])) + body
    if kind == "header":
        size = rnd.choice([0, 1, 0xFFFF])
        return kind, b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + b"{'descr': '<f4'" + body
    if kind == "code_in_header":  # numpy parses the header as a literal, never as code
        shape = f"(open({str(marker)!r}, 'w'),)"
        return kind, npy_raw_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}") + body
    return kind, None


def check_arrays_dataset(ds, a: np.ndarray | None) -> None:
    """A loaded dataset is well formed; with `a` (an undamaged file), it holds exactly `a`."""
    assert set(ds.x) >= set(SPLITS)
    for v in ds.x.values():
        assert v.dtype in (torch.uint8, torch.float32) and torch.isfinite(v.float()).all()
    if a is not None:
        expect = a if a.dtype == np.uint8 else a.astype(np.float32)
        got = torch.cat([ds.x[s] for s in SPLITS]).numpy()
        assert np.array_equal(got.reshape(expect.shape), expect)


def case_npy(seed: int, reader: str = "npy", dataset: str = "arrays", ndims=(2, 3, 4)) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a = random_array(rnd, ndims, least=2 if dataset == "sequences" else 1)  # sequences: T >= 2 steps
        kind, data = npy_variant(rnd, a, tmp / "ran")
        damaged = data is not None and rnd.random() < 0.5
        path = write(tmp / "d.npy", mutate(data, rnd) if damaged else data)
        ds = attempt(reader, lambda: load_dataset(DataConfig(name=dataset, file=str(path))), path, tmp / "ran")
        if kind.startswith("valid") and not damaged:
            assert not isinstance(ds, AezooError), ds
        if not isinstance(ds, AezooError):
            check_arrays_dataset(ds, a if kind.startswith("valid") and not damaged and dataset == "arrays" else None)


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def patch_zip_sizes(data: bytes, rnd: random.Random) -> bytes:
    """A member's compressed or uncompressed size, in its local or central header, made huge or zero."""
    b = bytearray(data)
    spots = [(m.start(), off) for sig, offs in ((b"PK\x03\x04", (18, 22)), (b"PK\x01\x02", (20, 24)))
             for m in re.finditer(sig, data) for off in offs]
    if spots:
        start, off = rnd.choice(spots)
        b[start + off : start + off + 4] = struct.pack("<I", rnd.choice([0, 1, 0xFFFFFFFE, 0x7FFFFFFF, len(data) * 50]))
    return bytes(b)


def case_npz(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a = random_array(rnd)
        n = len(a)
        splits = {"train": a[: n - 2], "val": a[n - 2 : n - 1], "test": a[n - 1 :]}
        members = {f"{k}.npy": npy_save(v) for k, v in splits.items()} if rnd.random() < 0.7 else {"x.npy": npy_save(a)}
        kind = rnd.choice(["valid", "valid", "member", "member", "sizes", "extra", "method", "empty", "folder"])
        compression = rnd.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
        if kind == "member":  # one member's .npy damaged or hostile, as a .npy file would be
            name = rnd.choice(list(members))
            _, bad = npy_variant(rnd, a, tmp / "ran")
            members[name] = maybe_mutate(bad if bad is not None else members[name], rnd)
        elif kind == "extra":
            name = rnd.choice(["extra.npy", "notes.txt", "sub/", "train.npy"])
            members[name] = rnd.choice([npy_save(a), b"", b"hello"])
        data = zip_bytes(members, compression)
        if kind == "sizes":
            data = patch_zip_sizes(data, rnd)
        elif kind == "method":  # an unknown compression method or the encrypted flag in every header
            b = bytearray(data)
            for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
                for m in re.finditer(sig, data):
                    if rnd.random() < 0.5:
                        b[m.start() + off] |= 1
                    else:
                        b[m.start() + off + 2 : m.start() + off + 4] = struct.pack("<H", 99)
            data = bytes(b)
        elif kind == "empty":
            data = zip_bytes({})
        damaged = kind != "folder" and rnd.random() < 0.4
        path = write(tmp / "d.npz", None if kind == "folder" else (mutate(data, rnd) if damaged else data))
        ds = attempt("npz", lambda: load_dataset(DataConfig(name="arrays", file=str(path))), path, tmp / "ran")
        if kind == "valid" and not damaged:
            assert not isinstance(ds, AezooError), ds
        if not isinstance(ds, AezooError):
            check_arrays_dataset(ds, a if kind == "valid" and not damaged else None)


# --- .csv and .parquet ---------------------------------------------------------------------------------
def case_csv(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = np.random.default_rng(rnd.getrandbits(32)).random((rnd.randint(3, 12), rnd.randint(1, 5))).round(4)
        text = ("a,b,c,d,e"[: 2 * rows.shape[1] - 1] + "\n" if rnd.random() < 0.5 else "")
        text += "\n".join(",".join(map(str, r)) for r in rows) + "\n"
        kind = rnd.choice(["valid", "valid", "value", "ragged", "binary", "pickle", "utf16", "long", "folder"])
        data = text.encode()
        if kind == "value":
            lines = text.splitlines()
            i = rnd.randrange(len(lines))
            junk = rnd.choice(["nan", "1e999", "-inf", "abc", "", "0x10", "1_0", "\x00"])
            lines[i] = lines[i].replace(lines[i].split(",")[0], junk, 1)
            data = "\n".join(lines).encode()
        elif kind == "ragged":
            data = (text + "1,2,3,4,5,6,7\n").encode()
        elif kind == "binary":
            data = rnd.randbytes(rnd.randint(1, 300))
        elif kind == "pickle":
            data = pickle.dumps(Marker(tmp / "ran"))
        elif kind == "utf16":
            data = text.encode("utf-16")
        elif kind == "long":
            data = ("9" * rnd.choice([400, 5000]) + "," + text).encode()
        damaged = kind != "folder" and rnd.random() < 0.4
        path = write(tmp / "d.csv", None if kind == "folder" else (mutate(data, rnd) if damaged else data))
        ds = attempt("csv", lambda: load_dataset(DataConfig(name="arrays", file=str(path))), path, tmp / "ran")
        if kind == "valid" and not damaged:
            assert not isinstance(ds, AezooError), ds
            assert np.allclose(torch.cat([ds.x[s] for s in SPLITS]).numpy(), rows.astype(np.float32))
        elif not isinstance(ds, AezooError):
            check_arrays_dataset(ds, None)


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def case_parquet(seed: int) -> None:
    import pyarrow as pa

    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = np.random.default_rng(rnd.getrandbits(32))
        n = rnd.randint(3, 12)
        kind = rnd.choice(["columns", "lists", "strings", "nulls", "pickled_type", "bytes", "folder"])
        if kind == "lists":
            table = pa.table({"x": g.random((n, 3, 2)).astype(np.float32).tolist()})
        elif kind == "strings":
            table = pa.table({"a": [str(v) for v in range(n)]})
        elif kind == "nulls":
            table = pa.table({"a": [1.0, None] + [2.0] * (n - 2)})
        elif kind == "pickled_type":  # an extension type whose metadata is a pickle: never unpickled
            meta = {b"ARROW:extension:name": b"arrow.py_extension_type",
                    b"ARROW:extension:metadata": pickle.dumps(Marker(tmp / "ran"))}
            schema = pa.schema([pa.field("a", pa.float64(), metadata=meta)])
            table = pa.table({"a": g.random(n)}, schema=schema)
        else:
            table = pa.table({"a": g.random(n), "b": g.integers(0, 9, n)})
        data = parquet_bytes(table) if kind != "bytes" else rnd.randbytes(rnd.randint(0, 200))
        damaged = kind != "folder" and rnd.random() < 0.5
        path = write(tmp / "d.parquet", None if kind == "folder" else (mutate(data, rnd) if damaged else data))
        ds = attempt("parquet", lambda: load_dataset(DataConfig(name="arrays", file=str(path))), path, tmp / "ran")
        if kind in ("columns", "lists") and not damaged:
            assert not isinstance(ds, AezooError), ds
        if not isinstance(ds, AezooError):
            check_arrays_dataset(ds, None)


# --- sequences (N x T x D arrays through the sequences dataset) -------------------------------------------
def case_sequences(seed: int) -> None:
    case_npy(seed, reader="sequences", dataset="sequences", ndims=(3,))


# --- images ----------------------------------------------------------------------------------------------
def png_with_size(w: int, h: int) -> bytes:
    """A PNG whose header (with a correct CRC) declares w x h pixels, over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def case_images(seed: int) -> None:
    from PIL import Image

    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pics"
        fmt, ext = rnd.choice([("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tif"), ("WEBP", "webp"),
                               ("JPEG", "jpg")])
        g = np.random.default_rng(rnd.getrandbits(32))
        grey = rnd.random() < 0.5
        files = []
        for i in range(10):
            pixels = g.integers(0, 256, (6, 5) if grey else (6, 5, 3), dtype=np.uint8)
            path = root / f"{i}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            files.append(path)
        kind = rnd.choice(["valid", "damaged", "damaged", "damaged", "huge", "pickle", "eps", "folder", "empty",
                           "root_is_file"])
        victim = rnd.choice(files)
        if kind == "damaged":
            victim.write_bytes(mutate(victim.read_bytes(), rnd))
        elif kind == "huge":
            size = rnd.choice([(10**5, 10**5), (2**31 - 1, 1), (30000, 30000), (4000, 4000), (2000, 100)])
            victim.write_bytes(png_with_size(*size))
        elif kind == "pickle":
            victim.write_bytes(pickle.dumps(Marker(Path(tmp) / "ran")))
        elif kind == "eps":  # a format Pillow would hand to Ghostscript, under an image's name
            ran = str(Path(tmp) / "ran").encode()
            victim.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 5 6\n(" + ran + b") (w) file\n")
        elif kind == "folder":
            victim.unlink()
            victim.mkdir()
        elif kind == "empty":
            victim.write_bytes(b"")
        target = victim if kind == "root_is_file" else root
        read = lambda: load_dataset(DataConfig(name="images", dir=str(target)))  # noqa: E731
        ds = attempt("images", read, target, Path(tmp) / "ran")
        if kind == "valid":
            assert not isinstance(ds, AezooError), ds
        if not isinstance(ds, AezooError):
            assert ds.x["train"].dtype == torch.uint8 and ds.shape[1:] == (6, 5)


# --- IDX (MNIST's own files), plain and gzip ---------------------------------------------------------------
def idx_bytes(dims, body: bytes, kind_byte=0x08) -> bytes:
    return bytes([0, 0, kind_byte, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body


def case_idx(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dims = rnd.choice([(rnd.randint(0, 20),), (rnd.randint(0, 20), 4, 4), (3, 2, 2, 2)])
        body = rnd.randbytes(int(np.prod(dims)))
        kind = rnd.choice(["valid", "valid", "huge", "ndim", "magic", "short", "long", "folder"])
        data = idx_bytes(dims, body)
        if kind == "huge":
            data = idx_bytes([rnd.choice([2**32 - 1, 10**9, 70000])] + list(dims[1:]), body)
        elif kind == "ndim":
            data = bytes([0, 0, 8, rnd.choice([0, 5, 255])]) + data[4:]
        elif kind == "magic":
            data = bytes([rnd.randrange(256), 0, rnd.choice([8, 9, 0x0D, 0x0E]), len(dims)]) + data[4:]
        elif kind == "short":
            data = data[: rnd.randint(0, len(data) - 1)] if len(data) > 4 + 4 * len(dims) else data[:3]
        elif kind == "long":
            data = data + rnd.randbytes(rnd.randint(1, 50))
        damaged = kind != "folder" and rnd.random() < 0.4
        data = None if kind == "folder" else (mutate(data, rnd) if damaged else data)
        zipped = rnd.random() < 0.5
        if zipped and data is not None:
            data = gzip.compress(data)
            if rnd.random() < 0.4:
                data, damaged = mutate(data, rnd), True
        path = write(tmp / ("d-idx.gz" if zipped else "d-idx"), data)
        got = attempt("idx", lambda: read_idx(path), path, None)
        if kind == "valid" and not damaged:
            assert isinstance(got, np.ndarray) and got.shape == dims and got.tobytes() == body, got
        if not isinstance(got, AezooError):
            assert got.dtype == np.uint8 and 1 <= got.ndim <= 4


# --- pickles: MNIST's bundled copy and CIFAR-10 batches ---------------------------------------------------------
def hostile_pickle(rnd: random.Random, marker: Path) -> bytes:
    """A pickle that runs code, calls numpy to allocate, builds a dtype of objects, fills an array with
    a lie about its size, or declares a string far longer than the file."""
    P2 = b"\x80\x02"
    choices = [
        pickle.dumps({b"data": Marker(marker), b"labels": [1]}, protocol=2),
        pickle.dumps((Marker(marker),) * 3, protocol=4),
        # _reconstruct(ndarray, (10^9,), 'b')
        P2 + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85U\x01b\x87R.",
        P2 + b"cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85\x85R.",  # ndarray((10^9,))
        P2 + b"cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85\x85\x81.",  # NEWOBJ ndarray
        P2 + b"cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R.",  # dtype('O8')
        # dtypes V8 and f8 whose state (BUILD) flags them as holding objects
        P2 + b"cnumpy\ndtype\nU\x02V8K\x00K\x01\x87R(K\x03U\x01|NNNK\x08K\x01K?tb.",
        P2 + b"cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb.",
        P2 + b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01J\x00\xca\x9a\x3b\x85"
        + b"cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R\x89U\x04abcdtb.",  # (10^9,) float32 from 4 bytes
        b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.",  # BINBYTES8 declaring a terabyte
        b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"abc.",  # BYTEARRAY8 declaring a terabyte
        b"\x80\x02cos\nsystem\nU\x05touch\x85R.",
        b"\x80\x02c__builtin__\neval\nU\x05print\x85R.",
    ]
    return rnd.choice(choices)


def mnist_pickle(rnd: random.Random, protocol: int) -> tuple[bytes, tuple]:
    g = np.random.default_rng(rnd.getrandbits(32))
    parts = tuple((g.random((n, 784)).astype(np.float32), g.integers(0, 10, n)) for n in (rnd.randint(0, 5), 2, 2))
    return pickle.dumps(parts, protocol=protocol), parts


def case_mnist_pickle(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, parts = mnist_pickle(rnd, rnd.choice([3, 4]))
        kind = rnd.choice(["valid", "damaged", "damaged", "hostile", "bomb", "wrong", "folder"])
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "hostile":
            data = hostile_pickle(rnd, tmp / "ran")
        elif kind == "bomb":  # labels as a list sharing one list over and over: a few bytes, 10^9 numbers
            inner = [[0] * 1000] * 1000
            data = pickle.dumps(((parts[0][0], [inner] * 1000), parts[1], parts[2]), protocol=4)
        elif kind == "wrong":
            wrong = rnd.choice([(1, 2, 3), ((np.zeros(3), np.zeros(3)),) * 3, {"a": 1}, [parts]])
            data = pickle.dumps(wrong, protocol=4)
        path = write(tmp / "mnist.pkl.gz", None if kind == "folder" else gzip.compress(data))
        if kind != "folder" and rnd.random() < 0.2:
            path.write_bytes(mutate(path.read_bytes(), rnd))
            kind = "damaged"
        got = attempt("mnist_pickle", lambda: read_bundled(path), path, tmp / "ran")
        if kind == "valid":
            assert not isinstance(got, AezooError), got
            x, y = got
            assert [len(x[s]) for s in ("train", "val", "test")] == [len(p[0]) for p in parts]
            assert all(np.array_equal(y[s], p[1]) for s, p in zip(("train", "val", "test"), parts))
        if not isinstance(got, AezooError):
            assert all(v.dtype == np.uint8 and v.shape[1:] == (28, 28) for v in got[0].values())


def cifar_batch(rnd: random.Random, n: int, protocol: int) -> tuple[bytes, dict]:
    g = np.random.default_rng(rnd.getrandbits(32))
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in g.integers(0, 10, n)],
             b"data": g.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    return pickle.dumps(batch, protocol=protocol), batch


def case_cifar(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, batch = cifar_batch(rnd, rnd.randint(0, 6), rnd.choice([2, 3, 4]))
        kind = rnd.choice(["valid", "damaged", "damaged", "damaged", "hostile", "bomb", "labels", "folder"])
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "hostile":
            data = hostile_pickle(rnd, tmp / "ran")
        elif kind == "bomb":
            inner = [[0] * 1000] * 1000
            data = pickle.dumps({**batch, b"labels": [inner] * 1000}, protocol=4)
        elif kind == "labels":
            n = len(batch[b"labels"])
            labels = rnd.choice([[10**30] * n, [True] * n, [1] * 99, "abc", None])
            data = pickle.dumps({**batch, b"labels": labels}, protocol=4)
        path = write(tmp / "data_batch_1", None if kind == "folder" else data)
        got = attempt("cifar10", lambda: read_batch(path), path, tmp / "ran")
        if kind == "valid":
            assert not isinstance(got, AezooError), got
            assert np.array_equal(got[0].reshape(len(got[0]), 3072), batch[b"data"])
            assert got[1].tolist() == batch[b"labels"]
        if not isinstance(got, AezooError):
            assert got[0].dtype == np.uint8 and got[0].shape[1:] == (3, 32, 32) and len(got[1]) == len(got[0])


# --- safetensors: weights and the codes dataset ------------------------------------------------------------------
def safetensors_header_edit(data: bytes, rnd: random.Random) -> bytes:
    """The JSON header with one tensor's shape, dtype or offsets changed (or the header's length)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = rnd.choice([k for k in header if k != "__metadata__"])
    field = rnd.choice(["shape", "dtype", "data_offsets", "length"])
    if field == "length":
        return struct.pack("<Q", rnd.choice([0, 10**12, 2**63, n + 1])) + data[8:]
    header[name][field] = {"shape": rnd.choice([[10**9, 10**4], [-1], [2**62], [0], "x"]),
                           "dtype": rnd.choice(["F64", "BOOL", "U8", "OBJECT", "F8_E4M3", 3]),
                           "data_offsets": rnd.choice([[0, 10**12], [5, 3], [0], [-4, 4]])}[field]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def case_safetensors(seed: int) -> None:
    from safetensors.torch import save as st_save

    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(rnd.getrandbits(32))
        tensors = {"w": torch.randn(rnd.randint(0, 5), 3, generator=g), "b": torch.arange(rnd.randint(1, 6))}
        data = st_save(tensors)
        kind = rnd.choice(["valid", "damaged", "damaged", "header", "header", "pickle", "folder"])
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "header":
            data = safetensors_header_edit(data, rnd)
        elif kind == "pickle":
            buf = io.BytesIO()
            torch.save({"w": Marker(tmp / "ran")}, buf)
            data = buf.getvalue()
        path = write(tmp / "model.safetensors", None if kind == "folder" else data)
        got = attempt("safetensors", lambda: load_weights(path), path, tmp / "ran")
        if kind == "valid":
            assert not isinstance(got, AezooError) and all(torch.equal(got[k], v) for k, v in tensors.items()), got


def case_codes(seed: int) -> None:
    from safetensors.torch import save as st_save

    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "prior"
        g = torch.Generator().manual_seed(rnd.getrandbits(32))
        rows = {s: torch.randint(0, 8, (n, 17), generator=g, dtype=torch.int32)
                for s, n in (("train", 6), ("val", 2), ("test", 2))}
        kind = rnd.choice(["valid", "damaged", "damaged", "header", "tables", "folder", "missing"])
        if kind == "tables":
            rows = rnd.choice([{"train": torch.rand(4, 17)}, {"train": torch.zeros(4, 0, dtype=torch.int32)},
                               {"train": torch.zeros(0, 17, dtype=torch.int64)}, {"val": rows["val"]},
                               {"train": torch.arange(5)}, {"train": -rows["train"] - 1},
                               {**rows, "x": torch.ones(2, 1, dtype=torch.int16)}])
        data = st_save(rows)
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "header":
            data = safetensors_header_edit(data, rnd)
        folder.mkdir()
        if kind != "missing":
            write(folder / "codes.safetensors", None if kind == "folder" else data)
        ds = attempt("codes", lambda: load_dataset(DataConfig(name="codes", dir=str(folder))), folder, None)
        if kind == "valid":
            assert not isinstance(ds, AezooError) and torch.equal(ds.x["train"], rows["train"]), ds
        if not isinstance(ds, AezooError):
            assert ds.kind == "codes"
            assert all(v.dim() == 2 and v.shape[1] >= 2 and (v >= 0).all() for v in ds.x.values())


# --- JSON and TOML: config.json of a run, config files, metrics.jsonl ---------------------------------------------
def junk_value(rnd: random.Random):
    return rnd.choice([None, True, -1, 0, 10**30, 1e308, float("nan"), "", "x" * 50, [], [1, "a"], {}, {"a": {"b": []}},
                       [[[[[]]]]], "\u00e9", 3.5])


def json_text_damage(text: str, rnd: random.Random) -> bytes:
    kind = rnd.choice(["deep", "digits", "utf8", "nan", "bytes"])
    if kind == "deep":
        depth = rnd.choice([1000, 100_000])
        return ("[" * depth + "]" * depth).encode()
    if kind == "digits":
        return ('{"model_name": "ae", "train": {"steps": ' + "9" * rnd.choice([400, 5000]) + "}}").encode()
    if kind == "utf8":
        return text.encode()[:20] + b"\xff\xfe\xc3" + text.encode()[20:]
    if kind == "nan":
        return text.replace("0.001", rnd.choice(["NaN", "Infinity", "-Infinity", "1e999"])).encode()
    return mutate(text.encode(), rnd)


def edit_tree(tree: dict, rnd: random.Random) -> dict:
    """One value anywhere in the tree (or a key) replaced by something of another type or range."""
    node = tree
    while isinstance(node, dict) and node and rnd.random() < 0.7:
        key = rnd.choice(list(node))
        if not isinstance(node[key], dict) or rnd.random() < 0.3:
            node[key] = junk_value(rnd)
            return tree
        node = node[key]
    if isinstance(node, dict):
        node[rnd.choice(["surprise", "model_name", "data", ""])] = junk_value(rnd)
    return tree


def ae_tree(model: str = "ae") -> dict:
    tree = {"data": {"name": "arrays", "file": "x.npy"}, "train": {"steps": 1, "lr": 0.001}}
    cfg = registry.entry(model).run_config(tree)
    return run_tree(cfg, registry.entry(model).section)


def case_config_json(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        tree = ae_tree()
        kind = rnd.choice(["valid", "edit", "edit", "text", "text", "folder"])
        data = json.dumps(tree).encode()
        if kind == "edit":
            data = json.dumps(edit_tree(tree, rnd)).encode()
        elif kind == "text":
            data = json_text_damage(json.dumps(tree, indent=2), rnd)
        write(folder / "config.json", None if kind == "folder" else data)
        got = attempt("config_json", lambda: registry.load_run_config(folder), folder / "config.json", None)
        if kind == "valid":
            assert not isinstance(got, AezooError), got


def case_config_file(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toml = rnd.random() < 0.5
        tree = {"model": {"hidden": [8, 4], "latent_dim": 3}, "train": {"lr": 0.001, "steps": 5}}
        text = ('model_name = "ae"\n[model]\nhidden = [8, 4]\nlatent_dim = 3\n[train]\nlr = 0.001\nsteps = 5\n'
                '[data]\nname = "arrays"\n' if toml else json.dumps(tree, indent=1))
        kind = rnd.choice(["valid", "damaged", "damaged", "text", "deep_toml", "folder"])
        data = text.encode()
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "text":
            data = json_text_damage(text, rnd)
        elif kind == "deep_toml":
            depth = rnd.choice([100, 1000, 100_000])
            arrays, tables = "a = " + "[" * depth + "]" * depth + "\n", "a = " + "{b = " * depth + "1" + "}" * depth
            data = rnd.choice([arrays, tables]).encode()
        path = write(tmp / ("c.toml" if toml else "c.json"), None if kind == "folder" else data)

        def read():
            tree = read_config_file(path)
            tree.pop("model_name", None)
            return registry.entry("ae").run_config(tree)

        got = attempt("config_file", read, path, None)
        if kind == "valid":
            assert not isinstance(got, AezooError), got


def case_resume_state(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(rnd.getrandbits(32))
        state = {"step": rnd.randint(0, 9), "model": {"w": torch.randn(3, 2, generator=g)},
                 "rng": [{"cpu": torch.get_rng_state()}], "log_sums": {"loss": 1.5}, "log_count": 2}
        kind = rnd.choice(["valid", "damaged", "damaged", "damaged", "sizes", "pickle", "legacy", "folder"])
        buf = io.BytesIO()
        torch.save({**state, "payload": Marker(tmp / "ran")} if kind == "pickle" else state, buf,
                   _use_new_zipfile_serialization=kind != "legacy")
        data = buf.getvalue()
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "sizes":
            data = patch_zip_sizes(data, rnd)
        path = write(tmp / "resume.pt", None if kind == "folder" else data)
        got = attempt("resume_state", lambda: load_state(path), path, tmp / "ran")
        if kind == "valid":
            assert not isinstance(got, AezooError) and torch.equal(got["model"]["w"], state["model"]["w"]), got
        if not isinstance(got, AezooError):
            assert isinstance(got, dict) and "step" in got


def case_metrics(seed: int) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = [{"step": i, "split": "train", "loss": 1.0 / (i + 1)} for i in range(1, rnd.randint(1, 8))]
        text = "".join(json.dumps(r) + "\n" for r in records)
        kind = rnd.choice(["valid", "damaged", "damaged", "line", "bytes", "folder"])
        data = text.encode()
        if kind == "damaged":
            data = mutate(data, rnd)
        elif kind == "line":
            data += rnd.choice([b"[" * 100_000 + b"\n", b'{"step": ' + b"9" * 5000 + b', "split": "train"}\n',
                                b"\xff\xfe\n", b'{"step": NaN, "split": "val"}\n', b"[1, 2]\n", b'"step"\n',
                                b"\x00" * 10])
        elif kind == "bytes":
            data = rnd.randbytes(rnd.randint(0, 400))
        path = write(tmp / "metrics.jsonl", None if kind == "folder" else data)
        got = attempt("metrics", lambda: read_metrics(path), path, None)
        if kind == "folder":
            assert isinstance(got, AezooError)
        else:  # any bytes are read: the records that parse, and never an error
            assert isinstance(got, list) and all(isinstance(r, dict) and "step" in r for r in got), got
        if kind == "valid":
            assert got == records


CASES = {
    "npy": case_npy, "npz": case_npz, "csv": case_csv, "parquet": case_parquet, "sequences": case_sequences,
    "images": case_images, "idx": case_idx, "mnist_pickle": case_mnist_pickle, "cifar10": case_cifar,
    "safetensors": case_safetensors, "codes": case_codes, "config_json": case_config_json,
    "config_file": case_config_file, "resume_state": case_resume_state, "metrics": case_metrics,
}


# --- the property tests: one per reader -----------------------------------------------------------------------
@pytest.mark.parametrize("reader", list(CASES))
def test_any_damage_loads_or_is_refused_in_one_line(reader):
    @FUZZ
    @given(SEEDS)
    def run(seed):
        CASES[reader](seed)

    run()


# --- sizes declared far beyond the file: refused before memory is allocated --------------------------------------
def _arrays(path):
    return load_dataset(DataConfig(name="arrays", file=str(path)))


BINBYTES8_64GB = b"\x80\x04\x8e" + struct.pack("<Q", 2**36) + b"abc."
LABELS_10E9 = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [[[0] * 1000] * 1000] * 1000}


@pytest.mark.parametrize("name, data, read", [
    ("huge.npy", npy_header("'<f4'", (10**9, 10**4)) + bytes(100), _arrays),
    ("huge.npy", npy_header("'<f8'", (10**6, 1000)) + bytes(100), _arrays),
    ("header.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{'descr'", _arrays),
    ("huge.npz", zip_bytes({"train.npy": npy_header("'<f4'", (10**5, 10**4)) + bytes(64)}, zipfile.ZIP_DEFLATED),
     _arrays),
    ("idx", idx_bytes((10**9, 28, 28), bytes(100)), read_idx),
    ("idx.gz", gzip.compress(idx_bytes((2**31, 28, 28), bytes(1000))), read_idx),
    ("x.pkl.gz", gzip.compress(BINBYTES8_64GB), read_bundled),
    ("data_batch_1", BINBYTES8_64GB, read_batch),
    ("data_batch_1", pickle.dumps(LABELS_10E9), read_batch),
], ids=["npy", "npy_8gb", "npy_header_2gb", "npz_member", "idx", "idx_gz", "mnist_pickle", "cifar_pickle",
        "cifar_labels"])
def test_sizes_declared_beyond_the_file_are_refused_before_allocating(tmp_path, name, data, read):
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(AezooError) as e:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value) and peak < 4 << 20, (str(e.value), peak)


# --- through the command line: exit status 2, one line, nothing written ---------------------------------------------
def _one_line_refusal(code: int, err: str, *expected: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("aezoo: error: "), (code, err)
    for e in expected:
        assert e in err, err


def _train(*args: str, out: Path) -> tuple[int, str, str]:
    return run_cli("train", *args, "--steps", "1", "--out", str(out), "--set", "train.progress=false")


def test_cli_the_npz_files_of_issue_20_end_in_one_line(tmp_path):
    np.savez(tmp_path / "objects.npz", a=np.array([Marker(tmp_path / "ran")] * 5, dtype=object))
    np.savez(tmp_path / "whole.npz", train=np.zeros((10, 4)), val=np.zeros((2, 4)), test=np.zeros((2, 4)))
    (tmp_path / "half.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:300])
    (tmp_path / "huge.npy").write_bytes(npy_header("'<f4'", (10**9, 10**4)) + bytes(100))
    for name, expected in (("objects.npz", "holds Python objects (a pickle), which are never loaded"),
                           ("half.npz", "not a readable .npy/.npz array file"),
                           ("huge.npy", "declares shape (1000000000, 10000)")):
        code, _, err = _train("ae", "--data", "arrays", "--set", f"data.file={tmp_path / name}", out=tmp_path / "r")
        _one_line_refusal(code, err, f"{tmp_path / name}: ", expected)
        assert not (tmp_path / "r").exists() and not (tmp_path / "ran").exists()


@settings(FUZZ, max_examples=max(4, EXAMPLES // 3))
@given(SEEDS)
def test_cli_damaged_array_files_end_in_one_line_or_train(seed):
    """Through `aezoo train`: exit status 0 (it trained) or 2 with one line and no run folder."""
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suffix = rnd.choice(["npy", "npz", "csv", "parquet"])
        a = random_array(rnd, (2,))
        data = {"npy": lambda: npy_variant(rnd, a, tmp / "ran")[1] or b"",
                "npz": lambda: zip_bytes({"x.npy": npy_variant(rnd, a, tmp / "ran")[1] or b""}),
                "csv": lambda: "\n".join(",".join(map(str, r)) for r in a.astype(float)).encode(),
                "parquet": lambda: parquet_bytes(__import__("pyarrow").table({"a": a[:, 0].astype(float)}))}[suffix]()
        path = write(tmp / f"d.{suffix}", mutate(data, rnd))
        code, _, err = _train("ae", "--data", "arrays", "--set", f"data.file={path}", "--set", "train.batch_size=2",
                              "--set", "model.hidden=[4]", "--set", "model.likelihood=gaussian", out=tmp / "r")
        assert code in (0, 2), (code, err)
        if code == 2:
            _one_line_refusal(code, err)
            assert not (tmp / "r").exists()
        assert not (tmp / "ran").exists()


def test_cli_sequences_images_idx_and_cifar_refusals(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "seq.npy", np.array([Marker(marker)] * 4, dtype=object), allow_pickle=True)
    code, _, err = _train("tdvae", "--data", "sequences", "--set", f"data.file={tmp_path / 'seq.npy'}",
                          out=tmp_path / "r")
    _one_line_refusal(code, err, "holds Python objects")

    pics = tmp_path / "pics"
    pics.mkdir()
    from PIL import Image
    for i in range(5):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(pics / f"{i}.png")
    (pics / "3.png").write_bytes(png_with_size(5000, 5000))
    code, _, err = _train("ae", "--data", "images", "--set", f"data.dir={pics}", out=tmp_path / "r")
    _one_line_refusal(code, err, "3.png: not a readable image", "5000x5000 pixels")

    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for prefix, n in (("train", 10_010), ("t10k", 20)):
        (mnist / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes((n, 28, 28), bytes(n * 784)))
        (mnist / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes((n,), bytes(n))))
    (mnist / "t10k-images-idx3-ubyte").write_bytes(idx_bytes((2**32 - 1, 28, 28), bytes(20 * 784)))
    code, _, err = _train("ae", "--set", f"data.dir={mnist}", out=tmp_path / "r")
    _one_line_refusal(code, err, "header promises (4294967295, 28, 28)")
    (mnist / "t10k-images-idx3-ubyte").unlink()
    (mnist / "t10k-images-idx3-ubyte").mkdir()  # a folder where the file is expected: not found, so refused
    code, _, err = _train("ae", "--set", f"data.dir={mnist}", out=tmp_path / "r")
    _one_line_refusal(code, err, "MNIST files missing")
    (mnist / "t10k-images-idx3-ubyte").rmdir()
    (mnist / "t10k-images-idx3-ubyte").write_bytes(idx_bytes((20, 28, 28), bytes(20 * 784)))
    gz = mnist / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-9])  # cut inside the gzip stream
    code, _, err = _train("ae", "--set", f"data.dir={mnist}", out=tmp_path / "r")
    _one_line_refusal(code, err, "train-labels-idx1-ubyte.gz")

    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    rnd = random.Random(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(cifar_batch(rnd, 4, 2)[0])
    (cifar / "data_batch_3").write_bytes(pickle.dumps({b"data": Marker(marker), b"labels": []}, protocol=2))
    code, _, err = _train("ae", "--data", "cifar10", "--set", f"data.dir={tmp_path}", out=tmp_path / "r")
    _one_line_refusal(code, err, "data_batch_3: not a readable CIFAR-10 batch", "refusing to load")
    assert not (tmp_path / "r").exists() and not marker.exists()


def _run_folder(folder: Path, model: str = "ae") -> Path:
    """A run folder holding only config.json: enough for the commands that refuse before the data."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(ae_tree(model)))
    return folder


def test_cli_run_files_config_weights_resume_codes_and_metrics(tmp_path):
    marker = tmp_path / "ran"
    run = _run_folder(tmp_path / "run")
    buf = io.BytesIO()
    torch.save({"step": 1, "payload": Marker(marker)}, buf)
    for data, expected in ((buf.getvalue(), "refused or unreadable resume state"),
                           (buf.getvalue()[:100], "refused or unreadable"),
                           (b"\x80\x02}q\x00.", "not the zip file that torch.save writes")):
        (run / "resume.pt").write_bytes(data)
        code, _, err = run_cli("resume", str(run))
        _one_line_refusal(code, err, expected)
    assert not marker.exists() and not (run / "metrics.jsonl").exists() and not (run / "model.safetensors").exists()

    vae = _run_folder(tmp_path / "vae", "vae")
    save_weights(vae / "model.safetensors", {"w": torch.zeros(3)})
    data = (vae / "model.safetensors").read_bytes()
    huge = data.replace(b"[3]", b"[1000000000,10000]")
    for bad in (data[:12], huge, b"\x00" * 8, b"\xff" * 8 + b"{}"):
        (vae / "model.safetensors").write_bytes(bad)
        code, _, err = run_cli("sample", str(vae), "--out", str(tmp_path / "s.png"))
        _one_line_refusal(code, err, "model.safetensors: corrupt or truncated safetensors file")
    assert not (tmp_path / "s.png").exists()

    for bad in (b"[" * 100_000, b'{"model_name": "ae", "train": {"steps": ' + b"9" * 5000 + b"}}", b"\xff\xfe{", b""):
        (run / "config.json").write_bytes(bad)
        for command in ("eval", "resume"):
            code, _, err = run_cli(command, str(run))
            _one_line_refusal(code, err, "config.json")

    for suffix, bad in ((".toml", b"a = " + b"[" * 100_000), (".json", b"[" * 100_000), (".toml", b"\xff\xfe"),
                        (".json", b"\x80\x04K\x01.")):
        (tmp_path / f"c{suffix}").write_bytes(bad)
        code, _, err = _train("ae", "--config", str(tmp_path / f"c{suffix}"), out=tmp_path / "r")
        _one_line_refusal(code, err, f"not valid {suffix[1:].upper()}")
    assert not (tmp_path / "r").exists()

    codes = tmp_path / "prior"
    codes.mkdir()
    prior = ["--set", "prior.code_shapes=[4,4]", "--set", "prior.codebook_sizes=[8]", "--set", "prior.data_shape=[17]"]
    save_weights(codes / "codes.safetensors", {"train": torch.zeros(6, 0, dtype=torch.int32)})
    code, _, err = _train("pixelcnn", "--data", "codes", "--set", f"data.dir={codes}", *prior, out=tmp_path / "r")
    _one_line_refusal(code, err, "each row packs a label and at least one code")
    (codes / "codes.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{")
    code, _, err = _train("pixelcnn", "--data", "codes", "--set", f"data.dir={codes}", *prior, out=tmp_path / "r")
    _one_line_refusal(code, err, "corrupt or truncated safetensors file")
    assert not (tmp_path / "r").exists()

    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((20, 4)).astype(np.float32))
    code, _, err = _train("ae", "--data", "arrays", "--set", f"data.file={tmp_path / 'v.npy'}", "--set",
                          "train.batch_size=4", "--set", "model.hidden=[4]", "--set", "model.likelihood=gaussian",
                          out=tmp_path / "trained")
    assert code == 0, err
    metrics = tmp_path / "trained" / "metrics.jsonl"  # a metrics log of any bytes never stops the report
    metrics.write_bytes(metrics.read_bytes() + b"[" * 100_000 + b"\n" + b"9" * 5000 + b"\n\xff\xfe\x00{")
    code, _, err = run_cli("report", str(tmp_path / "trained"))
    assert code == 0 and (tmp_path / "trained" / "report.html").exists(), err
