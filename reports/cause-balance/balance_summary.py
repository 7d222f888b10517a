"""Issue 3 follow-up 35: the cause head trained with class weights (``--cause-balance``) against the committed panel.

Reads the goals panel (``reports/goals-24h/accuracy-d*.json``, cause balance 0) and the same panel rerun at other
balances (``balance-<B>/accuracy-d*.json``). Checks that every key the head cannot move is the same to the digit
(the head is detached), and prints, per balance, the root-cause keys per draw, the head's accuracy, its recall
and precision per group, and the typed PR-AUC against the rules. Last line: one JSON object.

    ../../.venv/bin/python balance_summary.py 0.5 1
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PANEL = HERE.parent / "goals-24h"
FILES = ("accuracy-d0-3.json", "accuracy-d4-7.json", "accuracy-d8-11.json", "accuracy-d12-15.json")
GROUPS = ("memory", "network", "thermal", "power", "other")
#: Keys the cause head moves; everything else must match the committed panel exactly.
HEAD_KEYS = ("rootcause", "cause_head", "by_cause_vs_rules")
#: Keys that differ between any two runs: timings (``*_s``, ``*_ms``), memory, the flags themselves.
RUN_KEYS = ("peak_rss_gib", "config")


def run_key(key: str) -> bool:
    return key in RUN_KEYS or key.endswith(("_s", "_ms"))
ROOT_KEYS = ("rootcause_top1", "rootcause_top1_cascade", "rootcause_top3", "rootcause_top3_all")


def load(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ (NaN equals NaN), skipping :data:`RUN_KEYS`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in set(a) & set(b) if not run_key(k)
                for p in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in differences(x, y, f"{path}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [path]


def per_draw(panel: dict[str, dict], key: str) -> list[float | None]:
    return [v for f in FILES for v in (panel[f].get(f"{key}_per_draw") or [None] * 4)]


def summary(panel: dict[str, dict], base: dict[str, dict]) -> dict:
    out: dict = {}
    for key in ROOT_KEYS:
        vals, ref = per_draw(panel, key), per_draw(base, key)
        pairs = [(r, v) for r, v in zip(ref, vals) if r is not None and v is not None]
        out[key] = {"mean": float(np.mean([v for _, v in pairs])), "per_draw": vals,
                    "higher": sum(v > r + 1e-12 for r, v in pairs), "lower": sum(v < r - 1e-12 for r, v in pairs)}
    out["rootcause_top3_draws_at_goal"] = sum(v >= 0.8 for v in per_draw(panel, "rootcause_top3") if v is not None)
    for key in ("cause_head_accuracy", "cause_head_balanced_accuracy"):
        vals = per_draw(panel, key)
        out[key] = {"mean": float(np.mean(vals)) if None not in vals else None, "per_draw": vals}
    for m in ("recall", "precision"):  # each file gives the mean over its four draws (where the group occurs)
        out[f"cause_head_{m}"] = {g: _mean([panel[f].get(f"cause_head_{m}_{g}") for f in FILES]) for g in GROUPS}
    behind, typed = [], {g: [] for g in GROUPS}
    for f in FILES:
        for draw in panel[f]["by_cause_vs_rules_per_draw"]:
            behind.append([g for g, v in draw.items() if g in GROUPS and v.get("gnn_typed_pr_auc") is not None
                           and v.get("rules_pr_auc") is not None and v["gnn_typed_pr_auc"] <= v["rules_pr_auc"]])
            for g in GROUPS:
                if draw.get(g, {}).get("gnn_typed_pr_auc") is not None:
                    typed[g].append(draw[g]["gnn_typed_pr_auc"])
    out["typed_behind_rules"] = behind
    out["typed_ahead_on_every_cause"] = sum(not b for b in behind)
    out["typed_pr_auc_mean"] = {g: _mean(v) for g, v in typed.items()}
    return out


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def main(balances: list[str]) -> None:
    base = {f: load(PANEL / f) for f in FILES}
    result = {"0 (committed panel)": summary(base, base)}
    for b in balances:
        panel = {f: load(HERE / f"balance-{b}" / f) for f in FILES}
        moved = sorted({p.split("[")[0] for f in FILES for p in differences(base[f], panel[f])
                        if not p.lstrip("/").startswith(HEAD_KEYS)})
        result[b] = {"keys_the_head_cannot_move_that_differ": moved, **summary(panel, base)}
    for name, s in result.items():
        rc = ", ".join(f"{k[10:]} {s[k]['mean']:.3f} (+{s[k]['higher']}/-{s[k]['lower']})" for k in ROOT_KEYS)
        print(f"balance {name}: {rc}; top-3 goal on {s['rootcause_top3_draws_at_goal']} draws", file=sys.stderr)
        print(f"  head accuracy {_f(s['cause_head_accuracy']['mean'])}, balanced "
              f"{_f(s['cause_head_balanced_accuracy']['mean'])}; recall / precision "
              + "; ".join(f"{g} {_f(s['cause_head_recall'][g])} / {_f(s['cause_head_precision'][g])}" for g in GROUPS),
              file=sys.stderr)
        print("  typed PR-AUC " + ", ".join(f"{g} {_f(v)}" for g, v in s["typed_pr_auc_mean"].items())
              + f"; ahead of the rules on every cause on {s['typed_ahead_on_every_cause']} draws", file=sys.stderr)
    print(json.dumps(result))


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main(sys.argv[1:])
