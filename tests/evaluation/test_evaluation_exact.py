"""The evaluators' numbers against values known exactly: the likelihood bounds of a linear-Gaussian VAE
(log p(x) and the ELBO in closed form), active units of posterior means with chosen variances, and
the feature probes on codes whose train-fitted accuracy is known."""

import math

import pytest
import torch
from torch import distributions as D

import aezoo
from aezoo.config import EvalConfig, ModelConfig, RunConfig
from aezoo.data import Dataset
from aezoo.evaluation.base import EvalContext
from aezoo.evaluation.features import feature_probes
from aezoo.evaluation.likelihood import likelihood
from aezoo.runfolder import RunFolder

SIGMA, LATENT, DIMS = 0.5, 3, 6


def linear_gaussian_vae():
    """The real `vae` with no hidden layers: p(z) = N(0, I), p(x|z) = N(W z + b, SIGMA^2 I), q(z|x) =
    N(A (x - b), diag(v)) with A the true posterior's mean map and v = e * the true posterior variance
    (a wider q: the ELBO has a gap of about 1 nat that the IWAE bound closes). The columns of W are
    orthogonal, so the true posterior is diagonal."""
    torch.manual_seed(0)
    model = aezoo.build("vae", data_shape=(DIMS,), hidden=(), latent_dim=LATENT, likelihood="gaussian", sigma=SIGMA)
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(DIMS, LATENT, generator=g))
    w = q * torch.tensor([6.0, 4.0, 2.0])
    b = torch.randn(DIMS, generator=g)
    true_var = 1 / (1 + (w**2).sum(0) / SIGMA**2)
    a = true_var[:, None] * w.T / SIGMA**2
    var = true_var * math.e
    with torch.no_grad():
        model.decoder.project.weight.copy_(w)
        model.decoder.project.bias.copy_(b)
        enc = model.encoder.out
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:LATENT] = a
        enc.bias[:LATENT] = -a @ b
        enc.bias[LATENT:] = var.log()
    marginal = D.MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(DIMS))
    return model.eval(), marginal, (w, b, a, var)


def exact_elbo_terms(x, w, b, a, var):
    """Per example (double precision): E_q[-log p(x|z)], its variance under q (of the one-sample estimate),
    and KL(q || N(0, I)) per unit."""
    x, w, b, a, var = (t.double() for t in (x, w, b, a, var))
    m = (x - b) @ a.T
    v = var.expand_as(m)
    r = x - m @ w.T - b  # the residual at the posterior mean
    recon = DIMS / 2 * math.log(2 * math.pi * SIGMA**2) + ((r**2).sum(1) + (v * (w**2).sum(0)).sum(1)) / (2 * SIGMA**2)
    # -log p(x|z) = const + ||r - S eps||^2 / (2 s^2) with S = W diag(sqrt v), eps ~ N(0, I):
    # Var = (4 r^T S S^T r + 2 tr((S^T S)^2)) / (4 s^4)
    s = w[None] * v.sqrt()[:, None, :]
    sts = s.transpose(1, 2) @ s
    quad = torch.einsum("nd,ndl,nel,ne->n", r, s, s, r)
    recon_var = (4 * quad + 2 * (sts @ sts).diagonal(dim1=1, dim2=2).sum(1)) / (4 * SIGMA**4)
    kl = 0.5 * (m**2 + v - 1 - v.log())
    return recon, recon_var, kl


def context(model, ds, tmp_path, split="test", **eval_cfg):
    model_cfg = getattr(model, "config", None) or ModelConfig(data_shape=ds.shape)
    cfg = RunConfig("vae", model_cfg, eval=EvalConfig(split=split, **eval_cfg))
    return EvalContext(model, ds, cfg, split, RunFolder(tmp_path))


