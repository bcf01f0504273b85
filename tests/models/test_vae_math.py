"""The VAE's maths against closed forms: KL, likelihoods, and the IWAE bound on a linear-Gaussian model."""

import math

import pytest
import torch
from torch import distributions as D

import aezoo
from aezoo.distributions import Bernoulli, DiagonalGaussian, DiscretizedLogistic, Gaussian, LearnedGaussian


def test_kl_matches_torch_distributions():
    mean, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = DiagonalGaussian(mean, logvar)
    ref = D.kl_divergence(D.Normal(mean, (0.5 * logvar).exp()), D.Normal(0.0, 1.0))
    assert torch.allclose(q.kl_standard(), ref, atol=1e-5)
    m2, lv2 = torch.randn(5, 7), torch.randn(5, 7)
    ref2 = D.kl_divergence(D.Normal(mean, (0.5 * logvar).exp()), D.Normal(m2, (0.5 * lv2).exp()))
    assert torch.allclose(q.kl(DiagonalGaussian(m2, lv2)), ref2, atol=1e-5)


def test_gaussian_log_prob_and_reparameterisation():
    mean, logvar = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    torch.manual_seed(3)
    z = q.rsample()
    ref = D.Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(q.log_prob(z), ref, atol=1e-5)
    # rsample keeps the graph to mean and logvar: z = mean + exp(logvar / 2) * eps
    torch.manual_seed(3)
    eps = torch.randn(4, 3)
    z.sum().backward()
    assert torch.equal(mean.grad, torch.ones(4, 3))
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar).exp().detach() * eps)
    many = DiagonalGaussian(torch.full((3,), 2.0), torch.full((3,), math.log(0.25))).rsample(200_000)
    assert torch.allclose(many.mean(0), torch.full((3,), 2.0), atol=0.01)
    assert torch.allclose(many.std(0), torch.full((3,), 0.5), atol=0.01)


def test_likelihoods_match_torch_distributions():
    out, x = torch.randn(4, 1, 3, 3), torch.rand(4, 1, 3, 3).round()
    assert torch.allclose(
        Bernoulli().log_prob(out, x), D.Bernoulli(logits=out).log_prob(x).flatten(1).sum(1), atol=1e-5
    )
    xr = torch.randn(4, 1, 3, 3)
    assert torch.allclose(Gaussian(0.3).log_prob(out, xr), D.Normal(out, 0.3).log_prob(xr).flatten(1).sum(1), atol=1e-4)
    two = torch.randn(4, 2, 3, 3)
    mu, lv = two.chunk(2, 1)
    lv = 7 * torch.tanh(lv / 7)
    ref = D.Normal(mu, (0.5 * lv).exp()).log_prob(xr).flatten(1).sum(1)
    assert torch.allclose(LearnedGaussian().log_prob(two, xr), ref, atol=1e-4)


def test_discretised_logistic_is_a_distribution_over_256_values():
    lik = DiscretizedLogistic()
    values = torch.arange(256.0) / 255
    out = torch.tensor([0.3, math.log(0.05)]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
    probs = lik.log_prob(out, values.view(256, 1, 1, 1)).exp()
    assert abs(float(probs.sum()) - 1.0) < 1e-4
    assert int(probs.argmax()) in (76, 77)  # the bin of the mean 0.3 * 255 = 76.5


def linear_gaussian_vae(sigma=0.5, latent=3, dims=6, exact_posterior=True):
    """x = W z + b + sigma * noise with orthogonal columns of W, so the true posterior is diagonal and the
    VAE's (linear) encoder can represent it exactly."""
    torch.manual_seed(1)
    model = aezoo.build("vae", data_shape=(dims,), hidden=(), latent_dim=latent, likelihood="gaussian", sigma=sigma)
    q, _ = torch.linalg.qr(torch.randn(dims, latent))
    w = q * torch.tensor([2.0, 1.0, 0.5])
    b = torch.randn(dims)
    with torch.no_grad():
        model.decoder.project.weight.copy_(w)
        model.decoder.project.bias.copy_(b)
        # Posterior: Sigma = (I + W^T W / s^2)^-1 (diagonal), mean = Sigma W^T (x - b) / s^2.
        post_var = 1 / (1 + (w**2).sum(0) / sigma**2)
        enc = model.encoder.out
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:latent] = post_var[:, None] * w.T / sigma**2
        enc.bias[:latent] = -(post_var[:, None] * w.T / sigma**2) @ b
        enc.bias[latent:] = post_var.log() if exact_posterior else post_var.log() + 1.0
        if not exact_posterior:
            enc.weight[:latent] *= 0.7
    marginal = D.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(dims))
    return model, marginal


