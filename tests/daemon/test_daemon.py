"""The daemon end to end: `infrabrain client run` as a real process replaying a simulated site, scoring with a
real predictor checkpoint, serving /metrics, NVML missing (it runs on), and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from infrabrain.cli import main as cli_main
from infrabrain.client.config import load_site_config
from infrabrain.client.daemon import UNKNOWN_NOTE, Daemon, RiskScorer
from infrabrain.client.scoring import NodeRisk, PredictorScorer, cause_of_metric
from infrabrain.client.store import TelemetryStore


def _site_yaml(tmp: Path, dataset: Path, checkpoint: Path | None, **extra: Any) -> Path:
    topo = tmp / "topology.yaml"
    assert cli_main(["client", "topology-from-sim", str(dataset), "--out", str(topo)]) == 0
    doc = {
        "site": "lab",
        "topology": "topology.yaml",
        "cadence_s": 60,
        "collect_interval_s": 0.3,
        "score_interval_s": 0.3,
        "alert_threshold": 0.0,  # every scored node alerts once: exercises the alert path
        "store": {"path": "store.db", "retention_days": 3650},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "collectors": {"nvml": {"node_id": "r00-n00"}, "replay": {"dataset": str(dataset), "speed": 300}},
        **extra,
    }
    if checkpoint is not None:
        doc["model"] = {"checkpoint": str(checkpoint)}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _silence(daemon: Daemon, kind: str, column: int | None = None) -> Any:
    """Make the daemon's window lack every reading of ``kind`` (or of its metric ``column``), as an exporter that
    sends none while the collector is fine. Returns the buffer's own ``window``, to put back."""
    window = daemon.buffer.window

    def silenced(*args: Any, **kw: Any) -> Any:
        ts, win = window(*args, **kw)
        values = win[kind].copy()
        values[..., slice(None) if column is None else column] = np.nan
        return ts, {**win, kind: values}

    daemon.buffer.window = silenced  # type: ignore[method-assign]
    return window


def test_daemon_process_scores_serves_metrics_and_stops_on_sigterm(tmp_path: Path, small_dataset: Path,
                                                                   small_checkpoint: Path) -> None:
    cfg = _site_yaml(tmp_path, small_dataset, small_checkpoint)
    env = {**os.environ, "INFRABRAIN_LOG": "info"}
    proc = subprocess.Popen([sys.executable, "-m", "infrabrain.cli", "client", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    lines: list[dict] = []
    port_box: list[int] = []

    def _read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"msg": line}
            lines.append(rec)
            if rec.get("msg") == "serving /metrics":
                port_box.append(int(rec["port"]))

    reader = threading.Thread(target=_read, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 60
        metrics: dict[str, float] = {}
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"daemon exited early with {proc.returncode}: {lines[-5:]}")
            if port_box:
                metrics = _scrape(port_box[0])
                view = json.loads(_get(port_box[0], "/alerts")[2])
                if sum(k.startswith("infrabrain_node_failure_risk{") for k in metrics) == 2 and view["nodes"]:
                    break
            time.sleep(0.3)
        risks = {k: v for k, v in metrics.items() if k.startswith("infrabrain_node_failure_risk{")}
        assert len(risks) == 2, f"no risk gauges; last log lines: {lines[-5:]}"
        assert all(0.0 <= v <= 1.0 for v in risks.values())
        assert any('node="r00-n01"' in k and 'rack="r00"' in k for k in risks)
        assert metrics['infrabrain_collector_up{collector="replay",site="lab"}'] == 1.0
        assert metrics['infrabrain_collector_up{collector="nvml",site="lab"}'] == 0.0  # no NVML here: runs on
        assert metrics['infrabrain_model_loaded{site="lab"}'] == 1.0
        assert sum(k.startswith("infrabrain_node_top_cause{") for k in metrics) == 2
        # /alerts beside /metrics: threshold 0, so both nodes, each with its sentence (issue 3 follow-up 41)
        assert {n["node"] for n in view["nodes"]} == {"r00-n00", "r00-n01"}
        assert all(n["explanation"].startswith(f"node {n['node']} at risk") for n in view["nodes"]), view
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    msgs = [r.get("msg") for r in lines]
    assert "daemon stopped cleanly" in msgs
    alerts = [r for r in lines if r.get("msg") == "node at risk of failing within the hour"]
    assert {a["node"] for a in alerts} == {"r00-n00", "r00-n01"}
    # the alert carries the predictor's own explanation sentence
    assert all(a["explanation"].startswith(f"node {a['node']} at risk") for a in alerts), alerts
    # and its three likeliest root components: the node, its GPUs or what it hangs on, never another node
    for a in alerts:
        roots = a["root_causes"].split(", ")
        assert len(set(roots)) == 3 and all(c.startswith(a["node"]) for c in roots if "-n" in c), a
        # and why the first is first: its score's parts (issue 3 follow-up 37)
        assert a["root_reason"].startswith(f"{roots[0]} (") and "prior" in a["root_reason"], a
    assert any(r.get("msg") == "NVML collector unavailable; continuing with the others" for r in lines)
    with TelemetryStore(tmp_path / "store.db", read_only=True) as store:
        info = store.info()
    assert info.integrity == "ok" and info.n_samples > 0 and info.n_series > 4


def test_in_process_cycle_restart_warms_from_store(tmp_path: Path, small_dataset: Path, small_checkpoint: Path,
                                                   small_run: Any) -> None:
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        assert isinstance(daemon.scorer, PredictorScorer) and isinstance(daemon.scorer, RiskScorer)
        assert daemon.score_once(t0) == []  # nothing collected yet: no scores, not invented ones
        assert daemon.collect_once(t0 + 0.2) > 0  # 60 simulated seconds: 2 of the window's 11 steps
        assert daemon.score_once(t0 + 0.2) == []  # a mostly empty window is not scored
        stored = daemon.collect_once(t0 + 5)  # 5 s at speed 300 = 25 simulated minutes
        assert stored > 0
        risks = daemon.score_once(t0 + 5)
        assert [r.node_id for r in risks] == ["r00-n00", "r00-n01"]
        assert all(r.explanation for r in risks)
        first = {r.node_id: r.risk for r in risks}
    finally:
        daemon.close()
    # restart: the window comes back from the store, so the same window gives the same scores at once
    again = Daemon(cfg, now=t0)
    try:
        again_risks = {r.node_id: r.risk for r in again.score_once(t0 + 5)}
        assert again_risks.keys() == first.keys()
        np.testing.assert_allclose(list(again_risks.values()), list(first.values()), rtol=1e-5)
    finally:
        again.close()


def test_a_corrupt_checkpoint_dropped_in_its_place_keeps_the_model_the_daemon_has(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated weights file where the checkpoint was (a copy cut short, a full disk) is refused by name and the
    daemon scores on with the model it had; the safetensors error had escaped the reload and stopped scoring."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, ckpt))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        loaded = daemon.scorer
        assert isinstance(loaded, PredictorScorer)
        daemon.collect_once(t0 + 5)
        before = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
        weights = ckpt / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        card = ckpt / "model_card.json"
        os.utime(card, (card.stat().st_atime, card.stat().st_mtime + 10))  # looks like a new checkpoint
        with caplog.at_level(logging.ERROR, logger="infrabrain.client.daemon"):
            after = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
        assert daemon.scorer is loaded and after == before
        refused = [r for r in caplog.records if r.getMessage() == "cannot load the predictor checkpoint; scoring "
                   "on with the model loaded before"]
        assert refused and "not a readable safetensors file" in refused[0].__dict__["error"]
    finally:
        daemon.close()


def test_an_exporter_gone_quiet_is_named_on_metrics_alerts_and_the_log(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A window without any GPU telemetry (the DCGM exporter down, the collector itself fine) is still scored,
    its GPUs counted as down, the documented masking; before, nothing told the operator the scores leaned on the
    rest. ``infrabrain_window_kind_observed`` goes to 0 for the kind, ``/alerts`` lists it, and one warning names
    it (none per cycle after); when the GPUs come back the gauge returns to 1 and one line says so."""
    from prometheus_client import generate_latest

    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 5)
        full = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}

        def observed(kind: str) -> float | None:
            text = generate_latest(daemon.metrics.registry).decode()
            m = re.search(rf'infrabrain_window_kind_observed{{kind="{kind}",site="{cfg.site}"}} (\S+)', text)
            return None if m is None else float(m.group(1))

        assert observed("gpu") == 1.0 and observed("node") == 1.0
        assert daemon.alert_view()["unobserved_kinds"] == []
        window = _silence(daemon, "gpu")
        with caplog.at_level(logging.INFO, logger="infrabrain.client.daemon"):
            quiet = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
            daemon.score_once(t0 + 5)
            daemon.buffer.window = window  # type: ignore[method-assign]
            back = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
        assert quiet.keys() == full.keys() and quiet != full  # scored, on the rest of the telemetry
        assert back == full
        warned = [r for r in caplog.records if r.getMessage().startswith("no telemetry of these component kinds")]
        assert len(warned) == 1 and warned[0].__dict__["kinds"] == "gpu"
        assert [r.__dict__["were_missing"] for r in caplog.records
                if r.getMessage() == "telemetry of every component kind is back in the window"] == ["gpu"]
        assert observed("gpu") == 1.0 and daemon.alert_view()["unobserved_kinds"] == []
        _silence(daemon, "gpu")
        daemon.score_once(t0 + 5)
        assert observed("gpu") == 0.0 and observed("node") == 1.0
        assert daemon.alert_view()["unobserved_kinds"] == ["gpu"]
        port = daemon.start_metrics_server()
        capfd.readouterr()
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
        assert ("\nno gpu telemetry in the scored window: every such component counts as down in these scores\n"
                in capfd.readouterr().out)
    finally:
        daemon.close()


def test_a_field_the_exporter_does_not_send_is_named_on_metrics_alerts_and_the_log(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """GPUs whose exporter sends every field but the single-bit ECC counter (the DCGM exporter's field list
    without it): the window is scored with the counter masked as missing, as before, and now said.
    ``infrabrain_window_metric_observed`` is 0 for that metric only, ``/alerts`` and ``client alerts`` name it,
    one warning names it over two cycles, and when it is back the gauge is 1 and one info line says so."""
    from prometheus_client import generate_latest

    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 5)
        full = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}

        def observed() -> dict[tuple[str, str], float]:
            text = generate_latest(daemon.metrics.registry).decode()
            pattern = rf'infrabrain_window_metric_observed{{kind="(\w+)",metric="(\w+)",site="{cfg.site}"}} (\S+)'
            return {(k, m): float(v) for k, m, v in re.findall(pattern, text)}

        names = daemon.scorer.metric_names  # type: ignore[union-attr]
        assert observed() == {(k, m): 1.0 for k in names for m in names[k]}
        assert daemon.alert_view()["unobserved_metrics"] == {}
        window = _silence(daemon, "gpu", names["gpu"].index(ecc))
        with caplog.at_level(logging.INFO, logger="infrabrain.client.daemon"):
            masked = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
            assert observed() == {(k, m): 0.0 if m == ecc else 1.0 for k in names for m in names[k]}
            assert daemon.alert_view()["unobserved_metrics"] == {"gpu": [ecc]}
            port = daemon.start_metrics_server()
            capfd.readouterr()
            assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
            assert (f"\nno value of {ecc} (gpu) in the scored window: scored as missing, where the training data "
                    "held them\n") in capfd.readouterr().out
            daemon.score_once(t0 + 5)
            daemon.buffer.window = window  # type: ignore[method-assign]
            back = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
        assert masked.keys() == full.keys() and back == full
        warned = [r for r in caplog.records if r.getMessage().startswith("no value of these metrics the model reads")]
        assert len(warned) == 1 and warned[0].__dict__["metrics"] == f"gpu: {ecc}"
        assert warned[0].__dict__["hint"] == (f"dcgm-exporter's default counters file leaves out {ecc}: start it "
                                              "with `dcgm-exporter -f dcgm-exporter-counters.csv` (infrabrain's "
                                              "deploy/ has the file)")
        assert [r.__dict__["were_missing"] for r in caplog.records
                if r.getMessage() == "every metric the model reads is back in the window"] == [f"gpu: {ecc}"]
        assert set(observed().values()) == {1.0} and daemon.alert_view()["unobserved_metrics"] == {}
    finally:
        daemon.close()


def test_a_field_the_model_never_learned_is_not_reported_missing(
        tmp_path: Path, small_dataset: Path, small_run: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint whose training data held no single-bit ECC value masks that field wherever it is sent, so a
    site that does not send it loses nothing: no warning, no ``infrabrain_window_metric_observed`` series for it,
    nothing under ``/alerts``' ``unobserved_metrics``, and ``collect-once`` does not list it."""
    import dataclasses

    import torch
    from prometheus_client import generate_latest

    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.gnn import build_model
    from infrabrain.models.snapshots import fit_normalizer

    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    fs = FeatureSet.from_run(small_run)
    norm = fit_normalizer([small_run], fs)
    norm = dataclasses.replace(norm, unlearned={"gpu": np.array([m == ecc for m in fs.metrics_of("gpu")])})
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_model(fs.f_max, window=10), fs, norm)
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, ckpt))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 5)
        _silence(daemon, "gpu", daemon.scorer.metric_names["gpu"].index(ecc))  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING, logger="infrabrain.client.daemon"):
            assert daemon.score_once(t0 + 5)
            coverage = daemon.window_coverage()
        assert not [r for r in caplog.records if r.getMessage().startswith("no value of these metrics")]
        text = generate_latest(daemon.metrics.registry).decode()
        assert f'metric="{ecc}"' not in text and 'metric="DCGM_FI_DEV_GPU_TEMP"' in text
        assert daemon.alert_view()["unobserved_metrics"] == {} and coverage["fields_missing"] == {}
    finally:
        daemon.close()


