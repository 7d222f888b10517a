"""Federated model vs. each site alone vs. centralised non-private training, on held-out sites.

Used by ``bench/federation.py`` and by the demo (:func:`federated_demo`). This is an *experimenter's* view: it
simulates the sites' data in one process to score models on sites that never took part in training. In a real
deployment no party holds other sites' data; each site only evaluates on its own.

- start: the model the federation started from (the public pretrained model, or random weights);
- federated: the registry's final global model after ``rounds`` DP rounds;
- local-only: each training site trains alone with DP-SGD from the same start, for the same number of local
  epochs and the same epsilon budget, under its own throw-away ledger; the mean of their held-out PR-AUCs;
- centralised: one model trained without DP on all training sites' data pooled.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.client.local_training import SiteSettings
from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.logs import get_logger

log = get_logger("coordinator.comparison")


def settings_for(cfg: FederationConfig, partition_id: int, num_partitions: int, state_root: str | Path,
                 data_root: str | Path | None = None) -> SiteSettings:
    """Site settings as the ClientApp would build them for ``partition_id`` (data cached under ``data_root``,
    by default the federation's own site directories, so each site is simulated once)."""
    data = Path(data_root or cfg.state_root or state_root) / f"site-{partition_id:04d}" / "local-data"
    return SiteSettings(partition_id=partition_id, num_partitions=num_partitions, data_seed=cfg.data_seed,
                        site_gpus=cfg.site_gpus, site_hours=cfg.site_hours,
                        state_dir=str(Path(state_root) / f"site-{partition_id:04d}"), data_dir=str(data))


def pooled_scores(weights: Sequence[np.ndarray], sites: Sequence[Any], cfg: dict[str, Any]) -> dict[str, float]:
    """PR-AUC / ROC-AUC of ``weights`` over the pooled (snapshot, node) predictions of several sites' held-out
    splits (``SiteData``, e.g. from :func:`heldout_sets`)."""
    import pandas as pd

    from infrabrain.models.training import predict_scores, summary_metrics

    model = _scoring_model(weights, sites, cfg, "pooled_scores")
    frames = [predict_scores(model, s.test) for s in sites]
    df = pd.concat(frames, ignore_index=True)
    return summary_metrics(df["label"].to_numpy(), df["score"].to_numpy())


def _scoring_model(weights: Sequence[np.ndarray], sites: Sequence[Any], cfg: dict[str, Any], caller: str) -> Any:
    """The predictor of ``weights`` with the public input scaling every one of ``sites`` was prepared with (in
    eval mode); refused, naming ``caller``, for no site or for sites prepared with different scalings."""
    from infrabrain.client.predictor_task import SCALING_KEYS, build_predictor
    from infrabrain.models.training import set_weights

    if not sites:
        raise ValueError(f"{caller} needs at least one site")
    scaling = sites[0].input_scaling
    if any(not np.array_equal(s.input_scaling[k], scaling[k]) for s in sites[1:] for k in SCALING_KEYS):
        raise ValueError("the sites were prepared with different public input scalings (other site-gpus, "
                         "site-hours, data-seed or acceleration); score them separately")
    model = build_predictor(cfg, scaling)
    set_weights(model, list(weights))
    return model.eval()


#: The root-cause ranking's summary keys :func:`heldout_explanations` pools over sites (each with its ``n``).
ROOT_CAUSE_SCOPES = ("", "cascade_")


def heldout_explanations(weights: Sequence[np.ndarray], sites: Sequence[Any], cfg: dict[str, Any],
                         max_events: int = 200, seed: int = 0) -> dict[str, Any]:
    """How right ``weights``' explanations are on held-out sites (``SiteData``, e.g. from :func:`heldout_sets`).

    ``cause_head``: how often the cause head names a failing row's cause group, pooled over the sites' held-out
    rows (:func:`~infrabrain.models.evaluation.cause_head_accuracy`; None for a model without a head).
    ``root_cause``: top-1 / top-3 of the root-cause ranking over all failures and the cascades, pooled over sites
    (each site's ``n`` failures, at most ``max_events`` sampled per site), ranked as that site's checkpoint
    would rank (:mod:`infrabrain.client.site_checkpoint`): with its training split's labelled roots plus the
    published failure mix on its topology, and how far its own components moved over its training split;
    ``root_cause_without_cause_head``: the same drops ranked without the head's cause (a model with a head);
    ``root_cause_without_part``: without ranking first the component an alert's part lies on (issue 3 follow-up
    43: :func:`~infrabrain.models.explain.quoted_part_component`)."""
    import pandas as pd

    from infrabrain.client.predictor_task import feature_set
    from infrabrain.models.evaluation import cause_head_accuracy, failure_events
    from infrabrain.models.root_cause_accuracy import rootcause_accuracy
    from infrabrain.models.own_change_evidence import fit_own_change_tails
    from infrabrain.models.published_root_prior import published_root_prior
    from infrabrain.models.root_prior import fit_root_prior, merge_root_priors
    from infrabrain.models.training import predict_scores

    model = _scoring_model(weights, sites, cfg, "heldout_explanations")
    fs = feature_set()
    frames, reports = [], []
    for s in sites:
        rows = predict_scores(model, s.test)
        frames.append(rows)
        prior = merge_root_priors(fit_root_prior(s.train), published_root_prior(s.train.sites[0].graph))
        reports.append(rootcause_accuracy(model, s.test, fs, rows, failure_events(s.test), max_events=max_events,
                                          seed=seed, prior=prior, own_tails=fit_own_change_tails(s.train, fs)))
    out: dict[str, Any] = {"cause_head": cause_head_accuracy(pd.concat(frames, ignore_index=True)),
                           "root_cause": _pool_top_k(reports)}
    for without in ("without_cause_head", "without_part"):
        if all(without in r for r in reports):
            out[f"root_cause_{without}"] = _pool_top_k([r[without] for r in reports])
    return out


def _pool_top_k(reports: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-site top-1 / top-3 summaries (``<scope>n``, ``<scope>top1``, ``<scope>top3``) pooled, weighted by n."""
    out: dict[str, float] = {}
    for scope in ROOT_CAUSE_SCOPES:
        n = sum(int(r[f"{scope}n"]) for r in reports)
        out[f"{scope}n"] = n
        for k in ("top1", "top3"):
            out[f"{scope}{k}"] = (sum(r[f"{scope}{k}"] * r[f"{scope}n"] for r in reports if r[f"{scope}n"]) / n
                                  if n else float("nan"))
    return out


def heldout_sets(cfg: FederationConfig, first_id: int, count: int, total: int) -> list[Any]:
    """``SiteData`` of sites ``first_id .. first_id+count-1`` (never in the federation), for :func:`pooled_scores`."""
    from infrabrain.client.predictor_task import site_data

    site_cfg = cfg.site_config()
    # the sites' state dirs are never written here; their data lands under cfg.state_root when set, else in this
    # temp dir, read back before it goes (a memory-mapped array outlives its unlinked file)
    with tempfile.TemporaryDirectory(prefix="infrabrain-heldout-") as root:
        return [site_data(settings_for(cfg, pid, total, root), site_cfg)
                for pid in range(first_id, first_id + count)]


def federation_start(cfg: FederationConfig) -> list[np.ndarray]:
    """The arrays the federation started from (:func:`~infrabrain.coordinator.public_model.starting_weights`,
    cached next to the registry, so this does not pretrain again)."""
    from infrabrain.coordinator.public_model import starting_weights

    return starting_weights(cfg, cfg.registry_dir)


def train_local_only(cfg: FederationConfig, partition_id: int, total: int, work: str | Path,
                     init: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """One site training alone: DP-SGD for ``rounds`` runs of ``local-epochs`` under its own budget.

    ``init``: the arrays to start from (the federation's own starting point, e.g. the public pretrained model,
    so the comparison measures what federating adds); None = random initialisation.
    """
    import torch

    from infrabrain.client.predictor_task import _calibrated_noise, build_predictor, site_data, task_loss
    from infrabrain.models.snapshots import collate_snapshots
    from infrabrain.models.training import get_weights, set_weights
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.dp_training import DPConfig, train_dp
    from infrabrain.privacy.ledger import PrivacyLedger

    torch.set_num_threads(1)
    settings = settings_for(cfg, partition_id, total, Path(work) / "local-only")
    site_cfg = cfg.site_config()
    data = site_data(settings, site_cfg)
    model = build_predictor(site_cfg, data.input_scaling)
    if init is not None:
        set_weights(model, init)
    ledger = PrivacyLedger.open(settings.state_path / "ledger", BudgetConfig(epsilon_total=cfg.eps_budget),
                                site=f"local-{partition_id}")
    n = len(data.train)
    dp_cfg = DPConfig(max_grad_norm=cfg.max_grad_norm, expected_batch_size=min(cfg.batch_size, n),
                      max_physical_batch_size=max(cfg.batch_size, 32), epochs=float(cfg.local_epochs), lr=cfg.lr,
                      optimizer=cfg.optimizer, momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
                      noise_multiplier=cfg.noise_multiplier or None)
    if dp_cfg.noise_multiplier is None:
        dp_cfg = dp_cfg.model_copy(update={"noise_multiplier": _calibrated_noise(settings, dp_cfg, ledger, n,
                                                                                 cfg.num_server_rounds)})
    loss = task_loss(site_cfg)
    for r in range(1, cfg.num_server_rounds + 1):
        train_dp(model, data.train, loss, collate_snapshots, config=dp_cfg, ledger=ledger, round=r,
                 rounds_left=cfg.num_server_rounds - r + 1)
    return get_weights(model)


def train_centralized(cfg: FederationConfig, partition_ids: Sequence[int], total: int,
                      epochs: int | None = None, init: Sequence[np.ndarray] | None = None,
                      optimizer: str | None = None, lr: float | None = None) -> list[np.ndarray]:
    """Non-private reference: all training sites' data pooled in one place (what federation avoids).

    By default it trains like the federation's sites (optimizer, lr, ``rounds x local-epochs`` epochs); pass
    ``epochs``/``optimizer``/``lr`` for a stronger recipe and ``init`` to start from the same arrays as the
    federation (None = random initialisation).
    """
    import torch
    from torch.utils.data import ConcatDataset

    from infrabrain.client.predictor_task import build_predictor, site_data, task_loss
    from infrabrain.models.snapshots import collate_snapshots
    from infrabrain.models.training import get_weights, set_weights
    from infrabrain.privacy.dp_training import DPConfig
    from infrabrain.privacy.nonprivate import train_nonprivate

    torch.set_num_threads(1)
    site_cfg = cfg.site_config()
    with tempfile.TemporaryDirectory(prefix="infrabrain-central-") as root:  # as heldout_sets
        data = [site_data(settings_for(cfg, pid, total, root), site_cfg) for pid in partition_ids]
    pooled = ConcatDataset([d.train for d in data])
    model = build_predictor(site_cfg, data[0].input_scaling)
    if init is not None:
        set_weights(model, init)
    ep = epochs if epochs is not None else cfg.num_server_rounds * cfg.local_epochs
    opt = optimizer or cfg.optimizer
    dp_cfg = DPConfig(expected_batch_size=min(cfg.batch_size, len(pooled)), epochs=float(ep),
                      lr=lr if lr is not None else cfg.lr, optimizer=opt,
                      momentum=cfg.momentum if opt == "sgd" else 0.0)
    train_nonprivate(model, pooled, task_loss(site_cfg), collate_snapshots, config=dp_cfg, seed=cfg.seed)
    return get_weights(model)


def federated_demo(sites: int = 3, rounds: int = 3, site_gpus: int = 16, site_hours: float = 96.0,
                   heldout: int = 1, work_dir: str | Path | None = None,
                   on_round: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Federate a few simulated sites with DP on the simulation engine; compare with local-only training.

    Returns ``{"rounds": [per-round records], "federated": {...}, "local_only": [{...} per site],
    "local_only_mean_pr_auc": x, "eps_max": e, "registry_dir": path, "fleet_prior": the published fleet root
    prior or None}``, all scored on ``heldout`` sites that never took part. ``make demo`` prints it.
    """
    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.simulation_run import run_simulated_federation, simulation_config

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="infrabrain-fed-demo-"))
    total = sites + heldout
    cfg = simulation_config(sites, rounds, None, work, site_gpus=site_gpus, site_hours=site_hours, **overrides)
    report = run_simulated_federation(cfg, sites, work, on_round=on_round)
    final = ModelRegistry(cfg.registry_dir).latest()
    if final is None:
        raise RuntimeError("the federation produced no checkpoint")
    held = heldout_sets(cfg, sites, heldout, total)
    site_cfg = cfg.site_config()
    fed = pooled_scores(final.arrays, held, site_cfg)
    start = federation_start(cfg)
    local = []
    for pid in range(sites):
        w = train_local_only(cfg, pid, total, work, init=start)
        local.append({"site": pid, **pooled_scores(w, held, site_cfg)})
    finite = [x["pr_auc"] for x in local if math.isfinite(x["pr_auc"])]
    eps = [r["eps_max"] for r in report.rounds if r.get("eps_max") is not None]
    from infrabrain.coordinator.fleet_prior_round import published_prior

    prior = published_prior(Path(cfg.registry_dir)) if cfg.fleet_prior else None
    return {"rounds": report.rounds, "federated": fed, "start": pooled_scores(start, held, site_cfg),
            "fleet_prior": prior.model_dump() if prior is not None else None,
            "local_only": local,
            "local_only_mean_pr_auc": float(np.mean(finite)) if finite else float("nan"),
            "eps_max": max(eps) if eps else None, "registry_dir": cfg.registry_dir, "work_dir": str(work),
            "site_checkpoint": str(_site_checkpoint(cfg, 0, sites)),
            "site_top_alert": site_top_alert(cfg, 0, sites, plot_dir=work / "site-0-alert")}


