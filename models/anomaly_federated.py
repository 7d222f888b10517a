"""Federated, differentially private training of the neural anomaly detector: every machine is a site.

Per round, every site starts from the global weights and runs DP-SGD on its own normal history with
``infrabrain.privacy.dp_training.train_dp``; the site's persistent ``PrivacyLedger`` (Opacus PRV accountant
by default) reserves and commits the epsilon of each run, and calibrates the noise so that the site's whole
budget (default epsilon 8) covers all rounds. Only the weights (numpy arrays) and the example count leave a
site. The coordinator aggregates them with the federation's configured Message-API strategy
(``infrabrain.coordinator.strategies.build_strategy``, FedAvg by default) through Flower's own
``aggregate_arrayrecords`` -- the exact function that strategy's ``aggregate_train`` applies to the replies'
``ArrayRecord``s -- in process, without starting a SuperLink (see docs/anomaly.md for why).

After the last round each site calibrates its residual scale on its own history with the global model; the
scale never leaves the site.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from infrabrain.logs import get_logger
from infrabrain.models.anomaly_neural import (
    NeuralConfig,
    NeuralDetector,
    build_model,
    get_weights,
    make_windows,
    reconstruction_loss,
    set_weights,
    train_plain,
)

_log = get_logger("models.anomaly_federated")


class FedAnomalyConfig(BaseModel):
    """Federated DP training settings (the budget is per site, over all rounds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rounds: int = Field(4, ge=1, le=1000)
    personalise_epochs: int = Field(2, ge=0, le=100, description="on-site fine-tuning epochs after federation")
    local_epochs: float = Field(1.0, gt=0, le=100)
    epsilon: float = Field(8.0, gt=0, le=100, description="per-site epsilon budget over the whole training")
    accountant: str = Field("prv", pattern="^(prv|rdp)$")
    expected_batch_size: int = Field(256, ge=1)
    max_grad_norm: float = Field(0.05, gt=0)
    lr: float = Field(2e-3, gt=0, le=1.0)
    noise_multiplier: float | None = Field(None, gt=0, description="fixed sigma; None calibrates it to the budget")
    secure_noise: bool = Field(True, description="Opacus secure-mode noise (floating-point attack resistant)")
    strategy: str = Field("fedavg", description="coordinator strategy name (FedAvg-family weighting)")


@dataclass
class SiteData:
    """One site's normal history (never leaves the site)."""

    name: str
    train: np.ndarray


@dataclass
class FedResult:
    """Outcome of a federated run: global weights, per-site epsilon (accountant's), CPU time, loss history."""

    weights: list[np.ndarray]
    epsilon: dict[str, float]
    delta: dict[str, float]
    noise_multiplier: dict[str, float]
    cpu_s: float
    rounds: int
    history: list[dict[str, float]] = field(default_factory=list)


def _aggregator(cfg: FedAnomalyConfig):  # noqa: ANN202 - returns Flower callables
    """The federation's strategy (for its weighting key) and Flower's ArrayRecord aggregation."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from infrabrain.coordinator.fed_config import FederationConfig
    from infrabrain.coordinator.strategies import build_strategy

    strategy = build_strategy(FederationConfig(strategy=cfg.strategy))
    key = getattr(strategy, "weighted_by_key", None)
    if key is None:
        raise ValueError(f"strategy {cfg.strategy!r} has no example weighting; use a FedAvg-family strategy")
    return aggregate_arrayrecords, key


def run_federated(
    sites: list[SiteData],
    neural: NeuralConfig,
    cfg: FedAnomalyConfig,
    ledger_root: str | Path,
    progress: bool = False,
) -> FedResult:
    """Train one global autoencoder across ``sites`` with DP-SGD locally and FedAvg centrally."""
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.dp_training import DPConfig, resolve_noise_multiplier, train_dp
    from infrabrain.privacy.ledger import PrivacyLedger

    if len(sites) < 1:
        raise ValueError("federation needs at least one site")
    n_metrics = {s.train.shape[1] for s in sites}
    if len(n_metrics) != 1:
        raise ValueError(f"all sites must have the same metric count, got {sorted(n_metrics)}")
    aggregate, weight_key = _aggregator(cfg)
    budget = BudgetConfig(epsilon_total=cfg.epsilon, accountant=cfg.accountant)  # type: ignore[arg-type]
    ledgers = {s.name: PrivacyLedger.open(Path(ledger_root) / s.name, budget, site=s.name) for s in sites}
    datasets = {s.name: TensorDataset(torch.from_numpy(make_windows(s.train, neural.window))) for s in sites}
    dp_cfg = DPConfig(
        max_grad_norm=cfg.max_grad_norm, expected_batch_size=cfg.expected_batch_size,
        max_physical_batch_size=max(cfg.expected_batch_size * 2, 512), epochs=cfg.local_epochs,
        optimizer="adam", lr=cfg.lr, secure_noise=cfg.secure_noise, noise_multiplier=cfg.noise_multiplier,
    )
    # one noise multiplier per site for the whole run, calibrated by the privacy code so that all
    # ``rounds`` runs fit the site's budget (identical runs keep the accountant's history homogeneous)
    site_cfg = {
        s.name: dp_cfg.model_copy(update={"noise_multiplier": resolve_noise_multiplier(
            dp_cfg, ledgers[s.name], num_samples=len(datasets[s.name]), rounds_left=cfg.rounds)})
        for s in sites
    }
    global_w = get_weights(build_model(next(iter(n_metrics)), neural))
    eps: dict[str, float] = {}
    delta: dict[str, float] = {}
    sigma: dict[str, float] = {}
    history: list[dict[str, float]] = []
    t0 = time.process_time()
    rounds = range(cfg.rounds)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc="federated DP rounds", unit="round")
    for r in rounds:
        replies = []
        losses = []
        for s in sites:
            model = build_model(s.train.shape[1], neural)
            set_weights(model, global_w)
            res = train_dp(model, datasets[s.name], reconstruction_loss, config=site_cfg[s.name],
                           ledger=ledgers[s.name], round=r, rounds_left=cfg.rounds - r)
            eps[s.name], delta[s.name], sigma[s.name] = res.epsilon_total, res.delta, res.noise_multiplier
            losses.append(res.mean_loss)
            # what leaves the site: weights and the example count, nothing else
            replies.append(RecordDict({
                "arrays": ArrayRecord([w.astype(np.float32) for w in get_weights(model)]),
                "metrics": MetricRecord({weight_key: len(datasets[s.name])}),
            }))
        global_w = aggregate(replies, weight_key).to_numpy_ndarrays()
        history.append({"round": float(r), "mean_loss": float(np.mean(losses)), "max_eps": max(eps.values())})
        _log.info("anomaly federated round", extra={"round": r, "mean_loss": float(np.mean(losses)),
                                                    "max_epsilon": max(eps.values())})
    return FedResult(global_w, eps, delta, sigma, time.process_time() - t0, cfg.rounds, history)


def detectors_from_global(sites: list[SiteData], weights: list[np.ndarray], neural: NeuralConfig
                          ) -> dict[str, NeuralDetector]:
    """Each site's detector: the global model plus that site's own residual scale."""
    out = {}
    for s in sites:
        model = build_model(s.train.shape[1], neural)
        set_weights(model, weights)
        out[s.name] = NeuralDetector(model, neural).calibrate(s.train)
    return out


def personalise(site: SiteData, weights: list[np.ndarray], neural: NeuralConfig, epochs: int = 1
                ) -> tuple[NeuralDetector, float]:
    """Fine-tune the global model on the site's own history for ``epochs`` (on site, so no DP needed: the
    personalised model and its scores never leave the site) and calibrate; returns it and its CPU seconds."""
    model = build_model(site.train.shape[1], neural)
    set_weights(model, weights)
    cpu = train_plain(model, make_windows(site.train, neural.window), neural.model_copy(update={"epochs": epochs}))
    return NeuralDetector(model, neural).calibrate(site.train), cpu


def train_pooled(sites: list[SiteData], neural: NeuralConfig) -> tuple[list[np.ndarray], float]:
    """Non-private reference: one model on every site's history pooled (what federation must approach)."""
    windows = np.concatenate([make_windows(s.train, neural.window) for s in sites])
    model = build_model(windows.shape[1] // neural.window, neural)
    # same number of gradient steps per sample as local training: epochs over the pooled data
    cpu = train_plain(model, windows, neural)
    return get_weights(model), cpu
