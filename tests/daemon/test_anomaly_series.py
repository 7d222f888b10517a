"""The label-free anomaly score on the daemon's real /metrics: replay of a simulated site in which one node's
metrics are perturbed near the end; the HDC scorer is fitted from the daemon's own store, the gauge is scraped
over HTTP, the perturbed node scores above the normal one and is alerted with its top metrics; too little
history gives no series (and a logged reason); a restart loads the saved scorer."""

from __future__ import annotations

import copy
import logging
import math
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from infrabrain.cli import main as cli_main
from infrabrain.client.config import load_site_config
from infrabrain.client.daemon import Daemon

T0 = 1_800_000_000.0
SPEED = 300.0  # simulated seconds per wall second of the replay
BAD_NODE = "r00-n01"
PERTURB_MIN = 20  # the last 20 simulated minutes of BAD_NODE are perturbed


@pytest.fixture(scope="module")
def perturbed_dataset(small_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small site's run with BAD_NODE running 25 degrees hotter and 4x as loaded in its last minutes."""
    from infrabrain.simulation.storage import write_sites

    run = copy.copy(small_run)
    run.metrics = dict(small_run.metrics)
    node = np.array(small_run.metrics["node"], dtype=np.float64, copy=True)
    names = list(small_run.metric_names["node"])
    i = list(small_run.topology.ids["node"]).index(BAD_NODE)
    tail = slice(node.shape[0] - PERTURB_MIN, None)
    node[tail, i, names.index("node_hwmon_temp_celsius")] += 25.0
    node[tail, i, names.index("node_load1")] *= 4.0
    run.metrics["node"] = node.astype(small_run.metrics["node"].dtype)
    out = tmp_path_factory.mktemp("anomaly-sim") / "dataset"
    write_sites([run], out)
    return out


def _site_yaml(tmp: Path, dataset: Path, **anomaly: Any) -> Path:
    topo = tmp / "topology.yaml"
    assert cli_main(["client", "topology-from-sim", str(dataset), "--out", str(topo)]) == 0
    doc = {"site": "lab", "topology": "topology.yaml", "cadence_s": 60,
           "store": {"path": "store.db", "retention_days": 3650},
           "metrics": {"host": "127.0.0.1", "port": 0},
           "collectors": {"replay": {"dataset": str(dataset), "speed": SPEED, "start_epoch": T0}},
           "anomaly": {"kind": "hdc", "fit_minutes": 90, "min_fit_minutes": 30, "refit_every_minutes": 0,
                       "threshold": 8.0, "model_path": "anomaly.npz", **anomaly}}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _scrape_anomaly(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("infrabrain_node_anomaly_score{"):
            key, _, value = line.rpartition(" ")
            node = key.split('node="')[1].split('"')[0]
            out[node] = float(value)
    return out


def _wall(sim_minutes: float) -> float:
    return T0 + sim_minutes * 60.0 / SPEED


def test_anomaly_gauge_on_metrics_flags_the_perturbed_node(tmp_path: Path, perturbed_dataset: Path, small_run: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infrabrain")
    n_min = len(small_run.timestamps)
    cfg = load_site_config(_site_yaml(tmp_path, perturbed_dataset))
    daemon = Daemon(cfg, now=T0)
    try:
        port = daemon.start_metrics_server()
        # 10 simulated minutes: too little history -> no series, and the log says why
        assert daemon.collect_once(_wall(10)) > 0
        daemon.score_once(_wall(10))
        assert _scrape_anomaly(port) == {}
        assert any(r.getMessage() == "not enough node history to fit the anomaly scorer yet" for r in caplog.records)
        # normal history up to 30 minutes before the end: fitted, every node scored, nothing unusual yet
        daemon.collect_once(_wall(n_min - PERTURB_MIN - 10))
        daemon.score_once(_wall(n_min - PERTURB_MIN - 10))
        normal = _scrape_anomaly(port)
        assert set(normal) == {"r00-n00", "r00-n01"}, normal
        assert all(math.isfinite(v) and 0.0 <= v < cfg.anomaly.threshold for v in normal.values()), normal
        assert (tmp_path / "anomaly.npz").is_file()
        # the rest of the replay: BAD_NODE's perturbed minutes arrive
        daemon.collect_once(_wall(n_min + 5))
        daemon.score_once(_wall(n_min + 5))
        late = _scrape_anomaly(port)
        assert set(late) == {"r00-n00", "r00-n01"} and all(math.isfinite(v) for v in late.values())
        assert late[BAD_NODE] > cfg.anomaly.threshold > late["r00-n00"], late
        assert late[BAD_NODE] > 3 * late["r00-n00"], late
        # the threshold the InfrabrainNodeAnomalous rule compares it with (deploy/prometheus-alerts.yml)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert f'infrabrain_anomaly_threshold{{site="lab"}} {cfg.anomaly.threshold}' in r.read().decode()
    finally:
        daemon.close()
    alerts = [r for r in caplog.records if r.getMessage() == "node behaves unlike its normal self"]
    assert [a.node for a in alerts] == [BAD_NODE]  # type: ignore[attr-defined]
    top = alerts[0].top_metrics  # type: ignore[attr-defined]
    assert len(top) == 3 and {"node_hwmon_temp_celsius", "node_load1"} <= set(top), top
    # restart: the saved scorer is loaded (no refit) and gives the same scores on the same store
    caplog.clear()
    again = Daemon(cfg, now=T0)
    try:
        assert any(r.getMessage() == "anomaly scorer loaded" for r in caplog.records)
        again.score_once(_wall(n_min + 5))
        assert not any(r.getMessage() == "anomaly scorer fitted" for r in caplog.records)
        reloaded = {a.node_id: a.score for a in again.last_anomalies}
        np.testing.assert_allclose([reloaded[n] for n in sorted(late)], [late[n] for n in sorted(late)], rtol=1e-4)
    finally:
        again.close()


def test_anomaly_section_is_validated(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    base = "site: lab\ntopology: t.yaml\ncollectors: {nvml: {}}\n"
    p.write_text(base + "anomaly: {kind: lstm}\n")
    with pytest.raises(ValueError, match="kind"):
        load_site_config(p)
    p.write_text(base + "anomaly: {threshold: -1}\n")
    with pytest.raises(ValueError, match="threshold"):
        load_site_config(p)
    p.write_text(base + "anomaly: {fit_minutes: 60, min_fit_minutes: 120}\n")
    with pytest.raises(ValueError, match="min_fit_minutes=120 exceeds"):
        load_site_config(p)
    p.write_text(base + "anomaly: {fit_minuts: 60}\n")
    with pytest.raises(ValueError, match="fit_minuts"):
        load_site_config(p)
    p.write_text(base + "anomaly: {model_path: m/anomaly.npz}\n")
    cfg = load_site_config(p)
    assert cfg.anomaly is not None and cfg.anomaly.kind == "hdc"
    assert cfg.anomaly.model_path == tmp_path / "m" / "anomaly.npz"


def test_corrupt_saved_scorer_is_refitted_not_trusted(tmp_path: Path, small_dataset: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infrabrain")
    (tmp_path / "anomaly.npz").write_bytes(b"not a scorer")
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset))
    daemon = Daemon(cfg, now=T0)
    try:
        assert any(r.getMessage() == "saved anomaly scorer unusable; refitting from the store" for r in caplog.records)
        daemon.collect_once(_wall(60))
        daemon.score_once(_wall(60))
        assert {a.node_id for a in daemon.last_anomalies} == {"r00-n00", "r00-n01"}
        assert any(r.getMessage() == "anomaly scorer fitted" for r in caplog.records)
    finally:
        daemon.close()


def test_error_counter_that_starts_climbing_saturates_the_score(tmp_path: Path) -> None:
    """A counter flat over the whole history (zero spread) that starts climbing: a capped, finite score."""
    from infrabrain.client.anomaly_job import SCORE_CAP, AnomalyJob
    from infrabrain.client.config import AnomalySection
    from infrabrain.client.records import SampleBatch
    from infrabrain.client.store import TelemetryStore

    rng = np.random.default_rng(0)
    t0, errs = 1_800_000_000, 0.0
    with TelemetryStore(tmp_path / "s.db") as store:
        batch = SampleBatch()
        for k in range(120):
            for node in ("a", "b"):
                batch.add(t0 + 60 * k, node, "node", "node_hwmon_temp_celsius", 50 + rng.normal())
                if node == "b" and k >= 110:
                    errs += 1000.0
                batch.add(t0 + 60 * k, node, "node", "node_network_receive_errs_total", errs if node == "b" else 0.0)
        store.ingest(batch)
        job = AnomalyJob(AnomalySection(fit_minutes=100, min_fit_minutes=30), ["a", "b"], 60, site="lab")
        assert job.fit(store, t0 + 60 * 100)
        got = {a.node_id: a for a in job.step(store)}
    assert got["b"].score == SCORE_CAP and got["b"].top_metrics[0][0] == "node_network_receive_errs_total"
    assert math.isfinite(got["a"].score) and got["a"].score < 1e-3 * SCORE_CAP  # noise only: far below the cap
