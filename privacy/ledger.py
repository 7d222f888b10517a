"""The per-site privacy ledger: every epsilon the site ever spent, persisted so that no crash can lose it.

One JSON file per site (``<dir>/privacy-ledger.json``) holds the Opacus accountant ``state_dict`` (its history
of ``(noise_multiplier, sample_rate, steps)``), the budget it is enforced against, and one record per local
training run. Writes go through :func:`infrabrain.atomic.atomic_write_text` (tmp file, fsync, rename), under
an exclusive ``flock`` so two processes of one site cannot interleave.

Protocol (write-ahead): a run is *reserved* (its full epsilon counted as spent and fsynced) before its first
step, and *committed* after its last step, before the trainer returns the model. A kill -9 at any moment
therefore leaves either the old ledger or one that already counts the run; an interrupted run stays counted
(conservative: its partial model never left, but we cannot prove what else did).

A file that fails to parse, fails its SHA-256 checksum, or whose history disagrees with its runs is
*corrupted*: every method refuses with :class:`LedgerCorruptError` and nothing is ever rewritten or reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from infrabrain.atomic import atomic_write_text
from infrabrain.logs import get_logger
from infrabrain.privacy.accounting import HistoryEntry, append_run, epsilon_of, validate_history, validate_sample_rate
from infrabrain.privacy.budget import BudgetConfig, validate_num_samples, validate_positive_finite

LEDGER_FILENAME = "privacy-ledger.json"
LOCK_FILENAME = ".privacy-ledger.lock"
LEDGER_KIND = "infrabrain-privacy-ledger"
SCHEMA_VERSION = 1
#: Slack for floating-point noise when comparing an epsilon with the budget.
_BUDGET_SLACK = 1e-9

_log = get_logger("privacy.ledger")


class LedgerCorruptError(ValueError):
    """The ledger file exists but cannot be trusted; training is refused and the file is left untouched."""


class BudgetExceededError(ValueError):
    """A run would take the site's cumulative epsilon past its budget; the run is refused."""


class LedgerRun(BaseModel):
    """One local DP training run as recorded in the ledger (site-local: timestamps never leave the site)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    round: int
    status: Literal["reserved", "committed"]
    noise_multiplier: float
    sample_rate: float
    steps: int
    num_samples: int
    max_grad_norm: float
    delta: float
    epsilon_before: float
    epsilon_after: float
    reserved_at: float
    committed_at: float | None = None


class AccountantState(BaseModel):
    """Opacus ``IAccountant.state_dict()``: the mechanism and its history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mechanism: Literal["prv", "rdp"]
    history: list[tuple[float, float, int]]


