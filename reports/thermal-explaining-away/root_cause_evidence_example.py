"""Issue 3, follow-up 37: the sentence and the root-cause evidence of d2's first two thermal failures (training
seed 2, the bench's default flags), as ``predict --json`` gives them (the example in docs/predictor.md):

    ../../.venv/bin/python root_cause_evidence_example.py     # ~2 min
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from infrabrain.models.evaluation import failure_events
from infrabrain.models.explain import explain_node, raw_window
from infrabrain.models.root_cause_accuracy import explained_failures
from infrabrain.models.pipeline import deployed_site_priors, train_predictor
from infrabrain.models.predict import root_cause_evidence
from infrabrain.models.snapshots import build_snapshot
from infrabrain.models.training import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bench  # noqa: E402


def main(draw: int = 2, failures: int = 2) -> None:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    trained = train_predictor(bench._draw_runs(args, draw), bench._pipeline_config(args, draw))
    test = trained.splits.test_sites
    rows = predict_scores(trained.model, test)
    events = failure_events(test)
    priors = deployed_site_priors(trained, test)
    t_index = {(si, int(test.sites[si].timestamps[ti])): ti for si, ti in test.index}
    thermal = events[events["group"] == "thermal"].head(failures)
    for f in explained_failures(trained.model, test, rows, thermal):  # as rootcause_accuracy explains them
        si = int(f.event.site)
        site = test.sites[si]
        ti = t_index[(si, f.t)]
        item = build_snapshot(site, ti, test.window, si, pool=test.pool)
        raw, names = raw_window(site.run, ti, test.window)
        ex = explain_node(trained.model, item, site.graph, trained.splits.feature_set, int(f.event.node), raw, names,
                          site.cadence_s, prior=priors[si], node_logits=f.node_logits, own_tails=trained.own_tails)
        print(ex.sentence)
        print(json.dumps(root_cause_evidence(ex, site.graph), indent=1))


if __name__ == "__main__":
    main()
