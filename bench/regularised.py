"""The regularised autoencoders on MNIST: feature probes, reconstruction and training speed under one
budget, and the contractive penalty's step time against the PyPI package `autoencoders`.

Part 1, features. ae (sigmoid code), dae (mask 25%), a stacked dae (784-1000-1000-1000: greedy
layer-wise pretraining for half the budget, then fine-tuning), sparse_ae (rho = 0.05, beta = 3),
ksparse_ae (k = 25, alpha = 3, k from 100 to 25 over the first half) and cae (closed form), each one
layer of 1000 units unless said, batch 100, Adam 1e-3, the same number of steps (--epochs over the 50k
training images). Then `aezoo eval` on the 10k test images with the probes learned from the codes of
all 50k training images (eval.probe_train=0): linear (softmax regression, L-BFGS) and 10-NN test
error, reconstruction error, training samples/s. The same probes on raw pixels are the floor to beat.
The papers' errors (contractive 1.14%, denoising 1.18%: Rifai et al. 2011, table 1; stacked
denoising 1.28%: Vincent et al. 2010, table 3) come from an MLP or SVM trained on the features with
supervised fine-tuning, a stronger classifier than these frozen-feature probes. k-sparse AEs with
k = 10 and 70 are trained too, for their filters (figure 5 of the survey) and probe errors.

Part 2, contractive speed. The same 784-500-64 tanh MLP (linear code, squared error) at batch 100:
median time of one training step (forward, penalty, backward, Adam) of aezoo's cae with each penalty
method and of `autoencoders`' ContractiveAutoencoderModel, whose penalty loops over the 64 latent
units; the methods are timed in interleaved rounds so that a busy machine slows them alike. The
penalty values are checked against each other on the same weights first.

    .venv/bin/python bench/regularised.py --epochs 5 [--out /tmp/bench_reg]

`autoencoders` is not a dependency of aezoo: `pip install autoencoders` into .venv to time it (the
script says so and times aezoo alone otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import aezoo  # noqa: E402
from aezoo import losses
from aezoo.config import DataConfig, make_run_config  # noqa: E402
from aezoo.data import Batches, load_dataset  # noqa: E402
from aezoo.evaluation import evaluate  # noqa: E402
from aezoo.evaluation import features as probes  # noqa: E402
from aezoo.plots import save_image_grid  # noqa: E402
from aezoo.registry import entry  # noqa: E402
from aezoo.runfolder import load_run  # noqa: E402
from aezoo.train import train  # noqa: E402
from common import write_result  # noqa: E402

ROOT = Path(__file__).parent
PAPERS = {"cae": 1.14, "dae": 1.18, "dae_stacked": 1.28}  # % test error on MNIST, with their classifiers
ONE_LAYER = {"hidden": [], "latent_dim": 1000}


def runs(steps: int) -> dict[str, tuple[str, dict]]:
    """name -> (model, model config) for part 1, all trained for `steps` steps."""
    return {
        "ae": ("ae", {**ONE_LAYER, "code_activation": "sigmoid"}),
        "dae": ("dae", {**ONE_LAYER, "corruption": "mask", "fraction": 0.25}),
        "dae_stacked": (
            "dae",
            {
                "hidden": [1000, 1000],
                "latent_dim": 1000,
                "corruption": "mask",
                "fraction": 0.25,
                "pretrain_steps": steps // 6,
            },
        ),
        "sparse_ae": ("sparse_ae", {**ONE_LAYER, "rho": 0.05, "beta": 3.0}),
        "ksparse_ae": (
            "ksparse_ae",
            {**ONE_LAYER, "k": 25, "alpha": 3.0, "k_start": 100, "k_schedule_steps": steps // 2},
        ),
        "cae": ("cae", {**ONE_LAYER, "contractive_weight": 0.1}),
        "ksparse_ae_k10": (
            "ksparse_ae",
            {**ONE_LAYER, "k": 10, "alpha": 3.0, "k_start": 100, "k_schedule_steps": steps // 2},
        ),
        "ksparse_ae_k70": (
            "ksparse_ae",
            {**ONE_LAYER, "k": 70, "alpha": 3.0, "k_start": 100, "k_schedule_steps": steps // 2},
        ),
    }


def features(out: Path, epochs: int) -> dict:
    steps = epochs * 500
    table = {}
    for name, (model, cfg) in runs(steps).items():
        run = out / name
        t0 = time.perf_counter()
        if not (run / "model.safetensors").exists():
            tree = {
                "model": cfg,
                "train": {"steps": steps, "batch_size": 100, "lr": 1e-3, "progress": False},
                "eval": {"probe_train": 0},
            }
            train(make_run_config(model, entry(model).config_class, tree), run)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else evaluate(run)
        row = {
            "model": model,
            "config": cfg,
            "steps": steps,
            "train_wall_s": round(train_s, 1),
            "eval_wall_s": round(time.perf_counter() - t0, 1),
            "linear_probe_error_pct": round(100 * (1 - res["probe_linear_acc"]), 2),
            "knn_error_pct": round(100 * (1 - res["probe_knn_acc"]), 2),
            "recon_mse": round(res["recon_mse"], 3),
            "recon_bce": round(res["recon_bce"], 2),
            "train_samples_per_s": round(res.get("train_samples_per_s", 0.0)),
        }
        if name in PAPERS:
            row["paper_error_pct"] = PAPERS[name]
        for key in ("denoise_psnr", "corrupted_psnr", "mean_activation"):
            if key in res:
                row[key] = round(res[key], 3)
        table[name] = row
        print(name, row, flush=True)
        if model == "ksparse_ae":  # decoder filters (columns of W'), as figure 5 of the survey
            m = load_run(run, device="cpu")[0]
            save_image_grid(
                m.visuals(torch.zeros(8, 1, 28, 28))["decoder_filters"][:48],
                ROOT / f"regularised_filters_{name}.png",
                nrow=12,
            )
    table["pixels"] = pixel_probes()
    print("pixels", table["pixels"], flush=True)
    return table


@torch.no_grad()
def pixel_probes() -> dict:
    ds = load_dataset(DataConfig())
    flat = {s: ds.x[s].flatten(1).float() / ds.scale for s in ("train", "test")}
    y = {s: ds.labels[s].long() for s in ("train", "test")}
    lin = probes.linear_probe_accuracy(flat["train"], y["train"], flat["test"], y["test"])
    knn = float((probes.knn_predict(flat["train"], y["train"], flat["test"]) == y["test"]).float().mean())
    return {"linear_probe_error_pct": round(100 * (1 - lin), 2), "knn_error_pct": round(100 * (1 - knn), 2)}


# --- part 2 ----------------------------------------------------------------------------------------

PEER_SHAPE = {"hidden": [500], "latent_dim": 64, "activation": "tanh", "code_activation": "linear",
              "likelihood": "gaussian"}


def peer_model(weight: float):
    """autoencoders' ContractiveAutoencoderModel on the same MLP, or None when it is not installed."""
    try:
        from autoencoders.data.base import TensorSpec
        from autoencoders.models.cae import ContractiveAutoencoderConfig, ContractiveAutoencoderModel
    except ImportError:
        return None
    import autoencoders

    model = ContractiveAutoencoderModel(
        ContractiveAutoencoderConfig(contractive_weight=weight, reconstruction_loss="mse"),
        sample_spec=TensorSpec(shape=(784,)),
        encoder="mlp",
        encoder_config={"hidden_dims": [500, 64], "activation": "tanh"},
    )
    model.version = getattr(autoencoders, "__version__", "?")
    return model


