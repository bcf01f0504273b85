"""The faster paths of `aezoo eval` compute what the plain ones computed: the VAE's importance weights
under a Bernoulli likelihood (one pass over the logits instead of the BCE) are those of
`Bernoulli.log_prob` for the same draws of z, on binary and on grey data; decoded in blocks, they keep
the draws of the whole-draw path and its weights; `cpu_inference` (channels-last weights, PyTorch's
kernel for narrow transposed convolutions) gives the plain outputs and leaves the model as it was; the
linear probe's L-BFGS shows its progress, and its written-out gradient and oneDNN products fit what
autograd and torch.mm fit. A model with discrete codes is encoded once per evaluation, as
code maps: the codes read from them are `encode`'s, the top-only reconstruction from them is the one from
the images, the neighbours searched once for both metrics are brute force's, and a whole evaluation of
vqvae2 with its prior gives the numbers each evaluator got by encoding the split itself."""

import math

import pytest
import torch

from aezoo.config import EvalConfig, RunConfig
from aezoo.data import Dataset
from aezoo.distributions import standard_normal_log_prob
from aezoo.evaluation import EVALUATORS
from aezoo.evaluation.base import EVAL_SEED, FEW_CHANNELS, EvalContext, cpu_inference, in_place_activations
from aezoo.evaluation.features import (
    LINEAR_ITERS,
    LINEAR_L2,
    codes_products,
    fit_linear_probe,
    knn_predict,
    linear_probe_accuracy,
    neighbours,
)
from aezoo.evaluation.reconstruction import psnr
from aezoo.evaluation.retrieval import precision_at_k
from aezoo.models import vae as vae_module
from aezoo.quantize import perplexity, usage
from aezoo.registry import MODELS, build
from aezoo.runfolder import RunFolder


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
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    with cpu_inference(model):
        assert model.decoder.body[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert relus and all(m.inplace for m in relus)  # each follows a layer in a Sequential
        fast = (model.encoder(x), model.decoder(z))
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        assert p.is_contiguous() and torch.equal(p, weights[name]), name
    assert not any(m.inplace for m in relus)
    assert all("forward" not in vars(m) for m in model.modules())
    assert torch.backends.mkldnn.enabled


@torch.no_grad()
def test_only_activations_that_are_the_sole_reader_of_a_fresh_output_work_in_place():
    """In a residual block x + f(x), f = Sequential(ReLU, Conv, ReLU, Conv), the first ReLU reads the
    block's input, which the sum reads again: only the second may overwrite its input. Nor may an
    activation also held outside a Sequential, one in a Sequential with a forward of its own, one
    after a layer whose output a hook keeps, or one after a view (Flatten)."""

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(4, 4, 1))

        def forward(self, x):
            return x + self.f(x)

    class Shared(torch.nn.Module):  # its ReLU also runs on the block's input, which the sum reads again
        def __init__(self):
            super().__init__()
            self.act = torch.nn.ReLU()
            self.f = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), self.act)

        def forward(self, x):
            return x + self.f(self.act(x))

    class Summed(torch.nn.Sequential):  # a Sequential of its own forward
        def forward(self, x):
            h = self[0](x)
            return self[1](h) + h

    kept = []
    hooked = torch.nn.Linear(64, 8)
    hooked.register_forward_hook(lambda module, args, out: kept.append(out.clone()) or None)
    stored = torch.nn.Linear(64, 8)
    stored.register_forward_hook(lambda module, args, out: kept.append(out))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), Residual(), Shared(),
                              Summed(torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU()), torch.nn.Flatten(), torch.nn.ELU())
    heads = torch.nn.ModuleList([torch.nn.Sequential(layer, torch.nn.ReLU()) for layer in (hooked, stored)])
    model = torch.nn.ModuleDict({"net": net, "heads": heads})
    x = torch.randn(3, 1, 4, 4)

    def run():
        kept.clear()
        h = net(x)
        return [h, *(head(h) for head in heads), *kept]

    plain = run()
    assert in_place_activations(model) == [net[1].f[2]]
    with cpu_inference(model):
        fast = run()
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b)
    assert kept[1].min() < 0  # the stored output was not overwritten by its ReLU


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


