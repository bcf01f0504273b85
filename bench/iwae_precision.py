"""The IWAE at k = 5000 in bfloat16: how much faster, and how far from the float32 estimate.

Issue 18 asks for the test NLL at k = 5000 three times faster without changing the estimate beyond its
own sampling error. In float32 the decoder's products already run at the machine's matrix-product rate
(bench/README), so the only lever left is lower precision. This script measures that lever on the
zoo's trained VAE (vae-burda2015, Burda et al.'s 784-200-200-50 network), decoding in the eval's
blocks of draws: the decoder and the Bernoulli likelihood in float32, with the decoder's products in
bfloat16 and the likelihood in float32 ("bf16 products"), and everything in bfloat16 ("bf16
throughout"). The likelihood is written as -softplus(-(2x - 1) l) in every variant (equal to
`VAE.log_weights`'s x l - softplus(l), one pass fewer), and every variant sees the same draws z for
the same image. It reports:

- per test image, the difference of each variant's NLL from float32's, against the Monte Carlo spread
  of the float32 estimate itself (two independent sets of 5000 draws), and their means over the images;
- the CPU time per image of each variant, timed in alternating rounds in one process (one thread).

    OMP_NUM_THREADS=1 .venv/bin/python bench/iwae_precision.py [--images 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.data import Batches  # noqa: E402
from aezoo.distributions import standard_normal_log_prob  # noqa: E402
from aezoo.models.vae import DECODE_BLOCK  # noqa: E402
from aezoo.runfolder import load_run  # noqa: E402
from common import write_result  # noqa: E402

K = 5000


def log_px(decoder, z: torch.Tensor, x: torch.Tensor, variant: str) -> torch.Tensor:
    """log p(x|z) for draws z (S, D) of one image x (784,): sum_d x_d l_d - softplus(l_d)."""
    if variant == "float32":
        logits = decoder(z).flatten(1)
    else:
        logits = decoder(z.bfloat16()).flatten(1)
        if variant == "bf16 products":
            logits = logits.float()
    # -softplus(-s l) with s = 2x - 1 is x l - softplus(l) in one pass, and small where the model is right,
    # so that rounding it to bfloat16 costs least
    sign = (2 * x - 1).to(logits.dtype)
    return -F.softplus(-sign * logits).float().sum(1)


def nll(model, decoders: dict, x: torch.Tensor, variant: str, seed: int) -> float:
    """-log p(x) estimated from K draws of q(z|x) (one image), the draws fixed by seed."""
    q = model.posterior(x.unsqueeze(0))
    eps = torch.randn(K, q.mean.shape[-1], generator=torch.Generator().manual_seed(seed))
    z = q.mean + q.std * eps
    rows = DECODE_BLOCK // x.numel()  # the eval's block of decodings on the CPU
    log_pz_over_q = standard_normal_log_prob(z) - q.log_prob(z)
    lw = torch.cat([log_px(decoders[variant], z[s : s + rows], x, variant) for s in range(0, K, rows)]) + log_pz_over_q
    return -(torch.logsumexp(lw, 0).item() - math.log(K))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5, help="timing rounds, each variant once per round")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, dataset, cfg, _ = load_run("vae-burda2015", split="test")
    dataset.x["test"] = dataset.x["test"][: args.images]
    torch.manual_seed(0)
    xs = torch.cat(list(Batches(dataset, "test", 100, cfg.data.binarize, seed=12345, shuffle=False))).flatten(1)
    decoders = {"float32": model.decoder, "bf16 products": copy.deepcopy(model.decoder).bfloat16()}
    decoders["bf16 throughout"] = decoders["bf16 products"]
    variants = list(decoders)
    with torch.no_grad():
        reference = [nll(model, decoders, x, "float32", seed=i) for i, x in enumerate(xs)]
        redrawn = [nll(model, decoders, x, "float32", seed=10_000 + i) for i, x in enumerate(xs)]
        estimates = {v: [nll(model, decoders, x, v, seed=i) for i, x in enumerate(xs)] for v in variants[1:]}
        seconds = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                t0 = time.process_time()
                for i, x in enumerate(xs[:10]):
                    nll(model, decoders, x, v, seed=i)
                seconds[v].append((time.process_time() - t0) / 10)

    def spread(a: list[float], b: list[float]) -> dict:
        d = [u - v for u, v in zip(a, b)]
        return {
            "mean": round(statistics.fmean(d), 5),
            "sd_per_image": round(statistics.stdev(d), 5),
            "max_abs": round(max(map(abs, d)), 5),
        }

    base = statistics.median(seconds["float32"])
    result = {
        "command": f"OMP_NUM_THREADS=1 python bench/iwae_precision.py --images {args.images} --rounds {args.rounds}",
        "model": "zoo vae-burda2015",
        "k": K,
        "images": args.images,
        "loadavg": os.getloadavg(),
        "nll_float32_mean": round(statistics.fmean(reference), 4),
        "monte_carlo_float32_redrawn_minus_float32": spread(redrawn, reference),
        "deviation_from_float32": {v: spread(estimates[v], reference) for v in variants[1:]},
        "cpu_s_per_image_median": {v: round(statistics.median(s), 4) for v, s in seconds.items()},
        "speedup_over_float32": {v: round(base / statistics.median(s), 2) for v, s in seconds.items()},
        "cpu_s_per_image_rounds": {v: [round(t, 4) for t in s] for v, s in seconds.items()},
    }
    print(result)
    write_result(__file__, result)


if __name__ == "__main__":
    main()