def test_a_kind_the_site_declares_unmonitored_is_scored_as_down_without_being_reported_gone_quiet(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A site with no exporter for its PDUs (site.yaml ``unmonitored_kinds: [pdu]``): the window without PDU
    telemetry is scored as any such window is, but no kind gauge, warning or ``unobserved_kinds`` entry says an
    exporter went quiet (its alert would fire for good); ``/alerts`` and ``client alerts`` say the site sends none."""
    from prometheus_client import generate_latest

    with caplog.at_level(logging.INFO, logger="infrabrain.client.daemon"):
        cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint, unmonitored_kinds=["pdu"]))
        t0 = 1_800_000_000.0
        daemon = Daemon(cfg, now=t0)
    try:
        assert [r.__dict__["kinds"] for r in caplog.records if r.getMessage().startswith(
            "site.yaml lists component kinds no collector sends")] == ["pdu"]
        daemon.collect_once(t0 + 5)
        _silence(daemon, "pdu")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="infrabrain.client.daemon"):
            assert daemon.score_once(t0 + 5)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "kinds" in r.__dict__]
        text = generate_latest(daemon.metrics.registry).decode()
        assert 'kind="pdu"' not in text and 'infrabrain_window_kind_observed{kind="gpu"' in text
        view = daemon.alert_view()
        assert view["unobserved_kinds"] == [] and view["unmonitored_kinds"] == ["pdu"]
        port = daemon.start_metrics_server()
        capfd.readouterr()
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
        out = capfd.readouterr().out
        assert ("\nthis site sends no pdu telemetry (site.yaml's unmonitored_kinds): every such component counts as "
                "down in these scores\n") in out and "no pdu telemetry in the scored window" not in out
    finally:
        daemon.close()


def test_a_reloaded_model_that_reads_a_kind_no_more_drops_its_observed_series(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, small_run: Any) -> None:
    """A new checkpoint whose feature set has no PDU metric: after the reload ``infrabrain_window_kind_observed``
    has no PDU series left (it had stayed at its last value, 1, for a kind nothing read any more), nor has
    ``infrabrain_window_metric_observed``, and the kinds the new model reads keep theirs."""
    import shutil

    import torch
    from prometheus_client import generate_latest

    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.gnn import build_model
    from infrabrain.models.snapshots import fit_normalizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, ckpt))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)

    def observed() -> dict[str, float]:
        text = generate_latest(daemon.metrics.registry).decode()
        return {k: float(v) for k, v in
                re.findall(rf'infrabrain_window_kind_observed{{kind="(\w+)",site="{cfg.site}"}} (\S+)', text)}

    try:
        daemon.collect_once(t0 + 5)
        assert daemon.score_once(t0 + 5)
        before = observed()
        assert before.get("pdu") == 1.0 and before.get("gpu") == 1.0
        full = FeatureSet.from_run(small_run)
        fs = FeatureSet(metrics={k: full.metrics_of(k) for k in full.kinds if k != "pdu"}, kinds=full.kinds)
        torch.manual_seed(0)
        shutil.rmtree(ckpt)
        save_checkpoint(ckpt, build_model(fs.f_max, window=10), fs, fit_normalizer([small_run], fs))
        card = ckpt / "model_card.json"
        os.utime(card, (card.stat().st_atime, card.stat().st_mtime + 10))  # newer than the model loaded
        assert daemon.score_once(t0 + 5)
        assert "pdu" not in daemon.scorer.metric_names  # type: ignore[union-attr]
        after = observed()
        assert "pdu" not in after and after == {k: v for k, v in before.items() if k != "pdu"}
        text = generate_latest(daemon.metrics.registry).decode()
        assert 'infrabrain_window_metric_observed{kind="gpu"' in text and 'kind="pdu"' not in text
    finally:
        daemon.close()


def test_telemetry_of_hardware_the_topology_lacks_is_named_stored_and_scored_once_the_topology_has_it(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A node the topology file does not have (added to the site, not to the file): its telemetry and its GPUs'
    were dropped from the window without a word, so it was never scored. Now ``infrabrain_unknown_components``
    counts them, one warning names them (not one per pass), ``/alerts`` and ``client alerts`` list them; the
    store keeps their samples, so once the topology has the node a restarted daemon scores it from them."""
    site_yaml = _site_yaml(tmp_path, small_dataset, small_checkpoint)
    topo_path = tmp_path / "topology.yaml"
    full_topology = topo_path.read_text()
    topo = yaml.safe_load(full_topology)
    topo["racks"][0]["nodes"] = [n for n in topo["racks"][0]["nodes"] if n["id"] != "r00-n01"]
    topo_path.write_text(yaml.safe_dump(topo))
    cfg = load_site_config(site_yaml)
    t0 = 1_800_000_000.0
    unknown = ["r00-n01", "r00-n01-g0", "r00-n01-g1"]
    daemon = Daemon(cfg, now=t0)
    try:
        with caplog.at_level(logging.INFO, logger="infrabrain.client.daemon"):
            daemon.collect_once(t0 + 5)
            daemon.collect_once(t0 + 10)
        warned = [r for r in caplog.records if r.getMessage() == UNKNOWN_NOTE]
        assert len(warned) == 1 and warned[0].__dict__["components"] == ", ".join(unknown)
        assert [r.node_id for r in daemon.score_once(t0 + 10)] == ["r00-n00"]
        port = daemon.start_metrics_server()
        assert _scrape(port)[f'infrabrain_unknown_components{{site="{cfg.site}"}}'] == 3.0
        view = daemon.alert_view()
        assert view["unknown_components"] == unknown and view["unknown_component_count"] == 3
        capfd.readouterr()
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
        assert ("\ntelemetry of 3 component(s) the topology does not have, not scored: r00-n01, r00-n01-g0, "
                "r00-n01-g1\n") in capfd.readouterr().out
    finally:
        daemon.close()
    topo_path.write_text(full_topology)
    daemon = Daemon(load_site_config(site_yaml), now=t0 + 10)
    try:
        window = daemon.buffer.window()[1]
        n01 = daemon.topology.ids("node").index("r00-n01")
        assert np.isfinite(window["node"][:, n01]).any()  # collected while unknown, kept by the store
        assert sorted(r.node_id for r in daemon.score_once(t0 + 10)) == ["r00-n00", "r00-n01"]
        daemon.collect_once(t0 + 15)
        assert daemon.alert_view()["unknown_component_count"] == 0
        assert daemon.metrics.registry.get_sample_value("infrabrain_unknown_components", {"site": "lab"}) == 0.0
    finally:
        daemon.close()


def _cause_labels(daemon: Daemon) -> dict[str, dict[str, str]]:
    """Each node's ``infrabrain_node_top_cause`` labels, as the daemon serves them."""
    return {s.labels["node"]: s.labels for m in daemon.metrics.registry.collect()
            if m.name == "infrabrain_node_top_cause" for s in m.samples if s.value == 1.0}


def test_an_at_risk_nodes_cause_on_metrics_is_its_alert_sentences_between_alerts_too(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node at or above the threshold: ``infrabrain_node_top_cause`` (and the alert log's and counter's cause)
    carry what its sentence says (the group it names, else its first quoted metric's; that component and metric;
    ``source="model"``), in the cycles between its alerts too. Before, the gauge kept the deviation heuristic's
    cause and signal, so the dashboard and the alert could name two causes for one node. Below the threshold the
    heuristic stays, ``source="signal"``."""
    from infrabrain.models import explain as explain_module

    monkeypatch.setattr(explain_module, "MIN_QUOTED_DROP", -np.inf)  # the tiny model's drops: quote them anyway
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        assert daemon.collect_once(t0 + 5) > 0
        with caplog.at_level("WARNING"):
            risks = daemon.score_once(t0 + 5)
        alerts = {r.node: r for r in caplog.records if r.getMessage() == "node at risk of failing within the hour"}
        assert alerts.keys() == {"r00-n00", "r00-n01"}  # threshold 0: both alert
        labels = _cause_labels(daemon)
        for r in risks:
            said = r.explanation
            assert r.cause_source == "model" and said == alerts[r.node_id].explanation
            named = re.search(r", likely (\w+)[ (,]", said)
            assert r.top_cause == (named[1] if named else cause_of_metric(r.metric)), said
            assert (f", the {r.cause_part}" in said) if r.cause_part else ", the " not in said.split(": ")[0]
            assert said.split(": ", 1)[1].split(" ", 2)[1] == r.component_id  # the first component quoted
            assert labels[r.node_id] == {"site": "lab", "node": r.node_id, "rack": "r00", "cause": r.top_cause,
                                         "part": r.cause_part, "component": r.component_id, "metric": r.metric,
                                         "source": "model"}
            assert alerts[r.node_id].cause == r.top_cause and alerts[r.node_id].cause_source == "model"
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert daemon.collect_once(t0 + 6) > 0
            daemon.score_once(t0 + 6)  # within REALERT_S: no second alert, the labels stay the sentence's
        assert not [r for r in caplog.records if r.getMessage() == "node at risk of failing within the hour"]
        assert {n: lab["source"] for n, lab in _cause_labels(daemon).items()} == {"r00-n00": "model",
                                                                                 "r00-n01": "model"}
    finally:
        daemon.close()
    quiet = Daemon(cfg.model_copy(update={"alert_threshold": 1.0}), now=t0)  # nobody at risk: the heuristic
    try:
        risks = quiet.score_once(t0 + 6)
        assert risks and all(r.cause_source == "signal" for r in risks)
        assert {lab["source"] for lab in _cause_labels(quiet).values()} == {"signal"}
    finally:
        quiet.close()


def test_an_alert_due_is_explained_before_a_riskier_node_already_alerted_and_its_end_is_logged(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scorer explains at most ``max_explained`` nodes a cycle. The alerts due come first, so a new alert's
    log line quotes its sentence even where riskier nodes, alerted before, are still at risk. A node that drops
    below the threshold logs "node no longer at risk" once."""
    from infrabrain.models import explain as explain_module

    monkeypatch.setattr(explain_module, "MIN_QUOTED_DROP", -np.inf)  # the tiny model's drops: quote them anyway
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 5)
        risks = sorted(daemon.scorer.score(daemon.buffer.window(steps=int(daemon.scorer.window_steps))[1]),
                       key=lambda r: -r.risk)
        riskier, lower = risks
        assert riskier.risk > lower.risk
        daemon.scorer.max_explained = 1
        daemon.cfg = cfg.model_copy(update={"alert_threshold": (riskier.risk + lower.risk) / 2})
        with caplog.at_level("WARNING"):
            daemon.score_once(t0 + 5)  # only the riskier node is at risk: it alerts
            daemon.cfg = cfg.model_copy(update={"alert_threshold": 0.0})
            daemon.score_once(t0 + 6)  # now the lower one is due too; the riskier one alerted a second ago
        alerts = [r for r in caplog.records if r.getMessage() == "node at risk of failing within the hour"]
        assert [a.node for a in alerts] == [riskier.node_id, lower.node_id]
        assert all(a.explanation.startswith(f"node {a.node} at risk") and a.cause_source == "model" for a in alerts)
        # below the threshold again (two cycles): each alert's end is logged once, with when it was last raised
        daemon.cfg = cfg.model_copy(update={"alert_threshold": 1.0})
        with caplog.at_level("INFO"):
            daemon.score_once(t0 + 7)
            daemon.score_once(t0 + 8)
        ended = [r for r in caplog.records if r.getMessage() == "node no longer at risk"]
        assert sorted((r.node, r.last_alert) for r in ended) == sorted([(riskier.node_id, t0 + 5),
                                                                         (lower.node_id, t0 + 6)])
    finally:
        daemon.close()


def test_the_cause_an_explained_node_carries_is_its_sentences(tmp_path: Path, small_dataset: Path,
                                                              small_checkpoint: Path) -> None:
    """The group the sentence names, else its first quoted metric's; that component and metric; a named group
    with nothing quoted points at no component; a sentence that quotes and names nothing keeps the heuristic."""
    from infrabrain.client.topology_file import load_topology
    from infrabrain.models.explain import Contribution, Explanation

    _site_yaml(tmp_path, small_dataset, None)
    scorer = PredictorScorer(small_checkpoint, load_topology(tmp_path / "topology.yaml"))
    gpu = scorer.feature_set.metrics_of("gpu")
    dev = np.zeros((scorer._graph.n, max(len(scorer.feature_set.metrics_of(k)) for k in scorer.feature_set.kinds)))
    g1 = int(list(scorer._graph.component_ids).index("r00-n00-g1"))
    dev[g1, gpu.index("DCGM_FI_DEV_PCIE_REPLAY_COUNTER")] = 4.5
    heuristic = NodeRisk("r00-n00", "r00", 0.9, "thermal", "r00-n00-g0", "DCGM_FI_DEV_GPU_TEMP", 2.0)
    pcie = Contribution(g1, "r00-n00-g1", "gpu", 1.5, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays +600")
    said = scorer._sentence_cause(Explanation("r00-n00", 0.9, [pcie], cause="other", cause_named="memory"),
                                  heuristic, dev)
    assert said == {"top_cause": "memory", "component_id": "r00-n00-g1", "metric": pcie.metric, "deviation": 4.5,
                    "cause_source": "model", "cause_part": ""}
    # "likely other (0.71), the GPU bus": the sentence's part (follow-up 42)
    other = scorer._sentence_cause(Explanation("r00-n00", 0.9, [pcie], cause="other", cause_named="other",
                                               cause_part="GPU bus"), heuristic, dev)
    assert (other["top_cause"], other["cause_part"]) == ("other", "GPU bus")
    # a sentence that names no group: its first quoted metric's group, and that metric's part (PCIe replays are
    # the GPU's bus, not the network)
    unnamed = scorer._sentence_cause(Explanation("r00-n00", 0.9, [pcie]), heuristic, dev)
    assert (unnamed["top_cause"], unnamed["cause_part"], unnamed["component_id"]) == ("other", "GPU bus",
                                                                                      "r00-n00-g1")
    # ... an XID by its code, as the heuristic names it: the quoted series holds the code
    xid = Contribution(g1, "r00-n00-g1", "gpu", 3.0, "DCGM_FI_DEV_XID_ERRORS", "XID 63 raised 20 min ago",
                       np.array([0.0, np.nan, 63.0, 63.0]))
    said = scorer._sentence_cause(Explanation("r00-n00", 0.9, [xid]), heuristic, dev)
    assert (said["top_cause"], said["cause_part"]) == ("memory", "")
    xid.series = np.array([0.0, 79.0])
    said = scorer._sentence_cause(Explanation("r00-n00", 0.9, [xid]), heuristic, dev)
    assert (said["top_cause"], said["cause_part"]) == ("other", "GPU bus")
    assert scorer._sentence_cause(Explanation("r00-n00", 0.9, [xid], cause_named="thermal"), heuristic,
                                  dev)["top_cause"] == "thermal"  # the sentence's own group stands
    assert scorer._sentence_cause(Explanation("r00-n00", 0.9, [], cause_named="thermal"), heuristic, dev) == {
        "top_cause": "thermal", "component_id": "", "metric": "", "deviation": 0.0, "cause_source": "model",
        "cause_part": ""}
    assert scorer._sentence_cause(Explanation("r00-n00", 0.9, []), heuristic, dev) == {}


def test_a_scrape_reads_one_cycles_node_series_never_a_mix() -> None:
    """The per-node series are replaced whole: a scrape that began before a cycle's update reads the old cycle
    in every family, one that begins after reads the new one; a node is never missing from one family or seen
    with two causes (which would resolve and re-fire its Prometheus alert, or break the rule's join)."""
    from infrabrain.client.daemon import DaemonMetrics

    m = DaemonMetrics("lab")
    old = [NodeRisk(f"r00-n{i:02d}", "r00", 0.9, "thermal", f"r00-n{i:02d}", "node_hwmon_temp_celsius", 3.0)
           for i in range(50)]
    new = [NodeRisk(f"r00-n{i:02d}", "r00", 0.2, "network", f"r00-n{i:02d}", "node_network_receive_errs_total", 1.0,
                    cause_source="model") for i in range(1, 51)]
    m.update_risks(old)
    scrape = m.nodes.collect()
    first = next(scrape)  # the scrape has begun ...
    m.update_risks(new)  # ... when the next cycle lands
    families = {f.name: f for f in (first, *scrape)}
    assert {s.labels["node"] for s in families["infrabrain_node_failure_risk"].samples} == {r.node_id for r in old}
    assert {(s.labels["node"], s.labels["cause"]) for s in families["infrabrain_node_top_cause"].samples} == {
        (r.node_id, "thermal") for r in old}
    after = {f.name: f for f in m.nodes.collect()}
    assert [s.value for s in after["infrabrain_node_failure_risk"].samples] == [0.2] * 50
    assert {s.labels["source"] for s in after["infrabrain_node_top_cause"].samples} == {"model"}


def test_cli_collect_once_and_store_info(tmp_path: Path, small_dataset: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _site_yaml(tmp_path, small_dataset, None)
    capsys.readouterr()
    assert cli_main(["client", "collect-once", "--config", str(cfg), "--strict"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stored"] > 0 and out["collectors"]["replay"]["up"] and not out["collectors"]["nvml"]["up"]
    assert "NVML library not found" in out["collectors"]["nvml"]["error"]
    assert out["window"]["model"] == "federated feature set"
    assert (out["window"]["kinds_missing"], out["window"]["fields_missing"],
            out["window"]["unknown_component_count"]) == ([], {}, 0)
    assert cli_main(["client", "store-info", "--config", str(cfg)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["integrity"] == "ok" and info["n_samples"] == out["stored"]
    assert cli_main(["client", "check-topology", str(tmp_path / "topology.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["components"]["gpu"] == 4


def test_collect_once_says_what_a_model_would_miss_before_the_daemon_runs(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`client collect-once` as a check before `client run`: telemetry whose GPUs export no single-bit ECC counter
    (dcgm-exporter's default fields), PDUs no exporter sends, and a node the topology file lacks, are named in its
    JSON at once, where the daemon says so only once it scores (half a window later). ``--strict`` exits 2 on
    them; 0 without it, and 0 once they are fixed or, for the PDUs, declared in ``unmonitored_kinds``."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "dataset"
    shutil.copytree(small_dataset, data)
    gpu_file = next((data / "site=lab" / "telemetry" / "kind=gpu").glob("*.parquet"))
    table = pq.read_table(gpu_file)
    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    col = table.schema.get_field_index(ecc)
    never_sent = pa.nulls(table.num_rows, type=table.schema.field(ecc).type)
    pq.write_table(table.set_column(col, ecc, never_sent), gpu_file)
    pdu_file = next((data / "site=lab" / "telemetry" / "kind=pdu").glob("*.parquet"))
    pdu = pq.read_table(pdu_file)
    for name in ("pdu_load_kw", "pdu_rating_kw"):  # no exporter for the PDUs
        pdu = pdu.set_column(pdu.schema.get_field_index(name), name, pa.nulls(pdu.num_rows, type=pa.float32()))
    pq.write_table(pdu, pdu_file)
    cfg = _site_yaml(tmp_path, data, small_checkpoint)
    full_topology = (tmp_path / "topology.yaml").read_text()
    topo = yaml.safe_load(full_topology)
    topo["racks"][0]["nodes"] = topo["racks"][0]["nodes"][:1]
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(topo))
    capsys.readouterr()
    assert cli_main(["client", "collect-once", "--config", str(cfg)]) == 0
    window = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["window"]
    assert window["model"] == "checkpoint" and window["kinds_missing"] == ["pdu"]
    assert window["fields_missing"] == {"gpu": [ecc]} and "dcgm-exporter-counters.csv" in window["hint"]
    assert window["unknown_components"] == ["r00-n01", "r00-n01-g0", "r00-n01-g1"]
    (tmp_path / "store.db").unlink()
    assert cli_main(["client", "collect-once", "--config", str(cfg), "--strict"]) == 2
    # the PDUs declared unmonitored, the node in the topology, the counter exported: nothing is missing
    doc = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**doc, "unmonitored_kinds": ["pdu"],
                                   "collectors": {"replay": {**doc["collectors"]["replay"], "dataset": str(data)}}}))
    (tmp_path / "topology.yaml").write_text(full_topology)
    pq.write_table(table, gpu_file)
    (tmp_path / "store.db").unlink()
    capsys.readouterr()
    assert cli_main(["client", "collect-once", "--config", str(cfg), "--strict"]) == 0
    window = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["window"]
    assert (window["kinds_missing"], window["kinds_unmonitored"], window["fields_missing"], window["hint"],
            window["unknown_component_count"]) == ([], ["pdu"], {}, None, 0)


def test_no_model_means_no_scores_and_privacy_budget_from_the_ledger(tmp_path: Path, small_dataset: Path) -> None:
    from prometheus_client import generate_latest

    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.ledger import PrivacyLedger

    PrivacyLedger.open(tmp_path / "ledger", BudgetConfig(epsilon_total=6.5), site="lab")  # a real, fresh ledger
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, tmp_path / "no-such-checkpoint",
                                      privacy_ledger="ledger"))
    daemon = Daemon(cfg, now=1_800_000_000.0)
    try:
        assert daemon.scorer is None
        assert daemon.collect_once(1_800_000_005) > 0
        assert daemon.score_once() == []
        text = generate_latest(daemon.metrics.registry).decode()
        assert 'infrabrain_privacy_epsilon_remaining{site="lab"} 6.5' in text
        assert 'infrabrain_model_loaded{site="lab"} 0.0' in text
        assert "infrabrain_node_failure_risk{" not in text  # no model: no invented scores
    finally:
        daemon.close()


def test_a_site_collecting_at_another_cadence_than_the_models_gets_a_named_error_and_keeps_collecting(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The model's window is counted in steps: at 30 s it would read half an hour as its hour. The scorer refuses
    it naming both cadences; the daemon logs that, scores nothing, and still stores what it collects."""
    from infrabrain.client.topology_file import load_topology

    with pytest.raises(ValueError, match="site.yaml's cadence_s has a 30 s cadence, but the model was trained on "
                                         "60 s telemetry"):
        PredictorScorer(small_checkpoint, load_topology(_site_yaml(tmp_path, small_dataset, None).parent
                                                        / "topology.yaml"), cadence_s=30)
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint, cadence_s=30))
    with caplog.at_level("ERROR"):
        daemon = Daemon(cfg, now=1_800_000_000.0)
    try:
        assert daemon.scorer is None
        assert any("30 s cadence" in str(getattr(r, "error", "")) for r in caplog.records)
        assert daemon.collect_once(1_800_000_005) > 0 and daemon.score_once() == []
    finally:
        daemon.close()


def test_alerts_are_drawn_beside_the_log_and_only_the_newest_pictures_are_kept(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``alert_pictures`` in site.yaml: each alert's explanation is drawn as a PNG named by its time and node,
    the alert log line names it, and only the newest ``keep`` stay. A picture that cannot be written is logged and
    the alert still goes out."""
    from infrabrain.client.alert_pictures import AlertPictures

    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint,
                                      alert_pictures={"dir": "alerts", "keep": 1}))
    assert cfg.alert_pictures is not None and cfg.alert_pictures.dir == tmp_path / "alerts"  # relative to site.yaml
    t0 = 1_800_000_000.0
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "floor-plan.png").write_bytes(b"someone else's")  # not one of the daemon's pictures
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 5)
        with caplog.at_level("WARNING"):
            assert len(daemon.score_once(t0 + 5)) == 2  # threshold 0: both nodes alert, both are drawn
        alerts = [r for r in caplog.records if r.getMessage() == "node at risk of failing within the hour"]
        drawn = sorted((tmp_path / "alerts").glob("2*Z-*.png"))
        assert len(alerts) == 2 and len(drawn) == 1  # keep: 1
        assert (tmp_path / "alerts" / "floor-plan.png").read_bytes() == b"someone else's"  # pruning spares it
        assert drawn[0].name in {"20270115T080005Z-r00-n00.png", "20270115T080005Z-r00-n01.png"}
        assert drawn[0].read_bytes()[:4] == b"\x89PNG" and str(drawn[0]) in {r.picture for r in alerts}
    finally:
        daemon.close()
    blocked = AlertPictures(tmp_path / "alerts" / drawn[0].name, keep=5)  # a file where the folder should be
    with caplog.at_level("WARNING"):
        assert blocked.draw("r00-n00", "s", [], [{"component_id": "r00-n00", "kind": "node", "score": 1.0,
                                                  "parts": {"drop": 1.0}}], 60, t0) is None
    assert any(r.getMessage().startswith("alert picture not written") for r in caplog.records)
    with pytest.raises(ValueError, match="alert_pictures.keep"):
        AlertPictures(tmp_path, keep=0)
    with pytest.raises(ValueError, match="keep"):
        load_site_config(_site_yaml(tmp_path, small_dataset, None, alert_pictures={"dir": "a", "keep": 0}))


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one request to the daemon's HTTP server."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_alerts_endpoint_serves_what_the_alerts_say_and_only_the_daemons_pictures(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """``/alerts`` on the metrics address: the last cycle's nodes at risk, riskiest first, with the alert log's
    words, cause and roots, and the address of each alert's picture, which ``/alerts/pictures/`` serves. It
    serves the daemon's own pictures only: not another file in the folder, not a path out of it, not a symlink
    planted under a picture's name; GET and HEAD only; a silent connection is dropped; ``/metrics`` as before."""
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint,
                                      alert_pictures={"dir": "alerts", "keep": 5}))
    t0 = 1_800_000_000.0
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "floor-plan.png").write_bytes(b"someone else's")
    daemon = Daemon(cfg, now=t0)
    try:
        port = daemon.start_metrics_server()
        status, kind, body = _get(port, "/alerts")
        before = json.loads(body)
        assert status == 200 and kind == "application/json"
        assert before["scored_at"] is None and before["nodes"] == [] and before["model_loaded"] is True
        daemon.collect_once(t0 + 5)
        with caplog.at_level("WARNING"):
            risks = daemon.score_once(t0 + 5)  # threshold 0: both nodes alert, both are drawn
        logged = {r.node: r for r in caplog.records if r.getMessage() == "node at risk of failing within the hour"}
        view = json.loads(_get(port, "/alerts")[2])
        assert view["site"] == "lab" and view["scored_at"] == t0 + 5 and view["threshold"] == 0.0
        assert [n["node"] for n in view["nodes"]] == [r.node_id for r in sorted(risks, key=lambda r: -r.risk)]
        for n in view["nodes"]:
            a = logged[n["node"]]
            assert (n["explanation"], n["cause"], n["root_reason"]) == (a.explanation, a.cause, a.root_reason)
            assert ", ".join(n["root_causes"]) == a.root_causes and n["alerted_at"] == t0 + 5
            assert n["cause_source"] == a.cause_source and n["picture"] == f"/alerts/pictures/{Path(a.picture).name}"
            assert n["cause_part"] == getattr(a, "cause_part", None)  # in the log line only where there is one
            assert n["cause_part"] is None or n["cause"] == "other"
            status, kind, png = _get(port, n["picture"])
            assert (status, kind) == (200, "image/png") and png == Path(a.picture).read_bytes()
            assert png[:4] == b"\x89PNG"
            assert _get(port, n["picture"], method="HEAD")[:2] == (200, "image/png")
        # only the daemon's own pictures, never a path out of the folder or a planted link
        (tmp_path / "alerts" / "20270115T080005Z-planted.png").symlink_to(tmp_path / "site.yaml")
        for bad in ("/alerts/pictures/floor-plan.png", "/alerts/pictures/..%2Fsite.yaml",
                    "/alerts/pictures/20270115T080005Z-planted.png", "/alerts/pictures/20270115T080005Z-gone.png",
                    "/alerts/pictures/", "/elsewhere"):
            status, kind, body = _get(port, bad)
            assert status == 404 and kind == "application/json" and "error" in json.loads(body), bad
        assert _get(port, "/alerts", method="POST")[0] == 405
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/alerts", method="DELETE"))
        assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"
        # `infrabrain client alerts` prints them for a person, or passes the JSON on
        capfd.readouterr()
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}/", "--json"]) == 0
        assert json.loads(capfd.readouterr().out) == view | {"model_loaded": True}
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
        printed = capfd.readouterr().out
        assert printed.startswith("site lab, scored 2027-01-15T08:00:05Z: 2 of 2 node(s) at or above the alert "
                                  "threshold 0.00\n")
        for n in view["nodes"]:
            assert f"{n['explanation']}\n  likeliest roots: {', '.join(n['root_causes'])}" in printed
            assert f"  picture: http://127.0.0.1:{port}{n['picture']}\n" in printed
        # a client that connects and says nothing is dropped, and the others are still served meanwhile
        import socket

        from infrabrain.client import daemon_http

        monkeypatch.setattr(daemon_http._QuietHandler, "timeout", 0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            assert _get(port, "/alerts")[0] == 200
            started = time.time()
            assert idle.recv(1) == b"" and time.time() - started < 4  # closed by the server, not by our timeout
        time.sleep(0.2)
        assert "Traceback" not in capfd.readouterr().err  # the timeout is no error worth a traceback
        assert b"infrabrain_node_failure_risk{" in _get(port, "/metrics")[2]
        # a second cycle within REALERT_S: still at risk, still its last alert's picture, no new alert
        daemon.collect_once(t0 + 6)
        daemon.score_once(t0 + 6)
        again = json.loads(_get(port, "/alerts")[2])
        assert again["scored_at"] == t0 + 6
        assert {n["node"]: (n["alerted_at"], n["picture"]) for n in again["nodes"]} == {
            n["node"]: (n["alerted_at"], n["picture"]) for n in view["nodes"]}
    finally:
        daemon.close()
    capfd.readouterr()
    assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 2  # stopped
    assert f"no /alerts from the daemon at http://127.0.0.1:{port}" in capfd.readouterr().err
    assert cli_main(["client", "alerts", "--config", str(tmp_path / "site.yaml")]) == 2  # port 0: say which
    assert "metrics.port is 0" in capfd.readouterr().err
    assert cli_main(["client", "alerts", "--url", f"127.0.0.1:{port}"]) == 2
    assert "--url must start with http:// or https://" in capfd.readouterr().err
    assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}", "--timeout", "0"]) == 2
    assert "--timeout must be a positive number of seconds, got 0.0" in capfd.readouterr().err
    quiet = Daemon(cfg.model_copy(update={"alert_threshold": 1.0}), now=t0)  # nobody at risk
    try:
        port = quiet.start_metrics_server()
        quiet.score_once(t0 + 6)
        view = json.loads(_get(port, "/alerts")[2])
        assert view["scored"] == 2 and view["nodes"] == []
    finally:
        quiet.close()


