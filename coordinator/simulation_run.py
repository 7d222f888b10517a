"""Run the federation on Flower's simulation engine (Ray), in this process: ``infrabrain federate`` and the demo.

The ServerApp and ClientApp are the same objects ``flwr run .`` and the deployment path use; only the transport
differs. Each simulated site gets one CPU (``num_cpus=1``) so two sites train at once on two cores, simulates its
own telemetry from its partition id and seed, and keeps its privacy ledger under ``<work>/sites/site-NNNN``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.coordinator.flower_env import apply_quiet_env
from infrabrain.logs import get_logger

log = get_logger("coordinator.simulation_run")


@dataclass
class FederationReport:
    """Per-round records (as stored in the registry) and where everything was written."""

    config: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    registry_dir: str = ""
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "rounds": self.rounds, "registry_dir": self.registry_dir,
                "wall_s": self.wall_s}


def simulation_config(num_sites: int, rounds: int, sample: int | None, work_dir: str | os.PathLike[str],
                      **overrides: Any) -> FederationConfig:
    """FederationConfig for N simulated sites with ``sample`` of them trained per round."""
    if num_sites < 1:
        raise ValueError(f"--sites must be >= 1, got {num_sites}")
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    k = num_sites if sample is None else sample
    if not 1 <= k <= num_sites:
        raise ValueError(f"--sample must be in 1..{num_sites}, got {k}")
    work = Path(work_dir)
    base: dict[str, Any] = {
        "num-server-rounds": rounds,
        "fraction-train": k / num_sites,
        "fraction-evaluate": k / num_sites,
        "min-train-sites": k,
        "min-available-sites": num_sites,
        "registry-dir": str(work / "registry"),
        "state-root": str(work / "sites"),
    }
    base.update({key.replace("_", "-"): v for key, v in overrides.items() if v is not None})
    return FederationConfig.from_run_config(base)


def run_simulated_federation(cfg: FederationConfig, num_sites: int, work_dir: str | os.PathLike[str],
                             on_round: Callable[[dict[str, Any]], None] | None = None,
                             num_cpus_total: int | None = None, verbose: bool = False) -> FederationReport:
    """Federate ``num_sites`` simulated sites with ``cfg`` on the Ray simulation engine; return the rounds."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    apply_quiet_env(os.environ.get("FLWR_HOME") or work / "flwr")
    logging.getLogger("flwr").propagate = verbose  # Flower prints its own lines; don't duplicate them as JSON
    from flwr.simulation import run_simulation

    from infrabrain.client.flower_client_app import app as client_app
    from infrabrain.coordinator.server_app import make_server_app

    rounds: list[dict[str, Any]] = []

    def record(r: dict[str, Any]) -> None:
        rounds.append(r)
        if on_round is not None:
            on_round(r)

    cpus = num_cpus_total or max(1, min(os.cpu_count() or 1, 2))
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False,
                             "logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}}
    t0 = time.monotonic()
    run_simulation(server_app=make_server_app(cfg, on_round=record), client_app=client_app,
                   num_supernodes=num_sites, backend_config=backend, verbose_logging=verbose)
    report = FederationReport(cfg.model_dump(by_alias=True), rounds, cfg.registry_dir,
                              round(time.monotonic() - t0, 3))
    from infrabrain.atomic import atomic_write_text

    atomic_write_text(work / "federation.json", json.dumps(report.to_dict(), indent=2))
    _shutdown_ray()
    return report


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:  # pragma: no cover
        pass
