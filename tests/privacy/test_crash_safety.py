"""kill -9 never loses spent epsilon: real subprocesses killed mid-training, after the release, and mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn
from torch.utils.data import TensorDataset

from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.dp_training import DPConfig, train_dp
from infrabrain.privacy.ledger import PrivacyLedger

BUDGET = BudgetConfig(epsilon_total=1e5, accountant="rdp")

SITE = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    torch.set_num_threads(1)
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.dp_training import DPConfig, train_dp
    from infrabrain.privacy.ledger import PrivacyLedger

    ledger_dir, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    x = torch.randn(200, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    ledger = PrivacyLedger.open(ledger_dir, BudgetConfig(epsilon_total=1e5, accountant="rdp"))

    def on_step(opt, step):
        if step == 1:
            print("TRAINING", flush=True)
        if mode == "hang":
            time.sleep(0.01)

    res = train_dp(nn.Linear(4, 2), data, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                   config=DPConfig(noise_multiplier=1.0, expected_batch_size=20, steps=steps), ledger=ledger,
                   round=7, on_step=on_step)
    print(f"RELEASE {res.epsilon_total!r}", flush=True)  # the federation would send the update now
    time.sleep(0.5)
    print("WRITING", flush=True)
    for r in range(8, 100_000):  # later rounds, as fast as the ledger can write
        run = ledger.reserve(round=r, noise_multiplier=1.0 + (r % 3) * 0.1, sample_rate=0.01, steps=10,
                             num_samples=1000, max_grad_norm=1.0)
        ledger.commit(run.run_id)
    """
)


@pytest.fixture
def start(tmp_path: Path):
    """Start the site script; whatever happens in the test, the process is gone afterwards."""
    procs: list[subprocess.Popen] = []

    def _start(steps: int, mode: str) -> subprocess.Popen:
        script = tmp_path / "site.py"
        script.write_text(SITE)
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ledger"), str(steps), mode],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()


def _wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"subprocess never printed {prefix!r}")


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_kill9_during_training_keeps_the_reserved_epsilon(tmp_path, start):
    proc = start(steps=100_000, mode="hang")
    _wait_for(proc, "TRAINING")
    _kill9(proc)
    ledger = PrivacyLedger.load(tmp_path / "ledger")
    assert len(ledger.runs) == 1 and ledger.runs[0].status == "reserved" and ledger.runs[0].round == 7
    offline = RDPAccountant()  # the whole planned run is counted
    offline.history = [(1.0, 0.1, 100_000)]
    assert ledger.epsilon_spent == pytest.approx(offline.get_epsilon(delta=1e-5), rel=1e-9)
    # The restarted site composes on top of the interrupted run, never from zero.
    x = torch.randn(200, 4)
    res = train_dp(nn.Linear(4, 2), TensorDataset(x, (x[:, 0] > 0).long()),
                   lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                   config=DPConfig(noise_multiplier=1.0, expected_batch_size=20, steps=5),
                   ledger=PrivacyLedger.open(tmp_path / "ledger", BUDGET), round=8)
    offline.history = [(1.0, 0.1, 100_005)]
    assert res.epsilon_total == pytest.approx(offline.get_epsilon(delta=1e-5), rel=1e-9)


def test_kill9_after_release_and_mid_write(tmp_path, start):
    proc = start(steps=10, mode="fast")
    line = _wait_for(proc, "RELEASE")
    released = PrivacyLedger.load(tmp_path / "ledger")  # what is on disk when the update may leave
    assert released.runs[-1].status == "committed"
    assert released.epsilon_spent == float(line.split()[1])
    _wait_for(proc, "WRITING")
    seen, reads, deadline = 1, 0, time.monotonic() + 120
    while (seen < 4 or reads < 20) and time.monotonic() < deadline:
        # A concurrent reader only ever sees complete, verified ledgers that never shrink.
        ledger = PrivacyLedger.load(tmp_path / "ledger")
        assert len(ledger.runs) >= seen
        seen, reads = len(ledger.runs), reads + 1
        time.sleep(0.01)
    _kill9(proc)
    final = PrivacyLedger.open(tmp_path / "ledger", BUDGET)
    assert len(final.runs) >= seen > 1
    assert final.epsilon_spent > released.epsilon_spent
