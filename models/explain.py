"""Explanations of alerts: which upstream components and features raised a node's risk, as a sentence.

Method: **occlusion over graph neighbours**. For an alerted node, the candidates are the components that can be
its root cause: the node itself, its GPUs, and the infrastructure within the model's receptive field (rack,
leaf and spine switches, the rack's PDUs, the cooling unit); other nodes and their GPUs are not candidates.
Each candidate's whole window is replaced by "typical" values (0 after normalisation = the training mean,
still marked observed) and the drop of the node's failure logit is its contribution. The forward passes run on
the node's ``layers``-hop subgraph only, which gives exactly the same logit as the full site.

The top contributors are rendered with their most deviating metric in raw units, e.g.
``node r03-n07 at risk 0.82: cooling unit crac-2 airflow -35 % over 40 min; rack r03 inlet +6.1 C over 40 min``.
The root-cause ranking (:func:`rank_root_causes`, ``Explanation.roots``, ``root_causes`` in ``predict``'s
output) adds to each candidate's drop its log prior (:mod:`infrabrain.models.root_prior`: where the training
sites' failures started, relative to the failed node), so that where the window shows nothing the likeliest
roots come first instead of noise, and its *sibling evidence* (:func:`sibling_evidence`: how much the other
nodes under the same switch, PDU or cooling unit are at risk, or went down, in the same snapshot; a common
cause raises them together). A GPU's drop counts there only by how far it stands out from its sibling GPUs' drops
(:func:`gpu_relative_drops`): a drop every GPU of the node shares points at none of them. The failed node's own
drop counts only beyond that sibling evidence (:func:`explained_away`): risk its siblings show as well is what a
common cause raises in each of them. :func:`rootcause_accuracy` scores that ranking against the simulator's
ground-truth root component.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from infrabrain.models.cause_root_evidence import (HEAT_GROUP, UNLOCALISED_GROUPS, CauseRootTable,
                                                   cause_log_evidence, cause_root_table)
from infrabrain.models.cause_naming import FAILED, TOO_FEW, CauseNamingCheck
from infrabrain.models.derived_metrics import with_derived_metrics
from infrabrain.models.features import KINDS, STATIC_METRICS, FeatureSet, is_counter
from infrabrain.models.gnn import cause_groups_of, risk_and_cause_logits
from infrabrain.models.own_change_evidence import OwnChangeTails, own_change, own_change_evidence
from infrabrain.models.root_prior import MAX_HOPS, RootPrior, relation
from infrabrain.models.snapshots import HORIZON_S, SiteGraph, SnapshotDataset, _get, build_snapshot, collate_snapshots

KIND_LABEL = {"gpu": "GPU", "node": "node", "leaf": "leaf switch", "spine": "spine switch", "pdu": "PDU",
              "cooling": "cooling unit", "rack": "rack"}

# (substring of the metric name, short label, how to render). Renders: "C" temperature difference in C;
# "above:U WHAT" a level that is already a difference ("temperature 8.2 C above its node's other GPUs"); "rel:U"
# relative change with the levels in unit U (scaled by _SCALE); "pct:S" a utilisation, levels shown in % (x S);
# "level:U" the two levels in unit U; "busy" / "throttle" a time counter (s / us) as the share of the time it moved;
# "rate" any other counter as +N and N per minute.
_PRETTY: tuple[tuple[str, str, str], ...] = (
    ("temp_above_siblings", "temperature", "above:C above its node's other GPUs"),
    ("rack_inlet_temp", "inlet", "C"), ("airflow", "airflow", "rel:cfm"), ("supply_temp", "supply temperature", "C"),
    ("return_temp", "return temperature", "C"), ("MEMORY_TEMP", "memory temperature", "C"),
    ("GPU_TEMP", "temperature", "C"), ("hwmon_temp", "temperature", "C"), ("POWER_USAGE", "power", "rel:W"),
    ("load_kw", "load", "rel:kW"), ("latency", "latency", "rel:us"), ("SM_CLOCK", "SM clock", "rel:MHz"),
    ("GPU_UTIL", "utilisation", "pct:1"), ("switch_port_util", "port utilisation", "pct:100"),
    ("MemAvailable", "free memory", "level:GiB"), ("node_load1", "load average", "level:"),
    ("THERMAL_VIOLATION", "thermal throttling", "throttle"), ("POWER_VIOLATION", "power capping", "throttle"),
    ("io_time_seconds", "disk busy", "busy"), ("ECC_SBE", "single-bit ECC errors", "rate"),
    ("ECC_DBE", "double-bit ECC errors", "rate"), ("UNCORRECTABLE_REMAPPED", "uncorrectable remapped rows", "rate"),
    ("CORRECTABLE_REMAPPED", "correctable remapped rows", "rate"), ("NVLINK_CRC", "NVLink CRC errors", "rate"),
    ("PCIE_REPLAY", "PCIe replays", "rate"), ("edac_correctable", "EDAC correctable errors", "rate"),
    ("network_receive_errs", "network receive errors", "rate"),
    ("infiniband_port_errors", "InfiniBand port errors", "rate"), ("switch_port_errors", "port errors", "rate"),
)
_SCALE = {"GiB": 1.0 / 2**30}


@dataclass
class Contribution:
    """One candidate root cause of an alert."""

    component: int  # global component index
    component_id: str
    kind: str
    score: float  # drop of the node's logit when this component's window is made typical
    metric: str = ""
    change: str = ""


@dataclass
class Explanation:
    """An alert with its ranked contributors and a one-line sentence."""

    node_id: str
    risk: float
    contributors: list[Contribution] = field(default_factory=list)  # by logit drop: what the sentence quotes
    sentence: str = ""
    roots: list[int] = field(default_factory=list)  # the root-cause ranking (rank_root_causes), global indices
    #: each candidate's root-cause score parts (:func:`root_score_parts`, ``total`` included), by global index:
    #: why a root is ranked where it is
    root_parts: dict[int, dict[str, float]] = field(default_factory=dict)
    #: the cause head's probability of each cause group given a failure (a model with ``cause_groups``), and
    #: the likeliest group (the sentence names it from :data:`MIN_CAUSE_P` up: :func:`named_cause`)
    causes: dict[str, float] = field(default_factory=dict)
    cause: str | None = None

    def ranked_components(self) -> list[int]:
        """Candidates as root causes, likeliest first (what :func:`rootcause_accuracy` scores)."""
        return list(self.roots) if self.roots else [c.component for c in self.contributors]

    def quoting(self, risk: float) -> str:
        """The sentence with ``risk`` (e.g. the calibrated probability ``predict`` reports) in place of the raw
        sigmoid it was written with."""
        return self.sentence.replace(f"at risk {self.risk:.2f}", f"at risk {risk:.2f}", 1)


def _adjacency(graph: SiteGraph) -> list[np.ndarray]:
    import scipy.sparse as sp

    e = graph.edge_index
    n = graph.n
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()
    return [a.indices[a.indptr[i] : a.indptr[i + 1]] for i in range(n)]


class _GraphCache:
    """Per-graph adjacency lists, dependent-node rings and cause-root tables (built once per site, dropped when the
    graph is).

    Keyed by ``id(graph)``, and an entry is removed as soon as its graph is garbage-collected: Python reuses the
    id of a dead object, and a stale entry would hand a new site the neighbours of an old one (wrong
    explanations, or an IndexError when the new site is larger)."""

    def __init__(self) -> None:
        self._entries: dict[int, dict[str, Any]] = {}

    def _entry(self, graph: SiteGraph) -> dict[str, Any]:
        key = id(graph)
        if key not in self._entries:
            self._entries[key] = {"ring": {}, "tables": {}}
            weakref.finalize(graph, self._entries.pop, key, None)
        return self._entries[key]

    def adj(self, graph: SiteGraph) -> list[np.ndarray]:
        entry = self._entry(graph)
        if "adj" not in entry:
            entry["adj"] = _adjacency(graph)
        return entry["adj"]

    def nodes_at(self, graph: SiteGraph, start: int, hops: int) -> np.ndarray:
        """Node positions (``graph.node_global`` order) exactly ``hops`` from component ``start``: the nodes that
        depend on ``start`` as one at that distance does. Cached per graph: the daemon asks again every cycle,
        and on a 10,240-GPU site one search from another rack's leaf switch visits thousands of components."""
        ring = self._entry(graph)["ring"]
        if (start, hops) not in ring:
            comps, dist = khop(graph, start, hops)
            pos = np.full(graph.n, -1, dtype=np.int64)
            pos[np.asarray(graph.node_global, dtype=np.int64)] = np.arange(len(graph.node_global))
            at = comps[dist == hops]
            ring[(start, hops)] = pos[at][pos[at] >= 0]
        return ring[(start, hops)]

    def cause_table(self, graph: SiteGraph, groups: Sequence[str]) -> CauseRootTable | None:
        """:func:`~infrabrain.models.cause_root_evidence.cause_root_table` of ``groups`` on ``graph``, built once:
        laying the published mix on a 10,240-GPU site walks every PDU's and cooling unit's reach."""
        tables = self._entry(graph)["tables"]
        if tuple(groups) not in tables:
            tables[tuple(groups)] = cause_root_table(graph, groups)
        return tables[tuple(groups)]

    def __len__(self) -> int:
        return len(self._entries)


