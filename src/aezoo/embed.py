"""Using a trained model's bottleneck: the codes of a dataset or of the user's own image files
(`aezoo encode`), reconstructions of image files (`aezoo reconstruct`) and interpolations between two
of them (`aezoo interpolate`).

What is written for each example, by the model's declared capabilities (`models.capabilities`):

    CodeModel (vqvae, vqvae2)   codes: the code indices (N, H, W) int64; one array per level for
                                several levels, codes_top and codes_bottom for vqvae2
    LikelihoodBound (vae, ...)  mean and std: the Gaussian posterior's mean and standard deviation
                                (`posterior_moments`)
    tdvae (sequences)           belief: the belief state after the whole sequence, beliefs(x)[:, -1];
                                state_mean: the mean of p_B(z | that belief), which is `encode(x)`
    any other autoencoder       code: `encode(x)` (k-sparse: the alpha * k largest units kept)

with `label` (N,) and `factors` (N, F) where the data has them. Files: .npz holds a named array per
field; .parquet a column per field (a fixed-size list column for a vector field, code maps
flattened in raster order; the schema's metadata `aezoo` records each field's shape); .npy holds the
codes alone: `codes` (the levels of a multi-level model flattened in raster order and concatenated,
coarsest first, (N, sum H W)), `mean`, `belief` or `code`.

Examples are made into the model's input as evaluation makes them (values in [0, 1], binarised with
the evaluation seed where the run binarises). Image files are read with `data.images`' reader (the
file's own mode, alpha dropped), converted to the model's channels (grey <-> RGB), and scaled and
cropped to the model's image size as `data.image_size` does (shorter side to the size, the centre
kept; a non-square size is covered, then cropped); for data padded by `data.pad_to` they are brought
to the unpadded size and padded alike.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import registry, zoo
from .config import DataConfig, RunConfig, from_dict, parse_overrides, to_dict
from .data import EVAL_SEED, Dataset, load_dataset, mix_seed, prepare
from .data.images import _read as read_image_file  # the images dataset's own reader (mode, size, errors)
from .distributed import pick_device
from .errors import AezooError
from .files import atomic_write_bytes
from .models.base import Model
from .models.capabilities import CodeModel, LikelihoodBound
from .models.tdvae import TDVAE
from .models.vqvae import VQVAE
from .models.vqvae2 import VQVAE2
from .progress import progress
from .runfolder import RunFolder

__all__ = ["encode_dataset", "encode_examples", "load_image_files", "reconstruct_grid", "interpolation_strip",
           "write_fields", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = (".npy", ".npz", ".parquet")
BATCH_SIZE = 500


# --- the model and its data -------------------------------------------------------------------------
@dataclass
class Loaded:
    model: Model
    cfg: RunConfig | None  # None for a model object given without its run
    path: Path | None


def load_model(run_or_model, device: str | None = None) -> Loaded:
    """A run folder (path), a zoo entry's name or a model object, in evaluation mode."""
    if isinstance(run_or_model, Model):
        return Loaded(run_or_model.eval(), None, None)
    if not isinstance(run_or_model, (str, Path)):
        raise AezooError(f"expected a run folder or a model, got {type(run_or_model).__name__}")
    run = RunFolder(zoo.resolve(run_or_model))  # only read: the installed entry itself for a name
    run.require()
    cfg = registry.load_run_config(run.path)
    model = registry.load(run.path, device=str(pick_device(device or cfg.train.device)))
    if not isinstance(model, Model):
        raise AezooError(f"{run.path} holds a {cfg.model_name}, not an autoencoder (for a prior, use its model's run)")
    return Loaded(model.eval(), cfg, run.path)


@dataclass
class Examples:
    """Stored examples and how they become the model's input."""

    raw: torch.Tensor  # (N, *shape): uint8 pixels or floats
    scale: float = 1.0
    binarize: str = "none"
    labels: torch.Tensor | None = None
    factors: torch.Tensor | None = None

    def batch(self, i: int, batch_size: int, device) -> torch.Tensor:
        """Batch i as evaluation's `Batches(seed=EVAL_SEED, shuffle=False).get(i)` makes it."""
        rows = self.raw[i * batch_size : (i + 1) * batch_size].to(device)
        return prepare(rows, self.scale, self.binarize, mix_seed(EVAL_SEED, i, 7))


