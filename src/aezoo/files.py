"""Files: atomic writes, safetensors weights, JSON, the resume state, and the guard of every reader.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a reader (or a resumed run after a crash) sees either the old file or the new one, never
half of one. Loading never executes code: weights are safetensors, the resume state is read with
`torch.load(weights_only=True)`.

Every reader of a file a user can hand aezoo (arrays, images, IDX, pickled batches, weights, configs,
the resume state) decodes inside `reading(path, what)`: whatever a damaged or hostile file makes the
decoder raise becomes one `AezooError` line, "PATH: WHAT: the first line of the reason". Readers
refuse declared sizes that the bytes cannot back before they allocate (`read_at_most` reads a
stream in chunks, so memory follows the bytes that are there, not the bytes a header promises).
"""

from __future__ import annotations

import contextlib
import json
import lzma
import math
import os
import pickle
import struct
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import AezooError


class Unreadable(Exception):
    """A reader's own finding that a file is damaged or hostile (a size its bytes cannot back, a
    pickle, a wrong layout); `reading` turns it into the one-line AezooError."""


# What decoding damaged or hostile bytes raises, from the standard library's decoders (json, tomllib,
# zipfile, gzip, zlib, lzma, struct, pickle), numpy, torch and safetensors: UnicodeDecodeError and
# JSONDecodeError are ValueErrors, BadGzipFile an OSError, RecursionError (deep nesting) a
# RuntimeError, OverflowError an ArithmeticError, KeyError and IndexError LookupErrors; numpy parses a
# .npy header with tokenize and ast (TokenError, SyntaxError). A reader that calls a library with its
# own base class (Pillow, pyarrow) names it in `also`.
DECODE_ERRORS = (OSError, EOFError, ValueError, ArithmeticError, LookupError, TypeError, AttributeError,
                 RuntimeError, MemoryError, SyntaxError, tokenize.TokenError, struct.error, zipfile.BadZipFile,
                 zlib.error, lzma.LZMAError, pickle.UnpicklingError, SafetensorError, Unreadable)


def reason(e: BaseException) -> str:
    """The first line of an exception's message (an OSError's strerror), at most 200 characters."""
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    elif isinstance(e, MemoryError):
        text = f"out of memory ({str(e).strip().splitlines()[0]})" if str(e).strip() else "out of memory"
    else:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def reading(path: str | Path, what: str, also: tuple[type[BaseException], ...] = ()):
    """Decode a user's file inside this block: any failure of the bytes (see DECODE_ERRORS, plus
    `also`) ends as AezooError("PATH: WHAT: reason"), one line; AezooErrors pass through as they are.
    Warnings are silenced inside (torch, numpy and Pillow warn about odd files on stderr, which would
    make the one line several).

        with reading(path, "not a readable image", also=(PIL.Image.DecompressionBombError,)):
            ...
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except AezooError:
        raise
    except (*DECODE_ERRORS, *also) as e:
        raise AezooError(f"{path}: {what}: {reason(e)}") from None


def read_at_most(f, n: int, chunk: int = 1 << 20) -> bytearray:
    """Up to `n` bytes of the stream `f`, read in chunks: memory grows with the bytes actually there,
    never with a size a header declares (a file object's read(n) allocates n bytes first)."""
    data = bytearray()
    while len(data) < n:
        part = f.read(min(chunk, n - len(data)))
        if not part:
            break
        data += part
    return data


class Chunked:
    """A stream whose read(n) allocates only the bytes that are there (`read_at_most`), for parsers
    that read a length from the file and then ask for that many bytes (numpy's .npy header, pickle)."""

    def __init__(self, f):
        self.f = f

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0 or n <= 1 << 16:
            return self.f.read(n)
        return bytes(read_at_most(self.f, n))

    def readline(self, *args) -> bytes:
        return self.f.readline(*args)

    def tell(self) -> int:
        return self.f.tell()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise AezooError(f"could not write {path}: {e.strerror or e}; the previous file is kept") from None
        raise


def is_number(v) -> bool:
    """A JSON number (int or float), not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_safe(obj):
    """Non-finite floats become strings ("nan", "inf") so that the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(_json_safe(obj), indent=2) + "\n").encode())


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AezooError(f"{path} not found")
    with reading(path, "not valid JSON"):
        obj = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(obj, dict):
        raise AezooError(f"{path}: expected a JSON object")
    return obj


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, st_save(tensors))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AezooError(f"{path} not found")
    with reading(path, "corrupt or truncated safetensors file"):  # safetensors checks every offset against the bytes
        return st_load(path.read_bytes())


def save_state(path: str | Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    """The resume state; `weights_only=True` refuses any pickle that would run code. Only the zip
    format that `save_state` writes is read (torch checks each tensor's declared size against its
    record in the zip); torch's older format, which allocates what its header declares, is refused."""
    path = Path(path)
    if not path.is_file():
        raise AezooError(f"{path} not found: nothing to resume")
    with reading(path, "refused or unreadable resume state"):
        if not zipfile.is_zipfile(path):
            raise Unreadable("not the zip file that torch.save writes")
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise AezooError(f"{path}: not an aezoo resume state")
    return state
