"""Benchmark: label-free anomaly detection on real server telemetry (SMD subset), every machine a site.

Runs, per machine and WITHOUT point adjustment, then averaged over machines:
PCA (90 % variance, raw squared error: the published baseline; and with the shared standardised scoring),
Isolation Forest, the neural autoencoder trained on each machine alone, pooled (non-private), and federated
with DP-SGD (per-site epsilon from the privacy ledger's accountant), and the HDC detector; explanation hit@3
on the labelled cause metrics; training CPU seconds; scoring throughput on 2 threads.

Usage: ``python bench/anomaly.py [--data DIR] [--rounds N] [--plot FILE]``; ``--data`` defaults to
``$INFRABRAIN_SMD_DIR`` or ``../shared/data/smd`` beside the repository. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infrabrain.logs import configure_logging, get_logger
from infrabrain.models.anomaly_baselines import IsolationForestDetector, PCADetector
from infrabrain.models.anomaly_data import default_smd_dir, load_dir
from infrabrain.models.anomaly_explain import hit_at_k
from infrabrain.models.anomaly_federated import (
    FedAnomalyConfig,
    SiteData,
    detectors_from_global,
    personalise,
    run_federated,
    train_pooled,
)
from infrabrain.models.anomaly_hdc import HDCConfig, HDCDetector
from infrabrain.models.anomaly_metrics import evaluate, mean_over_machines
from infrabrain.models.anomaly_neural import NeuralConfig, NeuralDetector
from infrabrain.models.anomaly_scorer import AnomalyScorer
from infrabrain.models.anomaly_scoring import contributions

_log = get_logger("bench.anomaly")


def _mean(rows: dict[str, dict[str, float]], key: str) -> float:
    return mean_over_machines(list(rows.values()), key)


def _throughput(scorer: AnomalyScorer, x: np.ndarray, repeats: int = 3) -> float:
    scorer.score(x[:1000])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score(x)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="directory of <machine>.npz files laid out like SMD (default: "
                    f"$INFRABRAIN_SMD_DIR, else ../shared/data/smd beside the repository = {default_smd_dir()})")
    ap.add_argument("--rounds", type=int, default=FedAnomalyConfig().rounds, help="federated rounds")
    ap.add_argument("--epsilon", type=float, default=8.0, help="per-site epsilon budget over all rounds")
    ap.add_argument("--nan-policy", choices=["error", "ffill"], default="error", help="what to do with NaNs")
    ap.add_argument("--plot", default=None, help="write a per-machine best-F1 bar chart (PNG) here")
    ap.add_argument("--max-rows", type=int, default=None, help="truncate every machine (quick runs)")
    args = ap.parse_args(argv)
    configure_logging("warning")
    torch.set_num_threads(1)  # training CPU seconds are compared on one thread

    try:
        machines = load_dir(args.data, nan_policy=args.nan_policy, max_rows=args.max_rows)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sites = [SiteData(m.name, m.train) for m in machines]
    ncfg, hcfg = NeuralConfig(), HDCConfig()
    fcfg = FedAnomalyConfig(rounds=args.rounds, epsilon=args.epsilon)
    res: dict[str, dict[str, dict[str, float]]] = {}
    cpu: dict[str, float] = {"neural_local": 0.0, "hdc": 0.0}

    def record(method: str, name: str, labels: np.ndarray, scores: np.ndarray) -> None:
        res.setdefault(method, {})[name] = evaluate(labels, scores)

    hits: dict[str, list[bool]] = {"fed_dp": [], "hdc": [], "pca": [], "local": []}
    for m in machines:
        pca = PCADetector(0.90).fit(m.train)
        record("pca", m.name, m.test_label, pca.score_raw(m.test))
        record("pca_std", m.name, m.test_label, pca.score(m.test))
        record("iforest", m.name, m.test_label, IsolationForestDetector().fit(m.train).score(m.test))
        local = NeuralDetector.fit(m.train, ncfg)
        cpu["neural_local"] += local.train_cpu_s
        record("local", m.name, m.test_label, local.score(m.test))
        t0 = time.process_time()
        hdc = HDCDetector(hcfg).fit(m.train)
        cpu["hdc"] += time.process_time() - t0
        record("hdc", m.name, m.test_label, hdc.score(m.test))
        if m.segments:
            hits["pca"] += hit_at_k(contributions(pca.residuals(m.test), pca.scale), m.segments)
            hits["hdc"] += hit_at_k(contributions(hdc.residuals(m.test), hdc.scale), m.segments)
            hits["local"] += hit_at_k(contributions(local.residuals(m.test), local.scale), m.segments)
        print(f"{m.name}: pca {res['pca'][m.name]['best_f1']:.3f} local {res['local'][m.name]['best_f1']:.3f} "
              f"hdc {res['hdc'][m.name]['best_f1']:.3f}", file=sys.stderr, flush=True)

    pooled_w, cpu["neural_pooled"] = train_pooled(sites, ncfg)
    for name, det in detectors_from_global(sites, pooled_w, ncfg).items():
        m = next(x for x in machines if x.name == name)
        record("pooled", name, m.test_label, det.score(m.test))

    with tempfile.TemporaryDirectory(prefix="anomaly-ledgers-") as ledger_root:
        fed = run_federated(sites, ncfg, fcfg, ledger_root, progress=True)
    cpu["neural_fed_dp"] = fed.cpu_s
    for name, det in detectors_from_global(sites, fed.weights, ncfg).items():
        m = next(x for x in machines if x.name == name)
        record("fed_dp_global", name, m.test_label, det.score(m.test))
    cpu["personalise"] = 0.0
    for s, m in zip(sites, machines):
        det, c = personalise(s, fed.weights, ncfg, fcfg.personalise_epochs)
        cpu["personalise"] += c
        record("fed_dp", m.name, m.test_label, det.score(m.test))
        if m.segments:
            hits["fed_dp"] += hit_at_k(contributions(det.residuals(m.test), det.scale), m.segments)

    # scoring throughput on 2 threads: every machine's test period, one node-minute per row
    torch.set_num_threads(2)
    big = np.concatenate([m.test for m in machines])
    while big.shape[0] < 200_000:
        big = np.concatenate([big, big])
    neural_scorer = AnomalyScorer("neural", neural=ncfg)
    neural_scorer.detector = det  # last site's personalised detector
    hdc_scorer = AnomalyScorer("hdc", hdc=hcfg)
    hdc_scorer.detector = hdc
    rate_neural, rate_hdc = _throughput(neural_scorer, big), _throughput(hdc_scorer, big)

    methods = ["pca", "pca_std", "iforest", "local", "pooled", "fed_dp_global", "fed_dp", "hdc"]
    print(f"{'method':<14}{'best_f1':>9}{'pr_auc':>9}   per machine best-F1", file=sys.stderr)
    for k in methods:
        per = " ".join(f"{res[k][m.name]['best_f1']:.2f}" for m in machines)
        print(f"{k:<14}{_mean(res[k], 'best_f1'):>9.3f}{_mean(res[k], 'pr_auc'):>9.3f}   {per}", file=sys.stderr)
    print(f"training CPU s (1 thread): {json.dumps({k: round(v, 2) for k, v in cpu.items()})}", file=sys.stderr)
    print(f"scoring node-minutes/s (2 threads): neural {rate_neural:,.0f}  hdc {rate_hdc:,.0f}", file=sys.stderr)
    print(f"epsilon per site: {json.dumps({k: round(v, 3) for k, v in fed.epsilon.items()})}", file=sys.stderr)

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.8 / len(methods)
        for i, k in enumerate(methods):
            ax.bar(np.arange(len(machines)) + i * width, [res[k][m.name]["best_f1"] for m in machines], width,
                   label=k)
        ax.set_xticks(np.arange(len(machines)) + 0.4 - width / 2, [m.name for m in machines], rotation=20)
        ax.set_ylabel("best F1 (no point adjustment)")
        ax.set_ylim(0, 1.25)
        ax.legend(ncol=4, fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)

    n_seg = len(hits["fed_dp"])
    out = {
        "best_f1_fed_dp": round(_mean(res["fed_dp"], "best_f1"), 4),
        "pr_auc_fed_dp": round(_mean(res["fed_dp"], "pr_auc"), 4),
        "best_f1_fed_dp_global": round(_mean(res["fed_dp_global"], "best_f1"), 4),
        "best_f1_local": round(_mean(res["local"], "best_f1"), 4),
        "pr_auc_local": round(_mean(res["local"], "pr_auc"), 4),
        "best_f1_pooled": round(_mean(res["pooled"], "best_f1"), 4),
        "best_f1_pca": round(_mean(res["pca"], "best_f1"), 4),
        "pr_auc_pca": round(_mean(res["pca"], "pr_auc"), 4),
        "best_f1_pca_std": round(_mean(res["pca_std"], "best_f1"), 4),
        "best_f1_iforest": round(_mean(res["iforest"], "best_f1"), 4),
        "best_f1_hdc": round(_mean(res["hdc"], "best_f1"), 4),
        "pr_auc_hdc": round(_mean(res["hdc"], "pr_auc"), 4),
        "hdc_compute_ratio": round(cpu["neural_local"] / max(cpu["hdc"], 1e-9), 2),
        "hdc_compute_ratio_vs_fed_dp": round((cpu["neural_fed_dp"] + cpu["personalise"]) / max(cpu["hdc"], 1e-9), 2),
        "rootcause_hit_at_3": round(float(np.mean(hits["fed_dp"])) if n_seg else float("nan"), 4),
        "rootcause_hit_at_3_hdc": round(float(np.mean(hits["hdc"])) if hits["hdc"] else float("nan"), 4),
        "rootcause_hit_at_3_pca": round(float(np.mean(hits["pca"])) if hits["pca"] else float("nan"), 4),
        "rootcause_segments": n_seg,
        "eps": round(max(fed.epsilon.values()), 4),
        "delta": max(fed.delta.values()),
        "rounds": fcfg.rounds,
        "machines": len(machines),
        "score_rate_neural": round(rate_neural),
        "score_rate_hdc": round(rate_hdc),
        "train_cpu_s": {k: round(v, 2) for k, v in cpu.items()},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
