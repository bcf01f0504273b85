"""Vector quantisation with a learned codebook (van den Oord et al. 2017, "Neural Discrete
Representation Learning"; Weng 2018, section "VQ-VAE and VQ-VAE-2").

The codebook e is K x D. An encoder output z_e (one D-vector per latent position) is replaced by its
nearest code,
    z_q = e_k,  k = argmin_i ||z_e - e_i||_2                               (survey, Quantize(E(x)))
found for all positions at once from ||z||^2 - 2 z e^T + ||e||^2: one matrix product. The argmin
has no gradient, so the decoder's gradient is copied to the encoder (straight-through):
z_q = z_e + sg[e_k - z_e]. Two terms train the codebook and keep the encoder close to it:
    codebook   ||sg[z_e] - e_k||^2        commitment   ||z_e - sg[e_k]||^2  (weighted by beta)
each summed over latent positions and dimensions per example, then averaged over the batch (the
aezoo reduction, see `distributions`).

With `codebook_update="ema"` the codebook is not a parameter: the codebook term carries no
gradient and the codes follow exponential moving averages instead (van den Oord 2017, appendix A.1;
the survey's equations), for the n_i^(t) encoder outputs z_ij assigned to code i in batch t:
    N_i^(t) = gamma N_i^(t-1) + (1 - gamma) n_i^(t)
    m_i^(t) = gamma m_i^(t-1) + (1 - gamma) sum_j z_ij^(t)
    e_i^(t) = m_i^(t) / N~_i^(t),  N~_i = (N_i + eps) / (n + K eps) * n,  n = sum_i N_i
where N~ is the Laplace-smoothed count (it keeps e_i finite for a code no vector chose; the stored
N_i are the survey's, unsmoothed). N_i start at 1 and m_i at the initial codes, so e = m / N from
the first step. Under torch.distributed, n_i and sum_j z_ij are summed over all processes before
the update, so every process holds the same codebook.

Dead codes: a code that no encoder output chose for `restart_after` training steps is moved onto an
encoder output drawn at random from the current batch (the most recent ones), as in Dhariwal et al.
(2020, Jukebox, sec. 3.1). Optional k-means (`kmeans_iters`) places the initial codes on the first
training batch's encoder outputs (under torchrun, process 0's share of it: the engine then copies
process 0's state to the others). Distances, EMA statistics and losses are computed in float32 even
under mixed precision.

One `VectorQuantizer` is one codebook; a model with several levels (VQ-VAE-2) holds one per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import choice, number


@dataclass
class QuantizerConfig:
    """The codebook's settings; a VQ model's config inherits them (one set for all its codebooks)."""

    codebook_size: int = number(512, 2)  # K
    code_dim: int = number(64, 1)  # D
    beta: float = number(0.25, 0.0)  # weight of the commitment term
    codebook_update: str = choice("ema", "gradient")
    ema_decay: float = number(0.99, 0.0, 1.0, hi_open=True)  # gamma
    ema_epsilon: float = number(1e-5, 0.0, lo_open=True)  # Laplace smoothing of the counts N_i
    restart_after: int = number(50, 0)  # restart a code unused for this many training steps (0: never)
    kmeans_iters: int = number(0, 0)  # k-means iterations on the first batch's encoder outputs (0: off)


@dataclass
class Quantized:
    """What a quantiser returns for encoder outputs z_e of shape (B, D, *S)."""

    z_q: torch.Tensor  # (B, D, *S) float32: the codes, with the straight-through gradient to z_e
    codes: torch.Tensor  # (B, *S) int64: the chosen code at each position
    codebook_loss: torch.Tensor  # ||sg[z_e] - e_k||^2, batch mean of per-example sums
    commitment_loss: torch.Tensor  # ||z_e - sg[e_k]||^2, likewise
    loss: torch.Tensor  # codebook_loss + beta * commitment_loss: what the model adds to its own loss
    counts: torch.Tensor  # (K,) float32: how often each code was chosen (over all processes when training)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_i ||z_n - e_i||^2 for z (N, D) and codebook (K, D), as one matrix product: (N,) int64."""
    distances = torch.addmm((z * z).sum(1, keepdim=True) + (codebook * codebook).sum(1), z, codebook.t(), alpha=-2.0)
    return distances.argmin(1)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code frequencies `counts` (K,): K when all codes are used equally, 1 for one."""
    p = counts.float() / counts.sum().clamp(min=1)
    return torch.exp(-torch.xlogy(p, p).sum())


def usage(counts: torch.Tensor) -> torch.Tensor:
    """The fraction of codes chosen at least once."""
    return (counts > 0).float().mean()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """One K x D codebook: nearest-neighbour quantisation, its losses, and its learning (module docstring)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        k, d = cfg.codebook_size, cfg.code_dim
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        self.ema = cfg.codebook_update == "ema"
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(k))  # N_i
            self.register_buffer("ema_sum", init.clone())  # m_i
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))  # training steps since last chosen

    def forward(self, z_e: torch.Tensor) -> Quantized:
        """Quantise z_e (B, D, *S); in training mode, then update the codebook (EMA) and restart dead codes."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float().movedim(1, -1)  # (B, *S, D)
            flat = z.reshape(-1, z.shape[-1])
            with torch.no_grad():
                codes = nearest_code(flat, self.codebook)
                counts = torch.bincount(codes, minlength=len(self.codebook)).float()
            q = F.embedding(codes, self.codebook)  # (N, D): the codebook's gradient flows only through here
            batch = z_e.shape[0]
            codebook_loss = (flat.detach() - q).pow(2).sum() / batch
            commitment_loss = (flat - q.detach()).pow(2).sum() / batch
            z_q = (flat + (q - flat).detach()).view(z.shape).movedim(-1, 1)
            if self.training:
                counts = self._update(flat.detach(), codes, counts)
        return Quantized(z_q, codes.view(z.shape[:-1]), codebook_loss, commitment_loss,
                         codebook_loss + self.cfg.beta * commitment_loss, counts)

    @torch.no_grad()
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """The nearest code's index at each position of z_e (B, D, *S): (B, *S) int64; nothing is updated."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float().movedim(1, -1)
            return nearest_code(z.reshape(-1, z.shape[-1]), self.codebook).view(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The code vectors of indices (B, *S): (B, D, *S) float32."""
        return F.embedding(codes, self.codebook).movedim(-1, 1)

    # --- learning the codebook ------------------------------------------------------------------
    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One training step's EMA update and dead-code restart; returns the (global) counts."""
        sums = torch.zeros_like(self.codebook).index_add_(0, codes, flat) if self.ema else None
        if _distributed():
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        if self.ema:
            self.ema_step(counts, sums)
        if self.cfg.restart_after:
            self.restart_dead(flat, counts)
        return counts

    @torch.no_grad()
    def ema_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """The survey's EMA step from this batch's n_i (K,) and sum_j z_ij (K, D) (module docstring)."""
        gamma, eps, k = self.cfg.ema_decay, self.cfg.ema_epsilon, len(self.codebook)
        self.ema_count.mul_(gamma).add_(counts, alpha=1 - gamma)
        self.ema_sum.mul_(gamma).add_(sums, alpha=1 - gamma)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + eps) / (n + k * eps) * n
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        """Codes unused for `restart_after` steps move onto random encoder outputs of this batch.

        Written without a host sync (no data-dependent branch): a candidate is drawn for every code
        and only the dead ones take it. Under torch.distributed process 0's candidates are used."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.cfg.restart_after).unsqueeze(1)  # (K, 1)
        candidates = flat[torch.randint(len(flat), (len(self.codebook),), device=flat.device)]
        if _distributed():
            dist.broadcast(candidates, src=0)
        self.codebook.copy_(torch.where(dead, candidates, self.codebook))
        if self.ema:  # restarted as if it had been chosen once, by that vector
            self.ema_sum.copy_(torch.where(dead, candidates, self.ema_sum))
            self.ema_count.copy_(torch.where(dead.squeeze(1), torch.ones_like(self.ema_count), self.ema_count))
        self.unused_steps.masked_fill_(dead.squeeze(1), 0)

    @torch.no_grad()
    def kmeans_init(self, z_e: torch.Tensor, iters: int) -> None:
        """Lloyd's k-means on the encoder outputs z_e (B, D, *S), seeded by k-means++ (Arthur &
        Vassilvitskii 2007); a cluster left empty keeps its centre. The codes start at the centres
        (and the EMA statistics at N_i = 1, m_i = e_i)."""
        flat = z_e.detach().float().movedim(1, -1).reshape(-1, z_e.shape[1])
        k = len(self.codebook)
        centres = flat[torch.randint(len(flat), (k,), device=flat.device)].clone()
        closest = (flat - centres[0]).pow(2).sum(1)  # squared distance to the nearest centre so far
        for i in range(1, k):  # each next centre drawn with probability proportional to that distance
            if closest.sum() <= 0:  # fewer distinct outputs than codes: keep the random draws
                break
            centres[i] = flat[torch.multinomial(closest, 1)]
            closest = torch.minimum(closest, (flat - centres[i]).pow(2).sum(1))
        for _ in range(iters):
            codes = nearest_code(flat, centres)
            counts = torch.bincount(codes, minlength=k).float().unsqueeze(1)
            sums = torch.zeros_like(centres).index_add_(0, codes, flat)
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        self.codebook.copy_(centres)
        if self.ema:
            self.ema_sum.copy_(centres)
            self.ema_count.fill_(1.0)
