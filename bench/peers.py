"""aezoo against the peer libraries on the same work: training samples/s, IWAE evaluation throughput,
peak memory, and how close each training step comes to the time of its matrix products alone.

Everything is measured in one process run, aezoo and the peer in alternating rounds (the order flips
every round; round 0 warms up and is dropped), and reported as medians with their ratio: on a shared
machine only ratios taken side by side mean anything.

1. `vae`, the MLP of Burda et al. (2016): 784-200-200-50 tanh, Bernoulli likelihood, batch 100,
   dynamically binarised MNIST (aezoo's loader feeds both libraries), Adam 1e-3, against pythae's
   VAE built around the same encoder and decoder nets (pythae BaseEncoder/BaseDecoder wrapping copies
   of aezoo's layers; pythae's decoder ends in a sigmoid for its BCE). Two comparisons:
   - `model_step`: forward to the loss, backward, Adam step, on the same pre-made batches in memory.
   - `engine`: each library's own training loop with its own data path: aezoo's `Trainer.fit`
     (batch gather + dynamic binarisation per step, logging, and the one checkpoint it writes at the
     end) against pythae's `BaseTrainer.train_step` over an epoch of the same number of steps
     (its DataLoader indexes the dataset one example at a time and collates; pythae has no dynamic
     binarisation, so it gets one fixed draw). pythae's `train()` adds per epoch a deepcopy of the
     model and saving, not timed here.
2. Evaluation: the IWAE estimate of -log p(x) with k = 1000 (Burda et al. 2016, eq. 8) on the first
   --nll-examples binarised test images, aezoo's `nll_iwae` with `aezoo eval`'s default batching
   against pythae's `get_nll(data, n_samples=1000, batch_size=1000)`, both under no_grad, with the same
   weights (the aezoo model after the training rounds, copied into pythae): examples/s and NLLs.
3. Peak memory: the peak resident size (VmHWM) of a fresh subprocess per measurement (torch's
   allocations are invisible to tracemalloc), with the resident size before the measured work began.
4. The limit: every Linear / Conv2d / ConvTranspose2d product of one training step at its shapes
   (found by forward hooks), timed alone on pre-allocated tensors in the same rounds: forward,
   d weight, and d input except where the input needs no gradient (the data). Biases, activations,
   the loss and the optimiser are left out, so this is a bound no step can beat. Reported: the step's
   GFLOP/s (product FLOPs / step time), the fraction of the bound reached (bound time / step time),
   and the machine's matmul rate on a 2048^3 product.
5. Further models while they are in the registry: `beta_vae` (Burgess et al. conv nets on dSprites,
   batch 64) against pythae's BetaVAE, `vqvae` (MNIST, MSE likelihood to match pythae's) against
   pythae's VQVAE with EMA codebook, and `dae`, `sparse_ae`, `ksparse_ae` and `cae` (the exact
   two-layer penalty) on one 784-500-100 tanh MLP with squared error against the PyPI package
   `autoencoders` (whose contractive penalty takes one backward pass per code unit).

In every model step aezoo's Adam is the one its engine builds (`aezoo.optim.make_optimizer`:
torch.optim.Adam with fused=True, one kernel per parameter); the peers build torch.optim.Adam
without it (the unfused loop, ~7 kernels per parameter). `aezoo_unfused_adam` is the same aezoo step
with train.fused_optimizer=false, the peers' optimiser: it isolates what the model code alone gains.
6. The VAE model step again at torch's default thread count, to show what oversubscription costs.

Torch runs on --threads threads (default 1): on this 2-core machine shared by several processes,
two OpenMP threads made small kernels wait at barriers for a preempted thread (steps 5-10x slower).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/peers.py [--steps 200 --rounds 5 --nll-examples 1000]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import aezoo
from aezoo.config import (
    EvalConfig,
    TrainConfig,
    make_run_config,
    merge,
    parse_overrides,
    read_config_file,
)
from aezoo.data import Batches, Dataset, load_dataset
from aezoo.optim import make_optimizer
from aezoo.registry import MODELS, entry
from aezoo.runfolder import RunFolder
from aezoo.train import Trainer
from common import write_result

ROOT = Path(__file__).parents[1]
DEFAULT_THREADS = torch.get_num_threads()
BURDA = {"backbone": "mlp", "hidden": (200, 200), "activation": "tanh", "latent_dim": 50, "likelihood": "bernoulli"}
PEER_MLP = {"hidden": (500,), "latent_dim": 100, "activation": "tanh", "likelihood": "gaussian"}

try:
    import pythae
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
except ImportError:  # the benchmark says what it skipped
    pythae = None
    BaseEncoder = BaseDecoder = nn.Module
try:
    import autoencoders
except ImportError:
    autoencoders = None


# --- timing ----------------------------------------------------------------------------------------


def race(
    contenders: dict[str, Callable[[], int | tuple[int, float]]], rounds: int, warm_up: bool = True
) -> dict[str, list[float]]:
    """Runs every contender once per round, the order reversed every other round, and returns each one's
    rate (what it returned, samples or examples, per second) for every round. A contender with set-up
    work to leave out returns (count, seconds) itself. With warm_up, a round 0 runs first and is dropped."""
    names = list(contenders)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(0 if warm_up else 1, rounds + 1):
        for name in names if r % 2 else names[::-1]:
            t0 = time.perf_counter()
            n = contenders[name]()
            n, seconds = n if isinstance(n, tuple) else (n, time.perf_counter() - t0)
            if r:
                rates[name].append(n / seconds)
    return rates


def versus(rates: dict[str, list[float]], ours: str, theirs: str) -> dict:
    """Medians, the ratio of medians, and the median of the per-round ratios (each round's pair ran
    back to back, so this one is the steadier on a busy machine)."""
    a, b = rates[ours], rates[theirs]
    return {
        "ratio": round(statistics.median(a) / statistics.median(b), 3),
        "median_of_round_ratios": round(statistics.median(x / y for x, y in zip(a, b)), 3),
        "rounds": len(a),
    }


def rate_summary(rates: list[float]) -> dict:
    return {"median": round(statistics.median(rates), 1), "per_round": [round(r, 1) for r in rates]}


def peer_adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def aezoo_adam(params, fused: bool = True) -> torch.optim.Optimizer:
    """Adam 1e-3 as aezoo's engine builds it (`make_optimizer`): torch's fused kernels by default,
    the unfused loop the peers use with train.fused_optimizer=false."""
    return make_optimizer(params, TrainConfig(lr=1e-3, fused_optimizer=fused))


def step_loop(
    model: nn.Module, loss_fn: Callable, batches: list[torch.Tensor], steps: int, optimizer: Callable = peer_adam
) -> Callable[[], int]:
    """A training loop of `steps` steps (forward to the loss, backward, Adam 1e-3) over pre-made batches;
    `loss_fn(model, x, step)` gets the step for the models with schedules."""
    opt = optimizer(model.parameters())
    done = [0]

    def run() -> int:
        model.train()
        for _ in range(steps):
            x = batches[done[0] % len(batches)]
            loss = loss_fn(model, x, done[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done[0] += 1
        return steps * len(batches[0])

    return run


def aezoo_loss(model, x, step=0):
    return model.loss(x, step).total


def pythae_loss(model, x, step=0):
    return model({"data": x}).loss


# --- the matrix-product bound ----------------------------------------------------------------------


@dataclass
class Product:
    """One layer's products in a training step: forward, d weight, and d input if the input needs it."""

    kind: str  # linear | conv | conv_transpose
    x: tuple[int, ...]
    w: tuple[int, ...]
    y: tuple[int, ...]
    needs_dx: bool
    stride: tuple[int, ...] = (1,)
    padding: tuple[int, ...] = (0,)

    @staticmethod
    def of(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Product:
        kind = (
            "linear"
            if isinstance(module, nn.Linear)
            else "conv_transpose"
            if isinstance(module, nn.ConvTranspose2d)
            else "conv"
        )
        extra = {} if kind == "linear" else {"stride": module.stride, "padding": module.padding}
        if kind != "linear" and (
            module.groups != 1
            or any(d != 1 for d in module.dilation)
            or (kind == "conv_transpose" and any(module.output_padding))
        ):
            raise ValueError(f"{module}: only plain convolutions are timed")
        return Product(kind, tuple(x.shape), tuple(module.weight.shape), tuple(y.shape), x.requires_grad, **extra)

    def flops(self) -> int:
        """Multiply-adds x 2 of all the products (forward, d weight, d input if needed)."""
        if self.kind == "linear":
            one = 2 * (torch.Size(self.x).numel() // self.w[1]) * self.w[0] * self.w[1]
        elif self.kind == "conv":  # every output value: C_in * kh * kw multiply-adds
            one = 2 * torch.Size(self.y).numel() * self.w[1] * self.w[2] * self.w[3]
        else:  # every input value is spread over C_out * kh * kw outputs
            one = 2 * torch.Size(self.x).numel() * self.w[1] * self.w[2] * self.w[3]
        return one * (3 if self.needs_dx else 2)

    def calls(self) -> int:
        """Timed calls: for a linear layer one matmul per product; for a convolution the forward and one
        convolution_backward (the d input and d weight products together, as autograd calls it)."""
        return 2 + self.needs_dx if self.kind == "linear" else 2

    def ops(self) -> list[Callable[[], object]]:
        x, w, dy = torch.randn(self.x), torch.randn(self.w), torch.randn(self.y)
        if self.kind == "linear":
            x2, dy2 = x.reshape(-1, self.w[1]), dy.reshape(-1, self.w[0])
            y, dw, dx = torch.empty_like(dy2), torch.empty(self.w), torch.empty_like(x2)
            ops = [lambda: torch.matmul(x2, w.t(), out=y), lambda: torch.matmul(dy2.t(), x2, out=dw)]
            return ops + ([lambda: torch.matmul(dy2, w, out=dx)] if self.needs_dx else [])
        transposed = self.kind == "conv_transpose"
        forward = F.conv_transpose2d if transposed else F.conv2d
        mask = [self.needs_dx, True, False]
        return [
            lambda: forward(x, w, None, self.stride, self.padding),
            lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, self.stride, self.padding, [1, 1], transposed, [0, 0], 1, mask
            ),
        ]


def layer_products(model: nn.Module, loss_fn: Callable, x: torch.Tensor) -> list[Product]:
    """The products of one training step of `model` on x, found by hooks on its layers in one forward."""
    found: list[Product] = []
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(lambda m, args, out: found.append(Product.of(m, args[0], out))) for m in layers]
    try:
        model.train()
        loss_fn(model, x)
    finally:
        for h in handles:
            h.remove()
    return found


