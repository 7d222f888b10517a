"""The incumbent rules, served where the model learned nothing (issue 3 follow-up 44).

Where the card's training sites held too few failures of a cause group
(:meth:`~infrabrain.models.cause_coverage.CauseCoverage.untrained`), the model cannot foretell that group, and an
operator who swapped their DCGM health watches for it would lose those alerts. For the groups an incumbent rule
watches (:data:`FALLBACK_RULES`: thermal by the temperature and thermal-violation rules, memory by the single-bit
ECC rate and the XID rule) those rules fire beside the model (:func:`window_rule_alerts` in ``predict`` and the
daemon). The model's risk is unchanged; a node a rule fires on is reported with the rule and the GPU.

Evaluated as its own scorer, ``gnn+rules`` (:func:`with_rule_fallback`): the GNN's score, with the rows a fallback
rule fires on ranked above every other, by the rules' own weights and then by the GNN (score + the fired rules'
weights). The model is blind to the group, so where rules fire their count is the evidence, and the GNN orders
what they leave tied. The GNN's goals are measured without it. There the XID rule reads the event log, as the
incumbents' baseline does; on a live window it reads the XID gauge, which keeps only the last code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from infrabrain.models.baselines import (GPU_METRIC_RULES, RULE_XIDS, SBE_PER_HOUR, TEMP_THRESHOLD_C, gpu_rule_hits,
                                         gpu_rule_metrics, rule_table)

#: The incumbent rules that watch each cause group (names of :data:`~infrabrain.models.baselines.RULE_WEIGHTS`).
#: Network, power and "other" failures have no rule to fall back on.
FALLBACK_RULES: dict[str, tuple[str, ...]] = {"thermal": ("temperature", "thermal_violation"),
                                              "memory": ("sbe_rate", "xid")}
#: How a fallback rule's alert reads (the thresholds the rules fire at: baselines' constants).
RULE_TEXT: dict[str, str] = {"temperature": f"temperature over {TEMP_THRESHOLD_C:g} C",
                             "thermal_violation": "thermal violation",
                             "sbe_rate": f"single-bit ECC errors over {SBE_PER_HOUR:g}/h", "xid": "XID {xid}"}


def fallback_rules(groups: Sequence[str]) -> tuple[str, ...]:
    """The rules that watch any of ``groups`` (in :data:`FALLBACK_RULES`' order, each once)."""
    return tuple(dict.fromkeys(r for g in FALLBACK_RULES if g in groups for r in FALLBACK_RULES[g]))


def coverage_note(coverage: Any) -> str:
    """What ``predict`` and ``make demo`` print before a model's alerts where its card's
    :class:`~infrabrain.models.cause_coverage.CauseCoverage` (None: no claim) lists untrained groups: "note: the
    model's training sites held no thermal failure: it cannot foretell it; the incumbent thermal rules run beside
    it". Empty where the model learned every group it could."""
    from infrabrain.models.cause_coverage import untrained_groups

    untrained = untrained_groups(coverage)
    if not untrained:
        return ""
    watched = [g for g in untrained if fallback_rules([g])]
    return (f"note: {coverage.note(untrained)}"
            + (f"; the incumbent {' and '.join(watched)} rules run beside it" if watched else ""))


def with_rule_fallback(gnn: pd.DataFrame, dataset: Any, groups: Sequence[str]) -> pd.DataFrame:
    """``gnn``'s score table (``site, t, node, score`` in [0, 1], + truth) scored as ``gnn+rules``: a row on which
    rules of :func:`fallback_rules` (``groups``) fire gets their weights added (the incumbents' own score, 1 or
    more: :data:`~infrabrain.models.baselines.RULE_WEIGHTS`), so it ranks above every row none fires on, by the
    rules' own order first and the GNN's within it. Without such a rule, the table as it is."""
    rules = fallback_rules(groups)
    if not rules:
        return gnn
    fired = rule_table(dataset, rules).rename(columns={"score": "rule_score"})
    out = gnn.merge(fired[["site", "t", "node", "rule_score"]], on=["site", "t", "node"], how="left",
                    validate="many_to_one")
    bump = out.pop("rule_score").fillna(0.0).to_numpy(np.float64)  # 0, or the fired rules' weights (1 or more)
    return out.assign(score=out["score"].to_numpy(np.float64) + bump)


def _held(gauge: np.ndarray) -> np.ndarray:
    """A gauge ``[T, n]`` with each missed scrape (NaN) holding the last value seen before it (NaN before the
    first): a gap in the XID gauge is no new XID when the held code shows again after it."""
    steps = np.arange(len(gauge))[:, None]
    last = np.maximum.accumulate(np.where(np.isfinite(gauge), steps, 0), axis=0)
    return np.take_along_axis(gauge, last, axis=0)


def window_rule_alerts(graph: Any, metrics: Mapping[str, np.ndarray], metric_names: Mapping[str, Sequence[str]],
                       groups: Sequence[str], cadence_s: float, window: int) -> dict[int, list[dict[str, Any]]]:
    """Per node position, the alerts of :func:`fallback_rules` (``groups``) over the last ``window`` steps of a raw
    telemetry window: ``{"rule", "group", "gpu", "text"}`` each. The XID rule reads the XID gauge: a step from a
    known code to an XID of :data:`~infrabrain.models.baselines.RULE_XIDS` within the window (a repeat of the last
    XID does not move it; a gap of missed scrapes holds the code before it, and a code seen before any other is
    not known to be new). Nodes no rule fires on are absent."""
    rules = fallback_rules(groups)
    if not rules or "gpu" not in metrics:
        return {}
    columns = gpu_rule_metrics(metric_names.get("gpu", []))
    raw = np.asarray(metrics["gpu"], dtype=np.float64)
    seg = raw[-window:]
    hits = gpu_rule_hits(seg, columns, cadence_s, [r for r in rules if r in GPU_METRIC_RULES])
    xids: dict[int, int] = {}
    if "xid" in rules:
        col = columns["xid"]
        if col is not None:
            x = _held(raw[-window - 1:, :, col])
            prev, cur = x[:-1], x[1:]
            stepped = np.isfinite(prev) & np.isfinite(cur) & (cur != prev) & np.isin(cur, RULE_XIDS)
            for gpu in np.flatnonzero(stepped.any(axis=0)):
                xids[int(gpu)] = int(cur[:, gpu][stepped[:, gpu]][-1])
            hits["xid"] = np.isin(np.arange(seg.shape[1]), list(xids))
    group_of = {r: g for g, rs in FALLBACK_RULES.items() for r in rs}
    gpu_ids = graph.component_ids[graph.kind_index.get("gpu", np.zeros(0, np.int64))]
    node_of = graph.gpu_node()
    out: dict[int, list[dict[str, Any]]] = {}
    for rule in rules:
        for gpu in np.flatnonzero(hits.get(rule, np.zeros(0, bool))):
            node = int(node_of[gpu])
            if node < 0:
                continue
            text = RULE_TEXT[rule].format(xid=xids.get(int(gpu), ""))
            out.setdefault(node, []).append({"rule": rule, "group": group_of[rule], "gpu": str(gpu_ids[gpu]),
                                             "text": f"GPU {gpu_ids[gpu]} {text}"})
    return out


__all__ = ["FALLBACK_RULES", "coverage_note", "fallback_rules", "window_rule_alerts", "with_rule_fallback"]
