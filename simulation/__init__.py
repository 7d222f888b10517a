"""Datacenter simulator: topology, telemetry, faults and cascades, federations, what-if scenarios.

The public API (see docs/data-contract.md and docs/simulation.md)::

    from infrabrain.simulation import SiteSpec, build_topology, simulate_site, simulate_federation
    run = simulate_site(SiteSpec(), hours=24, seed=0, acceleration=50)
"""

# Lazy exports (PEP 562): `infrabrain --help` and light submodules must not pay for numpy/scipy/pandas imports.
_EXPORTS: dict[str, str] = {
    "SiteRun": "infrabrain.simulation.engine",
    "SiteSimulation": "infrabrain.simulation.engine",
    "simulate_faults": "infrabrain.simulation.engine",
    "simulate_site": "infrabrain.simulation.engine",
    "CAUSE_GROUP": "infrabrain.simulation.faults",
    "CAUSE_SHARES": "infrabrain.simulation.faults",
    "CAUSES": "infrabrain.simulation.faults",
    "Injection": "infrabrain.simulation.faults",
    "FederationSpec": "infrabrain.simulation.federation",
    "federation_specs": "infrabrain.simulation.federation",
    "simulate_federation": "infrabrain.simulation.federation",
    "Labels": "infrabrain.simulation.labels",
    "GPU_MODELS": "infrabrain.simulation.spec",
    "FaultSpec": "infrabrain.simulation.spec",
    "SiteSpec": "infrabrain.simulation.spec",
    "WorkloadSpec": "infrabrain.simulation.spec",
    "load_site_spec": "infrabrain.simulation.spec",
    "METRIC_NAMES": "infrabrain.simulation.telemetry",
    "EDGE_TYPES": "infrabrain.simulation.topology",
    "KINDS": "infrabrain.simulation.topology",
    "Topology": "infrabrain.simulation.topology",
    "build_topology": "infrabrain.simulation.topology",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'infrabrain.simulation' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CAUSES", "CAUSE_GROUP", "CAUSE_SHARES", "EDGE_TYPES", "GPU_MODELS", "KINDS", "METRIC_NAMES", "FaultSpec",
    "FederationSpec", "Injection", "Labels", "SiteRun", "SiteSimulation", "SiteSpec", "Topology", "WorkloadSpec",
    "build_topology", "federation_specs", "load_site_spec", "simulate_faults", "simulate_federation",
    "simulate_site",
]
