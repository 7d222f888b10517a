"""Turn per-metric residuals into one anomaly score per node-minute, the same way for every detector.

Every residual detector here (neural, HDC, PCA) reconstructs each minute's metrics; the residual of metric f is
divided by that metric's residual spread on the node's own normal history (so a metric that is always noisy
does not dominate and a quiet metric that moves is noticed), squared, averaged over metrics, and then averaged
over the last ``smooth`` minutes (trailing, so it can run online). On SMD the per-metric scaling and the
5-minute trailing mean lift PCA from 0.567 to 0.661 mean best-F1 (see docs/anomaly.md).
"""

from __future__ import annotations

import numpy as np

SCALE_FLOOR = 1e-3  # residual spread floor: constant metrics (std 0) cannot blow the score up


def fit_scale(train_residuals: np.ndarray, floor: float = SCALE_FLOOR) -> np.ndarray:
    """Per-metric residual spread on normal history, floored (constant metrics get the floor)."""
    r = np.asarray(train_residuals, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"train residuals must be [T>=2, F], got shape {r.shape}")
    return (r.std(axis=0) + floor).astype(np.float32)


def contributions(residuals: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Squared standardised residual per minute and metric ``[T, F]`` (the explanation's raw material)."""
    if residuals.shape[-1] != scale.shape[0]:
        raise ValueError(f"residuals have {residuals.shape[-1]} metrics but the scale has {scale.shape[0]}")
    return np.square(residuals / scale, dtype=np.float32)


def trailing_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over the last ``k`` rows (the first rows average what exists, padded with the first value)."""
    if k < 1:
        raise ValueError(f"smooth must be >= 1, got {k}")
    if k == 1 or x.shape[0] == 0:
        return x
    pad = np.concatenate([np.repeat(x[:1], k - 1, axis=0), x], axis=0).astype(np.float64)
    c = np.cumsum(pad, axis=0)
    out = c[k - 1 :].copy()
    out[1:] -= c[: -k]
    return (out / k).astype(np.float32)


def score_from_residuals(residuals: np.ndarray, scale: np.ndarray, smooth: int) -> np.ndarray:
    """One score per minute: trailing mean over ``smooth`` minutes of the mean squared standardised residual."""
    return trailing_mean(contributions(residuals, scale).mean(axis=1), smooth)
