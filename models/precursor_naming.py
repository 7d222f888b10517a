"""Whether an alert's sentence names the precursor the simulator planted: the failure's root component quoted by a
metric its precursor signal moves (:func:`precursor_naming`).

The root-cause accuracy (:mod:`~infrabrain.models.root_cause_accuracy`) asks whether the ranking finds the right
component; this asks whether the sentence an operator reads says *what* went wrong there. A failing HBM stack
shows single-bit ECC errors and remapped rows before it goes (and an XID 63 when a row is remapped), a GPU about to
fall off the bus PCIe replays, a failing cable InfiniBand and receive errors on its node: a sentence that quotes
the right GPU by its power draw names the component but not the precursor. Each signal's metrics are those
``simulation/telemetry.py`` renders for it on its root (:data:`SIGNAL_METRICS`).

Each failure with a precursor is explained where an operator would have read it, at the node's highest-scoring
snapshot in the hour before it (:func:`~infrabrain.models.root_cause_accuracy.explained_snapshot`), with
:func:`~infrabrain.models.explain.explain_node` as ``predict`` runs it, and beside it as it was before issue 3
follow-up 40 (:data:`RULES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from infrabrain.models.cause_naming import named_cause
from infrabrain.models.cause_part import PARTED_GROUP
from infrabrain.models.explain import Explanation, explain_dataset_row
from infrabrain.models.own_change_evidence import OwnChangeTails
from infrabrain.models.root_prior import RootPrior
from infrabrain.models.features import FeatureSet
from infrabrain.models.snapshots import SnapshotDataset, snapshot_steps

_ECC = ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_XID_ERRORS")
_LINK = ("node_infiniband_port_errors_received_total", "node_network_receive_errs_total")

#: The metrics each of the simulator's precursor signals moves on its root component
#: (:data:`infrabrain.simulation.faults.SIGNALS`; rendered in ``simulation/telemetry.py``). A die heating towards
#: shutdown also throttles its clock, and the GPU's temperature above its node's other GPUs is the derived metric
#: every model reads.
SIGNAL_METRICS: dict[str, tuple[str, ...]] = {
    "ecc": _ECC,
    "sram": ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_XID_ERRORS"),
    "pcie": ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER",),
    "gpu_hot": ("DCGM_FI_DEV_GPU_TEMP", "gpu_temp_above_siblings", "DCGM_FI_DEV_MEMORY_TEMP",
                "DCGM_FI_DEV_THERMAL_VIOLATION", "DCGM_FI_DEV_SM_CLOCK"),
    "nvlink": ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",),
    "cooling": ("cooling_supply_temp_celsius", "cooling_return_temp_celsius", "cooling_airflow_cfm"),
    "leaf": ("switch_port_errors_total", "switch_latency_us"),
    "cable": _LINK,
    "nic": _LINK,
    "edac": ("node_edac_correctable_errors_total",),
    "ssd": ("node_disk_io_time_seconds_total",),
    "pdu": ("pdu_load_kw",),
}

#: The part of the machine each of the "other" group's precursor signals lies in, as
#: :data:`~infrabrain.models.cause_part.OTHER_PART_OF_METRIC` names it: what an alert's part is right against.
SIGNAL_PART: dict[str, str] = {"pcie": "GPU bus", "edac": "host memory", "ssd": "disk"}

#: The sentence rules compared: the deployed one, and the one before issue 3 follow-up 40 (each contributor quoted
#: by its most deviating metric, and no clause naming the likeliest root where it is not quoted).
RULES: dict[str, bool] = {"deployed": True, "before_follow_up_40": False}

#: A precursor's ``degrade`` event detail (``simulation/faults.py``): its signal, and "look-alike" for one that
#: recovers without a failure.
_DEGRADE = re.compile(r"^(?P<signal>\w+) precursor begins \((?P<what>[^)]*)\)")


def precursor_signal(events: pd.DataFrame, component_id: str, tf: int) -> str | None:
    """The signal of the latest real (not look-alike) precursor that began on ``component_id`` before ``tf``, from
    a simulator run's events; None where none began (an abrupt failure, or a software fault)."""
    if events is None or not len(events):
        return None
    d = events[(events["event"] == "degrade") & (events["component_id"] == component_id) & (events["t"] < tf)]
    for detail in d.sort_values("t", ascending=False)["detail"]:
        m = _DEGRADE.match(str(detail))
        if m is not None and not m["what"].startswith("look-alike"):
            return m["signal"]
    return None


