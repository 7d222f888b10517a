"""Occlusion over graph neighbours: how much each possible root cause moves an alerted node's failure logit.

For a node, the candidates are the components that can be its root cause: the node itself, its GPUs, and the
infrastructure within the model's receptive field (rack, leaf and spine switches, the rack's PDUs, the cooling
unit); other nodes and their GPUs are not candidates (:func:`candidates`). Each candidate's whole window is
replaced by "typical" values (0 after normalisation = the training mean, still marked observed) and the drop of
the node's failure logit is its contribution (:func:`occlusion_scores`). The forward passes run on the node's
``layers``-hop subgraph only, which gives exactly the same logit as the full site.

The sentences (:mod:`~infrabrain.models.explain`) quote the drops; the root-cause ranking
(:mod:`~infrabrain.models.root_cause_ranking`) adds evidence to them. Both read the per-graph caches here
(:data:`GRAPH_CACHE`: adjacency, dependent-node rings, cause-root tables).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from infrabrain.models.cause_root_evidence import CauseRootTable, cause_root_table
from infrabrain.models.features import KINDS
from infrabrain.models.gnn import risk_and_cause_logits
from infrabrain.models.snapshots import SiteGraph, collate_snapshots


def _adjacency(graph: SiteGraph) -> list[np.ndarray]:
    import scipy.sparse as sp

    e = graph.edge_index
    n = graph.n
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()
    return [a.indices[a.indptr[i] : a.indptr[i + 1]] for i in range(n)]


class GraphCache:
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


#: The one cache every explanation and ranking reads (entries die with their graphs).
GRAPH_CACHE = GraphCache()


def khop(graph: SiteGraph, start: int, hops: int) -> tuple[np.ndarray, np.ndarray]:
    """Components within ``hops`` of ``start`` (sorted) and their hop distance."""
    adj = GRAPH_CACHE.adj(graph)
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


def _hops(model: torch.nn.Module) -> int:
    """How far the model's message passing reaches (its receptive field in hops)."""
    return int(model.config.layers) if hasattr(model, "config") else 3


@torch.no_grad()
def occlusion_scores(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph, node_pos: int,
                     cand: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Logit of node ``node_pos`` and the logit drop when each candidate's window is made typical.

    Returns ``(logit, candidates, drops)``.
    """
    logit, cand, drops, _ = occlusion_with_causes(model, item, graph, node_pos, cand)
    return logit, cand, drops


@torch.no_grad()
def occlusion_with_causes(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph, node_pos: int,
               cand: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`occlusion_scores` and, from the same pass over the unoccluded subgraph, the node's cause
    probabilities (``ModelConfig.cause_groups`` order; None for a model without a cause head)."""
    model.eval()
    hops = _hops(model)
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


@torch.no_grad()
def metric_occlusion(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph, node_pos: int,
                     components: Sequence[int], n_metrics: Sequence[int]) -> list[np.ndarray]:
    """For each of ``components`` (global indices within the node's reach), the drop of node ``node_pos``'s logit
    when the window of each of its first ``n_metrics`` feature slots alone is made typical.

    What a sentence quotes of a contributor is then the metric the model's risk hangs on, not merely the one
    that deviates most: a cable fault's node is quoted by its InfiniBand errors, not by a load average that also
    moved. One batch over the node's subgraph, one copy per (component, metric)."""
    model.eval()
    node_g = int(graph.node_global[node_pos])
    comps, _ = khop(graph, node_g, max(_hops(model), 1))
    local = np.searchsorted(comps, np.asarray(components, dtype=np.int64))
    if len(local) and (local.max() >= len(comps) or not np.array_equal(comps[local], components)):
        raise ValueError(f"components {list(components)} are not all within node {node_pos}'s receptive field")
    jobs = [(i, f) for i, n in enumerate(n_metrics) for f in range(int(n))]
    if not jobs:
        return [np.zeros(0) for _ in components]
    batch = collate_snapshots([_subgraph_item(item, comps, node_pos)] * (len(jobs) + 1))
    for j, (i, f) in enumerate(jobs):
        batch["x"][j + 1, local[i], :, f] = 0.0
    logits = risk_and_cause_logits(model, batch)[0][:, 0].double().numpy()
    drops = logits[0] - logits[1:]
    bounds = np.cumsum([0, *(int(n) for n in n_metrics)])
    return [drops[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
