"""`aezoo eval`: every measurement that applies to a run, written to `eval.json`.

An evaluator is a function of an `EvalContext` returning a dict of `eval.json` keys; it declares
which models and data it applies to. Model families add their own with `@evaluator(...)`. All
numbers are per example and in nats unless the key says otherwise (reduction convention in
`distributions`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from . import registry
from .config import RunConfig
from .data import Batches, Dataset, load_dataset
from .errors import AezooError
from .io import write_json
from .train import RunFolder, pick_device

EVAL_SEED = 12345  # fixes the binarisation of the evaluated split and the sampling, so numbers repeat


@dataclass
class EvalContext:
    model: torch.nn.Module
    dataset: Dataset
    cfg: RunConfig
    split: str
    run: RunFolder

    def batches(self, batch_size: int | None = None) -> Batches:
        """The evaluated split in order, binarised as in training with a fixed seed."""
        return Batches(self.dataset, self.split, batch_size or self.cfg.eval.batch_size,
                       self.cfg.data.binarize, seed=EVAL_SEED, shuffle=False)

    def progress(self, iterable, desc: str):
        return tqdm(iterable, desc=desc, leave=False, disable=None, file=sys.stderr)


@dataclass(frozen=True)
class Evaluator:
    name: str
    applies: Callable[[torch.nn.Module, Dataset], bool]
    run: Callable[[EvalContext], dict]


EVALUATORS: list[Evaluator] = []


def evaluator(applies: Callable[[torch.nn.Module, Dataset], bool]):
    def wrap(fn):
        EVALUATORS.append(Evaluator(fn.__name__, applies, fn))
        return fn

    return wrap


@evaluator(lambda model, ds: ds.kind in ("image", "vector"))
@torch.no_grad()
def reconstruction(ctx: EvalContext) -> dict:
    """recon_mse: squared error summed over data dimensions; psnr: from the mean squared error per
    dimension, for data in [0, 1]; recon_bce: Bernoulli cross-entropy of the reconstruction's mean."""
    sq, bce, n, dims = 0.0, 0.0, 0, 0
    for x in ctx.progress(ctx.batches(), "reconstruction"):
        r = ctx.model.reconstruct(x)
        sq += float(((r - x) ** 2).flatten(1).sum())
        p = r.clamp(1e-6, 1 - 1e-6)
        bce += float(-(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum())
        n, dims = n + len(x), x[0].numel()
    mse = sq / n
    return {"recon_mse": mse, "recon_bce": bce / n, "psnr": 10 * math.log10(dims / max(mse, 1e-12))}


def _has_elbo(model, ds) -> bool:
    return hasattr(model, "nll_iwae") and hasattr(model, "elbo_parts")


@evaluator(_has_elbo)
@torch.no_grad()
def likelihood(ctx: EvalContext) -> dict:
    """neg_elbo, the IWAE estimate of -log p(x) with k = eval.nll_k samples (Burda et al. 2016),
    KL per latent unit, and active units: A_u = Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016, sec. 5.2)."""
    e = ctx.cfg.eval
    neg_elbo, nll, n = 0.0, 0.0, 0
    kl_units, means = 0.0, []
    for x in ctx.progress(ctx.batches(), f"IWAE k={e.nll_k}"):
        recon, kl = ctx.model.elbo_parts(x)
        neg_elbo += float((recon + kl.sum(1)).sum())
        kl_units = kl_units + kl.sum(0)
        means.append(ctx.model.encode(x))
        nll += float(ctx.model.nll_iwae(x, e.nll_k, e.nll_batch).sum())
        n += len(x)
    mu = torch.cat(means)
    active = int((mu.var(0) > 0.01).sum())
    return {"neg_elbo": neg_elbo / n, "nll_iwae": nll / n, "nll_iwae_k": e.nll_k,
            "kl_per_dim": (kl_units / n).tolist(), "active_units": active}


def train_throughput(run: RunFolder) -> dict:
    """The median training samples/s over the logged intervals."""
    rates = []
    if run.metrics.exists():
        for line in run.metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("split") == "train" and isinstance(rec.get("samples_per_s"), (int, float)):
                rates.append(rec["samples_per_s"])
    return {"train_samples_per_s": sorted(rates)[len(rates) // 2]} if rates else {}


def load_run(path: str | Path, split: str | None = None, device: str | None = None):
    """(model, dataset, cfg, run) for a finished or checkpointed run, on the configured device."""
    run = RunFolder(Path(path))
    if not run.config.exists():
        raise AezooError(f"{run.path}: no run here (config.json missing)")
    cfg = registry.load_run_config(run.path)
    if split:
        cfg.eval.split = split
    dev = pick_device(device or cfg.train.device)
    model = registry.load(run.path, device=str(dev))
    dataset = load_dataset(cfg.data)
    if cfg.eval.limit:
        dataset.x[cfg.eval.split] = dataset.x[cfg.eval.split][: cfg.eval.limit]
    if dataset.shape != tuple(cfg.model.data_shape):
        raise AezooError(f"{run.path}: the model expects data of shape {tuple(cfg.model.data_shape)}, "
                         f"{cfg.data.name} gives {dataset.shape}")
    return model, dataset.to(dev), cfg, run


def evaluate(path: str | Path, split: str | None = None) -> dict:
    model, dataset, cfg, run = load_run(path, split)
    ctx = EvalContext(model, dataset, cfg, cfg.eval.split, run)
    torch.manual_seed(EVAL_SEED)
    results: dict = {"split": cfg.eval.split, "n_examples": len(dataset.split(cfg.eval.split))}
    for ev in EVALUATORS:
        if ev.applies(model, dataset):
            results.update(ev.run(ctx))
    results.update(train_throughput(run))
    write_json(run.eval, results)
    return results
