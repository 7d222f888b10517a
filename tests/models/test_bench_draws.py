"""bench/predictor.py --data-seeds: how results over several simulated federations are combined."""

from __future__ import annotations

import argparse

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("predictor")


def _draw(seed, gnn, base, mem_gnn, causes=("memory",)):
    return {"seeds": [seed, seed + 1], "pr_auc_gnn": gnn, "pr_auc_best_baseline": base,
            "pr_auc_ratio": gnn / base, "median_lead_min": None,
            "by_cause_vs_rules": {c: {"events": 4, "gnn_pr_auc": mem_gnn, "rules_pr_auc": 0.4, "gnn_recall": 0.5,
                                      "rules_recall": None} for c in causes}}


def test_ratios_are_combined_geometrically_and_the_worst_draw_is_named(bench):
    out = bench._mean_over_draws([_draw(0, 0.4, 0.1, 0.2), _draw(1, 0.1, 0.2, 0.3, ("memory", "thermal"))])
    assert out["data_seeds"] == [0, 1]
    assert out["pr_auc_gnn"] == pytest.approx(0.25)
    assert out["pr_auc_ratio"] == pytest.approx(2**0.5)  # geometric mean of 4 and 0.5 (the arithmetic one is 2.25)
    assert out["pr_auc_ratio_per_draw"] == pytest.approx([4.0, 0.5])
    assert out["pr_auc_ratio_min_draw"] == pytest.approx(0.5)
    assert out["median_lead_min"] is None
    assert out["by_cause_vs_rules"]["memory"]["gnn_pr_auc"] == pytest.approx(0.25)
    assert out["by_cause_vs_rules"]["thermal"]["gnn_pr_auc"] == pytest.approx(0.3)  # only the draw that has it
    assert out["by_cause_vs_rules"]["memory"]["rules_recall"] is None
    # each draw's own table too (bench/predictor_goals.py reads it for the per-draw rules comparison)
    assert [set(t) for t in out["by_cause_vs_rules_per_draw"]] == [{"memory"}, {"memory", "thermal"}]
    assert out["by_cause_vs_rules_per_draw"][1]["thermal"]["gnn_pr_auc"] == pytest.approx(0.3)


def test_every_root_cause_prior_variant_a_run_compared_is_reported_per_draw(bench):
    """Variants beyond the defaults (here one with --fleet-prior-min-honest) get their per-draw lists too."""
    a = {**_draw(0, 0.4, 0.1, 0.2), "rootcause_top3_fleet_dp_eps1_c4_h1": 1.0, "rootcause_top1_all_none": 0.5}
    b = {**_draw(1, 0.1, 0.2, 0.3), "rootcause_top3_fleet_dp_eps1_c4_h1": None, "rootcause_top1_all_none": 0.7}
    out = bench._mean_over_draws([a, b])
    assert out["rootcause_top3_fleet_dp_eps1_c4_h1_per_draw"] == [1.0, None]
    assert out["rootcause_top3_fleet_dp_eps1_c4_h1"] == pytest.approx(1.0)  # the mean over draws that have it
    assert out["rootcause_top1_all_none_per_draw"] == [0.5, 0.7]
    # --rootcause-absolute's twins of the late and full keys (a site's own labels) get theirs as well
    a |= {"rootcause_late_top3_local_absolute": 0.9, "rootcause_full_top1_all_none_absolute": 0.4}
    b |= {"rootcause_late_top3_local_absolute": 0.5, "rootcause_full_top1_all_none_absolute": 0.6}
    out = bench._mean_over_draws([a, b])
    assert out["rootcause_late_top3_local_absolute_per_draw"] == [0.9, 0.5]
    assert out["rootcause_full_top1_all_none_absolute_per_draw"] == [0.4, 0.6]


