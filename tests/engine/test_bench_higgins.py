"""bench/beta_vae_higgins.py's comparison of the betas over seeds: the exact Mann-Whitney p against its
closed forms, and the comparison over the steps every run has reached."""

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def higgins():
    spec = importlib.util.spec_from_file_location("beta_vae_higgins", REPO / "bench" / "beta_vae_higgins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_p_equals_the_counts_of_u_by_hand(higgins):
    """Four against four: 70 splits; U = 16 in one, 15 in one, 14 in two (the partitions of 16 - U into at
    most four parts of at most four), and U's distribution is symmetric about 8."""
    low, high = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]
    assert higgins.pairs_won(high, low) == 16
    assert higgins.exact_p(high, low) == pytest.approx(1 / math.comb(8, 4))
    fourteen = [0.1, 0.2, 0.4, 0.5], [0.3, 0.6, 0.7, 0.8]  # the second group wins 14 of 16
    assert higgins.pairs_won(fourteen[1], fourteen[0]) == 14
    assert higgins.exact_p(fourteen[1], fourteen[0]) == pytest.approx(4 / 70)
    assert higgins.exact_p(low, high) == 1.0
    assert higgins.exact_p(fourteen[0], fourteen[1]) == pytest.approx(1 - 2 / 70)  # P(U >= 2) = 1 - P(U <= 1)


def test_ties_count_half_and_equal_groups_are_no_evidence(higgins):
    assert higgins.pairs_won([1.0, 2.0], [1.0, 0.0]) == 3.5
    assert higgins.exact_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_comparison_over_the_steps_every_run_reached(higgins):
    def curve(values_by_step):
        return {"curve": [{"step": s, **dict.fromkeys(higgins.SCORES, v)} for s, v in values_by_step.items()]}

    runs = {"beta4_s0": curve({10: 0.9, 20: 0.9}), "beta4_s1": curve({10: 0.8, 20: 0.8}),
            "beta1_s0": curve({10: 0.1, 20: 0.1, 30: 0.1}), "beta1_s1": curve({10: 0.85})}
    out = higgins.beta_comparison(runs)
    assert list(out) == ["10"]  # beta1_s1 stops at 10, beta4 at 20
    mig = out["10"]["mig"]
    assert mig["pairs_won_by_beta4"] == 3 and mig["pairs"] == 4
    assert mig["p_one_sided"] == pytest.approx(2 / 6)  # U >= 3 in {3, 4} of the 6 splits
    assert mig["beta4"]["mean"] == pytest.approx(0.85) and mig["beta4"]["sd"] == pytest.approx(0.05 * math.sqrt(2))
    assert higgins.beta_comparison({"beta4_s0": curve({10: 0.9}), "beta1_s0": curve({10: 0.1})}) == {}
