"""beta-TCVAE (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

Their eq. 2 splits the ELBO's KL term, averaged over the data (n the index of an example, q(z) the
aggregate posterior (1/N) sum_n q(z|n), p(z) = N(0, I)):

  E_p(n)[KL(q(z|n) || p(z))] = KL(q(z, n) || q(z) p(n))              index-code mutual information
                              + KL(q(z) || prod_j q(z_j))             total correlation
                              + sum_j KL(q(z_j) || p(z_j))            dimension-wise KL

and beta-TCVAE minimises -E_q[log p(x|z)] + alpha * MI + beta * TC + gamma * DWKL (sec. 4; they set
alpha = gamma = 1 and vary beta, and disentangle dSprites at beta = 6, the defaults here).

All three are expectations over z ~ q(z|n) of differences of log q(z|n), log q(z), sum_j log q(z_j) and
log p(z), so each is estimated on the batch's samples z_i ~ q(z|x_i) (one per example) with log q(z)
and log q(z_j) estimated from the batch (their sec. 4.1 and appendix C), in the weighted form
log q(z_i) ~ log sum_j w_ij q(z_i | x_j):

- `mws`, minibatch weighted sampling (their sec. 4.1, appendix C.1): w_ij = 1 / (N M), M the batch size.
  These weights sum to 1/N, not 1, so its log q(z) and log q(z_j) run about log N low and the logged
  mi, tc and dwkl carry offsets of about +log N, +(D - 1) log N and -D log N (D latent units; 13.5,
  122 and -135 nats on dSprites with D = 10): constants, which leave the gradients as they are.
- `mss`, minibatch stratified sampling (appendix C.2): x_i's own term weighs 1/N and the other M - 1
  share (N - 1)/N. Their estimator weighs M - 2 of the others 1/(M - 1) and one of them, any,
  (N - M + 1)/(N (M - 1)); this one averages over that arbitrary choice, giving each other example
  (N - 1)/(N (M - 1)): the same expectation, and log q(z) itself when the batch is the whole data.

The three estimates then add up to log q(z_i|x_i) - log p(z_i) on every sample, the one-sample estimate
of the KL term whatever the estimator, so their sum is the ELBO's KL in expectation. N is the size of
the training set: `model.dataset_size`, set from the train split when a run is made (`fit_to_data`).
Logged: mi, tc and dwkl (nats, batch means) besides recon and the analytic kl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import choice, number
from ..distributions import LOG_2PI, DiagonalGaussian, standard_normal_log_prob
from ..errors import AezooError
from ..registry import register
from .base import Loss
from .vae import BetaVAE, BetaVAEConfig


def pairwise_log_density(q: DiagonalGaussian, z: torch.Tensor) -> torch.Tensor:
    """log q(z_i,d | x_j) for every sample i, example j and dimension d: (B, B, D)."""
    mean, logvar = q.mean.unsqueeze(0), q.logvar.unsqueeze(0)
    return -0.5 * (LOG_2PI + logvar + (z.unsqueeze(1) - mean) ** 2 * torch.exp(-logvar))


def log_weights(batch: int, dataset_size: int, estimator: str, device=None, dtype=None) -> torch.Tensor:
    """log w_ij (B, B) of the estimate log q(z_i) ~ log sum_j w_ij q(z_i | x_j) (module docstring)."""
    n, m = dataset_size, batch
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), device=device, dtype=dtype)
    others = math.log((n - 1) / (n * (m - 1))) if m > 1 and n > 1 else -math.inf
    w = torch.full((m, m), others, device=device, dtype=dtype)
    w.fill_diagonal_(-math.log(n))
    return w


def kl_decomposition(q: DiagonalGaussian, z: torch.Tensor, dataset_size: int,
                     estimator: str = "mws") -> dict[str, torch.Tensor]:
    """The batch estimates (scalars) of the index-code MI, the total correlation and the dimension-wise
    KL of Chen et al.'s eq. 2, for samples z (B, D), z_i ~ q(z|x_i)."""
    log_q = pairwise_log_density(q, z)  # (B, B, D)
    log_w = log_weights(len(z), dataset_size, estimator, z.device, z.dtype)
    log_qz_x = log_q.diagonal(dim1=0, dim2=1).sum(0)  # log q(z_i | x_i), (B,)
    log_qz = torch.logsumexp(log_q.sum(2) + log_w, 1)  # log q(z_i)
    log_prod_qzj = torch.logsumexp(log_q + log_w.unsqueeze(2), 1).sum(1)  # sum_d log q(z_i,d)
    log_pz = standard_normal_log_prob(z)
    return {"mi": (log_qz_x - log_qz).mean(), "tc": (log_qz - log_prod_qzj).mean(),
            "dwkl": (log_prod_qzj - log_pz).mean()}


@dataclass
class BetaTCVAEConfig(BetaVAEConfig):
    # the KL's weight is replaced by these three (the paper's names): capacity and iwae do not apply
    objective: str = choice("beta")
    alpha: float = number(1.0, 0.0)  # weight of the index-code mutual information
    beta: float = number(6.0, 0.0)  # weight of the total correlation
    gamma: float = number(1.0, 0.0)  # weight of the dimension-wise KL
    estimator: str = choice("mws", "mss")  # of log q(z): minibatch weighted or stratified sampling
    dataset_size: int = number(0, 0)  # N, the training set's size; 0: set from the train split

    def fit_to_data(self, shape: tuple[int, ...], size: int, values: str) -> None:
        super().fit_to_data(shape, size, values)
        self.dataset_size = self.dataset_size or size  # after data.limit and data.train_split


@register("beta_tc_vae", "beta-TCVAE (Chen 2018): the KL split into MI, total correlation and dimension-wise KL",
          default_data="dsprites",
          tiny={"data_shape": (1, 16, 16), "hidden": (16,), "channels": (4, 4), "latent_dim": 3,
                "dataset_size": 1000})
class BetaTCVAE(BetaVAE):
    config_class = BetaTCVAEConfig

    def regulariser(self, q, z, kl, step, cache=None) -> Loss:
        c = self.config
        if not c.dataset_size:
            raise AezooError("beta_tc_vae needs model.dataset_size, the training set's size N: the engine sets "
                             "it when it makes a run; set it when building the model yourself")
        parts = kl_decomposition(q, z, c.dataset_size, c.estimator)
        return Loss(c.alpha * parts["mi"] + c.beta * parts["tc"] + c.gamma * parts["dwkl"], parts)
