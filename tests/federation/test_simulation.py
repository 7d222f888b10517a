"""The same ServerApp/ClientApp on Flower's simulation engine (Ray): a malformed update is rejected, never
aggregated, and the federation goes on; SecAgg+ really aggregates (only the sum is revealed)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

SMALL = {"site_gpus": 8, "site_hours": 48.0, "noise_multiplier": 1.0, "batch_size": 8, "optimizer": "adam",
         "lr": 0.005, "acceleration": 1000.0}


def _malicious_client_app():
    """The real ClientApp, except that partition 0 answers training with arrays of the wrong shape."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from infrabrain.client.flower_client_app import app as real

    bad = ClientApp()

    @bad.train()
    def train(msg, context):
        if int(context.node_config["partition-id"]) != 0:
            return real(msg, context)
        arrays = ArrayRecord({k: Array(np.zeros((2, 2), np.float32)) for k in msg.content["arrays"].keys()})
        metrics = MetricRecord({"num-examples": 10_000, "epsilon": 0.1, "delta": 1e-5})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @bad.evaluate()
    def evaluate(msg, context):
        return real(msg, context)

    return bad


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_malformed_update_is_rejected_and_federation_continues(tmp_path) -> None:
    import cloudpickle
    from flwr.simulation import run_simulation

    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.server_app import make_server_app
    from infrabrain.coordinator.simulation_run import simulation_config

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = simulation_config(3, 2, None, tmp_path, **SMALL)
    run_simulation(make_server_app(cfg), _malicious_client_app(), num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    reg = ModelRegistry(cfg.registry_dir)
    assert reg.versions() == [0, 1, 2]
    hist = reg.history()
    assert [h["sites_aggregated"] for h in hist[1:]] == [2, 2]
    assert [h["sites_rejected"] for h in hist[1:]] == [1, 1]
    # The global model kept its shapes and stayed finite: the bad update never reached the average.
    final, initial = reg.latest(), reg.load(0)
    assert [a.shape for a in final.arrays] == [a.shape for a in initial.arrays]
    assert all(np.all(np.isfinite(a)) for a in final.arrays)
    audit = [json.loads(x) for x in (tmp_path / "registry" / "audit.jsonl").read_text().splitlines()]
    rejected = [a for a in audit if a["decision"] == "rejected"]
    assert len(rejected) == 2 and len({a["site"] for a in rejected}) == 1
    assert "expected" in rejected[0]["reason"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_secagg_plus_aggregates_on_the_simulation_engine(tmp_path) -> None:
    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.simulation_run import run_simulated_federation, simulation_config

    cfg = simulation_config(3, 1, None, tmp_path, secagg=True, **SMALL)
    report = run_simulated_federation(cfg, 3, tmp_path)
    assert len(report.rounds) == 1
    rnd = report.rounds[0]
    # Flower reports success even when SecAgg+ replies all fail: check that three updates were summed.
    assert rnd["aggregated"] and rnd["sites_aggregated"] == 3, rnd
    assert rnd["eps_max"] is not None and rnd["eps_max"] > 0
    reg = ModelRegistry(cfg.registry_dir)
    assert reg.versions() == [1]
    from infrabrain.client.predictor_task import predictor_initial_weights

    init = predictor_initial_weights(cfg.model_dump(by_alias=True))
    new = reg.latest().arrays
    assert any(not np.allclose(a, b) for a, b in zip(init, new, strict=True))