def products_loop(products: list[Product], steps: int, batch: int) -> Callable[[], int]:
    ops = [op for p in products for op in p.ops()]

    def run() -> int:
        for _ in range(steps):
            for op in ops:
                op()
        return steps * batch

    return run


def bound_report(products: list[Product], rates: dict[str, list[float]], ours: str, bound: str, batch: int) -> dict:
    flops = sum(p.flops() for p in products)
    step_s = batch / statistics.median(rates[ours])
    bound_s = batch / statistics.median(rates[bound])
    return {
        "layers": len(products),
        "timed_calls": sum(p.calls() for p in products),
        "mflop_per_step": round(flops / 1e6, 2),
        "aezoo_step_ms": round(1e3 * step_s, 3),
        "products_alone_ms": round(1e3 * bound_s, 3),
        "aezoo_gflops": round(flops / step_s / 1e9, 2),
        "products_alone_gflops": round(flops / bound_s / 1e9, 2),
        "fraction_of_bound": round(bound_s / step_s, 3),
    }


def matmul_peak(n: int = 2048, reps: int = 10) -> dict:
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.matmul(a, b, out=c)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return {
        "shape": [n, n, n],
        "gflops_median": round(2 * n**3 / statistics.median(times) / 1e9, 1),
        "gflops_best": round(2 * n**3 / min(times) / 1e9, 1),
    }


