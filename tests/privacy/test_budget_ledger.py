"""Budget validation and the ledger: persistence, enforcement, corruption handling (never a silent reset)."""

from __future__ import annotations

import json
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.ledger import LEDGER_FILENAME, BudgetExceededError, LedgerCorruptError, PrivacyLedger

RUN = dict(noise_multiplier=1.0, sample_rate=0.02, steps=50, num_samples=5000, max_grad_norm=1.0)


@pytest.mark.parametrize("eps", [0, -1, -0.5, float("nan"), float("inf")])
def test_bad_budget_is_refused(eps):
    with pytest.raises(ValueError, match="epsilon_total"):
        BudgetConfig(epsilon_total=eps)


@pytest.mark.parametrize("delta", [0, 1, -1e-5, 2.0])
def test_bad_delta_is_refused(delta):
    with pytest.raises(ValueError, match="delta"):
        BudgetConfig(delta=delta)


def test_delta_rule_is_min_of_1e5_and_1_over_n():
    b = BudgetConfig()
    assert b.resolve_delta(1000) == 1e-5
    assert b.resolve_delta(1_000_000) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="not smaller than 1/n"):
        BudgetConfig(delta=0.01).resolve_delta(200)


def test_ledger_persists_and_reloads(tmp_path):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8))
    run = led.reserve(round=0, **RUN)
    led.commit(run.run_id)
    again = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8))
    assert again.epsilon_spent == pytest.approx(run.epsilon_after)
    assert again.runs[0].status == "committed"
    acc = PRVAccountant()
    acc.load_state_dict(again.accountant_state_dict())
    assert acc.get_epsilon(delta=1e-5) == pytest.approx(again.epsilon_spent, rel=1e-9)


def test_reserve_counts_before_commit_and_grows(tmp_path):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8, accountant="rdp"))
    eps = [0.0]
    for r in range(3):
        led.reserve(round=r, **RUN)  # never committed: still counted
        eps.append(PrivacyLedger.load(tmp_path).epsilon_spent)
    assert all(b > a for a, b in zip(eps, eps[1:]))
    acc = RDPAccountant()
    for _ in range(3 * RUN["steps"]):
        acc.step(noise_multiplier=RUN["noise_multiplier"], sample_rate=RUN["sample_rate"])
    assert eps[-1] == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)


def test_would_exceed_never_mutates_and_refusal_writes_nothing(tmp_path):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=1.0, accountant="rdp"))
    before = (tmp_path / LEDGER_FILENAME).read_bytes()
    big = dict(RUN, noise_multiplier=0.5, steps=2000)
    assert led.would_exceed(**{k: v for k, v in big.items() if k != "max_grad_norm"})
    assert (tmp_path / LEDGER_FILENAME).read_bytes() == before
    with pytest.raises(BudgetExceededError, match="over its budget of 1"):
        led.reserve(round=0, **big)
    assert (tmp_path / LEDGER_FILENAME).read_bytes() == before
    assert led.epsilon_spent == 0.0


def test_budget_change_is_refused(tmp_path):
    PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8))
    with pytest.raises(ValueError, match="differs in epsilon_total"):
        PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=80))


def test_delta_only_decreases(tmp_path):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    led.reserve(round=0, **RUN)
    assert led.delta == 1e-5
    led.reserve(round=1, **dict(RUN, num_samples=400_000))
    assert led.delta == pytest.approx(2.5e-6)
    led.reserve(round=2, **RUN)  # a smaller dataset never raises delta back
    assert led.delta == pytest.approx(2.5e-6)


def _corruptions(text: str) -> dict[str, str]:
    payload = json.loads(text)
    edited = dict(payload, epsilon_spent=0.0)  # someone "resets" the spent epsilon by hand
    return {
        "truncated": text[: len(text) // 2],
        "empty": "",
        "garbage": "\x00\x01not json",
        "edited": json.dumps(edited),
        "wrong kind": json.dumps(dict(payload, kind="something-else")),
    }


@pytest.mark.parametrize("case", ["truncated", "empty", "garbage", "edited", "wrong kind"])
def test_corrupted_ledger_refuses_and_is_never_reset(tmp_path, case):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    led.reserve(round=0, **RUN)
    path = tmp_path / LEDGER_FILENAME
    bad = _corruptions(path.read_text())[case]
    path.write_text(bad)
    for attempt in (lambda: PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp")),
                    lambda: PrivacyLedger.load(tmp_path),
                    lambda: led.reserve(round=1, **RUN)):
        with pytest.raises(LedgerCorruptError, match="corrupted.*refusing to train"):
            attempt()
    assert path.read_text() == bad  # untouched


def test_bad_run_parameters(tmp_path):
    led = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    for key, value in [("noise_multiplier", 0.0), ("sample_rate", 1.5), ("steps", 0), ("num_samples", -3),
                       ("max_grad_norm", math.nan)]:
        with pytest.raises(ValueError, match=key):
            led.reserve(round=0, **dict(RUN, **{key: value}))
    with pytest.raises(ValueError, match="round"):
        led.reserve(round=-1, **RUN)
