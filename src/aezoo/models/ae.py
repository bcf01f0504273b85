"""The plain autoencoder (Weng 2018, section "Autoencoder"; Hinton & Salakhutdinov 2006).

An encoder g_phi maps x to a code z = g_phi(x), a decoder f_theta maps it back, and the parameters
minimise the reconstruction error L_AE = 1/n sum_i ||x_i - f_theta(g_phi(x_i))||^2 (survey eq. in
section 1), or, for data in [0, 1], the Bernoulli cross-entropy. Per the library convention the error
is summed over data dimensions and averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig, choice, number
from ..nn import BackboneConfig, Decoder, Encoder
from ..registry import register
from .base import Loss, Model


@dataclass
class AEConfig(ModelConfig, BackboneConfig):
    latent_dim: int = number(32, 1)
    recon_loss: str = choice("bce", "mse")  # bce: Bernoulli (BCE with logits), for data in [0, 1]


def reconstruction_error(out: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example error (B,): squared error or BCE with logits, summed over data dimensions."""
    if kind == "mse":
        err = (out - x) ** 2
    else:
        err = F.binary_cross_entropy_with_logits(out, x, reduction="none")
    return err.flatten(1).sum(1)


@register("ae", "autoencoder: deterministic code, MSE or Bernoulli reconstruction",
          tiny={"hidden": (32,), "channels": (4, 8), "latent_dim": 4})
class AE(Model):
    config_class = AEConfig

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.encoder = Encoder(config, config.data_shape, config.latent_dim)
        self.decoder = Decoder(config, config.data_shape, config.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.recon_loss == "bce" else out

    def loss(self, x: torch.Tensor) -> Loss:
        recon = reconstruction_error(self.decoder(self.encoder(x)), x, self.config.recon_loss).mean()
        return Loss(recon, {"recon": recon})
