"""Simulator telemetry for the daemon tests (a small site: 1 rack, 2 nodes, 2 GPUs each)."""

from __future__ import annotations

from typing import Any


def small_spec() -> Any:
    from infrabrain.simulation.spec import SiteSpec

    return SiteSpec(name="lab", rows=1, racks_per_row=1, nodes_per_rack=2, gpus_per_node=2, racks_per_cooling=1,
                    spines=1, pdus_per_rack=1)


def simulate_small_site(hours: float = 2.0, seed: int = 7) -> Any:
    """A real simulator run of the small site."""
    from infrabrain.simulation.engine import simulate_site

    return simulate_site(small_spec(), hours, seed=seed)
