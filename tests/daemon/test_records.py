"""Records: the daemon's metric names cover the simulator's; wide frames flatten correctly."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.client.records import KINDS, SampleBatch, is_counter, known_metrics, validate_metric


def test_known_metrics_cover_the_simulator() -> None:
    from infrabrain.simulation.telemetry import METRIC_NAMES

    for kind, names in METRIC_NAMES.items():
        missing = set(names) - set(known_metrics(kind))
        assert not missing, f"simulator metrics unknown to the daemon for {kind}: {missing}"
    assert set(METRIC_NAMES) <= set(KINDS)


def test_unknown_metric_and_kind_are_named() -> None:
    with pytest.raises(ValueError, match="unknown metric 'DCGM_FI_DEV_NOPE' for component kind 'gpu'"):
        validate_metric("gpu", "DCGM_FI_DEV_NOPE")
    with pytest.raises(ValueError, match="unknown component kind 'router'"):
        known_metrics("router")


def test_from_wide_and_counters() -> None:
    b = SampleBatch.from_wide([60, 60], ["g0", "g1"], "gpu", ["A", "B_total"], np.array([[1.0, 2.0], [3.0, np.nan]]))
    assert list(zip(b.component_id, b.metric, b.value))[:3] == [("g0", "A", 1.0), ("g0", "B_total", 2.0),
                                                               ("g1", "A", 3.0)]
    assert np.isnan(b.value[3]) and len(b) == 4
    with pytest.raises(ValueError, match="does not match"):
        SampleBatch.from_wide([60], ["g0", "g1"], "gpu", ["A"], np.zeros((2, 1)))
    assert is_counter("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL") and not is_counter("DCGM_FI_DEV_GPU_TEMP")
