"""Benchmark queries from the daemon: statistics from the local store equal the simulator's own, and a query
against the REAL coordinator query service (gRPC, CKKS ciphertexts) is answered, logged and exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from infrabrain.client.benchmark_job import BenchmarkJob, BenchmarkSection, store_statistics
from infrabrain.client.daemon import DaemonMetrics
from infrabrain.client.records import EventRecord, SampleBatch
from infrabrain.client.store import TelemetryStore
from infrabrain.client.topology_file import site_topology_of_run

T0 = 1_800_000_000


@pytest.fixture(scope="module")
def busy_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small site with many faults (so that XIDs and thermal violations exist), ingested into a store."""
    from _simdata import small_spec

    from infrabrain.simulation.engine import simulate_site
    from infrabrain.simulation.spec import FaultSpec

    spec = small_spec().model_copy(update={"faults": FaultSpec(firmware_quality=0.0, noise_scale=100.0,
                                                                rate_scale=100.0)})
    run = simulate_site(spec, 6.0, seed=11, acceleration=100.0)
    topo = run.topology
    site_topo = site_topology_of_run(run, site="lab")
    path = tmp_path_factory.mktemp("bench") / "store.db"
    with TelemetryStore(path) as store:
        for kind, arr in run.metrics.items():
            ids = topo.ids[kind]
            for step, ts in enumerate(run.timestamps):
                store.ingest(SampleBatch.from_wide([T0 + int(ts)] * len(ids), ids, kind, run.metric_names[kind],
                                                   arr[step]))
        xids = run.events[run.events["event"] == "xid"]
        store.ingest(SampleBatch(), [EventRecord(T0 + int(r.t), r.component_id, r.kind, "xid", int(r.xid))
                                     for r in xids.itertuples()])
    return {"run": run, "topology": site_topo, "store": path, "end": T0 + int(run.hours * 3600)}


def test_store_statistics_equal_the_simulators(busy_site: dict[str, Any]) -> None:
    from infrabrain.privacy.secure_fleet_stats import site_statistics

    truth = site_statistics(busy_site["run"])
    with TelemetryStore(busy_site["store"], read_only=True) as store:
        got = store_statistics(store, busy_site["topology"], T0, busy_site["end"])
    xid_keys = [k for k in truth if k.startswith("xid_rate.")]
    assert sum(truth[k] for k in xid_keys) > 0, "the busy site should have XIDs"
    for k in xid_keys:
        assert got[k] == pytest.approx(truth[k], rel=1e-9), k
    assert truth["thermal_violation_hours"] is not None
    assert got["thermal_violation_hours"] == pytest.approx(truth["thermal_violation_hours"], rel=1e-4)
    # failures are not observed by the daemon: unknown, never a made-up zero
    assert all(v is None for k, v in got.items() if k.startswith("gpu_failure_rate.") or k == "repair_time_hours")


def test_query_against_the_real_query_service(busy_site: dict[str, Any], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from infrabrain.client.benchmark_query import SiteIdentity
    from infrabrain.coordinator.query_demo import build_reference, fleet_statistics
    from infrabrain.coordinator.query_guard import SiteKeys
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    reference = build_reference(fleet_statistics(n_sites=12, hours=720.0, seed=3), epsilon=8.0, seed=3)
    identity = SiteIdentity.generate("lab")
    key_path = tmp_path / "benchmark-key.pem"
    key_path.write_bytes(identity.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    handle = start_server(reference, SiteKeys({"lab": identity.public_raw}),
                          QueryServerConfig(workers=1, worker_memory_mb=2048))
    try:
        section = BenchmarkSection(server=handle.address, site_id="lab", signing_key=key_path, window_hours=6.0)
        metrics = DaemonMetrics("lab")
        job = BenchmarkJob(section, busy_site["store"], busy_site["topology"], on_answers=metrics.update_benchmark)
        answers = job.run_once(now=busy_site["end"])
    finally:
        handle.stop()
    assert answers and all(0.0 <= a.percentile <= 100.0 for a in answers)
    assert {a.family for a in answers} <= {"xid_rate", "thermal_violation_hours"}  # what the store can know
    text = generate_latest(metrics.registry).decode()
    assert 'infrabrain_benchmark_percentile{metric="' in text
    assert np.isfinite([a.z_score for a in answers]).all()


def test_bad_benchmark_section(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        BenchmarkSection(server="127.0.0.1:7443", site_id="lab", signing_key=tmp_path / "none.pem")
    (tmp_path / "k.pem").write_text("not a key")
    section = BenchmarkSection(server="127.0.0.1:7443", site_id="lab", signing_key=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="not an unencrypted PEM key"):
        BenchmarkJob(section, tmp_path / "s.db", None)  # type: ignore[arg-type]
