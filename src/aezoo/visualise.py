"""The pictures of a run: the model's own visuals on test data, loss curves, and per-key eval plots."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import prepare
from .evaluate import EVAL_SEED, load_run
from .plots import save_bar_plot, save_image_grid, save_loss_curves


@torch.no_grad()
def write_plots(path: str | Path) -> list[Path]:
    """Writes RUN/plots/*.png and returns their paths."""
    model, dataset, cfg, run = load_run(path)
    written = []
    torch.manual_seed(EVAL_SEED)
    x = dataset.split(cfg.eval.split)[:64]
    x = prepare(x, dataset.scale, cfg.data.binarize, EVAL_SEED)
    for name, images in model.visuals(x).items():
        out = run.plots / f"{name}.png"
        save_image_grid(images.cpu(), out, nrow=8)
        written.append(out)
    if run.metrics.exists():
        save_loss_curves(run.metrics, run.plots / "loss_curves.png")
        written.append(run.plots / "loss_curves.png")
    if run.eval.exists():
        results = json.loads(run.eval.read_text())
        if isinstance(results.get("kl_per_dim"), list):
            save_bar_plot(results["kl_per_dim"], run.plots / "kl_per_dim.png", "KL per latent unit (test)", "unit", "KL (nats)")
            written.append(run.plots / "kl_per_dim.png")
    return written
