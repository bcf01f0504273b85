"""The variational autoencoder (Kingma & Welling 2014; Weng 2018, section "VAE").

q_phi(z|x) = N(mu(x), diag(sigma^2(x))) is trained with p_theta(x|z) by maximising the ELBO
  log p(x) >= E_q[log p_theta(x|z)] - KL(q_phi(z|x) || N(0, I))        (survey, the VAE loss L_VAE)
with z = mu + sigma * eps (reparameterisation trick) and the KL in closed form. The negative log
likelihood is estimated with the importance-weighted bound of Burda et al. (2016, eq. 8):
  log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x), tightening as k grows.

Two options weigh the KL differently (survey, section "Beta-VAE"); both are pure functions of the
training step, so a resumed run follows the same schedule:
- objective="beta" minimises L_BETA = -E_q[log p(x|z)] + beta * KL (Higgins et al. 2017; the survey's
  L_BETA); beta = 1 is the ELBO, beta > 1 presses the posterior towards the factorised prior.
- objective="capacity" minimises -E_q[log p(x|z)] + gamma * |KL - C| (Burgess et al. 2018),
  the capacity C raised linearly from 0 to C_max nats over `capacity_steps` steps, so that the
  posterior may encode more information, one factor after another, as training goes on.
A third trains on the tighter bound itself:
- objective="iwae" maximises the k-sample bound above with k = `iwae_k` (the IWAE of Burda et al. 2016,
  eq. 8; its gradient weighs each sample's gradient by its normalised importance weight, eq. 14);
  k = 1 is the ELBO with a one-sample estimate of the KL.

The loss is the reconstruction term plus `regulariser(q, z, kl, step)` (beta * KL, or gamma * |KL - C|):
the hook the disentangling successors of the beta-VAE fill (`factor_vae`, `beta_tc_vae`, `dip_vae`).

`beta_vae` is this class with the defaults of Burgess et al. (2018, appendix) for 64x64 dSprites:
four 4x4 stride-2 convolutions of 32 channels, two fully connected layers of 256, 10 latent units,
a Bernoulli likelihood, beta = 4, and latent traversals in its report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig, choice, number
from ..distributions import (
    LIKELIHOODS,
    Bernoulli,
    DiagonalGaussian,
    check_likelihood,
    default_likelihood,
    make_likelihood,
    standard_normal_log_prob,
)
from ..networks import BackboneConfig, Decoder, Encoder
from ..registry import register
from .base import Loss, Model, check_temperature
from .capabilities import Generative, LikelihoodBound

# Numbers of decoder output per block of the IWAE's decodings on the CPU (`VAE.log_weights`): 1 MB of
# float32, 64 decodings of a 64x64 image, whose largest conv activation (32 channels at 32x32: 8 MB) then stays
# in a 32 MB L3 cache from layer to layer, and 334 MNIST decodings of an MLP.
DECODE_BLOCK = 2**18


@dataclass
class VAEConfig(ModelConfig, BackboneConfig):
    latent_dim: int = number(32, 1)  # size of z
    # auto: chosen from the data when a run is made (distributions.default_likelihood: bernoulli for binary
    # data, logistic for 8-bit images, a Gaussian with learned variance otherwise); bernoulli without data
    likelihood: str = choice("auto", *LIKELIHOODS)
    sigma: float = number(1.0, 0.0, None, lo_open=True, when="likelihood=gaussian")  # the fixed Gaussian std
    objective: str = choice("beta", "capacity", "iwae")  # what the loss is (module docstring)
    beta: float = number(1.0, 0.0, when="objective=beta")  # the KL's weight; 1: the ELBO
    gamma: float = number(1000.0, 0.0, lo_open=True, when="objective=capacity")  # weight of |KL - C|
    capacity_max: float = number(25.0, 0.0, when="objective=capacity")  # C_max in nats (Burgess: 25, dSprites)
    capacity_steps: int = number(100_000, 0, when="objective=capacity")  # steps of C from 0 to C_max (0: at once)
    iwae_k: int = number(50, 1, when="objective=iwae")  # importance samples per example (Burda: 5, 50)
    # validation passes also report each unit's KL as kl_<i>, for the plot of KL per unit over training
    log_kl_units: bool = False

    def fit_to_data(self, shape: tuple[int, ...], size: int, values: str) -> None:
        super().fit_to_data(shape, size, values)
        if self.likelihood == "auto":
            self.likelihood = default_likelihood(values, density=True)
        check_likelihood(self.likelihood, values)


@register("vae", "variational autoencoder: Gaussian posterior, ELBO, IWAE estimate of -log p(x)",
          tiny={"hidden": (32,), "channels": (4, 8), "latent_dim": 4})
class VAE(Model, Generative, LikelihoodBound):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        name = "bernoulli" if config.likelihood == "auto" else config.likelihood
        self.likelihood = make_likelihood(name, config.sigma)
        self.encoder = Encoder(config, config.data_shape, 2 * config.latent_dim)
        self.decoder = Decoder(config, config.data_shape, config.latent_dim, self.likelihood.params_per_dim)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        # float32 even under mixed precision: the KL (and gamma * |KL - C|) is where precision matters
        return DiagonalGaussian.from_params(self.encoder(x).float())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (B, latent_dim): the representation to embed."""
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z), (B, *data_shape)."""
        return self.likelihood.mean(self.decoder(z))

    def elbo_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-sample reconstruction term -log p(x|z) (B,) and the KL per latent unit (B, D)."""
        q, _, recon = self._one_sample(x)
        return recon, q.kl_standard()

    def _one_sample(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor, torch.Tensor]:
        """The posterior q(z|x), one reparameterised sample z ~ q(z|x) (B, D) and -log p(x|z) (B,)."""
        q = self.posterior(x)
        z = q.rsample()
        return q, z, -self.likelihood.log_prob(self.decoder(z), x)

    def capacity(self, step: int) -> float:
        """C at training step `step`: C_max * min(1, step / capacity_steps) (Burgess et al. 2018)."""
        c = self.config
        return c.capacity_max * (min(1.0, step / c.capacity_steps) if c.capacity_steps else 1.0)

    def regulariser(self, q: DiagonalGaussian, z: torch.Tensor, kl: torch.Tensor, step: int,
                    cache: dict | None = None) -> Loss:
        """What the loss adds to the reconstruction term: beta * KL, or gamma * |KL - C| for
        objective="capacity". The hook the disentangling variants fill (factor_vae, beta_tc_vae,
        dip_vae), given the batch's posterior q, the sample z (B, D) the reconstruction was decoded
        from, the batch mean of KL(q(z|x) || N(0, I)) and the step. `cache`, a dict when the engine
        asks for one (`capabilities.Adversarial`), is where a variant leaves detached tensors for the
        auxiliary loss of the same step."""
        c = self.config
        if c.objective == "capacity":
            capacity = torch.tensor(self.capacity(step), device=kl.device)
            return Loss(c.gamma * (kl - capacity).abs(), {"capacity": capacity})
        return Loss(c.beta * kl, {})

    def loss(self, x: torch.Tensor, step: int = 0, cache: dict | None = None) -> Loss:
        c = self.config
        if c.objective == "iwae":
            neg_iwae = self.nll_iwae(x, c.iwae_k).mean()
            return Loss(neg_iwae, {"neg_iwae": neg_iwae})
        q, z, recon = self._one_sample(x)
        kl_units = q.kl_standard()
        recon, kl = recon.mean(), kl_units.sum(1).mean()
        regulariser = self.regulariser(q, z, kl, step, cache)
        terms = {"recon": recon, "kl": kl, **regulariser.terms}
        total = recon + regulariser.total
        if c.log_kl_units and not self.training:
            terms.update({f"kl_{i}": v for i, v in enumerate(kl_units.mean(0))})
        return Loss(total, terms)

    def log_weights(self, x: torch.Tensor, k: int, max_decodes: int = 5_000) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): (k, B). The samples are drawn
        max_decodes // B at a time (`eval.nll_batch`; the draws depend on it and on nothing else). On the
        CPU each draw is decoded in blocks of about DECODE_BLOCK numbers of decoder output, so that a
        conv decoder's activations stay in the cache between its layers (the per-row results do not
        depend on the block); other devices decode a whole draw at once."""
        q = self.posterior(x)
        n = len(x)
        per_draw = max(1, max_decodes // n)
        rows = max(1, DECODE_BLOCK // self.decoder_numel) if x.device.type == "cpu" else max_decodes
        samples, examples = max(1, rows // n), min(n, rows)  # a block: samples x all examples, or 1 x some
        out = []
        for start in range(0, k, per_draw):
            z = q.rsample(min(per_draw, k - start))  # (kc, B, D)
            log_px = torch.empty(z.shape[:2], dtype=z.dtype, device=z.device)
            for s in range(0, len(z), samples):
                for b in range(0, n, examples):
                    block = z[s : s + samples, b : b + examples]
                    log_px[s : s + samples, b : b + examples] = self._log_px(block, x[b : b + examples])
            out.append(log_px + standard_normal_log_prob(z) - q.log_prob(z))
        return torch.cat(out)

    @property
    def decoder_numel(self) -> int:
        """Numbers the decoder gives per latent vector."""
        return self.likelihood.params_per_dim * math.prod(self.config.data_shape)

    def _log_px(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) (S, E) of samples z (S, E, D) for the examples x (E, ...)."""
        out = self.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        if isinstance(self.likelihood, Bernoulli):
            # log p(x|z) = sum_d x_d l_d - softplus(l_d) (Bernoulli.log_prob, -BCE with logits l): one
            # pass over the logits for the softplus, where the BCE makes several
            logits = out.flatten(2)
            return (logits * x.flatten(1).to(logits.dtype)).sum(2) - F.softplus(logits).sum(2)
        # x broadcast over the samples as a view: the data is not copied S times
        return self.likelihood.log_prob(out, x.expand(len(z), *x.shape), batch_dims=2)

    def nll_iwae(self, x: torch.Tensor, k: int, max_decodes: int = 5_000) -> torch.Tensor:
        """The k-sample importance-weighted estimate of -log p(x), (B,); k = 1 gives -ELBO."""
        lw = self.log_weights(x, k, max_decodes).float()
        return -(torch.logsumexp(lw, 0) - math.log(k))

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Means of p(x|z) for z ~ N(0, T^2 I): (n, *data_shape). T < 1 draws from the prior's bulk,
        trading variety for typical samples (the reduced temperature of Kingma & Dhariwal 2018, Glow)."""
        check_temperature(temperature)
        return self.decode(temperature * torch.randn(n, self.config.latent_dim, device=self.device))

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

    def traversals(self, x: torch.Tensor, steps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent traversals (as in the figures of Higgins et al. 2017): starting from the posterior mean of x[0],
        each unit in turn is swept over the range its posterior means take on the batch x, the others
        held. Rows are ordered by the unit's mean KL on x, largest first (the informative units on top).
        Returns the decodings (D * steps, *data_shape) and the units in row order (D,)."""
        q = self.posterior(x)
        order = q.kl_standard().mean(0).argsort(descending=True)
        lo, hi = q.mean.min(0).values, q.mean.max(0).values
        t = torch.linspace(0, 1, steps, device=x.device)
        sweep = lo[order, None] + (hi - lo)[order, None] * t  # (D, steps)
        z = q.mean[:1].repeat(len(order) * steps, 1).view(len(order), steps, -1)
        z[torch.arange(len(order)), :, order] = sweep
        return self.decode(z.flatten(0, 1)), order


@dataclass
class BetaVAEConfig(VAEConfig):
    """The VAE's config with the defaults of Burgess et al. (2018, appendix) for 64x64 dSprites."""

    data_shape: tuple[int, ...] = (1, 64, 64)
    backbone: str = choice("conv", "mlp")
    hidden: tuple[int, ...] = (256, 256)
    channels: tuple[int, ...] = (32, 32, 32, 32)
    latent_dim: int = number(10, 1)
    beta: float = number(4.0, 0.0, when="objective=beta")
    log_kl_units: bool = True


@register("beta_vae", "beta-VAE (Higgins 2017) and capacity-annealed VAE (Burgess 2018); disentanglement metrics",
          default_data="dsprites",
          tiny={"data_shape": (1, 16, 16), "hidden": (16,), "channels": (4, 4), "latent_dim": 3,
                "objective": "capacity", "capacity_steps": 10})
class BetaVAE(VAE):
    config_class = BetaVAEConfig

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().visuals(x)
        if x.dim() == 4:
            out["traversals"] = self.traversals(x)[0].clamp(0, 1)  # 8 columns: one row per unit
        return out
