"""Datasets as tensors, and batching by index.

A `Dataset` keeps each split as one tensor (uint8 images stay uint8 until a batch is made), so a
training step costs one gather, one conversion and, for dynamic binarisation, one Bernoulli draw:
no per-example Python work. Every random choice is a function of (seed, epoch) or (seed, step), so a
resumed run sees exactly the batches an uninterrupted one would.

A split too large for memory is a tensor over a memory-mapped file (`data.memmap`; arrays.py, images.py):
the same gather reads just the pages of the rows it takes, so each of several processes reads only its
share of every batch. Such splits stay on the CPU, and `Batches` moves the rows it gathers to the device.
"""

from __future__ import annotations

import math
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
    """The splits. `x[split]` is (N, C, H, W) for images, (N, T, D) for sequences or (N, D).

    `scale` maps stored values to [0, 1] (255 for uint8 pixels, 1 for floats); `labels` and
    `factors` (ground-truth generative factors, (N, F) integers) are present where the data has them.
    `mapped` names the splits read from a memory-mapped file rather than held in memory; `device` is
    where batches are made (`to`).
    """

    name: str
    x: dict[str, torch.Tensor]
    scale: float = 1.0
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    kind: str = "image"  # image | sequence | vector
    mapped: set[str] = field(default_factory=set)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example as models see it (after any padding)."""
        return tuple(self.x["train"].shape[1:])

    def split(self, name: str) -> torch.Tensor:
        if name not in self.x:
            raise unknown_name("split", name, self.x)
        return self.x[name]

    def to(self, device) -> Dataset:
        """Moves the splits held in memory to `device`; mapped splits stay on the CPU (a GPU rarely
        holds what host memory cannot), and their batches are moved as they are gathered."""
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        self.labels, self.factors = move(self.labels), move(self.factors)
        self.x = {k: v if k in self.mapped else v.to(device) for k, v in self.x.items()}
        self.device = torch.device(device)
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
        ds.x["train"] = _join(ds.x["train"], ds.x["val"], mapped=bool({"train", "val"} & ds.mapped))
        ds.mapped = ds.mapped | ({"train"} if "val" in ds.mapped else set())
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
    if ds.mapped and (cfg.pad_to or cfg.binarize == "static"):
        what = "data.pad_to" if cfg.pad_to else "data.binarize=static"
        raise AezooError(f"{what} rewrites every example in memory, which memory-mapped data (data.memmap) "
                         "avoids: store the data padded or binarised, or set data.memmap=off")
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


def _join(a: torch.Tensor, b: torch.Tensor, mapped: bool) -> torch.Tensor:
    """a's rows then b's: a view where b follows a in one storage (the splits of one mapped array file),
    else a copy in memory, which mapped data cannot afford."""
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.dtype == b.dtype
            and a.shape[1:] == b.shape[1:] and a.is_contiguous() and b.is_contiguous()
            and a.storage_offset() + a.numel() == b.storage_offset()):
        return a.as_strided((len(a) + len(b), *a.shape[1:]), a.stride(), a.storage_offset())
    if mapped:
        raise AezooError("data.train_split=train+val would copy the memory-mapped train and val splits into "
                         "memory: store them as one array (split 80/10/10 in order) or set data.memmap=off")
    return torch.cat([a, b])


VALUE_KINDS = ("binary", "8bit", "unit", "real")
SCAN_BYTES = 64 << 20  # value_kind reads the training split a chunk at a time: a mapped split is never read whole


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
    lo, hi, binary = math.inf, -math.inf, True
    for c in x.split(max(1, SCAN_BYTES // (x[0].numel() * x.element_size()))):  # one pass
        lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
        binary = binary and bool(((c == 0) | (c == ds.scale)).all())
    if lo / ds.scale < 0 or hi / ds.scale > 1:
        return "real"
    return "binary" if binary else "unit"


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
        if self.split in self.ds.mapped:  # gathered on the CPU from the file
            rows = rows.to(self.ds.device)
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
