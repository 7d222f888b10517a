"""Training, weights exchange and checkpoints on real simulated snapshots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from infrabrain.models.checkpoint import load_checkpoint, save_checkpoint
from infrabrain.models.features import FeatureSet
from infrabrain.models.gnn import build_model
from infrabrain.models.snapshots import collate_snapshots
from infrabrain.models.training import (
    TrainConfig,
    estimate_pos_weight,
    evaluate_model,
    get_weights,
    loss_fn,
    set_weights,
    train_model,
)


@pytest.fixture(scope="module")
def trained(small_splits):
    sp = small_splits
    torch.manual_seed(0)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=16, layers=2,
                        pos_weight=estimate_pos_weight(sp.train))
    batch = collate_snapshots([sp.train[i] for i in range(len(sp.train))])
    before = float(loss_fn(model, batch))
    result = train_model(model, sp.train, sp.val, TrainConfig(epochs=4, batch_size=8, patience=4, progress=False))
    return model, result, before, batch


def test_training_lowers_the_loss(trained):
    model, result, before, batch = trained
    assert len(result.history) >= 1
    assert 0 <= result.best_epoch < len(result.history)
    with torch.no_grad():
        after = float(loss_fn(model, batch))
    assert after < before


def test_evaluate_model_reports_metrics(trained, small_splits):
    model = trained[0]
    out = evaluate_model(model, small_splits.test_sites)
    assert {"pr_auc", "roc_auc", "loss", "n", "positives"} <= set(out)
    assert out["n"] > 0 and 0.0 <= out["roc_auc"] <= 1.0


def test_weights_roundtrip_and_shape_errors(trained, small_splits):
    model = trained[0]
    sp = small_splits
    w = get_weights(model)
    assert all(isinstance(a, np.ndarray) for a in w)
    other = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=16, layers=2)
    set_weights(other, w)
    batch = collate_snapshots([sp.test_sites[0]])
    with torch.no_grad():
        torch.testing.assert_close(model(batch), other(batch))
    with pytest.raises(ValueError, match="shape"):
        set_weights(other, [a.T if a.ndim == 2 else a for a in w])
    with pytest.raises(ValueError, match="weight arrays"):
        set_weights(other, w[:-1])
    bad = [a.copy() for a in w]
    bad[0][...] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        set_weights(other, bad)


def test_checkpoint_roundtrip_and_feature_set_guard(trained, small_splits, tmp_path):
    model = trained[0]
    sp = small_splits
    path = save_checkpoint(tmp_path / "ckpt", model, sp.feature_set, sp.normalizer, {"val": {"pr_auc": 0.5}})
    card = json.loads((path / "model_card.json").read_text())
    assert card["feature_fingerprint"] == sp.feature_set.fingerprint()
    assert card["feature_set"]["metrics"]["gpu"][0] == "DCGM_FI_DEV_GPU_TEMP"
    ck = load_checkpoint(path, expected=sp.feature_set)
    batch = collate_snapshots([sp.test_sites[0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), ck.model(batch))
    other = FeatureSet(metrics={**sp.feature_set.metrics, "gpu": tuple(
        m for m in sp.feature_set.metrics["gpu"] if m != "DCGM_FI_DEV_POWER_VIOLATION")})
    with pytest.raises(ValueError, match="another feature set.*DCGM_FI_DEV_POWER_VIOLATION"):
        load_checkpoint(path, expected=other)
    with pytest.raises(FileExistsError):
        save_checkpoint(path, model, sp.feature_set, sp.normalizer)
    # a card edited by hand no longer matches its fingerprint
    card["feature_set"]["metrics"]["rack"] = ["something_else"]
    (path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="fingerprint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope")


def test_a_damaged_checkpoint_is_refused_by_name_never_loaded(trained, small_splits, tmp_path):
    """Truncated or non-finite weights, weights of another shape, a card that lost a field or is not an object:
    each a ValueError naming the file and the fault (a truncated file had raised safetensors' own error, which
    the daemon's reload did not catch)."""
    import shutil

    from safetensors.torch import load_file, save_file

    sp = small_splits
    good = save_checkpoint(tmp_path / "good", trained[0], sp.feature_set, sp.normalizer)

    def damaged(name: str) -> Path:
        return Path(shutil.copytree(good, tmp_path / name))

    cut = damaged("cut")
    (cut / "weights.safetensors").write_bytes((good / "weights.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"weights '.*cut/weights.safetensors' are not a readable safetensors"):
        load_checkpoint(cut)
    state = load_file(str(good / "weights.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    nan = damaged("nan")
    save_file({**state, name: torch.full_like(state[name], float("nan"))}, str(nan / "weights.safetensors"))
    with pytest.raises(ValueError, match=rf"NaN or infinite values in \['{re.escape(name)}'\]"):
        load_checkpoint(nan)
    wide = damaged("wide")
    save_file({**state, name: torch.zeros(state[name].shape[0] + 1, state[name].shape[1])},
              str(wide / "weights.safetensors"))
    with pytest.raises(ValueError, match=rf"'{re.escape(name)}': \(\({state[name].shape[0] + 1}, "):
        load_checkpoint(wide)
    card = json.loads((good / "model_card.json").read_text())
    lacking = damaged("lacking")
    (lacking / "model_card.json").write_text(json.dumps({k: v for k, v in card.items() if k != "normalizer"}))
    with pytest.raises(ValueError, match=r"lacks \['normalizer'\]"):
        load_checkpoint(lacking)
    listed = damaged("listed")
    (listed / "model_card.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not an object"):
        load_checkpoint(listed)
    load_checkpoint(good)  # the original is untouched


def test_a_checkpoint_records_its_telemetry_cadence_and_refuses_another(trained, small_splits, small_runs, tmp_path):
    """The window and pool are counted in telemetry steps, so a model read at another cadence would see another
    stretch of time: the card records the step it was trained on and ``predict`` refuses telemetry at another,
    naming both. A card from before the field was recorded reads as 60 s, the step every such model had."""
    from infrabrain.models.predict import predict_run, predict_window

    sp, small_run = small_splits, small_runs[-1]
    path = save_checkpoint(tmp_path / "c60", trained[0], sp.feature_set, sp.normalizer)
    ck = load_checkpoint(path)
    assert ck.card["cadence_s"] == 60 == ck.cadence_s
    assert predict_run(ck, small_run, explain_top=0)  # the simulator's 60 s telemetry is read
    args = (small_run.topology, {k: np.asarray(v) for k, v in small_run.metrics.items()}, small_run.metric_names)
    with pytest.raises(ValueError, match="30 s cadence, but the model was trained on 60 s telemetry"):
        predict_window(ck, *args, explain_top=0, cadence_s=30)
    half = load_checkpoint(save_checkpoint(tmp_path / "c30", trained[0], sp.feature_set, sp.normalizer,
                                           cadence_s=30))
    with pytest.raises(ValueError, match=r"60 s cadence, but the model was trained on 30 s telemetry \(its "
                                         rf"{half.window}-step window is {half.window // 2} min\)"):
        predict_run(half, small_run, explain_top=0)
    card = json.loads((path / "model_card.json").read_text())
    del card["cadence_s"]
    (path / "model_card.json").write_text(json.dumps(card))
    assert load_checkpoint(path).cadence_s == 60
    for bad in (0, -60, 1.5, True):
        with pytest.raises(ValueError, match="cadence_s must be a positive whole number"):
            save_checkpoint(tmp_path / f"bad{bad}", trained[0], sp.feature_set, sp.normalizer, cadence_s=bad)


def test_a_kind_with_no_telemetry_in_the_window_is_masked_and_named(trained, small_splits, small_runs, tmp_path,
                                                                     caplog):
    """A window whose GPU exporter logged nothing scores every node as before (its GPUs count as down, the
    documented masking), and a warning names the kind; a window with its GPUs seen logs none."""
    import logging

    from infrabrain.models.predict import predict_window

    sp, run = small_splits, small_runs[-1]
    ck = load_checkpoint(save_checkpoint(tmp_path / "c", trained[0], sp.feature_set, sp.normalizer))
    metrics = {k: np.asarray(v) for k, v in run.metrics.items()}
    with caplog.at_level(logging.WARNING, logger="infrabrain.models.predict"):
        predict_window(ck, run.topology, metrics, run.metric_names, explain_top=0)
        assert not [r for r in caplog.records if "no telemetry of these component kinds" in r.getMessage()]
        quiet = {**metrics, "gpu": np.full_like(metrics["gpu"], np.nan)}
        out = predict_window(ck, run.topology, quiet, run.metric_names, explain_top=0)
    assert any(r["risk"] is not None for r in out)
    warned = [r for r in caplog.records if "no telemetry of these component kinds" in r.getMessage()]
    assert len(warned) == 1 and warned[0].kinds == "gpu"


def test_a_metric_with_no_value_in_the_window_is_masked_and_named(trained, small_splits, small_runs, tmp_path,
                                                                   caplog):
    """A window whose GPUs export no single-bit ECC counter (a field the exporter was not configured with) is
    scored, the counter masked as missing, and one warning names it with its kind; a metric seen only before the
    model's window counts as missing too. A full window warns of nothing, and a kind with no telemetry at all
    is named as a kind, not metric by metric."""
    import logging

    from infrabrain.models.predict import predict_window, unobserved_metrics

    sp, run = small_splits, small_runs[-1]
    ck = load_checkpoint(save_checkpoint(tmp_path / "c", trained[0], sp.feature_set, sp.normalizer))
    metrics = {k: np.asarray(v) for k, v in run.metrics.items()}
    names = run.metric_names
    ecc = list(names["gpu"]).index("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
    steps = ck.window + 1
    assert unobserved_metrics(metrics, names, steps) == {}
    gpu = metrics["gpu"].copy()
    gpu[-steps:, :, ecc] = np.nan  # seen before the model's window, not in it
    assert unobserved_metrics({**metrics, "gpu": gpu}, names, steps) == {"gpu": ["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"]}
    gpu[-steps - 1, :, ecc] = metrics["gpu"][-steps - 1, :, ecc]
    gpu[-1, 0, ecc] = 3.0  # one GPU's one reading in the window: seen
    assert unobserved_metrics({**metrics, "gpu": gpu}, names, steps) == {}
    assert unobserved_metrics({**metrics, "gpu": np.full_like(gpu, np.nan)}, names, steps) == {}
    note = "no value of these metrics the model reads in the window"
    with caplog.at_level(logging.WARNING, logger="infrabrain.models.predict"):
        full = predict_window(ck, run.topology, metrics, names, explain_top=0)
        assert not [r for r in caplog.records if note in r.getMessage()]
        gpu = metrics["gpu"].copy()
        gpu[:, :, ecc] = np.nan
        out = predict_window(ck, run.topology, {**metrics, "gpu": gpu}, names, explain_top=0)
    assert [r["node_id"] for r in out if r["risk"] is not None] == [r["node_id"] for r in full
                                                                   if r["risk"] is not None]
    warned = [r for r in caplog.records if note in r.getMessage()]
    assert len(warned) == 1 and warned[0].metrics == "gpu: DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"


def test_a_field_the_model_never_learned_does_not_move_its_scores_nor_is_missed(trained, small_splits, small_runs,
                                                                                tmp_path, caplog):
    """A card whose training data held no single-bit ECC value (its normaliser marks the field unlearned): a window
    that sends the counter scores exactly as one that does not (the field is masked as in training), and a window
    without it is not warned of, since the model loses nothing."""
    import dataclasses
    import logging

    from infrabrain.models.predict import predict_window

    sp, run = small_splits, small_runs[-1]
    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    mask = np.array([m == ecc for m in sp.feature_set.metrics_of("gpu")])
    norm = dataclasses.replace(sp.normalizer, unlearned={"gpu": mask})
    ck = load_checkpoint(save_checkpoint(tmp_path / "c", trained[0], sp.feature_set, norm))
    assert ck.normalizer.unlearned_metrics(ck.feature_set) == {"gpu": [ecc]}
    metrics = {k: np.asarray(v) for k, v in run.metrics.items()}
    gpu = metrics["gpu"].copy()
    j = list(run.metric_names["gpu"]).index(ecc)
    gpu[:, :, j] = np.where(np.arange(gpu.shape[1]) % 2 == 0, 50.0 * np.arange(gpu.shape[0])[:, None], 0.0)
    sent = {**metrics, "gpu": gpu}  # a site that sends the counter, a burst of errors on half the GPUs
    gpu_none = metrics["gpu"].copy()
    gpu_none[:, :, j] = np.nan
    with caplog.at_level(logging.WARNING, logger="infrabrain.models.predict"):
        with_ecc = predict_window(ck, run.topology, sent, run.metric_names, explain_top=0)
        without = predict_window(ck, run.topology, {**metrics, "gpu": gpu_none}, run.metric_names, explain_top=0)
    assert [(r["node_id"], r["risk"]) for r in with_ecc] == [(r["node_id"], r["risk"]) for r in without]
    assert not [r for r in caplog.records if "no value of these metrics" in r.getMessage()]
    learned = load_checkpoint(save_checkpoint(tmp_path / "l", trained[0], sp.feature_set, sp.normalizer))
    moved = predict_window(learned, run.topology, sent, run.metric_names, explain_top=0)
    assert [r["risk"] for r in moved] != [r["risk"] for r in predict_window(
        learned, run.topology, {**metrics, "gpu": gpu_none}, run.metric_names, explain_top=0)]  # the test can fail


def test_input_scaling_standardises_per_kind_and_travels_with_the_checkpoint(small_splits, tmp_path):
    from infrabrain.models.gnn import fit_input_scaling
    from infrabrain.models.training import make_loader

    sp = small_splits
    torch.manual_seed(0)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, bin_features=False,
                        input_scaling=True)
    plain = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, bin_features=False)
    with pytest.raises(ValueError, match="without input_scaling"):
        fit_input_scaling(plain, make_loader(sp.train, 8))
    fit_input_scaling(model, make_loader(sp.train, 8), floor=0.1)
    assert bool((model.in_scale >= 0.1).all()) and float(model.in_center.abs().sum()) > 0
    batch = collate_snapshots([sp.train[i] for i in range(len(sp.train))])
    d = model.in_center.shape[1]
    z = model.encoder_inputs(batch["x"], batch["mask"], batch["kind"])[..., :d]
    raw = model.encoder_inputs(batch["x"], batch["mask"], batch["kind"], raw=True)[..., :d]
    gpu = (batch["kind"] == 0) & (batch["alive"] > 0)
    zs, rs = z[gpu].double(), raw[gpu].double()
    varied = rs.std(dim=0) > 0.1  # inputs whose spread exceeds the floor come out with mean 0 and std 1
    assert int(varied.sum()) > 10
    torch.testing.assert_close(zs.mean(dim=0)[varied], torch.zeros(int(varied.sum()), dtype=torch.float64),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(zs.std(dim=0, unbiased=False)[varied],
                               torch.ones(int(varied.sum()), dtype=torch.float64), atol=1e-3, rtol=0)
    # the fitted centre and scale are part of the checkpoint (buffers of the state_dict)
    path = save_checkpoint(tmp_path / "scaled", model, sp.feature_set, sp.normalizer)
    ck = load_checkpoint(path, expected=sp.feature_set)
    torch.testing.assert_close(ck.model.in_scale, model.in_scale)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), ck.model(batch))
