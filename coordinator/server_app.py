"""The coordinator's Flower ServerApp: sample sites, aggregate inspected updates, checkpoint every round.

The round loop is written out here (rather than ``Strategy.start``) so that every reply is inspected before it
reaches the strategy (:mod:`infrabrain.coordinator.inspection`), every completed round is checkpointed in the
registry, and a restarted coordinator resumes after the last completed round. Only aggregate metrics arrive from
sites; the coordinator aggregates them again across sites (weighted by examples).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp

from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.coordinator.inspection import inspect_replies, model_spec
from infrabrain.coordinator.registry import ModelRegistry
from infrabrain.logs import get_logger

log = get_logger("coordinator.server_app")

RoundCallback = Callable[[dict[str, Any]], None]


def default_registry_dir() -> Path:
    """``$INFRABRAIN_REGISTRY`` or ``$FLWR_HOME/infrabrain/registry`` (FLWR_HOME is set for every Flower process)."""
    if os.environ.get("INFRABRAIN_REGISTRY"):
        return Path(os.environ["INFRABRAIN_REGISTRY"])
    return Path(os.environ.get("FLWR_HOME", os.path.expanduser("~/.flwr"))) / "infrabrain" / "registry"


def _fingerprint(cfg: FederationConfig) -> dict[str, Any]:
    return {"task": cfg.task, "strategy": cfg.strategy, "secagg": cfg.secagg}


def _initial(cfg: FederationConfig, registry: ModelRegistry) -> tuple[ArrayRecord, int]:
    """Global model to start from and the first round to run (resume after the last completed round)."""
    from flwr.app import Array

    from infrabrain.client.local_training import initial_weights

    latest = registry.latest() if cfg.resume else None
    if latest is None:
        from infrabrain.coordinator.public_model import starting_weights

        start = starting_weights(cfg, registry.root)
        return ArrayRecord({str(i): Array(a) for i, a in enumerate(start)}), 1
    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    shapes = [list(a.shape) for a in fresh]
    if latest.meta.get("shapes") != shapes or latest.meta.get("task") != cfg.task:
        other = {**cfg.model_dump(by_alias=True), "cause-head": not cfg.cause_head}
        hint = (f"; its shapes are the model's with cause-head = {str(not cfg.cause_head).lower()}"
                if latest.meta.get("shapes") == [list(a.shape) for a in initial_weights(cfg.task, other)] else "")
        raise ValueError(f"registry {str(registry.root)!r} holds a model for task={latest.meta.get('task')!r} with "
                         f"other array shapes{hint}; use another registry-dir or resume=false")
    log.info("resuming federation", extra={"from_round": latest.round, "registry": str(registry.root)})
    return ArrayRecord({k: Array(a) for k, a in zip(latest.keys, latest.arrays, strict=True)}), latest.round + 1


def weighted_metrics(replies: list[Message]) -> MetricRecord | None:
    """Example-weighted mean of each metric over the sites that reported it (a site without positives in its
    held-out split has no PR-AUC and is left out of that key only)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for msg in replies:
        rec = msg.content["metrics"]
        n = float(rec["num-examples"])
        for k, v in rec.items():
            if k == "num-examples":
                continue
            sums[k] = sums.get(k, 0.0) + n * float(v)
            weights[k] = weights.get(k, 0.0) + n
    if not replies:
        return None
    out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
    out["num-examples"] = float(sum(float(m.content["metrics"]["num-examples"]) for m in replies))
    return MetricRecord(out)


def _num(metrics: MetricRecord | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}


def _max_metric(replies: list[Message], key: str) -> float | None:
    vals = [float(m.content["metrics"][key]) for m in replies if key in m.content["metrics"]]
    return max(vals) if vals else None


def collect_replies(grid: Grid, messages: list[Message], timeout_s: float, quorum: int,
                    straggler_s: float) -> list[Message]:
    """Send ``messages`` and gather replies until all answered, ``timeout_s`` passed, or ``quorum`` replies are in
    and stragglers had ``straggler_s`` more seconds. A site that died mid-round therefore delays the round by at
    most ``straggler_s`` instead of stopping it (Flower notices a dead SuperNode only after ~60 s)."""
    if not messages:
        return []
    pending = set(grid.push_messages(messages))
    start = time.monotonic()
    quorum_at: float | None = None
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        now = time.monotonic()
        if not pending or now - start >= timeout_s:
            break
        ok = sum(1 for m in replies if not m.has_error())
        if quorum_at is None and ok >= quorum:
            quorum_at = now
        if quorum_at is not None and now - quorum_at >= straggler_s:
            break
        time.sleep(0.5)
    return replies


