"""Derived metrics: inputs the predictor computes from raw telemetry on site, never collected or shipped.

A derived metric is a column appended to a kind's raw telemetry before it is encoded (:mod:`features`), so
training, inference, the tabular baselines and the daemon all read it through the one funnel that encodes a
window (``snapshots.encode_telemetry`` and ``snapshots.fit_normalizer``). A feature set names it like any other
metric; the daemon collects only its sources (:meth:`FeatureSet.raw_metrics_of`).

There is one:

- ``gpu_temp_above_siblings`` (GPU, C): the GPU's temperature minus the mean temperature of the other GPUs of
  its node at the same step. A cooling fault heats a rack's nodes alike, but the GPU that will fail first runs
  hottest *against its own node*: in a cooling cascade of the predictor bench's 24 h draw 10, each doomed node's
  hottest GPU ran 4-12 C above its node's GPU mean 45-60 min before failing, the spared nodes' 1-3 C (issue 3
  follow-up 20). The tabular baselines saw it through their GPU max and mean per node; the GNN's per-GPU encoder
  had no input comparing a GPU with its siblings, and its message passing sums what it gets. NaN where the GPU's
  temperature is missing, where none of its siblings' is observed, or for a GPU with no node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DerivedMetric:
    """A column of ``kind`` computed from the raw column ``source`` of the same kind by ``compute(source [T, n],
    gpu_node [n_gpu]) -> [T, n]`` (``gpu_node``: each GPU's node position, -1 for none)."""

    name: str
    kind: str
    source: str
    compute: Callable[[np.ndarray, np.ndarray], np.ndarray]


def derived_metric(name: str) -> DerivedMetric | None:
    """The derived metric called ``name``, or None for a raw one."""
    return next((d for d in DERIVED_METRICS if d.name == name), None)


def derivable(kind: str, raw_names: Sequence[str]) -> tuple[str, ...]:
    """Names of the derived metrics of ``kind`` whose source is among ``raw_names``."""
    have = set(raw_names)
    return tuple(d.name for d in DERIVED_METRICS if d.kind == kind and d.source in have)


def siblings_above(values: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """``values [T, n]`` minus, per column, the mean of the *other* columns with the same ``parent`` (NaN-aware).

    ``parent [n]`` holds a group index per column (-1: no group, result NaN). A column with no observed sibling
    at a step is NaN there: a lone GPU has nothing to run hotter than.
    """
    v = np.asarray(values, dtype=np.float64)
    parent = np.asarray(parent, dtype=np.int64)
    t, n = v.shape
    if parent.shape != (n,):
        raise ValueError(f"parent has shape {parent.shape}, expected ({n},) for {n} columns")
    out = np.full((t, n), np.nan, dtype=np.float32)
    grouped = parent >= 0
    if not grouped.any() or t == 0:
        return out
    groups = int(parent.max()) + 1
    obs = np.isfinite(v) & grouped
    flat = (np.arange(t)[:, None] * groups + np.where(grouped, parent, 0)[None, :])
    total = np.bincount(flat[obs], weights=v[obs], minlength=t * groups).reshape(t, groups)
    count = np.bincount(flat[obs], minlength=t * groups).reshape(t, groups)
    g = np.where(grouped, parent, 0)
    others = count[:, g] - obs
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_others = (total[:, g] - np.where(obs, v, 0.0)) / others
    ok = obs & (others > 0)
    out[ok] = (v - mean_others)[ok]
    return out


#: Temperature of a GPU above the mean of its node's other GPUs (C).
GPU_TEMP_ABOVE_SIBLINGS = DerivedMetric("gpu_temp_above_siblings", "gpu", "DCGM_FI_DEV_GPU_TEMP", siblings_above)

#: Every derived metric, in the order they are appended to their kind's columns.
DERIVED_METRICS: tuple[DerivedMetric, ...] = (GPU_TEMP_ABOVE_SIBLINGS,)


def with_derived_metrics(
    metrics: Mapping[str, np.ndarray],
    metric_names: Mapping[str, Sequence[str]],
    wanted: Mapping[str, Sequence[str]],
    gpu_node: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Raw per-kind telemetry ``[T, n_kind, F_kind]`` with the derived columns that ``wanted`` (per kind metric
    names, e.g. a feature set's) asks for appended; other kinds and columns pass through untouched.

    ``gpu_node [n_gpu]`` is each GPU's node position (-1: none). A derived metric whose source column is absent is
    not added, so the caller's column check names it as missing. A column already present is kept as it is.
    """
    out_m = dict(metrics)
    out_n = {k: list(v) for k, v in metric_names.items()}
    for d in DERIVED_METRICS:
        names = out_n.get(d.kind)
        if d.name not in wanted.get(d.kind, ()) or names is None or d.name in names or d.source not in names:
            continue
        arr = np.asarray(out_m[d.kind])
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        if arr.ndim != 3 or arr.shape[1] != len(gpu_node):
            raise ValueError(f"metrics[{d.kind!r}] has shape {arr.shape}, expected [T, {len(gpu_node)}, F] for "
                             f"{len(gpu_node)} {d.kind} components")
        src = arr[:, :, names.index(d.source)]
        col = d.compute(src, gpu_node)
        out_m[d.kind] = np.concatenate([arr, col[:, :, None].astype(arr.dtype)], axis=2)
        names.append(d.name)
    return out_m, out_n
