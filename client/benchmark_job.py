"""The daemon's part in encrypted benchmark queries: derive the site's statistics from its local store, ask the
coordinator (``infrabrain.client.benchmark_query.BenchmarkClient``: CKKS-encrypted, signed), log the answers
and export them on ``/metrics``.

What leaves the site is only what :mod:`infrabrain.client.benchmark_query` sends (a public context and one
ciphertext per query); the statistics themselves and the decrypted answers stay here. Statistics come from
:func:`infrabrain.privacy.secure_fleet_stats.site_statistics` applied to the stored window: XID rates from the
XID events (NVML event API), thermal-violation hours from ``DCGM_FI_DEV_THERMAL_VIOLATION``. The daemon does not
observe failures and repairs (those live in the site's ticket system), so ``gpu_failure_rate.*`` and
``repair_time_hours`` are sent as unknown unless the store holds ``failure`` events.

site.yaml::

    benchmark:
      server: vendor.example.com:7443      # the coordinator's query service
      site_id: lab                         # as enrolled by the coordinator
      signing_key: /etc/infrabrain/benchmark-key.pem   # Ed25519 private key (PEM, unencrypted)
      interval_s: 86400                    # one query a day (each answer spends coordinator-side budget)
      window_hours: 168                    # statistics over the last week
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrabrain.client.store import TelemetryStore
from infrabrain.client.topology_file import SiteTopology
from infrabrain.logs import get_logger

log = get_logger("client.benchmark")


class BenchmarkSection(BaseModel):
    """The ``benchmark:`` section of site.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", description="host:port of the query service")
    site_id: str = Field(min_length=1)
    signing_key: Path
    interval_s: float = Field(86400.0, gt=0)
    window_hours: float = Field(168.0, gt=0)
    threshold_pct: float = Field(90.0, ge=0, le=100)
    timeout_s: float = Field(30.0, gt=0)
    first_delay_s: float = Field(60.0, ge=0, description="wait before the first query (let data arrive)")

    @field_validator("signing_key")
    @classmethod
    def _validate_key_file(cls, p: Path) -> Path:
        if not Path(p).is_file():
            raise ValueError(f"signing_key {str(p)!r} does not exist")
        return Path(p)


def store_statistics(store: TelemetryStore, topology: SiteTopology, start: int, end: int,
                     cadence_s: int = 60) -> dict[str, float | None]:
    """The benchmark statistics of the site over ``[start, end)`` from what the store holds."""
    from infrabrain.privacy.secure_fleet_stats import site_statistics

    if end <= start:
        raise ValueError(f"benchmark window [{start}, {end}) is empty")
    events = store.read_events(start, end)
    violation = store.read_window("gpu", start, end, cadence_s, topology.ids("gpu"),
                                  ["DCGM_FI_DEV_THERMAL_VIOLATION"], correct_counters=True)
    run = SimpleNamespace(topology=SimpleNamespace(components=topology.components), events=events,
                          hours=(end - start) / 3600.0, metrics={"gpu": violation.values},
                          metric_names={"gpu": ["DCGM_FI_DEV_THERMAL_VIOLATION"]})
    stats = site_statistics(run)
    if not (events["event"] == "failure").any():
        for key in list(stats):
            if key.startswith("gpu_failure_rate.") or key == "repair_time_hours":
                stats[key] = None  # not observed by the daemon: unknown, not zero
    if not (violation.values == violation.values).any():  # no thermal-violation data at all
        stats["thermal_violation_hours"] = None
    return stats


def _load_identity(section: BenchmarkSection) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from infrabrain.client.benchmark_query import SiteIdentity

    try:
        key = serialization.load_pem_private_key(section.signing_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"benchmark signing_key {str(section.signing_key)!r} is not an unencrypted PEM key: "
                         f"{exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"benchmark signing_key {str(section.signing_key)!r} is not an Ed25519 key")
    return SiteIdentity(section.site_id, key)


class BenchmarkJob:
    """Runs one benchmark query every ``interval_s`` in a background thread; ``stop()`` ends it."""

    def __init__(self, section: BenchmarkSection, store_path: str | os.PathLike[str], topology: SiteTopology,
                 cadence_s: int = 60, on_answers: Callable[[list[Any]], None] | None = None) -> None:
        self.section = section
        self.store_path = Path(store_path)
        self.topology = topology
        self.cadence_s = int(cadence_s)
        self.on_answers = on_answers
        self.identity = _load_identity(section)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_answers: list[Any] = []
        self.last_error = ""

    def run_once(self, now: float | None = None) -> list[Any]:
        """Compute the statistics, ask the coordinator, log and return the answers (raises on failure)."""
        from infrabrain.client.benchmark_query import BenchmarkClient

        end = int(time.time() if now is None else now)
        start = end - int(self.section.window_hours * 3600)
        with TelemetryStore(self.store_path, read_only=True) as store:
            stats = store_statistics(store, self.topology, start, end, self.cadence_s)
        client = BenchmarkClient(self.section.server, self.identity, timeout_s=self.section.timeout_s)
        try:
            answers = client.query(stats, threshold_pct=self.section.threshold_pct)
        finally:
            client.close()
        for a in answers:
            log.info("benchmark answer", extra={"metric": a.metric, "percentile": round(a.percentile, 1),
                                                 "abnormal": a.abnormal, "sentence": a.sentence()})
        self.last_answers = answers
        if self.on_answers is not None:
            self.on_answers(answers)
        return answers

    def _loop(self) -> None:
        if self._stop.wait(self.section.first_delay_s):
            return
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = ""
            except Exception as exc:  # noqa: BLE001 - a coordinator outage must not stop the daemon
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("benchmark query failed; retrying at the next interval",
                          extra={"server": self.section.server, "error": self.last_error})
            self._stop.wait(self.section.interval_s)

    def start(self) -> BenchmarkJob:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._loop, name="infrabrain-benchmark", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (waits for a query in flight up to its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.section.timeout_s + 5)
