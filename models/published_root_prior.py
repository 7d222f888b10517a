"""A root prior from the published failure breakdown, laid on a site's own topology: where its failures would
start if they followed the cause mix that large fleets report, before the site has a labelled failure of its own.

The training sites' labels (:func:`~infrabrain.models.root_prior.fit_root_prior`) or a fleet prior released under
differential privacy (:mod:`infrabrain.privacy.fleet_root_prior`) say where failures started at sites that have
incident records. A site with neither ranks root causes by occlusion drop alone. This module gives it a third
source that costs no label and no epsilon: the published cause shares (Llama 3, Table 5:
:data:`~infrabrain.simulation.faults.CAUSE_SHARES`), each cause's root component kind
(:data:`~infrabrain.simulation.faults.MODES`), and how far a failed component's failure reaches on the site's
own graph (a failed leaf switch takes down the nodes it connects, a tripped PDU the racks it feeds, a failed
cooling unit about half the nodes of the racks it cools). A root is drawn in proportion to the GPUs it serves,
as the fault model draws it, so a cooling unit that cools four racks is four times as likely to fail as a GPU's
share of them says, and takes more nodes with it.

The shares are expected *node failures* per relation (:func:`~infrabrain.models.root_prior.relation`), the unit
the labelled prior counts in; :func:`published_root_prior` scales them to ``failures`` pseudo-failures, so
merged with labelled counts (:func:`~infrabrain.models.root_prior.merge_root_priors`) it weighs as that many
failures would. On the simulator the published mix is also what generates the failures (only each site's
hardware and firmware factors differ), so what this prior scores there is what a correct published prior gives;
a real fleet's mix differs from the report's, and the bench measures a misspecified one too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from infrabrain.models.root_prior import MAX_HOPS, RootPrior, merge_root_priors, relation
from infrabrain.models.snapshots import SiteGraph

#: Pseudo-failures a published prior weighs as by default: a new site's ranking follows its shares, and a site
#: with a few dozen labelled failures of its own outweighs it. 20, 50 and 200 rank a new site's cascades alike
#: over 24 draws; 50 and 200 rank all failures a little better (follow-up 26).
DEFAULT_FAILURES = 50

# edge types of the topology contract (infrabrain.models.snapshots.N_EDGE_TYPES)
_GPU_IN_NODE, _NODE_IN_RACK, _NODE_TO_LEAF, _NODE_ON_PDU, _RACK_COOLED_BY = 0, 1, 2, 4, 5
_EDGE_TYPES = (_GPU_IN_NODE, _NODE_IN_RACK, _NODE_TO_LEAF, _NODE_ON_PDU, _RACK_COOLED_BY)


def _validate_cause_shares(cause_shares: Mapping[str, float]) -> dict[str, float]:
    from infrabrain.simulation.faults import CAUSES

    unknown = sorted(set(cause_shares) - set(CAUSES))
    if unknown:
        raise ValueError(f"cause_shares names unknown cause(s) {unknown}; known: {list(CAUSES)}")
    bad = {c: v for c, v in cause_shares.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"cause_shares must be finite and non-negative, got {bad}")
    if sum(cause_shares.values()) <= 0:
        raise ValueError("cause_shares sum to 0: no cause to start a failure")
    return {c: float(v) for c, v in cause_shares.items()}


def root_kind_mass(cause_shares: Mapping[str, float]) -> dict[str, float]:
    """Unnormalised share of root incidents per root component kind: each cause's share split among its modes as
    the fault model splits it (a network fault: a leaf switch or a node's cable)."""
    from infrabrain.simulation.faults import MODES

    out: dict[str, float] = defaultdict(float)
    for m in MODES:
        out[m.root] += cause_shares.get(m.cause, 0.0) * m.split
    return dict(out)


def root_kind_weights(cause_shares: Mapping[str, float] | None = None) -> dict[str, float]:
    """Share of root incidents that start at each component kind under ``cause_shares`` (default: the published
    mix), split among a cause's modes as the fault model splits it (a network fault: a leaf switch or a node's
    cable)."""
    from infrabrain.simulation.faults import CAUSE_SHARES

    mass = root_kind_mass(_validate_cause_shares(CAUSE_SHARES if cause_shares is None else cause_shares))
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items() if v > 0}


