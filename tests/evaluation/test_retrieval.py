"""Retrieval in code space (`evaluation.retrieval`): precision@k against brute force, the shared
nearest-neighbour search of `evaluation.features`, and the keys `aezoo eval` writes."""

import functools
import json

import pytest
import torch

from aezoo.evaluation.features import knn_predict, nearest
from aezoo.evaluation.retrieval import precision_at_k


def brute_nearest(train, query, k, metric):
    if metric == "cosine":
        d = -torch.nn.functional.cosine_similarity(query[:, None], train[None], dim=-1)
    else:
        d = torch.cdist(query.double(), train.double())
    return d.argsort(dim=1, stable=True)[:, :k]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_matches_brute_force(metric):
    g = torch.Generator().manual_seed(0)
    train, query = torch.randn(300, 7, generator=g), torch.randn(50, 7, generator=g)
    got = nearest(train, query, 10, metric, chunk=16)
    assert torch.equal(got, brute_nearest(train, query, 10, metric))
    assert nearest(train[:4], query, 10, metric).shape == (50, 4)  # k capped by the training set


def test_precision_at_k_by_hand():
    # two clusters far apart along the first axis, with scale differences that fool Euclidean but not cosine
    g = torch.Generator().manual_seed(1)
    direction = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.arange(40) % 2
    train = direction[labels] * torch.rand(40, 1, generator=g) * 10 + 0.01 * torch.randn(40, 2, generator=g)
    query_y = torch.tensor([0, 1])
    query = torch.tensor([[0.2, 0.0], [0.0, 9.0]])
    assert precision_at_k(train, labels, query, query_y, 10, "cosine") == 1.0
    # by hand: the fraction of each query's 10 nearest with its label, averaged
    idx = brute_nearest(train, query, 10, "euclidean")
    expected = (labels[idx] == query_y[:, None]).float().mean()
    assert precision_at_k(train, labels, query, query_y, 10, "euclidean") == pytest.approx(float(expected))


def test_knn_predict_is_the_majority_of_the_nearest():
    g = torch.Generator().manual_seed(2)
    train, query = torch.randn(200, 5, generator=g), torch.randn(30, 5, generator=g)
    train_y = torch.randint(0, 3, (200,), generator=g)
    idx = brute_nearest(train, query, 10, "euclidean")
    expected = []
    for row in train_y[idx]:
        counts = torch.bincount(row, minlength=3)
        best = (counts == counts.max()).nonzero().flatten().tolist()
        expected.append(int(row[0]) if int(row[0]) in best else best[0])
    assert knn_predict(train, train_y, query).tolist() == expected


@pytest.fixture(scope="module", autouse=True)
def mnist_read_once():
    from aezoo.data import mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist, "read_bundled", functools.cache(mnist.read_bundled))
        yield


def test_eval_writes_retrieval_keys(tmp_path):
    from conftest import run_cli

    run = tmp_path / "ae"
    code, _, err = run_cli("train", "ae", "--out", str(run), "--steps", "20", "--set", "data.limit=300",
                           "--set", "train.batch_size=50", "--set", "model.hidden=[32]", "--set", "model.latent_dim=8",
                           "--set", "train.progress=false", "--set", "eval.probe_train=200")
    assert code == 0, err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    results = json.loads((run / "eval.json").read_text())
    for key in ("retrieval_p10_euclidean", "retrieval_p10_cosine", "retrieval_p10_pixels_euclidean",
                "retrieval_p10_pixels_cosine"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["retrieval_train_examples"] == 200
    assert results["retrieval_p10_pixels_euclidean"] > 0.5  # MNIST digits: pixels already retrieve their class
