"""Classical baselines: PCA reconstruction error (90 % variance) and Isolation Forest (scikit-learn).

``PCADetector`` gives per-metric residuals like the other detectors, so it can be scored two ways:
``score_raw`` (plain squared reconstruction error, the published baseline: mean best-F1 0.567 and PR-AUC 0.539
on the 8 SMD machines) and ``score`` (the shared standardised + trailing-mean scoring of
:mod:`infrabrain.models.anomaly_scoring`).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from infrabrain.models.anomaly_scoring import fit_scale, score_from_residuals


def _validate(x: np.ndarray, n_metrics: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"metrics must be [T>=2, F], got shape {x.shape}")
    if n_metrics is not None and x.shape[1] != n_metrics:
        raise ValueError(f"expected {n_metrics} metrics, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError(f"metrics hold {int((~np.isfinite(x)).sum())} NaN/inf values; fill them first")
    return x


class PCADetector:
    """PCA fitted on normal history keeping ``variance`` of it; residual = x minus its projection."""

    def __init__(self, variance: float = 0.90, smooth: int = 5) -> None:
        if not 0.0 < variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {variance}")
        self.variance, self.smooth = variance, smooth

    def fit(self, train: np.ndarray) -> PCADetector:
        x = _validate(train)
        n = self.variance if self.variance < 1.0 else None
        self.pca = PCA(n_components=n, svd_solver="full").fit(x)
        self.n_metrics = x.shape[1]
        self.scale = fit_scale(self.residuals(x))
        return self

    @property
    def n_components(self) -> int:
        return int(self.pca.n_components_)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        x = _validate(x, getattr(self, "n_metrics", None))
        return (x - self.pca.inverse_transform(self.pca.transform(x))).astype(np.float32)

    def score_raw(self, x: np.ndarray) -> np.ndarray:
        """Plain squared reconstruction error per minute (the published baseline)."""
        return np.square(self.residuals(x), dtype=np.float64).sum(axis=1)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Standardised residuals, trailing mean over ``smooth`` minutes (same scoring as the others)."""
        return score_from_residuals(self.residuals(x), self.scale, self.smooth)


class IsolationForestDetector:
    """scikit-learn Isolation Forest on single minutes; score = minus ``score_samples`` (higher = odder)."""

    def __init__(self, n_estimators: int = 100, max_samples: int | str = "auto", seed: int = 0) -> None:
        self.model = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, random_state=seed)

    def fit(self, train: np.ndarray) -> IsolationForestDetector:
        x = _validate(train)
        self.n_metrics = x.shape[1]
        self.model.fit(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(_validate(x, self.n_metrics))