@pytest.mark.parametrize("onednn", [True, False])
def test_the_probes_products_with_the_codes_are_torchs(monkeypatch, onednn):
    """a w^T + b and g^T a through oneDNN (a^T packed once) and through the fallback, against torch.mm in
    double precision, on a width that is no multiple of the packing's blocks. Sums of up to 300 float32
    products whose sizes add up to about 200 (one float32 ulp there: 1.5e-5; MKL's own error here
    2.3e-5, oneDNN's 2.6e-5): within 1e-4, which a product in bfloat16 (errors near 0.5) would miss."""
    if not onednn:
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    g = torch.Generator().manual_seed(0)
    a, w, b, grad = (torch.randn(*shape, generator=g) for shape in ((300, 77), (10, 77), (10,), (300, 10)))
    logits_of, weight_gradient = codes_products(a)
    exact = (a.double() @ w.double().T + b.double(), grad.double().T @ a.double())
    for got, expected in zip((logits_of(w, b), weight_gradient(grad)), exact):
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4)


def test_the_linear_probe_in_linear_layout_fits_what_the_plain_one_fits():
    """Three overlapping classes in 20 dimensions (one constant), a strong L2 so that the penalty shapes the
    boundaries: the probe's predictions on 4,000 new codes (its gradient written out, its products by
    `codes_products`) are those of the plain form (w (width, classes), autograd), up to the L-BFGS
    path's rounding."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g)
    y = torch.randint(0, 3, (400,), generator=g)
    train = centres[y] + 1.5 * torch.randn(400, 20, generator=g)
    train[:, 7] = 2.0
    new = centres[torch.randint(0, 3, (4000,), generator=g)] + 1.5 * torch.randn(4000, 20, generator=g)
    plain = _plain_probe(train, y, 3, iters=100, l2=0.05)
    fast = fit_linear_probe(train, y, 3, iters=100, l2=0.05)
    assert float((fast(new) == plain(new)).float().mean()) >= 0.999


# --- a model with discrete codes, encoded once per evaluation ---------------------------------------------
QUANTIZERS = {"vq": {}, "rvq": {"quantizer": "rvq", "rvq_depth": 2}, "gumbel": {"quantizer": "gumbel"},
              "fsq": {"quantizer": "fsq", "fsq_levels": (5, 3, 3, 2), "code_dim": 4}}


def _code_model(name, quantizer="vq", **config):
    torch.manual_seed(0)
    settings = {**MODELS[name].tiny, **QUANTIZERS[quantizer], "data_shape": (1, 28, 28), **config}
    return build(name, **settings).eval()


def _images(n, seed):
    """n images of 8-bit grey values (what the discretised logistic scores), smooth random blobs, with
    labels in 0..2, the class setting the brightness so that the probes have something to find."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    blobs = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(28, 28), mode="bilinear")
    return (blobs * (0.5 + 0.25 * y.view(-1, 1, 1, 1)) * 255).round() / 255, y


def _context(model, tmp_path, batch_size=7, **eval_cfg):
    (train, train_y), (test, test_y) = _images(60, 1), _images(23, 2)  # 23: batches of 7, 7, 7, 2
    ds = Dataset("grey", {"train": train, "test": test}, labels={"train": train_y, "test": test_y})
    cfg = RunConfig(model.name, model.config, eval=EvalConfig(split="test", batch_size=batch_size, **eval_cfg))
    return EvalContext(model, ds, cfg, "test", RunFolder(tmp_path))


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
@torch.no_grad()
def test_the_split_codes_from_code_maps_are_what_encode_gives(tmp_path, name, quantizer):
    """Every quantiser's code vectors, looked up from the maps, against `encode`'s straight-through
    z_e + (e - z_e): equal to the rounding of that sum (codes of order 1)."""
    model = _code_model(name, quantizer)
    ctx = _context(model, tmp_path)
    encoded = torch.cat([model.encode(x).flatten(1) for x in ctx.batches()])
    got = ctx.split_codes()
    assert got.shape == encoded.shape == (23, encoded.shape[1])
    torch.testing.assert_close(got, encoded, rtol=0, atol=1e-6)
    assert len(ctx.split_code_maps()) == 4 and ctx.split_codes() is got  # encoded once