def test_the_interval_over_draws_combines_each_draws_resamples(bench):
    """Each draw's bootstrap samples come with it; the panel's ratio interval is that of their geometric mean,
    recall's and lead's that of their mean, and no sample array reaches the JSON."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1.0, 2.0, 500), rng.uniform(0.6, 1.0, 500)
    ra, rb = rng.uniform(0.5, 0.9, 500), rng.uniform(0.6, 1.0, 500)
    rb[:10] = np.nan  # a resample of draw 1 without a failure: the mean is draw 0's alone there
    d0, d1 = _draw(0, 0.4, 0.1, 0.2), _draw(1, 0.1, 0.2, 0.3)
    samples = []
    for d, s, r in ((d0, a, ra), (d1, b, rb)):
        samples.append({"pr_auc_ratio": s, "event_recall": r, "median_lead_min": 40 * r})
        d["pr_auc_ratio_interval"] = {"low": float(np.quantile(s, 0.05)), "high": float(np.quantile(s, 0.95))}
    out = bench._mean_over_draws([d0, d1], samples)
    geo = np.sqrt(a * b)
    assert out["pr_auc_ratio_interval"]["low"] == pytest.approx(np.quantile(geo, 0.05))
    assert out["pr_auc_ratio_interval"]["p_ge_goal"] == pytest.approx(np.mean(geo >= bench.RATIO_GOAL))
    assert [iv["low"] for iv in out["pr_auc_ratio_interval_per_draw"]] == pytest.approx(
        [np.quantile(a, 0.05), np.quantile(b, 0.05)])
    mean = np.where(np.isnan(rb), ra, (ra + rb) / 2)
    assert out["event_recall_at_p50_interval"]["high"] == pytest.approx(np.quantile(mean, 0.95))
    assert out["event_recall_at_p50_interval"]["p_ge_goal"] == pytest.approx(np.mean(mean >= 0.8))
    assert out["median_lead_min_interval"]["low"] == pytest.approx(np.quantile(40 * mean, 0.05))
    assert not any(k.startswith("_") for k in out)


def test_caught_failures_are_averaged_over_seeds_and_summed_over_draws(bench):
    def seed(gnn_caught):
        return {"seeds": [0], "pr_auc_gnn": 0.3,
                "precursor_caught": {"gnn": {"gpu": {"caught": gnn_caught, "events": 4}},
                                     "logistic": {"gpu": {"caught": 1, "events": 4}}}}

    draw0 = bench._mean_over_seeds([seed(3), seed(2)], [0, 1])  # the same four failures, two training seeds
    assert draw0["precursor_caught"]["gnn"]["gpu"] == {"caught": 2.5, "events": 4}
    only_one = seed(2)
    only_one["precursor_caught"]["ensemble"] = {"gpu": {"caught": 3, "events": 4}}  # skipped in the other seed
    assert bench._mean_over_seeds([seed(2), only_one], [0, 1])["precursor_caught"]["ensemble"]["gpu"] == {
        "caught": 3, "events": 4}
    draw1 = {**seed(1), "precursor_caught": {"gnn": {"gpu": {"caught": 1, "events": 2},
                                                     "nic": {"caught": 0, "events": 3}}}}
    out = bench._mean_over_draws([{**draw0, "seeds": [0, 1]}, {**draw1, "seeds": [1]}])
    assert out["precursor_caught"]["gnn"] == {"gpu": {"caught": 3.5, "events": 6}, "nic": {"caught": 0, "events": 3}}
    assert out["precursor_caught"]["logistic"] == {"gpu": {"caught": 1, "events": 4}}  # only the draw that has it


def test_bad_counts_are_refused(bench):
    with pytest.raises(SystemExit, match="--data-seeds"):
        bench.main(["--data-seeds", "0", "--parts", "accuracy"])


def test_extra_training_sites_go_before_the_validation_and_heldout_sites(bench):
    assert bench.site_order(10, 10, 3, 1) == list(range(10))  # no extra sites: the federation's own order
    order = bench.site_order(13, 10, 3, 1)
    assert order == [0, 1, 2, 3, 4, 5, 10, 11, 12, 6, 7, 8, 9]
    assert order[-3:] == [7, 8, 9] and order[-4] == 6  # split counts from the end: same held-out, same validation
    with pytest.raises(ValueError, match="heldout"):
        bench.site_order(10, 10, 9, 1)


def test_negative_extra_training_sites_are_refused(bench):
    with pytest.raises(SystemExit, match="--extra-train-sites"):
        bench.main(["--extra-train-sites", "-1", "--parts", "accuracy"])


def test_headroom_part_reports_the_goal_against_the_ceiling(bench, capsys, tmp_path):
    """``--parts headroom`` trains no GNN: the best non-graph model, what the ratio goal asks of the GNN, and every
    oracle on the same held-out rows, the amplitude-aware ceiling included, with a bar chart."""
    import json

    assert bench.main(["--parts", "headroom", "--sites", "3", "--heldout", "1", "--val-sites", "1", "--hours", "6",
                       "--acceleration", "1000", "--no-progress", "--report-dir", str(tmp_path)]) == 0
    assert (tmp_path / "headroom.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = out["headroom_per_draw"]
    best, ceiling = row["pr_auc_best_baseline"], row["oracle_amplitude_aware_pr_auc"]
    assert row["best_baseline"] in ("gbm", "logistic", "iforest", "rules") and 0 < best < 1
    assert row["pr_auc_needed"] == pytest.approx(bench.RATIO_GOAL * best)
    assert row["ceiling_over_best"] == pytest.approx(ceiling / best)
    assert out["headroom_ceiling_over_best_min"] == pytest.approx(ceiling / best)
    assert ceiling >= row["oracle_lead_aware_pr_auc"]  # knowing the amplitudes too can only help the ranking
    if ceiling > best:
        assert row["headroom_share_needed"] == pytest.approx((bench.RATIO_GOAL - 1) * best / (ceiling - best))
    window = row["oracle_window_aware_pr_auc"]
    if window > best:
        assert row["window_share_needed"] == pytest.approx((bench.RATIO_GOAL - 1) * best / (window - best))
        assert out["headroom_window_share_needed_max"] == pytest.approx(row["window_share_needed"])
    else:
        assert row["window_share_needed"] is None and out["headroom_window_share_needed_max"] is None
    assert "pr_auc_gnn" not in out  # no GNN was trained
    # the cascade ratio's references: the best non-graph model and every oracle on the cascade failures
    from infrabrain.models.oracle import ORACLE_KINDS

    for key in ("pr_auc_best_baseline_cascade", *(f"oracle_{k}_pr_auc_cascade" for k in ORACLE_KINDS)):
        v = row[key]
        assert v is None or np.isnan(v) or 0 <= v <= 1, (key, v)


def test_headroom_needs_heldout_sites(small_runs):
    from infrabrain.models.pipeline import PipelineConfig, headroom

    with pytest.raises(ValueError, match="held-out"):
        headroom(small_runs, PipelineConfig(heldout=0, val_sites=1))


def test_accuracy_part_reports_the_ratio_interval_of_one_draw(bench, capsys):
    """One small draw, two training seeds: the interval of the seed-mean ratio is in the strict-JSON last line
    (the bootstrap samples and score tables are not)."""
    import json

    assert bench.main(["--parts", "accuracy", "--sites", "3", "--heldout", "1", "--val-sites", "1", "--hours", "6",
                       "--acceleration", "1000", "--epochs", "1", "--seeds", "2", "--hidden", "8",
                       "--rootcause-events", "3", "--no-oracle", "--no-progress", "--bootstrap", "200"]) == 0
    err = capsys.readouterr()
    out = json.loads(err.out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    iv = out["pr_auc_ratio_interval"]
    assert not any(k.startswith("_") for k in out)
    assert {"event_recall_at_p50_interval", "median_lead_min_interval"} <= set(out)
    assert iv["level"] == 0.9 and 0 < iv["n_boot"] <= 200 and out["config"]["bootstrap"] == 200
    assert iv["low"] <= iv["high"] and 0.0 <= iv["p_ge_goal"] <= 1.0
    assert "interval over the held-out racks" in err.err


def test_pool_and_stride_reach_the_pipeline(bench):
    args = bench.build_parser().parse_args(["--pool", "1", "--stride", "5"])
    cfg = bench._pipeline_config(args, seed=3)
    assert (cfg.pool_min, cfg.stride_min, cfg.seed) == (1, 5, 3)
    assert bench._pipeline_config(bench.build_parser().parse_args([]), seed=0).pool_min == 5


def test_window_reaches_the_pipeline(bench):
    assert bench._pipeline_config(bench.build_parser().parse_args(["--window", "120"]), seed=0).window_min == 120
    assert bench._pipeline_config(bench.build_parser().parse_args([]), seed=0).window_min == 60


def test_cause_scale_flag_is_parsed_and_checked(bench):
    assert bench.parse_cause_scale("thermal=5, psu=2.5") == {"thermal": 5.0, "psu": 2.5}
    assert bench.parse_cause_scale("") == {}
    for bad, msg in (("psus=5", "unknown cause"), ("psu", "CAUSE=MULTIPLIER"), ("psu=x", "CAUSE=MULTIPLIER"),
                     ("psu=-1", r"\[0, 100\]")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            bench.parse_cause_scale(bad)
    with pytest.raises(SystemExit, match="--extra-train-sites"):
        bench.main(["--extra-train-cause-scale", "psu=5", "--parts", "accuracy"])


def test_fleet_prior_flags_are_parsed_and_checked_before_any_training(bench):
    assert bench.parse_positive_floats("1, 0.5,") == [1.0, 0.5] and bench.parse_positive_floats("") == []
    for bad, msg in (("1,x", "expected comma-separated numbers, got 'x'"), ("0", "'0' is not a positive number"),
                     ("inf", "'inf' is not a positive number"), ("-4", "'-4' is not a positive number")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            bench.parse_positive_floats(bad)
    args = bench.build_parser().parse_args(["--fleet-prior-epsilons", "2", "--fleet-prior-clip-norms", "4"])
    assert args.fleet_prior_epsilons == [2.0] and args.fleet_prior_clip_norms == [4.0]
    with pytest.raises(SystemExit, match="--fleet-prior-sites"):
        bench.main(["--fleet-prior-sites", "-1", "--parts", "accuracy"])


def test_cause_scale_changes_only_the_extra_training_sites(bench):
    args = bench.build_parser().parse_args(["--sites", "3", "--heldout", "1", "--hours", "2", "--extra-train-sites",
                                            "1"])
    scaled = bench.build_parser().parse_args(["--sites", "3", "--heldout", "1", "--hours", "2",
                                              "--extra-train-sites", "1", "--extra-train-cause-scale", "psu=50"])
    a, b = bench._draw_runs(args, 0), bench._draw_runs(scaled, 0)
    # order: training site 0, the extra site (index 3 of the federation), validation site 1, held-out site 2
    assert [r.spec.name for r in a] == [r.spec.name for r in b] == ["site-0", "site-3", "site-1", "site-2"]
    assert [r.spec.faults.cause_scale for r in b] == [{}, {"psu": 50.0}, {}, {}]
    for i in (0, 2, 3):  # the federation's own sites are drawn exactly as without the flag
        assert a[i].events.equals(b[i].events)
    assert not a[1].events.equals(b[1].events)


def test_a_sites_own_prior_counts_only_its_failures_before_the_cut(bench, small_splits):
    """--local-prior-fraction: each held-out site's own prior counts its failures before the cut (the ones after
    are scored), and the merged variants add the training sites' pooled or released counts to it."""
    from infrabrain.models.published_root_prior import published_root_prior
    from infrabrain.models.root_prior import RELATIONS, fit_root_prior, root_relations
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig, build_fleet_root_prior

    test = small_splits.test_sites
    central = fit_root_prior(small_splits.train)
    fleet = build_fleet_root_prior([np.full(len(RELATIONS), 2.0)] * 3, FleetRootPriorConfig(), seed=0)
    published = {i: published_root_prior(site.graph) for i, site in enumerate(test.sites)}
    late_from, out = bench.local_prior_variants(test, central, fleet, 0.5, fleet_plus=fleet, published=published)
    assert set(out) == set(bench.LOCAL_PRIOR_VARIANTS)
    rel = root_relations(test)
    for s, t in late_from.items():
        before = rel[(rel["site"] == s) & (rel["tf"] < t)]
        own = out["local"][s]
        assert (own.failures if own is not None else 0) == len(before)
        merged = out["local_central"][s]
        assert merged.failures == len(before) + central.failures
        assert out["local_published"][s].failures == len(before) + published[s].failures
    with pytest.raises(SystemExit, match="--local-prior-fraction"):
        bench.main(["--local-prior-fraction", "1", "--parts", "accuracy"])


