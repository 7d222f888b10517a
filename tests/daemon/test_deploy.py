"""The operator files: the Grafana dashboard only uses metrics the daemon exports; the systemd unit runs the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from infrabrain.cli import build_parser
from infrabrain.client.collectors.base import CollectorHealth
from infrabrain.client.daemon import DaemonMetrics
from infrabrain.client.scoring import NodeRisk

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_uses_only_exported_metrics() -> None:
    m = DaemonMetrics("lab")
    m.update_risks([NodeRisk("r00-n00", "r00", 0.7, "thermal", "r00-n00-g1", "DCGM_FI_DEV_GPU_TEMP", 3.2)])
    m.update_collector(CollectorHealth("nvml", up=True, last_success=1.0), 10, failed=False)
    m.alerts.labels("lab", "thermal").inc()
    m.epsilon_left.labels("lab").set(5.0)
    m.model_loaded.labels("lab").set(1)
    m.score_duration.labels("lab").set(0.1)
    m.anomaly.labels("lab", "r00-n00").set(1.2)
    exported = set(re.findall(r"^(infrabrain_[a-z_]+)", generate_latest(m.registry).decode(), flags=re.M))
    used = {name for expr in dashboard_exprs() for name in re.findall(r"infrabrain_[a-z_]+", expr)}
    assert used and used <= exported, used - exported
    for panel_title in ("Failure risk by rack", "Top at-risk nodes", "Collector health"):
        assert panel_title in (DEPLOY / "grafana-dashboard.json").read_text()
    # the top-nodes table places every label of the cause gauge (source: the alert's sentence or the heuristic)
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    table = next(p for p in dash["panels"] if p["title"].startswith("Top at-risk nodes"))
    placed = next(t["options"]["indexByName"] for t in table["transformations"] if t["id"] == "organize")
    labels = {k for f in m.registry.collect() if f.name == "infrabrain_node_top_cause" for s in f.samples
              for k in s.labels}
    assert labels - {"site"} <= placed.keys(), labels - {"site"} - placed.keys()


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
    assert mapping.label_values["instance"]["10.0.0.10:9100"] in topo.ids("node")
