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


@pytest.fixture
def tls_superlink_config(tmp_path):
    """A CA with server certificate and the config of a SuperLink on a free loopback port that uses them."""
    from infrabrain.coordinator.certs import make_tls
    from infrabrain.coordinator.flower_env import free_port
    from infrabrain.coordinator.superlink import SuperlinkConfig

    tls = make_tls(tmp_path / "tls")
    return tls, SuperlinkConfig(port=free_port(), ca_cert=tls.ca_cert, server_cert=tls.server_cert,
                                server_key=tls.server_key, flwr_home=tmp_path / "coord-flwr",
                                database=tmp_path / "superlink.db", log_file=tmp_path / "superlink.log")
