"""`aezoo eval` for data rendered from a factor grid (dsprites): the disentanglement metrics.

The metrics see `eval.metric_samples` images drawn uniformly from the whole grid with the evaluation
seed (not the test split: the metrics are about the representation of every factor combination),
encoded by the model (posterior means for VAEs). All five metrics are computed from these codes and
their factors (see `scores` for how the interventional metrics sample their groups from them).
"""

from __future__ import annotations

import torch

from ..data.dsprites import factor_grid
from ..metrics import scores
from .base import EVAL_SEED, EvalContext, evaluator

VARYING = 0.01  # a code's variance over the data above which it carries information (as active units)


@torch.no_grad()
def encode_grid_sample(model, grid, n: int, batch_size: int, seed: int = EVAL_SEED, progress=lambda it, desc: it):
    """(codes (n, D) float64 numpy, factors (n, K) int64 numpy) for n factor tuples drawn uniformly."""
    factors = grid.sample(n, torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    codes = [model.encode(grid.images(chunk, device).float()).flatten(1).double().cpu()
             for chunk in progress(factors.split(batch_size), "disentanglement: encoding")]
    return torch.cat(codes).numpy(), factors.numpy()


@evaluator(lambda model, ds: factor_grid(ds) is not None)
def disentanglement(ctx: EvalContext) -> dict:
    """mig, betavae_score, factorvae_score, dci_* and sap of the model's codes (module docstring). A model
    whose codes do not vary over the data (a collapsed VAE) still gets numbers, chance levels and noise;
    a note in eval.json says so."""
    grid = factor_grid(ctx.dataset)
    e = ctx.cfg.eval
    codes, factors = encode_grid_sample(ctx.model, grid, e.metric_samples, e.batch_size, progress=ctx.progress)
    dci = scores.dci(codes, factors, discrete=grid.categorical)
    varying = int((codes.var(0) > VARYING).sum())
    notes = [] if varying else [f"no code varies over the data (variance above {VARYING} in none of {codes.shape[1]}): "
                                "the model has collapsed and the disentanglement scores measure noise"]
    return {
        "notes": notes,
        "mig": scores.mig(codes, factors),
        "betavae_score": scores.betavae_score(codes, factors),
        "factorvae_score": scores.factorvae_score(codes, factors),
        "dci_disentanglement": dci["disentanglement"],
        "dci_completeness": dci["completeness"],
        "dci_informativeness": dci["informativeness"],
        "sap": scores.sap(codes, factors, discrete=grid.categorical),
        "metric_samples": e.metric_samples,
    }
