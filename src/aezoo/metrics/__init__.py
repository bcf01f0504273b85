"""Disentanglement metrics as pure functions of codes (N, D) and ground-truth factors (N, K).

    aezoo.metrics.mig(codes, factors)              # Chen et al. 2018
    aezoo.metrics.betavae_score(codes, factors)    # Higgins et al. 2017
    aezoo.metrics.factorvae_score(codes, factors)  # Kim & Mnih 2018
    aezoo.metrics.dci(codes, factors)              # Eastwood & Williams 2018: a dict of three
    aezoo.metrics.sap(codes, factors)              # Kumar et al. 2018

Definitions and choices are in `scores`; `aezoo eval` of a run on dsprites reports them all
(`aezoo.evaluation.disentanglement`).
"""

from .scores import (
    betavae_score,
    betavae_score_of_pairs,
    dci,
    dci_importance,
    factorvae_score,
    factorvae_score_of_groups,
    mig,
    mutual_info_matrix,
    sap,
)

__all__ = ["betavae_score", "betavae_score_of_pairs", "dci", "dci_importance", "factorvae_score",
           "factorvae_score_of_groups", "mig", "mutual_info_matrix", "sap"]
