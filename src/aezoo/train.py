"""One training engine for every model: it calls `model.loss(x)` and knows nothing else about it.

The run folder is the contract (see `RunFolder`). A checkpoint is one self-consistent file,
`resume.pt` (weights, optimiser, schedule, step, random generators, the partial log interval), written
atomically; `model.safetensors` is the same weights for users. Every random choice in the data is a
function of (seed, epoch) or (seed, step) and the global generators are saved, so on CPU a run
resumed from step N ends bit-identical to one that was never interrupted.
"""

from __future__ import annotations

import fcntl
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import registry
from .config import RunConfig, TrainConfig, to_dict
from .data import Batches, Dataset, load_dataset
from .errors import AezooError
from .io import load_state, save_state, save_weights, write_json


@dataclass
class RunFolder:
    path: Path

    config = property(lambda self: self.path / "config.json")
    weights = property(lambda self: self.path / "model.safetensors")
    state = property(lambda self: self.path / "resume.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    eval = property(lambda self: self.path / "eval.json")
    plots = property(lambda self: self.path / "plots")
    lock_file = property(lambda self: self.path / ".lock")

    def lock(self):
        """An exclusive lock held while this process trains here; a second trainer is refused."""
        handle = open(self.lock_file, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AezooError(f"{self.path} is in use by another aezoo process") from None
        return handle


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise AezooError("--device cuda: no CUDA device is available (try --device cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)


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


class NonFinite(AezooError):
    pass


class Trainer:
    def __init__(self, cfg: RunConfig, run: RunFolder, dataset: Dataset, device: torch.device):
        self.cfg, self.run, self.device = cfg, run, device
        t = cfg.train
        self.model = registry.build_from_config(cfg.model_name, cfg.model).to(device)
        self.batches = Batches(dataset, "train", t.batch_size, cfg.data.binarize, seed=t.seed)
        self.val = Batches(dataset, "val", cfg.eval.batch_size, cfg.data.binarize, seed=t.seed + 1, shuffle=False) if "val" in dataset.x and cfg.data.train_split == "train" else None
        self.total_steps = t.steps or t.epochs * len(self.batches)
        self.optimizer = make_optimizer(self.model.parameters(), t)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, t, self.total_steps, len(self.batches)))
        self.step = 0
        self.last_checkpoint = 0
        self.log_sums: dict[str, float] = {}
        self.log_count = 0

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "log_sums": dict(self.log_sums),
            "log_count": self.log_count,
        }

    def checkpoint(self) -> None:
        bad = [n for n, p in self.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise NonFinite(f"step {self.step}: parameter '{bad[0]}' is not finite; checkpoint not written, "
                            f"the last good one (step {self.last_checkpoint}) is kept in {self.run.path}")
        save_state(self.run.state, self.state())
        save_weights(self.run.weights, self.model.state_dict())
        self.last_checkpoint = self.step

    def restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            torch.set_rng_state(state["rng_cpu"])
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            self.step = self.last_checkpoint = int(state["step"])
            self.log_sums, self.log_count = dict(state["log_sums"]), int(state["log_count"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise AezooError(f"{self.run.state}: resume state does not match this run ({str(e).splitlines()[0]})") from None
        # Lines logged after the checkpoint will be written again.
        if self.run.metrics.exists():
            kept = []
            for line in self.run.metrics.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    break  # a line cut short by the crash
            self.run.metrics.write_text("".join(k + "\n" for k in kept))

    # --- the loop -------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        with open(self.run.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        sums, n = {}, 0
        for x in self.val:
            out = self.model.loss(x)
            for k, v in {"loss": out.total, **out.terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            n += len(x)
        self.model.train()
        return {k: v / n for k, v in sums.items()}

    def fit(self) -> None:
        t = self.cfg.train
        model = self.model
        model.train()
        if self.step == 0:
            model.on_train_start(self.batches.get(0))
        steps_per_epoch = len(self.batches)
        val_every = t.val_every or steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not t.progress or None,
                   desc=f"{self.cfg.model_name}", unit="step", dynamic_ncols=True, file=sys.stderr)
        tick, tick_step = time.perf_counter(), self.step
        started = time.perf_counter()
        try:
            while self.step < self.total_steps:
                x = self.batches.get(self.step)
                model.step = self.step
                out = model.loss(x)
                if not torch.isfinite(out.total):
                    name = next((k for k, v in out.terms.items() if not torch.isfinite(v)), "total")
                    value = float(out.terms.get(name, out.total).detach())
                    raise NonFinite(f"step {self.step + 1}: loss term '{name}' is {value}; training stopped, "
                                    f"the last good checkpoint (step {self.last_checkpoint}) is kept in {self.run.path}")
                self.optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                if t.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    if not torch.isfinite(norm):
                        raise NonFinite(f"step {self.step + 1}: gradient norm is {float(norm)}; training stopped, "
                                        f"the last good checkpoint (step {self.last_checkpoint}) is kept in {self.run.path}")
                self.optimizer.step()
                self.schedule.step()
                self.step += 1
                for k, v in {"loss": out.total, **out.terms}.items():
                    self.log_sums[k] = self.log_sums.get(k, 0.0) + float(v.detach())
                self.log_count += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    rate = (self.step - tick_step) * t.batch_size / max(now - tick, 1e-9)
                    record = {"step": self.step, "epoch": self.step / steps_per_epoch, "split": "train",
                              **{k: v / self.log_count for k, v in self.log_sums.items()},
                              "lr": self.schedule.get_last_lr()[0], "samples_per_s": rate,
                              "time_s": now - started}
                    self.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                    self.log_sums, self.log_count = {}, 0
                    tick, tick_step = now, self.step
                if self.val is not None and (self.step % val_every == 0 or self.step == self.total_steps):
                    self.log({"step": self.step, "epoch": self.step / steps_per_epoch, "split": "val", **self.validate()})
                if self.step % t.checkpoint_every == 0 or self.step == self.total_steps:
                    self.checkpoint()
        except KeyboardInterrupt:
            bar.close()
            self.checkpoint()
            raise AezooError(f"interrupted at step {self.step}; `aezoo resume {self.run.path}` continues") from None
        finally:
            bar.close()


def _prepare(cfg: RunConfig) -> tuple[Dataset, torch.device]:
    """Load the data and fill the model's data shape: everything that can fail before a file is written."""
    device = pick_device(cfg.train.device)
    dataset = load_dataset(cfg.data)
    cfg.model.data_shape = dataset.shape
    check = getattr(cfg.model, "validate", None)
    if check is not None:
        check()
    return dataset, device


def train(cfg: RunConfig, out: str | Path) -> RunFolder:
    """A new run in folder `out` (which must not hold a run already)."""
    run = RunFolder(Path(out))
    if run.config.exists():
        raise AezooError(f"{run.path} already holds a run: `aezoo resume {run.path}` continues it, or choose another --out")
    dataset, device = _prepare(cfg)
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(cfg, run, dataset.to(device), device)  # fails on bad input before any file is written
    run.path.mkdir(parents=True, exist_ok=True)
    with run.lock():
        write_json(run.config, to_dict(cfg))
        trainer.fit()
    return run


def resume(path: str | Path) -> RunFolder:
    run = RunFolder(Path(path))
    if not run.config.exists():
        raise AezooError(f"{run.path}: no run here (config.json missing)")
    cfg = registry.load_run_config(run.path)
    state = load_state(run.state)
    dataset, device = _prepare(cfg)
    with run.lock():
        trainer = Trainer(cfg, run, dataset.to(device), device)
        trainer.restore(state)
        if trainer.step >= trainer.total_steps:
            print(f"{run.path}: already finished ({trainer.step} steps)", file=sys.stderr)
            return run
        trainer.fit()
    return run
