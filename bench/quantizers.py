"""VQ-VAE on MNIST with each quantiser of `aezoo.quantize` under one budget (`model.quantizer`).

Every variant trains `vqvae` with its defaults otherwise (hidden 64, residual 32 x 2, discretised
logistic likelihood of the 8-bit pixels, 7x7 code maps) for --steps steps of 100 images, then stage 2
(`train-prior`: the default gated PixelCNN, --prior-steps steps of 100 code maps), then `evaluate` on
the 10,000 test images. The code sizes are comparable:
  - vq:     K = 512 codes of D = 64 (EMA, dead-code restart after 50 steps)      9 bits per position
  - fsq:    levels (8, 8, 8), K = 512 (D = 3), no codebook                       9 bits per position
  - rvq:    2 codebooks of K = 512 (D = 64) on successive residuals (EMA, restart)
            18 bits per position: two code levels, both counted in bits/dim
  - gumbel: K = 512 codes of D = 64, tau 1 -> 1/16 exponentially over the stage-1 steps, KL weight 1
                                                                                   9 bits per position
Reported: recon_mse (squared error of the decoder's mean, summed over the 784 pixels in [0, 1]);
codebook_usage / codebook_perplexity on the test codes (for rvq one per depth); bits_per_dim =
(-log p_prior(codes) - log p(x | codes)) / (784 ln 2), with its parts prior_nll and decoder_nll in
nats; train_samples_per_s, the median stage-1 throughput, which other jobs on the shared 2-core machine
make noisy, hence also step_samples_per_s: training steps of the four models timed in turn, --rounds
rounds of 20 steps each (batch 100, fresh models, the median round), so that every variant meets the
same load. One torch thread. A variant whose run folder already holds its prior and eval.json is not
trained or evaluated again (its numbers are read back).

    .venv/bin/python bench/quantizers.py --steps 1000 --prior-steps 500 [--out runs/bench_quantizers]

The committed quantizers.json (1,000 + 500 steps; 44 min on the shared machine while other jobs ran,
then a second invocation, 100 s, that read the runs back and timed the steps; wall_time_s is that
one's, each variant's wall_s the first's). At 9 bits per position vq reconstructs best (recon_mse 3.16)
and has the lowest bits/dim (1.570), fsq is close behind (3.30, 1.601; 81% of its 512 grid points used,
perplexity 188 against vq's 198 with all 512 used) with no codebook to learn, and gumbel lags at this
budget (6.14, 1.634: 37% of its codes used, perplexity 43; its codes are the cheapest for the prior,
109 nats against 138, but the decoder pays 779 against 715). rvq's two 9-bit depths reconstruct best
of all (2.02, both codebooks fully used) but cost the most bits/dim (1.908): its first depth costs
the prior about what vq's codes do (134 nats on the prior's validation rows), its second depth 219
nats, while the decoder gains only 30 nats over vq (686 against 715). Throughputs: fsq's training
skips the 512-way nearest-code search and gumbel adds a 512-way softmax, relaxed one-hot and its
product with the codebook at every position; the machine's load makes both throughput columns noisy
(in the interleaved timing two invocations gave vq 726 and 516 samples/s, fsq 903 and 524).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import aezoo
from aezoo.config import make_run_config
from aezoo.evaluation import evaluate
from aezoo.registry import entry
from aezoo.train import train
from aezoo.train_prior import train_prior
from common import write_result


def variants(steps: int) -> dict[str, tuple[dict, int]]:
    """name: (model config, bits per code-map position)."""
    return {
        "vq": ({"quantizer": "vq", "codebook_size": 512}, 9),
        "fsq": ({"quantizer": "fsq", "fsq_levels": [8, 8, 8], "code_dim": 3}, 9),
        "rvq": ({"quantizer": "rvq", "codebook_size": 512, "rvq_depth": 2}, 18),
        "gumbel": ({"quantizer": "gumbel", "codebook_size": 512, "gumbel_anneal_steps": steps}, 9),
    }


RESULT = Path(__file__).with_suffix(".json")
KEYS = ("recon_mse", "psnr", "codebook_usage", "codebook_perplexity", "bits_per_dim", "prior_nll", "decoder_nll",
        "train_samples_per_s")


def run_variant(name: str, model_cfg: dict, bits: int, folder: Path, args) -> dict:
    wall, skipped = {}, (folder / "model.safetensors").exists()
    started = time.perf_counter()
    if not skipped:
        tree = {"model": model_cfg, "data": {"name": "mnist", "limit": args.limit},
                "train": {"steps": args.steps, "batch_size": 100, "val_every": args.steps, "progress": False}}
        train(make_run_config("vqvae", entry("vqvae").config_class, tree), folder)
    wall["stage1_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    if not (folder / "prior" / "model.safetensors").exists():
        train_prior(folder, steps=args.prior_steps,
                    overrides=[f"train.val_every={args.prior_steps}", "train.progress=false"])
    wall["prior_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    if (folder / "eval.json").exists() and (folder / "eval.json").stat().st_mtime > (folder / "prior").stat().st_mtime:
        results = json.loads((folder / "eval.json").read_text())
    else:
        results = evaluate(folder)
    wall["eval_s"] = round(time.perf_counter() - started, 1)
    out = {"config": model_cfg, "bits_per_position": bits, "bits_per_image": bits * 49}
    out.update({k: results[k] for k in KEYS if k in results})
    previous = json.loads(RESULT.read_text()).get("variants", {}).get(name, {}) if RESULT.exists() else {}
    if skipped and previous.get("run") == str(folder):  # trained by an earlier invocation: its times
        wall = previous["wall_s"]
    out.update(wall_s=wall, run=str(folder))
    print(name, json.dumps(out), flush=True)
    return out


def step_throughput(configs: dict[str, dict], rounds: int, steps: int = 20, batch: int = 100) -> dict[str, float]:
    """Training samples per second of each variant (Adam steps on random 8-bit images), the variants
    timed in turn round after round; the median round of each."""
    models = {name: aezoo.build("vqvae", **cfg).train() for name, cfg in configs.items()}
    optims = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in models.items()}
    x = torch.randint(0, 256, (batch, 1, 28, 28)).float() / 255
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds + 1):  # the first round warms up
        for name, model in models.items():
            started = time.perf_counter()
            for step in range(steps):
                loss = model.loss(x, step).total
                optims[name].zero_grad()
                loss.backward()
                optims[name].step()
            rates[name].append(steps * batch / (time.perf_counter() - started))
    return {name: statistics.median(r[1:]) for name, r in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--prior-steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", help="run only these variants")
    p.add_argument("--limit", type=int, default=0, help="data.limit, for a quick check of the script (0: all)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved step timing (0: none)")
    p.add_argument("--out", default="runs/bench_quantizers")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    chosen = {name: v for name, v in variants(args.steps).items() if not args.only or name in args.only}
    results = {name: run_variant(name, cfg, bits, out / name, args) for name, (cfg, bits) in chosen.items()}
    if args.rounds:
        for name, rate in step_throughput({n: cfg for n, (cfg, _) in chosen.items()}, args.rounds).items():
            results[name]["step_samples_per_s"] = rate
        print("step_samples_per_s", {n: round(r["step_samples_per_s"], 1) for n, r in results.items()}, flush=True)
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
            "model": "vqvae defaults but the quantiser: hidden 64, residual 32 x 2, D=64 (fsq: 3), logistic "
            "likelihood, 7x7 codes; prior: pixelcnn defaults (32 channels, 8 gated layers, 3x3, head 256), one "
            "PixelCNN per code level (rvq: two, the second conditioned on the first)",
            "variants": results,
            "wall_time_s": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
