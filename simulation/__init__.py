"""Datacenter simulator: topology, telemetry, faults and cascades, federations, what-if scenarios."""
