"""simulate_site: the data contract, physics that make sense, faults with precursors and cascades, labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infrabrain.simulation import CAUSES, METRIC_NAMES, SiteSimulation, SiteSpec, simulate_faults, simulate_site
from infrabrain.simulation.topology import KINDS


def _col(run, kind: str, name: str) -> np.ndarray:
    return run.metrics[kind][:, :, run.metric_names[kind].index(name)]


def test_contract_shapes_and_names(small_run) -> None:
    r = small_run
    assert r.timestamps.dtype == np.int64 and r.timestamps[1] - r.timestamps[0] == 60 and len(r.timestamps) == 1440
    for k in KINDS:
        arr = r.metrics[k]
        assert arr.dtype == np.float32 and arr.shape == (1440, r.topology.count(k), len(METRIC_NAMES[k]))
    assert "DCGM_FI_DEV_GPU_TEMP" in r.metric_names["gpu"] and "node_hwmon_temp_celsius" in r.metric_names["node"]
    assert list(r.events.columns) == ["t", "component_id", "kind", "event", "cause", "root_component", "xid",
                                      "detail"]
    assert set(r.events["event"]) <= {"failure", "xid", "throttle", "degrade", "inject", "recover", "job_fail"}
    assert r.labels.fail_within_1h.shape == (1440, r.topology.count("node"))
    assert r.labels.cause.dtype == np.int8 and r.labels.root_component.dtype == np.int64


def test_utilisation_drives_power_and_heat(small_run) -> None:
    util = _col(small_run, "gpu", "DCGM_FI_DEV_GPU_UTIL").ravel()
    power = _col(small_run, "gpu", "DCGM_FI_DEV_POWER_USAGE").ravel()
    temp = _col(small_run, "gpu", "DCGM_FI_DEV_GPU_TEMP").ravel()
    ok = ~np.isnan(util)
    assert np.corrcoef(util[ok], power[ok])[0, 1] > 0.9
    assert np.corrcoef(util[ok], temp[ok])[0, 1] > 0.5
    assert 0.3 < np.nanmean(util) / 100 < 0.95  # a busy site, not idle, not pinned
    # counters never decrease while a GPU is alive
    sbe = _col(small_run, "gpu", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
    d = np.diff(sbe, axis=0)
    assert np.nanmin(d) >= 0


def test_labels_follow_failures_and_dead_nodes_are_nan(small_run) -> None:
    r = small_run
    ev = r.events
    fails = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    assert len(fails) >= 5
    node_pos = {nid: i for i, nid in enumerate(r.topology.ids["node"])}
    gidx = {cid: i for i, cid in enumerate(r.topology.components["component_id"])}
    for f in fails.itertuples():
        n = node_pos[f.component_id]
        s = int(np.ceil(f.t / 60)) - 1  # last step before the failure
        if s < 0 or not r.labels.alive[s, n]:
            continue
        assert r.labels.fail_within_1h[s, n] and r.labels.fail_within_1h[max(0, s - 59), n]
        assert CAUSES[r.labels.cause[s, n]] == f.cause
        assert r.labels.root_component[s, n] == gidx[f.root_component]
        if s + 2 < len(r.timestamps):
            assert not r.labels.alive[s + 2, n]
            assert np.isnan(r.metrics["node"][s + 2, n]).all()
            assert np.isnan(r.metrics["gpu"][s + 2, n * 8:(n + 1) * 8]).all()
    # no failure within the hour -> no cause
    assert (r.labels.cause[~r.labels.fail_within_1h] == -1).all()


def test_dead_node_kills_its_job_on_other_nodes(small_run) -> None:
    ev = small_run.events
    jf = ev[ev["event"] == "job_fail"]
    assert len(jf) > 0
    fails = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    assert set(jf["t"]) <= set(fails["t"])  # every job kill coincides with a node failure
    node_pos = {nid: i for i, nid in enumerate(small_run.topology.ids["node"])}
    for row in jf.itertuples():
        same_t = fails[fails["t"] == row.t]
        assert (same_t["component_id"] != row.component_id).any()  # another node's failure killed it
        assert row.cause in set(same_t["cause"]) and row.root_component in set(same_t["root_component"])
        s = int(row.t // 60)
        if s + 1 < len(small_run.timestamps) and row.component_id not in set(same_t["component_id"]):
            assert small_run.labels.alive[s + 1, node_pos[row.component_id]]  # the victim itself stays up
    jobs = small_run.jobs
    assert (jobs["killed_by"] != "").sum() > 0
    # the killed job's nodes go idle: utilisation drops on the victims right after the kill
    util = small_run.metrics["gpu"][:, :, small_run.metric_names["gpu"].index("DCGM_FI_DEV_GPU_UTIL")]
    row = jf.iloc[0]
    n = node_pos[row.component_id]
    s = int(np.ceil(row.t / 60))
    if s + 2 < len(small_run.timestamps):
        before = np.nanmean(util[max(0, s - 3):s - 1, n * 8:(n + 1) * 8])
        assert before > 20 and np.nanmean(util[s + 1, n * 8:(n + 1) * 8]) < before


def _run_48h(name: str, rows: int, acceleration: float) -> tuple[SiteSimulation, object]:
    """A site of ``rows`` x 4 racks x 4 nodes (8 GPUs each), 48 h at ``acceleration``, seed 3: plan and run."""
    spec = SiteSpec(name=name, rows=rows, racks_per_row=4, nodes_per_rack=4)
    sim = SiteSimulation(spec, hours=48, seed=3, acceleration=acceleration)
    return sim, sim.run()


@pytest.fixture(scope="module")
def precursor_sim():
    """128 GPUs for 48 h at acceleration 150: ~60 failures of most causes."""
    return _run_48h("pre", 1, 150)


def test_hardware_failures_have_precursors_software_none(precursor_sim) -> None:
    """Over many failures: HBM shows ECC growth an hour ahead and XID 63; software shows nothing."""
    sim, run = precursor_sim
    inc = sim.plan.incidents
    real = inc[inc["failed"] & ~inc["benign"] & (inc["t_fail"] < 47 * 3600) & (inc["t_fail"] > 3 * 3600)]
    hw = real[real["visible"] & (real["cause"] != "software")]
    assert len(hw) >= 5
    assert ((hw["t_fail"] - hw["t_onset"]) >= 20 * 60 - 1).all()  # at least tens of minutes of warning
    assert not real[real["cause"].isin(["software", "gsp", "other"])]["visible"].any()
    sbe = run.metrics["gpu"][:, :, run.metric_names["gpu"].index("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")]
    ev = run.events
    hbm = real[(real["mode"] == "hbm") & real["visible"]]
    gpu0 = sim.topology.kind_index["gpu"][0]
    checked = 0
    for row in hbm.itertuples():
        g = int(row.root - gpu0)
        s_fail = int(row.t_fail // 60)
        lead_steps = int((row.t_fail - row.t_onset) // 60)
        a, b = s_fail - min(lead_steps, 600), s_fail - 60  # onset (or 10 h) vs one hour before failure
        if a < 0 or np.isnan(sbe[[a, b], g]).any():
            continue
        assert sbe[b, g] > sbe[a, g]
        gid = sim.topology.ids["gpu"][g]
        x63 = ev[(ev["component_id"] == gid) & (ev["xid"] == 63)]
        assert len(x63) and (x63["t"] < row.t_fail).all()
        checked += 1
    assert checked >= 1
    # software failures: no degrade event on their root before the failure
    soft = real[real["cause"] == "software"]
    ids = sim.topology.components["component_id"].to_numpy()
    for row in soft.itertuples():
        d = ev[(ev["event"] == "degrade") & (ev["component_id"] == ids[row.root]) & (ev["t"] < row.t_fail)
               & (ev["t"] > row.t_fail - 6 * 3600) & (ev["cause"] != "")]
        assert d.empty


def test_deterministic_and_fast_path_is_the_same_plan(small_spec) -> None:
    a = simulate_site(small_spec, hours=6, seed=11, acceleration=80)
    b = simulate_site(small_spec, hours=6, seed=11, acceleration=80)
    c = simulate_site(small_spec, hours=6, seed=12, acceleration=80)
    for k in KINDS:
        assert np.array_equal(a.metrics[k], b.metrics[k], equal_nan=True)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not np.array_equal(a.metrics["gpu"], c.metrics["gpu"], equal_nan=True)
    plan = simulate_faults(small_spec, hours=6, seed=11, acceleration=80)
    pd.testing.assert_frame_equal(plan.failures, SiteSimulation(small_spec, 6, 11, 80).plan.failures)
    # chunking does not change the data
    d = SiteSimulation(small_spec, 6, 11, 80).run(chunk_steps=37)
    assert np.array_equal(a.metrics["gpu"], d.metrics["gpu"], equal_nan=True)


def test_naive_rule_sees_hardware_not_software(precursor_sim) -> None:
    """A crude rule on the telemetry (counter growth over 30 min, hot GPUs, PDU near rating) flags nodes that
    fail within the hour from hardware causes far more often than others; software failures stay at chance."""
    sim, run = precursor_sim
    g, n = run.metrics["gpu"], run.metrics["node"]
    gn, nn = run.metric_names["gpu"], run.metric_names["node"]

    def grew(arr: np.ndarray, lag: int = 30) -> np.ndarray:
        out = np.zeros(arr.shape, dtype=bool)
        out[lag:] = np.nan_to_num(arr[lag:] - arr[:-lag]) > 0
        return out

    flag = np.zeros(g.shape[:2], dtype=bool)
    for m in ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_THERMAL_VIOLATION"):
        flag |= grew(g[:, :, gn.index(m)])
    flag |= np.nan_to_num(g[:, :, gn.index("DCGM_FI_DEV_GPU_TEMP")]) > 80
    node_flag = flag.reshape(g.shape[0], -1, 8).any(axis=2)
    for m in ("node_edac_correctable_errors_total", "node_infiniband_port_errors_received_total"):
        node_flag |= grew(n[:, :, nn.index(m)])
    pdu = run.metrics["pdu"]
    node_flag |= (np.nan_to_num(pdu[:, :, 0] / pdu[:, :, 1]) > 0.85)[:, sim.topology.pdu_of_node]
    lab = run.labels
    y = lab.fail_within_1h & lab.alive
    base = node_flag[lab.alive & ~y].mean()
    hw = y & np.isin(lab.cause, [CAUSES.index(c) for c in ("gpu", "hbm", "network", "nic", "thermal")])
    sw = y & np.isin(lab.cause, [CAUSES.index(c) for c in ("software", "gsp", "other")])
    assert hw.sum() > 200 and sw.sum() > 100
    assert node_flag[hw].mean() > 2 * base, (node_flag[hw].mean(), base)
    assert node_flag[sw].mean() < base + 0.1, (node_flag[sw].mean(), base)


@pytest.fixture(scope="module")
def outage_sim():
    """256 GPUs for 48 h at acceleration 300: ~140 node failures, many on nodes that fail again after repair."""
    return _run_48h("out", 2, 300)


def test_gpus_of_a_down_node_log_nothing_and_repair_clears_the_xid_gauge(outage_sim) -> None:
    """A powered-off GPU logs no XID or throttle; DCGM restarts with a repaired node, so its XID gauge reads 0."""
    sim, run = outage_sim
    topo, ev, f = sim.topology, run.events, sim.plan.failures
    gid_index = {c: i for i, c in enumerate(topo.ids["gpu"])}
    assert len(f) >= 100
    logged = ev[ev["event"].isin(["xid", "throttle"])]
    assert len(logged) >= 40
    for row in logged.itertuples():
        node = int(topo.node_of_gpu[gid_index[row.component_id]])
        # events store whole seconds: an XID raised at the failure instant may read up to 0.5 s after it
        down = f[(f["node"] == node) & (f["t"] < row.t - 1) & (f["t_repair"] > row.t + 1)]
        assert down.empty, f"{row.event} {row.xid} on {row.component_id} at {row.t} s while its node is down"
    xg = run.metrics["gpu"][:, :, run.metric_names["gpu"].index("DCGM_FI_DEV_XID_ERRORS")]
    cad = int(run.timestamps[1] - run.timestamps[0])
    gpn = sim.spec.gpus_per_node
    checked = 0
    for node, tr in zip(f["node"], f["t_repair"], strict=True):
        s = int(np.ceil(tr / cad))  # the first step back up
        if s >= len(run.timestamps) or not run.labels.alive[s, node]:
            continue
        fresh = logged[(logged["event"] == "xid") & (logged["t"] >= tr - 1) & (logged["t"] <= s * cad)]
        fresh_gpus = {gid_index[c] for c in fresh["component_id"]}
        for g in range(node * gpn, (node + 1) * gpn):
            if g in fresh_gpus or np.isnan(xg[s, g]):
                continue
            assert xg[s, g] == 0, f"GPU {topo.ids['gpu'][g]} shows XID {xg[s, g]:g} right after its node's repair"
            checked += 1
    assert checked >= 200


def test_the_xid_gauge_does_not_depend_on_the_chunking(outage_sim) -> None:
    """An XID (or a repair's reset) landing between two chunks' steps shows in the next chunk, not lost."""
    sim, run = outage_sim
    xi = run.metric_names["gpu"].index("DCGM_FI_DEV_XID_ERRORS")
    for chunk in (7, 61):
        again = SiteSimulation(sim.spec, 48, 3, 300).run(chunk_steps=chunk)
        assert np.array_equal(run.metrics["gpu"][:, :, xi], again.metrics["gpu"][:, :, xi], equal_nan=True), chunk
