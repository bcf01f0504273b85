"""Measurements of models with discrete codes (`capabilities.CodeModel`) and of their priors.

Codebook health: the fraction of codes used and the perplexity of their frequencies on the split.

Bits per dimension. For any code map c, p(x) = sum_c' p(c') p(x | c') >= p(c) p(x | c), hence for the
encoder's codes c = q(x)
    -log p(x) <= -log p_prior(c) - log p(x | c)
an upper bound on the negative log-likelihood under the two-stage model (the VQ-VAE bound with a
deterministic one-hot posterior, van den Oord 2017, sec. 3.2). p(x | c) must be a probability of the
data's discrete values: the discretised logistic over the 256 values of 8-bit pixels, or the Bernoulli
for binarised data. bits_per_dim is the bound averaged over the split and divided by (number of data
dimensions) * ln 2; a class-conditional prior enters with its marginal p(c) = sum_y p(y) p(c | y),
p(y) uniform. eval.json also gets its two parts in nats, `prior_nll` and `decoder_nll`.

Reconstruction from VQ-VAE-2's top level alone (`recon_mse_top_only`).
"""

from __future__ import annotations

import math

import torch

from ..distributions import Bernoulli, DiscretizedLogistic
from ..models.capabilities import CodeModel
from ..models.priors import CodePrior
from ..models.vqvae2 import VQVAE2
from ..plots import save_bar_plot
from ..quantize import perplexity, usage
from .base import EvalContext, evaluator


@evaluator(lambda model, ds: isinstance(model, CodeModel))
@torch.no_grad()
def codebook_health(ctx: EvalContext) -> dict:
    """codebook_usage: fraction of the K codes chosen at least once on the split; codebook_perplexity:
    exp of the entropy of the codes' frequencies (K if all are used equally). One number per level
    (a list, coarsest first, for several levels), and plots/codebook_usage[_LEVEL].png."""
    levels = ctx.model.code_levels()
    counts = [torch.zeros(lv.codebook_size, dtype=torch.float64) for lv in levels]
    for maps in ctx.split_code_maps():
        for c, codes in zip(counts, maps):
            c += torch.bincount(codes.flatten().cpu(), minlength=len(c)).double()
    use = [float(usage(c)) for c in counts]
    ppl = [float(perplexity(c)) for c in counts]
    for lv, c, u, p in zip(levels, counts, use, ppl):
        suffix = "" if len(levels) == 1 else f"_{lv.name}"
        freq = (c / c.sum()).sort(descending=True).values
        save_bar_plot(freq.tolist(), ctx.run.plots / f"codebook_usage{suffix}.png",
                      f"{lv.name}: {u:.1%} of {lv.codebook_size} codes used, perplexity {p:.1f} ({ctx.split})",
                      "code (most used first)", "frequency")
    one = len(levels) == 1
    return {"codebook_usage": use[0] if one else use, "codebook_perplexity": ppl[0] if one else ppl}


def _discrete_likelihood(model, binarize: str) -> bool:
    return isinstance(model.likelihood, DiscretizedLogistic) or (
        isinstance(model.likelihood, Bernoulli) and binarize != "none"
    )


@evaluator(lambda model, ds: isinstance(model, CodeModel) and model.prior is not None)
@torch.no_grad()
def bits_per_dim(ctx: EvalContext) -> dict:
    """-log p(x) <= -log p_prior(codes) - log p(x | codes) in bits per data dimension (module docstring)."""
    model = ctx.model
    if not _discrete_likelihood(model, ctx.cfg.data.binarize):
        return {}
    prior = model.require_prior()
    prior_nll, decoder_nll, n = 0.0, 0.0, 0
    for x, codes in zip(ctx.progress(ctx.batches(), "bits/dim"), ctx.split_code_maps()):
        prior_nll -= float(prior.log_prob(codes).sum())
        decoder_nll -= float(model.log_px_given_codes(x, codes).sum())
        n += len(x)
    dims = math.prod(model.config.data_shape)
    return {
        "bits_per_dim": (prior_nll + decoder_nll) / n / (dims * math.log(2)),
        "prior_nll": prior_nll / n,
        "decoder_nll": decoder_nll / n,
    }


@evaluator(lambda model, ds: isinstance(model, CodePrior))
@torch.no_grad()
def code_nll(ctx: EvalContext) -> dict:
    """For a prior's own run folder: -log p(codes) per example (nats) and per code (bits)."""
    nll, n = 0.0, 0
    for x in ctx.progress(ctx.batches(), "prior NLL"):
        codes, _ = ctx.model.unpack(x)
        nll -= float(ctx.model.log_prob(codes).sum())
        n += len(x)
    per_example = nll / n
    return {"prior_nll": per_example, "bits_per_code": per_example / (ctx.model.config.data_shape[0] - 1) / math.log(2)}


@evaluator(lambda model, ds: isinstance(model, VQVAE2))
@torch.no_grad()
def top_only_reconstruction(ctx: EvalContext) -> dict:
    """recon_mse_top_only: squared error (summed over data dimensions) of reconstructions from the top
    codes alone, the bottom map filled with the expected bottom code (beside recon_mse, both levels)."""
    sq, n = 0.0, 0
    for x, codes in zip(ctx.progress(ctx.batches(), "top-only reconstruction"), ctx.split_code_maps()):
        sq += float(((ctx.model.decode_top_only(codes) - x) ** 2).flatten(1).sum())
        n += len(x)
    return {"recon_mse_top_only": sq / n}
