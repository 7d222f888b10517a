"""The cause head's belief as evidence about where a failure started (issue 3 follow-up 34).

The root-cause ranking (:func:`~infrabrain.models.root_cause_ranking.rank_root_causes`) adds each candidate's
occlusion drop, its log root prior (where failures start, by relation to the failed node:
:mod:`~infrabrain.models.root_prior`) and its sibling evidence. A model with a cause head
(``ModelConfig.cause_groups``) also says which cause group the node's failure is likely to be, and a cause group says
much about where it starts: a thermal failure starts at the node's cooling unit or at one of its GPUs, a network one
at its leaf switch or at the node (its cable or NIC), a memory one at a GPU or at the node, never at a switch.

Read as a naive-Bayes likelihood (the head's posterior over its training mix), the head adds to a candidate
whose relation to the node is ``rel``

    log sum_g P(g | rel) p'(g | window) / w_g

where ``P(g | rel)`` is the share of the failures rooted in ``rel`` that are of group ``g`` and ``w_g`` the share
of all failures that are of group ``g``, both under the published failure mix laid on the site's own topology
(:mod:`~infrabrain.models.published_root_prior`: no label and no epsilon), and ``p'`` the head's probabilities
mixed with ``w`` at :data:`CAUSE_EVIDENCE_FLOOR`. A head that says no more than the mix adds 0 to every
candidate. A relation the mix never starts a failure in (a rack; another rack's leaf) gets 0.

The ranking reads the head only where its sentence names the group (``cause_naming.MIN_CAUSE_P``) and the group is
not one of :data:`UNLOCALISED_GROUPS`. Read everywhere, it pushed the leaf switch of abrupt leaf failures out of
the top three: nothing in such a window foretells the failure, the head then leans to "other", and "other"
points at the node and its GPUs (issue 3 follow-up 34).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infrabrain.models.published_root_prior import root_kind_mass, kind_relation_counts
from infrabrain.models.snapshots import SiteGraph

#: Weight of the published mix in the head's probabilities before they count as evidence: a head sure of the
#: wrong group (the demo's briefly trained one said "network (1.00)" beside a host-memory climb) then lowers a
#: candidate by at most log(1 / 0.2) = 1.6 logits. Read ungated over the sixteen 24 h draws' held-out failures,
#: next to no floor ranked 66 of them worse (60 at 0.2) and d5's cascade top-1 fell 1.00 -> 0.86; at 0.5 the
#: network failures' top-1 gained less (0.62 against 0.65 at 0.2; issue 3 follow-up 34).
CAUSE_EVIDENCE_FLOOR = 0.2

#: Cause groups whose naming says nothing the ranking can use: "other" gathers host maintenance, SSD, GPU-bus and
#: unexplained failures (a node or any of its GPUs), and it is the head's answer where the window shows nothing.
UNLOCALISED_GROUPS: frozenset[str] = frozenset({"other"})

#: The cause group that says a failure came of heat: where the head names it, a cooling unit's sibling evidence
#: explains its GPUs' drops away (:func:`~infrabrain.models.root_cause_ranking.explained_away`, issue 3 follow-up 37).
HEAT_GROUP = "thermal"


@dataclass(frozen=True)
class CauseRootTable:
    """What the published mix on one site's topology says about cause groups and root relations."""

    groups: tuple[str, ...]  # the cause groups it covers (those the mix gives failures to), in the head's order
    mix: np.ndarray  # w_g: each group's share of the site's expected node failures, [G]
    given: Mapping[str, np.ndarray]  # relation -> P(g | rel), [G] each, summing to 1


def cause_root_table(graph: SiteGraph, groups: Sequence[str]) -> CauseRootTable | None:
    """The :class:`CauseRootTable` of ``groups`` (cause group names of the contract's ``CAUSE_GROUP``) on
    ``graph``; None when the site has no GPU or the mix gives none of ``groups`` a failure."""
    from infrabrain.simulation.faults import CAUSE_GROUP, CAUSE_SHARES

    unknown = sorted(set(groups) - set(CAUSE_GROUP.values()))
    if unknown:
        raise ValueError(f"cause groups {unknown} are not groups of the contract's causes "
                         f"({sorted(set(CAUSE_GROUP.values()))})")
    mass = {g: root_kind_mass({c: s for c, s in CAUSE_SHARES.items() if CAUSE_GROUP[c] == g}) for g in groups}
    counts = kind_relation_counts(graph, sorted({k for m in mass.values() for k, v in m.items() if v > 0}))
    expected: dict[str, dict[str, float]] = {g: defaultdict(float) for g in groups}
    for g, kinds in mass.items():
        for kind, w in kinds.items():
            for rel, n in counts.get(kind, {}).items():
                expected[g][rel] += w * n
    kept = tuple(g for g in groups if sum(expected[g].values()) > 0)
    if not kept:
        return None
    rels = sorted({r for g in kept for r in expected[g]})
    table = np.array([[expected[g].get(r, 0.0) for g in kept] for r in rels])  # [R, G]
    mix = table.sum(axis=0) / table.sum()
    return CauseRootTable(groups=kept, mix=mix, given={r: row / row.sum() for r, row in zip(rels, table)})


def cause_log_evidence(table: CauseRootTable, causes: Mapping[str, float], relations: Sequence[str],
                       floor: float = CAUSE_EVIDENCE_FLOOR) -> np.ndarray:
    """Per relation of ``relations`` (:func:`~infrabrain.models.root_prior.relation`), the log evidence the cause
    head's probabilities ``causes`` (group -> probability) give that the root lies there (the module's formula);
    0 for a relation ``table`` does not hold. Groups of ``causes`` outside ``table`` are left out and the rest
    renormalised; probabilities that are not finite and non-negative, or none of ``table``'s groups, are refused
    by name."""
    if not 0.0 < floor <= 1.0:  # at 0 a sure head would rule a relation out altogether (a log of 0)
        raise ValueError(f"floor (the published mix's weight in the head's probabilities) must be in (0, 1], "
                         f"got {floor!r}")
    bad = {g: p for g, p in causes.items() if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0)}
    if bad:
        raise ValueError(f"cause probabilities must be finite and non-negative, got {bad}")
    p = np.array([float(causes.get(g, 0.0)) for g in table.groups])
    if p.sum() <= 0:
        raise ValueError(f"no probability on any cause group the root table covers ({list(table.groups)}); "
                         f"got {dict(causes)}")
    ratio = ((1.0 - floor) * p / p.sum() + floor * table.mix) / table.mix
    return np.array([math.log(float(table.given[r] @ ratio)) if r in table.given else 0.0 for r in relations])
