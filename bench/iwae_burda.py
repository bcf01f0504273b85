"""The IWAE against the VAE on dynamically binarised MNIST under one budget (Burda et al. 2016, table 1).

The same 784-200-200-50 tanh network, data and optimiser (configs/vae_burda2015.toml and
configs/iwae_burda2015.toml), trained for the same number of epochs on the ELBO (the VAE, k = 1) and on
the importance-weighted bound with k = 5 and k = 50. Each run is then evaluated as `aezoo eval` does:
test NLL with k = 5000 importance samples on all 10,000 test images, -ELBO, and active units
(Cov_x E_q[z_u] > 0.01). The paper's numbers after 3,280 epochs: VAE 86.76, IWAE k = 5 85.54,
IWAE k = 50 84.78 nats, with 19, 22 and 25 active units (table 1 and sec. 5.2).

The runs are processes of their own, --jobs at a time, each on one thread (on this shared 2-core
machine two threads per process made every step several times slower). A k = 50 step decodes 5,000
latent samples, so it costs ~25 VAE steps.

    .venv/bin/python bench/iwae_burda.py --epochs 10 [--jobs 2 --out runs/bench_iwae]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

ROOT = Path(__file__).parents[1]
PAPER = {"vae": {"nll": 86.76, "active_units": 19}, "iwae_k5": {"nll": 85.54, "active_units": 22},
         "iwae_k50": {"nll": 84.78, "active_units": 25}}
RUNS = {"vae": ("vae_burda2015.toml", []), "iwae_k5": ("iwae_burda2015.toml", ["model.iwae_k=5"]),
        "iwae_k50": ("iwae_burda2015.toml", ["model.iwae_k=50"])}


def aezoo(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "aezoo", *args], check=True, env=env, cwd=ROOT)


def train_and_evaluate(name: str, epochs: int, final_k: int, folder: Path) -> dict:
    config, overrides = RUNS[name]
    run = folder / name
    sets = [a for o in [*overrides, "train.progress=false", f"eval.nll_k={final_k}"] for a in ("--set", o)]
    t0 = time.perf_counter()
    aezoo("train", "vae", "--config", str(ROOT / "configs" / config), "--epochs", str(epochs),
          "--out", str(run), *sets)
    trained = time.perf_counter()
    aezoo("eval", str(run))
    result = json.loads((run / "eval.json").read_text())
    return {"config": f"configs/{config}", "overrides": overrides,
            "test_nll": round(result["nll_iwae"], 3), "test_nll_k": result["nll_iwae_k"],
            "neg_elbo": round(result["neg_elbo"], 3), "active_units": result["active_units"],
            "train_samples_per_s": round(result["train_samples_per_s"], 1),
            "train_wall_s": round(trained - t0, 1), "eval_wall_s": round(time.perf_counter() - trained, 1),
            "paper_after_3280_epochs": PAPER[name]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--final-k", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=None, help="folder for the three runs (default: a temporary one)")
    args = p.parse_args()
    folder = Path(args.out or tempfile.mkdtemp())
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:  # the slowest (k = 50) first
        futures = {name: pool.submit(train_and_evaluate, name, args.epochs, args.final_k, folder)
                   for name in ("iwae_k50", "iwae_k5", "vae")}
        runs = {name: futures[name].result() for name in RUNS}
    result = {"command": "python bench/iwae_burda.py " + " ".join(sys.argv[1:]),
              "budget_epochs": args.epochs, "paper_epochs": 3280, "jobs": args.jobs, "threads_per_run": 1,
              "runs": runs, "wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=2))
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
