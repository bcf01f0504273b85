"""Holes the other VQ tests leave open, each checked through the real code rather than a re-derivation
of it: where beta weighs the quantiser's loss (by its gradients), what a dead-code restart does to the
EMA statistics, that VQ-VAE-2's bottom level and decoder see the top level in the model's own forward,
and that VQ-VAE-2's k-means start takes no EMA step."""

import copy
import dataclasses

import pytest
import torch

import aezoo
from aezoo.errors import AezooError
from aezoo.quantize import QuantizerConfig, VectorQuantizer


def quantizer(**kw) -> VectorQuantizer:
    return VectorQuantizer(QuantizerConfig(**{"codebook_size": 8, "code_dim": 3, "restart_after": 0, **kw}))


def flat(z: torch.Tensor) -> torch.Tensor:
    """(B, D, *S) -> (N, D), the quantiser's order of positions."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


# --- beta weighs the commitment term, not the codebook term -----------------------------------------
def test_loss_gradients_put_beta_on_the_commitment_term():
    beta, batch = 0.3, 2
    for update in ("gradient", "ema"):
        vq = quantizer(beta=beta, codebook_update=update).train()
        e_before = vq.codebook.detach().clone()
        z_e = torch.randn(batch, 3, 4, 5, requires_grad=True)
        out = vq(z_e)
        out.loss.backward()
        z, e = flat(z_e.detach()), e_before[out.codes.flatten()]
        # the encoder output moves only through the commitment term: 2 beta (z_e - e) / B
        assert torch.allclose(flat(z_e.grad), 2 * beta * (z - e) / batch, atol=1e-6), update
        if update == "gradient":  # the codebook moves only through the codebook term, weight 1: 2 (e - z_e) / B
            expected = torch.zeros(8, 3).index_add_(0, out.codes.flatten(), 2 * (e - z) / batch)
            assert torch.allclose(vq.codebook.grad, expected, atol=1e-6)
        else:  # EMA codes are buffers: nothing to differentiate
            assert not vq.codebook.requires_grad


# --- a dead-code restart resets the restarted code's EMA statistics ------------------------------
def test_restarted_code_follows_the_ema_from_its_reset_statistics():
    gamma, eps, k = 0.9, 1e-3, 4
    vq = quantizer(codebook_size=k, code_dim=2, ema_decay=gamma, ema_epsilon=eps, restart_after=2).train()
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-50.0, -50.0]])  # code 3: never chosen
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        vq.ema_sum.copy_(codebook)
    g = torch.Generator().manual_seed(3)
    clusters = lambda: (codebook[:3].repeat_interleave(4, 0) + 0.5 * torch.randn(12, 2, generator=g)).t()[None]
    vq(clusters())  # code 3 unused for one step
    batch2 = clusters()
    vq(batch2)  # two steps: restarted onto one of this batch's vectors
    c = vq.codebook[3].clone()
    assert (batch2[0].t() == c).all(1).any()
    assert torch.equal(vq.ema_sum[3], c) and vq.ema_count[3] == 1  # as if chosen once, by that vector

    # one more EMA step in which no vector chooses code 3: it keeps its place, m_3 / N~_3 from the reset
    # statistics (N_3 = 1, m_3 = c), not from the old ones (which would pull it back towards (-50, -50))
    count_before = vq.ema_count.clone()
    count_before[3] = 1.0
    batch3 = vq.codebook[:3].repeat(2, 1).t()[None].clone()  # exactly on codes 0, 1, 2
    counts = vq(batch3).counts
    assert counts[3] == 0 and counts.tolist()[:3] == [2.0, 2.0, 2.0]
    n_new = gamma * count_before + (1 - gamma) * counts
    n = n_new.sum()
    smoothed = (n_new[3] + eps) / (n + k * eps) * n
    assert torch.allclose(vq.ema_count[3], torch.tensor(gamma))
    assert torch.allclose(vq.ema_sum[3], gamma * c)
    assert torch.allclose(vq.codebook[3], gamma * c / smoothed, atol=1e-5)


# --- VQ-VAE-2: the top level reaches the bottom quantiser and the decoder, in the real forward -------
def small_vqvae2(**kw):
    return aezoo.build("vqvae2", hidden=8, residual_hidden=4, residual_layers=1, codebook_size=8, code_dim=4,
                       data_shape=(1, 16, 16), **kw)


def test_decoder_output_depends_on_the_top_codes():
    model = small_vqvae2().eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        top, bottom = model.codes(x)
        assert top.shape == (3, 2, 2) and bottom.shape == (3, 4, 4)
        ref = model.decoder_params([top, bottom])
        for i in range(2):  # each top position on its own changes the output, bottom codes held fixed
            for j in range(2):
                other = top.clone()
                other[:, i, j] = (other[:, i, j] + 1) % 8
                assert (model.decoder_params([other, bottom]) - ref).abs().amax() > 1e-5, (i, j)
        assert (model.decoder_params([top, (bottom + 1) % 8]) - ref).abs().amax() > 1e-5


def test_bottom_quantiser_input_depends_on_the_top_code_vectors():
    model = small_vqvae2().eval()
    x = torch.rand(3, 1, 16, 16)
    seen = []
    model.quantizer_bottom.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model.codes(x)
        handle = model.quantizer_top.register_forward_hook(
            lambda module, args, out: dataclasses.replace(out, z_q=out.z_q + 0.5))  # other top code vectors
        model.codes(x)
        handle.remove()
    plain, moved = seen
    assert plain.shape == moved.shape == (3, 4, 4, 4)
    assert (plain - moved).abs().amax() > 1e-5


def test_training_loss_decodes_the_top_codes():
    """In `loss` itself, the decoder's output changes with the top codes when the bottom ones are fixed."""
    model = small_vqvae2().eval()
    x = torch.rand(3, 1, 16, 16)
    outputs, first_bottom = [], []

    def same_bottom(module, args, out):  # the bottom quantiser's first output, every time
        if not first_bottom:
            first_bottom.append(out)
        return first_bottom[0]

    model.decoder.register_forward_hook(lambda module, args, out: outputs.append(out.detach().clone()))
    fix_bottom = model.quantizer_bottom.register_forward_hook(same_bottom)
    with torch.no_grad():
        model.loss(x)
        handle = model.quantizer_top.register_forward_hook(
            lambda module, args, out: dataclasses.replace(out, z_q=out.z_q + 0.5))
        model.loss(x)
        handle.remove()
    fix_bottom.remove()
    assert (outputs[0] - outputs[1]).abs().amax() > 1e-5