def run_federation(grid: Grid, cfg: FederationConfig, on_round: RoundCallback | None = None,
                   context: Context | None = None) -> list[dict[str, Any]]:
    """Run ``cfg.num_server_rounds`` rounds (minus those already in the registry); return per-round records."""
    registry = ModelRegistry(cfg.registry_dir or default_registry_dir())
    audit = registry.root / "audit.jsonl"
    arrays, first_round = _initial(cfg, registry)
    if cfg.fleet_prior:
        _release_fleet_prior(grid, cfg, registry.root)
    if cfg.secagg:
        if context is None:
            raise ValueError("secagg needs the ServerApp context")
        return _run_secagg(grid, context, cfg, registry, arrays, first_round, on_round)

    from infrabrain.coordinator.strategies import build_strategy

    strategy = build_strategy(cfg)
    site_cfg = cfg.site_config()
    history: list[dict[str, Any]] = []
    if first_round == 1 and cfg.fraction_evaluate > 0:
        history.append(_evaluate_initial(grid, cfg, strategy, arrays, registry, audit))
        if on_round is not None:
            on_round(history[-1])
    for rnd in range(first_round, cfg.num_server_rounds + 1):
        t0 = time.monotonic()
        spec = model_spec(arrays)
        round_cfg = {**site_cfg, "rounds-left": math.ceil((cfg.num_server_rounds - rnd + 1) * cfg.fraction_train)}
        train_msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(dict(round_cfg)), grid))
        replies = collect_replies(grid, train_msgs, cfg.round_timeout_s, cfg.min_train_sites, cfg.straggler_timeout_s)
        train_check = inspect_replies(replies, "train", spec, rnd, audit, sent=train_msgs)
        agg_arrays, train_metrics = None, None
        if train_check.accepted:
            try:
                agg_arrays, train_metrics = strategy.aggregate_train(rnd, train_check.accepted)
            except Exception as exc:  # noqa: BLE001 - a bad round must not stop the federation
                log.error("aggregation failed; keeping the previous global model",
                          extra={"round": rnd, "error": f"{type(exc).__name__}: {exc}"})
        if agg_arrays is not None:
            arrays = agg_arrays
        eval_metrics, eval_check = None, None
        if cfg.fraction_evaluate > 0:
            eval_msgs = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(dict(round_cfg)), grid))
            eval_replies = collect_replies(grid, eval_msgs, cfg.round_timeout_s, cfg.min_train_sites,
                                           cfg.straggler_timeout_s)
            eval_check = inspect_replies(eval_replies, "evaluate", spec, rnd, audit, sent=eval_msgs)
            eval_metrics = weighted_metrics(eval_check.accepted)
        record = {
            "round": rnd,
            "sites_sampled": len(train_msgs),
            "sites_aggregated": len(train_check.accepted) if agg_arrays is not None else 0,
            "sites_rejected": len(train_check.rejected),
            "sites_failed": len(train_check.failed),
            "sites_evaluated": len(eval_check.accepted) if eval_check else 0,
            "train": _num(train_metrics),
            "eval": _num(eval_metrics),
            "eps_max": _max_metric(train_check.accepted, "epsilon"),
            "round_s": round(time.monotonic() - t0, 3),
            "aggregated": agg_arrays is not None,
        }
        keys = list(arrays.keys())
        registry.save(rnd, arrays.to_numpy_ndarrays(), {**_fingerprint(cfg), **record}, keys=keys)
        history.append(record)
        log.info("round complete", extra={k: v for k, v in record.items() if not isinstance(v, dict)} |
                 {f"eval_{k}": v for k, v in record["eval"].items()})
        if on_round is not None:
            on_round(record)
    if history:
        log.info("federation finished", extra={"rounds": len(history),
                                               "median_round_s": statistics.median(h["round_s"] for h in history)})
    return history


