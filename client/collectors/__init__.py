"""Telemetry collectors behind one interface (:class:`~infrabrain.client.collectors.base.Collector`).

- :mod:`.nvml`: the local node's GPUs through NVML (pynvml), XID errors through NVML's event API.
- :mod:`.prometheus`: DCGM-exporter / node_exporter series from a Prometheus server via ``query_range``.
- :mod:`.replay`: replay of the simulator's Parquet layout (tests, demos, back-testing).

Each yields :class:`~infrabrain.client.records.SampleBatch` with the simulator's metric names.
"""

from infrabrain.client.collectors.base import Collector, CollectorError, CollectorHealth, run_collector

__all__ = ["Collector", "CollectorError", "CollectorHealth", "run_collector"]