def data_config(cfg: RunConfig | None, data=None, overrides: list[str] = ()) -> DataConfig:
    """The run's data config; `data` names another dataset (with the run's binarisation, padding and image
    size), and `overrides` are data.key=value settings on top."""
    base = cfg.data if cfg is not None else DataConfig()
    if isinstance(data, DataConfig):
        base = data
    elif isinstance(data, str) and data != base.name:
        base = DataConfig(name=data, binarize=base.binarize, pad_to=base.pad_to, image_size=base.image_size)
    tree = parse_overrides(list(overrides))
    if set(tree) - {"data"}:
        raise AezooError("only data.key=value settings apply here")
    if tree:
        base = from_dict(DataConfig, {**to_dict(base), **tree["data"]}, prefix="data.")
    return base


def dataset_examples(model: Model, dcfg: DataConfig, split: str = "test", limit: int = 0,
                     dataset: Dataset | None = None) -> Examples:
    """The examples of one split of a dataset (loaded from `dcfg` unless given), checked against the model."""
    ds = dataset if dataset is not None else load_dataset(dcfg)
    raw = ds.split(split)
    if limit:
        raw = raw[:limit]
    n = len(raw)
    if tuple(raw.shape[1:]) != tuple(model.config.data_shape):
        raise AezooError(f"the model takes examples of shape {tuple(model.config.data_shape)}; "
                         f"{ds.name} ({split}) holds {tuple(raw.shape[1:])}")
    labels, factors = ds.labels.get(split), ds.factors.get(split)
    return Examples(raw, ds.scale, dcfg.binarize, None if labels is None else labels[:n].cpu(),
                    None if factors is None else factors[:n].cpu())


def as_examples(model: Model, data, binarize: str = "none") -> Examples:
    """Examples from an array or tensor (N, *data_shape): uint8 pixels (0..255) or floats in [0, 1]."""
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if tuple(x.shape[1:]) != tuple(model.config.data_shape):
        raise AezooError(f"the model takes examples of shape {tuple(model.config.data_shape)}; "
                         f"got {tuple(x.shape[1:])}")
    return Examples(x, 255.0 if x.dtype == torch.uint8 else 1.0, binarize)


