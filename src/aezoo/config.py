"""Dataclass configs: the single source of truth for a model and a run.

A run's config is a tree with four sections, `model`, `data`, `train` and `eval`; every key can be set
from a file (`--config FILE`, TOML or JSON) or on the command line (`--set model.beta=4`). Each field
may carry its valid choices or range in its metadata (see `choice` and `number`); `validate` checks
them all and names the valid range, and a mistyped key gets the closest valid name suggested.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AezooError, unknown_name


def choice(default, *options, when: str | None = None):
    """A field whose value must be one of `options` (the default included); `when`: see `used_when`."""
    return field(default=default, metadata={"choices": (default, *options), **_when(when)})


def number(default, lo=None, hi=None, *, lo_open=False, hi_open=False, when: str | None = None):
    """A numeric field within [lo, hi] (or an open end where asked); None means unbounded. `when`: see
    `used_when`."""
    return field(default=default, metadata={"range": (lo, hi, lo_open, hi_open), **_when(when)})


def used_when(default, when: str):
    """A field that matters only under a setting of its section, `when`: "key=a|b" (key is one of a, b) or
    "key!=a", several joined by "; " (all must hold), values as config.json writes them (true, false).
    The report leaves a key out when it does not hold, and `aezoo config` says when each is used."""
    return field(default=default, metadata=_when(when))


def _when(when: str | None) -> dict:
    if when is None:
        return {}
    for condition in when.split("; "):
        if not re.fullmatch(r"\w+!?=[\w.|-]+", condition):
            raise ValueError(f"a 'when' condition is key=a|b or key!=a, got {condition!r}")  # a config class bug
    return {"when": when}


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def is_used(f: dataclasses.Field, section: dict) -> bool:
    """Whether field `f` matters given the values of its section (`section`: name -> value, as config.json
    holds them); a field without a `when` always does, and so does one whose condition names a missing key."""
    for condition in f.metadata.get("when", "").split("; ") if "when" in f.metadata else ():
        key, op, values = re.fullmatch(r"(\w+)(!?=)(.+)", condition).groups()
        if key not in section:
            continue
        if (_text(section[key]) in values.split("|")) != (op == "="):
            return False
    return True


@dataclass
class ModelConfig:
    """Base of every model's config. `data_shape` is filled from the dataset when a run is made."""

    data_shape: tuple[int, ...] = (1, 28, 28)  # one example's shape: set from the data when a run is made

    def fit_to_data(self, shape: tuple[int, ...], size: int, values: str) -> None:
        """Fills in what the data decides, when a run is made: the shape of one example, and in
        subclasses the defaults chosen from the data. `size` is the number of training examples, `values`
        what they are (`data.base.value_kind`: binary, 8bit, unit or real)."""
        self.data_shape = tuple(shape)

    def validate(self) -> None:
        """Raises AezooError for values that are invalid together (called once data_shape is known too)."""


@dataclass
class DataConfig:
    name: str = "mnist"  # the dataset (`aezoo datasets` lists them)
    dir: str = ""  # a folder of raw files that takes precedence over the bundled copy
    # dynamic: each pixel drawn 0/1 with its grey level as probability, anew for every batch; static: once
    binarize: str = choice("none", "dynamic", "static")
    train_split: str = choice("train", "train+val")  # train+val: the 60k MNIST training images
    limit: int = number(0, 0)  # use only the first N examples of each split (0: all)
    pad_to: int = number(0, 0)  # zero-pad images to pad_to x pad_to (0: as they are)
    file: str = used_when("", "name=arrays|sequences")  # an array file, for datasets read from one
    # scale and centre-crop each image to S x S (0: all share one size)
    image_size: int = number(0, 0, when="name=images")
    # read arrays from disk as batches need them instead of into memory: auto (.npy data of 256 MiB or more,
    # image folders whose pixels would take that much, through a uint8 cache), on (always), off (never)
    memmap: str = choice("auto", "on", "off")
    # where image folders' uint8 caches are kept ("": ~/.cache/aezoo, or $XDG_CACHE_HOME/aezoo)
    cache_dir: str = used_when("", "name=images")


