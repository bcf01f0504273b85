"""PixelSNAIL prior over code maps (Chen et al. 2018, "PixelSNAIL: An Improved Autoregressive Generative
Model"), as VQ-VAE-2 uses it for stage 2 (Razavi et al. 2019, sec. 3.2 and appendix A).

The factorisation over levels, the conditioning of a level on the earlier levels' codes (and a class
label), the training loss and ancestral sampling come from `models.priors.CodePrior`; this file fills
its `make_net` with the network of one level, which maps codes c (B, H, W) to logits (B, K, H, W) so
that the logits at raster position i depend only on c_<i:

  input     the codes' embeddings, made strictly causal by a down-shifted convolution (rows above,
            k columns wide) plus a right-shifted one (same row, columns to the left): PixelCNN++'s
            first layer (Salimans et al. 2017, sec. 2.2);
  blocks    `blocks` times: `residual` gated residual blocks
                y = x + a * sigmoid(b),  (a, b) = conv(ELU(conv(ELU(x)))) + W c
            with down-right causal convolutions (rows <= i, columns <= j) and the conditioning map
            c added to the gate (PixelCNN++'s gated_resnet), then one causal multi-head
            self-attention block whose keys and values see the features, the input codes and the
            position, and whose queries see the features and the position (PixelSNAIL, fig. 2);
  head      ELU and a 1x1 convolution to K logits.

Causality. The features at position i depend on codes before i only; the convolutions that follow
see positions <= i in raster order, so that stays true. Attention lets query i read positions j <= i
(an inclusive mask: key j carries features of c_<j) and gets the codes themselves through the input
embedding shifted one step along the raster order (key j carries c_(j-1)). The paper feeds the
unshifted input with a strict mask j < i instead; both give query i exactly c_<i, and the inclusive
form never leaves the first position with nothing to attend to.

Conditioning (the bottom prior of VQ-VAE-2 given the top codes, or a class): `CodePrior.condition`
gives the top codes' embedding upsampled to this level's map (and the class embedding); it goes
through a non-causal residual conditioning stack (the whole top map is known) before entering every
gated block, as in Razavi et al. (appendix A: "conditioning stack" of residual blocks).

Every size is a field of `PixelSNAILConfig`, stored in the prior's config.json with the code shapes
it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import number
from ..errors import AezooError
from ..registry import register
from .priors import CodePrior, CodePriorConfig, SamplerMap, conv_at


def raster_shift(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) moved one step along the raster order: position i holds x at i - 1 (zeros at 0)."""
    b, c, h, w = x.shape
    return F.pad(x.flatten(2), (1, 0))[..., :-1].view(b, c, h, w)


