"""Would a fused training step pay for the MLP VAE on the CPU (issue 18)? The Burda et al. VAE step of
bench/peers.py (784-200-200-50 tanh, Bernoulli, batch 100 of dynamically binarised MNIST, the engine's
fused Adam 1e-3) as aezoo takes it (`VAE.loss`, autograd) against the same step with the loss as one
`autograd.Function` whose forward and backward are written out (`FusedELBO` below: no autograd graph,
addmm with the bias in it, tanh in place, tanh' = 1 - h^2, the likelihood, KL and reparameterisation
gradients in closed form), priced as a library path would be: it checks on every call that the nets are
tanh MLPs no hook watches, and assembles the loss with `VAE.regulariser` as `VAE.loss` does. Before
timing, its loss and gradients are checked against autograd's on the same batch and noise (`check`:
largest differences relative to each tensor's scale). The candidate is not in aezoo: its gain stayed
inside the round-to-round spread (fused_vae_step.json: the quartiles of the per-round ratios).

Paths run in alternating rounds in one process (the order flips every round; round 0 warms up and is
dropped), each timed over --steps steps by the wall clock and by the thread's CPU time (which leaves out
the time other processes hold the core: on a shared machine the steadier of the two). Reported: the
medians, and the median and quartiles of the per-round ratios aezoo / candidate.

`--parts` adds, in rounds of their own, what the aezoo step is made of: its forward alone, forward and
backward, the Adam step alone (on fixed gradients) and the step's matrix products alone (bench/peers.py's
bound: every Linear product at its shapes, on pre-allocated tensors). `--overhead` races the two paths on
a tiny net (batch 4, 16-8-8-2), whose kernels do almost no work: what is left is the per-kernel and
per-node overhead each pays. `--profile N` lists each path's N operators with the most self CPU time per
step under torch.profiler (the profiler's own cost is in them: shares, not times).

    .venv/bin/python bench/fused_vae_step.py [--steps 20 --rounds 100 --parts --overhead --profile 25]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import aezoo
from aezoo.distributions import DiagonalGaussian
from aezoo.models.base import Loss
from common import write_result
from peers import BURDA, aezoo_adam, aezoo_loss, burda_vae, layer_products, mnist, premade, products_loop

TINY = {"backbone": "mlp", "hidden": (8, 8), "activation": "tanh", "latent_dim": 2, "likelihood": "bernoulli"}


# --- the candidate -----------------------------------------------------------------------------------


def mlp_forward(params, x):
    """[x, h_1, ..., out] of the tanh MLP with weights and biases `params` (w_1, b_1, w_2, ...)."""
    out = [x]
    for i in range(0, len(params), 2):
        y = torch.addmm(params[i + 1], out[-1], params[i].t())
        out.append(y.tanh_() if i + 2 < len(params) else y)
    return out


def mlp_backward(params, values, d, input_grad: bool):
    """(dL/dx or None, [dL/dw_1, dL/db_1, ...]) from d = dL/d out: dw = d^T h, db = sum d, dh = d w (1 - h^2)."""
    grads = []
    for i in range(len(params) - 2, -1, -2):
        h = values[i // 2]
        grads[:0] = [d.t().mm(h), d.sum(0)]
        if i == 0 and not input_grad:
            return None, grads
        d = d.mm(params[i])
        if i:
            d = torch.ops.aten.tanh_backward(d, h)
    return d, grads


class FusedELBO(torch.autograd.Function):
    """(recon, kl): the batch means of -log p(x|z) (Bernoulli, logits from the decoder) and of
    KL(q(z|x) || N(0, I)) summed over units, z = mean + sigma eps, for tanh MLP encoder and decoder;
    inputs: x (B, F), eps (B, D), the encoder's number of layers, then every weight and bias."""

    @staticmethod
    def forward(ctx, x, eps, encoder_layers, *params):
        encoder, decoder = params[: 2 * encoder_layers], params[2 * encoder_layers :]
        values = mlp_forward(encoder, x)
        q = DiagonalGaussian.from_params(values[-1])
        noise = q.logvar.mul(0.5).exp_().mul_(eps)
        decoded = mlp_forward(decoder, q.mean + noise)
        logits = decoded[-1]
        recon = (F.softplus(logits).sum() - torch.dot(x.reshape(-1), logits.reshape(-1))) / len(x)
        var = q.logvar.exp()
        kl = torch.addcmul(var - q.logvar - 1.0, q.mean, q.mean).sum() * (0.5 / len(x))
        ctx.encoder_layers = encoder_layers
        ctx.values = values, decoded, q, noise, var
        ctx.save_for_backward(x, *params)
        return recon, kl

    @staticmethod
    def backward(ctx, grad_recon, grad_kl):
        x, *params = ctx.saved_tensors
        encoder, decoder = params[: 2 * ctx.encoder_layers], params[2 * ctx.encoder_layers :]
        values, decoded, q, noise, var = ctx.values
        g_recon, g_kl = float(grad_recon) / len(x), float(grad_kl) / len(x)
        d_logits = torch.sigmoid(decoded[-1]).sub_(x).mul_(g_recon)
        d_z, decoder_grads = mlp_backward(decoder, decoded, d_logits, input_grad=True)
        raw, units = values[-1], var.shape[1]
        d_raw = torch.empty_like(raw)
        torch.add(d_z, q.mean, alpha=g_kl, out=d_raw[:, :units])
        d_logvar = torch.mul(d_z, noise, out=d_raw[:, units:])
        d_logvar.add_(var, alpha=g_kl).sub_(g_kl).mul_(0.5)
        d_logvar.masked_fill_(q.logvar != raw[:, units:], 0.0)  # where from_params's clamp held
        _, encoder_grads = mlp_backward(encoder, values, d_raw, input_grad=False)
        return None, None, None, *encoder_grads, *decoder_grads


