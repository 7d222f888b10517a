"""Risk scoring with the predictor's checkpoint (``infrabrain.models``), adapted to the daemon's RiskScorer.

Per node: ``risk`` = the predictor's next-hour failure probability on the latest window, calibrated with the
checkpoint's Platt scaling where its card has one (what ``infrabrain models predict`` reports for the same window;
the raw sigmoid of a class-weighted model is far too high), else the raw sigmoid. A node with no telemetry in
its last 5 minutes, neither from the node nor from any of its GPUs (dead, or not collected), gets no risk: it is
left out, not scored on invented inputs. (A node seen only through its GPUs, as with NVML alone, is scored: the
model masks the missing node metrics.) The card's ``alert_threshold`` (chosen on the validation split at
precision >= 0.5, on calibrated risks) is offered to the daemon as its default alert threshold.

Two levels of explanation:
- for every node (cheap, every minute): the strongest abnormal signal around it: over the node, its GPUs and
  what it hangs on (leaf, PDU, rack, cooling), the (component, metric) whose normalised value (the predictor's
  own normalisation, training statistics) deviates most in the last time bins. Its metric gives the cause
  group (thermal, memory, network, power, gpu, other) exported as ``top_cause``; "none" where even that signal
  is within :data:`ABNORMAL_DEVIATION` of typical. This is an attribution heuristic on the model's inputs, not a
  second model;
- for nodes at or above the alert threshold (at most ``max_explained`` per cycle, highest risk first): the
  predictor's own occlusion explanation (``infrabrain.models.explain.explain_node``), a sentence in raw units for
  the alert log, and its three likeliest root components (as ``predict`` reports them). Such a node's
  ``top_cause``, component and metric are then the sentence's (``cause_source`` "model"): the group it names
  ("likely network"), else the group of the metric it quotes first, and that first quoted component and metric.
  An operator reading the alert and the dashboard sees one cause, not the sentence's and the heuristic's.

Where the card's training held too few failures of a cause group (``models.cause_coverage``), the model cannot
foretell it: the incumbent rules that watch that group (``models.rule_fallback``: thermal by temperature and
thermal violation, memory by single-bit ECC rate and XID) fire beside it, every cycle, on every scored node
(``NodeRisk.rule_alerts``). The risk stays the model's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from infrabrain.client.topology_file import SiteTopology
from infrabrain.logs import get_logger
from infrabrain.models.cause_part import OTHER_PART_OF_METRIC, part_of_metric  # torch-free

if TYPE_CHECKING:
    from infrabrain.client.alert_pictures import AlertPictures
    from infrabrain.models.explain import Explanation

log = get_logger("client.scoring")

#: Steps at the end of the window that the explanation looks at.
EXPLAIN_STEPS = 5
#: How far (in the model's normalised units, training statistics) the strongest signal around a node must be
#: from typical before it is named as the node's cause: below it the node's cause is "none". Around a quiet node
#: the strongest of its ~150 values is about 2 by chance (median 1.8, 90th percentile 2.6 over the held-out node
#: windows of ``bench/alert_cause.py``'s model), which had labelled quiet nodes "thermal" by a GPU's temperature
#: above its siblings' (gpu_temp_above_siblings); every node window at or above the alert threshold there was at 3
#: or more.
ABNORMAL_DEVIATION = 3.0

#: Metric-name substrings -> the cause group the signal heuristic names, in the cause head's groups where it has
#: them (:data:`infrabrain.simulation.faults.CAUSE_GROUP`): a GPU's PCIe replays (its bus, not the network) and a
#: host's EDAC errors (its DIMMs, not the GPUs' memory) are "other", with their part named
#: (:mod:`~infrabrain.models.cause_part`), as an alert's sentence names them.
_CAUSE_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("other", tuple(OTHER_PART_OF_METRIC)),
    ("memory", ("ECC", "REMAP", "ROW_", "MemAvailable")),
    ("network", ("NVLINK", "switch_", "network", "infiniband", "NIC")),
    ("thermal", ("TEMP", "THERMAL", "temp", "cooling_", "airflow")),
    ("power", ("POWER", "pdu_", "power_supply")),
    ("gpu", ("XID", "CLOCK", "UTIL", "FB_")),
)


#: A GPU's hardware XID (NVIDIA's XID catalogue) -> the cause group and part it names. The model reads only
#: whether a hardware XID was raised (:data:`infrabrain.models.features.HARDWARE_XIDS`), so the heuristic's
#: strongest signal says "an XID", and the code in the raw window says which: 48 double-bit ECC, 63 / 64 row
#: remapping recorded / failed, 92 high single-bit ECC rate and 94 / 95 contained / uncontained ECC are the GPU's
#: memory; 79 is a GPU fallen off the bus (whatever made it fall: a thermal shutdown shows as heat first).
XID_CAUSE: dict[int, tuple[str, str]] = {
    48: ("memory", ""), 63: ("memory", ""), 64: ("memory", ""), 92: ("memory", ""), 94: ("memory", ""),
    95: ("memory", ""), 79: ("other", "GPU bus"),
}


def last_code(series: np.ndarray) -> int:
    """The last code an XID gauge's ``series`` held (its last finite positive value); 0 for none."""
    v = np.asarray(series, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return int(v[-1]) if len(v) else 0


def cause_of_metric(metric: str) -> str:
    """Cause group suggested by a metric name (``other`` when none fits)."""
    for cause, patterns in _CAUSE_PATTERNS:
        if any(p in metric for p in patterns):
            return cause
    return "other"


@dataclass(frozen=True)
class RuleAlert:
    """An incumbent rule that fired on one of a node's GPUs, for a cause group the model did not learn."""

    group: str  # the cause group it watches ("thermal", "memory")
    rule: str  # "temperature", "thermal_violation", "sbe_rate", "xid"
    gpu: str  # the GPU's id
    text: str  # "GPU r00-n03-g3 temperature over 85 C"


def rule_alert_rows(risks: Sequence[NodeRisk]) -> list[dict[str, object]]:
    """Every rule alert of ``risks`` as ``/alerts`` and ``client explain`` give it: ``node``, ``rack``, ``risk``
    (None where not finite), ``group``, ``rule``, ``gpu``, ``text``."""
    return [{"node": r.node_id, "rack": r.rack, "risk": float(r.risk) if np.isfinite(r.risk) else None,
             "group": a.group, "rule": a.rule, "gpu": a.gpu, "text": a.text} for r in risks for a in r.rule_alerts]


@dataclass(frozen=True)
class NodeRisk:
    """One node's score and its explanation."""

    node_id: str
    rack: str
    risk: float
    top_cause: str
    component_id: str
    metric: str
    deviation: float
    detail: str = ""  # the model's own explanation sentence, for alerted nodes
    root_causes: tuple[str, ...] = ()  # the model's three likeliest root components, for alerted nodes
    root_reason: str = ""  # why the likeliest is first (models.predict.root_reason), for alerted nodes
    picture: str = ""  # the PNG of its explanation (client.alert_pictures), where the site draws them
    #: where ``top_cause``, ``component_id`` and ``metric`` come from: "signal" (the strongest deviating signal,
    #: every node) or "model" (the predictor's explanation of an at-risk node: what its sentence says)
    cause_source: str = "signal"
    #: where ``top_cause`` is "other", the part of the machine its metric lies in ("GPU bus", "host memory",
    #: "disk": :mod:`~infrabrain.models.cause_part`); "" otherwise
    cause_part: str = ""
    #: the incumbent rules of the cause groups the model did not learn that fired on the node's GPUs this cycle
    rule_alerts: tuple[RuleAlert, ...] = ()

    @property
    def explanation(self) -> str:
        """One line for operators and logs."""
        if self.detail:
            return self.detail
        if not self.metric:
            return "no abnormal signal"
        part = f", the {self.cause_part}" if self.cause_part else ""
        return f"{self.component_id} {self.metric} {self.deviation:+.1f} (normalised) -> {self.top_cause}{part}"


class PredictorScorer:
    """Scores a window with a predictor checkpoint directory (``infrabrain models train`` output)."""

    def __init__(self, checkpoint: str | os.PathLike[str], topology: SiteTopology, max_explained: int = 5,
                 cadence_s: int = 60) -> None:
        import torch

        from infrabrain.models.checkpoint import load_checkpoint
        from infrabrain.models.features import history_steps
        from infrabrain.models.snapshots import graph_from_topology

        self.checkpoint_path = str(checkpoint)
        self.max_explained = int(max_explained)
        self._ckpt = load_checkpoint(checkpoint)
        # the site's collection step (site.yaml cadence_s) must be the model's: its window is counted in steps
        self._ckpt.check_cadence(cadence_s, "site.yaml's cadence_s")
        self.cadence_s = int(cadence_s)
        from infrabrain.models.calibration import PlattCalibrator

        self.calibration = PlattCalibrator.from_card(self._ckpt.card)
        thr = self._ckpt.card.get("alert_threshold") if self.calibration is not None else None
        #: Alert threshold chosen on the validation split (calibrated risk), or None when the card has none.
        self.alert_threshold: float | None = float(thr) if thr is not None else None
        self.pool = int(getattr(self._ckpt.model.config, "pool", 1))
        self._torch = torch
        self.topology = topology
        self.feature_set = self._ckpt.feature_set
        # an hour and five minutes more than the window: the XID state and the code before it (history_steps)
        self.window_steps = history_steps(int(self._ckpt.window))
        self.model_steps = int(self._ckpt.window) + 1
        # the raw columns to collect (derived metrics are computed from them when the window is encoded)
        self.metric_names = {k: list(self.feature_set.raw_metrics_of(k)) for k in self.feature_set.kinds
                             if self.feature_set.metrics_of(k)}
        self.loaded_at = time.time()
        graph = graph_from_topology(topology)
        self._graph = graph
        from infrabrain.models.published_root_prior import deployed_root_prior

        #: Where failures usually start (ranks an alert's root causes): the card's prior (the training sites' or
        #: this site's labels, a fleet release) or, for a card without one, the published mix on this topology.
        self.root_prior, self.root_prior_source = deployed_root_prior(self._ckpt.card, graph)
        from infrabrain.models.own_change_evidence import OwnChangeTails

        #: How far the training sites' components moved over a window (a cooling unit that moved further is a
        #: likelier root); None for a card written before issue 3 follow-up 37, which ranks without them.
        self.own_tails = OwnChangeTails.from_card(self._ckpt.card)
        from infrabrain.models.cause_naming import CauseNamingCheck

        #: How the head's naming of each cause fared on checked rows (the validation split, or the site's held-out
        #: split): an alert says a cause is unsure where its naming failed there, and flags one made too rarely to
        #: tell. None for a card without it (before issue 3 follow-up 38), which names causes as before.
        self.cause_naming = CauseNamingCheck.from_card(self._ckpt.card)
        from infrabrain.models.cause_coverage import CauseCoverage, untrained_groups

        #: The cause groups the card's training held too few failures of (none for a card that does not say:
        #: written before issue 3 follow-up 44, or a federated site's); their incumbent rules fire beside it.
        self.untrained_causes = untrained_groups(CauseCoverage.from_card(self._ckpt.card))
        #: the component kinds the last scored window held no telemetry of (:func:`~infrabrain.models.predict.
        #: unobserved_kinds`): their components counted as down
        self.unobserved_kinds: list[str] = []
        #: per kind with telemetry, the metrics the model reads that the last scored window held no value of
        #: (:func:`~infrabrain.models.predict.unobserved_metrics`): masked as missing
        self.unobserved_metrics: dict[str, list[str]] = {}
        #: per kind, the metrics the card's training data held no value of: masked wherever they are sent, so
        #: never reported missing (:class:`~infrabrain.models.features.Normalizer`)
        self.unlearned_metrics = self._ckpt.normalizer.unlearned_metrics(self.feature_set)
        self._node_ids = topology.ids("node")
        #: global index of each GPU -> its column in the raw window's ``gpu`` block
        self._gpu_local = {int(g): i for i, g in enumerate(self._graph.kind_index.get("gpu", []))}
        self._rack_of = topology.rack_of()
        self._neigh = self._node_neighbourhoods()
        self._own = self._node_components()
        #: the last scored window: its snapshot, raw metrics, node logits and normalised deviations ``[N, F]``
        self._last: tuple[dict, Mapping[str, np.ndarray], np.ndarray, np.ndarray] | None = None

    def _sentence_cause(self, exp: Explanation, r: NodeRisk, dev: np.ndarray) -> dict[str, object]:
        """``top_cause``, ``component_id``, ``metric``, ``deviation``, ``cause_source`` and ``cause_part`` as
        ``exp``'s sentence gives them: the group it names, else the group of its first quoted metric; that component
        and metric, and the metric's normalised deviation in the window's last bins; the part it names, else the
        part of that metric where the group is "other". ``r``'s own (the signal heuristic) where the sentence
        quotes nothing and names no group."""
        quoted = exp.quoted()
        if not quoted and exp.cause_named is None:
            return {}
        first = quoted[0] if quoted else None
        metric = first.metric if first is not None else ""
        cause = exp.cause_named or (cause_of_metric(metric) if metric else r.top_cause)
        part = exp.cause_part or (part_of_metric(metric) if cause == "other" else None) or ""
        if exp.cause_named is None and "XID" in metric and first is not None and first.series is not None:
            cause, part = XID_CAUSE.get(last_code(first.series), (cause, part))
        if first is None:  # a named group and nothing material to quote: no component to point at
            return {"top_cause": cause, "component_id": "", "metric": "", "deviation": 0.0, "cause_source": "model",
                    "cause_part": part}
        names = list(self.feature_set.metrics_of(first.kind))
        deviation = float(dev[first.component, names.index(metric)]) if metric in names else 0.0
        return {"top_cause": cause, "component_id": first.component_id, "metric": metric, "deviation": deviation,
                "cause_source": "model", "cause_part": part}

    def _node_components(self) -> list[np.ndarray]:
        """Per node: global indices of itself and its GPUs (whose telemetry says the node is there)."""
        g = self._graph
        node_pos = {int(gi): i for i, gi in enumerate(g.node_global)}
        own: list[list[int]] = [[int(gi)] for gi in g.node_global]
        for (s, d), t in zip(g.edge_index, g.edge_type, strict=True):
            if t == 0 and int(d) in node_pos:  # gpu_in_node
                own[node_pos[int(d)]].append(int(s))
        return [np.array(o, dtype=np.int64) for o in own]

    def _node_neighbourhoods(self) -> list[np.ndarray]:
        """Per node: global indices of itself, its GPUs and its direct infrastructure (leaf, PDU, rack, cooling)."""
        g = self._graph
        node_pos = {int(gi): i for i, gi in enumerate(g.node_global)}
        members: list[set[int]] = [{int(gi)} for gi in g.node_global]
        for (s, d), _t in zip(g.edge_index, g.edge_type, strict=True):
            s, d = int(s), int(d)
            if s in node_pos:
                members[node_pos[s]].add(d)
            if d in node_pos:
                members[node_pos[d]].add(s)
        cooled = {int(s): int(d) for (s, d), t in zip(g.edge_index, g.edge_type, strict=True) if t == 5}
        for m in members:
            for c in list(m):
                if c in cooled:
                    m.add(cooled[c])
        return [np.array(sorted(m), dtype=np.int64) for m in members]

    def score(self, metrics: Mapping[str, np.ndarray]) -> list[NodeRisk]:
        """Risks for every node from a raw window ``{kind: [window_steps, n, F]}`` in ``metric_names`` order."""
        from infrabrain.models.calibration import risk_of
        from infrabrain.models.predict import unobserved_kinds, unobserved_metrics, without_unlearned
        from infrabrain.models.rule_fallback import window_rule_alerts
        from infrabrain.models.snapshots import collate_snapshots, snapshot_from_window

        torch = self._torch
        self.unobserved_kinds = unobserved_kinds({k: metrics[k] for k in self.metric_names if k in metrics})
        self.unobserved_metrics = without_unlearned(unobserved_metrics(metrics, self.metric_names, self.model_steps),
                                                    self.unlearned_metrics)
        snap = snapshot_from_window(self.topology, metrics, self.metric_names, self.feature_set,
                                    self._ckpt.normalizer, self._ckpt.window, pool=self.pool)
        with torch.no_grad():
            logits = self._ckpt.model(collate_snapshots([snap]))[0].double().numpy()
        risk = risk_of(logits, self.calibration)
        seen = snap["alive"].numpy() > 0  # per component: observed in the last ALIVE_STEPS steps (the model's rule)
        scored = [bool(seen[o].any()) for o in self._own]
        bins = snap["x"].shape[1]
        k = max(1, min(EXPLAIN_STEPS, bins // 6))
        x = snap["x"].numpy()[:, -k:, :]  # [N, k, F] normalised, 0 where unobserved
        mask = snap["mask"].numpy()[:, -k:, :].astype(np.float32)  # observed (fraction) per bin
        cnt = mask.sum(axis=1)
        dev = np.where(cnt > 0, (x * mask).sum(axis=1) / np.maximum(cnt, 1e-6), 0.0)  # [N, F]
        best_f = np.abs(dev).argmax(axis=1)
        best_v = dev[np.arange(len(dev)), best_f]
        kinds = self.feature_set.kinds
        comp_ids = self._graph.component_ids
        comp_kind = self._graph.kind
        fired = window_rule_alerts(self._graph, metrics, self.metric_names, self.untrained_causes, self.cadence_s,
                                   int(self._ckpt.window))
        out = []
        for i, node_id in enumerate(self._node_ids):
            if not scored[i]:
                continue
            neigh = self._neigh[i]
            j = neigh[np.abs(best_v[neigh]).argmax()]
            names = self.feature_set.metrics_of(kinds[comp_kind[j]])
            f = int(best_f[j])
            metric = names[f] if f < len(names) and abs(best_v[j]) >= ABNORMAL_DEVIATION else ""
            cause, part = (cause_of_metric(metric), part_of_metric(metric) or "") if metric else ("none", "")
            if "XID" in metric:
                cause, part = XID_CAUSE.get(self._last_xid(metrics, int(j), metric), (cause, part))
            out.append(NodeRisk(node_id=node_id, rack=self._rack_of.get(node_id, ""), risk=float(risk[i]),
                                top_cause=cause, component_id=str(comp_ids[j]) if metric else "", metric=metric,
                                deviation=float(best_v[j]), cause_part=part,
                                rule_alerts=tuple(RuleAlert(**a) for a in fired.get(i, ()))))
        self._last = (snap, metrics, np.where(scored, logits, np.nan), dev)  # unscored nodes: no sibling evidence
        return out

    def _last_xid(self, metrics: Mapping[str, np.ndarray], component: int, metric: str) -> int:
        """The last XID code GPU ``component`` (a global index) logged in the raw window ``metrics``; 0 where it
        logged none or the window lacks the column."""
        names = list(self.metric_names.get("gpu", []))
        if component not in self._gpu_local or metric not in names or "gpu" not in metrics:
            return 0
        return last_code(np.asarray(metrics["gpu"])[:, self._gpu_local[component], names.index(metric)])

    def explain(self, risks: Sequence[NodeRisk], pictures: AlertPictures | None = None,
                now: float | None = None, draw: Collection[str] | None = None) -> list[NodeRisk]:
        """The predictor's occlusion explanation for ``risks`` (nodes of the last scored window): the sentence,
        the likeliest roots, and the cause, component and metric the sentence gives (``cause_source`` "model").
        With ``pictures`` each explanation is also drawn (``NodeRisk.picture``), stamped ``now``; ``draw`` limits
        that to those node ids (the alerts due now, not those re-explained only to keep their labels).

        Costs a few forward passes per node, so the daemon asks only for nodes at or above its alert threshold,
        at most ``max_explained`` per cycle (highest risk first); the others keep the signal heuristic.
        """
        if self._last is None or not risks:
            return list(risks)
        try:
            from infrabrain.models.explain import explain_node
            from infrabrain.models.predict import root_cause_evidence, root_reason
        except ImportError:
            return list(risks)
        snap, metrics, node_logits, dev = self._last
        pos = {n: i for i, n in enumerate(self._node_ids)}
        ranked = sorted(range(len(risks)), key=lambda i: -risks[i].risk)[: self.max_explained]
        out = list(risks)
        for i in ranked:
            r = risks[i]
            try:
                exp = explain_node(self._ckpt.model, snap, self._graph, self.feature_set, pos[r.node_id],
                                   raw=metrics, raw_names=self.metric_names, cadence_s=self.cadence_s,
                                   prior=self.root_prior,
                                   node_logits=node_logits, own_tails=self.own_tails,
                                   naming=self.cause_naming)
            except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
                log.warning("model explanation failed; keeping the signal heuristic",
                            extra={"node": r.node_id, "error": str(exc)})
                continue
            roots = tuple(str(self._graph.component_ids[c]) for c in exp.ranked_components()[:3])
            why = root_cause_evidence(exp, self._graph, top=3)
            picture = None
            if pictures is not None and (draw is None or r.node_id in draw):
                picture = pictures.draw(r.node_id, exp.quoting(r.risk), exp.quoted(), why,
                                        self.cadence_s, time.time() if now is None else now)
            out[i] = replace(r, detail=exp.quoting(r.risk), root_causes=roots,
                             root_reason=root_reason(why[0]) if why else "",
                             picture=str(picture) if picture is not None else "",
                             **self._sentence_cause(exp, r, dev))
        return out
