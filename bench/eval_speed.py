"""Time of `aezoo eval`, stage by stage, before and after the work of issue 18: wall seconds and the
process's CPU seconds (time.process_time, one thread: what a shared machine's load does not stretch).

"Before" is the code of commit bd434a7, "after" this checkout; both run here, in turn, on the same run
folders, as subprocesses importing aezoo from their own source tree (--base-src: the src folder of a
worktree of bd434a7, `git worktree add BASE bd434a7`, or of `git archive bd434a7 src | tar -x -C BASE`).
Each subprocess does what `evaluate` does (the run loaded, the evaluators that apply run in order from
torch.manual_seed(EVAL_SEED)) and times every evaluator, on the first --limit examples of the evaluated
split (the disentanglement metrics' factor-grid samples keep their configured size):

  - the VAE's IWAE estimate of -log p(x) at k = 5000 (--vae RUN, eval.nll_k set to 5000), the
    `likelihood` evaluator alone, on the first --iwae-limit test images; both versions draw the same
    z from the same seed, so their estimates differ only by float rounding, and the spread of the
    per-example estimates (standard error of the mean) is given beside them (after the timing);
  - vqvae2 with its PixelSNAIL priors on MNIST (--vqvae2 RUN; --skip leaves evaluators out);
  - vqvae2's whole `aezoo eval` as a user gets it (--vqvae2-whole RUN): every evaluator, the feature
    probes and retrieval included, on all 10,000 test images, with the config's eval settings
    (eval.probe_train = 10,000 training codes); measured on a copy of the zoo's vqvae2-mnist (its
    gated PixelCNN priors included);
  - vqvae2's `feature_probes` alone (--vqvae2-probes RUN), on --probe-train training codes (10,000 in
    the config; fewer here to fit the session's CPU share), 8,192 wide;
  - beta_vae on dSprites (--beta-vae RUN), and its whole `aezoo eval` as a user gets it (--beta-vae-whole
    RUN): every evaluator on all test images, the run's own eval.metric_samples (configs/beta_vae_dsprites.toml:
    50,000 factor-grid images) and IWAE k.

One torch thread; /proc/loadavg is read before and after each version's run. Cases given to an
earlier invocation and not to this one are kept from eval_speed.json.

    .venv/bin/python bench/eval_speed.py --base-src /work/runs/h18speed/base/src \\
        --beta-vae /work/runs/h18speed/beta_vae --vqvae2 /work/runs/h18speed/vqvae2 --vae /work/runs/h18speed/vae \\
        --skip feature_probes,retrieval --limit 500 --iwae-limit 100
    .venv/bin/python bench/eval_speed.py --base-src /work/runs/h18speed/base/src \\
        --vqvae2-probes /work/runs/h18speed/vqvae2 --limit 500 --probe-train 2000
    cp -r src/aezoo/zoo/vqvae2-mnist /tmp/h18/vqvae2
    .venv/bin/python bench/eval_speed.py --base-src /tmp/h18/base/src --vqvae2-whole /tmp/h18/vqvae2
    aezoo train beta_vae --config configs/beta_vae_dsprites.toml --set train.steps=300 --out /work/runs/h18/beta_vae
    .venv/bin/python bench/eval_speed.py --base-src /tmp/h18/base/src --beta-vae-whole /work/runs/h18/beta_vae

Measurements behind two choices, one thread, CPU seconds, on this machine (AMD EPYC, AVX-512, torch
2.13 with oneDNN 3.12 and MKL 2024.2), outside this script:
  - `evaluation.base.FEW_CHANNELS`: a transposed convolution (4x4, stride 2) of 64 images from 32
    channels at 32x32 to C channels at 64x64 took, oneDNN / PyTorch's kernel, both channels-last, ms:
    C = 1: 13.7 / 5.3, 2: 14.0 / 7.5, 3: 13.5 / 10.3, 6: 14.6 / 14.7, 8: 13.6 / 18.5, 16: 14.9 / 55.9,
    32: 25.6 / 104.9 (oneDNN in PyTorch's default contiguous layout: 14.7 for C = 1, 67.6 for C = 32);
    from 64 channels at 14x14 to 1 channel at 28x28 (MNIST): 4.1 / 1.4.
  - the linear probe's weight layout: one loss evaluation (forward and backward) on 10,000 x 8,192
    codes and 10 classes took 1.07 s with w (8192, 10) and logits a @ w, 0.19 s with w (10, 8192) and
    F.linear; the difference is autograd's a.T @ grad (0.81 s) against (grad.T @ a).T (0.07 s).
  - the linear probe's products through oneDNN (`evaluation.features.codes_products`): on 10,000 x
    8,192 random codes and 10 classes, a w^T + b took 87 ms by F.linear (MKL), 31 ms by oneDNN's
    linear; g^T a 81 ms by torch.mm (MKL), 25 ms by oneDNN with a^T packed once (40 ms unpacked).
    MKL's skinny products run at about 20 GFLOP/s there, and are not memory-bound (a.sum() reads the
    codes in 13 ms); one pass over rows in chunks that stay in the cache, forward and gradient
    together, measured no faster (155 ms against autograd's 151 ms for a loss evaluation).

What is left of vqvae2's whole evaluation (vqvae2_whole_eval, after): mostly the linear probe's ~210
L-BFGS loss evaluations, the neighbour search's one 10,000 x 10,000 x 8,192 product (1.6 TFLOP, at
about 80 GFLOP/s), the prior's log-probabilities (batches of 1,000 instead of 500 and
torch.inference_mode measured no faster) and, in codebook_health, the two 512-bar plots. The probe's
accuracy is the one estimate that moved: the L-BFGS path's rounding moves a few of the 10,000 test
predictions (with the same codes: 0.9326 in bd434a7's form, w (width, classes) and autograd; 0.9323
to 0.9325 in the later forms), while the query codes looked up from the code maps instead of `encode`
(max difference 1.2e-7) moved none.

What keeps the IWAE at k = 5000 from 3x (vae_iwae_k5000), measured the same way, outside this script:
per test image, the Burda MLP VAE of configs/vae_burda2015.toml (784-200-200-50, tanh, Bernoulli;
untrained weights, which the time does not depend on), its 5000 samples decoded in the 15 blocks of
334 that `models.vae.DECODE_BLOCK` makes, the median of 15 repetitions in each of two runs on the
loaded machine: `log_weights` 45.6 / 49.2 ms, of which the decoder 36.4 / 31.3 ms (57 / 66 GFLOP/s
of its 2.07 GFLOP) and the likelihood (x.l - softplus(l), summed) 8.6 / 7.9 ms. The decoder's three
products alone, without bias or tanh, took 23.1 / 25.1 ms (90 / 82 GFLOP/s; torch.mm of 334 x 200 by
200 x 784 runs at 92 / 88 GFLOP/s). A decoder as fast as its products would leave 32 / 43 ms of the
46 / 49: at most about 1.1-1.4x in float32 without changing the arithmetic (fewer samples, lower
precision), whatever is done around it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

HERE = Path(__file__).parent
# Run folders made by newer code hold config keys older code does not know. Each worker reads a copy
# (files linked, not copied) whose config.json files keep only the keys of the importing version: the
# keys added since bd434a7 (model.decoder_hidden, data.memmap, ...) default to what that code did.
COMPATIBLE_COPY = """
import dataclasses, json, tempfile
from pathlib import Path
from aezoo import config as _config
from aezoo.registry import entry


