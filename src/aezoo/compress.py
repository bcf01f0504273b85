"""Lossy compression of images with a VQ model (vqvae, vqvae2) and its trained prior: the code maps
entropy-coded under the prior's conditional distributions (`aezoo compress`, `aezoo decompress`).

An image x becomes its code maps c = codes(x) (one per level, coarsest first); the prior factorises
p(c) = prod_l prod_i p(c_{l,i} | c_{l,<i}, c_<l) in raster order (`models.priors`), and a range coder
(constriction's `stream.queue.RangeEncoder`) spends about -log2 p(c_{l,i} | ...) bits on each code, so
that an image costs about the prior's cross-entropy -log2 p(c) bits, plus the coder's overhead and the
header. Decompression decodes the codes position by position, each from the distribution the prior
gives for the codes decoded so far, and decodes the images with the model's decoder (the mean of
p(x | c)): the images are the model's reconstructions, not the originals.

Exactness. Decoding gives back the encoded codes only if the decoder uses bit for bit the
probabilities the encoder used. Both sides therefore compute them the same way: position by
position with `CodePrior.conditional_probabilities` (the codes from the position on zeroed, so the
network sees identical tensors on both sides), on a float64 copy of the prior on the CPU with one
torch thread, in the same batches (`batch_size` images, recorded in the header); the float64
probabilities are rounded to multiples of 2^-32 and quantised to the coder's 24-bit fixed point by
constriction's deterministic `Categorical(perfect=False)`, which gives every code a non-zero
probability. The encoder's all-at-once teacher-forced logits are not used: they may differ in the
last bits. A file decompressed by another build of torch or on another kind of CPU could still
meet a rounding difference; the header holds a digest of the codes, so such a file is refused with
an error, never decoded into wrong images.

File format (version 1, little-endian):

    magic "AEZC", version (u8)
    sha256 of the model's weights (32 bytes) and of the prior's (32 bytes): of the safetensors
        serialisation of their state dicts, which is the bytes of model.safetensors and
        prior/model.safetensors as aezoo writes them
    images N (u32), coding batch size (u32), levels L (u8), per level: K (u32), H (u16), W (u16)
    classes (u32): a class-conditional prior's number of classes (the label of each image, chosen to
        minimise its code length, is coded uniformly before its codes), else 0
    digest of the codes (16 bytes: sha256 of the labels and code maps as int32, truncated)
    the run folder's path (u16 length + UTF-8; where `aezoo decompress` looks unless --run is given)
    payload length in 32-bit words (u32), the payload (the range coder's words)
    CRC-32 of everything before it (u32)

The stream order is: per batch, the labels (if any), then per level, per position in raster order,
the codes of the batch's images.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import AezooError
from .models.capabilities import CodeModel
from .models.priors import CodePrior
from .progress import progress

MAGIC = b"AEZC"
VERSION = 1
CODING_BATCH = 256  # images coded together: the batch of every prior evaluation
GRID = 2.0**32  # probabilities are rounded to multiples of 1 / GRID before constriction quantises them
_FIXED = struct.Struct("<4sB32s32sIIB")
_LEVEL = struct.Struct("<IHH")
_TAIL = struct.Struct("<I16s")


@dataclass
class Header:
    model_sha256: bytes
    prior_sha256: bytes
    n: int
    batch_size: int
    levels: list[tuple[int, int, int]]  # (K, H, W)
    classes: int
    codes_digest: bytes
    run: str = ""

    def pack(self) -> bytes:
        run = self.run.encode()
        return (_FIXED.pack(MAGIC, VERSION, self.model_sha256, self.prior_sha256, self.n, self.batch_size,
                            len(self.levels))
                + b"".join(_LEVEL.pack(*lv) for lv in self.levels)
                + _TAIL.pack(self.classes, self.codes_digest) + struct.pack("<H", len(run)) + run)


@dataclass
class Compressed:
    data: bytes  # the whole file
    header: Header
    cross_entropy_bits: float  # -log2 p(codes) under the prior's float64 probabilities, all images
    label_bits: float  # the labels' share (a class-conditional prior), log2(classes) per image

    @property
    def header_bytes(self) -> int:
        return len(self.header.pack()) + 8  # + payload length and CRC


@dataclass
class Decompressed:
    header: Header
    codes: list[torch.Tensor]  # (N, H, W) int64 per level
    labels: torch.Tensor | None
    images: torch.Tensor | None  # (N, *data_shape) in [0, 1], when a model was given to decode them


# --- identities -----------------------------------------------------------------------------------
def weights_digest(module: torch.nn.Module) -> bytes:
    """sha256 of the safetensors serialisation of the module's state dict (the bytes `save_weights` writes)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return hashlib.sha256(save(state)).digest()


