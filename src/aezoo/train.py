"""One training engine for every model: it calls `model.loss(x, step)` and knows nothing else about it.

The run folder is the contract (`runfolder`). A checkpoint is one self-consistent file,
`resume.pt` (weights, optimiser, schedule, step, random generators, the partial log interval), written
atomically; `model.safetensors` is the same weights for users. Every random choice in the data is a
function of (seed, epoch) or (seed, step) and the global generators are saved, so on CPU a run
resumed from step N ends bit-identical to one that was never interrupted, given the same thread count
and libraries: the engine pins the thread count (`environment.pin_threads`), records the environment
of every piece in RUN/environment.json, and a resume under other settings says so in one line.

Launched by torchrun (WORLD_SIZE > 1), every process trains on its share of each global batch under
DistributedDataParallel (gloo on CPU, NCCL on GPU); process 0 alone writes the run folder.

A model that declares `capabilities.Adversarial` (FactorVAE) gets a second optimiser for its auxiliary
network, stepped after the main one each step from the auxiliary loss alone. The engine knows these
models by that type only; what a model's config takes from the data (its shape, the training set's
size, a likelihood that fits the values) it fills itself (`ModelConfig.fit_to_data`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import registry
from .config import RunConfig, run_tree
from .data import EVAL_SEED, Batches, Dataset, load_dataset, value_kind
from .distributed import Processes, init_processes, pick_device
from .environment import append_piece, describe, determinism, differences, pin_threads
from .errors import AezooError
from .files import load_state, save_state, save_weights, write_json
from .models.capabilities import Adversarial
from .optim import make_optimizer, make_schedule
from .progress import progress
from .runfolder import RunFolder, TensorBoardLog, append_metrics, require_tensorboard, truncate_metrics


class _LossModule(nn.Module):
    """Routes `model.loss` through `forward`, which DistributedDataParallel needs to sync gradients.
    Returns (total, terms, cache): cache is the dict an `Adversarial` model's loss filled for its
    auxiliary loss (returned, not passed in: DDP may copy its inputs), None for other models."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, step):
        if isinstance(self.model, Adversarial):
            cache: dict = {}
            out = self.model.loss(x, step, cache)
            return out.total, out.terms, cache
        out = self.model.loss(x, step)
        return out.total, out.terms, None


class NonFinite(AezooError):
    pass


