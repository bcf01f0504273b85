"""The pictures of a run: the model's own visuals on test data, loss curves, KL per latent unit, and for a
sequence model its rollouts drawn with axes (`_rollouts`)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .data import EVAL_SEED, prepare
from .files import read_json
from .models.capabilities import SequenceModel
from .plots import (
    save_bar_plot,
    save_frame_rollouts,
    save_image_grid,
    save_line_plot,
    save_loss_curves,
    save_vector_rollouts,
)
from .runfolder import curves, load_run, loss_terms, read_metrics


@torch.no_grad()
def write_plots(path: str | Path) -> list[Path]:
    """Writes RUN/plots/*.png and returns their paths."""
    model, dataset, cfg, run = load_run(path)
    written = []
    torch.manual_seed(EVAL_SEED)
    x = dataset.split(cfg.eval.split)[:64]
    x = prepare(x, dataset.scale, cfg.data.binarize, EVAL_SEED)
    sequences = isinstance(model, SequenceModel)
    for name, images in model.visuals(x).items():
        if not (sequences and name == "rollouts"):  # drawn with its axes below
            written.append(save_image_grid(images.cpu(), run.plots / f"{name}.png", nrow=8))
    if sequences:
        written.append(_rollouts(model, x, run.plots / "rollouts.png"))
    records = read_metrics(run.metrics)
    if records:
        written.append(save_loss_curves(curves(records, loss_terms(records)), run.plots / "loss_curves.png"))
        written += _kl_units_over_training(records, run.plots / "kl_per_unit_training.png")
    if run.eval.exists():
        results = read_json(run.eval)
        if isinstance(results.get("kl_per_dim"), list):
            written.append(save_bar_plot(results["kl_per_dim"], run.plots / "kl_per_dim.png",
                                         "KL per latent unit (test)", "unit", "KL (nats)"))
    return written


def _kl_units_over_training(records: list[dict], out: Path) -> list[Path]:
    """The kl_<i> terms of the validation passes (a VAE with model.log_kl_units), one line per unit."""
    val = [r for r in records if r["split"] == "val" and "kl_0" in r]
    if not val:
        return []
    units = sorted((k for k in val[0] if re.fullmatch(r"kl_\d+", k)), key=lambda k: int(k[3:]))
    lines = {f"unit {k[3:]}": [r.get(k) for r in val] for k in units}
    return [
        save_line_plot([r["step"] for r in val], lines, out, "KL per latent unit (validation)", "step", "KL (nats)")
    ]


def _rollouts(model, x: torch.Tensor, out: Path) -> Path:
    """TD-VAE's predictions after `rollout_context` observed steps, for a few test sequences: frames as a
    labelled grid of jumpy predictions of 1..max_jump steps (`TDVAE.predict`), vectors as one panel per
    dimension with the chained rollout to the sequence's end (`TDVAE.rollout`)."""
    context, length = model.rollout_context(), x.shape[1]
    if x.dim() == 5:  # (N, T, C, H, W)
        x = x[:4]
        predicted = model.predict(x[:, :context], range(1, min(model.config.max_jump, length - context) + 1))
        return save_frame_rollouts(x.cpu(), predicted.clamp(0, 1).cpu(), context, out,
                                   f"TD-VAE: {len(x)} test sequences, observed (frames 1-{context}),\nand jumpy "
                                   f"predictions of 1-{predicted.shape[1]} steps from the belief at {context}")
    x = x[:3]
    predicted = model.rollout(x[:, :context], [1] * (length - context))
    return save_vector_rollouts(x.cpu(), predicted.cpu(), context, out,
                                f"TD-VAE: {len(x)} test sequences, observed,\nand rolled out step by step after "
                                f"the first {context} (dotted line)")
