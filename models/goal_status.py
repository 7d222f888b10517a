"""Where the predictor's accuracy goals stand, draw by draw, beside what the oracles say any scorer could reach.

``bench/predictor.py --parts accuracy --data-seeds N`` measures the GNN on N simulated federations (draws);
``--parts headroom`` scores the simulator-truth oracles (:mod:`infrabrain.models.oracle`) on the same held-out
rows. This module joins the two, one row per draw, and gives each goal a verdict:

- ``met``: the GNN reaches the goal on that draw;
- ``beyond the oracles``: neither the ``amplitude_aware`` oracle (the ceiling: it ranks better on average than
  any scorer of the telemetry) nor the ``window_aware`` one reaches it there;
- ``beyond one window``: the ``window_aware`` oracle (what one window of a counter precursor's own counts shows)
  does not reach it, the ceiling does;
- ``missed``: an oracle that reads one window reaches it and the GNN does not.

The oracles are references on the same rows, not bounds that hold on every draw. The ceiling's ranking is the
best *on average* over all failures. On one draw another scorer can beat it by chance, more easily on a small
subset: on 24 h draw 1 gradient boosting ranks the one cascade failure with a precursor above where the ceiling
does, and on cascade failures the window-aware oracle sometimes ranks above the ceiling. So a ``beyond`` verdict
says how far the goal lies past what reading the telemetry gives in expectation, not that no scorer could reach
it on that draw. For recall at a fixed precision, the best average ranking need not place every failure above
the precision threshold either. The median lead has no oracle reference (an oracle's lead says how early it
*could* alert, not what the goal asks), so it is ``met`` or ``missed``. A draw run without the root-cause score
(``--rootcause-events 0``) has no root-cause verdict.

"Better than the rules on every cause except software faults" (``beats_rules_by_cause``) is ``met`` when the
GNN's held-out PR-AUC is above the rules' on every cause group the draw holds, software excepted
(``UNPREDICTABLE_GROUPS``). ``behind_rules`` names the groups where it is not: a tie counts as not better, but
the comparison knows no base rate, so a GNN a hair above the rules where both sit at the prevalence (no model
predicts the group) counts as better. Accuracy runs made before the bench reported
``by_cause_vs_rules_per_draw`` have no such verdict.

``behind_rules_typed`` makes the same comparison with the GNN's cause-typed PR-AUC (the risk times the cause
head's probability of the group, issue 3 follow-up 33): how well it ranks "this node fails of a memory fault",
which is what a cause-specific rule (an XID 63 alert, a single-bit ECC rate) says. The rules keep their whole
score. It is reported beside the verdict, which stays the untyped comparison that the goal was first measured
with; runs made before the model named causes have none.

``behind_rules_fallback`` compares ``gnn+rules`` instead (:mod:`~infrabrain.models.rule_fallback`): the GNN
with the incumbent rules of the cause groups its training sites held too few failures of, as ``predict`` and the
daemon serve them. Beside the verdict too, never instead of it: runs before issue 3 follow-up 44 have none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.models.evaluation import GOALS, UNPREDICTABLE_GROUPS
from infrabrain.models.oracle import CEILING_KIND

MET, MISSED, BEYOND_WINDOW, BEYOND_ORACLES = "met", "missed", "beyond one window", "beyond the oracles"
VERDICTS: tuple[str, ...] = (MET, MISSED, BEYOND_WINDOW, BEYOND_ORACLES)
#: The oracle that reads one window of a counter precursor's own counts (:mod:`infrabrain.models.oracle`).
WINDOW_KIND = "window_aware"
#: The accuracy keys of ``bench/predictor.py`` that each draw must have (``<key>_per_draw``).
ACCURACY_KEYS: tuple[str, ...] = ("pr_auc_best_baseline", "pr_auc_ratio", "pr_auc_ratio_cascade",
                                  "event_recall_at_p50", "median_lead_min")
#: ``by_cause_vs_rules`` column of the GNN's cause-typed PR-AUC (risk x the cause head's probability of the group).
TYPED_KEY = "gnn_typed_pr_auc"
#: ``by_cause_vs_rules`` column of ``gnn+rules``: the GNN with the incumbent rules of the cause groups its training
#: held too few failures of (:mod:`~infrabrain.models.rule_fallback`; issue 3 follow-up 44). Reported beside the
#: GNN's own comparison, never instead of it.
FALLBACK_KEY = "gnn_rules_pr_auc"
#: Relative difference above which the accuracy and headroom runs' best non-graph PR-AUC of a draw disagree.
SAME_ROWS_RTOL = 1e-6


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null, NaN, missing)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _ratio(a: Any, b: Any) -> float | None:
    a, b = _num(a), _num(b)
    return a / b if a is not None and b is not None and b > 0 else None


def verdict(value: float | None, goal: float, window: float | None = None,
            ceiling: float | None = None) -> str | None:
    """Verdict of a ``>= goal`` target (see the module docstring); None when ``value`` was not measured."""
    if value is None:
        return None
    if value >= goal:
        return MET
    refs = [x for x in (window, ceiling) if x is not None]
    if refs and max(refs) < goal:  # on a subset (cascades) the window oracle can rank above the ceiling
        return BEYOND_ORACLES
    if window is not None and window < goal:
        return BEYOND_WINDOW
    return MISSED


def _per_draw(run: Mapping[str, Any], key: str, source: str) -> list[Any]:
    """``run[key + "_per_draw"]``, or ``run[key]`` wrapped for a one-draw run, checked against its draw count."""
    seeds = run["data_seeds"]
    vals = run.get(f"{key}_per_draw")
    if vals is None:
        if len(seeds) != 1 or key not in run:
            raise ValueError(f"{source}: no {key}_per_draw (nor {key} for a one-draw run)")
        vals = [run[key]]
    if len(vals) != len(seeds):
        raise ValueError(f"{source}: {key}_per_draw has {len(vals)} values for {len(seeds)} draws")
    return list(vals)


def accuracy_draws(run: Mapping[str, Any], source: str = "accuracy run") -> list[dict[str, Any]]:
    """One dict per draw of a ``bench/predictor.py --parts accuracy`` JSON summary (a one-draw run has no
    ``data_seeds``: its draw is ``config.seed``)."""
    if not isinstance(run, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(run).__name__}")
    if "data_seeds" not in run:
        seed = (run.get("config") or {}).get("seed")
        if seed is None:
            raise ValueError(f"{source}: neither data_seeds nor config.seed: is this a bench/predictor.py accuracy "
                             "summary?")
        run = {**run, "data_seeds": [seed]}
    missing = [k for k in ACCURACY_KEYS if f"{k}_per_draw" not in run and k not in run]
    if missing:
        raise ValueError(f"{source}: missing {missing}: is this a bench/predictor.py accuracy summary?")
    cols = {k: _per_draw(run, k, source) for k in ACCURACY_KEYS}
    optional = ("pr_auc_ratio_interval", "event_recall_at_p50_interval", "median_lead_min_interval",
                "rootcause_top3", "by_cause_vs_rules")
    opt = {k: _per_draw(run, k, source) for k in optional
           if f"{k}_per_draw" in run or (len(run["data_seeds"]) == 1 and k in run)}
    return [{"data_seed": int(d), **{k: v[i] for k, v in cols.items()}, **{k: v[i] for k, v in opt.items()}}
            for i, d in enumerate(run["data_seeds"])]


def goal_rows(accuracy: Sequence[Mapping[str, Any]], headroom: Mapping[str, Any],
              goals: Mapping[str, float] = GOALS, sources: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Join accuracy summaries (each of one or more draws) with a headroom summary, one row per draw, sorted by
    draw: the GNN's value of every goal (``goals``: lower bounds by bench key, every key of
    :data:`~infrabrain.models.evaluation.GOALS`), the oracles' on the same rows, and the verdicts.

    A draw measured twice, or missing from ``headroom``, is an error; so is a draw whose best non-graph PR-AUC
    differs between the two runs (they were not scored on the same rows: another commit, hours or sites)."""
    missing = [k for k in GOALS if k not in goals]
    if missing:
        raise ValueError(f"goals lack {missing}")
    names = list(sources) if sources is not None else [f"accuracy run {i}" for i in range(len(accuracy))]
    if len(names) != len(accuracy):
        raise ValueError(f"got {len(names)} source names for {len(accuracy)} accuracy runs")
    hd = headroom.get("headroom_per_draw") if isinstance(headroom, Mapping) else None
    if not isinstance(hd, list) or not hd:
        raise ValueError("headroom: no headroom_per_draw: is this a bench/predictor.py --parts headroom summary?")
    if not all(isinstance(r, Mapping) and "data_seed" in r for r in hd):
        raise ValueError("headroom: a headroom_per_draw row has no data_seed")
    by_seed = {int(r["data_seed"]): r for r in hd}
    rows: dict[int, dict[str, Any]] = {}
    for run, name in zip(accuracy, names, strict=True):
        for d in accuracy_draws(run, name):
            seed = d["data_seed"]
            if seed in rows:
                raise ValueError(f"draw {seed} is measured twice ({rows[seed]['source']} and {name})")
            if seed not in by_seed:
                raise ValueError(f"draw {seed} ({name}) is not in the headroom run (draws {sorted(by_seed)})")
            h = by_seed[seed]
            a_best, h_best = _num(d["pr_auc_best_baseline"]), _num(h.get("pr_auc_best_baseline"))
            if a_best is None or h_best is None or abs(a_best - h_best) > SAME_ROWS_RTOL * max(abs(h_best), 1e-12):
                raise ValueError(f"draw {seed}: best non-graph PR-AUC {a_best} ({name}) != {h_best} (headroom): "
                                 "the two runs did not score the same rows")
            rows[seed] = {"source": name, **_row(d, h, goals)}
    return [rows[k] for k in sorted(rows)]


