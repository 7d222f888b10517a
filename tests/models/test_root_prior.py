"""The root-kind prior of the root-cause ranking: counted from the training failures, validated, stored in the
model card, and deciding the ranking only where no drop does."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from infrabrain.models.evaluation import failure_events
from infrabrain.models.occlusion import candidates
from infrabrain.models.root_cause_ranking import rank_root_causes
from infrabrain.models.features import KINDS
from infrabrain.models.root_prior import RootPrior, fit_root_prior


#: Where each kind of root sits relative to the node that fails, in the simulator's topology.
_SIM_RELATION = {"node": "node@0", "gpu": "gpu@1", "leaf": "leaf@1", "pdu": "pdu@1", "cooling": "cooling@2"}


def test_fit_counts_where_the_training_failures_started(small_splits):
    train = small_splits.train
    prior = fit_root_prior(train)
    last = {}  # the training period's last snapshot per site: the sites' tensors hold the whole run
    for si, ti in train.index:
        last[si] = max(last.get(si, 0), int(train.sites[si].timestamps[ti]))
    by_hand: Counter[str] = Counter()
    for e in failure_events(train).itertuples():  # each failure's root kind, placed by the simulator's layout
        if e.tf - 3600 <= last[e.site]:  # labelled inside the training period
            by_hand[_SIM_RELATION[KINDS[int(train.sites[e.site].graph.kind[e.root])]]] += 1
    assert prior is not None and sum(by_hand.values()) > 0
    assert prior.counts == dict(by_hand) and prior.failures == sum(by_hand.values())


def test_fit_without_failures_gives_no_prior(small_splits):
    from dataclasses import replace

    from infrabrain.models.snapshots import SnapshotDataset

    train = small_splits.train
    quiet = SnapshotDataset([replace(s, y=np.zeros_like(s.y)) for s in train.sites], window=train.window,
                            pool=train.pool)
    assert fit_root_prior(quiet) is None  # no labelled failure: the ranking stays by drop alone


@pytest.mark.parametrize("counts, failures, error", [
    ({"router@1": 3}, 3, "not 'kind@hops'"),
    ({"leaf@x": 3}, 3, "not 'kind@hops'"),
    ({"leaf@9": 3}, 3, "not 'kind@hops'"),
    ({"leaf@1": -1, "node@0": 2}, 1, "negative"),
    ({"leaf@1": 2, "node@0": 2}, 5, "sum to 4"),
])
def test_bad_prior_is_refused_naming_the_problem(counts, failures, error):
    with pytest.raises(ValueError, match=error):
        RootPrior(counts=counts, failures=failures)


def test_log_prior_splits_a_relations_count_among_its_candidates():
    prior = RootPrior(counts={"node@0": 9, "gpu@1": 15, "leaf@1": 3}, failures=27)
    rel = ["node@0", "gpu@1", "gpu@1", "gpu@1", "gpu@1", "leaf@1", "leaf@3", "spine@2"]
    lp = prior.log_prior(rel)
    assert lp[0] == pytest.approx(math.log(10)) and lp[1] == pytest.approx(math.log(16 / 4))
    assert lp[5] == pytest.approx(math.log(4))  # the node's own leaf switch
    assert lp[6] == pytest.approx(0.0) and lp[7] == pytest.approx(0.0)  # never a root in training: add-one only


def test_prior_orders_candidates_only_where_no_drop_decides(small_splits):
    from infrabrain.models.root_cause_ranking import candidate_relations

    g = small_splits.test_sites.sites[0].graph
    node = int(g.node_global[0])
    cand = candidates(g, node, 3)
    rel = candidate_relations(g, cand)
    assert rel[list(cand).index(node)] == "node@0"
    own_leaf = int(cand[rel.index("leaf@1")])
    gpu = int(cand[rel.index("gpu@1")])
    prior = RootPrior(counts={"node@0": 40, "gpu@1": 40, "leaf@1": 12, "cooling@2": 5, "pdu@1": 3}, failures=100)
    flat = np.zeros(len(cand))
    ranked = rank_root_causes(g, cand, flat, prior)
    # nothing in the window: the node, then its own leaf switch (the GPU count is split among its GPUs)
    assert ranked[:2] == [node, own_leaf]
    drops = flat.copy()
    drops[list(cand).index(gpu)] = 3.0  # one GPU's window explains the risk: evidence outweighs the prior
    assert rank_root_causes(g, cand, drops, prior)[0] == gpu
    with pytest.raises(ValueError, match="exactly one node"):
        candidate_relations(g, cand[cand != node])


def test_card_round_trip():
    prior = RootPrior(counts={"node@0": 2, "gpu@1": 1}, failures=3)
    assert RootPrior.from_card({"root_prior": prior.model_dump()}) == prior
    assert RootPrior.from_card({}) is None and RootPrior.from_card({"root_prior": None}) is None
    with pytest.raises(ValueError, match="kind@hops"):
        RootPrior.from_card({"root_prior": {"counts": {"router@1": 1}, "failures": 1}})
    with pytest.raises(ValueError, match="RootPrior"):  # an edited card: not a mapping at all
        RootPrior.from_card({"root_prior": ["node@0", 3]})


def _first_site(small_splits):
    g = small_splits.test_sites.sites[0].graph
    node = int(g.node_global[0])
    cand = candidates(g, node, 3)
    ids = [str(g.component_ids[c]) for c in cand]
    return g, node, cand, ids


def test_sibling_evidence_is_the_other_dependent_nodes_excess_risk(small_splits):
    from infrabrain.models.root_cause_ranking import sibling_evidence

    g, node, cand, ids = _first_site(small_splits)
    names = [str(g.component_ids[c]) for c in g.node_global]
    assert names[:2] == ["r00-n00", "r00-n01"] and len(names) == 6  # the fixture: a leaf switch per rack of two
    logits = np.array([0.0, 2.0, -3.0, -3.0, -3.0, -3.0])  # the median is -3: r00-n01 stands 5 above it
    ev = dict(zip(ids, sibling_evidence(g, cand, logits)))
    assert ev["leaf-r00"] == pytest.approx(5.0)  # its other node, r00-n01, is at risk too
    assert ev["spine-1"] == 0.0  # under a spine: five other nodes, one of them at risk (the median: no common cause)
    assert ev["leaf-r01"] == 0.0  # another rack's leaf reaches r00-n01, r02-n00, r02-n01: one of three
    spread = np.array([0.0, 4.0, -3.0, 2.0, 3.0, 5.0])  # much of the site at risk together
    ev = dict(zip(ids, sibling_evidence(g, cand, spread)))  # site median 2.5: excesses 1.5, 0, 0, 0.5, 2.5
    assert ev["spine-1"] == pytest.approx(0.5) and ev["leaf-r01"] == pytest.approx(1.5)
    assert ev["pdu-r00-a"] == 0.0  # feeds only the explained node
    assert all(ev[i] == 0.0 for i in ids if i.startswith("r00-n00"))  # the node itself and its GPUs
    unscored = logits.copy()
    unscored[1] = np.nan  # r00-n01 not scored: left out, not read as 0
    assert dict(zip(ids, sibling_evidence(g, cand, unscored)))["leaf-r00"] == 0.0
    assert not sibling_evidence(g, cand, np.full(6, np.nan)).any()
    with pytest.raises(ValueError, match="the site has 6 nodes"):
        sibling_evidence(g, cand, logits[:5])


def test_a_cooling_unit_is_credited_for_a_minority_of_its_nodes(small_splits):
    from infrabrain.models.root_cause_ranking import SIBLING_QUANTILE, sibling_evidence

    g, node, cand, ids = _first_site(small_splits)
    assert ids.count("crac-1") == 1 and SIBLING_QUANTILE["cooling"] == 0.65  # the fixture: one unit cools all 3 racks
    # two of the unit's five other nodes at risk, in the other racks: a cooling failure takes only its hottest nodes
    two_of_five = np.array([2.0, -3.0, 2.0, -3.0, 2.0, -3.0])  # median -0.5: r01-n00 and r02-n00 stand 2.5 above
    ev = dict(zip(ids, sibling_evidence(g, cand, two_of_five)))
    assert ev["crac-1"] == pytest.approx(1.5)  # the 0.65 quantile of 0, 0, 0, 2.5, 2.5 (the median was 0)
    assert ev["leaf-r00"] == 0.0 and ev["spine-1"] == 0.0  # r00-n01 is quiet; a spine still asks for the median
    one_of_five = np.array([2.0, -3.0, 2.0, -3.0, -3.0, -3.0])
    assert dict(zip(ids, sibling_evidence(g, cand, one_of_five)))["crac-1"] == 0.0  # one node on its own: no cause


def test_a_rack_at_risk_with_its_neighbours_points_at_their_cooling_unit(small_splits):
    from infrabrain.models.root_cause_ranking import sibling_evidence

    g, node, cand, ids = _first_site(small_splits)
    cooling, leaf = int(cand[ids.index("crac-1")]), int(cand[ids.index("leaf-r00")])
    prior = RootPrior(counts={"node@0": 40, "gpu@1": 40, "leaf@1": 8, "cooling@2": 4}, failures=92)
    flat = np.zeros(len(cand))
    # the explained rack's other node at risk, and one node of each other rack: what a failing cooling unit does
    heat = np.array([0.0, 6.0, 6.0, -3.0, -3.0, 6.0])  # median 3: r00-n01, r01-n00 and r02-n01 stand 3 above it
    ev = dict(zip(ids, sibling_evidence(g, cand, heat)))
    assert ev["crac-1"] == pytest.approx(3.0)  # three of its five other nodes
    # r00-n01 stands 3 above the median, and the 0.65 quantile of the neighbouring racks' nodes (0, 0, 3, 3) is 2.85:
    # all but 0.15 of it is explained away by what the racks share
    assert ev["leaf-r00"] == pytest.approx(0.15)
    ranked = rank_root_causes(g, cand, flat, prior, heat)
    assert ranked.index(cooling) < ranked.index(leaf)  # without the contrast the leaf's larger prior came first
    # a leaf failure: its rack stands out alone, the neighbouring racks stay quiet, and it keeps its evidence whole
    leaf_down = np.array([0.0, 6.0, -3.0, -3.0, -3.0, -3.0])
    ev = dict(zip(ids, sibling_evidence(g, cand, leaf_down)))
    assert ev["leaf-r00"] == pytest.approx(9.0) and ev["crac-1"] == 0.0
    assert rank_root_causes(g, cand, flat, prior, leaf_down)[0] == leaf


def test_a_sibling_that_went_down_counts_as_the_most_at_risk(small_splits):
    from infrabrain.models.root_cause_ranking import sibling_evidence, silent_nodes
    from infrabrain.models.snapshots import build_snapshot

    test = small_splits.test_sites
    site = test.sites[0]
    ev = failure_events(test)
    steps = np.searchsorted(site.timestamps, ev["tf"].to_numpy())
    ok = (ev["site"].to_numpy() == 0) & (steps >= test.window + 2) & (steps + 10 < len(site.timestamps))
    e = ev[ok].iloc[0]  # a node of the held-out site that fails: before, it runs; after, it is silent
    step = int(np.searchsorted(site.timestamps, e.tf))
    before = build_snapshot(site, step - 2, test.window, pool=test.pool)
    after = build_snapshot(site, step + 10, test.window, pool=test.pool)  # down for the last 10 minutes
    assert not silent_nodes(before, site.graph)[int(e.node)]
    assert silent_nodes(after, site.graph)[int(e.node)]
    g, node, cand, ids = _first_site(small_splits)
    logits = np.array([0.0, np.nan, -3.0, -1.0, -3.0, -3.0])  # r00-n01 has no score: left out unless it went down
    silent = np.zeros(6, dtype=bool)
    assert dict(zip(ids, sibling_evidence(g, cand, logits)))["leaf-r00"] == 0.0
    silent[1] = True  # it went down within the window: as at risk as the most at-risk node (r00-n00, 3 above)
    assert dict(zip(ids, sibling_evidence(g, cand, logits, silent=silent)))["leaf-r00"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="silent has shape"):
        sibling_evidence(g, cand, logits, silent=silent[:5])


def test_nodes_at_risk_together_point_at_what_they_share(small_splits):
    g, node, cand, ids = _first_site(small_splits)
    leaf = int(cand[ids.index("leaf-r00")])
    prior = RootPrior(counts={"node@0": 40, "gpu@1": 40, "leaf@1": 4}, failures=84)
    flat = np.zeros(len(cand))
    alone = np.array([0.0, -3.0, -3.0, -3.0, -3.0, -3.0])
    together = np.array([0.0, 2.0, -3.0, -3.0, -3.0, -3.0])
    assert leaf not in rank_root_causes(g, cand, flat, prior, alone)[:3]  # a node's own fault: the leaf is unlikely
    assert rank_root_causes(g, cand, flat, prior, together)[0] == leaf  # both of the leaf's nodes at risk at once


def test_incident_records_give_the_relations_the_labels_give(small_runs, small_splits):
    """A site's incident log (failed node, root component) yields the relations its labelled failures do: the
    fleet prior of sites whose telemetry is never windowed counts like the training prior."""
    import pandas as pd

    from infrabrain.models.root_prior import incident_root_relations, root_relations, run_root_relations
    from infrabrain.models.snapshots import graph_from_topology

    run = small_runs[-1]  # the held-out site: small_splits.test_sites holds its whole run
    from_log = run_root_relations(run)
    from_labels = root_relations(small_splits.test_sites)
    assert len(from_log) > 0
    assert Counter(from_log["relation"]) == Counter(from_labels["relation"])
    assert np.abs(np.sort(from_log["tf"].to_numpy()) - np.sort(from_labels["tf"].to_numpy())).max() <= 60
    graph = graph_from_topology(run.topology)
    node, gpu = graph.component_ids[graph.kind_index["node"][0]], graph.component_ids[graph.kind_index["gpu"][0]]
    records = pd.DataFrame({"t": [10, 20, 30], "node_id": [node, node, "no-such-node"],
                            "root_id": [gpu, "no-such-root", gpu]})
    assert incident_root_relations(graph, records).to_dict("list") == {"tf": [10], "relation": ["gpu@1"]}
    with pytest.raises(ValueError, match=r"lack column\(s\) \['root_id'\]"):
        incident_root_relations(graph, records.drop(columns="root_id"))


def test_a_time_split_counts_only_the_failures_its_snapshots_are_labelled_with(small_runs):
    """The sites' tensors hold the whole run: a training split must not count the test period's failures, and the
    training and test splits of one site (an hour apart) count each failure at most once."""
    from infrabrain.models.root_prior import root_relations
    from infrabrain.models.snapshots import HORIZON_S, SnapshotDataset, make_splits

    sp = make_splits(small_runs, heldout=0, fractions=(0.5, 0.75))
    whole = SnapshotDataset(sp.train.sites, sp.train.window, stride=1, pool=sp.train.pool)
    every, train, test = root_relations(whole), root_relations(sp.train), root_relations(sp.test_time)
    assert len(every) > len(train) > 0 and len(test) > 0, "fixture needs failures in both periods"
    assert len(train) + len(test) <= len(every)
    for rel, split in ((train, sp.train), (test, sp.test_time)):
        for si, tf in zip(rel["site"], rel["tf"]):
            ends = [int(split.sites[s].timestamps[t]) for s, t in split.index if s == si]
            first_hour = split.time_range[0] == 0 and tf <= min(ends)  # before any window: kept when from 0
            assert first_hour or any(tf - HORIZON_S <= t < tf for t in ends)  # a snapshot labelled with it
    assert Counter(every["relation"]) == Counter(fit_root_prior(whole).counts)


def test_a_drop_every_gpu_shares_points_at_none_of_them(small_splits):
    """Occluding any GPU of a node whose GPUs all run above typical lowers its risk alike: that shared drop is no
    evidence for one GPU, and must not crowd the node's switch out of the top three (issue 3 follow-up 27, draw 1's
    abrupt leaf failure). A GPU that stands out from its siblings keeps its lead."""
    from infrabrain.models.root_cause_ranking import gpu_relative_drops

    g, node, cand, ids = _first_site(small_splits)
    kinds = [KINDS[int(g.kind[c])] for c in cand]
    gpus = [j for j, k in enumerate(kinds) if k == "gpu"]
    assert len(gpus) >= 2
    leaf = int(cand[ids.index("leaf-r00")])
    prior = RootPrior(counts={"node@0": 40, "gpu@1": 40, "leaf@1": 12}, failures=92)
    shared = np.zeros(len(cand))
    shared[gpus] = 1.5
    assert np.allclose(gpu_relative_drops(g, cand, shared)[gpus], 0.0)
    assert leaf not in rank_root_causes(g, cand, shared, prior, relative_gpus=False)[:3]  # the old ranking
    assert rank_root_causes(g, cand, shared, prior)[:2] == [node, leaf]
    one = shared.copy()
    one[gpus[0]] = 4.0  # a failing GPU: 2.5 above its siblings
    rel = gpu_relative_drops(g, cand, one)
    assert rel[gpus[0]] == pytest.approx(2.5) and np.allclose(rel[gpus[1:]], 0.0)
    assert rank_root_causes(g, cand, one, prior)[0] == int(cand[gpus[0]])
    other = [j for j, k in enumerate(kinds) if k != "gpu"]
    assert np.array_equal(rel[other], one[other])  # the node and the infrastructure keep their drops
    alone = np.array([j for j in range(len(cand)) if j not in gpus[1:]])  # a node with one GPU: nothing to compare
    assert gpu_relative_drops(g, cand[alone], one[alone]).tolist() == one[alone].tolist()


def test_a_node_drop_its_siblings_share_is_explained_away(small_splits):
    """A leaf switch's cascade shows InfiniBand errors on each of its nodes, so occluding the explained node's own
    window lowers its logit most, and without explaining away the node outranks its leaf. Risk its rack sibling
    shows as well counts for the leaf, not the node (issue 3 follow-up 36); a node failing beside quiet siblings
    keeps its whole drop."""
    from infrabrain.models.root_cause_ranking import root_score_parts

    g, node, cand, ids = _first_site(small_splits)
    leaf = int(cand[ids.index("leaf-r00")])
    prior = RootPrior(counts={"node@0": 40, "gpu@1": 40, "leaf@1": 8}, failures=88)
    drops = np.zeros(len(cand))
    drops[ids.index("r00-n00")] = 6.0  # the node's own precursor: 1.6 logits of prior behind it, the leaf's 5 ahead
    together = np.array([0.0, 2.0, -3.0, -3.0, -3.0, -3.0])  # r00-n01, under the same leaf, 5 above the median
    assert rank_root_causes(g, cand, drops, prior, together, explain_away=False)[0] == node  # as before
    assert rank_root_causes(g, cand, drops, prior, together)[0] == leaf
    parts = root_score_parts(g, cand, drops, prior, together)
    away = dict(zip(ids, parts["explained_away"]))
    assert away["r00-n00"] == pytest.approx(-5.0)  # the leaf's sibling evidence, at most the node's drop
    assert all(v == 0.0 for k, v in away.items() if k != "r00-n00")
    summed = sum(parts[k] for k in ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence",
                                    "explained_away"))
    np.testing.assert_allclose(parts["total"], summed)
    off = root_score_parts(g, cand, drops, prior, together, explain_away=False)
    assert not off["explained_away"].any()
    np.testing.assert_allclose(off["total"] - parts["total"], -parts["explained_away"])
    alone = np.array([0.0, -3.0, -3.0, -3.0, -3.0, -3.0])  # a node's own fault: nothing shared to explain it away
    assert not root_score_parts(g, cand, drops, prior, alone)["explained_away"].any()
    assert rank_root_causes(g, cand, drops, prior, alone)[0] == node
    small = drops.copy()
    small[ids.index("r00-n00")] = 2.0
    assert dict(zip(ids, root_score_parts(g, cand, small, prior, together)["explained_away"]))["r00-n00"] == -2.0
    assert not root_score_parts(g, cand, drops, prior)["explained_away"].any()  # no logits: no sibling evidence


def test_explaining_away_reads_the_active_candidates_only(small_splits):
    """A rack is never ranked first, so its sibling evidence explains nothing away; a GPU's drop is its own, and
    bad input is refused by name."""
    from infrabrain.models.root_cause_ranking import explained_away

    g, node, cand, ids = _first_site(small_splits)
    kinds = [KINDS[int(g.kind[c])] for c in cand]
    assert "rack" in kinds and "gpu" in kinds
    drops = np.full(len(cand), 4.0)
    sibling = np.zeros(len(cand))
    sibling[kinds.index("rack")] = 3.0
    assert not explained_away(g, cand, drops, sibling).any()
    sibling[ids.index("leaf-r00")] = 1.5
    out = explained_away(g, cand, drops, sibling)
    assert out[ids.index("r00-n00")] == -1.5 and np.count_nonzero(out) == 1
    drops[ids.index("r00-n00")] = -0.5  # occluding the node raised its logit: nothing to explain away
    assert not explained_away(g, cand, drops, sibling).any()
    with pytest.raises(ValueError, match="one value per candidate"):
        explained_away(g, cand, drops[:-1], sibling)


def test_a_gpu_drop_its_cooling_unit_shares_is_explained_away_where_the_head_names_heat(small_splits):
    """In a cooling unit's cascade the failed node's hottest GPU had the largest drop and beat the unit. Where the
    cause head names thermal, the unit's sibling evidence explains each GPU's drop away, at most all of it; a
    leaf's or a PDU's siblings never do, nor does the unit's where the head names no heat (issue 3 follow-up
    37)."""
    from infrabrain.models.root_cause_ranking import explained_away

    g, node, cand, ids = _first_site(small_splits)
    kinds = [KINDS[int(g.kind[c])] for c in cand]
    gpus = [j for j, k in enumerate(kinds) if k == "gpu"]
    assert len(gpus) >= 2
    drops = np.zeros(len(cand))
    drops[gpus[0]], drops[gpus[1]], drops[gpus[2]] = 9.0, 1.0, -2.0
    sibling = np.zeros(len(cand))
    sibling[kinds.index("cooling")] = 4.0
    out = explained_away(g, cand, drops, sibling, heat=True)
    assert out[gpus[0]] == -4.0 and out[gpus[1]] == -1.0  # at most the GPU's own positive drop
    assert np.count_nonzero(out) == 2
    assert not explained_away(g, cand, drops, sibling).any()  # no heat named: as follow-up 36
    leaf = np.zeros(len(cand))
    leaf[ids.index("leaf-r00")] = 4.0
    assert not explained_away(g, cand, drops, leaf, heat=True)[gpus].any()  # a leaf's siblings explain no GPU
    no_cooling = np.array([j for j, k in enumerate(kinds) if k != "cooling"])
    assert not explained_away(g, cand[no_cooling], drops[no_cooling], sibling[no_cooling], heat=True).any()
    # a unit whose own telemetry moved as no training unit's did explains its GPUs' heat away whole, even before
    # its other nodes are at risk; it takes heat named to do so
    moved = explained_away(g, cand, drops, np.zeros(len(cand)), heat=True, unit_moved=True)
    assert moved[gpus[0]] == -9.0 and moved[gpus[1]] == -1.0 and moved[gpus[2]] == 0.0
    assert not explained_away(g, cand, drops, np.zeros(len(cand)), unit_moved=True).any()


def test_the_cooling_unit_outranks_a_hot_gpu_its_siblings_explain(small_splits):
    """The whole ranking: a GPU 9 logits up outranks its cooling unit until the unit's siblings (the head leaning
    thermal) explain its heat away; the parts still add up to the total."""
    from infrabrain.models.root_cause_ranking import root_score_parts

    g, node, cand, ids = _first_site(small_splits)
    kinds = [KINDS[int(g.kind[c])] for c in cand]
    gpu, cool = kinds.index("gpu"), kinds.index("cooling")
    drops = np.zeros(len(cand))
    drops[gpu] = 9.0
    logits = np.array([0.0, 5.0, 5.0, -3.0, -3.0, -3.0])  # two more nodes under the fixture's one cooling unit
    causes = {"memory": 0.05, "network": 0.02, "thermal": 0.9, "power": 0.01, "other": 0.02}
    without = root_score_parts(g, cand, drops, None, logits, causes=causes, explain_away=False)
    parts = root_score_parts(g, cand, drops, None, logits, causes=causes)
    c = parts["sibling_evidence"][cool]
    assert parts["cause_evidence"][cool] > 0 and 0 < c < 9.0
    assert without["total"][gpu] > without["total"][cool]
    assert parts["explained_away"][gpu] == pytest.approx(-c)
    assert parts["total"][cool] > parts["total"][gpu]
    assert list(cand[np.argsort(-parts["total"])]).index(int(cand[cool])) < 2  # behind the leaf at most
    summed = sum(parts[k] for k in ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence",
                                    "explained_away"))
    np.testing.assert_allclose(parts["total"], summed)
    memory = {"memory": 0.9, "network": 0.02, "thermal": 0.05, "power": 0.01, "other": 0.02}
    assert root_score_parts(g, cand, drops, None, logits, causes=memory)["explained_away"][gpu] == 0.0
    # the unit's own move (its own_change part) explains the GPU's whole drop away, quiet siblings or not
    own = np.zeros(len(cand))
    own[cool] = 1.5
    quiet = np.array([0.0, -3.0, -3.0, -3.0, -3.0, -3.0])
    early = root_score_parts(g, cand, drops, None, quiet, causes=causes, own_change=own)
    assert early["explained_away"][gpu] == -9.0 and early["total"][cool] > early["total"][gpu]
    assert root_score_parts(g, cand, drops, None, quiet, causes=causes)["explained_away"][gpu] == 0.0