def codes_digest(codes: list[torch.Tensor], labels: torch.Tensor | None) -> bytes:
    h = hashlib.sha256()
    if labels is not None:
        h.update(labels.to(torch.int32).numpy().astype("<i4").tobytes())
    for c in codes:
        h.update(c.to(torch.int32).numpy().astype("<i4").tobytes())
    return h.digest()[:16]


# --- the deterministic probabilities ----------------------------------------------------------------
@contextlib.contextmanager
def one_thread():
    """torch on one thread (reductions in one order whatever the machine's thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def coding_prior(prior: CodePrior) -> CodePrior:
    """A float64 copy of the prior on the CPU, in evaluation mode: the one that computes the coder's probabilities."""
    return copy.deepcopy(prior).to("cpu", torch.float64).eval()


def quantised(p: torch.Tensor) -> np.ndarray:
    """float64 probabilities (B, K) rounded to the fixed grid: the exact numbers handed to the coder."""
    return np.floor(p.numpy() * GRID + 0.5)


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _constriction():
    try:
        import constriction
    except ImportError:
        raise AezooError("compression needs constriction: pip install constriction") from None
    return constriction


def _require_code_model(model) -> CodePrior:
    if not isinstance(model, CodeModel):
        raise AezooError(f"{getattr(model, 'name', type(model).__name__)} has no discrete codes: "
                         "compression is for vqvae and vqvae2 runs with a trained prior")
    try:
        return model.require_prior()
    except AezooError as e:
        raise AezooError(f"{e}; compression codes the codes under it") from None


def encode_codes(prior: CodePrior, codes: list[torch.Tensor], labels: torch.Tensor | None,
                 batch_size: int = CODING_BATCH, show_progress: bool = True) -> tuple[np.ndarray, float]:
    """The range coder's words for the code maps (N, H, W) per level (and labels), and the codes'
    cross-entropy -log2 p(codes) in bits under the float64 probabilities. `prior`: from `coding_prior`."""
    cs = _constriction()
    family = cs.stream.model.Categorical(perfect=False)
    encoder = cs.stream.queue.RangeEncoder()
    classes = prior.config.num_classes if labels is not None else 0
    uniform = cs.stream.model.Categorical(np.ones(classes), perfect=False) if classes else None
    bits = 0.0
    spans = _batches(len(codes[0]), batch_size)
    with one_thread():
        for s, e in progress(spans, "compress") if show_progress else spans:
            batch = [c[s:e] for c in codes]
            y = None if labels is None else labels[s:e]
            if y is not None:
                encoder.encode(y.numpy().astype(np.int32), uniform)
            rows = torch.arange(e - s)
            for level, (_, h, w) in enumerate(prior.level_shapes):
                for i in range(h):
                    for j in range(w):
                        p = prior.conditional_probabilities(level, batch, y, i, j)
                        symbols = batch[level][:, i, j]
                        encoder.encode(symbols.numpy().astype(np.int32), family, quantised(p))
                        bits -= float(torch.log2(p[rows, symbols].clamp_min(1e-300)).sum())  # 0 if underflowed
    return encoder.get_compressed(), bits


