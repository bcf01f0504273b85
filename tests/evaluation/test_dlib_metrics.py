"""The dlib metric protocol (aezoo.metrics.dlib): each estimator against disentanglement_lib's own
formula written out with sklearn/scipy, or on codes whose scores are known (a code equal to the
factors, a permuted one, an independent one), and the evaluator's protocol switch."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aezoo.config import DataConfig, EvalConfig
from aezoo.data import load_dataset
from aezoo.errors import AezooError
from aezoo.metrics import dlib

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")

SIZES = (2, 3, 4)  # a small product of independent factors


def grid_sample(n: int, seed: int = 0, sizes=SIZES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], 1)


FACTORS = grid_sample(1_500)
NOISE = np.random.default_rng(1).normal(size=(1_500, 3))
SMALL = {"num_train": 1_000, "num_test": 500}


# --- MIG -------------------------------------------------------------------------------------------
def _dlib_mig_reference(mus: np.ndarray, ys: np.ndarray, bins: int = 20) -> float:
    """disentanglement_lib's _compute_mig with its _histogram_discretize, written out (codes as rows)."""
    disc = np.stack([np.digitize(m, np.histogram(m, bins)[1][:-1]) for m in mus.T])
    m = np.array([[sklearn_metrics.mutual_info_score(y, d) for y in ys.T] for d in disc])
    h = np.array([sklearn_metrics.mutual_info_score(y, y) for y in ys.T])
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / h))


def test_mig_equals_disentanglement_libs_formula_on_the_first_num_train_examples():
    codes = FACTORS[:, [2, 0, 1]] + 0.3 * NOISE
    got = dlib.mig(codes, FACTORS, num_train=1_000)
    assert got == pytest.approx(_dlib_mig_reference(codes[:1_000], FACTORS[:1_000]), abs=1e-12)
    assert got != pytest.approx(dlib.mig(codes, FACTORS, num_train=1_500), abs=1e-6)  # only the first rows count


def test_mig_is_one_for_the_factors_themselves_in_any_order_and_small_for_noise():
    # I(z_k; v_k) = H(v_k); the runner-up is the plug-in MI of independent factors, small and positive
    clean = dlib.mig(FACTORS.astype(float), FACTORS, num_train=1_500)
    assert 0.99 < clean < 1.0
    assert dlib.mig(FACTORS[:, [2, 0, 1]].astype(float), FACTORS, num_train=1_500) == pytest.approx(clean, abs=1e-12)
    assert dlib.mig(NOISE, FACTORS, num_train=1_500) < 0.05


# --- DCI -------------------------------------------------------------------------------------------
def _dlib_dci_reference(r: np.ndarray) -> tuple[float, float]:
    """disentanglement_lib's disentanglement() and completeness() of an importance matrix, written out."""
    per_code = 1.0 - scipy_stats.entropy(r.T + 1e-11, base=r.shape[1])
    per_factor = 1.0 - scipy_stats.entropy(r + 1e-11, base=r.shape[0])
    w = r if r.sum() > 0 else np.ones_like(r)
    return float(np.sum(per_code * w.sum(1) / w.sum())), float(np.sum(per_factor * w.sum(0) / w.sum()))


@pytest.mark.parametrize("seed", range(4))
def test_dci_of_importance_equals_disentanglement_libs_formulas(seed):
    r = np.random.default_rng(seed).random((5, 3)) ** 3
    r[seed % 5] = 0  # a unit with no importance
    assert dlib.dci_of_importance(r) == pytest.approx(_dlib_dci_reference(r), abs=1e-12)


