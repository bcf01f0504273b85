"""beta = 1, beta = 4 and the capacity objective on dSprites under one step budget: every metric.

Three runs of configs/beta_vae_dsprites.toml (the conv net of Burgess et al. 2018, batch 64, Adam)
that differ only in how the KL enters the loss:
  beta4     objective=beta, beta=4 (Higgins et al. 2017; anchor: beta-VAE metric 99.2%, beta = 1: 61.6%)
  beta1     objective=beta, beta=1 (the plain VAE's ELBO)
  capacity  objective=capacity, gamma=1000, C from 0 to C_max=25 nats over the whole budget (Burgess)
The learning rate is 1e-3 rather than the config's 5e-4: every run first sits on a plateau where
it draws the mean image and its KL falls to ~0; in pilots with beta = 1 this lasted ~40k images at
1e-3 and more than 77k at 5e-4, too much of a CPU budget of a few thousand steps.
Each is evaluated by `aezoo eval` with eval.metric_samples images from the grid (default 50,000) and
a 10-sample IWAE estimate on the 1,000 test images. Torch runs on one thread (on a shared CPU two
threads were five times slower than one).

    .venv/bin/python bench/beta_vae_dsprites.py --steps 2400 [--out /tmp/bench_bvae]   # the committed JSON
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
from common import write_result

from aezoo.config import make_run_config, merge, read_config_file
from aezoo.evaluate import evaluate
from aezoo.registry import entry
from aezoo.train import train

ROOT = Path(__file__).parents[1]
VARIANTS = {
    "beta4": {"objective": "beta", "beta": 4.0},
    "beta1": {"objective": "beta", "beta": 1.0},
    "capacity": {"objective": "capacity", "gamma": 1000.0, "capacity_max": 25.0},  # capacity_steps = budget
}
KEYS = ("betavae_score", "factorvae_score", "mig", "dci_disentanglement", "dci_completeness",
        "dci_informativeness", "sap", "neg_elbo", "nll_iwae", "recon_bce", "active_units", "kl_per_dim",
        "train_samples_per_s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--metric-samples", type=int, default=50_000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for the three runs (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    base = read_config_file(ROOT / "configs" / "beta_vae_dsprites.toml")
    base.pop("model_name")
    out = Path(args.out or tempfile.mkdtemp())
    overrides = {"train": {"steps": args.steps, "lr": args.lr, "val_every": max(1, args.steps // 10), "progress": False,
                           "checkpoint_every": args.steps},
                 "eval": {"metric_samples": args.metric_samples, "nll_k": 10}}
    results = {}
    for name, model in VARIANTS.items():
        model = {**model, "capacity_steps": args.steps} if model["objective"] == "capacity" else model
        cfg = make_run_config("beta_vae", entry("beta_vae").config_class,
                              merge(base, merge(overrides, {"model": model})))
        run = out / name
        started = time.perf_counter()
        if not (run / "model.safetensors").exists():
            train(cfg, run)
        trained = time.perf_counter()
        ev = evaluate(run)
        done = time.perf_counter()
        results[name] = {"model": model, **{k: ev[k] for k in KEYS if k in ev},
                         "train_wall_s": round(trained - started, 1), "eval_wall_s": round(done - trained, 1)}
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "kl_per_dim"}), flush=True)

    c = base
    path = write_result(__file__, {
        "budget": {"steps": args.steps, "batch_size": c["train"]["batch_size"], "lr": args.lr,
                   "images_seen": args.steps * c["train"]["batch_size"], "epochs": args.steps * c["train"]["batch_size"] / 735_280,
                   "metric_samples": args.metric_samples, "torch_threads": args.threads},
        "anchors": {"betavae_score": {"beta4": 0.992, "beta1": 0.616, "source": "Higgins et al. 2017, sec. 4 (dSprites)"}},
        "wall_s": round(sum(r["train_wall_s"] + r["eval_wall_s"] for r in results.values()), 1),
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
