"""Gradients the VAE's objectives must carry, against computations written out by hand: the
reparameterised sample, the capacity objective's |KL - C| term; and the discretised logistic's end bins."""

import math

import pytest
import torch

import aezoo
from aezoo.distributions import DiagonalGaussian, DiscretizedLogistic


# --- the reparameterised sample ---------------------------------------------------------------------
def _smooth_loss(z):
    """A loss whose gradient differs from one coordinate to the next (not a plain sum)."""
    return (torch.sin(z) * torch.arange(1, z.shape[-1] + 1, dtype=z.dtype) + 0.5 * z**2).sum()


def _smooth_loss_grad(z):
    return torch.cos(z) * torch.arange(1, z.shape[-1] + 1, dtype=z.dtype) + z


@pytest.mark.parametrize("n, temperature", [(None, 1.0), (5, 1.0), (None, 0.5)])
def test_rsample_gradient_reaches_mean_and_logvar_as_for_z_equal_mu_plus_sigma_eps(n, temperature):
    """z = mu + T * exp(logvar / 2) * eps with eps fixed: dL/dmu = L'(z), dL/dlogvar = L'(z) T sigma eps / 2."""
    g = torch.Generator().manual_seed(11)
    mean = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    z = DiagonalGaussian(mean, logvar).rsample(n, temperature)
    _smooth_loss(z).backward()

    torch.manual_seed(3)
    eps = temperature * torch.randn(z.shape, dtype=torch.float64)  # the draw rsample made
    with torch.no_grad():
        sigma = torch.exp(0.5 * logvar)
        z_hand = mean + sigma * eps
        torch.testing.assert_close(z.detach(), z_hand)
        dz = _smooth_loss_grad(z_hand)
        lead = () if n is None else (0,)  # the n samples share mean and logvar: their gradients add
        grad_mean = dz.sum(lead) if lead else dz
        grad_logvar = (dz * 0.5 * sigma * eps).sum(lead) if lead else dz * 0.5 * sigma * eps
    assert mean.grad is not None and logvar.grad is not None
    torch.testing.assert_close(mean.grad, grad_mean)
    torch.testing.assert_close(logvar.grad, grad_logvar)


def test_rsample_gradient_matches_finite_differences_through_a_fixed_draw():
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(2, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 4, generator=g, dtype=torch.float64)

    def f(m, lv):
        torch.manual_seed(17)  # the same eps at every evaluation
        return _smooth_loss(DiagonalGaussian(m, lv).rsample())

    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    f(m, lv).backward()
    h = 1e-6
    for i in range(mean.numel()):
        e = torch.zeros(mean.numel(), dtype=torch.float64)
        e[i] = h
        e = e.view_as(mean)
        fd_mean = (f(mean + e, logvar) - f(mean - e, logvar)) / (2 * h)
        fd_logvar = (f(mean, logvar + e) - f(mean, logvar - e)) / (2 * h)
        assert float(m.grad.flatten()[i]) == pytest.approx(float(fd_mean), rel=1e-6, abs=1e-8)
        assert float(lv.grad.flatten()[i]) == pytest.approx(float(fd_logvar), rel=1e-6, abs=1e-8)
    assert m.grad.abs().min() > 0.01  # every coordinate of the mean carries gradient


# --- the capacity objective ---------------------------------------------------------------------------
def _kl_by_hand(model, x):
    """The batch mean of KL(q(z|x) || N(0, I)) summed over units, from the encoder's output."""
    mean, logvar = model.encoder(x).float().chunk(2, dim=-1)
    return (0.5 * (mean**2 + logvar.exp() - 1.0 - logvar)).sum(1).mean()


