"""Shared by the benchmark scripts: a description of the machine, the pieces a run was trained in, and
writing results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(script: str, result: dict, stem: str | None = None) -> Path:
    """Writes bench/<stem>.json beside the script (stem: the script's own by default)."""
    path = Path(script).with_name(f"{stem or Path(script).stem}.json")
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path


def pieces(records: list[dict]) -> list[dict]:
    """The pieces of training in a run's metrics log (`aezoo.runfolder.read_metrics`): first and last step
    and wall seconds of each stretch of training records whose time_s does not go back (it restarts at
    each `aezoo resume`)."""
    out: list[dict] = []
    last = None
    for r in records:
        if r.get("split") != "train" or not isinstance(r.get("time_s"), (int, float)):
            continue
        if last is None or r["time_s"] < last:
            out.append({"from_step": r["step"], "to_step": r["step"], "wall_s": r["time_s"]})
        out[-1].update(to_step=r["step"], wall_s=round(r["time_s"], 1))
        last = r["time_s"]
    return out
