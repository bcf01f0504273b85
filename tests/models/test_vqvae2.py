"""VQ-VAE-2 and its PixelSNAIL priors: causality of the attention and of the whole prior by gradient,
the bottom prior's dependence on the top codes, sampling and decoding shapes, refusal of codes of
another shape, the two levels of the model, and stage 2 from the command line."""

import json

import pytest
import torch

import aezoo
from aezoo.errors import AezooError
from aezoo.models.pixelsnail import CausalSelfAttention, PixelSNAIL, raster_shift
from aezoo.models.vqvae2 import VQVAE2
from aezoo.registry import MODELS
from conftest import run_cli

TINY = MODELS["vqvae2"].tiny


# these tiny models run thousands of small ops (sampling is one pass per position)
pytestmark = pytest.mark.usefixtures("one_thread")


def vqvae2(shape=(1, 28, 28), **kw) -> VQVAE2:
    return aezoo.build("vqvae2", **{**TINY, "data_shape": shape, **kw}).eval()


def snail(model: VQVAE2 | None = None, levels=((8, 2, 3), (8, 4, 6)), **kw):
    """A tiny PixelSNAIL prior over `model`'s code levels, or over `levels` (K, H, W)."""
    if model is not None:
        levels = [(lv.codebook_size, *lv.shape) for lv in model.code_levels()]
    cfg = {"channels": 16, "blocks": 2, "residual": 1, "heads": 2, "key_channels": 8, "value_channels": 8,
           "cond_layers": 1, "codebook_sizes": tuple(k for k, _, _ in levels),
           "code_shapes": tuple(s for _, h, w in levels for s in (h, w)),
           "data_shape": (1 + sum(h * w for _, h, w in levels),), **kw}
    return aezoo.build("pixelsnail", **cfg).eval()


def random_codes(prior, n=3):
    return [torch.randint(k, (n, h, w)) for k, h, w in prior.level_shapes]


# --- causality, by gradient over positions -----------------------------------------------------------
def test_attention_is_causal():
    torch.manual_seed(1)
    h, w = 3, 4
    att = CausalSelfAttention(5, 6, 8, 4, heads=2)
    q_in = torch.randn(2, 5, h, w, requires_grad=True)
    kv_in = torch.randn(2, 6, h, w, requires_grad=True)
    out = att(q_in, kv_in)
    for p in range(h * w):
        gq, gkv = torch.autograd.grad(out.flatten(2)[..., p].sum(), (q_in, kv_in), retain_graph=True)
        gq, gkv = gq.abs().sum((0, 1)).flatten(), gkv.abs().sum((0, 1)).flatten()
        assert (gkv[p + 1:] == 0).all() and (gkv[: p + 1] > 0).all(), p  # keys/values j <= i, every one of them
        assert (gq[torch.arange(h * w) != p] == 0).all(), p  # its own query only
        assert p == 0 or gq[p] > 0, p  # (position 0 has one key to attend to: its weight is 1 whatever the query)


def test_pixelsnail_logits_see_every_earlier_code_and_none_after():
    torch.manual_seed(2)
    h, w, channels = 4, 5, 8
    net = PixelSNAIL(6, channels, 3, blocks=2, residual=2, heads=2, key_channels=8, value_channels=8,
                     cond_channels=3, cond_layers=1, dropout=0.0).eval()
    x = torch.randn(2, channels, h, w, requires_grad=True)
    cond = torch.randn(2, 3, h, w, requires_grad=True)
    logits = net.forward_embedded(x, cond)
    assert logits.shape == (2, 6, h, w)
    for p in range(h * w):
        gx, gc = torch.autograd.grad(logits.flatten(2)[..., p].sum(), (x, cond), retain_graph=True)
        seen = gx.abs().sum((0, 1)).flatten()
        assert (seen[p:] == 0).all(), f"position {p} sees codes at or after itself"
        assert (seen[:p] > 0).all(), f"position {p} misses an earlier code (a blind spot)"
        assert gc.abs().sum() > 0  # the condition is seen (everywhere: it is not causal)


def test_raster_shift():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert raster_shift(x).flatten().tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]


# --- levels and their conditioning --------------------------------------------------------------------
def test_bottom_prior_depends_on_top_codes_and_top_prior_not_on_bottom():
    prior = snail()
    top, bottom = random_codes(prior, n=2)
    other_top = (top + 1) % 8
    with torch.no_grad():
        base = prior.level_logits(1, [top, bottom], None)
        changed = prior.level_logits(1, [other_top, bottom], None)
        assert (base - changed).abs().amax() > 1e-4
        assert torch.equal(
            prior.level_logits(0, [top, bottom], None), prior.level_logits(0, [top, (bottom + 1) % 8], None)
        )
    # log p(c) is the sum of the two levels' terms; each is a proper log-probability (<= 0)
    lp = prior.log_prob_levels([top, bottom])
    assert lp.shape == (2, 2) and (lp < 0).all() and torch.allclose(prior.log_prob([top, bottom]), lp.sum(1))


def test_sampling_returns_valid_codes_of_the_right_shapes():
    prior = snail()
    codes = prior.sample(5)
    assert [tuple(c.shape) for c in codes] == [(5, 2, 3), (5, 4, 6)]
    assert all(c.dtype == torch.long and c.min() >= 0 and c.max() < 8 for c in codes)
    conditional = snail(num_classes=3)
    codes = conditional.sample(4, labels=torch.tensor([0, 1, 2, 0]))
    assert [tuple(c.shape) for c in codes] == [(4, 2, 3), (4, 4, 6)]