class Trainer:
    def __init__(self, cfg: RunConfig, run: RunFolder, dataset: Dataset, device: torch.device,
                 procs: Processes | None = None):
        self.cfg, self.run, self.device, self.procs = cfg, run, device, procs or Processes()
        t = cfg.train
        self.model = registry.build_from_config(cfg.model_name, cfg.model).to(device)
        self.batches = Batches(dataset, "train", t.batch_size, cfg.data.binarize, seed=t.seed,
                               rank=procs.rank, world=procs.world)
        self.val = (
            Batches(dataset, "val", cfg.eval.batch_size, cfg.data.binarize, seed=t.seed + 1, shuffle=False)
            if "val" in dataset.x and cfg.data.train_split == "train"
            else None
        )
        self.total_steps = t.steps or t.epochs * len(self.batches)
        # An Adversarial model's auxiliary network has an optimiser of its own (at a constant rate)
        self.aux_parameters = list(self.model.auxiliary_parameters()) if isinstance(self.model, Adversarial) else []
        aux_ids = {id(p) for p in self.aux_parameters}
        self.main_parameters = [p for p in self.model.parameters() if id(p) not in aux_ids]
        self.optimizer = make_optimizer(self.main_parameters, t)
        self.aux_optimizer = None
        if self.aux_parameters:
            aux_settings = dataclasses.replace(t, **self.model.auxiliary_optimizer())
            self.aux_optimizer = make_optimizer(self.aux_parameters, aux_settings)
        self.schedule = make_schedule(self.optimizer, t, self.total_steps, len(self.batches))
        self.scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
        self.environment = describe(device, t.precision, t.fused_optimizer, self.procs.world)
        self.skipped_in_a_row = 0
        self.step = 0
        self.last_checkpoint = 0
        self.log_sums: dict[str, torch.Tensor | float] = {}
        self.log_count = 0
        self.tensorboard: TensorBoardLog | None = None  # opened by `fit` (process 0, train.log=tensorboard)

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": self.gather_rng(),
            "log_sums": {k: float(v) for k, v in self.log_sums.items()},
            "log_count": self.log_count,
            "environment": determinism(self.environment),  # what these bits depend on, compared on resume
        }
        if self.aux_optimizer is not None:
            state["aux_optimizer"] = self.aux_optimizer.state_dict()
        return state

    def gather_rng(self) -> list[dict]:
        """Every process's random generators, indexed by rank."""
        mine = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else torch.empty(0, dtype=torch.uint8),
        }
        if self.procs.world == 1:
            return [mine]
        everyone = [None] * self.procs.world
        dist.all_gather_object(everyone, mine)
        return everyone

    def checkpoint(self) -> None:
        bad = [n for n, p in self.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise NonFinite(
                f"step {self.step}: parameter '{bad[0]}' is not finite; checkpoint not written, "
                f"the last good one (step {self.last_checkpoint}) is kept in {self.run.path}"
            )
        state = self.state()  # every process takes part (it gathers their generators)
        if self.procs.main:
            save_state(self.run.state, state)
            save_weights(self.run.weights, self.model.state_dict())
        self.last_checkpoint = self.step

    def restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.aux_optimizer is not None:
                self.aux_optimizer.load_state_dict(state["aux_optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if self.scaler:
                self.scaler.load_state_dict(state["scaler"])
            if len(state["rng"]) != self.procs.world:
                raise ValueError(f"it was saved by {len(state['rng'])} processes, this run has {self.procs.world}")
            mine = state["rng"][self.procs.rank]
            torch.set_rng_state(mine["cpu"])
            if self.device.type == "cuda" and mine["cuda"].numel():
                torch.cuda.set_rng_state(mine["cuda"], self.device)
            self.step = self.last_checkpoint = int(state["step"])
            self.log_sums, self.log_count = dict(state["log_sums"]), int(state["log_count"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise AezooError(
                f"{self.run.state}: resume state does not match this run ({str(e).splitlines()[0]})"
            ) from None
        if self.procs.main:  # lines logged after the checkpoint will be written again
            truncate_metrics(self.run.metrics, self.step)

    # --- the loop -------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self.procs.main:
            append_metrics(self.run.metrics, record)
            if self.tensorboard is not None:
                self.tensorboard.add(record)

    @torch.no_grad()
    def validate(self) -> dict:
        """The loss and its terms on the validation split. Its noise (a VAE's z) comes from its own fixed
        seed, not the training generators, so validating leaves the training run as it would be without:
        a finished run trained further equals one trained that long at once."""
        self.model.eval()
        sums, n = {}, 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED)
            for x in self.val:
                out = self.model.loss(x, self.step)
                for k, v in {"loss": out.total, **out.terms}.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(x)
                n += len(x)
        self.model.train()
        return {k: v / n for k, v in sums.items()}

    def _autocast(self):
        """Autocast when mixed precision is asked (models keep float32 where it matters)."""
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _forward(self):
        """The loss function of one step: the model's own, or through DDP when there are several
        processes; under autocast when mixed precision is asked."""
        module = _LossModule(self.model)
        if self.procs.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=self.model.skips_parameters
            )
        if self.cfg.train.precision == "fp32":
            return module

        def autocast_forward(x, step):
            with self._autocast():
                return module(x, step)

        return autocast_forward

    def _auxiliary_loss(self, x: torch.Tensor, cache: dict):
        """An Adversarial model's auxiliary loss of this step, outside DDP (its gradients are averaged
        over the processes by `_average_aux_gradients`)."""
        with self._autocast():
            return self.model.auxiliary_loss(x, self.step, cache)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _average_aux_gradients(self) -> None:
        """The auxiliary loss runs outside DDP: its gradients are averaged over processes here, in one
        all-reduce, so every process's auxiliary network takes the same step."""
        grads = [p.grad for p in self.aux_parameters if p.grad is not None]
        if self.procs.world == 1 or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.procs.world
        for g, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(averaged.view_as(g))

    def _optimizer_step(self, total: torch.Tensor, aux_total: torch.Tensor | None = None) -> None:
        """The main update from `total`, then (Adversarial models) the auxiliary network's from
        `aux_total` alone: the gradient the main loss left on it is dropped before its backward pass."""
        t = self.cfg.train
        optimizers = [self.optimizer] if aux_total is None else [self.optimizer, self.aux_optimizer]
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(total)
        if aux_total is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
            self._backward(aux_total)
            self._average_aux_gradients()
        if self.scaler is not None:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)
        if t.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.main_parameters, t.grad_clip)
            if self.scaler is None and not torch.isfinite(norm):
                raise self._stopped(f"gradient norm is {float(norm)}")
        if self.scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return
        scale = self.scaler.get_scale()
        for optimizer in optimizers:
            self.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if self.scaler.get_scale() < scale else 0
        if self.skipped_in_a_row >= 20:  # the scale fell 2^20-fold: not an overflow a scaler can fix
            raise self._stopped("fp16 gradients overflowed 20 steps in a row (try train.precision=bf16)")

    def _schedule_step(self) -> None:
        if self.scaler is None:
            self.schedule.step()
            return
        with warnings.catch_warnings():  # a step the fp16 scaler skipped still advances the schedule
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.schedule.step()

    def _all_finite(self, *totals: torch.Tensor) -> bool:
        ok = torch.stack([torch.isfinite(t.detach()).all() for t in totals]).all().to(torch.float32)
        if self.procs.world > 1:  # every process stops together, or none does
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok)

    def _stopped(self, what: str) -> NonFinite:
        return NonFinite(
            f"step {self.step + 1}: {what}; training stopped, the last good checkpoint "
            f"(step {self.last_checkpoint}) is kept in {self.run.path}"
        )

    def _log_train(self, started: float, tick: float, tick_step: int) -> dict:
        """The means of the terms since the last line (averaged over processes) as one metrics line."""
        names = sorted(self.log_sums)
        means = torch.tensor([float(self.log_sums[k]) / self.log_count for k in names], dtype=torch.float64)
        if self.procs.world > 1:
            means = means.to(self.device)
            dist.all_reduce(means)
            means = means.cpu() / self.procs.world
        now = time.perf_counter()
        record = {
            "step": self.step,
            "epoch": self.step / len(self.batches),
            "split": "train",
            **dict(zip(names, means.tolist())),
            "lr": self.schedule.get_last_lr()[0],
            "samples_per_s": (self.step - tick_step) * self.cfg.train.batch_size / max(now - tick, 1e-9),
            "time_s": now - started,
        }
        self.log(record)
        self.log_sums, self.log_count = {}, 0
        return record

    def fit(self) -> None:
        t = self.cfg.train
        model = self.model
        model.train()
        if self.step == 0:
            model.on_train_start(self.batches.get(0))
        forward = self._forward()  # after on_train_start: DDP starts every process from rank 0's weights
        val_every = t.val_every or len(self.batches)
        bar = progress(None, self.cfg.model_name, total=self.total_steps, initial=self.step, unit="step",
                       enabled=t.progress and self.procs.main)
        if t.log == "tensorboard" and self.procs.main:
            self.tensorboard = TensorBoardLog(self.run.tensorboard, self.step)
        started = tick = time.perf_counter()
        tick_step = self.step
        try:
            while self.step < self.total_steps:
                x = self.batches.get(self.step)
                total, terms, cache = forward(x, self.step)
                totals = [total]
                if self.aux_optimizer is not None:
                    aux = self._auxiliary_loss(x, cache)
                    totals.append(aux.total)
                    terms = {**terms, "aux_loss": aux.total, **aux.terms}
                if not self._all_finite(*totals):
                    name = next((k for k, v in terms.items() if not torch.isfinite(v)), "total")
                    raise self._stopped(f"loss term '{name}' is {float(terms.get(name, total).detach())}")
                self._optimizer_step(*totals)
                self._schedule_step()
                self.step += 1
                for k, v in {"loss": total, **terms}.items():  # summed on the device: no sync per step
                    self.log_sums[k] = self.log_sums.get(k, 0.0) + v.detach().double()
                self.log_count += 1
                bar.update(1)
                last = self.step == self.total_steps
                if self.step % t.log_every == 0 or last:
                    record = self._log_train(started, tick, tick_step)
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                    tick, tick_step = time.perf_counter(), self.step
                if self.val is not None and self.procs.main and (self.step % val_every == 0 or last):
                    self.log(
                        {"step": self.step, "epoch": self.step / len(self.batches), "split": "val", **self.validate()}
                    )
                if self.step % t.checkpoint_every == 0 or last:
                    self.checkpoint()
        except KeyboardInterrupt:
            if self.procs.world == 1:
                bar.close()
                self.checkpoint()
            raise AezooError(
                f"interrupted at step {self.step}; `aezoo resume {self.run.path}` continues from "
                f"step {self.last_checkpoint}"
            ) from None
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
                self.tensorboard = None


