"""How often the cause head names the right group, by how sure it is (issue 3 follow-up 33): what the sentence's
floor ``cause_naming.MIN_CAUSE_P`` rests on.

For each 24 h draw (training seed = the draw) trains the GNN as the predictor bench does and, on the held-out
sites' failing rows of the groups the head names, counts the rows and the share named right with the head's
top probability in [0, 0.5), [0.5, 0.8) and [0.8, 1]; and, over the top 1 % of rows by risk (what an operator
reads), how many fail, the share of those named right and the share of all with a top probability under 0.5.
Writes ``named-cause-precision-d<first>-<last>.json`` into the current directory:

    cd reports/cause-head
    ../../.venv/bin/python named_cause_precision.py 0,3      # about 3 min
    ../../.venv/bin/python named_cause_precision.py 10,12    # beside it
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS, cause_group_array  # noqa: E402
from infrabrain.models.pipeline import train_predictor  # noqa: E402
from infrabrain.models.training import cause_column, predict_scores  # noqa: E402

BANDS = ((0.0, 0.5), (0.5, 0.8), (0.8, 1.01))
args = bp.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
draws = [int(x) for x in sys.argv[1].split(",")]
out: dict[int, dict] = {}
for d in draws:
    trained = train_predictor(bp._draw_runs(args, d), bp._pipeline_config(args, d))
    rows = predict_scores(trained.model, trained.splits.test_sites)
    p = rows[[cause_column(g) for g in TYPED_CAUSE_GROUPS]].to_numpy()
    named, top_p = p.argmax(axis=1), p.max(axis=1)
    groups = cause_group_array(rows["cause"].to_numpy())
    truth = np.array([TYPED_CAUSE_GROUPS.index(g) if g in TYPED_CAUSE_GROUPS else -1 for g in groups])
    failing = rows["label"].to_numpy() & (truth >= 0)
    rec: dict = {"bands": {}}
    for lo, hi in BANDS:
        sel = failing & (top_p >= lo) & (top_p < hi)
        rec["bands"][f"{lo:g}-{min(hi, 1):g}"] = {"rows": int(sel.sum()),
                                                   "right": float((named[sel] == truth[sel]).mean()) if sel.any() else None}
    top = rows["score"].to_numpy() >= np.quantile(rows["score"], 0.99)
    rec["top_1pct"] = {"rows": int(top.sum()), "failing": int((top & failing).sum()),
                       "failing_named_right": float((named[top & failing] == truth[top & failing]).mean()),
                       "top_p_under_0.5": float((top_p[top] < 0.5).mean())}
    out[d] = rec
    print(d, json.dumps(rec), flush=True)
Path(f"named-cause-precision-d{draws[0]}-{draws[-1]}.json").write_text(json.dumps(out, indent=1))
