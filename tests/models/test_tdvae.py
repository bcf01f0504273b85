"""TD-VAE maths and its sequence data: causal beliefs, the five terms of J(t1, t2) against densities
written out with torch.distributions, the bounds of the jump sampling, rollouts and the baseline,
and datasets that are deterministic and move as specified."""

import json

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

import aezoo
from aezoo.config import DataConfig
from aezoo.data import load_dataset
from aezoo.data.sequences import moving_frames, oscillator, random_directions
from aezoo.errors import AezooError
from aezoo.models.tdvae import line_images, sample_pairs
from conftest import run_cli


def gen(seed):
    return torch.Generator().manual_seed(seed)


SMALL = {"hidden": (16,), "latent_dim": 3, "belief_dim": 8, "block_hidden": 8, "max_jump": 3}


def small(**cfg):
    model = aezoo.build("tdvae", **{**SMALL, **cfg})
    torch.nn.init.normal_(model.decoder.project.weight, std=0.3)  # make every term depend on z
    return model


# --- beliefs --------------------------------------------------------------------------------------
def test_belief_at_t_depends_only_on_frames_up_to_t():
    model = small(data_shape=(6, 3))
    x = torch.randn(2, 6, 3, requires_grad=True)
    b = model.beliefs(x)
    assert b.shape == (2, 7, 8) and torch.equal(b[:, 0], torch.zeros(2, 8))
    for t in range(1, 7):  # b[:, t] has seen x[:, :t]
        (grad,) = torch.autograd.grad(b[:, t].pow(2).sum(), x, retain_graph=True)
        per_frame = grad.abs().sum((0, 2))
        assert torch.all(per_frame[t:] == 0), (t, per_frame)
        assert torch.all(per_frame[:t] > 0), (t, per_frame)


# --- the objective ----------------------------------------------------------------------------------
def _by_hand(dist, c, z=None):
    """Walk a StateDistribution's layers with torch.distributions: (z, log-density), sampling with
    the same draws as DiagonalGaussian.rsample where z is None."""
    d = dist.latent_dim
    parts, logp = [], 0.0
    for i, block in enumerate(dist.blocks):
        a, g = block.gate(torch.cat([c, *parts], -1)).chunk(2, -1)
        mean, logvar = block.out(torch.tanh(a) * torch.sigmoid(g)).chunk(2, -1)
        normal = Normal(mean, torch.exp(0.5 * logvar))
        zi = mean + normal.stddev * torch.randn(mean.shape) if z is None else z[:, i * d : (i + 1) * d]
        logp = logp + normal.log_prob(zi).sum(-1)
        parts.append(zi)
    return torch.cat(parts, -1), logp


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian_learned"])
def test_each_term_of_j_matches_its_density(layers, likelihood):
    frames = likelihood == "bernoulli"
    shape = (5, 1, 4, 4) if frames else (5, 2)
    model = small(
        data_shape=shape, layers=layers, likelihood="auto" if likelihood != "gaussian_learned" else likelihood
    )
    x = torch.rand(3, *shape).round() if frames else torch.randn(3, *shape)
    t1 = torch.tensor([[0, 2], [1, 3], [4, 0]])
    t2 = torch.tensor([[3, 3], [2, 5], [5, 1]])
    torch.manual_seed(7)
    terms = model.pair_terms(x, t1, t2)

    torch.manual_seed(7)
    b = model.beliefs(x)
    rows = torch.arange(3).unsqueeze(1).expand_as(t1)
    b1, b2 = b[rows, t1].flatten(0, 1), b[rows, t2].flatten(0, 1)
    x2 = x[rows, t2 - 1].flatten(0, 1)
    z2, log_pb_t2 = _by_hand(model.p_b, b2)  # z_t2 ~ p_B(. | b_t2)
    z1, log_ps = _by_hand(model.p_s, torch.cat([z2, b1, b2], -1))  # z_t1 ~ p_S(. | z_t2, b_t1, b_t2)
    _, log_pb_t1 = _by_hand(model.p_b, b1, z1)
    jump = torch.nn.functional.one_hot((t2 - t1).flatten() - 1, 3).float()
    _, log_pt = _by_hand(model.p_t, torch.cat([z1, jump], -1), z2)
    out = model.decoder(z2)
    if likelihood == "bernoulli":
        log_pd = Bernoulli(logits=out).log_prob(x2).flatten(1).sum(1)
    elif likelihood == "gaussian":
        log_pd = Normal(out, 0.1).log_prob(x2).sum(1)  # sigma = 0.1 by default
    else:
        mu, logvar = out.chunk(2, 1)
        logvar = 7 * torch.tanh(logvar / 7)  # LearnedGaussian's bound on the log-variance
        log_pd = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x2).sum(1)
    expected = {"log_pd": log_pd, "log_pb_t1": log_pb_t1, "log_pt": log_pt, "log_pb_t2": log_pb_t2, "log_ps": log_ps}
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].shape == (6,)
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_loss_is_minus_j_over_sampled_pairs():
    model = small(data_shape=(6, 2), pairs=3)
    x = torch.randn(4, 6, 2)
    torch.manual_seed(3)
    out = model.loss(x)
    torch.manual_seed(3)
    t1, t2 = sample_pairs(4, 3, 6, 3)
    terms = {k: v.mean() for k, v in model.pair_terms(x, t1, t2).items()}
    j = terms["log_pd"] + terms["log_pb_t1"] + terms["log_pt"] - terms["log_pb_t2"] - terms["log_ps"]
    torch.testing.assert_close(out.total, -j)
    assert set(out.terms) == {"log_pd", "log_pb_t1", "log_pt", "log_pb_t2", "log_ps"}


