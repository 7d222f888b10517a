"""The site's side of the fleet root prior release refuses what it should, at the site, before anything leaves."""

from __future__ import annotations

import json

import pytest

from infrabrain.client.fleet_prior_site import (
    FLEET_PRIOR_DIR,
    PRIOR_FILE,
    check_reply,
    handle_stage,
    min_honest_of,
    release_config,
    release_params,
    stored_fleet_prior,
)
from infrabrain.client.local_training import site_settings
from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig

RID = "0123456789abcdef"


def _settings(tmp_path):
    return site_settings({"partition-id": 0, "num-partitions": 3, "state-dir": str(tmp_path / "site")}, {})


def _params(stage: str, **extra):
    return {"stage": stage, "release-id": RID, **release_params(FleetRootPriorConfig()), **extra}


def test_release_parameters_round_trip_and_bad_ones_are_named() -> None:
    cfg = FleetRootPriorConfig(epsilon=2.0, clip_norm=1.0)
    assert release_config(release_params(cfg)) == cfg
    with pytest.raises(ValueError, match="epsilon"):
        release_config({**release_params(cfg), "epsilon": -1.0})
    with pytest.raises(ValueError, match="min_sites"):
        release_config({**release_params(cfg), "min-sites": 1})


def test_stages_refuse_bad_requests(tmp_path) -> None:
    s = _settings(tmp_path)
    with pytest.raises(ValueError, match="unknown fleet-prior stage 'steal'"):
        handle_stage(s, {}, {}, {"stage": "steal", "release-id": RID}, {})
    with pytest.raises(ValueError, match="not a hex id"):
        handle_stage(s, {}, {}, _params("keys", **{"release-id": "../../ledger"}), {})
    with pytest.raises(ValueError, match="holds no state"):
        handle_stage(s, {}, {}, _params("masked", index=0, n=3, active=[0, 1, 2]), {})
    # A site whose node config opts out declines without reading its data or its ledger.
    assert handle_stage(s, {"fleet-prior": "false"}, {}, _params("keys"), {}) == {
        "declined": "the site's node config sets fleet-prior=false"}
    assert not (s.state_path / "ledger").exists()


def test_min_honest_is_the_site_s_own_setting_and_a_bad_one_is_named(tmp_path) -> None:
    assert min_honest_of({}) == 0  # the release's threshold
    assert min_honest_of({"fleet-prior-min-honest": 1}) == 1 and min_honest_of({"fleet-prior-min-honest": "3"}) == 3
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ValueError, match="fleet-prior-min-honest=.*expected a positive integer"):
            min_honest_of({"fleet-prior-min-honest": bad})
    # the keys stage refuses it before reading the site's data or writing any state
    s = _settings(tmp_path)
    with pytest.raises(ValueError, match="fleet-prior-min-honest='none'"):
        handle_stage(s, {"fleet-prior-min-honest": "none"}, {}, _params("keys"), {})
    assert not (s.state_path / FLEET_PRIOR_DIR).exists() and not (s.state_path / "ledger").exists()


def test_replies_carry_only_their_stage_keys() -> None:
    check_reply("keys", {"pub-c": b"x", "pub-s": b"y", "min-honest": 2})
    check_reply("unmask", {"b-0": b"x", "sk-12": b"y"})
    with pytest.raises(RuntimeError, match="'contribution'"):
        check_reply("masked", {"masked": b"x", "contribution": "1,2,3"})
    with pytest.raises(RuntimeError, match="'to-x'"):
        check_reply("shares", {"to-x": b"x"})
    with pytest.raises(RuntimeError, match="of type list"):
        check_reply("keys", {"pub-c": [1, 2]})


