"""The regularised autoencoders judged as their papers judge them (`aezoo eval` with eval.finetune=true):
a classifier initialised from the trained encoder and fine-tuned, against the same network trained from
random weights, and logistic regression on the frozen features.

- Fine-tuning (Vincent et al. 2010, sec. 3.5 and table 3; Rifai et al. 2011, sec. 5.2 and table 1;
  Makhzani & Frey 2014, sec. 5.4 and table 3): a softmax layer is put on the encoder's features
  (`FeatureEncoder.features`: the code `encode` gives, so k-sparse's alpha * k largest units) and every
  layer is trained by minibatch SGD on the cross-entropy of the labels of the training split
  (eval.finetune_lr, eval.finetune_batch_size), at most eval.finetune_epochs epochs. After each epoch
  the error on the validation split is measured; training stops when it has not improved for
  eval.finetune_patience epochs and the weights of the best validation epoch are tested (early
  stopping as in the papers; their learning rates and epochs were chosen on validation, here they are
  set). The trained model itself is never changed: a copy is fine-tuned.
- From scratch: `FeatureEncoder.fresh()`, the same network with new random weights, trained the same
  way on the same batches. The difference of the two test errors is what pretraining gave. Models of one
  architecture get the same fresh network (it depends on the config's shapes and the seed only), so
  eval.finetune_scratch=false skips it where another model's evaluation has measured it.
- Logistic regression on frozen features (Makhzani & Frey 2014, table 1): multinomial logistic
  regression on `encode(x)` of the whole training split, its L2 weight chosen among LOGREG_L2 by the
  error on the validation split; the fit is the linear probe's (`features.fit_linear_probe`:
  standardised codes, L-BFGS), so it differs from `probe_linear_acc` only in its training examples
  (all, not eval.probe_train) and its validated L2.

Errors are fractions of the evaluated split (`eval.split`, test by default) misclassified. Inputs are
prepared as in training (dynamic binarisation with a fixed seed per batch). Every random draw (the
softmax layer's and the fresh network's initialisation, the batch order) comes from EVAL_SEED, so two
evaluations on one CPU give the same numbers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batches, mix_seed
from ..errors import AezooError
from ..models.capabilities import FeatureEncoder
from .base import EVAL_SEED, EvalContext, evaluator
from .features import MAX_TRAIN_NUMBERS, fit_linear_probe, labelled

LOGREG_L2 = (1e-4, 1e-3, 1e-2)  # the L2 weights logistic regression chooses from on validation (first of ties)


class Classifier(nn.Module):
    """An encoder's features followed by a softmax layer: logits (B, classes)."""

    def __init__(self, encoder: FeatureEncoder, width: int, classes: int):
        super().__init__()
        self.encoder = encoder
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder.features(x))


class EarlyStopping:
    """Keeps the weights of the epoch with the lowest validation error (the first of equal ones) and
    says when `patience` epochs have passed without a lower one."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_error, self.best_epoch, self.best_state = float("inf"), 0, None

    def update(self, epoch: int, error: float, net: nn.Module) -> bool:
        """Records `error` of epoch `epoch` (1-based) of `net`; True when training should stop."""
        if error < self.best_error:
            self.best_error, self.best_epoch = error, epoch
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return epoch - self.best_epoch >= self.patience


@torch.no_grad()
def error_rate(net: nn.Module, batches: Batches) -> float:
    """The fraction of the examples of `batches` (in order) whose largest logit is not their label."""
    wrong, n = 0, 0
    for step in range(len(batches)):
        y = batches.labels(step).long()
        wrong += int((net(batches.get(step)).argmax(1) != y).sum())
        n += len(y)
    return wrong / n


def fit_classifier(net: nn.Module, train: Batches, val: Batches, epochs: int, patience: int, lr: float,
                   progress=lambda it, desc: it, desc: str = "fine-tuning") -> dict:
    """Trains every parameter of `net` by SGD on the cross-entropy of `train` for at most `epochs`
    epochs with early stopping on the error of `val` (module docstring), leaves the best validation
    epoch's weights in `net` and returns its val_error, best_epoch and the epochs run."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    stop = EarlyStopping(patience)
    epoch = 0
    for epoch in progress(range(1, epochs + 1), desc):
        net.train()
        with torch.enable_grad():
            for i in range(len(train)):
                step = (epoch - 1) * len(train) + i
                loss = F.cross_entropy(net(train.get(step)), train.labels(step).long())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        if stop.update(epoch, error_rate(net, val), net):
            break
    net.load_state_dict(stop.best_state)
    return {"val_error": stop.best_error, "best_epoch": stop.best_epoch, "epochs_run": epoch}


