"""Autoregressive priors over discrete code maps: stage 2 of VQ-VAE (van den Oord et al. 2017, sec. 3.2)
and VQ-VAE-2 (Razavi et al. 2019, sec. 3.2).

A model with discrete codes has one or several levels of code maps c_l (H_l x W_l indices into a
codebook of K_l codes), coarsest first. The prior factorises over levels and, within a level, over
positions in raster order:
    p(c | y) = prod_l prod_i p(c_{l,i} | c_{l,<i}, c_{<l}, y)
so level l is conditioned on every earlier level (VQ-VAE-2's bottom prior sees the top codes) and,
optionally, on a class label y. `CodePrior` holds that factorisation (conditioning, log-probability,
ancestral sampling, training loss); a subclass supplies the network of one level through
`make_net`, which maps (codes (B, H, W), conditioning (B, C, H, W) or None) to logits (B, K, H, W)
in which position i sees only positions before i. `pixelcnn` fills it with a gated PixelCNN
(van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"); a PixelSNAIL
belongs here as another subclass.

Priors are trained by the one engine on rows of `pack_codes`: [label, codes of level 1 in raster
order, codes of level 2, ...] (see `aezoo.train_prior`). A prior's config records the code shapes and
codebook sizes it was trained on and the model they came from, and it refuses any others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, number
from ..errors import AezooError
from ..registry import register
from .base import Loss, Trainable, check_temperature


@dataclass
class CodePriorConfig(ModelConfig):
    """`data_shape` is (1 + sum_l H_l W_l,): one packed row per example (module docstring)."""

    data_shape: tuple[int, ...] = (50,)
    code_shapes: tuple[int, ...] = (7, 7)  # (H, W) of each level, coarsest first: (H_1, W_1, H_2, W_2, ...)
    codebook_sizes: tuple[int, ...] = (512,)  # K of each level
    num_classes: int = number(0, 0)  # condition on a class label in 0..num_classes-1 (0: unconditional)
    cond_dim: int = number(32, 1)  # embedding size of the class and of earlier levels' codes
    source: str = ""  # the model whose codes these are
    source_weights: str = ""  # sha256 of the weights that made the codes (a prior of other weights is refused)
    kernel: int = number(3, 3)  # odd: the width of the causal convolutions' windows

    def levels(self) -> list[tuple[int, int, int]]:
        """(K, H, W) of each level."""
        return [(k, self.code_shapes[2 * i], self.code_shapes[2 * i + 1]) for i, k in enumerate(self.codebook_sizes)]

    def validate(self) -> None:
        if not self.codebook_sizes or len(self.code_shapes) != 2 * len(self.codebook_sizes):
            raise AezooError(f"prior: code_shapes {self.code_shapes} must hold an (H, W) pair for each of the "
                             f"{len(self.codebook_sizes)} codebook_sizes")
        if min(self.code_shapes) < 1 or min(self.codebook_sizes) < 2:
            raise AezooError("prior: code maps must be at least 1x1 and codebooks hold at least 2 codes")
        row = 1 + sum(h * w for _, h, w in self.levels())
        if tuple(self.data_shape) != (row,):
            raise AezooError(f"prior: rows of packed codes have {row} entries for code_shapes {self.code_shapes}, "
                             f"the data has shape {tuple(self.data_shape)}")
        if self.kernel % 2 == 0:
            raise AezooError(f"prior.kernel must be odd, got {self.kernel}")


def pack_codes(codes: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
    """[label, level 1 in raster order, level 2, ...] as one int64 row per example: (B, 1 + sum H W)."""
    b = codes[0].shape[0]
    first = torch.zeros(b, 1, dtype=torch.long, device=codes[0].device) if labels is None else labels.view(b, 1).long()
    return torch.cat([first, *(c.reshape(b, -1).long() for c in codes)], 1)


class CodePrior(Trainable):
    """p(c | y) over one or several levels of code maps (module docstring). Subclasses fill `make_net`."""

    config_class = CodePriorConfig

    def __init__(self, config: CodePriorConfig):
        super().__init__(config)
        config.validate()
        self.level_shapes = config.levels()
        d = config.cond_dim
        self.class_embed = nn.Embedding(config.num_classes, d) if config.num_classes else None
        # The codes of every level but the last also condition the levels after it.
        self.code_embeds = nn.ModuleList(nn.Embedding(k, d) for k, _, _ in self.level_shapes[:-1])
        self.nets = nn.ModuleList(
            self.make_net(k, (i + (self.class_embed is not None)) * d) for i, (k, _, _) in enumerate(self.level_shapes))

    def make_net(self, codebook_size: int, cond_channels: int) -> nn.Module:
        """A causal network over one level: (codes (B, H, W), cond (B, cond_channels, H, W) or None) ->
        logits (B, codebook_size, H, W), position i depending only on codes before i in raster order.
        Its `sampler(cond, n, H, W)` gives the same logits one position at a time for `sample`
        (`SamplerMap`)."""
        raise NotImplementedError

    # --- codes in and out -----------------------------------------------------------------------
    def check_codes(self, codes: list[torch.Tensor]) -> None:
        """Refuses code maps of another number of levels, shape or range than the prior was trained on."""
        shapes = [tuple(c.shape[1:]) for c in codes]
        if shapes != [(h, w) for _, h, w in self.level_shapes]:
            raise AezooError(
                f"this prior was trained on code maps of shapes {[(h, w) for _, h, w in self.level_shapes]} "
                f"(from {self.config.source or 'its model'}); got {shapes}"
            )
        for c, (k, _, _) in zip(codes, self.level_shapes):
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= k):
                raise AezooError(f"codes outside 0..{k - 1}, the codebook this prior was trained on")

    def unpack(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inverse of `pack_codes`: (codes per level, labels) from rows (B, 1 + sum H W) of any dtype."""
        if x.dim() != 2 or x.shape[1] != self.config.data_shape[0]:
            raise AezooError(
                f"this prior takes rows of {self.config.data_shape[0]} packed codes; got shape {tuple(x.shape)}"
            )
        x = x.long()
        sizes = [h * w for _, h, w in self.level_shapes]
        parts = x[:, 1:].split(sizes, 1)
        return [p.view(-1, h, w) for p, (_, h, w) in zip(parts, self.level_shapes)], x[:, 0]

    # --- the factorisation ----------------------------------------------------------------------
    def condition(self, level: int, codes: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning map of `level` (B, C, H, W): the class embedding and the embedded codes of the
        earlier levels (nearest-neighbour resized to this level's shape), or None when there is none."""
        _, h, w = self.level_shapes[level]
        maps = []
        if self.class_embed is not None:
            maps.append(self.class_embed(labels)[:, :, None, None].expand(-1, -1, h, w))
        for j in range(level):
            e = self.code_embeds[j](codes[j]).permute(0, 3, 1, 2)
            maps.append(F.interpolate(e, size=(h, w), mode="nearest"))
        return torch.cat(maps, 1) if maps else None

    def level_logits(self, level: int, codes: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, K, H, W) of `level`'s codes given codes[level] (teacher forcing) and what precedes it."""
        return self.nets[level](codes[level], self.condition(level, codes, labels))

    @torch.no_grad()
    def conditional_probabilities(
        self, level: int, codes: list[torch.Tensor], labels: torch.Tensor | None, i: int, j: int
    ) -> torch.Tensor:
        """p(c_{level,(i,j)} = k | c_{level,<(i,j)}, c_<level, y) for every k: (B, K) float64.

        What entropy coding needs (`aezoo.compress`): a function of the codes before (i, j) alone, computed
        the same way at encode time (all codes known) as at decode time (the codes from (i, j) on not
        decoded yet). The positions from (i, j) on in raster order are set to 0 and later levels are left
        out before the network runs, so both see the very same input tensors and, on the same device,
        dtype and thread count, get the same bits (the teacher-forced `level_logits` of the whole map
        is not used: its numbers may differ in the last bits). `aezoo.compress` runs it on a float64
        copy of the prior on the CPU, one thread.

        A gated PixelCNN is run on rows 0..i alone and its 1x1 head at (i, j) alone (what (i, j) sees:
        its convolutions reach only up and left, its conditioning enters through 1x1 convolutions),
        3x fewer operations than the whole map; other networks run on the whole map."""
        _, h, w = self.level_shapes[level]
        if not (0 <= i < h and 0 <= j < w):
            raise AezooError(f"position ({i}, {j}) outside level {level}'s {h}x{w} code map")
        seen = codes[level].reshape(len(codes[level]), -1).clone()
        seen[:, i * w + j :] = 0  # exactly what the decoder holds before decoding (i, j)
        known = [*codes[:level], seen.view(-1, h, w)]
        net = self.nets[level]
        if isinstance(net, GatedPixelCNN):
            cond = self.condition(level, known, labels)
            v = f = net.embed(known[level][:, : i + 1]).permute(0, 3, 1, 2)
            for layer in net.layers:
                v, f = layer(v, f, None if cond is None else cond[:, :, : i + 1])
            logits = net.head(f[:, :, i : i + 1, j : j + 1])[:, :, 0, 0]
        else:
            logits = self.level_logits(level, known, labels)[:, :, i, j]
        return torch.softmax(logits.double(), 1)

    def log_prob_levels(self, codes: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(c_l | c_<l, y) of each level, (B, L), summed over positions, in float32."""
        self.check_codes(codes)
        if self.class_embed is not None and labels is None:
            raise AezooError("this prior is class-conditional: give labels, or use log_prob for the marginal")
        out = []
        for level, c in enumerate(codes):
            logits = self.level_logits(level, codes, labels).float()
            out.append(-F.cross_entropy(logits, c, reduction="none").flatten(1).sum(1))
        return torch.stack(out, 1)

    def log_prob(self, codes: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(c | y) (B,); without labels, a class-conditional prior gives the marginal
        log p(c) = log sum_y p(y) p(c | y) over uniform p(y) (exact, one pass per class)."""
        if self.class_embed is None or labels is not None:
            return self.log_prob_levels(codes, labels).sum(1)
        b, n = codes[0].shape[0], self.config.num_classes
        joint = torch.stack(
            [self.log_prob_levels(codes, torch.full((b,), y, device=codes[0].device)).sum(1) for y in range(n)]
        )
        return torch.logsumexp(joint, 0) - math.log(n)

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        codes, labels = self.unpack(x)
        per_level = -self.log_prob_levels(codes, labels if self.class_embed is not None else None)
        nll = per_level.sum(1).mean()
        terms = {"nll": nll}
        if len(codes) > 1:
            terms.update({f"nll_level{i}": v for i, v in enumerate(per_level.mean(0))})
        return Loss(nll, terms)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        labels: torch.Tensor | None = None,
        given: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Code maps drawn ancestrally, level by level and position by position: list of (n, H, W).

        Each position's logits come from the level network's `sampler`, which computes only what that
        position adds to the positions before it (the features of earlier positions are kept), instead
        of the whole map once per position: the logits of the full forward pass at that position, up to
        float rounding, and the same draws from the same random numbers.

        The logits are divided by `temperature` (< 1: sharper, towards the most likely codes). `given`
        fixes the first levels (e.g. VQ-VAE-2's top codes of an image) and only the rest are drawn.
        A class-conditional prior without labels draws the classes in turn (0, 1, ..., 0, 1, ...)."""
        check_temperature(temperature)
        device = self.device
        codes = [c.to(device) for c in (given or [])]
        if codes:
            shapes = [(h, w) for _, h, w in self.level_shapes]
            if len(codes) > len(shapes) or any(c.shape != (n, *s) for c, s in zip(codes, shapes)):
                raise AezooError(
                    f"given codes of shapes {[tuple(c.shape) for c in codes]} do not match this prior's "
                    f"first levels {shapes[: len(codes)]} for {n} samples"
                )
        if self.class_embed is not None and labels is None:
            labels = torch.arange(n, device=device) % self.config.num_classes
        for level in range(len(codes), len(self.level_shapes)):
            _, h, w = self.level_shapes[level]
            c = torch.zeros(n, h, w, dtype=torch.long, device=device)
            codes.append(c)
            logits_at = self.nets[level].sampler(self.condition(level, codes, labels), n, h, w)
            for i in range(h):
                for j in range(w):
                    logits = logits_at(c, i, j).float() / temperature
                    c[:, i, j] = torch.multinomial(F.softmax(logits, 1), 1).squeeze(1)
        return codes


# --- sampling one position at a time ---------------------------------------------------------------
class SamplerMap:
    """A feature map (B, C, H, W) filled position by position during sampling, zero-padded by `pad` above,
    left and right: the zeros a convolution's own padding would read. A causal convolution at (i, j) is
    then one matrix product over the window its kernel covers (`conv_at`), the features of earlier
    positions read from here instead of computed again."""

    def __init__(self, n: int, channels: int, h: int, w: int, pad: int, like: torch.Tensor):
        self.pad = pad
        self.t = like.new_zeros(n, channels, h + pad, w + 2 * pad)

    def put(self, i: int, j: int, value: torch.Tensor) -> None:
        """value (B, C) at (i, j)."""
        self.t[:, :, i + self.pad, j + self.pad] = value

    def put_row(self, i: int, value: torch.Tensor) -> None:
        """value (B, C, W) as row i."""
        self.t[:, :, i + self.pad, self.pad : self.t.shape[-1] - self.pad] = value

    def window(self, top: int, left: int, kh: int, kw: int) -> torch.Tensor:
        """Rows top..top+kh-1 and columns left..left+kw-1 (negative or past the right edge: zeros)."""
        p = self.pad
        return self.t[:, :, top + p : top + p + kh, left + p : left + p + kw]


def conv_at(conv: nn.Conv2d, window: torch.Tensor) -> torch.Tensor:
    """`conv` (no padding, stride 1) at the one output position whose input is `window` (B, C_in, kh, kw)
    -> (B, C_out): the convolution's sum as one matrix product."""
    return F.linear(window.reshape(len(window), -1), conv.weight.view(conv.out_channels, -1), conv.bias)


# --- gated PixelCNN --------------------------------------------------------------------------------
def _gate(a: torch.Tensor) -> torch.Tensor:
    """tanh(a_f) * sigmoid(a_g) over the two halves of the channels (van den Oord et al. 2016, eq. 2)."""
    f, g = a.chunk(2, 1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack (van den Oord et al. 2016, sec. 2.2, fig. 2).

    The vertical stack at row i sees rows <= i (a (k//2 + 1) x k convolution padded above); it reaches
    the horizontal stack shifted down one row, so that there it carries rows < i only. The horizontal
    stack sees its own row up to the current column (1 x (k//2 + 1), padded on the left); the first
    layer's input is shifted right one column, so position (i, j) never sees its own code. Together the
    two cover every earlier position: no blind spot. A conditioning map enters both stacks' gates
    through 1x1 convolutions (the paper's V h terms, eq. 4-5)."""

    def __init__(self, channels: int, kernel: int, cond_channels: int, first: bool):
        super().__init__()
        p, self.k, self.first = channels, kernel, first
        self.v_conv = nn.Conv2d(p, 2 * p, (kernel // 2 + 1, kernel))
        self.h_conv = nn.Conv2d(p, 2 * p, (1, kernel // 2 + 1))
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)
        self.h_out = nn.Conv2d(p, p, 1)
        self.cond = nn.Conv2d(cond_channels, 4 * p, 1) if cond_channels else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.k // 2
        v_pre = self.v_conv(F.pad(v, (r, r, r, 0)))  # (B, 2p, H, W): row i from rows i-r..i
        h_in = F.pad(h, (1, 0))[..., :-1] if self.first else h  # first layer: column j from columns < j
        down = F.pad(v_pre, (0, 0, 1, 0))[..., :-1, :]  # row i from rows < i
        h_pre = self.h_conv(F.pad(h_in, (r, 0))) + self.v_to_h(down)
        if self.cond is not None:
            cv, ch = self.cond(cond).chunk(2, 1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), (h_new if self.first else h + h_new)  # the first layer's h holds x itself: no residual


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN over a map of K-way codes: embedding, `layers` gated layers, a 1x1 ReLU head."""

    def __init__(self, codebook_size: int, channels: int, layers: int, kernel: int, head: int, cond_channels: int):
        super().__init__()
        self.embed = nn.Embedding(codebook_size, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, cond_channels, i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, head, 1), nn.ReLU(), nn.Conv2d(head, codebook_size, 1))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, H, W) -> logits (B, K, H, W)."""
        return self.forward_embedded(self.embed(codes).permute(0, 3, 1, 2), cond)

    def forward_embedded(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The same from embedded codes (B, channels, H, W) (differentiable: the causality test uses it)."""
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)

    def sampler(self, cond: torch.Tensor | None, n: int, h: int, w: int) -> _GatedSteps:
        return _GatedSteps(self, cond, n, h, w)


class _GatedSteps:
    """`GatedPixelCNN`'s logits one position at a time, in raster order: `steps(codes, i, j)` -> (B, K),
    given codes (B, H, W) known before (i, j) (what comes after is not read).

    The vertical stack of row i-1 depends on rows <= i-1 alone, and the horizontal stack at (i, j) reads
    it only through the row above (`GatedLayer`): so at the start of row i each layer's vertical stack
    is computed on row i-1 (from the r rows above it, kept), and at each (i, j) only the horizontal stack
    at (i, j), from its own row's columns j-r..j (kept) and that row's vertical term. Per map, the
    convolutions run on W + H W positions instead of (H W)^2."""

    def __init__(self, net: GatedPixelCNN, cond: torch.Tensor | None, n: int, h: int, w: int):
        self.net, self.w = net, w
        p, r = net.embed.embedding_dim, net.layers[0].k // 2
        like = net.embed.weight
        self.x = SamplerMap(n, p, h, w, r + 1, like)  # embedded codes; v and h of every layer below
        self.v = [SamplerMap(n, p, h, w, r + 1, like) for _ in net.layers]
        self.h = [SamplerMap(n, p, h, w, r + 1, like) for _ in net.layers]
        self.cond = [None if layer.cond is None else layer.cond(cond).chunk(2, 1) for layer in net.layers]
        # v_to_h of the row above; above row 0 the padding's zeros, where v_to_h gives its bias
        self.down = [layer.v_to_h.bias.view(1, -1, 1).expand(n, -1, w) for layer in net.layers]

    def _vertical_row(self, i: int) -> None:
        """Every layer's vertical stack on row i (its input rows <= i are all known)."""
        below = self.x
        for k, layer in enumerate(self.net.layers):
            r = layer.k // 2
            v_pre = F.conv2d(below.window(i - r, -r, r + 1, self.w + 2 * r), layer.v_conv.weight, layer.v_conv.bias)
            self.down[k] = layer.v_to_h(v_pre)[:, :, 0]
            if self.cond[k] is not None:
                v_pre = v_pre + self.cond[k][0][:, :, i : i + 1]
            self.v[k].put_row(i, _gate(v_pre)[:, :, 0])
            below = self.v[k]

    def __call__(self, codes: torch.Tensor, i: int, j: int) -> torch.Tensor:
        if (i, j) != (0, 0):
            pi, pj = (i, j - 1) if j else (i - 1, self.w - 1)
            self.x.put(pi, pj, self.net.embed(codes[:, pi, pj]))
            if j == 0:
                self._vertical_row(i - 1)
        h, below = None, self.x
        for k, layer in enumerate(self.net.layers):
            r = layer.k // 2
            shift = 1 if layer.first else 0  # the first layer's horizontal input is shifted right one column
            h_pre = conv_at(layer.h_conv, below.window(i, j - shift - r, 1, r + 1)) + self.down[k][:, :, j]
            if self.cond[k] is not None:
                h_pre = h_pre + self.cond[k][1][:, :, i, j]
            h_new = F.linear(_gate(h_pre), layer.h_out.weight[:, :, 0, 0], layer.h_out.bias)
            h = h_new if layer.first else h + h_new
            self.h[k].put(i, j, h)
            below = self.h[k]
        _, hidden, _, logits = self.net.head
        return F.linear(F.relu(F.linear(F.relu(h), hidden.weight[:, :, 0, 0], hidden.bias)),
                        logits.weight[:, :, 0, 0], logits.bias)


@dataclass
class PixelCNNConfig(CodePriorConfig):
    channels: int = number(32, 1)  # feature channels of the gated layers
    layers: int = number(8, 1)  # gated layers (each a vertical and a horizontal stack)
    head: int = number(256, 1)  # hidden channels of the 1x1 output head


@register(
    "pixelcnn",
    "gated PixelCNN prior over code maps (van den Oord 2016), optionally class-conditional",
    default_data="codes",
    tiny={"channels": 8, "layers": 2, "head": 16, "codebook_sizes": (8,), "code_shapes": (4, 4), "data_shape": (17,)},
    prior=True,
)
class PixelCNNPrior(CodePrior):
    config_class = PixelCNNConfig

    def make_net(self, codebook_size: int, cond_channels: int) -> nn.Module:
        c = self.config
        return GatedPixelCNN(codebook_size, c.channels, c.layers, c.kernel, c.head, cond_channels)
