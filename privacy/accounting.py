"""Epsilon from a DP-SGD history, computed by Opacus's own accountants, and noise calibration against it.

A history is Opacus's accountant history: a list of ``(noise_multiplier, sample_rate, steps)`` entries, each
a run of identical Poisson-subsampled Gaussian steps. Everything here is a pure function of a history, so the
ledger can project "what if" without touching its committed state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from opacus.accountants import IAccountant, create_accountant

from infrabrain.privacy.budget import AccountantName, validate_delta, validate_positive_finite

HistoryEntry = tuple[float, float, int]

#: Largest noise multiplier the calibration will consider before declaring the budget too small.
MAX_NOISE_MULTIPLIER = 1e4
#: Smallest noise multiplier the calibration will consider (below it the PRV accountant loses accuracy).
MIN_NOISE_MULTIPLIER = 0.3


def validate_history(history: Sequence[Sequence[float]]) -> list[HistoryEntry]:
    """Return ``history`` as a list of typed tuples, or raise ``ValueError`` naming the bad entry."""
    out: list[HistoryEntry] = []
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise ValueError(f"history entry {i} must be (noise_multiplier, sample_rate, steps), got {entry!r}")
        sigma, q, steps = entry
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"history entry {i}: steps must be a positive integer, got {steps!r}")
        validate_positive_finite(f"history entry {i} noise_multiplier", sigma)
        validate_sample_rate(q)
        out.append((float(sigma), float(q), int(steps)))
    return out


def validate_sample_rate(sample_rate: float) -> float:
    """Return ``sample_rate`` if it lies in (0, 1], else raise ``ValueError`` naming it."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not math.isfinite(sample_rate):
        raise ValueError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    return float(sample_rate)


def append_run(history: Sequence[HistoryEntry], noise_multiplier: float, sample_rate: float, steps: int,
               count: int = 1) -> list[HistoryEntry]:
    """Return a new history with ``count`` runs of ``steps`` steps appended (merged like Opacus's ``step``)."""
    out = list(history)
    total = steps * count
    if out and out[-1][0] == noise_multiplier and out[-1][1] == sample_rate:
        sigma, q, prev = out.pop()
        out.append((sigma, q, prev + total))
    else:
        out.append((float(noise_multiplier), float(sample_rate), int(total)))
    return out


def make_accountant(mechanism: AccountantName, history: Sequence[HistoryEntry] = ()) -> IAccountant:
    """A fresh Opacus accountant of kind ``mechanism`` loaded with ``history`` via ``load_state_dict``."""
    accountant = create_accountant(mechanism=mechanism)
    if history:
        accountant.load_state_dict({"history": [tuple(e) for e in history], "mechanism": accountant.mechanism()})
    return accountant


def epsilon_of(history: Sequence[HistoryEntry], delta: float, mechanism: AccountantName) -> float:
    """Epsilon spent by ``history`` at ``delta``, per Opacus's ``mechanism`` accountant (0 for no history)."""
    validate_delta(delta)
    if not history:
        return 0.0
    with warnings.catch_warnings():
        # Opacus warns when the best RDP order sits at the edge of its grid (large or tiny epsilon); the bound
        # it returns is still a valid upper bound, only possibly loose.
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        with np.errstate(divide="ignore"):  # PRV at sample rate 1 (a plain Gaussian release) takes log(1 - q)
            eps = float(make_accountant(mechanism, history).get_epsilon(delta=delta))
    if math.isnan(eps):
        raise ValueError(f"the {mechanism} accountant returned NaN for history {list(history)!r}")
    return eps


def calibrate_noise(
    history: Sequence[HistoryEntry],
    *,
    sample_rate: float,
    steps: int,
    runs: int,
    epsilon_target: float,
    delta: float,
    mechanism: AccountantName,
    rel_tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier (within ``rel_tolerance``) such that ``history`` plus ``runs`` runs of
    ``steps`` steps at ``sample_rate`` stays at or below ``epsilon_target``.

    Spreading the remaining budget over ``runs`` identical runs keeps the history homogeneous (Opacus merges
    identical entries), which keeps the PRV accountant fast round after round. Raises ``ValueError`` when
    even the largest noise multiplier would exceed the target.
    """
    validate_positive_finite("epsilon_target", epsilon_target)
    validate_sample_rate(sample_rate)

    def eps_at(sigma: float) -> float:
        return epsilon_of(append_run(history, sigma, sample_rate, steps, runs), delta, mechanism)

    hi = 1.0
    while eps_at(hi) > epsilon_target:
        hi *= 2.0
        if hi > MAX_NOISE_MULTIPLIER:
            raise ValueError(
                f"epsilon target {epsilon_target:.4g} cannot be met: even noise_multiplier "
                f"{MAX_NOISE_MULTIPLIER:g} exceeds it (already spent "
                f"{epsilon_of(history, delta, mechanism):.4g}); the budget is exhausted"
            )
    lo = hi / 2.0
    if hi == 1.0:
        lo = MIN_NOISE_MULTIPLIER
        if eps_at(lo) <= epsilon_target:
            return lo
    # Invariant: eps_at(hi) <= target < eps_at(lo). Bisect in log-space.
    while hi / lo > 1.0 + rel_tolerance:
        mid = math.sqrt(lo * hi)
        if eps_at(mid) <= epsilon_target:
            hi = mid
        else:
            lo = mid
    return hi
