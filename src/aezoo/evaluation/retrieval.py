"""Retrieval in code space: are an example's nearest neighbours among the codes of the same class?

For labelled images or vectors, each example of the evaluated split (`eval.split`, test by default) is
a query; its K = 10 nearest neighbours are searched among the codes `model.encode(x)` (flattened;
posterior means for VAEs, the quantised vectors z_q for VQ models) of the first `eval.probe_train`
training examples, the same examples the feature probes learn from (`features`). precision@10 is the
fraction of the 10 neighbours that share the query's label, averaged over the queries, for two
distances: Euclidean and cosine (`features.nearest`). The same search on the raw inputs (the pixels
in [0, 1], binarised as the model sees them) is the baseline a code should beat:

    retrieval_p10_euclidean, retrieval_p10_cosine                  the model's codes
    retrieval_p10_pixels_euclidean, retrieval_p10_pixels_cosine    the inputs themselves
    retrieval_train_examples                                       the size of the searched set
"""

from __future__ import annotations

import torch

from .base import EvalContext, evaluator
from .features import MAX_TRAIN_NUMBERS, code_neighbours, labelled, nearest, neighbours

K = 10
METRICS = ("euclidean", "cosine")


def precision_at_k(train: torch.Tensor, train_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor,
                   k: int = K, metric: str = "euclidean") -> float:
    """The mean over queries of the fraction of their k nearest training rows with the query's label."""
    return precision_of(nearest(train, query, k, metric), train_y, query_y)


def precision_of(found: torch.Tensor, train_y: torch.Tensor, query_y: torch.Tensor) -> float:
    """`precision_at_k` from the neighbours' indices `found` (Q, k)."""
    return float((train_y[found] == query_y.unsqueeze(1)).float().mean())


@evaluator(labelled)
@torch.no_grad()
def retrieval(ctx: EvalContext) -> dict:
    """precision@10 of nearest neighbours in code space and in input space (module docstring)."""
    ds, e = ctx.dataset, ctx.cfg.eval
    query_y = ds.labels.get(ctx.split)
    if query_y is None:
        return {}
    query = ctx.split_codes()
    query_x = torch.cat([x.flatten(1).float() for x in ctx.batches()])
    width = max(query.shape[1], query_x.shape[1])
    n = min(e.probe_train or len(ds.x["train"]), max(1, MAX_TRAIN_NUMBERS // width))
    train_x = ctx.train_inputs(n)
    train_y = ds.labels["train"][:n].to(query.device).long()
    query_y = query_y[: len(query)].to(query.device).long()
    codes, pixels = code_neighbours(ctx, n, K), neighbours(train_x, query_x, K, METRICS)
    out = {}
    for metric in METRICS:
        out[f"retrieval_p10_{metric}"] = precision_of(codes[metric], train_y, query_y)
        out[f"retrieval_p10_pixels_{metric}"] = precision_of(pixels[metric], train_y, query_y)
    out["retrieval_train_examples"] = len(train_x)
    return out
