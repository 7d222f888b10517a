"""Ground truth per node and step: fails within the next hour, the cause, the root component, alive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infrabrain.simulation.faults import FaultPlan

HORIZON_S = 3600.0


@dataclass
class Labels:
    """Per-step, per-node truth; see docs/data-contract.md."""

    fail_within_1h: np.ndarray  # bool [T, n_node]
    cause: np.ndarray  # int8 [T, n_node], index into CAUSES, -1 none
    root_component: np.ndarray  # int64 [T, n_node], global component index, -1 none
    alive: np.ndarray  # bool [T, n_node]


def make_labels(plan: FaultPlan, n_steps: int, cadence_s: int) -> Labels:
    """Label step t of node n with the earliest failure of n in (t, t + 1 h]; alive is False while down."""
    n_node = plan.topology.count("node")
    fail = np.zeros((n_steps, n_node), dtype=bool)
    cause = np.full((n_steps, n_node), -1, dtype=np.int8)
    root = np.full((n_steps, n_node), -1, dtype=np.int64)
    alive = np.ones((n_steps, n_node), dtype=bool)
    f = plan.failures.sort_values("t", ascending=False, kind="stable")  # earliest written last, so it wins
    for node, t, tr, c, r in zip(f["node"].to_numpy(), f["t"].to_numpy(), f["t_repair"].to_numpy(),
                                 f["cause"].to_numpy(), f["root"].to_numpy(), strict=True):
        # steps s with s*cad < t <= s*cad + H
        s0 = max(0, int(np.ceil((t - HORIZON_S) / cadence_s)))
        s1 = min(n_steps, int(np.ceil(t / cadence_s)))
        if s1 > s0:
            fail[s0:s1, node] = True
            cause[s0:s1, node] = c
            root[s0:s1, node] = r
        d0 = max(0, int(np.ceil(t / cadence_s)))
        d1 = min(n_steps, int(np.ceil(tr / cadence_s)))
        if d1 > d0:
            alive[d0:d1, node] = False
    return Labels(fail_within_1h=fail, cause=cause, root_component=root, alive=alive)
