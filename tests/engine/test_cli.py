"""The command-line contract end to end on a small slice of MNIST, and its answers to bad input."""

import json

import pytest

from conftest import run_cli

FAST = ["--set", "data.limit=500", "--set", "train.batch_size=50", "--set", "model.hidden=[32]",
        "--set", "model.latent_dim=4", "--set", "eval.nll_k=5", "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "vae"
    code, out, err = run_cli("train", "vae", "--out", str(run), "--steps", "20", *FAST)
    assert code == 0, err
    return run


def test_models_and_datasets_are_listed():
    from aezoo.registry import MODELS

    code, out, _ = run_cli("models")
    listed = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and listed == list(MODELS) and "ae" in listed and "vae" in listed
    code, out, _ = run_cli("datasets")
    assert code == 0 and "mnist" in out and "read from" in out


@pytest.mark.slow
def test_train_eval_sample_report(vae_run):
    for name in ("config.json", "model.safetensors", "resume.pt", "metrics.jsonl"):
        assert (vae_run / name).is_file()
    code, out, err = run_cli("eval", str(vae_run))
    assert code == 0, err
    results = json.loads((vae_run / "eval.json").read_text())
    for key in ("recon_mse", "recon_bce", "psnr", "neg_elbo", "nll_iwae", "nll_iwae_k", "kl_per_dim", "active_units"):
        assert key in results
    assert results["nll_iwae_k"] == 5 and len(results["kl_per_dim"]) == 4
    assert results["nll_iwae"] <= results["neg_elbo"] + 1.0
    code, _, err = run_cli("sample", str(vae_run), "--n", "16", "--out", str(vae_run / "s.png"))
    assert code == 0 and (vae_run / "s.png").stat().st_size > 0, err
    code, _, err = run_cli("sample", str(vae_run), "--n", "4", "--temperature", "0.7", "--out", str(vae_run / "t.png"))
    assert code == 0 and (vae_run / "t.png").stat().st_size > 0, err
    code, _, err = run_cli("report", str(vae_run))
    assert code == 0, err
    html = (vae_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "nll_iwae" in html
    for plot in ("reconstructions", "samples", "interpolations", "loss_curves"):
        assert (vae_run / "plots" / f"{plot}.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["train", "vea", "--out", "X"], "did you mean 'vae'"),
    (["train", "vae", "--out", "X", "--data", "mnst"], "did you mean 'mnist'"),
    (["train", "vae", "--out", "X", "--set", "model.latnt_dim=2"], "did you mean 'model.latent_dim'"),
    (["train", "vae", "--out", "X", "--set", "train.lr=0"], "train.lr must be in (0, 10]"),
    (["train", "vae", "--out", "X", "--steps", "0"], "--steps must be at least 1"),
    (["train", "vae", "--out", "X", "--config", "missing.toml"], "config file not found"),
    (["train", "vae", "--out", "X", "--set", "data.dir=/nonexistent"], "no such folder"),
    (["eval", "nowhere"], "no run here"),
    (["trian"], "invalid choice"),
])
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "X").exists()


def test_truncated_or_mismatched_checkpoint_is_refused(vae_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(vae_run, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run_cli("eval", str(broken))
    assert code == 2 and "corrupt or truncated" in err and len(err.strip().splitlines()) == 1

    shutil.copy(vae_run / "model.safetensors", weights)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["latent_dim"] = 7
    (broken / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("eval", str(broken))
    assert code == 2 and "do not match the config" in err
    assert (
        not (broken / "eval.json").exists()
        or (broken / "eval.json").read_bytes() == (vae_run / "eval.json").read_bytes()
    )


@pytest.mark.slow
def test_sample_needs_a_generative_model(tmp_path):
    run = tmp_path / "ae"
    code, _, err = run_cli("train", "ae", "--out", str(run), "--steps", "2", *FAST[:8])
    assert code == 0, err
    code, _, err = run_cli("sample", str(run))
    assert code == 2 and "no generative prior" in err


def test_config_version_resume_further_and_vector_samples(tmp_path):
    import numpy as np

    code, out, _ = run_cli("config", "vae")
    row = next(line for line in out.splitlines() if line.startswith("model.likelihood "))
    assert code == 0 and "auto | bernoulli" in row and "chosen from the data" in row
    code, _, err = run_cli("config", "vea")
    assert code == 2 and "did you mean 'vae'" in err and err.count("\n") == 1
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("aezoo ")

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32))
    run = str(tmp_path / "run")
    quick = ["--set", f"data.file={tmp_path / 'v.npy'}", "--set", "train.batch_size=20",
             "--set", "train.progress=false", "--set", "model.hidden=8", "--set", "model.latent_dim=2"]
    assert run_cli("train", "vae", "--data", "arrays", "--out", run, "--steps", "2", *quick)[0] == 0
    code, out, _ = run_cli("resume", run)
    assert code == 0 and "already finished" in out
    code, out, _ = run_cli("resume", run, "--steps", "4")
    assert code == 0 and "trained" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 4
    code, out, _ = run_cli("sample", run, "--n", "7")
    assert code == 0 and np.load(tmp_path / "run" / "samples.npy").shape == (7, 5)
    code, _, err = run_cli("sample", run, "--out", str(tmp_path / "s.png"))
    assert code == 2 and "samples vectors" in err and not (tmp_path / "s.png").exists()
