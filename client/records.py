"""Typed telemetry records shared by every collector, the local store and the scorer.

Every collector (NVML, Prometheus, Parquet replay) produces a :class:`SampleBatch`: columnar samples
``(t, component_id, kind, metric, value)`` with metric names exactly as the simulator writes them (DCGM exporter
field names for GPUs, node_exporter names for nodes, the documented names for switches, PDUs, cooling and racks;
see ``docs/data-contract.md``). Discrete happenings (XID errors from NVML's event API) are :class:`EventRecord`.

Counters (names ending in ``_TOTAL``/``_total``, XID counts, violation times) are kept raw, cumulative, as the
exporters report them; a counter reset is corrected at read time (:func:`counter_monotone`), never by rewriting
what was stored.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

KINDS: tuple[str, ...] = ("gpu", "node", "leaf", "spine", "pdu", "cooling", "rack")

# Metric names per component kind: the names operators know (DCGM exporter, node_exporter), a superset of what
# the simulator emits (tests/daemon/test_records.py checks that against infrabrain.simulation.telemetry).
BASE_METRICS: dict[str, tuple[str, ...]] = {
    "gpu": (
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "DCGM_FI_DEV_POWER_VIOLATION",
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_XID_ERRORS",
    ),
    "node": (
        "node_hwmon_temp_celsius",
        "node_load1",
        "node_memory_MemAvailable_bytes",
        "node_cpu_utilisation",
        "node_network_receive_errs_total",
        "node_network_transmit_errs_total",
        "node_infiniband_port_errors_received_total",
        "node_disk_io_time_seconds_total",
        "node_edac_correctable_errors_total",
        "node_edac_uncorrectable_errors_total",
        "node_power_supply_online",
        "node_filesystem_avail_bytes",
    ),
    "leaf": ("switch_port_errors_total", "switch_port_util", "switch_latency_us"),
    "spine": ("switch_port_errors_total", "switch_port_util", "switch_latency_us"),
    "pdu": ("pdu_load_kw", "pdu_rating_kw"),
    "cooling": ("cooling_supply_temp_celsius", "cooling_return_temp_celsius", "cooling_airflow_cfm"),
    "rack": ("rack_inlet_temp_celsius",),
}

# Counters that are not recognisable by suffix.
_EXTRA_COUNTERS = {
    "DCGM_FI_DEV_XID_ERRORS_COUNT",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_POWER_VIOLATION",
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
}


@functools.lru_cache(maxsize=None)
def known_metrics(kind: str) -> tuple[str, ...]:
    """Metric names accepted for ``kind`` (a superset of the simulator's ``METRIC_NAMES``; a test keeps it so)."""
    _validate_kind(kind)
    return BASE_METRICS[kind]


def is_counter(metric: str) -> bool:
    """True for cumulative counters (corrected for resets when read back)."""
    return metric.endswith("_TOTAL") or metric.endswith("_total") or metric in _EXTRA_COUNTERS


def _validate_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")


def validate_metric(kind: str, metric: str) -> None:
    """Raise ``ValueError`` naming ``metric`` when it is not a known metric of ``kind``."""
    if metric not in known_metrics(kind):
        raise ValueError(
            f"unknown metric {metric!r} for component kind {kind!r}; known: {', '.join(known_metrics(kind))}"
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of one metric of one component (``value`` NaN = observed missing)."""

    t: int
    component_id: str
    kind: str
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A discrete event: ``event`` is ``xid``, ``throttle``, ... as in the simulator's events table."""

    t: int
    component_id: str
    kind: str
    event: str
    xid: int = -1
    detail: str = ""


@dataclass(slots=True)
class SampleBatch:
    """Columnar samples: parallel lists, cheap to build in a collector and to insert into the store."""

    t: list[int] = field(default_factory=list)
    component_id: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self, t: int, component_id: str, kind: str, metric: str, value: float | None) -> None:
        """Append one sample; ``None`` is stored as NaN (missing)."""
        self.t.append(int(t))
        self.component_id.append(component_id)
        self.kind.append(kind)
        self.metric.append(metric)
        self.value.append(math.nan if value is None else float(value))

    def extend(self, other: SampleBatch) -> None:
        """Append all samples of ``other``."""
        self.t.extend(other.t)
        self.component_id.extend(other.component_id)
        self.kind.extend(other.kind)
        self.metric.extend(other.metric)
        self.value.extend(other.value)

    def __len__(self) -> int:
        return len(self.t)

    def __iter__(self) -> Iterable[Sample]:  # type: ignore[override]
        for row in zip(self.t, self.component_id, self.kind, self.metric, self.value, strict=True):
            yield Sample(*row)

    @classmethod
    def from_wide(
        cls,
        t: Sequence[int] | np.ndarray,
        component_ids: Sequence[str],
        kind: str,
        metric_names: Sequence[str],
        values: np.ndarray,
    ) -> SampleBatch:
        """Flatten a wide frame ``values[row, metric]`` (one row per (t, component)) into samples."""
        values = np.asarray(values, dtype=np.float64)
        n_rows, n_metrics = values.shape
        if len(t) != n_rows or len(component_ids) != n_rows or len(metric_names) != n_metrics:
            raise ValueError(
                f"wide frame shape {values.shape} does not match {len(t)} timestamps, {len(component_ids)} "
                f"component ids and {len(metric_names)} metric names"
            )
        batch = cls()
        t_list = [int(x) for x in t]
        batch.t = [x for x in t_list for _ in range(n_metrics)]
        batch.component_id = [c for c in component_ids for _ in range(n_metrics)]
        batch.kind = [kind] * (n_rows * n_metrics)
        batch.metric = list(metric_names) * n_rows
        batch.value = values.reshape(-1).tolist()
        return batch


@dataclass(slots=True)
class CollectResult:
    """What one collector returns from one pass: samples, events, and the problems it met (not raised)."""

    samples: SampleBatch = field(default_factory=SampleBatch)
    events: list[EventRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class KindWindow:
    """A dense window of one component kind, laid out like the simulator's ``SiteRun.metrics[kind]``."""

    timestamps: np.ndarray  # int64 [T], epoch seconds
    component_ids: list[str]
    metric_names: list[str]
    values: np.ndarray  # float32 [T, n, F], NaN = missing


def counter_monotone(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Undo counter resets along ``axis`` (like Prometheus ``increase``): after a drop, keep adding.

    NaN gaps are carried over (the last finite value is the reference); a drop is treated as a restart from 0,
    so the corrected series is non-decreasing. The input is not modified.
    """
    arr = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0).copy()
    out = arr.copy()
    last = np.full(arr.shape[1:], np.nan)
    offset = np.zeros(arr.shape[1:])
    for i in range(arr.shape[0]):
        cur = arr[i]
        finite = np.isfinite(cur)
        reset = finite & np.isfinite(last) & (cur < last)
        offset = offset + np.where(reset, last, 0.0)
        out[i] = np.where(finite, cur + offset, np.nan)
        last = np.where(finite, cur, last)
    return np.moveaxis(out, 0, axis)
