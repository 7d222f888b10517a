"""Explanations of alerts: which upstream components and features raised a node's risk, as a sentence.

The contributors are ranked by occlusion over graph neighbours (:mod:`~infrabrain.models.occlusion`): each
candidate root's window made typical, the drop of the node's failure logit is its contribution. The quoted
contributors are rendered with the metric whose window alone moves that logit most (occlusion per metric; the
most deviating metric where no single one moves it by :data:`MIN_QUOTED_DROP`), in raw units, e.g.
``node r03-n07 at risk 0.82: cooling unit crac-2 airflow -35 % over 40 min; rack r03 inlet +6.1 C over 40 min``,
and with the cause group the model's cause head names (``likely thermal (0.91)``), as far as the model card's
check of that naming allows (:mod:`~infrabrain.models.cause_naming`); where the first quoted metric is a part's
precursor (a GPU's PCIe replays), "other" at that part (``likely other (0.71), the GPU bus``,
:mod:`~infrabrain.models.cause_part`). Each explanation also carries the root-cause ranking
(``Explanation.roots``, :mod:`~infrabrain.models.root_cause_ranking`) and why each root is where it is
(``Explanation.root_parts``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from infrabrain.models.cause_naming import FAILED, MIN_CAUSE_P, TOO_FEW, CauseNamingCheck
from infrabrain.models.cause_part import PARTED_GROUP, part_of_metric, sentence_cause
from infrabrain.models.derived_metrics import with_derived_metrics
from infrabrain.models.features import KINDS, STATIC_METRICS, FeatureSet, is_counter
from infrabrain.models.gnn import cause_groups_of
from infrabrain.models.occlusion import metric_occlusion, occlusion_with_causes
from infrabrain.models.own_change_evidence import OwnChangeTails
from infrabrain.models.root_cause_ranking import own_change_part, rank_by_score, root_score_parts, silent_nodes
from infrabrain.models.root_prior import RootPrior
from infrabrain.models.snapshots import SiteGraph, SnapshotDataset, _get, build_snapshot, snapshot_steps

KIND_LABEL = {"gpu": "GPU", "node": "node", "leaf": "leaf switch", "spine": "spine switch", "pdu": "PDU",
              "cooling": "cooling unit", "rack": "rack"}

# (substring of the metric name, short label, how to render). Renders: "C" temperature difference in C;
# "above:U WHAT" a level that is already a difference ("temperature 8.2 C above its node's other GPUs"); "rel:U"
# relative change with the levels in unit U (scaled by UNIT_SCALE); "pct:S" a utilisation, levels shown in % (x S);
# "level:U" the two levels in unit U; "busy" / "throttle" a time counter (s / us) as the share of the time it moved;
# "rate" any other counter as +N and N per minute.
_PRETTY: tuple[tuple[str, str, str], ...] = (
    ("temp_above_siblings", "temperature", "above:C above its node's other GPUs"),
    ("rack_inlet_temp", "inlet", "C"), ("airflow", "airflow", "rel:cfm"), ("supply_temp", "supply temperature", "C"),
    ("return_temp", "return temperature", "C"), ("MEMORY_TEMP", "memory temperature", "C"),
    ("GPU_TEMP", "temperature", "C"), ("hwmon_temp", "temperature", "C"), ("POWER_USAGE", "power", "rel:W"),
    ("load_kw", "load", "rel:kW"), ("latency", "latency", "rel:us"), ("SM_CLOCK", "SM clock", "rel:MHz"),
    ("GPU_UTIL", "utilisation", "pct:1"), ("switch_port_util", "port utilisation", "pct:100"),
    ("MemAvailable", "free memory", "level:GiB"), ("node_load1", "load average", "level:"),
    ("THERMAL_VIOLATION", "thermal throttling", "throttle"), ("POWER_VIOLATION", "power capping", "throttle"),
    ("io_time_seconds", "disk busy", "busy"), ("ECC_SBE", "single-bit ECC errors", "rate"),
    ("ECC_DBE", "double-bit ECC errors", "rate"), ("UNCORRECTABLE_REMAPPED", "uncorrectable remapped rows", "rate"),
    ("CORRECTABLE_REMAPPED", "correctable remapped rows", "rate"), ("NVLINK_CRC", "NVLink CRC errors", "rate"),
    ("PCIE_REPLAY", "PCIe replays", "rate"), ("edac_correctable", "EDAC correctable errors", "rate"),
    ("network_receive_errs", "network receive errors", "rate"),
    ("infiniband_port_errors", "InfiniBand port errors", "rate"), ("switch_port_errors", "port errors", "rate"),
)
#: Factor from a raw level to the unit a sentence quotes it in (bytes to GiB).
UNIT_SCALE = {"GiB": 1.0 / 2**30}
#: A temperature that moved less than this over the window is quoted at its level ("temperature steady at 41.3
#: C"), not as a change: NVML reports whole degrees and host sensors jitter by tenths, so "+0.1 C over 59 min"
#: named noise as the risk's reason where the model leaned on the level.
STEADY_C = 0.5


@dataclass
class Contribution:
    """One candidate root cause of an alert."""

    component: int  # global component index
    component_id: str
    kind: str
    score: float  # drop of the node's logit when this component's window is made typical
    metric: str = ""
    change: str = ""
    #: the quoted metric's raw values over the window (one per step, NaN where missing), as ``change`` describes
    #: them; None where the change is quoted in standard deviations (no raw telemetry). Not in ``predict``'s JSON:
    #: what :mod:`~infrabrain.models.explanation_plot` draws
    series: np.ndarray | None = field(default=None, repr=False)
    #: the drop of the node's logit when the quoted metric's window alone is made typical (a quoted contributor:
    #: :func:`~infrabrain.models.occlusion.metric_occlusion`); None where the metric was picked by deviation only
    metric_drop: float | None = None
    #: further metrics of the same component the risk also hangs on (each drop at least :data:`MIN_ALSO_DROP`),
    #: quoted after the first: an HBM fault's GPU by its XID and by the single-bit ECC errors that came before it
    also: list[Contribution] = field(default_factory=list)


@dataclass
class Explanation:
    """An alert with its ranked contributors and a one-line sentence."""

    node_id: str
    risk: float
    contributors: list[Contribution] = field(default_factory=list)  # by logit drop: what the sentence quotes
    sentence: str = ""
    roots: list[int] = field(default_factory=list)  # the root-cause ranking (rank_root_causes), global indices
    #: each candidate's root-cause score parts (:func:`~infrabrain.models.root_cause_ranking.root_score_parts`,
    #: ``total`` included), by global index: why a root is ranked where it is
    root_parts: dict[int, dict[str, float]] = field(default_factory=dict)
    #: the cause head's probability of each cause group given a failure (a model with ``cause_groups``), and
    #: the likeliest group (the sentence names it from :data:`~infrabrain.models.cause_naming.MIN_CAUSE_P` up:
    #: :func:`~infrabrain.models.cause_naming.named_cause`)
    causes: dict[str, float] = field(default_factory=dict)
    cause: str | None = None
    #: the group the sentence names ("likely thermal (0.91)"): "other" where its first quoted metric is a part's
    #: precursor (:func:`~infrabrain.models.cause_part.sentence_cause`), else the head's, where it reaches
    #: MIN_CAUSE_P and the card's check of its naming did not fail; None where the sentence names none or says the
    #: cause is unsure
    cause_named: str | None = None
    #: the part of the machine that first quoted metric lies in ("likely other (0.71), the GPU bus"); None
    #: where it is no part's precursor
    cause_part: str | None = None
    #: the component that first quoted metric lies on, where it names a part: the ranking puts it first
    #: (:func:`quoted_part_component`); None where no part is named
    part_component: int | None = None
    #: the ranking's likeliest root where the sentence quotes it as none of its contributors (it ends the sentence:
    #: "likeliest root leaf switch leaf-r05: ..."); None where it is one of them or nothing is quoted
    root_quote: Contribution | None = None

    def quoted(self, top_k: int = 3) -> list[Contribution]:
        """What the sentence quotes: the material contributors (:func:`quoted_contributors`), then the likeliest
        root where it is none of them (what :mod:`~infrabrain.models.explanation_plot` draws)."""
        return [*quoted_contributors(self.contributors, top_k), *([self.root_quote] if self.root_quote else [])]

    def ranked_components(self) -> list[int]:
        """Candidates as root causes, likeliest first (what
        :func:`~infrabrain.models.root_cause_accuracy.rootcause_accuracy` scores)."""
        return list(self.roots) if self.roots else [c.component for c in self.contributors]

    def quoting(self, risk: float) -> str:
        """The sentence with ``risk`` (e.g. the calibrated probability ``predict`` reports) in place of the raw
        sigmoid it was written with."""
        return self.sentence.replace(f"at risk {self.risk:.2f}", f"at risk {risk:.2f}", 1)


def metric_rendering(metric: str) -> tuple[str, str]:
    """How a sentence names and renders ``metric``: its short label and its rendering (:data:`_PRETTY`'s codes;
    ``"rate"`` for any other counter, ``""`` for a plain level)."""
    for needle, label, unit in _PRETTY:
        if needle.lower() in metric.lower():
            return label, unit
    if is_counter(metric):
        return metric, "rate"
    return metric, ""


def _num(v: float) -> str:
    """A level with about 3 significant digits and no exponent for everyday magnitudes."""
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 1 else f"{v:.2f}"


def is_constant(series: np.ndarray) -> bool:
    """True if a raw series has fewer than 2 observations or never changes over the window (nothing to say)."""
    v = np.asarray(series, float)
    v = v[np.isfinite(v)]
    return len(v) < 2 or float(np.max(v) - np.min(v)) == 0.0


def describe_change(series: np.ndarray, metric: str, cadence_s: int) -> str:
    """Raw series over the window -> a phrase in operator units: 'temperature +6.1 C over 40 min',
    'airflow -35 % over 20 min (2000 -> 1300 cfm)', 'single-bit ECC errors +164 over 49 min (3.3/min)',
    'thermal throttling 42 % of the time over 20 min', 'utilisation 92 % -> 3 % over 15 min'.

    Counters are rendered as increments and rates over the span where they moved, never as raw cumulative levels.
    """
    v = np.asarray(series, float)
    ok = np.isfinite(v)
    label, unit = metric_rendering(metric)
    if ok.sum() < 2:
        return f"{label} missing"
    vals = v[ok]
    steps = np.flatnonzero(ok)
    counter = is_counter(metric) or unit in ("rate", "busy", "throttle")
    first = float(vals[0]) if counter else float(np.median(vals[:3]))  # as the end: a step early on shows
    last = float(vals[-1]) if counter else float(np.median(vals[-3:]))
    delta = last - first
    if counter:  # from the first increment on
        moved = np.flatnonzero(vals > first) if delta > 0 else np.zeros(0, int)
    else:
        moved = np.flatnonzero(np.abs(vals - first) > 0.1 * abs(delta)) if delta != 0 else np.zeros(0, int)
    start = steps[moved[0] - 1] if counter and len(moved) and moved[0] > 0 else (
        steps[moved[0]] if len(moved) else steps[0])
    span_steps = max(int(steps[-1] - start), 1)
    span_min = int(round(span_steps * cadence_s / 60)) or 1
    if unit.startswith("above:"):  # a difference, whose level is the news: "temperature 8.2 C above ..."
        u, _, what = unit[6:].partition(" ")
        if last < 0 and what.startswith("above "):  # "4.7 C below its node's other GPUs", not "-4.7 C above"
            what = "below " + what[len("above "):]
        level = f"{label} {_num(abs(last))} {u} {what}"
        return level if abs(delta) < STEADY_C else f"{level} ({delta:+.1f} {u} over {span_min} min)"
    if "XID" in metric.upper():
        return f"XID {int(last)} raised {span_min} min ago" if last > 0 and delta != 0 else f"last XID {int(last)}"
    if counter:
        inc = max(delta, 0.0)
        span_s = span_steps * cadence_s
        if unit == "throttle":  # microseconds of violation per second of wall time
            return f"{label} {min(100.0, 100 * inc / 1e6 / span_s):.0f} % of the time over {span_min} min"
        if unit == "busy":  # seconds busy per second
            return f"{label} {min(100.0, 100 * inc / span_s):.0f} % of the time over {span_min} min"
        per_min = inc / (span_s / 60)
        return f"{label} +{inc:.0f} over {span_min} min ({_num(per_min)}/min)"
    # a level the model leaned on although it hardly moved reads as its level, not as "+0.0 C" or "-0 %"
    if unit.startswith("pct:"):
        f = float(unit[4:])
        if round(first * f) == round(last * f):
            return f"{label} steady at {last * f:.0f} %"
        return f"{label} {first * f:.0f} % -> {last * f:.0f} % over {span_min} min"
    if unit.startswith("level:"):
        u = unit[6:]
        sc = UNIT_SCALE.get(u, 1.0)
        if _num(first * sc) == _num(last * sc):
            return f"{label} steady at {_num(last * sc)} {u}".rstrip()
        return f"{label} {_num(first * sc)} -> {_num(last * sc)} {u} over {span_min} min".replace("  ", " ")
    if unit.startswith("rel:"):
        u = unit[4:]
        levels = f"({_num(first)} -> {_num(last)} {u})"
        if abs(first) < 0.05 * max(float(np.max(np.abs(vals))), 1e-9):  # from ~0: a percentage means nothing
            return f"{label} {_num(first)} -> {_num(last)} {u} over {span_min} min"
        if round(100 * delta / abs(first)) == 0:
            return f"{label} steady at {_num(last)} {u}"
        return f"{label} {100 * delta / abs(first):+.0f} % over {span_min} min {levels}"
    if round(delta, 1) == 0 or (unit == "C" and abs(delta) < STEADY_C):
        return f"{label} steady at {_num(last)} {unit}".rstrip()
    return f"{label} {delta:+.1f} {unit} over {span_min} min".replace("  ", " ")


def _top_metric(item: Mapping[str, torch.Tensor], comp: int, names: Sequence[str],
                skip: Sequence[int] = ()) -> int:
    """Slot of the component's most deviating metric (largest |z| near the window end), ignoring ``skip``
    (metrics constant over the window, which have nothing to say)."""
    x = item["x"][comp].numpy()  # [W, F]
    m = item["mask"][comp].numpy()
    f = len(names)
    if f == 0:
        return -1
    k = max(1, x.shape[0] // 6)
    tail = np.where(m[-k:, :f], np.abs(x[-k:, :f]), 0.0).mean(axis=0)
    head = np.where(m[:k, :f], x[:k, :f], 0.0).mean(axis=0)
    dev = tail + np.abs(np.where(m[-k:, :f], x[-k:, :f], 0.0).mean(axis=0) - head)
    if len(skip) >= f:
        return -1
    dev[list(skip)] = -np.inf
    return int(np.argmax(dev))


def _quote(item: Mapping[str, torch.Tensor], comp: int, names: Sequence[str], series: Mapping[int, np.ndarray],
           slot: int, cadence_s: int) -> tuple[str, str, np.ndarray | None]:
    """``(metric, change, raw series)`` quoting slot ``slot`` of component ``comp``: in raw units where ``series``
    has it, else in standard deviations of the model's input (``("", "", None)`` for no slot)."""
    if slot < 0:
        return "", "", None
    metric = names[slot]
    change = describe_change(series[slot], metric, cadence_s) if slot in series else ""
    if not change:
        change = f"{metric_rendering(metric)[0]} {item['x'][comp, -1, slot].item():+.1f} sd"
    return metric, change, series.get(slot)