def test_jump_sampling_respects_bounds():
    torch.manual_seed(0)
    t1, t2 = sample_pairs(5000, 4, length=7, max_jump=4)
    jump = t2 - t1
    assert t1.min() == 0 and t2.max() == 7 and torch.all(t1 < t2)
    assert jump.min() == 1 and jump.max() == 4
    freq = torch.bincount(jump.flatten(), minlength=5)[1:].float() / jump.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)  # t2 - t1 uniform on 1..max_jump
    for d in range(1, 5):  # given the jump, t1 uniform over every place where the pair fits
        starts = torch.bincount(t1[jump == d], minlength=8).float()
        assert torch.all(starts[: 8 - d] > 0) and torch.all(starts[8 - d :] == 0)
        assert starts[: 8 - d].max() / starts[: 8 - d].min() < 1.3
    t1, t2 = sample_pairs(1000, 1, length=3, max_jump=10)
    assert (t2 - t1).max() == 3 and t2.max() <= 3


def test_config_rejects_what_cannot_train():
    with pytest.raises(AezooError, match="max_jump"):
        aezoo.build("tdvae", data_shape=(4, 2), max_jump=4)
    with pytest.raises(AezooError, match="sequences"):
        aezoo.build("tdvae", data_shape=(1, 28, 28))


# --- rollouts ---------------------------------------------------------------------------------------
def test_rollouts_and_the_copy_last_frame_baseline():
    model = small(data_shape=(8, 1, 4, 4)).eval()
    x = torch.rand(5, 8, 1, 4, 4)
    with torch.no_grad():
        assert model.predict(x[:, :3], [1, 3]).shape == (5, 2, 1, 4, 4)
        assert model.rollout(x[:, :0], [3, 3, 1]).shape == (5, 3, 1, 4, 4)  # from the prior belief b_0
        err, base = model.jump_errors(x, context=4)
    assert err.shape == base.shape == (5, 3)
    for d in (1, 2, 3):
        torch.testing.assert_close(base[:, d - 1], (x[:, 3] - x[:, 3 + d]).pow(2).flatten(1).sum(1))
    with pytest.raises(AezooError, match="jumps"):
        model.transition(torch.zeros(2, 3), 4)


def test_without_jump_input_an_interval_is_that_many_transitions(monkeypatch):
    model = small(data_shape=(8, 2), jump_input=False)
    inputs = []
    original = model.p_t.rsample
    monkeypatch.setattr(model.p_t, "rsample", lambda c, t=1.0: (inputs.append(tuple(c.shape)), original(c, t))[1])
    assert model.transition(torch.zeros(2, 3), 3).shape == (2, 3)
    assert inputs == [(2, 3)] * 3  # three steps of p_T(z' | z), no interval among its inputs


def test_line_images_draw_a_connected_curve():
    values = torch.tensor([[0.0, 1.0, 0.0, -1.0]])
    img = line_images([(values, 0, (1.0, 1.0, 1.0))], 4, height=20, px=4)
    assert img.shape == (1, 3, 20, 16) and img.min() >= 0 and img.max() <= 1
    drawn = img[0, 0] > 0
    assert drawn[:, :13].any(0).all()  # every column of the curve has a pixel
    assert drawn[:, 13:].sum() == 0


# --- data ---------------------------------------------------------------------------------------------
def test_moving_frames_move_one_pixel_per_frame_and_wrap_around():
    images = torch.zeros(2, 1, 3, 5, dtype=torch.uint8)
    images[:, 0, 1, 4] = 255  # a single pixel at the right edge
    frames = moving_frames(images, torch.tensor([1, -1]), length=7)
    assert frames.shape == (2, 7, 1, 3, 5)
    cols = [frames[i, :, 0, 1].argmax(-1).tolist() for i in range(2)]
    assert cols[0] == [4, 0, 1, 2, 3, 4, 0]  # right: leaves at the right edge, enters on the left
    assert cols[1] == [4, 3, 2, 1, 0, 4, 3]  # left
    images = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    d = torch.tensor([1, -1, -1, 1])
    frames = moving_frames(images, d, length=20)
    assert torch.equal(frames[:, 0], images)
    for i in range(4):
        for t in range(19):
            assert torch.equal(frames[i, t + 1], frames[i, t].roll(int(d[i]), dims=-1))


