"""VQ-VAE maths: the quantiser against brute force and hand-computed EMA steps, the PixelCNN prior's
causality by gradient, the prior's files, CIFAR-10 reading, and the stage-2 command line."""

import math

import pytest
import torch

from aezoo.quantize import QuantizerConfig, VectorQuantizer, nearest_code, perplexity, usage


def quantizer(**kw) -> VectorQuantizer:
    return VectorQuantizer(QuantizerConfig(**{"codebook_size": 16, "code_dim": 4, "restart_after": 0, **kw}))


# --- the quantiser --------------------------------------------------------------------------------
def test_nearest_code_matches_brute_force():
    z, codebook = torch.randn(300, 4), torch.randn(16, 4)
    brute = torch.tensor([min(range(16), key=lambda i: float(((v - codebook[i]) ** 2).sum())) for v in z])
    assert torch.equal(nearest_code(z, codebook), brute)
    vq = quantizer().eval()
    with torch.no_grad():
        vq.codebook.copy_(codebook)
    z_e = torch.randn(3, 4, 5, 6)
    out = vq(z_e)
    flat = z_e.movedim(1, -1).reshape(-1, 4)
    brute = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    assert out.codes.shape == (3, 5, 6) and torch.equal(out.codes.flatten(), brute)
    assert torch.allclose(out.z_q, codebook[out.codes].movedim(-1, 1))
    sq = ((flat - codebook[brute]) ** 2).sum() / 3
    assert torch.allclose(out.codebook_loss, sq) and torch.allclose(out.commitment_loss, sq)


def test_straight_through_and_codebook_gradient_in_gradient_mode():
    vq = quantizer(codebook_update="gradient", beta=0.25).train()
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z_e)
    w = torch.randn_like(out.z_q)
    (out.z_q * w).sum().backward()  # a decoder's loss: the gradient is copied to z_e, none reaches e
    assert torch.equal(z_e.grad, w) and vq.codebook.grad is None

    z_e.grad = None
    vq(z_e).commitment_loss.backward()  # commitment: only the encoder moves
    assert vq.codebook.grad is None
    flat = z_e.detach().movedim(1, -1).reshape(-1, 4)
    e = vq.codebook.detach()[out.codes.flatten()]
    assert torch.allclose(z_e.grad.movedim(1, -1).reshape(-1, 4), 2 * (flat - e) / 2)

    z_e.grad = None
    vq(z_e).codebook_loss.backward()  # codebook term: only the codebook moves, d/de_i = 2 sum_(k_n=i) (e_i - z_n) / B
    assert z_e.grad is None
    expected = torch.zeros(16, 4).index_add_(0, out.codes.flatten(), 2 * (e - flat) / 2)
    assert torch.allclose(vq.codebook.grad, expected, atol=1e-6)


def test_ema_step_equals_the_formula():
    gamma, eps, k = 0.9, 1e-3, 4
    vq = quantizer(codebook_size=k, code_dim=2, ema_decay=gamma, ema_epsilon=eps).train()
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-50.0, -50.0]])
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        vq.ema_sum.copy_(codebook)
    z = torch.tensor([[1.0, 0.5], [-0.5, 0.2], [9.0, 1.0], [0.5, 11.0], [1.0, 9.0], [0.2, 0.1]])
    vq(z.t().reshape(1, 2, 6))  # one batch, six positions
    assign = [[0, 1, 5], [2], [3, 4], []]
    n_new = torch.tensor([3.0, 1.0, 2.0, 0.0])
    N = gamma * 1.0 + (1 - gamma) * n_new
    m = torch.stack(
        [gamma * codebook[i] + (1 - gamma) * (z[a].sum(0) if a else torch.zeros(2)) for i, a in enumerate(assign)]
    )
    n = N.sum()
    e = m / ((N + eps) / (n + k * eps) * n)[:, None]
    assert torch.allclose(vq.ema_count, N) and torch.allclose(vq.ema_sum, m) and torch.allclose(vq.codebook, e)


