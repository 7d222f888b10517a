"""Issue 3 follow-up 35, a probe: how well do classifiers on the tabular baselines' window features name a
failure's cause group, beside the GNN's cause head?

Per draw (seed = draw, the bench's default flags): the training sites' failing rows of the head's groups fit a
multinomial logistic regression and a gradient-boosting classifier on ``baselines.feature_table``'s features;
the held-out sites' failing rows score them (accuracy, the mean of the groups' recalls, each group's recall).
One JSON line per draw:

    ../../.venv/bin/python cause_from_window_features.py 0,1,2,3,4,5,6,7 > cause-from-window-features-d0-7.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from infrabrain.models.baselines import feature_table
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS
from infrabrain.models.gnn import cause_group_of
from infrabrain.models.pipeline import pipeline_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bench  # noqa: E402

GROUP_OF = np.array(list(cause_group_of().values()))


def failing_rows(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Window features and cause groups of the dataset's failing rows of a group the head names."""
    x, meta = feature_table(dataset)
    cause = meta["cause"].to_numpy()
    group = np.where(cause >= 0, GROUP_OF[cause.clip(0)], "")
    keep = meta["label"].to_numpy(bool) & np.isin(group, TYPED_CAUSE_GROUPS)
    return np.nan_to_num(x[keep]), group[keep]


def classifiers() -> dict:
    return {"logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)),
            "gbm": HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)}


def draw_row(draw: int) -> dict:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--seed", str(draw)])
    splits = pipeline_splits(bench._draw_runs(args, draw), bench._pipeline_config(args, draw))
    xtr, gtr = failing_rows(splits.train)
    xte, gte = failing_rows(splits.test_sites)
    row = {"draw": draw, "train": {g: int((gtr == g).sum()) for g in TYPED_CAUSE_GROUPS}, "test_n": len(gte)}
    for name, clf in classifiers().items():
        pred = clf.fit(xtr, gtr).predict(xte)
        recall = {g: float((pred[gte == g] == g).mean()) for g in TYPED_CAUSE_GROUPS if (gte == g).any()}
        row[name] = {"accuracy": float((pred == gte).mean()), "balanced": float(np.mean(list(recall.values()))),
                     "recall": recall}
    return row


if __name__ == "__main__":
    for d in map(int, sys.argv[1].split(",")):
        print(json.dumps(draw_row(d)), flush=True)
