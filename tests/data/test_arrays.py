"""The user's own array files: vectors and images from .npy/.npz/.csv/.parquet, and the files that are refused."""

import numpy as np
import pytest
import torch

from aezoo.config import DataConfig
from aezoo.data import load_dataset
from aezoo.errors import AezooError
from conftest import run_cli


@pytest.mark.slow
def test_vectors_from_csv_with_a_header_train_an_autoencoder(tmp_path):
    rows = np.random.default_rng(0).random((50, 6)).round(3)
    path = tmp_path / "v.csv"
    path.write_text("a,b,c,d,e,f\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    ds = load_dataset(DataConfig(name="arrays", file=str(path)))
    assert ds.kind == "vector" and ds.shape == (6,)
    assert [len(ds.x[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    assert np.allclose(ds.x["train"][0].numpy(), rows[0], atol=1e-6)
    code, _, err = run_cli(
        "train",
        "ae",
        "--data",
        "arrays",
        "--set",
        f"data.file={path}",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "3",
        "--set",
        "train.batch_size=8",
        "--set",
        "model.hidden=[8]",
        "--set",
        "model.likelihood=gaussian",
        "--set",
        "train.progress=false",
    )
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


def test_parquet_columns_are_vectors_and_a_list_column_holds_whole_examples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    vectors = rng.random((30, 3)).astype(np.float32)
    pq.write_table(
        pa.table({"a": vectors[:, 0], "b": vectors[:, 1], "n": (vectors[:, 2] * 100).astype(np.int64)}),
        tmp_path / "v.parquet",
    )
    ds = load_dataset(DataConfig(name="arrays", file=str(tmp_path / "v.parquet")))
    assert ds.kind == "vector" and ds.shape == (3,) and [len(ds.x[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    assert np.allclose(ds.x["train"][:, :2].numpy(), vectors[:24, :2])
    assert np.array_equal(ds.x["test"][:, 2].numpy(), (vectors[27:, 2] * 100).astype(np.int64).astype(np.float32))

    sequences = rng.random((20, 5, 2)).astype(np.float32)  # N x T x D as lists of lists
    pq.write_table(pa.table({"x": sequences.tolist()}), tmp_path / "s.parquet", row_group_size=7)
    ds = load_dataset(DataConfig(name="sequences", file=str(tmp_path / "s.parquet")))
    assert ds.shape == (5, 2) and np.allclose(ds.x["train"].numpy(), sequences[:16])


def _parquet(table_of):
    def make(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(table_of()), path.with_suffix(".parquet"))

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (_parquet(lambda: {"a": [1.0, None, 3.0, 4.0]}), "column 'a' has missing values"),
        (_parquet(lambda: {"a": ["x", "y", "z", "w"]}), "column 'a' holds string, not numbers"),
        (_parquet(lambda: {"x": [[1.0, 2.0], [3.0], [4.0, 5.0], [6.0, 7.0]]}), "differ in length"),
        (lambda p: p.with_suffix(".parquet").write_bytes(b"PAR1 not really"), "not a readable Parquet file"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([[1.0, np.nan]] * 5)), "NaN or infinite"),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros(5)),
            "expected 2 dimensions or 3 dimensions or 4 dimensions",
        ),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([["a", "b"]] * 5)), "must hold numbers"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([{"x": 1}] * 5), allow_pickle=True), "not a readable"),
        (lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage"), "not a readable"),
        (lambda p: p.with_suffix(".csv").write_text("1,2\n3,oops\n"), "line 2 is not a list of numbers"),
        (lambda p: p.with_suffix(".csv").write_text("1,2\n3,4,5\n"), "different numbers of columns"),
        (lambda p: np.savez(p.with_suffix(".npz"), a=np.zeros((5, 2)), b=np.zeros((5, 2))), "expected arrays named"),
    ],
)
def test_bad_array_files_are_refused_with_one_line(tmp_path, make, message):
    make(tmp_path / "d")
    path = next(tmp_path.glob("d.*"))
    code, _, err = run_cli(
        "train", "ae", "--data", "arrays", "--set", f"data.file={path}", "--out", str(tmp_path / "r"), "--steps", "1"
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_missing_file_or_no_file_is_refused():
    with pytest.raises(AezooError, match="set data.file"):
        load_dataset(DataConfig(name="arrays"))
    with pytest.raises(AezooError, match="no such file"):
        load_dataset(DataConfig(name="arrays", file="/nonexistent.npy"))


def _save_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_an_image_folder_with_class_subfolders_is_split_and_labelled(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {}
    for name in ("cat", "dog"):
        for i in range(15):
            pictures[tmp_path / "pets" / name / f"{i:02d}.png"] = a = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            _save_png(tmp_path / "pets" / name / f"{i:02d}.png", a)
    ds = load_dataset(DataConfig(name="images", dir=str(tmp_path / "pets")))
    assert ds.shape == (1, 6, 5) and ds.scale == 255.0 and ds.x["train"].dtype == torch.uint8
    assert [len(ds.x[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    seen = set()
    for s in ("train", "val", "test"):  # every image once, with its class, pixels unchanged
        for x, y in zip(ds.x[s], ds.labels[s]):
            match = [p for p, a in pictures.items() if np.array_equal(a, x[0].numpy())]
            assert len(match) == 1 and match[0].parent.name == ("cat", "dog")[int(y)]
            seen.add(match[0])
    assert len(seen) == 30


def test_image_folder_splits_colour_and_resizing(tmp_path):
    rng = np.random.default_rng(1)
    for s, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            size = (10, 14) if i % 2 else (12, 12)
            grey = i == 0
            _save_png(
                tmp_path / "d" / s / f"{i}.png", rng.integers(0, 256, size if grey else (*size, 3), dtype=np.uint8)
            )
    with pytest.raises(AezooError, match="images differ in size .*set data.image_size"):
        load_dataset(DataConfig(name="images", dir=str(tmp_path / "d")))
    ds = load_dataset(DataConfig(name="images", dir=str(tmp_path / "d"), image_size=8))
    assert ds.shape == (3, 8, 8) and [len(ds.x[s]) for s in ("train", "val", "test")] == [4, 2, 2] and not ds.labels
    first = ds.x["train"][0]  # the grey image, repeated over the three channels
    assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])


def test_bad_image_folders_are_refused_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        "train",
        "ae",
        "--data",
        "images",
        "--set",
        f"data.dir={tmp_path / 'empty'}",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
    )
    assert code == 2 and "no images for the train split" in err and len(err.strip().splitlines()) == 1, err
    for i in range(5):
        _save_png(tmp_path / "broken" / f"{i}.png", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "broken" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = run_cli(
        "train",
        "ae",
        "--data",
        "images",
        "--set",
        f"data.dir={tmp_path / 'broken'}",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
    )
    assert code == 2 and "3.png: not a readable image" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "v.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(AezooError, match=r"needs pyarrow: pip install 'aezoo\[parquet\]'"):
        load_dataset(DataConfig(name="arrays", file=str(tmp_path / "v.parquet")))
