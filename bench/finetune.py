"""The regularised autoencoders judged as their papers judged them (issue 14): MNIST test error of a
classifier fine-tuned from each trained encoder, of the same network trained from random weights, and
of logistic regression on the frozen features (`aezoo eval` with eval.finetune=true,
`aezoo.evaluation.finetune`).

Models, the papers' MNIST architectures: ae (sigmoid code), dae (masking noise 25%), cae (lambda = 0.1,
closed-form penalty) and sparse_ae (rho = 0.05, beta = 3), one layer of 1000 sigmoid units with
cross-entropy reconstruction (Rifai et al. 2011, sec. 5.2: 1000 hidden units); ksparse_ae, 1000 linear
units, k = 25, features from the alpha * k = 75 largest, squared error (Makhzani & Frey 2014, sec. 5);
dae_stacked, 784-1000-1000-1000 with masking noise 25% pretrained greedily layer by layer for
--layer-epochs each, then as a whole for --epochs (Vincent et al. 2010, sec. 3.5 and table 3: SDAE-3).
Pretraining: Adam 1e-3 at batch 100 for --epochs over the 50,000 training images (aezoo's defaults;
the papers used SGD and trained for far longer). Fine-tuning and the from-scratch baseline: plain SGD,
lr eval.finetune_lr, batch eval.finetune_batch_size, at most --finetune-epochs with early stopping
after --patience epochs without a better validation error (on the 10,000 validation images), the best
epoch tested on the 10,000 test images. Logistic regression: the 50,000 training codes, L2 chosen on
validation. ae, dae, cae and sparse_ae share one architecture and so one from-scratch network: its
baseline is trained once, in the first of them (eval.finetune_scratch=false in the others), and given
to each (`scratch_from` names where it was measured).

Each run folder (config.json, model.safetensors, eval.json) is kept under --out/<name>; a run already
evaluated there is read, not redone, so the script can be stopped and started again. finetune.json is
written after every model. One thread, CPU (the defaults are the budget of finetune.json; its
dae_stacked was evaluated with at most 20 fine-tuning epochs and patience 5, set in that run's
config.json, which each row reports as finetune_max_epochs and finetune_patience):

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/finetune.py --out /work/runs/finetune
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.config import make_run_config  # noqa: E402
from aezoo.evaluation import evaluate  # noqa: E402
from aezoo.files import read_json, write_json  # noqa: E402
from aezoo.registry import entry  # noqa: E402
from aezoo.train import train  # noqa: E402
from common import write_result  # noqa: E402

STEPS_PER_EPOCH = 500  # 50,000 training images at batch 100
ONE_LAYER = {"hidden": [], "latent_dim": 1000}
# % MNIST test error in the papers. Fine-tuned: Rifai et al. 2011, table 1 (one layer of 1000 units, MLP
# fine-tuned); Vincent et al. 2010, table 3 (SDAE-3); Makhzani & Frey 2014, table 3 (shallow k-sparse AE +
# fine-tuning, and the network without pretraining). Logistic regression on the features: Makhzani & Frey
# 2014, table 1. The k-sparse values are as recalled, not checked against the paper's text (bench/README.md).
PAPERS = {
    "ae": {"finetune": 1.78},
    "dae": {"finetune": 1.18},
    "cae": {"finetune": 1.14},
    "ksparse_ae": {"finetune": 1.08, "scratch": 1.60, "logreg": 1.35},
    "dae_stacked": {"finetune": 1.28},
}


ONE_BASELINE = ("cae", "ae", "dae", "sparse_ae")  # one-layer sigmoid 1000: the same fresh network


def runs(epochs: int, layer_epochs: int) -> dict[str, tuple[str, dict, int]]:
    """name -> (model, model config, training steps), in the order they are run."""
    steps = epochs * STEPS_PER_EPOCH
    layer = layer_epochs * STEPS_PER_EPOCH
    return {
        "cae": ("cae", {**ONE_LAYER, "contractive_weight": 0.1}, steps),
        "ae": ("ae", {**ONE_LAYER, "code_activation": "sigmoid"}, steps),
        "ksparse_ae": ("ksparse_ae", {**ONE_LAYER, "k": 25, "alpha": 3.0, "k_start": 100,
                                      "k_schedule_steps": steps // 2}, steps),
        "dae": ("dae", {**ONE_LAYER, "corruption": "mask", "fraction": 0.25}, steps),
        "sparse_ae": ("sparse_ae", {**ONE_LAYER, "rho": 0.05, "beta": 3.0}, steps),
        "dae_stacked": ("dae", {"hidden": [1000, 1000], "latent_dim": 1000, "corruption": "mask", "fraction": 0.25,
                                "pretrain_steps": layer}, 3 * layer + steps),
    }


def measure(run: Path, model: str, cfg: dict, steps: int, args, baseline: dict | None) -> dict:
    """One model's row; `baseline`: the scratch_* numbers of its architecture if already measured. The
    times of its pretraining and evaluation are kept in the run's bench_times.json, for a later call."""
    times_file = run / "bench_times.json"
    times = read_json(times_file) if times_file.exists() else {}
    if not (run / "model.safetensors").exists():
        tree = {"model": cfg, "train": {"steps": steps, "batch_size": 100, "lr": 1e-3, "progress": False},
                "eval": {"finetune": True, "finetune_epochs": args.finetune_epochs,
                         "finetune_patience": args.patience, "finetune_scratch": baseline is None}}
        t0, c0 = time.perf_counter(), time.process_time()
        train(make_run_config(model, entry(model).config_class, tree), run)
        times = {"pretrain_wall_s": round(time.perf_counter() - t0, 1),
                 "pretrain_cpu_s": round(time.process_time() - c0, 1)}
        write_json(times_file, times)
    if (run / "eval.json").exists() and "finetune_test_error" in read_json(run / "eval.json"):
        res = read_json(run / "eval.json")
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate(run)
        times.update(eval_wall_s=round(time.perf_counter() - t0, 1), eval_cpu_s=round(time.process_time() - c0, 1))
        write_json(times_file, times)
    settings = read_json(run / "config.json")["eval"]  # a run's own budget, should it differ from this call's
    row = {"model": model, "config": cfg, "pretrain_steps": steps, **times,
           "finetune_max_epochs": settings["finetune_epochs"], "finetune_patience": settings["finetune_patience"]}
    res = {**res, **(baseline or {})}
    for prefix in ("finetune", "scratch", "logreg"):
        row[f"{prefix}_test_error_pct"] = round(100 * res[f"{prefix}_test_error"], 2)
        row[f"{prefix}_val_error_pct"] = round(100 * res[f"{prefix}_val_error"], 2)
    for key in ("finetune_best_epoch", "finetune_epochs_run", "scratch_best_epoch", "scratch_epochs_run",
                "logreg_l2", "logreg_train_examples", "probe_linear_acc", "recon_bce"):
        row[key] = res.get(key)
    row["pretraining_gain_pct"] = round(row["scratch_test_error_pct"] - row["finetune_test_error_pct"], 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/work/runs/finetune"))
    p.add_argument("--epochs", type=int, default=30, help="pretraining epochs (after the layer-wise stage)")
    p.add_argument("--layer-epochs", type=int, default=5, help="dae_stacked: greedy pretraining epochs per layer")
    p.add_argument("--finetune-epochs", type=int, default=60, help="most fine-tuning epochs (eval.finetune_epochs)")
    p.add_argument("--patience", type=int, default=8, help="eval.finetune_patience")
    p.add_argument("--models", nargs="*", help="a subset of the models, by name")
    args = p.parse_args()
    torch.manual_seed(0)
    todo = runs(args.epochs, args.layer_epochs)
    budget = {"pretrain_epochs": args.epochs, "layer_epochs": args.layer_epochs,
              "finetune_epochs": args.finetune_epochs, "patience": args.patience, "threads": torch.get_num_threads()}
    table, baseline = {}, None
    for name, (model, cfg, steps) in todo.items():
        if args.models and name not in args.models:
            continue
        shared = name in ONE_BASELINE
        table[name] = measure(args.out / name, model, cfg, steps, args, baseline if shared else None)
        if shared and baseline is None:
            baseline = {k: v for k, v in read_json(args.out / name / "eval.json").items() if k.startswith("scratch_")}
            baseline["scratch_from"] = name
        if shared:
            table[name]["scratch_from"] = baseline["scratch_from"]
        table[name]["paper_error_pct"] = PAPERS.get(name, {})
        print(name, table[name], flush=True)
        write_result(__file__, {"budget": budget, "models": table, "left_out": [m for m in todo if m not in table]})


if __name__ == "__main__":
    main()
