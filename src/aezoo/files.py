"""Files: atomic writes, safetensors weights, JSON, and the resume state.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a reader (or a resumed run after a crash) sees either the old file or the new one, never
half of one. Loading never executes code: weights are safetensors, the resume state is read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import AezooError


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
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AezooError(f"{path}: not valid JSON: {e}") from None
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
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise AezooError(f"{path}: corrupt or truncated safetensors file ({e})") from None


def save_state(path: str | Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    """The resume state; `weights_only=True` refuses any pickle that would run code."""
    path = Path(path)
    if not path.is_file():
        raise AezooError(f"{path} not found: nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or hostile pickles
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AezooError(f"{path}: refused or unreadable resume state ({first})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise AezooError(f"{path}: not an aezoo resume state")
    return state
