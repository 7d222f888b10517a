"""The coordinator's public starting point: pretrained on simulated sites only, cached, never mis-loaded."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.coordinator.simulation_run import simulation_config


def _cfg(tmp_path, **kw):
    base = dict(site_gpus=8, site_hours=48.0, public_sites=1, public_epochs=2)
    base.update(kw)
    return simulation_config(2, 1, None, tmp_path / "work", **base)


def test_public_model_is_trained_cached_and_retrained_when_settings_change(tmp_path) -> None:
    from infrabrain.client.local_training import initial_weights
    from infrabrain.coordinator.public_model import PUBLIC_PARTITION_BASE, public_initial_weights

    cfg = _cfg(tmp_path)
    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    cache = tmp_path / "registry"
    first = public_initial_weights(cfg, fresh, cache)
    assert [a.shape for a in first.arrays] == [a.shape for a in fresh]
    assert first.meta["public_sites"] == 1 and first.meta["steps"] > 0
    # trained: the arrays moved away from the random initialisation
    assert any(not np.allclose(a, b) for a, b in zip(first.arrays, fresh, strict=True))
    # public data lives under the cache, in public partition ids only
    assert (cache / "public-sites" / "public-0000").is_dir()
    assert PUBLIC_PARTITION_BASE >= 1_000_000

    mtime = (cache / "public-init.npz").stat().st_mtime_ns
    again = public_initial_weights(cfg, fresh, cache)  # from the cache: identical, file untouched
    assert all(np.array_equal(a, b) for a, b in zip(first.arrays, again.arrays, strict=True))
    assert (cache / "public-init.npz").stat().st_mtime_ns == mtime

    other = public_initial_weights(_cfg(tmp_path, public_epochs=1), fresh, cache)  # other settings: retrained
    assert other.meta["epochs"] == 1


def test_a_cache_of_another_model_identity_is_retrained(tmp_path, monkeypatch) -> None:
    """Same shapes, other encoder or scaling floor (a code change, not a setting): the cache is not loaded."""
    import infrabrain.client.predictor_task as pt
    import infrabrain.coordinator.public_model as pm
    from infrabrain.client.local_training import initial_weights

    cfg = _cfg(tmp_path, public_epochs=1)
    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    cache = tmp_path / "registry"
    pm.public_initial_weights(cfg, fresh, cache)
    mtime = (cache / "public-init.npz").stat().st_mtime_ns
    other = {**pt.MODEL_IDENTITY, "input_scale_floor": pt.INPUT_SCALE_FLOOR / 10}
    monkeypatch.setattr(pt, "MODEL_IDENTITY", other)  # the public model's key reads it through data_identity
    pt._site_data_cached.cache_clear()
    pm.public_initial_weights(cfg, fresh, cache)
    assert (cache / "public-init.npz").stat().st_mtime_ns != mtime


def test_the_caches_name_how_their_data_was_simulated_and_normalised(tmp_path, monkeypatch) -> None:
    """A site's tensor cache holds *normalised* telemetry and the public model was trained on such tensors: a code
    change to the normaliser's rule (here a counter's scale floor) or to the simulator rebuilds both, instead of
    reusing tensors, or a model, made the old way (issue 3 follow-up 17)."""
    import infrabrain.client.predictor_task as pt
    import infrabrain.coordinator.public_model as pm
    from infrabrain.client.local_training import SiteSettings
    from infrabrain.models import features
    from infrabrain.simulation import engine

    a = SiteSettings(partition_id=0, num_partitions=3, site_gpus=8, site_hours=48.0, state_dir=str(tmp_path / "a"))
    pt._site_tensors(a, 300.0)  # simulates the site and writes its cache
    assert pt._load_tensors(a.data_path, pt.site_cache_key(a, 300.0)) is not None
    cfg = _cfg(tmp_path)
    public_key = pm._cache_key(cfg, [[3, 4]])
    for module, name, value in ((features, "COUNTER_SCALE_FLOOR", features.COUNTER_SCALE_FLOOR / 2),
                                (engine, "SIMULATOR_VERSION", engine.SIMULATOR_VERSION + 1)):
        with monkeypatch.context() as m:
            m.setattr(module, name, value)
            assert pt._load_tensors(a.data_path, pt.site_cache_key(a, 300.0)) is None, name
            assert pm._cache_key(cfg, [[3, 4]]) != public_key, name
    assert pt._load_tensors(a.data_path, pt.site_cache_key(a, 300.0)) is not None
    assert pm._cache_key(cfg, [[3, 4]]) == public_key


def test_a_corrupt_cache_is_retrained_not_loaded(tmp_path) -> None:
    from infrabrain.client.local_training import initial_weights
    from infrabrain.coordinator.public_model import public_initial_weights

    cfg = _cfg(tmp_path)
    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    cache = tmp_path / "registry"
    first = public_initial_weights(cfg, fresh, cache)
    (cache / "public-init.npz").write_bytes(b"PK\x03\x04 not a zip")
    again = public_initial_weights(cfg, fresh, cache)
    assert all(np.array_equal(a, b) for a, b in zip(first.arrays, again.arrays, strict=True))  # deterministic


def test_public_sites_zero_keeps_the_random_start(tmp_path) -> None:
    from infrabrain.client.local_training import initial_weights
    from infrabrain.coordinator.comparison import federation_start

    cfg = _cfg(tmp_path, public_sites=0)
    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    assert all(np.array_equal(a, b) for a, b in zip(federation_start(cfg), fresh, strict=True))


def test_site_normalisation_is_public_and_independent_of_the_site_data(tmp_path) -> None:
    """The normaliser a site applies is fitted on public simulated sites only: identical for every site and
    unchanged when the site's own telemetry changes (a data-dependent one would escape the DP accounting)."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.client.local_training import SiteSettings
    from infrabrain.models.snapshots import make_splits
    from infrabrain.simulation.engine import simulate_site

    a = SiteSettings(partition_id=0, num_partitions=3, site_gpus=8, site_hours=48.0, state_dir=str(tmp_path / "a"))
    b = SiteSettings(partition_id=2, num_partitions=3, site_gpus=8, site_hours=48.0, state_dir=str(tmp_path / "b"))
    ra, rb = pt.public_reference(a, 300.0), pt.public_reference(b, 300.0)
    na, nb = ra.normalizer, rb.normalizer
    assert na.to_dict() == nb.to_dict()
    # what the site's own data would have given is different: so the public one is really not site-fitted
    run = simulate_site(pt.site_spec(a), 48.0, seed=a.data_seed * 1000 + a.partition_id, acceleration=300.0)
    own = make_splits([run], heldout=0, window_min=60, stride_min=60, fractions=(0.7, 0.72),
                      feature_set=pt.feature_set(), pool_min=5).normalizer
    assert own.to_dict() != na.to_dict()
    # and the site's training tensors are normalised with the public one
    tensors, _ = pt._site_tensors(a, 300.0)
    pub = make_splits([run], heldout=0, window_min=60, stride_min=60, fractions=(0.7, 0.72),
                      feature_set=pt.feature_set(), pool_min=5, normalizer=na).train_sites[0]
    assert np.allclose(pub.vals0, tensors.vals0)
    mine = make_splits([run], heldout=0, window_min=60, stride_min=60, fractions=(0.7, 0.72),
                       feature_set=pt.feature_set(), pool_min=5).train_sites[0]
    assert not np.allclose(mine.vals0, tensors.vals0)


