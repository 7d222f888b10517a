"""Parquet dataset of simulated sites (layout in docs/data-contract.md), written atomically, read back exactly.

Telemetry is streamed chunk by chunk into one Parquet row group per chunk, so sites larger than memory can be
written. The whole output directory is built under a temporary sibling name and renamed at the end
(`infrabrain.atomic.atomic_directory`), and ``manifest.json`` is the last file written: a crash never leaves a
directory that looks like a complete dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infrabrain.atomic import atomic_directory
from infrabrain.json_file import read_json_object
from infrabrain.logs import get_logger
from infrabrain.simulation.engine import SIMULATOR_VERSION, SiteRun, SiteSimulation
from infrabrain.simulation.faults import CAUSE_ID, CAUSES
from infrabrain.simulation.labels import Labels
from infrabrain.simulation.spec import SiteSpec
from infrabrain.simulation.telemetry import METRIC_NAMES, TelemetryChunk
from infrabrain.simulation.topology import EDGE_TYPES, KINDS, Topology, build_topology

SCHEMA_VERSION = 1
log = get_logger("simulation.storage")


def _validate_out(out: str | Path, overwrite: bool) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"--out {str(p)!r} exists and is a file, not a directory")
    if p.exists() and not overwrite:
        raise FileExistsError(f"--out {str(p)!r} already exists (use --overwrite to replace it)")
    return p


def _telemetry_table(topology: Topology, kind: str, chunk: TelemetryChunk) -> pa.Table:
    arr = chunk.metrics[kind]
    tc, n, _ = arr.shape
    ids = pa.array(topology.ids[kind]).dictionary_encode()
    idx = pa.array(np.tile(np.arange(n, dtype=np.int32), tc))
    comp = pa.DictionaryArray.from_arrays(idx, ids.dictionary)
    cols = {"t": pa.array(np.repeat(chunk.timestamps, n)), "component_id": comp}
    for i, name in enumerate(METRIC_NAMES[kind]):
        cols[name] = pa.array(np.ascontiguousarray(arr[:, :, i]).ravel(), from_pandas=True)  # NaN -> null
    return pa.table(cols)


def _write_static(site_dir: Path, topology: Topology, events: pd.DataFrame, labels: Labels,
                  timestamps: np.ndarray, jobs: pd.DataFrame | None) -> None:
    (site_dir / "topology").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(topology.components, preserve_index=False),
                   site_dir / "topology" / "components.parquet")
    edge_names = np.array(EDGE_TYPES, dtype=object)[topology.edge_type]
    ids = topology.components["component_id"].to_numpy()
    pq.write_table(pa.table({"src": ids[topology.edges[:, 0]], "dst": ids[topology.edges[:, 1]],
                             "edge_type": edge_names}), site_dir / "topology" / "edges.parquet")
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), site_dir / "events.parquet")
    if jobs is not None:
        pq.write_table(pa.Table.from_pandas(jobs, preserve_index=False), site_dir / "jobs.parquet")
    t_steps, n_node = labels.fail_within_1h.shape
    node_ids = pa.array(topology.ids["node"]).dictionary_encode().dictionary
    cause_names = np.array(CAUSES + ("",), dtype=object)
    root = labels.root_component.ravel()
    root_ids = np.where(root >= 0, ids[np.maximum(root, 0)], "")
    cause = labels.cause.ravel().astype(np.int64)
    pq.write_table(pa.table({
        "t": np.repeat(timestamps, n_node),
        "node_id": pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(n_node, dtype=np.int32), t_steps)),
                                                  node_ids),
        "fail_within_1h": labels.fail_within_1h.ravel(),
        "cause": pa.array(cause_names[np.where(cause < 0, len(CAUSES), cause)]).dictionary_encode(),
        "root_component": pa.array(root_ids).dictionary_encode(),
        "alive": labels.alive.ravel(),
    }), site_dir / "labels.parquet")


def _site_meta(spec: SiteSpec, hours: float, seed: int, acceleration: float, topology: Topology) -> dict:
    return {"name": spec.name, "path": f"site={spec.name}", "hours": hours, "seed": seed,
            "acceleration": acceleration, "cadence_s": spec.cadence_s, "gpus": topology.count("gpu"),
            "nodes": topology.count("node"), "spec": spec.model_dump(mode="json")}


def _write_chunks(site_dir: Path, topology: Topology, chunks: Iterable[TelemetryChunk]) -> None:
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for ch in chunks:
            for kind in KINDS:
                table = _telemetry_table(topology, kind, ch)
                if kind not in writers:
                    d = site_dir / "telemetry" / f"kind={kind}"
                    d.mkdir(parents=True)
                    writers[kind] = pq.ParquetWriter(d / "part-00000.parquet", table.schema, compression="zstd")
                writers[kind].write_table(table)
    finally:
        for w in writers.values():
            w.close()


def _run_chunks(run: SiteRun, steps: int = 512) -> Iterable[TelemetryChunk]:
    for s0 in range(0, len(run.timestamps), steps):
        s1 = min(len(run.timestamps), s0 + steps)
        yield TelemetryChunk(step0=s0, timestamps=run.timestamps[s0:s1],
                             metrics={k: v[s0:s1] for k, v in run.metrics.items()})


def write_sites(sites: Sequence[SiteRun | SiteSimulation], out: str | Path, overwrite: bool = False,
                progress: bool = False, extra_manifest: dict | None = None) -> Path:
    """Write simulated sites (gathered `SiteRun`s or streamed `SiteSimulation`s) as one dataset at ``out``."""
    target = _validate_out(out, overwrite)
    if not sites:
        raise ValueError("nothing to write: no sites")
    names = [s.spec.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"site names must be unique, got {names}")
    metas = []
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(s.n_steps if isinstance(s, SiteSimulation) else len(s.timestamps) for s in sites)
        bar = tqdm(total=total, desc="simulate+write", unit="step")
    with atomic_directory(target, overwrite=overwrite) as tmp:
        for s in sites:
            site_dir = tmp / f"site={s.spec.name}"
            site_dir.mkdir()
            if isinstance(s, SiteSimulation):
                ts = np.arange(s.n_steps, dtype=np.int64) * s.spec.cadence_s
                _write_static(site_dir, s.topology, s.events, s.labels, ts, s.workload.jobs)
                chunks: Iterable[TelemetryChunk] = s.chunks()
                hours, seed, acc = s.hours, s.seed, s.acceleration
            else:
                _write_static(site_dir, s.topology, s.events, s.labels, s.timestamps, s.jobs)
                chunks = _run_chunks(s)
                hours, seed, acc = s.hours, s.seed, s.acceleration
            if bar is not None:
                chunks = _tick(chunks, bar)
            _write_chunks(site_dir, s.topology, chunks)
            meta = _site_meta(s.spec, hours, seed, acc, s.topology)
            (site_dir / "site.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            metas.append(meta)
        manifest = {"schema_version": SCHEMA_VERSION, "simulator_version": SIMULATOR_VERSION, "sites": metas,
                    "seed": metas[0]["seed"], "hours": metas[0]["hours"], "cadence_s": metas[0]["cadence_s"],
                    "acceleration": metas[0]["acceleration"], "kinds": list(KINDS),
                    "metric_names": METRIC_NAMES, **(extra_manifest or {})}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if bar is not None:
        bar.close()
    log.info("wrote dataset", extra={"out": str(target), "sites": len(sites)})
    return target


def _tick(chunks: Iterable[TelemetryChunk], bar) -> Iterable[TelemetryChunk]:  # noqa: ANN001
    for ch in chunks:
        bar.update(len(ch.timestamps))
        yield ch


def list_sites(out: str | Path) -> list[Path]:
    """Site directories of a dataset written by `write_sites` (checks the manifest is there)."""
    root = Path(out)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{str(root)!r} is not a complete simulator dataset (no manifest.json)")
    data = read_json_object(manifest, "dataset manifest")
    sites = data.get("sites")
    if not isinstance(sites, list) or not all(isinstance(s, dict) and isinstance(s.get("path"), str) for s in sites):
        raise ValueError(f"dataset manifest {str(manifest)!r} has no list of sites with a path each")
    return [root / s["path"] for s in sites]


def _decode(column: pa.ChunkedArray, mapping: dict[str, int]) -> np.ndarray:
    """Map a (dictionary-encoded) string column through ``mapping`` (unknown or "" -> -1), vectorised."""
    arr = column.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    lut = np.array([mapping.get(v, -1) for v in arr.dictionary.to_pylist()] + [-1], dtype=np.int64)
    idx = arr.indices.to_numpy(zero_copy_only=False)
    return lut[idx]


def _check_topology(d: Path, topology: Topology) -> None:
    """The site's topology files must say what its spec builds (the spec is what the reader trusts)."""
    comps = pd.read_parquet(d / "topology" / "components.parquet")
    want = topology.components
    if "kind" not in comps or comps["component_id"].tolist() != want["component_id"].tolist():
        raise ValueError(f"{str(d)!r}: topology/components.parquet does not match the site spec (its components "
                         "differ)")
    differ = comps["kind"].to_numpy() != want["kind"].to_numpy()
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise ValueError(f"{str(d)!r}: topology/components.parquet does not match the site spec: "
                         f"{want['component_id'].iloc[i]!r} is a {comps['kind'].iloc[i]!r} there, a "
                         f"{want['kind'].iloc[i]!r} in the spec")
    edges = pd.read_parquet(d / "topology" / "edges.parquet")
    ids = want["component_id"].to_numpy()
    spec_edges = set(zip(ids[topology.edges[:, 0]], ids[topology.edges[:, 1]],
                         np.array(EDGE_TYPES, dtype=object)[topology.edge_type]))
    if not {"src", "dst", "edge_type"} <= set(edges.columns):
        raise ValueError(f"{str(d)!r}: topology/edges.parquet lacks src, dst or edge_type")
    file_edges = set(zip(edges["src"], edges["dst"], edges["edge_type"]))
    if file_edges != spec_edges:
        extra, lacking = sorted(file_edges - spec_edges)[:3], sorted(spec_edges - file_edges)[:3]
        raise ValueError(f"{str(d)!r}: topology/edges.parquet does not match the site spec (edges not in the "
                         f"spec: {extra}; spec edges it lacks: {lacking})")


