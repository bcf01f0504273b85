"""The dSprites study: every disentangling model at one architecture and budget, every metric under
both protocols (eval.metric_protocol=papers and dlib), beside the published ranges.

Six runs per seed of configs/beta_vae_dsprites.toml's conv net (Burgess et al. 2018: four 4x4 stride-2
convolutions of 32 channels, 256-256, 10 latent units, Bernoulli likelihood; Adam, batch 64), at the
learning rate 1e-3 that bench/beta_vae_dsprites.py chose to leave the first plateau sooner:
  beta1        beta_vae, beta = 1 (the ELBO: the baseline)
  beta4        beta_vae, beta = 4 (Higgins et al. 2017)
  capacity     beta_vae, capacity objective, C from 0 to 25 nats over the budget, gamma = 10
               (bench/beta_vae_dsprites.py's CAPACITY_NOTE says why not 1000 on a short budget)
  factor_vae   gamma = 35 (Kim & Mnih 2018's dSprites choice), discriminator Adam 1e-4
  beta_tc_vae  beta = 6 on the total correlation, MWS (Chen et al. 2018)
  dip_vae      DIP-VAE-I, lambda_od = 10, lambda_d = 100 (Kumar et al. 2018: lambda_d = 10 lambda_od)
Each trained run is evaluated by the disentanglement evaluator twice, with each protocol, on the same
15,000 grid images (dlib's 10,000 training + 5,000 test examples; eval.metric_samples = 15,000), and by
the reconstruction evaluator (recon_bce on the 1,000 test images).

Runs live in OUT/s<seed>/<model>, are trained once (checkpointed every 500 steps: a study stopped midway
continues each run from its checkpoint when started again with the same arguments) and evaluated once
(bench_eval.json in the run), in the order seed 0 of every model, then seed 1, ..., one torch thread
per process. After every run the JSON is rewritten from all the evaluated runs under
OUT, so processes sharing OUT (each given some --models or --seeds) make one JSON, and from the runs the
JSON held before at the same --steps and --lr (a later session's seeds are added). The committed JSON
(2026-12-07, four processes on 2 cores beside other jobs):

    run="env OMP_NUM_THREADS=1 .venv/bin/python bench/disentangle_study.py --out /work/longruns/study --steps 2000"
    $run --seeds 0 & $run --seeds 1 & $run --seeds 2 --models beta1,beta4,capacity &
    $run --seeds 2 --models factor_vae,beta_tc_vae,dip_vae &
    $run --collect --seeds 0,1,2

`--table` prints bench/README's table from it. dlib's DCI (100 boosting stages with one tree per class of
every factor) is most of each run's evaluation: 5-6 min of CPU; --no-dlib-dci leaves it out (null).
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
from aezoo.data.dsprites import factor_grid
from aezoo.evaluation.base import EvalContext
from aezoo.evaluation.disentanglement import VARYING, encode_grid_sample
from aezoo.evaluation.reconstruction import reconstruction
from aezoo.metrics import dlib, scores
from aezoo.registry import entry
from aezoo.runfolder import load_run, read_metrics
from aezoo.train import resume, train
from common import write_result

ROOT = Path(__file__).parents[1]
CHECKPOINT_EVERY = 500  # a study stopped at a session's end continues from here
MODELS = {
    "beta1": ("beta_vae", {"objective": "beta", "beta": 1.0}),
    "beta4": ("beta_vae", {"objective": "beta", "beta": 4.0}),
    "capacity": ("beta_vae", {"objective": "capacity", "capacity_max": 25.0, "gamma": 10.0}),  # + capacity_steps
    "factor_vae": ("factor_vae", {"gamma": 35.0}),
    "beta_tc_vae": ("beta_tc_vae", {"beta": 6.0, "estimator": "mws"}),
    "dip_vae": ("dip_vae", {"variant": "i", "lambda_od": 10.0, "lambda_d": 100.0}),
}
METRICS = ("betavae_score", "factorvae_score", "mig", "dci_disentanglement", "dci_completeness",
           "dci_informativeness", "sap")
METRIC_SAMPLES = 15_000
# Published dSprites ranges at full budget, approximate: recalled from the papers' figures, not re-read
# from the PDFs in the session that wrote this (the JSON says so); for orientation, not for testing.
PUBLISHED = {
    "verified_against_pdf": False,
    "locatello2019_dlib": {
        "source": "Locatello et al. 2019, the dSprites panels of their score distributions (300k steps of 64, "
                  "many seeds and hyperparameters per model, disentanglement_lib's estimators): the bulk of "
                  "every model's scores, the models overlapping",
        "betavae_score": [0.75, 0.90], "factorvae_score": [0.55, 0.85], "mig": [0.05, 0.35],
        "dci_disentanglement": [0.10, 0.45], "sap": [0.01, 0.08],
    },
    "kim_mnih2018": {"source": "Kim & Mnih 2018, dSprites, their FactorVAE metric (papers' estimator)",
                     "factorvae_score": {"beta_vae": [0.65, 0.75], "factor_vae": [0.80, 0.85]}},
    "chen2018": {"source": "Chen et al. 2018, dSprites, MIG by their sampled estimator (not the binned one)",
                 "mig": {"beta_vae": [0.10, 0.25], "beta_tc_vae": [0.15, 0.40]}},
}


def evaluate_both(run: Path, dlib_dci: bool) -> dict:
    """Both protocols' metrics (keys `<protocol>/<metric>`) on one encoding of the grid sample, recon_bce,
    and the CPU seconds of each. Without `dlib_dci` dlib's boosted-tree DCI (minutes of CPU) is left out."""
    model, dataset, cfg, rf = load_run(run, None)
    grid = factor_grid(dataset)
    started = time.process_time()
    codes, factors = encode_grid_sample(model, grid, METRIC_SAMPLES, cfg.eval.batch_size)
    out = {"encode_cpu_s": round(time.process_time() - started, 1)}
    started = time.process_time()
    dci = scores.dci(codes, factors, discrete=grid.categorical)
    out.update({"papers/betavae_score": scores.betavae_score(codes, factors),
                "papers/factorvae_score": scores.factorvae_score(codes, factors),
                "papers/mig": scores.mig(codes, factors),
                **{f"papers/dci_{k}": v for k, v in dci.items()},
                "papers/sap": scores.sap(codes, factors, discrete=grid.categorical),
                "papers_cpu_s": round(time.process_time() - started, 1)})
    started = time.process_time()
    dci = dlib.dci(codes, factors) if dlib_dci else dict.fromkeys(("disentanglement", "completeness",
                                                                   "informativeness"))
    out.update({"dlib/betavae_score": dlib.betavae_score(codes, factors),
                "dlib/factorvae_score": dlib.factorvae_score(codes, factors),
                "dlib/mig": dlib.mig(codes, factors),
                **{f"dlib/dci_{k}": v for k, v in dci.items()},
                "dlib/sap": dlib.sap(codes, factors),
                "dlib_cpu_s": round(time.process_time() - started, 1)})
    out["active_units"] = int((codes.var(0) > VARYING).sum())
    out["recon_bce"] = reconstruction(EvalContext(model, dataset, cfg, cfg.eval.split, rf))["recon_bce"]
    last = [r for r in read_metrics(rf.metrics) if "time_s" in r][-1]
    out["train_wall_s"] = round(last["time_s"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", help="folder of the runs (kept: a trained run is not trained again); all but --table")
    p.add_argument("--no-dlib-dci", action="store_true", help="leave out dlib's boosted-tree DCI (minutes of CPU "
                   "per run; null in the JSON)")
    p.add_argument("--collect", action="store_true", help="only write the JSON from the runs evaluated under OUT")
    p.add_argument("--table", action="store_true", help="only print bench/README's table from the committed JSON")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(Path(__file__).with_suffix(".json").read_text())))
        return
    if not args.out:
        p.error("--out is required")
    torch.set_num_threads(1)
    if args.collect:
        write(args)
        return
    base = read_config_file(ROOT / "configs" / "beta_vae_dsprites.toml")
    base.pop("model_name")
    base["model"] = {k: v for k, v in base["model"].items() if k not in ("objective", "beta")}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for name in args.models.split(","):
            model_name, model = MODELS[name]
            if model.get("objective") == "capacity":
                model = {**model, "capacity_steps": args.steps}
            overrides = {"train": {"steps": args.steps, "lr": args.lr, "seed": seed, "val_every": args.steps,
                                   "progress": False, "checkpoint_every": min(args.steps, CHECKPOINT_EVERY)},
                         "eval": {"metric_samples": METRIC_SAMPLES}}
            cfg = make_run_config(model_name, entry(model_name).config_class,
                                  merge(base, merge(overrides, {"model": model})))
            run = Path(args.out) / f"s{seed}" / name
            done = run / "bench_eval.json"
            if not done.exists():
                if (run / "config.json").exists():
                    resume(run)  # a run stopped before its end continues from its checkpoint; a finished one is left
                else:
                    train(cfg, run)
                done.write_text(json.dumps(evaluate_both(run, not args.no_dlib_dci)))
            print(name, seed, done.read_text(), flush=True)
            write(args)


