"""DCGM-exporter and node_exporter series from a Prometheus server, through its HTTP ``query_range`` API.

A mapping file (YAML, :class:`PrometheusMapping`) says which PromQL query gives which record: the metric name
(a fixed name or the ``{__name__}`` template), the component kind, and a template over the series' labels that
yields the component id (``"{Hostname}-g{gpu}"`` for DCGM, ``"{instance}"`` + a rename table for
node_exporter). Example::

    step_s: 60
    series:
      - {query: '{__name__=~"DCGM_FI_DEV_.*"}', metric: '{__name__}', kind: gpu, component: '{Hostname}-g{gpu}'}
      - {query: node_hwmon_temp_celsius, metric: node_hwmon_temp_celsius, kind: node, component: '{instance}'}
    label_values:
      instance: {'10.0.0.7:9100': r00-n00}

Handling of bad input (documented, tested):
- Prometheus down, refusing, or slower than ``timeout_s``: the pass raises :class:`CollectorError`; the cursor is
  not advanced, so the next pass asks for the same interval again and nothing is lost while Prometheus keeps it
  (a gap longer than ``max_backfill_s`` is skipped with a warning naming it).
- The daemon restarted: the store kept the cursor with the last batch (``position()``), so the first pass
  backfills the hours the daemon was down, within ``max_backfill_s``, instead of only ``initial_lookback_s``.
- A query Prometheus rejects (HTTP 400): that entry is skipped with a warning quoting Prometheus's error.
- A gap in a series: Prometheus returns no point there; nothing is stored, and the window reader shows NaN.
- ``NaN``/``±Inf`` values: stored as missing (NaN), counted in a warning.
- A counter reset: stored raw; corrected when a window is read (``counter_monotone``).
- An unknown metric name (from ``{__name__}``) or a series without the labels its template needs: skipped,
  with one warning per pass naming it. An unknown fixed ``metric`` in the mapping file is a load-time error.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infrabrain.client.collectors.base import Collector, CollectorError
from infrabrain.client.records import CollectResult, SampleBatch, is_counter, known_metrics, validate_metric
from infrabrain.yaml_file import read_yaml_mapping

_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_POINTS_PER_QUERY = 10_000  # Prometheus refuses > 11,000 points per series

#: The GPU fields the model reads that dcgm-exporter's default counters file (etc/default-counters.csv) leaves
#: commented out; ``deploy/dcgm-exporter-counters.csv`` lists them (issue 3 follow-up 47).
DCGM_EXPORTER_DEFAULT_OFF: tuple[str, ...] = (
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_THERMAL_VIOLATION",
    "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL")


def dcgm_counters_hint(missing: Mapping[str, Sequence[str]]) -> str | None:
    """What to do where the GPU fields ``missing`` (per kind, as :func:`~infrabrain.models.predict.
    unobserved_metrics` gives them) include any that dcgm-exporter leaves out by default; None otherwise."""
    off = [m for m in missing.get("gpu", ()) if m in DCGM_EXPORTER_DEFAULT_OFF]
    if not off:
        return None
    return (f"dcgm-exporter's default counters file leaves out {', '.join(off)}: start it with "
            "`dcgm-exporter -f dcgm-exporter-counters.csv` (infrabrain's deploy/ has the file)")


class SeriesMapping(BaseModel):
    """One query and how its series become records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    kind: Literal["gpu", "node", "leaf", "spine", "pdu", "cooling", "rack"]
    component: str = Field(min_length=1)
    aggregate: Literal["max", "sum", "mean", "last"] | None = None

    @model_validator(mode="after")
    def _validate_names(self) -> SeriesMapping:
        if not _TEMPLATE_FIELD.search(self.component):
            raise ValueError(f"component template {self.component!r} uses no label (write e.g. '{{instance}}')")
        if not _TEMPLATE_FIELD.search(self.metric):
            validate_metric(self.kind, self.metric)
        return self


