"""Benchmark of the next-hour failure predictor against the incumbents' rules and non-graph models.

Trains the GNN on a simulated federation (default 10 sites, 3 held out, one validation site, the other six trained
on their whole run, 24 h, acceleration 200), fits every baseline on the same split, evaluates all of them on the
held-out sites, then times one training epoch over 1,000 snapshots of a 512-GPU site and inference on a 10,000-GPU
snapshot. Prints a human summary, then as its LAST line one JSON object (keys named in issue 3; accuracy keys are
means over ``--seeds`` training seeds on the same data, default 3, with ``<key>_per_seed`` lists for the headline
keys). Also reported: the calibrated GNN + logistic ensemble (``pr_auc_ensemble``), the GNN at the alert threshold
chosen on the validation site (``val_threshold_*``), the per-cause comparison with the rules
(``by_cause_vs_rules``; per group also its training failures, ``train_failures``, and the PR-AUC of ``gnn+rules``,
the GNN with the rules of the groups it learned nothing of, ``gnn_rules_pr_auc``), the hardware-precursor failures each model catches at its precision-0.5 threshold per
simulator cause (``precursor_caught``: per draw the mean over training seeds, over ``--data-seeds`` the sum), the
ratio split by where the failure's root is (``pr_auc_ratio_node_rooted``: the node or
its GPUs, which a per-node model reads as well; ``pr_auc_ratio_upstream``: a switch, PDU or cooling unit) and the
simulator-truth oracle bounds (``oracle_*``: what any model could reach on this simulator; ``--no-oracle`` skips
them), and 90 % intervals of the ratio, the event recall and the median lead over resampled held-out racks
(``<key>_interval``, ``--bootstrap``; with ``--report-dir`` and ``--data-seeds``, a plot ``ratio_intervals.png``).
``--layers 0`` trains the same model without message passing, to see what the graph adds;
``--extra-train-sites K`` trains on K more simulated sites, scored on the same held-out sites (a learning curve);
``--extra-train-cause-scale thermal=5,psu=5`` gives those K sites more failures of the named causes.
The explanation keys (``explanation_*``, :mod:`infrabrain.models.precursor_naming`): of the held-out failures with
a precursor (``explanation_failures``), the share whose sentence quotes the root (``explanation_root_quoted``) and
names its precursor (``explanation_precursor_named``), beside the sentence before issue 3 follow-up 40
(``*_before_follow_up_40``), and how often it ends by naming an unquoted upstream root (``explanation_root_clause``)
and how often that root is the true one (``explanation_root_clause_right``); how often it names a cause group
(``explanation_group_named``) and the failure's (``explanation_group_right``), how often "other"
(``explanation_other_named``), of those how often it also names the part of the machine
(``explanation_part_named``: "the GPU bus", issue 3 follow-up 42) and how often that part is the precursor's
(``explanation_part_right``); the group the cause head alone names, as before follow-up 42
(``explanation_group_named_by_head``, ``explanation_group_right_by_head``).
The root-cause keys (``rootcause_top3`` ...) rank with the card's prior as a deployed site does: the training
sites' pooled labels plus the published failure mix on the site's topology at 50 pseudo-failures (follow-up 29;
``rootcause_top3_labels``: the labels alone, as before). A GNN with a cause head also ranks with the head's
cause evidence, every variant below included (follow-up 34); ``rootcause_<metric>_without_cause_head`` is the
card's ranking without it, on the same drops (``top1``, ``top1_cascade``, ``top3`` on cascades, ``top3_all``);
``rootcause_<metric>_without_explaining_away`` the card's ranking with the node's whole drop (follow-up 36);
``rootcause_<metric>_without_own_change`` without how far each cooling unit's own telemetry moved (follow-up 37),
``rootcause_<metric>_without_part`` without ranking first the component an alert's part lies on (follow-up 43);
``rootcause_top1_parted`` (and ``_without_part``) over the ``rootcause_parted_n`` failures whose sentence names a part.
The head itself: ``cause_head_accuracy``, ``cause_head_balanced_accuracy`` (the mean of its groups' recalls) and
``cause_head_<recall|precision>_<group>``; ``--cause-balance B`` trains it with class weights (follow-up 35).
The same root-cause drops are also ranked with other root priors (``rootcause_top3_<variant>``: none, and the
training sites' fleet prior without noise and released under DP at ``--fleet-prior-epsilons`` and
``--fleet-prior-clip-norms``; with ``--fleet-prior-sites N`` also with N more sites' incident logs,
``fleet_plus_*``): what a new site without labels would rank with (docs/predictor.md, follow-up 23);
``--fleet-prior-min-honest 0,1,2`` also releases them with every site counting on that many honest sites
(``_h<H>``: the noise a coordinator that invents sites cannot shrink, follow-up 25).
``--local-prior-fraction F`` ranks each held-out site's failures after F of its run with its own earlier labels
as a prior, alone and merged with the training sites' pooled or released prior (``rootcause_late_*``, follow-up
24).
``--published-prior-failures 20,50`` also ranks with the published failure mix laid on each held-out site's
topology at each weight, alone, with the pooled labels and with the fleet release (``published_f<S>``,
``central_published_f<S>``, ``fleet_published_f<S>``; with ``--local-prior-fraction`` the first weight also with
the site's own labels, ``local_published``); ``--published-prior-misspec 3`` with each cause share off by up to a
factor of 3 (``published_f<S>_mis3``, follow-up 26).
``--rootcause-absolute`` also ranks every prior's candidates on the raw GPU occlusion drops, as before follow-up
27 ranked them (``rootcause_<metric>_absolute``, ``rootcause_<metric>_<variant>_absolute``): before and after on
the same drops.
``--parts headroom`` trains no GNN: per draw it reports the best non-graph model, the PR-AUC the ratio goal asks
for, and every oracle on the same rows, up to the ``amplitude_aware`` ceiling (``headroom_per_draw``; with
``--report-dir``, a bar chart ``headroom.png``).

    .venv/bin/python bench/predictor.py                 # default
    .venv/bin/python bench/predictor.py --hours 48 --epochs 12 --acceleration 100   # larger
    .venv/bin/python bench/predictor.py --quick         # smaller smoke run
    .venv/bin/python bench/predictor.py --parts epoch,inference   # timings only
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --data-seeds 4 --no-oracle   # 4 draws (~10 min)
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --seed 4 --data-seeds 4 --no-oracle   # 4 fresh draws
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --data-seeds 4 --extra-train-sites 6  # 12 trained
    .venv/bin/python bench/predictor.py --parts headroom --data-seeds 4   # baselines and oracles only (~70 s)
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --data-seeds 4 --no-oracle \
        --fleet-prior-sites 30 --fleet-prior-hours 168   # fleet root priors with 30 more sites' week of incidents
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --data-seeds 8 --no-oracle \
        --local-prior-fraction 0.5 --rootcause-events 300 --bootstrap 0   # a site with labels of its own
    .venv/bin/python bench/predictor.py --parts accuracy --seeds 2 --data-seeds 4 --no-oracle \
        --published-prior-failures 20,50,200 --published-prior-misspec 3   # the published failure mix as a prior
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infrabrain.models.cause_coverage import MIN_TRAINED_FAILURES  # fewer training failures: untrained group
from infrabrain.models.evaluation import GOALS, RATIO_GOAL  # the goals
from infrabrain.models.pipeline import RULE_FALLBACK_MODEL  # the GNN with rules where it learned nothing
from infrabrain.models.root_cause_accuracy import WITHOUT  # the ranking without each of its parts
from infrabrain.models.selection import DEFAULT_SELECTION, SELECTIONS

if TYPE_CHECKING:
    from infrabrain.models.pipeline import PipelineConfig


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


#: Keys reported per training seed too (``<key>_per_seed``); every numeric key is the mean over seeds.
PER_SEED_KEYS = ("pr_auc_gnn", "pr_auc_ratio", "pr_auc_ratio_cascade", "event_recall_at_p50", "median_lead_min",
                 "rootcause_top3", "rootcause_top3_precursor", "rootcause_top3_alerted", "pr_auc_ensemble",
                 "best_epoch")


def accuracy_part(args: argparse.Namespace) -> dict:
    """Train ``--seeds`` GNNs (training seeds ``seed .. seed + seeds - 1``) on one simulated federation and
    report the mean over them: a single training seed moves PR-AUC by +-0.03 and the cascade / root-cause /
    lead numbers far more, so one seed's headline would be a lottery ticket.

    With ``--data-seeds N`` it does so on N federations drawn with simulation seeds ``seed .. seed + N - 1``
    (draw ``d`` trains seeds ``d .. d + seeds - 1``) and reports the mean over draws, each draw's value
    (``<key>_per_draw``) and the worst draw's ratio (``pr_auc_ratio_min_draw``): a change that helps one draw of
    ten small sites often hurts the next, so a decision needs several."""
    draws, samples = zip(*(_one_draw(args, args.seed + i) for i in range(args.data_seeds)), strict=True)
    if len(draws) == 1:
        return draws[0]
    out = _mean_over_draws(list(draws), None if None in samples else list(samples))
    print_caught(out.get("precursor_caught", {}),
                 f"over the {len(draws)} draws (summed; each draw the mean over its training seeds)")
    if args.report_dir and out.get("pr_auc_ratio_interval"):
        from infrabrain.models.evaluation import plot_ratio_intervals

        png = plot_ratio_intervals([*(f"draw {d}" for d in out["data_seeds"]), "geometric mean"],
                                   [*out["pr_auc_ratio_per_draw"], out["pr_auc_ratio"]],
                                   [*out["pr_auc_ratio_interval_per_draw"], out["pr_auc_ratio_interval"]],
                                   f"{args.report_dir}/ratio_intervals.png", RATIO_GOAL,
                                   title=f"{args.hours:g} h draws")
        print(f"wrote {png}", file=sys.stderr)
    return out


def _draw_runs(args: argparse.Namespace, data_seed: int) -> list:
    """The simulated federation of ``data_seed``, in :func:`site_order`."""
    from infrabrain.simulation import simulate_federation
    from infrabrain.simulation.federation import federation_specs

    t0 = time.perf_counter()
    specs = federation_specs(args.sites + args.extra_train_sites, data_seed)
    if args.extra_train_cause_scale:  # only the extra training sites: validation and held-out sites stay as drawn
        specs[args.sites:] = [s.with_cause_scale(args.extra_train_cause_scale) for s in specs[args.sites:]]
    runs = simulate_federation(specs=specs, hours=args.hours, seed=data_seed, acceleration=args.acceleration)
    runs = [runs[i] for i in site_order(len(runs), args.sites, args.heldout, args.val_sites)]
    sim_s = time.perf_counter() - t0
    fails = sum(int((r.events["event"] == "failure").sum()) for r in runs)
    print(f"simulated {len(runs)} sites x {args.hours} h (acceleration {args.acceleration}, seed {data_seed}): "
          f"{sum(r.topology.count('gpu') for r in runs)} GPUs, {fails} failure events, {sim_s:.1f} s", file=sys.stderr)
    return runs


def parse_cause_scale(text: str) -> dict[str, float]:
    """``"thermal=5,psu=5"`` -> ``{"thermal": 5.0, "psu": 5.0}``, checked by ``FaultSpec`` (known causes, 0-100)."""
    from pydantic import ValidationError

    from infrabrain.simulation.spec import FaultSpec

    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        cause, sep, value = item.partition("=")
        try:
            out[cause.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected CAUSE=MULTIPLIER, got {item!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected CAUSE=MULTIPLIER, got {item!r}")
    try:
        return FaultSpec(cause_scale=out).cause_scale
    except ValidationError as err:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise argparse.ArgumentTypeError(msg) from None


def parse_positive_floats(text: str) -> list[float]:
    """``"1,4"`` -> ``[1.0, 4.0]`` (``""`` -> ``[]``); a value that is not a positive finite number is refused by
    name here, not after a whole training run."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        try:
            v = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {item!r}") from None
        if not (v > 0 and np.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{item!r} is not a positive number")
        out.append(v)
    return out


def parse_positive_ints(text: str) -> list[int]:
    """``"20,50"`` -> ``[20, 50]`` (``""`` -> ``[]``); anything but a positive integer is refused by name."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        if not item.isdigit() or int(item) < 1:
            raise argparse.ArgumentTypeError(f"{item!r} is not a positive integer")
        out.append(int(item))
    return out


def parse_min_honest(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``: how many honest sites each site of the fleet-prior releases counts on (0: the
    secure sum's threshold); anything but a non-negative integer is refused by name."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        if not item.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not a non-negative integer")
        out.append(int(item))
    if not out:
        raise argparse.ArgumentTypeError("expected at least one value (0: the threshold)")
    return out


def fleet_sites_relations(args: argparse.Namespace, data_seed: int) -> list[Any]:
    """Root relations (``tf, relation``) of the labelled incidents of ``--fleet-prior-sites`` more sites of the
    draw's federation (after every training, validation, held-out and extra training site), simulated for
    ``--fleet-prior-hours``: sites whose incidents join the fleet prior but whose telemetry trains nothing."""
    from infrabrain.models.root_prior import run_root_relations
    from infrabrain.simulation import simulate_federation
    from infrabrain.simulation.federation import federation_specs

    if not args.fleet_prior_sites:
        return []
    first = args.sites + args.extra_train_sites
    specs = federation_specs(first + args.fleet_prior_sites, data_seed)[first:]
    hours = args.fleet_prior_hours or args.hours
    runs = simulate_federation(specs=specs, hours=hours, seed=data_seed, acceleration=args.acceleration)
    relations = [run_root_relations(r) for r in runs]
    print(f"fleet prior: {len(runs)} more sites x {hours:g} h, {sum(len(r) for r in relations)} node failures with "
          "a known root", file=sys.stderr)
    return relations


def fleet_prior_variants(train: Any, epsilons: Sequence[float], clip_norms: Sequence[float], seed: int,
                         extra: Sequence[Any] = (), releases: dict[str, Any] | None = None,
                         min_honest: Sequence[int] = (0,)) -> dict[str, Any]:
    """The root priors a held-out site (a new site: no labels of its own) could rank with, besides the pooled
    training labels the pipeline uses: none (``none``, what a site without a prior has); the training sites'
    hour-clipped contributions summed without noise (``fleet_clipped``) and released under DP at each epsilon
    (``fleet_dp_eps<e>``: :mod:`infrabrain.privacy.fleet_root_prior`, a real secure sum); with the ``extra``
    sites' relations too (``fleet_plus_*``, the sites of ``--fleet-prior-sites``); each at every clip norm
    (``_c<C>`` unless 1) and, for the DP variants, with every site counting on each of ``min_honest`` honest
    sites (``_h<H>`` unless 0, the threshold: the noise that a coordinator inventing sites cannot shrink). A
    release needs at least ``min_sites`` sites. ``releases`` (if given) receives each DP variant's published
    :class:`~infrabrain.privacy.fleet_root_prior.FleetRootPrior` by name."""
    from infrabrain.models.root_prior import RELATIONS, RootPrior, root_relations
    from infrabrain.privacy.fleet_root_prior import (FleetRootPriorConfig, build_fleet_root_prior,
                                                     relation_contribution, site_root_prior)

    rel = root_relations(train)
    own = [rel[rel["site"] == s] for s in range(len(train.sites))]
    out: dict[str, Any] = {"none": None}
    for name, relations in (("fleet", own), ("fleet_plus", [*own, *extra])):
        if name == "fleet_plus" and not extra:
            continue
        releasable = len(relations) >= FleetRootPriorConfig().min_sites
        if not releasable:
            print(f"fleet root prior: {len(relations)} sites, fewer than a release needs: not released",
                  file=sys.stderr)
        for c in clip_norms:
            sfx = "" if c == 1 else f"_c{c:g}".replace(".", "p")
            contribs = [relation_contribution(r, clip_norm=c) for r in relations]
            clipped = {r: int(round(v)) for r, v in zip(RELATIONS, np.sum(contribs, axis=0)) if round(v) > 0}
            out[f"{name}_clipped{sfx}"] = RootPrior(counts=clipped, failures=sum(clipped.values())) if clipped else None
            for eps, h in itertools.product(epsilons if releasable else (), min_honest):
                fleet = build_fleet_root_prior(contribs, FleetRootPriorConfig(epsilon=eps, clip_norm=c), seed=seed,
                                               min_honest=[h] * len(contribs))
                key = f"{name}_dp_eps{eps:g}".replace(".", "p") + sfx + (f"_h{h}" if h else "")
                out[key] = site_root_prior(None, fleet)
                if releases is not None:
                    releases[key] = fleet
    return out


#: The priors :func:`local_prior_variants` compares on each held-out site's later failures.
LOCAL_PRIOR_VARIANTS = ("none", "local", "central", "fleet", "local_fleet", "local_fleet_excess", "local_central",
                        "fleet_excess", "fleet_eb", "local_fleet_eb", "fleet_plus", "local_fleet_plus", "published",
                        "local_published", "local_fleet_published", "local_fleet_read_published")


def local_prior_variants(test: Any, central: Any, fleet: Any, fraction: float,
                         fleet_plus: Any = None,
                         published: dict[int, Any] | None = None) -> tuple[dict[int, float], dict]:
    """A site that has labels of its own (``--local-prior-fraction``): each held-out site's prior counted from its
    failures before ``fraction`` of its run (``local``), scored on the failures after it (``late_from``), alone
    and merged with the training sites' pooled labels (``local_central``; ``central`` alone) or with their
    fleet prior released under DP (``fleet``: read as posterior means, as a new site reads it; ``local_fleet``:
    :func:`~infrabrain.privacy.fleet_root_prior.site_root_prior` as a federated site's checkpoint merges it;
    ``local_fleet_excess``: each posterior mean less that of an empty relation, so that a relation the noise
    cannot tell from empty adds nothing to the site's own counts; ``local_fleet_eb``: posterior means under an
    exponential prior whose mean is the noisy counts' mean, an empirical-Bayes prior that expects most
    relations to be rare; ``fleet_excess`` and ``fleet_eb`` without the site's counts). With ``fleet_plus`` (the
    release with ``--fleet-prior-sites``' incidents too) also ``fleet_plus`` and ``local_fleet_plus``. With
    ``published`` (per site, :mod:`infrabrain.models.published_root_prior`) also ``published``,
    ``local_published`` and ``local_fleet_published`` (the site's counts, the fleet's and the published mix's),
    and ``local_fleet_read_published`` (the fleet's counts read against the published shares,
    ``site_root_prior(base=...)``)."""
    from collections import Counter

    from infrabrain.models.root_prior import RELATIONS, RootPrior, merge_root_priors, root_relations, snapshot_span
    from infrabrain.privacy.fleet_root_prior import expected_count, site_root_prior

    late_from = {s: lo + fraction * (hi - lo) for s, (lo, hi) in snapshot_span(test).items()}
    rel = root_relations(test)
    local: dict[int, Any] = {}
    for s, t in late_from.items():
        c = Counter(rel[(rel["site"] == s) & (rel["tf"] < t)]["relation"])
        local[s] = RootPrior(counts=dict(sorted(c.items())), failures=sum(c.values())) if c else None
    out: dict[str, Any] = {"none": None, "local": local, "central": central,
                           "local_central": {s: merge_root_priors(p, central) for s, p in local.items()}}
    if fleet is not None:
        floor = expected_count(0.0, fleet.sigma)
        excess = {r: int(round(max(0.0, expected_count(fleet.counts.get(r, 0.0), fleet.sigma) - floor)))
                  for r in RELATIONS}
        excess = {r: n for r, n in excess.items() if n}
        excess_prior = RootPrior(counts=excess, failures=sum(excess.values())) if excess else None
        noisy = np.array([fleet.counts.get(r, 0.0) for r in RELATIONS])
        shift = fleet.sigma**2 / max(float(noisy.mean()), 1e-3)  # exponential prior, mean from the noisy counts
        eb = {r: int(round(expected_count(v - shift, fleet.sigma))) for r, v in zip(RELATIONS, noisy)}
        eb = {r: n for r, n in eb.items() if n}
        eb_prior = RootPrior(counts=eb, failures=sum(eb.values())) if eb else None
        out |= {"fleet": site_root_prior(None, fleet),
                "local_fleet": {s: site_root_prior(p, fleet) for s, p in local.items()},
                "local_fleet_excess": {s: merge_root_priors(p, excess_prior) for s, p in local.items()},
                "fleet_excess": excess_prior, "fleet_eb": eb_prior,
                "local_fleet_eb": {s: merge_root_priors(p, eb_prior) for s, p in local.items()}}
    if fleet_plus is not None:
        out |= {"fleet_plus": site_root_prior(None, fleet_plus),
                "local_fleet_plus": {s: site_root_prior(p, fleet_plus) for s, p in local.items()}}
    if published is not None:
        from infrabrain.models.published_root_prior import relation_shares

        out |= {"published": published,
                "local_published": {s: merge_root_priors(p, published.get(s)) for s, p in local.items()}}
        if fleet is not None:
            out["local_fleet_published"] = {s: merge_root_priors(out["local_fleet"][s], published.get(s))
                                             for s in local}
            out["local_fleet_read_published"] = {
                s: merge_root_priors(site_root_prior(p, fleet, base=relation_shares(test.sites[s].graph)),
                                     published.get(s)) for s, p in local.items()}
    return late_from, out


def misspecified_cause_shares(factor: float, rng: np.random.Generator) -> dict[str, float]:
    """The published cause shares, each multiplied by a factor drawn log-uniformly in ``[1/factor, factor]``: a
    fleet whose mix differs from the report's (renormalising is left to the prior)."""
    from infrabrain.simulation.faults import CAUSE_SHARES

    spread = np.log(factor)
    return {c: v * float(np.exp(rng.uniform(-spread, spread))) for c, v in CAUSE_SHARES.items()}


def published_prior_variants(test: Any, central: Any, fleet: Any, failures: Sequence[int],
                             misspec: Sequence[float], seed: int) -> dict[str, dict[int, Any]]:
    """Per held-out site, the published root prior (:mod:`infrabrain.models.published_root_prior`) laid on its
    own topology, at each weight in ``failures`` (``published_f<S>``: what a new site without labels or a fleet
    prior ranks with); merged with the training sites' pooled labels (``central_published_f<S>``) and with the
    DP fleet prior (``fleet_published_f<S>``, when ``fleet`` was released; ``fleet_read_published_f<S>``: its
    counts read against the published shares, ``site_root_prior(base=...)``); and with the cause shares
    misspecified by each factor of ``misspec`` (``published_f<S>_mis<F>``: one draw of the factors per training
    seed)."""
    from infrabrain.models.published_root_prior import published_root_prior, relation_shares, shares_as_prior
    from infrabrain.models.root_prior import merge_root_priors
    from infrabrain.privacy.fleet_root_prior import site_root_prior

    released = site_root_prior(None, fleet) if fleet is not None else None
    sites = range(len(test.sites))
    shares = {i: relation_shares(test.sites[i].graph) for i in sites} if failures else {}
    read = {i: site_root_prior(None, fleet, base=shares[i]) for i in sites} if fleet is not None and failures else {}
    out: dict[str, dict[int, Any]] = {}
    for s in failures:
        own = {i: shares_as_prior(shares[i], s) for i in sites}
        out[f"published_f{s}"] = own
        out[f"central_published_f{s}"] = {i: merge_root_priors(central, p) for i, p in own.items()}
        if released is not None:
            out[f"fleet_published_f{s}"] = {i: merge_root_priors(released, p) for i, p in own.items()}
            out[f"fleet_read_published_f{s}"] = {i: merge_root_priors(read[i], p) for i, p in own.items()}
        for f in misspec:
            wrong = misspecified_cause_shares(f, np.random.default_rng([seed, 17, int(f * 100)]))
            out[f"published_f{s}_mis{f:g}".replace(".", "p")] = {
                i: published_root_prior(test.sites[i].graph, s, wrong) for i in sites}
    return out


def _pipeline_config(args: argparse.Namespace, seed: int) -> PipelineConfig:
    """The pipeline settings of the bench's flags, with training seed ``seed``."""
    from infrabrain.models.pipeline import PipelineConfig, training_fractions

    return PipelineConfig(heldout=args.heldout, val_sites=args.val_sites, weight_decay=args.weight_decay,
                          epochs=args.epochs, patience=args.patience, selection=args.selection, seed=seed,
                          hidden=args.hidden, layers=args.layers, lr=args.lr, level_features=not args.no_levels,
                          summary_features=not args.no_summary, bin_features=args.bins, dropout=args.dropout,
                          fractions=training_fractions(args.train_until), pos_weight=args.pos_weight,
                          stride_min=args.stride, pool_min=args.pool, window_min=args.window,
                          input_scaling=args.scale_inputs,
                          input_scale_floor=args.scale_floor, progress=not args.no_progress, device=args.device,
                          train_on_unpredictable=args.train_on_unpredictable, cause_balance=args.cause_balance,
                          cause_split=tuple(args.cause_split),
                          cause_head=not args.no_cause_head, lead_weight=args.lead_weight,
                          early_band_min=args.early_band)


def headroom_part(args: argparse.Namespace) -> dict:
    """Per draw, without training a GNN: the best non-graph model's held-out PR-AUC, the PR-AUC the issue's ratio
    goal asks of the GNN (``RATIO_GOAL`` times it), and every oracle on the same rows. The ``amplitude_aware``
    oracle is the ceiling (see models/oracle.py); ``headroom_share_needed`` is the share of the gap between the
    best non-graph model and the ceiling that the goal asks a model to close, ``window_share_needed`` the same
    against the ``window_aware`` oracle (what one window of a counter precursor's own counts shows)."""
    from infrabrain.models.pipeline import headroom

    draws = []
    for i in range(args.data_seeds):
        d = args.seed + i
        h = headroom(_draw_runs(args, d), _pipeline_config(args, d))
        best, ceil = h["pr_auc_best_baseline"], h["pr_auc_ceiling"]
        row = {"data_seed": d, "best_baseline": h["best_baseline"], "pr_auc_best_baseline": best,
               "pr_auc_needed": RATIO_GOAL * best, "ceiling_over_best": ceil / best if best > 0 else None,
               "headroom_share_needed": _gap_share(best, ceil),
               "window_share_needed": _gap_share(best, h["oracle"]["window_aware"]["pr_auc"]),
               **{f"oracle_{k}_pr_auc": m["pr_auc"] for k, m in h["oracle"].items()},
               **{f"oracle_{k}_recall_at_p50": m["event_recall_at_p50_precursor"] for k, m in h["oracle"].items()},
               "pr_auc_best_baseline_cascade": h["pr_auc_best_baseline_cascade"],
               **{f"oracle_{k}_pr_auc_cascade": m["pr_auc_cascade"] for k, m in h["oracle"].items()},
               f"{h['best_baseline']}_recall_at_p50": h["models"][h["best_baseline"]]["event_recall_at_p50_precursor"]}
        draws.append(row)
        print(f"draw {d}: best non-graph {h['best_baseline']} {best:.3f}, "
              f"goal {RATIO_GOAL} x = {RATIO_GOAL * best:.3f}; "
              + ", ".join(f"{k} {m['pr_auc']:.3f}" for k, m in h["oracle"].items())
              + f"; ceiling / best {row['ceiling_over_best']:.2f}, share of the gap the goal needs "
              + ("-" if row["headroom_share_needed"] is None else f"{row['headroom_share_needed']:.2f}")
              + " (to window_aware: "
              + ("-" if row["window_share_needed"] is None else f"{row['window_share_needed']:.2f}") + ")",
              file=sys.stderr)
    if args.report_dir:
        from infrabrain.models.evaluation import plot_headroom

        png = plot_headroom(draws, f"{args.report_dir}/headroom.png", RATIO_GOAL, title=f"{args.hours:g} h draws")
        print(f"wrote {png}", file=sys.stderr)
    shares = [r["headroom_share_needed"] for r in draws]
    window = [r["window_share_needed"] for r in draws]
    ratios = [r["ceiling_over_best"] for r in draws if r["ceiling_over_best"] is not None]
    return {"headroom_per_draw": draws,
            "headroom_ceiling_over_best_min": min(ratios) if ratios else None,
            "headroom_share_needed_max": None if any(x is None for x in shares) else max(shares),
            "headroom_window_share_needed_max": None if any(x is None for x in window) else max(window)}


def _gap_share(best: float, oracle: float) -> float | None:
    """Share of the gap between ``best`` and ``oracle`` that ``RATIO_GOAL`` x ``best`` lies above ``best``
    (None when the oracle is not above the baseline: the goal is then out of its reach)."""
    return (RATIO_GOAL - 1) * best / (oracle - best) if oracle > best else None


def _one_draw(args: argparse.Namespace, data_seed: int) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Simulate the federation of ``data_seed`` and train / evaluate ``--seeds`` GNNs on it (mean over seeds),
    with the intervals of ``--bootstrap``; also the bootstrap samples (None without), for the mean over draws."""
    runs = _draw_runs(args, data_seed)
    fleet_extra = fleet_sites_relations(args, data_seed)
    per_seed = []
    for i in range(args.seeds):
        seed = data_seed + i
        report_dir = None
        if args.report_dir:
            report_dir = args.report_dir if args.data_seeds == 1 else f"{args.report_dir}/draw-{data_seed}"
            report_dir = report_dir if args.seeds == 1 else f"{report_dir}/seed-{seed}"
        print(f"--- training seed {seed} ({i + 1}/{args.seeds}) ---", file=sys.stderr)
        per_seed.append(_one_seed(runs, args, seed, report_dir, fleet_extra))
    results, held_out = zip(*per_seed, strict=True)
    out = _mean_over_seeds(list(results), [data_seed + i for i in range(args.seeds)])
    if not args.bootstrap:
        return out, None
    from infrabrain.models.uncertainty import bootstrap_draw

    _, racks, events = held_out[0]  # the same held-out sites for every seed
    samples = bootstrap_draw([h[0] for h in held_out], racks, events[events["precursor"]], n_boot=args.bootstrap,
                             seed=data_seed)
    out.update(_intervals(samples))
    iv = out["pr_auc_ratio_interval"]
    print(f"draw {data_seed}: ratio {out['pr_auc_ratio']:.2f}, {iv['level']:.0%} interval over the held-out "
          f"racks [{_f(iv['low'])}, {_f(iv['high'])}]; share of resamples >= {RATIO_GOAL}: {_f(iv['p_ge_goal'])}, "
          f"< 1: {_f(iv['p_below_1'])}", file=sys.stderr)
    return out, samples


def _intervals(samples: dict[str, np.ndarray]) -> dict[str, dict]:
    """The bench's ``<key>_interval`` entries from :func:`~infrabrain.models.uncertainty.bootstrap_draw` samples."""
    from infrabrain.models.uncertainty import goal_intervals

    key = {"pr_auc_ratio": "pr_auc_ratio", "event_recall": "event_recall_at_p50", "median_lead_min": "median_lead_min"}
    return {f"{key[k]}_interval": iv for k, iv in goal_intervals(samples).items()}


def site_order(n_runs: int, sites: int, heldout: int, val_sites: int) -> list[int]:
    """Order of the simulated runs for ``train_predictor``: the federation's training sites, then the extra
    training sites of ``--extra-train-sites`` (indices ``sites ..``), then its validation and held-out sites.

    The split takes validation and held-out sites from the end, and site ``i`` depends only on the seed and
    ``i``, so every size of training set is scored on the same held-out rows and stopped on the same
    validation site."""
    if not 0 <= heldout + val_sites < sites <= n_runs:
        raise ValueError(f"need 0 <= heldout + val_sites ({heldout} + {val_sites}) < sites ({sites}) <= runs "
                         f"({n_runs})")
    first = sites - heldout - val_sites
    return [*range(first), *range(sites, n_runs), *range(first, sites)]


#: The root priors of :func:`fleet_prior_variants` at the default epsilons, reported per draw.
FLEET_PRIOR_VARIANTS = ("none", *(f"{f}_{v}{c}" for f in ("fleet", "fleet_plus") for c in ("", "_c4")
                                   for v in ("clipped", "dp_eps1", "dp_eps4")))
#: Keys reported per draw too (``<key>_per_draw``) by ``--data-seeds``.
PER_DRAW_KEYS = ("pr_auc_gnn", "pr_auc_best_baseline", "pr_auc_ratio", "pr_auc_ratio_cascade",
                 "pr_auc_ratio_node_rooted", "pr_auc_ratio_upstream", "event_recall_at_p50", "median_lead_min",
                 "rootcause_top3", "rootcause_top3_precursor", "rootcause_top3_alerted", "pr_auc_ensemble",
                 *(f"rootcause_{m}_{v}" for m in ("top3", "top3_all") for v in FLEET_PRIOR_VARIANTS),
                 *(f"rootcause_late_{m}_{v}" for m in ("top3", "top3_all", "top1_all", "n")
                   for v in LOCAL_PRIOR_VARIANTS),
                 *(f"rootcause_full_{m}_{v}" for m in ("top3", "top3_all", "top1_all")
                   for v in LOCAL_PRIOR_VARIANTS if "local" not in v),
                 "rootcause_top3_all", "rootcause_top1", "rootcause_top1_cascade",
                 *(f"rootcause_{m}_{w}" for w in WITHOUT
                   for m in ("top1", "top1_cascade", "top3", "top3_all")),
                 "rootcause_parted_n", "rootcause_top1_parted", "rootcause_top1_parted_without_part",
                 "pr_auc_ratio_ensemble", "pr_auc_ratio_interval", "event_recall_at_p50_interval",
                 "median_lead_min_interval", "by_cause_vs_rules", "cause_head_accuracy",
                 "cause_head_balanced_accuracy", "explanation_root_quoted", "explanation_precursor_named",
                 "explanation_root_quoted_before_follow_up_40", "explanation_precursor_named_before_follow_up_40",
                 "explanation_failures", "explanation_root_clause", "explanation_root_clause_right",
                 "explanation_group_named", "explanation_group_right", "explanation_other_named",
                 "explanation_part_named", "explanation_part_right", "explanation_group_named_by_head",
                 "explanation_group_right_by_head")


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _combine_caught(vals: list[dict], *, total: bool) -> dict:
    """Combine ``precursor_caught`` tables (``{model: {cause: {"caught": k, "events": n}}}``): summed over the
    draws (``total``: different failures), averaged over the training seeds of one draw (the same failures)."""
    out: dict = {}
    runs: dict[str, int] = {}  # per model, how many of ``vals`` have it (the ensemble can be skipped in a seed)
    for v in vals:
        for model, causes in v.items():
            runs[model] = runs.get(model, 0) + 1
            for cause, d in causes.items():
                a = out.setdefault(model, {}).setdefault(cause, {"caught": 0.0, "events": 0.0})
                a["caught"] += d["caught"]
                a["events"] += d["events"]
    return {m: {c: {"caught": d["caught"] / (1 if total else runs[m]),
                    "events": int(round(d["events"] / (1 if total else runs[m])))} for c, d in cs.items()}
            for m, cs in out.items()}


def print_caught(caught: dict, over: str = "", models: tuple[str, ...] = ("gnn", "logistic", "gbm", "rules",
                                                                         "oracle_window_aware")) -> None:
    """Print a ``precursor_caught`` table to stderr (nothing if it is empty): per cause, hardware-precursor
    failures caught at each model's precision-0.5 threshold, ``over`` naming what it sums."""
    models = tuple(m for m in models if m in caught)
    causes = list(dict.fromkeys(c for m in models for c in caught[m]))
    if not causes:
        return
    print(f"hardware-precursor failures caught at precision 0.5, per cause{', ' + over if over else ''}:",
          file=sys.stderr)
    print(f"  {'cause':18s}" + "".join(f"{m:>21s}" for m in models), file=sys.stderr)
    for c in causes:
        cells = [_caught_cell(caught[m].get(c)) for m in models]
        print(f"  {c:18s}" + "".join(f"{x:>21s}" for x in cells), file=sys.stderr)


def _caught_cell(d: dict | None) -> str:
    return "-" if d is None else f"{d['caught']:g} / {d['events']}"


def _combine(rows: list[dict], listed: tuple[str, ...], suffix: str, *, geometric_ratios: bool,
             keep_other: bool, total_counts: bool = False) -> dict:
    """Combine result dicts: every numeric key's mean over the rows that have a finite value (None if none; the
    geometric mean for ``pr_auc_ratio*`` keys with ``geometric_ratios``), ``<key>_<suffix>`` lists for ``listed``,
    ``by_cause_vs_rules`` averaged per cause group and column over the rows that have them, ``precursor_caught``
    summed (``total_counts``) or averaged (:func:`_combine_caught`), and (``keep_other``)
    the first row's value of any other key."""
    out: dict = {}
    for k in dict.fromkeys(k for r in rows for k in r):
        vals = [r.get(k) for r in rows]
        if k == "precursor_caught":
            out[k] = _combine_caught([v for v in vals if v], total=total_counts)
        elif k == "by_cause_vs_rules":
            groups = dict.fromkeys(g for v in vals if v for g in v)
            out[k] = {g: {c: (float(np.mean(x)) if (x := [v[g][c] for v in vals if v and g in v
                                                           and v[g].get(c) is not None]) else None)
                          for c in dict.fromkeys(c for v in vals if v and g in v for c in v[g])}
                      for g in groups}
        elif any(_is_num(v) for v in vals):
            num = [float(v) for v in vals if _is_num(v) and np.isfinite(v)]
            if geometric_ratios and k.startswith("pr_auc_ratio"):
                num = [x for x in num if x > 0]
                out[k] = float(np.exp(np.mean(np.log(num)))) if num else None
            else:
                out[k] = float(np.mean(num)) if num else None
        elif all(v is None for v in vals):
            out[k] = None
        elif keep_other:
            out[k] = vals[0]
    for k in listed:
        out[f"{k}_{suffix}"] = [r.get(k) for r in rows]
    return out


def _mean_over_draws(draws: list[dict], samples: list[dict[str, np.ndarray]] | None = None) -> dict:
    """Combine the draws of ``--data-seeds``: means (geometric for ``pr_auc_ratio*`` keys, so one draw's 10x
    cannot hide another's 0.5x), ``<key>_per_draw`` lists for :data:`PER_DRAW_KEYS` and every root-cause prior
    variant the draws hold, the worst draw's ratio, and
    per cause group the means over the draws it occurs in; with each draw's bootstrap ``samples``, the intervals
    of those means (draws are independent: their b-th resamples are combined)."""
    # the root-cause keys of every prior variant the run compared (its flags name more than the defaults)
    # (``--rootcause-absolute`` adds an ``_absolute`` twin of each, the late and full ones included)
    variants = sorted({k for d in draws for k in d
                       if k.startswith(("rootcause_top3_", "rootcause_top1_all_", "rootcause_late_", "rootcause_full_"))
                       and k not in PER_DRAW_KEYS and not k.endswith(("_n", "_per_seed"))})
    out = {"data_seeds": [d["seeds"][0] for d in draws],
           **_combine(draws, (*PER_DRAW_KEYS, *variants), "per_draw", geometric_ratios=True, keep_other=False,
                       total_counts=True)}
    ratios = [r for r in out["pr_auc_ratio_per_draw"] if r is not None]
    out["pr_auc_ratio_min_draw"] = min(ratios) if ratios else None
    if samples:
        from infrabrain.models.uncertainty import combine_draws

        out.update(_intervals(combine_draws(samples)))
    return out


def _mean_over_seeds(per_seed: list[dict], seeds: list[int]) -> dict:
    """Mean of every numeric key over seeds (NaN-aware; None if no seed has a value), ``<key>_per_seed`` lists
    for :data:`PER_SEED_KEYS`, per-cause numbers averaged the same way."""
    return {"seeds": seeds, **_combine(per_seed, PER_SEED_KEYS, "per_seed", geometric_ratios=False, keep_other=True)}


def _one_seed(runs: list, args: argparse.Namespace, seed: int, report_dir: str | None,
              fleet_extra: Sequence[Any] = ()) -> tuple[dict, tuple]:
    """One training seed: its results, and for the draw's bootstrap the GNN's and the non-graph models' score
    tables, the held-out racks and the failures."""
    from infrabrain.models.pipeline import NONGRAPH_MODELS, evaluate_predictor, train_predictor

    trained = train_predictor(runs, _pipeline_config(args, seed))
    releases: dict[str, Any] = {}
    priors = fleet_prior_variants(trained.splits.train, args.fleet_prior_epsilons, args.fleet_prior_clip_norms, seed,
                                  fleet_extra, releases, args.fleet_prior_min_honest)
    late_from = None
    test = trained.splits.test_sites if trained.splits.test_sites is not None else trained.splits.test_time
    published = published_prior_variants(test, trained.root_prior, releases.get("fleet_dp_eps1_c4"),
                                         args.published_prior_failures, args.published_prior_misspec, seed)
    priors |= published
    priors["labels"] = trained.root_prior  # the pooled training labels alone: the card's prior until follow-up 29
    if args.local_prior_fraction:
        first = f"published_f{args.published_prior_failures[0]}" if args.published_prior_failures else None
        late_from, local = local_prior_variants(test, trained.root_prior, releases.get("fleet_dp_eps1_c4"),
                                                args.local_prior_fraction, releases.get("fleet_plus_dp_eps1_c4"),
                                                published.get(first) if first else None)
        priors |= {f"late.{k}": v for k, v in local.items()}
    rep = evaluate_predictor(trained, report_dir, rootcause_events=args.rootcause_events,
                             oracle=not args.no_oracle, bootstrap=0, keep_tables=True,
                             compare_priors=priors, late_from=late_from,
                             rootcause_absolute=args.rootcause_absolute)
    score_tables = rep.pop("score_tables")
    g = rep["models"]["gnn"]
    print("held-out sites:", ", ".join(rep["sites"]), file=sys.stderr)
    nan = float("nan")
    print(f"epochs (validation site PR-AUC / mean per cause group; {args.selection}):",
          ", ".join(f"{h['epoch']}: {h.get('val_pr_auc', nan):.3f} / {h.get('val_pr_auc_causes', nan):.3f}"
                    for h in rep["train"]["history"]),
          f"-> best epoch {rep['train']['best_epoch']}", file=sys.stderr)
    print(f"{'model':10s} {'PR-AUC':>7s} {'ROC-AUC':>7s} {'PR-AUC casc':>11s} {'rec@p50':>7s} {'rec@p50 hw':>10s} "
          f"{'rec@p80':>7s} {'lead med':>8s}", file=sys.stderr)
    for name, m in rep["models"].items():
        print(f"{name:10s} {m['pr_auc']:7.3f} {m['roc_auc']:7.3f} {m['pr_auc_cascade']:11.3f} "
              f"{m['event_recall_at_p50']:7.2f} {m['event_recall_at_p50_precursor']:10.2f} "
              f"{m['event_recall_at_p80']:7.2f} {m['median_lead_min']:8.1f}", file=sys.stderr)
    print(f"GNN / best non-graph ({rep['best_baseline']}) PR-AUC ratio: {rep['pr_auc_ratio']:.2f}; cascades "
          f"({rep['best_baseline_cascade']}): {rep['pr_auc_ratio_cascade']:.2f}", file=sys.stderr)
    print("by cause group (GNN):", json.dumps(g["by_cause_group"]), file=sys.stderr)
    print(f"node-rooted failures (root: the node or its GPUs): GNN {g['pr_auc_node_rooted']:.3f}, ratio "
          f"{rep['pr_auc_ratio_node_rooted']:.2f}; upstream-rooted (switch, PDU, cooling): GNN "
          f"{g['pr_auc_upstream']:.3f}, ratio {rep['pr_auc_ratio_upstream']:.2f}", file=sys.stderr)
    e = rep["models"].get("ensemble", {})
    ece_raw = g.get("ece_uncalibrated")
    print(f"calibration (Platt on the validation split): GNN ECE {g['calibration']['ece']:.3f}"
          + (f" (uncalibrated {ece_raw:.3f})" if ece_raw is not None else "")
          + (f"; ensemble ECE {e['calibration']['ece']:.3f}" if e else ""), file=sys.stderr)
    op = g.get("at_val_threshold")
    if op:
        print(f"GNN at the threshold chosen on the validation site ({op['threshold']:.3f}): precision "
              f"{op['precision']:.2f}, recall on precursor failures {op['recall_precursor']:.2f} (all "
              f"{op['recall']:.2f}), median lead {op['median_lead_min']:.1f} min", file=sys.stderr)
    ru = rep["models"]["rules"]["by_cause_group"]
    fb = rep["models"].get(RULE_FALLBACK_MODEL, {}).get("by_cause_group", {})
    trained_on = (rep.get("cause_coverage") or {}).get("failures", {})
    per_cause = {}
    for grp, v in g["by_cause_group"].items():
        r = ru.get(grp, {})
        per_cause[grp] = {"events": v["events"], "gnn_recall": v["recall_at_p50_threshold"],
                          "rules_recall": r.get("recall_at_p50_threshold"), "gnn_pr_auc": v["pr_auc"],
                          "gnn_typed_pr_auc": v.get("pr_auc_typed"), "rules_pr_auc": r.get("pr_auc"),
                          "train_failures": trained_on.get(grp), "gnn_rules_pr_auc": fb.get(grp, {}).get("pr_auc")}
    print(f"{'cause':10s} {'events':>6s} {'rec GNN':>7s} {'rec rules':>9s} {'PR-AUC GNN':>10s} {'typed':>6s} "
          f"{'PR-AUC rules':>12s} {'gnn+rules':>9s} {'trained on':>10s}", file=sys.stderr)
    for grp, v in per_cause.items():
        print(f"{grp:10s} {v['events']:6d} {v['gnn_recall']:7.2f} {_f(v['rules_recall']):>9s} {v['gnn_pr_auc']:10.3f} "
              f"{_f(v['gnn_typed_pr_auc'], 3):>6s} {_f(v['rules_pr_auc'], 3):>12s} "
              f"{_f(v['gnn_rules_pr_auc'], 3):>9s} {_f(v['train_failures'], 0):>10s}", file=sys.stderr)
    if rep.get("untrained_causes"):
        print(f"untrained cause groups (fewer than {MIN_TRAINED_FAILURES} training failures): "
              f"{', '.join(rep['untrained_causes'])}", file=sys.stderr)
    oracle = rep.get("oracle", {})
    for kind, m in oracle.items():
        print(f"oracle ({kind}): PR-AUC {m['pr_auc']:.3f}, recall@p50 on precursor failures "
              f"{m['event_recall_at_p50_precursor']:.2f} (all {m['event_recall_at_p50']:.2f}), median lead "
              f"{m['median_lead_min']:.1f} min", file=sys.stderr)
    print("root cause:", json.dumps(rep["rootcause"]), file=sys.stderr)
    for s in rep["explanations"][:3]:
        print("  ", s, file=sys.stderr)
    caught = {**{name: m["precursor_caught_by_cause"] for name, m in rep["models"].items()},
              **{f"oracle_{kind}": m["precursor_caught_by_cause"] for kind, m in oracle.items()}}
    print_caught(caught)
    rc = rep["rootcause"]
    compared = {f"rootcause_{metric}_{name}": v.get(key) for name, v in rc.get("compare", {}).items()
                for metric, key in (("top3", "cascade_top3"), ("top3_all", "top3"), ("top1_all", "top1"),
                                    ("top3_precursor", "cascade_precursor_top3"),
                                    ("top3_alerted", "cascade_alerted_top3")) if not name.startswith("late.")}
    for name, v in rc.get("compare", {}).items():  # a fleet prior alone over every failure: a new site's view
        if name.startswith("late.") and "local" not in name:
            compared |= {f"rootcause_full_{metric}_{name[5:]}": v.get(key)
                         for metric, key in (("top3", "cascade_top3"), ("top3_all", "top3"), ("top1_all", "top1"))}
    for name, v in rc.get("compare_late", {}).items():
        if name.startswith("late."):
            compared |= {f"rootcause_late_{metric}_{name[5:]}": v.get(key)
                         for metric, key in (("top3", "cascade_top3"), ("top3_all", "top3"), ("top1_all", "top1"),
                                             ("n", "cascade_n"), ("n_all", "n"))}
    held_out = ((score_tables["gnn"], {n: score_tables[n] for n in NONGRAPH_MODELS if n in score_tables}),
                rep.pop("resample_clusters"), rep.pop("events"))
    return {
        "pr_auc_gnn": rep["pr_auc_gnn"],
        "pr_auc_best_baseline": rep["pr_auc_best_baseline"],
        "best_baseline": rep["best_baseline"],
        "pr_auc_ratio": rep["pr_auc_ratio"],
        "pr_auc_ratio_cascade": rep["pr_auc_ratio_cascade"],
        "pr_auc_gnn_node_rooted": g["pr_auc_node_rooted"],
        "pr_auc_ratio_node_rooted": rep["pr_auc_ratio_node_rooted"],
        "pr_auc_gnn_upstream": g["pr_auc_upstream"],
        "pr_auc_ratio_upstream": rep["pr_auc_ratio_upstream"],
        "event_recall_at_p50": g["event_recall_at_p50_precursor"],
        "event_recall_at_p50_all": g["event_recall_at_p50"],
        "event_recall_at_p80": g["event_recall_at_p80_precursor"],
        "median_lead_min": g["median_lead_min"],
        "rootcause_top1": rc.get("top1"),
        "rootcause_top1_cascade": rc.get("cascade_top1"),
        "rootcause_top3": rc.get("cascade_top3"),
        "rootcause_top3_all": rc.get("top3"),
        "rootcause_cascades_n": rc.get("cascade_n"),
        "rootcause_top3_precursor": rc.get("cascade_precursor_top3"),
        "rootcause_cascades_precursor_n": rc.get("cascade_precursor_n"),
        "rootcause_top3_alerted": rc.get("cascade_alerted_top3"),
        "rootcause_cascades_alerted_n": rc.get("cascade_alerted_n"),
        "rootcause_parted_n": rc.get("parted_n"),  # failures whose sentence names a part (follow-up 43)
        "rootcause_top1_parted": rc.get("parted_top1"),
        "rootcause_top1_parted_without_part": rc.get("without_part", {}).get("parted_top1"),
        **compared,
        **{f"rootcause_{metric}_{without}": rc.get(without, {}).get(key)
           for without in WITHOUT
           for metric, key in (("top1", "top1"), ("top1_cascade", "cascade_top1"), ("top3", "cascade_top3"),
                               ("top3_all", "top3"))},
        "heldout_events": g["events"],
        "epochs_run": rep["train"]["epochs_run"],
        "train_s": rep["train"]["train_s"],
        "rules_recall_at_p50": rep["models"]["rules"]["event_recall_at_p50_precursor"],
        "ece_gnn": g.get("calibration", {}).get("ece"),
        "ece_gnn_uncalibrated": g.get("ece_uncalibrated"),
        "pr_auc_ensemble": e.get("pr_auc"),
        "pr_auc_ratio_ensemble": rep.get("pr_auc_ratio_ensemble"),
        "ensemble_recall_at_p50": e.get("event_recall_at_p50_precursor"),
        "ensemble_median_lead_min": e.get("median_lead_min"),
        "ece_ensemble": e.get("calibration", {}).get("ece"),
        "best_epoch": rep["train"]["best_epoch"],
        **{f"val_threshold_{k}": v for k, v in g.get("at_val_threshold", {}).items()},
        "pr_auc_logistic": rep["models"].get("logistic", {}).get("pr_auc"),
        "by_cause_vs_rules": per_cause,
        "cause_head_accuracy": g.get("cause_head", {}).get("accuracy"),
        "cause_head_balanced_accuracy": g.get("cause_head", {}).get("balanced_accuracy"),
        **{f"cause_head_{m}_{grp}": v for m in ("recall", "precision")
           for grp, v in g.get("cause_head", {}).get(m, {}).items()},
        "precursor_caught": caught,
        **{f"explanation_{key}{suffix}": rep.get("precursor_naming", {}).get(rule, {}).get(key)
           for rule, suffix in (("deployed", ""), ("before_follow_up_40", "_before_follow_up_40"))
           for key in ("root_quoted", "precursor_named")},
        **{f"explanation_{key}": rep.get("precursor_naming", {}).get("deployed", {}).get(key)
           for key in ("failures", "root_clause", "root_clause_right", "group_named", "group_right", "other_named",
                       "part_named", "part_right", "group_named_by_head", "group_right_by_head")},
        **{f"oracle_{kind}_{key}": m[src] for kind, m in oracle.items()
           for key, src in (("pr_auc", "pr_auc"), ("recall_at_p50", "event_recall_at_p50_precursor"),
                            ("recall_at_p50_all", "event_recall_at_p50"), ("median_lead_min", "median_lead_min"))},
    }, held_out


def _finite(obj: object) -> object:
    """NaN / inf -> None everywhere (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _timed_model(args: argparse.Namespace, n_features: int) -> torch.nn.Module:
    """The GNN the timing parts time: the one the pipeline trains under these flags, the cause head included
    (its loss term in the epoch, its probabilities in the forward pass, as ``predict`` reads them)."""
    from infrabrain.models.gnn import build_model
    from infrabrain.models.pipeline import typed_cause_groups

    return build_model(n_features, 60, pool=5, hidden=args.hidden, layers=args.layers, bin_features=args.bins,
                       input_scaling=args.scale_inputs, dropout=args.dropout, summary_features=not args.no_summary,
                       cause_groups=typed_cause_groups(_pipeline_config(args, args.seed)))


def _scores(model: torch.nn.Module, batch: dict) -> None:
    """One forward pass as ``predict`` makes it: the failure logits and, with a head, the cause probabilities,
    both copied back to the CPU."""
    from infrabrain.models.gnn import risk_and_cause_logits

    risk, causes = risk_and_cause_logits(model, batch)
    risk.cpu()
    if causes is not None:
        torch.softmax(causes, dim=-1).cpu()


def epoch_part(args: argparse.Namespace) -> dict:
    from infrabrain.models.device import resolve_device, synchronize
    from infrabrain.models.snapshots import SnapshotDataset, fit_normalizer, site_tensors
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.training import make_loader, train_epoch
    from infrabrain.simulation import SiteSpec, simulate_site

    device = resolve_device(args.device)

    spec = SiteSpec(name="epoch-512", rows=2, racks_per_row=args.epoch_gpus // 64, nodes_per_rack=4)
    hours = (args.epoch_snapshots + 70) / 60.0
    run = simulate_site(spec, hours=hours, seed=args.seed, acceleration=args.acceleration)
    fs = FeatureSet.from_run(run)
    site = site_tensors(run, fs, fit_normalizer([run], fs))
    ds = SnapshotDataset([site], window=60, stride=1, pool=5)
    ds.index = ds.index[: args.epoch_snapshots]
    model = _timed_model(args, fs.f_max).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = make_loader(ds, 16, shuffle=True)
    from itertools import islice

    from infrabrain.models.training import loss_fn

    for batch in islice(loader, 2):  # warm-up (lazy imports, allocator) outside the timed epoch
        opt.zero_grad()
        loss_fn(model, batch).backward()
    synchronize(device)
    t0 = time.perf_counter()
    train_epoch(model, loader, opt, progress=not args.no_progress, desc="timed epoch")
    synchronize(device)
    epoch_s = time.perf_counter() - t0
    print(f"one epoch over {len(ds)} snapshots of a {spec.n_gpus}-GPU site ({site.graph.n} components) on "
          f"{device}: {epoch_s:.1f} s", file=sys.stderr)
    return {"epoch_s": epoch_s, "epoch_snapshots": len(ds), "epoch_gpus": spec.n_gpus, "epoch_device": str(device)}


def inference_part(args: argparse.Namespace) -> dict:
    from infrabrain.models.device import batch_to, resolve_device
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.snapshots import collate_snapshots, fit_normalizer, snapshot_from_window
    from infrabrain.simulation import SiteSpec, simulate_site

    device = resolve_device(args.device)

    racks = max(1, -(-args.infer_gpus // 64))
    spec = SiteSpec(name="infer-10k", rows=4, racks_per_row=-(-racks // 4), nodes_per_rack=8)
    run = simulate_site(spec, hours=62 / 60, seed=args.seed, acceleration=1.0)
    fs = FeatureSet.from_run(run)
    norm = fit_normalizer([run], fs)
    model = _timed_model(args, fs.f_max).eval().to(device)
    t0 = time.perf_counter()
    item = snapshot_from_window(run.topology, run.metrics, run.metric_names, fs, norm, 60, pool=5)
    batch = collate_snapshots([item])
    prep_ms = (time.perf_counter() - t0) * 1000
    times = []
    with torch.no_grad():
        _scores(model, batch_to(batch, device))  # warm-up
        for _ in range(args.infer_repeats):
            t0 = time.perf_counter()  # the host-to-device copy and the scores' way back are timed too
            _scores(model, batch_to(batch, device))
            times.append((time.perf_counter() - t0) * 1000)
    ms = float(np.median(times))
    print(f"inference on a {spec.n_gpus}-GPU snapshot ({len(item['kind'])} components) on {device}: model "
          f"{ms:.0f} ms (median of {len(times)}), snapshot preparation {prep_ms:.0f} ms", file=sys.stderr)
    return {"infer_ms_10k_gpus": ms, "infer_prep_ms": prep_ms, "infer_gpus": spec.n_gpus,
            "infer_device": str(device)}


def _default_cause_balance() -> float:
    from infrabrain.models.pipeline import PipelineConfig

    return float(PipelineConfig.model_fields["cause_balance"].default)


def build_parser() -> argparse.ArgumentParser:
    """The bench's flags (also read by ``bench/predictor_selection.py``, which trains exactly this GNN)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=10, help="simulated sites of the federation (default %(default)s)")
    p.add_argument("--heldout", type=int, default=3,
                   help="sites held out for scoring, never trained on (default %(default)s)")
    p.add_argument("--extra-train-sites", type=int, default=0,
                   help="simulate this many more sites and train on them too; the validation and held-out sites "
                        "stay those of the --sites federation (a learning curve over training sites)")
    p.add_argument("--extra-train-cause-scale", type=parse_cause_scale, default={}, metavar="CAUSE=X[,CAUSE=X]",
                   help="fault-rate multipliers per simulator cause for the --extra-train-sites only, e.g. "
                        "thermal=5,psu=5,nic=5,gpu_sram=5,ssd=5: a rare-cause-rich prior of simulated sites")
    p.add_argument("--val-sites", type=int, default=1, help="whole sites used for early stopping (not trained on)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="GNN Adam weight decay (default %(default)s)")
    p.add_argument("--hours", type=float, default=24.0, help="hours simulated per site (default %(default)s)")
    p.add_argument("--acceleration", type=float, default=200.0,
                   help="fault-rate multiplier (1 = realistic: ~1 failure in 10 sites x 48 h, nothing to learn)")
    p.add_argument("--epochs", type=int, default=8, help="most GNN epochs (default %(default)s)")
    p.add_argument("--patience", type=int, default=3,
                   help="early stopping: epochs without a selection-score gain (default %(default)s)")
    p.add_argument("--selection", choices=sorted(SELECTIONS), default=DEFAULT_SELECTION,
                   help="validation score that picks the kept epoch (models/selection.py; default %(default)s)")
    p.add_argument("--no-levels", action="store_true", help="GNN input without the normalised levels")
    p.add_argument("--bins", action="store_true",
                   help="GNN input: every time bin as well as the window summaries (the encoder before follow-up 4)")
    p.add_argument("--no-summary", action="store_true", help="GNN input without the per-metric window summaries")
    p.add_argument("--train-until", type=float, default=1.0,
                   help="training sites train on snapshots ending before this fraction of their run (default 1: "
                        "the whole run, as validation uses whole sites; 0.6 was the default before follow-up 4)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--hidden", type=int, default=32, help="GNN hidden width (default %(default)s)")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="GNN dropout on the encoder input and the states (default %(default)s; 0 before follow-up 4)")
    p.add_argument("--layers", type=int, default=3, help="message-passing layers (default %(default)s; 0: none)")
    p.add_argument("--stride", type=int, default=10, help="minutes between training snapshots (default %(default)s)")
    p.add_argument("--window", type=int, default=60,
                   help="minutes of telemetry per snapshot, for every model (accuracy and headroom parts; default "
                        "%(default)s; a longer window also drops that much more of each run's start from the rows)")
    p.add_argument("--pool", type=int, default=5,
                   help="minutes averaged per time bin of the GNN's window (accuracy part; default %(default)s)")
    p.add_argument("--scale-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="GNN: standardise encoder inputs per kind on the training split (default on since follow-up 5)")
    p.add_argument("--scale-floor", type=float, default=0.1, help="smallest scale of --scale-inputs")
    p.add_argument("--train-on-unpredictable", action="store_true",
                   help="train the GNN and the tabular baselines on software-like failures (software, GSP) as "
                        "positives too, as before follow-up 30 (default: left out of the loss and the fit; the "
                        "evaluation counts them either way)")
    p.add_argument("--lead-weight", type=float, default=0.0,
                   help="weigh a positive training row 1 + W x its lead to the failure / 60 min (a probe, issue 3 "
                        "follow-up 45; default 0: off)")
    p.add_argument("--early-band", type=float, default=0.0, metavar="MIN",
                   help="leave out of the GNN's loss the negative rows whose failure comes within MIN minutes after "
                        "the label's hour (a probe, issue 3 follow-up 46; default 0: off)")
    p.add_argument("--cause-split", nargs="*", default=[], metavar="GROUP",
                   help="cause groups whose causes the head tells apart as classes of their own, e.g. other "
                        "(PipelineConfig.cause_split; issue 3 follow-up 42)")
    p.add_argument("--cause-balance", type=float, default=_default_cause_balance(),
                   help="how far the cause head's loss evens out the training sites' cause groups: 0 every failing "
                        "row alike, 1 every group alike (PipelineConfig.cause_balance; default %(default)s)")
    p.add_argument("--no-cause-head", action="store_true",
                   help="a GNN without the cause head (follow-up 33), in training, evaluation and the timings")
    p.add_argument("--pos-weight", type=float, default=None,
                   help="BCE weight of positive labels (default: negatives / positives of the training set, "
                        "capped at 50)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed and first training seed")
    p.add_argument("--data-seeds", type=int, default=1,
                   help="federations drawn (simulation seeds seed..seed+N-1); >1 reports the mean over draws and each "
                        "draw's value (draw d trains seeds d..d+seeds-1). Designs were chosen on draws 0-3 (24 h) and "
                        "0-1 (48 h); --seed 4 --data-seeds 4 (24 h) and --seed 2 --data-seeds 2 (48 h) are draws no "
                        "choice looked at (docs/predictor.md, follow-up 12)")
    p.add_argument("--seeds", type=int, default=3,
                   help="GNNs trained with seeds seed..seed+N-1 on the same data; the JSON gives their mean")
    p.add_argument("--rootcause-events", type=int, default=100,
                   help="held-out failures explained to score the root-cause ranking (default %(default)s; 0: skip)")
    p.add_argument("--rootcause-absolute", action="store_true",
                   help="also rank every root-cause prior's candidates on the raw GPU occlusion drops, the ranking "
                        "before follow-up 27 (rootcause_<metric>_absolute, rootcause_<metric>_<variant>_absolute)")
    p.add_argument("--fleet-prior-epsilons", type=parse_positive_floats, default=[1.0, 4.0],
                   help="also rank the same root-cause drops with the training sites' fleet root prior released "
                        "under DP at these epsilons (comma-separated; '' for none), without noise, and without a "
                        "prior (rootcause_top3_<variant> keys; default 1,4)")
    p.add_argument("--fleet-prior-clip-norms", type=parse_positive_floats, default=[1.0, 4.0],
                   help="clip norms of one hour's relation counts for the fleet prior variants (default 1,4)")
    p.add_argument("--fleet-prior-min-honest", type=parse_min_honest, default=[0],
                   help="for the fleet prior variants, how many honest sites every site counts on (comma-separated; "
                        "0, the default: the secure sum's threshold; H > 0: each adds sigma / sqrt(H), the noise a "
                        "coordinator that invents sites cannot shrink; keys end in _h<H>)")
    p.add_argument("--fleet-prior-sites", type=int, default=0,
                   help="sites beyond the federation whose labelled incidents join the fleet root prior (their "
                        "telemetry trains nothing): the fleet_plus_* variants (default 0: none)")
    p.add_argument("--fleet-prior-hours", type=float, default=0.0,
                   help="hours simulated for each --fleet-prior-sites site (default: --hours)")
    p.add_argument("--local-prior-fraction", type=float, default=0.0,
                   help="also score each held-out site's failures after this fraction of its run, ranked with its "
                        "own earlier labels as a prior, alone and merged with the training sites' pooled or DP fleet "
                        "prior (rootcause_late_<metric>_<variant>; default 0: off)")
    p.add_argument("--published-prior-failures", type=parse_positive_ints, default=[],
                   help="also rank with the published root prior laid on each held-out site's topology, weighted as "
                        "this many pseudo-failures (comma-separated): alone, merged with the pooled training labels "
                        "and with the DP fleet prior (published_f<S>, central_published_f<S>, fleet_published_f<S>; "
                        "default: none)")
    p.add_argument("--published-prior-misspec", type=parse_positive_floats, default=[],
                   help="with --published-prior-failures, also with each published cause share multiplied by a "
                        "factor drawn log-uniformly in [1/F, F] per training seed (published_f<S>_mis<F>)")
    p.add_argument("--epoch-gpus", type=int, default=512,
                   help="GPUs of the site the epoch timing trains on (default %(default)s)")
    p.add_argument("--epoch-snapshots", type=int, default=1000,
                   help="snapshots in the timed epoch (default %(default)s)")
    p.add_argument("--infer-gpus", type=int, default=10000,
                   help="GPUs of the snapshot the inference timing scores (default %(default)s)")
    p.add_argument("--infer-repeats", type=int, default=5,
                   help="timed forward passes, of which the median is reported (default %(default)s)")
    p.add_argument("--no-oracle", action="store_true", help="skip the simulator-truth oracle bounds")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="resamples of the held-out racks for the 90%% intervals of the ratio, the event recall "
                        "and the median lead, per draw and over draws (<key>_interval; 0 skips them; default "
                        "%(default)s)")
    p.add_argument("--report-dir", default=None,
                   help="also write report.json and pr_curves.png here (accuracy), headroom.png (headroom)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 sites, 24 h, 3 epochs, 200-snapshot epoch")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on 2 cores shared with other jobs one thread is faster)")
    p.add_argument("--parts", default="accuracy,epoch,inference",
                   help="comma-separated parts to run: accuracy, headroom (baselines and oracles, no GNN), epoch, "
                        "inference")
    p.add_argument("--device", default="cpu",
                   help="where the GNN trains and infers: cpu (default; the goals are for 2 CPU cores), cuda, "
                        "cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_seeds < 1 or args.seeds < 1:
        raise SystemExit(f"--data-seeds ({args.data_seeds}) and --seeds ({args.seeds}) must be at least 1")
    if args.extra_train_sites < 0 or args.fleet_prior_sites < 0:
        raise SystemExit(f"--extra-train-sites ({args.extra_train_sites}) and --fleet-prior-sites "
                         f"({args.fleet_prior_sites}) must be 0 or more")
    if not 0.0 <= args.local_prior_fraction < 1.0:
        raise SystemExit(f"--local-prior-fraction ({args.local_prior_fraction}) must be in [0, 1)")
    if any(f < 1 for f in args.published_prior_misspec):
        raise SystemExit(f"--published-prior-misspec factors must be 1 or more, got {args.published_prior_misspec}")
    if args.extra_train_cause_scale and not args.extra_train_sites:
        raise SystemExit("--extra-train-cause-scale scales the extra training sites: give --extra-train-sites too")
    if args.quick:
        args.sites, args.heldout, args.hours, args.epochs, args.epoch_snapshots, args.seeds = 4, 1, 24.0, 3, 200, 1
        args.rootcause_events = 30
    torch.set_num_threads(args.threads)
    from infrabrain.logs import configure_logging

    configure_logging("warning")
    out: dict = {}
    parts = set(args.parts.split(","))
    unknown = parts - {"accuracy", "headroom", "epoch", "inference"}
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {sorted(unknown)}")
    for name, fn in (("accuracy", accuracy_part), ("headroom", headroom_part), ("epoch", epoch_part),
                     ("inference", inference_part)):
        if name in parts:
            out.update(fn(args))
    out["peak_rss_gib"] = _peak_rss_gib()
    out["config"] = {"sites": args.sites, "extra_train_sites": args.extra_train_sites,
                     "extra_train_cause_scale": args.extra_train_cause_scale,
                     "train_sites": args.sites - args.heldout - args.val_sites + args.extra_train_sites,
                     "heldout": args.heldout, "hours": args.hours,
                     "acceleration": args.acceleration, "epochs": args.epochs, "hidden": args.hidden,
                     "layers": args.layers, "threads": args.threads, "seed": args.seed, "seeds": args.seeds,
                     "data_seeds": args.data_seeds,
                     "val_sites": args.val_sites, "selection": args.selection,
                     "weight_decay": args.weight_decay, "lr": args.lr, "levels": not args.no_levels,
                     "summary_features": not args.no_summary, "bin_features": args.bins, "dropout": args.dropout,
                     "train_until": args.train_until, "pos_weight": args.pos_weight,
                     "train_on_unpredictable": args.train_on_unpredictable, "cause_balance": args.cause_balance,
                     "cause_head": not args.no_cause_head, "lead_weight": args.lead_weight,
                     "early_band_min": args.early_band, "stride_min": args.stride,
                     "window_min": args.window,
                     "pool_min": args.pool,
                     "scale_inputs": args.scale_inputs,
                     "scale_floor": args.scale_floor,
                     "device": args.device, "bootstrap": args.bootstrap}
    for k, g in GOALS.items():
        if k not in out:
            continue
        v = out.get(k)
        seeds, by = out.get(f"{k}_per_draw"), "draw"
        if seeds is None:
            seeds, by = out.get(f"{k}_per_seed"), "seed"
        each = ""
        if seeds and len(seeds) > 1:
            each = f"  (per {by}: {', '.join('-' if x is None else f'{x:.3g}' for x in seeds)})"
        print(f"{k:24s} {v if v is None else round(v, 3)!s:>8s}  goal >= {g}{each}", file=sys.stderr)
        iv = out.get(f"{k}_interval")
        if iv and iv.get("low") is not None:
            print(f"{'':24s} {iv['level']:.0%} interval [{iv['low']:.3g}, {iv['high']:.3g}] over resampled held-out "
                  f"racks; share of resamples >= {g}: {iv['p_ge_goal']:.2f}", file=sys.stderr)
    for k, g in (("infer_ms_10k_gpus", 200), ("epoch_s", 30), ("peak_rss_gib", 4)):
        if k in out:
            print(f"{k:24s} {out[k]:8.2f}  goal <= {g}", file=sys.stderr)
    print(json.dumps(_finite(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
