"""The Prometheus collector against a REAL Prometheus scraping a real node_exporter and a DCGM-named exporter.

One Prometheus (1 s scrapes) serves every test in this module; the exporter serves the simulator's GPU
telemetry. Bad input: unknown metric, NaN, a counter reset, a gap, a rejected query, Prometheus down or slow.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _realprom import DcgmExporter, RealPrometheus, SlowServer, binaries_present  # noqa: E402

from infrabrain.client.collectors.base import CollectorError, CollectorHealth, run_collector  # noqa: E402
from infrabrain.client.collectors.prometheus import (  # noqa: E402
    PrometheusCollector,
    PrometheusMapping,
    SeriesMapping,
    default_mapping,
    load_mapping,
)
from infrabrain.client.store import TelemetryStore  # noqa: E402

pytestmark = pytest.mark.skipif(not binaries_present(), reason="needs the prometheus and prometheus-node-exporter "
                                "binaries (Debian packages; .ci/run installs them)")

COUNTER = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"


@pytest.fixture(scope="module")
def site(small_run, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    run = small_run
    gpu_ids = list(run.topology.ids["gpu"])
    names = list(run.metric_names["gpu"])
    values = np.asarray(run.metrics["gpu"])[:30]
    dcgm = DcgmExporter(gpu_ids, names, values, period_s=1.0)
    dcgm.extra["DCGM_FI_DEV_NOT_A_REAL_FIELD"] = 1.0
    dcgm.nan_for.add((gpu_ids[1], "DCGM_FI_DEV_GPU_TEMP"))
    if COUNTER in names:
        dcgm.reset_counter = (gpu_ids[0], COUNTER)
    prom = RealPrometheus(tmp_path_factory.mktemp("prom"), dcgm)
    try:
        prom.wait_ready()
        prom.wait_samples("DCGM_FI_DEV_GPU_TEMP", 3)
        prom.wait_samples("node_load1", 3)
        yield {"prom": prom, "dcgm": dcgm, "gpu_ids": gpu_ids, "names": names, "values": values}
    finally:
        prom.close()
        dcgm.close()


def _mapping(prom: RealPrometheus) -> PrometheusMapping:
    base = default_mapping({prom.node_instance: "lab-r00-n00"}, step_s=1)
    return base


def test_ingests_dcgm_and_node_exporter_through_the_real_server(site, tmp_path: Path) -> None:  # noqa: ANN001
    prom, gpu_ids, names, values = site["prom"], site["gpu_ids"], site["names"], site["values"]
    collector = PrometheusCollector(prom.url, _mapping(prom), timeout_s=5, initial_lookback_s=20)
    health = CollectorHealth("prometheus")
    result = run_collector(collector, health)
    assert health.up, health.last_error
    df_gpu = {(c, m) for c, m in zip(result.samples.component_id, result.samples.metric)}
    assert {(g, "DCGM_FI_DEV_GPU_TEMP") for g in gpu_ids} <= df_gpu
    # values are exactly what the exporter served (float32 simulator values), mapped to the right GPU/metric
    j = names.index("DCGM_FI_DEV_POWER_USAGE")
    for c, m, v in zip(result.samples.component_id, result.samples.metric, result.samples.value):
        if m == "DCGM_FI_DEV_POWER_USAGE":
            served = values[:, gpu_ids.index(c), j]
            assert np.isclose(served, v, rtol=1e-6, equal_nan=True).any(), (c, v)
    # node_exporter series land on the node the mapping names
    assert ("lab-r00-n00", "node_load1") in df_gpu and ("lab-r00-n00", "node_memory_MemAvailable_bytes") in df_gpu
    # bad input is reported, not raised: the unknown metric and the NaN
    text = " ".join(result.warnings)
    assert "unknown metric 'DCGM_FI_DEV_NOT_A_REAL_FIELD'" in text
    assert "NaN/Inf values from Prometheus stored as missing" in text
    with TelemetryStore(tmp_path / "s.db") as store:
        assert store.ingest(result.samples) == len(result.samples)
        temps = store.read_samples(0, 2**40, kind="gpu", metrics=["DCGM_FI_DEV_GPU_TEMP"])
        assert temps.loc[temps["component_id"] == gpu_ids[1], "value"].isna().all()
        assert temps.loc[temps["component_id"] == gpu_ids[0], "value"].notna().all()


def test_gap_in_a_series_stays_a_gap(site) -> None:  # noqa: ANN001
    prom, dcgm, gpu_ids = site["prom"], site["dcgm"], site["gpu_ids"]
    util = "DCGM_FI_DEV_GPU_UTIL"
    mapping = PrometheusMapping(step_s=1, series=[SeriesMapping(query=util, metric=util, kind="gpu",
                                                                component="{Hostname}-g{gpu}")])
    dcgm.hidden.add(gpu_ids[3])
    time.sleep(6.0)  # several scrapes without the series (margin for a loaded CI machine): stale in Prometheus
    dcgm.hidden.clear()
    time.sleep(2.0)
    result = PrometheusCollector(prom.url, mapping, timeout_s=5, initial_lookback_s=15).collect(time.time())
    ts_hidden = sorted(t for t, c in zip(result.samples.t, result.samples.component_id) if c == gpu_ids[3])
    ts_other = sorted(t for t, c in zip(result.samples.t, result.samples.component_id) if c == gpu_ids[0])
    assert len(ts_hidden) < len(ts_other) - 1  # steps missing where the series was not scraped
    assert max(np.diff(ts_hidden)) >= 2


def test_counter_reset_is_kept_raw_and_corrected_on_read(site, tmp_path: Path) -> None:  # noqa: ANN001
    prom, gpu_ids = site["prom"], site["gpu_ids"]
    if COUNTER not in site["names"]:
        pytest.fail(f"the simulator no longer emits {COUNTER}; pick another counter for this test")
    mapping = PrometheusMapping(step_s=1, series=[SeriesMapping(query=COUNTER, metric=COUNTER, kind="gpu",
                                                                component="{Hostname}-g{gpu}")])
    prom.wait_samples(COUNTER, 9)  # enough history to hold at least one reset (every 4 s)
    collector = PrometheusCollector(prom.url, mapping, timeout_s=5, initial_lookback_s=12)
    result = collector.collect(time.time())
    with TelemetryStore(tmp_path / "s.db") as store:
        store.ingest(result.samples)
        end = max(result.samples.t) + 1
        raw = store.read_window("gpu", end - 12, end, 1, [gpu_ids[0]], [COUNTER], correct_counters=False)
        fixed = store.read_window("gpu", end - 12, end, 1, [gpu_ids[0]], [COUNTER])
    r, f = raw.values[:, 0, 0], fixed.values[:, 0, 0]
    assert (np.diff(r[np.isfinite(r)]) < 0).any(), "the exporter's counter reset should be visible raw"
    assert (np.diff(f[np.isfinite(f)]) >= 0).all()


def test_rejected_query_is_a_warning_and_others_still_ingest(site) -> None:  # noqa: ANN001
    prom = site["prom"]
    mapping = PrometheusMapping(step_s=1, series=[
        SeriesMapping(query="rate(DCGM_FI_DEV_GPU_TEMP[", metric="DCGM_FI_DEV_GPU_TEMP", kind="gpu",
                      component="{Hostname}-g{gpu}"),
        SeriesMapping(query="node_load1", metric="node_load1", kind="node", component="{instance}"),
        SeriesMapping(query="node_load1", metric="node_load1", kind="node", component="{no_such_label}"),
    ])
    result = PrometheusCollector(prom.url, mapping, timeout_s=5, initial_lookback_s=5).collect(time.time())
    text = " ".join(result.warnings)
    assert "Prometheus rejected query 'rate(DCGM_FI_DEV_GPU_TEMP['" in text
    assert "without label 'no_such_label'" in text
    assert set(result.samples.metric) == {"node_load1"}


def test_outage_is_backfilled_after_prometheus_returns(site) -> None:  # noqa: ANN001
    prom = site["prom"]
    mapping = PrometheusMapping(step_s=1, series=[SeriesMapping(query="node_load1", metric="node_load1",
                                                                kind="node", component="{instance}")])
    collector = PrometheusCollector(prom.url, mapping, timeout_s=5, initial_lookback_s=3)
    first = collector.collect(time.time())
    cursor = collector.cursor
    assert cursor is not None and len(first.samples) > 0
    collector.url = "http://127.0.0.1:1"  # Prometheus "down": connection refused
    time.sleep(1.1)  # so that there is a new step to ask for
    health = CollectorHealth("prometheus")
    run_collector(collector, health)
    assert not health.up and "unreachable" in health.last_error and collector.cursor == cursor
    time.sleep(2)
    collector.url = prom.url
    again = collector.collect(time.time())
    ts = sorted(set(again.samples.t))
    assert ts[0] == cursor + 1 and ts[-1] >= cursor + 3  # every step since the last success, none skipped
    assert ts == list(range(ts[0], ts[-1] + 1))


def test_a_restarted_daemon_backfills_the_time_it_was_down(site, small_dataset: Path,  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    import yaml

    from infrabrain.cli import main as cli_main
    from infrabrain.client.config import load_site_config
    from infrabrain.client.daemon import Daemon

    prom = site["prom"]
    assert cli_main(["client", "topology-from-sim", str(small_dataset), "--out", str(tmp_path / "topology.yaml")]) == 0
    mapping = PrometheusMapping(step_s=1, series=[SeriesMapping(query="node_load1", metric="node_load1",
                                                                kind="node", component="{instance}")],
                                label_values={"instance": {prom.node_instance: "r00-n00"}})
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping.model_dump()))
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({
        "site": "lab", "topology": "topology.yaml", "cadence_s": 1, "store": {"path": "store.db"},
        "metrics": {"port": 0},
        "collectors": {"prometheus": {"url": prom.url, "mapping": "mapping.yaml", "timeout_s": 5,
                                      "initial_lookback_s": 2}},
    }))
    cfg = load_site_config(tmp_path / "site.yaml")
    first = Daemon(cfg)
    try:
        assert first.collect_once() > 0
        stopped_at = first.collectors[0].cursor
    finally:
        first.close()
    time.sleep(5)  # the daemon is down for 5 s, longer than its 2 s initial look-back
    again = Daemon(cfg)
    try:
        assert again.collectors[0].cursor == stopped_at
        assert again.collect_once() > 0
        stored = sorted(set(again.store.read_samples(0, 2**40)["t"]))
    finally:
        again.close()
    # every step from the first pass's look-back to now, the 5 s the daemon was down included, and each once
    assert stored == list(range(stored[0], stored[-1] + 1)) and stored[-1] >= stopped_at + 5
    assert stopped_at - stored[0] <= 2


def test_slow_and_down_prometheus_give_clear_errors() -> None:
    mapping = PrometheusMapping(step_s=1, series=[SeriesMapping(query="up", metric="node_load1", kind="node",
                                                                component="{instance}")])
    slow = SlowServer(delay_s=3.0)
    try:
        t0 = time.perf_counter()
        with pytest.raises(CollectorError, match=r"did not answer within 0.5 s"):
            PrometheusCollector(slow.url, mapping, timeout_s=0.5).collect(time.time())
        assert time.perf_counter() - t0 < 2.5
    finally:
        slow.close()
    with pytest.raises(CollectorError, match="unreachable"):
        PrometheusCollector("http://127.0.0.1:1", mapping, timeout_s=1).collect(time.time())


def test_dashboard_queries_parse_on_the_real_server(site) -> None:  # noqa: ANN001
    import json
    import urllib.parse
    import urllib.request

    from test_deploy import dashboard_exprs

    for expr in dashboard_exprs():
        q = urllib.parse.quote(expr.replace("$site", "lab"))
        with urllib.request.urlopen(f"{site['prom'].url}/api/v1/query?query={q}", timeout=5) as r:
            assert json.loads(r.read())["status"] == "success", expr


def test_mapping_file_errors_name_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "map.yaml"
    p.write_text("series:\n  - {query: up, metric: DCGM_FI_DEV_GPU_TEMPERATURE, kind: gpu, component: '{gpu}'}\n")
    with pytest.raises(ValueError, match="unknown metric 'DCGM_FI_DEV_GPU_TEMPERATURE' for component kind 'gpu'"):
        load_mapping(p)
    p.write_text("series:\n  - {query: up, metric: node_load1, kind: node, component: fixed}\n")
    with pytest.raises(ValueError, match="uses no label"):
        load_mapping(p)
    p.write_text("series:\n  - {query: up, metric: '{__name__}', kind: node, component: '{instance}'}\n"
                 "label_values: {instance: {'a:9100': r00-n00}}\n")
    assert load_mapping(p).label_values["instance"]["a:9100"] == "r00-n00"
    with pytest.raises(ValueError, match="must start with http"):
        PrometheusCollector("localhost:9090", load_mapping(p))


def test_daemon_scores_from_the_real_prometheus(site, small_dataset: Path, small_checkpoint: Path,  # noqa: ANN001
                                                tmp_path: Path) -> None:
    import urllib.parse
    import urllib.request

    import yaml

    from infrabrain.cli import main as cli_main
    from infrabrain.client.config import load_site_config
    from infrabrain.client.daemon import Daemon

    prom = site["prom"]
    # the daemon scores once half of the model's 11 steps have data: wait for that much scraped history (already
    # there in file order; run alone, the module's Prometheus has only just started)
    prom.wait_samples("node_load1", 8)
    prom.wait_samples("DCGM_FI_DEV_GPU_TEMP", 8)
    assert cli_main(["client", "topology-from-sim", str(small_dataset), "--out", str(tmp_path / "topology.yaml")]) == 0
    mapping = default_mapping({prom.node_instance: "r00-n00"}, step_s=1)
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping.model_dump()))
    # this site scrapes every second, to fill the model's window in seconds: its model is one trained on 1 s steps
    # (the daemon refuses a model whose card names another cadence)
    ckpt = tmp_path / "ckpt-1s"
    shutil.copytree(small_checkpoint, ckpt)
    card = json.loads((ckpt / "model_card.json").read_text())
    (ckpt / "model_card.json").write_text(json.dumps({**card, "cadence_s": 1}))
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({
        "site": "lab", "topology": "topology.yaml", "cadence_s": 1, "alert_threshold": 1.0,
        "store": {"path": "store.db"}, "metrics": {"port": 0}, "model": {"checkpoint": str(ckpt)},
        "collectors": {"prometheus": {"url": prom.url, "mapping": "mapping.yaml", "timeout_s": 5,
                                      "initial_lookback_s": 30}},
    }))
    daemon = Daemon(load_site_config(tmp_path / "site.yaml"))
    try:
        assert daemon.collect_once() > 0
        assert daemon.health["prometheus"].up
        risks = daemon.score_once()
        assert [r.node_id for r in risks] == ["r00-n00", "r00-n01"]
        assert all(0.0 <= r.risk <= 1.0 for r in risks)
        gpu_window = daemon.buffer.window()[1]["gpu"]
        assert np.isfinite(gpu_window).any()
        # what the daemon says its window lacks is what this Prometheus has no series of: node_exporter runs here
        # without its edac, infiniband and diskstats collectors (hwmon depends on the host's sensors)
        missing = daemon.window_coverage()["fields_missing"]
        assert "gpu" not in missing
        for field in daemon.scorer.metric_names["node"]:  # type: ignore[union-attr]
            q = urllib.parse.quote(field)
            with urllib.request.urlopen(f"{prom.url}/api/v1/query?query={q}", timeout=5) as r:
                series = json.loads(r.read())["data"]["result"]
            assert (not series) == (field in missing.get("node", [])), field
        assert {"node_edac_correctable_errors_total", "node_infiniband_port_errors_received_total",
                "node_disk_io_time_seconds_total"} <= set(missing["node"])
    finally:
        daemon.close()
