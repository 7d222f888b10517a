"""Run one site: topology -> fault plan -> workload -> labels -> telemetry (in memory or streamed in chunks).

Random streams are split per stage from ``(seed, site name)``, so the fault plan of `simulate_faults` (the
events-only fast path) is exactly the one `simulate_site` renders, and a what-if run differs from its baseline
only by the injected event and its consequences.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from infrabrain.logs import get_logger
from infrabrain.simulation.faults import FaultPlan, Injection, events_frame, plan_faults
from infrabrain.simulation.labels import Labels, make_labels
from infrabrain.simulation.spec import SiteSpec
from infrabrain.simulation.telemetry import METRIC_NAMES, TelemetryChunk, TelemetryRenderer, iter_chunks
from infrabrain.simulation.topology import Topology, build_topology
from infrabrain.simulation.workload import Workload, schedule

log = get_logger("simulation.engine")
CHUNK_TARGET_BYTES = 8 * 1024 * 1024  # small chunks stay in cache: faster than big ones
#: What the same spec and seed render. Bumped whenever they render different data, and part of every on-disk cache
#: of simulated data (a site's encoded training data) and of a written dataset's manifest, so data simulated by
#: an older simulator is rebuilt, never mixed in. 2: GPUs of a down node log no XID or throttle, the XID gauge
#: reads 0 after a repair, and an XID between two chunks' steps is no longer lost.
SIMULATOR_VERSION = 2


@dataclass
class SiteRun:
    """Everything one simulated site produced; see docs/data-contract.md."""

    spec: SiteSpec
    topology: Topology
    timestamps: np.ndarray
    metrics: dict[str, np.ndarray]
    metric_names: dict[str, list[str]]
    events: pd.DataFrame
    labels: Labels
    seed: int = 0
    acceleration: float = 1.0
    hours: float = 0.0
    jobs: pd.DataFrame | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


def _streams(spec: SiteSpec, seed: int) -> list[np.random.SeedSequence]:
    """Independent seeds for faults, workload, telemetry (same seed + site name -> same streams)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(spec.name.encode())])
    return ss.spawn(3)


def _validate_run_args(hours: float, seed: int) -> None:
    if not isinstance(hours, (int, float)) or not np.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    if hours > 24 * 366:
        raise ValueError(f"hours must be at most one year (8784), got {hours!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def simulate_faults(spec: SiteSpec, hours: float, seed: int = 0, acceleration: float = 1.0,
                    injections: tuple[Injection, ...] = (), topology: Topology | None = None) -> FaultPlan:
    """Events-only fast path: the fault plan of a run without telemetry (millions of GPU-hours per second)."""
    _validate_run_args(hours, seed)
    topo = topology or build_topology(spec)
    ss_f, _, _ = _streams(spec, seed)
    return plan_faults(topo, hours, np.random.default_rng(ss_f), acceleration, injections, injection_seed=seed)


class SiteSimulation:
    """A prepared run whose telemetry can be streamed chunk by chunk (`chunks`) or gathered (`run`)."""

    def __init__(self, spec: SiteSpec, hours: float, seed: int = 0, acceleration: float = 1.0,
                 injections: tuple[Injection, ...] = ()) -> None:
        _validate_run_args(hours, seed)
        self.spec, self.hours, self.seed, self.acceleration = spec, float(hours), int(seed), float(acceleration)
        self.topology = build_topology(spec)
        ss_f, ss_w, self._ss_t = _streams(spec, seed)
        self.plan = plan_faults(self.topology, hours, np.random.default_rng(ss_f), acceleration, injections,
                                injection_seed=seed)
        self.n_steps = max(1, int(round(hours * 3600.0 / spec.cadence_s)))
        self.workload: Workload = schedule(self.topology, self.plan, self.n_steps, spec.cadence_s,
                                           np.random.default_rng(ss_w))
        self.labels = make_labels(self.plan, self.n_steps, spec.cadence_s)
        rows = self.plan._rows + self.workload.job_fail_rows
        self.events = events_frame(self.topology, rows)
        bytes_per_step = 4 * sum(self.topology.count(k) * len(v) for k, v in METRIC_NAMES.items())
        self.default_chunk = int(max(1, min(self.n_steps, CHUNK_TARGET_BYTES // max(1, bytes_per_step))))

    @property
    def samples_per_step(self) -> int:
        return int(sum(self.topology.count(k) * len(v) for k, v in METRIC_NAMES.items()))

    def chunks(self, chunk_steps: int | None = None) -> Iterator[TelemetryChunk]:
        """Stream the telemetry in time order; each call starts from step 0 with the same random draws."""
        steps = int(chunk_steps or self.default_chunk)
        if steps <= 0:
            raise ValueError(f"chunk_steps must be positive, got {chunk_steps!r}")
        rng = np.random.default_rng(self._ss_t)
        renderer = TelemetryRenderer(self.topology, self.plan, self.workload, self.labels, rng, steps)
        return iter_chunks(renderer, self.n_steps, steps)

    def run(self, chunk_steps: int | None = None, progress: bool = False) -> SiteRun:
        """Render every chunk and gather them into one `SiteRun` (needs the whole run in memory)."""
        steps = int(chunk_steps or self.default_chunk)
        need = self.samples_per_step * self.n_steps * 4
        if need > 48 * 1024**3:
            raise ValueError(f"site {self.spec.name!r} for {self.hours}h needs {need / 1024**3:.0f} GiB in memory;"
                             " stream it with SiteSimulation.chunks() or write it with write_federation()")
        metrics = {k: np.empty((self.n_steps, self.topology.count(k), len(v)), dtype=np.float32)
                   for k, v in METRIC_NAMES.items()}
        it = self.chunks(steps)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=-(-self.n_steps // steps), desc=f"simulate {self.spec.name}", unit="chunk")
        for ch in it:
            s1 = ch.step0 + len(ch.timestamps)
            for k, arr in ch.metrics.items():
                metrics[k][ch.step0:s1] = arr
        log.info("simulated site", extra={"site": self.spec.name, "gpus": self.topology.count("gpu"),
                                          "hours": self.hours, "failures": int((self.events["event"] == "failure")
                                                                              .sum())})
        return SiteRun(
            spec=self.spec, topology=self.topology,
            timestamps=np.arange(self.n_steps, dtype=np.int64) * self.spec.cadence_s, metrics=metrics,
            metric_names={k: list(v) for k, v in METRIC_NAMES.items()}, events=self.events, labels=self.labels,
            seed=self.seed, acceleration=self.acceleration, hours=self.hours, jobs=self.workload.jobs,
        )


def simulate_site(spec: SiteSpec, hours: float, seed: int = 0, acceleration: float = 1.0,
                  injections: tuple[Injection, ...] = (), chunk_steps: int | None = None,
                  progress: bool = False) -> SiteRun:
    """Simulate one site for ``hours`` at ``spec.cadence_s``; deterministic from ``seed`` and the spec.

    ``acceleration`` multiplies every fault rate (1 = the calibrated, realistic rate of ~2e-5 interruptions per
    GPU-hour), so that short runs hold enough failures to learn from.
    """
    return SiteSimulation(spec, hours, seed, acceleration, injections).run(chunk_steps, progress)