@dataclass
class TrainConfig:
    epochs: int = number(10, 1, when="steps=0")  # passes over the training split (unless train.steps is set)
    steps: int = number(0, 0)  # when > 0, train for this many steps instead of epochs
    batch_size: int = number(100, 1)  # examples per step, over all processes
    optimizer: str = choice("adam", "adamw", "sgd", "adagrad")  # torch's Adam, AdamW, SGD with momentum or Adagrad
    lr: float = number(1e-3, 0.0, 10.0, lo_open=True)  # learning rate (scaled by train.schedule)
    betas: tuple[float, float] = used_when((0.9, 0.999), "optimizer=adam|adamw")  # Adam's moment decays
    eps: float = number(1e-8, 0.0, 1.0, lo_open=True, when="optimizer!=sgd")  # Adam's and Adagrad's epsilon
    momentum: float = number(0.9, 0.0, 1.0, when="optimizer=sgd")  # SGD's momentum
    weight_decay: float = number(0.0, 0.0)  # L2 penalty (decoupled for adamw)
    # burda2015: stage i lasts 3^i epochs at lr * 10^(-i/7) (Burda et al. 2016, sec. 5)
    schedule: str = choice("constant", "cosine", "linear", "burda2015")
    warmup_steps: int = number(0, 0)  # steps of linear learning-rate warm-up from 0
    grad_clip: float = number(0.0, 0.0)  # max global gradient norm (0: off)
    seed: int = 0  # initial weights, batches and noise: the same seed gives the same run
    device: str = "auto"  # auto (CUDA when there is one), cpu, cuda, or cuda:N for one GPU
    log_every: int = number(50, 1)  # steps between train lines in metrics.jsonl
    checkpoint_every: int = number(1000, 1)  # steps between checkpoints (one is also written at the end)
    val_every: int = number(0, 0)  # steps between validation passes (0: once an epoch)
    progress: bool = True  # show progress on stderr (a bar on a terminal, periodic lines otherwise)
    # jsonl: metrics.jsonl only; tensorboard: also TensorBoard event files in RUN/tensorboard (aezoo[tensorboard])
    log: str = choice("jsonl", "tensorboard")
    # Mixed precision: autocast to bf16, or fp16 with a gradient scaler (GPU); fp32 is exact resume's home.
    precision: str = choice("fp32", "bf16", "fp16")
    # torch's fused optimiser: the same update in one kernel per parameter instead of ~7 (faster: see
    # bench/speed_paths.py); its rounding differs from the unfused loop's in the last bits
    fused_optimizer: bool = True

    def __post_init__(self):
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise AezooError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise AezooError(f"train.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass
class EvalConfig:
    split: str = choice("test", "val", "train")  # the split evaluated
    batch_size: int = number(500, 1)  # examples per evaluation batch
    nll_k: int = number(100, 1)  # importance samples for the IWAE estimate of -log p(x)
    # decoder evaluations held at once by the IWAE estimate (a 64x64 conv decoder holds ~0.5 MB per evaluation)
    nll_batch: int = number(5_000, 1)
    limit: int = number(0, 0)  # evaluate on the first N examples only (0: all)
    metric_samples: int = number(10_000, 100)  # images drawn from the factor grid for the disentanglement metrics
    probe_train: int = number(10_000, 0)  # training examples the feature probes (linear, k-NN) learn from (0: all)
    # papers: each metric as its paper defines it; dlib: disentanglement_lib's estimators (Locatello et al. 2019)
    metric_protocol: str = choice("papers", "dlib")
    # fine-tune a classifier (encoder + softmax layer) from the trained encoder and from scratch, and fit logistic
    # regression on the frozen codes of the whole training split (slow: off by default; evaluation/finetune.py)
    finetune: bool = False
    # most epochs of fine-tuning (early stopping on the validation split)
    finetune_epochs: int = number(50, 1, when="finetune=true")
    # epochs without a better validation error before fine-tuning stops
    finetune_patience: int = number(5, 1, when="finetune=true")
    # plain SGD's learning rate (as the papers)
    finetune_lr: float = number(0.1, 0.0, 10.0, lo_open=True, when="finetune=true")
    finetune_batch_size: int = number(20, 1, when="finetune=true")  # examples per SGD step of fine-tuning
    # also train the same network from random weights, the baseline of fine-tuning (off: models sharing one
    # architecture need it once)
    finetune_scratch: bool = used_when(True, "finetune=true")


@dataclass
class RunConfig:
    model_name: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------------
# Reading values


def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _number(value, key: str, kind: str) -> int | float:
    """An int or float from a number or its text ('1e-3', '10_000'); bools and the rest are refused."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                pass
    raise AezooError(f"{key} must be {kind}, got {value!r}")


def _coerce(value, annotation, key: str):
    """Turn `value` (from JSON, TOML or a --set string) into `annotation`, or raise a one-line error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or value == "none":
            return None
        return _coerce(value, options[0], key)
    if origin is tuple:
        args = typing.get_args(annotation)
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            value = [v for v in (p.strip() for p in text.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise AezooError(f"{key} must be a list, got {value!r}")
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item, key) for v in value)
        if len(value) != len(args):
            raise AezooError(f"{key} must have {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise AezooError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        number_ = _number(value, key, "an integer")
        if isinstance(number_, float) and not (math.isfinite(number_) and number_.is_integer()):
            raise AezooError(f"{key} must be an integer, got {value!r}")
        return int(number_)
    if annotation is float:
        number_ = float(_number(value, key, "a number"))
        if not math.isfinite(number_):
            raise AezooError(f"{key} must be a finite number, got {value!r}")
        return number_
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise AezooError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise AezooError(f"{key}: unsupported type {annotation}")  # a config class bug, not user input


def _check_field(f: dataclasses.Field, value, key: str) -> None:
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise AezooError(f"{key} must be one of {', '.join(map(str, f.metadata['choices']))}; got {value!r}")
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
            hi is not None and (value > hi or (hi_open and value == hi))
        )
        if bad:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            raise AezooError(f"{key} must be in {left}{lo_s}, {hi_s}{right}; got {value!r}")


def from_dict(cls, values: dict, prefix: str = ""):
    """Build dataclass `cls` from a (possibly partial) nested dict, checking names, types and ranges."""
    if not isinstance(values, dict):
        raise AezooError(f"{prefix.rstrip('.') or 'config'} must be a table of keys, got {values!r}")
    types_ = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = prefix + str(name)
        if name not in fields:
            raise unknown_name("config key", key, [prefix + n for n in fields])
        if dataclasses.is_dataclass(types_[name]):
            raise AezooError(f"section {key} cannot be set here")
        kwargs[name] = _coerce(value, types_[name], key)
        _check_field(fields[name], kwargs[name], key)
    try:
        out = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise AezooError(f"{prefix.rstrip('.') or 'config'}: {e}") from None
    validate = getattr(out, "validate", None)
    if validate is not None:
        validate()
    return out


def to_dict(cfg) -> dict:
    """A JSON-ready nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# The model's own section is `model`, or `prior` for the priors of stage 2 (`aezoo train-prior`).
MODEL_SECTIONS = ("model", "prior")
SECTIONS = (*MODEL_SECTIONS, "data", "train", "eval")


def make_run_config(model_name: str, model_cls, tree: dict, section: str = "model") -> RunConfig:
    """A RunConfig from a nested dict {section: {...}, "data": {...}, ...}, `section` the name of the
    model's own section; missing keys take defaults."""
    names = (section, "data", "train", "eval")
    extra = set(tree) - set(names) - {"model_name"}
    if extra:
        raise unknown_name("config section", sorted(extra)[0], names)
    parts = {"model": from_dict(model_cls, tree.get(section, {}) or {}, prefix=section + ".")}
    for name, cls in (("data", DataConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        parts[name] = from_dict(cls, tree.get(name, {}) or {}, prefix=name + ".")
    return RunConfig(model_name=model_name, **parts)


def run_tree(cfg: RunConfig, section: str = "model") -> dict:
    """The nested dict of a RunConfig as config.json holds it, the model's keys under `section`."""
    tree = to_dict(cfg)
    tree[section] = tree.pop("model")
    return tree


def parse_overrides(pairs: list[str]) -> dict:
    """['model.beta=4', 'train.lr=1e-3'] -> {'model': {'beta': '4'}, 'train': {'lr': '1e-3'}}."""
    tree: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise AezooError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        section, _, name = key.strip().partition(".")
        if section not in SECTIONS:
            raise unknown_name("config section", section, SECTIONS)
        if not name:
            raise AezooError(f"--set expects section.key=value, got {pair!r}")
        tree.setdefault(section, {})[name] = value.strip()
    return tree


def merge(base: dict, update: dict) -> dict:
    """Nested dict merge; values in `update` win."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict:
    """A config tree from a TOML or JSON file."""
    from .files import reading

    path = Path(path)
    if not path.is_file():
        raise AezooError(f"config file not found: {path}")
    if path.suffix not in (".toml", ".json"):
        raise AezooError(f"{path}: config files are .toml or .json")
    with reading(path, f"not valid {path.suffix[1:].upper()}"):
        text = path.read_text(encoding="utf-8")
        tree = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(tree, dict):
        raise AezooError(f"{path}: expected a JSON object at the top")
    return tree
