"""The regularised autoencoders' maths against closed forms and brute force: contractive penalties
against a loop over latent units, the top-k mask, the sparsity KL, corruption, the denoising target,
the schedules, and the feature probes."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aezoo
from aezoo import losses
from aezoo.errors import AezooError
from aezoo.evaluation import features as probes
from aezoo.models.ae import reconstruction_error
from aezoo.models.regularised import fraction_mask, gaussian_noise, iid_mask_noise, mask_noise, salt_pepper_noise
from conftest import run_cli

SHAPE = (1, 6, 6)  # small images: D = 36


def brute_force_contraction(f, x):
    """||J_f(x)||_F^2 per example by a Python loop over the code's units (what the peers do)."""
    x = x.clone().requires_grad_(True)
    z = f(x)
    total = torch.zeros(len(x), dtype=x.dtype)
    for j in range(z.shape[1]):
        (g,) = torch.autograd.grad(z[:, j].sum(), x, retain_graph=True)
        total += g.pow(2).flatten(1).sum(1)
    return total


def cae(**cfg):
    return aezoo.build("cae", data_shape=SHAPE, **cfg).double()


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "softplus", "elu", "leaky_relu", "linear"])
def test_closed_form_equals_brute_force_jacobian(act):
    model = cae(hidden=(), latent_dim=7, code_activation=act)
    assert model.method == "closed_form"
    x = torch.rand(5, *SHAPE, dtype=torch.float64)
    got = model.contraction(x, model.layers(x))
    assert torch.allclose(got, brute_force_contraction(model.code, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softplus"])
def test_two_layer_form_equals_brute_force_jacobian(act):
    model = cae(hidden=(9,), latent_dim=5, activation=act, code_activation="linear")
    assert model.method == "two_layer"
    x = torch.rand(5, *SHAPE, dtype=torch.float64)
    got = model.contraction(x, model.layers(x))
    assert torch.allclose(got, brute_force_contraction(model.code, x), rtol=1e-10, atol=1e-12)


def test_batched_jacobian_equals_brute_force_for_any_encoder():
    model = aezoo.build("cae", data_shape=(1, 8, 8), backbone="conv", channels=(3, 4), hidden=(6,), latent_dim=5,
                        activation="gelu").double()
    assert model.method == "jacobian"
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    got = model.contraction(x, model.layers(x))
    assert torch.allclose(got, brute_force_contraction(model.code, x), rtol=1e-10)


def test_exact_methods_agree_in_value_and_gradient():
    """The closed form, the batched Jacobian and a loop over units give one loss and one gradient."""
    grads = {}
    for method in ("closed_form", "jacobian"):
        torch.manual_seed(0)
        model = cae(hidden=(), latent_dim=6, penalty=method, contractive_weight=0.7)
        x = torch.rand(5, *SHAPE, dtype=torch.float64)
        out = model.loss(x)
        out.total.backward()
        grads[method] = (out.total.detach(), [p.grad.clone() for p in model.encoder.parameters()])
    (v1, g1), (v2, g2) = grads.values()
    assert torch.allclose(v1, v2, rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(g1, g2))


def test_gram_product_has_the_gradient_of_w_times_w_transposed():
    w = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(losses.gram(w), w @ w.T)
    assert torch.autograd.gradcheck(losses.gram, (w,))
    assert torch.autograd.gradgradcheck(losses.gram, (w,))


def test_two_layer_penalty_gradient_equals_the_batched_jacobians():
    torch.manual_seed(0)
    grads = {}
    for method in ("two_layer", "jacobian"):
        torch.manual_seed(0)
        model = cae(hidden=(9,), latent_dim=4, penalty=method, contractive_weight=0.7, code_activation="linear")
        x = torch.rand(5, *SHAPE, dtype=torch.float64)
        out = model.loss(x)
        out.total.backward()
        grads[method] = [p.grad.clone() for p in model.encoder.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*grads.values()))


def test_projection_estimate_is_unbiased():
    model = cae(hidden=(9,), latent_dim=5, activation="tanh", code_activation="tanh", penalty="projection",
                projections=4000)
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    exact = brute_force_contraction(model.code, x)
    g = torch.Generator().manual_seed(1)
    draws = losses._vjp_norms(model.code, x, torch.randint(0, 2, (4000, 3, 5), generator=g).double() * 2 - 1)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    # and the model's own estimate, from the global generator
    est = model.contraction(x, model.layers(x))
    assert ((est - exact).abs() < 4 * se).all()


def test_cae_auto_and_refusals():
    assert cae(hidden=(), latent_dim=4).method == "closed_form"
    assert cae(hidden=(8,), latent_dim=4, code_activation="linear").method == "two_layer"
    assert cae(hidden=(8,), latent_dim=4).method == "jacobian"  # sigmoid code after a hidden layer
    big = aezoo.build("cae", data_shape=(3, 64, 64), hidden=(8, 8), latent_dim=64)
    assert big.method == "projection"
    with pytest.raises(AezooError, match="closed_form"):
        aezoo.build("cae", hidden=(8,), penalty="closed_form")
    with pytest.raises(AezooError, match="two_layer"):
        aezoo.build("cae", hidden=(8, 8), penalty="two_layer")


def test_peer_style_penalty_value():
    """The two-layer form on the benchmark's 784-500-64 tanh shape equals the unit loop."""
    model = aezoo.build("cae", hidden=(50,), latent_dim=8, activation="tanh", code_activation="linear").double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(model.contraction(x, model.layers(x)), brute_force_contraction(model.code, x), rtol=1e-10)


# --- k-sparse ------------------------------------------------------------------------------------


def test_topk_keeps_exactly_k_and_passes_gradient_only_to_them():
    z = torch.randn(6, 20, requires_grad=True)
    out = losses.keep_topk(z, 4)
    kept = out != 0
    assert (kept.sum(1) == 4).all()
    assert torch.equal(kept, losses.topk_mask(z, 4))
    # the kept units are the 4 largest of each row
    largest = z.detach().sort(1, descending=True).values[:, :4]
    assert torch.equal(out.detach().sort(1, descending=True).values[:, :4], largest)
    w = torch.randn(6, 20)
    (out * w).sum().backward()
    assert torch.equal(z.grad, torch.where(kept, w, torch.zeros_like(w)))


def test_ksparse_schedule_and_feature_encoding():
    m = aezoo.build("ksparse_ae", data_shape=SHAPE, latent_dim=50, k=5, k_start=45, k_schedule_steps=100, alpha=2)
    ks = []
    for step in (0, 50, 100, 10**6):
        ks.append(m.current_k(step))
    assert ks == [45, 25, 5, 5]
    x = torch.rand(7, *SHAPE)
    assert ((m.sparsify(m.code(x), 0) != 0).sum(1) == 45).all()
    assert m.current_k(None) == 5  # no step: the trained model's k
    m.eval()  # evaluation: the target k, whatever the step
    assert m.current_k(0) == 5
    assert ((m.encode(x) != 0).sum(1) == 10).all()  # alpha * k units for features
    dense = aezoo.build("ksparse_ae", data_shape=SHAPE, latent_dim=30, k=3, k_start=0, k_schedule_steps=10)
    assert dense.current_k(0) == 30
    with pytest.raises(AezooError, match="larger than"):
        aezoo.build("ksparse_ae", latent_dim=10, k=11)


# --- sparse --------------------------------------------------------------------------------------


def test_sparsity_kl_formula():
    rho = 0.05
    rho_hat = torch.tensor([0.01, 0.05, 0.3, 0.9], dtype=torch.float64)
    expected = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    got = losses.sparsity_kl(rho, rho_hat)
    assert torch.allclose(got, expected)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(probs=torch.full_like(rho_hat, rho)), torch.distributions.Bernoulli(probs=rho_hat)
    )
    assert torch.allclose(got, ref)
    assert abs(float(got[1])) < 1e-12 and (got[[0, 2, 3]] > 0).all()


