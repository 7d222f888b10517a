"""Shared fixtures for the privacy tests: one thread, a tiny generic model and dataset."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

torch.set_num_threads(1)


def tiny_dataset(n: int = 400, dim: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def tiny_model(dim: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 2))


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


@pytest.fixture
def dataset() -> TensorDataset:
    return tiny_dataset()


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def loss_fn():
    return ce_loss
