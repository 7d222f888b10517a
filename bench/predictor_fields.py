"""What a site loses when its exporters do not send a field the model reads.

A model is trained on every field (``bench/predictor.py``'s GNN, flags, draws, site order and split; training
seed 0). Its held-out sites are then scored again with fields missing, as a site whose exporters do not send
them would give them: a field is NaN at every held-out component of its kind, a kind is NaN whole (the model
masks both, as documented). Conditions:

- each field alone (``--per-field``, default on);
- ``dcgm_default_counters``: the five GPU fields dcgm-exporter's default counters file leaves commented out
  (``client.collectors.prometheus.DCGM_EXPORTER_DEFAULT_OFF``; ``deploy/dcgm-exporter-counters.csv`` has them);
- ``no_upstream_kinds``: no switch, PDU, cooling-unit or rack telemetry (DCGM and node_exporter only, as
  ``deploy/site.example.yaml``);
- ``no_infiniband``: no InfiniBand port errors (the Prometheus collector's default mapping before issue 3
  follow-up 47);
- ``dcgm_default_and_no_upstream``, and ``dcgm_default_no_upstream_no_ib``: all three, which a site with
  dcgm-exporter's defaults and no mapping file sent before that follow-up.

    .venv/bin/python bench/predictor_fields.py                                  # 24 h draws 0-3, ~2 min each
    .venv/bin/python bench/predictor_fields.py --seed 0 --data-seeds 8 --no-per-field --plot fields.png
    .venv/bin/python bench/predictor_fields.py --quick --data-seeds 1 --no-per-field      # smoke run, ~20 s

Last line: one JSON object: ``conditions`` maps each condition to the mean over draws of ``pr_auc``,
``pr_auc_cascade``, ``event_recall_at_p50_precursor`` and ``median_lead_min``, each with ``<key>_delta`` (the
mean change from ``none``, every field sent) and ``<key>_per_draw``; ``draws`` (the data seeds),
``most_needed_fields`` (the five fields whose absence lowers PR-AUC most, with ``--per-field``), ``seconds``.
With ``--plot PNG``, a bar chart of each condition's PR-AUC and recall change.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from infrabrain.client.collectors.prometheus import DCGM_EXPORTER_DEFAULT_OFF

UPSTREAM: tuple[str, ...] = ("leaf", "spine", "pdu", "cooling", "rack")
IB = "node_infiniband_port_errors_received_total"
#: condition -> {kind: fields missing (None: the whole kind)}
PRESETS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "dcgm_default_counters": {"gpu": DCGM_EXPORTER_DEFAULT_OFF},
    "no_upstream_kinds": {k: None for k in UPSTREAM},
    "no_infiniband": {"node": (IB,)},
    "dcgm_default_and_no_upstream": {"gpu": DCGM_EXPORTER_DEFAULT_OFF, **{k: None for k in UPSTREAM}},
    "dcgm_default_no_upstream_no_ib": {"gpu": DCGM_EXPORTER_DEFAULT_OFF, "node": (IB,), **{k: None for k in UPSTREAM}},
}
KEYS: tuple[str, ...] = ("pr_auc", "pr_auc_cascade", "event_recall_at_p50_precursor", "median_lead_min")


def predictor_bench() -> ModuleType:
    """``bench/predictor.py`` as a module: its parser, draws, site order and pipeline settings are this bench's."""
    path = Path(__file__).resolve().parent / "predictor.py"
    spec = importlib.util.spec_from_file_location("bench_predictor", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def without_fields(run: Any, lack: Mapping[str, Sequence[str] | None]) -> Any:
    """A shallow copy of ``run`` whose telemetry lacks ``lack`` (``{kind: fields}``, None: every field of the
    kind) at every component: NaN, as a site whose exporters never send them. ``run`` is not changed; a kind or
    field the run does not have is an error naming it."""
    metrics = dict(run.metrics)
    for kind, fields in lack.items():
        if kind not in metrics:
            raise SystemExit(f"no component kind {kind!r} in site {run.spec.name!r} (kinds: {sorted(metrics)})")
        values = np.array(metrics[kind], copy=True)
        names = list(run.metric_names[kind])
        if fields is None:
            values[:] = np.nan
        for field in fields or ():
            if field not in names:
                raise SystemExit(f"no field {field!r} of kind {kind!r} (fields: {', '.join(names)})")
            values[:, :, names.index(field)] = np.nan
        metrics[kind] = values
    out = copy.copy(run)
    out.metrics = metrics
    return out


def conditions(run: Any, per_field: bool) -> dict[str, dict[str, tuple[str, ...] | None]]:
    """``none``, each field alone (``kind:field``; not the static ones, which the model does not read), then the
    presets."""
    from infrabrain.models.features import STATIC_METRICS

    out: dict[str, dict[str, tuple[str, ...] | None]] = {"none": {}}
    if per_field:
        for kind, names in run.metric_names.items():
            out |= {f"{kind}:{m}": {kind: (m,)} for m in names if m not in STATIC_METRICS}
    return out | PRESETS


def one_draw(bp: ModuleType, args: argparse.Namespace, data_seed: int, progress: bool) -> dict[str, dict[str, float]]:
    """Train on draw ``data_seed`` and score its held-out sites under every condition."""
    from infrabrain.models.evaluation import evaluate_scores, failure_events
    from infrabrain.models.pipeline import pipeline_splits, train_predictor
    from infrabrain.models.training import predict_scores
    from tqdm import tqdm

    runs = bp._draw_runs(args, data_seed)
    cfg = bp._pipeline_config(args, 0).model_copy(update={"progress": False})
    trained = train_predictor(runs, cfg)
    n_train = len(runs) - cfg.heldout
    out: dict[str, dict[str, float]] = {}
    todo = conditions(runs[-1], args.per_field)
    for name, lack in tqdm(todo.items(), desc=f"draw {data_seed}", disable=not progress, total=len(todo)):
        held = [without_fields(r, lack) for r in runs[n_train:]]
        test = pipeline_splits(runs[:n_train] + held, cfg).test_sites
        m = evaluate_scores(predict_scores(trained.model, test), failure_events(test))
        out[name] = {k: float(m[k]) for k in KEYS}
    return out


def summarise(draws: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per condition, the mean over draws of each key, its mean change from ``none`` and the per-draw values."""
    def mean(xs: Sequence[float]) -> float | None:
        xs = [x for x in xs if math.isfinite(x)]
        return sum(xs) / len(xs) if xs else None

    out: dict[str, dict[str, Any]] = {}
    for name in draws[0]:
        row: dict[str, Any] = {}
        for k in KEYS:
            vals = [d[name][k] for d in draws]
            row[k] = mean(vals)
            row[f"{k}_delta"] = mean([v - d["none"][k] for v, d in zip(vals, draws, strict=True)])
            row[f"{k}_per_draw"] = [v if math.isfinite(v) else None for v in vals]  # JSON has no NaN
        out[name] = row
    return out


def plot(summary: Mapping[str, Mapping[str, Any]], path: str) -> None:
    """Bars of each condition's mean change in PR-AUC and in recall at precision 0.5 (precursor failures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted((n for n in summary if n != "none"), key=lambda n: summary[n]["pr_auc_delta"] or 0.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(names) + 1.5), sharey=True)
    for ax, key, title in ((axes[0], "pr_auc_delta", "PR-AUC"),
                           (axes[1], "event_recall_at_p50_precursor_delta", "recall at precision 0.5 (precursors)")):
        ax.barh(names, [summary[n][key] or 0.0 for n in names], color="tab:red")
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"{title}: change")
    fig.suptitle("Held-out sites scored without a field (or set of fields), mean change over draws")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser(bp: ModuleType) -> argparse.ArgumentParser:
    """The predictor bench's flags (so this bench trains the same GNN), plus this bench's own."""
    p = bp.build_parser()
    p.description = __doc__
    p.set_defaults(data_seeds=4)
    p.add_argument("--per-field", action=argparse.BooleanOptionalAction, default=True,
                   help="score without each field alone too (default on)")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart of each condition's change here")
    return p


def main(argv: list[str] | None = None) -> int:
    bp = predictor_bench()
    args = build_parser(bp).parse_args(argv)
    if args.quick:  # as the predictor bench's smoke run
        args.sites, args.heldout, args.hours, args.epochs = 4, 1, 24.0, 3
    from infrabrain.logs import configure_logging

    configure_logging("warning")
    t0 = time.time()
    seeds = [args.seed + i for i in range(args.data_seeds)]
    draws = [one_draw(bp, args, s, not args.no_progress) for s in seeds]
    summary = summarise(draws)
    print(f"{'condition':58s} {'PR-AUC':>7s} {'change':>7s} {'rec@p50':>7s} {'change':>7s} {'lead':>5s}",
          file=sys.stderr)
    for name, r in sorted(summary.items(), key=lambda kv: kv[1]["pr_auc_delta"] or 0.0):
        print(f"{name:58s} {r['pr_auc']:7.3f} {r['pr_auc_delta']:+7.3f} {r['event_recall_at_p50_precursor']:7.3f} "
              f"{r['event_recall_at_p50_precursor_delta']:+7.3f} {r['median_lead_min']:5.1f}", file=sys.stderr)
    fields = sorted((n for n in summary if ":" in n), key=lambda n: summary[n]["pr_auc_delta"] or 0.0)
    if args.plot:
        plot(summary, args.plot)
    print(json.dumps({"draws": seeds, "conditions": summary, "most_needed_fields": fields[:5],
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