def _quote_what_the_risk_hangs_on(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph,
                                  node_pos: int, quoted: Sequence[Contribution],
                                  views: Mapping[int, tuple[Sequence[str], dict[int, np.ndarray], list[int]]],
                                  cadence_s: int) -> None:
    """Quote each of ``quoted`` by the metric whose window alone lowers the node's logit most, with the others
    that lower it by :data:`MIN_ALSO_DROP` in ``also``; keep the most deviating metric where none lowers it by
    :data:`MIN_QUOTED_DROP` (the component's weight is spread over metrics that move together)."""
    if not quoted:
        return
    per_metric = metric_occlusion(model, item, graph, node_pos, [c.component for c in quoted],
                                  [len(views[c.component][0]) for c in quoted])
    for c, d in zip(quoted, per_metric):
        names, series, skip = views[c.component]
        allowed = sorted((f for f in range(len(names)) if f not in skip), key=lambda f: -d[f])
        if not allowed or d[allowed[0]] < MIN_QUOTED_DROP:
            c.metric_drop = float(d[names.index(c.metric)]) if c.metric in names else None
            continue
        best = allowed[0]
        c.metric, c.change, c.series = _quote(item, c.component, names, series, best, cadence_s)
        c.metric_drop = float(d[best])
        c.also = [Contribution(c.component, c.component_id, c.kind, float(d[f]),
                               *_quote(item, c.component, names, series, f, cadence_s), metric_drop=float(d[f]))
                  for f in allowed[1 : 1 + MAX_ALSO] if d[f] >= MIN_ALSO_DROP and d[f] >= MATERIAL_SHARE * d[best]]


