"""Where the goals stand per draw (models/goal_status.py, bench/predictor_goals.py): verdicts, the join of the
accuracy and headroom runs, the checks that they scored the same rows, and the bench's file handling."""

from __future__ import annotations

import json

import pytest

from infrabrain.models.evaluation import GOALS
from infrabrain.models.goal_status import (
    BEYOND_ORACLES, BEYOND_WINDOW, FALLBACK_KEY, MET, MISSED, TYPED_KEY, accuracy_draws, behind_rules, goal_rows,
    summarise_goals, verdict,
)


def _accuracy(seeds, ratio, recall, best=None, cascade=None, lead=None):
    n = len(seeds)
    best = best or [0.2 + 0.01 * s for s in seeds]
    return {"data_seeds": list(seeds), "pr_auc_best_baseline_per_draw": best, "pr_auc_ratio_per_draw": ratio,
            "pr_auc_ratio_cascade_per_draw": cascade or [2.0] * n, "event_recall_at_p50_per_draw": recall,
            "median_lead_min_per_draw": lead or [35.0] * n,
            "pr_auc_ratio_interval_per_draw": [{"low": r - 0.1, "high": r + 0.1} for r in ratio],
            "event_recall_at_p50_interval_per_draw": [None] * n, "rootcause_top3_per_draw": [None] * n}


def _headroom(seeds, window_over_best, ceiling_over_best, recall_window=0.9, recall_ceiling=0.95):
    rows = []
    for s, w, c in zip(seeds, window_over_best, ceiling_over_best, strict=True):
        best = 0.2 + 0.01 * s
        rows.append({"data_seed": s, "pr_auc_best_baseline": best, "oracle_window_aware_pr_auc": w * best,
                     "oracle_amplitude_aware_pr_auc": c * best, "oracle_window_aware_recall_at_p50": recall_window,
                     "oracle_amplitude_aware_recall_at_p50": recall_ceiling, "pr_auc_best_baseline_cascade": 0.1,
                     "oracle_window_aware_pr_auc_cascade": 0.3, "oracle_amplitude_aware_pr_auc_cascade": 0.4})
    return {"headroom_per_draw": rows}


def test_verdict_names_what_reaches_the_goal():
    assert verdict(1.3, 1.2, 1.1, 1.0) == MET  # the GNN met it: the oracles do not matter
    assert verdict(1.1, 1.2, 1.5, 1.8) == MISSED  # one window's reader reaches it
    assert verdict(1.1, 1.2, 1.15, 1.8) == BEYOND_WINDOW
    assert verdict(1.1, 1.2, 1.15, 1.19) == BEYOND_ORACLES  # even the best ranking does not
    assert verdict(1.1, 1.2, 1.25, 1.19) == MISSED  # on a subset the window oracle can rank above the ceiling
    assert verdict(1.1, 1.2) == MISSED  # no oracle reference (the lead)
    assert verdict(None, 1.2, 1.5, 1.8) is None  # not measured


def test_rows_join_draws_from_several_runs_and_count_verdicts():
    acc = [_accuracy([2, 3], ratio=[1.3, 1.1], recall=[0.85, 0.7]), _accuracy([0], ratio=[1.0], recall=[0.5])]
    head = _headroom([0, 1, 2, 3], window_over_best=[1.1, 1.5, 1.6, 1.5], ceiling_over_best=[1.15, 2, 2, 2])
    rows = goal_rows(acc, head, GOALS, sources=["a.json", "b.json"])
    assert [r["data_seed"] for r in rows] == [0, 2, 3]  # sorted; draw 1 has no accuracy run and is left out
    assert [r["source"] for r in rows] == ["b.json", "a.json", "a.json"]
    r0, r2, r3 = rows
    assert r0["ratio_window"] == pytest.approx(1.1) and r0["ratio_ceiling"] == pytest.approx(1.15)
    assert r0["verdicts"]["pr_auc_ratio"] == BEYOND_ORACLES
    assert r2["verdicts"]["pr_auc_ratio"] == MET and r3["verdicts"]["pr_auc_ratio"] == MISSED
    assert r2["ratio_low"] == pytest.approx(1.2) and r2["recall_low"] is None
    assert r3["cascade_ratio_window"] == pytest.approx(3.0)  # 0.3 / 0.1: the cascade's own best non-graph model
    assert [r["verdicts"]["event_recall_at_p50"] for r in rows] == [MISSED, MET, MISSED]
    assert all(r["verdicts"]["rootcause_top3"] is None for r in rows)  # run with --rootcause-events 0
    out = summarise_goals(rows)
    assert out["draws"] == [0, 2, 3]
    assert out["verdict_counts"]["pr_auc_ratio"] == {MET: 1, MISSED: 1, BEYOND_WINDOW: 0, BEYOND_ORACLES: 1}
    assert out["verdict_counts"]["rootcause_top3"] == {MET: 0, MISSED: 0, BEYOND_WINDOW: 0, BEYOND_ORACLES: 0}
    assert out["pr_auc_ratio_geomean"] == pytest.approx((1.0 * 1.3 * 1.1) ** (1 / 3))
    assert out["event_recall_at_p50_mean"] == pytest.approx((0.5 + 0.85 + 0.7) / 3)


