"""Neural and HDC detectors on a real SMD slice: shapes, Opacus compatibility, anomalies score higher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from infrabrain.models.anomaly_data import load_dir
from infrabrain.models.anomaly_explain import explain_segments, find_segments, hit_at_k
from infrabrain.models.anomaly_hdc import HDCConfig, HDCDetector
from infrabrain.models.anomaly_metrics import best_f1
from infrabrain.models.anomaly_neural import (
    NeuralConfig,
    NeuralDetector,
    build_model,
    get_weights,
    make_windows,
    set_weights,
)
from infrabrain.models.anomaly_scoring import contributions, trailing_mean

FAST = NeuralConfig(epochs=3)


def test_make_windows_and_trailing_mean() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    w = make_windows(x, 2)
    assert w.shape == (4, 6)
    np.testing.assert_array_equal(w[0], [0, 1, 2, 0, 1, 2])  # padded with the first row
    np.testing.assert_array_equal(w[3], [6, 7, 8, 9, 10, 11])
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 2, 3, 4]), 2), [1, 1.5, 2.5, 3.5])
    with pytest.raises(ValueError, match="smooth"):
        trailing_mean(np.ones(3), 0)


def test_model_is_opacus_compatible_and_weights_roundtrip() -> None:
    cfg = NeuralConfig(window=3)
    m = build_model(38, cfg)
    assert ModuleValidator.validate(m, strict=True) == []
    assert m(torch.zeros(7, 3 * 38)).shape == (7, 38)
    w = get_weights(m)
    m2 = build_model(38, cfg.model_copy(update={"seed": 5}))
    set_weights(m2, w)
    for a, b in zip(w, get_weights(m2)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        set_weights(m2, [np.zeros((2, 2))] + w[1:])
    with pytest.raises(ValueError, match="expected 8 weight arrays"):
        set_weights(m2, w[:3])


def test_neural_detects_real_anomalies(slice_dir: Path) -> None:
    m = load_dir(slice_dir)[0]  # machine-1-6, 1500 minutes, 4 labelled segments
    det = NeuralDetector.fit(m.train, FAST)
    s = det.score(m.test)
    assert s.shape == (1500,) and np.isfinite(s).all() and det.train_cpu_s > 0
    assert best_f1(m.test_label, s)[0] > 0.5
    with pytest.raises(ValueError, match="expected \\[T, 38\\]"):
        det.score(m.test[:, :37])
    with pytest.raises(ValueError, match="NaN"):
        NeuralDetector.fit(np.full((10, 3), np.nan, np.float32), FAST)


def test_hdc_detects_real_anomalies_and_is_deterministic(slice_dir: Path) -> None:
    m = load_dir(slice_dir)[0]
    cfg = HDCConfig(fit_sample=1000)
    det = HDCDetector(cfg).fit(m.train)
    s = det.score(m.test)
    assert s.shape == (1500,) and np.isfinite(s).all()
    assert best_f1(m.test_label, s)[0] > 0.5
    np.testing.assert_array_equal(s, HDCDetector(cfg).fit(m.train).score(m.test))
    # level chain: similarity falls with level distance; far levels ~orthogonal
    lv = det.level_hv.astype(np.float32)
    sims = lv @ lv[0] / cfg.dim
    assert np.all(np.diff(sims) < 0) and abs(sims[-1]) < 0.1
    # decoded prototypes reconstruct normal minutes far better than a shifted minute
    normal = np.abs(det.residuals(m.train[:200])).mean()
    assert normal < 0.1
    with pytest.raises(RuntimeError, match="fit"):
        HDCDetector().score(m.test)
    with pytest.raises(ValueError, match="expected \\[T, 38\\]"):
        det.score(m.test[:, :5])


def test_explanations_name_the_injected_metric(slice_dir: Path) -> None:
    m = load_dir(slice_dir)[1]  # machine-2-7
    det = HDCDetector(HDCConfig(fit_sample=1000)).fit(m.train)
    x = m.train[:300].copy()
    x[100:110, 7] = np.clip(x[100:110, 7] + 0.8, 0, 1.5)
    c = contributions(det.residuals(x), det.scale)
    (e,) = explain_segments(c, [(100, 109)], k=3)
    assert e.metrics[0] == 7 and e.shares[0] > 0.3
    assert find_segments(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 2), (4, 4), (7, 7)]
    assert find_segments(np.array([0, 1, 1, 0, 1], bool), min_length=2) == [(1, 2)]
    # the real labelled segments of the slice: hit@3 is a list of booleans, one per segment
    hits = hit_at_k(contributions(det.residuals(m.test), det.scale), m.segments)
    assert len(hits) == len(m.segments) >= 1
    with pytest.raises(ValueError, match="outside"):
        explain_segments(c, [(290, 400)])
