"""Where failures start, before looking at the window: how many training failures had their root in each
relation to the failed node (the node itself, one of its GPUs, its leaf switch, its cooling unit, ...).

Occlusion (:mod:`infrabrain.models.occlusion`) can only point at a component whose window moved the node's risk.
An abrupt failure (a leaf switch that dies without a precursor), or one whose precursor the model does not read,
leaves every candidate's logit drop near zero, and a ranking by drop alone then follows noise. The root-cause
ranking adds each candidate's log prior to its drop (a naive-Bayes reading: the drop as the log-likelihood ratio
its window gives, the prior as what the training sites' labelled failures say). A material drop still decides;
where none is, the ranking falls back on where failures usually start, split evenly among the candidates in the
same relation (the node's eight GPUs share the GPU count; its own leaf switch is not another rack's).

The prior is counted from the training split's failures with a known root (the simulator's ground truth, or an
operator's incident records), add-one smoothed, and stored in the model card (``root_prior``). Without labelled
roots there is no prior and the ranking is by drop alone.
"""


from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infrabrain.models.features import KINDS
from infrabrain.models.snapshots import HORIZON_S, SiteGraph, SnapshotDataset


#: How far from the failed node a root may lie and still be counted (a node, its GPUs, its rack, leaf and PDUs at
#: one hop; its cooling unit and the spines at two; other racks' leaves further out).
MAX_HOPS = 4


def relation(kind: str, hops: int) -> str:
    """A candidate's relation to the failed node, as the prior counts it: its kind and hop distance
    (``"leaf@1"``, the node's own leaf switch; ``"leaf@3"``, another rack's, reached over a spine)."""
    return f"{kind}@{int(hops)}"


class RootPrior(BaseModel):
    """How many training failures had their root in each relation to the failed node (:func:`relation`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    counts: dict[str, int] = Field(..., description="relation ('kind@hops') -> training failures rooted there")
    failures: int = Field(..., ge=1, description="training failures with a known root (the sum of counts)")

    @field_validator("counts")
    @classmethod
    def _validate_counts(cls, v: dict[str, int]) -> dict[str, int]:
        for key, n in v.items():
            kind, _, hops = key.partition("@")
            if kind not in KINDS or not hops.isdigit() or int(hops) > MAX_HOPS:
                raise ValueError(f"root prior relation {key!r} is not 'kind@hops' with a kind of {list(KINDS)} "
                                 f"and hops 0-{MAX_HOPS}")
            if n < 0:
                raise ValueError(f"root prior count for {key!r} is negative ({n})")
        return v

    @model_validator(mode="after")
    def _validate_total(self) -> RootPrior:
        if sum(self.counts.values()) != self.failures:
            raise ValueError(f"root prior counts sum to {sum(self.counts.values())}, not failures={self.failures}")
        return self

    def log_prior(self, relations: Sequence[str]) -> np.ndarray:
        """Log prior weight of each candidate, given its relation to the failed node: the relation's add-one
        smoothed count split evenly among the candidates that share it (only the order matters: not normalised)."""
        n_of = Counter(relations)
        return np.array([math.log((self.counts.get(r, 0) + 1) / n_of[r]) for r in relations], dtype=np.float64)

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> RootPrior | None:
        """The prior stored in a model card, or None (cards written before it existed, or trained without roots)."""
        raw = card.get("root_prior")
        return cls.model_validate(raw) if raw is not None else None


#: Every relation a prior may hold, in a fixed, public order (the slots of a fleet prior's secure sum).
RELATIONS: tuple[str, ...] = tuple(relation(k, h) for k in KINDS for h in range(MAX_HOPS + 1))


def _relation_to(graph: SiteGraph, node: int, root: int) -> str | None:
    """The relation of component ``root`` to component ``node`` (global indices), or None beyond
    :data:`MAX_HOPS` or for an unknown root."""
    from infrabrain.models.occlusion import khop

    if not 0 <= root < graph.n:
        return None
    comps, dist = khop(graph, node, MAX_HOPS)
    at = np.searchsorted(comps, root)
    return relation(KINDS[int(graph.kind[root])], int(dist[at])) if at < len(comps) and comps[at] == root else None


def snapshot_span(dataset: SnapshotDataset) -> dict[int, tuple[int, int]]:
    """Per site, the first and last timestamp of ``dataset``'s snapshots (its time split)."""
    out: dict[int, tuple[int, int]] = {}
    for si, ti in dataset.index:
        t = int(dataset.sites[si].timestamps[ti])
        lo, hi = out.get(si, (t, t))
        out[si] = (min(lo, t), max(hi, t))
    return out


