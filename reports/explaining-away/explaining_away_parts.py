"""Issue 3, follow-up 36 (a probe): every held-out failure's root-cause score parts, so that ways of explaining
the explained node's drop away can be compared offline (``explaining_away_offline.py``) without training again.

One training run per draw (seed = draw, or draw + the optional second argument; the bench's default flags, as
``explaining_away_variants.py``). Per failure the record holds the draw, seed, group, precursor, the root's kind,
the root's position among the candidates (-1 when it is none), each candidate's kind and
:func:`~infrabrain.models.root_cause_ranking.root_score_parts` (rounded to 1e-5), the explained node's excess logit (its
logit above the snapshot's median node logit, as sibling evidence counts excess) and its rank as deployed.
Writes ``parts-d<first>-<last>[-seed+K].json.gz``:

    ../../.venv/bin/python explaining_away_parts.py 0,1,2,3,4,5,6,7        # ~12 min; 8-15 beside it
    ../../.venv/bin/python explaining_away_parts.py 0,1,2,3,4,5,6,7 1      # training seed draw + 1
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.models.evaluation import failure_events
from infrabrain.models.root_cause_accuracy import explained_failures, rank_of
from infrabrain.models.root_cause_ranking import rank_by_score, root_score_parts
from infrabrain.models.features import KINDS
from infrabrain.models.pipeline import deployed_site_priors, train_predictor
from infrabrain.models.training import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bench  # noqa: E402

PARTS = ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence")


def node_excess(f) -> float:
    """The explained node's logit above the snapshot's median node logit (NaN when it has none)."""
    logits = np.asarray(f.node_logits, dtype=np.float64)
    own = logits[int(f.event.node)]  # the event's node is a node position, as the score table's
    finite = logits[np.isfinite(logits)]
    return float(own - np.median(finite)) if len(finite) and np.isfinite(own) else float("nan")


def record(d: int, seed: int, f, prior) -> dict:
    root = int(f.event.root)
    parts = root_score_parts(f.graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent, causes=f.causes,
                             explain_away=False)
    deployed = rank_by_score(f.graph, f.cand, parts["total"])  # rank_root_causes(..., explain_away=False)
    at = np.flatnonzero(np.asarray(f.cand) == root)
    return {"draw": d, "seed": seed, "group": f.event.group, "precursor": bool(f.event.precursor),
            "root_kind": KINDS[int(f.graph.kind[root])] if root < f.graph.n else None,
            "root_at": int(at[0]) if len(at) else -1,
            "kinds": [KINDS[int(k)] for k in f.graph.kind[np.asarray(f.cand, dtype=np.int64)]],
            **{p: np.round(parts[p], 5).tolist() for p in PARTS},
            "node_excess": round(node_excess(f), 5), "deployed": rank_of(deployed, root)}


def draw_failures(d: int, seed: int) -> Iterator[tuple[Any, Any, Any]]:
    """Train on draw ``d`` with training seed ``seed`` (the bench's default flags) and yield each explained
    held-out failure with its site's deployed prior and the trained predictor."""
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    trained = train_predictor(bench._draw_runs(args, d), bench._pipeline_config(args, seed))
    test = trained.splits.test_sites
    rows = predict_scores(trained.model, test)
    priors = deployed_site_priors(trained, test)
    for f in explained_failures(trained.model, test, rows, failure_events(test), max_events=args.rootcause_events):
        yield f, priors[int(f.event.site)], trained


def main(draws: list[int], seed_offset: int = 0) -> None:
    recs = []
    for d in draws:
        recs += [record(d, d + seed_offset, f, prior) for f, prior, _ in draw_failures(d, d + seed_offset)]
        print(d, len(recs), file=sys.stderr, flush=True)
    write_records("parts", draws, seed_offset, recs)


def write_records(name: str, draws: list[int], seed_offset: int, recs: list[dict]) -> None:
    """``recs`` to ``<name>-d<first>-<last>[-seed+<offset>].json.gz`` in the working directory."""
    suffix = f"-seed+{seed_offset}" if seed_offset else ""
    with gzip.open(f"{name}-d{draws[0]}-{draws[-1]}{suffix}.json.gz", "wt") as fh:
        json.dump(recs, fh)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")], *(int(x) for x in sys.argv[2:3]))
