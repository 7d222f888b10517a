"""Which epoch to keep: every epoch's validation and held-out metrics, and what each selection rule keeps.

Trains the GNN of ``bench/predictor.py`` (same simulated sites, split, hyper-parameters and training seeds) for
``--epochs`` without stopping, keeping every epoch's weights. Per epoch it records what early stopping sees (the
validation site's metrics) and what it cannot (the held-out sites' PR-AUC, cascade PR-AUC, median lead and
cascade root-cause top-3), then replays early stopping (``--patience``) with each candidate score, and adds two
references without selection: the last epoch and the uniform average of the weights of epochs 2 to the last.

    .venv/bin/python bench/predictor_selection.py --hours 24                  # ~8 min on 2 cores, 3 seeds
    .venv/bin/python bench/predictor_selection.py --hours 48 --data-seed 1 --seeds 2

Last line: one JSON object; ``rules`` maps each rule to the means over seeds of ``pr_auc``, ``pr_auc_cascade``,
``rootcause_top3``, ``median_lead_min`` and the kept ``epoch``, with ``<key>_per_seed`` lists.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from infrabrain.models.selection import SELECTIONS, replay, selection_score

# Candidate scores over an epoch's history record: the implemented selections and two rejected alternatives.
CANDIDATES: dict[str, Callable[[dict[str, float]], float]] = {
    **{name: (lambda rec, n=name: selection_score(_val(rec), n)) for name in SELECTIONS},  # type: ignore[misc]
    "pr_auc+cascade": lambda rec: _mean_or_first(rec["val_pr_auc"], rec.get("val_pr_auc_cascade", math.nan)),
    "causes": lambda rec: _first_finite(rec.get("val_pr_auc_causes", math.nan), rec["val_pr_auc"]),
}


def _val(rec: dict[str, float]) -> dict[str, float]:
    return {k[4:]: v for k, v in rec.items() if k.startswith("val_")}


def _first_finite(a: float, b: float) -> float:
    return a if math.isfinite(a) else b


def _mean_or_first(a: float, b: float) -> float:
    if not math.isfinite(a):
        return b
    return 0.5 * (a + b) if math.isfinite(b) else a


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}


def _one_seed(runs: list, args: argparse.Namespace, seed: int) -> dict[str, dict[str, float | None]]:
    from infrabrain.models.evaluation import evaluate_scores, failure_events
    from infrabrain.models.explain import rootcause_accuracy
    from infrabrain.models.pipeline import PipelineConfig, train_predictor, training_fractions
    from infrabrain.models.training import predict_scores

    cfg = PipelineConfig(heldout=args.heldout, val_sites=args.val_sites, weight_decay=args.weight_decay,
                         epochs=args.epochs, patience=args.epochs, seed=seed, progress=not args.no_progress,
                         bin_features=args.bins, dropout=args.dropout,
                         input_scaling=args.scale_inputs,
                         fractions=training_fractions(args.train_until))
    states: list[dict[str, torch.Tensor]] = []
    trained = train_predictor(runs, cfg,
                              on_epoch=lambda e, rec, model: states.append(copy.deepcopy(model.state_dict())))
    sp, model = trained.splits, trained.model
    test = sp.test_sites
    events = failure_events(test)

    def held_out(state: dict[str, torch.Tensor]) -> dict[str, float | None]:
        model.load_state_dict(state)
        rows = predict_scores(model, test)
        m = evaluate_scores(rows, events)
        rc = rootcause_accuracy(model, test, sp.feature_set, rows, events, max_events=args.rootcause_events)
        return {"pr_auc": _finite(m["pr_auc"]), "pr_auc_cascade": _finite(m["pr_auc_cascade"]),
                "median_lead_min": _finite(m["median_lead_min"]), "rootcause_top3": _finite(rc.get("cascade_top3"))}

    hist = trained.result.history
    per_epoch = [held_out(st) for st in states]
    for e, (rec, m) in enumerate(zip(hist, per_epoch, strict=True)):
        print(f"seed {seed} epoch {e}: validation PR-AUC {rec['val_pr_auc']:.3f} causes "
              f"{rec.get('val_pr_auc_causes', math.nan):.3f} cascades {rec.get('val_pr_auc_cascade', math.nan):.3f}"
              f" | held-out PR-AUC {m['pr_auc'] or math.nan:.3f} cascades {m['pr_auc_cascade'] or math.nan:.3f}"
              f" root-cause top-3 {m['rootcause_top3'] or math.nan:.2f}", file=sys.stderr)
    out: dict[str, dict[str, float | None]] = {}
    for name, fn in CANDIDATES.items():
        kept = replay([fn(rec) for rec in hist], args.patience)
        out[name] = {**per_epoch[kept], "epoch": kept}
    out["last epoch"] = {**per_epoch[-1], "epoch": len(states) - 1}
    out["average of epochs 2-last"] = {**held_out(_average(states[2:])), "epoch": None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=10)
    p.add_argument("--heldout", type=int, default=3)
    p.add_argument("--val-sites", type=int, default=1)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--acceleration", type=float, default=200.0)
    p.add_argument("--data-seed", type=int, default=0, help="simulation seed (the predictor bench uses 0)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=8, help="epochs trained (the predictor bench's maximum)")
    p.add_argument("--patience", type=int, default=3, help="patience replayed for every rule")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--train-until", type=float, default=1.0,
                   help="training sites train on snapshots ending before this fraction of their run (as "
                        "bench/predictor.py; the rule table in docs/predictor.md was recorded with 0.6)")
    p.add_argument("--bins", action="store_true", help="GNN input: every time bin too (the encoder before follow-up 4)")
    p.add_argument("--dropout", type=float, default=0.2, help="GNN dropout (default %(default)s; 0 before follow-up 4)")
    p.add_argument("--scale-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="GNN: standardise encoder inputs per kind (default on since follow-up 5)")
    p.add_argument("--rootcause-events", type=int, default=100)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.epochs < 3:
        p.error("--epochs must be >= 3 (the weight average starts at epoch 2)")
    torch.set_num_threads(1)
    from infrabrain.simulation import simulate_federation

    t0 = time.time()
    runs = simulate_federation(args.sites, hours=args.hours, seed=args.data_seed, acceleration=args.acceleration)
    seeds = [_one_seed(runs, args, s) for s in range(args.seeds)]
    rules: dict[str, dict[str, object]] = {}
    for name in seeds[0]:
        row: dict[str, object] = {}
        for key in ("pr_auc", "pr_auc_cascade", "rootcause_top3", "median_lead_min", "epoch"):
            vals = [s[name][key] for s in seeds]
            ok = [v for v in vals if v is not None]
            row[key] = float(np.mean(ok)) if ok else None
            row[f"{key}_per_seed"] = vals
        rules[name] = row
    print(f"{'rule':26s} {'PR-AUC':>7s} {'cascades':>8s} {'root-cause':>10s} {'lead':>5s}  kept epochs",
          file=sys.stderr)
    for name, r in rules.items():
        fmt = lambda v, f: format(v, f) if v is not None else "-".rjust(int(f.split(".")[0]))  # noqa: E731
        print(f"{name:26s} {fmt(r['pr_auc'], '7.3f')} {fmt(r['pr_auc_cascade'], '8.3f')} "
              f"{fmt(r['rootcause_top3'], '10.2f')} {fmt(r['median_lead_min'], '5.1f')}  {r['epoch_per_seed']}",
              file=sys.stderr)
    print(json.dumps({"rules": rules, "seconds": round(time.time() - t0, 1),
                      "config": {k: v for k, v in vars(args).items() if k != "no_progress"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
