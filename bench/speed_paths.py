"""Each hot path rewritten for speed (issue 8) against the formula it replaced, timed in the same process.

The rewrites give bit for bit what the old formulas gave (tests/test_speed_paths.py holds the old
formulas and checks it); this script times each pair on the shapes of bench/peers.py, in interleaved
rounds (the order flips every round, round 0 warms up and is dropped), and reports median
microseconds per call and the speed-up:

- `batches_get`: one MNIST training batch of 100 with dynamic binarisation (`Batches.get`): gather by
  index_select, and the Bernoulli draw written into the noise buffer (lt_), against fancy indexing and
  a bool comparison copied to float.
- `dae_mask`: the masked dimensions of a 100 x 784 batch (fraction 0.25): the 196th smallest noise
  value per row (kthvalue) against a sort of every row; `peer_bernoulli_mask` is what the
  `autoencoders` package does instead (each pixel masked independently, not a fixed fraction).
- `squared_error`: forward and backward of the per-example squared error on 100 x 784: one mse_loss
  kernel against (out - x) ** 2.
- `adam_step`: one optimiser step on the Burda VAE's parameters (gradients set): torch.optim.Adam's
  unfused loop (the peers' optimiser; the engine's with train.fused_optimizer=false) against its fused
  kernels (the engine's default; not bit-identical).
- `iwae_log_weights`: log-weights of 500 test images, k = 100, 5,000 decodes a chunk, Burda VAE: the
  data broadcast over the samples (a view) against k copies of it.

    .venv/bin/python bench/speed_paths.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from test_speed_paths import old_fraction_mask, old_log_weights, old_prepare

from aezoo.data import Batches
from aezoo.data.base import mix_seed
from aezoo.models.ae import reconstruction_error
from aezoo.models.regularised import fraction_mask
from common import write_result
from peers import BURDA, burda_vae, mnist, test_subset


def pair(fns: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict:
    """Median microseconds per call of each function, in interleaved rounds; speed-ups against 'old'."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds + 1):
        for name in names if r % 2 else names[::-1]:
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            if r:
                times[name].append((time.perf_counter() - t0) / calls * 1e6)
    us = {n: round(statistics.median(t), 1) for n, t in times.items()}
    return {"us_per_call": us, "speedup_vs_old": {n: round(us["old"] / v, 2) for n, v in us.items() if n != "old"},
            "calls_per_round": calls, "rounds": rounds}


def batches_get(rounds: int) -> dict:
    ds = mnist()
    b = Batches(ds, "train", 100, "dynamic", seed=0)
    step = [0]

    def new():
        step[0] += 1
        return b.get(step[0])

    def old():
        step[0] += 1
        return old_prepare(ds.x["train"][b.indices(step[0])], ds.scale, "dynamic", mix_seed(0, step[0], 7))

    return pair({"old": old, "new": new}, 200, rounds)


def dae_mask(rounds: int) -> dict:
    x = torch.rand(100, 1, 28, 28)
    return pair({"old": lambda: old_fraction_mask(x, 0.25), "new": lambda: fraction_mask(x, 0.25),
                 "peer_bernoulli_mask": lambda: x * (torch.rand_like(x) > 0.25)}, 50, rounds)


def squared_error(rounds: int) -> dict:
    x = torch.rand(100, 1, 28, 28)
    out = torch.randn(100, 1, 28, 28, requires_grad=True)

    def run(fn):
        def go():
            fn().mean().backward()
            out.grad = None
        return go

    return pair({"old": run(lambda: ((out - x) ** 2).flatten(1).sum(1)),
                 "new": run(lambda: reconstruction_error(out, x, "gaussian"))}, 200, rounds)


def adam_step(rounds: int) -> dict:
    optimisers = {}
    for name, make in (("old", lambda p: torch.optim.Adam(p, lr=1e-3)),
                       ("fused_not_identical", lambda p: torch.optim.Adam(p, lr=1e-3, fused=True))):
        model = burda_vae()
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        optimisers[name] = make(model.parameters())
    return pair({n: o.step for n, o in optimisers.items()}, 200, rounds)


@torch.no_grad()
def iwae_log_weights(rounds: int) -> dict:
    model = burda_vae().eval()
    x = test_subset(500)
    return pair({"old": lambda: old_log_weights(model, x, 100, 5000), "new": lambda: model.log_weights(x, 100, 5000)},
                2, rounds)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = {"command": "python bench/speed_paths.py " + " ".join(sys.argv[1:]), "budget": vars(args),
              "vae": f"Burda et al. MLP {BURDA}"}
    for name, fn in (("batches_get", batches_get), ("dae_mask", dae_mask), ("squared_error", squared_error),
                     ("adam_step", adam_step), ("iwae_log_weights", iwae_log_weights)):
        result[name] = fn(args.rounds)
        print(name, result[name], flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