def test_sparsity_kl_gradient_reaches_nearly_dead_and_saturated_units():
    rho = 0.05
    formula = lambda r: rho * torch.log(rho / r) + (1 - rho) * torch.log((1 - rho) / (1 - r))
    derivative = lambda r: (1 - rho) / (1 - r) - rho / r
    # a unit nearly dead (1e-9) or nearly saturated (1 - 1e-9): the KL is finite there, and so is its
    # gradient, which is the formula's derivative: descent pushes the first up and the second down, to rho
    for dtype, r in ((torch.float64, [1e-9, 1 - 1e-9, 0.3]), (torch.float32, [1e-9, 1 - 1e-6, 0.3])):
        rho_hat = torch.tensor(r, dtype=dtype, requires_grad=True)
        value = losses.sparsity_kl(rho, rho_hat)
        value.sum().backward()
        exact = rho_hat.detach().double()  # the values as the dtype holds them
        assert torch.allclose(value.double(), formula(exact), rtol=1e-6, atol=0)
        assert torch.allclose(rho_hat.grad.double(), derivative(exact), rtol=1e-5, atol=0)
        assert rho_hat.grad[0] < -1e7 and rho_hat.grad[1] > 1e5
    # exactly dead or saturated: the KL is infinite; the value stays finite and the gradient finite,
    # with the right sign and at least as strong as for the nearly dead or saturated unit
    for dtype in (torch.float32, torch.float64):
        rho_hat = torch.tensor([0.0, 1.0, 1e-9], dtype=dtype, requires_grad=True)
        value = losses.sparsity_kl(rho, rho_hat)
        value.sum().backward()
        g = rho_hat.grad
        assert torch.isfinite(value).all() and torch.isfinite(g).all(), dtype
        assert g[0] <= g[2] < 0 < g[1] and value[0] >= value[2], dtype
    # through sigmoid units as the sparse autoencoder has them: a unit with mean activation ~1e-11
    # receives the gradient d KL / d u_b = derivative(rho_hat) a_b (1 - a_b) / B on its
    # pre-activations, negative (descent revives it) and summing to about -rho
    u = torch.tensor([-25.0, -26.0, -27.0, -28.0], dtype=torch.float64, requires_grad=True)
    a = torch.sigmoid(u)
    losses.sparsity_kl(rho, a.mean()).backward()
    expected = derivative(a.detach().mean()) * a.detach() * (1 - a.detach()) / len(u)
    assert torch.allclose(u.grad, expected, rtol=1e-9) and (u.grad < 0).all()
    assert math.isclose(float(u.grad.sum()), -rho, rel_tol=1e-6)


