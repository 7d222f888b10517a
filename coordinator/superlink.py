"""Start the coordinator's Flower SuperLink (TLS always, SuperNode authentication on) and manage its allow-list.

The SuperLink serves the Fleet API (sites), the Control API (``flwr run``, ``flwr supernode register``) and the
ServerApp runtime on one HTTPS port. Runtime dependency installation is off: a run never pip/uv-installs anything.
Anyone who can reach the Control API can register SuperNode keys, so keep it on loopback or the vendor's network.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrabrain.coordinator.flower_env import flower_app_dir, flower_bin, flower_env, spawn, stop, wait_port
from infrabrain.logs import get_logger

log = get_logger("coordinator.superlink")


class SuperlinkConfig(BaseModel):
    """How to run the SuperLink; paths are checked before anything starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(9200, ge=1, le=65535)
    ca_cert: Path
    server_cert: Path
    server_key: Path
    flwr_home: Path
    database: Path | None = None  # SQLite state; None keeps state in memory
    enable_supernode_auth: bool = True
    log_file: Path | None = None
    connection_name: str = "infrabrain"

    @field_validator("ca_cert", "server_cert", "server_key")
    @classmethod
    def _validate_exists(cls, p: Path) -> Path:
        if not Path(p).is_file():
            raise ValueError(f"TLS file {str(p)!r} does not exist (create it with `infrabrain certs`)")
        return Path(p)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def write_connection(flwr_home: str | os.PathLike[str], name: str, address: str, ca_cert: str | os.PathLike[str],
                     make_default: bool = True) -> Path:
    """Write (or replace) ``[superlink.<name>]`` in ``$FLWR_HOME/config.toml`` so the flwr CLI can reach us."""
    import tomli_w

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from infrabrain.atomic import atomic_write_text

    path = Path(flwr_home) / "config.toml"
    data: dict = tomllib.loads(path.read_text()) if path.exists() else {}
    links = data.setdefault("superlink", {})
    links.setdefault("local", {"address": ":local:"})
    links[name] = {"address": address, "root-certificates": str(Path(ca_cert).resolve())}
    if make_default:
        links["default"] = name
    atomic_write_text(path, tomli_w.dumps(data))
    return path


def write_local_simulation(flwr_home: str | os.PathLike[str], num_supernodes: int, num_cpus: int = 1,
                           name: str = "local") -> Path:
    """Configure the ``local`` simulation connection (``flwr run .``): N virtual sites, ``num_cpus`` each."""
    import tomli_w

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    from infrabrain.atomic import atomic_write_text

    if num_supernodes < 1:
        raise ValueError(f"num_supernodes must be >= 1, got {num_supernodes}")
    path = Path(flwr_home) / "config.toml"
    data: dict = tomllib.loads(path.read_text()) if path.exists() else {}
    links = data.setdefault("superlink", {})
    links["default"] = name
    links[name] = {"address": ":local:", "options": {
        "num-supernodes": int(num_supernodes),
        "backend": {"client-resources": {"num-cpus": int(num_cpus), "num-gpus": 0.0}},
    }}
    atomic_write_text(path, tomli_w.dumps(data))
    return path


def start_superlink(cfg: SuperlinkConfig, timeout_s: float = 60.0) -> subprocess.Popen:
    """Start ``flower-superlink`` with TLS (+ SuperNode auth) and wait until its port answers."""
    cmd = [flower_bin("flower-superlink"),
           "--ssl-ca-certfile", str(cfg.ca_cert), "--ssl-certfile", str(cfg.server_cert),
           "--ssl-keyfile", str(cfg.server_key),
           "--disable-runtime-dependency-installation",
           "--host", cfg.host, "--port", str(cfg.port)]
    if cfg.enable_supernode_auth:
        cmd.append("--enable-supernode-auth")
    if cfg.database is not None:
        cmd += ["--database", str(cfg.database)]
    env = flower_env(cfg.flwr_home)
    write_connection(cfg.flwr_home, cfg.connection_name, cfg.address, cfg.ca_cert)
    proc = spawn(cmd, env, cfg.log_file)
    try:
        wait_port(cfg.host, cfg.port, timeout_s, proc)
    except BaseException:
        stop(proc)
        raise
    log.info("superlink started", extra={"pid": proc.pid, "address": cfg.address,
                                         "auth": cfg.enable_supernode_auth})
    return proc


def _flwr(args: list[str], flwr_home: str | os.PathLike[str], timeout_s: float = 60.0,
          cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([flower_bin("flwr"), *args], env=flower_env(flwr_home), capture_output=True, text=True,
                          timeout=timeout_s, cwd=cwd, check=False)


def register_supernode(public_key: str | os.PathLike[str], flwr_home: str | os.PathLike[str],
                       connection: str = "infrabrain") -> int:
    """Add a site's public key to the SuperLink's allow-list; returns the node id Flower assigned."""
    if not Path(public_key).is_file():
        raise FileNotFoundError(f"public key {str(public_key)!r} does not exist")
    res = _flwr(["supernode", "register", str(public_key), connection, "--format", "json"], flwr_home)
    try:
        payload = json.loads(res.stdout[res.stdout.index("{"):])
    except ValueError:
        payload = {}
    if res.returncode != 0 or not payload.get("success"):
        raise RuntimeError(f"registering {public_key} failed (exit {res.returncode}): "
                           f"{(res.stdout + res.stderr).strip()[-500:]}")
    return int(payload["node-id"])


def unregister_supernode(node_id: int, flwr_home: str | os.PathLike[str], connection: str = "infrabrain") -> None:
    """Remove a SuperNode from the allow-list (a running one is disconnected)."""
    res = _flwr(["supernode", "unregister", str(int(node_id)), connection], flwr_home)
    if res.returncode != 0:
        raise RuntimeError(f"unregistering node {node_id} failed: {(res.stdout + res.stderr).strip()[-500:]}")


def submit_run(app_dir: str | os.PathLike[str], flwr_home: str | os.PathLike[str], connection: str,
               run_config: dict[str, object] | None = None, stream: bool = True,
               log_path: str | os.PathLike[str] | None = None) -> subprocess.Popen:
    """``flwr run <app_dir> <connection> --run-config ... [--stream]`` as a child process (the ServerApp's run).

    An app directory whose name Flower refuses is staged under a valid name first (:func:`flower_app_dir`)."""
    app_dir = flower_app_dir(app_dir)
    args = [flower_bin("flwr"), "run", str(app_dir), connection]
    if run_config:
        args += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
    if stream:
        args.append("--stream")
    return spawn(args, flower_env(flwr_home), log_path, cwd=app_dir)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def stop_superlink(proc: subprocess.Popen) -> int | None:
    """SIGTERM the SuperLink and everything it spawned."""
    return stop(proc)
