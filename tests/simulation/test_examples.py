"""The example YAML files in simulation/examples/ load and validate (they are documentation that must work)."""

from __future__ import annotations

from pathlib import Path

import infrabrain.simulation as sim_pkg
from infrabrain.simulation.federation import load_federation_spec
from infrabrain.simulation.spec import load_site_spec
from infrabrain.simulation.whatif import load_scenario

EXAMPLES = Path(sim_pkg.__file__).parent / "examples"


def test_examples_load() -> None:
    site = load_site_spec(EXAMPLES / "site.yaml")
    assert site.n_gpus == 512 and site.workload.profile == "inference"
    sc = load_scenario(EXAMPLES / "scenario.yaml")
    assert [i.component_id for i in sc.injections()] == ["crac-2", "leaf-r05"]
    assert sc.injections()[0].at_s == 3 * 3600.0
    fed = load_federation_spec(EXAMPLES / "federation.yaml")
    assert [s.name for s in fed.sites] == ["north", "south", "mixed"]