def names_precursor(explanation: Explanation, root: int, signal: str, top_k: int = 3) -> tuple[bool, bool]:
    """``(root quoted, precursor named)``: whether the sentence quotes component ``root`` at all, and whether it
    quotes it by a metric of ``signal`` (first or further metric)."""
    if signal not in SIGNAL_METRICS:
        raise ValueError(f"unknown precursor signal {signal!r}; known: {sorted(SIGNAL_METRICS)}")
    for c in explanation.quoted(top_k):
        if c.component == root:
            return True, any(q.metric in SIGNAL_METRICS[signal] for q in (c, *c.also))
    return False, False


def precursor_naming(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet, rows: pd.DataFrame,
                     events: pd.DataFrame, max_events: int = 200, seed: int = 0,
                     prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                     own_tails: OwnChangeTails | None = None) -> dict[str, Any]:
    """How often the sentences of the failures with a precursor (``events["precursor"]``, at most ``max_events``,
    sampled with ``seed``) quote the root and name its precursor, overall and per signal, for each of
    :data:`RULES`; with how often the sentence ends by naming the likeliest root (``root_clause``) and how often
    that root is the true one (``root_clause_right``), how often it names a cause group (``group_named``) and the
    failure's (``group_right``), how often "other" (``other_named``), of those how often it names a part of the
    machine too (``part_named``, :mod:`~infrabrain.models.cause_part`), and how often that part is the precursor's
    (``part_right``, :data:`SIGNAL_PART`); and the group the cause head alone names, as sentences did before
    issue 3 follow-up 42 (``group_named_by_head``, ``group_right_by_head``). ``prior`` (one, or one
    per site index) and ``own_tails`` as :func:`~infrabrain.models.explain.explain_node`'s: they change the
    roots, not the sentence."""
    from infrabrain.models.root_cause_accuracy import explained_snapshot

    ev = events[events["precursor"]]
    ev = ev.sample(n=max_events, random_state=seed) if len(ev) > max_events else ev
    steps = snapshot_steps(dataset)
    out = []
    for e in ev.itertuples():
        best = explained_snapshot(rows, e)
        site = dataset.sites[int(e.site)]
        root = int(e.root)
        if best is None or site.run is None or not 0 <= root < site.graph.n:
            continue
        signal = precursor_signal(site.run.events, str(site.graph.component_ids[root]), int(e.tf))
        if signal is None:
            continue
        step = steps[(int(e.site), int(best["t"]))]
        for rule, now in RULES.items():
            x = explain_dataset_row(model, dataset, feature_set, rows, int(e.site), step, int(e.node), prior=prior,
                                    own_tails=own_tails, metric_by_occlusion=now, name_root=now)
            clause = x.root_quote is not None
            head = named_cause(x.causes)
            out.append((rule, signal, *names_precursor(x, root, signal), clause,
                        clause and x.root_quote.component == root, x.cause_named is not None,
                        x.cause_named == str(e.group), x.cause_named == PARTED_GROUP, x.cause_part is not None,
                        x.cause_part is not None and x.cause_part == SIGNAL_PART.get(signal), head is not None,
                        head == str(e.group)))
    df = pd.DataFrame(out, columns=["rule", "signal", "root_quoted", "named", "root_clause", "root_clause_right",
                                    "group_named", "group_right", "other_named", "part_named", "part_right",
                                    "head_named", "head_right"])
    return {rule: _summary(df[df["rule"] == rule]) for rule in RULES}


def _summary(df: pd.DataFrame) -> dict[str, Any]:
    """Counts and shares of one rule's rows, overall and per signal."""
    def shares(d: pd.DataFrame) -> dict[str, Any]:
        return {"failures": len(d), "root_quoted": _share(d["root_quoted"]), "precursor_named": _share(d["named"]),
                "named_when_root_quoted": _share(d.loc[d["root_quoted"], "named"]),
                "root_clause": _share(d["root_clause"]),
                "root_clause_right": _share(d.loc[d["root_clause"], "root_clause_right"]),
                "group_named": _share(d["group_named"]), "group_right": _share(d.loc[d["group_named"], "group_right"]),
                "other_named": _share(d["other_named"]), "part_named": _share(d.loc[d["other_named"], "part_named"]),
                "part_right": _share(d.loc[d["part_named"], "part_right"]),
                "group_named_by_head": _share(d["head_named"]),
                "group_right_by_head": _share(d.loc[d["head_named"], "head_right"])}

    return {**shares(df), "by_signal": {s: shares(d) for s, d in df.groupby("signal")}}


def _share(values: Sequence[bool] | pd.Series) -> float | None:
    """The share of True values (None for none)."""
    v = np.asarray(values, dtype=bool)
    return float(v.mean()) if len(v) else None