# --- pythae wrappers around aezoo's nets -----------------------------------------------------------


class PythaeEncoder(BaseEncoder):
    """An encoder net behind pythae's interface: (mean, log-variance) halves for VAEs, the map itself for VQ-VAE."""

    def __init__(self, net: nn.Module, gaussian: bool = True):
        super().__init__()
        self.net, self.gaussian = net, gaussian

    def forward(self, x):
        h = self.net(x)
        if not self.gaussian:
            return ModelOutput(embedding=h)
        mean, logvar = h.chunk(2, dim=-1)
        return ModelOutput(embedding=mean, log_covariance=logvar)


class PythaeDecoder(BaseDecoder):
    """A decoder net behind pythae's interface; pythae's BCE wants probabilities, so logits pass a sigmoid."""

    def __init__(self, net: nn.Module, sigmoid: bool = True):
        super().__init__()
        self.net, self.sigmoid = net, sigmoid

    def forward(self, z):
        out = self.net(z)
        return ModelOutput(reconstruction=torch.sigmoid(out) if self.sigmoid else out)


def pythae_vae(ours: nn.Module, beta: float | None = None):
    """pythae's VAE (BetaVAE when beta is given) on copies of `ours`' encoder and decoder (same weights)."""
    from pythae.models import VAE, BetaVAE, BetaVAEConfig, VAEConfig

    c = ours.config
    common = {"input_dim": tuple(c.data_shape), "latent_dim": c.latent_dim, "reconstruction_loss": "bce"}
    nets = {
        "encoder": PythaeEncoder(copy.deepcopy(ours.encoder)),
        "decoder": PythaeDecoder(copy.deepcopy(ours.decoder)),
    }
    if beta is None:
        return VAE(VAEConfig(**common), **nets)
    return BetaVAE(BetaVAEConfig(**common, beta=beta), **nets)


# --- 1-4: the Burda VAE ----------------------------------------------------------------------------


def mnist() -> Dataset:
    return load_dataset(aezoo.config.DataConfig(name="mnist"))


