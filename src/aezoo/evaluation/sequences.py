"""Predictions of sequence models (`capabilities.SequenceModel`): jumpy rollouts against copying the
last frame seen."""

from __future__ import annotations

import torch

from ..models.capabilities import SequenceModel
from ..plots import save_line_plot
from .base import EvalContext, evaluator


@evaluator(lambda model, ds: isinstance(model, SequenceModel))
@torch.no_grad()
def rollouts(ctx: EvalContext) -> dict:
    """rollout_mse[d - 1]: squared error summed over a frame's dimensions of the jumpy prediction of
    the frame d steps after the first `rollout_context` frames (one sampled state, the decoder's mean),
    for d = 1..J; rollout_mse_baseline: the same for copying the last frame seen. Also the loss and
    its terms on the evaluated split (for TD-VAE -J and its five terms, one random pair per sequence)."""
    model = ctx.model
    context = model.rollout_context()
    err, base, n = 0.0, 0.0, 0
    sums: dict[str, float] = {}
    for x in ctx.progress(ctx.batches(), "rollouts"):
        e, b = model.jump_errors(x, context)
        err, base, n = err + e.sum(0).cpu(), base + b.sum(0).cpu(), n + len(x)
        out = model.loss(x)
        for k, v in {"neg_j": out.total, **out.terms}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(x)
    mse, mse_base = (err / n).tolist(), (base / n).tolist()
    save_line_plot(range(1, len(mse) + 1), {f"{model.name} jumpy prediction": mse, "copy the last frame": mse_base},
                   ctx.run.plots / "rollout_mse.png", f"rollout error after {context} frames",
                   "jump (steps)", "squared error per frame")
    return {"rollout_context": context, "rollout_mse": mse, "rollout_mse_baseline": mse_base,
            **{k: v / n for k, v in sums.items()}}
