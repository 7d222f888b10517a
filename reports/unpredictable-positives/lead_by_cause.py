"""Where the lead moves when the software-like positives leave training (issue 3 follow-up 31).

For each 24 h draw (training seed = the draw, the goals panel's first seed) trains the GNN twice, on every failure
and without software/GSP positives, and records per held-out hardware-precursor failure the earliest alert
(minutes before the failure) at each model's precision-0.5 threshold. Writes ``lead-d<draw>.json`` into the
current directory; ``lead-by-cause-d0-15.json`` gathers the sixteen:

    .venv/bin/python reports/unpredictable-positives/lead_by_cause.py 0,1,2,3,4,5,6,7    # about 35 min
    .venv/bin/python reports/unpredictable-positives/lead_by_cause.py 8,9,10,11,12,13,14,15  # beside it
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.evaluation import _event_windows, event_scores, recall_at_precision  # noqa: E402
from infrabrain.models.pipeline import evaluate_predictor, train_predictor  # noqa: E402
from infrabrain.simulation.faults import CAUSE_GROUP, CAUSES  # noqa: E402

args = bp.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
for d in [int(x) for x in sys.argv[1].split(",")]:
    runs = bp._draw_runs(args, d)
    leads, med, causes = {}, {}, None
    for arm, every_failure in (("before", True), ("after", False)):
        cfg = bp._pipeline_config(args, d).model_copy(update={"train_on_unpredictable": every_failure})
        rep = evaluate_predictor(train_predictor(runs, cfg), rootcause_events=0, bootstrap=0, keep_tables=True)
        rows, ev = rep["score_tables"]["gnn"], rep["events"]
        e = event_scores(rows, ev)
        hw = e[e["precursor"]].reset_index(drop=True)
        thr = recall_at_precision(rows, hw, 0.5)["threshold"]
        win = _event_windows(rows, hw)
        leads[arm] = win[win["score"] >= thr].groupby("ev")["lead"].max() / 60.0
        med[arm] = float(np.median(leads[arm])) if len(leads[arm]) else None
        causes = hw["cause"].to_numpy()
        print(d, arm, "median lead", med[arm], "caught", len(leads[arm]), "of", len(hw), flush=True)
    out = []
    for i, c in enumerate(CAUSES[int(k)] for k in causes):
        got = {arm: (float(leads[arm][i]) if i in leads[arm].index else None) for arm in leads}
        out.append({"draw": d, "ev": i, "cause": c, "group": CAUSE_GROUP[c], **got})
    json.dump({"draw": d, "median": med, "events": out}, open(f"lead-d{d}.json", "w"))
