"""Two CPU processes under torchrun (gloo) train what one process trains with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from aezoo.files import load_weights

ARGS = ["train", "ae", "--steps", "12", "--set", "data.limit=600", "--set", "train.batch_size=50",
        "--set", "model.hidden=[32]", "--set", "model.latent_dim=4", "--set", "train.log_every=4",
        "--set", "train.checkpoint_every=6", "--set", "train.progress=false", "--device", "cpu"]


def run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)
    assert done.returncode == 0, done.stderr[:4000]  # the child's own message comes before torchrun's summary
    return done


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "aezoo", *ARGS, "--out", str(tmp_path / "ddp")])
    run([sys.executable, "-m", "aezoo", *ARGS, "--out", str(tmp_path / "one")])

    ddp, one = (
        load_weights(tmp_path / "ddp" / "model.safetensors"),
        load_weights(tmp_path / "one" / "model.safetensors"),
    )
    for k in one:  # the same examples, the gradients averaged in another order: equal up to rounding
        assert torch.allclose(ddp[k], one[k], atol=1e-5), k
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [rec["step"] for rec in lines if rec["split"] == "train"]
    assert train_steps == [4, 8, 12]  # written once, by process 0
    state = torch.load(tmp_path / "ddp" / "resume.pt", weights_only=True)
    assert state["step"] == 12 and len(state["rng"]) == 2  # each process's generators, for resume


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29518",
        "-m",
        "aezoo",
    ]
    args = [a if a != "12" else "6" for a in ARGS]  # the same run, stopped at step 6 ...
    run([*torchrun, *ARGS, "--out", str(tmp_path / "whole")])
    run([*torchrun, *args, "--out", str(tmp_path / "split")])
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    config["train"]["steps"] = 12  # ... then asked for 12 and resumed by two processes
    (tmp_path / "split" / "config.json").write_text(json.dumps(config))
    run([*torchrun, "resume", str(tmp_path / "split")])
    a, b = (
        load_weights(tmp_path / "whole" / "model.safetensors"),
        load_weights(tmp_path / "split" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
