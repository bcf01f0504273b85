"""The interface every model fills, and what all models share (saving, loading).

A model is an `nn.Module` built from its config alone (`Trainable`). `loss(x, step)` returns a `Loss`: the scalar to
minimise and its named terms (batch means of per-example sums). `step` is the training step, the one
input of every schedule a model has (k-sparse's k, the capacity C of Burgess et al., layer-wise
pretraining), so a loss is a pure function of its arguments and a resumed run follows the same
schedule. The training engine knows nothing else about a model. `encode` gives the representation a
user would embed (the posterior mean for VAEs), `decode` maps codes back to data space.

What a model can do beyond that (generate, bound the likelihood, denoise, quantise, model sequences)
it declares by inheriting the types of `models.capabilities`; the command line and the evaluation
choose by those types.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, to_dict
from ..errors import AezooError
from ..files import load_weights, read_json, save_weights, write_json


@dataclass
class Loss:
    """`total` is minimised; `terms` are its named parts and diagnostics (scalars), e.g. recon and kl."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class Trainable(nn.Module, metaclass=abc.ABCMeta):
    """What the engine trains: built from its config alone, `loss(x, step)`, saved and loaded with its
    config. The autoencoders are `Model`s; a prior over code maps (stage 2) is only trainable."""

    config_class: type[ModelConfig] = ModelConfig
    name: str = ""  # set by the registry
    config_section: str = "model"  # the config's section for this model's keys, set by the registry

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # --- what each model provides ---------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, x: torch.Tensor, step: int = 0) -> Loss:
        """The training objective on batch x (B, *data_shape) at training step `step`."""

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named image batches (N, C, H, W) in [0, 1] for the report, from a batch of test data."""
        return {}

    def on_train_start(self, x: torch.Tensor) -> None:
        """Called once with the first training batch of a fresh run (data-dependent initialisation)."""

    @property
    def skips_parameters(self) -> bool:
        """True when some steps leave parameters without a gradient (DDP must then look for them)."""
        return False

    # --- shared ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, path: str | Path) -> None:
        """Writes `config.json` and `model.safetensors` into the folder `path`. A run folder's
        config.json (the whole run) is kept when it describes this very model; any other is replaced
        by this model's, so the folder always loads as what was saved."""
        path = Path(path)
        config_path = path / "config.json"
        mine = {"model_name": self.name, self.config_section: to_dict(self.config)}
        if config_path.is_file():
            try:
                old = read_json(config_path)
            except AezooError:
                old = {}
            section = self.config_section
            if old.get("model_name") == self.name and old.get(section) == mine[section]:
                mine = None
        save_weights(path / "model.safetensors", self.state_dict())
        if mine is not None:
            write_json(config_path, mine)

    def load_weights_from(self, path: str | Path) -> None:
        state = load_weights(path)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise AezooError(f"{path}: tensors do not match the config ({first})") from None

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)}" for f in dataclasses.fields(self.config))
        return f"{self.name}: {fields}" if self.name else fields


class Model(Trainable):
    """An autoencoder: subclasses set `config_class` and implement `loss`, `encode`, `decode`."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The representation of x to embed, (B, ...)."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Data-space means (B, *data_shape) of codes z as `encode` gives them."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            return {}
        x = x[:32]
        return {"reconstructions": interleave_rows(x, self.reconstruct(x).clamp(0, 1))}


def interleave_rows(*batches: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Images of each batch in alternating rows of `per_row` (originals above their reconstructions)."""
    per_row = min(per_row, len(batches[0]))
    n = len(batches[0]) // per_row * per_row
    rows = [b[:n].reshape(-1, per_row, *b.shape[1:]) for b in batches]
    return torch.stack(rows, 1).reshape(-1, *batches[0].shape[1:])


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise AezooError(f"sampling temperature must be > 0, got {temperature}")
