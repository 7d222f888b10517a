"""Label-based scores for anomaly detectors, WITHOUT point adjustment, per machine then averaged.

Best-F1 is the maximum F1 over every threshold of the score (scikit-learn's precision-recall curve); PR-AUC
is average precision (``sklearn.metrics.average_precision_score``). The point-adjusted F1 that many papers
quote (a whole labelled segment counts as detected if any of its minutes is flagged) is offered separately
by :func:`point_adjusted_best_f1` and is never mixed into the main numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve


def _validate_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({s.shape[0]}) differ in length")
    if not np.isfinite(s).all():
        raise ValueError(f"scores hold {int((~np.isfinite(s)).sum())} non-finite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int8), s


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Return (best F1 over all thresholds, the threshold reaching it); no point adjustment."""
    y, s = _validate_scores(labels, scores)
    if y.sum() == 0:
        return 0.0, float("inf")
    prec, rec, thr = precision_recall_curve(y, s)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    i = int(np.argmax(f1[:-1])) if len(thr) else 0
    return float(f1[i]), float(thr[i]) if len(thr) else float("inf")


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    y, s = _validate_scores(labels, scores)
    if y.sum() == 0:
        return 0.0
    return float(average_precision_score(y, s))


def point_adjusted_best_f1(labels: np.ndarray, scores: np.ndarray, n_thresholds: int = 200) -> float:
    """Best F1 with point adjustment (reported separately only: it inflates results badly)."""
    y, s = _validate_scores(labels, scores)
    if y.sum() == 0:
        return 0.0
    edges = np.flatnonzero(np.diff(np.r_[0, y, 0]))
    starts, ends = edges[::2], edges[1::2]
    best = 0.0
    for t in np.quantile(s, np.linspace(0.5, 1.0, n_thresholds, endpoint=False)):
        pred = s > t
        for a, b in zip(starts, ends):
            if pred[a:b].any():
                pred[a:b] = True
        tp = float((pred & (y == 1)).sum())
        if tp == 0:
            continue
        p, r = tp / pred.sum(), tp / y.sum()
        best = max(best, 2 * p * r / (p + r))
    return best


def evaluate(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Best-F1 and PR-AUC of one machine's scores (NaN for both when it has no anomalous minute)."""
    if int(np.asarray(labels).sum()) == 0:
        _validate_scores(labels, scores)
        return {"best_f1": float("nan"), "pr_auc": float("nan"), "threshold": float("nan")}
    f1, thr = best_f1(labels, scores)
    return {"best_f1": f1, "pr_auc": pr_auc(labels, scores), "threshold": thr}


def mean_over_machines(per_machine: Sequence[dict[str, float]], key: str) -> float:
    """Average one metric over machines (each weighs the same; machines without anomalies are skipped)."""
    vals = [m[key] for m in per_machine if np.isfinite(m[key])]
    if not vals:
        raise ValueError(f"no machine with labelled anomalies to average {key!r} over")
    return float(np.mean(vals))
