"""The VAE of Burda et al. (2016) on dynamically binarised MNIST: test NLL against epochs and wall time.

Trains configs/vae_burda2015.toml (784-200-200-50 tanh, Bernoulli, all 60k training images, batch 100,
their staged learning-rate schedule) for a budget of epochs. The curve uses k = 1000 importance samples
on the first 2,000 test images; the final number uses k = 5000 on all 10,000 (the paper's protocol;
anchor 86.76 nats after 3,280 epochs). With --iwae-k K the same network is trained on the k = K
importance-weighted bound instead (configs/iwae_burda2015.toml; Burda et al.'s anchor for k = 5: 85.54)
in the run folder iwae_k<K>, and the result goes to bench/vae_burda_iwae_k<K>.json, so its curve lies
beside the VAE's at the same epochs. The staged schedule depends only on the epoch, so training in
segments (raise train.epochs, resume) gives exactly the run that one call would; with --out, an
interrupted benchmark continues from its run folder and the curve measured so far.

    .venv/bin/python bench/vae_burda.py --epochs 30 [--iwae-k 5] [--out /tmp/bench_vae]
    .venv/bin/python bench/vae_burda.py --plot     # bench/vae_burda_curve.png from the JSON results only

The result names the pieces of training (each `aezoo resume` starts one) with their steps and wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.config import make_run_config, merge, parse_overrides, read_config_file  # noqa: E402
from aezoo.registry import entry  # noqa: E402
from aezoo.runfolder import load_run, read_metrics  # noqa: E402
from aezoo.train import resume, train  # noqa: E402
from common import pieces, write_result  # noqa: E402

ROOT = Path(__file__).parents[1]
TOP = 130  # the plot's NLL axis stops here, so that the last epochs' differences show
# Burda et al. 2016, table 1 (one stochastic layer): test NLL after 3,280 epochs, by the k trained on
ANCHORS = {None: 86.76, 1: 86.76, 5: 85.54, 50: 84.78}


@torch.no_grad()
def test_nll(run: Path, k: int, n: int) -> float:
    model, dataset, cfg, _ = load_run(run)
    from aezoo.data import Batches

    torch.manual_seed(0)
    dataset.x["test"] = dataset.x["test"][:n]
    batches = Batches(dataset, "test", 100, cfg.data.binarize, seed=12345, shuffle=False)
    total = sum(float(model.nll_iwae(x, k, 100_000).sum()) for x in batches)
    return total / len(dataset.x["test"])


def plot_curves() -> Path:
    """bench/vae_burda_curve.png: the curve of each result JSON (the VAE's, and each IWAE's) against epochs
    on a log axis, each anchor dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    paths = sorted(ROOT.glob("bench/vae_burda*.json"))
    for i, (path, colour) in enumerate(zip(paths, ("tab:blue", "tab:orange", "tab:green"))):
        result = json.loads(path.read_text())
        label = f"IWAE, k = {result['iwae_k']}" if result.get("iwae_k") else "VAE"
        ax.plot([c["epoch"] for c in result["curve"]], [c["nll_k1000_first2000"] for c in result["curve"]], "o-",
                color=colour, label=f"{label} (k = 1000, first 2,000 test images)")
        if result.get("test_nll") is not None:
            ax.plot([result["budget_epochs"]], [result["test_nll"]], "*", markersize=12, color=colour,
                    label=f"{label}: {result['test_nll']:.2f} (k = {result['test_nll_k']}, all 10,000)")
        ax.axhline(result["anchor_nll"], ls="--", lw=0.8, color=colour)
        ax.annotate(f"Burda et al., {label}, 3,280 epochs: {result['anchor_nll']}", (0.01, result["anchor_nll"]),
                    color=colour, xycoords=("axes fraction", "data"), ha="left", va="top" if i else "bottom",
                    fontsize=8)
        hidden = [c for c in result["curve"] if c["nll_k1000_first2000"] > TOP]
        if hidden:
            ax.annotate(", ".join(f"epoch {c['epoch']}: {c['nll_k1000_first2000']:.1f}" for c in hidden) + " (above)",
                        (hidden[-1]["epoch"], TOP - 3 * i), color=colour, ha="left", va="top", fontsize=8)
    ax.set(xscale="log", xlabel="epochs (60,000 images each; the staged schedule)", ylabel="test NLL (nats)",
           title="Burda et al. (2016)'s MNIST network, one CPU core")
    ax.set_ylim(top=min(ax.get_ylim()[1], TOP))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    out = ROOT / "bench" / "vae_burda_curve.png"
    fig.savefig(out, dpi=90)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--points", default="1,3,10,30,100,300,1000,3280", help="epochs at which to measure the curve")
    p.add_argument("--final-k", type=int, default=5000, help="k of the final NLL on all test images (0: none)")
    p.add_argument("--iwae-k", type=int, default=None, help="train on the IWAE bound with this k instead")
    p.add_argument("--out", default=None, help="folder of the run folder (default: a temporary one)")
    p.add_argument("--plot", action="store_true", help="only draw bench/vae_burda_curve.png from the JSON results")
    args = p.parse_args()
    if args.plot:
        print(plot_curves())
        return

    config_file = "configs/iwae_burda2015.toml" if args.iwae_k else "configs/vae_burda2015.toml"
    tree = read_config_file(ROOT / config_file)
    tree.pop("model_name")
    if args.iwae_k:
        tree = merge(tree, parse_overrides([f"model.iwae_k={args.iwae_k}"]))
    points = sorted({e for e in map(int, args.points.split(",")) if e < args.epochs} | {args.epochs})
    name = f"iwae_k{args.iwae_k}" if args.iwae_k else "vae_burda"
    run = Path(args.out or tempfile.mkdtemp()) / name
    progress = run / "bench_curve.json"
    curve = json.loads(progress.read_text()) if progress.exists() else []
    train_time = curve[-1]["train_wall_s"] if curve else 0.0
    for epochs in points:
        if any(c["epoch"] == epochs for c in curve):
            continue
        t0 = time.perf_counter()
        if not (run / "config.json").exists():
            cfg = make_run_config("vae", entry("vae").config_class,
                                  merge(tree, parse_overrides([f"train.epochs={epochs}", "train.progress=false"])))
            train(cfg, run)
        else:
            config = json.loads((run / "config.json").read_text())
            config["train"]["epochs"] = epochs
            (run / "config.json").write_text(json.dumps(config))
            resume(run)
        train_time += time.perf_counter() - t0
        nll = test_nll(run, 1000, 2000)
        curve.append({"epoch": epochs, "train_wall_s": round(train_time, 1), "nll_k1000_first2000": round(nll, 3)})
        progress.write_text(json.dumps(curve))
        print(curve[-1], flush=True)

    # a run that goes on past this budget (read beside it) has records past it: they are not this budget's
    records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("epoch", 0) <= args.epochs]
    rates = [r["samples_per_s"] for r in records if r.get("split") == "train"]
    parts = pieces(records)  # the curve's train_wall_s misses a piece whose process was killed; these don't
    t0 = time.perf_counter()
    final = test_nll(run, args.final_k, 10_000) if args.final_k else None
    eval_time = time.perf_counter() - t0
    result = {
        "command": f"python bench/vae_burda.py --epochs {args.epochs}"
        + (f" --iwae-k {args.iwae_k}" if args.iwae_k else ""),
        "config": config_file,
        "iwae_k": args.iwae_k,
        "budget_epochs": args.epochs,
        "paper_epochs": 3280,
        "anchor_nll": ANCHORS[args.iwae_k],
        "test_nll": round(final, 3) if final is not None else None,
        "test_nll_k": args.final_k,
        "eval_wall_s": round(eval_time, 1),
        "train_wall_s": round(sum(p["wall_s"] for p in parts), 1),
        "train_samples_per_s_median": round(sorted(rates)[len(rates) // 2], 1),
        "pieces": parts,
        "curve": curve,
    }
    print(json.dumps(result, indent=2))
    write_result(__file__, result, f"vae_burda_{name}" if args.iwae_k else None)
    plot_curves()


if __name__ == "__main__":
    main()
