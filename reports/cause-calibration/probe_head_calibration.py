"""Probe: is the cause head's probability honest on held-out sites? (issue 3, follow-up 37)

For each draw (the goals panel's federations, training seed = draw), train as the bench does, then on the failing
rows whose group the head covers: NLL and top-label ECE of the raw softmax, and of the softmax at a temperature
fitted on the validation site's failing rows; how many rows the sentence would name (p >= 0.5) and how many of
those are right. One JSON object per draw on stdout.

    ../../.venv/bin/python probe_head_calibration.py 0,1,2,3,4,5,6,7 > probe-d0-7.jsonl   # ~10 min; 8-15 beside it
"""
from __future__ import annotations

import json
import sys

import numpy as np

sys.path.insert(0, "../../bench")
import predictor as bench  # noqa: E402

from infrabrain.models.evaluation import cause_group_array  # noqa: E402
from infrabrain.models.pipeline import train_predictor  # noqa: E402
from infrabrain.models.training import CAUSE_COLUMN_PREFIX, predict_scores  # noqa: E402


def failing(rows, names):
    cols = [CAUSE_COLUMN_PREFIX + g for g in names]
    rg = cause_group_array(rows["cause"].to_numpy())
    pos = rows["label"].to_numpy(bool) & np.isin(rg, names)
    y = np.array([names.index(g) for g in rg[pos]], dtype=np.int64)
    return np.log(np.clip(rows.loc[pos, cols].to_numpy(float), 1e-300, None)), y


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logp, y, t):
    p = softmax(logp / t)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def ece(p, y, bins=10):
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    out = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        s = (conf > lo) & (conf <= hi)
        if s.any():
            out += s.mean() * abs(conf[s].mean() - (pred[s] == y[s]).mean())
    return float(out)


def fit_t(logp, y):
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 400))
    return float(grid[int(np.argmin([nll(logp, y, t) for t in grid]))])


def named(p, y, at=0.5):
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    s = conf >= at
    return {"named": int(s.sum()), "named_right": int((pred[s] == y[s]).sum()), "rows": len(y)}


def main() -> None:
    draws = [int(d) for d in sys.argv[1].split(",")]
    args = bench.build_parser().parse_args(["--no-progress"])
    for d in draws:
        runs = bench._draw_runs(args, d)
        tr = train_predictor(runs, bench._pipeline_config(args, d))
        names = list(tr.model.config.cause_groups)
        vz, vy = failing(predict_scores(tr.model, tr.splits.val), names)
        tz, ty = failing(predict_scores(tr.model, tr.splits.test_sites), names)
        trz, try_ = failing(predict_scores(tr.model, tr.splits.train), names)
        t_val = fit_t(vz, vy) if len(vy) else 1.0
        rec = {"draw": d, "groups": names, "val_rows": len(vy), "test_rows": len(ty), "t_val": t_val,
               "t_train": fit_t(trz, try_), "t_test_oracle": fit_t(tz, ty),
               "accuracy": float((tz.argmax(1) == ty).mean()),
               "nll_raw": nll(tz, ty, 1.0), "nll_cal": nll(tz, ty, t_val),
               "ece_raw": ece(softmax(tz), ty), "ece_cal": ece(softmax(tz / t_val), ty),
               "val_nll_raw": nll(vz, vy, 1.0), "val_ece_raw": ece(softmax(vz), vy) if len(vy) else None,
               "named_raw": named(softmax(tz), ty), "named_cal": named(softmax(tz / t_val), ty)}
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
