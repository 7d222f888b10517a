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

import gzip
import json
import sys
from pathlib import Path

import numpy as np

from infrabrain.models.evaluation import failure_events
from infrabrain.models.explain import explained_failures
from infrabrain.models.features import KINDS
from infrabrain.models.pipeline import deployed_site_priors, train_predictor
from infrabrain.models.snapshots import build_snapshot
from infrabrain.models.training import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "explaining-away"))
import predictor as bench  # noqa: E402
from explaining_away_parts import record  # noqa: E402

STATS = ("chg", "lvl")


def own_stats(item: dict, n_metrics: np.ndarray) -> dict[str, np.ndarray]:
    """``chg`` and ``lvl`` of every component of a snapshot (NaN where a component has no observed bin)."""
    x, m = item["x"].numpy().astype(np.float64), item["mask"].numpy() > 0
    f = x.shape[2]
    used = np.arange(f)[None, :] < n_metrics[item["kind"].numpy()][:, None]  # [N, F] the kind's own slots
    def mean2(sl):
        v, ok = x[:, sl, :], m[:, sl, :]
        return np.where(ok.any(1), (v * ok).sum(1) / np.maximum(ok.sum(1), 1), np.nan)
    last, first = mean2(slice(-2, None)), mean2(slice(0, 2))
    out = {}
    for name, v in (("chg", np.abs(last - first)), ("lvl", np.abs(last))):
        v = np.where(used & np.isfinite(v), v, -np.inf).max(axis=1)
        out[name] = np.where(np.isfinite(v), v, np.nan)
    return out


def fit_tails(train, n_metrics: np.ndarray, every: int = 5) -> dict[tuple[int, str], np.ndarray]:
    """Sorted training values of each statistic per kind."""
    vals: dict[tuple[int, str], list] = {}
    for i in range(0, len(train), every):
        si, ti = train.index[i]
        site = train.sites[si]
        item = build_snapshot(site, ti, train.window, si, pool=train.pool)
        st = own_stats(item, n_metrics)
        alive = item["alive"].numpy() > 0
        kind = item["kind"].numpy()
        for s in STATS:
            for k in range(len(KINDS)):
                sel = alive & (kind == k) & np.isfinite(st[s])
                vals.setdefault((k, s), []).append(st[s][sel])
    return {key: np.sort(np.concatenate(v)) for key, v in vals.items()}


def surprise(tail: np.ndarray, v: float) -> float:
    if not np.isfinite(v) or len(tail) == 0:
        return 0.0
    at_least = len(tail) - np.searchsorted(tail, v, side="left")
    return float(-np.log((1 + at_least) / (1 + len(tail))))


def main(draws: list[int], seed_offset: int = 0) -> None:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    recs = []
    for d in draws:
        trained = train_predictor(bench._draw_runs(args, d), bench._pipeline_config(args, d + seed_offset))
        fs = trained.splits.feature_set
        n_metrics = np.array([len(fs.metrics_of(k)) if k in fs.kinds else 0 for k in KINDS])
        tails = fit_tails(trained.splits.train, n_metrics)
        test = trained.splits.test_sites
        rows = predict_scores(trained.model, test)
        priors = deployed_site_priors(trained, test)
        t_index = {(si, int(test.sites[si].timestamps[ti])): ti for si, ti in test.index}
        for f in explained_failures(trained.model, test, rows, failure_events(test), max_events=args.rootcause_events):
            rec = record(d, d + seed_offset, f, priors[int(f.event.site)])
            si = int(f.event.site)
            best = rows[(rows["site"] == si) & (rows["node"] == f.event.node) & (rows["t"] >= f.event.tf - 3600)
                        & (rows["t"] <= f.event.tf - 300)]
            t = int(best.loc[best["score"].idxmax(), "t"])
            item = build_snapshot(test.sites[si], t_index[(si, t)], test.window, si, pool=test.pool)
            st = own_stats(item, n_metrics)
            cand = np.asarray(f.cand, dtype=np.int64)
            kinds = f.graph.kind[cand]
            for s in STATS:
                rec[s] = [round(surprise(tails.get((int(k), s), np.zeros(0)), float(st[s][c])), 4)
                          for c, k in zip(cand, kinds)]
            recs.append(rec)
        print(d, len(recs), file=sys.stderr, flush=True)
    suffix = f"-seed+{seed_offset}" if seed_offset else ""
    with gzip.open(f"own-anomaly-d{draws[0]}-{draws[-1]}{suffix}.json.gz", "wt") as fh:
        json.dump(recs, fh)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")], *(int(x) for x in sys.argv[2:3]))
