"""Scaling across processes on this CPU: 1 and 2 torchrun processes at the same global batch, for the
MLP VAE (`vae`, batch 100) and the conv VQ-VAE (`vqvae`, batch 64) on MNIST, and what limits it.

1. Throughput: `torchrun --standalone --nproc_per_node N -m aezoo train MODEL` for N = 1, 2, --steps
   steps at the global batch, interleaved N = 1, 2 for --rounds rounds so both meet the same load; a
   run's samples/s is the median of its metrics.jsonl lines after the first (rank 0 logs the global
   batch's rate). efficiency = samples/s(2) / (2 x samples/s(1)).
2. Breakdown (this script under torchrun as --worker, the same model, data, optimiser and DDP as
   `aezoo train`): each process times, in alternating blocks of 10 steps, the DDP training step at its
   half of the global batch and the same step under DDP's no_sync() (no gradient all-reduce: the
   compute alone); then the all-reduce by itself of one flat fp32 buffer of the model's gradient size
   (gloo). Reported per process: ms per step for each, the exposed communication (DDP step - compute)
   and its share of the step, the all-reduce's ms, and the process's CPU share (CPU time / wall time
   over the timed steps: below 1 when it waits for a core or for its peer). A 1-process worker gives
   the step at the full batch; with the half-batch compute it splits a step into a fixed part a and a
   per-example part (t(b) = a + c b, a = 2 t(B/2) - t(B)): a, the per-kernel overhead (kernel launches,
   the Python of the forward and backward passes, the optimiser's per-parameter work), is paid by every
   process whole, so two processes can at best give t(B) / t(B/2) = 2 - a / t(B/2) times one's rate.

The machine has 2 cores shared with other jobs: /proc/loadavg is recorded at the start and the end of
each measurement, and a measurement made under load says so. One torch thread per process.

    nice -n 5 .venv/bin/python bench/scaling.py [--steps 200 --conv-steps 60 --rounds 2] [--out /work/runs/scaling]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"vae": 100, "vqvae": 64}  # the global batch of each


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *args]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-3000:]}")
    return done


def throughput(model: str, n: int, steps: int, out: Path) -> float:
    run = out / f"{model}_{n}"
    shutil.rmtree(run, ignore_errors=True)
    sets = [f"train.batch_size={MODELS[model]}", "train.progress=false", "train.log_every=20",
            "data.train_split=train+val",  # no validation pass at the end: training alone is timed
            "train.checkpoint_every=100000"]
    torchrun(n, ["-m", "aezoo", "train", model, "--out", str(run), "--steps", str(steps),
                 *[a for s in sets for a in ("--set", s)]])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [x["samples_per_s"] for x in lines if x.get("split") == "train"]
    return statistics.median(rates[1:] or rates)


def breakdown(model: str, n: int, steps: int, out: Path) -> list[dict]:
    path = out / f"worker_{model}_{n}.json"
    torchrun(n, [str(Path(__file__).resolve()), "--worker", model, "--worker-steps", str(steps),
                 "--worker-out", str(path)])
    return json.loads(path.read_text())


def worker(model: str, steps: int, out: Path) -> None:
    """Under torchrun: time this process's DDP step, its compute alone and the all-reduce (docstring)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from aezoo import registry
    from aezoo.data import Batches
    from aezoo.optim import make_optimizer
    from aezoo.train import _LossModule, _prepare

    torch.set_num_threads(1)
    cfg = registry.entry(model).run_config({"train": {"batch_size": MODELS[model], "device": "cpu"}})
    dataset, device, procs = _prepare(cfg)
    torch.manual_seed(0)
    net = registry.build_from_config(model, cfg.model)
    batches = Batches(dataset, "train", MODELS[model], seed=0, rank=procs.rank, world=procs.world)
    net.on_train_start(batches.get(0))
    module = _LossModule(net)
    if procs.world > 1:
        module = nn.parallel.DistributedDataParallel(module, find_unused_parameters=net.skips_parameters)
    optimizer = make_optimizer(net.parameters(), cfg.train)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    step = 0

    def train_step(sync: bool) -> float:
        nonlocal step
        x = batches.get(step)
        t = time.perf_counter()
        with module.no_sync() if not sync else contextlib.nullcontext():
            total = module(x, step)[0]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
        optimizer.step()
        step += 1
        return time.perf_counter() - t

    for _ in range(5):  # warm-up
        train_step(True)
    times = {"ddp": [], "compute": []}
    wall = cpu = 0.0
    kinds = ("ddp", "compute") if procs.world > 1 else ("compute",)  # one process: nothing to all-reduce
    for block in range(max(1, steps // 10)):
        for kind in kinds if block % 2 == 0 else kinds[::-1]:
            w, c = time.perf_counter(), time.process_time()
            times[kind] += [train_step(kind == "ddp" or procs.world == 1) for _ in range(10)]
            wall, cpu = wall + time.perf_counter() - w, cpu + time.process_time() - c
    reduce_ms = None
    if procs.world > 1:
        flat = torch.zeros(params)
        for _ in range(3):
            dist.all_reduce(flat)
        reduce = []
        for _ in range(steps):
            dist.barrier()
            t = time.perf_counter()
            dist.all_reduce(flat)
            reduce.append(time.perf_counter() - t)
        reduce_ms = 1000 * statistics.median(reduce)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items() if v}
    mine = {"rank": procs.rank, "world": procs.world, "local_batch": len(batches.get(0)), "parameters": params,
            "compute_ms": round(ms["compute"], 3), "cpu_share": round(cpu / wall, 3)}
    if procs.world > 1:
        mine |= {"step_ms": round(ms["ddp"], 3), "exposed_comm_ms": round(ms["ddp"] - ms["compute"], 3),
                 "comm_share": round((ms["ddp"] - ms["compute"]) / ms["ddp"], 3),
                 "allreduce_ms": round(reduce_ms, 3), "allreduce_mb": round(params * 4 / 1e6, 2)}
    gathered = [None] * procs.world
    if procs.world > 1:
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if procs.main:
        out.write_text(json.dumps(gathered))
    if procs.world > 1:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vae,vqvae")
    p.add_argument("--steps", type=int, default=200, help="training steps of each vae throughput run")
    p.add_argument("--conv-steps", type=int, default=60, help="training steps of each vqvae throughput run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker-share", type=float, default=0.3,
                   help="timed steps of each breakdown worker, as a share of the model's throughput steps")
    p.add_argument("--out", default="/work/runs/scaling")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.worker_steps, Path(args.worker_out))
        return
    before = loadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, result = time.time(), {"args": vars(args), "models": {}}
    for model in args.models.split(","):
        load_start = loadavg()
        rates, steps = {1: [], 2: []}, args.steps if model == "vae" else args.conv_steps
        for _ in range(args.rounds):
            for n in (1, 2):
                rates[n].append(round(throughput(model, n, steps, out), 1))
        timed = max(20, round(steps * args.worker_share))
        one, two = breakdown(model, 1, timed, out)[0], breakdown(model, 2, timed, out)
        med = {n: statistics.median(v) for n, v in rates.items()}
        half = statistics.mean(r["compute_ms"] for r in two)
        fixed = 2 * half - one["compute_ms"]
        result["models"][model] = {
            "global_batch": MODELS[model], "steps": steps, "worker_steps": timed,
            "samples_per_s": {str(n): v for n, v in rates.items()},
            "median_samples_per_s": {str(n): v for n, v in med.items()},
            "speedup": round(med[2] / med[1], 3), "efficiency": round(med[2] / (2 * med[1]), 3),
            "one_process": one, "two_processes": two,
            "fixed_ms_per_step": round(fixed, 3),
            "speedup_bound_from_fixed_cost": round(one["compute_ms"] / half, 3),
            "loadavg_start": load_start, "loadavg_end": loadavg(),
        }
        print(model, json.dumps(result["models"][model]), flush=True)
    result["wall_time_s"] = round(time.time() - started, 1)
    result["loadavg_before"] = before
    result["under_load"] = before[0] >= 1.0  # other jobs held the cores before this script started any
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
