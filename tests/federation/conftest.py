"""Shared fixtures for the federation tests: a quiet Flower environment in a temp dir, one thread for torch."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _flower_env(tmp_path, monkeypatch):
    """Every Flower process a test starts gets its own FLWR_HOME and the quiet/offline settings."""
    from infrabrain.coordinator.flower_env import QUIET_ENV

    for k, v in QUIET_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield
    assert os.environ.get("FLWR_TELEMETRY_ENABLED") == "0"
