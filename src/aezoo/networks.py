"""Building blocks shared by the models: MLPs and convolutional encoders/decoders.

An encoder maps data (B, *data_shape) to features (B, out_features); a decoder maps (B, in_features)
to (B, out_channels, H, W) for images or (B, out_channels * D) reshaped by the caller for vectors.
Convolutional stacks halve (double) the resolution at each layer with 4x4 kernels, stride 2, as in
the DCGAN-style encoders of Higgins et al. (2017) and Burgess et al. (2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import choice
from .errors import AezooError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


@dataclass
class BackboneConfig:
    """Encoder/decoder architecture. `hidden` are the MLP widths (after the convolutions for conv)."""

    backbone: str = choice("mlp", "conv")  # fully connected layers, or stride-2 convolutions then them
    hidden: tuple[int, ...] = (512, 256)  # widths of the fully connected layers (the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv only: channels of each stride-2 layer
    activation: str = choice("relu", *(a for a in ACTIVATIONS if a != "relu"))  # the hidden layers' nonlinearity
    # widths of the decoder's fully connected layers, from the code up (empty: the encoder's, mirrored)
    decoder_hidden: tuple[int, ...] = ()
    decoder_activation: str = choice("same", *ACTIVATIONS)  # the decoder's nonlinearity (same: model.activation)

    def check_backbone(self, data_shape: tuple[int, ...]) -> None:
        if any(h < 1 for h in (*self.hidden, *self.decoder_hidden, *self.channels)):
            raise AezooError("model.hidden, model.decoder_hidden and model.channels must be positive")
        if self.backbone == "conv":
            if len(data_shape) != 3:
                raise AezooError(f"model.backbone=conv needs images (C, H, W); data has shape {data_shape}")
            if not self.channels:
                raise AezooError("model.backbone=conv needs at least one entry in model.channels")
            factor = 2 ** len(self.channels)
            if data_shape[1] % factor or data_shape[2] % factor:
                raise AezooError(
                    f"model.channels has {len(self.channels)} stride-2 layers, so image sides must be "
                    f"multiples of {factor}; data is {data_shape[1]}x{data_shape[2]} (try data.pad_to)"
                )


def mlp(sizes: list[int], activation: str, final_activation: bool = False) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, `activation` between them (and after, if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(B, *data_shape) -> (B, out_features)."""

    def __init__(self, cfg: BackboneConfig, data_shape: tuple[int, ...], out_features: int):
        super().__init__()
        cfg.check_backbone(data_shape)
        act = cfg.activation
        if cfg.backbone == "conv":
            c, h, w = data_shape
            convs: list[nn.Module] = []
            for c_in, c_out in zip((c, *cfg.channels[:-1]), cfg.channels):
                convs += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ACTIVATIONS[act]()]
            self.features = nn.Sequential(*convs, nn.Flatten())
            flat = cfg.channels[-1] * (h >> len(cfg.channels)) * (w >> len(cfg.channels))
        else:
            self.features = nn.Flatten()
            flat = math.prod(data_shape)
        self.head = mlp([flat, *cfg.hidden], act, final_activation=True) if cfg.hidden else nn.Identity()
        self.out = nn.Linear(cfg.hidden[-1] if cfg.hidden else flat, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.head(self.features(x)))


class Decoder(nn.Module):
    """(B, in_features) -> (B, params_per_dim * C, H, W) for images, (B, params_per_dim * D) otherwise.

    `params_per_dim` is how many numbers the likelihood needs per data dimension (1 for a Bernoulli
    logit, 2 for a Gaussian mean and log-variance)."""

    def __init__(self, cfg: BackboneConfig, data_shape: tuple[int, ...], in_features: int, params_per_dim: int = 1):
        super().__init__()
        cfg.check_backbone(data_shape)
        act = cfg.activation if cfg.decoder_activation == "same" else cfg.decoder_activation
        widths = list(cfg.decoder_hidden or reversed(cfg.hidden))
        self.head = mlp([in_features, *widths], act, final_activation=True) if widths else nn.Identity()
        last = widths[-1] if widths else in_features
        self.out_shape = (params_per_dim * data_shape[0], *data_shape[1:])
        if cfg.backbone == "conv":
            c, h, w = data_shape
            n = len(cfg.channels)
            chans = list(reversed(cfg.channels))
            self.start_shape = (chans[0], h >> n, w >> n)
            self.project = nn.Sequential(nn.Linear(last, math.prod(self.start_shape)), ACTIVATIONS[act]())
            layers: list[nn.Module] = []
            for c_in, c_out in zip(chans, chans[1:]):
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), ACTIVATIONS[act]()]
            layers.append(nn.ConvTranspose2d(chans[-1], params_per_dim * c, 4, stride=2, padding=1))
            self.body = nn.Sequential(*layers)
        else:
            self.start_shape = None
            self.project = nn.Linear(last, params_per_dim * math.prod(data_shape))
            self.body = nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(self.head(z))
        if self.start_shape is not None:
            h = h.view(-1, *self.start_shape)
        return self.body(h).reshape(-1, *self.out_shape)
