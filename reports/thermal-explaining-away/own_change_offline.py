"""Issue 3, follow-up 37 (a probe): the ranking with each candidate's own change added, offline, from the records
``own_anomaly_parts.py`` wrote (follow-up 36's score parts plus each candidate's ``chg`` and ``lvl`` surprise).

A candidate of the listed kinds gains ``max(0, surprise - tau)``: ``cool_chg_<tau>`` reads the cooling units'
``chg``, ``cool_both_<tau>`` the larger of their ``chg`` and ``lvl``, ``up_chg_<tau>`` every switch's, PDU's and
cooling unit's ``chg``; ``gpu_cool_thermal`` is ``gpu_away_offline.py``'s, and ``cool_chg_4+gct`` both;
``cool_chg_4+gct+moved`` also explains the GPUs' whole drops away where the head leans thermal and a cooling
unit's ``chg`` surprise passes 4 (the adopted ranking). Prints one line per variant to stderr and the summary
(``explaining_away_summary.summary``) as one JSON object:

    ../../.venv/bin/python own_change_offline.py own-anomaly-d0-7.json.gz own-anomaly-d8-15.json.gz > own-change-offline.json 2> own-change-offline.txt
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable

import numpy as np

sys.path.insert(0, "../explaining-away")
from explaining_away_offline import rank  # noqa: E402
from explaining_away_summary import report, summary  # noqa: E402
from gpu_away_offline import score as base_score  # noqa: E402


def with_own(r: dict, kinds: set[str], tau: float, stats: tuple[str, ...], gpus: str = "deployed") -> np.ndarray:
    total = base_score(r, gpus)
    for i, k in enumerate(r["kinds"]):
        if k in kinds:
            total[i] += max(0.0, max(r[s][i] for s in stats) - tau)
    return total


UPSTREAM = {"cooling", "leaf", "spine", "pdu"}
VARIANTS: dict[str, Callable[[dict], np.ndarray]] = {"deployed": lambda r: base_score(r, "deployed")}
for t in (3.0, 4.0, 5.0):
    VARIANTS[f"cool_chg_{t:g}"] = lambda r, t=t: with_own(r, {"cooling"}, t, ("chg",))
    VARIANTS[f"cool_both_{t:g}"] = lambda r, t=t: with_own(r, {"cooling"}, t, ("chg", "lvl"))
    VARIANTS[f"up_chg_{t:g}"] = lambda r, t=t: with_own(r, UPSTREAM, t, ("chg",))
VARIANTS["gpu_cool_thermal"] = lambda r: base_score(r, "gpu_cool_thermal")
VARIANTS["cool_chg_4+gct"] = lambda r: with_own(r, {"cooling"}, 4.0, ("chg",), "gpu_cool_thermal")


def unit_moved(r: dict) -> np.ndarray:
    """``cool_chg_4+gct``, with every GPU's positive drop taken away where the head leans thermal (the cooling
    unit's cause evidence is positive) and a cooling unit's move passes the threshold."""
    cool = [i for i, k in enumerate(r["kinds"]) if k == "cooling"]
    if not cool or max(r["cause_evidence"][i] for i in cool) <= 0 or max(r["chg"][i] for i in cool) <= 4.0:
        return VARIANTS["cool_chg_4+gct"](r)
    total = with_own(r, {"cooling"}, 4.0, ("chg",))
    gpu = np.array([k == "gpu" for k in r["kinds"]])
    return total - np.where(gpu, np.maximum(np.asarray(r["drop"], dtype=np.float64), 0.0), 0.0)


VARIANTS["cool_chg_4+gct+moved"] = unit_moved

if __name__ == "__main__":
    recs = [x for p in sys.argv[1:] for x in json.load(gzip.open(p, "rt"))]
    out = [{k: r[k] for k in ("draw", "seed", "group", "precursor", "root_kind")}
           | {v: rank(r, f(r)) for v, f in VARIANTS.items()} for r in recs]
    report(summary(out, list(VARIANTS)))
