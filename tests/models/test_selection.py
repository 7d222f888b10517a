"""Which epoch early stopping keeps (``models/selection.py``), on hand-made metrics and a real training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infrabrain.models.evaluation import evaluate_scores, failure_events
from infrabrain.models.gnn import build_model
from infrabrain.models.selection import SELECTIONS, EarlyStopping, replay, selection_score
from infrabrain.models.training import TrainConfig, estimate_pos_weight, evaluate_model, predict_scores, train_model


def test_scores_of_each_selection():
    val = {"pr_auc": 0.4, "pr_auc_causes": 0.8, "loss": 1.5}
    assert selection_score(val, "pr_auc") == pytest.approx(0.4)
    assert selection_score(val, "pr_auc+causes") == pytest.approx(0.6)
    # no predictable cause group has a failure: the plain PR-AUC, not a NaN that would never win
    assert selection_score({**val, "pr_auc_causes": math.nan}, "pr_auc+causes") == pytest.approx(0.4)
    assert selection_score({"pr_auc": 0.4, "loss": 1.5}, "pr_auc+causes") == pytest.approx(0.4)
    # one class only: PR-AUC undefined, the lower loss wins
    assert selection_score({**val, "pr_auc": math.nan}, "pr_auc+causes") == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="unknown selection 'roc'"):
        selection_score(val, "roc")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TrainConfig(selection="roc")
    assert set(SELECTIONS) == {"pr_auc", "pr_auc+causes"}


def test_early_stopping_keeps_the_first_best_and_stops_after_patience():
    assert replay([0.1, 0.3, 0.2, 0.25, 0.29, 0.9], patience=3) == 1  # stopped before the 0.9
    assert replay([0.1, 0.3, 0.2, 0.25, 0.29, 0.9], patience=4) == 5
    assert replay([0.3, 0.30005, 0.2], patience=5) == 0  # a gain below min_delta is a tie: the earlier epoch stays
    es = EarlyStopping(patience=2)
    assert es.step(0.5) and not es.stop
    assert not es.step(0.4) and not es.stop
    assert not es.step(0.5) and es.stop and es.best_epoch == 0
    with pytest.raises(ValueError, match="patience must be >= 1, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be >= 0"):
        EarlyStopping(patience=1, min_delta=float("nan"))


def test_validation_metrics_match_the_evaluation(small_splits):
    sp = small_splits
    torch.manual_seed(0)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, layers=2)
    out = evaluate_model(model, sp.test_sites)
    rows = predict_scores(model, sp.test_sites)
    ref = evaluate_scores(rows, failure_events(sp.test_sites))
    assert out["pr_auc_cascade"] == pytest.approx(ref["pr_auc_cascade"])  # the held-out site has network failures
    by = ref["by_cause_group"]
    assert {"network", "other", "software"} <= set(by)
    # every predictable group counts alike; software (no precursor) is left out
    expected = np.mean([by[g]["pr_auc"] for g in by if g != "software" and np.isfinite(by[g]["pr_auc"])])
    assert out["pr_auc_causes"] == pytest.approx(expected) == pytest.approx(ref["pr_auc_causes"])
    assert out["pr_auc_causes"] != pytest.approx(out["pr_auc"])


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_training_keeps_the_epoch_with_the_best_selection_score(small_splits, selection):
    sp = small_splits
    val = sp.test_sites  # a whole site with network and other failures inside its windows
    torch.manual_seed(1)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, layers=2,
                        pos_weight=estimate_pos_weight(sp.train))
    cfg = TrainConfig(epochs=3, batch_size=8, patience=3, selection=selection, progress=False)
    result = train_model(model, sp.train, val, cfg)
    hist = result.history
    assert len(hist) == 3
    assert all(math.isfinite(h["val_pr_auc"]) for h in hist)  # the score is PR-AUC based, not the loss fallback
    assert all(math.isfinite(h["val_pr_auc_causes"]) for h in hist)
    for h in hist:
        metrics = {"pr_auc": h["val_pr_auc"], "pr_auc_causes": h["val_pr_auc_causes"], "loss": h["val_loss"]}
        assert h["val_selection_score"] == pytest.approx(selection_score(metrics, selection))
    scores = np.array([h["val_selection_score"] for h in hist])
    assert result.best_epoch == int(np.argmax(scores))
    # the kept weights are that epoch's: re-evaluating gives its validation metrics
    again = evaluate_model(model, val)
    assert selection_score(again, selection) == pytest.approx(hist[result.best_epoch]["val_selection_score"], abs=1e-6)


def test_selection_bench_candidates_score_what_they_are_named(load_bench):
    bench = load_bench("predictor_selection")
    rec = {"epoch": 0, "val_pr_auc": 0.4, "val_pr_auc_causes": 0.8, "val_pr_auc_cascade": 0.2, "val_loss": 1.0}
    scores = {name: fn(rec) for name, fn in bench.CANDIDATES.items()}
    assert scores == pytest.approx({"pr_auc": 0.4, "pr_auc+causes": 0.6, "pr_auc+cascade": 0.3, "causes": 0.8})
    assert bench.CANDIDATES["causes"]({**rec, "val_pr_auc_causes": math.nan}) == pytest.approx(0.4)


def test_selection_bench_summary_and_flags(load_bench):
    """Over draws: the geometric-mean ratio and the lowest draw's, per row; the bench reads the predictor bench's
    flags (so it trains the same GNN), and ``--data-seed`` is the older spelling of ``--seed``."""
    bench = load_bench("predictor_selection")
    draws = [{"rules": {"a": {"pr_auc": 0.2, "pr_auc_ratio": 2.0}, "b": {"pr_auc": 0.1, "pr_auc_ratio": None}}},
             {"rules": {"a": {"pr_auc": 0.1, "pr_auc_ratio": 0.5}, "b": {"pr_auc": 0.3, "pr_auc_ratio": 1.5}}}]
    out = bench._summary(draws)
    assert out["a"]["pr_auc_ratio"] == pytest.approx(1.0)
    assert out["a"]["pr_auc_ratio_min_draw"] == 0.5
    assert out["a"]["pr_auc_per_draw"] == [0.2, 0.1]
    assert out["b"]["pr_auc_ratio"] == pytest.approx(1.5) and out["b"]["pr_auc_ratio_per_draw"] == [None, 1.5]
    p = bench.build_parser(bench.predictor_bench())
    assert p.parse_args(["--data-seed", "3"]).seed == 3
    assert p.parse_args([]).seed == 0 and p.parse_args([]).epochs == 8
