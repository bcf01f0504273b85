"""DIP-VAE (Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from Unlabeled
Observations"): the VAE's loss plus a penalty that moves the covariance of the inferred prior (the
aggregate posterior q(z) = E_p(x)[q(z|x)]) towards the identity, the covariance of p(z) = N(0, I):

  lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2

- variant "i" (DIP-VAE-I, their eq. 6): Cov = Cov_p(x)[mu(x)], the covariance of the posterior means;
- variant "ii" (DIP-VAE-II, eq. 7): Cov = Cov_q(z)[z] = Cov_p(x)[mu(x)] + E_p(x)[diag(sigma^2(x))],
  the covariance of the aggregate posterior.

Both are estimated on the batch, Cov_p(x)[mu] as the biased sample covariance (1/B) sum_b
(mu_b - mean)(mu_b - mean)^T. Defaults: the beta-VAE architecture for 64x64 dSprites (`beta_vae`), the
KL at weight beta = 1 (the ELBO the penalty is added to), lambda_od = 10 and lambda_d = 10 lambda_od =
100, the ratio they use for DIP-VAE-I (their fig. 1 on 2D Shapes, i.e. dSprites); for DIP-VAE-II they
set lambda_d = lambda_od (`--set model.variant=ii --set model.lambda_d=10`). Logged: dip_offdiag and
dip_diag, the two sums before their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import choice, number
from ..registry import register
from .base import Loss
from .vae import BetaVAE, BetaVAEConfig


def dip_covariance(mean: torch.Tensor, var: torch.Tensor, variant: str) -> torch.Tensor:
    """The batch estimate (D, D) of Cov_p(x)[mu(x)] (variant "i") or of Cov_q(z)[z] = Cov_p(x)[mu(x)]
    + E_p(x)[diag(sigma^2(x))] (variant "ii") from posterior means and variances (B, D)."""
    centred = mean - mean.mean(0)
    cov = centred.T @ centred / len(mean)
    return cov + torch.diag(var.mean(0)) if variant == "ii" else cov


def dip_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_{i != j} Cov_ij^2, sum_i (Cov_ii - 1)^2)."""
    diag = torch.diagonal(cov)
    return (cov**2).sum() - (diag**2).sum(), ((diag - 1) ** 2).sum()


@dataclass
class DIPVAEConfig(BetaVAEConfig):
    objective: str = choice("beta", "capacity")  # the KL term the penalty is added to (iwae does not apply)
    beta: float = number(1.0, 0.0)  # the KL's weight: 1, the ELBO
    variant: str = choice("i", "ii")  # DIP-VAE-I: covariance of the means; II: of the aggregate posterior
    lambda_od: float = number(10.0, 0.0)  # weight of the off-diagonal entries' squares
    lambda_d: float = number(100.0, 0.0)  # weight of the diagonal's squared distance to 1


@register("dip_vae", "DIP-VAE-I/II (Kumar 2018): ELBO + penalty on the covariance of the inferred prior",
          default_data="dsprites",
          tiny={"data_shape": (1, 16, 16), "hidden": (16,), "channels": (4, 4), "latent_dim": 3})
class DIPVAE(BetaVAE):
    config_class = DIPVAEConfig

    def regulariser(self, q, z, kl, step, cache=None) -> Loss:
        c = self.config
        base = super().regulariser(q, z, kl, step, cache)
        off, diag = dip_penalties(dip_covariance(q.mean, torch.exp(q.logvar), c.variant))
        total = base.total + c.lambda_od * off + c.lambda_d * diag
        return Loss(total, {**base.terms, "dip_offdiag": off, "dip_diag": diag})
