"""What-if: run the same site with and without an injected failure and report what fails, when, along which path.

Both runs share every random stream (`engine._streams`); the injected event draws from its own stream, so any
difference between them is caused by the injection.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infrabrain.simulation.engine import SiteSimulation
from infrabrain.simulation.faults import CAUSES, Injection
from infrabrain.simulation.spec import SiteSpec, _format_validation_error
from infrabrain.simulation.topology import EDGE_TYPES, Topology

_WHAT_IF = re.compile(
    r"^\s*(?:(?P<kind>cooling|leaf|pdu|node|gpu)\s+)?(?P<comp>[A-Za-z0-9_.-]+)\s+fails?\s+at\s+"
    r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>h|hours?|m|min|minutes?|s|sec|seconds?)?\s*$", re.IGNORECASE)
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_time(text: str | float) -> float:
    """``"3h"``, ``"90m"``, ``"45s"`` or a number of hours -> seconds."""
    if isinstance(text, (int, float)):
        return float(text) * 3600.0
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(h|hours?|m|min|minutes?|s|sec|seconds?)?\s*", str(text), re.I)
    if not m:
        raise ValueError(f"bad time {text!r}: use e.g. 3h, 90m or 45s")
    return float(m.group(1)) * _UNIT_S[(m.group(2) or "h")[0].lower()]


def parse_what_if(text: str) -> Injection:
    """Parse ``"[kind] COMPONENT fails at TIME"``, e.g. ``"cooling crac-2 fails at 3h"``."""
    m = _WHAT_IF.match(text or "")
    if not m:
        raise ValueError(f"--what-if {text!r} not understood: write '[cooling|leaf|pdu|node|gpu] COMPONENT fails "
                         "at TIME', e.g. 'cooling crac-2 fails at 3h'")
    at = float(m.group("num")) * _UNIT_S[(m.group("unit") or "h")[0].lower()]
    return Injection(component_id=m.group("comp"), at_s=at, kind=(m.group("kind") or "").lower())


class ScenarioEvent(BaseModel):
    """One injected failure of a scenario file."""

    model_config = ConfigDict(extra="forbid")

    component: str = Field(min_length=1)
    at: str | float = Field(description="time after the start: 3h, 90m, 45s, or hours as a number")
    kind: str = ""

    @field_validator("at")
    @classmethod
    def _validate_at(cls, v: str | float) -> str | float:
        if parse_time(v) < 0:
            raise ValueError(f"time must be >= 0, got {v!r}")
        return v


class Scenario(BaseModel):
    """A what-if scenario file: the site, the run and the injected failures."""

    model_config = ConfigDict(extra="forbid")

    site: SiteSpec = Field(default_factory=SiteSpec)
    hours: float = Field(12.0, gt=0, le=24 * 366)
    seed: int = Field(0, ge=0)
    acceleration: float = Field(1.0, gt=0)
    events: list[ScenarioEvent] = Field(min_length=1)

    def injections(self) -> tuple[Injection, ...]:
        return tuple(Injection(e.component, parse_time(e.at), e.kind) for e in self.events)


def load_scenario(path: str | Path) -> Scenario:
    """Load a `Scenario` from YAML; errors name the file and the field."""
    from infrabrain.yaml_file import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p, "scenario", "a mapping with 'site', 'hours' and 'events'")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_format_validation_error(exc, str(p)).replace("SiteSpec", "scenario")) from None


def graph_path(topology: Topology, src: int, dst: int) -> list[tuple[str, str]]:
    """Shortest path from component ``src`` to ``dst`` (global indices) as ``[(component_id, via_edge_type)]``."""
    adj = topology.__dict__.get("_adj")
    if adj is None:
        adj = [[] for _ in range(len(topology.components))]
        for (a, b), et in zip(topology.edges.tolist(), topology.edge_type.tolist(), strict=True):
            adj[a].append((b, et))
            adj[b].append((a, et))
        topology.__dict__["_adj"] = adj
    prev: dict[int, tuple[int, int]] = {src: (-1, -1)}
    q = deque([src])
    while q:
        u = q.popleft()
        if u == dst:
            break
        for v, et in adj[u]:
            if v not in prev:
                prev[v] = (u, et)
                q.append(v)
    if dst not in prev:
        return []
    ids = topology.components["component_id"].to_numpy()
    out, u = [], dst
    while u != -1:
        p, et = prev[u]
        out.append((str(ids[u]), EDGE_TYPES[et] if et >= 0 else ""))
        u = p
    return out[::-1]


@dataclass
class WhatIfResult:
    """Baseline vs scenario: failures caused by the injection, with their path from the injected component."""

    injections: tuple[Injection, ...]
    baseline: SiteSimulation
    scenario: SiteSimulation
    caused: pd.DataFrame  # t_h, component_id, cause, root_component, path, xid

    def report(self) -> dict[str, object]:
        b_ev, s_ev = self.baseline.events, self.scenario.events
        return {
            "site": self.scenario.spec.name,
            "injections": [{"component": i.component_id, "at_h": i.at_s / 3600.0} for i in self.injections],
            "baseline_node_failures": int(((b_ev["event"] == "failure") & (b_ev["kind"] == "node")).sum()),
            "scenario_node_failures": int(((s_ev["event"] == "failure") & (s_ev["kind"] == "node")).sum()),
            "caused_failures": self.caused.to_dict(orient="records"),
            "jobs_killed_baseline": int((b_ev["event"] == "job_fail").sum()),
            "jobs_killed_scenario": int((s_ev["event"] == "job_fail").sum()),
        }

    def format(self) -> str:
        r = self.report()
        lines = [f"what-if on {r['site']}: " + "; ".join(f"{i['component']} fails at {i['at_h']:.2f}h"
                                                      for i in r["injections"]),  # type: ignore[union-attr]
                 f"node failures: baseline {r['baseline_node_failures']}, with the event "
                 f"{r['scenario_node_failures']}; nodes whose job was killed elsewhere: baseline "
                 f"{r['jobs_killed_baseline']}, with the event {r['jobs_killed_scenario']}"]
        if self.caused.empty:
            lines.append("the injected event caused no node failure within the run")
        for row in self.caused.itertuples():
            lines.append(f"  {row.t_h:6.2f}h  {row.component_id:<14} {row.cause:<8} path: {row.path}")
        return "\n".join(lines)


def run_what_if(spec: SiteSpec, hours: float, injections: tuple[Injection, ...], seed: int = 0,
                acceleration: float = 1.0) -> WhatIfResult:
    """Run ``spec`` with and without ``injections``; return the failures only the scenario has."""
    if not injections:
        raise ValueError("what-if needs at least one injected event")
    base = SiteSimulation(spec, hours, seed, acceleration)
    scen = SiteSimulation(spec, hours, seed, acceleration, injections)
    topo = scen.topology
    inj_roots = {int(topo.kind_index[topo.find(i.component_id)[0]][topo.find(i.component_id)[1]])
                 for i in injections}
    bf = base.plan.failures
    sf = scen.plan.failures
    end = hours * 3600.0
    key_b = set(zip(bf["node"].tolist(), np.round(bf["t"].to_numpy()).tolist(), strict=True))
    rows = []
    ids = topo.components["component_id"].to_numpy()
    g_node = topo.kind_index["node"]
    xe = scen.events[(scen.events["event"] == "xid")]
    for f in sf.itertuples():
        if f.t >= end or (f.node, round(f.t)) in key_b:
            continue
        root = int(f.root)
        target = int(g_node[f.node])
        path = graph_path(topo, root, target)
        via_gpu = ""
        xid = -1
        if f.gpu >= 0:
            gid = topo.ids["gpu"][f.gpu]
            hit = xe[(xe["component_id"] == gid) & (xe["t"] == round(f.t))]
            if len(hit):
                xid = int(hit["xid"].iloc[0])
                via_gpu = f" -> {gid} (XID {xid})" if gid != ids[root] else f" (XID {xid})"
        txt = " -> ".join(f"{c}" + (f" [{e}]" if e else "") for c, e in path) + via_gpu
        rows.append({"t_h": round(f.t / 3600.0, 3), "component_id": str(ids[target]),
                     "cause": CAUSES[int(f.cause)],
                     "root_component": str(ids[root]), "from_injection": root in inj_roots, "xid": xid,
                     "path": txt})
    caused = pd.DataFrame(rows, columns=["t_h", "component_id", "cause", "root_component", "from_injection", "xid",
                                         "path"])
    return WhatIfResult(injections=injections, baseline=base, scenario=scen, caused=caused)
