"""Federations: sites differ (non-IID) and everything follows from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.simulation import federation_specs, simulate_federation
from infrabrain.simulation.federation import FederationSpec


def test_sites_differ_and_are_deterministic() -> None:
    specs = federation_specs(6, seed=4)
    assert specs == federation_specs(6, seed=4)
    assert federation_specs(3, seed=4) == specs[:3]  # adding sites keeps the others
    assert specs != federation_specs(6, seed=5)
    assert len({s.name for s in specs}) == 6
    for attr in ("ambient_temp_c", "n_gpus"):
        assert len({getattr(s, attr) for s in specs}) > 1, attr
    assert len({tuple(sorted(s.gpu_mix)) for s in specs}) > 1
    assert len({s.workload.profile for s in specs}) > 1
    assert len({s.faults.rate_scale for s in specs}) > 1 and len({s.faults.firmware_quality for s in specs}) > 1


def test_simulate_federation_is_non_iid_and_reproducible() -> None:
    a = simulate_federation(3, hours=6, seed=2, acceleration=30)
    b = simulate_federation(3, hours=6, seed=2, acceleration=30)
    assert [r.name for r in a] == ["site-0", "site-1", "site-2"]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.metrics["gpu"], y.metrics["gpu"], equal_nan=True)
    temps = [np.nanmean(r.metrics["rack"]) for r in a]
    assert max(temps) - min(temps) > 1.0  # different ambient temperatures show in the data


def test_duplicate_site_names_rejected() -> None:
    s = federation_specs(1, seed=0)[0]
    with pytest.raises(ValueError, match="unique"):
        FederationSpec(sites=[s, s])
    with pytest.raises(ValueError, match="n_sites"):
        federation_specs(0)
