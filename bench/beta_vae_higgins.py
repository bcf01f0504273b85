"""beta-VAE on dSprites in Higgins et al. (2017)'s own setting: every disentanglement score against steps.

Trains configs/beta_vae_higgins2017.toml (fully connected 1200-1200 ReLU encoder, 1200-1200-1200 tanh
decoder, 10 latent units, Bernoulli, Adagrad 1e-2, batch 64) with beta = 4 and beta = 1, and at each
point of --points evaluates the run with `aezoo eval` (the beta-VAE metric, FactorVAE metric, MIG, DCI,
SAP, reconstruction, KL per unit) and diagnoses its weights (`diagnose`), so each score gets a curve
against steps. Their anchor on the beta-VAE metric: 99.23% for beta = 4 and 61.58% for beta = 1 (sec. 4.2).

Each (beta, seed) run lives in OUT/beta<b>_s<seed>; the scores measured so far are kept in its
bench_curve.json, and training continues from the run's last checkpoint, so a budget of hours is made
of pieces, one process per run, each on one core:

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/beta_vae_higgins.py --beta 4 --seed 0 --steps 100000 \
        --out /work/longruns/higgins &
    .venv/bin/python bench/beta_vae_higgins.py --collect --out /work/longruns/higgins   # the JSON and the plot

--collect also compares the betas over their seeds at each step every run has reached (`beta_comparison`).

A later call with a larger --steps continues each run where it stopped (the config's lr is constant, so
the pieces make the run one call would).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from aezoo.config import make_run_config, merge, parse_overrides, read_config_file
from aezoo.data.dsprites import factor_grid
from aezoo.evaluation import evaluate
from aezoo.evaluation.disentanglement import encode_grid_sample
from aezoo.evaluation.likelihood import ACTIVE_UNIT_THRESHOLD
from aezoo.metrics import scores
from aezoo.metrics.estimators import entropy, fit_logistic, standardize
from aezoo.registry import entry
from aezoo.runfolder import load_run, read_metrics
from aezoo.train import resume, train
from common import pieces, write_result

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "configs" / "beta_vae_higgins2017.toml"
SCORES = ("betavae_score", "factorvae_score", "mig", "dci_disentanglement", "dci_completeness", "sap")
OTHER = ("recon_bce", "neg_elbo", "active_units", "kl_per_dim")
DIAGNOSIS = ("betavae_by_factor", "mi_by_unit")
ANCHORS = {"4": 0.9923, "1": 0.6158}  # Higgins et al. 2017, sec. 4.2: the beta-VAE metric on dSprites


def train_to(run: Path, steps: int, beta: float, seed: int, metric_samples: int) -> float:
    """Trains (or continues) the run to `steps` in all; returns the wall time this call trained."""
    started = time.perf_counter()
    if (run / "config.json").exists():
        resume(run, steps=steps)
    else:
        tree = read_config_file(CONFIG)
        tree.pop("model_name")
        overrides = parse_overrides([f"train.steps={steps}", f"train.seed={seed}", f"model.beta={beta}",
                                     f"eval.metric_samples={metric_samples}", "train.progress=false"])
        train(make_run_config("beta_vae", entry("beta_vae").config_class, merge(tree, overrides)), run)
    return time.perf_counter() - started


def run_curve(out: Path, beta: float, seed: int, budget: int, points: list[int], metric_samples: int) -> None:
    run = out / f"beta{beta:g}_s{seed}"
    progress = run / "bench_curve.json"
    curve = json.loads(progress.read_text()) if progress.exists() else []
    for steps in sorted({p for p in points if p < budget} | {budget}):
        if any(c["step"] == steps for c in curve):
            continue
        train_s = train_to(run, steps, beta, seed, metric_samples)
        started = time.perf_counter()
        ev = evaluate(run)
        eval_s = time.perf_counter() - started
        point = {"step": steps, "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1),
                 **{k: ev[k] for k in (*SCORES, *OTHER) if k in ev}, **diagnose(run)}
        curve.append(point)
        progress.write_text(json.dumps(curve))
        print(json.dumps(summary(point)), flush=True)


def summary(point: dict) -> dict:
    """The point's scalars: the point without its per-unit lists and diagnosis."""
    return {k: v for k, v in point.items() if k not in ("kl_per_dim", *DIAGNOSIS)}


