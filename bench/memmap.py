"""Training from memory-mapped data (data.memmap): a file larger than the memory the process may use,
and the price of mapping on data that fits.

1. Larger than memory. A uint8 array of --rows MNIST-shaped images (N x 1 x 28 x 28, uniform noise;
   1.57 GB at the default 2,000,000 rows) is written to --out, its pages then dropped from the page cache
   (posix_fadvise DONTNEED, for this file only), so that training reads it from disk. `aezoo train vae
   --data arrays --set data.memmap=on` (batch 100, train+val: the two splits are one view of the file)
   runs --steps steps in a cgroup (v1 memory controller) whose memory.limit_in_bytes is --limit-mib:
   page cache and anonymous memory together may not exceed it, and the kernel reclaims the file's clean
   pages to stay under it. (RLIMIT_AS, prlimit's only memory limit that Linux enforces, would count the
   whole mapping as address space and refuse it; RLIMIT_RSS is not enforced.) The training process's
   VmRSS, RssAnon and RssFile (from /proc/PID/status) and the cgroup's usage are sampled every 0.25 s;
   reported: their peaks and a time series (one sample per second), the cgroup's own peak, its failcnt
   (times the limit was reached and pages were reclaimed) and OOM kills (must be 0), and the training
   samples/s (the median of metrics.jsonl's lines after the first). Where no cgroup can be made the run
   is unlimited and says so (`enforced: false`): its peak RSS against the file's size is the measure.
2. Data that fits. The same VAE on --fit-rows rows (47 MB at 60,000): `aezoo train` with data.memmap=off
   (read into memory) and on (mapped), --fit-steps steps each, interleaved for --rounds rounds so that
   both meet the same load; samples/s per run (median of its log lines). In-process, the cost of what
   differs: loading (load_dataset, --reps times) and gathering a batch (Batches.get of 100 rows, 2,000
   batches, interleaved), per mode, with the pages already in the page cache (warm) as on a second epoch.

One torch thread. Needs root for the cgroup (as in this container).

    nice -n 5 .venv/bin/python bench/memmap.py [--rows 2000000 --limit-mib 512 --steps 600] [--out /work/runs/memmap]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup/memory")
SHAPE = (1, 28, 28)


def write_noise(path: Path, rows: int, seed: int = 0) -> None:
    """A .npy of `rows` uint8 images written in chunks (never whole in memory), then out of the page cache."""
    shape = (rows, *SHAPE)
    if not (path.is_file() and path.stat().st_size > rows * 784):
        rng = np.random.default_rng(seed)
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for start in range(0, rows, 50_000):
                f.write(rng.integers(0, 256, (min(50_000, rows - start), *SHAPE), dtype=np.uint8).tobytes())
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def make_cgroup(limit_bytes: int) -> Path | None:
    group = CGROUP / f"aezoo_bench_memmap_{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        return group
    except OSError:
        return None


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def train(run: Path, data: Path, memmap: str, steps: int, group: Path | None = None,
          extra: tuple[str, ...] = ()) -> dict:
    """`aezoo train vae` on `data` in a subprocess (inside `group` if given), its memory sampled."""
    cmd = [sys.executable, "-m", "aezoo", "train", "vae", "--data", "arrays", "--out", str(run), "--steps", str(steps)]
    for s in (f"data.file={data}", f"data.memmap={memmap}", "train.batch_size=100", "train.progress=false",
              "train.log_every=50", "train.checkpoint_every=100000", *extra):
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}

    def enter_group():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=enter_group if group else None)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                s = status(proc.pid)
                if "VmRSS" not in s:  # exited (a zombie has no memory)
                    break
                if group:
                    s["cgroup"] = int((group / "memory.usage_in_bytes").read_text())
                samples.append({"t": time.perf_counter() - started, **s})
            except (OSError, ValueError):
                pass
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}): {err.strip()[-2000:]}")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [x["samples_per_s"] for x in lines if x.get("split") == "train"]
    rates = rates[1:] or rates  # the first line holds the first steps' warm-up
    return {"wall_s": time.perf_counter() - started, "samples_per_s": statistics.median(rates),
            "samples": samples}


def part_large(args, out: Path) -> dict:
    data = out / "large.npy"
    write_noise(data, args.rows)
    limit = args.limit_mib << 20
    group = make_cgroup(limit)
    try:
        r = train(out / "large_run", data, "on", args.steps, group, ("data.train_split=train+val",))
        cg = {}
        if group:
            cg = {k: int((group / f"memory.{k}").read_text()) for k in ("max_usage_in_bytes", "failcnt")}
            cg["oom_kills"] = int(next((line.split()[1] for line in (group / "memory.oom_control").read_text()
                                        .splitlines() if line.startswith("oom_kill ")), 0))
    finally:
        if group:
            group.rmdir()
    samples = r.pop("samples")
    peak = {k: max(s.get(k, 0) for s in samples) for k in ("VmRSS", "RssAnon", "RssFile", "cgroup")}
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    series, next_t = [], 0.0
    for s in samples:
        if s["t"] >= next_t:
            series.append({"t_s": round(s["t"], 2), "rss_mib": mib(s["VmRSS"]), "anon_mib": mib(s["RssAnon"]),
                           "file_mib": mib(s["RssFile"]), "cgroup_mib": mib(s.get("cgroup", 0))})
            next_t = s["t"] + 1.0
    return {"file_bytes": data.stat().st_size, "rows": args.rows, "steps": args.steps,
            "limit": "cgroup v1 memory.limit_in_bytes" if group else "none (no cgroup could be made)",
            "enforced": group is not None, "limit_mib": args.limit_mib if group else None,
            "peak_mib": {k: mib(v) for k, v in peak.items()}, "vm_hwm_mib": mib(samples[-1].get("VmHWM", 0)),
            "cgroup_max_usage_mib": mib(cg["max_usage_in_bytes"]) if cg else None,
            "cgroup_failcnt": cg.get("failcnt"), "oom_kills": cg.get("oom_kills"),
            "samples_per_s": round(r["samples_per_s"], 1), "wall_s": round(r["wall_s"], 1), "rss_series": series}


def part_fit(args, out: Path) -> dict:
    from aezoo.config import DataConfig
    from aezoo.data import Batches, load_dataset

    data = out / "fit.npy"
    write_noise(data, args.fit_rows, seed=1)
    data.read_bytes()  # into the page cache: both modes start warm
    runs = {"off": [], "on": []}
    for r in range(args.rounds):
        for mode in ("off", "on"):
            runs[mode].append(round(train(out / f"fit_{mode}_{r}", data, mode, args.fit_steps)["samples_per_s"], 1))
    load_s, gather_us = {"off": [], "on": []}, {"off": [], "on": []}
    for _ in range(args.reps):
        for mode in ("off", "on"):
            t = time.perf_counter()
            load_dataset(DataConfig(name="arrays", file=str(data), memmap=mode))
            load_s[mode].append(time.perf_counter() - t)
    datasets = {m: load_dataset(DataConfig(name="arrays", file=str(data), memmap=m)) for m in ("off", "on")}
    batches = {m: Batches(ds, "train", 100, seed=0) for m, ds in datasets.items()}
    for m in batches:  # one pass over the data: every page of the mapping touched once
        for step in range(len(batches[m])):
            batches[m].get(step)
    for rep in range(args.reps):
        for m in batches:
            t = time.perf_counter()
            for step in range(2000):
                batches[m].get(rep * 2000 + step)
            gather_us[m].append((time.perf_counter() - t) / 2000 * 1e6)
    med = lambda v: round(statistics.median(v), 1)  # noqa: E731
    return {"rows": args.fit_rows, "file_bytes": data.stat().st_size, "steps": args.fit_steps, "rounds": args.rounds,
            "samples_per_s": runs, "median_samples_per_s": {m: med(v) for m, v in runs.items()},
            "ratio_mapped_to_memory": round(statistics.median(runs["on"]) / statistics.median(runs["off"]), 3),
            "load_ms": {m: round(1000 * statistics.median(v), 1) for m, v in load_s.items()},
            "gather_us_per_batch": {m: med(v) for m, v in gather_us.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--limit-mib", type=int, default=512)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--fit-rows", type=int, default=60_000)
    p.add_argument("--fit-steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="/work/runs/memmap")
    p.add_argument("--keep-data", action="store_true", help="keep the generated arrays (else removed at the end)")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = {"args": vars(args), "loadavg_at_start": load, "large": part_large(args, out),
              "fit": part_fit(args, out)}
    result["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    result["wall_time_s"] = round(time.time() - started, 1)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_time_s"] = round(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 1)
    if not args.keep_data:
        for name in ("large.npy", "fit.npy"):
            (out / name).unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in result.items() if k != "large"} | {
        "large": {k: v for k, v in result["large"].items() if k != "rss_series"}}, indent=1))
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