def premade(ds: Dataset, split: str, batch: int, binarize: str, n: int) -> list[torch.Tensor]:
    b = Batches(ds, split, batch, binarize, seed=0)
    return [b.get(i) for i in range(n)]


def binarised_once(ds: Dataset, split: str, n: int) -> torch.Tensor:
    """The first n images of a split with one fixed Bernoulli draw (what a pythae user would hand over),
    made 1,000 at a time so that the draw's temporaries stay small."""
    b = Batches(ds, split, 1000, "dynamic", seed=0, shuffle=False)
    out = torch.empty(n, *ds.shape)
    for i, start in enumerate(range(0, n, 1000)):
        out[start : start + 1000] = b.get(i)[: n - start]
    return out


def burda_vae():
    torch.manual_seed(0)
    return aezoo.build("vae", data_shape=(1, 28, 28), **BURDA)


def vae_training(steps: int, rounds: int, trained: list) -> dict:
    """The model-step race; the trained aezoo model is appended to `trained` for the evaluation."""
    ds = mnist()
    batches = premade(ds, "train", 100, "dynamic", 50)
    ours = burda_vae()
    theirs = pythae_vae(ours)
    prototype = copy.deepcopy(ours)
    products = layer_products(ours, aezoo_loss, batches[0])
    rates = race(
        {
            "aezoo": step_loop(ours, aezoo_loss, batches, steps, optimizer=aezoo_adam),
            "pythae": step_loop(theirs, pythae_loss, batches, steps),
            "aezoo_unfused_adam": step_loop(prototype, aezoo_loss, batches, steps, optimizer=UNFUSED),
            "products_alone": products_loop(products, steps, 100),
        },
        rounds,
    )
    out = {
        "what": "forward to the loss, backward, Adam 1e-3 step; the same 50 pre-made binarised batches of 100; "
        "torch.optim.Adam in both, aezoo's as its engine builds it (fused=True)",
        "aezoo_unfused_adam": "aezoo with train.fused_optimizer=false: the unfused torch.optim.Adam pythae "
        "uses (~7 kernels per parameter instead of one; the last bits differ)",
        "steps_per_round": steps,
        "samples_per_s": {k: rate_summary(v) for k, v in rates.items()},
        **versus(rates, "aezoo", "pythae"),
        "unfused_adam_vs_pythae": versus(rates, "aezoo_unfused_adam", "pythae"),
        "bound": bound_report(products, rates, "aezoo", "products_alone", 100),
        "bound_unfused_adam": bound_report(products, rates, "aezoo_unfused_adam", "products_alone", 100),
    }
    trained.append(ours)
    return out


def burda_run_config(steps: int):
    tree = read_config_file(ROOT / "configs" / "vae_burda2015.toml")
    tree.pop("model_name")
    overrides = parse_overrides([f"train.steps={steps}", f"train.checkpoint_every={steps}"])
    return make_run_config("vae", entry("vae").config_class, merge(tree, overrides))


def aezoo_engine(ds: Dataset, steps: int, folder: Path) -> Callable[[], tuple[int, float]]:
    """aezoo's own loop, `steps` steps of configs/vae_burda2015.toml in a fresh run folder each call
    (building the Trainer is not timed)."""
    calls = [0]

    def run() -> tuple[int, float]:
        cfg = burda_run_config(steps)
        cfg.model.data_shape = ds.shape
        run_folder = RunFolder(folder / f"run{calls[0]}")
        run_folder.path.mkdir(parents=True)
        calls[0] += 1
        torch.manual_seed(0)
        trainer = Trainer(cfg, run_folder, ds, torch.device("cpu"))
        t0 = time.perf_counter()
        trainer.fit()
        return steps * cfg.train.batch_size, time.perf_counter() - t0

    return run


