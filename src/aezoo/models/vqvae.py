"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"; Weng 2018, section
"VQ-VAE and VQ-VAE-2").

The encoder maps an image to a (D, H/2^n, W/2^n) map of vectors z_e; each is replaced by its nearest
code e_k of a K x D codebook (`aezoo.quantize`), and the decoder maps the code vectors back to the
parameters of p(x | z_q). The loss is the survey's
    L = -log p(x | z_q) + ||sg[z_e] - e_k||^2 + beta ||z_e - sg[e_k]||^2
named `recon`, `codebook` and `commitment` (the last unweighted; beta = 0.25 by default). With the
default EMA codebook the codebook term is logged but carries no gradient (the EMA moves the codes).

Architecture (paper, sec. 4.1): two 4x4 stride-2 convolutions (`downsample` of them), a 3x3
convolution, a residual stack of ReLU-3x3-ReLU-1x1 blocks and a 1x1 convolution to D channels; the
decoder mirrors it with transposed 4x4 stride-2 convolutions. The paper uses 256 channels; the
default here is 64, a size that trains on a laptop CPU.

p(x | z_q) is by default the discretised logistic of 8-bit pixels (a probability over the 256 pixel
values, so that -log p(x) is bounded: bits/dim in `aezoo.evaluation.codes`); `bernoulli` suits binarised data and
`gaussian` (fixed sigma: the paper's squared error) has no bits/dim. Stage 2 (`aezoo train-prior`)
fits a gated PixelCNN over the code maps, after which `sample` draws images.

The quantiser is chosen by `model.quantizer` (`aezoo.quantize`): `vq` (the above, the default),
`fsq` (finite scalar quantisation: set code_dim to len(fsq_levels)), `rvq` (residual VQ, rvq_depth
codebooks) or `gumbel` (Gumbel-softmax over K codes, tau annealed with the training step). The loss
terms are the quantiser's (`Quantizer.terms`: codebook and commitment, 0 for fsq and gumbel; gumbel
adds `kl` and `tau`). The code levels are the quantiser's code maps: one map `codes`, or for rvq one
per depth, `codes_depth1`, `codes_depth2`, ..., each a level of the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig, choice, number
from ..distributions import make_likelihood
from ..errors import AezooError
from ..quantize import Quantized, QuantizerConfig, make_quantizer
from ..registry import register
from .base import Loss
from .capabilities import CodeLevel, CodeModel


