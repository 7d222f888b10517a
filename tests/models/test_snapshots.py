"""Snapshots from real simulated runs: shapes, masking, dynamic graph, splits, normalisation, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from infrabrain.models.features import (CLIP, COUNTER_SCALE_FLOOR, FeatureSet, Normalizer, is_counter,
                                         transform_series, xid_state)
from infrabrain.models.snapshots import (
    build_snapshot,
    collate_snapshots,
    fit_normalizer,
    make_splits,
    site_tensors,
    snapshot_from_window,
)


def test_snapshot_shapes_and_labels(small_runs, small_splits):
    sp = small_splits
    item = sp.train[0]
    run = small_runs[0]
    n = len(run.topology.components)
    bins = sp.window // sp.pool
    assert sp.window == 60 and sp.pool == 5
    assert item["x"].shape == (n, bins, sp.feature_set.f_max)
    assert item["mask"].shape == item["x"].shape
    assert item["kind"].shape == (n,)
    assert item["y"].shape == (run.topology.count("node"),)
    # padding slots of kinds with fewer metrics are always masked
    rack = run.topology.kind_index["rack"][0]
    assert float(item["mask"][rack, :, 1:].sum()) == 0.0
    # labels equal the simulator's
    si, ti = sp.train.index[0]
    assert torch.equal(item["y"].bool(), torch.from_numpy(run.labels.fail_within_1h[ti]))


def test_nan_values_are_masked_not_invented(small_runs, small_splits):
    run = copy.deepcopy(small_runs[0])
    gpu = 3
    run.metrics["gpu"][:, gpu, :] = np.nan  # every scrape of one GPU missing
    site = site_tensors(run, small_splits.feature_set, small_splits.normalizer)
    from infrabrain.models.snapshots import build_snapshot

    item = build_snapshot(site, 100, 60, pool=5)
    g = run.topology.kind_index["gpu"][gpu]
    assert float(item["mask"][g].sum()) == 0.0
    assert float(item["x"][g].abs().sum()) == 0.0
    assert float(item["alive"][g]) == 0.0  # dead: removed from message passing


def test_dead_node_gets_no_label(small_runs, small_splits):
    run = small_runs[0]
    alive = run.labels.alive
    t, n = np.argwhere(~alive)[0]
    site = small_splits.train_sites[0] if small_splits.train_sites[0].name == run.name else None
    assert site is not None
    from infrabrain.models.snapshots import build_snapshot

    item = build_snapshot(site, max(int(t), 60), 60, pool=5)
    if not alive[max(int(t), 60), n]:
        assert float(item["label_mask"][n]) == 0.0


def test_splits_by_site_and_time(small_runs, small_splits):
    sp = small_splits
    held = {s.name for s in sp.heldout_sites}
    assert held == {small_runs[-1].name}
    assert held.isdisjoint({s.name for s in sp.train_sites})
    # time split: train ends before validation starts, with at least the label horizon between them
    t_train = max(sp.train.sites[si].timestamps[ti] for si, ti in sp.train.index)
    t_val = min(sp.val.sites[si].timestamps[ti] for si, ti in sp.val.index)
    assert t_val - t_train >= 3600
    # the normaliser comes from the training sites' training period only
    ref = fit_normalizer(small_runs[:-1], sp.feature_set, (0.0, 0.6))
    for k in ref.center:
        np.testing.assert_allclose(ref.center[k], sp.normalizer.center[k])
    other = fit_normalizer(small_runs, sp.feature_set, (0.0, 1.0))
    assert any(not np.allclose(other.center[k], sp.normalizer.center[k]) for k in ref.center)


def test_site_validation_trains_on_the_whole_run(small_runs):
    """With a validation site, fractions (1, 1) train on every snapshot of the other training sites (their later
    time has no use then) and leave no time-test split; without one, the time split must stay."""
    sp = make_splits(small_runs, heldout=1, val_sites=1, fractions=(1.0, 1.0), stride_min=10)
    assert sp.test_time is None
    assert {s.name for s in sp.val.sites} == {small_runs[1].name}
    assert [s.name for s in sp.train.sites] == [small_runs[0].name]
    assert sp.val.sites[0].name not in {s.name for s in sp.train_sites}
    t_last = max(sp.train.sites[si].timestamps[ti] for si, ti in sp.train.index)
    assert t_last >= small_runs[0].timestamps[-1] - 10 * 60  # up to the run's end, one stride
    ref = fit_normalizer(small_runs[:1], sp.feature_set, (0.0, 1.0))
    for k in ref.center:
        np.testing.assert_allclose(ref.center[k], sp.normalizer.center[k])
    partial = make_splits(small_runs, heldout=1, val_sites=1, stride_min=10)  # (0.6, 0.8): a third fewer
    assert len(partial.train) < 0.7 * len(sp.train)
    with pytest.raises(ValueError, match="without validation sites"):
        make_splits(small_runs, heldout=1, fractions=(1.0, 1.0))
    with pytest.raises(ValueError, match="fractions must satisfy"):
        make_splits(small_runs, heldout=1, val_sites=1, fractions=(0.8, 0.6))


def test_collate_pads_different_sites(small_splits):
    sp = small_splits
    a = sp.train[0]
    b = sp.test_sites[0]
    batch = collate_snapshots([a, b])
    n_max = max(a["kind"].shape[0], b["kind"].shape[0])
    assert batch["x"].shape[:2] == (2, n_max)
    assert batch["edge_index"].max() < 2 * batch["infra_index"].shape[1]
    assert batch["gpu_edge"][:, 0].max() < 2 * n_max


def test_minutes_to_failure_are_counted_to_the_end_of_the_next_positive_run(small_splits):
    """``to_failure_min`` (the input of the lead weight, issue 3 follow-up 45, and of the early band, follow-up
    46): from every row, the minutes to the end of the node's next run of positive labels (a positive row's lead),
    a sentinel where none follows; it is carried into the batch beside ``y``."""
    from infrabrain.models.snapshots import NO_FAILURE_MIN
    from infrabrain.models.training import loss_fn

    site = copy.copy(small_splits.train.sites[0])
    y = np.zeros_like(site.y)
    y[3:6, 0] = True  # a run of three positive rows: the failure follows step 5
    y[9, 1] = True
    site.y, site.cadence_s, site._to_failure_min = y, 120, None
    to_failure = site.to_failure_min()
    assert to_failure[:7, 0].tolist() == [12.0, 10.0, 8.0, 6.0, 4.0, 2.0, NO_FAILURE_MIN]
    assert to_failure[9, 1] == 2.0 and to_failure[8, 1] == 4.0 and to_failure[10, 1] == NO_FAILURE_MIN
    assert (to_failure[:, 2:] == NO_FAILURE_MIN).all()
    sp = small_splits
    pos = next(i for i in range(len(sp.train)) if float(sp.train[i]["y"].sum()) > 0)
    early = next(i for i in range(len(sp.train))
                 if bool(((sp.train[i]["y"] == 0) & (sp.train[i]["to_failure_min"] <= 120.0)).any()))
    batch = collate_snapshots([sp.train[pos], sp.train[early]])
    lead = batch["to_failure_min"]
    assert bool((lead[batch["y"] > 0] <= 60.0).all()) and bool((lead[batch["y"] > 0] > 0).all())
    assert bool((lead[batch["y"] == 0] > 60.0).all())  # a negative row's failure lies beyond the label's hour
    from infrabrain.models.gnn import build_model

    torch.manual_seed(0)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool)
    with torch.no_grad():
        plain = loss_fn(model, batch)
        assert torch.equal(loss_fn(model, batch, lead_weight=0.0, early_band_min=0.0), plain)
        assert float(loss_fn(model, batch, lead_weight=1.0)) > float(plain)  # the positives weigh more
        # the early band leaves the precursor's earlier negative rows out: the loss changes only where some exist
        band = (batch["y"] == 0) & (lead <= 120.0) & (batch["label_mask"] > 0)
        banded = loss_fn(model, batch, early_band_min=60.0)
        assert bool(band.any()) and not torch.equal(banded, plain)
        far = batch.copy()
        far["to_failure_min"] = torch.where(band, torch.full_like(lead, 121.0), lead)
        assert torch.equal(loss_fn(model, far, early_band_min=60.0), plain)


def test_missing_metric_column_is_an_error(small_runs, small_splits):
    run = small_runs[0]
    names = {k: list(v) for k, v in run.metric_names.items()}
    names["gpu"] = names["gpu"][1:]
    metrics = {k: v[:70] for k, v in run.metrics.items()}
    metrics["gpu"] = metrics["gpu"][:, :, 1:]
    with pytest.raises(ValueError, match="missing metric column.*DCGM_FI_DEV_GPU_TEMP"):
        snapshot_from_window(run.topology, metrics, names, small_splits.feature_set, small_splits.normalizer, 60, pool=5)


def test_unknown_component_type_is_an_error(small_runs, small_splits):
    run = small_runs[0]
    names = {k: list(v) for k, v in run.metric_names.items()} | {"ups": ["ups_load"]}
    metrics = {k: v[:70] for k, v in run.metrics.items()} | {"ups": np.zeros((70, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="unknown component type.*ups"):
        snapshot_from_window(run.topology, metrics, names, small_splits.feature_set, small_splits.normalizer, 60, pool=5)
    with pytest.raises(ValueError, match="unknown component kind"):
        FeatureSet(metrics={"ups": ("x",)})


def test_short_window_is_an_error(small_runs, small_splits):
    run = small_runs[0]
    metrics = {k: v[:30] for k, v in run.metrics.items()}
    with pytest.raises(ValueError, match="needs at least 60"):
        snapshot_from_window(run.topology, metrics, run.metric_names, small_splits.feature_set,
                             small_splits.normalizer, 60, pool=5)


def test_counters_and_normaliser_roundtrip(small_splits):
    assert is_counter("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL") and is_counter("node_network_receive_errs_total")
    assert not is_counter("DCGM_FI_DEV_XID_ERRORS") and not is_counter("DCGM_FI_DEV_GPU_TEMP")
    n2 = Normalizer.from_dict(small_splits.normalizer.to_dict())
    for k in n2.center:
        np.testing.assert_allclose(n2.scale[k], small_splits.normalizer.scale[k])


def test_a_sparse_counter_keeps_its_amplitude():
    # PCIe replays: no increment on almost every GPU-step, a few bursts of 2, 20 and 2,000 per step. Standardised
    # by its own tiny spread, every burst read over CLIP and was clipped alike (issue 3 follow-up 17).
    fs = FeatureSet(metrics={"gpu": ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_TEMP")})
    rng = np.random.default_rng(0)
    inc = np.zeros((500, 8), np.float32)
    inc[[10, 20, 30], [0, 1, 2]] = [2, 20, 2000]
    temp = rng.normal(60.0, 4.0, (500, 8)).astype(np.float32)
    arr = np.stack([np.log1p(inc), temp], axis=-1)  # transformed [T, n, F]
    nz = Normalizer.fit({"gpu": [arr]}, fs)
    assert nz.scale["gpu"][0] == COUNTER_SCALE_FLOOR  # its spread (0.13) is below the floor
    np.testing.assert_allclose(nz.scale["gpu"][1], temp.std(), rtol=1e-4)  # a gauge keeps its spread
    z = nz.apply("gpu", arr)[[10, 20, 30], [0, 1, 2], 0]
    assert np.all(np.abs(z) < CLIP) and z[0] < z[1] < z[2]  # 2 < 20 < 2,000, none at the clip
    np.testing.assert_allclose(np.diff(z), np.diff(np.log1p([2.0, 20.0, 2000.0])), rtol=1e-5)


def test_xid_gauge_becomes_a_held_hardware_xid_state():
    nan = np.nan
    # one GPU: no XID, NVLink 74 (not hardware), a gap, then row remapping 63 (a change seen across the gap),
    # 63 stays set, a DBE 48, 48 stays set past the hold, then NVLink 74 again
    gauge = np.array([0, 0, 74, 74, nan, 63, 63, 48, 48, 48, 48, 74], dtype=np.float32)
    st = xid_state(gauge[:, None], hold_steps=3)[:, 0]
    np.testing.assert_array_equal(np.nan_to_num(st, nan=-1), [-1, 0, 0, 0, -1, 1, 1, 1, 1, 1, 0, 0])
    # a code already set before the data starts: its raise time is unknown (masked), then never "raised"
    np.testing.assert_array_equal(np.nan_to_num(xid_state(np.full((4, 1), 63.0))[:, 0], nan=-1), [-1, 0, 0, 0])
    # back after an outage longer than gap_steps, still showing the XID it failed with: the code's raise time is
    # unknown (masked at the first step back), not a fresh fault; across a short scrape gap a change still counts
    back = np.array([0, 0, nan, nan, nan, 64, 64, 64], dtype=np.float32)[:, None]
    np.testing.assert_array_equal(np.nan_to_num(xid_state(back, hold_steps=3, gap_steps=2)[:, 0], nan=-1),
                                  [-1, 0, -1, -1, -1, -1, 0, 0])
    np.testing.assert_array_equal(np.nan_to_num(xid_state(back, hold_steps=3, gap_steps=3)[:, 0], nan=-1),
                                  [-1, 0, -1, -1, -1, 1, 1, 1])
    # transform_series routes only the XID column through it (the counter column becomes increments)
    vals = np.stack([gauge, np.arange(12, dtype=np.float32)], axis=1)[:, None, :]
    out = transform_series(vals, np.array([False, True]), np.array([True, False]))
    np.testing.assert_array_equal(np.nan_to_num(out[:, 0, 0], nan=-1), [-1, 0, 0, 0, -1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_allclose(out[1:, 0, 1], np.log1p(1.0))
    fs = FeatureSet(metrics={"gpu": ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS")})
    assert fs.xid_codes("gpu").tolist() == [False, True] and not fs.counters("gpu").any()


def test_snapshot_from_a_window_sees_an_xid_raised_before_it(small_runs, small_splits):
    """predict / the daemon pass history_steps(window) raw steps, so the snapshot equals the training one."""
    from infrabrain.models.features import history_steps

    sp, run = small_splits, small_runs[0]
    names = run.metric_names
    gpu = {k: v.copy() for k, v in run.metrics.items()}
    j = names["gpu"].index("DCGM_FI_DEV_XID_ERRORS")
    end = 150
    gpu["gpu"][:, 0, j] = 0.0
    gpu["gpu"][end - 70:, 0, j] = 63.0  # raised 70 steps before the end: 10 steps before the 60-step window
    short = {k: v[end - sp.window: end + 1] for k, v in gpu.items()}
    full = {k: v[end + 1 - history_steps(sp.window): end + 1] for k, v in gpu.items()}
    a = snapshot_from_window(run.topology, short, names, sp.feature_set, sp.normalizer, sp.window, pool=sp.pool)
    b = snapshot_from_window(run.topology, full, names, sp.feature_set, sp.normalizer, sp.window, pool=sp.pool)
    g0 = int(np.flatnonzero(a["kind"].numpy() == 0)[0])
    assert float(b["x"][g0, :, j].max()) > float(a["x"][g0, :, j].max())  # only the long history sees it


def test_a_window_with_history_steps_encodes_the_xid_state_exactly_as_the_whole_run() -> None:
    """Training encodes the whole run, predict and the daemon only history_steps(window) raw steps: the XID state
    of every step of the window must agree, on gauges with scrape gaps, outages and codes raised before it."""
    from infrabrain.models.features import XID_GAP_STEPS, XID_HOLD_STEPS, history_steps

    rng = np.random.default_rng(3)
    t_len, window = 600, 60
    codes = rng.choice([0.0, 13.0, 48.0, 63.0, 64.0, 74.0, 79.0], size=(t_len, 40), p=[.6, .1, .06, .08, .06, .05, .05])
    held = np.repeat(codes[::7], 7, axis=0)[:t_len]  # codes that stay set for a while, as the gauge does
    for g in range(held.shape[1]):  # scrape gaps of 1-3 steps and outages of 6-120 steps
        for _ in range(rng.integers(1, 6)):
            a = int(rng.integers(0, t_len - 5))
            held[a:a + int(rng.choice([1, 2, 3, XID_GAP_STEPS + 1, 30, 120])), g] = np.nan
    full = np.nan_to_num(xid_state(held), nan=-1)
    assert (full == 1).any() and (full == -1).any()
    h = history_steps(window)
    assert h >= window + XID_HOLD_STEPS
    for end in range(h - 1, t_len):
        part = np.nan_to_num(xid_state(held[end + 1 - h: end + 1])[-window:], nan=-1)
        np.testing.assert_array_equal(part, full[end + 1 - window: end + 1], err_msg=f"window ending at {end}")


def test_the_inference_snapshot_of_a_raw_window_is_the_training_snapshot(small_runs, small_splits) -> None:
    """No train/serve skew: what predict and the daemon build from the last history_steps(window) raw steps equals,
    in every input the model reads, the snapshot training cut from the whole run's encoding (failing and
    repaired components included: this strongly accelerated run has outages)."""
    from infrabrain.models.features import history_steps

    sp = small_splits
    site, run = sp.train_sites[0], small_runs[0]
    h = history_steps(sp.window)
    compared = 0
    for end in range(h - 1, len(site.timestamps), 17):
        train = build_snapshot(site, end, sp.window, pool=sp.pool)
        raw = {k: np.asarray(v)[end + 1 - h: end + 1] for k, v in run.metrics.items()}
        serve = snapshot_from_window(run.topology, raw, run.metric_names, sp.feature_set, sp.normalizer, sp.window,
                                     pool=sp.pool)
        for key in ("x", "mask", "kind", "alive", "edge_index", "edge_type", "node_index"):
            np.testing.assert_allclose(serve[key].numpy(), train[key].numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{key} of the window ending at step {end}")
        compared += 1
    assert compared >= 20 and run.events["event"].eq("failure").any()


def test_feature_encoding_is_part_of_the_identity(small_splits):
    fs = small_splits.feature_set
    d = fs.to_dict()
    assert FeatureSet.from_dict(d).fingerprint() == fs.fingerprint()
    old = {k: v for k, v in d.items() if k != "encoding"}  # a card written before the XID encoding changed
    with pytest.raises(ValueError, match="feature encoding 1 is not supported.*retrain"):
        FeatureSet.from_dict(old)
    # encoding 2 read a stale XID code after an outage as a fresh raise (issue 3 follow-up 14)
    with pytest.raises(ValueError, match="feature encoding 2 is not supported.*not raised across an outage"):
        FeatureSet.from_dict({**d, "encoding": 2})
    # encoding 3 had no derived metrics: its GPU slots end one column earlier (issue 3 follow-up 21)
    with pytest.raises(ValueError, match="feature encoding 3 is not supported.*node's other GPUs"):
        FeatureSet.from_dict({**d, "encoding": 3})


def test_validation_by_site(small_runs):
    sp = make_splits(small_runs, heldout=1, val_sites=1)
    train = {s.name for s in sp.train_sites}
    val = {s.name for s in sp.val.sites}
    assert val == {small_runs[1].name} and train == {small_runs[0].name}
    assert {s.name for s in sp.heldout_sites} == {small_runs[2].name}
    with pytest.raises(ValueError, match="val_sites"):
        make_splits(small_runs, heldout=1, val_sites=2)


def _without_field(run, kind: str, name: str):
    """A copy of ``run`` whose exporters never sent ``name`` (NaN at every component and step)."""
    out = copy.copy(run)
    values = np.array(run.metrics[kind], copy=True)
    values[:, :, list(run.metric_names[kind]).index(name)] = np.nan
    out.metrics = {**run.metrics, kind: values}
    return out


def test_a_field_the_training_data_never_held_is_masked_wherever_it_is_sent(small_runs, caplog):
    """Training sites without the single-bit ECC counter (dcgm-exporter's default fields): the normaliser marks it
    unlearned, training warns, and the held-out site that sends it has it masked as the model saw it in training
    (read unmasked, its values reached weights that never learned them). The mark travels in the card's dict;
    a field the whole training data held a value of is not marked, whatever the fit's subsample read."""
    import logging

    ecc = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
    runs = [_without_field(r, "gpu", ecc) for r in small_runs[:-1]] + [small_runs[-1]]
    with caplog.at_level(logging.WARNING, logger="infrabrain.models.snapshots"):
        sp = make_splits(runs, heldout=1, stride_min=10, eval_stride_min=10)
    fs, norm = sp.feature_set, sp.normalizer
    assert norm.unlearned_metrics(fs) == {"gpu": [ecc]}
    assert [r.metrics for r in caplog.records if "no value of these metrics" in r.getMessage()] == [f"gpu: {ecc}"]
    j = list(fs.metrics_of("gpu")).index(ecc)
    held = sp.test_sites.sites[0]
    assert not held.obs[:, held.graph.kind_index["gpu"], j].any()  # sent by the held-out site, masked
    assert np.isfinite(small_runs[-1].metrics["gpu"][:, :, list(small_runs[-1].metric_names["gpu"]).index(ecc)]).any()
    again = Normalizer.from_dict(norm.to_dict())
    assert again.unlearned_metrics(fs) == {"gpu": [ecc]}
    assert Normalizer.from_dict({k: v for k, v in norm.to_dict().items() if k != "unlearned"}).unlearned == {}
    with pytest.raises(ValueError, match="unlearned metrics of 'gpu' must be column indices"):
        Normalizer.from_dict({**norm.to_dict(), "unlearned": {"gpu": [99]}})
    # a field with values at two steps of the whole training data is learned
    sparse = _without_field(small_runs[0], "gpu", ecc)
    sparse.metrics["gpu"][1:3, 0, list(sparse.metric_names["gpu"]).index(ecc)] = [0.0, 1.0]
    assert fit_normalizer([sparse], fs).unlearned_metrics(fs) == {}
    assert fit_normalizer(small_runs, fs).unlearned == {}
    # what decides is whether the whole data held a value, not the subsample the centre and scale come from
    f = len(fs.metrics_of("gpu"))
    subsample = np.ones((4, 2, f), np.float32)
    subsample[:, :, j] = np.nan
    only = FeatureSet(metrics={"gpu": fs.metrics_of("gpu")})
    assert Normalizer.fit({"gpu": [subsample]}, only).unlearned_metrics(only) == {"gpu": [ecc]}
    assert Normalizer.fit({"gpu": [subsample]}, only, {"gpu": np.ones(f, bool)}).unlearned == {}
