"""The on-prem daemon: collect on a schedule, keep everything in the local store, score risk every minute,
serve the scores on ``/metrics``, log alerts, and take part in federation / benchmark queries when configured.

Data flows one way: collectors -> store (durable) + window buffer (recent, dense) -> scorer -> gauges and alert
logs. One broken collector never stops the others (its health is exported); no model yet means no risk gauges
(and a log line saying so), not a made-up score. SIGTERM/SIGINT set a stop event: the loop finishes its current
step, stops the SuperNode, checkpoints the store and returns.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from infrabrain.client.collectors.base import Collector, CollectorHealth, run_collector
from infrabrain.client.config import SiteConfig
from infrabrain.client.records import known_metrics
from infrabrain.client.scoring import NodeRisk, rule_alert_rows
from infrabrain.client.store import TelemetryStore
from infrabrain.client.topology_file import KINDS, SiteTopology, load_topology
from infrabrain.client.window_buffer import WindowBuffer, min_filled_steps
from infrabrain.logs import get_logger

log = get_logger("client.daemon")

#: Window kept when no model is loaded yet (steps).
DEFAULT_WINDOW_STEPS = 61
#: A node above the threshold is re-alerted at most this often.
REALERT_S = 3600.0
#: Alert threshold when site.yaml sets none and the model card has none (no calibration, no validation failures).
DEFAULT_ALERT_THRESHOLD = 0.5
#: What the log says of telemetry from components the topology lacks.
UNKNOWN_NOTE = ("telemetry of components the site's topology does not have: stored, not scored (hardware added to "
                "the site but not to the topology file, or a collector that names components otherwise)")
#: ``/alerts`` lists at most this many unknown components (and counts them all).
UNKNOWN_LISTED = 100


@runtime_checkable
class RiskScorer(Protocol):
    """What the daemon needs from a model: the window it reads and per-node risks from it."""

    window_steps: int  # raw steps passed to score() (the model's window plus history for exact encoding)
    model_steps: int  # steps the model's own window covers: scoring waits until half of them are filled
    metric_names: Mapping[str, Sequence[str]]

    def score(self, metrics: Mapping[str, np.ndarray]) -> list[NodeRisk]:
        """Per-node risks from ``{kind: [window_steps, n_kind, F]}`` (columns in ``metric_names`` order)."""


class NodeSeries:
    """The per-node series of one scoring cycle (risk, cause, deviation, rule alerts), replaced whole.

    A gauge cleared and then set node by node can be scraped half-way: a node missing from one scrape resolves
    its Prometheus alert and fires it again a scrape later (a second notification), and a node seen with two
    causes breaks the alerting rule's join. Here a scrape reads one cycle's tuple, never a mix."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._risks: tuple[NodeRisk, ...] = ()

    def replace(self, risks: Sequence[NodeRisk]) -> None:
        """This cycle's risks in place of the last cycle's (one reference swap)."""
        self._risks = tuple(risks)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The four families, from one cycle's risks (prometheus_client's custom-collector protocol)."""
        risks = self._risks
        risk = GaugeMetricFamily("infrabrain_node_failure_risk", "Probability that the node fails within the next hour",
                                 labels=["site", "node", "rack"])
        cause = GaugeMetricFamily("infrabrain_node_top_cause",
                                  "1 for the node's most likely cause (for other, the part of the machine its "
                                  "signal points at) and its signal: what its alert sentence says (source model) "
                                  "for a node at or above the alert threshold, else its strongest abnormal signal "
                                  "(source signal)",
                                  labels=["site", "node", "rack", "cause", "part", "component", "metric",
                                          "source"])
        deviation = GaugeMetricFamily("infrabrain_node_top_signal_deviation",
                                      "Normalised deviation of the node's strongest signal (the metric "
                                      "infrabrain_node_top_cause names, where it is abnormal)",
                                      labels=["site", "node"])
        rule = GaugeMetricFamily("infrabrain_node_rule_alert",
                                 "1 for each incumbent rule (temperature, thermal violation, single-bit ECC rate, "
                                 "XID) firing on one of the node's GPUs, for a cause group the model's training "
                                 "held too few failures of (it cannot foretell those)",
                                 labels=["site", "node", "rack", "group", "rule", "gpu"])
        for r in risks:
            risk.add_metric([self.site, r.node_id, r.rack], r.risk)
            cause.add_metric([self.site, r.node_id, r.rack, r.top_cause, r.cause_part, r.component_id, r.metric,
                              r.cause_source], 1.0)
            deviation.add_metric([self.site, r.node_id], r.deviation)
            for a in r.rule_alerts:
                rule.add_metric([self.site, r.node_id, r.rack, a.group, a.rule, a.gpu], 1.0)
        yield from (risk, cause, deviation, rule)


class NodeAnomalySeries:
    """``infrabrain_node_anomaly_score`` of one cycle, replaced whole, as :class:`NodeSeries` is (the
    ``InfrabrainNodeAnomalous`` rule reads it)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._scores: tuple[tuple[str, float], ...] = ()

    def replace(self, scores: Sequence[Any]) -> None:
        """This cycle's ``NodeAnomaly`` scores in place of the last cycle's (none: the series disappear)."""
        self._scores = tuple((str(a.node_id), float(a.score)) for a in scores)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The family, from one cycle's scores."""
        fam = GaugeMetricFamily("infrabrain_node_anomaly_score",
                                "Label-free anomaly score: distance from normal node behaviour, in units of normal "
                                "spread (about 1 when normal)", labels=["site", "node"])
        for node, score in self._scores:
            fam.add_metric([self.site, node], score)
        yield fam