def decode_codes(prior: CodePrior, words: np.ndarray, n: int, labelled: bool, batch_size: int = CODING_BATCH,
                 show_progress: bool = True) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The inverse of `encode_codes`: code maps (N, H, W) per level, and the labels if `labelled`."""
    cs = _constriction()
    family = cs.stream.model.Categorical(perfect=False)
    decoder = cs.stream.queue.RangeDecoder(words)
    classes = prior.config.num_classes if labelled else 0
    uniform = cs.stream.model.Categorical(np.ones(classes), perfect=False) if classes else None
    codes = [torch.zeros(n, h, w, dtype=torch.long) for _, h, w in prior.level_shapes]
    labels = torch.zeros(n, dtype=torch.long) if labelled else None
    spans = _batches(n, batch_size)
    with one_thread():
        for s, e in progress(spans, "decompress") if show_progress else spans:
            batch = [c[s:e] for c in codes]  # views: decoding fills `codes`
            y = None
            if labels is not None:
                labels[s:e] = torch.from_numpy(decoder.decode(uniform, e - s).astype(np.int64))
                y = labels[s:e]
            for level, (_, h, w) in enumerate(prior.level_shapes):
                for i in range(h):
                    for j in range(w):
                        p = prior.conditional_probabilities(level, batch, y, i, j)
                        batch[level][:, i, j] = torch.from_numpy(decoder.decode(family, quantised(p)).astype(np.int64))
    return codes, labels


# --- images <-> files -------------------------------------------------------------------------------
@torch.no_grad()
def image_codes(model: CodeModel, images: torch.Tensor, batch_size: int = 500) -> list[torch.Tensor]:
    """The code maps of images (N, *data_shape) in [0, 1], on the CPU: (N, H, W) int64 per level."""
    parts = [model.codes(images[s:e].to(model.device)) for s, e in _batches(len(images), batch_size)]
    return [torch.cat([p[level] for p in parts]).cpu() for level in range(len(parts[0]))]


@torch.no_grad()
def best_labels(prior: CodePrior, codes: list[torch.Tensor], batch_size: int = 500) -> torch.Tensor:
    """For a class-conditional prior: each image's class under which its codes are most probable (the
    label coded with it; any label decodes, this one makes the file smallest)."""
    device = prior.device
    out = []
    for s, e in _batches(len(codes[0]), batch_size):
        batch = [c[s:e].to(device) for c in codes]
        nll = torch.stack([prior.log_prob_levels(batch, torch.full((e - s,), y, device=device)).sum(1)
                           for y in range(prior.config.num_classes)], 1)
        out.append(nll.argmax(1).cpu())
    return torch.cat(out)


def compress_codes(model: CodeModel, codes: list[torch.Tensor], run: str | Path | None = None,
                   batch_size: int = CODING_BATCH, show_progress: bool = True) -> Compressed:
    """A compressed file (bytes) holding these code maps of `model` under its prior."""
    prior = _require_code_model(model)
    prior.check_codes(codes)
    n = len(codes[0])
    if n == 0:
        raise AezooError("no images to compress")
    if n >= 2**32 or not 1 <= batch_size < 2**32:
        raise AezooError(f"cannot code {n} images in batches of {batch_size}")
    labels = best_labels(prior.eval(), codes) if prior.config.num_classes else None
    fp64 = coding_prior(prior)
    words, bits = encode_codes(fp64, codes, labels, batch_size, show_progress)
    header = Header(weights_digest(model), weights_digest(prior), n, batch_size, list(prior.level_shapes),
                    prior.config.num_classes if labels is not None else 0, codes_digest(codes, labels),
                    str(Path(run).resolve()) if run is not None else "")
    body = header.pack() + struct.pack("<I", len(words)) + words.astype("<u4").tobytes()
    data = body + struct.pack("<I", zlib.crc32(body))
    label_bits = n * math.log2(header.classes) if header.classes else 0.0
    return Compressed(data, header, bits, label_bits)


def compress_images(model: CodeModel, images: torch.Tensor, run: str | Path | None = None,
                    batch_size: int = CODING_BATCH, show_progress: bool = True) -> Compressed:
    """Images (N, *data_shape) in [0, 1] compressed under the model's prior (module docstring)."""
    _require_code_model(model)
    was_training = model.training
    model.eval()
    try:
        return compress_codes(model, image_codes(model, images), run, batch_size, show_progress)
    finally:
        model.train(was_training)


