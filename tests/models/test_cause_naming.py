"""The cause head names a cause in an alert only where its naming of that group held up on checked rows (issue 3
follow-up 38): ``make demo``'s briefly trained head had said "likely network (1.00)" beside an EDAC climb."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from infrabrain.models.cause_naming import (CARD_KEY, FAILED, HELD_UP, MIN_NAMED, MIN_PRECISION, TOO_FEW,
                                            CauseNamingCheck, GroupNaming, fit_cause_naming)
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS, cause_names
from infrabrain.models.cause_naming import MIN_CAUSE_P
from infrabrain.models.explain import Contribution, explanation_sentence
from infrabrain.models.training import cause_column


def _rows(spec: list[tuple[int, str | None, str, float]]) -> pd.DataFrame:
    """A score table: per row its label, its cause (a cause name of the group given, None: no failure), and the
    head's probability ``p`` for one group (the rest shared evenly by the other groups)."""
    causes, group = cause_names()
    first = {g: causes.index(next(c for c in causes if group.get(c, "other") == g)) for g in (*TYPED_CAUSE_GROUPS,
                                                                                             "software")}
    out = []
    for label, truth, named, p in spec:
        rest = (1.0 - p) / (len(TYPED_CAUSE_GROUPS) - 1)
        out.append({"label": label, "cause": first[truth] if truth else -1,
                    **{cause_column(g): (p if g == named else rest) for g in TYPED_CAUSE_GROUPS}})
    return pd.DataFrame(out)


def test_the_check_counts_only_failing_rows_the_head_named_with_its_likeliest_group() -> None:
    rows = _rows([
        (1, "network", "network", 0.9),  # named network, right
        (1, "memory", "network", 0.8),  # named network, wrong
        (1, "memory", "network", MIN_CAUSE_P - 0.01),  # below the naming bar: not named
        (0, None, "network", 0.99),  # no failure: nothing to check against
        (1, "software", "memory", 0.9),  # a group the head does not name
        (1, "memory", "memory", MIN_CAUSE_P),  # named memory at the bar, right
    ])
    check = fit_cause_naming(rows, "validation")
    assert check.source == "validation" and set(check.groups) == set(TYPED_CAUSE_GROUPS)
    assert check.groups["network"] == GroupNaming(named=2, right=1)
    assert check.groups["memory"] == GroupNaming(named=1, right=1)
    assert check.groups["thermal"] == GroupNaming(named=0, right=0)
    assert fit_cause_naming(rows.drop(columns=[cause_column(g) for g in TYPED_CAUSE_GROUPS]), "x") is None
    with pytest.raises(ValueError, match=r"\['label'\]"):
        fit_cause_naming(rows.drop(columns=["label"]), "validation")


def test_a_naming_holds_up_fails_or_was_made_too_rarely_to_tell() -> None:
    need = int(np.ceil(MIN_PRECISION * MIN_NAMED))
    check = CauseNamingCheck(source="validation", groups={
        "memory": GroupNaming(named=MIN_NAMED, right=need), "network": GroupNaming(named=MIN_NAMED, right=need - 1),
        "thermal": GroupNaming(named=MIN_NAMED - 1, right=MIN_NAMED - 1)})
    assert [check.status(g) for g in ("memory", "network", "thermal", "power")] == [HELD_UP, FAILED, TOO_FEW, TOO_FEW]
    assert check.note("network") == f"it named network right on {need - 1} of {MIN_NAMED} validation rows"
    assert check.note("power") == "it named power on no validation row"
    # too few rows for a verdict reads as such ("right on 4 of 4" had read as a check passed)
    few = MIN_NAMED - 1
    assert check.note("thermal") == f"it named thermal on only {few} validation rows, {few} of them right"
    once = CauseNamingCheck(source="site held-out", groups={"memory": GroupNaming(named=1, right=0)})
    assert once.note("memory") == "it named memory on only 1 site held-out row, wrongly"


def test_the_card_keeps_the_check_and_bad_input_is_named() -> None:
    check = CauseNamingCheck(source="site held-out", groups={"memory": GroupNaming(named=7, right=6)})
    card = json.loads(json.dumps({CARD_KEY: check.model_dump()}))
    assert CauseNamingCheck.from_card(card) == check and CauseNamingCheck.from_card({}) is None
    with pytest.raises(ValidationError, match=r"right \(3\) cannot exceed named \(2\)"):
        GroupNaming(named=2, right=3)
    with pytest.raises(ValidationError, match="surprise"):
        CauseNamingCheck.from_card({CARD_KEY: {**check.model_dump(), "surprise": 1}})


def test_the_sentence_says_a_failed_naming_is_unsure_and_flags_one_too_rarely_made() -> None:
    ranked = [Contribution(0, "r02-n03", "node", 2.0, "edac", "EDAC correctable errors +126 over 59 min")]
    tail = ": node r02-n03 EDAC correctable errors +126 over 59 min"
    failed = "it named network right on 1 of 6 validation rows"
    assert explanation_sentence("r02-n03", 0.76, ranked, cause="network", cause_p=1.0, naming_status=FAILED,
                                naming_note=failed) == (
        "node r02-n03 at risk 0.76, cause unsure (the head says network 1.00, but it named network right on 1 of 6 "
        "validation rows)" + tail)
    assert explanation_sentence("r02-n03", 0.76, ranked, cause="network", cause_p=1.0, naming_status=TOO_FEW,
                                naming_note="it named network on no validation row") == (
        "node r02-n03 at risk 0.76, likely network (1.00; unchecked: it named network on no validation row)" + tail)
    for status in (HELD_UP, None):
        assert explanation_sentence("r02-n03", 0.76, ranked, cause="network", cause_p=1.0,
                                    naming_status=status) == "node r02-n03 at risk 0.76, likely network (1.00)" + tail
    assert explanation_sentence("r02-n03", 0.76, ranked, cause="network", cause_p=0.3, naming_status=FAILED,
                                naming_note=failed) == "node r02-n03 at risk 0.76" + tail
