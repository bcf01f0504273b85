"""The disentanglement metrics, each a pure function of a representation and ground-truth factors.

Every function takes `codes` (N, D) (e.g. posterior means) and `factors` (N, K) integer factor
indices of the same N examples, as numpy arrays or torch tensors, and a `seed` for its random
choices, so equal inputs give equal scores. Factors with one value only are left out.

The two metrics that intervene on the data (hold one factor fixed, draw the others) sample their
groups from the given examples: a partner of an example with factor k = v is drawn from the examples
with factor k = v. When the examples are drawn uniformly from a product of independent factors
(dSprites), such a group has exactly the distribution the papers sample from the generator; the
cost is that examples are reused between groups, which adds variance, not bias, and shrinks as N
grows. So every metric needs one set of encoded images only. `betavae_score_of_pairs` and
`factorvae_score_of_groups` take pairs and groups that the caller rendered and encoded instead (the
papers' own protocol; `aezoo.data.dsprites.DSprites.sample_pairs` and `sample_fixed` draw them).

- `betavae_score` (Higgins et al. 2017, sec. 3): a point is the mean |z1 - z2| over `batch` pairs
  that agree on one factor k (chosen uniformly); a linear classifier (multinomial logistic
  regression) predicts k from it; the score is its accuracy on held-out points.
- `factorvae_score` (Kim & Mnih 2018, sec. 4): codes are divided by their std over all examples;
  for a group of `batch` examples sharing a value of factor k, the unit of least variance votes for
  k; a majority-vote classifier from units to factors is fitted on training votes, and the score is
  its accuracy on held-out votes.
- `mig` (Chen et al. 2018, eq. 6): codes discretised into 20 equal-width bins per unit; for each
  factor the gap between the two largest I(z_j; v_k), divided by H(v_k); averaged over factors.
- `dci` (Eastwood & Williams 2018): importance R_jk = |weight| of unit j in a Lasso regression of
  factor k on the standardised codes (one of the paper's two regressors; one-hot targets, summed,
  for categorical factors). Disentanglement: sum_j rho_j (1 - H_K(P_j.)), P_jk = R_jk / sum_k R_jk,
  rho_j = unit j's share of the total importance; completeness: mean_k (1 - H_D(P_.k)); entropies
  in base K and D. Informativeness: held-out R^2 of the Lasso predictions, mean over factors (the
  paper reports the error; NRMSE = sqrt(1 - R^2)).
- `sap` (Kumar et al. 2018, sec. 3): a score S_jk per unit and factor: R^2 of a linear fit of the
  factor on the unit alone for continuous factors, and for categorical ones the held-out accuracy of
  a 1-D histogram classifier, rescaled as (acc - base) / (1 - base) with base the majority-class
  rate so that, like R^2, 0 means nothing learned; SAP is the mean over factors of the gap between
  the two largest S_jk.
"""

from __future__ import annotations

import numpy as np

from .estimators import (
    as_numpy,
    check_pair,
    discretize,
    entropy,
    fit_lasso,
    fit_logistic,
    group_sampler,
    histogram_classifier,
    mutual_information,
    standardize,
)


def _varying(f: np.ndarray) -> np.ndarray:
    """Indices of the factors that take more than one value."""
    return np.flatnonzero(f.max(0) > f.min(0))


def _discrete_mask(discrete, k: int) -> np.ndarray:
    mask = np.zeros(k, dtype=bool) if discrete is None else np.asarray(discrete, dtype=bool)
    if mask.shape != (k,):
        raise ValueError(f"discrete must name each of the {k} factors (a sequence of {k} booleans)")
    return mask


