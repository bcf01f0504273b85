"""The faster paths of `aezoo eval` compute what the plain ones computed: the VAE's importance weights
under a Bernoulli likelihood (one pass over the logits instead of the BCE) are those of
`Bernoulli.log_prob` for the same draws of z, on binary and on grey data."""

import pytest
import torch

from aezoo.distributions import standard_normal_log_prob
from aezoo.registry import build


def _reference_log_weights(model, x, k):
    """log p(x, z_i) - log q(z_i|x) from the likelihood's own log_prob, z drawn as `log_weights` draws it
    when one chunk holds every sample."""
    q = model.posterior(x)
    z = q.rsample(k)
    out = model.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
    log_px = model.likelihood.log_prob(out, x.expand(k, *x.shape), batch_dims=2)
    return log_px + standard_normal_log_prob(z) - q.log_prob(z)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
@pytest.mark.parametrize("binary", [True, False])
@torch.no_grad()
def test_bernoulli_importance_weights_equal_the_likelihoods_own(backbone, binary):
    torch.manual_seed(0)
    model = build("vae", backbone=backbone, hidden=(16,), channels=(4, 8), latent_dim=3, likelihood="bernoulli",
                  data_shape=(1, 8, 8)).eval()
    with torch.no_grad():
        for p in model.parameters():  # logits far from 0, where the softplus and the BCE differ most in form
            p.mul_(4)
    x = torch.rand(6, 1, 8, 8)
    x = (x < 0.4).float() if binary else x
    torch.manual_seed(1)
    reference = _reference_log_weights(model, x, 40)
    torch.manual_seed(1)
    got = model.log_weights(x, 40)
    assert got.shape == (40, 6)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-3)
