"""What every evaluator shares: the context it reads and the list it registers in.

An evaluator is a function of an `EvalContext` returning a dict of `eval.json` keys, registered with
`@evaluator(applies)`, where `applies(model, dataset)` chooses by the model's declared capabilities
(`models.capabilities`) and the kind of data. All numbers are per example and in nats unless the key
says otherwise (the reduction convention of `distributions`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import RunConfig
from ..data import EVAL_SEED, Batches, Dataset, prepare
from ..models.capabilities import CodeModel
from ..progress import progress
from ..runfolder import RunFolder

__all__ = ["EVAL_SEED", "EvalContext", "Evaluator", "EVALUATORS", "cpu_inference", "evaluator", "inference"]

# Transposed convolutions to at most this many channels (a decoder's last layer) run on PyTorch's own
# kernel on the CPU: oneDNN's costs about as much for 1 output channel as for 16, PyTorch's grows with
# them and is the faster one up to about 4 (bench/eval_speed.py's docstring).
FEW_CHANNELS = 4

# Layers whose output is a new tensor, and activations that can overwrite their input: inside an
# nn.Sequential such an activation right after such a layer is the only reader of that output, so it may
# work in place (no new buffer to allocate and first touch, one pass over memory fewer).
FRESH_OUTPUT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
IN_PLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.Hardtanh, nn.Mish)


@dataclass
class EvalContext:
    model: torch.nn.Module
    dataset: Dataset
    cfg: RunConfig
    split: str
    run: RunFolder
    _once: dict = field(default_factory=dict, repr=False)  # what `once` computed, for every evaluator

    def once(self, key, compute):
        """`compute()`, computed once per evaluation under `key` for every evaluator that asks."""
        if key not in self._once:
            self._once[key] = compute()
        return self._once[key]

    def batches(self, batch_size: int | None = None) -> Batches:
        """The evaluated split in order, binarised as in training with a fixed seed."""
        return Batches(self.dataset, self.split, batch_size or self.cfg.eval.batch_size,
                       self.cfg.data.binarize, seed=EVAL_SEED, shuffle=False)

    def split_codes(self) -> torch.Tensor:
        """The model's flattened codes (N, F) of the evaluated split, in order; encoded once. For a model
        with discrete codes, the code vectors of `split_code_maps` (what `encode` gives, to float rounding)."""
        def encode() -> torch.Tensor:
            if isinstance(self.model, CodeModel):
                codes = [self.model.code_vectors(maps) for maps in self.split_code_maps()]
            else:
                codes = [self.model.encode(x) for x in self.progress(self.batches(), "encoding the split")]
            return torch.cat([c.flatten(1).float() for c in codes])

        return self.once("split", encode)

    @torch.no_grad()
    def split_code_maps(self) -> list[list[torch.Tensor]]:
        """For a model with discrete codes: the code maps (`CodeModel.codes`) of each batch of `batches()`,
        computed once for every evaluator that reads them (codebook usage, bits/dim, reconstructions,
        the probes' codes)."""
        return self.once("maps", lambda: [self.model.codes(x) for x in self.progress(self.batches(),
                                                                                     "encoding the split")])

    def train_inputs(self, n: int) -> torch.Tensor:
        """The first n training examples as the model sees them (N, D): [0, 1] data binarised as in
        training, with a fixed seed per batch."""
        raw, b = self.dataset.x["train"][:n], self.cfg.eval.batch_size
        return torch.cat([prepare(chunk, self.dataset.scale, self.cfg.data.binarize, EVAL_SEED + i).flatten(1)
                          for i, chunk in enumerate(raw.split(b))])

    def train_codes(self, n: int) -> torch.Tensor:
        """The model's flattened codes (n, F) of `train_inputs(n)`; encoded once."""
        def encode() -> torch.Tensor:
            shape = self.dataset.x["train"].shape[1:]
            chunks = self.train_inputs(n).split(self.cfg.eval.batch_size)
            return torch.cat([self.model.encode(x.view(-1, *shape)).flatten(1).float()
                              for x in self.progress(chunks, "encoding the training split")])

        return self.once(("train", n), encode)

    def progress(self, iterable, desc: str):
        return progress(iterable, desc)


@contextlib.contextmanager
def cpu_inference(model: nn.Module):
    """On the CPU, for the duration of the block: the model's 4-d weights in channels-last layout, the
    one oneDNN's convolutions compute in, so that their activations are not reordered before and after
    every layer; transposed convolutions to at most FEW_CHANNELS channels computed by PyTorch's own
    kernel; and the activations that directly follow a layer in an nn.Sequential computed in place
    (`in_place_activations`). Only the layout changes, not a weight's value; on exit the weights are
    contiguous again and the activations as they were. Outputs agree with the plain path's to float
    rounding. Nothing changes on other devices."""
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cpu":
        yield
        return
    narrow = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d) and m.out_channels <= FEW_CHANNELS]
    for m in narrow:
        m.forward = functools.partial(_without_onednn, m)
    activations = in_place_activations(model)
    for act in activations:
        act.inplace = True
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)
        for m in narrow:
            del m.forward
        for act in activations:
            act.inplace = False


def in_place_activations(model: nn.Module) -> list[nn.Module]:
    """The activations of `model` that may overwrite their input: not in place yet, without hooks, and
    held by plain nn.Sequentials alone (a module held by another, or by a Sequential whose forward is its
    own, may be called on anything), each time right after a FRESH_OUTPUT layer without forward hooks (a
    hook may keep that output)."""
    candidates, unsafe = {}, set()
    for parent in model.modules():
        children = list(parent._modules.values())
        chained = isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward
        for i, act in enumerate(children):
            if not isinstance(act, IN_PLACE_ACTIVATIONS) or act.inplace:
                continue
            candidates[id(act)] = act
            layer = children[i - 1] if chained and i > 0 else None
            if (not isinstance(layer, FRESH_OUTPUT) or layer._forward_hooks or act._forward_hooks
                    or act._forward_pre_hooks):
                unsafe.add(id(act))
    return [act for key, act in candidates.items() if key not in unsafe]


def _without_onednn(conv: nn.ConvTranspose2d, x: torch.Tensor, output_size=None) -> torch.Tensor:
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return nn.ConvTranspose2d.forward(conv, x, output_size)
    finally:
        torch.backends.mkldnn.enabled = enabled


def inference(run: Callable[[EvalContext], dict]) -> Callable[[EvalContext], dict]:
    """An evaluator that only runs its model forward: under torch.no_grad and `cpu_inference`."""

    @functools.wraps(run)
    def wrapped(ctx: EvalContext) -> dict:
        with torch.no_grad(), cpu_inference(ctx.model):
            return run(ctx)

    return wrapped


@dataclass(frozen=True)
class Evaluator:
    name: str
    applies: Callable[[torch.nn.Module, Dataset], bool]
    run: Callable[[EvalContext], dict]


EVALUATORS: list[Evaluator] = []


def evaluator(applies: Callable[[torch.nn.Module, Dataset], bool]):
    def wrap(fn):
        EVALUATORS.append(Evaluator(fn.__name__, applies, fn))
        return fn

    return wrap
