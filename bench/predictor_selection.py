"""Which epoch to keep: every epoch's validation and held-out metrics, and what each selection rule keeps.

Trains the GNN of ``bench/predictor.py`` (its flags, simulated sites, site order, split, hyper-parameters and
training seeds: draw ``d`` trains seeds ``d .. d + seeds - 1``) for ``--epochs`` without stopping, keeping every
epoch's weights. Per epoch it records what early stopping sees (the validation site's metrics) and what it cannot
(the held-out sites' PR-AUC, cascade PR-AUC, median lead and, unless ``--rootcause-events 0``, cascade root-cause
top-3), then replays early stopping (``--patience``) with each candidate score. References without a rule:
the last epoch, the uniform average of the weights of epochs 2 to the last, and the epoch that scores best *on
the held-out sites* (it reads the test labels, so it is no rule: it bounds what any rule that keeps one epoch
of each training run can reach). Per draw it also scores the seed ensemble (the mean logit of the seeds' models
kept by ``--selection``) and fits the non-graph baselines on the same split, so every row has its ratio to the
best of them, as ``pr_auc_ratio`` in the predictor bench.

    .venv/bin/python bench/predictor_selection.py --hours 24 --rootcause-events 0   # one draw, 3 seeds: ~2 min
    .venv/bin/python bench/predictor_selection.py --data-seeds 8 --rootcause-events 0 --no-progress   # 24 h draws 0-7
    .venv/bin/python bench/predictor_selection.py --hours 48 --seed 1 --seeds 2     # with root-cause per epoch

Last line: one JSON object. ``draws`` holds per draw ``rules``: each rule (and reference, and the ``seed
ensemble``) mapped to the means over seeds of ``pr_auc``, ``pr_auc_cascade``, ``rootcause_top3``,
``median_lead_min`` and the kept ``epoch``, with ``<key>_per_seed`` lists and ``pr_auc_ratio``; plus
``best_baseline``. ``summary`` maps every row to its per-draw PR-AUC and ratio, the geometric-mean ratio over
draws and the lowest draw's ratio.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from infrabrain.models.selection import SELECTIONS, replay, selection_score

# Candidate scores over an epoch's history record: the implemented selections and two rejected alternatives.
CANDIDATES: dict[str, Callable[[dict[str, float]], float]] = {
    **{name: (lambda rec, n=name: selection_score(_val(rec), n)) for name in SELECTIONS},  # type: ignore[misc]
    "pr_auc+cascade": lambda rec: _mean_or_first(rec["val_pr_auc"], rec.get("val_pr_auc_cascade", math.nan)),
    "causes": lambda rec: _first_finite(rec.get("val_pr_auc_causes", math.nan), rec["val_pr_auc"]),
}
#: The reference row that reads the held-out labels (an upper bound for one-epoch rules, not a rule).
HELD_OUT_BEST = "best epoch on the held-out sites"
SEED_ENSEMBLE = "seed ensemble"


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


def predictor_bench() -> ModuleType:
    """``bench/predictor.py`` as a module: its parser, site order and pipeline settings are this bench's."""
    path = Path(__file__).resolve().parent / "predictor.py"
    spec = importlib.util.spec_from_file_location("bench_predictor", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_seed(bp: ModuleType, runs: list, args: argparse.Namespace, seed: int) -> tuple[dict, dict]:
    """Train one seed for every epoch; each rule's kept epoch and its held-out metrics, and the held-out rows
    of the model ``--selection`` keeps (for the seed ensemble)."""
    from infrabrain.models.evaluation import evaluate_scores, failure_events
    from infrabrain.models.root_cause_accuracy import rootcause_accuracy
    from infrabrain.models.pipeline import deployed_site_priors, train_predictor
    from infrabrain.models.training import predict_scores

    cfg = bp._pipeline_config(args, seed).model_copy(update={"patience": args.epochs})
    states: list[dict[str, torch.Tensor]] = []
    trained = train_predictor(runs, cfg,
                              on_epoch=lambda e, rec, model: states.append(copy.deepcopy(model.state_dict())))
    sp, model = trained.splits, trained.model
    test = sp.test_sites
    events = failure_events(test)
    priors = deployed_site_priors(trained, test)  # the deployed ranking's prior, the same for every epoch
    hist = trained.result.history
    ensembled = replay([CANDIDATES[args.selection](rec) for rec in hist], args.patience)
    kept_rows: dict[str, Any] = {}

    def held_out(state: dict[str, torch.Tensor], epoch: int | None = None) -> dict[str, float | None]:
        model.load_state_dict(state)
        rows = predict_scores(model, test)
        if epoch == ensembled:  # the seed ensemble averages the models --selection keeps
            kept_rows["rows"] = rows
        m = evaluate_scores(rows, events)
        rc = (rootcause_accuracy(model, test, sp.feature_set, rows, events, max_events=args.rootcause_events,
                                 prior=priors)
              if args.rootcause_events > 0 else {})
        return {"pr_auc": _finite(m["pr_auc"]), "pr_auc_cascade": _finite(m["pr_auc_cascade"]),
                "median_lead_min": _finite(m["median_lead_min"]), "rootcause_top3": _finite(rc.get("cascade_top3"))}

    per_epoch = [held_out(st, e) for e, st in enumerate(states)]
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
    best = max(range(len(per_epoch)), key=lambda e: per_epoch[e]["pr_auc"] or -1.0)
    out[HELD_OUT_BEST] = {**per_epoch[best], "epoch": best}
    return out, {"rows": kept_rows["rows"], "events": events, "splits": sp}


def _one_draw(bp: ModuleType, args: argparse.Namespace, data_seed: int) -> dict:
    """Every seed of one draw, the seed ensemble and the best non-graph baseline on the same held-out rows."""
    from infrabrain.models.calibration import risk_of
    from infrabrain.models.evaluation import evaluate_scores
    from infrabrain.models.pipeline import baseline_tables, ignored_causes

    runs = bp._draw_runs(args, data_seed)
    seeds, kept = [], []
    for i in range(args.seeds):
        out, k = _one_seed(bp, runs, args, data_seed + i)
        seeds.append(out)
        kept.append(k if i == 0 else {"rows": k["rows"]})  # one copy of the split is enough
    rules: dict[str, dict[str, object]] = {}
    for name in seeds[0]:
        row: dict[str, object] = {}
        for key in ("pr_auc", "pr_auc_cascade", "rootcause_top3", "median_lead_min", "epoch"):
            vals = [s[name][key] for s in seeds]
            ok = [v for v in vals if v is not None]
            row[key] = float(np.mean(ok)) if ok else None
            row[f"{key}_per_seed"] = vals
        rules[name] = row
    first = kept[0]["rows"]
    keys = ["site", "t", "node"]
    for k in kept[1:]:  # every seed scores the same held-out rows (the split does not depend on the seed)
        if not first[keys].reset_index(drop=True).equals(k["rows"][keys].reset_index(drop=True)):
            raise RuntimeError("the seeds' held-out rows differ; cannot average their logits")
    logit = np.mean([k["rows"]["logit"].to_numpy() for k in kept], axis=0)
    ens = first.assign(logit=logit, score=risk_of(logit, None))
    m = evaluate_scores(ens, kept[0]["events"])
    rules[SEED_ENSEMBLE] = {"pr_auc": _finite(m["pr_auc"]), "pr_auc_cascade": _finite(m["pr_auc_cascade"]),
                            "median_lead_min": _finite(m["median_lead_min"]), "rootcause_top3": None, "epoch": None}
    truth = first[["site", "t", "node", "label", "cause", "root"]]
    sp = kept[0]["splits"]
    tables = baseline_tables(sp, sp.test_sites, truth, data_seed,
                             ignore_causes=ignored_causes(bp._pipeline_config(args, data_seed)))
    base = {name: _finite(evaluate_scores(df, kept[0]["events"])["pr_auc"]) for name, df in tables.items()}
    best = max(base, key=lambda n: base[n] or -1.0)
    for row in rules.values():
        pr = row["pr_auc"]
        row["pr_auc_ratio"] = (float(pr) / base[best]) if pr is not None and base[best] else None  # type: ignore[arg-type]
    return {"data_seed": data_seed, "rules": rules, "best_baseline": best, "pr_auc_best_baseline": base[best],
            "baselines": base}


def _summary(draws: list[dict]) -> dict[str, dict[str, object]]:
    """Per row: PR-AUC and ratio per draw, the geometric-mean ratio over draws and the lowest draw's ratio."""
    out: dict[str, dict[str, object]] = {}
    for name in draws[0]["rules"]:
        ratios = [d["rules"][name]["pr_auc_ratio"] for d in draws]
        ok = [r for r in ratios if r is not None and r > 0]
        out[name] = {"pr_auc_per_draw": [d["rules"][name]["pr_auc"] for d in draws], "pr_auc_ratio_per_draw": ratios,
                     "pr_auc_ratio": float(np.exp(np.mean(np.log(ok)))) if ok else None,
                     "pr_auc_ratio_min_draw": min(ok) if ok else None}
    return out


def build_parser(bp: ModuleType) -> argparse.ArgumentParser:
    """The predictor bench's flags (so this bench trains the same GNN), plus ``--data-seed`` for ``--seed``."""
    p = bp.build_parser()
    p.description = __doc__
    p.add_argument("--data-seed", dest="seed", type=int, default=argparse.SUPPRESS,
                   help="the first draw's simulation seed (alias of --seed, as in older commands)")
    return p


def main(argv: list[str] | None = None) -> int:
    bp = predictor_bench()
    p = build_parser(bp)
    args = p.parse_args(argv)
    if args.quick:  # as the predictor bench's smoke run
        args.sites, args.heldout, args.hours, args.epochs, args.seeds, args.rootcause_events = 4, 1, 24.0, 3, 2, 0
    if args.epochs < 3:
        p.error("--epochs must be >= 3 (the weight average starts at epoch 2)")
    if args.selection not in CANDIDATES:
        p.error(f"--selection {args.selection!r} is not a candidate ({', '.join(CANDIDATES)})")
    torch.set_num_threads(args.threads)
    from infrabrain.logs import configure_logging

    configure_logging("warning")
    t0 = time.time()
    draws = [_one_draw(bp, args, args.seed + i) for i in range(args.data_seeds)]
    summary = _summary(draws)
    fmt = lambda v, f: format(v, f) if v is not None else "-".rjust(int(f.split(".")[0]))  # noqa: E731
    for d in draws:
        print(f"draw {d['data_seed']} (best non-graph: {d['best_baseline']} {d['pr_auc_best_baseline']:.3f})",
              file=sys.stderr)
        print(f"  {'rule':34s} {'PR-AUC':>7s} {'ratio':>6s} {'cascades':>8s} {'root-cause':>10s} {'lead':>5s}"
              "  kept epochs", file=sys.stderr)
        for name, r in d["rules"].items():
            print(f"  {name:34s} {fmt(r['pr_auc'], '7.3f')} {fmt(r['pr_auc_ratio'], '6.2f')} "
                  f"{fmt(r['pr_auc_cascade'], '8.3f')} {fmt(r['rootcause_top3'], '10.2f')} "
                  f"{fmt(r['median_lead_min'], '5.1f')}  {r.get('epoch_per_seed', '')}", file=sys.stderr)
    if len(draws) > 1:
        print(f"over draws {[d['data_seed'] for d in draws]}: geometric-mean ratio (lowest draw)", file=sys.stderr)
        for name, s in summary.items():
            print(f"  {name:34s} {fmt(s['pr_auc_ratio'], '6.2f')} ({fmt(s['pr_auc_ratio_min_draw'], '4.2f')})",
                  file=sys.stderr)
    config = {k: v for k, v in vars(args).items() if k not in ("no_progress", "report_dir", "parts")}
    print(json.dumps({"draws": draws, "summary": summary, "seconds": round(time.time() - t0, 1), "config": config},
                     default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
