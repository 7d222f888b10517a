"""Snapshots: the predictor's unit of data (and of privacy): the last W minutes of one site, as tensors.

A snapshot at time ``t`` of a site holds

- ``x`` ``float32 [N, W/pool, F]``: every component's last ``W`` steps in the per-kind feature layout of
  :mod:`infrabrain.models.features` (counters as increments, normalised with training statistics), averaged over
  groups of ``pool`` steps (default 5 minutes) over *observed* values only, 0 where nothing was observed;
- ``mask`` ``float32 [N, W/pool, F]``: the observed fraction of each group. NaNs (dead component, scrape gap,
  padding slot) are masked, never invented;
- ``kind`` ``int64 [N]`` (index into :data:`~infrabrain.models.features.KINDS`), ``alive`` ``float32 [N]``
  (a component with no observation in its last 5 steps is dead and removed from message passing: the graph is
  dynamic), ``edge_index`` ``int64 [E, 2]`` and ``edge_type`` ``int64 [E]`` (the site's typed topology);
- per *node* (the contract's ``node`` kind): ``node_index`` (global component index), label ``y`` (fails within
  the next hour), ``label_mask`` (node alive, so it has a label), ``cause`` and ``root`` (ground truth from the
  simulator, used only for evaluation), and scalars ``site`` and ``t``.

:class:`SnapshotDataset` yields one snapshot per item (every item is a dict of tensors, so Opacus' Poisson
sampler can build empty batches) and :func:`collate_snapshots` pads a list of them into a batch with the batch
dimension first (``[B, N, ...]``); edges of the batch are flattened with per-sample offsets ``b * N_max``.

Splits (:func:`make_splits`) are by time (train / validation / test on the training sites, separated by a
one-hour gap so labels never look into the next split) and by site (held-out sites never seen in training, not
even by the normaliser).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from infrabrain.logs import get_logger
from infrabrain.models.derived_metrics import with_derived_metrics
from infrabrain.models.features import KINDS, FeatureSet, Normalizer, transform_series, validate_metric_columns

log = get_logger("models.snapshots")

#: Number of edge types in the contract's ``EDGE_TYPES`` (gpu_in_node, node_in_rack, node_to_leaf,
#: leaf_to_spine, node_on_pdu, rack_cooled_by).
N_EDGE_TYPES = 6
#: A component with no observation in this many last steps counts as dead (removed from message passing).
ALIVE_STEPS = 5
#: Label horizon in seconds (fails within the next hour).
HORIZON_S = 3600
#: ``SiteTensors.to_failure_min`` where no failure follows (finite, so a masked product stays 0, not NaN).
NO_FAILURE_MIN = 1e9


def _get(obj: Any, name: str) -> Any:
    """Attribute or mapping access (the contract describes fields; accept both containers)."""
    if isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)


def site_name(run: Any, default: str = "site") -> str:
    """Name of a ``SiteRun``'s site (``run.name`` or ``run.spec.name``)."""
    for path in (("name",), ("spec", "name"), ("site",)):
        cur = run
        try:
            for p in path:
                cur = _get(cur, p)
        except (AttributeError, KeyError, TypeError):
            continue
        if isinstance(cur, str):
            return cur
    return default


@dataclass
class SiteGraph:
    """A site's components and typed edges in predictor terms (global component order of the topology)."""

    component_ids: np.ndarray  # str [N]
    kind: np.ndarray  # int64 [N], index into KINDS
    edge_index: np.ndarray  # int64 [E, 2]
    edge_type: np.ndarray  # int64 [E]
    kind_index: dict[str, np.ndarray]  # kind -> global indices in telemetry order
    node_global: np.ndarray  # int64 [n_node]

    @property
    def n(self) -> int:
        return int(len(self.kind))

    def gpu_node(self) -> np.ndarray:
        """Node position (in node order) of every GPU (in GPU order), from ``gpu_in_node`` edges; -1 for none."""
        gpu_pos = np.full(self.n, -1, dtype=np.int64)
        gpus = self.kind_index.get("gpu", np.zeros(0, np.int64))
        gpu_pos[gpus] = np.arange(len(gpus))
        node_pos = np.full(self.n, -1, dtype=np.int64)
        node_pos[self.node_global] = np.arange(len(self.node_global))
        out = np.full(len(gpus), -1, dtype=np.int64)
        src, dst = self.edge_index.reshape(-1, 2)[self.edge_type == 0].T
        ok = (gpu_pos[src] >= 0) & (node_pos[dst] >= 0)
        out[gpu_pos[src[ok]]] = node_pos[dst[ok]]
        return out


