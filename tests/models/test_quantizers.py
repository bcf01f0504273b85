"""The quantisers behind `aezoo.quantize.Quantizer` other than plain VQ (whose maths test_vqvae.py and
test_vq_holes.py check): finite scalar quantisation's grid, straight-through gradient and mixed-radix
index; residual VQ's decreasing latent error and quantiser dropout; the Gumbel-softmax relaxation, its
temperature schedule and its KL to the uniform prior; the settings `validate` refuses; and each
quantiser through both VQ models, the engine, a prior on their codes and the evaluation."""

import functools
import math

import pytest
import torch

import aezoo
from aezoo.config import make_run_config
from aezoo.errors import AezooError
from aezoo.quantize import (
    FiniteScalarQuantizer,
    GumbelQuantizer,
    QuantizerConfig,
    ResidualVectorQuantizer,
    gumbel_softmax,
    make_quantizer,
    round_ste,
)
from aezoo.registry import entry

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> QuantizerConfig:
    return QuantizerConfig(**{"codebook_size": 8, "code_dim": 3, "restart_after": 0, **kw})


# --- finite scalar quantisation ---------------------------------------------------------------------
LEVELS = (8, 5, 3, 4)


def fsq() -> FiniteScalarQuantizer:
    return make_quantizer(cfg(quantizer="fsq", fsq_levels=LEVELS, code_dim=len(LEVELS)))


