"""Whether the cause head's naming of each group held up on labelled rows it was not trained on (issue 3 follow-up
38), so that an alert says where that naming failed or was never checked.

The head's probabilities are not calibrated, and a temperature fitted on the validation site did not transfer to
the held-out sites (follow-up 37's probe). A briefly trained head can be sure and wrong: ``make demo`` printed
"likely network (1.00)" beside an EDAC climb. What can be checked is simpler. Of the labelled failing rows where
the head *named* a group (its likeliest, at :data:`MIN_CAUSE_P` or more: :func:`named_cause`), count how many were
that group (:func:`fit_cause_naming`). The centralised pipeline counts on its validation split, and a federated
site on its own held-out split (local, like its calibration).

Where the head named a group on :data:`MIN_NAMED` checked rows or more and was right on fewer than
:data:`MIN_PRECISION` of them, the naming *failed*: the sentence says the cause is unsure and why, instead of
"likely <group>". Where it named the group on fewer rows there is no verdict, and the sentence names the group
but says it is unchecked (:meth:`CauseNamingCheck.status`, :meth:`CauseNamingCheck.note`). On the goals panel
the head's namings of groups without a verdict were mostly right on the held-out sites (follow-up 38's probe),
so they are flagged, not withheld. The probabilities stay in the explanation, and the root-cause ranking reads
them as before.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A group is checked once the head named it on at least this many labelled failing rows.
MIN_NAMED = 5
#: ... and was right on at least this share of them.
MIN_PRECISION = 0.5
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


#: The model card key that holds the check (:meth:`CauseNamingCheck.from_card`).
CARD_KEY = "cause_naming"
#: :meth:`CauseNamingCheck.status`: the naming held up on the checked rows, did not, or was too rarely made to tell.
HELD_UP, FAILED, TOO_FEW = "held up", "failed", "too few"


class GroupNaming(BaseModel):
    """How often the head named one group on the checked rows, and how often that was the row's group."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    named: int = Field(ge=0)
    right: int = Field(ge=0)

    @model_validator(mode="after")
    def _check_counts(self) -> GroupNaming:
        if self.right > self.named:
            raise ValueError(f"right ({self.right}) cannot exceed named ({self.named})")
        return self


class CauseNamingCheck(BaseModel):
    """Per cause group the head names, its naming on labelled rows it was not trained on (``source`` says which)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(1, ge=1, le=1)
    source: str = Field(min_length=1, description="the rows the naming was checked on")
    groups: dict[str, GroupNaming]

    @classmethod
    def from_card(cls, card: Mapping) -> CauseNamingCheck | None:
        """The card's check (``card[CARD_KEY]``), None for a card without one (written before follow-up 38, or a
        model without a cause head): such a card names causes as before."""
        raw = card.get(CARD_KEY)
        return None if raw is None else cls.model_validate(raw)

    def status(self, group: str) -> str:
        """How the head's naming of ``group`` fared on the checked rows: :data:`HELD_UP` (named on
        :data:`MIN_NAMED` rows or more, right on :data:`MIN_PRECISION` of them or more), :data:`FAILED` (named on
        :data:`MIN_NAMED` or more, right on fewer), or :data:`TOO_FEW` (named on fewer rows: no verdict)."""
        g = self.groups.get(group, GroupNaming(named=0, right=0))
        if g.named < MIN_NAMED:
            return TOO_FEW
        return HELD_UP if g.right >= MIN_PRECISION * g.named else FAILED

    def note(self, group: str) -> str:
        """What the check found for ``group``, for the sentence: ``"it named network right on 1 of 6 validation
        rows"`` (a verdict), ``"it named other on only 4 validation rows, 4 of them right"`` (too few for one: "right
        on 4 of 4" had read as a check passed), or ``"it named thermal on no validation row"``."""
        g = self.groups.get(group, GroupNaming(named=0, right=0))
        if g.named == 0:
            return f"it named {group} on no {self.source} row"
        if g.named == 1:
            return f"it named {group} on only 1 {self.source} row, {'rightly' if g.right else 'wrongly'}"
        if g.named < MIN_NAMED:
            return f"it named {group} on only {g.named} {self.source} rows, {g.right} of them right"
        return f"it named {group} right on {g.right} of {g.named} {self.source} rows"


def fit_cause_naming(rows: pd.DataFrame, source: str) -> CauseNamingCheck | None:
    """Count, over ``rows``' failing rows of a group the head names, where the head named a group (its likeliest
    at :data:`MIN_CAUSE_P` or more, as the sentence does) and how often it was the row's.

    ``rows``: a score table with the head's ``cause_p_<group>`` columns (:func:`~infrabrain.models.training.
    predict_scores`) and ``label`` / ``cause``. None for a table without those columns (a model without a head)."""
    from infrabrain.models.evaluation import cause_head_accuracy

    missing = [c for c in ("label", "cause") if c not in rows.columns]
    if missing:
        raise ValueError(f"fit_cause_naming needs the score table's {missing} columns")
    head = cause_head_accuracy(rows, min_p=MIN_CAUSE_P)
    if head is None:
        return None
    confusion = np.asarray(head["confusion"], dtype=np.int64)  # truth by named, over the rows it names
    return CauseNamingCheck(source=source, groups={
        g: GroupNaming(named=int(confusion[:, i].sum()), right=int(confusion[i, i]))
        for i, g in enumerate(head["groups"])})