class _Links:
    """The typed edges a failure travels along, as adjacency lists in both directions (one pass over the edges)."""

    def __init__(self, graph: SiteGraph) -> None:
        self.up: dict[int, dict[int, list[int]]] = {t: defaultdict(list) for t in _EDGE_TYPES}
        self.down: dict[int, dict[int, list[int]]] = {t: defaultdict(list) for t in _EDGE_TYPES}
        edges = graph.edge_index.reshape(-1, 2)
        for t in _EDGE_TYPES:
            for a, b in edges[graph.edge_type == t].tolist():
                self.up[t][a].append(b)
                self.down[t][b].append(a)

    def roots(self, node: int, kind: str) -> list[int]:
        """The components of ``kind`` a failure of ``node`` would start at when drawn through one of its GPUs: the
        GPUs, the node itself, its leaf switch(es), PDU(s), or the cooling unit(s) of its rack."""
        if kind == "gpu":
            return self.down[_GPU_IN_NODE][node]
        if kind == "node":
            return [node]
        if kind in ("leaf", "pdu"):
            return self.up[_NODE_TO_LEAF if kind == "leaf" else _NODE_ON_PDU][node]
        if kind == "cooling":
            return [c for r in self.up[_NODE_IN_RACK][node] for c in self.up[_RACK_COOLED_BY][r]]
        raise ValueError(f"no failure mode starts at a {kind!r} (known root kinds: gpu, node, leaf, pdu, cooling)")

    def reach(self, root: int, kind: str) -> tuple[list[int], int | None, float]:
        """Nodes that fail when ``root`` (of ``kind``) fails, their hop distance from it when all share one (a
        direct neighbour; None: measure each), and the expected share of them that do."""
        from infrabrain.simulation.faults import COOLING_FAIL_MEAN

        if kind == "gpu":
            return self.up[_GPU_IN_NODE][root], 1, 1.0
        if kind == "node":
            return [root], 0, 1.0
        if kind == "leaf":
            return self.down[_NODE_TO_LEAF][root], 1, 1.0
        if kind == "pdu":
            racks = {r for n in self.down[_NODE_ON_PDU][root] for r in self.up[_NODE_IN_RACK][n]}
            share = 1.0
        else:  # cooling
            racks = set(self.down[_RACK_COOLED_BY][root])
            share = COOLING_FAIL_MEAN
        return sorted({n for r in racks for n in self.down[_NODE_IN_RACK][r]}), None, share


