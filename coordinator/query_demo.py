"""End-to-end benchmark query on loopback, for ``make demo`` and ``infrabrain benchmark`` without a server.

Simulates a fleet, has every site contribute to the secure, DP-noised fleet reference, starts the real gRPC
coordinator in this process (workers in child processes), lets one site register and ask one encrypted query,
and returns what that site reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infrabrain.logs import get_logger

log = get_logger("coordinator.query_demo")


@dataclass
class DemoResult:
    """What the demo produced: the site's answers (decrypted on site) and the fleet reference's terms."""

    sentences: list[str]
    answers: list[dict[str, Any]]
    n_sites: int
    epsilon: float
    reference_version: str


def fleet_statistics(n_sites: int = 48, hours: float = 720.0, seed: int = 0, runs: Sequence[Any] | None = None,
                     progress: bool = False) -> list[dict[str, float | None]]:
    """Per-site statistics from simulated runs (events-only fast path unless ``runs`` are given)."""
    from infrabrain.privacy.secure_fleet_stats import site_statistics

    if runs is None:
        from infrabrain.simulation.engine import simulate_faults
        from infrabrain.simulation.federation import federation_specs

        specs = federation_specs(n_sites, seed=seed)
        it = specs
        if progress:
            from tqdm import tqdm

            it = tqdm(specs, desc="simulate fleet", unit="site")
        runs = [simulate_faults(s, hours, seed=seed) for s in it]
    return [site_statistics(r) for r in runs]


def build_reference(stats: Sequence[Mapping[str, float | None]], epsilon: float = 4.0, seed: int | None = None):
    """Secure-aggregate the sites' DP-noised histograms into a ``FleetReference``."""
    from infrabrain.coordinator.query_reference import FleetReference
    from infrabrain.privacy.secure_fleet_stats import FleetStatsConfig, build_fleet_aggregate

    return FleetReference(build_fleet_aggregate(stats, FleetStatsConfig(epsilon=epsilon), seed=seed))


def run_demo(metric: str | None = "gpu_failure_rate", n_sites: int = 48, hours: float = 720.0, seed: int = 0,
             site_index: int = 0, runs: Sequence[Any] | None = None, epsilon: float = 4.0,
             progress: bool = False) -> DemoResult:
    """Simulate, aggregate, serve on loopback, ask one encrypted query for site ``site_index``; stop everything."""
    from infrabrain.client.benchmark_query import BenchmarkClient, SiteIdentity
    from infrabrain.coordinator.query_guard import SiteKeys
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    stats = fleet_statistics(n_sites, hours, seed, runs, progress)
    if not 0 <= site_index < len(stats):
        raise ValueError(f"site_index {site_index} is outside 0..{len(stats) - 1}")
    reference = build_reference(stats, epsilon=epsilon, seed=seed)
    ident = SiteIdentity.generate(f"site-{site_index}")
    handle = start_server(reference, SiteKeys({ident.site_id: ident.public_raw}), QueryServerConfig(workers=1))
    try:
        client = BenchmarkClient(handle.address, ident)
        try:
            client.register()
            answers = client.query(stats[site_index])
        finally:
            client.close()
    finally:
        handle.stop()
    chosen = [a for a in answers if metric is None or a.family == metric or a.metric == metric]
    if metric is not None and not chosen:
        raise ValueError(f"metric {metric!r}: site {site_index} has no value for it, or the fleet reference has "
                         "too few sites for it")
    return DemoResult(sentences=[a.sentence() for a in chosen], answers=[a.as_dict() for a in chosen],
                      n_sites=reference.aggregate.n_sites, epsilon=reference.aggregate.epsilon,
                      reference_version=reference.version)


def demo_sentence(metric: str = "gpu_failure_rate", n_sites: int = 48, hours: float = 720.0, seed: int = 0) -> str:
    """The one-liner ``make demo`` prints: e.g. "Your H100 failure rate ... percentile of 48 sites ...: normal"."""
    return "\n".join(run_demo(metric, n_sites, hours, seed).sentences)
