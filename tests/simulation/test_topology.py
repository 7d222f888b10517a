"""The site graph: counts, ids, typed edges, and a >10,000-GPU site built quickly."""

from __future__ import annotations

import time

import numpy as np

from infrabrain.simulation.spec import SiteSpec
from infrabrain.simulation.topology import EDGE_TYPES, KINDS, build_topology


def test_small_topology_shape() -> None:
    spec = SiteSpec(rows=2, racks_per_row=3, nodes_per_rack=2, racks_per_cooling=2, gpu_mix={"A100": 1, "H100": 1})
    t = build_topology(spec)
    assert [t.count(k) for k in KINDS] == [96, 12, 6, 2, 12, 3, 6]
    assert len(t.components) == sum(t.count(k) for k in KINDS)
    for k in KINDS:
        assert (t.components["kind"].to_numpy()[t.kind_index[k]] == k).all()
    assert t.ids["gpu"][9] == "r00-n01-g1" and t.ids["cooling"][1] == "crac-2" and t.ids["pdu"][1] == "pdu-r00-b"
    assert set(t.components["gpu_model"][t.kind_index["gpu"]]) == {"A100", "H100"}
    # every GPU has exactly one gpu_in_node edge, to the node that node_of_gpu names
    e = t.edges[t.edge_type == EDGE_TYPES.index("gpu_in_node")]
    assert len(e) == 96 and (e[:, 1] == t.kind_index["node"][t.node_of_gpu[e[:, 0] - t.kind_index["gpu"][0]]]).all()
    cooled = t.edges[t.edge_type == EDGE_TYPES.index("rack_cooled_by")]
    assert (cooled[:, 1] == t.kind_index["cooling"][t.cooling_of_rack]).all()
    spine = t.edges[t.edge_type == EDGE_TYPES.index("leaf_to_spine")]
    assert len(spine) == 6 * 2
    assert t.find("crac-2") == ("cooling", 1)


def test_ten_thousand_gpus_builds_fast() -> None:
    spec = SiteSpec(rows=10, racks_per_row=32, nodes_per_rack=4)
    t0 = time.perf_counter()
    t = build_topology(spec)
    assert time.perf_counter() - t0 < 5.0
    assert t.count("gpu") == 10240
    assert np.unique(t.components["component_id"]).size == len(t.components)
