"""Issue 3, follow-up 36 (a probe): ways of explaining the explained node's drop away, ranked offline from the
score parts ``explaining_away_parts.py`` recorded (no training). ``S`` is the largest sibling evidence among a
failure's candidates, ``E`` the explained node's excess logit and ``d`` the node's positive drop:

- ``deployed``: the parts' total, as ``rank_root_causes`` ranked before this follow-up (checked against the
  recorded rank: at most 1 % may differ, near-ties that the parts' rounding to 1e-5 reorders);
- ``node_away``: the node's score lowered by ``min(d, S)`` (stop 43's probe);
- ``node_away_active``: the same with ``S`` over the active candidates (no rack: a rack is never a root);
- ``node_share``: lowered by ``d * min(1, S / E)``: the share of the node's excess its siblings show too, so
  that a node standing far above its siblings keeps most of its drop (``E <= 0``: ``S > 0`` takes it all;
  ``S`` over the active candidates);
- ``node_share_away``: lowered by ``min(d, S) * min(1, S / E)`` (the same ``S``).

Prints one line per variant to stderr and the summary (``explaining_away_summary.summary``) as one JSON object
on the last line:

    ../../.venv/bin/python explaining_away_offline.py parts-d0-7.json.gz parts-d8-15.json.gz > offline-summary.json
    ../../.venv/bin/python explaining_away_offline.py parts-d*-seed+1.json.gz > offline-summary-seed+1.json
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable

from types import SimpleNamespace

import numpy as np
from explaining_away_summary import report, summary

from infrabrain.models.root_cause_accuracy import rank_of
from infrabrain.models.root_cause_ranking import rank_by_score
from infrabrain.models.features import KINDS

PARTS = ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence")


def load(paths: list[str]) -> list[dict]:
    return [r for p in paths for r in json.load(gzip.open(p, "rt"))]


def rank(r: dict, score: np.ndarray) -> int:
    """The root's position as :func:`~infrabrain.models.root_cause_ranking.rank_by_score` orders the candidates (every
    rack after the rest), on the recorded kinds: the candidates are numbered 0, 1, ... in their recorded order."""
    kinds = SimpleNamespace(kind=np.asarray([KINDS.index(k) for k in r["kinds"]]))
    return rank_of(rank_by_score(kinds, np.arange(len(score)), score), r["root_at"])


def lowered(r: dict, amount: Callable[[float, float, float], float], racks: bool = True) -> np.ndarray:
    """The parts' total with the explained node's score lowered by ``amount(d, S, E)``; ``racks`` False takes
    ``S`` over the active candidates only (a rack is never ranked first)."""
    total = np.sum([np.asarray(r[p], dtype=np.float64) for p in PARTS], axis=0)
    node = r["kinds"].index("node")
    d = max(float(r["drop"][node]), 0.0)
    sib = [v for v, k in zip(r["sibling_evidence"], r["kinds"]) if racks or k != "rack"]
    s = float(np.max(sib)) if sib else 0.0
    e = float(r["node_excess"])
    total[node] -= amount(d, s, e)
    return total


def share(s: float, e: float) -> float:
    return 1.0 if not np.isfinite(e) or e <= 0 else min(1.0, s / e)


VARIANTS: dict[str, tuple[Callable[[float, float, float], float], bool]] = {
    "deployed": (lambda d, s, e: 0.0, True),
    "node_away": (lambda d, s, e: min(d, s), True),
    "node_away_active": (lambda d, s, e: min(d, s), False),
    "node_share": (lambda d, s, e: d * share(s, e) if s > 0 else 0.0, False),
    "node_share_away": (lambda d, s, e: min(d, s) * share(s, e), False),
}


if __name__ == "__main__":
    recs = load(sys.argv[1:])
    out, off = [], 0
    for r in recs:
        ranks = {v: rank(r, lowered(r, *f)) for v, f in VARIANTS.items()}
        off += ranks["deployed"] != r["deployed"]  # a near-tie the rounding to 1e-5 reorders
        out.append({k: r[k] for k in ("draw", "seed", "group", "precursor", "root_kind")} | ranks)
    if off > len(recs) // 100:
        raise AssertionError(f"{off} of {len(recs)} failures rank otherwise than recorded: not the deployed ranking")
    print(f"{off} of {len(recs)} failures rank otherwise than recorded (near-ties)", file=sys.stderr)
    report(summary(out, list(VARIANTS)))