def test_sparse_ae_penalises_the_chosen_layers():
    m = aezoo.build(
        "sparse_ae", data_shape=SHAPE, hidden=(9, 7), latent_dim=5, penalised_layers=(0, -1), beta=2.5, rho=0.1
    )
    x = torch.rand(8, *SHAPE)
    out = m.loss(x)
    layers = m.layers(x)
    kl = sum(losses.sparsity_kl(0.1, layers[i].mean(0)).sum() for i in (0, 2))
    recon = reconstruction_error(m.decoder(layers[-1]), x, "bernoulli").mean()
    assert torch.allclose(out.terms["sparsity"], kl) and torch.allclose(out.total, recon + 2.5 * kl)
    for bad, msg in [((3,), "not a layer index"), ((0, -3), "twice"), ((), "at least one")]:
        with pytest.raises(AezooError, match=msg):
            aezoo.build("sparse_ae", hidden=(9, 7), penalised_layers=bad)
    with pytest.raises(AezooError, match="sigmoid"):
        aezoo.build("sparse_ae", hidden=(9,), activation="relu", penalised_layers=(0,))


# --- denoising -----------------------------------------------------------------------------------


def test_mask_salt_pepper_and_iid_mask_corrupt_the_stated_fraction():
    x = torch.full((50, 1, 10, 10), 0.5)
    for fraction in (0.0, 0.1, 0.25, 0.5, 1.0):
        mask = fraction_mask(x, fraction)
        assert (mask.flatten(1).sum(1) == round(fraction * 100)).all()
        assert ((mask_noise(x, fraction) == 0).flatten(1).sum(1) == round(fraction * 100)).all()
    # drawn anew per example
    assert not torch.equal(fraction_mask(x, 0.3)[0], fraction_mask(x, 0.3)[1])
    x = torch.rand(400, 100) * 0.8 + 0.1
    x[0, 0], x[0, 1] = 0.0, 1.0  # the batch's minimum and maximum
    sp = salt_pepper_noise(x, 0.2)
    changed = sp != x
    assert (changed.sum(1) <= 20).all() and (changed[1:].sum(1) == 20).all()
    assert set(sp[changed].unique().tolist()) == {0.0, 1.0}
    assert abs(float((sp[changed] == 1).float().mean()) - 0.5) < 0.03  # a fair coin
    iid = iid_mask_noise(torch.full((400, 100), 0.5), 0.25) == 0  # independent: Binomial(100, 0.25) per row
    counts = iid.sum(1).float()
    assert abs(float(counts.mean()) - 25) < 0.5 and abs(float(counts.var()) - 100 * 0.25 * 0.75) < 4
    assert abs(float(iid.float().mean(0).std()) - (0.25 * 0.75 / 400) ** 0.5) < 0.006  # no favoured dimension
    noise = gaussian_noise(torch.zeros(200_000), 0.3)
    assert abs(float(noise.std()) - 0.3) < 0.003 and abs(float(noise.mean())) < 0.003