@pytest.mark.parametrize("quantizer", ["vq", "rvq"])  # rvq: two top code maps of the four
@pytest.mark.parametrize("fill", ["mean", "zero", "prior"])
@torch.no_grad()
def test_the_top_only_reconstruction_from_code_maps_is_the_one_from_the_images(quantizer, fill):
    model = _code_model("vqvae2", quantizer)
    model.attach_prior(_tiny_snail(model))
    x, _ = _images(5, 3)
    codes = model.codes(x)
    top = model.quantizer_top.lookup(model.quantizer_top.join_maps(codes[:2] if quantizer == "rvq" else codes[:1]))
    if fill != "prior":  # by hand: the top's vectors beside the constant bottom fill
        z_bottom = model.bottom_fill(fill).view(1, -1, 1, 1).expand(5, -1, 8, 8)
        by_hand = model.decode(model.decoder_input(top, z_bottom))
        torch.testing.assert_close(model.decode_top_only(codes, fill), by_hand, rtol=0, atol=1e-6)
    torch.manual_seed(4)
    from_codes = model.decode_top_only(codes, fill)
    torch.manual_seed(4)
    torch.testing.assert_close(from_codes, model.reconstruct_top_only(x, fill), rtol=0, atol=1e-6)


def _tiny_snail(model):
    levels = [(lv.codebook_size, *lv.shape) for lv in model.code_levels()]
    return build("pixelsnail", channels=8, blocks=1, residual=1, heads=2, key_channels=8, value_channels=8,
                 cond_layers=1, codebook_sizes=tuple(k for k, _, _ in levels),
                 code_shapes=tuple(s for _, h, w in levels for s in (h, w)),
                 data_shape=(1 + sum(h * w for _, h, w in levels),)).eval()


@pytest.mark.parametrize("chunk", [7, 1024])
def test_neighbours_in_both_metrics_are_brute_forces(chunk):
    """Against torch.cdist in double precision and the ranking of the normalised vectors' products, on
    codes of different lengths (where the two metrics disagree); ties have probability 0."""
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 6, generator=g) * torch.rand(200, 1, generator=g) * 3
    query = torch.randn(30, 6, generator=g)
    wrapped = []
    got = neighbours(train, query, 10, ("euclidean", "cosine"), chunk,
                     progress=lambda chunks: wrapped.append(len(chunks)) or chunks)
    euclidean = torch.cdist(query.double(), train.double()).argsort(1)[:, :10]
    unit = torch.nn.functional.normalize
    cosine = (-(unit(query.double(), dim=1) @ unit(train.double(), dim=1).T)).argsort(1)[:, :10]
    assert torch.equal(got["euclidean"], euclidean) and torch.equal(got["cosine"], cosine)
    assert not torch.equal(euclidean, cosine) and wrapped == [math.ceil(30 / chunk)]
    assert neighbours(train[:4], query, 10, ("cosine",))["cosine"].shape == (30, 4)  # k capped by the training set


