"""VQ-VAE on MNIST under one step budget: EMA or gradient codebook, with or without dead-code restart.

Each of the four variants trains `vqvae` with its defaults otherwise (hidden 64, K = 512 codes of
D = 64, beta = 0.25, discretised logistic likelihood of the 8-bit pixels, 7x7 code maps) for
--steps steps of 100 images, then stage 2 (`train-prior`: the default gated PixelCNN, --prior-steps
steps of 100 code maps), then `aezoo eval` on the 10,000 test images:
  - recon_mse: squared error of the decoder's mean, summed over the 784 pixels (in [0, 1]);
  - codebook_usage / codebook_perplexity on the test codes;
  - bits_per_dim = (-log p_prior(codes) - log p(x | codes)) / (784 ln 2), an upper bound on the
    negative log-likelihood (aezoo.prior), with its two parts in nats;
  - sample_per_s: images drawn through the prior (49 PixelCNN passes) and decoded, batch of 100;
  - train_samples_per_s: the median training throughput of stage 1.
The run folders (with report.html and its prior-sample grid) stay in --out; the sample grid and the
usage histogram of the EMA + restart variant are copied beside this script.

Torch runs on one thread: on the shared, oversubscribed 2-core machine two threads made a training
step 5-15x slower.

    .venv/bin/python bench/vqvae.py --steps 1500 --prior-steps 800 [--out runs/bench_vqvae]

The committed vqvae.json (1,500 + 800 steps, 42 min on the shared machine while other jobs ran, so
the throughputs there are noisy): without restart only 14% (EMA) / 11% (gradient) of the 512 codes
are used on the test set, perplexity 34 / 40; with restart every code is used, perplexity 209 / 304,
and EMA + restart reconstructs best (recon_mse 2.58 against 3.5-3.7). bits/dim is 1.49-1.59 for all
four and slightly lower without restart: with few codes the prior's part of the bound is smaller
(94 against 133-137 nats per image) while the decoder's part grows less (714 against 703 nats).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import aezoo
from aezoo.config import make_run_config
from aezoo.evaluation import evaluate
from aezoo.registry import entry
from aezoo.report import write_report
from aezoo.train import train
from aezoo.train_prior import train_prior
from aezoo.visualise import write_plots
from common import write_result

HERE = Path(__file__).parent
VARIANTS = {
    "ema+restart": {"codebook_update": "ema", "restart_after": 50},
    "ema": {"codebook_update": "ema", "restart_after": 0},
    "gradient+restart": {"codebook_update": "gradient", "restart_after": 50},
    "gradient": {"codebook_update": "gradient", "restart_after": 0},
}
KEYS = ("recon_mse", "psnr", "codebook_usage", "codebook_perplexity", "bits_per_dim", "prior_nll", "decoder_nll",
        "train_samples_per_s")


def run_variant(name: str, model_cfg: dict, folder: Path, args) -> dict:
    wall = {}
    started = time.perf_counter()
    if not (folder / "model.safetensors").exists():
        tree = {"model": model_cfg, "data": {"name": "mnist"},
                "train": {"steps": args.steps, "batch_size": 100, "val_every": args.steps, "progress": False}}
        train(make_run_config("vqvae", entry("vqvae").config_class, tree), folder)
    wall["stage1_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    if not (folder / "prior" / "model.safetensors").exists():
        train_prior(folder, steps=args.prior_steps,
                    overrides=[f"train.val_every={args.prior_steps}", "train.progress=false"])
    wall["prior_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    results = evaluate(folder)
    wall["eval_s"] = round(time.perf_counter() - started, 1)
    write_plots(folder)
    write_report(folder)

    model = aezoo.load(folder)
    torch.manual_seed(0)
    model.sample(4)  # warm-up
    started = time.perf_counter()
    model.sample(100)
    rate = 100 / (time.perf_counter() - started)
    out = {k: results[k] for k in KEYS if k in results}
    out.update(sample_per_s=rate, wall_s=wall, run=str(folder))
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--prior-steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_vqvae")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    results = {name: run_variant(name, cfg, out / name.replace("+", "_"), args) for name, cfg in VARIANTS.items()}
    best = out / "ema_restart" / "plots"
    for plot, target in (
        ("prior_samples.png", "vqvae_samples.png"),
        ("codebook_usage.png", "vqvae_codebook_usage.png"),
    ):
        if (best / plot).exists():
            shutil.copy(best / plot, HERE / target)
    write_result(
        __file__,
        {
            "budget": {
                "dataset": "mnist (50k train, 10k test, 8-bit grey)",
                "stage1_steps": args.steps,
                "batch_size": 100,
                "prior_steps": args.prior_steps,
                "prior_batch_size": 100,
                "threads": args.threads,
            },
            "model": "vqvae defaults: hidden 64, residual 32 x 2, K=512, D=64, beta=0.25, logistic likelihood, "
            "7x7 codes; prior: pixelcnn defaults (32 channels, 8 gated layers, 3x3, head 256)",
            "variants": results,
            "wall_time_s": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
