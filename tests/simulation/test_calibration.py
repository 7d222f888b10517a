"""Calibration against the Llama 3 report, over a long fleet at acceleration 1 (events-only fast path)."""

from __future__ import annotations

import pytest

from infrabrain.simulation import CAUSE_SHARES, SiteSpec, simulate_faults
from infrabrain.simulation.faults import interruption_stats

LLAMA3_RATE = 2e-5  # 419 unexpected interruptions / (16,384 GPUs x 54 days x 24 h) = 1.97e-5


def test_fleet_rate_and_cause_mix_match_llama3() -> None:
    # a 16,384-GPU fleet for 9,000 hours (~1.5e8 GPU-hours, ~3,000 interruptions), the simulator's own code path
    spec = SiteSpec(name="fleet", rows=16, racks_per_row=32, nodes_per_rack=4)
    plans = [simulate_faults(spec, hours=3000, seed=s, acceleration=1.0) for s in range(3)]
    st = interruption_stats(plans)
    assert st["gpu_hours"] > 1e8
    assert abs(st["rate_per_gpu_hour"] / LLAMA3_RATE - 1.0) < 0.30, st["rate_per_gpu_hour"]
    for cause, share in CAUSE_SHARES.items():
        assert abs(st["shares"][cause] - share) < 0.05, (cause, st["shares"][cause], share)
    # the acceleration factor scales the rate and nothing else
    fast = interruption_stats([simulate_faults(spec, hours=300, seed=9, acceleration=10.0)])
    assert abs(fast["rate_per_gpu_hour"] / (10 * LLAMA3_RATE) - 1.0) < 0.30


def test_interruption_rate_independent_of_site_shape() -> None:
    wide = SiteSpec(name="wide", rows=1, racks_per_row=64, nodes_per_rack=2, racks_per_cooling=8)
    tall = SiteSpec(name="tall", rows=4, racks_per_row=4, nodes_per_rack=8, racks_per_cooling=1)
    for spec in (wide, tall):
        st = interruption_stats([simulate_faults(spec, hours=2000, seed=1, acceleration=50.0)])
        assert abs(st["rate_per_gpu_hour"] / (50 * LLAMA3_RATE) - 1.0) < 0.30, spec.name


def test_cause_scale_multiplies_only_the_named_causes() -> None:
    from infrabrain.simulation.faults import MODES, mode_rates
    from infrabrain.simulation.spec import FaultSpec
    from infrabrain.simulation.topology import build_topology

    base = SiteSpec(name="fleet", rows=2, racks_per_row=8, nodes_per_rack=4)
    scaled = base.model_copy(update={"faults": FaultSpec(cause_scale={"psu": 10.0, "thermal": 0.0})})
    r0, r1 = mode_rates(build_topology(base), 50.0), mode_rates(build_topology(scaled), 50.0)
    want = [{"psu": 10.0 * a, "thermal": 0.0}.get(m.cause, a) for m, a in zip(MODES, r0)]
    assert list(r1) == pytest.approx(want, rel=1e-12)
    # and the simulated incidents follow: no thermal one, about ten times the PSU ones
    st0 = interruption_stats([simulate_faults(base, hours=2000, seed=3, acceleration=50.0)])
    st1 = interruption_stats([simulate_faults(scaled, hours=2000, seed=3, acceleration=50.0)])
    assert st0["by_cause"]["thermal"] > 0 and st1["by_cause"]["thermal"] == 0
    assert 6.0 < st1["by_cause"]["psu"] / max(st0["by_cause"]["psu"], 1) < 16.0, (st0["by_cause"], st1["by_cause"])
