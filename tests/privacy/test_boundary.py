"""The boundary schema: only declared weights, allow-listed metrics and DP accounting may leave a site."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.privacy.boundary import ArraySpec, BoundarySchema, BoundaryViolation, spec_from_arrays

WEIGHTS = {"layer.weight": np.zeros((4, 3), np.float32), "layer.bias": np.zeros(4, np.float32)}
METRICS = {"num-examples": 120, "train-loss": 0.4, "epsilon": 2.5, "delta": 1e-5, "dp-steps": 30,
           "noise-multiplier": 1.1}


@pytest.fixture
def schema() -> BoundarySchema:
    return BoundarySchema(spec_from_arrays(WEIGHTS))


def test_a_well_formed_update_passes(schema):
    upd = schema.check(kind="train", round=3, metrics=METRICS, arrays=WEIGHTS, site="site-0123456789ab",
                       epsilon_budget=8.0)
    assert upd.round == 3 and set(upd.arrays) == set(WEIGHTS) and upd.metrics["epsilon"] == 2.5
    ev = schema.check(kind="evaluate", round=3, metrics={"num-examples": 50, "pr-auc": 0.7})
    assert ev.arrays == {}


@pytest.mark.parametrize("metrics,match", [
    ({**METRICS, "hostname": 1.0}, r"metric key\(s\) \['hostname'\] may not leave"),
    ({**METRICS, "timestamp": 1.7e9}, "may not leave"),
    ({k: v for k, v in METRICS.items() if k != "epsilon"}, r"lacks required metric\(s\) \['epsilon'\]"),
    ({**METRICS, "train-loss": "r03-n07 failed"}, "must be a number"),
    ({**METRICS, "train-loss": float("nan")}, "must be finite"),
    ({**METRICS, "num-examples": 12.5}, "positive integer"),
    ({**METRICS, "epsilon": 9.0}, "exceeds the site's budget"),
    ({**METRICS, "delta": 0.0}, "delta"),
])
def test_bad_metrics_are_refused(schema, metrics, match):
    with pytest.raises(BoundaryViolation, match=match):
        schema.check(kind="train", round=0, metrics=metrics, arrays=WEIGHTS, epsilon_budget=8.0)


@pytest.mark.parametrize("arrays,match", [
    ({**WEIGHTS, "raw_telemetry": np.zeros((10, 3), np.float32)}, "unknown"),
    ({"layer.weight": WEIGHTS["layer.weight"]}, "missing"),
    ({"layer.bias": WEIGHTS["layer.bias"], "layer.weight": WEIGHTS["layer.weight"]}, "order differs"),
    ({**WEIGHTS, "layer.weight": np.zeros((5, 3), np.float32)}, "shape"),
    ({**WEIGHTS, "layer.weight": np.zeros((4, 3), np.float64)}, "dtype"),
    ({**WEIGHTS, "layer.weight": np.array([["r03"] * 3] * 4)}, "dtype"),
    ({**WEIGHTS, "layer.weight": np.full((4, 3), np.inf, np.float32)}, "NaN or infinity"),
    ({**WEIGHTS, "layer.weight": [[0.0] * 3] * 4}, "numpy array"),
])
def test_bad_arrays_are_refused(schema, arrays, match):
    with pytest.raises(BoundaryViolation, match=match):
        schema.check(kind="train", round=0, metrics=METRICS, arrays=arrays)


def test_other_bad_updates(schema):
    with pytest.raises(BoundaryViolation, match="may not carry arrays"):
        schema.check(kind="evaluate", round=0, metrics={"num-examples": 1}, arrays=WEIGHTS)
    with pytest.raises(BoundaryViolation, match="round"):
        schema.check(kind="train", round=-1, metrics=METRICS, arrays=WEIGHTS)
    with pytest.raises(BoundaryViolation, match="pseudonym"):
        schema.check(kind="train", round=0, metrics=METRICS, arrays=WEIGHTS, site="gpu-a01.dc1")
    with pytest.raises(BoundaryViolation, match="kind"):
        schema.check(kind="raw", round=0, metrics=METRICS)
    with pytest.raises(ValueError, match="dtype"):
        ArraySpec(name="x", shape=(1,), dtype="object")
