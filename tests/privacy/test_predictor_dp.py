"""DP-SGD on the real failure predictor (infrabrain.models) over a simulated site, through the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant

from infrabrain.privacy.boundary import BoundarySchema, spec_from_arrays
from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.dp_training import DPConfig, train_dp
from infrabrain.privacy.ledger import PrivacyLedger


def test_predictor_trains_under_dp_and_its_update_passes_the_boundary(tmp_path):
    from infrabrain.models.gnn import FailurePredictor, ModelConfig
    from infrabrain.models.snapshots import collate_snapshots, make_splits
    from infrabrain.models.training import get_weights, loss_fn
    from infrabrain.simulation import SiteSpec, simulate_site

    run = simulate_site(SiteSpec(name="s0", racks_per_row=2), hours=30, seed=0, acceleration=50)
    splits = make_splits([run], window_min=60, stride_min=60, fractions=(0.7, 0.85))  # non-overlapping windows
    train = splits.train
    assert len(train) >= 10
    torch.manual_seed(0)
    model = FailurePredictor(ModelConfig(window=splits.window, pool=splits.pool,
                                         n_features=splits.feature_set.f_max, hidden=8, layers=1))
    names = [k for k, _ in model.named_parameters()]
    before = {k: a for k, a in zip(names, get_weights(model))}
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8.0))
    cfg = DPConfig(noise_multiplier=1.5, expected_batch_size=4, steps=3, optimizer="adam", lr=1e-2,
                   max_physical_batch_size=4)
    res = train_dp(model, train, loss_fn, collate_snapshots, config=cfg, ledger=ledger, round=1)

    offline = PRVAccountant()
    for _ in range(3):
        offline.step(noise_multiplier=1.5, sample_rate=4 / len(train))
    assert res.epsilon_total == pytest.approx(offline.get_epsilon(delta=1e-5), rel=0.01)
    after = {k: a for k, a in zip(names, get_weights(res.model))}
    assert any(not np.array_equal(before[k], after[k]) for k in names)

    schema = BoundarySchema(spec_from_arrays(before))
    update = schema.check(kind="train", round=1, arrays=after, epsilon_budget=ledger.budget.epsilon_total, metrics={
        "num-examples": res.num_samples, "train-loss": res.mean_loss, "epsilon": res.epsilon_total,
        "delta": res.delta, "dp-steps": res.steps, "noise-multiplier": res.noise_multiplier})
    assert update.metrics["epsilon"] == PrivacyLedger.load(tmp_path).epsilon_spent
