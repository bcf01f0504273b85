"""The regularised autoencoders (Weng 2018, sections "Denoising", "Sparse", "k-Sparse" and "Contractive
Autoencoder"): the plain AE of `ae.py` with one of its hooks filled.

- `dae` (Vincent et al. 2008; 2010): the encoder sees a corrupted x~ ~ M_D(x~ | x) and the loss compares
  the reconstruction with the clean x: L_DAE = 1/n sum_i ||x_i - f(g(x~_i))||^2 (survey eq. L_DAE), or the
  cross-entropy. M_D by name (Vincent 2010, sec. 4.2): `mask` zeroes a fixed fraction nu of the input
  dimensions, drawn anew for each example; `mask_iid` zeroes each dimension independently with
  probability nu (the binomial masking of the deeplearning.net dA tutorial and of most code since: nu
  of the dimensions on average, a number that varies per example); `gaussian` adds N(0, sigma^2 I);
  `salt_pepper` sets a fixed fraction nu to the minimum or the maximum value by a fair coin flip.
  Greedy layer-wise pretraining of a stack (Vincent 2010, sec. 3.5 and fig. 3): with `pretrain_steps` > 0
  layer l is trained alone as a one-layer DAE of the (clean) output of the layers below it for
  `pretrain_steps` steps, bottom first, then the whole deep autoencoder, each layer's decoder stacked in
  reverse, is fine-tuned on the denoising criterion. The stage is a pure function of the training step,
  so one engine trains it and a resumed run follows the same schedule.
- `sparse_ae` (Ng, "Sparse autoencoder" notes; survey eq. L_SAE): sigmoid units and the penalty
  beta * sum_l sum_j KL(rho || rho_hat_j^(l)), rho_hat_j the unit's mean activation over the batch, on
  the layers named by `penalised_layers` (indices into [hidden layers..., code], -1 the code).
- `ksparse_ae` (Makhzani & Frey 2014): a linear code z = Wx + b of which only the k largest units of
  each example are kept (the gradient flows through those alone); k falls linearly from `k_start` to k
  over the first `k_schedule_steps` steps (their sec. 3.3: starting dense avoids dead units), and
  features are encoded with the alpha * k largest units (their algorithm 1, "sparse encoding").
- `cae` (Rifai et al. 2011): the penalty lambda * ||J_f(x)||_F^2 of the encoder's Jacobian (their eq. 1),
  computed by `losses`: their closed form for a one-layer encoder (eq. 2), the exact two-layer form, the
  batched Jacobian, or an unbiased random-projection estimate (`penalty`; `auto` picks the first that
  applies, the estimate when the Jacobian would hold over 2^18 numbers per example).

Defaults follow the papers' MNIST models: one layer of 1000 sigmoid units (linear for k-sparse, k = 25,
alpha = 3), cross-entropy reconstruction (squared error for k-sparse). Every model has the feature
probes of `aezoo.evaluation.features` in `aezoo eval`, and its first-layer filters in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..config import choice, number
from ..errors import AezooError
from ..networks import ACTIVATIONS
from ..registry import register
from .ae import AE, AEConfig, reconstruction_error
from .base import Loss, interleave_rows
from .capabilities import Denoising

# --- corruption M_D(x~ | x) (Vincent et al. 2010, sec. 4.2) -----------------------------------------


def fraction_mask(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """A boolean mask shaped like x with exactly round(fraction * D) of the D dimensions of each example
    chosen uniformly at random, anew for each example."""
    b, d = len(x), x[0].numel()
    n = round(fraction * d)
    u = torch.rand(b, d, device=x.device)  # the chosen dimensions: each row's n smallest values
    if 0 < n < d and b:
        # Selecting the n-th smallest is cheaper than sorting the row (bench/speed_paths.py). Each row of
        # `u <= kth` holds at least n; more only where the n-th is tied with the (n+1)-th (rare), and then
        # the sort's order decides, as it always did.
        chosen = u <= u.kthvalue(n, 1, keepdim=True).values
        if int(chosen.count_nonzero()) == b * n:
            return chosen.view_as(x)
    idx = u.argsort(1)[:, :n]
    return torch.zeros(b, d, dtype=torch.bool, device=x.device).scatter_(1, idx, True).view_as(x)


def mask_noise(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Masking noise: a fixed fraction of each example's dimensions set to 0."""
    return x * ~fraction_mask(x, fraction)  # a product: faster than masked_fill on CPU, equal for finite x


def iid_mask_noise(x: torch.Tensor, probability: float) -> torch.Tensor:
    """Each dimension set to 0 independently with `probability`."""
    return x * (torch.rand_like(x) >= probability)


