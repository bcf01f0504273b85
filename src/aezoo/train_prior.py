"""Stage 2 for models with discrete codes (`capabilities.CodeModel`: VQ-VAE, VQ-VAE-2): a prior over
their code maps, trained as an ordinary run of the one engine.

`aezoo train-prior RUN` is these steps:
  1. extract the code maps of every split of the run's data, with the labels, into
     RUN/prior/codes.safetensors (the `codes` dataset, `data.codes`);
  2. train the prior (a registered model, the code model's `default_prior` unless asked otherwise)
     on them with `train.train`, so RUN/prior/ is a run folder like any other: config.json, whose
     `prior` section records the code shapes, codebook sizes, source model and a hash of the weights
     that made the codes; model.safetensors; metrics.jsonl; resume.pt for `aezoo resume RUN/prior`.
The same prior trains from any codes file with `aezoo train pixelcnn --data codes --set data.dir=DIR`.
Loading the run (`aezoo.load`, sample, eval, report) attaches its prior (`CodeModel.load_weights_from`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import registry
from .config import merge, parse_overrides
from .data import EVAL_SEED, Batches, Dataset, load_dataset
from .data.codes import CODES_FILE
from .distributed import pick_device
from .errors import AezooError, unknown_name
from .files import save_weights
from .models.capabilities import PRIOR_FOLDER, CodeModel, weights_hash
from .models.priors import pack_codes
from .progress import progress
from .runfolder import RunFolder
from .train import train

# The prior's training budget and settings unless the user sets train.* (the engine's defaults otherwise).
PRIOR_TRAIN_DEFAULTS = {"epochs": 2, "batch_size": 100, "lr": 1e-3, "log_every": 50}


@torch.no_grad()
def extract_codes(model: CodeModel, dataset: Dataset, binarize: str, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Packed rows (N, 1 + sum H W) int32 of every split: [label (0 without labels), codes...]."""
    out = {}
    for split in dataset.x:
        batches = Batches(dataset, split, batch_size, binarize, seed=EVAL_SEED, shuffle=False)
        rows = []
        for i in progress(range(len(batches)), f"codes ({split})"):
            rows.append(pack_codes(model.codes(batches.get(i)), batches.labels(i)).to(torch.int32).cpu())
        out[split] = torch.cat(rows)
    return out


def prior_folder(run: str | Path) -> RunFolder:
    return RunFolder(Path(run) / PRIOR_FOLDER)


def train_prior(run_path: str | Path, prior: str | None = None, overrides: list[str] = (),
                steps: int | None = None, epochs: int | None = None) -> RunFolder:
    """Stage 2 (module docstring). `overrides` are `prior.key=value` (the prior's config) or
    `train.key=value` / `eval.key=value` / `data.limit=N` for its training run."""
    run = RunFolder(Path(run_path))
    if not run.config.exists() or not run.weights.exists():
        raise AezooError(f"{run.path}: no trained run here (config.json or model.safetensors missing)")
    cfg = registry.load_run_config(run.path)
    if not issubclass(registry.entry(cfg.model_name).model_class, CodeModel):
        raise AezooError(f"{cfg.model_name} has no discrete codes: train-prior is stage 2 of vqvae and vqvae2")
    out = prior_folder(run.path)
    if out.config.exists():
        raise AezooError(f"{out.path} already holds a prior: `aezoo resume {out.path}` continues it; "
                         "delete the folder to train a new one")
    device = pick_device(cfg.train.device)
    model = registry.load(run.path, device=str(device))
    name = prior or model.default_prior
    if name not in registry.PRIORS:
        raise unknown_name("prior", name, registry.PRIORS)
    entry = registry.PRIORS[name]
    user = parse_overrides(list(overrides))
    if "model" in user or {"name", "dir"} & set(user.get("data", {})):
        raise AezooError("train-prior sets the prior with prior.key=value; data.name and data.dir are its own")
    levels = model.code_levels()
    tree = {
        "prior": {"code_shapes": [s for lv in levels for s in lv.shape],
                  "codebook_sizes": [lv.codebook_size for lv in levels],
                  "data_shape": [1 + sum(h * w for lv in levels for h, w in [lv.shape])],
                  "source": cfg.model_name, "source_weights": weights_hash(run.weights)},
        "data": {"name": "codes", "dir": str(out.path.resolve())},
        "train": {**PRIOR_TRAIN_DEFAULTS, "device": cfg.train.device, "seed": cfg.train.seed,
                  "progress": cfg.train.progress},
    }
    if steps is not None:
        tree["train"]["steps"] = steps
    if epochs is not None:
        tree["train"].update(epochs=epochs, steps=0)
    prior_cfg = entry.run_config(merge(tree, user))  # every mistake is caught here, before anything is written

    data = load_dataset(cfg.data).to(device)
    rows = extract_codes(model.eval(), data, cfg.data.binarize, cfg.eval.batch_size)
    k = prior_cfg.model.num_classes
    if k and (not data.labels or max(int(r[:, 0].max()) for r in rows.values()) >= k):
        raise AezooError(f"prior.num_classes={k}: the data's labels must lie in 0..{k - 1}"
                         if data.labels else f"prior.num_classes={k}: {cfg.data.name} has no labels")
    save_weights(out.path / CODES_FILE, rows)
    return train(prior_cfg, out.path)
