"""Site-side pieces: settings from node config, the SuperNode's config string, the cached local data."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.client.local_training import site_settings


def test_node_config_overrides_round_config(tmp_path) -> None:
    s = site_settings({"partition-id": 2, "num-partitions": 3, "state-dir": str(tmp_path / "s")},
                      {"site-gpus": 64, "state-root": "/elsewhere", "partition-id": 0})
    assert s.partition_id == 2 and s.site_gpus == 64 and s.state_dir == str(tmp_path / "s")
    assert s.data_path == tmp_path / "s" / "local-data"
    with pytest.raises(ValueError, match="partition-id=3 must be < num-partitions=3"):
        site_settings({"partition-id": 3, "num-partitions": 3}, {})


def test_supernode_node_config_is_parsed_by_flower(tmp_path) -> None:
    from flwr.common.config import parse_config_args

    from infrabrain.client.supernode import SupernodeConfig

    key = tmp_path / "k"
    key.write_text("x")
    cfg = SupernodeConfig(superlink="127.0.0.1:9200", root_certificates=key, auth_private_key=key,
                          state_dir=tmp_path / "state dir", partition_id=1, num_partitions=4, site_gpus=32)
    parsed = parse_config_args([cfg.node_config()])
    assert parsed["partition-id"] == 1 and parsed["num-partitions"] == 4 and parsed["site-gpus"] == 32
    assert parsed["state-dir"] == str((tmp_path / "state dir").resolve())
    with pytest.raises(ValueError, match="host:port"):
        SupernodeConfig(superlink="no-port", root_certificates=key, auth_private_key=key, state_dir=tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        SupernodeConfig(superlink="h:1", root_certificates=tmp_path / "missing", auth_private_key=key,
                        state_dir=tmp_path)


def test_site_data_is_cached_on_site_and_identical(tmp_path) -> None:
    from infrabrain.client import predictor_task as pt

    s = site_settings({"partition-id": 0, "num-partitions": 1}, {"site-gpus": 8, "site-hours": 48.0,
                                                                 "state-root": str(tmp_path)})
    first = pt.site_data(s, {"acceleration": 500.0})
    assert (s.data_path / "meta.json").is_file()
    pt._site_data_cached.cache_clear()
    again = pt.site_data(s, {"acceleration": 500.0})
    assert len(first.train) == len(again.train) >= 4 and len(first.test) == len(again.test)
    a, b = first.train[len(first.train) - 1], again.train[len(again.train) - 1]
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    # Training windows never overlap: one window is the privacy unit.
    assert first.train.stride >= first.train.window


def test_the_training_device_is_the_sites_word(tmp_path) -> None:
    from flwr.common.config import parse_config_args

    from infrabrain.client.supernode import SupernodeConfig

    assert site_settings({"device": "cuda:1"}, {"device": "cpu"}).device == "cuda:1"
    assert site_settings({}, {"device": "cuda"}).device == "cpu"  # the coordinator cannot pick a site's hardware
    with pytest.raises(ValueError, match="device 'gpu' is not one of"):
        site_settings({"device": "gpu"}, {})
    key = tmp_path / "k"
    key.write_text("x")
    common = {"superlink": "127.0.0.1:9200", "root_certificates": key, "auth_private_key": key,
              "state_dir": tmp_path}
    assert parse_config_args([SupernodeConfig(**common, device="cuda").node_config()])["device"] == "cuda"
    assert "device" not in parse_config_args([SupernodeConfig(**common).node_config()])
    with pytest.raises(ValueError, match="device 'GPU0' is not one of"):
        SupernodeConfig(**common, device="GPU0")


def test_the_sites_fleet_prior_policy_reaches_its_node_config(tmp_path) -> None:
    """site.yaml's fleet_prior and fleet_prior_min_honest are the site's word, read by its ClientApp."""
    from flwr.common.config import parse_config_args

    from infrabrain.client.fleet_prior_site import min_honest_of, opted_out
    from infrabrain.client.supernode import SupernodeConfig

    key = tmp_path / "k"
    key.write_text("x")
    common = {"superlink": "127.0.0.1:9200", "root_certificates": key, "auth_private_key": key,
              "state_dir": tmp_path}
    default = parse_config_args([SupernodeConfig(**common).node_config()])
    assert "fleet-prior" not in default and min_honest_of(default) == 0 and not opted_out(default)
    cautious = parse_config_args([SupernodeConfig(**common, fleet_prior_min_honest=1).node_config()])
    assert min_honest_of(cautious) == 1
    assert opted_out(parse_config_args([SupernodeConfig(**common, fleet_prior=False).node_config()]))
    with pytest.raises(ValueError, match="fleet_prior_min_honest"):
        SupernodeConfig(**common, fleet_prior_min_honest=0)
    # the published mix's weight in the site's root prior is the site's word too (0: left out)
    assert site_settings(default, {}).published_prior_failures is None
    off = parse_config_args([SupernodeConfig(**common, published_prior_failures=0).node_config()])
    assert site_settings(off, {"published-prior-failures": 500}).published_prior_failures == 0
    assert site_settings(default, {"published-prior-failures": 0}).published_prior_failures is None  # not the round's
    with pytest.raises(ValueError, match="published_prior_failures"):
        SupernodeConfig(**common, published_prior_failures=-1)


def _train_cfg() -> dict:
    return {"acceleration": 500.0, "local-epochs": 1.0, "noise-multiplier": 1.0, "batch-size": 4, "eps-budget": 8.0,
            "server-round": 1}


def _site(tmp_path, device: str):
    return site_settings({"partition-id": 0, "num-partitions": 1, "device": device},
                         {"site-gpus": 8, "site-hours": 48.0, "state-root": str(tmp_path)})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_gpu_the_site_lacks_fails_before_any_budget_is_reserved(tmp_path) -> None:
    from infrabrain.client import predictor_task as pt

    s = _site(tmp_path, "cuda")
    with pytest.raises(ValueError, match="device 'cuda' asked for, but"):
        pt.predictor_train(s, pt.predictor_initial_weights(_train_cfg()), _train_cfg())
    assert not (s.state_path / "ledger").exists()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_a_site_trains_its_round_on_its_gpu(tmp_path) -> None:  # pragma: no cover - GPU machines
    from infrabrain.client import predictor_task as pt

    s = _site(tmp_path, "cuda")
    start = pt.predictor_initial_weights(_train_cfg())
    res = pt.predictor_train(s, start, _train_cfg())
    assert res.metrics["epsilon"] > 0 and res.metrics["dp-steps"] >= 1
    assert [w.shape for w in res.weights] == [w.shape for w in start]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in res.weights)
    assert any(not np.array_equal(a, b) for a, b in zip(start, res.weights))
    ev = pt.predictor_evaluate(s, res.weights, _train_cfg())
    assert ev.num_examples > 0 and np.isfinite(ev.metrics["eval-loss"])


def _trained_site(tmp_path):
    """A 32-GPU site's settings and data, and the arrays of a predictor trained briefly on all of its snapshots,
    the held-out split's included: a model that ranks this site's failures, as a federated global model should
    (DP rounds would take far longer). These tests check what the site keeps, not how a model transfers: the
    training split's nine failing rows give no ranking of the held-out ones in three epochs."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.models.snapshots import SnapshotDataset
    from infrabrain.models.training import TrainConfig, get_weights, train_model

    s = site_settings({"partition-id": 0, "num-partitions": 1}, {"site-gpus": 32, "site-hours": 48.0,
                                                                 "state-root": str(tmp_path)})
    cfg = {"acceleration": 500.0, "server-round": 3}
    data = pt.site_data(s, cfg)
    model = pt.build_predictor(cfg, data.input_scaling)
    whole = SnapshotDataset(data.train.sites, data.train.window, data.test.stride, pool=data.train.pool)
    train_model(model, whole, None, TrainConfig(epochs=3, progress=False))
    return s, cfg, data, get_weights(model)


