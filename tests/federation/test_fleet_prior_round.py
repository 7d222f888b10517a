"""The fleet root prior released over Flower (simulation engine): six sites, one whose budget cannot take the
release (it declines, nothing charged), one that crashes after sharing its keys and one whose masked input is
malformed (their masks are removed with their neighbours' shares). Of the three others one counts on no other
honest site (``fleet-prior-min-honest=1``) and adds the whole sigma. The coordinator publishes the noisy sum of
the three contributions with the noise std all three shares put in it, every site
stores it, the ledgers record exactly the releases that happened, no secret is left on disk, the sites'
checkpoints rank with the merged prior, and a resumed federation does not release again (it sends the published
prior to the sites once more)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SMALL = {"site_gpus": 8, "site_hours": 48.0, "noise_multiplier": 1.0, "batch_size": 8, "optimizer": "adam",
         "lr": 0.005, "acceleration": 1000.0}
TAMPER, CRASH, BROKE = 3, 4, 5
CAUTIOUS = 1  # sets fleet-prior-min-honest=1 in its node config


def _client_app():
    """The real ClientApp, except that site ``CRASH`` fails at the masked stage (after its shares went out) and
    site ``TAMPER`` sends a masked input one cell short; site ``CAUTIOUS``'s node config counts on no other
    honest site (as ``flower-supernode --node-config "fleet-prior-min-honest=1"`` would set it)."""
    from flwr.clientapp import ClientApp

    from infrabrain.client.flower_client_app import app as real

    app = ClientApp()

    @app.train()
    def train(msg, context):
        return real(msg, context)

    @app.evaluate()
    def evaluate(msg, context):
        return real(msg, context)

    @app.query("fleet_prior")
    def fleet_prior(msg, context):
        pid, stage = int(context.node_config["partition-id"]), msg.content["fleet-prior"]["stage"]
        if pid == CAUTIOUS:
            context.node_config["fleet-prior-min-honest"] = 1
        if pid == CRASH and stage == "masked":
            raise RuntimeError("site crashed")
        reply = real(msg, context)
        if pid == TAMPER and stage == "masked":  # a share one cell short: the coordinator must refuse it
            reply.content["fleet-prior"]["masked"] = reply.content["fleet-prior"]["masked"][:-8]
        return reply

    return app


def _exhaust(ledger_dir: Path) -> float:
    """Spend as much of a site's budget as one run can (as its earlier rounds would have): a release, which adds
    about 0.1 to an epsilon near 8, no longer fits."""
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger.open(ledger_dir, BudgetConfig(epsilon_total=8.0), site="partition-5")
    z = 0.58
    while ledger.project(noise_multiplier=z, sample_rate=1.0, steps=1, num_samples=48) > 8.0:
        z *= 1.003
    run = ledger.reserve(round=0, noise_multiplier=z, sample_rate=1.0, steps=1, num_samples=48, max_grad_norm=1.0)
    ledger.commit(run.run_id)
    return ledger.epsilon_spent


def _runs(site_dir: Path) -> list[dict]:
    return json.loads((site_dir / "ledger" / "privacy-ledger.json").read_text())["runs"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fleet_prior_released_over_flower_with_a_decline_and_a_crash(tmp_path) -> None:
    import cloudpickle
    from flwr.simulation import run_simulation

    from infrabrain.client.fleet_prior_site import FLEET_PRIOR_DIR, OWN_FILE, PRIOR_FILE, site_contribution
    from infrabrain.client.local_training import site_settings
    from infrabrain.coordinator.fleet_prior_round import REGISTRY_PRIOR_FILE, published_prior, release_settings
    from infrabrain.coordinator.server_app import make_server_app
    from infrabrain.coordinator.simulation_run import simulation_config
    from infrabrain.models.root_prior import RELATIONS
    from infrabrain.privacy.accounting import epsilon_of
    from infrabrain.privacy.fleet_root_prior import release_noise_multiplier, release_noise_std

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sites = tmp_path / "sites"
    spent_before = _exhaust(sites / f"site-{BROKE:04d}" / "ledger")
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": 2, "include_dashboard": False}}
    # 5 sites send keys; at survival 0.6 the threshold is 3, so two may drop
    cfg = simulation_config(6, 1, None, tmp_path, fleet_prior=True, fleet_prior_survival=0.6, **SMALL)
    run_simulation(make_server_app(cfg), _client_app(), num_supernodes=6, backend_config=backend)

    prior = published_prior(Path(cfg.registry_dir))
    assert prior is not None and prior.n_sites == 3
    # n = 5 sites sent keys (threshold 3): two trusting survivors add sigma / sqrt(3) each, the cautious one sigma
    release = release_settings(cfg)
    sigma = release_noise_multiplier(release) * release.clip_norm
    assert prior.sigma == pytest.approx(release_noise_std(release, 5, [0, 1, 0]))
    assert prior.sigma == pytest.approx(sigma * np.sqrt(2 / 3 + 1))
    assert prior.epsilon == pytest.approx(epsilon_of([(prior.noise_multiplier, 1.0, 1)], release.delta, "prv"))
    assert prior.epsilon < 0.8 * cfg.fleet_prior_epsilon  # more noise than the release asked for
    # The noisy counts are the three contributions' sum plus noise of the published std.
    took_part = [0, 1, 2]
    run_cfg = cfg.site_config()
    truth = sum(site_contribution(site_settings({"partition-id": i, "num-partitions": 6}, run_cfg), run_cfg,
                                  cfg.fleet_prior_clip_norm) for i in took_part)
    noisy = np.array([prior.counts[r] for r in RELATIONS])
    assert truth.sum() > 0
    z = (noisy - truth) / prior.sigma
    assert np.abs(z).max() < 6 and 0.4 < z.std() < 1.8, z
    release_id = json.loads((Path(cfg.registry_dir) / REGISTRY_PRIOR_FILE).read_text())["release-id"]
    # Every reply of every stage is audited under the site's pseudonym, with what it sent, never the content.
    audit = [json.loads(x) for x in (Path(cfg.registry_dir) / "audit.jsonl").read_text().splitlines()]
    decisions = {}
    for a in audit:
        if a["kind"].startswith("fleet-prior."):
            decisions.setdefault(a["kind"][12:], []).append(a["decision"])
            assert a["site"].startswith("site-") and all(isinstance(v, (int, str)) for v in a.get("sent", {}).values())
    assert sorted(decisions["keys"]) == ["accepted"] * 5 + ["declined"]
    assert sorted(a["sent"].get("min-honest", -1) for a in audit if a["kind"] == "fleet-prior.keys") == \
        [-1, 0, 0, 0, 0, 1]  # the sites' policies are audited (the declining site sent none)
    assert sorted(decisions["shares"]) == ["accepted"] * 5
    assert sorted(decisions["masked"]) == ["accepted"] * 3 + ["failed", "rejected"]
    assert sorted(decisions["unmask"]) == ["accepted"] * 3 and decisions["publish"] == ["accepted"] * 6

    for i in range(6):
        site = sites / f"site-{i:04d}"
        stored = json.loads((site / FLEET_PRIOR_DIR / PRIOR_FILE).read_text())
        assert stored["release-id"] == release_id and stored["prior"] == prior.model_dump()
        assert not list((site / FLEET_PRIOR_DIR).glob("release-*.json")), f"site {i} kept its secrets"
        releases = [r for r in _runs(site) if r["sample_rate"] == 1.0 and r["steps"] == 1 and r["round"] == 0]
        own = site / FLEET_PRIOR_DIR / OWN_FILE
        card = json.loads(next((site / "predictor").glob("*.json")).read_text())
        note = json.dumps(card)
        if i in took_part:
            assert len(releases) == 1 and releases[0]["status"] == "committed"
            assert own.is_file() and json.loads(own.read_text())["release-id"] == release_id
            assert "less this site's own contribution" in note
        else:
            assert not own.exists()
            assert "this site did not take part" in note
    assert [r["round"] for r in _runs(sites / f"site-{CRASH:04d}")].count(0) == 0  # crashed before charging
    assert [r["round"] for r in _runs(sites / f"site-{TAMPER:04d}")].count(0) == 1  # charged before it sent
    broke = _runs(sites / f"site-{BROKE:04d}")
    assert len(broke) == 1 and broke[0]["epsilon_after"] == pytest.approx(spent_before)  # training refused too

    # Resumed: the registry holds the prior, so nothing is released or charged again; it is sent again, so a
    # site that lacks it (here: lost it) has it after.
    before = {i: len(_runs(sites / f"site-{i:04d}")) for i in took_part}
    (sites / f"site-{BROKE:04d}" / FLEET_PRIOR_DIR / PRIOR_FILE).unlink()
    cfg2 = simulation_config(6, 2, None, tmp_path, fleet_prior=True, fleet_prior_survival=0.6, **SMALL)
    run_simulation(make_server_app(cfg2), _client_app(), num_supernodes=6, backend_config=backend)
    assert json.loads((Path(cfg.registry_dir) / REGISTRY_PRIOR_FILE).read_text())["release-id"] == release_id
    for i in took_part:
        runs = _runs(sites / f"site-{i:04d}")
        assert len(runs) == before[i] + 1 and runs[-1]["round"] == 2  # one training run, no second release
    again = json.loads((sites / f"site-{BROKE:04d}" / FLEET_PRIOR_DIR / PRIOR_FILE).read_text())
    assert again["release-id"] == release_id