# --- VQ-VAE-2's k-means start takes no EMA step ----------------------------------------------------
def test_on_train_start_moves_codes_by_kmeans_only():
    model = small_vqvae2(kmeans_iters=3).train()
    ref = copy.deepcopy(model)
    initial = [q.codebook.clone() for q in (model.quantizer_top, model.quantizer_bottom)]
    x = torch.rand(8, 1, 16, 16)
    torch.manual_seed(1)
    model.on_train_start(x)
    for name, q, before in (("top", model.quantizer_top, initial[0]), ("bottom", model.quantizer_bottom, initial[1])):
        assert not torch.equal(q.codebook, before), name  # k-means placed the codes
        assert torch.equal(q.ema_count, torch.ones(8)), name  # N_i = 1: no EMA step after k-means
        assert torch.equal(q.ema_sum, q.codebook), name  # m_i = e_i
        assert not q.unused_steps.any(), name  # no training step counted
    with torch.no_grad():  # the top codes are exactly k-means' centres on the top encoder's outputs
        torch.manual_seed(1)
        ref.quantizer_top.kmeans_init(ref.encoder_top(ref.encoder_bottom(ref._pad(x))), 3)
    assert torch.equal(model.quantizer_top.codebook, ref.quantizer_top.codebook)


def test_sampling_without_a_prior_names_the_run_folder_to_train_it_on(tmp_path):
    model = aezoo.build("vqvae", **aezoo.registry.entry("vqvae").tiny)
    with pytest.raises(AezooError, match=r"train-prior RUN \(the run folder"):
        model.sample(2)  # built in Python: no folder to name
    model.save(tmp_path / "run")
    with pytest.raises(AezooError, match=f"train-prior {tmp_path / 'run'}`"):
        aezoo.load(tmp_path / "run").sample(2)
