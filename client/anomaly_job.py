"""The daemon's label-free anomaly score: a per-site ``AnomalyScorer`` on node-level telemetry from the store.

Why: most sites have no failure labels (and no trained predictor) at first; this score still says "this node
behaves unlike the site's normal nodes", and it is published as ``infrabrain_node_anomaly_score{site, node}``.

How (one call of :meth:`AnomalyJob.step` per scoring cycle):
- node metrics (``known_metrics("node")``) are read from the local store on the cadence grid; counters
  (made monotone across resets by the store) become per-second rates; a metric with no sample in the fit
  history is dropped (the list is fixed at fit time and saved with the model);
- NaNs are forward-filled per metric as ``docs/anomaly.md`` says (``ffill_nan``); a leading gap takes the
  first value seen in the window instead of 0, so a window edge is not an anomaly;
- the scorer is one fleet model for the site: fitted on every node's minutes stacked (``[T*N, F]``) and applied
  with ``score_nodes([T, N, F])``, so a score is in units of the normal residual spread of the site's nodes;
- it is fitted once at least ``min_fit_minutes`` of history exist (or loaded from ``model_path``), refitted
  after ``refit_every_minutes`` of new data (data time, not wall time), and saved atomically;
- not enough history, or a node without recent samples: no value for it, and a log line says why.
- scores saturate at :data:`SCORE_CAP` (a metric flat in the whole fit history has no spread to divide by).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrabrain.atomic import atomic_write_text
from infrabrain.client.config import AnomalySection
from infrabrain.client.records import is_counter, known_metrics
from infrabrain.client.store import TelemetryStore
from infrabrain.logs import get_logger
from infrabrain.models.anomaly_data import ffill_nan
from infrabrain.models.anomaly_scorer import AnomalyScorer

log = get_logger("client.anomaly")

#: A node whose newest sample is older than this many steps is not scored (its score would be a stale fill).
STALE_STEPS = 5
#: Published scores saturate here: a metric that never moved in the fit history (an error counter at 0) has no
#: spread, so its first change is "infinitely" abnormal (1e19 and more); the gauge says "far off" instead.
SCORE_CAP = 1e6
#: A node above the threshold is re-alerted at most this often.
REALERT_S = 3600.0
_META_FORMAT = "infrabrain-daemon-anomaly-v1"


@dataclass(frozen=True)
class NodeAnomaly:
    """One node's score this cycle and, when above the threshold, its top metrics (name, share)."""

    node_id: str
    score: float
    top_metrics: tuple[tuple[str, float], ...] = ()


def node_rates(values: np.ndarray, metric_names: Sequence[str], cadence_s: int) -> np.ndarray:
    """``[T+1, N, F]`` store window -> ``[T, N, F]``: counters as per-second rates, gauges as read."""
    v = np.asarray(values, dtype=np.float64)
    out = v[1:].copy()
    for j, m in enumerate(metric_names):
        if is_counter(m):
            out[:, :, j] = np.diff(v[:, :, j], axis=0) / float(cadence_s)
    return out.astype(np.float32)


def fill_node(x: np.ndarray) -> np.ndarray:
    """``[T, F]`` with NaNs -> forward-filled (a leading gap takes the column's first finite value; 0 if none)."""
    a = np.array(x, dtype=np.float32, copy=True)
    if a.shape[0] and np.isnan(a[0]).any():
        finite = np.isfinite(a)
        first = np.where(finite.any(axis=0), np.argmax(finite, axis=0), 0)
        head = a[first, np.arange(a.shape[1])]
        a[0] = np.where(np.isnan(a[0]), head, a[0])
    return ffill_nan(a)[0]


def _validate_node_ids(node_ids: Sequence[str]) -> list[str]:
    ids = list(node_ids)
    if not ids:
        raise ValueError("anomaly: the topology has no nodes to score")
    return ids


