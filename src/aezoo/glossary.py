"""What each number aezoo writes means: unit, which direction is better, a one-line definition.

Read by the report, the comparison page and `aezoo eval`'s table, so a number never appears without
its meaning. Keys not listed here are shown as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    unit: str  # "" for pure numbers
    better: str  # "lower", "higher" or "" (a setting or a count, not a score)
    meaning: str


KEYS: dict[str, Key] = {
    "split": Key("", "", "the data split evaluated"),
    "n_examples": Key("examples", "", "examples in the evaluated split"),
    "recon_mse": Key("per example", "lower", "squared reconstruction error summed over data dimensions"),
    "recon_bce": Key("nats/example", "lower", "Bernoulli cross-entropy of the reconstruction's mean, summed over "
                     "data dimensions (for data in [0, 1])"),
    "psnr": Key("dB", "higher", "peak signal-to-noise ratio of the reconstructions, 10 log10(1 / mean squared error "
                "per dimension), for data in [0, 1]"),
    "neg_elbo": Key("nats/example", "lower", "minus the evidence lower bound (one sample of z): an upper bound on "
                    "-log p(x)"),
    "nll_iwae": Key("nats/example", "lower", "importance-weighted estimate of -log p(x) with nll_iwae_k samples "
                    "(Burda et al. 2016); tighter than neg_elbo"),
    "nll_iwae_k": Key("samples", "", "importance samples per example of nll_iwae"),
    "kl_per_dim": Key("nats/example", "", "KL(q(z_u|x) || N(0, 1)) of each latent unit, averaged over the split"),
    "active_units": Key("units", "", "latent units whose posterior mean varies over the data: Cov_x(E_q[z_u]) > "
                        "0.01 (Burda et al. 2016)"),
    "probe_linear_acc": Key("fraction", "higher", "test accuracy of softmax regression fitted on the frozen codes "
                            "of training examples"),
    "probe_knn_acc": Key("fraction", "higher", "test accuracy of the 10 nearest training codes' majority label"),
    "probe_train_examples": Key("examples", "", "training examples the probes learned from"),
    "finetune_test_error": Key("fraction", "lower", "test error of the classifier initialised from the trained "
                               "encoder (softmax layer on top, every layer fine-tuned by SGD, best validation epoch)"),
    "finetune_val_error": Key("fraction", "lower", "validation error of the fine-tuned classifier at its best epoch"),
    "finetune_best_epoch": Key("epochs", "", "the fine-tuning epoch of lowest validation error, whose weights are "
                               "tested"),
    "finetune_epochs_run": Key("epochs", "", "fine-tuning epochs run before early stopping (or eval.finetune_epochs)"),
    "scratch_test_error": Key("fraction", "lower", "test error of the same classifier trained alike from random "
                              "weights: the baseline of finetune_test_error"),
    "scratch_val_error": Key("fraction", "lower", "validation error of the from-scratch classifier at its best "
                             "epoch"),
    "scratch_best_epoch": Key("epochs", "", "the from-scratch training epoch of lowest validation error"),
    "scratch_epochs_run": Key("epochs", "", "from-scratch training epochs run before early stopping"),
    "logreg_test_error": Key("fraction", "lower", "test error of multinomial logistic regression on the frozen codes "
                             "of the whole training split, L2 chosen on validation (Makhzani & Frey 2014, table 1)"),
    "logreg_val_error": Key("fraction", "lower", "validation error of that logistic regression at the chosen L2"),
    "logreg_l2": Key("", "", "the L2 weight logistic regression chose on the validation split"),
    "logreg_train_examples": Key("examples", "", "training examples logistic regression learned from"),
    "denoise_psnr": Key("dB", "higher", "PSNR of the reconstructions of corrupted inputs against the clean ones"),
    "corrupted_psnr": Key("dB", "", "PSNR of the corrupted inputs themselves: what denoising starts from"),
    "mean_activation": Key("", "", "mean activation of the penalised units (the sparsity target is rho)"),
    "mig": Key("", "higher", "mutual information gap (Chen et al. 2018): per factor, the gap between the two codes "
               "most informative about it, over its entropy, averaged"),
    "betavae_score": Key("fraction", "higher", "beta-VAE metric (Higgins et al. 2017): accuracy of a linear "
                         "classifier naming the factor held fixed in pairs of codes"),
    "factorvae_score": Key("fraction", "higher", "FactorVAE metric (Kim & Mnih 2018): majority-vote accuracy "
                           "naming the fixed factor from the code of least variance"),
    "dci_disentanglement": Key("", "higher", "DCI disentanglement (Eastwood & Williams 2018): each code predicts "
                               "one factor"),
    "dci_completeness": Key("", "higher", "DCI completeness: each factor is captured by one code"),
    "dci_informativeness": Key("", "higher", "DCI informativeness: how well the codes predict the factors, averaged "
                               "over factors: test R^2 of the regressors (metric_protocol papers) or test accuracy "
                               "of the gradient-boosted classifiers (dlib)"),
    "metric_protocol": Key("", "", "the disentanglement metrics' estimators: papers (each as its paper defines it) "
                           "or dlib (disentanglement_lib's, as Locatello et al. 2019's tables)"),
    "sap": Key("", "higher", "separated attribute predictability (Kumar et al. 2018)"),
    "metric_samples": Key("images", "", "images drawn from the factor grid for the disentanglement metrics"),
    "retrieval_p10_euclidean": Key("fraction", "higher", "precision@10: share of a test example's 10 nearest "
                                   "training codes (Euclidean) with its label"),
    "retrieval_p10_cosine": Key("fraction", "higher", "precision@10 with cosine similarity of the codes"),
    "retrieval_p10_pixels_euclidean": Key("fraction", "", "precision@10 of raw inputs (Euclidean): the baseline"),
    "retrieval_p10_pixels_cosine": Key("fraction", "", "precision@10 of raw inputs (cosine): the baseline"),
    "retrieval_train_examples": Key("examples", "", "training examples searched for the nearest neighbours"),
    "codebook_usage": Key("fraction", "higher", "fraction of the codebook chosen at least once on the split "
                          "(per level, coarsest first)"),
    "codebook_perplexity": Key("codes", "higher", "exp(entropy) of the code frequencies: K when all codes are used "
                               "equally (per level)"),
    "bits_per_dim": Key("bits/dim", "lower", "-log2 p(x) bound under the prior and the decoder, per data dimension"),
    "prior_nll": Key("nats/example", "lower", "-log p(codes) under the prior"),
    "decoder_nll": Key("nats/example", "lower", "-log p(x | codes) under the decoder"),
    "bits_per_code": Key("bits", "lower", "-log2 p(codes) per code position under the prior"),
    "recon_mse_top_only": Key("per example", "", "squared error of reconstructions from the top codes alone, the "
                              "bottom map filled with the expected code"),
    "rollout_context": Key("frames", "", "frames observed before the predictions"),
    "rollout_mse": Key("per frame", "lower", "squared error summed over a frame of the prediction d = 1, 2, ... "
                       "steps ahead"),
    "rollout_mse_baseline": Key("per frame", "", "the same error for copying the last frame seen"),
    "log_pd": Key("nats/example", "higher", "TD-VAE: log p_D(x_t2 | z_t2), the decoder's likelihood of frame t2"),
    "log_pb_t1": Key("nats/example", "", "TD-VAE: log p_B(z_t1 | b_t1), the earlier belief at the smoothed state"),
    "log_pt": Key("nats/example", "", "TD-VAE: log p_T(z_t2 | z_t1), the jump's transition density"),
    "log_pb_t2": Key("nats/example", "", "TD-VAE: log p_B(z_t2 | b_t2), the later belief at its own sample"),
    "log_ps": Key("nats/example", "", "TD-VAE: log p_S(z_t1 | z_t2, b_t1, b_t2), the smoothing density"),
    "neg_j": Key("nats/example", "lower", "-J(t1, t2), the TD-VAE loss, on one random pair per sequence"),
    "train_samples_per_s": Key("samples/s", "higher", "median training throughput over the logged intervals"),
}
