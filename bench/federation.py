"""Benchmark: federated DP training vs. centralised non-private vs. each site alone, on held-out sites.

    .venv/bin/python bench/federation.py                       # 10 sites x 512 GPUs, the issue's setting
    .venv/bin/python bench/federation.py --quick               # 4 sites x 32 GPUs, a few minutes
    .venv/bin/python bench/federation.py --scale-sites 100     # also: 100 sites, 10 sampled per round

Runs the real ServerApp/ClientApp on Flower's simulation engine (Ray, one CPU per site): every site simulates
its own telemetry, trains the failure predictor with DP-SGD under its persistent privacy ledger, and evaluates
locally. Then scores, on sites that never took part: the final federated model, a non-private model trained on
all training sites' pooled data (what federation avoids; the best of three recipes), and each training site's
model trained alone with the same DP budget from the same starting point (the coordinator's model pretrained
on public simulated sites; also from a random start, for context). Prints ratios, then as its LAST line one JSON object with ``sites``, ``rounds``,
``pr_auc_federated_dp``, ``pr_auc_centralized``, ``pr_auc_local_mean``, ``eps_max``, ``round_s`` (median).
Goals (issue 5): federated DP >= 0.9 x centralised and >= 1.2 x local mean; round_s <= 60 (10 x 512 GPUs, 2 cores).
Also how right each model's explanations are on the held-out sites
(``coordinator.comparison.heldout_explanations``; issue 3 follow-up 38): ``cause_head_accuracy_<model>`` and
``rootcause_<top1|top3>[_cascade]_<model>[_without_cause_head|_without_part]`` for the federated, start and
centralised models, and the whole reports under ``explanations``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=10,
                   help="simulated sites, held-out ones included (default %(default)s)")
    p.add_argument("--heldout", type=int, default=3, help="sites used only for scoring")
    p.add_argument("--rounds", type=int, default=3, help="federated rounds (default %(default)s)")
    p.add_argument("--site-gpus", type=int, default=512, help="GPUs per simulated site (default %(default)s)")
    p.add_argument("--site-hours", type=float, default=168.0, help="hours simulated per site (default %(default)s)")
    p.add_argument("--eps-budget", type=float, default=8.0, help="each site's total epsilon (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="sites' DP-SGD learning rate (default %(default)s)")
    p.add_argument("--optimizer", default="sgd", choices=["adam", "sgd"], help="sites' optimizer (default %(default)s)")
    p.add_argument("--local-epochs", type=int, default=1, help="epochs per site per round (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="expected Poisson batch size (default %(default)s)")
    p.add_argument("--noise-multiplier", type=float, default=0.0, help="0: calibrate to the budget")
    p.add_argument("--strategy", default="fedavg",
                   help="aggregation: fedavg, fedprox, trimmed-mean, krum or bulyan (default %(default)s)")
    p.add_argument("--max-grad-norm", type=float, default=3.0, help="per-sample clipping norm at each site")
    p.add_argument("--public-sites", type=int, default=4,
                   help="public simulated sites the coordinator pretrains the starting model on (0: random start)")
    p.add_argument("--data-seed", type=int, default=0, help="which simulated federation (the sites' data draw)")
    p.add_argument("--train-on-unpredictable", action=argparse.BooleanOptionalAction, default=True,
                   help="every party trains on every failure (default); --no-train-on-unpredictable leaves the "
                        "positives of software and GSP faults out of the loss (issue 3 follow-up 31)")
    p.add_argument("--cause-head", action=argparse.BooleanOptionalAction, default=True,
                   help="every party's predictor has the cause head (default); --no-cause-head builds it without "
                        "(issue 3 follow-up 38)")
    p.add_argument("--rootcause-events", type=int, default=200,
                   help="failures explained per held-out site to score the root-cause ranking (0: skip)")
    p.add_argument("--quick", action="store_true", help="4 sites x 32 GPUs, 2 held out, 3 rounds")
    p.add_argument("--scale-sites", type=int, default=0, help="also run N tiny sites with 10 sampled per round")
    p.add_argument("--out", default=None,
                   help="work directory (site data, registry, reports), kept; default: a temp dir, removed at the end")
    args = p.parse_args(argv)
    if args.quick:
        args.sites, args.heldout, args.rounds, args.site_gpus = 4, 2, 3, 32

    from infrabrain.logs import configure_logging

    configure_logging("warning")
    if args.out:
        return _run(args, Path(args.out))
    # the sites' data and the registry take about 13 GB at 10 x 512 GPUs: a temp dir is not left behind
    with tempfile.TemporaryDirectory(prefix="infrabrain-bench-fed-", ignore_cleanup_errors=True) as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in work directory ``work`` (the parsed command line ``args``): prints and returns 0."""
    import torch

    torch.set_num_threads(1)
    from infrabrain.coordinator.comparison import (
        federation_start,
        heldout_explanations,
        heldout_sets,
        pooled_scores,
        train_centralized,
        train_local_only,
    )
    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.simulation_run import run_simulated_federation, simulation_config

    total = args.sites + args.heldout
    cfg = simulation_config(args.sites, args.rounds, None, work, site_gpus=args.site_gpus,
                            site_hours=args.site_hours, eps_budget=args.eps_budget, lr=args.lr,
                            optimizer=args.optimizer, local_epochs=args.local_epochs, batch_size=args.batch_size,
                            noise_multiplier=args.noise_multiplier, strategy=args.strategy,
                            max_grad_norm=args.max_grad_norm, public_sites=args.public_sites,
                            train_on_unpredictable=args.train_on_unpredictable, data_seed=args.data_seed,
                            cause_head=args.cause_head)
    print(f"federating {args.sites} sites x {args.site_gpus} GPUs x {args.site_hours:g} h for {args.rounds} rounds "
          f"(held out: {args.heldout}); work dir {work}"
          + ("" if args.out else " (removed at the end; --out keeps it)"), flush=True)

    def show(r: dict) -> None:
        ev = r.get("eval", {})
        print(f"  round {r['round']}: sites {r.get('sites_aggregated')} pr-auc(site-local) "
              f"{ev.get('pr-auc', float('nan')):.3f} eps_max {r.get('eps_max')} {r.get('round_s')} s", flush=True)

    t0 = time.monotonic()
    report = run_simulated_federation(cfg, args.sites, work, on_round=show)
    fed_wall = time.monotonic() - t0
    final = ModelRegistry(cfg.registry_dir).latest()
    held = heldout_sets(cfg, args.sites, args.heldout, total)
    site_cfg = cfg.site_config()
    fed = pooled_scores(final.arrays, held, site_cfg)
    print(f"federated DP: {fed}", flush=True)
    start = federation_start(cfg)
    start_scores = pooled_scores(start, held, site_cfg)
    print(f"starting point ({'public pretrained' if cfg.public_sites else 'random'}): {start_scores}", flush=True)
    # Centralised non-private reference: the better of two recipes (the goal is against the strongest).
    central_recipes = {
        "sites_recipe": dict(init=start),  # the federation's own optimizer, lr and rounds x local-epochs
        "adam_8ep_scratch": dict(epochs=8, optimizer="adam", lr=3e-3),
        "adam_3ep_from_start": dict(epochs=3, optimizer="adam", lr=1e-3, init=start),
    }
    central_all, central_weights = {}, {}
    for name, kw in central_recipes.items():
        central_weights[name] = train_centralized(cfg, range(args.sites), total, **kw)
        central_all[name] = pooled_scores(central_weights[name], held, site_cfg)
        print(f"centralised non-private ({name}): {central_all[name]}", flush=True)
    central_name = max(central_all, key=lambda k: central_all[k]["pr_auc"] if math.isfinite(central_all[k]["pr_auc"])
                       else -1.0)
    central = central_all[central_name]
    explained = {}
    if args.rootcause_events > 0:  # how right each model's explanations are on the held-out sites
        for tag, w in (("federated", final.arrays), ("start", start), ("centralized", central_weights[central_name])):
            explained[tag] = heldout_explanations(w, held, site_cfg, max_events=args.rootcause_events)
            print(f"explanations ({tag}): {_explanation_line(explained[tag])}", flush=True)

    def local_mean_from(init, tag: str) -> float:
        vals = []
        for pid in range(args.sites):
            s = pooled_scores(train_local_only(cfg, pid, total, work / f"local-{tag}", init=init), held, site_cfg)
            vals.append(s["pr_auc"])
            print(f"  site {pid} alone (DP, {tag} start): pr-auc {s['pr_auc']:.3f}", flush=True)
        ok = [x for x in vals if math.isfinite(x)]
        return statistics.mean(ok) if ok else float("nan")

    local_mean = local_mean_from(start, "same")
    local_mean_scratch = local_mean_from(None, "random") if cfg.public_sites else local_mean
    train_rounds = [r for r in report.rounds if r["round"] >= 1]
    round_s = statistics.median(r["round_s"] for r in train_rounds) if train_rounds else float("nan")
    eps = [r["eps_max"] for r in train_rounds if r.get("eps_max") is not None]

    result: dict = {
        "sites": args.sites, "rounds": args.rounds, "site_gpus": args.site_gpus, "heldout_sites": args.heldout,
        "pr_auc_federated_dp": round(fed["pr_auc"], 4), "pr_auc_centralized": round(central["pr_auc"], 4),
        "pr_auc_local_mean": round(local_mean, 4), "pr_auc_local_mean_random_start": round(local_mean_scratch, 4),
        "pr_auc_start": round(start_scores["pr_auc"], 4), "public_sites": cfg.public_sites,
        "train_on_unpredictable": cfg.train_on_unpredictable, "data_seed": cfg.data_seed,
        "pr_auc_centralized_by_recipe": {k: round(v["pr_auc"], 4) for k, v in central_all.items()},
        "eps_max": round(max(eps), 4) if eps else None,
        "eps_budget": args.eps_budget, "round_s": round(round_s, 2), "federation_wall_s": round(fed_wall, 1),
        "ratio_vs_centralized": round(fed["pr_auc"] / central["pr_auc"], 3) if central["pr_auc"] else None,
        "ratio_vs_local_mean": round(fed["pr_auc"] / local_mean, 3) if local_mean else None,
        "ratio_vs_local_mean_random_start": round(fed["pr_auc"] / local_mean_scratch, 3) if local_mean_scratch else None,
        "ratio_centralized_vs_local_mean": round(central["pr_auc"] / local_mean, 3) if local_mean else None,
        "cpus": os.cpu_count(), "cause_head": args.cause_head,
        **{k: v for tag, e in explained.items() for k, v in _explanation_keys(e, tag).items()},
        "explanations": explained,
    }
    print(f"federated/centralised = {result['ratio_vs_centralized']} (goal >= 0.9); "
          f"federated/local mean = {result['ratio_vs_local_mean']} (goal >= 1.2; sites alone from a random start: "
          f"{result['ratio_vs_local_mean_random_start']}; even centralised/local mean = "
          f"{result['ratio_centralized_vs_local_mean']}); "
          f"median round {result['round_s']} s (goal <= 60)", flush=True)

    if args.scale_sites:
        scfg = simulation_config(args.scale_sites, 2, 10, work / "scale", site_gpus=8, site_hours=48.0,
                                 noise_multiplier=1.0, batch_size=8, lr=args.lr, optimizer=args.optimizer)
        t1 = time.monotonic()
        srep = run_simulated_federation(scfg, args.scale_sites, work / "scale")
        srounds = [r for r in srep.rounds if r["round"] >= 1]
        result["scale_sites"] = args.scale_sites
        result["scale_sampled_per_round"] = 10
        result["scale_round_s"] = round(statistics.median(r["round_s"] for r in srounds), 2)
        result["scale_wall_s"] = round(time.monotonic() - t1, 1)
        result["scale_sites_aggregated"] = [r["sites_aggregated"] for r in srounds]
        print(f"scale: {args.scale_sites} sites, 10 per round: median round {result['scale_round_s']} s", flush=True)

    print(json.dumps(result))
    return 0