def copy_peer_encoder(peer, ours) -> None:
    """The peer's encoder weights into ours, to compare penalty values on one network."""
    first, second = (layer.linear for layer in peer.encoder.network)
    with torch.no_grad():
        ours.encoder.head[0].weight.copy_(first.weight)
        ours.encoder.head[0].bias.copy_(first.bias)
        ours.encoder.out.weight.copy_(second.weight)
        ours.encoder.out.bias.copy_(second.bias)


def contractive_speed(rounds: int, steps: int) -> dict:
    ds = load_dataset(DataConfig())
    batches = Batches(ds, "train", 100, seed=0)
    data = [batches.get(i) for i in range(steps)]
    weight = 0.1
    contenders = {}
    for method in ("auto", "jacobian", "projection"):
        torch.manual_seed(0)
        m = aezoo.build("cae", **PEER_SHAPE, contractive_weight=weight, penalty=method)
        contenders[f"aezoo_cae_{m.method}"] = (m, lambda m, x: m.loss(x).total)
    torch.manual_seed(0)
    contenders["aezoo_ae_no_penalty"] = (aezoo.build("ae", **PEER_SHAPE), lambda m, x: m.loss(x).total)
    peer = peer_model(weight)
    check = {}
    if peer is not None:
        contenders["autoencoders_ContractiveAutoencoderModel"] = (peer, lambda m, x: m(x.flatten(1)).loss)
        ours = aezoo.build("cae", **PEER_SHAPE, penalty="two_layer")
        copy_peer_encoder(peer, ours)
        x = data[0]
        with torch.no_grad():
            check = {
                "aezoo_two_layer": float(ours.contraction(x, ours.layers(x)).mean()),
                "aezoo_jacobian": float(losses.contractive_jacobian(ours.code, x, 64).mean()),
            }
        check["autoencoders_loop"] = float(peer(x.flatten(1)).contractive_loss.detach())  # it needs gradients
    optimisers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, (m, _) in contenders.items()}
    times = {name: [] for name in contenders}
    for r in range(rounds + 1):  # round 0 warms up
        for name, (m, loss_fn) in contenders.items():
            opt = optimisers[name]
            t0 = time.perf_counter()
            for x in data:
                opt.zero_grad(set_to_none=True)
                loss_fn(m, x).backward()
                opt.step()
            if r:
                times[name].append((time.perf_counter() - t0) / len(data))
    ms = {name: round(1000 * statistics.median(t), 3) for name, t in times.items()}
    out = {
        "step_ms_median": ms,
        "rounds": rounds,
        "steps_per_round": steps,
        "batch_size": 100,
        "network": "784-500(tanh)-64 linear code, decoder 64-500(tanh)-784, squared error, Adam",
        "penalty_check_same_weights": check,
    }
    if peer is None:
        out["autoencoders"] = "not installed: `pip install autoencoders` to time ContractiveAutoencoderModel"
    else:
        out["autoencoders_version"] = peer.version
        base = ms["autoencoders_ContractiveAutoencoderModel"]
        out["speedup_vs_autoencoders"] = {n: round(base / v, 2) for n, v in ms.items() if n.startswith("aezoo_cae")}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default=None, help="run folders (default: a temporary one); finished runs are reused")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--speed-steps", type=int, default=20)
    p.add_argument("--skip-features", action="store_true")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp())
    t0 = time.perf_counter()
    speed = contractive_speed(args.rounds, args.speed_steps)
    print("contractive speed", json.dumps(speed, indent=1), flush=True)
    result = {
        "budget": {
            "epochs": args.epochs,
            "steps_per_model": args.epochs * 500,
            "batch_size": 100,
            "optimizer": "adam 1e-3",
            "probe_train": "all 50,000 training codes",
            "probe_test": "10,000 test images",
            "speed_rounds": args.rounds,
            "speed_steps_per_round": args.speed_steps,
        },
        "contractive_speed": speed,
    }
    if not args.skip_features:
        result["features"] = features(out, args.epochs)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
