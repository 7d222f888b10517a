"""Where the predictor's goals stand, draw by draw: the GNN beside what the oracles say any scorer could reach.

Reads what ``bench/predictor.py`` printed (its last line, one JSON object): one or more ``--parts accuracy`` runs
(each of one or more draws) and one ``--parts headroom`` run that covers the same draws. Trains nothing. Per draw
and goal (PR-AUC ratio, cascade ratio, event recall at precision 0.5 on hardware-precursor failures, median lead,
root-cause top-3 where measured, and better than the rules on every cause group but software) it gives a
verdict: ``met``; ``missed``; ``beyond one window`` (the ``window_aware`` oracle does not reach it either);
``beyond the oracles`` (nor the ``amplitude_aware`` oracle, the best ranking any reader of the telemetry can
make on average). See ``infrabrain.models.goal_status``.

    for s in 0 4 8 12; do .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --seed $s \\
        --data-seeds 4 --no-oracle --no-progress > acc-$s.json; done     # 24 h draws 0-15, ~10 min each
    .venv/bin/python bench/predictor.py --parts headroom --data-seeds 16 --no-progress > headroom.json
    .venv/bin/python bench/predictor_goals.py --accuracy acc-*.json --headroom headroom.json \\
        --report-dir reports/goals-24h

Last line: one JSON object: ``per_draw`` (a row per draw: the GNN's ``ratio``, ``cascade_ratio``, ``recall``
with their intervals where measured, the oracles' ``*_window`` and ``*_ceiling`` values, ``median_lead_min``,
``rootcause_top3`` and ``verdicts``), ``verdict_counts`` (per goal, draws per verdict), the geometric-mean ratios
and the mean recall and lead. With ``--report-dir``, ``goal_status.png`` plots a panel per goal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infrabrain.models.evaluation import GOALS
from infrabrain.models.goal_status import VERDICTS, goal_rows, plot_goal_status, summarise_goals

#: Largest bench output read (a 16-draw accuracy summary is ~12 kB).
MAX_BYTES = 16 * 1024 * 1024


def last_json(path: Path) -> dict[str, Any]:
    """The JSON object on the last non-empty line of a bench output file; errors name the file."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SystemExit(f"{path}: cannot read: {e.strerror}") from None
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size} bytes, more than a bench summary ({MAX_BYTES}); wrong file?")
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        raise SystemExit(f"{path}: empty (did the bench run fail? its summary is printed last)")
    try:
        obj = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: the last line is not JSON ({e.msg}); pass the bench's stdout") from None
    if not isinstance(obj, dict):
        raise SystemExit(f"{path}: the last line is JSON {type(obj).__name__}, not an object")
    return obj


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Per draw: the GNN / window-aware oracle / ceiling for each ratio and the recall, the lead, the verdicts."""
    short = {"met": "met", "missed": "missed", "beyond one window": "window", "beyond the oracles": "oracles"}
    print(f"{'draw':>5s} {'ratio GNN/win/ceil':>19s} {'cascade GNN/win/ceil':>21s} {'recall GNN/win/ceil':>20s} "
          f"{'lead':>5s}  verdicts (ratio, cascade, recall, lead); not ahead of the rules on", file=sys.stderr)
    for r in rows:
        v = r["verdicts"]
        print(f"{'d' + str(r['data_seed']):>5s} "
              f"{_f(r['ratio']):>5s}/{_f(r['ratio_window']):>5s}/{_f(r['ratio_ceiling']):>5s}   "
              f"{_f(r['cascade_ratio']):>6s}/{_f(r['cascade_ratio_window']):>6s}/{_f(r['cascade_ratio_ceiling']):>6s} "
              f"  {_f(r['recall']):>5s}/{_f(r['recall_window']):>5s}/{_f(r['recall_ceiling']):>5s}  "
              f"{_f(r['median_lead_min'], 1):>5s}  "
              + ", ".join(short.get(v[g], "-") for g in ("pr_auc_ratio", "pr_auc_ratio_cascade",
                                                        "event_recall_at_p50", "median_lead_min"))
              + ("; -" if r["behind_rules"] is None else "; " + (", ".join(r["behind_rules"]) or "none"))
              + ("" if r.get("behind_rules_typed") is None
                 else " (typed: " + (", ".join(r["behind_rules_typed"]) or "none") + ")"),
              file=sys.stderr)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="verdicts: " + ", ".join(VERDICTS) + " (see infrabrain.models.goal_status)")
    p.add_argument("--accuracy", type=Path, nargs="+", required=True, metavar="FILE",
                   help="stdout of bench/predictor.py --parts accuracy (one or more draws each; a draw only once)")
    p.add_argument("--headroom", type=Path, required=True, metavar="FILE",
                   help="stdout of bench/predictor.py --parts headroom covering every draw of the accuracy runs")
    p.add_argument("--report-dir", type=Path, help="write goal_status.png here")
    p.add_argument("--title", default="held-out sites", help="plot title (e.g. '24 h draws')")
    args = p.parse_args(argv)

    accuracy = [last_json(f) for f in args.accuracy]
    headroom = last_json(args.headroom)
    try:
        rows = goal_rows(accuracy, headroom, GOALS, sources=[str(f) for f in args.accuracy])
    except ValueError as e:
        raise SystemExit(f"predictor_goals: {e}") from None
    print_table(rows)
    out = {**summarise_goals(rows), "goals": GOALS, "per_draw": rows}
    for goal, counts in out["verdict_counts"].items():
        print(f"{goal:22s} " + ", ".join(f"{k} {n}" for k, n in counts.items()), file=sys.stderr)
    if out["ahead_of_rules_typed"] is not None:  # beside the verdict: the cause-typed comparison (follow-up 33)
        print(f"{'  cause-typed':22s} ahead of the rules on every cause but software on {out['ahead_of_rules_typed']} "
              f"of the draws with a cause head", file=sys.stderr)
    if out["ahead_of_rules_fallback"] is not None:  # beside the verdict: the GNN + rules it did not learn (f-up 44)
        print(f"{'  gnn+rules':22s} ahead of the rules on every cause but software on {out['ahead_of_rules_fallback']} "
              "of the draws that measured it", file=sys.stderr)
    if args.report_dir:
        png = plot_goal_status(rows, args.report_dir / "goal_status.png", GOALS, title=args.title)
        print(f"wrote {png}", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
