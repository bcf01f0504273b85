"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising"): the beta-VAE's architecture with a
penalty on the total correlation of the aggregate posterior q(z) = E_p(x)[q(z|x)] instead of a
heavier KL. Their eq. 2 minimises

  -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + gamma * TC(z),   TC(z) = KL(q(z) || prod_j q(z_j)),

with the TC estimated by the density-ratio trick: a discriminator D tells samples of q(z) from samples
of prod_j q(z_j), and TC ~ E_q(z)[log D(z) / (1 - D(z))]. D has two logits (true, permuted), so
log D / (1 - D) = logit_true - logit_permuted. Samples of prod_j q(z_j) are made by `permute_dims`
(their alg. 1): each dimension of a batch of z ~ q(z|x) shuffled by its own permutation of the batch,
which keeps every dimension's marginal and breaks the dependence between dimensions.

D is trained by an optimiser of its own (`capabilities.Adversarial`; their appendix: Adam, lr 1e-4,
betas (0.5, 0.9)) on the cross-entropy of telling the batch's codes z (detached) from their permutation,
in the same training step, after the VAE's update (their alg. 2 draws a second batch for the permuted
codes; here it is the same batch, permuted). The VAE's TC term does not update D (the engine drops
its gradient on D), and D's loss does not reach the encoder (it reads z detached).

Defaults: the beta-VAE architecture for 64x64 dSprites (`beta_vae`), the KL's weight beta = 1 (eq. 2)
and gamma = 35, the value of their dSprites figures; D as in their appendix, six hidden layers of 1000
units with leaky ReLU (slope 0.2) and two output logits (`model.disc_hidden` sets the sizes). Their
VAE optimiser was Adam at lr 1e-4 (train.lr=1e-4), batch 64. Logged: tc (the estimate above, in nats),
aux_loss (D's cross-entropy) and disc_accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import choice, number
from ..errors import AezooError
from ..registry import register
from .base import Loss
from .capabilities import Adversarial
from .vae import BetaVAE, BetaVAEConfig


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of z (B, D) shuffled by its own uniformly random permutation of the batch (Kim &
    Mnih 2018, alg. 1): every dimension keeps its values (its marginal), their pairing across
    dimensions is broken, so the rows are samples of prod_j q(z_j)."""
    idx = torch.rand(z.shape, device=z.device).argsort(0)  # one permutation per column
    return z.gather(0, idx)


@dataclass
class FactorVAEConfig(BetaVAEConfig):
    # the loss is Kim & Mnih's eq. 2: the objectives capacity and iwae do not apply
    objective: str = choice("beta")
    beta: float = number(1.0, 0.0)  # the KL's weight: 1 in eq. 2
    gamma: float = number(35.0, 0.0)  # the TC's weight
    disc_hidden: tuple[int, ...] = (1000,) * 6  # D's hidden layers (leaky ReLU 0.2), then 2 logits
    disc_lr: float = number(1e-4, 0.0, 10.0, lo_open=True)  # D's Adam
    disc_betas: tuple[float, float] = (0.5, 0.9)  # the discriminator's Adam betas (Kim & Mnih 2018)

    def validate(self) -> None:
        super().validate()
        if not self.disc_hidden or any(h < 1 for h in self.disc_hidden):
            raise AezooError("model.disc_hidden must be one or more positive layer widths")
        if not all(0.0 <= b < 1.0 for b in self.disc_betas):
            raise AezooError(f"model.disc_betas must be two numbers in [0, 1), got {self.disc_betas}")


def discriminator(latent_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip((latent_dim, *hidden[:-1]), hidden):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], 2))


@register("factor_vae", "FactorVAE (Kim & Mnih 2018): ELBO + gamma * total correlation by a discriminator",
          default_data="dsprites",
          tiny={"data_shape": (1, 16, 16), "hidden": (16,), "channels": (4, 4), "latent_dim": 3,
                "disc_hidden": (8, 8)})
class FactorVAE(BetaVAE, Adversarial):
    config_class = FactorVAEConfig

    def __init__(self, config: FactorVAEConfig):
        super().__init__(config)
        self.discriminator = discriminator(config.latent_dim, config.disc_hidden)

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """The density-ratio estimate of TC(z), E[logit_true(z) - logit_permuted(z)] over the batch."""
        logits = self.discriminator(z)
        return (logits[:, 0] - logits[:, 1]).mean()

    def regulariser(self, q, z, kl, step, cache=None) -> Loss:
        base = super().regulariser(q, z, kl, step, cache)
        tc = self.total_correlation(z)
        if cache is not None:
            cache["z"] = z.detach()
        return Loss(base.total + self.config.gamma * tc, {**base.terms, "tc": tc})

    # --- the discriminator (capabilities.Adversarial) ---------------------------------------------
    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def auxiliary_optimizer(self) -> dict:
        return {"optimizer": "adam", "lr": self.config.disc_lr, "betas": self.config.disc_betas,
                "weight_decay": 0.0}

    def auxiliary_loss(self, x: torch.Tensor, step: int, cache: dict | None = None) -> Loss:
        """D's cross-entropy on the batch's codes (class 0) and their dimension-wise permutation
        (class 1), from the z the loss of this step drew (a fresh draw when there is none)."""
        z = (cache or {}).get("z")
        if z is None:
            with torch.no_grad():
                z = self.posterior(x).rsample()
        z = z.detach()
        logits = self.discriminator(torch.cat([z, permute_dims(z)]))
        labels = torch.arange(2, device=z.device).repeat_interleave(len(z))
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return Loss(loss, {"disc_accuracy": accuracy})
