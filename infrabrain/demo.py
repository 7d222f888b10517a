"""``infrabrain demo``: the main job end to end on an embedded default.

1. simulate a small federation of differing sites (calibrated faults, accelerated so that a short run holds
   failures) and print what happened;
2. train the failure predictor briefly on those sites and print the top at-risk nodes with explanations;
3. federate a few rounds on Flower's simulation engine: the sites first release the fleet's root prior under DP
   (a secure sum over Flower messages), then train under DP-SGD with a persistent privacy ledger; compare the
   federated model with local-only training;
4. answer an encrypted benchmark query: one site asks how its failure rate compares with the fleet, under its
   own CKKS key, through a real gRPC server on loopback.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on an embedded default (simulate, train, federate with DP, encrypted query)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sites", type=int, default=4, help="simulated sites in the federation (default 4)")
    p.add_argument("--hours", type=float, default=48.0, help="simulated hours per site (default 48)")
    p.add_argument("--acceleration", type=float, default=100.0,
                   help="fault-rate acceleration so that a short run holds failures (default 100; 1 = realistic)")
    p.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="keep the work directory (ledgers, model registry, reports) here; default: a temp dir")
    p.add_argument("--skip", action="append", default=[], choices=["train", "federate", "query"],
                   help="skip a step (repeatable)")
    p.set_defaults(handler=run_demo)


def _heading(step: int, text: str) -> None:
    print(f"\n== {step}. {text}", flush=True)


def _round_line(r: dict[str, Any]) -> str:
    """One line per federated round from the ServerApp's round record."""
    train, ev = r.get("train") or {}, r.get("eval") or {}
    parts = [f"round {r['round']}: {r.get('sites_aggregated', 0)} sites aggregated"]
    if "train-loss" in train:
        parts.append(f"train loss {train['train-loss']:.3f}")
    if "pr-auc" in ev:
        parts.append(f"site-evaluated PR-AUC {ev['pr-auc']:.3f}")
    if r.get("eps_max") is not None:
        parts.append(f"max epsilon {r['eps_max']:.2f}")
    parts.append(f"{r.get('round_s', 0):.0f} s")
    return ", ".join(parts)


def _site_checkpoint_line(path: str) -> str:
    """What site 0 keeps for its daemon: the global model's checkpoint and its own calibration (or why none)."""
    card = json.loads((Path(path) / "model_card.json").read_text())
    cal, thr = card.get("calibration"), card.get("alert_threshold")
    how = (f"calibrated on its own labels, risk = sigmoid({cal['a']:.2f} * logit {cal['b']:+.2f}), alert threshold "
           + ("0.5 (the default: none reached precision 0.5 on its held-out split)" if thr is None else f"{thr:.2f}")
           ) if cal else card["calibration_note"]
    return f"site 0's daemon checkpoint of the round-{card['source']['round']} global model: {path}: {how}"


def _site_alert_line(alert: dict[str, Any]) -> str:
    """Site 0's daemon on its riskiest held-out window, with the federated model's cause and root ranking."""
    truth = "it failed within the hour" if alert["failed"] else "it did not fail within the hour"
    roots = ", ".join(alert["root_causes"]) or "none"
    drawn = f"; drawn in {alert['plot']}" if alert.get("plot") else ""
    return (f"site 0's daemon on its riskiest held-out window ({alert['t'] / 3600:.1f} h): {alert['explanation']}; "
            f"likeliest roots {roots} ({truth}){drawn}")


def _fleet_prior_line(prior: dict[str, Any] | None, sites: int) -> str:
    """The fleet root prior released before the rounds (or why there is none)."""
    if prior is None:
        return (f"fleet root prior: not released ({sites} federated site(s); a release needs 3): each site ranks "
                "root causes with its own labelled failures plus the published failure mix on its topology")
    sigma = prior["noise_multiplier"] * prior["clip_norm"]
    clear = sorted(((r, c) for r, c in prior["counts"].items() if c > 2 * sigma), key=lambda kv: -kv[1])
    signal = (f"{len(clear)} relation(s) above twice the noise ({', '.join(f'{r} {c:.0f}' for r, c in clear)})"
              if clear else "no relation above twice the noise: at this size it is a weak prior")
    return (f"fleet root prior released before round 1 under DP (epsilon {prior['epsilon']:.2f} per hour of a site's "
            f"failure history, {prior['n_sites']} sites, secure sum, noise std {sigma:.1f} per count; {signal}): "
            "every site's checkpoint ranks root causes with its own counts, the fleet's read against the published "
            "failure mix on its topology, and that mix")


