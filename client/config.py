"""The site's daemon configuration (``site.yaml``), validated by pydantic; relative paths are relative to it.

Example (every section but ``site``, ``topology`` and one collector is optional)::

    site: lab
    topology: topology.yaml
    cadence_s: 60                 # telemetry grid (the simulator's cadence)
    collect_interval_s: 60
    score_interval_s: 60
    alert_threshold: 0.5          # optional; unset: the model card's validated threshold
    unmonitored_kinds: [pdu, cooling, rack]   # optional: kinds no exporter sends (their absence is not paged)
    store: {path: /var/lib/infrabrain/store.db, retention_days: 14, synchronous: normal}
    metrics: {host: 0.0.0.0, port: 9464}
    model: {checkpoint: /var/lib/infrabrain/model}
    alert_pictures: {dir: alerts, keep: 200}   # optional: a PNG of each alert's explanation, the newest kept
    privacy_ledger: /var/lib/infrabrain/federation/ledger   # for the "privacy budget left" gauge
    collectors:
      nvml: {node_id: r00-n00}
      prometheus: {url: http://127.0.0.1:9090, mapping: prometheus-mapping.yaml, timeout_s: 10}
      replay: {dataset: /data/sim, site: lab, speed: 60}
    federation: {...}             # SupernodeConfig fields (infrabrain.client.supernode)
    benchmark: {...}              # BenchmarkSection fields (infrabrain.client.benchmark_job)
    anomaly: {kind: hdc, fit_minutes: 1440, refit_every_minutes: 1440, threshold: 10, model_path: anomaly.npz}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infrabrain.yaml_file import read_yaml_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Strict):
    """The local time-series store."""

    path: Path = Path("infrabrain-store.db")
    retention_days: float = Field(14.0, gt=0, le=3650)
    synchronous: Literal["normal", "full"] = "normal"


class MetricsConfig(_Strict):
    """Where ``/metrics`` is served (port 0: pick a free one; see the log line)."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


class ModelConfigSection(_Strict):
    """The predictor checkpoint used for scoring (reloaded when the directory changes)."""

    checkpoint: Path | None = None


class AlertPicturesSection(_Strict):
    """Draw each alert's explanation as a PNG in ``dir`` (:mod:`~infrabrain.models.explanation_plot`), keeping
    the newest ``keep``: the metrics the alert's sentence quotes over the window, and why its likeliest roots rank
    where they do. The pictures stay on the site like the telemetry they show."""

    dir: Path
    keep: int = Field(200, ge=1, le=100_000, description="pictures kept; the oldest are deleted first")


class NvmlSection(_Strict):
    """The local node's GPUs through NVML."""

    enabled: bool = True
    node_id: str | None = Field(None, description="this host's node id in the topology (default: hostname)")
    xid_events: bool = True


class PrometheusSection(_Strict):
    """A Prometheus server with DCGM exporter and node_exporter series."""

    url: str
    mapping: Path | None = Field(None, description="mapping file; default: DCGM + node_exporter names")
    timeout_s: float = Field(10.0, gt=0, le=300)
    initial_lookback_s: int = Field(600, ge=0)
    max_backfill_s: int = Field(6 * 3600, ge=0)


class ReplaySection(_Strict):
    """Replay of a simulator dataset."""

    dataset: Path
    site: str | None = None
    speed: float = Field(1.0, gt=0)
    start_epoch: float | None = Field(None, description="wall time of simulated second 0 (default: start time)")


class AnomalySection(_Strict):
    """The label-free anomaly score (``infrabrain_node_anomaly_score``, see ``client/anomaly_job.py``)."""

    kind: Literal["hdc", "neural"] = Field("hdc", description="detector: hdc (cheap, default) or neural")
    fit_minutes: int = Field(1440, ge=30, le=60 * 24 * 90, description="node history (minutes) the scorer fits on")
    min_fit_minutes: int = Field(60, ge=30, description="minutes of history needed before the first fit")
    refit_every_minutes: float = Field(1440.0, ge=0, description="refit after this much new data; 0: never")
    threshold: float = Field(10.0, gt=0, description="score (units of normal spread) at which a node is alerted")
    score_minutes: int = Field(30, ge=5, le=1440, description="trailing minutes read for each scoring cycle")
    model_path: Path | None = Field(None, description="where the fitted scorer is saved and loaded from (.npz)")

    @model_validator(mode="after")
    def _validate_minutes(self) -> AnomalySection:
        if self.min_fit_minutes > self.fit_minutes:
            raise ValueError(f"anomaly.min_fit_minutes={self.min_fit_minutes} exceeds "
                             f"anomaly.fit_minutes={self.fit_minutes}")
        return self


