"""Interpolation between images decodes through every quantiser, residual VQ's several code maps included."""

import pytest
import torch

import aezoo
from aezoo.embed import interpolation_strip

SIZES = {"vq": {}, "rvq": {"rvq_depth": 2}, "fsq": {"code_dim": 3, "fsq_levels": (2, 2, 2)}, "gumbel": {}}


@pytest.mark.parametrize("quantizer", sorted(SIZES))
@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_interpolation_strip_ends_are_the_images_and_the_line_decodes(name, quantizer):
    config = {"hidden": 8, "residual_hidden": 4, "residual_layers": 1, "codebook_size": 8, "code_dim": 4,
              "quantizer": quantizer}
    model = aezoo.build(name, data_shape=(1, 16, 16), **{**config, **SIZES[quantizer]}).eval()
    a, b = torch.rand(1, 16, 16), torch.rand(1, 16, 16)
    strip = interpolation_strip(model, a, b, steps=4)
    assert strip.shape == (6, 1, 16, 16) and torch.equal(strip[0], a) and torch.equal(strip[-1], b)
    with torch.no_grad():  # the line's first point is a's own codes: its decoding is a's reconstruction
        assert torch.allclose(strip[1], model.decode_codes(model.codes(a[None])).clamp(0, 1)[0], atol=1e-6)
