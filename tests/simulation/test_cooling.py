"""Cascades follow the graph: after a cooling-unit failure, failures concentrate in the racks it cools."""

from __future__ import annotations

import numpy as np

from infrabrain.simulation import Injection, SiteSpec, simulate_faults, simulate_site


def test_cooling_failure_hazard_ratio_above_10() -> None:
    """Natural cooling incidents over a long run: node failures in the 3 h after each one, per node-hour."""
    spec = SiteSpec(name="cool", rows=2, racks_per_row=8, nodes_per_rack=4, racks_per_cooling=2)
    plan = simulate_faults(spec, hours=8000, seed=5, acceleration=50.0)
    topo = plan.topology
    inc = plan.incidents
    cool = inc[(inc["mode"] == "cooling") & inc["failed"] & (inc["t_first"] < 7997 * 3600.0)]
    assert len(cool) >= 5
    f = plan.failures
    n_node = topo.count("node")
    in_fail = out_fail = in_nh = out_nh = 0.0
    for row in cool.itertuples():
        unit = int(row.root - topo.kind_index["cooling"][0])
        cooled = np.isin(topo.rack_of_node, np.flatnonzero(topo.cooling_of_rack == unit))
        t0 = row.t_first
        w = f[(f["t"] >= t0) & (f["t"] < t0 + 3 * 3600.0)]
        hit = cooled[w["node"].to_numpy()]
        in_fail += hit.sum()
        out_fail += (~hit).sum()
        in_nh += cooled.sum() * 3.0
        out_nh += (n_node - cooled.sum()) * 3.0
    hr = (in_fail / in_nh) / max(out_fail / out_nh, 1e-12)
    assert out_fail > 0, "background failures elsewhere are needed for a meaningful ratio"
    assert hr > 10, hr
    print(f"cooling incidents {len(cool)}, hazard ratio {hr:.1f}")


def test_injected_cooling_failure_heats_its_racks_only() -> None:
    spec = SiteSpec(name="inj", rows=1, racks_per_row=4, nodes_per_rack=4, racks_per_cooling=2)
    run = simulate_site(spec, hours=6, seed=1, injections=(Injection("crac-2", 2 * 3600.0),))
    topo = run.topology
    inlet = run.metrics["rack"][:, :, 0]
    cooled = topo.cooling_of_rack == 1
    before, after = slice(60, 110), slice(160, 200)
    rise_in = np.nanmean(inlet[after][:, cooled]) - np.nanmean(inlet[before][:, cooled])
    rise_out = np.nanmean(inlet[after][:, ~cooled]) - np.nanmean(inlet[before][:, ~cooled])
    assert rise_in > 8.0 and abs(rise_out) < 2.0
    ev = run.events
    fails = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    assert len(fails) >= 1 and (fails["root_component"] == "crac-2").all()
    racks_hit = {c.split("-")[0] for c in fails["component_id"]}
    assert racks_hit <= {topo.ids["rack"][r] for r in np.flatnonzero(cooled)}
    tv = run.metrics["gpu"][:, :, run.metric_names["gpu"].index("DCGM_FI_DEV_THERMAL_VIOLATION")]
    last = np.nanmax(tv, axis=0)
    gpu_cooled = cooled[topo.rack_of_node[topo.node_of_gpu]]
    assert (last[gpu_cooled] > 0).sum() > 0 and (last[~gpu_cooled] > 0).sum() == 0
