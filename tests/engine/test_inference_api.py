"""Python inference: a loaded model is in eval mode with frozen parameters (its outputs carry no graph), a
model built for training is not, and bad input is refused in one line by every public method that takes
data."""

import copy

import pytest
import torch

import aezoo
from aezoo.errors import AezooError
from aezoo.models.capabilities import CodeModel, Generative, LikelihoodBound
from aezoo.registry import MODELS, entry


def tiny(name):
    model = aezoo.build(name, **entry(name).tiny)
    x = torch.rand(4, *model.config.data_shape, generator=torch.Generator().manual_seed(0)).round()
    return model, x


@pytest.fixture(params=sorted(MODELS))
def loaded(request, tmp_path):
    model, x = tiny(request.param)
    model.save(tmp_path / "m")
    return aezoo.load(tmp_path / "m"), x


def test_a_loaded_model_is_frozen_in_eval_mode_and_its_outputs_need_no_grad(loaded):
    model, x = loaded
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    z = model.encode(x)
    outputs = [z, model.decode(z), model.reconstruct(x)]
    if isinstance(model, Generative) and not isinstance(model, CodeModel):  # a code model samples from its prior
        outputs.append(model.sample(2))
    if isinstance(model, LikelihoodBound):
        outputs += [*model.elbo_parts(x), model.nll_iwae(x, k=2)]
    assert not any(out.requires_grad for out in outputs)


def test_a_model_built_for_training_has_trainable_parameters():
    model, x = tiny("vae")
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.loss(x).total.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_train_mode_makes_a_copy_of_a_loaded_model_trainable_and_leaves_the_original_frozen(tmp_path):
    model, x = tiny("ae")
    model.save(tmp_path / "m")
    original = aezoo.load(tmp_path / "m")
    tuned = copy.deepcopy(original).train()
    assert all(p.requires_grad for p in tuned.parameters())
    assert not any(p.requires_grad for p in original.parameters())
    tuned.eval()  # eval mode alone does not freeze a model: only the loaders do
    assert all(p.requires_grad for p in tuned.parameters())


def test_one_example_without_its_batch_axis_gives_one_result():
    model, x = tiny("vae")
    model.eval()
    torch.testing.assert_close(model.encode(x[1]), model.encode(x)[1])
    assert model.reconstruct(x[1]).shape == x.shape[1:]
    mean, std = model.posterior_moments(x[1])
    assert mean.shape == std.shape == (model.config.latent_dim,)


@pytest.mark.parametrize(("bad", "message"), [
    (lambda x: (x * 255).to(torch.uint8), r"^vae\.encode: expected floats in \[0, 1\]; got uint8: divide by 255$"),
    (lambda x: x.long(), r"^vae\.encode: expected floats in \[0, 1\]; got int64: x\.float\(\)$"),
    (lambda x: x[0, 0], r"^vae\.encode: expected \(N, 1, 28, 28\) or \(1, 28, 28\); got \(28, 28\)$"),
    (lambda x: x[:, :, :14], r"^vae\.encode: expected \(N, 1, 28, 28\) or \(1, 28, 28\); got \(4, 1, 14, 28\)$"),
    (lambda x: x[None], r"^vae\.encode: expected \(N, 1, 28, 28\) or \(1, 28, 28\); got \(1, 4, 1, 28, 28\)$"),
    (lambda x: x.numpy(), r"^vae\.encode: expected a torch tensor; got ndarray"),
    (lambda x: x.to("meta"), r"^vae\.encode: the model is on cpu, the input on meta: x\.to\(model\.device\)$"),
])
def test_bad_input_is_refused_in_one_line(bad, message):
    model = aezoo.build("vae", latent_dim=2, hidden=(8,), data_shape=(1, 28, 28))
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(AezooError, match=message):
        model.encode(bad(x))


def test_every_data_method_checks_and_vectors_are_not_called_images():
    model = aezoo.build("vae", latent_dim=2, hidden=(8,), data_shape=(5,))
    x = torch.rand(3, 5)
    for call in (model.reconstruct, model.posterior_moments, model.elbo_parts, lambda v: model.nll_iwae(v, k=2)):
        with pytest.raises(AezooError, match=r"expected \(N, 5\) or \(5,\); got \(3, 4\)"):
            call(x[:, :4])
    with pytest.raises(AezooError, match=r"^vae\.reconstruct: expected floats; got int64: x\.float\(\)$"):
        model.reconstruct(x.long())
    with pytest.raises(AezooError, match=r"^vae\.decode: expected float codes as encode gives them; got int64$"):
        model.decode(torch.zeros(3, 2, dtype=torch.long))


def test_a_sequence_model_takes_any_length_but_its_frames_must_fit():
    model, x = tiny("tdvae")
    model.eval()
    T, *frame = model.config.data_shape
    assert model.encode(x[:, : T - 2]).shape[0] == len(x)
    with pytest.raises(AezooError, match=r"expected \(N, T, " + ", ".join(map(str, frame))):
        model.encode(x[..., :-1])


def test_code_models_check_their_codes_input():
    model, x = tiny("vqvae")
    with pytest.raises(AezooError, match=r"^vqvae\.codes: expected floats in \[0, 1\]; got uint8"):
        model.codes((x * 255).to(torch.uint8))
