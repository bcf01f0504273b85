"""The disentangling successors of the beta-VAE (factor_vae, beta_tc_vae, dip_vae) against closed forms
and brute force, and the engine's second optimiser (capabilities.Adversarial): gradients kept to their
own losses, exact resume, the same auxiliary network in every process."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import aezoo
from aezoo.config import make_run_config, parse_overrides
from aezoo.distributions import DiagonalGaussian
from aezoo.files import load_weights
from aezoo.models.beta_tc_vae import BetaTCVAEConfig, kl_decomposition, log_weights, pairwise_log_density
from aezoo.models.dip_vae import dip_covariance, dip_penalties
from aezoo.models.factor_vae import FactorVAEConfig, permute_dims
from aezoo.registry import MODELS
from aezoo.runfolder import RunFolder
from aezoo.train import Trainer, _LossModule, _new_trainer, resume, train

# --- FactorVAE: the permutation of alg. 1 ----------------------------------------------------------


def test_permute_dims_keeps_each_marginal_and_breaks_the_dependence():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, generator=g)
    z = torch.stack([a, a + 0.1 * torch.randn(4000, generator=g), torch.randn(4000, generator=g)], 1)
    assert torch.corrcoef(z.T)[0, 1] > 0.99
    p = permute_dims(z)
    assert torch.equal(p.sort(0).values, z.sort(0).values)  # every column holds the same values
    r = torch.corrcoef(p.T)
    assert r[0, 1].abs() < 0.08  # ~0 (sd 1/sqrt(4000) = 0.016): the dependence is gone
    assert not torch.equal(p[:, 0], z[:, 0])  # and the values did move


# --- beta-TCVAE: the decomposition and its estimators ---------------------------------------------


def _posterior(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 - 0.5
    return DiagonalGaussian(mean, logvar), g


def _log_normal(z, mean, var):
    return -0.5 * (math.log(2 * math.pi * var) + (z - mean) ** 2 / var)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_three_terms_add_up_to_the_elbo_kl(estimator):
    """MI + TC + DWKL = log q(z_i|x_i) - log p(z_i) on every sample (whatever the estimates of log q(z)),
    so over many draws their mean is the closed-form KL(q(z|x) || N(0, I)) of the ELBO."""
    q, g = _posterior(8, 3, seed=1)
    kl = q.kl_standard().sum(1).mean()
    sums, one_sample = [], []
    for _ in range(800):
        z = q.mean + q.std * torch.randn(q.mean.shape, generator=g, dtype=torch.float64)
        parts = kl_decomposition(q, z, dataset_size=50, estimator=estimator)
        sums.append(parts["mi"] + parts["tc"] + parts["dwkl"])
        one_sample.append((q.log_prob(z) + 0.5 * (math.log(2 * math.pi) + z**2).sum(1)).mean())
    sums = torch.stack(sums)
    torch.testing.assert_close(sums, torch.stack(one_sample))
    mean, se = sums.mean(), sums.std() / math.sqrt(len(sums))
    assert abs(float(mean - kl)) < 4 * float(se) and float(se) < 0.02 * float(kl)


def _brute_force(q, z, weights):
    """(mi, tc, dwkl) with log q(z_i) = log sum_j w_ij q(z_i|x_j), every density by explicit loops."""
    m, d = z.shape
    mean, var = q.mean.tolist(), torch.exp(q.logvar).tolist()
    mi = tc = dwkl = 0.0
    for i in range(m):
        own = sum(_log_normal(float(z[i, k]), mean[i][k], var[i][k]) for k in range(d))
        joint = math.log(sum(weights[i][j] * math.exp(sum(_log_normal(float(z[i, k]), mean[j][k], var[j][k])
                                                          for k in range(d))) for j in range(m)))
        marginals = sum(math.log(sum(weights[i][j] * math.exp(_log_normal(float(z[i, k]), mean[j][k], var[j][k]))
                                     for j in range(m))) for k in range(d))
        prior = sum(_log_normal(float(z[i, k]), 0.0, 1.0) for k in range(d))
        mi, tc, dwkl = mi + (own - joint) / m, tc + (joint - marginals) / m, dwkl + (marginals - prior) / m
    return mi, tc, dwkl


def test_mss_is_exact_and_mws_is_its_definition_when_the_batch_is_the_whole_dataset():
    n, d = 5, 2
    q, g = _posterior(n, d, seed=2)
    z = q.mean + q.std * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = _brute_force(q, z, [[1 / n] * n for _ in range(n)])  # log q(z) = log (1/N) sum_n q(z|x_n)
    mss = kl_decomposition(q, z, dataset_size=n, estimator="mss")
    assert [float(mss[k]) for k in ("mi", "tc", "dwkl")] == pytest.approx(exact, rel=1e-10, abs=1e-10)

    mws = kl_decomposition(q, z, dataset_size=n, estimator="mws")
    by_definition = _brute_force(q, z, [[1 / (n * n)] * n for _ in range(n)])  # 1 / (N M), M = N
    assert [float(mws[k]) for k in ("mi", "tc", "dwkl")] == pytest.approx(by_definition, rel=1e-10, abs=1e-10)
    # ... which is log q(z) - log N and log q(z_j) - log N, in closed form:
    shift = [math.log(n), (d - 1) * math.log(n), -d * math.log(n)]
    assert [float(mws[k]) for k in ("mi", "tc", "dwkl")] == pytest.approx([e + s for e, s in zip(exact, shift)])


def test_mss_weights_average_chen_et_al_estimator_over_its_arbitrary_choice():
    """Chen et al. (app. C.2) weigh x_i's own term 1/N, M - 2 of the others 1/(M - 1) and one other,
    any, (N - M + 1)/(N (M - 1)); averaged over which one, that is the weight of every other here."""
    n, m = 40, 6
    q, g = _posterior(m, 3, seed=3)
    z = q.mean + q.std * torch.randn(m, 3, generator=g, dtype=torch.float64)
    dens = pairwise_log_density(q, z).sum(2).exp()  # q(z_i | x_j)
    ours = (log_weights(m, n, "mss", dtype=torch.float64).exp() * dens).sum(1)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        theirs = []
        for special in others:  # the paper's estimate with `special` as the odd one out
            f = dens[i, i] / n + sum(dens[i, j] / (m - 1) for j in others if j != special)
            theirs.append(f + (n - m + 1) / (n * (m - 1)) * dens[i, special])
        assert float(ours[i]) == pytest.approx(float(sum(theirs) / len(theirs)), rel=1e-12)
    assert float(log_weights(m, n, "mss").exp().sum(1)[0]) == pytest.approx(1.0)  # weights of a mixture


# --- DIP-VAE ------------------------------------------------------------------------------------------


def test_dip_penalties_are_their_formulas_by_hand():
    mean = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -1.0], [-0.5, 2.0, 0.0], [0.5, 1.0, 3.0]], dtype=torch.float64)
    var = torch.tensor([[0.2, 0.1, 0.4], [0.3, 0.5, 0.1], [0.1, 0.2, 0.2], [0.4, 0.2, 0.3]], dtype=torch.float64)
    b, d = mean.shape
    m = [sum(mean[r, i] for r in range(b)) / b for i in range(d)]
    v = [sum(var[r, i] for r in range(b)) / b for i in range(d)]
    cov_i = [[sum((mean[r, i] - m[i]) * (mean[r, j] - m[j]) for r in range(b)) / b for j in range(d)] for i in range(d)]
    cov_ii = [[cov_i[i][j] + (v[i] if i == j else 0) for j in range(d)] for i in range(d)]
    for variant, cov in (("i", cov_i), ("ii", cov_ii)):
        off = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
        diag = sum((cov[i][i] - 1) ** 2 for i in range(d))
        got = dip_penalties(dip_covariance(mean, var, variant))
        assert [float(got[0]), float(got[1])] == pytest.approx([float(off), float(diag)], rel=1e-12)


def test_dip_vae_loss_adds_the_weighted_penalties_to_the_elbo():
    model = aezoo.build("dip_vae", **MODELS["dip_vae"].tiny, variant="ii", lambda_od=3.0, lambda_d=7.0)
    x = torch.rand(8, 1, 16, 16).round()
    torch.manual_seed(5)
    out = model.loss(x)
    q = model.posterior(x)
    off, diag = dip_penalties(dip_covariance(q.mean, q.logvar.exp(), "ii"))
    torch.testing.assert_close(out.total, out.terms["recon"] + out.terms["kl"] + 3.0 * off + 7.0 * diag)
    torch.testing.assert_close(out.terms["dip_offdiag"], off)


# --- FactorVAE and the engine's second optimiser -----------------------------------------------------

def test_factor_vae_adds_gamma_times_the_discriminators_log_density_ratio():
    """TC ~ E[log D(z) / (1 - D(z))], D(z) the discriminator's probability that z is a sample of q(z),
    on the very codes the reconstruction was decoded from (those the loss leaves for D's loss)."""
    model = aezoo.build("factor_vae", **MODELS["factor_vae"].tiny, gamma=5.0)
    x = torch.rand(8, 1, 16, 16).round()
    cache = {}
    out = model.loss(x, 0, cache)
    d = model.discriminator(cache["z"]).softmax(1)[:, 0]
    tc = torch.log(d / (1 - d)).mean()
    torch.testing.assert_close(out.terms["tc"], tc)
    torch.testing.assert_close(out.total, out.terms["recon"] + out.terms["kl"] + 5.0 * tc)
    assert not cache["z"].requires_grad


FAST = ["data.name=dsprites", "data.limit=600", "train.batch_size=50", "train.progress=false",
        "model.backbone=mlp", "model.hidden=[32]", "model.latent_dim=4", "model.disc_hidden=[16,16]",
        "train.log_every=4", "eval.batch_size=300"]


def factor_config(*extra):
    return make_run_config("factor_vae", FactorVAEConfig, parse_overrides(FAST + list(extra)))


def test_the_discriminator_and_the_vae_learn_only_from_their_own_losses(tmp_path):
    """One engine step: the main optimiser holds no discriminator parameter; the encoder and decoder
    get the main loss's gradient; D gets its own loss's gradient and nothing of the TC term's (which
    does reach D in the main loss's backward pass); D's loss reaches no encoder parameter; D moves by
    one Adam(1e-4, (0.5, 0.9)) step of its own gradient."""
    trainer = _new_trainer(factor_config("train.steps=1"), RunFolder(tmp_path))
    model = trainer.model.train()
    disc = model.auxiliary_parameters()
    main_ids = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert main_ids.isdisjoint(id(p) for p in disc) and len(main_ids) + len(disc) == len(list(model.parameters()))
    x = trainer.batches.get(0)
    total, _, cache = _LossModule(model)(x, 0)
    aux = trainer._auxiliary_loss(x, cache)
    main_grads = torch.autograd.grad(total, trainer.main_parameters, retain_graph=True)
    tc_on_disc = torch.autograd.grad(total, disc, retain_graph=True)
    assert sum(float(g.abs().sum()) for g in tc_on_disc) > 0  # the TC term does differentiate D ...
    own = torch.autograd.grad(aux.total, disc, retain_graph=True)
    leak = torch.autograd.grad(aux.total, trainer.main_parameters, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in leak)  # D's loss reaches no VAE parameter
    before = [p.detach().clone() for p in disc]
    trainer._optimizer_step(total, aux.total)
    for p, g in zip(trainer.main_parameters, main_grads):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(disc, own):
        torch.testing.assert_close(p.grad, g)  # ... but D's gradient is its own loss's alone
    reference = [b.clone().requires_grad_() for b in before]
    adam = torch.optim.Adam(reference, lr=1e-4, betas=(0.5, 0.9))
    for r, g in zip(reference, own):
        r.grad = g.clone()
    adam.step()
    for p, r in zip(disc, reference):
        torch.testing.assert_close(p.detach(), r.detach())


def _metrics(run: RunFolder):
    lines = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    return [{k: v for k, v in rec.items() if k not in ("time_s", "samples_per_s")} for rec in lines]


@pytest.mark.slow
def test_factor_vae_resumed_after_a_crash_ends_bit_identical(tmp_path, monkeypatch):
    args = ("train.steps=24", "train.checkpoint_every=8", "train.schedule=cosine")
    whole = train(factor_config(*args), tmp_path / "a")

    real_checkpoint = Trainer.checkpoint

    def crash_after_step_16(self):
        real_checkpoint(self)
        if self.step == 16:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Trainer, "checkpoint", crash_after_step_16)
    with pytest.raises(RuntimeError):
        train(factor_config(*args), tmp_path / "b")
    monkeypatch.setattr(Trainer, "checkpoint", real_checkpoint)
    torch.manual_seed(999)  # the resumed process starts with other random state
    resumed = resume(tmp_path / "b")

    a, b = load_weights(whole.weights), load_weights(resumed.weights)
    assert any(k.startswith("discriminator.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = _metrics(whole)
    assert rows == _metrics(resumed)
    assert all({"aux_loss", "disc_accuracy", "tc"} <= set(r) for r in rows if r["split"] == "train")
    state = torch.load(whole.state, weights_only=True)
    assert len(state["aux_optimizer"]["state"]) == len([k for k in a if k.startswith("discriminator.")])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_factor_vae_trains_under_mixed_precision(tmp_path, precision):
    run = train(factor_config("train.steps=4", f"train.precision={precision}"), tmp_path / "r")
    rows = [r for r in _metrics(run) if r["split"] == "train"]
    assert rows and all(math.isfinite(r["aux_loss"]) and math.isfinite(r["loss"]) for r in rows)


def test_beta_tc_vae_gets_the_train_split_size_from_the_engine(tmp_path):
    def config(*extra):
        fast = [a for a in FAST if "disc_hidden" not in a]
        return make_run_config("beta_tc_vae", BetaTCVAEConfig, parse_overrides(fast + ["train.steps=2", *extra]))

    run = train(config(), tmp_path / "r")
    assert json.loads(run.config.read_text())["model"]["dataset_size"] == 600  # data.limit=600
    kept = train(config("model.dataset_size=5000", "model.estimator=mss"), tmp_path / "k")
    assert json.loads(kept.config.read_text())["model"]["dataset_size"] == 5000
    assert {"mi", "tc", "dwkl"} <= set(_metrics(run)[0])


DDP_SCRIPT = """
import sys
import torch
from aezoo.cli import main
from aezoo.train import Trainer

real = Trainer.checkpoint


def checkpoint(self):  # every process writes its own weights, to compare them
    real(self)
    torch.save(self.model.state_dict(), f"{sys.argv[1]}/rank{self.procs.rank}.pt")


Trainer.checkpoint = checkpoint
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_processes_keep_the_same_discriminator(tmp_path):
    """Under torchrun the auxiliary loss runs outside DDP; its gradients are averaged by the engine, so
    both processes hold the same D (and the same VAE) after training on different halves of a batch."""
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    args = ["train", "factor_vae", "--steps", "6", "--out", str(tmp_path / "run"), "--device", "cpu",
            *[a for s in FAST for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", str(script), str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert any(k.startswith("discriminator.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
