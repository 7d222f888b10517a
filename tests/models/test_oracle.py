"""The simulator-truth oracles: re-derived fault plans, hazards, and that they beat the incumbents' rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def test_failure_hazard_is_a_probability_and_short_leads_are_more_urgent() -> None:
    from infrabrain.models.oracle import failure_hazard

    e = np.array([0.0, 600.0, 3600.0, 4 * 3600.0])
    for mode in ("hbm", "leaf", "cooling", "psu_node"):
        h = failure_hazard(mode, e)
        assert h.shape == e.shape and np.all((h >= 0) & (h <= 1))
    # a PSU precursor (median lead 0.7 h) is far likelier to end within the hour than an HBM one (12 h)
    assert failure_hazard("psu_node", np.array([0.0]))[0] > 5 * failure_hazard("hbm", np.array([0.0]))[0]
    with pytest.raises(ValueError, match="unknown fault mode 'nope'"):
        failure_hazard("nope", e)


def test_fault_plan_is_rederived_and_a_mismatch_is_refused(small_runs) -> None:
    from infrabrain.models.oracle import fault_plan_of

    run = small_runs[0]
    plan = fault_plan_of(run)
    assert len(plan.failures) > 0
    other = dataclasses.replace(run, seed=run.seed + 7)
    with pytest.raises(ValueError, match="does not reproduce"):
        fault_plan_of(other)


def test_oracles_beat_the_rules_on_held_out_rows(small_splits) -> None:
    from infrabrain.models.baselines import feature_table, rule_table
    from infrabrain.models.evaluation import attach_truth, evaluate_scores, failure_events
    from infrabrain.models.oracle import oracle_table

    test = small_splits.test_sites
    _, truth = feature_table(test)
    events = failure_events(test)
    rules = evaluate_scores(attach_truth(rule_table(test), truth), events, probabilistic=False)
    obs_rows = attach_truth(oracle_table(test, "observable"), truth)
    assert len(obs_rows) == len(truth)  # the same rows as every model
    obs = evaluate_scores(obs_rows, events)
    clair = evaluate_scores(attach_truth(oracle_table(test, "clairvoyant"), truth), events)
    # (on these few failures the clairvoyant is not always above the observable oracle: knowing a look-alike is
    # benign also zeroes the rows where a software failure happens to coincide with it)
    for oracle in (obs, clair):
        assert oracle["pr_auc"] > rules["pr_auc"] + 0.05
        assert oracle["event_recall_at_p50_precursor"] >= rules["event_recall_at_p50_precursor"]
    with pytest.raises(ValueError, match="oracle kind"):
        oracle_table(test, "psychic")
