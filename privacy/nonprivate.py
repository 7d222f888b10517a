"""Non-private reference training with the same optimizer, batch size and step count as a DP run.

Not for production: it spends no budget and offers no protection. It exists so that the benchmark can price
DP-SGD (step-time ratio, PR-AUC lost) and so that the audit can show it detects a leak when DP is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data._utils.collate import default_collate

from infrabrain.privacy.dp_training import CollateFn, DPConfig, LossFn, _make_optimizer, _validate_dataset


@dataclass(frozen=True)
class NonPrivateResult:
    """Outcome of a non-private run."""

    model: nn.Module
    steps: int
    mean_loss: float
    seconds: float


def train_nonprivate(model: nn.Module, dataset: Dataset, loss_fn: LossFn, collate_fn: CollateFn | None = None, *,
                     config: DPConfig, seed: int | None = None,
                     on_step: Callable[[int], None] | None = None) -> NonPrivateResult:
    """Train ``model`` in place with plain minibatch SGD/Adam: shuffled batches of ``expected_batch_size``,
    ``config.num_steps(n)`` steps; clipping and noise are ignored. ``on_step(step)`` runs after each step."""
    started = time.perf_counter()
    n = _validate_dataset(dataset)
    steps = config.num_steps(n)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    sampler = RandomSampler(dataset, replacement=False, generator=generator)
    loader = DataLoader(dataset, batch_size=min(config.expected_batch_size, n), sampler=sampler,
                        collate_fn=collate_fn or default_collate, drop_last=True)
    optimizer = _make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    model.train()
    done, losses = 0, []
    while done < steps:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            done += 1
            if on_step is not None:
                on_step(done)
            if done >= steps:
                break
    return NonPrivateResult(model=model, steps=done, mean_loss=sum(losses) / len(losses),
                            seconds=time.perf_counter() - started)
