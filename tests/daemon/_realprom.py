"""Real Prometheus + node_exporter + a DCGM-named exporter (prometheus_client) on loopback, for the tests.

Nothing here fakes a server: Prometheus and node_exporter are the Debian binaries started as subprocesses with a
config written to a temp dir; the DCGM exporter is prometheus_client's own HTTP server serving simulator values.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries_present() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("prometheus-node-exporter") is not None


class DcgmExporter:
    """Serves ``values[k, gpu, metric]`` as DCGM exporter series; ``k`` advances one row per ``period_s``.

    Knobs for bad-input tests: ``hidden`` GPU ids are not served (a gap), ``nan_for`` (gpu, metric) pairs are
    served as NaN, ``extra`` maps an unknown metric name to a value, ``reset_counter`` (gpu, metric) is served
    as a counter that drops back every 4 rows.
    """

    def __init__(self, gpu_ids: list[str], metric_names: list[str], values: np.ndarray, period_s: float = 1.0):
        self.gpu_ids, self.metric_names, self.values = gpu_ids, metric_names, values
        self.period_s = period_s
        self.t0 = time.time()
        self.hidden: set[str] = set()
        self.nan_for: set[tuple[str, str]] = set()
        self.extra: dict[str, float] = {}
        self.reset_counter: tuple[str, str] | None = None
        self.port = free_port()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def row(self) -> int:
        return int((time.time() - self.t0) / self.period_s) % self.values.shape[0]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        k = self.row()
        labels = ["gpu", "UUID", "device", "modelName", "Hostname"]
        for j, metric in enumerate(self.metric_names):
            fam = GaugeMetricFamily(metric, f"simulated {metric}", labels=labels)
            for i, gid in enumerate(self.gpu_ids):
                if gid in self.hidden:
                    continue
                host, _, idx = gid.rpartition("-g")
                value = float(self.values[k, i, j])
                if (gid, metric) in self.nan_for:
                    value = math.nan
                if self.reset_counter == (gid, metric):
                    value = float(k % 4)
                fam.add_metric([idx, f"GPU-{host}-{idx}", f"nvidia{idx}", "NVIDIA H100 80GB HBM3", host], value)
            yield fam
        for name, value in self.extra.items():
            fam = GaugeMetricFamily(name, "unknown to infrabrain", labels=labels)
            fam.add_metric(["0", "GPU-x", "nvidia0", "NVIDIA H100", self.gpu_ids[0].rpartition("-g")[0]], value)
            yield fam

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _PrometheusProcesses:
    """A Prometheus subprocess (and any exporters beside it) on loopback: start, wait until ready, stop."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.url = f"http://127.0.0.1:{self.port}"

    def _start_prometheus(self, config: str) -> None:
        """Write ``config`` as prometheus.yml and start Prometheus on it."""
        path = self.workdir / "prometheus.yml"
        path.write_text(config)
        self.procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "prometheus.log").open("w"),
        ))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode}: "
                                       f"{(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Prometheus did not become ready")

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class RulesPrometheus(_PrometheusProcesses):
    """Prometheus scraping ``targets`` (job -> host:port) every second and evaluating ``rule_files`` every second:
    the operator's alerting rules run by the real engine."""

    def __init__(self, workdir: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        super().__init__(workdir)
        jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['{addr}']}}]\n"
                       for job, addr in targets.items())
        self._start_prometheus(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
            f"rule_files: [{', '.join(repr(str(f)) for f in rule_files)}]\n"
            f"scrape_configs:\n{jobs}")

    def alerts(self) -> list[dict]:
        """The alerts Prometheus holds now (pending and firing), from its HTTP API."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=2) as r:
            return json.loads(r.read())["data"]["alerts"]


class RealPrometheus(_PrometheusProcesses):
    """Prometheus and node_exporter subprocesses scraping the DCGM exporter and node_exporter every second."""

    def __init__(self, workdir: Path, dcgm: DcgmExporter) -> None:
        super().__init__(workdir)
        self.node_port = free_port()
        self.procs.append(subprocess.Popen(
            ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{self.node_port}",
             "--collector.disable-defaults", "--collector.loadavg", "--collector.meminfo", "--collector.hwmon",
             "--collector.netdev", "--collector.filesystem"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        self._start_prometheus(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
            "scrape_configs:\n"
            f"  - job_name: dcgm\n    static_configs: [{{targets: ['127.0.0.1:{dcgm.port}']}}]\n"
            f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{self.node_port}']}}]\n"
        )
        self.node_instance = f"127.0.0.1:{self.node_port}"

    def wait_samples(self, query: str, n: int, timeout_s: float = 30.0) -> None:
        """Until ``query`` has at least ``n`` samples over the last minute (all targets scraped)."""
        deadline = time.time() + timeout_s
        q = urllib.parse.quote(f"min(count_over_time({query}[1m]))")
        while time.time() < deadline:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?query={q}", timeout=2) as r:
                res = json.loads(r.read())["data"]["result"]
            if res and float(res[0]["value"][1]) >= n:
                return
            time.sleep(0.25)
        raise RuntimeError(f"Prometheus never had {n} samples of {query}")


class SlowServer:
    """A real HTTP server that accepts and then answers only after ``delay_s`` (a Prometheus under load)."""

    def __init__(self, delay_s: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        delay = delay_s

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                time.sleep(delay)
                body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