def _cells(table: pa.Table, id_column: str, ids: Sequence[str], timestamps: np.ndarray,
           where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's ``(step, component)`` position from its ``t`` and ``id_column`` values, so a file sorted or
    filtered by another tool is read right; refuses an id not among ``ids`` and a cell given twice. None where
    the rows are every cell in the order ``write_sites`` writes them (a plain reshape reads them)."""
    for col in ("t", id_column):
        if col not in table.column_names:
            raise ValueError(f"{where} has no {col!r} column")
    if not pa.types.is_integer(table.column("t").type):
        raise ValueError(f"{where}: column 't' holds {table.column('t').type}, not integer seconds")
    comp = _decode(table.column(id_column), {c: i for i, c in enumerate(ids)})
    if (comp < 0).any():
        unknown = sorted(set(np.asarray(table.column(id_column).to_pylist(), dtype=object)[comp < 0]))
        raise ValueError(f"{where} names {len(unknown)} component(s) the site's topology does not have in that "
                         f"place, e.g. {unknown[:3]}")
    t = table.column("t").to_numpy()
    step = np.searchsorted(timestamps, t)
    key = step.astype(np.int64) * len(ids) + comp
    if len(key) == len(timestamps) * len(ids) and np.array_equal(key, np.arange(len(key))):
        return None  # as written: every cell once, in order
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if len(uniq) < len(key):
        dup = int(first[np.argmax(counts > 1)])
        raise ValueError(f"{where} has {len(key) - len(uniq)} duplicate (t, {id_column}) row(s), e.g. t={t[dup]} "
                         f"{ids[comp[dup]]!r}")
    return step, comp


def _metric_values(table: pa.Table, name: str, where: str) -> np.ndarray:
    """Column ``name`` as float32, null -> NaN; a missing or non-numeric column is refused by name."""
    if name not in table.column_names:
        raise ValueError(f"{where} lacks the metric column {name!r}")
    col = table.column(name).combine_chunks()
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)):
        raise ValueError(f"{where}: metric column {name!r} holds {col.type}, not numbers")
    return col.cast(pa.float32()).fill_null(np.float32("nan")).to_numpy(zero_copy_only=False)


def load_site(site_dir: str | Path) -> SiteRun:
    """Read one ``site=<name>`` directory back into the `SiteRun` that the simulation produced.

    Rows are placed by their ``t`` and component id, not by their order. A (t, component) cell no row gives is
    missing (NaN, masked downstream); labels must give every (t, node) cell. An id the topology lacks, a cell given
    twice, a missing or non-numeric metric column, and topology files that differ from the spec are refused by
    name."""
    d = Path(site_dir)
    meta_path = d / "site.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{str(d)!r} is not a simulated site directory (no site.json)")
    meta = read_json_object(meta_path, "site description")
    if "spec" not in meta:
        raise ValueError(f"site description {str(meta_path)!r} lacks 'spec' (truncated or not a simulated site)")
    spec = SiteSpec.model_validate(meta["spec"])
    needed = ["topology/components.parquet", "topology/edges.parquet",
              *(f"telemetry/kind={k}/part-00000.parquet" for k in KINDS), "events.parquet", "labels.parquet"]
    lacking = [f for f in needed if not (d / f).is_file()]
    if lacking:
        raise FileNotFoundError(f"{str(d)!r} lacks {lacking} (an incomplete simulated site directory)")
    topology = build_topology(spec)
    _check_topology(d, topology)
    tables = {k: pq.read_table(d / "telemetry" / f"kind={k}" / "part-00000.parquet") for k in KINDS}
    lab = pq.read_table(d / "labels.parquet")
    stamps = [tbl.column("t").to_numpy() for tbl in (*tables.values(), lab) if "t" in tbl.column_names]
    timestamps = np.unique(np.concatenate(stamps)).astype(np.int64) if stamps else np.zeros(0, np.int64)
    steps = len(timestamps)
    metrics = {}
    for kind, table in tables.items():
        where = f"{str(d)!r}: telemetry/kind={kind}"
        cells = _cells(table, "component_id", topology.ids[kind], timestamps, where)
        n = topology.count(kind)
        shape = (steps, n, len(METRIC_NAMES[kind]))
        arr = np.empty(shape, dtype=np.float32) if cells is None else np.full(shape, np.nan, dtype=np.float32)
        for i, name in enumerate(METRIC_NAMES[kind]):
            values = _metric_values(table, name, where)
            if cells is None:
                arr[:, :, i] = values.reshape(steps, n)
            else:
                arr[cells[0], cells[1], i] = values
        metrics[kind] = arr
    events = pd.read_parquet(d / "events.parquet")
    label_columns = ("fail_within_1h", "cause", "root_component", "alive")
    if not set(label_columns) <= set(lab.column_names):
        raise ValueError(f"{str(d)!r}: labels.parquet lacks {sorted(set(label_columns) - set(lab.column_names))}")
    node_ids = topology.ids["node"]
    n_node = len(node_ids)
    cells = _cells(lab, "node_id", node_ids, timestamps, f"{str(d)!r}: labels.parquet")
    if cells is not None and len(cells[0]) != steps * n_node:
        raise ValueError(f"{str(d)!r}: labels.parquet gives {len(cells[0])} of the {steps * n_node} (t, node) "
                         f"labels of {steps} steps x {n_node} nodes")
    gidx = {cid: i for i, cid in enumerate(topology.components["component_id"])}

    def grid(values: np.ndarray, dtype: type) -> np.ndarray:
        if cells is None:
            return values.reshape(steps, n_node).astype(dtype, copy=False)
        out = np.empty((steps, n_node), dtype=dtype)
        out[cells[0], cells[1]] = values
        return out

    labels = Labels(
        fail_within_1h=grid(lab.column("fail_within_1h").to_numpy(zero_copy_only=False), bool),
        cause=grid(_decode(lab.column("cause"), CAUSE_ID), np.int8),
        root_component=grid(_decode(lab.column("root_component"), gidx), np.int64),
        alive=grid(lab.column("alive").to_numpy(zero_copy_only=False), bool),
    )
    jobs = pd.read_parquet(d / "jobs.parquet") if (d / "jobs.parquet").is_file() else None
    return SiteRun(spec=spec, topology=topology, timestamps=timestamps, metrics=metrics,
                   metric_names={k: list(v) for k, v in METRIC_NAMES.items()}, events=events, labels=labels,
                   seed=int(meta["seed"]), acceleration=float(meta["acceleration"]), hours=float(meta["hours"]),
                   jobs=jobs)


def load_dataset(out: str | Path) -> list[SiteRun]:
    """Every site of a dataset, in manifest order."""
    return [load_site(p) for p in list_sites(out)]