class LedgerFile(BaseModel):
    """The on-disk ledger (versioned; ``sha256`` covers every other field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["infrabrain-privacy-ledger"] = LEDGER_KIND
    schema_version: Literal[1] = SCHEMA_VERSION
    site: str
    created_at: float
    updated_at: float
    budget: BudgetConfig
    delta: float | None
    epsilon_spent: float
    accountant_state: AccountantState
    runs: list[LedgerRun]


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _encode(state: LedgerFile) -> str:
    payload = state.model_dump(mode="json")
    payload["sha256"] = hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()
    return json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _decode(path: Path, text: str) -> LedgerFile:
    def corrupt(reason: str) -> LedgerCorruptError:
        return LedgerCorruptError(
            f"privacy ledger {str(path)!r} is corrupted ({reason}); refusing to train. The file is left "
            "untouched: restore it from a backup or investigate. infrabrain never resets a ledger, because "
            "a reset would forget epsilon already spent."
        )

    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise corrupt(f"not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise corrupt("top level is not a JSON object")
    if payload.get("kind") != LEDGER_KIND:
        raise corrupt(f"kind is {payload.get('kind')!r}, expected {LEDGER_KIND!r}")
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise corrupt(f"unsupported schema_version {payload.get('schema_version')!r}")
    digest = payload.pop("sha256", None)
    try:
        expected = hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()
    except ValueError as exc:  # NaN/inf smuggled into the file
        raise corrupt(f"non-finite number: {exc}") from None
    if digest != expected:
        raise corrupt("SHA-256 checksum mismatch: the file was edited or damaged")
    try:
        state = LedgerFile.model_validate(payload)
    except ValidationError as exc:
        raise corrupt(f"schema violation: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from None
    history: list[HistoryEntry] = []
    for run in state.runs:
        history = append_run(history, run.noise_multiplier, run.sample_rate, run.steps)
    try:
        stored = validate_history(state.accountant_state.history)
    except ValueError as exc:
        raise corrupt(f"accountant history invalid: {exc}") from None
    if stored != history:
        raise corrupt("accountant history does not match the recorded runs")
    if state.accountant_state.mechanism != state.budget.accountant:
        raise corrupt("accountant mechanism differs from the budget's accountant")
    last = state.runs[-1].epsilon_after if state.runs else 0.0
    if not math.isclose(state.epsilon_spent, last, rel_tol=1e-12, abs_tol=1e-12):
        raise corrupt("epsilon_spent does not match the last run")
    if len({r.run_id for r in state.runs}) != len(state.runs):
        raise corrupt("duplicate run ids")
    return state


class PrivacyLedger:
    """Persistent, crash-safe record and enforcer of one site's cumulative epsilon.

    Use :meth:`open` to create or resume a site's ledger (training) and :meth:`load` to inspect one (status).
    Every mutating call re-reads the file under the lock, so the file, not this object, is the truth.
    """

    def __init__(self, directory: Path, state: LedgerFile) -> None:
        self._dir = directory
        self._state = state

    # ---------------------------------------------------------------- construction
    @classmethod
    def open(cls, directory: str | Path, budget: BudgetConfig | None = None, site: str = "") -> PrivacyLedger:
        """Resume the ledger in ``directory``, or create it there (``budget`` required to create one).

        A stored budget that differs from ``budget`` is refused: a site's budget is fixed for its lifetime.
        """
        directory = Path(directory)
        path = directory / LEDGER_FILENAME
        with _locked(directory):
            if path.exists():
                state = _decode(path, path.read_text(encoding="utf-8"))
                if budget is not None and budget != state.budget:
                    diff = [k for k in BudgetConfig.model_fields if getattr(budget, k) != getattr(state.budget, k)]
                    raise ValueError(
                        f"privacy ledger {str(path)!r} was created with budget {state.budget.model_dump()}; the "
                        f"given budget differs in {', '.join(diff)}. A site's budget is fixed when its ledger is "
                        "created; start a new ledger directory for a new policy."
                    )
                return cls(directory, state)
            if budget is None:
                raise FileNotFoundError(f"no privacy ledger at {str(path)!r} and no budget given to create one")
            now = time.time()
            state = LedgerFile(
                site=site, created_at=now, updated_at=now, budget=budget, delta=None, epsilon_spent=0.0,
                accountant_state=AccountantState(mechanism=budget.accountant, history=[]), runs=[],
            )
            atomic_write_text(path, _encode(state))
            _log.info("created privacy ledger", extra={"path": str(path), "epsilon_total": budget.epsilon_total})
            return cls(directory, state)

    @classmethod
    def load(cls, directory: str | Path) -> PrivacyLedger:
        """Read an existing ledger (read-only use; raises ``FileNotFoundError`` or ``LedgerCorruptError``)."""
        directory = Path(directory)
        path = directory / LEDGER_FILENAME
        if not path.exists():
            raise FileNotFoundError(f"no privacy ledger at {str(path)!r}")
        return cls(directory, _decode(path, path.read_text(encoding="utf-8")))

    def refresh(self) -> None:
        """Re-read the file (another process of this site may have spent epsilon)."""
        self._state = _decode(self.path, self.path.read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- read-only views
    @property
    def path(self) -> Path:
        return self._dir / LEDGER_FILENAME

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def site(self) -> str:
        return self._state.site

    @property
    def budget(self) -> BudgetConfig:
        return self._state.budget

    @property
    def delta(self) -> float | None:
        """Delta the spent epsilon is stated at (``None`` before the first run fixes it)."""
        return self._state.delta

    @property
    def epsilon_spent(self) -> float:
        """Cumulative epsilon of every reserved or committed run, per the site's accountant."""
        return self._state.epsilon_spent

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.budget.epsilon_total - self.epsilon_spent)

    @property
    def history(self) -> list[HistoryEntry]:
        """The Opacus accountant history (copy)."""
        return list(self._state.accountant_state.history)

    @property
    def runs(self) -> tuple[LedgerRun, ...]:
        return tuple(self._state.runs)

    def accountant_state_dict(self) -> dict[str, Any]:
        """The Opacus ``state_dict`` of the site's accountant (load it with ``IAccountant.load_state_dict``)."""
        return {"history": [tuple(e) for e in self.history], "mechanism": self.budget.accountant}

    def delta_for(self, num_samples: int) -> float:
        """Delta a run over ``num_samples`` samples will be accounted at (delta only ever decreases)."""
        new = self.budget.resolve_delta(num_samples)
        return new if self.delta is None else min(self.delta, new)

    def project(self, *, noise_multiplier: float, sample_rate: float, steps: int, num_samples: int,
                count: int = 1) -> float:
        """Cumulative epsilon after ``count`` more runs of this kind; never mutates the committed state."""
        validate_positive_finite("noise_multiplier", noise_multiplier)
        validate_sample_rate(sample_rate)
        _validate_steps(steps)
        history = append_run(self.history, noise_multiplier, sample_rate, steps, count)
        return epsilon_of(history, self.delta_for(num_samples), self.budget.accountant)

    def would_exceed(self, *, noise_multiplier: float, sample_rate: float, steps: int, num_samples: int,
                     count: int = 1) -> bool:
        """Whether ``count`` more such runs would exceed the budget (does not mutate the committed state)."""
        eps = self.project(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                           num_samples=num_samples, count=count)
        return eps > self.budget.epsilon_total * (1 + _BUDGET_SLACK)

    # ---------------------------------------------------------------- mutations
    def reserve(self, *, round: int, noise_multiplier: float, sample_rate: float, steps: int, num_samples: int,
                max_grad_norm: float) -> LedgerRun:
        """Count a run as spent *before* it starts (fsynced); raises :class:`BudgetExceededError` if it would
        take the site past its budget, in which case nothing is written."""
        _validate_round(round)
        validate_positive_finite("noise_multiplier", noise_multiplier)
        validate_sample_rate(sample_rate)
        _validate_steps(steps)
        validate_num_samples(num_samples)
        validate_positive_finite("max_grad_norm", max_grad_norm)
        with _locked(self._dir):
            self.refresh()
            state = self._state
            delta = self.delta_for(num_samples)
            mechanism = state.budget.accountant
            eps_before = state.epsilon_spent if delta == state.delta else epsilon_of(self.history, delta, mechanism)
            history = append_run(self.history, noise_multiplier, sample_rate, steps)
            eps_after = epsilon_of(history, delta, mechanism)
            total = state.budget.epsilon_total
            if eps_after > total * (1 + _BUDGET_SLACK):
                raise BudgetExceededError(
                    f"round {round} refused: {steps} steps at noise_multiplier={noise_multiplier:.4g}, "
                    f"sample_rate={sample_rate:.4g} would bring the site's epsilon from {eps_before:.4f} to "
                    f"{eps_after:.4f} (delta={delta:.3g}), over its budget of {total:g} "
                    f"(remaining {max(0.0, total - eps_before):.4f}). Use more noise, fewer steps, or stop."
                )
            now = time.time()
            run = LedgerRun(
                run_id=uuid.uuid4().hex[:16], round=round, status="reserved", noise_multiplier=noise_multiplier,
                sample_rate=sample_rate, steps=steps, num_samples=num_samples, max_grad_norm=max_grad_norm,
                delta=delta, epsilon_before=eps_before, epsilon_after=eps_after, reserved_at=now,
            )
            self._write(state.model_copy(update={
                "updated_at": now, "delta": delta, "epsilon_spent": eps_after, "runs": [*state.runs, run],
                "accountant_state": AccountantState(mechanism=mechanism, history=history),
            }))
        _log.info("reserved privacy budget", extra={"run_id": run.run_id, "round": round,
                                                    "epsilon_before": eps_before, "epsilon_after": eps_after})
        return run

    def commit(self, run_id: str) -> LedgerRun:
        """Mark a reserved run as finished (fsynced). Must happen before its model update leaves the site."""
        with _locked(self._dir):
            self.refresh()
            state = self._state
            runs = list(state.runs)
            for i, run in enumerate(runs):
                if run.run_id == run_id:
                    break
            else:
                raise ValueError(f"run_id {run_id!r} is not in the privacy ledger {str(self.path)!r}")
            if run.status == "committed":
                return run
            now = time.time()
            runs[i] = run.model_copy(update={"status": "committed", "committed_at": now})
            self._write(state.model_copy(update={"updated_at": now, "runs": runs}))
        _log.info("committed privacy run", extra={"run_id": run_id, "epsilon_total": state.epsilon_spent})
        return runs[i]

    def _write(self, state: LedgerFile) -> None:
        atomic_write_text(self.path, _encode(state))
        self._state = state

    # ---------------------------------------------------------------- reporting
    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for ``infrabrain privacy status``."""
        return {
            "path": str(self.path),
            "site": self.site,
            "accountant": self.budget.accountant,
            "epsilon_total_budget": self.budget.epsilon_total,
            "epsilon_spent": self.epsilon_spent,
            "epsilon_remaining": self.epsilon_remaining,
            "delta": self.delta,
            "runs": len(self.runs),
            "uncommitted_runs": sum(r.status != "committed" for r in self.runs),
            "history": [list(e) for e in self.history],
        }


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILENAME, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _validate_round(round: int) -> None:
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative integer, got {round!r}")


def _validate_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
