"""The engine: exact resume, the NaN stop, locks, and runs that leave nothing half-written."""

import json

import pytest
import torch

from aezoo.config import make_run_config, parse_overrides
from aezoo.errors import AezooError
from aezoo.files import load_weights
from aezoo.models.vae import VAEConfig
from aezoo.runfolder import RunFolder
from aezoo.train import Trainer, resume, train

FAST = ["data.limit=600", "data.binarize=dynamic", "train.batch_size=50", "train.progress=false",
        "model.hidden=[32]", "model.latent_dim=4", "train.log_every=5", "eval.batch_size=300"]


def config(*extra):
    return make_run_config("vae", VAEConfig, parse_overrides(FAST + list(extra)))


def metrics_without_times(run: RunFolder):
    lines = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    return [{k: v for k, v in rec.items() if k not in ("time_s", "samples_per_s")} for rec in lines]


@pytest.mark.slow
def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch):
    steps = 40  # 12 steps an epoch: the crash and the resume cross epoch boundaries
    whole = train(config(f"train.steps={steps}", "train.checkpoint_every=10", "train.schedule=cosine"), tmp_path / "a")

    real_checkpoint = Trainer.checkpoint

    def crash_after_step_20(self):
        real_checkpoint(self)
        if self.step == 20:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Trainer, "checkpoint", crash_after_step_20)
    with pytest.raises(RuntimeError):
        train(config(f"train.steps={steps}", "train.checkpoint_every=10", "train.schedule=cosine"), tmp_path / "b")
    monkeypatch.setattr(Trainer, "checkpoint", real_checkpoint)
    torch.manual_seed(999)  # the resumed process starts with other random state
    resumed = resume(tmp_path / "b")

    a, b = load_weights(whole.weights), load_weights(resumed.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics_without_times(whole) == metrics_without_times(resumed)


@pytest.mark.slow
def test_non_finite_loss_stops_naming_step_and_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from aezoo.models.vae import VAE

    real_loss = VAE.loss

    def loss_with_nan_kl_at_step_12(self, x, step=0):
        out = real_loss(self, x, step)
        if step == 11:
            out.terms["kl"] = out.terms["kl"] * float("nan")
            out.total = out.terms["recon"] + out.terms["kl"]
        return out

    monkeypatch.setattr(VAE, "loss", loss_with_nan_kl_at_step_12)
    with pytest.raises(AezooError, match=r"step 12: loss term 'kl' is nan.*step 10"):
        train(config("train.steps=30", "train.checkpoint_every=10"), tmp_path / "r")
    run = RunFolder(tmp_path / "r")
    good = load_weights(run.weights)
    assert all(torch.isfinite(t).all() for t in good.values())
    assert torch.load(run.state, weights_only=True)["step"] == 10


@pytest.mark.slow
def test_an_existing_run_is_refused_and_bad_input_writes_nothing(tmp_path):
    run = train(config("train.steps=3"), tmp_path / "r")
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(AezooError, match="already holds a run"):
        train(config("train.steps=3"), tmp_path / "r")
    assert sorted(p.name for p in run.path.iterdir()) == before
    with pytest.raises(AezooError, match="larger than the train split"):
        train(config("train.batch_size=100000"), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_second_trainer_in_the_same_folder_is_refused(tmp_path):
    run = RunFolder(tmp_path)
    with run.lock(), pytest.raises(AezooError, match="in use by another aezoo process"):
        run.lock()


@pytest.mark.slow
def test_resume_of_a_finished_run_does_nothing_unless_the_budget_grows(tmp_path):
    run = train(config("train.steps=4", "train.checkpoint_every=2"), tmp_path / "r")
    before = run.weights.read_bytes()
    assert resume(run.path) is None and run.weights.read_bytes() == before
    assert resume(run.path, steps=7) == run and run.weights.read_bytes() != before
    assert json.loads(run.config.read_text())["train"]["steps"] == 7
    assert torch.load(run.state, weights_only=True)["step"] == 7
    # trained further in two pieces = trained to 7 at once (the constant schedule does not depend on the total)
    whole = train(config("train.steps=7", "train.checkpoint_every=2"), tmp_path / "whole")
    assert load_weights(whole.weights).keys() == load_weights(run.weights).keys()
    assert all(torch.equal(load_weights(whole.weights)[k], v) for k, v in load_weights(run.weights).items())


def test_learning_rate_schedules():
    from aezoo.config import TrainConfig
    from aezoo.optim import lr_factor

    cos = TrainConfig(schedule="cosine", warmup_steps=10)
    assert lr_factor(0, cos, 110, 10) == pytest.approx(0.1)
    assert lr_factor(10, cos, 110, 10) == pytest.approx(1.0)
    assert lr_factor(60, cos, 110, 10) == pytest.approx(0.5)
    burda = TrainConfig(schedule="burda2015")
    # stage i lasts 3^i epochs at 10^(-i/7): epochs 0 | 1-3 | 4-12 | ...
    assert [lr_factor(e * 5, burda, 10**6, 5) for e in (0, 1, 3, 4, 12, 13)] == pytest.approx(
        [1, 10 ** (-1 / 7), 10 ** (-1 / 7), 10 ** (-2 / 7), 10 ** (-2 / 7), 10 ** (-3 / 7)])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_checkpoints_float32_weights(tmp_path, precision):
    run = train(config("train.steps=6", "train.checkpoint_every=3", f"train.precision={precision}"), tmp_path / "r")
    rows = metrics_without_times(run)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    state = torch.load(run.state, weights_only=True)
    assert bool(state["scaler"]) == (precision == "fp16")
    assert all(t.dtype == torch.float32 for t in load_weights(run.weights).values())  # weights stay float32


@pytest.mark.slow
def test_a_scaler_that_skips_every_step_stops_the_run(tmp_path, monkeypatch):
    scales = iter(range(10**6, 0, -1))  # the scale falls at every step: every step was skipped
    monkeypatch.setattr(torch.amp.GradScaler, "get_scale", lambda self: float(next(scales)))
    with pytest.raises(AezooError, match="overflowed 20 steps in a row"):
        train(config("train.steps=40", "train.precision=fp16"), tmp_path / "r")
