"""What a model can do beyond `loss`, `encode` and `decode`, declared as types it inherits.

The command line and the evaluation choose by these types (`isinstance`), never by probing a model's
attributes. A model opts into a capability by inheriting it and implementing its abstract methods:

- `Generative`: draws data, `sample(n, temperature)`.
- `LikelihoodBound`: bounds -log p(x), `elbo_parts(x)` and `nll_iwae(x, k)` (neg_elbo, nll_iwae, KL
  per unit, active units in eval.json); `posterior_moments(x)`, the Gaussian posterior's mean and
  standard deviation (`aezoo encode`).
- `Denoising`: corrupts its input in training, `corrupt(x)` (denoising PSNR in eval.json).
- `FeatureEncoder`: a deterministic feature map `features(x)` that gradients flow through, and `fresh()`, the
  same network freshly initialised (supervised fine-tuning against training from scratch in eval.json).
- `CodeModel`: latents are maps of discrete codes (VQ-VAE, VQ-VAE-2): `code_levels`, `codes`,
  `code_vectors`, `decoder_params`; stage 2 fits a prior over the codes (`aezoo train-prior`) that `sample` and
  bits/dim then use (codebook health and bits/dim in eval.json).
- `SequenceModel`: predicts the frames of a sequence ahead, `jump_errors(x, context)` (rollout errors
  in eval.json).
- `Adversarial`: trains an auxiliary network by its own optimiser against the model (FactorVAE's
  discriminator): `auxiliary_parameters`, `auxiliary_loss(x, step, cache)`, `auxiliary_optimizer`;
  the engine keeps a second optimiser for it.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import registry
from ..errors import AezooError
from .base import Loss, Model, check_temperature

PRIOR_FOLDER = "prior"  # a code model's prior, inside its run folder


class Generative(abc.ABC):
    @abc.abstractmethod
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws from the model, as images (n, C, H, W) in [0, 1] (sequences as strips of frames).
        `temperature` < 1 draws from the bulk of the prior, trading variety for typical samples."""


class LikelihoodBound(abc.ABC):
    """Also has `likelihood`, the decoder's distribution p(x|z) (a `distributions` likelihood)."""

    @abc.abstractmethod
    def elbo_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-sample reconstruction term -log p(x|z) (B,) and the KL per latent unit (B, D)."""

    @abc.abstractmethod
    def nll_iwae(self, x: torch.Tensor, k: int, max_decodes: int = 5_000) -> torch.Tensor:
        """The k-sample importance-weighted estimate of -log p(x), (B,) (Burda et al. 2016, eq. 8)."""

    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and standard deviation (B, D) of the Gaussian posterior q(z | x), what `aezoo encode`
        writes for these models. Read from `posterior(x)` (a `distributions.DiagonalGaussian`); a model
        with another posterior overrides this."""
        q = self.posterior(x)
        return q.mean, q.std


class Denoising(abc.ABC):
    @abc.abstractmethod
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """A corrupted copy x~ ~ M_D(x~ | x) of the batch x."""


