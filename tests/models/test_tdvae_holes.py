"""TD-VAE: the gradients of J(t1, t2) flow through both reparameterised samples (z_t2 ~ p_B, then
z_t1 ~ p_S) into every density that uses them; and rollouts land on the frames they claim, checked
with stub distributions whose predictions are known exactly, through `jump_errors`, `predict`,
`rollout` and the rollouts evaluator."""

import math

import pytest
import torch
import torch.nn.functional as F

import aezoo
from aezoo.config import EvalConfig, RunConfig
from aezoo.data import Dataset
from aezoo.evaluation.base import EvalContext
from aezoo.evaluation.sequences import rollouts
from aezoo.runfolder import RunFolder

SMALL = {"hidden": (16,), "latent_dim": 3, "belief_dim": 8, "block_hidden": 8, "max_jump": 3}


def small(**cfg):
    model = aezoo.build("tdvae", **{**SMALL, **cfg})
    torch.nn.init.normal_(model.decoder.project.weight, std=0.3)  # make every term depend on z
    return model


# --- gradients of the five terms -----------------------------------------------------------------------
def _walk(dist, c, z=None):
    """A StateDistribution's layers written out: (z, log-density). Samples z = mean + std * eps with the
    draws DiagonalGaussian.rsample makes where z is None; nothing is detached."""
    d = dist.latent_dim
    parts, logp = [], 0.0
    for i, block in enumerate(dist.blocks):
        a, g = block.gate(torch.cat([c, *parts], -1)).chunk(2, -1)
        mean, logvar = block.out(torch.tanh(a) * torch.sigmoid(g)).float().chunk(2, -1)
        logvar = logvar.clamp(min=-30.0)
        zi = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape) if z is None else z[:, i * d : (i + 1) * d]
        logp = logp - 0.5 * (math.log(2 * math.pi) + logvar + (zi - mean) ** 2 * torch.exp(-logvar)).sum(-1)
        parts.append(zi)
    return torch.cat(parts, -1), logp


def _terms_by_hand(model, x, t1, t2):
    b = model.beliefs(x)
    rows = torch.arange(len(x)).unsqueeze(1).expand_as(t1)
    b1, b2 = b[rows, t1].flatten(0, 1), b[rows, t2].flatten(0, 1)
    x2 = x[rows, t2 - 1].flatten(0, 1)
    z2, log_pb_t2 = _walk(model.p_b, b2)
    z1, log_ps = _walk(model.p_s, torch.cat([z2, b1, b2], -1))
    _, log_pb_t1 = _walk(model.p_b, b1, z1)
    jump = F.one_hot((t2 - t1).flatten() - 1, model.config.max_jump).float()
    _, log_pt = _walk(model.p_t, torch.cat([z1, jump], -1), z2)
    sigma = model.config.sigma  # likelihood "auto" on vectors: N(x; decoder(z), sigma^2)
    log_pd = -0.5 * (((x2 - model.decoder(z2)) / sigma) ** 2 + math.log(2 * math.pi * sigma**2)).sum(-1)
    return {"log_pd": log_pd, "log_pb_t1": log_pb_t1, "log_pt": log_pt, "log_pb_t2": log_pb_t2, "log_ps": log_ps}


GROUPS = ("p_b", "p_s", "p_t", "decoder", "lstm", "embed")


def _grads(value, model):
    """d value / d (each group's parameters), zeros where the value does not depend on them."""
    out = {}
    for name in GROUPS:
        params = list(getattr(model, name).parameters())
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        out[name] = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])
    return out


def _setup(layers):
    torch.manual_seed(0)
    model = small(data_shape=(6, 2), layers=layers)
    x = torch.randn(3, 6, 2)
    t1 = torch.tensor([[0, 2], [1, 3], [4, 2]])
    t2 = torch.tensor([[3, 3], [2, 5], [5, 5]])
    return model, x, t1, t2


