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


@pytest.fixture
def dp_round_inputs(tmp_path, monkeypatch):
    """``inputs(*cfgs)``: per round config, what an 8-GPU site's DP round hands DP-SGD (``(model, dataset,
    loss_fn)``), caught before any step, so nothing is trained or charged."""
    import infrabrain.privacy.dp_training as dpt
    from infrabrain.client import predictor_task as pt
    from infrabrain.client.local_training import site_settings

    class Stop(Exception):
        pass

    seen = []

    def capture(model, dataset, loss_fn, collate, **kw):
        seen.append((model, dataset, loss_fn))
        raise Stop

    monkeypatch.setattr(dpt, "train_dp", capture)
    s = site_settings({"partition-id": 0, "num-partitions": 1},
                      {"site-gpus": 8, "site-hours": 48.0, "state-root": str(tmp_path)})
    base = {"acceleration": 500.0, "noise-multiplier": 1.0, "batch-size": 4, "server-round": 1}

    def inputs(*overrides: dict) -> list[tuple]:
        seen.clear()
        for extra in overrides:
            cfg = {**base, **extra}
            with pytest.raises(Stop):
                pt.predictor_train(s, pt.predictor_initial_weights(cfg), cfg)
        return list(seen)

    return inputs