def grid(L: int) -> torch.Tensor:
    """The values one dimension of L levels takes: (i - floor(L/2)) / floor(L/2), i = 0..L-1."""
    return (torch.arange(L) - L // 2) / (L // 2)


def test_fsq_values_lie_on_the_grid_and_rounding_passes_the_gradient_unchanged():
    q = fsq()
    assert isinstance(q, FiniteScalarQuantizer) and q.codebook_size == 8 * 5 * 3 * 4
    z_e = (2 * torch.randn(4, 4, 16, 16)).requires_grad_()
    out = q(z_e)
    for d, L in enumerate(LEVELS):  # every value one of the L levels, and each of them reached
        values = out.z_q[:, d].detach().unique()
        assert torch.equal(values, grid(L)), (L, values)
    assert out.loss == 0 and out.codebook_loss == 0 and out.commitment_loss == 0

    # d z_q / d z_e = f'(z) / floor(L/2): the derivative of the bound alone, so d round / d f = 1
    w = torch.randn_like(out.z_q)
    (out.z_q * w).sum().backward()
    L = torch.tensor(LEVELS).view(1, -1, 1, 1).double()
    half_l, offset = (L - 1) * (1 - 1e-3) / 2, (L % 2 == 0) * 0.5
    t = torch.tanh(z_e.detach().double() + torch.tan(offset / half_l))
    expected = w.double() * half_l * (1 - t**2) / (L // 2)
    assert torch.allclose(z_e.grad.double(), expected, rtol=1e-4, atol=1e-6)
    x = torch.randn(50, requires_grad=True)
    round_ste(x).sum().backward()
    assert torch.equal(round_ste(x.detach()), x.detach().round()) and torch.equal(x.grad, torch.ones(50))


def test_fsq_index_and_code_round_trip_over_all_codes():
    q = fsq().eval()
    k = q.codebook_size
    codes = torch.arange(k).view(1, k)
    points = q.lookup(codes)  # (1, D, K): the grid point of every index
    assert len(points[0].t().unique(dim=0)) == k  # K distinct codes
    for d, L in enumerate(LEVELS):
        assert torch.isin(points[:, d], grid(L)).all()
    # digit i_d = (index // prod_{d'<d} L_d') mod L_d: the first dimension is the least significant
    first = [grid(L)[0] for L in LEVELS]  # digits (0, 0, 0, 0)
    for index, dim in ((1, 0), (8, 1), (40, 2), (120, 3)):  # 1, L_1, L_1 L_2, L_1 L_2 L_3: one digit 1, the rest 0
        expected = torch.tensor([grid(L)[1] if d == dim else first[d] for d, L in enumerate(LEVELS)])
        assert torch.equal(q.lookup(torch.tensor([[index]]))[0, :, 0], expected), index
    # an encoder output whose bound rounds to each grid point gets that point's index back
    L = torch.tensor(LEVELS).view(1, -1, 1).double()
    half_l, offset = (L - 1) * (1 - 1e-3) / 2, (L % 2 == 0) * 0.5
    target = (points.double() * (L // 2)).clamp(-half_l - offset + 0.1, half_l - offset - 0.1)
    z_e = (torch.atanh((target + offset) / half_l) - torch.tan(offset / half_l)).float()
    out = q(z_e)
    assert torch.equal(out.codes, codes) and torch.equal(q.assign(z_e), codes)
    assert torch.equal(out.z_q, points)
    assert torch.equal(out.counts, torch.ones(k))


# --- residual VQ ------------------------------------------------------------------------------------
def test_rvq_latent_error_does_not_increase_with_each_codebook():
    rvq = make_quantizer(cfg(quantizer="rvq", rvq_depth=4, codebook_size=16, code_dim=3))
    assert isinstance(rvq, ResidualVectorQuantizer) and rvq.depth == 4
    z = torch.randn(2, 3, 16, 16)
    rvq.kmeans_init(z, iters=4)  # stage i placed on the residuals of stages < i
    rvq.eval()
    codes = rvq.assign(z)
    assert codes.shape == (2, 4, 16, 16)
    partial, errors = torch.zeros_like(z), [float((z**2).sum())]
    for i, stage in enumerate(rvq.stages):
        partial = partial + stage.lookup(codes[:, i])
        errors.append(float(((z - partial) ** 2).sum()))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:])), errors
    assert errors[4] < 0.6 * errors[1], errors  # the later codebooks do quantise what the first left
    out = rvq(z)  # the forward pass picks the same codes, z_q = sum_i e_i
    assert torch.equal(out.codes, codes) and torch.allclose(out.z_q, partial, atol=1e-6)
    assert torch.allclose(rvq.lookup(codes), partial) and len(rvq.code_maps(codes)) == 4
    assert torch.equal(rvq.join_maps(rvq.code_maps(codes)), codes)


def test_rvq_gradient_is_straight_through_once():
    rvq = make_quantizer(cfg(quantizer="rvq", rvq_depth=3, codebook_update="gradient")).train()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = rvq(z_e)
    w = torch.randn_like(out.z_q)
    (out.z_q * w).sum().backward()  # the decoder's gradient reaches z_e once, not once per stage
    assert torch.allclose(z_e.grad, w)


def test_rvq_dropout_uses_a_prefix_of_the_codebooks_in_training():
    rvq = make_quantizer(cfg(quantizer="rvq", rvq_depth=3, rvq_dropout=True, codebook_size=8, code_dim=2)).train()
    z = torch.randn(4, 2, 6, 6)
    seen = set()
    for step in range(24):
        before = [(s.codebook.clone(), s.ema_count.clone()) for s in rvq.stages]
        n = rvq.active_depth(step)
        assert n == rvq.active_depth(step) and 1 <= n <= 3  # a function of the step
        out = rvq(z, step)
        seen.add(n)
        assert (out.codes[:, :n] >= 0).all() and (out.codes[:, n:] == -1).all(), (step, n)
        assert (out.counts[:n].sum(1) == 36 * 4).all() and (out.counts[n:] == 0).all()
        used = sum(cb[out.codes[:, i]].movedim(-1, 1) for i, (cb, _) in enumerate(before[:n]))
        assert torch.allclose(out.z_q, used, atol=1e-6)  # z_q is the sum of the first n codes only
        for i, (stage, (cb, count)) in enumerate(zip(rvq.stages, before)):
            moved = not torch.equal(stage.ema_count, count)
            assert moved == (i < n), (step, n, i)  # only the stages used learn
            if i >= n:
                assert torch.equal(stage.codebook, cb)
    assert seen == {1, 2, 3}
    rvq.eval()
    assert (rvq(z, 5).codes >= 0).all()  # evaluation uses every codebook
    # codebooks learned by gradient then miss some steps' gradients: DDP is told to look for them
    assert not rvq.skips_parameters and not aezoo.build("vqvae", **entry("vqvae").tiny).skips_parameters
    model = aezoo.build("vqvae2", **{**entry("vqvae2").tiny, "quantizer": "rvq", "rvq_dropout": True,
                                     "codebook_update": "gradient"})
    assert model.skips_parameters


# --- Gumbel-softmax ---------------------------------------------------------------------------------
def entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.xlogy(p, p).sum(-1)


def test_gumbel_relaxation_approaches_one_hot_as_the_temperature_falls():
    logits = torch.randn(4000, 16)
    max_p, ent = [], []
    for tau in (4.0, 1.0, 0.5, 0.1, 0.01, 0.001):
        y = gumbel_softmax(logits, tau, torch.Generator().manual_seed(0))
        assert torch.allclose(y.sum(-1), torch.ones(4000))
        max_p.append(float(y.max(-1).values.mean()))
        ent.append(float(entropy(y).mean()))
    assert all(b > a for a, b in zip(max_p, max_p[1:])) and all(b < a for a, b in zip(ent, ent[1:])), (max_p, ent)
    assert max_p[-1] > 0.998 and ent[-1] < 0.01 and max_p[0] < 0.5
    # the Gumbel-max trick: the relaxed code's argmax is distributed as softmax(logits)
    row = torch.tensor([2.0, 1.0, 0.0, -1.0])
    y = gumbel_softmax(row.expand(40_000, 4), 0.5, torch.Generator().manual_seed(1))
    freq = torch.bincount(y.argmax(-1), minlength=4) / 40_000
    assert torch.allclose(freq, torch.softmax(row, 0), atol=0.01), freq


def test_gumbel_temperature_schedule_and_codes():
    q = make_quantizer(cfg(quantizer="gumbel", gumbel_tau_start=1.0, gumbel_tau_end=0.01, gumbel_anneal_steps=100))
    assert isinstance(q, GumbelQuantizer)
    assert q.tau(0) == 1.0 and math.isclose(q.tau(100), 0.01) and math.isclose(q.tau(10**6), 0.01)
    assert math.isclose(q.tau(50), 0.1)  # exponential: the geometric mean half way
    q.cfg.gumbel_anneal = "linear"
    assert math.isclose(q.tau(50), 0.505) and math.isclose(q.tau(100), 0.01)
    q.cfg.gumbel_anneal = "exponential"

    z_e = torch.randn(2, 3, 4, 5)
    logits = q.proj(z_e.movedim(1, -1))
    torch.manual_seed(7)
    out = q.train()(z_e, step=50)  # training: relaxed one-hot at tau(50) times the codebook
    torch.manual_seed(7)
    soft = gumbel_softmax(logits, 0.1)
    assert torch.allclose(out.z_q, (soft @ q.codebook).movedim(-1, 1), atol=1e-6)
    assert torch.equal(out.codes, logits.argmax(-1)) and math.isclose(float(out.terms["tau"]), 0.1, rel_tol=1e-6)
    out = q.eval()(z_e, step=50)  # evaluation: the argmax's code vector
    assert torch.equal(out.z_q, q.codebook[logits.argmax(-1)].movedim(-1, 1).detach())
    assert torch.equal(q.assign(z_e), out.codes) and torch.equal(q.lookup(out.codes), out.z_q)


def test_gumbel_kl_to_uniform_is_the_per_position_formula():
    """kl = sum over positions of (log K - H(softmax(l))), batch mean: the ELBO's KL to a uniform prior
    over the K codes at each position (not the aggregate log K - H(mean probs))."""
    k, weight = 8, 0.3
    q = make_quantizer(cfg(quantizer="gumbel", codebook_size=k, gumbel_kl_weight=weight)).train()
    z_e = 3 * torch.randn(5, 3, 4, 2)
    out = q(z_e, 0)
    p = torch.softmax(q.proj(z_e.movedim(1, -1)), -1)
    expected = (math.log(k) - entropy(p)).sum() / 5
    assert torch.allclose(out.terms["kl"], expected, atol=1e-5)
    assert torch.allclose(out.loss, weight * expected, atol=1e-5)
    assert out.codebook_loss == 0 and out.commitment_loss == 0
    with torch.no_grad():  # zero logits: q uniform at every position, KL 0
        q.proj.weight.zero_()
        q.proj.bias.zero_()
    assert abs(float(q(z_e).terms["kl"].detach())) < 1e-5


def test_the_models_thread_the_training_step_to_the_quantiser():
    for name in ("vqvae", "vqvae2"):
        model = aezoo.build(name, **{**entry(name).tiny, "data_shape": (1, 16, 16), "quantizer": "gumbel",
                                     "gumbel_anneal_steps": 10}).train()
        terms = model.loss(torch.rand(2, 1, 16, 16), 5).terms
        tau = [v for key, v in terms.items() if key.startswith("tau")]
        assert tau and all(math.isclose(float(t), 1 / 16**0.5, rel_tol=1e-5) for t in tau), (name, terms)


# --- settings that cannot work ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_validate_refuses_what_cannot_work(name):
    tiny = entry(name).tiny
    with pytest.raises(AezooError, match="code_dim=3"):
        aezoo.build(name, **{**tiny, "quantizer": "fsq", "fsq_levels": (8, 8, 8)})  # tiny code_dim is 4
    with pytest.raises(AezooError, match="at least 2"):
        aezoo.build(name, **{**tiny, "quantizer": "fsq", "fsq_levels": (8, 1), "code_dim": 2})
    for q in ("fsq", "gumbel"):
        with pytest.raises(AezooError, match="kmeans_iters"):
            aezoo.build(name, **{**tiny, "quantizer": q, "fsq_levels": (4, 4, 4, 4), "kmeans_iters": 2})
    with pytest.raises(AezooError, match="rvq_dropout"):
        aezoo.build(name, **{**tiny, "rvq_dropout": True})
    with pytest.raises(AezooError, match="quantizer must be one of"):
        make_run_config(name, entry(name).config_class, {"model": {"quantizer": "lfq"}})


# --- through the engine: train, prior, evaluation -------------------------------------------------
@pytest.fixture(scope="module")
def mnist_read_once():
    """MNIST's bundled pickle is read once for the whole module (5 s a read on a shared CPU)."""
    from aezoo.data import mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist, "read_bundled", functools.cache(mnist.read_bundled))
        yield


