"""TD-VAE on moving MNIST and the noisy oscillator: the terms of J(t1, t2) and the jumpy rollout error
against copying the last frame, by jump size.

Three runs, each a budget of training steps with the defaults of `aezoo train tdvae` (batch 100,
Adam 1e-3, max_jump 4 with the interval given to p_T): moving MNIST with one and with two stochastic
layers, and the oscillator. After training, `aezoo eval` (rollout_mse and its baseline on the 10k
test sequences: first half observed, then one jump of d = 1..4 steps from a sampled state) and
`aezoo report` (the rollout pictures are in RUN/plots and RUN/report.html). Then, on the first 2,000
test sequences, the five terms of J and -J for pairs with a fixed t2 - t1 = d (t1 uniform where the
pair fits), one sample each. Torch runs on one thread: on a shared 2-core machine two threads made
each step several times slower.

    .venv/bin/python bench/tdvae.py --out runs/bench_tdvae
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
from aezoo.config import make_run_config
from aezoo.data import EVAL_SEED, Batches
from aezoo.evaluation import evaluate
from aezoo.models.tdvae import TDVAEConfig
from aezoo.report import write_report
from aezoo.runfolder import load_run
from aezoo.train import train
from aezoo.visualise import write_plots
from common import write_result

RUNS = {
    "moving_mnist": {"data": {"name": "moving_mnist"}, "model": {}, "steps": 8_000},
    "moving_mnist_two_layers": {"data": {"name": "moving_mnist"}, "model": {"layers": 2}, "steps": 5_000},
    "oscillator": {"data": {"name": "oscillator"}, "model": {}, "steps": 5_000},
}
TERMS = ("log_pd", "log_pb_t1", "log_pt", "log_pb_t2", "log_ps")


@torch.no_grad()
def terms_by_jump(run: Path, n: int = 2000) -> dict:
    """-J and its five terms (per pair, nats) on the first n test sequences, for each t2 - t1 = d."""
    model, dataset, cfg, _ = load_run(run)
    dataset.x["test"] = dataset.x["test"][:n]
    T, J = cfg.model.data_shape[0], cfg.model.max_jump
    out = {}
    for d in range(1, J + 1):
        torch.manual_seed(EVAL_SEED + d)
        sums = dict.fromkeys(("neg_j", *TERMS), 0.0)
        for x in Batches(dataset, "test", 500, cfg.data.binarize, seed=EVAL_SEED, shuffle=False):
            t1 = torch.randint(0, T - d + 1, (len(x), 1))
            terms = model.pair_terms(x, t1, t1 + d)
            j = terms["log_pd"] + terms["log_pb_t1"] + terms["log_pt"] - terms["log_pb_t2"] - terms["log_ps"]
            for k, v in {"neg_j": -j, **terms}.items():
                sums[k] += float(v.sum())
        out[str(d)] = {k: v / n for k, v in sums.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/bench_tdvae", help="folder for the run folders")
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated run names")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = {}
    for name in args.only.split(","):
        spec = RUNS[name]
        run = out / name
        if run.exists():
            shutil.rmtree(run)
        tree = {"model": spec["model"], "data": spec["data"], "train": {"steps": spec["steps"], "progress": False}}
        cfg = make_run_config("tdvae", TDVAEConfig, tree)
        t0 = time.perf_counter()
        train(cfg, run)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = evaluate(run)
        eval_s = time.perf_counter() - t0
        write_plots(run)
        write_report(run)
        last_val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last_val = [r for r in last_val if r["split"] == "val"][-1]
        mse, base = ev["rollout_mse"], ev["rollout_mse_baseline"]
        results[name] = {
            "data": spec["data"]["name"], "model": spec["model"], "steps": spec["steps"], "batch_size": 100,
            "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1),
            "test_sequences": ev["n_examples"], "rollout_context": ev["rollout_context"],
            "rollout_mse": mse, "rollout_mse_baseline": base,
            "baseline_minus_model": [b - m for m, b in zip(mse, base)],
            "model_over_baseline": [m / b for m, b in zip(mse, base)],
            "test_neg_j": ev["neg_j"], "test_terms": {k: ev[k] for k in TERMS},
            "val_terms_at_end": {k: last_val[k] for k in ("loss", *TERMS)},
            "terms_by_jump_test2000": terms_by_jump(run),
            "report": str(run / "report.html"),
        }
        print(name, json.dumps(results[name], indent=1), flush=True)
        if name == "moving_mnist":
            shutil.copy(run / "plots" / "rollouts.png", Path(__file__).with_name("tdvae_moving_mnist_rollouts.png"))
    budget = {k: RUNS[k]["steps"] for k in results}
    path = write_result(__file__, {"budget_steps": budget, "runs": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
