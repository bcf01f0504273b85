"""Defaults chosen from the data: a likelihood that fits the values, one-line refusals where a choice
cannot be right, and evaluation numbers only where they mean something."""

import json

import numpy as np
import pytest
import torch

from aezoo.data import Dataset, value_kind
from conftest import run_cli

QUICK = ["--steps", "3", "--set", "train.batch_size=20", "--set", "train.progress=false", "--set", "eval.nll_k=2",
         "--set", "model.hidden=8", "--set", "model.latent_dim=2"]


def test_value_kinds():
    def kind(x, scale=1.0, binarize="none"):
        return value_kind(Dataset("d", {"train": x}, scale=scale), binarize)

    assert kind(torch.randint(0, 256, (5, 3), dtype=torch.uint8), 255.0) == "8bit"
    assert kind(torch.randint(0, 256, (5, 3), dtype=torch.uint8), 255.0, "dynamic") == "binary"
    assert kind(torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == "binary"
    assert kind(torch.tensor([[0.0, 0.5], [1.0, 0.25]])) == "unit"
    assert kind(torch.tensor([[-0.1, 0.5]])) == "real" and kind(torch.tensor([[0.0, 1.5]])) == "real"


@pytest.fixture
def vectors(tmp_path):
    path = tmp_path / "vec.npy"
    np.save(path, np.random.default_rng(0).normal(0, 3, (200, 6)).astype(np.float32))
    return path


def _train(model, out, *args):
    code, _, err = run_cli("train", model, "--out", str(out), *QUICK, *args)
    assert code == 0, err
    return json.loads((out / "config.json").read_text())["model"]["likelihood"]


def test_real_vectors_get_a_gaussian_and_no_pixel_numbers(vectors, tmp_path):
    data = ["--data", "arrays", "--set", f"data.file={vectors}"]
    assert _train("vae", tmp_path / "vae", *data) == "gaussian_learned"
    assert _train("ae", tmp_path / "ae", *data) == "gaussian"
    assert run_cli("eval", str(tmp_path / "vae"))[0] == 0
    results = json.loads((tmp_path / "vae" / "eval.json").read_text())
    assert "psnr" not in results and "recon_bce" not in results and np.isfinite(results["neg_elbo"])
    code, _, err = run_cli("train", "ae", "--out", str(tmp_path / "bad"), *QUICK, *data,
                           "--set", "model.likelihood=bernoulli")
    assert code == 2 and err.count("\n") == 1 and "needs data in [0, 1]" in err
    assert not (tmp_path / "bad").exists()


def test_mnist_grey_levels_get_the_logistic_and_binarised_digits_the_bernoulli(tmp_path):
    limit = ["--set", "data.limit=100"]
    assert _train("vae", tmp_path / "grey", *limit) == "logistic"
    assert _train("vae", tmp_path / "binary", *limit, "--set", "data.binarize=dynamic") == "bernoulli"
    assert _train("ae", tmp_path / "ae", *limit) == "bernoulli"


def test_a_bernoulli_on_grey_levels_reports_no_likelihood_bounds(tmp_path):
    run = tmp_path / "run"
    assert _train("vae", run, "--set", "data.limit=100", "--set", "model.likelihood=bernoulli") == "bernoulli"
    assert run_cli("eval", str(run))[0] == 0
    results = json.loads((run / "eval.json").read_text())
    assert "nll_iwae" not in results and "neg_elbo" not in results and "active_units" in results
    assert "no density" in results["notes"][0]
