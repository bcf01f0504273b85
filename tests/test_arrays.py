"""The user's own array files: vectors and images from .npy/.npz/.csv, and the files that are refused."""

import numpy as np
import pytest

from aezoo.config import DataConfig
from aezoo.data import load_dataset
from aezoo.errors import AezooError
from conftest import run_cli


def test_vectors_from_csv_with_a_header_train_an_autoencoder(tmp_path):
    rows = np.random.default_rng(0).random((50, 6)).round(3)
    path = tmp_path / "v.csv"
    path.write_text("a,b,c,d,e,f\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    ds = load_dataset(DataConfig(name="arrays", file=str(path)))
    assert ds.kind == "vector" and ds.shape == (6,)
    assert [len(ds.x[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    assert np.allclose(ds.x["train"][0].numpy(), rows[0], atol=1e-6)
    code, _, err = run_cli("train", "ae", "--data", "arrays", "--set", f"data.file={path}", "--out", str(tmp_path / "r"),
                           "--steps", "3", "--set", "train.batch_size=8", "--set", "model.hidden=[8]",
                           "--set", "model.recon_loss=mse", "--set", "train.progress=false")
    assert code == 0, err
    code, _, err = run_cli("eval", str(tmp_path / "r"))
    assert code == 0, err


def test_uint8_images_from_npz_splits(tmp_path):
    rng = np.random.default_rng(0)
    splits = {s: rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) for s, n in (("train", 20), ("val", 4), ("test", 4))}
    np.savez(tmp_path / "im.npz", **splits)
    ds = load_dataset(DataConfig(name="arrays", file=str(tmp_path / "im.npz")))
    assert ds.kind == "image" and ds.shape == (1, 8, 8) and ds.scale == 255.0
    assert ds.x["val"].shape == (4, 1, 8, 8)


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p.with_suffix(".npy"), np.array([[1.0, np.nan]] * 5)), "NaN or infinite"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros(5)), "expected 2 dimensions or 3 dimensions or 4 dimensions"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([["a", "b"]] * 5)), "must hold numbers"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([{"x": 1}] * 5), allow_pickle=True), "not a readable"),
    (lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage"), "not a readable"),
    (lambda p: p.with_suffix(".csv").write_text("1,2\n3,oops\n"), "line 2 is not a list of numbers"),
    (lambda p: p.with_suffix(".csv").write_text("1,2\n3,4,5\n"), "different numbers of columns"),
    (lambda p: np.savez(p.with_suffix(".npz"), a=np.zeros((5, 2)), b=np.zeros((5, 2))), "expected arrays named"),
])
def test_bad_array_files_are_refused_with_one_line(tmp_path, make, message):
    make(tmp_path / "d")
    path = next(tmp_path.glob("d.*"))
    code, _, err = run_cli("train", "ae", "--data", "arrays", "--set", f"data.file={path}", "--out", str(tmp_path / "r"), "--steps", "1")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_missing_file_or_no_file_is_refused():
    with pytest.raises(AezooError, match="set data.file"):
        load_dataset(DataConfig(name="arrays"))
    with pytest.raises(AezooError, match="no such file"):
        load_dataset(DataConfig(name="arrays", file="/nonexistent.npy"))
