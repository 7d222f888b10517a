"""Issue 3, after follow-up 35: why a cascade's root is ranked second (a probe; nothing adopted).

For each held-out failure of the given group (default thermal) of the given draws (one training run per draw, seed =
draw, the bench's default flags, the ranking deployed then: before follow-up 36's explaining away), the root's rank
and the three first candidates with the parts of their score that ``root_cause_ranking.rank_root_causes`` adds up: the
occlusion drop (a GPU's relative to its sibling GPUs'), the root prior, the cause head's evidence and the sibling
evidence. One JSON line per failure:

    ../../.venv/bin/python thermal_cascade_ranks.py 2,4,10,12 > thermal-cascade-ranks.jsonl   # ~2 min
    ../../.venv/bin/python thermal_cascade_ranks.py 0,1,14,15 network > network-cascade-ranks.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from infrabrain.models.evaluation import failure_events
from infrabrain.models.cause_naming import named_cause
from infrabrain.models.root_cause_accuracy import explained_failures, rank_of
from infrabrain.models.root_cause_ranking import candidate_relations, rank_root_causes, root_score_parts
from infrabrain.models.features import KINDS
from infrabrain.models.pipeline import deployed_site_priors, train_predictor
from infrabrain.models.training import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bench  # noqa: E402


def score_parts(f, prior) -> dict[int, dict]:
    """Per candidate of an explained failure, its relation, kind and the parts of its ranking score
    (:func:`~infrabrain.models.root_cause_ranking.root_score_parts`)."""
    graph, cand = f.graph, f.cand
    relations = candidate_relations(graph, cand)
    parts = root_score_parts(graph, cand, f.drops, prior, f.node_logits, silent=f.silent, causes=f.causes,
                             explain_away=False)
    return {int(c): {"relation": relations[i], "kind": KINDS[int(graph.kind[c])],
                     **{k: round(float(v[i]), 3) for k, v in parts.items()}} for i, c in enumerate(cand)}


def main(draws: list[int], group: str = "thermal") -> None:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    for d in draws:
        trained = train_predictor(bench._draw_runs(args, d), bench._pipeline_config(args, d))
        test = trained.splits.test_sites
        rows = predict_scores(trained.model, test)
        priors = deployed_site_priors(trained, test)
        events = failure_events(test)
        for f in explained_failures(trained.model, test, rows, events, max_events=args.rootcause_events):
            if f.event.group != group:
                continue
            prior = priors[int(f.event.site)]
            ranked = rank_root_causes(f.graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent,
                                      causes=f.causes, explain_away=False)
            parts = score_parts(f, prior)
            root = int(f.event.root)
            print(json.dumps({"draw": d, "site": int(f.event.site), "node": int(f.event.node),
                              "precursor": bool(f.event.precursor), "root_rank": rank_of(ranked, root),
                              "named_cause": named_cause(f.causes) if f.causes else None,
                              "root": parts.get(root), "first": [parts[c] for c in ranked[:3]]}), flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")], *sys.argv[2:3])