class PrometheusMapping(BaseModel):
    """The mapping file: queries, label renames, step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: int = Field(default=60, ge=1, le=3600)
    series: list[SeriesMapping] = Field(min_length=1)
    label_values: dict[str, dict[str, str]] = Field(default_factory=dict)


def load_mapping(path: str | os.PathLike[str]) -> PrometheusMapping:
    """Read and validate a mapping file; errors name the file and the entry."""
    p = Path(path)
    doc = read_yaml_mapping(p, "Prometheus mapping file")
    try:
        return PrometheusMapping.model_validate(doc)
    except ValueError as exc:
        raise ValueError(f"Prometheus mapping file {str(p)!r}: {exc}") from exc


def default_mapping(instance_to_node: dict[str, str] | None = None, step_s: int = 60) -> PrometheusMapping:
    """DCGM exporter (all ``DCGM_FI_DEV_*``, GPU id ``{Hostname}-g{gpu}``) plus the node_exporter series we use."""
    series = [SeriesMapping(query='{__name__=~"DCGM_FI_DEV_.*"}', metric="{__name__}", kind="gpu",
                            component="{Hostname}-g{gpu}")]
    node_queries = {
        "node_hwmon_temp_celsius": "node_hwmon_temp_celsius",
        "node_load1": "node_load1",
        "node_memory_MemAvailable_bytes": "node_memory_MemAvailable_bytes",
        "node_network_receive_errs_total": "node_network_receive_errs_total",
        "node_network_transmit_errs_total": "node_network_transmit_errs_total",
        "node_infiniband_port_errors_received_total": "node_infiniband_port_errors_received_total",
        "node_disk_io_time_seconds_total": "node_disk_io_time_seconds_total",
        "node_edac_correctable_errors_total": "node_edac_correctable_errors_total",
        "node_edac_uncorrectable_errors_total": "node_edac_uncorrectable_errors_total",
        "node_filesystem_avail_bytes": 'min by (instance) (node_filesystem_avail_bytes{mountpoint="/"})',
    }
    for metric, query in node_queries.items():
        series.append(SeriesMapping(query=query, metric=metric, kind="node", component="{instance}"))
    return PrometheusMapping(step_s=step_s, series=series,
                             label_values={"instance": dict(instance_to_node or {})})


class PrometheusCollector(Collector):
    """Pulls every mapped series since the last successful pass, on the mapping's step grid."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        mapping: PrometheusMapping,
        timeout_s: float = 10.0,
        initial_lookback_s: int = 600,
        max_backfill_s: int = 6 * 3600,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus url {url!r} must start with http:// or https://")
        if timeout_s <= 0:
            raise ValueError(f"Prometheus timeout_s={timeout_s} must be positive")
        self.url = url.rstrip("/")
        self.mapping = mapping
        self.timeout_s = float(timeout_s)
        self.initial_lookback_s = int(initial_lookback_s)
        self.max_backfill_s = int(max_backfill_s)
        self.cursor: int | None = None  # last step fully ingested (epoch s)

    # -- HTTP ------------------------------------------------------------------------------------------------
    def query_range(self, query: str, start: int, end: int, step: int) -> list[dict]:
        """Raw ``data.result`` of one ``/api/v1/query_range`` call.

        Raises :class:`CollectorError` when the server is unreachable, slow or broken, and ``ValueError`` when
        it rejects the query (HTTP 400/422).
        """
        params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": step})
        url = f"{self.url}/api/v1/query_range?{params}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310 - operator's URL
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code in (400, 422):
                raise ValueError(f"Prometheus rejected query {query!r}: {detail}") from exc
            raise CollectorError(f"Prometheus at {self.url} answered HTTP {exc.code}: {detail}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise CollectorError(
                f"Prometheus at {self.url} did not answer within {self.timeout_s:g} s (query {query!r})"
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise CollectorError(
                    f"Prometheus at {self.url} did not answer within {self.timeout_s:g} s (query {query!r})"
                ) from exc
            raise CollectorError(f"Prometheus at {self.url} is unreachable: {exc.reason}") from exc
        except (ConnectionError, OSError) as exc:
            raise CollectorError(f"Prometheus at {self.url} is unreachable: {exc}") from exc
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as exc:
            raise CollectorError(f"Prometheus at {self.url} sent a body that is not JSON: {body[:80]!r}") from exc
        if doc.get("status") != "success" or doc.get("data", {}).get("resultType") != "matrix":
            raise CollectorError(f"Prometheus at {self.url} answered {doc.get('status')!r}: {doc.get('error')}")
        return list(doc["data"]["result"])

    # -- position --------------------------------------------------------------------------------------------
    def position(self) -> dict[str, Any] | None:
        """The last step fully ingested, with the server and step it belongs to (None before the first pass)."""
        if self.cursor is None:
            return None
        return {"url": self.url, "step_s": self.mapping.step_s, "cursor": self.cursor}

    def resume(self, position: dict[str, Any]) -> None:
        """Continue after the stored cursor: the next pass backfills up to ``max_backfill_s`` from there."""
        if position.get("url") != self.url:
            raise ValueError(f"the stored Prometheus cursor is for {position.get('url')!r}, not {self.url!r}")
        if position.get("step_s") != self.mapping.step_s:
            raise ValueError(f"the stored Prometheus cursor is on a {position.get('step_s')!r} s grid, not the "
                             f"mapping's {self.mapping.step_s} s")
        cursor = position.get("cursor")
        if not isinstance(cursor, int) or isinstance(cursor, bool):
            raise ValueError(f"the stored Prometheus cursor {cursor!r} is not an epoch second")
        self.cursor = cursor

    # -- collection --------------------------------------------------------------------------------------------
    def collect(self, now: float) -> CollectResult:
        """Every step in ``(cursor, now]`` for every mapped series; the cursor moves only on full success."""
        step = self.mapping.step_s
        end = int(now) // step * step
        result = CollectResult(samples=SampleBatch())
        if self.cursor is None:
            start = end - self.initial_lookback_s // step * step
        else:
            start = self.cursor + step
            if end - start > self.max_backfill_s:
                skipped_to = end - self.max_backfill_s // step * step
                result.warnings.append(
                    f"gap of {end - start} s since the last successful pass is longer than max_backfill_s="
                    f"{self.max_backfill_s}; steps {start}..{skipped_to - step} are not backfilled"
                )
                start = skipped_to
        if end < start:
            return result
        unknown: dict[str, int] = {}
        missing_label: dict[str, int] = {}
        non_finite = 0
        chunk = MAX_POINTS_PER_QUERY * step
        for entry in self.mapping.series:
            for lo in range(start, end + 1, chunk):
                hi = min(end, lo + chunk - step)
                try:
                    series_list = self.query_range(entry.query, lo, hi, step)
                except ValueError as exc:
                    result.warnings.append(str(exc))
                    break
                non_finite += self._ingest_series(entry, series_list, result.samples, unknown, missing_label)
        for name, n in unknown.items():
            result.warnings.append(f"unknown metric {name!r} ({n} series) from Prometheus: skipped; known metrics "
                                   f"are listed in infrabrain.client.records")
        for what, n in missing_label.items():
            result.warnings.append(f"{n} series skipped: {what}")
        if non_finite:
            result.warnings.append(f"{non_finite} NaN/Inf values from Prometheus stored as missing")
        self.cursor = end
        return result

    def _ingest_series(
        self,
        entry: SeriesMapping,
        series_list: list[dict],
        out: SampleBatch,
        unknown: dict[str, int],
        missing_label: dict[str, int],
    ) -> int:
        renames = self.mapping.label_values
        merged: dict[tuple[int, str, str], list[float]] = {}
        non_finite = 0
        known = set(known_metrics(entry.kind))
        for series in series_list:
            labels = {k: renames.get(k, {}).get(v, v) for k, v in series.get("metric", {}).items()}
            try:
                metric = entry.metric.format_map(labels) if "{" in entry.metric else entry.metric
                component = entry.component.format_map(labels)
            except KeyError as exc:
                key = f"query {entry.query!r} gives series without label {exc.args[0]!r} needed by its templates"
                missing_label[key] = missing_label.get(key, 0) + 1
                continue
            if metric not in known:
                unknown[metric] = unknown.get(metric, 0) + 1
                continue
            for ts, raw in series.get("values", []):
                value = float(raw)
                if not math.isfinite(value):
                    non_finite += 1
                    value = math.nan
                merged.setdefault((int(round(float(ts))), component, metric), []).append(value)
        for (t, component, metric), values in merged.items():
            agg = entry.aggregate or ("sum" if is_counter(metric) else "max")
            out.add(t, component, entry.kind, metric, _aggregate(values, agg))
        return non_finite


def _aggregate(values: list[float], how: str) -> float:
    if len(values) == 1:
        return values[0]
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    if how == "sum":
        return float(sum(finite))
    if how == "mean":
        return float(sum(finite) / len(finite))
    if how == "last":
        return finite[-1]
    return float(max(finite))


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read())
        return str(doc.get("error", doc))
    except Exception:  # noqa: BLE001 - best effort detail for the message
        return exc.reason if isinstance(exc.reason, str) else str(exc)
