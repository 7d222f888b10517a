"""Typed privacy-budget configuration: how much (epsilon, delta) a site is willing to spend, and how it is counted.

The budget is a site's policy, fixed when its ledger is created (see :mod:`infrabrain.privacy.ledger`); the
ledger refuses any later configuration that disagrees, so a budget can never drift silently.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

#: Default delta when the site has at most 100 000 samples (otherwise 1/n, which is smaller).
DEFAULT_DELTA = 1e-5

AccountantName = Literal["prv", "rdp"]


class BudgetConfig(BaseModel):
    """A site's total privacy budget over its whole lifetime (all federated rounds, all restarts).

    ``epsilon_total``: the most epsilon the site will ever spend (default 8).
    ``delta``: fixed delta; ``None`` (default) means ``min(1e-5, 1/n)`` for a site with ``n`` training samples,
    and the ledger only ever lowers it (a smaller delta makes the reported epsilon larger, i.e. stricter).
    ``accountant``: ``"prv"`` (Opacus PRV accountant, tight; default) or ``"rdp"`` (Renyi DP, looser, faster).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon_total: float = 8.0
    delta: float | None = None
    accountant: AccountantName = "prv"

    @field_validator("epsilon_total")
    @classmethod
    def _validate_epsilon_total(cls, value: float) -> float:
        return _validate_positive_finite("epsilon_total", value)

    @field_validator("delta")
    @classmethod
    def _validate_delta_field(cls, value: float | None) -> float | None:
        if value is not None:
            validate_delta(value)
        return value

    def resolve_delta(self, num_samples: int) -> float:
        """Delta for a dataset of ``num_samples`` windows: the configured one, or ``min(1e-5, 1/n)``."""
        n = validate_num_samples(num_samples)
        if self.delta is None:
            return min(DEFAULT_DELTA, 1.0 / n)
        if self.delta >= 1.0 / n:
            raise ValueError(
                f"budget delta={self.delta} is not smaller than 1/n={1.0 / n:.3g} for n={n} samples: "
                "such a delta would allow releasing a whole record; set a smaller delta"
            )
        return self.delta


def _validate_positive_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def validate_positive_finite(name: str, value: float) -> float:
    """Return ``value`` as float, or raise ``ValueError`` naming ``name`` if it is not > 0 and finite."""
    return _validate_positive_finite(name, value)


def validate_delta(delta: float) -> float:
    """Return ``delta`` if it lies strictly between 0 and 1, else raise ``ValueError`` naming it."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta):
        raise ValueError(f"delta must be a finite number strictly between 0 and 1, got {delta!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be strictly between 0 and 1, got {delta!r}")
    return float(delta)


def validate_num_samples(num_samples: int) -> int:
    """Return ``num_samples`` if it is a positive integer, else raise ``ValueError`` naming it."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return num_samples
