"""Distributions: the diagonal Gaussian posterior and the decoders' likelihoods.

Reduction convention (everywhere in aezoo): log-densities and losses are summed over data and latent
dimensions to one value per example, shape (B,), and only then averaged over the batch. Numbers are
in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import AezooError, unknown_name

LOG_2PI = math.log(2 * math.pi)


def _sum_per_example(t: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    return t.flatten(batch_dims).sum(batch_dims)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over the last dimension; tensors of shape (..., D)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean, self.logvar = mean, logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, n: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reparameterised sample mean + std * eps (Kingma & Welling 2014, eq. 10); (n, ..., D) if n.
        `temperature` scales the noise (sampling from the bulk of q for T < 1)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * (eps if temperature == 1.0 else temperature * eps)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, var) summed over the last dimension; z broadcasts against mean."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean) ** 2 * torch.exp(-self.logvar)).sum(-1)

    def kl_standard(self) -> torch.Tensor:
        """KL(q || N(0, I)) per latent unit, (..., D): 0.5 (mu^2 + var - 1 - log var) (Kingma 2014, app. B)."""
        return 0.5 * (self.mean**2 + torch.exp(self.logvar) - 1.0 - self.logvar)

    def kl(self, other: DiagonalGaussian) -> torch.Tensor:
        """KL(self || other) per unit, (..., D), both diagonal Gaussians."""
        return 0.5 * (
            other.logvar - self.logvar
            + (torch.exp(self.logvar) + (self.mean - other.mean) ** 2) * torch.exp(-other.logvar)
            - 1.0
        )

    @staticmethod
    def from_params(params: torch.Tensor, min_logvar: float = -30.0) -> DiagonalGaussian:
        """Split (..., 2D) into mean and log-variance, in float32 even under autocast (the KL and
        log-densities need it); the clamp only guards exp() against underflow."""
        mean, logvar = params.float().chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar.clamp(min=min_logvar))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


# ---------------------------------------------------------------------------------------------------
# Likelihoods p(x | decoder output). Each has `params_per_dim`, `log_prob(out, x) -> (B,)`, `mean(out)`.
# `log_prob(out, x, batch_dims=2)` takes (K, B, ...) decodings of K samples each and returns (K, B); x
# may then be a broadcast view, x.expand(K, B, ...), so the data is not copied K times (the IWAE bound).


class Bernoulli:
    """Pixels in [0, 1] as Bernoulli probabilities; `out` are logits. -log p = BCE with logits."""

    params_per_dim = 1

    def log_prob(self, out: torch.Tensor, x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        return -_sum_per_example(F.binary_cross_entropy_with_logits(out, x, reduction="none"), batch_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)



class Gaussian:
    """N(x; out, sigma^2 I) with a fixed sigma."""

    params_per_dim = 1

    def __init__(self, sigma: float):
        self.sigma = sigma

    def log_prob(self, out: torch.Tensor, x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        sq = ((x - out) / self.sigma) ** 2
        return -0.5 * _sum_per_example(sq + LOG_2PI + 2 * math.log(self.sigma), batch_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out



class LearnedGaussian:
    """N(x; mu, diag(sigma^2)) with mu and log sigma^2 both from the decoder (channels split in two).

    The log-variance is kept in [-7, 7] by a smooth tanh bound: unbounded decoder variances let the
    likelihood diverge on pixels that are constant in the data (MNIST borders)."""

    params_per_dim = 2
    bound = 7.0

    def _split(self, out: torch.Tensor, dim: int = 1):
        mu, logvar = out.chunk(2, dim=dim)
        return mu, self.bound * torch.tanh(logvar / self.bound)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        mu, logvar = self._split(out, batch_dims)
        return -0.5 * _sum_per_example(LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar), batch_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self._split(out)[0]



class DiscretizedLogistic:
    """8-bit pixels: a logistic density integrated over each of the 256 bins of width 1/255 on [0, 1],
    with the end bins taking the tails (Salimans et al. 2017, PixelCNN++, eq. 2; one component).
    `out` splits into the mean and log-scale channels; x must be multiples of 1/255."""

    params_per_dim = 2
    half_bin = 0.5 / 255.0

    def _split(self, out: torch.Tensor, dim: int = 1):
        mu, log_s = out.chunk(2, dim=dim)
        return mu, log_s.clamp(min=-7.0)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        mu, log_s = self._split(out, batch_dims)
        inv_s = torch.exp(-log_s)
        upper = (x - mu + self.half_bin) * inv_s
        lower = (x - mu - self.half_bin) * inv_s
        log_cdf_upper = F.logsigmoid(upper)  # log sigma(u), for the first bin
        log_sf_lower = F.logsigmoid(-lower)  # log (1 - sigma(l)), for the last bin
        # log(sigma(u) - sigma(l)) computed stably as log sigma(u) + log(1 - exp(log sigma(l) - log sigma(u)))
        mid = torch.sigmoid(upper) - torch.sigmoid(lower)
        log_mid = torch.where(
            mid > 1e-5,
            torch.log(mid.clamp(min=1e-12)),
            # density times bin width where the difference underflows
            (x - mu) * inv_s - log_s - 2 * F.softplus((x - mu) * inv_s) + math.log(2 * self.half_bin),
        )
        logp = torch.where(x < self.half_bin, log_cdf_upper, torch.where(x > 1 - self.half_bin, log_sf_lower, log_mid))
        return _sum_per_example(logp, batch_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self._split(out)[0].clamp(0, 1)



LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "logistic")


def default_likelihood(values: str, density: bool) -> str:
    """The likelihood that fits data whose values are `values` (`data.value_kind`): Bernoulli for data
    in [0, 1] (for a density, `density=True`, only for binary data: on grey levels it is not normalised),
    the discretised logistic for 8-bit data, a Gaussian otherwise (with a learned variance for a density;
    for a plain autoencoder, the squared error)."""
    if values == "binary" or (not density and values in ("8bit", "unit")):
        return "bernoulli"
    if values == "8bit":
        return "logistic"
    return "gaussian_learned" if density else "gaussian"


def check_likelihood(name: str, values: str, key: str = "model.likelihood") -> None:
    """Refuses a likelihood that cannot be right for data whose values are `values`."""
    if name == "bernoulli" and values == "real":
        raise AezooError(f"{key}=bernoulli needs data in [0, 1]; this data has values outside it "
                         f"(use {key}=gaussian, or scale the data)")
    if name == "logistic" and values != "8bit":
        raise AezooError(f"{key}=logistic is a probability of 8-bit values (256 levels); this data is {values} "
                         f"(use {key}=bernoulli for binary data, gaussian otherwise)")


def make_likelihood(name: str, sigma: float = 1.0):
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(sigma)
    if name == "gaussian_learned":
        return LearnedGaussian()
    if name == "logistic":
        return DiscretizedLogistic()
    raise unknown_name("likelihood", name, LIKELIHOODS)