def _explanation_keys(e: dict, tag: str) -> dict:
    """The JSON summary's flat keys of one model's :func:`heldout_explanations`."""
    out = {}
    head = e.get("cause_head")
    if head is not None:
        out[f"cause_head_accuracy_{tag}"] = round(head["accuracy"], 4)
        out[f"cause_head_balanced_accuracy_{tag}"] = round(head["balanced_accuracy"], 4)
    for src, suffix in (("root_cause", ""), ("root_cause_without_cause_head", "_without_cause_head"),
                        ("root_cause_without_part", "_without_part")):
        for scope, name in (("", ""), ("cascade_", "_cascade")):
            for k in ("top1", "top3"):
                if src in e:
                    out[f"rootcause_{k}{name}_{tag}{suffix}"] = round(e[src][f"{scope}{k}"], 4)
    return out


def _explanation_line(e: dict) -> str:
    """One line of :func:`heldout_explanations`: the head's accuracy and the ranking's top-1 / top-3."""
    head = e.get("cause_head")
    rc = e["root_cause"]
    line = (f"root cause top-1 {rc['top1']:.3f} top-3 {rc['top3']:.3f} over {rc['n']} failures; cascades "
            f"{rc['cascade_top1']:.3f} / {rc['cascade_top3']:.3f} over {rc['cascade_n']}")
    if "root_cause_without_part" in e:
        no = e["root_cause_without_part"]
        line += f" (without the part {no['top1']:.3f} / {no['top3']:.3f})"
    if head is not None:
        no = e["root_cause_without_cause_head"]
        line += (f" (without the head {no['top1']:.3f} / {no['top3']:.3f}, cascades {no['cascade_top1']:.3f} / "
                 f"{no['cascade_top3']:.3f}); cause head right on {head['accuracy']:.3f} of {head['rows']} "
                 "failing rows")
    return line


if __name__ == "__main__":
    sys.exit(main())