QUANTIZERS = {"vq": {}, "fsq": {"fsq_levels": (4, 3, 3, 2)}, "rvq": {"rvq_dropout": True, "kmeans_iters": 2},
              "gumbel": {"gumbel_anneal_steps": 2}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_each_quantizer_trains_gets_a_prior_and_bits_per_dim(name, tmp_path, mnist_read_once):
    from aezoo.evaluation import evaluate
    from aezoo.train import train
    from aezoo.train_prior import train_prior

    for quantizer, extra in QUANTIZERS.items():
        model = {**entry(name).tiny, "quantizer": quantizer, **extra}
        tree = {"model": model, "data": {"name": "mnist", "limit": 40},
                "train": {"steps": 3, "batch_size": 20, "progress": False, "val_every": 3},
                "eval": {"batch_size": 40}}
        run = tmp_path / quantizer
        train(make_run_config(name, entry(name).config_class, tree), run)
        train_prior(run, "pixelcnn", ["prior.channels=4", "prior.layers=1", "prior.head=8", "train.batch_size=20",
                                      "train.progress=false"], steps=2)
        results = evaluate(run)
        levels = aezoo.load(run).code_levels()
        depth = 2 if quantizer == "rvq" else 1
        assert len(levels) == depth * (2 if name == "vqvae2" else 1), (quantizer, levels)
        k = 4 * 3 * 3 * 2 if quantizer == "fsq" else entry(name).tiny["codebook_size"]
        assert all(lv.codebook_size == k for lv in levels)
        use, ppl = results["codebook_usage"], results["codebook_perplexity"]
        use, ppl = (use, ppl) if isinstance(use, list) else ([use], [ppl])
        assert len(use) == len(ppl) == len(levels)
        assert all(0 < u <= 1 for u in use) and all(1 <= p <= k for p in ppl), (quantizer, results)
        assert math.isfinite(results["bits_per_dim"]) and results["bits_per_dim"] > 0, (quantizer, results)
        assert math.isclose(results["bits_per_dim"] * 784 * math.log(2), results["prior_nll"] + results["decoder_nll"],
                            rel_tol=1e-6)
