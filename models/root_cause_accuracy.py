"""How often the root-cause ranking (:mod:`~infrabrain.models.root_cause_ranking`) puts the simulator's
ground-truth root component first or in the top three (:func:`rootcause_accuracy`), overall, per cause group and
on cascades, with the deployed ranking beside the same ranking without each of its newer parts.

Each failure is explained where an operator would have read it: at the node's highest-scoring snapshot in the
hour before it, no later than five minutes before (:func:`explained_failures`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from infrabrain.models.explain import quote_contributors, quoted_part_component, raw_window, snapshot_node_logits
from infrabrain.models.features import FeatureSet
from infrabrain.models.gnn import cause_groups_of
from infrabrain.models.occlusion import occlusion_with_causes
from infrabrain.models.own_change_evidence import OwnChangeTails
from infrabrain.models.root_cause_ranking import own_change_part, rank_root_causes, silent_nodes
from infrabrain.models.root_prior import RootPrior
from infrabrain.models.snapshots import HORIZON_S, SiteGraph, SnapshotDataset, build_snapshot, snapshot_steps


@dataclass(frozen=True)
class ExplainedFailure:
    """One failure as :func:`rootcause_accuracy` explains it: at the node's highest-scoring snapshot in
    ``[tf - 60 min, tf - 5 min]``, with what the root-cause ranking reads there."""

    event: Any  # the row of :func:`~infrabrain.models.evaluation.failure_events` (site, node, tf, group, root, ...)
    score: float  # the node's score in the explained snapshot (the scale of ``rows["score"]``)
    t: int  # the explained snapshot's end time (``rows["t"]``)
    graph: SiteGraph
    cand: np.ndarray  # the root-cause candidates (:func:`~infrabrain.models.occlusion.candidates`)
    drops: np.ndarray  # their occlusion drops
    causes: dict[str, float]  # the cause head's probabilities (empty for a model without a head)
    node_logits: np.ndarray | None  # every node's logit in the snapshot (explain.snapshot_node_logits)
    silent: np.ndarray  # the nodes that went down within the window (root_cause_ranking.silent_nodes)
    own_change: np.ndarray | None = None  # per candidate, root_cause_ranking.own_change_part (None: no training tails)
    #: the component the alert's part lies on (explain.quoted_part_component, from the sentence explain_node
    #: writes); None where it names no part, or where explained_failures was given no feature_set
    part_at: int | None = None


def explained_snapshot(rows: pd.DataFrame, event: Any) -> pd.Series | None:
    """The row of ``rows`` at which failure ``event`` (``site, node, tf``) is explained: its node's highest-scoring
    one in ``[tf - 60 min, tf - 5 min]``, where an operator would have read the alert; None where there is none."""
    from infrabrain.models.evaluation import MIN_LEAD_S

    sub = rows[(rows["site"] == event.site) & (rows["node"] == event.node) & (rows["t"] >= event.tf - HORIZON_S)
               & (rows["t"] <= event.tf - MIN_LEAD_S)]
    return sub.loc[sub["score"].idxmax()] if len(sub) else None


def explained_failures(model: torch.nn.Module, dataset: SnapshotDataset, rows: pd.DataFrame, events: pd.DataFrame,
                       max_events: int = 200, seed: int = 0, own_tails: OwnChangeTails | None = None,
                       feature_set: FeatureSet | None = None) -> Iterator[ExplainedFailure]:
    """Each failure of ``events`` (at most ``max_events``, sampled with ``seed``) that ``rows`` scores within the
    hour before it, explained at its highest-scoring snapshot there (:class:`ExplainedFailure`). With ``own_tails``
    and ``feature_set`` also each candidate's :func:`~infrabrain.models.root_cause_ranking.own_change_part`; with
    ``feature_set`` the component the alert's part lies on (``part_at``: its contributors quoted as
    :func:`~infrabrain.models.explain.explain_node` quotes them, in raw units where the site keeps its run)."""
    if own_tails is not None and feature_set is None:
        raise ValueError("own_tails needs the feature_set the snapshots were encoded with")
    ev = events.sample(n=min(max_events, len(events)), random_state=seed) if len(events) > max_events else events
    groups = cause_groups_of(model)
    steps = snapshot_steps(dataset)
    for e in ev.itertuples():
        best = explained_snapshot(rows, e)
        if best is None:
            continue
        site = dataset.sites[int(e.site)]
        step = steps[(int(e.site), int(best["t"]))]
        item = build_snapshot(site, step, dataset.window, int(e.site), pool=dataset.pool)
        _, cand, drops, probs = occlusion_with_causes(model, item, site.graph, int(e.node))
        part_at = None
        if feature_set is not None:
            raw, names = raw_window(site.run, int(step), dataset.window) if site.run is not None else (None, None)
            part_at = quoted_part_component(quote_contributors(model, item, site.graph, feature_set, int(e.node),
                                                               cand, drops, raw, names, site.cadence_s))
        yield ExplainedFailure(
            event=e, score=float(best["score"]), t=int(best["t"]), graph=site.graph, cand=cand, drops=drops,
            causes={} if probs is None else dict(zip(groups, probs.tolist())),
            node_logits=snapshot_node_logits(rows, int(e.site), int(best["t"]), len(site.graph.node_global)),
            silent=silent_nodes(item, site.graph),
            own_change=None if own_tails is None else own_change_part(item, site.graph, cand, feature_set, own_tails),
            part_at=part_at)



def rootcause_accuracy(model: torch.nn.Module, dataset: SnapshotDataset, feature_set: FeatureSet,
                       rows: pd.DataFrame, events: pd.DataFrame, max_events: int = 200,
                       seed: int = 0, alert_threshold: float | None = None,
                       prior: RootPrior | Mapping[int, RootPrior | None] | None = None,
                       compare_priors: Mapping[str, RootPrior | Mapping[int, RootPrior | None] | None] | None = None,
                       late_from: Mapping[int, float] | None = None, absolute: bool = False,
                       own_tails: OwnChangeTails | None = None) -> dict[str, Any]:
    """Top-1/top-3 accuracy of the root-cause ranking (:func:`~infrabrain.models.root_cause_ranking.rank_root_causes`,
    with ``prior`` if given: the one ``predict`` reports) against the ground truth; with ``compare_priors`` also of
    the same drops ranked with each of those priors (``report["compare"][name]``: overall, cascades, precursor and
    alerted cascades). Any prior may be one per site (a mapping from ``dataset``'s site index: a site's own labels,
    the published mix on its topology). With ``late_from`` (site index -> time) the comparison is also reported over
    the failures at or after that time only (``report["compare_late"]``): a site's prior counted before it is then
    scored on what came after.

    For each failure event (at most ``max_events``, sampled), the explained snapshot is the node's
    highest-scoring row in ``[tf - 60 min, tf - 5 min]``. Reported overall, per cause group, for cascades
    (thermal + network) and for the cascades whose root showed a precursor (``cascade_precursor_*``): an abrupt
    leaf failure leaves nothing in any window to point at, whatever the explanation method. With
    ``alert_threshold`` (the deployed alert threshold, on the scale of ``rows["score"]``) also for the cascades
    that raised an alert (``cascade_alerted_*``): the explanations an operator would read. With ``absolute``
    every prior's ranking is also scored on the raw GPU drops (``relative_gpus=False``, the ranking before issue 3
    follow-up 27), under ``report["compare"]["absolute"]`` and ``report["compare"]["<name>_absolute"]``. A model
    with a cause head ranks every prior's candidates with the head's cause evidence too, as ``predict`` does
    (:mod:`~infrabrain.models.cause_root_evidence`); the deployed ranking without it is scored beside
    (``report["without_cause_head"]``), and so is the deployed ranking without explaining the node's drop away
    (``report["without_explaining_away"]``, :func:`~infrabrain.models.root_cause_ranking.explained_away`; with a score
    table that has logits). With ``own_tails`` (the training sites' own changes,
    :mod:`~infrabrain.models.own_change_evidence`) every ranking also reads how far each cooling unit's own telemetry
    moved, and the deployed one without it is scored beside (``report["without_own_change"]``). Where an alert's
    sentence names a part of the machine (a GPU's PCIe replays, :mod:`~infrabrain.models.cause_part`), every
    ranking puts the component that metric lies on first, as ``predict`` does; the deployed ranking without it is
    scored beside (``report["without_part"]``); ``parted_*`` counts those failures alone.
    """
    modes = (True, False) if absolute else (True,)  # relative GPU drops, and the raw ones beside
    priors = {"": prior, **{f"compare.{k}": v for k, v in (compare_priors or {}).items()}}
    res = []
    for f in explained_failures(model, dataset, rows, events, max_events, seed, own_tails, feature_set):
        e, graph = f.event, f.graph
        alerted = alert_threshold is not None and f.score >= alert_threshold
        late = late_from is not None and int(e.site) in late_from and int(e.tf) >= late_from[int(e.site)]
        for name, p in priors.items():
            p = p.get(int(e.site)) if isinstance(p, Mapping) else p
            for relative in modes:
                ranked = rank_root_causes(graph, f.cand, f.drops, p, f.node_logits, relative_gpus=relative,
                                          silent=f.silent, causes=f.causes, own_change=f.own_change,
                                          part_at=f.part_at)
                key = name if relative else f"{name}_absolute" if name else "compare.absolute"
                res.append((key, e.group, bool(e.precursor), alerted, rank_of(ranked, int(e.root)), late,
                            f.part_at is not None))
        p = prior.get(int(e.site)) if isinstance(prior, Mapping) else prior
        beside = {}  # the deployed ranking without one of its parts, on the same drops
        if f.causes:
            beside["without_cause_head"] = {"own_change": f.own_change, "part_at": f.part_at}
        if f.node_logits is not None:
            beside["without_explaining_away"] = {"causes": f.causes, "explain_away": False,
                                                 "own_change": f.own_change, "part_at": f.part_at}
        if f.own_change is not None:
            beside["without_own_change"] = {"causes": f.causes, "part_at": f.part_at}
        if feature_set is not None:
            beside["without_part"] = {"causes": f.causes, "own_change": f.own_change}
        for name, kw in beside.items():
            ranked = rank_root_causes(graph, f.cand, f.drops, p, f.node_logits, silent=f.silent, **kw)
            res.append((name, e.group, bool(e.precursor), alerted, rank_of(ranked, int(e.root)), late,
                        f.part_at is not None))
    df = pd.DataFrame(res, columns=["prior", "group", "precursor", "alerted", "rank", "late", "parted"])
    out = _rootcause_summary(df[df["prior"] == ""], alert_threshold is not None)
    out["by_group"] = {g: _top_k(d) for g, d in df[df["prior"] == ""].groupby("group")}
    for name in WITHOUT:
        if (df["prior"] == name).any():
            out[name] = _rootcause_summary(df[df["prior"] == name], alert_threshold is not None)
    names = [*(compare_priors or {})]
    if absolute:
        names += [*(f"{k}_absolute" for k in names), "absolute"]
    if names:
        out["compare"] = {k: _rootcause_summary(df[df["prior"] == f"compare.{k}"], alert_threshold is not None)
                          for k in names}
        if late_from is not None:
            out["compare_late"] = {k: _rootcause_summary(df[(df["prior"] == f"compare.{k}") & df["late"]],
                                                         alert_threshold is not None) for k in names}
    return out


#: The deployed ranking without one of its parts, scored beside it (``report[name]``).
WITHOUT = ("without_cause_head", "without_explaining_away", "without_own_change", "without_part")


def rank_of(ranked: Sequence[int], root: int) -> int:
    """Position of ``root`` in a root-cause ranking; past every candidate when it is not one."""
    return ranked.index(root) if root in ranked else 10**6


def _rootcause_summary(df: pd.DataFrame, with_alerted: bool) -> dict[str, Any]:
    """Top-k of the root's rank over all explained failures, the cascades, the precursor and alerted cascades,
    and the failures whose sentence names a part (``parted_``)."""
    from infrabrain.models.evaluation import CASCADE_GROUPS

    casc = df[df["group"].isin(CASCADE_GROUPS)]
    alerted = _top_k(casc[casc["alerted"]], "cascade_alerted_") if with_alerted else {}
    return {**_top_k(df), **_top_k(casc, "cascade_"), **_top_k(casc[casc["precursor"]], "cascade_precursor_"),
            **alerted, **_top_k(df[df["parted"]], "parted_")}


def _top_k(ranks: pd.DataFrame, prefix: str = "") -> dict[str, Any]:
    """``<prefix>n``, ``<prefix>top1``, ``<prefix>top3`` of the root's rank in ``ranks`` (NaN when empty)."""
    n = len(ranks)
    return {f"{prefix}n": int(n),
            f"{prefix}top1": float((ranks["rank"] < 1).mean()) if n else float("nan"),
            f"{prefix}top3": float((ranks["rank"] < 3).mean()) if n else float("nan")}
