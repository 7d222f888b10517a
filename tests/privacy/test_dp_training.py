"""DP-SGD trainer tests, modelled on Opacus's own: accounting, noise scale, clipping, fresh noise, refusals."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn
from torch.utils.data import TensorDataset

from infrabrain.privacy.budget import BudgetConfig
from infrabrain.privacy.dp_training import DPConfig, train_dp
from infrabrain.privacy.ledger import BudgetExceededError, LedgerCorruptError, PrivacyLedger, LEDGER_FILENAME


@pytest.mark.parametrize("mechanism,offline", [("prv", PRVAccountant), ("rdp", RDPAccountant)])
def test_epsilon_over_rounds_matches_offline_opacus_and_grows(tmp_path, dataset, make_model, loss_fn, mechanism,
                                                              offline):
    budget = BudgetConfig(epsilon_total=50, accountant=mechanism)
    # Different batch sizes and noise per round: a heterogeneous history, the hard case for composition.
    rounds = [DPConfig(noise_multiplier=1.1, expected_batch_size=40, steps=30),
              DPConfig(noise_multiplier=0.9, expected_batch_size=20, steps=40),
              DPConfig(noise_multiplier=1.1, expected_batch_size=40, steps=30)]
    acc = offline()
    previous = 0.0
    model = make_model()
    for r, cfg in enumerate(rounds):
        ledger = PrivacyLedger.open(tmp_path, budget)  # ephemeral app: reload every round
        res = train_dp(model, dataset, loss_fn, config=cfg, ledger=ledger, round=r)
        for _ in range(cfg.steps):
            acc.step(noise_multiplier=cfg.noise_multiplier, sample_rate=cfg.expected_batch_size / len(dataset))
        expected = acc.get_epsilon(delta=1e-5)
        assert res.epsilon_total == pytest.approx(expected, rel=0.01)
        assert res.epsilon_total > previous
        assert res.epsilon_spent == pytest.approx(res.epsilon_total - previous, rel=1e-9)
        assert PrivacyLedger.load(tmp_path).epsilon_spent == pytest.approx(res.epsilon_total, rel=1e-12)
        previous = res.epsilon_total
    assert [r.status for r in PrivacyLedger.load(tmp_path).runs] == ["committed"] * 3


def _zero_grad_update(tmp_path, dim=2000, batch=50, sigma=1.3, clip=0.7, tag="a"):
    torch.manual_seed(0)
    model = nn.Linear(dim, 1, bias=False)
    before = model.weight.detach().clone()
    data = TensorDataset(torch.randn(500, dim))
    ledger = PrivacyLedger.open(tmp_path / tag, BudgetConfig(epsilon_total=100, accountant="rdp"))
    cfg = DPConfig(noise_multiplier=sigma, max_grad_norm=clip, expected_batch_size=batch, steps=1, lr=1.0)
    train_dp(model, data, lambda m, b: 0.0 * m(b[0]).sum(), config=cfg, ledger=ledger)
    return (model.weight.detach() - before).flatten()


def test_zero_gradient_run_shows_expected_noise_norm(tmp_path):
    delta = _zero_grad_update(tmp_path)
    expected = 1.3 * 0.7 * math.sqrt(2000) / 50  # sigma * C * sqrt(d) / B (mean reduction)
    assert delta.norm().item() == pytest.approx(expected, rel=0.15)


def test_noise_differs_between_runs(tmp_path):
    a, b = _zero_grad_update(tmp_path, tag="a"), _zero_grad_update(tmp_path, tag="b")
    assert not torch.allclose(a, b)
    corr = torch.dot(a, b) / (a.norm() * b.norm())
    assert abs(corr.item()) < 0.2  # independent noise, not a shifted copy


def test_every_per_sample_gradient_is_clipped(tmp_path, make_model):
    torch.manual_seed(1)
    x = torch.randn(300, 8) * 50  # large inputs -> per-sample gradient norms far above C
    data = TensorDataset(x, (x[:, 0] > 0).long())
    clip, seen = 0.5, {"steps": 0, "over": 0}

    def check(opt, step):
        params = [p for p in opt.params]
        gs = [p.grad_sample.reshape(p.grad_sample.shape[0], -1) for p in params]
        norms = torch.cat(gs, dim=1).norm(dim=1)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        clipped_norms = norms * factor
        assert torch.all(clipped_norms <= clip * (1 + 1e-5))
        seen["over"] += int((norms > clip).sum())
        for p, g in zip(params, gs):
            expected = (factor[:, None] * g).sum(0).view_as(p)
            assert torch.allclose(p.summed_grad, expected, rtol=1e-4, atol=1e-5)
        seen["steps"] += 1

    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=100, accountant="rdp"))
    cfg = DPConfig(noise_multiplier=1.0, max_grad_norm=clip, expected_batch_size=32, steps=5,
                   max_physical_batch_size=10_000)
    train_dp(make_model(), data, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), config=cfg,
             ledger=ledger, on_step=check)
    assert seen["steps"] == 5 and seen["over"] > 50


def test_batch_memory_manager_caps_physical_batches(tmp_path, dataset, make_model, loss_fn):
    sizes: list[int] = []

    def loss(m, b):
        sizes.append(len(b[0]))
        return loss_fn(m, b)

    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=100, accountant="rdp"))
    res = train_dp(make_model(), dataset, loss, config=DPConfig(noise_multiplier=1.0, expected_batch_size=100,
                                                               max_physical_batch_size=16, steps=4), ledger=ledger)
    assert res.steps == 4 and max(sizes) <= 16 and len(sizes) > 4


def test_empty_poisson_batches_are_noise_only_steps(tmp_path, make_model, loss_fn):
    data = TensorDataset(torch.randn(50, 8), torch.zeros(50, dtype=torch.long))
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=100, accountant="rdp"))
    # q = 1/50: about a third of the batches are empty; they must still be taken and accounted.
    res = train_dp(make_model(), data, loss_fn, config=DPConfig(noise_multiplier=2.0, expected_batch_size=1,
                                                                steps=30), ledger=ledger)
    assert res.steps == 30 and ledger.history == [(2.0, 0.02, 30)]


def test_calibrated_noise_spends_the_remaining_budget(tmp_path, dataset, make_model, loss_fn):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=3.0, accountant="rdp"))
    cfg = DPConfig(expected_batch_size=40, steps=40)
    first = train_dp(make_model(), dataset, loss_fn, config=cfg, ledger=ledger, round=0, rounds_left=2)
    assert first.epsilon_total < 3.0
    last = train_dp(make_model(), dataset, loss_fn, config=cfg, ledger=ledger, round=1, rounds_left=1)
    assert 0.97 * 3.0 <= last.epsilon_total <= 3.0
    with pytest.raises(BudgetExceededError):
        train_dp(make_model(), dataset, loss_fn, config=cfg, ledger=ledger, round=2)


def test_round_over_budget_is_refused_before_training(tmp_path, dataset, make_model, loss_fn):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=0.5, accountant="rdp"))
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(BudgetExceededError, match="round 3 refused"):
        train_dp(model, dataset, loss_fn, config=DPConfig(noise_multiplier=0.8, steps=200), ledger=ledger, round=3)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert ledger.runs == ()


def test_corrupted_ledger_refuses_to_train(tmp_path, dataset, make_model, loss_fn):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    (tmp_path / LEDGER_FILENAME).write_text('{"kind": "infrabrain-privacy-ledger", "schema_version": 1}')
    with pytest.raises(LedgerCorruptError):
        train_dp(make_model(), dataset, loss_fn, config=DPConfig(noise_multiplier=1.0, steps=2), ledger=ledger)


@pytest.mark.parametrize("kwargs,field", [({"max_grad_norm": 0}, "max_grad_norm"), ({"noise_multiplier": -1},
                                          "noise_multiplier"), ({"expected_batch_size": 0}, "expected_batch_size"),
                                          ({"lr": float("nan")}, "lr"), ({"epochs": -1}, "epochs")])
def test_bad_config_is_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DPConfig(**kwargs)


def test_incompatible_model_and_data_are_refused(tmp_path, dataset, loss_fn):
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(accountant="rdp"))
    bn = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="not compatible with DP-SGD"):
        train_dp(bn, dataset, loss_fn, config=DPConfig(noise_multiplier=1.0, steps=1), ledger=ledger)
    with pytest.raises(ValueError, match="larger than the dataset"):
        train_dp(nn.Linear(8, 2), dataset, loss_fn, config=DPConfig(noise_multiplier=1.0, expected_batch_size=10_000),
                 ledger=ledger)
    assert ledger.runs == ()
