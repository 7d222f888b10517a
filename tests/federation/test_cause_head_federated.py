"""The federated predictor has the centralised one's detached cause head (issue 3 follow-up 38): every party
builds it from the round's ``cause-head`` setting (true by default), a site's DP-SGD round trains it on the
site's own labels, and the site's checkpoint names an alert's likely cause from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infrabrain.client.local_training import site_settings
from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS, cause_names
from infrabrain.models.gnn import cause_group_of, cause_groups_of


def test_the_federation_sends_the_setting_to_every_site() -> None:
    assert FederationConfig.from_run_config({}).site_config()["cause-head"] is True
    assert FederationConfig.from_run_config({"cause-head": False}).site_config()["cause-head"] is False
    with pytest.raises(ValueError, match="cause-head"):
        FederationConfig.from_run_config({"cause-head": "sometimes"})


def test_every_party_builds_the_head_from_the_setting_and_the_risk_part_is_unchanged() -> None:
    from infrabrain.client import predictor_task as pt

    with_head, without = pt.build_predictor({}, None), pt.build_predictor({"cause-head": False}, None)
    assert cause_groups_of(with_head) == TYPED_CAUSE_GROUPS and cause_groups_of(without) == ()
    heads = {k: v for k, v in with_head.state_dict().items() if k.startswith("cause_head.")}
    assert len(heads) == 4  # two linear layers' weights and biases: the arrays a round carries besides
    assert len(pt.predictor_initial_weights({})) == len(pt.predictor_initial_weights({"cause-head": False})) + 4
    # the head is built with the random state forked: the failure part starts from the same numbers either way
    rest = {k: v for k, v in with_head.state_dict().items() if k not in heads}
    assert rest.keys() == without.state_dict().keys()
    assert all(torch.equal(v, without.state_dict()[k]) for k, v in rest.items())
    with pytest.raises(ValueError, match="cause-head must be true or false, got 'yes'"):
        pt.build_predictor({"cause-head": "yes"}, None)


def test_a_sites_dp_round_trains_the_head_on_its_own_labels(dp_round_inputs) -> None:
    """What a site's round hands DP-SGD: a model whose head gets a gradient from a failing row's cause, and no
    head where the round says so."""
    from infrabrain.models.snapshots import collate_snapshots

    (model, dataset, loss_fn), (bare, _, _) = dp_round_inputs({}, {"cause-head": False})
    assert cause_groups_of(model) == TYPED_CAUSE_GROUPS and cause_groups_of(bare) == ()
    causes, _ = cause_names()
    named = [i for i, c in enumerate(causes) if c not in ("software", "gsp")]
    failing = [item for item in dataset
               if bool(((item["y"] > 0) & torch.isin(item["cause"], torch.tensor(named))).any())]
    assert failing, "the site's training split has no failing row of a cause the head names"
    loss_fn(model, collate_snapshots(failing[:1])).backward()
    head = [p.grad for n, p in model.named_parameters() if n.startswith("cause_head.")]
    assert head and all(g is not None and bool(g.abs().sum() > 0) for g in head)


def test_the_benchs_explanation_report_pools_sites_and_scores_the_ranking_without_the_head(tmp_path) -> None:
    """``heldout_explanations`` (bench/federation.py): the head's accuracy over the failing rows it names, the
    root-cause ranking pooled over sites by their failure counts, and beside it the same ranking without the
    head (a model without a head reports neither) and without the part an alert names."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.coordinator.comparison import heldout_explanations
    from infrabrain.models.evaluation import failure_events

    s = site_settings({"partition-id": 0, "num-partitions": 1},
                      {"site-gpus": 32, "site-hours": 48.0, "state-root": str(tmp_path)})
    cfg = {"acceleration": 500.0}
    data = pt.site_data(s, cfg)
    one = heldout_explanations(pt.predictor_initial_weights(cfg), [data], cfg, max_events=6)
    events = failure_events(data.test)
    assert 0 < one["root_cause"]["n"] <= min(6, len(events))  # failures with a row 5-60 min before
    causes, group = cause_names()[0], cause_group_of()
    named = sum(group[causes[c]] in TYPED_CAUSE_GROUPS for c in data.test.failing_causes())
    assert one["cause_head"]["rows"] == named > 0
    assert one["root_cause_without_cause_head"]["n"] == one["root_cause"]["n"]
    assert one["root_cause_without_part"]["n"] == one["root_cause"]["n"]  # issue 3 follow-up 43
    two = heldout_explanations(pt.predictor_initial_weights(cfg), [data, data], cfg, max_events=6)
    assert two["root_cause"]["n"] == 2 * one["root_cause"]["n"]
    assert two["root_cause"]["top3"] == pytest.approx(one["root_cause"]["top3"])
    assert two["cause_head"]["rows"] == 2 * one["cause_head"]["rows"]
    bare_cfg = {**cfg, "cause-head": False}
    bare = heldout_explanations(pt.predictor_initial_weights(bare_cfg), [data], bare_cfg, max_events=6)
    assert bare["cause_head"] is None and "root_cause_without_cause_head" not in bare
    assert "root_cause_without_part" in bare  # a part is read off the metric, head or no head
    assert bare["root_cause"]["n"] == one["root_cause"]["n"]
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_federation", Path(__file__).resolve().parents[2] / "bench" / "federation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    keys = bench._explanation_keys(one, "federated")  # the bench's JSON keys and its line
    for src, suffix in (("root_cause", ""), ("root_cause_without_cause_head", "_without_cause_head"),
                        ("root_cause_without_part", "_without_part")):
        assert keys[f"rootcause_top1_federated{suffix}"] == round(one[src]["top1"], 4)
    assert "(without the part " in bench._explanation_line(one)


