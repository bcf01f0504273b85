"""Same seed, same weights on several threads (issue 19); RUN/environment.json; the resume state's record of
what the weights depend on, and the one line `aezoo resume` prints when it changed."""

import json

import pytest
import torch

from aezoo import environment
from aezoo.config import make_run_config, parse_overrides
from aezoo.files import load_state, load_weights
from aezoo.models.vae import VAEConfig
from aezoo.train import Trainer, resume, train

# A small conv VAE: its convolutions' weight gradients sum over the batch in per-thread parts, so its
# bits depend on the thread count (checked below), unlike the MLP VAE's at these sizes
CONV = ["data.limit=200", "train.batch_size=50", "train.progress=false", "model.backbone=conv",
        "model.channels=[8,16]", "model.hidden=[32]", "model.latent_dim=4", "eval.batch_size=200", "train.seed=3"]
MLP = ["data.limit=200", "train.batch_size=50", "train.progress=false", "model.hidden=[16]", "model.latent_dim=4",
       "eval.batch_size=200"]


def config(base, *extra):
    return make_run_config("vae", VAEConfig, parse_overrides(base + list(extra)))


@pytest.fixture
def threads():
    """Sets torch's intra-op thread count for the test; after it, the count it had, pinned."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
    environment.pin_threads()


def weights(run):
    return load_weights(run.weights)


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_same_seed_runs_on_two_threads_are_bit_identical_and_so_is_a_resumed_one(tmp_path, threads, monkeypatch):
    steps = ["train.steps=4", "train.checkpoint_every=2"]
    threads(1)
    one_thread = weights(train(config(CONV, *steps), tmp_path / "one"))
    threads(2)
    a, b = (weights(train(config(CONV, *steps), tmp_path / name)) for name in "ab")

    real_checkpoint = Trainer.checkpoint

    def crash_after_step_2(self):
        real_checkpoint(self)
        if self.step == 2:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Trainer, "checkpoint", crash_after_step_2)
    with pytest.raises(RuntimeError):
        train(config(CONV, *steps), tmp_path / "c")
    monkeypatch.setattr(Trainer, "checkpoint", real_checkpoint)
    torch.manual_seed(999)  # the resumed process starts with other random state
    resumed = weights(resume(tmp_path / "c"))
    assert same(a, b) and same(a, resumed)
    assert not same(one_thread, a)  # the two-thread kernels ran: their sums split otherwise


def _set_dynamic(on: int) -> None:
    """Turns MKL's and OpenMP's dynamic thread adjustment on or off behind the engine's back."""
    for prefixes, name in ((("libtorch_cpu", "libmkl_rt", "libmkl_core"), "MKL_Set_Dynamic"),
                           (("libgomp", "libomp", "libiomp5"), "omp_set_dynamic")):
        function = environment._loaded_function(prefixes, (name,))
        if function is None:
            pytest.skip(f"{name} is not reachable in this torch build")
        function(on)


@pytest.mark.slow  # trains on MNIST with two threads: seconds, more under load
def test_a_run_pins_threads_and_records_its_environment(tmp_path, threads):
    threads(2)
    _set_dynamic(1)
    before = environment.describe(torch.device("cpu"))
    assert before["mkl_dynamic"] is True and before["omp_dynamic"] is True
    run = train(config(MLP, "train.steps=2"), tmp_path / "r")
    pieces = json.loads((run.path / environment.ENVIRONMENT_FILE).read_text())["pieces"]
    assert len(pieces) == 1
    piece = pieces[0]
    assert piece["step"] == 0 and piece["torch_threads"] == 2
    assert piece["mkl_dynamic"] is False and piece["omp_dynamic"] is False
    assert piece["torch"] == torch.__version__ and piece["device"] == "cpu" and piece["precision"] == "fp32"
    assert {"python", "numpy", "aezoo", "platform", "cpu", "started", "env_OMP_NUM_THREADS"} <= piece.keys()
    assert all(v is None or isinstance(v, (str, int, bool)) for v in piece.values())
    saved = load_state(run.state)["environment"]
    assert saved == environment.determinism(piece) and saved["torch_threads"] == 2


@pytest.mark.slow  # trains on MNIST with two threads: seconds, more under load
def test_resume_under_another_thread_count_says_so_in_one_line_then_continues(tmp_path, threads, capsys):
    threads(1)
    run = train(config(MLP, "train.steps=4"), tmp_path / "r")
    capsys.readouterr()
    resume(run.path, steps=6)  # the same thread count: nothing to say
    assert capsys.readouterr().err == ""
    threads(2)
    resume(run.path, steps=8)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "resumed at step 6 with torch_threads 1 -> 2" in err[0] and "may differ" in err[0]
    assert load_state(run.state)["step"] == 8
    pieces = json.loads((run.path / environment.ENVIRONMENT_FILE).read_text())["pieces"]
    assert [(p["step"], p["torch_threads"]) for p in pieces] == [(0, 1), (4, 1), (6, 2)]


def test_differences_name_what_changed_among_the_keys_the_weights_depend_on():
    now = environment.determinism(environment.describe(torch.device("cpu"), "fp32", True))
    assert environment.differences(dict(now), now) == []
    saved = {**now, "torch_threads": 7, "mkl_dynamic": None}
    assert environment.differences(saved, now) == [
        f"torch_threads 7 -> {now['torch_threads']}", f"mkl_dynamic None -> {now['mkl_dynamic']}"]
    older = {k: v for k, v in saved.items() if k != "torch_threads"}  # a record without a key: not compared
    assert environment.differences(older, now) == [f"mkl_dynamic None -> {now['mkl_dynamic']}"]
    assert environment.differences({**now, "python": "2.7"}, now) == []  # not a key the weights depend on