def kind_relation_counts(graph: SiteGraph, kinds: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per root kind of ``kinds``, the expected node failures in each relation to the failed node
    (:func:`~infrabrain.models.root_prior.relation`) of one root incident of that kind on ``graph``, its root
    drawn in proportion to the GPUs it serves as the fault model draws it. Relations beyond
    :data:`~infrabrain.models.root_prior.MAX_HOPS` are not counted; empty when the site has no GPU."""
    from infrabrain.models.occlusion import khop

    gpu_node = graph.gpu_node()
    gpus_of = np.bincount(gpu_node[gpu_node >= 0], minlength=len(graph.node_global))
    if gpus_of.sum() == 0:
        return {}
    links = _Links(graph)
    served = [(int(n), g / gpus_of.sum()) for n, g in zip(np.asarray(graph.node_global).tolist(), gpus_of) if g]
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        expected: dict[str, float] = defaultdict(float)
        drawn: dict[int, float] = defaultdict(float)  # root -> probability that a root incident starts there
        for node, p in served:
            roots = links.roots(node, kind)
            for root in roots:
                drawn[root] += p / len(roots)
        for root, p in drawn.items():
            nodes, hops, share = links.reach(root, kind)
            if hops is not None:
                expected[relation(kind, hops)] += p * share * len(nodes)
                continue
            comps, dist = khop(graph, root, MAX_HOPS)
            at = dict(zip(comps.tolist(), dist.tolist()))
            for n in nodes:
                if n in at:
                    expected[relation(kind, at[n])] += p * share
        out[kind] = dict(expected)
    return out


def relation_shares(graph: SiteGraph, cause_shares: Mapping[str, float] | None = None) -> dict[str, float]:
    """Expected share of the site's node failures rooted in each relation to the failed node, under the
    published cause mix (or ``cause_shares``) and the site's topology (:func:`kind_relation_counts` weighted by
    :func:`root_kind_weights`). Relations beyond :data:`~infrabrain.models.root_prior.MAX_HOPS` are not counted;
    empty when the site has no GPU."""
    weights = root_kind_weights(cause_shares)
    expected: dict[str, float] = defaultdict(float)
    for kind, counts in kind_relation_counts(graph, weights).items():
        for rel, v in counts.items():
            expected[rel] += weights[kind] * v
    total = sum(expected.values())
    return {r: float(v / total) for r, v in sorted(expected.items())} if total else {}


def shares_as_prior(shares: Mapping[str, float], failures: int = DEFAULT_FAILURES) -> RootPrior | None:
    """Relation shares (:func:`relation_shares`) as a :class:`~infrabrain.models.root_prior.RootPrior` of
    ``failures`` pseudo-failures (each share rounded; the prior's add-one smoothing keeps the rarest ones above
    zero); None when there are no shares, or every one rounds to zero."""
    if isinstance(failures, bool) or not isinstance(failures, (int, np.integer)) or failures < 1:
        raise ValueError(f"failures (the published prior's weight in pseudo-failures) must be an integer >= 1, "
                         f"got {failures!r}")
    counts = {r: int(round(failures * s)) for r, s in shares.items()}
    counts = {r: n for r, n in counts.items() if n > 0}
    return RootPrior(counts=counts, failures=sum(counts.values())) if counts else None


def published_root_prior(graph: SiteGraph, failures: int = DEFAULT_FAILURES,
                         cause_shares: Mapping[str, float] | None = None) -> RootPrior | None:
    """The published mix on ``graph`` (:func:`relation_shares`) as ``failures`` pseudo-failures
    (:func:`shares_as_prior`); None when the site has no GPU, or every share rounds to zero."""
    return shares_as_prior(relation_shares(graph, cause_shares), failures)


#: The model card key that says how many pseudo-failures of the published mix, laid on the deployed site's own
#: topology, the card's labelled root prior is merged with (:func:`deployed_root_prior`; 0: none). ``infrabrain
#: train`` writes it (``PipelineConfig.published_prior_failures``, issue 3 follow-up 29). A card without it (one
#: written before, or a site checkpoint, whose prior has the mix merged in already) ranks with its own prior.
CARD_PUBLISHED_KEY = "root_prior_published_failures"


def card_published_failures(card: Mapping[str, object]) -> int | None:
    """The card's :data:`CARD_PUBLISHED_KEY`, None when absent (or null); anything but an integer >= 0 is refused
    by name, so a hand-edited card cannot rank with a prior it does not say."""
    raw = card.get(CARD_PUBLISHED_KEY)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)) or raw < 0:
        raise ValueError(f"model card {CARD_PUBLISHED_KEY} must be an integer >= 0 (pseudo-failures of the published "
                         f"mix; 0 leaves it out), got {raw!r}")
    return int(raw)


def deployed_published_failures(card: Mapping[str, object]) -> int:
    """How many pseudo-failures of the published mix a site deploying ``card`` ranks with: the card's
    :data:`CARD_PUBLISHED_KEY`; without it 0 beside the card's own prior and :data:`DEFAULT_FAILURES` without one."""
    failures = card_published_failures(card)
    if failures is not None:
        return failures
    return 0 if RootPrior.from_card(card) is not None else DEFAULT_FAILURES


def deployed_root_prior(card: Mapping[str, object], graph: SiteGraph) -> tuple[RootPrior | None, str]:
    """The prior a deployed model ranks a site's root causes with, and where it came from.

    A card that says how much of the published mix to add (:data:`CARD_PUBLISHED_KEY`, what ``infrabrain train``
    writes) gets its prior merged with the mix laid on the site's own topology as that many pseudo-failures
    (``"card+published"``): labelled counts from a few training sites leave the roots they never saw at add-one
    smoothing, 3-4 logits under the seen ones, however loud the window. A card without the key ranks with its own
    prior (``"card"``: labelled roots, a fleet release) or, without one, with the mix at :data:`DEFAULT_FAILURES`
    (``"published"``). ``"none"``: no prior at all (the key at 0 and no labels, or a site without GPUs)."""
    prior = RootPrior.from_card(card)
    failures = deployed_published_failures(card)
    published = published_root_prior(graph, failures) if failures else None
    merged = merge_root_priors(prior, published)
    if merged is None:
        return None, "none"
    if prior is None:
        return merged, "published"
    return merged, "card+published" if published is not None else "card"