def test_the_demo_shows_a_sites_riskiest_window_with_the_cause_its_checkpoint_names(tmp_path) -> None:
    """``site_top_alert`` (``make demo``): the site's checkpoint on its own riskiest held-out window, as its
    daemon would read it, with the cause the federated model's head names and the truth beside it."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.client.site_checkpoint import keep_global_model
    from infrabrain.coordinator.comparison import settings_for, site_top_alert
    from infrabrain.coordinator.simulation_run import simulation_config
    from infrabrain.models.checkpoint import load_checkpoint
    from infrabrain.models.snapshots import SnapshotDataset
    from infrabrain.models.training import TrainConfig, get_weights, predict_scores, train_model

    cfg = simulation_config(1, 1, None, tmp_path, site_gpus=32, site_hours=48.0, acceleration=500.0)
    site_cfg = {**cfg.site_config(), "server-round": 1}
    s = settings_for(cfg, 0, 1, cfg.state_root)
    data = pt.site_data(s, site_cfg)
    model = pt.build_predictor(site_cfg, data.input_scaling)
    train_model(model, SnapshotDataset(data.train.sites, data.train.window, data.test.stride, pool=data.train.pool),
                None, TrainConfig(epochs=2, progress=False))
    weights = get_weights(model)
    out = keep_global_model(s, [str(i) for i in range(len(weights))], weights, site_cfg)
    alert = site_top_alert(cfg, 0, 1, plot_dir=tmp_path / "pics")
    rows = predict_scores(load_checkpoint(out).model, data.test)
    best = rows.loc[rows["score"].idxmax()]
    assert alert["t"] == int(best["t"]) and alert["cause"] in TYPED_CAUSE_GROUPS
    top = rows[rows["t"] == alert["t"]].sort_values("score").iloc[-1]
    assert alert["failed"] == bool(top["label"]) and alert["node_id"] in alert["explanation"]
    assert len(alert["root_causes"]) == 3 and alert["risk"] > 0
    # ... and its picture, the metrics the sentence quotes and why the roots rank where they do (follow-up 39)
    assert alert["plot"] == str(tmp_path / "pics" / f"alert-01-{alert['node_id']}.png")
    assert Path(alert["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_a_registry_from_before_the_head_resumes_only_without_it_and_says_so(tmp_path) -> None:
    """A federation upgraded past follow-up 38 with ``resume = true`` finds a registry of the model without a
    head: the coordinator refuses to start from it by name, and resumes it with ``cause-head = false``."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.coordinator.registry import ModelRegistry
    from infrabrain.coordinator.server_app import _initial

    registry = ModelRegistry(tmp_path / "registry")
    old = pt.predictor_initial_weights({"cause-head": False})
    registry.save(2, old, {"task": "predictor"})
    with pytest.raises(ValueError, match="its shapes are the model's with cause-head = false; use another "
                                         "registry-dir or resume=false"):
        _initial(FederationConfig.from_run_config({}), registry)
    record, first = _initial(FederationConfig.from_run_config({"cause-head": False}), registry)
    assert first == 3 and len(record) == len(old)
    registry.save(3, pt.predictor_initial_weights({"cause-head": False})[:-1], {"task": "predictor"})
    with pytest.raises(ValueError, match="other array shapes; use another"):
        _initial(FederationConfig.from_run_config({}), registry)


def test_the_benchs_held_out_sets_and_centralised_reference_leave_no_temp_dir(tmp_path, monkeypatch) -> None:
    """``heldout_sets`` and ``train_centralized`` (bench/federation.py) gave each site a state dir under a temp dir
    that nothing wrote to and nothing removed; the data they read stays usable after it is gone."""
    import tempfile

    from infrabrain.coordinator.comparison import heldout_sets, pooled_scores, train_centralized
    from infrabrain.coordinator.simulation_run import simulation_config

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    cfg = simulation_config(2, 1, None, tmp_path / "work", site_gpus=32, site_hours=48.0, acceleration=500.0)
    sites = heldout_sets(cfg, 1, 1, 2)
    weights = train_centralized(cfg, [0], 2, epochs=1)
    assert list(temp.glob("infrabrain-*")) == []  # (torch keeps its own caches there)
    assert len(sites) == 1 and len(sites[0].test) > 0
    assert 0.0 <= pooled_scores(weights, sites, cfg.site_config())["pr_auc"] <= 1.0
