"""The fault process: root incidents, their precursors and their cascades along the site graph.

`plan_faults` is the single source of truth for what fails, when, why and from which root component. It needs
only the topology (no telemetry, no workload), so it is also the *events-only fast path* used to check the
calibration over millions of GPU-hours (`simulate_faults`); the full simulation calls the same function and then
renders the planned precursors into telemetry (`telemetry.py`).

Calibration (acceleration 1): unexpected interruptions at ``base_rate_per_gpu_hour`` (2e-5, Llama 3: 419
unexpected interruptions in 54 days on 16,384 H100 GPUs) with the cause mix of that report (`CAUSE_SHARES`).
An *interruption* is one root incident that takes down at least one node; a cooling unit or leaf switch incident
that takes down many nodes counts once, as it interrupts the job once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from infrabrain.simulation.topology import Topology

CAUSES: tuple[str, ...] = (
    "gpu", "hbm", "software", "network", "host_maintenance", "gpu_sram", "gsp", "nic", "thermal", "psu", "ssd",
    "other",
)
CAUSE_ID: dict[str, int] = {c: i for i, c in enumerate(CAUSES)}

# Share of unexpected interruptions by cause (Llama 3 herd of models, Table 5, as quoted in issue 2). "other" is
# the remainder: the report's smaller rows (NCCL watchdog timeouts, silent data corruption, server chassis, IO
# expansion board, dependency, CPU, system memory) plus rounding.
CAUSE_SHARES: dict[str, float] = {
    "gpu": 0.30, "hbm": 0.17, "software": 0.13, "network": 0.08, "host_maintenance": 0.08, "gpu_sram": 0.045,
    "gsp": 0.04, "nic": 0.02, "thermal": 0.014, "psu": 0.007, "ssd": 0.007,
}
CAUSE_SHARES["other"] = round(1.0 - sum(CAUSE_SHARES.values()), 6)

CAUSE_GROUP: dict[str, str] = {
    "gpu": "other", "hbm": "memory", "software": "software", "network": "network", "host_maintenance": "other",
    "gpu_sram": "memory", "gsp": "software", "nic": "network", "thermal": "thermal", "psu": "power",
    "ssd": "other", "other": "other",
}

# Precursor signal codes rendered by telemetry.py (kind of the component whose columns change).
SIGNALS: dict[str, str] = {
    "ecc": "gpu",  # SBE ECC + correctable remapped rows climb (HBM)
    "sram": "gpu",  # SBE ECC climbs fast (SRAM)
    "pcie": "gpu",  # PCIe replay counter climbs (GPU about to fall off the bus)
    "gpu_hot": "gpu",  # die temperature floor ramps to slowdown then shutdown
    "nvlink": "gpu",  # NVLink CRC burst (XID 74 noise)
    "cooling": "cooling",  # supply temperature up, airflow down
    "leaf": "leaf",  # switch port errors + latency, IB errors on its nodes
    "cable": "node",  # IB/receive errors on one node and its leaf port
    "nic": "node",  # IB/receive errors on one node
    "edac": "node",  # host memory correctable errors
    "ssd": "node",  # disk io time climbs
    "pdu": "pdu",  # load floor ramps towards the rating
}
SIGNAL_CODE: dict[str, int] = {s: i for i, s in enumerate(SIGNALS)}
SIGNAL_DTYPE = np.dtype([("sig", np.int8), ("col", np.int64), ("t0", np.float64), ("t1", np.float64),
                         ("t2", np.float64), ("amp", np.float32)])


@dataclass(frozen=True)
class Mode:
    """How one kind of root incident plays out."""

    name: str
    cause: str
    split: float  # share of the cause's rate taken by this mode
    root: str  # kind of the root component
    signal: str | None  # precursor signal, None = no precursor (software-like)
    visible: float  # probability that the precursor shows at all
    lead_median_h: float  # median precursor lead time before the first failure
    lead_sigma: float  # log-normal spread of the lead time
    xids: tuple[int, ...] = ()  # XID raised on the failing GPU at failure time (one drawn)
    repair_scale: float = 1.0  # multiple of FaultSpec.repair_hours


MODES: tuple[Mode, ...] = (
    Mode("gpu_bus", "gpu", 1.0, "gpu", "pcie", 0.7, 2.0, 0.7, (79, 45)),
    Mode("hbm", "hbm", 1.0, "gpu", "ecc", 0.9, 12.0, 0.8, (48, 64, 95)),
    Mode("software", "software", 1.0, "node", None, 0.0, 0.0, 0.0, (13, 43, 31), 0.1),
    Mode("leaf", "network", 0.35, "leaf", "leaf", 0.85, 1.0, 0.6, (), 0.75),
    Mode("cable", "network", 0.65, "node", "cable", 0.8, 1.5, 0.6, ()),
    Mode("host_maintenance", "host_maintenance", 1.0, "node", "edac", 0.5, 6.0, 0.8, ()),
    Mode("gpu_sram", "gpu_sram", 1.0, "gpu", "sram", 0.7, 1.2, 0.6, (94, 95)),
    Mode("gsp", "gsp", 1.0, "gpu", None, 0.0, 0.0, 0.0, (119, 120), 0.25),
    Mode("nic", "nic", 1.0, "node", "nic", 0.85, 1.5, 0.6, ()),
    Mode("cooling", "thermal", 0.4, "cooling", "cooling", 1.0, 1.5, 0.5, (79,), 0.75),
    Mode("gpu_thermal", "thermal", 0.6, "gpu", "gpu_hot", 0.9, 1.5, 0.5, (79,)),
    Mode("psu_node", "psu", 0.7, "node", "pdu", 0.8, 0.7, 0.5, ()),
    Mode("pdu_trip", "psu", 0.3, "pdu", "pdu", 0.9, 0.7, 0.5, (), 0.5),
    Mode("ssd", "ssd", 1.0, "node", "ssd", 0.8, 6.0, 0.7, ()),
    Mode("other", "other", 1.0, "node", None, 0.0, 0.0, 0.0, ()),
)
MODE_ID: dict[str, int] = {m.name: i for i, m in enumerate(MODES)}
# Die-temperature floor of a `gpu_hot` precursor: from (slowdown - GPU_HOT_BELOW) up to (shutdown + GPU_HOT_ABOVE),
# shaped p ** GPU_HOT_EXP over the precursor; it crosses the slowdown threshold at about THROTTLE_AT of the way.
GPU_HOT_BELOW, GPU_HOT_ABOVE, GPU_HOT_EXP = 20.0, 2.0, 1.3
THROTTLE_AT = (GPU_HOT_BELOW / (GPU_HOT_BELOW + 5.5 + GPU_HOT_ABOVE)) ** (1.0 / GPU_HOT_EXP)
MIN_LEAD_S = 20 * 60.0  # hardware precursors start at least 20 minutes before the failure
MAX_LEAD_S = 48 * 3600.0
XID74_PER_GPU_HOUR = 2e-4  # NVLink errors that recover (noise), before firmware scaling
BENIGN_RATIO = 1.0  # look-alike precursors that never fail, per real visible precursor
#: Amplitude of a real precursor of a counter signal (events added over the precursor), drawn uniformly.
SIGNAL_AMP_RANGE: dict[str, tuple[float, float]] = {
    "ecc": (200, 5000), "sram": (50, 800), "pcie": (100, 3000), "leaf": (500, 8000), "cable": (200, 4000),
    "nic": (200, 4000), "edac": (20, 500), "ssd": (2000, 20000),
}
#: Shape signals have level 1 when real; a look-alike's is this level times its scale (so always below 1).
BENIGN_LEVEL: dict[str, float] = {"gpu_hot": 0.5, "pdu": 0.6, "cooling": 0.35}
#: A look-alike's amplitude is scaled by U(*BENIGN_AMP_SCALE): smaller than a real precursor's on average.
BENIGN_AMP_SCALE: tuple[float, float] = (0.3, 1.0)
#: A failing cooling unit's doomed nodes start heating (one GPU each) this far into the unit's precursor.
COOLING_HOT_START = 0.5
#: Share of a failed cooling unit's nodes that fail with it, drawn uniformly per incident.
COOLING_FAIL_SHARE: tuple[float, float] = (0.35, 0.75)
COOLING_FAIL_MEAN = sum(COOLING_FAIL_SHARE) / 2
#: A failed leaf switch's nodes go down within this many seconds of it (uniformly); a tripped PDU's within
#: PDU_NODE_DELAY_S.
LEAF_NODE_DELAY_S, PDU_NODE_DELAY_S = 120.0, 30.0


@dataclass(frozen=True)
class Injection:
    """A what-if event: ``component_id`` (of ``kind``) fails at ``at_s`` seconds."""

    component_id: str
    at_s: float
    kind: str = ""

    @property
    def key(self) -> int:
        return zlib.crc32(f"{self.component_id}@{self.at_s}".encode())


@dataclass
class FaultPlan:
    """Everything the fault process decided for one run; the telemetry renderer and the labels follow it."""

    topology: Topology
    hours: float
    acceleration: float
    # one row per root incident (incl. benign look-alikes, failed=False): incident, mode, cause, root (global
    # index), t_fail, t_onset (s, precursor start), visible, benign, injected, failed, t_first (s), n_nodes
    incidents: pd.DataFrame
    failures: pd.DataFrame  # one row per node failure: node, t, t_repair, cause, root, incident
    signals: np.ndarray  # SIGNAL_DTYPE records
    _rows: list[tuple] = field(default_factory=list, repr=False)  # raw event rows, see `events`
    _events: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def events(self) -> pd.DataFrame:
        """Events of the fault process (sorted by time); see docs/data-contract.md for the columns."""
        if self._events is None:
            self._events = events_frame(self.topology, self._rows)
        return self._events

    def interruptions(self, within_hours: float | None = None) -> pd.DataFrame:
        """Root incidents that took down at least one node before ``within_hours`` (default: the run)."""
        h = self.hours if within_hours is None else within_hours
        inc = self.incidents
        return inc[inc["failed"] & (inc["t_first"] < h * 3600.0)]


def events_frame(topology: Topology, rows: list[tuple]) -> pd.DataFrame:
    """Build the events DataFrame from raw rows ``(t, comp_global, event, cause_id, root_global, xid, detail)``."""
    cols = ["t", "component_id", "kind", "event", "cause", "root_component", "xid", "detail"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("t", "xid") else object) for c in cols})
    t, comp, ev, cause, root, xid, detail = zip(*rows, strict=True)
    ids = topology.components["component_id"].to_numpy()
    kinds = topology.components["kind"].to_numpy()
    comp_a = np.asarray(comp, dtype=np.int64)
    root_a = np.asarray(root, dtype=np.int64)
    cause_names = np.array(CAUSES + ("",), dtype=object)
    cause_a = np.asarray(cause, dtype=np.int64)
    df = pd.DataFrame({
        "t": np.asarray(t, dtype=np.float64).round().astype(np.int64),
        "component_id": ids[comp_a],
        "kind": kinds[comp_a],
        "event": np.asarray(ev, dtype=object),
        "cause": cause_names[np.where(cause_a < 0, len(CAUSES), cause_a)],
        "root_component": np.where(root_a >= 0, ids[np.maximum(root_a, 0)], ""),
        "xid": np.asarray(xid, dtype=np.int64),
        "detail": np.asarray(detail, dtype=object),
    })
    return df.sort_values(["t", "component_id", "event"], kind="stable").reset_index(drop=True)


def firmware_factor(firmware_quality: float) -> float:
    """Multiplier on software/GSP faults and XID noise: 1 at quality 0.8, ~1.7 at 0.3, ~0.7 at 1.0."""
    return (1.5 - firmware_quality) / 0.7


def mode_rates(topology: Topology, acceleration: float) -> np.ndarray:
    """Expected root incidents per hour of every mode in `MODES` for this site."""
    fs = topology.spec.faults
    n_gpu = topology.count("gpu")
    fw = firmware_factor(fs.firmware_quality)
    rates = np.empty(len(MODES))
    for i, m in enumerate(MODES):
        mult = (fw if m.cause in ("software", "gsp") else fs.rate_scale) * fs.cause_scale.get(m.cause, 1.0)
        rates[i] = fs.base_rate_per_gpu_hour * acceleration * mult * CAUSE_SHARES[m.cause] * m.split * n_gpu
    return rates


def _validate_plan_args(hours: float, acceleration: float) -> None:
    if not np.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    if not np.isfinite(acceleration) or acceleration <= 0:
        raise ValueError(f"acceleration must be a positive number, got {acceleration!r}")


class _Builder:
    """Accumulates failures, signals and event rows while incidents are expanded."""

    def __init__(self, topology: Topology, rng: np.random.Generator, repair_h: float) -> None:
        self.topo = topology
        self.rng = rng
        self.repair_h = repair_h
        self.fail_rows: list[tuple[int, float, float, int, int, int, int]] = []
        self.sig_rows: list[tuple[int, int, float, float, float, float]] = []
        self.ev: list[tuple] = []
        ki = topology.kind_index
        self.g_gpu, self.g_node, self.g_leaf = ki["gpu"], ki["node"], ki["leaf"]
        self.g_pdu, self.g_cool = ki["pdu"], ki["cooling"]
        self.gpn = topology.spec.gpus_per_node

    def signal(self, name: str, col: int, t0: float, t1: float, amp: float, t2: float | None = None) -> None:
        self.sig_rows.append((SIGNAL_CODE[name], int(col), t0, t1, t1 if t2 is None else t2, amp))

    def repair_time(self, mode: Mode) -> float:
        return float(self.repair_h * mode.repair_scale * self.rng.lognormal(0.0, 0.5) * 3600.0)


def _lead_s(rng: np.random.Generator, mode: Mode) -> float:
    lead = mode.lead_median_h * 3600.0 * float(rng.lognormal(0.0, mode.lead_sigma))
    return float(min(max(lead, MIN_LEAD_S), MAX_LEAD_S))


def _expand(b: _Builder, mode: Mode, root_local: int, t_fail: float, visible: bool,
            lead: float, benign: bool, detail_prefix: str = "") -> tuple[list[tuple], float]:
    """Expand one incident into signals, events and candidate node failures ``(node, t, t_repair, gpu)``."""
    topo, rng = b.topo, b.rng
    cause = CAUSE_ID[mode.cause]
    t0 = t_fail - lead
    amp_scale = float(rng.uniform(*BENIGN_AMP_SCALE)) if benign else 1.0
    level = 1.0 if not benign else BENIGN_LEVEL.get(mode.signal or "", 0.0) * amp_scale
    candidates: list[tuple] = []
    root_kind = mode.root
    root_g = int(topo.kind_index[root_kind][root_local])
    what = "look-alike, recovers" if benign else mode.cause
    if visible and mode.signal is not None:
        b.ev.append((t0, root_g, "degrade", cause if not benign else -1, root_g, -1,
                     f"{detail_prefix}{mode.signal} precursor begins ({what})"))
    repair = b.repair_time(mode)

    if root_kind == "gpu":
        gpu = root_local
        node = gpu // b.gpn
        if visible:
            if mode.signal == "ecc":
                # t2 = time of XID 63 (an uncorrectable error remapped a row: DBE and uncorrectable rows +1)
                t63 = t_fail - float(rng.uniform(5, 45)) * 60.0 if not benign else np.inf
                b.signal("ecc", gpu, t0, t_fail, float(rng.uniform(*SIGNAL_AMP_RANGE["ecc"])) * amp_scale, t2=t63)
                if not benign:
                    b.ev.append((t63, root_g, "xid", cause, root_g, 63, "row remapping event (XID 63)"))
            elif mode.signal == "sram":
                b.signal("sram", gpu, t0, t_fail, float(rng.uniform(*SIGNAL_AMP_RANGE["sram"])) * amp_scale)
            elif mode.signal == "pcie":
                b.signal("pcie", gpu, t0, t_fail, float(rng.uniform(*SIGNAL_AMP_RANGE["pcie"])) * amp_scale)
            elif mode.signal == "gpu_hot":
                b.signal("gpu_hot", gpu, t0, t_fail, level)
                if not benign:
                    b.ev.append((t0 + THROTTLE_AT * lead, root_g, "throttle", cause, root_g, -1,
                                 "thermal slowdown: clocks reduced"))
        if benign:
            b.ev.append((t_fail, root_g, "recover", -1, root_g, -1, f"{mode.signal} precursor subsided"))
            return candidates, repair
        xid = int(rng.choice(mode.xids)) if mode.xids else -1
        if xid >= 0:
            b.ev.append((t_fail, root_g, "xid", cause, root_g, xid, f"XID {xid} ({mode.cause})"))
        candidates.append((node, t_fail, t_fail + repair, gpu))
        return candidates, repair

    if root_kind == "node":
        node = root_local
        if visible and mode.signal is not None:
            if mode.signal == "pdu":
                b.signal("pdu", int(topo.pdu_of_node[node]), t0, t_fail, level)
            elif mode.signal == "cable":
                b.signal("cable", node, t0, t_fail, float(rng.uniform(*SIGNAL_AMP_RANGE["cable"])) * amp_scale)
            else:
                b.signal(mode.signal, node, t0, t_fail,
                         float(rng.uniform(*SIGNAL_AMP_RANGE[mode.signal])) * amp_scale)
        if benign:
            b.ev.append((t_fail, root_g, "recover", -1, root_g, -1, f"{mode.signal} precursor subsided"))
            return candidates, repair
        gpu = -1
        if mode.xids:
            gpu = node * b.gpn + int(rng.integers(b.gpn))
            xid = int(rng.choice(mode.xids))
            b.ev.append((t_fail, int(b.g_gpu[gpu]), "xid", cause, root_g, xid, f"XID {xid} ({mode.cause})"))
        candidates.append((node, t_fail, t_fail + repair, gpu))
        return candidates, repair

    if root_kind == "leaf":
        nodes = np.flatnonzero(topo.leaf_of_node == root_local)
        if visible:
            b.signal("leaf", root_local, t0, t_fail, float(rng.uniform(*SIGNAL_AMP_RANGE["leaf"])) * amp_scale,
                     t2=t_fail if benign else t_fail + repair)
        if benign:
            b.ev.append((t_fail, root_g, "recover", -1, root_g, -1, "switch port errors subsided"))
            return candidates, repair
        b.ev.append((t_fail, root_g, "failure", cause, root_g, -1,
                     f"{detail_prefix}leaf switch down: NCCL timeouts on {len(nodes)} nodes"))
        b.ev.append((t_fail + repair, root_g, "recover", cause, root_g, -1, "leaf switch repaired"))
        for n in nodes:
            candidates.append((int(n), t_fail + float(rng.uniform(0, LEAF_NODE_DELAY_S)), t_fail + repair, -1))
        return candidates, repair

    if root_kind == "pdu":
        rack = int(topo.rack_of_pdu[root_local])
        nodes = np.flatnonzero(topo.rack_of_node == rack)
        if visible:
            b.signal("pdu", root_local, t0, t_fail, level)
        if benign:
            b.ev.append((t_fail, root_g, "recover", -1, root_g, -1, "PDU load back to normal"))
            return candidates, repair
        b.ev.append((t_fail, root_g, "failure", cause, root_g, -1,
                     f"{detail_prefix}PDU tripped at its rating; rack {topo.ids['rack'][rack]} lost power"))
        b.ev.append((t_fail + repair, root_g, "recover", cause, root_g, -1, "PDU reset"))
        for n in nodes:
            candidates.append((int(n), t_fail + float(rng.uniform(0, PDU_NODE_DELAY_S)), t_fail + repair, -1))
        return candidates, repair

    # cooling unit: the racks it cools heat up; the hottest GPUs throttle, then shut down (XID 79)
    racks = np.flatnonzero(topo.cooling_of_rack == root_local)
    nodes = np.flatnonzero(np.isin(topo.rack_of_node, racks))
    hold = t_fail if benign else t_fail + repair
    b.signal("cooling", root_local, t0, t_fail, level, t2=hold)
    if benign:
        b.ev.append((t_fail, root_g, "recover", -1, root_g, -1, "cooling unit back to set point"))
        return candidates, repair
    b.ev.append((t_fail, root_g, "failure", cause, root_g, -1,
                 f"{detail_prefix}cooling unit failed; racks {', '.join(topo.ids['rack'][r] for r in racks)} "
                 "overheat"))
    b.ev.append((t_fail + repair, root_g, "recover", cause, root_g, -1, "cooling unit repaired"))
    frac = float(rng.uniform(*COOLING_FAIL_SHARE))
    k = max(1, int(round(frac * len(nodes))))
    chosen = rng.choice(nodes, size=k, replace=False)
    delays = np.sort(rng.uniform(0, 3600.0, size=k))
    delays[0] = 0.0
    for n, d in zip(chosen, delays, strict=True):
        gpu = int(n) * b.gpn + int(rng.integers(b.gpn))
        tf = t_fail + float(d)
        hot0 = t0 + COOLING_HOT_START * lead
        b.signal("gpu_hot", gpu, hot0, tf, 1.0)
        b.ev.append((hot0 + THROTTLE_AT * (tf - hot0), int(b.g_gpu[gpu]), "throttle", cause, root_g, -1,
                     "thermal slowdown: inlet temperature high"))
        b.ev.append((tf, int(b.g_gpu[gpu]), "xid", cause, root_g, 79, "XID 79: GPU fell off the bus (overheat)"))
        candidates.append((int(n), tf, t_fail + repair, gpu))
    return candidates, repair


#: Events a GPU's driver logs (an XID, a thermal slowdown): a GPU whose node is down logs none.
GPU_LOGGED_EVENTS: frozenset[str] = frozenset({"xid", "throttle"})


def _logged_while_up(rows: list[tuple], kept: list[tuple], topo: Topology) -> list[tuple]:
    """Drop the GPU-logged events that fall inside their node's downtime ``(t, t_repair)``.

    Incidents are expanded before step 3 knows which node failures happen, so a precursor's XID 63, the XID of
    a failure that was dropped because its node was already down, or an XID 74 burst can land on a powered-off
    GPU. Nothing logs them there (DCGM and the driver are down with the node); the XID a failure raises at the
    failure instant itself stays. Filtering after the draws leaves the random stream, and so every failure and
    precursor, unchanged.
    """
    if not kept:
        return rows
    downs: dict[int, list[tuple[float, float]]] = {}
    for node, t, tr, _gpu, _inc in kept:
        downs.setdefault(int(node), []).append((float(t), float(tr)))
    g0 = int(topo.kind_index["gpu"][0]) if topo.count("gpu") else 0
    n_gpu = topo.count("gpu")

    def down(comp: int, t: float) -> bool:
        local = comp - g0
        if not 0 <= local < n_gpu:
            return False
        return any(t0 < t < t1 for t0, t1 in downs.get(int(topo.node_of_gpu[local]), ()))

    return [r for r in rows if not (r[2] in GPU_LOGGED_EVENTS and down(int(r[1]), float(r[0])))]


def _injection_mode(topology: Topology, inj: Injection) -> tuple[Mode, int]:
    kind, local = topology.find(inj.component_id)
    if inj.kind and inj.kind != kind:
        raise ValueError(f"what-if names {inj.component_id!r} as a {inj.kind}, but it is a {kind}")
    by_kind = {"cooling": "cooling", "leaf": "leaf", "pdu": "pdu_trip", "node": "psu_node", "gpu": "gpu_bus"}
    if kind not in by_kind:
        raise ValueError(f"cannot inject a failure into {inj.component_id!r} of kind {kind!r} "
                         f"(supported kinds: {', '.join(by_kind)})")
    return MODES[MODE_ID[by_kind[kind]]], local


def plan_faults(topology: Topology, hours: float, rng: np.random.Generator, acceleration: float = 1.0,
                injections: tuple[Injection, ...] = (), injection_seed: int = 0) -> FaultPlan:
    """Sample root incidents over the run (plus a 48 h look-ahead for late precursors) and expand them.

    Incident times are a Poisson process per mode; the root component is drawn in proportion to the GPUs it
    serves, so the interruption rate per GPU-hour does not depend on the topology's shape. A node that is down
    cannot fail again until repaired (those candidate failures are dropped).
    """
    _validate_plan_args(hours, acceleration)
    topo = topology
    horizon_s = hours * 3600.0 + MAX_LEAD_S
    rates = mode_rates(topo, acceleration)
    b = _Builder(topo, rng, topo.spec.faults.repair_hours)
    n_gpu = topo.count("gpu")
    node_of_gpu = topo.node_of_gpu

    # 1) root incidents (real and benign look-alikes) in one vectorised draw per mode
    counts = rng.poisson(rates * horizon_s / 3600.0)
    visible_rates = np.array([r * m.visible if m.signal else 0.0 for r, m in zip(rates, MODES, strict=True)])
    benign_counts = rng.poisson(visible_rates * BENIGN_RATIO * horizon_s / 3600.0)
    recs = []
    for mi, mode in enumerate(MODES):
        for benign, n in ((False, counts[mi]), (True, benign_counts[mi])):
            if n == 0:
                continue
            gpus = rng.integers(0, n_gpu, size=n)
            node = node_of_gpu[gpus]
            root_local = {
                "gpu": gpus, "node": node, "leaf": topo.leaf_of_node[node], "pdu": topo.pdu_of_node[node],
                "cooling": topo.cooling_of_rack[topo.rack_of_node[node]],
            }[mode.root]
            t_fail = rng.uniform(0.0, horizon_s, size=n)
            vis = rng.random(n) < mode.visible if mode.signal else np.zeros(n, bool)
            if benign:
                vis[:] = True
            for j in range(n):
                recs.append((t_fail[j], mi, int(root_local[j]), bool(vis[j]), benign, ""))
    recs.sort(key=lambda r: (r[0], r[1], r[2]))

    # 2) what-if injections: abrupt failures, drawn from their own stream so the baseline is unchanged
    inj_recs = []
    for inj in injections:
        mode, local = _injection_mode(topo, inj)
        irng = np.random.default_rng([injection_seed, inj.key])
        quick = {"cooling": irng.uniform(20, 40) * 60.0, "leaf": irng.uniform(0, 120.0)}.get(mode.root, 0.0)
        if inj.at_s < 0 or inj.at_s > hours * 3600.0:
            raise ValueError(f"what-if time {inj.at_s / 3600:.2f}h is outside the run (0..{hours}h)")
        inj_recs.append((inj.at_s + quick, MODE_ID[mode.name], local, True, False, "[what-if] ", irng, inj))

    inc_rows = []
    candidates: list[tuple] = []  # (node, t, t_repair, gpu, incident)
    for rec in recs + inj_recs:
        t_fail, mi, root_local, vis, benign, prefix = rec[:6]
        mode = MODES[mi]
        inc_id = len(inc_rows)
        if len(rec) > 6:
            irng, inj = rec[6], rec[7]
            saved, b.rng = b.rng, irng
            vis = mode.root == "cooling"  # only a failed cooling unit takes a while (the racks heat up)
            lead = t_fail - inj.at_s if vis else 0.0
            root_g = int(topo.kind_index[mode.root][root_local])
            b.ev.append((inj.at_s, root_g, "inject", CAUSE_ID[mode.cause], root_g, -1,
                         f"what-if: {inj.component_id} fails at {inj.at_s / 3600:.2f}h"))
            cands, _ = _expand(b, mode, root_local, t_fail, vis, lead, False, prefix)
            b.rng = saved
        else:
            lead = _lead_s(rng, mode) if vis else 0.0
            cands, _ = _expand(b, mode, root_local, t_fail, vis, lead, benign)
        inc_rows.append((inc_id, mode.name, mode.cause, int(topo.kind_index[mode.root][root_local]), t_fail,
                         t_fail - lead, vis, benign, prefix != ""))
        candidates.extend((n, t, tr, g, inc_id) for n, t, tr, g in cands)

    # 3) a node that is down cannot fail again: drop candidate failures that land in a downtime
    candidates.sort(key=lambda c: (c[1], c[0]))
    down_until = np.full(topo.count("node"), -np.inf)
    kept = []
    for node, t, tr, gpu, inc in candidates:
        if t < down_until[node]:
            continue
        down_until[node] = tr
        kept.append((node, t, tr, gpu, inc))

    incidents = pd.DataFrame(inc_rows, columns=["incident", "mode", "cause", "root", "t_fail", "t_onset",
                                                "visible", "benign", "injected"])
    if kept:
        fk = np.array([(k[0], k[1], k[2], k[3], k[4]) for k in kept], dtype=np.float64)
    else:
        fk = np.zeros((0, 5))
    inc_idx = fk[:, 4].astype(np.int64)
    failures = pd.DataFrame({
        "node": fk[:, 0].astype(np.int64), "t": fk[:, 1], "t_repair": fk[:, 2], "gpu": fk[:, 3].astype(np.int64),
        "incident": inc_idx,
        "cause": np.array([CAUSE_ID[c] for c in incidents["cause"].to_numpy()[inc_idx]], dtype=np.int8),
        "root": incidents["root"].to_numpy()[inc_idx].astype(np.int64) if len(inc_idx) else np.zeros(0, np.int64),
    })
    first = failures.groupby("incident")["t"].min()
    incidents["failed"] = incidents["incident"].isin(first.index)
    incidents["t_first"] = incidents["incident"].map(first).fillna(np.inf).to_numpy()  # s; inf = no failure
    incidents["n_nodes"] = incidents["incident"].map(failures.groupby("incident").size()).fillna(0).astype(int)

    # 4) node failure / recovery events, within the run only
    end_s = hours * 3600.0
    g_node = topo.kind_index["node"]
    for (node, t, tr, _gpu, inc), cause, root in zip(kept, failures["cause"], failures["root"], strict=True):
        if t < end_s:
            b.ev.append((t, int(g_node[node]), "failure", int(cause), int(root), -1,
                         f"node down ({CAUSES[cause]}, incident {inc})"))
        if tr < end_s:
            b.ev.append((tr, int(g_node[node]), "recover", int(cause), int(root), -1, "node repaired"))

    # 5) NVLink XID 74 noise: errors that recover on their own
    fw = firmware_factor(topo.spec.faults.firmware_quality)
    n74 = rng.poisson(XID74_PER_GPU_HOUR * fw * topo.spec.faults.noise_scale * n_gpu * hours)
    g74 = rng.integers(0, n_gpu, size=n74)
    t74 = rng.uniform(0, end_s, size=n74)
    amp74 = rng.integers(5, 200, size=n74)
    for gi, ti, ai in zip(g74, t74, amp74, strict=True):
        b.signal("nvlink", int(gi), float(ti), float(ti), float(ai))
        b.ev.append((float(ti), int(topo.kind_index["gpu"][gi]), "xid", -1, -1, 74, "NVLink error, recovered"))

    signals = np.array(b.sig_rows, dtype=SIGNAL_DTYPE) if b.sig_rows else np.zeros(0, SIGNAL_DTYPE)
    signals = signals[np.argsort(signals["t0"], kind="stable")]
    rows = _logged_while_up([r for r in b.ev if r[0] < end_s], kept, topo)
    return FaultPlan(topology=topo, hours=hours, acceleration=acceleration, incidents=incidents,
                     failures=failures, signals=signals, _rows=rows)


def interruption_stats(plans: list[FaultPlan]) -> dict[str, object]:
    """Interruptions per GPU-hour and share per cause over ``plans`` (real, non-injected incidents only)."""
    n = 0
    gpu_hours = 0.0
    by_cause = dict.fromkeys(CAUSES, 0)
    for p in plans:
        inter = p.interruptions()
        inter = inter[~inter["injected"]]
        n += len(inter)
        gpu_hours += p.topology.count("gpu") * p.hours
        for c, k in inter["cause"].value_counts().items():
            by_cause[str(c)] += int(k)
    shares = {c: (k / n if n else 0.0) for c, k in by_cause.items()}
    return {"interruptions": n, "gpu_hours": gpu_hours, "rate_per_gpu_hour": n / gpu_hours if gpu_hours else 0.0,
            "by_cause": by_cause, "shares": shares}