def graph_from_topology(topology: Any) -> SiteGraph:
    """Convert the simulator's ``Topology`` into a :class:`SiteGraph`; errors name an unknown component kind."""
    comps = _get(topology, "components")
    kinds = np.asarray(comps["kind"]).astype(str)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown component type(s) {unknown} in topology; the predictor knows {KINDS}")
    kind_idx = np.array([KINDS.index(k) for k in kinds], dtype=np.int64)
    kind_index = {k: np.asarray(v, dtype=np.int64) for k, v in dict(_get(topology, "kind_index")).items()}
    edges = np.asarray(_get(topology, "edges"), dtype=np.int64).reshape(-1, 2)
    etype = np.asarray(_get(topology, "edge_type"), dtype=np.int64).reshape(-1)
    if len(etype) != len(edges):
        raise ValueError(f"topology has {len(edges)} edges but {len(etype)} edge types")
    if len(etype) and (etype.min() < 0 or etype.max() >= N_EDGE_TYPES):
        raise ValueError(f"edge_type values must be in [0, {N_EDGE_TYPES}), got range [{etype.min()}, {etype.max()}]")
    node_global = kind_index.get("node", np.zeros(0, np.int64))
    return SiteGraph(
        component_ids=np.asarray(comps["component_id"]).astype(str),
        kind=kind_idx,
        edge_index=edges,
        edge_type=etype,
        kind_index=kind_index,
        node_global=node_global,
    )


def encode_telemetry(
    graph: SiteGraph,
    metrics: Mapping[str, np.ndarray],
    metric_names: Mapping[str, Sequence[str]],
    feature_set: FeatureSet,
    normalizer: Normalizer | None,
) -> np.ndarray:
    """Raw per-kind telemetry ``[T, n_kind, F_kind]`` -> ``float32 [T, N, F_max]`` (NaN where missing).

    The feature set's derived metrics are computed from their raw sources first
    (:func:`~infrabrain.models.derived_metrics.with_derived_metrics`); columns are matched by name
    (:func:`validate_metric_columns`); counters become increments; with a ``normalizer`` values are normalised.
    Padding slots of kinds with fewer metrics stay NaN (masked).
    """
    metrics, metric_names = with_derived_metrics(metrics, metric_names, feature_set.metrics, graph.gpu_node())
    cols = validate_metric_columns(feature_set, metric_names)
    t_len = None
    for kind, arr in metrics.items():
        t_len = int(np.asarray(arr).shape[0])
        break
    if t_len is None:
        raise ValueError("telemetry has no metrics at all")
    out = np.full((t_len, graph.n, feature_set.f_max), np.nan, dtype=np.float32)
    for kind, idx in cols.items():
        arr = np.asarray(metrics[kind])
        gidx = graph.kind_index.get(kind)
        if gidx is None:
            raise ValueError(f"topology has no component kind {kind!r} but telemetry does")
        if arr.ndim != 3 or arr.shape[1] != len(gidx):
            raise ValueError(
                f"metrics[{kind!r}] has shape {arr.shape}, expected [T, {len(gidx)}, F] for {len(gidx)} {kind} components"
            )
        if arr.shape[0] != t_len:
            raise ValueError(f"metrics[{kind!r}] has {arr.shape[0]} steps, other kinds have {t_len}")
        vals = transform_series(arr[:, :, idx], feature_set.counters(kind), feature_set.xid_codes(kind))
        if normalizer is not None:
            vals = normalizer.apply(kind, vals)
        out[:, gidx, : len(idx)] = vals
    return out


