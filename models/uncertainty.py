"""How sure the held-out headline numbers are: a paired cluster bootstrap over the held-out racks.

A held-out draw of three small sites holds a few dozen failures, and one event more or less moves the GNN's
ratio to the best non-graph model by tenths. A point ratio cannot say whether 1.09 means "ahead" or "level", so
this module resamples the held-out *racks* with replacement, each with all its nodes' rows (a node's rows are
strongly correlated in time, and a failing leaf switch, PDU or cooling unit takes down nodes of the same racks
together), recomputes every model's PR-AUC on the same resample (paired: the models are compared on the same
rows, which cancels most of the draw's luck they share), and reports the ratio's percentile interval and the
share of resamples at or above a goal. The event recall at precision 0.5 and the median lead are resampled
with it (each failure goes with its node's rack).

The statistic is the one the bench reports: over one or more training seeds, the mean of each seed's GNN
PR-AUC over its *best* non-graph model's, the best re-chosen on every resample (choosing it once, on the full
sample, would flatter the GNN). A cooling unit that cools several racks still ties them, and three sites give
only about twenty racks, so the interval is if anything a little narrow. It says nothing about the variation
between simulated federations (which failures land in the training sites), which is what ``--data-seeds``
measures; the interval of a geometric mean over independent draws combines their samples
(:func:`combine_draws`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from infrabrain.models.evaluation import LEAD_GOAL_MIN, RATIO_GOAL, RECALL_GOAL, _event_windows, event_scores

DEFAULT_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.9
#: The issue's goal for each of :func:`bootstrap_draw`'s sample keys.
GOALS = {"pr_auc_ratio": RATIO_GOAL, "event_recall": RECALL_GOAL, "median_lead_min": LEAD_GOAL_MIN}
_KEYS = ["site", "t", "node"]


def _cumulative_by_cluster(codes: np.ndarray, positions: np.ndarray, k: int, at: np.ndarray) -> np.ndarray:
    """``[k, len(at)]``: how many of the rows at ``positions`` (score order), of each cluster (``codes``), lie at
    or before each position of ``at``."""
    n = int(max(positions.max(initial=-1), at.max(initial=-1))) + 2
    key = np.sort(codes.astype(np.int64) * n + positions)
    base = np.arange(k, dtype=np.int64) * n
    upto = np.searchsorted(key, base[:, None] + at[None, :], side="right")
    return (upto - np.searchsorted(key, base, side="left")[:, None]).astype(float)


class WeightedAP:
    """Average precision (sklearn's ``average_precision_score`` definition: ties form one threshold) of fixed
    labels and scores when each row counts as often as its cluster is drawn, for many draws at once.

    Sorting and the per-cluster running counts at each threshold that adds a positive are done once, so a
    draw costs two small matrix products (clusters x thresholds), not a pass over the rows."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray, codes: np.ndarray, k: int) -> None:
        labels = np.asarray(labels, bool)
        scores = np.asarray(scores, float)
        codes = np.asarray(codes, np.int64)
        if labels.shape != scores.shape or labels.shape != codes.shape or labels.ndim != 1:
            raise ValueError(f"labels {labels.shape}, scores {scores.shape} and cluster codes {codes.shape} must be "
                             "1-D of the same length")
        if not np.isfinite(scores).all():
            raise ValueError(f"scores hold {int((~np.isfinite(scores)).sum())} non-finite values")
        if len(codes) and not (0 <= codes.min() and codes.max() < k):
            raise ValueError(f"cluster codes must lie in [0, {k})")
        order = np.argsort(-scores, kind="stable")
        s, pos, c = scores[order], labels[order], codes[order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last row of each run of equal scores: a threshold
        starts = np.r_[0, ends[:-1] + 1]
        ends = ends[np.add.reduceat(pos, starts) > 0] if len(pos) else ends  # only these move the recall
        rows = np.arange(len(pos))
        self.total = _cumulative_by_cluster(c, rows, k, ends)  # [k, T]
        self.tp = _cumulative_by_cluster(c[pos], rows[pos], k, ends)
        self.positives = np.bincount(c[pos], minlength=k).astype(float)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """``counts`` ``[B, k]`` (how often each cluster is drawn) -> the ``B`` average precisions (NaN where a
        draw has no positive)."""
        cnt = np.atleast_2d(np.asarray(counts, float))
        tp, total, n_pos = cnt @ self.tp, cnt @ self.total, cnt @ self.positives
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(total > 0, tp / total, 0.0)
            recall = tp / n_pos[:, None]
        ap = np.sum(np.diff(recall, axis=1, prepend=0.0) * precision, axis=1)
        return np.where(n_pos > 0, ap, np.nan)


def draw_counts(k: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, k]``: how often each of ``k`` clusters is drawn when ``k`` are drawn with replacement."""
    draws = rng.integers(0, k, size=(n_boot, k))
    return np.stack([np.bincount(d, minlength=k) for d in draws]).astype(float)


class EventRecall:
    """Event recall at precision >= ``min_precision`` and the median lead at that threshold, with the
    definitions of :func:`~infrabrain.models.evaluation.recall_at_precision` and
    :func:`~infrabrain.models.evaluation.lead_times` (precision over every row, recall over ``events``), of
    fixed rows and events when each row and event counts as often as its cluster is drawn, for many draws.

    Where no threshold reaches the precision on a resample, recall is 0 and the lead NaN (the point evaluation
    then falls back to the threshold of all events for the lead; a resample does not)."""

    def __init__(self, rows: pd.DataFrame, events: pd.DataFrame, codes: np.ndarray, k: int,
                 min_precision: float = 0.5) -> None:
        self.min_precision = float(min_precision)
        scores = rows["score"].to_numpy(float)
        codes = np.asarray(codes, np.int64)
        order = np.argsort(-scores, kind="stable")
        pos, c = rows["label"].to_numpy(bool)[order], codes[order]
        self.events = ev = event_scores(rows, events)
        mx = ev["max_score"].to_numpy(float)
        self.cand = np.unique(mx)[::-1]  # descending thresholds, as recall_at_precision
        at = np.searchsorted(-scores[order], -self.cand, side="right") - 1  # last alert row per threshold
        r = np.arange(len(pos))
        self.total = _cumulative_by_cluster(c, r, k, at)  # [k, C]
        self.tp = _cumulative_by_cluster(c[pos], r[pos], k, at)
        node_code = pd.DataFrame({"site": rows["site"].to_numpy(), "node": rows["node"].to_numpy(), "code": codes})
        self.event_code = ev[["site", "node"]].merge(node_code.drop_duplicates(["site", "node"]),
                                                     on=["site", "node"], how="left")["code"].to_numpy(np.int64)
        self.hit = (mx[:, None] >= self.cand[None, :]).astype(float)  # [E, C]
        self.lead = np.full(self.hit.shape, np.nan)  # [E, C]: lead (min) of the earliest alert, if caught
        win = _event_windows(rows, ev)
        for ci, thr in enumerate(self.cand):
            m = win[win["score"] >= thr].groupby("ev")["lead"].max()
            self.lead[m.index.to_numpy(), ci] = m.to_numpy() / 60.0

    def __call__(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``counts`` ``[B, k]`` (how often each cluster is drawn) -> recall ``[B]`` and median lead in minutes
        ``[B]`` (NaN where a draw has no event)."""
        cnt = np.atleast_2d(np.asarray(counts, float))
        b = len(cnt)
        if len(self.cand) == 0:
            return np.full(b, np.nan), np.full(b, np.nan)
        tp, total = cnt @ self.tp, cnt @ self.total
        precision = np.divide(tp, total, out=np.zeros_like(tp), where=total > 0)
        we = cnt[:, self.event_code]
        n_ev = we.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = (we @ self.hit) / n_ev[:, None]
        ok = precision >= self.min_precision
        best = np.argmax(np.where(ok, recall, -1.0), axis=1)
        found = ok.any(axis=1)
        rec = np.where(found, recall[np.arange(b), best], 0.0)
        lead = np.full(b, np.nan)
        for i in np.flatnonzero(found):
            li = self.lead[:, best[i]]
            caught = np.isfinite(li) & (we[i] > 0)
            if caught.any():
                lead[i] = float(np.median(np.repeat(li[caught], we[i, caught].astype(int))))
        return np.where(n_ev > 0, rec, np.nan), lead


def align_tables(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per ``site, t, node`` with ``label`` and one score column per table name. Raises, naming the table,
    if the tables do not hold the same rows with the same labels."""
    if not tables:
        raise ValueError("no score tables to align")
    names = list(tables)
    first = tables[names[0]]
    out = first[[*_KEYS, "label"]].assign(label=lambda d: d["label"].astype(bool))
    for name in names:
        t = tables[name]
        if len(t) != len(first):
            raise ValueError(f"score table {name!r} has {len(t)} rows, {names[0]!r} {len(first)}")
        cols = t[[*_KEYS, "label", "score"]].rename(columns={"score": name, "label": "_label"})
        out = out.merge(cols, on=_KEYS, how="inner")
        if len(out) != len(first):
            raise ValueError(f"score table {name!r} does not hold the same (site, t, node) rows as {names[0]!r}")
        if not (out["_label"].astype(bool) == out["label"]).all():
            raise ValueError(f"score table {name!r} has other labels than {names[0]!r}")
        out = out.drop(columns="_label")
    return out


def _cluster_codes(keys: pd.DataFrame, clusters: pd.DataFrame | None) -> tuple[np.ndarray, int]:
    """Per ``site, node`` row of ``keys``: the code of its cluster (``clusters``' ``cluster``; default: the node
    itself), and the number of clusters among ``keys``."""
    if clusters is None:
        unit = (keys["site"].astype(str) + "/" + keys["node"].astype(str)).to_numpy()
    else:
        missing = {"site", "node", "cluster"} - set(clusters.columns)
        if missing:
            raise ValueError(f"clusters table lacks column(s) {sorted(missing)}")
        if clusters.duplicated(["site", "node"]).any():
            raise ValueError("clusters table names a (site, node) more than once")
        joined = keys[["site", "node"]].merge(clusters[["site", "node", "cluster"]], on=["site", "node"], how="left")
        if joined["cluster"].isna().any():
            lost = joined.loc[joined["cluster"].isna(), ["site", "node"]].drop_duplicates()
            raise ValueError(f"clusters table has no cluster for {len(lost)} scored (site, node), e.g. "
                             f"{tuple(lost.iloc[0])}")
        unit = joined["cluster"].astype(str).to_numpy()
    uniques, codes = np.unique(unit, return_inverse=True)
    return codes, len(uniques)


def bootstrap_draw(runs: Sequence[tuple[pd.DataFrame, Mapping[str, pd.DataFrame]]],
                   clusters: pd.DataFrame | None = None, events: pd.DataFrame | None = None,
                   n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, min_precision: float = 0.5,
                   chunk: int = 100) -> dict[str, np.ndarray]:
    """Bootstrap samples of a draw's headline numbers, each the mean over ``runs`` (training seeds) as the bench
    reports them: ``pr_auc_ratio`` (GNN PR-AUC / best non-graph PR-AUC) and, with ``events`` (the failures to
    recall, e.g. those with a hardware precursor), ``event_recall`` at precision >= ``min_precision`` and
    ``median_lead_min`` at that threshold (mean over the runs that have one).

    Each run is a GNN score table and its non-graph models' tables by name; every table has ``site, t, node,
    label, score`` over the same rows. The clusters (``clusters``: ``site, node, cluster``, e.g.
    :func:`infrabrain.models.evaluation.node_racks`; default: each node its own) are resampled with replacement
    ``n_boot`` times, each with all its rows and events, and every table of every run sees the same resample.
    Resamples without a positive row (or event) give NaN."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not runs:
        raise ValueError("need at least one (GNN table, non-graph tables) run")
    tables: dict[str, pd.DataFrame] = {}
    for i, (gnn, others) in enumerate(runs):
        if not others:
            raise ValueError(f"run {i} has no non-graph score table")
        tables[f"gnn/{i}"] = gnn
        tables.update({f"{name}/{i}": t for name, t in others.items()})
    rows = align_tables(tables)
    labels = rows["label"].to_numpy(bool)
    row_code, k = _cluster_codes(rows, clusters)
    ap = {name: WeightedAP(labels, rows[name].to_numpy(float), row_code, k) for name in tables}
    recalls = [EventRecall(rows.assign(score=rows[f"gnn/{i}"]), events, row_code, k, min_precision)
               for i in range(len(runs))] if events is not None else []
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"pr_auc_ratio": [], "event_recall": [], "median_lead_min": []}
    for lo in range(0, n_boot, chunk):
        counts = draw_counts(k, min(chunk, n_boot - lo), rng)
        ratios = []
        for i, (_, others) in enumerate(runs):
            a = ap[f"gnn/{i}"](counts)
            b = np.max([ap[f"{name}/{i}"](counts) for name in others], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios.append(np.where(b > 0, a / b, np.nan))
        out["pr_auc_ratio"].append(np.mean(ratios, axis=0))
        if recalls:
            got = [er(counts) for er in recalls]
            with warnings.catch_warnings():  # a resample where no run has a lead: NaN, as the bench's mean
                warnings.simplefilter("ignore", RuntimeWarning)
                out["event_recall"].append(np.nanmean([g[0] for g in got], axis=0))
                out["median_lead_min"].append(np.nanmean([g[1] for g in got], axis=0))
    return {key: np.concatenate(v) for key, v in out.items() if v}


def interval(samples: np.ndarray, goal: float | None = None, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Percentile interval of bootstrap ``samples`` at ``level`` (NaN samples left out) and, with ``goal``, the
    share of samples at or above it (``p_ge_goal``)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return {"low": None, "high": None, "p_ge_goal": None, "level": level, "n_boot": 0}
    q = (1 - level) / 2
    return {"low": float(np.quantile(s, q)), "high": float(np.quantile(s, 1 - q)),
            "p_ge_goal": float(np.mean(s >= goal)) if goal is not None else None, "level": level,
            "n_boot": int(len(s))}


def ratio_interval(samples: np.ndarray, goal: float | None = None, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """:func:`interval` of ratio samples, plus the share below 1 (``p_below_1``: how often the GNN trails)."""
    out = interval(samples, goal, level)
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    out["p_below_1"] = float(np.mean(s < 1.0)) if len(s) else None
    return out


def combine_draws(per_draw: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Bootstrap samples of the mean over independent draws (federations), from each draw's
    :func:`bootstrap_draw` samples: the b-th samples of the draws are combined, geometrically for
    ``pr_auc_ratio`` (NaN where any draw's is: one draw's 10x cannot hide another's 0.5x), arithmetically for the
    others (a draw's NaN left out, as the bench's mean over draws leaves out missing values). Keys that not every
    draw has are dropped."""
    if not per_draw:
        raise ValueError("need the samples of at least one draw")
    out: dict[str, np.ndarray] = {}
    for key in [k for k in per_draw[0] if all(k in d for d in per_draw)]:
        n = min(len(d[key]) for d in per_draw)
        stacked = np.stack([np.asarray(d[key][:n], float) for d in per_draw])
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            out[key] = (np.exp(np.mean(np.log(stacked), axis=0)) if key == "pr_auc_ratio"
                        else np.nanmean(stacked, axis=0))
    return out


def goal_intervals(samples: Mapping[str, np.ndarray], level: float = DEFAULT_LEVEL) -> dict[str, dict[str, Any]]:
    """The interval of each of :func:`bootstrap_draw`'s (or :func:`combine_draws`') sample keys against its issue
    goal: :func:`ratio_interval` for ``pr_auc_ratio``, :func:`interval` for ``event_recall`` and
    ``median_lead_min``."""
    return {key: (ratio_interval if key == "pr_auc_ratio" else interval)(s, goal=GOALS[key], level=level)
            for key, s in samples.items()}