def test_runs_that_did_not_score_the_same_rows_are_refused():
    head = _headroom([0, 1], [1.5, 1.5], [2, 2])
    with pytest.raises(ValueError, match="draw 0: best non-graph PR-AUC .* did not score the same rows"):
        goal_rows([_accuracy([0], [1.1], [0.7], best=[0.25])], head)
    with pytest.raises(ValueError, match="draw 1 is measured twice"):
        goal_rows([_accuracy([1], [1.1], [0.7]), _accuracy([1], [1.1], [0.7])], head)
    with pytest.raises(ValueError, match=r"draw 5 .* is not in the headroom run \(draws \[0, 1\]\)"):
        goal_rows([_accuracy([5], [1.1], [0.7])], head)
    with pytest.raises(ValueError, match="a headroom_per_draw row has no data_seed"):
        goal_rows([_accuracy([0], [1.1], [0.7])], {"headroom_per_draw": [{"pr_auc_best_baseline": 0.2}]})
    with pytest.raises(ValueError, match="no headroom_per_draw"):
        goal_rows([_accuracy([0], [1.1], [0.7])], {"pr_auc_gnn": 0.3})
    with pytest.raises(ValueError, match="has 1 values for 2 draws"):
        goal_rows([{**_accuracy([0, 1], [1.1, 1.2], [0.7, 0.8]), "event_recall_at_p50_per_draw": [0.7]}], head)
    with pytest.raises(ValueError, match=r"missing \['event_recall_at_p50'\]"):
        acc = _accuracy([0], [1.1], [0.7])
        del acc["event_recall_at_p50_per_draw"]
        goal_rows([acc], head)
    with pytest.raises(ValueError, match=r"goals lack \['rootcause_top3'\]"):
        goal_rows([_accuracy([0], [1.1], [0.7])], head, {k: v for k, v in GOALS.items() if k != "rootcause_top3"})


def test_a_one_draw_run_is_read_from_its_config_seed():
    run = {"config": {"seed": 4}, "pr_auc_best_baseline": 0.24, "pr_auc_ratio": 1.25, "pr_auc_ratio_cascade": 1.6,
           "event_recall_at_p50": 0.81, "median_lead_min": 31.0, "rootcause_top3": 0.9,
           "pr_auc_ratio_interval": {"low": 1.1, "high": 1.4}}
    (d,) = accuracy_draws(run)
    assert d["data_seed"] == 4 and d["pr_auc_ratio_interval"]["low"] == 1.1
    (row,) = goal_rows([run], _headroom([4], [1.5], [2.0]))
    assert row["verdicts"] == {**{k: MET for k in GOALS}, "beats_rules_by_cause": None}
    with pytest.raises(ValueError, match="neither data_seeds nor config.seed"):
        accuracy_draws({"pr_auc_ratio": 1.0})


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("predictor_goals")