def test_a_published_prior_that_does_not_validate_is_not_stored(tmp_path) -> None:
    s = _settings(tmp_path)
    good = {"counts": {"gpu@0": 3.0}, "n_sites": 3, "noise_multiplier": 4.0, "clip_norm": 4.0, "epsilon": 1.0,
            "delta": 1e-6, "accountant": "prv"}
    assert handle_stage(s, {}, {}, _params("publish", prior=json.dumps(good)), {}) == {"stored": 1}
    for bad, needle in (({**good, "counts": {"psu@9": 1.0}}, "unknown relation"),
                        ({**good, "epsilon": -1.0}, "epsilon"), ({**good, "extra": 1}, "extra")):
        with pytest.raises(ValueError, match=needle):
            handle_stage(s, {}, {}, _params("publish", prior=json.dumps(bad)), {})
    prior, own = stored_fleet_prior(s)
    assert prior.counts == {"gpu@0": 3.0} and own is None  # the good one is kept; the site did not take part
    (s.state_path / FLEET_PRIOR_DIR / PRIOR_FILE).write_text("{not json")
    assert stored_fleet_prior(s) is None


def test_the_checkpoints_prior_reads_the_release_against_the_published_mix_and_adds_it(tmp_path) -> None:
    """A site's checkpoint prior (follow-up 26): its own counts, the fleet's release read against the published
    mix's shares on its topology, and the published mix as pseudo-failures; 0 leaves out both published parts."""
    from infrabrain.client.site_checkpoint import _root_prior
    from infrabrain.models.published_root_prior import published_root_prior, relation_shares
    from infrabrain.models.root_prior import RootPrior, merge_root_priors
    from infrabrain.models.snapshots import graph_from_topology
    from infrabrain.privacy.fleet_root_prior import FleetRootPrior, site_root_prior
    from infrabrain.simulation.federation import federation_specs
    from infrabrain.simulation.topology import build_topology

    s = _settings(tmp_path)
    release = {"counts": {"gpu@1": 60.0, "node@0": 45.0, "spine@3": 9.0}, "n_sites": 6, "noise_multiplier": 4.0,
               "clip_norm": 4.0, "epsilon": 1.0, "delta": 1e-6, "accountant": "prv"}
    handle_stage(s, {}, {}, _params("publish", prior=json.dumps(release)), {})
    graph = graph_from_topology(build_topology(federation_specs(1, 0)[0]))
    local = RootPrior(counts={"node@0": 4}, failures=4)
    fleet = FleetRootPrior.model_validate(release)
    prior, note = _root_prior(s, local, graph)
    read = site_root_prior(local, fleet, None, base=relation_shares(graph))
    assert prior == merge_root_priors(read, published_root_prior(graph))
    assert read.counts.get("spine@3", 0) < site_root_prior(local, fleet).counts["spine@3"]  # noise, read down
    assert "against the published mix's shares" in note and "published failure mix" in note
    bare, note = _root_prior(s.model_copy(update={"published_prior_failures": 0}), local, graph)
    assert bare == site_root_prior(local, fleet) and "published" not in note


def test_a_site_refuses_keys_at_its_index_that_are_not_its_own(tmp_path) -> None:
    """The coordinator forwards the public keys; a site checks that the ones at its index are those it sent
    (else shares encrypted for it would be readable by whoever swapped them), then shares with its neighbours."""
    from infrabrain.privacy.secure_sum import advertise

    small = {"site-gpus": 8, "site-hours": 48.0, "acceleration": 1000.0}
    s = site_settings({"partition-id": 0, "num-partitions": 3, "state-dir": str(tmp_path / "site")}, small)
    mine = handle_stage(s, {"fleet-prior-min-honest": 2}, small, _params("keys"), {})
    assert set(mine) == {"pub-c", "pub-s", "min-honest"} and mine["min-honest"] == 2
    others = [advertise() for _ in range(3)]
    payload = {"pub-c-0": mine["pub-c"], "pub-s-0": mine["pub-s"]}
    payload |= {f"pub-{k}-{i}": others[i][1 if k == "c" else 2] for i in (1, 2) for k in ("c", "s")}
    swapped = {**payload, "pub-c-0": others[0][1]}
    with pytest.raises(ValueError, match="not the ones it sent"):
        handle_stage(s, {}, small, _params("shares", index=0, n=3), swapped)
    shares = handle_stage(s, {}, small, _params("shares", index=0, n=3), payload)
    assert set(shares) == {"to-1", "to-2"} and all(isinstance(v, bytes) for v in shares.values())
