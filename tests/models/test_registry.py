"""Properties every registered model must have, parametrised over the registry."""

import pytest
import torch

import aezoo
from aezoo.registry import MODELS


def tiny(name):
    model = aezoo.build(name, **MODELS[name].tiny)
    x = torch.rand(6, *model.config.data_shape).round()  # binary data suits every likelihood
    return model, x


@pytest.fixture(params=sorted(MODELS))
def name(request):
    return request.param


def test_loss_is_finite_with_named_terms(name):
    model, x = tiny(name)
    out = model.loss(x)
    assert out.total.shape == () and torch.isfinite(out.total)
    assert out.terms and all(v.shape == () and torch.isfinite(v) for v in out.terms.values())


def test_gradients_reach_every_parameter(name):
    model, x = tiny(name)
    for step in (0, 10**6):  # early and late in any schedule (k-sparse, capacity, layer-wise pretraining)
        model.zero_grad()
        model.loss(x, step).total.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"no gradient reaches {missing}"


def test_encode_decode_shapes(name):
    model, x = tiny(name)
    model.eval()
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape[0] == len(x)
        out = model.decode(z)
    assert out.shape[0] == len(x)


def test_save_load_round_trip(name, tmp_path):
    model, x = tiny(name)
    model.eval()
    model.save(tmp_path / "m")
    loaded = aezoo.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))


def test_visuals_are_images_in_unit_range(name):
    model, x = tiny(name)
    model.eval()
    with torch.no_grad():
        for key, images in model.visuals(x).items():
            assert images.dim() == 4 and images.shape[1] in (1, 3), key
            assert images.min() >= 0 and images.max() <= 1, key
