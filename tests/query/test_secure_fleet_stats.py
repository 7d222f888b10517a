"""Fleet reference: SecAgg+ sum with dropouts, exact Gaussian accounting, site statistics, the fitted CDF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infrabrain.privacy.secure_fleet_stats import (
    FleetStatsConfig,
    analytic_gaussian_epsilon,
    analytic_gaussian_sigma,
    build_fleet_aggregate,
    encode_contribution,
    metric_catalog,
)
from infrabrain.privacy.secure_sum import secure_sum


def test_secure_sum_with_dropouts_equals_plain_sum():
    rng = np.random.default_rng(0)
    vecs = [rng.integers(0, 2**20, 30).astype(np.uint64) for _ in range(8)]
    total, survivors = secure_sum(vecs, threshold=6, modulus=2**32, dropouts=[5], half_neighbourhood=2)
    assert survivors == [i for i in range(8) if i != 5]
    assert np.array_equal(total, sum(vecs[i] for i in survivors) % 2**32)


def test_secure_sum_aborts_below_threshold():
    vecs = [np.ones(4, dtype=np.uint64) for _ in range(5)]
    with pytest.raises(ValueError, match="threshold"):
        secure_sum(vecs, threshold=4, modulus=2**32, dropouts=[0, 1])


def test_masked_uploads_hide_the_inputs():
    """What the aggregator receives from one site is not that site's vector (it is masked)."""
    from infrabrain.privacy import secure_sum as sfs

    seen = []
    orig = sfs._prg

    def spy(seed, n, modulus):
        out = orig(seed, n, modulus)
        seen.append(out)
        return out

    sfs._prg = spy
    try:
        vecs = [np.full(16, 5, dtype=np.uint64) for _ in range(4)]
        total, _ = secure_sum(vecs, threshold=3, modulus=2**32)
    finally:
        sfs._prg = orig
    assert np.array_equal(total, np.full(16, 20, dtype=np.uint64))
    assert all(not np.array_equal(m % 2**32, np.zeros(16)) for m in seen)


def test_analytic_gaussian_round_trip():
    sens = math.sqrt(18)
    sigma = analytic_gaussian_sigma(4.0, sens, 1e-6)
    assert analytic_gaussian_epsilon(sigma, sens, 1e-6) == pytest.approx(4.0, rel=1e-6)
    # more noise -> less epsilon; the classical bound is looser than the analytic one
    assert analytic_gaussian_epsilon(2 * sigma, sens, 1e-6) < 4.0
    classical = sens * math.sqrt(2 * math.log(1.25 / 1e-6)) / 4.0
    assert sigma < classical


def test_site_statistics_from_simulator(fleet_stats):
    names = {m.name for m in metric_catalog()}
    for st in fleet_stats:
        assert set(st) == names
        for k, v in st.items():
            assert v is None or (math.isfinite(v) and v >= 0), (k, v)
    assert any(st["gpu_failure_rate.H100"] for st in fleet_stats)
    assert all(st["repair_time_hours"] is None or st["repair_time_hours"] > 0 for st in fleet_stats)


def test_contribution_is_one_hot_per_metric():
    cat = metric_catalog()
    vec = encode_contribution({"gpu_failure_rate.H100": 3e-5, "repair_time_hours": 4.0}, cat, 16)
    m = len(cat)
    assert vec[: m * 16].sum() == 2 and vec[m * 16 :].sum() == 2


def test_aggregate_records_sites_and_epsilon(fleet_stats, reference):
    agg = reference.aggregate
    assert agg.n_sites == len(fleet_stats)
    assert 0 < agg.epsilon <= 8.0 + 1e-9 and agg.delta == 1e-6
    h100 = reference.metrics[reference.index("gpu_failure_rate.H100")]
    assert h100.available and h100.fit_err <= 0.01
    assert np.all(np.diff(h100.grid_cdf) >= -1e-12) and h100.grid_cdf[-1] == pytest.approx(1.0)


def test_too_few_sites_is_refused():
    with pytest.raises(ValueError, match="min_sites"):
        build_fleet_aggregate([{}, {}], FleetStatsConfig(min_sites=3))


def test_site_statistics_from_a_site_run_with_telemetry():
    """A SiteRun (telemetry included) also yields thermal-violation hours from the DCGM counter."""
    from infrabrain.privacy.secure_fleet_stats import site_statistics
    from infrabrain.simulation.engine import simulate_site
    from infrabrain.simulation.spec import SiteSpec

    run = simulate_site(SiteSpec(racks_per_row=2, nodes_per_rack=2), hours=6, seed=1, acceleration=50.0)
    st = site_statistics(run)
    assert st["thermal_violation_hours"] is not None and st["thermal_violation_hours"] >= 0
    assert st["gpu_failure_rate.H100"] is not None and st["gpu_failure_rate.A100"] is None