class CollectorsConfig(_Strict):
    """Which collectors run; at least one must be configured."""

    nvml: NvmlSection | None = None
    prometheus: PrometheusSection | None = None
    replay: ReplaySection | None = None

    @model_validator(mode="after")
    def _validate_some(self) -> CollectorsConfig:
        if self.nvml is None and self.prometheus is None and self.replay is None:
            raise ValueError("collectors: configure at least one of nvml, prometheus, replay")
        return self


class SiteConfig(_Strict):
    """The whole ``site.yaml``."""

    site: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    topology: Path
    cadence_s: int = Field(60, ge=1, le=3600)
    collect_interval_s: float = Field(60.0, gt=0, le=3600)
    score_interval_s: float = Field(60.0, gt=0, le=3600)
    retention_interval_s: float = Field(3600.0, gt=0)
    alert_threshold: float | None = Field(
        None, ge=0, le=1, description="risk at which a node is alerted; unset: the model card's threshold (chosen "
        "on the validation split at precision >= 0.5), or DEFAULT_ALERT_THRESHOLD where the card has none")
    torch_threads: int = Field(1, ge=1, le=256, description="CPU threads for scoring (the daemon shares its host)")
    unmonitored_kinds: tuple[str, ...] = Field(
        (), description="component kinds no collector sends telemetry of by design (no exporter for the switches, "
        "PDUs, cooling units or racks): the model counts them as down in every score, as without this, but their "
        "absence is not reported as an exporter gone quiet")
    store: StoreConfig = Field(default_factory=StoreConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    model: ModelConfigSection = Field(default_factory=ModelConfigSection)
    alert_pictures: AlertPicturesSection | None = None
    privacy_ledger: Path | None = None
    collectors: CollectorsConfig
    federation: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None
    anomaly: AnomalySection | None = None

    @model_validator(mode="after")
    def _validate_unmonitored_kinds(self) -> SiteConfig:
        from infrabrain.client.topology_file import KINDS

        unknown = [k for k in self.unmonitored_kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unmonitored_kinds: unknown component kind(s) {unknown}; known: {list(KINDS)}")
        if {"gpu", "node"} & set(self.unmonitored_kinds):
            raise ValueError("unmonitored_kinds: gpu and node cannot be unmonitored (the model scores each node from "
                             "its own and its GPUs' telemetry); list only upstream kinds: leaf, spine, pdu, cooling, "
                             "rack")
        if len(set(self.unmonitored_kinds)) != len(self.unmonitored_kinds):
            raise ValueError(f"unmonitored_kinds names a kind twice: {list(self.unmonitored_kinds)}")
        return self


def _resolve(base: Path, value: Any) -> Any:
    return value if value is None or Path(str(value)).is_absolute() else str(base / str(value))


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate ``site.yaml``; relative paths are made relative to its directory."""
    p = Path(path)
    doc = read_yaml_mapping(p, "site config", "a mapping with at least 'site', 'topology', 'collectors'")
    base = p.resolve().parent
    if "topology" in doc:
        doc["topology"] = _resolve(base, doc["topology"])
    if "privacy_ledger" in doc:
        doc["privacy_ledger"] = _resolve(base, doc["privacy_ledger"])
    for section, key in (("store", "path"), ("model", "checkpoint"), ("anomaly", "model_path"),
                         ("alert_pictures", "dir")):
        if isinstance(doc.get(section), dict) and key in doc[section]:
            doc[section] = {**doc[section], key: _resolve(base, doc[section][key])}
    cols = doc.get("collectors")
    if isinstance(cols, dict):
        cols = dict(cols)
        if isinstance(cols.get("prometheus"), dict) and "mapping" in cols["prometheus"]:
            cols["prometheus"] = {**cols["prometheus"], "mapping": _resolve(base, cols["prometheus"]["mapping"])}
        if isinstance(cols.get("replay"), dict) and "dataset" in cols["replay"]:
            cols["replay"] = {**cols["replay"], "dataset": _resolve(base, cols["replay"]["dataset"])}
        doc["collectors"] = cols
    try:
        return SiteConfig.model_validate(doc)
    except ValueError as exc:
        raise ValueError(f"site config {str(p)!r}: {exc}") from exc
