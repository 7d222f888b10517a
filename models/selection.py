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


class EarlyStopping:
    """Patience bookkeeping over a stream of scores: which epoch is best so far and whether to stop.

    A score counts as a gain only above the best by more than ``min_delta`` (ties keep the earlier epoch);
    training stops after ``patience`` epochs in a row without a gain. Used by ``training.train_model`` and by
    ``bench/predictor_selection.py`` to replay a rule on recorded scores.
    """

    def __init__(self, patience: int, min_delta: float = 1e-4) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience, self.min_delta = patience, min_delta
        self.best_score, self.best_epoch, self.bad, self.epochs = -math.inf, -1, 0, 0

    def step(self, score: float) -> bool:
        """Record the next epoch's score; True if it is the new best."""
        epoch, self.epochs = self.epochs, self.epochs + 1
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        """``patience`` epochs in a row without a gain."""
        return self.bad >= self.patience


def replay(scores: list[float], patience: int, min_delta: float = 1e-4) -> int:
    """The epoch early stopping keeps when the epochs score ``scores`` in turn (it may stop before the end)."""
    es = EarlyStopping(patience, min_delta)
    for s in scores:
        es.step(s)
        if es.stop:
            break
    return es.best_epoch
