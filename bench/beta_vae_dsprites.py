"""beta = 1, beta = 4 and the capacity objective on dSprites under one step budget: every metric.

Three runs of configs/beta_vae_dsprites.toml (the conv net of Burgess et al. 2018, batch 64, Adam)
that differ only in how the KL enters the loss:
  beta4     objective=beta, beta=4 (Higgins et al. 2017; anchor: beta-VAE metric 99.2%, beta = 1: 61.6%)
  beta1     objective=beta, beta=1 (the plain VAE's ELBO)
  capacity  objective=capacity, C from 0 to C_max=25 nats over the whole budget (Burgess et al. 2018),
            gamma = 10 (--gamma; CAPACITY_NOTE says why not Burgess's 1000 at this budget)
The learning rate is 1e-3 rather than the config's 5e-4: every run first sits on a plateau where
it draws the mean image and its KL falls to ~0; in pilots with beta = 1 this lasted ~40k images at
1e-3 and more than 77k at 5e-4, too much of a CPU budget of a few thousand steps.
Each is evaluated by `aezoo eval` with eval.metric_samples images from the grid (default 50,000) and
a 10-sample IWAE estimate on the 1,000 test images. Torch runs on one thread (on a shared CPU two
threads were five times slower than one).

Runs live in OUT/s<seed>/<variant> and are trained once (a run with model.safetensors is only
re-evaluated), so the runs can be trained by two processes side by side and collected by a last call,
which evaluates every run, writes this JSON (per seed, and mean/min/max over seeds) and the
traversals of the first seed's models (beta_vae_dsprites_traversals_<variant>.png). The committed JSON:

    OUT=/tmp/bvae12k; run="nohup env OMP_NUM_THREADS=1 .venv/bin/python bench/beta_vae_dsprites.py --out $OUT"
    $run --seeds 0 --variants beta4 --train &  $run --seeds 0 --variants beta1 --train &
    $run --seeds 0 --variants capacity --train &          # when beta4 is done: two processes at a time
    $run --seeds 1 --variants beta4 --train &  $run --seeds 1 --variants beta1 --train &  # as time allowed
    $run --seeds 0,1                                      # 8,000 steps: evaluates, writes the JSON
(beta4 seed 0 was interrupted at step 3,265 and resumed with its total set to 8,000, beta1 seed 0
trained to 7,000 and resumed to 8,000; capacity seed 1 was trained a session later, with the fused
optimiser that had become the default: the JSON's notes.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.config import make_run_config, merge, read_config_file
from aezoo.data.dsprites import DSprites
from aezoo.evaluation import evaluate
from aezoo.plots import save_image_grid
from aezoo.registry import entry, load
from aezoo.train import train
from common import write_result

ROOT = Path(__file__).parents[1]
VARIANTS = {
    "beta4": {"objective": "beta", "beta": 4.0},
    "beta1": {"objective": "beta", "beta": 1.0},
    "capacity": {"objective": "capacity", "capacity_max": 25.0},  # gamma from --gamma, capacity_steps = budget
}
CAPACITY_NOTE = (
    "gamma = 10, C from 0 to 25 nats over the whole budget, rather than Burgess et al.'s gamma = 1000 (whose C "
    "rises over 100k steps). With gamma = 1000 and C raised over 2,400 steps the first benchmark collapsed "
    "(recon 540 nats, 0 active units, KL ~25 nats made only of shrunken posterior variances), and so did "
    "1,500-step pilots with gamma = 1000 and gamma = 100 (C over those 1,500 steps): recon stayed ~530 nats "
    "(the mean image) while KL followed C. Every run starts on that plateau; the beta = 1 and 4 runs leave it "
    "after ~500 steps because their KL gradient vanishes at the prior, but gamma * |KL - C| keeps a gradient "
    "gamma times the size of the KL's, flipping sign around KL = C, so Adam's step scale is set by it and the "
    "encoder learns from the reconstruction gamma times slower. A pilot with gamma = 10 (C over 12,000 steps) "
    "left the plateau at step ~400 (recon 148 nats at step 675, KL 6.5 above C = 1.4: above C it acts as a "
    "beta = 10 penalty). The benchmark's capacity run raises C over its 8,000 steps. Not tested: gamma = 100 "
    "with C over 12,000 steps (the pilots changed gamma and the speed of C together).")
ANCHOR_NOTE = (
    "What the rest of the way to 99.2% would take. (1) Length: 8,000 steps of 64 are 512k images, 0.7 of an epoch; "
    "Locatello et al. (2019) train these models 300k steps (19.2M images), 37 times more: 15-40 h per model at the "
    "2-6 steps/s one shared core gave here, hours on a GPU. At this budget beta = 4 encodes 3 of the 5 "
    "factors (x, y, scale: the top rows of beta_vae_dsprites_traversals_beta4.png) and not shape or orientation, "
    "which beta-VAEs learn last. (2) The metric's own ceiling: with two factors unencoded, their two classes "
    "look alike to the classifier (80% for clean codes, tests/test_betavae_metrics.py), so ~99% needs at least "
    "4 of the 5 factors, each in its own unit. (3) Setup: Higgins et al. used a fully connected 1200-1200 "
    "encoder, Adagrad at lr 1e-2 and their own classifier; later work (Kim & Mnih 2018, and reproductions of "
    "beta-VAE) found the near-perfect score hard to reproduce, so 99.2% may stay out of reach of this conv net "
    "even at full length.")
VAL_EVERY = 600  # steps between validation passes (their KL per unit makes plots/kl_per_unit_training.png)
KEYS = ("betavae_score", "factorvae_score", "mig", "dci_disentanglement", "dci_completeness",
        "dci_informativeness", "sap", "neg_elbo", "nll_iwae", "recon_bce", "active_units", "kl_per_dim",
        "train_samples_per_s")


def mean_over_seeds(per_seed: dict) -> dict:
    """Mean and min..max over seeds of every scalar metric."""
    runs = list(per_seed.values())
    out = {}
    for k in KEYS:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if len(vals) == len(runs):
            out[k] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
    return out


@torch.no_grad()
def save_traversals(run: Path, path: Path, n: int = 256) -> None:
    """Latent traversals of a trained run (rows: units by KL, largest first) from a uniform grid sample."""
    model = load(run)
    grid = DSprites()
    x = grid.images(grid.sample(n, torch.Generator().manual_seed(0))).float()
    save_image_grid(model.traversals(x)[0].clamp(0, 1), path, nrow=8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8_000)
    p.add_argument("--metric-samples", type=int, default=50_000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=10.0, help="the capacity objective's gamma")
    p.add_argument("--seeds", default="0", help="training seeds, each a full set of runs (OUT/s<seed>/<variant>)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--train", action="store_true", help="train the runs not yet trained; without it: evaluate the "
                   "trained runs, write the JSON (runs never trained are listed as not_run)")
    p.add_argument("--out", required=True, help="folder of the runs (kept: a trained run is not trained again)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    base = read_config_file(ROOT / "configs" / "beta_vae_dsprites.toml")
    base.pop("model_name")
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    results, not_run = {}, []
    for seed in seeds:
        overrides = {"train": {"steps": args.steps, "lr": args.lr, "seed": seed, "val_every": VAL_EVERY,
                               "progress": False, "checkpoint_every": args.steps},
                     "eval": {"metric_samples": args.metric_samples, "nll_k": 10}}
        for name in args.variants.split(","):
            model = VARIANTS[name]
            if model["objective"] == "capacity":
                model = {**model, "gamma": args.gamma, "capacity_steps": args.steps}
            cfg = make_run_config("beta_vae", entry("beta_vae").config_class,
                                  merge(base, merge(overrides, {"model": model})))
            run = out / f"s{seed}" / name
            timing = run / "bench_train.json"
            if args.train:
                if not timing.exists():
                    started = time.perf_counter()
                    train(cfg, run)
                    timing.write_text(json.dumps({"train_wall_s": round(time.perf_counter() - started, 1)}))
                continue
            if not timing.exists():
                not_run.append(f"s{seed}/{name}")
                continue
            evaluated = run / "bench_eval.json"  # an evaluation of these weights already done by an earlier call
            if evaluated.exists() and evaluated.stat().st_mtime > (run / "model.safetensors").stat().st_mtime:
                ev = json.loads(evaluated.read_text())
            else:
                started = time.perf_counter()
                ev = {**evaluate(run), "eval_wall_s": round(time.perf_counter() - started, 1)}
                evaluated.write_text(json.dumps(ev))
            r = {**{k: ev[k] for k in (*KEYS, "eval_wall_s") if k in ev}, **json.loads(timing.read_text())}
            results.setdefault(name, {"model": model, "seeds": {}})["seeds"][seed] = r
            print(name, seed, json.dumps({k: v for k, v in r.items() if k != "kl_per_dim"}), flush=True)
            if seed == seeds[0]:
                save_traversals(run, ROOT / "bench" / f"beta_vae_dsprites_traversals_{name}.png")

    if set(results) != set(VARIANTS):
        return
    for r in results.values():
        if len(r["seeds"]) > 1:
            r["over_seeds"] = mean_over_seeds(r["seeds"])
    c = base
    path = write_result(
        __file__,
        {
            "budget": {
                "steps": args.steps,
                "batch_size": c["train"]["batch_size"],
                "lr": args.lr,
                "seeds": seeds,
                "images_seen": args.steps * c["train"]["batch_size"],
                "epochs": args.steps * c["train"]["batch_size"] / 735_280,
                "metric_samples": args.metric_samples,
                "torch_threads": args.threads,
                "processes_side_by_side": 2,
            },
            "capacity_choice": CAPACITY_NOTE,
            "anchors": {
                "betavae_score": {"beta4": 0.992, "beta1": 0.616, "source": "Higgins et al. 2017, sec. 4 (dSprites)"}
            },
            "anchor_gap_beta4": {
                str(seed): round(r["betavae_score"] - 0.992, 4) for seed, r in results["beta4"]["seeds"].items()
            },
            "anchor_note": ANCHOR_NOTE,
            "wall_s": round(
                sum(s["train_wall_s"] + s["eval_wall_s"] for r in results.values() for s in r["seeds"].values()), 1
            ),
            "results": results,
            "not_run": not_run,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
