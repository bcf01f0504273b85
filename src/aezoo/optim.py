"""The optimiser and the learning-rate schedule of a run, from its `TrainConfig`."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def make_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW, SGD or Adagrad; fused (one kernel per parameter) unless train.fused_optimizer=false."""
    fused = True if t.fused_optimizer else None  # models live on cpu or cuda, both with fused kernels
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, fused=fused)
    if t.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=t.lr, eps=t.eps, weight_decay=t.weight_decay, fused=fused)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay, fused=fused)


def lr_factor(step: int, t: TrainConfig, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant, cosine or linear decay to 0 at `total`,
    or Burda et al.'s stages (stage i: 3^i epochs at 10^(-i/7))."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "burda2015":
        epoch, stage, end = step // steps_per_epoch, 0, 1
        while epoch >= end:
            stage, end = stage + 1, end + 3 ** (stage + 1)
        return 10 ** (-stage / 7)
    progress = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if t.schedule == "cosine" else 1.0 - progress


def make_schedule(optimizer: torch.optim.Optimizer, t: TrainConfig, total: int,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t, total, steps_per_epoch))
