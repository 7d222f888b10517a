"""The root-cause ranking: which candidate (:func:`~infrabrain.models.occlusion.candidates`) started an alerted
node's failure, likeliest first (``Explanation.roots``, ``root_causes`` in ``predict``'s output).

To each candidate's occlusion drop (:mod:`~infrabrain.models.occlusion`) :func:`root_score_parts` adds:

- its log prior (:mod:`~infrabrain.models.root_prior`: where the training sites' failures started, relative to
  the failed node), so that where the window shows nothing the likeliest roots come first instead of noise;
- the cause head's evidence (:mod:`~infrabrain.models.cause_root_evidence`: a thermal failure starts at a
  cooling unit or a GPU, not at a switch);
- its *sibling evidence* (:func:`sibling_evidence`: how much the other nodes under the same switch, PDU or
  cooling unit are at risk, or went down, in the same snapshot; a common cause raises them together);
- what a common cause explains away of the failed node's and its GPUs' drops (:func:`explained_away`);
- how far a cooling unit's own telemetry moved against the training sites' units (:func:`own_change_part`).

Where an alert names a part of the machine (a GPU's PCIe replays: its bus; :mod:`~infrabrain.models.cause_part`),
the component that metric lies on is ranked first (``part_at``:
:func:`~infrabrain.models.explain.quoted_part_component`), and the others by their scores.

A GPU's drop counts only by how far it stands out from its sibling GPUs' (:func:`gpu_relative_drops`): a drop
every GPU of the node shares points at none of them. :mod:`~infrabrain.models.root_cause_accuracy` scores the
ranking against the simulator's ground-truth root component.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from infrabrain.models.cause_naming import named_cause
from infrabrain.models.cause_root_evidence import HEAT_GROUP, UNLOCALISED_GROUPS, cause_log_evidence
from infrabrain.models.features import KINDS, FeatureSet
from infrabrain.models.occlusion import GRAPH_CACHE, khop
from infrabrain.models.own_change_evidence import OwnChangeTails, own_change, own_change_evidence
from infrabrain.models.root_prior import MAX_HOPS, RootPrior, relation
from infrabrain.models.snapshots import SiteGraph


def explained_node(graph: SiteGraph, cand: np.ndarray) -> tuple[int, dict[int, int]]:
    """The explained node (the one candidate of kind node) and the hop distance from it of every component
    within :data:`~infrabrain.models.root_prior.MAX_HOPS`."""
    node_k = KINDS.index("node")
    nodes = [int(c) for c in cand if int(graph.kind[int(c)]) == node_k]
    if len(nodes) != 1:
        raise ValueError(f"root-cause candidates must hold exactly one node (the explained one), got {len(nodes)}")
    comps, dist = khop(graph, nodes[0], MAX_HOPS)
    return nodes[0], dict(zip(comps.tolist(), dist.tolist()))


def candidate_relations(graph: SiteGraph, cand: np.ndarray,
                        explained: tuple[int, dict[int, int]] | None = None) -> list[str]:
    """Each candidate's relation to the explained node, as the root prior counts it
    (:func:`~infrabrain.models.root_prior.relation`: kind and hop distance). ``explained`` is
    :func:`explained_node`'s answer when the caller has it already."""
    _, hops = explained or explained_node(graph, cand)
    return [relation(KINDS[int(graph.kind[int(c)])], hops.get(int(c), MAX_HOPS + 1)) for c in cand]


#: The quantile of a candidate's other dependent nodes' excess risk that is its sibling evidence, per kind; the
#: median for the rest. A switch or PDU that fails takes down every node under it, so most of its other nodes
#: stand out together and the median asks for that. A failed cooling unit heats all of its racks but takes
#: down only its hottest nodes (the simulator draws 35-75 % of them, :data:`~infrabrain.simulation.faults.
#: COOLING_FAIL_SHARE`): a median would ask for a majority it has only as often as not. At 0.65 it is credited
#: once about a third of its other nodes stand out, the smallest share it takes down (issue 3 follow-up 28).
SIBLING_QUANTILE: Mapping[str, float] = {"cooling": 0.65}

#: Kinds whose sibling evidence is taken against the other nodes cooled with them (:func:`sibling_evidence`).
_RACK_LEVEL_KINDS: tuple[int, ...] = (KINDS.index("leaf"), KINDS.index("pdu"))


