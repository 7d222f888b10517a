"""Does the daemon's dashboard name the cause its alert names? (issue 3 follow-up 41)

Replays a checkpoint's held-out sites (``heldout_sites`` in its card) through the daemon's own scorer
(``client.scoring.PredictorScorer``), one window every ``--every`` steps. For each node window at or above the
card's alert threshold it compares the strongest deviating signal (the heuristic ``/metrics`` had carried for
every node) with what the alert sentence says (what ``/metrics`` now carries for such a node):

- ``alerted``: node windows at or above the threshold;
- ``cause_differs`` / ``component_differs`` / ``metric_differs``: how many of them the heuristic's cause group,
  component or metric differs from the sentence's;
- ``pairs``: each (heuristic group -> sentence group) that differs, with its count;
- ``quiet_windows``, ``quiet_deviation_median`` / ``_p90``, ``quiet_named_share``: the node windows below the
  threshold, how far their strongest signal is from typical (normalised units), and the share the heuristic
  still names a cause for (``scoring.ABNORMAL_DEVIATION`` and up).

Run: ``.venv/bin/python bench/alert_cause.py`` (prints examples, then one JSON line). Without ``--checkpoint``
and ``--data`` it first simulates and trains as the predictor's follow-up 40 commands do
(``infrabrain simulate --sites 10 --hours 24 --acceleration 200``, ``infrabrain train --heldout 3 --val-sites 1
--epochs 8``) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="predictor checkpoint directory (infrabrain train --out); with --data")
    ap.add_argument("--data", help="simulated dataset directory holding the card's held-out sites")
    ap.add_argument("--every", type=int, default=15, help="steps between scored windows (default 15)")
    ap.add_argument("--examples", type=int, default=8, help="differing alerts to print (default 8)")
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error(f"--every must be at least 1, got {args.every}")
    if (args.checkpoint is None) != (args.data is None):
        ap.error("give --checkpoint and --data together, or neither (then both are made here)")
    if args.checkpoint is None:
        with tempfile.TemporaryDirectory(prefix="alert-cause-") as tmp:
            from infrabrain.cli import main as cli_main

            data, ck = f"{tmp}/sim", f"{tmp}/ck"
            for argv_ in (["simulate", "--sites", "10", "--hours", "24", "--acceleration", "200", "--out", data],
                          ["train", "--data", data, "--heldout", "3", "--val-sites", "1", "--epochs", "8",
                           "--out", ck]):
                if cli_main(argv_) != 0:
                    raise SystemExit(f"infrabrain {' '.join(argv_)} failed")
            return _measure(ck, data, args.every, args.examples)
    return _measure(args.checkpoint, args.data, args.every, args.examples)


def _measure(checkpoint: str, data: str, every: int, examples: int) -> int:
    """Score and explain ``checkpoint``'s held-out sites of ``data``; print the comparison and its JSON."""
    import torch

    from infrabrain.client.scoring import PredictorScorer
    from infrabrain.client.topology_file import site_topology_of_run
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.simulation.storage import load_site

    torch.set_num_threads(2)
    sites = load_checkpoint(checkpoint).card.get("heldout_sites") or []
    if not sites:
        raise SystemExit(f"{checkpoint}'s model card names no heldout_sites")
    counts: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    quiet: list[tuple[float, bool]] = []
    shown = 0
    for site in sites:
        run = load_site(f"{data}/site={site}")
        scorer = PredictorScorer(checkpoint, site_topology_of_run(run), max_explained=10**6)
        threshold = scorer.alert_threshold if scorer.alert_threshold is not None else 0.5
        steps = np.asarray(run.metrics["gpu"]).shape[0]
        for t in range(scorer.window_steps - 1, steps, every):
            window = {k: np.asarray(v)[t - scorer.window_steps + 1: t + 1] for k, v in run.metrics.items()}
            scored = scorer.score(window)
            hot = [r for r in scored if r.risk >= threshold]
            quiet.extend((abs(r.deviation), r.top_cause != "none") for r in scored if r.risk < threshold)
            said = {r.node_id: r for r in scorer.explain(hot)} if hot else {}
            for r in hot:
                s = said[r.node_id]
                counts["alerted"] += 1
                counts["cause_differs"] += s.top_cause != r.top_cause
                counts["component_differs"] += s.component_id != r.component_id
                counts["metric_differs"] += s.metric != r.metric
                if s.top_cause != r.top_cause:
                    pairs[f"{r.top_cause} -> {s.top_cause}"] += 1
                    if shown < examples:
                        shown += 1
                        print(f"{site} step {t}: heuristic {r.top_cause} ({r.component_id} {r.metric}); "
                              f"alert: {s.detail}")
    n = counts["alerted"]
    print(f"{counts['cause_differs']} of {n} alerted node windows: the heuristic's cause group differs from "
          f"the alert sentence's; component {counts['component_differs']}, metric {counts['metric_differs']}")
    dev = np.array([d for d, _ in quiet]) if quiet else np.zeros(0)
    named = float(np.mean([k for _, k in quiet])) if quiet else None
    print(f"{len(quiet)} quiet node windows: strongest signal median {np.median(dev) if quiet else float('nan'):.2f}, "
          f"share still named {named if named is None else round(named, 4)}")
    print(json.dumps({"sites": sites, "alerted": n, "cause_differs": counts["cause_differs"],
                      "cause_differs_share": counts["cause_differs"] / n if n else None,
                      "component_differs": counts["component_differs"], "metric_differs": counts["metric_differs"],
                      "pairs": dict(pairs.most_common()), "quiet_windows": len(quiet),
                      "quiet_deviation_median": float(np.median(dev)) if quiet else None,
                      "quiet_deviation_p90": float(np.quantile(dev, 0.9)) if quiet else None,
                      "quiet_named_share": named}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
