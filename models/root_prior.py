"""Where failures start, before looking at the window: how many training failures had their root in each
relation to the failed node (the node itself, one of its GPUs, its leaf switch, its cooling unit, ...).

Occlusion (:mod:`infrabrain.models.explain`) can only point at a component whose window moved the node's risk.
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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infrabrain.models.features import KINDS
from infrabrain.models.snapshots import SnapshotDataset


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


def fit_root_prior(dataset: SnapshotDataset) -> RootPrior | None:
    """Count where ``dataset``'s failures started, relative to the failed node; None when none has a known root
    within :data:`MAX_HOPS`."""
    from infrabrain.models.evaluation import failure_events
    from infrabrain.models.explain import khop

    counts: Counter[str] = Counter()
    for e in failure_events(dataset).itertuples():
        graph = dataset.sites[int(e.site)].graph
        root = int(e.root)
        if not 0 <= root < graph.n:
            continue
        comps, dist = khop(graph, int(graph.node_global[int(e.node)]), MAX_HOPS)
        at = np.searchsorted(comps, root)
        if at < len(comps) and comps[at] == root:
            counts[relation(KINDS[int(graph.kind[root])], int(dist[at]))] += 1
    total = sum(counts.values())
    return RootPrior(counts=dict(sorted(counts.items())), failures=total) if total else None