def _sibling_level(excess: np.ndarray, nodes: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile of ``excess`` over ``nodes`` (unscored ones left out); None when none is scored."""
    vals = excess[nodes]
    vals = vals[np.isfinite(vals)]
    return float(np.quantile(vals, q)) if len(vals) else None


def silent_nodes(item: Mapping[str, torch.Tensor], graph: SiteGraph) -> np.ndarray:
    """Per node position (``graph.node_global`` order): True where the node's telemetry stopped within the
    snapshot's window, observed in its first (pooled) step and silent over its last ones (``alive`` 0). Such a
    node went down (or lost its power or network) in the last hour: it has no score of its own, and it is the
    strongest sign of a common cause a sibling can give (:func:`sibling_evidence`)."""
    ng = torch.as_tensor(np.asarray(graph.node_global, dtype=np.int64))
    first = item["mask"][ng, 0, :].sum(dim=1) > 0
    return (first & (item["alive"][ng] <= 0)).numpy()


def sibling_evidence(graph: SiteGraph, cand: np.ndarray, node_logits: np.ndarray,
                     explained: tuple[int, dict[int, int]] | None = None,
                     silent: np.ndarray | None = None) -> np.ndarray:
    """Per candidate, how much the *other* nodes that depend on it as the explained node does are at risk in the
    same snapshot: a quantile (:data:`SIBLING_QUANTILE`, the median for most kinds) over them of their logit
    above the snapshot's median node logit (negative excess counts as 0; unscored nodes, NaN in
    ``node_logits``, are left out). 0 for the node itself and its GPUs. A node that went down within the window
    (``silent``, :func:`silent_nodes`; per node position) counts as at risk as the snapshot's most at-risk node:
    a failing cooling unit's first nodes are down by the time the next ones are explained, and without them the
    few still up, in one rack, credited that rack's switch and PDUs (issue 3 follow-up 28).

    A failing leaf switch, PDU or cooling unit raises the risk of the nodes under it together, while a node's own
    fault raises only its own. Occlusion cannot see that: a leaf failure shows as InfiniBand errors on each of its
    nodes, which explain each node's risk by themselves, and the leaf's own window moves the logit by ~0. The
    median, not the mean: one sibling failing on its own, next to healthy ones, is no common cause.

    A leaf switch's or PDU's evidence is what its nodes show *beyond the other nodes cooled with them*: minus the
    cooling unit's quantile of the excess of the explained node's cooling unit's nodes that do not depend on the
    candidate (never below 0). A failing cooling unit heats every rack it cools, so the nodes of the explained
    node's rack stand out together and would credit the rack's switch and PDUs as much as the cooling unit; when
    the neighbouring racks stand out as well, the common cause is the cooling unit (explaining away). A failing
    switch or PDU leaves the neighbouring racks quiet and keeps its evidence whole (issue 3 follow-up 28).
    ``node_logits`` is per node position (``graph.node_global`` order); ``explained`` as in
    :func:`candidate_relations`."""
    logits = np.asarray(node_logits, dtype=np.float64)
    if logits.shape != (len(graph.node_global),):
        raise ValueError(f"node_logits has shape {logits.shape}; the site has {len(graph.node_global)} nodes")
    if silent is not None and np.shape(silent) != logits.shape:
        raise ValueError(f"silent has shape {np.shape(silent)}; the site has {len(graph.node_global)} nodes")
    finite = np.isfinite(logits)
    out = np.zeros(len(cand), dtype=np.float64)
    if not finite.any():
        return out
    excess = np.where(finite, np.maximum(logits - np.median(logits[finite]), 0.0), np.nan)
    if silent is not None:
        excess = np.where(np.asarray(silent, dtype=bool), np.nanmax(excess), excess)
    node_k, gpu_k, cool_k = KINDS.index("node"), KINDS.index("gpu"), KINDS.index("cooling")
    node, hops = explained or explained_node(graph, cand)
    explained_pos = int(np.flatnonzero(np.asarray(graph.node_global) == node)[0])
    coolers = [int(c) for c in cand if int(graph.kind[int(c)]) == cool_k and hops.get(int(c)) == 2]
    cooled = GRAPH_CACHE.nodes_at(graph, coolers[0], 2) if coolers else np.zeros(0, dtype=np.int64)
    q_cool = SIBLING_QUANTILE["cooling"]
    for j, c in enumerate(cand):
        c = int(c)
        kind = int(graph.kind[c])
        if kind in (node_k, gpu_k) or c not in hops:
            continue
        sib = GRAPH_CACHE.nodes_at(graph, c, hops[c])
        level = _sibling_level(excess, sib[sib != explained_pos], SIBLING_QUANTILE.get(KINDS[kind], 0.5))
        if level is None:
            continue
        if kind in _RACK_LEVEL_KINDS:
            around = _sibling_level(excess, cooled[~np.isin(cooled, sib) & (cooled != explained_pos)], q_cool)
            if around is not None:  # None: no other scored node cooled with them
                level = max(level - around, 0.0)
        out[j] = level
    return out


def gpu_relative_drops(graph: SiteGraph, cand: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """``drops`` with each candidate GPU's drop taken relative to its sibling GPUs': minus the median of the other
    candidate GPUs' drops (a node's only GPU keeps its drop; other kinds are unchanged).

    Occluding a GPU sets its window to typical, which lowers its node's GPU pool whenever the node's GPUs run above
    typical (a hot or busy site, a heating rack): then every GPU "explains" the risk by the same amount, and eight
    GPUs with their own prior crowd a switch or cooling unit out of the top three of a failure whose window shows
    nothing of its root (issue 3 follow-up 27). A drop every GPU shares is no evidence for any one of them; a
    failing GPU stands out from its siblings, and keeps its lead over them.
    """
    out = np.asarray(drops, dtype=np.float64).copy()
    gpus = np.flatnonzero(np.asarray(graph.kind)[np.asarray(cand, dtype=np.int64)] == KINDS.index("gpu"))
    if len(gpus) < 2:
        return out
    raw = out[gpus].copy()
    for i, j in enumerate(gpus):
        out[j] = raw[i] - float(np.median(np.delete(raw, i)))
    return out


def explained_away(graph: SiteGraph, cand: np.ndarray, drops: np.ndarray, sibling: np.ndarray,
                   heat: bool = False, unit_moved: bool = False) -> np.ndarray:
    """Per candidate, what a common cause explains away of its score (0 or less, added to it):

    - the explained node loses as much of its positive drop as the largest sibling evidence among the active
      candidates covers, ``-min(drop, S)`` (racks left out of ``S``: a rack is never ranked first);
    - with ``heat`` (the cause head names :data:`~infrabrain.models.cause_root_evidence.HEAT_GROUP`), each GPU
      loses as much of its positive drop as the cooling units' sibling evidence covers, ``-min(drop, C)``, and
      all of it where a cooling unit's own telemetry moved as no training unit's did (``unit_moved``: its
      ``own_change`` part is positive);
    - every other candidate gets 0.

    In a leaf switch's cascade every node under it shows InfiniBand errors, so occluding the explained node's own
    window lowers its logit by 2-8 and the node outranks its leaf, although the leaf's sibling evidence says that
    its nodes are at risk together. Risk that the node's siblings show as well is what a shared cause would raise
    in each of them: it is no evidence that the node itself is the root (explaining away; issue 3 follow-up 36).
    A node failing on its own, beside quiet siblings, has no sibling evidence against it and keeps its drop. In a
    cooling unit's cascade each doomed node's hottest GPU runs hot before it fails, and its drop (10-16 logits)
    beat the unit. Only heat is what a cooling unit shares with a GPU: a leaf's or a PDU's siblings say nothing
    about a GPU's memory errors, and explaining every GPU away by them cost the top three on memory faults (issue
    3 follow-up 37). Early in a cascade the unit's other nodes are not yet at risk, but its supply temperature
    has already climbed: a GPU running hot beside a unit that demonstrably failed to cool it is that unit's
    symptom. A GPU failing of its own heat has a unit that did not move. ``drops`` and ``sibling`` are per
    candidate (:func:`root_score_parts`' ``drop`` and ``sibling_evidence``)."""
    drops, sibling = np.asarray(drops, dtype=np.float64), np.asarray(sibling, dtype=np.float64)
    if drops.shape != (len(cand),) or sibling.shape != (len(cand),):
        raise ValueError(f"drops {drops.shape} and sibling {sibling.shape} must hold one value per candidate "
                         f"({len(cand)})")
    kind = np.asarray(graph.kind)[np.asarray(cand, dtype=np.int64)]
    active = kind != KINDS.index("rack")
    common = float(sibling[active].max()) if active.any() else 0.0
    out = np.zeros(len(cand), dtype=np.float64)
    node = kind == KINDS.index("node")
    out[node] = -np.minimum(np.maximum(drops[node], 0.0), max(common, 0.0))
    cooling = kind == KINDS.index("cooling")
    if heat and cooling.any():
        gpu = kind == KINDS.index("gpu")
        covered = np.inf if unit_moved else max(float(sibling[cooling].max()), 0.0)
        out[gpu] = -np.minimum(np.maximum(drops[gpu], 0.0), covered)
    return out


def rank_root_causes(graph: SiteGraph, cand: np.ndarray, drops: np.ndarray,
                     prior: RootPrior | None = None, node_logits: np.ndarray | None = None,
                     relative_gpus: bool = True, silent: np.ndarray | None = None,
                     causes: Mapping[str, float] | None = None, explain_away: bool = True,
                     own_change: np.ndarray | None = None, part_at: int | None = None) -> list[int]:
    """Candidates ordered as root causes: by logit drop plus, with ``prior``, the log prior of each candidate
    (:mod:`infrabrain.models.root_prior`), with *passive* racks crediting their cooling unit.

    A rack has no failure mode of its own: its inlet temperature is set by the cooling unit that cools it, so
    a rack's contribution is added to that cooling unit's (when it is a candidate) and the rack is ranked
    after every active component. The prior decides where no drop does (an abrupt failure leaves nothing in
    the window); a drop larger than the prior's gap between two candidates (a few logits at most) outweighs it.
    With ``relative_gpus`` a GPU's drop counts only by how far it stands out from its siblings'
    (:func:`gpu_relative_drops`); False ranks by the raw drops (the ranking before issue 3 follow-up 27).
    ``node_logits`` and ``silent`` (the nodes that went down within the window) feed :func:`sibling_evidence`.
    ``causes`` (the cause head's probability of each group, ``Explanation.causes``) adds each candidate's cause
    evidence where the head names a group that says where failures start
    (:func:`~infrabrain.models.cause_naming.named_cause`, not one of
    :data:`~infrabrain.models.cause_root_evidence.UNLOCALISED_GROUPS`): a thermal failure starts at a cooling unit
    or a GPU, not at a switch (:mod:`~infrabrain.models.cause_root_evidence`). With ``node_logits`` and
    ``explain_away`` the explained node's drop counts only beyond what its siblings show as well
    (:func:`explained_away`); False ranks as before issue 3 follow-up 36. ``own_change`` (per candidate,
    :func:`~infrabrain.models.own_change_evidence.own_change_evidence`) adds how far a cooling unit's own
    telemetry moved, against the training sites' (issue 3 follow-up 37); None ranks as before. ``part_at`` (the
    candidate whose metric names the part of the machine an alert names: a GPU's PCIe replays, a host's EDAC
    errors, :func:`~infrabrain.models.explain.quoted_part_component`) is ranked first, and the head's group is not
    read (:func:`root_score_parts`).
    """
    total = root_score_parts(graph, cand, drops, prior, node_logits, relative_gpus, silent, causes,
                             explain_away, own_change, part_at)["total"]
    return rank_by_score(graph, cand, total, first=part_at)


def rank_by_score(graph: SiteGraph, cand: np.ndarray, score: np.ndarray, first: int | None = None) -> list[int]:
    """Candidates by decreasing ``score`` (one per candidate), every rack after every active component;
    ``first`` (a candidate: the part an alert names lies on it) ahead of all."""
    rack_k = KINDS.index("rack")
    by = {int(c): float(v) for c, v in zip(cand, score)}
    if first is not None and int(first) not in by:
        named = f"{graph.component_ids[first]} lies" if 0 <= int(first) < graph.n else "that index lies nowhere"
        raise ValueError(f"the part's component {first} is not a root-cause candidate of this alert ({named} "
                         f"outside its {len(by)} candidates: the node, its GPUs and what they hang on)")
    active = [c for c in by if graph.kind[c] != rack_k and c != first]
    passive = [c for c in by if graph.kind[c] == rack_k and c != first]
    return ([int(first)] if first is not None else []) + sorted(active, key=lambda c: -by[c]) \
        + sorted(passive, key=lambda c: -by[c])


#: The parts of a root-cause score, in the order :func:`root_score_parts` adds them up.
ROOT_SCORE_PARTS = ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence", "explained_away",
                    "own_change")


