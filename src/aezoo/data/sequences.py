"""Sequence datasets for TD-VAE (Gregor et al. 2019, sec. 5): each split is (N, T, ...) with kind="sequence".

- `moving_mnist` (sec. 5.2): an MNIST digit moving one pixel left or right per frame, the direction
  drawn per sequence, wrapping around at the image border, 20 frames. One sequence per MNIST digit,
  so the splits are MNIST's (50k/10k/10k); frames stay 28x28 uint8, (N, 20, 1, 28, 28), about 1.1 GB
  for the three splits (use data.limit for less). The sequence starts from the digit as MNIST has it.
  `factors` hold the direction (0: left, 1: right).
- `oscillator` (sec. 5.3): a harmonic oscillator with noise on its velocity, observed through noise:
  (N, 40, 1) floats, frequency, amplitude and phase drawn per sequence; 10k/1k/1k sequences.
- `sequences`: the user's own N x T x D array from a .npy or .npz file named by data.file.

Every random choice comes from a generator seeded per split, so the data are the same on every load.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from .arrays import read_splits
from .base import SPLITS, Dataset, mix_seed, register_dataset
from .mnist import load_mnist
from .mnist import where as mnist_where

SEED = 2019  # the data's own seed; a split's generator is seeded with mix_seed(SEED, split index)


def _generator(split: str) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(SEED, SPLITS.index(split)))


# --- moving MNIST ----------------------------------------------------------------------------------
def random_directions(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) directions, -1 (left) or +1 (right), each with probability 1/2."""
    return torch.randint(0, 2, (n,), generator=generator) * 2 - 1


def moving_frames(images: torch.Tensor, directions: torch.Tensor, length: int = 20) -> torch.Tensor:
    """(N, C, H, W) images and (N,) directions in {-1, +1} -> (N, length, C, H, W): frame t is the image
    shifted t pixels along W in its direction, pixels leaving one side entering on the other."""
    right = (directions > 0).view(-1, 1, 1, 1)
    out = images.new_empty(len(images), length, *images.shape[1:])
    for t in range(length):  # vectorised over sequences; a loop over the 20 frames only
        out[:, t] = torch.where(right, images.roll(t, dims=-1), images.roll(-t, dims=-1))
    return out


def moving_mnist_where(cfg: DataConfig) -> str:
    return f"made from MNIST, {mnist_where(cfg)}"


@register_dataset("moving_mnist", "MNIST digits moving 1 pixel left or right per frame, 20 frames (TD-VAE)",
                  moving_mnist_where)
def load_moving_mnist(cfg: DataConfig) -> Dataset:
    mnist = load_mnist(cfg)
    x, labels, directions = {}, {}, {}
    for split, images in mnist.x.items():
        n = min(len(images), cfg.limit) if cfg.limit else len(images)  # build only what will be kept
        d = random_directions(len(images), _generator(split))[:n]
        x[split] = moving_frames(images[:n], d)
        labels[split] = mnist.labels[split][:n]
        directions[split] = ((d + 1) // 2).unsqueeze(1)
    return Dataset(name="moving_mnist", x=x, scale=mnist.scale, labels=labels,
                   factors=directions, kind="sequence")


# --- noisy harmonic oscillator ----------------------------------------------------------------------
def oscillator(n: int, generator: torch.Generator, length: int = 40, omega=(0.2, 0.5), amplitude=(0.5, 1.0),
               velocity_noise: float = 0.02, observation_noise: float = 0.1) -> torch.Tensor:
    """(n, length, 1) noisy observations y_t = p_t + observation_noise * e_t of an oscillator with angular
    frequency omega (radians per step, drawn per sequence): each step rotates (p, v / omega) by omega,
    the exact solution of p'' = -omega^2 p over one step, then adds velocity_noise * e to v."""
    w, a = (lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64) for lo, hi in (omega, amplitude))
    phase = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    p, v = a * torch.cos(phase), -a * w * torch.sin(phase)
    cos, sin = torch.cos(w), torch.sin(w)
    ps = []
    for _ in range(length):
        ps.append(p)
        p, v = p * cos + v / w * sin, -p * w * sin + v * cos
        v = v + velocity_noise * torch.randn(n, generator=generator, dtype=torch.float64)
    y = torch.stack(ps, 1) + observation_noise * torch.randn(n, length, generator=generator, dtype=torch.float64)
    return y.float().unsqueeze(-1)


OSCILLATOR_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}


@register_dataset("oscillator", "noisy harmonic oscillator observed through noise, 40 steps (TD-VAE)",
                  lambda cfg: "generated")
def load_oscillator(cfg: DataConfig) -> Dataset:
    x = {s: oscillator(n, _generator(s)) for s, n in OSCILLATOR_SIZES.items()}
    return Dataset(name="oscillator", x=x, kind="sequence")


# --- the user's own sequences -----------------------------------------------------------------------
def read_sequences(path: Path) -> dict[str, torch.Tensor]:
    """Splits of an N x T x D array from a .npy, .npz or .parquet file (see `arrays.read_splits`)."""
    splits = read_splits(path, (3,), "the N x T x D array")
    t, d = next(iter(splits.values())).shape[1:]
    if t < 2:
        raise AezooError(f"{path}: sequences need T >= 2 steps; got T = {t}")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in splits.items()}


def sequences_where(cfg: DataConfig) -> str:
    return (
        f"the array file {cfg.file}"
        if cfg.file
        else "nowhere: set data.file to an N x T x D .npy, .npz or .parquet file"
    )


@register_dataset(
    "sequences", "your own N x T x D sequences from a .npy/.npz/.parquet file (data.file)", sequences_where
)
def load_sequences(cfg: DataConfig) -> Dataset:
    if not cfg.file:
        raise AezooError("dataset sequences reads an N x T x D .npy, .npz or .parquet file: set data.file=PATH")
    path = Path(cfg.file).expanduser()
    return Dataset(name="sequences", x=read_sequences(path), kind="sequence")