def test_dead_code_is_restarted_from_encoder_outputs():
    vq = quantizer(codebook_size=4, code_dim=2, restart_after=2, codebook_update="gradient").train()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [100.0, 100.0]]))
    z = torch.randn(1, 2, 50) * 0.3
    vq(z)
    assert torch.equal(vq.codebook[3], torch.tensor([100.0, 100.0]))  # one step unused: not yet
    vq(z)
    outputs = z[0].t()
    assert ((outputs - vq.codebook[3]).abs().sum(1) == 0).any()  # now one of the batch's encoder outputs
    assert int(vq.unused_steps[3]) == 0
    vq.eval()
    assert (vq(z).counts > 0).sum() >= 1


def test_kmeans_init_finds_clusters():
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    z = (centres[torch.arange(300) % 3] + 0.1 * torch.randn(300, 2)).t().reshape(1, 2, 300)
    vq = quantizer(codebook_size=3, code_dim=2)
    vq.kmeans_init(z, iters=10)
    found = vq.codebook[nearest_code(centres, vq.codebook)]
    assert torch.allclose(found, centres, atol=0.1) and len(set(nearest_code(centres, vq.codebook).tolist())) == 3
    assert torch.allclose(vq.ema_sum, vq.codebook) and torch.equal(vq.ema_count, torch.ones(3))


def test_float32_under_autocast_and_health_numbers():
    vq = quantizer().eval()
    z = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.to(torch.bfloat16))
    assert out.z_q.dtype == torch.float32 and out.codebook_loss.dtype == torch.float32
    assert torch.equal(out.codes, vq(z.to(torch.bfloat16).float()).codes)
    counts = torch.tensor([5.0, 5.0, 0.0, 0.0])
    assert math.isclose(float(perplexity(counts)), 2.0, rel_tol=1e-6) and float(usage(counts)) == 0.5
    assert math.isclose(float(perplexity(torch.tensor([1.0, 0.0]))), 1.0)


# --- the gated PixelCNN prior ---------------------------------------------------------------------
def pixelcnn(**kw):
    import aezoo

    cfg = {
        "channels": 8,
        "layers": 5,
        "head": 16,
        "codebook_sizes": (6,),
        "code_shapes": (5, 6),
        "data_shape": (31,),
        **kw,
    }
    return aezoo.build("pixelcnn", **cfg)


def test_pixelcnn_is_causal_without_blind_spot():
    net = pixelcnn().nets[0]
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    for i in range(5):
        for j in range(6):
            x.grad = None
            net.forward_embedded(x)[0, :, i, j].sum().backward()
            seen = x.grad[0].abs().sum(0) > 0  # (5, 6): the positions logit (i, j) depends on
            before = torch.zeros(5, 6, dtype=torch.bool)
            before.view(-1)[: i * 6 + j] = True  # raster order
            assert not (seen & ~before).any(), f"({i}, {j}) sees itself or a later position"
            assert (seen[max(0, i - 4) :] == before[max(0, i - 4) :]).all(), f"({i}, {j}) misses an earlier position"
            assert x.grad[1].abs().sum() == 0  # nor another example


def test_prior_log_prob_sampling_and_class_condition():
    from aezoo.models.priors import pack_codes

    prior = pixelcnn(num_classes=3).eval()
    codes, labels = [torch.randint(6, (4, 5, 6))], torch.tensor([0, 1, 2, 0])
    joint = torch.stack([prior.log_prob(codes, torch.full((4,), y)) for y in range(3)])
    assert torch.allclose(prior.log_prob(codes), torch.logsumexp(joint, 0) - math.log(3), atol=1e-5)
    loss = prior.loss(pack_codes(codes, labels).float())
    assert torch.allclose(loss.total, -prior.log_prob(codes, labels).mean())
    samples = prior.sample(4, labels=labels)
    assert samples[0].shape == (4, 5, 6) and samples[0].max() < 6
    # sampling position by position agrees with the one-pass (teacher-forced) logits: at a near-zero
    # temperature every drawn code is the argmax of the logits computed on the finished map
    greedy = prior.sample(4, 1e-6, labels)
    assert torch.equal(prior.level_logits(0, greedy, labels).argmax(1), greedy[0])
    with pytest.raises(Exception, match="temperature"):
        prior.sample(2, temperature=0)