def test_client_explain_reads_back_from_the_store_what_the_daemon_scored(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``infrabrain client explain``: the stored window ending at a time, scored with site.yaml's checkpoint, gives
    the risks the daemon gave then, with each node's sentence, roots and picture; a time outside the store, a
    window too empty to score and a site without a checkpoint are refused by name."""
    from infrabrain.client.stored_window_explain import explain_stored_window

    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, small_checkpoint))
    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, now=t0)
    try:
        daemon.collect_once(t0 + 0.2)  # two steps: too few to score
        early = daemon.store.latest_t()
        daemon.collect_once(t0 + 5)
        live = {r.node_id: r.risk for r in daemon.score_once(t0 + 5)}
    finally:
        daemon.close()
    out = explain_stored_window(cfg, top=2, plot_dir=tmp_path / "post-mortem")
    assert out["scored"] == 2 and {n["node_id"]: n["risk"] for n in out["nodes"]} == pytest.approx(live, rel=1e-6)
    assert out["after_until"] == out["t"] and all(n["after"] == [] for n in out["nodes"])  # nothing stored past it
    assert [n["risk"] for n in out["nodes"]] == sorted(live.values(), reverse=True)
    for n in out["nodes"]:
        assert n["explanation"].startswith(f"node {n['node_id']} at risk {n['risk']:.2f}") and n["root_causes"]
        assert Path(n["picture"]).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert cli_main(["client", "explain", "--config", str(tmp_path / "site.yaml"), "--top", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["t"] == out["t"] and [n["node_id"] for n in printed["nodes"]] == [out["nodes"][0]["node_id"]]
    # --at as an operator writes it: an ISO time, UTC unless it names its zone, or epoch seconds
    import time as _time

    iso = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(out["t"]))
    for at in (iso, iso[:-1], str(out["t"])):
        assert cli_main(["client", "explain", "--config", str(tmp_path / "site.yaml"), "--at", at, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["t"] == out["t"]
    with pytest.raises(SystemExit):
        cli_main(["client", "explain", "--config", str(tmp_path / "site.yaml"), "--at", "yesterday"])
    assert "neither epoch seconds nor an ISO 8601 time" in capsys.readouterr().err
    with pytest.raises(ValueError, match="outside the stored time"):
        explain_stored_window(cfg, at=int(t0) - 10_000)
    with pytest.raises(ValueError, match=r"has data in \d+ of the model's \d+ steps"):
        explain_stored_window(cfg, at=early)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="no model.checkpoint"):
        explain_stored_window(load_site_config(_site_yaml(tmp_path / "bare", small_dataset, None)))
    # what came of it: the events the store holds on each explained node (or its GPUs) in the hour after
    from infrabrain.client.records import EventRecord, SampleBatch
    from infrabrain.client.store import TelemetryStore

    store = TelemetryStore(cfg.store.path)
    later = [EventRecord(out["t"] + 600, "r00-n01-g1", "gpu", "xid", 79, "fell off the bus"),
             EventRecord(out["t"] + 900, "r00-n010", "node", "down"),  # another node whose id starts alike
             EventRecord(out["t"] + 4000, "r00-n01", "node", "down")]  # past the hour
    store.ingest(SampleBatch(t=[out["t"] + 3600], component_id=["r00-n00"], kind=["node"], metric=["node_load1"],
                             value=[1.0]), later)
    store.close()
    then = {n["node_id"]: n["after"] for n in explain_stored_window(cfg, at=out["t"], top=2)["nodes"]}
    assert then["r00-n00"] == [] and then["r00-n01"] == [
        {"t": out["t"] + 600, "component_id": "r00-n01-g1", "event": "xid", "xid": 79, "detail": "fell off the bus"}]
    capsys.readouterr()
    assert cli_main(["client", "explain", "--config", str(tmp_path / "site.yaml"), "--at", str(out["t"])]) == 0
    text = capsys.readouterr().out
    assert "then, 10 min later: XID 79 on r00-n01-g1 (fell off the bus)" in text
    assert "then: no event on this node in the next 60 min" in text


def test_a_quiet_node_has_no_cause_and_an_abnormal_signal_names_one(tmp_path: Path, small_dataset: Path,
                                                                      small_checkpoint: Path, small_run: Any) -> None:
    """The signal heuristic names a node's strongest signal only from ABNORMAL_DEVIATION up; around a quiet node
    the strongest of its values is about 2 by chance, which had labelled quiet nodes "thermal" by a GPU's
    temperature above its siblings'. A GPU 40 C hotter than usual is named."""
    from infrabrain.client.scoring import ABNORMAL_DEVIATION
    from infrabrain.client.topology_file import load_topology

    _site_yaml(tmp_path, small_dataset, None)
    scorer = PredictorScorer(small_checkpoint, load_topology(tmp_path / "topology.yaml"))
    window = {k: np.asarray(v)[-scorer.window_steps:].copy() for k, v in small_run.metrics.items()}
    quiet = {r.node_id: r for r in scorer.score(window)}
    assert any(r.top_cause == "none" for r in quiet.values()), quiet  # fails with no floor
    for r in quiet.values():
        assert (r.top_cause == "none") == (abs(r.deviation) < ABNORMAL_DEVIATION), r
        assert (r.component_id == "" and r.metric == "") == (r.top_cause == "none"), r
        assert r.explanation == "no abnormal signal" or r.top_cause != "none"
    temp = list(scorer.metric_names["gpu"]).index("DCGM_FI_DEV_GPU_TEMP")
    window["gpu"][-10:, 3, temp] += 40.0  # r00-n01's second GPU
    hot = {r.node_id: r for r in scorer.score(window)}["r00-n01"]
    # (its sibling may be the one named: 40 C below the GPU beside it is as far from typical)
    assert hot.top_cause == "thermal" and hot.component_id in ("r00-n01-g0", "r00-n01-g1")
    assert abs(hot.deviation) >= ABNORMAL_DEVIATION


@pytest.mark.parametrize(("code", "cause", "part"), [(63, "memory", ""), (48, "memory", ""), (79, "other", "GPU bus")])
def test_an_xid_is_named_by_its_code(tmp_path: Path, small_dataset: Path, small_checkpoint: Path, small_run: Any,
                                     code: int, cause: str, part: str) -> None:
    """The model reads that a GPU raised a hardware XID, not which; the signal heuristic reads the code from the raw
    window (follow-up 42): a row remap or double-bit ECC is the GPU's memory, a GPU fallen off the bus its bus.
    Before, every XID read "gpu", a group the cause head does not name."""
    from infrabrain.client.topology_file import load_topology

    _site_yaml(tmp_path, small_dataset, None)
    scorer = PredictorScorer(small_checkpoint, load_topology(tmp_path / "topology.yaml"))
    window = {k: np.asarray(v)[-scorer.window_steps:].copy() for k, v in small_run.metrics.items()}
    xid = list(scorer.metric_names["gpu"]).index("DCGM_FI_DEV_XID_ERRORS")
    window["gpu"][:, :, xid] = 0.0
    window["gpu"][-20:, 3, xid] = code  # r00-n01's second GPU
    r = {r.node_id: r for r in scorer.score(window)}["r00-n01"]
    assert (r.metric, r.component_id) == ("DCGM_FI_DEV_XID_ERRORS", "r00-n01-g1"), r
    assert (r.top_cause, r.cause_part) == (cause, part)


def test_cause_groups() -> None:
    assert cause_of_metric("DCGM_FI_DEV_GPU_TEMP") == "thermal"
    assert cause_of_metric("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") == "memory"
    assert cause_of_metric("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL") == "network"
    assert cause_of_metric("pdu_load_kw") == "power"
    assert cause_of_metric("node_load1") == "other"
    # a node's InfiniBand port errors are a network signal (they had fallen through to "other")
    assert cause_of_metric("node_infiniband_port_errors_received_total") == "network"
    # the cause head's groups (follow-up 42): a GPU's PCIe replays are its bus, a host's EDAC errors its DIMMs,
    # both "other" with their part named, as an alert's sentence names them (they had read network and memory)
    assert cause_of_metric("DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == "other"
    assert cause_of_metric("node_edac_correctable_errors_total") == "other"
    r = NodeRisk("r00-n00", "r00", 0.2, "other", "r00-n00-g1", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 4.2,
                 cause_part="GPU bus")
    assert r.explanation == "r00-n00-g1 DCGM_FI_DEV_PCIE_REPLAY_COUNTER +4.2 (normalised) -> other, the GPU bus"


def test_site_config_errors_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text("site: lab\ntopology: t.yaml\ncollectors: {}\n")
    with pytest.raises(ValueError, match="configure at least one of nvml, prometheus, replay"):
        load_site_config(p)
    p.write_text("site: lab\ntopology: t.yaml\ncollectors: {nvml: {}}\nstore: {retention_days: -1}\n")
    with pytest.raises(ValueError, match="retention_days"):
        load_site_config(p)
    p.write_text("site: lab\ntopology: t.yaml\ncollectors: {nvml: {}}\ncolectors: 1\n")
    with pytest.raises(ValueError, match="colectors"):
        load_site_config(p)
    for kinds, message in (("[pdu, tpu]", r"unmonitored_kinds: unknown component kind\(s\) \['tpu'\]"),
                           ("[gpu]", "gpu and node cannot be unmonitored"),
                           ("[pdu, pdu]", "unmonitored_kinds names a kind twice")):
        p.write_text(f"site: lab\ntopology: t.yaml\ncollectors: {{nvml: {{}}}}\nunmonitored_kinds: {kinds}\n")
        with pytest.raises(ValueError, match=message):
            load_site_config(p)
    assert cli_main(["client", "run", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path, small_dataset: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _site_yaml(tmp_path, small_dataset, None)
        doc = yaml.safe_load(cfg.read_text())
        doc["metrics"] = {"host": "127.0.0.1", "port": port}
        cfg.write_text(yaml.safe_dump(doc))
        daemon = Daemon(load_site_config(cfg))
        try:
            with pytest.raises(ValueError, match=f"cannot serve on 127.0.0.1:{port}"):
                daemon.run(threading.Event(), max_cycles=1)
        finally:
            daemon.close()
    with TelemetryStore(tmp_path / "store.db", read_only=True) as store:
        assert store.integrity_check() == "ok"


def test_federation_section_starts_and_stops_the_real_supernode(tmp_path: Path, small_dataset: Path) -> None:
    import socket

    from infrabrain.coordinator.certs import make_supernode_keys, make_tls

    tls = make_tls(tmp_path / "tls")
    key = make_supernode_keys(tmp_path / "keys", "lab")
    with socket.socket() as s:  # a SuperLink address nobody listens on: the SuperNode keeps retrying
        s.bind(("127.0.0.1", 0))
        superlink = f"127.0.0.1:{s.getsockname()[1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    cfg = _site_yaml(tmp_path, small_dataset, None, federation={
        "superlink": superlink, "root_certificates": str(tls.ca_cert), "auth_private_key": str(key.private_key),
        "state_dir": str(tmp_path / "fed"), "port": local_port, "log_file": str(tmp_path / "supernode.log")})
    daemon = Daemon(load_site_config(cfg))
    try:
        daemon.start_federation()
        supervisor = daemon._supernode
        assert supervisor is not None
        proc = supervisor.proc
        assert proc is not None and proc.pid > 0
    finally:
        daemon.close()
    assert proc.poll() is not None  # stopped with the daemon, not left behind


def test_daemon_risk_is_the_calibrated_risk_predict_reports_and_alerts_at_the_cards_threshold(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, small_run: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's risk gauge is the probability `infrabrain models predict` gives for the same window (the
    card's Platt scaling applied, not the class-weighted raw sigmoid), and without an ``alert_threshold`` in
    site.yaml it alerts at the threshold the card chose on the validation split."""
    import shutil

    from infrabrain.client.daemon import DEFAULT_ALERT_THRESHOLD
    from infrabrain.client.topology_file import load_topology
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.models.predict import predict_run

    ck = tmp_path / "calibrated"
    shutil.copytree(small_checkpoint, ck)
    card_path = ck / "model_card.json"
    card = json.loads(card_path.read_text())
    card.update(calibration={"a": 0.5, "b": -3.0, "n": 100, "positives": 5}, alert_threshold=0.07)
    card_path.write_text(json.dumps(card))
    cfg_path = _site_yaml(tmp_path, small_dataset, ck)
    scorer = PredictorScorer(ck, load_topology(tmp_path / "topology.yaml"))
    assert scorer.calibration is not None and scorer.alert_threshold == 0.07
    # it collects raw columns only: the derived GPU temperature gap is computed on site when the window is encoded
    assert "gpu_temp_above_siblings" in scorer.feature_set.metrics_of("gpu")
    assert scorer.metric_names["gpu"] == list(small_run.metric_names["gpu"])
    window = {k: np.asarray(v)[-scorer.window_steps:] for k, v in small_run.metrics.items()}
    ours = {r.node_id: r.risk for r in scorer.score(window)}
    theirs = {r["node_id"]: r["risk"] for r in predict_run(load_checkpoint(ck), small_run, explain_top=0)}
    assert ours.keys() == theirs.keys() == {"r00-n00", "r00-n01"}
    np.testing.assert_allclose([ours[n] for n in sorted(ours)], [theirs[n] for n in sorted(ours)], rtol=1e-6)
    # ... and the same sentences: both describe the hour the model read (the daemon's had described the whole
    # raw window, the XID history included: "over 123 min" for a 60-minute model; issue 3 follow-up 39)
    from infrabrain.models import explain as explain_module

    monkeypatch.setattr(explain_module, "MIN_QUOTED_DROP", -np.inf)  # the tiny model's drops: quote them anyway
    said = {r.node_id: r.explanation for r in scorer.explain(scorer.score(window))}
    told = {r["node_id"]: r["explanation"] for r in predict_run(load_checkpoint(ck), small_run, explain_top=2)}
    assert said == told and all(": " in s for s in said.values())
    raw = {r.node_id: r.risk for r in PredictorScorer(small_checkpoint, scorer.topology).score(window)}
    assert all(ours[n] != pytest.approx(raw[n], rel=1e-3) for n in ours)  # the uncalibrated sigmoid differs
    # a node without telemetry in its last 5 minutes gets no risk (not one from invented inputs); one seen only
    # through its GPUs (NVML alone, no node_exporter) is scored, its node metrics masked
    dead = {k: v.copy() for k, v in window.items()}
    dead["node"][-5:, 1] = np.nan
    assert [r.node_id for r in scorer.score(dead)] == ["r00-n00", "r00-n01"]
    dead["gpu"][-5:, 2:] = np.nan  # r00-n01's GPUs
    assert [r.node_id for r in scorer.score(dead)] == ["r00-n00"]

    cfg = load_site_config(cfg_path)
    for site_threshold, expected in ((None, 0.07), (0.9, 0.9)):
        daemon = Daemon(cfg.model_copy(update={"alert_threshold": site_threshold}), now=0.0)
        try:
            assert daemon.alert_threshold == expected
        finally:
            daemon.close()
    bare = Daemon(cfg.model_copy(update={"alert_threshold": None, "model": cfg.model.model_copy(
        update={"checkpoint": small_checkpoint})}), now=0.0)
    try:
        assert bare.alert_threshold == DEFAULT_ALERT_THRESHOLD  # the card has no calibration, so no threshold
    finally:
        bare.close()


def test_a_card_without_a_root_prior_ranks_with_the_published_mix_on_the_sites_topology(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, small_run: Any, monkeypatch) -> None:
    """A site whose model card holds no root prior (no labelled roots, no fleet release) ranks root causes with
    the published failure mix laid on its own topology (issue 3, follow-up 26), not by occlusion drop alone; a
    card's own prior is kept, and merged with that mix where the card says so (follow-up 29)."""
    import shutil

    from infrabrain.client.topology_file import load_topology
    from infrabrain.models.published_root_prior import published_root_prior
    from infrabrain.models.snapshots import graph_from_topology

    _site_yaml(tmp_path, small_dataset, small_checkpoint)
    topology = load_topology(tmp_path / "topology.yaml")
    kept = PredictorScorer(small_checkpoint, topology)
    assert kept.root_prior_source == "card" and kept.root_prior.counts == {"node@0": 6, "gpu@1": 8, "leaf@1": 2}
    bare = tmp_path / "bare"
    shutil.copytree(small_checkpoint, bare)
    card = json.loads((bare / "model_card.json").read_text())
    card["root_prior"] = None
    (bare / "model_card.json").write_text(json.dumps(card))
    scorer = PredictorScorer(bare, topology)
    assert scorer.root_prior_source == "published"
    assert scorer.root_prior == published_root_prior(graph_from_topology(topology))
    assert scorer.root_prior.counts["gpu@1"] > scorer.root_prior.counts["node@0"] > 0
    # a card that `infrabrain train` wrote (follow-up 29): its labels plus the published mix on this topology
    from infrabrain.models.published_root_prior import CARD_PUBLISHED_KEY
    from infrabrain.models.root_prior import merge_root_priors

    card = json.loads((small_checkpoint / "model_card.json").read_text())
    card[CARD_PUBLISHED_KEY] = 50
    (bare / "model_card.json").write_text(json.dumps(card))
    merged = PredictorScorer(bare, topology)
    assert merged.root_prior_source == "card+published"
    assert merged.root_prior == merge_root_priors(kept.root_prior, published_root_prior(graph_from_topology(topology)))
    # and the card's own-change tails (follow-up 37): a card without them ranks without that part
    from infrabrain.models.own_change_evidence import CARD_KEY, KindTail, OwnChangeTails

    assert kept.own_tails is None
    tails = OwnChangeTails(kinds={"cooling": KindTail(n=99, ranks=(1, 99), values=(3.0, 0.0))})
    card[CARD_KEY] = tails.model_dump()
    (bare / "model_card.json").write_text(json.dumps(card))
    assert PredictorScorer(bare, topology).own_tails == tails
    # and the card's check of how the head's naming held up (follow-up 38), which each alert's explanation reads
    from infrabrain.models import explain
    from infrabrain.models.cause_naming import CARD_KEY as NAMING_KEY
    from infrabrain.models.cause_naming import CauseNamingCheck, GroupNaming

    assert kept.cause_naming is None
    check = CauseNamingCheck(source="validation", groups={"memory": GroupNaming(named=6, right=1)})
    card[NAMING_KEY] = check.model_dump()
    (bare / "model_card.json").write_text(json.dumps(card))
    named = PredictorScorer(bare, topology)
    assert named.cause_naming == check
    seen = []
    real = explain.explain_node
    monkeypatch.setattr(explain, "explain_node", lambda *a, **k: (seen.append(k.get("naming")), real(*a, **k))[1])
    window = {k: np.asarray(v)[-named.window_steps:] for k, v in small_run.metrics.items()}
    assert len(named.explain(named.score(window))) == 2 and seen and all(n == check for n in seen)


def test_a_model_that_learned_no_thermal_failure_keeps_the_temperature_rule(
        tmp_path: Path, small_dataset: Path, small_checkpoint: Path, small_run: Any,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 3 follow-up 44: a card whose training held no thermal failure cannot foretell one, so the daemon keeps
    the incumbent thermal rules beside it: a GPU over 85 C is a rule alert on its node (``NodeRisk.rule_alerts``)
    whatever the node's risk, exported as ``infrabrain_node_rule_alert`` (which deploy/prometheus-alerts.yml
    alerts on), served on ``/alerts`` and logged once per REALERT_S; the risks are the model's as they were."""
    import shutil

    from infrabrain.client.daemon import REALERT_S
    from infrabrain.client.scoring import RuleAlert
    from infrabrain.client.topology_file import load_topology

    ck = tmp_path / "no-thermal"
    shutil.copytree(small_checkpoint, ck)
    card = json.loads((ck / "model_card.json").read_text())
    card["cause_coverage"] = {"version": 1, "failures": {"memory": 40, "network": 40, "thermal": 0, "power": 40,
                                                         "other": 40, "software": 0}}
    (ck / "model_card.json").write_text(json.dumps(card))
    cfg = load_site_config(_site_yaml(tmp_path, small_dataset, None))  # the scorer below, never reloaded
    topology = load_topology(tmp_path / "topology.yaml")
    scorer = PredictorScorer(ck, topology)
    assert scorer.untrained_causes == ("thermal",)
    assert PredictorScorer(small_checkpoint, topology).untrained_causes == ()  # its card does not say
    temp = list(scorer.metric_names["gpu"]).index("DCGM_FI_DEV_GPU_TEMP")
    window = {k: np.asarray(v)[-scorer.window_steps:].copy() for k, v in small_run.metrics.items()}
    window["gpu"][:, :, temp] = np.minimum(window["gpu"][:, :, temp], 70.0)
    window["gpu"][-3:, 3, temp] = 92.0  # r00-n01's second GPU
    risks = {r.node_id: r for r in scorer.score(window)}
    hot = RuleAlert("thermal", "temperature", "r00-n01-g1", "GPU r00-n01-g1 temperature over 85 C")
    assert risks["r00-n01"].rule_alerts == (hot,) and risks["r00-n00"].rule_alerts == ()
    plain = {r.node_id: r for r in PredictorScorer(small_checkpoint, topology).score(window)}
    assert {n: r.risk for n, r in plain.items()} == {n: r.risk for n, r in risks.items()}
    assert all(r.rule_alerts == () for r in plain.values())

    class HotScorer(PredictorScorer):
        def score(self, metrics):  # the replayed window, with r00-n01's second GPU over 85 C
            metrics = {k: np.array(v) for k, v in metrics.items()}
            metrics["gpu"][:, :, temp] = np.minimum(metrics["gpu"][:, :, temp], 70.0)
            metrics["gpu"][-3:, 3, temp] = 92.0
            return super().score(metrics)

    t0 = 1_800_000_000.0
    daemon = Daemon(cfg, scorer=HotScorer(ck, topology), now=t0)
    try:
        daemon.collect_once(t0 + 5)
        with caplog.at_level("WARNING"):
            daemon.score_once(t0 + 5)
            daemon.score_once(t0 + 65)  # still firing: not logged again within REALERT_S
            daemon.score_once(t0 + 5 + REALERT_S)
        logged = [r for r in caplog.records
                  if r.getMessage() == "incumbent rule fired for a cause the model did not learn"]
        assert len(logged) == 2 and all((r.node, r.group, r.rule, r.gpu, r.explanation)
                                        == ("r00-n01", "thermal", "temperature", "r00-n01-g1", hot.text)
                                        for r in logged)
        samples = {f.name: f.samples for f in daemon.metrics.registry.collect()}
        assert [s.labels for s in samples["infrabrain_node_rule_alert"]] == [
            {"site": "lab", "node": "r00-n01", "rack": "r00", "group": "thermal", "rule": "temperature",
             "gpu": "r00-n01-g1"}]
        assert [(s.labels, s.value) for s in samples["infrabrain_model_untrained_cause"]] == [
            ({"site": "lab", "group": "thermal"}, 1.0)]
        view = daemon.alert_view()
        assert view["untrained_causes"] == ["thermal"]
        assert [{k: a[k] for k in ("node", "rack", "group", "rule", "gpu", "text")} for a in view["rule_alerts"]] == [
            {"node": "r00-n01", "rack": "r00", "group": "thermal", "rule": "temperature", "gpu": "r00-n01-g1",
             "text": hot.text}]
        assert view["rule_alerts"][0]["risk"] == next(r.risk for r in daemon.last_risks if r.node_id == "r00-n01")
        port = daemon.start_metrics_server()  # `infrabrain client alerts` prints them after the nodes at risk
        capsys.readouterr()
        assert cli_main(["client", "alerts", "--url", f"http://127.0.0.1:{port}"]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-2:] == [
            "the model's training held too few thermal failures to foretell them: 1 incumbent rule alert(s) for those",
            f"  rule alert (thermal): node r00-n01: {hot.text}"]
    finally:
        daemon.close()
    # `client explain` reads the same off the store: the stored hour, with that GPU over 85 C at its last minute
    from infrabrain.client.records import SampleBatch
    from infrabrain.client.store import TelemetryStore
    from infrabrain.client.stored_window_explain import explain_stored_window

    post = load_site_config(_site_yaml(tmp_path, small_dataset, ck))
    store = TelemetryStore(post.store.path)
    end = store.latest_t()
    store.ingest(SampleBatch(t=[end], component_id=["r00-n01-g1"], kind=["gpu"], metric=["DCGM_FI_DEV_GPU_TEMP"],
                             value=[92.0]))
    store.close()
    out = explain_stored_window(post, top=1)
    assert out["t"] == end and out["untrained_causes"] == ["thermal"]
    assert [(a["node"], a["rule"], a["text"]) for a in out["rule_alerts"]] == [("r00-n01", "temperature", hot.text)]
    capsys.readouterr()
    assert cli_main(["client", "explain", "--config", str(tmp_path / "site.yaml"), "--top", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"  rule alert (thermal): node r00-n01: {hot.text}"