def test_fleet_priors_are_also_released_with_sites_that_count_on_fewer_honest_sites(bench, small_splits):
    import pandas as pd

    from infrabrain.models.root_prior import RELATIONS

    assert bench.parse_min_honest("0, 1,2") == [0, 1, 2]
    for bad in ("x", "-1", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_min_honest(bad)
    # two training sites and two more sites' incidents: four sites, threshold 4
    extra = [pd.DataFrame({"tf": [0, 3600], "relation": [RELATIONS[0], RELATIONS[1]]})] * 2
    releases: dict = {}
    out = bench.fleet_prior_variants(small_splits.train, [1.0], [4.0], 0, extra, releases, min_honest=[0, 1])
    assert {"fleet_plus_dp_eps1_c4", "fleet_plus_dp_eps1_c4_h1"} <= set(out) <= set(releases) | {
        "none", "fleet_clipped_c4", "fleet_plus_clipped_c4"}
    trusting, cautious = releases["fleet_plus_dp_eps1_c4"], releases["fleet_plus_dp_eps1_c4_h1"]
    assert cautious.sigma == pytest.approx(2 * trusting.sigma)  # each of 4 sites adds sigma, not sigma / 2
    assert cautious.epsilon < trusting.epsilon


def test_published_priors_are_laid_on_each_held_out_sites_own_topology(bench, small_splits):
    """--published-prior-failures / --published-prior-misspec: per held-out site, the published mix on its own
    graph at each weight, merged with the pooled labels and the fleet release, and with misspecified shares."""
    from infrabrain.models.published_root_prior import published_root_prior, relation_shares
    from infrabrain.models.root_prior import RELATIONS, fit_root_prior, merge_root_priors
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig, build_fleet_root_prior, site_root_prior
    from infrabrain.simulation.faults import CAUSE_SHARES

    assert bench.parse_positive_ints("20, 50,") == [20, 50] and bench.parse_positive_ints("") == []
    for bad in ("0", "x", "2.5", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a positive integer"):
            bench.parse_positive_ints(bad)
    with pytest.raises(SystemExit, match="--published-prior-misspec"):
        bench.main(["--published-prior-failures", "20", "--published-prior-misspec", "0.5", "--parts", "accuracy"])
    shares = bench.misspecified_cause_shares(3.0, np.random.default_rng(0))
    ratio = np.array([shares[c] / v for c, v in CAUSE_SHARES.items()])
    assert np.all((ratio >= 1 / 3) & (ratio <= 3)) and ratio.std() > 0.1

    test, central = small_splits.test_sites, fit_root_prior(small_splits.train)
    fleet = build_fleet_root_prior([np.full(len(RELATIONS), 2.0)] * 3, FleetRootPriorConfig(), seed=0)
    out = bench.published_prior_variants(test, central, fleet, [20, 200], [3.0], seed=0)
    assert set(out) == {f"{v}_f{s}" for v in ("published", "central_published", "fleet_published",
                                              "fleet_read_published") for s in (20, 200)
                        } | {"published_f20_mis3", "published_f200_mis3"}
    for i, site in enumerate(test.sites):
        own = published_root_prior(site.graph, 200)
        assert out["published_f200"][i] == own
        assert out["central_published_f200"][i].failures == central.failures + own.failures
        assert out["fleet_published_f200"][i].failures == site_root_prior(None, fleet).failures + own.failures
        assert out["published_f200_mis3"][i] != own
        read = site_root_prior(None, fleet, base=relation_shares(site.graph))
        assert out["fleet_read_published_f200"][i] == merge_root_priors(read, own)
    assert not {"fleet_published_f20", "fleet_read_published_f20"} & set(
        bench.published_prior_variants(test, central, None, [20], [], seed=0))
