"""Small estimators the disentanglement metrics are built from, in numpy.

Discretised mutual information, the estimator of disentanglement_lib (Locatello et al. 2019), not
that of Chen et al. 2018: each unit of the codes (the posterior means, one point per example) is cut
into equal-width bins between its min and max (`discretize`: disentanglement_lib's
`_histogram_discretize`, np.digitize on np.histogram's edges, 20 bins for its MIG), and I(z_j; v_k)
is the plug-in mutual information of the binned unit and the factor (`mutual_information`, what
sklearn.metrics.mutual_info_score computes, in nats; `entropy` likewise for H(v_k)). Chen et al.'s
reference code for MIG (beta-TCVAE) bins nothing: it estimates I(z_j; v_k) = H(z_j) - H(z_j | v_k)
from samples of the encoder's distribution q(z | x) and its density, by Monte Carlo over the data
set, so the two give different numbers for the same model.

Also a multinomial logistic regression (the beta-VAE metric's linear classifier), a multi-output
Lasso (the DCI importance estimate), a 1-D histogram classifier (SAP's discrete factors) and the
FactorVAE metric's majority vote. Inputs are numpy arrays or torch tensors: `codes` (N, D) floats,
`factors` (N, K) integer factor indices.
"""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(a, dtype=None) -> np.ndarray:
    """A numpy copy-free view of a numpy array or a (CPU or GPU) torch tensor."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    return a.astype(dtype, copy=False) if dtype is not None else a


def check_pair(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float64 codes and (N, K) int64 factors, with the same N (a 1-D array is one column)."""
    c, f = as_numpy(codes, np.float64), as_numpy(factors)
    c, f = (c[:, None] if c.ndim == 1 else c), (f[:, None] if f.ndim == 1 else f)
    if c.ndim != 2 or f.ndim != 2 or len(c) != len(f):
        raise ValueError(f"codes (N, D) and factors (N, K) must have the same N; got {c.shape} and {f.shape}")
    if not np.issubdtype(f.dtype, np.integer) and not np.all(f == np.round(f)):
        raise ValueError("factors must be integer indices (discretise continuous factors first)")
    if not np.isfinite(c).all():
        raise ValueError("codes contain NaN or inf")
    return c, f.astype(np.int64)


def discretize(x: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of (N, D) into `bins` equal-width bins between its min and max, the max in the last
    bin: (N, D) ints 0..bins-1. The bins of disentanglement_lib's `_histogram_discretize` (numbered
    1..bins there); a value lying exactly on an edge may land on the other side of it by rounding."""
    lo, hi = x.min(0), x.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((x - lo) / width).astype(np.int64), 0, bins - 1)


def entropy(labels: np.ndarray) -> np.ndarray:
    """Plug-in entropy in nats of each column of (N, K) integer labels: (K,)."""
    out = []
    for col in labels.T:
        p = np.bincount(col - col.min()) / len(col)
        p = p[p > 0]
        out.append(-(p * np.log(p)).sum())
    return np.array(out)


def mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plug-in I(a_i; b_j) in nats between the columns of two (N, Da), (N, Db) integer arrays: (Da, Db)."""
    a, b = a - a.min(0), b - b.min(0)
    out = np.zeros((a.shape[1], b.shape[1]))
    for i, ai in enumerate(a.T):
        na = ai.max() + 1
        for j, bj in enumerate(b.T):
            nb = bj.max() + 1
            joint = np.bincount(ai * nb + bj, minlength=na * nb).reshape(na, nb) / len(ai)
            pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
            nz = joint > 0
            out[i, j] = (joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum()
    return out


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale by the training columns' mean and std (constant columns become 0)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, np.inf)
    return [(a - mean) / std for a in (train, *others)]


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-4):
    """Multinomial logistic regression fitted to (x, y) (`logistic_regression`): a function (M, D) ->
    (M,) of the predicted classes. x should be standardised."""
    w, b = logistic_regression(x, y, n_classes, l2)
    return lambda z: np.argmax(np.asarray(z, dtype=np.float64) @ w + b, axis=1)