def test_dae_reconstructs_the_clean_input():
    m = aezoo.build("dae", data_shape=SHAPE, latent_dim=10, corruption="mask", fraction=0.5)
    x = torch.rand(8, *SHAPE)
    torch.manual_seed(3)
    out = m.loss(x)
    torch.manual_seed(3)
    noisy = m.corrupt(x)
    assert not torch.equal(noisy, x)
    out_of_noisy = m.decoder(m.code(noisy))
    assert torch.allclose(out.terms["recon"], reconstruction_error(out_of_noisy, x, "bernoulli").mean())
    assert not torch.allclose(out.terms["recon"], reconstruction_error(out_of_noisy, noisy, "bernoulli").mean())


def test_stacked_dae_pretrains_one_layer_at_a_time_then_fine_tunes():
    m = aezoo.build("dae", data_shape=SHAPE, hidden=(12, 10), latent_dim=8, pretrain_steps=3)
    x = torch.rand(6, *SHAPE)
    stack = m.stack()
    assert [(e.in_features, e.out_features, d.in_features, d.out_features) for e, _, d in stack] == [
        (36, 12, 12, 36),
        (12, 10, 10, 12),
        (10, 8, 8, 10),
    ]
    for step, layer in [(0, 0), (2, 0), (3, 1), (8, 2), (9, None), (10**6, None)]:
        assert m.pretraining_layer(step) == layer
        m.zero_grad()
        out = m.loss(x, step)
        out.total.backward()
        touched = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if layer is None:
            assert touched == {n for n, _ in m.named_parameters()}
            assert out.terms["pretrain_layer"] == 0
        else:
            enc, _, dec = stack[layer]
            own = {n for n, p in m.named_parameters() if any(p is q for q in (*enc.parameters(), *dec.parameters()))}
            assert touched == own and out.terms["pretrain_layer"] == layer + 1
    # the second layer's loss is the cross-entropy of reconstructing the first layer's (clean) sigmoid output
    torch.manual_seed(5)
    got = m.loss(x, 3).terms["recon"]
    torch.manual_seed(5)
    h1 = torch.sigmoid(stack[0][0](x.flatten(1)))
    logits = stack[1][2](torch.sigmoid(stack[1][0](m.corrupt(h1))))
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(logits, h1, reduction="none").sum(1).mean())
    with pytest.raises(AezooError, match="backbone=mlp"):
        aezoo.build("dae", backbone="conv", pretrain_steps=10)


