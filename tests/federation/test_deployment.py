"""Integration test of the deployment path: a real SuperLink (TLS + SuperNode auth) and real SuperNodes on loopback.

One test, because starting Flower processes is what costs time: it checks that
- 3 authenticated sites train the predictor with DP-SGD for 4 rounds and the global model improves;
- a SuperNode whose key is not on the allow-list is rejected;
- a site killed (SIGKILL) in the middle of a round does not stop the federation, and rejoins after a restart
  with its privacy ledger intact;
- every payload the coordinator received was inspected: only the model's arrays and allow-listed metric keys.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from infrabrain.client.supernode import SupernodeConfig, SupernodeSupervisor, start_supernode
from infrabrain.coordinator.certs import make_supernode_keys
from infrabrain.coordinator.flower_env import free_port, stop
from infrabrain.coordinator.inspection import site_pseudonym
from infrabrain.coordinator.registry import ModelRegistry
from infrabrain.coordinator.superlink import register_supernode, start_superlink, submit_run
from infrabrain.privacy.boundary import EVAL_METRIC_KEYS, TRAIN_METRIC_KEYS

ROOT = Path(__file__).resolve().parents[2]
SITE = {"site_gpus": 16, "site_hours": 96.0}


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tls_auth_federation_with_kill_and_rejoin(tmp_path: Path, tls_superlink_config) -> None:
    tls, link_cfg = tls_superlink_config
    registry_dir = tmp_path / "registry"
    procs: dict[str, object] = {}
    link = start_superlink(link_cfg)
    run = None
    try:
        keys, node_ids, site_cfgs = {}, {}, {}
        for i in range(3):
            keys[i] = make_supernode_keys(tmp_path / "keys", f"site{i}")
            node_ids[i] = register_supernode(keys[i].public_key, link_cfg.flwr_home)
            site_cfgs[i] = SupernodeConfig(
                superlink=link_cfg.address, root_certificates=tls.ca_cert, auth_private_key=keys[i].private_key,
                state_dir=tmp_path / f"site{i}", port=free_port(), partition_id=i, num_partitions=3,
                log_file=tmp_path / f"site{i}.log", **SITE)
            procs[f"site{i}"] = SupernodeSupervisor(site_cfgs[i], restart_delay_s=5.0).start()

        # A SuperNode with a key the coordinator never registered is turned away.
        rogue_key = make_supernode_keys(tmp_path / "keys", "rogue")
        rogue = start_supernode(SupernodeConfig(
            superlink=link_cfg.address, root_certificates=tls.ca_cert, auth_private_key=rogue_key.private_key,
            state_dir=tmp_path / "rogue", port=free_port(), log_file=tmp_path / "rogue.log", max_retries=0, **SITE))
        procs["rogue"] = rogue

        run = submit_run(ROOT, link_cfg.flwr_home, link_cfg.connection_name, {
            # public-sites 0: start from random weights, so that "the rounds improve the model" is what is tested
            "num-server-rounds": 4, "registry-dir": str(registry_dir), "round-timeout-s": 240.0, "public-sites": 0,
            "straggler-timeout-s": 15.0, "noise-multiplier": 1.0, "eps-budget": 20.0, "local-epochs": 1,
            "batch-size": 32, "optimizer": "sgd", "lr": 0.1, "acceleration": 1000.0,
            "min-train-sites": 2, "min-available-sites": 2, "site-gpus": SITE["site_gpus"],
            "site-hours": SITE["site_hours"]}, log_path=tmp_path / "run.log")

        _wait(lambda: rogue.poll() is not None, 60, "the unregistered SuperNode to be rejected")
        rogue_log = (tmp_path / "rogue.log").read_text(errors="replace")
        assert rogue.returncode != 0
        assert "Failed to activate SuperNode" in rogue_log or "2004" in rogue_log, rogue_log[-2000:]

        # Kill site 2 (SIGKILL, with its ClientApp) in the middle of round 2; its supervisor brings it back.
        registry = ModelRegistry(registry_dir)
        _wait(lambda: 1 in registry.versions() or run.poll() is not None, 300, "round 1 to complete")
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(3.0)
        stop(procs["site2"].proc, kill=True)

        _wait(lambda: run.poll() is not None, 400, "the federation to finish")
        assert procs["site2"].restarts >= 1
        run_log = (tmp_path / "run.log").read_text(errors="replace")
        assert run.returncode == 0, run_log[-3000:]
    finally:
        stop(run)
        for p in procs.values():
            p.stop() if isinstance(p, SupernodeSupervisor) else stop(p)
        stop(link)

    # All rounds completed and were checkpointed; the model improved on the sites' held-out data.
    registry = ModelRegistry(registry_dir)
    assert registry.versions() == [0, 1, 2, 3, 4]
    history = registry.history()
    assert all(h["aggregated"] for h in history[1:])
    assert all(h["sites_aggregated"] >= 2 for h in history[1:])
    # Improvement = a lower Brier score (a proper scoring rule) on the sites' held-out windows. Ranking metrics
    # (PR/ROC-AUC) on three 16-GPU test sites under DP are too noisy to assert; bench/federation.py measures them.
    first, last = history[0]["eval"], history[-1]["eval"]
    assert last["brier"] < first["brier"] - 0.005, [h["eval"] for h in history]
    assert all(h["eps_max"] <= 20.0 for h in history[1:])
    final = registry.latest()
    assert final is not None and final.round == 4
    # Each site keeps the global model it last evaluated as a predictor checkpoint for its daemon, with the
    # calibration (or the reason for none) fitted on its own labels; the arrays are the registry's.
    from infrabrain.client import predictor_task as pt
    from infrabrain.coordinator.registry import load_site_model
    from infrabrain.models.checkpoint import load_checkpoint

    for i in (0, 1):  # site 2 was killed and may have missed the last evaluation
        _, arrays, meta = load_site_model(tmp_path / f"site{i}" / "global-model.npz")
        ckpt = load_checkpoint(tmp_path / f"site{i}" / "predictor", expected=pt.feature_set())
        assert meta["round"] == ckpt.card["source"]["round"] == 4
        assert all(np.array_equal(a, b) for a, b in zip(arrays, final.arrays, strict=True))
        assert ckpt.card["calibration_note"]

    # Every payload the coordinator received was inspected; only model arrays and allow-listed metrics.
    audit = [json.loads(line) for line in (registry_dir / "audit.jsonl").read_text().splitlines()]
    shapes = final.meta["shapes"]
    assert audit, "no replies were inspected"
    assert not [a for a in audit if a["decision"] == "rejected"], "an honest site's update was rejected"
    for a in audit:
        if a["decision"] != "accepted":
            continue
        if a["kind"] == "train":
            assert a["records"] == ["arrays", "metrics"]
            assert a["arrays"] == shapes
            assert a["dtypes"] == ["float32"]
            assert set(a["metric_keys"]) <= TRAIN_METRIC_KEYS and {"epsilon", "delta"} <= set(a["metric_keys"])
        else:
            assert a["records"] == ["metrics"] and a["arrays"] == []
            assert set(a["metric_keys"]) <= EVAL_METRIC_KEYS
    accepted_train = [a for a in audit if a["kind"] == "train" and a["decision"] == "accepted"]
    assert len(accepted_train) == sum(h["sites_aggregated"] for h in history)

    # Site 2 was killed mid-round 2 and rejoined: it answered again in a later round, its ledger kept every run.
    site2 = site_pseudonym(node_ids[2])
    assert any(a["site"] == site2 and a["round"] >= 3 and a["decision"] == "accepted" for a in audit), audit
    ledger = json.loads((tmp_path / "site2" / "ledger" / "privacy-ledger.json").read_text())
    # Whether it is sampled for training again after rejoining depends on how fast it reconnects (under load it
    # may come back in time for the last evaluation only), so the check is that nothing was lost: every round
    # whose update the coordinator accepted from it is a committed run of its ledger, the run before the kill
    # included, and what it spent is what its runs add up to.
    trained = {a["round"] for a in accepted_train if a["site"] == site2}
    committed = {r["round"] for r in ledger["runs"] if r["status"] == "committed"}
    assert 1 in trained and trained <= committed, (trained, ledger["runs"])
    assert ledger["epsilon_spent"] == pytest.approx(max(r["epsilon_after"] for r in ledger["runs"]))
    assert ledger["epsilon_spent"] > 0