def pythae_trainer(model, data: torch.Tensor, folder: Path):
    """pythae's BaseTrainer over `data` (one epoch = len(data) / 100 steps), Adam 1e-3, ready to train."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    logging.getLogger("pythae").setLevel(logging.WARNING)
    config = BaseTrainerConfig(
        output_dir=str(folder),
        per_device_train_batch_size=100,
        num_epochs=1,
        learning_rate=1e-3,
        optimizer_cls="Adam",
        no_cuda=True,
    )
    trainer = BaseTrainer(model, BaseDataset(data, torch.zeros(len(data))), training_config=config)
    trainer.prepare_training()
    return trainer


def vae_engine(steps: int, rounds: int, folder: Path) -> dict:
    tree = read_config_file(ROOT / "configs" / "vae_burda2015.toml")
    ds = load_dataset(burda_run_config(steps).data)  # train+val, uint8, binarised per step
    static = binarised_once(ds, "train", steps * 100)  # pythae: one epoch of as many steps
    trainer = pythae_trainer(pythae_vae(burda_vae()), static, folder / "pythae")
    epoch = [0]

    def pythae_epoch() -> int:
        epoch[0] += 1
        trainer.train_step(epoch[0])
        return len(static)

    ours = aezoo_engine(ds, steps, folder / "aezoo")
    rates = race({"aezoo": ours, "pythae": pythae_epoch}, rounds)
    return {
        "what": "aezoo Trainer.fit (configs/vae_burda2015.toml: per-step gather and Bernoulli draw, "
        "logging, one checkpoint at the end) against pythae BaseTrainer.train_step over one epoch "
        "(DataLoader, per-example __getitem__ and collate, loss.item() every step; data "
        "binarised once)",
        "aezoo_optimizer": f"Adam lr={tree['train']['lr']} eps={tree['train']['eps']} "
        f"fused={burda_run_config(steps).train.fused_optimizer}, burda2015 schedule",
        "pythae_optimizer": "Adam lr=1e-3 (unfused)",
        "steps_per_round": steps,
        "samples_per_s": {k: rate_summary(v) for k, v in rates.items()},
        **versus(rates, "aezoo", "pythae"),
    }


def test_subset(n: int) -> torch.Tensor:
    """The first n test images, binarised once (the same draw for both libraries)."""
    ds = mnist()
    return Batches(ds, "test", n, "dynamic", seed=12345, shuffle=False).get(0)


@torch.no_grad()
def aezoo_nll(model, x: torch.Tensor, k: int, chunk: int | None = None) -> float:
    """-log p(x) averaged over x, batched as `aezoo eval` does by default (or `chunk` decodes at a time,
    its eval.nll_batch option)."""
    e = EvalConfig()
    model.eval()
    return sum(float(model.nll_iwae(b, k, chunk or e.nll_batch).sum()) for b in x.split(e.batch_size)) / len(x)


@torch.no_grad()
def pythae_nll(model, x: torch.Tensor, k: int) -> float:
    model.eval()
    return -float(model.get_nll(x, n_samples=k, batch_size=k))  # get_nll returns the mean log p(x)


def vae_eval(trained: nn.Module, n: int, k: int, rounds: int) -> dict:
    x = test_subset(n)
    theirs = pythae_vae(trained)  # the same weights
    aezoo_nll(trained, x[:2], k), pythae_nll(theirs, x[:2], k)  # warm up
    nlls = {"aezoo": [], "pythae": [], "aezoo_nll_batch_1000": []}

    def contender(name, fn, model):
        def run() -> int:
            torch.manual_seed(len(nlls[name]))  # round r draws the same noise in both aezoo settings
            nlls[name].append(round(fn(model, x, k), 3))
            return n

        return run

    rates = race(
        {
            "aezoo": contender("aezoo", aezoo_nll, trained),
            "pythae": contender("pythae", pythae_nll, theirs),
            "aezoo_nll_batch_1000": contender(
                "aezoo_nll_batch_1000", functools.partial(aezoo_nll, chunk=1000), trained
            ),
        },
        rounds,
        warm_up=False,
    )
    return {
        "what": f"IWAE -log p(x), k={k}, first {n} test images binarised once; the same weights in both "
        f"(the aezoo model after the training rounds); aezoo nll_iwae batched as `aezoo eval` "
        f"(batch {EvalConfig().batch_size}, {EvalConfig().nll_batch} decodes a chunk), pythae "
        f"get_nll(n_samples={k}, batch_size={k}), both under no_grad; aezoo_nll_batch_1000: aezoo with "
        f"eval.nll_batch=1000 (the same random draws, so the same NLL; smaller chunks stay in cache)",
        "examples": n,
        "k": k,
        "examples_per_s": {k_: rate_summary(v) for k_, v in rates.items()},
        **versus(rates, "aezoo", "pythae"),
        "nll_batch_1000_vs_pythae": versus(rates, "aezoo_nll_batch_1000", "pythae"),
        "nll_nats": {name: {"mean": round(statistics.fmean(v), 3), "per_round": v} for name, v in nlls.items()},
        "nll_difference_nats": round(statistics.fmean(nlls["aezoo"]) - statistics.fmean(nlls["pythae"]), 3),
    }


# --- 3: peak memory, one fresh process per measurement ---------------------------------------------


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process in MB. ru_maxrss would not do: a child
    started by fork and exec inherits the parent's peak as its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe(what: str, cache: Path, steps: int) -> dict:
    """Runs one measurement in this (fresh) process and returns its memory figures."""
    torch.set_num_threads(1)
    data = torch.load(cache)
    ds = Dataset("mnist", {"train": data["train"], "test": data["test"]}, "bench cache", scale=255.0)
    model = burda_vae()
    if what.startswith("nll"):
        x = Batches(ds, "test", 100, "dynamic", seed=12345, shuffle=False).get(0)
        net = model if what.endswith("aezoo") else pythae_vae(model)
        fn = aezoo_nll if what.endswith("aezoo") else pythae_nll
        before = status_mb("VmRSS")
        fn(net, x, 1000)
    elif what == "engine_aezoo":
        cfg = burda_run_config(steps)
        cfg.model.data_shape = ds.shape
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(cfg, RunFolder(Path(folder)), ds, torch.device("cpu"))
            before = status_mb("VmRSS")
            trainer.fit()
    elif what == "engine_pythae":  # the whole training split, as a pythae user would hand it over
        with tempfile.TemporaryDirectory() as folder:
            static = binarised_once(ds, "train", len(data["train"]))
            del ds, data
            trainer = pythae_trainer(pythae_vae(model), static, Path(folder))
            del static  # pythae's dataset keeps its own float copy
            before = status_mb("VmRSS")
            trainer.train_step(1)
    else:
        raise ValueError(what)
    return {"rss_before_mb": round(before, 1), "peak_rss_mb": round(status_mb("VmHWM"), 1)}


def memory(folder: Path) -> dict:
    ds = load_dataset(burda_run_config(1).data)
    cache = folder / "mnist_uint8.pt"
    torch.save({"train": ds.x["train"], "test": ds.x["test"]}, cache)  # probes skip the loader's own peak
    steps = len(ds.x["train"]) // 100
    out = {
        "what": "peak resident size (VmHWM) of a fresh process per line; rss_before_mb: resident size once "
        "imports, data (the train+val split as uint8; pythae's own float copy for its trainer) and model were "
        "ready. engine: one epoch of the train+val split (600 steps, batch 100); nll: 100 test "
        "images at k=1000",
        "epoch_steps": steps,
    }
    for what in ("engine_aezoo", "engine_pythae", "nll_aezoo", "nll_pythae"):
        res = subprocess.run(
            [sys.executable, __file__, "--probe", what, "--probe-cache", str(cache), "--steps", str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[what] = json.loads(res.stdout.strip().splitlines()[-1])
        print(what, out[what], flush=True)
    return out


# --- 5: the other models ---------------------------------------------------------------------------


def model_race(
    ours: nn.Module,
    theirs: nn.Module,
    their_loss: Callable,
    batches: list[torch.Tensor],
    steps: int,
    rounds: int,
    what: str,
    extra_products: tuple[Product, ...] = (),
) -> dict:
    """aezoo's model step against a peer's on the same batches, with the bound of aezoo's products (its
    layers', and `extra_products` made by the loss itself)."""
    products = layer_products(ours, aezoo_loss, batches[0]) + list(extra_products)
    batch = len(batches[0])
    unfused = copy.deepcopy(ours)
    rates = race(
        {
            "aezoo": step_loop(ours, aezoo_loss, batches, steps, aezoo_adam),
            "peer": step_loop(theirs, their_loss, batches, steps),
            "aezoo_unfused_adam": step_loop(unfused, aezoo_loss, batches, steps, UNFUSED),
            "products_alone": products_loop(products, steps, batch),
        },
        rounds,
    )
    return {
        "what": what,
        "batch": batch,
        "steps_per_round": steps,
        "samples_per_s": {k: rate_summary(v) for k, v in rates.items()},
        **versus(rates, "aezoo", "peer"),
        "unfused_adam_vs_peer": versus(rates, "aezoo_unfused_adam", "peer"),
        "bound": bound_report(products, rates, "aezoo", "products_alone", batch),
        "bound_unfused_adam": bound_report(products, rates, "aezoo_unfused_adam", "products_alone", batch),
    }


