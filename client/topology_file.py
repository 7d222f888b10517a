"""The site's physical topology from a YAML file (racks, switches, PDUs, cooling units, which node hangs where).

Validated by pydantic; every cross-reference is checked and a component named twice is refused with both
places named. The result, :class:`SiteTopology`, has the simulator's layout (``components`` DataFrame with
``component_id, kind, rack, row, gpu_model`` and typed edges), so the scorer sees a real site the way it saw
simulated ones. The GPUs inside a node are ``<node>-g<i>``; their count and NVLink wiring can come from NVML
(:meth:`SiteTopology.with_gpu_layout`) on the node the daemon runs on.

Example::

    site: lab
    racks:
      - id: r00
        row: 0
        cooling: crac-0
        leaf: leaf-r00          # default for the rack's nodes
        pdu: pdu-r00-a          # default for the rack's nodes
        nodes:
          - {id: r00-n00, gpus: 8, gpu_model: H100}
          - {id: r00-n01, gpus: 8, gpu_model: H100, pdu: pdu-r00-b}
    switches:
      - {id: leaf-r00, kind: leaf, uplinks: [spine-0]}
      - {id: spine-0, kind: spine}
    pdus:
      - {id: pdu-r00-a, rating_kw: 17.3}
      - {id: pdu-r00-b, rating_kw: 17.3}
    cooling:
      - {id: crac-0}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrabrain.yaml_file import read_yaml_mapping

KINDS: tuple[str, ...] = ("gpu", "node", "leaf", "spine", "pdu", "cooling", "rack")
EDGE_TYPES: tuple[str, ...] = (
    "gpu_in_node",
    "node_in_rack",
    "node_to_leaf",
    "leaf_to_spine",
    "node_on_pdu",
    "rack_cooled_by",
)

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(_Strict):
    """One server: how many GPUs, which leaf switch and PDU it hangs on (defaults: its rack's)."""

    id: str = Field(pattern=_ID_PATTERN)
    gpus: int = Field(default=8, ge=0, le=64)
    gpu_model: str = ""
    leaf: str | None = None
    pdu: str | None = None


class RackSpec(_Strict):
    """One rack: its row, cooling unit, default leaf/PDU, and its nodes."""

    id: str = Field(pattern=_ID_PATTERN)
    row: int = Field(default=0, ge=0)
    cooling: str | None = None
    leaf: str | None = None
    pdu: str | None = None
    nodes: list[NodeSpec] = Field(default_factory=list)


class SwitchSpec(_Strict):
    """A leaf or spine switch; a leaf lists its spine uplinks."""

    id: str = Field(pattern=_ID_PATTERN)
    kind: Literal["leaf", "spine"]
    uplinks: list[str] = Field(default_factory=list)


class PduSpec(_Strict):
    """A power distribution unit."""

    id: str = Field(pattern=_ID_PATTERN)
    rating_kw: float | None = Field(default=None, gt=0)


class CoolingSpec(_Strict):
    """A cooling unit (CRAC/CDU)."""

    id: str = Field(pattern=_ID_PATTERN)


class TopologyFile(_Strict):
    """The whole YAML document."""

    site: str = Field(pattern=_ID_PATTERN)
    racks: list[RackSpec] = Field(min_length=1)
    switches: list[SwitchSpec] = Field(default_factory=list)
    pdus: list[PduSpec] = Field(default_factory=list)
    cooling: list[CoolingSpec] = Field(default_factory=list)

    @field_validator("racks")
    @classmethod
    def _validate_unique_nodes(cls, racks: list[RackSpec]) -> list[RackSpec]:
        seen: dict[str, str] = {}
        for rack in racks:
            for node in rack.nodes:
                if node.id in seen:
                    raise ValueError(
                        f"node {node.id!r} is named twice (in rack {seen[node.id]!r} and in rack {rack.id!r})"
                    )
                seen[node.id] = rack.id
        return racks


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it."""

    index: int
    uuid: str
    pci_bus_id: str
    name: str


@dataclass(frozen=True)
class GpuLayout:
    """The GPUs of one node and their NVLink wiring: ``nvlinks`` holds ``(gpu_index, peer_index, link)``."""

    gpus: list[GpuInfo]
    nvlinks: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SiteTopology:
    """A validated site graph in the simulator's layout: components kind by kind in ``KINDS`` order.

    ``nvlinks`` (GPU global index pairs, from NVML) are kept apart from ``edges`` so that the predictor, which
    knows the simulator's six edge types, reads the graph unchanged.
    """

    site: str
    components: pd.DataFrame  # component_id, kind, rack, row, gpu_model
    edges: np.ndarray  # int64 [E, 2] global indices
    edge_type: np.ndarray  # int8 [E] into EDGE_TYPES
    spec: TopologyFile
    kind_index: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> global indices, in order
    nvlinks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    def ids(self, kind: str) -> list[str]:
        """Component ids of one kind, in component order."""
        return self.components.loc[self.components["kind"] == kind, "component_id"].tolist()

    def node_of(self) -> dict[str, str]:
        """Map GPU id -> node id."""
        comp = self.components["component_id"].to_numpy()
        mask = self.edge_type == EDGE_TYPES.index("gpu_in_node")
        return {comp[s]: comp[d] for s, d in self.edges[mask]}

    def rack_of(self) -> dict[str, str]:
        """Map every component id -> its rack id ("" when it has none)."""
        return dict(zip(self.components["component_id"], self.components["rack"], strict=True))

    def with_gpu_layout(self, node_id: str, layout: GpuLayout) -> SiteTopology:
        """A copy where ``node_id`` has exactly the GPUs (and NVLinks) NVML found."""
        racks = []
        found = False
        for rack in self.spec.racks:
            nodes = []
            for node in rack.nodes:
                if node.id == node_id:
                    found = True
                    model = layout.gpus[0].name if layout.gpus else node.gpu_model
                    node = node.model_copy(update={"gpus": len(layout.gpus), "gpu_model": model})
                nodes.append(node)
            racks.append(rack.model_copy(update={"nodes": nodes}))
        if not found:
            raise ValueError(f"node {node_id!r} (from NVML discovery) is not in the topology file of {self.site!r}")
        spec = self.spec.model_copy(update={"racks": racks})
        return build_site_topology(spec, nvlinks={node_id: layout.nvlinks})


def _check_ref(what: str, owner: str, ref: str | None, known: set[str], table: str) -> None:
    if ref is not None and ref not in known:
        raise ValueError(f"{what} {owner!r} names {ref!r}, which is not listed under {table!r}")


def build_site_topology(
    spec: TopologyFile, nvlinks: dict[str, Sequence[tuple[int, int, int]]] | None = None
) -> SiteTopology:
    """Check cross-references and lay the site out as components + typed edges."""
    leaves = {s.id for s in spec.switches if s.kind == "leaf"}
    spines = {s.id for s in spec.switches if s.kind == "spine"}
    pdus = {p.id for p in spec.pdus}
    coolers = {c.id for c in spec.cooling}
    rows: list[tuple[str, str, str, int, str]] = []
    owner: dict[str, str] = {}

    def add(cid: str, kind: str, rack: str, row: int, model: str = "") -> int:
        if cid in owner:
            raise ValueError(f"component id {cid!r} is used twice (as {owner[cid]} and as {kind})")
        owner[cid] = kind
        rows.append((cid, kind, rack, row, model))
        return len(rows) - 1

    for sw in spec.switches:
        for up in sw.uplinks:
            if up not in spines:
                raise ValueError(f"switch {sw.id!r} names uplink {up!r}, which is not a spine under 'switches'")
    idx: dict[str, int] = {}
    for c in spec.cooling:
        idx[c.id] = add(c.id, "cooling", "", 0)
    for s in spec.switches:
        idx[s.id] = add(s.id, s.kind, "", 0)
    for p in spec.pdus:
        idx[p.id] = add(p.id, "pdu", "", 0)
    edges: list[tuple[int, int, str]] = []
    for s in spec.switches:
        for up in s.uplinks:
            edges.append((idx[s.id], idx[up], "leaf_to_spine"))
    nvlinks = nvlinks or {}
    for rack in spec.racks:
        _check_ref("rack", rack.id, rack.cooling, coolers, "cooling")
        _check_ref("rack", rack.id, rack.leaf, leaves, "switches (kind: leaf)")
        _check_ref("rack", rack.id, rack.pdu, pdus, "pdus")
        r = idx[rack.id] = add(rack.id, "rack", rack.id, rack.row)
        if rack.cooling:
            edges.append((r, idx[rack.cooling], "rack_cooled_by"))
        for node in rack.nodes:
            leaf = node.leaf or rack.leaf
            pdu = node.pdu or rack.pdu
            _check_ref("node", node.id, node.leaf, leaves, "switches (kind: leaf)")
            _check_ref("node", node.id, node.pdu, pdus, "pdus")
            n = idx[node.id] = add(node.id, "node", rack.id, rack.row, node.gpu_model)
            edges.append((n, r, "node_in_rack"))
            if leaf:
                edges.append((n, idx[leaf], "node_to_leaf"))
            if pdu:
                edges.append((n, idx[pdu], "node_on_pdu"))
            gpu_idx = []
            for g in range(node.gpus):
                gi = add(f"{node.id}-g{g}", "gpu", rack.id, rack.row, node.gpu_model)
                gpu_idx.append(gi)
                edges.append((gi, n, "gpu_in_node"))
            for a, b, _link in nvlinks.get(node.id, ()):
                if not (0 <= a < len(gpu_idx) and 0 <= b < len(gpu_idx)):
                    raise ValueError(f"NVLink ({a}, {b}) of node {node.id!r} names a GPU the node does not have")
                edges.append((gpu_idx[a], gpu_idx[b], "gpu_nvlink"))
    order = sorted(range(len(rows)), key=lambda i: (KINDS.index(rows[i][1]), i))
    new_pos = np.empty(len(rows), dtype=np.int64)
    new_pos[order] = np.arange(len(rows))
    components = pd.DataFrame([rows[i] for i in order], columns=["component_id", "kind", "rack", "row", "gpu_model"])
    plain = [(a, b, t) for a, b, t in edges if t != "gpu_nvlink"]
    edge_arr = new_pos[np.array([(a, b) for a, b, _ in plain], dtype=np.int64).reshape(-1, 2)]
    edge_type = np.array([EDGE_TYPES.index(t) for _, _, t in plain], dtype=np.int8)
    nv = new_pos[np.array([(a, b) for a, b, t in edges if t == "gpu_nvlink"], dtype=np.int64).reshape(-1, 2)]
    kinds = components["kind"].to_numpy()
    kind_index = {k: np.flatnonzero(kinds == k).astype(np.int64) for k in KINDS}
    return SiteTopology(site=spec.site, components=components, edges=edge_arr, edge_type=edge_type, spec=spec,
                        kind_index=kind_index, nvlinks=nv)


def load_topology(path: str | os.PathLike[str]) -> SiteTopology:
    """Read, validate and lay out a topology YAML file; errors name the file and the bad entry."""
    p = Path(path)
    doc = read_yaml_mapping(p, "topology file", "a mapping with 'site' and 'racks'")
    try:
        spec = TopologyFile.model_validate(doc)
        return build_site_topology(spec)
    except ValueError as exc:
        raise ValueError(f"topology file {str(p)!r}: {exc}") from exc


def topology_from_components(site: str, components: pd.DataFrame, edges: pd.DataFrame) -> TopologyFile:
    """Rebuild a topology document from the simulator's ``topology/*.parquet`` (for replay and examples)."""
    kind_of = dict(zip(components["component_id"], components["kind"], strict=True))
    by_kind = {k: components.loc[components["kind"] == k] for k in ("rack", "node", "gpu", "leaf", "spine", "pdu",
                                                                    "cooling")}
    links: dict[str, dict[str, list[str]]] = {}
    src_col, dst_col = ("src", "dst") if "src" in edges.columns else (edges.columns[0], edges.columns[1])
    names = components["component_id"].tolist()
    for s, d, t in zip(edges[src_col], edges[dst_col], edges["edge_type"], strict=True):
        s_id = names[int(s)] if not isinstance(s, str) else s
        d_id = names[int(d)] if not isinstance(d, str) else d
        links.setdefault(str(t), {}).setdefault(s_id, []).append(d_id)
    gpus_per_node: dict[str, int] = {}
    for g, nodes in links.get("gpu_in_node", {}).items():
        gpus_per_node[nodes[0]] = gpus_per_node.get(nodes[0], 0) + 1
    racks = []
    for _, rack in by_kind["rack"].iterrows():
        rid = rack["component_id"]
        nodes = []
        for _, node in by_kind["node"].loc[by_kind["node"]["rack"] == rid].iterrows():
            nid = node["component_id"]
            leaf = links.get("node_to_leaf", {}).get(nid, [None])[0]
            pdu = links.get("node_on_pdu", {}).get(nid, [None])[0]
            nodes.append(NodeSpec(id=nid, gpus=gpus_per_node.get(nid, 0), gpu_model=str(node["gpu_model"]),
                                  leaf=leaf, pdu=pdu))
        cooling = links.get("rack_cooled_by", {}).get(rid, [None])[0]
        racks.append(RackSpec(id=rid, row=int(rack["row"]), cooling=cooling, nodes=nodes))
    switches = [SwitchSpec(id=cid, kind=kind_of[cid], uplinks=links.get("leaf_to_spine", {}).get(cid, []))
                for cid in components.loc[components["kind"].isin(["leaf", "spine"]), "component_id"]]
    return TopologyFile(
        site=site,
        racks=racks,
        switches=switches,
        pdus=[PduSpec(id=c) for c in by_kind["pdu"]["component_id"]],
        cooling=[CoolingSpec(id=c) for c in by_kind["cooling"]["component_id"]],
    )


def site_topology_of_run(run: Any, site: str | None = None) -> SiteTopology:
    """The daemon's view of a simulated site held in memory (a ``SiteRun``: its ``topology`` and ``spec``), named
    ``site`` (default: the run's): what ``topology-from-sim`` writes for a dataset on disk, for benchmarks and tests
    that replay a run without writing it."""
    from infrabrain.simulation.topology import EDGE_TYPES

    topo = run.topology
    edges = pd.DataFrame({"src": topo.edges[:, 0], "dst": topo.edges[:, 1],
                          "edge_type": [EDGE_TYPES[i] for i in topo.edge_type]})
    return build_site_topology(topology_from_components(site or run.spec.name, topo.components, edges))


def dump_topology(spec: TopologyFile, path: str | os.PathLike[str]) -> None:
    """Write ``spec`` as YAML atomically."""
    from infrabrain.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(spec.model_dump(exclude_none=True), sort_keys=False))
