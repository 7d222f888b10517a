"""Which cause groups the model learned from: how many failures of each its training split held (issue 3
follow-up 44).

A model cannot foretell a kind of failure its training sites never had. On the goals panel the GNN trails the
incumbent rules where that happens: draw 2's training sites hold no thermal failure, and its held-out sites'
thermal cascades score at the base rate (PR-AUC 0.003, the temperature rules 0.47). Nothing in the risk says so.
The card therefore records, per cause group, the failures of the training split (:func:`fit_cause_coverage`),
and a group with fewer than :data:`MIN_TRAINED_FAILURES` is *untrained* (:meth:`CauseCoverage.untrained`):
``predict`` and the daemon say the model is blind to it, and where an incumbent rule watches that group
(:mod:`~infrabrain.models.rule_fallback`) its alerts are served beside the model's risk.

Counted from the labels of the split the model was fitted on, as the root prior is
(:func:`~infrabrain.models.root_prior.split_failure_events`). A federated site's checkpoint has no coverage: the
fleet's training failures per group are not known to any one party, and such a card makes no claim either way.
Releasing them by the fleet prior's secure sum was weighed and not built (follow-up 45): at epsilon 1, one count
per group and hour of a site's history, the noise's standard deviation is 4.3 against the threshold of 3, so a
group the fleet never saw would read as learned about one time in four.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The model card key that holds the coverage (:meth:`CauseCoverage.from_card`).
CARD_KEY = "cause_coverage"
#: A cause group with fewer training failures than this is untrained: two or one examples teach a model no
#: pattern that transfers to another site. Chosen before measuring (issue 3 follow-up 44), not tuned.
MIN_TRAINED_FAILURES = 3


class CauseCoverage(BaseModel):
    """Failures of each cause group in the training split the model was fitted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(1, ge=1, le=1)
    failures: dict[str, int] = Field(..., description="cause group -> training failures of it (0 included)")

    @field_validator("failures")
    @classmethod
    def _validate_failures(cls, v: dict[str, int]) -> dict[str, int]:
        from infrabrain.simulation.faults import CAUSE_GROUP

        known = set(CAUSE_GROUP.values())
        for group, n in v.items():
            if group not in known:
                raise ValueError(f"cause coverage names unknown cause group {group!r} (groups: {sorted(known)})")
            if n < 0:
                raise ValueError(f"cause coverage count for {group!r} is negative ({n})")
        return v

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> CauseCoverage | None:
        """The card's coverage, None for a card without one (written before follow-up 44, or a federated site's):
        such a card claims nothing about what its model learned."""
        raw = card.get(CARD_KEY)
        return None if raw is None else cls.model_validate(raw)

    def untrained(self, groups: Sequence[str] | None = None,
                  min_failures: int = MIN_TRAINED_FAILURES) -> tuple[str, ...]:
        """The groups (of ``groups``, default every recorded one; software and other groups no telemetry
        foretells are never listed) with fewer than ``min_failures`` training failures, in ``groups``' order."""
        from infrabrain.models.evaluation import UNPREDICTABLE_GROUPS

        if min_failures < 1:
            raise ValueError(f"min_failures must be at least 1, got {min_failures}")
        names = list(self.failures) if groups is None else list(groups)
        return tuple(g for g in names if g not in UNPREDICTABLE_GROUPS and self.failures.get(g, 0) < min_failures)

    def note(self, groups: Sequence[str]) -> str:
        """The sentence an operator reads: ``"the model's training sites held no thermal failure and 1 power
        failure: it cannot foretell them"``; empty for no group."""
        if not groups:
            return ""
        parts = [f"{'no' if self.failures.get(g, 0) == 0 else self.failures[g]} {g} failure"
                 + ("s" if self.failures.get(g, 0) > 1 else "") for g in groups]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"the model's training sites held {listed}: it cannot foretell {'it' if len(groups) == 1 else 'them'}"


def untrained_groups(coverage: CauseCoverage | None) -> tuple[str, ...]:
    """:meth:`CauseCoverage.untrained` of ``coverage``; none for a card without coverage (it claims nothing)."""
    return coverage.untrained() if coverage is not None else ()


def fit_cause_coverage(dataset: Any) -> CauseCoverage:
    """Count ``dataset``'s failures per cause group (every group of the contract, 0 where none), over the
    failures its snapshots are labelled with."""
    from infrabrain.models.root_prior import split_failure_events
    from infrabrain.simulation.faults import CAUSE_GROUP

    events = split_failure_events(dataset)
    counts = events["group"].value_counts() if len(events) else {}
    groups = sorted(set(CAUSE_GROUP.values()))
    return CauseCoverage(failures={g: int(counts.get(g, 0)) for g in groups})


__all__ = ["CARD_KEY", "CauseCoverage", "MIN_TRAINED_FAILURES", "fit_cause_coverage", "untrained_groups"]
