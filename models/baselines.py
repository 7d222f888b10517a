"""Baselines on the same snapshots as the GNN: the incumbents' rules, per-node tabular models, Isolation Forest.

- :func:`rule_scores`: what operators alert on today (DCGM health watches and XID rules): an XID 48/63/64/79/95
  on one of the node's GPUs within the window, a thermal-violation counter that moved, a GPU temperature over
  :data:`TEMP_THRESHOLD_C`, and a high single-bit ECC rate (:data:`SBE_PER_HOUR`). The score is the weighted
  count of rules that fire (a few discrete levels), computed from *raw* telemetry and events.
- :func:`window_features`: per node, summary statistics over the window of the node's own metrics and of its
  GPUs' metrics (mean and max over GPUs), *without* the graph (no rack, switch, PDU or cooling inputs). Used by
  :class:`TabularBaseline` (logistic regression, histogram gradient boosting) and :class:`IsolationForestBaseline`
  (unsupervised anomaly score).

All baselines return a table with the same ``site, t, node`` keys as
:func:`infrabrain.models.training.predict_scores`, so evaluation is on identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from infrabrain.logs import get_logger
from infrabrain.models.features import KINDS
from infrabrain.models.snapshots import SiteTensors, SnapshotDataset, _alive_components

log = get_logger("models.baselines")

RULE_XIDS: tuple[int, ...] = (48, 63, 64, 79, 95)
TEMP_THRESHOLD_C = 85.0
SBE_PER_HOUR = 100.0
RULE_WEIGHTS = {"xid": 4.0, "thermal_violation": 2.0, "temperature": 2.0, "sbe_rate": 1.0}
N_STATS = 6  # last, mean, max, min, slope, observed fraction


def _stats(win: np.ndarray) -> np.ndarray:
    """``win [W, n, F]`` (NaN = missing) -> ``[n, F, N_STATS]`` summary statistics (NaN where never observed)."""
    import warnings

    w = win.shape[0]
    k = max(1, w // 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        last = np.nanmean(win[-k:], axis=0)
        mean = np.nanmean(win, axis=0)
        mx = np.nanmax(win, axis=0)
        mn = np.nanmin(win, axis=0)
        slope = last - np.nanmean(win[:k], axis=0)
    obs = np.isfinite(win).mean(axis=0)
    return np.stack([last, mean, mx, mn, slope, obs], axis=-1)


def window_features(site: SiteTensors, t_idx: int, window: int, gpu_node: np.ndarray | None = None) -> np.ndarray:
    """Per-node tabular features ``[n_node, D]`` of the snapshot ending at ``t_idx`` (no graph inputs).

    ``D = S*F_node + 2*S*F_gpu`` (node stats; GPU stats averaged and maxed over the node's GPUs), NaN where a
    metric was never observed in the window.
    """
    import warnings

    g = site.graph
    win = site.values_nan(t_idx + 1 - window, t_idx + 1)
    node_f = _stats(win[:, g.node_global]).reshape(len(g.node_global), -1)
    gpu_idx = g.kind_index.get("gpu")
    if gpu_idx is None or len(gpu_idx) == 0:
        return node_f
    gn = site.graph.gpu_node() if gpu_node is None else gpu_node
    gs = _stats(win[:, gpu_idx])  # [n_gpu, F, S]
    gs = gs.reshape(len(gpu_idx), -1)
    nn = len(g.node_global)
    order = np.argsort(gn, kind="stable")
    counts = np.bincount(gn[gn >= 0], minlength=nn)
    if counts.min() == counts.max() and (gn >= 0).all():  # regular: reshape [n_node, gpn, D]
        grid = gs[order].reshape(nn, counts[0], -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gmean, gmax = np.nanmean(grid, axis=1), np.nanmax(grid, axis=1)
    else:
        gmean = np.full((nn, gs.shape[1]), np.nan)
        gmax = np.full((nn, gs.shape[1]), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for n in range(nn):
                sel = gs[gn == n]
                if len(sel):
                    gmean[n], gmax[n] = np.nanmean(sel, axis=0), np.nanmax(sel, axis=0)
    return np.concatenate([node_f, gmean, gmax], axis=1).astype(np.float32)


def _alive_nodes(site: SiteTensors, t_idx: int) -> np.ndarray:
    """Same alive rule as :func:`~infrabrain.models.snapshots.build_snapshot` (rows that get a label)."""
    obs = site.observed[max(0, t_idx + 1 - 5) : t_idx + 1]
    alive = _alive_components(obs)[site.graph.node_global] > 0
    return site.node_alive[t_idx] & alive


def site_score_rows(si: int, site: SiteTensors, tis: Sequence[int], scores: np.ndarray) -> list[pd.DataFrame]:
    """``site, t, node, score`` frames of snapshots ``tis`` of site ``si`` from per-node ``scores[j]`` (alive nodes
    only, the rows that get a label), the layout every scorer's table shares."""
    out = []
    for j, ti in enumerate(tis):
        alive = _alive_nodes(site, ti)
        out.append(pd.DataFrame({"site": si, "t": int(site.timestamps[ti]), "node": np.flatnonzero(alive),
                                 "score": scores[j][alive]}))
    return out


def feature_table(dataset: SnapshotDataset, progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Tabular features and keys (``site, t, node, label, cause, root``) of every alive node of every snapshot."""
    from tqdm.auto import tqdm

    gn_cache: dict[int, np.ndarray] = {}
    xs, metas = [], []
    for si, ti in tqdm(dataset.index, desc="features", disable=not progress, leave=False):
        site = dataset.sites[si]
        if si not in gn_cache:
            gn_cache[si] = site.graph.gpu_node()
        alive = _alive_nodes(site, ti)
        feats = window_features(site, ti, dataset.window, gn_cache[si])[alive]
        nodes = np.flatnonzero(alive)
        xs.append(feats)
        metas.append(pd.DataFrame({
            "site": si, "t": int(site.timestamps[ti]), "node": nodes, "label": site.y[ti][alive],
            "cause": site.cause[ti][alive], "root": site.root[ti][alive],
        }))
    if not xs:
        return np.zeros((0, 0), np.float32), pd.DataFrame(columns=["site", "t", "node", "label", "cause", "root"])
    return np.concatenate(xs), pd.concat(metas, ignore_index=True)


class TabularBaseline:
    """Per-node model on :func:`window_features`: ``"logistic"`` or ``"gbm"`` (histogram gradient boosting)."""

    def __init__(self, kind: str = "gbm", seed: int = 0, threads: int = 1) -> None:
        if kind not in ("logistic", "gbm"):
            raise ValueError(f"tabular baseline kind must be 'logistic' or 'gbm', got {kind!r}")
        self.kind = kind
        self.threads = threads
        self.seed = seed
        self.model: Any = None
        self.cols = np.zeros(0, np.int64)

    def fit(self, x: np.ndarray, y: np.ndarray) -> TabularBaseline:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if len(np.unique(y)) < 2:
            raise ValueError("tabular baseline needs both failing and healthy nodes in its training data")
        if self.kind == "logistic":
            self.model = make_pipeline(
                SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True), StandardScaler(),
                LogisticRegression(C=0.1, class_weight="balanced", max_iter=500),
            )
        else:
            self.model = HistGradientBoostingClassifier(
                max_iter=200, learning_rate=0.1, max_leaf_nodes=31, class_weight="balanced", random_state=self.seed,
                early_stopping=False,
            )
        with _no_warn():
            spread = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0)
        self.cols = np.flatnonzero(np.isfinite(x).any(axis=0) & (np.nan_to_num(spread) > 0))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):  # OpenMP spinning on shared cores is slower than one thread
            self.model.fit(x[:, self.cols], y.astype(int))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise ValueError("baseline is not fitted")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):
            return self.model.predict_proba(x[:, self.cols])[:, 1]


class IsolationForestBaseline:
    """Unsupervised anomaly score (Isolation Forest on :func:`window_features`); higher = more anomalous."""

    def __init__(self, seed: int = 0, max_samples: int = 4096) -> None:
        self.seed = seed
        self.max_samples = max_samples
        self.model: Any = None
        self.fill: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> IsolationForestBaseline:
        from sklearn.ensemble import IsolationForest

        with _no_warn():
            self.fill = np.nan_to_num(np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)) if len(x) else None
        self.model = IsolationForest(n_estimators=200, max_samples=min(self.max_samples, max(len(x), 2)),
                                     random_state=self.seed).fit(self._fill(x))
        return self

    def _fill(self, x: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(x), x, self.fill if self.fill is not None else 0.0)

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise ValueError("baseline is not fitted")
        return -self.model.score_samples(self._fill(x))


def _find_metric(names: list[str], *needles: str) -> int | None:
    """Index of the first metric containing all ``needles`` (case-insensitive), else None."""
    for i, n in enumerate(names):
        if all(s.lower() in n.lower() for s in needles):
            return i
    return None


#: The GPU-metric rules :func:`gpu_rule_hits` evaluates (the XID rule reads the event log, or the XID gauge).
GPU_METRIC_RULES: tuple[str, ...] = ("temperature", "thermal_violation", "sbe_rate")


def gpu_rule_metrics(gpu_metric_names: Sequence[str]) -> dict[str, int | None]:
    """Per rule of :data:`GPU_METRIC_RULES`, and ``xid`` (the XID gauge a live window's XID rule reads), the index
    of the GPU metric it reads (None where the telemetry lacks it: the rule is skipped)."""
    names = list(gpu_metric_names)
    return {"temperature": _find_metric(names, "GPU_TEMP"),
            "thermal_violation": _find_metric(names, "THERMAL_VIOLATION"),
            "sbe_rate": _find_metric(names, "SBE", "TOTAL") or _find_metric(names, "SBE"),
            "xid": _find_metric(names, "XID")}


def gpu_rule_hits(seg: np.ndarray, columns: dict[str, int | None], cadence_s: float,
                  rules: Sequence[str] = GPU_METRIC_RULES) -> dict[str, np.ndarray]:
    """Which GPUs each of ``rules`` fires on over one window ``seg`` (``[T, n_gpu, F]`` raw GPU telemetry;
    ``columns`` from :func:`gpu_rule_metrics`): a temperature over :data:`TEMP_THRESHOLD_C`, a thermal-violation
    counter that moved, single-bit ECC errors at over :data:`SBE_PER_HOUR`. NaN (a missed scrape) never fires a
    rule; a rule whose metric is missing is left out of the result."""
    cad_h = cadence_s / 3600.0
    out: dict[str, np.ndarray] = {}
    for name in rules:
        idx = columns.get(name)
        if idx is None:
            continue
        col = seg[:, :, idx]
        with np.errstate(invalid="ignore"), _no_warn():
            if name == "temperature":
                hit = np.nanmax(col, axis=0) > TEMP_THRESHOLD_C
            else:
                inc = np.nanmax(col, axis=0) - np.nanmin(col, axis=0)
                hit = inc > 0 if name == "thermal_violation" else inc / max(len(col) * cad_h, cad_h) > SBE_PER_HOUR
        out[name] = np.nan_to_num(hit).astype(bool)
    return out


def rule_scores(run: Any, site: SiteTensors, t_indices: np.ndarray, window: int,
                rules: Sequence[str] = tuple(RULE_WEIGHTS)) -> tuple[np.ndarray, dict[str, int]]:
    """Incumbent rule score ``[len(t_indices), n_node]`` from raw telemetry and events of ``run``.

    Returns the scores and how many (snapshot, node) pairs each rule fired on. A rule whose metric the
    telemetry lacks is skipped (and reported with count -1). ``rules`` (names of :data:`RULE_WEIGHTS`) keeps
    only some of them (e.g. those that watch one cause group: :mod:`~infrabrain.models.rule_fallback`).
    """
    from infrabrain.models.snapshots import _get

    unknown = sorted(set(rules) - set(RULE_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; the rules are {list(RULE_WEIGHTS)}")
    metrics, names = _get(run, "metrics"), _get(run, "metric_names")
    gpu_raw = np.asarray(metrics["gpu"]) if "gpu" in metrics else None
    gn = site.graph.gpu_node()
    nn = len(site.graph.node_global)
    ts = site.timestamps
    out = np.zeros((len(t_indices), nn), np.float32)
    fired = dict.fromkeys(rules, 0)

    def per_node_any(mask_gpu: np.ndarray) -> np.ndarray:  # [k, n_gpu] -> [k, n_node]
        res = np.zeros((mask_gpu.shape[0], nn), bool)
        for j in range(mask_gpu.shape[0]):
            np.logical_or.at(res[j], gn[gn >= 0], mask_gpu[j, gn >= 0])
        return res

    lo = np.maximum(np.asarray(t_indices) + 1 - window, 0)
    hi = np.asarray(t_indices)
    metric_rules = [r for r in GPU_METRIC_RULES if r in rules]
    if gpu_raw is not None and metric_rules:
        columns = gpu_rule_metrics(names.get("gpu", []))
        hits = {r: np.zeros((len(t_indices), gpu_raw.shape[1]), bool) for r in metric_rules if columns[r] is not None}
        for j, (a, b) in enumerate(zip(lo, hi)):
            for name, hit in gpu_rule_hits(gpu_raw[a : b + 1], columns, site.cadence_s, metric_rules).items():
                hits[name][j] = hit
        for name in metric_rules:
            if name not in hits:
                fired[name] = -1
                continue
            node_hit = per_node_any(hits[name])
            out += RULE_WEIGHTS[name] * node_hit
            fired[name] = int(node_hit.sum())
    events = _get(run, "events")
    if "xid" in rules and len(events):
        ev = events[(events["event"] == "xid") & events["xid"].isin(RULE_XIDS)]
        gpu_ids = {cid: i for i, cid in enumerate(site.graph.component_ids[site.graph.kind_index.get("gpu", [])])}
        node_ids = {cid: i for i, cid in enumerate(site.graph.component_ids[site.graph.node_global])}
        hit = np.zeros((len(t_indices), nn), bool)
        for t_ev, cid in zip(ev["t"].to_numpy(), ev["component_id"].to_numpy()):
            n = gn[gpu_ids[cid]] if cid in gpu_ids else node_ids.get(cid, -1)
            if n < 0:
                continue
            # alert visible in snapshots whose window (t_lo, t_end] contains the event
            t_end = ts[hi]
            t_lo = ts[lo]
            hit[(t_ev <= t_end) & (t_ev > t_lo), n] = True
        out += RULE_WEIGHTS["xid"] * hit
        fired["xid"] = int(hit.sum())
    return out, fired


class _no_warn:
    def __enter__(self) -> None:
        import warnings

        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a: object) -> None:
        self._c.__exit__(*a)


def rule_table(dataset: SnapshotDataset, rules: Sequence[str] = tuple(RULE_WEIGHTS)) -> pd.DataFrame:
    """Rule scores (of ``rules``: :func:`rule_scores`) for every alive node of every snapshot of ``dataset`` (from
    each site's raw run); columns ``site, t, node, score``."""
    rows = []
    by_site: dict[int, list[int]] = {}
    for si, ti in dataset.index:
        by_site.setdefault(si, []).append(ti)
    for si, tis in by_site.items():
        site = dataset.sites[si]
        if site.run is None:
            raise ValueError(f"site {site.name!r} has no raw run attached; rules need raw telemetry and events")
        scores, fired = rule_scores(site.run, site, np.asarray(tis), dataset.window, rules)
        log.debug("rules", extra={"site": site.name, **{f"fired_{k}": v for k, v in fired.items()}})
        rows.extend(site_score_rows(si, site, tis, scores))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["site", "t", "node", "score"])


__all__ = [
    "GPU_METRIC_RULES", "KINDS", "RULE_XIDS", "TabularBaseline", "IsolationForestBaseline", "window_features",
    "feature_table", "gpu_rule_hits", "gpu_rule_metrics", "rule_scores", "rule_table",
]