class DaemonMetrics:
    """The daemon's Prometheus metrics (own registry: nothing of the process leaks in by accident)."""

    def __init__(self, site: str) -> None:
        self.site = site
        r = self.registry = CollectorRegistry()
        self.nodes = NodeSeries(site)
        r.register(self.nodes)
        self.collector_up = Gauge("infrabrain_collector_up", "1 when the collector's last pass succeeded",
                                  ["site", "collector"], registry=r)
        self.collector_last = Gauge("infrabrain_collector_last_success_timestamp_seconds",
                                    "Wall time of the collector's last successful pass", ["site", "collector"],
                                    registry=r)
        self.collector_samples = Counter("infrabrain_collector_samples", "Samples collected",
                                         ["site", "collector"], registry=r)
        self.collector_errors = Counter("infrabrain_collector_errors", "Failed collector passes",
                                        ["site", "collector"], registry=r)
        self.collector_duration = Gauge("infrabrain_collector_duration_seconds", "Duration of the last pass",
                                        ["site", "collector"], registry=r)
        self.stored = Counter("infrabrain_store_samples", "Samples written to the local store", ["site"], registry=r)
        self.store_errors = Counter("infrabrain_store_errors", "Batches the store refused", ["site"], registry=r)
        self.epsilon_left = Gauge("infrabrain_privacy_epsilon_remaining",
                                  "Differential-privacy budget (epsilon) the site has left", ["site"], registry=r)
        self.epsilon_spent = Gauge("infrabrain_privacy_epsilon_spent", "Epsilon spent so far", ["site"], registry=r)
        self.model_loaded = Gauge("infrabrain_model_loaded", "1 when a predictor checkpoint is loaded", ["site"],
                                  registry=r)
        self.untrained_cause = Gauge("infrabrain_model_untrained_cause",
                                     "1 for each cause group the loaded model's training held too few failures of: "
                                     "it cannot foretell them", ["site", "group"], registry=r)
        self.score_duration = Gauge("infrabrain_score_duration_seconds", "Duration of the last scoring cycle",
                                    ["site"], registry=r)
        self.score_time = Gauge("infrabrain_score_timestamp_seconds", "Wall time of the last scoring cycle",
                                ["site"], registry=r)
        self.alerts = Counter("infrabrain_alerts", "Risk alerts raised", ["site", "cause"], registry=r)
        self.alert_threshold = Gauge("infrabrain_alert_threshold", "Risk at which a node is alerted", ["site"],
                                     registry=r)
        self.bench_pct = Gauge("infrabrain_benchmark_percentile",
                               "Where the site stands in the fleet (encrypted benchmark query), 0-100",
                               ["site", "metric"], registry=r)
        self.anomaly = NodeAnomalySeries(site)
        r.register(self.anomaly)
        self.anomaly_threshold = Gauge("infrabrain_anomaly_threshold",
                                       "Anomaly score above which a node is alerted (site.yaml's anomaly.threshold)",
                                       ["site"], registry=r)
        self.bench_abnormal = Gauge("infrabrain_benchmark_abnormal", "1 when the metric is abnormal for the fleet",
                                    ["site", "metric"], registry=r)
        self.unknown_components = Gauge("infrabrain_unknown_components",
                                        "Components the telemetry names that the site's topology does not have "
                                        "(their samples are stored, not scored)", ["site"], registry=r)
        self.metric_observed = Gauge("infrabrain_window_metric_observed",
                                     "1 when the last scored window held a value of this metric the model reads, 0 "
                                     "when it held none (masked as missing in the scores)",
                                     ["site", "kind", "metric"], registry=r)
        self.kind_observed = Gauge("infrabrain_window_kind_observed",
                                   "1 when the last scored window held telemetry of this component kind, 0 when "
                                   "it held none (an exporter gone quiet: its components counted as down)",
                                   ["site", "kind"], registry=r)

    def update_collector(self, health: CollectorHealth, samples: int, failed: bool) -> None:
        """Reflect one collector pass."""
        s, c = self.site, health.name
        self.collector_up.labels(s, c).set(1.0 if health.up else 0.0)
        if health.last_success is not None:
            self.collector_last.labels(s, c).set(health.last_success)
        self.collector_samples.labels(s, c).inc(samples)
        self.collector_errors.labels(s, c).inc(1 if failed else 0)
        self.collector_duration.labels(s, c).set(health.last_duration_s)

    def update_benchmark(self, answers: Sequence[Any]) -> None:
        """Export the latest benchmark answers (percentile and verdict per metric)."""
        for a in answers:
            self.bench_pct.labels(self.site, a.metric).set(a.percentile)
            self.bench_abnormal.labels(self.site, a.metric).set(1.0 if a.abnormal else 0.0)

    def update_anomaly(self, scores: Sequence[Any]) -> None:
        """Replace the anomaly series with this cycle's scores, at once (none: the series disappear)."""
        self.anomaly.replace(scores)

    def update_risks(self, risks: Sequence[NodeRisk]) -> None:
        """Replace the per-node series with this cycle's scores (at once: :class:`NodeSeries`)."""
        self.nodes.replace(risks)


