"""Benchmark: what differential privacy costs the failure predictor, and an audit that it holds.

1. Simulates ``--sites`` private sites and ``--public-sites`` public ones (``infrabrain.simulation``; the
   simulator is open source, so its output is public data). Private sites are split by time with
   NON-overlapping one-hour training windows (the privacy unit: one snapshot window); the feature normaliser is
   fitted on the public sites only, so no un-noised statistic of private data enters the pipeline.
2. Pretrains the predictor (``infrabrain.models``; the federated task's encoder: window summaries, inputs
   standardised per component kind with a centre and scale fitted on the public sites) on the public sites,
   then fine-tunes it on the private sites non-privately and with DP-SGD (``train_dp``: PRV accountant, noise
   calibrated to epsilon 1, 4 and 8 at delta = min(1e-5, 1/n)), same optimizer, expected batch size and steps;
   reports PR-AUC on the private sites' later, unseen test period. The same from a random init (``*_scratch``), and the public model alone.
   The model has the federated model's detached cause head (``--no-cause-head``: without it, as this bench
   measured before issue 3 follow-up 45); its head trains in the same per-sample clipping norm, and
   ``cause_named_right`` gives, per setting, the share of the test period's failing rows whose cause group it
   names right. ``--freeze-cause-head`` keeps the public head fixed while fine-tuning (a probe, issue 3 follow-up
   46, not adopted: docs/privacy.md).
3. Times a DP-SGD step against a non-private step of the same expected batch size (``dp_step_ratio``).
4. Runs the one-run canary audit (Steinke-Nasr-Jagielski 2023) on the trainer with DP on and off.

Prints a short table, writes ``pr_auc_vs_epsilon.png`` to ``--out``, and as its LAST line one JSON object.
Run: ``.venv/bin/python bench/privacy.py`` (4 min 8 s and 7 min 44 s measured alone on the 2-core machine;
``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _step_time(stamps: list[float]) -> float:
    """Median seconds between consecutive step callbacks (robust to a noisy shared machine)."""
    gaps = np.diff(np.asarray(stamps))
    return float(np.median(gaps)) if len(gaps) else float("nan")


def _scores(model: torch.nn.Module, dataset: Any) -> tuple[float, tuple[float, int] | None]:
    """PR-AUC on ``dataset``, and the share of its failing rows whose cause group the cause head names right with
    the number of those rows (None for a model without a head)."""
    from infrabrain.models.evaluation import cause_head_accuracy
    from infrabrain.models.training import predict_scores, summary_metrics

    df = predict_scores(model, dataset)
    named = cause_head_accuracy(df)
    return (float(summary_metrics(df["label"].to_numpy(), df["score"].to_numpy())["pr_auc"]),
            None if named is None else (float(named["accuracy"]), int(named["rows"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=6, help="simulated sites pooled for training (default 6)")
    parser.add_argument("--public-sites", type=int, default=4,
                        help="public simulated sites for pretraining (default 4)")
    parser.add_argument("--hours", type=float, default=240.0, help="simulated hours per site (default 240)")
    parser.add_argument("--acceleration", type=float, default=50.0, help="fault-rate multiplier (default 50)")
    parser.add_argument("--epochs", type=float, default=8.0, help="epochs of every fine-tuning run (default 8)")
    parser.add_argument("--pretrain-epochs", type=float, default=8.0, help="epochs of public pretraining (default 8)")
    parser.add_argument("--batch", type=int, default=64, help="expected (Poisson) batch size (default 64)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="fine-tuning optimizer (default sgd: Adam rescales the DP noise into full-size steps)")
    parser.add_argument("--lr", type=float, default=0.0075,
                        help="fine-tuning learning rate (default 0.0075; with 8 epochs the best DP model measured, "
                             "docs/privacy.md)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--clip", type=float, default=6.0,
                        help="per-sample clipping norm (default 6: above nearly all windows' gradient norms, see docs/privacy.md)")
    parser.add_argument("--hidden", type=int, default=16, help="predictor state width (default 16)")
    parser.add_argument("--bins", action=argparse.BooleanOptionalAction, default=False,
                        help="encoder input: every 5-minute bin besides the window summaries (the federated "
                             "model's encoder until issue 3 follow-up 6; default: summaries only, as federated now)")
    parser.add_argument("--scale-inputs", action=argparse.BooleanOptionalAction, default=True,
                        help="standardise encoder inputs per component kind, fitted on the PUBLIC sites only, as "
                             "the federated sites do (default on; docs/predictor.md)")
    parser.add_argument("--train-on-unpredictable", action=argparse.BooleanOptionalAction, default=True,
                        help="train on every failure, as the federated task does by default; "
                             "--no-train-on-unpredictable leaves the positives of software and GSP faults out of "
                             "the loss (issue 3 follow-up 31)")
    parser.add_argument("--cause-head", action=argparse.BooleanOptionalAction, default=True,
                        help="the detached cause head the federated model trains under DP-SGD since issue 3 "
                             "follow-up 38 (default on, as deployed; it shares each sample's clipping norm)")
    parser.add_argument("--freeze-cause-head", action="store_true",
                        help="probe: keep the public pretraining's cause head fixed while fine-tuning from it, so "
                             "the whole clipping norm goes to the failure head (default: it trains too)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="independent fine-tuning runs averaged per setting (DP noise makes one run noisy)")
    parser.add_argument("--timing-steps", type=int, default=30, help="steps timed for dp_step_ratio")
    parser.add_argument("--out", default="runs/bench-privacy", help="folder for the plot (default runs/bench-privacy)")
    parser.add_argument("--seed", type=int, default=0, help="simulation and training seed (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.public_sites, args.hours, args.epochs, args.pretrain_epochs, args.timing_steps = \
            2, 1, 72.0, 1.0, 1.0, 6
        args.repeats = 1

    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from infrabrain.client.predictor_task import INPUT_SCALE_FLOOR, SCALING_KEYS, cause_groups, task_loss
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.gnn import FailurePredictor, ModelConfig, fit_input_scaling
    from infrabrain.models.snapshots import collate_snapshots, make_splits
    from infrabrain.models.training import estimate_pos_weight, make_loader
    from infrabrain.privacy.audit import one_run_audit
    from infrabrain.privacy.audit_task import classification_loss, make_canary_task, negative_loss_scores
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.dp_training import DPConfig, train_dp
    from infrabrain.privacy.ledger import PrivacyLedger
    from infrabrain.privacy.nonprivate import train_nonprivate
    from infrabrain.simulation import SiteSpec, simulate_site

    t0 = time.perf_counter()
    runs = [simulate_site(SiteSpec(name=f"site{i}"), hours=args.hours, seed=args.seed + i,
                          acceleration=args.acceleration) for i in range(args.sites)]
    public_runs = [simulate_site(SiteSpec(name=f"public{i}"), hours=args.hours, seed=args.seed + 1000 + i,
                                 acceleration=args.acceleration) for i in range(args.public_sites)]
    # the federated task's inputs: no derived metric (measured not to help that model, issue 3 follow-up 21)
    public = make_splits(public_runs, window_min=60, stride_min=60, fractions=(0.6, 0.8),
                         feature_set=FeatureSet.from_run(public_runs[0], derived=False))
    splits = make_splits(runs, window_min=60, stride_min=60, eval_stride_min=30, fractions=(0.6, 0.8),
                         feature_set=public.feature_set, normalizer=public.normalizer)
    train, test = splits.train, splits.test_time
    n = len(train)
    print(f"{args.sites} private sites x {args.hours:g} h: {n} non-overlapping training windows, {len(test)} test "
          f"windows; {len(public.train)} public windows ({time.perf_counter() - t0:.0f} s to simulate and split)",
          file=sys.stderr)
    pos_weight = estimate_pos_weight(public.train)
    train_loss = task_loss({"train-on-unpredictable": args.train_on_unpredictable})
    scaling: dict[str, torch.Tensor] = {}

    def new_model(state: dict[str, torch.Tensor] | None = None) -> FailurePredictor:
        torch.manual_seed(args.seed)
        model = FailurePredictor(ModelConfig(window=splits.window, pool=splits.pool,
                                             n_features=splits.feature_set.f_max, hidden=args.hidden,
                                             pos_weight=pos_weight, bin_features=args.bins,
                                             input_scaling=args.scale_inputs,
                                             cause_groups=cause_groups({"cause-head": args.cause_head})))
        if state is not None:
            model.load_state_dict(state)
            if args.freeze_cause_head and args.cause_head:
                model.cause_head.requires_grad_(False)
        elif scaling:
            model.load_state_dict(scaling, strict=False)
        return model

    if args.scale_inputs:  # a statistic of public data only: no privacy cost
        scaled = new_model()
        fit_input_scaling(scaled, make_loader(public.train, 16), floor=INPUT_SCALE_FLOOR)
        scaling.update({k: v.clone() for k, v in scaled.state_dict().items() if k in SCALING_KEYS})

    batch = min(args.batch, n)
    cfg = DPConfig(optimizer=args.optimizer, lr=args.lr, momentum=args.momentum if args.optimizer == "sgd" else 0.0,
                   expected_batch_size=batch, max_physical_batch_size=batch * 2, epochs=args.epochs,
                   max_grad_norm=args.clip)
    pre_cfg = DPConfig(optimizer="adam", lr=3e-3, expected_batch_size=min(args.batch, len(public.train)),
                       epochs=args.pretrain_epochs)
    pretrained = train_nonprivate(new_model(), public.train, train_loss, collate_snapshots, config=pre_cfg,
                                  seed=args.seed).model
    public_state = {k: v.detach().clone() for k, v in pretrained.state_dict().items()}
    results: dict[str, Any] = {}
    named_by_key: dict[str, list[float]] = {}

    def score(key: str, model: torch.nn.Module) -> float:
        """The model's PR-AUC on the test period (and its cause naming, kept under ``key``)."""
        pr, named = _scores(model, test)
        if named is not None:
            named_by_key.setdefault(key, []).append(named[0])
            results["cause_named_rows"] = named[1]  # the test period's failing rows of a named group (fixed)
        return pr

    results["pr_auc_public_only"] = score("pr_auc_public_only", pretrained)
    print(f"public model alone: PR-AUC {results['pr_auc_public_only']:.4f}", file=sys.stderr)

    # ---- utility: non-private vs DP at epsilon 1, 4, 8 (same splits, optimizer, batch size, steps)
    eps_accounted_predictor: dict[str, float] = {}
    sigma_by_eps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs_by_key: dict[str, list[float]] = {}
        for init, suffix, epsilons, repeats in ((public_state, "", (1, 4, 8), args.repeats),
                                                (None, "_scratch", (4,), 1)):
            for rep in range(repeats):
                nonprivate = train_nonprivate(new_model(init), train, train_loss, collate_snapshots, config=cfg,
                                              seed=args.seed + rep)
                runs_by_key.setdefault(f"pr_auc_nonprivate{suffix}", []).append(
                    score(f"pr_auc_nonprivate{suffix}", nonprivate.model))
                print(f"non-private{suffix} #{rep}: {nonprivate.steps} steps, PR-AUC "
                      f"{runs_by_key[f'pr_auc_nonprivate{suffix}'][-1]:.4f}", file=sys.stderr)
                for eps in epsilons:
                    ledger = PrivacyLedger.open(Path(tmp) / f"eps{eps}{suffix}-{rep}",
                                                BudgetConfig(epsilon_total=float(eps)))
                    res = train_dp(new_model(init), train, train_loss, collate_snapshots, config=cfg, ledger=ledger)
                    key = f"pr_auc_eps{eps}{suffix}"
                    runs_by_key.setdefault(key, []).append(score(key, res.model))
                    if not suffix:
                        eps_accounted_predictor[str(eps)] = res.epsilon_total
                        sigma_by_eps[str(eps)] = res.noise_multiplier
                    print(f"DP{suffix} eps<={eps} #{rep}: sigma {res.noise_multiplier:.3f}, {res.steps} steps, "
                          f"accounted eps {res.epsilon_total:.3f} (delta {res.delta:.2g}), PR-AUC "
                          f"{runs_by_key[key][-1]:.4f}", file=sys.stderr)
        for key, values in runs_by_key.items():
            results[key] = float(np.mean(values))

        # ---- cost: DP-SGD step time over non-private step time, same expected batch size
        timing = cfg.model_copy(update={"steps": args.timing_steps, "noise_multiplier": sigma_by_eps["4"]})
        stamps_dp: list[float] = []
        ledger = PrivacyLedger.open(Path(tmp) / "timing", BudgetConfig(epsilon_total=1e6))
        train_dp(new_model(), train, train_loss, collate_snapshots, config=timing, ledger=ledger,
                 on_step=lambda opt, s: stamps_dp.append(time.perf_counter()))
        stamps_np2: list[float] = []
        train_nonprivate(new_model(), train, train_loss, collate_snapshots, config=timing, seed=args.seed,
                         on_step=lambda s: stamps_np2.append(time.perf_counter()))
        step_dp, step_np = _step_time(stamps_dp), _step_time(stamps_np2)
        results["dp_step_s"], results["nonprivate_step_s"] = step_dp, step_np
        results["dp_step_ratio"] = step_dp / step_np
        print(f"step time: DP {step_dp * 1e3:.1f} ms, non-private {step_np * 1e3:.1f} ms, ratio "
              f"{results['dp_step_ratio']:.2f}", file=sys.stderr)

        # ---- audit: one-run canary audit of the same trainer, DP on and off
        task = make_canary_task(n_base=500, m=200, seed=args.seed)
        acfg = DPConfig(optimizer="adam", lr=1e-3, expected_batch_size=64, epochs=40)
        rng_seed = args.seed + 1

        def private(ds: Any) -> torch.nn.Module:
            led = PrivacyLedger.open(Path(tmp) / "audit", BudgetConfig(epsilon_total=8.0))
            out = train_dp(task.make_model(), ds, classification_loss, config=acfg, ledger=led)
            results["eps_accounted"] = out.epsilon_total
            return out.model

        def nonpriv(ds: Any) -> torch.nn.Module:
            return train_nonprivate(task.make_model(), ds, classification_loss, config=acfg, seed=args.seed).model

        on = one_run_audit(private, task.base, task.canaries, negative_loss_scores, k_plus=40, k_minus=40,
                           delta=1e-5, rng=np.random.default_rng(rng_seed))
        off = one_run_audit(nonpriv, task.base, task.canaries, negative_loss_scores, k_plus=40, k_minus=40,
                            delta=1e-5, rng=np.random.default_rng(rng_seed))
    results["audit_eps_lb_dp"], results["audit_eps_lb_nodp"] = on.epsilon_lower_bound, off.epsilon_lower_bound
    print(f"audit (m=200 canaries, 80 guesses, 95 %): DP on {on.correct}/80 correct -> eps >= "
          f"{on.epsilon_lower_bound:.3f} (accounted {results['eps_accounted']:.3f}); DP off {off.correct}/80 -> "
          f"eps >= {off.epsilon_lower_bound:.3f}", file=sys.stderr)

    base = results["pr_auc_nonprivate"]
    results["eps4_retention"] = results["pr_auc_eps4"] / base if base > 0 else float("nan")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([1, 4, 8], [results[f"pr_auc_eps{e}"] for e in (1, 4, 8)], "o-", label="DP fine-tuning (PRV)")
    ax.axhline(base, color="k", ls="--", label="non-private fine-tuning")
    ax.axhline(0.9 * base, color="grey", ls=":", label="90 % of non-private")
    ax.axhline(results["pr_auc_public_only"], color="tab:red", ls="-.", label="public pretraining only")
    ax.plot([4], [results["pr_auc_eps4_scratch"]], "s", color="tab:orange", label="DP from scratch")
    ax.set_xlabel("epsilon (delta = min(1e-5, 1/n))")
    ax.set_ylabel("PR-AUC, later test period")
    ax.set_title("Failure predictor: utility vs privacy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "pr_auc_vs_epsilon.png", dpi=120)

    summary = {
        "dp_step_ratio": results["dp_step_ratio"], "pr_auc_nonprivate": base,
        "pr_auc_eps1": results["pr_auc_eps1"], "pr_auc_eps4": results["pr_auc_eps4"],
        "pr_auc_eps8": results["pr_auc_eps8"], "eps_accounted": results["eps_accounted"],
        "audit_eps_lb_dp": results["audit_eps_lb_dp"], "audit_eps_lb_nodp": results["audit_eps_lb_nodp"],
        "eps4_retention": results["eps4_retention"], "eps_accounted_predictor": eps_accounted_predictor,
        "noise_multiplier_predictor": sigma_by_eps, "pr_auc_public_only": results["pr_auc_public_only"],
        "pr_auc_nonprivate_scratch": results["pr_auc_nonprivate_scratch"],
        "pr_auc_eps4_scratch": results["pr_auc_eps4_scratch"], "dp_step_s": results["dp_step_s"],
        "nonprivate_step_s": results["nonprivate_step_s"], "train_windows": n, "test_windows": len(test),
        "sites": args.sites, "public_sites": args.public_sites, "hours": args.hours, "epochs": args.epochs, "batch": batch,
        "optimizer": args.optimizer, "lr": args.lr, "momentum": args.momentum, "clip": args.clip,
        "repeats": args.repeats, "train_on_unpredictable": args.train_on_unpredictable, "cause_head": args.cause_head,
        "freeze_cause_head": args.freeze_cause_head,
        "cause_named_right": {k.replace("pr_auc_", ""): round(float(np.mean(v)), 4) for k, v in named_by_key.items()},
        "cause_named_rows": results.get("cause_named_rows", 0),
        "pr_auc_runs": {k: [round(v, 4) for v in vs] for k, vs in runs_by_key.items()},
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v)
                      for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