LABELS = {"beta1": "beta_vae, beta = 1", "beta4": "beta_vae, beta = 4", "capacity": "beta_vae, capacity",
          "factor_vae": "factor_vae", "beta_tc_vae": "beta_tc_vae", "dip_vae": "dip_vae (I)"}


def table(result: dict) -> str:
    """The markdown table of bench/README: per model and protocol, each metric's mean over the seeds and
    its range (min-max) where there are several, then active units and recon_bce."""
    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        mean = f"{sum(values) / len(values):.3f}"
        return mean if len(values) == 1 else f"{mean} ({min(values):.3f}-{max(values):.3f})"

    lines = ["| model | seeds | protocol | " + " | ".join(METRICS) + " | active units | recon_bce |",
             "| --- | ---: | --- | " + " | ".join("---:" for _ in METRICS) + " | ---: | ---: |"]
    for name, r in result["results"].items():
        runs = list(r["seeds"].values())
        for protocol in ("papers", "dlib"):
            first = protocol == "papers"
            units = [x["active_units"] for x in runs]
            spread = f" ({min(units)}-{max(units)})" if len(set(units)) > 1 else ""
            extra = ([f"{sum(units) / len(units):.3g}{spread}",
                      f"{sum(x['recon_bce'] for x in runs) / len(runs):.1f}"] if first else ["", ""])
            lines.append(f"| {LABELS[name] if first else ''} | {len(runs) if first else ''} | {protocol} | "
                         + " | ".join(cell([x[f"{protocol}/{m}"] for x in runs]) for m in METRICS)
                         + " | " + " | ".join(extra) + " |")
    return "\n".join(lines)


