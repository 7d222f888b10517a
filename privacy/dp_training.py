"""Generic DP-SGD training with Opacus, enforced and recorded by the site's privacy ledger.

``train_dp`` works for any ``nn.Module`` whose layers Opacus supports (the batch must be the first dimension
of every layer input), any map-style ``Dataset`` and any ``loss_fn(model, batch) -> scalar Tensor`` with a
mean reduction over the batch. It does, in order:

1. Poisson sampling (each sample joins each logical batch independently with rate ``q = B / n``), exactly
   the ``steps`` the accountant is told about, ``BatchMemoryManager`` to cap the physical batch size;
2. noise: a fixed ``noise_multiplier``, or one calibrated so that the remaining budget covers ``rounds_left``
   identical runs (this one included);
3. a write-ahead ledger reservation (the whole run counted, fsynced) before the first step;
4. per-sample clipping to ``max_grad_norm`` and Gaussian noise (Opacus ``GradSampleModule`` + ``DPOptimizer``),
   noise drawn from a generator seeded from ``os.urandom`` so it differs on every run;
5. the ledger commit (fsynced) before the function returns, i.e. before the model can leave the site.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchMemoryManager
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from infrabrain.logs import get_logger
from infrabrain.privacy.accounting import calibrate_noise, validate_sample_rate
from infrabrain.privacy.budget import validate_positive_finite
from infrabrain.privacy.ledger import BudgetExceededError, PrivacyLedger
from infrabrain.privacy.unit import validate_privacy_unit

LossFn = Callable[[nn.Module, Any], Tensor]
CollateFn = Callable[[list[Any]], Any]

_log = get_logger("privacy.dp_training")


class DPConfig(BaseModel):
    """How one local DP-SGD run trains (the budget itself lives in the ledger's :class:`BudgetConfig`).

    ``expected_batch_size``: mean Poisson batch size B (sample rate q = B / n).
    ``max_physical_batch_size``: memory cap per forward/backward (``BatchMemoryManager``).
    ``steps`` (if set) or ``epochs``: length of the run (steps = ceil(epochs / q)).
    ``noise_multiplier``: fixed sigma; ``None`` calibrates sigma to the remaining budget.
    ``max_noise_multiplier``: a calibrated sigma above this is refused (the remaining budget is too small
    for a useful run; training anyway would only send noise).
    ``secure_noise``: Opacus' floating-point-attack-resistant noise (4 Gaussian draws per coordinate).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    expected_batch_size: int = 64
    max_physical_batch_size: int = 256
    epochs: float = 1.0
    steps: int | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_noise_multiplier: float = 20.0
    secure_noise: bool = True

    @field_validator("max_grad_norm", "epochs", "lr", "max_noise_multiplier")
    @classmethod
    def _validate_positive(cls, value: float, info: Any) -> float:
        return validate_positive_finite(info.field_name, value)

    @field_validator("noise_multiplier")
    @classmethod
    def _validate_sigma(cls, value: float | None) -> float | None:
        return None if value is None else validate_positive_finite("noise_multiplier", value)

    @field_validator("expected_batch_size", "max_physical_batch_size", "steps")
    @classmethod
    def _validate_count(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"{info.field_name} must be a positive integer, got {value!r}")
        return value

    @field_validator("momentum", "weight_decay")
    @classmethod
    def _validate_nonnegative(cls, value: float, info: Any) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{info.field_name} must be a non-negative finite number, got {value!r}")
        return value

    @model_validator(mode="after")
    def _validate_momentum_optimizer(self) -> DPConfig:
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum={self.momentum} applies to optimizer 'sgd' only, not {self.optimizer!r}")
        return self

    def sample_rate(self, num_samples: int) -> float:
        """Poisson sample rate q = B / n for a dataset of ``num_samples`` samples."""
        if self.expected_batch_size > num_samples:
            raise ValueError(
                f"expected_batch_size={self.expected_batch_size} is larger than the dataset ({num_samples} "
                "samples); lower it"
            )
        return validate_sample_rate(self.expected_batch_size / num_samples)

    def num_steps(self, num_samples: int) -> int:
        """Logical DP-SGD steps of one run over ``num_samples`` samples."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs / self.sample_rate(num_samples)))


@dataclass(frozen=True)
class DPResult:
    """Outcome of one DP run. ``epsilon_spent`` is this run's increment, ``epsilon_total`` the site's total
    after it (both at ``delta``, per the ledger's accountant)."""

    model: nn.Module
    epsilon_spent: float
    epsilon_total: float
    delta: float
    steps: int
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    num_samples: int
    round: int
    run_id: str
    mean_loss: float
    seconds: float


class _EmptyMarker:
    """Stands for an empty Poisson batch (many collate functions cannot build one)."""


EMPTY_BATCH = _EmptyMarker()


class _EmptyAwareCollate:
    def __init__(self, collate_fn: CollateFn) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> Any:
        return EMPTY_BATCH if len(samples) == 0 else self.collate_fn(samples)


def _validate_model(model: nn.Module) -> None:
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(
            "model is not compatible with DP-SGD: " + "; ".join(str(e) for e in errors[:5])
            + " (replace BatchNorm by GroupNorm/LayerNorm, nn.GRU/LSTM by opacus.layers.DPGRU/DPLSTM)"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")


def _validate_dataset(dataset: Dataset) -> int:
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("dataset must be a map-style torch Dataset with __len__ (Poisson sampling needs n)") from None
    if n <= 0:
        raise ValueError("dataset is empty: nothing to train on")
    return n


def _make_optimizer(params: Sequence[nn.Parameter], config: DPConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _urandom_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from the OS (Opacus draws the noise on the parameters' device)."""
    return torch.Generator(device=device).manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))


def resolve_noise_multiplier(config: DPConfig, ledger: PrivacyLedger, *, num_samples: int,
                             rounds_left: int = 1) -> float:
    """The sigma a run would use: fixed, or calibrated so the remaining budget covers ``rounds_left`` runs."""
    if isinstance(rounds_left, bool) or not isinstance(rounds_left, int) or rounds_left <= 0:
        raise ValueError(f"rounds_left must be a positive integer, got {rounds_left!r}")
    if config.noise_multiplier is not None:
        return config.noise_multiplier
    ledger.refresh()
    if ledger.epsilon_remaining <= 0:
        raise BudgetExceededError(
            f"privacy budget exhausted: spent {ledger.epsilon_spent:.4f} of {ledger.budget.epsilon_total:g}"
        )
    sigma = calibrate_noise(
        ledger.history, sample_rate=config.sample_rate(num_samples), steps=config.num_steps(num_samples),
        runs=rounds_left, epsilon_target=ledger.budget.epsilon_total, delta=ledger.delta_for(num_samples),
        mechanism=ledger.budget.accountant,
    )
    if sigma > config.max_noise_multiplier:
        raise BudgetExceededError(
            f"remaining privacy budget {ledger.epsilon_remaining:.4f} (of {ledger.budget.epsilon_total:g}) is too "
            f"small for {rounds_left} more run(s): it needs noise_multiplier {sigma:.3g} > max_noise_multiplier "
            f"{config.max_noise_multiplier:g}; the run is refused"
        )
    return sigma


def train_dp(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    collate_fn: CollateFn | None = None,
    *,
    config: DPConfig,
    ledger: PrivacyLedger,
    round: int = 0,
    rounds_left: int = 1,
    on_step: Callable[[DPOptimizer, int], None] | None = None,
    progress: bool = False,
) -> DPResult:
    """Train ``model`` in place with DP-SGD on ``dataset``; return it with the epsilon spent.

    ``loss_fn(model, batch)`` must return the mean loss over the batch (the first dimension of every input).
    The model trains where it is (the CPU or a GPU; the noise is drawn on its parameters' device), so a
    ``loss_fn`` for a GPU model moves the batch there (the predictor's ``loss_fn`` does).
    ``on_step(optimizer, step)`` is called after clipping and noising, before the parameter update (tests and
    diagnostics read ``p.grad_sample``/``p.summed_grad`` there). Raises :class:`BudgetExceededError` before any
    step if the run would exceed the site's budget, ``LedgerCorruptError`` if the ledger is corrupted, and
    ``ValueError`` if the dataset declares overlapping windows (see :mod:`infrabrain.privacy.unit`).
    """
    started = time.perf_counter()
    _validate_model(model)
    n = _validate_dataset(dataset)
    validate_privacy_unit(dataset)
    q = config.sample_rate(n)
    steps = config.num_steps(n)
    sigma = resolve_noise_multiplier(config, ledger, num_samples=n, rounds_left=rounds_left)
    run = ledger.reserve(round=round, noise_multiplier=sigma, sample_rate=q, steps=steps, num_samples=n,
                         max_grad_norm=config.max_grad_norm)

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = DPOptimizer(
        _make_optimizer(params, config), noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
        expected_batch_size=config.expected_batch_size, loss_reduction="mean",
        generator=_urandom_generator(params[0].device if params else "cpu"),
        secure_mode=config.secure_noise,
    )
    logical_steps = 0

    def count_step(opt: DPOptimizer) -> None:
        nonlocal logical_steps
        logical_steps += 1
        if on_step is not None:
            on_step(opt, logical_steps)

    optimizer.attach_step_hook(count_step)
    sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=q, generator=_urandom_generator(),
                                            steps=steps)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_EmptyAwareCollate(collate_fn or default_collate))
    losses: list[float] = []
    gsm.train()
    try:
        with warnings.catch_warnings(), BatchMemoryManager(data_loader=loader, max_physical_batch_size=config.max_physical_batch_size,
                                optimizer=optimizer) as physical_loader:
            # Inputs never require grad; torch's note about full backward hooks is expected with Opacus.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            iterator: Any = physical_loader
            if progress:
                from tqdm import tqdm

                iterator = tqdm(physical_loader, desc=f"DP-SGD round {round}", unit="batch")
            for batch in iterator:
                optimizer.zero_grad(set_to_none=True)
                if batch is EMPTY_BATCH:
                    # An empty Poisson batch is still a step: clip nothing, add noise, account it.
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                else:
                    loss = loss_fn(gsm, batch)
                    if loss.dim() != 0:
                        raise ValueError(f"loss_fn must return a scalar (mean over the batch), got shape "
                                         f"{tuple(loss.shape)}")
                    loss.backward()
                    losses.append(float(loss.detach()))
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        gsm._close()
    if logical_steps != steps:
        raise RuntimeError(f"DP-SGD took {logical_steps} steps but {steps} were accounted; refusing the result")
    ledger.commit(run.run_id)  # fsynced before the model is handed back, i.e. before anything can leave
    result = DPResult(
        model=model, epsilon_spent=run.epsilon_after - run.epsilon_before, epsilon_total=run.epsilon_after,
        delta=run.delta, steps=steps, noise_multiplier=sigma, sample_rate=q, max_grad_norm=config.max_grad_norm,
        num_samples=n, round=round, run_id=run.run_id,
        mean_loss=float(sum(losses) / len(losses)) if losses else float("nan"),
        seconds=time.perf_counter() - started,
    )
    _log.info("DP-SGD run done", extra={"round": round, "steps": steps, "noise_multiplier": sigma,
                                        "epsilon_total": result.epsilon_total, "seconds": round_s(result.seconds)})
    return result


def round_s(seconds: float) -> float:
    return float(f"{seconds:.3f}")