def test_input_scaling_is_public_identical_everywhere_and_checked(tmp_path) -> None:
    """The encoder's per-kind input scaling comes from the public sites too: every site and the coordinator get
    the same arrays (also after the site's data cache is reloaded), a scaling fitted on the site's own windows
    would differ, and a wrong-shaped or incomplete scaling is refused by name."""
    import torch

    from infrabrain.client import predictor_task as pt
    from infrabrain.client.local_training import SiteSettings
    from infrabrain.models.gnn import fit_input_scaling
    from infrabrain.models.training import make_loader

    a = SiteSettings(partition_id=0, num_partitions=3, site_gpus=8, site_hours=48.0, state_dir=str(tmp_path / "a"))
    b = SiteSettings(partition_id=2, num_partitions=3, site_gpus=8, site_hours=48.0, state_dir=str(tmp_path / "b"))
    ref = pt.public_reference(a, 300.0).input_scaling
    da, db = pt.site_data(a, {"acceleration": 300.0}), pt.site_data(b, {"acceleration": 300.0})
    pt._site_data_cached.cache_clear()
    da2 = pt.site_data(a, {"acceleration": 300.0})  # from the on-site cache
    for k in pt.SCALING_KEYS:
        assert ref[k].dtype == np.float32 and np.all(np.isfinite(ref[k]))
        for d in (da, db, da2):
            np.testing.assert_array_equal(d.input_scaling[k], ref[k])
    assert np.all(ref["in_scale"] >= pt.INPUT_SCALE_FLOOR) and np.any(ref["in_center"] != 0)
    model = pt.build_predictor({"seed": 3}, da.input_scaling)
    np.testing.assert_array_equal(model.in_scale.numpy(), ref["in_scale"])
    own = pt.build_predictor({"seed": 3}, None)
    fit_input_scaling(own, make_loader(da.train, 16), floor=pt.INPUT_SCALE_FLOOR)
    assert not np.allclose(own.in_center.numpy(), ref["in_center"])
    # the scaling is a buffer, never one of the arrays that travel
    from infrabrain.models.training import get_weights

    assert len(get_weights(model)) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="in_scale"):
        pt.build_predictor(None, {"in_center": ref["in_center"]})
    with pytest.raises(ValueError, match="shape"):
        pt.build_predictor(None, {"in_center": ref["in_center"][:, :3], "in_scale": ref["in_scale"]})
    assert torch.equal(pt.build_predictor(None, ref).in_center, torch.from_numpy(ref["in_center"]))