def test_dci_of_importance_closed_cases():
    assert dlib.dci_of_importance(np.eye(3)[[2, 0, 1]]) == pytest.approx((1.0, 1.0), abs=1e-8)  # a permutation
    assert dlib.dci_of_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert dlib.dci_of_importance(np.zeros((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
    # two units each holding all factors equally, two factors: no disentanglement, complete spread
    d, c = dlib.dci_of_importance(np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-9) and c == pytest.approx(1 - np.log(2) / np.log(3), abs=1e-9)


@pytest.mark.slow
def test_dci_boosted_trees_on_the_factors_and_on_noise():
    clean = dlib.dci(FACTORS[:, [1, 2, 0]].astype(float), FACTORS, **SMALL)
    assert clean["informativeness"] == 1.0  # trees split exactly between integer values
    assert clean["disentanglement"] > 0.95 and clean["completeness"] > 0.95
    noise = dlib.dci(NOISE, FACTORS, **SMALL)
    chance = np.mean([np.bincount(f[1_000:]).max() / 500 for f in FACTORS.T])
    assert noise["informativeness"] < chance + 0.1
    assert noise["disentanglement"] < 0.2


# --- SAP -------------------------------------------------------------------------------------------
def test_sap_matrix_is_the_svms_test_accuracy_per_unit_and_factor():
    binary = grid_sample(1_500, sizes=(2, 2))
    codes = np.concatenate([binary[:, ::-1].astype(float), NOISE[:, :1]], 1)
    s = dlib.sap_matrix(codes, binary, **SMALL)
    assert s[0, 1] == 1.0 and s[1, 0] == 1.0  # each factor read off its own unit
    assert np.all(np.abs(s[[0, 1, 2], [0, 1, 1]] - 0.5) < 0.08)  # the others at chance for balanced classes
    assert dlib.sap(codes, binary, **SMALL) == pytest.approx(np.mean(1.0 - np.sort(s, 0)[-2]), abs=1e-12)


def test_sap_of_noise_is_near_zero():
    assert dlib.sap(NOISE, FACTORS, **SMALL) < 0.05


# --- beta-VAE and FactorVAE ------------------------------------------------------------------------
def test_betavae_score_is_perfect_on_the_factors_and_chance_on_noise():
    args = {"num_train": 600, "num_eval": 300, "batch": 16}
    assert dlib.betavae_score(FACTORS.astype(float), FACTORS, **args) == 1.0
    assert abs(dlib.betavae_score(NOISE, FACTORS, **args) - 1 / 3) < 0.1


def test_factorvae_score_prunes_units_below_a_std_of_005():
    args = {"num_train": 600, "num_eval": 300, "batch": 16, "num_variance": 1_500}
    codes = FACTORS.astype(float)
    assert dlib.factorvae_score(codes, FACTORS, **args) == 1.0
    shrunk = codes * np.array([0.04 / FACTORS[:, 0].std(), 1.0, 1.0])  # unit 0 now has std 0.04
    assert dlib.factorvae_score(shrunk, FACTORS, **args, prune=0.0) == 1.0  # divided by its std: still perfect
    pruned = dlib.factorvae_score(shrunk, FACTORS, **args)
    assert 0.5 < pruned < 0.8  # factor 0's groups now vote for a unit assigned to another factor (2/3 ideal)
    assert dlib.factorvae_score(0.01 * codes, FACTORS, **args) == 0.0  # every unit pruned


# --- the evaluator ---------------------------------------------------------------------------------
class RandomCodes(torch.nn.Module):
    """A model with 4-unit codes (the metrics are replaced: only the shapes they receive matter)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return torch.randn(len(x), 4)


@pytest.mark.parametrize("protocol", ["papers", "dlib"])
def test_the_evaluator_records_its_protocol_and_the_pool_it_drew(protocol, monkeypatch):
    from aezoo.evaluation import disentanglement as dis

    monkeypatch.setattr(dlib, "POOL", 400)  # the protocol's 15,000 would only slow the test
    calls = {}
    for name in ("mig", "betavae_score", "factorvae_score", "dci", "sap"):
        module = dlib if protocol == "dlib" else dis.scores
        result = {"disentanglement": 0.1, "completeness": 0.2, "informativeness": 0.3} if name == "dci" else 0.5

        def fake(codes, factors, *a, _name=name, _result=result, **k):
            calls[_name] = codes.shape
            return _result

        monkeypatch.setattr(module, name, fake)
    ds = load_dataset(DataConfig(name="dsprites"))
    cfg = SimpleNamespace(eval=EvalConfig(metric_samples=300, metric_protocol=protocol))
    out = dis.disentanglement(SimpleNamespace(model=RandomCodes(), dataset=ds, cfg=cfg, progress=lambda it, desc: it))
    n = 300 if protocol == "papers" else 400
    assert out["metric_protocol"] == protocol and out["metric_samples"] == n
    assert calls == dict.fromkeys(("mig", "betavae_score", "factorvae_score", "dci", "sap"), (n, 4))
    assert out["dci_completeness"] == 0.2 and out["sap"] == 0.5


def test_dlib_without_scikit_learn_is_refused_in_one_line(monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name.startswith("sklearn")
                        else real(name, *a))
    with pytest.raises(AezooError, match=r"aezoo\[dlib\]") as err:
        dlib.sap(NOISE, FACTORS, **SMALL)
    assert "\n" not in str(err.value)


def test_a_pool_smaller_than_the_protocols_samples_is_refused():
    with pytest.raises(AezooError, match="at least 15,000"):
        dlib.dci(NOISE, FACTORS)