def beta_vae(steps: int, rounds: int) -> dict:
    from pythae.models import BetaVAE  # noqa: F401  (fails early when pythae is missing)

    ds = load_dataset(aezoo.config.DataConfig(name="dsprites"))
    batches = premade(ds, "train", 64, "none", 10)
    torch.manual_seed(0)
    ours = aezoo.build("beta_vae")
    theirs = pythae_vae(ours, beta=ours.config.beta)
    c = ours.config
    return model_race(
        ours,
        theirs,
        pythae_loss,
        batches,
        steps,
        rounds,
        f"aezoo beta_vae defaults (conv {list(c.channels)} 4x4 stride 2, fc {list(c.hidden)}, "
        f"{c.latent_dim} latents, Bernoulli, beta={c.beta}) against pythae BetaVAE on copies of "
        f"the same nets; dSprites 64x64, batch 64, Adam 1e-3, pre-made batches",
    )


def vqvae(steps: int, rounds: int) -> dict:
    from pythae.models import VQVAE, VQVAEConfig

    ds = mnist()
    batches = premade(ds, "train", 100, "none", 10)
    torch.manual_seed(0)
    ours = aezoo.build("vqvae", data_shape=(1, 28, 28), likelihood="gaussian")
    c = ours.config
    config = VQVAEConfig(
        input_dim=(1, 28, 28),
        latent_dim=c.code_dim,
        num_embeddings=c.codebook_size,
        commitment_loss_factor=c.beta,
        use_ema=c.codebook_update == "ema",
        decay=c.ema_decay,
    )
    theirs = VQVAE(
        config,
        encoder=PythaeEncoder(copy.deepcopy(ours.encoder), gaussian=False),
        decoder=PythaeDecoder(copy.deepcopy(ours.decoder), sigmoid=False),
    )
    return model_race(
        ours,
        theirs,
        pythae_loss,
        batches,
        steps,
        rounds,
        f"aezoo vqvae defaults (hidden {c.hidden}, {c.residual_layers} residual blocks, K={c.codebook_size}, "
        f"D={c.code_dim}, {c.codebook_update} codebook, dead-code restart after {c.restart_after}) with a "
        f"Gaussian likelihood (squared error, as pythae's) against pythae VQVAE (EMA) on copies of the "
        f"same nets; MNIST 28x28, batch 100, Adam 1e-3, pre-made batches",
    )