def quote_contributors(model: torch.nn.Module, item: Mapping[str, torch.Tensor], graph: SiteGraph,
                       feature_set: FeatureSet, node_pos: int, cand: np.ndarray, drops: np.ndarray,
                       raw: Mapping[str, np.ndarray] | None = None,
                       raw_names: Mapping[str, Sequence[str]] | None = None, cadence_s: int = 60, top_k: int = 3,
                       metric_by_occlusion: bool = True) -> list[Contribution]:
    """Every candidate of ``cand`` as a :class:`Contribution`, by decreasing occlusion drop (``drops``), each quoted
    by its most deviating metric, and those a sentence quotes (:func:`quoted_contributors`) by the metric the node's
    risk hangs on (with ``metric_by_occlusion``); in raw units where ``raw`` and ``raw_names`` have the component
    (:func:`explain_node`, which also says what ``raw`` holds)."""
    order = np.argsort(-drops, kind="stable")
    local_of = {k: {int(g): i for i, g in enumerate(graph.kind_index.get(k, []))} for k in KINDS}
    if raw is not None and raw_names is not None:  # derived metrics quoted in raw units too
        window = getattr(getattr(model, "config", None), "window", None)  # a caller's raw may hold history too
        raw = {k: np.asarray(v)[-int(window):] if window else np.asarray(v) for k, v in raw.items()}
        raw, raw_names = with_derived_metrics(raw, raw_names, feature_set.metrics, graph.gpu_node())
    contribs = []
    views: dict[int, tuple[Sequence[str], dict[int, np.ndarray], list[int]]] = {}
    for j in order:
        c = int(cand[j])
        kind = KINDS[int(graph.kind[c])]
        names = feature_set.metrics_of(kind)
        series: dict[int, np.ndarray] = {}
        if raw is not None and raw_names is not None and kind in raw:
            cols = list(raw_names[kind])
            series = {j: np.asarray(raw[kind])[:, local_of[kind][c], cols.index(mn)]
                      for j, mn in enumerate(names) if mn in cols}
        skip = [j for j, mn in enumerate(names) if mn in STATIC_METRICS or (j in series and is_constant(series[j]))]
        if len(skip) >= len(names):  # every metric constant: fall back to the model's view
            skip = [j for j, mn in enumerate(names) if mn in STATIC_METRICS]
        views[c] = (names, series, skip)
        metric, change, shown = _quote(item, c, names, series, _top_metric(item, c, names, skip), cadence_s)
        contribs.append(Contribution(c, str(graph.component_ids[c]), kind, float(drops[j]), metric, change, shown))
    if metric_by_occlusion:  # the contributors quoted are chosen by drop alone: the metric quoted does not change it
        _quote_what_the_risk_hangs_on(model, item, graph, node_pos, quoted_contributors(contribs, top_k), views,
                                      cadence_s)
    return contribs