class AnomalyJob:
    """Fits/loads the site's scorer and scores every node once per cycle (see the module docstring)."""

    def __init__(self, section: AnomalySection, node_ids: Sequence[str], cadence_s: int, site: str = "",
                 torch_threads: int = 1) -> None:
        self.section = section
        self.torch_threads = int(torch_threads)
        self.node_ids = _validate_node_ids(node_ids)
        self.cadence_s = int(cadence_s)
        self.site = site
        self.scorer: AnomalyScorer | None = None
        self.metric_names: list[str] = []
        self.fitted_t: int | None = None
        self.last_reason: str | None = None
        self._alerted: dict[str, float] = {}
        if section.model_path is not None and Path(section.model_path).is_file():
            self._load(Path(section.model_path))

    # -- steps of the grid -----------------------------------------------------------------------------------
    def _steps(self, minutes: float) -> int:
        return max(1, int(round(minutes * 60.0 / self.cadence_s)))

    def _read(self, store: TelemetryStore, latest_t: int, steps: int, metrics: Sequence[str]) -> np.ndarray:
        """Rates ``[steps, N, F]`` for the ``steps`` grid steps ending at ``latest_t`` (NaN = no sample)."""
        end = (int(latest_t) // self.cadence_s + 1) * self.cadence_s
        start = end - (steps + 1) * self.cadence_s
        w = store.read_window("node", start, end, self.cadence_s, self.node_ids, list(metrics))
        return node_rates(w.values, metrics, self.cadence_s)

    # -- persistence -----------------------------------------------------------------------------------------
    def _meta_path(self, path: Path) -> Path:
        return path.with_name(path.name + ".meta.json")

    def _load(self, path: Path) -> None:
        try:
            scorer = AnomalyScorer.load(path)
            meta = json.loads(self._meta_path(path).read_text())
            if meta.get("format") != _META_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {_META_FORMAT!r}")
            names = [str(m) for m in meta["metrics"]]
            unknown = sorted(set(names) - set(known_metrics("node")))
            if unknown or len(names) != scorer.n_metrics or scorer.kind != self.section.kind:
                raise ValueError(f"does not match this site (kind {scorer.kind}, metrics {names})")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("saved anomaly scorer unusable; refitting from the store",
                      extra={"model_path": str(path), "error": str(exc)})
            return
        self.scorer, self.metric_names, self.fitted_t = scorer, names, int(meta["fitted_t"])
        log.info("anomaly scorer loaded", extra={"model_path": str(path), "kind": scorer.kind,
                                                 "metrics": len(names), "fitted_t": self.fitted_t})

    def _save(self) -> None:
        path = self.section.model_path
        if path is None or self.scorer is None:
            return
        try:
            self.scorer.save(path)
            atomic_write_text(self._meta_path(Path(path)), json.dumps(
                {"format": _META_FORMAT, "metrics": self.metric_names, "fitted_t": self.fitted_t,
                 "cadence_s": self.cadence_s}))
        except OSError as exc:
            log.error("cannot save the anomaly scorer; it stays in memory", extra={"model_path": str(path),
                                                                                  "error": str(exc)})

    # -- fitting ---------------------------------------------------------------------------------------------
    def _refit_due(self, latest_t: int) -> bool:
        if self.scorer is None or self.fitted_t is None:
            return True
        every = self.section.refit_every_minutes
        return every > 0 and latest_t - self.fitted_t >= every * 60.0

    def fit(self, store: TelemetryStore, latest_t: int) -> bool:
        """Fit on the newest ``fit_minutes`` of node history; False (reason logged) when there is too little."""
        metrics = list(known_metrics("node"))
        x = self._read(store, latest_t, self._steps(self.section.fit_minutes), metrics)
        finite = np.isfinite(x)
        keep = finite.any(axis=(0, 1))
        have = int(finite.any(axis=(1, 2)).sum())
        need = self._steps(self.section.min_fit_minutes)
        if have < need or not keep.any():
            self._reason("not enough node history to fit the anomaly scorer yet",
                         history_steps=have, needed_steps=need)
            return False
        names = [m for m, k in zip(metrics, keep, strict=True) if k]
        x = x[:, :, keep]
        rows = []
        for i in range(x.shape[1]):
            reported = np.isfinite(x[:, i]).any(axis=1)
            if reported.any():
                first = int(np.argmax(reported))
                rows.append(fill_node(x[first:, i]))
        history = np.concatenate(rows, axis=0)
        if self.section.kind == "neural":
            import torch

            torch.set_num_threads(self.torch_threads)
        t0 = time.perf_counter()
        scorer = AnomalyScorer(self.section.kind).fit(history)
        self.scorer, self.metric_names, self.fitted_t = scorer, names, int(latest_t)
        log.info("anomaly scorer fitted", extra={"kind": scorer.kind, "minutes": int(history.shape[0]),
                                                 "nodes": len(rows), "metrics": len(names),
                                                 "fit_s": round(time.perf_counter() - t0, 3)})
        self._save()
        return True

    def _reason(self, msg: str, **extra: object) -> None:
        """Log why there is no score (once per distinct reason, not every cycle)."""
        if msg != self.last_reason:
            log.info(msg, extra=extra)
        self.last_reason = msg

    # -- scoring ---------------------------------------------------------------------------------------------
    def step(self, store: TelemetryStore, now: float | None = None) -> list[NodeAnomaly]:
        """(Re)fit when due, then score every node with recent samples; empty (reason logged) when not ready."""
        now = time.time() if now is None else now
        latest = store.latest_t()
        if latest is None:
            self._reason("store is empty; no anomaly scores yet")
            return []
        if self._refit_due(latest) and not self.fit(store, latest) and self.scorer is None:
            return []
        assert self.scorer is not None
        steps = max(self._steps(self.section.score_minutes), self.scorer.context)
        x = self._read(store, latest, steps, self.metric_names)
        out: list[NodeAnomaly] = []
        cols: list[int] = []
        for i, node in enumerate(self.node_ids):
            recent = np.isfinite(x[-STALE_STEPS:, i]).any()
            if recent:
                cols.append(i)
            else:
                log.debug("node has no recent samples; not scored", extra={"node": node})
        if not cols:
            self._reason("no node has recent samples; no anomaly scores", stale_steps=STALE_STEPS)
            return []
        self.last_reason = None
        grid = np.stack([fill_node(x[:, i]) for i in cols], axis=1)
        scores = self.scorer.score_nodes(grid)[-1]
        for j, i in enumerate(cols):
            node, score = self.node_ids[i], float(scores[j])
            if np.isfinite(score):
                score = min(score, SCORE_CAP)
            else:
                log.warning("anomaly score not finite; not published", extra={"node": node})
                continue
            top: tuple[tuple[str, float], ...] = ()
            if score > self.section.threshold:
                top = self._top_metrics(grid[:, j])
            out.append(NodeAnomaly(node, score, top))
        self._alert(out, now)
        return out

    def _top_metrics(self, window: np.ndarray) -> tuple[tuple[str, float], ...]:
        assert self.scorer is not None
        segs = self.scorer.explain(window, self.section.threshold, k=min(3, len(self.metric_names)))
        if not segs:
            return ()
        seg = segs[-1]
        return tuple((self.metric_names[m], round(float(s), 4)) for m, s in zip(seg.metrics, seg.shares,
                                                                              strict=True))

    def _alert(self, scored: Sequence[NodeAnomaly], now: float) -> None:
        for a in scored:
            if a.score <= self.section.threshold:
                self._alerted.pop(a.node_id, None)
                continue
            last = self._alerted.get(a.node_id)
            if last is not None and now - last < REALERT_S:
                continue
            self._alerted[a.node_id] = now
            log.warning("node behaves unlike its normal self", extra={
                "site": self.site, "node": a.node_id, "anomaly_score": round(a.score, 3),
                "threshold": self.section.threshold, "top_metrics": [m for m, _ in a.top_metrics],
                "top_shares": [s for _, s in a.top_metrics]})
