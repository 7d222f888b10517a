"""Inference on a window of telemetry: per-node next-hour failure risk with explanations.

:func:`predict_window` scores the raw telemetry window of one site (e.g. the daemon's last hour, or a slice of
a dataset loaded with the simulator's ``load_site``). Nodes with no data in the window (dead, or every scrape
missing) get no score (``risk`` None, ``status`` "no data") instead of a made-up one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infrabrain.logs import get_logger
from infrabrain.models.checkpoint import Checkpoint, describe_difference
from infrabrain.models.features import KINDS, FeatureSet, history_steps
from infrabrain.models.gnn import cause_groups_of, risk_and_cause_logits
from infrabrain.models.snapshots import (ALIVE_STEPS, SiteGraph, _get, collate_snapshots, graph_from_topology,
                                         snapshot_from_window)

if TYPE_CHECKING:
    from infrabrain.models.explain import Explanation

log = get_logger("models.predict")
#: What ``predict`` and the daemon log when a component kind has no telemetry in the window.
UNOBSERVED_NOTE = "no telemetry of these component kinds in the window: their components count as down"
#: What ``predict`` and the daemon log when metrics the model reads have no value in the window.
UNOBSERVED_METRICS_NOTE = ("no value of these metrics the model reads in the window: scored as missing where the "
                           "training data held them")


def unobserved_kinds(window: Mapping[str, np.ndarray], steps: int = ALIVE_STEPS) -> list[str]:
    """The component kinds of ``window`` (``{kind: [T, n, F]}``) with no finite value in its last ``steps`` steps
    (:data:`~infrabrain.models.snapshots.ALIVE_STEPS`, what the model's alive rule reads): an exporter gone quiet,
    every component of the kind counted as down, as any component without telemetry is. The caller says so. A
    kind the site has no component of is not counted."""
    return [k for k, v in window.items() if np.asarray(v).size and not np.isfinite(np.asarray(v)[-steps:]).any()]


def unobserved_metrics(window: Mapping[str, np.ndarray], metric_names: Mapping[str, Sequence[str]],
                       steps: int) -> dict[str, list[str]]:
    """Per component kind of ``window`` (``{kind: [T, n, F]}`` in ``metric_names`` order) that has telemetry, the
    metrics with no finite value in its last ``steps`` steps (the model's window): a field an exporter does not
    export, or a collector mapping without it. The model masks them like any missing value; the caller says so. A
    kind with no telemetry at all is :func:`unobserved_kinds`'s to name."""
    out: dict[str, list[str]] = {}
    for kind, names in metric_names.items():
        a = np.asarray(window.get(kind, np.empty((0, 0, 0))))
        if not a.size:
            continue
        seen = np.isfinite(a[-steps:]).any(axis=(0, 1))
        if seen.any() and not seen.all():
            out[kind] = [m for m, s in zip(names, seen, strict=True) if not s]
    return out


def without_unlearned(missing: Mapping[str, Sequence[str]],
                      unlearned: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``missing`` less the metrics the model never learned (its normaliser masks them wherever they are sent,
    :class:`~infrabrain.models.features.Normalizer`): a site that does not send them loses nothing."""
    out = {k: [m for m in v if m not in unlearned.get(k, ())] for k, v in missing.items()}
    return {k: v for k, v in out.items() if v}


def describe_metrics(missing: Mapping[str, Sequence[str]]) -> str:
    """``{"gpu": ["A", "B"], "node": ["C"]}`` as "gpu: A, B; node: C" (for a log line)."""
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in missing.items())


def predict_window(
    ckpt: Checkpoint,
    topology: Any,
    metrics: Mapping[str, np.ndarray],
    metric_names: Mapping[str, Sequence[str]],
    node_alive: np.ndarray | None = None,
    explain_top: int = 5,
    cadence_s: int = 60,
    plot_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Score every node from a raw telemetry window (``[T, n_kind, F_kind]`` per kind, ``T >= window``).

    Returns one dict per node sorted by risk (highest first): ``node_id``, ``risk`` (None when no data),
    ``status``, for a model with a cause head ``cause`` (the likeliest cause group of a failure) and
    ``cause_probabilities`` (every group's), and for the ``explain_top`` riskiest nodes ``explanation`` (a
    sentence), ``contributors`` (by logit drop; a quoted one with its metric's own drop, ``metric_drop``, and the
    further metrics it is quoted by, ``also``) and ``root_causes`` (the three likeliest root components: the
    drops, the card's root prior, or for a card without one the published failure mix on this topology, how
    much the other nodes under each upstream component are at risk too, and, from a card with
    ``own_change_tails``, how far each cooling unit's own telemetry moved) with ``root_cause_evidence`` (why:
    :func:`root_cause_evidence`). With ``plot_dir`` each explained node also gets a picture of its explanation
    there (``plot``: the PNG's path; :mod:`~infrabrain.models.explanation_plot`). Where the card's training held
    too few failures of a cause group (:mod:`~infrabrain.models.cause_coverage`) every scored node has
    ``untrained_causes``, and a node an incumbent rule of such a group fires on has ``rule_alerts``
    (:func:`~infrabrain.models.rule_fallback.window_rule_alerts`); the risk is the model's either way.
    Raises ``ValueError`` for an unknown component type, a missing metric column, a too-short window or telemetry
    at another cadence than the model's (``cadence_s``, seconds per step: :meth:`Checkpoint.check_cadence`). A
    component kind with no observed value in the window's last steps (:func:`unobserved_kinds`) is masked like any
    missing telemetry (its components count as down) and logged as a warning naming it; so is a metric the model
    reads with no value in the model's window while its kind has telemetry (:func:`unobserved_metrics`).
    """
    from infrabrain.models.calibration import PlattCalibrator, risk_of
    from infrabrain.models.cause_coverage import CauseCoverage, untrained_groups
    from infrabrain.models.rule_fallback import window_rule_alerts
    from infrabrain.models.explain import explain_node
    from infrabrain.models.cause_naming import CauseNamingCheck
    from infrabrain.models.own_change_evidence import OwnChangeTails
    from infrabrain.models.published_root_prior import deployed_root_prior

    if explain_top < 0:
        raise ValueError(f"explain_top must be 0 (explain none) or more, got {explain_top}")
    have = FeatureSet(metrics={k: tuple(v) for k, v in metric_names.items() if k in ckpt.feature_set.kinds},
                      kinds=ckpt.feature_set.kinds) if set(metric_names) <= set(ckpt.feature_set.kinds) else None
    if have is None:
        unknown = sorted(set(metric_names) - set(ckpt.feature_set.kinds))
        raise ValueError(f"unknown component type(s) {unknown} in telemetry; the model knows {ckpt.feature_set.kinds}")
    for kind in ckpt.feature_set.kinds:
        missing = [m for m in ckpt.feature_set.raw_metrics_of(kind) if m not in have.metrics_of(kind)]
        if missing:
            raise ValueError(f"missing metric column(s) for kind {kind!r}: {missing} "
                             f"({describe_difference(ckpt.feature_set, have)})")
    ckpt.check_cadence(cadence_s)
    w = ckpt.window
    t = int(np.asarray(next(iter(metrics.values()))).shape[0])
    if t < w:
        raise ValueError(f"telemetry window has {t} steps, the model needs at least {w} ({w * cadence_s // 60} min)")
    lo = max(0, t - history_steps(w))  # counters need one step more, the XID state an hour more
    win = {k: np.asarray(v)[lo:] for k, v in metrics.items()}
    unseen = unobserved_kinds(win)
    if unseen:  # masked as documented, but a whole exporter gone quiet should be seen, not just scored around
        log.warning(UNOBSERVED_NOTE, extra={"kinds": ", ".join(unseen), "window_min": w * cadence_s // 60})
    absent = without_unlearned(unobserved_metrics(win, metric_names, w + 1),
                               ckpt.normalizer.unlearned_metrics(ckpt.feature_set))
    if absent:  # the same for one field: masked, and said
        log.warning(UNOBSERVED_METRICS_NOTE, extra={"metrics": describe_metrics(absent),
                                                    "window_min": w * cadence_s // 60})
    alive = None if node_alive is None else np.asarray(node_alive, bool)[lo:]
    item = snapshot_from_window(topology, win, metric_names, ckpt.feature_set, ckpt.normalizer, w, alive,
                                pool=ckpt.model.config.pool)
    model = ckpt.model.eval()
    groups = cause_groups_of(model)
    with torch.no_grad():
        risk_logits, cause_logits = risk_and_cause_logits(model, collate_snapshots([item]))
    logits = risk_logits[0].double().numpy()
    causes = None if cause_logits is None else torch.softmax(cause_logits[0].double(), dim=-1).numpy()
    graph = graph_from_topology(topology)
    scored = item["label_mask"].numpy() > 0
    cal = PlattCalibrator.from_card(ckpt.card)  # Platt scaling from training, if the checkpoint has one
    prior, _ = deployed_root_prior(ckpt.card, graph)  # the card's, or the published mix on this topology
    own_tails = OwnChangeTails.from_card(ckpt.card)  # how far the training sites' components moved, if recorded
    naming = CauseNamingCheck.from_card(ckpt.card)  # whether the head's naming held up on checked rows, if recorded
    untrained = list(untrained_groups(CauseCoverage.from_card(ckpt.card)))  # from the card's coverage, if recorded
    rule_alerts = window_rule_alerts(graph, win, metric_names, untrained, cadence_s, w)
    risk = risk_of(logits, cal)
    out = []
    for pos, g in enumerate(graph.node_global):
        ok = bool(scored[pos])
        rec = {"node_id": str(graph.component_ids[g]), "node": pos,
               "risk": float(risk[pos]) if ok else None, "status": "ok" if ok else "no data"}
        if ok and causes is not None:
            rec["cause"] = groups[int(np.argmax(causes[pos]))]
            rec["cause_probabilities"] = {grp: float(p) for grp, p in zip(groups, causes[pos])}
        if ok and untrained:
            rec["untrained_causes"] = untrained
        if pos in rule_alerts:
            rec["rule_alerts"] = rule_alerts[pos]
        out.append(rec)
    out.sort(key=lambda r: (r["risk"] is None, -(r["risk"] or 0.0)))  # highest risk first, "no data" last
    node_logits = np.where(scored, logits, np.nan)  # every scored node's logit, for the sibling evidence
    for rank, r in enumerate(out[:explain_top], start=1):
        if r["risk"] is None:
            continue
        e = explain_node(model, item, graph, ckpt.feature_set, r["node"], win, metric_names, cadence_s, prior=prior,
                         node_logits=node_logits, own_tails=own_tails, naming=naming)
        r["explanation"] = e.quoting(r["risk"])
        r["cause_named"] = e.cause_named  # the group the sentence names (the daemon's cause); None: it names none
        r["cause_part"] = e.cause_part  # where that group is "other", the part of the machine it names (or None)
        r["root_causes"] = [str(graph.component_ids[c]) for c in e.ranked_components()[:3]]
        r["root_cause_evidence"] = root_cause_evidence(e, graph)
        r["contributors"] = [{"component_id": c.component_id, "kind": c.kind, "score": c.score, "metric": c.metric,
                              "change": c.change, "metric_drop": c.metric_drop,
                              "also": [{"metric": a.metric, "change": a.change, "metric_drop": a.metric_drop}
                                       for a in c.also]} for c in e.contributors[:5]]
        if plot_dir is not None:
            from infrabrain.models.explanation_plot import file_stem, plot_explanation

            r["plot"] = str(plot_explanation(r["explanation"], e.quoted(),
                                             r["root_cause_evidence"], cadence_s,
                                             Path(plot_dir) / f"alert-{rank:02d}-{file_stem(r['node_id'])}.png"))
    return out


def root_cause_evidence(e: Explanation, graph: SiteGraph, top: int = 3) -> list[dict[str, Any]]:
    """Why each of an explanation's ``top`` likeliest roots is ranked where it is: its ``score`` (the ranking's
    total), the ``parts`` that add up to it (:func:`~infrabrain.models.root_cause_ranking.root_score_parts`) and what
    its own telemetry did (``metric``, ``change``: the metric it stands out on, as the sentence quotes one), and
    ``part``: the part of the machine the alert names where it lies on this root, which is then first whatever its
    score (:func:`~infrabrain.models.explain.quoted_part_component`), else None."""
    from infrabrain.models.root_cause_ranking import ROOT_SCORE_PARTS

    said = {c.component: c for c in e.contributors}
    out = []
    for c in e.ranked_components()[:top]:
        parts = e.root_parts.get(c, {})
        con = said.get(c)
        out.append({"component_id": str(graph.component_ids[c]), "kind": KINDS[int(graph.kind[c])],
                    "score": parts.get("total"),
                    "parts": {k: parts[k] + 0.0 for k in ROOT_SCORE_PARTS if k in parts},  # + 0.0: no "-0.0"
                    "metric": con.metric if con is not None else "", "change": con.change if con is not None else "",
                    "part": e.cause_part if c == e.part_component else None})
    return out


#: How :func:`root_reason` (and :mod:`~infrabrain.models.explanation_plot`) names each part of a root-cause score.
PART_LABELS = {"drop": "drop", "rack_credit": "racks", "prior": "prior", "cause_evidence": "cause",
                "sibling_evidence": "siblings", "explained_away": "explained away", "own_change": "own change"}


def root_reason(entry: Mapping[str, Any]) -> str:
    """One line for an alert saying why a root is ranked where it is, from a :func:`root_cause_evidence` entry:
    ``"crac-1 (cooling) 4.37: supply temperature +6.5 C over 46 min; drop 1.11 + racks 0.42 + prior 0.69 +
    siblings 0.20 + own change 1.96"`` (parts that are 0 left out); where the alert's part lies on it, that comes
    first: ``"r00-n03-g2 (gpu) 1.20: PCIe replays +1453 over 59 min; the GPU bus the alert names; drop 1.10 +
    prior 0.10"``."""
    parts = " + ".join(f"{PART_LABELS[k]} {v:.2f}" for k, v in entry["parts"].items() if round(v, 2) != 0)
    change = f": {entry['change']}" if entry.get("change") else ""
    part = f"the {entry['part']} the alert names; " if entry.get("part") else ""
    return f"{entry['component_id']} ({entry['kind']}) {entry['score']:.2f}{change}; {part}{parts or 'no evidence'}"


def predict_run(ckpt: Checkpoint, run: Any, at_s: int | None = None, explain_top: int = 5,
                plot_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`predict_window` on a ``SiteRun`` for the window ending at ``at_s`` seconds (default: the end)."""
    ts = np.asarray(_get(run, "timestamps"))
    if len(ts) == 0:
        raise ValueError("site run has no time steps")
    if at_s is None:
        end = len(ts) - 1
    else:
        if at_s < ts[0] or at_s > ts[-1]:
            raise ValueError(f"--at {at_s}s is outside the run ({int(ts[0])}..{int(ts[-1])}s)")
        end = int(np.searchsorted(ts, at_s, side="right") - 1)
    metrics = {k: np.asarray(v)[: end + 1] for k, v in _get(run, "metrics").items()}
    # Liveness comes from the telemetry itself (no scrape = dead); ground-truth labels are never read here.
    alive = None
    cad = int(np.median(np.diff(ts))) if len(ts) > 1 else 60
    return predict_window(ckpt, _get(run, "topology"), metrics, _get(run, "metric_names"), alive, explain_top, cad,
                          plot_dir)
