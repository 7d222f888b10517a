"""One-screen summary of simulated sites: sizes, hardware, failures and interruptions by cause."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from infrabrain.simulation.faults import CAUSE_GROUP, CAUSES
from infrabrain.simulation.spec import SiteSpec
from infrabrain.simulation.topology import Topology

_INCIDENT = re.compile(r"incident (\d+)")


class _HasEvents(Protocol):
    spec: SiteSpec
    topology: Topology
    events: pd.DataFrame
    hours: float


def summarize(runs: Sequence[_HasEvents]) -> dict[str, object]:
    """Summary dict of `SiteRun`s (or `SiteSimulation`s): sites, GPUs, GPU-hours, failures by cause.

    ``failures_by_cause`` counts node failures; ``interruptions_by_cause`` counts root incidents (a cooling unit
    that takes down ten nodes is one interruption), the unit of the Llama 3 calibration.
    """
    per_site = []
    fail_total = dict.fromkeys(CAUSES, 0)
    inter_total = dict.fromkeys(CAUSES, 0)
    gpus = 0
    gpu_hours = 0.0
    for r in runs:
        ev = r.events
        node_fail = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
        fails = node_fail["cause"].value_counts().to_dict()
        inc = node_fail["detail"].str.extract(_INCIDENT, expand=False)
        inter = node_fail.assign(incident=inc).drop_duplicates("incident")["cause"].value_counts().to_dict()
        for c, k in fails.items():
            fail_total[str(c)] += int(k)
        for c, k in inter.items():
            inter_total[str(c)] += int(k)
        n_gpu = r.topology.count("gpu")
        gpus += n_gpu
        gpu_hours += n_gpu * r.hours
        per_site.append({
            "site": r.spec.name, "gpus": n_gpu, "nodes": r.topology.count("node"),
            "gpu_mix": dict(r.spec.gpu_mix), "ambient_temp_c": r.spec.ambient_temp_c,
            "profile": r.spec.workload.profile, "rate_scale": r.spec.faults.rate_scale,
            "firmware_quality": r.spec.faults.firmware_quality, "hours": r.hours,
            "node_failures": int(len(node_fail)), "interruptions": int(sum(inter.values())),
            "jobs_killed_on_other_nodes": int((ev["event"] == "job_fail").sum()),
            "xid_events": int((ev["event"] == "xid").sum()),
        })
    groups: dict[str, int] = {}
    for c, k in fail_total.items():
        groups[CAUSE_GROUP[c]] = groups.get(CAUSE_GROUP[c], 0) + k
    n_inter = sum(inter_total.values())
    return {
        "sites": len(per_site), "gpus": gpus, "gpu_hours": gpu_hours,
        "node_failures": sum(fail_total.values()), "interruptions": n_inter,
        "interruptions_per_gpu_hour": n_inter / gpu_hours if gpu_hours else 0.0,
        "failures_by_cause": {c: k for c, k in fail_total.items() if k},
        "interruptions_by_cause": {c: k for c, k in inter_total.items() if k},
        "failures_by_group": {g: k for g, k in groups.items() if k},
        "per_site": per_site,
    }


def format_summary(summary: dict[str, object]) -> str:
    """Human-readable table of a `summarize` result."""
    lines = [f"{summary['sites']} sites, {summary['gpus']} GPUs, {summary['gpu_hours']:.0f} GPU-hours; "
             f"{summary['node_failures']} node failures from {summary['interruptions']} interruptions "
             f"({summary['interruptions_per_gpu_hour']:.2e} per GPU-hour)"]
    w = max([12] + [len(str(s["site"])) + 2 for s in summary["per_site"]])  # type: ignore[union-attr]
    lines.append(f"{'site':<{w}}{'GPUs':>6}  {'hardware':<18}{'ambient':>8}  {'profile':<10}{'failures':>9}"
                 f"{'interr.':>8}{'job kills':>10}")
    for s in summary["per_site"]:  # type: ignore[union-attr]
        hw = "+".join(f"{m}" if v == 1 else f"{m}:{v:g}" for m, v in s["gpu_mix"].items())
        lines.append(f"{s['site']:<{w}}{s['gpus']:>6}  {hw:<18}{s['ambient_temp_c']:>7.1f}C  {s['profile']:<10}"
                     f"{s['node_failures']:>9}{s['interruptions']:>8}{s['jobs_killed_on_other_nodes']:>10}")
    by = summary["failures_by_cause"]
    inter = summary["interruptions_by_cause"]
    if by:
        lines.append("failures by cause (node failures / interruptions):")
        for c in CAUSES:
            if c in by:  # type: ignore[operator]
                n_int = inter.get(c, 0)  # type: ignore[union-attr]
                lines.append(f"  {c:<18}{by[c]:>6} / {n_int:<6} [{CAUSE_GROUP[c]}]")  # type: ignore[index]
    else:
        lines.append("no failures (raise --acceleration or --hours to see some)")
    return "\n".join(lines)