def _interval(iv: Any) -> tuple[float | None, float | None]:
    return (_num(iv.get("low")), _num(iv.get("high"))) if isinstance(iv, Mapping) else (None, None)


def _row(d: Mapping[str, Any], h: Mapping[str, Any], goals: Mapping[str, float]) -> dict[str, Any]:
    best = h["pr_auc_best_baseline"]
    best_c = h.get("pr_auc_best_baseline_cascade")
    r_lo, r_hi = _interval(d.get("pr_auc_ratio_interval"))
    c_lo, c_hi = _interval(d.get("event_recall_at_p50_interval"))
    l_lo, l_hi = _interval(d.get("median_lead_min_interval"))
    row = {
        "data_seed": d["data_seed"],
        "ratio": _num(d["pr_auc_ratio"]), "ratio_low": r_lo, "ratio_high": r_hi,
        "ratio_window": _ratio(h.get(f"oracle_{WINDOW_KIND}_pr_auc"), best),
        "ratio_ceiling": _ratio(h.get(f"oracle_{CEILING_KIND}_pr_auc"), best),
        "cascade_ratio": _num(d["pr_auc_ratio_cascade"]),
        "cascade_ratio_window": _ratio(h.get(f"oracle_{WINDOW_KIND}_pr_auc_cascade"), best_c),
        "cascade_ratio_ceiling": _ratio(h.get(f"oracle_{CEILING_KIND}_pr_auc_cascade"), best_c),
        "recall": _num(d["event_recall_at_p50"]), "recall_low": c_lo, "recall_high": c_hi,
        "recall_window": _num(h.get(f"oracle_{WINDOW_KIND}_recall_at_p50")),
        "recall_ceiling": _num(h.get(f"oracle_{CEILING_KIND}_recall_at_p50")),
        "median_lead_min": _num(d["median_lead_min"]), "median_lead_min_low": l_lo, "median_lead_min_high": l_hi,
        "rootcause_top3": _num(d.get("rootcause_top3")),
        "behind_rules": behind_rules(d.get("by_cause_vs_rules")),
        "behind_rules_typed": behind_rules(d.get("by_cause_vs_rules"), TYPED_KEY),
        "behind_rules_fallback": behind_rules(d.get("by_cause_vs_rules"), FALLBACK_KEY),
    }
    row["verdicts"] = {
        "pr_auc_ratio": verdict(row["ratio"], goals["pr_auc_ratio"], row["ratio_window"], row["ratio_ceiling"]),
        "pr_auc_ratio_cascade": verdict(row["cascade_ratio"], goals["pr_auc_ratio_cascade"],
                                        row["cascade_ratio_window"], row["cascade_ratio_ceiling"]),
        "event_recall_at_p50": verdict(row["recall"], goals["event_recall_at_p50"], row["recall_window"],
                                       row["recall_ceiling"]),
        "median_lead_min": verdict(row["median_lead_min"], goals["median_lead_min"]),
        "rootcause_top3": verdict(row["rootcause_top3"], goals["rootcause_top3"]),
        "beats_rules_by_cause": None if row["behind_rules"] is None else (MISSED if row["behind_rules"] else MET),
    }
    return row


