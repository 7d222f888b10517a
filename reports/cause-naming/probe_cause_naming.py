"""Does the cause head's naming on the validation split say where it names right on the held-out sites?

For each 24 h draw (training seed = draw, the bench's default flags) trains the predictor and counts, per cause
group, where the head named that group (at MIN_CAUSE_P or more) on the failing rows of the validation split
(``Trained.cause_naming``, what the card keeps) and of the held-out sites (the same count on the test rows).
One JSON line per draw (issue 3 follow-up 38):

    ../../.venv/bin/python probe_cause_naming.py 0,1,2,3,4,5,6,7 > naming-d0-7.jsonl     # beside 8-15
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import predictor as bench  # noqa: E402

from infrabrain.models.cause_naming import fit_cause_naming  # noqa: E402
from infrabrain.models.pipeline import train_predictor  # noqa: E402
from infrabrain.models.training import predict_scores  # noqa: E402


def main(draws: list[int]) -> None:
    args = bench.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
    for d in draws:
        trained = train_predictor(bench._draw_runs(args, d), bench._pipeline_config(args, d))
        test = fit_cause_naming(predict_scores(trained.model, trained.splits.test_sites), "held-out")
        print(json.dumps({"draw": d, "validation": trained.cause_naming.model_dump()["groups"],
                          "heldout": test.model_dump()["groups"]}), flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1].split(",")])
