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
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import AezooError
from ..files import Unreadable, reading
from .arrays import split_in_order
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


def _read(path: Path, size: int):
    from PIL import Image

    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    with reading(path, "not a readable image", also=bombs), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_IMAGE_PIXELS: refused
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
        raise AezooError(f"images differ in size ({f1.name}: {s1[1]}x{s1[0]}, {f2.name}: {s2[1]}x{s2[0]}): "
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
    pictures = {s: [_read(f, cfg.image_size) for f in files[s]] for s in SPLITS}
    _check_one_size([p for s in SPLITS for p in pictures[s]], [f for s in SPLITS for f in files[s]])
    colour = any(not grey for split in pictures.values() for _, grey in split)
    x = {s: _stack(pictures[s], colour) for s in SPLITS}
    y = {} if classes is None else {s: torch.tensor([classes[f] for f in files[s]]) for s in SPLITS}
    return Dataset(name="images", x=x, scale=255.0, labels=y)