def test_the_site_keeps_a_predictor_checkpoint_of_the_global_model_calibrated_on_its_own_labels(tmp_path) -> None:
    from infrabrain.client import predictor_task as pt
    from infrabrain.client.site_checkpoint import GLOBAL_MODEL_FILE, SITE_CHECKPOINT_DIR, keep_global_model
    from infrabrain.coordinator.registry import load_site_model
    from infrabrain.models.calibration import PlattCalibrator
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.models.predict import predict_run
    from infrabrain.client.site_checkpoint import _root_prior
    from infrabrain.models.published_root_prior import published_root_prior
    from infrabrain.models.root_prior import RootPrior, fit_root_prior, merge_root_priors
    from infrabrain.models.snapshots import SnapshotDataset
    from infrabrain.models.training import predict_scores, set_weights
    from infrabrain.simulation.engine import simulate_site

    s, cfg, data, weights = _trained_site(tmp_path)
    metrics = pt.predictor_evaluate(s, weights, cfg).metrics
    out = keep_global_model(s, [str(i) for i in range(len(weights))], weights, cfg, metrics)
    assert out == s.state_path / SITE_CHECKPOINT_DIR
    _, arrays, meta = load_site_model(s.state_path / GLOBAL_MODEL_FILE)
    assert meta["round"] == 3 and all(np.array_equal(a, w) for a, w in zip(arrays, weights, strict=True))

    ckpt = load_checkpoint(out, expected=pt.feature_set())  # what the daemon and `models predict` load
    cal = PlattCalibrator.from_card(ckpt.card)
    assert cal is not None and cal.a > 0 and cal.positives > 0
    assert ckpt.card["source"] == {"kind": "federated-global-model", "round": 3,
                                   "normalizer": "public reference (predictor_task.public_reference)"}
    assert ckpt.card["metrics"]["pr-auc"] == metrics["pr-auc"] and "never sent" in ckpt.card["calibration_note"]
    thr = ckpt.card["alert_threshold"]
    assert thr is None or 0.0 < thr < 1.0
    # The site's own root prior (both splits), so the daemon ranks root causes as the centralised pipeline does,
    # plus the published failure mix on its topology as pseudo-failures (follow-up 26).
    prior = RootPrior.from_card(ckpt.card)
    own = merge_root_priors(fit_root_prior(data.train), fit_root_prior(data.test))
    published = published_root_prior(data.train.sites[0].graph)
    assert prior is not None and published is not None and prior == merge_root_priors(own, published)
    whole = SnapshotDataset(data.train.sites, data.train.window, stride=1, pool=data.train.pool)
    assert 0 < own.failures <= fit_root_prior(whole).failures  # each failure once: the splits are an hour apart
    assert "never sent" in ckpt.card["root_prior_note"]
    # and how far its own components moved over its training windows (follow-up 37), fitted there as well
    from infrabrain.models.own_change_evidence import OwnChangeTails, fit_own_change_tails

    assert OwnChangeTails.from_card(ckpt.card) == fit_own_change_tails(data.train, pt.feature_set())
    assert f"published failure mix (Llama 3) laid on the site's topology as {published.failures}" in (
        ckpt.card["root_prior_note"])
    # a site that leaves the published mix out (published-prior-failures = 0) keeps its own counts alone
    bare = s.model_copy(update={"published_prior_failures": 0})
    kept, note = _root_prior(bare, own, data.train.sites[0].graph)
    assert kept == own and "published" not in note and "never sent" in note
    # the daemon ranks with the card's prior as written, adding no mix (follow-up 29); a site that left the mix
    # out and has no labelled root ranks without a prior, as its note says, not with the mix after all
    from infrabrain.models.published_root_prior import CARD_PUBLISHED_KEY, deployed_root_prior

    assert ckpt.card[CARD_PUBLISHED_KEY] == 0
    assert deployed_root_prior(ckpt.card, data.train.sites[0].graph) == (prior, "card")
    none, note = _root_prior(bare, None, data.train.sites[0].graph)
    assert none is None and "without a prior" in note
    card = {**ckpt.card, "root_prior": None, "root_prior_note": note}
    assert deployed_root_prior(card, data.train.sites[0].graph) == (None, "none")

    # The checkpoint is the evaluated model: same logits on the site's held-out rows (weights, input scaling).
    ref = pt.build_predictor(cfg, data.input_scaling)
    set_weights(ref, weights)
    want = predict_scores(ref.eval(), data.test)
    got = predict_scores(ckpt.model, data.test)
    np.testing.assert_allclose(got["logit"].to_numpy(), want["logit"].to_numpy(), rtol=1e-5, atol=1e-5)
    # and it names the cause as the evaluated model does (its cause head, issue 3 follow-up 38)
    from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS
    from infrabrain.models.gnn import cause_groups_of
    from infrabrain.models.training import cause_column

    assert cause_groups_of(ckpt.model) == TYPED_CAUSE_GROUPS
    cols = [cause_column(g) for g in TYPED_CAUSE_GROUPS]
    np.testing.assert_allclose(got[cols].to_numpy(), want[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    # and whether that naming held up on the site's held-out split, counted there and never sent
    from infrabrain.models.cause_naming import CauseNamingCheck, fit_cause_naming

    assert CauseNamingCheck.from_card(ckpt.card) == fit_cause_naming(want, "site held-out")

    # `models predict` on the site's raw telemetry reads the public normaliser from the card and reports the
    # calibrated risk of the same window (no train/serve skew: until encoding 3 a GPU back from repair read as a
    # fresh hardware XID in training but not here).
    run = simulate_site(pt.site_spec(s), s.site_hours, seed=s.data_seed * 1000 + s.partition_id, acceleration=500.0)
    ends = np.unique(want["t"].to_numpy())
    for t_end in ends[:: max(1, len(ends) // 12)]:
        rows = {r["node"]: r["risk"] for r in predict_run(ckpt, run, at_s=int(t_end), explain_top=0)}
        at = want[want["t"] == t_end]
        np.testing.assert_allclose([rows[n] for n in at["node"]], cal.apply(at["logit"].to_numpy()), rtol=1e-5,
                                   err_msg=f"window ending at {t_end} s")


def test_a_global_model_that_ranks_the_sites_failures_low_is_kept_uncalibrated(tmp_path) -> None:
    from infrabrain.client.site_checkpoint import keep_global_model
    from infrabrain.models.checkpoint import load_checkpoint

    s, cfg, _, weights = _trained_site(tmp_path)
    from infrabrain.client import predictor_task as pt

    names = [n for n, _ in pt.build_predictor(cfg, None).named_parameters()]
    out_layer = {names.index("head2.weight"), names.index("head2.bias")}  # before the cause head's arrays
    mirrored = [-w if i in out_layer else w for i, w in enumerate(weights)]  # every failure logit flips sign
    out = keep_global_model(s, [str(i) for i in range(len(weights))], mirrored, cfg)
    card = load_checkpoint(out).card
    assert card["calibration"] is None and card["alert_threshold"] is None
    assert "ranks the site's failing rows below its healthy ones" in card["calibration_note"]
