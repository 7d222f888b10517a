"""A small, fast audit task: a linear rule in 50 dimensions with mislabelled canaries.

Canaries are drawn from the same distribution as the training data but carry the *wrong* label. A model that
did not see a canary predicts its true label (high loss on the canary's label); a model that memorised it has
a low loss. That makes membership visible without DP, and DP-SGD must hide it. Used by the tests and by
``bench/privacy.py``; the same :func:`~infrabrain.privacy.audit.one_run_audit` works with any model/data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


@dataclass(frozen=True)
class CanaryTask:
    """Base data, canaries and the matching model/loss for an audit."""

    base: TensorDataset
    canaries: TensorDataset
    dim: int
    hidden: int

    def make_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(self.dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2))


def make_canary_task(n_base: int = 500, m: int = 200, dim: int = 50, hidden: int = 256, seed: int = 0) -> CanaryTask:
    """Base samples labelled by a random linear rule; ``m`` canaries from the same inputs, labels flipped."""
    if n_base <= 0 or m <= 0 or dim <= 0 or hidden <= 0:
        raise ValueError(f"n_base, m, dim and hidden must be positive, got {n_base}, {m}, {dim}, {hidden}")
    g = np.random.default_rng(seed)
    w = g.standard_normal(dim)
    x = g.standard_normal((n_base + m, dim)).astype(np.float32)
    y = (x @ w > 0).astype(np.int64)
    y[n_base:] = 1 - y[n_base:]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return CanaryTask(base=TensorDataset(xt[:n_base], yt[:n_base]), canaries=TensorDataset(xt[n_base:], yt[n_base:]),
                      dim=dim, hidden=hidden)


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of a ``(x, y)`` batch (the ``loss_fn`` contract of ``train_dp``)."""
    x, y = batch
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def negative_loss_scores(model: nn.Module, dataset: Dataset) -> np.ndarray:
    """Minus the per-sample cross-entropy: higher means the model fits the sample's (canary) label better."""
    model.eval()
    out = []
    for x, y in DataLoader(dataset, batch_size=512):
        out.append(-F.cross_entropy(model(x), y, reduction="none"))
    return torch.cat(out).numpy()