def write(args) -> None:
    """The JSON from every evaluated run under OUT (so that processes sharing OUT each write all of them)
    and the runs the committed JSON already holds at the same budget: a machine's run folders need not
    outlive a session, so a later session adds its seeds to the JSON."""
    path = Path(__file__).with_suffix(".json")
    results: dict = {}
    if path.exists():
        earlier = json.loads(path.read_text())
        if (earlier["budget"]["steps"], earlier["budget"]["lr"]) == (args.steps, args.lr):
            results = earlier["results"]
    for done in sorted(Path(args.out).glob("s*/*/bench_eval.json")):
        name, seed = done.parent.name, done.parent.parent.name[1:]
        model_name, model = MODELS[name]
        results.setdefault(name, {"model": model_name, "settings": model, "seeds": {}})["seeds"][seed] = (
            json.loads(done.read_text()))
    cpu = 0.0
    for r in results.values():
        r["seeds"] = dict(sorted(r["seeds"].items(), key=lambda item: int(item[0])))
        runs = list(r["seeds"].values())
        r["mean"] = {k: sum(x[k] for x in runs) / len(runs) for k in runs[0]
                     if k.split("/")[-1] in METRICS and all(x[k] is not None for x in runs)}
        cpu += sum(x["encode_cpu_s"] + x["papers_cpu_s"] + x["dlib_cpu_s"] for x in runs)
    planned = [(seed, name) for seed in args.seeds.split(",") for name in args.models.split(",")]
    write_result(__file__, {
        "budget": {"steps": args.steps, "batch_size": 64, "lr": args.lr, "images_seen": args.steps * 64,
                   "epochs": args.steps * 64 / 735_280, "torch_threads": 1, "metric_samples": METRIC_SAMPLES,
                   "eval_cpu_s_spent": round(cpu, 1),
                   "published_budget": "Locatello et al. 2019: 300,000 steps of 64 (19.2M images) per model"},
        "published": PUBLISHED,
        "results": {name: results[name] for name in MODELS if name in results},
        "not_run": [f"s{seed}/{name}" for seed, name in planned if seed not in results.get(name, {}).get("seeds", {})],
    })


if __name__ == "__main__":
    main()
