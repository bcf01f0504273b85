"""The disentanglement metrics with disentanglement_lib's estimators (`eval.metric_protocol=dlib`).

Locatello et al. (2019, "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations") computed their published dSprites numbers with disentanglement_lib, whose estimators
depart from the papers' definitions in places; `scores` follows the papers. With this protocol aezoo's
numbers can be set beside the published ones. Every function takes a pool of `codes` (N, D) (the
posterior means) and integer `factors` (N, K) drawn uniformly and independently from the factor grid,
so its first rows are as good a random sample as any: the first `num_train` rows are the training
sample, the next `num_test` the test sample (disentanglement_lib draws a fresh sample for each metric;
sharing one pool between metrics changes no metric's distribution). Sample sizes are those of
disentanglement_lib's `unsupervised_study_v1/metric_configs/*.gin`.

Where the protocols differ (papers: `scores`; dlib: this module; sizes are train / test):

    key              papers (scores)                          dlib (this module)
    betavae_score    multinomial logistic regression on the   sklearn's LogisticRegression() of dlib's time
                     standardised mean |z1 - z2|, L2 1e-4     (liblinear, one-vs-rest, C = 1) on the raw
                                                              mean |z1 - z2|; 10,000 / 5,000 points of 64
    factorvae_score  units of std 0 do not vote; std over     units of std < 0.05 do not vote; variances
                     the pool                                 (ddof 1) of 10,000; 10,000 / 5,000 groups of 64
    mig              20 equal-width bins per unit, the pool   the same estimator on 10,000 examples
    dci_*            importance |Lasso weight|; completeness  importance: feature_importances_ of a
                     the mean over factors; informativeness   GradientBoostingClassifier() per factor;
                     held-out R^2                             completeness weighted by each factor's share
                                                              of importance; informativeness test accuracy
    sap              R^2 per unit (continuous factors), a     every factor discrete: test accuracy of
                     rescaled histogram classifier (shape)    LinearSVC(C=0.01, class_weight="balanced") on
                                                              each unit alone; 10,000 / 5,000

Why: Higgins et al. name a linear classifier without its penalty, and dlib took sklearn's default;
dlib prunes units collapsed to the prior, which would otherwise vote at random; `scores` already
computes MIG with dlib's discretised plug-in estimator (not Chen et al.'s sampled one), so only the
sample differs; Eastwood & Williams allow any regressor with importances and dlib chose boosted trees,
which also see non-linear codes; dlib's study declared every dSprites factor discrete
(`sap_score.continuous_factors=False`), so SAP uses the classifier of Kumar et al.'s discrete case.

The two interventional metrics draw their pairs and groups from the pool, as `scores` does (its
docstring: the same distribution as rendering them, with examples reused), not from 1.9M freshly
rendered images; the fixed factor is uniform over all factors, as in dlib (on dSprites every factor
varies, so this equals `scores`' choice among the varying ones). Modularity and explicitness are not
computed: aezoo has no papers version of them to set beside.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from ..errors import AezooError
from .estimators import check_pair, discretize, entropy, mutual_information
from .scores import betavae_pairs, factorvae_groups

NUM_TRAIN, NUM_TEST = 10_000, 5_000  # dci, sap, mig (train only), beta-VAE and FactorVAE points
BATCH = 64  # pairs per beta-VAE point, examples per FactorVAE group
NUM_VARIANCE = 10_000  # examples for the FactorVAE metric's global variances
PRUNE = 0.05  # FactorVAE: units whose std is below this do not vote
BINS = 20  # MIG's histogram bins
POOL = NUM_TRAIN + NUM_TEST  # the fewest examples the protocol needs


def _sklearn(module: str):
    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError:
        raise AezooError("eval.metric_protocol=dlib needs scikit-learn: pip install 'aezoo[dlib]'") from None


def _pool(codes, factors, n: int) -> tuple[np.ndarray, np.ndarray]:
    c, f = check_pair(codes, factors)
    if len(c) < n:
        raise AezooError(f"the dlib protocol needs at least {n:,} examples; got {len(c):,}")
    return c, f


def _train_test(codes, factors, num_train: int, num_test: int):
    """((codes, factors) of the first num_train examples, (codes, factors) of the next num_test)."""
    c, f = _pool(codes, factors, num_train + num_test)
    test = slice(num_train, num_train + num_test)
    return (c[:num_train], f[:num_train]), (c[test], f[test])


def _top_two_gap(score: np.ndarray) -> float:
    """Mean over columns of the gap between the two largest entries (a single row: the entry)."""
    top = -np.sort(-score, axis=0)
    return float(np.mean(top[0] - (top[1] if len(top) > 1 else 0.0)))


def mig(codes, factors, num_train: int = NUM_TRAIN, bins: int = BINS) -> float:
    """dlib's `_compute_mig`: I(z_j; v_k) of the histogram-discretised means and the factors on the
    first `num_train` examples, (I_(1) - I_(2)) / H(v_k) averaged over factors."""
    c, f = _pool(codes, factors, num_train)
    c, f = c[:num_train], f[:num_train]
    mi = mutual_information(discretize(c, bins), f)
    top = -np.sort(-mi, axis=0)
    h = entropy(f)
    gap = top[0] - (top[1] if len(top) > 1 else 0.0)
    return float(np.mean(np.divide(gap, h, out=np.zeros_like(gap), where=h > 0)))


def _entropy_score(p: np.ndarray, base: int) -> np.ndarray:
    """1 - H(column) / log(base) for each column of non-negative p, after dlib's + 1e-11 (so that an
    all-zero column counts as uniform)."""
    p = p + 1e-11
    p = p / p.sum(0)
    return 1 + (p * np.log(p)).sum(0) / np.log(base)


def dci_of_importance(importance: np.ndarray) -> tuple[float, float]:
    """dlib's disentanglement and completeness of an importance matrix R (D, K): the per-unit scores
    1 - H_K(R_j. / sum_k R_jk) weighted by the unit's share of sum R (Eastwood & Williams' eq. 2-3),
    and the per-factor scores 1 - H_D(R_.k / sum_j R_jk) weighted by the factor's share (the paper
    averages them; dlib weights them). A zero matrix weighs every entry alike."""
    r = np.asarray(importance, dtype=np.float64)
    d, k = r.shape
    weights = r if r.sum() > 0 else np.ones_like(r)
    disent = float((_entropy_score(r.T, k) * weights.sum(1) / weights.sum()).sum()) if k > 1 else 1.0
    complete = float((_entropy_score(r, d) * weights.sum(0) / weights.sum()).sum()) if d > 1 else 1.0
    return disent, complete


def dci(codes, factors, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST, seed: int = 0) -> dict[str, float]:
    """dlib's `compute_importance_gbt`: one `GradientBoostingClassifier()` (100 trees of depth 3 per
    class, learning rate 0.1) per factor on the raw codes of the first `num_train` examples; importance
    = its feature_importances_, informativeness = its accuracy on the next `num_test`, averaged over
    factors. `seed` fixes the trees' tie-breaking (dlib leaves it unseeded)."""
    ensemble = _sklearn("ensemble")
    (x, y), (xt, yt) = _train_test(codes, factors, num_train, num_test)
    importance, accuracy = np.zeros((x.shape[1], y.shape[1])), np.zeros(y.shape[1])
    for k in range(y.shape[1]):
        model = ensemble.GradientBoostingClassifier(random_state=seed).fit(x, y[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        accuracy[k] = np.mean(model.predict(xt) == yt[:, k])
    disent, complete = dci_of_importance(importance)
    return {"disentanglement": disent, "completeness": complete, "informativeness": float(accuracy.mean())}


def sap_matrix(codes, factors, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> np.ndarray:
    """dlib's `compute_score_matrix` with every factor discrete: S (D, K), the test accuracy of a
    `LinearSVC(C=0.01, class_weight="balanced")` predicting factor k from unit j alone."""
    svm = _sklearn("svm")
    exceptions = _sklearn("exceptions")
    (x, y), (xt, yt) = _train_test(codes, factors, num_train, num_test)
    score = np.zeros((x.shape[1], y.shape[1]))
    with warnings.catch_warnings():
        # liblinear stops at max_iter on units that carry nothing of a factor; dlib keeps those fits as they are
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
        for j in range(x.shape[1]):
            for k in range(y.shape[1]):
                model = svm.LinearSVC(C=0.01, class_weight="balanced").fit(x[:, j : j + 1], y[:, k])
                score[j, k] = np.mean(model.predict(xt[:, j : j + 1]) == yt[:, k])
    return score


def sap(codes, factors, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> float:
    """dlib's SAP: the mean over factors of the gap between the two best units of `sap_matrix`."""
    return _top_two_gap(sap_matrix(codes, factors, num_train, num_test))


def betavae_score(codes, factors, num_train: int = NUM_TRAIN, num_eval: int = NUM_TEST, batch: int = BATCH,
                  seed: int = 0) -> float:
    """dlib's `compute_beta_vae_sklearn`: points mean_l |z_a - z_b| over `batch` pairs agreeing on a
    factor drawn uniformly from all K, a `LogisticRegression()` fitted on `num_train` points, the
    score its accuracy on `num_eval` others (pairs drawn from the pool: module docstring). sklearn's
    default when dlib's study ran (before 0.22) was liblinear, one-vs-rest, C = 1; it is asked for by
    name here because today's default (lbfgs, multinomial) is another classifier."""
    linear_model, multiclass = _sklearn("linear_model"), _sklearn("multiclass")
    c, f = check_pair(codes, factors)
    rng = np.random.default_rng(seed)
    ks = np.arange(f.shape[1])
    first, second, fixed = (np.concatenate(p) for p in zip(betavae_pairs(f, num_train, batch, rng, ks),
                                                            betavae_pairs(f, num_eval, batch, rng, ks)))
    points = np.abs(c[first] - c[second]).mean(1)
    model = multiclass.OneVsRestClassifier(linear_model.LogisticRegression(solver="liblinear", random_state=seed))
    model.fit(points[:num_train], fixed[:num_train])
    return float(np.mean(model.predict(points[num_train:]) == fixed[num_train:]))


def factorvae_score(codes, factors, num_train: int = NUM_TRAIN, num_eval: int = NUM_TEST, batch: int = BATCH,
                    num_variance: int = NUM_VARIANCE, prune: float = PRUNE, seed: int = 0) -> float:
    """dlib's `compute_factor_vae`: global variances (ddof 1) of the first `num_variance` examples;
    units with std < `prune` are left out; in each group of `batch` examples sharing a factor (drawn
    uniformly from all K) the kept unit of least variance (ddof 1) / global variance votes for it; each
    unit is assigned its most frequent factor over `num_train` groups (factor 0 for a unit with no
    votes, as np.argmax of zeros), and the score is the accuracy of that assignment on `num_eval`."""
    c, f = _pool(codes, factors, num_variance)
    global_var = c[:num_variance].var(0, ddof=1)
    active = np.sqrt(global_var) >= prune
    if not active.any():
        return 0.0
    rng = np.random.default_rng(seed)
    ks = np.arange(f.shape[1])
    index, fixed = (np.concatenate(p) for p in zip(factorvae_groups(f, num_train, batch, rng, ks),
                                                   factorvae_groups(f, num_eval, batch, rng, ks)))
    unit = (c[index][..., active].var(1, ddof=1) / global_var[active]).argmin(1)
    votes = np.zeros((f.shape[1], int(active.sum())), dtype=np.int64)
    np.add.at(votes, (fixed[:num_train], unit[:num_train]), 1)
    return float(np.mean(votes.argmax(0)[unit[num_train:]] == fixed[num_train:]))