class CausalConv2d(nn.Conv2d):
    """A convolution padded so that output (i, j) sees a window above and/or left of (i, j).

    `kind="down"`: rows i - kh + 1 .. i, columns j - kw//2 .. j + kw//2 (kw odd);
    `kind="downright"`: rows i - kh + 1 .. i, columns j - kw + 1 .. j.
    Shift the input first (down one row, or right one column) for a window strictly before (i, j)."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], kind: str):
        super().__init__(c_in, c_out, kernel)
        kh, kw = kernel
        self.padding_lrtb = (kw // 2, kw // 2, kh - 1, 0) if kind == "down" else (kw - 1, 0, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))


class GatedResidual(nn.Module):
    """y = x + a * sigmoid(b), (a, b) = conv2(ELU(conv1(ELU(x)))) + W cond (PixelCNN++ gated_resnet);
    both convolutions down-right causal, so y at (i, j) sees x at positions <= (i, j) in raster order."""

    def __init__(self, channels: int, kernel: int, cond_channels: int, dropout: float):
        super().__init__()
        size = (kernel // 2 + 1, kernel // 2 + 1)
        self.conv1 = CausalConv2d(channels, channels, size, "downright")
        self.conv2 = CausalConv2d(channels, 2 * channels, size, "downright")
        self.cond = nn.Conv2d(cond_channels, 2 * channels, 1) if cond_channels else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.conv2(self.dropout(F.elu(self.conv1(F.elu(x)))))
        if self.cond is not None:
            h = h + self.cond(cond)
        a, b = h.chunk(2, 1)
        return x + a * torch.sigmoid(b)


class CausalSelfAttention(nn.Module):
    """Multi-head dot-product attention over the raster order of a map: the output at position i is a
    mix of the values at positions j <= i (Vaswani et al. 2017; PixelSNAIL's causal attention).
    Queries come from `q_in` (B, Cq, H, W), keys and values from `kv_in` (B, Ckv, H, W)."""

    def __init__(self, q_channels: int, kv_channels: int, key_channels: int, value_channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Conv2d(q_channels, key_channels, 1)
        self.key = nn.Conv2d(kv_channels, key_channels, 1)
        self.value = nn.Conv2d(kv_channels, value_channels, 1)

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        """-> (B, value_channels, H, W)."""
        b, _, h, w = q_in.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, H W, C / heads)
            return t.flatten(2).view(b, self.heads, -1, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(split(self.query(q_in)), split(self.key(kv_in)),
                                             split(self.value(kv_in)), is_causal=True)  # mask j <= i
        return out.transpose(2, 3).reshape(b, -1, h, w)


class AttentionBlock(nn.Module):
    """x + a * sigmoid(b), (a, b) = 1x1 conv of ELU(attention): queries from (features, position),
    keys and values from (features, input codes shifted one step, position) (PixelSNAIL, fig. 2)."""

    def __init__(self, channels: int, key_channels: int, value_channels: int, heads: int):
        super().__init__()
        self.attention = CausalSelfAttention(channels + 2, 2 * channels + 2, key_channels, value_channels, heads)
        self.out = nn.Conv2d(value_channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, shifted_input: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        att = self.attention(torch.cat([x, position], 1), torch.cat([x, shifted_input, position], 1))
        a, b = self.out(F.elu(att)).chunk(2, 1)
        return x + a * torch.sigmoid(b)


class ConditionStack(nn.Module):
    """The conditioning map (B, C_in, H, W) -> (B, channels, H, W): a 1x1 convolution, then `layers`
    ordinary (non-causal) residual blocks x + conv3x3(ELU(conv3x3(ELU(x)))): the condition is known
    everywhere, so every position may see all of it."""

    def __init__(self, c_in: int, channels: int, layers: int):
        super().__init__()
        self.proj = nn.Conv2d(c_in, channels, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ELU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ELU(),
                          nn.Conv2d(channels, channels, 3, padding=1)) for _ in range(layers))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        x = self.proj(cond)
        for block in self.blocks:
            x = x + block(x)
        return x


class PixelSNAIL(nn.Module):
    """The network of one level (module docstring): codes (B, H, W) [+ cond] -> logits (B, K, H, W)."""

    def __init__(self, codebook_size: int, channels: int, kernel: int, blocks: int, residual: int, heads: int,
                 key_channels: int, value_channels: int, cond_channels: int, cond_layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(codebook_size, channels)
        self.input_down = CausalConv2d(channels, channels, (kernel // 2 + 1, kernel), "down")
        self.input_right = CausalConv2d(channels, channels, (1, kernel // 2 + 1), "downright")
        self.cond_stack = ConditionStack(cond_channels, channels, cond_layers) if cond_channels else None
        c = channels if cond_channels else 0
        self.residual = nn.ModuleList(
            nn.ModuleList(GatedResidual(channels, kernel, c, dropout) for _ in range(residual)) for _ in range(blocks))
        self.attention = nn.ModuleList(
            AttentionBlock(channels, key_channels, value_channels, heads) for _ in range(blocks))
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(channels, codebook_size, 1))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(self.embed(codes).permute(0, 3, 1, 2), cond)

    def forward_embedded(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The same from embedded codes x (B, channels, H, W) (differentiable: the causality tests use it)."""
        b, _, h, w = x.shape
        rows = torch.linspace(-0.5, 0.5, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        cols = torch.linspace(-0.5, 0.5, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        position = torch.cat([rows, cols], 1)
        # Strictly causal start: rows above (input shifted down one row), same row to the left (shifted right).
        f = self.input_down(F.pad(x, (0, 0, 1, 0))[..., :-1, :]) + self.input_right(F.pad(x, (1, 0))[..., :-1])
        shifted = raster_shift(x)
        c = self.cond_stack(cond) if self.cond_stack is not None else None
        for residual, attention in zip(self.residual, self.attention):
            for block in residual:
                f = block(f, c)
            f = attention(f, shifted, position)
        return self.head(f)

    def sampler(self, cond: torch.Tensor | None, n: int, h: int, w: int) -> _SNAILSteps:
        return _SNAILSteps(self, cond, n, h, w)


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution on (B, C) vectors."""
    return F.linear(x, conv.weight[:, :, 0, 0], conv.bias)


class _SNAILSteps:
    """`PixelSNAIL`'s logits one position at a time, in raster order: `steps(codes, i, j)` -> (B, K), given
    codes (B, H, W) known before (i, j) (what comes after is not read).

    Every layer's features at a position depend on earlier positions only (module docstring), so those of
    positions already sampled stay as they were: each layer's input is kept in a map, and at (i, j) only
    (i, j) is computed, a causal convolution as one product over its window of the map (`conv_at`), an
    attention block as one query against the keys and values of positions <= (i, j), kept as they come.
    The conditioning stack (non-causal, but its input is known before sampling) runs once on the whole
    map. Per map, H W positions are computed instead of (H W)^2."""

    def __init__(self, net: PixelSNAIL, cond: torch.Tensor | None, n: int, h: int, w: int):
        self.net, self.w = net, w
        like = net.embed.weight
        c, pad = net.embed.embedding_dim, max(net.input_down.kernel_size)
        self.x = SamplerMap(n, c, h, w, pad, like)
        rows = torch.linspace(-0.5, 0.5, h, device=like.device, dtype=like.dtype).view(h, 1).expand(h, w)
        cols = torch.linspace(-0.5, 0.5, w, device=like.device, dtype=like.dtype).view(1, w).expand(h, w)
        self.position = torch.stack([rows, cols])  # (2, H, W), as in forward_embedded
        stack = net.cond_stack(cond) if net.cond_stack is not None else None
        self.cond = [[None if b.cond is None else b.cond(stack) for b in blocks] for blocks in net.residual]
        # per gated block, the maps its two convolutions read: ELU(input) and dropout(ELU(conv1))
        self.maps = [[(SamplerMap(n, c, h, w, pad, like), SamplerMap(n, c, h, w, pad, like)) for _ in blocks]
                     for blocks in net.residual]
        self.keys = [like.new_zeros(n, a.attention.heads, h * w, a.attention.key.out_channels // a.attention.heads)
                     for a in net.attention]
        self.values = [like.new_zeros(n, a.attention.heads, h * w, a.attention.value.out_channels // a.attention.heads)
                       for a in net.attention]

    @staticmethod
    def _causal(conv: CausalConv2d, m: SamplerMap, i: int, j: int) -> torch.Tensor:
        left, _, top, _ = conv.padding_lrtb
        kh, kw = conv.kernel_size
        return conv_at(conv, m.window(i - top, j - left, kh, kw))

    def __call__(self, codes: torch.Tensor, i: int, j: int) -> torch.Tensor:
        net, n, t = self.net, len(codes), i * self.w + j
        if t:
            pi, pj = divmod(t - 1, self.w)
            self.x.put(pi, pj, net.embed(codes[:, pi, pj]))
            shifted = self.x.window(pi, pj, 1, 1)[:, :, 0, 0]  # raster_shift: the input one step back
        else:
            shifted = self.x.t.new_zeros(n, self.x.t.shape[1])
        position = self.position[:, i, j].expand(n, 2)
        # input_down on the map shifted down one row, input_right on it shifted right one column
        f = self._causal(net.input_down, self.x, i - 1, j) + self._causal(net.input_right, self.x, i, j - 1)
        for k, (blocks, attention) in enumerate(zip(net.residual, net.attention)):
            for b, block in enumerate(blocks):
                elu_in, elu_mid = self.maps[k][b]
                elu_in.put(i, j, F.elu(f))
                elu_mid.put(i, j, block.dropout(F.elu(self._causal(block.conv1, elu_in, i, j))))
                g = self._causal(block.conv2, elu_mid, i, j)
                if self.cond[k][b] is not None:
                    g = g + self.cond[k][b][:, :, i, j]
                a, gate = g.chunk(2, 1)
                f = f + a * torch.sigmoid(gate)
            att = attention.attention
            heads = att.heads
            kv_in = torch.cat([f, shifted, position], 1)
            self.keys[k][:, :, t] = _pointwise(att.key, kv_in).view(n, heads, -1)
            self.values[k][:, :, t] = _pointwise(att.value, kv_in).view(n, heads, -1)
            q = _pointwise(att.query, torch.cat([f, position], 1)).view(n, heads, 1, -1)
            out = F.scaled_dot_product_attention(q, self.keys[k][:, :, : t + 1], self.values[k][:, :, : t + 1])
            a, gate = _pointwise(attention.out, F.elu(out.reshape(n, -1))).chunk(2, 1)
            f = f + a * torch.sigmoid(gate)
        return _pointwise(net.head[1], F.elu(f))


@dataclass
class PixelSNAILConfig(CodePriorConfig):
    channels: int = number(64, 1)  # feature channels (Razavi et al.: 256 on ImageNet)
    blocks: int = number(2, 1)  # each: `residual` gated residual blocks, then one attention block
    residual: int = number(2, 1)  # gated residual blocks before each attention block
    heads: int = number(4, 1)  # attention heads
    key_channels: int = number(32, 1)  # query/key channels over all heads
    value_channels: int = number(64, 1)  # value channels over all heads
    cond_layers: int = number(2, 0)  # residual blocks of the conditioning stack (top codes, class)
    dropout: float = number(0.0, 0.0, 1.0, hi_open=True)  # Razavi et al. use 0.1 on long runs

    def validate(self) -> None:
        super().validate()
        if self.key_channels % self.heads or self.value_channels % self.heads:
            raise AezooError(
                f"prior.key_channels ({self.key_channels}) and prior.value_channels "
                f"({self.value_channels}) must be multiples of prior.heads ({self.heads})"
            )


@register(
    "pixelsnail",
    "PixelSNAIL prior over code maps (Chen 2018): gated causal convolutions and causal "
    "self-attention; later levels conditioned on earlier ones (VQ-VAE-2)",
    default_data="codes",
    tiny={
        "channels": 8,
        "blocks": 1,
        "residual": 1,
        "heads": 2,
        "key_channels": 4,
        "value_channels": 8,
        "cond_layers": 1,
        "codebook_sizes": (8, 8),
        "code_shapes": (2, 2, 4, 4),
        "data_shape": (21,),
    },
    prior=True,
)
class PixelSNAILPrior(CodePrior):
    config_class = PixelSNAILConfig

    def make_net(self, codebook_size: int, cond_channels: int) -> nn.Module:
        c = self.config
        return PixelSNAIL(
            codebook_size,
            c.channels,
            c.kernel,
            c.blocks,
            c.residual,
            c.heads,
            c.key_channels,
            c.value_channels,
            cond_channels,
            c.cond_layers,
            c.dropout,
        )
