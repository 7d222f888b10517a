"""The collector interface and its health bookkeeping.

A collector's ``collect(now)`` returns what it could read; problems it can name without giving up (a field a
GPU does not support, an unknown series) go into ``CollectResult.warnings``; a problem that stops the pass
(Prometheus down, NVML missing) raises :class:`CollectorError`. :func:`run_collector` turns both into
:class:`CollectorHealth` so that one broken source never stops the daemon or the other collectors.

A collector that reads a history (Prometheus, replay) says where its next pass starts with ``position()``; the
daemon stores that position in the same transaction as the batch it follows, and hands it back with ``resume()``
after a restart, so a restarted daemon neither loses the hours it was down nor stores any batch twice.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from infrabrain.client.records import CollectResult
from infrabrain.logs import get_logger

log = get_logger("client.collectors")


class CollectorError(RuntimeError):
    """A collector could not complete a pass; the message says why and what to check."""


@dataclass
class CollectorHealth:
    """Running health of one collector, exported on ``/metrics``."""

    name: str
    up: bool = False
    last_success: float | None = None
    last_error: str = ""
    samples_total: int = 0
    events_total: int = 0
    errors_total: int = 0
    warnings_total: int = 0
    last_duration_s: float = 0.0


class Collector(ABC):
    """One source of telemetry."""

    name: str = "collector"

    @abstractmethod
    def collect(self, now: float) -> CollectResult:
        """Read everything new up to ``now`` (epoch seconds); raise :class:`CollectorError` when impossible."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sockets, NVML handles)."""

    def position(self) -> dict[str, Any] | None:
        """Where the next pass starts, as JSON data; None for a collector that reads only the present (NVML)."""
        return None

    def resume(self, position: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Continue from a stored ``position()``; ``ValueError`` naming why when it belongs to another source."""


def run_collector(collector: Collector, health: CollectorHealth, now: float | None = None) -> CollectResult:
    """Run one pass, never raising: failures are logged once per change and recorded in ``health``."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    try:
        result = collector.collect(now)
    except CollectorError as exc:
        msg = str(exc)
        if msg != health.last_error or health.up:
            log.error("collector failed", extra={"collector": collector.name, "error": msg})
        health.up = False
        health.last_error = msg
        health.errors_total += 1
        health.last_duration_s = time.perf_counter() - t0
        return CollectResult()
    except Exception as exc:  # noqa: BLE001 - a bug in one collector must not stop the others
        msg = f"{type(exc).__name__}: {exc}"
        log.exception("collector crashed", extra={"collector": collector.name})
        health.up = False
        health.last_error = msg
        health.errors_total += 1
        health.last_duration_s = time.perf_counter() - t0
        return CollectResult()
    if not health.up and health.last_error:
        log.info("collector recovered", extra={"collector": collector.name})
    for warning in result.warnings:
        log.warning("collector warning", extra={"collector": collector.name, "warning": warning})
    health.up = True
    health.last_error = ""
    health.last_success = now
    health.samples_total += len(result.samples)
    health.events_total += len(result.events)
    health.warnings_total += len(result.warnings)
    health.last_duration_s = time.perf_counter() - t0
    return result
