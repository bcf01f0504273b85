"""How useful a model's features are: a linear probe and a k-NN classifier on its codes, the
denoising autoencoder's denoising quality, and the sparse autoencoder's activations (`aezoo eval` keys
probe_linear_acc, probe_knn_acc, denoise_psnr, corrupted_psnr, mean_activation).

The papers of the regularised autoencoders judge features by a classifier trained on them (Vincent et
al. 2010, table 3: stacked denoising 1.28% test error on MNIST; Rifai et al. 2011, table 1: contractive
1.14%, denoising 1.18%; there an MLP or SVM on top, fine-tuned). aezoo measures the frozen codes
`model.encode(x)` (flattened) with two fixed, cheap classifiers instead, so that every model is judged
alike:
- linear: multinomial logistic regression on the codes standardised with the training codes' mean
  and standard deviation, trained by full-batch L-BFGS (at most LINEAR_ITERS iterations, L2 weight
  LINEAR_L2), learned from the first `eval.probe_train` training examples (fewer when the codes are
  so wide that these would pass MAX_TRAIN_NUMBERS numbers; eval.json's probe_train_examples says how many);
- k-NN: the majority label of the K_NEIGHBOURS = 10 nearest of those training codes in Euclidean
  distance, ties going to the nearest neighbour's label; distances by matrix products, in chunks.
Both are scored on the evaluated split (`eval.split`, test by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.capabilities import Denoising
from ..models.regularised import SparseAE
from ..plots import save_histogram
from .base import EVAL_SEED, EvalContext, evaluator, inference
from .reconstruction import psnr

K_NEIGHBOURS = 10
LINEAR_ITERS = 200
LINEAR_L2 = 1e-4
MAX_TRAIN_NUMBERS = 2**27  # fewer training codes for very wide codes (flattened code maps): 512 MB at most


def codes_products(a: torch.Tensor):
    """The two products with the fixed codes a (N, F) that each loss evaluation of the linear probe makes,
    as functions: (w (C, F), b (C,)) -> a w^T + b (N, C), and g (N, C) -> g^T a (C, F). On the CPU they
    run through oneDNN (the kernels of torch.compile's CPU linear layers), a^T packed once into its
    layout (a copy of a's size): with C = 10 columns, MKL's products, which torch.mm and autograd call,
    are about 3x slower on one thread (bench/eval_speed.py). Elsewhere, or without oneDNN, torch.mm."""
    mkldnn = torch.ops.mkldnn
    if a.device.type != "cpu" or not torch.backends.mkldnn.is_available() or not hasattr(mkldnn, "_linear_pointwise"):
        return (lambda w, b: torch.addmm(b, a, w.T)), (lambda g: g.T @ a)
    packed = mkldnn._reorder_linear_weight(a.T.contiguous(), 16)
    return ((lambda w, b: mkldnn._linear_pointwise(a, w, b, "none", [], "")),
            (lambda g: mkldnn._linear_pointwise(g.T.contiguous(), packed, None, "none", [], "")))


def fit_linear_probe(train: torch.Tensor, train_y: torch.Tensor, classes: int, iters: int = LINEAR_ITERS,
                     l2: float = LINEAR_L2, bar=None):
    """Softmax regression fitted to codes `train` (N, F) with integer labels `train_y` (N,) in
    [0, classes): mean cross-entropy + l2/2 ||W||^2 minimised by L-BFGS, on codes standardised with the
    training codes' statistics. Returns the classifier: codes (Q, F) -> predicted labels (Q,). `bar`, a
    progress bar (`progress.progress`), counts the evaluations of the loss.

    The gradient is written out, not left to autograd: with logits l = a w^T + b and p = softmax(l),
    d/dl of the mean cross-entropy is (p - onehot(y)) / N, so dw = (p - onehot(y))^T a / N + l2 w and
    db = sum_n (p - onehot(y))_n / N, the two products with the codes by `codes_products`."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features (dead units) stay 0
    a = (train - mean) / std
    logits_of, weight_gradient = codes_products(a)
    w = torch.zeros(classes, a.shape[1], device=a.device)  # nn.Linear's (classes, width) layout
    bias = torch.zeros(classes, device=a.device)
    rows = torch.arange(len(a), device=a.device)
    opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        logits = logits_of(w, bias)
        log_norm = logits.logsumexp(1)
        loss = (log_norm - logits[rows, train_y]).mean() + 0.5 * l2 * w.pow(2).sum()
        g = (logits - log_norm.unsqueeze(1)).exp_()
        g[rows, train_y] -= 1
        g /= len(a)
        w.grad, bias.grad = weight_gradient(g) + l2 * w, g.sum(0)
        if bar is not None:
            bar.update(1)
        return loss

    with torch.no_grad():
        opt.step(closure)
    if bar is not None:
        bar.close()
    return lambda codes: F.linear((codes - mean) / std, w, bias).argmax(1)


def linear_probe_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor,
                          iters: int = LINEAR_ITERS, l2: float = LINEAR_L2, bar=None) -> float:
    """Accuracy on (test, test_y) of the softmax regression `fit_linear_probe` fits to (train, train_y)."""
    classes = int(max(train_y.max(), test_y.max())) + 1
    predict = fit_linear_probe(train, train_y, classes, iters, l2, bar)
    with torch.no_grad():
        return float((predict(test) == test_y).float().mean())


def neighbours(train: torch.Tensor, query: torch.Tensor, k: int = K_NEIGHBOURS,
               metrics: tuple[str, ...] = ("euclidean",), chunk: int = 1024, progress=None) -> dict[str, torch.Tensor]:
    """For each metric, the indices (Q, k) of the k nearest rows of `train` (N, F) to each row of
    `query` (Q, F), nearest first, all from one matrix product q.t per chunk of queries. Euclidean:
    ||q - t||^2 = ||q||^2 - 2 q.t + ||t||^2, and ||q||^2 does not change the ranking; cosine: the
    largest q.t / (||q|| ||t||), where 1 / ||q|| does not change the ranking either (norms below 1e-12
    count as 1e-12, as in F.normalize: a zero vector is at the same distance from every row). The
    cosine ranking is the one of the normalised vectors' products, up to float rounding. `progress`
    wraps the chunks' iterator (`EvalContext.progress`)."""
    for metric in metrics:
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be euclidean or cosine, got {metric!r}")
    k = min(k, len(train))
    sq = train.pow(2).sum(1)
    inverse_norm = sq.sqrt().clamp(min=1e-12).reciprocal()
    found: dict[str, list[torch.Tensor]] = {m: [] for m in metrics}
    chunks = query.split(chunk)
    for q in chunks if progress is None else progress(chunks):
        products = q @ train.T
        for metric, out in found.items():
            score = sq - 2 * products if metric == "euclidean" else -(products * inverse_norm)
            out.append(score.topk(k, dim=1, largest=False).indices)
    return {m: torch.cat(out) if out else query.new_zeros(0, k, dtype=torch.long) for m, out in found.items()}


def nearest(train: torch.Tensor, query: torch.Tensor, k: int = K_NEIGHBOURS, metric: str = "euclidean",
            chunk: int = 1024) -> torch.Tensor:
    """Indices (Q, k) of the k nearest rows of `train` (N, F) to each row of `query` (Q, F), nearest
    first, in Euclidean or cosine distance (`neighbours`)."""
    return neighbours(train, query, k, (metric,), chunk)[metric]


def vote(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """The majority label (Q,) of each row of neighbours' labels (Q, k), nearest first; ties go to the
    nearest neighbour's label."""
    votes = F.one_hot(labels, classes).sum(1).float()
    votes += 0.5 * F.one_hot(labels[:, 0], classes)  # decides ties only: counts are integers
    return votes.argmax(1)


def knn_predict(train: torch.Tensor, train_y: torch.Tensor, query: torch.Tensor, k: int = K_NEIGHBOURS,
                chunk: int = 1024) -> torch.Tensor:
    """Labels (Q,) of `query` (Q, F) by majority vote of its k nearest rows of `train` (N, F) in
    Euclidean distance (`nearest`), ties to the nearest neighbour's label."""
    return vote(train_y[nearest(train, query, k, "euclidean", chunk)], int(train_y.max()) + 1)


def code_neighbours(ctx: EvalContext, n: int, k: int) -> dict[str, torch.Tensor]:
    """`neighbours` of the split's codes among the first n training codes, in both metrics, for every
    evaluator that asks (the k-NN probe and retrieval search the same codes): computed once."""
    def search() -> dict[str, torch.Tensor]:
        train, query = ctx.train_codes(n), ctx.split_codes()
        return neighbours(train, query, k, ("euclidean", "cosine"), progress=lambda chunks: ctx.progress(
            chunks, f"nearest neighbours of {len(query):,} codes among {len(train):,}"))

    return ctx.once(("neighbours", n, k), search)


def labelled(model, ds) -> bool:
    """Images or vectors whose training split has labels: what the probes and retrieval need."""
    return ds.kind in ("image", "vector") and "train" in ds.labels


@evaluator(labelled)
@inference
def feature_probes(ctx: EvalContext) -> dict:
    """probe_linear_acc and probe_knn_acc of the model's codes (module docstring)."""
    ds, e = ctx.dataset, ctx.cfg.eval
    test_y = ds.labels.get(ctx.split)
    if test_y is None:
        return {}
    test = ctx.split_codes()
    n = min(e.probe_train or len(ds.x["train"]), max(1, MAX_TRAIN_NUMBERS // test.shape[1]))
    train = ctx.train_codes(n)
    train_y = ds.labels["train"][:n].long()
    test_y = test_y[: len(test)].long()
    knn = float((vote(train_y[code_neighbours(ctx, n, K_NEIGHBOURS)["euclidean"]], int(train_y.max()) + 1)
                 == test_y).float().mean())
    bar = ctx.progress(None, f"linear probe on {len(train):,} x {train.shape[1]:,} codes: L-BFGS loss evaluations")
    return {"probe_linear_acc": linear_probe_accuracy(train, train_y, test, test_y, bar=bar), "probe_knn_acc": knn,
            "probe_train_examples": len(train)}


@evaluator(lambda model, ds: ds.kind in ("image", "vector") and isinstance(model, Denoising))
@inference
def denoising(ctx: EvalContext) -> dict:
    """denoise_psnr: PSNR of the reconstructions of corrupted inputs against the clean ones;
    corrupted_psnr: PSNR of the corrupted inputs themselves (what denoising starts from). The
    corruption is the model's own, drawn with a fixed seed."""
    noisy_sq, recon_sq, dims = 0.0, 0.0, 0
    with torch.random.fork_rng():  # a fixed draw that leaves the caller's generators as they were
        torch.manual_seed(EVAL_SEED)
        for x in ctx.progress(ctx.batches(), "denoising"):
            noisy = ctx.model.corrupt(x)
            noisy_sq += float((noisy - x).pow(2).sum())
            recon_sq += float((ctx.model.reconstruct(noisy) - x).pow(2).sum())
            dims += x.numel()
    return {"denoise_psnr": psnr(recon_sq / dims), "corrupted_psnr": psnr(noisy_sq / dims)}


@evaluator(lambda model, ds: isinstance(model, SparseAE) and ds.kind in ("image", "vector"))
@inference
def activation_histograms(ctx: EvalContext) -> dict:
    """plots/activations.png (every activation of the penalised layers) and plots/unit_means.png (each
    unit's mean activation rho_hat_j, which the penalty pulls to rho), over the evaluated split;
    mean_activation in eval.json."""
    model = ctx.model
    acts = []
    for x in ctx.progress(ctx.batches(), "activations"):
        layers = model.layers(x)
        acts.append(torch.cat([layers[i] for i in model.config.penalised_layers], 1).cpu())
    acts = torch.cat(acts)
    rho = model.config.rho
    title = f"activations of the penalised units (rho = {rho:g})"
    save_histogram(acts, ctx.run.plots / "activations.png", title, "activation")
    save_histogram(
        acts.mean(0), ctx.run.plots / "unit_means.png", f"mean activation per unit (rho = {rho:g})", "rho_hat_j"
    )
    return {"mean_activation": float(acts.mean())}
