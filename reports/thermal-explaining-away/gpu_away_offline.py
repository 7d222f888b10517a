"""Issue 3, follow-up 37 (a probe): explaining a GPU's drop away by its cooling unit's sibling evidence, ranked
offline from the score parts ``../explaining-away/explaining_away_parts.py`` recorded (no training).

Follow-up 36 lowers the failed node's own drop by the largest sibling evidence ``S`` among the active
candidates. In a cooling cascade the root still loses to the failed node's hottest GPU (thermal top-1 0.38).
Stop 43's ``own_away`` lowered every GPU's drop by ``S`` too and cost top-3 on 16-19 memory faults: a leaf's or a
PDU's siblings explain nothing about a GPU. Here only the *cooling unit's* sibling evidence ``C`` may explain a
GPU's drop away (heat is what a cooling unit shares with a GPU), and ``d`` is that GPU's positive drop:

- ``deployed``: follow-up 36's ranking (the node's drop lowered by ``min(d, S)``, ``S`` over active candidates);
- ``gpu_cool``: also every GPU's score lowered by ``min(d, C)``;
- ``gpu_cool_thermal``: the same, only where the cooling unit's cause evidence is positive (the head's thermal
  probability above the mix's share: ``cause_root_evidence``; the records do not hold the group the head names,
  which the deployed rule, ``root_cause_ranking.explained_away(heat=...)``, reads instead);
- ``gpu_any``: every GPU lowered by ``min(d, S)`` (stop 43's ``own_away`` on top of follow-up 36).

    ../../.venv/bin/python gpu_away_offline.py ../explaining-away/parts-d0-7.json.gz ../explaining-away/parts-d8-15.json.gz > gpu-away-offline.json 2> gpu-away-offline.txt
    ../../.venv/bin/python gpu_away_offline.py ../explaining-away/parts-d*-seed+1.json.gz > gpu-away-offline-seed+1.json 2> gpu-away-offline-seed+1.txt
"""

from __future__ import annotations

import sys

import numpy as np

sys.path.insert(0, "../explaining-away")
from explaining_away_offline import PARTS, load, rank  # noqa: E402
from explaining_away_summary import report, summary  # noqa: E402


def score(r: dict, gpus: str) -> np.ndarray:
    total = np.sum([np.asarray(r[p], dtype=np.float64) for p in PARTS], axis=0)
    kinds, drop, sib = r["kinds"], np.asarray(r["drop"], float), np.asarray(r["sibling_evidence"], float)
    active = [i for i, k in enumerate(kinds) if k != "rack"]
    s = float(sib[active].max()) if active else 0.0
    node = kinds.index("node")
    total[node] -= min(max(drop[node], 0.0), s)
    cool = [i for i, k in enumerate(kinds) if k == "cooling"]
    c = float(sib[cool].max()) if cool else 0.0
    thermal = bool(cool) and max(r["cause_evidence"][i] for i in cool) > 0
    amount = {"deployed": 0.0, "gpu_cool": c, "gpu_cool_thermal": c if thermal else 0.0, "gpu_any": s}[gpus]
    for i, k in enumerate(kinds):
        if k == "gpu":
            total[i] -= min(max(drop[i], 0.0), amount)
    return total


VARIANTS = ("deployed", "gpu_cool", "gpu_cool_thermal", "gpu_any")

if __name__ == "__main__":
    out = []
    for r in load(sys.argv[1:]):
        out.append({k: r[k] for k in ("draw", "seed", "group", "precursor", "root_kind")}
                   | {v: rank(r, score(r, v)) for v in VARIANTS})
    report(summary(out, list(VARIANTS)))