@dataclass
class SiteTensors:
    """One site's encoded telemetry and labels, ready to cut snapshots from.

    Telemetry is kept as ``vals0`` (normalised, 0 where missing) plus ``obs`` (observed), so cutting a snapshot
    is two slices and two sums; :meth:`values_nan` gives the NaN form for baselines.
    """

    name: str
    graph: SiteGraph
    vals0: np.ndarray  # float32 [T, N, F] normalised, 0 where missing
    obs: np.ndarray  # bool [T, N, F] observed
    timestamps: np.ndarray  # int64 [T]
    y: np.ndarray  # bool [T, n_node]
    cause: np.ndarray  # int64 [T, n_node]
    root: np.ndarray  # int64 [T, n_node]
    node_alive: np.ndarray  # bool [T, n_node]
    cadence_s: int = 60
    observed: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool [T, N] any feature observed
    run: Any = field(default=None, repr=False)  # the raw SiteRun (for rules and explanations in raw units)

    def __post_init__(self) -> None:
        if self.observed is None:
            self.observed = self.obs.any(axis=2)

    @classmethod
    def from_values(cls, values: np.ndarray, **kw: Any) -> SiteTensors:
        """Build from a NaN-marked ``[T, N, F]`` array."""
        obs = np.isfinite(values)
        return cls(vals0=np.where(obs, values, 0.0).astype(np.float32), obs=obs, **kw)

    def to_failure_min(self) -> np.ndarray:
        """``float32 [T, n_node]``: minutes from each step to the failure that ends the node's next run of positive
        labels (a positive row's own run: its lead), :data:`NO_FAILURE_MIN` where no run follows. Cached: read by
        training's lead weight and early band (``loss_fn``)."""
        if getattr(self, "_to_failure_min", None) is None:
            n_t = len(self.y)
            t = np.arange(n_t)[:, None]
            # the first negative row at or after each step (a run's end; the run's length past the last step)
            end = np.minimum.accumulate(np.where(self.y, n_t, t)[::-1], axis=0)[::-1]
            # the first positive row at or after each step, and the end of its run
            nxt = np.minimum.accumulate(np.where(self.y, t, n_t)[::-1], axis=0)[::-1]
            ahead = nxt < n_t
            run_end = np.take_along_axis(end, np.minimum(nxt, n_t - 1), axis=0)
            minutes = (run_end - t).astype(np.float32) * np.float32(self.cadence_s / 60.0)
            self._to_failure_min = np.where(ahead, minutes, np.float32(NO_FAILURE_MIN)).astype(np.float32)
        return self._to_failure_min

    def values_nan(self, lo: int, hi: int) -> np.ndarray:
        """Steps ``[lo, hi)`` as ``float32 [t, N, F]`` with NaN where missing."""
        return np.where(self.obs[lo:hi], self.vals0[lo:hi], np.nan).astype(np.float32)


def site_tensors(run: Any, feature_set: FeatureSet, normalizer: Normalizer | None, name: str | None = None) -> SiteTensors:
    """Encode a simulator ``SiteRun`` (or ``load_site`` result) into :class:`SiteTensors`."""
    graph = graph_from_topology(_get(run, "topology"))
    values = encode_telemetry(graph, _get(run, "metrics"), _get(run, "metric_names"), feature_set, normalizer)
    ts = np.asarray(_get(run, "timestamps"), dtype=np.int64)
    labels = _get(run, "labels")
    t, nn = len(ts), len(graph.node_global)
    y = np.asarray(_get(labels, "fail_within_1h"), dtype=bool).reshape(t, nn)
    cause = np.asarray(_get(labels, "cause"), dtype=np.int64).reshape(t, nn)
    root = np.asarray(_get(labels, "root_component"), dtype=np.int64).reshape(t, nn)
    alive = np.asarray(_get(labels, "alive"), dtype=bool).reshape(t, nn)
    cadence = int(np.median(np.diff(ts))) if len(ts) > 1 else 60
    return SiteTensors.from_values(
        values, name=name or site_name(run), graph=graph, timestamps=ts, y=y, cause=cause, root=root,
        node_alive=alive, cadence_s=max(cadence, 1), run=run,
    )


