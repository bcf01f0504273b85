"""The one registry of models: name -> (model class, config class, summary, default dataset).

A model file registers itself with `@register(...)`; from then on it is in `aezoo models`, the CLI,
`build`, `load`, the shared tests and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import zoo
from .config import RunConfig, from_dict, make_run_config
from .errors import AezooError, unknown_name
from .files import read_json


@dataclass(frozen=True)
class Entry:
    name: str
    model_class: type
    summary: str
    default_data: str
    tiny: dict  # a small config (model section) for fast tests and smoke runs
    prior: bool = False  # a stage-2 prior: its config section is `prior`, not `model`

    @property
    def config_class(self):
        return self.model_class.config_class

    @property
    def section(self) -> str:
        return "prior" if self.prior else "model"

    def run_config(self, tree: dict) -> RunConfig:
        """A validated RunConfig for this model from a config tree (its own keys under `section`)."""
        return make_run_config(self.name, self.config_class, tree, self.section)


MODELS: dict[str, Entry] = {}
# Stage-2 models (priors over a trained model's discrete codes, made by `aezoo train-prior`): built,
# trained, resumed and loaded by name like models, but not listed among them.
PRIORS: dict[str, Entry] = {}


def register(name: str, summary: str, default_data: str = "mnist", tiny: dict | None = None, prior: bool = False):
    """Class decorator: `@register("vae", "variational autoencoder", tiny={"hidden": (16,)})`."""

    def wrap(cls):
        e = Entry(name, cls, summary, default_data, tiny or {}, prior)
        cls.name, cls.config_section = name, e.section
        (PRIORS if prior else MODELS)[name] = e
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
    return e.model_class(from_dict(e.config_class, config, prefix=e.section + "."))


def build_from_config(name: str, model_cfg):
    return entry(name).model_class(model_cfg)


def load(path: str | Path, device: str = "cpu"):
    """A model from a folder holding config.json and model.safetensors (a run folder or `model.save`),
    or a zoo entry's name (`aezoo zoo`)."""
    path = zoo.resolve(path)
    if not path.is_dir():
        raise AezooError(f"{path}: not a run or model folder")
    name, tree = _read_config(path)
    model = build(name, **(tree.get(entry(name).section) or {}))
    model.load_weights_from(path / "model.safetensors")
    return model.to(device).for_inference()  # eval mode, parameters frozen


def load_run_config(path: str | Path) -> RunConfig:
    """The whole RunConfig of a run folder, validated like a user's config."""
    name, tree = _read_config(Path(path))
    return entry(name).run_config(tree)


def _read_config(folder: Path) -> tuple[str, dict]:
    """(model name, config tree) of folder/config.json."""
    tree = read_json(folder / "config.json")
    name = tree.get("model_name")
    if not isinstance(name, str):
        raise AezooError(f"{folder / 'config.json'}: no model_name")
    return name, tree