def _replace_series(gauge: Gauge, site: str, exported: set[tuple[str, ...]],
                    values: Mapping[tuple[str, ...], float]) -> set[tuple[str, ...]]:
    """Set ``gauge``'s series ``(site, *labels)`` to ``values``, then remove those of ``exported`` that are not
    among them (a model reloaded without a kind or metric): a scrape in between sees one too many, never one too
    few. Returns the label tuples now exported."""
    for labels, value in values.items():
        gauge.labels(site, *labels).set(value)
    for labels in exported.difference(values):
        gauge.remove(site, *labels)
    return set(values)


def _finite(value: float) -> float | None:
    """``value`` for JSON (None where it is not finite: JSON has no NaN)."""
    return float(value) if np.isfinite(value) else None


def build_collectors(cfg: SiteConfig, topology: SiteTopology, start: float) -> tuple[list[Collector], SiteTopology]:
    """The configured collectors; NVML also refines the local node's GPU layout when it can."""
    collectors: list[Collector] = []
    c = cfg.collectors
    if c.nvml is not None and c.nvml.enabled:
        from infrabrain.client.collectors.nvml import NvmlCollector

        node_id = c.nvml.node_id or socket.gethostname()
        nvml = NvmlCollector(node_id, xid_events=c.nvml.xid_events)
        if node_id not in set(topology.ids("node")):
            log.warning("NVML node_id is not a node of the topology: its GPUs are stored but not scored",
                        extra={"node_id": node_id})
        if nvml.unavailable:
            log.warning("NVML collector unavailable; continuing with the others", extra={"reason": nvml.unavailable})
        else:
            layout = nvml.layout()
            if layout is not None and node_id in set(topology.ids("node")):
                topology = topology.with_gpu_layout(node_id, layout)
        collectors.append(nvml)
    if c.prometheus is not None:
        from infrabrain.client.collectors.prometheus import PrometheusCollector, default_mapping, load_mapping

        mapping = load_mapping(c.prometheus.mapping) if c.prometheus.mapping else default_mapping(step_s=cfg.cadence_s)
        collectors.append(PrometheusCollector(c.prometheus.url, mapping, timeout_s=c.prometheus.timeout_s,
                                              initial_lookback_s=c.prometheus.initial_lookback_s,
                                              max_backfill_s=c.prometheus.max_backfill_s))
    if c.replay is not None:
        from infrabrain.client.collectors.replay import ReplayCollector

        pinned = c.replay.start_epoch is not None
        collectors.append(ReplayCollector(c.replay.dataset, c.replay.start_epoch if pinned else start,
                                          site=c.replay.site, speed=c.replay.speed, start_pinned=pinned))
    return collectors, topology


