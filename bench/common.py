"""Shared by the benchmark scripts: a description of the machine, and writing results."""

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


def write_result(script: str, result: dict) -> Path:
    """Writes bench/<script stem>.json beside the script."""
    path = Path(script).with_suffix(".json")
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path
