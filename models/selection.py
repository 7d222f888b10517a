"""Which epoch early stopping keeps: the validation score it maximises (torch-free, so the CLI can list it).

A validation site holds few failures, and one common cause dominates its PR-AUC: near-tied epochs can differ
completely in whether the model reads the switches upstream of a node (cascades) or catches a rarer mechanism.
``"pr_auc+causes"`` averages the plain PR-AUC with the mean of the per-cause-group PR-AUCs (software-like causes,
which have no precursor, excepted), so an epoch that forgets one failure mechanism loses (docs/predictor.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

Selection = Literal["pr_auc", "pr_auc+causes"]
DEFAULT_SELECTION: Selection = "pr_auc+causes"
SELECTIONS: dict[str, str] = {
    "pr_auc": "validation PR-AUC over all failures",
    "pr_auc+causes": "mean of the validation PR-AUC over all failures and of the mean per-cause-group PR-AUC "
                     "(software excepted); the plain PR-AUC where no cause group has a failure",
}


def selection_score(val: Mapping[str, float], selection: Selection) -> float:
    """The number early stopping maximises, from ``training.evaluate_model``'s metrics (see ``SELECTIONS``).

    Minus the validation loss where the split has one class only (PR-AUC undefined)."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}: expected one of {sorted(SELECTIONS)}")
    pr = float(val["pr_auc"])
    if not math.isfinite(pr):
        return -float(val["loss"])
    causes = float(val.get("pr_auc_causes", math.nan))
    if selection == "pr_auc+causes" and math.isfinite(causes):
        return 0.5 * (pr + causes)
    return pr