def test_iwae_is_exact_with_the_true_posterior():
    model, marginal = linear_gaussian_vae()
    x = marginal.sample((50,))
    exact = -marginal.log_prob(x)
    with torch.no_grad():
        for k in (1, 10):
            assert torch.allclose(model.nll_iwae(x, k), exact, atol=1e-3)


def test_iwae_tightens_with_k_and_approaches_the_exact_nll():
    model, marginal = linear_gaussian_vae(exact_posterior=False)
    x = marginal.sample((200,))
    exact = float(-marginal.log_prob(x).mean())
    with torch.no_grad():
        recon, kl = model.elbo_parts(x)
        neg_elbo = float((recon + kl.sum(1)).mean())
        nll = {k: float(model.nll_iwae(x, k, max_decodes=20_000).mean()) for k in (1, 10, 100, 5000)}
    assert neg_elbo == pytest.approx(nll[1], abs=0.3)  # both are one-sample estimates of -ELBO
    assert nll[1] > nll[10] > nll[100] > nll[5000] >= exact - 0.01
    assert nll[1] - exact > 0.5  # the perturbed posterior leaves a real gap ...
    assert nll[5000] - exact < 0.05  # ... that the importance-weighted bound closes


def test_iwae_chunking_does_not_change_the_estimate():
    """Chunks of 16 samples draw the same normals as one block, so the estimate must agree exactly."""
    model, marginal = linear_gaussian_vae(exact_posterior=False)
    x = marginal.sample((8,))
    with torch.no_grad():
        torch.manual_seed(3)
        whole = model.nll_iwae(x, 64, max_decodes=10**6)
        torch.manual_seed(3)
        chunked = model.nll_iwae(x, 64, max_decodes=8 * 16)
    assert torch.equal(whole, chunked)


def test_iwae_objective_is_the_bound_and_weighs_gradients_by_normalised_importance_weights():
    """objective="iwae": the loss is the k-sample bound, and its gradient is Burda et al.'s eq. 14,
    sum_i w~_i grad log w_i with w~ the normalised importance weights."""
    model, marginal = linear_gaussian_vae(exact_posterior=False)
    model.config.objective, model.config.iwae_k = "iwae", 16
    x = marginal.sample((32,))
    torch.manual_seed(5)
    out = model.loss(x)
    out.total.backward()
    by_loss = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(5)
    log_w = model.log_weights(x, 16)
    assert float(out.total.detach()) == pytest.approx(
        float(-(log_w.logsumexp(0) - math.log(16)).mean().detach()), abs=1e-5
    )
    assert set(out.terms) == {"neg_iwae"}
    (-(log_w.softmax(0).detach() * log_w).sum(0).mean()).backward()
    for g, p in zip(by_loss, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5)
    with torch.no_grad():  # the bound lies between the exact NLL and the one-sample -ELBO
        assert -marginal.log_prob(x).mean() - 0.01 <= out.total.detach() <= model.nll_iwae(x, 1).mean() + 1.0


@pytest.mark.slow
def test_iwae_objective_trains_from_the_cli(tmp_path):
    from conftest import run_cli

    code, _, err = run_cli(
        "train",
        "vae",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "4",
        "--set",
        "data.limit=200",
        "--set",
        "model.hidden=[16]",
        "--set",
        "model.latent_dim=4",
        "--set",
        "model.objective=iwae",
        "--set",
        "model.iwae_k=5",
        "--set",
        "data.binarize=dynamic",
        "--set",
        "train.progress=false",
    )
    assert code == 0, err
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert any('"neg_iwae"' in line for line in lines)


def test_sampling_temperature_scales_the_prior(monkeypatch):
    model = aezoo.build("vae", data_shape=(6,), hidden=(8,), latent_dim=3)
    monkeypatch.setattr(model, "decode", lambda z: z)  # the latent draws themselves
    torch.manual_seed(0)
    cold = model.sample(20_000, temperature=0.5)
    torch.manual_seed(0)
    usual = model.sample(20_000)
    torch.testing.assert_close(cold, 0.5 * usual)  # the same draws, their spread halved: z ~ N(0, T^2 I)
    assert abs(float(usual.std()) - 1.0) < 0.02
    with pytest.raises(aezoo.AezooError, match="temperature"):
        model.sample(2, temperature=0.0)
