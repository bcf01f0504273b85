"""The user's own images from a folder (`--data images --set data.dir=FOLDER`).

Every .png, .jpg/.jpeg, .bmp, .gif (first frame), .webp or .tif/.tiff file below the folder is read,
in path order. Layouts:
  - FOLDER/train, FOLDER/val, FOLDER/test: those are the splits;
  - otherwise all images are split 80% / 10% / 10% after a shuffle with a fixed seed (so that images
    sorted by class or by date do not all land in one split).
Inside a split (or the folder), images kept in subfolders are labelled by subfolder: the sorted names
of the subfolders are the classes 0, 1, ... (the layout of torchvision's ImageFolder); the labels feed
the feature probes and class-conditional priors.

Images are grey (1 channel) when every one of them is grey, else RGB (3 channels); alpha is dropped.
They must share one size unless `data.image_size=S` is set: each is then scaled so that its shorter
side is S and cropped to the central S x S square. Pixels stay uint8 (0..255) in memory.

Images are decoded by Pillow, only by its decoders of these formats, inside `files.reading`: a file
it cannot read is named in a one-line error. Pillow reads each file from its bytes in memory (so a
chunk length in a damaged header, which Pillow may ask the file for at once, costs only the bytes
there), with its guard against decompression bombs (an image over its MAX_IMAGE_PIXELS is refused),
and before decoding, an image whose header declares more pixels than its file could hold is
refused: at most MAX_PIXELS_PER_BYTE per byte of the file, the most a PNG can (1-bit pixels under
deflate's largest expansion, 1032:1), so no valid PNG is refused and a damaged header of any format
cannot make Pillow allocate far beyond the file. Pillow's log of odd files goes nowhere unless the
program configures logging (else logging's last resort would print it beside the one-line error).

Folders larger than memory (`data.memmap`): the images are decoded once into a uint8 cache, one .npy
file per split (and the labels), which is memory-mapped like a large array file (arrays.py), so batches
are gathered by index from it. `auto` uses the cache when the pixels would take MEMMAP_AUTO_BYTES or
more (judged from the first image's header), `on` always, `off` never (the images are decoded into
memory on every load). The cache lives in `data.cache_dir` (default ~/.cache/aezoo, or
$XDG_CACHE_HOME/aezoo; set it to the data folder to keep it beside the data), under a name made of
the folder's path and a fingerprint of its contents: every image's path, size and modification time,
and `data.image_size`. A changed folder has a new fingerprint, so its cache is rebuilt and the old one
removed. A cache is written into a temporary folder renamed into place when complete, so a reader
never sees half of one; processes started together (torchrun) take a lock, and one of them builds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from ..files import Unreadable, read_json, reading, reason, write_json
from .arrays import MEMMAP_AUTO_BYTES, read_array_file, split_in_order
from .base import SPLITS, Dataset, register_dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
MAX_PIXELS_PER_BYTE = 8 * 1032
# The decoders Pillow may use (whatever a file's name says): those of EXTENSIONS (JPEG's also opens a
# camera's MPO). No other plugin ever sees a user's file (EPS, for one, would run Ghostscript on it).
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
logging.getLogger("PIL").addHandler(logging.NullHandler())


def image_files(folder: Path) -> list[Path]:
    with reading(folder, "cannot list the image folder"):
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _open(data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise Unreadable(f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image") from None


@contextlib.contextmanager
def _reading_image(path: Path):
    """Errors reading the image at path, a declared size over Pillow's MAX_IMAGE_PIXELS among them, as
    one line naming it."""
    from PIL import Image

    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    with reading(path, "not a readable image", also=bombs), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_IMAGE_PIXELS: refused
        yield


def _read(path: Path, size: int):
    from PIL import Image

    with _reading_image(path):
        data = path.read_bytes()
        with _open(data) as im:
            file_size = len(data)
            if im.width * im.height > MAX_PIXELS_PER_BYTE * file_size:
                raise Unreadable(f"its header declares {im.width}x{im.height} pixels, "
                                 f"more than {file_size:,} bytes can hold")
            im.seek(0)
            grey = im.mode in ("1", "L", "LA", "I", "I;16", "F") or (im.mode == "P" and _grey_palette(im))
            im = im.convert("L" if grey else "RGB")
            if size:
                scale = size / min(im.size)
                w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
                im = im.resize((w, h), Image.Resampling.BICUBIC)
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8), grey


def _grey_palette(im) -> bool:
    palette = np.asarray(im.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def _class_of(files_under: dict[Path, list[Path]]) -> dict[Path, int] | None:
    """Each file's class: the index of its first folder below its root among all such folder names
    (sorted); None when some image lies directly in its root."""
    first = {f: f.relative_to(root).parts for root, files in files_under.items() for f in files}
    if any(len(parts) < 2 for parts in first.values()):
        return None
    classes = {name: i for i, name in enumerate(sorted({parts[0] for parts in first.values()}))}
    return {f: classes[parts[0]] for f, parts in first.items()}


def _check_one_size(pictures: list[tuple[np.ndarray, bool]], files: list[Path]) -> None:
    first_of_size = {}
    for (a, _), f in zip(pictures, files):
        first_of_size.setdefault(a.shape[:2], f)
    if len(first_of_size) > 1:
        (s1, f1), (s2, f2) = list(first_of_size.items())[:2]
        raise _sizes_differ(f1, s1, f2, s2)


def _sizes_differ(f1: Path, s1: tuple[int, ...], f2: Path, s2: tuple[int, ...]) -> AezooError:
    return AezooError(f"images differ in size ({f1.name}: {s1[1]}x{s1[0]}, {f2.name}: {s2[1]}x{s2[0]}): "
                      "set data.image_size=S to scale and crop them to S x S")


def _stack(pictures: list[tuple[np.ndarray, bool]], colour: bool) -> torch.Tensor:
    """(N, C, H, W) uint8: grey pictures repeated over three channels when others are in colour."""
    arrays = [a[..., None] if grey else a for a, grey in pictures]  # H x W x 1 or H x W x 3
    if colour:
        arrays = [np.repeat(a, 3, -1) if a.shape[-1] == 1 else a for a in arrays]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def where(cfg: DataConfig) -> str:
    return f"the image folder {cfg.dir}" if cfg.dir else "nowhere: set data.dir to a folder of images"


@register_dataset("images", "your own images from a folder (data.dir; train/val/test and class subfolders optional)",
                  where)
def load_images(cfg: DataConfig) -> Dataset:
    if not cfg.dir:
        raise AezooError("dataset images reads a folder of images: set data.dir=FOLDER")
    root = Path(cfg.dir).expanduser()
    if not root.is_dir():
        raise AezooError(f"data.dir: no such folder: {root}")
    if all((root / s).is_dir() for s in SPLITS):
        files = {s: image_files(root / s) for s in SPLITS}
        classes = _class_of({root / s: files[s] for s in SPLITS})
    else:
        every = image_files(root)
        shuffled = np.random.default_rng(SPLIT_SEED).permutation(len(every))
        parts = split_in_order(shuffled, root) if every else {s: [] for s in SPLITS}
        files = {s: [every[i] for i in sorted(idx)] for s, idx in parts.items()}
        classes = _class_of({root: every})
    for s in SPLITS:
        if not files[s]:
            raise AezooError(f"{root}: no images for the {s} split (looked for {', '.join(sorted(EXTENSIONS))})")
    if cfg.memmap == "on" or (cfg.memmap == "auto" and _pixel_bytes(files, cfg.image_size) >= MEMMAP_AUTO_BYTES):
        x, y = _cached(root, files, classes, cfg)
        return Dataset(name="images", x=x, scale=255.0, labels=y, mapped=set(SPLITS))
    pictures = {s: [_read(f, cfg.image_size) for f in files[s]] for s in SPLITS}
    _check_one_size([p for s in SPLITS for p in pictures[s]], [f for s in SPLITS for f in files[s]])
    colour = any(not grey for split in pictures.values() for _, grey in split)
    x = {s: _stack(pictures[s], colour) for s in SPLITS}
    y = {} if classes is None else {s: torch.tensor([classes[f] for f in files[s]]) for s in SPLITS}
    return Dataset(name="images", x=x, scale=255.0, labels=y)


# --- the memory-mapped cache ----------------------------------------------------------------------
CACHE_VERSION = 1  # bumped when the cache's layout or decoding changes, so old caches are not read


def _pixel_bytes(files: dict[str, list[Path]], size: int) -> int:
    """The bytes the folder's pixels would take, from the first image's header (without decoding it)."""
    first = files["train"][0]
    with _reading_image(first), _open(first.read_bytes()) as im:
        w, h = (size, size) if size else im.size
        channels = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    return sum(len(f) for f in files.values()) * channels * w * h


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "aezoo"


def _fingerprint(root: Path, files: dict[str, list[Path]], size: int) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, size]).encode())
    with reading(root, "cannot read the image folder"):
        for s in SPLITS:
            for f in files[s]:
                st = f.stat()
                h.update(f"{s}\0{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cached(root: Path, files: dict[str, list[Path]], classes: dict[Path, int] | None,
            cfg: DataConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The splits (mapped) and labels (in memory) from the folder's cache, built first if missing or stale."""
    folder_key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    base, name = cache_root(cfg), f"images-{folder_key}-{_fingerprint(root, files, cfg.image_size)}"
    target = base / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        with open(base / f"images-{folder_key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if this process dies
            if not (target / "info.json").is_file():
                _build(target, root, files, classes, cfg.image_size)
                for stale in base.glob(f"images-{folder_key}-*"):
                    if stale != target:
                        shutil.rmtree(stale, ignore_errors=True)
    except OSError as e:
        raise AezooError(f"{base}: cannot write the image cache there: {reason(e)}; set data.cache_dir to a "
                         "writable folder, or data.memmap=off to decode the images into memory") from None
    info = read_json(target / "info.json")
    x = {s: torch.from_numpy(read_array_file(target / f"x_{s}.npy", memmap="on")) for s in SPLITS}
    y = {s: torch.from_numpy(read_array_file(target / f"y_{s}.npy")) for s in SPLITS} if info["labelled"] else {}
    return x, y


def _build(target: Path, root: Path, files: dict[str, list[Path]], classes: dict[Path, int] | None,
           size: int) -> None:
    """Decodes the images one at a time into x_SPLIT.npy (N, C, H, W) uint8 files (and y_SPLIT.npy labels)
    in a temporary folder, renamed to `target` once complete. Pictures are written with three channels
    (grey repeated) until every one is known to be grey, then cut to one, as `load_images` decides."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        first, grey = None, True
        for s in SPLITS:
            rgb = None
            for i, f in enumerate(files[s]):
                a, is_grey = _read(f, size)
                if first is None:
                    first = (f, a.shape[:2])
                elif a.shape[:2] != first[1]:
                    raise _sizes_differ(first[0], first[1], f, a.shape[:2])
                if rgb is None:
                    rgb = np.lib.format.open_memmap(tmp / f"rgb_{s}.npy", "w+", np.uint8,
                                                    (len(files[s]), 3, *first[1]))
                grey &= is_grey
                rgb[i] = a[None] if is_grey else a.transpose(2, 0, 1)
            rgb.flush()
            del rgb
            if classes is not None:
                np.save(tmp / f"y_{s}.npy", np.array([classes[f] for f in files[s]], dtype=np.int64))
        for s in SPLITS:
            rgb = np.load(tmp / f"rgb_{s}.npy", mmap_mode="r")
            if grey:
                out = np.lib.format.open_memmap(tmp / f"x_{s}.npy", "w+", np.uint8, (len(rgb), 1, *rgb.shape[2:]))
                rows = max(1, (64 << 20) // rgb[0].nbytes)
                for i in range(0, len(rgb), rows):
                    out[i : i + rows] = rgb[i : i + rows, :1]
                out.flush()
                del out, rgb
                os.unlink(tmp / f"rgb_{s}.npy")
            else:
                del rgb
                os.rename(tmp / f"rgb_{s}.npy", tmp / f"x_{s}.npy")
        write_json(tmp / "info.json", {"version": CACHE_VERSION, "folder": str(root.resolve()),
                                        "image_size": size, "labelled": classes is not None,
                                        "images": {s: len(files[s]) for s in SPLITS}})
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)  # a partial folder of an older layout; the lock keeps others out
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
