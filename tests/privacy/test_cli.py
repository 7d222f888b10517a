"""``infrabrain privacy status`` and ``init-secret`` through the real root CLI."""

from __future__ import annotations

import json

from infrabrain.cli import main
from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.ledger import LEDGER_FILENAME, PrivacyLedger


def test_status_prints_the_ledger(tmp_path, capsys):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=4, accountant="rdp"), site="site-a")
    run = ledger.reserve(round=2, noise_multiplier=1.2, sample_rate=0.05, steps=40, num_samples=800,
                         max_grad_norm=1.0)
    assert main(["privacy", "status", "--ledger", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{run.epsilon_after:.4f} of 4" in out and "reserved" in out
    assert main(["privacy", "status", "--ledger", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["epsilon_spent"] == run.epsilon_after and data["runs_detail"][0]["round"] == 2


def test_status_errors_are_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INFRABRAIN_PRIVACY_DIR", raising=False)
    assert main(["privacy", "status"]) == 2
    assert "--ledger" in capsys.readouterr().err
    assert main(["privacy", "status", "--ledger", str(tmp_path / "none")]) == 2
    assert "no privacy ledger" in capsys.readouterr().err
    PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    (tmp_path / LEDGER_FILENAME).write_text("{broken")
    assert main(["privacy", "status", "--ledger", str(tmp_path)]) == 2
    assert "corrupted" in capsys.readouterr().err
    assert (tmp_path / LEDGER_FILENAME).read_text() == "{broken"


def test_init_secret(tmp_path, capsys):
    assert main(["privacy", "init-secret", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s").stat().st_size > 32
    assert main(["privacy", "init-secret", str(tmp_path / "s")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