def run_demo(args: argparse.Namespace) -> int:
    """Run the four steps and print their results; returns 0 on success."""
    if args.sites < 2:
        raise ValueError(f"--sites must be at least 2 (one is held out for evaluation), got {args.sites}")
    if args.hours <= 1:
        raise ValueError(f"--hours must exceed the 1-hour prediction horizon, got {args.hours}")
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="infrabrain-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results: dict[str, Any] = {"work_dir": str(work)}

    from infrabrain.simulation import simulate_federation
    from infrabrain.simulation.summary import format_summary, summarize

    _heading(1, f"Simulating {args.sites} sites for {args.hours:g} h (acceleration x{args.acceleration:g})")
    runs = simulate_federation(args.sites, hours=args.hours, seed=args.seed, acceleration=args.acceleration,
                               progress=True)
    summary = summarize(runs)
    print(format_summary(summary))
    results["simulation"] = summary

    if "train" not in args.skip:
        from infrabrain.models.pipeline import demo_train_and_explain

        _heading(2, "Training the failure predictor (last site held out) and explaining the top alerts")
        alerts = demo_train_and_explain(runs, top_n=5, epochs=3, progress=True)
        for s in ([alerts.note] if alerts.note else []) + alerts.sentences:
            print(f"  {s}")
        results["alerts"] = alerts.sentences
        results["model_note"] = alerts.note

    if "federate" not in args.skip:
        from infrabrain.coordinator.comparison import federated_demo
        from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig

        _heading(3, f"Federating {args.rounds} rounds on Flower's simulation engine, DP-SGD at every site")

        def show_round(r: dict[str, Any]) -> None:
            print("  " + _round_line(r), flush=True)

        fed = federated_demo(sites=args.sites - 1, rounds=args.rounds, heldout=1, work_dir=work / "federation",
                             on_round=show_round, fleet_prior=args.sites - 1 >= FleetRootPriorConfig().min_sites)
        print("  " + _fleet_prior_line(fed["fleet_prior"], args.sites - 1))
        fed_pr = fed["federated"].get("pr_auc", float("nan"))
        eps_max = fed["eps_max"]
        eps_text = "n/a" if eps_max is None else f"{eps_max:.2f}"
        start_pr = fed["start"].get("pr_auc", float("nan"))
        print(f"  held-out site: federated DP model PR-AUC {fed_pr:.3f} vs local-only mean "
              f"{fed['local_only_mean_pr_auc']:.3f}, both from the public pretrained start ({start_pr:.3f}); "
              f"largest epsilon spent by a site: {eps_text}")
        print("  " + _site_checkpoint_line(fed["site_checkpoint"]))
        print("  " + _site_alert_line(fed["site_top_alert"]))
        results["federation"] = {k: fed[k] for k in ("federated", "start", "local_only", "local_only_mean_pr_auc",
                                                     "eps_max", "registry_dir", "site_checkpoint",
                                                     "site_top_alert", "fleet_prior")}

    if "query" not in args.skip:
        from infrabrain.coordinator.query_demo import run_demo as run_query_demo

        _heading(4, "Encrypted benchmark query (CKKS): site 0 asks how its GPU failure rate compares")
        answer = run_query_demo("gpu_failure_rate", n_sites=max(24, args.sites), seed=args.seed)
        for s in answer.sentences:
            print(f"  {s}")
        print(f"  (fleet reference: {answer.n_sites} sites, epsilon {answer.epsilon:.2f}; "
              "the coordinator never decrypted anything)")
        results["query"] = answer.answers

    results["wall_s"] = round(time.monotonic() - t0, 1)
    (work / "demo.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nDone in {results['wall_s']} s. Report: {work / 'demo.json'}")
    return 0
