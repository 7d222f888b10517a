"""One-run canary audit: the statistics, and the audit of the real trainer with DP on and off."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from infrabrain.privacy.audit import audit_from_scores, epsilon_lower_bound, one_run_audit, p_value
from infrabrain.privacy.audit_task import classification_loss, make_canary_task, negative_loss_scores
from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.dp_training import DPConfig, train_dp
from infrabrain.privacy.ledger import PrivacyLedger
from infrabrain.privacy.nonprivate import train_nonprivate


def test_p_value_without_delta_is_the_binomial_tail():
    q = 1 / (1 + math.exp(-1.0))
    assert p_value(100, 50, 40, 1.0, 0.0) == pytest.approx(stats.binom.sf(39, 50, q))
    assert p_value(100, 50, 40, 1.0, 1e-3) > p_value(100, 50, 40, 1.0, 0.0)  # delta only weakens the test


def test_lower_bound_is_sound_on_randomised_response():
    # An exactly eps-DP mechanism: each guess is right with probability e^eps / (1 + e^eps).
    rng = np.random.default_rng(0)
    eps, r = 1.0, 2000
    bounds = []
    for _ in range(20):
        v = int((rng.random(r) < 1 / (1 + math.exp(-eps))).sum())
        bounds.append(epsilon_lower_bound(r, r, v, delta=0.0))
    assert np.mean(np.array(bounds) > eps) <= 0.15  # at most ~5 % expected above the truth
    assert np.median(bounds) > 0.7  # and the bound is not vacuous
    assert epsilon_lower_bound(200, 80, 40, 1e-5) == 0.0


def test_audit_from_scores_counts_guesses():
    included = np.array([True] * 10 + [False] * 10)
    perfect = audit_from_scores(np.r_[np.ones(10), np.zeros(10)], included, k_plus=5, k_minus=5, delta=1e-5)
    assert perfect.correct == 10 and perfect.epsilon_lower_bound > 0
    with pytest.raises(ValueError, match="k_plus"):
        audit_from_scores(np.zeros(20), included, k_plus=15, k_minus=15, delta=1e-5)


def test_audit_sees_the_leak_without_dp_and_stays_below_the_accounted_epsilon_with_dp(tmp_path):
    task = make_canary_task(n_base=500, m=200)
    cfg = DPConfig(optimizer="adam", lr=1e-3, expected_batch_size=64, epochs=40, noise_multiplier=1.0)

    def nonprivate(ds):
        return train_nonprivate(task.make_model(), ds, classification_loss, config=cfg, seed=0).model

    off = one_run_audit(nonprivate, task.base, task.canaries, negative_loss_scores, k_plus=40, k_minus=40,
                        delta=1e-5, rng=np.random.default_rng(1))
    assert off.epsilon_lower_bound > 1.0, off

    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=20.0, accountant="rdp"))
    accounted: list[float] = []

    def private(ds):
        res = train_dp(task.make_model(), ds, classification_loss, config=cfg, ledger=ledger)
        accounted.append(res.epsilon_total)
        return res.model

    on = one_run_audit(private, task.base, task.canaries, negative_loss_scores, k_plus=40, k_minus=40,
                       delta=1e-5, rng=np.random.default_rng(1))
    assert on.epsilon_lower_bound <= accounted[0]
    assert on.epsilon_lower_bound < off.epsilon_lower_bound
