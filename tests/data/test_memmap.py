"""Memory-mapped data (data.memmap): the same batches as in memory, caches of image folders that follow
the folder, and the one-line refusals of what mapping cannot do."""

import functools
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aezoo.config import DataConfig
from aezoo.data import Batches, base, load_dataset, value_kind
from aezoo.data import arrays as arrays_module
from aezoo.data import images as images_module
from aezoo.errors import AezooError
from conftest import run_cli


def _arrays(path, memmap, **kw):
    return load_dataset(DataConfig(name="arrays", file=str(path), memmap=memmap, **kw))


def _same_batches(a, b, split="train", batch=32, binarize="none", steps=(0, 1, 7, 30), world=1):
    for rank in range(world):
        ba = Batches(a, split, batch, binarize, seed=5, rank=rank, world=world)
        bb = Batches(b, split, batch, binarize, seed=5, rank=rank, world=world)
        for step in steps:
            assert torch.equal(ba.get(step), bb.get(step)), (split, binarize, step, rank)


def test_a_mapped_npy_gives_the_batches_of_the_in_memory_one(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (500, 1, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    in_memory, mapped = _arrays(tmp_path / "x.npy", "off"), _arrays(tmp_path / "x.npy", "on")
    assert in_memory.mapped == set() and mapped.mapped == {"train", "val", "test"}
    assert mapped.x["train"].dtype == torch.uint8 and mapped.scale == 255.0  # stays uint8, scaled per batch
    assert not mapped.x["train"].numpy().flags.owndata  # a view of the file, not a copy
    for split in ("train", "val", "test"):
        assert torch.equal(in_memory.x[split], mapped.x[split])
    _same_batches(in_memory, mapped, binarize="dynamic")
    _same_batches(in_memory, mapped, binarize="dynamic", world=2)  # each process's share of a global batch
    _same_batches(in_memory, mapped, split="test", batch=16, steps=(0, 2))


def test_float32_train_and_val_of_one_mapped_array_join_without_a_copy(tmp_path):
    values = np.random.default_rng(1).standard_normal((200, 7)).astype(np.float32)
    np.save(tmp_path / "v.npy", values)
    in_memory = _arrays(tmp_path / "v.npy", "off", train_split="train+val")
    mapped = _arrays(tmp_path / "v.npy", "on", train_split="train+val", limit=170)
    train = mapped.x["train"]
    assert train.dtype == torch.float32 and "train" in mapped.mapped
    assert train.untyped_storage().data_ptr() == mapped.x["val"].untyped_storage().data_ptr()
    assert torch.equal(train, in_memory.x["train"][:170])
    assert torch.equal(mapped.x["train"][:9], torch.from_numpy(values[:9]))  # what the evaluators slice
    _same_batches(in_memory, _arrays(tmp_path / "v.npy", "on", train_split="train+val"))


def test_value_kind_reads_a_mapped_split_in_chunks_and_agrees(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "SCAN_BYTES", 40)  # two rows (4 floats each) a chunk: the first chunk decides
    for first, kind in ((0.0, "binary"), (0.5, "unit"), (1.5, "real")):
        values = np.zeros((50, 4), dtype=np.float32)
        values[1:20:2] = 1.0
        values[0, 0] = first
        np.save(tmp_path / "a.npy", values)
        assert [value_kind(_arrays(tmp_path / "a.npy", m), "none") for m in ("off", "on")] == [kind, kind]


def test_auto_maps_the_large_members_of_an_npz_and_reads_the_small(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays_module, "MEMMAP_AUTO_BYTES", 1000)
    rng = np.random.default_rng(2)
    splits = {"train": rng.random((100, 5)).astype(np.float32), "val": rng.random((10, 5)).astype(np.float32),
              "test": rng.random((10, 5)).astype(np.float32)}
    np.savez(tmp_path / "s.npz", **splits)
    ds = _arrays(tmp_path / "s.npz", "auto")
    assert ds.mapped == {"train"}
    for split, values in splits.items():
        assert torch.equal(ds.x[split], torch.from_numpy(values))
    np.savez_compressed(tmp_path / "c.npz", **splits)
    assert _arrays(tmp_path / "c.npz", "auto").mapped == set()  # compressed: read


@pytest.mark.parametrize(
    "save, overrides, message",
    [
        (lambda p, a: np.savez_compressed(p / "d.npz", train=a, val=a, test=a), {}, "it is compressed"),
        (lambda p, a: np.save(p / "d.npy", a.astype(np.float64)), {}, "it holds float64"),
        (lambda p, a: np.save(p / "d.npy", np.asfortranarray(a)), {}, "Fortran order"),
        (lambda p, a: np.savetxt(p / "d.csv", a, delimiter=","), {}, "is read whole"),
        (lambda p, a: np.savez(p / "d.npz", train=a, val=a, test=a), {"train_split": "train+val"}, "into memory"),
        (lambda p, a: np.save(p / "d.npy", a), {"binarize": "static"}, "data.binarize=static rewrites"),
    ],
)
def test_what_mapping_cannot_do_is_refused_in_one_line(tmp_path, save, overrides, message):
    save(tmp_path, np.random.default_rng(3).random((30, 4)).astype(np.float32))
    path = next(tmp_path.glob("d.*"))
    with pytest.raises(AezooError, match=message) as e:
        _arrays(path, "on", **overrides)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_damaged_array_files_are_refused_in_one_line_when_mapped(monkeypatch):
    """The fuzzed .npy and .npz files of test_fuzz_readers, read through the mapping path: mapped where
    they can be (any size), read otherwise; each loads exactly what was written or is one line."""
    import test_fuzz_readers as fuzz

    mapped = []

    def load(cfg):
        ds = load_dataset(cfg)
        mapped.append(bool(ds.mapped))
        return ds

    monkeypatch.setattr(arrays_module, "MEMMAP_AUTO_BYTES", 0)
    monkeypatch.setattr(fuzz, "DataConfig", functools.partial(DataConfig, memmap="auto"))
    monkeypatch.setattr(fuzz, "load_dataset", load)
    for seed in range(60):
        fuzz.case_npy(seed)
        fuzz.case_npz(seed)
    assert sum(mapped) >= 5  # the loaded files that were mapped (the others hold types read into memory)


def test_mapped_splits_stay_on_the_cpu_and_batches_move_to_the_device(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).random((40, 3)).astype(np.float32))
    ds = _arrays(tmp_path / "x.npy", "on").to("meta")  # a device without data: only where tensors live
    assert ds.x["train"].device.type == "cpu" and ds.device.type == "meta"
    batch = Batches(ds, "train", 8, seed=0).get(0)
    assert batch.device.type == "meta" and batch.shape == (8, 3)


# --- image folders ----------------------------------------------------------------------------------
def _folder(root, n=12, colour_at=None):
    rng = np.random.default_rng(5)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (5, 4, 3) if (c, i) == colour_at else (5, 4)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.bmp")


def _images(root, cache, memmap="on"):
    return load_dataset(DataConfig(name="images", dir=str(root), memmap=memmap, cache_dir=str(cache)))


@pytest.mark.parametrize("colour_at", [None, ("b", 3)])
def test_an_image_folder_cache_gives_the_decoded_images_and_labels(tmp_path, colour_at):
    _folder(tmp_path / "img", colour_at=colour_at)
    decoded, cached = _images(tmp_path / "img", tmp_path / "c", "off"), _images(tmp_path / "img", tmp_path / "c")
    assert cached.mapped == {"train", "val", "test"}
    assert cached.shape == ((1, 5, 4) if colour_at is None else (3, 5, 4))
    for split in ("train", "val", "test"):
        assert torch.equal(decoded.x[split], cached.x[split])
        assert torch.equal(decoded.labels[split], cached.labels[split])
    _same_batches(decoded, cached, batch=8, binarize="dynamic", steps=(0, 1, 2))


def test_a_changed_image_folder_rebuilds_its_cache(tmp_path):
    img, cache = tmp_path / "img", tmp_path / "c"
    _folder(img)
    first = _images(img, cache)
    built = sorted(p.name for p in cache.glob("images-*") if p.is_dir())
    assert len(built) == 1
    again = _images(img, cache)  # unchanged: the same cache, read again
    assert sorted(p.name for p in cache.glob("images-*") if p.is_dir()) == built
    assert torch.equal(again.x["train"], first.x["train"])

    size = (img / "a" / "0.bmp").stat().st_size
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(img / "a" / "0.bmp")  # new pixels, the same file size
    st = (img / "a" / "0.bmp").stat()
    os.utime(img / "a" / "0.bmp", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a coarse clock's tick later
    assert st.st_size == size  # only the modification time tells the change
    changed = _images(img, cache)
    rebuilt = sorted(p.name for p in cache.glob("images-*") if p.is_dir())
    assert len(rebuilt) == 1 and rebuilt != built  # a new cache, the stale one removed
    assert torch.equal(changed.x["train"], _images(img, cache, "off").x["train"])
    assert not torch.equal(changed.x["train"], first.x["train"])

    (img / "b" / "11.bmp").unlink()  # one image fewer
    assert sum(len(v) for v in _images(img, cache).x.values()) == 23


def test_auto_caches_a_folder_only_when_its_pixels_are_large(tmp_path, monkeypatch):
    _folder(tmp_path / "img")  # 24 grey 5x4 images: 480 bytes of pixels
    monkeypatch.setattr(images_module, "MEMMAP_AUTO_BYTES", 481)
    assert _images(tmp_path / "img", tmp_path / "c", "auto").mapped == set()
    monkeypatch.setattr(images_module, "MEMMAP_AUTO_BYTES", 480)
    assert _images(tmp_path / "img", tmp_path / "c", "auto").mapped == {"train", "val", "test"}


@pytest.mark.parametrize("limit", [9, 15])  # 20 pixels: over twice the limit Pillow errs, over it it warns
@pytest.mark.parametrize("memmap", ["auto", "on", "off"])
def test_an_image_over_pillows_pixel_limit_is_one_line_on_every_path(tmp_path, monkeypatch, limit, memmap):
    _folder(tmp_path / "img", n=3)  # 5x4 images
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(AezooError, match="not a readable image") as e:
        _images(tmp_path / "img", tmp_path / "c", memmap)
    assert "\n" not in str(e.value)


def test_a_cache_folder_that_cannot_be_written_is_one_line(tmp_path):
    _folder(tmp_path / "img", n=3)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(AezooError, match="cannot write the image cache there.*data.memmap=off") as e:
        _images(tmp_path / "img", tmp_path / "file" / "cache")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_run_trains_and_evaluates_from_a_cached_image_folder(tmp_path):
    _folder(tmp_path / "img", n=40)  # labelled: the probes and retrieval slice the mapped training split
    sets = ["train.progress=false", "data.memmap=on", f"data.cache_dir={tmp_path / 'c'}", "train.batch_size=16",
            "eval.nll_k=2", f"data.dir={tmp_path / 'img'}"]
    code, _, err = run_cli("train", "vae", "--data", "images", "--out", str(tmp_path / "r"), "--steps", "3",
                           *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    code, _, err = run_cli("eval", str(tmp_path / "r"))
    assert code == 0, err
    results = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert results["probe_train_examples"] == 64 and "retrieval_p10_euclidean" in results