def autoencoders_loss(model, x, step=0):
    return model(x.flatten(1)).loss


def autoencoders_model(name: str):
    """The `autoencoders` counterpart of aezoo's `name` on the 784-500-100 tanh MLP (decoder mirrored)."""
    from autoencoders.data.base import TensorSpec
    from autoencoders.models import cae, dae, klsae, topksae

    if name == "cae":  # its penalty: one backward pass per code unit
        cls, config = cae.ContractiveAutoencoderModel, cae.ContractiveAutoencoderConfig(contractive_weight=0.1)
    elif name == "dae":
        cls, config = (
            dae.DenoisingAutoencoderModel,
            dae.DenoisingAutoencoderConfig(noise_type="masking", masking_ratio=0.25),
        )
    elif name == "sparse_ae":
        cls, config = (
            klsae.KLSparseAutoencoderModel,
            klsae.KLSparseAutoencoderConfig(sparsity_weight=3.0, target_activation=0.05),
        )
    else:
        # top-k needs latent_dim, which adds a 100 -> 100 projection on each side (2% more FLOPs)
        cls, config = (
            topksae.TopKSparseAutoencoderModel,
            topksae.TopKSparseAutoencoderConfig(topk=25, latent_dim=PEER_MLP["latent_dim"]),
        )
    config.reconstruction_loss = "mse"
    return cls(
        config,
        sample_spec=TensorSpec(shape=(784,)),
        encoder="mlp",
        encoder_config={"hidden_dims": [PEER_MLP["hidden"][0], PEER_MLP["latent_dim"]], "activation": "tanh"},
    )


# label: (aezoo model, its config). `autoencoders` masks each pixel independently (its masking_ratio is a
# probability), so `dae` races aezoo's mask_iid, the same corruption; `dae_fixed_fraction` races aezoo's
# default mask (exactly 25% of each image, Vincent 2008), different and costlier work, for its price.
AEZOO_REGULARISED = {
    "dae": ("dae", {"corruption": "mask_iid", "fraction": 0.25, "code_activation": "linear"}),
    "dae_fixed_fraction": ("dae", {"corruption": "mask", "fraction": 0.25, "code_activation": "linear"}),
    "sparse_ae": ("sparse_ae", {"code_activation": "sigmoid", "rho": 0.05, "beta": 3.0}),
    "ksparse_ae": ("ksparse_ae", {"code_activation": "linear", "k": 25, "k_schedule_steps": 0}),
    "cae": ("cae", {"code_activation": "linear", "contractive_weight": 0.1, "penalty": "two_layer"}),
}


def regularised(label: str, steps: int, rounds: int) -> dict:
    name, config = AEZOO_REGULARISED[label]
    ds = mnist()
    batches = premade(ds, "train", 100, "none", 50)
    torch.manual_seed(0)
    ours = aezoo.build(name, data_shape=(1, 28, 28), **PEER_MLP, **config)
    theirs = autoencoders_model(name)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    res = model_race(
        ours,
        theirs,
        autoencoders_loss,
        batches,
        steps,
        rounds,
        f"784-500(tanh)-100 code, decoder 100-500(tanh)-784, squared error, batch 100, Adam 1e-3, "
        f"pre-made MNIST batches; aezoo {config} against autoencoders "
        f"{type(theirs).__name__}",
        gram_products(ours) if name == "cae" else (),
    )
    res["parameters"] = {"aezoo": n_ours, "peer": n_theirs}
    if name == "cae":
        res["bound_includes"] = (
            "the exact two-layer penalty's Gram products W1 W1^T (500x784 by 784x500) and "
            "W2^T W2 (500x100 by 100x500), each forward and its one backward product (G + G^T) W"
        )
    return res