@pytest.mark.slow
def test_moving_mnist_is_deterministic_and_made_of_mnist_digits():
    cfg = DataConfig(name="moving_mnist", limit=40)
    a, b = load_dataset(cfg), load_dataset(cfg)
    mnist = load_dataset(DataConfig(name="mnist", limit=40))
    for split in ("train", "val", "test"):
        assert a.x[split].shape == (40, 20, 1, 28, 28) and a.x[split].dtype == torch.uint8
        assert torch.equal(a.x[split], b.x[split])
        assert torch.equal(a.x[split][:, 0], mnist.x[split]) and torch.equal(a.labels[split], mnist.labels[split])
        right = a.factors[split][:, 0]
        assert 0 < right.sum() < 40  # both directions occur
        shift = right * 2 - 1
        for i in range(40):
            assert torch.equal(a.x[split][i, 7], mnist.x[split][i].roll(int(shift[i]) * 7, dims=-1))
    assert a.kind == "sequence" and a.shape == (20, 1, 28, 28)
    assert torch.equal(random_directions(100, gen(1)), random_directions(100, gen(1)))
    assert not torch.equal(random_directions(100, gen(1)), random_directions(100, gen(2)))


def test_oscillator_is_deterministic_and_harmonic():
    y = oscillator(50, gen(0))
    assert y.shape == (50, 40, 1) and y.dtype == torch.float32
    assert torch.equal(y, oscillator(50, gen(0))) and not torch.equal(y, oscillator(50, gen(1)))
    # Without noise p_{t+1} + p_{t-1} = 2 cos(omega) p_t, one omega in [0.2, 0.5] per sequence.
    p = oscillator(50, gen(0), velocity_noise=0.0, observation_noise=0.0)[..., 0].double()
    lhs, mid = p[:, 2:] + p[:, :-2], p[:, 1:-1]
    k = (lhs * mid).sum(1) / (mid * mid).sum(1)
    assert torch.allclose(lhs, k[:, None] * mid, atol=1e-5)
    assert torch.all(k / 2 <= np.cos(0.2) + 1e-6) and torch.all(k / 2 >= np.cos(0.5) - 1e-6)
    assert p.abs().max() <= 1.0 + 1e-6
    ds = load_dataset(DataConfig(name="oscillator"))
    assert ds.kind == "sequence" and {k: len(v) for k, v in ds.x.items()} == {"train": 10000, "val": 1000, "test": 1000}


def test_user_sequences_from_array_files(tmp_path):
    a = np.random.default_rng(0).normal(size=(20, 6, 3)).astype(np.float64)
    np.save(tmp_path / "seq.npy", a)
    ds = load_dataset(DataConfig(name="sequences", file=str(tmp_path / "seq.npy")))
    assert {k: tuple(v.shape) for k, v in ds.x.items()} == {"train": (16, 6, 3), "val": (2, 6, 3), "test": (2, 6, 3)}
    assert ds.kind == "sequence" and torch.allclose(ds.x["train"], torch.from_numpy(a[:16]).float())
    np.savez(tmp_path / "splits.npz", train=a[:10], val=a[10:15], test=a[15:])
    ds = load_dataset(DataConfig(name="sequences", file=str(tmp_path / "splits.npz")))
    assert [len(v) for v in ds.x.values()] == [10, 5, 5]

    bad = {
        "nan.npy": np.where(a > 2, np.nan, a),
        "flat.npy": a[:, :, 0],
        "words.npy": np.array([["a"] * 6] * 5),
        "objects.npy": np.array([[None] * 6] * 5, dtype=object),
    }
    for name, array in bad.items():
        np.save(tmp_path / name, array, allow_pickle=True)
    for name, message in [
        ("nan.npy", "NaN"),
        ("flat.npy", "N x T x D"),
        ("words.npy", "numbers"),
        ("objects.npy", "readable"),
        ("missing.npy", "no such file"),
    ]:
        with pytest.raises(AezooError, match=message):
            load_dataset(DataConfig(name="sequences", file=str(tmp_path / name)))
    with pytest.raises(AezooError, match="data.file"):
        load_dataset(DataConfig(name="sequences"))


@pytest.mark.slow
def test_cli_train_eval_sample_report_on_vector_sequences(tmp_path):
    a = np.sin(np.linspace(0, 6, 8)[None, :, None] + np.arange(30)[:, None, None]).astype(np.float32)
    np.save(tmp_path / "seq.npy", a)
    run = str(tmp_path / "run")
    code, _, err = run_cli(
        "train",
        "tdvae",
        "--data",
        "sequences",
        "--out",
        run,
        "--steps",
        "5",
        "--set",
        f"data.file={tmp_path / 'seq.npy'}",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.progress=false",
        "--set",
        "model.hidden=16",
    )
    assert code == 0, err
    assert run_cli("eval", run)[0] == 0
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(results["rollout_mse"]) == len(results["rollout_mse_baseline"]) == 4
    assert results["rollout_context"] == 4
    assert run_cli("sample", run, "--n", "3")[0] == 0
    assert run_cli("sample", run, "--temperature", "0.5")[0] == 0
    assert run_cli("report", run)[0] == 0
    assert (tmp_path / "run" / "plots" / "rollouts.png").is_file()
    assert (tmp_path / "run" / "plots" / "rollout_mse.png").is_file()
