"""bench/predictor_fields.py's parts that decide its numbers: which fields a condition removes, and how."""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_a_missing_field_is_nan_at_every_component_and_nothing_else_changes(small_runs, load_bench) -> None:
    bench = load_bench("predictor_fields")
    run = small_runs[0]
    before = {k: np.array(v, copy=True) for k, v in run.metrics.items()}
    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    out = bench.without_fields(run, {"gpu": (ecc,), "pdu": None})
    j = list(run.metric_names["gpu"]).index(ecc)
    assert np.isnan(out.metrics["gpu"][:, :, j]).all() and np.isnan(out.metrics["pdu"]).all()
    others = np.delete(out.metrics["gpu"], j, axis=2)
    np.testing.assert_array_equal(others, np.delete(before["gpu"], j, axis=2))
    np.testing.assert_array_equal(out.metrics["node"], before["node"])
    for kind, values in run.metrics.items():  # the run itself is left as it was
        np.testing.assert_array_equal(values, before[kind])
    with pytest.raises(SystemExit, match="no field 'DCGM_FI_DEV_GPU_TEMPERATURE' of kind 'gpu'"):
        bench.without_fields(run, {"gpu": ("DCGM_FI_DEV_GPU_TEMPERATURE",)})
    with pytest.raises(SystemExit, match="no component kind 'tpu'"):
        bench.without_fields(run, {"tpu": None})


def test_conditions_cover_every_read_field_and_the_presets_name_real_fields(small_runs, load_bench) -> None:
    bench = load_bench("predictor_fields")
    run = small_runs[0]
    names = bench.conditions(run, per_field=True)
    assert "pdu:pdu_rating_kw" not in names  # static: the model does not read it
    assert {"gpu:DCGM_FI_DEV_XID_ERRORS", "node:" + bench.IB, "none", *bench.PRESETS} <= set(names)
    assert set(bench.conditions(run, per_field=False)) == {"none", *bench.PRESETS}
    for lack in bench.PRESETS.values():
        bench.without_fields(run, lack)  # every preset field exists in the simulator's telemetry


def test_summary_is_the_mean_change_from_every_field_sent(load_bench) -> None:
    bench = load_bench("predictor_fields")
    draw = lambda pr, rec: {"none": dict.fromkeys(bench.KEYS, 0.5),  # noqa: E731
                            "x": {"pr_auc": pr, "pr_auc_cascade": math.nan,
                                  "event_recall_at_p50_precursor": rec, "median_lead_min": 30.0}}
    s = bench.summarise([draw(0.3, 0.4), draw(0.4, 0.5)])["x"]
    assert s["pr_auc"] == pytest.approx(0.35) and s["pr_auc_delta"] == pytest.approx(-0.15)
    assert s["event_recall_at_p50_precursor_delta"] == pytest.approx(-0.05)
    assert s["pr_auc_cascade"] is None and s["pr_auc_cascade_per_draw"] == [None, None]
