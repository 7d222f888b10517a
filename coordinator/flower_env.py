"""Environment and process helpers shared by every Flower process infrabrain starts.

Every SuperLink, SuperNode, ``flwr`` CLI call and simulation gets the same environment: its own ``FLWR_HOME``,
telemetry and update checks off, Ray usage stats off, and runtime dependency installation off (otherwise Flower
runs ``uv sync`` and may download gigabytes). Processes are started in their own session so that stopping one
also stops the children it spawned (SuperExec, ``flwr-serverapp``, ``flwr-clientapp``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from infrabrain.logs import get_logger

log = get_logger("coordinator.flower_env")

QUIET_ENV: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def flower_env(flwr_home: str | os.PathLike[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``os.environ`` with ``FLWR_HOME`` and the quiet/offline settings applied."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env["FLWR_HOME"] = str(home)
    # Flower starts helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name: our venv comes first.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if extra:
        env.update(extra)
    return env


def apply_quiet_env(flwr_home: str | os.PathLike[str] | None = None) -> None:
    """Set the quiet/offline variables in this process (for in-process simulation)."""
    os.environ.update(QUIET_ENV)
    if flwr_home is not None:
        Path(flwr_home).mkdir(parents=True, exist_ok=True)
        os.environ["FLWR_HOME"] = str(flwr_home)


def flower_bin(name: str) -> str:
    """Absolute path of a Flower console script (``flwr``, ``flower-superlink``, ...) next to this Python."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise FileNotFoundError(f"Flower executable {name!r} not found next to {sys.executable}")
    return str(candidate)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a currently unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections; raise if ``proc`` exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0] if proc.args else '?'} exited with {proc.returncode} "
                               f"before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")


def spawn(cmd: list[str], env: dict[str, str], log_path: str | os.PathLike[str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session, stdout+stderr to ``log_path`` (or inherited)."""
    out = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - owned by the child
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if out is not None:
            out.close()
    log.debug("started", extra={"pid": proc.pid, "cmd": " ".join(cmd[:2])})
    return proc


def stop(proc: subprocess.Popen | None, timeout_s: float = 10.0, kill: bool = False) -> int | None:
    """Stop ``proc`` and every process it spawned: SIGTERM (SIGKILL when ``kill``), SIGKILL after a timeout.

    Flower detaches some helpers into their own session (SuperExec), so descendants are collected by parentage
    (psutil) before the leader goes, not only by process group.
    """
    import psutil

    if proc is None:
        return None
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    sig = signal.SIGKILL if kill else signal.SIGTERM
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("process did not exit", extra={"pid": proc.pid})
    alive = [p for p in descendants if p.is_running()]
    for p in alive:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=3)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=3)
    return proc.returncode


_FLOWER_APP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
_APP_FILE_SUFFIXES = (".py", ".toml", ".md", ".yaml", ".json")  # what Flower packs into a FAB
_NOT_APP_DIRS = {".venv", ".git", "build", "dist", "runs", "reports", "tests", "__pycache__", ".pytest_cache"}


def flower_app_dir(app_dir: str | os.PathLike[str]) -> Path:
    """``app_dir`` if Flower accepts its name as an app name, else a copy of its app files under a valid name.

    Flower names the app after its directory and refuses names that do not start with a letter or contain
    anything but letters, digits and hyphens (max. 32): a checkout in ``infra_brain/`` or ``ci_check/`` could not
    be run. The copy (``<tmp>/infrabrain``: only the file types Flower packs, without virtualenvs, git data,
    tests or run outputs) is what gets bundled then. It is removed when this process exits (``flwr run`` has
    packed it by then, or the run was never submitted): each run had left one in the temp directory.
    """
    import atexit
    import shutil
    import tempfile

    src = Path(app_dir).expanduser().resolve()
    if _FLOWER_APP_NAME.fullmatch(src.name):
        return src
    dest = Path(tempfile.mkdtemp(prefix="infrabrain-app-")) / "infrabrain"
    atexit.register(shutil.rmtree, dest.parent, ignore_errors=True)

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in _NOT_APP_DIRS or n.endswith(".egg-info")
                or (Path(folder, n).is_file() and not n.endswith(_APP_FILE_SUFFIXES))]

    shutil.copytree(src, dest, ignore=ignore, symlinks=False)
    log.info("staged the Flower app under a valid name", extra={"source": str(src), "staged": str(dest)})
    return dest
