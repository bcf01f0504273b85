"""VQ-VAE-2 (Razavi et al. 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2"; Weng 2018,
section "VQ-VAE and VQ-VAE-2").

Two levels of discrete latents (Razavi et al., sec. 3.1, fig. 2a and algorithm 1):
    h_bottom = E_bottom(x)                                      (C_h, H / 2^b, W / 2^b)
    e_top    = Quantize_top(E_top(h_bottom))                    (D, H / 2^(b+t), W / 2^(b+t)): global structure
    e_bottom = Quantize_bottom(W [h_bottom, D_top(e_top)])      (D, H / 2^b, W / 2^b): local detail, given the top
    x_hat    = D([U(e_top), e_bottom])
with b = `bottom_downsample`, t = `top_downsample` (2 and 1 by default: 32x32 images give an 8x8
bottom and a 4x4 top map, the paper's 1/4 and 1/8), D_top the top decoder whose output conditions the
bottom encoder (concatenated), U transposed convolutions that upsample the top codes to the bottom
map, and D the decoder taking both. Each level has its own codebook (`aezoo.quantize`: EMA with
Laplace smoothing, dead-code restart, optional k-means; one set of quantiser settings for both; or
another quantiser, `model.quantizer=fsq|rvq|gumbel`, see `aezoo.quantize` and `models.vqvae`). The
loss is
    L = -log p(x | e_top, e_bottom) + sum_level ( ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 )
logged as `recon`, `codebook_top`, `commitment_top`, `codebook_bottom`, `commitment_bottom`
(commitment unweighted; with EMA codebooks the codebook terms are logged without gradient), i.e. each
level's `Quantizer.terms` suffixed with the level's name. The code levels are the top quantiser's code
maps, then the bottom one's: `top`, `bottom`, or with rvq `top_depth1`, ..., `bottom_depth1`, ...

Image sides need not be multiples of 2^(b+t): the model zero-pads its input symmetrically up to the
next multiple (MNIST's 28x28 becomes 32x32) and crops the decoder's output back, so p(x | codes) and
every image it returns have the data's shape; the code maps are those of the padded image.

Stage 2 (`aezoo train-prior RUN`) fits PixelSNAIL priors (`models.pixelsnail`): the top map
unconditionally (or given the class), the bottom map given the top codes; `sample` then draws top,
then bottom given top, and decodes (`capabilities.CodeModel`).

Reconstruction from the top level only (`reconstruct_top_only`, the comparison of Razavi et al.,
fig. 3: each level adds detail) replaces the bottom map by one that carries no other information about
the image: by default one constant vector at every position, the mean of the bottom codebook weighted
by how often each code is chosen (the EMA counts N_i; uniform for a codebook learned by gradient),
i.e. the expected bottom code (`Quantizer.expected_code`: for rvq the sum of its stages', for fsq the
grid's mean, for gumbel the codebook's plain mean); `fill="zero"` uses zero vectors; `fill="prior"`
draws the bottom codes from the trained bottom prior given the image's top codes, what the top level
alone determines under the two-stage model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import number
from ..distributions import make_likelihood
from ..errors import AezooError
from ..quantize import Quantized, make_quantizer
from ..registry import register
from . import pixelsnail  # noqa: F401  (registers the default prior)
from .base import Loss, interleave_rows
from .capabilities import CodeLevel, CodeModel
from .vqvae import ConvDecoder, ConvEncoder, VQConfig


@dataclass
class VQVAE2Config(VQConfig):
    bottom_downsample: int = number(2, 1)  # b: the bottom map is (H / 2^b, W / 2^b)
    top_downsample: int = number(1, 1)  # t: the top map is 2^t times coarser than the bottom one


def _round_up(n: int, factor: int) -> int:
    return -(-n // factor) * factor


@register("vqvae2", "VQ-VAE-2: top and bottom code maps, EMA codebooks; PixelSNAIL priors (train-prior), bits/dim",
          tiny={"hidden": 8, "residual_hidden": 4, "residual_layers": 1, "codebook_size": 8, "code_dim": 4})
class VQVAE2(CodeModel):
    config_class = VQVAE2Config
    default_prior = "pixelsnail"

    def __init__(self, config: VQVAE2Config):
        super().__init__(config)
        config.validate()
        c, h, w = config.data_shape
        b, t, d = config.bottom_downsample, config.top_downsample, config.code_dim
        factor = 2 ** (b + t)
        self.padded = (_round_up(h, factor), _round_up(w, factor))
        self.likelihood = make_likelihood(config.likelihood, config.sigma)
        arch = (config.hidden, config.residual_hidden, config.residual_layers)
        self.encoder_bottom = ConvEncoder(c, config.hidden, *arch, b)
        self.encoder_top = ConvEncoder(config.hidden, d, *arch, t)
        self.quantizer_top = make_quantizer(config)
        self.decoder_top = ConvDecoder(d, d, *arch, t)  # its output conditions the bottom encoder
        self.bottom_in = nn.Conv2d(config.hidden + d, d, 1)
        self.quantizer_bottom = make_quantizer(config)
        ups: list[nn.Module] = []
        for i in range(t):
            ups += [nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)] + ([nn.ReLU()] if i < t - 1 else [])
        self.upsample_top = nn.Sequential(*ups)
        self.decoder = ConvDecoder(2 * d, c * self.likelihood.params_per_dim, *arch, b)

    # --- padding to a multiple of 2^(b+t) -------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (h, w) = self.padded, x.shape[-2:]
        top, left = (ph - h) // 2, (pw - w) // 2
        return F.pad(x, (left, pw - w - left, top, ph - h - top))

    def _crop(self, out: torch.Tensor) -> torch.Tensor:
        _, h, w = self.config.data_shape
        top, left = (self.padded[0] - h) // 2, (self.padded[1] - w) // 2
        return out[..., top:top + h, left:left + w]

    # --- the two levels -------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor, step: int = 0) -> tuple[Quantized, Quantized]:
        """(top, bottom) quantiser outputs for images x (B, *data_shape) at training step `step`."""
        h = self.encoder_bottom(self._pad(x))  # (B, hidden, H/2^b, W/2^b)
        top = self.quantizer_top(self.encoder_top(h), step)
        bottom = self.quantizer_bottom(self.bottom_in(torch.cat([h, self.decoder_top(top.z_q)], 1)), step)
        return top, bottom

    def decoder_input(self, z_top: torch.Tensor, z_bottom: torch.Tensor) -> torch.Tensor:
        """[U(e_top), e_bottom]: (B, 2D, H/2^b, W/2^b), the decoder's input."""
        return torch.cat([self.upsample_top(z_top), z_bottom], 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Both levels' code vectors as the decoder takes them, (B, 2D, H/2^b, W/2^b); `codes(x)` gives
        the indices of each level."""
        top, bottom = self.quantize(x)
        return self.decoder_input(top.z_q, bottom.z_q)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z) for z = `encode(x)`, (B, *data_shape)."""
        return self.likelihood.mean(self._crop(self.decoder(z)))

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        top, bottom = self.quantize(x, step)
        out = self._crop(self.decoder(self.decoder_input(top.z_q, bottom.z_q)))
        recon = -self.likelihood.log_prob(out.float(), x).mean()
        terms = {"recon": recon}
        for name, q, quantizer in (("top", top, self.quantizer_top), ("bottom", bottom, self.quantizer_bottom)):
            terms.update({f"{k}_{name}": v for k, v in quantizer.terms(q).items()})
        return Loss(recon + top.loss + bottom.loss, terms)

    @property
    def skips_parameters(self) -> bool:
        return self.quantizer_top.skips_parameters  # rvq's dropped codebooks, when learned by gradient

    def on_train_start(self, x: torch.Tensor) -> None:
        """k-means initialisation of the top codebook, then of the bottom one on the encoder outputs
        it meets given the initialised top codes."""
        iters = self.config.kmeans_iters
        if not iters:
            return
        with torch.no_grad():
            h = self.encoder_bottom(self._pad(x))
            z_top = self.encoder_top(h)
            self.quantizer_top.kmeans_init(z_top, iters)
            e_top = self.quantizer_top.lookup(self.quantizer_top.assign(z_top))  # no EMA step
            self.quantizer_bottom.kmeans_init(self.bottom_in(torch.cat([h, self.decoder_top(e_top)], 1)), iters)

    # --- reconstructions from the top level alone -----------------------------------------------
    def bottom_fill(self, fill: str = "mean") -> torch.Tensor:
        """The constant bottom code vector (D,) standing in for the bottom map: `mean` (expected code
        under the EMA counts) or `zero` (module docstring)."""
        mean = self.quantizer_bottom.expected_code()
        return torch.zeros_like(mean) if fill == "zero" else mean

    def reconstruct_top_only(self, x: torch.Tensor, fill: str = "mean", temperature: float = 1.0,
                             labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of p(x | top codes of x, a bottom map that knows nothing else of x), (B, *data_shape):
        the bottom map is the constant `bottom_fill(fill)` for `mean` and `zero`; for `prior` it is drawn
        from the bottom prior given the top codes (and `labels` for a class-conditional prior)."""
        if fill not in ("mean", "zero", "prior"):
            raise AezooError(f"fill must be 'mean', 'zero' or 'prior', got {fill!r}")
        top = self.quantizer_top.assign(self.encoder_top(self.encoder_bottom(self._pad(x))))
        return self.decode_top_only(self.quantizer_top.code_maps(top), fill, temperature, labels)

    def decode_top_only(self, codes: list[torch.Tensor], fill: str = "mean", temperature: float = 1.0,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
        """`reconstruct_top_only` from code maps as `codes(x)` gives them (only the top level's are read):
        the same images, without encoding x again."""
        qt = self.quantizer_top
        top = codes[:qt.depth]
        if fill == "prior":
            return self.decode_codes(self.require_prior().sample(len(top[0]), temperature, labels, given=top))
        z_top = qt.lookup(qt.join_maps(top))
        _, _, h, w = z_top.shape
        scale = 2 ** self.config.top_downsample
        z_bottom = self.bottom_fill(fill).view(1, -1, 1, 1).expand(len(z_top), -1, h * scale, w * scale)
        return self.decode(self.decoder_input(z_top, z_bottom))

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().visuals(x)
        if x.dim() == 4:
            x = x[:32]
            out["reconstructions_top_only"] = interleave_rows(x, self.reconstruct_top_only(x).clamp(0, 1))
            if self.prior is not None:
                out["reconstructions_top_prior"] = interleave_rows(x, self.reconstruct_top_only(x, "prior").clamp(0, 1))
        return out

    # --- the discrete-code interface (capabilities.CodeModel) ------------------------------------
    def code_levels(self) -> list[CodeLevel]:
        c = self.config
        (h, w), b, t = self.padded, c.bottom_downsample, c.top_downsample
        qt, qb = self.quantizer_top, self.quantizer_bottom
        return [*(CodeLevel(n, qt.codebook_size, (h >> (b + t), w >> (b + t))) for n in qt.level_names("top")),
                *(CodeLevel(n, qb.codebook_size, (h >> b, w >> b)) for n in qb.level_names("bottom"))]

    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        top, bottom = self.quantize(x)
        return [*self.quantizer_top.code_maps(top.codes), *self.quantizer_bottom.code_maps(bottom.codes)]

    def code_vectors(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """`CodeModel.code_vectors`: the code vectors of both levels, (B, 2D, H/2^b, W/2^b)."""
        qt, qb = self.quantizer_top, self.quantizer_bottom
        if len(codes) != qt.depth + qb.depth:
            raise AezooError(f"vqvae2 decodes {qt.depth + qb.depth} code maps (top, then bottom), got {len(codes)}")
        top, bottom = qt.join_maps(codes[:qt.depth]), qb.join_maps(codes[qt.depth:])
        return self.decoder_input(qt.lookup(top), qb.lookup(bottom))

    def decoder_params(self, codes: list[torch.Tensor]) -> torch.Tensor:
        return self._crop(self.decoder(self.code_vectors(codes)))