class Daemon:
    """One site's daemon. ``run(stop)`` loops until ``stop`` is set; the ``*_once`` methods are its steps."""

    def __init__(
        self,
        cfg: SiteConfig,
        scorer: RiskScorer | None = None,
        collectors: list[Collector] | None = None,
        now: float | None = None,
    ) -> None:
        self.cfg = cfg
        start = time.time() if now is None else now
        self.topology = load_topology(cfg.topology)
        if collectors is None:
            collectors, self.topology = build_collectors(cfg, self.topology, start)
        self.collectors = collectors
        self.health = {c.name: CollectorHealth(c.name) for c in collectors}
        self.metrics = DaemonMetrics(cfg.site)
        self.store = TelemetryStore(cfg.store.path, retention_s=int(cfg.store.retention_days * 86400),
                                    synchronous=cfg.store.synchronous)
        self._resume_collectors()
        self._checkpoint_mtime: float | None = None
        self.scorer: RiskScorer | None = scorer if scorer is not None else self._load_model()
        self._export_untrained()
        self.buffer = self._new_buffer()
        self._warm_buffer()
        self._alerted: dict[str, float] = {}
        self._pictures: dict[str, str] = {}  # node -> the picture of its last alert, while it stays at risk
        self._rule_alerted: dict[tuple[str, str, str], float] = {}  # (node, rule, GPU) -> its last log line
        #: what ``/alerts`` serves: the last scoring cycle's nodes at risk (replaced whole, never mutated)
        self._alert_view: dict[str, Any] = {"site": cfg.site, "scored_at": None, "threshold": None, "scored": 0,
                                             "nodes": [], "untrained_causes": [], "rule_alerts": [],
                                             "unobserved_kinds": [], "unobserved_metrics": {}}
        self._unobserved: tuple[str, ...] = ()  # the kinds the last scored window held no telemetry of
        self._kinds_exported: set[tuple[str, ...]] = set()  # the kinds infrabrain_window_kind_observed has
        self._metrics_exported: set[tuple[str, ...]] = set()  # the (kind, metric)s _metric_observed has
        self._missing_metrics: dict[str, list[str]] = {}  # per kind, the metrics the last window held no value of
        self._unknown_of: dict[str, set[str]] = {}  # per collector, the unknown components of its last batch
        self._unknown: frozenset[str] = frozenset()  # their union, as reported (replaced whole, never mutated)
        if cfg.unmonitored_kinds:
            log.info("site.yaml lists component kinds no collector sends: every such component counts as down in "
                     "the scores, and their absence is not reported", extra={"kinds": ", ".join(cfg.unmonitored_kinds)})
        self.pictures: Any = None  # AlertPictures where site.yaml asks for alert_pictures
        if cfg.alert_pictures is not None:
            from infrabrain.client.alert_pictures import AlertPictures

            self.pictures = AlertPictures(cfg.alert_pictures.dir, cfg.alert_pictures.keep)
        self._server: Any = None
        self.metrics_port: int | None = None
        self._supernode: Any = None  # SupernodeSupervisor when federation is configured
        self._benchmark: Any = None
        self.last_risks: list[NodeRisk] = []
        self.anomaly: Any = None
        if cfg.anomaly is not None:
            from infrabrain.client.anomaly_job import AnomalyJob

            self.anomaly = AnomalyJob(cfg.anomaly, self.topology.ids("node"), cfg.cadence_s, site=cfg.site,
                                      torch_threads=cfg.torch_threads)
        self.last_anomalies: list[Any] = []

    # -- model ---------------------------------------------------------------------------------------------
    def _card_mtime(self) -> float | None:
        ckpt = self.cfg.model.checkpoint
        card = Path(ckpt) / "model_card.json" if ckpt else None
        return card.stat().st_mtime if card is not None and card.is_file() else None

    def _load_model(self) -> RiskScorer | None:
        ckpt = self.cfg.model.checkpoint
        if ckpt is None:
            log.warning("no model.checkpoint configured: collecting and storing only, no risk scores")
            return None
        try:
            import torch

            from infrabrain.client.scoring import PredictorScorer

            torch.set_num_threads(self.cfg.torch_threads)
            scorer = PredictorScorer(ckpt, self.topology, cadence_s=self.cfg.cadence_s)
        except (FileNotFoundError, ValueError) as exc:
            kept = getattr(self, "scorer", None) is not None  # a reload: the model loaded before scores on
            log.error("cannot load the predictor checkpoint; " + ("scoring on with the model loaded before" if kept
                                                                   else "no risk scores until it loads"),
                      extra={"checkpoint": str(ckpt), "error": str(exc)})
            self._checkpoint_mtime = self._card_mtime()
            return None
        self._checkpoint_mtime = self._card_mtime()
        untrained = tuple(getattr(scorer, "untrained_causes", ()))
        log.info("predictor loaded", extra={"checkpoint": str(ckpt), "window_steps": scorer.window_steps,
                                            "calibrated": getattr(scorer, "calibration", None) is not None,
                                            "alert_threshold": self._threshold_of(scorer),
                                            "root_prior": getattr(scorer, "root_prior_source", None),
                                            "untrained_causes": ", ".join(untrained)})
        return scorer

    def _export_untrained(self) -> None:
        """``infrabrain_model_untrained_cause``: the loaded model's untrained cause groups, in place of the last
        model's."""
        self.metrics.untrained_cause.clear()
        for group in getattr(self.scorer, "untrained_causes", ()):
            self.metrics.untrained_cause.labels(self.cfg.site, group).set(1.0)

    def _threshold_of(self, scorer: RiskScorer | None) -> float:
        """site.yaml's ``alert_threshold`` if set, else the model card's, else :data:`DEFAULT_ALERT_THRESHOLD`."""
        if self.cfg.alert_threshold is not None:
            return float(self.cfg.alert_threshold)
        card = getattr(scorer, "alert_threshold", None)
        return float(card) if card is not None else DEFAULT_ALERT_THRESHOLD

    @property
    def alert_threshold(self) -> float:
        """The risk at which a node is alerted now (see :meth:`_threshold_of`)."""
        return self._threshold_of(self.scorer)

    def _maybe_reload_model(self) -> None:
        """Reload when the checkpoint directory was replaced (e.g. a new global model after a round)."""
        if self.cfg.model.checkpoint is None:
            return
        mtime = self._card_mtime()
        if mtime is not None and mtime != self._checkpoint_mtime:
            scorer = self._load_model()
            if scorer is not None:
                old_steps = self.buffer.steps
                self.scorer = scorer
                self._export_untrained()
                if scorer.window_steps != old_steps or dict(scorer.metric_names) != self.buffer.metric_names:
                    self.buffer = self._new_buffer()
                    self._warm_buffer()

    def _new_buffer(self) -> WindowBuffer:
        ids = {k: self.topology.ids(k) for k in KINDS}
        if self.scorer is not None:
            names = {k: list(self.scorer.metric_names.get(k, ())) for k in KINDS}
            steps = int(self.scorer.window_steps)
        else:
            names = {k: list(known_metrics(k)) for k in KINDS}
            steps = DEFAULT_WINDOW_STEPS
        return WindowBuffer(ids, names, self.cfg.cadence_s, steps)

    def _resume_collectors(self) -> None:
        """Hand each collector the position the store kept with its last batch (a restart loses nothing)."""
        for collector in self.collectors:
            try:
                position = self.store.read_position(collector.name)
                if position is None:
                    continue
                collector.resume(position)
            except ValueError as exc:
                log.warning("collector starts anew: the store's position for it does not fit",
                            extra={"collector": collector.name, "error": str(exc)})
                continue
            log.info("collector resumes where the store left off",
                     extra={"collector": collector.name, "position": position})

    def _warm_buffer(self) -> None:
        """Refill the window from the store after a restart (so scoring resumes at once)."""
        latest = self.store.latest_t()
        if latest is None:
            return
        n = self.buffer.add(self.store.read_batch(latest - self.buffer.steps * self.cfg.cadence_s + 1, latest + 1))
        log.info("window warmed from the store", extra={"samples": n, "latest_t": latest})

    # -- steps -----------------------------------------------------------------------------------------------
    def collect_once(self, now: float | None = None) -> int:
        """Run every collector once; store and buffer what they got. Returns samples stored."""
        now = time.time() if now is None else now
        total = 0
        for collector in self.collectors:
            health = self.health[collector.name]
            errors_before = health.errors_total
            result = run_collector(collector, health, now)
            self.metrics.update_collector(health, len(result.samples), health.errors_total > errors_before)
            if len(result.samples) == 0 and not result.events:
                continue
            position = collector.position()
            try:
                total += self.store.ingest(result.samples, result.events,
                                           None if position is None else {collector.name: position})
            except Exception as exc:  # noqa: BLE001 - a refused batch must not stop collection
                self.metrics.store_errors.labels(self.cfg.site).inc()
                log.exception("store refused a batch", extra={"collector": collector.name, "error": str(exc)})
                continue
            self.buffer.add(result.samples)
            self._unknown_of[collector.name] = self.buffer.unknown_components
        self.metrics.stored.labels(self.cfg.site).inc(total)
        self._report_unknown(frozenset().union(*self._unknown_of.values()))
        return total

    def _report_unknown(self, unknown: frozenset[str]) -> None:
        """``infrabrain_unknown_components``, and a warning naming the components the topology lacks when new ones
        appear (not per pass; info when there are none left). Each collector counts by its last batch, so one
        that had nothing new this pass neither adds nor clears its own."""
        self.metrics.unknown_components.labels(self.cfg.site).set(len(unknown))
        new = unknown - self._unknown
        if new:
            names = sorted(new)
            log.warning(UNKNOWN_NOTE, extra={"components": ", ".join(names[:20]) + (
                f" and {len(names) - 20} more" if len(names) > 20 else ""), "unknown_components": len(unknown)})
        elif self._unknown and not unknown:
            log.info("every component the telemetry names is in the topology now")
        self._unknown = unknown

    def window_coverage(self) -> dict[str, Any]:
        """What the window now holds of what a model reads, for a check before scoring starts (``client
        collect-once``): ``model`` (whose fields: the loaded checkpoint's, else the federated feature set's),
        ``kinds_missing`` (kinds the topology has that the whole window holds no telemetry of, but for site.yaml's
        ``unmonitored_kinds``, listed as ``kinds_unmonitored``), ``fields_missing`` (per kind with telemetry, the
        fields it holds no value of, but those the model never learned), ``hint`` (what to do where they are
        dcgm-exporter's default omissions, else None) and the unknown components of the last collection."""
        from infrabrain.client.collectors.prometheus import dcgm_counters_hint
        from infrabrain.client.predictor_task import feature_set
        from infrabrain.models.features import STATIC_METRICS
        from infrabrain.models.predict import unobserved_kinds, unobserved_metrics, without_unlearned

        if self.scorer is not None:
            wanted = {k: list(v) for k, v in self.scorer.metric_names.items()}
        else:
            fs = feature_set()
            wanted = {k: [m for m in fs.raw_metrics_of(k) if m not in STATIC_METRICS] for k in fs.kinds}
        held = self.buffer.metric_names  # the model's names, or with none every known metric
        names = {k: [m for m in v if m in held.get(k, ())] for k, v in wanted.items()
                 if k not in self.cfg.unmonitored_kinds and self.topology.ids(k)}
        names = {k: v for k, v in names.items() if v}
        _, win = self.buffer.window()
        window = {k: win[k][:, :, [held[k].index(m) for m in v]] for k, v in names.items()}
        missing = without_unlearned(unobserved_metrics(window, names, self.buffer.steps),
                                    dict(getattr(self.scorer, "unlearned_metrics", {})))
        return {"model": "checkpoint" if self.scorer is not None else "federated feature set",
                "window_steps": self.buffer.steps,
                "kinds_missing": unobserved_kinds(window, steps=self.buffer.steps),
                "kinds_unmonitored": list(self.cfg.unmonitored_kinds),
                "fields_missing": missing, "hint": dcgm_counters_hint(missing),
                "unknown_components": sorted(self._unknown)[:UNKNOWN_LISTED],
                "unknown_component_count": len(self._unknown)}

    def score_once(self, now: float | None = None) -> list[NodeRisk]:
        """Score the newest window, update the gauges, log alerts. Empty when no model is loaded."""
        now = time.time() if now is None else now
        self._maybe_reload_model()
        self._update_privacy()
        site = self.cfg.site
        self.metrics.model_loaded.labels(site).set(1.0 if self.scorer is not None else 0.0)
        self._score_anomaly(now)
        if self.scorer is None or self.buffer.latest_step < 0:
            return []
        steps = int(self.scorer.window_steps)
        own = int(self.scorer.model_steps)
        filled = self.buffer.filled_steps(own)
        if filled < min_filled_steps(own):  # a mostly empty window would give scores of nothing
            log.info("window still filling; not scoring yet", extra={"filled_steps": filled, "model_steps": own})
            return []
        t0 = time.perf_counter()
        _, window = self.buffer.window(steps=steps)
        try:
            risks = self.scorer.score(window)
        except ValueError as exc:
            log.error("scoring failed", extra={"error": str(exc)})
            return []
        self._report_unobserved(tuple(getattr(self.scorer, "unobserved_kinds", ())),
                                dict(getattr(self.scorer, "unobserved_metrics", {})))
        self.metrics.score_duration.labels(site).set(time.perf_counter() - t0)
        self.metrics.score_time.labels(site).set(now)
        risks = self._alert(risks, now)
        self.metrics.update_risks(risks)  # after the explanations: an at-risk node's labels are its sentence's
        self._publish_alerts(risks, now)
        self.last_risks = risks
        return risks

    def _report_unobserved(self, unobserved: tuple[str, ...], missing: dict[str, list[str]]) -> None:
        """``infrabrain_window_kind_observed`` per kind the model reads and ``infrabrain_window_metric_observed``
        per metric, and a log line when the kinds the window held no telemetry of, or the metrics it held no value
        of, change (a warning naming them; info when all are back). A kind or metric the model read before a
        reload and reads no more loses its series (:func:`_replace_series`)."""
        unlearned = getattr(self.scorer, "unlearned_metrics", {})  # masked wherever sent: nothing to report
        names = {k: [m for m in v if m not in unlearned.get(k, ())]
                 for k, v in getattr(self.scorer, "metric_names", {}).items()
                 if k not in self.cfg.unmonitored_kinds}  # a kind no exporter sends by design is not "gone quiet"
        unobserved = tuple(k for k in unobserved if k in names)
        missing = {k: v for k, v in missing.items() if k in names}
        site = self.cfg.site
        self._kinds_exported = _replace_series(self.metrics.kind_observed, site, self._kinds_exported,
                                               {(k,): 0.0 if k in unobserved else 1.0 for k in names})
        self._metrics_exported = _replace_series(
            self.metrics.metric_observed, site, self._metrics_exported,
            {(k, m): 0.0 if k in unobserved or m in missing.get(k, ()) else 1.0 for k in names for m in names[k]})
        if missing != self._missing_metrics:
            from infrabrain.models.predict import UNOBSERVED_METRICS_NOTE, describe_metrics

            if missing:
                from infrabrain.client.collectors.prometheus import dcgm_counters_hint

                hint = dcgm_counters_hint(missing)
                log.warning(UNOBSERVED_METRICS_NOTE, extra={"metrics": describe_metrics(missing),
                                                            **({"hint": hint} if hint else {})})
            else:
                log.info("every metric the model reads is back in the window",
                         extra={"were_missing": describe_metrics(self._missing_metrics)})
            self._missing_metrics = missing
        if unobserved != self._unobserved:
            if unobserved:
                from infrabrain.models.predict import UNOBSERVED_NOTE

                log.warning(UNOBSERVED_NOTE, extra={"kinds": ", ".join(unobserved)})
            else:
                log.info("telemetry of every component kind is back in the window",
                         extra={"were_missing": ", ".join(self._unobserved)})
        self._unobserved = unobserved

    def _publish_alerts(self, risks: Sequence[NodeRisk], now: float) -> None:
        """Replace what ``/alerts`` serves with this cycle's nodes at or above the threshold, riskiest first."""
        from infrabrain.client.daemon_http import picture_url

        threshold = self.alert_threshold
        nodes = [{"node": r.node_id, "rack": r.rack, "risk": _finite(r.risk), "cause": r.top_cause,
                  "cause_source": r.cause_source, "cause_part": r.cause_part or None, "component": r.component_id,
                  "metric": r.metric, "explanation": r.explanation, "root_causes": list(r.root_causes),
                  "root_reason": r.root_reason, "alerted_at": self._alerted.get(r.node_id),
                  "picture": picture_url(self._pictures[r.node_id]) if r.node_id in self._pictures else None}
                 for r in sorted(risks, key=lambda r: -r.risk) if r.risk >= threshold]
        rules = rule_alert_rows(risks)
        self._alert_view = {"site": self.cfg.site, "scored_at": now, "threshold": threshold, "scored": len(risks),
                            "nodes": nodes, "untrained_causes": list(getattr(self.scorer, "untrained_causes", ())),
                            "rule_alerts": rules, "unobserved_kinds": list(self._unobserved),
                            "unobserved_metrics": {k: list(v) for k, v in self._missing_metrics.items()}}

    def alert_view(self) -> dict[str, Any]:
        """What ``/alerts`` serves: ``site``, ``scored_at`` (the last scoring cycle, epoch seconds; None before
        the first), ``threshold``, ``scored`` (nodes with a risk), ``model_loaded`` and ``nodes``: per node at or
        above the threshold, riskiest first, ``node``, ``rack``, ``risk``, ``cause``, ``cause_source``,
        ``cause_part`` (the part of the machine an "other" cause lies in, or None), ``component``, ``metric``,
        ``explanation``, ``root_causes``, ``root_reason``, ``alerted_at`` (its last alert) and ``picture`` (the
        address of its last alert's picture, or None); ``untrained_causes`` (the cause groups the model's training
        held too few failures of) and ``rule_alerts``: per incumbent rule of those groups firing this cycle, whatever
        the node's risk, ``node``, ``rack``, ``risk``, ``group``, ``rule``, ``gpu`` and ``text``; ``unobserved_kinds``:
        the component kinds the scored window held no telemetry of (their components counted as down);
        ``unobserved_metrics``: per kind with telemetry, the metrics the model reads that it held no value of;
        ``unmonitored_kinds`` (site.yaml's: no telemetry expected, their components counted as down, not in
        ``unobserved_kinds``); ``unknown_components`` (at most :data:`UNKNOWN_LISTED`, sorted) and
        ``unknown_component_count``: the components the last collection's telemetry named that the topology does
        not have (not scored)."""
        unknown = self._unknown
        return {**self._alert_view, "model_loaded": self.scorer is not None,
                "unmonitored_kinds": list(self.cfg.unmonitored_kinds),
                "unknown_components": sorted(unknown)[:UNKNOWN_LISTED], "unknown_component_count": len(unknown)}

    def _score_anomaly(self, now: float) -> None:
        """The label-free anomaly score (``anomaly:`` in site.yaml); independent of the predictor."""
        if self.anomaly is None:
            return
        self.metrics.anomaly_threshold.labels(self.cfg.site).set(self.anomaly.section.threshold)
        try:
            self.last_anomalies = self.anomaly.step(self.store, now)
        except ValueError as exc:
            log.error("anomaly scoring failed", extra={"error": str(exc)})
            self.last_anomalies = []
        self.metrics.update_anomaly(self.last_anomalies)

    def _alert(self, risks: Sequence[NodeRisk], now: float) -> list[NodeRisk]:
        """Explain the nodes at or above the threshold (every cycle, so that their labels on ``/metrics`` are
        their sentence's, not the signal heuristic's, between alerts too); log those that crossed it (again at most
        every REALERT_S) with that explanation, drawn where the site draws them. Returns ``risks`` with the
        at-risk nodes explained."""
        threshold = self.alert_threshold
        self.metrics.alert_threshold.labels(self.cfg.site).set(threshold)
        at_risk, due_ids = [], set()
        for r in risks:
            if r.risk < threshold:
                last = self._alerted.pop(r.node_id, None)
                self._pictures.pop(r.node_id, None)
                if last is not None:  # the alert's end, for a log pipeline that pairs it with its start
                    log.info("node no longer at risk", extra={"node": r.node_id, "rack": r.rack,
                                                              "risk": round(r.risk, 4), "threshold": threshold,
                                                              "last_alert": last})
                continue
            at_risk.append(r)
            last = self._alerted.get(r.node_id)
            if last is None or now - last >= REALERT_S:
                due_ids.add(r.node_id)
        explain = getattr(self.scorer, "explain", None)
        explained = {r.node_id: r for r in at_risk}
        if at_risk and callable(explain):
            # the scorer explains at most max_explained nodes: the alerts due first (their log lines quote the
            # sentence), then the others at risk, riskiest first
            ranked = sorted(at_risk, key=lambda r: (r.node_id not in due_ids, -r.risk))
            ranked = ranked[: getattr(self.scorer, "max_explained", len(ranked))]
            done = (explain(ranked, pictures=self.pictures, now=now, draw=due_ids) if self.pictures is not None
                    else explain(ranked))
            explained.update({r.node_id: r for r in done})
        self._log_rule_alerts(risks, now)
        due = [explained[r.node_id] for r in at_risk if r.node_id in due_ids]
        for r in due:
            self._alerted[r.node_id] = now
            if r.picture:
                self._pictures[r.node_id] = r.picture
            self.metrics.alerts.labels(self.cfg.site, r.top_cause).inc()
            log.warning("node at risk of failing within the hour",
                        extra={"node": r.node_id, "rack": r.rack, "risk": round(r.risk, 4), "cause": r.top_cause,
                               "cause_source": r.cause_source, **({"cause_part": r.cause_part} if r.cause_part else {}),
                               "explanation": r.explanation, "root_causes": ", ".join(r.root_causes),
                               "root_reason": r.root_reason, **({"picture": r.picture} if r.picture else {})})
        return [explained.get(r.node_id, r) for r in risks]

    def _log_rule_alerts(self, risks: Sequence[NodeRisk], now: float) -> None:
        """Log each incumbent rule that fires for a cause group the model did not learn (``NodeRisk.rule_alerts``):
        when it starts, again at most every REALERT_S while it keeps firing; forgotten once it stops."""
        firing = {(r.node_id, a.rule, a.gpu): (r, a) for r in risks for a in r.rule_alerts}
        for key in set(self._rule_alerted) - set(firing):
            del self._rule_alerted[key]
        for key, (r, a) in firing.items():
            last = self._rule_alerted.get(key)
            if last is not None and now - last < REALERT_S:
                continue
            self._rule_alerted[key] = now
            log.warning("incumbent rule fired for a cause the model did not learn",
                        extra={"node": r.node_id, "rack": r.rack, "group": a.group, "rule": a.rule, "gpu": a.gpu,
                               "explanation": a.text, "risk": round(r.risk, 4)})

    def _update_privacy(self) -> None:
        path = self.cfg.privacy_ledger
        if path is None:
            return
        try:
            from infrabrain.privacy.ledger import PrivacyLedger

            ledger = PrivacyLedger.load(path)
        except FileNotFoundError:
            return  # no round has run yet
        except ValueError as exc:
            log.error("privacy ledger unreadable", extra={"ledger": str(path), "error": str(exc)})
            return
        self.metrics.epsilon_left.labels(self.cfg.site).set(ledger.epsilon_remaining)
        self.metrics.epsilon_spent.labels(self.cfg.site).set(ledger.epsilon_spent)

    def retention_once(self, now: float | None = None) -> int:
        """Apply the store's retention."""
        return self.store.apply_retention(now)

    # -- services --------------------------------------------------------------------------------------------
    def start_metrics_server(self) -> int:
        """Serve ``/metrics``, ``/alerts`` and the alert pictures (:mod:`~infrabrain.client.daemon_http`);
        returns the bound port."""
        from infrabrain.client.daemon_http import daemon_http_app, serve_daemon_http

        app = daemon_http_app(self.metrics.registry, self.alert_view,
                              self.pictures.folder if self.pictures is not None else None)
        try:
            server = serve_daemon_http(self.cfg.metrics.host, self.cfg.metrics.port, app)
        except OSError as exc:
            raise ValueError(f"metrics: cannot serve on {self.cfg.metrics.host}:{self.cfg.metrics.port} ({exc}); "
                             "pick another metrics.port") from exc
        self._server = server
        self.metrics_port = int(server.server_port)
        log.info("serving /metrics", extra={"host": self.cfg.metrics.host, "port": self.metrics_port,
                                             "also": "/alerts"})
        return self.metrics_port

    def start_federation(self) -> None:
        """Start the site's Flower SuperNode when ``federation:`` is configured (skipped, logged, if absent)."""
        if self.cfg.federation is None:
            return
        try:
            from infrabrain.client.supernode import SupernodeConfig, SupernodeSupervisor
        except ImportError as exc:
            log.warning("federation configured but infrabrain.client.supernode is unavailable; skipped",
                        extra={"error": str(exc)})
            return
        # The supervisor restarts the SuperNode whenever it exits, so the site rejoins the federation by itself.
        self._supernode = SupernodeSupervisor(SupernodeConfig.model_validate(self.cfg.federation)).start()

    def start_benchmark(self) -> None:
        """Start the periodic encrypted benchmark query when ``benchmark:`` is configured."""
        if self.cfg.benchmark is None:
            return
        try:
            from infrabrain.client.benchmark_job import BenchmarkJob, BenchmarkSection
        except ImportError as exc:  # the benchmark-query client (tenseal, grpc) is missing
            log.warning("benchmark configured but its client is unavailable; skipped", extra={"error": str(exc)})
            return
        section = BenchmarkSection.model_validate(self.cfg.benchmark)
        self._benchmark = BenchmarkJob(section, self.store.path, self.topology, self.cfg.cadence_s,
                                       on_answers=self.metrics.update_benchmark).start()

    # -- loop ------------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_cycles: int | None = None) -> None:
        """Collect / score / retain on their intervals until ``stop`` is set (or ``max_cycles`` collections)."""
        self.start_metrics_server()
        self.start_federation()
        self.start_benchmark()
        cfg = self.cfg
        next_collect = next_score = time.time()
        next_retention = time.time() + cfg.retention_interval_s
        cycles = 0
        log.info("daemon running", extra={"site": cfg.site, "collectors": ",".join(self.health),
                                          "metrics_port": self.metrics_port})
        try:
            while not stop.is_set():
                now = time.time()
                if now >= next_collect:
                    self.collect_once(now)
                    cycles += 1
                    next_collect = max(next_collect + cfg.collect_interval_s, now + 0.01)
                if now >= next_score:
                    self.score_once(now)
                    next_score = max(next_score + cfg.score_interval_s, now + 0.01)
                if now >= next_retention:
                    self.retention_once(now)
                    next_retention = now + cfg.retention_interval_s
                if max_cycles is not None and cycles >= max_cycles:
                    break
                stop.wait(max(0.0, min(next_collect, next_score, next_retention) - time.time()))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the services and close collectors and store (idempotent)."""
        if self._supernode is not None:
            self._supernode.stop()
        self._supernode = None
        stop_bench = getattr(self._benchmark, "stop", None)
        if callable(stop_bench):
            stop_bench()
        self._benchmark = None
        for c in self.collectors:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing must reach the store
                log.exception("collector close failed", extra={"collector": c.name})
        self.collectors = []
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if getattr(self, "store", None) is not None:
            self.store.close()
            self.store = None  # type: ignore[assignment]
        log.info("daemon stopped cleanly")
