"""Aggregation rules chosen by configuration: FedAvg (default), FedProx, and Flower's robust rules.

- ``fedavg``: weighted mean of the site models (weights = number of training examples).
- ``fedprox``: FedAvg on the server; sites add ``mu/2 * ||w - w_global||^2`` to their loss (non-IID drift).
- ``trimmed-mean`` (``FedTrimmedAvg``), ``krum``, ``bulyan``: Byzantine-robust rules that need every site's
  individual update.
- SecAgg+ (``secagg=true``) runs through Flower's legacy workflow with a legacy FedAvg: the coordinator sees only
  the sum of the updates, so the robust rules are refused with it (:func:`validate_combination`).
"""

from __future__ import annotations

import math
from typing import Any

from infrabrain.coordinator.fed_config import ROBUST_STRATEGIES, FederationConfig


def validate_combination(strategy: str, secagg: bool) -> None:
    """Raise ValueError when ``strategy`` cannot run with secure aggregation."""
    if secagg and strategy in ROBUST_STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r} cannot run with secagg: robust rules (trimmed mean, Krum, Bulyan) compare "
            "individual site updates, and SecAgg+ only reveals their sum. Choose fedavg with secagg, or disable "
            "secagg.")
    if secagg and strategy == "fedprox":
        raise ValueError("strategy='fedprox' is not available with secagg; use 'fedavg'")


def _sampling(cfg: FederationConfig, num_sites: int | None) -> dict[str, Any]:
    min_train = cfg.min_train_sites
    min_avail = max(cfg.min_available_sites, min_train)
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": min_train,
        "min_evaluate_nodes": 0 if cfg.fraction_evaluate == 0.0 else min(min_train, min_avail),
        "min_available_nodes": min_avail,
    }


def build_strategy(cfg: FederationConfig, num_sites: int | None = None) -> Any:
    """The Message-API strategy for ``cfg`` (``flwr.serverapp.strategy``)."""
    from flwr.serverapp import strategy as S

    validate_combination(cfg.strategy, cfg.secagg)
    common = _sampling(cfg, num_sites)
    if cfg.strategy == "fedavg":
        return S.FedAvg(**common)
    if cfg.strategy == "fedprox":
        return S.FedProx(**common, proximal_mu=cfg.proximal_mu)
    if cfg.strategy == "trimmed-mean":
        return S.FedTrimmedAvg(**common, beta=cfg.trimmed_beta)
    if cfg.strategy == "krum":
        _validate_byzantine("krum", cfg, extra=2)
        return S.Krum(**common, num_malicious_nodes=cfg.num_malicious)
    if cfg.strategy == "bulyan":
        _validate_byzantine("bulyan", cfg, extra=3)
        return S.Bulyan(**common, num_malicious_nodes=cfg.num_malicious)
    raise ValueError(f"unknown strategy {cfg.strategy!r}")


def _validate_byzantine(name: str, cfg: FederationConfig, extra: int) -> None:
    # Krum needs n > 2f + 2; Bulyan needs n >= 4f + 3. Enforce on the minimum number of training sites.
    f = cfg.num_malicious
    need = 2 * f + 3 if name == "krum" else 4 * f + extra
    if cfg.min_train_sites < need:
        raise ValueError(f"strategy={name!r} with num-malicious={f} needs min-train-sites >= {need}, "
                         f"got {cfg.min_train_sites}")


def build_legacy_fedavg(cfg: FederationConfig, initial: list[Any], on_fit: Any = None,
                        on_evaluate: Any = None, round_offset: int = 0) -> Any:
    """Legacy ``flwr.server.strategy.FedAvg`` for the SecAgg+ workflow, with callbacks after each aggregation.

    ``on_fit(round, ndarrays, metrics, num_sites)`` and ``on_evaluate(round, metrics, num_sites)`` let the
    ServerApp checkpoint the summed-and-averaged model and record aggregate metrics.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    validate_combination(cfg.strategy, cfg.secagg)

    def weighted(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        total = sum(n for n, _ in metrics) or 1
        keys = set().union(*(m.keys() for _, m in metrics)) if metrics else set()
        return {k: sum(n * float(m.get(k, 0.0)) for n, m in metrics) / total for k in keys}

    site_cfg = cfg.site_config()

    def round_config(rnd: int) -> dict[str, Any]:
        global_round = rnd + round_offset
        left = math.ceil((cfg.num_server_rounds - global_round + 1) * cfg.fraction_train)
        return {**site_cfg, "server-round": global_round, "rounds-left": max(1, left)}

    class _CheckpointingFedAvg(LegacyFedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None and on_fit is not None:
                on_fit(server_round, parameters_to_ndarrays(params), metrics, len(results))
            return params, metrics

        def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            loss, metrics = super().aggregate_evaluate(server_round, results, failures)
            if on_evaluate is not None:
                on_evaluate(server_round, {**metrics, **({"eval-loss": loss} if loss is not None else {})},
                            len(results))
            return loss, metrics

    common = _sampling(cfg, None)
    return _CheckpointingFedAvg(
        fraction_fit=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_fit_clients=common["min_train_nodes"],
        min_evaluate_clients=max(common["min_evaluate_nodes"], 1) if cfg.fraction_evaluate > 0 else 0,
        min_available_clients=common["min_available_nodes"],
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda rnd: round_config(rnd),
        on_evaluate_config_fn=lambda rnd: round_config(rnd),
        fit_metrics_aggregation_fn=weighted,
        evaluate_metrics_aggregation_fn=weighted,
    )