def root_score_parts(graph: SiteGraph, cand: np.ndarray, drops: np.ndarray,
                     prior: RootPrior | None = None, node_logits: np.ndarray | None = None,
                     relative_gpus: bool = True, silent: np.ndarray | None = None,
                     causes: Mapping[str, float] | None = None,
                     explain_away: bool = True, own_change: np.ndarray | None = None,
                     part_at: int | None = None) -> dict[str, np.ndarray]:
    """The parts of each candidate's root-cause score that :func:`rank_root_causes` adds up (same arguments), as
    arrays in ``cand`` order: ``drop`` (a GPU's relative to its siblings' with ``relative_gpus``),
    ``rack_credit`` (the positive drops of the racks a cooling unit cools), ``prior``, ``cause_evidence``,
    ``sibling_evidence``, ``explained_away`` (:func:`explained_away`; zeros where not read), ``own_change``
    (the argument; zeros without it) and their sum, ``total``, added in that order. With ``part_at`` (the alert
    names a part, so its group is "other": :mod:`~infrabrain.models.cause_part`) the head's group is not read, as
    the alert does not name it: no cause evidence, and a cooling unit does not explain a GPU's heat away."""
    if relative_gpus:
        drops = gpu_relative_drops(graph, cand, drops)
    n = len(cand)
    parts = {k: np.zeros(n) for k in ROOT_SCORE_PARTS[1:]}
    parts["drop"] = np.asarray(drops, dtype=np.float64).copy()
    pos = {int(c): i for i, c in enumerate(cand)}
    total = parts["drop"].copy()
    for r, c in graph.edge_index[graph.edge_type == 5]:  # rack_cooled_by: rack -> cooling
        if int(r) in pos and int(c) in pos and parts["drop"][pos[int(r)]] > 0:
            parts["rack_credit"][pos[int(c)]] += parts["drop"][pos[int(r)]]
            total[pos[int(c)]] += parts["drop"][pos[int(r)]]
    named = named_cause(causes) if causes and part_at is None else None
    table = GRAPH_CACHE.cause_table(graph, tuple(causes)) if named and named not in UNLOCALISED_GROUPS else None
    by_relation = prior is not None or table is not None
    explained = explained_node(graph, cand) if by_relation or node_logits is not None else None
    relations = candidate_relations(graph, cand, explained) if by_relation else []
    if prior is not None:
        parts["prior"] = np.asarray(prior.log_prior(relations), dtype=np.float64)
    if table is not None:
        parts["cause_evidence"] = np.asarray(cause_log_evidence(table, causes, relations), dtype=np.float64)
    if own_change is not None:
        own = np.asarray(own_change, dtype=np.float64)
        if own.shape != (n,) or not np.all(np.isfinite(own)):
            raise ValueError(f"own_change must hold one finite value per candidate ({n}), got shape {own.shape}")
        parts["own_change"] = own.copy()
    if node_logits is not None:
        parts["sibling_evidence"] = np.asarray(sibling_evidence(graph, cand, node_logits, explained, silent),
                                               dtype=np.float64)
        if explain_away:
            cooling = np.asarray(graph.kind)[np.asarray(cand, dtype=np.int64)] == KINDS.index("cooling")
            parts["explained_away"] = explained_away(graph, cand, parts["drop"], parts["sibling_evidence"],
                                                     heat=named == HEAT_GROUP,
                                                     unit_moved=bool((parts["own_change"][cooling] > 0).any()))
    for k in ROOT_SCORE_PARTS[2:]:  # one at a time, after the drops and the racks' credit
        total = total + parts[k]
    parts["total"] = total
    return parts


def own_change_part(item: Mapping[str, torch.Tensor], graph: SiteGraph, cand: np.ndarray, feature_set: FeatureSet,
                    tails: OwnChangeTails) -> np.ndarray:
    """Per candidate, the root-cause ranking's ``own_change`` part in snapshot ``item``: how far its own telemetry
    moved, against the training sites' ``tails`` (:mod:`~infrabrain.models.own_change_evidence`)."""
    cand = np.asarray(cand, dtype=np.int64)
    moved = own_change(item, feature_set, tails.end_bins)[cand]
    return own_change_evidence(np.asarray(graph.kind)[cand], moved, tails)