def test_plain_ae_is_unchanged():
    m = aezoo.build("ae", data_shape=SHAPE, hidden=(9,), latent_dim=3)
    x = torch.rand(5, *SHAPE)
    assert torch.equal(m.loss(x).total, reconstruction_error(m.decoder(m.encoder(x)), x, "bernoulli").mean())
    assert torch.equal(m.encode(x), m.encoder(x))


# --- probes ----------------------------------------------------------------------------------------


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 5, generator=g), torch.randn(97, 5, generator=g)
    ty = torch.randint(0, 4, (300,), generator=g)
    got = probes.knn_predict(train, ty, test, k=7, chunk=10)
    for i in range(len(test)):
        nearest = ((train - test[i]) ** 2).sum(1).argsort()[:7]
        counts = torch.bincount(ty[nearest], minlength=4)
        best = (counts == counts.max()).nonzero().flatten().tolist()
        expected = int(ty[nearest[0]]) if int(ty[nearest[0]]) in best else best[0]
        assert int(got[i]) == expected


def test_linear_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 20, generator=g) * 4
    y = torch.randint(0, 5, (600,), generator=g)
    codes = centres[y] + torch.randn(600, 20, generator=g)
    assert probes.linear_probe_accuracy(codes[:400], y[:400], codes[400:], y[400:]) == 1.0
    # shuffled labels: chance level
    assert (
        probes.linear_probe_accuracy(codes[:400], y[:400][torch.randperm(400, generator=g)], codes[400:], y[400:]) < 0.5
    )


FAST = [
    "--set",
    "data.limit=300",
    "--set",
    "train.batch_size=50",
    "--set",
    "model.latent_dim=16",
    "--set",
    "train.progress=false",
    "--set",
    "eval.probe_train=200",
]


@pytest.mark.slow
def test_cli_dae_and_sparse_ae_runs(tmp_path):
    run = tmp_path / "dae"
    code, _, err = run_cli(
        "train",
        "dae",
        "--out",
        str(run),
        "--steps",
        "12",
        *FAST,
        "--set",
        "model.hidden=[24]",
        "--set",
        "model.pretrain_steps=4",
    )
    assert code == 0, err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    res = json.loads((run / "eval.json").read_text())
    for key in ("recon_mse", "psnr", "probe_linear_acc", "probe_knn_acc", "denoise_psnr", "corrupted_psnr"):
        assert key in res, key
    assert 0 <= res["probe_linear_acc"] <= 1 and 0 <= res["probe_knn_acc"] <= 1 and res["probe_train_examples"] == 200
    code, _, err = run_cli("report", str(run))
    assert code == 0, err
    for name in ("denoising", "encoder_filters", "decoder_filters"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 0
    run = tmp_path / "sparse"
    assert run_cli("train", "sparse_ae", "--out", str(run), "--steps", "6", *FAST)[0] == 0
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    assert (run / "plots" / "activations.png").stat().st_size > 0
    assert 0 < json.loads((run / "eval.json").read_text())["mean_activation"] < 1


def test_visuals_rows_and_filters():
    m = aezoo.build("dae", latent_dim=100).eval()
    x = torch.rand(30, 1, 28, 28)
    v = m.visuals(x)
    assert v["denoising"].shape == (72, 1, 28, 28)  # 3 rows of 8 per group, 24 images
    assert torch.equal(v["denoising"][8:16], x[:8])  # the clean row between corrupted and reconstructed
    assert v["encoder_filters"].shape == (64, 1, 28, 28)
    assert torch.allclose(
        v["encoder_filters"][0].flatten(), (lambda w: (w - w.min()) / (w.max() - w.min()))(m.encoder.out.weight[0])
    )
    assert isinstance(m.code_activation, nn.Sigmoid)
