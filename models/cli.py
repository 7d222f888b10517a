"""``infrabrain train``, ``infrabrain evaluate`` and ``infrabrain predict``: the failure predictor's commands.

Data comes from a dataset written by ``infrabrain simulate --out DIR`` (``--data DIR``; one ``site=<name>``
directory works too) or is simulated in memory (``--simulate N --hours H --acceleration A``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infrabrain.models.selection import DEFAULT_SELECTION, SELECTIONS

EXAMPLES = """examples:
  infrabrain simulate --sites 6 --hours 48 --acceleration 100 --out data/fed
  infrabrain train --data data/fed --heldout 2 --out ckpt/gnn
  infrabrain evaluate --checkpoint ckpt/gnn --data data/fed --out reports/gnn
  infrabrain predict --checkpoint ckpt/gnn --data data/fed/site=site-5 --at 86400 --top 5 --plot alerts/
"""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one of)")
    g.add_argument("--data", type=Path, help="dataset dir from `infrabrain simulate --out` (or one site=<name> dir)")
    g.add_argument("--simulate", type=int, metavar="N", help="simulate N federation sites in memory instead")
    g.add_argument("--hours", type=float, default=48.0, help="hours per simulated site (default 48)")
    g.add_argument("--acceleration", type=float, default=100.0,
                   help="fault-rate multiplier for --simulate (default 100; 1 = realistic, too few failures to learn)")
    g.add_argument("--seed", type=int, default=0, help="simulation and training seed (default 0)")


def load_runs(args: argparse.Namespace) -> list[Any]:
    """SiteRuns from ``--data`` (dataset or site directory) or ``--simulate``."""
    if (args.data is None) == (args.simulate is None):
        raise ValueError("give exactly one of --data DIR or --simulate N")
    if args.simulate is not None:
        from infrabrain.simulation import simulate_federation

        if args.simulate < 1:
            raise ValueError(f"--simulate must be at least 1 site, got {args.simulate}")
        return simulate_federation(args.simulate, hours=args.hours, seed=args.seed, acceleration=args.acceleration,
                                   progress=True)
    from infrabrain.simulation.storage import load_dataset, load_site

    d = Path(args.data)
    if not d.exists():
        raise FileNotFoundError(f"--data {str(d)!r} does not exist")
    if (d / "manifest.json").is_file():
        return load_dataset(d)
    if (d / "site.json").is_file():
        return [load_site(d)]
    raise ValueError(f"--data {str(d)!r} is neither a simulator dataset (manifest.json) nor a site directory (site.json)")


def _heldout(value: str | None) -> int | list[str] | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    names = [v for v in value.split(",") if v]
    if not names:
        raise ValueError(f"--heldout must be a count or comma-separated site names, got {value!r}")
    return names


def _train(args: argparse.Namespace) -> int:
    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.device import resolve_device
    from infrabrain.models.cause_coverage import CARD_KEY as CAUSE_COVERAGE_KEY
    from infrabrain.models.cause_naming import CARD_KEY as CAUSE_NAMING_KEY
    from infrabrain.models.pipeline import PipelineConfig, root_prior_card, train_predictor, training_fractions
    from infrabrain.models.training import evaluate_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"checkpoint {str(out)!r} exists (pass --overwrite to replace it)")
    resolve_device(args.device)  # a GPU that is not there fails now, not after the data is loaded
    runs = load_runs(args)
    held = _heldout(args.heldout)
    cfg = PipelineConfig(
        heldout=held if held is not None else (1 if len(runs) > 2 else 0), window_min=args.window_min,
        stride_min=args.stride_min, hidden=args.hidden, layers=args.layers, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, patience=args.patience, selection=args.selection, seed=args.seed,
        progress=not args.no_progress, bin_features=args.bins, val_sites=args.val_sites,
        input_scaling=not args.no_scale_inputs, device=args.device,
        train_on_unpredictable=args.train_on_unpredictable, cause_head=not args.no_cause_head,
        **({"cause_balance": args.cause_balance} if args.cause_balance is not None else {}),
        **({"published_prior_failures": args.published_prior_failures}
           if args.published_prior_failures is not None else {}),
        # validating on whole sites leaves the training sites' later time unused: train on all of it
        **({"fractions": training_fractions(1.0)} if args.val_sites else {}),
    )
    trained = train_predictor(runs, cfg)
    sp = trained.splits
    metrics: dict[str, Any] = {"val": trained.result.best_val}
    test = sp.test_sites if sp.test_sites is not None else sp.test_time
    if test is not None and len(test):
        metrics["test" if sp.test_sites is None else "heldout_sites"] = evaluate_model(trained.model, test)
    extra = {"pipeline": cfg.model_dump(), "train_sites": [s.name for s in sp.train_sites],
             "heldout_sites": [s.name for s in sp.heldout_sites], "history": trained.result.history,
             "best_epoch": trained.result.best_epoch, "stopped_early": trained.result.stopped_early,
             "calibration": trained.calibration.model_dump() if trained.calibration is not None else None,
             "alert_threshold": trained.val_threshold, **root_prior_card(trained),
             CAUSE_NAMING_KEY: trained.cause_naming.model_dump() if trained.cause_naming is not None else None,
             CAUSE_COVERAGE_KEY: trained.cause_coverage.model_dump() if trained.cause_coverage is not None else None}
    save_checkpoint(out, trained.model, sp.feature_set, sp.normalizer, metrics, extra, overwrite=args.overwrite,
                    cadence_s=int(sp.train_sites[0].cadence_s))
    summary = {"checkpoint": str(out), "epochs_run": len(trained.result.history), "best_epoch": trained.result.best_epoch,
               **{f"{k}_pr_auc": v.get("pr_auc") for k, v in metrics.items()},
               # the fields the training data held no value of: the model masks them wherever they are sent
               "unlearned_metrics": sp.normalizer.unlearned_metrics(sp.feature_set)}
    print(json.dumps(summary))
    return 0


def _check_output_dir(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output directory that exists as a file (it was found only when writing)."""
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file; give a directory to write into")