@pytest.mark.parametrize("step, side", [(0, 1.0), (400, -1.0)])
def test_capacity_term_sends_gamma_sign_times_kl_gradient_to_the_encoder(step, side):
    """d total / d phi = d recon / d phi + gamma * sign(KL - C) * d KL / d phi (Burgess et al. 2018):
    the |KL - C| term pushes the encoder towards the capacity, from above (C = 0 at step 0) and from
    below (C = capacity_max once the schedule is done)."""
    torch.manual_seed(0)
    gamma = 7.0
    model = aezoo.build(
        "vae",
        data_shape=(6,),
        hidden=(8,),
        latent_dim=3,
        likelihood="gaussian",
        objective="capacity",
        gamma=gamma,
        capacity_max=50.0,
        capacity_steps=200,
    )
    x = torch.randn(5, 6)
    enc = list(model.encoder.parameters())
    torch.manual_seed(1)
    out = model.loss(x, step)
    c = model.capacity(step)
    assert float(out.terms["capacity"]) == pytest.approx(c)
    kl = _kl_by_hand(model, x)
    assert float(out.terms["kl"].detach()) == pytest.approx(float(kl.detach()), rel=1e-6)
    assert math.copysign(1.0, float(kl.detach()) - c) == side  # the case this parametrisation means to test
    expected = out.terms["recon"] + gamma * (kl - c).abs()
    assert float(out.total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)

    total = torch.autograd.grad(out.total, enc, retain_graph=True)
    recon = torch.autograd.grad(out.terms["recon"], enc, retain_graph=True)
    dkl = torch.autograd.grad(kl, enc)
    for gt, gr, gk in zip(total, recon, dkl):
        capacity_part = gt - gr
        torch.testing.assert_close(capacity_part, gamma * side * gk, rtol=1e-4, atol=1e-5)
    assert sum(float(g.abs().sum()) for g in dkl) > 0.1  # the encoder's KL gradient is not trivially 0


def test_capacity_gradient_matches_finite_differences_of_the_loss():
    """The whole loss along the encoder's output bias, with fixed noise: autograd = finite differences."""
    torch.manual_seed(0)
    model = aezoo.build(
        "vae",
        data_shape=(6,),
        hidden=(),
        latent_dim=3,
        likelihood="gaussian",
        objective="capacity",
        gamma=20.0,
        capacity_max=1.0,
        capacity_steps=0,
    )
    x = torch.randn(4, 6)
    bias = model.encoder.out.bias

    def total():
        torch.manual_seed(2)
        return model.loss(x).total

    (grad,) = torch.autograd.grad(total(), bias)
    h = 1e-2
    with torch.no_grad():
        for i in range(len(bias)):
            bias[i] += h
            up = float(total())
            bias[i] -= 2 * h
            down = float(total())
            bias[i] += h
            assert float(grad[i]) == pytest.approx((up - down) / (2 * h), rel=1e-2, abs=1e-2)


# --- the discretised logistic -------------------------------------------------------------------------
def _log_sigmoid(t: float) -> float:
    """log(1 / (1 + e^-t)) in float64 without overflow."""
    return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))


LOGISTIC_PARAMS = [
    (0.3, math.log(0.05)),
    (0.9, math.log(0.2)),
    (0.05, math.log(0.3)),
    (1.2, math.log(0.1)),
    (-0.1, math.log(0.5)),
    (0.5, -7.0),
    (0.999, math.log(0.01)),
]


@pytest.mark.parametrize("mu, log_s", LOGISTIC_PARAMS)
def test_discretised_logistic_bins_sum_to_one_and_end_bins_take_the_tails(mu, log_s):
    lik = DiscretizedLogistic()
    values = torch.arange(256.0) / 255
    out = torch.tensor([mu, log_s]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
    logp = lik.log_prob(out, values.view(256, 1, 1, 1))
    assert abs(float(logp.exp().sum()) - 1.0) < 1e-4

    s = math.exp(max(log_s, -7.0))  # the likelihood's floor on log s
    half = 0.5 / 255
    last = _log_sigmoid(-(1.0 - mu - half) / s)  # log P(x = 1) = log(1 - F(1 - half bin))
    first = _log_sigmoid((0.0 - mu + half) / s)  # log P(x = 0) = log F(half bin)
    assert float(logp[-1]) == pytest.approx(last, abs=1e-4, rel=1e-4)
    assert float(logp[0]) == pytest.approx(first, abs=1e-4, rel=1e-4)
    k = 128  # an inner bin: F(x + half) - F(x - half)
    inner = math.exp(_log_sigmoid((k / 255 - mu + half) / s)) - math.exp(_log_sigmoid((k / 255 - mu - half) / s))
    assert float(logp[k].exp()) == pytest.approx(inner, rel=1e-3, abs=1e-7)


def test_discretised_logistic_last_bin_holds_the_mass_above_one():
    """A mean beyond 1: most of the mass lies in the last bin, all of it above 1 - half a bin."""
    lik = DiscretizedLogistic()
    out = torch.tensor([[1.5, math.log(0.1)]]).view(1, 2, 1, 1)
    p_last = float(lik.log_prob(out, torch.ones(1, 1, 1, 1)).exp())
    assert p_last == pytest.approx(math.exp(_log_sigmoid(-(1 - 0.5 / 255 - 1.5) / 0.1)), rel=1e-5)
    assert p_last > 0.99
