"""The privacy unit: one training sample = one snapshot window, and windows that do not overlap.

DP-SGD protects each *training sample*. For the failure predictor a sample is one snapshot window (one hour of
a whole site's telemetry, plus its next-hour label). If consecutive windows overlapped (stride < window), one
raw reading would sit in ``ceil(window / stride)`` samples and the per-sample epsilon would understate what an
attacker learns about that reading. ``train_dp`` therefore refuses datasets that declare overlapping windows
(``window`` and ``stride`` attributes, as :class:`infrabrain.models.snapshots.SnapshotDataset` has).

:func:`group_privacy` converts a per-sample guarantee to one for a group of k samples; docs/privacy.md uses it
for one window's hour of raw telemetry, which touches 2 non-overlapping samples (its own window's features,
the previous window's label; an unaligned hour touches at most 3).
"""

from __future__ import annotations

import math
from typing import Any

from infrabrain.privacy.budget import validate_delta


def overlap_factor(dataset: Any) -> int:
    """How many training samples one raw time step can fall into: ``ceil(window / stride)``, or 1 when the
    dataset declares no ``window``/``stride`` (generic datasets: the caller states their unit)."""
    window, stride = getattr(dataset, "window", None), getattr(dataset, "stride", None)
    if not isinstance(window, int) or not isinstance(stride, int) or isinstance(window, bool):
        return 1
    if window <= 0 or stride <= 0:
        raise ValueError(f"dataset declares window={window} and stride={stride}; both must be positive")
    return max(1, math.ceil(window / stride))


def validate_privacy_unit(dataset: Any) -> None:
    """Raise ``ValueError`` if the dataset's training windows overlap (the per-window epsilon would lie)."""
    k = overlap_factor(dataset)
    if k > 1:
        raise ValueError(
            f"training windows overlap (stride={dataset.stride} < window={dataset.window} steps): one telemetry "
            f"reading would sit in up to {k} training samples, so the per-window epsilon would understate its "
            f"exposure by a group-privacy factor of {k}. Build the DP training set with stride = window "
            "(non-overlapping windows); evaluation sets may overlap."
        )


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(epsilon, delta)-DP for one sample implies (k epsilon, k e^((k-1) epsilon) delta)-DP for k samples."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"group size k must be a positive integer, got {k!r}")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    validate_delta(delta)
    return k * epsilon, min(1.0, k * math.exp((k - 1) * epsilon) * delta)
