"""Post-hoc calibration (Platt scaling) and the calibrated GNN + logistic ensemble.

Class weighting (``pos_weight`` up to 50) makes the GNN's raw probabilities far too high (ECE ~0.4 on held-out
sites). :class:`PlattCalibrator` fits ``P(fail) = sigmoid(a * logit + b)`` on the *validation* split (a whole
site never trained on, in the bench), which keeps the ranking (PR-AUC, event recall, lead times are unchanged)
and makes the risk a probability. That holds only for a slope ``a > 0``: where the validation logits rank the
failing rows *below* the healthy ones (a model that does not transfer to the validation site, or a tiny one), the
fit refuses (``ValueError``) and the pipeline keeps the raw sigmoid, instead of a map that reverses the ranking.
It is stored in the model card (``calibration``) and applied by ``predict`` and the daemon.

:func:`calibrated_ensemble` averages two calibrated probabilities (the GNN's and the per-node logistic
regression's): the GNN carries the graph (cascades), the logistic model the per-node summaries that transfer
best to unseen sites, and their errors differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]``."""
    q = np.clip(np.asarray(p, float), eps, 1 - eps)
    return np.log(q / (1 - q))


class PlattCalibrator(BaseModel):
    """``P = sigmoid(a * logit + b)``; the identity is ``a = 1, b = 0``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: float = Field(1.0, gt=0, description="slope on the model's logit; positive, so the ranking is kept")
    b: float = Field(0.0, description="intercept")
    n: int = Field(0, ge=0, description="rows it was fitted on")
    positives: int = Field(0, ge=0)

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray) -> PlattCalibrator:
        """Fit on validation ``logits`` and boolean ``labels``; both classes are needed (else ``ValueError``)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(logits, float).reshape(-1)
        y = np.asarray(labels, bool).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"calibration: {len(x)} logits but {len(y)} labels")
        if not np.all(np.isfinite(x)):
            raise ValueError("calibration: logits contain NaN or infinity")
        if y.all() or not y.any():
            raise ValueError(f"calibration needs both classes in the validation labels (got {int(y.sum())} "
                             f"positives of {len(y)})")
        m = LogisticRegression(C=1e4, max_iter=1000).fit(x[:, None], y.astype(int))
        a = float(m.coef_[0, 0])
        if not a > 0:  # a map with it would reverse (or flatten) the model's ranking of every row
            raise ValueError(f"calibration: the logits do not rank the {int(y.sum())} failing rows above the healthy "
                             f"ones (fitted slope a = {a:.3g} <= 0); a Platt map would reverse the risk ranking")
        return cls(a=a, b=float(m.intercept_[0]), n=len(y), positives=int(y.sum()))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ``logits``."""
        z = self.a * np.asarray(logits, float) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> PlattCalibrator | None:
        """The calibrator stored in a model card (``card["calibration"]``), or None (older checkpoints)."""
        from pydantic import ValidationError

        data = card.get("calibration")
        if not data:
            return None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:  # e.g. a slope <= 0 from an edited card or an older version: would reverse
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "calibration"
            raise ValueError(f"model card's calibration is invalid ({where}: {err['msg']}); retrain or remove "
                             "it") from exc


def risk_of(logits: np.ndarray, calibration: PlattCalibrator | None) -> np.ndarray:
    """Failure probability of raw ``logits``: ``calibration`` applied where there is one (a model card's), else the
    raw sigmoid (what ``predict`` and the daemon report)."""
    z = np.asarray(logits, float)
    return calibration.apply(z) if calibration is not None else 1.0 / (1.0 + np.exp(-z))


def calibrated_ensemble(p_gnn: np.ndarray, p_tab: np.ndarray) -> np.ndarray:
    """Mean of two calibrated probabilities of the same rows (the GNN's and the logistic baseline's)."""
    a, b = np.asarray(p_gnn, float), np.asarray(p_tab, float)
    if a.shape != b.shape:
        raise ValueError(f"ensemble: score arrays differ in shape {a.shape} vs {b.shape}")
    return 0.5 * (a + b)


__all__ = ["PlattCalibrator", "calibrated_ensemble", "logit", "risk_of"]
