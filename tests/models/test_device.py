"""Where the predictor trains: device names, clear errors for a GPU that is not there, and (on a machine with a
CUDA GPU) training, prediction and DP-SGD on the GPU against the same model on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from infrabrain.models.device import batch_to, model_device, resolve_device, validate_device_name
from infrabrain.models.gnn import build_model
from infrabrain.models.snapshots import collate_snapshots
from infrabrain.models.training import TrainConfig, estimate_pos_weight, get_weights, loss_fn, predict_scores, train_model

HAVE_CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU")


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:12", "auto"])
def test_device_names_accepted(name: str) -> None:
    assert validate_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", "", "cpu:0"])
def test_device_names_rejected_with_the_name(name: str) -> None:
    with pytest.raises(ValueError, match=f"device {name!r} is not one of"):
        validate_device_name(name)
    with pytest.raises(ValidationError, match="is not one of"):
        TrainConfig(device=name)


def test_resolve_device_never_falls_back_silently() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAVE_CUDA else "cpu")
    if HAVE_CUDA:
        past = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"torch sees {past} GPU"):
            resolve_device(f"cuda:{past}")
    else:
        with pytest.raises(ValueError, match="device 'cuda' asked for, but .* use 'cpu' or 'auto'"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="device 'cuda' asked for"):
            train_model(torch.nn.Linear(1, 1), [1], config=TrainConfig(device="cuda", progress=False))


def test_batch_to_keeps_a_batch_already_there(small_splits) -> None:
    batch = collate_snapshots([small_splits.train[0]])
    assert batch_to(batch, torch.device("cpu")) is batch
    model = build_model(small_splits.feature_set.f_max, small_splits.window, pool=small_splits.pool, hidden=8,
                        layers=1)
    assert model_device(model) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


def _model(sp, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=16, layers=2, dropout=0.0,
                       pos_weight=estimate_pos_weight(sp.train))


@needs_gpu
def test_gpu_forward_and_predictions_match_the_cpu(small_splits) -> None:  # pragma: no cover - GPU machines
    sp = small_splits
    cpu = _model(sp)
    gpu = _model(sp).to("cuda")
    batch = collate_snapshots([sp.train[i] for i in range(min(8, len(sp.train)))])
    with torch.no_grad():
        assert float(loss_fn(gpu, batch)) == pytest.approx(float(loss_fn(cpu, batch)), rel=1e-4, abs=1e-5)
    a, b = predict_scores(cpu, sp.val), predict_scores(gpu, sp.val)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4, atol=1e-5)
    assert (a[["site", "t", "node", "label"]].to_numpy() == b[["site", "t", "node", "label"]].to_numpy()).all()


@needs_gpu
def test_training_on_the_gpu_lowers_the_loss_and_hands_the_model_back(small_splits) -> None:  # pragma: no cover
    sp = small_splits
    model = _model(sp)
    batch = collate_snapshots([sp.train[i] for i in range(len(sp.train))])
    before = float(loss_fn(model, batch))
    result = train_model(model, sp.train, sp.val,
                         TrainConfig(epochs=4, batch_size=8, patience=4, progress=False, device="cuda"))
    assert model_device(model) == torch.device("cpu")
    assert all(np.isfinite(w).all() for w in get_weights(model))
    assert float(loss_fn(model, batch)) < before
    assert len(result.history) >= 1 and result.best_epoch >= 0


@needs_gpu
def test_dp_sgd_on_the_gpu_accounts_like_on_the_cpu(tmp_path) -> None:  # pragma: no cover - GPU machines
    from opacus.accountants import PRVAccountant

    from infrabrain.models.gnn import FailurePredictor, ModelConfig
    from infrabrain.models.snapshots import make_splits
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.dp_training import DPConfig, train_dp
    from infrabrain.privacy.ledger import PrivacyLedger
    from infrabrain.simulation import SiteSpec, simulate_site

    run = simulate_site(SiteSpec(name="s0", racks_per_row=2), hours=30, seed=0, acceleration=50)
    splits = make_splits([run], window_min=60, stride_min=60, fractions=(0.7, 0.85))  # non-overlapping windows
    torch.manual_seed(0)
    model = FailurePredictor(ModelConfig(window=splits.window, pool=splits.pool,
                                         n_features=splits.feature_set.f_max, hidden=8, layers=1)).to("cuda")
    before = [p.detach().clone() for p in model.parameters()]
    devices: set[str] = set()
    ledger = PrivacyLedger.open(tmp_path, BudgetConfig(epsilon_total=8.0))
    cfg = DPConfig(noise_multiplier=1.5, expected_batch_size=4, steps=3, optimizer="adam", lr=1e-2,
                   max_physical_batch_size=4)
    res = train_dp(model, splits.train, loss_fn, collate_snapshots, config=cfg, ledger=ledger, round=1,
                   on_step=lambda opt, step: devices.update(str(p.grad.device) for p in opt.params))
    offline = PRVAccountant()
    for _ in range(3):
        offline.step(noise_multiplier=1.5, sample_rate=4 / len(splits.train))
    assert res.epsilon_total == pytest.approx(offline.get_epsilon(delta=1e-5), rel=0.01)
    assert devices == {"cuda:0"}
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
