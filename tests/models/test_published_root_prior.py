"""The published root prior: the published cause mix laid on a site's own topology (issue 3, follow-up 26)."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from infrabrain.models.published_root_prior import published_root_prior, relation_shares, root_kind_weights
from infrabrain.models.root_prior import RELATIONS, RootPrior, incident_root_relations, merge_root_priors
from infrabrain.models.snapshots import graph_from_topology
from infrabrain.simulation.engine import simulate_faults
from infrabrain.simulation.faults import CAUSE_SHARES
from infrabrain.simulation.federation import federation_specs
from infrabrain.simulation.spec import FaultSpec
from infrabrain.simulation.topology import build_topology


def _site(racks_per_cooling: int = 4, racks: int = 7):
    spec = federation_specs(1, 0)[0].model_copy(update={
        "faults": FaultSpec(), "rows": 1, "racks_per_row": racks, "racks_per_cooling": racks_per_cooling})
    return spec, graph_from_topology(build_topology(spec))


def test_root_kind_weights_follow_the_published_mix() -> None:
    w = root_kind_weights()
    assert sum(w.values()) == pytest.approx(1.0)
    total = sum(CAUSE_SHARES.values())
    assert w["leaf"] == pytest.approx(CAUSE_SHARES["network"] * 0.35 / total)
    assert w["cooling"] == pytest.approx(CAUSE_SHARES["thermal"] * 0.4 / total)
    assert w["pdu"] == pytest.approx(CAUSE_SHARES["psu"] * 0.3 / total)
    only_thermal = root_kind_weights({"thermal": 1.0})
    assert only_thermal == pytest.approx({"gpu": 0.6, "cooling": 0.4})


def test_shares_match_the_fault_model_on_the_same_topology() -> None:
    """The analytic shares against the simulator's own fault process (events only) at the published rates: the
    reach of a leaf, PDU and cooling failure and the draw of roots by the GPUs they serve must agree."""
    spec, graph = _site()
    seen: Counter[str] = Counter()
    for seed in range(4):
        ev = simulate_faults(spec, hours=8000, seed=seed, acceleration=50).events
        f = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
        rel = incident_root_relations(graph, pd.DataFrame(
            {"t": f["t"], "node_id": f["component_id"], "root_id": f["root_component"]}))
        seen.update(rel["relation"])
    n = sum(seen.values())
    assert n > 5000
    shares = relation_shares(graph)
    assert set(shares) == set(seen)
    for r, s in shares.items():
        assert s == pytest.approx(seen[r] / n, abs=0.02), r
    assert sum(shares.values()) == pytest.approx(1.0)
    assert set(shares) <= set(RELATIONS)


def test_a_cooling_unit_that_cools_more_racks_weighs_more() -> None:
    _, two = _site(racks_per_cooling=2, racks=8)
    _, four = _site(racks_per_cooling=4, racks=8)
    assert relation_shares(four)["cooling@2"] > 1.5 * relation_shares(two)["cooling@2"]


def test_prior_counts_and_merge_with_labels() -> None:
    _, graph = _site()
    prior = published_root_prior(graph, 50)
    assert isinstance(prior, RootPrior)
    assert abs(prior.failures - 50) <= 3
    assert prior.counts["gpu@1"] > prior.counts["node@0"] > prior.counts["leaf@1"] > prior.counts["cooling@2"] > 0
    # a new site's ranking: the node's own leaf over one of its GPUs, a GPU over the cooling unit
    lp = dict(zip(["gpu@1"] * 8 + ["leaf@1", "cooling@2"], prior.log_prior(["gpu@1"] * 8 + ["leaf@1", "cooling@2"])))
    assert lp["leaf@1"] > lp["gpu@1"] > lp["cooling@2"]
    labelled = RootPrior(counts={"node@0": 40}, failures=40)
    merged = merge_root_priors(labelled, prior)
    assert merged.counts["node@0"] == 40 + prior.counts["node@0"]
    assert published_root_prior(graph, 1000).failures > 10 * published_root_prior(graph, 50).failures


def test_site_without_gpus_has_no_prior() -> None:
    _, graph = _site()
    keep = graph.edge_type != 0  # no gpu_in_node edge: no GPU serves a node
    bare = type(graph)(component_ids=graph.component_ids, kind=graph.kind, edge_index=graph.edge_index[keep],
                       edge_type=graph.edge_type[keep], kind_index=graph.kind_index, node_global=graph.node_global)
    assert relation_shares(bare) == {}
    assert published_root_prior(bare) is None


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"failures": 0}, "failures"),
    ({"failures": True}, "failures"),
    ({"failures": 2.5}, "failures"),
    ({"cause_shares": {"meteor": 1.0}}, "unknown cause(s) ['meteor']"),
    ({"cause_shares": {"gpu": -1.0}}, "'gpu': -1.0"),
    ({"cause_shares": {"gpu": float("nan")}}, "'gpu': nan"),
    ({"cause_shares": {"gpu": 0.0}}, "sum to 0"),
])
def test_bad_arguments_are_named(kwargs: dict, needle: str) -> None:
    _, graph = _site()
    with pytest.raises(ValueError) as err:
        published_root_prior(graph, **kwargs)
    assert needle in str(err.value)


def test_a_trained_card_ranks_with_its_labels_plus_the_published_mix_on_the_sites_topology() -> None:
    """Follow-up 29: ``infrabrain train`` writes how many pseudo-failures of the published mix a deployed site
    merges the training labels with. A root the training sites never saw (here the cooling unit) is then no
    longer ranked at add-one smoothing; a card without the key (written before) ranks with its labels alone."""
    from infrabrain.models.published_root_prior import (CARD_PUBLISHED_KEY, deployed_published_failures,
                                                        deployed_root_prior)

    _, graph = _site()
    labels = RootPrior(counts={"node@0": 40, "gpu@1": 30, "leaf@1": 5}, failures=75)
    card = {"root_prior": labels.model_dump(), CARD_PUBLISHED_KEY: 50}
    prior, source = deployed_root_prior(card, graph)
    assert source == "card+published"
    assert prior == merge_root_priors(labels, published_root_prior(graph, 50))
    assert prior.counts["cooling@2"] > 0 and "cooling@2" not in labels.counts
    relations = ["gpu@1"] * 8 + ["node@0", "cooling@2"]
    before, after = labels.log_prior(relations), prior.log_prior(relations)
    assert after[-1] - after[0] > before[-1] - before[0]  # the cooling unit gains on a GPU
    for old in ({"root_prior": labels.model_dump()}, {"root_prior": labels.model_dump(), CARD_PUBLISHED_KEY: 0},
                {"root_prior": labels.model_dump(), CARD_PUBLISHED_KEY: None}):
        assert deployed_root_prior(old, graph) == (labels, "card")
    # a card without a prior ranks with the published mix alone: at the card's weight, or without the key (a card
    # trained without labelled roots before follow-up 29) at the default; at 0 with nothing at all
    for card, weight in (({"root_prior": None, CARD_PUBLISHED_KEY: 20}, 20), ({"root_prior": None}, 50)):
        assert deployed_published_failures(card) == weight
        assert deployed_root_prior(card, graph) == (published_root_prior(graph, weight), "published")
    assert deployed_root_prior({"root_prior": None, CARD_PUBLISHED_KEY: 0}, graph) == (None, "none")


@pytest.mark.parametrize("value", [-1, 2.5, True, "50"])
def test_a_card_with_a_bad_published_weight_is_refused_by_name(value: object) -> None:
    from infrabrain.models.published_root_prior import CARD_PUBLISHED_KEY, deployed_root_prior

    _, graph = _site()
    card = {"root_prior": {"counts": {"node@0": 3}, "failures": 3}, CARD_PUBLISHED_KEY: value}
    with pytest.raises(ValueError) as err:
        deployed_root_prior(card, graph)
    assert CARD_PUBLISHED_KEY in str(err.value) and repr(value) in str(err.value)


def test_the_evaluation_scores_the_prior_a_deployed_site_ranks_with() -> None:
    """``evaluate_predictor`` ranks each held-out site's root causes with ``deployed_site_priors``: the card's
    labels plus the published mix on that site's own topology (0: the labels alone), as ``predict`` does."""
    from types import SimpleNamespace

    from infrabrain.models.pipeline import PipelineConfig, Trained, deployed_site_priors, root_prior_card
    from infrabrain.models.published_root_prior import deployed_root_prior

    _, small = _site(racks_per_cooling=2, racks=4)
    _, large = _site()
    labels = RootPrior(counts={"node@0": 12, "gpu@1": 9}, failures=21)
    data = SimpleNamespace(sites=[SimpleNamespace(graph=small), SimpleNamespace(graph=large)])
    for weight in (50, 0):
        trained = Trained(model=None, splits=None, result=None, config=PipelineConfig(published_prior_failures=weight),
                          train_s=0.0, root_prior=labels)
        card = root_prior_card(trained)
        got = deployed_site_priors(trained, data)
        assert got == {0: deployed_root_prior(card, small)[0], 1: deployed_root_prior(card, large)[0]}
        if weight:
            assert got[0] != got[1] and got[0].counts["node@0"] > labels.counts["node@0"]
        else:
            assert got == {0: labels, 1: labels}
