"""Where a run executes: the device, and this process's place among those torchrun started.

Launched by torchrun (WORLD_SIZE > 1), every process trains on its share of each global batch under
DistributedDataParallel, gloo on CPU and NCCL on GPU; process 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import AezooError


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; under torchrun `cuda` is this
    process's local GPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AezooError(f"--device {name}: no CUDA device is available (try --device cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if name.startswith("cuda:"):
        index = int(name[5:])
        if index >= torch.cuda.device_count():
            raise AezooError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(index)
    return torch.device(name)


@dataclass(frozen=True)
class Processes:
    """This process's place among those torchrun started (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_processes(device: torch.device) -> Processes:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())
