"""Images/s of ancestral sampling from the code priors, before and after sampling one position at a time.

"Before" is the code of commit bd434a7, where every position of every map ran the prior's network on the
whole map; "after" is this checkout, where the networks' `sampler` computes only what each position adds
(`CodePrior.sample`). Both are run here, in turn, on the same run folders, as subprocesses importing
aezoo from their own source tree (--base-src: a worktree of bd434a7, `git worktree add BASE bd434a7`;
each reads the run through `eval_speed.COMPATIBLE_COPY`):

  - a vqvae2 run with its PixelSNAIL priors (a 4x4 top map, an 8x8 bottom map given the top),
  - a vqvae run with its gated PixelCNN prior (one 7x7 map).

Each draws --n images (`model.sample(n)`: codes, then the decoder) from torch.manual_seed(0), --reps
times, old and new alternating so that both meet the machine's load alike; images/s is n over the
median wall time. The sampled codes of the two versions are compared: identical for the fixed seed.
One torch thread; /proc/loadavg is read before and after.

    .venv/bin/python bench/sampling_speed.py --base-src /work/runs/h18speed/base/src \\
        --run /work/runs/h18speed/vqvae2 --run /work/runs/h18speed/vqvae
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result
from eval_speed import COMPATIBLE_COPY

HERE = Path(__file__).parent
WORKER = COMPATIBLE_COPY + """
import json, sys, time, numpy as np, torch
from aezoo.runfolder import load_run
torch.set_num_threads(1)
run, n, out = compatible_copy(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = load_run(run)[0]
prior = model.require_prior()
with torch.no_grad():
    torch.manual_seed(0)
    started = time.perf_counter()
    codes = prior.sample(n)
    images = model.decode_codes(codes)
    wall = time.perf_counter() - started
np.savez(out, *[c.numpy() for c in codes], images=images.numpy())
print(json.dumps({"wall_s": wall, "prior": type(prior).__name__}))
"""


def run_worker(src: Path, run: str, n: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WORKER, run, str(n), str(out)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-src", required=True, help="src/ of a worktree at bd434a7")
    p.add_argument("--run", action="append", required=True, help="a vqvae or vqvae2 run folder with its prior")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    versions = {"before": Path(args.base_src), "after": HERE.parent / "src"}
    load_before = loadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.run:
            walls = {v: [] for v in versions}
            name = Path(run).name
            for rep in range(args.reps):
                for v, src in versions.items():
                    r = run_worker(src, run, args.n, Path(tmp) / f"{name}_{v}_{rep}.npz")
                    walls[v].append(r["wall_s"])
                    print(name, v, rep, round(r["wall_s"], 3), flush=True)
            saved = {v: np.load(Path(tmp) / f"{name}_{v}_0.npz") for v in versions}
            code_keys = [k for k in saved["before"].files if k.startswith("arr_")]
            identical = all(np.array_equal(saved["before"][k], saved["after"][k]) for k in code_keys)
            max_image_diff = float(np.abs(saved["before"]["images"] - saved["after"]["images"]).max())
            before, after = statistics.median(walls["before"]), statistics.median(walls["after"])
            rows[name] = {
                "prior": r["prior"],
                "n": args.n,
                "wall_s": {v: [round(t, 3) for t in w] for v, w in walls.items()},
                "images_per_s_before": round(args.n / before, 2),
                "images_per_s_after": round(args.n / after, 2),
                "speedup": round(before / after, 2),
                "codes_identical": identical,
                "max_abs_image_difference": max_image_diff,
            }
            result = {
                "method": "model.sample's codes and decoding, --n images from torch.manual_seed(0), one torch "
                "thread, median of --reps alternating runs per version, each in its own process",
                "before": "commit bd434a7 (the whole map's forward pass per position)",
                "after": "this checkout (CodePrior.sample through the networks' sampler)",
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
                "runs": rows,
            }
            write_result(__file__, result)  # after each run folder: what finished is kept
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
