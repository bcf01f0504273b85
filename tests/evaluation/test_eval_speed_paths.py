"""The faster paths of `aezoo eval` compute what the plain ones computed: the VAE's importance weights
under a Bernoulli likelihood (one pass over the logits instead of the BCE) are those of
`Bernoulli.log_prob` for the same draws of z, on binary and on grey data; decoded in blocks, they keep
the draws of the whole-draw path and its weights; `cpu_inference` (channels-last weights, PyTorch's
kernel for narrow transposed convolutions) gives the plain outputs and leaves the model as it was; the
linear probe's L-BFGS shows its progress."""

import pytest
import torch

from aezoo.distributions import standard_normal_log_prob
from aezoo.evaluation.base import FEW_CHANNELS, cpu_inference
from aezoo.evaluation.features import LINEAR_ITERS, LINEAR_L2, fit_linear_probe
from aezoo.models import vae as vae_module
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


def _draw_at_once_log_weights(model, x, k, max_decodes):
    """The plain computation: each draw of max_decodes // B samples decoded whole, log p(x|z) from the
    likelihood's own log_prob."""
    q = model.posterior(x)
    per_draw, out = max(1, max_decodes // len(x)), []
    for start in range(0, k, per_draw):
        z = q.rsample(min(per_draw, k - start))
        dec = model.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        log_px = model.likelihood.log_prob(dec, x.expand(len(z), *x.shape), batch_dims=2)
        out.append(log_px + standard_normal_log_prob(z) - q.log_prob(z))
    return torch.cat(out)


def _conv_vae(likelihood="bernoulli", channels=1):
    torch.manual_seed(0)
    return build("vae", backbone="conv", hidden=(16,), channels=(4, 8), latent_dim=3, likelihood=likelihood,
                 data_shape=(channels, 8, 8)).eval()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("block", [1, 64 * 3, 64 * 11, 10**9])  # rows: 1, 3, 11 decodings of 8x8; everything
@torch.no_grad()
def test_blocked_decoding_keeps_the_draws_and_the_weights(monkeypatch, likelihood, block):
    """Blocks of one sample x some examples (B > rows) and of several samples x all examples, the last
    draw smaller than the others (k = 23 in draws of 35 // 7 = 5 samples)."""
    model = _conv_vae(likelihood)
    x = (torch.rand(7, 1, 8, 8) < 0.4).float()
    monkeypatch.setattr(vae_module, "DECODE_BLOCK", block)
    torch.manual_seed(1)
    reference = _draw_at_once_log_weights(model, x, 23, 35)
    torch.manual_seed(1)
    got = model.log_weights(x, 23, 35)
    assert got.shape == (23, 7)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-4)
    after_blocks = torch.randn(3)
    torch.manual_seed(1)
    _draw_at_once_log_weights(model, x, 23, 35)
    assert torch.equal(after_blocks, torch.randn(3))  # as many numbers drawn as the plain path draws


@pytest.mark.parametrize("likelihood, channels", [("bernoulli", 1), ("logistic", 3)])
@torch.no_grad()
def test_cpu_inference_gives_the_plain_outputs_and_restores_the_model(likelihood, channels):
    model = _conv_vae(likelihood, channels)
    x = torch.rand(5, channels, 8, 8)
    z = torch.randn(5, 3)
    plain = (model.encoder(x), model.decoder(z))
    weights = {name: p.clone() for name, p in model.named_parameters()}
    with cpu_inference(model):
        assert model.decoder.body[0].weight.is_contiguous(memory_format=torch.channels_last)
        fast = (model.encoder(x), model.decoder(z))
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        assert p.is_contiguous() and torch.equal(p, weights[name]), name
    assert all("forward" not in vars(m) for m in model.modules())
    assert torch.backends.mkldnn.enabled


@torch.no_grad()
def test_only_narrow_transposed_convolutions_leave_onednn_and_an_error_restores_it(monkeypatch):
    """Decoders 8 -> 8 -> 6 channels (a logistic likelihood on RGB) and 8 -> 8 -> 1: only the last
    layer of the second, at most FEW_CHANNELS wide, runs with oneDNN off."""
    nets = [build("vae", backbone="conv", hidden=(16,), channels=(8, 8), latent_dim=3, likelihood=lik,
                  data_shape=(c, 8, 8)).eval() for lik, c in (("logistic", 3), ("bernoulli", 1))]
    seen, plain = [], torch.nn.functional.conv_transpose2d

    def record(x, weight, *args, **kwargs):
        seen.append((weight.shape[1], torch.backends.mkldnn.enabled))
        return plain(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", record)
    with cpu_inference(nets[0]), cpu_inference(nets[1]):
        for net in nets:
            net.decoder(torch.randn(2, 3))
    assert seen == [(8, True), (6, True), (8, True), (1, False)] and FEW_CHANNELS == 4
    assert torch.backends.mkldnn.enabled

    def fail(*args, **kwargs):
        raise ValueError("inside the narrow layer")

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", fail)
    with pytest.raises(ValueError), cpu_inference(nets[1]):
        nets[1].decoder(torch.randn(2, 3))
    assert torch.backends.mkldnn.enabled and all(p.is_contiguous() for p in nets[1].parameters())
    assert all("forward" not in vars(m) for m in nets[1].modules())


def test_the_linear_probe_shows_each_loss_evaluation():
    class Bar:
        n, closed = 0, False

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 5, generator=g)
    labels = (codes[:, 0] + 0.5 * torch.randn(200, generator=g) > 0).long()
    bar, calls = Bar(), []
    original = torch.optim.LBFGS.step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.LBFGS, "step",
                   lambda self, closure: original(self, lambda: (calls.append(1), closure())[1]))
        predict = fit_linear_probe(codes, labels, 2, bar=bar)
    assert bar.n == len(calls) > 1 and bar.closed
    assert (predict(codes) == fit_linear_probe(codes, labels, 2)(codes)).all()  # the bar changes nothing


def _plain_probe(train, train_y, classes, iters=LINEAR_ITERS, l2=LINEAR_L2):
    """The probe as first written: w (width, classes), logits a @ w + b."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    a = (train - mean) / std
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, train_y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda codes: (((codes - mean) / std) @ w.detach() + bias.detach()).argmax(1)


def test_the_linear_probe_in_linear_layout_fits_what_the_plain_one_fits():
    """Three overlapping classes in 20 dimensions (one constant), a strong L2 so that the penalty shapes the
    boundaries: the probe's predictions on 4,000 new codes are those of the (width, classes) form, up to
    the L-BFGS path's rounding."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g)
    y = torch.randint(0, 3, (400,), generator=g)
    train = centres[y] + 1.5 * torch.randn(400, 20, generator=g)
    train[:, 7] = 2.0
    new = centres[torch.randint(0, 3, (4000,), generator=g)] + 1.5 * torch.randn(4000, 20, generator=g)
    plain = _plain_probe(train, y, 3, iters=100, l2=0.05)
    fast = fit_linear_probe(train, y, 3, iters=100, l2=0.05)
    assert float((fast(new) == plain(new)).float().mean()) >= 0.999
