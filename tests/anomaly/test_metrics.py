"""Metric code, validated against the published PCA baseline on the 8 real SMD machines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from infrabrain.models.anomaly_baselines import IsolationForestDetector, PCADetector
from infrabrain.models.anomaly_data import load_dir
from infrabrain.models.anomaly_metrics import best_f1, evaluate, mean_over_machines, point_adjusted_best_f1, pr_auc


def test_best_f1_toy() -> None:
    y = np.array([0, 0, 1, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.9, 0.3, 0.4, 0.0])
    f1, thr = best_f1(y, s)
    # threshold 0.3 flags {0.9, 0.3, 0.4}: P=2/3, R=1 -> 0.8 ; threshold 0.9: P=1, R=.5 -> 0.667
    assert f1 == pytest.approx(0.8) and thr == pytest.approx(0.3)
    assert pr_auc(y, np.array([0, 0, 1, 1, 0, 0.0])) == pytest.approx(1.0)


def test_point_adjustment_inflates_and_is_separate() -> None:
    y = np.zeros(100, np.int8)
    y[10:30] = 1
    s = np.zeros(100)
    s[12] = 1.0  # one minute of a 20-minute segment
    assert best_f1(y, s)[0] == pytest.approx(1 / 3)  # best is flagging everything: P=0.2, R=1
    assert point_adjusted_best_f1(y, s) == pytest.approx(1.0)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        best_f1(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        pr_auc(np.array([0, 1]), np.array([0.0, np.nan]))
    e = evaluate(np.zeros(5, np.int8), np.arange(5.0))
    assert np.isnan(e["best_f1"])
    assert mean_over_machines([e, {"best_f1": 0.5}], "best_f1") == 0.5


def test_pca_reproduces_published_baseline(smd_dir: Path) -> None:
    """Per-machine PCA (90 % variance), raw squared error, no point adjustment: mean best-F1 0.567, PR-AUC 0.539."""
    rows = []
    with threadpool_limits(1):  # BLAS threads only fight each other on 2 cores
        for m in load_dir(smd_dir):
            rows.append(evaluate(m.test_label, PCADetector(0.90).fit(m.train).score_raw(m.test)))
    assert mean_over_machines(rows, "best_f1") == pytest.approx(0.567, abs=0.0015)
    assert mean_over_machines(rows, "pr_auc") == pytest.approx(0.539, abs=0.0015)


def test_isolation_forest_runs(slice_dir: Path) -> None:
    m = load_dir(slice_dir)[0]
    s = IsolationForestDetector(n_estimators=20).fit(m.train).score(m.test)
    assert s.shape == (1500,) and np.isfinite(s).all()
    assert s[m.test_label == 1].mean() > s[m.test_label == 0].mean()