def test_bench_reads_the_last_json_line_and_plots(bench, tmp_path, capsys):
    acc = tmp_path / "acc.json"
    acc.write_text("progress...\n" + json.dumps(_accuracy([0, 1], [1.3, 1.0], [0.9, 0.6])) + "\n\n")
    head = tmp_path / "head.json"
    head.write_text(json.dumps(_headroom([0, 1], [1.5, 1.1], [2.0, 1.3])) + "\n")
    out = bench.main(["--accuracy", str(acc), "--headroom", str(head), "--report-dir", str(tmp_path / "r")])
    assert (tmp_path / "r" / "goal_status.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["verdict_counts"] == out["verdict_counts"]
    assert printed["verdict_counts"]["pr_auc_ratio"][BEYOND_WINDOW] == 1  # draw 1: 1.0, window oracle 1.1
    assert printed["goals"] == GOALS


def test_bench_names_a_file_that_is_not_a_bench_summary(bench, tmp_path):
    head = tmp_path / "head.json"
    head.write_text(json.dumps(_headroom([0], [1.5], [2.0])))
    bad = tmp_path / "bad.json"
    bad.write_text("Traceback (most recent call last):\n  ...\n")
    with pytest.raises(SystemExit, match="bad.json: the last line is not JSON"):
        bench.main(["--accuracy", str(bad), "--headroom", str(head)])
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(SystemExit, match="empty.json: empty"):
        bench.main(["--accuracy", str(tmp_path / "empty.json"), "--headroom", str(head)])
    with pytest.raises(SystemExit, match="missing.json: cannot read"):
        bench.main(["--accuracy", str(tmp_path / "missing.json"), "--headroom", str(head)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_accuracy([0], [1.1], [0.7], best=[0.3])))
    with pytest.raises(SystemExit, match="predictor_goals: draw 0: .*did not score the same rows"):
        bench.main(["--accuracy", str(other), "--headroom", str(head)])


def test_better_than_the_rules_on_every_cause_but_software():
    """The goal's verdict per draw: every cause group the draw holds, software excepted, must have the GNN's
    PR-AUC above the rules'; a tie (here both at the prevalence) counts as not better."""
    def cell(gnn, rules):
        return {"events": 3, "gnn_pr_auc": gnn, "rules_pr_auc": rules, "gnn_recall": 0.5, "rules_recall": None}

    table = {"memory": cell(0.4, 0.3), "thermal": cell(0.1, 0.4), "software": cell(0.0, 0.1),
             "power": cell(0.001, 0.001)}
    assert behind_rules(table) == ["thermal", "power"]
    assert behind_rules({"memory": cell(0.4, 0.3), "software": cell(0.0, 0.1)}) == []  # software is excepted
    assert behind_rules({"memory": cell(0.4, None)}) == ["memory"]  # no rules score: not shown to be better
    assert behind_rules(None) is None and behind_rules({}) is None
    acc = _accuracy([0, 1], ratio=[1.3, 1.0], recall=[0.9, 0.6])
    acc["by_cause_vs_rules_per_draw"] = [{"memory": cell(0.4, 0.3)}, table]
    rows = goal_rows([acc], _headroom([0, 1], [1.5, 1.5], [2.0, 2.0]))
    assert [r["verdicts"]["beats_rules_by_cause"] for r in rows] == [MET, MISSED]
    assert rows[1]["behind_rules"] == ["thermal", "power"]
    out = summarise_goals(rows)
    assert out["verdict_counts"]["beats_rules_by_cause"][MET] == 1
    assert out["behind_rules_draws"] == {"thermal": 1, "power": 1}
    (old,) = goal_rows([_accuracy([0], [1.1], [0.7])], _headroom([0], [1.5], [2.0]))
    assert old["verdicts"]["beats_rules_by_cause"] is None  # a run from before the per-draw table
    assert out["ahead_of_rules_typed"] is None and rows[1]["behind_rules_typed"] is None  # no cause head yet


def test_the_cause_typed_comparison_is_reported_beside_the_verdict():
    """With a cause head the draw also says where the cause-typed PR-AUC is not above the rules' (follow-up 33);
    the goal's verdict stays the untyped comparison."""
    def cell(gnn, typed, rules):
        return {"events": 3, "gnn_pr_auc": gnn, "gnn_typed_pr_auc": typed, "rules_pr_auc": rules}

    table = {"memory": cell(0.3, 0.5, 0.4), "thermal": cell(0.5, 0.3, 0.4), "software": cell(0.0, None, 0.1)}
    assert behind_rules(table) == ["memory"]
    assert behind_rules(table, TYPED_KEY) == ["thermal"]
    assert behind_rules({"memory": cell(0.3, None, 0.4)}, TYPED_KEY) == ["memory"]  # a group the head misses
    acc = _accuracy([0, 1], ratio=[1.3, 1.0], recall=[0.9, 0.6])
    acc["by_cause_vs_rules_per_draw"] = [table, {"memory": cell(0.3, 0.5, 0.4)}]
    rows = goal_rows([acc], _headroom([0, 1], [1.5, 1.5], [2.0, 2.0]))
    assert [r["verdicts"]["beats_rules_by_cause"] for r in rows] == [MISSED, MISSED]
    assert [r["behind_rules_typed"] for r in rows] == [["thermal"], []]
    out = summarise_goals(rows)
    assert out["behind_rules_typed_draws"] == {"thermal": 1} and out["ahead_of_rules_typed"] == 1



def test_gnn_plus_rules_is_reported_beside_the_verdict():
    """``gnn+rules`` (the GNN with the incumbent rules of the groups it learned nothing of, follow-up 44) has its
    own comparison with the rules; the verdict stays the GNN's own, and runs before it have none."""
    def cell(gnn, fallback, rules):
        return {"events": 3, "gnn_pr_auc": gnn, FALLBACK_KEY: fallback, "rules_pr_auc": rules}

    first = {"memory": cell(0.5, 0.5, 0.4), "thermal": cell(0.003, 0.6, 0.47)}  # untrained thermal, rules served
    second = {"memory": cell(0.5, 0.5, 0.4), "power": cell(0.003, 0.003, 0.003)}  # no rule watches power
    acc = _accuracy([0, 1], ratio=[1.3, 1.0], recall=[0.9, 0.6])
    acc["by_cause_vs_rules_per_draw"] = [first, second]
    rows = goal_rows([acc], _headroom([0, 1], [1.5, 1.5], [2.0, 2.0]))
    assert [r["behind_rules"] for r in rows] == [["thermal"], ["power"]]
    assert [r["verdicts"]["beats_rules_by_cause"] for r in rows] == [MISSED, MISSED]  # the GNN's own
    assert [r["behind_rules_fallback"] for r in rows] == [[], ["power"]]
    out = summarise_goals(rows)
    assert out["behind_rules_fallback_draws"] == {"power": 1} and out["ahead_of_rules_fallback"] == 1
    acc["by_cause_vs_rules_per_draw"] = [{"memory": {"events": 3, "gnn_pr_auc": 0.5, "rules_pr_auc": 0.4}}] * 2
    rows = goal_rows([acc], _headroom([0, 1], [1.5, 1.5], [2.0, 2.0]))
    assert rows[0]["behind_rules_fallback"] is None and summarise_goals(rows)["ahead_of_rules_fallback"] is None
