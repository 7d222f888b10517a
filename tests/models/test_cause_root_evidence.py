"""The cause head's belief as evidence in the root-cause ranking (issue 3 follow-up 34): what the published mix
on a site's topology says each cause group starts at, and how the head's probabilities move the ranking."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from infrabrain.models.cause_root_evidence import CAUSE_EVIDENCE_FLOOR, cause_log_evidence, cause_root_table
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS
from infrabrain.models.occlusion import candidates
from infrabrain.models.explain import Contribution, quoted_part_component
from infrabrain.models.root_cause_ranking import candidate_relations, rank_root_causes, root_score_parts
from infrabrain.models.published_root_prior import relation_shares
from infrabrain.models.snapshots import graph_from_topology
from infrabrain.simulation.federation import federation_specs
from infrabrain.simulation.spec import FaultSpec
from infrabrain.simulation.topology import build_topology


def _graph(racks: int = 4):
    spec = federation_specs(1, 0)[0].model_copy(update={
        "faults": FaultSpec(), "rows": 1, "racks_per_row": racks, "racks_per_cooling": 2})
    return graph_from_topology(build_topology(spec))


def _group(table, g: str, rel: str) -> float:
    return float(table.given[rel][table.groups.index(g)])


def test_the_table_says_which_groups_start_where():
    g = _graph()
    table = cause_root_table(g, TYPED_CAUSE_GROUPS)
    assert table is not None and table.groups == TYPED_CAUSE_GROUPS
    assert table.mix.sum() == pytest.approx(1.0) and (table.mix > 0).all()
    for rel, row in table.given.items():
        assert row.sum() == pytest.approx(1.0), rel
    # a cooling unit and a leaf switch start only thermal and network failures; a PDU only power ones
    assert _group(table, "thermal", "cooling@2") == pytest.approx(1.0)
    assert _group(table, "network", "leaf@1") == pytest.approx(1.0)
    assert _group(table, "power", "pdu@1") == pytest.approx(1.0)
    # a node's own failure is never a memory one (HBM and SRAM start at a GPU), a GPU's never a network one
    assert _group(table, "memory", "node@0") == 0.0 and _group(table, "memory", "gpu@1") > 0.3
    assert _group(table, "network", "gpu@1") == 0.0 and _group(table, "network", "node@0") > 0
    # the same relations, in the same proportions, as the published prior lays on the topology
    shares = relation_shares(g, _typed_shares())
    assert set(table.given) == set(shares)


def _typed_shares() -> dict[str, float]:
    from infrabrain.simulation.faults import CAUSE_GROUP, CAUSE_SHARES

    return {c: s for c, s in CAUSE_SHARES.items() if CAUSE_GROUP[c] in TYPED_CAUSE_GROUPS}


def test_the_mix_is_each_groups_share_of_node_failures():
    """``mix`` weighs each group by the node failures it causes on the site (a cooling failure takes many
    nodes): summed over relations, the published shares split by group give it back."""
    g = _graph()
    table = cause_root_table(g, TYPED_CAUSE_GROUPS)
    shares = relation_shares(g, _typed_shares())
    for i, grp in enumerate(table.groups):
        assert table.mix[i] == pytest.approx(sum(shares[r] * table.given[r][i] for r in shares))


def test_a_head_that_says_the_mix_adds_nothing_and_a_sure_one_is_bounded():
    table = cause_root_table(_graph(), TYPED_CAUSE_GROUPS)
    rels = [*table.given, "rack@1", "leaf@3"]
    np.testing.assert_allclose(cause_log_evidence(table, dict(zip(table.groups, table.mix)), rels), 0.0,
                               atol=1e-12)
    sure = cause_log_evidence(table, {"thermal": 1.0}, rels)
    by = dict(zip(rels, sure))
    assert by["cooling@2"] > 2.0 and by["leaf@1"] == pytest.approx(math.log(CAUSE_EVIDENCE_FLOOR))
    assert sure.min() >= math.log(CAUSE_EVIDENCE_FLOOR) - 1e-12
    assert by["rack@1"] == 0.0 and by["leaf@3"] == 0.0  # relations the mix starts nothing in: no evidence
    # with next to no floor a sure head all but rules a relation out
    assert cause_log_evidence(table, {"thermal": 1.0}, ["leaf@1"], floor=1e-12)[0] < -20


@pytest.mark.parametrize("causes, error", [
    ({"thermal": float("nan")}, "finite and non-negative"),
    ({"thermal": -0.1, "memory": 1.1}, "finite and non-negative"),
    ({"software": 1.0}, "no probability on any cause group"),
    ({}, "no probability on any cause group"),
])
def test_bad_probabilities_are_refused_by_name(causes, error):
    table = cause_root_table(_graph(), TYPED_CAUSE_GROUPS)
    with pytest.raises(ValueError, match=error):
        cause_log_evidence(table, causes, ["node@0"])


def test_unknown_groups_and_a_bad_floor_are_refused():
    with pytest.raises(ValueError, match="'cosmic'"):
        cause_root_table(_graph(), ("memory", "cosmic"))
    table = cause_root_table(_graph(), TYPED_CAUSE_GROUPS)
    for floor in (0.0, 1.5):
        with pytest.raises(ValueError, match="floor"):
            cause_log_evidence(table, {"memory": 1.0}, ["node@0"], floor=floor)


def test_the_head_moves_the_ranking_where_the_window_does_not():
    """Nothing in the window (flat drops, no prior): the group the head names decides between the node's cooling
    unit, its leaf switch, its PDU and its GPUs; a material drop still outweighs it."""
    g = _graph()
    node = int(g.node_global[0])
    cand = candidates(g, node, 3)
    rel = candidate_relations(g, cand)
    at = {r: int(cand[rel.index(r)]) for r in ("cooling@2", "leaf@1", "pdu@1", "gpu@1", "node@0")}
    flat = np.zeros(len(cand))
    assert rank_root_causes(g, cand, flat, causes={"thermal": 0.95, "other": 0.05})[0] == at["cooling@2"]
    assert rank_root_causes(g, cand, flat, causes={"network": 0.95, "other": 0.05})[0] == at["leaf@1"]
    assert rank_root_causes(g, cand, flat, causes={"power": 0.95, "other": 0.05})[0] == at["pdu@1"]
    memory = rank_root_causes(g, cand, flat, causes={"memory": 0.95, "other": 0.05})
    assert int(g.kind[memory[0]]) == int(g.kind[at["gpu@1"]])
    plain = rank_root_causes(g, cand, flat)
    assert rank_root_causes(g, cand, flat, causes={}) == plain  # no head: as before
    # the head is read only where its sentence names the group, and not when it names the catch-all "other"
    assert rank_root_causes(g, cand, flat, causes={"thermal": 0.45, "other": 0.3, "memory": 0.25}) == plain
    assert rank_root_causes(g, cand, flat, causes={"other": 0.9, "network": 0.1}) == plain
    drops = flat.copy()
    drops[list(cand).index(at["node@0"])] = 5.0  # the node's own window explains the risk
    assert rank_root_causes(g, cand, drops, causes={"thermal": 0.95, "other": 0.05})[0] == at["node@0"]


def test_the_part_an_alert_names_puts_its_component_first_and_leaves_the_head_out():
    """Issue 3 follow-up 43: a GPU's PCIe replays are its bus failing, whatever the leaf switch's score; the head's
    group is not read where the alert names "other" at a part. The rest keep the order of their scores."""
    g = _graph()
    node = int(g.node_global[0])
    cand = candidates(g, node, 3)
    rel = candidate_relations(g, cand)
    at = {r: int(cand[rel.index(r)]) for r in ("leaf@1", "gpu@1")}
    drops = np.zeros(len(cand))
    drops[list(cand).index(at["leaf@1"])] = 3.0
    drops[list(cand).index(at["gpu@1"])] = 1.0
    network = {"network": 0.95, "other": 0.05}
    assert rank_root_causes(g, cand, drops, causes=network)[0] == at["leaf@1"]
    ranked = rank_root_causes(g, cand, drops, causes=network, part_at=at["gpu@1"])
    assert ranked[0] == at["gpu@1"]
    assert ranked[1:] == [c for c in rank_root_causes(g, cand, drops) if c != at["gpu@1"]]  # no cause evidence
    assert not root_score_parts(g, cand, drops, causes=network, part_at=at["gpu@1"])["cause_evidence"].any()
    assert root_score_parts(g, cand, drops, causes=network)["cause_evidence"].any()
    outside = int(np.setdiff1d(np.arange(g.n), cand)[0])
    with pytest.raises(ValueError, match=f"part's component {outside} is not a root-cause candidate"):
        rank_root_causes(g, cand, drops, part_at=outside)


def test_the_part_lies_on_the_first_quoted_component_where_its_metric_is_a_parts_precursor():
    def first(comp: int, metric: str) -> list[Contribution]:  # quoted first, beside a smaller contributor
        return [Contribution(comp, "c", "gpu", 2.0, metric), Contribution(1, "n", "node", 1.0, "node_load1")]

    assert quoted_part_component(first(7, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER")) == 7
    assert quoted_part_component(first(3, "node_edac_correctable_errors_total")) == 3
    assert quoted_part_component(first(3, "node_infiniband_port_errors_received_total")) is None
    assert quoted_part_component(first(7, "")) is None and quoted_part_component([]) is None


def test_tables_are_built_once_per_graph_and_dropped_with_it():
    from infrabrain.models.occlusion import GRAPH_CACHE

    g = _graph()
    first = GRAPH_CACHE.cause_table(g, TYPED_CAUSE_GROUPS)
    assert GRAPH_CACHE.cause_table(g, TYPED_CAUSE_GROUPS) is first
    other = _graph(racks=6)
    assert GRAPH_CACHE.cause_table(other, TYPED_CAUSE_GROUPS) is not first
    key = id(g)
    assert key in GRAPH_CACHE._entries
    del g, first
    gc.collect()
    assert key not in GRAPH_CACHE._entries and id(other) in GRAPH_CACHE._entries