def explain_node(
    model: torch.nn.Module,
    item: Mapping[str, torch.Tensor],
    graph: SiteGraph,
    feature_set: FeatureSet,
    node_pos: int,
    raw: Mapping[str, np.ndarray] | None = None,
    raw_names: Mapping[str, Sequence[str]] | None = None,
    cadence_s: int = 60,
    top_k: int = 3,
    prior: RootPrior | None = None,
    node_logits: np.ndarray | None = None,
    own_tails: OwnChangeTails | None = None,
    naming: CauseNamingCheck | None = None,
    metric_by_occlusion: bool = True,
    name_root: bool = True,
) -> Explanation:
    """Explain the risk of node ``node_pos`` (position in node order) in snapshot ``item``.

    ``raw`` (per kind ``[T, n_kind, F_kind]``, ending with the snapshot's window; only its last ``window`` steps,
    the hour the model read, are described) with ``raw_names`` lets the sentence quote raw units; without it the change is given in standard deviations. ``prior`` (the model card's root prior) and ``node_logits``
    (every node's logit in this snapshot: :func:`~infrabrain.models.root_cause_ranking.sibling_evidence`, with the
    nodes that went down within the window, :func:`~infrabrain.models.root_cause_ranking.silent_nodes`) join the drops
    in the root-cause ranking (``Explanation.roots``), and so does ``own_tails`` (the model card's training own
    changes: :func:`~infrabrain.models.root_cause_ranking.own_change_part`); the sentence quotes the drops only. With
    ``naming`` (the model card's :class:`~infrabrain.models.cause_naming.CauseNamingCheck`) the sentence names the
    head's cause only where that group's naming held up on the checked rows, and otherwise says the cause is unsure
    and why. ``metric_by_occlusion`` False quotes every contributor by its most deviating metric (the rule before
    issue 3 follow-up 40, kept for :mod:`~infrabrain.models.precursor_naming`'s comparison). Where the ranking's
    likeliest root is upstream of the node (:data:`UPSTREAM_KINDS`), none of the contributors the sentence
    quotes, and of a kind that starts the cause group the head names (its ``cause_evidence`` part is positive),
    the sentence names it after them (``Explanation.root_quote``; ``name_root`` False leaves it out, the sentence
    before follow-up 40). Where the sentence names a part of the machine, the component its first quoted metric
    lies on is the likeliest root, and the head's group does not reach the ranking
    (:func:`quoted_part_component`, ``Explanation.part_component``).
    """
    logit, cand, drops, probs = occlusion_with_causes(model, item, graph, node_pos)
    node_id = str(graph.component_ids[graph.node_global[node_pos]])
    risk = float(1.0 / (1.0 + np.exp(-logit)))
    contribs = quote_contributors(model, item, graph, feature_set, node_pos, cand, drops, raw, raw_names,
                                  cadence_s, top_k, metric_by_occlusion)
    material = quoted_contributors(contribs, top_k)
    part_at = quoted_part_component(contribs, top_k)
    causes = {} if probs is None else {g: float(p) for g, p in zip(cause_groups_of(model), probs)}
    cause = max(causes, key=causes.__getitem__) if causes else None
    parts = root_score_parts(graph, cand, drops, prior, node_logits,
                             silent=silent_nodes(item, graph) if node_logits is not None else None, causes=causes,
                             own_change=None if own_tails is None else
                             own_change_part(item, graph, cand, feature_set, own_tails), part_at=part_at)
    roots = rank_by_score(graph, cand, parts["total"], first=part_at)  # rank_root_causes, parts kept
    root_parts = {int(c): {k: float(v[j]) for k, v in parts.items()} for j, c in enumerate(cand)}
    quoted = {c.component for c in material}
    root_quote = (next(c for c in contribs if c.component == roots[0])
                  if name_root and quoted and roots and roots[0] not in quoted
                  and KINDS[int(graph.kind[roots[0]])] in UPSTREAM_KINDS
                  and root_parts[roots[0]].get("cause_evidence", 0.0) > 0.0 else None)
    status, note = _naming_verdict(naming, cause)
    named, part = sentence_cause(cause if _head_names(cause, causes.get(cause)) and status != FAILED else None,
                                 material[0].metric if material else None)
    return Explanation(node_id=node_id, risk=risk, contributors=contribs, causes=causes, cause=cause,
                       cause_named=named, cause_part=part,
                       sentence=explanation_sentence(node_id, risk, contribs, top_k, cause,
                                                     causes.get(cause) if cause else None, status, note,
                                                     root=root_quote, part=part),
                       roots=roots, root_quote=root_quote, root_parts=root_parts, part_component=part_at)


