"""The interface every model fills, and what all models share (saving, loading).

A model is an `nn.Module` built from its config alone (`Trainable`). `loss(x, step)` returns a `Loss`: the scalar to
minimise and its named terms (batch means of per-example sums). `step` is the training step, the one
input of every schedule a model has (k-sparse's k, the capacity C of Burgess et al., layer-wise
pretraining), so a loss is a pure function of its arguments and a resumed run follows the same
schedule. The training engine knows nothing else about a model. `encode` gives the representation a
user would embed (the posterior mean for VAEs), `decode` maps codes back to data space.

Inputs are float tensors as the data gives them: images in [0, 1] with channels first, a batch
(N, *data_shape) or one example (*data_shape), on the model's device. Every public method that takes
data (`DATA_METHODS`) checks that first (`check_input`, a few attribute reads) and refuses anything else
in one line: uint8 images, a missing channel axis, a tensor on another device. A model loaded for use
(`registry.load`, `aezoo.load`) is in eval mode with its parameters frozen (`for_inference`), so what
it returns carries no autograd graph; `model.train()` makes it trainable again.

What a model can do beyond that (generate, bound the likelihood, denoise, quantise, model sequences)
it declares by inheriting the types of `models.capabilities`; the command line and the evaluation
choose by those types.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
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

    def for_inference(self):
        """Eval mode with every parameter frozen (requires_grad False): outputs need no graph. Returns self."""
        self.eval()
        self.requires_grad_(False)
        self._frozen_for_inference = True
        return self

    def train(self, mode: bool = True):
        """nn.Module.train; switching a model frozen by `for_inference` to training mode unfreezes it (so a
        copy of a loaded model can be fine-tuned)."""
        super().train(mode)
        if mode and self.__dict__.get("_frozen_for_inference"):
            self.requires_grad_(True)
            self._frozen_for_inference = False
        return self

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)}" for f in dataclasses.fields(self.config))
        return f"{self.name}: {fields}" if self.name else fields


# The public methods whose first argument is data (N, *data_shape): `Model` checks it in each (`check_input`).
DATA_METHODS = ("encode", "reconstruct", "elbo_parts", "nll_iwae", "posterior_moments", "codes", "jump_errors")


def _shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _unbatch(out):
    """The one example of a batch of one: tensors, and tuples or lists of them."""
    if isinstance(out, torch.Tensor):
        return out[0]
    if isinstance(out, (tuple, list)):
        return type(out)(_unbatch(o) for o in out)
    return out


def _checking_input(method):
    """`method(self, x, ...)` with x checked first (`Model.check_input`); one example in, one out."""

    @functools.wraps(method)
    def checked(self, x, *args, **kwargs):
        single = self.check_input(x, method.__name__)
        if single:
            return _unbatch(method(self, x.unsqueeze(0), *args, **kwargs))
        return method(self, x, *args, **kwargs)

    checked.checks_input = True
    return checked


class Model(Trainable):
    """An autoencoder: subclasses set `config_class` and implement `loss`, `encode`, `decode`.

    Each subclass's `DATA_METHODS` check their input (`check_input`); `decode` checks only that its codes
    are floats on the model's device."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in DATA_METHODS:
            method = getattr(cls, name, None)
            skip = method is None or getattr(method, "__isabstractmethod__", False)
            if skip or getattr(method, "checks_input", False):
                continue
            setattr(cls, name, _checking_input(method))
        decode = cls.__dict__.get("decode")
        if decode is not None and not getattr(decode, "__isabstractmethod__", False):
            cls.decode = _checking_codes(decode)

    def check_input(self, x, method: str = "input") -> bool:
        """Refuses, in one line (AezooError), data the model cannot take: not a tensor, not floats (uint8
        images: divide by 255), a shape other than (N, *data_shape) or (*data_shape), another device.
        Returns True for one example without its batch axis. A sequence model takes any length T."""
        shape = self.config.data_shape
        if not isinstance(x, torch.Tensor):
            raise AezooError(f"{self._where(method)}: expected a torch tensor; got {type(x).__name__} "
                             "(torch.as_tensor(x))")
        images = len(shape) >= 3
        if not x.is_floating_point():
            what = "floats in [0, 1]" if images else "floats"
            fix = "divide by 255" if x.dtype == torch.uint8 and images else "x.float()"
            raise AezooError(f"{self._where(method)}: expected {what}; got {str(x.dtype).removeprefix('torch.')}: "
                             f"{fix}")
        free = self._free_axes()
        dims = x.dim()
        if (dims != len(shape) + 1 and dims != len(shape)) or tuple(x.shape[dims - len(shape) + free:]) != tuple(
                shape[free:]):
            one = ("T", *shape[1:]) if free else tuple(shape)
            raise AezooError(f"{self._where(method)}: expected {_shape_text(('N', *one))} or {_shape_text(one)}; "
                             f"got {_shape_text(tuple(x.shape))}")
        self._check_device(x, method)
        return dims == len(shape)

    def _where(self, method: str) -> str:
        return f"{self.name or type(self).__name__}.{method}"

    def _free_axes(self) -> int:
        """Leading axes of data_shape an input may change: a sequence model's time axis."""
        free = self.__dict__.get("_free")
        if free is None:
            from .capabilities import SequenceModel

            free = self.__dict__["_free"] = int(isinstance(self, SequenceModel))
        return free

    def _check_device(self, x: torch.Tensor, method: str) -> None:
        probe = self.__dict__.get("_device_probe")  # one parameter, kept: `self.device` walks the modules (~20 us)
        if probe is None:
            probe = self.__dict__["_device_probe"] = next(self.parameters())
        if x.device != probe.device:
            raise AezooError(f"{self._where(method)}: the model is on {probe.device}, the input on {x.device}: "
                             "x.to(model.device)")

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


def _checking_codes(decode):
    """`decode(self, z)` with z checked to be floats on the model's device."""

    @functools.wraps(decode)
    def checked(self, z, *args, **kwargs):
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            what = str(z.dtype).removeprefix("torch.") if isinstance(z, torch.Tensor) else type(z).__name__
            raise AezooError(f"{self._where('decode')}: expected float codes as encode gives them; got {what}")
        self._check_device(z, "decode")
        return decode(self, z, *args, **kwargs)

    return checked


def interleave_rows(*batches: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Images of each batch in alternating rows of `per_row` (originals above their reconstructions)."""
    per_row = min(per_row, len(batches[0]))
    n = len(batches[0]) // per_row * per_row
    rows = [b[:n].reshape(-1, per_row, *b.shape[1:]) for b in batches]
    return torch.stack(rows, 1).reshape(-1, *batches[0].shape[1:])


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise AezooError(f"sampling temperature must be > 0, got {temperature}")