def logistic_regression(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-4, iters: int = 50,
                        tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """The weights W (D, C) and b (C,) of the softmax of x W + b minimising the mean cross-entropy +
    l2 / 2 ||W||^2, by Newton's method in float64.

    The problem is convex and has (D + 1) C parameters (the beta-VAE metric: 10 units, 5 factors), so
    each Newton step solves its (D + 1) C system exactly and the fit ends at the optimum (gradient
    below `tol`), where a quasi-Newton method stops after its iteration cap. b is not penalised: the
    loss is flat along b + t 1 (softmax's shift), a direction the gradient never has, so the least-
    squares solution of each step leaves it alone. A backtracking line search keeps every step a descent."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    onehot = np.eye(n_classes)[np.asarray(y, dtype=np.int64)]
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.ones((d + 1, 1))
    penalty[d] = 0.0  # no penalty on b
    theta = np.zeros((d + 1, n_classes))

    def loss_and_probs(t: np.ndarray) -> tuple[float, np.ndarray]:
        logits = xb @ t
        logits -= logits.max(1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(1, keepdims=True))
        nll = -(onehot * (logits - log_z)).sum() / n
        return nll + 0.5 * l2 * (penalty * t * t).sum(), np.exp(logits - log_z)

    loss, probs = loss_and_probs(theta)
    for _ in range(iters):
        grad = xb.T @ (probs - onehot) / n + l2 * penalty * theta
        if np.abs(grad).max() < tol:
            break
        # Hessian blocks (c, e): xb^T diag(p_c (1[c = e] - p_e)) xb / n, plus the penalty on the diagonal
        hess = np.empty((d + 1, n_classes, d + 1, n_classes))
        for c in range(n_classes):
            for e in range(c, n_classes):
                w = probs[:, c] * ((c == e) - probs[:, e])
                hess[:, c, :, e] = hess[:, e, :, c] = (xb * w[:, None]).T @ xb / n
        size = (d + 1) * n_classes
        hess = hess.reshape(size, size) + np.diag(np.repeat(l2 * penalty[:, 0], n_classes))
        step = np.linalg.lstsq(hess, -grad.reshape(size), rcond=None)[0].reshape(d + 1, n_classes)
        slope, scale = (grad * step).sum(), 1.0
        while scale > 1e-10:
            new_loss, new_probs = loss_and_probs(theta + scale * step)
            if new_loss <= loss + 1e-4 * scale * slope:
                break
            scale /= 2
        else:  # no step lowers the loss any more: the optimum to float precision
            break
        theta, loss, probs = theta + scale * step, new_loss, new_probs
    return theta[:d], theta[d]


def fit_lasso(x: np.ndarray, y: np.ndarray, alpha: float, iters: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """Weights W (D, T) minimising (1/2N) ||y - x W||^2 + alpha ||W||_1 for each target column, by
    cyclic coordinate descent on the Gram matrix (no intercept: centre x and y first)."""
    n = len(x)
    gram, xy = x.T @ x / n, x.T @ y / n  # (D, D), (D, T)
    w = np.zeros((x.shape[1], y.shape[1]))
    for _ in range(iters):
        largest = 0.0
        for j in range(len(w)):
            if gram[j, j] <= 0:
                continue
            rho = xy[j] - gram[j] @ w + gram[j, j] * w[j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0.0) / gram[j, j]
            largest = max(largest, float(np.abs(new - w[j]).max()))
            w[j] = new
        if largest < tol:
            break
    return w


def histogram_classifier(code: np.ndarray, label: np.ndarray, bins: int = 20):
    """A 1-D classifier: the code's range cut into `bins` equal-width bins, each predicting its
    majority label (the most frequent overall for empty bins). Returns a function (M,) -> (M,)."""
    lo, hi = code.min(), code.max()
    width = (hi - lo) / bins if hi > lo else 1.0
    which = lambda c: np.clip(((c - lo) / width).astype(np.int64), 0, bins - 1)
    counts = np.zeros((bins, label.max() + 1))
    np.add.at(counts, (which(code), label), 1)
    counts[counts.sum(1) == 0] = np.bincount(label, minlength=counts.shape[1])
    table = counts.argmax(1)
    return lambda c: table[which(np.asarray(c, dtype=np.float64))]


def group_sampler(values: np.ndarray, rng: np.random.Generator):
    """Draws members of `values` (N,) by value: returns `draw(v (M,), size) -> (M, size)` indices i
    with values[i] == v[m], uniform within each value's members, with replacement."""
    order = np.argsort(values, kind="stable")
    uniq, start, count = np.unique(values[order], return_index=True, return_counts=True)

    def draw(v: np.ndarray, size: int) -> np.ndarray:
        slot = np.searchsorted(uniq, v)
        offset = (rng.random((len(v), size)) * count[slot][:, None]).astype(np.int64)
        return order[start[slot][:, None] + offset]

    return draw