#: A contributor is named in the sentence only if occluding it lowers the logit by at least this share of what the
#: top contributor's occlusion does; smaller ones stay in ``Explanation.contributors``. Without it a node whose
#: risk comes from one GPU's ECC errors (a drop of 4 logits) also named two components that moved 0.03 logits,
#: quoted as "cooling unit crac-1 airflow -0 % over 59 min": noise that reads like a cause.
MATERIAL_SHARE = 0.1

#: ... and by at least this much in absolute terms (logits: a tenth changes the odds by about 10 %). Below it a
#: node's window holds nothing that moves its risk, and the sentence quotes nothing: follow-up 39's pictures of
#: low-risk nodes showed a cooling unit's supply temperature quoted at "-0.1 C over 58 min" for a drop of 0.03,
#: beside a spine switch's noise for 0.00.
MIN_QUOTED_DROP = 0.1

#: A quoted contributor's further metric is quoted too if its window alone lowers the logit by at least this much
#: (and by :data:`MATERIAL_SHARE` of the first metric's drop). On a 24 h federation's held-out failures an HBM
#: fault's GPU moved its node's logit by 8.5 through its XID and by 1.0 to 2.5 through the single-bit ECC errors
#: that came before it, a cable fault's node by 3.4 through its InfiniBand errors and 2.2 through its receive
#: errors; no other metric of a quoted component moved it by more than 0.13.
MIN_ALSO_DROP = 0.5

