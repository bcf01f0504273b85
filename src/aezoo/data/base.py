"""Datasets held in memory as tensors, and batching by index.

A `Dataset` keeps each split as one tensor (uint8 images stay uint8 until a batch is made), so a
training step costs one gather, one conversion and, for dynamic binarisation, one Bernoulli draw:
no per-example Python work. Every random choice is a function of (seed, epoch) or (seed, step), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import AezooError, unknown_name

SPLITS = ("train", "val", "test")
# The seed of every measurement's data: the binarisation of evaluated batches, so numbers repeat.
EVAL_SEED = 12345


@dataclass
class Dataset:
    """In-memory splits. `x[split]` is (N, C, H, W) for images, (N, T, D) for sequences or (N, D).

    `scale` maps stored values to [0, 1] (255 for uint8 pixels, 1 for floats); `labels` and
    `factors` (ground-truth generative factors, (N, F) integers) are present where the data has them.
    """

    name: str
    x: dict[str, torch.Tensor]
    scale: float = 1.0
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    kind: str = "image"  # image | sequence | vector

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example as models see it (after any padding)."""
        return tuple(self.x["train"].shape[1:])

    def split(self, name: str) -> torch.Tensor:
        if name not in self.x:
            raise unknown_name("split", name, self.x)
        return self.x[name]

    def to(self, device) -> Dataset:
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        self.x, self.labels, self.factors = move(self.x), move(self.labels), move(self.factors)
        return self


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    load: Callable[[DataConfig], Dataset]
    where: Callable[[DataConfig], str]  # where it would be read from, for `aezoo datasets`


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, summary: str, where: Callable[[DataConfig], str]):
    def wrap(load):
        DATASETS[name] = DatasetInfo(name, summary, load, where)
        return load

    return wrap


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load, split, limit, pad and (statically) binarise the dataset named by `cfg.name`."""
    if cfg.name not in DATASETS:
        raise unknown_name("dataset", cfg.name, DATASETS)
    ds = DATASETS[cfg.name].load(cfg)
    if cfg.train_split == "train+val":
        ds.x["train"] = torch.cat([ds.x["train"], ds.x["val"]])
        for extra in (ds.labels, ds.factors):
            if "train" in extra and "val" in extra:
                extra["train"] = torch.cat([extra["train"], extra["val"]])
    if cfg.limit:
        for d in (ds.x, ds.labels, ds.factors):
            for k in d:
                d[k] = d[k][: cfg.limit]
    for k, v in ds.x.items():
        if len(v) == 0:
            raise AezooError(f"dataset {cfg.name}: split '{k}' is empty")
    if cfg.pad_to:
        if ds.kind != "image":
            raise AezooError(f"data.pad_to applies to images; {cfg.name} holds {ds.kind}s")
        h, w = ds.shape[-2:]
        if cfg.pad_to < max(h, w):
            raise AezooError(f"data.pad_to={cfg.pad_to} is smaller than the images ({h}x{w})")
        top, left = (cfg.pad_to - h) // 2, (cfg.pad_to - w) // 2
        pad = (left, cfg.pad_to - w - left, top, cfg.pad_to - h - top)
        ds.x = {k: F.pad(v, pad) for k, v in ds.x.items()}
    if cfg.binarize == "static":
        # One fixed draw per split (seeded by the split's name), then plain 0/1 data from here on.
        for i, k in enumerate(sorted(ds.x)):
            g = torch.Generator().manual_seed(1234 + i)
            ds.x[k] = torch.bernoulli(ds.x[k].float() / ds.scale, generator=g).to(torch.uint8)
        ds.scale = 1.0
    return ds


VALUE_KINDS = ("binary", "8bit", "unit", "real")


def value_kind(ds: Dataset, binarize: str) -> str:
    """What the values of the training split are as models see them: `binary` (0 or 1: binarised or
    binary data), `8bit` (256 levels in [0, 1], stored as uint8), `unit` (other reals in [0, 1]) or
    `real` (anything else). Decides the default likelihood (`ModelConfig.fit_to_data`)."""
    if binarize != "none" or ds.kind == "codes":
        return "binary"
    x = ds.x["train"]
    if not isinstance(x, torch.Tensor):  # rendered on demand (dSprites): binary images
        return "binary"
    if x.dtype == torch.uint8 and ds.scale == 255.0:
        return "8bit"
    lo, hi = float(x.min()) / ds.scale, float(x.max()) / ds.scale
    if lo < 0 or hi > 1:
        return "real"
    return "binary" if bool(((x == 0) | (x == ds.scale)).all()) else "unit"


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch or step, ...), stable across runs and platforms."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Batches:
    """Batches of one split by index: a fresh permutation each epoch, derived from (seed, epoch).

    `batch_size` is the global batch. With `rank`/`world` set (several processes), each process takes
    every world-th example of each global batch, so the processes together see exactly the batches one
    process would, including the binarisation noise. When shuffling, the last partial batch is
    dropped so that every step has the same batch size.
    """

    def __init__(self, ds: Dataset, split: str, batch_size: int, binarize: str = "none", seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world: int = 1):
        self.ds, self.split, self.x = ds, split, ds.split(split)
        self.batch_size, self.binarize, self.seed, self.shuffle = batch_size, binarize, seed, shuffle
        self.rank, self.world = rank, world
        if batch_size % world:
            raise AezooError(f"train.batch_size={batch_size} must be a multiple of the {world} processes")
        if shuffle:
            self.steps_per_epoch = len(self.x) // batch_size
            if self.steps_per_epoch == 0:
                raise AezooError(f"batch size {batch_size} is larger than the {split} split ({len(self.x)} examples)")
        else:
            self.steps_per_epoch = -(-len(self.x) // batch_size)
        self._epoch, self._perm = None, None

    def _global_indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if not self.shuffle:
            return torch.arange(i * self.batch_size, min((i + 1) * self.batch_size, len(self.x)))
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perm = torch.randperm(len(self.x), generator=g)
            self._epoch = epoch
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]

    def indices(self, step: int) -> torch.Tensor:
        """This process's examples at `step`."""
        return self._global_indices(step)[self.rank :: self.world]

    def get(self, step: int) -> torch.Tensor:
        """The float batch for `step`, values in [0, 1], binarised if asked."""
        idx = self.indices(step).to(self.x.device)
        # index_select: the rows self.x[idx] gives, without advanced indexing's overhead (bench/speed_paths.py);
        # splits that render their images on demand (dSprites) are indexed as they define
        rows = self.x.index_select(0, idx) if isinstance(self.x, torch.Tensor) else self.x[idx]
        return prepare(rows, self.ds.scale, self.binarize, mix_seed(self.seed, step, 7), self.rank, self.world)

    def labels(self, step: int) -> torch.Tensor | None:
        y = self.ds.labels.get(self.split)
        return None if y is None else y[self.indices(step).to(y.device)]

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        """One pass in order (for evaluation)."""
        return (self.get(i) for i in range(self.steps_per_epoch))


def prepare(raw: torch.Tensor, scale: float, binarize: str, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Stored values to floats in [0, 1]; dynamic binarisation draws x ~ Bernoulli(pixel) from noise
    made for the whole global batch, of which this process keeps its rows (rank::world)."""
    x = raw.float()
    if scale != 1.0:
        x = x / scale
    if binarize == "dynamic":
        g = torch.Generator(x.device).manual_seed(seed)
        u = torch.rand((len(x) * world, *x.shape[1:]), generator=g, device=x.device)[rank::world].contiguous()
        x = u.lt_(x)  # 1.0 where u < pixel, in place in the noise's own (float) buffer: one kernel, no bool copy
    return x
