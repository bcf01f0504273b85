"""What every evaluator shares: the context it reads and the list it registers in.

An evaluator is a function of an `EvalContext` returning a dict of `eval.json` keys, registered with
`@evaluator(applies)`, where `applies(model, dataset)` chooses by the model's declared capabilities
(`models.capabilities`) and the kind of data. All numbers are per example and in nats unless the key
says otherwise (the reduction convention of `distributions`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..data import EVAL_SEED, Batches, Dataset
from ..progress import progress
from ..runfolder import RunFolder

__all__ = ["EVAL_SEED", "EvalContext", "Evaluator", "EVALUATORS", "evaluator"]


@dataclass
class EvalContext:
    model: torch.nn.Module
    dataset: Dataset
    cfg: RunConfig
    split: str
    run: RunFolder

    def batches(self, batch_size: int | None = None) -> Batches:
        """The evaluated split in order, binarised as in training with a fixed seed."""
        return Batches(self.dataset, self.split, batch_size or self.cfg.eval.batch_size,
                       self.cfg.data.binarize, seed=EVAL_SEED, shuffle=False)

    def progress(self, iterable, desc: str):
        return progress(iterable, desc)


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
