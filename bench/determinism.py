"""Same seed, same weights (issue 19): same-seed training runs repeated in fresh processes and compared
step by step, with the engine's thread pinning (`environment.pin_threads`) and without it.

Each child process trains through the engine (`train.train`: the run folder, validation and checkpoints
included) --trials times in a row with seed 7, and after every optimiser step records a fingerprint of
every parameter: the integer sum of its float32 bit patterns (any changed bit changes it). Every run is
compared with its case's first pinned run on the same thread count; a run differs at the first step
where one fingerprint differs. Cases:

  vae_mlp   the issue's run: `aezoo train vae --data mnist --seed 7` (MLP 784-512-256-32, batch 100,
            discretised logistic likelihood, fused Adam), shortened to --steps steps
  vae_conv  the same with model.backbone=conv (oneDNN convolutions), --conv-steps steps

Modes, both with --threads intra-op threads (OMP_NUM_THREADS):
  pinned    the engine as it is: the thread count fixed, MKL's and OpenMP's dynamic adjustment off
  unpinned  pin_threads skipped, what `aezoo train` ran before: MKL_DYNAMIC at its default (true)

Per case also one run on 1 thread, compared with the first --threads run: whether the case's bits depend
on the thread count at all (when they do not, no run-time choice of a thread count can change them).
Rounds of (case, mode) alternate so that every mode meets the same load; --seconds bounds the whole.
Each invocation is added to determinism.json's list (quiet and loaded sessions add up), with a digest of
its reference run's final weights, so that the invocations' references can be compared as well.

    nice -n 5 .venv/bin/python bench/determinism.py --steps 20 --conv-steps 3 --trials 2 --seconds 3000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {"vae_mlp": {}, "vae_conv": {"model": {"backbone": "conv"}}}


def child(case: str, steps: int, trials: int, pinned: bool, out: str) -> None:
    import torch

    from aezoo import registry, train
    from aezoo.environment import describe

    if not pinned:
        train.pin_threads = lambda: None
    fingerprints: list[list[int]] = []
    real_step = train.Trainer._schedule_step

    def step_and_fingerprint(self):
        real_step(self)
        fingerprints.append([int(p.detach().view(torch.int32).sum(dtype=torch.int64)) for p in self.model.parameters()])

    train.Trainer._schedule_step = step_and_fingerprint
    tree = {"data": {"name": "mnist"}, "train": {"seed": 7, "steps": steps, "progress": False}, **CASES[case]}
    runs = []
    for _ in range(trials):
        fingerprints.clear()
        with tempfile.TemporaryDirectory() as folder:
            train.train(registry.entry("vae").run_config(json.loads(json.dumps(tree))), Path(folder) / "run")
        runs.append(list(fingerprints))
    env = describe(torch.device("cpu"))
    np.save(out, np.array(runs, dtype=np.int64))
    Path(out).with_suffix(".json").write_text(json.dumps({k: env[k] for k in ("torch_threads", "mkl_dynamic")}))


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    differs = (a != b).any(axis=1)
    return int(np.argmax(differs)) if differs.any() else None


def launch(case: str, steps: int, trials: int, threads: int, pinned: bool, folder: Path, index: int):
    out = folder / f"{case}_{'pinned' if pinned else 'unpinned'}_{threads}_{index}.npy"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", case, "--steps", str(steps), "--trials", str(trials),
                    "--out", str(out), *([] if pinned else ["--unpinned"])], env=env, check=True)
    seconds = time.perf_counter() - started
    return np.load(out), json.loads(out.with_suffix(".json").read_text()), seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--conv-steps", type=int, default=3)
    p.add_argument("--trials", type=int, default=2, help="runs per process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3000, help="no new round starts after this")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated, of " + ", ".join(CASES))
    p.add_argument("--child")
    p.add_argument("--unpinned", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args.child, args.steps, args.trials, not args.unpinned, args.out)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    started = time.perf_counter()
    steps = {"vae_mlp": args.steps, "vae_conv": args.conv_steps}
    cases = args.cases.split(",")
    slots = [s for s in [("vae_mlp", True), ("vae_mlp", False), ("vae_conv", True)] if s[0] in cases]
    results = {f"{c}_{'pinned' if pin else 'unpinned'}": {"case": c, "pinned": pin, "steps": steps[c], "runs": [],
                                                          "processes": 0, "process_seconds": []} for c, pin in slots}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference, finals = {}, {}
        for case in cases:  # the 1-thread run and the first multi-thread run of each case
            one, _, _ = launch(case, steps[case], 1, 1, True, folder, 0)
            many, _, _ = launch(case, steps[case], 1, args.threads, True, folder, 0)
            reference[case] = many[0]
            finals[case] = hashlib.sha256(many[0][-1].tobytes()).hexdigest()[:16]
            step = first_difference(one[0], many[0])
            results[f"{case}_thread_count"] = {"case": case, "steps": steps[case],
                                               "first_step_1_vs_threads_differ": step}
        index = 1
        while time.perf_counter() - started < args.seconds:
            for case, pinned in slots:
                runs, env, seconds = launch(case, steps[case], args.trials, args.threads, pinned, folder, index)
                r = results[f"{case}_{'pinned' if pinned else 'unpinned'}"]
                r["processes"] += 1
                r["process_seconds"].append(round(seconds, 1))
                r["mkl_dynamic"], r["torch_threads"] = env["mkl_dynamic"], env["torch_threads"]
                r["runs"] += [first_difference(reference[case], run) for run in runs]
                print(case, "pinned" if pinned else "unpinned", r["runs"][-args.trials:], f"{seconds:.0f}s", flush=True)
            index += 1
            write(args, results, finals, started)  # after every round: a stopped benchmark keeps what it measured


def write(args, results: dict, finals: dict, started: float) -> None:
    from common import write_result

    for r in results.values():
        if "runs" in r:
            r["runs_compared"] = len(r["runs"])
            r["runs_differing"] = sum(step is not None for step in r["runs"])
    this = {
        "command": " ".join(["bench/determinism.py", *sys.argv[1:]]),
        "threads": args.threads,
        "trials_per_process": args.trials,
        "wall_time_s": round(time.perf_counter() - started),
        "load_average_at_end": [round(v, 1) for v in os.getloadavg()],
        "reference_final_weights": finals,
        "results": results,
    }
    path = Path(__file__).with_suffix(".json")
    earlier = json.loads(path.read_text()).get("invocations", []) if path.exists() else []
    earlier = [i for i in earlier if i.get("started") != STARTED]
    invocations = [*earlier, {"started": STARTED, **this}]
    totals: dict = {}
    for inv in invocations:
        for key, r in inv["results"].items():
            if "runs" in r:
                t = totals.setdefault(f"{key}_{r['steps']}_steps_{inv['threads']}_threads",
                                      {"runs_compared": 0, "runs_differing": 0, "invocations": 0})
                t["runs_compared"] += r["runs_compared"]
                t["runs_differing"] += r["runs_differing"]
                t["invocations"] += 1
    write_result(__file__, {"invocations": invocations, "totals": totals})


STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    main()