@pytest.mark.parametrize("layers", [1, 2])
def test_every_term_sends_its_gradient_through_both_samples(layers):
    """Each term's gradient with respect to every part of the model equals that of the same term
    computed by hand from the same draws: a sample detached anywhere (z_t1 in log p_T, z_t2 in log p_D,
    ...) cuts a path the hand computation keeps."""
    model, x, t1, t2 = _setup(layers)
    torch.manual_seed(7)
    terms = model.pair_terms(x, t1, t2)
    torch.manual_seed(7)
    hand = _terms_by_hand(model, x, t1, t2)
    for name in terms:
        torch.testing.assert_close(terms[name], hand[name], rtol=1e-5, atol=1e-5, msg=name)
        got, expected = _grads(terms[name].sum(), model), _grads(hand[name].sum(), model)
        for group in GROUPS:
            torch.testing.assert_close(got[group], expected[group], rtol=1e-4, atol=1e-5, msg=f"d {name} / d {group}")
    # the paths that exist only through the samples, none of them trivially zero
    through_samples = [
        ("log_pt", "p_s"),
        ("log_pt", "p_b"),
        ("log_pd", "p_b"),
        ("log_pb_t1", "p_s"),
        ("log_pb_t1", "p_b"),
        ("log_ps", "p_b"),
    ]
    for name, group in through_samples:
        assert float(_grads(terms[name].sum(), model)[group].abs().max()) > 1e-3, (name, group)


def _directional_fd(model, x, t1, t2, term, group, direction, seed=7, h=1e-2):
    """(autograd, central finite difference) of sum(term) along `direction` (a unit vector over
    `group`'s parameters), the noise of both samples fixed."""
    params = list(getattr(model, group).parameters())
    direction = list(direction.split([p.numel() for p in params]))
    direction = [d.view_as(p) for d, p in zip(direction, params)]

    def value():
        torch.manual_seed(seed)
        return model.pair_terms(x, t1, t2)[term].sum()

    grads = torch.autograd.grad(value(), params, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction) if g is not None)
    with torch.no_grad():
        for p, d in zip(params, direction):
            p += h * d
        up = float(value())
        for p, d in zip(params, direction):
            p -= 2 * h * d
        down = float(value())
        for p, d in zip(params, direction):
            p += h * d
    return analytic, (up - down) / (2 * h)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("term, group", [("log_pt", "p_s"), ("log_pd", "p_b"), ("log_pt", "p_b")])
def test_sample_paths_match_finite_differences_with_fixed_noise(term, group, layers):
    """log p_T(z_t2 | z_t1) depends on p_S only through z_t1, log p_D(x_t2 | z_t2) on p_B only through
    z_t2. Along the direction of steepest ascent of the term computed by hand, the finite difference of
    the model's own forward pass (noise fixed) is the hand gradient's norm, and the model's autograd
    gradient agrees with it."""
    model, x, t1, t2 = _setup(layers)
    torch.manual_seed(7)
    hand = _grads(_terms_by_hand(model, x, t1, t2)[term].sum(), model)[group]
    norm = float(hand.norm())
    assert norm > 0.1, norm  # the path matters
    analytic, numeric = _directional_fd(model, x, t1, t2, term, group, hand / norm)
    assert numeric == pytest.approx(norm, rel=0.02)
    assert analytic == pytest.approx(numeric, rel=0.02)


# --- rollouts with stub distributions -------------------------------------------------------------------
S = 3  # state size of SMALL with one layer
D = 2  # frame size
MAX_JUMP = 3


def frame_value(slope, t):
    """The value of every coordinate of frame t (1-based time) of the sequence with this slope; nonlinear
    in t, so that the errors depend on where a prediction starts."""
    return slope * t + 0.1 * t**2


def sequences(slopes, length=8):
    t = torch.arange(1, length + 1, dtype=torch.float32)
    return frame_value(torch.tensor(slopes)[:, None], t[None, :])[..., None].expand(-1, -1, D).contiguous()


def stubbed(monkeypatch, jump_input=True):
    """A TD-VAE whose belief after t frames is the value of frame t (0 before any frame), whose p_B puts
    the state at the belief, whose p_T adds the interval to the state (read from the one-hot input with
    jump_input, one unit per application without), and whose decoder fills a frame with the state's
    first coordinate. From the first c frames, a jump of d then predicts frame_value(c) + d."""
    model = small(data_shape=(8, D), jump_input=jump_input).eval()

    def beliefs(x):
        b = x.new_zeros(len(x), x.shape[1] + 1, model.config.belief_dim)
        b[:, 1:] = x[..., :1]  # entry t has seen frames 1..t: the value of frame t
        return b

    def p_t_rsample(c, temperature=1.0):
        z = c[..., :S]
        step = (c[..., S:].argmax(-1, keepdim=True) + 1).to(z.dtype) if jump_input else 1.0
        return z + step, z.new_zeros(z.shape[:-1])

    monkeypatch.setattr(model, "beliefs", beliefs)
    monkeypatch.setattr(model.p_b, "rsample", lambda c, temperature=1.0: (c[..., :S], c.new_zeros(c.shape[:-1])))
    monkeypatch.setattr(model.p_t, "rsample", p_t_rsample)
    monkeypatch.setattr(model, "decode", lambda z: z[:, :1].expand(-1, D))
    return model


