"""Every party training the federated predictor trains on every failure by default; ``train-on-unpredictable =
false`` leaves out the positives no telemetry foretells (software, GSP firmware), as the centralised pipeline
does (issue 3 follow-up 31 measured it not to help the federated model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.models.evaluation import cause_names, unpredictable_causes


class _FixedLogits(nn.Module):
    """A 'model' whose logits are its one parameter: what a loss makes of each row can be read off."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.pos_weight = 2.0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits


def _row_grads(loss) -> torch.Tensor:
    """Gradient per row of ``loss`` on one snapshot: a software positive, a hardware positive, a healthy node."""
    causes, _ = cause_names()
    batch = {"y": torch.tensor([[1.0, 1.0, 0.0]]), "label_mask": torch.ones(1, 3),
             "cause": torch.tensor([[causes.index("software"), causes.index("hbm"), -1]])}
    model = _FixedLogits(torch.tensor([[-1.0, -0.5, 0.2]]))
    loss(model, batch).backward()
    return model.logits.grad[0]


def test_the_federation_sends_the_setting_to_every_site() -> None:
    assert FederationConfig.from_run_config({}).site_config()["train-on-unpredictable"] is True
    off = FederationConfig.from_run_config({"train-on-unpredictable": False})
    assert off.site_config()["train-on-unpredictable"] is False
    with pytest.raises(ValueError, match="train-on-unpredictable"):
        FederationConfig.from_run_config({"train-on-unpredictable": "sometimes"})


def test_the_task_loss_leaves_out_software_positives_only_when_told() -> None:
    from infrabrain.client.predictor_task import task_loss

    assert (_row_grads(task_loss({})) != 0).all()
    assert (_row_grads(task_loss({"train-on-unpredictable": True})) != 0).all()
    left_out = _row_grads(task_loss({"train-on-unpredictable": False}))
    assert left_out[0] == 0 and (left_out[1:] != 0).all()
    assert sorted(cause_names()[0][i] for i in unpredictable_causes()) == ["gsp", "software"]


def test_a_sites_dp_round_trains_with_the_task_loss(dp_round_inputs) -> None:
    """What a site's round hands DP-SGD: the loss follows the round's setting (caught before any step)."""
    seen = [_row_grads(loss_fn) for _, _, loss_fn in dp_round_inputs({}, {"train-on-unpredictable": False})]
    assert (seen[0] != 0).all()
    assert seen[1][0] == 0 and (seen[1][1:] != 0).all()


def test_the_public_models_cache_names_the_setting(tmp_path) -> None:
    """A public model pretrained on every failure is not loaded for a federation that leaves some out."""
    from infrabrain.coordinator.public_model import _cache_key
    from infrabrain.coordinator.simulation_run import simulation_config

    shapes = [[2, 3]]
    default = simulation_config(2, 1, None, tmp_path, site_gpus=8, site_hours=48.0)
    off = simulation_config(2, 1, None, tmp_path, site_gpus=8, site_hours=48.0, train_on_unpredictable=False)
    assert _cache_key(default, shapes) != _cache_key(off, shapes)
    assert _cache_key(default, shapes)["train-on-unpredictable"] is True