#: At most this many further metrics per contributor: a sentence stays one line.
MAX_ALSO = 1

#: The kinds of likeliest root a sentence names when it does not quote them (:func:`explain_node`): the upstream
#: components a cascade starts at. Nodes under a failing leaf switch are quoted by their own InfiniBand errors,
#: the switch by nothing. The node itself, or one of its GPUs, ranked first but unquoted is left out: "node
#: r06-n03 ...; likeliest root node r06-n03: temperature +0.1 C" says nothing an operator can use. And only where
#: the cause head names a group that kind of component starts (a leaf switch network failures, a cooling unit
#: thermal ones): on two draws of the sixteen (d4, d6), 6 of the 7 wrongly named roots were a switch, PDU or
#: cooling unit put first by its other nodes' risk alone, with "port utilisation steady at 73 %" to show for
#: itself, where the head named "other"; all 14 rightly named ones came with the head naming network or thermal.
UPSTREAM_KINDS = ("leaf", "spine", "pdu", "cooling")


def _naming_verdict(naming: CauseNamingCheck | None, cause: str | None) -> tuple[str | None, str]:
    """The card's check of the head's naming of ``cause``: its status and note, for :func:`explanation_sentence`
    (``(None, "")`` without a check or a cause)."""
    if naming is None or cause is None:
        return None, ""
    return naming.status(cause), naming.note(cause)