def split_failure_events(dataset: SnapshotDataset) -> pd.DataFrame:
    """:func:`~infrabrain.models.evaluation.failure_events` of ``dataset`` that some of its snapshots are labelled
    with. The sites' tensors hold the whole run: the training split of a time split must not count the test
    period's failures; one that starts at the beginning of the run also counts those of its first hour."""
    from infrabrain.models.evaluation import failure_events

    span = snapshot_span(dataset)
    starts_at_zero = dataset.time_range[0] == 0.0
    events = failure_events(dataset)
    keep = []
    for e in events.itertuples():
        lo, hi = span.get(int(e.site), (None, None))
        if lo is None:
            keep.append(starts_at_zero)
        else:
            keep.append(not (int(e.tf) - HORIZON_S > hi or (not starts_at_zero and int(e.tf) <= lo)))
    return events[np.asarray(keep, dtype=bool)].reset_index(drop=True) if len(events) else events


def root_relations(dataset: SnapshotDataset) -> pd.DataFrame:
    """``site, tf, relation`` of each of ``dataset``'s failures (:func:`split_failure_events`) whose root is known
    and within :data:`MAX_HOPS` of the failed node (what :func:`fit_root_prior` counts, and a fleet prior clips
    per hour)."""
    rows = []
    for e in split_failure_events(dataset).itertuples():
        graph = dataset.sites[int(e.site)].graph
        rel = _relation_to(graph, int(graph.node_global[int(e.node)]), int(e.root))
        if rel is not None:
            rows.append((int(e.site), int(e.tf), rel))
    return pd.DataFrame(rows, columns=["site", "tf", "relation"])


def incident_root_relations(graph: SiteGraph, incidents: pd.DataFrame) -> pd.DataFrame:
    """``tf, relation`` of a site's incident records (``t``, ``node_id``: the failed node, ``root_id``: the
    component the failure started at; the simulator's failure events, or an operator's incident log), for those
    whose root is a known component within :data:`MAX_HOPS` of the node. Unknown ids are skipped."""
    missing = {"t", "node_id", "root_id"} - set(incidents.columns)
    if missing:
        raise ValueError(f"incident records lack column(s) {sorted(missing)}")
    index = {cid: i for i, cid in enumerate(graph.component_ids)}
    rows = []
    for t, node_id, root_id in zip(incidents["t"], incidents["node_id"], incidents["root_id"], strict=True):
        node, root = index.get(str(node_id)), index.get(str(root_id))
        rel = _relation_to(graph, node, root) if node is not None and root is not None else None
        if rel is not None:
            rows.append((int(t), rel))
    return pd.DataFrame(rows, columns=["tf", "relation"])


def run_root_relations(run: Any) -> pd.DataFrame:
    """:func:`incident_root_relations` of a simulated run's node failures (its event log, no telemetry needed)."""
    from infrabrain.models.snapshots import graph_from_topology

    ev = run.events
    fails = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    incidents = pd.DataFrame({"t": fails["t"], "node_id": fails["component_id"], "root_id": fails["root_component"]})
    return incident_root_relations(graph_from_topology(run.topology), incidents)


def merge_root_priors(*priors: RootPrior | None) -> RootPrior | None:
    """One prior counting the failures of all of ``priors`` (None ones skipped); None when none is given."""
    counts: Counter[str] = Counter()
    for p in priors:
        if p is not None:
            counts.update(p.counts)
    total = sum(counts.values())
    return RootPrior(counts=dict(sorted(counts.items())), failures=total) if total else None


def fit_root_prior(dataset: SnapshotDataset) -> RootPrior | None:
    """Count where ``dataset``'s failures started, relative to the failed node; None when none has a known root
    within :data:`MAX_HOPS`."""
    counts = Counter(root_relations(dataset)["relation"])
    total = sum(counts.values())
    return RootPrior(counts=dict(sorted(counts.items())), failures=total) if total else None
