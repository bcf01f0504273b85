"""The hot paths rewritten for speed give bit for bit what the plain formulas they replaced gave."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aezoo.config import TrainConfig
from aezoo.data import Batches, Dataset
from aezoo.data.base import mix_seed, prepare
from aezoo.distributions import LIKELIHOODS, standard_normal_log_prob
from aezoo.models.ae import reconstruction_error
from aezoo.models.regularised import fraction_mask
from aezoo.optim import make_optimizer
from aezoo.registry import build

# --- the data path ---------------------------------------------------------------------------------


def old_prepare(raw, scale, binarize, seed, rank=0, world=1):
    x = raw.float()
    if scale != 1.0:
        x = x / scale
    if binarize == "dynamic":
        g = torch.Generator(x.device).manual_seed(seed)
        u = torch.rand((len(x) * world, *x.shape[1:]), generator=g, device=x.device)[rank::world]
        x = (u < x).to(x.dtype)
    return x


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
@pytest.mark.parametrize("world", [1, 2])
def test_batches_equal_fancy_indexing_and_the_bool_draw(binarize, world):
    g = torch.Generator().manual_seed(0)
    ds = Dataset("fake", {"train": torch.randint(0, 256, (60, 1, 5, 5), dtype=torch.uint8, generator=g)}, scale=255.0)
    for rank in range(world):
        b = Batches(ds, "train", 8, binarize, seed=3, rank=rank, world=world)
        for step in range(10):
            new = b.get(step)
            old = old_prepare(ds.x["train"][b.indices(step)], 255.0, binarize, mix_seed(3, step, 7), rank, world)
            assert new.is_contiguous() and new.dtype == old.dtype and torch.equal(new, old)


def test_prepare_leaves_float_data_alone():
    raw = torch.rand(6, 4)
    kept = raw.clone()
    assert torch.equal(prepare(raw, 1.0, "dynamic", 5), old_prepare(raw, 1.0, "dynamic", 5))
    assert torch.equal(raw, kept)


# --- the denoising mask ----------------------------------------------------------------------------


def old_fraction_mask(x, fraction):
    b, d = len(x), x[0].numel()
    n = round(fraction * d)
    idx = torch.rand(b, d, device=x.device).argsort(1)[:, :n]
    return torch.zeros(b, d, dtype=torch.bool, device=x.device).scatter_(1, idx, True).view_as(x)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.25, 0.5, 0.9, 0.999, 1.0])
def test_fraction_mask_selects_what_the_sort_selected(fraction):
    x = torch.rand(64, 1, 28, 28)
    for seed in range(5):
        torch.manual_seed(seed)
        new = fraction_mask(x, fraction)
        torch.manual_seed(seed)
        assert torch.equal(new, old_fraction_mask(x, fraction))
        assert (new.flatten(1).sum(1) == round(fraction * 784)).all()


def test_fraction_mask_with_ties_at_the_boundary(monkeypatch):
    """Noise on a coarse grid ties often at the n-th value: the sort's order decides, as before."""
    rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: (rand(*a, **k) * 16).floor() / 16)
    x = torch.rand(32, 50)
    for seed in range(5):
        torch.manual_seed(seed)
        new = fraction_mask(x, 0.3)
        torch.manual_seed(seed)
        assert torch.equal(new, old_fraction_mask(x, 0.3))


# --- squared error ---------------------------------------------------------------------------------


def test_squared_error_and_its_gradient_are_the_power_formula():
    x = torch.rand(50, 1, 28, 28)
    out = torch.randn(50, 1, 28, 28, requires_grad=True)
    new = reconstruction_error(out, x, "gaussian")
    old = ((out - x) ** 2).flatten(1).sum(1)
    assert torch.equal(new, old)
    w = torch.randn(50)
    assert torch.equal(torch.autograd.grad((new * w).sum(), out)[0], torch.autograd.grad((old * w).sum(), out)[0])


# --- the optimiser ---------------------------------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(37, 53), nn.Tanh(), nn.Linear(53, 5))


def _train(net, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        net(torch.randn(16, 37, generator=g)).pow(2).mean().backward()
        opt.step()


def test_optimizer_choice():
    params = list(_net().parameters())
    adam = make_optimizer(params, TrainConfig())
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["fused"]  # fused by default
    assert not make_optimizer(params, TrainConfig(fused_optimizer=False)).param_groups[0]["fused"]
    adamw = make_optimizer(params, TrainConfig(optimizer="adamw", weight_decay=0.01))
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["decoupled_weight_decay"]
    assert make_optimizer(params, TrainConfig(optimizer="sgd")).param_groups[0]["fused"]


def test_fused_optimizer_trains_close_to_the_unfused_loop():
    a, b = _net(), _net()
    _train(a, make_optimizer(a.parameters(), TrainConfig(lr=1e-2, fused_optimizer=False)), 20, 1)
    _train(b, make_optimizer(b.parameters(), TrainConfig(lr=1e-2)), 20, 1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# --- the IWAE log-weights --------------------------------------------------------------------------


def old_log_weights(model, x, k, max_decodes):
    q = model.posterior(x)
    per_chunk = max(1, max_decodes // len(x))
    out = []
    for start in range(0, k, per_chunk):
        z = q.rsample(min(per_chunk, k - start))
        flat_x = x.unsqueeze(0).expand(len(z), *x.shape).reshape(-1, *x.shape[1:])
        log_px = model.likelihood.log_prob(model.decoder(z.flatten(0, 1)), flat_x).view(len(z), len(x))
        out.append(log_px + standard_normal_log_prob(z) - q.log_prob(z))
    return torch.cat(out)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 4), (13,)])
def test_iwae_log_weights_with_the_data_broadcast_equal_the_copied_data(likelihood, shape):
    torch.manual_seed(0)
    model = build("vae", data_shape=shape, hidden=(16,), latent_dim=3, likelihood=likelihood)
    x = (torch.randint(0, 256, (7, *shape)) / 255.0)
    grads = []
    for fn in (old_log_weights, type(model).log_weights):
        torch.manual_seed(1)
        lw = fn(model, x, 10, 21)  # chunks of 3 samples, the last one of 1
        grads.append((lw, torch.autograd.grad(lw.logsumexp(0).sum(), list(model.parameters()))))
    (old, g_old), (new, g_new) = grads
    assert new.shape == (10, 7)
    if likelihood == "bernoulli":  # one fused pass over the logits (VAE.log_weights): equal up to rounding
        torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-4)
        for a, b in zip(g_old, g_new):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    else:  # the data broadcast as a view: bit-identical
        assert torch.equal(new, old)
        assert all(torch.equal(a, b) for a, b in zip(g_old, g_new))