def quoted_contributors(contribs: Sequence[Contribution], top_k: int = 3) -> list[Contribution]:
    """The contributors a sentence quotes: of the first ``top_k`` (``contribs`` ranked by drop), those that lower
    the logit by at least :data:`MIN_QUOTED_DROP` and by at least :data:`MATERIAL_SHARE` of the top one's drop."""
    top = max((c.score for c in contribs), default=0.0)
    return [c for c in contribs[:top_k] if c.score >= MIN_QUOTED_DROP and c.score >= MATERIAL_SHARE * top]


def quoted_part_component(contribs: Sequence[Contribution], top_k: int = 3) -> int | None:
    """The component the part a sentence names lies on: its first quoted contributor's (of ``contribs``, ranked by
    drop), where the metric it is quoted by is a part's precursor
    (:func:`~infrabrain.models.cause_part.part_of_metric`); else None. The root-cause ranking puts it first.

    A GPU's PCIe replays are that GPU's bus failing, a host's EDAC errors its DIMMs: the evidence the risk hangs on
    lies on that component, whatever its neighbours show. On the bench's sixteen draws the sentence named a part
    for 189 held-out failures; ranked by score alone their root came first on 163, often after an upstream PDU,
    leaf or cooling unit put first by its other nodes' risk, and with the part's component first on 172. The one
    it lost was a leaf switch's failure on a node one of whose GPUs replayed PCIe transfers for a while and
    recovered (issue 3 follow-up 43).
    """
    material = quoted_contributors(contribs, top_k)
    return material[0].component if material and part_of_metric(material[0].metric) is not None else None


def _head_names(cause: str | None, cause_p: float | None) -> bool:
    """Whether the cause head's likeliest group is sure enough to be named (:data:`MIN_CAUSE_P`): "likely <group>",
    or "cause unsure" where the card's check of that naming failed."""
    return cause is not None and cause_p is not None and cause_p >= MIN_CAUSE_P


def explanation_sentence(node_id: str, risk: float, contribs: Sequence[Contribution], top_k: int = 3,
                         cause: str | None = None, cause_p: float | None = None, naming_status: str | None = None,
                         naming_note: str = "", root: Contribution | None = None, part: str | None = None) -> str:
    """'node X at risk R[, likely <cause group> (P)[, the <part>]]: <top contributor>; <others within
    MATERIAL_SHARE of it>' (``contribs`` ranked; ``cause`` and ``cause_p``: the cause head's likeliest group and
    its probability, named only if ``cause_p >= MIN_CAUSE_P``). With the card's check of that naming
    (:meth:`~infrabrain.models.cause_naming.CauseNamingCheck.status` and ``note``): where it failed, "cause unsure
    (the head says <group> P, but <note>)"; where it was too rarely made to tell, "likely <group> (P; unchecked:
    <note>)". ``root`` (the ranking's likeliest root where it is not quoted) ends it: "likeliest root leaf switch
    leaf-r05: port errors +1935 over 59 min (32.8/min)". ``part`` (the part of the machine the first contributor's
    metric lies in, :mod:`~infrabrain.models.cause_part`) names "other" at that part, with the head's probability
    where the head names "other" too ("likely other (0.71), the GPU bus"), else with what the head names
    ("likely other, the GPU bus (the cause head says memory 0.55)")."""
    parts = [f"{KIND_LABEL[c.kind]} {c.component_id} {', '.join([c.change, *(a.change for a in c.also)])}".strip()
             for c in quoted_contributors(contribs, top_k)]
    if root is not None and parts:
        parts.append(f"likeliest root {KIND_LABEL[root.kind]} {root.component_id}"
                     + (f": {root.change}" if root.change else ""))
    named = _head_names(cause, cause_p)
    unchecked = f"; unchecked: {naming_note}" if naming_status == TOO_FEW else ""
    why = ""
    if part and named and cause == PARTED_GROUP and naming_status != FAILED:
        why = f", likely {cause} ({cause_p:.2f}{unchecked}), the {part}"
    elif part:  # the metric names the part whatever the head says
        why = f", likely {PARTED_GROUP}, the {part}" + (f" (the cause head says {cause} {cause_p:.2f})"
                                                           if named and cause != PARTED_GROUP else "")
    elif named and naming_status == FAILED:
        why = f", cause unsure (the head says {cause} {cause_p:.2f}, but {naming_note})"
    elif named:
        why = f", likely {cause} ({cause_p:.2f}{unchecked})"
    return f"node {node_id} at risk {risk:.2f}{why}" + (": " + "; ".join(parts) if parts else "")