def _prepare(cfg: RunConfig) -> tuple[Dataset, torch.device, Processes]:
    """Load the data and fit the model's config to it (its data shape, and what the config leaves to the
    data): everything that can fail before a file is written."""
    if cfg.train.log == "tensorboard":
        require_tensorboard()
    device = pick_device(cfg.train.device)
    procs = init_processes(device)
    dataset = load_dataset(cfg.data)
    cfg.model.fit_to_data(dataset.shape, len(dataset.x["train"]), value_kind(dataset, cfg.data.binarize))
    cfg.model.validate()  # the rules that need the data
    return dataset.to(device), device, procs


def _new_trainer(cfg: RunConfig, run: RunFolder) -> Trainer:
    pin_threads()  # the same seed gives the same bits only if no library changes its thread count mid-run
    dataset, device, procs = _prepare(cfg)
    torch.manual_seed(cfg.train.seed)  # the same initial weights in every process
    trainer = Trainer(cfg, run, dataset, device, procs)  # fails on bad input before any file is written
    torch.manual_seed(cfg.train.seed + procs.rank)  # but each process its own noise
    return trainer


def train(cfg: RunConfig, out: str | Path) -> RunFolder:
    """A new run in folder `out` (which must not hold a run already)."""
    run = RunFolder(Path(out))
    if run.config.exists():
        raise AezooError(
            f"{run.path} already holds a run: `aezoo resume {run.path}` continues it, or choose another --out"
        )
    trainer = _new_trainer(cfg, run)
    trainer.procs.barrier()  # every process has checked the folder before the first one writes to it
    with _main_process_owns(run, trainer.procs):
        if trainer.procs.main:
            write_json(run.config, run_tree(cfg, registry.entry(cfg.model_name).section))
            append_piece(run.path, 0, trainer.environment)
        trainer.fit()
    return run


