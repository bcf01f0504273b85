"""`aezoo eval`: every measurement that applies to a run, written to `eval.json`.

One module per kind of measurement, each registering its evaluators (`base.evaluator`), chosen by the
model's declared capabilities and the kind of data:

    reconstruction    recon_mse, recon_bce, psnr                       any model on images or vectors
    likelihood        neg_elbo, nll_iwae, kl_per_dim, active_units     LikelihoodBound
    features          probe_linear_acc, probe_knn_acc; denoise_psnr    labelled data; Denoising
    retrieval         retrieval_p10_{euclidean,cosine}, ..._pixels_*   labelled data (precision@10 vs pixels)
    disentanglement   mig, betavae_score, factorvae_score, dci_*, sap  data rendered from a factor grid
    codes             codebook_usage, codebook_perplexity, bits_per_dim CodeModel (with its prior); priors
    sequences         rollout_mse, rollout_mse_baseline                SequenceModel
    finetune          finetune_*, scratch_*, logreg_* test errors      FeatureEncoder, labelled data (eval.finetune)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import write_json
from ..runfolder import load_run, read_metrics, steps_done_and_planned, train_throughput
from . import (  # noqa: F401  (register)
    codes,
    disentanglement,
    features,
    finetune,
    likelihood,
    reconstruction,
    retrieval,
    sequences,
)
from .base import EVAL_SEED, EVALUATORS, EvalContext, evaluator

__all__ = ["EVAL_SEED", "EVALUATORS", "EvalContext", "evaluate", "evaluator"]


def evaluate(path: str | Path, split: str | None = None) -> dict:
    """Runs every evaluator that applies to the run at `path`, writes RUN/eval.json and returns it."""
    model, dataset, cfg, run = load_run(path, split)
    ctx = EvalContext(model, dataset, cfg, cfg.eval.split, run)
    torch.manual_seed(EVAL_SEED)
    results: dict = {"split": cfg.eval.split, "n_examples": len(dataset.split(cfg.eval.split))}
    notes = []  # an evaluator's words on what it left out or what to read with care
    for ev in EVALUATORS:
        if ev.applies(model, dataset):
            out = ev.run(ctx)
            notes += out.pop("notes", [])
            results.update(out)
    records = read_metrics(run.metrics)
    results.update(train_throughput(records))
    done, planned = steps_done_and_planned({"steps": cfg.train.steps, "epochs": cfg.train.epochs}, records)
    if planned and done < planned:
        notes.append(f"the run stopped at step {done:,} of {planned:,} ({done / planned:.0%}): these numbers "
                     f"describe a model that has not finished training (`aezoo resume {run.path}` continues it)")
    if notes:
        results["notes"] = notes
    write_json(run.eval, results)
    return results
