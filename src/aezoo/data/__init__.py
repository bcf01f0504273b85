"""Datasets: each module registers its loaders; `load_dataset(cfg)` returns the in-memory splits."""

from . import arrays, cifar10, codes, dsprites, images, mnist, sequences  # noqa: F401  (registers)
from .base import (
    DATASETS,
    EVAL_SEED,
    Batches,
    Dataset,
    load_dataset,
    mix_seed,
    prepare,
    register_dataset,
    value_kind,
)

__all__ = ["DATASETS", "EVAL_SEED", "Batches", "Dataset", "load_dataset", "mix_seed", "prepare", "register_dataset",
           "value_kind"]
