"""`aezoo eval` for data rendered from a factor grid (dsprites): the disentanglement metrics.

The metrics see `eval.metric_samples` images drawn uniformly from the whole grid with the evaluation
seed (not the test split: the metrics are about the representation of every factor combination),
encoded by the model (posterior means for VAEs). All five metrics are computed from these codes and
their factors (see `scores` for how the interventional metrics sample their groups from them).

`eval.metric_protocol` chooses the estimators: `papers` (`metrics.scores`, each metric as its paper
defines it) or `dlib` (`metrics.dlib`, disentanglement_lib's, as in Locatello et al. 2019's tables;
its docstring tabulates the differences). The dlib protocol needs at least `dlib.POOL` images (its
10,000 training and 5,000 test examples) and draws that many when eval.metric_samples is smaller.
The keys are the same under both; eval.json's `metric_protocol` says which was used.
"""

from __future__ import annotations

import torch

from ..data.dsprites import factor_grid
from ..metrics import dlib, scores
from .base import EVAL_SEED, EvalContext, cpu_inference, evaluator

VARYING = 0.01  # a code's variance over the data above which it carries information (as active units)
# Images rendered and encoded at once on the CPU: a conv encoder's first activations for 128 dSprites
# images (16 MB) stay in a 32 MB L3 cache, and chunks of 500 (65 MB) spill to memory and encode ~2.5x
# slower per image; the codes do not depend on the chunk. Other devices use eval.batch_size.
CPU_CHUNK = 128


@torch.no_grad()
def encode_grid_sample(model, grid, n: int, batch_size: int, seed: int = EVAL_SEED, progress=lambda it, desc: it):
    """(codes (n, D) float64 numpy, factors (n, K) int64 numpy) for n factor tuples drawn uniformly."""
    factors = grid.sample(n, torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    chunk = min(batch_size, CPU_CHUNK) if device.type == "cpu" else batch_size
    with cpu_inference(model):
        codes = [model.encode(grid.images(part, device).float()).flatten(1).double().cpu()
                 for part in progress(factors.split(chunk), f"disentanglement: encoding {n:,} images")]
    return torch.cat(codes).numpy(), factors.numpy()


def _papers(codes, factors, discrete) -> dict:
    """The metrics of `scores`, each a function of nothing (so that progress can name each one)."""
    return {
        "mig": lambda: scores.mig(codes, factors),
        "betavae_score": lambda: scores.betavae_score(codes, factors),
        "factorvae_score": lambda: scores.factorvae_score(codes, factors),
        "dci": lambda: scores.dci(codes, factors, discrete=discrete),
        "sap": lambda: scores.sap(codes, factors, discrete=discrete),
    }


def _dlib(codes, factors, discrete) -> dict:
    """The metrics of `metrics.dlib` (every factor discrete there, as in disentanglement_lib's study)."""
    return {
        "mig": lambda: dlib.mig(codes, factors),
        "betavae_score": lambda: dlib.betavae_score(codes, factors),
        "factorvae_score": lambda: dlib.factorvae_score(codes, factors),
        "dci": lambda: dlib.dci(codes, factors),
        "sap": lambda: dlib.sap(codes, factors),
    }


@evaluator(lambda model, ds: factor_grid(ds) is not None)
def disentanglement(ctx: EvalContext) -> dict:
    """mig, betavae_score, factorvae_score, dci_* and sap of the model's codes (module docstring). A model
    whose codes do not vary over the data (a collapsed VAE) still gets numbers, chance levels and noise;
    a note in eval.json says so."""
    grid = factor_grid(ctx.dataset)
    e = ctx.cfg.eval
    n = max(e.metric_samples, dlib.POOL) if e.metric_protocol == "dlib" else e.metric_samples
    codes, factors = encode_grid_sample(ctx.model, grid, n, e.batch_size, progress=ctx.progress)
    metrics = (_dlib if e.metric_protocol == "dlib" else _papers)(codes, factors, grid.categorical)
    stage = f"disentanglement: {e.metric_protocol} metrics ({', '.join(metrics)})"
    out = {name: metrics[name]() for name in ctx.progress(list(metrics), stage)}
    varying = int((codes.var(0) > VARYING).sum())
    notes = [] if varying else [f"no code varies over the data (variance above {VARYING} in none of {codes.shape[1]}): "
                                "the model has collapsed and the disentanglement scores measure noise"]
    return {
        "notes": notes,
        "mig": out["mig"],
        "betavae_score": out["betavae_score"],
        "factorvae_score": out["factorvae_score"],
        "dci_disentanglement": out["dci"]["disentanglement"],
        "dci_completeness": out["dci"]["completeness"],
        "dci_informativeness": out["dci"]["informativeness"],
        "sap": out["sap"],
        "metric_samples": n,
        "metric_protocol": e.metric_protocol,
    }