class ResidualStack(nn.Module):
    """`layers` blocks x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), then a ReLU (van den Oord 2017, sec. 4.1)."""

    def __init__(self, channels: int, hidden: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return torch.relu(x)


class ConvEncoder(nn.Sequential):
    """(B, c_in, H, W) -> (B, c_out, H / 2^downsample, W / 2^downsample): stride-2 4x4 convolutions
    (half the channels before the last), a 3x3 convolution, a residual stack, a 1x1 convolution."""

    def __init__(self, c_in: int, c_out: int, hidden: int, residual_hidden: int, residual_layers: int, downsample: int):
        layers: list[nn.Module] = []
        for i in range(downsample):
            width = hidden if i == downsample - 1 else hidden // 2
            layers += [nn.Conv2d(c_in, width, 4, stride=2, padding=1), nn.ReLU()]
            c_in = width
        layers += [
            nn.Conv2d(c_in, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
            nn.Conv2d(hidden, c_out, 1),
        ]
        super().__init__(*layers)


class ConvDecoder(nn.Sequential):
    """(B, c_in, h, w) -> (B, c_out, h * 2^upsample, w * 2^upsample): the mirror of `ConvEncoder`."""

    def __init__(self, c_in: int, c_out: int, hidden: int, residual_hidden: int, residual_layers: int, upsample: int):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
        ]
        c = hidden
        for i in range(upsample):
            last = i == upsample - 1
            width = c_out if last else hidden // 2
            layers.append(nn.ConvTranspose2d(c, width, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            c = width
        super().__init__(*layers)


@dataclass
class VQConfig(ModelConfig, QuantizerConfig):
    """What VQ-VAE and VQ-VAE-2 share: the convolutional stacks, the quantiser and the likelihood."""

    hidden: int = number(64, 2)  # channels of the convolutional stacks (VQ-VAE: 256; VQ-VAE-2: 128 on ImageNet)
    residual_hidden: int = number(32, 1)  # channels inside each residual block
    residual_layers: int = number(2, 0)  # residual blocks in each stack
    # p(x | codes): logistic for 8-bit images (bits/dim), bernoulli for binary data, gaussian (fixed sigma)
    likelihood: str = choice("logistic", "bernoulli", "gaussian")
    sigma: float = number(1.0, 0.0, None, lo_open=True)  # std of the fixed-variance Gaussian likelihood

    def validate(self) -> None:
        if len(self.data_shape) != 3:
            raise AezooError(f"VQ models need images (C, H, W); the data has shape {tuple(self.data_shape)}")
        self.check_quantizer()


@dataclass
class VQVAEConfig(VQConfig):
    downsample: int = number(2, 1)  # stride-2 layers: code maps are (H / 2^downsample, W / 2^downsample)

    def validate(self) -> None:
        super().validate()
        factor = 2**self.downsample
        if self.data_shape[1] % factor or self.data_shape[2] % factor:
            raise AezooError(
                f"model.downsample={self.downsample} needs image sides that are multiples of {factor}; "
                f"the data is {self.data_shape[1]}x{self.data_shape[2]} (try data.pad_to)"
            )


@register(
    "vqvae",
    "VQ-VAE: codebook with EMA and dead-code restart, gated PixelCNN prior (train-prior), bits/dim",
    tiny={"hidden": 8, "residual_hidden": 4, "residual_layers": 1, "codebook_size": 8, "code_dim": 4},
)
class VQVAE(CodeModel):
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        config.validate()
        c = config.data_shape[0]
        self.likelihood = make_likelihood(config.likelihood, config.sigma)
        arch = (config.hidden, config.residual_hidden, config.residual_layers, config.downsample)
        self.encoder = ConvEncoder(c, config.code_dim, *arch)
        self.quantizer = make_quantizer(config)
        self.decoder = ConvDecoder(config.code_dim, c * self.likelihood.params_per_dim, *arch)

    def quantize(self, x: torch.Tensor, step: int = 0) -> Quantized:
        return self.quantizer(self.encoder(x), step)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised latents z_q (B, D, h, w); `codes(x)` gives their indices."""
        return self.quantize(x).z_q

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z_q), (B, *data_shape)."""
        return self.likelihood.mean(self.decoder(z))

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        q = self.quantize(x, step)
        recon = -self.likelihood.log_prob(self.decoder(q.z_q).float(), x).mean()
        return Loss(recon + q.loss, {"recon": recon, **self.quantizer.terms(q)})

    @property
    def skips_parameters(self) -> bool:
        return self.quantizer.skips_parameters  # rvq's dropped codebooks, when learned by gradient

    def on_train_start(self, x: torch.Tensor) -> None:
        if self.config.kmeans_iters:
            with torch.no_grad():
                self.quantizer.kmeans_init(self.encoder(x), self.config.kmeans_iters)

    # --- the discrete-code interface (capabilities.CodeModel) ------------------------------------
    def code_levels(self) -> list[CodeLevel]:
        _, h, w = self.config.data_shape
        n = self.config.downsample
        k = self.quantizer.codebook_size
        return [CodeLevel(name, k, (h >> n, w >> n)) for name in self.quantizer.level_names("codes")]

    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.quantizer.code_maps(self.quantize(x).codes)

    def code_vectors(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """`CodeModel.code_vectors`: the quantised latents z_q, (B, D, h, w)."""
        return self.quantizer.lookup(self.quantizer.join_maps(codes))

    def decoder_params(self, codes: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.code_vectors(codes))
