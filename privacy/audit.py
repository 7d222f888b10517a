"""Empirical privacy audit with one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

``m`` canaries are each included in the training set independently with probability 1/2. After one training
run, the auditor scores every canary (here: minus its loss, higher = "looks trained on"), guesses "in" for the
``k_plus`` highest and "out" for the ``k_minus`` lowest, abstains on the rest, and counts correct guesses.
Under (epsilon, delta)-DP the number of correct guesses is dominated by Binomial(r, e^eps / (1 + e^eps)) plus a
delta term (their Theorem 3.3); the largest epsilon that this rejects at the chosen confidence is a lower bound
on the training run's true epsilon. ``k_plus``/``k_minus`` are fixed in advance (not tuned on the outcome), so
the 95 % confidence is honest.

A lower bound above the accounted epsilon means the implementation leaks more than it claims (a bug); a lower
bound clearly above 0 with DP off shows the audit can see a leak when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from infrabrain.privacy.budget import validate_delta


@dataclass(frozen=True)
class AuditResult:
    """Outcome of one audit. ``epsilon_lower_bound`` holds with probability ``confidence``."""

    epsilon_lower_bound: float
    m: int
    included: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    confidence: float
    delta: float


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability of at least ``v`` correct guesses out of ``r`` (``m`` canaries) under (epsilon, delta)-DP."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    q = 1.0 / (1.0 + np.exp(-epsilon))  # accuracy of epsilon-DP randomised response
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    # The delta term: max over i of P[v > Binomial(r, q) >= v - i] / i.
    if v > 0 and delta > 0:
        pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
        alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    else:
        alpha = 0.0
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """Largest epsilon rejected at ``confidence`` given ``v`` correct of ``r`` guesses (0 if none is)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    threshold = 1.0 - confidence
    if r == 0 or p_value(m, r, v, 0.0, delta) >= threshold:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < threshold:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return lo
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < threshold:
            lo = mid
        else:
            hi = mid
    return lo


def audit_from_scores(scores: np.ndarray, included: np.ndarray, *, k_plus: int, k_minus: int, delta: float,
                      confidence: float = 0.95) -> AuditResult:
    """Guess "in" for the ``k_plus`` highest scores and "out" for the ``k_minus`` lowest; bound epsilon."""
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if included.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and included {included.shape} differ in shape")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m or k_plus + k_minus == 0:
        raise ValueError(f"need k_plus, k_minus >= 0 and 0 < k_plus + k_minus <= m={m}, got {k_plus}, {k_minus}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    validate_delta(delta)
    order = np.argsort(scores, kind="stable")  # ascending
    out_guess = order[:k_minus]
    in_guess = order[m - k_plus:] if k_plus else np.array([], dtype=int)
    correct = int(included[in_guess].sum() + (~included[out_guess]).sum())
    r = k_plus + k_minus
    return AuditResult(
        epsilon_lower_bound=epsilon_lower_bound(m, r, correct, delta, confidence), m=m,
        included=int(included.sum()), guesses=r, correct=correct, k_plus=k_plus, k_minus=k_minus,
        confidence=confidence, delta=delta,
    )


def one_run_audit(
    train: Callable[[Dataset], nn.Module],
    base: Dataset,
    canaries: Dataset,
    score: Callable[[nn.Module, Dataset], np.ndarray],
    *,
    k_plus: int,
    k_minus: int,
    delta: float,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> AuditResult:
    """Include each canary with probability 1/2, ``train`` once on base + included canaries, ``score`` every
    canary with the trained model (higher = more likely included) and return the epsilon lower bound."""
    rng = rng or np.random.default_rng()
    m = len(canaries)  # type: ignore[arg-type]
    if m == 0:
        raise ValueError("need at least one canary")
    included = rng.random(m) < 0.5
    train_set = ConcatDataset([base, Subset(canaries, np.flatnonzero(included).tolist())])
    model = train(train_set)
    scores = np.asarray(score(model, canaries), dtype=float)
    if scores.shape != (m,):
        raise ValueError(f"score must return one number per canary ({m}), got shape {scores.shape}")
    return audit_from_scores(scores, included, k_plus=k_plus, k_minus=k_minus, delta=delta, confidence=confidence)
