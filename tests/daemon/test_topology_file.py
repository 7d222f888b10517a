"""Topology YAML: a valid site lays out like the simulator; bad files get errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrabrain.client.topology_file import EDGE_TYPES, GpuInfo, GpuLayout, load_topology

GOOD = """
site: lab
racks:
  - id: r00
    row: 0
    cooling: crac-0
    leaf: leaf-r00
    pdu: pdu-r00-a
    nodes:
      - {id: r00-n00, gpus: 2, gpu_model: H100}
      - {id: r00-n01, gpus: 2, gpu_model: H100, pdu: pdu-r00-b}
  - id: r01
    row: 0
    cooling: crac-0
    leaf: leaf-r00
    pdu: pdu-r00-a
    nodes:
      - {id: r01-n00, gpus: 1}
switches:
  - {id: leaf-r00, kind: leaf, uplinks: [spine-0]}
  - {id: spine-0, kind: spine}
pdus:
  - {id: pdu-r00-a, rating_kw: 17.3}
  - {id: pdu-r00-b}
cooling:
  - {id: crac-0}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "topology.yaml"
    p.write_text(text)
    return p


def test_good_topology_lays_out_like_the_simulator(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, GOOD))
    assert topo.ids("node") == ["r00-n00", "r00-n01", "r01-n00"]
    assert topo.ids("gpu") == ["r00-n00-g0", "r00-n00-g1", "r00-n01-g0", "r00-n01-g1", "r01-n00-g0"]
    assert topo.node_of()["r00-n01-g1"] == "r00-n01"
    assert topo.rack_of()["r01-n00-g0"] == "r01"
    comp = topo.components["component_id"].tolist()
    on_pdu = {comp[s]: comp[d] for (s, d), t in zip(topo.edges, topo.edge_type) if EDGE_TYPES[t] == "node_on_pdu"}
    assert on_pdu == {"r00-n00": "pdu-r00-a", "r00-n01": "pdu-r00-b", "r01-n00": "pdu-r00-a"}
    assert list(topo.components.columns) == ["component_id", "kind", "rack", "row", "gpu_model"]


def test_gpu_layout_from_nvml_replaces_the_count(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, GOOD))
    layout = GpuLayout(gpus=[GpuInfo(i, f"GPU-{i}", f"0000:0{i}:00.0", "NVIDIA H100") for i in range(4)],
                       nvlinks=[(0, 1, 0), (2, 3, 0)])
    t2 = topo.with_gpu_layout("r01-n00", layout)
    assert [g for g in t2.ids("gpu") if g.startswith("r01-n00")] == [f"r01-n00-g{i}" for i in range(4)]
    assert t2.nvlinks.shape == (2, 2)
    assert t2.components["component_id"][t2.nvlinks[0]].tolist() == ["r01-n00-g0", "r01-n00-g1"]
    with pytest.raises(ValueError, match="'r09-n00'.*not in the topology"):
        topo.with_gpu_layout("r09-n00", layout)


def test_node_named_twice_is_refused(tmp_path: Path) -> None:
    bad = GOOD.replace("- {id: r01-n00, gpus: 1}", "- {id: r00-n01, gpus: 1}")
    with pytest.raises(ValueError, match=r"node 'r00-n01' is named twice \(in rack 'r00' and in rack 'r01'\)"):
        load_topology(_write(tmp_path, bad))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("pdu: pdu-r00-b}", "pdu: pdu-zz}", "'pdu-zz', which is not listed under 'pdus'"),
        ("uplinks: [spine-0]", "uplinks: [spine-9]", "uplink 'spine-9'"),
        ("cooling: crac-0\n    leaf", "cooling: crac-7\n    leaf", "'crac-7', which is not listed under 'cooling'"),
        ("gpus: 2, gpu_model: H100}", "gpus: -1}", "gpus"),
        ("site: lab", "site: lab\nextra_key: 1", "extra_key"),
        ("- {id: crac-0}", "- {id: crac-0}\n  - {id: r00}", "component id 'r00' is used twice"),
    ],
)
def test_bad_references_name_the_entry(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ValueError, match=message):
        load_topology(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid YAML"):
        load_topology(_write(tmp_path, "site: [unclosed"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_topology(tmp_path / "nope.yaml")


def test_layout_is_kind_by_kind_and_readable_by_the_predictor(tmp_path: Path) -> None:
    from infrabrain.models.snapshots import graph_from_topology

    topo = load_topology(_write(tmp_path, GOOD))
    kinds = topo.components["kind"].tolist()
    assert kinds == sorted(kinds, key=["gpu", "node", "leaf", "spine", "pdu", "cooling", "rack"].index)
    graph = graph_from_topology(topo)
    assert graph.n == len(topo.components) and len(graph.node_global) == 3