class FeatureEncoder(abc.ABC):
    """A model whose encoder can initialise a classifier: the unsupervised pretraining of the regularised
    autoencoders, judged as their papers judge it (`evaluation.finetune`)."""

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation (B, F) of x, differentiable in x and in the encoder's parameters: what a
        classifier is put on top of and fine-tuned through."""

    def fresh(self):
        """A new model of the same config with freshly initialised weights (from torch's generator),
        sharing no tensor with this one, on the same device."""
        return type(self)(copy.deepcopy(self.config)).to(self.device)


class SequenceModel(abc.ABC):
    @abc.abstractmethod
    def rollout_context(self) -> int:
        """Frames observed before the evaluated predictions."""

    @abc.abstractmethod
    def jump_errors(self, x: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors summed over a frame's dimensions, (B, J) each: of the prediction of frame
        context + d from the first `context` frames, d = 1..J, and of copying the last frame seen."""


@dataclass(frozen=True)
class CodeLevel:
    name: str
    codebook_size: int  # K
    shape: tuple[int, int]  # (H, W) of the code map


def weights_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CodeModel(Model, Generative):
    """A model whose latents are maps of discrete codes: one or several levels, coarsest first.

    Subclasses set `likelihood` (a `distributions` likelihood) and implement `code_levels`, `codes`,
    `code_vectors` and `decoder_params`; sampling, decoding, log p(x | codes) and the prior's loading come from here."""

    default_prior = "pixelcnn"
    prior = None  # the run's CodePrior: a plain attribute, not part of this model's weights
    folder = None  # the run folder the weights were loaded from, if any (named in messages)

    @abc.abstractmethod
    def code_levels(self) -> list[CodeLevel]:
        """Each level's codebook size and code-map shape, coarsest first."""

    @abc.abstractmethod
    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The code map of each level for x: list of (B, H_l, W_l) int64."""

    @abc.abstractmethod
    def code_vectors(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """What `encode` gives for the images whose code maps are `codes`, to float rounding (encode's
        vectors carry the straight-through form z_e + (e - z_e)): evaluation encodes a split once, as
        code maps, and reads the codes the probes and retrieval take from them."""

    @abc.abstractmethod
    def decoder_params(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The decoder's output for these code maps: the parameters of p(x | codes)."""

    def decode_codes(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The mean of p(x | codes), (B, *data_shape)."""
        return self.likelihood.mean(self.decoder_params(codes))

    def log_px_given_codes(self, x: torch.Tensor, codes: list[torch.Tensor]) -> torch.Tensor:
        """log p(x | codes) summed over data dimensions, (B,), in float32."""
        return self.likelihood.log_prob(self.decoder_params(codes).float(), x)

    def attach_prior(self, prior) -> None:
        """Use `prior` for `sample` and bits/dim; refused when it was trained on codes of other shapes."""
        expected = [(lv.codebook_size, *lv.shape) for lv in self.code_levels()]
        if prior.level_shapes != expected:
            raise AezooError(f"the prior was trained on codes (K, H, W) = {prior.level_shapes}; "
                             f"this {self.name} makes {expected}")
        object.__setattr__(self, "prior", prior)  # not registered as a submodule: saved in its own folder

    def require_prior(self):
        if self.prior is None:
            run = self.folder if self.folder is not None else "RUN (the run folder of these weights)"
            raise AezooError(f"this {self.name} has no prior yet: `aezoo train-prior {run}` trains one")
        return self.prior.to(self.device).eval()

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images decoded from code maps drawn from the prior (`CodePrior.sample`): (n, *data_shape)
        means of p(x | codes)."""
        check_temperature(temperature)
        return self.decode_codes(self.require_prior().sample(n, temperature, labels))

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().visuals(x)
        if self.prior is not None:
            out["prior_samples"] = self.sample(64).clamp(0, 1)
        return out

    def load_weights_from(self, path: str | Path) -> None:
        """The weights, then the prior in the same run folder (RUN/prior) if one was trained on them."""
        super().load_weights_from(path)
        object.__setattr__(self, "folder", Path(path).parent)
        folder = self.folder / PRIOR_FOLDER
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            prior = registry.load(folder)
            if prior.config.source_weights != weights_hash(path):
                print(f"aezoo: {folder} was trained on other weights of this run (was the run trained further?); "
                      "not using it: delete it and run `aezoo train-prior` again", file=sys.stderr)
                return
            self.attach_prior(prior)


class Adversarial(abc.ABC):
    """A model with an auxiliary network trained against it by an optimiser of its own (the
    discriminator of FactorVAE). Each training step the engine

    1. calls `loss(x, step, cache)` with an empty dict `cache` (a third argument only these models'
       losses take), in which the loss leaves detached tensors, then `auxiliary_loss(x, step, cache)`;
    2. steps the main optimiser, which holds every parameter but `auxiliary_parameters()`, on the main
       loss's gradient, then the auxiliary optimiser on the auxiliary loss's gradient alone: what the
       main loss's backward pass left on the auxiliary parameters is dropped, and under several
       processes their gradients are averaged like the others.

    The auxiliary optimiser is the run's `train` settings with the overrides of `auxiliary_optimizer()`,
    at a constant learning rate, clipped by nothing; its state is in the checkpoint, and the auxiliary
    loss and its terms are logged (`aux_loss` and the terms' own names). `auxiliary_loss` must not
    differentiate the model's other parameters (it reads detached tensors)."""

    @abc.abstractmethod
    def auxiliary_parameters(self) -> list[torch.nn.Parameter]:
        """The auxiliary network's parameters, left out of the main optimiser."""

    @abc.abstractmethod
    def auxiliary_loss(self, x: torch.Tensor, step: int, cache: dict) -> Loss:
        """The auxiliary network's loss at `step`, from what `loss(x, step, cache)` left in `cache`."""

    def auxiliary_optimizer(self) -> dict:
        """Overrides of the run's `train` settings (optimizer, lr, betas, eps, weight_decay, momentum)
        for the auxiliary optimiser."""
        return {}


