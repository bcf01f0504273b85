"""Does `torch.compile` pay for a CPU training step? The Burda et al. VAE step of bench/peers.py (loss,
backward, the engine's fused Adam; 50 pre-made binarised MNIST batches of 100) eager against the same
step with the loss compiled by torch.compile (default inductor backend), in interleaved rounds on one
thread (speed_paths.pair). The compilation itself is timed apart (`compile_s`: the first call, fast when
inductor's on-disk cache already holds this graph) and left out of the rounds.

    .venv/bin/python bench/compile_vae.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result
from peers import BURDA, aezoo_adam, burda_vae, mnist, premade
from speed_paths import pair


def stepper(model, loss, batches):
    opt = aezoo_adam(model.parameters())
    done = [0]

    def step() -> None:
        x = batches[done[0] % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss(x).backward()
        opt.step()
        done[0] += 1

    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batches = premade(mnist(), "train", 100, "dynamic", 50)
    eager = burda_vae()
    compiled = copy.deepcopy(eager)
    steps = {"old": stepper(eager, lambda x: eager.loss(x).total, batches),
             "compiled": stepper(compiled, torch.compile(lambda x: compiled.loss(x).total), batches)}
    started = time.perf_counter()
    steps["compiled"]()  # the first call compiles
    compile_s = time.perf_counter() - started
    result = {"command": "python bench/compile_vae.py " + " ".join(sys.argv[1:]), "vae": f"Burda et al. MLP {BURDA}",
              "what": "one training step (batch 100); 'old' is eager, 'compiled' has torch.compile(loss)",
              "compile_s": round(compile_s, 1), "threads": args.threads, **pair(steps, 200, args.rounds)}
    print(result)
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