def window_steps(window_min: int, cadence_s: int, pool: int = 1) -> int:
    """Number of cadence steps in a window of ``window_min`` minutes, rounded to a multiple of ``pool``."""
    w = max(2, int(round(window_min * 60 / cadence_s)))
    return max(pool, (w // pool) * pool)


def _alive_components(observed: np.ndarray) -> np.ndarray:
    """``observed [w, N]`` -> float32 [N]: observed at least once in the last :data:`ALIVE_STEPS` steps."""
    return observed[-ALIVE_STEPS:].any(axis=0).astype(np.float32)


def build_snapshot(site: SiteTensors, t_idx: int, window: int, site_index: int = 0, pool: int = 1) -> dict[str, torch.Tensor]:
    """Cut the snapshot ending at step ``t_idx`` (inclusive) with ``window`` steps from ``site``.

    Consecutive groups of ``pool`` steps are averaged over their *observed* values (``x`` ``[N, window/pool,
    F]``); ``mask`` is then the observed fraction of each group (0 = nothing observed, never invented).
    """
    if window % pool:
        raise ValueError(f"window ({window} steps) must be a multiple of pool ({pool})")
    if t_idx + 1 < window or t_idx >= len(site.timestamps):
        raise ValueError(f"snapshot end step {t_idx} needs {window} steps of history within {len(site.timestamps)} steps")
    lo, hi = t_idx + 1 - window, t_idx + 1
    n, f = site.vals0.shape[1:]
    p = window // pool
    v = site.vals0[lo:hi].reshape(p, pool, n, f).sum(axis=1)
    c = site.obs[lo:hi].reshape(p, pool, n, f).sum(axis=1, dtype=np.float32)
    x = v / np.maximum(c, 1.0)
    m = c / float(pool)
    # Message passing reads liveness from the telemetry alone, as it must at inference; the simulator's ground
    # truth (``node_alive``) only decides which nodes get a label (a node that just failed can still have data
    # in its last ALIVE_STEPS steps).
    alive = _alive_components(site.observed[lo:hi])
    node_alive = site.node_alive[t_idx] & (alive[site.graph.node_global] > 0)
    return {
        "x": torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))),
        "mask": torch.from_numpy(np.ascontiguousarray(m.transpose(1, 0, 2))),
        "kind": torch.from_numpy(site.graph.kind),
        "alive": torch.from_numpy(alive),
        "edge_index": torch.from_numpy(site.graph.edge_index),
        "edge_type": torch.from_numpy(site.graph.edge_type),
        "node_index": torch.from_numpy(site.graph.node_global),
        "y": torch.from_numpy(site.y[t_idx].astype(np.float32)),
        "to_failure_min": torch.from_numpy(site.to_failure_min()[t_idx]),
        "label_mask": torch.from_numpy(node_alive.astype(np.float32)),
        "cause": torch.from_numpy(site.cause[t_idx]),
        "root": torch.from_numpy(site.root[t_idx]),
        "site": torch.tensor(site_index, dtype=torch.int64),
        "t": torch.tensor(int(site.timestamps[t_idx]), dtype=torch.int64),
    }


def snapshot_from_window(
    topology: Any,
    metrics: Mapping[str, np.ndarray],
    metric_names: Mapping[str, Sequence[str]],
    feature_set: FeatureSet,
    normalizer: Normalizer,
    window: int,
    node_alive: np.ndarray | None = None,
    pool: int = 1,
) -> dict[str, torch.Tensor]:
    """Build an unlabelled snapshot for inference from a raw telemetry window (the last ``window``+1 steps; pass
    :func:`~infrabrain.models.features.history_steps` ``(window)`` steps so an XID raised in the hour before the
    window is seen as in training).

    One extra leading step lets counters have an increment at the first step; with exactly ``window`` steps the
    first step's counter increments are masked. Labels are zeros; ``label_mask`` marks nodes that are alive.
    Raises ``ValueError`` for an unknown component type, a missing metric column or a too-short window.
    """
    graph = graph_from_topology(topology)
    values = encode_telemetry(graph, metrics, metric_names, feature_set, normalizer)
    t = values.shape[0]
    if t < window:
        raise ValueError(f"telemetry window has {t} steps, the model needs at least {window}")
    nn = len(graph.node_global)
    alive = np.ones((t, nn), bool) if node_alive is None else np.asarray(node_alive, bool).reshape(t, nn)
    site = SiteTensors.from_values(
        values, name="window", graph=graph, timestamps=np.arange(t, dtype=np.int64) * 60,
        y=np.zeros((t, nn), bool), cause=np.full((t, nn), -1, np.int64), root=np.full((t, nn), -1, np.int64),
        node_alive=alive,
    )
    return build_snapshot(site, t - 1, window, pool=pool)


def snapshot_steps(dataset: SnapshotDataset) -> dict[tuple[int, int], int]:
    """Each snapshot's step by ``(site index, end time in s)``: how a score table's row (``site, t``) finds the
    snapshot it scored."""
    return {(si, int(dataset.sites[si].timestamps[ti])): ti for si, ti in dataset.index}


