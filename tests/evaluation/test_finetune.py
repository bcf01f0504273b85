"""Fine-tuning evaluation (`evaluation.finetune`): gradients through the encoder, a fresh network that
shares nothing, the trained model left alone, early stopping's best epoch, a separable problem solved,
and the config's and the model's errors in one line."""

import copy
import json

import pytest
import torch

import aezoo
from aezoo.config import make_run_config
from aezoo.data import Batches, Dataset
from aezoo.errors import AezooError
from aezoo.evaluation import finetune as ft
from aezoo.evaluation.base import EvalContext
from aezoo.evaluation.finetune import EarlyStopping, classifier, finetune, finetune_and_scratch, fit_classifier
from aezoo.glossary import KEYS
from aezoo.registry import entry
from conftest import run_cli


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 12-dimensional vectors in [0, 1], each class lit on its own four dimensions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 12, generator=g)
    x[torch.arange(n)[:, None], 4 * y[:, None] + torch.arange(4)] += 0.7
    return x, y


def dataset() -> Dataset:
    splits = {"train": separable(90, 0), "val": separable(30, 1), "test": separable(30, 2)}
    return Dataset("separable", {s: v[0] for s, v in splits.items()}, labels={s: v[1] for s, v in splits.items()},
                   kind="vector")


def test_gradient_reaches_every_encoder_layer():
    model = aezoo.build("dae", data_shape=(12,), hidden=(16, 16), latent_dim=8)
    x = torch.rand(5, 12)
    net = classifier(model, x, 3, seed=0)
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 0, 1])).backward()
    encoder = dict(model.encoder.named_parameters())
    assert len(encoder) == 6  # three linear layers, weights and biases
    for name, p in encoder.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.decoder.parameters())


def test_a_loaded_models_copy_is_fine_tuned_through_every_encoder_layer():
    ds = dataset()
    model = aezoo.build("ae", data_shape=(12,), hidden=(16,), latent_dim=8).for_inference()  # as registry.load
    net = classifier(copy.deepcopy(model), ds.x["train"], 3, seed=0)
    fit_classifier(net, Batches(ds, "train", 10, seed=0), Batches(ds, "val", 30, shuffle=False), epochs=1,
                   patience=1, lr=0.5)
    for (name, before), after in zip(model.encoder.named_parameters(), net.encoder.encoder.parameters()):
        assert not torch.equal(before, after), name


