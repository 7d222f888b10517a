"""Issue 3, after follow-up 35 (a probe; nothing adopted): does a node's own precursor stop counting against an
upstream component whose other nodes are at risk too?

In a leaf switch's cascade every node under it shows InfiniBand errors, so occluding the explained node's own
window drops its logit by 2-8 and the node outranks its leaf, often by under 2 logits, although the leaf's
sibling evidence says the nodes are at risk together (``reports/thermal-cascade-ranks``). The variants rank the
same drops with the node's, or the node's and its GPUs', positive drop lowered by the largest sibling evidence
of the candidates above them (explaining away), at most to 0:

- ``deployed``: as ``predict`` ranked before follow-up 36 (checked to equal ``root_cause_ranking.rank_root_causes`` with
  ``explain_away=False``);
- ``node_away``: the node's own drop explained away;
- ``own_away``: the node's and its GPUs' (relative) drops explained away.

One training run per draw (seed = draw, or draw + the optional second argument; the bench's default flags);
every held-out failure the explanation covers. Writes ``explaining-away-d<first>-<last>[-seed+K].json``
(per failure: draw, seed, group, precursor, the root's kind and each variant's rank of it):

    ../../.venv/bin/python explaining_away_variants.py 0,1,2,3,4,5,6,7        # ~12 min; 8-15 beside it
    ../../.venv/bin/python explaining_away_variants.py 0,1,2,3,4,5,6,7 1      # training seed draw + 1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from infrabrain.models.evaluation import failure_events
from infrabrain.models.root_cause_accuracy import explained_failures, rank_of
from infrabrain.models.root_cause_ranking import rank_by_score, rank_root_causes, root_score_parts
from infrabrain.models.features import KINDS
from infrabrain.models.pipeline import deployed_site_priors, train_predictor
from infrabrain.models.training import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bench  # noqa: E402

VARIANTS = ("deployed", "node_away", "own_away")
NODE, GPU = KINDS.index("node"), KINDS.index("gpu")


def ranked(f, prior, variant: str) -> list[int]:
    """``rank_root_causes``'s order of ``f``'s candidates, with the variant's explaining away: the own
    components' positive drop lowered by the largest sibling evidence, at most to 0."""
    parts = root_score_parts(f.graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent, causes=f.causes,
                             explain_away=False)
    own = {NODE} if variant == "node_away" else {NODE, GPU} if variant == "own_away" else set()
    away = float(parts["sibling_evidence"].max()) if len(f.cand) else 0.0
    kind = f.graph.kind[np.asarray(f.cand, dtype=np.int64)]
    lowered = np.isin(kind, list(own)) & (parts["drop"] > 0)
    score = parts["total"] - np.where(lowered, np.minimum(parts["drop"], away), 0.0)
    return rank_by_score(f.graph, f.cand, score)


def main(draws: list[int], seed_offset: int = 0) -> None:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    out: dict[int, list] = {}
    for d in draws:
        trained = train_predictor(bench._draw_runs(args, d), bench._pipeline_config(args, d + seed_offset))
        test = trained.splits.test_sites
        rows = predict_scores(trained.model, test)
        priors = deployed_site_priors(trained, test)
        recs = []
        for f in explained_failures(trained.model, test, rows, failure_events(test), max_events=args.rootcause_events):
            prior, root = priors[int(f.event.site)], int(f.event.root)
            orders = {v: ranked(f, prior, v) for v in VARIANTS}
            deployed = rank_root_causes(f.graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent,
                                        causes=f.causes, explain_away=False)
            if orders["deployed"] != deployed:
                raise AssertionError(f"draw {d}: the probe's ranking differs from rank_root_causes")
            recs.append({"draw": d, "seed": d + seed_offset, "group": f.event.group,
                         "precursor": bool(f.event.precursor),
                         "root_kind": KINDS[int(f.graph.kind[root])] if root < f.graph.n else None,
                         **{v: rank_of(o, root) for v, o in orders.items()}})
        out[d] = recs
        casc = [r for r in recs if r["group"] in ("thermal", "network")]
        print(d, {v: [round(float(np.mean([r[v] < k for r in rs])), 2) for rs in (casc, recs) for k in (1, 3)]
                  for v in VARIANTS}, file=sys.stderr, flush=True)  # cascades top-1, top-3; all top-1, top-3
    suffix = f"-seed+{seed_offset}" if seed_offset else ""
    Path(f"explaining-away-d{draws[0]}-{draws[-1]}{suffix}.json").write_text(json.dumps(out, indent=0))


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")], *(int(x) for x in sys.argv[2:3]))
