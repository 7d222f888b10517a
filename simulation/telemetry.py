"""Render telemetry, chunk by chunk in time, from the workload and the fault plan (the vectorised hot path).

Physics, kept simple but causal: node utilisation (workload) -> GPU power -> heat (5-minute thermal inertia) ->
die temperature above the rack inlet; cooling-unit supply temperature -> rack inlet; die temperature above the
model's slowdown threshold -> SM clock throttling and `DCGM_FI_DEV_THERMAL_VIOLATION`; power above TDP ->
`DCGM_FI_DEV_POWER_VIOLATION`; PDU load = sum of its nodes' power. Precursor signals of the fault plan add to
counters (ECC, remapped rows, PCIe replays, NVLink CRC, EDAC, IB errors, disk io time, switch port errors) or
gauges (cooling supply temperature, switch latency, die temperature floor, PDU load floor).

Speed: every array is float32 and [steps, components]; Gaussian noise comes from one pre-drawn pool read at
random offsets (a fresh draw per sample costs more than the rest of the model); counters are only cumulated
over the few columns that move. No Python loop runs per component; loops run per chunk or per active signal.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.signal import lfilter

from infrabrain.simulation.faults import GPU_HOT_ABOVE, GPU_HOT_BELOW, GPU_HOT_EXP, SIGNAL_CODE, FaultPlan
from infrabrain.simulation.labels import Labels
from infrabrain.simulation.spec import GPU_MODELS
from infrabrain.simulation.topology import MODEL_NAMES, Topology
from infrabrain.simulation.workload import Workload, diurnal

GPU_METRICS: tuple[str, ...] = (
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_THERMAL_VIOLATION", "DCGM_FI_DEV_POWER_VIOLATION",
)
NODE_METRICS: tuple[str, ...] = (
    "node_hwmon_temp_celsius", "node_load1", "node_memory_MemAvailable_bytes", "node_edac_correctable_errors_total",
    "node_network_receive_errs_total", "node_infiniband_port_errors_received_total",
    "node_disk_io_time_seconds_total",
)
SWITCH_METRICS: tuple[str, ...] = ("switch_port_errors_total", "switch_port_util", "switch_latency_us")
METRIC_NAMES: dict[str, list[str]] = {
    "gpu": list(GPU_METRICS), "node": list(NODE_METRICS), "leaf": list(SWITCH_METRICS),
    "spine": list(SWITCH_METRICS), "pdu": ["pdu_load_kw", "pdu_rating_kw"],
    "cooling": ["cooling_supply_temp_celsius", "cooling_return_temp_celsius", "cooling_airflow_cfm"],
    "rack": ["rack_inlet_temp_celsius"],
}
G = {name: i for i, name in enumerate(GPU_METRICS)}
N = {name: i for i, name in enumerate(NODE_METRICS)}

THERMAL_TAU_S = 300.0
CFM_PER_RACK = 6000.0
NODE_MEM_BYTES = 2.0e12
GAP_RATE = 2e-5  # probability that one component's scrape is missing at one step


@dataclass
class TelemetryChunk:
    """Telemetry of steps ``[step0, step0 + len(timestamps))``; arrays as in `SiteRun.metrics`."""

    step0: int
    timestamps: np.ndarray
    metrics: dict[str, np.ndarray]

    @property
    def n_samples(self) -> int:
        return int(sum(a.size for a in self.metrics.values()))


class NoisePool:
    """Standard-normal float32 noise drawn once, indexed by (stream key, step, column).

    Noise of stream ``key`` at step ``s``, column ``j`` is ``pool[(offset(key) + s * n + j) mod P]``: a chunk is a
    zero-copy slice, and the values do not depend on how the run is cut into chunks (streamed == in memory).
    """

    def __init__(self, rng: np.random.Generator, n_cols: int, max_chunk_elems: int) -> None:
        self.size = int(np.clip(n_cols * 4096, 1 << 20, 1 << 24)) + 1
        pool = rng.standard_normal(self.size, dtype=np.float32)
        self.ext = np.concatenate([pool, pool[: min(self.size, max_chunk_elems)]])
        while len(self.ext) < self.size + max_chunk_elems:  # chunks larger than the pool: tile it
            self.ext = np.concatenate([self.ext, pool])
        self.base = int(rng.integers(0, self.size))

    def take(self, key: str, s0: int, shape: tuple[int, int]) -> np.ndarray:
        rows, n = shape
        off = (self.base + zlib.crc32(key.encode()) * 2654435761 + s0 * n) % self.size
        return self.ext[off:off + rows * n].reshape(rows, n)

    def bernoulli(self, key: str, s0: int, shape: tuple[int, int], p: np.ndarray | float) -> np.ndarray:
        """Boolean events of probability ``p`` (per column or scalar), deterministic per step like `take`."""
        return self.take(key, s0, shape) > _norm_ppf(1.0 - np.asarray(p, dtype=np.float64)).astype(np.float32)


def _norm_ppf(q: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(q)


#: Steepness of the counter precursors' exponential ramp (:func:`ramp_shape`).
RAMP_K = 3.0


def ramp_shape(p: np.ndarray, k: float = RAMP_K) -> np.ndarray:
    """Share of a precursor's amplitude reached at fraction ``p`` of its lead: ``expm1(k p) / expm1(k)``,
    accelerating from 0 at the onset to 1 at the end (``p`` clipped to [0, 1])."""
    return np.expm1(k * np.clip(p, 0.0, 1.0)) / np.expm1(k)


def _ramp(t: np.ndarray, t0: float, t1: float, k: float = RAMP_K) -> np.ndarray:
    """Accelerating 0 -> 1 ramp over [t0, t1] (exponential shape, :func:`ramp_shape`), 0 before, 1 after."""
    if t1 <= t0:
        return (t >= t1).astype(np.float32)
    return ramp_shape((t - t0) / (t1 - t0), k).astype(np.float32)


def _onehot(assign: np.ndarray, n_cols: int) -> sparse.csr_matrix:
    """Sparse [len(assign), n_cols] membership matrix, for summing members into their parents."""
    return sparse.csr_matrix((np.ones(len(assign), np.float32), (np.arange(len(assign)), assign)),
                             shape=(len(assign), n_cols))


class TelemetryRenderer:
    """Stateful renderer: call `render(s0, s1)` for consecutive chunks."""

    def __init__(self, topology: Topology, plan: FaultPlan, workload: Workload, labels: Labels,
                 rng: np.random.Generator, max_chunk_steps: int) -> None:
        self.topo, self.plan, self.work, self.labels, self.rng = topology, plan, workload, labels, rng
        spec = topology.spec
        self.cad = float(spec.cadence_s)
        self.gpn = spec.gpus_per_node
        n_gpu, n_node = topology.count("gpu"), topology.count("node")
        self.n_gpu, self.n_node = n_gpu, n_node
        self.noise = NoisePool(rng, n_gpu, max_chunk_steps * n_gpu)
        f32 = np.float32
        models = [GPU_MODELS[m] for m in MODEL_NAMES]
        mg = topology.model_of_node[topology.node_of_gpu]
        pick = lambda attr: np.array([getattr(m, attr) for m in models], dtype=f32)[mg]  # noqa: E731
        self.tdp, self.idle_w = pick("tdp_w"), pick("idle_w")
        self.maxclk, self.idleclk = pick("max_sm_clock_mhz"), pick("idle_sm_clock_mhz")
        self.slow, self.shut, self.rise = pick("slowdown_temp_c"), pick("shutdown_temp_c"), pick("thermal_rise_c")
        self.node_overhead = np.array([m.node_overhead_w for m in models], dtype=f32)[topology.model_of_node]
        self.rack_of_gpu = topology.rack_of_node[topology.node_of_gpu]
        # per-GPU static traits: efficiency (util spread inside a job) and thermal offset (paste, airflow)
        self.eff = rng.uniform(0.93, 1.0, n_gpu).astype(f32)
        self.t_off = rng.normal(0.0, 1.5, n_gpu).astype(f32)
        self.rack_off = rng.normal(0.0, 0.8, topology.count("rack")).astype(f32)
        # slow drift: thermal paste / dust make some GPUs run warmer week by week; weather moves the ambient
        self.drift_c_per_day = np.abs(rng.normal(0.0, 0.15, n_gpu)).astype(f32)
        self.weather_phase = float(rng.uniform(0, 2 * np.pi))
        # counter starting values: fleets have history
        self.base = {
            "sbe": np.where(rng.random(n_gpu) < 0.1, rng.integers(1, 500, n_gpu), 0).astype(np.float64),
            "crow": np.where(rng.random(n_gpu) < 0.03, rng.integers(1, 3, n_gpu), 0).astype(np.float64),
            "crc": rng.integers(0, 50, n_gpu).astype(np.float64),
            "pcie": np.where(rng.random(n_gpu) < 0.05, rng.integers(1, 100, n_gpu), 0).astype(np.float64),
            "dbe": np.zeros(n_gpu), "urow": np.zeros(n_gpu),
            "tviol": np.zeros(n_gpu), "pviol": np.zeros(n_gpu),
            "edac": rng.integers(0, 20, n_node).astype(np.float64),
            "rx": rng.integers(0, 10, n_node).astype(np.float64),
            "ib": rng.integers(0, 30, n_node).astype(np.float64),
            "disk": rng.uniform(1e4, 1e6, n_node),
            "leaf_err": rng.integers(0, 100, topology.count("leaf")).astype(np.float64),
            "spine_err": rng.integers(0, 100, topology.count("spine")).astype(np.float64),
        }
        self.xid_last = np.zeros(n_gpu, dtype=f32)
        # benign background: a few GPUs leak correctable ECC errors, a few links flap
        self.leaky = np.flatnonzero(rng.random(n_gpu) < 0.02)
        self.leak_rate = (rng.uniform(0.05, 0.5, len(self.leaky)) * self.cad / 3600.0
                          * spec.faults.noise_scale)
        self.node_to_pdu = _onehot(topology.pdu_of_node, topology.count("pdu"))
        self.rack_to_cool = _onehot(topology.cooling_of_rack, topology.count("cooling"))
        self.heat_zi: np.ndarray | None = None
        alpha = float(np.exp(-self.cad / THERMAL_TAU_S))
        self.filt = (np.array([1.0 - alpha]), np.array([1.0, -alpha]))
        self.folded = np.zeros(len(plan.signals), dtype=bool)
        rating = spec.pdu_rating_kw
        if rating is None:
            peak_node = (np.array([mm.tdp_w for mm in models])[topology.model_of_node] * self.gpn
                         + self.node_overhead) / 1000.0
            per_pdu = np.bincount(topology.pdu_of_node, weights=peak_node, minlength=topology.count("pdu"))
            self.rating = (per_pdu * 1.25).astype(f32)  # headroom: near-rating only on excursions
        else:
            self.rating = np.full(topology.count("pdu"), rating, dtype=f32)
        xe = plan.events
        xe = xe[(xe["event"] == "xid") & (xe["kind"] == "gpu")]
        gidx = {cid: i for i, cid in enumerate(topology.ids["gpu"])} if len(xe) else {}
        # the gauge's changes: every logged XID, and a reset to 0 on every GPU of a repaired node (DCGM starts
        # afresh with the node, it does not carry the code of the failure across the outage)
        rep = plan.failures
        rep_t = np.repeat(rep["t_repair"].to_numpy(np.float64), self.gpn)
        rep_gpu = (rep["node"].to_numpy(np.int64)[:, None] * self.gpn + np.arange(self.gpn)).ravel()
        xid_t = np.concatenate([xe["t"].to_numpy(np.float64), rep_t])
        order = np.argsort(xid_t, kind="stable")
        self.xid_t = xid_t[order]
        self.xid_gpu = np.concatenate([np.array([gidx[c] for c in xe["component_id"]], dtype=np.int64),
                                       rep_gpu])[order]
        self.xid_val = np.concatenate([xe["xid"].to_numpy(np.float32), np.zeros(len(rep_t), np.float32)])[order]

    # -- signals ---------------------------------------------------------------------------------------------
    def _active(self, t_lo: float, t_hi: float) -> np.ndarray:
        """Indices of signals that change values inside [t_lo, t_hi], folding finished counter ones."""
        s = self.plan.signals
        started = s["t0"] <= t_hi
        finished = (np.maximum(s["t1"], s["t2"]) < t_lo) & started & ~self.folded
        for i in np.flatnonzero(finished):
            self._fold(int(i))
        self.folded |= finished
        return np.flatnonzero(started & ~self.folded)

    def _fold(self, i: int) -> None:
        """A finished counter signal keeps its final contribution: move it into the base counters."""
        r = self.plan.signals[i]
        code, col, amp = int(r["sig"]), int(r["col"]), float(r["amp"])
        b = self.base
        if code == SIGNAL_CODE["ecc"]:
            b["sbe"][col] += np.floor(amp)
            b["crow"][col] += np.floor(min(8.0, 1.0 + amp / 800.0))
            if np.isfinite(r["t2"]):
                b["dbe"][col] += 1
                b["urow"][col] += 1
        elif code == SIGNAL_CODE["sram"]:
            b["sbe"][col] += np.floor(amp)
        elif code == SIGNAL_CODE["pcie"]:
            b["pcie"][col] += np.floor(amp)
        elif code == SIGNAL_CODE["nvlink"]:
            b["crc"][col] += np.floor(amp)
        elif code == SIGNAL_CODE["edac"]:
            b["edac"][col] += np.floor(amp)
        elif code == SIGNAL_CODE["nic"]:
            b["ib"][col] += np.floor(amp)
            b["rx"][col] += np.floor(0.3 * amp)
        elif code == SIGNAL_CODE["cable"]:
            b["ib"][col] += np.floor(amp)
            b["rx"][col] += np.floor(0.3 * amp)
            b["leaf_err"][int(self.topo.leaf_of_node[col])] += np.floor(amp)
        elif code == SIGNAL_CODE["ssd"]:
            b["disk"][col] += amp
        elif code == SIGNAL_CODE["leaf"]:
            b["leaf_err"][col] += np.floor(amp)
            nodes = np.flatnonzero(self.topo.leaf_of_node == col)
            b["ib"][nodes] += np.floor(amp / max(1, len(nodes)))

    # -- one chunk -------------------------------------------------------------------------------------------
    def render(self, s0: int, s1: int) -> TelemetryChunk:
        topo, f32 = self.topo, np.float32
        tc, ng, nn, gpn = s1 - s0, self.n_gpu, self.n_node, self.gpn
        t = (np.arange(s0, s1, dtype=np.float64) * self.cad)
        spec = topo.spec
        active = self._active(float(t[0]), float(t[-1]))
        sig = self.plan.signals[active]
        codes = sig["sig"]

        # workload -> utilisation (node) -> heat with thermal inertia
        u_node = self.work.util[s0:s1]
        busy = u_node > 0
        u_node = np.clip(u_node + 0.03 * self.noise.take("n1", s0, (tc, nn)) * busy, 0.0, 1.0)
        if self.heat_zi is None:
            self.heat_zi = (u_node[0] * 1.0)[None, :].astype(np.float64)
        heat_node, self.heat_zi = lfilter(self.filt[0], self.filt[1], u_node, axis=0,
                                          zi=self.heat_zi * self.filt[1][1] * -1.0)
        self.heat_zi = heat_node[-1:][:]
        heat_node = heat_node.astype(f32)

        # cooling units -> rack inlet
        n_cool, n_rack = topo.count("cooling"), topo.count("rack")
        weather = 2.0 * np.sin(2 * np.pi * t / (5 * 86400.0) + self.weather_phase)
        amb = (spec.ambient_temp_c + 3.0 * (diurnal(t) - 0.5) + weather).astype(f32)
        setpoint = 18.0 + 0.25 * (amb - 22.0)
        supply = np.repeat(setpoint[:, None], n_cool, axis=1) + 0.15 * self.noise.take("n2", s0, (tc, n_cool))
        airflow_frac = np.ones((tc, n_cool), dtype=f32)
        for r in sig[codes == SIGNAL_CODE["cooling"]]:
            g = _ramp(t, r["t0"], r["t1"]) * ((t >= r["t0"]) & (t <= r["t2"]))
            supply[:, r["col"]] += 14.0 * r["amp"] * g
            airflow_frac[:, r["col"]] -= 0.6 * r["amp"] * g
        rack_heat = (np.add.reduceat(heat_node, np.arange(0, nn, spec.nodes_per_rack), axis=1)
                     / spec.nodes_per_rack)
        inlet = (supply[:, topo.cooling_of_rack] + 2.0 + self.rack_off + 1.5 * rack_heat
                 + 0.2 * self.noise.take("n3", s0, (tc, n_rack))).astype(f32)

        out_g = np.empty((len(GPU_METRICS), tc, ng), dtype=f32).transpose(1, 2, 0)  # metric-major memory
        # GPU utilisation and power
        u = np.repeat(u_node, gpn, axis=1)
        u *= self.eff
        u += 0.015 * self.noise.take("n4", s0, (tc, ng))
        np.clip(u, 0.0, 1.0, out=u)
        out_g[:, :, G["DCGM_FI_DEV_GPU_UTIL"]] = np.round(u * 100.0)
        power = self.idle_w + (self.tdp - self.idle_w) * u
        power += 6.0 * self.noise.take("n5", s0, (tc, ng))
        pviol = power > self.tdp
        np.minimum(power, self.tdp, out=power)
        out_g[:, :, G["DCGM_FI_DEV_POWER_USAGE"]] = power
        # temperature: inlet + rise x heat + offset + noise, with precursor floors
        temp = np.repeat(heat_node, gpn, axis=1)
        temp *= self.rise
        temp += inlet[:, self.rack_of_gpu]
        temp += self.t_off
        temp += self.drift_c_per_day * (t / 86400.0).astype(f32)[:, None]
        temp += 0.4 * self.noise.take("n6", s0, (tc, ng))
        for r in sig[codes == SIGNAL_CODE["gpu_hot"]]:
            c = int(r["col"])
            inside = (t >= r["t0"]) & (t <= r["t1"])
            if not inside.any():
                continue
            lo, hi = self.slow[c] - GPU_HOT_BELOW, self.shut[c] + GPU_HOT_ABOVE
            p = np.clip((t - r["t0"]) / max(r["t1"] - r["t0"], 1.0), 0, 1)
            floor = lo + (hi - lo) * r["amp"] * p ** GPU_HOT_EXP
            temp[inside, c] = np.maximum(temp[inside, c], floor[inside].astype(f32))
        out_g[:, :, G["DCGM_FI_DEV_GPU_TEMP"]] = temp
        out_g[:, :, G["DCGM_FI_DEV_MEMORY_TEMP"]] = temp + 3.0 + 6.0 * u
        thr = temp - self.slow
        thr *= 0.25
        np.clip(thr, 0.0, 1.0, out=thr)
        clk = np.where(u > 0.05, self.maxclk, self.idleclk)
        clk *= 1.0 - 0.35 * thr
        out_g[:, :, G["DCGM_FI_DEV_SM_CLOCK"]] = np.round(clk)

        # violation counters (microseconds of throttling), cumulated only over columns that throttled
        for key, name, mask in (("tviol", "DCGM_FI_DEV_THERMAL_VIOLATION", thr),
                                ("pviol", "DCGM_FI_DEV_POWER_VIOLATION", pviol)):
            base = self.base[key]
            out_g[:, :, G[name]] = base.astype(f32)
            cols = np.flatnonzero(mask.any(axis=0))
            if len(cols):
                inc = np.cumsum(mask[:, cols].astype(np.float64) * (self.cad * 1e6), axis=0)
                out_g[:, cols, G[name]] = (base[cols] + inc).astype(f32)
                base[cols] += inc[-1]

        # counters: base + active precursor contributions + benign leaks
        ctr = {k: (self.base[k].astype(f32)) for k in ("sbe", "crow", "dbe", "urow", "crc", "pcie")}
        colmap = {"sbe": "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "crow": "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
                  "dbe": "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "urow": "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
                  "crc": "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "pcie": "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"}
        for k, name in colmap.items():
            out_g[:, :, G[name]] = ctr[k]
        out_g[:, :, G["DCGM_FI_DEV_ROW_REMAP_FAILURE"]] = 0.0
        if len(self.leaky):
            inc = self.noise.bernoulli("leak", s0, (tc, len(self.leaky)), self.leak_rate).cumsum(axis=0)
            out_g[:, self.leaky, G["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"]] += inc
            self.base["sbe"][self.leaky] += inc[-1]
        for r in sig:
            code, c = int(r["sig"]), int(r["col"])
            if code == SIGNAL_CODE["ecc"]:
                g = _ramp(t, r["t0"], r["t1"])
                out_g[:, c, G["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"]] += np.floor(r["amp"] * g)
                out_g[:, c, G["DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"]] += np.floor(
                    min(8.0, 1.0 + r["amp"] / 800.0) * g)
                step = (t >= r["t2"]).astype(f32)
                out_g[:, c, G["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"]] += step
                out_g[:, c, G["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"]] += step
            elif code == SIGNAL_CODE["sram"]:
                out_g[:, c, G["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"]] += np.floor(r["amp"] * _ramp(t, r["t0"], r["t1"]))
            elif code == SIGNAL_CODE["pcie"]:
                out_g[:, c, G["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"]] += np.floor(
                    r["amp"] * _ramp(t, r["t0"], r["t1"]))
            elif code == SIGNAL_CODE["nvlink"]:
                out_g[:, c, G["DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL"]] += r["amp"] * (t >= r["t1"])
        # last XID seen (DCGM reports the XID number, 0 = none)
        xg = out_g[:, :, G["DCGM_FI_DEV_XID_ERRORS"]]
        xg[:] = self.xid_last
        # a change at time x shows from the first step at or after x: this chunk takes the changes after its
        # previous step (t[0] - cad), so one landing between two chunks' steps is not lost
        sel = np.flatnonzero((self.xid_t > t[0] - self.cad) & (self.xid_t <= t[-1]))
        for i in sel:
            k = int(np.searchsorted(t, self.xid_t[i], side="left"))
            xg[k:, self.xid_gpu[i]] = self.xid_val[i]
            self.xid_last[self.xid_gpu[i]] = self.xid_val[i]

        # nodes
        out_n = np.empty((len(NODE_METRICS), tc, nn), dtype=f32).transpose(1, 2, 0)
        out_n[:, :, N["node_hwmon_temp_celsius"]] = (inlet[:, topo.rack_of_node] + 12.0 + 18.0 * heat_node
                                                    + 0.5 * self.noise.take("n7", s0, (tc, nn)))
        out_n[:, :, N["node_load1"]] = np.maximum(0.0, 1.0 + 60.0 * u_node + 1.5 * self.noise.take("n8", s0, (tc, nn)))
        out_n[:, :, N["node_memory_MemAvailable_bytes"]] = NODE_MEM_BYTES * (0.92 - 0.6 * u_node)
        disk_rate = (0.03 + 0.12 * u_node) * self.cad
        disk = np.cumsum(disk_rate, axis=0, dtype=np.float64) + self.base["disk"]
        self.base["disk"] = disk[-1].copy()
        out_n[:, :, N["node_disk_io_time_seconds_total"]] = disk
        for k, name in (("edac", "node_edac_correctable_errors_total"), ("rx", "node_network_receive_errs_total"),
                        ("ib", "node_infiniband_port_errors_received_total")):
            out_n[:, :, N[name]] = self.base[k].astype(f32)
        n_leaf = topo.count("leaf")
        leaf_err = np.repeat(self.base["leaf_err"].astype(f32)[None, :], tc, axis=0)
        leaf_lat = np.ones((tc, n_leaf), dtype=f32)
        for r in sig:
            code, c = int(r["sig"]), int(r["col"])
            if code in (SIGNAL_CODE["nic"], SIGNAL_CODE["cable"]):
                g = r["amp"] * _ramp(t, r["t0"], r["t1"])
                out_n[:, c, N["node_infiniband_port_errors_received_total"]] += np.floor(g)
                out_n[:, c, N["node_network_receive_errs_total"]] += np.floor(0.3 * g)
                if code == SIGNAL_CODE["cable"]:
                    leaf_err[:, int(topo.leaf_of_node[c])] += np.floor(g)
            elif code == SIGNAL_CODE["edac"]:
                out_n[:, c, N["node_edac_correctable_errors_total"]] += np.floor(
                    r["amp"] * _ramp(t, r["t0"], r["t1"]))
            elif code == SIGNAL_CODE["ssd"]:
                out_n[:, c, N["node_disk_io_time_seconds_total"]] += r["amp"] * _ramp(t, r["t0"], r["t1"])
            elif code == SIGNAL_CODE["leaf"]:
                g = _ramp(t, r["t0"], r["t1"])
                leaf_err[:, c] += np.floor(r["amp"] * g)
                leaf_lat[:, c] += 40.0 * g * ((t >= r["t0"]) & (t <= r["t2"]))
                nodes = np.flatnonzero(topo.leaf_of_node == c)
                out_n[:, nodes, N["node_infiniband_port_errors_received_total"]] += np.floor(
                    r["amp"] / max(1, len(nodes)) * g)[:, None]

        # switches
        leaf_util = (np.add.reduceat(u_node, np.arange(0, nn, spec.nodes_per_rack), axis=1)
                     / spec.nodes_per_rack)
        out_leaf = np.empty((tc, n_leaf, 3), dtype=f32)
        out_leaf[:, :, 0] = leaf_err
        out_leaf[:, :, 1] = np.clip(0.8 * leaf_util + 0.02 * self.noise.take("n9", s0, (tc, n_leaf)), 0, 1)
        out_leaf[:, :, 2] = leaf_lat + 0.5 * leaf_util + 0.05 * np.abs(self.noise.take("n10", s0, (tc, n_leaf)))
        n_spine = topo.count("spine")
        fab = u_node.mean(axis=1, keepdims=True)
        out_spine = np.empty((tc, n_spine, 3), dtype=f32)
        out_spine[:, :, 0] = self.base["spine_err"].astype(f32)
        out_spine[:, :, 1] = np.clip(0.6 * fab + 0.02 * self.noise.take("n11", s0, (tc, n_spine)), 0, 1)
        out_spine[:, :, 2] = 1.5 + 0.8 * fab + 0.05 * np.abs(self.noise.take("n12", s0, (tc, n_spine)))

        # PDUs: sum of node power on each PDU, with load-floor precursors
        node_w = power.reshape(tc, nn, gpn).sum(axis=2) + self.node_overhead * (0.5 + 0.5 * u_node)
        n_pdu = topo.count("pdu")
        load = (self.node_to_pdu.T @ node_w.T).T.astype(f32) / 1000.0
        for r in sig[codes == SIGNAL_CODE["pdu"]]:
            c = int(r["col"])
            inside = (t >= r["t0"]) & (t <= r["t1"])
            floor = self.rating[c] * (0.75 + 0.24 * r["amp"] * _ramp(t, r["t0"], r["t1"], 2.0))
            load[inside, c] = np.maximum(load[inside, c], floor[inside])
        out_pdu = np.empty((tc, n_pdu, 2), dtype=f32)
        out_pdu[:, :, 0] = load + 0.05 * self.noise.take("n13", s0, (tc, n_pdu))
        out_pdu[:, :, 1] = self.rating

        # cooling units and racks
        heat_kw = np.add.reduceat(node_w, np.arange(0, nn, spec.nodes_per_rack), axis=1) / 1000.0
        cool_kw = (self.rack_to_cool.T @ heat_kw.T).T.astype(f32)
        racks_per_unit = np.bincount(topo.cooling_of_rack, minlength=n_cool).astype(f32)
        airflow = CFM_PER_RACK * racks_per_unit * airflow_frac
        out_cool = np.empty((tc, n_cool, 3), dtype=f32)
        out_cool[:, :, 0] = supply
        # air: delta T (C) ~ kW * 1.76 / (cfm / 1000)
        out_cool[:, :, 1] = supply + cool_kw * 1760.0 / np.maximum(airflow, 1.0) / 1.0
        out_cool[:, :, 2] = airflow + 50.0 * self.noise.take("n14", s0, (tc, n_cool))
        out_rack = inlet[:, :, None]

        # dead nodes report nothing; a few scrapes go missing
        alive = self.labels.alive[s0:s1]
        if not alive.all():
            dead_t, dead_n = np.nonzero(~alive)
            out_n[dead_t, dead_n, :] = np.nan
            gi = (dead_n[:, None] * gpn + np.arange(gpn)).ravel()
            out_g[np.repeat(dead_t, gpn), gi, :] = np.nan
        for arr in (out_g, out_n):
            gap = self.noise.bernoulli(f"gap{arr.shape[1]}", s0, (tc, arr.shape[1]), GAP_RATE)
            if gap.any():
                arr[gap] = np.nan
        return TelemetryChunk(step0=s0, timestamps=(t.astype(np.int64)), metrics={
            "gpu": out_g, "node": out_n, "leaf": out_leaf, "spine": out_spine, "pdu": out_pdu,
            "cooling": out_cool, "rack": out_rack.astype(f32, copy=False),
        })


def iter_chunks(renderer: TelemetryRenderer, n_steps: int, chunk_steps: int) -> Iterator[TelemetryChunk]:
    """Yield consecutive chunks of at most ``chunk_steps`` steps."""
    for s0 in range(0, n_steps, chunk_steps):
        yield renderer.render(s0, min(n_steps, s0 + chunk_steps))