def diagnose(run: Path) -> dict:
    """What the run's weights hold, from one sample of the factor grid's codes:

    - betavae_by_factor: the beta-VAE metric split by the factor held fixed, the accuracy on the points
      of each factor and the confusion matrix (rows: the factor held fixed, columns: the classifier's
      answer). Same codes, pairs and classifier as `scores.betavae_score` in the evaluation, so the
      accuracies' mean over the points is that score.
    - mi_by_unit: for each active unit (Var(E[z_u]) > 0.01 over the grid sample: the criterion of the
      evaluation's active_units), its mutual information with each factor over the factor's entropy,
      I(z_u; v_k) / H(v_k), binned as MIG bins it; a unit holding one factor alone has one large entry
      in its row."""
    model, dataset, cfg, _ = load_run(run)
    grid = factor_grid(dataset)
    codes, factors = encode_grid_sample(model, grid, cfg.eval.metric_samples, cfg.eval.batch_size)
    names = list(grid.names)
    n_train, n_eval, batch = 10_000, 5_000, 64  # scores.betavae_score's defaults
    rng = np.random.default_rng(0)
    first, second, fixed = (np.concatenate(p) for p in zip(scores.betavae_pairs(factors, n_train, batch, rng),
                                                            scores.betavae_pairs(factors, n_eval, batch, rng)))
    diffs = np.abs(codes[first] - codes[second]).mean(1)
    x_train, x_eval = standardize(diffs[:n_train], diffs[n_train:])
    predict = fit_logistic(x_train, fixed[:n_train], factors.shape[1])
    truth, answer = fixed[n_train:], predict(x_eval)
    ks = sorted(set(truth.tolist()))
    factor_names = [names[k] for k in ks]
    confusion = [[int(((truth == k) & (answer == j)).sum()) for j in ks] for k in ks]
    by_factor = {"score": float((answer == truth).mean()), "factors": factor_names,
                 "accuracy": {names[k]: float((answer[truth == k] == k).mean()) for k in ks},
                 "confusion": confusion}
    active = np.flatnonzero(codes.var(0) > ACTIVE_UNIT_THRESHOLD)
    normalised = scores.mutual_info_matrix(codes[:, active], factors[:, ks]) / entropy(factors[:, ks])
    by_unit = {"factors": factor_names, "units": active.tolist(),
               "normalised_mi": np.round(normalised, 3).tolist()}
    return {"betavae_by_factor": by_factor, "mi_by_unit": by_unit}


def beta_and_seed(name: str) -> tuple[str, int]:
    """The beta and seed of a run folder named as run_curve names it: beta<b>_s<seed>."""
    beta, seed = name.removeprefix("beta").split("_s")
    return beta, int(seed)


def pairs_won(a: list[float], b: list[float]) -> float:
    """How many of the pairs (x from a, y from b) have x > y, a tie counting half: Mann-Whitney's U of a."""
    return sum((x > y) + 0.5 * (x == y) for x in a for y in b)


def exact_p(a: list[float], b: list[float]) -> float:
    """The exact one-sided p of the Mann-Whitney test that a's values are the larger: the fraction of the
    ways of splitting the pooled values into groups of len(a) and len(b) whose U is at least a's."""
    pooled, u = [*a, *b], pairs_won(a, b)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    hits = sum(pairs_won([pooled[i] for i in s], [v for i, v in enumerate(pooled) if i not in s]) >= u
               for s in splits)
    return hits / len(splits)


