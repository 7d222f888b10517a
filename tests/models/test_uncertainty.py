"""The paired node bootstrap of the held-out PR-AUC ratio (models/uncertainty.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from infrabrain.models.uncertainty import (EventRecall, WeightedAP, align_tables, bootstrap_draw, combine_draws,
                                           draw_counts, goal_intervals, interval, ratio_interval)


def bootstrap_ratio(runs, clusters=None, n_boot=1000, seed=0):
    """The ratio samples of :func:`bootstrap_draw` (no events)."""
    return bootstrap_draw(runs, clusters, n_boot=n_boot, seed=seed)["pr_auc_ratio"]


def _rows(n_nodes: int = 60, steps: int = 20, seed: int = 0) -> pd.DataFrame:
    """Rows of two sites: every node fails at most once, its last ``k`` steps labelled positive."""
    rng = np.random.default_rng(seed)
    out = []
    for site in ("a", "b"):
        for node in range(n_nodes // 2):
            fails = rng.random() < 0.3
            k = int(rng.integers(2, 6))
            for t in range(steps):
                out.append((site, t * 600, node, bool(fails and t >= steps - k)))
    return pd.DataFrame(out, columns=["site", "t", "node", "label"])


def _scored(rows: pd.DataFrame, signal: float, seed: int, decimals: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=len(rows)) + signal * rows["label"].to_numpy()
    return rows.assign(score=np.round(s, decimals) if decimals is not None else s)


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many ties, as the rules' scores have
def test_weighted_ap_is_sklearns_average_precision(decimals):
    rows = _scored(_rows(), 1.5, 1, decimals)
    y, s = rows["label"].to_numpy(), rows["score"].to_numpy()
    n = len(y)
    per_row = WeightedAP(y, s, np.arange(n), n)  # every row its own cluster: counts are row weights
    assert per_row(np.ones((1, n)))[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    w = np.random.default_rng(2).integers(0, 4, size=(3, n)).astype(float)
    expected = [average_precision_score(y, s, sample_weight=wi) for wi in w]
    assert per_row(w) == pytest.approx(expected, abs=1e-12)
    # clusters of nodes: a cluster's count weighs every row of it
    codes = (rows["site"] == "b").to_numpy() * 100 + rows["node"].to_numpy() // 3
    _, codes = np.unique(codes, return_inverse=True)
    k = int(codes.max()) + 1
    counts = np.random.default_rng(3).integers(0, 3, size=(4, k)).astype(float)
    got = WeightedAP(y, s, codes, k)(counts)
    assert got == pytest.approx([average_precision_score(y, s, sample_weight=c[codes]) for c in counts], abs=1e-12)
    assert np.isnan(WeightedAP(y, s, codes, k)(np.zeros((1, k))))[0]  # nothing drawn: no positive


def test_weighted_ap_refuses_non_finite_scores_shape_mismatch_and_bad_codes():
    with pytest.raises(ValueError, match="non-finite"):
        WeightedAP(np.array([True, False]), np.array([0.5, np.nan]), np.zeros(2, int), 1)
    with pytest.raises(ValueError, match="same length"):
        WeightedAP(np.array([True, False]), np.array([0.5]), np.zeros(2, int), 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        WeightedAP(np.array([True, False]), np.array([0.5, 0.1]), np.array([0, 1]), 1)


def test_draw_counts_draw_as_many_clusters_as_there_are():
    c = draw_counts(3, 500, np.random.default_rng(0))
    assert c.shape == (500, 3) and (c.sum(axis=1) == 3).all()
    assert np.allclose(c.mean(axis=0), 1.0, atol=0.1)  # each cluster drawn once on average


def test_identical_models_give_a_ratio_of_exactly_one_on_every_resample():
    """Pairing: both models see the same resample, so a model against itself never moves."""
    rows = _scored(_rows(), 1.0, 3)
    samples = bootstrap_ratio([(rows, {"logistic": rows.sample(frac=1.0, random_state=0)})], n_boot=300)
    assert np.allclose(samples, 1.0)


def test_a_clearly_better_model_is_ahead_and_a_worse_one_behind():
    rows = _rows(n_nodes=120)
    good, base, bad = _scored(rows, 4.0, 4), _scored(rows, 1.0, 5), _scored(rows, 0.0, 6)
    ahead = ratio_interval(bootstrap_ratio([(good, {"logistic": base})], n_boot=400), goal=1.2)
    assert ahead["low"] > 1.2 and ahead["p_ge_goal"] > 0.95 and ahead["p_below_1"] < 0.05
    behind = ratio_interval(bootstrap_ratio([(bad, {"logistic": base})], n_boot=400), goal=1.2)
    assert behind["high"] < 1.0 and behind["p_below_1"] > 0.95


def test_the_best_baseline_is_rechosen_on_every_resample():
    rows = _rows(n_nodes=80)
    gnn, a, b = _scored(rows, 2.0, 7), _scored(rows, 1.2, 8), _scored(rows, 1.2, 9)
    both = bootstrap_ratio([(gnn, {"a": a, "b": b})], n_boot=200, seed=11)
    only_a = bootstrap_ratio([(gnn, {"a": a})], n_boot=200, seed=11)
    only_b = bootstrap_ratio([(gnn, {"b": b})], n_boot=200, seed=11)
    assert np.allclose(both, np.minimum(only_a, only_b))
    assert (both < only_a).any() and (both < only_b).any()  # neither baseline is the best on every resample


def test_seeds_are_averaged_as_ratios():
    rows = _rows()
    base = _scored(rows, 1.0, 12)
    g1, g2 = _scored(rows, 2.0, 13), _scored(rows, 0.5, 14)
    two = bootstrap_ratio([(g1, {"l": base}), (g2, {"l": base})], n_boot=100, seed=1)
    one1 = bootstrap_ratio([(g1, {"l": base})], n_boot=100, seed=1)
    one2 = bootstrap_ratio([(g2, {"l": base})], n_boot=100, seed=1)
    assert np.allclose(two, (one1 + one2) / 2)


def test_tables_over_other_rows_or_labels_are_refused_by_name():
    rows = _scored(_rows(), 1.0, 15)
    with pytest.raises(ValueError, match="'logistic/0' has 1199 rows"):
        bootstrap_ratio([(rows, {"logistic": rows.iloc[1:]})], n_boot=10)
    moved = rows.assign(t=rows["t"] + 1)
    with pytest.raises(ValueError, match="'rules/0' does not hold the same"):
        bootstrap_ratio([(rows, {"rules": moved})], n_boot=10)
    flipped = rows.assign(label=~rows["label"])
    with pytest.raises(ValueError, match="'gbm/0' has other labels"):
        bootstrap_ratio([(rows, {"gbm": flipped})], n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ratio([(rows, {"gbm": rows})], n_boot=0)
    with pytest.raises(ValueError, match="no non-graph"):
        bootstrap_ratio([(rows, {})], n_boot=10)
    with pytest.raises(ValueError, match="no score tables"):
        align_tables({})


def test_interval_and_geometric_mean():
    s = np.r_[np.linspace(0.5, 1.5, 101), np.nan]
    iv = ratio_interval(s, goal=1.2)
    assert iv["low"] == pytest.approx(0.55) and iv["high"] == pytest.approx(1.45)
    assert iv["p_ge_goal"] == pytest.approx(31 / 101) and iv["p_below_1"] == pytest.approx(50 / 101)
    assert iv["n_boot"] == 101  # the NaN resample (no failure drawn) is left out
    assert ratio_interval(np.array([np.nan]))["low"] is None
    with pytest.raises(ValueError, match="level"):
        ratio_interval(s, level=1.0)
    g = combine_draws([{"pr_auc_ratio": np.array([4.0, 1.0, np.nan])}, {"pr_auc_ratio": np.array([0.25, 1.0, 2.0])}])
    assert g["pr_auc_ratio"][:2] == pytest.approx([1.0, 1.0]) and np.isnan(g["pr_auc_ratio"][2])
    ivs = goal_intervals({"pr_auc_ratio": s, "event_recall": s, "median_lead_min": 40 * s})
    assert ivs["pr_auc_ratio"] == iv and ivs["event_recall"]["p_ge_goal"] == pytest.approx(np.mean(s[:-1] >= 0.8))
    assert ivs["median_lead_min"]["p_ge_goal"] == pytest.approx(np.mean(40 * s[:-1] >= 30))
    assert "p_below_1" not in ivs["event_recall"]


def test_the_interval_plot_is_a_png_and_refuses_ragged_input(tmp_path):
    from infrabrain.models.evaluation import plot_ratio_intervals

    png = plot_ratio_intervals(["draw 0", "draw 1", "geometric mean"], [1.7, None, 1.1],
                               [{"low": 1.4, "high": 2.3}, None, {"low": 0.9, "high": 1.3}], tmp_path / "r.png", 1.2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="as many labels"):
        plot_ratio_intervals(["draw 0"], [1.0, 2.0], [None], tmp_path / "x.png", 1.2)
    assert not (tmp_path / "x.png").exists()


def test_clusters_are_resampled_whole():
    rows = _rows()
    gnn, base = _scored(rows, 2.0, 16), _scored(rows, 1.0, 17)
    point = average_precision_score(gnn["label"], gnn["score"]) / average_precision_score(base["label"], base["score"])
    one = rows[["site", "node"]].drop_duplicates().assign(cluster="all")
    # one cluster: every resample is the whole sample, so every sample is the point ratio
    assert np.allclose(bootstrap_ratio([(gnn, {"l": base})], one, n_boot=50), point)
    racks = rows[["site", "node"]].drop_duplicates().assign(cluster=lambda d: d["site"] + (d["node"] // 5).astype(str))
    by_rack = bootstrap_ratio([(gnn, {"l": base})], racks, n_boot=300, seed=3)
    by_node = bootstrap_ratio([(gnn, {"l": base})], None, n_boot=300, seed=3)
    assert not np.allclose(by_rack, by_node)
    with pytest.raises(ValueError, match="no cluster for 1 scored"):
        bootstrap_ratio([(gnn, {"l": base})], racks.iloc[1:], n_boot=10)
    with pytest.raises(ValueError, match="more than once"):
        bootstrap_ratio([(gnn, {"l": base})], pd.concat([racks, racks.iloc[:1]]), n_boot=10)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['cluster'\]"):
        bootstrap_ratio([(gnn, {"l": base})], racks.drop(columns="cluster"), n_boot=10)


def test_node_racks_follow_the_topology(small_runs):
    from infrabrain.models.evaluation import node_racks
    from infrabrain.models.snapshots import make_splits

    sp = make_splits(small_runs, heldout=1, val_sites=1)
    racks = node_racks(sp.test_sites)
    g = sp.test_sites.sites[0].graph
    names = g.component_ids[g.node_global]  # "r00-n00": the simulator names a node after its rack
    assert len(racks) == len(names) and (racks["site"] == 0).all()
    assert racks["cluster"].tolist() == [f"0/{n.split('-')[0]}" for n in names]
    assert 1 < racks["cluster"].nunique() < len(racks)


def _events(rows: pd.DataFrame, steps: int = 20) -> pd.DataFrame:
    """One failure per node with positive rows, at the step after its run (as evaluation.failure_events)."""
    pos = rows[rows["label"]][["site", "node"]].drop_duplicates()
    return pos.assign(tf=steps * 600, precursor=True).reset_index(drop=True)


def test_event_recall_and_lead_with_unit_weights_are_the_evaluations():
    from infrabrain.models.evaluation import event_scores, lead_times, recall_at_precision

    for signal, seed in ((1.0, 20), (1.5, 20), (1.8, 21), (0.3, 22)):  # recall 0.03, 0.47, 0.8 and 0
        rows = _scored(_rows(n_nodes=100), signal, seed, 2)
        events = _events(rows)
        codes = np.arange(len(rows))  # per row; unit counts
        er = EventRecall(rows, events, codes, len(rows))
        rec, lead = er(np.ones((1, len(rows))))
        ev = event_scores(rows, events)
        r = recall_at_precision(rows, ev, 0.5)
        assert rec[0] == pytest.approx(r["recall"])
        if np.isfinite(r["threshold"]):
            assert lead[0] == pytest.approx(np.median(lead_times(rows, ev, r["threshold"])))
        else:
            assert np.isnan(lead[0])


def test_the_draws_recall_and_lead_are_resampled_with_the_ratio():
    rows = _rows(n_nodes=120)
    gnn, base = _scored(rows, 2.0, 23, 2), _scored(rows, 1.0, 24)
    events = _events(rows)
    got = bootstrap_draw([(gnn, {"l": base})], events=events, n_boot=200, seed=5)
    assert np.allclose(got["pr_auc_ratio"], bootstrap_ratio([(gnn, {"l": base})], n_boot=200, seed=5))
    er = EventRecall(gnn, events, np.arange(len(gnn)), len(gnn))
    point, _ = er(np.ones((1, len(gnn))))
    iv = interval(got["event_recall"], goal=0.8)
    assert iv["low"] <= point[0] <= iv["high"] and iv["high"] - iv["low"] > 0.02
    assert np.isfinite(got["median_lead_min"]).mean() > 0.9
    assert ((got["median_lead_min"][np.isfinite(got["median_lead_min"])] >= 5)
            & (got["median_lead_min"][np.isfinite(got["median_lead_min"])] <= 60)).all()


def test_event_recall_of_a_draw_is_the_evaluation_of_the_drawn_rows():
    """Counts 0/1 per node: the same as evaluating only the drawn nodes' rows and failures."""
    from infrabrain.models.evaluation import event_scores, lead_times, recall_at_precision

    rows = _scored(_rows(n_nodes=100), 1.6, 30, 2)
    events = _events(rows)
    _, codes = np.unique(rows["site"] + "/" + rows["node"].astype(str), return_inverse=True)
    k = int(codes.max()) + 1
    keep = np.random.default_rng(4).random(k) < 0.6
    rec, lead = EventRecall(rows, events, codes, k)(keep[None, :].astype(float))
    sub = rows[keep[codes]]
    ev = event_scores(sub, events)
    r = recall_at_precision(sub, ev, 0.5)
    assert 0 < r["recall"] < 1 and rec[0] == pytest.approx(r["recall"])
    assert lead[0] == pytest.approx(np.median(lead_times(sub, ev, r["threshold"])))
    ap = WeightedAP(rows["label"].to_numpy(), rows["score"].to_numpy(), codes, k)(keep[None, :].astype(float))
    assert ap[0] == pytest.approx(average_precision_score(sub["label"], sub["score"]))
