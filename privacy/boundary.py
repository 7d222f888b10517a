"""The site boundary: a typed schema (pydantic) of everything that may leave a site, enforced on both ends.

What may leave: model weight arrays whose names, shapes and dtypes were declared (the global model's), finite
numbers only; aggregate metrics whose keys are on an allow-list; the round number and the DP accounting
(epsilon, delta, steps, noise multiplier). Nothing else: no strings besides the pseudonymous site id, no
timestamps (only round numbers), no extra keys, no object arrays. The site calls :meth:`BoundarySchema.check`
on every outgoing update; the coordinator calls it again on every incoming one.

Metric keys follow Flower's ``MetricRecord`` spelling used by the federation (``num-examples``, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Metric keys a ``train`` reply may carry (aggregates and DP accounting; see docs/threat-model.md).
TRAIN_METRIC_KEYS: frozenset[str] = frozenset(
    {"num-examples", "train-loss", "epsilon", "delta", "dp-steps", "noise-multiplier"}
)
#: Metric keys an ``evaluate`` reply may carry.
EVAL_METRIC_KEYS: frozenset[str] = frozenset({"num-examples", "eval-loss", "pr-auc", "roc-auc", "positives", "brier"})
#: Metric keys every train reply must carry: the accounting is part of the contract.
REQUIRED_TRAIN_KEYS: frozenset[str] = frozenset({"num-examples", "epsilon", "delta"})
MAX_METRIC_ABS = 1e12
ALLOWED_DTYPES: frozenset[str] = frozenset({"float32", "float64", "float16"})
_SITE_RE = re.compile(r"^site-[0-9a-f]{10,64}$")


class BoundaryViolation(ValueError):
    """An update carries something that may not cross the site boundary."""


class ArraySpec(BaseModel):
    """Declared name, shape and dtype of one model array."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @field_validator("dtype")
    @classmethod
    def _validate_dtype(cls, value: str) -> str:
        if value not in ALLOWED_DTYPES:
            raise ValueError(f"array dtype must be one of {sorted(ALLOWED_DTYPES)}, got {value!r}")
        return value


class SiteUpdate(BaseModel):
    """One validated reply from a site (what crossed the boundary, and nothing else)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["train", "evaluate"]
    round: int = Field(ge=0)
    site: str | None = None
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray] = Field(default_factory=dict)

    @field_validator("site")
    @classmethod
    def _validate_site(cls, value: str | None) -> str | None:
        if value is not None and not _SITE_RE.match(value):
            raise ValueError(f"site must be a pseudonym like 'site-<hex>', got {value!r}")
        return value


def spec_from_arrays(arrays: Mapping[str, Any]) -> list[ArraySpec]:
    """Declared specs from the current global model's arrays (names, shapes, dtypes; order kept)."""
    return [ArraySpec(name=k, shape=tuple(int(d) for d in np.shape(a)), dtype=str(np.asarray(a).dtype))
            for k, a in arrays.items()]