def test_prior_save_load_and_refusing_other_codes(tmp_path):
    import aezoo
    from aezoo.errors import AezooError

    prior = pixelcnn().eval()
    prior.save(tmp_path / "p")
    loaded = aezoo.load(tmp_path / "p")
    codes = [torch.randint(6, (3, 5, 6))]
    assert torch.equal(prior.log_prob(codes), loaded.log_prob(codes))
    with pytest.raises(AezooError, match="trained on"):
        loaded.log_prob([torch.randint(6, (3, 6, 5))])
    with pytest.raises(AezooError, match="codes outside"):
        loaded.log_prob([torch.full((3, 5, 6), 6)])
    model = aezoo.build("vqvae", hidden=8, residual_hidden=4, residual_layers=1, codebook_size=6, code_dim=4)
    with pytest.raises(AezooError, match="trained on"):  # 7x7 codes, the prior knows 5x6
        model.attach_prior(loaded)


# --- CIFAR-10 and the stage-2 command line --------------------------------------------------------
def write_fake_cifar(folder, per_batch=8, seed=0):
    """A tiny cifar-10-batches-py: five training pickles and a test pickle, as the real ones are laid out."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2 if name.endswith("1") else 4))
    return folder


def test_cifar10_reads_batches_and_refuses_foreign_pickles(tmp_path):
    import pickle

    import numpy as np

    from aezoo.config import DataConfig
    from aezoo.data import load_dataset
    from aezoo.errors import AezooError

    folder = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(DataConfig(name="cifar10", dir=str(tmp_path)))  # the parent folder works too
    assert {k: tuple(v.shape) for k, v in ds.x.items()} == {
        "train": (36, 3, 32, 32),
        "val": (4, 3, 32, 32),
        "test": (8, 3, 32, 32),
    }
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(ds.x["train"][0, 1].flatten(), torch.from_numpy(first[b"data"][0, 1024:2048]))  # green plane
    assert ds.labels["train"][:8].tolist() == first[b"labels"] and ds.scale == 255.0

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(AezooError, match="refusing to load .*print"):
        load_dataset(DataConfig(name="cifar10", dir=str(folder)))
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}, protocol=2)
    )
    with pytest.raises(AezooError, match="uint8 array"):
        load_dataset(DataConfig(name="cifar10", dir=str(folder)))


@pytest.mark.slow
def test_vqvae_on_cifar_then_conditional_prior_sample_and_bits_per_dim(tmp_path):
    import json

    import aezoo
    from aezoo.data import EVAL_SEED, Batches, load_dataset
    from aezoo.registry import load_run_config
    from conftest import run_cli

    write_fake_cifar(tmp_path / "cifar")
    run = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "vqvae",
        "--data",
        "cifar10",
        "--out",
        str(run),
        "--steps",
        "3",
        "--set",
        f"data.dir={tmp_path / 'cifar'}",
        "--set",
        "train.batch_size=12",
        "--set",
        "model.hidden=8",
        "--set",
        "model.residual_hidden=4",
        "--set",
        "model.codebook_size=16",
        "--set",
        "model.code_dim=4",
        "--set",
        "model.kmeans_iters=2",
        "--set",
        "train.progress=false",
    )
    assert code == 0, err
    code, _, err = run_cli("sample", str(run))
    assert code == 2 and "train-prior" in err  # no prior yet
    code, _, err = run_cli(
        "train-prior",
        str(run),
        "--steps",
        "3",
        "--set",
        "prior.channels=4",
        "--set",
        "prior.layers=2",
        "--set",
        "prior.head=8",
        "--set",
        "prior.num_classes=10",
        "--set",
        "train.batch_size=12",
        "--set",
        "train.progress=false",
    )
    assert code == 0, err
    prior_cfg = json.loads((run / "prior" / "config.json").read_text())
    assert prior_cfg["model_name"] == "pixelcnn" and prior_cfg["prior"]["code_shapes"] == [8, 8]
    assert prior_cfg["prior"]["codebook_sizes"] == [16] and prior_cfg["prior"]["source"] == "vqvae"
    code, _, err = run_cli("train-prior", str(run), "--steps", "3")
    assert code == 2 and "already holds a prior" in err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    results = json.loads((run / "eval.json").read_text())
    assert 0 < results["codebook_usage"] <= 1 and 1 <= results["codebook_perplexity"] <= 16
    assert (run / "plots" / "codebook_usage.png").is_file()

    # bits/dim recomputed by hand from the prior's marginal and the decoder's likelihood
    model, cfg = aezoo.load(run), load_run_config(run)
    assert model.prior is not None
    x = next(iter(Batches(load_dataset(cfg.data), "test", 100, seed=EVAL_SEED, shuffle=False)))
    with torch.no_grad():
        codes = model.codes(x)
        joint = torch.stack([model.prior.log_prob(codes, torch.full((len(x),), y)) for y in range(10)])
        log_p = torch.logsumexp(joint, 0) - math.log(10) + model.log_px_given_codes(x, codes)
    assert math.isclose(results["bits_per_dim"], float(-log_p.mean()) / (3 * 32 * 32 * math.log(2)), rel_tol=1e-4)
    assert math.isclose(results["prior_nll"] + results["decoder_nll"], float(-log_p.mean()), rel_tol=1e-4)

    code, _, err = run_cli("sample", str(run), "--n", "10", "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, _, err = run_cli("report", str(run))
    assert code == 0 and (run / "plots" / "prior_samples.png").is_file(), err
    code, _, err = run_cli("resume", str(run / "prior"))  # the prior folder is an ordinary run folder
    assert code == 0, err


@pytest.mark.slow
def test_train_prior_refuses_models_without_codes(tmp_path):
    from conftest import run_cli

    run = tmp_path / "vae"
    code, _, err = run_cli(
        "train",
        "vae",
        "--out",
        str(run),
        "--steps",
        "1",
        "--set",
        "data.limit=200",
        "--set",
        "model.hidden=[8]",
        "--set",
        "train.progress=false",
    )
    assert code == 0, err
    code, _, err = run_cli("train-prior", str(run))
    assert code == 2 and "no discrete codes" in err
    code, _, err = run_cli("train-prior", str(tmp_path / "nothing"))
    assert code == 2 and "no trained run" in err


@pytest.mark.slow
def test_ema_statistics_are_summed_over_processes(tmp_path):
    """Two torchrun processes, each quantising half of every batch, keep the EMA codebook one process
    computes on the whole batch (counts and sums all-reduced before the update)."""
    import os
    import subprocess
    import sys

    from aezoo.files import load_weights

    args = [
        "train",
        "vqvae",
        "--steps",
        "4",
        "--set",
        "data.limit=200",
        "--set",
        "train.batch_size=20",
        "--set",
        "model.hidden=8",
        "--set",
        "model.residual_hidden=4",
        "--set",
        "model.codebook_size=16",
        "--set",
        "model.code_dim=4",
        "--set",
        "model.restart_after=0",
        "--set",
        "train.progress=false",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (
        ("ddp", ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]),
        ("one", []),
    ):
        done = subprocess.run(
            [sys.executable, *launcher, "-m", "aezoo", *args, "--out", str(tmp_path / name)],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[:4000]  # the child's own message comes before torchrun's summary
    ddp, one = (
        load_weights(tmp_path / "ddp" / "model.safetensors"),
        load_weights(tmp_path / "one" / "model.safetensors"),
    )
    assert not torch.equal(one["quantizer.ema_count"], torch.ones(16))  # the EMA did move
    for k in one:
        assert torch.allclose(ddp[k].float(), one[k].float(), atol=1e-4), k
