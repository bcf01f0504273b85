"""Keys used only under a setting of their section (`config.used_when`): declared once, read by `aezoo config`
and by the report (`config_reference.run_keys`)."""

import dataclasses

import pytest

from aezoo.config import TrainConfig, is_used, used_when
from aezoo.config_reference import format_reference, run_keys
from aezoo.quantize import QuantizerConfig


def field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize(("cls", "name", "section", "used"), [
    (TrainConfig, "momentum", {"optimizer": "adam"}, False),
    (TrainConfig, "momentum", {"optimizer": "sgd"}, True),
    (TrainConfig, "betas", {"optimizer": "adamw"}, True),
    (TrainConfig, "betas", {"optimizer": "sgd"}, False),
    (TrainConfig, "eps", {"optimizer": "sgd"}, False),
    (TrainConfig, "eps", {"optimizer": "adagrad"}, True),
    (TrainConfig, "epochs", {"steps": 0}, True),
    (TrainConfig, "epochs", {"steps": 500}, False),
    (TrainConfig, "lr", {"optimizer": "sgd"}, True),  # no condition
    (QuantizerConfig, "fsq_levels", {"quantizer": "vq"}, False),
    (QuantizerConfig, "fsq_levels", {"quantizer": "fsq"}, True),
    (QuantizerConfig, "ema_decay", {"quantizer": "rvq", "codebook_update": "ema"}, True),
    (QuantizerConfig, "ema_decay", {"quantizer": "vq", "codebook_update": "gradient"}, False),  # both must hold
    (QuantizerConfig, "ema_decay", {"quantizer": "gumbel", "codebook_update": "ema"}, False),
    (QuantizerConfig, "codebook_size", {"quantizer": "fsq"}, False),
    (QuantizerConfig, "rvq_dropout", {}, True),  # the condition's key is missing: shown
])
def test_is_used(cls, name, section, used):
    assert is_used(field(cls, name), section) is used


def test_booleans_are_compared_as_config_json_writes_them():
    @dataclasses.dataclass
    class C:
        finetune: bool = False
        epochs: int = used_when(5, "finetune=true")

    assert is_used(field(C, "epochs"), {"finetune": True}) and not is_used(field(C, "epochs"), {"finetune": False})


def test_a_malformed_condition_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match="key=a|b or key!=a"):
        used_when(1, "quantizer in (vq, rvq)")


def test_aezoo_config_says_when_a_key_is_used():
    rows = {line.split()[0]: line for line in format_reference("vqvae").splitlines()}
    assert rows["model.fsq_levels"].endswith("(used when model.quantizer=fsq)")
    assert rows["model.ema_decay"].endswith("(used when model.quantizer=vq|rvq; model.codebook_update=ema)")
    assert rows["train.momentum"].endswith("(used when train.optimizer=sgd)")
    assert "used when" not in rows["train.lr"]


def test_run_keys_mark_the_unused_and_the_changed():
    tree = {"model_name": "vqvae",
            "model": {"quantizer": "vq", "fsq_levels": [8, 5, 5, 5], "hidden": 32, "beta": 0.25},
            "train": {"optimizer": "sgd", "momentum": 0.9, "betas": [0.9, 0.999], "lr": 0.01, "retired_key": 3}}
    keys = {k.key: k for k in run_keys(tree)}
    assert not keys["model.fsq_levels"].used and keys["model.beta"].used
    assert keys["train.momentum"].used and not keys["train.betas"].used
    assert keys["model.hidden"].changed and keys["train.lr"].changed
    assert not keys["model.beta"].changed and not keys["model.fsq_levels"].changed  # a list equals its tuple default
    assert keys["train.retired_key"].used and keys["train.retired_key"].default is None
    assert not keys["train.retired_key"].changed
    assert "model_name" not in keys


def test_run_keys_of_an_unknown_model_are_all_shown():
    keys = run_keys({"model_name": "no_such_model", "model": {"a": 1}, "train": {"momentum": 0.9, "optimizer": "adam"}})
    assert [k.used for k in keys] == [True, True, True]
