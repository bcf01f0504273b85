"""Stage 2 for models with discrete codes (VQ-VAE, VQ-VAE-2): what such a model provides, training a
prior over its code maps, sampling through it, and measuring codebook health and bits/dim.

A `CodeModel` names its levels of code maps (`code_levels`), computes them (`codes`) and decodes them
(`decoder_params`, the parameters of its likelihood p(x | codes)). `aezoo train-prior RUN` then:
  1. extracts the code maps of every split of the run's data (with the labels) into
     RUN/prior/codes.safetensors, one packed row per example (`models.priors.pack_codes`);
  2. trains a prior (`models.priors`, the model's `default_prior` unless asked otherwise) on them with
     the one training engine, so RUN/prior/ is a run folder like any other (config.json, whose
     model section records the code shapes, codebook sizes, source model and a hash of the weights
     that made the codes; model.safetensors; metrics.jsonl; resume.pt for `aezoo resume RUN/prior`).
Loading the run (`aezoo.load`, `aezoo sample`, `aezoo eval`, `aezoo report`) attaches its prior, so
`model.sample(n)` draws code maps from the prior and decodes them.

Bits per dimension. For any code map c, p(x) = sum_c' p(c') p(x | c') >= p(c) p(x | c), hence for the
encoder's codes c = q(x)
    -log p(x) <= -log p_prior(c) - log p(x | c)
an upper bound on the negative log-likelihood under the two-stage model (the VQ-VAE bound with a
deterministic one-hot posterior, van den Oord 2017, sec. 3.2). p(x | c) must be a probability of the
data's discrete values: the discretised logistic over the 256 values of 8-bit pixels, or the Bernoulli
for binarised data. bits_per_dim is the bound averaged over the split and divided by (number of data
dimensions) * ln 2; a class-conditional prior enters with its marginal p(c) = sum_y p(y) p(c | y),
p(y) uniform. eval.json also gets its two parts in nats, `prior_nll` and `decoder_nll`.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import registry
from .config import make_run_config, merge, parse_overrides
from .data import Batches, Dataset, load_dataset, register_dataset
from .distributions import Bernoulli, DiscretizedLogistic
from .errors import AezooError, unknown_name
from .evaluate import EVAL_SEED, EvalContext, evaluator
from .io import load_weights, save_weights
from .models.base import Model
from .models.priors import CodePrior, pack_codes
from .plots import save_bar_plot
from .quantize import perplexity, usage
from .train import RunFolder, pick_device, train

PRIOR_FOLDER = "prior"  # inside the stage-1 run folder
CODES_FILE = "codes.safetensors"

# The prior's training budget and settings unless the user sets train.* (the engine's defaults otherwise).
PRIOR_TRAIN_DEFAULTS = {"epochs": 2, "batch_size": 100, "lr": 1e-3, "log_every": 50}


@dataclass(frozen=True)
class CodeLevel:
    name: str
    codebook_size: int  # K
    shape: tuple[int, int]  # (H, W) of the code map


class CodeModel(Model):
    """A model whose latents are maps of discrete codes: one or several levels, coarsest first.

    Subclasses set `likelihood` (a `distributions` likelihood) and implement `code_levels`, `codes` and
    `decoder_params`; sampling, decoding, log p(x | codes) and the prior's loading come from here."""

    default_prior = "pixelcnn"
    prior: CodePrior | None = None  # the run's prior: a plain attribute, not part of this model's weights

    def code_levels(self) -> list[CodeLevel]:
        raise NotImplementedError

    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The code map of each level for x: list of (B, H_l, W_l) int64."""
        raise NotImplementedError

    def decoder_params(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The decoder's output for these code maps: the parameters of p(x | codes)."""
        raise NotImplementedError

    def decode_codes(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The mean of p(x | codes), (B, *data_shape)."""
        return self.likelihood.mean(self.decoder_params(codes))

    def log_px_given_codes(self, x: torch.Tensor, codes: list[torch.Tensor]) -> torch.Tensor:
        """log p(x | codes) summed over data dimensions, (B,), in float32."""
        return self.likelihood.log_prob(self.decoder_params(codes).float(), x)

    def attach_prior(self, prior: CodePrior) -> None:
        """Use `prior` for `sample` and bits/dim; refused when it was trained on codes of other shapes."""
        levels = self.code_levels()
        expected = [(lv.codebook_size, *lv.shape) for lv in levels]
        if prior.level_shapes != expected:
            raise AezooError(f"the prior was trained on codes (K, H, W) = {prior.level_shapes}; "
                             f"this {self.name} makes {expected}")
        object.__setattr__(self, "prior", prior)  # not registered as a submodule: saved in its own folder

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Images decoded from code maps drawn from the prior (`CodePrior.sample`): (n, *data_shape)
        means of p(x | codes)."""
        if self.prior is None:
            raise AezooError(f"this {self.name} has no prior to sample from yet: `aezoo train-prior RUN` trains one")
        self.prior.to(self.device).eval()
        return self.decode_codes(self.prior.sample(n, labels, temperature))

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().visuals(x)
        if self.prior is not None:
            out["prior_samples"] = self.sample(64).clamp(0, 1)
        return out

    def load_weights_from(self, path: str | Path) -> None:
        """The weights, then the prior in the same run folder (RUN/prior) if one was trained on them."""
        super().load_weights_from(path)
        folder = Path(path).parent / PRIOR_FOLDER
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            prior = registry.load(folder)
            if prior.config.source_weights != weights_hash(path):
                print(f"aezoo: {folder} was trained on other weights of this run (was the run trained further?); "
                      "not using it: delete it and run `aezoo train-prior` again", file=sys.stderr)
                return
            self.attach_prior(prior)


def weights_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the code maps as a dataset --------------------------------------------------------------------
def _codes_where(cfg) -> str:
    return f"{Path(cfg.dir) / CODES_FILE}" if cfg.dir else "made by `aezoo train-prior RUN` (data.dir: RUN/prior)"


@register_dataset("codes", "code maps of a VQ model's run, packed rows [label, codes...] (made by train-prior)", _codes_where)
def load_codes(cfg) -> Dataset:
    if not cfg.dir:
        raise AezooError("data.dir must name a prior folder holding codes.safetensors (made by `aezoo train-prior RUN`)")
    path = Path(cfg.dir).expanduser() / CODES_FILE
    rows = load_weights(path)
    if "train" not in rows or any(v.dim() != 2 or v.dtype not in (torch.int16, torch.int32, torch.int64) for v in rows.values()):
        raise AezooError(f"{path}: expected integer tables of packed codes with a 'train' split")
    return Dataset(name="codes", x=dict(rows), labels={k: v[:, 0].long() for k, v in rows.items()},
                   source=str(path), scale=1.0, kind="codes")


@torch.no_grad()
def extract_codes(model: CodeModel, dataset: Dataset, binarize: str, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Packed rows (N, 1 + sum H W) int32 of every split: [label (0 without labels), codes...]."""
    out = {}
    for split in dataset.x:
        batches = Batches(dataset, split, batch_size, binarize, seed=EVAL_SEED, shuffle=False)
        labels = dataset.labels.get(split)
        rows = []
        for i in _progress(range(len(batches)), f"codes ({split})"):
            y = None if labels is None else labels[batches.indices(i).to(labels.device)]
            rows.append(pack_codes(model.codes(batches.get(i)), y).to(torch.int32).cpu())
        out[split] = torch.cat(rows)
    return out


def _progress(iterable, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, disable=None, file=sys.stderr)


# --- aezoo train-prior ------------------------------------------------------------------------------
def prior_folder(run: str | Path) -> RunFolder:
    return RunFolder(Path(run) / PRIOR_FOLDER)


def train_prior(run_path: str | Path, prior: str | None = None, overrides: list[str] = (),
                steps: int | None = None, epochs: int | None = None) -> RunFolder:
    """Stage 2 (module docstring). `overrides` are `prior.key=value` (the prior's config) or
    `train.key=value` / `eval.key=value` / `data.limit=N` for its training run."""
    run = RunFolder(Path(run_path))
    if not run.config.exists() or not run.weights.exists():
        raise AezooError(f"{run.path}: no trained run here (config.json or model.safetensors missing)")
    cfg = registry.load_run_config(run.path)
    if not issubclass(registry.entry(cfg.model_name).model_class, CodeModel):
        raise AezooError(f"{cfg.model_name} has no discrete codes: train-prior is stage 2 of vqvae and vqvae2")
    out = prior_folder(run.path)
    if out.config.exists():
        raise AezooError(f"{out.path} already holds a prior: `aezoo resume {out.path}` continues it; "
                         "delete the folder to train a new one")
    device = pick_device(cfg.train.device)
    model = registry.load(run.path, device=str(device))
    name = prior or model.default_prior
    if name not in registry.PRIORS:
        raise unknown_name("prior", name, registry.PRIORS)

    pairs = [("model." + p[len("prior."):]) if p.startswith("prior.") else p for p in overrides]
    if any(p.startswith("model.") for p in overrides) or any(p.startswith(("data.name", "data.dir")) for p in pairs):
        raise AezooError("train-prior sets the prior with prior.key=value; data.name and data.dir are its own")
    levels = model.code_levels()
    tree = {
        "model": {"code_shapes": [s for lv in levels for s in lv.shape], "codebook_sizes": [lv.codebook_size for lv in levels],
                  "data_shape": [1 + sum(h * w for lv in levels for h, w in [lv.shape])],
                  "source": cfg.model_name, "source_weights": weights_hash(run.weights)},
        "data": {"name": "codes", "dir": str(out.path.resolve())},
        "train": {**PRIOR_TRAIN_DEFAULTS, "device": cfg.train.device, "seed": cfg.train.seed, "progress": cfg.train.progress},
    }
    if steps is not None:
        tree["train"]["steps"] = steps
    if epochs is not None:
        tree["train"].update(epochs=epochs, steps=0)
    tree = merge(tree, parse_overrides(pairs))
    try:  # every mistake is caught here, before anything is written
        prior_cfg = make_run_config(name, registry.entry(name).config_class, tree)
    except AezooError as e:  # the user wrote prior.key, not model.key
        raise AezooError(str(e).replace("model.", "prior.")) from None

    data = load_dataset(cfg.data).to(device)
    rows = extract_codes(model.eval(), data, cfg.data.binarize, cfg.eval.batch_size)
    k = prior_cfg.model.num_classes
    if k and (not data.labels or max(int(r[:, 0].max()) for r in rows.values()) >= k):
        raise AezooError(f"prior.num_classes={k}: the data's labels must lie in 0..{k - 1}"
                         if data.labels else f"prior.num_classes={k}: {cfg.data.name} has no labels")
    save_weights(out.path / CODES_FILE, rows)
    return train(prior_cfg, out.path)


# --- measurements ----------------------------------------------------------------------------------
def _is_code_model(model, ds) -> bool:
    return isinstance(model, CodeModel)


@evaluator(_is_code_model)
@torch.no_grad()
def codebook_health(ctx: EvalContext) -> dict:
    """codebook_usage: fraction of the K codes chosen at least once on the split; codebook_perplexity:
    exp of the entropy of the codes' frequencies (K if all are used equally). One number per level
    (a list, coarsest first, for several levels), and plots/codebook_usage[_LEVEL].png."""
    levels = ctx.model.code_levels()
    counts = [torch.zeros(lv.codebook_size, dtype=torch.float64) for lv in levels]
    for x in ctx.progress(ctx.batches(), "codebook usage"):
        for c, codes in zip(counts, ctx.model.codes(x)):
            c += torch.bincount(codes.flatten().cpu(), minlength=len(c)).double()
    use = [float(usage(c)) for c in counts]
    ppl = [float(perplexity(c)) for c in counts]
    for lv, c, u, p in zip(levels, counts, use, ppl):
        suffix = "" if len(levels) == 1 else f"_{lv.name}"
        freq = (c / c.sum()).sort(descending=True).values
        save_bar_plot(freq.tolist(), ctx.run.plots / f"codebook_usage{suffix}.png",
                      f"{lv.name}: {u:.1%} of {lv.codebook_size} codes used, perplexity {p:.1f} ({ctx.split})",
                      "code (most used first)", "frequency")
    one = len(levels) == 1
    return {"codebook_usage": use[0] if one else use, "codebook_perplexity": ppl[0] if one else ppl}


def _discrete_likelihood(model, binarize: str) -> bool:
    return isinstance(model.likelihood, DiscretizedLogistic) or (isinstance(model.likelihood, Bernoulli) and binarize != "none")


@evaluator(lambda model, ds: isinstance(model, CodeModel) and model.prior is not None)
@torch.no_grad()
def bits_per_dim(ctx: EvalContext) -> dict:
    """-log p(x) <= -log p_prior(codes) - log p(x | codes) in bits per data dimension (module docstring)."""
    model = ctx.model
    if not _discrete_likelihood(model, ctx.cfg.data.binarize):
        return {}
    prior = model.prior.to(model.device).eval()
    prior_nll, decoder_nll, n = 0.0, 0.0, 0
    for x in ctx.progress(ctx.batches(), "bits/dim"):
        codes = model.codes(x)
        prior_nll -= float(prior.log_prob(codes).sum())
        decoder_nll -= float(model.log_px_given_codes(x, codes).sum())
        n += len(x)
    dims = math.prod(model.config.data_shape)
    return {"bits_per_dim": (prior_nll + decoder_nll) / n / (dims * math.log(2)),
            "prior_nll": prior_nll / n, "decoder_nll": decoder_nll / n}


@evaluator(lambda model, ds: isinstance(model, CodePrior))
@torch.no_grad()
def code_nll(ctx: EvalContext) -> dict:
    """For a prior's own run folder: -log p(codes) per example (nats) and per code (bits)."""
    nll, n = 0.0, 0
    for x in ctx.progress(ctx.batches(), "prior NLL"):
        codes, _ = ctx.model.unpack(x)
        nll -= float(ctx.model.log_prob(codes).sum())
        n += len(x)
    per_example = nll / n
    return {"prior_nll": per_example, "bits_per_code": per_example / (ctx.model.config.data_shape[0] - 1) / math.log(2)}

