"""Federation on real SMD slices: every machine a site, DP-SGD via the privacy ledger, Flower aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infrabrain.models.anomaly_data import load_dir
from infrabrain.models.anomaly_federated import (
    FedAnomalyConfig,
    SiteData,
    _aggregator,
    detectors_from_global,
    personalise,
    run_federated,
)
from infrabrain.privacy.ledger import BudgetExceededError
from infrabrain.models.anomaly_neural import NeuralConfig, build_model, get_weights


def test_aggregation_is_the_federation_strategy_weighted_mean() -> None:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    aggregate, key = _aggregator(FedAnomalyConfig())
    replies = [RecordDict({"arrays": ArrayRecord([np.full(3, v, np.float32)]), "metrics": MetricRecord({key: n})})
               for v, n in ((1.0, 10), (3.0, 30))]
    (out,) = aggregate(replies, key).to_numpy_ndarrays()
    np.testing.assert_allclose(out, 2.5)
    with pytest.raises(ValueError):
        _aggregator(FedAnomalyConfig(strategy="nope"))  # the federation config refuses unknown strategies


def test_federated_dp_spends_recorded_epsilon_within_budget(slice_dir: Path, tmp_path: Path) -> None:
    sites = [SiteData(m.name, m.train[:2000]) for m in load_dir(slice_dir)]
    ncfg = NeuralConfig()
    # fixed sigma keeps the test fast (no calibration); RDP: 2 runs of 4 steps at q=0.128 -> eps 7.79 <= 8
    cfg = FedAnomalyConfig(rounds=2, local_epochs=0.5, epsilon=8.0, accountant="rdp", noise_multiplier=0.7)
    res = run_federated(sites, ncfg, cfg, tmp_path / "ledgers")
    init = get_weights(build_model(38, ncfg))
    assert any(not np.allclose(a, b) for a, b in zip(init, res.weights))
    for s in sites:
        assert 7.0 < res.epsilon[s.name] <= 8.0
        ledger = json.loads((tmp_path / "ledgers" / s.name / "privacy-ledger.json").read_text())
        assert [r["status"] for r in ledger["runs"]] == ["committed", "committed"]
        assert ledger["epsilon_spent"] == pytest.approx(res.epsilon[s.name])
    # the budget persists: a second federation on the same ledgers would reach ~8.8 > 8 and is refused
    with pytest.raises(BudgetExceededError):
        run_federated(sites, ncfg, cfg, tmp_path / "ledgers")
    dets = detectors_from_global(sites, res.weights, ncfg)
    m = load_dir(slice_dir)[1]
    s = dets[m.name].score(m.test)
    assert s.shape == (m.test.shape[0],) and np.isfinite(s).all()
    det, cpu = personalise(sites[1], res.weights, ncfg, epochs=1)
    assert cpu > 0 and np.isfinite(det.score(m.test)).all()


def test_sites_must_agree_on_metrics(tmp_path: Path) -> None:
    sites = [SiteData("a", np.zeros((100, 4), np.float32)), SiteData("b", np.zeros((100, 5), np.float32))]
    with pytest.raises(ValueError, match="same metric count"):
        run_federated(sites, NeuralConfig(), FedAnomalyConfig(rounds=1), tmp_path)
