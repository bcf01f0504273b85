"""The variational autoencoder (Kingma & Welling 2014; Weng 2018, section "VAE").

q_phi(z|x) = N(mu(x), diag(sigma^2(x))) is trained with p_theta(x|z) by maximising the ELBO
  log p(x) >= E_q[log p_theta(x|z)] - KL(q_phi(z|x) || N(0, I))        (survey, the VAE loss L_VAE)
with z = mu + sigma * eps (reparameterisation trick) and the KL in closed form. The negative log
likelihood is estimated with the importance-weighted bound of Burda et al. (2016, eq. 8):
  log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x), tightening as k grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import ModelConfig, choice, number
from ..distributions import LIKELIHOODS, DiagonalGaussian, make_likelihood, standard_normal_log_prob
from ..nn import BackboneConfig, Decoder, Encoder
from ..registry import register
from .base import Loss, Model


@dataclass
class VAEConfig(ModelConfig, BackboneConfig):
    latent_dim: int = number(32, 1)
    likelihood: str = choice(*LIKELIHOODS)
    sigma: float = number(1.0, 0.0, None, lo_open=True)  # std of the fixed-variance Gaussian likelihood


@register("vae", "variational autoencoder: Gaussian posterior, ELBO, IWAE estimate of -log p(x)",
          tiny={"hidden": (32,), "channels": (4, 8), "latent_dim": 4})
class VAE(Model):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.likelihood = make_likelihood(config.likelihood, config.sigma)
        self.encoder = Encoder(config, config.data_shape, 2 * config.latent_dim)
        self.decoder = Decoder(config, config.data_shape, config.latent_dim, self.likelihood.params_per_dim)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_params(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (B, latent_dim): the representation to embed."""
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z), (B, *data_shape)."""
        return self.likelihood.mean(self.decoder(z))

    def elbo_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-sample reconstruction term -log p(x|z) (B,) and the KL per latent unit (B, D)."""
        q = self.posterior(x)
        z = q.rsample()
        recon = -self.likelihood.log_prob(self.decoder(z), x)
        return recon, q.kl_standard()

    def loss(self, x: torch.Tensor) -> Loss:
        recon, kl_units = self.elbo_parts(x)
        recon, kl = recon.mean(), kl_units.sum(1).mean()
        return Loss(recon + kl, {"recon": recon, "kl": kl})

    def log_weights(self, x: torch.Tensor, k: int, max_decodes: int = 50_000) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): (k, B), in chunks of samples so
        that at most `max_decodes` decoder evaluations are held at once."""
        q = self.posterior(x)
        per_chunk = max(1, max_decodes // len(x))
        out = []
        for start in range(0, k, per_chunk):
            z = q.rsample(min(per_chunk, k - start))  # (kc, B, D)
            flat_x = x.unsqueeze(0).expand(len(z), *x.shape).reshape(-1, *x.shape[1:])
            log_px = self.likelihood.log_prob(self.decoder(z.flatten(0, 1)), flat_x).view(len(z), len(x))
            out.append(log_px + standard_normal_log_prob(z) - q.log_prob(z))
        return torch.cat(out)

    def nll_iwae(self, x: torch.Tensor, k: int, max_decodes: int = 50_000) -> torch.Tensor:
        """The k-sample importance-weighted estimate of -log p(x), (B,); k = 1 gives -ELBO."""
        lw = self.log_weights(x, k, max_decodes).float()
        return -(torch.logsumexp(lw, 0) - math.log(k))

    def sample(self, n: int) -> torch.Tensor:
        """Means of p(x|z) for z ~ N(0, I): (n, *data_shape)."""
        return self.decode(torch.randn(n, self.config.latent_dim, device=self.device))

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Decodings along the straight line between the posterior means of a and b: (B, steps, ...)."""
        za, zb = self.encode(a), self.encode(b)
        t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
        z = (1 - t) * za.unsqueeze(1) + t * zb.unsqueeze(1)
        return self.decode(z.flatten(0, 1)).view(len(a), steps, *a.shape[1:])

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().visuals(x)
        if x.dim() == 4:
            out["samples"] = self.sample(64).clamp(0, 1)
            n = min(8, len(x) // 2)
            out["interpolations"] = self.interpolate(x[:n], x[n : 2 * n]).clamp(0, 1).flatten(0, 1)
        return out