_CACHE = _GraphCache()


def khop(graph: SiteGraph, start: int, hops: int) -> tuple[np.ndarray, np.ndarray]:
    """Components within ``hops`` of ``start`` (sorted) and their hop distance."""
    adj = _CACHE.adj(graph)
    dist = {int(start): 0}
    frontier = [int(start)]
    for h in range(1, hops + 1):
        nxt = []
        for u in frontier:
            for v in adj[u]:
                v = int(v)
                if v not in dist:
                    dist[v] = h
                    nxt.append(v)
        frontier = nxt
    comps = np.array(sorted(dist), dtype=np.int64)
    return comps, np.array([dist[c] for c in comps], dtype=np.int64)


def candidates(graph: SiteGraph, node_global: int, hops: int) -> np.ndarray:
    """Possible root causes of ``node_global``'s failure within ``hops``: itself, its GPUs, infrastructure."""
    comps, _ = khop(graph, node_global, max(hops, 1))
    gpu_k = KINDS.index("gpu")
    sel = graph.edge_type == 0
    e = graph.edge_index[sel]
    own_gpus = set(e[e[:, 1] == node_global, 0].tolist())
    out = []
    for c in comps:
        k = KINDS[int(graph.kind[c])]
        if k == "node" and c != node_global:
            continue
        if int(graph.kind[c]) == gpu_k and int(c) not in own_gpus:
            continue
        out.append(int(c))
    return np.array(out, dtype=np.int64)