def gram_products(cae) -> tuple[Product, ...]:
    """The products of the two-layer contractive penalty: W1 W1^T and W2^T W2 (losses.contractive_two_layer
    through losses.gram), each forward and one backward product (G + G^T) W, timed as a linear layer's
    forward and weight gradient."""
    w1, w2 = cae.encoder.head[0].weight, cae.encoder.out.weight
    h = w1.shape[0]
    return (
        Product("linear", tuple(w1.shape), tuple(w1.shape), (h, h), False),
        Product("linear", tuple(w2.T.shape), tuple(w2.T.shape), (h, h), False),
    )


# --- 6: threads ------------------------------------------------------------------------------------


def default_threads(steps: int, rounds: int) -> dict:
    ds = mnist()
    batches = premade(ds, "train", 100, "dynamic", 20)
    ours = burda_vae()
    theirs = pythae_vae(ours)
    torch.set_num_threads(DEFAULT_THREADS)
    try:
        rates = race(
            {
                "aezoo": step_loop(ours, aezoo_loss, batches, steps, optimizer=aezoo_adam),
                "pythae": step_loop(theirs, pythae_loss, batches, steps),
            },
            rounds,
        )
    finally:
        torch.set_num_threads(ARGS.threads)
    return {
        "threads": DEFAULT_THREADS,
        "steps_per_round": steps,
        "samples_per_s": {k: rate_summary(v) for k, v in rates.items()},
        **versus(rates, "aezoo", "pythae"),
    }


# --- main ------------------------------------------------------------------------------------------


def installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def timed(label: str, fn: Callable[[], dict]) -> dict:
    t0 = time.perf_counter()
    print(f"-- {label}", flush=True)
    out = fn()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200, help="training steps per round (MLP models)")
    p.add_argument("--conv-steps", type=int, default=10, help="training steps per round (beta_vae, vqvae)")
    p.add_argument("--cae-steps", type=int, default=20, help="training steps per round (cae: the peer's is ~1 s)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nll-examples", type=int, default=1000)
    p.add_argument("--nll-k", type=int, default=1000)
    p.add_argument("--nll-rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--probe-cache", help=argparse.SUPPRESS)
    ARGS = args = p.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, Path(args.probe_cache), args.steps)))
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    budget = {k: v for k, v in vars(args).items() if not k.startswith("probe")}
    result = {
        "command": "python bench/peers.py " + " ".join(sys.argv[1:]),
        "budget": budget,
        "threads": args.threads,
        "default_threads": DEFAULT_THREADS,
        "gpu": "none on this machine: CPU figures only",
        "versions": {name: installed(name) for name in ("torch", "pythae", "autoencoders")},
        "registry": sorted(MODELS),
        "matmul_peak": matmul_peak(),
    }
    print(result, flush=True)
    if pythae is None:
        raise SystemExit("pythae is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result["vae"] = {}
        trained = []
        result["vae"]["model_step"] = timed("vae model step", lambda: vae_training(args.steps, args.rounds, trained))
        result["vae"]["engine"] = timed("vae engine", lambda: vae_engine(args.steps, args.rounds, folder))
        result["vae"]["eval"] = timed(
            "vae eval", lambda: vae_eval(trained[0], args.nll_examples, args.nll_k, args.nll_rounds)
        )
        result["vae"]["memory"] = timed("vae memory", lambda: memory(folder))
        result["vae"]["default_threads_model_step"] = timed(
            "default threads", lambda: default_threads(args.steps // 4, 3)
        )
        others = {}
        for name, fn in (
            ("beta_vae", lambda: beta_vae(args.conv_steps, args.rounds)),
            ("vqvae", lambda: vqvae(args.conv_steps, args.rounds)),
        ):
            others[name] = timed(name, fn) if name in MODELS else {"skipped": f"no {name} in the registry"}
        for label in AEZOO_REGULARISED:
            if autoencoders is None:
                others[label] = {"skipped": "autoencoders is not installed"}
            elif AEZOO_REGULARISED[label][0] not in MODELS:
                others[label] = {"skipped": f"no {label} in the registry"}
            else:
                steps = args.cae_steps if label == "cae" else args.steps
                others[label] = timed(label, functools.partial(regularised, label, steps, args.rounds))
        result["others"] = others
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_result(__file__, result)


ARGS: argparse.Namespace
UNFUSED = functools.partial(aezoo_adam, fused=False)


if __name__ == "__main__":
    main()
