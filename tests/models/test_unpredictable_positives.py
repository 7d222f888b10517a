"""Training leaves out the positives no telemetry foretells (software, GSP firmware), for the GNN and the
tabular baselines alike; the evaluation still counts them (issue 3 follow-up 30)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infrabrain.models import pipeline
from infrabrain.models.baselines import TabularBaseline, feature_table
from infrabrain.models.evaluation import cause_names, unpredictable_causes
from infrabrain.models.pipeline import PipelineConfig, baseline_tables, ignored_causes
from infrabrain.models.training import loss_fn


class _FixedLogits(nn.Module):
    """A 'model' whose logits are its one parameter, so the loss's gradient per row can be read off."""

    def __init__(self, logits: torch.Tensor, pos_weight: float) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.pos_weight = pos_weight

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits


def test_the_unpredictable_causes_are_the_software_group():
    causes, group = cause_names()
    assert sorted(causes[i] for i in unpredictable_causes()) == ["gsp", "software"]
    assert ignored_causes(PipelineConfig()) == unpredictable_causes()
    assert ignored_causes(PipelineConfig(train_on_unpredictable=True)) == ()


def test_the_loss_leaves_out_the_positives_of_ignored_causes_only():
    causes, _ = cause_names()
    sw, hw = causes.index("software"), causes.index("hbm")
    # one snapshot, four alive nodes: a software positive, a hardware positive, a healthy node, and a healthy node
    # carrying the software cause index (a label edge): only the first is left out
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    batch = {"y": y, "label_mask": torch.ones(1, 4), "cause": torch.tensor([[sw, hw, -1, sw]])}
    logits = torch.tensor([[-2.0, -1.0, 0.5, 0.3]])

    def grads(ignore):
        model = _FixedLogits(logits, pos_weight=3.0)
        loss = loss_fn(model, batch, ignore)
        loss.backward()
        return loss.item(), model.logits.grad[0]

    loss_all, g_all = grads(())
    loss_ign, g_ign = grads((sw,))
    assert (g_all != 0).all()
    assert g_ign[0] == 0 and (g_ign[1:] != 0).all()
    # the left-out row counts in neither the sum nor the count of the snapshot's mean
    per = nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(3.0), reduction="none")
    assert loss_ign == pytest.approx(float(per[0, 1:].mean()), rel=1e-6)
    assert loss_all == pytest.approx(float(per.mean()), rel=1e-6)
    assert grads((hw,))[1][1] == 0  # any cause index works, not only software's


def test_train_predictor_hands_the_ignored_causes_to_training(small_runs, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def capture(model, train_ds, val_ds=None, config=None, on_epoch=None):
        seen.append(config.ignore_causes)
        raise Stop

    monkeypatch.setattr(pipeline, "train_model", capture)
    for cfg in (PipelineConfig(heldout=1, progress=False), PipelineConfig(heldout=1, progress=False,
                                                                          train_on_unpredictable=True)):
        with pytest.raises(Stop):
            pipeline.train_predictor(small_runs, cfg)
    assert seen == [unpredictable_causes(), ()]


def test_the_tabular_baselines_are_fitted_without_the_ignored_positives(small_splits, monkeypatch):
    sp = small_splits
    _, mtr = feature_table(sp.train)
    pos = mtr[mtr["label"].to_numpy(bool)]
    assert len(pos)
    cause = int(pos["cause"].mode().iloc[0])  # the commonest cause among the training positives
    n_cause = int((pos["cause"] == cause).sum())
    fitted_on = []
    original = TabularBaseline.fit

    def record(self, x, y):
        fitted_on.append((self.kind, len(y), int(np.sum(y))))
        return original(self, x, y)

    monkeypatch.setattr(TabularBaseline, "fit", record)
    _, mte = feature_table(sp.test_sites)
    truth = mte[["site", "t", "node", "label", "cause", "root"]]
    baseline_tables(sp, sp.test_sites, truth)
    baseline_tables(sp, sp.test_sites, truth, ignore_causes=(cause,))
    n, p = len(mtr), len(pos)
    assert fitted_on == [("gbm", n, p), ("logistic", n, p), ("gbm", n - n_cause, p - n_cause),
                         ("logistic", n - n_cause, p - n_cause)]


def test_an_unknown_group_to_split_is_named_not_dropped(small_runs):
    """``PipelineConfig.cause_split`` reaches the model's check (issue 3 follow-up 42): a misspelt group is an
    error that names it, where it had been filtered out silently and the head trained unsplit."""
    with pytest.raises(ValueError, match=r"cause_split names \['othr'\]"):
        pipeline.train_predictor(small_runs, PipelineConfig(heldout=1, progress=False, cause_split=("othr",)))