def test_sampling_temperature():
    prior = snail()
    torch.manual_seed(0)
    a = prior.sample(6, temperature=1e-4)
    torch.manual_seed(1)
    b = prior.sample(6, temperature=1e-4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # (nearly) zero temperature: the argmax at every step
    with pytest.raises(AezooError, match="temperature"):
        prior.sample(2, temperature=0.0)


def test_decoding_sampled_codes_gives_images_of_the_data_shape():
    for shape in ((1, 28, 28), (3, 16, 24)):
        model = vqvae2(shape)
        model.attach_prior(snail(model))
        images = model.sample(3, temperature=0.8)
        assert images.shape == (3, *shape) and images.min() >= 0 and images.max() <= 1


def test_prior_refuses_codes_of_another_shape():
    small, large = vqvae2((1, 28, 28)), vqvae2((1, 64, 64))
    prior = snail(small)
    with pytest.raises(AezooError, match="trained on"):
        large.attach_prior(prior)
    with pytest.raises(AezooError, match="trained on"):
        prior.log_prob(large.codes(torch.rand(2, 1, 64, 64)))
    with pytest.raises(AezooError, match="trained on"):
        prior.log_prob(small.codes(torch.rand(2, 1, 28, 28))[::-1])  # levels swapped
    prior.log_prob(small.codes(torch.rand(2, 1, 28, 28)))  # its own model's codes are fine


# --- the model --------------------------------------------------------------------------------------
def test_two_levels_padding_and_losses():
    model = vqvae2((1, 28, 28)).train()
    x = torch.rand(4, 1, 28, 28)
    assert [(lv.name, lv.shape) for lv in model.code_levels()] == [("top", (4, 4)), ("bottom", (8, 8))]  # 28 -> 32
    terms = model.loss(x).terms
    assert {"recon", "codebook_top", "commitment_top", "codebook_bottom", "commitment_bottom"} <= set(terms)
    model.eval()
    with torch.no_grad():
        top, bottom = model.codes(x)
        assert torch.allclose(model.decode_codes([top, bottom]), model.reconstruct(x))  # decode_codes == both levels
        # the bottom encoder is conditioned on the decoded top: other top codes change the bottom codes' input
        h = model.encoder_bottom(model._pad(x))
        e_top = model.quantizer_top.lookup(top)
        a = model.bottom_in(torch.cat([h, model.decoder_top(e_top)], 1))
        b = model.bottom_in(torch.cat([h, model.decoder_top(model.quantizer_top.lookup((top + 1) % 8))], 1))
        assert (a - b).abs().amax() > 0


def test_top_only_reconstruction_fills_the_bottom_with_the_expected_code():
    model = vqvae2((1, 28, 28))
    q = model.quantizer_bottom
    with torch.no_grad():
        q.ema_count.copy_(torch.arange(1.0, 9.0))
    expected = sum(q.ema_count[i] * q.codebook[i] for i in range(8)) / q.ema_count.sum()
    assert torch.allclose(model.bottom_fill(), expected, atol=1e-6)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        top, _ = model.codes(x)
        z_b = expected.view(1, -1, 1, 1).expand(3, -1, 8, 8)
        by_hand = model.decode(model.decoder_input(model.quantizer_top.lookup(top), z_b))
        assert torch.allclose(model.reconstruct_top_only(x), by_hand, atol=1e-6)
        assert model.reconstruct_top_only(x, "zero").shape == x.shape


# --- stage 2 from the command line -------------------------------------------------------------------
@pytest.mark.slow
def test_cli_trains_both_priors_samples_and_evaluates(tmp_path):
    run = tmp_path / "run"
    sets = [
        f"model.{k}={v}"
        for k, v in {"hidden": 8, "residual_hidden": 4, "residual_layers": 1, "codebook_size": 8, "code_dim": 4}.items()
    ]
    sets = [a for s in sets + ["data.limit=200", "train.batch_size=50"] for a in ("--set", s)]
    assert run_cli("train", "vqvae2", "--out", str(run), "--steps", "4", *sets)[0] == 0
    prior_sets = [
        "--set",
        "prior.channels=8",
        "--set",
        "prior.blocks=1",
        "--set",
        "prior.key_channels=8",
        "--set",
        "prior.value_channels=8",
        "--set",
        "train.batch_size=50",
    ]
    code, _, err = run_cli("train-prior", str(run), "--steps", "3", *prior_sets)
    assert code == 0, err
    prior_cfg = json.loads((run / "prior" / "config.json").read_text())
    assert prior_cfg["model_name"] == "pixelsnail"
    assert prior_cfg["prior"]["code_shapes"] == [4, 4, 8, 8] and prior_cfg["prior"]["source"] == "vqvae2"
    code, _, err = run_cli("sample", str(run), "--n", "4", "--temperature", "0.7", "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    results = json.loads((run / "eval.json").read_text())
    assert len(results["codebook_usage"]) == 2 and len(results["codebook_perplexity"]) == 2
    assert results["bits_per_dim"] > 0 and results["recon_mse_top_only"] > 0


def test_top_only_reconstruction_with_the_bottom_prior_keeps_the_top_codes():
    model = vqvae2((1, 28, 28))
    with pytest.raises(AezooError, match="train-prior"):
        model.reconstruct_top_only(torch.rand(2, 1, 28, 28), "prior")
    prior = snail(model)
    model.attach_prior(prior)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        top, _ = model.codes(x)
        torch.manual_seed(5)
        drawn = prior.sample(3, given=[top])
        assert torch.equal(drawn[0], top)
        torch.manual_seed(5)
        assert torch.allclose(model.reconstruct_top_only(x, "prior"), model.decode_codes(drawn))
