"""SecAgg+ on the deployment path: a real SuperLink (TLS + SuperNode auth) and three real SuperNodes on loopback.

The simulation-engine test (test_simulation.py) checks the SecAgg+ arithmetic; this one checks that the same
legacy workflow runs over the network stack a real federation uses, with DP at every site, and that the fleet
root prior's release (its own secure sum over the Message API, test_fleet_prior_round.py) runs over it before
round 1, with one site's site.yaml counting on no other honest site (``fleet_prior_min_honest: 1``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infrabrain.client.supernode import SupernodeConfig, SupernodeSupervisor
from infrabrain.coordinator.certs import make_supernode_keys
from infrabrain.coordinator.flower_env import free_port, stop
from infrabrain.coordinator.registry import ModelRegistry
from infrabrain.coordinator.superlink import register_supernode, start_superlink, submit_run

ROOT = Path(__file__).resolve().parents[2]
SITE = {"site_gpus": 16, "site_hours": 96.0}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_secagg_plus_over_tls_with_authenticated_supernodes(tmp_path: Path, tls_superlink_config) -> None:
    tls, link_cfg = tls_superlink_config
    registry_dir = tmp_path / "registry"
    link = start_superlink(link_cfg)
    sites: list[SupernodeSupervisor] = []
    run = None
    run_config = {
        "num-server-rounds": 1, "registry-dir": str(registry_dir), "round-timeout-s": 240.0, "secagg": True,
        "secagg-num-shares": 3, "secagg-threshold": 2, "noise-multiplier": 1.0, "eps-budget": 20.0,
        "public-sites": 0, "min-train-sites": 3, "min-available-sites": 3, "acceleration": 1000.0,
        "site-gpus": SITE["site_gpus"], "site-hours": SITE["site_hours"], "fleet-prior": True}
    try:
        for i in range(3):
            keys = make_supernode_keys(tmp_path / "keys", f"site{i}")
            register_supernode(keys.public_key, link_cfg.flwr_home)
            sites.append(SupernodeSupervisor(SupernodeConfig(
                superlink=link_cfg.address, root_certificates=tls.ca_cert, auth_private_key=keys.private_key,
                state_dir=tmp_path / f"site{i}", port=free_port(), partition_id=i, num_partitions=3,
                log_file=tmp_path / f"site{i}.log", fleet_prior_min_honest=1 if i == 0 else None, **SITE),
                restart_delay_s=5.0).start())
        run = submit_run(ROOT, link_cfg.flwr_home, link_cfg.connection_name, run_config, log_path=tmp_path / "run.log")
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
        run_log = (tmp_path / "run.log").read_text(errors="replace")
        assert run.returncode == 0, run_log[-3000:]
    finally:
        if run is not None:
            stop(run)
        for s in sites:
            s.stop()
        stop(link)

    history = ModelRegistry(registry_dir).history()
    assert [h["round"] for h in history] == [1]
    assert all(h["secagg"] and h["aggregated"] and h["sites_aggregated"] == 3 for h in history), history
    assert all(0 < h["eps_max"] <= 20.0 for h in history)
    # The legacy (SecAgg+) evaluate path keeps the global model for the daemon too.
    from infrabrain.models.checkpoint import load_checkpoint

    assert all(load_checkpoint(tmp_path / f"site{i}" / "predictor").card["source"]["round"] == 1 for i in range(3))
    # Before round 1 the three SuperNodes released the fleet root prior over the same TLS links (a second
    # secure sum, over the Message API); each site stored it and its checkpoint ranks with it.
    from infrabrain.coordinator.fed_config import FederationConfig
    from infrabrain.coordinator.fleet_prior_round import published_prior, release_settings
    from infrabrain.privacy.fleet_root_prior import release_noise_std

    prior = published_prior(registry_dir)
    assert prior is not None and prior.n_sites == 3
    # site 0's site.yaml counts on no other honest site: its whole sigma is in the sum, and in the published std
    release = release_settings(FederationConfig.from_run_config(run_config))
    assert prior.sigma == pytest.approx(release_noise_std(release, 3, [1, 0, 0]))
    for i in range(3):
        card = load_checkpoint(tmp_path / f"site{i}" / "predictor").card
        assert "less this site's own contribution" in card["root_prior_note"]
        assert not list((tmp_path / f"site{i}" / "fleet-prior").glob("release-*.json"))
