"""The decoder's own widths and nonlinearity (model.decoder_hidden, model.decoder_activation), and Adagrad."""

import pytest
import torch
from torch import nn

from aezoo import build
from aezoo.config import TrainConfig
from aezoo.errors import AezooError
from aezoo.optim import make_optimizer


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_decoder_mirrors_the_encoder_unless_given_its_own_layers():
    mirrored = build("vae", data_shape=(1, 8, 8), backbone="mlp", hidden=(12, 6), latent_dim=3)
    assert linear_shapes(mirrored.decoder) == [(3, 6), (6, 12), (12, 64)]
    # Higgins et al. (2017)'s dSprites layout: a 2-layer ReLU encoder and a 3-layer tanh decoder
    own = build("beta_vae", data_shape=(1, 8, 8), backbone="mlp", hidden=(12, 12), decoder_hidden=(5, 6, 7),
                decoder_activation="tanh", latent_dim=3)
    assert linear_shapes(own.encoder) == [(64, 12), (12, 12), (12, 6)]
    assert linear_shapes(own.decoder) == [(3, 5), (5, 6), (6, 7), (7, 64)]
    assert [type(m) for m in own.encoder.head if not isinstance(m, nn.Linear)] == [nn.ReLU, nn.ReLU]
    assert [type(m) for m in own.decoder.head if not isinstance(m, nn.Linear)] == [nn.Tanh] * 3


def test_bad_decoder_layouts_are_refused_in_one_line():
    with pytest.raises(AezooError, match="positive"):
        build("vae", data_shape=(1, 8, 8), backbone="mlp", decoder_hidden=(0,))
    with pytest.raises(AezooError, match="mirror"):
        build("dae", data_shape=(1, 8, 8), hidden=(12,), decoder_hidden=(7,), latent_dim=4, pretrain_steps=5)


@pytest.mark.parametrize("fused", [True, False])
def test_adagrad_step_equals_its_formula(fused):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5))
    grads = [torch.randn(5) for _ in range(3)]
    opt = make_optimizer([w], TrainConfig(optimizer="adagrad", lr=1e-2, eps=1e-10, fused_optimizer=fused))
    expected, acc = w.detach().clone(), torch.zeros(5)
    for g in grads:
        w.grad = g.clone()
        opt.step()
        acc += g * g
        expected -= 1e-2 * g / (acc.sqrt() + 1e-10)  # Duchi et al. (2011): a per-coordinate step
    torch.testing.assert_close(w.detach(), expected)