@pytest.mark.parametrize("name", ["ae", "dae", "sparse_ae", "ksparse_ae", "cae"])
def test_fresh_copy_shares_nothing(name):
    model = aezoo.build(name, data_shape=(12,), hidden=(16,), latent_dim=8, **({"k": 2} if name == "ksparse_ae"
                                                                                 else {}))
    fresh = model.fresh()
    assert type(fresh) is type(model) and fresh.config == model.config and fresh.config is not model.config
    theirs = {p.data_ptr() for p in model.state_dict().values()}
    assert not theirs & {p.data_ptr() for p in fresh.state_dict().values()}
    for (key, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        if a.std() > 0:  # biases may start at one constant
            assert not torch.equal(a, b), key


def test_finetuning_leaves_the_trained_model_untouched_and_solves_a_separable_problem():
    ds = dataset()
    model = aezoo.build("ae", data_shape=(12,), hidden=(), latent_dim=8, code_activation="sigmoid")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = Batches(ds, "train", 10, seed=0)
    val, test = (Batches(ds, s, 30, shuffle=False) for s in ("val", "test"))
    out = finetune_and_scratch(model, train, val, test, epochs=15, patience=15, lr=2.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for name in ("finetune", "scratch"):
        assert out[f"{name}_test_error"] == 0.0 and out[f"{name}_val_error"] == 0.0
        assert 1 <= out[f"{name}_best_epoch"] <= out[f"{name}_epochs_run"] == 15
    again = finetune_and_scratch(model, train, val, test, epochs=3, patience=3, lr=0.1)
    assert again == finetune_and_scratch(model, train, val, test, epochs=3, patience=3, lr=0.1)  # deterministic


def test_one_architecture_one_baseline_so_it_can_be_skipped():
    """ae, dae, cae and sparse_ae of one shape train the same fresh network: eval.finetune_scratch=false
    loses nothing where another of them measured it, and leaves the fine-tuned numbers as they were."""
    ds = dataset()
    train = Batches(ds, "train", 10, seed=0)
    val, test = (Batches(ds, s, 30, shuffle=False) for s in ("val", "test"))
    shape = {"data_shape": (12,), "hidden": (), "latent_dim": 8, "code_activation": "sigmoid"}
    results = {}
    for seed, name in enumerate(("ae", "dae", "cae", "sparse_ae")):
        torch.manual_seed(seed)  # different weights for each model, as if each were pretrained apart
        results[name] = finetune_and_scratch(aezoo.build(name, **shape), train, val, test, epochs=2, patience=2,
                                             lr=0.3)
    scratch = {name: {k: v for k, v in r.items() if k.startswith("scratch_")} for name, r in results.items()}
    assert len(scratch["ae"]) == 4 and all(s == scratch["ae"] for s in scratch.values())
    torch.manual_seed(2)  # cae's weights above
    alone = finetune_and_scratch(aezoo.build("cae", **shape), train, val, test, epochs=2, patience=2, lr=0.3,
                                 scratch=False)
    assert alone == {k: v for k, v in results["cae"].items() if k.startswith("finetune_")}


def test_early_stopping_keeps_the_best_epoch():
    net = torch.nn.Linear(1, 1, bias=False)
    stop = EarlyStopping(patience=2)
    errors = [0.5, 0.3, 0.4, 0.2, 0.2, 0.25, 0.1]
    stopped = None
    for epoch, error in enumerate(errors, 1):
        net.weight.data.fill_(epoch)
        if stop.update(epoch, error, net):
            stopped = epoch
            break
    assert stopped == 6  # epochs 5 and 6 did not beat epoch 4 (a tie is no improvement)
    assert stop.best_epoch == 4 and stop.best_error == 0.2
    assert float(stop.best_state["weight"]) == 4.0  # that epoch's weights, not the last ones


def test_fit_classifier_returns_the_best_validation_epochs_weights(monkeypatch):
    ds = dataset()
    net = classifier(aezoo.build("ae", data_shape=(12,), hidden=(), latent_dim=8), ds.x["train"], 3, seed=0)
    scripted, seen = iter([0.5, 0.2, 0.4, 0.3, 0.1]), []

    def scripted_error(net, batches):  # the validation errors of a constructed run, and each epoch's weights
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(ft, "error_rate", scripted_error)
    out = fit_classifier(net, Batches(ds, "train", 10, seed=0), Batches(ds, "val", 30, shuffle=False), epochs=5,
                         patience=2, lr=0.5)
    assert out == {"val_error": 0.2, "best_epoch": 2, "epochs_run": 4}  # epochs 3 and 4 did not beat 0.2
    assert len(seen) == 4 and not torch.equal(seen[1]["out.weight"], seen[3]["out.weight"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, seen[1][k]), k  # epoch 2's weights, not the last epoch's


def context(name: str, **eval_keys) -> EvalContext:
    cfg = make_run_config(name, entry(name).config_class,
                          {"model": {"data_shape": [12]}, "eval": {"finetune": True, **eval_keys}})
    model = aezoo.build(name, data_shape=(12,), **({"hidden": (16,), "latent_dim": 4} if name == "vae" else {}))
    return EvalContext(model, dataset(), cfg, "test", run=None)


def test_finetune_needs_an_encoder_and_a_labelled_validation_split():
    with pytest.raises(AezooError, match="vae has none") as e:
        finetune(context("vae"))
    assert "\n" not in str(e.value)
    ctx = context("ae")
    del ctx.dataset.labels["val"]
    with pytest.raises(AezooError, match="labelled validation") as e:
        finetune(ctx)
    assert "\n" not in str(e.value)
    ctx = context("ae")
    ctx.cfg.eval.finetune = False
    assert finetune(ctx) == {}


@pytest.mark.parametrize("setting", ["eval.finetune_lr=0", "eval.finetune_epochs=0", "eval.finetune_patience=-1",
                                     "eval.finetune_batch_size=0"])
def test_bad_finetune_config_is_one_line(tmp_path, setting):
    code, _, err = run_cli("train", "ae", "--out", str(tmp_path / "run"), "--steps", "1", "--set", setting)
    assert code == 2  # refused as a usage error, before anything is made
    assert len(err.strip().splitlines()) == 1 and setting.split("=")[0] in err


@pytest.mark.slow
def test_eval_writes_the_finetune_keys(tmp_path):
    run = tmp_path / "ae"
    code, _, err = run_cli("train", "ae", "--out", str(run), "--steps", "10", "--set", "data.limit=200",
                           "--set", "model.latent_dim=16", "--set", "train.progress=false",
                           "--set", "eval.finetune=true", "--set", "eval.finetune_epochs=2")
    assert code == 0, err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    results = json.loads((run / "eval.json").read_text())
    for prefix in ("finetune", "scratch"):
        assert 0.0 <= results[f"{prefix}_test_error"] <= 1.0
        assert 1 <= results[f"{prefix}_best_epoch"] <= results[f"{prefix}_epochs_run"] <= 2
    assert 0.0 <= results["logreg_test_error"] <= 1.0 and results["logreg_train_examples"] == 200
    for key in results:
        if key.startswith(("finetune_", "scratch_", "logreg_")):
            assert key in KEYS, key


def test_logistic_regression_takes_the_l2_chosen_on_validation(monkeypatch):
    ctx = context("ae")
    ds = ctx.dataset
    with torch.no_grad():
        codes = {s: ctx.model.encode(ds.x[s]).flatten(1) for s in ("val", "test")}

    def knows(split):  # a fitted probe right on one split's codes and wrong (label -1) on any other
        def predict(c):
            if split is None:
                return torch.full((len(c),), -1)
            d = torch.cdist(c, codes[split], compute_mode="donot_use_mm_for_euclid_dist")
            return torch.where(d.min(1).values < 1e-6, ds.labels[split][d.argmin(1)], -1)

        return predict

    fits = {1e-4: knows(None), 1e-3: knows("val"), 1e-2: knows("test")}
    monkeypatch.setattr(ft, "fit_linear_probe", lambda train, train_y, classes, l2: fits[l2])
    out = ft.logistic_regression(ctx, Batches(ds, "val", 7, shuffle=False))
    # chosen by validation error, not by test error; the test error is that same fit's
    assert out == {"logreg_test_error": 1.0, "logreg_val_error": 0.0, "logreg_l2": 1e-3, "logreg_train_examples": 90}

