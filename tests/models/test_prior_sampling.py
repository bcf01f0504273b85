"""Ancestral sampling of the code priors one position at a time (`CodePrior.sample` through the networks'
`sampler`): the same logits as the full forward pass at every position, and the same samples as drawing
each position from a full forward pass over the whole map (the path `sample` took before)."""

import pytest
import torch
import torch.nn.functional as F

from aezoo.models.pixelsnail import PixelSNAILConfig, PixelSNAILPrior
from aezoo.models.priors import PixelCNNConfig, PixelCNNPrior


def _priors():
    """Small priors of both networks, one and two levels, with and without a class, kernels 3 and 5."""
    shapes = {"code_shapes": (3, 4, 5, 6), "codebook_sizes": (7, 9), "data_shape": (1 + 12 + 30,)}
    yield PixelCNNPrior(PixelCNNConfig(channels=8, layers=3, head=16, **shapes))
    yield PixelCNNPrior(PixelCNNConfig(channels=6, layers=2, head=8, kernel=5, num_classes=3, code_shapes=(5, 4),
                                       codebook_sizes=(5,), data_shape=(21,)))
    yield PixelSNAILPrior(PixelSNAILConfig(channels=8, blocks=2, residual=2, heads=2, key_channels=4,
                                           value_channels=8, cond_layers=1, **shapes))
    yield PixelSNAILPrior(PixelSNAILConfig(channels=8, blocks=1, residual=1, heads=2, key_channels=4,
                                           value_channels=8, kernel=5, num_classes=3, code_shapes=(4, 5),
                                           codebook_sizes=(6,), data_shape=(21,)))


def _randomise(prior):
    """Weights far from their initialisation (biases included) so that no term vanishes by chance."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return prior.eval()


def _full_path_sample(prior, n, temperature=1.0, labels=None):
    """What `sample` did before: the whole map's forward pass for every position."""
    codes = []
    if prior.class_embed is not None and labels is None:
        labels = torch.arange(n) % prior.config.num_classes
    for level, (_, h, w) in enumerate(prior.level_shapes):
        c = torch.zeros(n, h, w, dtype=torch.long)
        codes.append(c)
        for i in range(h):
            for j in range(w):
                logits = prior.level_logits(level, codes, labels)[:, :, i, j].float() / temperature
                c[:, i, j] = torch.multinomial(F.softmax(logits, 1), 1).squeeze(1)
    return codes


@pytest.mark.parametrize("prior", list(_priors()), ids=lambda p: f"{p.name}_{len(p.level_shapes)}levels")
@torch.no_grad()
def test_sampler_logits_equal_the_full_forward_pass_at_every_position(prior):
    prior = _randomise(prior)
    g = torch.Generator().manual_seed(2)
    n = 5
    codes = [torch.randint(0, k, (n, h, w), generator=g) for k, h, w in prior.level_shapes]
    labels = torch.arange(n) % prior.config.num_classes if prior.class_embed is not None else None
    for level, (k, h, w) in enumerate(prior.level_shapes):
        full = prior.level_logits(level, codes, labels)
        cond = prior.condition(level, codes, labels)
        logits_at = prior.nets[level].sampler(cond, n, h, w)
        for i in range(h):
            for j in range(w):
                # the codes from (i, j) on are not known yet: other values there must change nothing
                seen = codes[level].clone().view(n, -1)
                seen[:, i * w + j :] = torch.randint(0, k, seen[:, i * w + j :].shape, generator=g)
                got = logits_at(seen.view(n, h, w), i, j)
                assert got.shape == (n, k)
                torch.testing.assert_close(got, full[:, :, i, j], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prior", list(_priors()), ids=lambda p: f"{p.name}_{len(p.level_shapes)}levels")
@torch.no_grad()
def test_samples_are_those_of_the_full_forward_path_for_a_fixed_seed(prior):
    prior = _randomise(prior)
    for temperature in (1.0, 0.7):
        torch.manual_seed(3)
        reference = _full_path_sample(prior, 16, temperature)
        torch.manual_seed(3)
        got = prior.sample(16, temperature)
        for r, c in zip(reference, got):
            assert torch.equal(r, c)
