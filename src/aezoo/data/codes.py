"""The code maps of a VQ model's run as a dataset, for its prior (stage 2, `aezoo train-prior`).

RUN/prior/codes.safetensors holds one integer table per split, one packed row per example:
[label (0 without labels), codes of level 1 in raster order, level 2, ...] (`models.priors.pack_codes`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import AezooError
from ..files import load_weights
from .base import Dataset, register_dataset

CODES_FILE = "codes.safetensors"


def where(cfg: DataConfig) -> str:
    return f"{Path(cfg.dir) / CODES_FILE}" if cfg.dir else "made by `aezoo train-prior RUN` (data.dir: RUN/prior)"


@register_dataset("codes", "code maps of a VQ model's run, packed rows [label, codes...] (made by train-prior)", where)
def load_codes(cfg: DataConfig) -> Dataset:
    if not cfg.dir:
        raise AezooError(
            "data.dir must name a prior folder holding codes.safetensors (made by `aezoo train-prior RUN`)"
        )
    path = Path(cfg.dir).expanduser() / CODES_FILE
    rows = load_weights(path)  # safetensors: no code runs, every size is checked against the bytes
    integer = (torch.int16, torch.int32, torch.int64)
    if "train" not in rows or any(v.dim() != 2 or v.dtype not in integer for v in rows.values()):
        raise AezooError(f"{path}: expected integer tables of packed codes with a 'train' split")
    if any(v.shape[1] < 2 for v in rows.values()) or not len(rows["train"]):
        raise AezooError(
            f"{path}: each row packs a label and at least one code, and train has rows; got "
            + ", ".join(f"{k} {tuple(v.shape)}" for k, v in rows.items())
        )
    if any(v.numel() and int(v.min()) < 0 for v in rows.values()):
        raise AezooError(f"{path}: labels and codes are indices, never negative")
    return Dataset(name="codes", x=dict(rows), labels={k: v[:, 0].long() for k, v in rows.items()}, kind="codes")
