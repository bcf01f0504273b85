"""VQ-VAE-2 on MNIST padded to 32x32, both stages, under one step budget.

Stage 1: `vqvae2` with its defaults (hidden 64, K = 512 codes of D = 64 per level, EMA codebooks with
dead-code restart, discretised logistic likelihood); the model pads 28x28 to 32x32 itself, so the
code maps are 4x4 (top) and 8x8 (bottom) and every error below is over MNIST's 784 pixels.
Stage 2: `aezoo train-prior` (PixelSNAIL defaults: 64 channels, 2 blocks of 2 gated residual blocks
and one 4-head causal attention block; the top prior unconditional, the bottom one given the top).
Then `aezoo eval` on the 10,000 test images, and:
  - recon_mse (both levels) against recon_mse_top_only (bottom map filled with the expected bottom
    code, weighted by the EMA counts); on the first 500 test images also a bottom map of zero
    vectors, bottom codes drawn from the bottom prior given the top codes, and the decoder given
    the right bottom codes with another image's top codes (how much the decoder itself uses the top);
  - bits_per_dim = (-log p_prior(codes) - log p(x | codes)) / (784 ln 2), and its two parts;
  - codebook usage and perplexity per level;
  - 64 samples (top, then bottom given top, decoded) at temperature 1 and a reconstruction grid,
    written beside this script.

Torch runs on one thread: on the shared 2-core machine two threads ran a training step 3x slower.

    .venv/bin/python bench/vqvae2.py --steps 3000 --prior-steps 2000 [--out /tmp/bench_vqvae2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.config import make_run_config
from aezoo.evaluation import evaluate
from aezoo.plots import save_image_grid
from aezoo.registry import entry
from aezoo.runfolder import load_run
from aezoo.train import train
from aezoo.train_prior import train_prior
from common import write_result

HERE = Path(__file__).parent
KEYS = ("recon_mse", "recon_mse_top_only", "psnr", "bits_per_dim", "prior_nll", "decoder_nll",
        "codebook_usage", "codebook_perplexity", "train_samples_per_s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--prior-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="the run folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.out or tempfile.mkdtemp()) / "vqvae2"
    # Stages already done in --out are not repeated; their wall times were kept in timings.json.
    timings_file = run.parent / "timings.json"
    wall = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def timed(stage: str, fn) -> None:
        run.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        fn()
        wall[stage] = round(time.perf_counter() - started, 1)
        timings_file.write_text(json.dumps(wall))

    tree = {"data": {"name": "mnist"},
            "train": {"steps": args.steps, "batch_size": args.batch_size, "val_every": args.steps, "progress": False}}
    cfg = make_run_config("vqvae2", entry("vqvae2").config_class, tree)
    if not (run / "model.safetensors").exists():
        timed("stage1", lambda: train(cfg, run))
    if not (run / "prior" / "model.safetensors").exists():
        overrides = [
            f"train.batch_size={args.batch_size}",
            f"train.val_every={args.prior_steps}",
            "train.progress=false",
        ]
        timed("prior", lambda: train_prior(run, overrides=overrides, steps=args.prior_steps))
    ev = {}
    timed("eval", lambda: ev.update(evaluate(run)))

    model, dataset, _, _ = load_run(run)
    x = dataset.split("test")[:500].float() / dataset.scale

    def mse(r: torch.Tensor) -> float:  # summed over pixels, mean over the 500 images
        return float(((r - x) ** 2).flatten(1).sum(1).mean())

    with torch.no_grad():
        torch.manual_seed(0)
        top, bottom = model.codes(x)
        subset = {
            "recon_mse": mse(model.decode_codes([top, bottom])),
            "recon_mse_top_only_mean_fill": mse(model.reconstruct_top_only(x, "mean")),
            "recon_mse_top_only_zero_fill": mse(model.reconstruct_top_only(x, "zero")),
            "recon_mse_top_only_prior_fill": mse(model.reconstruct_top_only(x, "prior")),
            # the decoder's own use of the top map: bottom codes kept, top codes of another image
            "recon_mse_top_codes_of_another_image": mse(model.decode_codes([top.roll(1, 0), bottom])),
        }
        rows = [
            x[:16],
            model.reconstruct(x[:16]),
            model.reconstruct_top_only(x[:16]),
            model.reconstruct_top_only(x[:16], "prior"),
        ]  # originals, both levels, top only (mean, prior fill)
        save_image_grid(torch.cat(rows).clamp(0, 1), HERE / "vqvae2_reconstructions.png", nrow=16)
        torch.manual_seed(0)
        t4 = time.perf_counter()
        samples = model.sample(64)
        t5 = time.perf_counter()
    save_image_grid(samples.clamp(0, 1), HERE / "vqvae2_samples.png", nrow=8)

    result = {
        "budget": {
            "stage1_steps": args.steps,
            "prior_steps": args.prior_steps,
            "batch_size": args.batch_size,
            "data": "mnist (28x28, padded to 32x32 inside the model)",
            "eval_split": ev["split"],
            "threads": args.threads,
        },
        "model": {k: v for k, v in json.loads((run / "config.json").read_text())["model"].items() if k != "data_shape"},
        "prior": json.loads((run / "prior" / "config.json").read_text())["model"],
        **{k: ev[k] for k in KEYS if k in ev},
        "first_500_test_images": subset,
        "codebook_usage_by_level": dict(zip(("top", "bottom"), ev["codebook_usage"])),
        "codebook_perplexity_by_level": dict(zip(("top", "bottom"), ev["codebook_perplexity"])),
        "recon_note": "squared error summed over 784 pixels, mean over the images. top_only (mean fill): bottom map "
        "replaced by the EMA-count-weighted mean bottom code; zero fill: by zero vectors; prior fill: "
        "bottom codes drawn from the bottom prior given the image's top codes (temperature 1)",
        "samples_per_s": 64 / (t5 - t4),
        "wall_s": {**wall, "samples_64": round(t5 - t4, 1), "total": round(sum(wall.values()) + t5 - t4, 1)},
        "files": ["vqvae2_samples.png", "vqvae2_reconstructions.png"],
    }
    print(json.dumps(result, indent=2), flush=True)
    write_result(__file__, result)


if __name__ == "__main__":
    main()