def _evaluate(args: argparse.Namespace) -> int:
    from infrabrain.models.calibration import PlattCalibrator
    from infrabrain.models.cause_coverage import CauseCoverage
    from infrabrain.models.checkpoint import _jsonable, load_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.own_change_evidence import OwnChangeTails
    from infrabrain.models.pipeline import PipelineConfig, Trained, evaluate_predictor
    from infrabrain.models.published_root_prior import deployed_published_failures
    from infrabrain.models.root_prior import RootPrior
    from infrabrain.models.snapshots import make_splits
    from infrabrain.models.training import TrainResult

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (skip) or a number of resamples, got {args.bootstrap}")
    if args.rootcause_events < 0:  # had failed in pandas' sample() after the whole scoring
        raise ValueError(f"--rootcause-events must be 0 (skip) or a number of failures, got {args.rootcause_events}")
    _check_output_dir(Path(args.out), "--out")
    runs = load_runs(args)
    ckpt = load_checkpoint(args.checkpoint, expected=FeatureSet.from_run(runs[0]))
    pipe = dict(ckpt.card.get("pipeline", {}))
    held = _heldout(args.heldout)
    if held is None:
        names = {getattr(r, "name", None) for r in runs}
        card_held = [n for n in ckpt.card.get("heldout_sites", []) if n in names]
        held = card_held if card_held and len(card_held) < len(runs) else 0
    # rank root causes with the prior the card deploys (an older card: its own prior, or the mix without one)
    pipe.update(heldout=held, progress=False, published_prior_failures=deployed_published_failures(ckpt.card))
    # a card from before follow-up 30 was trained on every failure: fit its baselines the same way
    pipe.setdefault("train_on_unpredictable", True)
    cfg = PipelineConfig(**pipe)
    splits = make_splits(runs, heldout=cfg.heldout, window_min=cfg.window_min, stride_min=cfg.stride_min,
                         eval_stride_min=cfg.eval_stride_min, fractions=cfg.fractions, pool_min=cfg.pool_min,
                         feature_set=ckpt.feature_set, normalizer=ckpt.normalizer, val_sites=cfg.val_sites)
    ckpt.check_cadence(int((splits.train_sites or splits.heldout_sites)[0].cadence_s), "the data")
    if splits.window != ckpt.window:
        raise ValueError(f"data cadence gives a {splits.window}-step window, the checkpoint expects {ckpt.window}")
    trained = Trained(model=ckpt.model, splits=splits, result=TrainResult(history=ckpt.card.get("history", []),
                      best_epoch=int(ckpt.card.get("best_epoch", -1))), config=cfg, train_s=0.0,
                      calibration=PlattCalibrator.from_card(ckpt.card), val_threshold=ckpt.card.get("alert_threshold"),
                      root_prior=RootPrior.from_card(ckpt.card), own_tails=OwnChangeTails.from_card(ckpt.card),
                      cause_coverage=CauseCoverage.from_card(ckpt.card))
    report = evaluate_predictor(trained, args.out, rootcause_events=args.rootcause_events, oracle=args.oracle,
                                bootstrap=args.bootstrap)
    keys = ("split", "pr_auc_gnn", "best_baseline", "pr_auc_best_baseline", "pr_auc_ratio", "pr_auc_ratio_interval",
            "pr_auc_ratio_cascade", "pr_auc_ratio_node_rooted", "pr_auc_ratio_upstream",
            "gnn_recall_at_p50_precursor_interval", "gnn_median_lead_min_interval", "untrained_causes")
    rc = report["rootcause"]
    oracles = {f"oracle_{kind}_pr_auc": m["pr_auc"] for kind, m in report["oracle"].items()}
    print(json.dumps(_jsonable({k: report[k] for k in keys} | oracles | {
        "rootcause_top3": rc.get("top3"), "rootcause_cascade_top3": rc.get("cascade_top3"),
        "rootcause_cascade_precursor_top3": rc.get("cascade_precursor_top3"),
        "rootcause_cascade_alerted_top3": rc.get("cascade_alerted_top3"), "files": report.get("files", [])})))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.cause_coverage import CauseCoverage
    from infrabrain.models.predict import predict_run
    from infrabrain.models.rule_fallback import coverage_note

    if args.top < 1:
        raise ValueError(f"--top must be at least 1 (the nodes to print, riskiest first), got {args.top}")
    _check_output_dir(args.plot, "--plot")
    runs = load_runs(args)
    if args.site is not None:
        sel = [r for r in runs if getattr(r, "name", None) == args.site]
        if not sel:
            raise ValueError(f"--site {args.site!r} not in data (sites: {[getattr(r, 'name', '?') for r in runs]})")
        run = sel[0]
    elif len(runs) == 1:
        run = runs[0]
    else:
        raise ValueError(f"data has {len(runs)} sites; choose one with --site")
    ckpt = load_checkpoint(args.checkpoint, expected=FeatureSet.from_run(run))
    rows = predict_run(ckpt, run, at_s=args.at, explain_top=args.top, plot_dir=args.plot)
    if args.json:
        print(json.dumps(rows[: args.top]))
        return 0
    note = coverage_note(CauseCoverage.from_card(ckpt.card))
    if note:
        print(note)
    for r in rows[: args.top]:
        line = r.get("explanation") or (f"node {r['node_id']}: no data in the window" if r["risk"] is None
                                        else f"node {r['node_id']} at risk {r['risk']:.2f}")
        print(line)
    for r in rows:  # every node a fallback rule fires on, whatever its risk
        for a in r.get("rule_alerts", ()):
            print(f"rule alert ({a['group']}, which the model did not learn): node {r['node_id']}: {a['text']}")
    plots = [r["plot"] for r in rows[: args.top] if r.get("plot")]
    if plots:
        print(f"{len(plots)} explanation picture(s) in {args.plot}: {', '.join(Path(p).name for p in plots)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``predict`` to the root parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("train", help="train the next-hour failure predictor (GNN) and save a checkpoint",
                              description="Train the spatio-temporal GNN on simulated/loaded sites with early stopping; "
                              "write weights (safetensors) and a JSON model card.", epilog=EXAMPLES, formatter_class=fmt)
    _add_data_args(p)
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--heldout", default=None, help="held-out sites: a count (last N) or comma-separated names")
    p.add_argument("--epochs", type=int, default=15, help="most epochs to train (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="snapshots per batch (default %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default %(default)s)")
    p.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a selection-score gain")
    p.add_argument("--selection", choices=sorted(SELECTIONS), default=DEFAULT_SELECTION,
                   help="validation score that picks the kept epoch: "
                        + "; ".join(f"{k}: {v}" for k, v in SELECTIONS.items()) + " (default %(default)s)")
    p.add_argument("--hidden", type=int, default=32, help="width of every hidden layer (default %(default)s)")
    p.add_argument("--layers", type=int, default=3,
                   help="message-passing layers, so also how many hops an explanation looks upstream (default "
                        "%(default)s; 0: no message passing)")
    p.add_argument("--window-min", type=int, default=60, help="snapshot window in minutes (default 60)")
    p.add_argument("--stride-min", type=int, default=10, help="minutes between training snapshots")
    p.add_argument("--val-sites", type=int, default=0,
                   help="early-stop on this many whole sites (not trained on); the other training sites then train "
                        "on their whole run (default 0: validate on the later 20 %% of the training sites' time)")
    p.add_argument("--bins", action="store_true",
                   help="encoder reads every 5-minute bin as well as the window summaries (default: summaries only)")
    p.add_argument("--no-scale-inputs", action="store_true",
                   help="do not standardise the encoder inputs per component kind on the training snapshots "
                        "(default: standardise, as the tabular baseline does)")
    p.add_argument("--device", default="cpu",
                   help="where to train: cpu (default), cuda, cuda:N, or auto (the first GPU torch sees, else the "
                        "CPU); the checkpoint is written from the CPU either way")
    p.add_argument("--published-prior-failures", type=int, default=None, metavar="N",
                   help="root-cause ranking: merge the training sites' root prior with the published failure mix "
                        "laid on each scored site's topology, as N pseudo-failures (default 50, "
                        "models.published_root_prior.DEFAULT_FAILURES; 0: the training labels alone; "
                        "docs/predictor.md, follow-up 29)")
    p.add_argument("--train-on-unpredictable", action="store_true",
                   help="train on software-like failures (software, GSP firmware: no telemetry foretells them) as "
                        "positives too; by default they are left out of the loss, as of the baselines' fit, and "
                        "the evaluation still counts them (docs/predictor.md, follow-up 30)")
    p.add_argument("--no-cause-head", action="store_true",
                   help="no cause head: alerts do not name the likeliest cause group (by default a detached head "
                        "names it and the risk trains exactly as without it; docs/predictor.md, follow-up 33)")
    p.add_argument("--cause-balance", type=float, default=None, metavar="B",
                   help="how far the cause head's loss evens out the training sites' cause groups, from 0 (every "
                        "failing row alike: the head leans to the commonest group) to 1 (every group alike); "
                        "default: PipelineConfig.cause_balance, 0 (on the bench's draws evening the groups out "
                        "named no more failures right; docs/predictor.md, follow-up 35)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("evaluate", help="evaluate a checkpoint against rules, GBM, logistic, Isolation Forest",
                              description="Per-node PR/ROC-AUC, event-level recall at precision 0.5/0.8, lead times, "
                              "per-cause breakdown, calibration and root-cause accuracy; JSON report + PR-curve PNG.",
                              epilog=EXAMPLES, formatter_class=fmt)
    _add_data_args(p)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="checkpoint directory written by `infrabrain train` (or a site's daemon checkpoint)")
    p.add_argument("--out", required=True, type=Path, help="directory for report.json and pr_curves.png")
    p.add_argument("--heldout", default=None, help="held-out sites (default: the checkpoint's, else time split)")
    p.add_argument("--rootcause-events", type=int, default=150,
                   help="failures explained for root-cause accuracy (default 150; 0 skips it)")
    p.add_argument("--oracle", action="store_true",
                   help="also score the same rows with the simulator-truth oracles, up to the ceiling (simulated "
                        "data only: --simulate or a stored simulation); see docs/predictor.md")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="resamples of the evaluated racks for 90%% intervals of the GNN / best non-graph PR-AUC ratio "
                        "and of the GNN's event recall and median lead (*_interval; 0 skips them; default "
                        "%(default)s)")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("predict", help="score a site's latest telemetry window and explain the top risks",
                              description="Per-node next-hour failure risk from the window ending at --at, with "
                              "explanations (occlusion over graph neighbours).", epilog=EXAMPLES, formatter_class=fmt)
    _add_data_args(p)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="checkpoint directory written by `infrabrain train` (or a site's daemon checkpoint)")
    p.add_argument("--site", default=None, help="site name when the data holds several")
    p.add_argument("--at", type=int, default=None, help="end of the window in seconds since run start (default: end)")
    p.add_argument("--top", type=int, default=10, help="nodes to print and explain, riskiest first (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of sentences")
    p.add_argument("--plot", type=Path, default=None, metavar="DIR",
                   help="also draw each explained node's explanation as a PNG in DIR: the metrics its sentence "
                        "quotes over the window, in the sentence's units, and why its likeliest roots rank where "
                        "they do (JSON: each row's 'plot')")
    p.set_defaults(handler=_predict)


if __name__ == "__main__":  # pragma: no cover
    from infrabrain.cli import main

    sys.exit(main())
