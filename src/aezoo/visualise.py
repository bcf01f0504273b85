"""The pictures of a run: the model's own visuals on test data, loss curves, KL per latent unit."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .data import EVAL_SEED, prepare
from .files import read_json
from .plots import save_bar_plot, save_image_grid, save_line_plot, save_loss_curves
from .runfolder import curves, load_run, loss_terms, read_metrics


@torch.no_grad()
def write_plots(path: str | Path) -> list[Path]:
    """Writes RUN/plots/*.png and returns their paths."""
    model, dataset, cfg, run = load_run(path)
    written = []
    torch.manual_seed(EVAL_SEED)
    x = dataset.split(cfg.eval.split)[:64]
    x = prepare(x, dataset.scale, cfg.data.binarize, EVAL_SEED)
    for name, images in model.visuals(x).items():
        written.append(save_image_grid(images.cpu(), run.plots / f"{name}.png", nrow=8))
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
