"""Per-site glue for federated rounds: load this site's data, train locally (with DP), evaluate locally.

Everything here runs at the site, inside the ClientApp process; raw telemetry and labels never leave it. What
leaves is decided by the ClientApp: model arrays and a few aggregate metrics.

The task is ``predictor``: the failure predictor (``infrabrain.models``) trained with DP-SGD through the
privacy ledger (``infrabrain.privacy``) on the site's own simulated telemetry (``infrabrain.simulation``); see
:mod:`infrabrain.client.predictor_task`. This module keeps the numpy/pydantic-only part (settings, result
types, dispatch) so that importing it is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infrabrain.logs import get_logger
from infrabrain.models.device import DeviceName  # torch-free

log = get_logger("client.local_training")


class SiteSettings(BaseModel):
    """Where a site's state lives and how it (simulated) gets its data. Node config overrides message config."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    partition_id: int = Field(0, ge=0)
    num_partitions: int = Field(1, ge=1)
    data_seed: int = 0
    site_gpus: int = Field(16, ge=1)
    site_hours: float = Field(168.0, gt=0)
    state_dir: str = ""
    data_dir: str = ""  # where the site's cached local data lives; default <state_dir>/local-data
    task: str = "predictor"
    device: DeviceName = Field("cpu", description="where this site trains and evaluates: cpu, cuda, cuda:N or "
                               "auto; the site's own choice (node config), never the coordinator's")
    published_prior_failures: int | None = Field(
        None, ge=0, description="weight, in pseudo-failures, of the published failure mix laid on the site's topology "
        "in its checkpoint's root prior (models.published_root_prior); None: that module's default; 0: left out; "
        "the site's own choice (node config), never the coordinator's")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else Path(self.state_dir) / "local-data"


#: Settings only the site's node config may set (a round config's value is ignored).
_SITE_ONLY = frozenset({"device", "published_prior_failures"})


def site_settings(node_config: Mapping[str, Any], round_config: Mapping[str, Any]) -> SiteSettings:
    """Merge the SuperNode's node config (the site's own word) over the round's config; validate both.

    ``device`` and ``published_prior_failures`` are read from the node config only: which hardware a site trains
    on, and what its root prior holds, are not the coordinator's call."""
    merged: dict[str, Any] = {}
    for src in (round_config, node_config):
        for k, v in src.items():
            key = k.replace("-", "_")
            if key in _SITE_ONLY and src is round_config:
                continue
            merged[key] = v
    if int(merged.get("partition_id", 0)) >= int(merged.get("num_partitions", 1)):
        raise ValueError(f"partition-id={merged.get('partition_id')} must be < num-partitions="
                         f"{merged.get('num_partitions')}")
    if not merged.get("state_dir"):
        root = merged.get("state_root") or os.path.join(os.environ.get("FLWR_HOME", "/tmp"), "infrabrain-sites")
        merged["state_dir"] = os.path.join(str(root), f"site-{int(merged.get('partition_id', 0)):04d}")
    return SiteSettings.model_validate(merged)


@dataclass
class TrainResult:
    """A site's local training outcome: new weights and the metrics allowed to leave."""

    weights: list[np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """A site's local evaluation: aggregate metrics only (never per-node scores)."""

    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch.


def initial_weights(task: str, cfg: Mapping[str, Any]) -> list[np.ndarray]:
    """The global model's starting arrays for ``task`` (the coordinator calls this once)."""
    if task == "predictor":
        from infrabrain.client.predictor_task import predictor_initial_weights

        return predictor_initial_weights(cfg)
    raise ValueError(f"unknown task {task!r}; expected 'predictor'")


def train(settings: SiteSettings, weights: list[np.ndarray], cfg: Mapping[str, Any]) -> TrainResult:
    """One local training run at this site for the current round."""
    if settings.task == "predictor":
        from infrabrain.client.predictor_task import predictor_train

        return predictor_train(settings, weights, cfg)
    raise ValueError(f"unknown task {settings.task!r}; expected 'predictor'")


def evaluate(settings: SiteSettings, weights: list[np.ndarray], cfg: Mapping[str, Any]) -> EvalResult:
    """Evaluate ``weights`` on this site's held-out data."""
    if settings.task == "predictor":
        from infrabrain.client.predictor_task import predictor_evaluate

        return predictor_evaluate(settings, weights, cfg)
    raise ValueError(f"unknown task {settings.task!r}; expected 'predictor'")
