"""train.log=tensorboard: the event files hold exactly metrics.jsonl's scalars; resume appends to them; a
missing package is refused before anything is written."""

import importlib.util

import pytest

from aezoo.config import make_run_config, parse_overrides
from aezoo.errors import AezooError
from aezoo.files import is_number
from aezoo.models.vae import VAEConfig
from aezoo.runfolder import RunFolder, read_metrics
from aezoo.train import Trainer, resume, train

FAST = ["data.limit=300", "data.binarize=dynamic", "train.batch_size=50", "train.progress=false",
        "model.hidden=[16]", "model.latent_dim=2", "train.log_every=2", "eval.batch_size=300",
        "train.log=tensorboard"]


def config(*extra):
    return make_run_config("vae", VAEConfig, parse_overrides(FAST + list(extra)))


def scalars_of_metrics(run: RunFolder) -> dict[str, list[tuple[int, float]]]:
    out: dict = {}
    for rec in read_metrics(run.metrics):
        for key, value in rec.items():
            if key not in ("step", "split") and is_number(value):
                out.setdefault(f"{rec['split']}/{key}", []).append((int(rec["step"]), float(value)))
    return out


def scalars_of_events(run: RunFolder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.tensorboard), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same(events: dict, metrics: dict) -> None:
    assert events.keys() == metrics.keys()
    for tag, points in metrics.items():
        assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
        # event files hold float32
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-30), tag


@pytest.mark.slow
def test_event_files_hold_every_scalar_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    run = train(config("train.steps=8", "train.val_every=4"), tmp_path / "run")
    metrics = scalars_of_metrics(run)
    assert {"train/loss", "train/lr", "val/loss", "val/kl"} <= metrics.keys()
    assert [s for s, _ in metrics["val/loss"]] == [4, 8]
    assert_same(scalars_of_events(run), metrics)


@pytest.mark.slow
def test_resume_appends_and_drops_what_the_interrupted_piece_logged_after_its_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    real_log = Trainer.log

    def crash_after_logging_step_6(self, record):
        real_log(self, record)
        if record["step"] == 6:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Trainer, "log", crash_after_logging_step_6)
    with pytest.raises(RuntimeError):
        # lines up to step 6 are logged, the checkpoint is at 4: steps 5 and 6 are logged again on resume
        train(config("train.steps=8", "train.checkpoint_every=4", "train.log_every=1"), tmp_path / "run")
    monkeypatch.setattr(Trainer, "log", real_log)
    assert [s for s, _ in scalars_of_events(RunFolder(tmp_path / "run"))["train/loss"]] == list(range(1, 7))
    run = resume(tmp_path / "run")
    metrics = scalars_of_metrics(run)
    assert [s for s, _ in metrics["train/loss"]] == list(range(1, 9))
    assert len(list(run.tensorboard.iterdir())) == 2  # one events file per piece, in the same folder
    assert_same(scalars_of_events(run), metrics)


def test_missing_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(AezooError, match=r"needs the tensorboard package: pip install 'aezoo\[tensorboard\]'"):
        train(config("train.steps=2"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_jsonl_alone_writes_no_event_files(tmp_path):
    run = train(config("train.steps=2", "train.log=jsonl"), tmp_path / "run")
    assert run.metrics.exists() and not run.tensorboard.exists()
