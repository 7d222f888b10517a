"""Which held-out cascades the federated model's root-cause ranking does not put first, and what it puts there.

Reads a finished ``bench/federation.py --out WORK`` run (its registry's final model and settings), rebuilds the
held-out sites as the bench does, and explains each failure as ``coordinator.comparison.heldout_explanations``
ranks it (the site's training-split roots plus the published mix, its own change tails, the cause head). Prints
one JSON line per cascade failure: its group, root kind, the root's rank, the first three candidates with their
score parts, and the head's probabilities.

    ../../.venv/bin/python cascade_misses.py /work/fedruns/head-d1 1 > cascade-misses-d1.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(work: str, data_seed: int, sites: int = 10, heldout: int = 2) -> None:
    from infrabrain.client.predictor_task import build_predictor, feature_set
    from infrabrain.coordinator.comparison import heldout_sets
    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.simulation_run import simulation_config
    from infrabrain.models.evaluation import CASCADE_GROUPS, failure_events
    from infrabrain.models.root_cause_accuracy import explained_failures
    from infrabrain.models.root_cause_ranking import rank_root_causes, root_score_parts
    from infrabrain.models.features import KINDS
    from infrabrain.models.own_change_evidence import fit_own_change_tails
    from infrabrain.models.published_root_prior import published_root_prior
    from infrabrain.models.root_prior import fit_root_prior, merge_root_priors
    from infrabrain.models.training import predict_scores, set_weights

    cfg = simulation_config(sites, 3, None, Path(work) / "probe", site_gpus=512, site_hours=168.0,
                            data_seed=data_seed)
    final = ModelRegistry(Path(work) / "registry").latest()
    fs = feature_set()
    for i, s in enumerate(heldout_sets(cfg, sites, heldout, sites + heldout)):
        model = build_predictor(cfg.site_config(), s.input_scaling)
        set_weights(model, final.arrays)
        model.eval()
        rows = predict_scores(model, s.test)
        graph = s.train.sites[0].graph
        prior = merge_root_priors(fit_root_prior(s.train), published_root_prior(graph))
        tails = fit_own_change_tails(s.train, fs)
        for f in explained_failures(model, s.test, rows, failure_events(s.test), 200, 0, tails, fs):
            if f.event.group not in CASCADE_GROUPS:
                continue
            ranked = rank_root_causes(graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent,
                                      causes=f.causes, own_change=f.own_change)
            parts = root_score_parts(graph, f.cand, f.drops, prior, f.node_logits, silent=f.silent,
                                     causes=f.causes, own_change=f.own_change)
            pos = {int(c): i for i, c in enumerate(f.cand)}
            top = [{"kind": KINDS[int(graph.kind[c])], "id": str(graph.component_ids[c]),
                    **{k: round(float(v[pos[int(c)]]), 2) for k, v in parts.items()}} for c in ranked[:3]]
            root = int(f.event.root)
            print(json.dumps({"heldout_site": i, "tf": int(f.event.tf), "group": f.event.group,
                              "root_kind": KINDS[int(graph.kind[root])], "root": str(graph.component_ids[root]),
                              "rank": ranked.index(root) if root in ranked else None,
                              "precursor": bool(f.event.precursor), "score": round(float(f.score), 3),
                              "causes": {k: round(v, 2) for k, v in f.causes.items()}, "top": top}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
