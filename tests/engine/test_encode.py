"""The bottleneck in use: `aezoo encode` (and `aezoo.encode_dataset`) for each kind of model, the user's
image files read as the model's data, `aezoo reconstruct` and `aezoo interpolate`, and their answers to
bad input."""

import functools
import json

import numpy as np
import pytest
import torch

import aezoo
from aezoo.config import DataConfig, make_run_config
from aezoo.data import EVAL_SEED, Batches, load_dataset
from aezoo.errors import AezooError
from aezoo.registry import entry, load_run_config
from aezoo.train import train
from conftest import run_cli

TRAIN = {"steps": 3, "batch_size": 50, "progress": False, "val_every": 3}


@pytest.fixture(scope="module", autouse=True)
def mnist_read_once():
    """MNIST's bundled pickle is read once for the whole module (5 s a read on a shared CPU)."""
    from aezoo.data import mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist, "read_bundled", functools.cache(mnist.read_bundled))
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs trained 3 steps: vae, vqvae, ksparse_ae on 200 MNIST images each split, tdvae on moving MNIST."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, data in (("vae", "mnist"), ("vqvae", "mnist"), ("ksparse_ae", "mnist"), ("tdvae", "moving_mnist")):
        tree = {"model": entry(name).tiny, "data": {"name": data, "limit": 60 if name == "tdvae" else 200},
                "train": TRAIN}
        train(make_run_config(name, entry(name).config_class, tree), root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Three MNIST test digits as PNG files: as they are, and one enlarged to 56x70 RGB."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    pixels = load_dataset(DataConfig(name="mnist", limit=200)).x["test"][:3, 0].numpy()
    paths = []
    for i, a in enumerate(pixels[:2]):
        paths.append(folder / f"d{i}.png")
        Image.fromarray(a).save(paths[-1])
    paths.append(folder / "big.jpg")
    Image.fromarray(np.repeat(np.kron(pixels[2], np.ones((2, 2), np.uint8))[..., None], 3, -1)).resize((56, 70)).save(
        paths[-1], quality=95)
    return paths, pixels


def first_test_batch(run, n=200):
    cfg = load_run_config(run)
    return next(iter(Batches(load_dataset(cfg.data), "test", n, cfg.data.binarize, seed=EVAL_SEED, shuffle=False)))


def test_each_kind_of_model_gives_its_codes(runs):
    vae = aezoo.encode_dataset(runs["vae"], show_progress=False)
    assert set(vae) == {"mean", "std", "label"} and vae["mean"].shape == (200, 4) and (vae["std"] > 0).all()
    model = aezoo.load(runs["vae"])
    with torch.no_grad():
        q = model.posterior(first_test_batch(runs["vae"]))
    assert np.allclose(vae["mean"], q.mean.numpy(), atol=1e-6) and np.allclose(vae["std"], q.std.numpy(), atol=1e-6)
    labels = load_dataset(DataConfig(name="mnist", limit=200)).labels["test"].numpy()
    assert np.array_equal(vae["label"], labels)

    vq = aezoo.encode_dataset(runs["vqvae"], limit=50, batch_size=20, show_progress=False)
    with torch.no_grad():
        codes = aezoo.load(runs["vqvae"]).codes(first_test_batch(runs["vqvae"], 50))[0]
    assert vq["codes"].dtype == np.int64 and np.array_equal(vq["codes"], codes.numpy())

    sparse = aezoo.encode_dataset(runs["ksparse_ae"], split="val", show_progress=False)
    cfg = load_run_config(runs["ksparse_ae"]).model
    assert sparse["code"].shape == (200, cfg.latent_dim)
    assert ((sparse["code"] != 0).sum(1) <= int(np.ceil(cfg.alpha * cfg.k))).all()

    td = aezoo.encode_dataset(runs["tdvae"], show_progress=False)
    assert set(td) == {"belief", "state_mean", "label", "factors"} and len(td["belief"]) == 60
    tdvae = aezoo.load(runs["tdvae"])
    with torch.no_grad():
        x = first_test_batch(runs["tdvae"], 60)
        assert np.allclose(td["state_mean"], tdvae.encode(x).numpy(), atol=1e-6)
        assert np.allclose(td["belief"], tdvae.beliefs(x)[:, -1].numpy(), atol=1e-6)

    model = aezoo.load(runs["vae"])  # a model object and an array of examples
    arrays = aezoo.encode_dataset(model, data=load_dataset(DataConfig(name="mnist", limit=200)).x["test"][:5],
                                  show_progress=False)
    assert np.allclose(arrays["mean"], vae["mean"][:5], atol=1e-6)


def test_cli_writes_npy_npz_and_parquet(runs, tmp_path):
    import pyarrow.parquet as pq

    for suffix in ("npy", "npz", "parquet"):
        code, out, err = run_cli("encode", str(runs["vqvae"]), "--split", "val", "--limit", "30",
                                 "--out", str(tmp_path / f"c.{suffix}"))
        assert code == 0 and "30 examples" in out, err
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == (30, 7, 7)
    npz = np.load(tmp_path / "c.npz")
    assert set(npz.files) == {"codes", "label"} and np.array_equal(npz["codes"], codes)
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.column_names == ["codes", "label"]
    assert np.array_equal(np.stack(table.column("codes").to_numpy(zero_copy_only=False)), codes.reshape(30, 49))
    assert json.loads(table.schema.metadata[b"aezoo"])["shapes"]["codes"] == [7, 7]

    code, _, err = run_cli("encode", str(runs["vae"]), "--out", str(tmp_path / "v.parquet"), "--limit", "10")
    assert code == 0, err
    assert pq.read_table(tmp_path / "v.parquet").column_names == ["mean", "std", "label"]


def test_image_files_are_read_as_the_models_data(runs, digit_files, tmp_path):
    paths, pixels = digit_files
    from_files = aezoo.encode_dataset(runs["vae"], files=paths[:2], show_progress=False)
    model = aezoo.load(runs["vae"])
    with torch.no_grad():
        direct = model.posterior(torch.from_numpy(pixels[:2]).float().unsqueeze(1) / 255).mean
    assert "label" not in from_files and np.allclose(from_files["mean"], direct.numpy(), atol=1e-6)

    code, out, err = run_cli("encode", str(runs["vqvae"]), "--files", *map(str, paths),
                             "--out", str(tmp_path / "f.npz"))
    assert code == 0, err
    assert np.load(tmp_path / "f.npz")["codes"].shape == (3, 7, 7)  # the RGB 56x70 JPEG scaled, cropped, grey

    code, _, err = run_cli("reconstruct", str(runs["vae"]), *map(str, paths), "--out", str(tmp_path / "r.png"))
    assert code == 0 and (tmp_path / "r.png").stat().st_size > 0, err
    for run in ("vae", "vqvae", "ksparse_ae"):
        out_png = tmp_path / f"i_{run}.png"
        code, out, err = run_cli("interpolate", str(runs[run]), str(paths[0]), str(paths[2]), "--steps", "5",
                                 "--out", str(out_png))
        assert code == 0 and out_png.stat().st_size > 0, err
        assert ("quantised" in out) == (run == "vqvae"), out
    from aezoo.embed import interpolation_strip

    x = torch.from_numpy(pixels[:2]).float().unsqueeze(1) / 255
    strip = interpolation_strip(aezoo.load(runs["vqvae"]), x[0], x[1], steps=4)
    assert strip.shape == (6, 1, 28, 28) and torch.equal(strip[0], x[0])


@pytest.mark.parametrize("args, message", [
    (["encode", "RUN:vae", "--out", "OUT/c.csv"], "written as .npy, .npz, .parquet"),
    (["encode", "RUN:vae", "--out", "OUT/c.npz", "--data", "mnst"], "did you mean 'mnist'"),
    (["encode", "RUN:vae", "--out", "OUT/c.npz", "--files", "OUT/missing.png"], "no such file"),
    (["encode", "RUN:tdvae", "--out", "OUT/c.npz", "--files", "FILE"], "not images"),
    (["encode", "RUN:vae", "--out", "OUT/c.npz", "--limit", "0"], "--limit must be at least 1"),
    (["encode", "RUN:vae", "--out", "OUT/c.npz", "--files", "FILE", "--data", "mnist"], "not both"),
    (["interpolate", "RUN:vae", "FILE", "FILE", "--steps", "1", "--out", "OUT/i.png"], "at least 2"),
    (["reconstruct", "OUT", "FILE"], "no run here"),
    (["encode", "RUN:vae", "--out", "OUT/c.npz", "--files", "NOTIMAGE"], "not a readable image"),
])
def test_bad_input_gets_one_line_and_writes_nothing(runs, digit_files, tmp_path, args, message):
    (tmp_path / "not.png").write_bytes(b"hello")
    subst = {"FILE": str(digit_files[0][0]), "NOTIMAGE": str(tmp_path / "not.png")}
    argv = [str(runs[a[4:]]) if a.startswith("RUN:") else subst.get(a, a.replace("OUT", str(tmp_path / "out")))
            for a in args]
    code, out, err = run_cli(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_python_api_refusals(runs):
    model = aezoo.load(runs["vae"])
    with pytest.raises(AezooError, match="name the data"):
        aezoo.encode_dataset(model)
    with pytest.raises(AezooError, match="shape"):
        aezoo.encode_dataset(model, data=np.zeros((2, 3, 28, 28), np.uint8))