def resume(path: str | Path, epochs: int | None = None, steps: int | None = None) -> RunFolder | None:
    """Continue a run from its last checkpoint (from step 0 if it stopped before the first one). With
    `epochs` or `steps`, the run's budget becomes that many in all (a finished run is trained further;
    a schedule that depends on the total, cosine or linear, is stretched to the new total from here on).
    Returns the run folder, or None when the run had already finished (nothing trained)."""
    run = RunFolder(Path(path))
    run.require()
    cfg = registry.load_run_config(run.path)
    if epochs is not None or steps is not None:
        cfg.train.epochs, cfg.train.steps = epochs or cfg.train.epochs, steps or 0
    state = load_state(run.state) if run.state.exists() else None
    trainer = _new_trainer(cfg, run)
    with _main_process_owns(run, trainer.procs):
        if state is None:
            if trainer.procs.main:
                print(f"{run.path}: no checkpoint yet, starting from step 0", file=sys.stderr)
                run.metrics.unlink(missing_ok=True)
        else:
            trainer.restore(state)
        if trainer.step >= trainer.total_steps:
            return None
        if trainer.procs.main:
            if epochs is not None or steps is not None:
                write_json(run.config, run_tree(cfg, registry.entry(cfg.model_name).section))
            _say_what_changed(run, state, trainer)
            append_piece(run.path, trainer.step, trainer.environment)
        trainer.fit()
    return run


def _say_what_changed(run: RunFolder, state: dict | None, trainer: Trainer) -> None:
    """One line on stderr when the checkpoint was written under other settings that its bits depend on
    (`environment.DETERMINISM_KEYS`: thread count, library versions and settings, device)."""
    saved = state.get("environment") if state is not None else None
    changed = differences(saved, determinism(trainer.environment)) if isinstance(saved, dict) else []
    if changed:
        print(f"{run.path}: resumed at step {trainer.step} with {'; '.join(changed)}: the weights may differ "
              f"from an uninterrupted run's", file=sys.stderr)


@contextlib.contextmanager
def _main_process_owns(run: RunFolder, procs: Processes):
    """Process 0 creates the folder and holds its lock; the others write nothing."""
    if not procs.main:
        yield
        return
    run.path.mkdir(parents=True, exist_ok=True)
    with run.lock():
        yield
