"""The site graph: GPUs in nodes in racks, wired to leaf/spine switches, PDUs and shared cooling units.

Global component index = position in `Topology.components`; components are laid out kind by kind in `KINDS`
order, so `kind_index[kind]` is a contiguous range and telemetry arrays use that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from infrabrain.simulation.spec import GPU_MODELS, SiteSpec

KINDS: tuple[str, ...] = ("gpu", "node", "leaf", "spine", "pdu", "cooling", "rack")
EDGE_TYPES: tuple[str, ...] = (
    "gpu_in_node", "node_in_rack", "node_to_leaf", "leaf_to_spine", "node_on_pdu", "rack_cooled_by",
)
MODEL_NAMES: tuple[str, ...] = tuple(sorted(GPU_MODELS))


@dataclass
class Topology:
    """Typed graph of one site; see docs/data-contract.md for the meaning of every field."""

    spec: SiteSpec
    components: pd.DataFrame
    kind_index: dict[str, np.ndarray]
    edges: np.ndarray
    edge_type: np.ndarray
    node_of_gpu: np.ndarray  # [n_gpu] -> node order
    rack_of_node: np.ndarray  # [n_node] -> rack order
    leaf_of_node: np.ndarray  # [n_node] -> leaf order
    pdu_of_node: np.ndarray  # [n_node] -> pdu order
    cooling_of_rack: np.ndarray  # [n_rack] -> cooling order
    rack_of_pdu: np.ndarray  # [n_pdu] -> rack order
    model_of_node: np.ndarray  # [n_node] -> index into MODEL_NAMES
    ids: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids in kind order

    def count(self, kind: str) -> int:
        return int(len(self.kind_index[kind]))

    def global_index(self, kind: str, local: np.ndarray | int) -> np.ndarray | int:
        """Global component index of the ``local``-th component of ``kind``."""
        return self.kind_index[kind][local]

    def find(self, component_id: str) -> tuple[str, int]:
        """(kind, index in kind order) of a component id; ``ValueError`` naming it when unknown."""
        lookup = self.__dict__.get("_lookup")
        if lookup is None:
            lookup = {cid: (kind, i) for kind, ids in self.ids.items() for i, cid in enumerate(ids)}
            self.__dict__["_lookup"] = lookup
        if component_id not in lookup:
            examples = ", ".join(self.ids["cooling"][:3] + self.ids["leaf"][:2] + self.ids["node"][:2])
            raise ValueError(f"unknown component {component_id!r} in site {self.spec.name!r} (e.g. {examples})")
        return lookup[component_id]


def _rack_models(spec: SiteSpec) -> np.ndarray:
    """Assign a GPU model to every rack, deterministically, in proportion to ``gpu_mix`` (largest remainder)."""
    n = spec.n_racks
    names = [m for m in MODEL_NAMES if spec.gpu_mix.get(m, 0.0) > 0]
    shares = np.array([spec.gpu_mix[m] for m in names], dtype=float)
    shares /= shares.sum()
    counts = np.floor(shares * n).astype(int)
    rem = shares * n - counts
    for i in np.argsort(-rem)[: n - counts.sum()]:
        counts[i] += 1
    out = np.concatenate([np.full(c, MODEL_NAMES.index(m)) for m, c in zip(names, counts, strict=True)])
    return out.astype(np.int8)


def build_topology(spec: SiteSpec) -> Topology:
    """Build the typed graph of ``spec`` (vectorised; a 10,000-GPU site takes well under a second)."""
    n_rack, npr, gpn = spec.n_racks, spec.nodes_per_rack, spec.gpus_per_node
    n_node, n_gpu = spec.n_nodes, spec.n_gpus
    n_leaf, n_spine = n_rack, spec.spines
    n_pdu = n_rack * spec.pdus_per_rack
    n_cool = -(-n_rack // spec.racks_per_cooling)
    counts = {"gpu": n_gpu, "node": n_node, "leaf": n_leaf, "spine": n_spine, "pdu": n_pdu,
              "cooling": n_cool, "rack": n_rack}
    offsets, start = {}, 0
    for k in KINDS:
        offsets[k] = start
        start += counts[k]
    kind_index = {k: np.arange(offsets[k], offsets[k] + counts[k], dtype=np.int64) for k in KINDS}

    rw = max(2, len(str(n_rack - 1)))
    nw = max(2, len(str(npr - 1)))
    rack_ids = [f"r{r:0{rw}d}" for r in range(n_rack)]
    node_ids = [f"{rack_ids[r]}-n{n:0{nw}d}" for r in range(n_rack) for n in range(npr)]
    gpu_ids = [f"{nid}-g{g}" for nid in node_ids for g in range(gpn)]
    leaf_ids = [f"leaf-{r}" for r in rack_ids]
    spine_ids = [f"spine-{s + 1}" for s in range(n_spine)]
    pdu_ids = [f"pdu-{r}-{chr(ord('a') + p)}" for r in rack_ids for p in range(spec.pdus_per_rack)]
    cool_ids = [f"crac-{c + 1}" for c in range(n_cool)]
    ids = {"gpu": gpu_ids, "node": node_ids, "leaf": leaf_ids, "spine": spine_ids, "pdu": pdu_ids,
           "cooling": cool_ids, "rack": rack_ids}

    rack_of_node = np.repeat(np.arange(n_rack, dtype=np.int64), npr)
    node_of_gpu = np.repeat(np.arange(n_node, dtype=np.int64), gpn)
    leaf_of_node = rack_of_node.copy()
    pdu_of_node = rack_of_node * spec.pdus_per_rack + (np.arange(n_node) % npr) % spec.pdus_per_rack
    cooling_of_rack = np.arange(n_rack, dtype=np.int64) // spec.racks_per_cooling
    rack_of_pdu = np.repeat(np.arange(n_rack, dtype=np.int64), spec.pdus_per_rack)
    row_of_rack = np.arange(n_rack) // spec.racks_per_row
    rack_model = _rack_models(spec)
    model_of_node = rack_model[rack_of_node]

    model_names = np.array(MODEL_NAMES + ("",), dtype=object)
    rack_str = np.array(rack_ids, dtype=object)
    rack_col = np.concatenate([
        rack_str[rack_of_node[node_of_gpu]], rack_str[rack_of_node], rack_str, np.full(n_spine, "", dtype=object),
        rack_str[rack_of_pdu], np.full(n_cool, "", dtype=object), rack_str,
    ])
    first_rack_of_cool = np.arange(n_cool) * spec.racks_per_cooling
    row_col = np.concatenate([
        row_of_rack[rack_of_node[node_of_gpu]], row_of_rack[rack_of_node], row_of_rack, np.full(n_spine, -1),
        row_of_rack[rack_of_pdu], row_of_rack[first_rack_of_cool], row_of_rack,
    ]).astype(np.int64)
    none = np.full(1, len(MODEL_NAMES))
    model_col = np.concatenate([
        model_of_node[node_of_gpu], model_of_node, np.repeat(none, n_leaf + n_spine + n_pdu + n_cool + n_rack),
    ])
    components = pd.DataFrame({
        "component_id": np.concatenate([np.array(ids[k], dtype=object) for k in KINDS]),
        "kind": np.concatenate([np.full(counts[k], k, dtype=object) for k in KINDS]),
        "rack": rack_col,
        "row": row_col,
        "gpu_model": model_names[model_col],
    })

    g, nd, lf, sp = kind_index["gpu"], kind_index["node"], kind_index["leaf"], kind_index["spine"]
    pd_, co, rk = kind_index["pdu"], kind_index["cooling"], kind_index["rack"]
    blocks = [
        (np.stack([g, nd[node_of_gpu]], 1), 0),
        (np.stack([nd, rk[rack_of_node]], 1), 1),
        (np.stack([nd, lf[leaf_of_node]], 1), 2),
        (np.stack([np.repeat(lf, n_spine), np.tile(sp, n_leaf)], 1), 3),
        (np.stack([nd, pd_[pdu_of_node]], 1), 4),
        (np.stack([rk, co[cooling_of_rack]], 1), 5),
    ]
    edges = np.concatenate([b for b, _ in blocks]).astype(np.int64)
    edge_type = np.concatenate([np.full(len(b), t, dtype=np.int8) for b, t in blocks])
    return Topology(
        spec=spec, components=components, kind_index=kind_index, edges=edges, edge_type=edge_type,
        node_of_gpu=node_of_gpu, rack_of_node=rack_of_node, leaf_of_node=leaf_of_node, pdu_of_node=pdu_of_node,
        cooling_of_rack=cooling_of_rack, rack_of_pdu=rack_of_pdu, model_of_node=model_of_node, ids=ids,
    )
