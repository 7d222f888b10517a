"""The AnomalyScorer API the predictor and the daemon call: fit, score per node-minute, explain, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infrabrain.models.anomaly_data import load_dir
from infrabrain.models.anomaly_hdc import HDCConfig
from infrabrain.models.anomaly_neural import NeuralConfig
from infrabrain.models.anomaly_scorer import AnomalyScorer


@pytest.mark.parametrize("kind", ["neural", "hdc"])
def test_fit_score_explain_save_load(kind: str, slice_dir: Path, tmp_path: Path) -> None:
    m = load_dir(slice_dir)[1]  # machine-2-7
    sc = AnomalyScorer(kind, neural=NeuralConfig(epochs=3), hdc=HDCConfig(fit_sample=1000)).fit(m.train)
    s = sc.score(m.test)
    assert s.shape == (m.test.shape[0],) and s.dtype == np.float32
    assert np.median(sc.score(m.train[:500])) < 10.0  # a few on normal history (standardised units)
    assert s[m.test_label == 1].mean() > 1.5 * np.median(s)
    assert sc.score_latest(m.test[:700]) == pytest.approx(float(sc.score(m.test[:700])[-1]), rel=1e-5)
    nodes = sc.score_nodes(np.stack([m.test[:100], m.test[100:200]], axis=1))
    np.testing.assert_allclose(nodes[:, 1], sc.score(m.test[100:200]), rtol=1e-5)
    expl = sc.explain(m.test, threshold=float(np.quantile(s, 0.995)), k=3)
    assert expl and all(len(e.metrics) == 3 for e in expl)
    sc.save(tmp_path / "scorer.npz")
    back = AnomalyScorer.load(tmp_path / "scorer.npz")
    np.testing.assert_allclose(back.score(m.test), s, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="37 metrics, the scorer was fitted on 38"):
        sc.score(m.test[:, :37])
    bad = m.test[:10].copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sc.score(bad)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        AnomalyScorer("lstm")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not fitted"):
        AnomalyScorer().score(np.zeros((3, 4)))
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an anomaly scorer"):
        AnomalyScorer.load(tmp_path / "x.npz")


def test_raw_units_are_normalised(slice_dir: Path) -> None:
    """Exporter units (bytes next to fractions) must not let one metric dominate: scores are scale-free."""
    m = load_dir(slice_dir)[1]
    units = np.logspace(0, 9, 38).astype(np.float32)
    cfg = NeuralConfig(epochs=1)
    a = AnomalyScorer("neural", neural=cfg).fit(m.train[:2000]).score(m.test)
    b = AnomalyScorer("neural", neural=cfg).fit(m.train[:2000] * units).score(m.test * units)
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-2)
    raw = AnomalyScorer("neural", neural=cfg, normalise=False).fit(m.train[:2000] * units).score(m.test * units)
    assert not np.allclose(raw, b, rtol=0.1)