def classifier(encoder: FeatureEncoder, x: torch.Tensor, classes: int, seed: int) -> Classifier:
    """`encoder` with a softmax layer drawn from `seed` on top, sized by its features of the batch x."""
    with torch.no_grad():
        width = encoder.features(x[:1]).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Classifier(encoder, width, classes).to(x.device)


@torch.no_grad()
def logistic_regression(ctx: EvalContext, val: Batches) -> dict:
    """logreg_*: logistic regression on the frozen codes of the training split (module docstring)."""
    ds = ctx.dataset
    test = ctx.split_codes()
    n = min(len(ds.x["train"]), max(1, MAX_TRAIN_NUMBERS // test.shape[1]))
    train, train_y = ctx.train_codes(n), ds.labels["train"][:n].long()
    val_codes = torch.cat([ctx.model.encode(val.get(i)).flatten(1).float() for i in range(len(val))])
    val_y, test_y = ds.labels["val"].long(), ds.labels[ctx.split][: len(test)].long()
    classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    best = None
    for l2 in ctx.progress(LOGREG_L2, "logistic regression"):
        predict = fit_linear_probe(train, train_y, classes, l2=l2)
        val_error = float((predict(val_codes) != val_y).float().mean())
        if best is None or val_error < best["logreg_val_error"]:
            best = {"logreg_test_error": float((predict(test) != test_y).float().mean()),
                    "logreg_val_error": val_error, "logreg_l2": l2, "logreg_train_examples": n}
    return best


def finetune_and_scratch(model: FeatureEncoder, train: Batches, val: Batches, test: Batches, epochs: int,
                         patience: int, lr: float, progress=lambda it, desc: it, scratch: bool = True) -> dict:
    """finetune_* and (with `scratch`) scratch_*: a copy of `model` with a softmax layer fine-tuned, then
    the same network from fresh weights trained alike (module docstring); `model` is left as it was."""
    x0 = train.get(0)
    classes = int(max(int(train.ds.labels[s].max()) for s in (train.split, val.split, test.split))) + 1
    out = {}
    for name, seed in (("finetune", 1), ("scratch", 2))[: 2 if scratch else 1]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(EVAL_SEED, seed))
            encoder = copy.deepcopy(model) if name == "finetune" else model.fresh()
        net = classifier(encoder, x0, classes, mix_seed(EVAL_SEED, seed, 1))
        fit = fit_classifier(net, train, val, epochs, patience, lr, progress, f"{name}: epochs")
        out.update({f"{name}_test_error": error_rate(net, test), f"{name}_val_error": fit["val_error"],
                    f"{name}_best_epoch": fit["best_epoch"], f"{name}_epochs_run": fit["epochs_run"]})
    return out


@evaluator(labelled)
def finetune(ctx: EvalContext) -> dict:
    """Fine-tuned and from-scratch classifiers, and logistic regression on the frozen codes (module
    docstring); nothing unless eval.finetune is set."""
    e, ds = ctx.cfg.eval, ctx.dataset
    if not e.finetune:
        return {}
    if not isinstance(ctx.model, FeatureEncoder):
        raise AezooError(f"eval.finetune=true needs a model with a differentiable encoder (ae, dae, sparse_ae, "
                         f"ksparse_ae, cae); {ctx.model.name} has none")
    if "val" not in ds.labels or ctx.split not in ds.labels:
        raise AezooError(f"eval.finetune=true needs labelled validation and {ctx.split} splits; "
                         f"data {ctx.cfg.data.name} has labels for {', '.join(sorted(ds.labels)) or 'none'}")
    binarize = ctx.cfg.data.binarize
    train = Batches(ds, "train", e.finetune_batch_size, binarize, seed=EVAL_SEED, shuffle=True)
    val = Batches(ds, "val", e.batch_size, binarize, seed=EVAL_SEED, shuffle=False)
    out = finetune_and_scratch(ctx.model, train, val, ctx.batches(), e.finetune_epochs, e.finetune_patience,
                               e.finetune_lr, ctx.progress, e.finetune_scratch)
    out.update(logistic_regression(ctx, val))
    if ctx.split == "val":
        out["notes"] = ["eval.split=val: the fine-tuning errors are measured on the split that chose their "
                        "epoch and logistic regression's L2, so they are optimistic"]
    return out
