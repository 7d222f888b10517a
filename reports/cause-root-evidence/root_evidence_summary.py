"""Summarise ``root_evidence_variants.py``'s files (issue 3 follow-up 34): top-1 / top-3 of the root over every
explained failure and over the cascades (thermal + network), per variant; the draws whose cascades reach top-3
0.8; per cause group; and how many failures each variant ranks better or worse than without the evidence.
Prints one JSON object:

    ../../.venv/bin/python root_evidence_summary.py root-evidence-d*.json
"""

import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("without", "adopted", "everywhere", "other_as_mix", "raise_only", "halved", "floor_0.5", "floor_1e-6")
recs = [r for f in sys.argv[1:] for rs in json.loads(Path(f).read_text()).values() for r in rs]


def top(rs: list[dict], k: str, n: int) -> float | None:
    return round(float(np.mean([r[k] < n for r in rs])), 3) if rs else None


casc = [r for r in recs if r["group"] in ("thermal", "network")]
draws = sorted({r["draw"] for r in recs})
out = {"draws": draws, "failures": len(recs), "cascades": len(casc), "variants": {}}
for k in KEYS:
    per_draw = {d: top([r for r in casc if r["draw"] == d], k, 3) for d in draws}
    out["variants"][k] = {
        "top1": top(recs, k, 1), "top3": top(recs, k, 3),
        "cascade_top1": top(casc, k, 1), "cascade_top3": top(casc, k, 3),
        "abrupt_cascade_top3": top([r for r in casc if not r["precursor"]], k, 3),
        "draws_cascade_top3_0.8": sum(v is not None and v >= 0.8 for v in per_draw.values()),
        "cascade_top1_per_draw": {d: top([r for r in casc if r["draw"] == d], k, 1) for d in draws},
        "cascade_top3_per_draw": per_draw,
        "by_group": {g: {"n": sum(r["group"] == g for r in recs),
                         "top1": top([r for r in recs if r["group"] == g], k, 1),
                         "top3": top([r for r in recs if r["group"] == g], k, 3)}
                     for g in sorted({r["group"] for r in recs})},
        "better": sum(r[k] < r["without"] for r in recs), "worse": sum(r[k] > r["without"] for r in recs),
    }
print(json.dumps(out))
