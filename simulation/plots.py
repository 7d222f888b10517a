"""Pictures a person would rather look at than tables: a site overview and a what-if comparison (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infrabrain.simulation.engine import SiteRun
from infrabrain.simulation.whatif import WhatIfResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _failure_hours(run: SiteRun) -> tuple[np.ndarray, list[str]]:
    ev = run.events
    f = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    return f["t"].to_numpy() / 3600.0, f["cause"].tolist()


def plot_site(run: SiteRun, path: str | Path) -> Path:
    """Utilisation, GPU temperature and PDU load over time, with node failures marked by cause."""
    plt = _pyplot()
    h = run.timestamps / 3600.0
    gn = run.metric_names["gpu"]
    util = np.nanmean(run.metrics["gpu"][:, :, gn.index("DCGM_FI_DEV_GPU_UTIL")], axis=1)
    temp = run.metrics["gpu"][:, :, gn.index("DCGM_FI_DEV_GPU_TEMP")]
    pdu = run.metrics["pdu"]
    fig, ax = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax[0].plot(h, util, lw=0.8)
    ax[0].set_ylabel("mean GPU util %")
    ax[1].plot(h, np.nanmean(temp, axis=1), lw=0.8, label="mean")
    ax[1].plot(h, np.nanmax(temp, axis=1), lw=0.8, label="max")
    ax[1].set_ylabel("GPU temp °C")
    ax[1].legend(loc="upper right")
    ax[2].plot(h, np.nanmax(pdu[:, :, 0] / pdu[:, :, 1], axis=1), lw=0.8)
    ax[2].set_ylabel("max PDU load / rating")
    ax[2].set_xlabel("hours")
    t_fail, causes = _failure_hours(run)
    colors = {c: f"C{i % 10}" for i, c in enumerate(sorted(set(causes)))}
    for t, c in zip(t_fail, causes, strict=True):
        for a in ax:
            a.axvline(t, color=colors[c], lw=0.6, alpha=0.6)
    for c, col in colors.items():
        ax[0].plot([], [], color=col, label=c)
    if colors:
        ax[0].legend(loc="upper right", fontsize=7, title="node failures")
    fig.suptitle(f"site {run.name}: {run.topology.count('gpu')} GPUs, {run.hours:g} h, "
                 f"acceleration {run.acceleration:g}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_what_if(result: WhatIfResult, path: str | Path) -> Path:
    """Rack inlet temperatures (the hottest rack) and node failures, baseline vs with the injected event."""
    plt = _pyplot()
    base, scen = result.baseline.run(), result.scenario.run()
    fig, ax = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    for run, label, ls in ((base, "baseline", "--"), (scen, "with the event", "-")):
        h = run.timestamps / 3600.0
        ax[0].plot(h, np.nanmax(run.metrics["rack"][:, :, 0], axis=1), ls, lw=0.9, label=label)
        alive = run.labels.alive.mean(axis=1) * 100.0
        ax[1].plot(h, alive, ls, lw=0.9, label=label)
    for inj in result.injections:
        for a in ax:
            a.axvline(inj.at_s / 3600.0, color="red", lw=0.8)
        ax[0].annotate(f"{inj.component_id} fails", (inj.at_s / 3600.0, ax[0].get_ylim()[1]), color="red",
                       fontsize=8, va="top")
    ax[0].set_ylabel("hottest rack inlet °C")
    ax[1].set_ylabel("nodes up %")
    ax[1].set_xlabel("hours")
    ax[0].legend(loc="upper left")
    fig.suptitle(f"what-if on {result.scenario.spec.name}: {len(result.caused)} extra node failures")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