class SnapshotDataset(Dataset):
    """Snapshots of several sites; item ``i`` is one snapshot (the unit of privacy for DP-SGD).

    ``time_range`` selects, per site, the fraction of the run whose snapshot *end times* are used (for time
    splits); ``stride`` (in steps) thins consecutive, highly correlated snapshots.
    """

    def __init__(
        self,
        sites: Sequence[SiteTensors],
        window: int,
        stride: int = 10,
        time_range: tuple[float, float] = (0.0, 1.0),
        gap_steps: int = 0,
        pool: int = 1,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 steps, got {window}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        lo, hi = time_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"time_range must satisfy 0 <= start < end <= 1, got {time_range}")
        self.sites = list(sites)
        self.window = window
        self.pool = pool
        if window % pool:
            raise ValueError(f"window ({window} steps) must be a multiple of pool ({pool})")
        self.stride = stride
        self.time_range = time_range
        index: list[tuple[int, int]] = []
        for si, s in enumerate(self.sites):
            t = len(s.timestamps)
            start = max(window, int(lo * t) + (gap_steps if lo > 0 else 0))
            end = int(hi * t)
            index.extend((si, ti) for ti in range(start, end, stride))
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        si, ti = self.index[i]
        return build_snapshot(self.sites[si], ti, self.window, site_index=si, pool=self.pool)

    def labels(self) -> np.ndarray:
        """All (alive) node labels of the dataset, flattened (for class weights and baselines)."""
        out = [self.sites[si].y[ti][self.sites[si].node_alive[ti]] for si, ti in self.index]
        return np.concatenate(out) if out else np.zeros(0, bool)

    def failing_causes(self) -> np.ndarray:
        """The causes (indices into the contract's ``CAUSES``) of the dataset's alive failing node rows,
        flattened (for the cause head's class weights)."""
        out = []
        for si, ti in self.index:
            site = self.sites[si]
            out.append(site.cause[ti][site.node_alive[ti] & site.y[ti]])
        return np.concatenate(out) if out else np.zeros(0, np.int64)


GPU_KIND = KINDS.index("gpu")


