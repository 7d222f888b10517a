"""Shared small runs for the simulator tests (module-scoped: simulated once, reused)."""

from __future__ import annotations

import pytest

from infrabrain.simulation import SiteSpec, simulate_site


@pytest.fixture(scope="session")
def small_spec() -> SiteSpec:
    return SiteSpec(name="t0", rows=2, racks_per_row=4, nodes_per_rack=4, racks_per_cooling=2)


@pytest.fixture(scope="session")
def small_run(small_spec):
    """8 racks x 4 nodes x 8 GPUs, 24 h at acceleration 60: a few dozen failures of several causes."""
    return simulate_site(small_spec, hours=24, seed=7, acceleration=60)
