"""TD-VAE, the temporal difference variational autoencoder (Gregor et al. 2019; Weng 2018, "TD-VAE").

A belief b_t = LSTM(b_{t-1}, MLP(x_t)) summarises the frames x_1..x_t seen so far; b_0 = 0 is the
belief before any frame. Four distributions, diagonal Gaussians over the state z except the decoder:

    p_B(z_t | b_t)                  belief: what the state is, given the frames up to t
    p_T(z_t2 | z_t1)                transition: a jump of t2 - t1 steps in state space
    p_S(z_t1 | z_t2, b_t1, b_t2)    smoothing: the state at t1 inferred back from the state at t2
    p_D(x_t | z_t)                  decoder: Bernoulli for frames in [0, 1], Gaussian (std sigma) for vectors

For a pair t1 < t2, t2 - t1 drawn uniformly from 1..max_jump, the model maximises (the survey's
TD-VAE objective; Gregor et al. 2019, eq. 8)

    J(t1, t2) = E[ log p_D(x_t2|z_t2) + log p_B(z_t1|b_t1) + log p_T(z_t2|z_t1)
                   - log p_B(z_t2|b_t2) - log p_S(z_t1|z_t2, b_t1, b_t2) ]

with z_t2 ~ p_B(.|b_t2) and then z_t1 ~ p_S(.|z_t2, b_t1, b_t2), both reparameterised. The loss is
-J; `loss` reports its five terms, one sample each, as log_pd, log_pb_t1, log_pt, log_pb_t2, log_ps
(batch means of per-pair sums over dimensions). The belief at t1 is trained towards the smoothed
state, a bootstrap from the later belief at t2: the "temporal difference" of the name.

A rollout follows the paper (sec. 5.2): compute b_t from the frames seen, sample z_t ~ p_B(.|b_t),
jump with p_T by chosen intervals, decode each state with the mean of p_D.

Choices the paper leaves open, made here:
- `jump_input` (default on): p_T also sees the interval t2 - t1 (one-hot), so a rollout can jump by
  an interval the user chooses. Off, p_T is the paper's transition without it: trained on mixed
  intervals, one p_T step then covers an interval the model picks; rollouts apply it once per unit
  of interval, which is exact only for max_jump = 1.
- t1 may be 0, the belief before any frame, so p_B(z | b_0) is the model's prior over states and
  `sample` can roll out without observations.
- `layers = 2` is the paper's two-layer state: each distribution over z = (z^1, z^2) factorises as
  p(z^1 | c) p(z^2 | c, z^1), every layer of p_B, p_T and p_S conditioned on the same inputs c.
- p_B, p_T and p_S each map their inputs through one gated layer, tanh(W1 c) * sigmoid(W2 c), to a
  mean and log-variance (the paper's appendix); the frame encoder and decoder are aezoo's MLP or
  convolutional backbones.
- `pairs` draws several (t1, t2) pairs per sequence and step, reusing the sequence's beliefs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, choice, number
from ..distributions import DiagonalGaussian, make_likelihood
from ..errors import AezooError
from ..networks import BackboneConfig, Decoder, Encoder
from ..registry import register
from .base import Loss, Model, check_temperature
from .capabilities import Generative, SequenceModel


@dataclass
class TDVAEConfig(ModelConfig, BackboneConfig):
    data_shape: tuple[int, ...] = (20, 1, 28, 28)  # (T, C, H, W) frames or (T, D) vectors
    hidden: tuple[int, ...] = (256,)  # MLP widths of the frame encoder (and, reversed, the decoder)
    latent_dim: int = number(8, 1)  # size of each stochastic layer of the state z
    layers: int = number(1, 1)  # stochastic layers of z (2: the paper's two-layer state)
    belief_dim: int = number(64, 1)  # LSTM state b_t (and the width of the frame embedding fed to it)
    block_hidden: int = number(64, 1)  # width of the gated layer inside p_B, p_T and p_S
    max_jump: int = number(4, 1)  # t2 - t1 is drawn uniformly from 1..max_jump
    jump_input: bool = True  # p_T sees the interval t2 - t1 (see the module docstring)
    pairs: int = number(1, 1)  # (t1, t2) pairs drawn per sequence and step
    # auto: Bernoulli for frames (C, H, W), Gaussian with the fixed std `sigma` for vectors (a learned
    # variance let the oscillator's state collapse to the prior: the decoder fitted the variance first)
    likelihood: str = choice("auto", "bernoulli", "gaussian", "gaussian_learned")
    sigma: float = number(0.1, 0.0, None, lo_open=True)  # std of likelihood=gaussian: the data's noise level

    def check_shape(self) -> None:
        """Rules that need the data's shape; checked when the model is built, since a config is
        parsed (and validated) before the dataset fills in data_shape."""
        shape = tuple(self.data_shape)
        if len(shape) not in (2, 4):
            raise AezooError(f"tdvae needs sequences, (T, D) vectors or (T, C, H, W) frames; data has shape {shape}")
        if shape[0] < 2:
            raise AezooError(f"tdvae needs sequences of at least 2 steps; data has T={shape[0]}")
        if self.max_jump > shape[0] - 1:
            raise AezooError(f"model.max_jump={self.max_jump} must be below the sequence length T={shape[0]}")
        self.check_backbone(shape[1:])

    @property
    def likelihood_name(self) -> str:
        if self.likelihood != "auto":
            return self.likelihood
        return "bernoulli" if len(self.data_shape) == 4 else "gaussian"


class GatedGaussian(nn.Module):
    """c (..., n_in) -> N(mean, diag(exp(logvar))) over n_out through tanh(W1 c) * sigmoid(W2 c)."""

    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.gate = nn.Linear(n_in, 2 * hidden)
        self.out = nn.Linear(hidden, 2 * n_out)

    def forward(self, c: torch.Tensor) -> DiagonalGaussian:
        a, g = self.gate(c).chunk(2, dim=-1)
        return DiagonalGaussian.from_params(self.out(torch.tanh(a) * torch.sigmoid(g)))


class StateDistribution(nn.Module):
    """p(z | c) over `layers` stochastic layers: p(z^1 | c) p(z^2 | c, z^1) ... ; z (..., layers * latent)
    is the layers concatenated. Layer l's Gaussian is computed from c and the layers before it."""

    def __init__(self, n_cond: int, latent_dim: int, layers: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.blocks = nn.ModuleList(GatedGaussian(n_cond + i * latent_dim, hidden, latent_dim) for i in range(layers))

    def _walk(self, c: torch.Tensor, z: torch.Tensor | None = None, mode: bool = False, temperature: float = 1.0):
        """(z, the layers' Gaussians): z's own layers where z is given, otherwise samples (or means);
        `temperature` scales the samples' noise."""
        parts, gaussians = [], []
        for i, block in enumerate(self.blocks):
            g = block(torch.cat([c, *parts], dim=-1))
            gaussians.append(g)
            if z is not None:
                parts.append(z[..., i * self.latent_dim : (i + 1) * self.latent_dim])
            else:
                parts.append(g.mean if mode else g.rsample(temperature=temperature))
        return torch.cat(parts, dim=-1), gaussians

    def _log_prob(self, gaussians, z: torch.Tensor) -> torch.Tensor:
        d = self.latent_dim
        return sum(g.log_prob(z[..., i * d : (i + 1) * d]) for i, g in enumerate(gaussians))

    def rsample(self, c: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample z (..., layers * latent) and its log-density (...)."""
        z, gaussians = self._walk(c, temperature=temperature)
        return z, self._log_prob(gaussians, z)

    def log_prob(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._log_prob(self._walk(c, z)[1], z)

    def mode(self, c: torch.Tensor) -> torch.Tensor:
        """Each layer's mean given the means of the layers before it."""
        return self._walk(c, mode=True)[0]


def sample_pairs(batch: int, pairs: int, length: int, max_jump: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Belief indices (t1, t2), each (batch, pairs): t2 - t1 uniform on 1..min(max_jump, length), then t1
    uniform on the 0..length - (t2 - t1) positions where the pair fits (index 0 is the belief b_0)."""
    jump = torch.randint(1, min(max_jump, length) + 1, (batch, pairs), device=device)
    t1 = (torch.rand(batch, pairs, device=device) * (length - jump + 1)).floor().long()
    return t1, t1 + jump


@register("tdvae", "temporal difference VAE: belief LSTM, jumpy state transitions, rollouts",
          default_data="moving_mnist",
          tiny={"hidden": (32,), "channels": (4, 8), "latent_dim": 4, "belief_dim": 16, "block_hidden": 16})
class TDVAE(Model, Generative, SequenceModel):
    config_class = TDVAEConfig

    def __init__(self, config: TDVAEConfig):
        super().__init__(config)
        c = config
        c.check_shape()
        self.frame_shape = tuple(c.data_shape[1:])
        self.likelihood = make_likelihood(c.likelihood_name, c.sigma)
        state = c.latent_dim * c.layers
        self.embed = Encoder(c, self.frame_shape, c.belief_dim)  # the preprocessing before the LSTM
        # A cell stepped in Python: on CPU, torch's fused nn.LSTM (oneDNN) is slower at these sizes.
        self.lstm = nn.LSTMCell(c.belief_dim, c.belief_dim)
        self.p_b = StateDistribution(c.belief_dim, c.latent_dim, c.layers, c.block_hidden)
        jump = c.max_jump if c.jump_input else 0
        self.p_t = StateDistribution(state + jump, c.latent_dim, c.layers, c.block_hidden)
        self.p_s = StateDistribution(state + 2 * c.belief_dim, c.latent_dim, c.layers, c.block_hidden)
        self.decoder = Decoder(c, self.frame_shape, state, self.likelihood.params_per_dim)

    # --- the four distributions -----------------------------------------------------------------
    def beliefs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, *frame) -> (B, T + 1, belief_dim); entry t has seen x[:, :t] (entry 0 is b_0 = 0)."""
        h = cell = x.new_zeros(len(x), self.config.belief_dim)
        out = [h]
        if x.shape[1]:
            e = self.embed(x.flatten(0, 1)).view(len(x), x.shape[1], -1)
            for t in range(x.shape[1]):
                h, cell = self.lstm(e[:, t], (h, cell))
                out.append(h)
        return torch.stack(out, dim=1)

    def transition_input(self, z: torch.Tensor, jump: torch.Tensor) -> torch.Tensor:
        """What p_T conditions on: z_t1, and the interval t2 - t1 one-hot where jump_input is on."""
        if not self.config.jump_input:
            return z
        return torch.cat([z, F.one_hot(jump - 1, self.config.max_jump).to(z.dtype)], dim=-1)

    def transition(self, z: torch.Tensor, jump: int, temperature: float = 1.0) -> torch.Tensor:
        """A sample of the state `jump` steps after z: one p_T step with the interval as input, or,
        without jump_input, `jump` steps of p_T."""
        if self.config.jump_input:
            if not 1 <= jump <= self.config.max_jump:
                raise AezooError(f"tdvae jumps are 1..max_jump={self.config.max_jump}; asked for {jump}")
            j = torch.full(z.shape[:-1], jump, dtype=torch.long, device=z.device)
            return self.p_t.rsample(self.transition_input(z, j), temperature)[0]
        for _ in range(jump):
            z = self.p_t.rsample(z, temperature)[0]
        return z

    # --- the objective --------------------------------------------------------------------------
    def pair_terms(self, x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> dict[str, torch.Tensor]:
        """The five log-densities of J(t1, t2), each (B * P,), for belief indices t1 < t2 of shape (B, P)."""
        b = self.beliefs(x)  # (B, T + 1, H)
        rows = torch.arange(len(x), device=x.device).unsqueeze(1).expand_as(t1)
        b1, b2 = b[rows, t1].flatten(0, 1), b[rows, t2].flatten(0, 1)
        x2 = x[rows, t2 - 1].flatten(0, 1)  # belief t2 has just seen frame t2, x[:, t2 - 1]
        z2, log_pb_t2 = self.p_b.rsample(b2)
        z1, log_ps = self.p_s.rsample(torch.cat([z2, b1, b2], dim=-1))
        return {
            "log_pd": self.likelihood.log_prob(self.decoder(z2), x2),
            "log_pb_t1": self.p_b.log_prob(b1, z1),
            "log_pt": self.p_t.log_prob(self.transition_input(z1, (t2 - t1).flatten()), z2),
            "log_pb_t2": log_pb_t2,
            "log_ps": log_ps,
        }

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        c = self.config
        t1, t2 = sample_pairs(len(x), c.pairs, x.shape[1], c.max_jump, x.device)
        terms = {k: v.mean() for k, v in self.pair_terms(x, t1, t2).items()}
        j = terms["log_pd"] + terms["log_pb_t1"] + terms["log_pt"] - terms["log_pb_t2"] - terms["log_ps"]
        return Loss(-j, terms)

    # --- the autoencoder interface --------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p_B(z | b_T) after the whole sequence: (B, layers * latent_dim)."""
        return self.p_b.mode(self.beliefs(x)[:, -1])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p_D(x | z): (B, *frame)."""
        return self.likelihood.mean(self.decoder(z))

    # --- rollouts -------------------------------------------------------------------------------
    def current_state(self, x: torch.Tensor) -> torch.Tensor:
        """z_t ~ p_B(. | b_t) after the observed frames x (B, t, *frame); t = 0 samples the prior."""
        return self.p_b.rsample(self.beliefs(x)[:, -1])[0]

    def predict(self, x: torch.Tensor, jumps) -> torch.Tensor:
        """Jumpy predictions: from one z_t ~ p_B(. | b_t), each jump d in `jumps` made directly,
        decoded: (B, len(jumps), *frame), the frames expected at t + d."""
        z = self.current_state(x)
        return torch.stack([self.decode(self.transition(z, d)) for d in jumps], dim=1)

    def rollout(
        self, x: torch.Tensor | None, intervals, z: torch.Tensor | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """A rollout: from z_t ~ p_B(. | b_t) after the frames x (or from the given z, x unused), jump by
        each interval in turn, decode every state reached: (B, len(intervals), *frame), the frames
        expected at t + cumsum(intervals)."""
        z = self.current_state(x) if z is None else z
        frames = []
        for d in intervals:
            z = self.transition(z, d, temperature)
            frames.append(self.decode(z))
        return torch.stack(frames, dim=1)

    def prior_states(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n states from p_B(z | b_0), the belief before any frame."""
        return self.p_b.rsample(torch.zeros(n, self.config.belief_dim, device=self.device), temperature)[0]

    def rollout_context(self) -> int:
        return context_length(self.config.data_shape[0], self.config.max_jump)

    def jump_errors(self, x: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors summed over a frame's dimensions, (B, max_jump) each: of the jumpy prediction
        of x_{context+d} from the first `context` frames, and of copying the last frame seen."""
        jumps = range(1, self.config.max_jump + 1)
        future = x[:, context : context + len(jumps)]
        pred = self.predict(x[:, :context], jumps)
        last = x[:, context - 1 : context]
        return (pred - future).flatten(2).pow(2).sum(2), (last - future).flatten(2).pow(2).sum(2)

    # --- pictures -------------------------------------------------------------------------------
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n rollouts from the prior state p_B(z | b_0): frames as strips (n, C, H, 8 W), seven jumps of
        max_jump; vectors as line plots (n, 3, H, W) of a rollout in unit steps over T steps. The noise
        of the first state and of every jump is scaled by `temperature`."""
        check_temperature(temperature)
        z = self.prior_states(n, temperature)
        if len(self.frame_shape) == 3:
            jumps = [self.config.max_jump] * 7
            frames = torch.cat([self.decode(z).unsqueeze(1), self.rollout(None, jumps, z, temperature)], 1)
            n, length, c, h, w = frames.shape
            return frames.permute(0, 2, 3, 1, 4).reshape(n, c, h, length * w).clamp(0, 1)
        path = self.rollout(None, [1] * self.config.data_shape[0], z, temperature)[..., 0]
        return line_images([(path, 0, PREDICTED)], path.shape[1])

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """For up to 8 test sequences: observed frames then jumpy predictions under the true frames
        ("rollouts"), a rollout in jumps of max_jump from two frames ("jumpy_rollouts"), and
        rollouts from the prior ("prior_rollouts"); rows of 8 frames. Vectors: line plots."""
        x = x[:8]
        T, J = x.shape[1], self.config.max_jump
        context = context_length(T, J)
        if len(self.frame_shape) != 3:
            chained = self.rollout(x[:, :context], [1] * (T - context))[..., 0]
            truth = x[..., 0]
            prior = self.rollout(None, [1] * T, self.prior_states(8))[..., 0]
            return {
                "rollouts": line_images([(truth, 0, OBSERVED), (chained, context, PREDICTED)], T, truth),
                "prior_rollouts": line_images([(prior, 0, PREDICTED)], T),
            }
        blank = x.new_zeros(len(x), 1, *self.frame_shape)

        def frames_at(times):  # true frames at 1-based times, blank where the sequence has none
            return torch.cat([x[:, t - 1 : t] if 1 <= t <= T else blank for t in times], dim=1)

        # Last observed frames, then direct jumps of 1..F from the belief at `context`.
        f = min(J, 6)
        seen = list(range(context - (8 - f) + 1, context + 1))
        pred = self.predict(x[:, :context], range(1, f + 1))
        rollouts = _rows(
            [frames_at(seen + list(range(context + 1, context + f + 1))), torch.cat([frames_at(seen), pred], 1)]
        )
        # Two frames seen, then six chained jumps of max_jump (beyond T the truth row is blank).
        start = min(2, T - 1)
        times = [start + J * k for k in range(1, 9 - start)]
        jumpy = self.rollout(x[:, :start], [J] * len(times))
        jumpy_rows = _rows([frames_at(list(range(1, start + 1)) + times), torch.cat([x[:, :start], jumpy], 1)])
        z = self.prior_states(8)
        prior = torch.cat([self.decode(z).unsqueeze(1), self.rollout(None, [J] * 7, z)], 1)
        return {
            "rollouts": rollouts.clamp(0, 1),
            "jumpy_rollouts": jumpy_rows.clamp(0, 1),
            "prior_rollouts": prior.flatten(0, 1).clamp(0, 1),
        }


def context_length(length: int, max_jump: int) -> int:
    """Frames observed before the evaluated jumps: half the sequence, or fewer so that every jump of
    1..max_jump lands inside it."""
    return max(1, min(length // 2, length - max_jump))


def _rows(strips: list[torch.Tensor]) -> torch.Tensor:
    """Per sequence, each (B, L, ...) strip in turn as a row: (B * len(strips) * L, ...)."""
    return torch.stack(strips, dim=1).flatten(0, 2)


# --- line plots drawn as images, for sequences of vectors (the first coordinate is drawn) ---------
OBSERVED = (0.6, 0.6, 0.6)
PREDICTED = (1.0, 0.25, 0.2)


def line_images(
    curves, length: int, scale_from: torch.Tensor | None = None, height: int = 40, px: int = 4
) -> torch.Tensor:
    """Curves drawn on black, one image per row: `curves` are (values (N, L), first time step, rgb);
    values at steps offset..offset+L-1 of `length`. The vertical range is that of `scale_from` (N, ...)
    or of all the curves, per image. Returns (N, 3, height, length * px) in [0, 1]."""
    every = torch.cat([v for v, _, _ in curves], 1) if scale_from is None else scale_from.flatten(1)
    lo, hi = every.min(1).values, every.max(1).values
    margin = (hi - lo).clamp(min=1e-3) * 0.1
    lo, hi = (lo - margin)[:, None, None], (hi + margin)[:, None, None]
    n = len(every)
    image = every.new_zeros(n, 3, height, length * px)
    rows = torch.arange(height, device=every.device, dtype=every.dtype)[None, :, None]
    for values, offset, rgb in curves:
        # Pixel rows of the curve at every pixel column, linearly interpolated between time steps.
        cols = torch.arange(values.shape[1] * px - px + 1, device=every.device, dtype=every.dtype) / px
        i = cols.floor().long().clamp(max=values.shape[1] - 2) if values.shape[1] > 1 else cols.long()
        frac = cols - i
        v = values[:, i] * (1 - frac) + values[:, (i + 1).clamp(max=values.shape[1] - 1)] * frac
        y = (height - 1) * (hi[:, :, 0] - v) / (hi[:, :, 0] - lo[:, :, 0])  # (N, W'), row 0 at the top
        # Fill each column between its row and the next column's, so steep segments stay connected.
        y_next = torch.cat([y[:, 1:], y[:, -1:]], 1)
        top, bottom = torch.minimum(y, y_next)[:, None], torch.maximum(y, y_next)[:, None]
        mask = ((rows >= top - 0.5) & (rows <= bottom + 0.5)).to(every.dtype)  # (N, height, W')
        start = offset * px
        width = min(mask.shape[-1], image.shape[-1] - start)
        colour = torch.tensor(rgb, dtype=every.dtype, device=every.device)[None, :, None, None]
        region = image[..., start : start + width]
        m = mask[:, None, :, :width]
        image[..., start : start + width] = region * (1 - m) + colour * m
    return image
