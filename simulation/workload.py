"""Jobs on the site: multi-node jobs with diurnal, bursty arrivals; a node failure kills its job everywhere.

The scheduler is an event loop over jobs (thousands, not components): a job asks for a power-of-two number of
nodes, takes the lowest-numbered free ones (rack locality), runs a log-normal time and ends early when one of its
nodes fails, which raises `job_fail` events on its other nodes. The result is a per-step, per-node array of job
ids and utilisation that drives power and heat in `telemetry.py`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import pandas as pd

from infrabrain.simulation.faults import CAUSES, FaultPlan
from infrabrain.simulation.topology import Topology

# Fraction of a job's utilisation that follows the time of day, per load profile.
PROFILE_DIURNAL_UTIL = {"training": 0.05, "mixed": 0.2, "inference": 0.55}
MAX_WAIT_S = 6 * 3600.0
OVERBOOK = 1.25  # offered load above target: some jobs wait or give up, so the site lands near the target
MAX_QUEUE = 256
PROFILE_INTENSITY = {"training": (0.85, 1.0), "mixed": (0.6, 1.0), "inference": (0.35, 0.9)}


@dataclass
class Workload:
    """Jobs and the per-step node utilisation they cause."""

    jobs: pd.DataFrame  # job, t_start, t_end, n_nodes, intensity, killed_by (cause or "")
    job_of_node: np.ndarray  # int32 [T, n_node], -1 idle
    util: np.ndarray  # float32 [T, n_node] in [0, 1]
    job_fail_rows: list[tuple]  # raw event rows (see faults.events_frame)


def diurnal(t_s: np.ndarray) -> np.ndarray:
    """Day curve in [0, 1]: low at 04:00, high at 16:00 (run starts at midnight)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * ((np.asarray(t_s) / 3600.0 - 4.0) / 24.0))