SLOPES = [1.0, 2.0, 0.5, -1.0]


@pytest.mark.parametrize("jump_input", [True, False])
def test_predict_jumps_each_interval_directly_from_the_last_frame_seen(monkeypatch, jump_input):
    model = stubbed(monkeypatch, jump_input)
    x = sequences(SLOPES)
    s = torch.tensor(SLOPES)
    with torch.no_grad():
        for c in (1, 3, 5):
            pred = model.predict(x[:, :c], [3, 1, 2])
            assert pred.shape == (4, 3, D)
            for i, d in enumerate((3, 1, 2)):
                torch.testing.assert_close(pred[:, i], (frame_value(s, c) + d)[:, None].expand(-1, D))


@pytest.mark.parametrize("jump_input", [True, False])
def test_rollout_chains_the_intervals(monkeypatch, jump_input):
    model = stubbed(monkeypatch, jump_input)
    x = sequences(SLOPES)
    s = torch.tensor(SLOPES)
    with torch.no_grad():
        out = model.rollout(x[:, :4], [2, 1, 3])
        for i, reached in enumerate((2, 3, 6)):  # t + cumsum(intervals)
            torch.testing.assert_close(out[:, i], (frame_value(s, 4) + reached)[:, None].expand(-1, D))
        prior = model.rollout(x[:, :0], [3, 3])  # b_0 = 0: the state starts at 0
        torch.testing.assert_close(prior, torch.tensor([3.0, 6.0])[None, :, None].expand(4, 2, D))
        given = model.rollout(None, [1, 2], z=torch.full((4, S), 10.0))
        torch.testing.assert_close(given, torch.tensor([11.0, 13.0])[None, :, None].expand(4, 2, D))


def expected_errors(slopes, context, max_jump=MAX_JUMP):
    """(B, J) each: D (frame_value(c) + d - frame_value(c + d))^2 for the prediction, and
    D (frame_value(c) - frame_value(c + d))^2 for copying the last frame seen."""
    s = torch.tensor(slopes)[:, None]
    d = torch.arange(1, max_jump + 1, dtype=torch.float32)[None, :]
    seen, future = frame_value(s, context), frame_value(s, context + d)
    return D * (seen + d - future) ** 2, D * (seen - future) ** 2


@pytest.mark.parametrize("jump_input", [True, False])
@pytest.mark.parametrize("context", [2, 4, 5])
def test_jump_errors_compare_each_jump_with_the_frame_it_lands_on(monkeypatch, jump_input, context):
    model = stubbed(monkeypatch, jump_input)
    x = sequences(SLOPES)
    with torch.no_grad():
        err, base = model.jump_errors(x, context)
    exp_err, exp_base = expected_errors(SLOPES, context)
    torch.testing.assert_close(err, exp_err)
    torch.testing.assert_close(base, exp_base)
    assert float(err.abs().sum()) > 0  # nonzero, and different for every context


def test_rollouts_evaluator_averages_the_jump_errors_over_the_split(monkeypatch, tmp_path):
    model = stubbed(monkeypatch)
    slopes = [1.0, 2.0, 0.5, -1.0, 3.0, 0.0, 1.5]
    x = sequences(slopes)
    ds = Dataset("stub", {"train": x, "test": x}, kind="sequence")
    cfg = RunConfig("tdvae", model.config, eval=EvalConfig(split="test", batch_size=3))  # batches of 3, 3, 1
    ctx = EvalContext(model, ds, cfg, "test", RunFolder(tmp_path))
    out = rollouts(ctx)
    assert out["rollout_context"] == model.rollout_context() == 4  # T = 8, max_jump = 3: min(8 // 2, 8 - 3)
    exp_err, exp_base = expected_errors(slopes, 4)
    assert out["rollout_mse"] == pytest.approx(exp_err.mean(0).tolist(), rel=1e-5)
    assert out["rollout_mse_baseline"] == pytest.approx(exp_base.mean(0).tolist(), rel=1e-5)
    assert (tmp_path / "plots" / "rollout_mse.png").is_file()


def test_rollout_context_leaves_room_for_every_jump():
    for (length, max_jump), context in {(8, 3): 4, (6, 4): 2, (20, 4): 10, (5, 4): 1, (2, 1): 1}.items():
        model = small(data_shape=(length, D), max_jump=max_jump)
        assert model.rollout_context() == context
        assert context + max_jump <= length