class BoundarySchema:
    """Validates updates against a declared model and the metric allow-lists."""

    def __init__(self, arrays: Sequence[ArraySpec], train_metric_keys: frozenset[str] = TRAIN_METRIC_KEYS,
                 eval_metric_keys: frozenset[str] = EVAL_METRIC_KEYS) -> None:
        names = [a.name for a in arrays]
        if len(set(names)) != len(names):
            raise ValueError(f"array names must be unique, got duplicates in {names}")
        self.arrays = list(arrays)
        self.allowed = {"train": frozenset(train_metric_keys), "evaluate": frozenset(eval_metric_keys)}

    def check(self, *, kind: str, round: int, metrics: Mapping[str, Any], arrays: Mapping[str, Any] | None = None,
              site: str | None = None, epsilon_budget: float | None = None) -> SiteUpdate:
        """Return the :class:`SiteUpdate` if everything in it may cross the boundary; else raise
        :class:`BoundaryViolation` naming the first offending key. ``epsilon_budget`` (site side: the
        ledger's budget) additionally refuses a reported epsilon above it."""
        if kind not in self.allowed:
            raise BoundaryViolation(f"kind must be 'train' or 'evaluate', got {kind!r}")
        if isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 0:
            raise BoundaryViolation(f"round must be a non-negative integer, got {round!r}")
        clean_metrics = self._check_metrics(kind, metrics, epsilon_budget)
        clean_arrays = self._check_arrays(kind, arrays or {})
        try:
            return SiteUpdate(kind=kind, round=int(round), site=site, metrics=clean_metrics, arrays=clean_arrays)
        except ValueError as exc:
            raise BoundaryViolation(str(exc)) from None

    def _check_metrics(self, kind: str, metrics: Mapping[str, Any], epsilon_budget: float | None) -> dict[str, float]:
        if not isinstance(metrics, Mapping):
            raise BoundaryViolation(f"metrics must be a mapping, got {type(metrics).__name__}")
        extra = sorted(set(metrics) - self.allowed[kind])
        if extra:
            raise BoundaryViolation(f"metric key(s) {extra} may not leave a site (allowed: {sorted(self.allowed[kind])})")
        required = REQUIRED_TRAIN_KEYS if kind == "train" else frozenset({"num-examples"})
        missing = sorted(required - set(metrics))
        if missing:
            raise BoundaryViolation(f"{kind} update lacks required metric(s) {missing}")
        out: dict[str, float] = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise BoundaryViolation(f"metric {key!r} must be a number, got {type(value).__name__}")
            v = float(value)
            if not math.isfinite(v) or abs(v) > MAX_METRIC_ABS:
                raise BoundaryViolation(f"metric {key!r} must be finite and |x| <= {MAX_METRIC_ABS:g}, got {value!r}")
            out[key] = v
        n = out["num-examples"]
        if n <= 0 or n != int(n):
            raise BoundaryViolation(f"metric 'num-examples' must be a positive integer, got {metrics['num-examples']!r}")
        if kind == "train":
            if out["epsilon"] < 0:
                raise BoundaryViolation(f"metric 'epsilon' must be >= 0, got {out['epsilon']}")
            if not 0 < out["delta"] < 1:
                raise BoundaryViolation(f"metric 'delta' must be in (0, 1), got {out['delta']}")
            if epsilon_budget is not None and out["epsilon"] > epsilon_budget * (1 + 1e-9):
                raise BoundaryViolation(
                    f"reported epsilon {out['epsilon']:.4f} exceeds the site's budget {epsilon_budget:g}")
        return out

    def _check_arrays(self, kind: str, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(arrays, Mapping):
            raise BoundaryViolation(f"arrays must be a mapping name -> array, got {type(arrays).__name__}")
        if kind == "evaluate":
            if arrays:
                raise BoundaryViolation(f"an evaluate update may not carry arrays, got {sorted(arrays)[:5]}")
            return {}
        names = list(arrays)
        expected = [a.name for a in self.arrays]
        if names != expected:
            unknown = sorted(set(names) - set(expected))
            missing = sorted(set(expected) - set(names))
            raise BoundaryViolation(
                f"array names differ from the declared model: unknown {unknown[:5]}, missing {missing[:5]}"
                + ("" if unknown or missing else " (order differs)")
            )
        out: dict[str, np.ndarray] = {}
        for spec in self.arrays:
            value = arrays[spec.name]
            if not isinstance(value, np.ndarray):
                raise BoundaryViolation(f"array {spec.name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype.kind not in "f" or str(value.dtype) != spec.dtype:
                raise BoundaryViolation(f"array {spec.name!r} has dtype {value.dtype}, declared {spec.dtype}")
            if tuple(value.shape) != spec.shape:
                raise BoundaryViolation(f"array {spec.name!r} has shape {tuple(value.shape)}, declared {spec.shape}")
            if not np.all(np.isfinite(value)):
                raise BoundaryViolation(f"array {spec.name!r} contains NaN or infinity")
            out[spec.name] = value
        return out
