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

The quantiser protocol. `Quantizer` is what the VQ models hold, one per spatial level, made by
`make_quantizer(cfg)` from `cfg.quantizer`:
    forward(z_e, step) -> Quantized     quantise (and, in training, learn); `step` is the training step
    assign(z_e) -> codes                the codes alone, nothing updated
    lookup(codes) -> z_q                the code vectors of codes (the decoder's input)
    codebook_size                       K: every code map holds indices in 0..K-1
    depth                               code maps per position (1, or rvq_depth for residual VQ)
    code_maps(codes) / join_maps(maps)  codes <-> a list of `depth` maps (B, *S), each a code level
    expected_code()                     the mean code vector (D,), VQ-VAE-2's stand-in for the bottom map
    kmeans_init(z_e, iters)             only where there are codebook vectors to place (vq, rvq)
    terms(q)                            the quantiser's logged terms
A code level is one integer map (B, *S) of K-way indices, so the priors and bits/dim are the same for
every quantiser. Four implement it:

- `vq`: `VectorQuantizer`, above.
- `fsq`: `FiniteScalarQuantizer` (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
  Simple", sec. 3 and appendix A). Each of the D = len(fsq_levels) dimensions is bounded to L_d levels,
      f(z) = tanh(z + s) * h - o,  h = (L - 1)(1 - 1e-3) / 2,  o = 1/2 for even L (0 for odd),  s = tan(o / h)
  (the paper's listing; atanh(o / h), which some implementations use to put f(0) at 0 exactly, is
  undefined for L = 2, where o > h; both give the same L integers), rounded to the nearest integer with
  a straight-through gradient
  (round(f) = f + sg[round(f) - f]: d round / d f = 1) and divided by floor(L / 2), so every value lies
  on the grid {(i - floor(L/2)) / floor(L/2): i = 0..L-1}. The codebook is implicit, K = prod_d L_d
  (their recommended levels: (8, 6, 5) for K ~ 2^8, (8, 5, 5, 5) for 2^10, (7, 5, 5, 5, 5) for 2^12,
  (8, 8, 8, 6, 5) for 2^14, (8, 8, 8, 5, 5, 5) for 2^16); the code index is the mixed-radix number of the
  digits i_d, index = sum_d i_d prod_{d' < d} L_d' (first dimension least significant). The encoder
  projects to D = len(fsq_levels) (code_dim must equal it); there is no codebook or commitment loss
  (both logged as 0), nothing to learn in the quantiser, so codebook_size, beta, codebook_update,
  ema_*, restart_after are ignored and kmeans_iters is refused.
- `rvq`: `ResidualVectorQuantizer` (Zeghidour et al. 2021, SoundStream, algorithm 1): rvq_depth
  `VectorQuantizer`s of K codes each, the i-th quantising the residual r_i = z_e - sum_{j<i} e_j left
  by the ones before it; z_q = sum_i e_i with the straight-through gradient z_q = z_e + sg[sum_i e_i -
  z_e]. Each stage has its own codebook and commitment terms on its residual (commitment pulls z_e
  towards the partial sums; logged summed over the stages), its own EMA, dead-code restart and k-means
  (stage i on the residuals the stages before it leave). With `rvq_dropout`, a training step uses only
  the first n_q ~ U{1..depth} stages (SoundStream's quantiser dropout, sec. 3.3, for one model at
  several bitrates): n_q is drawn from a generator seeded by the step, so every process of a
  distributed run (whose EMA all-reduces must match) and a resumed run draw the same; the stages
  after n_q are neither run nor updated, their codes are -1 and their counts 0. In evaluation every
  stage is used. For the prior each depth is its own code level (`code_maps`: depth maps of K-way
  codes, depth 1 first), so the prior factorises as p(c_1) p(c_2 | c_1) ... over them with the
  conditioning on earlier levels it already has, and bits/dim counts every stage's codes:
  rvq_depth * log2 K bits per position.
- `gumbel`: `GumbelQuantizer` (Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax";
  as in DALL-E's dVAE, Ramesh et al. 2021, sec. 2.1). A 1x1 projection (a linear map of the D
  channels) gives logits l over K codes at each position; in training z_q = y E with E the K x D
  codebook (a parameter) and y = softmax((l + g) / tau) the relaxed one-hot, g ~ Gumbel(0, 1); in
  evaluation z_q = E[argmax l]. The code is argmax l in both. tau follows a schedule of the training
  step, tau_start -> tau_end over gumbel_anneal_steps, exponential (tau_start (tau_end/tau_start)^t)
  or linear, t = min(step / anneal_steps, 1), then stays at tau_end. The loss adds gumbel_kl_weight *
  KL(q || uniform) in its per-position form, the ELBO's KL for a uniform prior over codes:
      kl = sum_positions (log K - H(q_pos)),  q_pos = softmax(l_pos),
  a batch mean of per-example sums like every aezoo term (not the aggregate form log K - H(mean q),
  which only asks the codes to be used evenly), logged as `kl` beside `tau`; codebook and commitment
  are logged as 0. beta, codebook_update, ema_*, restart_after are ignored (the codebook learns by
  gradient, and a restarted vector would not be chosen by the logits) and kmeans_iters is refused.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import choice, number, used_when
from .errors import AezooError

# When a quantiser's settings are used (`config.used_when`); the rest are ignored.
_EMA = "quantizer=vq|rvq; codebook_update=ema"
_GUMBEL = "quantizer=gumbel"


@dataclass
class QuantizerConfig:
    """The quantiser's settings; a VQ model's config inherits them (one set for all its quantisers).
    Settings a quantiser has no use for are ignored (each says when it is used), those that cannot work
    refused (`check_quantizer`)."""

    # how encoder outputs become codes (aezoo.quantize): vq, the nearest of K learned codes; fsq, each dimension
    # rounded to its fsq_levels; rvq, rvq_depth codebooks on successive residuals; gumbel, Gumbel-softmax over K codes
    quantizer: str = choice("vq", "fsq", "rvq", "gumbel")
    codebook_size: int = number(512, 2, when="quantizer!=fsq")  # K (each stage of rvq); fsq's is prod(fsq_levels)
    code_dim: int = number(64, 1)  # D; fsq: must equal len(fsq_levels)
    beta: float = number(0.25, 0.0, when="quantizer=vq|rvq")  # weight of the commitment term
    # how the codebook learns: moving averages of the encoder outputs, or gradient (gumbel: always gradient)
    codebook_update: str = choice("ema", "gradient", when="quantizer=vq|rvq")
    ema_decay: float = number(0.99, 0.0, 1.0, hi_open=True, when=_EMA)  # gamma of the codebook's moving averages
    ema_epsilon: float = number(1e-5, 0.0, lo_open=True, when=_EMA)  # Laplace smoothing of the counts N_i
    restart_after: int = number(50, 0, when="quantizer=vq|rvq")  # restart a code unused this many steps (0: never)
    kmeans_iters: int = number(0, 0, when="quantizer=vq|rvq")  # k-means iterations on the first batch (0: off)
    # levels L_d of each dimension, K = prod L_d (the default: 1000)
    fsq_levels: tuple[int, ...] = used_when((8, 5, 5, 5), "quantizer=fsq")
    rvq_depth: int = number(2, 1, when="quantizer=rvq")  # codebooks on successive residuals (levels per spatial level)
    rvq_dropout: bool = used_when(False, "quantizer=rvq")  # train each step with the first n_q ~ U{1..depth} only
    gumbel_tau_start: float = number(1.0, 0.0, lo_open=True, when=_GUMBEL)  # temperature at step 0
    gumbel_tau_end: float = number(1 / 16, 0.0, lo_open=True, when=_GUMBEL)  # after the annealing (DALL-E's)
    gumbel_anneal_steps: int = number(5000, 0, when=_GUMBEL)  # steps from tau_start to tau_end (0: tau_end throughout)
    gumbel_anneal: str = choice("exponential", "linear", when=_GUMBEL)  # the temperature's decay between the two
    gumbel_kl_weight: float = number(1.0, 0.0, when=_GUMBEL)  # weight of KL(q(code | x) || uniform), per position

    def check_quantizer(self) -> None:
        """Refuses settings the chosen quantiser cannot honour (AezooError); the ones it does not use are
        ignored (their `when` says which apply where)."""
        q = self.quantizer
        if q == "fsq":
            if not self.fsq_levels or min(self.fsq_levels) < 2:
                raise AezooError(f"model.fsq_levels must be one or more levels of at least 2, got {self.fsq_levels}")
            if self.code_dim != len(self.fsq_levels):
                raise AezooError(f"model.quantizer=fsq rounds each of the code_dim={self.code_dim} dimensions to its "
                                 f"own levels: fsq_levels={tuple(self.fsq_levels)} needs "
                                 f"model.code_dim={len(self.fsq_levels)}")
        if q in ("fsq", "gumbel") and self.kmeans_iters:
            raise AezooError(f"model.kmeans_iters places codebook vectors on encoder outputs; model.quantizer={q} "
                             "has no such codebook (fsq: a fixed grid; gumbel: codes chosen by logits): "
                             "set kmeans_iters=0")
        if self.rvq_dropout and q != "rvq":
            raise AezooError(f"model.rvq_dropout drops residual codebooks: it needs model.quantizer=rvq, not {q}")


@dataclass
class Quantized:
    """What a quantiser returns for encoder outputs z_e of shape (B, D, *S)."""

    z_q: torch.Tensor  # (B, D, *S) float32: the codes, with the straight-through gradient to z_e
    codes: torch.Tensor  # (B, *S) int64: the chosen code at each position ((B, depth, *S) for rvq)
    codebook_loss: torch.Tensor  # ||sg[z_e] - e_k||^2, batch mean of per-example sums
    commitment_loss: torch.Tensor  # ||z_e - sg[e_k]||^2, likewise
    loss: torch.Tensor  # codebook_loss + beta * commitment_loss: what the model adds to its own loss
    counts: torch.Tensor  # (K,) float32 ((depth, K) for rvq): how often each code was chosen (over all
    # processes when training vq or rvq)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # further terms to log (gumbel: kl, tau)


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


class Quantizer(nn.Module, metaclass=abc.ABCMeta):
    """The quantiser protocol (module docstring): z_e (B, D, *S) -> codes and code vectors."""

    depth = 1  # code maps per position
    skips_parameters = False  # some training steps leave parameters without a gradient (DDP must look for them)

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """K: the codes of every code map lie in 0..K-1."""

    @abc.abstractmethod
    def forward(self, z_e: torch.Tensor, step: int = 0) -> Quantized:
        """Quantise z_e (B, D, *S) at training step `step`; in training mode, learn from it."""

    @abc.abstractmethod
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """The codes of z_e as evaluation chooses them, (B, *S) int64 ((B, depth, *S) for depth > 1);
        nothing is updated."""

    @abc.abstractmethod
    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The code vectors z_q (B, D, *S) float32 of codes as `assign` returns them."""

    @abc.abstractmethod
    def expected_code(self) -> torch.Tensor:
        """The mean code vector (D,) (under the code frequencies where the quantiser keeps them)."""

    def kmeans_init(self, z_e: torch.Tensor, iters: int) -> None:
        raise AezooError(f"{type(self).__name__} has no codebook vectors for k-means to place")

    def code_maps(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """`depth` code maps (B, *S) of K-way indices, each a code level for the prior, first first."""
        return [codes]

    def join_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of `code_maps`: the codes `lookup` takes."""
        if len(maps) != self.depth:
            raise AezooError(f"this quantiser makes {self.depth} code map(s) per level, got {len(maps)}")
        return maps[0]

    def level_names(self, name: str) -> list[str]:
        """The names of the code levels of one spatial level called `name`."""
        return [name]

    def terms(self, q: Quantized) -> dict[str, torch.Tensor]:
        """What the model logs of the quantiser's output: codebook, commitment, perplexity and usage of
        the codes (per depth, `_depthI`, for several), and the quantiser's own terms."""
        out = {"codebook": q.codebook_loss, "commitment": q.commitment_loss}
        counts = q.counts.view(-1, q.counts.shape[-1])
        for i, c in enumerate(counts):
            suffix = "" if len(counts) == 1 else f"_depth{i + 1}"
            out[f"perplexity{suffix}"], out[f"usage{suffix}"] = perplexity(c), usage(c)
        return {**out, **q.terms}


class VectorQuantizer(Quantizer):
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

    @property
    def codebook_size(self) -> int:
        return len(self.codebook)

    def forward(self, z_e: torch.Tensor, step: int = 0) -> Quantized:
        """Quantise z_e (B, D, *S); in training mode, then update the codebook (EMA) and restart dead codes."""
        return self.quantize(z_e)[0]

    def quantize(self, z_e: torch.Tensor) -> tuple[Quantized, torch.Tensor]:
        """`forward`'s output and the chosen code vectors e_k (B, D, *S) as they were before the update."""
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
        out = Quantized(z_q, codes.view(z.shape[:-1]), codebook_loss, commitment_loss,
                        codebook_loss + self.cfg.beta * commitment_loss, counts)
        return out, q.detach().view(z.shape).movedim(-1, 1)

    @torch.no_grad()
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """The nearest code's index at each position of z_e (B, D, *S): (B, *S) int64; nothing is updated."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float().movedim(1, -1)
            return nearest_code(z.reshape(-1, z.shape[-1]), self.codebook).view(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The code vectors of indices (B, *S): (B, D, *S) float32."""
        return F.embedding(codes, self.codebook).movedim(-1, 1)

    def expected_code(self) -> torch.Tensor:
        """The codes' mean weighted by the EMA counts N_i (uniform for a codebook learned by gradient)."""
        weights = self.ema_count if self.ema else torch.ones_like(self.codebook[:, 0])
        return (weights[:, None] * self.codebook).sum(0) / weights.sum()

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


# --- finite scalar quantisation ---------------------------------------------------------------------
def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in value, the identity in gradient: x + sg[round(x) - x]."""
    return x + (x.round() - x).detach()


class FiniteScalarQuantizer(Quantizer):
    """Each dimension bounded to its levels and rounded; an implicit grid of prod L_d codes (module docstring)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        levels = torch.tensor(cfg.fsq_levels, dtype=torch.long)
        half_l = (levels - 1).double() * (1 - 1e-3) / 2
        offset = (levels % 2 == 0).double() * 0.5
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        # derived from the config, not weights: kept out of the state dict
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)  # the mixed radix: prod_{d' < d} L_d'
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", torch.tan(offset / half_l).float(), persistent=False)
        self.register_buffer("half_width", (levels // 2).float(), persistent=False)  # floor(L / 2)
        self._k = int(levels.prod())

    @property
    def codebook_size(self) -> int:
        return self._k

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """f(z) = tanh(z + s) h - o over the last axis (D): values whose rounding gives L integers
        -floor(L/2) .. L - 1 - floor(L/2)."""
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def _quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_q (B, *S, D) on the grid with the straight-through gradient, codes (B, *S))."""
        with torch.autocast(z_e.device.type, enabled=False):
            b = self.bound(z_e.float().movedim(1, -1))
            rounded = round_ste(b)
            digits = (rounded.detach() + self.half_width).long()  # 0..L-1
            return rounded / self.half_width, (digits * self.basis).sum(-1)

    def forward(self, z_e: torch.Tensor, step: int = 0) -> Quantized:
        z_q, codes = self._quantize(z_e)
        counts = torch.bincount(codes.flatten(), minlength=self._k).float()
        zero = z_q.new_zeros(())
        return Quantized(z_q.movedim(-1, 1), codes, zero, zero, zero, counts)

    @torch.no_grad()
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        return self._quantize(z_e)[1]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The grid point of each index: digits i_d = (index // prod_{d'<d} L_d') mod L_d, values
        (i_d - floor(L/2)) / floor(L/2)."""
        digits = codes.unsqueeze(-1).div(self.basis, rounding_mode="floor") % self.levels
        return ((digits - self.half_width) / self.half_width).movedim(-1, 1)

    def expected_code(self) -> torch.Tensor:
        """The mean of the grid, every code equally likely: ((L - 1) / 2 - floor(L/2)) / floor(L/2) per dimension."""
        return ((self.levels - 1) / 2 - self.half_width) / self.half_width


# --- residual vector quantisation ---------------------------------------------------------------------
class ResidualVectorQuantizer(Quantizer):
    """`rvq_depth` `VectorQuantizer`s on successive residuals; z_q is the sum of their codes (module docstring)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.stages = nn.ModuleList(VectorQuantizer(cfg) for _ in range(cfg.rvq_depth))
        self.depth = cfg.rvq_depth
        self.dropout = cfg.rvq_dropout
        self.skips_parameters = cfg.rvq_dropout and cfg.codebook_update == "gradient"  # the dropped codebooks

    @property
    def codebook_size(self) -> int:
        return self.stages[0].codebook_size

    def active_depth(self, step: int) -> int:
        """The stages a forward pass uses: all of them, but in training with quantiser dropout n_q ~ U{1..depth},
        drawn from a generator seeded by `step` (the same in every process and after a resume)."""
        if not (self.training and self.dropout):
            return self.depth
        return int(torch.randint(1, self.depth + 1, (1,), generator=torch.Generator().manual_seed(step)))

    def forward(self, z_e: torch.Tensor, step: int = 0) -> Quantized:
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            n = self.active_depth(step)
            codes = torch.full((z.shape[0], self.depth, *z.shape[2:]), -1, dtype=torch.long, device=z.device)
            counts = z.new_zeros(self.depth, self.codebook_size)
            residual, total = z, torch.zeros_like(z)
            codebook_loss = commitment_loss = loss = z.new_zeros(())
            for i, stage in enumerate(self.stages[:n]):
                q, e = stage.quantize(residual)  # r_i = z_e - sum_{j<i} sg[e_j]: the commitment term reaches z_e
                residual, total = residual - e, total + e
                codes[:, i], counts[i] = q.codes, q.counts
                codebook_loss, commitment_loss, loss = codebook_loss + q.codebook_loss, \
                    commitment_loss + q.commitment_loss, loss + q.loss
            z_q = z + (total - z).detach()
        return Quantized(z_q, codes, codebook_loss, commitment_loss, loss, counts)

    @torch.no_grad()
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        residual, codes = z_e.float(), []
        for stage in self.stages:
            codes.append(stage.assign(residual))
            residual = residual - stage.lookup(codes[-1])
        return torch.stack(codes, 1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """sum_i e_i over the stages, codes (B, depth, *S)."""
        total = self.stages[0].lookup(codes[:, 0])
        for i in range(1, self.depth):
            total = total + self.stages[i].lookup(codes[:, i])
        return total

    def expected_code(self) -> torch.Tensor:
        return sum(stage.expected_code() for stage in self.stages)

    @torch.no_grad()
    def kmeans_init(self, z_e: torch.Tensor, iters: int) -> None:
        """Each stage by k-means on the residuals the stages before it (just initialised) leave."""
        residual = z_e.detach().float()
        for stage in self.stages:
            stage.kmeans_init(residual, iters)
            residual = residual - stage.lookup(stage.assign(residual))

    def code_maps(self, codes: torch.Tensor) -> list[torch.Tensor]:
        return list(codes.unbind(1))

    def join_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if len(maps) != self.depth:
            raise AezooError(f"this residual quantiser makes {self.depth} code maps per level, got {len(maps)}")
        return torch.stack(maps, 1)

    def level_names(self, name: str) -> list[str]:
        return [name] if self.depth == 1 else [f"{name}_depth{i + 1}" for i in range(self.depth)]


# --- Gumbel-softmax quantisation --------------------------------------------------------------------
def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((l + g) / tau) over the last axis, g ~ Gumbel(0, 1) = -log E, E ~ Exp(1)."""
    e = torch.empty_like(logits).exponential_(generator=generator).clamp_min(torch.finfo(logits.dtype).tiny)
    return torch.softmax((logits - e.log()) / tau, -1)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(l) || uniform) = log K - H(softmax(l)) at each position: logits (..., K) -> (...)."""
    log_q = torch.log_softmax(logits, -1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])


class GumbelQuantizer(Quantizer):
    """Logits over K codes, a relaxed one-hot in training, argmax in evaluation (module docstring)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.code_dim, cfg.codebook_size)  # the 1x1 projection of z_e's D channels to K logits
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.code_dim))

    @property
    def codebook_size(self) -> int:
        return len(self.codebook)

    def tau(self, step: int) -> float:
        """The temperature at training step `step` (module docstring)."""
        c = self.cfg
        t = min(step / c.gumbel_anneal_steps, 1.0) if c.gumbel_anneal_steps else 1.0
        if c.gumbel_anneal == "linear":
            return c.gumbel_tau_start + (c.gumbel_tau_end - c.gumbel_tau_start) * t
        return c.gumbel_tau_start * (c.gumbel_tau_end / c.gumbel_tau_start) ** t

    def logits(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B, *S, K) float32."""
        with torch.autocast(z_e.device.type, enabled=False):
            return self.proj(z_e.float().movedim(1, -1))

    def forward(self, z_e: torch.Tensor, step: int = 0) -> Quantized:
        logits = self.logits(z_e)
        codes = logits.detach().argmax(-1)
        tau = self.tau(step)
        with torch.autocast(z_e.device.type, enabled=False):
            if self.training:
                z_q = gumbel_softmax(logits, tau) @ self.codebook
            else:
                z_q = F.embedding(codes, self.codebook)
            kl = kl_to_uniform(logits).sum() / z_e.shape[0]
        counts = torch.bincount(codes.flatten(), minlength=self.codebook_size).float()
        zero = kl.new_zeros(())
        return Quantized(z_q.movedim(-1, 1), codes, zero, zero, self.cfg.gumbel_kl_weight * kl, counts,
                         {"kl": kl, "tau": torch.tensor(tau, device=kl.device)})

    @torch.no_grad()
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        return self.logits(z_e).argmax(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.codebook).movedim(-1, 1)

    def expected_code(self) -> torch.Tensor:
        """The codebook's plain mean (the quantiser keeps no code frequencies)."""
        return self.codebook.mean(0)


QUANTIZERS = {"vq": VectorQuantizer, "fsq": FiniteScalarQuantizer, "rvq": ResidualVectorQuantizer,
              "gumbel": GumbelQuantizer}


def make_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """The quantiser `cfg.quantizer` names, after `cfg.check_quantizer()`."""
    cfg.check_quantizer()
    return QUANTIZERS[cfg.quantizer](cfg)