# --- image files ------------------------------------------------------------------------------------
def _unpadded_size(dcfg: DataConfig | None, shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the data before `data.pad_to` padded it (the model's own (H, W) without padding)."""
    if dcfg is None or not dcfg.pad_to:
        return shape
    try:
        ds = load_dataset(dataclasses.replace(dcfg, pad_to=0, limit=1))
    except AezooError as e:
        raise AezooError(f"the model's data was padded (data.pad_to={dcfg.pad_to}) from a size read from "
                         f"its dataset, which cannot be loaded here: {e}") from None
    return tuple(ds.shape[-2:])


def _fit(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale an image (H, W[, 3]) uint8 to cover `size` (h, w), then crop its centre (bicubic)."""
    from PIL import Image

    h, w = size
    if picture.shape[:2] == (h, w):
        return picture
    im = Image.fromarray(picture)
    scale = max(h / im.height, w / im.width)
    nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - w) // 2, (nh - h) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


def load_image_files(paths, data_shape: tuple[int, ...], dcfg: DataConfig | None = None) -> torch.Tensor:
    """Image files as the model's stored examples: (N, C, H, W) uint8 (module docstring)."""
    from PIL import Image

    if len(data_shape) != 3:
        kind = "sequences" if len(data_shape) == 4 else "vectors"
        raise AezooError(f"the model takes {kind} of shape {tuple(data_shape)}, not images")
    c, h, w = data_shape
    if c not in (1, 3):
        raise AezooError(f"the model takes images of {c} channels; image files give 1 (grey) or 3 (RGB)")
    paths = [Path(p) for p in paths]
    if not paths:
        raise AezooError("no image files given")
    inner = _unpadded_size(dcfg, (h, w))
    out = []
    for path in paths:
        if not path.is_file():
            raise AezooError(f"{path}: no such file")
        picture, grey = read_image_file(path, inner[0] if inner[0] == inner[1] else 0)
        picture = _fit(picture, inner)
        if c == 1 and not grey:
            picture = np.asarray(Image.fromarray(picture, "RGB").convert("L"), dtype=np.uint8)
        picture = picture[..., None] if picture.ndim == 2 else picture
        if c == 3 and picture.shape[-1] == 1:
            picture = np.repeat(picture, 3, -1)
        out.append(picture)
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    if inner != (h, w):
        top, left = (h - inner[0]) // 2, (w - inner[1]) // 2
        x = torch.nn.functional.pad(x, (left, w - inner[1] - left, top, h - inner[0] - top))
    return x


def file_examples(loaded: Loaded, paths) -> Examples:
    dcfg = loaded.cfg.data if loaded.cfg is not None else None
    raw = load_image_files(paths, tuple(loaded.model.config.data_shape), dcfg)
    return Examples(raw, 255.0, dcfg.binarize if dcfg is not None else "none")


# --- codes --------------------------------------------------------------------------------------------
@torch.no_grad()
def code_fields(model: Model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named codes of a batch x (module docstring)."""
    if isinstance(model, CodeModel):
        levels, codes = model.code_levels(), model.codes(x)
        if len(levels) == 1:
            return {"codes": codes[0]}
        return {f"codes_{lv.name}": c for lv, c in zip(levels, codes)}
    if isinstance(model, LikelihoodBound):
        mean, std = model.posterior_moments(x)
        return {"mean": mean, "std": std}
    if isinstance(model, TDVAE):
        belief = model.beliefs(x)[:, -1]
        return {"belief": belief, "state_mean": model.p_b.mode(belief)}
    return {"code": model.encode(x)}


def primary(fields: dict[str, np.ndarray]) -> np.ndarray:
    """What a .npy file holds: the codes alone (module docstring)."""
    levels = [k for k in fields if k.startswith("codes_")]
    if levels:
        return np.concatenate([fields[k].reshape(len(fields[k]), -1) for k in levels], 1)
    for name in ("codes", "mean", "belief", "code"):
        if name in fields:
            return fields[name]
    raise AssertionError(f"no codes among {list(fields)}")


def encode_examples(model: Model, ex: Examples, batch_size: int = BATCH_SIZE,
                    show_progress: bool = True) -> dict[str, np.ndarray]:
    """The named codes of every example, with label and factors where known: numpy arrays, one row each."""
    n = len(ex.raw)
    if n == 0:
        raise AezooError("no examples to encode")
    batches = math.ceil(n / batch_size)
    steps = progress(range(batches), "encode") if show_progress else range(batches)
    parts: dict[str, list[np.ndarray]] = {}
    for i in steps:
        for name, value in code_fields(model, ex.batch(i, batch_size, model.device)).items():
            parts.setdefault(name, []).append(value.detach().cpu().numpy())
    out = {name: np.concatenate(v) for name, v in parts.items()}
    if ex.labels is not None:
        out["label"] = ex.labels.cpu().numpy()
    if ex.factors is not None:
        out["factors"] = ex.factors.cpu().numpy()
    return out


def encode_dataset(run_or_model, data=None, split: str = "test", *, limit: int = 0, files=None,
                   batch_size: int = BATCH_SIZE, device: str | None = None, overrides: list[str] = (),
                   show_progress: bool = True) -> dict[str, np.ndarray]:
    """The codes of every example of a dataset split, as {field: array (N, ...)} (module docstring).

        fields = aezoo.encode_dataset("runs/vae", split="test")    # mean, std, label
        fields = aezoo.encode_dataset(model, data="mnist")           # a model object: its data by name
        fields = aezoo.encode_dataset("runs/vqvae", files=["a.png"])  # the user's own images

    `run_or_model`: a run folder or a model. `data`: None (the run's dataset), a dataset name, a
    `DataConfig`, a loaded `Dataset`, or an array/tensor of examples (N, *data_shape) (uint8 pixels or
    floats in [0, 1]). `limit`: the first N examples only. `files`: image files instead of a dataset.
    `overrides`: data.key=value settings (data.dir=..., data.file=...)."""
    loaded = load_model(run_or_model, device)
    model = loaded.model
    if files is not None:
        ex = file_examples(loaded, files)
    elif isinstance(data, Dataset):
        ex = dataset_examples(model, data_config(loaded.cfg), split, limit, dataset=data)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        ex = as_examples(model, data[:limit] if limit else data,
                         loaded.cfg.data.binarize if loaded.cfg is not None else "none")
    else:
        if loaded.cfg is None and data is None:
            raise AezooError("a model object without its run: name the data (data='mnist', a DataConfig or an array)")
        ex = dataset_examples(model, data_config(loaded.cfg, data, overrides), split, limit)
    return encode_examples(model, ex, batch_size, show_progress)


# --- files --------------------------------------------------------------------------------------------
def check_output(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix not in OUTPUT_FORMATS:
        raise AezooError(f"--out {path}: the codes are written as {', '.join(OUTPUT_FORMATS)}; "
                         f"got {path.suffix or 'no suffix'}")
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise AezooError("writing .parquet files needs pyarrow: pip install 'aezoo[parquet]'") from None
    return path


def _parquet_bytes(fields: dict[str, np.ndarray]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns, shapes = {}, {}
    for name, a in fields.items():
        shapes[name] = list(a.shape[1:])
        if a.ndim == 1:
            columns[name] = pa.array(a)
        else:
            flat = np.ascontiguousarray(a.reshape(len(a), -1))
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    table = pa.table(columns).replace_schema_metadata({"aezoo": json.dumps({"shapes": shapes})})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_fields(fields: dict[str, np.ndarray], path: str | Path) -> Path:
    """Writes the fields as .npy (the codes alone), .npz or .parquet, atomically."""
    path = check_output(path)
    buf = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buf, primary(fields), allow_pickle=False)
        data = buf.getvalue()
    elif path.suffix == ".npz":
        np.savez(buf, **fields)
        data = buf.getvalue()
    else:
        data = _parquet_bytes(fields)
    atomic_write_bytes(path, data)
    return path


# --- reconstructions and interpolations --------------------------------------------------------------
def _images_only(model: Model) -> None:
    if len(model.config.data_shape) != 3:
        raise AezooError(f"{model.name} takes data of shape {tuple(model.config.data_shape)}, not images")


@torch.no_grad()
def reconstruct_grid(model: Model, x: torch.Tensor, per_row: int = 8) -> tuple[torch.Tensor, int]:
    """Images x (N, C, H, W) in [0, 1] above their reconstructions, rows of `per_row` (the last row padded
    with blank images): (images, row length) for `plots.save_image_grid`."""
    _images_only(model)
    recon = model.reconstruct(x).clamp(0, 1)
    per_row = min(per_row, len(x))
    rows = []
    for s in range(0, len(x), per_row):
        for batch in (x, recon):
            row = batch[s : s + per_row]
            rows.append(torch.cat([row, row.new_zeros(per_row - len(row), *row.shape[1:])]))
    return torch.cat(rows).cpu(), per_row


def _vq_latents(model: CodeModel, x: torch.Tensor) -> torch.Tensor:
    """The pre-quantisation latents interpolation runs along: the encoder output z_e (vqvae), or the
    bottom encoder's features h from which both levels are quantised (vqvae2)."""
    if isinstance(model, VQVAE2):
        return model.encoder_bottom(model._pad(x))
    if isinstance(model, VQVAE):
        return model.encoder(x)
    raise AezooError(f"interpolation is not defined for {model.name}'s codes")


def _vq_codes(model: CodeModel, z: torch.Tensor) -> list[torch.Tensor]:
    """The codes of pre-quantisation latents (nearest codes; for vqvae2 the top, then the bottom given it)."""
    if isinstance(model, VQVAE2):
        top = model.quantizer_top.assign(model.encoder_top(z))
        z_top = model.quantizer_top.lookup(top)
        bottom = model.quantizer_bottom.assign(model.bottom_in(torch.cat([z, model.decoder_top(z_top)], 1)))
        return [*model.quantizer_top.code_maps(top), *model.quantizer_bottom.code_maps(bottom)]
    return model.quantizer.code_maps(model.quantizer.assign(z))


@torch.no_grad()
def interpolation_strip(model: Model, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Image a, the decodings of `steps` points on the straight line from a's code to b's (both ends
    included), image b: (steps + 2, C, H, W) in [0, 1]. Codes: posterior means for VAEs, `encode` for
    other autoencoders; for VQ models the line runs between the pre-quantisation latents and each point
    is quantised to its nearest codes before decoding (`_vq_latents`)."""
    _images_only(model)
    if steps < 2:
        raise AezooError(f"--steps must be at least 2 (the two ends), got {steps}")
    x = torch.stack([a, b]).to(model.device)
    if isinstance(model, CodeModel):
        z = _vq_latents(model, x)
    else:
        z = model.posterior_moments(x)[0] if isinstance(model, LikelihoodBound) else model.encode(x)
    t = torch.linspace(0, 1, steps, device=z.device, dtype=z.dtype).view(steps, *([1] * (z.dim() - 1)))
    line = (1 - t) * z[:1] + t * z[1:]
    out = model.decode_codes(_vq_codes(model, line)) if isinstance(model, CodeModel) else model.decode(line)
    return torch.cat([x[:1], out.clamp(0, 1), x[1:]]).cpu()