def _arrivals(rng: np.random.Generator, topology: Topology, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Job arrival times and sizes: thinned non-homogeneous Poisson with batches (bursts)."""
    w = topology.spec.workload
    n_node = topology.count("node")
    max_nodes = int(min(w.max_job_nodes, max(1, n_node // 4)))
    kmax = int(np.floor(np.log2(max_nodes)))
    ks = np.arange(kmax + 1)
    p = 0.6 ** ks
    p /= p.sum()
    mean_size = float((2.0 ** ks * p).sum())
    mean_batch = 1.0 + 4.0 * w.burstiness
    # batches per second
    rate = OVERBOOK * w.mean_utilisation * n_node / (mean_size * w.mean_job_hours * 3600.0) / mean_batch
    peak = rate * (1.0 + w.diurnal_amplitude)
    n = rng.poisson(peak * horizon_s)
    t = np.sort(rng.uniform(0.0, horizon_s, size=n))
    accept = rng.random(n) < (1.0 - w.diurnal_amplitude + 2 * w.diurnal_amplitude * diurnal(t)) / (
        1.0 + w.diurnal_amplitude)
    t = t[accept]
    batch = 1 + rng.poisson(mean_batch - 1.0, size=len(t))
    t = np.repeat(t, batch) + rng.uniform(0.0, 120.0, size=int(batch.sum()))
    t.sort()
    sizes = (2 ** rng.choice(ks, size=len(t), p=p)).astype(np.int64)
    return t, sizes


def schedule(topology: Topology, plan: FaultPlan, n_steps: int, cadence_s: int,
             rng: np.random.Generator) -> Workload:
    """Run the scheduler over ``n_steps`` steps against the node failures of ``plan``."""
    spec = topology.spec
    w = spec.workload
    n_node = topology.count("node")
    horizon = n_steps * cadence_s
    warmup = 3.0 * w.mean_job_hours * 3600.0  # start with a busy site, not an empty one
    t_arr, sizes = _arrivals(rng, topology, horizon + warmup)
    t_arr = t_arr - warmup
    lo, hi = PROFILE_INTENSITY[w.profile]
    intensity = rng.uniform(lo, hi, size=len(t_arr)).astype(np.float32)
    durations = w.mean_job_hours * 3600.0 * rng.lognormal(-0.5, 1.0, size=len(t_arr))

    # event heap: (time, priority, kind, payload); failures/repairs before ends before arrivals at equal times
    heap: list[tuple[float, int, int, int]] = []
    fails = plan.failures
    fail_node = fails["node"].to_numpy()
    fail_t = fails["t"].to_numpy()
    repair_t = fails["t_repair"].to_numpy()
    for i in range(len(fails)):
        if fail_t[i] < horizon:
            heapq.heappush(heap, (float(fail_t[i]), 0, 0, i))
        if repair_t[i] < horizon:
            heapq.heappush(heap, (float(repair_t[i]), 1, 1, i))
    for j in range(len(t_arr)):
        heapq.heappush(heap, (float(t_arr[j]), 3, 3, j))

    free = np.ones(n_node, dtype=bool)
    down = np.zeros(n_node, dtype=bool)
    running = np.full(n_node, -1, dtype=np.int64)
    job_nodes: dict[int, np.ndarray] = {}
    start = np.full(len(t_arr), np.nan)
    end = np.full(len(t_arr), np.nan)
    killed = np.full(len(t_arr), "", dtype=object)
    job_fail_rows: list[tuple] = []
    g_node = topology.kind_index["node"]
    cause_of_fail = fails["cause"].to_numpy()
    root_of_fail = fails["root"].to_numpy()

    waiting: list[int] = []  # jobs that found no room yet (FIFO with backfill)

    def try_start(j: int, t: float) -> bool:
        want = int(sizes[j])
        idx = np.flatnonzero(free)
        if len(idx) < want:
            return False
        nodes = idx[:want]
        free[nodes] = False
        running[nodes] = j
        job_nodes[j] = nodes
        start[j] = t
        end[j] = t + durations[j]
        heapq.heappush(heap, (float(end[j]), 2, 2, j))
        return True

    def drain(t: float) -> None:
        keep = []
        for j in waiting:
            if t - t_arr[j] > MAX_WAIT_S:
                continue  # gave up waiting
            if not try_start(j, t):
                keep.append(j)
        waiting[:] = keep

    while heap:
        t, _, kind, i = heapq.heappop(heap)
        if kind == 0:  # node failure
            n = int(fail_node[i])
            down[n] = True
            free[n] = False
            j = int(running[n])
            if j >= 0 and end[j] > t:
                nodes = job_nodes[j]
                end[j] = t
                killed[j] = CAUSES[int(cause_of_fail[i])]
                for other in nodes:
                    running[other] = -1
                    if other != n:
                        free[other] = not down[other]
                        job_fail_rows.append((t, int(g_node[other]), "job_fail", int(cause_of_fail[i]),
                                              int(root_of_fail[i]), -1,
                                              f"job {j} killed: node {topology.ids['node'][n]} failed"))
            running[n] = -1
            drain(t)
        elif kind == 1:  # repair
            n = int(fail_node[i])
            down[n] = False
            free[n] = running[n] < 0
            drain(t)
        elif kind == 2:  # job end
            if end[i] == t:
                for n in job_nodes[i]:
                    if running[n] == i:
                        running[n] = -1
                        free[n] = not down[n]
                drain(t)
        elif not try_start(i, t) and len(waiting) < MAX_QUEUE:  # arrival
            waiting.append(i)

    # paint the job ids on the [T, n_node] grid (one slice per job)
    job_of_node = np.full((n_steps, n_node), -1, dtype=np.int32)
    for j, nodes in job_nodes.items():
        s0 = max(0, int(np.ceil(start[j] / cadence_s)))
        s1 = int(min(n_steps, np.ceil(end[j] / cadence_s)))
        if s1 > s0:
            job_of_node[s0:s1, nodes] = j
    t_steps = np.arange(n_steps) * float(cadence_s)
    a = PROFILE_DIURNAL_UTIL[w.profile]
    day = (1.0 - a + a * diurnal(t_steps)).astype(np.float32)
    lut = np.concatenate([intensity, np.zeros(1, np.float32)])
    util = lut[job_of_node] * day[:, None]  # idle nodes: index -1 -> 0
    util = util.astype(np.float32, copy=False)

    ran = ~np.isnan(start) & (end > 0)
    jobs = pd.DataFrame({
        "job": np.flatnonzero(ran), "t_start": start[ran], "t_end": np.minimum(end[ran], horizon),
        "n_nodes": sizes[ran], "intensity": intensity[ran], "killed_by": killed[ran],
    })
    return Workload(jobs=jobs, job_of_node=job_of_node, util=util, job_fail_rows=job_fail_rows)
