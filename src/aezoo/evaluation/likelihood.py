"""Bounds on -log p(x) for models that give one (`capabilities.LikelihoodBound`)."""

from __future__ import annotations

import torch

from ..data import value_kind
from ..distributions import Bernoulli
from ..models.capabilities import LikelihoodBound
from .base import EvalContext, evaluator, inference

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, sec. 5.2


@evaluator(lambda model, ds: isinstance(model, LikelihoodBound))
@inference
def likelihood(ctx: EvalContext) -> dict:
    """neg_elbo (one sample of z per example), the IWAE estimate of -log p(x) with k = eval.nll_k
    samples (Burda et al. 2016, eq. 8), the KL per latent unit, and the active units
    A_u = Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016, sec. 5.2). A Bernoulli likelihood on data that is not
    binary is no density of it (grey levels in [0, 1] are not its outcomes): the two bounds are then left
    out, and a note in eval.json says why."""
    e = ctx.cfg.eval
    density = not (isinstance(ctx.model.likelihood, Bernoulli)
                   and value_kind(ctx.dataset, ctx.cfg.data.binarize) != "binary")
    neg_elbo, nll, n = 0.0, 0.0, 0
    kl_units, means = 0.0, []
    for x in ctx.progress(ctx.batches(), f"IWAE k={e.nll_k}" if density else "KL per unit"):
        recon, kl = ctx.model.elbo_parts(x)
        neg_elbo += float((recon + kl.sum(1)).sum())
        kl_units = kl_units + kl.sum(0)
        means.append(ctx.model.encode(x))
        if density:
            nll += float(ctx.model.nll_iwae(x, e.nll_k, e.nll_batch).sum())
        n += len(x)
    mu = torch.cat(means)
    usage = {"kl_per_dim": (kl_units / n).tolist(), "active_units": int((mu.var(0) > ACTIVE_UNIT_THRESHOLD).sum())}
    if not density:
        return {**usage, "notes": ["neg_elbo and nll_iwae left out: a Bernoulli likelihood on data that is not "
                                   "binary is no density of it (set data.binarize, or model.likelihood=logistic "
                                   "for 8-bit images)"]}
    return {"neg_elbo": neg_elbo / n, "nll_iwae": nll / n, "nll_iwae_k": e.nll_k, **usage}