def _release_fleet_prior(grid: Grid, cfg: FederationConfig, registry_root: Path) -> None:
    """Release the fleet root prior once per registry, before training (its ledger charge comes before the
    rounds calibrate their noise to the remaining budget); a release that cannot complete is logged and the
    federation trains without it. A resumed federation sends the published prior again instead."""
    from infrabrain.coordinator.fleet_prior_round import (ReleaseAborted, published_prior, release_fleet_root_prior,
                                                          republish)

    deadline = time.monotonic() + cfg.round_timeout_s
    while len(list(grid.get_node_ids())) < cfg.min_available_sites and time.monotonic() < deadline:
        time.sleep(1.0)
    if published_prior(registry_root) is not None:
        log.info("fleet root prior already published; sent again, not released again",
                 extra={"registry": str(registry_root), "stored_at": republish(grid, cfg, registry_root)})
        return
    try:
        release_fleet_root_prior(grid, cfg, registry_root)
    except ReleaseAborted as exc:
        log.warning("fleet root prior not released", extra={"reason": str(exc)})


def _evaluate_initial(grid: Grid, cfg: FederationConfig, strategy: Any, arrays: ArrayRecord,
                      registry: ModelRegistry, audit: Path) -> dict[str, Any]:
    """Round 0: every sampled site evaluates the initial model, the baseline the rounds are compared with."""
    t0 = time.monotonic()
    round_cfg = {**cfg.site_config(), "rounds-left": 0}
    msgs = list(strategy.configure_evaluate(0, arrays, ConfigRecord(dict(round_cfg)), grid))
    replies = collect_replies(grid, msgs, cfg.round_timeout_s, cfg.min_train_sites, cfg.straggler_timeout_s)
    check = inspect_replies(replies, "evaluate", model_spec(arrays), 0, audit, sent=msgs)
    record = {"round": 0, "sites_sampled": len(msgs), "sites_aggregated": 0, "sites_rejected": len(check.rejected),
              "sites_failed": len(check.failed), "sites_evaluated": len(check.accepted), "train": {},
              "eval": _num(weighted_metrics(check.accepted)), "eps_max": None,
              "round_s": round(time.monotonic() - t0, 3), "aggregated": False}
    registry.save(0, arrays.to_numpy_ndarrays(), {**_fingerprint(cfg), **record}, keys=list(arrays.keys()))
    return record


def _run_secagg(grid: Grid, context: Context, cfg: FederationConfig, registry: ModelRegistry, arrays: ArrayRecord,
                first_round: int, on_round: RoundCallback | None) -> list[dict[str, Any]]:
    """Flower's legacy SecAgg+ workflow: the coordinator only ever sees the sum of the masked updates."""
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from infrabrain.coordinator.strategies import build_legacy_fedavg

    keys = list(arrays.keys())
    offset = first_round - 1
    remaining = cfg.num_server_rounds - offset
    history: list[dict[str, Any]] = []
    if remaining <= 0:
        return history
    pending: dict[int, dict[str, Any]] = {}
    t_start = [time.monotonic()]

    def on_fit(rnd: int, nds: list[Any], metrics: dict[str, Any], n_sites: int) -> None:
        pending[rnd] = {"round": rnd + offset, "sites_aggregated": n_sites, "train": _num(metrics),
                        "eps_max": metrics.get("epsilon"), "aggregated": True, "secagg": True,
                        "_arrays": nds}

    def on_evaluate(rnd: int, metrics: dict[str, Any], n_sites: int) -> None:
        rec = pending.pop(rnd, {"round": rnd + offset, "aggregated": False, "secagg": True, "train": {}})
        nds = rec.pop("_arrays", None)
        rec.update(eval=_num(metrics), sites_evaluated=n_sites, round_s=round(time.monotonic() - t_start[0], 3))
        t_start[0] = time.monotonic()
        if nds is not None:
            registry.save(rec["round"], nds, {**_fingerprint(cfg), **rec}, keys=keys)
        history.append(rec)
        if on_round is not None:
            on_round(rec)

    strategy = build_legacy_fedavg(cfg, arrays.to_numpy_ndarrays(), on_fit=on_fit, on_evaluate=on_evaluate,
                                  round_offset=offset)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=remaining, round_timeout=cfg.round_timeout_s),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=cfg.secagg_num_shares, reconstruction_threshold=cfg.secagg_threshold,
        max_weight=100_000.0, clipping_range=cfg.secagg_clipping_range))
    workflow(grid, legacy)
    return history


def make_server_app(cfg: FederationConfig | None = None, on_round: RoundCallback | None = None) -> ServerApp:
    """A ServerApp bound to ``cfg``; with ``cfg=None`` it reads Flower's ``run_config`` (``flwr run .``)."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_cfg = cfg if cfg is not None else FederationConfig.from_run_config(context.run_config)
        run_federation(grid, run_cfg, on_round, context)

    return server_app


app = make_server_app()