def salt_pepper_noise(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Salt-and-pepper noise: a fixed fraction of each example's dimensions set to the minimum or the
    maximum value (of the batch: 0 and 1 for images in [0, 1]) by a fair coin flip."""
    chosen = fraction_mask(x, fraction)
    salt = torch.rand_like(x) < 0.5
    return torch.where(chosen, torch.where(salt, x.max(), x.min()), x)


def gaussian_noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Additive isotropic Gaussian noise N(0, sigma^2 I)."""
    return x + sigma * torch.randn_like(x)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or float64 if it is (mixed precision keeps the penalties in float32)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def filter_tiles(weight: torch.Tensor, data_shape: tuple[int, ...], n: int = 64) -> torch.Tensor:
    """The first n rows of `weight` (units, D) as images (n, C, H, W), each stretched to [0, 1]."""
    w = weight[:n].detach().float()
    lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    return ((w - lo) / (hi - lo).clamp_min(1e-12)).view(-1, *data_shape)


@dataclass
class RegularisedConfig(AEConfig):
    """The papers' MNIST model: one layer of 1000 sigmoid units, cross-entropy reconstruction."""

    hidden: tuple[int, ...] = ()
    latent_dim: int = number(1000, 1)
    activation: str = choice("sigmoid", *(a for a in ACTIVATIONS if a != "sigmoid"))
    code_activation: str = choice("sigmoid", "linear", *(a for a in ACTIVATIONS if a != "sigmoid"))


class RegularisedAE(AE):
    """Abstract: what the four models share, their first-layer filters in the report."""

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructions, and for MLPs on images the first encoder layer's filters (rows of W1) and the
        last decoder layer's (columns of its weight), as image tiles."""
        out = super().visuals(x)
        c = self.config
        if c.backbone == "mlp" and len(c.data_shape) == 3:
            first = self.encoder.head[0] if c.hidden else self.encoder.out
            out["encoder_filters"] = filter_tiles(first.weight, c.data_shape)
            out["decoder_filters"] = filter_tiles(self.decoder.project.weight.T, c.data_shape)
        return out


# --- denoising -----------------------------------------------------------------------------------


@dataclass
class DAEConfig(RegularisedConfig):
    corruption: str = choice("mask", "mask_iid", "gaussian", "salt_pepper")  # M_D (module docstring)
    # mask, mask_iid, salt_pepper: the fraction nu of input dimensions corrupted
    fraction: float = number(0.25, 0.0, 1.0)
    sigma: float = number(0.5, 0.0)  # gaussian: the noise's standard deviation
    # > 0: greedy layer-wise pretraining, this many steps per layer (bottom first), then fine-tuning
    pretrain_steps: int = number(0, 0)

    def validate(self) -> None:
        if self.pretrain_steps and self.backbone != "mlp":
            raise AezooError("model.pretrain_steps (layer-wise pretraining) needs model.backbone=mlp")
        if self.pretrain_steps and self.decoder_hidden and tuple(self.decoder_hidden) != tuple(reversed(self.hidden)):
            raise AezooError("model.pretrain_steps (layer-wise pretraining) needs the decoder to mirror the encoder: "
                             "leave model.decoder_hidden empty")


@register(
    "dae",
    "denoising autoencoder: mask / gaussian / salt-and-pepper corruption, optional greedy layer-wise pretraining",
    tiny={"hidden": (16,), "latent_dim": 8, "pretrain_steps": 5},
)
class DAE(RegularisedAE, Denoising):
    config_class = DAEConfig

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.corruption == "mask":
            return mask_noise(x, c.fraction)
        if c.corruption == "mask_iid":
            return iid_mask_noise(x, c.fraction)
        if c.corruption == "salt_pepper":
            return salt_pepper_noise(x, c.fraction)
        return gaussian_noise(x, c.sigma)

    def stack(self) -> list[tuple[nn.Linear, nn.Module, nn.Linear]]:
        """The layers of the deep autoencoder, bottom first: (encoder linear, its activation, the decoder
        linear that maps the layer's output back to its input). MLP backbone only."""
        head = list(self.encoder.head) if self.config.hidden else []
        up = [(head[i], head[i + 1]) for i in range(0, len(head), 2)] + [(self.encoder.out, self.code_activation)]
        down = [m for m in self.decoder.head if isinstance(m, nn.Linear)] if self.config.hidden else []
        return [(enc, act, dec) for (enc, act), dec in zip(up, [self.decoder.project, *reversed(down)])]

    @property
    def skips_parameters(self) -> bool:
        return self.config.pretrain_steps > 0  # layer-wise pretraining trains one layer at a time

    def pretraining_layer(self, step: int) -> int | None:
        """The layer (0 = bottom) pretrained at `step`, or None once the whole stack is fine-tuned."""
        c = self.config
        layer = step // c.pretrain_steps if c.pretrain_steps else None
        return layer if layer is not None and layer < len(c.hidden) + 1 else None

    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        layer = self.pretraining_layer(step)
        if layer is None:
            out = super().loss(x, step)
            if self.config.pretrain_steps:
                out.terms["pretrain_layer"] = torch.zeros((), device=x.device)
            return out
        recon = self.layer_loss(x, layer)
        return Loss(recon, {"recon": recon, "pretrain_layer": torch.tensor(float(layer + 1), device=x.device)})

    def layer_loss(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The denoising loss of one layer trained alone on the clean output of the (fixed) layers below:
        the data's own reconstruction loss for the bottom layer; above it, the cross-entropy for sigmoid
        units (targets in (0, 1), as Vincent 2010) and the squared error otherwise."""
        stack = self.stack()
        with torch.no_grad():
            target = self.encoder.features(x)
            for enc, act, _ in stack[:layer]:
                target = act(enc(target))
        enc, act, dec = stack[layer]
        out = dec(act(enc(self.corrupt(target))))
        if layer == 0:
            return reconstruction_error(out, target, self.config.loss_kind).mean()
        if self.config.activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1).mean()
        return (ACTIVATIONS[self.config.activation]()(out) - target).pow(2).sum(1).mean()

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Also rows of corrupted inputs, the clean images and the reconstructions of the corrupted ones."""
        out = super().visuals(x)
        if x.dim() == 4:
            clean = x[:24]
            noisy = self.corrupt(clean)
            out["denoising"] = interleave_rows(noisy.clamp(0, 1), clean, self.reconstruct(noisy).clamp(0, 1))
        return out


# --- sparse --------------------------------------------------------------------------------------


@dataclass
class SparseAEConfig(RegularisedConfig):
    rho: float = number(0.05, 0.0, 1.0, lo_open=True, hi_open=True)  # the target mean activation
    beta: float = number(3.0, 0.0)  # the penalty's weight
    # which layers are penalised: indices into [hidden layers..., code] (-1: the code)
    penalised_layers: tuple[int, ...] = (-1,)

    def validate(self) -> None:
        n = len(self.hidden) + 1
        if not self.penalised_layers:
            raise AezooError("model.penalised_layers must name at least one layer")
        for i in self.penalised_layers:
            if not -n <= i < n:
                raise AezooError(
                    f"model.penalised_layers: {i} is not a layer index (the encoder has {n} layers: "
                    f"{len(self.hidden)} hidden and the code, indices -{n}..{n - 1})"
                )
            act = self.code_activation if i % n == n - 1 else self.activation
            if act != "sigmoid":
                raise AezooError(
                    f"model.penalised_layers: layer {i} has {act} units; the KL of Bernoulli means "
                    f"needs sigmoid units (set model.{'code_activation' if i % n == n - 1 else 'activation'}=sigmoid)"
                )
        if len({i % n for i in self.penalised_layers}) != len(self.penalised_layers):
            raise AezooError("model.penalised_layers names a layer twice")


@register(
    "sparse_ae",
    "sparse autoencoder: sigmoid units, beta * KL(rho || mean activation) on chosen layers",
    tiny={"hidden": (16,), "latent_dim": 8, "penalised_layers": (0, 1)},
)
class SparseAE(RegularisedAE):
    config_class = SparseAEConfig

    def penalty(self, x: torch.Tensor, layers: list[torch.Tensor]) -> Loss:
        c = self.config
        rho_hat = [at_least_float32(layers[i]).mean(0) for i in c.penalised_layers]  # (H_l,) each
        kl = sum(losses.sparsity_kl(c.rho, r).sum() for r in rho_hat)
        active = torch.cat(rho_hat).detach().mean()
        return Loss(c.beta * kl, {"sparsity": kl, "mean_activation": active})


# --- k-sparse ------------------------------------------------------------------------------------


@dataclass
class KSparseAEConfig(RegularisedConfig):
    code_activation: str = choice("linear", *ACTIVATIONS)  # linear: the paper's
    likelihood: str = choice("gaussian", "bernoulli", "auto")  # gaussian: the paper's squared error
    k: int = number(25, 1)  # units kept per example in training
    k_start: int = number(100, 0)  # k at step 0, falling linearly to k (0: every unit, a dense start)
    k_schedule_steps: int = number(2_500, 0)  # steps of the fall (the paper: the first half of training)
    alpha: float = number(3.0, 1.0)  # features keep the alpha * k largest units

    def validate(self) -> None:
        if self.k > self.latent_dim:
            raise AezooError(f"model.k={self.k} is larger than model.latent_dim={self.latent_dim}")


@register(
    "ksparse_ae",
    "k-sparse autoencoder: linear code, top-k units kept (k scheduled from dense), alpha*k for features",
    tiny={"hidden": (16,), "latent_dim": 8, "k": 2, "k_start": 0, "k_schedule_steps": 10},
)
class KSparseAE(RegularisedAE):
    config_class = KSparseAEConfig

    def current_k(self, step: int | None) -> int:
        """k at training step `step`, from k_start (capped by latent_dim) down to k; k in evaluation
        (or with no step)."""
        c = self.config
        if step is None or not self.training or not c.k_schedule_steps:
            return c.k
        start = max(c.k, min(c.k_start or c.latent_dim, c.latent_dim))
        return round(start + (c.k - start) * min(1.0, step / c.k_schedule_steps))

    def sparsify(self, z: torch.Tensor, step: int | None) -> torch.Tensor:
        return losses.keep_topk(z, self.current_k(step))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features: the code with its alpha * k largest units kept (B, latent_dim)."""
        return losses.keep_topk(self.code(x), math.ceil(self.config.alpha * self.config.k))


# --- contractive ---------------------------------------------------------------------------------

PENALTIES = ("auto", "closed_form", "two_layer", "jacobian", "projection")
JACOBIAN_LIMIT = 2**18  # auto uses the estimate above this many Jacobian entries per example


@dataclass
class CAEConfig(RegularisedConfig):
    contractive_weight: float = number(0.1, 0.0)  # lambda
    penalty: str = choice(*PENALTIES)  # how ||J_f(x)||_F^2 is computed (module docstring)
    projections: int = number(1, 1)  # projection: random vectors per example

    def penalty_method(self) -> str:
        """The method `penalty` names, `auto` resolved: closed form, two-layer form, batched Jacobian, estimate."""
        mlp = self.backbone == "mlp"
        closed = mlp and not self.hidden and self.code_activation in losses.ELEMENTWISE_DERIVATIVES
        two = (
            mlp
            and len(self.hidden) == 1
            and self.code_activation == "linear"
            and self.activation in losses.ELEMENTWISE_DERIVATIVES
        )
        if self.penalty == "closed_form" and not closed:
            raise AezooError(
                "model.penalty=closed_form needs a one-layer MLP encoder (model.hidden=[]) with an "
                f"elementwise code activation ({', '.join(sorted(losses.ELEMENTWISE_DERIVATIVES))})"
            )
        if self.penalty == "two_layer" and not two:
            raise AezooError(
                "model.penalty=two_layer needs an MLP encoder with one hidden layer (model.hidden=[H]), "
                "model.code_activation=linear and an elementwise model.activation"
            )
        if self.penalty != "auto":
            return self.penalty
        if closed or two:
            return "closed_form" if closed else "two_layer"
        return "jacobian" if self.latent_dim * math.prod(self.data_shape) <= JACOBIAN_LIMIT else "projection"

    def validate(self) -> None:
        self.penalty_method()


@register(
    "cae",
    "contractive autoencoder: lambda * ||J_f(x)||_F^2, closed form / exact / batched Jacobian / estimate",
    tiny={"hidden": (16,), "latent_dim": 4},
)
class CAE(RegularisedAE):
    config_class = CAEConfig

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        self.method = config.penalty_method()

    def contraction(self, x: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
        """||J_f(x)||_F^2 per example (B,) of the code f(x), by `self.method` (an estimate for projection)."""
        c = self.config
        with torch.autocast(x.device.type, enabled=False):  # squares of small derivatives: kept in float32
            if self.method == "closed_form":
                ds = losses.activation_derivative(at_least_float32(layers[-1]), c.code_activation)
                return losses.contractive_one_layer(ds, at_least_float32(self.encoder.out.weight))
            if self.method == "two_layer":
                ds = losses.activation_derivative(at_least_float32(layers[0]), c.activation)
                return losses.contractive_two_layer(
                    ds, at_least_float32(self.encoder.head[0].weight), at_least_float32(self.encoder.out.weight)
                )
        if self.method == "jacobian":
            return losses.contractive_jacobian(self.code, x, c.latent_dim)
        return losses.contractive_estimate(self.code, x, c.latent_dim, c.projections)

    def penalty(self, x: torch.Tensor, layers: list[torch.Tensor]) -> Loss:
        j = self.contraction(x, layers).mean()
        return Loss(self.config.contractive_weight * j, {"contractive": j})
