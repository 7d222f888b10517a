"""Explanations: the top-k metrics behind each anomalous segment.

A segment's metric ranking is the mean, over the segment's minutes, of each metric's squared standardised
residual (:func:`infrabrain.models.anomaly_scoring.contributions`), i.e. which metrics the detector found
furthest from the node's normal behaviour, each in units of its own normal spread. Segments are either given
(labelled ones, to score the explanations) or found as runs of minutes whose score passes a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infrabrain.models.anomaly_data import CauseSegment


@dataclass(frozen=True)
class Explanation:
    """One segment (rows ``start..end`` inclusive), its top metrics (indices) and their share of the total."""

    start: int
    end: int
    metrics: tuple[int, ...]
    shares: tuple[float, ...]


def find_segments(flags: np.ndarray, min_length: int = 1) -> list[tuple[int, int]]:
    """Contiguous runs of True in ``flags`` as ``(start, end)`` inclusive, at least ``min_length`` long."""
    f = np.asarray(flags, dtype=bool).reshape(-1)
    edges = np.flatnonzero(np.diff(np.r_[0, f.astype(np.int8), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_length]


def explain_segments(contrib: np.ndarray, segments: Sequence[tuple[int, int]], k: int = 3) -> list[Explanation]:
    """Top-``k`` metrics of each segment from per-minute contributions ``[T, F]``."""
    c = np.asarray(contrib, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"contributions must be [T, F], got shape {c.shape}")
    if not 1 <= k <= c.shape[1]:
        raise ValueError(f"k must be in 1..{c.shape[1]}, got {k}")
    out = []
    for start, end in segments:
        if not 0 <= start <= end < c.shape[0]:
            raise ValueError(f"segment {start}-{end} outside 0..{c.shape[0] - 1}")
        per_metric = c[start : end + 1].mean(axis=0)
        top = np.argsort(-per_metric, kind="stable")[:k]
        total = float(per_metric.sum()) or 1.0
        out.append(Explanation(start, end, tuple(int(i) for i in top),
                               tuple(float(per_metric[i] / total) for i in top)))
    return out


def hit_at_k(contrib: np.ndarray, segments: Sequence[CauseSegment], k: int = 3) -> list[bool]:
    """Per labelled segment: is one of the operators' cause metrics among the top ``k`` named?"""
    expl = explain_segments(contrib, [(s.start, s.end) for s in segments], k)
    return [bool(set(e.metrics) & set(s.metrics)) for e, s in zip(expl, segments)]
