"""The rows the operators' XID rule alerts on, as the GNN ranks them (issue 3 follow-up 32).

For each 24 h draw (training seed = the draw, the goals panel's first seed) trains the GNN as the predictor bench
does and, on the held-out sites, compares it with the incumbent rules on memory (HBM) failures:

- how many memory-positive rows the rules' XID alert (XID 48/63/64/79/95 in the window) fires on, and on how
  many negative rows;
- how many negatives the GNN scores above each of those rows, and whether the row is its incident's first one
  (the XID raised within the window's last time bin);
- the negatives scored above the lowest tenth of those rows, by the time to their node's next failure;
- for the memory rows the XID alert does not fire on (the ramp before the XID), the negatives the GNN scores
  above each, split into those the ECC-rate rule fires on (a single-bit ECC ramp, what the rule may confuse with
  memory) and the rest (which the rule ranks with the quiet rows);
- offline blends on memory PR-AUC, the GNN's score plus the rules' score / 9, plus 1 where the XID alert fires,
  and plus 1/9 where the single-bit ECC rate rule fires: how much of the gap to the rules each part makes (not
  models: the goal compares the GNN with the rules).

Writes ``xid-alerted-rows-d<draws>.json`` into the current directory:

    .venv/bin/python reports/xid-max-pool/xid_alerted_rows.py 3,10     # about 5 min
    .venv/bin/python reports/xid-max-pool/xid_alerted_rows.py 12,15    # beside it
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.baselines import RULE_WEIGHTS  # noqa: E402
from infrabrain.models.evaluation import cause_group_array, evaluate_scores  # noqa: E402
from infrabrain.models.pipeline import evaluate_predictor, train_predictor  # noqa: E402

XID_RULE = RULE_WEIGHTS["xid"]  # a rules score of 4 or more means an XID alert in the window
# the rules score is a sum of the weights 4 (XID), 2 (thermal violation), 2 (temperature) and 1 (single-bit ECC
# rate), so it is odd exactly where the ECC-rate rule fires

args = bp.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
draws = [int(x) for x in sys.argv[1].split(",")]
out = {}
for d in draws:
    rep = evaluate_predictor(train_predictor(bp._draw_runs(args, d), bp._pipeline_config(args, d)),
                             rootcause_events=0, bootstrap=0, keep_tables=True)
    g, ev = rep["score_tables"]["gnn"], rep["events"]
    rules = rep["score_tables"]["rules"].set_index(["site", "t", "node"])["score"]
    g = g.assign(rule=rules.reindex(pd.MultiIndex.from_frame(g[["site", "t", "node"]])).fillna(0.0).to_numpy())
    group = cause_group_array(g["cause"].to_numpy())
    memory = g[g["label"].to_numpy() & (group == "memory")]
    alerted = memory[memory["rule"] >= XID_RULE].sort_values(["site", "node", "t"])
    neg = g[~g["label"]]
    ns = np.sort(neg["score"].to_numpy())
    above = len(ns) - np.searchsorted(ns, alerted["score"].to_numpy(), side="right")
    first = ~alerted.duplicated(["site", "node"]).to_numpy()  # an incident's first alerted snapshot
    low = float(np.quantile(alerted["score"], 0.1))
    top = neg[neg["score"] > low]
    to_fail = []
    for s, t, n in zip(top["site"], top["t"], top["node"]):
        f = ev[(ev["site"] == s) & (ev["node"] == n) & (ev["tf"] > t)]["tf"]
        to_fail.append((f.min() - t) / 60.0 if len(f) else np.inf)
    to_fail = np.asarray(to_fail, float)

    ramp = memory[memory["rule"] < XID_RULE]["score"].to_numpy()
    neg_ecc = np.sort(neg.loc[neg["rule"] % 2 == 1, "score"].to_numpy())
    neg_rest = np.sort(neg.loc[neg["rule"] % 2 == 0, "score"].to_numpy())

    def above_each(sorted_neg: np.ndarray) -> np.ndarray:
        return len(sorted_neg) - np.searchsorted(sorted_neg, ramp, side="right")

    def memory_pr_auc(score: np.ndarray) -> float:
        return evaluate_scores(g.assign(score=score), ev, probabilistic=False)["by_cause_group"]["memory"]["pr_auc"]

    out[d] = {
        "memory_rows": len(memory), "xid_alerted_memory_rows": len(alerted),
        "xid_alerted_negative_rows": int((neg["rule"] >= XID_RULE).sum()), "negative_rows": len(neg),
        "negatives_above_alerted_median": float(np.median(above)), "negatives_above_alerted_max": int(above.max()),
        "negatives_above_first_alerted": above[first].tolist(), "negatives_above_later_alerted_max":
            int(above[~first].max()) if (~first).any() else None,
        "negatives_above_lowest_tenth": {"n": len(top), "fail_in_1_2h": int(((to_fail > 60) & (to_fail <= 120)).sum()),
                                         "fail_in_2_6h": int(((to_fail > 120) & (to_fail <= 360)).sum()),
                                         "no_failure_in_6h": int((to_fail > 360).sum())},
        "ramp_rows": len(ramp), "negatives_ecc_rule": len(neg_ecc), "negatives_other": len(neg_rest),
        "ramp_rows_negatives_above_median": {"ecc_rule": float(np.median(above_each(neg_ecc))),
                                             "other": float(np.median(above_each(neg_rest)))},
        "ramp_rows_negatives_above_sum": {"ecc_rule": int(above_each(neg_ecc).sum()),
                                          "other": int(above_each(neg_rest).sum())},
        "memory_pr_auc": {"gnn": memory_pr_auc(g["score"].to_numpy()), "rules": memory_pr_auc(g["rule"].to_numpy()),
                          "gnn_plus_rules_over_9": memory_pr_auc((g["score"] + g["rule"] / 9.0).to_numpy()),
                          "gnn_plus_xid_alert": memory_pr_auc((g["score"] + (g["rule"] >= XID_RULE)).to_numpy()),
                          "gnn_plus_sbe_rule_over_9": memory_pr_auc((g["score"] + (g["rule"] % 2) / 9.0).to_numpy())},
    }
    print(d, json.dumps(out[d]), flush=True)
Path(f"xid-alerted-rows-d{'-'.join(map(str, draws))}.json").write_text(json.dumps(out, indent=1))