# --- likelihood ----------------------------------------------------------------------------------------
def test_likelihood_evaluator_matches_the_closed_forms_over_several_batches(tmp_path):
    model, marginal, params = linear_gaussian_vae()
    torch.manual_seed(2)
    x = marginal.sample((1000,))
    ds = Dataset("linear_gaussian", {"train": x[:10], "test": x}, kind="vector")
    torch.manual_seed(3)
    out = likelihood(context(model, ds, tmp_path, batch_size=300, nll_k=200))  # batches of 300, 300, 300, 100

    recon, recon_var, kl = exact_elbo_terms(x, *params)
    exact_nll = float(-marginal.log_prob(x.double()).mean())
    neg_elbo = float((recon + kl.sum(1)).mean())
    mc_sd = float(recon_var.sum().sqrt()) / len(x)  # sd of the mean of one-sample estimates: ~0.1 nat
    assert mc_sd < 0.15
    # KL per unit: closed form in the evaluator too, so exact
    assert out["kl_per_dim"] == pytest.approx(kl.mean(0).tolist(), rel=1e-5)
    # neg_elbo: one sample of z per example, the KL summed over units (a mean over units is 3 nats less)
    assert abs(out["neg_elbo"] - neg_elbo) < 5 * mc_sd
    assert neg_elbo - exact_nll > 0.9  # the wider q leaves a gap ...
    # ... that the bound with k = eval.nll_k = 200 closes (its bias at k = 200 is ~0.002 nats here)
    assert out["nll_iwae_k"] == 200
    assert exact_nll - 0.02 < out["nll_iwae"] < exact_nll + 0.05
    with torch.no_grad():
        one_sample = float(model.nll_iwae(x, 1).mean())  # k = 1: -ELBO again
    assert abs(one_sample - neg_elbo) < 5 * mc_sd
    assert out["nll_iwae"] < one_sample - 0.8
    assert out["active_units"] == 3


def test_active_units_count_posterior_means_whose_variance_exceeds_one_hundredth(tmp_path):
    """Posterior means mu_u = c_u x_0 + u on data whose first coordinate has variance exactly 1 over the
    split (but not within each batch): Var(mu_u) = c_u^2, chosen on both sides of 0.01."""
    variances = [0.5, 0.0101, 0.0099, 0.02, 0.005, 0.0]
    model = aezoo.build("vae", data_shape=(4,), hidden=(), latent_dim=len(variances), likelihood="gaussian").eval()
    with torch.no_grad():
        enc = model.encoder.out
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[: len(variances), 0] = torch.tensor(variances).sqrt()
        enc.bias[: len(variances)] = torch.arange(len(variances), dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64)
    x[:, 0] = x[:, 0].sort().values  # batches in order of x_0: each batch's variance far from the split's
    x[:, 0] = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std()
    ds = Dataset("chosen_means", {"train": x[:10].float(), "test": x.float()}, kind="vector")
    out = likelihood(context(model, ds, tmp_path, batch_size=128, nll_k=2))
    with torch.no_grad():
        assert torch.allclose(model.encode(x.float()).var(0), torch.tensor(variances), rtol=1e-4, atol=1e-7)
    assert out["active_units"] == 3  # 0.5, 0.0101, 0.02


# --- feature probes ------------------------------------------------------------------------------------
class Codes(torch.nn.Module):
    """A model whose codes are its inputs."""

    def encode(self, x):
        return x


def quadrants(counts, seed):
    """Points near (+-1, +-1): counts[(sx, sy)] of them near (sx, sy), jittered by 0.1."""
    centres = torch.cat([torch.tensor([[sx, sy]], dtype=torch.float32).expand(n, 2) for (sx, sy), n in counts.items()])
    return centres + 0.1 * torch.randn(centres.shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "split, counts, accuracy",
    [
        ("test", {(1, 1): 30, (-1, -1): 30, (1, -1): 20, (-1, 1): 20}, 0.6),
        ("val", {(1, 1): 35, (-1, -1): 35, (1, -1): 15, (-1, 1): 15}, 0.7),
    ],
)
def test_probes_fit_on_training_codes_and_score_on_the_evaluated_split(tmp_path, split, counts, accuracy):
    """Training labels follow the sign of the first coordinate, evaluated labels the sign of the second:
    classifiers fitted on the training codes are right exactly where the signs agree (`accuracy`), while
    either classifier fitted on the evaluated codes themselves would score 1.0."""
    train = quadrants({(1, 1): 25, (-1, -1): 25, (1, -1): 25, (-1, 1): 25}, seed=5)
    evaluated = quadrants(counts, seed=6)
    other = "val" if split == "test" else "test"
    ds = Dataset(
        "quadrants",
        {"train": train, split: evaluated, other: train[:4]},
        kind="vector",
        labels={
            "train": (train[:, 0] > 0).long(),
            split: (evaluated[:, 1] > 0).long(),
            other: torch.zeros(4, dtype=torch.long),
        },
    )
    out = feature_probes(context(Codes(), ds, tmp_path, split=split, batch_size=32, probe_train=0))
    assert out["probe_train_examples"] == 100
    assert out["probe_linear_acc"] == pytest.approx(accuracy)
    assert out["probe_knn_acc"] == pytest.approx(accuracy)