def site_top_alert(cfg: FederationConfig, partition_id: int, total: int,
                   plot_dir: Path | None = None) -> dict[str, Any]:
    """What site ``partition_id``'s daemon would say of its riskiest held-out window with its checkpoint of the
    global model (``models.predict.predict_run`` on its own simulated telemetry): the top node's ``explanation``
    (naming the cause the federated model's head gives), ``cause``, ``root_causes``, ``t`` (seconds) and, from
    the simulator's truth, whether the node ``failed`` within the hour; with ``plot_dir`` also ``plot``, the
    picture of that explanation (``models.explanation_plot``). For the demo: one site reads its own."""
    from infrabrain.client.predictor_task import site_data, site_spec
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.models.predict import predict_run
    from infrabrain.models.training import predict_scores
    from infrabrain.simulation.engine import simulate_site

    site_cfg = cfg.site_config()
    settings = settings_for(cfg, partition_id, total, cfg.state_root)
    ckpt = load_checkpoint(_site_checkpoint(cfg, partition_id, total))
    rows = predict_scores(ckpt.model, site_data(settings, site_cfg).test)
    if rows.empty:
        raise ValueError(f"site {partition_id} has no held-out window to score")
    t = int(rows.loc[rows["score"].idxmax(), "t"])
    run = simulate_site(site_spec(settings), settings.site_hours, seed=settings.data_seed * 1000 + partition_id,
                        acceleration=cfg.acceleration)
    top = predict_run(ckpt, run, at_s=t, explain_top=1, plot_dir=plot_dir)[0]
    at = rows[(rows["t"] == t) & (rows["node"] == top["node"])]
    return {"t": t, "node_id": top["node_id"], "risk": top["risk"], "cause": top.get("cause"),
            "explanation": top.get("explanation", ""), "root_causes": top.get("root_causes", []),
            "failed": bool(at["label"].any()), "plot": top.get("plot")}


def _site_checkpoint(cfg: FederationConfig, partition_id: int, total: int) -> Path:
    """Where site ``partition_id`` keeps its calibrated predictor checkpoint of the latest global model."""
    from infrabrain.client.site_checkpoint import SITE_CHECKPOINT_DIR

    settings = settings_for(cfg, partition_id, total, cfg.state_root)
    return settings.state_path / SITE_CHECKPOINT_DIR
