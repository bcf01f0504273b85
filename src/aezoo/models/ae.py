"""The plain autoencoder (Weng 2018, section "Autoencoder"; Hinton & Salakhutdinov 2006).

An encoder g_phi maps x to a code z = g_phi(x), a decoder f_theta maps it back, and the parameters
minimise the reconstruction error L_AE = 1/n sum_i ||x_i - f_theta(g_phi(x_i))||^2 (survey eq. in
section 1), or, for data in [0, 1], the Bernoulli cross-entropy. Per the library convention the error
is summed over data dimensions and averaged over the batch.

The loss is written with three hooks that do nothing here and that the regularised autoencoders
(`models/regularised.py`) fill: `corrupt` (the encoder's input: the denoising AE's x~ ~ M_D(x~|x),
while the target stays the clean x), `sparsify` (the code the decoder sees: the k-sparse AE's top-k)
and `penalty` (a regulariser on the encoder's layers: the sparse AE's KL, the contractive AE's
||J_f(x)||_F^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, choice, number
from ..distributions import check_likelihood, default_likelihood
from ..networks import ACTIVATIONS, BackboneConfig, Decoder, Encoder
from ..registry import register
from .base import Loss, Model
from .capabilities import FeatureEncoder


@dataclass
class AEConfig(ModelConfig, BackboneConfig):
    latent_dim: int = number(32, 1)  # size of the code
    # the reconstruction loss: bernoulli (BCE with logits, for data in [0, 1]) or gaussian (squared error);
    # auto: bernoulli for data in [0, 1], gaussian otherwise, chosen when a run is made (bernoulli without data)
    likelihood: str = choice("auto", "bernoulli", "gaussian")
    # the code's own nonlinearity (the one-layer AEs of Vincent 2008 and Rifai 2011 have sigmoid codes)
    code_activation: str = choice("linear", *ACTIVATIONS)

    def fit_to_data(self, shape: tuple[int, ...], size: int, values: str) -> None:
        super().fit_to_data(shape, size, values)
        if self.likelihood == "auto":
            self.likelihood = default_likelihood(values, density=False)
        check_likelihood(self.likelihood, values)

    @property
    def loss_kind(self) -> str:
        """The reconstruction loss in use: bernoulli or gaussian."""
        return "bernoulli" if self.likelihood == "auto" else self.likelihood


def reconstruction_error(out: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example error (B,): squared error (gaussian) or BCE with logits (bernoulli), summed over data
    dimensions."""
    if kind == "gaussian":
        err = F.mse_loss(out, x, reduction="none")  # (out - x)^2 bit for bit, gradient included, in one kernel
    else:
        err = F.binary_cross_entropy_with_logits(out, x, reduction="none")
    return err.flatten(1).sum(1)


@register("ae", "autoencoder: deterministic code, MSE or Bernoulli reconstruction",
          tiny={"hidden": (32,), "channels": (4, 8), "latent_dim": 4})
class AE(Model, FeatureEncoder):
    config_class = AEConfig

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.encoder = Encoder(config, config.data_shape, config.latent_dim)
        self.decoder = Decoder(config, config.data_shape, config.latent_dim)
        self.code_activation = (
            nn.Identity() if config.code_activation == "linear" else ACTIVATIONS[config.code_activation]()
        )

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's layer outputs on x: each MLP hidden layer after its activation, (B, hidden[i]),
        then the code (B, latent_dim)."""
        h = self.encoder.features(x)
        outputs = []
        for module in self.encoder.head if isinstance(self.encoder.head, nn.Sequential) else ():
            h = module(h)
            if not isinstance(module, nn.Linear):
                outputs.append(h)
        outputs.append(self.code_activation(self.encoder.out(h)))
        return outputs

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output (B, latent_dim), before `sparsify`."""
        return self.layers(x)[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The code `encode` gives (k-sparse: its alpha * k largest units), flattened; gradients flow
        through every encoder layer."""
        return self.encode(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.loss_kind == "bernoulli" else out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.sparsify(self.code(x), step=None))

    # --- hooks for the regularised autoencoders (models/regularised.py) ----------------------------
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input in the loss, x itself here."""
        return x

    def sparsify(self, z: torch.Tensor, step: int | None) -> torch.Tensor:
        """The code the decoder reconstructs from at training step `step` (None: a trained model's),
        z itself here."""
        return z

    def penalty(self, x: torch.Tensor, layers: list[torch.Tensor]) -> Loss | None:
        """A regulariser of the encoder on input x with layer outputs `layers`: its weighted total and its
        named (unweighted) terms, or None."""
        return None

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        x_in = self.corrupt(x)
        layers = self.layers(x_in)
        code = self.sparsify(layers[-1], step)
        recon = reconstruction_error(self.decoder(code), x, self.config.loss_kind).mean()
        reg = self.penalty(x_in, layers)
        if reg is None:
            return Loss(recon, {"recon": recon})
        return Loss(recon + reg.total, {"recon": recon, **reg.terms})
