"""The interface every model fills, and what all models share (saving, loading, a step counter).

A model is an `nn.Module` built from its config alone. Its `loss(x)` returns a `Loss`: the scalar to
minimise and its named terms (batch means of per-example sums). The training engine knows nothing
else about it. `encode` gives the representation a user would embed (the posterior mean for VAEs),
`decode` maps codes back to data space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, to_dict
from ..errors import AezooError
from ..io import load_weights, save_weights, write_json


@dataclass
class Loss:
    """`total` is minimised; `terms` are its named parts and diagnostics (scalars), e.g. recon and kl."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class Model(nn.Module):
    """Base class. Subclasses set `config_class` and implement `loss`, `encode`, `decode`."""

    config_class: type[ModelConfig] = ModelConfig
    name: str = ""  # set by the registry

    @property
    def skips_parameters(self) -> bool:
        """True when some steps leave parameters without a gradient (DDP must then look for them)."""
        return False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # The training step, set by the engine before each loss, for models with schedules
        # (k-sparse's k, beta-VAE's capacity). A plain attribute: resume sets it again.
        self.step = 0

    # --- what each model provides ---------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> Loss:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def visuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named image batches (N, C, H, W) in [0, 1] for the report, from a batch of test data."""
        if x.dim() != 4:
            return {}
        x = x[:32]
        return {"reconstructions": interleave_rows(x, self.reconstruct(x).clamp(0, 1))}

    def on_train_start(self, x: torch.Tensor) -> None:
        """Called once with the first training batch of a fresh run (data-dependent initialisation)."""

    # --- shared ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, path: str | Path) -> None:
        """Writes `config.json` and `model.safetensors` into the folder `path`."""
        path = Path(path)
        save_weights(path / "model.safetensors", self.state_dict())
        config_path = path / "config.json"
        if not config_path.exists():  # a run folder's config.json (the whole run) is kept as it is
            write_json(config_path, {"model_name": self.name, "model": to_dict(self.config)})

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


def interleave_rows(*batches: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Images of each batch in alternating rows of `per_row` (originals above their reconstructions)."""
    per_row = min(per_row, len(batches[0]))
    n = len(batches[0]) // per_row * per_row
    rows = [b[:n].reshape(-1, per_row, *b.shape[1:]) for b in batches]
    return torch.stack(rows, 1).reshape(-1, *batches[0].shape[1:])
