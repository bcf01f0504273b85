"""The one registry of models: name -> (model class, config class, summary, default dataset).

A model file registers itself with `@register(...)`; from then on it is in `aezoo models`, the CLI,
`build`, `load`, the shared tests and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import from_dict, make_run_config
from .errors import AezooError, unknown_name
from .io import read_json


@dataclass(frozen=True)
class Entry:
    name: str
    model_class: type
    summary: str
    default_data: str
    tiny: dict  # a small config (model section) for fast tests and smoke runs

    @property
    def config_class(self):
        return self.model_class.config_class


MODELS: dict[str, Entry] = {}
# Stage-2 models (priors over a trained model's discrete codes, made by `aezoo train-prior`): built,
# trained, resumed and loaded by name like models, but not listed among them.
PRIORS: dict[str, Entry] = {}


def register(name: str, summary: str, default_data: str = "mnist", tiny: dict | None = None, prior: bool = False):
    """Class decorator: `@register("vae", "variational autoencoder", tiny={"hidden": (16,)})`."""

    def wrap(cls):
        cls.name = name
        (PRIORS if prior else MODELS)[name] = Entry(name, cls, summary, default_data, tiny or {})
        return cls

    return wrap


def entry(name: str) -> Entry:
    if name in PRIORS:
        return PRIORS[name]
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name]


def build(name: str, **config):
    """A fresh model: `aezoo.build("vae", latent_dim=10, data_shape=(1, 28, 28))`."""
    e = entry(name)
    cfg = from_dict(e.config_class, config, prefix="model.")
    return e.model_class(cfg)


def build_from_config(name: str, model_cfg):
    return entry(name).model_class(model_cfg)


def load(path: str | Path, device: str = "cpu"):
    """A model from a folder holding config.json and model.safetensors (a run folder or `model.save`)."""
    path = Path(path)
    if not path.is_dir():
        raise AezooError(f"{path}: not a run or model folder")
    tree = read_json(path / "config.json")
    name = tree.get("model_name")
    if not isinstance(name, str):
        raise AezooError(f"{path / 'config.json'}: no model_name")
    model = build(name, **(tree.get("model") or {}))
    model.load_weights_from(path / "model.safetensors")
    return model.to(device).eval()


def load_run_config(path: str | Path):
    """The whole RunConfig of a run folder, validated like a user's config."""
    tree = read_json(Path(path) / "config.json")
    name = tree.get("model_name")
    if not isinstance(name, str):
        raise AezooError(f"{Path(path) / 'config.json'}: no model_name")
    return make_run_config(name, entry(name).config_class, tree)
