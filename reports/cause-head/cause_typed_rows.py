"""The GNN's cause-typed score against the rules, per cause group, and how often its cause head is right (issue 3
follow-up 33).

For each 24 h draw (training seed = the draw, the goals panel's first seed) trains the GNN as the predictor bench
does (with its cause head, the default) and, on the held-out sites, scores each cause group's failures (PR-AUC
over that group's failing rows and every negative row, as the goal's per-cause comparison does) with:

- ``gnn``: the failure score, as the goal compares it;
- ``gnn_typed``: the failure score x the cause head's probability of the group (``p(fail, group)``);
- ``rules``: the rules' score, as the goal compares it;
- ``rules_typed``: only the rules that name the group. For memory, the XID alert (XID 48/63/64 among its XIDs)
  and the single-bit ECC rate; for thermal, the thermal-violation and temperature rules; the rules name no other
  group. Does typing help the rules as it helps the GNN?

Also the cause head's accuracy on the failing rows of the groups it names (its likeliest group against the
truth) and its confusion counts (``evaluation.cause_head_accuracy``). Arguments after the draws go to the bench's
parser. Writes ``cause-typed-rows-d<first>-<last>.json`` into the current directory (the stored ones were run
from this folder):

    cd reports/cause-head
    ../../.venv/bin/python cause_typed_rows.py 0,1,2,3,4,5,6,7          # about 15 min
    ../../.venv/bin/python cause_typed_rows.py 8,9,10,11,12,13,14,15    # beside it
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.baselines import RULE_WEIGHTS  # noqa: E402
from infrabrain.models.evaluation import (TYPED_CAUSE_GROUPS, cause_group_array, cause_head_accuracy,  # noqa: E402
                                          group_pr_auc, typed_pr_auc)
from infrabrain.models.pipeline import evaluate_predictor, train_predictor  # noqa: E402

XID, SBE = RULE_WEIGHTS["xid"], RULE_WEIGHTS["sbe_rate"]  # the XID alert's and the single-bit ECC rate rule's
# the rules' score is a sum of the weights 4 (XID), 2 (thermal violation), 2 (temperature) and 1 (ECC rate), so it
# is >= 4 exactly where the XID alert fires and odd exactly where the ECC-rate rule fires; the rest is the two
# thermal rules' part

args = bp.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24", *sys.argv[2:]])
draws = [int(x) for x in sys.argv[1].split(",")]
out: dict[int, dict] = {}
for d in draws:
    rep = evaluate_predictor(train_predictor(bp._draw_runs(args, d), bp._pipeline_config(args, d)),
                             rootcause_events=0, bootstrap=0, keep_tables=True)
    g = rep["score_tables"]["gnn"]
    rules = rep["score_tables"]["rules"].set_index(["site", "t", "node"])["score"]
    rule = rules.reindex(pd.MultiIndex.from_frame(g[["site", "t", "node"]])).fillna(0.0).to_numpy()
    xid = (rule >= XID) * XID
    sbe = (np.round(rule) % 2) * SBE
    typed_rules = {"memory": xid + sbe, "thermal": rule - xid - sbe}
    groups = cause_group_array(g["cause"].to_numpy())
    by = {}
    for grp in TYPED_CAUSE_GROUPS:
        positives = int((g["label"].to_numpy() & (groups == grp)).sum())
        if positives:
            by[grp] = {"positive_rows": positives, "gnn": group_pr_auc(g, (grp,), groups),
                       "gnn_typed": typed_pr_auc(g, grp, groups),
                       "rules": group_pr_auc(g.assign(score=rule), (grp,), groups),
                       "rules_typed": group_pr_auc(g.assign(score=typed_rules.get(grp, rule)), (grp,), groups)}
    out[d] = {"by_group": by, "cause_head": cause_head_accuracy(g, groups), "pr_auc_gnn": rep["pr_auc_gnn"]}
    print(d, json.dumps(out[d]), flush=True)
Path(f"cause-typed-rows-d{draws[0]}-{draws[-1]}.json").write_text(json.dumps(out, indent=1))