def _split(n: int, train_frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    cut = round(train_frac * n)
    return perm[:cut], perm[cut:]


def betavae_score_of_pairs(codes_a, codes_b, fixed, n_train: int, n_classes: int | None = None) -> float:
    """The beta-VAE metric (Higgins et al. 2017) from pairs drawn by the caller: `codes_a`, `codes_b`
    (P, L, D) hold the codes of P points' L pairs, the pairs of point p agreeing on factor `fixed[p]`.
    A linear classifier predicts fixed[p] from mean_l |a - b|; fitted on the first `n_train` points,
    the score is its accuracy on the others."""
    a, b = as_numpy(codes_a, np.float64), as_numpy(codes_b, np.float64)
    k = as_numpy(fixed).astype(np.int64)
    x_train, x_eval = standardize(np.abs(a[:n_train] - b[:n_train]).mean(1), np.abs(a[n_train:] - b[n_train:]).mean(1))
    predict = fit_logistic(x_train, k[:n_train], n_classes or int(k.max()) + 1)
    return float((predict(x_eval) == k[n_train:]).mean())


def betavae_pairs(factors: np.ndarray, n: int, batch: int, rng: np.random.Generator,
                  ks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The beta-VAE metric's points drawn from N examples with integer `factors` (N, K): `first`,
    `second` (n, batch) example indices, each pair agreeing on factor `fixed[p]` (n,), which is drawn
    uniformly from `ks` (default: the varying factors); the partner is drawn from the examples that
    share the first one's value of that factor (module docstring)."""
    ks = _varying(factors) if ks is None else ks
    partner = {k: group_sampler(factors[:, k], rng) for k in ks}
    fixed = rng.choice(ks, n)
    first, second = np.empty((n, batch), dtype=np.int64), np.empty((n, batch), dtype=np.int64)
    for k in ks:
        m = np.flatnonzero(fixed == k)
        first[m] = rng.integers(0, len(factors), (len(m), batch))
        second[m] = partner[k](factors[first[m].ravel(), k], 1).reshape(len(m), batch)  # same value of factor k
    return first, second, fixed


def betavae_score(codes, factors, n_train: int = 10_000, n_eval: int = 5_000, batch: int = 64, seed: int = 0) -> float:
    """The beta-VAE metric with its pairs drawn from the given examples (module docstring): points of
    `batch` pairs, the fixed factor uniform over the varying factors (chance: 1 / their number)."""
    c, f = check_pair(codes, factors)
    rng = np.random.default_rng(seed)
    first, second, fixed = (np.concatenate(p) for p in zip(betavae_pairs(f, n_train, batch, rng),
                                                            betavae_pairs(f, n_eval, batch, rng)))
    return betavae_score_of_pairs(c[first], c[second], fixed, n_train, f.shape[1])


def factorvae_score_of_groups(group_codes, fixed, scale, n_train: int, prune: float = 0.0) -> float:
    """The FactorVAE metric (Kim & Mnih 2018) from groups drawn by the caller: `group_codes` (P, L, D)
    holds the codes of P groups whose members share the value of factor `fixed[p]`, `scale` (D,) the
    codes' std over the whole data. The unit of least variance of codes / scale votes for fixed[p]; a
    majority vote from units to factors is fitted on the first `n_train` groups and scored on the
    others. Units with scale <= `prune` (collapsed) do not vote."""
    g, s = as_numpy(group_codes, np.float64), as_numpy(scale, np.float64)
    k = as_numpy(fixed).astype(np.int64)
    active = s > prune
    if not active.any():
        return 0.0
    unit = (g[..., active] / s[active]).var(1, ddof=1).argmin(1)
    counts = np.zeros((int(active.sum()), int(k.max()) + 1), dtype=np.int64)
    np.add.at(counts, (unit[:n_train], k[:n_train]), 1)
    return float((counts.argmax(1)[unit[n_train:]] == k[n_train:]).mean())


def factorvae_groups(factors: np.ndarray, n: int, batch: int, rng: np.random.Generator,
                     ks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The FactorVAE metric's groups drawn from N examples with integer `factors` (N, K): `index`
    (n, batch) example indices whose members share the value of factor `fixed[p]` (n,), drawn
    uniformly from `ks` (default: the varying factors); the shared value is that of a random example,
    so each value comes as often as it occurs."""
    ks = _varying(factors) if ks is None else ks
    members = {k: group_sampler(factors[:, k], rng) for k in ks}
    fixed = rng.choice(ks, n)
    index = np.empty((n, batch), dtype=np.int64)
    for k in ks:
        m = np.flatnonzero(fixed == k)
        shared = factors[rng.integers(0, len(factors), len(m)), k]
        index[m] = members[k](shared, batch)
    return index, fixed


def factorvae_score(codes, factors, n_train: int = 10_000, n_eval: int = 5_000, batch: int = 64, seed: int = 0,
                    prune: float = 0.0) -> float:
    """The FactorVAE metric with its groups drawn from the given examples (module docstring): groups of
    `batch` sharing one factor, uniform over the varying factors (chance: 1 / their number)."""
    c, f = check_pair(codes, factors)
    rng = np.random.default_rng(seed)
    index, fixed = (np.concatenate(p) for p in zip(factorvae_groups(f, n_train, batch, rng),
                                                   factorvae_groups(f, n_eval, batch, rng)))
    return factorvae_score_of_groups(c[index], fixed, c.std(0), n_train, prune)


def mutual_info_matrix(codes, factors, bins: int = 20) -> np.ndarray:
    """I(z_j; v_k) in nats, (D, K), with each unit discretised into `bins` equal-width bins."""
    c, f = check_pair(codes, factors)
    return mutual_information(discretize(c, bins), f)


def mig(codes, factors, bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018): mean over factors of (I_(1) - I_(2)) / H(v_k), the
    two largest mutual informations of a unit with the factor. 1: each factor in one unit alone."""
    c, f = check_pair(codes, factors)
    ks = _varying(f)
    f = f[:, ks]
    mi = mutual_information(discretize(c, bins), f)  # (D, K)
    top = -np.sort(-mi, axis=0)
    second = top[1] if len(top) > 1 else 0.0
    return float(np.mean((top[0] - second) / entropy(f)))


def sap(codes, factors, discrete=None, bins: int = 20, train_frac: float = 2 / 3, seed: int = 0) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018). `discrete` marks categorical factors
    (default: all treated as continuous, scored by R^2)."""
    c, f = check_pair(codes, factors)
    rng = np.random.default_rng(seed)
    mask = _discrete_mask(discrete, f.shape[1])
    train, test = _split(len(c), train_frac, rng)
    scores = []
    for k in _varying(f):
        if mask[k]:
            y = f[:, k]
            base = np.bincount(y[test]).max() / len(test)
            col = []
            for code in c.T:
                acc = (histogram_classifier(code[train], y[train], bins)(code[test]) == y[test]).mean()
                col.append((acc - base) / (1 - base) if base < 1 else 0.0)
        else:
            zc, yc = c - c.mean(0), f[:, k] - f[:, k].mean()
            denom = np.sqrt((zc**2).sum(0) * (yc**2).sum())
            col = np.where(denom > 0, (zc.T @ yc) / np.where(denom > 0, denom, 1.0), 0.0) ** 2
        scores.append(np.sort(np.asarray(col, dtype=np.float64))[::-1])
    gaps = [s[0] - (s[1] if len(s) > 1 else 0.0) for s in scores]
    return float(np.mean(gaps))


def dci_importance(codes, factors, discrete=None, alpha: float | None = None, train_frac: float = 2 / 3,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The importance matrix R (D, K) and the held-out R^2 per factor (K,) of Lasso regressions of each
    factor on the standardised codes. `alpha` defaults to 4 / sqrt(N_train): four standard errors of
    the correlation of independent variables, so that units unrelated to a factor get no importance."""
    c, f = check_pair(codes, factors)
    rng = np.random.default_rng(seed)
    mask = _discrete_mask(discrete, f.shape[1])
    train, test = _split(len(c), train_frac, rng)
    alpha = 4 / np.sqrt(len(train)) if alpha is None else alpha
    x_train, x_test = standardize(c[train], c[test])
    ks = _varying(f)
    importance, r2 = np.zeros((c.shape[1], len(ks))), np.zeros(len(ks))
    for i, k in enumerate(ks):
        y = np.eye(f[:, k].max() + 1)[f[:, k]] if mask[k] else f[:, k : k + 1].astype(np.float64)
        y_train, y_test = standardize(y[train], y[test])
        w = fit_lasso(x_train, y_train, alpha)  # (D, T)
        importance[:, i] = np.abs(w).sum(1)
        total = (y_test**2).sum()
        r2[i] = 1 - ((y_test - x_test @ w) ** 2).sum() / total if total > 0 else 0.0
    return importance, r2


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 - H(p) / log(base) for each row of p (rows summing to 1); 1 when base is 1."""
    if base <= 1:
        return np.ones(len(p))
    logs = np.log(np.where(p > 0, p, 1.0))
    return 1 + (p * logs).sum(1) / np.log(base)


def dci(codes, factors, discrete=None, alpha: float | None = None, train_frac: float = 2 / 3,
        seed: int = 0) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018): {"disentanglement", "completeness", "informativeness"}."""
    r, r2 = dci_importance(codes, factors, discrete, alpha, train_frac, seed)
    d, k = r.shape
    total = r.sum()
    if total == 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(r2.mean())}
    per_unit = r.sum(1)
    used = per_unit > 0
    disent = _one_minus_entropy(r[used] / per_unit[used, None], k)
    per_factor = r.sum(0)
    found = per_factor > 0
    complete = np.zeros(k)
    complete[found] = _one_minus_entropy((r[:, found] / per_factor[found]).T, d)
    return {"disentanglement": float((per_unit[used] / total * disent).sum()),
            "completeness": float(complete.mean()),
            "informativeness": float(r2.mean())}