def compatible_copy(run):
    src, dst = Path(run), Path(tempfile.mkdtemp()) / Path(run).name
    for f in src.rglob("*"):
        if f.is_dir():
            continue
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.name != "config.json":
            out.symlink_to(f.resolve())
            continue
        tree = json.loads(f.read_text())
        sections = {"data": _config.DataConfig, "train": _config.TrainConfig, "eval": _config.EvalConfig}
        for key, value in tree.items():
            if isinstance(value, dict):
                cls = sections.get(key) or entry(tree["model_name"]).config_class
                known = {x.name for x in dataclasses.fields(cls)}
                tree[key] = {k: v for k, v in value.items() if k in known}
        out.write_text(json.dumps(tree))
    return str(dst)
"""
WORKER = COMPATIBLE_COPY + """
import json, math, sys, time, torch
from aezoo.evaluation import EVALUATORS, EvalContext
from aezoo.evaluation.base import EVAL_SEED
from aezoo.runfolder import load_run
torch.set_num_threads(1)
run, limit, nll_k, only = compatible_copy(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
skip, sem, probe_train = sys.argv[5].split(","), sys.argv[6] == "sem", int(sys.argv[7])
started, cpu_started = time.perf_counter(), time.process_time()
model, ds, cfg, folder = load_run(run)
stages = {"load": time.perf_counter() - started}
cpu = {"load": time.process_time() - cpu_started}
split = cfg.eval.split
for d in (ds.x, ds.labels, ds.factors):
    if split in d and limit:
        d[split] = d[split][:limit]
if nll_k:
    cfg.eval.nll_k = nll_k
if probe_train:
    cfg.eval.probe_train = probe_train
ctx = EvalContext(model, ds, cfg, split, folder)
torch.manual_seed(EVAL_SEED)
results = {}
per_example = None
for ev in EVALUATORS:
    if ev.applies(model, ds) and (only == "all" or ev.name == only) and ev.name not in skip:
        t, c = time.perf_counter(), time.process_time()
        results.update(ev.run(ctx))
        stages[ev.name], cpu[ev.name] = time.perf_counter() - t, time.process_time() - c
if sem:  # the spread of the per-example estimates, from the same seed again
    torch.manual_seed(EVAL_SEED)
    with torch.no_grad():
        per_example = torch.cat([model.nll_iwae(x, cfg.eval.nll_k, cfg.eval.nll_batch) for x in ctx.batches()])
    results["nll_iwae_sem"] = float(per_example.std() / math.sqrt(len(per_example)))
keep = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
print(json.dumps({"stages_s": stages, "total_s": sum(stages.values()), "stages_cpu_s": cpu,
                  "total_cpu_s": sum(cpu.values()), "results": keep}))
"""


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def run_worker(src: Path, run: str, limit: int, nll_k: int, only: str, skip: str, sem: bool, probe_train: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    load = loadavg()
    started = time.perf_counter()
    argv = [run, str(limit), str(nll_k), only, skip, "sem" if sem else "-", str(probe_train)]
    done = subprocess.run([sys.executable, "-c", WORKER, *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{src} on {run}:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - started
    out["loadavg"] = [load, loadavg()]
    return out


def rounded(x):
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return round(x, 4) if isinstance(x, float) else x


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-src", required=True, help="src/ of a worktree at bd434a7")
    p.add_argument("--beta-vae", help="a beta_vae run on dSprites")
    p.add_argument("--vqvae2", help="a vqvae2 run with its prior")
    p.add_argument("--vae", help="a VAE run on binarised MNIST")
    p.add_argument("--vqvae2-probes", help="the vqvae2 run again, its feature_probes alone")
    p.add_argument("--vqvae2-whole", help="the vqvae2 run again, its whole evaluation with the config's settings")
    p.add_argument("--beta-vae-whole", help="the beta_vae run again, its whole evaluation with the config's settings")
    p.add_argument("--probe-train", type=int, default=2000, help="training codes of the feature probes (that case)")
    p.add_argument("--limit", type=int, default=2000, help="examples of the evaluated split (beta_vae, vqvae2)")
    p.add_argument("--skip", default="", help="evaluators left out for vqvae2, comma-separated (e.g. feature_probes)")
    p.add_argument("--iwae-limit", type=int, default=20, help="test images for the IWAE at k = 5000")
    args = p.parse_args()
    versions = {"before": Path(args.base_src), "after": HERE.parent / "src"}
    cases = [case for case in (
        ("vae_iwae_k5000", args.vae, args.iwae_limit, 5000, "likelihood"),
        ("vqvae2_with_priors", args.vqvae2, args.limit, 0, "all"),
        ("vqvae2_feature_probes", args.vqvae2_probes, args.limit, 0, "feature_probes"),
        ("vqvae2_whole_eval", args.vqvae2_whole, 0, 0, "all"),
        ("beta_vae_dsprites", args.beta_vae, args.limit, 0, "all"),
        ("beta_vae_dsprites_whole_eval", args.beta_vae_whole, 0, 0, "all"),
    ) if case[1]]
    # cases of an earlier invocation that this one does not run again are kept
    previous = HERE / "eval_speed.json"
    rows = json.loads(previous.read_text())["cases"] if previous.exists() else {}
    for name, run, limit, nll_k, only in cases:
        skipped = args.skip.split(",") if args.skip and name == "vqvae2_with_priors" else []
        probe_train = args.probe_train if only == "feature_probes" else 0
        row = {"run": run, "examples": limit or "all", "skipped": skipped}
        if probe_train:
            row["probe_train"] = probe_train
        for v, src in versions.items():
            row[v] = run_worker(src, run, limit, nll_k, only, ",".join(row["skipped"]),
                                sem=only == "likelihood" and v == "after", probe_train=probe_train)
            print(name, v, round(row[v]["total_s"], 1), json.dumps(rounded(row[v]["stages_cpu_s"])), flush=True)
        for unit in ("", "cpu_"):  # wall seconds, and CPU seconds of the process (what the load does not stretch)
            before, after = row["before"], row["after"]
            row[f"speedup_{unit}total"] = before[f"total_{unit}s"] / after[f"total_{unit}s"]
            old = before[f"stages_{unit}s"]
            row[f"speedup_{unit}by_stage"] = {k: old[k] / t for k, t in after[f"stages_{unit}s"].items() if k in old}
        rows[name] = rounded(row)
        result = {
            "method": "each version in its own process (PYTHONPATH at its src), the evaluators `evaluate` runs, "
            "timed one by one, on the first `examples` of the split; one torch thread",
            "before": "commit bd434a7",
            "after": "this checkout",
            "cases": rows,
        }
        write_result(__file__, result)  # after each case: what finished is kept
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