def beta_comparison(runs: dict) -> dict:
    """At each step that every run has reached, for each score: beta = 4's and beta = 1's seeds' mean and
    sd, the pairs (a beta = 4 run, a beta = 1 run) that beta = 4 wins and the exact p of that count; the
    seeds, not one run, decide whether beta separates the scores (Locatello et al. 2019)."""
    groups = {beta: [r["curve"] for name, r in runs.items() if beta_and_seed(name)[0] == beta] for beta in ANCHORS}
    if min(len(g) for g in groups.values()) < 2:
        return {}
    steps = set.intersection(*({c["step"] for c in curve} for g in groups.values() for curve in g))

    def spread(values: list[float]) -> dict:
        return {"mean": statistics.mean(values), "sd": statistics.stdev(values), "runs": len(values)}

    def compare(four: list[float], one: list[float]) -> dict:
        return {"beta4": spread(four), "beta1": spread(one), "pairs_won_by_beta4": pairs_won(four, one),
                "pairs": len(four) * len(one), "p_one_sided": exact_p(four, one)}

    out = {}
    for step in sorted(steps):
        at = {beta: [next(c for c in curve if c["step"] == step) for curve in g] for beta, g in groups.items()}
        out[str(step)] = {key: compare([c[key] for c in at["4"]], [c[key] for c in at["1"]]) for key in SCORES}
    return out


def collect(out: Path) -> None:
    runs = {}
    for run in sorted(out.glob("beta*_s*")):
        progress = run / "bench_curve.json"
        if progress.exists():
            runs[run.name] = {"curve": json.loads(progress.read_text()),
                              "pieces": pieces(read_metrics(run / "metrics.jsonl"))}
    if not runs:
        raise SystemExit(f"no runs with a curve under {out}")
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    for ax, key in zip(axes.flat, (*SCORES, "recon_bce", "active_units")):
        for name, r in runs.items():
            pts = [(c["step"], c[key]) for c in r["curve"] if key in c]
            if pts:
                beta, seed = beta_and_seed(name)  # colour by beta, line style by seed
                ax.plot(*zip(*pts), marker="o", ms=3, label=name, color="C3" if beta == "4" else "C0",
                        ls=("-", "--", ":", "-.")[seed % 4])
        if key == "betavae_score":
            for beta, anchor in ANCHORS.items():
                ax.axhline(anchor, ls="--", lw=0.8, color="grey")
                ax.annotate(f"paper, beta={beta}", (1, anchor), xycoords=("axes fraction", "data"), ha="right",
                            va="bottom", fontsize=8, color="grey")
        ax.set(xscale="log", xlabel="training steps (batch 64)", title=key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.savefig(ROOT / "bench" / "beta_vae_higgins_curves.png", dpi=80)
    last = {name: r["curve"][-1] for name, r in runs.items()}
    write_result(__file__, {
        "config": "configs/beta_vae_higgins2017.toml",
        "anchors_betavae_score": {"beta4": ANCHORS["4"], "beta1": ANCHORS["1"],
                                  "source": "Higgins et al. 2017, sec. 4.2 (dSprites)"},
        "last_point": {name: summary(c) for name, c in last.items()},
        "beta_comparison": beta_comparison(runs),
        "runs": runs,
    })


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100_000, help="the run's budget in all (a later call may raise it)")
    p.add_argument("--points", default="1000,3000,10000,30000,100000,300000", help="steps at which to evaluate")
    p.add_argument("--metric-samples", type=int, default=50_000, help="images from the factor grid per metric")
    p.add_argument("--collect", action="store_true", help="write bench/beta_vae_higgins.json and the plot")
    p.add_argument("--out", required=True, help="folder of the runs (kept: runs continue where they stopped)")
    args = p.parse_args()
    out = Path(args.out)
    if args.collect:
        collect(out)
    else:
        points = [int(s) for s in args.points.split(",")]
        run_curve(out, args.beta, args.seed, args.steps, points, args.metric_samples)


if __name__ == "__main__":
    main()
