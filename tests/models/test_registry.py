"""Properties every registered model and prior must have, parametrised over the registry."""

import pytest
import torch

import aezoo
from aezoo.models.base import Model
from aezoo.models.capabilities import CodeModel, Generative
from aezoo.models.priors import pack_codes
from aezoo.registry import MODELS, PRIORS, entry

EVERY = sorted(MODELS) + sorted(PRIORS)


def tiny(name):
    model = aezoo.build(name, **entry(name).tiny)
    g = torch.Generator().manual_seed(0)
    if name in PRIORS:  # rows of packed code maps, the data a prior is trained on
        codes = [torch.randint(k, (6, h, w), generator=g) for k, h, w in model.level_shapes]
        return model, pack_codes(codes)
    x = torch.rand(6, *model.config.data_shape, generator=g).round()  # binary data suits every likelihood
    return model, x


@pytest.fixture(params=EVERY)
def name(request):
    return request.param


@pytest.fixture(params=sorted(MODELS))
def autoencoder(request):
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


def test_encode_decode_shapes(autoencoder):
    model, x = tiny(autoencoder)
    assert isinstance(model, Model)
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
    torch.manual_seed(1)
    expected = model.loss(x).total
    torch.manual_seed(1)
    assert torch.equal(loaded.loss(x).total, expected)


def test_saving_over_another_models_folder_loads_what_was_saved(tmp_path):
    aezoo.build("vae", **MODELS["vae"].tiny).save(tmp_path / "m")
    ae = aezoo.build("ae", **MODELS["ae"].tiny)
    ae.save(tmp_path / "m")
    loaded = aezoo.load(tmp_path / "m")
    assert type(loaded) is type(ae) and loaded.config == ae.config


# VQ models sample through a trained prior (tests/models/test_vqvae*.py)
SAMPLERS = sorted(n for n, e in MODELS.items() if issubclass(e.model_class, Generative)
                  and not issubclass(e.model_class, CodeModel))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_generative_models_sample_images_in_unit_range(sampler):
    model, _ = tiny(sampler)
    model.eval()
    with torch.no_grad():
        images = model.sample(3, temperature=0.7)
    assert images.dim() == 4 and len(images) == 3 and images.shape[1] in (1, 3)
    assert images.min() >= 0 and images.max() <= 1


def test_visuals_are_images_in_unit_range(name):
    model, x = tiny(name)
    model.eval()
    with torch.no_grad():
        for key, images in model.visuals(x).items():
            assert images.dim() == 4 and images.shape[1] in (1, 3), key
            assert images.min() >= 0 and images.max() <= 1, key
