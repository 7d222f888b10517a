"""Start this site's Flower SuperNode: TLS to the coordinator's SuperLink, authenticated by the site's EC key.

``infrabrain client run --config site.yaml`` calls :func:`start_supernode` when ``site.yaml`` has a
``federation:`` section, whose keys are the fields of :class:`SupernodeConfig`, for example::

    federation:
      superlink: vendor.example.com:9200
      root_certificates: /etc/infrabrain/ca.crt
      auth_private_key: /etc/infrabrain/site-key        # OpenSSH EC key; its .pub is registered by the vendor
      state_dir: /var/lib/infrabrain/federation         # privacy ledger, cached local data, latest global model
      port: 9211                                        # local ClientApp runtime port (one per SuperNode on a host)

The SuperNode runs the ClientApp (``infrabrain.client.flower_client_app``) for every message; the site's raw data
stays in ``state_dir`` and what leaves is checked at the boundary.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrabrain.coordinator.flower_env import flower_bin, flower_env, spawn
from infrabrain.logs import get_logger
from infrabrain.models.device import DeviceName

log = get_logger("client.supernode")

_ADDR_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class SupernodeConfig(BaseModel):
    """The ``federation:`` section of site.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    superlink: str = Field(description="host:port of the coordinator's SuperLink (Fleet API)")
    root_certificates: Path = Field(description="CA certificate that signed the SuperLink's certificate (PEM)")
    auth_private_key: Path = Field(description="this site's OpenSSH EC private key (P-384)")
    state_dir: Path = Field(description="site-local state: privacy ledger, cached data, latest global model")
    host: str = "127.0.0.1"
    port: int = Field(9094, ge=1, le=65535, description="local ClientApp runtime port")
    partition_id: int = Field(0, ge=0, description="which simulated site to be (simulation/demo only)")
    num_partitions: int = Field(1, ge=1)
    data_seed: int = 0
    site_gpus: int | None = Field(None, ge=1, description="simulated site size (overrides the coordinator's)")
    site_hours: float | None = Field(None, gt=0)
    flwr_home: Path | None = Field(None, description="Flower's own config/state dir; default state_dir/flwr")
    log_file: Path | None = None
    max_retries: int | None = Field(None, ge=0, description="reconnect attempts before giving up (None: forever)")
    device: DeviceName = Field("cpu", description="where this site trains: cpu, cuda, cuda:N or auto (a GPU if "
                               "the ClientApp's torch sees one)")
    fleet_prior: bool = Field(True, description="take part in the fleet root prior's release (False: decline it; "
                              "the site still receives the published prior)")
    fleet_prior_min_honest: int | None = Field(None, ge=1, description="how many honest sites this site counts on "
                                               "in the fleet prior's secure sum: it adds sigma / sqrt(this), so a "
                                               "coordinator that invents sites cannot shrink its noise (1: its own "
                                               "noise alone covers it). None: the sum's threshold (docs/threat-model"
                                               ".md)")
    published_prior_failures: int | None = Field(None, ge=0, description="weight, in pseudo-failures, of the "
                                                 "published failure mix in the site's root prior (0: left out; "
                                                 "None: the default, models.published_root_prior)")

    @field_validator("superlink")
    @classmethod
    def _validate_superlink(cls, v: str) -> str:
        if not _ADDR_RE.match(v):
            raise ValueError(f"superlink must be host:port, got {v!r}")
        return v

    @field_validator("root_certificates", "auth_private_key")
    @classmethod
    def _validate_file(cls, p: Path) -> Path:
        if not Path(p).is_file():
            raise ValueError(f"file {str(p)!r} does not exist")
        return Path(p)

    def node_config(self) -> str:
        """The ``--node-config`` string: the site's own settings, read by the ClientApp."""
        items: dict[str, object] = {"partition-id": self.partition_id, "num-partitions": self.num_partitions,
                                    "data-seed": self.data_seed, "state-dir": str(self.state_dir.resolve())}
        if self.site_gpus is not None:
            items["site-gpus"] = self.site_gpus
        if self.site_hours is not None:
            items["site-hours"] = float(self.site_hours)
        if self.device != "cpu":
            items["device"] = self.device
        if not self.fleet_prior:
            items["fleet-prior"] = False
        if self.fleet_prior_min_honest is not None:
            items["fleet-prior-min-honest"] = self.fleet_prior_min_honest
        if self.published_prior_failures is not None:
            items["published-prior-failures"] = self.published_prior_failures
        return " ".join(f"{k}={json.dumps(v)}" for k, v in items.items())


def start_supernode(cfg: SupernodeConfig) -> subprocess.Popen:
    """Start ``flower-supernode`` for this site (returns at once; the process reconnects on its own)."""
    if cfg.partition_id >= cfg.num_partitions:
        raise ValueError(f"partition_id={cfg.partition_id} must be < num_partitions={cfg.num_partitions}")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    home = cfg.flwr_home or (cfg.state_dir / "flwr")
    cmd = [flower_bin("flower-supernode"),
           "--root-certificates", str(cfg.root_certificates),
           "--superlink", cfg.superlink,
           "--auth-supernode-private-key", str(cfg.auth_private_key),
           "--host", cfg.host, "--port", str(cfg.port),
           "--node-config", cfg.node_config()]
    if cfg.max_retries is not None:
        cmd += ["--max-retries", str(cfg.max_retries)]
    proc = spawn(cmd, flower_env(home), cfg.log_file)
    log.info("supernode started", extra={"pid": proc.pid, "superlink": cfg.superlink, "port": cfg.port})
    return proc


class SupernodeSupervisor:
    """Keeps this site's SuperNode running: restarts it (after ``restart_delay_s``) whenever it exits.

    A SuperNode that crashed or was killed cannot re-activate until the SuperLink has noticed the old session is
    gone (missed heartbeats, about a minute); until then it exits with code 305 ("Failed to activate SuperNode")
    and the supervisor simply tries again. The daemon uses this so that a site rejoins the federation on its own.
    """

    def __init__(self, cfg: SupernodeConfig, restart_delay_s: float = 10.0) -> None:
        import threading

        if restart_delay_s < 0:
            raise ValueError(f"restart_delay_s must be >= 0, got {restart_delay_s}")
        self.cfg = cfg
        self.restart_delay_s = restart_delay_s
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="supernode-supervisor", daemon=True)

    @property
    def proc(self) -> subprocess.Popen | None:
        """The SuperNode process running now (None between restarts)."""
        with self._lock:
            return self._proc

    def start(self) -> SupernodeSupervisor:
        with self._lock:
            self._proc = start_supernode(self.cfg)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            log.warning("supernode exited; restarting", extra={"code": proc.returncode,
                                                              "delay_s": self.restart_delay_s})
            if self._stop.wait(self.restart_delay_s):
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = start_supernode(self.cfg)
                self.restarts += 1

    def stop(self) -> None:
        """Stop supervising and stop the SuperNode (and what it spawned)."""
        from infrabrain.coordinator.flower_env import stop

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            stop(self._proc)
            self._proc = None