@torch.no_grad()
def _per_evaluator_results(model, ctx) -> dict:
    """What each evaluator computed when it encoded the split itself (each batch by `codes`, `encode`,
    `reconstruct`, `reconstruct_top_only`) and searched the neighbours of each metric on its own. The
    codes of the probes and retrieval come from `encode` as the feature probes ran it (`inference`)."""
    prior, xs = model.require_prior(), list(ctx.batches())
    counts = [torch.zeros(lv.codebook_size, dtype=torch.float64) for lv in model.code_levels()]
    prior_nll, decoder_nll, top_sq, sq, bce = 0.0, 0.0, 0.0, 0.0, 0.0
    for x in xs:
        codes = model.codes(x)
        for c, level in zip(counts, codes):
            c += torch.bincount(level.flatten(), minlength=len(c)).double()
        prior_nll -= float(prior.log_prob(codes).sum())
        decoder_nll -= float(model.log_px_given_codes(x, codes).sum())
        top_sq += float(((model.reconstruct_top_only(x) - x) ** 2).sum())
        r = model.reconstruct(x)
        sq += float(((r - x) ** 2).sum())
        p = r.clamp(1e-6, 1 - 1e-6)
        bce += float(-(x * p.log() + (1 - x) * (1 - p).log()).sum())
    n, dims = 23, 28 * 28
    with cpu_inference(model):  # where the feature probes, which encoded first, encoded the codes
        test = torch.cat([model.encode(x).flatten(1) for x in xs])
        train = ctx.train_codes(60)
    test_x = torch.cat([x.flatten(1) for x in xs])
    train_x = ctx.train_inputs(60)
    train_y, test_y = ctx.dataset.labels["train"], ctx.dataset.labels["test"]
    out = {"codebook_usage": [float(usage(c)) for c in counts], "codebook_perplexity": [float(perplexity(c))
                                                                                          for c in counts],
           "bits_per_dim": (prior_nll + decoder_nll) / n / (dims * math.log(2)), "prior_nll": prior_nll / n,
           "decoder_nll": decoder_nll / n, "recon_mse_top_only": top_sq / n, "recon_mse": sq / n,
           "recon_bce": bce / n, "psnr": psnr(sq / n / dims),
           "probe_linear_acc": linear_probe_accuracy(train, train_y, test, test_y),
           "probe_knn_acc": float((knn_predict(train, train_y, test) == test_y).float().mean()),
           "probe_train_examples": 60, "retrieval_train_examples": 60}
    for metric in ("euclidean", "cosine"):
        out[f"retrieval_p10_{metric}"] = precision_at_k(train, train_y, test, test_y, 10, metric)
        out[f"retrieval_p10_pixels_{metric}"] = precision_at_k(train_x, train_y, test_x, test_y, 10, metric)
    return out


def test_a_whole_evaluation_shares_one_encoding_and_keeps_the_per_evaluator_numbers(tmp_path, monkeypatch,
                                                                                    one_thread):
    """A tiny untrained vqvae2 (its 64 codes a level initialised by k-means, over 90% of them used on the
    split) with a tiny PixelSNAIL prior, every evaluator that applies, in `evaluate`'s order: the split is encoded once
    (`codes` called once per batch), and every number is the one of the per-evaluator computation: the
    counts, the k-NN probe and the Euclidean retrieval exactly (the codes' rounding moves no code and,
    here, no neighbour), sums of squares and log-likelihoods to float rounding. Two keys may differ by
    one of their votes: cosine retrieval by one neighbour of the 230 (these codes share a large common
    part, their cosine distances have near-ties, gaps down to 1e-8, that float32's rounding of the
    query codes and of the normalisation decides either way), and the linear probe by one prediction
    of the 23 (fitted to 60 nearly separable codes with a weak L2, its weights are large: the query
    codes' rounding, here up to 1e-4 between channels-last `encode` and the looked-up vectors, moves one).
    On one thread: on two, the two computations split their distance products between the threads
    differently, and a near-tie of the Euclidean retrieval can fall either way."""
    model = _code_model("vqvae2", codebook_size=64, code_dim=8, kmeans_iters=5)
    ctx = _context(model, tmp_path)
    model.on_train_start(ctx.dataset.x["train"])
    last = model.decoder[-1]  # means inside (0, 1) that depend on the codes, not clamped to 0
    with torch.no_grad():
        last.weight.mul_(20)
        last.bias[0] += 0.5
    model.attach_prior(_tiny_snail(model))
    expected = _per_evaluator_results(model, _context(model, tmp_path))
    calls, codes = [], model.codes
    monkeypatch.setattr(model, "codes", lambda x: calls.append(len(x)) or codes(x))
    torch.manual_seed(EVAL_SEED)
    got = {}
    for ev in EVALUATORS:
        if ev.applies(model, ctx.dataset):
            got.update(ev.run(ctx))
    assert calls == [7, 7, 7, 2]
    assert set(expected) <= set(got) and min(got["codebook_usage"]) > 0.9
    for key, value in expected.items():
        if key in ("retrieval_p10_cosine", "probe_linear_acc"):
            assert abs(got[key] - value) <= (1 / 230 if "retrieval" in key else 1 / 23) + 1e-6, key
        elif isinstance(value, float) and "acc" not in key and "retrieval" not in key:
            assert got[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert got[key] == value, key