def read_header(data: bytes, where: str = "the file") -> tuple[Header, np.ndarray]:
    """The header and the payload words of a compressed file; a file that is not one, of another
    version, or damaged or truncated (its length or CRC-32) is refused."""
    if len(data) < 5 or data[:4] != MAGIC:
        raise AezooError(f"{where} is not an aezoo compressed file (no AEZC magic bytes)")
    if data[4] != VERSION:
        raise AezooError(f"{where} has format version {data[4]}; this aezoo reads version {VERSION}")
    damaged = AezooError(f"{where} is damaged or truncated (checksum mismatch)")
    if len(data) < _FIXED.size + 4 or zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise damaged
    try:
        _, _, model_sha, prior_sha, n, batch_size, n_levels = _FIXED.unpack_from(data, 0)
        at = _FIXED.size
        levels = [_LEVEL.unpack_from(data, at + i * _LEVEL.size) for i in range(n_levels)]
        at += n_levels * _LEVEL.size
        classes, digest = _TAIL.unpack_from(data, at)
        at += _TAIL.size
        (run_len,) = struct.unpack_from("<H", data, at)
        run = data[at + 2 : at + 2 + run_len].decode()
        at += 2 + run_len
        (n_words,) = struct.unpack_from("<I", data, at)
        at += 4
    except (struct.error, UnicodeDecodeError):
        raise damaged from None
    if at + 4 * n_words + 4 != len(data) or n == 0 or batch_size == 0 or not levels:
        raise damaged
    words = np.frombuffer(data, dtype="<u4", count=n_words, offset=at).astype(np.uint32)
    return Header(model_sha, prior_sha, n, batch_size, [tuple(lv) for lv in levels], classes, digest, run), words


def decompress_bytes(data: bytes, model: CodeModel, where: str = "the file", decode_images: bool = True,
                     show_progress: bool = True) -> Decompressed:
    """The codes (and the decoded images) of a compressed file; refused when it was made by other
    weights of the model or of the prior, or when the decoded codes are not the encoded ones."""
    header, words = read_header(data, where)
    if not isinstance(model, CodeModel) or header.model_sha256 != weights_digest(model):
        mine = weights_digest(model).hex()[:12] if isinstance(model, torch.nn.Module) else "?"
        raise AezooError(f"{where} was made by other weights (model sha256 {header.model_sha256.hex()[:12]}..., "
                         f"this model's {mine}...)")
    prior = _require_code_model(model)
    if header.prior_sha256 != weights_digest(prior):
        raise AezooError(f"{where} was made with another prior (sha256 {header.prior_sha256.hex()[:12]}..., "
                         f"this run's {weights_digest(prior).hex()[:12]}...)")
    if header.levels != list(prior.level_shapes) or header.classes not in (0, prior.config.num_classes):
        raise AezooError(f"{where} holds codes (K, H, W) = {header.levels}; this prior codes {prior.level_shapes}")
    codes, labels = decode_codes(coding_prior(prior), words, header.n, header.classes > 0, header.batch_size,
                                 show_progress)
    if codes_digest(codes, labels) != header.codes_digest:
        raise AezooError(f"{where}: the decoded codes are not the encoded ones (their digest differs): the "
                         "prior's probabilities came out differently here than where the file was made "
                         "(another torch build or CPU?)")
    images = None
    if decode_images:
        with torch.no_grad():
            parts = [model.decode_codes([c[s:e].to(model.device) for c in codes]).clamp(0, 1).cpu()
                     for s, e in _batches(header.n, 500)]
        images = torch.cat(parts)
    return Decompressed(header, codes, labels, images)


# --- files on disk ----------------------------------------------------------------------------------
def read_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise AezooError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise AezooError(f"{path}: cannot read: {e.strerror or e}") from None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as 8-bit pixels (N, H, W, C), rounded."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def png_bytes(pixels: np.ndarray) -> bytes:
    """One image (H, W, C) uint8 as PNG (grey for one channel)."""
    import io

    from PIL import Image

    im = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_decompressed(result: Decompressed, out: str | Path, level_names: list[str]) -> Path:
    """DIR/00000.png ... (the decoded images) and DIR/codes.npz (codes_<level> (N, H, W), labels): written
    into a fresh folder beside DIR and renamed to DIR at the end, so DIR is whole or absent. DIR must
    not exist or be empty."""
    import io
    import os
    import shutil
    import tempfile

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AezooError(f"--out {out} exists and is not an empty folder: choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        pixels = to_uint8(result.images)
        width = max(5, len(str(len(pixels) - 1)))
        for i, p in enumerate(pixels):
            (tmp / f"{i:0{width}d}.png").write_bytes(png_bytes(p))
        arrays = {f"codes_{name}" if len(level_names) > 1 else "codes": c.numpy()
                  for name, c in zip(level_names, result.codes)}
        if result.labels is not None:
            arrays["labels"] = result.labels.numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (tmp / "codes.npz").write_bytes(buf.getvalue())
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # over an empty folder too
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise AezooError(f"could not write {out}: {e.strerror or e}") from None
        raise
    return out