def collate_snapshots(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad snapshots into a batch, batch dimension first.

    Components are padded to ``N_max`` (padding: ``alive`` 0, ``mask`` 0), nodes to ``n_node_max``
    (``label_mask`` 0). Besides the per-component tensors, the batch carries the *infrastructure* view used for
    message passing (every component except GPUs, which only send to their node):

    - ``infra_index`` ``[B, M_max]``: component index of each infrastructure slot (padding 0, ``infra_alive`` 0);
    - ``edge_index`` ``[E, 2]`` / ``edge_type`` ``[E]``: edges between infrastructure components, indexing the
      flattened ``B * M_max`` slots; ``gpu_edge`` ``[G, 2]``: (flattened ``B * N_max`` GPU, flattened
      ``B * M_max`` node slot) pairs;
    - ``node_slot`` ``[B, n_node_max]``: infrastructure slot of each labelled node;
    - ``peer_mean`` ``[B, K, P, F]`` only if every item carries one (a subgraph cut for explanations keeps its
      full site's per-kind means, see :func:`~infrabrain.models.gnn.FailurePredictor.peer_deviation`).
    """
    if len(items) == 0:
        raise ValueError("cannot collate an empty list of snapshots")
    b = len(items)
    n_max = max(int(it["kind"].shape[0]) for it in items)
    nn_max = max(int(it["node_index"].shape[0]) for it in items)
    infra_sel = [torch.nonzero(it["kind"] != GPU_KIND, as_tuple=True)[0] for it in items]
    m_max = max(1, max(int(len(s)) for s in infra_sel))
    w, f = items[0]["x"].shape[1:]
    x = torch.zeros(b, n_max, w, f)
    mask = torch.zeros(b, n_max, w, f)
    kind = torch.zeros(b, n_max, dtype=torch.int64)
    alive = torch.zeros(b, n_max)
    infra_index = torch.zeros(b, m_max, dtype=torch.int64)
    infra_alive = torch.zeros(b, m_max)
    node_index = torch.zeros(b, nn_max, dtype=torch.int64)
    node_slot = torch.zeros(b, nn_max, dtype=torch.int64)
    y = torch.zeros(b, nn_max)
    to_failure = torch.full((b, nn_max), NO_FAILURE_MIN)
    label_mask = torch.zeros(b, nn_max)
    cause = torch.full((b, nn_max), -1, dtype=torch.int64)
    root = torch.full((b, nn_max), -1, dtype=torch.int64)
    edges, etypes, gedges = [], [], []
    for i, it in enumerate(items):
        n, nn = it["kind"].shape[0], it["node_index"].shape[0]
        if tuple(it["x"].shape[1:]) != (w, f):
            raise ValueError(f"snapshot {i} has time bins/features {tuple(it['x'].shape[1:])}, batch has {(w, f)}")
        x[i, :n] = it["x"]
        mask[i, :n] = it["mask"].to(mask.dtype)
        kind[i, :n] = it["kind"]
        alive[i, :n] = it["alive"]
        sel = infra_sel[i]
        m = len(sel)
        infra_index[i, :m] = sel
        infra_alive[i, :m] = it["alive"][sel]
        remap = torch.full((n,), -1, dtype=torch.int64)
        remap[sel] = torch.arange(m)
        node_index[i, :nn] = it["node_index"]
        node_slot[i, :nn] = remap[it["node_index"]]
        y[i, :nn] = it["y"]
        if "to_failure_min" in it:
            to_failure[i, :nn] = it["to_failure_min"]
        label_mask[i, :nn] = it["label_mask"]
        cause[i, :nn] = it["cause"]
        root[i, :nn] = it["root"]
        e, et = it["edge_index"], it["edge_type"]
        src, dst = remap[e[:, 0]], remap[e[:, 1]]
        both = (src >= 0) & (dst >= 0)
        edges.append(torch.stack([src[both], dst[both]], 1) + i * m_max)
        etypes.append(et[both])
        g = (src < 0) & (dst >= 0) & (it["kind"][e[:, 0]] == GPU_KIND)
        gedges.append(torch.stack([e[g, 0] + i * n_max, dst[g] + i * m_max], 1))
    out = {
        "x": x, "mask": mask, "kind": kind, "alive": alive,
        "infra_index": infra_index, "infra_alive": infra_alive,
        "edge_index": torch.cat(edges), "edge_type": torch.cat(etypes), "gpu_edge": torch.cat(gedges),
        "node_index": node_index, "node_slot": node_slot, "y": y, "to_failure_min": to_failure,
        "label_mask": label_mask,
        "cause": cause,
        "root": root, "site": torch.stack([it["site"] for it in items]), "t": torch.stack([it["t"] for it in items]),
    }
    if all("peer_mean" in it for it in items):
        out["peer_mean"] = torch.stack([it["peer_mean"] for it in items])
    return out


@dataclass
class Splits:
    """Datasets for one experiment plus the feature set and normaliser they were built with."""

    feature_set: FeatureSet
    normalizer: Normalizer
    window: int
    pool: int
    train: SnapshotDataset
    val: SnapshotDataset
    test_time: SnapshotDataset | None  # training sites, later time (None when they train on their whole run)
    test_sites: SnapshotDataset | None  # held-out sites, whole run
    train_sites: list[SiteTensors]
    heldout_sites: list[SiteTensors]


def fit_normalizer(runs: Sequence[Any], feature_set: FeatureSet, time_range: tuple[float, float] = (0.0, 1.0)) -> Normalizer:
    """Fit a :class:`Normalizer` on the ``time_range`` fraction of each (training) run only."""
    per_kind: dict[str, list[np.ndarray]] = {}
    observed: dict[str, np.ndarray] = {}  # per kind, whether each metric had a value anywhere (not subsampled)
    for run in runs:
        gpu_node = graph_from_topology(_get(run, "topology")).gpu_node()
        metrics, names = with_derived_metrics(_get(run, "metrics"), _get(run, "metric_names"), feature_set.metrics,
                                              gpu_node)
        cols = validate_metric_columns(feature_set, names)
        for kind, idx in cols.items():
            arr = np.asarray(metrics[kind])
            t = arr.shape[0]
            lo, hi = int(time_range[0] * t), max(int(time_range[1] * t), int(time_range[0] * t) + 1)
            sub = transform_series(arr[lo:hi][:, :, idx], feature_set.counters(kind), feature_set.xid_codes(kind))
            per_kind.setdefault(kind, []).append(sub[:: max(1, len(sub) // 500)])  # subsample steps
            seen = np.isfinite(sub).any(axis=(0, 1))
            observed[kind] = observed[kind] | seen if kind in observed else seen
    return Normalizer.fit(per_kind, feature_set, observed)


def make_splits(
    runs: Sequence[Any],
    heldout: int | Sequence[str] = 0,
    window_min: int = 60,
    stride_min: int = 10,
    eval_stride_min: int | None = None,
    fractions: tuple[float, float] = (0.6, 0.8),
    feature_set: FeatureSet | None = None,
    pool_min: int = 5,
    normalizer: Normalizer | None = None,
    val_sites: int = 0,
) -> Splits:
    """Split runs by site (``heldout``: a count taken from the end, or names) and by time.

    Training sites: snapshots ending in ``[0, f0)`` train, ``[f0, f1)`` validate, ``[f1, 1]`` test (each later
    split starts one hour after the previous one ends, so no label looks across). Held-out sites: every
    snapshot (never used for fitting anything). The normaliser is fitted on the training part only. With
    validation sites (``val_sites``) the training sites' validation period has no use, so ``fractions`` may be
    ``(1, 1)``: they train on their whole run and ``test_time`` is None.
    """
    if not runs:
        raise ValueError("make_splits needs at least one SiteRun")
    names = [site_name(r, f"site{i}") for i, r in enumerate(runs)]
    if isinstance(heldout, int):
        if not 0 <= heldout < len(runs):
            raise ValueError(f"heldout must be in [0, {len(runs) - 1}] sites, got {heldout}")
        held = set(names[len(names) - heldout :]) if heldout else set()
    else:
        held = set(heldout)
        missing = held - set(names)
        if missing:
            raise ValueError(f"held-out site(s) {sorted(missing)} not among runs {names}")
        if len(held) == len(names):
            raise ValueError("every site is held out; nothing left to train on")
    fs = feature_set or FeatureSet.from_run(runs[0])
    rest = [n for n in names if n not in held]
    if not 0 <= val_sites < len(rest):
        raise ValueError(f"val_sites must be in [0, {len(rest) - 1}] (sites left after hold-out), got {val_sites}")
    val_names = set(rest[len(rest) - val_sites :]) if val_sites else set()
    f0, f1 = fractions
    if not 0.0 < f0 <= f1 <= 1.0:
        raise ValueError(f"fractions must satisfy 0 < train end <= validation end <= 1, got {fractions}")
    if not val_names and not f0 < f1 < 1.0:
        raise ValueError(f"fractions {fractions}: without validation sites the training sites need a validation "
                         "and a test period (0 < train end < validation end < 1)")
    held_or_val = held | val_names
    train_runs = [r for r, n in zip(runs, names) if n not in held_or_val]
    norm = normalizer or fit_normalizer(train_runs, fs, (0.0, fractions[0]))
    unlearned = norm.unlearned_metrics(fs) if normalizer is None else {}
    if unlearned:  # a kind without any value is named as a kind, not field by field
        log.warning("no value of these metrics in the training data: the model does not read them, and masks them "
                    "wherever they are sent", extra={"metrics": "; ".join(
                        f"{k}: " + ("every field (no telemetry of the kind)" if len(v) == len(fs.metrics_of(k))
                                    else ", ".join(v)) for k, v in unlearned.items())})
    train_sites = [site_tensors(r, fs, norm, name=n) for r, n in zip(runs, names) if n not in held_or_val]
    val_site_t = [site_tensors(r, fs, norm, name=n) for r, n in zip(runs, names) if n in val_names]
    held_sites = [site_tensors(r, fs, norm, name=n) for r, n in zip(runs, names) if n in held]
    cad = train_sites[0].cadence_s
    pool = max(1, int(round(pool_min * 60 / cad)))
    w = window_steps(window_min, cad, pool)
    stride = max(1, int(round(stride_min * 60 / cad)))
    ev_stride = max(1, int(round((eval_stride_min or stride_min) * 60 / cad)))
    gap = int(round(HORIZON_S / cad))
    log.info("splits", extra={"train_sites": len(train_sites), "heldout_sites": len(held_sites), "window": w})
    return Splits(
        feature_set=fs, normalizer=norm, window=w, pool=pool,
        train=SnapshotDataset(train_sites, w, stride, (0.0, f0), pool=pool),
        val=(SnapshotDataset(val_site_t, w, ev_stride, pool=pool) if val_site_t
             else SnapshotDataset(train_sites, w, ev_stride, (f0, f1), gap_steps=gap, pool=pool)),
        test_time=(SnapshotDataset(train_sites, w, ev_stride, (f1, 1.0), gap_steps=gap, pool=pool)
                   if f1 < 1.0 else None),
        test_sites=SnapshotDataset(held_sites, w, ev_stride, pool=pool) if held_sites else None,
        train_sites=train_sites, heldout_sites=held_sites,
    )
