"""The cause head's class weights (issue 3 follow-up 35): the training sites' rare cause groups count more in
its loss, the risk trains exactly as before, and bad weights are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from infrabrain.models.checkpoint import load_checkpoint, save_checkpoint
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS, cause_head_accuracy
from infrabrain.models.gnn import ModelConfig, build_model, cause_group_of
from infrabrain.models.pipeline import PipelineConfig
from infrabrain.models.snapshots import collate_snapshots
from infrabrain.models.training import (CAUSE_WEIGHT_CAP, TrainConfig, cause_column, estimate_cause_weights,
                                        loss_fn, train_model)

CAUSES = list(cause_group_of())
GROUP_OF = list(cause_group_of().values())


def _cause_of(group: str) -> int:
    return GROUP_OF.index(group)


class _Failing:
    """What :func:`estimate_cause_weights` reads of a dataset: the causes of its failing rows."""

    def __init__(self, counts: dict[str, int], extra: tuple[int, ...] = ()) -> None:
        self.causes = np.array([_cause_of(g) for g, n in counts.items() for _ in range(n)] + list(extra), np.int64)

    def failing_causes(self) -> np.ndarray:
        return self.causes


GROUPS = ("memory", "network", "thermal", "power", "other")


def test_no_balance_weighs_every_row_alike():
    w = estimate_cause_weights(_Failing({"memory": 70, "network": 50, "other": 150}), GROUPS, 0.0)
    assert w == pytest.approx((1.0,) * 5)


def test_full_balance_weighs_every_group_alike_and_keeps_the_mean_row_weight():
    counts = {"memory": 80, "network": 40, "thermal": 20, "other": 160}
    w = dict(zip(GROUPS, estimate_cause_weights(_Failing(counts), GROUPS, 1.0)))
    totals = [w[g] * n for g, n in counts.items()]
    assert totals == pytest.approx([totals[0]] * 4)  # each group's rows weigh the same in all
    assert sum(totals) / sum(counts.values()) == pytest.approx(1.0)  # the head's loss keeps its size
    assert w["power"] == pytest.approx(max(w[g] for g in counts))  # no rows: never a target, the largest weight
    half = dict(zip(GROUPS, estimate_cause_weights(_Failing(counts), GROUPS, 0.5)))
    assert w["other"] < half["other"] < 1.0 < half["thermal"] < w["thermal"]
    assert sum(half[g] * n for g, n in counts.items()) / sum(counts.values()) == pytest.approx(1.0)


def test_a_handful_of_rows_does_not_outweigh_the_rest():
    counts = {"memory": 300, "other": 300, "thermal": 1}
    mean = sum(counts.values()) / 3
    w = dict(zip(GROUPS, estimate_cause_weights(_Failing(counts), GROUPS, 1.0)))
    # a group of average size would weigh 1 before scaling: thermal is clipped to the cap, not 200x
    assert w["thermal"] / w["memory"] == pytest.approx(CAUSE_WEIGHT_CAP / (mean / 300))
    tight = dict(zip(GROUPS, estimate_cause_weights(_Failing(counts), GROUPS, 1.0, cap=2.0)))
    assert tight["thermal"] / tight["memory"] == pytest.approx(2.0 / (mean / 300))


def test_ignored_and_unnamed_causes_are_not_counted():
    hbm, sram, software = CAUSES.index("hbm"), CAUSES.index("gpu_sram"), CAUSES.index("software")
    base = _Failing({"other": 60}, extra=(sram,) * 20)
    with_hbm = _Failing({"other": 60}, extra=(sram,) * 20 + (hbm,) * 500 + (software,) * 300)
    expected = estimate_cause_weights(base, GROUPS, 1.0)
    assert estimate_cause_weights(with_hbm, GROUPS, 1.0, ignore_causes=(hbm,)) == pytest.approx(expected)
    assert estimate_cause_weights(with_hbm, GROUPS, 1.0) != pytest.approx(expected)  # hbm counts unless ignored
    assert estimate_cause_weights(_Failing({}, extra=(software,) * 5), GROUPS, 1.0) == ()  # nothing to weigh


@pytest.mark.parametrize("kwargs, match", [({"balance": 1.5}, "balance must lie in"),
                                           ({"balance": -0.1}, "balance must lie in"),
                                           ({"balance": 1.0, "cap": 0.5}, "cap must be at least 1")])
def test_bad_balance_or_cap_is_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_cause_weights(_Failing({"memory": 1}), GROUPS, **kwargs)


@pytest.mark.parametrize("weights, match", [((1.0, 2.0), "2 weights for 5 cause_groups"),
                                            ((1.0, 1.0, 0.0, 1.0, 1.0), "finite and positive, got \\[0.0\\]"),
                                            ((1.0, float("nan"), 1.0, 1.0, 1.0), "finite and positive")])
def test_bad_cause_weights_are_refused_by_name(weights, match):
    with pytest.raises(ValidationError, match=match):
        ModelConfig(n_features=4, cause_groups=TYPED_CAUSE_GROUPS, cause_weights=weights)
    with pytest.raises(ValidationError, match="1 weights for 0 cause_groups"):
        ModelConfig(n_features=4, cause_weights=(1.0,))
    with pytest.raises(ValidationError, match="cause_balance"):
        PipelineConfig(cause_balance=2.0)


def test_the_dataset_counts_its_failing_rows_causes(small_splits):
    ds = small_splits.train
    causes = ds.failing_causes()
    assert len(causes) == int(ds.labels().sum()) > 0
    assert (causes >= 0).all() and (causes < len(CAUSES)).all()


def _head_grad(model, batch) -> torch.Tensor:
    model.zero_grad()
    loss_fn(model, batch).backward()
    return model.cause_head[2].weight.grad.clone()


def test_a_group_weight_scales_its_rows_in_the_loss(small_splits):
    sp = small_splits
    failing = next(i for i in range(len(sp.train)) if sp.train[i]["y"].sum() > 0)
    batch = collate_snapshots([sp.train[failing]])
    named = {GROUP_OF[c] for c in batch["cause"][batch["y"] > 0].tolist()} & set(TYPED_CAUSE_GROUPS)
    grads = {}
    for name, weights in (("plain", ()), ("ones", (1.0,) * 5), ("x3", (3.0,) * 5),
                          ("unnamed_x3", tuple(1.0 if g in named else 3.0 for g in TYPED_CAUSE_GROUPS))):
        torch.manual_seed(0)
        model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8,
                            cause_groups=TYPED_CAUSE_GROUPS, cause_weights=weights)
        grads[name] = _head_grad(model, batch)
    assert torch.equal(grads["plain"], grads["ones"])
    torch.testing.assert_close(grads["x3"], 3 * grads["plain"])
    torch.testing.assert_close(grads["unnamed_x3"], grads["plain"])  # only the failing rows' groups weigh


def test_weights_move_the_head_and_leave_the_risk_exactly_as_it_was(small_splits, tmp_path):
    sp = small_splits
    models = {}
    for name, weights in (("plain", ()), ("weighted", (0.5, 4.0, 2.0, 2.0, 0.25))):
        torch.manual_seed(0)
        model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, dropout=0.2, pos_weight=4.0,
                            cause_groups=TYPED_CAUSE_GROUPS, cause_weights=weights)
        train_model(model, sp.train, None, TrainConfig(epochs=2, batch_size=8, progress=False))
        models[name] = model.eval()
    batch = collate_snapshots([sp.test_sites[i] for i in range(4)])
    with torch.no_grad():
        (risk_a, cause_a), (risk_b, cause_b) = (models[n](batch, with_causes=True) for n in ("plain", "weighted"))
    assert torch.equal(risk_a, risk_b)
    assert not torch.equal(cause_a, cause_b)
    path = save_checkpoint(tmp_path / "weighted", models["weighted"], sp.feature_set, sp.normalizer)
    card = json.loads((path / "model_card.json").read_text())
    assert card["config"]["cause_weights"] == [0.5, 4.0, 2.0, 2.0, 0.25]
    loaded = load_checkpoint(path, expected=sp.feature_set).model
    assert torch.equal(loaded.cause_weight, models["weighted"].cause_weight)


def test_the_head_report_gives_each_groups_recall_and_precision():
    hbm, nic = _cause_of("memory"), _cause_of("network")
    # three memory failures (two named memory, one network), one network failure named network, two negatives
    rows = pd.DataFrame({"score": [0.9] * 6, "label": [True] * 4 + [False] * 2, "cause": [hbm] * 3 + [nic, -1, -1]})
    rows[cause_column("memory")] = [0.8, 0.7, 0.2, 0.1, 0.9, 0.9]
    rows[cause_column("network")] = 1.0 - rows[cause_column("memory")]
    acc = cause_head_accuracy(rows)
    assert acc["accuracy"] == pytest.approx(0.75)
    assert acc["recall"] == pytest.approx({"memory": 2 / 3, "network": 1.0})
    assert acc["precision"] == pytest.approx({"memory": 1.0, "network": 0.5})
    assert acc["balanced_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)
