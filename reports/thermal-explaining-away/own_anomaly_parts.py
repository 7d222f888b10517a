"""Issue 3, follow-up 37 (a probe): each held-out failure's root-cause score parts (as
``../explaining-away/explaining_away_parts.py`` records them) plus, per candidate, how unusual its *own*
telemetry is at the explained snapshot: evidence no model has to have learned to read.

A cooling unit's fault reaches its nodes only as heat, which the model reads at the failing GPU: the unit's own
occlusion drop is about 0 (d10), and on a draw whose training sites never saw a cooling failure (d2) nothing
credits the unit at all, although its supply temperature climbs by up to 14 C. Per candidate ``c`` of kind ``k``
and its metrics ``j`` (normalised as the model reads them; 5-minute bins):

- ``chg``: ``max_j |mean of the last two bins - mean of the first two|`` (how far it moved over the hour);
- ``lvl``: ``max_j |mean of the last two bins|`` (how far it stands from the training sites' mean).

Each is recorded as a surprise in nats, ``-log((1 + #{training rows of kind k at least as far}) / (1 + #rows))``,
over every alive component of kind ``k`` in every fifth training snapshot. One training run per draw (seed =
draw, or draw + the optional second argument). Writes ``own-anomaly-d<first>-<last>[-seed+K].json.gz``:

    ../../.venv/bin/python own_anomaly_parts.py 0,1,2,3,4,5,6,7     # ~27 min; 8-15 beside it
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from infrabrain.models.features import KINDS, FeatureSet
from infrabrain.models.own_change_evidence import END_BINS, own_change
from infrabrain.models.snapshots import build_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "explaining-away"))
from explaining_away_parts import draw_failures, record, write_records  # noqa: E402

STATS = ("chg", "lvl")


def own_stats(item: dict, fs: FeatureSet) -> dict[str, np.ndarray]:
    """``chg`` (:func:`~infrabrain.models.own_change_evidence.own_change`) and ``lvl`` of every component of a
    snapshot (NaN where a component has no observed bin)."""
    x, m = item["x"].numpy().astype(np.float64), item["mask"].numpy() > 0
    n_metrics = np.array([len(fs.metrics_of(k)) if k in fs.kinds else 0 for k in KINDS])
    used = np.arange(x.shape[2])[None, :] < n_metrics[item["kind"].numpy()][:, None]  # [N, F] the kind's own slots
    v, ok = x[:, -END_BINS:, :], m[:, -END_BINS:, :]
    last = np.where(ok.any(1), (v * ok).sum(1) / np.maximum(ok.sum(1), 1), np.nan)
    lvl = np.where(used & np.isfinite(last), np.abs(last), -np.inf).max(axis=1)
    return {"chg": own_change(item, fs), "lvl": np.where(np.isfinite(lvl), lvl, np.nan)}


def fit_tails(train, fs: FeatureSet, every: int = 5) -> dict[tuple[int, str], np.ndarray]:
    """Sorted training values of each statistic per kind."""
    vals: dict[tuple[int, str], list] = {}
    for i in range(0, len(train), every):
        si, ti = train.index[i]
        item = build_snapshot(train.sites[si], ti, train.window, si, pool=train.pool)
        st = own_stats(item, fs)
        alive = item["alive"].numpy() > 0
        kind = item["kind"].numpy()
        for s in STATS:
            for k in range(len(KINDS)):
                sel = alive & (kind == k) & np.isfinite(st[s])
                vals.setdefault((k, s), []).append(st[s][sel])
    return {key: np.sort(np.concatenate(v)) for key, v in vals.items()}


def surprise(tail: np.ndarray, v: float) -> float:
    """``-log((1 + m) / (1 + n))``, counting the ``m`` of the ``n`` training values at least ``v`` exactly."""
    if not np.isfinite(v) or len(tail) == 0:
        return 0.0
    at_least = len(tail) - np.searchsorted(tail, v, side="left")
    return float(-np.log((1 + at_least) / (1 + len(tail))))


def main(draws: list[int], seed_offset: int = 0) -> None:
    recs = []
    for d in draws:
        tails = None
        for f, prior, trained in draw_failures(d, d + seed_offset):
            test, fs = trained.splits.test_sites, trained.splits.feature_set
            if tails is None:
                tails = fit_tails(trained.splits.train, fs)
                t_index = {(si, int(test.sites[si].timestamps[ti])): ti for si, ti in test.index}
            si = int(f.event.site)
            item = build_snapshot(test.sites[si], t_index[(si, f.t)], test.window, si, pool=test.pool)
            st = own_stats(item, fs)
            rec = record(d, d + seed_offset, f, prior)
            cand = np.asarray(f.cand, dtype=np.int64)
            for s in STATS:
                rec[s] = [round(surprise(tails.get((int(k), s), np.zeros(0)), float(st[s][c])), 4)
                          for c, k in zip(cand, f.graph.kind[cand])]
            recs.append(rec)
        print(d, len(recs), file=sys.stderr, flush=True)
    write_records("own-anomaly", draws, seed_offset, recs)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")], *(int(x) for x in sys.argv[2:3]))
