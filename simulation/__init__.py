"""Datacenter simulator: topology, telemetry, faults and cascades, federations, what-if scenarios.

The public API (see docs/data-contract.md and docs/simulation.md)::

    from infrabrain.simulation import SiteSpec, build_topology, simulate_site, simulate_federation
    run = simulate_site(SiteSpec(), hours=24, seed=0, acceleration=50)
"""

from infrabrain.simulation.engine import SiteRun, SiteSimulation, simulate_faults, simulate_site
from infrabrain.simulation.faults import CAUSE_GROUP, CAUSE_SHARES, CAUSES, Injection
from infrabrain.simulation.federation import FederationSpec, federation_specs, simulate_federation
from infrabrain.simulation.labels import Labels
from infrabrain.simulation.spec import GPU_MODELS, FaultSpec, SiteSpec, WorkloadSpec, load_site_spec
from infrabrain.simulation.telemetry import METRIC_NAMES
from infrabrain.simulation.topology import EDGE_TYPES, KINDS, Topology, build_topology

__all__ = [
    "CAUSES", "CAUSE_GROUP", "CAUSE_SHARES", "EDGE_TYPES", "GPU_MODELS", "KINDS", "METRIC_NAMES", "FaultSpec",
    "FederationSpec", "Injection", "Labels", "SiteRun", "SiteSimulation", "SiteSpec", "Topology", "WorkloadSpec",
    "build_topology", "federation_specs", "load_site_spec", "simulate_faults", "simulate_federation",
    "simulate_site",
]
