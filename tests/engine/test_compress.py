"""Compression under a VQ model's prior (`aezoo compress` / `decompress`, `aezoo.compress`): real MNIST
test images through a tiny vqvae trained a few steps and its prior, the codes decoded exactly, and
files from other weights, truncated or with a flipped byte refused in one line."""

import functools
import math
import shutil

import numpy as np
import pytest
import torch

import aezoo
from aezoo import compress
from aezoo.config import DataConfig, make_run_config
from aezoo.data import load_dataset
from aezoo.errors import AezooError
from aezoo.registry import entry
from aezoo.train import train
from aezoo.train_prior import train_prior
from conftest import run_cli

TRAIN = {"steps": 4, "batch_size": 50, "progress": False, "val_every": 4}
PRIOR = ["prior.channels=8", "prior.layers=2", "prior.head=16", "train.batch_size=50", "train.progress=false"]


@pytest.fixture(scope="module", autouse=True)
def mnist_read_once():
    """MNIST's bundled pickle is read once for the whole module (5 s a read on a shared CPU)."""
    from aezoo.data import mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist, "read_bundled", functools.cache(mnist.read_bundled))
        yield


def tiny_run(folder, name: str, prior: str | None = None, extra: list[str] = ()):
    model = {**entry(name).tiny, "codebook_size": 16}
    tree = {"model": model, "data": {"name": "mnist", "limit": 200}, "train": TRAIN}
    train(make_run_config(name, entry(name).config_class, tree), folder)
    train_prior(folder, prior, [*PRIOR, *extra], steps=3)
    return folder


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs") / "vqvae", "vqvae")


@pytest.fixture(scope="module")
def test_images():
    ds = load_dataset(DataConfig(name="mnist", limit=300))
    return ds.x["test"][:70].float() / 255  # real MNIST test images


def test_codes_come_back_exactly_and_cost_about_their_cross_entropy(vq_run, test_images):
    model = aezoo.load(vq_run)
    out = compress.compress_images(model, test_images, run=vq_run, batch_size=32, show_progress=False)
    back = compress.decompress_bytes(out.data, model, show_progress=False)
    codes = compress.image_codes(model, test_images)
    assert back.header.n == 70 and back.labels is None
    assert all(torch.equal(a, b) for a, b in zip(codes, back.codes))
    with torch.no_grad():
        assert torch.allclose(back.images, model.decode_codes(codes).clamp(0, 1))
        teacher_forced = -float(model.prior.log_prob(codes).sum()) / math.log(2)
    assert math.isclose(out.cross_entropy_bits, teacher_forced, rel_tol=1e-4)
    payload_bits = 8 * (len(out.data) - out.header_bytes)
    assert out.cross_entropy_bits <= payload_bits <= out.cross_entropy_bits + 64  # the coder's overhead: a few words
    file_hash = compress.hashlib.sha256((vq_run / "model.safetensors").read_bytes()).digest()
    assert out.header.model_sha256 == file_hash
    with torch.no_grad():
        next(model.prior.parameters()).add_(0.01)  # the prior trained further
    with pytest.raises(AezooError, match="another prior"):
        compress.decompress_bytes(out.data, model, show_progress=False)


def test_probabilities_depend_on_earlier_codes_only(vq_run):
    prior = compress.coding_prior(aezoo.load(vq_run).prior)
    codes = [torch.randint(0, 16, (5, 7, 7))]
    other = [codes[0].clone()]
    other[0][:, 3, 4:] = torch.randint(0, 16, (5, 3))
    other[0][:, 4:] = torch.randint(0, 16, (5, 3, 7))
    a = prior.conditional_probabilities(0, codes, None, 3, 4)
    b = prior.conditional_probabilities(0, other, None, 3, 4)
    assert a.dtype == torch.float64 and torch.equal(a, b)  # bit for bit: the decoder's view of the map
    assert torch.allclose(a.sum(1), torch.ones(5, dtype=torch.float64))


def test_cli_compress_decompress_files_and_refusals(vq_run, test_images, tmp_path):
    from PIL import Image

    files = []
    for i, x in enumerate(test_images[:5]):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray((x[0] * 255).round().byte().numpy()).save(files[-1])
    aez = tmp_path / "digits.aez"
    code, out, err = run_cli("compress", str(vq_run), *map(str, files), "--out", str(aez))
    assert code == 0, err
    code, out, err = run_cli("decompress", str(aez), "--out", str(tmp_path / "back"))
    assert code == 0, err
    pngs = sorted((tmp_path / "back").glob("*.png"))
    assert len(pngs) == 5 and Image.open(pngs[0]).size == (28, 28)
    model = aezoo.load(vq_run)
    decoded = np.load(tmp_path / "back" / "codes.npz")["codes"]
    assert np.array_equal(decoded, compress.image_codes(model, test_images[:5])[0].numpy())

    # a dataset split, then refusals: each one line on stderr, status 2, no folder written
    code, _, err = run_cli("compress", str(vq_run), "--data", "mnist", "--limit", "20",
                           "--out", str(tmp_path / "d.aez"))
    assert code == 0, err
    data = aez.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    other = tmp_path / "other"
    shutil.copytree(vq_run, other)
    trained_further = aezoo.load(other)
    with torch.no_grad():
        trained_further.decoder[0].weight.add_(0.01)
    trained_further.save(other)
    cases = {"truncated": (data[:-7], "damaged or truncated"), "flipped": (bytes(flipped), "damaged or truncated"),
             "notaez": (b"PK\x03\x04 not ours", "not an aezoo compressed file")}
    for name, (content, message) in cases.items():
        (tmp_path / f"{name}.aez").write_bytes(content)
        code, _, err = run_cli("decompress", str(tmp_path / f"{name}.aez"), "--out", str(tmp_path / name))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / name).exists()
    code, _, err = run_cli("decompress", str(aez), "--run", str(other), "--out", str(tmp_path / "o"))
    assert code == 2 and "other weights" in err and not (tmp_path / "o").exists(), err
    code, _, err = run_cli("decompress", str(aez), "--out", str(tmp_path / "back"))
    assert code == 2 and "not an empty folder" in err, err
    code, _, err = run_cli("compress", str(vq_run), "--out", str(tmp_path / "x.aez"))
    assert code == 2 and "give image files" in err and not (tmp_path / "x.aez").exists()


def test_refuses_models_without_a_prior_or_codes(tmp_path):
    vae = aezoo.build("vae", **entry("vae").tiny)
    with pytest.raises(AezooError, match="no discrete codes"):
        compress.compress_images(vae, torch.rand(2, 1, 28, 28))
    vq = aezoo.build("vqvae", **entry("vqvae").tiny)
    with pytest.raises(AezooError, match="train-prior"):
        compress.compress_images(vq, torch.rand(2, 1, 28, 28))


def test_vqvae2_with_a_class_conditional_prior(tmp_path, test_images):
    run = tiny_run(tmp_path / "vqvae2", "vqvae2", "pixelcnn", ["prior.num_classes=10"])
    model = aezoo.load(run)
    out = compress.compress_images(model, test_images[:40], batch_size=16, show_progress=False)
    back = compress.decompress_bytes(out.data, model, show_progress=False)
    codes = compress.image_codes(model, test_images[:40])
    assert [c.shape[1:] for c in back.codes] == [(4, 4), (8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(codes, back.codes))
    assert back.labels is not None and out.label_bits == 40 * math.log2(10)
