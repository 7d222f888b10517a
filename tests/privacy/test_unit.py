"""The privacy unit is enforced: overlapping training windows are refused; group privacy is computed right."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.dp_training import DPConfig, train_dp
from infrabrain.privacy.ledger import PrivacyLedger
from infrabrain.privacy.unit import group_privacy, overlap_factor


class Windows(TensorDataset):
    """A windowed dataset that declares its window and stride like SnapshotDataset."""

    def __init__(self, window: int, stride: int) -> None:
        x = torch.randn(100, 8)
        super().__init__(x, (x[:, 0] > 0).long())
        self.window, self.stride = window, stride


def test_overlap_factor():
    assert overlap_factor(Windows(60, 60)) == 1
    assert overlap_factor(Windows(60, 10)) == 6
    assert overlap_factor(Windows(60, 25)) == 3
    assert overlap_factor(TensorDataset(torch.zeros(3))) == 1


def test_overlapping_training_windows_are_refused(tmp_path, make_model, loss_fn):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    cfg = DPConfig(noise_multiplier=1.0, expected_batch_size=10, steps=2)
    with pytest.raises(ValueError, match=r"training windows overlap \(stride=10 < window=60"):
        train_dp(make_model(), Windows(60, 10), loss_fn, config=cfg, ledger=ledger)
    assert ledger.runs == ()
    assert train_dp(make_model(), Windows(60, 60), loss_fn, config=cfg, ledger=ledger).steps == 2


def test_group_privacy():
    assert group_privacy(1.0, 1e-5, 1) == (1.0, 1e-5)
    eps, delta = group_privacy(1.0, 1e-5, 2)
    assert eps == 2.0 and delta == pytest.approx(2 * math.e * 1e-5)
    with pytest.raises(ValueError, match="group size"):
        group_privacy(1.0, 1e-5, 0)