def raw_window(run: Any, t_idx: int, window: int) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Raw per-kind telemetry of the window ending at ``t_idx`` (for sentences in raw units)."""
    metrics, names = _get(run, "metrics"), _get(run, "metric_names")
    lo = t_idx + 1 - window
    return {k: np.asarray(v)[lo : t_idx + 1] for k, v in metrics.items()}, {k: list(v) for k, v in names.items()}


def alert_rows(rows: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The ``top_n`` highest-scoring rows, one per node (what :func:`explain_dataset_alerts` explains, in order)."""
    return rows.sort_values("score", ascending=False).drop_duplicates(["site", "node"]).head(top_n)


def snapshot_node_logits(rows: pd.DataFrame, site: int, t: int, n_nodes: int) -> np.ndarray | None:
    """Every node's logit at ``(site, t)`` from a score table (NaN where it has no row), for
    :func:`~infrabrain.models.root_cause_ranking.sibling_evidence`; None when the table has no ``logit`` column."""
    if "logit" not in rows.columns:
        return None
    sub = rows[(rows["site"] == site) & (rows["t"] == t)]
    out = np.full(n_nodes, np.nan)
    out[sub["node"].to_numpy(dtype=np.int64)] = sub["logit"].to_numpy(dtype=np.float64)
    return out


def explain_dataset_alerts(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet,
                           rows: pd.DataFrame, top_n: int = 5,
                           prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                           own_tails: OwnChangeTails | None = None,
                           naming: CauseNamingCheck | None = None) -> list[Explanation]:
    """Explanations of the ``top_n`` highest-scoring rows (``site, t, node, score``) of ``dataset``; ``prior`` is one
    root prior or one per site (by ``dataset``'s site index: the published mix laid on each site's topology);
    ``own_tails`` and ``naming`` as :func:`explain_node`'s."""
    steps = snapshot_steps(dataset)
    return [explain_dataset_row(model, dataset, feature_set, rows, int(r.site), steps[(int(r.site), int(r.t))],
                                int(r.node), prior=prior, own_tails=own_tails, naming=naming)
            for r in alert_rows(rows, top_n).itertuples()]


def explain_dataset_row(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet,
                        rows: pd.DataFrame, site_index: int, step: int, node: int,
                        prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                        own_tails: OwnChangeTails | None = None, naming: CauseNamingCheck | None = None,
                        **rules: bool) -> Explanation:
    """:func:`explain_node` of node ``node`` in snapshot ``step`` of site ``site_index`` of ``dataset``, as
    ``predict`` explains it: in raw units where the site keeps its run, with every node's logit at that time from
    ``rows`` (``site, t, node, logit``) and the site's ``prior``. ``rules``: :func:`explain_node`'s
    ``metric_by_occlusion`` and ``name_root``."""
    site = dataset.sites[site_index]
    item = build_snapshot(site, step, dataset.window, site_index, pool=dataset.pool)
    raw, names = raw_window(site.run, step, dataset.window) if site.run is not None else (None, None)
    logits = snapshot_node_logits(rows, site_index, int(site.timestamps[step]), len(site.graph.node_global))
    p = prior.get(site_index) if isinstance(prior, Mapping) else prior
    return explain_node(model, item, site.graph, feature_set, node, raw, names, site.cadence_s, prior=p,
                        node_logits=logits, own_tails=own_tails, naming=naming, **rules)