def behind_rules(by_cause: Any, gnn_key: str = "gnn_pr_auc") -> list[str] | None:
    """Cause groups (software excepted) where the GNN's PR-AUC (``gnn_key``: :data:`TYPED_KEY` for the
    cause-typed one) is not above the rules' in a draw's ``by_cause_vs_rules`` (``{group: {"gnn_pr_auc",
    "rules_pr_auc", ...}}``); None without that table or, for the typed key, without a cause-typed PR-AUC."""
    if not isinstance(by_cause, Mapping) or not any(isinstance(v, Mapping) and gnn_key in v
                                                    for v in by_cause.values()):
        return None  # no table, or (the typed key) a run made before the model named causes
    out = []
    for group, v in by_cause.items():
        if group in UNPREDICTABLE_GROUPS or not isinstance(v, Mapping):
            continue
        gnn, rules = _num(v.get(gnn_key)), _num(v.get("rules_pr_auc"))
        if gnn is None or rules is None or gnn <= rules:
            out.append(group)
    return out


def summarise_goals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per goal, how many draws fall under each verdict (draws without the measurement are left out); per cause
    group, on how many draws the GNN is not ahead of the rules; the geometric mean of the ratios and the mean
    recall and lead over the draws."""
    if not rows:
        raise ValueError("summarise_goals needs at least one draw")
    goals = list(rows[0]["verdicts"])
    counts = {g: {v: sum(r["verdicts"][g] == v for r in rows) for v in VERDICTS} for g in goals}

    def geo(key: str) -> float | None:
        v = [r[key] for r in rows if r[key] is not None and r[key] > 0]
        return float(np.exp(np.mean(np.log(v)))) if v else None

    def mean(key: str) -> float | None:
        v = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(v)) if v else None

    def behind(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            for group in r.get(key) or ():
                out[group] = out.get(group, 0) + 1
        return out

    typed = [r for r in rows if r.get("behind_rules_typed") is not None]
    fallback = [r for r in rows if r.get("behind_rules_fallback") is not None]
    return {"draws": [r["data_seed"] for r in rows], "verdict_counts": counts, "behind_rules_draws":
            behind("behind_rules"), "behind_rules_typed_draws": behind("behind_rules_typed"),
            "ahead_of_rules_typed": sum(not r["behind_rules_typed"] for r in typed) if typed else None,
            "behind_rules_fallback_draws": behind("behind_rules_fallback"),
            "ahead_of_rules_fallback": sum(not r["behind_rules_fallback"] for r in fallback) if fallback else None,
            "pr_auc_ratio_geomean": geo("ratio"), "pr_auc_ratio_cascade_geomean": geo("cascade_ratio"),
            "event_recall_at_p50_mean": mean("recall"), "median_lead_min_mean": mean("median_lead_min")}


def plot_goal_status(rows: Sequence[Mapping[str, Any]], path: str | Path, goals: Mapping[str, float] = GOALS,
                     title: str = "held-out sites") -> Path:
    """Write a PNG with a panel per goal over the draws: the PR-AUC ratio, the cascade ratio, the event recall at
    precision 0.5, the median lead and, where measured, root-cause top-3. Each shows the GNN (dot, with its 90 %
    interval where measured), the window-aware oracle and the ceiling on the same rows where the headroom run has
    them (markers), and the goal (a red line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from infrabrain.models.evaluation import save_png

    if not rows:
        raise ValueError("plot_goal_status needs at least one draw")
    x = np.arange(len(rows))
    panels = [("GNN / best non-graph PR-AUC", "ratio", goals["pr_auc_ratio"], "log"),
              ("cascades (thermal, network): GNN / best non-graph", "cascade_ratio", goals["pr_auc_ratio_cascade"],
               "log"),
              ("event recall at precision 0.5, hardware precursors", "recall", goals["event_recall_at_p50"], "unit"),
              ("median lead at that threshold, minutes", "median_lead_min", goals["median_lead_min"], "linear")]
    if any(r.get("rootcause_top3") is not None for r in rows):
        panels.append(("root-cause top-3 on cascade failures", "rootcause_top3", goals["rootcause_top3"], "unit"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.55 * len(rows) + 3.0), 2.2 + 2.1 * len(panels)),
                             dpi=110, sharex=True)

    def col(k: str) -> np.ndarray:
        return np.array([np.nan if r.get(k) is None else r[k] for r in rows], float)

    for ax, (label, key, goal, scale) in zip(axes, panels, strict=True):
        lo, hi = col(f"{key}_low"), col(f"{key}_high")
        have = np.isfinite(lo) & np.isfinite(hi)
        if have.any():
            ax.vlines(x[have], lo[have], hi[have], colors="tab:blue", lw=2.5, alpha=0.6, label="GNN, 90 % interval")
        ax.plot(x, col(key), "o", color="black", ms=5, label="GNN")
        for suffix, marker, color, name in (("window", "^", "tab:green", "window-aware oracle"),
                                            ("ceiling", "x", "tab:purple", "ceiling oracle")):
            if np.isfinite(col(f"{key}_{suffix}")).any():
                ax.plot(x, col(f"{key}_{suffix}"), marker, mfc="none", color=color, ms=7, label=name)
        ax.axhline(goal, color="tab:red", lw=1.2, label=f"goal {goal:g}")
        if scale == "log":
            vals = np.concatenate([col(k) for k in (key, f"{key}_low", f"{key}_high", f"{key}_window",
                                                    f"{key}_ceiling")])
            vals = vals[np.isfinite(vals) & (vals > 0)]
            top, bottom = max(float(vals.max()) if len(vals) else goal, goal), min(
                float(vals.min()) if len(vals) else 1.0, 1.0)
            ax.axhline(1.0, color="grey", ls="--", lw=0.8)
            ax.set_yscale("log")
            ax.set_ylim(bottom / 1.1, top * 1.1)
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_yticks([t for t in sorted({0.5, 0.75, 1.0, goal, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0})
                           if bottom / 1.1 <= t <= top * 1.1])
        elif scale == "unit":
            ax.set_ylim(0.0, 1.02)
        else:
            ax.set_ylim(bottom=0.0)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xticks(x, [f"d{r['data_seed']}" for r in rows])
    axes[-1].set_xlabel("draw (simulated federation)")
    fig.suptitle(f"Where the goals stand, per draw ({title})", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["ACCURACY_KEYS", "BEYOND_ORACLES", "BEYOND_WINDOW", "FALLBACK_KEY", "MET", "MISSED", "VERDICTS",
           "accuracy_draws", "behind_rules", "goal_rows", "plot_goal_status", "summarise_goals", "verdict"]