def _subgraph_item(item: Mapping[str, torch.Tensor], comps: np.ndarray, node_pos: int) -> dict[str, torch.Tensor]:
    """Restrict a snapshot to components ``comps`` (sorted global indices), keeping only ``node_pos``'s label."""
    idx = torch.from_numpy(comps)
    remap = torch.full((int(item["kind"].shape[0]),), -1, dtype=torch.int64)
    remap[idx] = torch.arange(len(comps))
    e = item["edge_index"]
    keep = (remap[e[:, 0]] >= 0) & (remap[e[:, 1]] >= 0)
    node_g = int(item["node_index"][node_pos])
    m = item["mask"].to(item["x"].dtype)
    onehot = torch.nn.functional.one_hot(item["kind"], len(KINDS)).to(m.dtype)
    from infrabrain.models.gnn import FailurePredictor

    # The full site's per-kind means, so the subgraph sees the same peer deviations as the whole snapshot.
    peer = FailurePredictor.peer_mean((item["x"] * m)[None], m[None], onehot[None])[0]
    return {
        "peer_mean": peer,
        "x": item["x"][idx], "mask": item["mask"][idx], "kind": item["kind"][idx], "alive": item["alive"][idx],
        "edge_index": remap[e[keep]], "edge_type": item["edge_type"][keep],
        "node_index": remap[torch.tensor([node_g])], "y": item["y"][node_pos : node_pos + 1],
        "label_mask": item["label_mask"][node_pos : node_pos + 1], "cause": item["cause"][node_pos : node_pos + 1],
        "root": item["root"][node_pos : node_pos + 1], "site": item["site"], "t": item["t"],
    }


@torch.no_grad()
def occlusion_scores(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph, node_pos: int,
                     cand: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Logit of node ``node_pos`` and the logit drop when each candidate's window is made typical.

    Returns ``(logit, candidates, drops)``.
    """
    logit, cand, drops, _ = _occlusion(model, item, graph, node_pos, cand)
    return logit, cand, drops


@torch.no_grad()
def _occlusion(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph, node_pos: int,
               cand: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`occlusion_scores` and, from the same pass over the unoccluded subgraph, the node's cause
    probabilities (``ModelConfig.cause_groups`` order; None for a model without a cause head)."""
    model.eval()
    hops = int(model.config.layers) if hasattr(model, "config") else 3
    node_g = int(graph.node_global[node_pos])
    comps, _ = khop(graph, node_g, max(hops, 1))
    cand = candidates(graph, node_g, hops) if cand is None else cand
    sub = _subgraph_item(item, comps, node_pos)
    local = np.searchsorted(comps, cand)
    batch = collate_snapshots([sub] * (len(cand) + 1))
    for j, c in enumerate(local):
        batch["x"][j + 1, c] = 0.0
    risk_logits, cause_logits = risk_and_cause_logits(model, batch)
    logits = risk_logits[:, 0].double().numpy()
    causes = None if cause_logits is None else torch.softmax(cause_logits[0, 0].double(), dim=-1).numpy()
    return float(logits[0]), cand, logits[0] - logits[1:], causes


def _explained_node(graph: SiteGraph, cand: np.ndarray) -> tuple[int, dict[int, int]]:
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
    :func:`_explained_node`'s answer when the caller has it already."""
    _, hops = explained or _explained_node(graph, cand)
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
    node, hops = explained or _explained_node(graph, cand)
    explained_pos = int(np.flatnonzero(np.asarray(graph.node_global) == node)[0])
    coolers = [int(c) for c in cand if int(graph.kind[int(c)]) == cool_k and hops.get(int(c)) == 2]
    cooled = _CACHE.nodes_at(graph, coolers[0], 2) if coolers else np.zeros(0, dtype=np.int64)
    q_cool = SIBLING_QUANTILE["cooling"]
    for j, c in enumerate(cand):
        c = int(c)
        kind = int(graph.kind[c])
        if kind in (node_k, gpu_k) or c not in hops:
            continue
        sib = _CACHE.nodes_at(graph, c, hops[c])
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
                     own_change: np.ndarray | None = None) -> list[int]:
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
    evidence where the head names a group that says where failures start (:func:`named_cause`, not one of
    :data:`~infrabrain.models.cause_root_evidence.UNLOCALISED_GROUPS`): a thermal failure starts at a cooling unit
    or a GPU, not at a switch (:mod:`~infrabrain.models.cause_root_evidence`). With ``node_logits`` and
    ``explain_away`` the explained node's drop counts only beyond what its siblings show as well
    (:func:`explained_away`); False ranks as before issue 3 follow-up 36. ``own_change`` (per candidate,
    :func:`~infrabrain.models.own_change_evidence.own_change_evidence`) adds how far a cooling unit's own
    telemetry moved, against the training sites' (issue 3 follow-up 37); None ranks as before.
    """
    total = root_score_parts(graph, cand, drops, prior, node_logits, relative_gpus, silent, causes,
                             explain_away, own_change)["total"]
    return rank_by_score(graph, cand, total)


def rank_by_score(graph: SiteGraph, cand: np.ndarray, score: np.ndarray) -> list[int]:
    """Candidates by decreasing ``score`` (one per candidate), every rack after every active component."""
    rack_k = KINDS.index("rack")
    by = {int(c): float(v) for c, v in zip(cand, score)}
    active = [c for c in by if graph.kind[c] != rack_k]
    passive = [c for c in by if graph.kind[c] == rack_k]
    return sorted(active, key=lambda c: -by[c]) + sorted(passive, key=lambda c: -by[c])


#: The parts of a root-cause score, in the order :func:`root_score_parts` adds them up.
ROOT_SCORE_PARTS = ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence", "explained_away",
                    "own_change")


def root_score_parts(graph: SiteGraph, cand: np.ndarray, drops: np.ndarray,
                     prior: RootPrior | None = None, node_logits: np.ndarray | None = None,
                     relative_gpus: bool = True, silent: np.ndarray | None = None,
                     causes: Mapping[str, float] | None = None,
                     explain_away: bool = True, own_change: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The parts of each candidate's root-cause score that :func:`rank_root_causes` adds up (same arguments), as
    arrays in ``cand`` order: ``drop`` (a GPU's relative to its siblings' with ``relative_gpus``),
    ``rack_credit`` (the positive drops of the racks a cooling unit cools), ``prior``, ``cause_evidence``,
    ``sibling_evidence``, ``explained_away`` (:func:`explained_away`; zeros where not read), ``own_change``
    (the argument; zeros without it) and their sum, ``total``, added in that order."""
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
    named = named_cause(causes) if causes else None
    table = _CACHE.cause_table(graph, tuple(causes)) if named and named not in UNLOCALISED_GROUPS else None
    by_relation = prior is not None or table is not None
    explained = _explained_node(graph, cand) if by_relation or node_logits is not None else None
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


