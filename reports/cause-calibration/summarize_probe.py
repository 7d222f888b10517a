"""Summarise probe_head_calibration.py's per-draw lines: means over the draws and where the fitted temperature
helped. ``../../.venv/bin/python summarize_probe.py probe-d0-7.jsonl probe-d8-15.jsonl > probe-summary.json``"""
import json
import sys

import numpy as np

recs = [json.loads(line) for p in sys.argv[1:] for line in open(p)]
out = {"draws": len(recs), "test_rows": sum(r["test_rows"] for r in recs)}
for k in ("accuracy", "nll_raw", "nll_cal", "ece_raw", "ece_cal"):
    out[k + "_mean"] = float(np.mean([r[k] for r in recs]))
out["nll_better_draws"] = sum(r["nll_cal"] < r["nll_raw"] for r in recs)
out["ece_better_draws"] = sum(r["ece_cal"] < r["ece_raw"] for r in recs)
for k in ("t_val", "t_train", "t_test_oracle"):
    out[k + "_range"] = [float(min(r[k] for r in recs)), float(max(r[k] for r in recs))]
out["t_test_oracle_below_1"] = sum(r["t_test_oracle"] < 1 for r in recs)
for v in ("raw", "cal"):
    n = sum(r[f"named_{v}"]["named"] for r in recs)
    right = sum(r[f"named_{v}"]["named_right"] for r in recs)
    out[f"named_{v}"] = {"named": n, "right": right, "precision": right / n}
print(json.dumps(out, indent=1))
