import pytest

from aezoo.config import DataConfig, TrainConfig, from_dict, make_run_config, merge, parse_overrides, read_config_file
from aezoo.errors import AezooError
from aezoo.models.vae import VAEConfig
from aezoo.registry import entry


def run_config(*sets, tree=None):
    return make_run_config("vae", VAEConfig, merge(tree or {}, parse_overrides(list(sets))))


def test_overrides_are_coerced_to_field_types():
    cfg = run_config("model.latent_dim=7", "model.hidden=[64, 32]", "train.lr=3e-4", "train.progress=false",
                     "train.betas=0.5,0.9", "data.binarize=dynamic")
    assert cfg.model.latent_dim == 7 and cfg.model.hidden == (64, 32)
    assert cfg.train.lr == 3e-4 and cfg.train.progress is False and cfg.train.betas == (0.5, 0.9)
    assert cfg.data.binarize == "dynamic"


def test_empty_tuple_and_integer_written_as_float():
    cfg = run_config("model.hidden=", "train.batch_size=1e2")
    assert cfg.model.hidden == () and cfg.train.batch_size == 100


@pytest.mark.parametrize("override, message", [
    ("model.latnt_dim=3", "did you mean 'model.latent_dim'"),
    ("modle.latent_dim=3", "did you mean 'model'"),
    ("train.lr=-1", "train.lr must be in (0, 10]"),
    ("train.lr=abc", "train.lr must be a number"),
    ("train.lr=nan", "finite"),
    ("train.batch_size=2.5", "must be an integer"),
    ("data.binarize=sometimes", "data.binarize must be one of none, dynamic, static"),
    ("model.likelihood=poisson", "model.likelihood must be one of"),
    ("train.betas=0.9,1.5", "train.betas"),
    ("train.progress=maybe", "true or false"),
    ("nodot", "key=value"),
    ("nodot=1", "section"),
])
def test_bad_values_are_refused_with_the_valid_range(override, message):
    with pytest.raises(AezooError) as e:
        run_config(override)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_config_file_toml_and_json(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nlatent_dim = 3\n[train]\nlr = 0.01\n')
    cfg = make_run_config("vae", VAEConfig, read_config_file(toml))
    assert cfg.model.latent_dim == 3 and cfg.train.lr == 0.01
    js = tmp_path / "c.json"
    js.write_text('{"model": {"latent_dim": "x"}}')
    with pytest.raises(AezooError, match="model.latent_dim must be an integer"):
        make_run_config("vae", VAEConfig, read_config_file(js))
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(AezooError, match="not valid TOML"):
        read_config_file(bad)
    with pytest.raises(AezooError, match="not found"):
        read_config_file(tmp_path / "missing.toml")


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].glob("configs/*.toml")):
        tree = read_config_file(path)
        name = tree.pop("model_name")
        make_run_config(name, entry(name).config_class, tree)


def test_from_dict_wrong_types_and_defaults():
    assert from_dict(DataConfig, {}) == DataConfig()
    with pytest.raises(AezooError, match="train.epochs must be an integer"):
        from_dict(TrainConfig, {"epochs": True}, prefix="train.")
    with pytest.raises(AezooError, match="must be a table"):
        from_dict(TrainConfig, [1, 2], prefix="train.")


def test_every_key_of_every_model_is_documented():
    """`aezoo config MODEL` is generated from the config classes: a key added without its comment fails here."""
    from aezoo.config_reference import format_reference, reference
    from aezoo.registry import MODELS, PRIORS

    undocumented = sorted({r.key if r.key.startswith(("data.", "train.", "eval.")) else f"{name}: {r.key}"
                           for name in [*MODELS, *PRIORS] for r in reference(name) if not r.meaning})
    assert not undocumented, undocumented
    table = format_reference("vae").splitlines()
    row = next(line for line in table if line.startswith("model.objective "))
    assert row.split()[:2] == ["model.objective", "beta"] and "beta | capacity | iwae" in row
    assert any(line.startswith("prior.num_classes ") for line in format_reference("pixelcnn").splitlines())