def _pretty(metric: str) -> tuple[str, str]:
    for needle, label, unit in _PRETTY:
        if needle.lower() in metric.lower():
            return label, unit
    if is_counter(metric):
        return metric, "rate"
    return metric, ""


def _num(v: float) -> str:
    """A level with about 3 significant digits and no exponent for everyday magnitudes."""
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 1 else f"{v:.2f}"


def is_constant(series: np.ndarray) -> bool:
    """True if a raw series has fewer than 2 observations or never changes over the window (nothing to say)."""
    v = np.asarray(series, float)
    v = v[np.isfinite(v)]
    return len(v) < 2 or float(np.max(v) - np.min(v)) == 0.0


def describe_change(series: np.ndarray, metric: str, cadence_s: int) -> str:
    """Raw series over the window -> a phrase in operator units: 'temperature +6.1 C over 40 min',
    'airflow -35 % over 20 min (2000 -> 1300 cfm)', 'single-bit ECC errors +164 over 49 min (3.3/min)',
    'thermal throttling 42 % of the time over 20 min', 'utilisation 92 % -> 3 % over 15 min'.

    Counters are rendered as increments and rates over the span where they moved, never as raw cumulative levels.
    """
    v = np.asarray(series, float)
    ok = np.isfinite(v)
    label, unit = _pretty(metric)
    if ok.sum() < 2:
        return f"{label} missing"
    vals = v[ok]
    steps = np.flatnonzero(ok)
    k = max(1, len(vals) // 6)
    counter = is_counter(metric) or unit in ("rate", "busy", "throttle")
    first = float(vals[0]) if counter else float(np.mean(vals[:k]))
    last = float(vals[-1]) if counter else float(np.median(vals[-3:]))
    delta = last - first
    if counter:  # from the first increment on
        moved = np.flatnonzero(vals > first) if delta > 0 else np.zeros(0, int)
    else:
        moved = np.flatnonzero(np.abs(vals - first) > 0.1 * abs(delta)) if delta != 0 else np.zeros(0, int)
    start = steps[moved[0] - 1] if counter and len(moved) and moved[0] > 0 else (
        steps[moved[0]] if len(moved) else steps[0])
    span_steps = max(int(steps[-1] - start), 1)
    span_min = int(round(span_steps * cadence_s / 60)) or 1
    if unit.startswith("above:"):  # a difference, whose level is the news: "temperature 8.2 C above ..."
        u, _, what = unit[6:].partition(" ")
        level = f"{label} {_num(last)} {u} {what}"
        return level if round(delta, 1) == 0 else f"{level} ({delta:+.1f} {u} over {span_min} min)"
    if "XID" in metric.upper():
        return f"XID {int(last)} raised {span_min} min ago" if last > 0 and delta != 0 else f"last XID {int(last)}"
    if counter:
        inc = max(delta, 0.0)
        span_s = span_steps * cadence_s
        if unit == "throttle":  # microseconds of violation per second of wall time
            return f"{label} {min(100.0, 100 * inc / 1e6 / span_s):.0f} % of the time over {span_min} min"
        if unit == "busy":  # seconds busy per second
            return f"{label} {min(100.0, 100 * inc / span_s):.0f} % of the time over {span_min} min"
        per_min = inc / (span_s / 60)
        return f"{label} +{inc:.0f} over {span_min} min ({_num(per_min)}/min)"
    # a level the model leaned on although it hardly moved reads as its level, not as "+0.0 C" or "-0 %"
    if unit.startswith("pct:"):
        f = float(unit[4:])
        if round(first * f) == round(last * f):
            return f"{label} steady at {last * f:.0f} %"
        return f"{label} {first * f:.0f} % -> {last * f:.0f} % over {span_min} min"
    if unit.startswith("level:"):
        u = unit[6:]
        sc = _SCALE.get(u, 1.0)
        if _num(first * sc) == _num(last * sc):
            return f"{label} steady at {_num(last * sc)} {u}".rstrip()
        return f"{label} {_num(first * sc)} -> {_num(last * sc)} {u} over {span_min} min".replace("  ", " ")
    if unit.startswith("rel:"):
        u = unit[4:]
        levels = f"({_num(first)} -> {_num(last)} {u})"
        if abs(first) < 0.05 * max(float(np.max(np.abs(vals))), 1e-9):  # from ~0: a percentage means nothing
            return f"{label} {_num(first)} -> {_num(last)} {u} over {span_min} min"
        if round(100 * delta / abs(first)) == 0:
            return f"{label} steady at {_num(last)} {u}"
        return f"{label} {100 * delta / abs(first):+.0f} % over {span_min} min {levels}"
    if round(delta, 1) == 0:
        return f"{label} steady at {_num(last)} {unit}".rstrip()
    return f"{label} {delta:+.1f} {unit} over {span_min} min".replace("  ", " ")


def _top_metric(item: Mapping[str, torch.Tensor], comp: int, names: Sequence[str],
                skip: Sequence[int] = ()) -> int:
    """Slot of the component's most deviating metric (largest |z| near the window end), ignoring ``skip``
    (metrics constant over the window, which have nothing to say)."""
    x = item["x"][comp].numpy()  # [W, F]
    m = item["mask"][comp].numpy()
    f = len(names)
    if f == 0:
        return -1
    k = max(1, x.shape[0] // 6)
    tail = np.where(m[-k:, :f], np.abs(x[-k:, :f]), 0.0).mean(axis=0)
    head = np.where(m[:k, :f], x[:k, :f], 0.0).mean(axis=0)
    dev = tail + np.abs(np.where(m[-k:, :f], x[-k:, :f], 0.0).mean(axis=0) - head)
    if len(skip) >= f:
        return -1
    dev[list(skip)] = -np.inf
    return int(np.argmax(dev))


def explain_node(
    model: torch.nn.Module,
    item: Mapping[str, torch.Tensor],
    graph: SiteGraph,
    feature_set: FeatureSet,
    node_pos: int,
    raw: Mapping[str, np.ndarray] | None = None,
    raw_names: Mapping[str, Sequence[str]] | None = None,
    cadence_s: int = 60,
    top_k: int = 3,
    prior: RootPrior | None = None,
    node_logits: np.ndarray | None = None,
    own_tails: OwnChangeTails | None = None,
    naming: CauseNamingCheck | None = None,
) -> Explanation:
    """Explain the risk of node ``node_pos`` (position in node order) in snapshot ``item``.

    ``raw`` (per kind ``[W, n_kind, F_kind]``, same window) with ``raw_names`` lets the sentence quote raw units;
    without it the change is given in standard deviations. ``prior`` (the model card's root prior) and
    ``node_logits`` (every node's logit in this snapshot: :func:`sibling_evidence`, with the nodes that went
    down within the window, :func:`silent_nodes`) join the drops in the root-cause ranking
    (``Explanation.roots``), and so does ``own_tails`` (the model card's training own changes:
    :func:`own_change_part`); the sentence quotes the drops only. With ``naming`` (the model card's
    :class:`~infrabrain.models.cause_naming.CauseNamingCheck`) the sentence names the head's cause only where
    that group's naming held up on the checked rows, and otherwise says the cause is unsure and why.
    """
    logit, cand, drops, probs = _occlusion(model, item, graph, node_pos)
    order = np.argsort(-drops, kind="stable")
    node_id = str(graph.component_ids[graph.node_global[node_pos]])
    risk = float(1.0 / (1.0 + np.exp(-logit)))
    local_of = {k: {int(g): i for i, g in enumerate(graph.kind_index.get(k, []))} for k in KINDS}
    if raw is not None and raw_names is not None:  # derived metrics quoted in raw units too
        raw, raw_names = with_derived_metrics(raw, raw_names, feature_set.metrics, graph.gpu_node())
    contribs = []
    for j in order:
        c = int(cand[j])
        kind = KINDS[int(graph.kind[c])]
        names = feature_set.metrics_of(kind)
        series: dict[int, np.ndarray] = {}
        if raw is not None and raw_names is not None and kind in raw:
            cols = list(raw_names[kind])
            series = {j: np.asarray(raw[kind])[:, local_of[kind][c], cols.index(mn)]
                      for j, mn in enumerate(names) if mn in cols}
        skip = [j for j, mn in enumerate(names) if mn in STATIC_METRICS or (j in series and is_constant(series[j]))]
        slot = _top_metric(item, c, names, skip)
        if slot < 0:  # every metric constant: fall back to the model's view
            slot = _top_metric(item, c, names, [j for j, mn in enumerate(names) if mn in STATIC_METRICS])
        metric = names[slot] if slot >= 0 else ""
        change = ""
        if metric and slot in series:
            change = describe_change(series[slot], metric, cadence_s)
        if metric and not change:
            z = item["x"][c, -1, slot].item()
            change = f"{_pretty(metric)[0]} {z:+.1f} sd"
        contribs.append(Contribution(c, str(graph.component_ids[c]), kind, float(drops[j]), metric, change))
    causes = {} if probs is None else {g: float(p) for g, p in zip(cause_groups_of(model), probs)}
    cause = max(causes, key=causes.__getitem__) if causes else None
    parts = root_score_parts(graph, cand, drops, prior, node_logits,
                             silent=silent_nodes(item, graph) if node_logits is not None else None, causes=causes,
                             own_change=None if own_tails is None else
                             own_change_part(item, graph, cand, feature_set, own_tails))
    return Explanation(node_id=node_id, risk=risk, contributors=contribs, causes=causes, cause=cause,
                       sentence=explanation_sentence(node_id, risk, contribs, top_k, cause,
                                                     causes.get(cause) if cause else None,
                                                     *_naming_verdict(naming, cause)),
                       roots=rank_by_score(graph, cand, parts["total"]),  # rank_root_causes, parts kept
                       root_parts={int(c): {k: float(v[j]) for k, v in parts.items()} for j, c in enumerate(cand)})


#: A contributor is named in the sentence only if occluding it lowers the logit by at least this share of what the
#: top contributor's occlusion does; smaller ones stay in ``Explanation.contributors``. Without it a node whose
#: risk comes from one GPU's ECC errors (a drop of 4 logits) also named two components that moved 0.03 logits,
#: quoted as "cooling unit crac-1 airflow -0 % over 59 min": noise that reads like a cause.
MATERIAL_SHARE = 0.1


#: The sentence names the cause head's likeliest group only at this probability or more ("likely"). On four 24 h
#: draws' held-out failing rows the head named the right group for 0.43-0.86 of those under it (0.58 pooled),
#: 0.79-0.85 of those in [0.5, 0.8) and 0.89-1.00 above (issue 3 follow-up 33). ``Explanation.causes`` keeps
#: every probability either way.
MIN_CAUSE_P = 0.5


def named_cause(causes: Mapping[str, float]) -> str | None:
    """The cause group the head names (its likeliest, at :data:`MIN_CAUSE_P` or more), None where it names none."""
    if not causes:
        return None
    cause = max(causes, key=causes.__getitem__)
    return cause if causes[cause] >= MIN_CAUSE_P else None


def _naming_verdict(naming: CauseNamingCheck | None, cause: str | None) -> tuple[str | None, str]:
    """The card's check of the head's naming of ``cause``: its status and note, for :func:`explanation_sentence`
    (``(None, "")`` without a check or a cause)."""
    if naming is None or cause is None:
        return None, ""
    return naming.status(cause), naming.note(cause)


def explanation_sentence(node_id: str, risk: float, contribs: Sequence[Contribution], top_k: int = 3,
                         cause: str | None = None, cause_p: float | None = None, naming_status: str | None = None,
                         naming_note: str = "") -> str:
    """'node X at risk R[, likely <cause group> (P)]: <top contributor>; <others within MATERIAL_SHARE of it>'
    (``contribs`` ranked; ``cause`` and ``cause_p``: the cause head's likeliest group and its probability, named
    only if ``cause_p >= MIN_CAUSE_P``). With the card's check of that naming
    (:meth:`~infrabrain.models.cause_naming.CauseNamingCheck.status` and ``note``): where it failed, "cause unsure
    (the head says <group> P, but <note>)"; where it was too rarely made to tell, "likely <group> (P; unchecked:
    <note>)"."""
    top = max((c.score for c in contribs), default=0.0)
    parts = [f"{KIND_LABEL[c.kind]} {c.component_id} {c.change}".strip() for c in contribs[:top_k]
             if c.score > 0 and c.score >= MATERIAL_SHARE * top]
    named = cause is not None and cause_p is not None and cause_p >= MIN_CAUSE_P
    why = ""
    if named and naming_status == FAILED:
        why = f", cause unsure (the head says {cause} {cause_p:.2f}, but {naming_note})"
    elif named:
        why = f", likely {cause} ({cause_p:.2f}" + (f"; unchecked: {naming_note})" if naming_status == TOO_FEW
                                                     else ")")
    return f"node {node_id} at risk {risk:.2f}{why}" + (": " + "; ".join(parts) if parts else "")


def raw_window(run: Any, t_idx: int, window: int) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Raw per-kind telemetry of the window ending at ``t_idx`` (for sentences in raw units)."""
    metrics, names = _get(run, "metrics"), _get(run, "metric_names")
    lo = t_idx + 1 - window
    return {k: np.asarray(v)[lo : t_idx + 1] for k, v in metrics.items()}, {k: list(v) for k, v in names.items()}


def alert_rows(rows: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The ``top_n`` highest-scoring rows, one per node (what :func:`explain_dataset_alerts` explains, in order)."""
    return rows.sort_values("score", ascending=False).drop_duplicates(["site", "node"]).head(top_n)


def snapshot_node_logits(rows: pd.DataFrame, site: int, t: int, n_nodes: int) -> np.ndarray | None:
    """Every node's logit at ``(site, t)`` from a score table (NaN where it has no row), for
    :func:`sibling_evidence`; None when the table has no ``logit`` column."""
    if "logit" not in rows.columns:
        return None
    sub = rows[(rows["site"] == site) & (rows["t"] == t)]
    out = np.full(n_nodes, np.nan)
    out[sub["node"].to_numpy(dtype=np.int64)] = sub["logit"].to_numpy(dtype=np.float64)
    return out


def explain_dataset_alerts(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet,
                           rows: pd.DataFrame, top_n: int = 5,
                           prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                           own_tails: OwnChangeTails | None = None,
                           naming: CauseNamingCheck | None = None) -> list[Explanation]:
    """Explanations of the ``top_n`` highest-scoring rows (``site, t, node, score``) of ``dataset``; ``prior`` is one
    root prior or one per site (by ``dataset``'s site index: the published mix laid on each site's topology);
    ``own_tails`` and ``naming`` as :func:`explain_node`'s."""
    out = []
    top = alert_rows(rows, top_n)
    t_index = {(si, int(dataset.sites[si].timestamps[ti])): ti for si, ti in dataset.index}
    for r in top.itertuples():
        si, ti = int(r.site), t_index[(int(r.site), int(r.t))]
        site = dataset.sites[si]
        item = build_snapshot(site, ti, dataset.window, si, pool=dataset.pool)
        raw, names = raw_window(site.run, ti, dataset.window) if site.run is not None else (None, None)
        logits = snapshot_node_logits(rows, si, int(r.t), len(site.graph.node_global))
        p = prior.get(si) if isinstance(prior, Mapping) else prior
        out.append(explain_node(model, item, site.graph, feature_set, int(r.node), raw, names, site.cadence_s,
                                prior=p, node_logits=logits, own_tails=own_tails, naming=naming))
    return out


@dataclass(frozen=True)
class ExplainedFailure:
    """One failure as :func:`rootcause_accuracy` explains it: at the node's highest-scoring snapshot in
    ``[tf - 60 min, tf - 5 min]``, with what the root-cause ranking reads there."""

    event: Any  # the row of :func:`~infrabrain.models.evaluation.failure_events` (site, node, tf, group, root, ...)
    score: float  # the node's score in the explained snapshot (the scale of ``rows["score"]``)
    t: int  # the explained snapshot's end time (``rows["t"]``)
    graph: SiteGraph
    cand: np.ndarray  # the root-cause candidates (:func:`candidates`)
    drops: np.ndarray  # their occlusion drops
    causes: dict[str, float]  # the cause head's probabilities (empty for a model without a head)
    node_logits: np.ndarray | None  # every node's logit in the snapshot (:func:`snapshot_node_logits`)
    silent: np.ndarray  # the nodes that went down within the window (:func:`silent_nodes`)
    own_change: np.ndarray | None = None  # per candidate, :func:`own_change_part` (None without training tails)


def explained_failures(model: torch.nn.Module, dataset: SnapshotDataset, rows: pd.DataFrame, events: pd.DataFrame,
                       max_events: int = 200, seed: int = 0, own_tails: OwnChangeTails | None = None,
                       feature_set: FeatureSet | None = None) -> Iterator[ExplainedFailure]:
    """Each failure of ``events`` (at most ``max_events``, sampled with ``seed``) that ``rows`` scores within the
    hour before it, explained at its highest-scoring snapshot there (:class:`ExplainedFailure`). With
    ``own_tails`` and ``feature_set`` also each candidate's :func:`own_change_part`."""
    if own_tails is not None and feature_set is None:
        raise ValueError("own_tails needs the feature_set the snapshots were encoded with")
    from infrabrain.models.evaluation import MIN_LEAD_S

    ev = events.sample(n=min(max_events, len(events)), random_state=seed) if len(events) > max_events else events
    groups = cause_groups_of(model)
    t_index = {(si, int(dataset.sites[si].timestamps[ti])): ti for si, ti in dataset.index}
    for e in ev.itertuples():
        sub = rows[(rows["site"] == e.site) & (rows["node"] == e.node) & (rows["t"] >= e.tf - HORIZON_S)
                   & (rows["t"] <= e.tf - MIN_LEAD_S)]
        if not len(sub):
            continue
        best = sub.loc[sub["score"].idxmax()]
        site = dataset.sites[int(e.site)]
        item = build_snapshot(site, t_index[(int(e.site), int(best["t"]))], dataset.window, int(e.site),
                              pool=dataset.pool)
        _, cand, drops, probs = _occlusion(model, item, site.graph, int(e.node))
        yield ExplainedFailure(
            event=e, score=float(best["score"]), t=int(best["t"]), graph=site.graph, cand=cand, drops=drops,
            causes={} if probs is None else dict(zip(groups, probs.tolist())),
            node_logits=snapshot_node_logits(rows, int(e.site), int(best["t"]), len(site.graph.node_global)),
            silent=silent_nodes(item, site.graph),
            own_change=None if own_tails is None else own_change_part(item, site.graph, cand, feature_set, own_tails))


def own_change_part(item: Mapping[str, torch.Tensor], graph: SiteGraph, cand: np.ndarray, feature_set: FeatureSet,
                    tails: OwnChangeTails) -> np.ndarray:
    """Per candidate, the root-cause ranking's ``own_change`` part in snapshot ``item``: how far its own telemetry
    moved, against the training sites' ``tails`` (:mod:`~infrabrain.models.own_change_evidence`)."""
    cand = np.asarray(cand, dtype=np.int64)
    moved = own_change(item, feature_set, tails.end_bins)[cand]
    return own_change_evidence(np.asarray(graph.kind)[cand], moved, tails)


def rootcause_accuracy(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet,
                       rows: pd.DataFrame, events: pd.DataFrame, max_events: int = 200,
                       seed: int = 0, alert_threshold: float | None = None,
                       prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                       compare_priors: Mapping[str, RootPrior | Mapping[int, RootPrior | None] | None] | None = None,
                       late_from: Mapping[int, float] | None = None, absolute: bool = False,
                       own_tails: OwnChangeTails | None = None) -> dict[str, Any]:
    """Top-1/top-3 accuracy of the root-cause ranking (:func:`rank_root_causes`, with ``prior`` if given: the one
    ``predict`` reports) against the ground truth; with ``compare_priors`` also of the same drops ranked with each
    of those priors (``report["compare"][name]``: overall, cascades, precursor and alerted cascades). Any prior
    may be one per site (a mapping from ``dataset``'s site index: a site's own labels, the published mix on its
    topology). With
    ``late_from`` (site index -> time) the comparison is also reported over the failures at or after that time
    only (``report["compare_late"]``): a site's prior counted before it is then scored on what came after.

    For each failure event (at most ``max_events``, sampled), the explained snapshot is the node's
    highest-scoring row in ``[tf - 60 min, tf - 5 min]``. Reported overall, per cause group, for cascades
    (thermal + network) and for the cascades whose root showed a precursor (``cascade_precursor_*``): an abrupt
    leaf failure leaves nothing in any window to point at, whatever the explanation method. With
    ``alert_threshold`` (the deployed alert threshold, on the scale of ``rows["score"]``) also for the cascades
    that raised an alert (``cascade_alerted_*``): the explanations an operator would read. With ``absolute``
    every prior's ranking is also scored on the raw GPU drops (``relative_gpus=False``, the ranking before issue 3
    follow-up 27), under ``report["compare"]["absolute"]`` and ``report["compare"]["<name>_absolute"]``. A model
    with a cause head ranks every prior's candidates with the head's cause evidence too, as ``predict`` does
    (:mod:`~infrabrain.models.cause_root_evidence`); the deployed ranking without it is scored beside
    (``report["without_cause_head"]``), and so is the deployed ranking without explaining the node's drop away
    (``report["without_explaining_away"]``, :func:`explained_away`; with a score table that has logits). With
    ``own_tails`` (the training sites' own changes, :mod:`~infrabrain.models.own_change_evidence`) every ranking
    also reads how far each cooling unit's own telemetry moved, and the deployed one without it is scored beside
    (``report["without_own_change"]``).
    """
    modes = (True, False) if absolute else (True,)  # relative GPU drops, and the raw ones beside
    priors = {"": prior, **{f"compare.{k}": v for k, v in (compare_priors or {}).items()}}
    res = []
    for f in explained_failures(model, dataset, rows, events, max_events, seed, own_tails, feature_set):
        e, graph = f.event, f.graph
        alerted = alert_threshold is not None and f.score >= alert_threshold
        late = late_from is not None and int(e.site) in late_from and int(e.tf) >= late_from[int(e.site)]
        for name, p in priors.items():
            p = p.get(int(e.site)) if isinstance(p, Mapping) else p
            for relative in modes:
                ranked = rank_root_causes(graph, f.cand, f.drops, p, f.node_logits, relative_gpus=relative,
                                          silent=f.silent, causes=f.causes, own_change=f.own_change)
                key = name if relative else f"{name}_absolute" if name else "compare.absolute"
                res.append((key, e.group, bool(e.precursor), alerted, _rank_of(ranked, int(e.root)), late))
        p = prior.get(int(e.site)) if isinstance(prior, Mapping) else prior
        beside = {}  # the deployed ranking without one of its parts, on the same drops
        if f.causes:
            beside["without_cause_head"] = {"own_change": f.own_change}
        if f.node_logits is not None:
            beside["without_explaining_away"] = {"causes": f.causes, "explain_away": False,
                                                 "own_change": f.own_change}
        if f.own_change is not None:
            beside["without_own_change"] = {"causes": f.causes}
        for name, kw in beside.items():
            ranked = rank_root_causes(graph, f.cand, f.drops, p, f.node_logits, silent=f.silent, **kw)
            res.append((name, e.group, bool(e.precursor), alerted, _rank_of(ranked, int(e.root)), late))
    df = pd.DataFrame(res, columns=["prior", "group", "precursor", "alerted", "rank", "late"])
    out = _rootcause_summary(df[df["prior"] == ""], alert_threshold is not None)
    out["by_group"] = {g: _top_k(d) for g, d in df[df["prior"] == ""].groupby("group")}
    for name in ("without_cause_head", "without_explaining_away", "without_own_change"):
        if (df["prior"] == name).any():
            out[name] = _rootcause_summary(df[df["prior"] == name], alert_threshold is not None)
    names = [*(compare_priors or {})]
    if absolute:
        names += [*(f"{k}_absolute" for k in names), "absolute"]
    if names:
        out["compare"] = {k: _rootcause_summary(df[df["prior"] == f"compare.{k}"], alert_threshold is not None)
                          for k in names}
        if late_from is not None:
            out["compare_late"] = {k: _rootcause_summary(df[(df["prior"] == f"compare.{k}") & df["late"]],
                                                         alert_threshold is not None) for k in names}
    return out


def _rank_of(ranked: Sequence[int], root: int) -> int:
    """Position of ``root`` in a root-cause ranking; past every candidate when it is not one."""
    return ranked.index(root) if root in ranked else 10**6


def _rootcause_summary(df: pd.DataFrame, with_alerted: bool) -> dict[str, Any]:
    """Top-k of the root's rank over all explained failures, the cascades, the precursor and alerted cascades."""
    from infrabrain.models.evaluation import CASCADE_GROUPS

    casc = df[df["group"].isin(CASCADE_GROUPS)]
    alerted = _top_k(casc[casc["alerted"]], "cascade_alerted_") if with_alerted else {}
    return {**_top_k(df), **_top_k(casc, "cascade_"), **_top_k(casc[casc["precursor"]], "cascade_precursor_"),
            **alerted}


def _top_k(ranks: pd.DataFrame, prefix: str = "") -> dict[str, Any]:
    """``<prefix>n``, ``<prefix>top1``, ``<prefix>top3`` of the root's rank in ``ranks`` (NaN when empty)."""
    n = len(ranks)
    return {f"{prefix}n": int(n),
            f"{prefix}top1": float((ranks["rank"] < 1).mean()) if n else float("nan"),
            f"{prefix}top3": float((ranks["rank"] < 3).mean()) if n else float("nan")}
