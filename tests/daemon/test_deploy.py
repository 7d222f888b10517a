"""The operator files: the Grafana dashboard only uses metrics the daemon exports; the systemd unit runs the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from prometheus_client import generate_latest

from infrabrain.cli import build_parser
from infrabrain.client.collectors.base import CollectorHealth
from infrabrain.client.daemon import DaemonMetrics
from infrabrain.client.scoring import NodeRisk, RuleAlert

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_uses_only_exported_metrics() -> None:
    m = DaemonMetrics("lab")
    hot = RuleAlert("thermal", "temperature", "r00-n00-g1", "GPU r00-n00-g1 temperature over 85 C")
    m.update_risks([NodeRisk("r00-n00", "r00", 0.7, "thermal", "r00-n00-g1", "DCGM_FI_DEV_GPU_TEMP", 3.2,
                             rule_alerts=(hot,))])
    m.untrained_cause.labels("lab", "thermal").set(1.0)
    m.update_collector(CollectorHealth("nvml", up=True, last_success=1.0), 10, failed=False)
    m.alerts.labels("lab", "thermal").inc()
    m.epsilon_left.labels("lab").set(5.0)
    m.model_loaded.labels("lab").set(1)
    m.score_duration.labels("lab").set(0.1)
    m.update_anomaly([type("NodeAnomaly", (), {"node_id": "r00-n00", "score": 1.2})()])
    m.anomaly_threshold.labels("lab").set(10.0)
    m.kind_observed.labels("lab", "gpu").set(0.0)
    m.unknown_components.labels("lab").set(2.0)
    m.metric_observed.labels("lab", "node", "node_load1").set(0.0)
    exported = set(re.findall(r"^(infrabrain_[a-z_]+)", generate_latest(m.registry).decode(), flags=re.M))
    used = {name for expr in dashboard_exprs() for name in re.findall(r"infrabrain_[a-z_]+", expr)}
    assert used and used <= exported, used - exported
    for panel_title in ("Failure risk by rack", "Top at-risk nodes", "Collector health", "Incumbent rule alerts",
                        "Telemetry in the scored window", "Components the topology does not have",
                        "Metrics the model reads, missing"):
        assert panel_title in (DEPLOY / "grafana-dashboard.json").read_text()
    # the top-nodes table places every label of the cause gauge (source: the alert's sentence or the heuristic)
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    table = next(p for p in dash["panels"] if p["title"].startswith("Top at-risk nodes"))
    placed = next(t["options"]["indexByName"] for t in table["transformations"] if t["id"] == "organize")
    labels = {k for f in m.registry.collect() if f.name == "infrabrain_node_top_cause" for s in f.samples
              for k in s.labels}
    assert labels - {"site"} <= placed.keys(), labels - {"site"} - placed.keys()


def _exported_names(m: DaemonMetrics) -> set[str]:
    """Every series name the daemon's registry can export (a counter's with its ``_total``)."""
    fams = list(m.registry.collect())
    return {f.name for f in fams} | {f"{f.name}_total" for f in fams if f.type == "counter"}


def test_alerting_rules_are_valid_and_read_only_exported_metrics() -> None:
    """deploy/prometheus-alerts.yml: promtool accepts it, every series it reads is one the daemon exports, and
    ``promtool test rules`` passes tests/daemon/prometheus-alerts.test.yml, which tests every rule."""
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"infrabrain_[a-z_]+", e)}
    assert used and used <= _exported_names(DaemonMetrics("lab")), used - _exported_names(DaemonMetrics("lab"))
    if shutil.which("promtool") is None:
        pytest.skip("promtool (the prometheus package) is not installed")
    out = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus-alerts.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"SUCCESS: {len(exprs)} rules found" in out.stdout, out.stdout + out.stderr
    # Prometheus's own rule engine on made-up series: when each alert fires and what it says
    tests = Path(__file__).parent / "prometheus-alerts.test.yml"
    tested = {t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"] for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for g in rules["groups"] for r in g["rules"]}  # every rule has a unit test
    out = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus binary (Debian package)")
def test_a_real_prometheus_fires_the_node_at_risk_alert_with_the_daemons_cause(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path) -> None:
    """A real Prometheus scraping a real daemon's /metrics with deploy/prometheus-alerts.yml: each node at or above
    the threshold fires InfrabrainNodeAtRisk carrying the cause, component, metric and source that the daemon's
    /alerts gives it, its risk as the value, and the address of /alerts; the NVML collector (no driver here) is
    down and its alert pending, not firing, within its 5 minutes."""
    from _realprom import RulesPrometheus

    from infrabrain.client.config import load_site_config
    from infrabrain.client.daemon import Daemon

    topo = tmp_path / "topology.yaml"
    from infrabrain.cli import main as cli_main

    assert cli_main(["client", "topology-from-sim", str(small_dataset), "--out", str(topo)]) == 0
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({
        "site": "lab", "topology": "topology.yaml", "cadence_s": 60, "alert_threshold": 0.0,
        "store": {"path": "store.db"}, "metrics": {"host": "127.0.0.1", "port": 0},
        "model": {"checkpoint": str(small_checkpoint)},
        "collectors": {"nvml": {"node_id": "r00-n00"}, "replay": {"dataset": str(small_dataset), "speed": 300}}}))
    t0 = 1_800_000_000.0
    daemon = Daemon(load_site_config(tmp_path / "site.yaml"), now=t0)
    prom = None
    try:
        port = daemon.start_metrics_server()
        daemon.collect_once(t0 + 5)
        assert len(daemon.score_once(t0 + 5)) == 2  # threshold 0: both nodes at risk
        view = {n["node"]: n for n in daemon.alert_view()["nodes"]}
        (tmp_path / "prom").mkdir()
        prom = RulesPrometheus(tmp_path / "prom", {"infrabrain": f"127.0.0.1:{port}"},
                               [DEPLOY / "prometheus-alerts.yml"])
        prom.wait_ready()
        deadline = time.time() + 30
        alerts: list[dict] = []
        while time.time() < deadline:
            alerts = prom.alerts()
            firing = [a for a in alerts if a["labels"]["alertname"] == "InfrabrainNodeAtRisk"]
            if len(firing) == 2 and any(a["labels"]["alertname"] == "InfrabrainCollectorDown" for a in alerts):
                break
            time.sleep(0.5)
        at_risk = {a["labels"]["node"]: a for a in alerts if a["labels"]["alertname"] == "InfrabrainNodeAtRisk"}
        assert at_risk.keys() == view.keys() == {"r00-n00", "r00-n01"}, alerts
        for node, a in at_risk.items():
            n = view[node]
            assert a["state"] == "firing"
            # (Prometheus drops a label whose value is empty: a cause "none" names no component or metric)
            assert {k: a["labels"].get(k, "") for k in ("cause", "part", "component", "metric", "source", "rack",
                                                         "site")} == {
                "cause": n["cause"], "part": n["cause_part"] or "", "component": n["component"],
                "metric": n["metric"], "source": n["cause_source"], "rack": n["rack"], "site": "lab"}
            said = (f"likely {n['cause']}" + (f", the {n['cause_part']}" if n["cause_part"] else "")
                    + (f": {n['component']} {n['metric']}" if n["component"] else "")
                    if n["cause"] != "none" else "no single abnormal signal")
            assert a["annotations"]["description"].startswith(f"{said} (from the {n['cause_source']})")
            assert float(a["value"]) == pytest.approx(n["risk"], rel=1e-6)
            assert a["annotations"]["description"].endswith(f"http://127.0.0.1:{port}/alerts")
            assert a["annotations"]["summary"].startswith(f"{node} (rack r00, site lab) at risk {n['risk']:.2f}")
        down = [a for a in alerts if a["labels"]["alertname"] == "InfrabrainCollectorDown"]
        assert [(a["labels"]["collector"], a["state"]) for a in down] == [("nvml", "pending")]
        assert not [a for a in alerts if a["labels"]["alertname"] in ("InfrabrainScoringStale", "InfrabrainNoModel",
                                                                       "InfrabrainStoreErrors")]
    finally:
        if prom is not None:
            prom.close()
        daemon.close()


def test_systemd_unit_runs_the_real_cli() -> None:
    unit = (DEPLOY / "infrabrain-client.service").read_text()
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_line.split()[1:]
    assert argv[:2] == ["client", "run"]
    args = build_parser().parse_args(argv)
    assert args.config == "/etc/infrabrain/site.yaml" and callable(args.handler)
    assert "KillSignal=SIGTERM" in unit


def test_example_configs_are_valid() -> None:
    from infrabrain.client.collectors.prometheus import load_mapping
    from infrabrain.client.config import load_site_config
    from infrabrain.client.topology_file import load_topology

    cfg = load_site_config(DEPLOY / "site.example.yaml")
    topo = load_topology(cfg.topology)
    assert len(topo.ids("gpu")) == 32 and cfg.collectors.prometheus is not None
    mapping = load_mapping(cfg.collectors.prometheus.mapping)
    # the kinds the example declares unmonitored are exactly those its mapping sends nothing of
    has = {k for k in ("leaf", "spine", "pdu", "cooling", "rack") if topo.ids(k)}
    assert set(cfg.unmonitored_kinds) == has - {s.kind for s in mapping.series}
    assert mapping.label_values["instance"]["10.0.0.10:9100"] in topo.ids("node")


def test_dcgm_exporter_counters_file_lists_every_gpu_field_the_model_reads() -> None:
    """deploy/dcgm-exporter-counters.csv (dcgm-exporter's `-f` file) has exactly the GPU fields a model trained on
    the simulator's telemetry reads, each with the Prometheus type the encoder treats it as: dcgm-exporter's
    default file leaves five of them out, which the model then reads as missing in every window."""
    from infrabrain.client.collectors.prometheus import DCGM_EXPORTER_DEFAULT_OFF, dcgm_counters_hint
    from infrabrain.models.features import is_counter, is_xid_code
    from infrabrain.simulation.telemetry import METRIC_NAMES

    rows = [[c.strip() for c in line.split(",", 2)]
            for line in (DEPLOY / "dcgm-exporter-counters.csv").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert all(len(r) == 3 and r[2] for r in rows), rows
    fields = [r[0] for r in rows]
    assert len(fields) == len(set(fields)) and set(fields) == set(METRIC_NAMES["gpu"])
    for field, kind, _ in rows:
        assert kind == ("counter" if is_counter(field) else "gauge"), field
        assert not (is_xid_code(field) and kind == "counter")
    # the fields the daemon's hint sends an operator to this file for are among them, and only those get the hint
    assert set(DCGM_EXPORTER_DEFAULT_OFF) < set(fields)
    assert dcgm_counters_hint({"gpu": ["DCGM_FI_DEV_GPU_TEMP"], "node": ["node_load1"]}) is None
    assert "DCGM_FI_DEV_POWER_VIOLATION: start it" in dcgm_counters_hint({"gpu": ["DCGM_FI_DEV_POWER_VIOLATION"]})


def test_the_default_and_example_prometheus_mappings_give_every_field_the_model_reads() -> None:
    """The Prometheus collector's default mapping (no mapping file) and deploy's example mapping map every node
    metric the model reads, and every DCGM field through ``{__name__}``. The default had no InfiniBand port
    errors, the node metric network cascades are foretold by: a site without a mapping file scored every window
    without it."""
    from infrabrain.client.collectors.prometheus import default_mapping, load_mapping
    from infrabrain.simulation.telemetry import METRIC_NAMES

    for mapping in (default_mapping(), load_mapping(DEPLOY / "prometheus-mapping.example.yaml")):
        node = {s.metric for s in mapping.series if s.kind == "node"}
        assert set(METRIC_NAMES["node"]) <= node, set(METRIC_NAMES["node"]) - node
        assert any(s.kind == "gpu" and s.metric == "{__name__}" and "DCGM_FI_DEV_" in s.query
                   for s in mapping.series)
