"""How well a model reconstructs the evaluated split."""

from __future__ import annotations

import math

from ..models.capabilities import CodeModel
from .base import EvalContext, evaluator, inference


def psnr(mse_per_dim: float) -> float:
    """Peak signal-to-noise ratio (dB) of data in [0, 1]."""
    return 10 * math.log10(1 / max(mse_per_dim, 1e-12))


@evaluator(lambda model, ds: ds.kind in ("image", "vector"))
@inference
def reconstruction(ctx: EvalContext) -> dict:
    """recon_mse: squared error summed over data dimensions. For data in [0, 1] (images, and vectors that
    lie there) also psnr, from the mean squared error per dimension, and recon_bce, the Bernoulli
    cross-entropy of the reconstruction's mean; neither means anything for other real values."""
    sq, bce, n, dims = 0.0, 0.0, 0, 0
    unit_range = True
    # a model with discrete codes decodes the split's code maps, encoded once for every evaluator
    maps = ctx.split_code_maps() if isinstance(ctx.model, CodeModel) else None
    for i, x in enumerate(ctx.progress(ctx.batches(), "reconstruction")):
        r = ctx.model.reconstruct(x) if maps is None else ctx.model.decode_codes(maps[i])
        sq += float(((r - x) ** 2).flatten(1).sum())
        unit_range = unit_range and bool(x.min() >= 0) and bool(x.max() <= 1)
        if unit_range:
            p = r.clamp(1e-6, 1 - 1e-6)
            bce += float(-(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum())
        n, dims = n + len(x), x[0].numel()
    mse = sq / n
    if not unit_range:
        return {"recon_mse": mse}
    return {"recon_mse": mse, "recon_bce": bce / n, "psnr": psnr(mse / dims)}
