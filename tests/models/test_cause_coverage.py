"""Which cause groups a model learned from, and the incumbent rules served where it learned nothing (issue 3
follow-up 44): the coverage the card records, the rules restricted to one group, ``gnn+rules`` and the rules on a
raw window as ``predict`` and the daemon read them."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from infrabrain.models.baselines import RULE_WEIGHTS, rule_table
from infrabrain.models.cause_coverage import MIN_TRAINED_FAILURES, CauseCoverage, fit_cause_coverage
from infrabrain.models.root_prior import root_relations, split_failure_events
from infrabrain.models.rule_fallback import (FALLBACK_RULES, coverage_note, fallback_rules, window_rule_alerts,
                                             with_rule_fallback)
from infrabrain.simulation.faults import CAUSE_GROUP


def test_coverage_counts_the_training_splits_failures_per_group(small_splits):
    train = small_splits.train
    cov = fit_cause_coverage(train)
    events = split_failure_events(train)
    assert set(cov.failures) == set(CAUSE_GROUP.values())  # every group, 0 where none
    assert sum(cov.failures.values()) == len(events) > 0
    for group, n in cov.failures.items():
        assert n == int((events["group"] == group).sum())
    # the sites' tensors hold the whole run: the failures only its later (validation) time is labelled with are
    # not the training split's
    from infrabrain.models.evaluation import failure_events

    assert len(events) < len(failure_events(train))
    # the root prior counts the same failures (those with a root within reach)
    assert len(root_relations(train)) <= len(events)


def test_untrained_groups_and_what_an_operator_reads():
    cov = CauseCoverage(failures={"memory": 12, "network": 2, "thermal": 0, "power": 1, "software": 0, "other": 9})
    assert cov.untrained() == ("network", "thermal", "power")  # recorded order; software is never listed
    assert cov.untrained(["thermal", "memory", "power"]) == ("thermal", "power")
    assert cov.untrained(min_failures=1) == ("thermal",)
    assert CauseCoverage(failures={"memory": 5}).untrained(["thermal"]) == ("thermal",)  # no count: untrained
    assert MIN_TRAINED_FAILURES == 3
    assert cov.note(("thermal", "power")) == ("the model's training sites held no thermal failure and 1 power "
                                              "failure: it cannot foretell them")
    assert cov.note(("network",)) == "the model's training sites held 2 network failures: it cannot foretell it"
    assert cov.note(()) == ""
    with pytest.raises(ValueError, match="min_failures must be at least 1"):
        cov.untrained(min_failures=0)
    with pytest.raises(ValidationError, match="unknown cause group 'gpu'"):
        CauseCoverage(failures={"gpu": 3})
    with pytest.raises(ValidationError, match="count for 'thermal' is negative"):
        CauseCoverage(failures={"thermal": -1})
    assert CauseCoverage.from_card({}) is None  # a card that does not say claims nothing
    assert CauseCoverage.from_card({"cause_coverage": cov.model_dump()}) == cov


def test_the_note_predict_and_the_demo_print_names_the_rules_only_where_one_watches():
    full = {"memory": 12, "network": 9, "thermal": 5, "power": 4, "software": 0, "other": 9}
    assert coverage_note(None) == "" and coverage_note(CauseCoverage(failures=full)) == ""  # software never counts
    blind_power = CauseCoverage(failures={**full, "power": 1})
    assert coverage_note(blind_power) == "note: the model's training sites held 1 power failure: it cannot foretell it"
    both = CauseCoverage(failures={**full, "power": 0, "thermal": 2})
    assert coverage_note(both) == ("note: the model's training sites held 2 thermal failures and no power failure: "
                                   "it cannot foretell them; the incumbent thermal rules run beside it")


def test_the_rules_of_each_group_add_up_to_the_incumbents_score(small_splits):
    test = small_splits.test_sites
    whole = rule_table(test)
    parts = [rule_table(test, rules) for rules in FALLBACK_RULES.values()]
    assert set(r for rs in FALLBACK_RULES.values() for r in rs) == set(RULE_WEIGHTS)  # every rule watches a group
    np.testing.assert_array_equal(sum(p["score"].to_numpy() for p in parts), whole["score"].to_numpy())
    assert (whole["score"] > 0).any()  # some rule fires, or the sum proves nothing
    assert fallback_rules(["power", "thermal"]) == ("temperature", "thermal_violation")
    assert fallback_rules(["memory", "thermal", "memory"]) == ("temperature", "thermal_violation", "sbe_rate", "xid")
    assert fallback_rules(["network", "power", "other"]) == ()
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['fan'\]"):
        rule_table(test, ("temperature", "fan"))


def test_gnn_plus_rules_ranks_a_fired_rule_above_every_other_row_by_the_rules_weights(small_splits):
    test = small_splits.test_sites
    memory = rule_table(test, FALLBACK_RULES["memory"])
    rng = np.random.default_rng(0)
    gnn = memory[["site", "t", "node"]].assign(score=rng.uniform(0, 1, len(memory)), label=False)
    both = with_rule_fallback(gnn, test, ["memory", "power"])
    fired = memory["score"].to_numpy()
    assert (fired > 0).any() and not (fired > 0).all() and set(np.unique(fired)) <= {0.0, 1.0, 4.0, 5.0}
    np.testing.assert_allclose(both["score"].to_numpy(), gnn["score"].to_numpy() + fired)
    # every row a rule fires on above every row none does; among them, the rules' own order first
    assert both["score"][fired > 0].min() > both["score"][fired == 0].max()
    assert list(both.columns) == list(gnn.columns) and both["label"].eq(gnn["label"]).all()
    assert with_rule_fallback(gnn, test, ["power", "network"]) is gnn  # no rule watches those: the GNN's own
    assert with_rule_fallback(gnn, test, []) is gnn


def _window(run, steps: int = 60):
    names = list(run.metric_names["gpu"])
    gpu = np.asarray(run.metrics["gpu"], dtype=np.float64)[-steps - 1:].copy()
    return gpu, names


def test_rules_on_a_raw_window_name_the_gpu_and_what_fired(small_runs):
    from infrabrain.models.snapshots import graph_from_topology

    run = small_runs[0]
    graph = graph_from_topology(run.topology)
    gpu, names = _window(run)
    temp, xid = names.index("DCGM_FI_DEV_GPU_TEMP"), names.index("DCGM_FI_DEV_XID_ERRORS")
    gpu[:, :, temp] = np.minimum(gpu[:, :, temp], 60.0)
    gpu[:, :, xid] = 0.0
    sbe = names.index("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
    gpu[:, :, sbe] = 0.0
    gpu_ids = graph.component_ids[graph.kind_index["gpu"]]
    node_of = graph.gpu_node()
    metrics = {"gpu": gpu}
    w = 60

    def alerts(groups):
        return window_rule_alerts(graph, metrics, {"gpu": names}, groups, 60.0, w)

    assert alerts(["thermal", "memory"]) == {}  # a quiet window
    gpu[-3, 1, temp] = 91.0  # one scrape over 85 C
    gpu[-5:, 2, temp] = np.nan  # missed scrapes fire nothing
    got = alerts(["thermal"])
    assert got == {int(node_of[1]): [{"rule": "temperature", "group": "thermal", "gpu": str(gpu_ids[1]),
                                      "text": f"GPU {gpu_ids[1]} temperature over 85 C"}]}
    assert alerts(["memory", "power"]) == {}  # the temperature rule watches thermal only
    assert alerts(["power", "network"]) == {}  # no rule watches those
    # the XID gauge: a step to a rule XID within the window fires, with its code
    gpu[-10:, 0, xid] = 48.0
    got = alerts(["memory"])
    assert got == {int(node_of[0]): [{"rule": "xid", "group": "memory", "gpu": str(gpu_ids[0]),
                                      "text": f"GPU {gpu_ids[0]} XID 48"}]}
    # ... a gauge that held the code since before the window does not (it logged nothing new), nor does a
    # code the rules do not watch
    gpu[:, 0, xid] = 48.0
    gpu[-4:, 3, xid] = 13.0
    assert alerts(["memory"]) == {}
    # ... nor does a gap of missed scrapes in a held code, or a code seen before any other (not known to be new)
    gpu[-20:-10, 0, xid] = np.nan
    gpu[:, 5, xid] = np.nan
    gpu[-3:, 5, xid] = 63.0
    assert alerts(["memory"]) == {}
    gpu[-30:, 0, xid] = np.nan  # 48 held, a gap, then 63: new
    gpu[-2:, 0, xid] = 63.0
    assert [a["text"] for a in alerts(["memory"])[int(node_of[0])]] == [f"GPU {gpu_ids[0]} XID 63"]
    gpu[:, 0, xid] = 0.0
    # single-bit ECC errors over 100 an hour
    gpu[:, 4, sbe] = np.linspace(0, 150, len(gpu))
    assert [a["rule"] for a in alerts(["memory"])[int(node_of[4])]] == ["sbe_rate"]
    # a window without GPU telemetry has nothing for the rules to read
    assert window_rule_alerts(graph, {}, {}, ["thermal"], 60.0, w) == {}