def tanh_mlp_layers(net: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of a net that is Linear and Tanh modules alone (besides containers, a Flatten and
    Identities) that no hook watches; None otherwise. What a library path must check on every call before it
    may skip the modules' own forward (a hook, or a layer swapped since the model was built)."""
    layers, kinds = [], []
    for m in net.modules():
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return None
        if type(m) is nn.Linear:
            layers.append(m)
        if type(m) in (nn.Linear, nn.Tanh):
            kinds.append(type(m))
        elif not isinstance(m, (type(net), nn.Sequential, nn.Flatten, nn.Identity)):
            return None
    alternating = kinds == [nn.Linear, nn.Tanh] * (len(layers) - 1) + [nn.Linear]
    return layers if alternating else None


def fused_loss(model, x, step=0):
    """The candidate's total as `VAE.loss` would give it (the same regulariser and terms), after the checks a
    library path needs on every call, with the noise `DiagonalGaussian.rsample` would draw."""
    encoder, decoder = tanh_mlp_layers(model.encoder), tanh_mlp_layers(model.decoder)
    assert encoder is not None and decoder is not None
    params = [t for layer in encoder + decoder for t in (layer.weight, layer.bias)]
    eps = torch.randn(len(x), model.config.latent_dim)
    recon, kl = FusedELBO.apply(x.reshape(len(x), -1), eps, len(encoder), *params)
    regulariser = model.regulariser(None, None, kl, step)
    return Loss(recon + regulariser.total, {"recon": recon, "kl": kl, **regulariser.terms}).total


def check(model, x) -> dict:
    """The candidate's loss and gradients against autograd's, same batch and noise: the largest difference
    relative to each tensor's largest value."""
    out = {}
    for name, loss in (("aezoo", aezoo_loss), ("fused", fused_loss)):
        torch.manual_seed(5)
        total = loss(model, x)
        out[name] = [total.detach(), *torch.autograd.grad(total, list(model.parameters()))]
    diffs = [float((a - b).abs().max() / b.abs().max()) for a, b in zip(out["fused"], out["aezoo"])]
    return {"loss_rel_diff": diffs[0], "grad_rel_diff_max": max(diffs[1:])}


# --- timing ------------------------------------------------------------------------------------------


def stepper(model, loss, batches: list[torch.Tensor], what: str = "step"):
    """One call: a training step as the engine makes it (loss, zero_grad, backward, Adam), or a part of it."""
    opt = aezoo_adam(model.parameters())
    done = [0]
    model.train()
    aezoo_loss(model, batches[0]).backward()  # gradients for the Adam-only part

    def call() -> None:
        if what == "adam":
            opt.step()
            return
        total = loss(model, batches[done[0] % len(batches)], done[0])
        done[0] += 1
        if what == "forward":
            return
        opt.zero_grad(set_to_none=True)
        total.backward()
        if what == "step":
            opt.step()

    return call


def rounds(calls: dict, per_round: int, n: int) -> tuple[dict, dict]:
    """Milliseconds per call of each function in every round (wall, thread CPU), in alternating rounds."""
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    for r in range(n + 1):
        for name in names if r % 2 else names[::-1]:
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(per_round):
                calls[name]()
            if r:
                wall[name].append((time.perf_counter() - t0) / per_round * 1e3)
                cpu[name].append((time.thread_time() - c0) / per_round * 1e3)
    return wall, cpu


def race(steps: dict, per_round: int, n: int) -> dict:
    """aezoo against the candidate: medians and the per-round ratios aezoo / fused."""
    out = {}
    for clock, times in zip(("wall", "thread_cpu"), rounds(steps, per_round, n)):
        ratios = [a / b for a, b in zip(times["aezoo"], times["fused"])]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        out[clock] = {
            "ms_per_step": {k: round(statistics.median(t), 3) for k, t in times.items()},
            "speedup_median_of_round_ratios": round(statistics.median(ratios), 3),
            "speedup_quartiles": [round(q1, 3), round(q3, 3)],
            "rounds_fused_faster": sum(r > 1 for r in ratios),
        }
    return {**out, "steps_per_round": per_round, "rounds": n}


def parts(model, batches: list[torch.Tensor], per_round: int, n: int) -> dict:
    """The aezoo step and its parts, thread-CPU medians in ms per step."""
    calls = {what: stepper(copy.deepcopy(model), aezoo_loss, batches, what)
             for what in ("step", "forward+backward", "forward", "adam")}
    calls["products alone"] = products_loop(layer_products(model, aezoo_loss, batches[0]), 1, len(batches[0]))
    _, cpu = rounds(calls, per_round, n)
    return {"thread_cpu_ms": {k: round(statistics.median(t), 3) for k, t in cpu.items()},
            "calls_per_round": per_round, "rounds": n}


def profile(step, steps: int, top: int) -> dict:
    """The `top` operators by self CPU time per step, with their calls per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(20):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {
        "self_cpu_us_per_step": round(sum(e.self_cpu_time_total for e in events) / steps, 1),
        "top": [{"op": e.key, "self_cpu_us_per_step": round(e.self_cpu_time_total / steps, 1),
                 "calls_per_step": round(e.count / steps, 2)} for e in events[:top]],
    }


def load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20, help="training steps per path per round")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--parts", action="store_true", help="also the aezoo step's parts")
    p.add_argument("--overhead", action="store_true", help="also the tiny net")
    p.add_argument("--profile", type=int, default=0, help="also the N operators with the most CPU time")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batches = premade(mnist(), "train", 100, "dynamic", 50)
    model = burda_vae()
    result = {"command": "python bench/fused_vae_step.py " + " ".join(sys.argv[1:]),
              "vae": f"Burda et al. MLP {BURDA}, batch 100", "threads": args.threads, "load_before": load(),
              "check": check(model, batches[0])}
    print(result, flush=True)
    steps = {"aezoo": stepper(copy.deepcopy(model), aezoo_loss, batches),
             "fused": stepper(copy.deepcopy(model), fused_loss, batches)}
    result["burda"] = race(steps, args.steps, args.rounds)
    print(result["burda"], flush=True)
    if args.parts:
        result["parts"] = parts(model, batches, args.steps, args.rounds // 2)
        print(result["parts"], flush=True)
    if args.overhead:
        torch.manual_seed(0)
        tiny = aezoo.build("vae", data_shape=(16,), **TINY)
        data = [(torch.rand(4, 16) < 0.3).float() for _ in range(10)]
        tiny_steps = {"aezoo": stepper(copy.deepcopy(tiny), aezoo_loss, data),
                      "fused": stepper(copy.deepcopy(tiny), fused_loss, data)}
        result["tiny_overhead"] = {"vae": f"MLP {TINY}, batch 4", **race(tiny_steps, 10 * args.steps, args.rounds)}
        print(result["tiny_overhead"], flush=True)
    if args.profile:
        result["profile"] = {name: profile(step, 200, args.profile) for name, step in steps.items()}
    result["load_after"] = load()
    print(write_result(__file__, result))


if __name__ == "__main__":
    main()
