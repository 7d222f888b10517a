"""Summarise ``explaining_away_variants.py``'s records: per variant, top-1 and top-3 on all failures and on
cascades (thermal and network), per cause group, per root kind, draws whose cascade top-3 reaches 0.8, and the
failures ranked better or worse than deployed. Last line: one JSON object.

    ../../.venv/bin/python explaining_away_summary.py explaining-away-d*.json > explaining-away-summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CASCADES = ("thermal", "network")


def load(paths: list[str]) -> list[dict]:
    return [r for p in paths for recs in json.loads(Path(p).read_text()).values() for r in recs]


def rates(recs: list[dict], v: str) -> dict:
    if not recs:
        return {"n": 0}
    return {"n": len(recs), "top1": float(np.mean([r[v] < 1 for r in recs])),
            "top3": float(np.mean([r[v] < 3 for r in recs]))}


def summary(recs: list[dict], variants: list[str]) -> dict:
    out = {}
    casc = [r for r in recs if r["group"] in CASCADES]
    draws = sorted({r["draw"] for r in recs})
    for v in variants:
        per_draw = {d: rates([r for r in casc if r["draw"] == d], v) for d in draws}
        out[v] = {"all": rates(recs, v), "cascades": rates(casc, v),
                  "by_group": {g: rates([r for r in recs if r["group"] == g], v)
                               for g in sorted({r["group"] for r in recs})},
                  "by_root_kind": {k: rates([r for r in recs if r["root_kind"] == k], v)
                                   for k in sorted({str(r["root_kind"]) for r in recs})},
                  "cascade_top1_per_draw": {d: x.get("top1") for d, x in per_draw.items()},
                  "cascade_top3_per_draw": {d: x.get("top3") for d, x in per_draw.items()},
                  "draws_cascade_top3_at_0.8": sum(x.get("top3", 0) >= 0.8 for x in per_draw.values() if x["n"]),
                  "better": sum(r[v] < r["deployed"] for r in recs), "worse": sum(r[v] > r["deployed"] for r in recs),
                  "top3_lost": sum(r[v] >= 3 > r["deployed"] for r in recs),
                  "top3_gained": sum(r[v] < 3 <= r["deployed"] for r in recs)}
    return out


def report(s: dict) -> None:
    """Each variant's line and its groups and root kinds to stderr, then ``s`` as one JSON line."""
    for v, x in s.items():
        print(f"{v:16s} all {x['all']['top1']:.3f}/{x['all']['top3']:.3f} cascades {x['cascades']['top1']:.3f}/"
              f"{x['cascades']['top3']:.3f} (draws >= 0.8: {x['draws_cascade_top3_at_0.8']}) better {x['better']} "
              f"worse {x['worse']} top-3 gained {x['top3_gained']} lost {x['top3_lost']}", file=sys.stderr)
        for by in ("by_group", "by_root_kind"):
            print("   ", {g: f"{y['n']}: {y['top1']:.2f}/{y['top3']:.2f}" for g, y in x[by].items()}, file=sys.stderr)
    print(json.dumps(s))


if __name__ == "__main__":
    recs = load(sys.argv[1:])
    report(summary(recs, [k for k in recs[0] if k not in ("draw", "seed", "group", "precursor", "root_kind")]))
