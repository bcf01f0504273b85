"""Faults and hostile input: killed processes, full disks, crafted files. Nothing lost, nothing executed."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aezoo.config import make_run_config, parse_overrides
from aezoo.data.mnist import read_idx
from aezoo.errors import AezooError
from aezoo.files import load_state, load_weights
from aezoo.models.vae import VAEConfig
from aezoo.runfolder import RunFolder
from aezoo.train import train
from conftest import run_cli

TINY = ["--set", "data.limit=600", "--set", "train.batch_size=50", "--set", "model.hidden=[32]",
        "--set", "model.latent_dim=4", "--set", "train.progress=false", "--set", "data.binarize=dynamic",
        "--set", "train.log_every=5"]


def aezoo(*args, wait=True):
    cmd = [sys.executable, "-m", "aezoo", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_sigkill_in_and_around_checkpoints_then_resume_is_bit_identical(tmp_path):
    """A checkpoint every step, so that kills land in and between checkpoint writes."""
    args = ["--steps", "80", "--set", "train.checkpoint_every=1", *TINY]
    assert aezoo("train", "vae", "--out", str(tmp_path / "whole"), *args).returncode == 0
    rng = random.Random(0)
    run = tmp_path / "killed"
    command = ["train", "vae", "--out", str(run), *args]
    kills = 0
    for _ in range(3):
        proc = aezoo(*command, wait=False)
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        command = ["resume", str(run)]
    assert kills >= 1
    done = aezoo("resume", str(run))
    assert done.returncode == 0, done.stderr
    a, b = load_weights(tmp_path / "whole" / "model.safetensors"), load_weights(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    run = tmp_path / "r"
    first = aezoo("train", "vae", "--out", str(run), "--steps", "100000", *TINY, wait=False)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = aezoo("resume", str(run))
        assert second.returncode == 2
        assert "in use by another aezoo process" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import aezoo.files

    real_fdopen = os.fdopen
    calls = {"n": 0}

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def failing_fdopen(fd, mode="r", *a, **k):
        f = real_fdopen(fd, mode, *a, **k)
        calls["n"] += 1
        return HalfWriter(f) if calls["n"] > 4 else f  # config.json, environment.json and the first checkpoint succeed

    cfg = make_run_config(
        "vae",
        VAEConfig,
        parse_overrides([s for s in TINY if s != "--set"] + ["train.steps=20", "train.checkpoint_every=10"]),
    )
    monkeypatch.setattr(aezoo.files.os, "fdopen", failing_fdopen)
    with pytest.raises(AezooError, match="No space left on device; the previous file is kept"):
        train(cfg, tmp_path / "r")
    monkeypatch.undo()
    run = RunFolder(tmp_path / "r")
    assert load_state(run.state)["step"] == 10 and load_weights(run.weights)
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_resume_state_crafted_to_run_code_is_refused(tmp_path):
    code, _, err = run_cli("train", "vae", "--out", str(tmp_path / "r"), "--steps", "3", *TINY)
    assert code == 0, err
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "payload": _Exploit(marker)}, tmp_path / "r" / "resume.pt")
    code, _, err = run_cli("resume", str(tmp_path / "r"))
    assert code == 2 and "refused or unreadable resume state" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:7], "corrupt or truncated"),
        (lambda b: b[:8] + b"{not json" + b[17:], "corrupt or truncated"),
        (lambda b: (10**12).to_bytes(8, "little") + b[8:], "corrupt or truncated"),
    ],
)
@pytest.mark.slow
def test_a_damaged_safetensors_file_is_refused(tmp_path, damage, message):
    code, _, err = run_cli("train", "vae", "--out", str(tmp_path / "r"), "--steps", "2", *TINY)
    assert code == 0, err
    weights = tmp_path / "r" / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    code, _, err = run_cli("sample", str(tmp_path / "r"), "--out", str(tmp_path / "s.png"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["model"].update(latent_dim="many"), "model.latent_dim must be an integer"),
        (lambda c: c["train"].update(surprise=1), "unknown config key 'train.surprise'"),
        (lambda c: c.update(model_name="vea"), "did you mean 'vae'"),
        (lambda c: c.update(model=[1]), "must be a table"),
    ],
)
@pytest.mark.slow
def test_a_broken_config_json_is_refused(tmp_path, edit, message):
    code, _, err = run_cli("train", "vae", "--out", str(tmp_path / "r"), "--steps", "2", *TINY)
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    edit(config)
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    for command in ("eval", "resume"):
        code, _, err = run_cli(command, str(tmp_path / "r"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def write_idx(folder, images_magic=b"\x00\x00\x08\x03", n=10_010, rows=28):
    folder.mkdir(exist_ok=True)
    for prefix, count in (("train", n), ("t10k", 20)):
        header = images_magic + count.to_bytes(4, "big") + rows.to_bytes(4, "big") + (28).to_bytes(4, "big")
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + bytes(count * rows * 28))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            b"\x00\x00\x08\x01" + count.to_bytes(4, "big") + bytes(count)
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images_magic": b"\x00\x00\x0d\x03"}, "bad magic number"),
        ({"rows": 27}, "have shapes"),
    ],
)
def test_bad_idx_files_are_refused(tmp_path, kwargs, message):
    write_idx(tmp_path / "mnist", **kwargs)
    code, _, err = run_cli(
        "train", "vae", "--out", str(tmp_path / "r"), "--steps", "1", "--set", f"data.dir={tmp_path / 'mnist'}"
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_idx_files_from_a_folder_are_used(tmp_path):
    write_idx(tmp_path / "mnist")
    code, _, err = run_cli(
        "train",
        "ae",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
        "--set",
        f"data.dir={tmp_path / 'mnist'}",
        "--set",
        "model.hidden=[8]",
        "--set",
        "train.progress=false",
        "--set",
        "train.batch_size=5",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["dir"] == str(tmp_path / "mnist")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_override_text_is_accepted_or_refused_with_an_aezoo_error(pairs):
    try:
        make_run_config("vae", VAEConfig, parse_overrides(pairs))
    except AezooError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["latent_dim", "hidden", "sigma", "likelihood", "backbone", "x"]),
        st.one_of(
            st.integers(),
            st.floats(),
            st.text(max_size=8),
            st.booleans(),
            st.none(),
            st.lists(st.integers(-3, 300), max_size=3),
        ),
    )
)
def test_any_config_values_are_accepted_or_refused_with_an_aezoo_error(model):
    try:
        make_run_config("vae", VAEConfig, {"model": model})
    except AezooError as e:
        assert str(e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_as_an_idx_file_never_escape_as_a_traceback(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "f"
    path.write_bytes(data)
    with contextlib.suppress(AezooError):
        read_idx(path)


@pytest.mark.slow
def test_a_prior_killed_in_training_resumes_bit_identically(tmp_path):
    """Stage 2 trains through the same engine: `aezoo resume RUN/prior` after a SIGKILL ends where an
    uninterrupted prior run ends."""
    import shutil

    stage1 = tmp_path / "vq"
    done = aezoo(
        "train",
        "vqvae",
        "--out",
        str(stage1),
        "--steps",
        "3",
        "--set",
        "data.limit=300",
        "--set",
        "model.hidden=8",
        "--set",
        "model.residual_hidden=4",
        "--set",
        "model.residual_layers=1",
        "--set",
        "model.codebook_size=8",
        "--set",
        "model.code_dim=4",
        "--set",
        "train.progress=false",
    )
    assert done.returncode == 0, done.stderr
    shutil.copytree(stage1, tmp_path / "vq_killed")
    prior = [
        "--steps",
        "60",
        "--set",
        "prior.channels=8",
        "--set",
        "prior.layers=2",
        "--set",
        "prior.head=16",
        "--set",
        "train.batch_size=20",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.log_every=5",
    ]
    assert aezoo("train-prior", str(stage1), *prior).returncode == 0
    killed = tmp_path / "vq_killed"
    proc = aezoo("train-prior", str(killed), *prior, wait=False)
    deadline = time.time() + 120
    while not (killed / "prior" / "resume.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert proc.poll() is None, "the prior finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = aezoo("resume", str(killed / "prior"))
    assert done.returncode == 0, done.stderr
    a = load_weights(stage1 / "prior" / "model.safetensors")
    b = load_weights(killed / "prior" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
